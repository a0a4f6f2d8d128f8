/* APIs in a template: AWS::Serverless::Api (REST) and ::HttpApi, explicit or
 * implicit, with their stages, mounts, authorizers, CORS and usage plans. Their
 * routes (DefinitionBody, Api / HttpApi events, path checks) are in
 * template_routes.c. */
#include "template_internal.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool streq(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

static bool is_alnum_str(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
            return false;
    return true;
}

/* ---- property lists ----------------------------------------------------------- */

static const char *const rest_keys[] = {
    "StageName", "Name",           "Description",    "Auth",           "Cors", "BinaryMediaTypes",
    "Variables", "DefinitionBody", "OpenApiVersion", "FailOnWarnings", "Tags", NULL};
static const char *const rest_global_keys[] = {
    "Name", "Auth", "Cors", "BinaryMediaTypes", "Variables", "OpenApiVersion", "Tags", NULL};
static const rw__template_unsupported_t rest_unsupported[] = {
    {"DefinitionUri", "give the OpenAPI document inline as DefinitionBody"},
    {"EndpointConfiguration", "the gateway decides where it listens"},
    {"MethodSettings", "throttling comes from usage plans"},
    {"TracingEnabled", "X-Ray is not supported (trace ids are passed through)"},
    {"GatewayResponses", "gateway responses are reelway's JSON errors"},
    {"MinimumCompressionSize", "response compression is not supported"},
    {"Domain", "custom domains are not supported: use Metadata.Reelway.BasePath"},
    {"CacheClusterEnabled", "the API cache is not supported"},
    {"CacheClusterSize", "the API cache is not supported"},
    {"AccessLogSetting", "access logs are the gateway's (one JSON line per request)"},
    {"CanarySetting", "canary deployments are not supported"},
    {"Models", "request validation is not supported"},
    {"Mode", "does not apply"},
    {"DisableExecuteApiEndpoint", "does not apply"},
    {"AlwaysDeploy", "does not apply"},
    {"MergeDefinitions", "does not apply"},
    {"ApiKeySourceType", "API keys come from the x-api-key header"},
    {"Policy", "resource policies are not supported"},
    {"PropagateTags", "tags have no effect in reelway"},
    {"EndpointAccessMode", "does not apply"},
    {"SecurityPolicy", "TLS is the front proxy's"},
    {NULL, NULL}};

static const char *const http_keys[] = {
    "StageName",      "Name",           "Description",    "Auth", "CorsConfiguration",
    "StageVariables", "DefinitionBody", "FailOnWarnings", "Tags", NULL};
static const char *const http_global_keys[] = {
    "Auth", "CorsConfiguration", "StageVariables", "FailOnWarnings", "Tags", NULL};
static const rw__template_unsupported_t http_unsupported[] = {
    {"DefinitionUri", "give the OpenAPI document inline as DefinitionBody"},
    {"AccessLogSettings", "access logs are the gateway's (one JSON line per request)"},
    {"DefaultRouteSettings", "per-route throttling is not supported"},
    {"RouteSettings", "per-route throttling is not supported"},
    {"Domain", "custom domains are not supported: use Metadata.Reelway.BasePath"},
    {"DisableExecuteApiEndpoint", "does not apply"},
    {"PropagateTags", "tags have no effect in reelway"},
    {NULL, NULL}};

static const char *const api_meta_keys[] = {"BasePath", "Authorizers", NULL};

/* ---- helpers ------------------------------------------------------------------ */

static const node_t *api_props(ctx_t *c, const rw__template_sym_t *s, bool report)
{
    if (!s->resource)
        return NULL;
    const node_t *p = rw__template_map_get(s->resource, "Properties");
    if (!p)
        return NULL;
    if (report ? !rw__template_get_map(c, p, "Properties") : p->kind != RW__TPL_MAP)
        return NULL;
    return p;
}

/* The API's properties with its Globals section merged in (SAM's rules). */
static const node_t *merged_props(ctx_t *c, const rw__template_sym_t *s, bool report)
{
    bool rest = s->type == SYM_REST_API;
    const node_t *p = api_props(c, s, report);
    const node_t *g = rest ? c->globals_api : c->globals_http_api;
    if (!g)
        return p;
    node_t *empty = NULL;
    if (!p) {
        empty = rw__template_alloc(c->scratch, sizeof *empty);
        empty->kind = RW__TPL_MAP;
        if (s->key) {
            empty->line = s->key->line;
            empty->col = s->key->col;
            empty->key = s->key;
        }
        p = empty;
    }
    return rw__template_merge(c, g, p, rest ? rest_global_keys : http_global_keys);
}

static const char *quiet_str(ctx_t *c, const node_t *n)
{
    if (!n)
        return NULL;
    bool q = c->quiet, nr = c->no_resources;
    c->quiet = true;
    c->no_resources = true;
    val_t v;
    const char *s = NULL;
    if (rw__template_eval(c, n, "", &v) && v.str && !v.is_null)
        s = v.str;
    c->quiet = q;
    c->no_resources = nr;
    return s;
}

static bool stage_name_ok(const char *s, bool http)
{
    size_t n = strlen(s);
    if (http && streq(s, "$default"))
        return true;
    return n >= 1 && n <= 128 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == n;
}

static rw_tpl_usage_plan_t *new_sam_plan(ctx_t *c, const char *id, const node_t *at)
{
    rw_template_t *t = c->tpl;
    rw_tpl_usage_plan_t *up = RW_TPL_PUSH(c->arena, t->usage_plans, t->usage_plan_count);
    up->name = rw__template_keep(c, id);
    up->from_api_auth = true;
    up->quota_limit = -1;
    up->rate_limit = -1;
    up->burst_limit = -1;
    up->line = at ? at->line : 0;
    up->col = at ? at->col : 0;
    rw__template_sym_t *s = RW_TPL_PUSH(c->scratch, c->syms, c->sym_count);
    s->id = up->name;
    s->type = SYM_USAGE_PLAN;
    s->index = (int)t->usage_plan_count - 1;
    return up;
}

/* ---- pass 1 --------------------------------------------------------------------- */

