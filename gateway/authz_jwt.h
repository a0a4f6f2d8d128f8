/* The gateway's JWT authorizer: API Gateway's HTTP API JwtConfiguration (issuer,
 * audiences, identity source) and per-route AuthorizationScopes, with the
 * issuer's key set fetched, cached and refreshed, and verified tokens cached.
 * Private to the gateway.
 *
 * What a request gets, as API Gateway answers (reason in www-authenticate):
 *   - no token in the identity source              401 {"message":"Unauthorized"}
 *   - malformed, unsigned ("alg":"none"), HS*, bad signature, unknown kid,
 *     expired, not yet valid, wrong issuer or audience, Authorization given
 *     twice                                         401 {"message":"Unauthorized"},
 *     www-authenticate: Bearer scope="" error="invalid_token" error_description="..."
 *   - valid, but none of the route's scopes         403 {"message":"Forbidden"},
 *     www-authenticate: Bearer scope="<route scopes>" error="insufficient_scope" ...
 *   - the issuer's keys were never obtained         500 {"message":"Internal Server Error"}
 *   - valid                                         the request goes on, with
 *     requestContext.authorizer = {"jwt":{"claims":{...},"scopes":[...] or null}}
 *
 * Key set: from a file, or over HTTP(S) from an explicit jwks_uri, or from the
 * issuer's {issuer}/.well-known/openid-configuration. Fetched on the threadpool
 * at creation, again when older than jwks_max_age_ms (in the background: the
 * old set keeps serving), and when a token names a kid the set lacks; two
 * fetches are always at least jwks_min_interval_ms apart, so random kids cannot
 * make the gateway hammer the issuer. A failed fetch keeps the previous set.
 *
 * Verification cache: a verified token is remembered under the SHA-256 of its
 * text until its exp (plus the clock skew), in a bounded LRU; a repeated token
 * then costs a hash and a lookup. Cached tokens whose kid disappears from a
 * refreshed key set are forgotten.
 *
 * Threading: every function runs on the loop thread given to
 * rw_jwt_authz_new, and every callback runs there. Fetches run on libuv's
 * threadpool; signature checks (tens of microseconds) run on the loop. */
#ifndef REELWAY_GATEWAY_AUTHZ_JWT_H
#define REELWAY_GATEWAY_AUTHZ_JWT_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "reelway/auth.h"
#include "reelway/http.h"

typedef struct rw_jwt_authz_s rw_jwt_authz_t;

/** A verified token's identity, shared by the cache and requests (refcounted). */
typedef struct rw_jwt_principal_s rw_jwt_principal_t;

/** Defaults for zero fields of rw_jwt_authz_config_t. */
#define RW_JWT_AUTHZ_SKEW_S 60
#define RW_JWT_AUTHZ_JWKS_MAX_AGE_MS (2 * 3600 * 1000ULL) /* API Gateway caches keys 2 h */
#define RW_JWT_AUTHZ_JWKS_MIN_INTERVAL_MS (30 * 1000ULL)
#define RW_JWT_AUTHZ_CACHE_ENTRIES 10000
/** jwks_min_interval_ms value that lifts the limit: every unknown kid
 * refetches (joining a fetch in flight). For tests; never in production. */
#define RW_JWT_AUTHZ_NO_MIN_INTERVAL UINT64_MAX

/**
 * One authorizer, as the template's JwtConfiguration declares it. Strings and
 * arrays are copied by rw_jwt_authz_new; zero fields take the defaults.
 */
typedef struct rw_jwt_authz_config_s {
    const char *name;   /**< the authorizer's name, for logs (default "jwt") */
    const char *issuer; /**< required: the exact value tokens' iss must have */
    /** Required (as in API Gateway), at least one: a token's aud (string or
     * any element of an array), or its client_id when it has no aud, must be one. */
    const char *const *audiences;
    size_t n_audiences;
    /** Where the token is: "$request.header.<Name>" or
     * "$request.querystring.<name>". The first source present in a request is
     * used. None: {"$request.header.Authorization"}. */
    const char *const *identity_sources;
    size_t n_identity_sources;
    /** The key set's source, in this order of preference: a JWKS file; an
     * explicit http(s) URL; else discovery through the issuer (an http(s) URL). */
    const char *jwks_file;
    const char *jwks_uri;
    /** PEM trust anchors for https fetches instead of the system store. */
    const char *ca_file;
    int64_t clock_skew_s;         /**< leeway on exp/nbf/iat (60 s); negative = 0 */
    uint64_t jwks_max_age_ms;     /**< refresh a key set older than this (2 h) */
    uint64_t jwks_min_interval_ms; /**< least time between two fetches (30 s); see above and
                                    RW_JWT_AUTHZ_NO_MIN_INTERVAL */
    uint64_t fetch_timeout_ms;    /**< one fetch, all requests included (5 s) */
    size_t fetch_max_bytes;       /**< largest document fetched (1 MiB) */
    size_t cache_entries;         /**< verified tokens remembered (10000) */
    /** Accept any audience (no audiences given): REST Cognito user-pool
     * authorizers check the issuer, not aud, as API Gateway does. */
    bool any_audience;
} rw_jwt_authz_config_t;

