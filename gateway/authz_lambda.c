/* Lambda authorizers, as API Gateway runs them: TOKEN and REQUEST authorizers
 * of REST APIs answering with an IAM policy (principalId, policyDocument,
 * context), and HTTP API Lambda authorizers answering with a policy or, with
 * simple responses, {"isAuthorized", "context"}. The authorizer is a function
 * like any other (an environment of its own). Results are cached by identity
 * source for the authorizer's TTL; a cached policy is evaluated again against
 * each request's method ARN, as API Gateway does. */
#include "authz_lambda.h"

#include "functions.h"
#include "internal.h"
#include "template.h"

#include "reelway/error.h"

#include <cJSON.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CACHE_MAX 4096

typedef struct entry_s {
    struct entry_s *next;       /* hash chain */
    struct entry_s *older;      /* insertion order, for eviction */
    char *key;
    uint64_t expires_ms;        /* uv_now */
    cJSON *answer;              /* the authorizer's whole answer */
} entry_t;

struct rw_lambda_authz_s {
    rw_gateway_t *gw;
    const rw_tpl_authorizer_t *tpl;
    bool http_api;
    int fn;
    bool has_regex;
    regex_t regex;
    entry_t *buckets[1024];
    entry_t *oldest, *newest;
    size_t n;
    uint64_t invocations;       /* authorizer calls made (for tests) */
};

typedef struct {
    rw_lambda_authz_t *a;
    gw_req_t *ctx;
    rw_lambda_authz_done_cb done;
    char *key;
    rw_invoke_t *inv;
} check_t;

rw_lambda_authz_t *rw_lambda_authz_new(rw_gateway_t *gw, const rw_tpl_authorizer_t *tpl,
                                       bool http_api, char *why, size_t whylen)
{
    rw_lambda_authz_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->gw = gw;
    a->tpl = tpl;
    a->http_api = http_api;
    a->fn = tpl->function;
    if (tpl->validation_expression) {
        /* API Gateway anchors the expression to the whole token. */
        size_t n = strlen(tpl->validation_expression) + 8;
        char *re = malloc(n);
        snprintf(re, n, "^(%s)$", tpl->validation_expression);
        int rc = regcomp(&a->regex, re, REG_EXTENDED | REG_NOSUB);
        free(re);
        if (rc != 0) {
            snprintf(why, whylen, "authorizer %s: invalid ValidationExpression", tpl->name);
            free(a);
            return NULL;
        }
        a->has_regex = true;
    }
    return a;
}

void rw_lambda_authz_free(rw_lambda_authz_t *a)
{
    if (!a)
        return;
    for (entry_t *e = a->oldest; e;) {
        entry_t *next = e->older;
        free(e->key);
        cJSON_Delete(e->answer);
        free(e);
        e = next;
    }
    if (a->has_regex)
        regfree(&a->regex);
    free(a);
}

uint64_t rw_lambda_authz_invocations(const rw_lambda_authz_t *a)
{
    return a->invocations;
}

/* ---- the cache ------------------------------------------------------------------ */