void rw__template_declare_apis(ctx_t *c)
{
    rw_template_t *t = c->tpl;
    size_t nsyms = c->sym_count;
    bool added = false;
    for (size_t i = 0; i < nsyms; i++) {
        rw__template_sym_t *s = &c->syms[i];
        if (s->type != SYM_REST_API && s->type != SYM_HTTP_API)
            continue;
        rw_tpl_api_t *a = &t->apis[s->index];
        bool http = a->kind == RW_TPL_API_HTTP;
        const node_t *props = merged_props(c, s, false);
        const char *stage = quiet_str(c, rw__template_map_get(props, "StageName"));
        if (stage && stage_name_ok(stage, http))
            a->stage = rw__template_keep(c, stage);
        else if (!rw__template_map_get(props, "StageName"))
            a->stage = http ? "$default" : a->implicit ? "Prod" : NULL;
        a->default_payload_version = http ? "2.0" : "1.0";
        const node_t *meta =
            rw__template_map_get(rw__template_map_get(s->resource, "Metadata"), "Reelway");
        const char *bp = quiet_str(c, rw__template_map_get(meta, "BasePath"));
        bool q = c->quiet;
        c->quiet = true;
        if (bp && rw__template_check_path(c, NULL, bp, false, "BasePath") && !strchr(bp, '{') &&
            !streq(bp, "/"))
            a->base_path = rw__template_keep(c, bp);
        c->quiet = q;
        if (a->base_path)
            a->mount = a->base_path;
        else if (a->stage && !streq(a->stage, "$default"))
            a->mount = rw__template_printf(c->arena, "/%s", a->stage);
        else
            a->mount = "";
        a->endpoint = rw__template_printf(c->arena, "%s%s", t->endpoint, a->mount);
        if (http)
            continue;
        /* SAM makes a usage plan for Auth.UsagePlan: one per API, or one shared. */
        const node_t *up = rw__template_map_get(rw__template_map_get(props, "Auth"), "UsagePlan");
        const char *kind = quiet_str(c, rw__template_map_get(up, "CreateUsagePlan"));
        if (!kind)
            continue;
        if (streq(kind, "PER_API")) {
            char *id = rw__template_printf(c->scratch, "%sUsagePlan", a->name);
            int clash = rw__template_sym_find(c, id);
            if (clash >= 0) {
                rw__template_error(c, c->syms[clash].key ? c->syms[clash].key : up,
                                   "%s is the logical id SAM gives the usage plan of API %s: "
                                   "rename this resource",
                                   id, a->name);
                continue;
            }
            new_sam_plan(c, id, up);
            added = true;
        } else if (streq(kind, "SHARED") && c->shared_usage_plan < 0) {
            int clash = rw__template_sym_find(c, "ServerlessUsagePlan");
            if (clash >= 0) {
                rw__template_error(c, c->syms[clash].key ? c->syms[clash].key : up,
                                   "ServerlessUsagePlan is the logical id SAM gives the shared "
                                   "usage plan: rename this resource");
                continue;
            }
            new_sam_plan(c, "ServerlessUsagePlan", up);
            c->shared_usage_plan = (int)t->usage_plan_count - 1;
            added = true;
        }
    }
    if (added)
        rw__template_sort_syms(c);
}

/* ---- values of the API ------------------------------------------------------------ */

