/* The JWT authorizer: finds the token where the identity source says, answers
 * from the verification cache when it can, else verifies with the issuer's key
 * set (fetching it on the threadpool when needed, never more often than the
 * configured interval), and turns the verdict into API Gateway's 401/403. */
#include "authz_jwt.h"

#include "fetch.h"
#include "lru.h"
#include "router.h"

#include "reelway/error.h"

#include <errno.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct rw_jwt_principal_s {
    atomic_uint refs;
    cJSON *claims; /* flattened: every value a string */
    char **scopes;
    size_t n_scopes;
    cJSON *scopes_json; /* the same, as an array for events */
    const char *sub;    /* into claims */
};

typedef struct ident_s {
    bool header; /* else query string */
    char *name;
} ident_t;

typedef enum source_e { SRC_FILE, SRC_URI, SRC_DISCOVERY } source_t;

/* A check waiting for a key-set fetch. */
typedef struct waiter_s {
    struct waiter_s *next;
    char *token;
    size_t len;
    uint8_t digest[32];
    char **scopes;
    size_t n_scopes;
    rw_jwt_authz_cb cb;
    void *arg;
} waiter_t;

struct rw_jwt_authz_s {
    uv_loop_t *loop;
    char *name;
    char *issuer;
    char **audiences;
    size_t n_audiences;
    ident_t *idents;
    size_t n_idents;
    source_t source;
    char *jwks_file;
    char *jwks_uri; /* explicit, or discovered (then cleared when it fails) */
    char *discovery_url;
    char *ca_file;
    int64_t skew_s;
    uint64_t max_age_ms, min_interval_ms;
    rw_fetch_opts_t fetch_opts;

    rw_jwks_t *keys;
    uint64_t keys_at_ms;
    bool fetched_once; /* a fetch was started at least once */
    uint64_t last_fetch_ms;
    bool fetching;
    waiter_t *waiters;
    waiter_t **waiters_tail;

    rw_lru_t *cache;
    rw_jwt_authz_stats_t stats;
    /* SHA-256 fetched once and one context reused: half the cost of a
     * one-shot EVP_Digest on every request. Loop thread only. */
    EVP_MD *sha256;
    EVP_MD_CTX *md_ctx;

    bool closing;
    bool resolving; /* answering waiters: a close from their callbacks must wait */
    void (*close_done)(void *arg);
    void *close_arg;
};

typedef struct fetch_job_s {
    uv_work_t work;
    rw_jwt_authz_t *a;
    char *uri; /* the JWKS URL to use, or NULL to discover it */
    rw_jwks_t *keys;
    char *discovered;
    int rc;
    char error[384];
} fetch_job_t;

/* ---- small helpers ------------------------------------------------------ */

static void free_strv(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static char **dup_strv(const char *const *v, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!(out[i] = strdup(v[i]))) {
            free_strv(out, i);
            return NULL;
        }
    return out;
}


/* ---- principals --------------------------------------------------------- */

/* Numbers as JSON would write them: integers plainly, others in the fewest
 * digits that read back to the same double. */
static void number_text(double v, char *buf, size_t len)
{
    if (isfinite(v) && v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(buf, len, "%lld", (long long)v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* Appends s to the growing buffer *out; returns false on out of memory. */
static bool append(char **out, size_t *len, size_t *cap, const char *s)
{
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *len + n + 1)
            c *= 2;
        char *p = realloc(*out, c);
        if (!p)
            return false;
        *out = p;
        *cap = c;
    }
    memcpy(*out + *len, s, n + 1);
    *len += n;
    return true;
}

/* A claim value as API Gateway hands it to the integration: a string. Arrays
 * come out as "[a b c]" (measured on API Gateway's payload 2.0, e.g. Cognito's
 * cognito:groups), objects as their JSON. Returns a new string, or NULL for
 * JSON null (left out) and on out of memory (*oom set). */
static char *claim_text(const cJSON *v, bool *oom)
{
    char num[40];
    if (cJSON_IsString(v))
        return strdup(v->valuestring);
    if (cJSON_IsNumber(v)) {
        number_text(v->valuedouble, num, sizeof num);
        return strdup(num);
    }
    if (cJSON_IsBool(v))
        return strdup(cJSON_IsTrue(v) ? "true" : "false");
    if (cJSON_IsNull(v))
        return NULL;
    if (cJSON_IsArray(v)) {
        char *out = NULL;
        size_t len = 0, cap = 0;
        bool ok = append(&out, &len, &cap, "[");
        bool first = true;
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            char *t = cJSON_IsNull(e) ? strdup("null") : claim_text(e, oom);
            ok = ok && t && (first || append(&out, &len, &cap, " ")) && append(&out, &len, &cap, t);
            free(t);
            first = false;
        }
        ok = ok && append(&out, &len, &cap, "]");
        if (!ok) {
            free(out);
            *oom = true;
            return NULL;
        }
        return out;
    }
    char *json = cJSON_PrintUnformatted(v);
    if (!json)
        *oom = true;
    return json;
}

