/* Lambda's Invoke API on reelway, called by the real AWS CLI (SigV4 with the
 * admin key as the secret), by `reelway invoke`, and raw: RequestResponse,
 * Event (durably queued, retried, dead-lettered), DryRun, and Lambda's errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <dirent.h>
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rw_http_client.h"
#include "rw_test.h"

#define ADMIN "invoke-test-admin-key"

static struct {
    char dir[512];
    char log[600];
    char db[96];
    rw_test_proc_t proc;
    int port;
} S;

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    if (rw_test_tmpdir(S.dir, sizeof S.dir, "rw-invoke") != 0)
        return -1;
    rw_test_db_name(S.db, sizeof S.db, "invoke");
    snprintf(S.log, sizeof S.log, "%s/reelway.log", S.dir);
    char port_file[600], tpl[1024], uri_env[1024];
    snprintf(port_file, sizeof port_file, "%s/port", S.dir);
    snprintf(tpl, sizeof tpl, "%s/tests/integration/gateway/template.yaml", getenv("RW_SOURCE_DIR"));
    snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", rw_test_mongo_uri());
    char *argv[] = {(char *)rw_test_reelway_bin(), "serve", "--port", "0", "--port-file", port_file,
                    "--data-dir", S.dir, "--workers", "2", "--template", tpl, "--admin-key", ADMIN,
                    "--db-name", S.db, "--async-retry-base-ms", "100", NULL};
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
    rw_test_drop_db(rw_test_mongo_uri(), S.db);
    rw_test_rmtree(S.dir);
    return 0;
}

/* Runs a command, its stdout into out; returns its exit status. */
static int run(char *const argv[], const char *const env[], char *out, size_t cap)
{
    char path[700];
    snprintf(path, sizeof path, "%s/cmd.out", S.dir);
    rw_test_proc_t p;
    assert_int_equal(rw_test_proc_start(&p, argv, env, NULL, path), 0);
    int status = rw_test_proc_wait(&p, 120000);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(out, 1, cap - 1, f) : 0;
    out[n] = '\0';
    if (f)
        fclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static const char *python(void)
{
    static char p[1024];
    snprintf(p, sizeof p, "%s/.reelway/runtimes/python/bin/python", getenv("RW_SOURCE_DIR"));
    return p;
}

static void aws_cli(void **state)
{
    char endpoint[64], outfile[700], out[8192];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", S.port);
    snprintf(outfile, sizeof outfile, "%s/answer.json", S.dir);
    const char *env[] = {"AWS_ACCESS_KEY_ID=reelway", "AWS_SECRET_ACCESS_KEY=" ADMIN,
                         "AWS_DEFAULT_REGION=us-east-1", "AWS_CONFIG_FILE=/dev/null",
                         "AWS_SHARED_CREDENTIALS_FILE=/dev/null", NULL};
    char *ok[] = {(char *)python(), "-m", "awscli", "lambda", "invoke", "--endpoint-url", endpoint,
                  "--function-name", "Echo", "--payload", "{\"hello\":\"world\"}", outfile, NULL};
    assert_int_equal(run(ok, env, out, sizeof out), 0);
    assert_non_null(strstr(out, "\"StatusCode\": 200"));
    FILE *f = fopen(outfile, "r");
    char answer[256] = "";
    assert_non_null(fgets(answer, sizeof answer, f));
    fclose(f);
    assert_string_equal(answer, "{\"hello\":\"world\"}");

    /* A function error: 200 with FunctionError, the error document as payload. */
    char *fails[] = {(char *)python(), "-m", "awscli", "lambda", "invoke", "--endpoint-url",
                     endpoint, "--function-name", "Fails", outfile, NULL};
    assert_int_equal(run(fails, env, out, sizeof out), 0);
    assert_non_null(strstr(out, "\"FunctionError\": \"Unhandled\""));
    f = fopen(outfile, "r");
    assert_non_null(fgets(answer, sizeof answer, f));
    fclose(f);
    assert_non_null(strstr(answer, "\"errorType\":\"Handled.Oops\""));

    /* The wrong secret, and a function that does not exist. */
    const char *bad_env[] = {"AWS_ACCESS_KEY_ID=reelway", "AWS_SECRET_ACCESS_KEY=wrong",
                             "AWS_DEFAULT_REGION=us-east-1", "AWS_CONFIG_FILE=/dev/null",
                             "AWS_SHARED_CREDENTIALS_FILE=/dev/null", NULL};
    assert_true(run(ok, bad_env, out, sizeof out) != 0);
    assert_non_null(strstr(out, "AccessDeniedException"));
    char *ghost[] = {(char *)python(), "-m", "awscli", "lambda", "invoke", "--endpoint-url",
                     endpoint, "--function-name", "Ghost", outfile, NULL};
    assert_true(run(ghost, env, out, sizeof out) != 0);
    assert_non_null(strstr(out, "ResourceNotFoundException"));
}

static void raw_api_errors_and_dry_run(void **state)
{
    rw_test_response_t r;
    const char *path = "/2015-03-31/functions/Echo/invocations";
    char v[128];
    assert_int_equal(rw_test_http(S.port, "POST", path, NULL, "{}", 2, &r), 0);
    assert_int_equal(r.status, 403);
    assert_string_equal(rw_test_header(&r, "x-amzn-errortype", v, sizeof v), "AccessDeniedException");
    rw_test_response_free(&r);
    const char *key = "X-Reelway-Admin-Key: " ADMIN "\r\n";
    char h[256];
    snprintf(h, sizeof h, "%sX-Amz-Invocation-Type: DryRun\r\n", key);
    assert_int_equal(rw_test_http(S.port, "POST", path, h, "{}", 2, &r), 0);
    assert_int_equal(r.status, 204);
    rw_test_response_free(&r);
    assert_int_equal(rw_test_http(S.port, "POST", path, key, "{not json", 9, &r), 0);
    assert_int_equal(r.status, 400);
    assert_string_equal(rw_test_header(&r, "x-amzn-errortype", v, sizeof v),
                        "InvalidRequestContentException");
    rw_test_response_free(&r);
    snprintf(h, sizeof h, "%sX-Amz-Invocation-Type: Sometimes\r\n", key);
    assert_int_equal(rw_test_http(S.port, "POST", path, h, "{}", 2, &r), 0);
    assert_int_equal(r.status, 400);
    rw_test_response_free(&r);
    assert_int_equal(rw_test_http(S.port, "GET", path, key, NULL, 0, &r), 0);
    assert_int_equal(r.status, 405);
    rw_test_response_free(&r);
    /* Over Lambda's 6 MB synchronous limit. */
    size_t n = 6 * 1024 * 1024 + 10;
    char *big = malloc(n);
    memset(big, ' ', n);
    big[0] = '"';
    big[n - 1] = '"';
    assert_int_equal(rw_test_http(S.port, "POST", path, key, big, n, &r), 0);
    assert_int_equal(r.status, 413);
    assert_string_equal(rw_test_header(&r, "x-amzn-errortype", v, sizeof v),
                        "RequestTooLargeException");
    rw_test_response_free(&r);
    free(big);
}

static void reelway_invoke_cli(void **state)
{
    char evfile[700], out[4096], port[16];
    snprintf(evfile, sizeof evfile, "%s/event.json", S.dir);
    FILE *f = fopen(evfile, "w");
    fputs("{\"from\":\"cli\"}", f);
    fclose(f);
    snprintf(port, sizeof port, "%d", S.port);
    const char *env[] = {"REELWAY_ADMIN_KEY=" ADMIN, NULL};
    char *ok[] = {(char *)rw_test_reelway_bin(), "invoke", "Echo", "--event", evfile, "--port", port,
                  NULL};
    assert_int_equal(run(ok, env, out, sizeof out), 0);
    assert_string_equal(out, "{\"from\":\"cli\"}\n");
    char *crash[] = {(char *)rw_test_reelway_bin(), "invoke", "Crash", "--port", port, NULL};
    assert_int_equal(run(crash, env, out, sizeof out), 1);
    assert_non_null(strstr(out, "Runtime.ExitError"));
}

/* ---- Event invocations ------------------------------------------------------------ */

static int64_t count_id(const char *collection, const char *id)
{
    mongoc_client_t *c = mongoc_client_new(rw_test_mongo_uri());
    mongoc_collection_t *coll = mongoc_client_get_collection(c, S.db, collection);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_error_t error;
    int64_t n = mongoc_collection_count_documents(coll, filter, NULL, NULL, NULL, &error);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(c);
    return n;
}

static int starts_for(const char *fn, const char *id)
{
    char dir[700], needle[128];
    snprintf(dir, sizeof dir, "%s/logs/%s", S.dir, fn);
    snprintf(needle, sizeof needle, "START RequestId: %s ", id);
    int n = 0;
    DIR *d = opendir(dir);
    struct dirent *ent;
    while (d && (ent = readdir(d))) {
        if (ent->d_name[0] == '.')
            continue;
        char path[1024], line[1024];
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

static void event_invocations_are_queued_retried_and_dead_lettered(void **state)
{
    rw_test_response_t r;
    const char *h = "X-Reelway-Admin-Key: " ADMIN "\r\nX-Amz-Invocation-Type: Event\r\n";
    char id[64];
    /* Succeeds: 202 once stored, then run once and gone from the queue. */
    assert_int_equal(rw_test_http(S.port, "POST", "/2015-03-31/functions/Echo/invocations", h,
                                  "{\"async\":1}", 11, &r),
                     0);
    assert_int_equal(r.status, 202);
    assert_non_null(rw_test_header(&r, "x-amzn-requestid", id, sizeof id));
    rw_test_response_free(&r);
    bool done = false;
    for (int i = 0; i < 500 && !done; i++) {
        done = starts_for("Echo", id) == 1 && count_id("rw_queue", id) == 0;
        if (!done)
            rw_test_sleep_ms(20);
    }
    assert_true(done);

    /* Fails every time: Lambda's three attempts, then the dead-letter store. */
    assert_int_equal(rw_test_http(S.port, "POST", "/2015-03-31/functions/Fails/invocations", h,
                                  "{}", 2, &r),
                     0);
    assert_int_equal(r.status, 202);
    assert_non_null(rw_test_header(&r, "x-amzn-requestid", id, sizeof id));
    rw_test_response_free(&r);
    done = false;
    for (int i = 0; i < 1000 && !done; i++) {
        done = count_id("rw_dead_letters", id) == 1 && count_id("rw_queue", id) == 0;
        if (!done)
            rw_test_sleep_ms(20);
    }
    assert_true(done);
    assert_int_equal(starts_for("Fails", id), 3);
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
        cmocka_unit_test(aws_cli),
        cmocka_unit_test(raw_api_errors_and_dry_run),
        cmocka_unit_test(reelway_invoke_cli),
        cmocka_unit_test(event_invocations_are_queued_retried_and_dead_lettered),
        cmocka_unit_test(shutdown_is_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
