/* The request pipeline of one gateway worker: match the API by its mount and
 * the route by the router, answer CORS preflights, authorize, then hand the
 * request to its integration (MOCK, HTTP_PROXY, or a function as a Lambda
 * proxy integration), and log and count every request at its end. */
#include "app.h"

#include "cors.h"
#include "event.h"
#include "functions.h"
#include "integration_http_proxy.h"
#include "internal.h"
#include "metrics.h"
#include "router.h"
#include "template.h"

#include "reelway/error.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define API_GATEWAY_BODY_MAX (10 * 1024 * 1024) /* API Gateway's payload limit */
#define PRELUDE_MAX (64 * 1024)
#define HTTP_INTEGRATION_TYPE "application/vnd.awslambda.http-integration-response"

/* Built-in routes come first in the metrics table. */
enum { RID_HEALTH, RID_METRICS, RID_INVOKE, RID_UNMATCHED, RID_MEDIA, RID_FIRST };
static const char *const builtin_names[RID_FIRST] = {
    "GET /_/health", "GET /_/metrics", "POST /2015-03-31/functions/{name}/invocations",
    "(unmatched)", "GET {ServePath}/{key+}"};

/* ---- names shared with the supervisor ---------------------------------------- */

int rw__app_metric_names(const rw_template_t *tpl, char ***names, size_t *n)
{
    size_t count = RID_FIRST;
    for (size_t a = 0; tpl && a < tpl->api_count; a++)
        count += tpl->apis[a].route_count;
    char **out = calloc(count, sizeof *out);
    if (!out)
        return UV_ENOMEM;
    size_t k = 0;
    for (; k < RID_FIRST; k++)
        out[k] = strdup(builtin_names[k]);
    for (size_t a = 0; tpl && a < tpl->api_count; a++)
        for (size_t r = 0; r < tpl->apis[a].route_count; r++) {
            const rw_tpl_api_t *api = &tpl->apis[a];
            size_t len = strlen(api->name) + strlen(api->routes[r].route_key) + 2;
            out[k] = malloc(len);
            if (out[k])
                snprintf(out[k], len, "%s %s", api->name, api->routes[r].route_key);
            k++;
        }
    for (size_t i = 0; i < count; i++)
        if (!out[i]) {
            rw__app_names_free(out, count);
            return UV_ENOMEM;
        }
    *names = out;
    *n = count;
    return 0;
}

