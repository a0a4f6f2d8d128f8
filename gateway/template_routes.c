/* Routes of APIs in a template: path templates, the OpenAPI DefinitionBody
 * subset (aws_proxy, http_proxy and mock integrations), the Api / HttpApi events
 * of functions, and the checks across routes and mounts. */
#include "template_internal.h"

#include "integration_http_proxy.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool streq(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

/* ---- paths ------------------------------------------------------------------------ */

bool rw__template_check_path(ctx_t *c, const node_t *n, const char *path, bool greedy_ok,
                             const char *what)
{
    static const char literal[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                  "-._~:@!$&'()*+,;=";
    if (path[0] != '/') {
        rw__template_error(c, n, "%s: '%.128s' must start with /", what, path);
        return false;
    }
    if (streq(path, "/"))
        return true;
    if (strlen(path) > 1024) {
        rw__template_error(c, n, "%s: longer than 1024 bytes", what);
        return false;
    }
    const char *p = path + 1;
    char **names = NULL;
    size_t nnames = 0;
    while (true) {
        size_t seg = strcspn(p, "/");
        if (seg == 0) {
            rw__template_error(c, n, "%s: '%.128s' has an empty segment (// or a trailing /)", what,
                               path);
            return false;
        }
        bool last = p[seg] == '\0';
        if (seg > 511) {
            rw__template_error(c, n, "%s: a path segment is longer than 511 bytes", what);
            return false;
        }
        if (p[0] == '{') {
            bool greedy = seg >= 3 && p[seg - 2] == '+' && p[seg - 1] == '}';
            size_t name_len = seg - 2 - (greedy ? 1 : 0);
            if (p[seg - 1] != '}' || name_len == 0 ||
                strspn(p + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") !=
                    name_len) {
                rw__template_error(c, n, "%s: '%.*s' is not a path parameter ({name} or {name+})",
                                   what, (int)seg, p);
                return false;
            }
            if (greedy && !greedy_ok) {
                rw__template_error(c, n, "%s: a greedy parameter is not allowed here", what);
                return false;
            }
            if (greedy && !last) {
                rw__template_error(c, n,
                                   "%s: the greedy parameter {%.*s+} must be the last "
                                   "segment",
                                   what, (int)name_len, p + 1);
                return false;
            }
            char *name = rw__template_strndup(c->scratch, p + 1, name_len);
            for (size_t i = 0; i < nnames; i++)
                if (streq(names[i], name)) {
                    rw__template_error(c, n, "%s: path parameter {%s} appears twice", what, name);
                    return false;
                }
            if (nnames == 16) {
                rw__template_error(c, n, "%s: more than 16 path parameters", what);
                return false;
            }
            *RW_TPL_PUSH(c->scratch, names, nnames) = name;
        } else {
            if (memchr(p, '{', seg) || memchr(p, '}', seg)) {
                rw__template_error(c, n, "%s: '%.*s': a path parameter must be a whole segment",
                                   what, (int)seg, p);
                return false;
            }
            for (size_t i = 0; i < seg; i++)
                if (!strchr(literal, p[i]) || p[i] == '\0') {
                    rw__template_error(c, n, "%s: character '%c' is not allowed in a path", what,
                                       p[i]);
                    return false;
                }
        }
        if (last)
            break;
        p += seg + 1;
    }
    return true;
}

/* The names of the {parameters} of a path. */
static bool path_has_param(const char *path, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strchr(path, '{'); p; p = strchr(p + 1, '{'))
        if (strncmp(p + 1, name, n) == 0 &&
            (p[1 + n] == '}' || (p[1 + n] == '+' && p[2 + n] == '}')))
            return true;
    return false;
}

/* ---- routes -------------------------------------------------------------------------- */

static rw_tpl_route_t *new_route(ctx_t *c, rw_tpl_api_t *a, const char *method, const char *path,
                                 const node_t *at)
{
    rw_tpl_route_t *r = RW_TPL_PUSH(c->arena, a->routes, a->route_count);
    r->is_default = streq(path, "$default");
    r->method = rw__template_keep(c, r->is_default ? "ANY" : method);
    r->path = rw__template_keep(c, path);
    r->route_key =
        r->is_default ? r->path : rw__template_printf(c->arena, "%s %s", r->method, r->path);
    r->function = -1;
    r->event_function = -1;
    r->authorizer = a->default_authorizer;
    r->api_key_required = a->api_key_required;
    r->timeout_ms = a->kind == RW_TPL_API_HTTP ? 30000 : 29000;
    r->payload_version = a->default_payload_version;
    r->line = at->line;
    r->col = at->col;
    return r;
}

/* Applies an authorizer name (or NONE) and scopes to a route, with the checks
 * API Gateway makes. */
static void route_auth(ctx_t *c, rw_tpl_api_t *a, rw_tpl_route_t *r, const node_t *name_node,
                       const char *name, const node_t *scopes_node, char **scopes,
                       size_t scope_count)
{
    if (name) {
        if (streq(name, "NONE")) {
            r->authorizer = -1;
        } else if (streq(name, "AWS_IAM")) {
            rw__template_error(c, name_node,
                               "Authorizer: IAM authorization is not supported by "
                               "reelway");
            r->authorizer = -1;
        } else {
            r->authorizer = rw__template_find_authorizer(a, name);
            if (r->authorizer < 0)
                rw__template_error(c, name_node,
                                   "Authorizer: %.64s is not in Auth.Authorizers "
                                   "of API %s",
                                   name, a->name);
        }
    }
    const rw_tpl_authorizer_t *au = r->authorizer >= 0 ? &a->authorizers[r->authorizer] : NULL;
    if (scopes_node) {
        if (!au || (au->kind != RW_TPL_AUTH_JWT && au->kind != RW_TPL_AUTH_COGNITO)) {
            rw__template_error(c, scopes_node,
                               "AuthorizationScopes need a JWT or Cognito "
                               "authorizer on the route");
            return;
        }
        r->scopes = scopes;
        r->scope_count = scope_count;
    } else if (au && au->kind == RW_TPL_AUTH_JWT && (!name || !streq(name, "NONE"))) {
        r->scopes = au->default_scopes;
        r->scope_count = au->default_scope_count;
    }
}

static void load_mock(ctx_t *c, rw_tpl_route_t *r, const node_t *integ)
{
    static const char *const resp_keys[] = {"statusCode", "responseParameters", "responseTemplates",
                                            NULL};
    static const char *const vtl[] = {"$input", "$context", "$util",    "$stageVariables",
                                      "#set",   "#if",      "#foreach", NULL};
    r->integration = RW_TPL_INTEGRATION_MOCK;
    r->mock.status = 200;
    r->mock.body = "";
    const node_t *rt = rw__template_map_get(integ, "requestTemplates");
    if (rt && rw__template_get_map(c, rt, "requestTemplates")) {
        for (size_t i = 0; i < rt->count; i++) {
            const char *s;
            if (!rw__template_get_str(c, MAP_VAL(rt, i), "requestTemplates", &s))
                continue;
            cJSON *j = cJSON_Parse(s);
            cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "statusCode");
            if (!cJSON_IsNumber(sc) || sc->valuedouble != (double)(int)sc->valuedouble)
                rw__template_error(c, MAP_VAL(rt, i),
                                   "requestTemplates: a MOCK request template "
                                   "is {\"statusCode\": N}");
            cJSON_Delete(j);
        }
    }
    const node_t *resps = rw__template_require(c, integ, "responses", "a mock integration");
    if (!resps || !rw__template_get_map(c, resps, "responses"))
        return;
    const node_t *def = rw__template_map_get(resps, "default");
    if (resps->count != 1 || !def) {
        const node_t *extra = resps->count ? MAP_KEY(resps, 0) : rw__template_where(resps);
        for (size_t i = 0; i < resps->count; i++)
            if (MAP_KEY(resps, i)->kind != RW__TPL_SCALAR ||
                strcmp(MAP_KEY(resps, i)->str, "default") != 0) {
                extra = MAP_KEY(resps, i);
                break;
            }
        rw__template_error(c, extra,
                           "responses: reelway's MOCK integration serves exactly one "
                           "response, named default");
        return;
    }
    if (!rw__template_get_map(c, def, "responses.default"))
        return;
    rw__template_check_keys(c, def, "a mock response", resp_keys, NULL);
    const node_t *sc = rw__template_require(c, def, "statusCode", "responses.default");
    long l;
    if (sc && rw__template_get_int(c, sc, "statusCode", 100, 599, &l))
        r->mock.status = (int)l;
    const node_t *params = rw__template_map_get(def, "responseParameters");
    if (params && rw__template_get_map(c, params, "responseParameters")) {
        static const char prefix[] = "method.response.header.";
        for (size_t i = 0; i < params->count; i++) {
            const node_t *k = MAP_KEY(params, i);
            const char *s;
            if (k->kind != RW__TPL_SCALAR)
                continue;
            if (strncmp(k->str, prefix, sizeof prefix - 1) != 0 ||
                !rw__template_header_name_ok(k->str + sizeof prefix - 1)) {
                rw__template_error(c, k,
                                   "responseParameters: '%.64s' is not "
                                   "method.response.header.NAME",
                                   k->str);
                continue;
            }
            if (!rw__template_get_str(c, MAP_VAL(params, i), "responseParameters", &s))
                continue;
            size_t n = strlen(s);
            if (n < 2 || s[0] != '\'' || s[n - 1] != '\'' || strpbrk(s, "\r\n")) {
                rw__template_error(c, MAP_VAL(params, i),
                                   "responseParameters: a MOCK header value "
                                   "is a static string in single quotes, "
                                   "e.g. \"'no-store'\"");
                continue;
            }
            rw_tpl_kv_t *kv = RW_TPL_PUSH(c->arena, r->mock.headers, r->mock.header_count);
            kv->key = rw__template_keep(c, k->str + sizeof prefix - 1);
            kv->value = rw__template_strndup(c->arena, s + 1, n - 2);
        }
    }
    const node_t *tpls = rw__template_map_get(def, "responseTemplates");
    if (tpls && rw__template_get_map(c, tpls, "responseTemplates")) {
        if (tpls->count > 1) {
            rw__template_error(c, rw__template_where(tpls),
                               "responseTemplates: reelway serves one "
                               "body: give one content type");
        } else if (tpls->count == 1) {
            const node_t *k = MAP_KEY(tpls, 0);
            const char *body;
            if (k->kind == RW__TPL_SCALAR && !rw__template_media_type_ok(k->str))
                rw__template_error(c, k, "responseTemplates: '%.64s' is not a content type",
                                   k->str);
            else if (k->kind == RW__TPL_SCALAR)
                r->mock.content_type = rw__template_keep(c, k->str);
            if (rw__template_get_str(c, MAP_VAL(tpls, 0), "responseTemplates", &body)) {
                bool has_vtl = false;
                for (size_t i = 0; vtl[i] && !has_vtl; i++)
                    has_vtl = strstr(body, vtl[i]) != NULL;
                if (has_vtl)
                    rw__template_error(c, MAP_VAL(tpls, 0),
                                       "responseTemplates: VTL is not "
                                       "evaluated by reelway: the body is "
                                       "served as written");
                else
                    r->mock.body = rw__template_keep(c, body);
            }
        }
    }
}

