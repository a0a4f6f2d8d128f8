/* The durable queue against the real database: enqueue and consume, retries
 * then dead letters, leases that end, claim races between two consumers,
 * every state a dead consumer can leave behind, SQS queue targets (batches,
 * windows, visibility timeouts, redrives, partial failures), Lambda's
 * destinations of a dead invocation, and held messages. Consumers run on real loops;
 * the "function" is this file's invoker, which records each delivery. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "queue.h"
#include "reelway/error.h"
#include "rw_test.h"

#define MAX_RECS 512

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- fixture ------------------------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    const char *uri;
    char db[96];
    mongoc_client_pool_t *pool;
    mongoc_client_t *client; /* the test's own view of the database (blocking) */
    rw_queue_opts_t qopts;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    fx->uri = rw_test_mongo_uri();
    rw_test_db_name(fx->db, sizeof fx->db, "queue");
    bson_error_t error;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(fx->uri, &error);
    if (!uri)
        return -1;
    fx->pool = mongoc_client_pool_new(uri);
    mongoc_uri_destroy(uri);
    mongoc_client_pool_set_error_api(fx->pool, MONGOC_ERROR_API_VERSION_2);
    fx->client = mongoc_client_new(fx->uri);
    mongoc_client_set_error_api(fx->client, MONGOC_ERROR_API_VERSION_2);
    fx->qopts.db_name = fx->db;
    uv_loop_init(&fx->loop);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    /* Every test leaves its loop with nothing open. (Bounded: a test that
     * failed halfway leaves its consumers running.) */
    for (int i = 0; i < 100 && uv_run(&fx->loop, UV_RUN_NOWAIT) != 0; i++)
        uv_sleep(10);
    int rc = uv_loop_close(&fx->loop);
    mongoc_database_t *db = mongoc_client_get_database(fx->client, fx->db);
    bson_error_t error;
    mongoc_database_drop(db, &error);
    mongoc_database_destroy(db);
    mongoc_client_destroy(fx->client);
    mongoc_client_pool_destroy(fx->pool);
    free(fx);
    assert_int_equal(rc, 0);
    return 0;
}

static mongoc_collection_t *coll(fx_t *fx, const char *name)
{
    return mongoc_client_get_collection(fx->client, fx->db, name);
}

static int64_t count(fx_t *fx, const char *name, const bson_t *filter)
{
    mongoc_collection_t *c = coll(fx, name);
    bson_t empty = BSON_INITIALIZER;
    bson_error_t error;
    int64_t n =
        mongoc_collection_count_documents(c, filter ? filter : &empty, NULL, NULL, NULL, &error);
    if (n < 0)
        fprintf(stderr, "count failed: %s\n", error.message);
    mongoc_collection_destroy(c);
    return n;
}

/* The one document of name with _id == id, or NULL (caller destroys). */
static bson_t *find_doc(fx_t *fx, const char *name, const char *id)
{
    mongoc_collection_t *c = coll(fx, name);
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
    return NULL;
}

static int64_t get_int(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_NUMBER(&it))
        return bson_iter_as_int64(&it);
    return -1;
}

static int64_t get_date(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_DATE_TIME(&it))
        return bson_iter_date_time(&it);
    return -1;
}

static bool has(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, doc, key);
}

static void on_tick(uv_timer_t *t)
{
}

/* Runs the loop until pred(arg) holds or timeout_ms of loop time pass; a
 * ticking timer keeps UV_RUN_ONCE from blocking longer than 10 ms. */
static void on_tick_closed(uv_handle_t *h)
{
    free(h);
}

static bool run_until(uv_loop_t *loop, bool (*pred)(void *), void *arg, uint64_t timeout_ms)
{
    uv_timer_t *tick = malloc(sizeof *tick);
    uv_timer_init(loop, tick);
    uv_timer_start(tick, on_tick, 10, 10);
    uv_update_time(loop);
    uint64_t deadline = uv_now(loop) + timeout_ms;
    bool ok;
    while (!(ok = pred(arg)) && uv_now(loop) < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)tick, on_tick_closed);
    return ok;
}

static bool never(void *arg)
{
    return false;
}

/* ---- the test's invoker ------------------------------------------------------- */

enum mode_e { OK, FAIL, HOLD, BUSY_ONCE, INVOKE_ERROR };

typedef struct {
    char id[RW_QUEUE_ID_LEN + 100];
    char payload[64];
    char function[32], queue[32];
    int attempt;
    int64_t at_ms, ended_ms;
} rec_t;

typedef struct handler_s {
    enum mode_e mode;
    int hold_ms; /* < 0: done is called inside invoke */
    rec_t recs[MAX_RECS];
    int n;
    int busy_left; /* BUSY_ONCE: invocations to refuse */
    int inflight, max_inflight;
    rw_queue_delivery_t *held[16];
    int n_held;
    int ended;
    uv_loop_t *loop;
    pthread_mutex_t *mu; /* shared counters of the two-consumer test */
    int *shared_ended;
} handler_t;

typedef struct {
    uv_timer_t timer;
    handler_t *h;
    rw_queue_delivery_t *d;
    int rec;
} pending_t;

static void finish(handler_t *h, rw_queue_delivery_t *d, int rec)
{
    h->inflight--;
    h->ended++;
    h->recs[rec].ended_ms = now_ms();
    if (h->mu) {
        pthread_mutex_lock(h->mu);
        (*h->shared_ended)++;
        pthread_mutex_unlock(h->mu);
    }
    if (h->mode == FAIL) {
        char err[128];
        int n = snprintf(err, sizeof err,
                         "{\"errorType\":\"Boom\",\"errorMessage\":\"attempt %d\"}", d->attempt);
        rw_queue_delivery_done(d, RW_QUEUE_FAILED, err, (size_t)n);
    } else {
        rw_queue_delivery_done(d, RW_QUEUE_OK, NULL, 0);
    }
}

static void on_pending_closed(uv_handle_t *t)
{
    free(t->data);
}

static void on_hold_end(uv_timer_t *t)
{
    pending_t *p = t->data;
    finish(p->h, p->d, p->rec);
    uv_close((uv_handle_t *)t, on_pending_closed);
}

static int invoke(void *arg, rw_queue_delivery_t *d)
{
    handler_t *h = arg;
    if (h->mode == BUSY_ONCE && h->busy_left > 0) {
        h->busy_left--;
        return UV_EBUSY;
    }
    if (h->mode == INVOKE_ERROR)
        return RW_ENOTFOUND;
    if (h->n >= MAX_RECS)
        return UV_EBUSY;
    rec_t *r = &h->recs[h->n];
    int rec = h->n++;
    snprintf(r->id, sizeof r->id, "%s", d->id);
    snprintf(r->payload, sizeof r->payload, "%.*s", (int)d->len, d->payload);
    snprintf(r->function, sizeof r->function, "%s", d->function);
    snprintf(r->queue, sizeof r->queue, "%s", d->queue ? d->queue : "");
    r->attempt = d->attempt;
    r->at_ms = now_ms();
    h->inflight++;
    if (h->inflight > h->max_inflight)
        h->max_inflight = h->inflight;
    if (h->mode == HOLD) {
        h->held[h->n_held++] = d;
        return 0;
    }
    if (h->hold_ms < 0) {
        finish(h, d, rec);
        return 0;
    }
    pending_t *p = calloc(1, sizeof *p);
    p->h = h, p->d = d, p->rec = rec;
    uv_timer_init(h->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_hold_end, (uint64_t)h->hold_ms, 0);
    return 0;
}

static rw_queue_consumer_t *consumer(fx_t *fx, uv_loop_t *loop, handler_t *h, const char *fn,
                                     int concurrency, int64_t visibility_ms, const char *owner)
{
    rw_queue_target_t target = {
        .function = fn, .concurrency = concurrency, .visibility_ms = visibility_ms};
    rw_queue_consumer_opts_t opts = {
        .owner = owner,
        .targets = &target,
        .n_targets = 1,
        .poll_min_ms = 10,
        .poll_max_ms = 50,
        .retry_base_ms = 100,
        .release_delay_ms = 30,
        .invoke = invoke,
        .invoke_arg = h,
    };
    h->loop = loop;
    rw_queue_consumer_t *c = NULL;
    assert_int_equal(rw_queue_consumer_new(loop, fx->pool, &fx->qopts, &opts, &c), 0);
    return c;
}

static void on_closed(void *arg)
{
    (*(int *)arg)++;
}

/* Closes the consumer and runs the loop until everything of it is gone. */
static void close_consumer(uv_loop_t *loop, rw_queue_consumer_t *c)
{
    int closed = 0;
    rw_queue_consumer_close(c, on_closed, &closed);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
}