void rw__app_names_free(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

/* ---- building the routing tables from the template ----------------------------- */

static rw_fn_runtime_t runtime_of(rw_tpl_runtime_t k)
{
    return k == RW_TPL_RUNTIME_PYTHON ? RW_FN_PYTHON
           : k == RW_TPL_RUNTIME_NODEJS ? RW_FN_NODEJS
                                        : RW_FN_PROVIDED;
}

/* A provided function's CodeUri holds its bootstrap, or, for reelway's own C
 * functions built by CMake, the build tree holds it at the same relative path. */
static char *resolve_code_path(const rw_config_t *cfg, const rw_tpl_function_t *f)
{
    char probe[8400];
    snprintf(probe, sizeof probe, "%s/bootstrap", f->code_path);
    if (f->runtime_kind != RW_TPL_RUNTIME_PROVIDED || access(probe, X_OK) == 0)
        return strdup(f->code_path);
    const char *src = cfg->source_dir;
    size_t sl = strlen(src);
    if (sl && !strncmp(f->code_path, src, sl) && f->code_path[sl] == '/') {
        snprintf(probe, sizeof probe, "%s%s/bootstrap", cfg->functions_dir, f->code_path + sl);
        if (access(probe, X_OK) == 0) {
            probe[strlen(probe) - strlen("/bootstrap")] = '\0';
            return strdup(probe);
        }
    }
    return strdup(f->code_path);
}

int rw__app_build(rw_gateway_t *gw, char *why, size_t whylen)
{
    const rw_template_t *tpl = gw->node.tpl;
    if (!tpl)
        return 0;
    /* Functions. */
    size_t nf = tpl->function_count;
    gw->fn_configs = calloc(nf ? nf : 1, sizeof *gw->fn_configs);
    gw->fn_env = calloc(nf ? nf : 1, sizeof *gw->fn_env);
    gw->fn_paths = calloc(nf ? nf : 1, sizeof *gw->fn_paths);
    if (!gw->fn_configs || !gw->fn_env || !gw->fn_paths)
        return UV_ENOMEM;
    for (size_t i = 0; i < nf; i++) {
        const rw_tpl_function_t *f = &tpl->functions[i];
        char **env = calloc(f->env_count + 1, sizeof *env);
        if (!env)
            return UV_ENOMEM;
        for (size_t k = 0; k < f->env_count; k++) {
            size_t len = strlen(f->env[k].key) + strlen(f->env[k].value) + 2;
            env[k] = malloc(len);
            if (!env[k])
                return UV_ENOMEM;
            snprintf(env[k], len, "%s=%s", f->env[k].key, f->env[k].value);
        }
        gw->fn_env[i] = env;
        gw->fn_paths[i] = resolve_code_path(&gw->cfg, f);
        gw->fn_configs[i] = (rw_fn_config_t){
            .name = f->name,
            .arn = f->arn,
            .runtime = runtime_of(f->runtime_kind),
            .runtime_name = f->runtime,
            .handler = f->handler,
            .code_path = gw->fn_paths[i],
            .memory_mb = f->memory_mb,
            .timeout_s = f->timeout_s,
            .env = (const char *const *)env,
            .n_env = f->env_count,
            .reserved_concurrency = f->reserved_concurrency,
            .provisioned_concurrency = f->provisioned_concurrency,
        };
    }
    gw->n_fns = nf;
    if (nf) {
        rw_fnmgr_opts_t fo = {
            .data_dir = gw->cfg.data_dir,
            .python = gw->cfg.python,
            .node = gw->cfg.node,
            .node_ric = gw->cfg.node_ric,
            .idle_ms = gw->cfg.idle_ms,
            .init_timeout_ms = gw->cfg.init_timeout_ms,
            .max_environments = gw->cfg.max_environments,
            .region = tpl->region,
            .db_uri = gw->db_uri,
            .log_stdout = gw->cfg.function_logs_stdout,
            .shared = gw->node.fn_shared,
            .worker_index = gw->node.worker_index,
            .worker_count = gw->node.worker_count,
        };
        gw->fnmgr = rw_fnmgr_new(gw->loop, &fo, gw->fn_configs, nf, why, whylen);
        if (!gw->fnmgr)
            return RW_ECONFIG;
    }
    /* APIs, each with its own router under its mount. */
    gw->apis = calloc(tpl->api_count ? tpl->api_count : 1, sizeof *gw->apis);
    if (!gw->apis)
        return UV_ENOMEM;
    gw->n_apis = tpl->api_count;
    size_t metrics_id = RID_FIRST;
    for (size_t a = 0; a < tpl->api_count; a++) {
        const rw_tpl_api_t *t = &tpl->apis[a];
        gw_api_t *api = &gw->apis[a];
        api->tpl = t;
        api->mount_len = strlen(t->mount);
        api->router = rw_router_new();
        api->routes = calloc(t->route_count ? t->route_count : 1, sizeof *api->routes);
        api->stage_vars = calloc(t->stage_variable_count + 1, sizeof *api->stage_vars);
        api->binary_types = calloc(t->binary_media_type_count + 1, sizeof *api->binary_types);
        if (!api->router || !api->routes || !api->stage_vars || !api->binary_types)
            return UV_ENOMEM;
        for (size_t k = 0; k < t->stage_variable_count; k++)
            api->stage_vars[k] = (rw_event_kv_t){t->stage_variables[k].key,
                                                 strlen(t->stage_variables[k].key),
                                                 t->stage_variables[k].value,
                                                 strlen(t->stage_variables[k].value)};
        for (size_t k = 0; k < t->binary_media_type_count; k++)
            api->binary_types[k] = t->binary_media_types[k];
        if (t->cors.enabled) {
            api->has_cors = true;
            api->cors = (rw_cors_config_t){
                .allow_origins = (const char *const *)t->cors.allow_origins,
                .n_allow_origins = t->cors.allow_origin_count,
                .allow_methods = (const char *const *)t->cors.allow_methods,
                .n_allow_methods = t->cors.allow_method_count,
                .allow_headers = (const char *const *)t->cors.allow_headers,
                .n_allow_headers = t->cors.allow_header_count,
                .expose_headers = (const char *const *)t->cors.expose_headers,
                .n_expose_headers = t->cors.expose_header_count,
                .max_age = t->cors.max_age_s,
                .allow_credentials = t->cors.allow_credentials,
            };
        }
        for (size_t r = 0; r < t->route_count; r++) {
            const rw_tpl_route_t *tr = &t->routes[r];
            gw_route_t *route = &api->routes[r];
            route->api = api;
            route->tpl = tr;
            route->metrics_id = metrics_id++;
            route->fn = tr->integration == RW_TPL_INTEGRATION_FUNCTION ? tr->function : -1;
            int rc = rw_router_add(api->router, tr->method, tr->is_default ? "$default" : tr->path,
                                   route, why, whylen);
            if (rc != 0)
                return rc;
        }
    }
    return rw__authorize_build(gw, why, whylen);
}

void rw__app_free(rw_gateway_t *gw)
{
    for (size_t a = 0; a < gw->n_apis; a++) {
        rw_router_free(gw->apis[a].router);
        free(gw->apis[a].routes);
        free(gw->apis[a].stage_vars);
        free(gw->apis[a].binary_types);
    }
    free(gw->apis);
    for (size_t i = 0; i < gw->n_fns; i++) {
        for (size_t k = 0; gw->fn_env && gw->fn_env[i] && gw->fn_env[i][k]; k++)
            free(gw->fn_env[i][k]);
        if (gw->fn_env)
            free(gw->fn_env[i]);
        if (gw->fn_paths)
            free(gw->fn_paths[i]);
    }
    free(gw->fn_env);
    free(gw->fn_paths);
    free(gw->fn_configs);
    gw->apis = NULL;
    gw->fn_env = NULL;
    gw->fn_paths = NULL;
    gw->fn_configs = NULL;
}

/* ---- per-request context ---------------------------------------------------------- */

static int64_t epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* X-Amzn-Trace-Id ("Root=1-<8 hex>-<24 hex>...") and W3C traceparent
 * ("00-<32 hex>-<16 hex>-<2 hex>") are taken from the client when well formed,
 * else generated; the Root of one gives the other. */
static void trace_ids(gw_req_t *ctx)
{
    rw_http_req_t *req = ctx->req;
    const char *amzn = rw_http_req_header(req, "x-amzn-trace-id");
    const char *tp = rw_http_req_header(req, "traceparent");
    char trace[33] = "";
    char parent[17] = "";
    if (tp && strlen(tp) == 55 && !strncmp(tp, "00-", 3) && tp[35] == '-' && tp[52] == '-' &&
        is_hex(tp + 3, 32) && is_hex(tp + 36, 16)) {
        memcpy(trace, tp + 3, 32);
        snprintf(ctx->traceparent, sizeof ctx->traceparent, "%s", tp);
    }
    const char *root = amzn ? strstr(amzn, "Root=1-") : NULL;
    if (root && strlen(root) >= 7 + 8 + 1 + 24 && root[15] == '-' && is_hex(root + 7, 8) &&
        is_hex(root + 16, 24)) {
        snprintf(ctx->trace_id, sizeof ctx->trace_id, "%s", amzn);
        if (!trace[0]) {
            memcpy(trace, root + 7, 8);
            memcpy(trace + 8, root + 16, 24);
        }
    }
    if (!trace[0]) {
        /* X-Ray wants the epoch seconds first; the request id is random hex. */
        const char *rid = req->request_id;
        snprintf(trace, sizeof trace, "%08x", (unsigned)time(NULL));
        size_t k = 8;
        for (size_t i = 0; rid[i] && k < 32; i++)
            if (rid[i] != '-')
                trace[k++] = rid[i];
        trace[k] = '\0';
    }
    if (!ctx->trace_id[0])
        snprintf(ctx->trace_id, sizeof ctx->trace_id, "Root=1-%.8s-%.24s", trace, trace + 8);
    if (!ctx->traceparent[0]) {
        /* The span id: the request id's last hex digits. */
        const char *rid = req->request_id;
        size_t k = 0;
        for (size_t i = strlen(rid); i-- > 0 && k < 16;)
            if (rid[i] != '-')
                parent[k++] = rid[i];
        parent[k] = '\0';
        snprintf(ctx->traceparent, sizeof ctx->traceparent, "00-%.32s-%s-01", trace, parent);
    }
}

static gw_req_t *ctx_new(rw_gateway_t *gw, rw_http_req_t *req)
{
    gw_req_t *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->gw = gw;
    ctx->req = req;
    ctx->metrics_id = RID_UNMATCHED;
    ctx->route_key = "(unmatched)";
    ctx->time_ms = epoch_ms();
    req->app = ctx;
    trace_ids(ctx);
    return ctx;
}

static void ctx_free(gw_req_t *ctx)
{
    rw_route_match_free(&ctx->match);
    cJSON_Delete(ctx->authorizer);
    free(ctx->event_headers);
    free(ctx->prelude);
    free(ctx->event);
    free(ctx);
}

/* One JSON line per request, written with a single write(2) so that lines from
 * several workers never interleave. */
static void access_log(const gw_req_t *ctx, const rw_http_req_t *req, uint64_t latency_us)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return;
    char when[40];
    time_t sec = (time_t)(ctx->time_ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + strlen(when), sizeof when - strlen(when), ".%03dZ", (int)(ctx->time_ms % 1000));
    cJSON_AddStringToObject(o, "time", when);
    cJSON_AddStringToObject(o, "requestId", req->request_id);
    cJSON_AddStringToObject(o, "ip", req->remote_ip);
    cJSON_AddStringToObject(o, "method", req->method ? req->method : "");
    char path[2048];
    snprintf(path, sizeof path, "%.*s", (int)(req->path_len < 2000 ? req->path_len : 2000),
             req->path ? req->path : "");
    cJSON_AddStringToObject(o, "path", path);
    cJSON_AddStringToObject(o, "route", ctx->route_key);
    cJSON_AddNumberToObject(o, "status", req->status);
    cJSON_AddNumberToObject(o, "bytesIn", (double)req->bytes_in);
    cJSON_AddNumberToObject(o, "bytesOut", (double)req->bytes_out);
    cJSON_AddNumberToObject(o, "latencyUs", (double)latency_us);
    if (ctx->integration_ns)
        cJSON_AddNumberToObject(o, "integrationLatencyUs", (double)(ctx->integration_ns / 1000));
    cJSON_AddStringToObject(o, "traceId", ctx->trace_id);
    if (ctx->error_reason[0])
        cJSON_AddStringToObject(o, "error", ctx->error_reason);
    const char *ua = rw_http_req_header(req, "user-agent");
    if (ua)
        cJSON_AddStringToObject(o, "userAgent", ua);
    char *line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!line)
        return;
    size_t n = strlen(line);
    line[n] = '\n'; /* replaces the NUL; written with its length */
    ssize_t w = write(1, line, n + 1);
    (void)w;
    cJSON_free(line);
}

