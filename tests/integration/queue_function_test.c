/* The queue delivering to real function processes through the environment
 * manager (rw_queue_invoke_function): a Lambda custom runtime in shell that
 * succeeds, fails, crashes or outlasts its timeout as each event asks. Each
 * outcome must land where Lambda's asynchronous invocations would put it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "functions.h"
#include "queue.h"
#include "rw_test.h"

typedef struct {
    uv_loop_t loop;
    const char *uri;
    char db[96];
    char dir[256];
    char record_file[300];
    mongoc_client_pool_t *pool;
    mongoc_client_t *client;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    fx->uri = rw_test_mongo_uri();
    rw_test_db_name(fx->db, sizeof fx->db, "qfn");
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof fx->dir, "%s/rw-qfn-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(fx->record_file, sizeof fx->record_file, "%s/ids", fx->dir);
    mongoc_uri_t *uri = mongoc_uri_new(fx->uri);
    fx->pool = mongoc_client_pool_new(uri);
    mongoc_uri_destroy(uri);
    mongoc_client_pool_set_error_api(fx->pool, MONGOC_ERROR_API_VERSION_2);
    fx->client = mongoc_client_new(fx->uri);
    mongoc_client_set_error_api(fx->client, MONGOC_ERROR_API_VERSION_2);
    uv_loop_init(&fx->loop);
    *state = fx;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    for (int i = 0; i < 100 && uv_run(&fx->loop, UV_RUN_NOWAIT) != 0; i++)
        uv_sleep(10);
    int rc = uv_loop_close(&fx->loop);
    rw_test_drop_db(fx->uri, fx->db);
    mongoc_client_destroy(fx->client);
    mongoc_client_pool_destroy(fx->pool);
    nftw(fx->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(fx);
    assert_int_equal(rc, 0);
    return 0;
}

static int64_t count(fx_t *fx, const char *name)
{
    mongoc_collection_t *c = mongoc_client_get_collection(fx->client, fx->db, name);
    bson_t empty = BSON_INITIALIZER;
    bson_error_t error;
    int64_t n = mongoc_collection_count_documents(c, &empty, NULL, NULL, NULL, &error);
    mongoc_collection_destroy(c);
    return n;
}

static bson_t *find_doc(fx_t *fx, const char *name, const char *id)
{
    mongoc_collection_t *c = mongoc_client_get_collection(fx->client, fx->db, name);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, filter, NULL, NULL);
    const bson_t *doc;
    bson_t *out = mongoc_cursor_next(cur, &doc) ? bson_copy(doc) : NULL;
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(c);
    return out;
}

static const char *get_str(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return "";
}

static int64_t get_int(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return -1;
}

/* How many times the function saw request id (one line per invocation). */
static int invocations(fx_t *fx, const char *id)
{
    FILE *f = fopen(fx->record_file, "r");
    if (!f)
        return 0;
    char line[256];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        n += strcmp(line, id) == 0;
    }
    fclose(f);
    return n;
}

static void on_tick(uv_timer_t *t)
{
    fx_t *fx = t->data;
    if (count(fx, RW_QUEUE_COLLECTION) == 0)
        uv_timer_stop(t);
}

static void on_deadline(uv_timer_t *t)
{
    /* Firing is enough: a one-shot timer is inactive afterwards. */
}

static void on_closed(void *arg)
{
    (*(int *)arg)++;
}

