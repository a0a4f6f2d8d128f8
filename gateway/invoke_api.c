/* Lambda's Invoke API, POST /2015-03-31/functions/{name}/invocations, so the
 * AWS CLI and SDKs (with a custom endpoint) and `reelway invoke` can call
 * functions directly: RequestResponse, Event (durably queued first) and
 * DryRun. Only from loopback unless configured otherwise, and only with the
 * admin key (X-Reelway-Admin-Key, or as the secret of a SigV4 signature). */
#include "app.h"
#include "internal.h"
#include "sigv4.h"

#include "reelway/error.h"

#include <cJSON.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "/2015-03-31/functions/"
#define SUFFIX "/invocations"

typedef struct {
    rw_gateway_t *gw;
    rw_http_req_t *req;
    int fn;
    rw_invoke_t *inv;
    bool gone;
} invoke_ctx_t;

/* Lambda's service errors: a JSON body with Type and message, the error name
 * in x-amzn-ErrorType. */
static void service_error(rw_http_req_t *req, int status, const char *type, const char *message)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "Type", status >= 500 ? "Service" : "User");
    cJSON_AddStringToObject(o, "message", message);
    char *body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    rw_http_header_t hs[] = {{"Content-Type", 12, "application/json", 16},
                             {"x-amzn-ErrorType", 16, type, strlen(type)},
                             {"x-amzn-RequestId", 16, req->request_id, strlen(req->request_id)}};
    rw_http_respond(req, status, hs, 3, body ? body : "{}", body ? strlen(body) : 2);
    cJSON_free(body);
}

bool rw__invoke_api_match(const rw_http_req_t *req)
{
    size_t pl = strlen(PREFIX), sl = strlen(SUFFIX);
    return req->path_len > pl + sl && !memcmp(req->path, PREFIX, pl) &&
           !memcmp(req->path + req->path_len - sl, SUFFIX, sl);
}

static bool is_loopback(const char *ip)
{
    return !strncmp(ip, "127.", 4) || !strcmp(ip, "::1") || !strncmp(ip, "::ffff:127.", 11);
}

static void on_invoked(rw_invoke_t *inv, const rw_invoke_result_t *res, void *arg)
{
    invoke_ctx_t *ic = arg;
    rw_http_req_t *req = ic->req;
    ic->inv = NULL;
    if (res->status == RW_INVOKE_CANCELLED || ic->gone) {
        rw_http_res_end(req, NULL, 0);
        free(ic);
        return;
    }
    if (res->status == RW_INVOKE_SHUTDOWN) {
        service_error(req, 503, "ServiceException", "reelway is shutting down");
        free(ic);
        return;
    }
    /* Function errors of every kind are a 200 with X-Amz-Function-Error and
     * the error document, as Lambda answers them. */
    rw_http_header_t hs[6];
    size_t n = 0;
    hs[n++] = (rw_http_header_t){"Content-Type", 12, "application/json", 16};
    hs[n++] = (rw_http_header_t){"X-Amz-Executed-Version", 22, "$LATEST", 7};
    hs[n++] = (rw_http_header_t){"x-amzn-RequestId", 16, res->request_id, strlen(res->request_id)};
    if (res->status != RW_INVOKE_OK)
        hs[n++] = (rw_http_header_t){"X-Amz-Function-Error", 20, "Unhandled", 9};
    rw_http_respond(req, 200, hs, n, res->payload, res->len);
    free(ic);
}

static void on_client_gone(rw_http_req_t *req, int err)
{
    invoke_ctx_t *ic = req->data;
    ic->gone = true;
    if (ic->inv)
        rw_invoke_cancel(ic->inv);
}

static void on_enqueued(void *arg, int status, const char *request_id)
{
    invoke_ctx_t *ic = arg;
    rw_http_req_t *req = ic->req;
    if (status != 0) {
        service_error(req, 503, "ServiceException",
                      "the event could not be stored durably; nothing was queued");
    } else {
        rw_http_header_t hs[] = {
            {"x-amzn-RequestId", 16, request_id, strlen(request_id)},
            {"X-Amz-Executed-Version", 22, "$LATEST", 7}};
        rw_http_respond(req, 202, hs, 2, NULL, 0);
    }
    free(ic);
}

