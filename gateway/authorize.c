/* Authorization of a matched route, in the order API Gateway applies it: the
 * route's authorizer (a JWT / Cognito user pool authorizer, or a Lambda
 * authorizer), then for REST APIs the API key with its usage plan (throttle,
 * quota). Each worker holds its own checkers (and their caches); the usage
 * plans' token buckets are shared by the node's workers, their quotas by every
 * node through MongoDB. */
#include "apikeys.h"
#include "app.h"
#include "authz_jwt.h"
#include "authz_lambda.h"
#include "internal.h"
#include "template.h"

#include "reelway/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*next_cb)(gw_req_t *, gw_route_t *);

static bool is_lambda(const rw_tpl_authorizer_t *z)
{
    return z->kind == RW_TPL_AUTH_LAMBDA_TOKEN || z->kind == RW_TPL_AUTH_LAMBDA_REQUEST;
}

static int build_jwt(rw_gateway_t *gw, const rw_tpl_authorizer_t *z, rw_jwt_authz_t **out,
                     char *why, size_t whylen)
{
    if (z->issuer_count != 1) {
        snprintf(why, whylen, "authorizer %s: reelway serves one issuer per authorizer (%zu given)",
                 z->name, z->issuer_count);
        return RW_ECONFIG;
    }
    char sources[8][300];
    const char *src[8];
    size_t n = 0;
    for (size_t i = 0; i < z->identity_count && n < 8; i++) {
        const rw_tpl_identity_t *id = &z->identity[i];
        if (id->kind == RW_TPL_IDENTITY_HEADER)
            snprintf(sources[n], sizeof sources[n], "$request.header.%s", id->name);
        else if (id->kind == RW_TPL_IDENTITY_QUERY)
            snprintf(sources[n], sizeof sources[n], "$request.querystring.%s", id->name);
        else
            continue;
        src[n] = sources[n];
        n++;
    }
    rw_jwt_authz_config_t cfg = {
        .name = z->name,
        .issuer = z->issuers[0].issuer,
        .audiences = (const char *const *)z->audiences,
        .n_audiences = z->audience_count,
        .identity_sources = n ? src : NULL,
        .n_identity_sources = n,
        .jwks_file = z->issuers[0].jwks_file,
        .jwks_uri = z->issuers[0].jwks_uri,
        .any_audience = z->kind == RW_TPL_AUTH_COGNITO,
    };
    return rw_jwt_authz_new(gw->loop, &cfg, out, why, whylen);
}

static bool needs_api_keys(const rw_template_t *tpl)
{
    for (size_t a = 0; a < tpl->api_count; a++)
        for (size_t r = 0; r < tpl->apis[a].route_count; r++)
            if (tpl->apis[a].routes[r].api_key_required)
                return true;
    return false;
}

static int build_api_keys(rw_gateway_t *gw, char *why, size_t whylen)
{
    const rw_template_t *tpl = gw->node.tpl;
    if (!needs_api_keys(tpl))
        return 0;
    rw_usage_plan_t *plans = calloc(tpl->usage_plan_count + 1, sizeof *plans);
    const char ***apis = calloc(tpl->usage_plan_count + 1, sizeof *apis);
    int rc = UV_ENOMEM;
    if (!plans || !apis)
        goto out;
    for (size_t i = 0; i < tpl->usage_plan_count; i++) {
        const rw_tpl_usage_plan_t *p = &tpl->usage_plans[i];
        apis[i] = calloc(p->api_count + 1, sizeof **apis);
        if (!apis[i])
            goto out;
        for (size_t k = 0; k < p->api_count; k++)
            apis[i][k] = tpl->apis[p->apis[k]].name;
        plans[i] = (rw_usage_plan_t){
            .id = p->name,
            .apis = apis[i],
            .n_apis = p->api_count,
            .rate_limit = p->rate_limit,
            .burst_limit = p->burst_limit > 0 ? (double)p->burst_limit : 0,
            .quota_limit = p->quota_limit,
            .quota_period = p->quota_period == RW_TPL_PERIOD_DAY     ? RW_QUOTA_DAY
                            : p->quota_period == RW_TPL_PERIOD_WEEK  ? RW_QUOTA_WEEK
                            : p->quota_period == RW_TPL_PERIOD_MONTH ? RW_QUOTA_MONTH
                                                                     : RW_QUOTA_NONE,
        };
    }
    rw_apikeys_config_t cfg = {.db_name = gw->cfg.db_name,
                               .plans = plans,
                               .n_plans = tpl->usage_plan_count};
    rc = rw_apikeys_new(gw->loop, gw->pool, gw->node.throttle, &cfg, &gw->apikeys, why, whylen);
out:
    for (size_t i = 0; apis && i < tpl->usage_plan_count; i++)
        free(apis[i]);
    free(apis);
    free(plans);
    return rc;
}

