/* Keys and key sets: JWK/JWKS JSON in and out, PEM in and out, generation and
 * RFC 7638 thumbprints. Only RSA (2048..8192 bits) and EC P-256/P-384 exist here. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "internal.h"
#include "reelway/error.h"

#define JWKS_MAX_BYTES (1 << 20)

struct rw_jwks_s {
    rw_jwk_t *keys[RW_JWKS_MAX_KEYS];
    size_t count;
};

/* ---- algorithms ---------------------------------------------------------- */

static const struct {
    rw_jwt_alg_t alg;
    const char *name;
} alg_names[] = {
    {RW_JWT_RS256, "RS256"}, {RW_JWT_RS384, "RS384"}, {RW_JWT_RS512, "RS512"},
    {RW_JWT_PS256, "PS256"}, {RW_JWT_ES256, "ES256"}, {RW_JWT_ES384, "ES384"},
};

const char *rw_jwt_alg_name(rw_jwt_alg_t alg)
{
    for (size_t i = 0; i < sizeof alg_names / sizeof alg_names[0]; i++)
        if (alg_names[i].alg == alg)
            return alg_names[i].name;
    return "invalid";
}

rw_jwt_alg_t rw_jwt_alg_parse(const char *name)
{
    if (name == NULL)
        return RW_JWT_ALG_INVALID;
    for (size_t i = 0; i < sizeof alg_names / sizeof alg_names[0]; i++)
        if (strcmp(alg_names[i].name, name) == 0)
            return alg_names[i].alg;
    return RW_JWT_ALG_INVALID;
}

const EVP_MD *rw__jwt_alg_md(rw_jwt_alg_t alg)
{
    switch (alg) {
    case RW_JWT_RS256:
    case RW_JWT_PS256:
    case RW_JWT_ES256:
        return EVP_sha256();
    case RW_JWT_RS384:
    case RW_JWT_ES384:
        return EVP_sha384();
    case RW_JWT_RS512:
        return EVP_sha512();
    default:
        return NULL;
    }
}

size_t rw__key_ec_field_len(rw__key_type_t type)
{
    return type == RW__KEY_EC_P256 ? 32 : type == RW__KEY_EC_P384 ? 48 : 0;
}

/* Whether alg belongs to the key type at all (before any pinning). */
static int type_allows(rw__key_type_t type, rw_jwt_alg_t alg)
{
    switch (type) {
    case RW__KEY_RSA:
        return alg == RW_JWT_RS256 || alg == RW_JWT_RS384 || alg == RW_JWT_RS512 ||
               alg == RW_JWT_PS256;
    case RW__KEY_EC_P256:
        return alg == RW_JWT_ES256;
    case RW__KEY_EC_P384:
        return alg == RW_JWT_ES384;
    }
    return 0;
}

static rw_jwt_alg_t type_default_alg(rw__key_type_t type)
{
    return type == RW__KEY_RSA       ? RW_JWT_RS256
           : type == RW__KEY_EC_P256 ? RW_JWT_ES256
                                     : RW_JWT_ES384;
}

int rw_jwk_allows(const rw_jwk_t *key, rw_jwt_alg_t alg)
{
    if (!type_allows(key->type, alg))
        return 0;
    return key->pinned_alg == RW_JWT_ALG_INVALID || key->pinned_alg == alg;
}

/* ---- key objects --------------------------------------------------------- */

int rw__key_classify(const EVP_PKEY *pkey, rw__key_type_t *type)
{
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < RW_JWK_RSA_MIN_BITS || bits > RW_JWK_RSA_MAX_BITS)
            return RW_ECONFIG;
        *type = RW__KEY_RSA;
        return 0;
    }
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        size_t len = 0;
        if (!EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                            &len)) {
            ERR_clear_error();
            return RW_ECONFIG;
        }
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
            *type = RW__KEY_EC_P256;
            return 0;
        }
        if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
            *type = RW__KEY_EC_P384;
            return 0;
        }
    }
    return RW_ECONFIG;
}

static int kid_valid(const char *kid)
{
    size_t len = strlen(kid);
    return len > 0 && len <= RW_JWK_KID_MAX;
}

