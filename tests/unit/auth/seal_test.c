/* Keys at rest: HKDF derivation checked against HMAC by hand, AES-256-GCM
 * envelopes that open only with the right key and context, and tamper
 * detection at every byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/hmac.h>

#include "auth_test_util.h"
#include "reelway/auth.h"
#include "reelway/error.h"

/* RFC 5869 by hand: PRK = HMAC(salt, IKM); OKM = HMAC(PRK, info || 0x01). */
static void hkdf_matches_rfc5869(void **state)
{
    static const char secret[] = "0123456789abcdef0123456789abcdef";
    static const char salt[] = "reelway/master-key";
    static const char info[] = "reelway key-at-rest v1";
    uint8_t prk[32], okm[32], block[64];
    unsigned int len = 0;
    rw_masterkey_t mk, again, other;
    (void)state;

    assert_non_null(HMAC(EVP_sha256(), salt, (int)strlen(salt), (const uint8_t *)secret,
                         strlen(secret), prk, &len));
    memcpy(block, info, strlen(info));
    block[strlen(info)] = 0x01;
    assert_non_null(HMAC(EVP_sha256(), prk, 32, block, strlen(info) + 1, okm, &len));

    assert_int_equal(rw_masterkey_derive(&mk, secret, strlen(secret)), 0);
    assert_memory_equal(mk.bytes, okm, 32);
    assert_int_equal(rw_masterkey_derive(&again, secret, strlen(secret)), 0);
    assert_memory_equal(mk.bytes, again.bytes, 32);
    assert_int_equal(rw_masterkey_derive(&other, "0123456789abcdef0123456789abcdeF", 32), 0);
    assert_memory_not_equal(mk.bytes, other.bytes, 32);
    assert_int_equal(rw_masterkey_derive(&other, "short", 5), -EINVAL);
    rw_masterkey_wipe(&mk);
    static const uint8_t zero[32];
    assert_memory_equal(mk.bytes, zero, 32);
}

