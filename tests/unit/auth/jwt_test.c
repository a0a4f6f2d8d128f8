/* JWT signing and verification: round trips for every algorithm, interop with
 * tokens signed by OpenSSL directly, and the attack matrix, one case each. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "auth_test_util.h"
#include "reelway/auth.h"
#include "reelway/error.h"

#define ISS "https://issuer.example/pool"

struct fx {
    rw_jwk_t *rsa, *ec, *ec384;
    EVP_PKEY *rsa_pkey, *ec_pkey, *ec384_pkey;
    rw_jwks_t *signing; /* the private keys */
    rw_jwks_t *set;     /* the public keys, parsed back from the exported JWKS */
};

static const char *const audiences[] = {"app-client", "other-client"};

static rw_jwt_verify_opts_t std_opts(void)
{
    rw_jwt_verify_opts_t o = {0};
    o.issuer = ISS;
    o.audiences = audiences;
    o.n_audiences = 2;
    o.now = TU_NOW;
    o.clock_skew_s = 60;
    return o;
}

/* A typical access-token payload with times relative to TU_NOW. */
static char *payload(const char *extra)
{
    return tu_printf("{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"sub\":\"user-1\","
                     "\"iat\":%lld,\"exp\":%lld,\"scope\":\"reels/read reels/write\"%s%s}",
                     TU_NOW - 10, TU_NOW + 3600, extra[0] ? "," : "", extra);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    char *json = NULL;

    assert_non_null(f);
    assert_int_equal(rw_jwk_generate(RW_JWK_RSA2048, &f->rsa), 0);
    assert_int_equal(rw_jwk_generate(RW_JWK_EC_P256, &f->ec), 0);
    assert_int_equal(rw_jwk_generate(RW_JWK_EC_P384, &f->ec384), 0);
    f->rsa_pkey = tu_pkey(f->rsa);
    f->ec_pkey = tu_pkey(f->ec);
    f->ec384_pkey = tu_pkey(f->ec384);
    f->signing = rw_jwks_new();
    assert_int_equal(rw_jwks_add(f->signing, f->rsa), 0);
    assert_int_equal(rw_jwks_add(f->signing, f->ec), 0);
    assert_int_equal(rw_jwks_add(f->signing, f->ec384), 0);
    assert_int_equal(rw_jwks_to_json(f->signing, &json), 0);
    assert_int_equal(rw_jwks_parse(json, strlen(json), &f->set, NULL), 0);
    assert_int_equal(rw_jwks_count(f->set), 3);
    free(json);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    rw_jwks_free(f->set);
    rw_jwks_free(f->signing);
    rw_jwk_free(f->rsa);
    rw_jwk_free(f->ec);
    rw_jwk_free(f->ec384);
    EVP_PKEY_free(f->rsa_pkey);
    EVP_PKEY_free(f->ec_pkey);
    EVP_PKEY_free(f->ec384_pkey);
    free(f);
    return 0;
}

/* Verifies and checks the outcome, naming both statuses on a mismatch. */
static void expect(const rw_jwks_t *set, const char *token, const rw_jwt_verify_opts_t *opts,
                   rw_jwt_status_t want)
{
    rw_jwt_error_t err;
    rw_jwt_t *jwt = NULL;
    rw_jwt_status_t got = rw_jwt_verify(set, token, strlen(token), opts, &jwt, &err);

    if (got != want)
        print_message("verify said: %s\n", err.message);
    assert_string_equal(rw_jwt_status_name(got), rw_jwt_status_name(want));
    assert_int_equal(err.status, want);
    if (want == RW_JWT_OK) {
        assert_non_null(jwt);
        assert_string_equal(err.message, "");
    } else {
        assert_null(jwt);
        assert_true(strlen(err.message) > 0);
    }
    rw_jwt_free(jwt);
}