int rw__jwk_wrap(EVP_PKEY *pkey, const char *kid, rw_jwt_alg_t alg, int is_private, rw_jwk_t **out)
{
    rw__key_type_t type;
    rw_jwk_t *key;
    int rc;

    *out = NULL;
    if (kid != NULL && !kid_valid(kid))
        return -EINVAL;
    if ((rc = rw__key_classify(pkey, &type)) != 0)
        return rc;
    if (alg != RW_JWT_ALG_INVALID && !type_allows(type, alg))
        return RW_ECONFIG;
    key = calloc(1, sizeof *key);
    if (key == NULL)
        return -ENOMEM;
    key->refs = 1;
    key->pkey = pkey;
    key->type = type;
    key->pinned_alg = alg;
    key->is_private = is_private;
    if (kid != NULL) {
        memcpy(key->kid, kid, strlen(kid) + 1);
    } else if ((rc = rw_jwk_thumbprint(key, key->kid)) != 0) {
        key->pkey = NULL; /* the caller keeps ownership on failure */
        free(key);
        return rc;
    }
    *out = key;
    return 0;
}

rw_jwk_t *rw_jwk_ref(rw_jwk_t *key)
{
    __atomic_fetch_add(&key->refs, 1, __ATOMIC_RELAXED);
    return key;
}