static const char *const doc_keys_op[] = {
    "summary",   "description", "operationId",  "tags",      "parameters", "requestBody",
    "responses", "deprecated",  "externalDocs", "callbacks", "servers",    NULL};

/* OpenAPI maps: known keys, documentation keys (accepted, not used), and
 * x-amazon-apigateway-* extensions reelway does not implement. */
static void check_openapi_keys(ctx_t *c, const node_t *m, const char *where,
                               const char *const *allowed, const char *const *docs)
{
    if (!m || m->kind != RW__TPL_MAP)
        return;
    for (size_t i = 0; i < m->count; i++) {
        const node_t *k = MAP_KEY(m, i);
        if (k->kind != RW__TPL_SCALAR)
            continue;
        bool known = false;
        for (size_t j = 0; allowed[j] && !known; j++)
            known = streq(k->str, allowed[j]);
        for (size_t j = 0; docs && docs[j] && !known; j++)
            known = streq(k->str, docs[j]);
        if (known)
            continue;
        if (strncmp(k->str, "x-", 2) == 0)
            rw__template_error(c, k, "OpenAPI extension '%.64s' is not supported by reelway",
                               k->str);
        else
            rw__template_error(c, k, "unknown property '%.64s' in %s", k->str, where);
    }
}

static void load_integration(ctx_t *c, rw_tpl_api_t *a, rw_tpl_route_t *r, const node_t *integ)
{
    static const char *const keys[] = {"type",
                                       "uri",
                                       "httpMethod",
                                       "payloadFormatVersion",
                                       "timeoutInMillis",
                                       "connectionType",
                                       "requestTemplates",
                                       "responses",
                                       NULL};
    static const rw__template_unsupported_t unsupported[] = {
        {"passthroughBehavior", "MOCK serves its default response whatever the request"},
        {"requestParameters", "parameter mappings are not supported: {name} in uri takes the "
                              "route's path parameter"},
        {"responseParameters", "parameter mappings are not supported"},
        {"credentials", "IAM is not modeled"},
        {"contentHandling", "bodies pass through unchanged"},
        {"cacheKeyParameters", "the API cache is not supported"},
        {"cacheNamespace", "the API cache is not supported"},
        {"tlsConfig", "the upstream's certificate is checked against the system's CAs"},
        {"connectionId", "VPC links are not supported"},
        {"integrationSubtype", "AWS service integrations are not supported"},
        {NULL, NULL}};
    static const char *const types[] = {"aws_proxy", "http_proxy", "mock", "aws", "http", NULL};
    bool http = a->kind == RW_TPL_API_HTTP;
    if (!rw__template_get_map(c, integ, "x-amazon-apigateway-integration"))
        return;
    rw__template_check_keys(c, integ, "x-amazon-apigateway-integration", keys, unsupported);
    const node_t *ty = rw__template_require(c, integ, "type", "x-amazon-apigateway-integration");
    int type = ty ? rw__template_get_enum(c, ty, "type", types, true) : -1;
    if (type == 3 || type == 4) {
        rw__template_error(c, ty,
                           "integration type %s is not supported by reelway (aws_proxy, "
                           "http_proxy, mock)",
                           type == 3 ? "aws" : "http");
        return;
    }
    const node_t *v;
    const char *s;
    long l;
    if ((v = rw__template_map_get(integ, "timeoutInMillis")) &&
        rw__template_get_int(c, v, "timeoutInMillis", 50, http ? 30000 : 29000, &l))
        r->timeout_ms = (int)l;
    if ((v = rw__template_map_get(integ, "connectionType")) &&
        rw__template_get_str(c, v, "connectionType", &s) && !streq(s, "INTERNET"))
        rw__template_error(c, v, "connectionType %.32s is not supported (INTERNET)", s);
    const node_t *uri = rw__template_map_get(integ, "uri");
    const node_t *hm = rw__template_map_get(integ, "httpMethod");
    const node_t *pv = rw__template_map_get(integ, "payloadFormatVersion");
    if (type != 2) {
        if (rw__template_map_get(integ, "requestTemplates"))
            rw__template_error(c,
                               rw__template_where(rw__template_map_get(integ, "requestTemplates")),
                               "requestTemplates: only a mock integration has them");
        if (rw__template_map_get(integ, "responses"))
            rw__template_error(c, rw__template_where(rw__template_map_get(integ, "responses")),
                               "responses: only a mock integration has them");
    }
    if (type == 0) { /* aws_proxy */
        r->integration = RW_TPL_INTEGRATION_FUNCTION;
        if (!uri) {
            rw__template_error(c, rw__template_where(integ),
                               "an aws_proxy integration needs uri "
                               "(the function's ARN)");
        } else {
            val_t val;
            if (rw__template_eval(c, uri, "uri", &val)) {
                if (val.sym >= 0 && c->syms[val.sym].type == SYM_FUNCTION)
                    r->function = c->syms[val.sym].index;
                else if (val.str)
                    r->function = rw__template_function_from_arn(c, val.str);
                if (r->function < 0)
                    rw__template_error(c, uri,
                                       "uri: does not name a function of this template "
                                       "(use !GetAtt Fn.Arn or its invocation URI)");
            }
        }
        if (hm && rw__template_get_str(c, hm, "httpMethod", &s) && strcasecmp(s, "POST") != 0)
            rw__template_error(c, hm,
                               "httpMethod: a Lambda integration is called with POST, not "
                               "%.16s",
                               s);
        else if (!hm && !http)
            rw__template_error(c, rw__template_where(integ),
                               "an aws_proxy integration of a REST "
                               "API needs httpMethod: POST");
        if (pv && rw__template_get_str(c, pv, "payloadFormatVersion", &s)) {
            if (streq(s, "1.0") || (http && streq(s, "2.0")))
                r->payload_version = streq(s, "1.0") ? "1.0" : "2.0";
            else
                rw__template_error(c, pv, "payloadFormatVersion: '%.16s' is not %s", s,
                                   http ? "1.0 or 2.0" : "1.0 (REST)");
        }
    } else if (type == 1) { /* http_proxy */
        r->integration = RW_TPL_INTEGRATION_HTTP_PROXY;
        r->payload_version = "1.0";
        if (!uri) {
            rw__template_error(c, rw__template_where(integ), "an http_proxy integration needs uri");
        } else if (rw__template_get_str(c, uri, "uri", &s)) {
            if (!rw__template_url_ok(s)) {
                rw__template_error(c, uri, "uri: '%.64s' is not an http(s) URL", s);
            } else {
                bool ok = true;
                for (const char *p = strchr(s, '{'); p && ok; p = strchr(p + 1, '{')) {
                    size_t n = strcspn(p + 1, "}");
                    char *name = rw__template_strndup(c->scratch, p + 1, n);
                    if (n > 0 && name[n - 1] == '+') {
                        rw__template_error(c, uri,
                                           "uri: write {%.*s} for the greedy parameter, "
                                           "not {%s}",
                                           (int)n - 1, name, name);
                        ok = false;
                    } else if (!p[1 + n] || !path_has_param(r->path, name)) {
                        rw__template_error(c, uri, "uri: {%.32s} is not a path parameter of %s",
                                           name, r->path);
                        ok = false;
                    }
                }
                if (ok)
                    r->http_proxy.uri = rw__template_keep(c, s);
            }
        }
        if (hm && rw__template_get_str(c, hm, "httpMethod", &s)) {
            bool ok = false;
            for (size_t i = 0; rw__template_http_methods[i] && !ok; i++)
                ok = strcasecmp(s, rw__template_http_methods[i]) == 0;
            if (!ok)
                rw__template_error(c, hm, "httpMethod: '%.16s' is not an HTTP method", s);
            else
                for (size_t i = 0; rw__template_http_methods[i]; i++)
                    if (strcasecmp(s, rw__template_http_methods[i]) == 0)
                        r->http_proxy.method = (char *)rw__template_http_methods[i];
        }
        if (pv && rw__template_get_str(c, pv, "payloadFormatVersion", &s) && !streq(s, "1.0"))
            rw__template_error(c, pv, "payloadFormatVersion: an http_proxy integration uses 1.0");
        if (r->http_proxy.uri) {
            /* The integration's own rules, so that what validates also runs
             * (e.g. it has no TLS to upstreams). */
            rw_http_proxy_conf_t conf = {
                .uri = r->http_proxy.uri,
                .http_method = r->http_proxy.method,
                .timeout_ms = (uint64_t)r->timeout_ms,
                .flavour = http ? RW_HTTP_PROXY_HTTP_API : RW_HTTP_PROXY_REST_API,
            };
            char why[256];
            if (rw__http_proxy_conf_check(&conf, why, sizeof why) != 0) {
                rw__template_error(c, uri, "uri: %s", why);
                r->http_proxy.uri = NULL;
            }
        }
    } else if (type == 2) { /* mock */
        if (uri)
            rw__template_error(c, uri, "uri: a mock integration has none");
        if (hm)
            rw__template_error(c, hm, "httpMethod: a mock integration has none");
        if (pv)
            rw__template_error(c, pv, "payloadFormatVersion: a mock integration has none");
        load_mock(c, r, integ);
    }
}

