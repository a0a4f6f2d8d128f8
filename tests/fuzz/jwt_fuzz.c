/* libFuzzer target for reelway_auth's parsers: arbitrary bytes as a JWT against
 * a fixed key set, and as a JWKS document, a sealed envelope, a password and an
 * API key. Inputs starting with 0x01/0x02 are signed first, so the claim and
 * header checks behind the signature are fuzzed too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "reelway/auth.h"

static rw_jwks_t *keys;
static EVP_PKEY *ec_pkey;
static rw_masterkey_t master;

static const char *const audiences[] = {"app", "other"};
static const char *const scopes[] = {"reels/read", "reels/write"};

/* Makes a key with a fixed kid, so seeds can name it. */
static rw_jwk_t *make_key(rw_jwk_kind_t kind, const char *kid)
{
    rw_jwk_t *generated = NULL, *key = NULL;
    char *pem = NULL;
    size_t len = 0;

    if (rw_jwk_generate(kind, &generated) != 0 || rw_jwk_private_pem(generated, &pem, &len) != 0 ||
        rw_jwk_from_pem(pem, len, kid, RW_JWT_ALG_INVALID, &key) != 0)
        abort();
    if (kind == RW_JWK_EC_P256) {
        BIO *bio = BIO_new_mem_buf(pem, (int)len);
        ec_pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        BIO_free(bio);
    }
    rw_secret_free(pem, len);
    rw_jwk_free(generated);
    return key;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    rw_jwk_t *rsa = make_key(RW_JWK_RSA2048, "fuzz-rsa");
    rw_jwk_t *ec = make_key(RW_JWK_EC_P256, "fuzz-ec");

    keys = rw_jwks_new();
    if (keys == NULL || ec_pkey == NULL || rw_jwks_add(keys, rsa) != 0 ||
        rw_jwks_add(keys, ec) != 0 || rw_masterkey_derive(&master, "fuzzing master secret", 21))
        abort();
    rw_jwk_free(rsa);
    rw_jwk_free(ec);
    return 0;
}

/* "b64(header).b64(payload).b64(ES256 signature)" with the EC key. */
static char *sign_es256(const uint8_t *header, size_t hlen, const uint8_t *payload, size_t plen)
{
    char *h = rw_b64url_encode_alloc(header, hlen);
    char *p = rw_b64url_encode_alloc(payload, plen);
    size_t cap = strlen(h) + strlen(p) + 200;
    char *token = malloc(cap);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t der[128], raw[64];
    size_t der_len = sizeof der;
    size_t pos;

    if (h == NULL || p == NULL || token == NULL || ctx == NULL)
        abort();
    pos = (size_t)snprintf(token, cap, "%s.%s", h, p);
    if (EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, ec_pkey) != 1 ||
        EVP_DigestSign(ctx, der, &der_len, (const uint8_t *)token, pos) != 1)
        abort();
    /* DER SEQUENCE { INTEGER r, INTEGER s } to fixed-width R||S. */
    {
        const unsigned char *q = der;
        ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &q, (long)der_len);
        const BIGNUM *r, *s;
        ECDSA_SIG_get0(sig, &r, &s);
        BN_bn2binpad(r, raw, 32);
        BN_bn2binpad(s, raw + 32, 32);
        ECDSA_SIG_free(sig);
    }
    token[pos++] = '.';
    rw_b64url_encode(token + pos, cap - pos, raw, sizeof raw);
    EVP_MD_CTX_free(ctx);
    free(h);
    free(p);
    return token;
}

static void verify(const char *token, size_t len)
{
    rw_jwt_verify_opts_t o = {0};
    rw_jwt_error_t err;
    rw_jwt_t *jwt = NULL;

    o.issuer = "https://issuer.example";
    o.audiences = audiences;
    o.n_audiences = 2;
    o.scopes = scopes;
    o.n_scopes = 2;
    o.now = 1700000000;
    o.clock_skew_s = 60;
    if (rw_jwt_verify(keys, token, len, &o, &jwt, &err) == RW_JWT_OK) {
        /* Touch everything a caller would read. */
        for (size_t i = 0; i < rw_jwt_scope_count(jwt); i++)
            if (strlen(rw_jwt_scope(jwt, i)) == 0)
                abort();
        (void)rw_jwt_claim_string(jwt, "sub");
        (void)rw_jwt_kid(jwt);
    } else if (jwt != NULL || err.message[0] == '\0') {
        abort();
    }
    rw_jwt_free(jwt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 0 && data[0] == 0x01) {
        /* A signed token whose payload is the rest of the input. */
        static const char header[] = "{\"alg\":\"ES256\",\"kid\":\"fuzz-ec\"}";
        char *token = sign_es256((const uint8_t *)header, strlen(header), data + 1, size - 1);
        verify(token, strlen(token));
        free(token);
        return 0;
    }
    if (size > 0 && data[0] == 0x02) {
        /* A signed token: header, a NUL, payload. */
        const uint8_t *nul = memchr(data + 1, 0, size - 1);
        if (nul == NULL)
            return 0;
        char *token = sign_es256(data + 1, (size_t)(nul - data - 1), nul + 1,
                                 size - (size_t)(nul + 1 - data));
        verify(token, strlen(token));
        free(token);
        return 0;
    }

    verify((const char *)data, size);

    rw_jwks_t *set = NULL;
    if (rw_jwks_parse((const char *)data, size, &set, NULL) == 0) {
        char *json = NULL;
        if (rw_jwks_to_json(set, &json) != 0)
            abort();
        free(json);
        rw_jwks_free(set);
    }

    uint8_t *plain = NULL;
    size_t plain_len = 0;
    if (rw_unseal(&master, (const char *)data, size, "ctx", &plain, &plain_len) == 0)
        rw_secret_free(plain, plain_len);

    rw_field_error_t errs[RW_PASSWORD_RULES];
    if (rw_password_check((const char *)data, size, "handle", "me@example.com", errs,
                          RW_PASSWORD_RULES) > RW_PASSWORD_RULES)
        abort();
    (void)rw_apikey_check_format((const char *)data, size);
    return 0;
}