static size_t hash(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static entry_t *cache_get(rw_lambda_authz_t *a, const char *key)
{
    uint64_t now = uv_now(a->gw->loop);
    for (entry_t *e = a->buckets[hash(key) % 1024]; e; e = e->next)
        if (!strcmp(e->key, key))
            return e->expires_ms > now ? e : NULL;
    return NULL;
}

static void cache_unlink(rw_lambda_authz_t *a, entry_t *victim)
{
    entry_t **pp = &a->buckets[hash(victim->key) % 1024];
    while (*pp && *pp != victim)
        pp = &(*pp)->next;
    if (*pp)
        *pp = victim->next;
}

static void cache_put(rw_lambda_authz_t *a, const char *key, const cJSON *answer)
{
    /* Replace an expired entry for the key; evict the oldest when full. */
    for (entry_t *e = a->buckets[hash(key) % 1024]; e; e = e->next)
        if (!strcmp(e->key, key)) {
            cJSON_Delete(e->answer);
            e->answer = cJSON_Duplicate(answer, true);
            e->expires_ms = uv_now(a->gw->loop) + (uint64_t)a->tpl->ttl_s * 1000;
            return;
        }
    if (a->n >= CACHE_MAX && a->oldest) {
        entry_t *victim = a->oldest;
        cache_unlink(a, victim);
        a->oldest = victim->older;
        if (!a->oldest)
            a->newest = NULL;
        free(victim->key);
        cJSON_Delete(victim->answer);
        free(victim);
        a->n--;
    }
    entry_t *e = calloc(1, sizeof *e);
    if (!e || !(e->key = strdup(key))) {
        free(e);
        return;
    }
    e->answer = cJSON_Duplicate(answer, true);
    e->expires_ms = uv_now(a->gw->loop) + (uint64_t)a->tpl->ttl_s * 1000;
    size_t b = hash(key) % 1024;
    e->next = a->buckets[b];
    a->buckets[b] = e;
    if (a->newest)
        a->newest->older = e;
    else
        a->oldest = e;
    a->newest = e;
    a->n++;
}

/* ---- identity sources -------------------------------------------------------------- */

static const char *query_param(const rw_http_req_t *req, const char *name, char *buf, size_t cap)
{
    size_t nl = strlen(name);
    const char *q = req->query;
    size_t len = req->query_len;
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && q[end] != '&')
            end++;
        if (end - i > nl && !strncmp(q + i, name, nl) && q[i + nl] == '=') {
            char *v = rw_percent_decode(q + i + nl + 1, end - i - nl - 1, NULL);
            if (v) {
                snprintf(buf, cap, "%s", v);
                free(v);
                return buf;
            }
        }
        i = end + 1;
    }
    return NULL;
}

/* Collects the identity source values; false when one is missing (401). The
 * cache key is the authorizer's name and every value. */
static bool identity(rw_lambda_authz_t *a, gw_req_t *ctx, char *key, size_t cap, cJSON *list)
{
    const rw_tpl_authorizer_t *t = a->tpl;
    size_t n = (size_t)snprintf(key, cap, "%s", t->name);
    for (size_t i = 0; i < t->identity_count; i++) {
        const rw_tpl_identity_t *id = &t->identity[i];
        const char *v = NULL;
        char tmp[2048];
        switch (id->kind) {
        case RW_TPL_IDENTITY_HEADER:
            v = rw_http_req_header(ctx->req, id->name);
            break;
        case RW_TPL_IDENTITY_QUERY:
            v = query_param(ctx->req, id->name, tmp, sizeof tmp);
            break;
        case RW_TPL_IDENTITY_STAGE_VARIABLE:
            for (size_t k = 0; k < ctx->route->api->tpl->stage_variable_count; k++)
                if (!strcmp(ctx->route->api->tpl->stage_variables[k].key, id->name))
                    v = ctx->route->api->tpl->stage_variables[k].value;
            break;
        case RW_TPL_IDENTITY_CONTEXT:
            if (!strcmp(id->name, "sourceIp") || !strcmp(id->name, "identity.sourceIp"))
                v = ctx->req->remote_ip;
            break;
        }
        if (!v || !*v)
            return false;
        if (list)
            cJSON_AddItemToArray(list, cJSON_CreateString(v));
        n += (size_t)snprintf(key + (n < cap ? n : cap), n < cap ? cap - n : 0, "\x1f%s", v);
    }
    return n < cap;
}

/* ---- policies ---------------------------------------------------------------------- */

