/* The JWT authorizer, spoken to over real HTTP: a test issuer (reelway's HTTP
 * server on 127.0.0.1) publishes its OpenID configuration and JWKS made from
 * keys generated here, and an API server answers through the authorizer.
 * Covers the attack matrix (each case a request, with API Gateway's status,
 * body and www-authenticate), the event's claims/scopes shape, discovery,
 * refetch on an unknown kid and its rate limit (fetches counted at the
 * issuer), keeping the key set when a refetch fails, forgetting withdrawn
 * keys, the verification cache (verifications counted), query-string identity
 * sources, JWKS files, and configuration errors. Every loop closes clean. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../auth/auth_test_util.h"
#include "authz_jwt.h"
#include "reelway/error.h"
#include "rw_http_client.h"

#define AUD "reels-app"

/* Keys shared by every test (RSA generation is slow). */
static rw_jwk_t *rsa1, *ec1, *rsa2;

typedef struct fx_s {
    rw_test_loop_t *thread;
    rw_http_server_t *issuer_srv, *api_srv;
    int issuer_port, api_port;
    char issuer[64];
    /* loop-thread state */
    char *jwks_json;
    bool jwks_fail;
    int discovery_hits, jwks_hits;
    rw_jwt_authz_t *authz;
} fx_t;

/* ---- loop thread: the issuer ---------------------------------------------- */

static bool path_is(const rw_http_req_t *req, const char *path)
{
    return req->path_len == strlen(path) && memcmp(req->path, path, req->path_len) == 0;
}

static void issuer_handler(rw_http_req_t *req, void *arg)
{
    fx_t *fx = arg;
    rw_http_header_t ct = {"Content-Type", 12, "application/json", 16};
    if (path_is(req, "/.well-known/openid-configuration")) {
        char body[256];
        int n = snprintf(body, sizeof body, "{\"issuer\":\"%s\",\"jwks_uri\":\"%s/keys\"}",
                         fx->issuer, fx->issuer);
        fx->discovery_hits++;
        rw_http_respond(req, 200, &ct, 1, body, (size_t)n);
    } else if (path_is(req, "/keys")) {
        fx->jwks_hits++;
        if (fx->jwks_fail)
            rw_http_respond_error(req, 500, "Internal Server Error", NULL, NULL, 0);
        else
            rw_http_respond(req, 200, &ct, 1, fx->jwks_json, strlen(fx->jwks_json));
    } else {
        rw_http_respond_error(req, 404, "Not Found", NULL, NULL, 0);
    }
}

/* ---- loop thread: the API behind the authorizer ---------------------------- */

static void answer(rw_http_req_t *req, rw_jwt_authz_result_t *res)
{
    if (res->http_status == 200) {
        cJSON *auth = rw_jwt_authz_event_authorizer(res);
        char *body = cJSON_PrintUnformatted(auth);
        rw_http_header_t ct = {"Content-Type", 12, "application/json", 16};
        rw_http_respond(req, 200, &ct, 1, body, strlen(body));
        cJSON_free(body);
        cJSON_Delete(auth);
    } else {
        rw_jwt_authz_respond(req, res);
    }
    rw_jwt_authz_result_release(res);
}

static void on_authorized(rw_jwt_authz_result_t *res, void *arg)
{
    answer(arg, res);
}

static void api_handler(rw_http_req_t *req, void *arg)
{
    fx_t *fx = arg;
    static const char *const scoped[] = {"reels/write", "admin"};
    bool with_scopes = path_is(req, "/scoped");
    rw_jwt_authz_result_t res;
    int rc = rw_jwt_authz_check(fx->authz, req, with_scopes ? scoped : NULL, with_scopes ? 2 : 0,
                                &res, on_authorized, req);
    if (rc == RW_JWT_AUTHZ_DONE)
        answer(req, &res);
    else if (rc < 0)
        rw_http_respond_error(req, 500, "check failed", rw_strerror(rc), NULL, 0);
}

