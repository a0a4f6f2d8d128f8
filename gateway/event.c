/* Builds the API Gateway proxy events (payload 2.0, and 1.0 for REST and HTTP
 * APIs) that Lambda-proxy routes send, written straight into one JSON buffer. */
#include "event.h"

#include "base64.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

/* ---- a JSON writer over one growing buffer ------------------------------ */

typedef struct jbuf_s {
    char *p;
    size_t len;
    size_t cap;
    bool oom; /* sticky: once an allocation failed every write is a no-op */
} jbuf_t;

static bool jb_reserve(jbuf_t *jb, size_t extra)
{
    if (jb->oom)
        return false;
    if (extra > SIZE_MAX - jb->len - 1) {
        jb->oom = true;
        return false;
    }
    if (jb->len + extra + 1 <= jb->cap)
        return true;
    size_t cap = jb->cap ? jb->cap : 1024;
    while (cap < jb->len + extra + 1)
        cap = cap > SIZE_MAX / 2 ? jb->len + extra + 1 : cap * 2;
    char *p = realloc(jb->p, cap);
    if (p == NULL) {
        jb->oom = true;
        return false;
    }
    jb->p = p;
    jb->cap = cap;
    return true;
}

static void jb_put(jbuf_t *jb, const char *s, size_t n)
{
    if (!jb_reserve(jb, n))
        return;
    memcpy(jb->p + jb->len, s, n);
    jb->len += n;
}

static void jb_lit(jbuf_t *jb, const char *s)
{
    jb_put(jb, s, strlen(s));
}

/* Every value the writer produces ends in '"', a digit, 'e', 'l', '}' or ']';
 * only an opening bracket or a key's ':' must not be followed by a comma. */
static void jb_sep(jbuf_t *jb)
{
    if (jb->len > 0) {
        char last = jb->p[jb->len - 1];
        if (last != '{' && last != '[' && last != ':')
            jb_put(jb, ",", 1);
    }
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 if the bytes there are not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f))
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
            return 0;
        return 4;
    }
    return 0;
}

