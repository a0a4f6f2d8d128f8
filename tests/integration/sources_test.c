/* Event sources through `reelway serve` (sources/template.yaml): Schedule
 * events fire each due time once across two nodes on one database, with
 * EventBridge's scheduled event or the template's Input, never when disabled;
 * SQS messages sent through the admin API (and `reelway queue send`) reach
 * their subscriber in Lambda's batches, a partial batch failure redelivers
 * only the failed messages, maxReceiveCount moves a message to its
 * dead-letter queue, and bad admin requests get JSON errors; an asynchronous
 * invocation's OnFailure, DeadLetterQueue and OnSuccess reach their queues;
 * validate and serve refuse the event types reelway does not serve.
 *
 * Time: rate(1 minute) is too slow for a test, so the nodes run with the
 * test-only --test-schedule-scale 60 (every rate is 60 times faster: a due
 * time each second). Every wait is a bounded loop on what the database
 * holds, never a fixed sleep standing in for an outcome. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rw_http_client.h"
#include "rw_test.h"

#define ADMIN "sources-test-admin-key"
#define ADMIN_H "X-Reelway-Admin-Key: " ADMIN "\r\n"
#define REGION_ACCOUNT "us-east-1:000000000000"

typedef struct node_s {
    rw_test_proc_t proc;
    int port;
    bool running;
} node_t;

static struct {
    char dir[512];
    char db[96];
    node_t nodes[2];
    int starts;
    bool passed; /* set by a test that got to its end: else its logs are kept */
} S;

static void start_node_workers(node_t *n, const char *workers)
{
    char log[700], port_file[700], data[700], tpl[1024], uri_env[1024], params[160];
    int k = S.starts++;
    snprintf(log, sizeof log, "%s/reelway-%d.log", S.dir, k);
    snprintf(port_file, sizeof port_file, "%s/port-%d", S.dir, k);
    snprintf(data, sizeof data, "%s/data-%d", S.dir, k);
    snprintf(tpl, sizeof tpl, "%s/tests/integration/sources/template.yaml",
             getenv("RW_SOURCE_DIR"));
    snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", rw_test_mongo_uri());
    snprintf(params, sizeof params, "DbName=%s", S.db);
    char *argv[] = {(char *)rw_test_reelway_bin(), "serve", "--port", "0", "--port-file",
                    port_file, "--data-dir", data, "--workers", (char *)workers, "--template", tpl,
                    "--admin-key", ADMIN, "--db-name", S.db, "--parameter-overrides", params,
                    "--init-timeout-ms", "5000", "--async-lease-margin-ms", "1000",
                    "--async-retry-base-ms", "200", "--schedule-lease-ms", "3000",
                    "--test-schedule-scale", "60", NULL};
    const char *set[] = {uri_env, NULL};
    assert_int_equal(rw_test_proc_start_group(&n->proc, argv, set, NULL, log), 0);
    n->running = true;
    n->port = rw_test_wait_int_file(port_file, 60000);
    assert_true(n->port > 0);
}

/* Two workers per node: every worker runs a scheduler and a consumer. */
static void start_node(node_t *n)
{
    start_node_workers(n, "2");
}

static void stop_node(node_t *n)
{
    if (!n->running)
        return;
    n->running = false;
    int status = rw_test_proc_stop(&n->proc, SIGTERM, 30000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    memset(&S, 0, sizeof S);
    if (rw_test_tmpdir(S.dir, sizeof S.dir, "rw-sources") != 0)
        return -1;
    rw_test_db_name(S.db, sizeof S.db, "sources");
    return 0;
}

static int teardown(void **state)
{
    for (int i = 0; i < 2; i++)
        if (S.nodes[i].running)
            rw_test_proc_kill_group(&S.nodes[i].proc);
    rw_test_drop_db(rw_test_mongo_uri(), S.db);
    if (S.passed)
        rw_test_rmtree(S.dir);
    else
        fprintf(stderr, "the failed test's logs are in %s\n", S.dir);
    return 0;
}

/* ---- the database's view ------------------------------------------------------- */

/* Every document of a collection, as a cJSON array (relaxed extended JSON). */
static cJSON *all_docs(const char *collection)
{
    mongoc_client_t *c = mongoc_client_new(rw_test_mongo_uri());
    mongoc_collection_t *coll = mongoc_client_get_collection(c, S.db, collection);
    bson_t *filter = bson_new();
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, NULL, NULL);
    cJSON *out = cJSON_CreateArray();
    const bson_t *doc;
    while (mongoc_cursor_next(cur, &doc)) {
        char *json = bson_as_relaxed_extended_json(doc, NULL);
        cJSON *j = cJSON_Parse(json);
        assert_non_null(j);
        cJSON_AddItemToArray(out, j);
        bson_free(json);
    }
    bson_error_t error;
    if (mongoc_cursor_error(cur, &error))
        fail_msg("reading %s: %s", collection, error.message);
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(c);
    return out;
}

