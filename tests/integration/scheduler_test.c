/* The scheduler against the real database, in process: schedulers that each
 * hold a lease of their own race for every due time and the claims (unique
 * inserts) let each fire once; schedulers sharing the lease elect one that
 * fires, and a clean close hands the lease over. Time: rate(1 minute) with
 * time_scale 60 (the test hook) is due each second. The "function" is never
 * run: the test reads the invocations the firings left in the queue. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "queue.h"
#include "scheduler.h"
#include "rw_test.h"

typedef struct {
    uv_loop_t loop;
    char db[96];
    mongoc_client_pool_t *pool;
    mongoc_client_t *client;
    rw_queue_opts_t qopts;
    int closed;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    rw_test_db_name(fx->db, sizeof fx->db, "sched");
    bson_error_t error;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(rw_test_mongo_uri(), &error);
    if (!uri)
        return -1;
    fx->pool = mongoc_client_pool_new(uri);
    mongoc_uri_destroy(uri);
    mongoc_client_pool_set_error_api(fx->pool, MONGOC_ERROR_API_VERSION_2);
    fx->client = mongoc_client_new(rw_test_mongo_uri());
    fx->qopts.db_name = fx->db;
    uv_loop_init(&fx->loop);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    for (int i = 0; i < 100 && uv_run(&fx->loop, UV_RUN_NOWAIT) != 0; i++)
        uv_sleep(10);
    int rc = uv_loop_close(&fx->loop);
    rw_test_drop_db(rw_test_mongo_uri(), fx->db);
    mongoc_client_destroy(fx->client);
    mongoc_client_pool_destroy(fx->pool);
    free(fx);
    assert_int_equal(rc, 0); /* nothing left open */
    return 0;
}

static void start(fx_t *fx, const char *owner, const char *leases, rw_scheduler_t **out)
{
    static const rw_schedule_spec_t spec = {.name = "every-minute",
                                            .function = "Tick",
                                            .expression = "rate(1 minute)",
                                            .is_rate = true,
                                            .rate_s = 60,
                                            .enabled = true,
                                            .max_attempts = 1};
    rw_scheduler_opts_t opts = {.schedules = &spec,
                                .n_schedules = 1,
                                .owner = owner,
                                .lease_ms = 3000,
                                .time_scale = 60,
                                .leases_collection = leases};
    char why[256] = "";
    int rc = rw_scheduler_new(&fx->loop, fx->pool, &fx->qopts, &opts, out, why, sizeof why);
    if (rc != 0)
        fail_msg("rw_scheduler_new: %d %s", rc, why);
}

static void on_closed(void *arg)
{
    ((fx_t *)arg)->closed++;
}

static void close_all(fx_t *fx, rw_scheduler_t **s, int n)
{
    fx->closed = 0;
    for (int i = 0; i < n; i++)
        if (s[i])
            rw_scheduler_close(s[i], on_closed, fx);
    for (int waited = 0; fx->closed < n && waited < 30000; waited += 5) {
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        uv_sleep(5);
    }
    assert_int_equal(fx->closed, n);
}

/* The scheduled events the firings queued, as a cJSON array of payloads. */
static cJSON *fired_events(fx_t *fx)
{
    mongoc_collection_t *coll = mongoc_client_get_collection(fx->client, fx->db,
                                                              RW_QUEUE_COLLECTION);
    bson_t *filter = BCON_NEW("function", BCON_UTF8("Tick"));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, NULL, NULL);
    cJSON *out = cJSON_CreateArray();
    const bson_t *doc;
    bson_iter_t it;
    while (mongoc_cursor_next(cur, &doc))
        if (bson_iter_init_find(&it, doc, "payload") && BSON_ITER_HOLDS_UTF8(&it))
            cJSON_AddItemToArray(out, cJSON_Parse(bson_iter_utf8(&it, NULL)));
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    return out;
}

/* The claims (rw_schedule_firings), as a cJSON array. */
static cJSON *all_firings(fx_t *fx)
{
    mongoc_collection_t *coll = mongoc_client_get_collection(fx->client, fx->db,
                                                              RW_SCHEDULE_FIRINGS);
    bson_t *filter = bson_new();
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, NULL, NULL);
    cJSON *out = cJSON_CreateArray();
    const bson_t *doc;
    while (mongoc_cursor_next(cur, &doc)) {
        char *json = bson_as_relaxed_extended_json(doc, NULL);
        cJSON_AddItemToArray(out, cJSON_Parse(json));
        bson_free(json);
    }
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    return out;
}