static void load_operation(ctx_t *c, int api, const char *method, const char *path,
                           const node_t *mkey, const node_t *op)
{
    static const char *const op_keys[] = {"x-amazon-apigateway-integration", "security", NULL};
    rw_tpl_api_t *a = &c->tpl->apis[api];
    if (!rw__template_get_map(c, op, "operation"))
        return;
    check_openapi_keys(c, op, "an OpenAPI operation", op_keys, doc_keys_op);
    rw_tpl_route_t *r = new_route(c, a, method, path, mkey);
    const node_t *integ = rw__template_map_get(op, "x-amazon-apigateway-integration");
    if (!integ) {
        rw__template_error(c, mkey, "%s %s: x-amazon-apigateway-integration is required", method,
                           path);
        r->integration = RW_TPL_INTEGRATION_MOCK;
        r->mock.status = 500;
        r->mock.body = "";
    } else {
        load_integration(c, a, r, integ);
    }
    const node_t *sec = rw__template_map_get(op, "security");
    if (!sec) {
        route_auth(c, a, r, NULL, NULL, NULL, NULL, 0);
        return;
    }
    if (sec->kind != RW__TPL_SEQ || sec->tag) {
        rw__template_error(c, sec, "security: expected a list of {name: [scopes]}");
        return;
    }
    /* Entries combine into one authorizer (with its scopes) and, for REST,
     * api_key; an empty list means the route is open. */
    const char *auth_name = sec->count == 0 ? "NONE" : NULL;
    const node_t *auth_node = sec, *scopes_node = NULL;
    char **scopes = NULL;
    size_t nscopes = 0;
    bool api_key = false;
    for (size_t i = 0; i < sec->count; i++) {
        const node_t *e = sec->kids[i];
        if (!rw__template_get_map(c, e, "security"))
            continue;
        for (size_t j = 0; j < e->count; j++) {
            const node_t *k = MAP_KEY(e, j);
            if (k->kind != RW__TPL_SCALAR)
                continue;
            if (streq(k->str, "api_key") && a->kind == RW_TPL_API_REST) {
                api_key = true;
                continue;
            }
            if (auth_name && !streq(auth_name, k->str)) {
                rw__template_error(c, k, "security: one authorizer per route (%s and %.64s)",
                                   auth_name, k->str);
                continue;
            }
            auth_name = k->str;
            auth_node = k;
            char **sc;
            size_t n;
            if (rw__template_get_strs(c, MAP_VAL(e, j), "security scopes", false, &sc, &n) && n) {
                scopes = sc;
                nscopes = n;
                scopes_node = MAP_VAL(e, j);
            }
        }
    }
    if (api_key)
        r->api_key_required = true;
    if (auth_name)
        route_auth(c, a, r, auth_node, auth_name, scopes_node, scopes, nscopes);
}

