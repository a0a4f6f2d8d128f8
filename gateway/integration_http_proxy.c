/* The HTTP_PROXY integration: one exchange joins a request of our server to a
 * request of the HTTP client, piece for piece, each side's backpressure
 * pausing the other. See integration_http_proxy.h for what crosses. */
#include "integration_http_proxy.h"

#include "reelway/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Resume the upstream once the client's queue is down to this. */
#define CLIENT_LOW_WATER (64 * 1024)
#define MAX_CONNECTION_TOKENS 32
#define URL_MAX 8192

typedef struct xchg_s {
    rw_http_req_t *req;          /* valid until req_done */
    rw_http_creq_t *up;          /* valid until up_done */
    rw_http_proxy_stats_t *stats;
    rw_http_proxy_flavour_t flavour;
    bool req_done;               /* rw_http_res_end / _abort / respond called */
    bool up_done;                /* upstream completed, or aborted by us */
    bool started;                /* response head sent to the client */
    bool client_paused;          /* the client's body read is stopped by us */
    bool up_paused;              /* the upstream read is stopped by us */
    unsigned writes;             /* rw_http_res_write callbacks to come */
    unsigned holds;
} xchg_t;

static rw_http_proxy_stats_t no_stats;

/* ---- answers ------------------------------------------------------------- */

static bool err_unreachable(int err)
{
    return err == UV_ECONNREFUSED || err == UV_ENETUNREACH || err == UV_EHOSTUNREACH ||
           err == UV_EADDRNOTAVAIL || err == UV_EAI_NONAME || err == UV_EAI_AGAIN ||
           err == UV_EAI_FAIL || err == UV_EAI_NODATA || err == UV_EAI_ADDRFAMILY ||
           err == UV_EAI_SERVICE;
}

/* API Gateway's answer to an integration failure before the response head. */
static void error_answer(rw_http_proxy_flavour_t flavour, int err, int *status, const char **msg)
{
    if (flavour == RW_HTTP_PROXY_HTTP_API) {
        *status = 503;
        *msg = "Service Unavailable";
    } else if (err == RW_ETIMEOUT) {
        *status = 504;
        *msg = "Endpoint request timed out";
    } else if (err_unreachable(err) || err == RW_ECONFIG) {
        *status = 500;
        *msg = "Internal server error";
    } else {
        *status = 504;
        *msg = "Network error communicating with endpoint";
    }
}

static void config_error_answer(rw_http_req_t *req, rw_http_proxy_flavour_t flavour)
{
    rw_http_respond_error(req, 500,
                          flavour == RW_HTTP_PROXY_HTTP_API ? "Internal Server Error"
                                                            : "Internal server error",
                          NULL, NULL, 0);
}

/* ---- the exchange's life ------------------------------------------------ */

static void x_maybe_free(xchg_t *x)
{
    if (x->req_done && x->up_done && x->writes == 0 && x->holds == 0)
        free(x);
}

static void x_note_held(xchg_t *x)
{
    size_t held = 0;
    if (!x->up_done)
        held += rw_http_creq_queued(x->up);
    if (!x->req_done)
        held += rw_http_res_queued(x->req);
    if (held > x->stats->max_held_bytes)
        x->stats->max_held_bytes = held;
}

static void x_abort_upstream(xchg_t *x)
{
    if (x->up_done)
        return;
    x->up_done = true;
    rw_http_creq_abort(x->up);
    x->up = NULL;
}

/* The upstream failed with err: answer it, or cut the client off when the
 * status already went out. */
static void x_fail_client(xchg_t *x, int err)
{
    if (x->req_done)
        return;
    x->req_done = true;
    x->stats->upstream_errors++;
    if (x->started || !rw_http_req_alive(x->req)) {
        rw_http_res_abort(x->req);
        return;
    }
    int status;
    const char *msg;
    error_answer(x->flavour, err, &status, &msg);
    rw_http_respond_error(x->req, status, msg, NULL, NULL, 0);
}

/* ---- client side (our server's request) --------------------------------- */

static void on_client_abort(rw_http_req_t *req, int err)
{
    xchg_t *x = req->data;
    x->holds++;
    if (!x->req_done) {
        x->stats->client_aborts++;
        x_abort_upstream(x);
        x->req_done = true;
        rw_http_res_end(req, NULL, 0);
    }
    x->holds--;
    x_maybe_free(x);
}