static void start_servers(uv_loop_t *loop, void *arg)
{
    fx_t *fx = arg;
    fx->issuer_srv = rw_http_server_new(loop, NULL, issuer_handler, fx);
    fx->api_srv = rw_http_server_new(loop, NULL, api_handler, fx);
    assert_int_equal(rw_http_server_listen(fx->issuer_srv, "127.0.0.1", 0, false), 0);
    assert_int_equal(rw_http_server_listen(fx->api_srv, "127.0.0.1", 0, false), 0);
    fx->issuer_port = rw_http_server_port(fx->issuer_srv);
    fx->api_port = rw_http_server_port(fx->api_srv);
    snprintf(fx->issuer, sizeof fx->issuer, "http://127.0.0.1:%d", fx->issuer_port);
}

static void stop_all(uv_loop_t *loop, void *arg)
{
    fx_t *fx = arg;
    if (fx->authz)
        rw_jwt_authz_close(fx->authz, NULL, NULL);
    fx->authz = NULL;
    rw_http_server_shutdown(fx->issuer_srv, NULL, NULL);
    rw_http_server_shutdown(fx->api_srv, NULL, NULL);
}

/* ---- the main thread's view ------------------------------------------------ */

static char *jwks_of(rw_jwk_t *const *keys, size_t n)
{
    rw_jwks_t *set = rw_jwks_new();
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rw_jwks_add(set, keys[i]), 0);
    char *json = NULL;
    assert_int_equal(rw_jwks_to_json(set, &json), 0);
    rw_jwks_free(set);
    return json;
}

typedef struct {
    fx_t *fx;
    char *json;
    bool fail;
} serve_t;

static void do_serve(uv_loop_t *loop, void *arg)
{
    serve_t *s = arg;
    if (s->json) {
        free(s->fx->jwks_json);
        s->fx->jwks_json = s->json;
    }
    s->fx->jwks_fail = s->fail;
}

/* What the issuer publishes from now on. */
static void publish(fx_t *fx, rw_jwk_t *const *keys, size_t n, bool fail)
{
    serve_t s = {fx, keys ? jwks_of(keys, n) : NULL, fail};
    rw_test_loop_call(fx->thread, do_serve, &s);
}

typedef struct {
    fx_t *fx;
    rw_jwt_authz_config_t cfg;
    int rc;
    char why[256];
} make_t;

static void do_make(uv_loop_t *loop, void *arg)
{
    make_t *m = arg;
    if (m->fx->authz)
        rw_jwt_authz_close(m->fx->authz, NULL, NULL);
    m->fx->authz = NULL;
    m->rc = rw_jwt_authz_new(loop, &m->cfg, &m->fx->authz, m->why, sizeof m->why);
}

static const char *const audiences[] = {AUD, "other-client"};

/* A discovering authorizer for the test issuer. */
static void use_authz(fx_t *fx, uint64_t min_interval_ms)
{
    make_t m = {.fx = fx};
    m.cfg.name = "test";
    m.cfg.issuer = fx->issuer;
    m.cfg.audiences = audiences;
    m.cfg.n_audiences = 2;
    m.cfg.jwks_min_interval_ms = min_interval_ms;
    rw_test_loop_call(fx->thread, do_make, &m);
    if (m.rc != 0)
        fail_msg("authorizer: %d %s", m.rc, m.why);
}

typedef struct {
    fx_t *fx;
    int discovery_hits, jwks_hits;
    rw_jwt_authz_stats_t st;
} counts_t;

static void do_counts(uv_loop_t *loop, void *arg)
{
    counts_t *c = arg;
    c->discovery_hits = c->fx->discovery_hits;
    c->jwks_hits = c->fx->jwks_hits;
    rw_jwt_authz_stats(c->fx->authz, &c->st);
}

