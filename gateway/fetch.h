/* A small blocking HTTP(S) GET for the gateway's own needs (an issuer's
 * OpenID configuration and JWKS): one request, a deadline over the whole
 * exchange, a body limit, and TLS verified against the system's trust store.
 * Private to the gateway.
 *
 * Threading: blocks (DNS, connect, TLS, reads): call it only on libuv's
 * threadpool or another thread that may block, never on a loop thread.
 * Reentrant; no global state. */
#ifndef REELWAY_GATEWAY_FETCH_H
#define REELWAY_GATEWAY_FETCH_H

#include <stddef.h>
#include <stdint.h>

/** Defaults for zero fields of rw_fetch_opts_t. */
#define RW_FETCH_TIMEOUT_MS 5000
#define RW_FETCH_MAX_BYTES (1024 * 1024)

typedef struct rw_fetch_opts_s {
    /** Deadline for the whole exchange (connect, TLS, request, response),
     * except name resolution, which getaddrinfo does not let us bound. */
    uint64_t timeout_ms;
    /** Largest body accepted; a longer one fails with RW_ELIMIT. */
    size_t max_bytes;
    /** PEM file of trust anchors used instead of the system store for https
     * (a private CA, or a test's own); NULL for the system store. */
    const char *ca_file;
} rw_fetch_opts_t;

typedef struct rw_fetch_result_s {
    int status;      /**< the HTTP status of the response */
    char *body;      /**< the decoded body (chunked or sized), NUL-terminated; malloc()ed */
    size_t len;      /**< body bytes, without the NUL */
    char error[256]; /**< why it failed, for logs ("" on success) */
} rw_fetch_result_t;

/**
 * GETs url ("http://host[:port]/path?query" or "https://..."; no user info;
 * IPv6 literals in brackets) with Connection: close and Accept:
 * application/json. Redirects are not followed: a 3xx is returned like any
 * other status. For https the peer's certificate chain must verify and match
 * the host name (or IP address); TLS 1.2 at least.
 *
 * Returns 0 when a complete response arrived (whatever its status: check
 * res->status), with res->body owned by res (rw__fetch_result_free). On
 * failure returns RW_EPARSE (bad URL or malformed response), RW_ENOTFOUND
 * (the name does not resolve), RW_ETIMEOUT, RW_ELIMIT (body over max_bytes),
 * RW_ECRYPTO (TLS failure, including an unverified certificate), RW_ETRUNC
 * (connection closed early) or a negative errno (UV_ECONNREFUSED, ...), with
 * the reason in res->error.
 */
int rw__fetch_get(const char *url, const rw_fetch_opts_t *opts, rw_fetch_result_t *res);

/** Releases res->body. */
void rw__fetch_result_free(rw_fetch_result_t *res);

/** Checks the shape of an http(s) URL as rw__fetch_get accepts it: 0 or RW_EPARSE. */
int rw__fetch_check_url(const char *url);

#endif
