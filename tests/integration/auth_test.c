/* Authorizers through `reelway serve`: real Lambda authorizers (Python TOKEN,
 * Node REQUEST with simple responses) run unchanged by their runtimes; allow,
 * deny, Unauthorized, failures, validation expression, cached results, and the
 * authorizer's context reaching the function's event. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "reelway/auth.h"
#include "rw_http_client.h"
#include "rw_test.h"

static struct {
    char dir[512];
    char log[600];
    rw_test_proc_t proc;
    int port;
    rw_jwk_t *key;      /* the test issuer's signing key */
    char admin_key[64];
} S;

/* A token from the test issuer: exp/nbf relative to now, scope, audience. */
static char *mint(const char *aud, long exp_in, long nbf_in, const char *scope)
{
    cJSON *c = cJSON_CreateObject();
    long now = (long)time(NULL);
    cJSON_AddStringToObject(c, "iss", "https://issuer.test");
    cJSON_AddStringToObject(c, "sub", "user-42");
    cJSON_AddStringToObject(c, "aud", aud);
    cJSON_AddNumberToObject(c, "iat", now);
    cJSON_AddNumberToObject(c, "nbf", now + nbf_in);
    cJSON_AddNumberToObject(c, "exp", now + exp_in);
    if (scope)
        cJSON_AddStringToObject(c, "scope", scope);
    char *tok = NULL;
    assert_int_equal(rw_jwt_sign(S.key, RW_JWT_ALG_INVALID, NULL, c, &tok), 0);
    cJSON_Delete(c);
    return tok;
}

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    if (rw_test_tmpdir(S.dir, sizeof S.dir, "rw-auth") != 0)
        return -1;
    snprintf(S.log, sizeof S.log, "%s/reelway.log", S.dir);
    char port_file[600], tpl[1024], uri_env[1024], overrides[700], jwks_path[600];
    snprintf(port_file, sizeof port_file, "%s/port", S.dir);
    /* The issuer's keys, served to the JWT authorizer as a file. */
    if (rw_jwk_generate(RW_JWK_EC_P256, &S.key) != 0)
        return -1;
    rw_jwks_t *keys = rw_jwks_new();
    rw_jwks_add(keys, rw_jwk_ref(S.key));
    char *jwks = NULL;
    rw_jwks_to_json(keys, &jwks);
    rw_jwks_free(keys);
    snprintf(jwks_path, sizeof jwks_path, "%s/jwks.json", S.dir);
    FILE *jf = fopen(jwks_path, "w");
    fputs(jwks, jf);
    fclose(jf);
    free(jwks);
    snprintf(overrides, sizeof overrides, "JwksFile=%s", jwks_path);
    snprintf(S.admin_key, sizeof S.admin_key, "test-admin-%d", (int)getpid());
    snprintf(tpl, sizeof tpl, "%s/tests/integration/auth/template.yaml", getenv("RW_SOURCE_DIR"));
    snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", rw_test_mongo_uri());
    /* One worker: its authorizer cache is the one being counted. */
    char *argv[] = {(char *)rw_test_reelway_bin(), "serve", "--port", "0", "--port-file", port_file,
                    "--data-dir", S.dir, "--workers", "1", "--template", tpl,
                    "--parameter-overrides", overrides, "--admin-key", S.admin_key, NULL};
    const char *set[] = {uri_env, NULL};
    if (rw_test_proc_start(&S.proc, argv, set, NULL, S.log) != 0)
        return -1;
    S.port = rw_test_wait_int_file(port_file, 60000);
    return S.port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    if (S.proc.pid > 0)
        rw_test_proc_stop(&S.proc, SIGKILL, 10000);
    rw_test_rmtree(S.dir);
    rw_jwk_free(S.key);
    return 0;
}

static int call(const char *method, const char *path, const char *headers, rw_test_response_t *r)
{
    assert_int_equal(rw_test_http(S.port, method, path, headers, NULL, 0, r), 0);
    return r->status;
}

/* Lines of a function's logs that contain needle (how often it ran for it). */
static int log_count(const char *fn, const char *needle)
{
    char dir[700];
    snprintf(dir, sizeof dir, "%s/logs/%s", S.dir, fn);
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *ent;
    while (d && (ent = readdir(d))) {
        if (ent->d_name[0] == '.')
            continue;
        char path[1024], line[2048];
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f))
            n += strstr(line, needle) != NULL;
        if (f)
            fclose(f);
    }
    if (d)
        closedir(d);
    return n;
}