/* A token with a hand-written header, signed by OpenSSL directly. */
static char *forge(struct fx *f, tu_sig_t sig, const char *alg, const rw_jwk_t *kid_of,
                   const char *body)
{
    EVP_PKEY *pkey = sig == TU_SIG_ES256   ? f->ec_pkey
                     : sig == TU_SIG_ES384 ? f->ec384_pkey
                                           : f->rsa_pkey;
    char *header =
        tu_printf("{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, rw_jwk_kid(kid_of));
    char *token = tu_token(header, body, sig, pkey, NULL, 0);

    free(header);
    return token;
}

/* ---- round trips --------------------------------------------------------- */

static void sign_verify_every_alg(void **state)
{
    struct fx *f = *state;
    static const struct {
        rw_jwt_alg_t alg;
        int key;
    } cases[] = {{RW_JWT_RS256, 0}, {RW_JWT_RS384, 0}, {RW_JWT_RS512, 0},
                 {RW_JWT_PS256, 0}, {RW_JWT_ES256, 1}, {RW_JWT_ES384, 2}};
    rw_jwt_verify_opts_t o = std_opts();
    char *body = payload("");
    cJSON *claims = cJSON_Parse(body);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const rw_jwk_t *key = cases[i].key == 0 ? f->rsa : cases[i].key == 1 ? f->ec : f->ec384;
        char *token = NULL;
        rw_jwt_t *jwt = NULL;
        rw_jwt_error_t err;
        /* The key generated for RS256 pins it: other RSA algs need a key
         * without a pin, loaded from the same PEM. */
        rw_jwk_t *unpinned = NULL;
        rw_jwks_t *set = f->set;
        if (cases[i].key == 0 && cases[i].alg != RW_JWT_RS256) {
            char *pem = NULL;
            size_t len = 0;
            assert_int_equal(rw_jwk_private_pem(f->rsa, &pem, &len), 0);
            assert_int_equal(rw_jwk_from_pem(pem, len, "rsa-any", RW_JWT_ALG_INVALID, &unpinned),
                             0);
            rw_secret_free(pem, len);
            set = rw_jwks_new();
            assert_int_equal(rw_jwks_add(set, unpinned), 0);
            key = unpinned;
        }
        assert_int_equal(rw_jwt_sign(key, cases[i].alg, NULL, claims, &token), 0);
        assert_int_equal(rw_jwt_verify(set, token, strlen(token), &o, &jwt, &err), RW_JWT_OK);
        assert_int_equal(rw_jwt_alg(jwt), cases[i].alg);
        assert_string_equal(rw_jwt_kid(jwt), rw_jwk_kid(key));
        assert_string_equal(rw_jwt_claim_string(jwt, "sub"), "user-1");
        assert_string_equal(cJSON_GetObjectItem(rw_jwt_header(jwt), "typ")->valuestring, "JWT");
        assert_int_equal(rw_jwt_scope_count(jwt), 2);
        assert_string_equal(rw_jwt_scope(jwt, 0), "reels/read");
        assert_string_equal(rw_jwt_scope(jwt, 1), "reels/write");
        assert_null(rw_jwt_scope(jwt, 2));
        rw_jwt_free(jwt);
        free(token);
        if (set != f->set)
            rw_jwks_free(set);
        rw_jwk_free(unpinned);
    }
    cJSON_Delete(claims);
    free(body);
}

static void sign_refuses_misuse(void **state)
{
    struct fx *f = *state;
    cJSON *claims = cJSON_CreateObject();
    cJSON *array = cJSON_CreateArray();
    const rw_jwk_t *public_ec = rw_jwks_find(f->set, rw_jwk_kid(f->ec));
    char *token = (char *)"untouched";

    assert_int_equal(rw_jwt_sign(f->ec, RW_JWT_RS256, NULL, claims, &token), -EINVAL);
    assert_null(token);
    assert_int_equal(rw_jwt_sign(f->ec, RW_JWT_ALG_INVALID, NULL, array, &token), -EINVAL);
    assert_non_null(public_ec);
    assert_int_equal(rw_jwt_sign(public_ec, RW_JWT_ES256, NULL, claims, &token), RW_ENOTFOUND);
    /* A custom typ (RFC 9068 access tokens) is carried in the header. */
    assert_int_equal(rw_jwt_sign(f->ec, RW_JWT_ALG_INVALID, "at+jwt", claims, &token), 0);
    rw_jwt_verify_opts_t o = {.now = TU_NOW, .allow_missing_exp = 1};
    rw_jwt_t *jwt = NULL;
    assert_int_equal(rw_jwt_verify(f->set, token, strlen(token), &o, &jwt, NULL), RW_JWT_OK);
    assert_string_equal(cJSON_GetObjectItem(rw_jwt_header(jwt), "typ")->valuestring, "at+jwt");
    rw_jwt_free(jwt);
    free(token);
    cJSON_Delete(claims);
    cJSON_Delete(array);
}

/* Tokens built and signed by OpenSSL alone verify: we speak standard JWS. */
static void verifies_foreign_tokens(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body = payload("");
    char *rs = forge(f, TU_SIG_RS256, "RS256", f->rsa, body);
    char *es = forge(f, TU_SIG_ES256, "ES256", f->ec, body);
    char *es384 = forge(f, TU_SIG_ES384, "ES384", f->ec384, body);
    /* A header without typ, with extra whitespace in the JSON. */
    char *header = tu_printf("{ \"kid\" : \"%s\", \"alg\" : \"RS256\" }\n", rw_jwk_kid(f->rsa));
    char *no_typ = tu_token(header, body, TU_SIG_RS256, f->rsa_pkey, NULL, 0);

    expect(f->set, rs, &o, RW_JWT_OK);
    expect(f->set, es, &o, RW_JWT_OK);
    expect(f->set, es384, &o, RW_JWT_OK);
    expect(f->set, no_typ, &o, RW_JWT_OK);
    free(rs);
    free(es);
    free(es384);
    free(header);
    free(no_typ);
    free(body);
}