static void load_kv_map(ctx_t *c, const node_t *m, const char *what, rw_tpl_kv_t **out,
                        size_t *count)
{
    if (!rw__template_get_map(c, m, what))
        return;
    for (size_t i = 0; i < m->count; i++) {
        const node_t *k = MAP_KEY(m, i);
        if (k->kind != RW__TPL_SCALAR || k->dup)
            continue;
        size_t n = strlen(k->str);
        if (n == 0 || n > 64 ||
            strspn(k->str, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
                n) {
            rw__template_error(c, k, "%s: variable name '%.64s' must be letters, digits and _",
                               what, k->str);
            continue;
        }
        const char *s;
        if (!rw__template_get_str(c, MAP_VAL(m, i), what, &s))
            continue;
        if (strlen(s) > 2048) {
            rw__template_error(c, MAP_VAL(m, i), "%s: value longer than 2048 bytes", what);
            continue;
        }
        rw_tpl_kv_t *kv = RW_TPL_PUSH(c->arena, *out, *count);
        kv->key = rw__template_keep(c, k->str);
        kv->value = rw__template_keep(c, s);
    }
}

bool rw__template_media_type_ok(const char *s)
{
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || !slash[1] || strchr(slash + 1, '/'))
        return false;
    return strspn(s,
                  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&^_.+-*/;= ") ==
           strlen(s);
}

static void load_binary_media_types(ctx_t *c, rw_tpl_api_t *a, const node_t *n)
{
    char **types;
    size_t count;
    if (!rw__template_get_strs(c, n, "BinaryMediaTypes", false, &types, &count))
        return;
    for (size_t i = 0; i < count; i++) {
        /* SAM writes "/" as "~1" (JSON pointer escaping). */
        char *s = types[i], *w = s;
        for (const char *r = s; *r; r++) {
            if (r[0] == '~' && r[1] == '1') {
                *w++ = '/';
                r++;
            } else {
                *w++ = *r;
            }
        }
        *w = '\0';
        if (!rw__template_media_type_ok(s)) {
            rw__template_error(c, n, "BinaryMediaTypes: '%.64s' is not a media type (type/subtype)",
                               s);
            continue;
        }
        *RW_TPL_PUSH(c->arena, a->binary_media_types, a->binary_media_type_count) = s;
    }
}

const char *const rw__template_http_methods[] = {"GET",  "POST",    "PUT", "DELETE", "PATCH",
                                                 "HEAD", "OPTIONS", "ANY", NULL};

bool rw__template_header_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 256 &&
           strspn(
               s,
               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~") ==
               n;
}

/* REST Cors values are strings in single quotes: "'*'". */
static char *unquote(ctx_t *c, const node_t *n, const char *what, const char *s)
{
    size_t len = strlen(s);
    if (len < 2 || s[0] != '\'' || s[len - 1] != '\'') {
        rw__template_error(c, n,
                           "%s: REST Cors values are quoted strings, e.g. \"'*'\" (not "
                           "%.64s)",
                           what, s);
        return NULL;
    }
    return rw__template_strndup(c->arena, s + 1, len - 2);
}

static void split_list(ctx_t *c, const char *s, char ***out, size_t *count)
{
    while (*s) {
        while (*s == ' ' || *s == ',')
            s++;
        size_t n = strcspn(s, ",");
        size_t m = n;
        while (m > 0 && s[m - 1] == ' ')
            m--;
        if (m)
            *RW_TPL_PUSH(c->arena, *out, *count) = rw__template_strndup(c->arena, s, m);
        s += n;
    }
}

static void check_cors_lists(ctx_t *c, const node_t *at, rw_tpl_cors_t *cors)
{
    for (size_t i = 0; i < cors->allow_method_count; i++) {
        const char *m = cors->allow_methods[i];
        bool ok = streq(m, "*");
        for (size_t j = 0; rw__template_http_methods[j] && !ok; j++)
            ok = strcasecmp(m, rw__template_http_methods[j]) == 0 &&
                 !streq(rw__template_http_methods[j], "ANY");
        if (!ok)
            rw__template_error(c, at, "AllowMethods: '%.32s' is not an HTTP method or *", m);
    }
    for (size_t i = 0; i < cors->allow_header_count; i++)
        if (!streq(cors->allow_headers[i], "*") &&
            !rw__template_header_name_ok(cors->allow_headers[i]))
            rw__template_error(c, at, "AllowHeaders: '%.64s' is not a header name",
                               cors->allow_headers[i]);
    for (size_t i = 0; i < cors->expose_header_count; i++)
        if (!streq(cors->expose_headers[i], "*") &&
            !rw__template_header_name_ok(cors->expose_headers[i]))
            rw__template_error(c, at, "ExposeHeaders: '%.64s' is not a header name",
                               cors->expose_headers[i]);
    for (size_t i = 0; i < cors->allow_origin_count; i++) {
        const char *o = cors->allow_origins[i];
        if (streq(o, "*"))
            continue;
        if ((strncmp(o, "http://", 7) != 0 && strncmp(o, "https://", 8) != 0) ||
            strpbrk(o, " \r\n"))
            rw__template_error(c, at,
                               "AllowOrigins: '%.64s' is not * or an origin "
                               "(scheme://host[:port])",
                               o);
        if (cors->allow_credentials && strchr(o, '*'))
            rw__template_error(c, at,
                               "AllowCredentials cannot be true with a wildcard origin "
                               "('%.64s')",
                               o);
    }
    if (cors->allow_credentials)
        for (size_t i = 0; i < cors->allow_origin_count; i++)
            if (streq(cors->allow_origins[i], "*"))
                rw__template_error(c, at,
                                   "AllowCredentials cannot be true when the allowed "
                                   "origin is *");
}

static void load_rest_cors(ctx_t *c, rw_tpl_api_t *a, const node_t *n)
{
    static const char *const keys[] = {"AllowOrigin", "AllowMethods",     "AllowHeaders",
                                       "MaxAge",      "AllowCredentials", NULL};
    rw_tpl_cors_t *cors = &a->cors;
    cors->max_age_s = -1;
    const char *s;
    if (n->kind == RW__TPL_SCALAR || rw__template_is_intrinsic(n)) {
        if (!rw__template_get_str(c, n, "Cors", &s))
            return;
        char *o = unquote(c, n, "Cors", s);
        if (o) {
            cors->enabled = true;
            *RW_TPL_PUSH(c->arena, cors->allow_origins, cors->allow_origin_count) = o;
        }
        check_cors_lists(c, n, cors);
        return;
    }
    if (!rw__template_get_map(c, n, "Cors"))
        return;
    rw__template_check_keys(c, n, "Cors", keys, NULL);
    cors->enabled = true;
    const node_t *v = rw__template_require(c, n, "AllowOrigin", "Cors");
    char *q;
    if (v && rw__template_get_str(c, v, "AllowOrigin", &s) && (q = unquote(c, v, "AllowOrigin", s)))
        *RW_TPL_PUSH(c->arena, cors->allow_origins, cors->allow_origin_count) = q;
    if ((v = rw__template_map_get(n, "AllowMethods")) &&
        rw__template_get_str(c, v, "AllowMethods", &s) && (q = unquote(c, v, "AllowMethods", s)))
        split_list(c, q, &cors->allow_methods, &cors->allow_method_count);
    if ((v = rw__template_map_get(n, "AllowHeaders")) &&
        rw__template_get_str(c, v, "AllowHeaders", &s) && (q = unquote(c, v, "AllowHeaders", s)))
        split_list(c, q, &cors->allow_headers, &cors->allow_header_count);
    if ((v = rw__template_map_get(n, "MaxAge"))) {
        long l;
        if (v->kind == RW__TPL_SCALAR && v->quoted && v->str[0] == '\'') {
            char *m = unquote(c, v, "MaxAge", v->str);
            char *end;
            l = m ? strtol(m, &end, 10) : -1;
            if (!m || !*m || *end || l < 0 || l > 86400)
                rw__template_error(c, v, "MaxAge: expected seconds from 0 to 86400");
            else
                cors->max_age_s = (int)l;
        } else if (rw__template_get_int(c, v, "MaxAge", 0, 86400, &l)) {
            cors->max_age_s = (int)l;
        }
    }
    if ((v = rw__template_map_get(n, "AllowCredentials")))
        rw__template_get_bool(c, v, "AllowCredentials", &cors->allow_credentials);
    check_cors_lists(c, n, cors);
}

static void load_http_cors(ctx_t *c, rw_tpl_api_t *a, const node_t *n)
{
    static const char *const keys[] = {"AllowOrigins",
                                       "AllowMethods",
                                       "AllowHeaders",
                                       "ExposeHeaders",
                                       "MaxAge",
                                       "AllowCredentials",
                                       NULL};
    rw_tpl_cors_t *cors = &a->cors;
    cors->max_age_s = -1;
    if (n->kind == RW__TPL_SCALAR || rw__template_is_intrinsic(n)) {
        bool on;
        if (!rw__template_get_bool(c, n, "CorsConfiguration", &on) || !on)
            return;
        /* SAM: true allows any origin, method and header. */
        cors->enabled = true;
        *RW_TPL_PUSH(c->arena, cors->allow_origins, cors->allow_origin_count) = "*";
        *RW_TPL_PUSH(c->arena, cors->allow_methods, cors->allow_method_count) = "*";
        *RW_TPL_PUSH(c->arena, cors->allow_headers, cors->allow_header_count) = "*";
        return;
    }
    if (!rw__template_get_map(c, n, "CorsConfiguration"))
        return;
    rw__template_check_keys(c, n, "CorsConfiguration", keys, NULL);
    cors->enabled = true;
    const node_t *v;
    if ((v = rw__template_map_get(n, "AllowOrigins")))
        rw__template_get_strs(c, v, "AllowOrigins", false, &cors->allow_origins,
                              &cors->allow_origin_count);
    if ((v = rw__template_map_get(n, "AllowMethods")))
        rw__template_get_strs(c, v, "AllowMethods", false, &cors->allow_methods,
                              &cors->allow_method_count);
    if ((v = rw__template_map_get(n, "AllowHeaders")))
        rw__template_get_strs(c, v, "AllowHeaders", false, &cors->allow_headers,
                              &cors->allow_header_count);
    if ((v = rw__template_map_get(n, "ExposeHeaders")))
        rw__template_get_strs(c, v, "ExposeHeaders", false, &cors->expose_headers,
                              &cors->expose_header_count);
    long l;
    if ((v = rw__template_map_get(n, "MaxAge")) &&
        rw__template_get_int(c, v, "MaxAge", 0, 86400, &l))
        cors->max_age_s = (int)l;
    if ((v = rw__template_map_get(n, "AllowCredentials")))
        rw__template_get_bool(c, v, "AllowCredentials", &cors->allow_credentials);
    check_cors_lists(c, n, cors);
}

/* ---- authorizers -------------------------------------------------------------------- */

static void add_identity(ctx_t *c, rw_tpl_authorizer_t *au, rw_tpl_identity_kind_t kind,
                         const char *name)
{
    rw_tpl_identity_t *id = RW_TPL_PUSH(c->arena, au->identity, au->identity_count);
    id->kind = kind;
    id->name = rw__template_keep(c, name);
}

static void identity_list(ctx_t *c, rw_tpl_authorizer_t *au, const node_t *ident, const char *key,
                          rw_tpl_identity_kind_t kind)
{
    const node_t *v = rw__template_map_get(ident, key);
    char **names;
    size_t n;
    if (!v || !rw__template_get_strs(c, v, key, false, &names, &n))
        return;
    for (size_t i = 0; i < n; i++) {
        if (!*names[i] ||
            (kind == RW_TPL_IDENTITY_HEADER && !rw__template_header_name_ok(names[i]))) {
            rw__template_error(c, v, "%s: '%.64s' is not a valid name", key, names[i]);
            continue;
        }
        add_identity(c, au, kind, names[i]);
    }
}

/* HTTP API identity sources: $request.header.X, $request.querystring.X, ... */
static bool parse_http_identity_source(ctx_t *c, rw_tpl_authorizer_t *au, const node_t *n,
                                       const char *s)
{
    static const struct {
        const char *prefix;
        rw_tpl_identity_kind_t kind;
    } forms[] = {{"$request.header.", RW_TPL_IDENTITY_HEADER},
                 {"$request.querystring.", RW_TPL_IDENTITY_QUERY},
                 {"$stageVariables.", RW_TPL_IDENTITY_STAGE_VARIABLE},
                 {"$context.", RW_TPL_IDENTITY_CONTEXT}};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        size_t pl = strlen(forms[i].prefix);
        if (strncmp(s, forms[i].prefix, pl) == 0 && s[pl]) {
            add_identity(c, au, forms[i].kind, s + pl);
            return true;
        }
    }
    rw__template_error(c, n,
                       "IdentitySource: '%.64s' is not $request.header.NAME, "
                       "$request.querystring.NAME, $stageVariables.NAME or $context.NAME",
                       s);
    return false;
}

