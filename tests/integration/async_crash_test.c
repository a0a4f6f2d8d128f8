/* A kill -9 of reelway at any moment loses nothing: an Event invocation whose
 * function was mid-work when every reelway process (supervisor, workers,
 * function environments) was SIGKILLed is delivered again after a restart and
 * completes exactly once. Also: a batch queued just before the crash all
 * completes, each message once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rw_http_client.h"
#include "rw_test.h"

#define ADMIN "crash-test-admin-key"

static struct {
    char dir[512];
    char db[96];
    rw_test_proc_t proc;
    int port;
    int starts;
} S;

static void start_reelway(void)
{
    char log[700], port_file[700], tpl[1024], uri_env[1024];
    snprintf(log, sizeof log, "%s/reelway-%d.log", S.dir, S.starts);
    snprintf(port_file, sizeof port_file, "%s/port-%d", S.dir, S.starts++);
    snprintf(tpl, sizeof tpl, "%s/tests/integration/async/template.yaml", getenv("RW_SOURCE_DIR"));
    snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", rw_test_mongo_uri());
    /* Short leases so that redelivery after the crash comes within seconds:
     * init 2 s + Timeout 5 s + margin 0.5 s. */
    char *argv[] = {(char *)rw_test_reelway_bin(), "serve", "--port", "0", "--port-file",
                    port_file, "--data-dir", S.dir, "--workers", "2", "--template", tpl,
                    "--admin-key", ADMIN, "--db-name", S.db, "--init-timeout-ms", "2000",
                    "--async-lease-margin-ms", "500", "--async-retry-base-ms", "200", NULL};
    const char *set[] = {uri_env, NULL};
    assert_int_equal(rw_test_proc_start_group(&S.proc, argv, set, NULL, log), 0);
    S.port = rw_test_wait_int_file(port_file, 60000);
    assert_true(S.port > 0);
}

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    if (rw_test_tmpdir(S.dir, sizeof S.dir, "rw-crash") != 0)
        return -1;
    rw_test_db_name(S.db, sizeof S.db, "crash");
    return 0;
}

static int teardown(void **state)
{
    rw_test_proc_kill_group(&S.proc);
    rw_test_drop_db(rw_test_mongo_uri(), S.db);
    rw_test_rmtree(S.dir);
    return 0;
}

static int64_t count(const char *collection, const char *request_id)
{
    mongoc_client_t *c = mongoc_client_new(rw_test_mongo_uri());
    mongoc_collection_t *coll = mongoc_client_get_collection(c, S.db, collection);
    const char *field = !strcmp(collection, "rw_queue") ? "_id" : "request_id";
    bson_t *filter = request_id ? BCON_NEW(field, BCON_UTF8(request_id)) : bson_new();
    bson_error_t error;
    int64_t n = mongoc_collection_count_documents(coll, filter, NULL, NULL, NULL, &error);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(c);
    return n;
}

static bool wait_count(const char *collection, const char *id, int64_t want, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (count(collection, id) == want)
            return true;
        rw_test_sleep_ms(50);
    }
    return count(collection, id) == want;
}

/* Queues an Event invocation of Record; returns its request id in id. */
static void enqueue(int sleep_ms, char id[64])
{
    char body[256];
    int n = snprintf(body, sizeof body,
                     "{\"db\":\"%s\",\"collection\":\"completions\",\"started\":\"deliveries\","
                     "\"sleep_ms\":%d}",
                     S.db, sleep_ms);
    rw_test_response_t r;
    assert_int_equal(rw_test_http(S.port, "POST", "/2015-03-31/functions/Record/invocations",
                                  "X-Reelway-Admin-Key: " ADMIN "\r\nX-Amz-Invocation-Type: Event\r\n",
                                  body, (size_t)n, &r),
                     0);
    assert_int_equal(r.status, 202);
    assert_non_null(rw_test_header(&r, "x-amzn-requestid", id, 64));
    rw_test_response_free(&r);
}

static void kill_9_mid_work_then_restart(void **state)
{
    start_reelway();
    char id[64];
    enqueue(3000, id);
    /* The function has started its work (the delivery is recorded)... */
    assert_true(wait_count("deliveries", id, 1, 30000));
    assert_int_equal(count("completions", id), 0);
    /* ...and everything dies at once, as in a power cut. */
    rw_test_proc_kill_group(&S.proc);
    assert_int_equal(count("completions", id), 0);
    assert_int_equal(count("rw_queue", id), 1); /* nothing was lost */

    start_reelway();
    /* Delivered again once the crashed delivery's lease ends, and completed. */
    assert_true(wait_count("completions", id, 1, 60000));
    assert_true(wait_count("rw_queue", id, 0, 30000));
    /* Exactly once to completion, after two deliveries; and no more after. */
    rw_test_sleep_ms(1500);
    assert_int_equal(count("completions", id), 1);
    assert_int_equal(count("deliveries", id), 2);
    rw_test_proc_stop(&S.proc, SIGTERM, 30000);
}

static void batch_queued_before_a_crash_all_completes_once(void **state)
{
    start_reelway();
    enum { N = 6 };
    char ids[N][64];
    for (int i = 0; i < N; i++)
        enqueue(1500, ids[i]);
    /* Some are running, some still waiting, when everything dies. */
    assert_true(wait_count("deliveries", NULL, 1, 30000) || count("deliveries", NULL) > 1);
    rw_test_proc_kill_group(&S.proc);
    start_reelway();
    for (int i = 0; i < N; i++) {
        assert_true(wait_count("completions", ids[i], 1, 90000));
        assert_true(wait_count("rw_queue", ids[i], 0, 30000));
    }
    rw_test_sleep_ms(1500);
    for (int i = 0; i < N; i++)
        assert_int_equal(count("completions", ids[i]), 1);
    int status = rw_test_proc_stop(&S.proc, SIGTERM, 30000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kill_9_mid_work_then_restart),
        cmocka_unit_test(batch_queued_before_a_crash_all_completes_once),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
