/* JWT (compact JWS) signing and verification. Verification trusts nothing in
 * the token until the signature checks out with a key chosen by kid from the
 * caller's set, and the algorithm comes from the key, never from the token alone. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "internal.h"
#include "reelway/error.h"

struct rw_jwt_s {
    cJSON *header;
    cJSON *claims;
    rw_jwt_alg_t alg;
    const char *kid;     /* points into header */
    const char **scopes; /* into claims' scp strings or into scope_buf */
    size_t n_scopes;
    char *scope_buf; /* a copy of the scope claim, split in place */
};

static const char *const status_names[RW_JWT_STATUS_COUNT] = {
    [RW_JWT_OK] = "ok",
    [RW_JWT_EFORMAT] = "malformed_token",
    [RW_JWT_EBASE64] = "bad_base64url",
    [RW_JWT_EJSON] = "bad_json",
    [RW_JWT_EHEADER] = "bad_header",
    [RW_JWT_EALG] = "alg_refused",
    [RW_JWT_EKID] = "unknown_kid",
    [RW_JWT_EKEY_ALG] = "alg_not_for_key",
    [RW_JWT_ESIGNATURE] = "bad_signature",
    [RW_JWT_ECLAIM] = "bad_claim_type",
    [RW_JWT_EEXPIRED] = "expired",
    [RW_JWT_ENOTBEFORE] = "not_yet_valid",
    [RW_JWT_EIAT] = "issued_in_future",
    [RW_JWT_EISSUER] = "bad_issuer",
    [RW_JWT_EAUDIENCE] = "bad_audience",
    [RW_JWT_ESCOPE] = "insufficient_scope",
    [RW_JWT_EINTERNAL] = "internal_error",
};

const char *rw_jwt_status_name(rw_jwt_status_t status)
{
    if ((unsigned)status >= RW_JWT_STATUS_COUNT)
        return "unknown";
    return status_names[status];
}

int rw_jwt_status_http(rw_jwt_status_t status)
{
    switch (status) {
    case RW_JWT_OK:
        return 200;
    case RW_JWT_ESCOPE:
        return 403;
    case RW_JWT_EINTERNAL:
        return 500;
    default:
        return 401;
    }
}

/* ---- JSON helpers shared with jwk.c ------------------------------------- */

cJSON *rw__json_parse_exact(const char *buf, size_t len)
{
    const char *end = NULL;
    char *copy;
    cJSON *json;

    /* cJSON stops at a NUL, which would let "{...}\0garbage" through, and it
     * must be given a terminated copy to never read past our buffer. */
    if (len == 0 || memchr(buf, '\0', len) != NULL || (copy = malloc(len + 1)) == NULL)
        return NULL;
    memcpy(copy, buf, len);
    copy[len] = '\0';
    json = cJSON_ParseWithLengthOpts(copy, len, &end, 0);
    if (json != NULL) {
        while (end < copy + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
            end++;
        if (end != copy + len) {
            cJSON_Delete(json);
            json = NULL;
        }
    }
    free(copy);
    return json;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int rw__json_has_duplicate(const cJSON *object)
{
    const char **names;
    size_t n = 0, count = 0;
    int dup = 0;

    for (const cJSON *m = object->child; m != NULL; m = m->next)
        count++;
    if (count < 2)
        return 0;
    /* Sorting keeps this O(n log n): a token is at most 16 KiB, but thousands
     * of tiny members compared pairwise would still cost milliseconds. */
    if ((names = malloc(count * sizeof *names)) == NULL)
        return 1; /* treated as malformed: cannot check, so do not accept */
    for (const cJSON *m = object->child; m != NULL; m = m->next)
        names[n++] = m->string != NULL ? m->string : "";
    qsort(names, n, sizeof *names, compare_names);
    for (size_t i = 1; i < n && !dup; i++)
        dup = strcmp(names[i - 1], names[i]) == 0;
    free(names);
    return dup;
}

/* ---- signatures ---------------------------------------------------------- */

/* Sets up a digest-sign or digest-verify context for alg on key. */
static int init_ctx(EVP_MD_CTX *ctx, const rw_jwk_t *key, rw_jwt_alg_t alg, int sign)
{
    EVP_PKEY_CTX *pctx = NULL;
    const EVP_MD *md = rw__jwt_alg_md(alg);
    int ok = sign ? EVP_DigestSignInit(ctx, &pctx, md, NULL, key->pkey)
                  : EVP_DigestVerifyInit(ctx, &pctx, md, NULL, key->pkey);

    if (ok != 1)
        return RW_ECRYPTO;
    if (alg == RW_JWT_PS256) {
        /* RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash. */
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)
            return RW_ECRYPTO;
    } else if (key->type == RW__KEY_RSA) {
        if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
            return RW_ECRYPTO;
    }
    return 0;
}

/* JOSE R||S (each field bytes) to the DER ECDSA-Sig-Value OpenSSL verifies.
 * Returns the DER length, or -1; *der is freed with OPENSSL_free. */
static int ecdsa_raw_to_der(const uint8_t *raw, size_t field, uint8_t **der)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, (int)field, NULL);
    BIGNUM *s = BN_bin2bn(raw + field, (int)field, NULL);
    int len = -1;

    *der = NULL;
    if (sig == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        goto out;
    }
    len = i2d_ECDSA_SIG(sig, der);
