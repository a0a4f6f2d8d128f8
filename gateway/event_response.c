/* Maps what a Lambda-proxy function returned (payload format 1.0 or 2.0) to the
 * status, headers and body the gateway sends, or refuses it with a reason. */
#include "event.h"

#include "base64.h"
#include "http_fields.h"
#include "reelway/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

/* Deeper nesting than any sane answer; bounds the parser's recursion. */
#define MAX_DEPTH 256

/* ---- a validating pull parser ------------------------------------------------ */

/* Not cJSON: it cuts strings at an escaped NUL ("\u0000"), so it could neither
 * carry such a body nor notice such a header. This parser checks the whole
 * text once, then walks the parts it needs in place, decoding only the
 * strings it keeps. */

/* A JSON value in the input: its first byte and length. */
typedef struct span_s {
    const char *p;
    size_t len;
} span_t;

enum jtype { J_NONE, J_OBJECT, J_ARRAY, J_STRING, J_NUMBER, J_TRUE, J_FALSE, J_NULL };

static enum jtype type_of(span_t v)
{
    if (v.p == NULL || v.len == 0)
        return J_NONE;
    switch (v.p[0]) {
    case '{':
        return J_OBJECT;
    case '[':
        return J_ARRAY;
    case '"':
        return J_STRING;
    case 't':
        return J_TRUE;
    case 'f':
        return J_FALSE;
    case 'n':
        return J_NULL;
    default:
        return J_NUMBER;
    }
}

static const char *type_name(span_t v)
{
    static const char *const names[] = {"nothing",  "an object", "an array", "a string",
                                        "a number", "true",      "false",    "null"};
    return names[type_of(v)];
}

typedef struct reader_s {
    const char *s;
    size_t n;
    char *why;
    size_t whylen;
} reader_t;

static int fail(reader_t *r, const char *fmt, ...)
{
    va_list ap;
    if (r->why && r->whylen) {
        va_start(ap, fmt);
        vsnprintf(r->why, r->whylen, fmt, ap);
        va_end(ap);
    }
    return RW_EPARSE;
}

static void skip_ws(const reader_t *r, size_t *i)
{
    while (*i < r->n &&
           (r->s[*i] == ' ' || r->s[*i] == '\t' || r->s[*i] == '\n' || r->s[*i] == '\r'))
        (*i)++;
}