static void expect_message(const rw_test_response_t *r, const char *json_message)
{
    char want[256];
    snprintf(want, sizeof want, "{\"message\":%s}", json_message);
    if (strcmp(r->body, want) != 0)
        fprintf(stderr, "body: %s\n", r->body);
    assert_string_equal(r->body, want);
}

static void token_authorizer_allows_with_context(void **state)
{
    rw_test_response_t r;
    assert_int_equal(call("GET", "/ops/things/1", "Authorization: Bearer allow\r\n", &r), 200);
    /* The wrap function answers with its event as the body. */
    cJSON *ev = cJSON_Parse(r.body);
    assert_non_null(ev);
    cJSON *az = cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "requestContext"), "authorizer");
    assert_string_equal(cJSON_GetObjectItem(az, "principalId")->valuestring, "user-1");
    assert_string_equal(cJSON_GetObjectItem(az, "tier")->valuestring, "gold");
    assert_int_equal(cJSON_GetObjectItem(az, "quota")->valueint, 7);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(az, "admin")));
    cJSON_Delete(ev);
    rw_test_response_free(&r);
}

static void cached_policy_is_evaluated_per_method(void **state)
{
    rw_test_response_t r;
    int before = log_count("TokenAuthorizer", "authorizing Bearer get-only");
    assert_int_equal(call("GET", "/ops/things/2", "Authorization: Bearer get-only\r\n", &r), 200);
    rw_test_response_free(&r);
    assert_int_equal(call("DELETE", "/ops/things/2", "Authorization: Bearer get-only\r\n", &r), 403);
    expect_message(&r, "\"User is not authorized to access this resource\"");
    rw_test_response_free(&r);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(call("GET", "/ops/things/3", "Authorization: Bearer get-only\r\n", &r),
                         200);
        rw_test_response_free(&r);
    }
    /* Seven calls inside the TTL, one invocation of the authorizer. */
    int after = 0;
    for (int tries = 0; tries < 100 && (after = log_count("TokenAuthorizer",
                                                          "authorizing Bearer get-only")) == before;
         tries++)
        rw_test_sleep_ms(20);
    assert_int_equal(after - before, 1);
}

static void deny_unauthorized_and_failures(void **state)
{
    rw_test_response_t r;
    assert_int_equal(call("GET", "/ops/things/1", "Authorization: Bearer deny\r\n", &r), 403);
    expect_message(&r, "\"User is not authorized to access this resource with an explicit deny\"");
    rw_test_response_free(&r);
    assert_int_equal(call("GET", "/ops/things/1", "Authorization: Bearer unauthorized\r\n", &r), 401);
    expect_message(&r, "\"Unauthorized\"");
    rw_test_response_free(&r);
    const char *broken[] = {"Authorization: Bearer nested\r\n", "Authorization: Bearer no-principal\r\n",
                            "Authorization: Bearer crash\r\n"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(call("GET", "/ops/things/1", broken[i], &r), 500);
        expect_message(&r, "null");
        rw_test_response_free(&r);
    }
}

static void identity_checked_before_the_authorizer_runs(void **state)
{
    rw_test_response_t r;
    assert_int_equal(call("GET", "/ops/things/1", NULL, &r), 401);
    expect_message(&r, "\"Unauthorized\"");
    rw_test_response_free(&r);
    assert_int_equal(call("GET", "/ops/things/1", "Authorization: Basic Zm9vOmJhcg==\r\n", &r), 401);
    rw_test_response_free(&r);
    assert_int_equal(call("GET", "/ops/things/1", "Authorization: Bearer UPPER\r\n", &r), 401);
    rw_test_response_free(&r);
    /* The authorizer logs every token it sees: none of these may appear. (Only
     * these tokens are counted: earlier tests' lines may still be arriving.) */
    rw_test_sleep_ms(100);
    assert_int_equal(log_count("TokenAuthorizer", "authorizing None "), 0);
    assert_int_equal(log_count("TokenAuthorizer", "authorizing  for "), 0);
    assert_int_equal(log_count("TokenAuthorizer", "authorizing Basic "), 0);
    assert_int_equal(log_count("TokenAuthorizer", "authorizing Bearer UPPER "), 0);
    /* A route with Authorizer: NONE needs nothing. */
    assert_int_equal(call("GET", "/ops/open", NULL, &r), 200);
    rw_test_response_free(&r);
}

