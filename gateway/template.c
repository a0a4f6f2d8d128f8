/* Loads a template.yaml (reelway's subset of AWS SAM) into the model of
 * template.h: the top level, parameters, the symbol table, Globals, functions,
 * buckets, queues, API keys and outputs. APIs are in template_api.c, their
 * routes in template_routes.c, the other event sources in template_events.c,
 * YAML and values in template_yaml.c and template_values.c. Every problem is
 * reported; loading goes on after one. */
#include "template_internal.h"

#include "reelway/error.h"

#include <errno.h>
#include <limits.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

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

/* ---- paths ------------------------------------------------------------------ */

/* dir + rel, with "." and ".." resolved lexically (the path need not exist). */
static char *join_path(ctx_t *c, const char *dir, const char *rel)
{
    const char *joined = rel[0] == '/' ? rel : rw__template_printf(c->scratch, "%s/%s", dir, rel);
    size_t n = strlen(joined);
    char *out = rw__template_alloc(c->scratch, n + 2);
    size_t len = 0;
    const char *p = joined;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        size_t seg = strcspn(p, "/");
        if (seg == 1 && p[0] == '.') {
            /* skip */
        } else if (seg == 2 && p[0] == '.' && p[1] == '.') {
            while (len > 0 && out[len - 1] != '/')
                len--;
            if (len > 0)
                len--;
        } else {
            out[len++] = '/';
            memcpy(out + len, p, seg);
            len += seg;
        }
        p += seg;
    }
    if (len == 0)
        out[len++] = '/';
    out[len] = '\0';
    return rw__template_keep(c, out);
}

/* ---- parameters ----------------------------------------------------------------- */

static const char *const param_keys[] = {
    "Type",     "Default",  "AllowedValues", "AllowedPattern",        "MinLength", "MaxLength",
    "MinValue", "MaxValue", "Description",   "ConstraintDescription", "NoEcho",    NULL};

static bool literal_scalar(ctx_t *c, const node_t *n, const char *what, const char **out)
{
    if (n->kind != RW__TPL_SCALAR || n->tag || rw__template_is_null(n)) {
        rw__template_error(c, n, "%s: expected a literal value, got %s", what,
                           n->tag                    ? "an intrinsic function"
                           : rw__template_is_null(n) ? "null"
                                                     : rw__template_kind_name(n));
        return false;
    }
    *out = n->str;
    return true;
}

static bool number_text(const char *s)
{
    if (!*s || strspn(s, "+-0123456789.eE") != strlen(s))
        return false;
    char *end;
    errno = 0;
    strtod(s, &end);
    return !errno && !*end;
}

/* Checks a parameter value against the parameter's type and constraints. */
static bool check_param_value(ctx_t *c, const rw_tpl_param_t *p, const node_t *at,
                              const char *source, const char *value)
{
    const char *shown = p->no_echo ? "(NoEcho)" : value;
    if (p->type == RW_TPL_PARAM_NUMBER && !number_text(value)) {
        rw__template_error(c, at, "%s for parameter %s: '%.64s' is not a number", source, p->name,
                           shown);
        return false;
    }
    if (p->allowed_value_count) {
        bool found = false;
        for (size_t i = 0; i < p->allowed_value_count && !found; i++)
            found = streq(p->allowed_values[i], value);
        if (!found) {
            rw__template_error(c, at, "%s for parameter %s: '%.64s' is not in AllowedValues",
                               source, p->name, shown);
            return false;
        }
    }
    size_t len = strlen(value);
    if ((p->min_length >= 0 && (long)len < p->min_length) ||
        (p->max_length >= 0 && (long)len > p->max_length)) {
        rw__template_error(c, at,
                           "%s for parameter %s: its length %zu is outside MinLength/MaxLength",
                           source, p->name, len);
        return false;
    }
    if (p->type == RW_TPL_PARAM_NUMBER && (p->has_min_value || p->has_max_value)) {
        double v = strtod(value, NULL);
        if ((p->has_min_value && v < p->min_value) || (p->has_max_value && v > p->max_value)) {
            rw__template_error(c, at, "%s for parameter %s: %s is outside MinValue/MaxValue",
                               source, p->name, shown);
            return false;
        }
    }
    if (p->allowed_pattern) {
        regex_t rx;
        char *re = rw__template_printf(c->scratch, "^(%s)$", p->allowed_pattern);
        if (regcomp(&rx, re, REG_EXTENDED | REG_NOSUB) == 0) {
            int rc = regexec(&rx, value, 0, NULL, 0);
            regfree(&rx);
            if (rc != 0) {
                rw__template_error(c, at,
                                   "%s for parameter %s: '%.64s' does not match "
                                   "AllowedPattern",
                                   source, p->name, shown);
                return false;
            }
        }
    }
    return true;
}