/* IAM wildcards: '*' any run of characters, '?' any one. */
static bool glob(const char *p, const char *s)
{
    const char *star = NULL, *resume = NULL;
    while (*s) {
        if (*p == '*') {
            star = p++;
            resume = s;
        } else if (*p == '?' || *p == *s) {
            p++;
            s++;
        } else if (star) {
            p = star + 1;
            s = ++resume;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return !*p;
}

static bool any_matches(const cJSON *v, const char *what, bool action)
{
    if (cJSON_IsString(v)) {
        if (action)
            return !strcasecmp(v->valuestring, "*") || !strcasecmp(v->valuestring, "execute-api:*") ||
                   !strcasecmp(v->valuestring, what);
        return glob(v->valuestring, what);
    }
    const cJSON *x;
    cJSON_ArrayForEach(x, v)
    {
        if (any_matches(x, what, action))
            return true;
    }
    return false;
}

enum { POLICY_DENY_IMPLICIT, POLICY_DENY_EXPLICIT, POLICY_ALLOW, POLICY_INVALID };

static int evaluate(const cJSON *policy, const char *arn)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(policy, "Statement");
    if (!st)
        return POLICY_INVALID;
    bool allow = false;
    const cJSON *s;
    /* A single statement may be given as an object. */
    const cJSON *list = cJSON_IsObject(st) ? NULL : st;
    for (s = list ? list->child : st; s; s = list ? s->next : NULL) {
        const cJSON *effect = cJSON_GetObjectItemCaseSensitive(s, "Effect");
        const cJSON *action = cJSON_GetObjectItemCaseSensitive(s, "Action");
        const cJSON *resource = cJSON_GetObjectItemCaseSensitive(s, "Resource");
        if (!cJSON_IsString(effect) || !action || !resource)
            return POLICY_INVALID;
        if (!any_matches(action, "execute-api:Invoke", true) || !any_matches(resource, arn, false))
            continue;
        if (!strcmp(effect->valuestring, "Deny"))
            return POLICY_DENY_EXPLICIT;
        if (!strcmp(effect->valuestring, "Allow"))
            allow = true;
    }
    return allow ? POLICY_ALLOW : POLICY_DENY_IMPLICIT;
}

/* The answer's context: strings, numbers and booleans only (else 500). */
static bool context_ok(const cJSON *c)
{
    if (!c || cJSON_IsNull(c))
        return true;
    if (!cJSON_IsObject(c))
        return false;
    const cJSON *x;
    cJSON_ArrayForEach(x, c)
    {
        if (!cJSON_IsString(x) && !cJSON_IsNumber(x) && !cJSON_IsBool(x))
            return false;
    }
    return true;
}

/* Decides a request from an answer (fresh or cached). */
static void decide(rw_lambda_authz_t *a, gw_req_t *ctx, const cJSON *ans,
                   rw_lambda_authz_done_cb done)
{
    const cJSON *context = cJSON_GetObjectItemCaseSensitive(ans, "context");
    if (!context_ok(context)) {
        done(ctx, 500, NULL, "authorizer context must map names to strings, numbers or booleans",
             NULL, NULL);
        return;
    }
    bool v2 = a->http_api && a->tpl->payload_version && !strcmp(a->tpl->payload_version, "2.0");
    if (v2 && a->tpl->simple_responses) {
        const cJSON *ok = cJSON_GetObjectItemCaseSensitive(ans, "isAuthorized");
        if (!cJSON_IsBool(ok)) {
            done(ctx, 500, NULL, "simple response without a boolean isAuthorized", NULL, NULL);
            return;
        }
        if (!cJSON_IsTrue(ok)) {
            done(ctx, 403, "Forbidden", "the authorizer said no", NULL, NULL);
            return;
        }
    } else {
        const cJSON *principal = cJSON_GetObjectItemCaseSensitive(ans, "principalId");
        const cJSON *policy = cJSON_GetObjectItemCaseSensitive(ans, "policyDocument");
        if (!a->http_api && !cJSON_IsString(principal)) {
            done(ctx, 500, NULL, "the authorizer's answer has no principalId", NULL, NULL);
            return;
        }
        char arn[2048];
        rw__app_method_arn(ctx, arn, sizeof arn);
        switch (evaluate(policy, arn)) {
        case POLICY_INVALID:
            done(ctx, 500, NULL, "the authorizer's policyDocument is malformed", NULL, NULL);
            return;
        case POLICY_DENY_EXPLICIT:
            done(ctx, 403, "User is not authorized to access this resource with an explicit deny",
                 "policy denies", NULL, NULL);
            return;
        case POLICY_DENY_IMPLICIT:
            done(ctx, 403, "User is not authorized to access this resource",
                 "no policy statement allows this method", NULL, NULL);
            return;
        default:
            break;
        }
    }
    /* Allowed: what the function's event carries in requestContext.authorizer. */
    cJSON *out = cJSON_CreateObject();
    const cJSON *principal = cJSON_GetObjectItemCaseSensitive(ans, "principalId");
    if (a->http_api && v2) {
        cJSON *lambda = context && cJSON_IsObject(context) ? cJSON_Duplicate(context, true)
                                                           : cJSON_CreateObject();
        cJSON_AddItemToObject(out, "lambda", lambda);
    } else {
        if (cJSON_IsString(principal))
            cJSON_AddStringToObject(out, "principalId", principal->valuestring);
        const cJSON *x;
        cJSON_ArrayForEach(x, context)
        {
            cJSON_AddItemToObject(out, x->string, cJSON_Duplicate(x, true));
        }
        cJSON_AddNumberToObject(out, "integrationLatency", 0);
    }
    const cJSON *usage = cJSON_GetObjectItemCaseSensitive(ans, "usageIdentifierKey");
    done(ctx, 0, NULL, NULL, out, cJSON_IsString(usage) ? usage->valuestring : NULL);
}

static void on_authorizer_done(rw_invoke_t *inv, const rw_invoke_result_t *res, void *arg)
{
    check_t *ck = arg;
    rw_lambda_authz_t *a = ck->a;
    gw_req_t *ctx = ck->ctx;
    ctx->inv = NULL;
    if (res->status == RW_INVOKE_CANCELLED) {
        ck->done(ctx, -1, NULL, "client gone", NULL, NULL);
    } else if (res->status != RW_INVOKE_OK) {
        /* An authorizer that throws "Unauthorized" means 401, as in API
         * Gateway; any other failure or a timeout is the authorizer's fault. */
        cJSON *err = cJSON_ParseWithLength(res->payload, res->len);
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "errorMessage");
        if (cJSON_IsString(msg) && !strcmp(msg->valuestring, "Unauthorized"))
            ck->done(ctx, 401, "Unauthorized", "the authorizer answered Unauthorized", NULL, NULL);
        else
            ck->done(ctx, 500, NULL, res->status == RW_INVOKE_TIMEOUT ? "the authorizer timed out"
                                                                      : "the authorizer failed",
                     NULL, NULL);
        cJSON_Delete(err);
    } else {
        cJSON *ans = cJSON_ParseWithLength(res->payload, res->len);
        if (!cJSON_IsObject(ans)) {
            ck->done(ctx, 500, NULL, "the authorizer's answer is not a JSON object", NULL, NULL);
        } else {
            if (a->tpl->ttl_s > 0)
                cache_put(a, ck->key, ans);
            decide(a, ctx, ans, ck->done);
        }
        cJSON_Delete(ans);
    }
    free(ck->key);
    free(ck);
}