static void http_api_simple_responses(void **state)
{
    rw_test_response_t r;
    assert_int_equal(call("GET", "/team?team=blue", "X-Key: open-sesame\r\n", &r), 200);
    cJSON *ev = cJSON_Parse(r.body);
    assert_non_null(ev);
    cJSON *lambda = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "requestContext"), "authorizer"), "lambda");
    assert_string_equal(cJSON_GetObjectItem(lambda, "team")->valuestring, "blue");
    assert_string_equal(cJSON_GetObjectItem(lambda, "routeKey")->valuestring, "GET /team");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(lambda, "hasHeaders")));
    cJSON_Delete(ev);
    rw_test_response_free(&r);
    assert_int_equal(call("GET", "/team?team=blue", "X-Key: nope\r\n", &r), 403);
    expect_message(&r, "\"Forbidden\"");
    rw_test_response_free(&r);
    assert_int_equal(call("GET", "/team?team=blue", "X-Key: boom\r\n", &r), 500);
    rw_test_response_free(&r);
    /* Either identity source missing: 401 without asking the authorizer. */
    assert_int_equal(call("GET", "/team", "X-Key: open-sesame\r\n", &r), 401);
    rw_test_response_free(&r);
    assert_int_equal(call("GET", "/team?team=blue", NULL, &r), 401);
    rw_test_response_free(&r);
}

/* ---- the JWT authorizer ------------------------------------------------------------- */

static void jwt_authorizer_through_the_gateway(void **state)
{
    rw_test_response_t r;
    char h[2048];
    char *good = mint("reels-app", 3600, 0, "profile.read openid");
    snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", good);
    assert_int_equal(call("GET", "/jwt/me", h, &r), 200);
    cJSON *ev = cJSON_Parse(r.body);
    cJSON *jwt = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "requestContext"), "authorizer"), "jwt");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(jwt, "claims"), "sub")->valuestring,
                        "user-42");
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(jwt, "scopes")) >= 1);
    cJSON_Delete(ev);
    rw_test_response_free(&r);

    /* The matrix at the gateway (the authorizer's unit test covers every case). */
    char *expired = mint("reels-app", -3600, -7200, "profile.read");
    char *future = mint("reels-app", 7200, 3600, "profile.read");
    char *wrong_aud = mint("someone-else", 3600, 0, "profile.read");
    char *no_scope = mint("reels-app", 3600, 0, "email");
    struct {
        const char *token;
        const char *path;
        int status;
    } cases[] = {
        {expired, "/jwt/me", 401},
        {future, "/jwt/me", 401},
        {wrong_aud, "/jwt/me", 401},
        {no_scope, "/jwt/me", 403},
        {no_scope, "/jwt/any", 200}, /* a route without scopes takes any token */
        {"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "/jwt/me", 401},
        {"not-a-jwt", "/jwt/me", 401},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", cases[i].token);
        assert_int_equal(call("GET", cases[i].path, h, &r), cases[i].status);
        rw_test_response_free(&r);
    }
    /* Tampered signature. */
    size_t n = strlen(good);
    good[n - 3] = good[n - 3] == 'A' ? 'B' : 'A';
    snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", good);
    assert_int_equal(call("GET", "/jwt/me", h, &r), 401);
    rw_test_response_free(&r);
    /* No token, and two Authorization headers. */
    assert_int_equal(call("GET", "/jwt/me", NULL, &r), 401);
    expect_message(&r, "\"Unauthorized\"");
    rw_test_response_free(&r);
    snprintf(h, sizeof h, "Authorization: Bearer %s\r\nAuthorization: Bearer %s\r\n", no_scope,
             no_scope);
    assert_int_equal(call("GET", "/jwt/any", h, &r), 401);
    rw_test_response_free(&r);
    free(good);
    free(expired);
    free(future);
    free(wrong_aud);
    free(no_scope);
}

/* ---- API keys and usage plans ---------------------------------------------------------- */

/* Creates a key through the admin API; returns its clear value in key. */
static void create_key(const char *name, const char *plan, char *id, char *key)
{
    char h[256], body[256];
    snprintf(h, sizeof h, "X-Reelway-Admin-Key: %s\r\nContent-Type: application/json\r\n",
             S.admin_key);
    snprintf(body, sizeof body, "{\"name\":\"%s\",\"plans\":[\"%s\"]}", name, plan);
    rw_test_response_t r;
    assert_int_equal(rw_test_http(S.port, "POST", "/_/admin/apikeys", h, body, strlen(body), &r), 0);
    if (r.status != 201)
        fprintf(stderr, "create key: %d %s\n", r.status, r.body);
    assert_int_equal(r.status, 201);
    cJSON *o = cJSON_Parse(r.body);
    strcpy(id, cJSON_GetObjectItem(o, "id")->valuestring);
    strcpy(key, cJSON_GetObjectItem(o, "key")->valuestring);
    cJSON_Delete(o);
    rw_test_response_free(&r);
}

