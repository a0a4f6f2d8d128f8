/* The admin API, under /_/admin/ (loopback and the admin key, like the Invoke
 * API): API keys for the usage plans (the queues' messages are sqs.c's).
 *   POST   /_/admin/apikeys            {"name": "...", "plans": ["Plan"]} -> 201 {id, key, ...}
 *   GET    /_/admin/apikeys            -> 200 {"items": [...]} (never the keys themselves)
 *   DELETE /_/admin/apikeys/{id}       -> 204 (revoked)
 *   PUT    /_/admin/apikeys/{id}/plans/{plan}, DELETE the same -> 204 */
#include "apikeys.h"
#include "internal.h"

#include "reelway/error.h"

#include <cJSON.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "/_/admin/apikeys"

bool rw__admin_match(const rw_http_req_t *req)
{
    size_t n = strlen(PREFIX);
    return req->path_len >= n && !memcmp(req->path, PREFIX, n) &&
           (req->path_len == n || req->path[n] == '/');
}

void rw__admin_respond_json(rw_http_req_t *req, int status, struct cJSON *o)
{
    char *body = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    rw_http_header_t h = {"Content-Type", 12, "application/json", 16};
    if (body)
        rw_http_respond(req, status, &h, 1, body, strlen(body));
    else
        rw_http_respond_error(req, 500, "Internal server error", "out of memory", NULL, 0);
    cJSON_free(body);
}

static cJSON *record_json(const rw_apikey_record_t *rec)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", rec->id);
    cJSON_AddStringToObject(o, "name", rec->name);
    cJSON_AddBoolToObject(o, "enabled", rec->enabled);
    cJSON_AddNumberToObject(o, "createdMs", (double)rec->created_ms);
    cJSON *plans = cJSON_AddArrayToObject(o, "plans");
    for (size_t i = 0; i < rec->n_plans; i++)
        cJSON_AddItemToArray(plans, cJSON_CreateString(rec->plans[i]));
    return o;
}

static void on_admin_done(rw_apikeys_admin_result_t *res, void *arg)
{
    rw_http_req_t *req = arg;
    int kind = (int)(intptr_t)req->data;
    if (!rw_http_req_alive(req)) {
        rw_http_res_end(req, NULL, 0);
        return;
    }
    if (res->status != 0) {
        int status = res->status == RW_ENOTFOUND ? 404 : res->status == UV_EINVAL ? 400 : 503;
        rw_http_respond_error(req, status, status == 404 ? "Not Found" : status == 400
                                                                           ? "Bad Request"
                                                                           : "Service Unavailable",
                              res->error[0] ? res->error : rw_strerror(res->status), NULL, 0);
        return;
    }
    if (kind == 1) { /* create */
        cJSON *o = record_json(&res->rec);
        cJSON_AddStringToObject(o, "key", res->clear_key);
        rw__admin_respond_json(req, 201, o);
    } else if (kind == 2) { /* list */
        cJSON *o = cJSON_CreateObject();
        cJSON *items = cJSON_AddArrayToObject(o, "items");
        for (size_t i = 0; i < res->n_recs; i++)
            cJSON_AddItemToArray(items, record_json(&res->recs[i]));
        rw__admin_respond_json(req, 200, o);
    } else {
        rw_http_respond(req, 204, NULL, 0, NULL, 0);
    }
}

static void on_create_body(rw_http_req_t *req, int status, const char *body, size_t len)
{
    rw_apikeys_t *ak = ((gw_req_t *)req->app)->gw->apikeys;
    if (status != 0) {
        rw_http_respond_error(req, status == RW_ELIMIT ? 413 : 400, "Bad Request",
                              rw_strerror(status), NULL, 0);
        return;
    }
    cJSON *o = cJSON_ParseWithLength(body, len);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *plans = cJSON_GetObjectItemCaseSensitive(o, "plans");
    const char *ids[32];
    size_t n = 0;
    const cJSON *p;
    bool ok = cJSON_IsString(name) && (!plans || cJSON_IsArray(plans));
    cJSON_ArrayForEach(p, plans)
    {
        if (!cJSON_IsString(p) || n == 32)
            ok = false;
        else
            ids[n++] = p->valuestring;
    }
    if (!ok) {
        cJSON_Delete(o);
        rw_http_respond_error(req, 400, "Bad Request",
                              "expected {\"name\": string, \"plans\": [plan ids]}", NULL, 0);
        return;
    }
    req->data = (void *)(intptr_t)1;
    int rc = rw_apikeys_create(ak, name->valuestring, ids, n, on_admin_done, req);
    cJSON_Delete(o);
    if (rc != 0)
        rw_http_respond_error(req, rc == UV_EINVAL ? 400 : 503, "Bad Request",
                              rc == UV_EINVAL ? "unknown usage plan or bad name" : rw_strerror(rc),
                              NULL, 0);
}