/** The outcome of one check. */
typedef struct rw_jwt_authz_result_s {
    /** 200: allowed; 401, 403 or 500: answer with rw_jwt_authz_respond. */
    int http_status;
    /** RW_JWT_OK, or why not (RW_JWT_EFORMAT for a missing or doubled token,
     * RW_JWT_EINTERNAL when no key set could be obtained). */
    rw_jwt_status_t status;
    /** The body's message: "Unauthorized", "Forbidden" or "Internal Server
     * Error"; NULL when allowed. Static. */
    const char *message;
    /** The www-authenticate header's value; "" for none. */
    char www_authenticate[512];
    /** Why, for logs (never contains the token). */
    char detail[192];
    /** Allowed only: the token's identity. The result holds one reference;
     * rw_jwt_authz_result_release drops it. */
    rw_jwt_principal_t *principal;
    /** Whether the route asked for scopes (the event's "scopes" is null if not). */
    bool route_has_scopes;
} rw_jwt_authz_result_t;

/** Completion of a check that could not be decided at once. result is valid
 * during the call only; its principal reference passes to the callee, who
 * must call rw_jwt_authz_result_release (or take the principal). */
typedef void (*rw_jwt_authz_cb)(rw_jwt_authz_result_t *result, void *arg);

/** Counters, for tests and metrics. */
typedef struct rw_jwt_authz_stats_s {
    uint64_t checks;        /**< calls to rw_jwt_authz_check */
    uint64_t cache_hits;    /**< decided from the verification cache */
    uint64_t verifications; /**< signature verifications run (rw_jwt_verify calls) */
    uint64_t fetches;       /**< key-set fetches started (file reads included) */
    uint64_t fetch_failures;
    uint64_t fetches_skipped; /**< unknown kids that did not refetch (rate limit) */
    size_t cached_tokens;
    size_t keys;            /**< keys in the current set */
} rw_jwt_authz_stats_t;

/** rw_jwt_authz_check's returns besides negative errors. */
#define RW_JWT_AUTHZ_DONE 0
#define RW_JWT_AUTHZ_PENDING 1

/**
 * Creates an authorizer on loop. A jwks_file is read and parsed now (so a
 * broken file fails at startup); otherwise the first fetch is queued at once.
 * Returns 0 with *out, or RW_ECONFIG (with the reason in why, if given) for a
 * missing issuer or audience, an unknown identity source, a malformed URL or
 * an unreadable or invalid JWKS file; -ENOMEM.
 */
int rw_jwt_authz_new(uv_loop_t *loop, const rw_jwt_authz_config_t *cfg, rw_jwt_authz_t **out,
                     char *why, size_t whylen);

/**
 * Authorizes req for a route requiring scopes[0..n_scopes) (any one of them
 * suffices, as in API Gateway; none: no scope check). req and scopes are read
 * during the call only (the token is copied).
 * Returns RW_JWT_AUTHZ_DONE with *res filled (cb is not called): the usual
 * case, always for a cached token or any token when the key set is at hand;
 * RW_JWT_AUTHZ_PENDING when the check waits for a key-set fetch: cb(result,
 * arg) runs later on the loop, exactly once, even if the authorizer is closed
 * meanwhile (*res is untouched); -EINVAL or -ENOMEM (cb is not called).
 */
int rw_jwt_authz_check(rw_jwt_authz_t *a, const rw_http_req_t *req, const char *const *scopes,
                       size_t n_scopes, rw_jwt_authz_result_t *res, rw_jwt_authz_cb cb,
                       void *arg);

/** Drops the result's principal reference, if any. */
void rw_jwt_authz_result_release(rw_jwt_authz_result_t *res);

/**
 * Answers a denied request: res->http_status with {"message": res->message}
 * as application/json and the www-authenticate header, and ends the request.
 */
void rw_jwt_authz_respond(rw_http_req_t *req, const rw_jwt_authz_result_t *res);

/**
 * The event's requestContext.authorizer for an allowed result, as payload 2.0
 * has it: {"jwt":{"claims":{<every claim, values as strings>},"scopes":
 * [<the token's scopes>] when the route asked for scopes, else null}}.
 * (Payload 1.0 puts the same "claims" and "scopes" directly in authorizer:
 * take them from here.) Returns a new cJSON object (caller deletes) or NULL
 * (not allowed, or out of memory). Its "claims" and "scopes" are cJSON
 * references to the principal's: serialise and delete it (or detach them)
 * before rw_jwt_authz_result_release drops the principal.
 */
cJSON *rw_jwt_authz_event_authorizer(const rw_jwt_authz_result_t *res);

/** The principal's claims, flattened as API Gateway does: strings as they
 * are, numbers and booleans as their JSON text, arrays as "[a b c]", objects
 * as compact JSON, null claims left out. Borrowed; lives as the principal. */
const cJSON *rw_jwt_principal_claims(const rw_jwt_principal_t *p);

/** The token's scopes ("scp" array, else "scope" split on spaces), in order. */
size_t rw_jwt_principal_scope_count(const rw_jwt_principal_t *p);
const char *rw_jwt_principal_scope(const rw_jwt_principal_t *p, size_t i);

/** The token's sub, or NULL. Borrowed. */
const char *rw_jwt_principal_sub(const rw_jwt_principal_t *p);

/** References (any thread: the count is atomic). release frees at zero; NULL ok. */
rw_jwt_principal_t *rw_jwt_principal_ref(rw_jwt_principal_t *p);
void rw_jwt_principal_release(rw_jwt_principal_t *p);

/** Fills *st with the authorizer's counters. */
void rw_jwt_authz_stats(const rw_jwt_authz_t *a, rw_jwt_authz_stats_t *st);

/**
 * Closes the authorizer: waits for a fetch in flight (bounded by
 * fetch_timeout_ms), answers the checks that waited for it, frees everything,
 * then calls done(arg) (may be NULL; at once, before this returns, when no
 * fetch is in flight). May be called from a check's callback. Checks after
 * close are refused (-EINVAL).
 */
void rw_jwt_authz_close(rw_jwt_authz_t *a, void (*done)(void *arg), void *arg);

#endif