static void on_request_done(const rw_http_req_t *req, void *arg)
{
    rw_gateway_t *gw = arg;
    gw_req_t *ctx = req->app;
    uint64_t latency_us = (uv_hrtime() - req->start_ns) / 1000;
    size_t mid = ctx ? ctx->metrics_id : RID_UNMATCHED;
    rw_metrics_request(gw->node.metrics, mid, req->status, latency_us, req->bytes_in,
                       req->bytes_out);
    if (ctx) {
        if (gw->cfg.access_log)
            access_log(ctx, req, latency_us);
        ctx_free(ctx);
    }
}

void rw__app_attach(rw_gateway_t *gw)
{
    rw_http_server_on_done(gw->http, on_request_done, gw);
}

/* ---- answers -------------------------------------------------------------------- */

/* Extra headers every answer of an API gets: CORS (when configured and the
 * origin is allowed) and the trace id. */
typedef struct {
    rw_http_header_t h[RW_CORS_MAX_HEADERS + 4];
    size_t n;
    rw_cors_headers_t cors;
    bool has_cors;
} extra_t;

static void cors_request(const rw_http_req_t *req, rw_cors_request_t *cr)
{
    const char *origin = rw_http_req_header(req, "origin");
    const char *m = rw_http_req_header(req, "access-control-request-method");
    const char *hs = rw_http_req_header(req, "access-control-request-headers");
    *cr = (rw_cors_request_t){.method = req->method,
                              .origin = origin,
                              .origin_len = origin ? strlen(origin) : 0,
                              .request_method = m,
                              .request_method_len = m ? strlen(m) : 0,
                              .request_headers = hs,
                              .request_headers_len = hs ? strlen(hs) : 0};
}