static counts_t counts(fx_t *fx)
{
    counts_t c = {.fx = fx};
    rw_test_loop_call(fx->thread, do_counts, &c);
    return c;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    fx->jwks_json = jwks_of((rw_jwk_t *[]){rsa1, ec1}, 2);
    fx->thread = rw_test_loop_start(start_servers, fx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    assert_int_equal(rw_test_loop_stop(fx->thread, stop_all, fx), 0);
    free(fx->jwks_json);
    free(fx);
    return 0;
}

/* A token from key with iss/aud (NULL: left out), iat and exp relative to now,
 * plus the members of extra (a JSON object's text). */
static char *token(const rw_jwk_t *key, const char *iss, const char *aud, int64_t iat_off,
                   int64_t exp_off, const char *extra)
{
    cJSON *c = cJSON_Parse(extra ? extra : "{}");
    assert_non_null(c);
    int64_t now = (int64_t)time(NULL);
    if (iss)
        cJSON_AddStringToObject(c, "iss", iss);
    if (aud)
        cJSON_AddStringToObject(c, "aud", aud);
    if (!cJSON_GetObjectItem(c, "sub"))
        cJSON_AddStringToObject(c, "sub", "user-1");
    cJSON_AddNumberToObject(c, "iat", (double)(now + iat_off));
    cJSON_AddNumberToObject(c, "exp", (double)(now + exp_off));
    char *tok = NULL;
    assert_int_equal(rw_jwt_sign(key, RW_JWT_ALG_INVALID, NULL, c, &tok), 0);
    cJSON_Delete(c);
    return tok;
}

static char *good(fx_t *fx, const rw_jwk_t *key, const char *extra)
{
    return token(key, fx->issuer, AUD, -10, 3600, extra);
}

static int call(fx_t *fx, const char *path, const char *headers, rw_test_response_t *r)
{
    return rw_test_http(fx->api_port, "GET", path, headers, NULL, 0, r);
}

static int call_bearer(fx_t *fx, const char *path, const char *tok, rw_test_response_t *r)
{
    char *h = tu_printf("Authorization: Bearer %s\r\n", tok);
    int rc = call(fx, path, h, r);
    free(h);
    return rc;
}

/* Expects 401 {"message":"Unauthorized"} whose www-authenticate contains want. */
static void expect_401(fx_t *fx, const char *path, const char *headers, const char *want)
{
    rw_test_response_t r;
    assert_int_equal(call(fx, path, headers, &r), 0);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.body, "{\"message\":\"Unauthorized\"}");
    char h[512];
    assert_non_null(rw_test_header(&r, "www-authenticate", h, sizeof h));
    if (!strstr(h, want))
        fail_msg("www-authenticate \"%s\" lacks \"%s\"", h, want);
    rw_test_response_free(&r);
}

static void expect_401_token(fx_t *fx, const char *tok, const char *want)
{
    char *h = tu_printf("Authorization: Bearer %s\r\n", tok);
    expect_401(fx, "/open", h, want);
    free(h);
}

static cJSON *expect_200(fx_t *fx, const char *path, const char *headers)
{
    rw_test_response_t r;
    assert_int_equal(call(fx, path, headers, &r), 0);
    if (r.status != 200)
        fail_msg("status %d: %s", r.status, r.body);
    cJSON *j = cJSON_Parse(r.body);
    assert_non_null(j);
    rw_test_response_free(&r);
    return j;
}

static cJSON *expect_200_token(fx_t *fx, const char *path, const char *tok)
{
    char *h = tu_printf("Authorization: Bearer %s\r\n", tok);
    cJSON *j = expect_200(fx, path, h);
    free(h);
    return j;
}

static const char *claim(const cJSON *auth, const char *name)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(auth, "jwt"), "claims"),
        name);
    if (!c)
        return NULL;
    assert_true(cJSON_IsString(c)); /* every claim value is a string */
    return c->valuestring;
}

/* ---- the tests ------------------------------------------------------------- */