static int n_docs(const char *collection)
{
    cJSON *docs = all_docs(collection);
    int n = cJSON_GetArraySize(docs);
    cJSON_Delete(docs);
    return n;
}

/* Messages of a queue ("sqs:NAME") still in the queue collection. */
static int queue_length(const char *queue)
{
    mongoc_client_t *c = mongoc_client_new(rw_test_mongo_uri());
    mongoc_collection_t *coll = mongoc_client_get_collection(c, S.db, "rw_queue");
    bson_t *filter = BCON_NEW("queue", BCON_UTF8(queue));
    bson_error_t error;
    int64_t n = mongoc_collection_count_documents(coll, filter, NULL, NULL, NULL, &error);
    if (n < 0)
        fail_msg("counting %s: %s", queue, error.message);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(c);
    return (int)n;
}

static bool wait_docs(const char *collection, int at_least, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 100) {
        if (n_docs(collection) >= at_least)
            return true;
        rw_test_sleep_ms(100);
    }
    return n_docs(collection) >= at_least;
}

static const char *str_at(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* The SQS records a subscriber recorded (collection of `batch` records),
 * with message_id's deliveries counted in *deliveries (when message_id). */
static int records_of(const char *collection, const char *message_id, int *deliveries)
{
    cJSON *docs = all_docs(collection);
    int records = 0, mine = 0;
    const cJSON *doc;
    cJSON_ArrayForEach(doc, docs)
    {
        const cJSON *event = cJSON_GetObjectItemCaseSensitive(doc, "event");
        const cJSON *r;
        cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(event, "Records"))
        {
            records++;
            const char *id = str_at(r, "messageId");
            if (message_id && id && !strcmp(id, message_id))
                mine++;
        }
    }
    cJSON_Delete(docs);
    if (deliveries)
        *deliveries = mine;
    return records;
}

static bool wait_deliveries(const char *collection, const char *message_id, int want,
                            int timeout_ms)
{
    int got = 0;
    for (int waited = 0; waited < timeout_ms; waited += 100) {
        records_of(collection, message_id, &got);
        if (got >= want)
            return got == want;
        rw_test_sleep_ms(100);
    }
    records_of(collection, message_id, &got);
    return got == want;
}

/* ---- Schedule ------------------------------------------------------------------ */

static void check_scheduled_event(const cJSON *event)
{
    assert_string_equal(str_at(event, "version"), "0");
    assert_string_equal(str_at(event, "detail-type"), "Scheduled Event");
    assert_string_equal(str_at(event, "source"), "aws.events");
    assert_string_equal(str_at(event, "account"), "000000000000");
    assert_string_equal(str_at(event, "region"), "us-east-1");
    assert_non_null(str_at(event, "id"));
    const char *time = str_at(event, "time");
    assert_non_null(time);
    assert_int_equal(strlen(time), 20); /* 2026-11-21T15:36:05Z */
    assert_true(time[10] == 'T' && time[19] == 'Z');
    const cJSON *resources = cJSON_GetObjectItemCaseSensitive(event, "resources");
    assert_int_equal(cJSON_GetArraySize(resources), 1);
    const cJSON *arn = cJSON_GetArrayItem(resources, 0);
    assert_true(cJSON_IsString(arn));
    assert_string_equal(arn->valuestring,
                        "arn:aws:events:" REGION_ACCOUNT ":rule/TickerTick");
    assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(event, "detail")));
    assert_null(cJSON_GetObjectItemCaseSensitive(event, "detail")->child);
}