rw_jwt_principal_t *rw_jwt_principal_ref(rw_jwt_principal_t *p)
{
    if (p)
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return p;
}

void rw_jwt_principal_release(rw_jwt_principal_t *p)
{
    if (!p || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    cJSON_Delete(p->claims);
    cJSON_Delete(p->scopes_json);
    free_strv(p->scopes, p->n_scopes);
    free(p);
}

static void release_value(void *v)
{
    rw_jwt_principal_release(v);
}

static rw_jwt_principal_t *principal_from(const rw_jwt_t *jwt)
{
    rw_jwt_principal_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    atomic_init(&p->refs, 1);
    p->claims = cJSON_CreateObject();
    p->scopes_json = cJSON_CreateArray();
    size_t n = rw_jwt_scope_count(jwt);
    p->scopes = calloc(n ? n : 1, sizeof *p->scopes);
    if (!p->claims || !p->scopes_json || !p->scopes)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        cJSON *js = cJSON_CreateString(rw_jwt_scope(jwt, i));
        if (!js || !(p->scopes[i] = strdup(rw_jwt_scope(jwt, i)))) {
            cJSON_Delete(js);
            goto fail;
        }
        cJSON_AddItemToArray(p->scopes_json, js);
        p->n_scopes++;
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, rw_jwt_claims(jwt))
    {
        bool oom = false;
        char *text = claim_text(c, &oom);
        if (oom)
            goto fail;
        if (!text)
            continue;
        cJSON *s = cJSON_CreateString(text);
        free(text);
        if (!s)
            goto fail;
        cJSON_AddItemToObject(p->claims, c->string, s);
    }
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(p->claims, "sub");
    p->sub = cJSON_IsString(sub) ? sub->valuestring : NULL;
    return p;
fail:
    rw_jwt_principal_release(p);
    return NULL;
}

const cJSON *rw_jwt_principal_claims(const rw_jwt_principal_t *p)
{
    return p->claims;
}

size_t rw_jwt_principal_scope_count(const rw_jwt_principal_t *p)
{
    return p->n_scopes;
}

const char *rw_jwt_principal_scope(const rw_jwt_principal_t *p, size_t i)
{
    return i < p->n_scopes ? p->scopes[i] : NULL;
}

const char *rw_jwt_principal_sub(const rw_jwt_principal_t *p)
{
    return p->sub;
}

/* ---- verdicts ----------------------------------------------------------- */

/* error_description values, in the style API Gateway writes them ("the token
 * does not have a valid audience"). */
static const char *description(rw_jwt_status_t st)
{
    switch (st) {
    case RW_JWT_EFORMAT:
    case RW_JWT_EBASE64:
    case RW_JWT_EJSON:
    case RW_JWT_EHEADER:
        return "the token is malformed";
    case RW_JWT_EALG:
        return "the token's signing algorithm is not supported";
    case RW_JWT_EKID:
        return "the token's key id does not match any of the issuer's keys";
    case RW_JWT_EKEY_ALG:
    case RW_JWT_ESIGNATURE:
        return "the token does not have a valid signature";
    case RW_JWT_ECLAIM:
        return "the token has a malformed claim";
    case RW_JWT_EEXPIRED:
        return "the token has expired";
    case RW_JWT_ENOTBEFORE:
        return "the token is not valid yet";
    case RW_JWT_EIAT:
        return "the token was issued in the future";
    case RW_JWT_EISSUER:
        return "the token does not have a valid issuer";
    case RW_JWT_EAUDIENCE:
        return "the token does not have a valid audience";
    default:
        return "the token is not valid";
    }
}

static void deny(rw_jwt_authz_result_t *res, rw_jwt_status_t st, const char *detail)
{
    res->status = st;
    res->principal = NULL;
    res->www_authenticate[0] = '\0';
    if (detail && detail != res->detail)
        snprintf(res->detail, sizeof res->detail, "%s", detail);
    if (st == RW_JWT_EINTERNAL) {
        res->http_status = 500;
        res->message = "Internal Server Error";
        return;
    }
    res->http_status = 401;
    res->message = "Unauthorized";
    snprintf(res->www_authenticate, sizeof res->www_authenticate,
             "Bearer scope=\"\" error=\"invalid_token\" error_description=\"%s\"",
             description(st));
}

/* No token at all: RFC 6750 §3.1 says a challenge without an error code. */
static void deny_missing(rw_jwt_authz_result_t *res)
{
    deny(res, RW_JWT_EFORMAT, "no token in the identity source");
    snprintf(res->www_authenticate, sizeof res->www_authenticate, "Bearer");
}

/* Writes the route's scopes for a quoted header parameter, dropping the
 * characters a quoted-string cannot carry as they are. */