static void enqueue_sync(fx_t *fx, const rw_queue_msg_t *msg, char id[RW_QUEUE_ID_LEN])
{
    char why[256] = "";
    int rc = rw_queue_enqueue_sync(fx->client, &fx->qopts, msg, id, why, sizeof why);
    if (rc != 0)
        fprintf(stderr, "enqueue: %s\n", why);
    assert_int_equal(rc, 0);
}

/* ---- enqueue then consume ------------------------------------------------------ */

typedef struct {
    int calls, status;
    char id[RW_QUEUE_ID_LEN + 100];
} sent_t;

static void on_sent(void *arg, int status, const char *id, const char *why)
{
    sent_t *s = arg;
    s->calls++;
    s->status = status;
    snprintf(s->id, sizeof s->id, "%s", id);
    if (status)
        fprintf(stderr, "enqueue: %s\n", why);
}

static bool sent_once(void *arg)
{
    return ((sent_t *)arg)->calls > 0;
}

typedef struct {
    handler_t *h;
    rw_queue_consumer_t *c;
    int want;
} until_t;

static bool ended_and_recorded(void *arg)
{
    until_t *u = arg;
    return u->h->ended >= u->want && rw_queue_consumer_inflight(u->c) == 0;
}

static void enqueue_then_consume(void **state)
{
    fx_t *fx = *state;
    rw_queue_t *q = rw_queue_new(&fx->loop, fx->pool, &fx->qopts);
    assert_non_null(q);
    static const char payload[] = "{\"n\":1,\"text\":\"h\xc3\xa9llo\"}";
    rw_queue_msg_t msg = {.queue = "lambda-async",
                          .function = "echo",
                          .payload = payload,
                          .len = sizeof payload - 1,
                          .trace_id = "Root=1-5e1b4151-abc",
                          .attributes = "{\"source\":\"test\"}"};
    sent_t sent = {0};
    assert_int_equal(rw_queue_enqueue(q, &msg, on_sent, &sent), 0);
    assert_true(run_until(&fx->loop, sent_once, &sent, 10000));
    assert_int_equal(sent.calls, 1);
    assert_int_equal(sent.status, 0);
    assert_int_equal(strlen(sent.id), 36);

    /* The document as queue.h describes it, written before the callback ran. */
    bson_t *doc = find_doc(fx, RW_QUEUE_COLLECTION, sent.id);
    assert_non_null(doc);
    assert_string_equal(get_str(doc, "queue"), "lambda-async");
    assert_string_equal(get_str(doc, "function"), "echo");
    assert_string_equal(get_str(doc, "payload"), payload);
    assert_string_equal(get_str(doc, "attributes"), "{\"source\":\"test\"}");
    assert_string_equal(get_str(doc, "trace_id"), "Root=1-5e1b4151-abc");
    assert_string_equal(get_str(doc, "state"), "ready");
    assert_int_equal(get_int(doc, "attempts"), 0);
    assert_int_equal(get_int(doc, "failures"), 0);
    assert_int_equal(get_int(doc, "gen"), 0);
    assert_int_equal(get_int(doc, "max_attempts"), 3);
    int64_t created = get_date(doc, "created_at");
    assert_true(created > 0);
    assert_int_equal(get_date(doc, "visible_at"), created);
    assert_int_equal(get_date(doc, "expires_at") - created, RW_QUEUE_MAX_AGE_DEFAULT_MS);
    assert_false(has(doc, "owner"));
    bson_destroy(doc);

    /* The blocking variant, with a caller-chosen id. */
    char id2[RW_QUEUE_ID_LEN];
    rw_queue_msg_t msg2 = {
        .queue = "lambda-async", .function = "echo", .payload = "[2]", .len = 3, .id = "upload-42"};
    enqueue_sync(fx, &msg2, id2);
    assert_string_equal(id2, "upload-42");

    handler_t *h = calloc(1, sizeof *h);
    h->mode = OK;
    h->hold_ms = 5;
    rw_queue_consumer_t *c = consumer(fx, &fx->loop, h, "echo", 2, 0, "test-a");
    until_t u = {h, c, 2};
    assert_true(run_until(&fx->loop, ended_and_recorded, &u, 20000));
    assert_int_equal(count(fx, RW_QUEUE_COLLECTION, NULL), 0);

    /* More polls find nothing: each message was delivered once. */
    run_until(&fx->loop, never, NULL, 300);
    assert_int_equal(h->n, 2);
    int first = strcmp(h->recs[0].id, sent.id) == 0 ? 0 : 1;
    assert_string_equal(h->recs[first].id, sent.id);
    assert_string_equal(h->recs[first].payload, payload);
    assert_string_equal(h->recs[first].function, "echo");
    assert_string_equal(h->recs[first].queue, "lambda-async");
    assert_int_equal(h->recs[first].attempt, 1);
    assert_string_equal(h->recs[1 - first].id, "upload-42");
    assert_string_equal(h->recs[1 - first].payload, "[2]");
    assert_int_equal(h->recs[1 - first].attempt, 1);
    rw_queue_stats_t st;
    rw_queue_consumer_stats(c, &st);
    assert_int_equal(st.delivered, 2);
    assert_int_equal(st.succeeded, 2);
    assert_int_equal(st.dead_lettered, 0);
    assert_int_equal(count(fx, RW_QUEUE_DEAD_LETTERS, NULL), 0);
    assert_int_equal(count(fx, RW_QUEUE_CLAIMS, NULL), 0);

    close_consumer(&fx->loop, c);
    rw_queue_close(q, NULL, NULL);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    free(h);
}

/* ---- retries, then the dead letters --------------------------------------------- */

static void failing_handler_is_retried_then_dead_lettered(void **state)
{
    fx_t *fx = *state;
    char id[RW_QUEUE_ID_LEN];
    rw_queue_msg_t msg = {.queue = "lambda-async",
                          .function = "flaky",
                          .payload = "{\"x\":1}",
                          .len = 7,
                          .max_attempts = 3,
                          .dead_letter = "flaky-dlq"};
    enqueue_sync(fx, &msg, id);

    handler_t *h = calloc(1, sizeof *h);
    h->mode = FAIL;
    h->hold_ms = 1;
    rw_queue_consumer_t *c = consumer(fx, &fx->loop, h, "flaky", 1, 0, "test-a");
    until_t u = {h, c, 3};
    assert_true(run_until(&fx->loop, ended_and_recorded, &u, 30000));
    run_until(&fx->loop, never, NULL, 300); /* no fourth delivery comes */
    assert_int_equal(h->n, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(h->recs[i].id, id);
        assert_int_equal(h->recs[i].attempt, i + 1);
    }
    /* Never redelivered before its backoff: failure n waits base * 2^(n-1). */
    assert_true(h->recs[1].at_ms >= h->recs[0].ended_ms + 100);
    assert_true(h->recs[2].at_ms >= h->recs[1].ended_ms + 200);

    assert_int_equal(count(fx, RW_QUEUE_COLLECTION, NULL), 0);
    bson_t *dl = find_doc(fx, RW_QUEUE_DEAD_LETTERS, id);
    assert_non_null(dl);
    assert_string_equal(get_str(dl, "last_error"),
                        "{\"errorType\":\"Boom\",\"errorMessage\":\"attempt 3\"}");
    assert_string_equal(get_str(dl, "dead_reason"), "RetriesExhausted");
    assert_string_equal(get_str(dl, "dead_letter"), "flaky-dlq");
    assert_string_equal(get_str(dl, "payload"), "{\"x\":1}");
    assert_string_equal(get_str(dl, "function"), "flaky");
    assert_int_equal(get_int(dl, "attempts"), 3);
    assert_int_equal(get_int(dl, "failures"), 3);
    assert_int_equal(get_int(dl, "max_attempts"), 3);
    assert_true(get_date(dl, "dead_at") > 0);
    assert_false(has(dl, "state"));
    assert_false(has(dl, "owner"));
    assert_false(has(dl, "gen"));
    assert_false(has(dl, "visible_at"));
    bson_destroy(dl);
    rw_queue_stats_t st;
    rw_queue_consumer_stats(c, &st);
    assert_int_equal(st.retried, 2);
    assert_int_equal(st.dead_lettered, 1);
    close_consumer(&fx->loop, c);
    free(h);
}

static bool queue_empty(void *arg)
{
    return count(arg, RW_QUEUE_COLLECTION, NULL) == 0;
}