/* ES256 signatures are JOSE R||S: 64 bytes that OpenSSL verifies once turned
 * into DER, and OpenSSL's DER signatures verify once turned into R||S. Several
 * rounds so that short r or s values (leading zero bytes) turn up too. */
static void es256_signature_format(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body = payload("");
    cJSON *claims = cJSON_Parse(body);

    for (int round = 0; round < 32; round++) {
        char *token = NULL;
        assert_int_equal(rw_jwt_sign(f->ec, RW_JWT_ES256, NULL, claims, &token), 0);
        const char *dot2 = strrchr(token, '.');
        size_t raw_len = 0, der_len = 0;
        uint8_t *raw = tu_unb64(dot2 + 1, strlen(dot2 + 1), &raw_len);
        assert_int_equal(raw_len, 64);
        uint8_t *der = tu_raw_to_der(raw, 32, &der_len);
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, f->ec_pkey), 1);
        assert_int_equal(
            EVP_DigestVerify(ctx, der, der_len, (const uint8_t *)token, (size_t)(dot2 - token)), 1);
        EVP_MD_CTX_free(ctx);
        OPENSSL_free(der);
        free(raw);
        free(token);

        /* The other direction: OpenSSL signs (DER), tu_token converts. */
        token = forge(f, TU_SIG_ES256, "ES256", f->ec, body);
        expect(f->set, token, &o, RW_JWT_OK);
        free(token);
    }
    cJSON_Delete(claims);
    free(body);
}

/* ---- the attack matrix --------------------------------------------------- */

static void expired(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *old = tu_printf("{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"exp\":%lld}", TU_NOW - 61);
    char *edge =
        tu_printf("{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"exp\":%lld}", TU_NOW - 59);
    char *t_old = forge(f, TU_SIG_RS256, "RS256", f->rsa, old);
    char *t_edge = forge(f, TU_SIG_RS256, "RS256", f->rsa, edge);

    expect(f->set, t_old, &o, RW_JWT_EEXPIRED);
    expect(f->set, t_edge, &o, RW_JWT_OK); /* inside the 60 s skew */
    o.clock_skew_s = 0;
    expect(f->set, t_edge, &o, RW_JWT_EEXPIRED);
    free(old);
    free(edge);
    free(t_old);
    free(t_edge);
}

static void missing_exp(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *t =
        forge(f, TU_SIG_RS256, "RS256", f->rsa, "{\"iss\":\"" ISS "\",\"aud\":\"app-client\"}");

    expect(f->set, t, &o, RW_JWT_EEXPIRED);
    o.allow_missing_exp = 1;
    expect(f->set, t, &o, RW_JWT_OK);
    free(t);
}

static void not_yet_valid(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *extra_late = tu_printf("\"nbf\":%lld", TU_NOW + 61);
    char *extra = tu_printf("\"nbf\":%lld", TU_NOW + 59);
    char *late = payload(extra_late);
    char *soon = payload(extra);
    char *t_late = forge(f, TU_SIG_ES256, "ES256", f->ec, late);
    char *t_soon = forge(f, TU_SIG_ES256, "ES256", f->ec, soon);

    expect(f->set, t_late, &o, RW_JWT_ENOTBEFORE);
    expect(f->set, t_soon, &o, RW_JWT_OK);
    free(late);
    free(soon);
    free(extra);
    free(extra_late);
    free(t_late);
    free(t_soon);
}

static void issued_in_future(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body = tu_printf("{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"iat\":%lld,\"exp\":%lld}",
                           TU_NOW + 600, TU_NOW + 3600);
    char *t = forge(f, TU_SIG_RS256, "RS256", f->rsa, body);

    expect(f->set, t, &o, RW_JWT_EIAT);
    free(body);
    free(t);
}

static void wrong_issuer(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body = tu_printf("{\"iss\":\"https://evil.example/pool\",\"aud\":\"app-client\","
                           "\"exp\":%lld}",
                           TU_NOW + 60);
    char *no_iss = tu_printf("{\"aud\":\"app-client\",\"exp\":%lld}", TU_NOW + 60);
    /* Exact match only: a prefix or a trailing slash is another issuer. */
    char *slash =
        tu_printf("{\"iss\":\"" ISS "/\",\"aud\":\"app-client\",\"exp\":%lld}", TU_NOW + 60);
    char *t1 = forge(f, TU_SIG_RS256, "RS256", f->rsa, body);
    char *t2 = forge(f, TU_SIG_RS256, "RS256", f->rsa, no_iss);
    char *t3 = forge(f, TU_SIG_RS256, "RS256", f->rsa, slash);

    expect(f->set, t1, &o, RW_JWT_EISSUER);
    expect(f->set, t2, &o, RW_JWT_EISSUER);
    expect(f->set, t3, &o, RW_JWT_EISSUER);
    free(body);
    free(no_iss);
    free(slash);
    free(t1);
    free(t2);
    free(t3);
}