void rw__template_load_definition_body(ctx_t *c, int api, const node_t *body)
{
    static const char *const top_keys[] = {"openapi", "paths", NULL};
    static const char *const top_docs[] = {"info", "tags", "externalDocs", NULL};
    static const char *const path_docs[] = {"summary", "description", "parameters", NULL};
    static const struct {
        const char *key, *method;
    } methods[] = {{"get", "GET"},         {"put", "PUT"},
                   {"post", "POST"},       {"delete", "DELETE"},
                   {"options", "OPTIONS"}, {"head", "HEAD"},
                   {"patch", "PATCH"},     {"x-amazon-apigateway-any-method", "ANY"}};
    static const char *const path_keys[] = {
        "get",     "put",  "post",  "delete",
        "options", "head", "patch", "x-amazon-apigateway-any-method",
        NULL};
    rw_tpl_api_t *a = &c->tpl->apis[api];
    if (!rw__template_get_map(c, body, "DefinitionBody"))
        return;
    if (rw__template_map_get(body, "swagger")) {
        rw__template_error(c, rw__template_where(rw__template_map_get(body, "swagger")),
                           "Swagger 2.0 is not supported by reelway: write openapi: 3.0");
        return;
    }
    check_openapi_keys(c, body, "DefinitionBody", top_keys, top_docs);
    const node_t *ver = rw__template_require(c, body, "openapi", "DefinitionBody");
    const char *s;
    if (ver && rw__template_get_str(c, ver, "openapi", &s) && strncmp(s, "3.", 2) != 0)
        rw__template_error(c, ver, "openapi: '%.16s' is not 3.x", s);
    const node_t *paths = rw__template_require(c, body, "paths", "DefinitionBody");
    if (!paths || !rw__template_get_map(c, paths, "paths"))
        return;
    for (size_t i = 0; i < paths->count; i++) {
        const node_t *pk = MAP_KEY(paths, i), *item = MAP_VAL(paths, i);
        if (pk->kind != RW__TPL_SCALAR || pk->dup)
            continue;
        const char *path = pk->str;
        bool is_default = streq(path, "$default");
        if (is_default && a->kind != RW_TPL_API_HTTP) {
            rw__template_error(c, pk, "$default: only an HTTP API has a $default route");
            continue;
        }
        if (!is_default && !rw__template_check_path(c, pk, path, true, "path"))
            continue;
        if (!rw__template_get_map(c, item, "path item"))
            continue;
        check_openapi_keys(c, item, "an OpenAPI path", path_keys, path_docs);
        for (size_t j = 0; j < sizeof methods / sizeof methods[0]; j++) {
            const node_t *op = rw__template_map_get(item, methods[j].key);
            if (!op)
                continue;
            const node_t *mkey = rw__template_where(op);
            if (is_default && !streq(methods[j].method, "ANY")) {
                rw__template_error(c, mkey, "$default takes x-amazon-apigateway-any-method only");
                continue;
            }
            load_operation(c, api, methods[j].method, path, mkey, op);
        }
    }
}