static int hexdig(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int skip_string(reader_t *r, size_t *i)
{
    size_t start = *i;
    (*i)++; /* the opening quote */
    while (*i < r->n) {
        unsigned char c = (unsigned char)r->s[*i];
        if (c == '"') {
            (*i)++;
            return 0;
        }
        if (c < 0x20)
            return fail(r,
                        "response is not valid JSON: control character in a string at "
                        "offset %zu",
                        *i);
        if (c == '\\') {
            if (*i + 1 >= r->n)
                break;
            char e = r->s[*i + 1];
            if (e == 'u') {
                if (*i + 5 >= r->n)
                    break;
                for (int k = 2; k < 6; k++)
                    if (hexdig(r->s[*i + k]) < 0)
                        return fail(r, "response is not valid JSON: bad \\u escape at offset %zu",
                                    *i);
                *i += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == '\0')
                return fail(r, "response is not valid JSON: bad escape at offset %zu", *i);
            *i += 2;
            continue;
        }
        (*i)++;
    }
    return fail(r, "response is not valid JSON: unterminated string at offset %zu", start);
}

static int skip_number(reader_t *r, size_t *i)
{
    size_t start = *i, digits;
    if (*i < r->n && r->s[*i] == '-')
        (*i)++;
    if (*i < r->n && r->s[*i] == '0') {
        (*i)++;
    } else {
        digits = *i;
        while (*i < r->n && r->s[*i] >= '0' && r->s[*i] <= '9')
            (*i)++;
        if (*i == digits)
            return fail(r, "response is not valid JSON: unexpected %s at offset %zu",
                        start < r->n ? "character" : "end", start);
    }
    if (*i < r->n && r->s[*i] == '.') {
        (*i)++;
        digits = *i;
        while (*i < r->n && r->s[*i] >= '0' && r->s[*i] <= '9')
            (*i)++;
        if (*i == digits)
            return fail(r, "response is not valid JSON: bad number at offset %zu", start);
    }
    if (*i < r->n && (r->s[*i] == 'e' || r->s[*i] == 'E')) {
        (*i)++;
        if (*i < r->n && (r->s[*i] == '+' || r->s[*i] == '-'))
            (*i)++;
        digits = *i;
        while (*i < r->n && r->s[*i] >= '0' && r->s[*i] <= '9')
            (*i)++;
        if (*i == digits)
            return fail(r, "response is not valid JSON: bad number at offset %zu", start);
    }
    return 0;
}

static int skip_literal(reader_t *r, size_t *i, const char *word)
{
    size_t n = strlen(word);
    if (r->n - *i < n || memcmp(r->s + *i, word, n) != 0)
        return fail(r, "response is not valid JSON: unexpected character at offset %zu", *i);
    *i += n;
    return 0;
}

/* Checks the value starting at *i (after blanks) and moves past it. */
static int skip_value(reader_t *r, size_t *i, int depth)
{
    int err;
    if (depth > MAX_DEPTH)
        return fail(r, "response is not valid JSON: nested deeper than %d at offset %zu", MAX_DEPTH,
                    *i);
    skip_ws(r, i);
    if (*i >= r->n)
        return fail(r, "response is not valid JSON: unexpected end at offset %zu", *i);
    switch (r->s[*i]) {
    case '{':
    case '[': {
        char close = r->s[*i] == '{' ? '}' : ']';
        bool object = close == '}';
        (*i)++;
        skip_ws(r, i);
        if (*i < r->n && r->s[*i] == close) {
            (*i)++;
            return 0;
        }
        for (;;) {
            if (object) {
                skip_ws(r, i);
                if (*i >= r->n || r->s[*i] != '"')
                    return fail(r, "response is not valid JSON: expected a key at offset %zu", *i);
                if ((err = skip_string(r, i)))
                    return err;
                skip_ws(r, i);
                if (*i >= r->n || r->s[*i] != ':')
                    return fail(r, "response is not valid JSON: expected ':' at offset %zu", *i);
                (*i)++;
            }
            if ((err = skip_value(r, i, depth + 1)))
                return err;
            skip_ws(r, i);
            if (*i < r->n && r->s[*i] == ',') {
                (*i)++;
                continue;
            }
            if (*i < r->n && r->s[*i] == close) {
                (*i)++;
                return 0;
            }
            return fail(r, "response is not valid JSON: expected ',' or '%c' at offset %zu", close,
                        *i);
        }
    }
    case '"':
        return skip_string(r, i);
    case 't':
        return skip_literal(r, i, "true");
    case 'f':
        return skip_literal(r, i, "false");
    case 'n':
        return skip_literal(r, i, "null");
    default:
        return skip_number(r, i);
    }
}

/* Iterates an object already validated: *cur starts at 0. Returns false at
 * the end, else the member's raw key (quotes included) and value. */
static bool object_next(span_t obj, size_t *cur, span_t *key, span_t *val)
{
    reader_t r = {obj.p, obj.len, NULL, 0};
    size_t i = *cur ? *cur : 1;

    skip_ws(&r, &i);
    if (i < r.n && r.s[i] == ',')
        i++;
    skip_ws(&r, &i);
    if (i >= r.n || r.s[i] == '}')
        return false;
    key->p = r.s + i;
    skip_string(&r, &i);
    key->len = (size_t)(r.s + i - key->p);
    skip_ws(&r, &i);
    i++; /* ':' */
    skip_ws(&r, &i);
    val->p = r.s + i;
    skip_value(&r, &i, 0);
    val->len = (size_t)(r.s + i - val->p);
    *cur = i;
    return true;
}

static bool array_next(span_t arr, size_t *cur, span_t *val)
{
    reader_t r = {arr.p, arr.len, NULL, 0};
    size_t i = *cur ? *cur : 1;

    skip_ws(&r, &i);
    if (i < r.n && r.s[i] == ',')
        i++;
    skip_ws(&r, &i);
    if (i >= r.n || r.s[i] == ']')
        return false;
    val->p = r.s + i;
    skip_value(&r, &i, 0);
    val->len = (size_t)(r.s + i - val->p);
    *cur = i;
    return true;
}

static void put_utf8(char *out, size_t *o, unsigned cp)
{
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xc0 | cp >> 6);
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xe0 | cp >> 12);
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        out[(*o)++] = (char)(0xf0 | cp >> 18);
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[(*o)++] = (char)(0x80 | (cp & 0x3f));
    }
}