static void every_outcome_of_a_real_function_lands_where_lambda_puts_it(void **state)
{
    fx_t *fx = *state;
    /* The function is a shell script speaking the Runtime API with curl. */
    if (system("command -v curl >/dev/null 2>&1") != 0)
        fail_msg("curl is needed by tests/integration/fixtures/queue_fn/bootstrap");
    char code[1024], env_record[400];
    snprintf(code, sizeof code, "%s/tests/integration/fixtures/queue_fn", getenv("RW_SOURCE_DIR"));
    snprintf(env_record, sizeof env_record, "RECORD_FILE=%s", fx->record_file);
    const char *env[] = {env_record};
    rw_fn_config_t fn = {.name = "worker",
                         .arn = "arn:aws:lambda:us-east-1:000000000000:function:worker",
                         .runtime = RW_FN_PROVIDED,
                         .runtime_name = "provided.al2023",
                         .code_path = code,
                         .memory_mb = 128,
                         .timeout_s = 1,
                         .env = env,
                         .n_env = 1,
                         .reserved_concurrency = -1};
    rw_fnmgr_opts_t mopts = {.data_dir = fx->dir, .db_uri = fx->uri};
    char why[512] = "";
    rw_fnmgr_t *m = rw_fnmgr_new(&fx->loop, &mopts, &fn, 1, why, sizeof why);
    if (!m)
        fprintf(stderr, "fnmgr: %s\n", why);
    assert_non_null(m);

    rw_queue_opts_t qopts = {.db_name = fx->db};
    struct {
        const char *payload;
        int max_attempts;
        char id[RW_QUEUE_ID_LEN];
    } msgs[] = {{"{\"do\":\"ok\"}", 3, ""},
                {"{\"do\":\"fail\"}", 2, ""},
                {"{\"do\":\"crash\"}", 1, ""},
                {"{\"do\":\"sleep\"}", 1, ""}};
    for (size_t i = 0; i < 4; i++) {
        rw_queue_msg_t msg = {.queue = "lambda-async",
                              .function = "worker",
                              .payload = msgs[i].payload,
                              .len = strlen(msgs[i].payload),
                              .max_attempts = msgs[i].max_attempts,
                              .trace_id = "Root=1-00000000-000000000000000000000000"};
        assert_int_equal(
            rw_queue_enqueue_sync(fx->client, &qopts, &msg, msgs[i].id, why, sizeof why), 0);
    }

    /* The lease: the function's 1 s timeout plus a margin. */
    rw_queue_target_t target = {.function = "worker", .concurrency = 2, .visibility_ms = 4000};
    rw_queue_consumer_opts_t copts = {.targets = &target,
                                      .n_targets = 1,
                                      .poll_min_ms = 20,
                                      .poll_max_ms = 100,
                                      .retry_base_ms = 50,
                                      .invoke = rw_queue_invoke_function,
                                      .invoke_arg = m};
    rw_queue_consumer_t *c = NULL;
    assert_int_equal(rw_queue_consumer_new(&fx->loop, fx->pool, &qopts, &copts, &c), 0);

    /* Run until the queue is empty: bounded by a timer that stops the loop. */
    uv_timer_t tick, deadline;
    uv_timer_init(&fx->loop, &tick);
    uv_timer_init(&fx->loop, &deadline);
    tick.data = fx;
    uv_timer_start(&tick, on_tick, 50, 50);
    uv_timer_start(&deadline, on_deadline, 60000, 0);
    while (uv_is_active((uv_handle_t *)&tick) && uv_is_active((uv_handle_t *)&deadline))
        uv_run(&fx->loop, UV_RUN_ONCE);
    bool drained = !uv_is_active((uv_handle_t *)&tick);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_close((uv_handle_t *)&deadline, NULL);
    int closed = 0;
    rw_queue_consumer_close(c, on_closed, &closed);
    rw_fnmgr_close(m, on_closed, &closed);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 2);
    assert_true(drained);

    /* Success: gone, run once. */
    assert_null(find_doc(fx, RW_QUEUE_DEAD_LETTERS, msgs[0].id));
    assert_int_equal(invocations(fx, msgs[0].id), 1);
    /* A function error: retried under the same request id, then dead-lettered
     * with the function's own error. */
    bson_t *dl = find_doc(fx, RW_QUEUE_DEAD_LETTERS, msgs[1].id);
    assert_non_null(dl);
    assert_int_equal(invocations(fx, msgs[1].id), 2);
    assert_int_equal(get_int(dl, "attempts"), 2);
    assert_string_equal(get_str(dl, "last_error"),
                        "{\"errorType\":\"Boom\",\"errorMessage\":\"asked to fail\"}");
    bson_destroy(dl);
    /* A crash and a timeout: failed attempts with the manager's errors. */
    dl = find_doc(fx, RW_QUEUE_DEAD_LETTERS, msgs[2].id);
    assert_non_null(dl);
    assert_non_null(strstr(get_str(dl, "last_error"), "Runtime.ExitError"));
    assert_int_equal(invocations(fx, msgs[2].id), 1);
    bson_destroy(dl);
    dl = find_doc(fx, RW_QUEUE_DEAD_LETTERS, msgs[3].id);
    assert_non_null(dl);
    assert_non_null(strstr(get_str(dl, "last_error"), "Sandbox.Timedout"));
    assert_int_equal(invocations(fx, msgs[3].id), 1);
    bson_destroy(dl);
    assert_int_equal(count(fx, RW_QUEUE_DEAD_LETTERS), 3);
    assert_int_equal(count(fx, RW_QUEUE_CLAIMS), 0);
}

int main(void)
{
    mongoc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(every_outcome_of_a_real_function_lands_where_lambda_puts_it,
                                        setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    mongoc_cleanup();
    return failed;
}