static void wrong_audience(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body =
        tu_printf("{\"iss\":\"" ISS "\",\"aud\":\"someone-else\",\"exp\":%lld}", TU_NOW + 60);
    char *array = tu_printf("{\"iss\":\"" ISS "\",\"aud\":[\"x\",\"other-client\"],\"exp\":%lld}",
                            TU_NOW + 60);
    char *none = tu_printf("{\"iss\":\"" ISS "\",\"exp\":%lld}", TU_NOW + 60);
    char *empty = tu_printf("{\"iss\":\"" ISS "\",\"aud\":[],\"exp\":%lld}", TU_NOW + 60);
    char *t1 = forge(f, TU_SIG_RS256, "RS256", f->rsa, body);
    char *t2 = forge(f, TU_SIG_RS256, "RS256", f->rsa, array);
    char *t3 = forge(f, TU_SIG_RS256, "RS256", f->rsa, none);
    char *t4 = forge(f, TU_SIG_RS256, "RS256", f->rsa, empty);

    expect(f->set, t1, &o, RW_JWT_EAUDIENCE);
    expect(f->set, t2, &o, RW_JWT_OK); /* any element of an aud array */
    expect(f->set, t3, &o, RW_JWT_EAUDIENCE);
    expect(f->set, t4, &o, RW_JWT_EAUDIENCE);
    free(body);
    free(array);
    free(none);
    free(empty);
    free(t1);
    free(t2);
    free(t3);
    free(t4);
}

/* Cognito access tokens carry client_id instead of aud; API Gateway checks
 * client_id only when aud is absent. */
static void client_id_match(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *access = tu_printf("{\"iss\":\"" ISS "\",\"client_id\":\"app-client\","
                             "\"token_use\":\"access\",\"exp\":%lld}",
                             TU_NOW + 60);
    char *wrong =
        tu_printf("{\"iss\":\"" ISS "\",\"client_id\":\"nope\",\"exp\":%lld}", TU_NOW + 60);
    char *aud_wins = tu_printf("{\"iss\":\"" ISS "\",\"aud\":\"nope\",\"client_id\":\"app-client\","
                               "\"exp\":%lld}",
                               TU_NOW + 60);
    char *t1 = forge(f, TU_SIG_ES256, "ES256", f->ec, access);
    char *t2 = forge(f, TU_SIG_ES256, "ES256", f->ec, wrong);
    char *t3 = forge(f, TU_SIG_ES256, "ES256", f->ec, aud_wins);

    expect(f->set, t1, &o, RW_JWT_OK);
    expect(f->set, t2, &o, RW_JWT_EAUDIENCE);
    expect(f->set, t3, &o, RW_JWT_EAUDIENCE);
    free(access);
    free(wrong);
    free(aud_wins);
    free(t1);
    free(t2);
    free(t3);
}

static void unknown_kid(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    rw_jwk_t *stranger = NULL;
    char *body = payload("");
    char *token = NULL;
    cJSON *claims = cJSON_Parse(body);
    const char *no_kid_header = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
    char *no_kid = tu_token(no_kid_header, body, TU_SIG_RS256, f->rsa_pkey, NULL, 0);

    assert_int_equal(rw_jwk_generate(RW_JWK_EC_P256, &stranger), 0);
    assert_int_equal(rw_jwt_sign(stranger, RW_JWT_ALG_INVALID, NULL, claims, &token), 0);
    expect(f->set, token, &o, RW_JWT_EKID);
    expect(f->set, no_kid, &o, RW_JWT_EHEADER);
    rw_jwk_free(stranger);
    cJSON_Delete(claims);
    free(token);
    free(no_kid);
    free(body);
}

/* "alg": "none" with an empty signature, in every spelling. */
static void alg_none(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    static const char *const spellings[] = {"none", "None", "NONE", "nOnE", ""};
    char *body = payload("");

    for (size_t i = 0; i < sizeof spellings / sizeof spellings[0]; i++) {
        char *t = forge(f, TU_SIG_NONE, spellings[i], f->rsa, body);
        expect(f->set, t, &o, RW_JWT_EALG);
        free(t);
    }
    /* No alg at all, and a non-string alg. */
    char *h1 = tu_printf("{\"kid\":\"%s\"}", rw_jwk_kid(f->rsa));
    char *h2 = tu_printf("{\"alg\":null,\"kid\":\"%s\"}", rw_jwk_kid(f->rsa));
    char *t1 = tu_token(h1, body, TU_SIG_RS256, f->rsa_pkey, NULL, 0);
    char *t2 = tu_token(h2, body, TU_SIG_RS256, f->rsa_pkey, NULL, 0);
    expect(f->set, t1, &o, RW_JWT_EALG);
    expect(f->set, t2, &o, RW_JWT_EALG);
    free(h1);
    free(h2);
    free(t1);
    free(t2);
    free(body);
}

