/* kill -9 of a consumer mid-processing loses nothing: a real consumer process
 * (rw_queue_consumer) records each delivery in MongoDB, completes three
 * messages and stalls on the next two; it is killed with SIGKILL there, a new
 * consumer process starts, and every message of the batch must complete
 * exactly once, the two interrupted ones after a second delivery. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "queue.h"
#include "rw_test.h"

#define BATCH 8
#define FIRST_COMPLETIONS 3
#define CONCURRENCY 2

typedef struct {
    const char *uri;
    char db[96];
    mongoc_client_t *client;
    pid_t children[2];
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    fx->uri = rw_test_mongo_uri();
    rw_test_db_name(fx->db, sizeof fx->db, "qkill");
    fx->client = mongoc_client_new(fx->uri);
    if (!fx->client)
        return -1;
    mongoc_client_set_error_api(fx->client, MONGOC_ERROR_API_VERSION_2);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    /* A test that failed halfway may leave a consumer running: it was ours. */
    for (int i = 0; i < 2; i++)
        if (fx->children[i] > 0) {
            kill(fx->children[i], SIGKILL);
            waitpid(fx->children[i], NULL, 0);
        }
    mongoc_database_t *db = mongoc_client_get_database(fx->client, fx->db);
    bson_error_t error;
    mongoc_database_drop(db, &error);
    mongoc_database_destroy(db);
    mongoc_client_destroy(fx->client);
    free(fx);
    return 0;
}

static int64_t count(fx_t *fx, const char *name, const bson_t *filter)
{
    mongoc_collection_t *c = mongoc_client_get_collection(fx->client, fx->db, name);
    bson_t empty = BSON_INITIALIZER;
    bson_error_t error;
    int64_t n =
        mongoc_collection_count_documents(c, filter ? filter : &empty, NULL, NULL, NULL, &error);
    mongoc_collection_destroy(c);
    return n;
}

static pid_t start_consumer(fx_t *fx, const char *complete_max, const char *owner)
{
    char *argv[] = {(char *)RW_QUEUE_CONSUMER, (char *)fx->uri, fx->db, "recorder", "2", "20",
                    (char *)complete_max,      (char *)owner,   NULL};
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void dump(fx_t *fx);

/* Polls the database every 50 ms until pred holds, for at most timeout_ms. */
static bool wait_for(fx_t *fx, bool (*pred)(fx_t *), int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        if (pred(fx))
            return true;
        usleep(50 * 1000);
    }
    if (pred(fx))
        return true;
    dump(fx);
    return false;
}

/* A has completed its budget and holds two deliveries, recorded but not done. */
static bool a_stalled(fx_t *fx)
{
    bson_t *inflight_a = BCON_NEW("state", BCON_UTF8("inflight"), "owner", BCON_UTF8("consumer-a"));
    bool ok = count(fx, "completions", NULL) == FIRST_COMPLETIONS &&
              count(fx, "deliveries", NULL) == FIRST_COMPLETIONS + CONCURRENCY &&
              count(fx, RW_QUEUE_COLLECTION, inflight_a) == CONCURRENCY &&
              count(fx, RW_QUEUE_COLLECTION, NULL) == BATCH - FIRST_COMPLETIONS;
    bson_destroy(inflight_a);
    return ok;
}

static bool all_done(fx_t *fx)
{
    return count(fx, RW_QUEUE_COLLECTION, NULL) == 0 && count(fx, "completions", NULL) >= BATCH;
}

/* Prints what the database holds, so a failed wait says why. */
static void dump(fx_t *fx)
{
    const char *colls[] = {RW_QUEUE_COLLECTION, RW_QUEUE_CLAIMS, "deliveries", "completions"};
    for (size_t i = 0; i < sizeof colls / sizeof colls[0]; i++) {
        mongoc_collection_t *c = mongoc_client_get_collection(fx->client, fx->db, colls[i]);
        bson_t empty = BSON_INITIALIZER;
        mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &empty, NULL, NULL);
        const bson_t *doc;
        while (mongoc_cursor_next(cur, &doc)) {
            char *json = bson_as_relaxed_extended_json(doc, NULL);
            fprintf(stderr, "%s: %s\n", colls[i], json);
            bson_free(json);
        }
        mongoc_cursor_destroy(cur);
        mongoc_collection_destroy(c);
    }
}

