/* AWS Signature Version 4 verification, so that the AWS CLI and SDKs can call
 * reelway's admin endpoints (the Lambda Invoke API) with a custom endpoint:
 * the admin key is the secret access key. */
#include "sigv4.h"

#include "reelway/error.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    SHA256(data, len, md);
    hex(md, 32, out);
}

static void hmac(const void *key, size_t klen, const void *msg, size_t mlen, unsigned char out[32])
{
    unsigned int n = 32;
    HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &n);
}

/* A growing string. */
typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} buf_t;

static void put(buf_t *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->failed = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

/* RFC 3986 unreserved characters stay; everything else is %XX (upper case). */
static void uri_encode(buf_t *b, const char *s, size_t n, bool keep_slash)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            put(b, (const char *)&c, 1);
        } else {
            char e[4];
            snprintf(e, sizeof e, "%%%02X", c);
            put(b, e, 3);
        }
    }
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

/* Decodes a query component (percent-encoding; '+' stays '+', as SigV4 wants). */
static char *decode(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[k++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else {
            out[k++] = s[i];
        }
    }
    out[k] = '\0';
    return out;
}

typedef struct {
    char *name, *value;
} pair_t;

static int pair_cmp(const void *a, const void *b)
{
    const pair_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

/* Sorted, re-encoded query parameters. */
static void canonical_query(buf_t *b, const char *q, size_t n)
{
    pair_t pairs[64];
    size_t np = 0;
    size_t i = 0;
    while (i < n && np < 64) {
        size_t end = i;
        while (end < n && q[end] != '&')
            end++;
        if (end > i) {
            const char *eq = memchr(q + i, '=', end - i);
            size_t klen = eq ? (size_t)(eq - (q + i)) : end - i;
            pairs[np].name = decode(q + i, klen);
            pairs[np].value = eq ? decode(eq + 1, (size_t)(q + end - eq - 1)) : strdup("");
            np++;
        }
        i = end + 1;
    }
    qsort(pairs, np, sizeof *pairs, pair_cmp);
    for (size_t k = 0; k < np; k++) {
        if (k)
            put(b, "&", 1);
        if (pairs[k].name && pairs[k].value) {
            uri_encode(b, pairs[k].name, strlen(pairs[k].name), false);
            put(b, "=", 1);
            uri_encode(b, pairs[k].value, strlen(pairs[k].value), false);
        }
        free(pairs[k].name);
        free(pairs[k].value);
    }
}

/* Value of a header with whitespace trimmed and inner runs collapsed; all
 * occurrences comma-joined. */
static void header_value(buf_t *b, const rw_http_req_t *req, const char *name, size_t nlen)
{
    bool first = true;
    for (size_t i = 0; i < req->n_headers; i++) {
        const rw_http_header_t *h = &req->headers[i];
        if (h->name_len != nlen || strncasecmp(h->name, name, nlen) != 0)
            continue;
        if (!first)
            put(b, ",", 1);
        first = false;
        const char *v = h->value;
        size_t vl = h->value_len;
        while (vl && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            vl--;
        bool space = false;
        for (size_t k = 0; k < vl; k++) {
            if (v[k] == ' ' || v[k] == '\t') {
                space = true;
                continue;
            }
            if (space)
                put(b, " ", 1);
            space = false;
            put(b, v + k, 1);
        }
    }
}

/* Extracts "key=value" from the Authorization header's comma list. */
static bool auth_field(const char *auth, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    const char *p = auth;
    while ((p = strstr(p, key))) {
        if ((p == auth || p[-1] == ' ' || p[-1] == ',') && p[kl] == '=') {
            p += kl + 1;
            size_t n = strcspn(p, ", ");
            if (n >= cap)
                return false;
            memcpy(out, p, n);
            out[n] = '\0';
            return true;
        }
        p += kl;
    }
    return false;
}

static time_t parse_amz_date(const char *s)
{
    /* 20261121T133341Z */
    struct tm tm = {0};
    if (strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z')
        return (time_t)-1;
    if (sscanf(s, "%4d%2d%2dT%2d%2d%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6)
        return (time_t)-1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

int rw_sigv4_verify(const rw_http_req_t *req, const char *body, size_t body_len,
                    const char *access_key_id, const char *secret, char *why, size_t whylen)
{
    const char *auth = rw_http_req_header(req, "authorization");
    if (!auth || strncmp(auth, "AWS4-HMAC-SHA256 ", 17) != 0) {
        snprintf(why, whylen, "missing or unsupported Authorization (AWS4-HMAC-SHA256 expected)");
        return RW_EAUTH;
    }
    char credential[512], signed_headers[1024], signature[80];
    if (!auth_field(auth, "Credential", credential, sizeof credential) ||
        !auth_field(auth, "SignedHeaders", signed_headers, sizeof signed_headers) ||
        !auth_field(auth, "Signature", signature, sizeof signature)) {
        snprintf(why, whylen, "malformed Authorization header");
        return RW_EAUTH;
    }
    /* Credential = AKID/DATE/REGION/SERVICE/aws4_request */
    char *parts[5] = {0};
    char cred[512];
    snprintf(cred, sizeof cred, "%s", credential);
    char *save = NULL;
    size_t np = 0;
    for (char *t = strtok_r(cred, "/", &save); t && np < 5; t = strtok_r(NULL, "/", &save))
        parts[np++] = t;
    if (np != 5 || strcmp(parts[4], "aws4_request") != 0) {
        snprintf(why, whylen, "malformed credential scope");
        return RW_EAUTH;
    }
    if (strcmp(parts[0], access_key_id) != 0) {
        snprintf(why, whylen, "unknown access key id");
        return RW_EAUTH;
    }
    const char *amz_date = rw_http_req_header(req, "x-amz-date");
    time_t when = amz_date ? parse_amz_date(amz_date) : (time_t)-1;
    if (when == (time_t)-1 || strncmp(amz_date, parts[1], 8) != 0) {
        snprintf(why, whylen, "missing or malformed X-Amz-Date");
        return RW_EAUTH;
    }
    time_t now = time(NULL);
    if (when > now + 900 || when < now - 900) {
        snprintf(why, whylen, "request time too skewed (more than 15 minutes)");
        return RW_EAUTH;
    }
    if (!strstr(signed_headers, "host")) {
        snprintf(why, whylen, "the host header must be signed");
        return RW_EAUTH;
    }

    buf_t cr = {0};
    puts_(&cr, req->method);
    put(&cr, "\n", 1);
    /* Non-S3 services sign the path encoded once more than it travels. */
    uri_encode(&cr, req->path, req->path_len, true);
    put(&cr, "\n", 1);
    canonical_query(&cr, req->query, req->query_len);
    put(&cr, "\n", 1);
    const char *h = signed_headers;
    while (*h) {
        size_t n = strcspn(h, ";");
        char lname[128];
        if (n >= sizeof lname) {
            free(cr.p);
            snprintf(why, whylen, "signed header name too long");
            return RW_EAUTH;
        }
        for (size_t i = 0; i < n; i++)
            lname[i] = (char)(h[i] >= 'A' && h[i] <= 'Z' ? h[i] + 32 : h[i]);
        lname[n] = '\0';
        put(&cr, lname, n);
        put(&cr, ":", 1);
        header_value(&cr, req, lname, n);
        put(&cr, "\n", 1);
        h += n;
        if (*h == ';')
            h++;
    }
    put(&cr, "\n", 1);
    puts_(&cr, signed_headers);
    put(&cr, "\n", 1);
    char payload_hash[65];
    const char *given_hash = rw_http_req_header(req, "x-amz-content-sha256");
    sha256_hex(body ? body : "", body_len, payload_hash);
    if (given_hash && strcmp(given_hash, "UNSIGNED-PAYLOAD") != 0 &&
        strcmp(given_hash, payload_hash) != 0) {
        free(cr.p);
        snprintf(why, whylen, "x-amz-content-sha256 does not match the body");
        return RW_EAUTH;
    }
    puts_(&cr, given_hash ? given_hash : payload_hash);
    if (cr.failed) {
        free(cr.p);
        return UV_ENOMEM;
    }
    char cr_hash[65];
    sha256_hex(cr.p, cr.len, cr_hash);
    free(cr.p);

    char scope[512], sts[1024];
    snprintf(scope, sizeof scope, "%s/%s/%s/aws4_request", parts[1], parts[2], parts[3]);
    int stslen = snprintf(sts, sizeof sts, "AWS4-HMAC-SHA256\n%s\n%s\n%s", amz_date, scope, cr_hash);
    char kstart[300];
    int klen = snprintf(kstart, sizeof kstart, "AWS4%s", secret);
    unsigned char k1[32], k2[32], k3[32], k4[32], sig[32];
    hmac(kstart, (size_t)klen, parts[1], strlen(parts[1]), k1);
    hmac(k1, 32, parts[2], strlen(parts[2]), k2);
    hmac(k2, 32, parts[3], strlen(parts[3]), k3);
    hmac(k3, 32, "aws4_request", 12, k4);
    hmac(k4, 32, sts, (size_t)stslen, sig);
    OPENSSL_cleanse(kstart, sizeof kstart);
    char expect[65];
    hex(sig, 32, expect);
    if (strlen(signature) != 64 || CRYPTO_memcmp(expect, signature, 64) != 0) {
        snprintf(why, whylen, "signature does not match");
        return RW_EAUTH;
    }
    return 0;
}