/* The classic confusion: HS256 with the RSA public key's PEM (which the
 * attacker knows) as the HMAC secret, under the RSA key's kid. */
static void hs256_with_public_key(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *pem = NULL, *body = payload("");
    size_t len = 0;
    static const char *const hmacs[] = {"HS256", "HS384", "HS512"};

    assert_int_equal(rw_jwk_public_pem(f->rsa, &pem, &len), 0);
    for (size_t i = 0; i < sizeof hmacs / sizeof hmacs[0]; i++) {
        char *header = tu_printf("{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", hmacs[i],
                                 rw_jwk_kid(f->rsa));
        char *t = tu_token(header, body, TU_SIG_HS256, NULL, pem, len);
        expect(f->set, t, &o, RW_JWT_EALG);
        free(header);
        free(t);
    }
    free(pem);
    free(body);
}

static void alg_not_for_key(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body = payload("");
    /* RS256 header naming the EC key, signed with the RSA key. */
    char *rs_on_ec = forge(f, TU_SIG_RS256, "RS256", f->ec, body);
    /* ES256 header naming the RSA key, signed with the EC key. */
    char *es_on_rsa = forge(f, TU_SIG_ES256, "ES256", f->rsa, body);
    /* ES384 header naming the P-256 key. */
    char *es384_on_p256 = forge(f, TU_SIG_ES384, "ES384", f->ec, body);
    /* PS256 on an RSA key whose JWK pins RS256. */
    char *ps_on_pinned = forge(f, TU_SIG_PS256, "PS256", f->rsa, body);

    expect(f->set, rs_on_ec, &o, RW_JWT_EKEY_ALG);
    expect(f->set, es_on_rsa, &o, RW_JWT_EKEY_ALG);
    expect(f->set, es384_on_p256, &o, RW_JWT_EKEY_ALG);
    expect(f->set, ps_on_pinned, &o, RW_JWT_EKEY_ALG);
    free(rs_on_ec);
    free(es_on_rsa);
    free(es384_on_p256);
    free(ps_on_pinned);
    free(body);
}

static void tampered_payload(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body = payload("");
    /* Extra privileges, and a one-character change of the subject. */
    char *evil[2] = {payload("\"admin\":true"), strdup(body)};
    char *tokens[2] = {forge(f, TU_SIG_RS256, "RS256", f->rsa, body),
                       forge(f, TU_SIG_ES256, "ES256", f->ec, body)};

    strstr(evil[1], "user-1")[5] = '2';
    for (int i = 0; i < 2; i++) {
        expect(f->set, tokens[i], &o, RW_JWT_OK);
        for (int k = 0; k < 2; k++) {
            /* Splice the other payload between the original header and signature. */
            char *dot1 = strchr(tokens[i], '.'), *dot2 = strrchr(tokens[i], '.');
            char *p = tu_b64(evil[k], strlen(evil[k]));
            char *spliced = tu_printf("%.*s.%s%s", (int)(dot1 - tokens[i]), tokens[i], p, dot2);
            expect(f->set, spliced, &o, RW_JWT_ESIGNATURE);
            free(p);
            free(spliced);
        }
        free(tokens[i]);
    }
    free(body);
    free(evil[0]);
    free(evil[1]);
}

/* Re-encodes a token with its signature bytes passed through change. */
static char *resign(const char *token, void (*change)(uint8_t *sig, size_t *len))
{
    const char *dot2 = strrchr(token, '.');
    size_t len = 0;
    uint8_t *sig = tu_unb64(dot2 + 1, strlen(dot2 + 1), &len);
    char *b64, *out;

    change(sig, &len);
    b64 = tu_b64(sig, len);
    out = tu_printf("%.*s.%s", (int)(dot2 - token), token, b64);
    free(sig);
    free(b64);
    return out;
}

static void flip_bit(uint8_t *sig, size_t *len)
{
    sig[*len / 2] ^= 0x01;
}

static void drop_last_byte(uint8_t *sig, size_t *len)
{
    (*len)--;
}

static void append_byte(uint8_t *sig, size_t *len)
{
    sig[(*len)++] = 0;
}

static void zero_all(uint8_t *sig, size_t *len)
{
    memset(sig, 0, *len);
}

