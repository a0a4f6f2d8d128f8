/* Keys and key sets: JWKS documents shaped like Cognito's, Auth0's and
 * Keycloak's (built around keys the test makes itself), malformed keys, PEM,
 * thumbprints (RFC 7638 vector) and the set's limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "auth_test_util.h"
#include "reelway/auth.h"
#include "reelway/error.h"

/* A BIGNUM parameter of pkey in base64url, left-padded to pad bytes if pad > 0. */
static char *param_b64(EVP_PKEY *pkey, const char *name, size_t pad)
{
    BIGNUM *bn = NULL;
    uint8_t buf[1024];
    size_t len;
    char *s;

    assert_int_equal(EVP_PKEY_get_bn_param(pkey, name, &bn), 1);
    len = pad > 0 ? pad : (size_t)BN_num_bytes(bn);
    assert_true(len <= sizeof buf);
    assert_int_equal(BN_bn2binpad(bn, buf, (int)len), (int)len);
    s = tu_b64(buf, len);
    BN_free(bn);
    return s;
}

/* Standard base64 of the key's SubjectPublicKeyInfo, standing in for an x5c
 * certificate (reelway ignores x5c; the shape is what matters here). */
static char *spki_b64(EVP_PKEY *pkey)
{
    uint8_t *der = NULL;
    int len = i2d_PUBKEY(pkey, &der);
    char *s = malloc(4 * ((size_t)len + 2) / 3 + 4);

    assert_true(len > 0);
    EVP_EncodeBlock((unsigned char *)s, der, len);
    OPENSSL_free(der);
    return s;
}

static rw_jwt_verify_opts_t loose_opts(void)
{
    rw_jwt_verify_opts_t o = {0};
    o.now = TU_NOW;
    return o;
}

static const char body[] = "{\"sub\":\"u\",\"exp\":1999999999}";

static void verify_ok(const rw_jwks_t *set, const char *token)
{
    rw_jwt_verify_opts_t o = loose_opts();
    rw_jwt_error_t err;
    rw_jwt_status_t st = rw_jwt_verify(set, token, strlen(token), &o, NULL, &err);

    if (st != RW_JWT_OK)
        print_message("verify said: %s\n", err.message);
    assert_string_equal(rw_jwt_status_name(st), "ok");
}

static void export_parse_roundtrip(void **state)
{
    rw_jwk_t *rsa = NULL, *ec = NULL;
    rw_jwks_t *set = rw_jwks_new(), *parsed = NULL;
    char *json = NULL, *token = NULL;
    char tp1[44], tp2[44];
    cJSON *doc, *k;
    cJSON *claims = cJSON_Parse(body);

    (void)state;
    assert_int_equal(rw_jwk_generate(RW_JWK_RSA2048, &rsa), 0);
    assert_int_equal(rw_jwk_generate(RW_JWK_EC_P256, &ec), 0);
    assert_int_equal(rw_jwks_add(set, rsa), 0);
    assert_int_equal(rw_jwks_add(set, ec), 0);
    assert_int_equal(rw_jwks_to_json(set, &json), 0);

    /* The published document has exactly the public members. */
    doc = cJSON_Parse(json);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(doc, "keys")), 2);
    k = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "keys"), 0);
    assert_string_equal(cJSON_GetObjectItem(k, "kty")->valuestring, "RSA");
    assert_string_equal(cJSON_GetObjectItem(k, "use")->valuestring, "sig");
    assert_string_equal(cJSON_GetObjectItem(k, "alg")->valuestring, "RS256");
    assert_string_equal(cJSON_GetObjectItem(k, "kid")->valuestring, rw_jwk_kid(rsa));
    assert_string_equal(cJSON_GetObjectItem(k, "e")->valuestring, "AQAB");
    assert_int_equal(strlen(cJSON_GetObjectItem(k, "n")->valuestring), 342);
    assert_null(cJSON_GetObjectItem(k, "d"));
    k = cJSON_GetArrayItem(cJSON_GetObjectItem(doc, "keys"), 1);
    assert_string_equal(cJSON_GetObjectItem(k, "kty")->valuestring, "EC");
    assert_string_equal(cJSON_GetObjectItem(k, "crv")->valuestring, "P-256");
    assert_string_equal(cJSON_GetObjectItem(k, "alg")->valuestring, "ES256");
    assert_int_equal(strlen(cJSON_GetObjectItem(k, "x")->valuestring), 43);
    assert_int_equal(strlen(cJSON_GetObjectItem(k, "y")->valuestring), 43);
    assert_null(cJSON_GetObjectItem(k, "d"));
    cJSON_Delete(doc);

    assert_int_equal(rw_jwks_parse(json, strlen(json), &parsed, NULL), 0);
    assert_int_equal(rw_jwks_count(parsed), 2);
    for (size_t i = 0; i < 2; i++) {
        const rw_jwk_t *orig = rw_jwks_get(set, i);
        const rw_jwk_t *back = rw_jwks_find(parsed, rw_jwk_kid(orig));
        assert_non_null(back);
        assert_int_equal(rw_jwk_is_private(back), 0);
        assert_int_equal(rw_jwk_alg(back), rw_jwk_alg(orig));
        assert_int_equal(rw_jwk_thumbprint(orig, tp1), 0);
        assert_int_equal(rw_jwk_thumbprint(back, tp2), 0);
        assert_string_equal(tp1, tp2);
        assert_int_equal(rw_jwt_sign(orig, RW_JWT_ALG_INVALID, NULL, claims, &token), 0);
        verify_ok(parsed, token);
        free(token);
    }
    assert_null(rw_jwks_get(parsed, 2));
    assert_null(rw_jwks_find(parsed, "nope"));
    cJSON_Delete(claims);
    free(json);
    rw_jwks_free(parsed);
    rw_jwks_free(set);
    rw_jwk_free(rsa);
    rw_jwk_free(ec);
}