static void allows_a_valid_token_with_api_gateways_event_shape(void **state)
{
    fx_t *fx = *state;
    use_authz(fx, RW_JWT_AUTHZ_NO_MIN_INTERVAL);
    char *tok = good(fx, rsa1,
                     "{\"scope\":\"reels/read reels/write\",\"cognito:groups\":[\"admin\","
                     "\"poweruser\"],\"email_verified\":true,\"ratio\":1.5,\"n\":42,"
                     "\"address\":{\"country\":\"JP\"},\"nickname\":null}");
    cJSON *auth = expect_200_token(fx, "/open", tok);
    assert_string_equal(claim(auth, "sub"), "user-1");
    assert_string_equal(claim(auth, "iss"), fx->issuer);
    assert_string_equal(claim(auth, "aud"), AUD);
    assert_string_equal(claim(auth, "scope"), "reels/read reels/write");
    assert_string_equal(claim(auth, "cognito:groups"), "[admin poweruser]");
    assert_string_equal(claim(auth, "email_verified"), "true");
    assert_string_equal(claim(auth, "ratio"), "1.5");
    assert_string_equal(claim(auth, "n"), "42");
    assert_string_equal(claim(auth, "address"), "{\"country\":\"JP\"}");
    assert_null(claim(auth, "nickname"));
    char exp[32];
    const cJSON *jwt = cJSON_GetObjectItem(auth, "jwt");
    snprintf(exp, sizeof exp, "%s", claim(auth, "exp"));
    assert_true(strlen(exp) >= 10 && strspn(exp, "0123456789") == strlen(exp));
    /* A route without scopes: "scopes" is there, and null. */
    const cJSON *scopes = cJSON_GetObjectItem(jwt, "scopes");
    assert_non_null(scopes);
    assert_true(cJSON_IsNull(scopes));
    cJSON_Delete(auth);

    /* A route with scopes: the token's scopes, in order. */
    auth = expect_200_token(fx, "/scoped", tok);
    scopes = cJSON_GetObjectItem(cJSON_GetObjectItem(auth, "jwt"), "scopes");
    assert_true(cJSON_IsArray(scopes));
    assert_int_equal(cJSON_GetArraySize(scopes), 2);
    assert_string_equal(cJSON_GetArrayItem(scopes, 0)->valuestring, "reels/read");
    assert_string_equal(cJSON_GetArrayItem(scopes, 1)->valuestring, "reels/write");
    cJSON_Delete(auth);
    free(tok);

    /* ES256 from the same issuer; the token alone (no "Bearer ") and a
     * lower-case scheme are accepted as API Gateway accepts them. */
    tok = good(fx, ec1, "{\"scp\":[\"admin\"]}");
    auth = expect_200_token(fx, "/scoped", tok);
    cJSON_Delete(auth);
    char *h = tu_printf("Authorization: %s\r\n", tok);
    cJSON_Delete(expect_200(fx, "/open", h));
    free(h);
    h = tu_printf("authorization: bearer   %s\r\n", tok);
    cJSON_Delete(expect_200(fx, "/open", h));
    free(h);
    free(tok);

    /* An access token without aud, whose client_id is an audience (Cognito). */
    tok = token(rsa1, fx->issuer, NULL, -10, 3600, "{\"client_id\":\"other-client\"}");
    cJSON_Delete(expect_200_token(fx, "/open", tok));
    free(tok);

    counts_t c = counts(fx);
    assert_int_equal(c.discovery_hits, 1);
    assert_int_equal(c.jwks_hits, 1);
}