/* ---- Api / HttpApi events ---------------------------------------------------------------- */

void rw__template_add_api_event(ctx_t *c, int fn, const node_t *name, const node_t *event,
                                bool http)
{
    static const char *const rest_event_keys[] = {"Path", "Method",          "RestApiId",
                                                  "Auth", "TimeoutInMillis", NULL};
    static const rw__template_unsupported_t rest_event_unsupported[] = {
        {"RequestModel", "request validation is not supported"},
        {"RequestParameters", "request validation is not supported"},
        {"ResponseTransferMode", "streaming follows the function's response mode"},
        {NULL, NULL}};
    static const char *const http_event_keys[] = {
        "Path", "Method", "ApiId", "Auth", "PayloadFormatVersion", "TimeoutInMillis", NULL};
    static const rw__template_unsupported_t http_event_unsupported[] = {
        {"RouteSettings", "per-route throttling is not supported"}, {NULL, NULL}};
    static const char *const rest_auth_keys[] = {"Authorizer", "ApiKeyRequired",
                                                 "AuthorizationScopes", NULL};
    static const rw__template_unsupported_t rest_auth_unsupported[] = {
        {"ResourcePolicy", "resource policies are not supported"},
        {"InvokeRole", "IAM is not modeled"},
        {"OverrideApiAuth", "does not apply: reelway has no root-path auth override"},
        {NULL, NULL}};
    static const char *const http_auth_keys[] = {"Authorizer", "AuthorizationScopes", NULL};
    static const char *const versions[] = {"1.0", "2.0", NULL};
    rw_template_t *t = c->tpl;
    const char *what = http ? "an HttpApi event" : "an Api event";
    const node_t *props = rw__template_map_get(event, "Properties");
    if (!props && !http) {
        rw__template_error(c, name, "Api event %s: Properties with Path and Method is required",
                           name->str);
        return;
    }
    if (props && !rw__template_get_map(c, props, "Properties"))
        return;
    rw__template_check_keys(c, props, what, http ? http_event_keys : rest_event_keys,
                            http ? http_event_unsupported : rest_event_unsupported);
    /* The API: named, or SAM's implicit one. */
    const node_t *idn = rw__template_map_get(props, http ? "ApiId" : "RestApiId");
    int api;
    if (idn) {
        api = rw__template_resolve_ref(c, idn, http ? "ApiId" : "RestApiId",
                                       http ? SYM_HTTP_API : SYM_REST_API);
    } else {
        int si = rw__template_sym_find(c, http ? "ServerlessHttpApi" : "ServerlessRestApi");
        api = si >= 0 && c->syms[si].key == NULL ? c->syms[si].index : -1;
    }
    const node_t *pn = rw__template_map_get(props, "Path");
    const node_t *mn = rw__template_map_get(props, "Method");
    const char *path = NULL, *method = NULL;
    bool ok = true;
    if (!http || pn || mn) {
        if (!pn) {
            rw__template_error(c, rw__template_where(props ? props : event),
                               "%s %s: Path is "
                               "required%s",
                               http ? "HttpApi event" : "Api event", name->str,
                               http ? " with Method" : "");
            ok = false;
        }
        if (!mn) {
            rw__template_error(c, rw__template_where(props ? props : event),
                               "%s %s: Method is "
                               "required%s",
                               http ? "HttpApi event" : "Api event", name->str,
                               http ? " with Path" : "");
            ok = false;
        }
    }
    if (pn && rw__template_get_str(c, pn, "Path", &path)) {
        if (streq(path, "$default")) {
            if (!http) {
                rw__template_error(c, pn, "Path: only an HTTP API has a $default route");
                ok = false;
            }
        } else if (!rw__template_check_path(c, pn, path, true, "Path")) {
            ok = false;
        }
    } else if (pn) {
        ok = false;
    }
    if (mn) {
        int m = rw__template_get_enum(c, mn, "Method", rw__template_http_methods, true);
        if (m < 0)
            ok = false;
        else
            method = rw__template_http_methods[m];
        if (path && streq(path, "$default") && method && !streq(method, "ANY")) {
            rw__template_error(c, mn, "Method: the $default route takes ANY");
            ok = false;
        }
    }
    if (http && !pn && !mn) {
        path = "$default";
        method = "ANY";
    }
    if (api < 0 || !ok || !path || !method)
        return;
    rw_tpl_api_t *a = &t->apis[api];
    rw_tpl_route_t *r = new_route(c, a, method, path, name);
    r->integration = RW_TPL_INTEGRATION_FUNCTION;
    r->function = fn;
    r->event_function = fn;
    r->event_name = rw__template_keep(c, name->str);
    const node_t *v;
    long l;
    if ((v = rw__template_map_get(props, "TimeoutInMillis")) &&
        rw__template_get_int(c, v, "TimeoutInMillis", 50, http ? 30000 : 29000, &l))
        r->timeout_ms = (int)l;
    if (http && (v = rw__template_map_get(props, "PayloadFormatVersion"))) {
        int k = rw__template_get_enum(c, v, "PayloadFormatVersion", versions, false);
        if (k >= 0)
            r->payload_version = (char *)versions[k];
    }
    const node_t *auth = rw__template_map_get(props, "Auth");
    if (auth && rw__template_get_map(c, auth, "Auth")) {
        if (http)
            rw__template_check_keys(c, auth, "Auth of an HttpApi event", http_auth_keys, NULL);
        else
            rw__template_check_keys(c, auth, "Auth of an Api event", rest_auth_keys,
                                    rest_auth_unsupported);
        const char *auth_name = NULL;
        const node_t *an = rw__template_map_get(auth, "Authorizer");
        if (an && !rw__template_get_str(c, an, "Authorizer", &auth_name))
            auth_name = NULL;
        const node_t *sn = rw__template_map_get(auth, "AuthorizationScopes");
        char **scopes = NULL;
        size_t nscopes = 0;
        if (sn && !rw__template_get_strs(c, sn, "AuthorizationScopes", false, &scopes, &nscopes))
            sn = NULL;
        route_auth(c, a, r, an, auth_name, sn, scopes, nscopes);
        if (!http && (v = rw__template_map_get(auth, "ApiKeyRequired")))
            rw__template_get_bool(c, v, "ApiKeyRequired", &r->api_key_required);
    } else {
        route_auth(c, a, r, NULL, NULL, NULL, NULL, 0);
    }
    rw_tpl_function_t *f = &t->functions[fn];
    rw_tpl_event_t *e = RW_TPL_PUSH(c->arena, f->events, f->event_count);
    e->name = r->event_name;
    e->kind = http ? RW_TPL_EVENT_HTTP_API : RW_TPL_EVENT_API;
    e->api = api;
    e->index = (int)a->route_count - 1;
    e->line = name->line;
    e->col = name->col;
}

