/* APIs in a template: AWS::Serverless::Api (REST) and ::HttpApi, explicit or
 * implicit, with their stages, mounts, authorizers, CORS, usage plans, the
 * OpenAPI DefinitionBody subset (aws_proxy, http_proxy and mock integrations),
 * the Api / HttpApi events of functions, and the checks across routes. */
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

static bool media_type_ok(const char *s)
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
        if (!media_type_ok(s)) {
            rw__template_error(c, n, "BinaryMediaTypes: '%.64s' is not a media type (type/subtype)",
                               s);
            continue;
        }
        *RW_TPL_PUSH(c->arena, a->binary_media_types, a->binary_media_type_count) = s;
    }
}

static const char *const http_methods[] = {"GET",  "POST",    "PUT", "DELETE", "PATCH",
                                           "HEAD", "OPTIONS", "ANY", NULL};

static bool header_name_ok(const char *s)
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
        for (size_t j = 0; http_methods[j] && !ok; j++)
            ok = strcasecmp(m, http_methods[j]) == 0 && !streq(http_methods[j], "ANY");
        if (!ok)
            rw__template_error(c, at, "AllowMethods: '%.32s' is not an HTTP method or *", m);
    }
    for (size_t i = 0; i < cors->allow_header_count; i++)
        if (!streq(cors->allow_headers[i], "*") && !header_name_ok(cors->allow_headers[i]))
            rw__template_error(c, at, "AllowHeaders: '%.64s' is not a header name",
                               cors->allow_headers[i]);
    for (size_t i = 0; i < cors->expose_header_count; i++)
        if (!streq(cors->expose_headers[i], "*") && !header_name_ok(cors->expose_headers[i]))
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
        if (!*names[i] || (kind == RW_TPL_IDENTITY_HEADER && !header_name_ok(names[i]))) {
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

static bool url_ok(const char *s)
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
            } else if (url_ok(p)) {
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
            if (header_name_ok(s))
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
            if (header_name_ok(s))
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
            if (url_ok(s))
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

static int find_authorizer(const rw_tpl_api_t *a, const char *name)
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
        else if (!streq(s, "NONE") && (a->default_authorizer = find_authorizer(a, s)) < 0)
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
            r->authorizer = find_authorizer(a, name);
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
                !header_name_ok(k->str + sizeof prefix - 1)) {
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
            if (k->kind == RW__TPL_SCALAR && !media_type_ok(k->str))
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
            if (!url_ok(s)) {
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
            for (size_t i = 0; http_methods[i] && !ok; i++)
                ok = strcasecmp(s, http_methods[i]) == 0;
            if (!ok)
                rw__template_error(c, hm, "httpMethod: '%.16s' is not an HTTP method", s);
            else
                for (size_t i = 0; http_methods[i]; i++)
                    if (strcasecmp(s, http_methods[i]) == 0)
                        r->http_proxy.method = (char *)http_methods[i];
        }
        if (pv && rw__template_get_str(c, pv, "payloadFormatVersion", &s) && !streq(s, "1.0"))
            rw__template_error(c, pv, "payloadFormatVersion: an http_proxy integration uses 1.0");
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

static void load_definition_body(ctx_t *c, int api, const node_t *body)
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
        load_definition_body(c, s->index, v);
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
        int m = rw__template_get_enum(c, mn, "Method", http_methods, true);
        if (m < 0)
            ok = false;
        else
            method = http_methods[m];
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