static int cmp_param(const void *a, const void *b)
{
    const rw_tpl_param_t *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static void load_parameters(ctx_t *c, const node_t *params)
{
    rw_template_t *t = c->tpl;
    const node_t **decl = NULL; /* the key of each parameter, for later messages */
    size_t ndecl = 0;
    if (params && rw__template_get_map(c, params, "Parameters")) {
        for (size_t i = 0; i < params->count; i++) {
            const node_t *k = MAP_KEY(params, i), *v = MAP_VAL(params, i);
            if (k->kind != RW__TPL_SCALAR)
                continue;
            if (!is_alnum_str(k->str) || strlen(k->str) > 255) {
                rw__template_error(c, k,
                                   "parameter name '%.64s' must be 1 to 255 letters and "
                                   "digits",
                                   k->str);
                continue;
            }
            if (k->dup)
                continue; /* a duplicate key, reported */
            if (!rw__template_get_map(c, v, "parameter"))
                continue;
            rw__template_check_keys(c, v, "a parameter", param_keys, NULL);
            rw_tpl_param_t *p = RW_TPL_PUSH(c->arena, t->params, t->param_count);
            *RW_TPL_PUSH(c->scratch, decl, ndecl) = k;
            p->name = rw__template_keep(c, k->str);
            p->line = k->line;
            p->col = k->col;
            p->min_length = p->max_length = -1;
            const node_t *n;
            const char *s;
            bool ok = true;
            if ((n = rw__template_require(c, v, "Type", "parameter")) &&
                literal_scalar(c, n, "Type", &s)) {
                if (streq(s, "String"))
                    p->type = RW_TPL_PARAM_STRING;
                else if (streq(s, "Number"))
                    p->type = RW_TPL_PARAM_NUMBER;
                else {
                    rw__template_error(c, n,
                                       "parameter Type %.64s is not supported by reelway "
                                       "(String, Number)",
                                       s);
                    ok = false;
                }
            } else {
                ok = false;
            }
            if ((n = rw__template_map_get(v, "Description")) &&
                rw__template_get_str(c, n, "Description", &s))
                p->description = rw__template_keep(c, s);
            if ((n = rw__template_map_get(v, "ConstraintDescription")))
                rw__template_get_str(c, n, "ConstraintDescription", &s);
            if ((n = rw__template_map_get(v, "NoEcho")))
                rw__template_get_bool(c, n, "NoEcho", &p->no_echo);
            if ((n = rw__template_map_get(v, "Default"))) {
                if (literal_scalar(c, n, "Default", &s))
                    p->default_value = rw__template_keep(c, s);
                else
                    ok = false;
            }
            if ((n = rw__template_map_get(v, "AllowedValues"))) {
                if (n->kind != RW__TPL_SEQ || n->tag || n->count == 0) {
                    rw__template_error(c, n, "AllowedValues: expected a non-empty list");
                    ok = false;
                } else {
                    for (size_t j = 0; j < n->count; j++) {
                        if (literal_scalar(c, n->kids[j], "AllowedValues", &s))
                            *RW_TPL_PUSH(c->arena, p->allowed_values, p->allowed_value_count) =
                                rw__template_keep(c, s);
                        else
                            ok = false;
                    }
                }
            }
            if ((n = rw__template_map_get(v, "AllowedPattern"))) {
                if (literal_scalar(c, n, "AllowedPattern", &s) &&
                    rw__template_check_regex(c, n, "AllowedPattern", s))
                    p->allowed_pattern = rw__template_keep(c, s);
                else
                    ok = false;
            }
            long l;
            if ((n = rw__template_map_get(v, "MinLength"))) {
                if (rw__template_get_int(c, n, "MinLength", 0, INT_MAX, &l))
                    p->min_length = l;
                else
                    ok = false;
            }
            if ((n = rw__template_map_get(v, "MaxLength"))) {
                if (rw__template_get_int(c, n, "MaxLength", 0, INT_MAX, &l))
                    p->max_length = l;
                else
                    ok = false;
            }
            if ((n = rw__template_map_get(v, "MinValue"))) {
                p->has_min_value =
                    rw__template_get_double(c, n, "MinValue", -1e300, 1e300, &p->min_value);
                ok = ok && p->has_min_value;
            }
            if ((n = rw__template_map_get(v, "MaxValue"))) {
                p->has_max_value =
                    rw__template_get_double(c, n, "MaxValue", -1e300, 1e300, &p->max_value);
                ok = ok && p->has_max_value;
            }
            if (p->type == RW_TPL_PARAM_STRING && (p->has_min_value || p->has_max_value))
                rw__template_error(c, k,
                                   "parameter %s: MinValue/MaxValue apply to Number "
                                   "parameters",
                                   p->name);
            if (p->type == RW_TPL_PARAM_NUMBER && (p->min_length >= 0 || p->max_length >= 0))
                rw__template_error(c, k,
                                   "parameter %s: MinLength/MaxLength apply to String "
                                   "parameters",
                                   p->name);
            if (ok && p->default_value &&
                check_param_value(c, p, rw__template_map_get(v, "Default"), "Default",
                                  p->default_value))
                p->value = p->default_value;
        }
    }
    /* Values given at load time. */
    const rw_template_params_t *pp = c->params;
    for (size_t i = 0; pp && i < pp->override_count; i++) {
        const rw_template_override_t *o = &pp->overrides[i];
        if (!o->name || !o->value) {
            rw__template_error_at(c, 0, 0, "parameter override %zu has no name or no value", i);
            continue;
        }
        size_t j = 0;
        while (j < t->param_count && !streq(t->params[j].name, o->name))
            j++;
        if (j == t->param_count) {
            rw__template_error_at(c, 0, 0,
                                  "parameter override %.64s: the template has no such "
                                  "parameter",
                                  o->name);
            continue;
        }
        rw_tpl_param_t *p = &t->params[j];
        p->overridden = true;
        p->value = NULL;
        if (check_param_value(c, p, decl[j], "the value given", o->value))
            p->value = rw__template_keep(c, o->value);
    }
    for (size_t j = 0; j < t->param_count; j++) {
        rw_tpl_param_t *p = &t->params[j];
        if (!p->default_value && !p->overridden)
            rw__template_error(c, decl[j],
                               "parameter %s has no Default and no value was given "
                               "(reelway runs the template as it is: give a Default)",
                               p->name);
    }
    c->params_sorted_count = t->param_count;
    c->params_sorted =
        t->param_count ? rw__template_alloc(c->scratch, t->param_count * sizeof(void *)) : NULL;
    for (size_t j = 0; j < t->param_count; j++)
        c->params_sorted[j] = &t->params[j];
    if (t->param_count)
        qsort(c->params_sorted, t->param_count, sizeof(void *), cmp_param);
}

/* ---- the symbol table (pass 1) ------------------------------------------------ */

typedef struct type_entry_s {
    const char *name;
    rw__template_sym_type_t type;
} type_entry_t;

static const type_entry_t resource_types[] = {{"AWS::Serverless::Function", SYM_FUNCTION},
                                              {"AWS::Serverless::Api", SYM_REST_API},
                                              {"AWS::Serverless::HttpApi", SYM_HTTP_API},
                                              {"AWS::S3::Bucket", SYM_BUCKET},
                                              {"AWS::SQS::Queue", SYM_QUEUE},
                                              {"AWS::ApiGateway::ApiKey", SYM_API_KEY},
                                              {"AWS::ApiGateway::UsagePlan", SYM_USAGE_PLAN},
                                              {"AWS::ApiGateway::UsagePlanKey", SYM_USAGE_PLAN_KEY},
                                              {NULL, SYM_OTHER}};

static const char *const resource_keys[] = {
    "Type", "Properties", "Metadata", "DependsOn", "DeletionPolicy", "UpdateReplacePolicy", NULL};
static const rw__template_unsupported_t resource_unsupported[] = {
    {"Condition", "conditions are not supported"},
    {"CreationPolicy", "creation signals do not apply"},
    {"UpdatePolicy", "update policies do not apply"},
    {NULL, NULL}};

static int cmp_sym(const void *a, const void *b)
{
    const rw__template_sym_t *x = a, *y = b;
    int d = strcmp(x->id, y->id);
    if (d)
        return d;
    int lx = x->key ? x->key->line : INT_MAX, ly = y->key ? y->key->line : INT_MAX;
    return lx < ly ? -1 : lx > ly;
}

void rw__template_sort_syms(ctx_t *c)
{
    if (c->sym_count < 2)
        return;
    qsort(c->syms, c->sym_count, sizeof *c->syms, cmp_sym);
    /* Duplicate logical ids were reported as duplicate keys; keep the first. */
    size_t w = 1;
    for (size_t r = 1; r < c->sym_count; r++)
        if (strcmp(c->syms[r].id, c->syms[w - 1].id) != 0)
            c->syms[w++] = c->syms[r];
    c->sym_count = w;
}

static rw__template_sym_t *add_sym(ctx_t *c, const char *id, rw__template_sym_type_t type,
                                   const node_t *key, const node_t *res)
{
    rw__template_sym_t *s = RW_TPL_PUSH(c->scratch, c->syms, c->sym_count);
    s->id = id;
    s->type = type;
    s->key = key;
    s->resource = res;
    s->index = -1;
    return s;
}

/* Evaluates a name property quietly in pass 1 (its problems are reported in pass 2). */
static const char *quiet_name(ctx_t *c, const node_t *props, const char *key)
{
    const node_t *n = rw__template_map_get(props, key);
    if (!n)
        return NULL;
    bool q = c->quiet, nr = c->no_resources;
    c->quiet = true;
    c->no_resources = true;
    val_t v;
    const char *s = NULL;
    if (rw__template_eval(c, n, key, &v) && v.str && !v.is_null)
        s = v.str;
    c->quiet = q;
    c->no_resources = nr;
    return s;
}

static char *lower(ctx_t *c, const char *s)
{
    char *p = rw__template_keep(c, s);
    for (char *q = p; *q; q++)
        if (*q >= 'A' && *q <= 'Z')
            *q = (char)(*q - 'A' + 'a');
    return p;
}

/* Does any function have an event of this type that names no API? */
static const node_t *needs_implicit_api(ctx_t *c, const node_t *resources, const char *type,
                                        const char *api_key)
{
    for (size_t i = 0; i < resources->count; i++) {
        const node_t *r = MAP_VAL(resources, i);
        const node_t *ty = rw__template_map_get(r, "Type");
        if (!ty || ty->kind != RW__TPL_SCALAR || !streq(ty->str, "AWS::Serverless::Function"))
            continue;
        const node_t *events =
            rw__template_map_get(rw__template_map_get(r, "Properties"), "Events");
        for (size_t j = 0; events && events->kind == RW__TPL_MAP && j < events->count; j++) {
            const node_t *ev = MAP_VAL(events, j);
            const node_t *et = rw__template_map_get(ev, "Type");
            if (!et || et->kind != RW__TPL_SCALAR || !streq(et->str, type))
                continue;
            if (!rw__template_map_get(rw__template_map_get(ev, "Properties"), api_key))
                return MAP_KEY(events, j);
        }
    }
    return NULL;
}

static void declare_resources(ctx_t *c, const node_t *resources)
{
    rw_template_t *t = c->tpl;
    for (size_t i = 0; i < resources->count; i++) {
        const node_t *k = MAP_KEY(resources, i), *r = MAP_VAL(resources, i);
        if (k->kind != RW__TPL_SCALAR || k->dup)
            continue; /* a duplicate logical id, reported as a duplicate key */
        if (!is_alnum_str(k->str) || strlen(k->str) > 255)
            rw__template_error(c, k, "logical id '%.64s' must be 1 to 255 letters and digits",
                               k->str);
        rw__template_sym_type_t type = SYM_OTHER;
        const node_t *ty = rw__template_map_get(r, "Type");
        if (ty && ty->kind == RW__TPL_SCALAR && !ty->tag)
            for (size_t j = 0; resource_types[j].name; j++)
                if (streq(ty->str, resource_types[j].name))
                    type = resource_types[j].type;
        if (r->kind != RW__TPL_MAP)
            type = SYM_OTHER;
        rw__template_sym_t *s = add_sym(c, k->str, type, k, r);
        const node_t *props = rw__template_map_get(r, "Properties");
        switch (type) {
        case SYM_FUNCTION: {
            rw_tpl_function_t *f = RW_TPL_PUSH(c->arena, t->functions, t->function_count);
            s->index = (int)t->function_count - 1;
            f->name = rw__template_keep(c, k->str);
            f->arn = rw__template_printf(c->arena, "arn:aws:lambda:%s:%s:function:%s", t->region,
                                         t->account_id, f->name);
            f->line = k->line;
            f->col = k->col;
            break;
        }
        case SYM_BUCKET: {
            rw_tpl_bucket_t *b = RW_TPL_PUSH(c->arena, t->buckets, t->bucket_count);
            s->index = (int)t->bucket_count - 1;
            b->name = rw__template_keep(c, k->str);
            const char *bn = quiet_name(c, props, "BucketName");
            b->bucket_name = bn ? rw__template_keep(c, bn) : lower(c, k->str);
            b->arn = rw__template_printf(c->arena, "arn:aws:s3:::%s", b->bucket_name);
            b->line = k->line;
            b->col = k->col;
            break;
        }
        case SYM_QUEUE: {
            rw_tpl_queue_t *q = RW_TPL_PUSH(c->arena, t->queues, t->queue_count);
            s->index = (int)t->queue_count - 1;
            q->name = rw__template_keep(c, k->str);
            const char *qn = quiet_name(c, props, "QueueName");
            q->queue_name = rw__template_keep(c, qn ? qn : k->str);
            q->arn = rw__template_printf(c->arena, "arn:aws:sqs:%s:%s:%s", t->region, t->account_id,
                                         q->queue_name);
            q->url = rw__template_printf(c->arena, "https://sqs.%s.amazonaws.com/%s/%s", t->region,
                                         t->account_id, q->queue_name);
            q->dead_letter_queue = -1;
            q->line = k->line;
            q->col = k->col;
            break;
        }
        case SYM_REST_API:
        case SYM_HTTP_API: {
            rw_tpl_api_t *a = RW_TPL_PUSH(c->arena, t->apis, t->api_count);
            s->index = (int)t->api_count - 1;
            a->name = rw__template_keep(c, k->str);
            a->kind = type == SYM_REST_API ? RW_TPL_API_REST : RW_TPL_API_HTTP;
            a->line = k->line;
            a->col = k->col;
            break;
        }
        case SYM_API_KEY: {
            rw_tpl_api_key_t *ak = RW_TPL_PUSH(c->arena, t->api_keys, t->api_key_count);
            s->index = (int)t->api_key_count - 1;
            ak->name = rw__template_keep(c, k->str);
            ak->line = k->line;
            ak->col = k->col;
            break;
        }
        case SYM_USAGE_PLAN: {
            rw_tpl_usage_plan_t *up = RW_TPL_PUSH(c->arena, t->usage_plans, t->usage_plan_count);
            s->index = (int)t->usage_plan_count - 1;
            up->name = rw__template_keep(c, k->str);
            up->line = k->line;
            up->col = k->col;
            up->quota_limit = -1;
            up->rate_limit = -1;
            up->burst_limit = -1;
            break;
        }
        default:
            break;
        }
    }
    /* SAM's implicit APIs, for Api / HttpApi events that name none. */
    static const struct {
        const char *id, *event, *prop;
        rw__template_sym_type_t type;
    } implicit[] = {{"ServerlessRestApi", "Api", "RestApiId", SYM_REST_API},
                    {"ServerlessHttpApi", "HttpApi", "ApiId", SYM_HTTP_API}};
    for (size_t i = 0; i < 2; i++) {
        const node_t *ev = needs_implicit_api(c, resources, implicit[i].event, implicit[i].prop);
        if (!ev)
            continue;
        const node_t *clash = NULL;
        for (size_t j = 0; j < resources->count && !clash; j++)
            if (MAP_KEY(resources, j)->kind == RW__TPL_SCALAR &&
                streq(MAP_KEY(resources, j)->str, implicit[i].id))
                clash = MAP_KEY(resources, j);
        if (clash) {
            rw__template_error(c, clash,
                               "%s is the logical id SAM gives the implicit API of "
                               "events with no %s (as at line %d): rename this resource",
                               implicit[i].id, implicit[i].prop, ev->line);
            continue;
        }
        rw__template_sym_t *s = add_sym(c, implicit[i].id, implicit[i].type, NULL, NULL);
        rw_tpl_api_t *a = RW_TPL_PUSH(c->arena, t->apis, t->api_count);
        s->index = (int)t->api_count - 1;
        a->name = rw__template_keep(c, implicit[i].id);
        a->kind = implicit[i].type == SYM_REST_API ? RW_TPL_API_REST : RW_TPL_API_HTTP;
        a->implicit = true;
        a->line = ev->line;
        a->col = ev->col;
    }
    rw__template_sort_syms(c);
    for (size_t j = 0; j < t->param_count; j++) {
        int si = rw__template_sym_find(c, t->params[j].name);
        if (si >= 0 && c->syms[si].key)
            rw__template_error(c, c->syms[si].key,
                               "logical id %s is also the name of a "
                               "parameter",
                               c->syms[si].id);
    }
}

/* ---- Globals ------------------------------------------------------------------------ */

static const char *const function_global_keys[] = {"Handler",
                                                   "Runtime",
                                                   "CodeUri",
                                                   "Description",
                                                   "MemorySize",
                                                   "Timeout",
                                                   "Environment",
                                                   "Architectures",
                                                   "ReservedConcurrentExecutions",
                                                   "ProvisionedConcurrencyConfig",
                                                   "AutoPublishAlias",
                                                   "EventInvokeConfig",
                                                   "DeadLetterQueue",
                                                   "Tags",
                                                   NULL};

static const char *const function_keys[] = {"Handler",
                                            "Runtime",
                                            "CodeUri",
                                            "Description",
                                            "MemorySize",
                                            "Timeout",
                                            "Environment",
                                            "Architectures",
                                            "ReservedConcurrentExecutions",
                                            "ProvisionedConcurrencyConfig",
                                            "AutoPublishAlias",
                                            "EventInvokeConfig",
                                            "DeadLetterQueue",
                                            "Tags",
                                            "Events",
                                            NULL};

static const rw__template_unsupported_t function_unsupported[] = {
    {"Policies", "IAM is not modeled: a function runs with the gateway's own rights"},
    {"Role", "IAM is not modeled: a function runs with the gateway's own rights"},
    {"RolePath", "IAM is not modeled"},
    {"PermissionsBoundary", "IAM is not modeled"},
    {"AssumeRolePolicyDocument", "IAM is not modeled"},
    {"FunctionName", "a function's name is its logical id"},
    {"InlineCode", "inline code is not supported: use CodeUri"},
    {"ImageUri", "container images are not supported: use CodeUri"},
    {"ImageConfig", "container images are not supported"},
    {"PackageType", "container images are not supported: use CodeUri (Zip)"},
    {"Layers", "layers are not supported: put dependencies under CodeUri"},
    {"VpcConfig", "VPCs do not apply to local processes"},
    {"Tracing", "X-Ray is not supported (trace ids are passed through)"},
    {"KmsKeyArn", "KMS is not supported"},
    {"DeploymentPreference", "gradual deployments are not supported"},
    {"FunctionUrlConfig", "function URLs are not supported: route through an HttpApi event"},
    {"EphemeralStorage", "/tmp is not limited per function"},
    {"SnapStart", "SnapStart is not supported"},
    {"FileSystemConfigs", "EFS is not supported"},
    {"CodeSigningConfigArn", "code signing is not supported"},
    {"LoggingConfig", "logs always go to the function's log (see docs/template.md)"},
    {"RuntimeManagementConfig", "runtime versions are the host's"},
    {"RecursiveLoop", "recursive loop detection is not supported"},
    {"SourceKMSKeyArn", "KMS is not supported"},
    {"AutoPublishCodeSha256", "versions are not supported (AutoPublishAlias only names one)"},
    {"AutoPublishAliasAllProperties", "versions are not supported"},
    {"VersionDescription", "versions are not supported"},
    {"VersionDeletionPolicy", "versions are not supported"},
    {"CapacityProviderConfig", "capacity providers are not supported"},
    {"FunctionScalingConfig", "scaling is set by ReservedConcurrentExecutions"},
    {"DurableConfig", "durable functions are not supported"},
    {"TenancyConfig", "tenant isolation is not supported"},
    {"PropagateTags", "tags have no effect in reelway"},
    {NULL, NULL}};

static const rw__template_unsupported_t globals_unsupported[] = {
    {"SimpleTable", "AWS::Serverless::SimpleTable is not supported"},
    {"StateMachine", "AWS::Serverless::StateMachine is not supported"},
    {"LayerVersion", "layers are not supported"},
    {"CapacityProvider", "capacity providers are not supported"},
    {NULL, NULL}};

static void load_function_props(ctx_t *c, rw_tpl_function_t *f, const node_t *props, bool globals);

void rw__template_check_api_globals(ctx_t *c);

static void check_globals(ctx_t *c, const node_t *g)
{
    static const char *const sections[] = {"Function", "Api", "HttpApi", NULL};
    if (!g || !rw__template_get_map(c, g, "Globals"))
        return;
    rw__template_check_keys(c, g, "Globals", sections, globals_unsupported);
    const node_t *fg = rw__template_map_get(g, "Function");
    if (fg && rw__template_get_map(c, fg, "Globals.Function")) {
        rw__template_check_keys(c, fg, "Globals.Function", function_global_keys,
                                function_unsupported);
        rw_tpl_function_t scratch = {0};
        load_function_props(c, &scratch, rw__template_merge(c, fg, NULL, function_global_keys),
                            true);
    }
    const node_t *ag = rw__template_map_get(g, "Api");
    if (ag)
        rw__template_get_map(c, ag, "Globals.Api");
    const node_t *hg = rw__template_map_get(g, "HttpApi");
    if (hg)
        rw__template_get_map(c, hg, "Globals.HttpApi");
    rw__template_check_api_globals(c);
}

/* Finds the Globals sections before anything reads them (pass 1 needs Api's). */
static void find_globals(ctx_t *c, const node_t *g)
{
    const node_t *s;
    if (!g || g->kind != RW__TPL_MAP || rw__template_is_intrinsic(g))
        return;
    if ((s = rw__template_map_get(g, "Function")) && s->kind == RW__TPL_MAP &&
        !rw__template_is_intrinsic(s))
        c->globals_function = s;
    if ((s = rw__template_map_get(g, "Api")) && s->kind == RW__TPL_MAP &&
        !rw__template_is_intrinsic(s))
        c->globals_api = s;
    if ((s = rw__template_map_get(g, "HttpApi")) && s->kind == RW__TPL_MAP &&
        !rw__template_is_intrinsic(s))
        c->globals_http_api = s;
}

/* ---- functions ------------------------------------------------------------------ */

static const char *const reserved_env[] = {"AWS_REGION",
                                           "AWS_DEFAULT_REGION",
                                           "AWS_EXECUTION_ENV",
                                           "AWS_LAMBDA_FUNCTION_NAME",
                                           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                                           "AWS_LAMBDA_FUNCTION_VERSION",
                                           "AWS_LAMBDA_INITIALIZATION_TYPE",
                                           "AWS_LAMBDA_LOG_GROUP_NAME",
                                           "AWS_LAMBDA_LOG_STREAM_NAME",
                                           "AWS_ACCESS_KEY",
                                           "AWS_ACCESS_KEY_ID",
                                           "AWS_SECRET_ACCESS_KEY",
                                           "AWS_SESSION_TOKEN",
                                           "AWS_LAMBDA_RUNTIME_API",
                                           "LAMBDA_TASK_ROOT",
                                           "LAMBDA_RUNTIME_DIR",
                                           "AWS_XRAY_CONTEXT_MISSING",
                                           "AWS_XRAY_DAEMON_ADDRESS",
                                           "_HANDLER",
                                           "_X_AMZN_TRACE_ID",
                                           NULL};

static bool env_name_ok(const char *s)
{
    /* Lambda's rule: [a-zA-Z]([a-zA-Z0-9_])+ */
    if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')) || !s[1])
        return false;
    for (const char *p = s + 1; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return false;
    return true;
}

static void load_environment(ctx_t *c, rw_tpl_function_t *f, const node_t *env)
{
    static const char *const env_keys[] = {"Variables", NULL};
    if (!rw__template_get_map(c, env, "Environment"))
        return;
    rw__template_check_keys(c, env, "Environment", env_keys, NULL);
    const node_t *vars = rw__template_map_get(env, "Variables");
    if (!vars || !rw__template_get_map(c, vars, "Environment.Variables"))
        return;
    size_t total = 0;
    for (size_t i = 0; i < vars->count; i++) {
        const node_t *k = MAP_KEY(vars, i), *v = MAP_VAL(vars, i);
        if (k->kind != RW__TPL_SCALAR || k->dup)
            continue;
        bool ok = true;
        if (!env_name_ok(k->str)) {
            rw__template_error(c, k,
                               "environment variable name '%.64s' must match "
                               "[a-zA-Z][a-zA-Z0-9_]+",
                               k->str);
            ok = false;
        }
        for (size_t j = 0; reserved_env[j] && ok; j++)
            if (streq(k->str, reserved_env[j])) {
                rw__template_error(c, k,
                                   "environment variable %s is reserved: the runtime sets "
                                   "it",
                                   k->str);
                ok = false;
            }
        const char *s;
        if (!rw__template_get_str(c, v, k->str, &s) || !ok)
            continue;
        total += strlen(k->str) + strlen(s);
        /* The merge left one entry per name (Globals' first, the function's
         * value winning); a repeated key was reported and is skipped. */
        rw_tpl_kv_t *kv = RW_TPL_PUSH(c->arena, f->env, f->env_count);
        kv->key = rw__template_keep(c, k->str);
        kv->value = rw__template_keep(c, s);
    }
    if (total > 4096)
        rw__template_error(c, rw__template_where(vars),
                           "Environment.Variables: %zu bytes in "
                           "all, more than Lambda's 4 KB",
                           total);
}

static int queue_destination(ctx_t *c, const node_t *dest, const char *what)
{
    static const char *const keys[] = {"Type", "Destination", NULL};
    static const char *const types[] = {"SQS", "SNS", "Lambda", "EventBridge", "S3Bucket", NULL};
    if (!rw__template_get_map(c, dest, what))
        return -1;
    rw__template_check_keys(c, dest, what, keys, NULL);
    const node_t *ty = rw__template_require(c, dest, "Type", what);
    int kind = ty ? rw__template_get_enum(c, ty, "Type", types, false) : -1;
    if (kind > 0) {
        rw__template_error(c, ty, "%s: destination type %s is not supported by reelway (SQS)", what,
                           types[kind]);
        return -1;
    }
    const node_t *d = rw__template_map_get(dest, "Destination");
    if (!d) {
        rw__template_error(c, rw__template_where(dest),
                           "%s: Destination is required (reelway "
                           "does not create queues implicitly)",
                           what);
        return -1;
    }
    if (kind < 0)
        return -1;
    return rw__template_resolve_ref(c, d, "Destination", SYM_QUEUE);
}

static void load_event_invoke_config(ctx_t *c, rw_tpl_function_t *f, const node_t *n)
{
    static const char *const keys[] = {"MaximumEventAgeInSeconds", "MaximumRetryAttempts",
                                       "DestinationConfig", NULL};
    static const char *const dest_keys[] = {"OnSuccess", "OnFailure", NULL};
    if (!rw__template_get_map(c, n, "EventInvokeConfig"))
        return;
    rw__template_check_keys(c, n, "EventInvokeConfig", keys, NULL);
    const node_t *v;
    long l;
    if ((v = rw__template_map_get(n, "MaximumEventAgeInSeconds")) &&
        rw__template_get_int(c, v, "MaximumEventAgeInSeconds", 60, 21600, &l))
        f->max_event_age_s = (int)l;
    if ((v = rw__template_map_get(n, "MaximumRetryAttempts")) &&
        rw__template_get_int(c, v, "MaximumRetryAttempts", 0, 2, &l))
        f->max_retry_attempts = (int)l;
    const node_t *dc = rw__template_map_get(n, "DestinationConfig");
    if (dc && rw__template_get_map(c, dc, "DestinationConfig")) {
        rw__template_check_keys(c, dc, "DestinationConfig", dest_keys, NULL);
        if ((v = rw__template_map_get(dc, "OnSuccess")))
            f->on_success_queue = queue_destination(c, v, "OnSuccess");
        if ((v = rw__template_map_get(dc, "OnFailure")))
            f->on_failure_queue = queue_destination(c, v, "OnFailure");
    }
}

static bool python_version_ok(const char *rt)
{
    static const char *const ok[] = {"python3.9",  "python3.10", "python3.11",
                                     "python3.12", "python3.13", NULL};
    for (size_t i = 0; ok[i]; i++)
        if (streq(rt, ok[i]))
            return true;
    return false;
}

/* Reads the properties of a function (or of Globals.Function when globals). */
static void load_function_props(ctx_t *c, rw_tpl_function_t *f, const node_t *props, bool globals)
{
    const char *where = globals ? "Globals.Function" : "AWS::Serverless::Function";
    const node_t *v;
    const char *s;
    long l;
    f->memory_mb = 128;
    f->timeout_s = 3;
    f->reserved_concurrency = -1;
    f->max_retry_attempts = 2;
    f->max_event_age_s = 21600;
    f->on_success_queue = f->on_failure_queue = f->dead_letter_queue = -1;
    f->architecture = "x86_64";
    if (!globals)
        rw__template_check_keys(c, props, where, function_keys, function_unsupported);

    const node_t *rt = rw__template_map_get(props, "Runtime");
    bool runtime_ok = false;
    if (rt && rw__template_get_str(c, rt, "Runtime", &s)) {
        runtime_ok = true;
        if (streq(s, "provided") || streq(s, "provided.al2023"))
            f->runtime_kind = RW_TPL_RUNTIME_PROVIDED;
        else if (python_version_ok(s))
            f->runtime_kind = RW_TPL_RUNTIME_PYTHON;
        else if (streq(s, "nodejs20.x"))
            f->runtime_kind = RW_TPL_RUNTIME_NODEJS;
        else {
            rw__template_error(c, rt,
                               "Runtime %.64s is not supported by reelway (provided, "
                               "provided.al2023, python3.9 to python3.13, nodejs20.x)",
                               s);
            runtime_ok = false;
        }
        if (runtime_ok)
            f->runtime = rw__template_keep(c, s);
    } else if (!rt && !globals) {
        rw__template_error(c, rw__template_where(props),
                           "%s %s: Runtime is required (here or in "
                           "Globals.Function)",
                           where, f->name);
    }

    const node_t *h = rw__template_map_get(props, "Handler");
    if (h && rw__template_get_str(c, h, "Handler", &s)) {
        const char *dot = strrchr(s, '.');
        bool spaces = strpbrk(s, " \t\r\n") != NULL;
        if (spaces || !*s || strlen(s) > 128) {
            rw__template_error(c, h, "Handler: '%.64s' is not a handler name", s);
        } else if (runtime_ok && f->runtime_kind != RW_TPL_RUNTIME_PROVIDED &&
                   (!dot || dot == s || !dot[1])) {
            rw__template_error(c, h, "Handler: '%.64s' must be MODULE.FUNCTION for %s", s,
                               f->runtime);
        } else {
            f->handler = rw__template_keep(c, s);
        }
    } else if (!h && !globals && runtime_ok && f->runtime_kind != RW_TPL_RUNTIME_PROVIDED) {
        rw__template_error(c, rw__template_where(props), "%s %s: Handler is required for %s", where,
                           f->name, f->runtime);
    }

    const node_t *cu = rw__template_map_get(props, "CodeUri");
    if (cu) {
        if (cu->kind == RW__TPL_MAP && !rw__template_is_intrinsic(cu)) {
            rw__template_error(c, cu,
                               "CodeUri: S3 locations are not supported: give a path "
                               "relative to the template");
        } else if (rw__template_get_str(c, cu, "CodeUri", &s)) {
            if (strncmp(s, "s3://", 5) == 0 || strstr(s, "://"))
                rw__template_error(c, cu,
                                   "CodeUri: '%.64s' is a URL; reelway needs a path "
                                   "relative to the template",
                                   s);
            else if (!*s)
                rw__template_error(c, cu, "CodeUri: empty path");
            else {
                f->code_uri = rw__template_keep(c, s);
                f->code_path = join_path(c, c->tpl->dir, s);
                if (!globals && c->params && c->params->check_code) {
                    struct stat st;
                    if (stat(f->code_path, &st) != 0)
                        rw__template_error(c, cu, "CodeUri: %s does not exist (%s)", f->code_path,
                                           strerror(errno));
                }
            }
        }
    } else if (!globals) {
        rw__template_error(c, rw__template_where(props),
                           "%s %s: CodeUri is required (here or in "
                           "Globals.Function)",
                           where, f->name);
    }

    if ((v = rw__template_map_get(props, "Description")) &&
        rw__template_get_str(c, v, "Description", &s))
        f->description = rw__template_keep(c, s);
    if ((v = rw__template_map_get(props, "MemorySize")) &&
        rw__template_get_int(c, v, "MemorySize", 128, 10240, &l))
        f->memory_mb = (int)l;
    if ((v = rw__template_map_get(props, "Timeout")) &&
        rw__template_get_int(c, v, "Timeout", 1, 900, &l))
        f->timeout_s = (int)l;
    if ((v = rw__template_map_get(props, "Environment")))
        load_environment(c, f, v);
    if ((v = rw__template_map_get(props, "Architectures"))) {
        char **archs;
        size_t n;
        if (rw__template_get_strs(c, v, "Architectures", false, &archs, &n)) {
            if (n != 1)
                rw__template_error(c, v,
                                   "Architectures: give exactly one (x86_64 or arm64), not "
                                   "%zu",
                                   n);
            else if (!streq(archs[0], "x86_64") && !streq(archs[0], "arm64"))
                rw__template_error(c, v, "Architectures: '%.32s' is not x86_64 or arm64", archs[0]);
            else
                f->architecture = archs[0];
        }
    }
    const node_t *rc = rw__template_map_get(props, "ReservedConcurrentExecutions");
    if (rc && rw__template_get_int(c, rc, "ReservedConcurrentExecutions", 0, 1000, &l))
        f->reserved_concurrency = (int)l;
    const node_t *pc = rw__template_map_get(props, "ProvisionedConcurrencyConfig");
    if (pc && rw__template_get_map(c, pc, "ProvisionedConcurrencyConfig")) {
        static const char *const keys[] = {"ProvisionedConcurrentExecutions", NULL};
        rw__template_check_keys(c, pc, "ProvisionedConcurrencyConfig", keys, NULL);
        v = rw__template_require(c, pc, "ProvisionedConcurrentExecutions",
                                 "ProvisionedConcurrencyConfig");
        if (v && rw__template_get_int(c, v, "ProvisionedConcurrentExecutions", 1, 1000, &l))
            f->provisioned_concurrency = (int)l;
    }
    const node_t *apa = rw__template_map_get(props, "AutoPublishAlias");
    if (apa && rw__template_get_str(c, apa, "AutoPublishAlias", &s)) {
        size_t n = strlen(s);
        bool ok = n > 0 && n <= 128 &&
                  strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVW"
                            "XYZ0123456789-_") == n &&
                  strspn(s, "0123456789") != n;
        if (!ok)
            rw__template_error(c, apa,
                               "AutoPublishAlias: '%.64s' must be letters, digits, - and _ "
                               "(not only digits)",
                               s);
        else
            f->auto_publish_alias = rw__template_keep(c, s);
    }
    if ((v = rw__template_map_get(props, "EventInvokeConfig")))
        load_event_invoke_config(c, f, v);
    const node_t *dlq = rw__template_map_get(props, "DeadLetterQueue");
    if (dlq && rw__template_get_map(c, dlq, "DeadLetterQueue")) {
        static const char *const keys[] = {"Type", "TargetArn", NULL};
        static const char *const types[] = {"SQS", "SNS", NULL};
        rw__template_check_keys(c, dlq, "DeadLetterQueue", keys, NULL);
        const node_t *ty = rw__template_require(c, dlq, "Type", "DeadLetterQueue");
        const node_t *ta = rw__template_require(c, dlq, "TargetArn", "DeadLetterQueue");
        int kind = ty ? rw__template_get_enum(c, ty, "DeadLetterQueue.Type", types, false) : -1;
        if (kind == 1)
            rw__template_error(c, ty, "DeadLetterQueue: SNS is not supported by reelway (SQS)");
        if (kind == 0 && ta)
            f->dead_letter_queue = rw__template_resolve_ref(c, ta, "TargetArn", SYM_QUEUE);
    }
    if ((v = rw__template_map_get(props, "Tags")) && rw__template_get_map(c, v, "Tags")) {
        for (size_t i = 0; i < v->count; i++)
            rw__template_get_str(c, MAP_VAL(v, i), "Tags", &s);
    }
    if (globals)
        return;
    if (f->provisioned_concurrency > 0 && !f->auto_publish_alias)
        rw__template_error(c, pc,
                           "ProvisionedConcurrencyConfig requires AutoPublishAlias (as in "
                           "SAM)");
    if (f->provisioned_concurrency > 0 && f->reserved_concurrency >= 0 &&
        f->provisioned_concurrency > f->reserved_concurrency)
        rw__template_error(c, pc,
                           "ProvisionedConcurrentExecutions (%d) exceeds "
                           "ReservedConcurrentExecutions (%d)",
                           f->provisioned_concurrency, f->reserved_concurrency);
}

static void load_function(ctx_t *c, const rw__template_sym_t *s)
{
    rw_tpl_function_t *f = &c->tpl->functions[s->index];
    const node_t *props = rw__template_map_get(s->resource, "Properties");
    if (props && !rw__template_get_map(c, props, "Properties"))
        return;
    if (!props) {
        /* With everything in Globals a function may have no Properties. */
        static const node_t empty = {.kind = RW__TPL_MAP};
        node_t *e = rw__template_alloc(c->scratch, sizeof *e);
        *e = empty;
        e->line = s->key->line;
        e->col = s->key->col;
        e->key = s->key;
        props = e;
    }
    const node_t *merged = rw__template_merge(c, c->globals_function, props, function_global_keys);
    load_function_props(c, f, merged, false);
}

static void load_function_events(ctx_t *c, const rw__template_sym_t *s)
{
    static const char *const event_keys[] = {"Type", "Properties", NULL};
    static const char *const unsupported_types[] = {
        "SNS",     "Kinesis",          "DynamoDB",   "CloudWatchEvent", "EventBridgeRule",
        "IoTRule", "AlexaSkill",       "Cognito",    "CloudWatchLogs",  "MSK",
        "MQ",      "SelfManagedKafka", "ScheduleV2", "DocumentDB",      NULL};
    const node_t *props = rw__template_map_get(s->resource, "Properties");
    const node_t *events = rw__template_map_get(props, "Events");
    if (!events || !rw__template_get_map(c, events, "Events"))
        return;
    int fn = s->index;
    for (size_t i = 0; i < events->count; i++) {
        const node_t *k = MAP_KEY(events, i), *ev = MAP_VAL(events, i);
        if (k->kind != RW__TPL_SCALAR || k->dup)
            continue;
        if (!is_alnum_str(k->str))
            rw__template_error(c, k, "event name '%.64s' must be letters and digits", k->str);
        if (!rw__template_get_map(c, ev, "event"))
            continue;
        rw__template_check_keys(c, ev, "an event", event_keys, NULL);
        const node_t *ty = rw__template_require(c, ev, "Type", "event");
        const char *type;
        if (!ty || !rw__template_get_str(c, ty, "Type", &type))
            continue;
        if (streq(type, "Api") || streq(type, "HttpApi")) {
            rw__template_add_api_event(c, fn, k, ev, streq(type, "HttpApi"));
        } else if (streq(type, "S3")) {
            rw__template_add_s3_event(c, fn, k, ev);
        } else if (streq(type, "SQS")) {
            rw__template_add_sqs_event(c, fn, k, ev);
        } else if (streq(type, "Schedule")) {
            rw__template_add_schedule_event(c, fn, k, ev);
        } else {
            bool known = false;
            for (size_t j = 0; unsupported_types[j] && !known; j++)
                known = streq(type, unsupported_types[j]);
            if (known)
                rw__template_error(c, ty,
                                   "event type %s is not supported by reelway (Api, HttpApi, "
                                   "S3, SQS, Schedule)",
                                   type);
            else
                rw__template_error(c, ty,
                                   "unknown event type '%.64s' (Api, HttpApi, S3, SQS, "
                                   "Schedule)",
                                   type);
        }
    }
}

/* ---- buckets, queues, keys --------------------------------------------------------- */

static const node_t *resource_props(ctx_t *c, const rw__template_sym_t *s, bool required)
{
    const node_t *props = rw__template_map_get(s->resource, "Properties");
    if (!props) {
        if (required)
            rw__template_error(c, s->key, "%s %s: Properties is required",
                               rw__template_sym_type_name(s->type), s->id);
        return NULL;
    }
    return rw__template_get_map(c, props, "Properties") ? props : NULL;
}

static void check_tags(ctx_t *c, const node_t *tags)
{
    const char *s;
    if (!tags)
        return;
    if (tags->kind == RW__TPL_SEQ && !tags->tag) {
        /* CloudFormation's resource tags: [{Key, Value}] */
        static const char *const keys[] = {"Key", "Value", NULL};
        for (size_t i = 0; i < tags->count; i++) {
            const node_t *t = tags->kids[i];
            if (!rw__template_get_map(c, t, "Tags"))
                continue;
            rw__template_check_keys(c, t, "a tag", keys, NULL);
            const node_t *v;
            if ((v = rw__template_require(c, t, "Key", "tag")))
                rw__template_get_str(c, v, "Key", &s);
            if ((v = rw__template_require(c, t, "Value", "tag")))
                rw__template_get_str(c, v, "Value", &s);
        }
        return;
    }
    if (!rw__template_get_map(c, tags, "Tags"))
        return;
    for (size_t i = 0; i < tags->count; i++)
        rw__template_get_str(c, MAP_VAL(tags, i), "Tags", &s);
}

static const node_t *reelway_metadata(ctx_t *c, const rw__template_sym_t *s,
                                      const char *const *allowed)
{
    static const char *const meta_keys[] = {"Reelway", NULL};
    const node_t *meta = rw__template_map_get(s->resource, "Metadata");
    if (!meta || !rw__template_get_map(c, meta, "Metadata"))
        return NULL;
    rw__template_check_keys(c, meta, "Metadata (reelway reads only Metadata.Reelway)", meta_keys,
                            NULL);
    const node_t *r = rw__template_map_get(meta, "Reelway");
    if (!r || !rw__template_get_map(c, r, "Metadata.Reelway"))
        return NULL;
    rw__template_check_keys(c, r, "Metadata.Reelway", allowed, NULL);
    return r;
}

const node_t *rw__template_reelway_metadata(ctx_t *c, const rw__template_sym_t *s,
                                            const char *const *allowed)
{
    return reelway_metadata(c, s, allowed);
}

static bool bucket_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 3 || n > 63 || strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789.-") != n)
        return false;
    if (s[0] == '.' || s[0] == '-' || s[n - 1] == '.' || s[n - 1] == '-' || strstr(s, ".."))
        return false;
    return true;
}