void rw_jwk_free(rw_jwk_t *key)
{
    if (key == NULL)
        return;
    if (__atomic_sub_fetch(&key->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    EVP_PKEY_free(key->pkey); /* OpenSSL wipes private components when freeing */
    free(key);
}

const char *rw_jwk_kid(const rw_jwk_t *key)
{
    return key->kid;
}

rw_jwt_alg_t rw_jwk_alg(const rw_jwk_t *key)
{
    return key->pinned_alg != RW_JWT_ALG_INVALID ? key->pinned_alg : type_default_alg(key->type);
}

int rw_jwk_is_private(const rw_jwk_t *key)
{
    return key->is_private;
}

int rw_jwk_generate(rw_jwk_kind_t kind, rw_jwk_t **out)
{
    EVP_PKEY *pkey = NULL;
    uint8_t raw[16];
    char kid[32];
    int rc;

    *out = NULL;
    switch (kind) {
    case RW_JWK_RSA2048:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
        break;
    case RW_JWK_EC_P256:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        break;
    case RW_JWK_EC_P384:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        break;
    default:
        return -EINVAL;
    }
    if (pkey == NULL || RAND_bytes(raw, sizeof raw) != 1) {
        ERR_clear_error();
        EVP_PKEY_free(pkey);
        return RW_ECRYPTO;
    }
    rw_b64url_encode(kid, sizeof kid, raw, sizeof raw);
    rc = rw__jwk_wrap(pkey, kid, RW_JWT_ALG_INVALID, 1, out);
    if (rc != 0)
        EVP_PKEY_free(pkey);
    else
        (*out)->pinned_alg = type_default_alg((*out)->type);
    return rc;
}

/* ---- PEM ----------------------------------------------------------------- */

/* Refuses every passphrase prompt: without it OpenSSL would read the terminal
 * when it meets an encrypted PEM. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    return -1;
}

int rw_jwk_from_pem(const char *pem, size_t len, const char *kid, rw_jwt_alg_t alg, rw_jwk_t **out)
{
    EVP_PKEY *pkey = NULL;
    BIO *bio = NULL;
    int is_private = 1;
    int rc;

    *out = NULL;
    if (len > JWKS_MAX_BYTES)
        return RW_EPARSE;
    if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL)
        return -ENOMEM;
    pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (pkey == NULL) {
        BIO_free(bio);
        if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        pkey = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
        is_private = 0;
    }
    if (pkey == NULL) {
        rc = RW_EPARSE;
        goto out;
    }
    rc = rw__jwk_wrap(pkey, kid, alg, is_private, out);
    if (rc == 0)
        pkey = NULL;
out:
    ERR_clear_error();
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    return rc;
}

/* Copies a memory BIO's contents into a new NUL-terminated string. */
static int bio_to_string(BIO *bio, char **out, size_t *out_len)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *s;

    if (n <= 0)
        return RW_ECRYPTO;
    if ((s = malloc((size_t)n + 1)) == NULL)
        return -ENOMEM;
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    *out = s;
    if (out_len != NULL)
        *out_len = (size_t)n;
    return 0;
}

int rw_jwk_private_pem(const rw_jwk_t *key, char **out, size_t *out_len)
{
    BIO *bio;
    int rc;

    *out = NULL;
    if (!key->is_private)
        return RW_ENOTFOUND;
    if ((bio = BIO_new(BIO_s_secmem())) == NULL)
        return -ENOMEM;
    if (!PEM_write_bio_PrivateKey(bio, key->pkey, NULL, NULL, 0, NULL, NULL))
        rc = RW_ECRYPTO;
    else
        rc = bio_to_string(bio, out, out_len);
    ERR_clear_error();
    BIO_free(bio);
    return rc;
}

int rw_jwk_public_pem(const rw_jwk_t *key, char **out, size_t *out_len)
{
    BIO *bio;
    int rc;

    *out = NULL;
    if ((bio = BIO_new(BIO_s_mem())) == NULL)
        return -ENOMEM;
    if (!PEM_write_bio_PUBKEY(bio, key->pkey))
        rc = RW_ECRYPTO;
    else
        rc = bio_to_string(bio, out, out_len);
    ERR_clear_error();
    BIO_free(bio);
    return rc;
}

/* ---- JWK JSON ------------------------------------------------------------ */

/* A BIGNUM parameter of the key as big-endian bytes, left-padded to pad bytes
 * (0: minimal length), then base64url. NULL on failure. */
static char *bn_param_b64(const EVP_PKEY *pkey, const char *name, size_t pad)
{
    BIGNUM *bn = NULL;
    uint8_t *buf = NULL;
    char *s = NULL;
    size_t len;

    if (!EVP_PKEY_get_bn_param(pkey, name, &bn))
        goto out;
    len = (size_t)BN_num_bytes(bn);
    if (pad != 0) {
        if (len > pad)
            goto out;
        len = pad;
    }
    if (len == 0 || (buf = malloc(len)) == NULL)
        goto out;
    if (BN_bn2binpad(bn, buf, (int)len) < 0)
        goto out;
    s = rw_b64url_encode_alloc(buf, len);
out:
    ERR_clear_error();
    free(buf);
    BN_free(bn);
    return s;
}

/* The public members of a key as base64url strings: n and e for RSA, x and y
 * for EC. Both are new strings; 0 or RW_ECRYPTO. */
static int public_members(const rw_jwk_t *key, char **a, char **b)
{
    if (key->type == RW__KEY_RSA) {
        *a = bn_param_b64(key->pkey, OSSL_PKEY_PARAM_RSA_N, 0);
        *b = bn_param_b64(key->pkey, OSSL_PKEY_PARAM_RSA_E, 0);
    } else {
        size_t field = rw__key_ec_field_len(key->type);
        *a = bn_param_b64(key->pkey, OSSL_PKEY_PARAM_EC_PUB_X, field);
        *b = bn_param_b64(key->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, field);
    }
    if (*a == NULL || *b == NULL) {
        free(*a);
        free(*b);
        *a = *b = NULL;
        return RW_ECRYPTO;
    }
    return 0;
}

static const char *crv_name(rw__key_type_t type)
{
    return type == RW__KEY_EC_P256 ? "P-256" : "P-384";
}

cJSON *rw_jwk_to_json(const rw_jwk_t *key)
{
    cJSON *jwk = NULL;
    char *a = NULL, *b = NULL;
    int ok;

    if (public_members(key, &a, &b) != 0)
        return NULL;
    if ((jwk = cJSON_CreateObject()) == NULL)
        goto out;
    if (key->type == RW__KEY_RSA) {
        ok = cJSON_AddStringToObject(jwk, "kty", "RSA") &&
             cJSON_AddStringToObject(jwk, "use", "sig") &&
             cJSON_AddStringToObject(jwk, "alg", rw_jwt_alg_name(rw_jwk_alg(key))) &&
             cJSON_AddStringToObject(jwk, "kid", key->kid) &&
             cJSON_AddStringToObject(jwk, "n", a) && cJSON_AddStringToObject(jwk, "e", b);
    } else {
        ok = cJSON_AddStringToObject(jwk, "kty", "EC") &&
             cJSON_AddStringToObject(jwk, "use", "sig") &&
             cJSON_AddStringToObject(jwk, "alg", rw_jwt_alg_name(rw_jwk_alg(key))) &&
             cJSON_AddStringToObject(jwk, "kid", key->kid) &&
             cJSON_AddStringToObject(jwk, "crv", crv_name(key->type)) &&
             cJSON_AddStringToObject(jwk, "x", a) && cJSON_AddStringToObject(jwk, "y", b);
    }
    if (!ok) {
        cJSON_Delete(jwk);
        jwk = NULL;
    }
out:
    free(a);
    free(b);
    return jwk;
}

int rw_jwk_thumbprint(const rw_jwk_t *key, char out[44])
{
    char *a = NULL, *b = NULL, *canon = NULL;
    uint8_t digest[32];
    size_t len;
    int rc;

    if ((rc = public_members(key, &a, &b)) != 0)
        return rc;
    /* RFC 7638 §3.2: required members only, lexicographic order, no whitespace. */
    len = strlen(a) + strlen(b) + 64;
    if ((canon = malloc(len)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (key->type == RW__KEY_RSA)
        snprintf(canon, len, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", b, a);
    else
        snprintf(canon, len, "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
                 crv_name(key->type), a, b);
    if (!EVP_Digest(canon, strlen(canon), digest, NULL, EVP_sha256(), NULL)) {
        ERR_clear_error();
        rc = RW_ECRYPTO;
        goto out;
    }
    rw_b64url_encode(out, 44, digest, sizeof digest);
out:
    free(canon);
    free(a);
    free(b);
    return rc;
}

/* Decodes a base64url string member into a new buffer. Returns 0, RW_EPARSE
 * (missing, not a string, not base64url, empty) or -ENOMEM. */
static int member_bytes(const cJSON *jwk, const char *name, uint8_t **buf, size_t *len)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(jwk, name);
    size_t n;
    int rc;

    *buf = NULL;
    if (!cJSON_IsString(item) || item->valuestring[0] == '\0')
        return RW_EPARSE;
    n = strlen(item->valuestring);
    if ((*buf = malloc(rw_b64url_decoded_max(n) + 1)) == NULL)
        return -ENOMEM;
    rc = rw_b64url_decode(*buf, rw_b64url_decoded_max(n) + 1, len, item->valuestring, n);
    if (rc == 0 && *len == 0)
        rc = RW_EPARSE;
    if (rc != 0) {
        free(*buf);
        *buf = NULL;
        return RW_EPARSE;
    }
    return 0;
}

/* Builds an EVP_PKEY from parameters. */
static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *pkey = NULL;

    if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static int rsa_from_json(const cJSON *jwk, EVP_PKEY **pkey, const char **msg)
{
    uint8_t *n = NULL, *e = NULL;
    size_t n_len, e_len;
    BIGNUM *bn_n = NULL, *bn_e = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    int rc;

    if ((rc = member_bytes(jwk, "n", &n, &n_len)) != 0 ||
        (rc = member_bytes(jwk, "e", &e, &e_len)) != 0) {
        *msg = "RSA key without valid base64url n and e";
        goto out;
    }
    bn_n = BN_bin2bn(n, (int)n_len, NULL);
    bn_e = BN_bin2bn(e, (int)e_len, NULL);
    if (bn_n == NULL || bn_e == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    /* A weak or absurd public key is the issuer's mistake, not something to
     * accept quietly: small moduli are forgeable, huge ones cost CPU per token. */
    if (BN_num_bits(bn_n) < RW_JWK_RSA_MIN_BITS || BN_num_bits(bn_n) > RW_JWK_RSA_MAX_BITS) {
        *msg = "RSA modulus size out of range (2048..8192 bits)";
        rc = RW_ECONFIG;
        goto out;
    }
    if (BN_num_bits(bn_e) < 2 || BN_num_bits(bn_e) > 64 || !BN_is_odd(bn_e) || !BN_is_odd(bn_n)) {
        *msg = "RSA exponent or modulus invalid";
        rc = RW_ECONFIG;
        goto out;
    }
    if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e)) {
        rc = -ENOMEM;
        goto out;
    }
    if ((*pkey = pkey_fromdata("RSA", bld)) == NULL) {
        *msg = "RSA key rejected by OpenSSL";
        rc = RW_ECONFIG;
    }
out:
    ERR_clear_error();
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    free(n);
    free(e);
    return rc;
}

static int ec_from_json(const cJSON *jwk, rw__key_type_t type, EVP_PKEY **pkey, const char **msg)
{
    size_t field = rw__key_ec_field_len(type);
    uint8_t *x = NULL, *y = NULL;
    uint8_t point[1 + 2 * 48];
    size_t x_len, y_len;
    OSSL_PARAM_BLD *bld = NULL;
    EVP_PKEY_CTX *check = NULL;
    int rc;

    if ((rc = member_bytes(jwk, "x", &x, &x_len)) != 0 ||
        (rc = member_bytes(jwk, "y", &y, &y_len)) != 0) {
        *msg = "EC key without valid base64url x and y";
        goto out;
    }
    /* RFC 7518 §6.2.1.2: each coordinate is exactly the field size. */
    if (x_len != field || y_len != field) {
        *msg = "EC coordinate of the wrong length";
        rc = RW_EPARSE;
        goto out;
    }
    point[0] = 0x04; /* uncompressed point */
    memcpy(point + 1, x, field);
    memcpy(point + 1 + field, y, field);
    if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
                                         type == RW__KEY_EC_P256 ? "prime256v1" : "secp384r1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * field)) {
        rc = -ENOMEM;
        goto out;
    }
    /* The point must lie on the curve, or signatures "verify" against a key
     * nobody holds (invalid-curve attacks). */
    if ((*pkey = pkey_fromdata("EC", bld)) == NULL ||
        (check = EVP_PKEY_CTX_new_from_pkey(NULL, *pkey, NULL)) == NULL ||
        EVP_PKEY_public_check(check) != 1) {
        EVP_PKEY_free(*pkey);
        *pkey = NULL;
        *msg = "EC point not on the curve";
        rc = RW_ECONFIG;
    }
out:
    ERR_clear_error();
    EVP_PKEY_CTX_free(check);
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return rc;
}

/* An optional string member: 0 with *value NULL when absent, RW_EPARSE when
 * present but not a string. */
static int optional_string(const cJSON *jwk, const char *name, const char **value)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(jwk, name);

    *value = NULL;
    if (item == NULL)
        return 0;
    if (!cJSON_IsString(item))
        return RW_EPARSE;
    *value = item->valuestring;
    return 0;
}