static unsigned hex4(const char *p)
{
    return (unsigned)(hexdig(p[0]) << 12 | hexdig(p[1]) << 8 | hexdig(p[2]) << 4 | hexdig(p[3]));
}

/* Decodes a validated JSON string into out, which has room for str.len bytes
 * (an escape never decodes to more bytes than it takes). A lone surrogate
 * becomes U+FFFD. Returns the decoded length. */
static size_t decode_string(span_t str, char *out)
{
    size_t o = 0;
    const char *p = str.p + 1, *end = str.p + str.len - 1;

    while (p < end) {
        if (*p != '\\') {
            const char *bs = memchr(p, '\\', (size_t)(end - p));
            size_t run = bs ? (size_t)(bs - p) : (size_t)(end - p);
            memcpy(out + o, p, run);
            o += run;
            p += run;
            continue;
        }
        char e = p[1];
        p += 2;
        switch (e) {
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'n':
            out[o++] = '\n';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'u': {
            unsigned cp = hex4(p);
            p += 4;
            if (cp >= 0xd800 && cp <= 0xdbff && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                unsigned lo = hex4(p + 2);
                if (lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    p += 6;
                }
            }
            if (cp >= 0xd800 && cp <= 0xdfff)
                cp = 0xfffd;
            put_utf8(out, &o, cp);
            break;
        }
        default: /* '"', '\\', '/' */
            out[o++] = e;
        }
    }
    return o;
}

/* Compares a raw key (quotes and escapes included) with a plain name. */
static bool key_is(span_t key, const char *name)
{
    char buf[128];
    if (key.len > sizeof(buf))
        return false;
    size_t n = decode_string(key, buf);
    return n == strlen(name) && memcmp(buf, name, n) == 0;
}

/* ---- the mapped response ----------------------------------------------------- */

typedef struct builder_s {
    rw_fields_t f; /* the headers, names and values NUL-terminated */
    reader_t *r;
} builder_t;

/* A printable, bounded copy of a name for error messages (it goes to logs). */
static const char *printable(const char *s, size_t n, char out[52])
{
    size_t o = 0;
    for (size_t i = 0; i < n && o < 48; i++)
        out[o++] = s[i] > 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (n > 48) {
        out[o++] = '.';
        out[o++] = '.';
    }
    out[o] = '\0';
    return out;
}

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Headers that frame the message or belong to one hop: the function must not
 * change how the gateway frames its answer, so they travel renamed. */
static bool is_remapped(const char *name, size_t n)
{
    static const char *const names[] = {
        "connection", "content-length",    "date",   "keep-alive", "server", "te",
        "trailer",    "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i]) == n && strncasecmp(names[i], name, n) == 0)
            return true;
    return false;
}

/* Checks and stores one header. `where` names the field for messages. */
static int add_header(builder_t *b, const char *where, const char *name, size_t name_len,
                      const char *value, size_t value_len)
{
    static const char remap[] = "x-amzn-Remapped-";
    char shown[52];

    if (name_len == 0)
        return fail(b->r, "%s: empty header name", where);
    for (size_t i = 0; i < name_len; i++)
        if (!is_tchar((unsigned char)name[i]))
            return fail(b->r, "%s: invalid header name \"%s\" (byte 0x%02x at %zu)", where,
                        printable(name, name_len, shown), (unsigned char)name[i], i);
    for (size_t i = 0; i < value_len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c == '\r' || c == '\n')
            return fail(b->r, "%s.%s: value contains CR or LF at offset %zu", where,
                        printable(name, name_len, shown), i);
        if (c == 0)
            return fail(b->r, "%s.%s: value contains NUL at offset %zu", where,
                        printable(name, name_len, shown), i);
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return fail(b->r, "%s.%s: value contains control character 0x%02x at offset %zu", where,
                        printable(name, name_len, shown), c, i);
    }
    /* A framing header travels under the prefix: its name is given in two pieces. */
    if (is_remapped(name, name_len) && rw_fields_name(&b->f, remap, sizeof(remap) - 1) != 0)
        return UV_ENOMEM;
    if (rw_fields_name(&b->f, name, name_len) != 0 || rw_fields_name_done(&b->f) != 0 ||
        rw_fields_value(&b->f, value, value_len) != 0 || rw_fields_value_done(&b->f) != 0)
        return UV_ENOMEM;
    return 0;
}