static void scope_list(char *out, size_t cap, const char *const *scopes, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && len + 1 < cap)
            out[len++] = ' ';
        for (const char *c = scopes[i]; *c && len + 1 < cap; c++)
            if ((unsigned char)*c >= 0x20 && *c != '"' && *c != '\\' && *c != 0x7f)
                out[len++] = *c;
    }
    out[len] = '\0';
}

/* Decides for a verified principal: the route's scopes, then allow. Takes
 * over the caller's reference to p. */
static void decide(rw_jwt_authz_result_t *res, rw_jwt_principal_t *p, const char *const *scopes,
                   size_t n_scopes)
{
    res->route_has_scopes = n_scopes > 0;
    bool ok = n_scopes == 0;
    for (size_t i = 0; i < n_scopes && !ok; i++)
        for (size_t j = 0; j < p->n_scopes && !ok; j++)
            ok = strcmp(scopes[i], p->scopes[j]) == 0;
    if (!ok) {
        char list[256];
        scope_list(list, sizeof list, scopes, n_scopes);
        rw_jwt_principal_release(p);
        res->principal = NULL;
        res->status = RW_JWT_ESCOPE;
        res->http_status = 403;
        res->message = "Forbidden";
        snprintf(res->detail, sizeof res->detail, "the token holds none of the route's scopes");
        snprintf(res->www_authenticate, sizeof res->www_authenticate,
                 "Bearer scope=\"%s\" error=\"insufficient_scope\" "
                 "error_description=\"expected scopes: [%s]\"",
                 list, list);
        return;
    }
    res->status = RW_JWT_OK;
    res->http_status = 200;
    res->message = NULL;
    res->www_authenticate[0] = '\0';
    res->detail[0] = '\0';
    res->principal = p;
}

void rw_jwt_authz_result_release(rw_jwt_authz_result_t *res)
{
    if (res && res->principal) {
        rw_jwt_principal_release(res->principal);
        res->principal = NULL;
    }
}

void rw_jwt_authz_respond(rw_http_req_t *req, const rw_jwt_authz_result_t *res)
{
    rw_http_header_t h[1];
    size_t n = 0;
    if (res->www_authenticate[0])
        h[n++] = (rw_http_header_t){"www-authenticate", 16, res->www_authenticate,
                                    strlen(res->www_authenticate)};
    rw_http_respond_error(req, res->http_status ? res->http_status : 500,
                          res->message ? res->message : "Internal Server Error", NULL, h, n);
}

cJSON *rw_jwt_authz_event_authorizer(const rw_jwt_authz_result_t *res)
{
    if (!res->principal)
        return NULL;
    const rw_jwt_principal_t *p = res->principal;
    /* References, not copies: the principal's claims and scopes are built
     * once per token, and this runs for every request. */
    cJSON *auth = cJSON_CreateObject();
    cJSON *jwt = cJSON_CreateObject();
    cJSON *claims = cJSON_CreateObjectReference(p->claims->child);
    cJSON *scopes = res->route_has_scopes ? cJSON_CreateArrayReference(p->scopes_json->child)
                                          : cJSON_CreateNull();
    if (!auth || !jwt || !claims || !scopes) {
        cJSON_Delete(auth);
        cJSON_Delete(jwt);
        cJSON_Delete(claims);
        cJSON_Delete(scopes);
        return NULL;
    }
    cJSON_AddItemToObject(jwt, "claims", claims);
    cJSON_AddItemToObject(jwt, "scopes", scopes);
    cJSON_AddItemToObject(auth, "jwt", jwt);
    return auth;
}

/* ---- the token ---------------------------------------------------------- */

typedef enum { TOKEN_FOUND, TOKEN_MISSING, TOKEN_DOUBLED, TOKEN_OOM } token_find_t;

/* Finds name's value in the query string; *count gets how often it occurs.
 * Returns a new percent-decoded copy of the last one, or NULL. */
static char *query_value(const rw_http_req_t *req, const char *name, int *count, bool *oom)
{
    size_t nlen = strlen(name);
    const char *q = req->query, *end = req->query + req->query_len;
    const char *val = NULL;
    size_t vlen = 0;
    *count = 0;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *pe = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(pe - q));
        const char *ke = eq ? eq : pe;
        if ((size_t)(ke - q) == nlen && memcmp(q, name, nlen) == 0) {
            (*count)++;
            val = eq ? eq + 1 : pe;
            vlen = (size_t)(pe - val);
        }
        q = pe + (amp ? 1 : 0);
    }
    if (!val)
        return NULL;
    size_t out_len;
    char *v = rw_percent_decode(val, vlen, &out_len);
    if (!v) {
        /* Undecodable: keep the raw text, which will not verify. */
        v = strndup(val, vlen);
        if (!v)
            *oom = true;
    }
    return v;
}

/* Finds the token: the first identity source present, "Bearer " stripped
 * (case-insensitively, as the scheme is). *owned is set when the token lives
 * in a new buffer the caller frees. */