static void load_bucket(ctx_t *c, const rw__template_sym_t *s)
{
    static const char *const keys[] = {"BucketName", "Tags", NULL};
    static const rw__template_unsupported_t unsupported[] = {
        {"NotificationConfiguration", "declare notifications as S3 events of the function"},
        {"VersioningConfiguration", "versioning is not supported"},
        {"LifecycleConfiguration", "lifecycle rules are not supported"},
        {"CorsConfiguration", "uploads go through the gateway: CORS is the API's"},
        {"PublicAccessBlockConfiguration", "buckets are private; the gateway serves them"},
        {"BucketEncryption", "encryption at rest is the disk's or the database's"},
        {"AccessControl", "ACLs are not supported"},
        {"OwnershipControls", "ACLs are not supported"},
        {"WebsiteConfiguration", "use Metadata.Reelway.ServePath"},
        {"ObjectLockConfiguration", "object lock is not supported"},
        {"ObjectLockEnabled", "object lock is not supported"},
        {"ReplicationConfiguration", "replication is not supported"},
        {"LoggingConfiguration", "access logs are the gateway's"},
        {"AccelerateConfiguration", "does not apply"},
        {"IntelligentTieringConfigurations", "does not apply"},
        {"InventoryConfigurations", "does not apply"},
        {"MetricsConfigurations", "does not apply"},
        {"AnalyticsConfigurations", "does not apply"},
        {NULL, NULL}};
    static const char *const meta_keys[] = {"Storage", "Directory", "ServePath", NULL};
    static const char *const storages[] = {"filesystem", "gridfs", NULL};
    rw_tpl_bucket_t *b = &c->tpl->buckets[s->index];
    const node_t *props = resource_props(c, s, false);
    const char *str;
    if (props) {
        rw__template_check_keys(c, props, "AWS::S3::Bucket", keys, unsupported);
        const node_t *bn = rw__template_map_get(props, "BucketName");
        if (bn) {
            bool nr = c->no_resources;
            c->no_resources = true;
            if (rw__template_get_str(c, bn, "BucketName", &str) && !bucket_name_ok(str))
                rw__template_error(c, bn,
                                   "BucketName: '%.64s' is not a valid bucket name (3 to "
                                   "63 of a-z 0-9 . -)",
                                   str);
            c->no_resources = nr;
        }
        check_tags(c, rw__template_map_get(props, "Tags"));
    }
    if (!rw__template_map_get(props, "BucketName") && !bucket_name_ok(b->bucket_name))
        rw__template_error(c, s->key,
                           "bucket %s: its name '%s' (the logical id in lower case) "
                           "is not a valid bucket name: set BucketName",
                           s->id, b->bucket_name);
    const node_t *meta = reelway_metadata(c, s, meta_keys);
    const node_t *v;
    if ((v = rw__template_map_get(meta, "Storage"))) {
        int k = rw__template_get_enum(c, v, "Storage", storages, false);
        if (k == 1)
            b->storage = RW_TPL_STORAGE_GRIDFS;
    }
    if ((v = rw__template_map_get(meta, "Directory")) &&
        rw__template_get_str(c, v, "Directory", &str)) {
        if (b->storage == RW_TPL_STORAGE_GRIDFS)
            rw__template_error(c, v, "Directory: a gridfs bucket has no directory");
        else if (!*str)
            rw__template_error(c, v, "Directory: empty path");
        else
            b->directory = join_path(c, c->tpl->dir, str);
    }
    if ((v = rw__template_map_get(meta, "ServePath")) &&
        rw__template_get_str(c, v, "ServePath", &str)) {
        if (rw__template_check_path(c, v, str, false, "ServePath")) {
            if (strchr(str, '{') || streq(str, "/"))
                rw__template_error(c, v, "ServePath: give a fixed prefix such as /media");
            else
                b->serve_path = rw__template_keep(c, str);
        }
    }
}