/* The event the authorizer gets. */
static char *authorizer_event(rw_lambda_authz_t *a, gw_req_t *ctx, cJSON *identity_list,
                              size_t *len)
{
    const rw_tpl_authorizer_t *t = a->tpl;
    char arn[2048];
    rw__app_method_arn(ctx, arn, sizeof arn);
    cJSON *ev = NULL;
    if (t->kind == RW_TPL_AUTH_LAMBDA_TOKEN) {
        ev = cJSON_CreateObject();
        cJSON_AddStringToObject(ev, "type", "TOKEN");
        const cJSON *first = cJSON_GetArrayItem(identity_list, 0);
        cJSON_AddStringToObject(ev, "authorizationToken", first ? first->valuestring : "");
        cJSON_AddStringToObject(ev, "methodArn", arn);
    } else {
        rw_event_route_t er;
        rw_event_kv_t params[RW_ROUTE_MAX_PARAMS];
        rw__app_event_route(ctx, &er, params);
        bool v2 = a->http_api && t->payload_version && !strcmp(t->payload_version, "2.0");
        er.payload_version = v2 ? RW_EVENT_V2 : RW_EVENT_V1;
        er.authorizer = NULL;
        rw_event_request_t rq;
        rw__app_event_request(ctx, &rq, NULL, 0);
        char *json = NULL;
        size_t jl = 0;
        if (rw_event_build(&er, &rq, &json, &jl) != 0)
            return NULL;
        ev = cJSON_ParseWithLength(json, jl);
        free(json);
        if (!ev)
            return NULL;
        cJSON_DeleteItemFromObject(ev, "body");
        cJSON_DeleteItemFromObject(ev, "isBase64Encoded");
        cJSON_AddStringToObject(ev, "type", "REQUEST");
        if (v2) {
            cJSON_AddStringToObject(ev, "routeArn", arn);
            cJSON_AddItemToObject(ev, "identitySource", cJSON_Duplicate(identity_list, true));
        } else {
            cJSON_AddStringToObject(ev, "methodArn", arn);
        }
    }
    char *out = cJSON_PrintUnformatted(ev);
    cJSON_Delete(ev);
    if (out)
        *len = strlen(out);
    return out;
}