static bool on_client_body(rw_http_req_t *req, const char *piece, size_t len)
{
    xchg_t *x = req->data;
    if (x->up_done)
        return true; /* the upstream answered already: let the server drain it */
    int rc = rw_http_creq_write(x->up, piece, len);
    x_note_held(x);
    if (rc == 1)
        return true;
    if (rc == 0) {
        x->client_paused = true;
        x->stats->client_read_pauses++;
    }
    /* rc < 0: the upstream request is failing; its on_complete answers. */
    return false;
}

static void on_client_body_end(rw_http_req_t *req, int status)
{
    xchg_t *x = req->data;
    if (status == 0) {
        /* A chunked body's trailers go up with its last chunk. */
        size_t n = 0;
        const rw_http_header_t *trailers = rw_http_req_trailers(req, &n);
        if (!x->up_done)
            rw_http_creq_end(x->up, trailers, n);
        return;
    }
    /* The client's body failed: a disconnect (the abort callback follows and
     * ends everything) or a bad or oversized body, answered here. */
    x->holds++;
    x_abort_upstream(x);
    if (!x->req_done && rw_http_req_alive(req)) {
        x->req_done = true;
        if (x->started)
            rw_http_res_abort(req);
        else if (status == RW_ELIMIT)
            rw_http_respond_error(req, 413, "Request Entity Too Large", NULL, NULL, 0);
        else
            rw_http_respond_error(req, 400, "Bad Request", rw_strerror(status), NULL, 0);
    }
    x->holds--;
    x_maybe_free(x);
}

static const rw_http_body_sink_t client_sink = {on_client_body, on_client_body_end};

static void on_client_written(rw_http_req_t *req, int status, void *arg)
{
    xchg_t *x = arg;
    x->writes--;
    x->holds++;
    if (status == 0 && x->up_paused && !x->up_done && !x->req_done &&
        rw_http_res_queued(req) <= CLIENT_LOW_WATER) {
        x->up_paused = false;
        rw_http_creq_resume(x->up); /* may deliver body and even complete, right here */
    }
    x->holds--;
    x_maybe_free(x);
}

/* ---- header filtering -------------------------------------------------- */

typedef struct {
    const char *names[MAX_CONNECTION_TOKENS];
    size_t lens[MAX_CONNECTION_TOKENS];
    size_t n;
} tokens_t;

/* Collects the header names listed in Connection headers: hop-by-hop too. */
static void connection_tokens(const rw_http_header_t *hs, size_t n, tokens_t *t)
{
    t->n = 0;
    for (size_t i = 0; i < n; i++) {
        if (hs[i].name_len != 10 || strncasecmp(hs[i].name, "connection", 10) != 0)
            continue;
        const char *p = hs[i].value, *end = hs[i].value + hs[i].value_len;
        while (p < end && t->n < MAX_CONNECTION_TOKENS) {
            while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
                p++;
            const char *s = p;
            while (p < end && *p != ',' && *p != ' ' && *p != '\t')
                p++;
            if (p > s) {
                t->names[t->n] = s;
                t->lens[t->n++] = (size_t)(p - s);
            }
        }
    }
}

