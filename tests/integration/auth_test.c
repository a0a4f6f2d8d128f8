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
#include <unistd.h>

#include "rw_http_client.h"
#include "rw_test.h"

static struct {
    char dir[512];
    char log[600];
    rw_test_proc_t proc;
    int port;
} S;

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    if (rw_test_tmpdir(S.dir, sizeof S.dir, "rw-auth") != 0)
        return -1;
    snprintf(S.log, sizeof S.log, "%s/reelway.log", S.dir);
    char port_file[600], tpl[1024], uri_env[1024];
    snprintf(port_file, sizeof port_file, "%s/port", S.dir);
    snprintf(tpl, sizeof tpl, "%s/tests/integration/auth/template.yaml", getenv("RW_SOURCE_DIR"));
    snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", rw_test_mongo_uri());
    /* One worker: its authorizer cache is the one being counted. */
    char *argv[] = {(char *)rw_test_reelway_bin(), "serve", "--port", "0", "--port-file", port_file,
                    "--data-dir", S.dir, "--workers", "1", "--template", tpl, NULL};
    const char *set[] = {uri_env, NULL};
    if (rw_test_proc_start(&S.proc, argv, set, NULL, S.log) != 0)
        return -1;
    S.port = rw_test_wait_int_file(port_file, 60000);
    return S.port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    int status = rw_test_proc_stop(&S.proc, SIGTERM, 30000);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    rw_test_rmtree(S.dir);
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
    int before = log_count("TokenAuthorizer", "authorizing");
    assert_int_equal(call("GET", "/ops/things/1", NULL, &r), 401);
    expect_message(&r, "\"Unauthorized\"");
    rw_test_response_free(&r);
    assert_int_equal(call("GET", "/ops/things/1", "Authorization: Basic Zm9vOmJhcg==\r\n", &r), 401);
    rw_test_response_free(&r);
    assert_int_equal(call("GET", "/ops/things/1", "Authorization: Bearer UPPER\r\n", &r), 401);
    rw_test_response_free(&r);
    rw_test_sleep_ms(100);
    assert_int_equal(log_count("TokenAuthorizer", "authorizing"), before);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(token_authorizer_allows_with_context),
        cmocka_unit_test(cached_policy_is_evaluated_per_method),
        cmocka_unit_test(deny_unauthorized_and_failures),
        cmocka_unit_test(identity_checked_before_the_authorizer_runs),
        cmocka_unit_test(http_api_simple_responses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