int rw_jwk_from_json(const cJSON *jwk, rw_jwk_t **out, const char **msg)
{
    const char *kty, *use, *alg_name, *kid, *crv, *dummy = NULL;
    const cJSON *ops;
    rw__key_type_t type;
    rw_jwt_alg_t alg = RW_JWT_ALG_INVALID;
    EVP_PKEY *pkey = NULL;
    int rc;

    if (msg == NULL)
        msg = &dummy;
    *out = NULL;
    *msg = NULL;
    if (!cJSON_IsObject(jwk)) {
        *msg = "JWK is not an object";
        return RW_EPARSE;
    }
    if (optional_string(jwk, "kty", &kty) != 0 || kty == NULL ||
        optional_string(jwk, "use", &use) != 0 || optional_string(jwk, "alg", &alg_name) != 0 ||
        optional_string(jwk, "kid", &kid) != 0) {
        *msg = "JWK kty, use, alg or kid missing or not a string";
        return RW_EPARSE;
    }
    /* Keys for other purposes (encryption, symmetric, curves we do not
     * implement) share JWKS documents with signing keys: skip them. */
    if (use != NULL && strcmp(use, "sig") != 0) {
        *msg = "not a signature key";
        return RW_ENOTFOUND;
    }
    ops = cJSON_GetObjectItemCaseSensitive(jwk, "key_ops");
    if (ops != NULL) {
        const cJSON *op;
        int verify = 0;
        if (!cJSON_IsArray(ops)) {
            *msg = "JWK key_ops is not an array";
            return RW_EPARSE;
        }
        cJSON_ArrayForEach(op, ops)
        {
            if (cJSON_IsString(op) && strcmp(op->valuestring, "verify") == 0)
                verify = 1;
        }
        if (!verify) {
            *msg = "key_ops does not allow verify";
            return RW_ENOTFOUND;
        }
    }
    if (strcmp(kty, "RSA") == 0) {
        type = RW__KEY_RSA;
    } else if (strcmp(kty, "EC") == 0) {
        if (optional_string(jwk, "crv", &crv) != 0 || crv == NULL) {
            *msg = "EC key without crv";
            return RW_EPARSE;
        }
        if (strcmp(crv, "P-256") == 0) {
            type = RW__KEY_EC_P256;
        } else if (strcmp(crv, "P-384") == 0) {
            type = RW__KEY_EC_P384;
        } else {
            *msg = "unsupported curve";
            return RW_ENOTFOUND;
        }
    } else {
        *msg = "unsupported kty";
        return RW_ENOTFOUND;
    }
    if (alg_name != NULL) {
        alg = rw_jwt_alg_parse(alg_name);
        if (alg == RW_JWT_ALG_INVALID) {
            *msg = "key pinned to an algorithm reelway does not verify";
            return RW_ENOTFOUND;
        }
        if (!type_allows(type, alg)) {
            *msg = "JWK alg does not match its kty/crv";
            return RW_ECONFIG;
        }
    }
    if (kid == NULL || !kid_valid(kid)) {
        *msg = "JWK without a kid (or kid longer than 256 bytes)";
        return RW_EPARSE;
    }
    rc = type == RW__KEY_RSA ? rsa_from_json(jwk, &pkey, msg) : ec_from_json(jwk, type, &pkey, msg);
    if (rc != 0)
        return rc;
    rc = rw__jwk_wrap(pkey, kid, alg, 0, out);
    if (rc != 0) {
        EVP_PKEY_free(pkey);
        *msg = "key rejected";
    }
    return rc;
}