/* Each scheduled event's time appears once among the ticks; returns how many. */
static int check_ticks_unique(void)
{
    cJSON *docs = all_docs("ticks");
    int n = cJSON_GetArraySize(docs);
    for (int i = 0; i < n; i++) {
        const cJSON *ei = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(docs, i), "event");
        check_scheduled_event(ei);
        for (int k = 0; k < i; k++) {
            const cJSON *ek =
                cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(docs, k), "event");
            if (!strcmp(str_at(ei, "time"), str_at(ek, "time")))
                fail_msg("due time %s fired twice (ids %s and %s)", str_at(ei, "time"),
                         str_at(ei, "id"), str_at(ek, "id"));
            assert_string_not_equal(str_at(ei, "id"), str_at(ek, "id"));
        }
    }
    cJSON_Delete(docs);
    return n;
}

static void schedules_fire_each_due_time_once_on_two_nodes(void **state)
{
    start_node(&S.nodes[0]);
    start_node(&S.nodes[1]);
    /* Both nodes (four schedulers) run; due times come each second. */
    assert_true(wait_docs("ticks", 5, 60000));
    int before = check_ticks_unique();
    /* The node that may hold the lease stops; the other takes over at once
     * (a clean stop ends the lease) and goes on, still once per due time. */
    stop_node(&S.nodes[0]);
    assert_true(wait_docs("ticks", before + 4, 60000));
    stop_node(&S.nodes[1]);
    int total = check_ticks_unique();
    assert_true(total >= before + 4);

    /* Input replaces the scheduled event (its "collection" sends the record
     * to "inputs"); the disabled schedule never fired. */
    cJSON *inputs = all_docs("inputs");
    assert_true(cJSON_GetArraySize(inputs) >= 1);
    const cJSON *doc;
    cJSON_ArrayForEach(doc, inputs)
    {
        const cJSON *event = cJSON_GetObjectItemCaseSensitive(doc, "event");
        assert_string_equal(str_at(event, "hello"), "world");
        assert_null(cJSON_GetObjectItemCaseSensitive(event, "detail-type"));
    }
    cJSON_Delete(inputs);
    assert_int_equal(n_docs("off"), 0);
    /* The disabled schedule's due times were recorded as skipped, none fired. */
    cJSON *firings = all_docs("rw_schedule_firings");
    cJSON_ArrayForEach(doc, firings)
    {
        if (!strcmp(str_at(doc, "schedule"), "switched-off"))
            assert_string_equal(str_at(doc, "state"), "skipped");
    }
    cJSON_Delete(firings);
    S.passed = true;
}

/* ---- SQS ----------------------------------------------------------------------- */

/* Sends body to queue through the admin API; returns the status and, on 200,
 * the MessageId and MD5OfMessageBody. */
static int send_message(int port, const char *queue, const char *headers, const char *query,
                        const char *body, char id[64], char md5[64], cJSON **error)
{
    char path[256];
    snprintf(path, sizeof path, "/_/admin/queues/%s/messages%s", queue, query ? query : "");
    rw_test_response_t r;
    assert_int_equal(rw_test_http(port, "POST", path, headers, body, body ? strlen(body) : 0, &r),
                     0);
    cJSON *o = cJSON_Parse(r.body ? r.body : "");
    /* Every answer, error or not, is JSON. */
    if (!cJSON_IsObject(o))
        fail_msg("POST %s -> %d with a body that is not a JSON object: %s", path, r.status,
                 r.body ? r.body : "(none)");
    char ct[128];
    assert_non_null(rw_test_header(&r, "content-type", ct, sizeof ct));
    assert_non_null(strstr(ct, "application/json"));
    if (r.status == 200) {
        snprintf(id, 64, "%s", str_at(o, "MessageId"));
        snprintf(md5, 64, "%s", str_at(o, "MD5OfMessageBody"));
    }
    if (error)
        *error = o;
    else
        cJSON_Delete(o);
    int status = r.status;
    rw_test_response_free(&r);
    return status;
}