static void on_body(rw_http_req_t *req, int status, const char *body, size_t len)
{
    invoke_ctx_t *ic = req->data;
    rw_gateway_t *gw = ic->gw;
    if (status == RW_ELIMIT) {
        service_error(req, 413, "RequestTooLargeException",
                      "Request must be smaller than 6291456 bytes for the InvokeFunction operation");
        free(ic);
        return;
    }
    if (status != 0) {
        rw_http_res_end(req, NULL, 0);
        free(ic);
        return;
    }
    /* The admin key: as X-Reelway-Admin-Key, or the secret of a SigV4 signature
     * (AWS CLI / SDKs: AWS_ACCESS_KEY_ID=reelway AWS_SECRET_ACCESS_KEY=<key>). */
    const char *key = rw_http_req_header(req, "x-reelway-admin-key");
    const char *admin = gw->cfg.admin_key;
    char why[256] = "";
    bool ok = false;
    if (key)
        ok = strlen(key) == strlen(admin) && CRYPTO_memcmp(key, admin, strlen(admin)) == 0;
    else if (rw_http_req_header(req, "authorization"))
        ok = rw_sigv4_verify(req, body, len, "reelway", admin, why, sizeof why) == 0;
    if (!ok) {
        service_error(req, 403, "AccessDeniedException",
                      why[0] ? why : "the admin key is missing or wrong");
        free(ic);
        return;
    }
    const char *type = rw_http_req_header(req, "x-amz-invocation-type");
    if (!type)
        type = "RequestResponse";
    /* Lambda accepts only JSON payloads (an empty body is the JSON null). */
    if (len) {
        cJSON *j = cJSON_ParseWithLength(body, len);
        if (!j) {
            service_error(req, 400, "InvalidRequestContentException",
                          "Could not parse request body into json");
            free(ic);
            return;
        }
        cJSON_Delete(j);
    }
    if (!strcmp(type, "DryRun")) {
        rw_http_respond(req, 204, NULL, 0, NULL, 0);
        free(ic);
        return;
    }
    if (!strcmp(type, "Event")) {
        const rw_fn_config_t *c = rw_fnmgr_config(gw->fnmgr, ic->fn);
        int rc = rw__gateway_enqueue(gw, c->name, len ? body : "null", len ? len : 4, NULL,
                                     on_enqueued, ic);
        if (rc != 0) {
            service_error(req, 503, "ServiceException", rw_strerror(rc));
            free(ic);
        }
        return;
    }
    if (strcmp(type, "RequestResponse") != 0) {
        service_error(req, 400, "InvalidParameterValueException",
                      "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun");
        free(ic);
        return;
    }
    rw_invoke_opts_t io = {
        .trace_id = rw_http_req_header(req, "x-amzn-trace-id"),
        .client_context = rw_http_req_header(req, "x-amz-client-context"),
    };
    rw_invoke_cbs_t cbs = {.done = on_invoked};
    int rc = rw_fnmgr_invoke(gw->fnmgr, ic->fn, len ? body : "null", len ? len : 4, &io, &cbs, ic,
                             &ic->inv);
    if (rc == 0) {
        rw_http_req_on_abort(req, on_client_gone);
        return;
    }
    if (rc == UV_EBUSY)
        service_error(req, 429, "TooManyRequestsException", "Rate Exceeded.");
    else if (rc == RW_ELIMIT)
        service_error(req, 413, "RequestTooLargeException",
                      "Request must be smaller than 6291456 bytes for the InvokeFunction operation");
    else
        service_error(req, 503, "ServiceException", rw_strerror(rc));
    free(ic);
}

void rw__invoke_api(rw_gateway_t *gw, rw_http_req_t *req)
{
    rw__app_ctx(gw, req, RW_APP_RID_INVOKE);
    if (strcmp(req->method, "POST") != 0) {
        rw_http_header_t allow = {"Allow", 5, "POST", 4};
        rw_http_respond_error(req, 405, "Method Not Allowed", "use POST", &allow, 1);
        return;
    }
    if (!gw->cfg.invoke_api_public && !is_loopback(req->remote_ip)) {
        service_error(req, 403, "AccessDeniedException",
                      "the Invoke API answers loopback clients only (see --invoke-api-public)");
        return;
    }
    if (!gw->cfg.admin_key[0]) {
        service_error(req, 403, "AccessDeniedException", "no admin key is configured");
        return;
    }
    /* The name: a function name, or its ARN (possibly percent-encoded). */
    size_t pl = strlen(PREFIX), sl = strlen(SUFFIX);
    char *name = rw_percent_decode(req->path + pl, req->path_len - pl - sl, NULL);
    int fn = -1;
    if (name && gw->fnmgr) {
        const char *n = name;
        const char *colon = strrchr(name, ':');
        if (!strncmp(name, "arn:", 4) && colon)
            n = colon + 1;
        fn = rw_fnmgr_find(gw->fnmgr, n);
    }
    if (fn < 0) {
        char msg[600];
        snprintf(msg, sizeof msg, "Function not found: %s", name ? name : "(bad encoding)");
        free(name);
        service_error(req, 404, "ResourceNotFoundException", msg);
        return;
    }
    free(name);
    invoke_ctx_t *ic = calloc(1, sizeof *ic);
    if (!ic) {
        service_error(req, 503, "ServiceException", "out of memory");
        return;
    }
    ic->gw = gw;
    ic->req = req;
    ic->fn = fn;
    req->data = ic;
    int rc = rw_http_req_read_body(req, RW_LAMBDA_PAYLOAD_MAX, on_body);
    if (rc == RW_ELIMIT) {
        on_body(req, RW_ELIMIT, NULL, 0);
    } else if (rc != 0) {
        rw_http_res_end(req, NULL, 0);
        free(ic);
    }
}