static bool dead_letters_reach(void *arg)
{
    void **a = arg;
    return count(a[0], RW_QUEUE_DEAD_LETTERS, NULL) >= (int64_t)(intptr_t)a[1];
}

static void too_old_and_unstartable_messages_are_dead_lettered(void **state)
{
    fx_t *fx = *state;
    /* Older than its maximum age when it becomes visible: never delivered. */
    char old_id[RW_QUEUE_ID_LEN], bad_id[RW_QUEUE_ID_LEN];
    rw_queue_msg_t old = {.queue = "q",
                          .function = "slowpoke",
                          .payload = "{}",
                          .len = 2,
                          .max_age_ms = 1,
                          .delay_ms = 20};
    enqueue_sync(fx, &old, old_id);
    handler_t *h = calloc(1, sizeof *h);
    h->mode = OK;
    h->hold_ms = -1;
    rw_queue_consumer_t *c = consumer(fx, &fx->loop, h, "slowpoke", 1, 0, "test-a");
    void *until[2] = {fx, (void *)(intptr_t)1};
    assert_true(run_until(&fx->loop, dead_letters_reach, until, 20000));
    assert_int_equal(h->n, 0);
    bson_t *dl = find_doc(fx, RW_QUEUE_DEAD_LETTERS, old_id);
    assert_non_null(dl);
    assert_string_equal(get_str(dl, "dead_reason"), "EventAgeExceeded");
    assert_int_equal(get_int(dl, "attempts"), 0);
    assert_int_equal(get_int(dl, "failures"), 0);
    assert_non_null(strstr(get_str(dl, "last_error"), "Reelway.EventAgeExceeded"));
    bson_destroy(dl);
    close_consumer(&fx->loop, c);

    /* An invoker that cannot start the function fails the attempt. */
    rw_queue_msg_t bad = {
        .queue = "q", .function = "ghost", .payload = "{}", .len = 2, .max_attempts = 1};
    enqueue_sync(fx, &bad, bad_id);
    h->mode = INVOKE_ERROR;
    c = consumer(fx, &fx->loop, h, "ghost", 1, 0, "test-a");
    until[1] = (void *)(intptr_t)2;
    assert_true(run_until(&fx->loop, dead_letters_reach, until, 20000));
    dl = find_doc(fx, RW_QUEUE_DEAD_LETTERS, bad_id);
    assert_non_null(dl);
    assert_string_equal(get_str(dl, "dead_reason"), "RetriesExhausted");
    assert_non_null(strstr(get_str(dl, "last_error"), "Reelway.InvokeError"));
    assert_int_equal(get_int(dl, "attempts"), 1);
    bson_destroy(dl);
    /* The dead letter is written first, then the message leaves the queue. */
    assert_true(run_until(&fx->loop, queue_empty, fx, 20000));
    close_consumer(&fx->loop, c);
    free(h);
}

static void throttled_delivery_is_released_without_counting(void **state)
{
    fx_t *fx = *state;
    char id[RW_QUEUE_ID_LEN];
    rw_queue_msg_t msg = {
        .queue = "q", .function = "busy", .payload = "{}", .len = 2, .max_attempts = 1};
    enqueue_sync(fx, &msg, id);
    handler_t *h = calloc(1, sizeof *h);
    h->mode = BUSY_ONCE;
    h->busy_left = 2;
    h->hold_ms = -1;
    rw_queue_consumer_t *c = consumer(fx, &fx->loop, h, "busy", 1, 0, "test-a");
    until_t u = {h, c, 1};
    assert_true(run_until(&fx->loop, ended_and_recorded, &u, 20000));
    /* Refused twice, then run: still its first attempt, and done. */
    assert_int_equal(h->busy_left, 0);
    assert_int_equal(h->n, 1);
    assert_int_equal(h->recs[0].attempt, 1);
    assert_int_equal(count(fx, RW_QUEUE_COLLECTION, NULL), 0);
    assert_int_equal(count(fx, RW_QUEUE_DEAD_LETTERS, NULL), 0);
    rw_queue_stats_t st;
    rw_queue_consumer_stats(c, &st);
    assert_int_equal(st.released, 2);
    assert_int_equal(st.succeeded, 1);
    close_consumer(&fx->loop, c);
    free(h);
}

/* ---- leases ------------------------------------------------------------------- */

static bool has_delivery(void *arg)
{
    return ((handler_t *)arg)->n > 0;
}

static void ended_lease_redelivers_and_the_stale_holder_changes_nothing(void **state)
{
    fx_t *fx = *state;
    char id[RW_QUEUE_ID_LEN];
    rw_queue_msg_t msg = {
        .queue = "q", .function = "slow", .payload = "{}", .len = 2, .visibility_ms = 200};
    enqueue_sync(fx, &msg, id);

    /* A claims it and never finishes in time (as if it had died). */
    handler_t *ha = calloc(1, sizeof *ha), *hb = calloc(1, sizeof *hb);
    ha->mode = HOLD;
    rw_queue_consumer_t *a = consumer(fx, &fx->loop, ha, "slow", 1, 100, "test-a");
    assert_true(run_until(&fx->loop, has_delivery, ha, 20000));
    bson_t *doc = find_doc(fx, RW_QUEUE_COLLECTION, id);
    assert_string_equal(get_str(doc, "state"), "inflight");
    assert_string_equal(get_str(doc, "owner"), "test-a");
    assert_int_equal(get_int(doc, "attempts"), 1);
    assert_int_equal(get_int(doc, "gen"), 1);
    assert_int_equal(get_date(doc, "visible_at") - get_date(doc, "claimed_at"), 200);
    bson_destroy(doc);

    /* B gets it once the lease has ended, as its second delivery. */
    hb->mode = OK;
    hb->hold_ms = -1;
    rw_queue_consumer_t *b = consumer(fx, &fx->loop, hb, "slow", 1, 100, "test-b");
    until_t u = {hb, b, 1};
    assert_true(run_until(&fx->loop, ended_and_recorded, &u, 20000));
    assert_int_equal(hb->n, 1);
    assert_string_equal(hb->recs[0].id, id);
    assert_int_equal(hb->recs[0].attempt, 2);
    assert_int_equal(count(fx, RW_QUEUE_COLLECTION, NULL), 0);

    /* A's late failure is refused: nothing comes back, nothing is dead-lettered. */
    assert_int_equal(ha->n_held, 1);
    ha->mode = FAIL;
    ha->inflight--;
    rw_queue_delivery_done(ha->held[0], RW_QUEUE_FAILED, "{\"errorType\":\"Late\"}", 20);
    until_t ua = {ha, a, 0};
    assert_true(run_until(&fx->loop, ended_and_recorded, &ua, 20000));
    rw_queue_stats_t st;
    rw_queue_consumer_stats(a, &st);
    assert_int_equal(st.lease_lost, 1);
    assert_int_equal(count(fx, RW_QUEUE_COLLECTION, NULL), 0);
    assert_int_equal(count(fx, RW_QUEUE_DEAD_LETTERS, NULL), 0);
    assert_int_equal(count(fx, RW_QUEUE_CLAIMS, NULL), 0); /* and no orphan record */
    int closed = 0;
    rw_queue_consumer_close(a, on_closed, &closed);
    rw_queue_consumer_close(b, on_closed, &closed);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 2);
    free(ha);
    free(hb);
}

/* What a consumer killed at some step leaves behind, written as it would be:
 * the message with its cached state, and its transition records. */
static void insert_message(fx_t *fx, const char *id, const char *state, int gen, int attempts,
                           int failures, int64_t visible_in_ms, const char *reason)
{
    int64_t now = now_ms();
    bson_t *doc = BCON_NEW(
        "_id", BCON_UTF8(id), "queue", BCON_UTF8("q"), "function", BCON_UTF8("echo"), "payload",
        BCON_UTF8("{\"left\":1}"), "state", BCON_UTF8(state), "gen", BCON_INT64(gen), "attempts",
        BCON_INT32(attempts), "failures", BCON_INT32(failures), "max_attempts", BCON_INT32(3),
        "visible_at", BCON_DATE_TIME(now + visible_in_ms), "created_at", BCON_DATE_TIME(now - 5000),
        "expires_at", BCON_DATE_TIME(now + 3600000));
    if (strcmp(state, "inflight") == 0)
        BSON_APPEND_UTF8(doc, "owner", "dead-consumer");
    if (reason) {
        BSON_APPEND_UTF8(doc, "dead_reason", reason);
        BSON_APPEND_UTF8(doc, "last_error", "{\"errorType\":\"Boom\"}");
    }
    mongoc_collection_t *c = coll(fx, RW_QUEUE_COLLECTION);
    bson_error_t error;
    assert_true(mongoc_collection_insert_one(c, doc, NULL, NULL, &error));
    mongoc_collection_destroy(c);
    bson_destroy(doc);
}