static void send_ok(const char *queue, const char *body, char id[64], char md5[64])
{
    assert_int_equal(send_message(S.nodes[0].port, queue, ADMIN_H, NULL, body, id, md5, NULL),
                     200);
    assert_int_equal(strlen(id), 36);
    assert_int_equal(strlen(md5), 32);
}

/* The record of message_id in collection (the first delivery's), copied. */
static cJSON *record_of(const char *collection, const char *message_id, int *batch_size)
{
    cJSON *docs = all_docs(collection), *found = NULL;
    const cJSON *doc;
    cJSON_ArrayForEach(doc, docs)
    {
        const cJSON *records =
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(doc, "event"),
                                             "Records");
        const cJSON *r;
        cJSON_ArrayForEach(r, records)
        {
            if (!found && !strcmp(str_at(r, "messageId"), message_id)) {
                found = cJSON_Duplicate(r, true);
                *batch_size = cJSON_GetArraySize(records);
            }
        }
    }
    cJSON_Delete(docs);
    return found;
}

static void sqs_batch_has_lambdas_records(void **state)
{
    /* One worker, one consumer: partial-items gathers up to 3 for 5 s, so
     * the three arrive as one batch (with several consumers, each gathers
     * what it claimed, as Lambda's pollers do). */
    start_node_workers(&S.nodes[0], "1");
    char ids[3][64], md5s[3][64];
    const char *bodies[3] = {"{\"n\":1}", "plain text, \"quoted\"", "{\"n\":3}"};
    for (int i = 0; i < 3; i++)
        send_ok("partial-items", bodies[i], ids[i], md5s[i]);
    for (int i = 0; i < 3; i++)
        assert_true(wait_deliveries("batches", ids[i], 1, 60000));
    assert_int_equal(n_docs("batches"), 1);
    for (int i = 0; i < 3; i++) {
        int batch = 0;
        cJSON *r = record_of("batches", ids[i], &batch);
        assert_non_null(r);
        assert_int_equal(batch, 3);
        assert_string_equal(str_at(r, "body"), bodies[i]);
        assert_string_equal(str_at(r, "md5OfBody"), md5s[i]);
        assert_non_null(str_at(r, "receiptHandle"));
        assert_true(strlen(str_at(r, "receiptHandle")) > 0);
        assert_string_equal(str_at(r, "eventSource"), "aws:sqs");
        assert_string_equal(str_at(r, "eventSourceARN"),
                            "arn:aws:sqs:" REGION_ACCOUNT ":partial-items");
        assert_string_equal(str_at(r, "awsRegion"), "us-east-1");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(r, "attributes");
        assert_string_equal(str_at(a, "ApproximateReceiveCount"), "1");
        const char *sent = str_at(a, "SentTimestamp");
        assert_non_null(sent);
        assert_true(strtoll(sent, NULL, 10) > 1700000000000LL);
        assert_non_null(str_at(a, "ApproximateFirstReceiveTimestamp"));
        assert_true(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(r, "messageAttributes")));
        cJSON_Delete(r);
    }
    /* Succeeded: gone from the queue, never delivered again. */
    int left = queue_length("sqs:partial-items");
    for (int waited = 0; left != 0 && waited < 30000; waited += 100) {
        rw_test_sleep_ms(100);
        left = queue_length("sqs:partial-items");
    }
    assert_int_equal(left, 0);
    stop_node(&S.nodes[0]);
    for (int i = 0; i < 3; i++) {
        int got = 0;
        records_of("batches", ids[i], &got);
        assert_int_equal(got, 1);
    }
    S.passed = true;
}