/* A header value given as a JSON scalar: a string (decoded), a number (as
 * written) or a boolean. */
static int add_scalar_header(builder_t *b, const char *where, const char *name, size_t name_len,
                             span_t v)
{
    char shown[52];
    switch (type_of(v)) {
    case J_STRING: {
        char *dec = malloc(v.len);
        if (dec == NULL)
            return UV_ENOMEM;
        size_t n = decode_string(v, dec);
        int err = add_header(b, where, name, name_len, dec, n);
        free(dec);
        return err;
    }
    case J_NUMBER:
    case J_TRUE:
    case J_FALSE:
        return add_header(b, where, name, name_len, v.p, v.len);
    default:
        return fail(b->r, "%s.%s: value must be a string, number or boolean, not %s", where,
                    printable(name, name_len, shown), type_name(v));
    }
}

/* Decodes a raw key into a malloc'd buffer. */
static char *decode_key(span_t key, size_t *len)
{
    char *out = malloc(key.len);
    if (out != NULL)
        *len = decode_string(key, out);
    return out;
}

/* The decoded member names of an object, sorted without regard to case, so a
 * headers map can be checked against a multiValueHeaders map in n log n. */
typedef struct names_s {
    span_t *v;
    size_t n;
    char *buf;
} names_t;

static int cmp_span_nocase(const void *a, const void *b)
{
    const span_t *x = a, *y = b;
    int c = strncasecmp(x->p, y->p, x->len < y->len ? x->len : y->len);
    if (c == 0 && x->len != y->len)
        c = x->len < y->len ? -1 : 1;
    return c;
}

static void names_free(names_t *names)
{
    free(names->v);
    free(names->buf);
    memset(names, 0, sizeof(*names));
}

static int names_of(span_t obj, names_t *names)
{
    size_t cur = 0, count = 0, o = 0;
    span_t k, v;

    memset(names, 0, sizeof(*names));
    while (object_next(obj, &cur, &k, &v))
        count++;
    names->v = malloc((count ? count : 1) * sizeof(*names->v));
    names->buf = malloc(obj.len ? obj.len : 1);
    if (names->v == NULL || names->buf == NULL) {
        names_free(names);
        return UV_ENOMEM;
    }
    cur = 0;
    while (object_next(obj, &cur, &k, &v)) {
        span_t *name = &names->v[names->n++];
        name->p = names->buf + o;
        name->len = decode_string(k, names->buf + o);
        o += name->len;
    }
    qsort(names->v, names->n, sizeof(*names->v), cmp_span_nocase);
    return 0;
}

static bool names_have(const names_t *names, const char *name, size_t len)
{
    span_t key = {name, len};
    return names->n > 0 &&
           bsearch(&key, names->v, names->n, sizeof(*names->v), cmp_span_nocase) != NULL;
}

static int add_headers_object(builder_t *b, span_t headers, span_t multi)
{
    names_t multi_names = {0};
    size_t cur = 0;
    span_t k, v;
    int err = 0;

    if (type_of(headers) != J_OBJECT)
        return fail(b->r, "headers must be an object, not %s", type_name(headers));
    if (type_of(multi) == J_OBJECT && (err = names_of(multi, &multi_names)))
        return err;
    while (object_next(headers, &cur, &k, &v)) {
        size_t n;
        char *name = decode_key(k, &n);
        if (name == NULL) {
            err = UV_ENOMEM;
            break;
        }
        /* A name that multiValueHeaders also sets takes only those values. */
        if (!names_have(&multi_names, name, n))
            err = add_scalar_header(b, "headers", name, n, v);
        free(name);
        if (err)
            break;
    }
    names_free(&multi_names);
    return err;
}

static int add_multi_headers(builder_t *b, span_t multi)
{
    char shown[52];
    size_t cur = 0;
    span_t k, v;
    int err = 0;

    if (type_of(multi) != J_OBJECT)
        return fail(b->r, "multiValueHeaders must be an object, not %s", type_name(multi));
    while (object_next(multi, &cur, &k, &v)) {
        size_t n, acur = 0;
        span_t item;
        char *name = decode_key(k, &n);
        if (name == NULL)
            return UV_ENOMEM;
        if (type_of(v) != J_ARRAY) {
            err = fail(b->r, "multiValueHeaders.%s: must be an array, not %s",
                       printable(name, n, shown), type_name(v));
            free(name);
            return err;
        }
        while (array_next(v, &acur, &item)) {
            if ((err = add_scalar_header(b, "multiValueHeaders", name, n, item)))
                break;
        }
        free(name);
        if (err)
            return err;
    }
    return 0;
}