static void refuses_every_attack_of_the_matrix(void **state)
{
    fx_t *fx = *state;
    use_authz(fx, 3600 * 1000);
    char *ok = good(fx, rsa1, "{\"scope\":\"reels/read\"}");
    cJSON_Delete(expect_200_token(fx, "/open", ok)); /* the baseline passes */

    char *t = token(rsa1, fx->issuer, AUD, -7200, -3600, NULL);
    expect_401_token(fx, t, "the token has expired");
    free(t);
    t = token(rsa1, fx->issuer, AUD, -10, 3600, "{\"nbf\":9999999999}");
    expect_401_token(fx, t, "the token is not valid yet");
    free(t);
    t = token(rsa1, fx->issuer, AUD, 3600, 7200, NULL);
    expect_401_token(fx, t, "the token was issued in the future");
    free(t);
    t = token(rsa1, "https://evil.example", AUD, -10, 3600, NULL);
    expect_401_token(fx, t, "the token does not have a valid issuer");
    free(t);
    t = token(rsa1, fx->issuer, "someone-else", -10, 3600, NULL);
    expect_401_token(fx, t, "the token does not have a valid audience");
    free(t);
    t = token(rsa1, fx->issuer, NULL, -10, 3600, "{\"client_id\":\"someone-else\"}");
    expect_401_token(fx, t, "the token does not have a valid audience");
    free(t);

    /* Forged tokens, built without reelway_auth. */
    int64_t now = (int64_t)time(NULL);
    char *payload = tu_printf("{\"iss\":\"%s\",\"aud\":\"%s\",\"sub\":\"admin\",\"iat\":%lld,"
                              "\"exp\":%lld}",
                              fx->issuer, AUD, (long long)now, (long long)now + 3600);
    char *hdr = tu_printf("{\"alg\":\"none\",\"typ\":\"JWT\",\"kid\":\"%s\"}", rw_jwk_kid(rsa1));
    t = tu_token(hdr, payload, TU_SIG_NONE, NULL, NULL, 0);
    expect_401_token(fx, t, "signing algorithm is not supported");
    free(t);
    free(hdr);
    /* Algorithm confusion: HMAC keyed with the issuer's public key. */
    char *pem = NULL;
    size_t pem_len = 0;
    assert_int_equal(rw_jwk_public_pem(rsa1, &pem, &pem_len), 0);
    hdr = tu_printf("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", rw_jwk_kid(rsa1));
    t = tu_token(hdr, payload, TU_SIG_HS256, NULL, pem, pem_len);
    expect_401_token(fx, t, "signing algorithm is not supported");
    free(t);
    free(hdr);
    free(pem);
    /* Well signed, but not JSON. */
    EVP_PKEY *pk = tu_pkey(rsa1);
    hdr = tu_printf("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", rw_jwk_kid(rsa1));
    t = tu_token(hdr, "{\"iss\": oops", TU_SIG_RS256, pk, NULL, 0);
    expect_401_token(fx, t, "the token is malformed");
    free(t);
    /* The forger's own well-formed token passes: the cases above fail for
     * their defect alone. */
    t = tu_token(hdr, payload, TU_SIG_RS256, pk, NULL, 0);
    cJSON_Delete(expect_200_token(fx, "/open", t));
    free(t);
    EVP_PKEY_free(pk);
    free(hdr);

    /* Tampered payload: sub swapped, signature kept. */
    const char *dot1 = strchr(ok, '.'), *dot2 = strchr(dot1 + 1, '.');
    char *evil_payload = tu_b64(payload, strlen(payload));
    t = tu_printf("%.*s.%s%s", (int)(dot1 - ok), ok, evil_payload, dot2);
    expect_401_token(fx, t, "the token does not have a valid signature");
    free(t);
    free(evil_payload);
    free(payload);
    /* Tampered signature: one character in its middle. */
    t = strdup(ok);
    char *sig = strrchr(t, '.') + 20;
    *sig = *sig == 'A' ? 'B' : 'A';
    expect_401_token(fx, t, "the token does not have a valid signature");
    free(t);
    /* Malformed base64url in the payload, and a token of two segments. */
    t = strdup(ok);
    t[dot1 - ok + 5] = '*';
    expect_401_token(fx, t, "the token is malformed");
    free(t);
    t = tu_printf("%.*s", (int)(dot2 - ok), ok);
    expect_401_token(fx, t, "the token is malformed");
    free(t);

    /* The identity source: missing, empty, another scheme, given twice. */
    expect_401(fx, "/open", NULL, "Bearer");
    rw_test_response_t r;
    assert_int_equal(call(fx, "/open", NULL, &r), 0);
    char h[256];
    assert_non_null(rw_test_header(&r, "www-authenticate", h, sizeof h));
    assert_string_equal(h, "Bearer");
    rw_test_response_free(&r);
    expect_401(fx, "/open", "Authorization: Bearer \r\n", "Bearer");
    expect_401(fx, "/open", "Authorization: Basic dXNlcjpwYXNz\r\n", "the token is malformed");
    char *twice = tu_printf("Authorization: Bearer %s\r\nAuthorization: Bearer %s\r\n", ok, ok);
    expect_401(fx, "/open", twice, "invalid_token");
    free(twice);

    /* Valid, but without the route's scopes: 403. */
    assert_int_equal(call_bearer(fx, "/scoped", ok, &r), 0);
    assert_int_equal(r.status, 403);
    assert_string_equal(r.body, "{\"message\":\"Forbidden\"}");
    assert_non_null(rw_test_header(&r, "www-authenticate", h, sizeof h));
    assert_string_equal(h, "Bearer scope=\"reels/write admin\" error=\"insufficient_scope\" "
                           "error_description=\"expected scopes: [reels/write admin]\"");
    rw_test_response_free(&r);
    free(ok);

    /* All of that from the one key set fetched at the start. */
    counts_t c = counts(fx);
    assert_int_equal(c.jwks_hits, 1);
}