static int function_of(ctx_t *c, const node_t *n, const char *what)
{
    return rw__template_resolve_ref(c, n, what, SYM_FUNCTION);
}

static void load_jwks_metadata(ctx_t *c, rw_tpl_authorizer_t *au, const node_t *meta_auths)
{
    static const char *const keys[] = {"JwksUri", "JwksFile", NULL};
    const node_t *m = rw__template_map_get(meta_auths, au->name);
    if (!m || !rw__template_get_map(c, m, "Metadata.Reelway.Authorizers"))
        return;
    rw__template_check_keys(c, m, "Metadata.Reelway.Authorizers", keys, NULL);
    if (au->kind != RW_TPL_AUTH_JWT && au->kind != RW_TPL_AUTH_COGNITO) {
        rw__template_error(c, rw__template_where(m),
                           "authorizer %s is not a JWT authorizer: it "
                           "has no JWKS",
                           au->name);
        return;
    }
    if (au->issuer_count != 1) {
        rw__template_error(c, rw__template_where(m),
                           "authorizer %s: JwksUri and JwksFile need "
                           "exactly one issuer",
                           au->name);
        return;
    }
    const node_t *v;
    const char *s;
    if ((v = rw__template_map_get(m, "JwksUri")) && rw__template_get_str(c, v, "JwksUri", &s)) {
        if (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0)
            rw__template_error(c, v, "JwksUri: '%.64s' is not an http(s) URL", s);
        else
            au->issuers[0].jwks_uri = rw__template_keep(c, s);
    }
    if ((v = rw__template_map_get(m, "JwksFile")) && rw__template_get_str(c, v, "JwksFile", &s)) {
        if (!*s)
            rw__template_error(c, v, "JwksFile: empty path");
        else if (s[0] == '/')
            au->issuers[0].jwks_file = rw__template_keep(c, s);
        else
            au->issuers[0].jwks_file = rw__template_printf(c->arena, "%s/%s", c->tpl->dir, s);
    }
    if (rw__template_map_get(m, "JwksUri") && rw__template_map_get(m, "JwksFile"))
        rw__template_error(c, rw__template_where(m),
                           "authorizer %s: give JwksUri or JwksFile, "
                           "not both",
                           au->name);
}

static void add_issuer(ctx_t *c, rw_tpl_authorizer_t *au, const char *issuer)
{
    rw_tpl_issuer_t *is = RW_TPL_PUSH(c->arena, au->issuers, au->issuer_count);
    is->issuer = rw__template_keep(c, issuer);
    size_t n = strlen(issuer);
    is->jwks_uri = rw__template_printf(c->arena, "%s%s.well-known/jwks.json", issuer,
                                       n && issuer[n - 1] == '/' ? "" : "/");
}

bool rw__template_url_ok(const char *s)
{
    const char *host = strncmp(s, "https://", 8) == 0  ? s + 8
                       : strncmp(s, "http://", 7) == 0 ? s + 7
                                                       : NULL;
    return host && *host && *host != '/' && !strpbrk(s, " \t\r\n");
}

static void load_cognito_authorizer(ctx_t *c, rw_tpl_authorizer_t *au, const node_t *def)
{
    static const char *const keys[] = {"UserPoolArn", "Identity", NULL};
    static const char *const ident_keys[] = {"Header", "ValidationExpression", "ReauthorizeEvery",
                                             NULL};
    rw__template_check_keys(c, def, "a Cognito authorizer", keys, NULL);
    au->kind = RW_TPL_AUTH_COGNITO;
    au->ttl_s = 300;
    char **pools;
    size_t n;
    const node_t *up = rw__template_map_get(def, "UserPoolArn");
    if (rw__template_get_strs(c, up, "UserPoolArn", true, &pools, &n)) {
        for (size_t i = 0; i < n; i++) {
            /* arn:aws:cognito-idp:REGION:ACCOUNT:userpool/ID -> Cognito's issuer;
             * an http(s) URL is taken as the issuer itself (reelway's own pool). */
            const char *p = pools[i];
            const char *pool = strstr(p, ":userpool/");
            if (strncmp(p, "arn:aws:cognito-idp:", 20) == 0 && pool && pool[10]) {
                const char *region = p + 20;
                size_t rl = strcspn(region, ":");
                add_issuer(c, au,
                           rw__template_printf(c->scratch,
                                               "https://cognito-idp.%.*s.amazonaws.com/%s", (int)rl,
                                               region, pool + 10));
            } else if (rw__template_url_ok(p)) {
                add_issuer(c, au, p);
            } else {
                rw__template_error(c, up,
                                   "UserPoolArn: '%.64s' is neither a Cognito user pool ARN "
                                   "nor an issuer URL",
                                   p);
            }
        }
    }
    const node_t *ident = rw__template_map_get(def, "Identity");
    const char *header = "Authorization";
    if (ident && rw__template_get_map(c, ident, "Identity")) {
        rw__template_check_keys(c, ident, "Identity", ident_keys, NULL);
        const node_t *v;
        const char *s;
        long l;
        if ((v = rw__template_map_get(ident, "Header")) &&
            rw__template_get_str(c, v, "Header", &s)) {
            if (rw__template_header_name_ok(s))
                header = s;
            else
                rw__template_error(c, v, "Header: '%.64s' is not a header name", s);
        }
        if ((v = rw__template_map_get(ident, "ValidationExpression")) &&
            rw__template_get_str(c, v, "ValidationExpression", &s) &&
            rw__template_check_regex(c, v, "ValidationExpression", s))
            au->validation_expression = rw__template_keep(c, s);
        if ((v = rw__template_map_get(ident, "ReauthorizeEvery")) &&
            rw__template_get_int(c, v, "ReauthorizeEvery", 0, 3600, &l))
            au->ttl_s = (int)l;
    }
    add_identity(c, au, RW_TPL_IDENTITY_HEADER, header);
}