static void tampered_signature(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body = payload("");
    char *tokens[2] = {forge(f, TU_SIG_RS256, "RS256", f->rsa, body),
                       forge(f, TU_SIG_ES256, "ES256", f->ec, body)};

    for (int i = 0; i < 2; i++) {
        char *flipped = resign(tokens[i], flip_bit);
        char *zeros = resign(tokens[i], zero_all);
        expect(f->set, tokens[i], &o, RW_JWT_OK);
        expect(f->set, flipped, &o, RW_JWT_ESIGNATURE);
        expect(f->set, zeros, &o, RW_JWT_ESIGNATURE);
        free(flipped);
        free(zeros);
        free(tokens[i]);
    }
    free(body);
}

static void truncated_signature(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body = payload("");
    char *tokens[2] = {forge(f, TU_SIG_RS256, "RS256", f->rsa, body),
                       forge(f, TU_SIG_ES256, "ES256", f->ec, body)};

    for (int i = 0; i < 2; i++) {
        char *shorter = resign(tokens[i], drop_last_byte);
        char *longer = resign(tokens[i], append_byte);
        char *empty = strdup(tokens[i]);
        strrchr(empty, '.')[1] = '\0';
        /* Cut to a whole number of 4-character groups (still valid base64url),
         * at least one group shorter than the signature. */
        char *cut = strdup(tokens[i]);
        char *sig = strrchr(cut, '.') + 1;
        sig[(strlen(sig) / 4 - 1) * 4] = '\0';
        expect(f->set, shorter, &o, RW_JWT_ESIGNATURE);
        expect(f->set, longer, &o, RW_JWT_ESIGNATURE);
        expect(f->set, empty, &o, RW_JWT_ESIGNATURE);
        expect(f->set, cut, &o, RW_JWT_ESIGNATURE);
        free(shorter);
        free(longer);
        free(empty);
        free(cut);
        free(tokens[i]);
    }
    free(body);
}

static void malformed_base64(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body = payload("");
    char *good = forge(f, TU_SIG_RS256, "RS256", f->rsa, body);
    size_t dot1 = (size_t)(strchr(good, '.') - good);
    size_t dot2 = (size_t)(strrchr(good, '.') - good);
    size_t positions[] = {3, dot1 + 3, dot2 + 3};

    expect(f->set, good, &o, RW_JWT_OK);
    for (size_t i = 0; i < 3; i++) {
        static const char bad_chars[] = {'*', '+', '/', '=', ' '};
        for (size_t k = 0; k < sizeof bad_chars; k++) {
            char *t = strdup(good);
            t[positions[i]] = bad_chars[k];
            expect(f->set, t, &o, RW_JWT_EBASE64);
            free(t);
        }
    }
    /* Padding appended to the signature. */
    char *padded = tu_printf("%s==", good);
    expect(f->set, padded, &o, RW_JWT_EBASE64);
    /* A signature of 4k+1 characters (RSA-2048: 342 + 3). */
    char *odd = tu_printf("%sAAA", good);
    expect(f->set, odd, &o, RW_JWT_EBASE64);
    free(padded);
    free(odd);
    free(good);
    free(body);
}

static void malformed_json(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *header = tu_printf("{\"alg\":\"RS256\",\"kid\":\"%s\"}", rw_jwk_kid(f->rsa));
    char *dup_header =
        tu_printf("{\"alg\":\"RS256\",\"kid\":\"%s\",\"alg\":\"none\"}", rw_jwk_kid(f->rsa));
    char *body = payload("");
    char *dup_payload = payload("\"sub\":\"admin\"");
    char *trailing = tu_printf("%sxyz", body);
    static const char *const not_objects[] = {
        "[1,2,3]", "\"a string\"", "42", "null", "{", "{\"exp\":}", "{'a':1}", "",
    };
    struct {
        const char *h, *p;
    } cases[16];
    size_t n = 0;

    for (size_t i = 0; i < sizeof not_objects / sizeof not_objects[0]; i++) {
        cases[n].h = header;
        cases[n++].p = not_objects[i];
    }
    cases[n].h = "not json";
    cases[n++].p = body;
    cases[n].h = "[\"RS256\"]";
    cases[n++].p = body;
    cases[n].h = dup_header;
    cases[n++].p = body;
    cases[n].h = header;
    cases[n++].p = dup_payload;
    cases[n].h = header;
    cases[n++].p = trailing;
    for (size_t i = 0; i < n; i++) {
        /* Properly signed, so only the JSON can be what is refused. */
        char *t = tu_token(cases[i].h, cases[i].p, TU_SIG_RS256, f->rsa_pkey, NULL, 0);
        expect(f->set, t, &o, RW_JWT_EJSON);
        free(t);
    }
    /* A NUL inside the JSON: cJSON would stop there and ignore the rest. */
    size_t blen = strlen(body);
    char *with_nul = malloc(blen + 8);
    memcpy(with_nul, body, blen);
    memcpy(with_nul + blen, "\0{}", 3);
    char *h = tu_b64(header, strlen(header));
    char *p = tu_b64(with_nul, blen + 3);
    char *t = tu_printf("%s.%s.AAAA", h, p);
    expect(f->set, t, &o, RW_JWT_EJSON);
    free(h);
    free(p);
    free(t);
    free(with_nul);
    free(header);
    free(dup_header);
    free(body);
    free(dup_payload);
    free(trailing);
}

