/* The gateway's application layer: the template's APIs, routes and functions,
 * and the per-request context every integration shares. Private to gateway/. */
#ifndef REELWAY_GATEWAY_APP_H
#define REELWAY_GATEWAY_APP_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cors.h"
#include "event.h"
#include "reelway/http.h"
#include "router.h"

typedef struct rw_gateway_s rw_gateway_t;
typedef struct gw_route_s gw_route_t;
typedef struct gw_api_s gw_api_t;
typedef struct rw_invoke_s rw_invoke_t;
typedef struct rw_template_s rw_template_t;

typedef struct rw_tpl_route_s rw_tpl_route_t;
typedef struct rw_tpl_api_s rw_tpl_api_t;

struct gw_route_s {
    gw_api_t *api;
    const rw_tpl_route_t *tpl;
    size_t metrics_id;
    int fn; /* function index (FUNCTION integration) */
};

struct gw_api_s {
    const rw_tpl_api_t *tpl;
    rw_router_t *router;
    size_t mount_len;
    gw_route_t *routes;
    rw_event_kv_t *stage_vars;
    const char **binary_types;
    rw_cors_config_t cors;
    bool has_cors;
    void **authorizers;           /* per template authorizer: its checker (authorize.c) */
};

/** One request's state across the pipeline; freed when the request is done. */
typedef struct gw_req_s {
    rw_gateway_t *gw;
    rw_http_req_t *req;
    size_t metrics_id;
    const char *route_key;        /* for the access log */
    int64_t time_ms;              /* arrival, epoch ms */
    char trace_id[128];           /* X-Amzn-Trace-Id */
    char traceparent[64];         /* W3C */
    rw_http_header_t *event_headers; /* the request's, plus a generated traceparent */
    char error_reason[256];       /* logged with the request */
    gw_route_t *route;
    rw_route_match_t match;
    cJSON *authorizer;            /* requestContext.authorizer for the event (owned) */
    void (*authz_next)(void);     /* where authorization continues (authorize.c) */
    char api_key_id[16];          /* the API key that was accepted (REST identity) */
    rw_event_identity_t identity; /* v1 requestContext.identity, when a key was used */
    /* Lambda proxy */
    rw_invoke_t *inv;
    uint64_t integration_start, integration_ns;
    char *event;
    size_t event_len;
    bool reading_body;
    bool streaming, expect_prelude, prelude_failed, paused;
    char *prelude;
    size_t prelude_len;
    void *integration;            /* state of another integration (HTTP proxy) */
} gw_req_t;

/** The event builder's inputs for a matched route (params: RW_ROUTE_MAX_PARAMS). */
void rw__app_event_route(gw_req_t *ctx, rw_event_route_t *er, rw_event_kv_t *params);
void rw__app_event_request(gw_req_t *ctx, rw_event_request_t *rq, const char *body, size_t len);

/** The execute-api ARN of a request (REST methodArn / HTTP API routeArn). */
void rw__app_method_arn(gw_req_t *ctx, char *out, size_t len);

/** Answers an error with the API's extra headers (CORS, trace id); reason is
 *  logged and, when given, added to the body. */
void rw__app_error(gw_req_t *ctx, int status, const char *message, const char *reason);

/** Builds routers, functions and the rest from the template (gw->node.tpl). */
int rw__app_build(rw_gateway_t *gw, char *why, size_t whylen);
/** Frees what rw__app_build made (the function manager is closed separately). */
void rw__app_free(rw_gateway_t *gw);
/** Hooks the access log and metrics to the HTTP server. */
void rw__app_attach(rw_gateway_t *gw);

/** Routes a request to a template API; false when no API's mount matches. */
bool rw__app_route(rw_gateway_t *gw, rw_http_req_t *req);

/** The context for a built-in route (health, metrics, invoke API). */
gw_req_t *rw__app_ctx(rw_gateway_t *gw, rw_http_req_t *req, size_t builtin_id);

/** GET /_/metrics. */
void rw__app_metrics(rw_gateway_t *gw, rw_http_req_t *req);

/** Authorizes a matched route (JWT, Lambda authorizer, API key + usage plan), then
 *  calls next, or answers 401/403/429/500 itself. */
void rw__app_authorize(gw_req_t *ctx, gw_route_t *route, void (*next)(gw_req_t *, gw_route_t *));

/** Builds the per-worker authorizers and API key checker; closes them
 *  (asynchronously: done runs once all are gone). */
int rw__authorize_build(rw_gateway_t *gw, char *why, size_t whylen);
void rw__authorize_close(rw_gateway_t *gw, void (*done)(void *arg), void *arg);

/** The HTTP_PROXY integration. */
void rw__app_http_proxy(gw_req_t *ctx, gw_route_t *route);

/** Metrics names: the built-in routes, then "API ROUTEKEY" for every route. */
int rw__app_metric_names(const rw_template_t *tpl, char ***names, size_t *n);
void rw__app_names_free(char **names, size_t n);

enum {
    RW_APP_RID_HEALTH,
    RW_APP_RID_METRICS,
    RW_APP_RID_INVOKE,
    RW_APP_RID_UNMATCHED,
    RW_APP_RID_MEDIA /* a bucket's objects at its ServePath (media.c) */
};

#endif