static void sqs_partial_failure_redelivers_only_failed_then_dead_letters(void **state)
{
    start_node(&S.nodes[0]);
    char ok1[64], bad[64], ok2[64], md5[64];
    send_ok("partial-items", "{\"ok\":1}", ok1, md5);
    send_ok("partial-items", "{\"fail_item\":true}", bad, md5);
    send_ok("partial-items", "{\"ok\":2}", ok2, md5);
    /* Jobs (no batching window): a whole-batch failure. */
    char whole[64];
    send_ok("Jobs", "{\"fail\":true}", whole, md5);

    /* The reported item comes back after the visibility timeout (4 s), and
     * after maxReceiveCount (2) receives it moves to Dlq, whose subscriber
     * gets it with the same MessageId and body. */
    assert_true(wait_deliveries("dlq_batches", bad, 1, 90000));
    assert_true(wait_deliveries("dlq_batches", whole, 1, 90000));
    int n = 0;
    records_of("batches", bad, &n);
    assert_int_equal(n, 2);
    records_of("batches", whole, &n);
    assert_int_equal(n, 2);
    int batch = 0;
    cJSON *r = record_of("dlq_batches", bad, &batch);
    assert_non_null(r);
    assert_string_equal(str_at(r, "body"), "{\"fail_item\":true}");
    assert_string_equal(str_at(r, "eventSourceARN"), "arn:aws:sqs:" REGION_ACCOUNT ":Dlq");
    cJSON_Delete(r);
    /* The second receive says so. */
    cJSON *docs = all_docs("batches");
    bool saw_second = false;
    const cJSON *doc;
    cJSON_ArrayForEach(doc, docs)
    {
        const cJSON *rec;
        cJSON_ArrayForEach(rec, cJSON_GetObjectItemCaseSensitive(
                                    cJSON_GetObjectItemCaseSensitive(doc, "event"), "Records"))
        {
            const char *count =
                str_at(cJSON_GetObjectItemCaseSensitive(rec, "attributes"),
                       "ApproximateReceiveCount");
            if (!strcmp(str_at(rec, "messageId"), bad) && !strcmp(count, "2"))
                saw_second = true;
        }
    }
    cJSON_Delete(docs);
    assert_true(saw_second);
    stop_node(&S.nodes[0]);
    /* The messages that succeeded were delivered once and never again. */
    records_of("batches", ok1, &n);
    assert_int_equal(n, 1);
    records_of("batches", ok2, &n);
    assert_int_equal(n, 1);
    records_of("dlq_batches", ok1, &n);
    assert_int_equal(n, 0);
    records_of("dlq_batches", bad, &n);
    assert_int_equal(n, 1);
    S.passed = true;
}

static void expect_error(const char *queue, const char *headers, const char *query,
                         const char *body, int status, const char *says)
{
    char id[64], md5[64];
    cJSON *o = NULL;
    int got = send_message(S.nodes[0].port, queue, headers, query, body, id, md5, &o);
    char *text = cJSON_PrintUnformatted(o);
    if (got != status || !strstr(text, says))
        fail_msg("queue %s%s: expected %d with \"%s\", got %d %s", queue, query ? query : "",
                 status, says, got, text);
    cJSON_free(text);
    cJSON_Delete(o);
}

/* The MessageId the CLI printed: the line that is a UUID (its log also has
 * stderr, where libmongoc may warn). */
static bool find_uuid(const char *out, char id[64])
{
    for (const char *line = out; *line;) {
        size_t n = strcspn(line, "\n");
        if (n == 36 && strspn(line, "0123456789abcdef-") == 36) {
            memcpy(id, line, 36);
            id[36] = '\0';
            return true;
        }
        line += n;
        if (*line)
            line++;
    }
    return false;
}

static int run_cli(char *const extra[], char *out, size_t outlen)
{
    char port[16], log[700];
    snprintf(port, sizeof port, "%d", S.nodes[0].port);
    snprintf(log, sizeof log, "%s/cli-%d.log", S.dir, S.starts++);
    char *argv[32] = {(char *)rw_test_reelway_bin(), "queue", "send"};
    int n = 3;
    for (int i = 0; extra[i]; i++)
        argv[n++] = extra[i];
    char *tail[] = {"--port", port, "--admin-key", ADMIN, "--data-dir", S.dir, NULL};
    for (int i = 0; tail[i]; i++)
        argv[n++] = tail[i];
    argv[n] = NULL;
    rw_test_proc_t p;
    assert_int_equal(rw_test_proc_start(&p, argv, NULL, NULL, log), 0);
    int status = rw_test_proc_wait(&p, 30000);
    assert_true(WIFEXITED(status));
    FILE *f = fopen(log, "r");
    size_t len = f ? fread(out, 1, outlen - 1, f) : 0;
    out[len] = '\0';
    if (f)
        fclose(f);
    return WEXITSTATUS(status);
}