static bool utf8_valid(const void *p, size_t n)
{
    const unsigned char *s = p;
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq(s + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

/* Bytes a JSON string carries as they are: printable ASCII but '"' and '\\'
 * (a table: this test runs once per byte of every string). */
static const unsigned char plain_byte[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* Writes s as a JSON string. Bytes that are not valid UTF-8 become U+FFFD so
 * the event is always valid JSON; `lower` lower-cases ASCII (header names). */
static void jb_str_ex(jbuf_t *jb, const char *str, size_t n, bool lower)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    if (!jb_reserve(jb, n + 2))
        return;
    jb->p[jb->len++] = '"';
    while (i < n) {
        size_t run = i;
        /* Copy the longest stretch that needs no escaping in one go. */
        if (lower) {
            while (run < n && plain_byte[s[run]] && !(s[run] >= 'A' && s[run] <= 'Z'))
                run++;
        } else {
            while (run < n && plain_byte[s[run]])
                run++;
        }
        if (run > i) {
            jb_put(jb, (const char *)s + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = s[i];
        if (c >= 'A' && c <= 'Z') {
            char l = (char)(c + 32);
            jb_put(jb, &l, 1);
            i++;
        } else if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jb_put(jb, e, 2);
            i++;
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            switch (c) {
            case '\n':
                jb_put(jb, "\\n", 2);
                break;
            case '\r':
                jb_put(jb, "\\r", 2);
                break;
            case '\t':
                jb_put(jb, "\\t", 2);
                break;
            default:
                jb_put(jb, e, 6);
            }
            i++;
        } else {
            size_t k = utf8_seq(s + i, n - i);
            if (k == 0) {
                jb_put(jb, "\xef\xbf\xbd", 3);
                i++;
            } else {
                jb_put(jb, (const char *)s + i, k);
                i += k;
            }
        }
    }
    jb_put(jb, "\"", 1);
}

static void jb_str(jbuf_t *jb, const char *s, size_t n)
{
    jb_str_ex(jb, s, n, false);
}

/* A NUL-terminated string; NULL is written as "". */
static void jb_cstr(jbuf_t *jb, const char *s)
{
    jb_str(jb, s ? s : "", s ? strlen(s) : 0);
}

/* A NUL-terminated string; NULL is written as null. */
static void jb_cstr_or_null(jbuf_t *jb, const char *s)
{
    if (s == NULL)
        jb_lit(jb, "null");
    else
        jb_str(jb, s, strlen(s));
}

/* Starts a member: separator, then "key":. */
static void jb_key(jbuf_t *jb, const char *key)
{
    jb_sep(jb);
    jb_str(jb, key, strlen(key));
    jb_put(jb, ":", 1);
}

static void jb_i64(jbuf_t *jb, int64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%lld", (long long)v);
    jb_put(jb, num, (size_t)n);
}

/* ---- request helpers ----------------------------------------------------- */

static bool name_is(const rw_event_kv_t *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

static const rw_event_kv_t *find_header(const rw_event_request_t *rq, const char *name)
{
    for (size_t i = 0; i < rq->n_headers; i++)
        if (name_is(&rq->headers[i], name))
            return &rq->headers[i];
    return NULL;
}

/* The bare media type of a Content-Type or Accept entry: leading blanks and
 * everything from ';' on (parameters) and trailing blanks removed. */
static void bare_media_type(const char *s, size_t n, const char **out, size_t *out_len)
{
    size_t b = 0, e;
    while (b < n && (s[b] == ' ' || s[b] == '\t'))
        b++;
    e = b;
    while (e < n && s[e] != ';' && s[e] != ',')
        e++;
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t'))
        e--;
    *out = s + b;
    *out_len = e - b;
}

bool rw_event_media_type_match(const char *pattern, const char *type, size_t type_len)
{
    const char *t, *slash;
    size_t tl, pl;

    if (pattern == NULL || type == NULL)
        return false;
    bare_media_type(type, type_len, &t, &tl);
    slash = memchr(t, '/', tl);
    if (slash == NULL || slash == t || slash == t + tl - 1)
        return false;
    pl = strlen(pattern);
    if (pl == 3 && memcmp(pattern, "*/*", 3) == 0)
        return true;
    if (pl >= 2 && pattern[pl - 2] == '/' && pattern[pl - 1] == '*') {
        size_t main_len = (size_t)(slash - t);
        return main_len == pl - 2 && strncasecmp(pattern, t, main_len) == 0;
    }
    return pl == tl && strncasecmp(pattern, t, tl) == 0;
}

/* What HTTP APIs deliver as text; verified behaviour of API Gateway, which
 * base64-encodes every other body, including one without a Content-Type. */
static bool is_textual(const char *ct, size_t n)
{
    const char *t;
    size_t tl;
    static const char *const exact[] = {"application/json", "application/xml",
                                        "application/javascript"};

    bare_media_type(ct, n, &t, &tl);
    if (tl > 5 && strncasecmp(t, "text/", 5) == 0)
        return true;
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
        if (tl == strlen(exact[i]) && strncasecmp(t, exact[i], tl) == 0)
            return true;
    return false;
}

static bool route_is_http_api(const rw_event_route_t *route)
{
    return route->http_api || route->payload_version == RW_EVENT_V2;
}

bool rw_event_body_is_binary(const rw_event_route_t *route, const rw_event_request_t *rq)
{
    const rw_event_kv_t *ct = find_header(rq, "content-type");
    bool text;

    if (rq->body_len == 0)
        return false;
    if (route_is_http_api(route)) {
        text = ct != NULL && is_textual(ct->value, ct->value_len);
    } else {
        text = true;
        for (size_t i = 0; ct != NULL && i < route->n_binary_media_types; i++)
            if (rw_event_media_type_match(route->binary_media_types[i], ct->value, ct->value_len))
                text = false;
    }
    /* A JSON string cannot carry bytes that are not UTF-8: such a body goes
     * base64-encoded rather than damaged. */
    return !text || !utf8_valid(rq->body, rq->body_len);
}

/* "12/Mar/2020:19:03:58 +0000", the format of time and requestTime; month
 * names from a table, so the locale never matters. */
static void format_time(int64_t ms, char out[32])
{
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    struct tm tm;

    if (gmtime_r(&secs, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    snprintf(out, 32, "%02d/%s/%04d:%02d:%02d:%02d +0000", tm.tm_mday, months[tm.tm_mon % 12],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s into out (which has room for n bytes); a '%' not followed
 * by two hex digits stays as it is. `plus` turns '+' into ' ' (query strings,
 * as API Gateway does). Returns the decoded length. */
static size_t pct_decode(char *out, const char *s, size_t n, bool plus)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%' && i + 2 < n && hexval((unsigned char)s[i + 1]) >= 0 &&
            hexval((unsigned char)s[i + 2]) >= 0) {
            out[o++] =
                (char)(hexval((unsigned char)s[i + 1]) << 4 | hexval((unsigned char)s[i + 2]));
            i += 2;
        } else if (c == '+' && plus) {
            out[o++] = ' ';
        } else {
            out[o++] = (char)c;
        }
    }
    return o;
}

/* ---- grouping repeated names ---------------------------------------------- */

/* An entry of a sorted view over name/value pairs: equal names end up next to
 * each other, in arrival order. */
typedef struct sorted_s {
    const rw_event_kv_t *kv;
    size_t idx;
} sorted_t;

static int cmp_name_nocase(const void *a, const void *b)
{
    const sorted_t *sa = a, *sb = b;
    size_t n = sa->kv->name_len < sb->kv->name_len ? sa->kv->name_len : sb->kv->name_len;
    int c = strncasecmp(sa->kv->name, sb->kv->name, n);
    if (c == 0 && sa->kv->name_len != sb->kv->name_len)
        c = sa->kv->name_len < sb->kv->name_len ? -1 : 1;
    if (c == 0)
        c = sa->idx < sb->idx ? -1 : (sa->idx > sb->idx ? 1 : 0);
    return c;
}

static int cmp_name_bytes(const void *a, const void *b)
{
    const sorted_t *sa = a, *sb = b;
    size_t n = sa->kv->name_len < sb->kv->name_len ? sa->kv->name_len : sb->kv->name_len;
    int c = memcmp(sa->kv->name, sb->kv->name, n);
    if (c == 0 && sa->kv->name_len != sb->kv->name_len)
        c = sa->kv->name_len < sb->kv->name_len ? -1 : 1;
    if (c == 0)
        c = sa->idx < sb->idx ? -1 : (sa->idx > sb->idx ? 1 : 0);
    return c;
}

static void sort_view(sorted_t *view, const rw_event_kv_t *v, size_t n, bool nocase)
{
    for (size_t i = 0; i < n; i++) {
        view[i].kv = &v[i];
        view[i].idx = i;
    }
    qsort(view, n, sizeof(*view), nocase ? cmp_name_nocase : cmp_name_bytes);
}

/* End of the run of entries named like view[i] (headers ignore case, query
 * parameter names do not). */
static size_t group_end(const sorted_t *view, size_t n, size_t i, bool nocase)
{
    const rw_event_kv_t *first = view[i].kv;
    size_t j = i + 1;
    while (j < n) {
        const rw_event_kv_t *kv = view[j].kv;
        if (kv->name_len != first->name_len ||
            (nocase ? strncasecmp(kv->name, first->name, kv->name_len)
                    : memcmp(kv->name, first->name, kv->name_len)) != 0)
            break;
        j++;
    }
    return j;
}

/* REST 1.0's single-value map: each name with the last of its values, or null
 * when there are none. */
static void jb_last_values(jbuf_t *jb, const sorted_t *view, size_t n, bool nocase)
{
    if (n == 0) {
        jb_lit(jb, "null");
        return;
    }
    jb_put(jb, "{", 1);
    for (size_t i = 0, j; i < n; i = j) {
        j = group_end(view, n, i, nocase);
        const rw_event_kv_t *first = view[i].kv, *last = view[j - 1].kv;
        jb_sep(jb);
        jb_str(jb, first->name, first->name_len);
        jb_put(jb, ":", 1);
        jb_str(jb, last->value, last->value_len);
    }
    jb_put(jb, "}", 1);
}

/* REST 1.0's multi-value map: each name with all its values in arrival order,
 * or null when there are none. */
static void jb_all_values(jbuf_t *jb, const sorted_t *view, size_t n, bool nocase)
{
    if (n == 0) {
        jb_lit(jb, "null");
        return;
    }
    jb_put(jb, "{", 1);
    for (size_t i = 0, j; i < n; i = j) {
        const rw_event_kv_t *first = view[i].kv;
        j = group_end(view, n, i, nocase);
        jb_sep(jb);
        jb_str(jb, first->name, first->name_len);
        jb_put(jb, ":[", 2);
        for (size_t k = i; k < j; k++) {
            jb_sep(jb);
            jb_str(jb, view[k].kv->value, view[k].kv->value_len);
        }
        jb_put(jb, "]", 1);
    }
    jb_put(jb, "}", 1);
}

/* The values of view[i..j) joined with commas, as one JSON string. */
static void jb_joined(jbuf_t *jb, const sorted_t *view, size_t i, size_t j)
{
    size_t total = 1, o = 0;
    char *joined;

    if (j == i + 1) {
        jb_str(jb, view[i].kv->value, view[i].kv->value_len);
        return;
    }
    for (size_t k = i; k < j; k++)
        total += view[k].kv->value_len + 1;
    joined = malloc(total);
    if (joined == NULL) {
        jb->oom = true;
        return;
    }
    for (size_t k = i; k < j; k++) {
        if (k > i)
            joined[o++] = ',';
        memcpy(joined + o, view[k].kv->value, view[k].kv->value_len);
        o += view[k].kv->value_len;
    }
    jb_str(jb, joined, o);
    free(joined);
}

/* ---- headers: the client's, plus what API Gateway adds --------------------- */

typedef struct hdrs_s {
    rw_event_kv_t *v; /* the headers the function sees, in arrival order */
    size_t n;
    sorted_t *view; /* grouped by name, case-insensitively */
    char *scratch;  /* values the gateway made up (lengths, X-Forwarded-For) */
} hdrs_t;

static void hdrs_free(hdrs_t *h)
{
    free(h->v);
    free(h->view);
    free(h->scratch);
    memset(h, 0, sizeof(*h));
}

static void hdrs_add(hdrs_t *h, const char *name, const char *value, size_t value_len)
{
    rw_event_kv_t *kv = &h->v[h->n++];
    kv->name = name;
    kv->name_len = strlen(name);
    kv->value = value;
    kv->value_len = value_len;
}

static int hdrs_collect(hdrs_t *h, const rw_event_route_t *route, const rw_event_request_t *rq)
{
    bool http_api = route_is_http_api(route);
    bool had_te = false;
    size_t xff_len = 0, scratch_len;
    char *p;

    memset(h, 0, sizeof(*h));
    for (size_t i = 0; i < rq->n_headers; i++)
        if (name_is(&rq->headers[i], "x-forwarded-for"))
            xff_len += rq->headers[i].value_len + 2;
    scratch_len = 64 + xff_len + (rq->source_ip ? strlen(rq->source_ip) : 0);
    h->v = malloc((rq->n_headers + 5) * sizeof(*h->v));
    h->view = malloc((rq->n_headers + 5) * sizeof(*h->view));
    h->scratch = malloc(scratch_len);
    if (h->v == NULL || h->view == NULL || h->scratch == NULL) {
        hdrs_free(h);
        return UV_ENOMEM;
    }
    p = h->scratch;

    for (size_t i = 0; i < rq->n_headers; i++) {
        const rw_event_kv_t *kv = &rq->headers[i];
        if (rq->trace_id && name_is(kv, "x-amzn-trace-id"))
            continue;
        if (rq->forwarded_proto &&
            (name_is(kv, "x-forwarded-for") || name_is(kv, "x-forwarded-port") ||
             name_is(kv, "x-forwarded-proto")))
            continue;
        /* The function gets the whole body at once: a chunked framing header
         * would describe a body it never sees. */
        if (name_is(kv, "transfer-encoding")) {
            had_te = true;
            continue;
        }
        if (http_api && name_is(kv, "content-length"))
            continue;
        h->v[h->n++] = *kv;
    }
    /* HTTP APIs always tell the function the body length (even 0 for a GET);
     * REST passes the client's headers through, so only a de-chunked body
     * gets one. */
    if (http_api || had_te) {
        int n = snprintf(p, 24, "%zu", rq->body_len);
        hdrs_add(h, "Content-Length", p, (size_t)n);
        p += n;
    }
    if (rq->forwarded_proto) {
        /* The client's own list (a proxy in front of us), then the address
         * the connection came from. */
        char *xff = p;
        for (size_t i = 0; i < rq->n_headers; i++) {
            const rw_event_kv_t *kv = &rq->headers[i];
            if (!name_is(kv, "x-forwarded-for") || kv->value_len == 0)
                continue;
            memcpy(p, kv->value, kv->value_len);
            p += kv->value_len;
            memcpy(p, ", ", 2);
            p += 2;
        }
        if (rq->source_ip) {
            size_t n = strlen(rq->source_ip);
            memcpy(p, rq->source_ip, n);
            p += n;
        } else if (p > xff) {
            p -= 2;
        }
        hdrs_add(h, "X-Forwarded-For", xff, (size_t)(p - xff));
        int n = snprintf(p, 12, "%u", rq->forwarded_port);
        hdrs_add(h, "X-Forwarded-Port", p, (size_t)n);
        p += n;
        hdrs_add(h, "X-Forwarded-Proto", rq->forwarded_proto, strlen(rq->forwarded_proto));
    }
    if (rq->trace_id)
        hdrs_add(h, "X-Amzn-Trace-Id", rq->trace_id, strlen(rq->trace_id));
    sort_view(h->view, h->v, h->n, true);
    return 0;
}

/* ---- query strings -------------------------------------------------------- */

typedef struct query_s {
    rw_event_kv_t *v; /* decoded pairs, in order of appearance */
    size_t n;
    sorted_t *view; /* grouped by name (bytes) */
    char *decoded;
} query_t;

static void query_free(query_t *q)
{
    free(q->v);
    free(q->view);
    free(q->decoded);
    memset(q, 0, sizeof(*q));
}

/* Splits the raw query on '&' and decodes each name and value ('+' is a
 * space). Pieces with an empty name are dropped; "flag" alone has value "". */
static int query_parse(query_t *q, const char *raw, size_t len)
{
    size_t pairs = 1, o = 0;
    memset(q, 0, sizeof(*q));
    if (raw == NULL || len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        pairs += raw[i] == '&';
    q->v = malloc(pairs * sizeof(*q->v));
    q->view = malloc(pairs * sizeof(*q->view));
    q->decoded = malloc(len);
    if (q->v == NULL || q->view == NULL || q->decoded == NULL) {
        query_free(q);
        return UV_ENOMEM;
    }
    for (size_t b = 0; b <= len;) {
        const char *piece = raw + b;
        const char *amp = b < len ? memchr(piece, '&', len - b) : NULL;
        size_t plen = amp ? (size_t)(amp - piece) : len - b;
        const char *eq = memchr(piece, '=', plen);
        size_t nlen = eq ? (size_t)(eq - piece) : plen;
        b += plen + 1;
        if (nlen == 0)
            continue;
        rw_event_kv_t *kv = &q->v[q->n];
        kv->name = q->decoded + o;
        kv->name_len = pct_decode(q->decoded + o, piece, nlen, true);
        o += kv->name_len;
        kv->value = q->decoded + o;
        kv->value_len = eq ? pct_decode(q->decoded + o, eq + 1, plen - nlen - 1, true) : 0;
        o += kv->value_len;
        q->n++;
    }
    sort_view(q->view, q->v, q->n, false);
    return 0;
}

/* ---- shared pieces -------------------------------------------------------- */

static void write_kv_object(jbuf_t *jb, const rw_event_kv_t *kv, size_t n)
{
    jb_put(jb, "{", 1);
    for (size_t i = 0; i < n; i++) {
        jb_sep(jb);
        jb_str(jb, kv[i].name, kv[i].name_len);
        jb_put(jb, ":", 1);
        jb_str(jb, kv[i].value, kv[i].value_len);
    }
    jb_put(jb, "}", 1);
}

static void write_authorizer(jbuf_t *jb, const cJSON *authorizer)
{
    char *text = cJSON_PrintUnformatted(authorizer);
    if (text == NULL) {
        jb->oom = true;
        return;
    }
    jb_key(jb, "authorizer");
    jb_lit(jb, text);
    cJSON_free(text);
}

static void write_body(jbuf_t *jb, const rw_event_route_t *route, const rw_event_request_t *rq,
                       bool *binary)
{
    *binary = rw_event_body_is_binary(route, rq);
    if (!*binary) {
        jb_str(jb, rq->body, rq->body_len);
        return;
    }
    size_t n = rw__base64_encoded_len(rq->body_len);
    if (!jb_reserve(jb, n + 2))
        return;
    jb->p[jb->len++] = '"';
    jb->len += rw__base64_encode(jb->p + jb->len, rq->body, rq->body_len);
    jb->p[jb->len++] = '"';
}

static void domain_of(const rw_event_route_t *route, const rw_event_request_t *rq,
                      const char **name, size_t *name_len, const char **prefix, size_t *prefix_len)
{
    const rw_event_kv_t *host = find_header(rq, "host");
    if (route->domain_name) {
        *name = route->domain_name;
        *name_len = strlen(route->domain_name);
    } else if (host) {
        *name = host->value;
        *name_len = host->value_len;
    } else {
        *name = "";
        *name_len = 0;
    }
    if (route->domain_prefix) {
        *prefix = route->domain_prefix;
        *prefix_len = strlen(route->domain_prefix);
    } else {
        const char *dot = memchr(*name, '.', *name_len);
        *prefix = *name;
        *prefix_len = dot ? (size_t)(dot - *name) : *name_len;
    }
}

/* ---- payload format 2.0 ----------------------------------------------------- */

static void build_v2(jbuf_t *jb, const rw_event_route_t *route, const rw_event_request_t *rq,
                     const hdrs_t *h, const query_t *q, char *path_buf)
{
    const rw_event_kv_t *ua = find_header(rq, "user-agent");
    const char *dn, *dp;
    size_t dn_len, dp_len, i, j;
    bool any, binary = false;
    char when[32];

    jb_lit(jb, "{\"version\":\"2.0\"");
    jb_key(jb, "routeKey");
    jb_cstr(jb, route->route_key ? route->route_key : "$default");
    jb_key(jb, "rawPath");
    jb_str(jb, rq->raw_path, rq->raw_path_len);
    jb_key(jb, "rawQueryString");
    jb_str(jb, rq->raw_query ? rq->raw_query : "", rq->raw_query ? rq->raw_query_len : 0);

    /* Cookie headers become the cookies array, one entry per "name=value";
     * they are left out of headers, as API Gateway does. */
    any = false;
    for (i = 0; i < h->n; i++) {
        const rw_event_kv_t *kv = &h->v[i];
        if (!name_is(kv, "cookie"))
            continue;
        for (size_t b = 0; b < kv->value_len;) {
            const char *semi = memchr(kv->value + b, ';', kv->value_len - b);
            size_t e = semi ? (size_t)(semi - kv->value) : kv->value_len;
            size_t s = b, t = e;
            while (s < t && (kv->value[s] == ' ' || kv->value[s] == '\t'))
                s++;
            while (t > s && (kv->value[t - 1] == ' ' || kv->value[t - 1] == '\t'))
                t--;
            if (t > s) {
                if (!any) {
                    jb_key(jb, "cookies");
                    jb_put(jb, "[", 1);
                    any = true;
                }
                jb_sep(jb);
                jb_str(jb, kv->value + s, t - s);
            }
            b = e + 1;
        }
    }
    if (any)
        jb_put(jb, "]", 1);

    /* Duplicate headers are joined with commas under their lower-cased name. */
    jb_key(jb, "headers");
    jb_put(jb, "{", 1);
    for (i = 0; i < h->n; i = j) {
        const rw_event_kv_t *first = h->view[i].kv;
        j = group_end(h->view, h->n, i, true);
        if (name_is(first, "cookie"))
            continue;
        jb_sep(jb);
        jb_str_ex(jb, first->name, first->name_len, true);
        jb_put(jb, ":", 1);
        jb_joined(jb, h->view, i, j);
    }
    jb_put(jb, "}", 1);

    /* Repeated parameters too, decoded. */
    if (q->n > 0) {
        jb_key(jb, "queryStringParameters");
        jb_put(jb, "{", 1);
        for (i = 0; i < q->n; i = j) {
            const rw_event_kv_t *first = q->view[i].kv;
            j = group_end(q->view, q->n, i, false);
            jb_sep(jb);
            jb_str(jb, first->name, first->name_len);
            jb_put(jb, ":", 1);
            jb_joined(jb, q->view, i, j);
        }
        jb_put(jb, "}", 1);
    }

    jb_key(jb, "requestContext");
    jb_lit(jb, "{");
    jb_key(jb, "accountId");
    jb_cstr(jb, route->account_id);
    jb_key(jb, "apiId");
    jb_cstr(jb, route->api_id);
    if (route->authorizer)
        write_authorizer(jb, route->authorizer);
    domain_of(route, rq, &dn, &dn_len, &dp, &dp_len);
    jb_key(jb, "domainName");
    jb_str(jb, dn, dn_len);
    jb_key(jb, "domainPrefix");
    jb_str(jb, dp, dp_len);
    jb_key(jb, "http");
    jb_lit(jb, "{");
    jb_key(jb, "method");
    jb_cstr(jb, rq->method);
    jb_key(jb, "path");
    jb_str(jb, path_buf, pct_decode(path_buf, rq->raw_path, rq->raw_path_len, false));
    jb_key(jb, "protocol");
    jb_cstr(jb, rq->protocol ? rq->protocol : "HTTP/1.1");
    jb_key(jb, "sourceIp");
    jb_cstr(jb, rq->source_ip);
    jb_key(jb, "userAgent");
    jb_str(jb, ua ? ua->value : "", ua ? ua->value_len : 0);
    jb_lit(jb, "}");
    jb_key(jb, "requestId");
    jb_cstr(jb, rq->request_id);
    jb_key(jb, "routeKey");
    jb_cstr(jb, route->route_key ? route->route_key : "$default");
    jb_key(jb, "stage");
    jb_cstr(jb, route->stage ? route->stage : "$default");
    format_time(rq->time_ms, when);
    jb_key(jb, "time");
    jb_lit(jb, "\"");
    jb_lit(jb, when);
    jb_lit(jb, "\"");
    jb_key(jb, "timeEpoch");
    jb_i64(jb, rq->time_ms);
    jb_lit(jb, "}");

    if (rq->body_len > 0) {
        jb_key(jb, "body");
        write_body(jb, route, rq, &binary);
    }
    if (route->n_path_params > 0) {
        jb_key(jb, "pathParameters");
        write_kv_object(jb, route->path_params, route->n_path_params);
    }
    jb_key(jb, "isBase64Encoded");
    jb_lit(jb, binary ? "true" : "false");
    if (route->n_stage_vars > 0) {
        jb_key(jb, "stageVariables");
        write_kv_object(jb, route->stage_vars, route->n_stage_vars);
    }
    jb_lit(jb, "}");
}

/* ---- payload format 1.0 ----------------------------------------------------- */

static void build_v1(jbuf_t *jb, const rw_event_route_t *route, const rw_event_request_t *rq,
                     const hdrs_t *h, const query_t *q)
{
    static const rw_event_identity_t no_identity;
    const rw_event_identity_t *id = route->identity ? route->identity : &no_identity;
    const rw_event_kv_t *ua = find_header(rq, "user-agent");
    size_t skip = route->stage_prefix_len < rq->raw_path_len ? route->stage_prefix_len : 0;
    const char *path = rq->raw_path + skip;
    size_t path_len = rq->raw_path_len - skip;
    const char *dn, *dp;
    size_t dn_len, dp_len;
    bool binary = false;
    char when[32];

    if (path_len == 0 || path[0] != '/') {
        path = "/";
        path_len = 1;
    }
    jb_lit(jb, "{");
    if (route->http_api) {
        jb_key(jb, "version");
        jb_lit(jb, "\"1.0\"");
    }
    jb_key(jb, "resource");
    if (route->resource_path)
        jb_cstr(jb, route->resource_path);
    else
        jb_str(jb, path, path_len);
    jb_key(jb, "path");
    jb_str(jb, path, path_len);
    jb_key(jb, "httpMethod");
    jb_cstr(jb, rq->method);

    /* headers keeps the last value of a repeated header (as API Gateway does);
     * multiValueHeaders keeps them all, in arrival order. A name repeated in
     * another case is one header, spelled as it first arrived. */
    jb_key(jb, "headers");
    jb_last_values(jb, h->view, h->n, true);
    jb_key(jb, "multiValueHeaders");
    jb_all_values(jb, h->view, h->n, true);
    jb_key(jb, "queryStringParameters");
    jb_last_values(jb, q->view, q->n, false);
    jb_key(jb, "multiValueQueryStringParameters");
    jb_all_values(jb, q->view, q->n, false);

    jb_key(jb, "requestContext");
    jb_lit(jb, "{");
    jb_key(jb, "accountId");
    jb_cstr(jb, route->account_id);
    jb_key(jb, "apiId");
    jb_cstr(jb, route->api_id);
    if (route->authorizer) {
        write_authorizer(jb, route->authorizer);
    } else if (route->http_api) {
        jb_key(jb, "authorizer");
        jb_lit(jb, "{\"claims\":null,\"scopes\":null}");
    }
    domain_of(route, rq, &dn, &dn_len, &dp, &dp_len);
    jb_key(jb, "domainName");
    jb_str(jb, dn, dn_len);
    jb_key(jb, "domainPrefix");
    jb_str(jb, dp, dp_len);
    jb_key(jb, "extendedRequestId");
    jb_cstr(jb, rq->extended_request_id ? rq->extended_request_id : rq->request_id);
    jb_key(jb, "httpMethod");
    jb_cstr(jb, rq->method);
    jb_key(jb, "identity");
    jb_lit(jb, "{");
    jb_key(jb, "accessKey");
    jb_cstr_or_null(jb, id->access_key);
    jb_key(jb, "accountId");
    jb_cstr_or_null(jb, id->account_id);
    if (id->api_key) {
        jb_key(jb, "apiKey");
        jb_cstr(jb, id->api_key);
        jb_key(jb, "apiKeyId");
        jb_cstr_or_null(jb, id->api_key_id);
    }
    jb_key(jb, "caller");
    jb_cstr_or_null(jb, id->caller);
    jb_key(jb, "cognitoAuthenticationProvider");
    jb_cstr_or_null(jb, id->cognito_authentication_provider);
    jb_key(jb, "cognitoAuthenticationType");
    jb_cstr_or_null(jb, id->cognito_authentication_type);
    jb_key(jb, "cognitoIdentityId");
    jb_cstr_or_null(jb, id->cognito_identity_id);
    jb_key(jb, "cognitoIdentityPoolId");
    jb_cstr_or_null(jb, id->cognito_identity_pool_id);
    jb_key(jb, "principalOrgId");
    jb_cstr_or_null(jb, id->principal_org_id);
    jb_key(jb, "sourceIp");
    jb_cstr(jb, rq->source_ip);
    jb_key(jb, "user");
    jb_cstr_or_null(jb, id->user);
    jb_key(jb, "userAgent");
    if (ua)
        jb_str(jb, ua->value, ua->value_len);
    else
        jb_lit(jb, "null");
    jb_key(jb, "userArn");
    jb_cstr_or_null(jb, id->user_arn);
    jb_lit(jb, "}");
    jb_key(jb, "path");
    jb_str(jb, rq->raw_path, rq->raw_path_len);
    jb_key(jb, "protocol");
    jb_cstr(jb, rq->protocol ? rq->protocol : "HTTP/1.1");
    jb_key(jb, "requestId");
    jb_cstr(jb, rq->request_id);
    format_time(rq->time_ms, when);
    jb_key(jb, "requestTime");
    jb_lit(jb, "\"");
    jb_lit(jb, when);
    jb_lit(jb, "\"");
    jb_key(jb, "requestTimeEpoch");
    jb_i64(jb, rq->time_ms);
    jb_key(jb, "resourceId");
    jb_cstr_or_null(jb, route->resource_id);
    jb_key(jb, "resourcePath");
    if (route->resource_path)
        jb_cstr(jb, route->resource_path);
    else
        jb_str(jb, path, path_len);
    jb_key(jb, "stage");
    jb_cstr(jb, route->stage ? route->stage : "$default");
    jb_lit(jb, "}");

    jb_key(jb, "pathParameters");
    if (route->n_path_params > 0)
        write_kv_object(jb, route->path_params, route->n_path_params);
    else
        jb_lit(jb, "null");
    jb_key(jb, "stageVariables");
    if (route->n_stage_vars > 0)
        write_kv_object(jb, route->stage_vars, route->n_stage_vars);
    else
        jb_lit(jb, "null");
    jb_key(jb, "body");
    if (rq->body_len > 0)
        write_body(jb, route, rq, &binary);
    else
        jb_lit(jb, "null");
    jb_key(jb, "isBase64Encoded");
    jb_lit(jb, binary ? "true" : "false");
    jb_lit(jb, "}");
}

int rw_event_build(const rw_event_route_t *route, const rw_event_request_t *rq, char **json,
                   size_t *json_len)
{
    jbuf_t jb = {0};
    hdrs_t h = {0};
    query_t q = {0};
    char *path_buf = NULL;
    int err;

    if (json)
        *json = NULL;
    if (json_len)
        *json_len = 0;
    if (route == NULL || rq == NULL || json == NULL || rq->method == NULL || rq->raw_path == NULL ||
        (rq->body == NULL && rq->body_len > 0) || (rq->headers == NULL && rq->n_headers > 0) ||
        (route->path_params == NULL && route->n_path_params > 0) ||
        (route->stage_vars == NULL && route->n_stage_vars > 0) ||
        (route->payload_version != RW_EVENT_V1 && route->payload_version != RW_EVENT_V2))
        return UV_EINVAL;

    err = hdrs_collect(&h, route, rq);
    if (err)
        goto out;
    err = query_parse(&q, rq->raw_query, rq->raw_query_len);
    if (err)
        goto out;
    /* Room for the whole event in one go in the common case: the body (maybe
     * base64) plus the request line and headers, twice for the 1.0 maps. */
    size_t guess =
        1024 + rq->raw_path_len * 3 + rq->raw_query_len * 3 + rw__base64_encoded_len(rq->body_len);
    for (size_t i = 0; i < rq->n_headers; i++)
        guess += (rq->headers[i].name_len + rq->headers[i].value_len + 8) * 2;
    jb_reserve(&jb, guess);

    if (route->payload_version == RW_EVENT_V2) {
        path_buf = malloc(rq->raw_path_len + 1);
        if (path_buf == NULL) {
            err = UV_ENOMEM;
            goto out;
        }
        build_v2(&jb, route, rq, &h, &q, path_buf);
    } else {
        build_v1(&jb, route, rq, &h, &q);
    }
    if (jb.oom) {
        err = UV_ENOMEM;
        goto out;
    }
    jb.p[jb.len] = '\0';
    *json = jb.p;
    if (json_len)
        *json_len = jb.len;
    jb.p = NULL;
    err = 0;
out:
    free(jb.p);
    free(path_buf);
    hdrs_free(&h);
    query_free(&q);
    return err;
}