static void api_keys_throttle_quota_and_revocation(void **state)
{
    rw_test_response_t r;
    char h[256];
    /* No key, or a key nobody issued: 403. */
    assert_int_equal(call("GET", "/keyed/data", NULL, &r), 403);
    expect_message(&r, "\"Forbidden\"");
    rw_test_response_free(&r);
    assert_int_equal(call("GET", "/keyed/data", "x-api-key: rwk_notarealkeynotarealkeynotarealkeynotareal\r\n", &r),
                     403);
    rw_test_response_free(&r);
    /* The admin API refuses without the admin key (401) and with a wrong one (403). */
    assert_int_equal(rw_test_http(S.port, "GET", "/_/admin/apikeys", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 401);
    rw_test_response_free(&r);
    assert_int_equal(rw_test_http(S.port, "GET", "/_/admin/apikeys",
                                  "X-Reelway-Admin-Key: not-the-key\r\n", NULL, 0, &r),
                     0);
    assert_int_equal(r.status, 403);
    rw_test_response_free(&r);

    /* Throttle plan: burst 2, then 429 with Retry-After. */
    char tid[32], tkey[128];
    create_key("throttled", "ThrottlePlan", tid, tkey);
    snprintf(h, sizeof h, "x-api-key: %s\r\n", tkey);
    assert_int_equal(call("GET", "/keyed/data", h, &r), 200);
    /* The event names the key that was used. */
    cJSON *ev = cJSON_Parse(r.body);
    cJSON *identity = cJSON_GetObjectItem(cJSON_GetObjectItem(ev, "requestContext"), "identity");
    assert_string_equal(cJSON_GetObjectItem(identity, "apiKeyId")->valuestring, tid);
    cJSON_Delete(ev);
    rw_test_response_free(&r);
    assert_int_equal(call("GET", "/keyed/data", h, &r), 200);
    rw_test_response_free(&r);
    assert_int_equal(call("GET", "/keyed/data", h, &r), 429);
    expect_message(&r, "\"Too Many Requests\"");
    char ra[16];
    assert_non_null(rw_test_header(&r, "retry-after", ra, sizeof ra));
    rw_test_response_free(&r);

    /* Quota plan: 3 a day, then 429 Limit Exceeded. */
    char qid[32], qkey[128];
    create_key("quota", "QuotaPlan", qid, qkey);
    snprintf(h, sizeof h, "x-api-key: %s\r\n", qkey);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(call("GET", "/keyed/data", h, &r), 200);
        rw_test_response_free(&r);
    }
    assert_int_equal(call("GET", "/keyed/data", h, &r), 429);
    expect_message(&r, "\"Limit Exceeded\"");
    rw_test_response_free(&r);

    /* Revoked: 403 at once on this worker. */
    char path[128], ah[256];
    snprintf(path, sizeof path, "/_/admin/apikeys/%s", tid);
    snprintf(ah, sizeof ah, "X-Reelway-Admin-Key: %s\r\n", S.admin_key);
    assert_int_equal(rw_test_http(S.port, "DELETE", path, ah, NULL, 0, &r), 0);
    assert_int_equal(r.status, 204);
    rw_test_response_free(&r);
    snprintf(h, sizeof h, "x-api-key: %s\r\n", tkey);
    assert_int_equal(call("GET", "/keyed/data", h, &r), 403);
    rw_test_response_free(&r);

    /* The list shows both keys, never their values. */
    assert_int_equal(rw_test_http(S.port, "GET", "/_/admin/apikeys", ah, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, tid));
    assert_non_null(strstr(r.body, qid));
    assert_null(strstr(r.body, tkey));
    assert_null(strstr(r.body, qkey));
    rw_test_response_free(&r);
}

/* Last: reelway stops cleanly on SIGTERM (exit 0, nothing left behind), and
 * no process wrote a sanitizer report. A check in the group teardown would
 * not count: cmocka ignores its result. */
static void shutdown_is_clean(void **state)
{
    int status = rw_test_proc_stop(&S.proc, SIGTERM, 30000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(rw_test_grep_tree(S.dir, "Sanitizer"), 0);
    assert_int_equal(rw_test_grep_tree(S.dir, "runtime error:"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(token_authorizer_allows_with_context),
        cmocka_unit_test(cached_policy_is_evaluated_per_method),
        cmocka_unit_test(deny_unauthorized_and_failures),
        cmocka_unit_test(identity_checked_before_the_authorizer_runs),
        cmocka_unit_test(http_api_simple_responses),
        cmocka_unit_test(jwt_authorizer_through_the_gateway),
        cmocka_unit_test(api_keys_throttle_quota_and_revocation),
        cmocka_unit_test(shutdown_is_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