static void load_rest_lambda_authorizer(ctx_t *c, rw_tpl_authorizer_t *au, const node_t *def)
{
    static const char *const keys[] = {"FunctionArn", "FunctionPayloadType", "Identity", NULL};
    static const rw__template_unsupported_t unsupported[] = {
        {"FunctionInvokeRole", "IAM is not modeled"},
        {"DisableFunctionDefaultPermissions", "IAM is not modeled"},
        {NULL, NULL}};
    static const char *const types[] = {"TOKEN", "REQUEST", NULL};
    static const char *const token_keys[] = {"Header", "ValidationExpression", "ReauthorizeEvery",
                                             NULL};
    static const char *const request_keys[] = {"Headers", "QueryStrings",     "StageVariables",
                                               "Context", "ReauthorizeEvery", NULL};
    rw__template_check_keys(c, def, "a Lambda authorizer", keys, unsupported);
    au->function = function_of(c, rw__template_map_get(def, "FunctionArn"), "FunctionArn");
    au->payload_version = "1.0";
    au->ttl_s = 300;
    au->kind = RW_TPL_AUTH_LAMBDA_TOKEN;
    const node_t *pt = rw__template_map_get(def, "FunctionPayloadType");
    if (pt && rw__template_get_enum(c, pt, "FunctionPayloadType", types, false) == 1)
        au->kind = RW_TPL_AUTH_LAMBDA_REQUEST;
    const node_t *ident = rw__template_map_get(def, "Identity");
    if (ident && !rw__template_get_map(c, ident, "Identity"))
        ident = NULL;
    const node_t *v;
    const char *s;
    long l;
    if ((v = rw__template_map_get(ident, "ReauthorizeEvery")) &&
        rw__template_get_int(c, v, "ReauthorizeEvery", 0, 3600, &l))
        au->ttl_s = (int)l;
    if (au->kind == RW_TPL_AUTH_LAMBDA_TOKEN) {
        rw__template_check_keys(c, ident, "Identity of a TOKEN authorizer", token_keys, NULL);
        const char *header = "Authorization";
        if ((v = rw__template_map_get(ident, "Header")) &&
            rw__template_get_str(c, v, "Header", &s)) {
            if (rw__template_header_name_ok(s))
                header = s;
            else
                rw__template_error(c, v, "Header: '%.64s' is not a header name", s);
        }
        add_identity(c, au, RW_TPL_IDENTITY_HEADER, header);
        if ((v = rw__template_map_get(ident, "ValidationExpression")) &&
            rw__template_get_str(c, v, "ValidationExpression", &s) &&
            rw__template_check_regex(c, v, "ValidationExpression", s))
            au->validation_expression = rw__template_keep(c, s);
        return;
    }
    rw__template_check_keys(c, ident, "Identity of a REQUEST authorizer", request_keys, NULL);
    identity_list(c, au, ident, "Headers", RW_TPL_IDENTITY_HEADER);
    identity_list(c, au, ident, "QueryStrings", RW_TPL_IDENTITY_QUERY);
    identity_list(c, au, ident, "StageVariables", RW_TPL_IDENTITY_STAGE_VARIABLE);
    identity_list(c, au, ident, "Context", RW_TPL_IDENTITY_CONTEXT);
    if (au->ttl_s > 0 && au->identity_count == 0)
        rw__template_error(c, rw__template_where(def),
                           "authorizer %s: a REQUEST authorizer that "
                           "caches (ReauthorizeEvery > 0, the default "
                           "300) needs Identity sources",
                           au->name);
}

static void load_jwt_authorizer(ctx_t *c, rw_tpl_authorizer_t *au, const node_t *def)
{
    static const char *const keys[] = {"JwtConfiguration", "IdentitySource", "AuthorizationScopes",
                                       NULL};
    static const char *const jwt_keys[] = {"issuer", "audience", NULL};
    rw__template_check_keys(c, def, "a JWT authorizer", keys, NULL);
    au->kind = RW_TPL_AUTH_JWT;
    const node_t *jc = rw__template_map_get(def, "JwtConfiguration");
    if (rw__template_get_map(c, jc, "JwtConfiguration")) {
        rw__template_check_keys(c, jc, "JwtConfiguration", jwt_keys, NULL);
        const node_t *is = rw__template_require(c, jc, "issuer", "JwtConfiguration");
        const node_t *aud = rw__template_require(c, jc, "audience", "JwtConfiguration");
        const char *s;
        if (is && rw__template_get_str(c, is, "issuer", &s)) {
            if (rw__template_url_ok(s))
                add_issuer(c, au, s);
            else
                rw__template_error(c, is, "issuer: '%.64s' is not an http(s) URL", s);
        }
        if (aud &&
            rw__template_get_strs(c, aud, "audience", true, &au->audiences, &au->audience_count) &&
            au->audience_count == 0)
            rw__template_error(c, aud, "audience: give at least one");
    }
    const node_t *src = rw__template_map_get(def, "IdentitySource");
    const char *s;
    if (src) {
        if (rw__template_get_str(c, src, "IdentitySource", &s) &&
            parse_http_identity_source(c, au, src, s) &&
            au->identity[0].kind != RW_TPL_IDENTITY_HEADER &&
            au->identity[0].kind != RW_TPL_IDENTITY_QUERY)
            rw__template_error(c, src,
                               "IdentitySource: a JWT comes from a header or the query "
                               "string");
    } else {
        add_identity(c, au, RW_TPL_IDENTITY_HEADER, "Authorization");
    }
    const node_t *sc = rw__template_map_get(def, "AuthorizationScopes");
    if (sc)
        rw__template_get_strs(c, sc, "AuthorizationScopes", false, &au->default_scopes,
                              &au->default_scope_count);
}

static void load_http_lambda_authorizer(ctx_t *c, rw_tpl_authorizer_t *au, const node_t *def)
{
    static const char *const keys[] = {"FunctionArn", "AuthorizerPayloadFormatVersion",
                                       "EnableSimpleResponses", "Identity", NULL};
    static const rw__template_unsupported_t unsupported[] = {
        {"FunctionInvokeRole", "IAM is not modeled"},
        {"EnableFunctionDefaultPermissions", "IAM is not modeled"},
        {NULL, NULL}};
    static const char *const versions[] = {"1.0", "2.0", NULL};
    static const char *const ident_keys[] = {"Headers", "QueryStrings",     "StageVariables",
                                             "Context", "ReauthorizeEvery", NULL};
    rw__template_check_keys(c, def, "a Lambda authorizer", keys, unsupported);
    au->kind = RW_TPL_AUTH_LAMBDA_REQUEST;
    au->function = function_of(c, rw__template_map_get(def, "FunctionArn"), "FunctionArn");
    const node_t *pv = rw__template_require(c, def, "AuthorizerPayloadFormatVersion",
                                            "an HTTP API Lambda authorizer");
    int k =
        pv ? rw__template_get_enum(c, pv, "AuthorizerPayloadFormatVersion", versions, false) : -1;
    au->payload_version = k == 0 ? "1.0" : "2.0";
    const node_t *v;
    if ((v = rw__template_map_get(def, "EnableSimpleResponses")) &&
        rw__template_get_bool(c, v, "EnableSimpleResponses", &au->simple_responses) &&
        au->simple_responses && k == 0)
        rw__template_error(c, v,
                           "EnableSimpleResponses needs AuthorizerPayloadFormatVersion "
                           "2.0");
    const node_t *ident = rw__template_map_get(def, "Identity");
    if (ident && rw__template_get_map(c, ident, "Identity")) {
        rw__template_check_keys(c, ident, "Identity", ident_keys, NULL);
        identity_list(c, au, ident, "Headers", RW_TPL_IDENTITY_HEADER);
        identity_list(c, au, ident, "QueryStrings", RW_TPL_IDENTITY_QUERY);
        identity_list(c, au, ident, "StageVariables", RW_TPL_IDENTITY_STAGE_VARIABLE);
        identity_list(c, au, ident, "Context", RW_TPL_IDENTITY_CONTEXT);
        long l;
        if ((v = rw__template_map_get(ident, "ReauthorizeEvery")) &&
            rw__template_get_int(c, v, "ReauthorizeEvery", 0, 3600, &l))
            au->ttl_s = (int)l;
    }
    if (au->ttl_s > 0 && au->identity_count == 0)
        rw__template_error(c, rw__template_where(ident ? ident : def),
                           "authorizer %s: caching (ReauthorizeEvery > 0) needs Identity sources",
                           au->name);
}