static bool is_named(const rw_http_header_t *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

/* RFC 9110 7.6.1 hop-by-hop fields, plus the ones Connection lists. */
static bool hop_by_hop(const rw_http_header_t *h, const tokens_t *t)
{
    static const char *const fixed[] = {"connection", "keep-alive", "transfer-encoding", "te",
                                        "trailer",    "upgrade",    "proxy-connection"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        if (is_named(h, fixed[i]))
            return true;
    if (h->name_len >= 6 && strncasecmp(h->name, "proxy-", 6) == 0)
        return true;
    for (size_t i = 0; i < t->n; i++)
        if (h->name_len == t->lens[i] && strncasecmp(h->name, t->names[i], t->lens[i]) == 0)
            return true;
    return false;
}

/* ---- upstream side (our client's request) ------------------------------ */

static void on_up_response(rw_http_creq_t *q, const rw_http_response_t *res)
{
    xchg_t *x = rw_http_creq_data(q);
    if (x->req_done)
        return;
    rw_http_header_t *hs = calloc(res->n_headers ? res->n_headers : 1, sizeof *hs);
    if (!hs) {
        x_abort_upstream(x);
        x_fail_client(x, UV_ENOMEM);
        return;
    }
    tokens_t conn;
    connection_tokens(res->headers, res->n_headers, &conn);
    size_t n = 0;
    for (size_t i = 0; i < res->n_headers; i++) {
        const rw_http_header_t *h = &res->headers[i];
        if (hop_by_hop(h, &conn) || is_named(h, "content-length") || is_named(h, "date"))
            continue;
        hs[n++] = *h;
    }
    /* A HEAD answer keeps the upstream's length: it describes the GET body. */
    int64_t length = -1;
    if (res->status != 204 && res->status != 304 && !res->chunked)
        length = res->content_length;
    int rc = rw_http_res_start(x->req, res->status, hs, n, length);
    free(hs);
    if (rc < 0) {
        /* A header our server refuses to send, or the client is gone. */
        x_abort_upstream(x);
        x_fail_client(x, rc == RW_EPARSE ? RW_EPARSE : rc);
        return;
    }
    x->started = true;
}

static bool on_up_body(rw_http_creq_t *q, const char *piece, size_t len)
{
    xchg_t *x = rw_http_creq_data(q);
    if (x->req_done)
        return false;
    int rc = rw_http_res_write(x->req, piece, len, false, on_client_written, x);
    if (rc < 0) {
        x_abort_upstream(x);
        x_fail_client(x, rc);
        return false;
    }
    x->writes++;
    x_note_held(x);
    if (rc == 0) {
        x->up_paused = true;
        x->stats->upstream_read_pauses++;
        return false;
    }
    return true;
}

static void on_up_drain(rw_http_creq_t *q)
{
    xchg_t *x = rw_http_creq_data(q);
    if (x->client_paused && !x->req_done) {
        x->client_paused = false;
        rw_http_req_body_resume(x->req);
    }
}

static void on_up_complete(rw_http_creq_t *q, int status, const rw_http_header_t *trailers,
                           size_t n_trailers)
{
    xchg_t *x = rw_http_creq_data(q);
    x->up_done = true;
    x->up = NULL;
    x->holds++;
    if (!x->req_done) {
        if (status == 0) {
            x->stats->completed++;
            x->req_done = true;
            rw_http_res_end(x->req, trailers, n_trailers);
        } else {
            x_fail_client(x, status);
        }
    }
    x->holds--;
    x_maybe_free(x);
}

static const rw_http_creq_cbs_t upstream_cbs = {on_up_response, on_up_body, on_up_drain,
                                                on_up_complete};

/* ---- the URL ------------------------------------------------------------ */

typedef struct {
    char host[256];
    int port;
    const char *path; /* into the URL buffer: "/..." or "" */
} url_t;

static int parse_url(const char *url, url_t *u, char *why, size_t why_len)
{
    if (strncasecmp(url, "https://", 8) == 0) {
        snprintf(why, why_len, "https integration URIs are not supported (no TLS to upstreams)");
        return RW_ECONFIG;
    }
    if (strncasecmp(url, "http://", 7) != 0) {
        snprintf(why, why_len, "the integration URI must start with http://");
        return RW_ECONFIG;
    }
    const char *p = url + 7;
    const char *auth_end = p + strcspn(p, "/?#");
    if (memchr(p, '@', (size_t)(auth_end - p))) {
        snprintf(why, why_len, "credentials in the integration URI are not supported");
        return RW_ECONFIG;
    }
    const char *host = p, *host_end;
    const char *port = NULL;
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', (size_t)(auth_end - host));
        if (!host_end) {
            snprintf(why, why_len, "unterminated IPv6 literal in the integration URI");
            return RW_ECONFIG;
        }
        if (host_end + 1 < auth_end) {
            if (host_end[1] != ':') {
                snprintf(why, why_len, "malformed authority in the integration URI");
                return RW_ECONFIG;
            }
            port = host_end + 2;
        }
    } else {
        host_end = memchr(p, ':', (size_t)(auth_end - p));
        if (host_end)
            port = host_end + 1;
        else
            host_end = auth_end;
    }
    size_t hl = (size_t)(host_end - host);
    if (hl == 0 || hl >= sizeof u->host) {
        snprintf(why, why_len, "no host in the integration URI");
        return RW_ECONFIG;
    }
    memcpy(u->host, host, hl);
    u->host[hl] = '\0';
    u->port = 80;
    if (port) {
        long v = 0;
        const char *d = port;
        for (; d < auth_end && *d >= '0' && *d <= '9' && v <= 65535; d++)
            v = v * 10 + (*d - '0');
        if (d != auth_end || d == port || v < 1 || v > 65535) {
            snprintf(why, why_len, "invalid port in the integration URI");
            return RW_ECONFIG;
        }
        u->port = (int)v;
    }
    if (*auth_end == '#') {
        snprintf(why, why_len, "fragment in the integration URI");
        return RW_ECONFIG;
    }
    u->path = auth_end;
    return 0;
}

static bool path_char_safe(unsigned char ch, bool greedy)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    if (strchr("-._~!$&'()*+,;=:@", ch) && ch != 0)
        return true;
    return greedy && ch == '/';
}