static void extra_init(extra_t *x, gw_req_t *ctx, const gw_api_t *api)
{
    memset(x, 0, sizeof *x);
    if (api && api->has_cors) {
        rw_cors_request_t cr;
        cors_request(ctx->req, &cr);
        if (cr.origin && rw_cors_response(&api->cors, &cr, &x->cors) == 0 && x->cors.allowed) {
            x->has_cors = true;
            for (size_t i = 0; i < x->cors.n; i++)
                x->h[x->n++] = (rw_http_header_t){x->cors.h[i].name, strlen(x->cors.h[i].name),
                                                  x->cors.h[i].value, x->cors.h[i].value_len};
        }
    }
    x->h[x->n++] = (rw_http_header_t){"X-Amzn-Trace-Id", 15, ctx->trace_id, strlen(ctx->trace_id)};
    if (api && api->tpl->kind == RW_TPL_API_HTTP)
        x->h[x->n++] = (rw_http_header_t){"apigw-requestid", 15, ctx->req->request_id,
                                          strlen(ctx->req->request_id)};
}

static void extra_free(extra_t *x)
{
    if (x->has_cors)
        rw_cors_headers_free(&x->cors);
}

/* {"message": ...} as API Gateway answers, with the API's extra headers. */
static void answer_error(gw_req_t *ctx, const gw_api_t *api, int status, const char *message,
                         const char *reason)
{
    extra_t x;
    extra_init(&x, ctx, api);
    if (reason)
        snprintf(ctx->error_reason, sizeof ctx->error_reason, "%s", reason);
    /* API Gateway's own errors carry only "message"; reelway adds the reason
     * for errors it finds in the request itself. */
    rw_http_respond_error(ctx->req, status, message, reason, x.h, x.n);
    extra_free(&x);
}

/* ---- MOCK integration ------------------------------------------------------------- */

static void integration_mock(gw_req_t *ctx, gw_route_t *route)
{
    const rw_tpl_mock_t *mock = &route->tpl->mock;
    extra_t x;
    extra_init(&x, ctx, route->api);
    rw_http_header_t hs[64];
    size_t n = 0;
    if (mock->content_type)
        hs[n++] = (rw_http_header_t){"Content-Type", 12, mock->content_type,
                                     strlen(mock->content_type)};
    for (size_t i = 0; i < mock->header_count && n < 48; i++)
        hs[n++] = (rw_http_header_t){mock->headers[i].key, strlen(mock->headers[i].key),
                                     mock->headers[i].value, strlen(mock->headers[i].value)};
    for (size_t i = 0; i < x.n; i++)
        hs[n++] = x.h[i];
    rw_http_respond(ctx->req, mock->status, hs, n, mock->body, strlen(mock->body));
    extra_free(&x);
}

/* ---- Lambda proxy integration ------------------------------------------------------ */

void rw__app_event_route(gw_req_t *ctx, rw_event_route_t *er, rw_event_kv_t *params)
{
    gw_route_t *route = ctx->route;
    const gw_api_t *api = route->api;
    const rw_tpl_api_t *t = api->tpl;
    for (size_t i = 0; i < ctx->match.n_params; i++)
        params[i] = (rw_event_kv_t){ctx->match.names[i], strlen(ctx->match.names[i]),
                                    ctx->match.values[i], strlen(ctx->match.values[i])};
    bool v2 = route->tpl->payload_version && !strcmp(route->tpl->payload_version, "2.0");
    *er = (rw_event_route_t){
        .payload_version = v2 ? RW_EVENT_V2 : RW_EVENT_V1,
        .http_api = t->kind == RW_TPL_API_HTTP,
        .account_id = ctx->gw->node.tpl->account_id,
        .api_id = t->name,
        .stage = t->stage,
        .route_key = route->tpl->route_key,
        .resource_path = route->tpl->is_default ? NULL : route->tpl->path,
        .stage_prefix_len = api->mount_len,
        .path_params = params,
        .n_path_params = ctx->match.n_params,
        .stage_vars = api->stage_vars,
        .n_stage_vars = t->stage_variable_count,
        .binary_media_types = api->binary_types,
        .n_binary_media_types = t->binary_media_type_count,
        .authorizer = ctx->authorizer,
    };
    if (ctx->api_key_id[0]) {
        ctx->identity = (rw_event_identity_t){.api_key = rw_http_req_header(ctx->req, "x-api-key"),
                                              .api_key_id = ctx->api_key_id};
        er->identity = &ctx->identity;
    }
}

