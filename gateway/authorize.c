/* Authorization of a matched route, in the order API Gateway applies it: the
 * route's authorizer (JWT / Cognito user pool, or a Lambda authorizer), then
 * for REST APIs the API key and its usage plan (throttle, quota). */
#include "app.h"
#include "authz_lambda.h"
#include "internal.h"
#include "template.h"

#include "reelway/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*next_cb)(gw_req_t *, gw_route_t *);

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
            if (z->kind == RW_TPL_AUTH_LAMBDA_TOKEN || z->kind == RW_TPL_AUTH_LAMBDA_REQUEST) {
                api->authorizers[k] =
                    rw_lambda_authz_new(gw, z, t->kind == RW_TPL_API_HTTP, why, whylen);
                if (!api->authorizers[k])
                    return RW_ECONFIG;
            }
        }
    }
    return 0;
}

void rw__authorize_free(rw_gateway_t *gw)
{
    for (size_t a = 0; a < gw->n_apis; a++) {
        gw_api_t *api = &gw->apis[a];
        if (!api->authorizers)
            continue;
        for (size_t k = 0; k < api->tpl->authorizer_count; k++) {
            const rw_tpl_authorizer_t *z = &api->tpl->authorizers[k];
            if (z->kind == RW_TPL_AUTH_LAMBDA_TOKEN || z->kind == RW_TPL_AUTH_LAMBDA_REQUEST)
                rw_lambda_authz_free(api->authorizers[k]);
        }
        free(api->authorizers);
        api->authorizers = NULL;
    }
}

/* The continuation once the authorizer has allowed the request. */
static void after_authorizer(gw_req_t *ctx)
{
    next_cb next = (next_cb)ctx->authz_next;
    next(ctx, ctx->route);
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
    after_authorizer(ctx);
}

static void on_lambda_abort(rw_http_req_t *req, int err)
{
    gw_req_t *ctx = req->app;
    if (ctx->inv)
        rw_invoke_cancel(ctx->inv);
}

void rw__app_authorize(gw_req_t *ctx, gw_route_t *route, next_cb next)
{
    const rw_tpl_route_t *t = route->tpl;
    gw_api_t *api = route->api;
    ctx->route = route;
    ctx->authz_next = (void (*)(void))next;
    if (t->authorizer < 0) {
        after_authorizer(ctx);
        return;
    }
    const rw_tpl_authorizer_t *z = &api->tpl->authorizers[t->authorizer];
    switch (z->kind) {
    case RW_TPL_AUTH_LAMBDA_TOKEN:
    case RW_TPL_AUTH_LAMBDA_REQUEST:
        rw_http_req_on_abort(ctx->req, on_lambda_abort);
        rw_lambda_authz_check(api->authorizers[t->authorizer], ctx, on_lambda_decided);
        return;
    default:
        snprintf(ctx->error_reason, sizeof ctx->error_reason, "authorizer kind not available");
        rw__app_error(ctx, 500, "Internal server error", NULL);
        return;
    }
}