/* Runs the loop until the queue holds at least want firings (bounded). */
static void run_until_fired(fx_t *fx, int want, int timeout_ms)
{
    int n = 0;
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        uv_run(&fx->loop, UV_RUN_NOWAIT);
        uv_sleep(20);
        if (waited % 200 == 0) {
            cJSON *ev = fired_events(fx);
            n = cJSON_GetArraySize(ev);
            cJSON_Delete(ev);
            if (n >= want)
                return;
        }
    }
    fail_msg("%d firings after %d ms, want %d", n, timeout_ms, want);
}

/* Every firing is of a due time of its own; returns how many. */
static int check_once_per_due_time(fx_t *fx)
{
    cJSON *ev = fired_events(fx);
    int n = cJSON_GetArraySize(ev);
    for (int i = 0; i < n; i++) {
        const cJSON *a = cJSON_GetArrayItem(ev, i);
        const char *ta = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "time"));
        assert_non_null(ta);
        for (int k = 0; k < i; k++) {
            const cJSON *b = cJSON_GetArrayItem(ev, k);
            const char *tb = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(b, "time"));
            if (!strcmp(ta, tb))
                fail_msg("due time %s fired twice", ta);
        }
    }
    cJSON_Delete(ev);
    return n;
}

static void rival_leaders_fire_each_due_time_once(void **state)
{
    fx_t *fx = *state;
    /* Three schedulers, each with a lease chain of its own: all three lead,
     * all three fire, and only the claims keep a due time from firing twice. */
    rw_scheduler_t *s[3] = {NULL};
    start(fx, "a", "leases_a", &s[0]);
    start(fx, "b", "leases_b", &s[1]);
    start(fx, "c", "leases_c", &s[2]);
    run_until_fired(fx, 6, 60000);
    for (int i = 0; i < 3; i++) {
        rw_scheduler_stats_t st;
        rw_scheduler_stats(s[i], &st);
        assert_true(st.leader);
    }
    close_all(fx, s, 3);
    int n = check_once_per_due_time(fx);
    /* Each queued invocation is the one of a single claim, which names it. */
    cJSON *claims = all_firings(fx), *events = fired_events(fx);
    int fired = 0;
    const cJSON *c, *e;
    cJSON_ArrayForEach(c, claims)
    {
        const char *st = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "state"));
        if (!strcmp(st, "skipped"))
            continue;
        assert_string_equal(st, "released");
        fired++;
        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "msg"));
        int found = 0;
        cJSON_ArrayForEach(e, events)
        {
            found += !strcmp(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "id")), msg);
        }
        assert_int_equal(found, 1);
    }
    assert_int_equal(fired, n);
    cJSON_Delete(events);
    cJSON_Delete(claims);
}

static void shared_lease_elects_one_and_hands_over_on_close(void **state)
{
    fx_t *fx = *state;
    rw_scheduler_t *s[2] = {NULL};
    start(fx, "a", NULL, &s[0]);
    start(fx, "b", NULL, &s[1]);
    run_until_fired(fx, 3, 60000);
    rw_scheduler_stats_t st[2];
    rw_scheduler_stats(s[0], &st[0]);
    rw_scheduler_stats(s[1], &st[1]);
    /* One leads and fires; the other waits. */
    assert_int_equal((int)st[0].leader + (int)st[1].leader, 1);
    int leader = st[0].leader ? 0 : 1, other = 1 - leader;
    assert_int_equal((int)st[other].fired, 0);
    int before = check_once_per_due_time(fx);
    /* The leader closes: it ends its link, the other takes over at once
     * (well within the 3 s lease) and goes on firing. */
    fx->closed = 0;
    rw_scheduler_close(s[leader], on_closed, fx);
    s[leader] = NULL;
    run_until_fired(fx, before + 3, 60000);
    assert_int_equal(fx->closed, 1);
    rw_scheduler_stats(s[other], &st[other]);
    assert_true(st[other].leader);
    assert_true(st[other].fired >= 1);
    close_all(fx, &s[other], 1);
    check_once_per_due_time(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(rival_leaders_fire_each_due_time_once, setup, teardown),
        cmocka_unit_test_setup_teardown(shared_lease_elects_one_and_hands_over_on_close, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