static token_find_t find_token(const rw_jwt_authz_t *a, const rw_http_req_t *req,
                               const char **tok, size_t *len, char **owned)
{
    *owned = NULL;
    for (size_t i = 0; i < a->n_idents; i++) {
        const ident_t *id = &a->idents[i];
        const char *v = NULL;
        int count = 0;
        if (id->header) {
            size_t n = strlen(id->name);
            for (size_t h = 0; h < req->n_headers; h++)
                if (req->headers[h].name_len == n &&
                    strncasecmp(req->headers[h].name, id->name, n) == 0) {
                    v = req->headers[h].value;
                    count++;
                }
        } else {
            bool oom = false;
            *owned = query_value(req, id->name, &count, &oom);
            if (oom)
                return TOKEN_OOM;
            v = *owned;
        }
        if (count == 0)
            continue;
        /* API Gateway joins repeated values with commas: never a valid token. */
        if (count > 1) {
            free(*owned);
            *owned = NULL;
            return TOKEN_DOUBLED;
        }
        while (*v == ' ' || *v == '\t')
            v++;
        if (strncasecmp(v, "bearer", 6) == 0 && (v[6] == ' ' || v[6] == '\t')) {
            v += 6;
            while (*v == ' ' || *v == '\t')
                v++;
        }
        size_t n = strlen(v);
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        if (n == 0) {
            free(*owned);
            *owned = NULL;
            continue;
        }
        *tok = v;
        *len = n;
        return TOKEN_FOUND;
    }
    return TOKEN_MISSING;
}

/* ---- verification ------------------------------------------------------- */

static int token_digest(rw_jwt_authz_t *a, const char *tok, size_t len, uint8_t out[32])
{
    unsigned int n = 32;
    if (EVP_DigestInit_ex(a->md_ctx, a->sha256, NULL) != 1 ||
        EVP_DigestUpdate(a->md_ctx, tok, len) != 1 || EVP_DigestFinal_ex(a->md_ctx, out, &n) != 1)
        return RW_ECRYPTO;
    return 0;
}

static rw_jwt_status_t verify_token(rw_jwt_authz_t *a, const char *tok, size_t len,
                                    const uint8_t digest[32], rw_jwt_principal_t **out,
                                    char *detail, size_t detail_len)
{
    int64_t now = (int64_t)time(NULL);
    rw_jwt_verify_opts_t o = {0};
    o.issuer = a->issuer;
    o.audiences = (const char *const *)a->audiences;
    o.n_audiences = a->n_audiences;
    o.now = now;
    o.clock_skew_s = a->skew_s;
    rw_jwt_t *jwt = NULL;
    rw_jwt_error_t err;
    a->stats.verifications++;
    rw_jwt_status_t st = rw_jwt_verify(a->keys, tok, len, &o, &jwt, &err);
    if (st != RW_JWT_OK) {
        snprintf(detail, detail_len, "%s", err.message);
        return st;
    }
    rw_jwt_principal_t *p = principal_from(jwt);
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(rw_jwt_claims(jwt), "exp");
    double exp_s = cJSON_IsNumber(exp) ? exp->valuedouble : (double)now;
    rw_jwt_free(jwt);
    if (!p) {
        snprintf(detail, detail_len, "out of memory");
        return RW_JWT_EINTERNAL;
    }
    /* Remember it until it expires (as the verifier judges expiry, with the
     * skew), but not past one key-set lifetime. */
    double left_ms = (exp_s + (double)a->skew_s - (double)now) * 1000.0;
    if (left_ms > (double)a->max_age_ms)
        left_ms = (double)a->max_age_ms;
    if (left_ms > 0)
        rw__lru_put(a->cache, digest, rw_jwt_principal_ref(p),
                    uv_now(a->loop) + (uint64_t)left_ms);
    *out = p;
    return RW_JWT_OK;
}

/* ---- key-set fetches ---------------------------------------------------- */

static int read_file(const char *path, size_t max, char **out, size_t *out_len, char *err,
                     size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -errno;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int rc = 0;
    if (!buf) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
    } else if (ferror(f)) {
        rc = -EIO;
        snprintf(err, errlen, "cannot read %s", path);
    } else if (n > max) {
        rc = RW_ELIMIT;
        snprintf(err, errlen, "%s is larger than %zu bytes", path, max);
    }
    fclose(f);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return 0;
}

static int parse_jwks(const char *text, size_t len, rw_jwks_t **out, const char *from, char *err,
                      size_t errlen)
{
    const char *msg = NULL;
    int rc = rw_jwks_parse(text, len, out, &msg);
    if (rc != 0)
        snprintf(err, errlen, "invalid JWKS from %s: %s", from, msg ? msg : rw_strerror(rc));
    return rc;
}

/* GETs url and expects a 200. */
static int get_ok(const rw_jwt_authz_t *a, const char *url, rw_fetch_result_t *res, char *err,
                  size_t errlen)
{
    int rc = rw__fetch_get(url, &a->fetch_opts, res);
    if (rc != 0) {
        snprintf(err, errlen, "GET %s: %s", url, res->error);
        return rc;
    }
    if (res->status != 200) {
        snprintf(err, errlen, "GET %s: HTTP status %d", url, res->status);
        rw__fetch_result_free(res);
        return RW_EPARSE;
    }
    return 0;
}