static void insert_record(fx_t *fx, const char *id, int gen, const char *kind, int64_t until_in_ms,
                          int attempts, int failures, int64_t at_ago_ms)
{
    int64_t now = now_ms();
    char key[160];
    snprintf(key, sizeof key, "%s#%d", id, gen);
    bson_t *doc =
        BCON_NEW("_id", BCON_UTF8(key), "msg", BCON_UTF8(id), "gen", BCON_INT64(gen), "kind",
                 BCON_UTF8(kind), "owner", BCON_UTF8("dead-consumer"), "token", BCON_UTF8("t"),
                 "at", BCON_DATE_TIME(now - at_ago_ms), "until", BCON_DATE_TIME(now + until_in_ms),
                 "attempts", BCON_INT32(attempts), "failures", BCON_INT32(failures));
    if (strcmp(kind, "dead") == 0) {
        BSON_APPEND_UTF8(doc, "reason", "RetriesExhausted");
        BSON_APPEND_UTF8(doc, "last_error", "{\"errorType\":\"Boom\"}");
    }
    mongoc_collection_t *c = coll(fx, RW_QUEUE_CLAIMS);
    bson_error_t error;
    assert_true(mongoc_collection_insert_one(c, doc, NULL, NULL, &error));
    mongoc_collection_destroy(c);
    bson_destroy(doc);
}

typedef struct {
    fx_t *fx;
    until_t u;
} drained_t;

static bool drained(void *arg)
{
    drained_t *d = arg;
    return ended_and_recorded(&d->u) && queue_empty(d->fx);
}

static void restart_finishes_whatever_a_dead_consumer_left(void **state)
{
    fx_t *fx = *state;
    /* Killed mid-delivery: delivered again once the lease has ended. */
    insert_message(fx, "lost", "inflight", 1, 1, 0, -1000, NULL);
    insert_record(fx, "lost", 1, "claim", -1000, 1, 0, 2000);
    /* Killed between its claim record and the cache write: the record's lease
     * (still running) holds it back, then it is delivered again. */
    insert_message(fx, "uncached", "ready", 0, 0, 0, -1000, NULL);
    insert_record(fx, "uncached", 1, "claim", 400, 1, 0, 0);
    /* Killed after recording success, before deleting: done, not redelivered. */
    insert_message(fx, "done", "inflight", 1, 1, 0, -1000, NULL);
    insert_record(fx, "done", 1, "claim", -1000, 1, 0, 3000);
    insert_record(fx, "done", 2, "done", 0, 1, 0, 1500);
    /* Killed after the "dead" record, before anything else: moved. */
    insert_message(fx, "marked", "inflight", 3, 3, 2, -1000, NULL);
    insert_record(fx, "marked", 3, "claim", -1000, 3, 2, 2000);
    insert_record(fx, "marked", 4, "dead", -500, 3, 3, 1500);
    /* Killed after the dead letter was written, before the delete: one letter. */
    insert_message(fx, "copied", "dead", 4, 3, 3, -1000, "RetriesExhausted");
    insert_record(fx, "copied", 4, "dead", -1000, 3, 3, 1500);
    {
        bson_t *letter =
            BCON_NEW("_id", BCON_UTF8("copied"), "function", BCON_UTF8("echo"), "payload",
                     BCON_UTF8("{\"left\":1}"), "attempts", BCON_INT32(3), "failures",
                     BCON_INT32(3), "last_error", BCON_UTF8("{\"errorType\":\"Boom\"}"),
                     "dead_reason", BCON_UTF8("RetriesExhausted"));
        mongoc_collection_t *c = coll(fx, RW_QUEUE_DEAD_LETTERS);
        bson_error_t error;
        assert_true(mongoc_collection_insert_one(c, letter, NULL, NULL, &error));
        mongoc_collection_destroy(c);
        bson_destroy(letter);
    }
    /* Lost with its consumer three times: a poison message, set aside. */
    insert_message(fx, "poison", "inflight", 3, 3, 0, -1000, NULL);
    insert_record(fx, "poison", 3, "claim", -1000, 3, 0, 2000);

    handler_t *h = calloc(1, sizeof *h);
    h->mode = OK;
    h->hold_ms = -1;
    rw_queue_consumer_t *c = consumer(fx, &fx->loop, h, "echo", 2, 0, "test-a");
    drained_t d = {fx, {h, c, 2}};
    assert_true(run_until(&fx->loop, drained, &d, 20000));
    run_until(&fx->loop, never, NULL, 200);
    assert_int_equal(h->n, 2);
    for (int i = 0; i < 2; i++) {
        assert_true(strcmp(h->recs[i].id, "lost") == 0 || strcmp(h->recs[i].id, "uncached") == 0);
        assert_int_equal(h->recs[i].attempt, 2);
    }
    assert_string_not_equal(h->recs[0].id, h->recs[1].id);

    assert_int_equal(count(fx, RW_QUEUE_DEAD_LETTERS, NULL), 3);
    const char *ids[] = {"marked", "copied"};
    for (int i = 0; i < 2; i++) {
        bson_t *dl = find_doc(fx, RW_QUEUE_DEAD_LETTERS, ids[i]);
        assert_non_null(dl);
        assert_string_equal(get_str(dl, "dead_reason"), "RetriesExhausted");
        assert_string_equal(get_str(dl, "last_error"), "{\"errorType\":\"Boom\"}");
        assert_int_equal(get_int(dl, "attempts"), 3);
        assert_int_equal(get_int(dl, "failures"), 3);
        assert_false(has(dl, "state"));
        assert_false(has(dl, "gen"));
        bson_destroy(dl);
    }
    bson_t *dl = find_doc(fx, RW_QUEUE_DEAD_LETTERS, "poison");
    assert_non_null(dl);
    assert_string_equal(get_str(dl, "dead_reason"), "DeliveryLimitExceeded");
    assert_int_equal(get_int(dl, "attempts"), 3);
    assert_int_equal(get_int(dl, "failures"), 0);
    bson_destroy(dl);
    /* Nothing is left of any of them but their dead letters. */
    assert_int_equal(count(fx, RW_QUEUE_CLAIMS, NULL), 0);
    close_consumer(&fx->loop, c);
    free(h);
}

static bool records_left(void *arg)
{
    return count(arg, RW_QUEUE_CLAIMS, NULL) == 2;
}

static void old_records_of_dead_actors_are_swept(void **state)
{
    fx_t *fx = *state;
    /* A message deleted by an actor that died before deleting its records. */
    insert_record(fx, "gone", 1, "claim", 0, 1, 0, 2 * 3600 * 1000);
    insert_record(fx, "gone", 2, "done", 0, 1, 0, 2 * 3600 * 1000);
    /* A live message (another function's) at gen 3: older records can go. */
    insert_message(fx, "live", "ready", 3, 0, 0, 3600000, NULL);
    insert_record(fx, "live", 1, "claim", 0, 1, 0, 3 * 3600 * 1000);
    insert_record(fx, "live", 2, "release", 0, 0, 0, 3 * 3600 * 1000);
    insert_record(fx, "live", 3, "claim", 0, 1, 0, 2 * 3600 * 1000);
    /* Recent: kept whatever it is. */
    insert_record(fx, "fresh", 1, "claim", 0, 1, 0, 0);
    handler_t *h = calloc(1, sizeof *h);
    rw_queue_target_t target = {.function = "nobody", .concurrency = 1};
    rw_queue_consumer_opts_t opts = {.targets = &target,
                                     .n_targets = 1,
                                     .sweep_interval_ms = 50,
                                     .invoke = invoke,
                                     .invoke_arg = h};
    rw_queue_consumer_t *c = NULL;
    assert_int_equal(rw_queue_consumer_new(&fx->loop, fx->pool, &fx->qopts, &opts, &c), 0);
    assert_true(run_until(&fx->loop, records_left, fx, 20000));
    bson_t *kept = find_doc(fx, RW_QUEUE_CLAIMS, "live#3");
    assert_non_null(kept);
    bson_destroy(kept);
    kept = find_doc(fx, RW_QUEUE_CLAIMS, "fresh#1");
    assert_non_null(kept);
    bson_destroy(kept);
    assert_int_equal(count(fx, RW_QUEUE_COLLECTION, NULL), 1);
    close_consumer(&fx->loop, c);
    free(h);
}

/* ---- two consumers, one queue ------------------------------------------------- */

#define RACE_N 60
#define RACE_CONC 3