/* Appends s percent-encoded for a path segment (or segments, when greedy). */
static bool append_encoded(char *out, size_t *n, size_t cap, const char *s, bool greedy)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (path_char_safe(ch, greedy)) {
            if (*n + 1 >= cap)
                return false;
            out[(*n)++] = (char)ch;
        } else {
            if (*n + 3 >= cap)
                return false;
            out[(*n)++] = '%';
            out[(*n)++] = hex[ch >> 4];
            out[(*n)++] = hex[ch & 15];
        }
    }
    return true;
}

/* Substitutes "{name}" / "{name+}" in the template with the match's values. */
static int expand_uri(const char *tpl, const rw_route_match_t *m, char *out, size_t cap,
                      char *why, size_t why_len)
{
    size_t n = 0;
    for (const char *p = tpl; *p;) {
        if (*p != '{') {
            if (n + 1 >= cap)
                goto too_long;
            out[n++] = *p++;
            continue;
        }
        const char *close = strchr(p, '}');
        if (!close) {
            snprintf(why, why_len, "unterminated '{' in the integration URI");
            return RW_ECONFIG;
        }
        size_t len = (size_t)(close - p - 1);
        bool greedy = len > 0 && p[len] == '+';
        if (greedy)
            len--;
        const char *value = NULL;
        for (size_t i = 0; m && i < m->n_params; i++)
            if (strlen(m->names[i]) == len && strncmp(m->names[i], p + 1, len) == 0)
                value = m->values[i];
        if (!value) {
            snprintf(why, why_len, "the integration URI uses {%.*s}, which the route lacks",
                     (int)len, p + 1);
            return RW_ECONFIG;
        }
        /* "{proxy}" of a greedy route keeps its slashes, as API Gateway does. */
        bool keep_slash = greedy;
        for (size_t i = 0; m && i < m->n_params && !keep_slash; i++)
            if (m->values[i] == value && strchr(value, '/'))
                keep_slash = true;
        if (!append_encoded(out, &n, cap, value, keep_slash))
            goto too_long;
        p = close + 1;
    }
    out[n] = '\0';
    return 0;
too_long:
    snprintf(why, why_len, "the integration URI is too long once expanded");
    return RW_ECONFIG;
}

/* ---- configuration check ----------------------------------------------- */

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch <= 32 || ch >= 127 || strchr("()<>@,;:\\\"/[]?={}", ch))
            return false;
    }
    return true;
}

int rw__http_proxy_conf_check(const rw_http_proxy_conf_t *conf, char *why, size_t why_len)
{
    char dummy[8];
    if (!why || why_len == 0) {
        why = dummy;
        why_len = sizeof dummy;
    }
    why[0] = '\0';
    if (!conf->uri) {
        snprintf(why, why_len, "the HTTP_PROXY integration has no URI");
        return RW_ECONFIG;
    }
    url_t u;
    int rc = parse_url(conf->uri, &u, why, why_len);
    if (rc < 0)
        return rc;
    if (conf->http_method && strcasecmp(conf->http_method, "ANY") != 0 &&
        !is_token(conf->http_method)) {
        snprintf(why, why_len, "invalid integration httpMethod \"%s\"", conf->http_method);
        return RW_ECONFIG;
    }
    uint64_t max = conf->flavour == RW_HTTP_PROXY_REST_API ? RW_HTTP_PROXY_REST_TIMEOUT_MAX_MS
                                                           : RW_HTTP_PROXY_HTTP_API_TIMEOUT_MAX_MS;
    if (conf->timeout_ms != 0 &&
        (conf->timeout_ms < RW_HTTP_PROXY_TIMEOUT_MIN_MS || conf->timeout_ms > max)) {
        snprintf(why, why_len, "TimeoutInMillis %llu is outside %d..%llu",
                 (unsigned long long)conf->timeout_ms, RW_HTTP_PROXY_TIMEOUT_MIN_MS,
                 (unsigned long long)max);
        return RW_ECONFIG;
    }
    return 0;
}

/* ---- the forward -------------------------------------------------------- */