static void refetches_on_an_unknown_kid_then_refuses(void **state)
{
    fx_t *fx = *state;
    use_authz(fx, RW_JWT_AUTHZ_NO_MIN_INTERVAL);
    char *ok = good(fx, rsa1, NULL);
    cJSON_Delete(expect_200_token(fx, "/open", ok));
    free(ok);
    assert_int_equal(counts(fx).jwks_hits, 1);

    /* A key the issuer does not publish: one refetch, then 401. */
    rw_jwk_t *stranger;
    assert_int_equal(rw_jwk_generate(RW_JWK_EC_P256, &stranger), 0);
    char *t = good(fx, stranger, NULL);
    expect_401_token(fx, t, "key id does not match");
    free(t);
    rw_jwk_free(stranger);
    counts_t c = counts(fx);
    assert_int_equal(c.jwks_hits, 2);
    assert_int_equal(c.discovery_hits, 1); /* the jwks_uri was remembered */

    /* The issuer rotates in rsa2: its first token refetches and passes. */
    publish(fx, (rw_jwk_t *[]){rsa1, ec1, rsa2}, 3, false);
    t = good(fx, rsa2, NULL);
    cJSON_Delete(expect_200_token(fx, "/open", t));
    cJSON_Delete(expect_200_token(fx, "/open", t));
    free(t);
    c = counts(fx);
    assert_int_equal(c.jwks_hits, 3);
    assert_int_equal(c.st.keys, 3);
}

static void rate_limits_refetches_for_random_kids(void **state)
{
    fx_t *fx = *state;
    use_authz(fx, 3600 * 1000);
    char *ok = good(fx, rsa1, NULL);
    cJSON_Delete(expect_200_token(fx, "/open", ok));
    free(ok);
    /* A flood of tokens naming kids nobody has: refused, and the issuer
     * is not asked again. */
    for (int i = 0; i < 20; i++) {
        rw_jwk_t *k;
        assert_int_equal(rw_jwk_generate(RW_JWK_EC_P256, &k), 0);
        char *t = good(fx, k, NULL);
        expect_401_token(fx, t, "key id does not match");
        free(t);
        rw_jwk_free(k);
    }
    counts_t c = counts(fx);
    assert_int_equal(c.jwks_hits, 1);
    assert_int_equal(c.discovery_hits, 1);
    assert_int_equal(c.st.fetches, 1);
    assert_int_equal(c.st.fetches_skipped, 20);
}

static void keeps_the_key_set_when_a_refetch_fails(void **state)
{
    fx_t *fx = *state;
    use_authz(fx, RW_JWT_AUTHZ_NO_MIN_INTERVAL);
    char *ok = good(fx, rsa1, NULL);
    cJSON_Delete(expect_200_token(fx, "/open", ok));
    free(ok);
    publish(fx, NULL, 0, true); /* the issuer's JWKS endpoint now fails */
    char *t = good(fx, rsa2, NULL);
    expect_401_token(fx, t, "key id does not match");
    free(t);
    counts_t c = counts(fx);
    assert_int_equal(c.jwks_hits, 2);
    assert_int_equal(c.st.fetch_failures, 1);
    assert_int_equal(c.st.keys, 2);
    /* A fresh token (not cached) from a known key still verifies. */
    t = good(fx, ec1, "{\"jti\":\"fresh\"}");
    cJSON_Delete(expect_200_token(fx, "/open", t));
    free(t);
}

static void answers_500_while_no_key_set_was_ever_fetched(void **state)
{
    fx_t *fx = *state;
    publish(fx, NULL, 0, true);
    use_authz(fx, RW_JWT_AUTHZ_NO_MIN_INTERVAL);
    char *t = good(fx, rsa1, NULL);
    rw_test_response_t r;
    assert_int_equal(call_bearer(fx, "/open", t, &r), 0);
    assert_int_equal(r.status, 500);
    assert_string_equal(r.body, "{\"message\":\"Internal Server Error\"}");
    rw_test_response_free(&r);
    /* Once the issuer answers again, the next request fetches and passes. */
    publish(fx, (rw_jwk_t *[]){rsa1}, 1, false);
    cJSON_Delete(expect_200_token(fx, "/open", t));
    free(t);
}

static void forgets_tokens_of_withdrawn_keys(void **state)
{
    fx_t *fx = *state;
    use_authz(fx, RW_JWT_AUTHZ_NO_MIN_INTERVAL);
    char *old = good(fx, rsa1, NULL);
    cJSON_Delete(expect_200_token(fx, "/open", old));
    /* rsa1 is withdrawn, rsa2 comes in; a token from rsa2 triggers the
     * refetch that installs the new set. */
    publish(fx, (rw_jwk_t *[]){rsa2}, 1, false);
    char *t = good(fx, rsa2, NULL);
    cJSON_Delete(expect_200_token(fx, "/open", t));
    free(t);
    /* The cached verdict for rsa1's token is gone with the key. */
    expect_401_token(fx, old, "key id does not match");
    free(old);
}