/* OpenID Connect discovery: the document's issuer must be ours exactly
 * (OpenID Connect Discovery 1.0 §4.3), and jwks_uri an http(s) URL. */
static int discover(const rw_jwt_authz_t *a, char **jwks_uri, char *err, size_t errlen)
{
    rw_fetch_result_t res;
    int rc = get_ok(a, a->discovery_url, &res, err, errlen);
    if (rc != 0)
        return rc;
    cJSON *doc = cJSON_ParseWithLength(res.body, res.len);
    rw__fetch_result_free(&res);
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(doc, "issuer");
    const cJSON *uri = cJSON_GetObjectItemCaseSensitive(doc, "jwks_uri");
    rc = RW_EPARSE;
    if (!cJSON_IsObject(doc))
        snprintf(err, errlen, "%s is not a JSON object", a->discovery_url);
    else if (!cJSON_IsString(iss) || strcmp(iss->valuestring, a->issuer) != 0)
        snprintf(err, errlen, "%s names another issuer than %s", a->discovery_url, a->issuer);
    else if (!cJSON_IsString(uri) || rw__fetch_check_url(uri->valuestring) != 0)
        snprintf(err, errlen, "%s has no valid jwks_uri", a->discovery_url);
    else if (!(*jwks_uri = strdup(uri->valuestring)))
        rc = -ENOMEM;
    else
        rc = 0;
    cJSON_Delete(doc);
    return rc;
}

/* Threadpool: reads only the authorizer's immutable configuration. */
static void do_fetch(uv_work_t *w)
{
    fetch_job_t *job = w->data;
    const rw_jwt_authz_t *a = job->a;
    char *text = NULL;
    size_t len = 0;
    if (a->source == SRC_FILE) {
        job->rc = read_file(a->jwks_file, a->fetch_opts.max_bytes, &text, &len, job->error,
                            sizeof job->error);
        if (job->rc == 0)
            job->rc = parse_jwks(text, len, &job->keys, a->jwks_file, job->error,
                                 sizeof job->error);
        free(text);
        return;
    }
    const char *uri = job->uri;
    if (!uri) {
        job->rc = discover(a, &job->discovered, job->error, sizeof job->error);
        if (job->rc != 0)
            return;
        uri = job->discovered;
    }
    rw_fetch_result_t res;
    job->rc = get_ok(a, uri, &res, job->error, sizeof job->error);
    if (job->rc == 0)
        job->rc = parse_jwks(res.body, res.len, &job->keys, uri, job->error, sizeof job->error);
    rw__fetch_result_free(&res);
}

/* True when the new set lost a kid of the old one or changed its key: tokens
 * verified with it must be checked again. */
static bool keys_withdrawn(const rw_jwks_t *old, const rw_jwks_t *new_set)
{
    if (!old)
        return false;
    for (size_t i = 0; i < rw_jwks_count(old); i++) {
        const rw_jwk_t *k = rw_jwks_get(old, i);
        const rw_jwk_t *n = rw_jwks_find(new_set, rw_jwk_kid(k));
        char t1[44], t2[44];
        if (!n || rw_jwk_thumbprint(k, t1) != 0 || rw_jwk_thumbprint(n, t2) != 0 ||
            strcmp(t1, t2) != 0)
            return true;
    }
    return false;
}

static void install_keys(rw_jwt_authz_t *a, rw_jwks_t *keys)
{
    if (keys_withdrawn(a->keys, keys))
        rw__lru_clear(a->cache);
    rw_jwks_free(a->keys);
    a->keys = keys;
    a->keys_at_ms = uv_now(a->loop);
}

static void finish_close(rw_jwt_authz_t *a);
static void waiter_free(waiter_t *w);

/* Answers a check that waited for a fetch, now that it is over. */
static void resolve_waiter(rw_jwt_authz_t *a, waiter_t *w, const char *fetch_error)
{
    rw_jwt_authz_result_t res;
    memset(&res, 0, sizeof res);
    res.route_has_scopes = w->n_scopes > 0;
    rw_jwt_principal_t *p = rw__lru_get(a->cache, w->digest, uv_now(a->loop));
    if (p) {
        a->stats.cache_hits++;
        decide(&res, rw_jwt_principal_ref(p), (const char *const *)w->scopes, w->n_scopes);
    } else if (!a->keys) {
        snprintf(res.detail, sizeof res.detail, "no key set from the issuer: %s",
                 fetch_error ? fetch_error : "not fetched");
        deny(&res, RW_JWT_EINTERNAL, res.detail);
    } else {
        rw_jwt_status_t st = verify_token(a, w->token, w->len, w->digest, &p, res.detail,
                                          sizeof res.detail);
        if (st == RW_JWT_OK)
            decide(&res, p, (const char *const *)w->scopes, w->n_scopes);
        else
            deny(&res, st, res.detail);
    }
    w->cb(&res, w->arg);
}