static int add_cookies(builder_t *b, span_t cookies)
{
    size_t cur = 0, i = 0;
    span_t item;
    int err;

    if (type_of(cookies) != J_ARRAY)
        return fail(b->r, "cookies must be an array of strings, not %s", type_name(cookies));
    while (array_next(cookies, &cur, &item)) {
        if (type_of(item) != J_STRING)
            return fail(b->r, "cookies[%zu] must be a string, not %s", i, type_name(item));
        char *dec = malloc(item.len);
        if (dec == NULL)
            return UV_ENOMEM;
        size_t n = decode_string(item, dec);
        char where[32];
        snprintf(where, sizeof(where), "cookies[%zu]", i);
        err = add_header(b, where, "Set-Cookie", 10, dec, n);
        free(dec);
        if (err)
            return err;
        i++;
    }
    return 0;
}

static const rw_event_kv_t *request_header(const rw_event_request_t *rq, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; rq && i < rq->n_headers; i++)
        if (rq->headers[i].name_len == n && strncasecmp(rq->headers[i].name, name, n) == 0)
            return &rq->headers[i];
    return NULL;
}

/* Whether a base64 body is turned back into bytes: HTTP APIs always do; a
 * REST API only when the first media type the client accepts is binary. */
static bool decode_allowed(const rw_event_route_t *route, const rw_event_request_t *rq)
{
    const rw_event_kv_t *accept;
    if (route->http_api || route->payload_version == RW_EVENT_V2)
        return true;
    accept = request_header(rq, "accept");
    if (accept == NULL)
        return false;
    for (size_t i = 0; i < route->n_binary_media_types; i++)
        if (rw_event_media_type_match(route->binary_media_types[i], accept->value,
                                      accept->value_len))
            return true;
    return false;
}

static int parse_status(reader_t *r, span_t v, int *status)
{
    char num[64];
    double d;

    if (type_of(v) == J_NONE)
        return fail(r, "statusCode is missing");
    if (type_of(v) != J_NUMBER)
        return fail(r, "statusCode must be an integer, not %s", type_name(v));
    if (v.len >= sizeof(num))
        return fail(r, "statusCode %.20s... is out of range 100-599", v.p);
    memcpy(num, v.p, v.len);
    num[v.len] = '\0';
    d = strtod(num, NULL);
    if (!(d >= 100 && d <= 599))
        return fail(r, "statusCode %s is out of range 100-599", num);
    if (d != (double)(int)d)
        return fail(r, "statusCode must be an integer, not %s", num);
    *status = (int)d;
    return 0;
}

static int finish(builder_t *b, rw_event_response_t *out)
{
    out->headers = calloc(b->f.n ? b->f.n : 1, sizeof(*out->headers));
    if (out->headers == NULL)
        return UV_ENOMEM;
    rw_fields_export(&b->f, 0, b->f.n, out->headers);
    out->n_headers = b->f.n;
    out->strings_ = b->f.bytes; /* the headers point into it: the response owns it now */
    b->f.bytes = NULL;
    return 0;
}

static int set_body(rw_event_response_t *out, const char *p, size_t n)
{
    out->body = malloc(n + 1);
    if (out->body == NULL)
        return UV_ENOMEM;
    memcpy(out->body, p, n);
    out->body[n] = '\0';
    out->body_len = n;
    return 0;
}