static void verifies_a_repeated_token_once(void **state)
{
    fx_t *fx = *state;
    use_authz(fx, 3600 * 1000);
    char *t = good(fx, rsa1, "{\"scope\":\"admin\"}");
    for (int i = 0; i < 10; i++)
        cJSON_Delete(expect_200_token(fx, i % 2 ? "/open" : "/scoped", t));
    counts_t c = counts(fx);
    assert_int_equal(c.st.verifications, 1);
    assert_int_equal(c.st.cache_hits, 9);
    assert_int_equal(c.st.cached_tokens, 1);
    /* The cached token still meets each route's scopes afresh. */
    rw_test_response_t r;
    free(t);
    t = good(fx, rsa1, "{\"scope\":\"reels/read\"}");
    cJSON_Delete(expect_200_token(fx, "/open", t));
    assert_int_equal(call_bearer(fx, "/scoped", t, &r), 0);
    assert_int_equal(r.status, 403);
    rw_test_response_free(&r);
    free(t);
    c = counts(fx);
    assert_int_equal(c.st.verifications, 2);
    assert_int_equal(c.st.cache_hits, 10);
    /* Refused tokens are never cached. */
    t = token(rsa1, fx->issuer, "someone-else", -10, 3600, NULL);
    expect_401_token(fx, t, "audience");
    expect_401_token(fx, t, "audience");
    free(t);
    c = counts(fx);
    assert_int_equal(c.st.verifications, 4);
}

/* ---- without HTTP: the API on a loop of the test's own ------------------- */

static rw_http_req_t fake_req(rw_http_header_t *h, size_t n, const char *query)
{
    rw_http_req_t req;
    memset(&req, 0, sizeof req);
    req.method = "GET";
    req.path = "/x";
    req.path_len = 2;
    req.query = query;
    req.query_len = strlen(query);
    req.headers = h;
    req.n_headers = n;
    return req;
}

static void never_called(rw_jwt_authz_result_t *res, void *arg)
{
    fail_msg("unexpected asynchronous answer");
}

static void reads_a_jwks_file_and_query_string_sources(void **state)
{
    char dir[512], path[600];
    assert_int_equal(rw_test_tmpdir(dir, sizeof dir, "rwjwks"), 0);
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    char *json = jwks_of((rw_jwk_t *[]){ec1}, 1);
    FILE *f = fopen(path, "w");
    fputs(json, f);
    fclose(f);
    free(json);

    uv_loop_t loop;
    uv_loop_init(&loop);
    static const char *const sources[] = {"$request.querystring.access_token",
                                          "$request.header.X-Token"};
    rw_jwt_authz_config_t cfg = {.issuer = "https://idp.example/pool",
                                 .audiences = audiences,
                                 .n_audiences = 1,
                                 .identity_sources = sources,
                                 .n_identity_sources = 2,
                                 .jwks_file = path};
    rw_jwt_authz_t *a = NULL;
    char why[256];
    assert_int_equal(rw_jwt_authz_new(&loop, &cfg, &a, why, sizeof why), 0);
    char *tok = token(ec1, "https://idp.example/pool", AUD, -10, 3600, NULL);

    rw_jwt_authz_result_t res;
    char *q = tu_printf("x=1&access_token=%s&y=2", tok);
    rw_http_req_t req = fake_req(NULL, 0, q);
    assert_int_equal(rw_jwt_authz_check(a, &req, NULL, 0, &res, never_called, NULL),
                     RW_JWT_AUTHZ_DONE);
    assert_int_equal(res.http_status, 200);
    assert_string_equal(rw_jwt_principal_sub(res.principal), "user-1");
    rw_jwt_authz_result_release(&res);
    free(q);
    /* The second source, when the first is absent. */
    rw_http_header_t h = {"x-token", 7, tok, strlen(tok)};
    req = fake_req(&h, 1, "");
    assert_int_equal(rw_jwt_authz_check(a, &req, NULL, 0, &res, never_called, NULL),
                     RW_JWT_AUTHZ_DONE);
    assert_int_equal(res.http_status, 200);
    rw_jwt_authz_result_release(&res);
    /* The query parameter given twice. */
    q = tu_printf("access_token=%s&access_token=%s", tok, tok);
    req = fake_req(NULL, 0, q);
    assert_int_equal(rw_jwt_authz_check(a, &req, NULL, 0, &res, never_called, NULL),
                     RW_JWT_AUTHZ_DONE);
    assert_int_equal(res.http_status, 401);
    assert_null(res.principal);
    free(q);
    /* Authorization is not a source of this authorizer. */
    char *bearer = tu_printf("Bearer %s", tok);
    rw_http_header_t auth = {"Authorization", 13, bearer, strlen(bearer)};
    req = fake_req(&auth, 1, "");
    assert_int_equal(rw_jwt_authz_check(a, &req, NULL, 0, &res, never_called, NULL),
                     RW_JWT_AUTHZ_DONE);
    assert_int_equal(res.http_status, 401);
    assert_string_equal(res.www_authenticate, "Bearer");
    free(bearer);
    free(tok);

    rw_jwt_authz_stats_t st;
    rw_jwt_authz_stats(a, &st);
    assert_int_equal(st.fetches, 1);
    assert_int_equal(st.keys, 1);
    rw_jwt_authz_close(a, NULL, NULL);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    rw_test_rmtree(dir);
}