static bool queue_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n >= 1 && n <= 80 &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == n;
}

static void load_queue(ctx_t *c, const rw__template_sym_t *s)
{
    static const char *const keys[] = {"QueueName",
                                       "VisibilityTimeout",
                                       "MessageRetentionPeriod",
                                       "DelaySeconds",
                                       "MaximumMessageSize",
                                       "RedrivePolicy",
                                       "Tags",
                                       NULL};
    static const rw__template_unsupported_t unsupported[] = {
        {"FifoQueue", "FIFO queues are not supported"},
        {"ContentBasedDeduplication", "FIFO queues are not supported"},
        {"DeduplicationScope", "FIFO queues are not supported"},
        {"FifoThroughputLimit", "FIFO queues are not supported"},
        {"KmsMasterKeyId", "KMS is not supported"},
        {"KmsDataKeyReusePeriodSeconds", "KMS is not supported"},
        {"SqsManagedSseEnabled", "encryption at rest is the database's"},
        {"ReceiveMessageWaitTimeSeconds", "reelway's consumers poll the database, not SQS"},
        {"RedriveAllowPolicy", "any queue may be a dead-letter queue"},
        {NULL, NULL}};
    rw_tpl_queue_t *q = &c->tpl->queues[s->index];
    q->visibility_timeout_s = 30;
    q->retention_s = 345600;
    q->max_message_bytes = 262144;
    const node_t *props = resource_props(c, s, false);
    if (!props) {
        if (!queue_name_ok(q->queue_name))
            rw__template_error(c, s->key, "queue %s: set QueueName", s->id);
        return;
    }
    rw__template_check_keys(c, props, "AWS::SQS::Queue", keys, unsupported);
    const node_t *v;
    const char *str;
    long l;
    if ((v = rw__template_map_get(props, "QueueName"))) {
        bool nr = c->no_resources;
        c->no_resources = true;
        if (rw__template_get_str(c, v, "QueueName", &str)) {
            size_t n = strlen(str);
            if (n > 5 && streq(str + n - 5, ".fifo"))
                rw__template_error(c, v, "QueueName: FIFO queues are not supported by reelway");
            else if (!queue_name_ok(str))
                rw__template_error(c, v, "QueueName: '%.64s' must be 1 to 80 of A-Z a-z 0-9 - _",
                                   str);
        }
        c->no_resources = nr;
    } else if (!queue_name_ok(q->queue_name)) {
        rw__template_error(c, s->key, "queue %s: set QueueName", s->id);
    }
    if ((v = rw__template_map_get(props, "VisibilityTimeout")) &&
        rw__template_get_int(c, v, "VisibilityTimeout", 0, 43200, &l))
        q->visibility_timeout_s = (int)l;
    if ((v = rw__template_map_get(props, "MessageRetentionPeriod")) &&
        rw__template_get_int(c, v, "MessageRetentionPeriod", 60, 1209600, &l))
        q->retention_s = (int)l;
    if ((v = rw__template_map_get(props, "DelaySeconds")) &&
        rw__template_get_int(c, v, "DelaySeconds", 0, 900, &l))
        q->delay_s = (int)l;
    if ((v = rw__template_map_get(props, "MaximumMessageSize")) &&
        rw__template_get_int(c, v, "MaximumMessageSize", 1024, 262144, &l))
        q->max_message_bytes = (int)l;
    const node_t *rp = rw__template_map_get(props, "RedrivePolicy");
    if (rp && rw__template_get_map(c, rp, "RedrivePolicy (a map, not a JSON string)")) {
        static const char *const rkeys[] = {"deadLetterTargetArn", "maxReceiveCount", NULL};
        rw__template_check_keys(c, rp, "RedrivePolicy", rkeys, NULL);
        const node_t *dl = rw__template_require(c, rp, "deadLetterTargetArn", "RedrivePolicy");
        const node_t *mr = rw__template_require(c, rp, "maxReceiveCount", "RedrivePolicy");
        if (dl) {
            int d = rw__template_resolve_ref(c, dl, "deadLetterTargetArn", SYM_QUEUE);
            if (d == s->index)
                rw__template_error(c, dl,
                                   "deadLetterTargetArn: a queue cannot be its own "
                                   "dead-letter queue");
            else
                q->dead_letter_queue = d;
        }
        if (mr && rw__template_get_int(c, mr, "maxReceiveCount", 1, 1000, &l))
            q->max_receive_count = (int)l;
    }
    check_tags(c, rw__template_map_get(props, "Tags"));
}