static void wrong_segment_count(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body = payload("");
    char *good = forge(f, TU_SIG_RS256, "RS256", f->rsa, body);
    char *extra = tu_printf("%s.AAAA", good);
    char *five = tu_printf("%s.AAAA.AAAA", good); /* JWE shape */
    char *two = strdup(good);
    *strrchr(two, '.') = '\0';
    char *huge = malloc(RW_JWT_MAX_LEN + 2);
    memset(huge, 'A', RW_JWT_MAX_LEN + 1);
    huge[10] = '.';
    huge[20] = '.';
    huge[RW_JWT_MAX_LEN + 1] = '\0';

    expect(f->set, extra, &o, RW_JWT_EFORMAT);
    expect(f->set, five, &o, RW_JWT_EFORMAT);
    expect(f->set, two, &o, RW_JWT_EFORMAT);
    expect(f->set, "", &o, RW_JWT_EFORMAT);
    expect(f->set, "..", &o, RW_JWT_EJSON);
    expect(f->set, "abc", &o, RW_JWT_EFORMAT);
    expect(f->set, huge, &o, RW_JWT_EFORMAT);
    free(good);
    free(extra);
    free(five);
    free(two);
    free(huge);
    free(body);
}

static void missing_scope(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    static const char *const need_admin[] = {"reels/admin"};
    static const char *const need_any[] = {"reels/admin", "reels/write"};
    static const char *const need_both[] = {"reels/read", "reels/write"};
    char *body = payload("");
    char *no_scope =
        tu_printf("{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"exp\":%lld}", TU_NOW + 60);
    char *scp = tu_printf("{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"exp\":%lld,"
                          "\"scp\":[\"reels/admin\"]}",
                          TU_NOW + 60);
    char *t = forge(f, TU_SIG_RS256, "RS256", f->rsa, body);
    char *t_none = forge(f, TU_SIG_RS256, "RS256", f->rsa, no_scope);
    char *t_scp = forge(f, TU_SIG_RS256, "RS256", f->rsa, scp);

    o.scopes = need_admin;
    o.n_scopes = 1;
    expect(f->set, t, &o, RW_JWT_ESCOPE);
    assert_int_equal(rw_jwt_status_http(RW_JWT_ESCOPE), 403);
    expect(f->set, t_none, &o, RW_JWT_ESCOPE);
    expect(f->set, t_scp, &o, RW_JWT_OK); /* scp array (Okta, Keycloak) */
    o.scopes = need_any;
    o.n_scopes = 2;
    expect(f->set, t, &o, RW_JWT_OK); /* one of the route's scopes is enough */
    o.require_all_scopes = 1;
    expect(f->set, t, &o, RW_JWT_ESCOPE);
    o.scopes = need_both;
    expect(f->set, t, &o, RW_JWT_OK);
    free(body);
    free(no_scope);
    free(scp);
    free(t);
    free(t_none);
    free(t_scp);
}

static void claim_types(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    static const char *const bad[] = {
        "{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"exp\":\"1999999999\"}",
        "{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"exp\":1999999999,\"nbf\":true}",
        "{\"iss\":[\"" ISS "\"],\"aud\":\"app-client\",\"exp\":1999999999}",
        "{\"iss\":\"" ISS "\",\"aud\":[\"app-client\",7],\"exp\":1999999999}",
        "{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"exp\":1999999999,\"scope\":[\"a\"]}",
        "{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"exp\":1999999999,\"scp\":{}}",
        "{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"exp\":1999999999,\"sub\":5}",
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *t = forge(f, TU_SIG_ES256, "ES256", f->ec, bad[i]);
        expect(f->set, t, &o, RW_JWT_ECLAIM);
        free(t);
    }
    /* Absurd but well-typed times are compared, not converted. */
    char *far = forge(f, TU_SIG_ES256, "ES256", f->ec,
                      "{\"iss\":\"" ISS "\",\"aud\":\"app-client\",\"exp\":1e300,\"iat\":-1e300}");
    expect(f->set, far, &o, RW_JWT_OK);
    free(far);
}