/* RFC 7239 node or host value: quoted unless it is a token. */
static size_t forwarded_value(char *out, size_t cap, const char *v, size_t len, bool node)
{
    bool v6 = node && memchr(v, ':', len) != NULL;
    bool quote = v6;
    for (size_t i = 0; i < len && !quote; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch <= 32 || ch >= 127 || strchr("()<>@,;:\\\"/[]?={}", ch))
            quote = true;
    }
    size_t n = (size_t)snprintf(out, cap, "%s%s%.*s%s%s", quote ? "\"" : "", v6 ? "[" : "",
                                (int)len, v, v6 ? "]" : "", quote ? "\"" : "");
    return n < cap ? n : cap - 1;
}

int rw__http_proxy_forward(rw_http_req_t *req, const rw_http_proxy_conf_t *conf,
                           const rw_route_match_t *match, rw_http_client_t *client,
                           rw_http_proxy_stats_t *stats)
{
    char why[256] = "";
    char *url = NULL, *xff = NULL, *fwd = NULL;
    rw_http_header_t *hs = NULL;
    xchg_t *x = NULL;
    int rc;
    if (!stats)
        stats = &no_stats;
    stats->requests++;
    rc = rw__http_proxy_conf_check(conf, why, sizeof why);
    url = malloc(URL_MAX);
    if (rc == 0 && !url)
        rc = UV_ENOMEM;
    if (rc == 0)
        rc = expand_uri(conf->uri, match, url, URL_MAX, why, sizeof why);
    url_t u;
    if (rc == 0)
        rc = parse_url(url, &u, why, sizeof why);
    if (rc < 0) {
        fprintf(stderr, "reelway: HTTP_PROXY integration: %s\n", why[0] ? why : rw_strerror(rc));
        config_error_answer(req, conf->flavour);
        goto out;
    }

    /* The target: the template's path (or "/") and the request's query. */
    char target[URL_MAX + 16];
    size_t path_len = strcspn(u.path, "?");
    const char *tq = u.path[path_len] == '?' ? u.path + path_len + 1 : "";
    int tn = snprintf(target, sizeof target, "%s%.*s", path_len ? "" : "/", (int)path_len,
                      u.path);
    if (*tq || req->query_len)
        tn += snprintf(target + tn, sizeof target - (size_t)tn, "?%s%s%.*s", tq,
                       *tq && req->query_len ? "&" : "", (int)req->query_len, req->query);
    if ((size_t)tn >= sizeof target) {
        rw_http_respond_error(req, 414, "Request-URI Too Long", NULL, NULL, 0);
        rc = RW_ELIMIT;
        goto out;
    }

    /* The headers that go up. */
    tokens_t conn;
    connection_tokens(req->headers, req->n_headers, &conn);
    hs = calloc(req->n_headers + 6, sizeof *hs);
    size_t xff_cap = 64, fwd_cap = 512;
    for (size_t i = 0; i < req->n_headers; i++)
        xff_cap += req->headers[i].value_len + 2, fwd_cap += 2 * req->headers[i].value_len + 16;
    xff = malloc(xff_cap);
    fwd = malloc(fwd_cap);
    if (!hs || !xff || !fwd) {
        rw_http_respond_error(req, 503, "Service Unavailable", "out of memory", NULL, 0);
        rc = UV_ENOMEM;
        goto out;
    }
    size_t n = 0, xn = 0, fn = 0;
    const char *orig_host = "";
    for (size_t i = 0; i < req->n_headers; i++) {
        const rw_http_header_t *h = &req->headers[i];
        if (is_named(h, "host")) {
            orig_host = h->value;
            continue;
        }
        if (is_named(h, "x-forwarded-for")) {
            /* Appended to, as every proxy does; one header however many came. */
            xn += (size_t)snprintf(xff + xn, xff_cap - xn, "%s%.*s", xn ? ", " : "",
                                   (int)h->value_len, h->value);
            if (conf->flavour == RW_HTTP_PROXY_HTTP_API && !rw_http_req_header(req, "forwarded")) {
                /* HTTP APIs translate X-Forwarded-For into Forwarded elements. */
                const char *p = h->value, *end = h->value + h->value_len;
                while (p < end) {
                    while (p < end && (*p == ' ' || *p == ','))
                        p++;
                    const char *s = p;
                    while (p < end && *p != ',' && *p != ' ')
                        p++;
                    if (p > s && fn + 16 + 2 * (size_t)(p - s) < fwd_cap) {
                        fn += (size_t)snprintf(fwd + fn, fwd_cap - fn, "%sfor=", fn ? ", " : "");
                        fn += forwarded_value(fwd + fn, fwd_cap - fn, s, (size_t)(p - s), true);
                    }
                }
            }
            continue;
        }
        if (is_named(h, "forwarded")) {
            if (conf->flavour == RW_HTTP_PROXY_HTTP_API)
                fn += (size_t)snprintf(fwd + fn, fwd_cap - fn, "%s%.*s", fn ? ", " : "",
                                       (int)h->value_len, h->value);
            else
                hs[n++] = *h;
            continue;
        }
        if (hop_by_hop(h, &conn) || is_named(h, "content-length") || is_named(h, "expect") ||
            is_named(h, "x-forwarded-proto") || is_named(h, "x-forwarded-port"))
            continue;
        hs[n++] = *h;
    }
    xn += (size_t)snprintf(xff + xn, xff_cap - xn, "%s%s", xn ? ", " : "", req->remote_ip);
    hs[n++] = (rw_http_header_t){"X-Forwarded-For", 15, xff, xn};
    hs[n++] = (rw_http_header_t){"X-Forwarded-Proto", 17, "http", 4};
    char port_buf[16];
    int front_port = rw_http_server_port(req->server);
    int pl = snprintf(port_buf, sizeof port_buf, "%d", front_port > 0 ? front_port : 80);
    hs[n++] = (rw_http_header_t){"X-Forwarded-Port", 16, port_buf, (size_t)pl};
    if (conf->flavour == RW_HTTP_PROXY_HTTP_API) {
        fn += (size_t)snprintf(fwd + fn, fwd_cap - fn, "%sfor=", fn ? ", " : "");
        fn += forwarded_value(fwd + fn, fwd_cap - fn, req->remote_ip, strlen(req->remote_ip),
                              true);
        if (orig_host[0]) {
            fn += (size_t)snprintf(fwd + fn, fwd_cap - fn, ";host=");
            fn += forwarded_value(fwd + fn, fwd_cap - fn, orig_host, strlen(orig_host), false);
        }
        fn += (size_t)snprintf(fwd + fn, fwd_cap - fn, ";proto=http");
        hs[n++] = (rw_http_header_t){"Forwarded", 9, fwd, fn};
    }

    x = calloc(1, sizeof *x);
    if (!x) {
        rw_http_respond_error(req, 503, "Service Unavailable", "out of memory", NULL, 0);
        rc = UV_ENOMEM;
        goto out;
    }
    x->req = req;
    x->stats = stats;
    x->flavour = conf->flavour;
    const char *method = conf->http_method && strcasecmp(conf->http_method, "ANY") != 0
                             ? conf->http_method
                             : req->method;
    uint64_t timeout = conf->timeout_ms;
    if (timeout == 0)
        timeout = conf->flavour == RW_HTTP_PROXY_REST_API ? RW_HTTP_PROXY_REST_TIMEOUT_MAX_MS
                                                          : RW_HTTP_PROXY_HTTP_API_TIMEOUT_MAX_MS;
    rw_http_request_t r = {
        .method = method,
        .host = u.host,
        .port = u.port,
        .target = target,
        .headers = hs,
        .n_headers = n,
        .body_length = !req->has_body ? 0 : req->chunked ? -1 : (int64_t)req->content_length,
        .head_request = strcmp(method, "HEAD") == 0,
        .timeout_ms = timeout,
    };
    rc = rw_http_client_request(client, &r, &upstream_cbs, x, &x->up);
    if (rc < 0) {
        /* Refused before anything was sent: an invalid header or a closing client. */
        int status;
        const char *msg;
        error_answer(conf->flavour, rc, &status, &msg);
        stats->upstream_errors++;
        rw_http_respond_error(req, status, msg, NULL, NULL, 0);
        free(x);
        x = NULL;
        goto out;
    }
    req->data = x;
    rw_http_req_on_abort(req, on_client_abort);
    if (!req->has_body) {
        rw_http_creq_end(x->up, NULL, 0);
    } else {
        rc = rw_http_req_body_start(req, &client_sink, conf->max_body_bytes);
        if (rc < 0) {
            x_abort_upstream(x);
            x->req_done = true;
            if (rc == RW_ELIMIT)
                rw_http_respond_error(req, 413, "Request Entity Too Large", NULL, NULL, 0);
            else
                rw_http_res_end(req, NULL, 0);
            x_maybe_free(x);
            x = NULL;
            goto out;
        }
    }
    rc = 0;
out:
    free(url);
    free(hs);
    free(xff);
    free(fwd);
    return rc;
}