/* ---- checks across routes ------------------------------------------------------------------- */

typedef struct route_ref_s {
    const char *key; /* method + path with parameter names erased */
    const rw_tpl_route_t *route;
} route_ref_t;

static int cmp_route_ref(const void *a, const void *b)
{
    const route_ref_t *x = a, *y = b;
    int d = strcmp(x->key, y->key);
    if (d)
        return d;
    if (x->route->line != y->route->line)
        return x->route->line < y->route->line ? -1 : 1;
    return x->route->col < y->route->col ? -1 : x->route->col > y->route->col;
}

/* "/a/{id}/b" -> "/a/{}/b", "/a/{p+}" -> "/a/{+}" */
static char *erase_names(ctx_t *c, const char *path)
{
    char *out = rw__template_alloc(c->scratch, strlen(path) + 1);
    size_t w = 0;
    for (const char *p = path; *p;) {
        if (*p == '{') {
            const char *end = strchr(p, '}');
            if (!end)
                break;
            bool greedy = end > p && end[-1] == '+';
            out[w++] = '{';
            if (greedy)
                out[w++] = '+';
            out[w++] = '}';
            p = end + 1;
        } else {
            out[w++] = *p++;
        }
    }
    out[w] = '\0';
    return out;
}

typedef struct param_ref_s {
    const char *prefix; /* the erased path before the parameter */
    const char *name;
    bool greedy;
    const rw_tpl_route_t *route;
} param_ref_t;