static void load_authorizers(ctx_t *c, rw_tpl_api_t *a, const node_t *auths,
                             const node_t *meta_auths)
{
    bool http = a->kind == RW_TPL_API_HTTP;
    if (!rw__template_get_map(c, auths, "Authorizers"))
        return;
    for (size_t i = 0; i < auths->count; i++) {
        const node_t *k = MAP_KEY(auths, i), *def = MAP_VAL(auths, i);
        if (k->kind != RW__TPL_SCALAR || k->dup)
            continue;
        if (!is_alnum_str(k->str)) {
            rw__template_error(c, k, "authorizer name '%.64s' must be letters and digits", k->str);
            continue;
        }
        if (streq(k->str, "NONE") || streq(k->str, "AWS_IAM")) {
            rw__template_error(c, k, "%s is a reserved authorizer name", k->str);
            continue;
        }
        if (!rw__template_get_map(c, def, "authorizer"))
            continue;
        rw_tpl_authorizer_t *au = RW_TPL_PUSH(c->arena, a->authorizers, a->authorizer_count);
        au->name = rw__template_keep(c, k->str);
        au->function = -1;
        au->line = k->line;
        au->col = k->col;
        bool has_fn = rw__template_map_get(def, "FunctionArn") != NULL;
        if (http) {
            bool has_jwt = rw__template_map_get(def, "JwtConfiguration") != NULL;
            if (has_fn && has_jwt)
                rw__template_error(c, k,
                                   "authorizer %s: FunctionArn (Lambda) and "
                                   "JwtConfiguration (JWT) exclude each other",
                                   au->name);
            else if (has_fn)
                load_http_lambda_authorizer(c, au, def);
            else if (has_jwt)
                load_jwt_authorizer(c, au, def);
            else
                rw__template_error(c, k,
                                   "authorizer %s needs JwtConfiguration (JWT) or "
                                   "FunctionArn (Lambda)",
                                   au->name);
        } else {
            bool has_pool = rw__template_map_get(def, "UserPoolArn") != NULL;
            if (has_fn && has_pool)
                rw__template_error(c, k,
                                   "authorizer %s: FunctionArn (Lambda) and UserPoolArn "
                                   "(Cognito) exclude each other",
                                   au->name);
            else if (has_fn)
                load_rest_lambda_authorizer(c, au, def);
            else if (has_pool)
                load_cognito_authorizer(c, au, def);
            else
                rw__template_error(c, k,
                                   "authorizer %s needs FunctionArn (Lambda) or UserPoolArn "
                                   "(Cognito)",
                                   au->name);
        }
        load_jwks_metadata(c, au, meta_auths);
    }
    if (meta_auths && meta_auths->kind == RW__TPL_MAP)
        for (size_t i = 0; i < meta_auths->count; i++) {
            const node_t *k = MAP_KEY(meta_auths, i);
            if (k->kind == RW__TPL_SCALAR && !rw__template_map_get(auths, k->str))
                rw__template_error(c, k,
                                   "Metadata.Reelway.Authorizers: %.64s is not in "
                                   "Auth.Authorizers",
                                   k->str);
        }
}

int rw__template_find_authorizer(const rw_tpl_api_t *a, const char *name)
{
    for (size_t i = 0; i < a->authorizer_count; i++)
        if (streq(a->authorizers[i].name, name))
            return (int)i;
    return -1;
}

/* Reads Auth.UsagePlan into plan (quota and throttle). */
static void load_plan_limits(ctx_t *c, rw_tpl_usage_plan_t *up, const node_t *props)
{
    static const char *const quota_keys[] = {"Limit", "Offset", "Period", NULL};
    static const char *const throttle_keys[] = {"BurstLimit", "RateLimit", NULL};
    static const char *const periods[] = {"DAY", "WEEK", "MONTH", NULL};
    const node_t *v;
    const char *s;
    long l;
    if ((v = rw__template_map_get(props, "UsagePlanName")) &&
        rw__template_get_str(c, v, "UsagePlanName", &s))
        up->plan_name = rw__template_keep(c, s);
    if ((v = rw__template_map_get(props, "Description")) &&
        rw__template_get_str(c, v, "Description", &s))
        up->description = rw__template_keep(c, s);
    const node_t *q = rw__template_map_get(props, "Quota");
    if (q && rw__template_get_map(c, q, "Quota")) {
        rw__template_check_keys(c, q, "Quota", quota_keys, NULL);
        const node_t *lim = rw__template_require(c, q, "Limit", "Quota");
        const node_t *per = rw__template_require(c, q, "Period", "Quota");
        if (lim && rw__template_get_int(c, lim, "Limit", 1, 2147483647L, &l))
            up->quota_limit = l;
        int p = per ? rw__template_get_enum(c, per, "Period", periods, false) : -1;
        if (p >= 0)
            up->quota_period = (rw_tpl_period_t)(RW_TPL_PERIOD_DAY + p);
        long max_offset = p == 0 ? 0 : p == 1 ? 6 : 27;
        if ((v = rw__template_map_get(q, "Offset")) &&
            rw__template_get_int(c, v, "Offset", 0, p >= 0 ? max_offset : 27, &l))
            up->quota_offset = (int)l;
    }
    const node_t *t = rw__template_map_get(props, "Throttle");
    if (t && rw__template_get_map(c, t, "Throttle")) {
        rw__template_check_keys(c, t, "Throttle", throttle_keys, NULL);
        if ((v = rw__template_map_get(t, "BurstLimit")) &&
            rw__template_get_int(c, v, "BurstLimit", 0, 2147483647L, &l))
            up->burst_limit = l;
        double d;
        if ((v = rw__template_map_get(t, "RateLimit")) &&
            rw__template_get_double(c, v, "RateLimit", 0, 1e9, &d))
            up->rate_limit = d;
        if (up->rate_limit > 0 && up->burst_limit == 0)
            rw__template_error(c, t,
                               "Throttle: BurstLimit 0 with a RateLimit lets no request "
                               "through");
    }
}

static bool same_plan(const rw_tpl_usage_plan_t *a, const rw_tpl_usage_plan_t *b)
{
    return a->quota_limit == b->quota_limit && a->quota_period == b->quota_period &&
           a->quota_offset == b->quota_offset && a->rate_limit == b->rate_limit &&
           a->burst_limit == b->burst_limit &&
           ((!a->plan_name && !b->plan_name) ||
            (a->plan_name && b->plan_name && streq(a->plan_name, b->plan_name)));
}

static void load_api_usage_plan(ctx_t *c, int api, const node_t *n)
{
    static const char *const keys[] = {"CreateUsagePlan", "Description", "Quota", "Throttle",
                                       "UsagePlanName",   "Tags",        NULL};
    static const char *const kinds[] = {"PER_API", "SHARED", "NONE", NULL};
    rw_template_t *t = c->tpl;
    rw_tpl_api_t *a = &t->apis[api];
    if (!rw__template_get_map(c, n, "UsagePlan"))
        return;
    rw__template_check_keys(c, n, "UsagePlan", keys, NULL);
    const node_t *cu = rw__template_require(c, n, "CreateUsagePlan", "UsagePlan");
    int kind = cu ? rw__template_get_enum(c, cu, "CreateUsagePlan", kinds, false) : -1;
    if (kind < 0 || kind == 2)
        return;
    int idx = -1;
    if (kind == 0) {
        char *id = rw__template_printf(c->scratch, "%sUsagePlan", a->name);
        int si = rw__template_sym_find(c, id);
        if (si >= 0 && c->syms[si].type == SYM_USAGE_PLAN &&
            t->usage_plans[c->syms[si].index].from_api_auth)
            idx = c->syms[si].index;
    } else {
        idx = c->shared_usage_plan;
    }
    if (idx < 0) {
        /* A clash with a resource of that name (reported), or Globals.Api
         * checked on its own: check the values all the same. */
        rw_tpl_usage_plan_t scratch = {.quota_limit = -1, .rate_limit = -1, .burst_limit = -1};
        load_plan_limits(c, &scratch, n);
        return;
    }
    rw_tpl_usage_plan_t *up = &t->usage_plans[idx];
    if (kind == 1 && up->api_count > 0) {
        rw_tpl_usage_plan_t other = *up;
        other.plan_name = NULL;
        other.quota_limit = -1;
        other.rate_limit = -1;
        other.burst_limit = -1;
        other.quota_period = RW_TPL_PERIOD_NONE;
        other.quota_offset = 0;
        load_plan_limits(c, &other, n);
        if (!same_plan(&other, up))
            rw__template_error(c, cu,
                               "UsagePlan: the SHARED usage plan is set differently by API "
                               "%s; SHARED settings must agree",
                               t->apis[up->apis[0]].name);
    } else {
        up->line = n->line;
        up->col = n->col;
        load_plan_limits(c, up, n);
    }
    *RW_TPL_PUSH(c->arena, up->apis, up->api_count) = api;
}