static void header_rules(void **state)
{
    struct fx *f = *state;
    rw_jwt_verify_opts_t o = std_opts();
    char *body = payload("");
    char *crit = tu_printf("{\"alg\":\"RS256\",\"kid\":\"%s\",\"crit\":[\"exp\"],\"exp\":1}",
                           rw_jwk_kid(f->rsa));
    char *typ = tu_printf("{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":1}", rw_jwk_kid(f->rsa));
    char *kid_num = tu_printf("{\"alg\":\"RS256\",\"kid\":5}");
    /* Keys named by the token itself are never fetched or trusted. */
    char *jku = tu_printf("{\"alg\":\"RS256\",\"kid\":\"attacker\",\"jku\":\"https://evil/\"}");
    /* Case matters: "ALG" is not "alg". */
    char *upper = tu_printf("{\"ALG\":\"RS256\",\"kid\":\"%s\"}", rw_jwk_kid(f->rsa));
    char *t1 = tu_token(crit, body, TU_SIG_RS256, f->rsa_pkey, NULL, 0);
    char *t2 = tu_token(typ, body, TU_SIG_RS256, f->rsa_pkey, NULL, 0);
    char *t3 = tu_token(kid_num, body, TU_SIG_RS256, f->rsa_pkey, NULL, 0);
    char *t4 = tu_token(jku, body, TU_SIG_RS256, f->rsa_pkey, NULL, 0);
    char *t5 = tu_token(upper, body, TU_SIG_RS256, f->rsa_pkey, NULL, 0);

    expect(f->set, t1, &o, RW_JWT_EHEADER);
    expect(f->set, t2, &o, RW_JWT_EHEADER);
    expect(f->set, t3, &o, RW_JWT_EHEADER);
    expect(f->set, t4, &o, RW_JWT_EKID);
    expect(f->set, t5, &o, RW_JWT_EALG);
    free(body);
    free(crit);
    free(typ);
    free(kid_num);
    free(jku);
    free(upper);
    free(t1);
    free(t2);
    free(t3);
    free(t4);
    free(t5);
}

/* Each status has its own name; only the scope check is a 403. */
static void statuses_are_distinct(void **state)
{
    (void)state;
    for (int a = 0; a < RW_JWT_STATUS_COUNT; a++) {
        int http = rw_jwt_status_http((rw_jwt_status_t)a);
        if (a == RW_JWT_OK)
            assert_int_equal(http, 200);
        else if (a == RW_JWT_ESCOPE)
            assert_int_equal(http, 403);
        else if (a == RW_JWT_EINTERNAL)
            assert_int_equal(http, 500);
        else
            assert_int_equal(http, 401);
        for (int b = a + 1; b < RW_JWT_STATUS_COUNT; b++)
            assert_string_not_equal(rw_jwt_status_name((rw_jwt_status_t)a),
                                    rw_jwt_status_name((rw_jwt_status_t)b));
    }
    assert_string_equal(rw_jwt_status_name(RW_JWT_STATUS_COUNT), "unknown");
}

static void alg_names(void **state)
{
    (void)state;
    assert_int_equal(rw_jwt_alg_parse("RS256"), RW_JWT_RS256);
    assert_int_equal(rw_jwt_alg_parse("ES384"), RW_JWT_ES384);
    assert_int_equal(rw_jwt_alg_parse("none"), RW_JWT_ALG_INVALID);
    assert_int_equal(rw_jwt_alg_parse("HS256"), RW_JWT_ALG_INVALID);
    assert_int_equal(rw_jwt_alg_parse("rs256"), RW_JWT_ALG_INVALID);
    assert_int_equal(rw_jwt_alg_parse(NULL), RW_JWT_ALG_INVALID);
    assert_string_equal(rw_jwt_alg_name(RW_JWT_PS256), "PS256");
    assert_string_equal(rw_jwt_alg_name(RW_JWT_ALG_INVALID), "invalid");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sign_verify_every_alg),
        cmocka_unit_test(sign_refuses_misuse),
        cmocka_unit_test(verifies_foreign_tokens),
        cmocka_unit_test(es256_signature_format),
        cmocka_unit_test(expired),
        cmocka_unit_test(missing_exp),
        cmocka_unit_test(not_yet_valid),
        cmocka_unit_test(issued_in_future),
        cmocka_unit_test(wrong_issuer),
        cmocka_unit_test(wrong_audience),
        cmocka_unit_test(client_id_match),
        cmocka_unit_test(unknown_kid),
        cmocka_unit_test(alg_none),
        cmocka_unit_test(hs256_with_public_key),
        cmocka_unit_test(alg_not_for_key),
        cmocka_unit_test(tampered_payload),
        cmocka_unit_test(tampered_signature),
        cmocka_unit_test(truncated_signature),
        cmocka_unit_test(malformed_base64),
        cmocka_unit_test(malformed_json),
        cmocka_unit_test(wrong_segment_count),
        cmocka_unit_test(missing_scope),
        cmocka_unit_test(claim_types),
        cmocka_unit_test(header_rules),
        cmocka_unit_test(statuses_are_distinct),
        cmocka_unit_test(alg_names),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