/* Waits up to timeout_ms for pid to exit; returns its status, or -1. */
static int wait_exit(pid_t pid, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        int status;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        usleep(20 * 1000);
    }
    return -1;
}

static int records(fx_t *fx, const char *coll, const char *id, int attempt)
{
    bson_t *filter = attempt ? BCON_NEW("msg", BCON_UTF8(id), "attempt", BCON_INT32(attempt))
                             : BCON_NEW("msg", BCON_UTF8(id));
    int n = (int)count(fx, coll, filter);
    bson_destroy(filter);
    return n;
}

static void kill_9_mid_processing_loses_nothing_and_completes_once(void **state)
{
    fx_t *fx = *state;
    char ids[BATCH][RW_QUEUE_ID_LEN], why[256];
    for (int i = 0; i < BATCH; i++) {
        char payload[32];
        int n = snprintf(payload, sizeof payload, "{\"n\":%d}", i);
        /* A 1.5 s lease: the length of the handler (20 ms) plus a margin. */
        rw_queue_msg_t msg = {.queue = "lambda-async",
                              .function = "recorder",
                              .payload = payload,
                              .len = (size_t)n,
                              .visibility_ms = 1500};
        rw_queue_opts_t qopts = {.db_name = fx->db};
        assert_int_equal(rw_queue_enqueue_sync(fx->client, &qopts, &msg, ids[i], why, sizeof why),
                         0);
    }

    fx->children[0] = start_consumer(fx, "3", "consumer-a");
    assert_true(fx->children[0] > 0);
    assert_true(wait_for(fx, a_stalled, 30000));
    assert_int_equal(kill(fx->children[0], SIGKILL), 0);
    int status = wait_exit(fx->children[0], 10000);
    fx->children[0] = 0;
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);

    /* Which two it died holding: delivered, never completed. */
    const char *interrupted[CONCURRENCY];
    int n_interrupted = 0;
    for (int i = 0; i < BATCH; i++)
        if (records(fx, "deliveries", ids[i], 0) == 1 && records(fx, "completions", ids[i], 0) == 0)
            interrupted[n_interrupted++] = ids[i];
    assert_int_equal(n_interrupted, CONCURRENCY);

    /* A new consumer process: the interrupted two come back after their lease. */
    fx->children[1] = start_consumer(fx, "-1", "consumer-b");
    assert_true(fx->children[1] > 0);
    assert_true(wait_for(fx, all_done, 60000));
    assert_int_equal(kill(fx->children[1], SIGTERM), 0);
    status = wait_exit(fx->children[1], 20000);
    fx->children[1] = 0;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* Every message of the batch completed exactly once. */
    assert_int_equal(count(fx, "completions", NULL), BATCH);
    for (int i = 0; i < BATCH; i++)
        assert_int_equal(records(fx, "completions", ids[i], 0), 1);
    /* The interrupted ones were delivered twice: first try by A, second by B. */
    for (int k = 0; k < CONCURRENCY; k++) {
        assert_int_equal(records(fx, "deliveries", interrupted[k], 0), 2);
        assert_int_equal(records(fx, "deliveries", interrupted[k], 1), 1);
        assert_int_equal(records(fx, "deliveries", interrupted[k], 2), 1);
        bson_t *by_b = BCON_NEW("msg", BCON_UTF8(interrupted[k]), "owner", BCON_UTF8("consumer-b"));
        assert_int_equal(count(fx, "completions", by_b), 1);
        bson_destroy(by_b);
    }
    /* The others once each. */
    assert_int_equal(count(fx, "deliveries", NULL), BATCH + CONCURRENCY);
    /* Nothing is left behind: no message, no record, no dead letter. */
    assert_int_equal(count(fx, RW_QUEUE_COLLECTION, NULL), 0);
    assert_int_equal(count(fx, RW_QUEUE_CLAIMS, NULL), 0);
    assert_int_equal(count(fx, RW_QUEUE_DEAD_LETTERS, NULL), 0);
}

int main(void)
{
    mongoc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(kill_9_mid_processing_loses_nothing_and_completes_once,
                                        setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    mongoc_cleanup();
    return failed;
}