typedef struct {
    fx_t *fx;
    uv_loop_t loop;
    handler_t h;
    pthread_mutex_t *mu;
    int *ended;
    char owner[16];
    rw_queue_consumer_t *c;
    bool ok;
} racer_t;

static bool all_ended(void *arg)
{
    racer_t *r = arg;
    pthread_mutex_lock(r->mu);
    bool done = *r->ended >= RACE_N;
    pthread_mutex_unlock(r->mu);
    return done;
}

static bool own_idle(void *arg)
{
    racer_t *r = arg;
    return rw_queue_consumer_inflight(r->c) == 0;
}

static void *race(void *arg)
{
    racer_t *r = arg;
    uv_loop_init(&r->loop);
    r->h.mode = OK;
    r->h.hold_ms = 3;
    r->h.mu = r->mu;
    r->h.shared_ended = r->ended;
    r->h.loop = &r->loop;
    rw_queue_target_t target = {.function = "work", .concurrency = RACE_CONC};
    rw_queue_consumer_opts_t opts = {.owner = r->owner,
                                     .targets = &target,
                                     .n_targets = 1,
                                     .poll_min_ms = 5,
                                     .poll_max_ms = 20,
                                     .invoke = invoke,
                                     .invoke_arg = &r->h};
    rw_queue_consumer_t *c = NULL;
    if (rw_queue_consumer_new(&r->loop, r->fx->pool, &r->fx->qopts, &opts, &c) != 0)
        return NULL;
    r->c = c;
    r->ok = run_until(&r->loop, all_ended, r, 60000);
    r->ok = run_until(&r->loop, own_idle, r, 10000) && r->ok;
    rw_queue_consumer_close(c, NULL, NULL);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    r->ok = r->ok && uv_loop_close(&r->loop) == 0;
    return NULL;
}

static void two_consumers_never_share_a_message(void **state)
{
    fx_t *fx = *state;
    char ids[RACE_N][RW_QUEUE_ID_LEN];
    for (int i = 0; i < RACE_N; i++) {
        char payload[32];
        int n = snprintf(payload, sizeof payload, "{\"i\":%d}", i);
        rw_queue_msg_t msg = {
            .queue = "q", .function = "work", .payload = payload, .len = (size_t)n};
        enqueue_sync(fx, &msg, ids[i]);
    }
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int ended = 0;
    racer_t *r = calloc(2, sizeof *r);
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        r[i].fx = fx;
        r[i].mu = &mu;
        r[i].ended = &ended;
        snprintf(r[i].owner, sizeof r[i].owner, "racer-%d", i);
        pthread_create(&t[i], NULL, race, &r[i]);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_true(r[0].ok);
    assert_true(r[1].ok);
    assert_int_equal(ended, RACE_N);
    assert_int_equal(r[0].h.n + r[1].h.n, RACE_N);
    printf("consumer 0 ran %d, consumer 1 ran %d\n", r[0].h.n, r[1].h.n);
    /* Each message ran exactly once, by one of them, on its first attempt. */
    for (int i = 0; i < RACE_N; i++) {
        int seen = 0;
        for (int k = 0; k < 2; k++)
            for (int j = 0; j < r[k].h.n; j++)
                if (strcmp(r[k].h.recs[j].id, ids[i]) == 0) {
                    seen++;
                    assert_int_equal(r[k].h.recs[j].attempt, 1);
                }
        assert_int_equal(seen, 1);
    }
    /* Neither ran more at once than its concurrency allows. */
    assert_true(r[0].h.max_inflight <= RACE_CONC);
    assert_true(r[1].h.max_inflight <= RACE_CONC);
    assert_int_equal(count(fx, RW_QUEUE_COLLECTION, NULL), 0);
    free(r);
}

/* ---- the producer's checks, indexes, polling ----------------------------------- */

static void enqueue_refuses_what_it_cannot_keep(void **state)
{
    fx_t *fx = *state;
    char id[RW_QUEUE_ID_LEN], why[256];
    char *big = malloc(RW_QUEUE_PAYLOAD_MAX + 1);
    memset(big, 'a', RW_QUEUE_PAYLOAD_MAX + 1);
    rw_queue_msg_t msg = {
        .queue = "q", .function = "f", .payload = big, .len = RW_QUEUE_PAYLOAD_MAX + 1};
    assert_int_equal(rw_queue_enqueue_sync(fx->client, &fx->qopts, &msg, id, why, sizeof why),
                     RW_ELIMIT);
    rw_queue_t *q = rw_queue_new(&fx->loop, fx->pool, &fx->qopts);
    assert_int_equal(rw_queue_enqueue(q, &msg, on_sent, NULL), RW_ELIMIT);
    msg.len = RW_QUEUE_PAYLOAD_MAX; /* exactly the limit is fine */
    sent_t sent = {0};
    assert_int_equal(rw_queue_enqueue(q, &msg, on_sent, &sent), 0);
    assert_true(run_until(&fx->loop, sent_once, &sent, 20000));
    assert_int_equal(sent.status, 0);
    free(big);

    msg.payload = "\xff\xfe";
    msg.len = 2;
    assert_int_equal(rw_queue_enqueue(q, &msg, on_sent, NULL), RW_EPARSE);
    msg.payload = "a\0b";
    msg.len = 3;
    assert_int_equal(rw_queue_enqueue(q, &msg, on_sent, NULL), RW_EPARSE);
    msg.payload = "{}";
    msg.len = 2;
    msg.function = NULL;
    assert_int_equal(rw_queue_enqueue(q, &msg, on_sent, NULL), UV_EINVAL);
    msg.function = "f";
    msg.max_attempts = -1;
    assert_int_equal(rw_queue_enqueue(q, &msg, on_sent, NULL), UV_EINVAL);
    msg.max_attempts = 0;

    /* A caller-chosen id is an idempotency key: the second enqueue says so. */
    msg.id = "same-id";
    assert_int_equal(rw_queue_enqueue_sync(fx->client, &fx->qopts, &msg, id, why, sizeof why), 0);
    assert_int_equal(rw_queue_enqueue_sync(fx->client, &fx->qopts, &msg, id, why, sizeof why),
                     UV_EEXIST);
    sent.calls = 0;
    assert_int_equal(rw_queue_enqueue(q, &msg, on_sent, &sent), 0);
    assert_true(run_until(&fx->loop, sent_once, &sent, 20000));
    assert_int_equal(sent.status, UV_EEXIST);
    assert_string_equal(sent.id, "same-id");
    bson_t *only = BCON_NEW("_id", BCON_UTF8("same-id"));
    assert_int_equal(count(fx, RW_QUEUE_COLLECTION, only), 1);
    bson_destroy(only);

    /* Closing waits for what is in flight; afterwards nothing is accepted. */
    sent.calls = 0;
    msg.id = NULL;
    assert_int_equal(rw_queue_enqueue(q, &msg, on_sent, &sent), 0);
    int closed = 0;
    rw_queue_close(q, on_closed, &closed);
    assert_int_equal(closed, 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 1);
    assert_int_equal(sent.calls, 1);
    assert_int_equal(sent.status, 0);
}

static void indexes_are_created_idempotently(void **state)
{
    fx_t *fx = *state;
    char why[256];
    assert_int_equal(rw_queue_create_indexes(fx->client, &fx->qopts, why, sizeof why), 0);
    assert_int_equal(rw_queue_create_indexes(fx->client, &fx->qopts, why, sizeof why), 0);
    mongoc_collection_t *c = coll(fx, RW_QUEUE_COLLECTION);
    mongoc_cursor_t *cur = mongoc_collection_find_indexes_with_opts(c, NULL);
    const bson_t *doc;
    bool claim = false, queue = false;
    while (mongoc_cursor_next(cur, &doc)) {
        const char *name = get_str(doc, "name");
        claim |= strcmp(name, "state_1_visible_at_1") == 0;
        queue |= strcmp(name, "queue_1") == 0;
    }
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(c);
    assert_true(claim);
    assert_true(queue);
}