static void after_fetch(uv_work_t *w, int status)
{
    fetch_job_t *job = w->data;
    rw_jwt_authz_t *a = job->a;
    a->fetching = false;
    if (status == 0 && job->rc == 0) {
        install_keys(a, job->keys);
        job->keys = NULL;
        if (job->discovered) {
            free(a->jwks_uri);
            a->jwks_uri = job->discovered;
            job->discovered = NULL;
        }
    } else {
        a->stats.fetch_failures++;
        if (status != 0)
            snprintf(job->error, sizeof job->error, "fetch cancelled");
        fprintf(stderr, "reelway: jwt authorizer %s: cannot refresh the issuer's keys (%s); %s\n",
                a->name, job->error,
                a->keys ? "keeping the previous key set" : "no key set yet");
        /* A discovered jwks_uri that failed may have moved: discover again
         * next time. An explicit one stays. */
        if (a->source == SRC_DISCOVERY && !job->discovered && job->uri) {
            free(a->jwks_uri);
            a->jwks_uri = NULL;
        }
    }
    a->stats.keys = a->keys ? rw_jwks_count(a->keys) : 0;
    waiter_t *list = a->waiters;
    a->waiters = NULL;
    a->waiters_tail = &a->waiters;
    const char *err = job->rc != 0 || status != 0 ? job->error : NULL;
    a->resolving = true;
    while (list) {
        waiter_t *next = list->next;
        resolve_waiter(a, list, err);
        waiter_free(list);
        list = next;
    }
    a->resolving = false;
    rw_jwks_free(job->keys);
    free(job->discovered);
    free(job->uri);
    free(job);
    if (a->closing && !a->fetching)
        finish_close(a);
}

static bool start_fetch(rw_jwt_authz_t *a)
{
    fetch_job_t *job = calloc(1, sizeof *job);
    if (!job)
        return false;
    job->a = a;
    job->work.data = job;
    if (a->jwks_uri && !(job->uri = strdup(a->jwks_uri))) {
        free(job);
        return false;
    }
    if (uv_queue_work(a->loop, &job->work, do_fetch, after_fetch) != 0) {
        free(job->uri);
        free(job);
        return false;
    }
    a->fetching = true;
    a->fetched_once = true;
    a->last_fetch_ms = uv_now(a->loop);
    a->stats.fetches++;
    return true;
}

/* Starts a fetch unless one ran less than min_interval ago; true when a
 * fetch is (now or already) in flight. */
static bool fetch_if_allowed(rw_jwt_authz_t *a)
{
    if (a->fetching)
        return true;
    /* The interval protects an issuer from a flood of unknown kids. Without
     * any key set yet (the issuer was down or empty at start), waiting 30 s
     * would refuse every token meanwhile: retry after a second instead. */
    uint64_t interval = a->min_interval_ms;
    if (!a->keys && interval > 1000)
        interval = 1000;
    if (a->fetched_once && a->min_interval_ms != RW_JWT_AUTHZ_NO_MIN_INTERVAL &&
        uv_now(a->loop) - a->last_fetch_ms < interval)
        return false;
    return start_fetch(a);
}

static void waiter_free(waiter_t *w)
{
    free(w->token);
    free_strv(w->scopes, w->n_scopes);
    free(w);
}

static int enqueue_waiter(rw_jwt_authz_t *a, const char *tok, size_t len, const uint8_t digest[32],
                          const char *const *scopes, size_t n_scopes, rw_jwt_authz_cb cb,
                          void *arg)
{
    waiter_t *w = calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->token = strndup(tok, len);
    w->scopes = dup_strv(scopes, n_scopes);
    if (!w->token || !w->scopes) {
        free(w->token);
        free(w->scopes);
        free(w);
        return -ENOMEM;
    }
    w->len = len;
    w->n_scopes = n_scopes;
    memcpy(w->digest, digest, 32);
    w->cb = cb;
    w->arg = arg;
    *a->waiters_tail = w;
    a->waiters_tail = &w->next;
    return RW_JWT_AUTHZ_PENDING;
}

/* ---- the check ---------------------------------------------------------- */

