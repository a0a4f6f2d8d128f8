/* API Gateway proxy events: the invocation payload a Lambda-proxy route sends
 * to its function (HTTP API payload format 2.0, REST API and HTTP API payload
 * format 1.0), and the mapping of the function's answer back to an HTTP
 * response. Pure functions: no sockets, no loop. Private to the gateway. */
#ifndef REELWAY_GATEWAY_EVENT_H
#define REELWAY_GATEWAY_EVENT_H

#include "reelway/http.h"

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/**
 * A name/value pair given by pointer and length (neither needs a NUL): request
 * headers (original case, arrival order, duplicates kept), path parameters,
 * stage variables, and the headers of a mapped response. The same type as the
 * HTTP server's rw_http_header_t, so its request headers go in and a mapped
 * response's headers go to rw_http_res_start as they are.
 */
typedef rw_http_header_t rw_event_kv_t;

/** Payload format versions. */
enum {
    RW_EVENT_V1 = 1, /**< REST API proxy events, and HTTP API payload format 1.0 */
    RW_EVENT_V2 = 2, /**< HTTP API payload format 2.0 (HTTP APIs only) */
};

/**
 * The caller identity of a REST (or HTTP API 1.0) event: requestContext.identity.
 * Every NULL field is written as JSON null, as API Gateway does. sourceIp and
 * userAgent come from the request. apiKey and apiKeyId appear only when the
 * route required an API key (api_key != NULL). Strings are NUL-terminated.
 */
typedef struct rw_event_identity_s {
    const char *access_key;
    const char *account_id;
    const char *caller;
    const char *cognito_authentication_provider;
    const char *cognito_authentication_type;
    const char *cognito_identity_id;
    const char *cognito_identity_pool_id;
    const char *principal_org_id;
    const char *user;
    const char *user_arn;
    const char *api_key;    /**< the key presented; non-NULL adds apiKey and apiKeyId */
    const char *api_key_id; /**< its id (null when NULL and api_key is set) */
} rw_event_identity_t;

/**
 * What the router and the configuration know about the matched route. The
 * gateway fills one per request (path parameters are per request); every
 * pointer is borrowed for the duration of the call only. NUL-terminated
 * strings; a NULL string is written as "" (or null where API Gateway puts null).
 */
typedef struct rw_event_route_s {
    int payload_version; /**< RW_EVENT_V1 or RW_EVENT_V2 */
    bool http_api;       /**< an HttpApi (AWS::Serverless::HttpApi) rather than a REST Api:
                              decides the body encoding rules, the "version" key and the
                              Content-Length header of 1.0 events; forced for V2 */
    const char *account_id;
    const char *api_id;
    const char *stage;                /**< "$default" or the stage name */
    const char *route_key;            /**< V2: "GET /reels/{id}" or "$default" */
    const char *resource_path;        /**< V1: the resource template "/reels/{id}"; NULL = the
                                           request path (an HTTP API $default route) */
    const char *resource_id;          /**< V1 REST: requestContext.resourceId (NULL -> null) */
    const char *domain_name;          /**< NULL = the Host header */
    const char *domain_prefix;        /**< NULL = domain_name up to its first '.' */
    size_t stage_prefix_len;          /**< bytes at the start of the raw path that are the stage or
                                           base path ("/Prod"); V1 `path` leaves them out */
    const rw_event_kv_t *path_params; /**< decoded values, as the router extracted them */
    size_t n_path_params;
    const rw_event_kv_t *stage_vars;
    size_t n_stage_vars;
    const char *const *binary_media_types; /**< REST binaryMediaTypes: "image/png", a subtype
                                                wildcard (image/ then a star) or the full
                                                wildcard; ignored for HTTP APIs */
    size_t n_binary_media_types;
    const cJSON *authorizer; /**< requestContext.authorizer exactly as it must appear, shaped
                                  for the payload version by the authorizer ({"jwt": {...}},
                                  {"lambda": {...}}, or the REST map with principalId);
                                  NULL = none */
    const rw_event_identity_t *identity; /**< V1 only; NULL = every field null */
} rw_event_route_t;

/**
 * One HTTP request as the server parsed it. Pointers are borrowed for the call.
 */