static int api_of_ref(ctx_t *c, const node_t *n, const char *what)
{
    int a = rw__template_resolve_ref(c, n, what, SYM_REST_API);
    return a;
}

static void load_api_key(ctx_t *c, const rw__template_sym_t *s)
{
    static const char *const keys[] = {"Name",      "Description", "Enabled", "Value",
                                       "StageKeys", "CustomerId",  "Tags",    NULL};
    static const rw__template_unsupported_t unsupported[] = {
        {"GenerateDistinctId", "deprecated in CloudFormation; keys are always distinct"},
        {NULL, NULL}};
    rw_tpl_api_key_t *k = &c->tpl->api_keys[s->index];
    const node_t *props = resource_props(c, s, false);
    if (!props)
        return;
    rw__template_check_keys(c, props, "AWS::ApiGateway::ApiKey", keys, unsupported);
    const node_t *v;
    const char *str;
    if ((v = rw__template_map_get(props, "Name")) && rw__template_get_str(c, v, "Name", &str))
        k->key_name = rw__template_keep(c, str);
    if ((v = rw__template_map_get(props, "Description")) &&
        rw__template_get_str(c, v, "Description", &str))
        k->description = rw__template_keep(c, str);
    if ((v = rw__template_map_get(props, "CustomerId")) &&
        rw__template_get_str(c, v, "CustomerId", &str))
        k->customer_id = rw__template_keep(c, str);
    if ((v = rw__template_map_get(props, "Enabled")))
        rw__template_get_bool(c, v, "Enabled", &k->enabled);
    if ((v = rw__template_map_get(props, "Value")) && rw__template_get_str(c, v, "Value", &str)) {
        size_t n = strlen(str);
        if (n < 20 || n > 128)
            rw__template_error(c, v, "Value: an API key is 20 to 128 characters, not %zu", n);
        else
            k->value = rw__template_keep(c, str);
    }
    const node_t *sk = rw__template_map_get(props, "StageKeys");
    if (sk) {
        if (sk->kind != RW__TPL_SEQ || sk->tag) {
            rw__template_error(c, sk, "StageKeys: expected a list of {RestApiId, StageName}");
        } else {
            static const char *const skeys[] = {"RestApiId", "StageName", NULL};
            for (size_t i = 0; i < sk->count; i++) {
                const node_t *e = sk->kids[i];
                if (!rw__template_get_map(c, e, "StageKeys"))
                    continue;
                rw__template_check_keys(c, e, "StageKeys", skeys, NULL);
                const node_t *ra = rw__template_require(c, e, "RestApiId", "StageKeys");
                const node_t *sn = rw__template_require(c, e, "StageName", "StageKeys");
                int a = ra ? api_of_ref(c, ra, "RestApiId") : -1;
                if (a >= 0 && sn && rw__template_get_str(c, sn, "StageName", &str) &&
                    c->tpl->apis[a].stage && !streq(str, c->tpl->apis[a].stage))
                    rw__template_error(c, sn, "StageName: API %s has stage %s, not %.64s",
                                       c->tpl->apis[a].name, c->tpl->apis[a].stage, str);
                if (a >= 0)
                    *RW_TPL_PUSH(c->arena, k->apis, k->api_count) = a;
            }
        }
    }
    check_tags(c, rw__template_map_get(props, "Tags"));
}