static void admin_errors_and_the_cli(void **state)
{
    start_node(&S.nodes[0]);
    /* No key: 401; a wrong key: 403. */
    expect_error("Jobs", NULL, NULL, "x", 401, "admin key");
    expect_error("Jobs", "X-Reelway-Admin-Key: nope\r\n", NULL, "x", 403, "admin key is wrong");
    /* A queue the template does not have: 404. */
    expect_error("NoSuchQueue", ADMIN_H, NULL, "x", 404, "NonExistentQueue");
    /* Bad messages: 400, or 413 over MaximumMessageSize (Jobs: 1024). */
    expect_error("Jobs", ADMIN_H, NULL, "", 400, "MissingParameter");
    expect_error("Jobs", ADMIN_H, NULL, "bell\a", 400, "InvalidMessageContents");
    expect_error("Jobs", ADMIN_H, NULL, "\xff\xfe", 400, "InvalidMessageContents");
    expect_error("Jobs", ADMIN_H, "?DelaySeconds=901", "x", 400, "DelaySeconds");
    expect_error("Jobs", ADMIN_H, "?DelaySeconds=abc", "x", 400, "DelaySeconds");
    char big[1200];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    expect_error("Jobs", ADMIN_H, NULL, big, 413, "MaximumMessageSize");
    /* Other methods: 405. */
    rw_test_response_t r;
    assert_int_equal(
        rw_test_http(S.nodes[0].port, "GET", "/_/admin/queues/Jobs/messages", ADMIN_H, NULL, 0, &r),
        0);
    assert_int_equal(r.status, 405);
    cJSON *o = cJSON_Parse(r.body);
    assert_true(cJSON_IsObject(o));
    cJSON_Delete(o);
    rw_test_response_free(&r);
    /* Nothing of that was stored. */
    assert_int_equal(queue_length("sqs:Jobs"), 0);
    assert_int_equal(queue_length("sqs:NoSuchQueue"), 0);

    /* The CLI: --body and --file print the MessageId; the subscriber gets both. */
    char out[4096], id1[64], id2[64];
    char *body_args[] = {"Jobs", "--body", "{\"from\":\"cli\"}", NULL};
    assert_int_equal(run_cli(body_args, out, sizeof out), 0);
    if (!find_uuid(out, id1))
        fail_msg("reelway queue send --body printed: %s", out);
    char file[700];
    snprintf(file, sizeof file, "%s/message.json", S.dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("{\"from\":\"file\"}", f);
    fclose(f);
    char *file_args[] = {"Jobs", "--file", file, NULL};
    assert_int_equal(run_cli(file_args, out, sizeof out), 0);
    if (!find_uuid(out, id2))
        fail_msg("reelway queue send --file printed: %s", out);
    int got1 = 0, got2 = 0;
    bool ok1 = wait_deliveries("batches", id1, 1, 60000);
    bool ok2 = wait_deliveries("batches", id2, 1, 60000);
    records_of("batches", id1, &got1);
    records_of("batches", id2, &got2);
    if (!ok1 || !ok2)
        fail_msg("deliveries: %s %d, %s %d (want 1 each)", id1, got1, id2, got2);
    int batch = 0;
    cJSON *rec = record_of("batches", id2, &batch);
    assert_string_equal(str_at(rec, "body"), "{\"from\":\"file\"}");
    cJSON_Delete(rec);
    /* An unknown queue: exit status 1 and the server's reason. */
    char *bad_args[] = {"NoSuchQueue", "--body", "x", NULL};
    assert_int_equal(run_cli(bad_args, out, sizeof out), 1);
    assert_non_null(strstr(out, "404"));
    stop_node(&S.nodes[0]);
    S.passed = true;
}

/* ---- asynchronous invocations' destinations -------------------------------------- */

/* Queues an Event invocation of function; writes its request id. */
static void invoke_event(const char *function, const char *body, char id[64])
{
    char path[256];
    snprintf(path, sizeof path, "/2015-03-31/functions/%s/invocations", function);
    rw_test_response_t r;
    assert_int_equal(rw_test_http(S.nodes[0].port, "POST", path,
                                  ADMIN_H "X-Amz-Invocation-Type: Event\r\n", body, strlen(body),
                                  &r),
                     0);
    assert_int_equal(r.status, 202);
    assert_non_null(rw_test_header(&r, "x-amzn-requestid", id, 64));
    rw_test_response_free(&r);
}

/* The payload of the only message of queue ("sqs:NAME"), parsed, or NULL. */
static cJSON *only_message(const char *queue, cJSON **attributes)
{
    cJSON *docs = all_docs("rw_queue"), *found = NULL;
    int n = 0;
    const cJSON *doc;
    cJSON_ArrayForEach(doc, docs)
    {
        if (strcmp(str_at(doc, "queue"), queue) != 0)
            continue;
        n++;
        found = cJSON_Parse(str_at(doc, "payload"));
        if (attributes && str_at(doc, "attributes"))
            *attributes = cJSON_Parse(str_at(doc, "attributes"));
    }
    cJSON_Delete(docs);
    if (n != 1) {
        cJSON_Delete(found);
        return NULL;
    }
    return found;
}

static void async_destinations_reach_their_queues(void **state)
{
    start_node(&S.nodes[0]);
    char failed_id[64], ok_id[64];
    invoke_event("Flaky", "{\"type\":\"Sample.Flaky\",\"message\":\"no luck\"}", failed_id);
    invoke_event("Steady", "{\"k\":\"v\"}", ok_id);

    /* OnFailure: Lambda's invocation record, which Failures' subscriber gets. */
    int n = 0;
    for (int waited = 0; waited < 60000 && n == 0; waited += 100) {
        cJSON *docs = all_docs("failure_batches");
        n = cJSON_GetArraySize(docs);
        cJSON_Delete(docs);
        if (n == 0)
            rw_test_sleep_ms(100);
    }
    assert_int_equal(n, 1);
    cJSON *docs = all_docs("failure_batches");
    const cJSON *rec = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(
                                              cJSON_GetObjectItemCaseSensitive(
                                                  cJSON_GetArrayItem(docs, 0), "event"),
                                              "Records"),
                                          0);
    assert_string_equal(str_at(rec, "eventSourceARN"), "arn:aws:sqs:" REGION_ACCOUNT ":Failures");
    cJSON *record = cJSON_Parse(str_at(rec, "body"));
    assert_non_null(record);
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(record, "requestContext");
    assert_string_equal(str_at(ctx, "requestId"), failed_id);
    assert_string_equal(str_at(ctx, "condition"), "RetriesExhausted");
    assert_string_equal(
        str_at(cJSON_GetObjectItemCaseSensitive(record, "requestPayload"), "message"), "no luck");
    cJSON_Delete(record);
    cJSON_Delete(docs);

    /* DeadLetterQueue: the event itself, with the request id as an attribute
     * (FlakyDlq has no subscriber: it waits there). */
    cJSON *attrs = NULL, *event = NULL;
    for (int waited = 0; waited < 30000 && !event; waited += 100) {
        event = only_message("sqs:FlakyDlq", &attrs);
        if (!event)
            rw_test_sleep_ms(100);
    }
    assert_non_null(event);
    assert_string_equal(str_at(event, "message"), "no luck");
    char *text = cJSON_PrintUnformatted(attrs);
    assert_non_null(strstr(text, failed_id));
    cJSON_free(text);
    cJSON_Delete(attrs);
    cJSON_Delete(event);

    /* OnSuccess: the record of the success, with the function's answer. */
    cJSON *success = NULL;
    for (int waited = 0; waited < 30000 && !success; waited += 100) {
        success = only_message("sqs:Successes", NULL);
        if (!success)
            rw_test_sleep_ms(100);
    }
    assert_non_null(success);
    ctx = cJSON_GetObjectItemCaseSensitive(success, "requestContext");
    assert_string_equal(str_at(ctx, "requestId"), ok_id);
    assert_string_equal(str_at(ctx, "condition"), "Success");
    assert_string_equal(str_at(cJSON_GetObjectItemCaseSensitive(success, "responsePayload"), "k"),
                        "v");
    cJSON_Delete(success);
    stop_node(&S.nodes[0]);
    S.passed = true;
}