static int cmp_param_ref(const void *a, const void *b)
{
    const param_ref_t *x = a, *y = b;
    int d = strcmp(x->prefix, y->prefix);
    if (d)
        return d;
    if (x->route->line != y->route->line)
        return x->route->line < y->route->line ? -1 : 1;
    return x->route->col < y->route->col ? -1 : x->route->col > y->route->col;
}

static void check_api_routes(ctx_t *c, rw_tpl_api_t *a)
{
    size_t n = a->route_count;
    if (n == 0)
        return;
    route_ref_t *refs = rw__template_alloc(c->scratch, n * sizeof *refs);
    param_ref_t *params = NULL;
    size_t nparams = 0;
    for (size_t i = 0; i < n; i++) {
        const rw_tpl_route_t *r = &a->routes[i];
        char *erased = erase_names(c, r->path);
        refs[i].key = rw__template_printf(c->scratch, "%s %s", r->method, erased);
        refs[i].route = r;
        if (r->is_default)
            continue;
        for (const char *p = strchr(r->path, '{'); p; p = strchr(p + 1, '{')) {
            param_ref_t *pr = RW_TPL_PUSH(c->scratch, params, nparams);
            size_t nl = strcspn(p + 1, "+}");
            pr->name = rw__template_strndup(c->scratch, p + 1, nl);
            pr->greedy = p[1 + nl] == '+';
            pr->prefix =
                erase_names(c, rw__template_strndup(c->scratch, r->path, (size_t)(p - r->path)));
            pr->route = r;
        }
    }
    qsort(refs, n, sizeof *refs, cmp_route_ref);
    for (size_t i = 1; i < n; i++)
        if (streq(refs[i].key, refs[i - 1].key)) {
            const rw_tpl_route_t *r = refs[i].route, *first = refs[i - 1].route;
            rw__template_error_at(c, r->line, r->col,
                                  "duplicate route %s in API %s (also at line "
                                  "%d%s%s)",
                                  r->route_key, a->name, first->line,
                                  streq(r->path, first->path) ? "" : ", as ",
                                  streq(r->path, first->path) ? "" : first->path);
        }
    if (nparams > 1) {
        qsort(params, nparams, sizeof *params, cmp_param_ref);
        for (size_t i = 1; i < nparams; i++) {
            const param_ref_t *x = &params[i - 1], *y = &params[i];
            if (!streq(x->prefix, y->prefix))
                continue;
            bool clash = a->kind == RW_TPL_API_REST
                             ? (!streq(x->name, y->name) || x->greedy != y->greedy)
                             : (x->greedy == y->greedy && !streq(x->name, y->name));
            if (clash)
                rw__template_error_at(c, y->route->line, y->route->col,
                                      "route %s: {%s%s} at %s clashes with {%s%s} of route %s "
                                      "(one variable name per path position)",
                                      y->route->route_key, y->name, y->greedy ? "+" : "", y->prefix,
                                      x->name, x->greedy ? "+" : "", x->route->route_key);
        }
    }
}