static void load_auth(ctx_t *c, int api, const node_t *auth, const node_t *meta_auths)
{
    static const char *const rest_auth_keys[] = {"Authorizers",
                                                 "DefaultAuthorizer",
                                                 "ApiKeyRequired",
                                                 "UsagePlan",
                                                 "AddDefaultAuthorizerToCorsPreflight",
                                                 "AddApiKeyRequiredToCorsPreflight",
                                                 NULL};
    static const rw__template_unsupported_t rest_auth_unsupported[] = {
        {"ResourcePolicy", "resource policies are not supported"},
        {"InvokeRole", "IAM is not modeled"},
        {NULL, NULL}};
    static const char *const http_auth_keys[] = {"Authorizers", "DefaultAuthorizer",
                                                 "EnableIamAuthorizer", NULL};
    rw_tpl_api_t *a = &c->tpl->apis[api];
    bool http = a->kind == RW_TPL_API_HTTP;
    if (!rw__template_get_map(c, auth, "Auth"))
        return;
    if (http)
        rw__template_check_keys(c, auth, "Auth of an HttpApi", http_auth_keys, NULL);
    else
        rw__template_check_keys(c, auth, "Auth of an Api", rest_auth_keys, rest_auth_unsupported);
    const node_t *v;
    if ((v = rw__template_map_get(auth, "Authorizers")))
        load_authorizers(c, a, v, meta_auths);
    else if (meta_auths)
        load_authorizers(c, a, &(node_t){.kind = RW__TPL_MAP}, meta_auths);
    const char *s;
    if ((v = rw__template_map_get(auth, "DefaultAuthorizer")) &&
        rw__template_get_str(c, v, "DefaultAuthorizer", &s)) {
        if (streq(s, "AWS_IAM"))
            rw__template_error(c, v,
                               "DefaultAuthorizer: IAM authorization is not supported by "
                               "reelway");
        else if (!streq(s, "NONE") &&
                 (a->default_authorizer = rw__template_find_authorizer(a, s)) < 0)
            rw__template_error(c, v, "DefaultAuthorizer: %.64s is not in Auth.Authorizers", s);
    }
    bool b;
    if ((v = rw__template_map_get(auth, "EnableIamAuthorizer")) &&
        rw__template_get_bool(c, v, "EnableIamAuthorizer", &b) && b)
        rw__template_error(c, v,
                           "EnableIamAuthorizer: IAM authorization is not supported by "
                           "reelway");
    if (http)
        return;
    if ((v = rw__template_map_get(auth, "ApiKeyRequired")))
        rw__template_get_bool(c, v, "ApiKeyRequired", &a->api_key_required);
    if ((v = rw__template_map_get(auth, "AddDefaultAuthorizerToCorsPreflight")))
        rw__template_get_bool(c, v, "AddDefaultAuthorizerToCorsPreflight", &a->authorize_preflight);
    if ((v = rw__template_map_get(auth, "AddApiKeyRequiredToCorsPreflight")))
        rw__template_get_bool(c, v, "AddApiKeyRequiredToCorsPreflight", &a->api_key_on_preflight);
    if ((v = rw__template_map_get(auth, "UsagePlan")))
        load_api_usage_plan(c, api, v);
}

/* Checks (and in pass 2 reads) one API; in globals mode only its values. */
static void load_api(ctx_t *c, rw__template_sym_t *s)
{
    rw_tpl_api_t *a = &c->tpl->apis[s->index];
    bool http = a->kind == RW_TPL_API_HTTP;
    const node_t *own = api_props(c, s, true);
    if (s->resource && !own && !http && !a->implicit)
        rw__template_error(c, s->key,
                           "AWS::Serverless::Api %s: Properties with StageName is "
                           "required",
                           s->id);
    if (own)
        rw__template_check_keys(c, own, http ? "AWS::Serverless::HttpApi" : "AWS::Serverless::Api",
                                http ? http_keys : rest_keys,
                                http ? http_unsupported : rest_unsupported);
    const node_t *props = merged_props(c, s, false);
    const node_t *meta = s->resource ? rw__template_reelway_metadata(c, s, api_meta_keys) : NULL;
    a->default_authorizer = -1;
    a->authorize_preflight = true;
    a->api_key_on_preflight = true;
    a->cors.max_age_s = -1;
    const node_t *v;
    const char *str;
    v = rw__template_map_get(props, "StageName");
    if (v && rw__template_get_str(c, v, "StageName", &str) && !stage_name_ok(str, http))
        rw__template_error(c, v, "StageName: '%.64s' must be letters, digits, - and _%s", str,
                           http ? " (or $default)" : "");
    else if (!v && !http && !a->implicit && own)
        rw__template_error(c, rw__template_where(own),
                           "AWS::Serverless::Api %s: StageName is "
                           "required",
                           s->id);
    if ((v = rw__template_map_get(meta, "BasePath")) &&
        rw__template_get_str(c, v, "BasePath", &str) &&
        rw__template_check_path(c, v, str, false, "BasePath") &&
        (strchr(str, '{') || streq(str, "/")))
        rw__template_error(c, v, "BasePath: give a fixed prefix such as /ops");
    if ((v = rw__template_map_get(props, "Description")) &&
        rw__template_get_str(c, v, "Description", &str))
        a->description = rw__template_keep(c, str);
    if ((v = rw__template_map_get(props, "Name")))
        rw__template_get_str(c, v, "Name", &str);
    if ((v = rw__template_map_get(props, "OpenApiVersion")))
        rw__template_get_str(c, v, "OpenApiVersion", &str);
    if ((v = rw__template_map_get(props, "FailOnWarnings")))
        rw__template_get_bool(c, v, "FailOnWarnings", &a->fail_on_warnings);
    if ((v = rw__template_map_get(props, "Tags")) && rw__template_get_map(c, v, "Tags"))
        for (size_t i = 0; i < v->count; i++)
            rw__template_get_str(c, MAP_VAL(v, i), "Tags", &str);
    if ((v = rw__template_map_get(props, http ? "StageVariables" : "Variables")))
        load_kv_map(c, v, http ? "StageVariables" : "Variables", &a->stage_variables,
                    &a->stage_variable_count);
    if (!http && (v = rw__template_map_get(props, "BinaryMediaTypes")))
        load_binary_media_types(c, a, v);
    if ((v = rw__template_map_get(props, http ? "CorsConfiguration" : "Cors"))) {
        if (http)
            load_http_cors(c, a, v);
        else
            load_rest_cors(c, a, v);
    }
    const node_t *meta_auths = rw__template_map_get(meta, "Authorizers");
    if (meta_auths && !rw__template_get_map(c, meta_auths, "Metadata.Reelway.Authorizers"))
        meta_auths = NULL;
    if ((v = rw__template_map_get(props, "Auth")))
        load_auth(c, s->index, v, meta_auths);
    else if (meta_auths)
        for (size_t i = 0; i < meta_auths->count; i++)
            rw__template_error(c, MAP_KEY(meta_auths, i),
                               "Metadata.Reelway.Authorizers: the API "
                               "has no Auth.Authorizers");
    if ((v = rw__template_map_get(props, "DefinitionBody")))
        rw__template_load_definition_body(c, s->index, v);
}