/* ---- what is not served is refused ------------------------------------------------ */

static const char unserved_template[] =
    "AWSTemplateFormatVersion: \"2010-09-09\"\n"
    "Transform: AWS::Serverless-2016-10-31\n"
    "Resources:\n"
    "  Fn:\n"
    "    Type: AWS::Serverless::Function\n"
    "    Properties:\n"
    "      Runtime: provided.al2023\n"
    "      CodeUri: .\n"
    "      Handler: x\n"
    "      Events:\n"
    "        Up:\n" /* line 11 */
    "          Type: S3\n"
    "          Properties:\n"
    "            Bucket: !Ref Media\n"
    "            Events: s3:ObjectCreated:*\n"
    "        Note:\n"
    "          Type: SNS\n" /* line 17 */
    "          Properties:\n"
    "            Topic: arn:aws:sns:us-east-1:000000000000:t\n"
    "        Tick:\n"
    "          Type: Schedule\n"
    "          Properties:\n"
    "            Schedule: rate(5 minutes)\n"
    "  Media:\n"
    "    Type: AWS::S3::Bucket\n"
    "    Properties:\n"
    "      BucketName: media\n";

static int run_reelway(char *const argv[], char *out, size_t outlen)
{
    char log[700];
    snprintf(log, sizeof log, "%s/run-%d.log", S.dir, S.starts++);
    char uri_env[1024];
    snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", rw_test_mongo_uri());
    const char *set[] = {uri_env, NULL};
    rw_test_proc_t p;
    assert_int_equal(rw_test_proc_start(&p, argv, set, NULL, log), 0);
    int status = rw_test_proc_wait(&p, 60000);
    assert_true(WIFEXITED(status));
    FILE *f = fopen(log, "r");
    size_t len = f ? fread(out, 1, outlen - 1, f) : 0;
    out[len] = '\0';
    if (f)
        fclose(f);
    return WEXITSTATUS(status);
}