void rw__app_event_request(gw_req_t *ctx, rw_event_request_t *rq, const char *body,
                               size_t len)
{
    /* A traceparent the gateway generated travels to the function like one the
     * client sent (X-Amzn-Trace-Id is the builder's own). */
    if (!ctx->event_headers && !rw_http_req_header(ctx->req, "traceparent")) {
        ctx->event_headers = calloc(ctx->req->n_headers + 1, sizeof *ctx->event_headers);
        if (ctx->event_headers) {
            memcpy(ctx->event_headers, ctx->req->headers,
                   ctx->req->n_headers * sizeof *ctx->event_headers);
            ctx->event_headers[ctx->req->n_headers] = (rw_http_header_t){
                "traceparent", 11, ctx->traceparent, strlen(ctx->traceparent)};
        }
    }
    rw_http_req_t *req = ctx->req;
    *rq = (rw_event_request_t){
        .method = req->method,
        .raw_path = req->path,
        .raw_path_len = req->path_len,
        .raw_query = req->query_len ? req->query : NULL,
        .raw_query_len = req->query_len,
        .headers = ctx->event_headers ? ctx->event_headers : req->headers,
        .n_headers = ctx->event_headers ? req->n_headers + 1 : req->n_headers,
        .source_ip = req->remote_ip,
        .protocol = req->http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1",
        .request_id = req->request_id,
        .time_ms = ctx->time_ms,
        .body = body,
        .body_len = len,
        .trace_id = ctx->trace_id,
    };
}

static void lambda_write_done(rw_http_req_t *req, int status, void *arg)
{
    gw_req_t *ctx = arg;
    /* Resume the function once the client has taken most of what is queued. */
    if (ctx->paused && ctx->inv && rw_http_res_queued(req) < 64 * 1024) {
        ctx->paused = false;
        rw_invoke_resume(ctx->inv);
    }
}

static bool lambda_write(gw_req_t *ctx, const char *bytes, size_t len)
{
    if (!len)
        return true;
    int rc = rw_http_res_write(ctx->req, bytes, len, false, lambda_write_done, ctx);
    if (rc < 0)
        return true; /* the client is gone; the abort handler cancels */
    if (rc == 0) {
        ctx->paused = true;
        return false;
    }
    return true;
}

static void lambda_stream_start(rw_invoke_t *inv, void *arg)
{
    gw_req_t *ctx = arg;
    ctx->streaming = true;
    const char *ct = rw_invoke_content_type(inv);
    ctx->expect_prelude = ct && !strcasecmp(ct, HTTP_INTEGRATION_TYPE);
    if (!ctx->expect_prelude) {
        extra_t x;
        extra_init(&x, ctx, ctx->route->api);
        rw_http_header_t hs[16];
        size_t n = 0;
        const char *type = ct && *ct ? ct : "application/octet-stream";
        hs[n++] = (rw_http_header_t){"Content-Type", 12, type, strlen(type)};
        for (size_t i = 0; i < x.n; i++)
            hs[n++] = x.h[i];
        rw_http_res_start(ctx->req, 200, hs, n, -1);
        extra_free(&x);
    }
}

/* The HTTP-integration prelude: a JSON object {statusCode, headers, cookies}
 * then eight NUL bytes, as awslambda.HttpResponseStream.from writes it. */
static int apply_prelude(gw_req_t *ctx, const char *json, size_t len)
{
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return RW_EPARSE;
    }
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(o, "statusCode");
    int status = cJSON_IsNumber(sc) ? (int)sc->valuedouble : 200;
    if (status < 100 || status > 599) {
        cJSON_Delete(o);
        return RW_EPARSE;
    }
    extra_t x;
    extra_init(&x, ctx, ctx->route->api);
    rw_http_header_t hs[80];
    size_t n = 0;
    const cJSON *h;
    cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(o, "headers"))
    {
        if (n >= 60 || !cJSON_IsString(h) || !h->string)
            continue;
        hs[n++] = (rw_http_header_t){h->string, strlen(h->string), h->valuestring,
                                     strlen(h->valuestring)};
    }
    cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(o, "cookies"))
    {
        if (n >= 70 || !cJSON_IsString(h))
            continue;
        hs[n++] = (rw_http_header_t){"Set-Cookie", 10, h->valuestring, strlen(h->valuestring)};
    }
    for (size_t i = 0; i < x.n; i++)
        hs[n++] = x.h[i];
    int rc = rw_http_res_start(ctx->req, status, hs, n, -1);
    extra_free(&x);
    cJSON_Delete(o);
    return rc;
}

static bool lambda_stream_data(rw_invoke_t *inv, const char *bytes, size_t len, void *arg)
{
    gw_req_t *ctx = arg;
    if (!ctx->expect_prelude)
        return lambda_write(ctx, bytes, len);
    /* Gather the prelude until its eight NUL bytes. */
    if (ctx->prelude_len + len > PRELUDE_MAX) {
        snprintf(ctx->error_reason, sizeof ctx->error_reason, "HTTP prelude over 64 KiB");
        ctx->prelude_failed = true;
        return true;
    }
    if (ctx->prelude_failed)
        return true;
    char *p = realloc(ctx->prelude, ctx->prelude_len + len);
    if (!p)
        return true;
    ctx->prelude = p;
    memcpy(p + ctx->prelude_len, bytes, len);
    ctx->prelude_len += len;
    for (size_t i = 0; i + 8 <= ctx->prelude_len; i++) {
        if (memcmp(p + i, "\0\0\0\0\0\0\0\0", 8) != 0)
            continue;
        ctx->expect_prelude = false;
        if (apply_prelude(ctx, p, i) != 0) {
            snprintf(ctx->error_reason, sizeof ctx->error_reason, "malformed HTTP prelude");
            ctx->prelude_failed = true;
            return true;
        }
        return lambda_write(ctx, p + i + 8, ctx->prelude_len - i - 8);
    }
    return true;
}