/* True when the first segments of path are literally those of prefix. */
static bool under_prefix(const char *path, const char *prefix)
{
    size_t n = strlen(prefix);
    return strncmp(path, prefix, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

void rw__template_check_routes(ctx_t *c)
{
    rw_template_t *t = c->tpl;
    for (size_t i = 0; i < t->api_count; i++) {
        rw_tpl_api_t *a = &t->apis[i];
        check_api_routes(c, a);
        if (a->kind == RW_TPL_API_REST && a->route_count == 0 && !a->implicit)
            rw__template_error_at(c, a->line, a->col,
                                  "API %s has no routes: add Api events that "
                                  "name it, or a DefinitionBody",
                                  a->name);
        if (under_prefix(a->mount, "/_"))
            rw__template_error_at(c, a->line, a->col,
                                  "API %s: the mount %s is under /_/, which "
                                  "the gateway keeps for itself",
                                  a->name, a->mount);
        for (size_t j = 0; j < a->route_count; j++) {
            const rw_tpl_route_t *r = &a->routes[j];
            if (!*a->mount && !r->is_default && under_prefix(r->path, "/_"))
                rw__template_error_at(c, r->line, r->col,
                                      "route %s: /_/ is kept by the gateway "
                                      "(metrics)",
                                      r->route_key);
        }
    }
    /* Mounts (APIs and served buckets) share one URL space: a request goes
     * to the longest mount it is under, so equal mounts clash and a route
     * under a longer mount of another API can never be reached. */
    typedef struct mount_s {
        const char *path, *owner;
        int api;
        int line, col;
    } mount_t;
    mount_t *mounts = NULL;
    size_t nmounts = 0;
    for (size_t i = 0; i < t->api_count; i++) {
        if (!t->apis[i].stage)
            continue; /* its StageName is wrong (reported): where it goes is unknown */
        mount_t *m = RW_TPL_PUSH(c->scratch, mounts, nmounts);
        *m = (mount_t){t->apis[i].mount, t->apis[i].name, (int)i, t->apis[i].line, t->apis[i].col};
    }
    for (size_t i = 0; i < t->bucket_count; i++) {
        if (!t->buckets[i].serve_path)
            continue;
        mount_t *m = RW_TPL_PUSH(c->scratch, mounts, nmounts);
        *m = (mount_t){t->buckets[i].serve_path, t->buckets[i].name, -1, t->buckets[i].line,
                       t->buckets[i].col};
    }
    for (size_t i = 0; i < nmounts; i++) {
        for (size_t j = 0; j < i; j++)
            if (streq(mounts[i].path, mounts[j].path))
                rw__template_error_at(c, mounts[i].line, mounts[i].col,
                                      "%s is served at '%s' like %s: give one a different stage "
                                      "or Metadata.Reelway.BasePath",
                                      mounts[i].owner, *mounts[i].path ? mounts[i].path : "/",
                                      mounts[j].owner);
        if (mounts[i].api < 0)
            continue;
        const rw_tpl_api_t *a = &t->apis[mounts[i].api];
        for (size_t j = 0; j < nmounts; j++) {
            const char *other = mounts[j].path;
            if (j == i || strlen(other) <= strlen(a->mount) || !under_prefix(other, a->mount))
                continue;
            const char *rest = other + strlen(a->mount);
            for (size_t k = 0; k < a->route_count; k++) {
                const rw_tpl_route_t *r = &a->routes[k];
                if (!r->is_default && under_prefix(r->path, rest))
                    rw__template_error_at(c, r->line, r->col,
                                          "route %s of %s can never be "
                                          "reached: %s is served at %s",
                                          r->route_key, a->name, mounts[j].owner, other);
            }
        }
    }
}