static void roundtrip(void **state)
{
    static const uint8_t raw[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                    17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
    static const char secret[] = "-----BEGIN PRIVATE KEY-----\nnot really\n";
    rw_masterkey_t mk;
    char *a = NULL, *b = NULL, *empty = NULL;
    uint8_t *out = NULL;
    size_t out_len = 0;
    (void)state;

    rw_masterkey_from_raw(&mk, raw);
    assert_int_equal(rw_seal(&mk, (const uint8_t *)secret, strlen(secret), "kid-1", &a), 0);
    assert_int_equal(rw_seal(&mk, (const uint8_t *)secret, strlen(secret), "kid-1", &b), 0);
    assert_int_equal(strncmp(a, "rwseal1.", 8), 0);
    assert_null(strstr(a, "not really"));
    /* A fresh nonce each time: the same plaintext never seals the same way. */
    assert_string_not_equal(a, b);
    assert_int_equal(rw_unseal(&mk, a, strlen(a), "kid-1", &out, &out_len), 0);
    assert_int_equal(out_len, strlen(secret));
    assert_memory_equal(out, secret, out_len);
    assert_int_equal(out[out_len], '\0');
    rw_secret_free(out, out_len);
    /* Empty plaintext and no context. */
    assert_int_equal(rw_seal(&mk, (const uint8_t *)"", 0, NULL, &empty), 0);
    assert_int_equal(rw_unseal(&mk, empty, strlen(empty), NULL, &out, &out_len), 0);
    assert_int_equal(out_len, 0);
    rw_secret_free(out, out_len);
    free(a);
    free(b);
    free(empty);
}

static void wrong_key_or_context(void **state)
{
    rw_masterkey_t mk, other;
    char *env = NULL;
    uint8_t *out = (uint8_t *)"x";
    size_t out_len = 7;
    (void)state;

    assert_int_equal(rw_masterkey_derive(&mk, "a secret of sufficient length", 29), 0);
    assert_int_equal(rw_masterkey_derive(&other, "another secret, also long enough", 32), 0);
    assert_int_equal(rw_seal(&mk, (const uint8_t *)"payload", 7, "kid-1", &env), 0);
    assert_int_equal(rw_unseal(&other, env, strlen(env), "kid-1", &out, &out_len), RW_EAUTH);
    assert_null(out);
    assert_int_equal(out_len, 0);
    assert_int_equal(rw_unseal(&mk, env, strlen(env), "kid-2", &out, &out_len), RW_EAUTH);
    assert_int_equal(rw_unseal(&mk, env, strlen(env), NULL, &out, &out_len), RW_EAUTH);
    assert_int_equal(rw_unseal(&mk, env, strlen(env), "kid-1", &out, &out_len), 0);
    rw_secret_free(out, out_len);
    free(env);
}

/* Changing any single byte of nonce, ciphertext or tag is detected. */
static void tamper_every_byte(void **state)
{
    rw_masterkey_t mk;
    char *env = NULL;
    uint8_t *raw;
    size_t raw_len = 0;
    static const char plain[] = "{\"kid\":\"k\",\"pem\":\"...\"}";
    (void)state;

    assert_int_equal(rw_masterkey_derive(&mk, "a secret of sufficient length", 29), 0);
    assert_int_equal(rw_seal(&mk, (const uint8_t *)plain, strlen(plain), "k", &env), 0);
    raw = tu_unb64(env + 8, strlen(env) - 8, &raw_len);
    assert_int_equal(raw_len, 12 + strlen(plain) + 16);
    for (size_t i = 0; i < raw_len; i++) {
        uint8_t *out = NULL;
        size_t out_len = 0;
        raw[i] ^= 0x80;
        char *b64 = tu_b64(raw, raw_len);
        char *bad = tu_printf("rwseal1.%s", b64);
        assert_int_equal(rw_unseal(&mk, bad, strlen(bad), "k", &out, &out_len), RW_EAUTH);
        assert_null(out);
        raw[i] ^= 0x80;
        free(b64);
        free(bad);
    }
    /* Truncations: a shorter tag fails the tag check, nothing left is malformed. */
    for (size_t cut = 1; cut < raw_len; cut++) {
        uint8_t *out = NULL;
        size_t out_len = 0;
        char *b64 = tu_b64(raw, raw_len - cut);
        char *bad = tu_printf("rwseal1.%s", b64);
        int rc = rw_unseal(&mk, bad, strlen(bad), "k", &out, &out_len);
        assert_int_equal(rc, raw_len - cut < 28 ? RW_EPARSE : RW_EAUTH);
        free(b64);
        free(bad);
    }
    free(raw);
    free(env);
}

static void malformed_envelopes(void **state)
{
    rw_masterkey_t mk;
    char *env = NULL;
    uint8_t *out = NULL;
    size_t out_len = 0;
    (void)state;

    assert_int_equal(rw_masterkey_derive(&mk, "a secret of sufficient length", 29), 0);
    assert_int_equal(rw_seal(&mk, (const uint8_t *)"p", 1, NULL, &env), 0);
    char *v2 = strdup(env);
    v2[6] = '2'; /* "rwseal2." */
    char *padded = tu_printf("%s=", env);
    char *space = tu_printf("%s ", env);
    assert_int_equal(rw_unseal(&mk, v2, strlen(v2), NULL, &out, &out_len), RW_EPARSE);
    assert_int_equal(rw_unseal(&mk, padded, strlen(padded), NULL, &out, &out_len), RW_EPARSE);
    assert_int_equal(rw_unseal(&mk, space, strlen(space), NULL, &out, &out_len), RW_EPARSE);
    assert_int_equal(rw_unseal(&mk, "rwseal1.", 8, NULL, &out, &out_len), RW_EPARSE);
    assert_int_equal(rw_unseal(&mk, "", 0, NULL, &out, &out_len), RW_EPARSE);
    assert_int_equal(rw_unseal(&mk, "rwseal1.AAAA", 12, NULL, &out, &out_len), RW_EPARSE);
    assert_null(out);
    free(v2);
    free(padded);
    free(space);
    free(env);
}

static void sealed_signing_key(void **state)
{
    rw_masterkey_t mk, other;
    rw_jwk_t *key = NULL, *back = NULL;
    rw_jwks_t *set = rw_jwks_new();
    char *env = NULL, *token = NULL;
    cJSON *claims = cJSON_Parse("{\"sub\":\"u\"}");
    rw_jwt_verify_opts_t o = {.now = TU_NOW, .allow_missing_exp = 1};
    (void)state;

    assert_int_equal(rw_masterkey_derive(&mk, "a secret of sufficient length", 29), 0);
    assert_int_equal(rw_masterkey_derive(&other, "another secret, also long enough", 32), 0);
    assert_int_equal(rw_jwk_generate(RW_JWK_EC_P256, &key), 0);
    assert_int_equal(rw_jwk_seal(key, &mk, &env), 0);
    assert_null(strstr(env, "PRIVATE"));
    /* Bound to its kid: the envelope cannot be passed off as another key. */
    assert_int_equal(rw_jwk_unseal(&mk, env, strlen(env), "other-kid", RW_JWT_ALG_INVALID, &back),
                     RW_EAUTH);
    assert_int_equal(
        rw_jwk_unseal(&other, env, strlen(env), rw_jwk_kid(key), RW_JWT_ALG_INVALID, &back),
        RW_EAUTH);
    assert_null(back);
    assert_int_equal(
        rw_jwk_unseal(&mk, env, strlen(env), rw_jwk_kid(key), RW_JWT_ALG_INVALID, &back), 0);
    assert_int_equal(rw_jwk_is_private(back), 1);
    assert_string_equal(rw_jwk_kid(back), rw_jwk_kid(key));
    assert_int_equal(rw_jwks_add(set, key), 0);
    assert_int_equal(rw_jwt_sign(back, RW_JWT_ALG_INVALID, NULL, claims, &token), 0);
    assert_int_equal(rw_jwt_verify(set, token, strlen(token), &o, NULL, NULL), RW_JWT_OK);
    free(token);
    free(env);
    cJSON_Delete(claims);
    rw_jwks_free(set);
    rw_jwk_free(key);
    rw_jwk_free(back);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hkdf_matches_rfc5869), cmocka_unit_test(roundtrip),
        cmocka_unit_test(wrong_key_or_context), cmocka_unit_test(tamper_every_byte),
        cmocka_unit_test(malformed_envelopes),  cmocka_unit_test(sealed_signing_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