/* JWKS documents in the shapes real issuers publish, around keys made here
 * with OpenSSL alone; tokens signed with OpenSSL alone verify against them. */
static void real_world_shapes(void **state)
{
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char *n = param_b64(rsa, OSSL_PKEY_PARAM_RSA_N, 0);
    char *e = param_b64(rsa, OSSL_PKEY_PARAM_RSA_E, 0);
    char *n2 = param_b64(rsa2, OSSL_PKEY_PARAM_RSA_N, 0);
    char *x = param_b64(ec, OSSL_PKEY_PARAM_EC_PUB_X, 32);
    char *y = param_b64(ec, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    char *x5c = spki_b64(rsa);
    struct {
        const char *name;
        char *doc;
        size_t keys;
        const char *kid;
        tu_sig_t sig;
        EVP_PKEY *pkey;
    } docs[3];
    (void)state;

    /* Amazon Cognito: https://cognito-idp.<region>.amazonaws.com/<pool>/.well-known/jwks.json */
    docs[0].name = "cognito";
    docs[0].doc = tu_printf(
        "{\"keys\":[{\"alg\":\"RS256\",\"e\":\"%s\",\"kid\":\"abcdEFGH1234+/=\",\"kty\":\"RSA\","
        "\"n\":\"%s\",\"use\":\"sig\"},{\"alg\":\"RS256\",\"e\":\"AQAB\","
        "\"kid\":\"ijklMNOP5678+/=\",\"kty\":\"RSA\",\"n\":\"%s\",\"use\":\"sig\"}]}",
        e, n, n2);
    docs[0].keys = 2;
    docs[0].kid = "abcdEFGH1234+/=";
    docs[0].sig = TU_SIG_RS256;
    docs[0].pkey = rsa;
    /* Auth0: x5c/x5t alongside n/e. */
    docs[1].name = "auth0";
    docs[1].doc = tu_printf(
        "{\"keys\":[{\"kty\":\"RSA\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\","
        "\"kid\":\"Xy1_cDeF-gHiJ\",\"x5t\":\"Xy1_cDeF-gHiJ\",\"x5c\":[\"%s\"],\"alg\":\"RS256\"}]}",
        n, e, x5c);
    docs[1].keys = 1;
    docs[1].kid = "Xy1_cDeF-gHiJ";
    docs[1].sig = TU_SIG_RS256;
    docs[1].pkey = rsa;
    /* Keycloak: a signing key, an encryption key (skipped), an EC key, and
     * key types reelway does not verify with (skipped). */
    docs[2].name = "keycloak";
    docs[2].doc = tu_printf(
        "{\"keys\":[{\"kid\":\"enc-1\",\"kty\":\"RSA\",\"alg\":\"RSA-OAEP\",\"use\":\"enc\","
        "\"n\":\"%s\",\"e\":\"AQAB\",\"x5c\":[\"%s\"],\"x5t\":\"AAAA\",\"x5t#S256\":\"BBBB\"},"
        "{\"kid\":\"sig-rsa\",\"kty\":\"RSA\",\"alg\":\"RS256\",\"use\":\"sig\",\"n\":\"%s\","
        "\"e\":\"%s\",\"x5c\":[\"%s\"],\"x5t\":\"AAAA\",\"x5t#S256\":\"BBBB\"},"
        "{\"kid\":\"sig-ec\",\"kty\":\"EC\",\"alg\":\"ES256\",\"use\":\"sig\",\"crv\":\"P-256\","
        "\"x\":\"%s\",\"y\":\"%s\"},"
        "{\"kid\":\"ed\",\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"11qYAYKxCrfVS_"
        "7TyWQHOg7hcvPapiMlrwIaaPcHURo\"},"
        "{\"kid\":\"hmac\",\"kty\":\"oct\",\"k\":\"GawgguFyGrWKav7AX4VKUg\"},"
        "{\"kid\":\"p521\",\"kty\":\"EC\",\"crv\":\"P-521\",\"x\":\"AA\",\"y\":\"AA\"},"
        "{\"kid\":\"wrap\",\"kty\":\"RSA\",\"key_ops\":[\"wrapKey\"],\"n\":\"%s\",\"e\":\"AQAB\"}]"
        "}",
        n2, x5c, n, e, x5c, x, y, n2);
    docs[2].keys = 2;
    docs[2].kid = "sig-ec";
    docs[2].sig = TU_SIG_ES256;
    docs[2].pkey = ec;

    for (size_t i = 0; i < 3; i++) {
        rw_jwks_t *set = NULL;
        const char *msg = NULL;
        int rc = rw_jwks_parse(docs[i].doc, strlen(docs[i].doc), &set, &msg);
        if (rc != 0)
            print_message("%s: %s\n", docs[i].name, msg);
        assert_int_equal(rc, 0);
        assert_int_equal(rw_jwks_count(set), docs[i].keys);
        char *header = tu_printf("{\"alg\":\"%s\",\"kid\":\"%s\"}",
                                 docs[i].sig == TU_SIG_ES256 ? "ES256" : "RS256", docs[i].kid);
        char *token = tu_token(header, body, docs[i].sig, docs[i].pkey, NULL, 0);
        verify_ok(set, token);
        free(header);
        free(token);
        rw_jwks_free(set);
        free(docs[i].doc);
    }
    free(n);
    free(e);
    free(n2);
    free(x);
    free(y);
    free(x5c);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(rsa2);
    EVP_PKEY_free(ec);
}

static void rejects_malformed(void **state)
{
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    char *n_small = param_b64(small, OSSL_PKEY_PARAM_RSA_N, 0);
    char *n = param_b64(rsa, OSSL_PKEY_PARAM_RSA_N, 0);
    char *x = param_b64(ec, OSSL_PKEY_PARAM_EC_PUB_X, 32);
    char *y = param_b64(ec, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    char *x_short = param_b64(ec, OSSL_PKEY_PARAM_EC_PUB_X, 32);
    uint8_t one[32] = {0};
    one[31] = 1;
    char *b64_one = tu_b64(one, sizeof one);
    x_short[40] = '\0'; /* 40 characters: 30 bytes, not the 32 of P-256 */
    struct {
        char *doc;
        int rc;
    } cases[] = {
        {tu_printf("{"), RW_EPARSE},
        {tu_printf("[]"), RW_EPARSE},
        {tu_printf("{\"keys\":{}}"), RW_EPARSE},
        {tu_printf("{\"keys\":[]} trailing"), RW_EPARSE},
        {tu_printf("{\"keys\":[42]}"), RW_EPARSE},
        {tu_printf("{\"keys\":[{\"kty\":1,\"kid\":\"a\"}]}"), RW_EPARSE},
        {tu_printf("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"ab+c\",\"e\":\"AQAB\"}]}"),
         RW_EPARSE},
        {tu_printf("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"%s\"}]}", n), RW_EPARSE},
        {tu_printf("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"%s\",\"e\":\"AQAB\"}]}",
                   n_small),
         RW_ECONFIG},
        {tu_printf("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"%s\",\"e\":\"AQAA\"}]}", n),
         RW_ECONFIG},
        {tu_printf("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", n), RW_EPARSE},
        {tu_printf("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", n),
         RW_EPARSE},
        {tu_printf("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"alg\":\"ES256\",\"n\":\"%s\","
                   "\"e\":\"AQAB\"}]}",
                   n),
         RW_ECONFIG},
        {tu_printf("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"%s\",\"e\":\"AQAB\"},"
                   "{\"kty\":\"EC\",\"kid\":\"a\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}]}",
                   n, x, y),
         RW_EPARSE},
        {tu_printf("{\"keys\":[{\"kty\":\"EC\",\"kid\":\"a\",\"crv\":\"P-256\",\"x\":\"%s\","
                   "\"y\":\"%s\"}]}",
                   x_short, y),
         RW_EPARSE},
        {tu_printf("{\"keys\":[{\"kty\":\"EC\",\"kid\":\"a\",\"crv\":\"P-256\",\"x\":\"%s\","
                   "\"y\":\"%s\"}]}",
                   b64_one, b64_one),
         RW_ECONFIG},
        {tu_printf("{\"keys\":[{\"kty\":\"EC\",\"kid\":\"a\",\"x\":\"%s\",\"y\":\"%s\"}]}", x, y),
         RW_EPARSE},
        {tu_printf("{\"keys\":[{\"kty\":\"EC\",\"kid\":\"a\",\"crv\":\"P-256\",\"x\":\"%s\","
                   "\"y\":\"%s\",\"key_ops\":\"verify\"}]}",
                   x, y),
         RW_EPARSE},
    };
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rw_jwks_t *set = (rw_jwks_t *)&cases; /* must be reset to NULL */
        const char *msg = NULL;
        int rc = rw_jwks_parse(cases[i].doc, strlen(cases[i].doc), &set, &msg);
        if (rc != cases[i].rc)
            print_message("case %zu: %s\n", i, msg != NULL ? msg : "(no message)");
        assert_int_equal(rc, cases[i].rc);
        assert_null(set);
        assert_non_null(msg);
        free(cases[i].doc);
    }
    /* Too big to even look at. */
    size_t big = (1 << 20) + 1;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    rw_jwks_t *set = NULL;
    assert_int_equal(rw_jwks_parse(huge, big, &set, NULL), RW_ELIMIT);
    free(huge);
    free(n_small);
    free(n);
    free(x);
    free(y);
    free(x_short);
    free(b64_one);
    EVP_PKEY_free(small);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}

static void skips_unusable_keys(void **state)
{
    static const char doc[] =
        "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"a\",\"k\":\"AAAA\"},"
        "{\"kty\":\"OKP\",\"kid\":\"b\",\"crv\":\"Ed25519\",\"x\":\"AAAA\"},"
        "{\"kty\":\"RSA\",\"kid\":\"c\",\"use\":\"enc\",\"n\":\"!!\",\"e\":\"AQAB\"},"
        "{\"kty\":\"RSA\",\"kid\":\"d\",\"alg\":\"RSA-OAEP-256\",\"n\":\"!!\",\"e\":\"AQAB\"},"
        "{\"kty\":\"EC\",\"kid\":\"e\",\"crv\":\"secp256k1\",\"x\":\"AA\",\"y\":\"AA\"}],"
        "\"extra\":true}";
    rw_jwks_t *set = NULL;
    const char *msg = "x";

    (void)state;
    assert_int_equal(rw_jwks_parse(doc, strlen(doc), &set, &msg), 0);
    assert_null(msg);
    assert_int_equal(rw_jwks_count(set), 0);
    rw_jwks_free(set);
}

/* RFC 7638 §3.1: the example key and its published thumbprint. */
static void rfc7638_thumbprint(void **state)
{
    static const char jwk_text[] =
        "{\"kty\":\"RSA\",\"n\":"
        "\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu"
        "1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5"
        "w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91Cb"
        "OpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kE"
        "gU8awapJzKnqDKgw\",\"e\":\"AQAB\",\"alg\":\"RS256\",\"kid\":\"2011-04-29\"}";
    cJSON *json = cJSON_Parse(jwk_text);
    rw_jwk_t *key = NULL, *from_pem = NULL;
    const char *msg = NULL;
    char tp[44], *pem = NULL;
    size_t len = 0;

    (void)state;
    assert_int_equal(rw_jwk_from_json(json, &key, &msg), 0);
    assert_string_equal(rw_jwk_kid(key), "2011-04-29");
    assert_int_equal(rw_jwk_alg(key), RW_JWT_RS256);
    assert_int_equal(rw_jwk_thumbprint(key, tp), 0);
    assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    /* A key loaded without a kid is named by its thumbprint. */
    assert_int_equal(rw_jwk_public_pem(key, &pem, &len), 0);
    assert_non_null(strstr(pem, "-----BEGIN PUBLIC KEY-----"));
    assert_int_equal(rw_jwk_from_pem(pem, len, NULL, RW_JWT_ALG_INVALID, &from_pem), 0);
    assert_string_equal(rw_jwk_kid(from_pem), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    assert_int_equal(rw_jwk_is_private(from_pem), 0);
    free(pem);
    rw_jwk_free(from_pem);
    rw_jwk_free(key);
    cJSON_Delete(json);
}

static void pem_roundtrip(void **state)
{
    rw_jwk_kind_t kinds[] = {RW_JWK_RSA2048, RW_JWK_EC_P256, RW_JWK_EC_P384};
    cJSON *claims = cJSON_Parse(body);

    (void)state;
    for (size_t i = 0; i < 3; i++) {
        rw_jwk_t *key = NULL, *back = NULL, *pub = NULL;
        rw_jwks_t *set = rw_jwks_new();
        char *pem = NULL, *pub_pem = NULL, *token = NULL;
        size_t len = 0, pub_len = 0;

        assert_int_equal(rw_jwk_generate(kinds[i], &key), 0);
        assert_int_equal(strlen(rw_jwk_kid(key)), 22);
        assert_int_equal(rw_jwk_is_private(key), 1);
        assert_int_equal(rw_jwk_private_pem(key, &pem, &len), 0);
        assert_int_equal(strlen(pem), len);
        assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
        assert_int_equal(rw_jwk_from_pem(pem, len, rw_jwk_kid(key), RW_JWT_ALG_INVALID, &back), 0);
        assert_int_equal(rw_jwk_is_private(back), 1);
        assert_int_equal(rw_jwk_alg(back), rw_jwk_alg(key));
        assert_int_equal(rw_jwk_public_pem(key, &pub_pem, &pub_len), 0);
        assert_int_equal(rw_jwk_from_pem(pub_pem, pub_len, "pub", RW_JWT_ALG_INVALID, &pub), 0);
        assert_int_equal(rw_jwk_is_private(pub), 0);
        assert_int_equal(rw_jwt_sign(pub, RW_JWT_ALG_INVALID, NULL, claims, &token), RW_ENOTFOUND);
        /* The reloaded private key signs what the original's public key verifies. */
        assert_int_equal(rw_jwks_add(set, key), 0);
        assert_int_equal(rw_jwt_sign(back, RW_JWT_ALG_INVALID, NULL, claims, &token), 0);
        verify_ok(set, token);
        free(token);
        rw_secret_free(pem, len);
        free(pub_pem);
        rw_jwks_free(set);
        rw_jwk_free(key);
        rw_jwk_free(back);
        rw_jwk_free(pub);
    }
    cJSON_Delete(claims);
}

static void pem_refusals(void **state)
{
    EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *p521 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
    BIO *b_enc = BIO_new(BIO_s_mem()), *b_small = BIO_new(BIO_s_mem());
    BIO *b_trad = BIO_new(BIO_s_mem()), *b_521 = BIO_new(BIO_s_mem());
    char *p_enc, *p_small, *p_trad, *p_521;
    long l_enc, l_small, l_trad, l_521;
    rw_jwk_t *key = NULL;
    char long_kid[RW_JWK_KID_MAX + 2];
    (void)state;

    assert_int_equal(
        PEM_write_bio_PKCS8PrivateKey(b_enc, ec, EVP_aes_256_cbc(), "pw", 2, NULL, NULL), 1);
    assert_int_equal(PEM_write_bio_PrivateKey(b_small, small, NULL, NULL, 0, NULL, NULL), 1);
    assert_int_equal(PEM_write_bio_PrivateKey_traditional(b_trad, ec, NULL, NULL, 0, NULL, NULL),
                     1);
    assert_int_equal(PEM_write_bio_PrivateKey(b_521, p521, NULL, NULL, 0, NULL, NULL), 1);
    l_enc = BIO_get_mem_data(b_enc, &p_enc);
    l_small = BIO_get_mem_data(b_small, &p_small);
    l_trad = BIO_get_mem_data(b_trad, &p_trad);
    l_521 = BIO_get_mem_data(b_521, &p_521);

    /* Encrypted PEM is refused without prompting on the terminal. */
    assert_int_equal(rw_jwk_from_pem(p_enc, (size_t)l_enc, "k", RW_JWT_ALG_INVALID, &key),
                     RW_EPARSE);
    assert_null(key);
    assert_int_equal(rw_jwk_from_pem(p_small, (size_t)l_small, "k", RW_JWT_ALG_INVALID, &key),
                     RW_ECONFIG);
    assert_int_equal(rw_jwk_from_pem(p_521, (size_t)l_521, "k", RW_JWT_ALG_INVALID, &key),
                     RW_ECONFIG);
    assert_int_equal(rw_jwk_from_pem("garbage", 7, "k", RW_JWT_ALG_INVALID, &key), RW_EPARSE);
    /* "EC PRIVATE KEY" (SEC 1) PEM loads too, but not pinned to an RSA alg. */
    assert_int_equal(rw_jwk_from_pem(p_trad, (size_t)l_trad, "k", RW_JWT_RS256, &key), RW_ECONFIG);
    memset(long_kid, 'k', sizeof long_kid - 1);
    long_kid[sizeof long_kid - 1] = '\0';
    assert_int_equal(rw_jwk_from_pem(p_trad, (size_t)l_trad, long_kid, RW_JWT_ALG_INVALID, &key),
                     -EINVAL);
    assert_int_equal(rw_jwk_from_pem(p_trad, (size_t)l_trad, "", RW_JWT_ALG_INVALID, &key),
                     -EINVAL);
    assert_int_equal(rw_jwk_from_pem(p_trad, (size_t)l_trad, "k", RW_JWT_ALG_INVALID, &key), 0);
    assert_int_equal(rw_jwk_alg(key), RW_JWT_ES256);
    assert_int_equal(rw_jwk_allows(key, RW_JWT_ES256), 1);
    assert_int_equal(rw_jwk_allows(key, RW_JWT_ES384), 0);
    assert_int_equal(rw_jwk_allows(key, RW_JWT_RS256), 0);
    rw_jwk_free(key);
    BIO_free(b_enc);
    BIO_free(b_small);
    BIO_free(b_trad);
    BIO_free(b_521);
    EVP_PKEY_free(small);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(p521);
}

static void set_limits(void **state)
{
    rw_jwk_t *key = NULL, *dup = NULL;
    rw_jwks_t *set = rw_jwks_new();
    char *pem = NULL;
    size_t len = 0;
    (void)state;

    assert_int_equal(rw_jwk_generate(0, &key), -EINVAL);
    assert_int_equal(rw_jwk_generate(RW_JWK_EC_P256, &key), 0);
    assert_int_equal(rw_jwk_generate(RW_JWK_EC_P256, &dup), 0);
    assert_string_not_equal(rw_jwk_kid(key), rw_jwk_kid(dup));
    rw_jwk_free(dup);
    assert_int_equal(rw_jwk_private_pem(key, &pem, &len), 0);
    /* The set holds its own reference: the caller's can go at once. */
    assert_int_equal(rw_jwks_add(set, key), 0);
    assert_int_equal(rw_jwks_add(set, key), -EEXIST);
    for (int i = 1; i < RW_JWKS_MAX_KEYS; i++) {
        char kid[16];
        snprintf(kid, sizeof kid, "k%d", i);
        assert_int_equal(rw_jwk_from_pem(pem, len, kid, RW_JWT_ALG_INVALID, &dup), 0);
        assert_int_equal(rw_jwks_add(set, dup), 0);
        rw_jwk_free(dup);
    }
    assert_int_equal(rw_jwk_from_pem(pem, len, "one-too-many", RW_JWT_ALG_INVALID, &dup), 0);
    assert_int_equal(rw_jwks_add(set, dup), RW_ELIMIT);
    rw_jwk_free(dup);
    assert_int_equal(rw_jwks_count(set), RW_JWKS_MAX_KEYS);
    rw_jwk_free(key);
    assert_non_null(rw_jwks_find(set, rw_jwk_kid(rw_jwks_get(set, 0))));
    rw_secret_free(pem, len);
    rw_jwks_free(set);
    rw_jwks_free(NULL);
    rw_jwk_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(export_parse_roundtrip), cmocka_unit_test(real_world_shapes),
        cmocka_unit_test(rejects_malformed),      cmocka_unit_test(skips_unusable_keys),
        cmocka_unit_test(rfc7638_thumbprint),     cmocka_unit_test(pem_roundtrip),
        cmocka_unit_test(pem_refusals),           cmocka_unit_test(set_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