int rw__authorize_build(rw_gateway_t *gw, char *why, size_t whylen)
{
    for (size_t a = 0; a < gw->n_apis; a++) {
        gw_api_t *api = &gw->apis[a];
        const rw_tpl_api_t *t = api->tpl;
        api->authorizers = calloc(t->authorizer_count ? t->authorizer_count : 1, sizeof(void *));
        if (!api->authorizers)
            return UV_ENOMEM;
        for (size_t k = 0; k < t->authorizer_count; k++) {
            const rw_tpl_authorizer_t *z = &t->authorizers[k];
            if (is_lambda(z)) {
                api->authorizers[k] =
                    rw_lambda_authz_new(gw, z, t->kind == RW_TPL_API_HTTP, why, whylen);
                if (!api->authorizers[k])
                    return RW_ECONFIG;
            } else {
                int rc = build_jwt(gw, z, (rw_jwt_authz_t **)&api->authorizers[k], why, whylen);
                if (rc != 0)
                    return rc;
            }
        }
    }
    return build_api_keys(gw, why, whylen);
}

/* Closing is asynchronous for the checkers that may wait for a fetch or the
 * database; done runs once all of them are gone. */
typedef struct {
    int pending;
    void (*done)(void *);
    void *arg;
} closing_t;

static void on_one_closed(void *arg)
{
    closing_t *c = arg;
    if (--c->pending == 0) {
        void (*done)(void *) = c->done;
        void *darg = c->arg;
        free(c);
        done(darg);
    }
}

void rw__authorize_close(rw_gateway_t *gw, void (*done)(void *arg), void *arg)
{
    closing_t *c = calloc(1, sizeof *c);
    c->pending = 1;
    c->done = done;
    c->arg = arg;
    for (size_t a = 0; a < gw->n_apis; a++) {
        gw_api_t *api = &gw->apis[a];
        if (!api->authorizers)
            continue;
        for (size_t k = 0; k < api->tpl->authorizer_count; k++) {
            const rw_tpl_authorizer_t *z = &api->tpl->authorizers[k];
            if (is_lambda(z)) {
                rw_lambda_authz_free(api->authorizers[k]);
            } else if (api->authorizers[k]) {
                c->pending++;
                rw_jwt_authz_close(api->authorizers[k], on_one_closed, c);
            }
        }
        free(api->authorizers);
        api->authorizers = NULL;
    }
    if (gw->apikeys) {
        c->pending++;
        rw_apikeys_close(gw->apikeys, on_one_closed, c);
        gw->apikeys = NULL;
    }
    on_one_closed(c);
}

/* ---- the checks ------------------------------------------------------------------ */

static void continue_route(gw_req_t *ctx)
{
    ((next_cb)ctx->authz_next)(ctx, ctx->route);
}

static void on_api_key(rw_apikeys_result_t *res, void *arg)
{
    gw_req_t *ctx = arg;
    if (!rw_http_req_alive(ctx->req)) {
        rw_http_res_end(ctx->req, NULL, 0);
        return;
    }
    if (res->http_status != 200) {
        snprintf(ctx->error_reason, sizeof ctx->error_reason, "api key: %s", res->detail);
        rw_apikeys_respond(ctx->req, res);
        return;
    }
    snprintf(ctx->api_key_id, sizeof ctx->api_key_id, "%s", res->key_id);
    continue_route(ctx);
}