void rw_lambda_authz_check(rw_lambda_authz_t *a, gw_req_t *ctx, rw_lambda_authz_done_cb done)
{
    char key[4096];
    cJSON *ids = cJSON_CreateArray();
    bool have = identity(a, ctx, key, sizeof key, ids);
    bool need_identity = a->tpl->kind == RW_TPL_AUTH_LAMBDA_TOKEN || a->tpl->identity_count > 0;
    if (need_identity && !have) {
        cJSON_Delete(ids);
        done(ctx, 401, "Unauthorized", "identity source missing", NULL, NULL);
        return;
    }
    if (a->has_regex) {
        const cJSON *tok = cJSON_GetArrayItem(ids, 0);
        if (!tok || regexec(&a->regex, tok->valuestring, 0, NULL, 0) != 0) {
            cJSON_Delete(ids);
            done(ctx, 401, "Unauthorized", "token does not match the ValidationExpression", NULL,
                 NULL);
            return;
        }
    }
    if (a->tpl->ttl_s > 0 && have) {
        entry_t *hit = cache_get(a, key);
        if (hit) {
            cJSON_Delete(ids);
            decide(a, ctx, hit->answer, done);
            return;
        }
    }
    size_t len = 0;
    char *event = authorizer_event(a, ctx, ids, &len);
    cJSON_Delete(ids);
    if (!event) {
        done(ctx, 500, NULL, "cannot build the authorizer's event", NULL, NULL);
        return;
    }
    check_t *ck = calloc(1, sizeof *ck);
    if (!ck || !(ck->key = strdup(key))) {
        free(ck);
        free(event);
        done(ctx, 500, NULL, "out of memory", NULL, NULL);
        return;
    }
    ck->a = a;
    ck->ctx = ctx;
    ck->done = done;
    rw_invoke_opts_t io = {.trace_id = ctx->trace_id};
    rw_invoke_cbs_t cbs = {.done = on_authorizer_done};
    a->invocations++;
    int rc = rw_fnmgr_invoke(a->gw->fnmgr, a->fn, event, len, &io, &cbs, ck, &ctx->inv);
    free(event);
    if (rc != 0) {
        free(ck->key);
        free(ck);
        ctx->inv = NULL;
        done(ctx, 500, NULL, rc == UV_EBUSY ? "the authorizer is throttled" : rw_strerror(rc), NULL,
             NULL);
    }
}