static const char *outcome_of(rw_invoke_status_t s)
{
    switch (s) {
    case RW_INVOKE_OK: return "ok";
    case RW_INVOKE_FUNCTION_ERROR: return "error";
    case RW_INVOKE_TIMEOUT: return "timeout";
    case RW_INVOKE_CRASH: return "crash";
    case RW_INVOKE_INIT_ERROR: return "init_error";
    case RW_INVOKE_RESPONSE_TOO_LARGE: return "too_large";
    case RW_INVOKE_CANCELLED: return "cancelled";
    default: return "other";
    }
}

static void lambda_done(rw_invoke_t *inv, const rw_invoke_result_t *res, void *arg)
{
    gw_req_t *ctx = arg;
    ctx->inv = NULL;
    ctx->integration_ns = uv_hrtime() - ctx->integration_start;
    rw_metrics_invocation(ctx->gw->node.metrics, (size_t)ctx->route->fn, outcome_of(res->status),
                          res->cold_start, ctx->integration_ns / 1000);
    rw_http_req_t *req = ctx->req;
    const gw_api_t *api = ctx->route->api;
    if (res->status == RW_INVOKE_CANCELLED) {
        rw_http_res_end(req, NULL, 0);
        return;
    }
    if (ctx->streaming && (req->status || !ctx->prelude_failed)) {
        if (!req->status) {
            /* Nothing was sent yet (an empty stream, or a prelude never ended). */
            if (res->status == RW_INVOKE_OK && !ctx->expect_prelude) {
                rw_http_res_start(req, 200, NULL, 0, 0);
            } else {
                answer_error(ctx, api, 502, "Internal server error",
                             ctx->error_reason[0] ? ctx->error_reason : "incomplete stream");
                return;
            }
        }
        if (res->status != RW_INVOKE_OK) {
            /* The status line is out: all that is left is to say it in a trailer
             * and cut the connection so the client knows the body is incomplete. */
            snprintf(ctx->error_reason, sizeof ctx->error_reason, "%s mid-stream",
                     res->error_type ? res->error_type : outcome_of(res->status));
            rw_http_req_close_after(req);
            const char *type = res->error_type ? res->error_type : "Unhandled";
            rw_http_header_t tr = {"Lambda-Runtime-Function-Error-Type", 34, type, strlen(type)};
            rw_http_res_end(req, &tr, 1);
            return;
        }
        rw_http_res_end(req, NULL, 0);
        return;
    }
    switch (res->status) {
    case RW_INVOKE_OK: {
        rw_event_route_t er;
        rw_event_kv_t params[RW_ROUTE_MAX_PARAMS];
        rw__app_event_route(ctx, &er, params);
        rw_event_request_t rq;
        rw__app_event_request(ctx, &rq, NULL, 0);
        rw_event_response_t out;
        char why[256];
        if (ctx->prelude_failed ||
            rw_event_response_parse(&er, &rq, res->payload, res->len, &out, why, sizeof why) != 0) {
            fprintf(stderr, "reelway: %s: malformed function response: %s\n", req->request_id,
                    ctx->prelude_failed ? ctx->error_reason : why);
            answer_error(ctx, api, 502, "Internal server error", NULL);
            snprintf(ctx->error_reason, sizeof ctx->error_reason, "malformed response: %s", why);
            return;
        }
        extra_t x;
        extra_init(&x, ctx, api);
        size_t n = out.n_headers + x.n;
        rw_http_header_t *hs = calloc(n ? n : 1, sizeof *hs);
        size_t k = 0;
        for (size_t i = 0; hs && i < out.n_headers; i++) {
            if (x.has_cors && rw_cors_is_cors_header(out.headers[i].name, out.headers[i].name_len))
                continue; /* the API's CORS configuration wins */
            hs[k++] = out.headers[i];
        }
        for (size_t i = 0; hs && i < x.n; i++)
            hs[k++] = x.h[i];
        rw_http_respond(req, out.status, hs, k, out.body, out.body_len);
        free(hs);
        extra_free(&x);
        rw_event_response_free(&out);
        return;
    }
    case RW_INVOKE_TIMEOUT:
        answer_error(ctx, api, 504, "Endpoint request timed out", NULL);
        snprintf(ctx->error_reason, sizeof ctx->error_reason, "function timed out");
        return;
    case RW_INVOKE_SHUTDOWN:
        answer_error(ctx, api, 503, "Service Unavailable", "the gateway is shutting down");
        return;
    default:
        fprintf(stderr, "reelway: %s: function %s failed: %s %.*s\n", req->request_id,
                ctx->gw->fn_configs[ctx->route->fn].name,
                res->error_type ? res->error_type : outcome_of(res->status),
                (int)(res->len < 500 ? res->len : 500), res->payload);
        answer_error(ctx, api, 502, "Internal server error", NULL);
        snprintf(ctx->error_reason, sizeof ctx->error_reason, "function %s: %s",
                 outcome_of(res->status), res->error_type ? res->error_type : "");
        return;
    }
}