static void validate_and_serve_refuse_unserved_event_types(void **state)
{
    char tpl[700], data[700], out[8192], want[900];
    snprintf(tpl, sizeof tpl, "%s/unserved.yaml", S.dir);
    snprintf(data, sizeof data, "%s/data", S.dir);
    FILE *f = fopen(tpl, "w");
    assert_non_null(f);
    fputs(unserved_template, f);
    fclose(f);
    char *validate[] = {(char *)rw_test_reelway_bin(), "validate", tpl, NULL};
    char *serve[] = {(char *)rw_test_reelway_bin(), "serve", "--port", "0", "--data-dir", data,
                     "--template", tpl, "--db-name", S.db, "--admin-key", ADMIN, NULL};
    char *const *cmds[] = {validate, serve};
    for (int i = 0; i < 2; i++) {
        assert_int_not_equal(run_reelway(cmds[i], out, sizeof out), 0);
        /* Each at its line, with the reason; the Schedule beside them is fine. */
        snprintf(want, sizeof want, "%s:11:9: error: S3 event Up: bucket notifications arrive "
                                    "with the upload path: not served yet",
                 tpl);
        if (!strstr(out, want))
            fail_msg("%s: no \"%s\" in:\n%s", cmds[i][1], want, out);
        snprintf(want, sizeof want, "%s:17:17: error: event type SNS is not supported", tpl);
        if (!strstr(out, want))
            fail_msg("%s: no \"%s\" in:\n%s", cmds[i][1], want, out);
        assert_null(strstr(out, "Tick"));
    }
    S.passed = true;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(schedules_fire_each_due_time_once_on_two_nodes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(sqs_batch_has_lambdas_records, setup, teardown),
        cmocka_unit_test_setup_teardown(
            sqs_partial_failure_redelivers_only_failed_then_dead_letters, setup, teardown),
        cmocka_unit_test_setup_teardown(admin_errors_and_the_cli, setup, teardown),
        cmocka_unit_test_setup_teardown(async_destinations_reach_their_queues, setup, teardown),
        cmocka_unit_test_setup_teardown(validate_and_serve_refuse_unserved_event_types, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