static void load_usage_plan_key(ctx_t *c, const rw__template_sym_t *s)
{
    static const char *const keys[] = {"KeyId", "KeyType", "UsagePlanId", NULL};
    static const char *const types[] = {"API_KEY", NULL};
    const node_t *props = resource_props(c, s, true);
    if (!props)
        return;
    rw__template_check_keys(c, props, "AWS::ApiGateway::UsagePlanKey", keys, NULL);
    const node_t *ki = rw__template_require(c, props, "KeyId", "AWS::ApiGateway::UsagePlanKey");
    const node_t *kt = rw__template_require(c, props, "KeyType", "AWS::ApiGateway::UsagePlanKey");
    const node_t *up =
        rw__template_require(c, props, "UsagePlanId", "AWS::ApiGateway::UsagePlanKey");
    if (kt)
        rw__template_get_enum(c, kt, "KeyType", types, false);
    int key = ki ? rw__template_resolve_ref(c, ki, "KeyId", SYM_API_KEY) : -1;
    int plan = up ? rw__template_resolve_ref(c, up, "UsagePlanId", SYM_USAGE_PLAN) : -1;
    if (key < 0 || plan < 0)
        return;
    rw_tpl_api_key_t *k = &c->tpl->api_keys[key];
    for (size_t i = 0; i < k->usage_plan_count; i++)
        if (k->usage_plans[i] == plan) {
            rw__template_error(c, up, "API key %s is already in usage plan %s", k->name,
                               c->tpl->usage_plans[plan].name);
            return;
        }
    *RW_TPL_PUSH(c->arena, k->usage_plans, k->usage_plan_count) = plan;
}