static void an_empty_queue_is_polled_with_backoff(void **state)
{
    fx_t *fx = *state;
    handler_t *h = calloc(1, sizeof *h);
    rw_queue_target_t target = {.function = "idle", .concurrency = 4};
    rw_queue_consumer_opts_t opts = {.targets = &target,
                                     .n_targets = 1,
                                     .poll_min_ms = 10,
                                     .poll_max_ms = 100,
                                     .invoke = invoke,
                                     .invoke_arg = h};
    rw_queue_consumer_t *c = NULL;
    assert_int_equal(rw_queue_consumer_new(&fx->loop, fx->pool, &fx->qopts, &opts, &c), 0);
    run_until(&fx->loop, never, NULL, 1000);
    rw_queue_stats_t st;
    rw_queue_consumer_stats(c, &st);
    /* Waits of 10, 20, 40, 80, then 100 ms: about 14 polls in a second of loop
     * time, however fast the machine; a busy loop would make thousands. */
    printf("polls in 1 s: %llu\n", (unsigned long long)st.polls);
    assert_true(st.polls >= 1);
    assert_true(st.polls <= 16);
    assert_int_equal(st.polls, st.empty_polls);

    /* A kick after an enqueue polls at once instead of waiting out the backoff. */
    char id[RW_QUEUE_ID_LEN];
    rw_queue_msg_t msg = {.queue = "q", .function = "idle", .payload = "{}", .len = 2};
    enqueue_sync(fx, &msg, id);
    h->mode = OK;
    h->hold_ms = -1;
    rw_queue_consumer_kick(c);
    until_t u = {h, c, 1};
    assert_true(run_until(&fx->loop, ended_and_recorded, &u, 20000));
    close_consumer(&fx->loop, c);
    free(h);
}

static void closing_releases_a_message_the_invoker_gives_back(void **state)
{
    fx_t *fx = *state;
    char id[RW_QUEUE_ID_LEN];
    rw_queue_msg_t msg = {.queue = "q", .function = "held", .payload = "{}", .len = 2};
    enqueue_sync(fx, &msg, id);
    handler_t *h = calloc(1, sizeof *h);
    h->mode = HOLD;
    rw_queue_consumer_t *c = consumer(fx, &fx->loop, h, "held", 1, 0, "test-a");
    assert_true(run_until(&fx->loop, has_delivery, h, 20000));
    /* Shutting down: the invoker gives the delivery back, as the environment
     * manager does when it closes; the message is ready again, attempt uncounted. */
    rw_queue_consumer_close(c, NULL, NULL);
    rw_queue_delivery_done(h->held[0], RW_QUEUE_RELEASE, NULL, 0);
    uv_run(&fx->loop, UV_RUN_DEFAULT);
    bson_t *doc = find_doc(fx, RW_QUEUE_COLLECTION, id);
    assert_non_null(doc);
    assert_string_equal(get_str(doc, "state"), "ready");
    assert_int_equal(get_int(doc, "attempts"), 0);
    assert_false(has(doc, "owner"));
    assert_int_equal(get_int(doc, "gen"), 2); /* claimed, then released */
    bson_destroy(doc);
    free(h);
}

/* ---- queue targets: SQS batches, redrives, Lambda's destinations ------------------- */

#define MAX_BATCH_RECS 256

typedef struct {
    char id[RW_QUEUE_ID_LEN + 100], message_id[RW_QUEUE_ID_LEN + 100], receipt[200];
    char payload[64], function[32], queue[32];
    int attempt, batch;
    int64_t at_ms, first_received_ms, created_at_ms;
    int64_t lease_end_ms; /* its receive (claim) + the target's lease */
} brec_t;

typedef struct {
    brec_t recs[MAX_BATCH_RECS];
    int n;
    int batches, sizes[MAX_BATCH_RECS];
    bool fail_all;      /* every message of function "worker" fails */
    const char *fail_prefix; /* messages whose payload starts so fail */
    bool refuse_once;   /* the first batch is refused (UV_EBUSY) */
} bhandler_t;

static int invoke_batch(void *arg, const char *function, rw_queue_delivery_t *const *ds, size_t n)
{
    bhandler_t *h = arg;
    if (h->refuse_once) {
        h->refuse_once = false;
        return UV_EBUSY;
    }
    if (h->batches < MAX_BATCH_RECS)
        h->sizes[h->batches] = (int)n;
    int batch = h->batches++;
    for (size_t i = 0; i < n; i++) {
        rw_queue_delivery_t *d = ds[i];
        bool fail = (h->fail_all && strcmp(function, "worker") == 0) ||
                    (h->fail_prefix && !strncmp(d->payload, h->fail_prefix,
                                                strlen(h->fail_prefix)));
        if (h->n < MAX_BATCH_RECS) {
            brec_t *r = &h->recs[h->n++];
            snprintf(r->id, sizeof r->id, "%s", d->id);
            snprintf(r->message_id, sizeof r->message_id, "%s", d->message_id);
            snprintf(r->receipt, sizeof r->receipt, "%s", d->receipt);
            snprintf(r->payload, sizeof r->payload, "%.*s", (int)d->len, d->payload);
            snprintf(r->function, sizeof r->function, "%s", function);
            snprintf(r->queue, sizeof r->queue, "%s", d->queue);
            r->attempt = d->attempt;
            r->batch = batch;
            r->at_ms = now_ms();
            r->first_received_ms = d->first_received_ms;
            r->created_at_ms = d->created_at_ms;
            r->lease_end_ms = d->lease_end_ms;
        }
        if (fail)
            rw_queue_delivery_done(d, RW_QUEUE_FAILED,
                                   "{\"errorType\":\"Boom\",\"errorMessage\":\"no\"}", 38);
        else
            rw_queue_delivery_done(d, RW_QUEUE_OK, NULL, 0);
    }
    return 0;
}

static rw_queue_consumer_t *queue_consumer(fx_t *fx, bhandler_t *h, const rw_queue_target_t *ts,
                                           size_t n)
{
    rw_queue_consumer_opts_t opts = {
        .owner = "test-q",
        .targets = ts,
        .n_targets = n,
        .poll_min_ms = 10,
        .poll_max_ms = 50,
        .release_delay_ms = 30,
        .invoke_batch = invoke_batch,
        .invoke_arg = h,
    };
    rw_queue_consumer_t *c = NULL;
    assert_int_equal(rw_queue_consumer_new(&fx->loop, fx->pool, &fx->qopts, &opts, &c), 0);
    return c;
}

static void send_sqs(fx_t *fx, const char *queue, const char *payload, char id[RW_QUEUE_ID_LEN])
{
    rw_queue_msg_t msg = {.queue = queue, .payload = payload, .len = strlen(payload)};
    enqueue_sync(fx, &msg, id);
}

typedef struct {
    fx_t *fx;
    bhandler_t *h;
    rw_queue_consumer_t *c;
    int want;
    const char *queue;
} bwait_t;

/* want deliveries seen, nothing in flight, and (with queue) that queue empty. */
static bool batch_done(void *arg)
{
    bwait_t *w = arg;
    if (w->h->n < w->want || rw_queue_consumer_inflight(w->c) != 0)
        return false;
    if (!w->queue)
        return true;
    bson_t *f = BCON_NEW("queue", BCON_UTF8(w->queue));
    int64_t n = count(w->fx, RW_QUEUE_COLLECTION, f);
    bson_destroy(f);
    return n == 0;
}

static void sqs_messages_arrive_in_batches_of_at_most_batch_size(void **state)
{
    fx_t *fx = *state;
    char ids[7][RW_QUEUE_ID_LEN];
    for (int i = 0; i < 7; i++) {
        char body[16];
        snprintf(body, sizeof body, "m%d", i);
        send_sqs(fx, "sqs:jobs", body, ids[i]);
    }
    bson_t *doc = find_doc(fx, RW_QUEUE_COLLECTION, ids[0]);
    assert_non_null(doc);
    assert_false(has(doc, "function")); /* its queue's subscribers consume it */
    bson_destroy(doc);
    bhandler_t *h = calloc(1, sizeof *h);
    rw_queue_target_t t = {.function = "worker",
                           .queue = "sqs:jobs",
                           .concurrency = 1,
                           .visibility_ms = 10000,
                           .batch_size = 3,
                           .sqs_visibility_ms = 10000};
    rw_queue_consumer_t *c = queue_consumer(fx, h, &t, 1);
    bwait_t w = {fx, h, c, 7, "sqs:jobs"};
    assert_true(run_until(&fx->loop, batch_done, &w, 20000));
    run_until(&fx->loop, never, NULL, 200);
    assert_int_equal(h->n, 7);
    assert_true(h->batches >= 3);
    for (int b = 0; b < h->batches; b++)
        assert_in_range(h->sizes[b], 1, 3);
    /* Each message once, with what an SQS record needs. */
    for (int i = 0; i < 7; i++) {
        int seen = 0;
        for (int k = 0; k < h->n; k++) {
            const brec_t *r = &h->recs[k];
            if (strcmp(r->id, ids[i]) != 0)
                continue;
            seen++;
            char body[16], receipt[64];
            snprintf(body, sizeof body, "m%d", i);
            snprintf(receipt, sizeof receipt, "%s#1", ids[i]);
            assert_string_equal(r->payload, body);
            assert_string_equal(r->message_id, ids[i]);
            assert_string_equal(r->receipt, receipt);
            assert_string_equal(r->function, "worker");
            assert_string_equal(r->queue, "sqs:jobs");
            assert_int_equal(r->attempt, 1);
            assert_true(r->first_received_ms >= r->created_at_ms);
        }
        assert_int_equal(seen, 1);
    }
    rw_queue_stats_t st;
    rw_queue_consumer_stats(c, &st);
    assert_int_equal(st.batches, (uint64_t)h->batches);
    assert_int_equal(st.succeeded, 7);
    assert_int_equal(count(fx, RW_QUEUE_CLAIMS, NULL), 0);
    close_consumer(&fx->loop, c);
    free(h);
}