/* After the authorizer: the API key and its usage plan, if the route wants one. */
static void check_api_key(gw_req_t *ctx)
{
    gw_route_t *route = ctx->route;
    if (!route->tpl->api_key_required) {
        continue_route(ctx);
        return;
    }
    if (!ctx->gw->apikeys) {
        rw__app_error(ctx, 500, "Internal server error", "no usage plan covers this API");
        return;
    }
    rw_apikeys_result_t res;
    int rc = rw_apikeys_check(ctx->gw->apikeys, ctx->req, route->api->tpl->name, &res, on_api_key,
                              ctx);
    if (rc == RW_APIKEYS_PENDING)
        return;
    if (rc < 0) {
        rw__app_error(ctx, 500, "Internal server error", rw_strerror(rc));
        return;
    }
    on_api_key(&res, ctx);
}

static void on_lambda_decided(gw_req_t *ctx, int status, const char *message, const char *reason,
                              cJSON *authorizer, const char *usage_key)
{
    if (status < 0) {
        rw_http_res_end(ctx->req, NULL, 0);
        return;
    }
    if (status != 0) {
        if (reason)
            snprintf(ctx->error_reason, sizeof ctx->error_reason, "authorizer: %s", reason);
        if (status == 500)
            fprintf(stderr, "reelway: %s: authorizer failed: %s\n", ctx->req->request_id,
                    reason ? reason : "");
        rw__app_error(ctx, status, message, NULL);
        return;
    }
    ctx->authorizer = authorizer;
    check_api_key(ctx);
}

static void on_lambda_abort(rw_http_req_t *req, int err)
{
    gw_req_t *ctx = req->app;
    if (ctx->inv)
        rw_invoke_cancel(ctx->inv);
}

/* The JWT's claims and scopes, shaped for the route's payload version: 2.0
 * nests them under "jwt", 1.0 puts them directly in the authorizer map. */
static void on_jwt(rw_jwt_authz_result_t *res, void *arg)
{
    gw_req_t *ctx = arg;
    if (!rw_http_req_alive(ctx->req)) {
        rw_jwt_authz_result_release(res);
        rw_http_res_end(ctx->req, NULL, 0);
        return;
    }
    if (res->http_status != 200) {
        snprintf(ctx->error_reason, sizeof ctx->error_reason, "jwt: %s", res->detail);
        rw_jwt_authz_respond(ctx->req, res);
        rw_jwt_authz_result_release(res);
        return;
    }
    cJSON *az = rw_jwt_authz_event_authorizer(res);
    const char *pv = ctx->route->tpl->payload_version;
    if (az && !(pv && !strcmp(pv, "2.0"))) {
        cJSON *jwt = cJSON_DetachItemFromObject(az, "jwt");
        cJSON_Delete(az);
        az = jwt;
    }
    ctx->authorizer = az;
    rw_jwt_authz_result_release(res);
    check_api_key(ctx);
}

void rw__app_authorize(gw_req_t *ctx, gw_route_t *route, next_cb next)
{
    const rw_tpl_route_t *t = route->tpl;
    gw_api_t *api = route->api;
    ctx->route = route;
    ctx->authz_next = (void (*)(void))next;
    if (t->authorizer < 0) {
        check_api_key(ctx);
        return;
    }
    const rw_tpl_authorizer_t *z = &api->tpl->authorizers[t->authorizer];
    if (is_lambda(z)) {
        rw_http_req_on_abort(ctx->req, on_lambda_abort);
        rw_lambda_authz_check(api->authorizers[t->authorizer], ctx, on_lambda_decided);
        return;
    }
    /* The route's scopes, else the authorizer's defaults. */
    const char *const *scopes = (const char *const *)t->scopes;
    size_t n_scopes = t->scope_count;
    if (!n_scopes) {
        scopes = (const char *const *)z->default_scopes;
        n_scopes = z->default_scope_count;
    }
    rw_jwt_authz_result_t res;
    int rc = rw_jwt_authz_check(api->authorizers[t->authorizer], ctx->req, scopes, n_scopes, &res,
                                on_jwt, ctx);
    if (rc == RW_JWT_AUTHZ_PENDING)
        return;
    if (rc < 0) {
        rw__app_error(ctx, 500, "Internal server error", rw_strerror(rc));
        return;
    }
    on_jwt(&res, ctx);
}