/* ---- outputs ------------------------------------------------------------------------ */

static void load_outputs(ctx_t *c, const node_t *outputs)
{
    static const char *const keys[] = {"Value", "Description", NULL};
    static const rw__template_unsupported_t unsupported[] = {
        {"Export", "cross-stack exports are not supported"},
        {"Condition", "conditions are not supported"},
        {NULL, NULL}};
    if (!rw__template_get_map(c, outputs, "Outputs"))
        return;
    for (size_t i = 0; i < outputs->count; i++) {
        const node_t *k = MAP_KEY(outputs, i), *o = MAP_VAL(outputs, i);
        if (k->kind != RW__TPL_SCALAR || k->dup)
            continue;
        if (!is_alnum_str(k->str))
            rw__template_error(c, k, "output name '%.64s' must be letters and digits", k->str);
        if (!rw__template_get_map(c, o, "output"))
            continue;
        rw__template_check_keys(c, o, "an output", keys, unsupported);
        const node_t *v = rw__template_require(c, o, "Value", "output");
        const char *s;
        if (!v || !rw__template_get_str(c, v, "Value", &s))
            continue;
        rw_tpl_output_t *out = RW_TPL_PUSH(c->arena, c->tpl->outputs, c->tpl->output_count);
        out->name = rw__template_keep(c, k->str);
        out->value = rw__template_keep(c, s);
        out->line = k->line;
        out->col = k->col;
        if ((v = rw__template_map_get(o, "Description")) &&
            rw__template_get_str(c, v, "Description", &s))
            out->description = rw__template_keep(c, s);
    }
}

/* ---- the top level ----------------------------------------------------------------- */

static void check_resource_attributes(ctx_t *c, const node_t *resources)
{
    static const char *const policies[] = {"Delete", "Retain", "RetainExceptOnCreate", "Snapshot",
                                           NULL};
    for (size_t i = 0; i < resources->count; i++) {
        const node_t *k = MAP_KEY(resources, i), *r = MAP_VAL(resources, i);
        if (k->kind != RW__TPL_SCALAR || k->dup)
            continue;
        if (!rw__template_get_map(c, r, "resource"))
            continue;
        rw__template_check_keys(c, r, "a resource", resource_keys, resource_unsupported);
        const node_t *ty = rw__template_require(c, r, "Type", "resource");
        if (ty) {
            if (ty->kind != RW__TPL_SCALAR || ty->tag || rw__template_is_null(ty)) {
                rw__template_error(c, ty, "Type: expected a resource type name");
            } else {
                int si = rw__template_sym_find(c, k->str);
                if (si >= 0 && c->syms[si].type == SYM_OTHER)
                    rw__template_error(c, ty, "resource type %.128s is not supported by reelway",
                                       ty->str);
            }
        }
        const node_t *dep = rw__template_map_get(r, "DependsOn");
        if (dep) {
            char **ids;
            size_t n;
            if (rw__template_get_strs(c, dep, "DependsOn", true, &ids, &n))
                for (size_t j = 0; j < n; j++)
                    if (!rw__template_map_get(resources, ids[j]))
                        rw__template_error(c, dep,
                                           "DependsOn: %.64s is not a resource of this "
                                           "template",
                                           ids[j]);
        }
        /* Buckets and APIs read their Metadata.Reelway; the others have none. */
        int si = rw__template_sym_find(c, k->str);
        if (si >= 0 && c->syms[si].key == k && c->syms[si].type != SYM_OTHER &&
            c->syms[si].type != SYM_BUCKET && c->syms[si].type != SYM_REST_API &&
            c->syms[si].type != SYM_HTTP_API) {
            static const char *const none[] = {NULL};
            reelway_metadata(c, &c->syms[si], none);
        }
        const node_t *v;
        if ((v = rw__template_map_get(r, "DeletionPolicy")))
            rw__template_get_enum(c, v, "DeletionPolicy", policies, false);
        if ((v = rw__template_map_get(r, "UpdateReplacePolicy")))
            rw__template_get_enum(c, v, "UpdateReplacePolicy", policies, false);
    }
}

static void check_top(ctx_t *c, const node_t *root)
{
    static const char *const top_keys[] = {"AWSTemplateFormatVersion",
                                           "Transform",
                                           "Description",
                                           "Parameters",
                                           "Globals",
                                           "Resources",
                                           "Outputs",
                                           NULL};
    static const rw__template_unsupported_t top_unsupported[] = {
        {"Conditions", "conditions are not supported"},
        {"Mappings", "mappings are not supported (use Parameters)"},
        {"Rules", "rules are not supported"},
        {"Metadata", "top-level Metadata is not read (reelway's extensions go under a resource's "
                     "Metadata.Reelway)"},
        {"Hooks", "hooks are not supported"},
        {NULL, NULL}};
    rw__template_check_keys(c, root, "the template", top_keys, top_unsupported);
    const node_t *v;
    const char *s;
    if ((v = rw__template_map_get(root, "AWSTemplateFormatVersion")) &&
        rw__template_get_str(c, v, "AWSTemplateFormatVersion", &s) && !streq(s, "2010-09-09"))
        rw__template_error(c, v, "AWSTemplateFormatVersion: '%.32s' is not 2010-09-09", s);
    v = rw__template_map_get(root, "Transform");
    if (!v) {
        rw__template_error_at(c, 1, 1,
                              "Transform: AWS::Serverless-2016-10-31 is required (a "
                              "reelway template is a SAM template)");
    } else {
        char **list;
        size_t n;
        if (rw__template_get_strs(c, v, "Transform", true, &list, &n)) {
            bool sam = false;
            for (size_t i = 0; i < n; i++) {
                if (streq(list[i], "AWS::Serverless-2016-10-31"))
                    sam = true;
                else
                    rw__template_error(c, v, "Transform %.64s is not supported by reelway",
                                       list[i]);
            }
            if (!sam)
                rw__template_error(c, v, "Transform: AWS::Serverless-2016-10-31 is required");
        }
    }
    if ((v = rw__template_map_get(root, "Description")) &&
        rw__template_get_str(c, v, "Description", &s))
        c->tpl->description = rw__template_keep(c, s);
}

static int cmp_diag(const void *a, const void *b)
{
    const rw_diag_t *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    if (x->col != y->col)
        return x->col < y->col ? -1 : 1;
    return strcmp(x->message, y->message);
}

/* Sorts this load's diagnostics by position (repeats were dropped as they came). */
static void tidy_diags(rw_diag_list_t *d, size_t from)
{
    size_t n = d->count - from;
    if (n < 2)
        return;
    qsort(d->items + from, n, sizeof *d->items, cmp_diag);
    size_t w = from + 1;
    for (size_t r = from + 1; r < d->count; r++) {
        if (cmp_diag(&d->items[r], &d->items[w - 1]) == 0) {
            free(d->items[r].message);
            continue;
        }
        d->items[w++] = d->items[r];
    }
    d->count = w;
}