void rw__template_check_api_globals(ctx_t *c)
{
    /* Globals are checked once on their own (a scratch API of each kind), so
     * that their problems are reported even when no API inherits them. */
    for (int k = 0; k < 2; k++) {
        const node_t *g = k == 0 ? c->globals_api : c->globals_http_api;
        if (!g)
            continue;
        rw__template_check_keys(c, g, k == 0 ? "Globals.Api" : "Globals.HttpApi",
                                k == 0 ? rest_global_keys : http_global_keys,
                                k == 0 ? rest_unsupported : http_unsupported);
        /* Load it as an implicit API pushed past the real ones (into their
         * array's spare room, or a scratch copy of it), then drop it by
         * restoring the array and its count. It must not join the SHARED
         * usage plan, so that is hidden meanwhile. */
        rw_template_t *t = c->tpl;
        size_t saved_count = t->api_count;
        int saved_shared = c->shared_usage_plan;
        rw_tpl_api_t *saved = t->apis;
        c->shared_usage_plan = -1;
        rw_tpl_api_t *a = RW_TPL_PUSH(c->scratch, t->apis, t->api_count);
        a->name = k == 0 ? "Globals.Api" : "Globals.HttpApi";
        a->kind = k == 0 ? RW_TPL_API_REST : RW_TPL_API_HTTP;
        a->implicit = true;
        a->stage = k == 0 ? "Prod" : "$default";
        a->mount = "";
        a->default_payload_version = k == 0 ? "1.0" : "2.0";
        rw__template_sym_t fake = {.id = a->name,
                                   .type = k == 0 ? SYM_REST_API : SYM_HTTP_API,
                                   .index = (int)t->api_count - 1};
        load_api(c, &fake);
        t->apis = saved;
        t->api_count = saved_count;
        c->shared_usage_plan = saved_shared;
    }
}

void rw__template_load_apis(ctx_t *c)
{
    /* In the model's order: explicit APIs as in the file, then implicit ones. */
    size_t n = c->tpl->api_count;
    rw__template_sym_t **by_index = n ? rw__template_alloc(c->scratch, n * sizeof *by_index) : NULL;
    for (size_t i = 0; i < c->sym_count; i++)
        if ((c->syms[i].type == SYM_REST_API || c->syms[i].type == SYM_HTTP_API) &&
            c->syms[i].index >= 0 && (size_t)c->syms[i].index < n)
            by_index[c->syms[i].index] = &c->syms[i];
    for (size_t a = 0; a < n; a++)
        if (by_index[a])
            load_api(c, by_index[a]);
}

/* ---- usage plans -------------------------------------------------------------------------------
 */

static void load_standalone_plan(ctx_t *c, const rw__template_sym_t *s)
{
    static const char *const keys[] = {"UsagePlanName", "Description", "ApiStages", "Quota",
                                       "Throttle",      "Tags",        NULL};
    static const char *const stage_keys[] = {"ApiId", "Stage", NULL};
    static const rw__template_unsupported_t stage_unsupported[] = {
        {"Throttle", "per-method throttles are not supported: throttle the whole plan"},
        {NULL, NULL}};
    rw_template_t *t = c->tpl;
    rw_tpl_usage_plan_t *up = &t->usage_plans[s->index];
    const node_t *props = rw__template_map_get(s->resource, "Properties");
    if (!props) {
        rw__template_error(c, s->key,
                           "AWS::ApiGateway::UsagePlan %s: Properties with ApiStages "
                           "is required",
                           s->id);
        return;
    }
    if (!rw__template_get_map(c, props, "Properties"))
        return;
    rw__template_check_keys(c, props, "AWS::ApiGateway::UsagePlan", keys, NULL);
    load_plan_limits(c, up, props);
    if (rw__template_map_get(props, "Tags"))
        rw__template_get_map(c, rw__template_map_get(props, "Tags"), "Tags");
    const node_t *stages =
        rw__template_require(c, props, "ApiStages", "AWS::ApiGateway::UsagePlan");
    if (!stages)
        return;
    if (stages->kind != RW__TPL_SEQ || stages->tag) {
        rw__template_error(c, stages, "ApiStages: expected a list of {ApiId, Stage}");
        return;
    }
    for (size_t i = 0; i < stages->count; i++) {
        const node_t *e = stages->kids[i];
        if (!rw__template_get_map(c, e, "ApiStages"))
            continue;
        rw__template_check_keys(c, e, "ApiStages", stage_keys, stage_unsupported);
        const node_t *ai = rw__template_require(c, e, "ApiId", "ApiStages");
        const node_t *st = rw__template_require(c, e, "Stage", "ApiStages");
        int api = ai ? rw__template_resolve_ref(c, ai, "ApiId", SYM_REST_API) : -1;
        const char *stage;
        if (api < 0 || !st || !rw__template_get_str(c, st, "Stage", &stage))
            continue;
        if (t->apis[api].stage && !streq(stage, t->apis[api].stage)) {
            rw__template_error(c, st, "Stage: API %s has stage %s, not %.64s", t->apis[api].name,
                               t->apis[api].stage, stage);
            continue;
        }
        bool dup = false;
        for (size_t j = 0; j < up->api_count && !dup; j++)
            dup = up->apis[j] == api;
        if (dup)
            rw__template_error(c, e, "ApiStages: API %s is listed twice", t->apis[api].name);
        else
            *RW_TPL_PUSH(c->arena, up->apis, up->api_count) = api;
    }
}

void rw__template_load_usage_plans(ctx_t *c)
{
    rw_template_t *t = c->tpl;
    for (size_t i = 0; i < c->sym_count; i++)
        if (c->syms[i].type == SYM_USAGE_PLAN && c->syms[i].resource)
            load_standalone_plan(c, &c->syms[i]);
    /* A route that requires an API key can only be reached with a key of a
     * usage plan that covers its API. */
    for (size_t i = 0; i < t->api_count; i++) {
        const rw_tpl_api_t *a = &t->apis[i];
        const rw_tpl_route_t *needs = NULL;
        for (size_t j = 0; j < a->route_count && !needs; j++)
            if (a->routes[j].api_key_required)
                needs = &a->routes[j];
        if (!needs)
            continue;
        bool covered = false;
        for (size_t p = 0; p < t->usage_plan_count && !covered; p++)
            for (size_t k = 0; k < t->usage_plans[p].api_count && !covered; k++)
                covered = t->usage_plans[p].apis[k] == (int)i;
        if (!covered)
            rw__template_error_at(c, needs->line, needs->col,
                                  "route %s requires an API key, but no usage plan covers API %s "
                                  "(Auth.UsagePlan or AWS::ApiGateway::UsagePlan)",
                                  needs->route_key, a->name);
    }
}
