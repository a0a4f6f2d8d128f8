/* Route matching as API Gateway does it: a trie of path segments searched
 * most-specific first (literal, then {param}, then {greedy+}), exact method
 * before ANY, and "$default" for the rest. */
#include "router.h"

#include "reelway/error.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct {
    char method[16];
    void *target;
    char *route_key;
    char *resource;
    size_t n_names;
    char *names[RW_ROUTE_MAX_PARAMS];
} endpoint_t;

typedef struct node_s node_t;
struct node_s {
    char *literal;        /* decoded segment, for literal children */
    node_t **children;
    size_t n_children;
    node_t *param;        /* {name} */
    node_t *greedy;       /* {name+}: always a leaf */
    endpoint_t **eps;
    size_t n_eps;
};

struct rw_router_s {
    node_t root;
    endpoint_t *fallback; /* $default */
};

rw_router_t *rw_router_new(void)
{
    return calloc(1, sizeof(rw_router_t));
}

static void endpoint_free(endpoint_t *e)
{
    if (!e)
        return;
    free(e->route_key);
    free(e->resource);
    for (size_t i = 0; i < e->n_names; i++)
        free(e->names[i]);
    free(e);
}

static void node_free(node_t *n, bool self)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n_children; i++)
        node_free(n->children[i], true);
    free(n->children);
    node_free(n->param, true);
    node_free(n->greedy, true);
    for (size_t i = 0; i < n->n_eps; i++)
        endpoint_free(n->eps[i]);
    free(n->eps);
    free(n->literal);
    if (self)
        free(n);
}

void rw_router_free(rw_router_t *r)
{
    if (!r)
        return;
    node_free(&r->root, false);
    endpoint_free(r->fallback);
    free(r);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char *rw_percent_decode(const char *src, size_t len, size_t *out_len)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%') {
            int hi = i + 2 < len ? hexval(src[i + 1]) : -1;
            int lo = i + 2 < len ? hexval(src[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            c = (char)(hi * 16 + lo);
            i += 2;
        } else if (c == '\0') {
            free(out);
            return NULL;
        }
        out[n++] = c;
    }
    out[n] = '\0';
    if (out_len)
        *out_len = n;
    return out;
}

static int fail(char *why, size_t whylen, const char *fmt, const char *arg)
{
    if (why)
        snprintf(why, whylen, fmt, arg);
    return RW_EPARSE;
}