static void load_all(ctx_t *c, const char *data, size_t len)
{
    const node_t *root = rw__template_parse_yaml(c, data, len);
    if (!root)
        return;
    if (!rw__template_get_map(c, root, "the template"))
        return;
    c->root = root;
    check_top(c, root);
    load_parameters(c, rw__template_map_get(root, "Parameters"));
    find_globals(c, rw__template_map_get(root, "Globals"));
    const node_t *resources = rw__template_map_get(root, "Resources");
    if (!resources) {
        rw__template_error_at(c, 1, 1, "Resources is required");
        return;
    }
    if (!rw__template_get_map(c, resources, "Resources"))
        return;
    if (resources->count == 0)
        rw__template_error(c, rw__template_where(resources),
                           "Resources: at least one resource is "
                           "required");
    declare_resources(c, resources);
    rw__template_declare_apis(c);
    check_resource_attributes(c, resources);
    check_globals(c, rw__template_map_get(root, "Globals"));

    /* Queues first (functions and subscriptions point at them), then buckets,
     * functions, APIs (their authorizers point at functions), then the
     * functions' events (they point at APIs and authorizers). Each pass goes
     * in file order, so the model's routes and events are in file order. */
    const rw__template_sym_t **order =
        resources->count ? rw__template_alloc(c->scratch, resources->count * sizeof *order) : NULL;
    size_t norder = 0;
    for (size_t i = 0; i < resources->count; i++) {
        const node_t *k = MAP_KEY(resources, i);
        int si = k->kind == RW__TPL_SCALAR ? rw__template_sym_find(c, k->str) : -1;
        if (si >= 0 && c->syms[si].key == k)
            order[norder++] = &c->syms[si];
    }
    for (size_t i = 0; i < norder; i++)
        if (order[i]->type == SYM_QUEUE)
            load_queue(c, order[i]);
    for (size_t i = 0; i < norder; i++)
        if (order[i]->type == SYM_BUCKET)
            load_bucket(c, order[i]);
    for (size_t i = 0; i < norder; i++)
        if (order[i]->type == SYM_FUNCTION)
            load_function(c, order[i]);
    rw__template_load_apis(c);
    for (size_t i = 0; i < norder; i++)
        if (order[i]->type == SYM_FUNCTION)
            load_function_events(c, order[i]);
    rw__template_check_routes(c);
    rw__template_check_events(c);
    rw__template_load_usage_plans(c);
    for (size_t i = 0; i < norder; i++)
        if (order[i]->type == SYM_API_KEY)
            load_api_key(c, order[i]);
    for (size_t i = 0; i < norder; i++)
        if (order[i]->type == SYM_USAGE_PLAN_KEY)
            load_usage_plan_key(c, order[i]);
    const node_t *outputs = rw__template_map_get(root, "Outputs");
    if (outputs)
        load_outputs(c, outputs);
}

static const char *param_or(const char *v, const char *dflt)
{
    return v && *v ? v : dflt;
}

int rw_template_load_buffer(const char *data, size_t len, const char *name, const char *base_dir,
                            const rw_template_params_t *params, rw_template_t **out,
                            rw_diag_list_t *diags)
{
    *out = NULL;
    if (len > RW_TEMPLATE_MAX_BYTES)
        return RW_ELIMIT;
    ctx_t *c = calloc(1, sizeof *c);
    if (!c)
        return UV_ENOMEM;
    size_t first_diag = diags->count;
    bool truncated_before = diags->truncated;
    int rc = 0;
    c->diags = diags;
    c->first_diag = first_diag;
    c->params = params;
    c->shared_usage_plan = -1;
    c->scratch = rw__template_arena_new(&c->oom);
    c->arena = rw__template_arena_new(&c->oom);
    if (!c->scratch || !c->arena) {
        rc = UV_ENOMEM;
        goto out;
    }
    switch (setjmp(c->oom)) {
    case 0:
        break;
    case RW_ELIMIT:
        rc = RW_ELIMIT;
        break;
    default:
        rc = UV_ENOMEM;
        break;
    }
    if (rc) {
        /* An allocation failed (or the arena's cap was hit) deep in the
         * loader: everything lives in the two arenas, so dropping them is
         * the whole cleanup, plus libyaml's state if it was live. */
        rw__template_yaml_cleanup(c);
        goto out;
    }
    rw_template_t *t = rw__template_alloc(c->arena, sizeof *t);
    c->tpl = t;
    t->arena = c->arena;
    t->path = rw__template_strdup(c->arena, name ? name : "template.yaml");
    char real[PATH_MAX];
    const char *dir = base_dir;
    if (!dir || !*dir)
        dir = getcwd(real, sizeof real) ? real : ".";
    else if (realpath(dir, real))
        dir = real;
    t->dir = rw__template_strdup(c->arena, dir);
    t->region =
        rw__template_strdup(c->arena, param_or(params ? params->region : NULL, "us-east-1"));
    t->account_id =
        rw__template_strdup(c->arena, param_or(params ? params->account_id : NULL, "000000000000"));
    t->stack_name =
        rw__template_strdup(c->arena, param_or(params ? params->stack_name : NULL, "reelway"));
    t->endpoint = rw__template_strdup(
        c->arena, param_or(params ? params->endpoint : NULL, "http://127.0.0.1:3000"));
    size_t l = strlen(t->endpoint);
    while (l > 0 && t->endpoint[l - 1] == '/')
        t->endpoint[--l] = '\0';

    char *copy = rw__template_strndup(c->scratch, data ? data : "", data ? len : 0);
    load_all(c, copy, data ? len : 0);

    tidy_diags(diags, first_diag);
    if (diags->count > first_diag || (diags->truncated && !truncated_before)) {
        rc = RW_ECONFIG;
        goto out;
    }
    *out = t;
    c->arena = NULL; /* now owned by the model */
out:
    if (rc && rc != RW_ECONFIG)
        tidy_diags(diags, first_diag);
    rw__template_arena_free(c->scratch);
    rw__template_arena_free(c->arena);
    free(c);
    return rc;
}

static int read_file(const char *path, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    int rc = 0;
    size_t cap = 0;
    char *buf = NULL;
    for (;;) {
        if (*len == cap) {
            if (cap > RW_TEMPLATE_MAX_BYTES) {
                rc = RW_ELIMIT;
                goto out;
            }
            cap = cap ? cap * 2 : 16384;
            char *fresh = realloc(buf, cap);
            if (!fresh) {
                rc = UV_ENOMEM;
                goto out;
            }
            buf = fresh;
        }
        size_t n = fread(buf + *len, 1, cap - *len, f);
        *len += n;
        if (n == 0) {
            if (ferror(f))
                rc = -EIO;
            break;
        }
    }
    if (*len > RW_TEMPLATE_MAX_BYTES)
        rc = RW_ELIMIT;
out:
    fclose(f);
    if (rc) {
        free(buf);
        *len = 0;
        return rc;
    }
    *data = buf;
    return 0;
}

int rw_template_load(const char *path, const rw_template_params_t *params, rw_template_t **out,
                     rw_diag_list_t *diags)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return -errno;
    if (S_ISDIR(st.st_mode))
        return UV_EISDIR;
    char *data;
    size_t len;
    int rc = read_file(path, &data, &len);
    if (rc)
        return rc;
    char real[PATH_MAX];
    char *dir = NULL;
    if (realpath(path, real)) {
        char *slash = strrchr(real, '/');
        if (slash == real)
            slash[1] = '\0';
        else if (slash)
            *slash = '\0';
        dir = real;
    }
    rc = rw_template_load_buffer(data, len, path, dir, params, out, diags);
    free(data);
    return rc;
}

void rw_template_free(rw_template_t *tpl)
{
    if (tpl)
        rw__template_arena_free(tpl->arena);
}

int rw_template_validate_file(const char *path, FILE *out)
{
    rw_diag_list_t diags;
    rw_diag_list_init(&diags);
    rw_template_t *tpl = NULL;
    int rc = rw_template_load(path, NULL, &tpl, &diags);
    rw_template_free(tpl);
    if (rc == 0 || rc == RW_ECONFIG) {
        rw_diag_list_print(&diags, path, out);
        int n = (int)diags.count + (diags.truncated ? 1 : 0);
        rw_diag_list_free(&diags);
        return n;
    }
    if (rc == RW_ELIMIT)
        fprintf(out,
                "%s: error: the template is too large: over %d bytes, or it expands past the "
                "loader's memory limit\n",
                path, RW_TEMPLATE_MAX_BYTES);
    else
        fprintf(out, "%s: error: cannot read the template: %s\n", path, rw_strerror(rc));
    rw_diag_list_free(&diags);
    return rc;
}

int rw_template_find_function(const rw_template_t *tpl, const char *name)
{
    for (size_t i = 0; i < tpl->function_count; i++)
        if (streq(tpl->functions[i].name, name))
            return (int)i;
    return -1;
}

int rw_template_find_api(const rw_template_t *tpl, const char *name)
{
    for (size_t i = 0; i < tpl->api_count; i++)
        if (streq(tpl->apis[i].name, name))
            return (int)i;
    return -1;
}

int rw_template_find_queue(const rw_template_t *tpl, const char *name)
{
    for (size_t i = 0; i < tpl->queue_count; i++)
        if (streq(tpl->queues[i].name, name))
            return (int)i;
    return -1;
}

int rw_template_find_bucket(const rw_template_t *tpl, const char *name)
{
    for (size_t i = 0; i < tpl->bucket_count; i++)
        if (streq(tpl->buckets[i].name, name))
            return (int)i;
    return -1;
}

const rw_tpl_param_t *rw_template_find_param(const rw_template_t *tpl, const char *name)
{
    for (size_t i = 0; i < tpl->param_count; i++)
        if (streq(tpl->params[i].name, name))
            return &tpl->params[i];
    return NULL;
}

const rw_tpl_output_t *rw_template_find_output(const rw_template_t *tpl, const char *name)
{
    for (size_t i = 0; i < tpl->output_count; i++)
        if (streq(tpl->outputs[i].name, name))
            return &tpl->outputs[i];
    return NULL;
}
