/* Values in a template: the intrinsic functions reelway evaluates (!Ref, !Sub,
 * !GetAtt and their long forms), the typed getters that say exactly what is
 * wrong with a value, SAM's Globals merge, and references between resources. */
#include "template_internal.h"

#include "reelway/error.h"

#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A resolved string longer than this is an error (it would be an environment
 * variable, a header or a URL); it also stops !Sub expansion bombs. */
#define MAX_VALUE 65536

static bool streq(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

/* ---- symbols --------------------------------------------------------------- */

int rw__template_sym_find(const ctx_t *c, const char *id)
{
    size_t lo = 0, hi = c->sym_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = strcmp(id, c->syms[mid].id);
        if (d == 0)
            return (int)mid;
        if (d < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return -1;
}

const char *rw__template_sym_type_name(rw__template_sym_type_t type)
{
    switch (type) {
    case SYM_FUNCTION:
        return "AWS::Serverless::Function";
    case SYM_REST_API:
        return "AWS::Serverless::Api";
    case SYM_HTTP_API:
        return "AWS::Serverless::HttpApi";
    case SYM_BUCKET:
        return "AWS::S3::Bucket";
    case SYM_QUEUE:
        return "AWS::SQS::Queue";
    case SYM_API_KEY:
        return "AWS::ApiGateway::ApiKey";
    case SYM_USAGE_PLAN:
        return "AWS::ApiGateway::UsagePlan";
    case SYM_USAGE_PLAN_KEY:
        return "AWS::ApiGateway::UsagePlanKey";
    case SYM_OTHER:
        break;
    }
    return "unsupported resource";
}

static rw_tpl_param_t *find_param(const ctx_t *c, const char *name)
{
    size_t lo = 0, hi = c->params_sorted_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int d = strcmp(name, c->params_sorted[mid]->name);
        if (d == 0)
            return c->params_sorted[mid];
        if (d < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- intrinsics -------------------------------------------------------------- */

bool rw__template_is_intrinsic(const node_t *n)
{
    if (n->tag)
        return true;
    if (n->kind != RW__TPL_MAP || n->count != 1)
        return false;
    const node_t *k = MAP_KEY(n, 0);
    return k->kind == RW__TPL_SCALAR && (streq(k->str, "Ref") || strncmp(k->str, "Fn::", 4) == 0);
}

static const char *pseudo(ctx_t *c, const char *name)
{
    rw_template_t *t = c->tpl;
    if (streq(name, "AWS::Region"))
        return t->region;
    if (streq(name, "AWS::AccountId"))
        return t->account_id;
    if (streq(name, "AWS::StackName"))
        return t->stack_name;
    if (streq(name, "AWS::Partition"))
        return "aws";
    if (streq(name, "AWS::URLSuffix"))
        return "amazonaws.com";
    if (streq(name, "AWS::StackId"))
        return rw__template_printf(c->scratch,
                                   "arn:aws:cloudformation:%s:%s:stack/%s/"
                                   "00000000-0000-0000-0000-000000000000",
                                   t->region, t->account_id, t->stack_name);
    return NULL;
}

/* What Ref of a resource gives, as CloudFormation documents it per type. */
static const char *ref_string(ctx_t *c, const rw__template_sym_t *s)
{
    rw_template_t *t = c->tpl;
    switch (s->type) {
    case SYM_BUCKET:
        return t->buckets[s->index].bucket_name;
    case SYM_QUEUE:
        return t->queues[s->index].url;
    default:
        return s->id; /* functions: the name; APIs, keys, plans: their id */
    }
}

/* What GetAtt gives, or NULL for an attribute reelway does not have. */
static const char *getatt_string(ctx_t *c, const rw__template_sym_t *s, const char *attr,
                                 const char **supported)
{
    rw_template_t *t = c->tpl;
    switch (s->type) {
    case SYM_FUNCTION:
        *supported = "Arn";
        return streq(attr, "Arn") ? t->functions[s->index].arn : NULL;
    case SYM_QUEUE:
        *supported = "Arn, QueueName, QueueUrl";
        if (streq(attr, "Arn"))
            return t->queues[s->index].arn;
        if (streq(attr, "QueueName"))
            return t->queues[s->index].queue_name;
        if (streq(attr, "QueueUrl"))
            return t->queues[s->index].url;
        return NULL;
    case SYM_BUCKET:
        *supported = "Arn";
        return streq(attr, "Arn") ? t->buckets[s->index].arn : NULL;
    case SYM_HTTP_API:
        *supported = "ApiEndpoint";
        return streq(attr, "ApiEndpoint") ? t->apis[s->index].endpoint : NULL;
    case SYM_API_KEY:
        *supported = "APIKeyId";
        return streq(attr, "APIKeyId") ? s->id : NULL;
    case SYM_USAGE_PLAN:
        *supported = "Id";
        return streq(attr, "Id") ? s->id : NULL;
    default:
        *supported = "none";
        return NULL;
    }
}

/* Resolves a name as Ref does: a parameter, a pseudo parameter, a resource,
 * or SAM's API.Stage. Reports problems at n. */
static bool resolve_name(ctx_t *c, const node_t *n, const char *what, const char *name, val_t *out)
{
    const char *p = pseudo(c, name);
    if (p) {
        out->str = p;
        return true;
    }
    if (strncmp(name, "AWS::", 5) == 0) {
        rw__template_error(c, n, "%s: pseudo parameter %.64s is not supported by reelway", what,
                           name);
        return false;
    }
    rw_tpl_param_t *param = find_param(c, name);
    if (param) {
        if (!param->value)
            return false; /* the parameter's own problem was reported */
        out->str = param->value;
        return true;
    }
    int si = rw__template_sym_find(c, name);
    const char *dot = strchr(name, '.');
    if (si < 0 && dot) {
        /* SAM: Ref MyApi.Stage is the stage name of MyApi. */
        char *id = rw__template_strndup(c->scratch, name, (size_t)(dot - name));
        si = rw__template_sym_find(c, id);
        if (si >= 0 && streq(dot + 1, "Stage") &&
            (c->syms[si].type == SYM_REST_API || c->syms[si].type == SYM_HTTP_API)) {
            if (c->no_resources) {
                rw__template_error(c, n, "%s cannot refer to a resource", what);
                return false;
            }
            out->str = c->tpl->apis[c->syms[si].index].stage;
            return out->str != NULL;
        }
        if (si >= 0 && c->syms[si].type == SYM_OTHER)
            return false;
        rw__template_error(c, n, "%s: Ref %.128s is not supported (only API.Stage is)", what, name);
        return false;
    }
    if (si < 0) {
        rw__template_error(c, n, "%s: '%.128s' is not a parameter or a resource of this template",
                           what, name);
        return false;
    }
    const rw__template_sym_t *s = &c->syms[si];
    if (s->type == SYM_OTHER)
        return false;
    if (c->no_resources) {
        rw__template_error(c, n, "%s cannot refer to a resource", what);
        return false;
    }
    out->str = ref_string(c, s);
    out->sym = si;
    return true;
}

static bool resolve_getatt(ctx_t *c, const node_t *n, const char *what, const char *id,
                           const char *attr, val_t *out)
{
    int si = rw__template_sym_find(c, id);
    if (si < 0) {
        rw__template_error(c, n, "%s: GetAtt of '%.128s', which is not a resource of this template",
                           what, id);
        return false;
    }
    const rw__template_sym_t *s = &c->syms[si];
    if (s->type == SYM_OTHER)
        return false;
    if (c->no_resources) {
        rw__template_error(c, n, "%s cannot refer to a resource", what);
        return false;
    }
    const char *supported = "none";
    const char *v = getatt_string(c, s, attr, &supported);
    if (!v) {
        rw__template_error(c, n, "%s: %s has no attribute '%.64s' in reelway (supported: %s)", what,
                           rw__template_sym_type_name(s->type), attr, supported);
        return false;
    }
    out->str = v;
    out->sym = si;
    out->attr = attr;
    return true;
}

static bool plain_name(ctx_t *c, const node_t *arg, const char *fn, const char *what)
{
    if (arg->kind != RW__TPL_SCALAR || rw__template_is_intrinsic(arg) ||
        rw__template_is_null(arg)) {
        rw__template_error(c, arg, "%s: %s takes a name, not %s", what, fn,
                           arg->kind == RW__TPL_SCALAR ? "a function or null"
                                                       : rw__template_kind_name(arg));
        return false;
    }
    return true;
}

static bool eval_ref(ctx_t *c, const node_t *arg, const char *what, val_t *out)
{
    if (!plain_name(c, arg, "Ref", what))
        return false;
    return resolve_name(c, arg, what, arg->str, out);
}

static bool eval_getatt(ctx_t *c, const node_t *arg, const char *what, val_t *out)
{
    if (arg->kind == RW__TPL_SEQ && !arg->tag) {
        if (arg->count != 2) {
            rw__template_error(c, arg, "%s: GetAtt takes [Resource, Attribute]", what);
            return false;
        }
        if (!plain_name(c, arg->kids[0], "GetAtt", what) ||
            !plain_name(c, arg->kids[1], "GetAtt", what))
            return false;
        return resolve_getatt(c, arg, what, arg->kids[0]->str, arg->kids[1]->str, out);
    }
    if (!plain_name(c, arg, "GetAtt", what))
        return false;
    const char *dot = strchr(arg->str, '.');
    if (!dot || dot == arg->str || !dot[1]) {
        rw__template_error(c, arg, "%s: GetAtt takes Resource.Attribute, not '%.128s'", what,
                           arg->str);
        return false;
    }
    char *id = rw__template_strndup(c->scratch, arg->str, (size_t)(dot - arg->str));
    return resolve_getatt(c, arg, what, id, dot + 1, out);
}

typedef struct strbuf_s {
    char *p;
    size_t len, cap;
} strbuf_t;

static bool sb_add(ctx_t *c, strbuf_t *b, const char *s, size_t n)
{
    if (b->len + n > MAX_VALUE)
        return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *fresh = rw__template_alloc(c->scratch, cap);
        if (b->len)
            memcpy(fresh, b->p, b->len);
        b->p = fresh;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return true;
}

static bool eval_sub(ctx_t *c, const node_t *arg, const char *what, val_t *out)
{
    const node_t *str = arg, *vars = NULL;
    if (arg->kind == RW__TPL_SEQ && !arg->tag) {
        if (arg->count != 2) {
            rw__template_error(c, arg, "%s: Sub takes a string or [string, {variables}]", what);
            return false;
        }
        str = arg->kids[0];
        vars = arg->kids[1];
        if (vars->kind != RW__TPL_MAP || rw__template_is_intrinsic(vars)) {
            rw__template_error(c, vars, "%s: the variables of Sub must be a map", what);
            return false;
        }
    }
    if (str->kind != RW__TPL_SCALAR || rw__template_is_intrinsic(str)) {
        rw__template_error(c, str, "%s: Sub takes a literal string, not %s", what,
                           str->kind == RW__TPL_SCALAR ? "a function"
                                                       : rw__template_kind_name(str));
        return false;
    }
    strbuf_t b = {0};
    bool ok = true;
    int single_sym = -1;
    const char *single_attr = NULL;
    int vars_used = 0;
    const char *s = str->str;
    size_t lit = 0;
    sb_add(c, &b, "", 0);
    for (size_t i = 0; s[i];) {
        if (s[i] != '$' || s[i + 1] != '{') {
            i++;
            continue;
        }
        if (!sb_add(c, &b, s + lit, i - lit))
            goto too_long;
        const char *close = strchr(s + i + 2, '}');
        if (!close) {
            rw__template_error(c, str, "%s: Sub: '${' at offset %zu is never closed", what, i);
            return false;
        }
        const char *name = s + i + 2;
        size_t nlen = (size_t)(close - name);
        i = (size_t)(close - s) + 1;
        lit = i;
        if (nlen > 0 && name[0] == '!') {
            /* ${!Literal} writes ${Literal}. */
            if (!sb_add(c, &b, "${", 2) || !sb_add(c, &b, name + 1, nlen - 1) ||
                !sb_add(c, &b, "}", 1))
                goto too_long;
            vars_used += 2;
            continue;
        }
        if (nlen == 0) {
            rw__template_error(c, str, "%s: Sub: empty ${}", what);
            ok = false;
            continue;
        }
        char *var = rw__template_strndup(c->scratch, name, nlen);
        val_t v = {.sym = -1};
        const node_t *mapped = vars ? rw__template_map_get(vars, var) : NULL;
        bool got;
        if (mapped) {
            got = rw__template_eval(c, mapped, what, &v);
            if (got && (!v.str || v.is_null)) {
                rw__template_error(c, mapped, "%s: Sub variable %.64s must be a string", what, var);
                got = false;
            }
        } else if (!strstr(var, "::") && strchr(var, '.') && !find_param(c, var) &&
                   rw__template_sym_find(c, var) < 0) {
            const char *dot = strchr(var, '.');
            char *id = rw__template_strndup(c->scratch, var, (size_t)(dot - var));
            int si = rw__template_sym_find(c, id);
            if (si >= 0 && streq(dot + 1, "Stage"))
                got = resolve_name(c, str, what, var, &v);
            else
                got = resolve_getatt(c, str, what, id, dot + 1, &v);
        } else {
            got = resolve_name(c, str, what, var, &v);
        }
        vars_used++;
        if (!got) {
            ok = false;
            continue;
        }
        single_sym = v.sym;
        single_attr = v.attr;
        if (!sb_add(c, &b, v.str, strlen(v.str)))
            goto too_long;
    }
    if (!sb_add(c, &b, s + lit, strlen(s + lit)))
        goto too_long;
    if (!ok)
        return false;
    out->str = b.p;
    /* "${Fn.Arn}" alone still names the resource. */
    if (vars_used == 1 && single_sym >= 0 && s[0] == '$' && s[strlen(s) - 1] == '}' &&
        strchr(s + 1, '$') == NULL) {
        out->sym = single_sym;
        out->attr = single_attr;
    }
    return true;
too_long:
    rw__template_error(c, str, "%s: Sub: the result is longer than %d bytes", what, MAX_VALUE);
    return false;
}

bool rw__template_eval(ctx_t *c, const node_t *n, const char *what, val_t *out)
{
    memset(out, 0, sizeof *out);
    out->sym = -1;
    out->node = n;
    const char *fn = NULL;
    const node_t *arg = n;
    if (n->tag) {
        fn = n->tag + 1;
        /* The argument of a short form is the node itself, without its tag. */
        node_t *bare = rw__template_alloc(c->scratch, sizeof *bare);
        *bare = *n;
        bare->tag = NULL;
        arg = bare;
    } else if (rw__template_is_intrinsic(n)) {
        fn = MAP_KEY(n, 0)->str;
        arg = MAP_VAL(n, 0);
        if (strncmp(fn, "Fn::", 4) == 0)
            fn += 4;
        if (!streq(fn, "Ref") && !streq(fn, "Sub") && !streq(fn, "GetAtt")) {
            rw__template_error(c, n,
                               "Fn::%.32s is not supported by reelway: the intrinsic functions "
                               "are Ref, Fn::Sub and Fn::GetAtt",
                               fn);
            return false;
        }
        if (streq(MAP_KEY(n, 0)->str, "Fn::Ref")) {
            rw__template_error(c, n, "unknown intrinsic function Fn::Ref (use Ref)");
            return false;
        }
    }
    if (!fn) {
        if (n->kind == RW__TPL_SCALAR) {
            out->str = n->str;
            out->is_null = rw__template_is_null(n);
        }
        return true;
    }
    if (streq(fn, "Ref"))
        return eval_ref(c, arg, what, out);
    if (streq(fn, "Sub"))
        return eval_sub(c, arg, what, out);
    if (streq(fn, "GetAtt"))
        return eval_getatt(c, arg, what, out);
    /* An unsupported short form: reported when the tree was built; say it
     * again here so the message also stands where the value is used (the
     * list of diagnostics drops exact repeats). */
    rw__template_error(c, n,
                       "%s is not supported by reelway: the intrinsic functions are "
                       "!Ref, !Sub and !GetAtt",
                       n->tag);
    return false;
}

/* ---- typed getters ------------------------------------------------------------ */

static const char *got_what(ctx_t *c, const val_t *v)
{
    if (!v->str)
        return v->node->kind == RW__TPL_MAP ? "a map" : "a list";
    if (v->is_null)
        return "null";
    return rw__template_printf(c->scratch, "\"%.40s%s\"", v->str, strlen(v->str) > 40 ? "..." : "");
}

bool rw__template_get_str(ctx_t *c, const node_t *n, const char *what, const char **out)
{
    val_t v;
    if (!rw__template_eval(c, n, what, &v))
        return false;
    if (!v.str || v.is_null) {
        rw__template_error(c, n, "%s: expected a string, got %s", what, got_what(c, &v));
        return false;
    }
    *out = v.str;
    return true;
}

static bool parse_long(const char *s, long *out)
{
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    if (!*p)
        return false;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return false;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

bool rw__template_get_int(ctx_t *c, const node_t *n, const char *what, long min, long max,
                          long *out)
{
    val_t v;
    if (!rw__template_eval(c, n, what, &v))
        return false;
    long x;
    if (!v.str || v.is_null || !parse_long(v.str, &x)) {
        rw__template_error(c, n, "%s: expected an integer, got %s", what, got_what(c, &v));
        return false;
    }
    if (x < min || x > max) {
        rw__template_error(c, n, "%s: %ld is out of range (%ld..%ld)", what, x, min, max);
        return false;
    }
    *out = x;
    return true;
}

static bool parse_double(const char *s, double *out)
{
    if (!*s || strspn(s, "+-0123456789.eE") != strlen(s))
        return false;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

bool rw__template_get_double(ctx_t *c, const node_t *n, const char *what, double min, double max,
                             double *out)
{
    val_t v;
    if (!rw__template_eval(c, n, what, &v))
        return false;
    double x;
    if (!v.str || v.is_null || !parse_double(v.str, &x)) {
        rw__template_error(c, n, "%s: expected a number, got %s", what, got_what(c, &v));
        return false;
    }
    if (x < min || x > max) {
        rw__template_error(c, n, "%s: %g is out of range (%g..%g)", what, x, min, max);
        return false;
    }
    *out = x;
    return true;
}

bool rw__template_get_bool(ctx_t *c, const node_t *n, const char *what, bool *out)
{
    val_t v;
    if (!rw__template_eval(c, n, what, &v))
        return false;
    if (v.str && !v.is_null) {
        if (streq(v.str, "true") || streq(v.str, "True") || streq(v.str, "TRUE")) {
            *out = true;
            return true;
        }
        if (streq(v.str, "false") || streq(v.str, "False") || streq(v.str, "FALSE")) {
            *out = false;
            return true;
        }
    }
    rw__template_error(c, n, "%s: expected true or false, got %s", what, got_what(c, &v));
    return false;
}

bool rw__template_get_strs(ctx_t *c, const node_t *n, const char *what, bool one_ok, char ***out,
                           size_t *count)
{
    *out = NULL;
    *count = 0;
    if (n->kind != RW__TPL_SEQ || n->tag) {
        if (one_ok && (n->kind == RW__TPL_SCALAR || rw__template_is_intrinsic(n))) {
            const char *s;
            if (!rw__template_get_str(c, n, what, &s))
                return false;
            *RW_TPL_PUSH(c->arena, *out, *count) = rw__template_keep(c, s);
            return true;
        }
        if (n->tag || rw__template_is_intrinsic(n))
            rw__template_error(c, n,
                               "%s: expected a list of strings, not a function that gives "
                               "one string",
                               what);
        else
            rw__template_error(c, n, "%s: expected a list of strings, got %s", what,
                               rw__template_is_null(n)  ? "null"
                               : n->kind == RW__TPL_MAP ? "a map"
                                                        : "a string");
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < n->count; i++) {
        const char *s;
        if (!rw__template_get_str(c, n->kids[i], what, &s)) {
            ok = false;
            continue;
        }
        *RW_TPL_PUSH(c->arena, *out, *count) = rw__template_keep(c, s);
    }
    return ok;
}

bool rw__template_get_map(ctx_t *c, const node_t *n, const char *what)
{
    if (rw__template_is_intrinsic(n)) {
        rw__template_error(c, n, "%s: expected a map, not an intrinsic function", what);
        return false;
    }
    if (n->kind != RW__TPL_MAP) {
        rw__template_error(c, n, "%s: expected a map, got %s", what,
                           rw__template_is_null(n)  ? "null"
                           : n->kind == RW__TPL_SEQ ? "a list"
                                                    : "a string");
        return false;
    }
    return true;
}

int rw__template_get_enum(ctx_t *c, const node_t *n, const char *what, const char *const *choices,
                          bool nocase)
{
    const char *s;
    if (!rw__template_get_str(c, n, what, &s))
        return -1;
    for (int i = 0; choices[i]; i++)
        if (nocase ? strcasecmp(s, choices[i]) == 0 : streq(s, choices[i]))
            return i;
    strbuf_t b = {0};
    for (int i = 0; choices[i]; i++) {
        if (i)
            sb_add(c, &b, ", ", 2);
        sb_add(c, &b, choices[i], strlen(choices[i]));
    }
    rw__template_error(c, n, "%s: '%.64s' is not one of: %s", what, s, b.p ? b.p : "");
    return -1;
}

char *rw__template_keep(ctx_t *c, const char *s)
{
    return rw__template_strdup(c->arena, s);
}

void rw__template_check_keys(ctx_t *c, const node_t *m, const char *where,
                             const char *const *allowed,
                             const rw__template_unsupported_t *unsupported)
{
    if (!m || m->kind != RW__TPL_MAP)
        return;
    for (size_t i = 0; i < m->count; i++) {
        const node_t *k = MAP_KEY(m, i);
        if (k->kind != RW__TPL_SCALAR || k->tag || (!k->quoted && streq(k->str, "<<")))
            continue; /* reported when the tree was built */
        bool known = false;
        for (size_t j = 0; allowed && allowed[j] && !known; j++)
            known = streq(k->str, allowed[j]);
        if (known)
            continue;
        const char *reason = NULL;
        for (size_t j = 0; unsupported && unsupported[j].key && !reason; j++)
            if (streq(k->str, unsupported[j].key))
                reason = unsupported[j].reason;
        if (reason)
            rw__template_error(c, k, "'%s' is not supported by reelway: %s", k->str, reason);
        else
            rw__template_error(c, k, "unknown property '%.128s' in %s", k->str, where);
    }
}

const node_t *rw__template_require(ctx_t *c, const node_t *m, const char *key, const char *where)
{
    const node_t *v = rw__template_map_get(m, key);
    if (!v)
        rw__template_error(c, rw__template_where(m), "%s: %s is required", where, key);
    return v;
}

/* ---- Globals merge --------------------------------------------------------------- */

static bool in_list(const char *const *list, const char *s)
{
    for (size_t i = 0; list[i]; i++)
        if (streq(list[i], s))
            return true;
    return false;
}

static const node_t *merge_value(ctx_t *c, const node_t *g, const node_t *l, int depth);

static const node_t *merge_maps(ctx_t *c, const node_t *g, const node_t *l,
                                const char *const *allowed, int depth)
{
    node_t *m = rw__template_alloc(c->scratch, sizeof *m);
    *m = *l;
    m->kids = NULL;
    m->count = 0;
    m->index = NULL; /* looked up linearly: only the keys reelway knows */
    m->index_count = 0;
    size_t nkids = 0;
    /* SAM copies the globals, then lays the resource's keys over them. */
    for (size_t i = 0; g && i < g->count; i++) {
        const node_t *k = MAP_KEY(g, i);
        if (k->kind != RW__TPL_SCALAR || k->dup || (allowed && !in_list(allowed, k->str)))
            continue;
        const node_t *lv = rw__template_map_get(l, k->str);
        const node_t *v = lv ? merge_value(c, MAP_VAL(g, i), lv, depth + 1) : MAP_VAL(g, i);
        *RW_TPL_PUSH(c->scratch, m->kids, nkids) = (node_t *)(lv ? rw__template_where(lv) : k);
        *RW_TPL_PUSH(c->scratch, m->kids, nkids) = (node_t *)v;
    }
    for (size_t i = 0; i < l->count; i++) {
        const node_t *k = MAP_KEY(l, i);
        if (k->dup)
            continue; /* reported; the first of its name stands */
        if (k->kind == RW__TPL_SCALAR && g && rw__template_map_get(g, k->str) &&
            (!allowed || in_list(allowed, k->str)))
            continue;
        *RW_TPL_PUSH(c->scratch, m->kids, nkids) = (node_t *)k;
        *RW_TPL_PUSH(c->scratch, m->kids, nkids) = MAP_VAL(l, i);
    }
    m->count = nkids / 2;
    return m;
}

static const node_t *merge_value(ctx_t *c, const node_t *g, const node_t *l, int depth)
{
    if (depth > 64 || rw__template_is_intrinsic(g) || rw__template_is_intrinsic(l) ||
        g->kind != l->kind || g->kind == RW__TPL_SCALAR)
        return l;
    if (g->kind == RW__TPL_MAP)
        return merge_maps(c, g, l, NULL, depth);
    node_t *s = rw__template_alloc(c->scratch, sizeof *s);
    *s = *l;
    s->kids = NULL;
    s->count = 0;
    for (size_t i = 0; i < g->count; i++)
        *RW_TPL_PUSH(c->scratch, s->kids, s->count) = g->kids[i];
    for (size_t i = 0; i < l->count; i++)
        *RW_TPL_PUSH(c->scratch, s->kids, s->count) = l->kids[i];
    return s;
}

const node_t *rw__template_merge(ctx_t *c, const node_t *globals, const node_t *local,
                                 const char *const *allowed)
{
    if (!globals || globals->kind != RW__TPL_MAP || rw__template_is_intrinsic(globals))
        return local;
    if (!local) {
        static const node_t empty = {.kind = RW__TPL_MAP};
        return merge_maps(c, globals, &empty, allowed, 0);
    }
    if (local->kind != RW__TPL_MAP || rw__template_is_intrinsic(local))
        return local;
    return merge_maps(c, globals, local, allowed, 0);
}

/* ---- references between resources ------------------------------------------------ */

int rw__template_function_from_arn(ctx_t *c, const char *s)
{
    /* arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER], possibly inside
     * arn:aws:apigateway:REGION:lambda:path/2015-03-31/functions/ARN/invocations */
    const char *p = strstr(s, ":function:");
    if (!p || !strstr(s, "arn:aws:lambda:"))
        return -1;
    p += strlen(":function:");
    size_t n = strcspn(p, ":/");
    char *name = rw__template_strndup(c->scratch, p, n);
    int si = rw__template_sym_find(c, name);
    if (si < 0 || c->syms[si].type != SYM_FUNCTION)
        return -1;
    return c->syms[si].index;
}

static int find_by_name(ctx_t *c, rw__template_sym_type_t want, const char *s)
{
    rw_template_t *t = c->tpl;
    if (want == SYM_FUNCTION)
        return rw__template_function_from_arn(c, s);
    if (want == SYM_QUEUE) {
        for (size_t i = 0; i < t->queue_count; i++)
            if (t->queues[i].arn && (streq(s, t->queues[i].arn) || streq(s, t->queues[i].url)))
                return (int)i;
    }
    if (want == SYM_BUCKET) {
        for (size_t i = 0; i < t->bucket_count; i++)
            if (t->buckets[i].bucket_name &&
                (streq(s, t->buckets[i].bucket_name) || streq(s, t->buckets[i].arn)))
                return (int)i;
    }
    return -1;
}

int rw__template_resolve_ref(ctx_t *c, const node_t *n, const char *what,
                             rw__template_sym_type_t want)
{
    val_t v;
    if (!rw__template_eval(c, n, what, &v))
        return -1;
    if (v.sym >= 0) {
        const rw__template_sym_t *s = &c->syms[v.sym];
        if (s->type == want)
            return s->index;
        rw__template_error(c, n, "%s must refer to an %s, but %s is an %s", what,
                           rw__template_sym_type_name(want), s->id,
                           rw__template_sym_type_name(s->type));
        return -1;
    }
    if (!v.str || v.is_null) {
        rw__template_error(c, n, "%s: expected a reference to an %s, got %s", what,
                           rw__template_sym_type_name(want), got_what(c, &v));
        return -1;
    }
    int idx = find_by_name(c, want, v.str);
    if (idx < 0)
        rw__template_error(c, n, "%s: '%.128s' is not an %s of this template", what, v.str,
                           rw__template_sym_type_name(want));
    return idx;
}

bool rw__template_check_regex(ctx_t *c, const node_t *n, const char *what, const char *re)
{
    if (strlen(re) > 512) {
        rw__template_error(c, n, "%s: the regular expression is longer than 512 bytes", what);
        return false;
    }
    regex_t rx;
    int rc = regcomp(&rx, re, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char msg[128];
        regerror(rc, &rx, msg, sizeof msg);
        rw__template_error(c, n, "%s: not a valid POSIX extended regular expression: %s", what,
                           msg);
        return false;
    }
    regfree(&rx);
    return true;
}
