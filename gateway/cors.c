/* CORS for HTTP APIs: which requests are preflights, whether an origin is
 * allowed, and the headers API Gateway adds to preflight and normal answers. */
#include "cors.h"

#include "reelway/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool is_token(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

static bool has_star(const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (list[i] && strcmp(list[i], "*") == 0)
            return true;
    return false;
}

/* For a scheme wildcard ("https://" then a star): the length of the scheme
 * with its "://"; 0 for anything else. */
static size_t scheme_wildcard(const char *o)
{
    const char *sep = strstr(o, "://");
    if (sep == NULL || sep == o || strcmp(sep, "://*") != 0)
        return 0;
    return (size_t)(sep - o) + 3;
}

static bool origin_well_formed(const char *o)
{
    const char *sep, *host;
    if (o == NULL || *o == '\0')
        return false;
    if (strcmp(o, "*") == 0 || scheme_wildcard(o) > 0)
        return true;
    sep = strstr(o, "://");
    if (sep == NULL || sep == o)
        return false;
    for (const char *p = o; p < sep; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (p > o && ((*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.'))))
            return false;
    host = sep + 3;
    if (*host == '\0')
        return false;
    /* An origin is scheme, host and port: no path, query, user or blanks. */
    for (const char *p = host; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || strchr("/?#@*", *p))
            return false;
    return true;
}

int rw_cors_config_check(const rw_cors_config_t *cfg, char *why, size_t whylen)
{
    if (cfg == NULL) {
        snprintf(why, whylen, "no CORS configuration");
        return RW_ECONFIG;
    }
    for (size_t i = 0; i < cfg->n_allow_origins; i++) {
        if (!origin_well_formed(cfg->allow_origins[i])) {
            snprintf(why, whylen,
                     "AllowOrigins[%zu] \"%.64s\" is not an origin, \"*\" or "
                     "\"scheme://*\"",
                     i, cfg->allow_origins[i] ? cfg->allow_origins[i] : "");
            return RW_ECONFIG;
        }
    }
    if (cfg->allow_credentials && has_star(cfg->allow_origins, cfg->n_allow_origins)) {
        snprintf(why, whylen, "AllowCredentials is not supported with AllowOrigins \"*\"");
        return RW_ECONFIG;
    }
    for (size_t i = 0; i < cfg->n_allow_methods; i++) {
        if (!is_token(cfg->allow_methods[i])) {
            snprintf(why, whylen, "AllowMethods[%zu] \"%.64s\" is not a method or \"*\"", i,
                     cfg->allow_methods[i] ? cfg->allow_methods[i] : "");
            return RW_ECONFIG;
        }
    }
    for (size_t i = 0; i < cfg->n_allow_headers; i++) {
        if (!is_token(cfg->allow_headers[i])) {
            snprintf(why, whylen, "AllowHeaders[%zu] \"%.64s\" is not a header name or \"*\"", i,
                     cfg->allow_headers[i] ? cfg->allow_headers[i] : "");
            return RW_ECONFIG;
        }
    }
    for (size_t i = 0; i < cfg->n_expose_headers; i++) {
        if (!is_token(cfg->expose_headers[i])) {
            snprintf(why, whylen, "ExposeHeaders[%zu] \"%.64s\" is not a header name or \"*\"", i,
                     cfg->expose_headers[i] ? cfg->expose_headers[i] : "");
            return RW_ECONFIG;
        }
    }
    if (cfg->max_age > 86400) {
        snprintf(why, whylen, "MaxAge %d is above 86400", cfg->max_age);
        return RW_ECONFIG;
    }
    return 0;
}

bool rw_cors_is_preflight(const rw_cors_request_t *rq)
{
    return rq != NULL && rq->method != NULL && strcmp(rq->method, "OPTIONS") == 0 &&
           rq->origin != NULL && rq->request_method != NULL;
}

bool rw_cors_origin_allowed(const rw_cors_config_t *cfg, const char *origin, size_t origin_len)
{
    if (cfg == NULL || origin == NULL)
        return false;
    for (size_t i = 0; i < cfg->n_allow_origins; i++) {
        const char *o = cfg->allow_origins[i];
        size_t scheme, n;
        if (o == NULL)
            continue;
        if (strcmp(o, "*") == 0)
            return true;
        scheme = scheme_wildcard(o);
        if (scheme > 0) {
            if (origin_len > scheme && strncasecmp(origin, o, scheme) == 0)
                return true;
            continue;
        }
        n = strlen(o);
        if (n == origin_len && strncasecmp(origin, o, n) == 0)
            return true;
    }
    return false;
}

bool rw_cors_is_cors_header(const char *name, size_t name_len)
{
    static const char prefix[] = "access-control-";
    return name != NULL && name_len >= sizeof(prefix) - 1 &&
           strncasecmp(name, prefix, sizeof(prefix) - 1) == 0;
}

void rw_cors_headers_free(rw_cors_headers_t *out)
{
    if (out == NULL)
        return;
    free(out->storage_);
    memset(out, 0, sizeof(*out));
}

/* Values are appended into one buffer sized up front; offsets become
 * pointers once everything is written. */
typedef struct acc_s {
    char *buf;
    size_t len;
    size_t off[RW_CORS_MAX_HEADERS];
} acc_t;

static void acc_start(acc_t *a, rw_cors_headers_t *out, const char *name)
{
    out->h[out->n].name = name;
    a->off[out->n] = a->len;
}

static void acc_put(acc_t *a, const char *s, size_t n)
{
    memcpy(a->buf + a->len, s, n);
    a->len += n;
}

static void acc_end(acc_t *a, rw_cors_headers_t *out)
{
    out->h[out->n].value_len = a->len - a->off[out->n];
    a->buf[a->len++] = '\0';
    out->n++;
}

static size_t list_len(const char *const *list, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += (list[i] ? strlen(list[i]) : 0) + 2;
    return total;
}

static void acc_list(acc_t *a, const char *const *list, size_t n)
{
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (list[i] == NULL)
            continue;
        if (!first)
            acc_put(a, ", ", 2);
        acc_put(a, list[i], strlen(list[i]));
        first = false;
    }
}

static void acc_finish(acc_t *a, rw_cors_headers_t *out)
{
    for (size_t i = 0; i < out->n; i++)
        out->h[i].value = a->buf + a->off[i];
    out->storage_ = a->buf;
}

/* Allow-Origin (+ Vary) and Allow-Credentials, shared by both answers. */
static void acc_origin(acc_t *a, const rw_cors_config_t *cfg, const rw_cors_request_t *rq,
                       rw_cors_headers_t *out, bool *vary)
{
    /* "*" only when every origin is allowed and no credentials are involved
     * (the configuration check forbids the two together); otherwise the
     * origin itself, and caches must then key on it. */
    bool any = has_star(cfg->allow_origins, cfg->n_allow_origins) && !cfg->allow_credentials;
    acc_start(a, out, "access-control-allow-origin");
    if (any)
        acc_put(a, "*", 1);
    else
        acc_put(a, rq->origin, rq->origin_len);
    acc_end(a, out);
    *vary = !any;
    if (cfg->allow_credentials) {
        acc_start(a, out, "access-control-allow-credentials");
        acc_put(a, "true", 4);
        acc_end(a, out);
    }
}

int rw_cors_preflight(const rw_cors_config_t *cfg, const rw_cors_request_t *rq,
                      rw_cors_headers_t *out)
{
    acc_t a = {0};
    bool vary;
    char num[16];

    memset(out, 0, sizeof(*out));
    if (cfg == NULL || rq == NULL || rq->origin == NULL ||
        !rw_cors_origin_allowed(cfg, rq->origin, rq->origin_len))
        return 0;
    a.buf = malloc(64 + rq->origin_len + rq->request_method_len + rq->request_headers_len +
                   list_len(cfg->allow_methods, cfg->n_allow_methods) +
                   list_len(cfg->allow_headers, cfg->n_allow_headers) + 6 * 8);
    if (a.buf == NULL)
        return UV_ENOMEM;
    out->allowed = true;
    acc_origin(&a, cfg, rq, out, &vary);
    if (cfg->n_allow_methods > 0) {
        acc_start(&a, out, "access-control-allow-methods");
        if (has_star(cfg->allow_methods, cfg->n_allow_methods) && rq->request_method)
            acc_put(&a, rq->request_method, rq->request_method_len);
        else
            acc_list(&a, cfg->allow_methods, cfg->n_allow_methods);
        acc_end(&a, out);
    }
    if (cfg->n_allow_headers > 0) {
        bool star = has_star(cfg->allow_headers, cfg->n_allow_headers);
        /* "*" grants whatever the preflight asks for; with nothing asked
         * there is nothing to send. */
        if (!star || (rq->request_headers && rq->request_headers_len > 0)) {
            acc_start(&a, out, "access-control-allow-headers");
            if (star)
                acc_put(&a, rq->request_headers, rq->request_headers_len);
            else
                acc_list(&a, cfg->allow_headers, cfg->n_allow_headers);
            acc_end(&a, out);
        }
    }
    if (cfg->max_age >= 0) {
        int n = snprintf(num, sizeof(num), "%d", cfg->max_age);
        acc_start(&a, out, "access-control-max-age");
        acc_put(&a, num, (size_t)n);
        acc_end(&a, out);
    }
    if (vary) {
        acc_start(&a, out, "vary");
        acc_put(&a, "origin", 6);
        acc_end(&a, out);
    }
    acc_finish(&a, out);
    return 0;
}

int rw_cors_response(const rw_cors_config_t *cfg, const rw_cors_request_t *rq,
                     rw_cors_headers_t *out)
{
    acc_t a = {0};
    bool vary;

    memset(out, 0, sizeof(*out));
    if (cfg == NULL || rq == NULL || rq->origin == NULL ||
        !rw_cors_origin_allowed(cfg, rq->origin, rq->origin_len))
        return 0;
    a.buf =
        malloc(64 + rq->origin_len + list_len(cfg->expose_headers, cfg->n_expose_headers) + 6 * 8);
    if (a.buf == NULL)
        return UV_ENOMEM;
    out->allowed = true;
    acc_origin(&a, cfg, rq, out, &vary);
    if (cfg->n_expose_headers > 0) {
        acc_start(&a, out, "access-control-expose-headers");
        acc_list(&a, cfg->expose_headers, cfg->n_expose_headers);
        acc_end(&a, out);
    }
    if (vary) {
        acc_start(&a, out, "vary");
        acc_put(&a, "origin", 6);
        acc_end(&a, out);
    }
    acc_finish(&a, out);
    return 0;
}