bool rw__admin_authorized(rw_gateway_t *gw, rw_http_req_t *req)
{
    const char *ip = req->remote_ip;
    bool loopback = !strncmp(ip, "127.", 4) || !strcmp(ip, "::1") || !strncmp(ip, "::ffff:127.", 11);
    const char *key = rw_http_req_header(req, "x-reelway-admin-key");
    const char *admin = gw->cfg.admin_key;
    if (!loopback && !gw->cfg.invoke_api_public) {
        rw_http_respond_error(req, 403, "Forbidden",
                              "the admin API answers loopback only (--invoke-api-public)", NULL, 0);
        return false;
    }
    /* No key at all is a missing credential (401); a key that does not
     * match, or no admin key configured, is a refusal (403). */
    if (!key || !key[0]) {
        rw_http_respond_error(req, 401, "Unauthorized",
                              "the admin API needs the admin key in X-Reelway-Admin-Key", NULL, 0);
        return false;
    }
    if (!admin[0] || strlen(key) != strlen(admin) ||
        CRYPTO_memcmp(key, admin, strlen(admin)) != 0) {
        rw_http_respond_error(req, 403, "Forbidden", "the admin key is wrong", NULL, 0);
        return false;
    }
    return true;
}

void rw__admin(rw_gateway_t *gw, rw_http_req_t *req)
{
    gw_req_t *ctx = rw__app_ctx(gw, req, RW_APP_RID_INVOKE);
    ctx->route_key = "/_/admin/apikeys";
    if (!rw__admin_authorized(gw, req))
        return;
    if (!gw->apikeys) {
        rw_http_respond_error(req, 404, "Not Found", "no API requires keys in this template", NULL,
                              0);
        return;
    }
    size_t n = strlen(PREFIX);
    const char *rest = req->path + n;
    size_t rest_len = req->path_len - n;
    int rc = 0;
    if (rest_len == 0) {
        if (!strcmp(req->method, "POST")) {
            rc = rw_http_req_read_body(req, 64 * 1024, on_create_body);
            if (rc != 0)
                rw_http_respond_error(req, 413, "Request Too Long", NULL, NULL, 0);
            return;
        }
        if (!strcmp(req->method, "GET")) {
            req->data = (void *)(intptr_t)2;
            rc = rw_apikeys_list(gw->apikeys, on_admin_done, req);
        } else {
            rw_http_header_t allow = {"Allow", 5, "GET, POST", 9};
            rw_http_respond_error(req, 405, "Method Not Allowed", NULL, &allow, 1);
            return;
        }
    } else {
        /* /{id} or /{id}/plans/{plan} */
        char id[64] = "", plan[256] = "";
        if (sscanf(rest, "/%63[a-z0-9]/plans/%255[^/?]", id, plan) == 2 &&
            (!strcmp(req->method, "PUT") || !strcmp(req->method, "DELETE"))) {
            req->data = (void *)(intptr_t)3;
            rc = rw_apikeys_associate(gw->apikeys, id, plan, !strcmp(req->method, "PUT"),
                                      on_admin_done, req);
        } else if (sscanf(rest, "/%63[a-z0-9]", id) == 1 && strlen(id) + 1 == rest_len &&
                   !strcmp(req->method, "DELETE")) {
            req->data = (void *)(intptr_t)3;
            rc = rw_apikeys_revoke(gw->apikeys, id, on_admin_done, req);
        } else {
            rw_http_respond_error(req, 404, "Not Found", "unknown admin path or method", NULL, 0);
            return;
        }
    }
    if (rc != 0)
        rw_http_respond_error(req, rc == UV_EINVAL ? 400 : 503, "Bad Request", rw_strerror(rc),
                              NULL, 0);
}