/* ---- key sets ------------------------------------------------------------ */

rw_jwks_t *rw_jwks_new(void)
{
    return calloc(1, sizeof(rw_jwks_t));
}

void rw_jwks_free(rw_jwks_t *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->count; i++)
        rw_jwk_free(set->keys[i]);
    free(set);
}

int rw_jwks_add(rw_jwks_t *set, rw_jwk_t *key)
{
    if (rw_jwks_find(set, key->kid) != NULL)
        return -EEXIST;
    if (set->count == RW_JWKS_MAX_KEYS)
        return RW_ELIMIT;
    set->keys[set->count++] = rw_jwk_ref(key);
    return 0;
}

const rw_jwk_t *rw_jwks_find(const rw_jwks_t *set, const char *kid)
{
    for (size_t i = 0; i < set->count; i++)
        if (strcmp(set->keys[i]->kid, kid) == 0)
            return set->keys[i];
    return NULL;
}

size_t rw_jwks_count(const rw_jwks_t *set)
{
    return set->count;
}

const rw_jwk_t *rw_jwks_get(const rw_jwks_t *set, size_t i)
{
    return i < set->count ? set->keys[i] : NULL;
}

int rw_jwks_parse(const char *json, size_t len, rw_jwks_t **out, const char **msg)
{
    const char *dummy = NULL;
    cJSON *doc = NULL;
    const cJSON *keys, *item;
    rw_jwks_t *set = NULL;
    rw_jwk_t *key = NULL;
    int rc = 0;

    if (msg == NULL)
        msg = &dummy;
    *out = NULL;
    *msg = NULL;
    if (len > JWKS_MAX_BYTES) {
        *msg = "JWKS document larger than 1 MiB";
        return RW_ELIMIT;
    }
    doc = rw__json_parse_exact(json, len);
    keys = cJSON_GetObjectItemCaseSensitive(doc, "keys");
    if (!cJSON_IsObject(doc) || !cJSON_IsArray(keys)) {
        *msg = "JWKS is not a JSON object with a keys array";
        rc = RW_EPARSE;
        goto out;
    }
    if ((set = rw_jwks_new()) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    cJSON_ArrayForEach(item, keys)
    {
        rc = rw_jwk_from_json(item, &key, msg);
        if (rc == RW_ENOTFOUND) {
            rc = 0;
            continue;
        }
        if (rc != 0)
            goto out;
        rc = rw_jwks_add(set, key);
        rw_jwk_free(key);
        key = NULL;
        if (rc == -EEXIST) {
            *msg = "two keys share a kid";
            rc = RW_EPARSE;
        } else if (rc == RW_ELIMIT) {
            *msg = "JWKS holds more than 64 usable keys";
        }
        if (rc != 0)
            goto out;
    }
    *msg = NULL;
    *out = set;
    set = NULL;
out:
    rw_jwks_free(set);
    cJSON_Delete(doc);
    return rc;
}

int rw_jwks_to_json(const rw_jwks_t *set, char **out)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *keys = cJSON_AddArrayToObject(doc, "keys");
    int rc = 0;

    *out = NULL;
    if (doc == NULL || keys == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < set->count; i++) {
        cJSON *jwk = rw_jwk_to_json(set->keys[i]);
        if (jwk == NULL || !cJSON_AddItemToArray(keys, jwk)) {
            cJSON_Delete(jwk);
            rc = -ENOMEM;
            goto out;
        }
    }
    if ((*out = cJSON_PrintUnformatted(doc)) == NULL)
        rc = -ENOMEM;
out:
    cJSON_Delete(doc);
    return rc;
}