int rw_event_response_parse(const rw_event_route_t *route, const rw_event_request_t *rq,
                            const char *json, size_t len, rw_event_response_t *out, char *why,
                            size_t whylen)
{
    reader_t r = {json, len, why, whylen};
    builder_t b = {0};
    span_t top, status = {0}, headers = {0}, multi = {0}, cookies = {0}, body = {0}, b64 = {0};
    size_t i = 0;
    bool v2, is_b64 = false;
    int err;

    if (why && whylen)
        why[0] = '\0';
    if (out == NULL || route == NULL || (json == NULL && len > 0))
        return UV_EINVAL;
    memset(out, 0, sizeof(*out));
    b.r = &r;
    v2 = route->payload_version == RW_EVENT_V2;

    skip_ws(&r, &i);
    if (i >= len) {
        err = fail(&r, "response is empty");
        goto out;
    }
    top.p = json + i;
    if ((err = skip_value(&r, &i, 0)))
        goto out;
    top.len = (size_t)(json + i - top.p);
    skip_ws(&r, &i);
    if (i < len) {
        err = fail(&r, "response is not valid JSON: unexpected data after the value at offset %zu",
                   i);
        goto out;
    }

    if (type_of(top) == J_OBJECT) {
        size_t cur = 0;
        span_t k, v;
        /* As in JavaScript's JSON.parse, the last of repeated keys wins. */
        while (object_next(top, &cur, &k, &v)) {
            if (key_is(k, "statusCode"))
                status = v;
            else if (key_is(k, "headers"))
                headers = v;
            else if (key_is(k, "multiValueHeaders"))
                multi = v;
            else if (key_is(k, "cookies"))
                cookies = v;
            else if (key_is(k, "body"))
                body = v;
            else if (key_is(k, "isBase64Encoded"))
                b64 = v;
        }
    }

    /* 2.0's inferred format: any valid JSON without a statusCode is the body
     * of a 200 application/json answer; a JSON string gives its content. */
    if (v2 && type_of(status) == J_NONE) {
        out->status = 200;
        if ((err = add_header(&b, "inferred", "Content-Type", 12, "application/json", 16)))
            goto out;
        if (type_of(top) == J_STRING) {
            out->body = malloc(top.len + 1);
            if (out->body == NULL) {
                err = UV_ENOMEM;
                goto out;
            }
            out->body_len = decode_string(top, out->body);
            out->body[out->body_len] = '\0';
        } else if ((err = set_body(out, top.p, top.len))) {
            goto out;
        }
        err = finish(&b, out);
        goto out;
    }
    if (type_of(top) != J_OBJECT) {
        err = fail(&r, "response must be a JSON object, not %s", type_name(top));
        goto out;
    }
    if ((err = parse_status(&r, status, &out->status)))
        goto out;

    if (!v2 && type_of(multi) == J_NULL)
        multi = (span_t){0};
    if (type_of(headers) != J_NONE && type_of(headers) != J_NULL &&
        (err = add_headers_object(&b, headers, v2 ? (span_t){0} : multi)))
        goto out;
    if (!v2 && type_of(multi) != J_NONE && (err = add_multi_headers(&b, multi)))
        goto out;
    if (v2 && type_of(cookies) != J_NONE && type_of(cookies) != J_NULL &&
        (err = add_cookies(&b, cookies)))
        goto out;

    switch (type_of(b64)) {
    case J_NONE:
    case J_NULL:
    case J_FALSE:
        break;
    case J_TRUE:
        is_b64 = true;
        break;
    default:
        err = fail(&r, "isBase64Encoded must be a boolean, not %s", type_name(b64));
        goto out;
    }

    switch (type_of(body)) {
    case J_NONE:
    case J_NULL:
        err = set_body(out, "", 0);
        break;
    case J_STRING: {
        char *text = malloc(body.len);
        size_t n;
        if (text == NULL) {
            err = UV_ENOMEM;
            break;
        }
        n = decode_string(body, text);
        if (is_b64 && decode_allowed(route, rq)) {
            out->body = malloc(n / 4 * 3 + 3);
            if (out->body == NULL) {
                err = UV_ENOMEM;
            } else if (rw__base64_decode((unsigned char *)out->body, &out->body_len, text, n, why,
                                         whylen) != 0) {
                char reason[160];
                snprintf(reason, sizeof(reason), "%s", why ? why : "");
                err = fail(&r, "body: %s", reason);
            } else {
                out->body[out->body_len] = '\0';
            }
        } else {
            err = set_body(out, text, n);
        }
        free(text);
        break;
    }
    default:
        err = fail(&r, "body must be a string, not %s", type_name(body));
    }
    if (err)
        goto out;
    err = finish(&b, out);
out:
    rw_fields_free(&b.f);
    if (err) {
        rw_event_response_free(out);
        if (err == UV_ENOMEM && why && whylen)
            snprintf(why, whylen, "out of memory");
    }
    return err;
}

void rw_event_response_free(rw_event_response_t *res)
{
    if (res == NULL)
        return;
    free(res->headers);
    free(res->body);
    free(res->strings_);
    memset(res, 0, sizeof(*res));
}