static void a_batch_window_gathers_then_goes(void **state)
{
    fx_t *fx = *state;
    /* A full batch goes at once, however long its window. */
    char id[RW_QUEUE_ID_LEN];
    for (int i = 0; i < 4; i++)
        send_sqs(fx, "sqs:full", "x", id);
    bhandler_t *h = calloc(1, sizeof *h);
    rw_queue_target_t t = {.function = "worker",
                           .queue = "sqs:full",
                           .concurrency = 1,
                           .visibility_ms = 120000,
                           .batch_size = 4,
                           .batch_window_ms = 60000,
                           .sqs_visibility_ms = 1000};
    rw_queue_consumer_t *c = queue_consumer(fx, h, &t, 1);
    bwait_t w = {fx, h, c, 4, "sqs:full"};
    assert_true(run_until(&fx->loop, batch_done, &w, 20000));
    assert_int_equal(h->batches, 1);
    assert_int_equal(h->sizes[0], 4);
    close_consumer(&fx->loop, c);

    /* A batch that does not fill goes when its window closes, whole. */
    memset(h, 0, sizeof *h);
    send_sqs(fx, "sqs:part", "a", id);
    send_sqs(fx, "sqs:part", "b", id);
    t.queue = "sqs:part";
    t.batch_size = 10;
    t.batch_window_ms = 300;
    c = queue_consumer(fx, h, &t, 1);
    w = (bwait_t){fx, h, c, 2, "sqs:part"};
    assert_true(run_until(&fx->loop, batch_done, &w, 20000));
    assert_int_equal(h->batches, 1);
    assert_int_equal(h->sizes[0], 2);
    /* A refused batch is given back, uncounted, and comes again. */
    memset(h, 0, sizeof *h);
    h->refuse_once = true;
    send_sqs(fx, "sqs:part", "c", id);
    w = (bwait_t){fx, h, c, 1, "sqs:part"};
    assert_true(run_until(&fx->loop, batch_done, &w, 20000));
    assert_int_equal(h->recs[0].attempt, 1);
    close_consumer(&fx->loop, c);
    free(h);
}

static const brec_t *rec_of(const bhandler_t *h, const char *function, int nth)
{
    for (int k = 0; k < h->n; k++)
        if (strcmp(h->recs[k].function, function) == 0 && nth-- == 0)
            return &h->recs[k];
    return NULL;
}

static bool dlq_received(void *arg)
{
    bwait_t *w = arg;
    return rec_of(w->h, "dlq-worker", 0) != NULL && rw_queue_consumer_inflight(w->c) == 0;
}

static void failures_return_after_the_visibility_timeout_then_redrive(void **state)
{
    fx_t *fx = *state;
    char id[RW_QUEUE_ID_LEN];
    send_sqs(fx, "sqs:work", "p1", id);
    bson_t *orig = find_doc(fx, RW_QUEUE_COLLECTION, id);
    int64_t created = get_date(orig, "created_at");
    bson_destroy(orig);
    bhandler_t *h = calloc(1, sizeof *h);
    h->fail_all = true;
    rw_queue_forward_t redrive = {
        .kind = RW_QUEUE_FORWARD_REDRIVE, .queue = "sqs:work-dlq", .max_age_ms = 3600000};
    rw_queue_target_t ts[2] = {{.function = "worker",
                                .queue = "sqs:work",
                                .concurrency = 1,
                                .visibility_ms = 10000,
                                .batch_size = 10,
                                .sqs_visibility_ms = 400,
                                .max_receives = 2,
                                .forwards = &redrive,
                                .n_forwards = 1},
                               {.function = "dlq-worker",
                                .queue = "sqs:work-dlq",
                                .concurrency = 1,
                                .visibility_ms = 10000,
                                .batch_size = 10,
                                .sqs_visibility_ms = 1000}};
    rw_queue_consumer_t *c = queue_consumer(fx, h, ts, 2);
    bwait_t w = {fx, h, c, 0, NULL};
    assert_true(run_until(&fx->loop, dlq_received, &w, 20000));
    /* Received twice (maxReceiveCount 2), the second time no sooner than the
     * visibility timeout after the first receive, then moved. */
    const brec_t *first = rec_of(h, "worker", 0), *second = rec_of(h, "worker", 1);
    assert_non_null(first);
    assert_non_null(second);
    assert_null(rec_of(h, "worker", 2));
    assert_int_equal(first->attempt, 1);
    assert_int_equal(second->attempt, 2);
    /* Measured between the receives (both leases are the receive + 10 s),
     * not the invocations, which a loaded loop may dispatch a little late. */
    assert_true(second->lease_end_ms - first->lease_end_ms >= 400);
    assert_int_equal(second->first_received_ms, first->first_received_ms);
    /* In the dead-letter queue it is the same SQS message: MessageId, body and
     * SentTimestamp kept, its receive count starting again. */
    const brec_t *moved = rec_of(h, "dlq-worker", 0);
    assert_string_equal(moved->message_id, id);
    assert_string_not_equal(moved->id, id);
    assert_string_equal(moved->payload, "p1");
    assert_string_equal(moved->queue, "sqs:work-dlq");
    assert_int_equal(moved->attempt, 1);
    assert_int_equal(moved->created_at_ms, created);
    /* It lives on there: no dead letter, nothing left behind. */
    assert_int_equal(count(fx, RW_QUEUE_DEAD_LETTERS, NULL), 0);
    run_until(&fx->loop, never, NULL, 200);
    assert_int_equal(count(fx, RW_QUEUE_COLLECTION, NULL), 0);
    assert_int_equal(count(fx, RW_QUEUE_CLAIMS, NULL), 0);
    rw_queue_stats_t st;
    rw_queue_consumer_stats(c, &st);
    assert_int_equal(st.retried, 1);
    assert_int_equal(st.dead_lettered, 1);
    close_consumer(&fx->loop, c);
    free(h);
}

static bool bad_seen_twice(void *arg)
{
    bwait_t *w = arg;
    int n = 0;
    for (int k = 0; k < w->h->n; k++)
        n += strcmp(w->h->recs[k].payload, "bad") == 0;
    return n >= 2 && rw_queue_consumer_inflight(w->c) == 0;
}

static void a_partial_failure_keeps_only_the_failed(void **state)
{
    fx_t *fx = *state;
    char ok1[RW_QUEUE_ID_LEN], bad[RW_QUEUE_ID_LEN], ok2[RW_QUEUE_ID_LEN];
    send_sqs(fx, "sqs:mixed", "ok1", ok1);
    send_sqs(fx, "sqs:mixed", "bad", bad);
    send_sqs(fx, "sqs:mixed", "ok2", ok2);
    bhandler_t *h = calloc(1, sizeof *h);
    h->fail_prefix = "bad";
    /* No redrive policy: a failing message comes back for as long as it is kept. */
    rw_queue_target_t t = {.function = "worker",
                           .queue = "sqs:mixed",
                           .concurrency = 1,
                           .visibility_ms = 10000,
                           .batch_size = 3,
                           .batch_window_ms = 5000,
                           .sqs_visibility_ms = 200};
    rw_queue_consumer_t *c = queue_consumer(fx, h, &t, 1);
    bwait_t w = {fx, h, c, 0, NULL};
    assert_true(run_until(&fx->loop, bad_seen_twice, &w, 20000));
    assert_int_equal(h->sizes[0], 3);
    int oks = 0;
    for (int k = 0; k < h->n; k++)
        oks += strncmp(h->recs[k].payload, "ok", 2) == 0;
    assert_int_equal(oks, 2);
    assert_null(find_doc(fx, RW_QUEUE_COLLECTION, ok1));
    assert_null(find_doc(fx, RW_QUEUE_COLLECTION, ok2));
    bson_t *doc = find_doc(fx, RW_QUEUE_COLLECTION, bad);
    assert_non_null(doc);
    assert_true(get_int(doc, "failures") >= 2);
    bson_destroy(doc);
    assert_int_equal(count(fx, RW_QUEUE_DEAD_LETTERS, NULL), 0);
    close_consumer(&fx->loop, c);
    free(h);
}