typedef struct rw_event_request_s {
    const char *method;   /**< "GET" (NUL-terminated) */
    const char *raw_path; /**< the request target's path, percent-encoding as received */
    size_t raw_path_len;
    const char *raw_query; /**< what followed '?', as received (NULL/0 = none) */
    size_t raw_query_len;
    const rw_event_kv_t *headers; /**< original case, arrival order, duplicates kept */
    size_t n_headers;
    const char *source_ip;           /**< the client's address, "203.0.113.7" */
    const char *protocol;            /**< "HTTP/1.1" */
    const char *request_id;          /**< requestContext.requestId */
    const char *extended_request_id; /**< V1 requestContext.extendedRequestId (NULL = request_id) */
    int64_t time_ms;                 /**< when the request arrived, Unix epoch milliseconds */
    const void *body;                /**< the whole body (NULL/0 = none) */
    size_t body_len;
    const char *trace_id;        /**< non-NULL: the X-Amzn-Trace-Id value the function sees,
                                      replacing any the client sent */
    const char *forwarded_proto; /**< non-NULL: add X-Forwarded-For (client's list + source_ip),
                                      X-Forwarded-Port and X-Forwarded-Proto as API Gateway does,
                                      replacing the client's Port and Proto */
    unsigned forwarded_port;
} rw_event_request_t;

/**
 * Builds the invocation payload for a Lambda-proxy route: the JSON event of the
 * route's payload format version, with API Gateway's key omissions and nulls.
 *
 * On success *json is a malloc'd NUL-terminated buffer the caller frees with
 * free(), and *json_len its length. Strings that are not valid UTF-8 (header
 * values, decoded parameters) have each bad byte replaced by U+FFFD; a body
 * that must travel as text but is not valid UTF-8 is base64-encoded instead, so
 * no byte of it is lost. Returns 0, UV_EINVAL (bad arguments) or UV_ENOMEM.
 * Pure function, any thread.
 */
int rw_event_build(const rw_event_route_t *route, const rw_event_request_t *rq, char **json,
                   size_t *json_len);

/**
 * Whether the request body travels base64-encoded (isBase64Encoded): for REST
 * APIs when its Content-Type matches one of binary_media_types; for HTTP APIs
 * unless the Content-Type is textual (any text/ type, application/json,
 * application/xml, application/javascript), which is what API Gateway does; and, for both, when
 * a body that would go as text is not valid UTF-8. Any thread.
 */
bool rw_event_body_is_binary(const rw_event_route_t *route, const rw_event_request_t *rq);

/**
 * Whether media type `type` (a Content-Type or Accept entry: parameters and
 * case ignored) matches `pattern`: an exact type ("image/png"), a subtype
 * wildcard ("image/" then a star) or the full wildcard (star, slash, star).
 * Any thread.
 */
bool rw_event_media_type_match(const char *pattern, const char *type, size_t type_len);

/**
 * A mapped integration response: status, headers in the order they must be
 * sent (Set-Cookie once per cookie), and the body bytes. Owned by the caller
 * after a successful rw_event_response_parse; release with
 * rw_event_response_free. Header names and values are also NUL-terminated.
 */
typedef struct rw_event_response_s {
    int status;
    rw_event_kv_t *headers;
    size_t n_headers;
    char *body; /**< NUL-terminated for convenience; body_len may include NULs */
    size_t body_len;
    char *strings_; /**< private: storage of header names and values */
} rw_event_response_t;

/**
 * Maps a function's answer (the JSON it returned) to an HTTP response, the way
 * API Gateway does for the route's payload format:
 *
 * - 1.0: an object with an integer statusCode (100-599), optional headers
 *   (object of strings, numbers, booleans), multiValueHeaders (object of arrays
 *   of those; a name in both keeps only its multiValueHeaders values), body
 *   (string or null) and isBase64Encoded (boolean). A REST API decodes a base64
 *   body only when the first media type of the request's Accept header matches
 *   the binary media types, and otherwise sends the base64 text as is; an HTTP
 *   API always decodes.
 * - 2.0: the same without multiValueHeaders, plus cookies (array of strings,
 *   each sent as Set-Cookie). Valid JSON without a statusCode is the inferred
 *   format: 200, Content-Type application/json, the JSON text as body (a JSON
 *   string gives its content).
 *
 * Framing and hop-by-hop headers the function sets (Connection, Content-Length,
 * Date, Server, Transfer-Encoding, Upgrade, TE, Trailer, Keep-Alive) are
 * renamed x-amzn-Remapped-<name>, as API Gateway does, so they can never change
 * how the gateway frames its answer.
 *
 * On error returns RW_EPARSE (malformed answer) or UV_ENOMEM, writes a precise
 * reason to why (e.g. "headers.X-A: value contains CR or LF") and leaves *out
 * empty; the gateway then answers 502 {"message":"Internal server error"} and
 * logs the reason. `json` need not be NUL-terminated. Any thread.
 */
int rw_event_response_parse(const rw_event_route_t *route, const rw_event_request_t *rq,
                            const char *json, size_t len, rw_event_response_t *out, char *why,
                            size_t whylen);

/** Frees what rw_event_response_parse allocated and empties *res. Accepts NULL. */
void rw_event_response_free(rw_event_response_t *res);

#endif /* REELWAY_GATEWAY_EVENT_H */