static void on_lambda_abort(rw_http_req_t *req, int err)
{
    gw_req_t *ctx = req->app;
    if (ctx->inv)
        rw_invoke_cancel(ctx->inv); /* lambda_done ends the request */
    else if (!ctx->reading_body)
        rw_http_res_end(req, NULL, 0);
}

static void on_lambda_body(rw_http_req_t *req, int status, const char *body, size_t len)
{
    gw_req_t *ctx = req->app;
    ctx->reading_body = false;
    const gw_api_t *api = ctx->route->api;
    if (status == RW_ELIMIT) {
        answer_error(ctx, api, 413, "Request Too Long", "body over 10 MB");
        return;
    }
    if (status != 0) {
        if (!rw_http_req_alive(req)) {
            rw_http_res_end(req, NULL, 0);
            return;
        }
        answer_error(ctx, api, status == RW_ETIMEOUT ? 408 : 400, "Bad Request", rw_strerror(status));
        return;
    }
    rw_event_route_t er;
    rw_event_kv_t params[RW_ROUTE_MAX_PARAMS];
    rw__app_event_route(ctx, &er, params);
    rw_event_request_t rq;
    rw__app_event_request(ctx, &rq, body, len);
    if (rw_event_build(&er, &rq, &ctx->event, &ctx->event_len) != 0) {
        answer_error(ctx, api, 500, "Internal server error", "cannot build the event");
        return;
    }
    if (ctx->event_len > RW_LAMBDA_PAYLOAD_MAX) {
        answer_error(ctx, api, 413, "Request Too Long",
                     "the event is over Lambda's 6 MB invocation payload limit");
        return;
    }
    rw_invoke_opts_t io = {.request_id = NULL, .trace_id = ctx->trace_id};
    rw_invoke_cbs_t cbs = {lambda_stream_start, lambda_stream_data, lambda_done};
    ctx->integration_start = uv_hrtime();
    rw_http_req_on_abort(req, on_lambda_abort);
    int rc = rw_fnmgr_invoke(ctx->gw->fnmgr, ctx->route->fn, ctx->event, ctx->event_len, &io, &cbs,
                             ctx, &ctx->inv);
    free(ctx->event);
    ctx->event = NULL;
    if (rc == 0)
        return;
    ctx->inv = NULL;
    if (rc == UV_EBUSY) {
        rw_metrics_invocation(ctx->gw->node.metrics, (size_t)ctx->route->fn, "throttled", false, 0);
        answer_error(ctx, api, 429, "Too Many Requests", NULL);
        snprintf(ctx->error_reason, sizeof ctx->error_reason, "function throttled");
    } else if (rc == RW_ELIMIT) {
        answer_error(ctx, api, 413, "Request Too Long", NULL);
    } else {
        answer_error(ctx, api, 503, "Service Unavailable", rw_strerror(rc));
    }
}

static void integration_lambda(gw_req_t *ctx, gw_route_t *route)
{
    if (!ctx->gw->fnmgr || route->fn < 0) {
        answer_error(ctx, route->api, 500, "Internal server error", "no such function");
        return;
    }
    ctx->reading_body = true;
    rw_http_req_on_abort(ctx->req, on_lambda_abort);
    int rc = rw_http_req_read_body(ctx->req, API_GATEWAY_BODY_MAX, on_lambda_body);
    if (rc != 0) {
        ctx->reading_body = false;
        if (rc == RW_ELIMIT)
            answer_error(ctx, route->api, 413, "Request Too Long", "body over 10 MB");
        else
            rw_http_res_end(ctx->req, NULL, 0);
    }
}

/* ---- routing ---------------------------------------------------------------------- */

/* The API whose mount is the longest prefix of the path ("" matches all). */
static gw_api_t *api_for(rw_gateway_t *gw, const char *path, size_t len, size_t *sub)
{
    gw_api_t *best = NULL;
    for (size_t a = 0; a < gw->n_apis; a++) {
        gw_api_t *api = &gw->apis[a];
        size_t ml = api->mount_len;
        if (ml > len || memcmp(path, api->tpl->mount, ml) != 0)
            continue;
        if (ml < len && path[ml] != '/')
            continue;
        if (!best || ml > best->mount_len)
            best = api;
    }
    if (best)
        *sub = best->mount_len;
    return best;
}

static void dispatch_route(gw_req_t *ctx, gw_route_t *route)
{
    ctx->route = route;
    ctx->metrics_id = route->metrics_id;
    ctx->route_key = route->tpl->route_key;
    switch (route->tpl->integration) {
    case RW_TPL_INTEGRATION_MOCK:
        integration_mock(ctx, route);
        return;
    case RW_TPL_INTEGRATION_FUNCTION:
        integration_lambda(ctx, route);
        return;
    case RW_TPL_INTEGRATION_HTTP_PROXY:
        rw__app_http_proxy(ctx, route);
        return;
    }
}