static bool has_letter(void *arg)
{
    fx_t *fx = ((void **)arg)[0];
    rw_queue_consumer_t *c = ((void **)arg)[1];
    return count(fx, RW_QUEUE_DEAD_LETTERS, NULL) == 1 && rw_queue_consumer_inflight(c) == 0;
}

/* The one message of queue, or NULL. */
static bson_t *only_message_of(fx_t *fx, const char *queue)
{
    mongoc_collection_t *cl = coll(fx, RW_QUEUE_COLLECTION);
    bson_t *filter = BCON_NEW("queue", BCON_UTF8(queue));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(cl, filter, NULL, NULL);
    const bson_t *doc;
    bson_t *out = mongoc_cursor_next(cur, &doc) ? bson_copy(doc) : NULL;
    if (out && mongoc_cursor_next(cur, &doc)) {
        bson_destroy(out);
        out = NULL;
        fail_msg("more than one message in %s", queue);
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(cl);
    return out;
}

static void a_dead_invocation_reaches_its_destinations(void **state)
{
    fx_t *fx = *state;
    char id[RW_QUEUE_ID_LEN];
    rw_queue_msg_t msg = {
        .queue = "lambda-async", .function = "fn", .payload = "{\"order\":7}", .len = 11,
        .max_attempts = 1};
    enqueue_sync(fx, &msg, id);
    handler_t *h = calloc(1, sizeof *h);
    h->mode = FAIL;
    h->hold_ms = -1;
    h->loop = &fx->loop;
    rw_queue_forward_t fw[2] = {{.kind = RW_QUEUE_FORWARD_ON_FAILURE,
                                 .queue = "sqs:failures",
                                 .function_arn = "arn:aws:lambda:us-east-1:000000000000:function:fn"},
                                {.kind = RW_QUEUE_FORWARD_DLQ, .queue = "sqs:dlq"}};
    rw_queue_target_t t = {.function = "fn", .concurrency = 1, .forwards = fw, .n_forwards = 2};
    rw_queue_consumer_opts_t opts = {.targets = &t,
                                     .n_targets = 1,
                                     .poll_min_ms = 10,
                                     .poll_max_ms = 50,
                                     .invoke = invoke,
                                     .invoke_arg = h};
    rw_queue_consumer_t *c = NULL;
    assert_int_equal(rw_queue_consumer_new(&fx->loop, fx->pool, &fx->qopts, &opts, &c), 0);
    void *args[2] = {fx, c};
    assert_true(run_until(&fx->loop, has_letter, args, 20000));
    close_consumer(&fx->loop, c);

    /* The dead letter is kept, and Lambda's OnFailure record waits in its queue. */
    bson_t *letter = find_doc(fx, RW_QUEUE_DEAD_LETTERS, id);
    assert_non_null(letter);
    assert_string_equal(get_str(letter, "dead_reason"), "RetriesExhausted");
    bson_destroy(letter);
    bson_t *rec = only_message_of(fx, "sqs:failures");
    assert_non_null(rec);
    assert_false(has(rec, "function"));
    cJSON *j = cJSON_Parse(get_str(rec, "payload"));
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "version")->valuestring, "1.0");
    assert_non_null(cJSON_GetObjectItem(j, "timestamp"));
    cJSON *ctx = cJSON_GetObjectItem(j, "requestContext");
    assert_string_equal(cJSON_GetObjectItem(ctx, "requestId")->valuestring, id);
    assert_string_equal(cJSON_GetObjectItem(ctx, "functionArn")->valuestring,
                        "arn:aws:lambda:us-east-1:000000000000:function:fn:$LATEST");
    assert_string_equal(cJSON_GetObjectItem(ctx, "condition")->valuestring, "RetriesExhausted");
    assert_int_equal(cJSON_GetObjectItem(ctx, "approximateInvokeCount")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "requestPayload"), "order")
                         ->valueint,
                     7);
    cJSON *resp = cJSON_GetObjectItem(j, "responseContext");
    assert_int_equal(cJSON_GetObjectItem(resp, "statusCode")->valueint, 200);
    assert_string_equal(cJSON_GetObjectItem(resp, "functionError")->valuestring, "Unhandled");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "responsePayload"), "errorType")->valuestring,
        "Boom");
    cJSON_Delete(j);
    bson_destroy(rec);

    /* The DeadLetterQueue gets the event itself, with Lambda's attributes. */
    bson_t *dlq = only_message_of(fx, "sqs:dlq");
    assert_non_null(dlq);
    assert_string_equal(get_str(dlq, "payload"), "{\"order\":7}");
    j = cJSON_Parse(get_str(dlq, "attributes"));
    assert_non_null(j);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "RequestID"), "stringValue")->valuestring, id);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "ErrorMessage"), "stringValue")->valuestring,
        "attempt 1");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "ErrorCode"), "dataType")->valuestring,
        "String");
    cJSON_Delete(j);
    bson_destroy(dlq);
    assert_int_equal(count(fx, RW_QUEUE_CLAIMS, NULL), 0);
    free(h);
}

static void held_messages_wait_for_their_release(void **state)
{
    fx_t *fx = *state;
    char id[RW_QUEUE_ID_LEN], why[256];
    rw_queue_msg_t msg = {.queue = "q", .function = "later", .payload = "{}", .len = 2,
                          .delay_ms = 3600 * 1000};
    enqueue_sync(fx, &msg, id);
    handler_t *h = calloc(1, sizeof *h);
    h->mode = OK;
    h->hold_ms = -1;
    rw_queue_consumer_t *c = consumer(fx, &fx->loop, h, "later", 1, 0, "test-a");
    run_until(&fx->loop, never, NULL, 300);
    assert_int_equal(h->n, 0);
    assert_int_equal(rw_queue_release_held_sync(fx->client, &fx->qopts, id, why, sizeof why), 0);
    until_t u = {h, c, 1};
    assert_true(run_until(&fx->loop, ended_and_recorded, &u, 20000));
    assert_int_equal(h->n, 1);
    assert_string_equal(h->recs[0].id, id);
    /* Releasing again, or a message that is gone, changes nothing. */
    assert_int_equal(rw_queue_release_held_sync(fx->client, &fx->qopts, id, why, sizeof why), 0);
    assert_int_equal(count(fx, RW_QUEUE_COLLECTION, NULL), 0);
    close_consumer(&fx->loop, c);
    free(h);

    char a[RW_QUEUE_ID_LEN], b[RW_QUEUE_ID_LEN], d[RW_QUEUE_ID_LEN];
    rw_queue_derive_id("msg-1", "dlq:sqs:x", a);
    rw_queue_derive_id("msg-1", "dlq:sqs:x", b);
    rw_queue_derive_id("msg-1", "dlq:sqs:y", d);
    assert_string_equal(a, b);
    assert_string_not_equal(a, d);
    assert_int_equal(strlen(a), 36);
    assert_int_equal(a[14], '8');
}

int main(void)
{
    mongoc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(enqueue_then_consume, setup, teardown),
        cmocka_unit_test_setup_teardown(failing_handler_is_retried_then_dead_lettered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(too_old_and_unstartable_messages_are_dead_lettered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(throttled_delivery_is_released_without_counting, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(ended_lease_redelivers_and_the_stale_holder_changes_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(restart_finishes_whatever_a_dead_consumer_left, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(old_records_of_dead_actors_are_swept, setup, teardown),
        cmocka_unit_test_setup_teardown(two_consumers_never_share_a_message, setup, teardown),
        cmocka_unit_test_setup_teardown(enqueue_refuses_what_it_cannot_keep, setup, teardown),
        cmocka_unit_test_setup_teardown(indexes_are_created_idempotently, setup, teardown),
        cmocka_unit_test_setup_teardown(an_empty_queue_is_polled_with_backoff, setup, teardown),
        cmocka_unit_test_setup_teardown(closing_releases_a_message_the_invoker_gives_back, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(sqs_messages_arrive_in_batches_of_at_most_batch_size,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_batch_window_gathers_then_goes, setup, teardown),
        cmocka_unit_test_setup_teardown(failures_return_after_the_visibility_timeout_then_redrive,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_partial_failure_keeps_only_the_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(a_dead_invocation_reaches_its_destinations, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(held_messages_wait_for_their_release, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    mongoc_cleanup();
    return failed;
}
