/* The gateway's asynchronous HTTP/1.1 client (libuv + llhttp): requests with
 * bodies streamed up piece by piece, responses streamed down piece by piece,
 * backpressure both ways, timeouts, and a keep-alive pool per upstream.
 * Plain HTTP only: there is no TLS to upstreams. Private to the gateway.
 *
 * Threading: a client lives on one uv loop; every function here must be called
 * on that loop's thread, and every callback runs on it.
 *
 * Request lifecycle: rw_http_client_request starts a request (the head is sent
 * as soon as a connection is ready); the caller writes the body with
 * rw_http_creq_write and ends it with rw_http_creq_end (always, also for a
 * request without body). The response arrives as on_response (the head), then
 * on_body pieces (return false to pause, rw_http_creq_resume to go on), then
 * on_complete exactly once: with 0 and the trailers when the response ended,
 * or with the first error. After on_complete returns the request is freed:
 * do not touch it. rw_http_creq_abort ends a request early without any
 * further callback.
 *
 * Errors given to on_complete (each is final and reported once):
 *   UV_ECONNREFUSED, UV_ENETUNREACH, UV_EHOSTUNREACH, UV_EAI_* (name lookup):
 *       the upstream could not be reached;
 *   UV_ETIMEDOUT      connect (name lookup included) took longer than
 *                     connect_timeout_ms;
 *   RW_ETIMEOUT       the upstream made no progress for timeout_ms (see
 *                     rw_http_request_t.timeout_ms);
 *   UV_ECONNRESET, UV_EPIPE  the connection was reset;
 *   RW_EPREMATURE     the upstream closed the connection before the end of
 *                     the response (before its head, or mid-body);
 *   RW_EPARSE         malformed response (llhttp's reason in rw_http_creq_reason);
 *   RW_ELIMIT         response head or trailers larger than max_head_bytes;
 *   RW_ETRUNC         rw_http_creq_end before the announced body length;
 *   UV_ECANCELED      the client was closed under the request.
 */
#ifndef REELWAY_GATEWAY_HTTP_CLIENT_H
#define REELWAY_GATEWAY_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "reelway/http.h"

typedef struct rw_http_client_s rw_http_client_t;
typedef struct rw_http_creq_s rw_http_creq_t;

/** Options of a client. Zero fields take the documented default. */
typedef struct rw_http_client_opts_s {
    uint64_t connect_timeout_ms;    /**< name lookup + TCP connect (10 s) */
    uint64_t idle_timeout_ms;       /**< a pooled connection unused this long is closed (30 s) */
    unsigned max_idle_per_upstream; /**< idle connections kept per host:port (16) */
    size_t max_head_bytes;          /**< response status line + headers, and trailers (64 KiB) */
    size_t write_high_water;        /**< request bytes queued before write returns 0 (256 KiB) */
} rw_http_client_opts_t;

/** Counters of a client, for metrics and tests. */
typedef struct rw_http_client_stats_s {
    uint64_t connects;        /**< TCP connections opened (successfully) */
    uint64_t reuses;          /**< requests sent on a pooled keep-alive connection */
    uint64_t retries;         /**< requests resent once after a stale pooled connection */
    uint64_t read_pauses;     /**< times a consumer's on_body stopped the socket read */
    uint64_t requests;        /**< requests started */
    unsigned idle;            /**< idle pooled connections now */
    unsigned active;          /**< connections serving a request now */
} rw_http_client_stats_t;

/** A response head. Strings are NUL-terminated; valid during on_response only. */
typedef struct rw_http_response_s {
    int status;
    int http_major, http_minor;
    const rw_http_header_t *headers; /**< arrival order, original case */
    size_t n_headers;
    int64_t content_length;          /**< the Content-Length, or -1 (chunked, close-delimited) */
    bool chunked;
    bool has_body;                   /**< false for HEAD, 1xx, 204, 304 and Content-Length: 0 */
    bool keep_alive;                 /**< the upstream allows reuse */
} rw_http_response_t;