int rw_jwt_authz_check(rw_jwt_authz_t *a, const rw_http_req_t *req, const char *const *scopes,
                       size_t n_scopes, rw_jwt_authz_result_t *res, rw_jwt_authz_cb cb,
                       void *arg)
{
    if (!a || a->closing || !req || !res || !cb || (n_scopes && !scopes))
        return -EINVAL;
    a->stats.checks++;
    res->principal = NULL;
    res->route_has_scopes = n_scopes > 0;
    res->detail[0] = '\0';
    const char *tok = NULL;
    size_t len = 0;
    char *owned = NULL;
    switch (find_token(a, req, &tok, &len, &owned)) {
    case TOKEN_MISSING:
        deny_missing(res);
        return RW_JWT_AUTHZ_DONE;
    case TOKEN_DOUBLED:
        deny(res, RW_JWT_EFORMAT, "the identity source was given more than once");
        return RW_JWT_AUTHZ_DONE;
    case TOKEN_OOM:
        return -ENOMEM;
    case TOKEN_FOUND:
        break;
    }
    uint8_t digest[32];
    if (token_digest(a, tok, len, digest) != 0) {
        free(owned);
        return -ENOMEM;
    }
    uint64_t now = uv_now(a->loop);
    /* A key set past its age is refreshed in the background; requests go on
     * with the one at hand meanwhile. */
    if (a->keys && now - a->keys_at_ms >= a->max_age_ms)
        fetch_if_allowed(a);

    int rc = RW_JWT_AUTHZ_DONE;
    rw_jwt_principal_t *p = rw__lru_get(a->cache, digest, now);
    if (p) {
        a->stats.cache_hits++;
        decide(res, rw_jwt_principal_ref(p), scopes, n_scopes);
        goto out;
    }
    if (!a->keys) {
        if (fetch_if_allowed(a))
            rc = enqueue_waiter(a, tok, len, digest, scopes, n_scopes, cb, arg);
        else
            deny(res, RW_JWT_EINTERNAL, "no key set from the issuer yet");
        goto out;
    }
    rw_jwt_status_t st = verify_token(a, tok, len, digest, &p, res->detail, sizeof res->detail);
    if (st == RW_JWT_OK) {
        decide(res, p, scopes, n_scopes);
    } else if (st == RW_JWT_EKID && fetch_if_allowed(a)) {
        /* Perhaps the issuer rotated its keys: look again, then decide. */
        rc = enqueue_waiter(a, tok, len, digest, scopes, n_scopes, cb, arg);
    } else {
        if (st == RW_JWT_EKID)
            a->stats.fetches_skipped++;
        deny(res, st, res->detail);
    }
out:
    free(owned);
    return rc;
}

/* ---- life --------------------------------------------------------------- */

static void authz_free(rw_jwt_authz_t *a)
{
    free(a->name);
    free(a->issuer);
    free_strv(a->audiences, a->n_audiences);
    for (size_t i = 0; i < a->n_idents; i++)
        free(a->idents[i].name);
    free(a->idents);
    free(a->jwks_file);
    free(a->jwks_uri);
    free(a->discovery_url);
    free(a->ca_file);
    rw_jwks_free(a->keys);
    rw__lru_free(a->cache);
    EVP_MD_CTX_free(a->md_ctx);
    EVP_MD_free(a->sha256);
    free(a);
}

static void finish_close(rw_jwt_authz_t *a)
{
    void (*done)(void *) = a->close_done;
    void *arg = a->close_arg;
    authz_free(a);
    if (done)
        done(arg);
}

void rw_jwt_authz_close(rw_jwt_authz_t *a, void (*done)(void *arg), void *arg)
{
    if (!a || a->closing)
        return;
    a->closing = true;
    a->close_done = done;
    a->close_arg = arg;
    if (!a->fetching && !a->resolving)
        finish_close(a);
}

void rw_jwt_authz_stats(const rw_jwt_authz_t *a, rw_jwt_authz_stats_t *st)
{
    *st = a->stats;
    st->cached_tokens = rw__lru_size(a->cache);
    st->keys = a->keys ? rw_jwks_count(a->keys) : 0;
}

static int parse_ident(const char *src, ident_t *id)
{
    static const char hdr[] = "$request.header.", qs[] = "$request.querystring.";
    const char *name;
    if (strncmp(src, hdr, sizeof hdr - 1) == 0) {
        id->header = true;
        name = src + sizeof hdr - 1;
    } else if (strncmp(src, qs, sizeof qs - 1) == 0) {
        id->header = false;
        name = src + sizeof qs - 1;
    } else {
        return RW_ECONFIG;
    }
    if (!*name || strpbrk(name, " \t\r\n:&=?"))
        return RW_ECONFIG;
    id->name = strdup(name);
    return id->name ? 0 : -ENOMEM;
}

