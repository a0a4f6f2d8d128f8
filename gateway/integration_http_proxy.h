/* API Gateway's HTTP_PROXY integration: forwards a request to an upstream URL
 * and streams both bodies through, with backpressure end to end. Private to
 * the gateway.
 *
 * What goes up: the request's method (or the integration's httpMethod), the
 * URI template with the route's path parameters substituted ("{id}",
 * "{proxy}", "{proxy+}"; values percent-encoded again, '/' kept for greedy
 * ones) and the request's query string appended; every end-to-end header;
 * Host set to the upstream's authority; X-Forwarded-For (the client address
 * appended), X-Forwarded-Proto ("http") and X-Forwarded-Port (the gateway's
 * port), as both API flavours show their integrations; and for HTTP APIs a
 * Forwarded header (RFC 7239: the incoming X-Forwarded-For translated, then
 * for=client;host=original-host;proto=http appended), as HTTP APIs document.
 * Hop-by-hop headers never cross, in either direction: Connection and the
 * headers it names, Keep-Alive, Transfer-Encoding, TE, Trailer, Upgrade,
 * Proxy-*; nor the request's Expect (100-continue is answered by our server)
 * and Content-Length (each side frames its own body), nor the upstream's
 * Date (our server sets its own). A chunked body stays chunked, its
 * trailers included, both ways; a sized one keeps its length.
 *
 * Failures, as API Gateway answers them (a JSON body {"message": ...}):
 *
 *   before the response head       REST API (v1)                HTTP API (v2)
 *   unreachable (refused, DNS,     500 "Internal server error"  503 "Service Unavailable"
 *     no route)
 *   network error (connect         504 "Network error           503 "Service Unavailable"
 *     timeout, reset, malformed     communicating with
 *     or truncated response)        endpoint"
 *   TimeoutInMillis passed         504 "Endpoint request        503 "Service Unavailable"
 *                                   timed out"
 *
 * REST: API_CONFIGURATION_ERROR / INTEGRATION_FAILURE / INTEGRATION_TIMEOUT
 * gateway responses with the messages AWS sends (as LocalStack's AWS-validated
 * HTTP_PROXY integration reproduces them). HTTP API: AWS answers an
 * integration that does not respond in time with 503 {"message":"Service
 * Unavailable"} (observed responses, e.g. cortexlabs/cortex#1225); the same
 * answer is used for an unreachable upstream. After the head went out a
 * failure can no longer change the status: the client's connection is closed
 * before the end of the body (never a terminating chunk).
 *
 * A client that goes away aborts the upstream request (its connection is
 * closed, never pooled). TLS to upstreams is not supported: "https://" URIs
 * are refused by rw__http_proxy_conf_check (the validator's path) and
 * answered 500 at run time.
 */
#ifndef REELWAY_GATEWAY_INTEGRATION_HTTP_PROXY_H
#define REELWAY_GATEWAY_INTEGRATION_HTTP_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "http_client.h"
#include "reelway/http.h"
#include "router.h"

/** Which API Gateway the route belongs to: it decides error answers and headers. */
typedef enum rw_http_proxy_flavour_e {
    RW_HTTP_PROXY_HTTP_API = 0, /**< AWS::Serverless::HttpApi (ApiGatewayV2) */
    RW_HTTP_PROXY_REST_API = 1, /**< AWS::Serverless::Api (REST, v1) */
} rw_http_proxy_flavour_t;

/** Integration timeout bounds, in milliseconds (TimeoutInMillis). */
#define RW_HTTP_PROXY_TIMEOUT_MIN_MS 50
#define RW_HTTP_PROXY_HTTP_API_TIMEOUT_MAX_MS 30000 /* also the HTTP API default */
#define RW_HTTP_PROXY_REST_TIMEOUT_MAX_MS 29000     /* also the REST default */

/** A route's HTTP_PROXY integration, as the template gives it. Borrowed strings. */
typedef struct rw_http_proxy_conf_s {
    const char *uri;          /**< "http://host[:port]/path/{param}" (IntegrationUri / uri) */
    const char *http_method;  /**< NULL or "ANY": the request's method; else that method */
    uint64_t timeout_ms;      /**< TimeoutInMillis; 0: the flavour's default */
    rw_http_proxy_flavour_t flavour;
    uint64_t max_body_bytes;  /**< request body bound (413 beyond); 0: none */
} rw_http_proxy_conf_t;

/** Counters shared by the forwards that point at them (one loop thread). */
typedef struct rw_http_proxy_stats_s {
    uint64_t requests;             /**< forwards started */
    uint64_t completed;            /**< responses relayed to their end */
    uint64_t upstream_errors;      /**< upstream failures (answered, or cut mid-body) */
    uint64_t client_aborts;        /**< clients gone before the end: upstream aborted */
    uint64_t upstream_read_pauses; /**< a slow client stopped the upstream read */
    uint64_t client_read_pauses;   /**< a slow upstream stopped the client read */
    size_t max_held_bytes;         /**< most bytes one forward ever had queued (both ways) */
} rw_http_proxy_stats_t;

/**
 * Checks an integration for the template validator: an "http://" URI with a
 * host and a valid port (https is not supported), a method token or ANY, and
 * TimeoutInMillis within 50..30000 (HTTP API) or 50..29000 (REST). Returns 0,
 * or RW_ECONFIG with the reason in why (NUL-terminated, may be NULL).
 */
int rw__http_proxy_conf_check(const rw_http_proxy_conf_t *conf, char *why, size_t why_len);

/**
 * Forwards req (its handler has just been called; the body is unread) to the
 * upstream of conf, with the route's path parameters from match (may be NULL).
 * Takes the request over: it always answers and ends it, also on failure.
 * conf and match are only read during the call. client is the loop's HTTP
 * client (its pool is shared by every forward); stats may be NULL. Runs on
 * the loop thread. Returns 0 when the request went to the upstream, or the
 * negative code of the failure it answered at once (a bad conf: 500).
 */
int rw__http_proxy_forward(rw_http_req_t *req, const rw_http_proxy_conf_t *conf,
                           const rw_route_match_t *match, rw_http_client_t *client,
                           rw_http_proxy_stats_t *stats);

#endif