/** What the caller hears of a request. Keep it in static storage. */
typedef struct rw_http_creq_cbs_s {
    /** The response head (interim 1xx answers are skipped). Required. */
    void (*on_response)(rw_http_creq_t *q, const rw_http_response_t *res);
    /**
     * A piece of the response body, valid only during the call. Return false
     * to stop reading the socket until rw_http_creq_resume. Required.
     */
    bool (*on_body)(rw_http_creq_t *q, const char *piece, size_t len);
    /** The request-body queue emptied after rw_http_creq_write returned 0. Optional. */
    void (*on_drain)(rw_http_creq_t *q);
    /**
     * The end, exactly once: status 0 with the response's trailers (chunked
     * responses; valid during the call), or a negative code (see the top).
     * The request is freed when this returns. Required.
     */
    void (*on_complete)(rw_http_creq_t *q, int status, const rw_http_header_t *trailers,
                        size_t n_trailers);
} rw_http_creq_cbs_t;

/** A request to start. Every pointer is borrowed for the call only (copied). */
typedef struct rw_http_request_s {
    const char *method;     /**< "GET", "POST", ... */
    const char *host;       /**< a name, or an IPv4/IPv6 literal (without brackets) */
    int port;
    const char *target;     /**< origin-form: "/path?query" */
    const rw_http_header_t *headers; /**< end-to-end headers; Host is added when absent */
    size_t n_headers;
    int64_t body_length;    /**< 0: no body; > 0: that many bytes; -1: chunked */
    bool head_request;      /**< the response has no body whatever it says (method HEAD) */
    /**
     * Longest time the upstream may go without progress while it owes some:
     * before the response head, counted from when the request (or its last
     * written piece) reached the socket; after the head, between body reads
     * while the consumer is reading. Time spent waiting for the caller's
     * body or with the read paused by the consumer does not count. 0: none.
     */
    uint64_t timeout_ms;
} rw_http_request_t;

/** Default options, as documented in rw_http_client_opts_t. */
void rw_http_client_opts_default(rw_http_client_opts_t *opts);

/** Creates a client on loop; opts may be NULL. Returns NULL on out of memory. */
rw_http_client_t *rw_http_client_new(uv_loop_t *loop, const rw_http_client_opts_t *opts);

/**
 * Closes the client: requests in flight complete with UV_ECANCELED, pooled
 * connections close. done(arg) (may be NULL) runs once every handle is
 * closed; the client is freed right before. Call once.
 */
void rw_http_client_close(rw_http_client_t *c, void (*done)(void *arg), void *arg);

/** Copies the client's counters into out. */
void rw_http_client_stats(const rw_http_client_t *c, rw_http_client_stats_t *out);

/**
 * Starts a request. Header names and values with CR, LF or NUL, and the
 * framing headers (Content-Length, Transfer-Encoding, Connection) are refused
 * with RW_EPARSE / UV_EINVAL: the client frames the body itself from
 * body_length. On success *out is the request, data is stored in it, and the
 * callbacks will run (never inside this call). On failure nothing runs.
 * Returns 0, UV_EINVAL, RW_EPARSE, UV_ECANCELED (client closing) or UV_ENOMEM.
 */
int rw_http_client_request(rw_http_client_t *c, const rw_http_request_t *r,
                           const rw_http_creq_cbs_t *cbs, void *data, rw_http_creq_t **out);

/** The data given to rw_http_client_request. */
void *rw_http_creq_data(const rw_http_creq_t *q);

/**
 * Queues a piece of the request body (copied; framed as a chunk when the body
 * is chunked). Returns 1 while the request's queue is below the high-water
 * mark, 0 when the caller should wait for on_drain before writing more, or a
 * negative code: RW_ELIMIT (beyond body_length), RW_EWRITEEND (after end),
 * UV_ENOMEM, or the request's error once it failed (nothing queued then).
 */
int rw_http_creq_write(rw_http_creq_t *q, const char *bytes, size_t len);

/**
 * Ends the request body, with trailers for a chunked body (ignored when
 * sized; invalid ones dropped). A sized body shorter than body_length fails
 * the request with RW_ETRUNC. Returns 0 or a negative code.
 */
int rw_http_creq_end(rw_http_creq_t *q, const rw_http_header_t *trailers, size_t n_trailers);

/** Resumes the response body after on_body returned false. */
void rw_http_creq_resume(rw_http_creq_t *q);

/**
 * Ends the request now: its connection is closed (never reused) and no
 * callback runs any more. May be called from the request's own callbacks
 * (not from on_complete). Do not touch q afterwards.
 */
void rw_http_creq_abort(rw_http_creq_t *q);

/** Request-body bytes queued and not yet handed to the kernel. */
size_t rw_http_creq_queued(const rw_http_creq_t *q);

/** Why the response was malformed (llhttp's reason), or NULL. Valid until freed. */
const char *rw_http_creq_reason(const rw_http_creq_t *q);

#endif