int rw_jwt_authz_new(uv_loop_t *loop, const rw_jwt_authz_config_t *cfg, rw_jwt_authz_t **out,
                     char *why, size_t whylen)
{
    char scratch[8];
    if (!why) {
        why = scratch;
        whylen = sizeof scratch;
    }
    why[0] = '\0';
    *out = NULL;
    if (!cfg->issuer || !*cfg->issuer) {
        snprintf(why, whylen, "a JWT authorizer needs an issuer");
        return RW_ECONFIG;
    }
    if ((cfg->n_audiences == 0 || !cfg->audiences) && !cfg->any_audience) {
        snprintf(why, whylen, "a JWT authorizer needs at least one audience");
        return RW_ECONFIG;
    }
    rw_jwt_authz_t *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    int rc = -ENOMEM;
    a->loop = loop;
    a->waiters_tail = &a->waiters;
    a->name = strdup(cfg->name && *cfg->name ? cfg->name : "jwt");
    a->issuer = strdup(cfg->issuer);
    a->audiences = dup_strv(cfg->audiences, cfg->n_audiences);
    a->n_audiences = a->audiences ? cfg->n_audiences : 0;
    a->skew_s = cfg->clock_skew_s == 0 ? RW_JWT_AUTHZ_SKEW_S
                : cfg->clock_skew_s < 0  ? 0
                                         : cfg->clock_skew_s;
    a->max_age_ms = cfg->jwks_max_age_ms ? cfg->jwks_max_age_ms : RW_JWT_AUTHZ_JWKS_MAX_AGE_MS;
    a->min_interval_ms = cfg->jwks_min_interval_ms;
    if (!cfg->jwks_min_interval_ms)
        a->min_interval_ms = RW_JWT_AUTHZ_JWKS_MIN_INTERVAL_MS;
    a->fetch_opts.timeout_ms = cfg->fetch_timeout_ms ? cfg->fetch_timeout_ms : RW_FETCH_TIMEOUT_MS;
    a->fetch_opts.max_bytes = cfg->fetch_max_bytes ? cfg->fetch_max_bytes : RW_FETCH_MAX_BYTES;
    a->cache = rw__lru_new(cfg->cache_entries ? cfg->cache_entries : RW_JWT_AUTHZ_CACHE_ENTRIES,
                           release_value);
    a->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    a->md_ctx = EVP_MD_CTX_new();
    if (!a->name || !a->issuer || (cfg->n_audiences && !a->audiences) || !a->cache ||
        !a->sha256 || !a->md_ctx)
        goto fail;
    if (cfg->ca_file && !(a->ca_file = strdup(cfg->ca_file)))
        goto fail;
    a->fetch_opts.ca_file = a->ca_file;

    static const char *const default_ident[] = {"$request.header.Authorization"};
    const char *const *idents = cfg->n_identity_sources ? cfg->identity_sources : default_ident;
    size_t n_idents = cfg->n_identity_sources ? cfg->n_identity_sources : 1;
    if (!(a->idents = calloc(n_idents, sizeof *a->idents)))
        goto fail;
    for (size_t i = 0; i < n_idents; i++) {
        rc = parse_ident(idents[i], &a->idents[i]);
        if (rc != 0) {
            snprintf(why, whylen, "unsupported identity source \"%s\" (use $request.header.NAME "
                     "or $request.querystring.NAME)", idents[i]);
            goto fail;
        }
        a->n_idents++;
    }

    rc = -ENOMEM;
    if (cfg->jwks_file && *cfg->jwks_file) {
        a->source = SRC_FILE;
        if (!(a->jwks_file = strdup(cfg->jwks_file)))
            goto fail;
    } else if (cfg->jwks_uri && *cfg->jwks_uri) {
        a->source = SRC_URI;
        if (rw__fetch_check_url(cfg->jwks_uri) != 0) {
            snprintf(why, whylen, "jwks_uri \"%s\" is not an http(s) URL", cfg->jwks_uri);
            rc = RW_ECONFIG;
            goto fail;
        }
        if (!(a->jwks_uri = strdup(cfg->jwks_uri)))
            goto fail;
    } else {
        a->source = SRC_DISCOVERY;
        size_t n = strlen(cfg->issuer);
        while (n > 0 && cfg->issuer[n - 1] == '/')
            n--;
        static const char wk[] = "/.well-known/openid-configuration";
        if (!(a->discovery_url = malloc(n + sizeof wk)))
            goto fail;
        memcpy(a->discovery_url, cfg->issuer, n);
        memcpy(a->discovery_url + n, wk, sizeof wk);
        if (rw__fetch_check_url(a->discovery_url) != 0) {
            snprintf(why, whylen, "the issuer \"%s\" is not an http(s) URL, so its keys cannot be "
                     "discovered: give a jwks_uri or a JWKS file", cfg->issuer);
            rc = RW_ECONFIG;
            goto fail;
        }
    }

    if (a->source == SRC_FILE) {
        /* Read now, so a broken file stops the gateway at startup. */
        fetch_job_t job = {.a = a};
        job.work.data = &job;
        do_fetch(&job.work);
        if (job.rc != 0) {
            snprintf(why, whylen, "%s", job.error);
            rc = RW_ECONFIG;
            goto fail;
        }
        install_keys(a, job.keys);
        a->fetched_once = true;
        a->last_fetch_ms = uv_now(loop);
        a->stats.fetches++;
    } else if (!start_fetch(a)) {
        goto fail;
    }
    a->stats.keys = a->keys ? rw_jwks_count(a->keys) : 0;
    *out = a;
    return 0;
fail:
    if (rc == -ENOMEM && !why[0])
        snprintf(why, whylen, "out of memory");
    authz_free(a);
    return rc;
}
