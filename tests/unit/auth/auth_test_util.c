/* Independent helpers for the auth tests (see auth_test_util.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "auth_test_util.h"

char *tu_b64(const void *data, size_t len)
{
    char *s = malloc(4 * ((len + 2) / 3) + 1);
    int n;

    assert_non_null(s);
    n = EVP_EncodeBlock((unsigned char *)s, data, (int)len);
    while (n > 0 && s[n - 1] == '=')
        n--;
    s[n] = '\0';
    for (int i = 0; i < n; i++)
        s[i] = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
    return s;
}

uint8_t *tu_unb64(const char *s, size_t n, size_t *len)
{
    char *std = malloc(n + 4);
    uint8_t *out = malloc(n + 4);
    size_t m = n;
    int dec;

    assert_non_null(std);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++)
        std[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    while (m % 4 != 0)
        std[m++] = '=';
    dec = EVP_DecodeBlock(out, (unsigned char *)std, (int)m);
    assert_true(dec >= 0);
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    dec -= (int)(m - n);
    *len = (size_t)dec;
    free(std);
    return out;
}

EVP_PKEY *tu_pkey(const rw_jwk_t *key)
{
    char *pem = NULL;
    size_t len = 0;
    BIO *bio;
    EVP_PKEY *pkey;

    assert_int_equal(rw_jwk_private_pem(key, &pem, &len), 0);
    bio = BIO_new_mem_buf(pem, (int)len);
    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    assert_non_null(pkey);
    BIO_free(bio);
    rw_secret_free(pem, len);
    return pkey;
}

uint8_t *tu_der_to_raw(const uint8_t *der, size_t der_len, size_t field)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    const BIGNUM *r, *s;
    uint8_t *raw = malloc(2 * field);

    assert_non_null(sig);
    assert_non_null(raw);
    ECDSA_SIG_get0(sig, &r, &s);
    assert_int_equal(BN_bn2binpad(r, raw, (int)field), (int)field);
    assert_int_equal(BN_bn2binpad(s, raw + field, (int)field), (int)field);
    ECDSA_SIG_free(sig);
    return raw;
}

uint8_t *tu_raw_to_der(const uint8_t *raw, size_t field, size_t *der_len)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, (int)field, NULL);
    BIGNUM *s = BN_bin2bn(raw + field, (int)field, NULL);
    uint8_t *der = NULL;
    int len;

    assert_non_null(sig);
    assert_int_equal(ECDSA_SIG_set0(sig, r, s), 1);
    len = i2d_ECDSA_SIG(sig, &der);
    assert_true(len > 0);
    *der_len = (size_t)len;
    ECDSA_SIG_free(sig);
    return der;
}

static uint8_t *sign_with(EVP_PKEY *pkey, const EVP_MD *md, int pss, const char *input, size_t *len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    uint8_t *sig;

    assert_non_null(ctx);
    assert_int_equal(EVP_DigestSignInit(ctx, &pctx, md, NULL, pkey), 1);
    if (pss) {
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 1);
    }
    assert_int_equal(EVP_DigestSign(ctx, NULL, len, (const uint8_t *)input, strlen(input)), 1);
    sig = malloc(*len);
    assert_non_null(sig);
    assert_int_equal(EVP_DigestSign(ctx, sig, len, (const uint8_t *)input, strlen(input)), 1);
    EVP_MD_CTX_free(ctx);
    return sig;
}

char *tu_token(const char *header, const char *payload, tu_sig_t kind, EVP_PKEY *pkey,
               const void *secret, size_t secret_len)
{
    char *h = tu_b64(header, strlen(header));
    char *p = tu_b64(payload, strlen(payload));
    char *input = tu_printf("%s.%s", h, p);
    uint8_t *sig = NULL, *raw;
    size_t sig_len = 0;
    unsigned int mac_len = 0;
    char *s, *token;

    switch (kind) {
    case TU_SIG_NONE:
        break;
    case TU_SIG_RS256:
        sig = sign_with(pkey, EVP_sha256(), 0, input, &sig_len);
        break;
    case TU_SIG_PS256:
        sig = sign_with(pkey, EVP_sha256(), 1, input, &sig_len);
        break;
    case TU_SIG_ES256:
    case TU_SIG_ES384: {
        size_t field = kind == TU_SIG_ES256 ? 32 : 48;
        sig =
            sign_with(pkey, kind == TU_SIG_ES256 ? EVP_sha256() : EVP_sha384(), 0, input, &sig_len);
        raw = tu_der_to_raw(sig, sig_len, field);
        free(sig);
        sig = raw;
        sig_len = 2 * field;
        break;
    }
    case TU_SIG_HS256:
        sig = malloc(EVP_MAX_MD_SIZE);
        assert_non_null(sig);
        assert_non_null(HMAC(EVP_sha256(), secret, (int)secret_len, (const uint8_t *)input,
                             strlen(input), sig, &mac_len));
        sig_len = mac_len;
        break;
    }
    s = tu_b64(sig != NULL ? sig : (const uint8_t *)"", sig_len);
    token = tu_printf("%s.%s", input, s);
    free(h);
    free(p);
    free(input);
    free(sig);
    free(s);
    return token;
}

char *tu_printf(const char *fmt, ...)
{
    va_list ap;
    int n;
    char *s;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    s = malloc((size_t)n + 1);
    assert_non_null(s);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}
