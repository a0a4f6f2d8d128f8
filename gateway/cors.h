/* CORS for HTTP APIs, from an AWS::Serverless::HttpApi CorsConfiguration, the
 * way API Gateway applies it: the gateway answers preflight requests itself
 * (204) and adds the configured headers to every other answer of a request
 * that carries an Origin, replacing any CORS headers the integration returned.
 * Pure functions, no loop. Private to the gateway. */
#ifndef REELWAY_GATEWAY_CORS_H
#define REELWAY_GATEWAY_CORS_H

#include <stdbool.h>
#include <stddef.h>

/**
 * A CorsConfiguration. Lists are borrowed for as long as the configuration is
 * used; strings are NUL-terminated.
 *
 * allow_origins entries are exact origins ("https://app.example.com", compared
 * without regard to case), "*" (any origin), or a scheme wildcard ("https://"
 * then "*": any origin of that scheme). allow_methods and allow_headers may
 * hold "*", which answers a preflight with what it asked for. expose_headers
 * may hold "*", sent as is.
 */
typedef struct rw_cors_config_s {
    const char *const *allow_origins;
    size_t n_allow_origins;
    const char *const *allow_methods;
    size_t n_allow_methods;
    const char *const *allow_headers;
    size_t n_allow_headers;
    const char *const *expose_headers;
    size_t n_expose_headers;
    int max_age;            /**< seconds (0..86400); negative = no Access-Control-Max-Age */
    bool allow_credentials; /**< sends Access-Control-Allow-Credentials: true */
} rw_cors_config_t;

/** The parts of a request CORS looks at; a NULL pointer means the header is absent. */
typedef struct rw_cors_request_s {
    const char *method; /**< the request method, NUL-terminated */
    const char *origin; /**< Origin */
    size_t origin_len;
    const char *request_method; /**< Access-Control-Request-Method */
    size_t request_method_len;
    const char *request_headers; /**< Access-Control-Request-Headers */
    size_t request_headers_len;
} rw_cors_request_t;

#define RW_CORS_MAX_HEADERS 6

/**
 * Headers to add to an answer. Names are static lower-case strings (as HTTP
 * APIs send them); values live in storage_ and are NUL-terminated. Release
 * with rw_cors_headers_free.
 */
typedef struct rw_cors_headers_s {
    bool allowed; /**< the Origin is allowed (false: no CORS header at all) */
    size_t n;
    struct {
        const char *name;
        const char *value;
        size_t value_len;
    } h[RW_CORS_MAX_HEADERS];
    char *storage_;
} rw_cors_headers_t;

/**
 * Checks a configuration as API Gateway does when it is deployed: an origin
 * "*" with AllowCredentials is refused (browsers would ignore it), origins must
 * be "*", a scheme wildcard or scheme://host[:port] without a path, methods and
 * header names must be tokens or "*", MaxAge at most 86400. Returns 0, or
 * RW_ECONFIG with the reason in why. Any thread.
 */
int rw_cors_config_check(const rw_cors_config_t *cfg, char *why, size_t whylen);

/**
 * Whether the request is a CORS preflight: OPTIONS with both Origin and
 * Access-Control-Request-Method. With CORS configured the gateway answers it
 * itself with 204 and rw_cors_preflight's headers, whatever the routes (API
 * Gateway forwards it only when an explicit OPTIONS route, or a $default
 * route, matches; that precedence is the router's). Any thread.
 */
bool rw_cors_is_preflight(const rw_cors_request_t *rq);

/** Whether origin (origin_len bytes) is allowed by cfg. Any thread. */
bool rw_cors_origin_allowed(const rw_cors_config_t *cfg, const char *origin, size_t origin_len);

/**
 * Computes the headers of the 204 answer to a preflight: Allow-Origin (the
 * request's Origin, or "*" when every origin is allowed), Allow-Credentials,
 * Allow-Methods, Allow-Headers, Max-Age, and Vary: origin when the Origin is
 * echoed. An origin that is not allowed gets no CORS header (out->allowed is
 * false) and the browser refuses the real request. Returns 0 or UV_ENOMEM
 * (out is then empty). Any thread.
 */
int rw_cors_preflight(const rw_cors_config_t *cfg, const rw_cors_request_t *rq,
                      rw_cors_headers_t *out);

/**
 * Computes the headers to add to the answer of a non-preflight request with an
 * Origin: Allow-Origin, Allow-Credentials, Expose-Headers, Vary. None when the
 * request has no Origin or the origin is not allowed. Returns 0 or UV_ENOMEM.
 * Any thread.
 */
int rw_cors_response(const rw_cors_config_t *cfg, const rw_cors_request_t *rq,
                     rw_cors_headers_t *out);

/**
 * Whether a response header is one CORS owns (access-control-*): with CORS
 * configured the gateway drops those from the integration's answer, as API
 * Gateway ignores them. Any thread.
 */
bool rw_cors_is_cors_header(const char *name, size_t name_len);

/** Frees the storage of out and empties it. Accepts NULL. */
void rw_cors_headers_free(rw_cors_headers_t *out);

#endif /* REELWAY_GATEWAY_CORS_H */