out:
    ECDSA_SIG_free(sig);
    return len;
}

/* DER ECDSA-Sig-Value to JOSE R||S, each left-padded to field bytes. */
static int ecdsa_der_to_raw(const uint8_t *der, size_t der_len, size_t field, uint8_t *raw)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    const BIGNUM *r, *s;
    int rc = RW_ECRYPTO;

    if (sig == NULL)
        return RW_ECRYPTO;
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, raw, (int)field) == (int)field &&
        BN_bn2binpad(s, raw + field, (int)field) == (int)field)
        rc = 0;
    ECDSA_SIG_free(sig);
    return rc;
}

/* 0 if sig is a valid signature of input, RW_EAUTH if not (including a
 * signature of the wrong length), RW_ECRYPTO/-ENOMEM on internal failure. */
static int verify_signature(const rw_jwk_t *key, rw_jwt_alg_t alg, const uint8_t *input,
                            size_t input_len, const uint8_t *sig, size_t sig_len)
{
    EVP_MD_CTX *ctx = NULL;
    uint8_t *der = NULL;
    int der_len, rc;

    if (key->type == RW__KEY_RSA) {
        if (sig_len != (size_t)EVP_PKEY_get_size(key->pkey))
            return RW_EAUTH;
    } else {
        size_t field = rw__key_ec_field_len(key->type);
        if (sig_len != 2 * field)
            return RW_EAUTH;
        if ((der_len = ecdsa_raw_to_der(sig, field, &der)) <= 0) {
            rc = RW_ECRYPTO;
            goto out;
        }
        sig = der;
        sig_len = (size_t)der_len;
    }
    if ((ctx = EVP_MD_CTX_new()) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((rc = init_ctx(ctx, key, alg, 0)) != 0)
        goto out;
    rc = EVP_DigestVerify(ctx, sig, sig_len, input, input_len) == 1 ? 0 : RW_EAUTH;
out:
    /* A failed verification leaves entries in the thread's error queue, which
     * would confuse the next OpenSSL user on this thread. */
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    OPENSSL_free(der);
    return rc;
}

/* Signs input; *sig (JOSE form) is new. Returns 0 or RW_ECRYPTO/-ENOMEM. */
static int make_signature(const rw_jwk_t *key, rw_jwt_alg_t alg, const uint8_t *input,
                          size_t input_len, uint8_t **sig, size_t *sig_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc;

    *sig = NULL;
    if (ctx == NULL)
        return -ENOMEM;
    if ((rc = init_ctx(ctx, key, alg, 1)) != 0)
        goto out;
    if (EVP_DigestSign(ctx, NULL, &len, input, input_len) != 1) {
        rc = RW_ECRYPTO;
        goto out;
    }
    if ((buf = malloc(len)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (EVP_DigestSign(ctx, buf, &len, input, input_len) != 1) {
        rc = RW_ECRYPTO;
        goto out;
    }
    if (key->type != RW__KEY_RSA) {
        size_t field = rw__key_ec_field_len(key->type);
        uint8_t *raw = malloc(2 * field);
        if (raw == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        if ((rc = ecdsa_der_to_raw(buf, len, field, raw)) != 0) {
            free(raw);
            goto out;
        }
        free(buf);
        buf = raw;
        len = 2 * field;
    }
    *sig = buf;
    *sig_len = len;
    buf = NULL;
out:
    ERR_clear_error();
    EVP_MD_CTX_free(ctx);
    free(buf);
    return rc;
}

/* ---- signing ------------------------------------------------------------- */

/* Appends base64url(data) at dst (room checked by the caller). */
static size_t append_b64(char *dst, size_t cap, const void *data, size_t len)
{
    return (size_t)rw_b64url_encode(dst, cap, data, len);
}

int rw_jwt_sign(const rw_jwk_t *key, rw_jwt_alg_t alg, const char *typ, const cJSON *claims,
                char **out)
{
    cJSON *header = NULL;
    char *header_json = NULL, *claims_json = NULL, *token = NULL;
    uint8_t *sig = NULL;
    size_t sig_len = 0, cap, pos;
    int rc;

    *out = NULL;
    if (alg == RW_JWT_ALG_INVALID)
        alg = rw_jwk_alg(key);
    if (!cJSON_IsObject(claims) || !rw_jwk_allows(key, alg))
        return -EINVAL;
    if (!key->is_private)
        return RW_ENOTFOUND;
    if ((header = cJSON_CreateObject()) == NULL ||
        !cJSON_AddStringToObject(header, "alg", rw_jwt_alg_name(alg)) ||
        !cJSON_AddStringToObject(header, "typ", typ != NULL ? typ : "JWT") ||
        !cJSON_AddStringToObject(header, "kid", key->kid) ||
        (header_json = cJSON_PrintUnformatted(header)) == NULL ||
        (claims_json = cJSON_PrintUnformatted(claims)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    /* Header and payload, then room for the largest signature (RSA 8192: 1024 bytes). */
    cap = rw_b64url_encoded_len(strlen(header_json)) + rw_b64url_encoded_len(strlen(claims_json)) +
          rw_b64url_encoded_len(1024) + 3;
    if ((token = malloc(cap)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    pos = append_b64(token, cap, header_json, strlen(header_json));
    token[pos++] = '.';
    pos += append_b64(token + pos, cap - pos, claims_json, strlen(claims_json));
    if ((rc = make_signature(key, alg, (const uint8_t *)token, pos, &sig, &sig_len)) != 0)
        goto out;
    if (rw_b64url_encoded_len(sig_len) + 2 > cap - pos) {
        rc = RW_ECRYPTO;
        goto out;
    }
    token[pos++] = '.';
    append_b64(token + pos, cap - pos, sig, sig_len);
    *out = token;
    token = NULL;
out:
    cJSON_Delete(header);
    free(header_json);
    free(claims_json);
    free(token);
    free(sig);
    return rc;
}

/* ---- verification -------------------------------------------------------- */

static rw_jwt_status_t fail(rw_jwt_error_t *err, rw_jwt_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static rw_jwt_status_t fail(rw_jwt_error_t *err, rw_jwt_status_t status, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        err->status = status;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return status;
}

/* Decodes one segment into a new buffer with a NUL after the bytes. */
static int decode_segment(const char *src, size_t n, uint8_t **out, size_t *out_len)
{
    size_t cap = rw_b64url_decoded_max(n) + 1;

    if ((*out = malloc(cap)) == NULL)
        return -ENOMEM;
    if (rw_b64url_decode(*out, cap, out_len, src, n) != 0)
        return RW_EPARSE;
    (*out)[*out_len] = '\0';
    return 0;
}

/* Parses a decoded segment as a JSON object with distinct member names. */
static cJSON *parse_object(const uint8_t *buf, size_t len)
{
    cJSON *json = rw__json_parse_exact((const char *)buf, len);

    if (json != NULL && (!cJSON_IsObject(json) || rw__json_has_duplicate(json))) {
        cJSON_Delete(json);
        json = NULL;
    }
    return json;
}

/* The token's alg member, named in a log message only when it is short and
 * plain (the rest of the header is attacker-chosen text). */
static const char *printable_alg(const char *alg)
{
    size_t len = strlen(alg);

    if (len == 0 || len > 16)
        return "?";
    for (size_t i = 0; i < len; i++)
        if (!((alg[i] >= 'A' && alg[i] <= 'Z') || (alg[i] >= 'a' && alg[i] <= 'z') ||
              (alg[i] >= '0' && alg[i] <= '9') || alg[i] == '-' || alg[i] == '+'))
            return "?";
    return alg;
}

/* 1 if item is a string or an array of strings only. */
static int string_or_strings(const cJSON *item)
{
    const cJSON *e;

    if (cJSON_IsString(item))
        return 1;
    if (!cJSON_IsArray(item))
        return 0;
    cJSON_ArrayForEach(e, item)
    {
        if (!cJSON_IsString(e))
            return 0;
    }
    return 1;
}

/* Registered claims must have their RFC 7519 types when present. Returns the
 * name of the first claim that does not, or NULL. */
static const char *bad_claim_type(const cJSON *claims)
{
    static const char *const numbers[] = {"exp", "nbf", "iat"};
    static const char *const strings[] = {"iss", "sub", "client_id", "scope", "jti"};
    static const char *const lists[] = {"aud", "scp"};
    const cJSON *item;

    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        item = cJSON_GetObjectItemCaseSensitive(claims, numbers[i]);
        if (item != NULL && !cJSON_IsNumber(item))
            return numbers[i];
    }
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        item = cJSON_GetObjectItemCaseSensitive(claims, strings[i]);
        if (item != NULL && !cJSON_IsString(item))
            return strings[i];
    }
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        item = cJSON_GetObjectItemCaseSensitive(claims, lists[i]);
        if (item != NULL && !string_or_strings(item))
            return lists[i];
    }
    return NULL;
}

/* How far apart two times are, bounded so a message never prints 1e300. */
static double gap_s(double later, double earlier)
{
    double d = later - earlier;
    return d > 1e12 ? 1e12 : d;
}

static int audience_ok(const cJSON *claims, const rw_jwt_verify_opts_t *opts)
{
    const cJSON *aud = cJSON_GetObjectItemCaseSensitive(claims, "aud");
    const cJSON *e;

    /* API Gateway looks at client_id (Cognito access tokens) only when aud is absent. */
    if (aud == NULL)
        aud = cJSON_GetObjectItemCaseSensitive(claims, "client_id");
    if (aud == NULL)
        return 0;
    for (size_t i = 0; i < opts->n_audiences; i++) {
        if (cJSON_IsString(aud)) {
            if (strcmp(aud->valuestring, opts->audiences[i]) == 0)
                return 1;
            continue;
        }
        cJSON_ArrayForEach(e, aud)
        {
            if (strcmp(e->valuestring, opts->audiences[i]) == 0)
                return 1;
        }
    }
    return 0;
}

/* Collects the scopes: "scope" (space separated, OAuth 2.0) or else "scp"
 * (array of strings, Okta/Keycloak style, or space separated, Azure style). */
static int collect_scopes(rw_jwt_t *jwt)
{
    const cJSON *scope = cJSON_GetObjectItemCaseSensitive(jwt->claims, "scope");
    const cJSON *e;
    size_t n = 0;

    if (scope == NULL)
        scope = cJSON_GetObjectItemCaseSensitive(jwt->claims, "scp");
    if (scope == NULL)
        return 0;
    if (cJSON_IsArray(scope)) {
        size_t count = (size_t)cJSON_GetArraySize(scope);
        if (count == 0)
            return 0;
        if ((jwt->scopes = calloc(count, sizeof *jwt->scopes)) == NULL)
            return -ENOMEM;
        cJSON_ArrayForEach(e, scope)
        {
            if (e->valuestring[0] != '\0')
                jwt->scopes[n++] = e->valuestring;
        }
        jwt->n_scopes = n;
        return 0;
    }
    size_t len = strlen(scope->valuestring);
    if ((jwt->scope_buf = malloc(len + 1)) == NULL ||
        (jwt->scopes = calloc(len / 2 + 1, sizeof *jwt->scopes)) == NULL)
        return -ENOMEM;
    memcpy(jwt->scope_buf, scope->valuestring, len + 1);
    for (char *p = jwt->scope_buf; *p != '\0';) {
        while (*p == ' ')
            *p++ = '\0';
        if (*p == '\0')
            break;
        jwt->scopes[n++] = p;
        while (*p != '\0' && *p != ' ')
            p++;
    }
    jwt->n_scopes = n;
    return 0;
}

static int has_scope(const rw_jwt_t *jwt, const char *want)
{
    for (size_t i = 0; i < jwt->n_scopes; i++)
        if (strcmp(jwt->scopes[i], want) == 0)
            return 1;
    return 0;
}

/* Checks exp, nbf, iat against now with the skew. */
static rw_jwt_status_t check_times(const cJSON *claims, const rw_jwt_verify_opts_t *opts,
                                   rw_jwt_error_t *err)
{
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");
    const cJSON *nbf = cJSON_GetObjectItemCaseSensitive(claims, "nbf");
    const cJSON *iat = cJSON_GetObjectItemCaseSensitive(claims, "iat");
    double now = (double)(opts->now != 0 ? opts->now : (int64_t)time(NULL));
    double skew = opts->clock_skew_s > 0 ? (double)opts->clock_skew_s : 0.0;

    /* Doubles, not integers: a NumericDate may be fractional or absurdly
     * large, and converting 1e300 to int64 would be undefined. */
    if (exp == NULL && !opts->allow_missing_exp)
        return fail(err, RW_JWT_EEXPIRED, "token has no exp claim");
    if (exp != NULL && now - skew >= exp->valuedouble)
        return fail(err, RW_JWT_EEXPIRED, "token expired %.0f s ago", gap_s(now, exp->valuedouble));
    if (nbf != NULL && now + skew < nbf->valuedouble)
        return fail(err, RW_JWT_ENOTBEFORE, "token not valid for another %.0f s",
                    gap_s(nbf->valuedouble, now));
    if (iat != NULL && now + skew < iat->valuedouble)
        return fail(err, RW_JWT_EIAT, "token issued %.0f s in the future",
                    gap_s(iat->valuedouble, now));
    return RW_JWT_OK;
}

rw_jwt_status_t rw_jwt_verify(const rw_jwks_t *keys, const char *token, size_t len,
                              const rw_jwt_verify_opts_t *opts, rw_jwt_t **out, rw_jwt_error_t *err)
{
    static const rw_jwt_verify_opts_t no_opts;
    const char *dot1, *dot2;
    uint8_t *header_raw = NULL, *payload_raw = NULL, *sig = NULL;
    size_t header_len, payload_len, sig_len;
    const cJSON *item;
    const rw_jwk_t *key;
    const char *bad = NULL;
    rw_jwt_t *jwt = NULL;
    rw_jwt_status_t st = RW_JWT_OK;
    int rc;

    if (out != NULL)
        *out = NULL;
    if (err != NULL) {
        err->status = RW_JWT_OK;
        err->message[0] = '\0';
    }
    if (opts == NULL)
        opts = &no_opts;

    /* Shape: header.payload.signature, nothing more. */
    if (token == NULL || len == 0 || len > RW_JWT_MAX_LEN) {
        st = fail(err, RW_JWT_EFORMAT, "token empty or longer than %d bytes", RW_JWT_MAX_LEN);
        goto out;
    }
    dot1 = memchr(token, '.', len);
    dot2 = dot1 != NULL ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot1 == NULL || dot2 == NULL ||
        memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        st = fail(err, RW_JWT_EFORMAT, "token does not have exactly three segments");
        goto out;
    }
    if ((jwt = calloc(1, sizeof *jwt)) == NULL) {
        st = fail(err, RW_JWT_EINTERNAL, "out of memory");
        goto out;
    }

    /* Every segment must be strict base64url before anything is interpreted. */
    rc = decode_segment(token, (size_t)(dot1 - token), &header_raw, &header_len);
    if (rc == 0)
        rc = decode_segment(dot1 + 1, (size_t)(dot2 - dot1 - 1), &payload_raw, &payload_len);
    if (rc == 0)
        rc = decode_segment(dot2 + 1, len - (size_t)(dot2 + 1 - token), &sig, &sig_len);
    if (rc != 0) {
        st = rc == -ENOMEM ? fail(err, RW_JWT_EINTERNAL, "out of memory")
                           : fail(err, RW_JWT_EBASE64, "a segment is not valid base64url");
        goto out;
    }
    if ((jwt->header = parse_object(header_raw, header_len)) == NULL) {
        st = fail(err, RW_JWT_EJSON, "header is not a JSON object with distinct members");
        goto out;
    }
    if ((jwt->claims = parse_object(payload_raw, payload_len)) == NULL) {
        st = fail(err, RW_JWT_EJSON, "payload is not a JSON object with distinct members");
        goto out;
    }

    /* The algorithm first: "none" and HMAC are refused before any key is
     * touched, so a public key can never be used as an HMAC secret. */
    item = cJSON_GetObjectItemCaseSensitive(jwt->header, "alg");
    if (!cJSON_IsString(item)) {
        st = fail(err, RW_JWT_EALG, "header has no alg string");
        goto out;
    }
    jwt->alg = rw_jwt_alg_parse(item->valuestring);
    if (jwt->alg == RW_JWT_ALG_INVALID) {
        st = fail(err, RW_JWT_EALG, "alg %s refused", printable_alg(item->valuestring));
        goto out;
    }
    item = cJSON_GetObjectItemCaseSensitive(jwt->header, "kid");
    if (!cJSON_IsString(item) || item->valuestring[0] == '\0') {
        st = fail(err, RW_JWT_EHEADER, "header has no kid string");
        goto out;
    }
    jwt->kid = item->valuestring;
    item = cJSON_GetObjectItemCaseSensitive(jwt->header, "typ");
    if (item != NULL && !cJSON_IsString(item)) {
        st = fail(err, RW_JWT_EHEADER, "header typ is not a string");
        goto out;
    }
    /* RFC 7515 §4.1.11: extensions we do not understand must not be ignored. */
    if (cJSON_GetObjectItemCaseSensitive(jwt->header, "crit") != NULL) {
        st = fail(err, RW_JWT_EHEADER, "header crit extensions are not supported");
        goto out;
    }

    /* The key comes from our set by kid; jku/jwk/x5u in the header are never used. */
    if ((key = rw_jwks_find(keys, jwt->kid)) == NULL) {
        st = fail(err, RW_JWT_EKID, "no key with the token's kid");
        goto out;
    }
    if (!rw_jwk_allows(key, jwt->alg)) {
        st = fail(err, RW_JWT_EKEY_ALG, "alg %s is not allowed for key %.40s",
                  rw_jwt_alg_name(jwt->alg), rw_jwk_kid(key));
        goto out;
    }
    rc = verify_signature(key, jwt->alg, (const uint8_t *)token, (size_t)(dot2 - token), sig,
                          sig_len);
    if (rc == RW_EAUTH) {
        st = fail(err, RW_JWT_ESIGNATURE, "signature does not verify");
        goto out;
    }
    if (rc != 0) {
        st = fail(err, RW_JWT_EINTERNAL, "signature check failed: %s",
                  rc == -ENOMEM ? "out of memory" : "OpenSSL error");
        goto out;
    }

    /* The claims are authentic now; check that they apply here. */
    if ((bad = bad_claim_type(jwt->claims)) != NULL) {
        st = fail(err, RW_JWT_ECLAIM, "claim %s has the wrong type", bad);
        goto out;
    }
    if ((st = check_times(jwt->claims, opts, err)) != RW_JWT_OK)
        goto out;
    if (opts->issuer != NULL) {
        item = cJSON_GetObjectItemCaseSensitive(jwt->claims, "iss");
        if (item == NULL || strcmp(item->valuestring, opts->issuer) != 0) {
            st = fail(err, RW_JWT_EISSUER, "iss is %s the configured issuer",
                      item == NULL ? "missing, not" : "not");
            goto out;
        }
    }
    if (opts->n_audiences > 0 && !audience_ok(jwt->claims, opts)) {
        st = fail(err, RW_JWT_EAUDIENCE, "the token does not have a valid audience");
        goto out;
    }
    if (collect_scopes(jwt) != 0) {
        st = fail(err, RW_JWT_EINTERNAL, "out of memory");
        goto out;
    }
    if (opts->n_scopes > 0) {
        size_t held = 0;
        for (size_t i = 0; i < opts->n_scopes; i++)
            held += has_scope(jwt, opts->scopes[i]) ? 1 : 0;
        if (held == 0 || (opts->require_all_scopes && held != opts->n_scopes)) {
            st = fail(err, RW_JWT_ESCOPE, "the token lacks the route's %s",
                      opts->require_all_scopes ? "scopes" : "scope");
            goto out;
        }
    }
    if (out != NULL) {
        *out = jwt;
        jwt = NULL;
    }
out:
    rw_jwt_free(jwt);
    free(header_raw);
    free(payload_raw);
    free(sig);
    return st;
}

const cJSON *rw_jwt_header(const rw_jwt_t *jwt)
{
    return jwt->header;
}

const cJSON *rw_jwt_claims(const rw_jwt_t *jwt)
{
    return jwt->claims;
}

const char *rw_jwt_claim_string(const rw_jwt_t *jwt, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(jwt->claims, name);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

rw_jwt_alg_t rw_jwt_alg(const rw_jwt_t *jwt)
{
    return jwt->alg;
}

const char *rw_jwt_kid(const rw_jwt_t *jwt)
{
    return jwt->kid;
}

size_t rw_jwt_scope_count(const rw_jwt_t *jwt)
{
    return jwt->n_scopes;
}

const char *rw_jwt_scope(const rw_jwt_t *jwt, size_t i)
{
    return i < jwt->n_scopes ? jwt->scopes[i] : NULL;
}

void rw_jwt_free(rw_jwt_t *jwt)
{
    if (jwt == NULL)
        return;
    cJSON_Delete(jwt->header);
    cJSON_Delete(jwt->claims);
    free(jwt->scopes);
    free(jwt->scope_buf);
    free(jwt);
}