static void refuses_bad_configurations(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_jwt_authz_t *a = NULL;
    char why[256];
    static const char *const bad_source[] = {"$request.cookie.token"};
    rw_jwt_authz_config_t base = {.issuer = "https://idp.example", .audiences = audiences,
                                  .n_audiences = 1, .jwks_uri = "https://idp.example/keys"};
    rw_jwt_authz_config_t c = base;
    c.issuer = NULL;
    assert_int_equal(rw_jwt_authz_new(&loop, &c, &a, why, sizeof why), RW_ECONFIG);
    assert_non_null(strstr(why, "issuer"));
    c = base;
    c.n_audiences = 0;
    assert_int_equal(rw_jwt_authz_new(&loop, &c, &a, why, sizeof why), RW_ECONFIG);
    assert_non_null(strstr(why, "audience"));
    c = base;
    c.identity_sources = bad_source;
    c.n_identity_sources = 1;
    assert_int_equal(rw_jwt_authz_new(&loop, &c, &a, why, sizeof why), RW_ECONFIG);
    assert_non_null(strstr(why, "$request.cookie.token"));
    c = base;
    c.jwks_uri = "ftp://idp.example/keys";
    assert_int_equal(rw_jwt_authz_new(&loop, &c, &a, why, sizeof why), RW_ECONFIG);
    c = base;
    c.jwks_uri = NULL;
    c.issuer = "urn:not-a-url";
    assert_int_equal(rw_jwt_authz_new(&loop, &c, &a, why, sizeof why), RW_ECONFIG);
    assert_non_null(strstr(why, "discovered"));
    c = base;
    c.jwks_file = "/nonexistent/jwks.json";
    assert_int_equal(rw_jwt_authz_new(&loop, &c, &a, why, sizeof why), RW_ECONFIG);
    assert_non_null(strstr(why, "/nonexistent/jwks.json"));
    assert_null(a);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    assert_int_equal(rw_jwk_generate(RW_JWK_RSA2048, &rsa1), 0);
    assert_int_equal(rw_jwk_generate(RW_JWK_EC_P256, &ec1), 0);
    assert_int_equal(rw_jwk_generate(RW_JWK_RSA2048, &rsa2), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(allows_a_valid_token_with_api_gateways_event_shape, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(refuses_every_attack_of_the_matrix, setup, teardown),
        cmocka_unit_test_setup_teardown(refetches_on_an_unknown_kid_then_refuses, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rate_limits_refetches_for_random_kids, setup, teardown),
        cmocka_unit_test_setup_teardown(keeps_the_key_set_when_a_refetch_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(answers_500_while_no_key_set_was_ever_fetched, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(forgets_tokens_of_withdrawn_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(verifies_a_repeated_token_once, setup, teardown),
        cmocka_unit_test(reads_a_jwks_file_and_query_string_sources),
        cmocka_unit_test(refuses_bad_configurations),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    rw_jwk_free(rsa1);
    rw_jwk_free(ec1);
    rw_jwk_free(rsa2);
    return failed;
}