bool rw__app_route(rw_gateway_t *gw, rw_http_req_t *req)
{
    gw_req_t *ctx = ctx_new(gw, req);
    if (!ctx) {
        rw_http_respond_error(req, 503, "Service Unavailable", "out of memory", NULL, 0);
        return true;
    }
    size_t sub = 0;
    gw_api_t *api = api_for(gw, req->path, req->path_len, &sub);
    if (!api)
        return false;
    const char *path = req->path + sub;
    size_t path_len = req->path_len - sub;
    if (path_len == 0) {
        path = "/";
        path_len = 1;
    }
    char allow[128];
    int rc = rw_router_match(api->router, req->method, path, path_len, &ctx->match, allow,
                             sizeof allow);
    /* CORS preflights are the gateway's to answer unless a route takes OPTIONS
     * explicitly, as HTTP APIs do. */
    if (api->has_cors && !strcmp(req->method, "OPTIONS")) {
        rw_cors_request_t cr;
        cors_request(req, &cr);
        gw_route_t *hit = rc == 0 ? ctx->match.target : NULL;
        bool explicit_options = hit && !strcmp(hit->tpl->method, "OPTIONS");
        if (rw_cors_is_preflight(&cr) && !explicit_options) {
            rw_cors_headers_t out;
            ctx->route_key = "CORS preflight";
            if (rw_cors_preflight(&api->cors, &cr, &out) == 0) {
                rw_http_header_t hs[RW_CORS_MAX_HEADERS];
                for (size_t i = 0; i < out.n; i++)
                    hs[i] = (rw_http_header_t){out.h[i].name, strlen(out.h[i].name),
                                               out.h[i].value, out.h[i].value_len};
                rw_http_respond(req, 204, hs, out.n, NULL, 0);
                rw_cors_headers_free(&out);
            } else {
                rw_http_respond(req, 204, NULL, 0, NULL, 0);
            }
            return true;
        }
    }
    if (rc == RW_EPARSE) {
        answer_error(ctx, api, 400, "Bad Request", "invalid percent-encoding in the path");
        return true;
    }
    if (rc == RW_ENOTFOUND) {
        answer_error(ctx, api, 404, "Not Found", NULL);
        return true;
    }
    if (rc == UV_ENOTSUP) {
        extra_t x;
        extra_init(&x, ctx, api);
        x.h[x.n++] = (rw_http_header_t){"Allow", 5, allow, strlen(allow)};
        rw_http_respond_error(req, 405, "Method Not Allowed", NULL, x.h, x.n);
        extra_free(&x);
        return true;
    }
    if (rc != 0) {
        answer_error(ctx, api, 500, "Internal server error", rw_strerror(rc));
        return true;
    }
    gw_route_t *route = ctx->match.target;
    rw__app_authorize(ctx, route, dispatch_route);
    return true;
}

gw_req_t *rw__app_ctx(rw_gateway_t *gw, rw_http_req_t *req, size_t builtin_id)
{
    gw_req_t *ctx = req->app ? req->app : ctx_new(gw, req);
    if (ctx) {
        ctx->metrics_id = builtin_id;
        ctx->route_key = builtin_names[builtin_id];
    }
    return ctx;
}

void rw__app_metrics(rw_gateway_t *gw, rw_http_req_t *req)
{
    rw__app_ctx(gw, req, RID_METRICS);
    rw_metrics_connections(gw->node.metrics, gw->node.worker_index,
                           rw_http_server_connections(gw->http));
    size_t len = 0;
    char *text = gw->node.metrics ? rw_metrics_render(gw->node.metrics, &len) : NULL;
    if (!text) {
        rw_http_respond_error(req, 503, "Service Unavailable", "metrics unavailable", NULL, 0);
        return;
    }
    rw_http_header_t h = {"Content-Type", 12, "text/plain; version=0.0.4", 25};
    rw_http_respond(req, 200, &h, 1, text, len);
    free(text);
}

void rw__app_mark(gw_req_t *ctx, size_t builtin_id)
{
    ctx->metrics_id = builtin_id;
    ctx->route_key = builtin_names[builtin_id];
}

/* ---- HTTP_PROXY integration ------------------------------------------------------- */

void rw__app_http_proxy(gw_req_t *ctx, gw_route_t *route)
{
    const rw_tpl_route_t *t = route->tpl;
    rw_http_proxy_conf_t conf = {
        .uri = t->http_proxy.uri,
        .http_method = t->http_proxy.method,
        .timeout_ms = t->timeout_ms > 0 ? (uint64_t)t->timeout_ms : 0,
        .flavour = route->api->tpl->kind == RW_TPL_API_HTTP ? RW_HTTP_PROXY_HTTP_API
                                                            : RW_HTTP_PROXY_REST_API,
        .max_body_bytes = API_GATEWAY_BODY_MAX,
    };
    ctx->integration_start = uv_hrtime();
    rw__http_proxy_forward(ctx->req, &conf, &ctx->match, ctx->gw->http_client, NULL);
}

void rw__app_method_arn(gw_req_t *ctx, char *out, size_t len)
{
    const rw_template_t *tpl = ctx->gw->node.tpl;
    const gw_api_t *api = ctx->route->api;
    rw_http_req_t *req = ctx->req;
    const char *path = req->path + api->mount_len;
    size_t plen = req->path_len - api->mount_len;
    if (plen && *path == '/')
        path++, plen--;
    snprintf(out, len, "arn:aws:execute-api:%s:%s:%s/%s/%s/%.*s", tpl->region, tpl->account_id,
             api->tpl->name, api->tpl->stage, req->method, (int)plen, path);
}

void rw__app_error(gw_req_t *ctx, int status, const char *message, const char *reason)
{
    answer_error(ctx, ctx->route ? ctx->route->api : NULL, status, message, reason);
}