static node_t *literal_child(node_t *n, const char *seg, bool create)
{
    for (size_t i = 0; i < n->n_children; i++)
        if (strcmp(n->children[i]->literal, seg) == 0)
            return n->children[i];
    if (!create)
        return NULL;
    node_t **grown = realloc(n->children, (n->n_children + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    n->children = grown;
    node_t *c = calloc(1, sizeof *c);
    if (!c || !(c->literal = strdup(seg))) {
        free(c);
        return NULL;
    }
    n->children[n->n_children++] = c;
    return c;
}

static bool valid_method(const char *m)
{
    static const char *known[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS",
                                  "ANY"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(m, known[i]) == 0)
            return true;
    return false;
}

static endpoint_t *endpoint_new(const char *method, const char *path, void *target)
{
    endpoint_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    snprintf(e->method, sizeof e->method, "%s", method);
    e->target = target;
    size_t klen = strlen(method) + strlen(path) + 2;
    e->route_key = malloc(klen);
    e->resource = strdup(path);
    if (!e->route_key || !e->resource) {
        endpoint_free(e);
        return NULL;
    }
    snprintf(e->route_key, klen, "%s %s", method, path);
    return e;
}

int rw_router_add(rw_router_t *r, const char *method, const char *path, void *target, char *why,
                  size_t whylen)
{
    if (strcmp(path, "$default") == 0) {
        if (r->fallback)
            return fail(why, whylen, "%s route defined twice", "$default"), UV_EEXIST;
        r->fallback = endpoint_new("ANY", "/{proxy+}", target);
        if (!r->fallback)
            return UV_ENOMEM;
        free(r->fallback->route_key);
        r->fallback->route_key = strdup("$default");
        r->fallback->names[0] = strdup("proxy");
        r->fallback->n_names = 1;
        return r->fallback->route_key && r->fallback->names[0] ? 0 : UV_ENOMEM;
    }
    if (!valid_method(method))
        return fail(why, whylen, "unsupported method '%s'", method);
    if (path[0] != '/')
        return fail(why, whylen, "path '%s' must start with '/'", path);
    endpoint_t *e = endpoint_new(method, path, target);
    if (!e)
        return UV_ENOMEM;
    node_t *n = &r->root;
    const char *p = path + 1;
    int rc = 0;
    while (*p) {
        size_t len = strcspn(p, "/");
        char seg[512];
        if (len >= sizeof seg) {
            rc = fail(why, whylen, "path segment too long in '%s'", path);
            goto out;
        }
        memcpy(seg, p, len);
        seg[len] = '\0';
        bool last = p[len] == '\0';
        if (seg[0] == '{') {
            bool greedy = len > 3 && seg[len - 2] == '+' && seg[len - 1] == '}';
            if (seg[len - 1] != '}' || len < 3 + (greedy ? 1 : 0)) {
                rc = fail(why, whylen, "malformed path parameter in '%s'", path);
                goto out;
            }
            size_t nlen = len - 2 - (greedy ? 1 : 0);
            for (size_t i = 1; i <= nlen; i++)
                if (strchr("{}+/", seg[i])) {
                    rc = fail(why, whylen, "malformed path parameter in '%s'", path);
                    goto out;
                }
            if (e->n_names == RW_ROUTE_MAX_PARAMS) {
                rc = fail(why, whylen, "too many path parameters in '%s'", path);
                goto out;
            }
            for (size_t i = 0; i < e->n_names; i++)
                if (strlen(e->names[i]) == nlen && !strncmp(e->names[i], seg + 1, nlen)) {
                    rc = fail(why, whylen, "path parameter repeated in '%s'", path);
                    goto out;
                }
            e->names[e->n_names] = strndup(seg + 1, nlen);
            if (!e->names[e->n_names++]) {
                rc = UV_ENOMEM;
                goto out;
            }
            if (greedy && !last) {
                rc = fail(why, whylen, "a greedy parameter must be the last segment in '%s'",
                          path);
                goto out;
            }
            node_t **slot = greedy ? &n->greedy : &n->param;
            if (!*slot && !(*slot = calloc(1, sizeof(node_t)))) {
                rc = UV_ENOMEM;
                goto out;
            }
            n = *slot;
        } else {
            if (len == 0 && !last) {
                rc = fail(why, whylen, "empty path segment in '%s'", path);
                goto out;
            }
            if (strchr(seg, '{') || strchr(seg, '}')) {
                rc = fail(why, whylen, "braces are only allowed around a whole segment in '%s'",
                          path);
                goto out;
            }
            char *dec = rw_percent_decode(seg, len, NULL);
            if (!dec) {
                rc = fail(why, whylen, "bad percent-encoding in '%s'", path);
                goto out;
            }
            n = literal_child(n, dec, true);
            free(dec);
            if (!n) {
                rc = UV_ENOMEM;
                goto out;
            }
        }
        p += len;
        if (*p == '/')
            p++;
    }
    for (size_t i = 0; i < n->n_eps; i++)
        if (strcmp(n->eps[i]->method, method) == 0) {
            rc = UV_EEXIST;
            fail(why, whylen, "route '%s' defined twice", e->route_key);
            goto out;
        }
    endpoint_t **grown = realloc(n->eps, (n->n_eps + 1) * sizeof *grown);
    if (!grown) {
        rc = UV_ENOMEM;
        goto out;
    }
    n->eps = grown;
    n->eps[n->n_eps++] = e;
    return 0;
out:
    endpoint_free(e);
    return rc;
}

/* ---- matching ------------------------------------------------------------- */

typedef struct {
    const char *method;
    char *segs[256];          /* decoded segments */
    const char *raw_rest[256]; /* raw path from segment i on (for greedy values) */
    size_t raw_len[256];
    size_t n;
    char *vals[RW_ROUTE_MAX_PARAMS];
    size_t n_vals;
    const node_t *path_hit;   /* most specific node whose path matched, for 405 */
    size_t greedy_at;         /* segment where a greedy parameter matched */
} search_t;

static endpoint_t *pick(const node_t *n, const char *method)
{
    endpoint_t *any = NULL;
    for (size_t i = 0; i < n->n_eps; i++) {
        if (strcmp(n->eps[i]->method, method) == 0)
            return n->eps[i];
        if (strcmp(n->eps[i]->method, "ANY") == 0)
            any = n->eps[i];
        /* HEAD is served by a GET route when there is no HEAD route. */
    }
    if (!any && strcmp(method, "HEAD") == 0)
        for (size_t i = 0; i < n->n_eps; i++)
            if (strcmp(n->eps[i]->method, "GET") == 0)
                return n->eps[i];
    return any;
}

static endpoint_t *search(search_t *s, const node_t *n, size_t i)
{
    if (i == s->n) {
        if (n->n_eps && !s->path_hit)
            s->path_hit = n;
        return pick(n, s->method);
    }
    const node_t *lit = NULL;
    for (size_t c = 0; c < n->n_children; c++)
        if (strcmp(n->children[c]->literal, s->segs[i]) == 0)
            lit = n->children[c];
    if (lit) {
        endpoint_t *e = search(s, lit, i + 1);
        if (e)
            return e;
    }
    if (n->param && s->segs[i][0] && s->n_vals < RW_ROUTE_MAX_PARAMS) {
        s->vals[s->n_vals++] = s->segs[i];
        endpoint_t *e = search(s, n->param, i + 1);
        if (e)
            return e;
        s->n_vals--;
    }
    if (n->greedy && s->n_vals < RW_ROUTE_MAX_PARAMS && s->raw_len[i] > 0) {
        if (n->greedy->n_eps && !s->path_hit)
            s->path_hit = n->greedy;
        endpoint_t *e = pick(n->greedy, s->method);
        if (e) {
            s->vals[s->n_vals++] = NULL; /* the rest of the path, decoded by the caller */
            s->greedy_at = i;
            return e;
        }
    }
    return NULL;
}

int rw_router_match(const rw_router_t *r, const char *method, const char *path, size_t path_len,
                    rw_route_match_t *m, char *allow, size_t allow_len)
{
    memset(m, 0, sizeof *m);
    if (allow_len)
        allow[0] = '\0';
    search_t s = {.method = method};
    int rc = 0;
    if (path_len == 0 || path[0] != '/')
        return RW_EPARSE;
    /* "/" has no segments; "/a/" has "a" and "" (a trailing slash is kept). */
    for (size_t pos = 1; path_len > 1;) {
        if (s.n == 256) {
            rc = RW_ENOTFOUND;
            goto out;
        }
        size_t end = pos;
        while (end < path_len && path[end] != '/')
            end++;
        s.raw_rest[s.n] = path + pos;
        s.raw_len[s.n] = path_len - pos;
        s.segs[s.n] = rw_percent_decode(path + pos, end - pos, NULL);
        if (!s.segs[s.n]) {
            rc = RW_EPARSE;
            goto out;
        }
        s.n++;
        if (end == path_len)
            break;
        pos = end + 1;
    }
    endpoint_t *e = search(&s, &r->root, 0);
    if (!e && r->fallback)
        e = r->fallback;
    if (!e) {
        if (!s.path_hit) {
            rc = RW_ENOTFOUND;
            goto out;
        }
        size_t n = 0;
        for (size_t i = 0; i < s.path_hit->n_eps && n < allow_len; i++)
            n += (size_t)snprintf(allow + n, allow_len - n, "%s%s", n ? ", " : "",
                                  s.path_hit->eps[i]->method);
        rc = UV_ENOTSUP;
        goto out;
    }
    m->target = e->target;
    m->route_key = e->route_key;
    m->resource = e->resource;
    if (e == r->fallback) {
        m->names[0] = e->names[0];
        m->values[0] = path_len > 1 ? rw_percent_decode(path + 1, path_len - 1, NULL) : strdup("");
        m->n_params = m->values[0] ? 1 : 0;
        goto out;
    }
    /* Values were collected in path order, which is the names' order. */
    for (size_t i = 0; i < s.n_vals && i < e->n_names; i++) {
        m->names[i] = e->names[i];
        if (s.vals[i]) {
            m->values[i] = strdup(s.vals[i]);
        } else {
            /* greedy: the rest of the raw path from where it matched, decoded whole */
            m->values[i] = rw_percent_decode(s.raw_rest[s.greedy_at], s.raw_len[s.greedy_at], NULL);
        }
        if (!m->values[i]) {
            rw_route_match_free(m);
            rc = UV_ENOMEM;
            goto out;
        }
        m->n_params++;
    }
out:
    for (size_t i = 0; i < s.n; i++)
        free(s.segs[i]);
    return rc;
}

void rw_route_match_free(rw_route_match_t *m)
{
    for (size_t i = 0; i < m->n_params; i++)
        free(m->values[i]);
    m->n_params = 0;
}
