/* API keys and usage plans against the real database (FerretDB, or MongoDB
 * with MONGODB_URI): keys created, listed, revoked and associated, stored only
 * hashed under a unique index; then requests over real HTTP through the
 * checker: 403 for missing, malformed, unknown, revoked and plan-less keys,
 * 429 Too Many Requests with Retry-After past the burst, 429 Limit Exceeded
 * past the quota, revocation within the cache bound; quota counted exactly
 * under concurrent increments; quota periods in UTC. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apikeys.h"
#include "reelway/error.h"
#include "rw_http_client.h"
#include "rw_test.h"

/* No token comes back while a test runs: one per 1000 s. */
#define SLOW 0.001

typedef struct fx_s {
    char db[96];
    mongoc_client_t *client; /* the test's own, for the blocking calls */
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    rw_test_loop_t *thread;
    rw_http_server_t *srv;
    int port;
    rw_apikeys_t *ak;
    /* admin results, written on the loop thread */
    int admin_status;
    char admin_key[RW_APIKEY_MAX + 1];
    size_t admin_n;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    const char *uri = rw_test_mongo_uri();
    rw_test_db_name(fx->db, sizeof fx->db, "apikeys");
    fx->client = mongoc_client_new(uri);
    assert_non_null(fx->client);
    mongoc_client_set_error_api(fx->client, MONGOC_ERROR_API_VERSION_2);
    fx->uri = mongoc_uri_new(uri);
    fx->pool = mongoc_client_pool_new(fx->uri);
    mongoc_client_pool_set_error_api(fx->pool, MONGOC_ERROR_API_VERSION_2);
    *state = fx;
    return 0;
}

static void stop_loop(uv_loop_t *loop, void *arg)
{
    fx_t *fx = arg;
    if (fx->ak)
        rw_apikeys_close(fx->ak, NULL, NULL);
    fx->ak = NULL;
    if (fx->srv)
        rw_http_server_shutdown(fx->srv, NULL, NULL);
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (fx->thread)
        assert_int_equal(rw_test_loop_stop(fx->thread, stop_loop, fx), 0);
    mongoc_client_pool_destroy(fx->pool);
    mongoc_uri_destroy(fx->uri);
    mongoc_database_t *db = mongoc_client_get_database(fx->client, fx->db);
    bson_error_t error;
    mongoc_database_drop(db, &error);
    mongoc_database_destroy(db);
    mongoc_client_destroy(fx->client);
    free(fx);
    return 0;
}

static void create(fx_t *fx, const char *name, const char *const *plans, size_t n,
                   rw_apikey_record_t *rec, char key[RW_APIKEY_MAX + 1])
{
    char err[256];
    int rc = rw_apikeys_create_sync(fx->client, fx->db, name, plans, n, rec, key, err, sizeof err);
    if (rc != 0)
        fail_msg("create: %d %s", rc, err);
}

/* ---- blocking administration --------------------------------------------- */

static void creates_lists_revokes_and_stores_only_hashes(void **state)
{
    fx_t *fx = *state;
    char err[256];
    rw_apikey_record_t rec, rec2;
    char key[RW_APIKEY_MAX + 1], key2[RW_APIKEY_MAX + 1];
    static const char *const basic[] = {"basic"};
    create(fx, "mobile app", basic, 1, &rec, key);
    create(fx, "partner", NULL, 0, &rec2, key2);
    assert_int_equal(strlen(rec.id), RW_APIKEY_ID_LEN);
    assert_int_equal(strncmp(key, "rwk_", 4), 0);
    assert_int_equal(rw_apikey_check_format(key, strlen(key)), 0);
    assert_string_not_equal(key, key2);
    assert_true(rec.enabled);
    assert_int_equal(rec.n_plans, 1);

    /* The database holds the hash, never the key. */
    char hash[RW_TOKEN_HASH_LEN + 1];
    assert_int_equal(rw_token_hash(key, strlen(key), hash), 0);
    mongoc_collection_t *coll = mongoc_client_get_collection(fx->client, fx->db, "rw_api_keys");
    bson_t filter = BSON_INITIALIZER;
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, NULL, NULL);
    const bson_t *doc;
    int docs = 0;
    while (mongoc_cursor_next(cur, &doc)) {
        char *json = bson_as_canonical_extended_json(doc, NULL);
        assert_null(strstr(json, key));
        assert_null(strstr(json, key + 4)); /* nor its random part */
        assert_null(strstr(json, key2 + 4));
        bson_free(json);
        docs++;
    }
    assert_int_equal(docs, 2);
    mongoc_cursor_destroy(cur);
    rw_apikey_record_t found;
    assert_int_equal(rw_apikeys_find_by_hash_sync(fx->client, fx->db, hash, &found, err,
                                                  sizeof err), 0);
    assert_string_equal(found.id, rec.id);
    assert_string_equal(found.name, "mobile app");
    rw_apikey_record_clear(&found);

    /* The hash is unique: a second document with it is refused. */
    bson_t *dup = BCON_NEW("_id", "dupe", "hash", BCON_UTF8(hash));
    bson_error_t error;
    assert_false(mongoc_collection_insert_one(coll, dup, NULL, NULL, &error));
    assert_int_equal(error.code, 11000);
    bson_destroy(dup);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);

    /* Listing: oldest first (the two may share a millisecond), with names
     * and plans. */
    rw_apikey_record_t *recs;
    size_t n;
    assert_int_equal(rw_apikeys_list_sync(fx->client, fx->db, &recs, &n, err, sizeof err), 0);
    assert_int_equal(n, 2);
    assert_true(recs[0].created_ms > 0 && recs[0].created_ms <= recs[1].created_ms);
    int mobile = strcmp(recs[0].id, rec.id) == 0 ? 0 : 1;
    assert_string_equal(recs[mobile].id, rec.id);
    assert_string_equal(recs[mobile].name, "mobile app");
    assert_true(recs[mobile].enabled);
    assert_int_equal(recs[mobile].n_plans, 1);
    assert_string_equal(recs[mobile].plans[0], "basic");
    assert_string_equal(recs[1 - mobile].id, rec2.id);
    assert_string_equal(recs[1 - mobile].name, "partner");
    assert_int_equal(recs[1 - mobile].n_plans, 0);
    rw_apikey_records_free(recs, n);

    /* Plans come and go. */
    assert_int_equal(rw_apikeys_associate_sync(fx->client, fx->db, rec.id, "pro", true, err,
                                               sizeof err), 0);
    assert_int_equal(rw_apikeys_associate_sync(fx->client, fx->db, rec.id, "pro", true, err,
                                               sizeof err), 0);
    assert_int_equal(rw_apikeys_associate_sync(fx->client, fx->db, rec.id, "basic", false, err,
                                               sizeof err), 0);
    assert_int_equal(rw_apikeys_get_sync(fx->client, fx->db, rec.id, &found, err, sizeof err), 0);
    assert_int_equal(found.n_plans, 1);
    assert_string_equal(found.plans[0], "pro");
    rw_apikey_record_clear(&found);
    assert_int_equal(rw_apikeys_associate_sync(fx->client, fx->db, "nokey00000", "pro", true, err,
                                               sizeof err), RW_ENOTFOUND);

    /* Revocation disables, keeps the record. */
    assert_int_equal(rw_apikeys_revoke_sync(fx->client, fx->db, rec.id, err, sizeof err), 0);
    assert_int_equal(rw_apikeys_get_sync(fx->client, fx->db, rec.id, &found, err, sizeof err), 0);
    assert_false(found.enabled);
    rw_apikey_record_clear(&found);
    assert_int_equal(rw_apikeys_revoke_sync(fx->client, fx->db, "nokey00000", err, sizeof err),
                     RW_ENOTFOUND);
    assert_int_equal(rw_apikeys_get_sync(fx->client, fx->db, "nokey00000", &found, err,
                                         sizeof err), RW_ENOTFOUND);

    /* Names are checked. */
    rw_apikey_record_t bad;
    assert_int_equal(rw_apikeys_create_sync(fx->client, fx->db, "", NULL, 0, &bad, key, err,
                                            sizeof err), -EINVAL);
    assert_int_equal(rw_apikeys_create_sync(fx->client, fx->db, "tab\there", NULL, 0, &bad, key,
                                            err, sizeof err), -EINVAL);
    rw_apikey_record_clear(&rec);
    rw_apikey_record_clear(&rec2);
}

/* ---- quotas ---------------------------------------------------------------- */

typedef struct {
    const char *uri, *db;
    int64_t limit;
    int tries;
    int allowed, refused, errors;
} quota_worker_t;

static void *quota_worker(void *arg)
{
    quota_worker_t *w = arg;
    mongoc_client_t *client = mongoc_client_new(w->uri);
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    int64_t now = (int64_t)time(NULL);
    for (int i = 0; i < w->tries; i++) {
        char err[256];
        int rc = rw_apikeys_quota_consume_sync(client, w->db, "gold", "key0000001", w->limit,
                                               RW_QUOTA_MONTH, now, NULL, err, sizeof err);
        if (rc == 0)
            w->allowed++;
        else if (rc == RW_ELIMIT)
            w->refused++;
        else
            w->errors++;
    }
    mongoc_client_destroy(client);
    return NULL;
}

static void counts_quota_exactly_under_concurrency(void **state)
{
    fx_t *fx = *state;
    enum { THREADS = 4, TRIES = 25 };
    quota_worker_t w[THREADS];
    pthread_t th[THREADS];
    /* A limit the workers cross together: exactly the limit gets through. */
    for (int i = 0; i < THREADS; i++) {
        w[i] = (quota_worker_t){.uri = rw_test_mongo_uri(), .db = fx->db, .limit = 60,
                                .tries = TRIES};
        pthread_create(&th[i], NULL, quota_worker, &w[i]);
    }
    int allowed = 0, refused = 0, errors = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        allowed += w[i].allowed;
        refused += w[i].refused;
        errors += w[i].errors;
    }
    assert_int_equal(errors, 0);
    assert_int_equal(allowed, 60);
    assert_int_equal(refused, THREADS * TRIES - 60);
    int64_t used = 0;
    char err[256];
    int64_t now = (int64_t)time(NULL);
    assert_int_equal(rw_apikeys_usage_sync(fx->client, fx->db, "gold", "key0000001",
                                           RW_QUOTA_MONTH, now, &used, err, sizeof err), 0);
    assert_int_equal(used, 60);
    /* A higher limit: every increment counted, none lost. */
    for (int i = 0; i < THREADS; i++) {
        w[i] = (quota_worker_t){.uri = rw_test_mongo_uri(), .db = fx->db, .limit = 1000,
                                .tries = TRIES};
        pthread_create(&th[i], NULL, quota_worker, &w[i]);
    }
    allowed = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        allowed += w[i].allowed;
        assert_int_equal(w[i].errors, 0);
    }
    assert_int_equal(allowed, THREADS * TRIES);
    assert_int_equal(rw_apikeys_usage_sync(fx->client, fx->db, "gold", "key0000001",
                                           RW_QUOTA_MONTH, now, &used, err, sizeof err), 0);
    assert_int_equal(used, 60 + THREADS * TRIES);
}

static void labels_quota_periods_in_utc(void **state)
{
    char label[16];
    int64_t end;
    const int64_t fri = 1715950800; /* 2024-05-17T13:00:00Z, a Friday */
    rw_quota_period_label(RW_QUOTA_DAY, fri, label, &end);
    assert_string_equal(label, "D2024-05-17");
    assert_int_equal(end, 1715990400); /* 2024-05-18T00:00:00Z */
    rw_quota_period_label(RW_QUOTA_WEEK, fri, label, &end);
    assert_string_equal(label, "W2024-05-13");
    assert_int_equal(end, 1716163200); /* Monday 2024-05-20 */
    rw_quota_period_label(RW_QUOTA_WEEK, 1716163199, label, &end); /* Sunday 23:59:59 */
    assert_string_equal(label, "W2024-05-13");
    rw_quota_period_label(RW_QUOTA_WEEK, 1716163200, label, &end);
    assert_string_equal(label, "W2024-05-20");
    rw_quota_period_label(RW_QUOTA_MONTH, fri, label, &end);
    assert_string_equal(label, "M2024-05");
    assert_int_equal(end, 1717200000); /* 2024-06-01 */
    rw_quota_period_label(RW_QUOTA_MONTH, 1735689599, label, &end); /* 2024-12-31T23:59:59Z */
    assert_string_equal(label, "M2024-12");
    assert_int_equal(end, 1735689600); /* 2025-01-01 */
    rw_quota_period_label(RW_QUOTA_DAY, 1709164800, label, &end); /* leap day */
    assert_string_equal(label, "D2024-02-29");
    assert_int_equal(rw_quota_period_parse("WEEK"), RW_QUOTA_WEEK);
    assert_int_equal(rw_quota_period_parse("week"), RW_QUOTA_NONE);
}

/* ---- requests over HTTP through the checker ------------------------------- */

static void handler(rw_http_req_t *req, void *arg);

static void on_checked(rw_apikeys_result_t *res, void *arg)
{
    rw_http_req_t *req = arg;
    if (res->http_status == 200) {
        char body[128];
        int n = snprintf(body, sizeof body, "{\"apiKeyId\":\"%s\",\"plan\":\"%s\"}", res->key_id,
                         res->plan_id);
        rw_http_respond(req, 200, NULL, 0, body, (size_t)n);
    } else {
        rw_apikeys_respond(req, res);
    }
}

static void handler(rw_http_req_t *req, void *arg)
{
    fx_t *fx = arg;
    const char *api = NULL;
    if (req->path_len == 2 && memcmp(req->path, "/a", 2) == 0)
        api = "api-a/prod";
    else if (req->path_len == 2 && memcmp(req->path, "/b", 2) == 0)
        api = "api-b/prod";
    rw_apikeys_result_t res;
    int rc = rw_apikeys_check(fx->ak, req, api, &res, on_checked, req);
    if (rc == RW_APIKEYS_DONE)
        on_checked(&res, req);
    else if (rc < 0)
        rw_http_respond_error(req, 500, "check failed", rw_strerror(rc), NULL, 0);
}

static const char *const api_a[] = {"api-a/prod"};
static const rw_usage_plan_t plans[] = {
    {.id = "basic", .rate_limit = SLOW, .burst_limit = 5},
    {.id = "metered", .quota_limit = 3, .quota_period = RW_QUOTA_DAY},
    {.id = "a-only", .apis = api_a, .n_apis = 1, .rate_limit = 100, .burst_limit = 100},
};

typedef struct {
    fx_t *fx;
    uint64_t ttl_ms;
    int rc;
    char why[256];
} start_t;

static void start_checker(uv_loop_t *loop, void *arg)
{
    start_t *s = arg;
    fx_t *fx = s->fx;
    rw_apikeys_config_t cfg = {.db_name = fx->db, .plans = plans, .n_plans = 3,
                               .cache_ttl_ms = s->ttl_ms};
    s->rc = rw_apikeys_new(loop, fx->pool, NULL, &cfg, &fx->ak, s->why, sizeof s->why);
    fx->srv = rw_http_server_new(loop, NULL, handler, fx);
    assert_int_equal(rw_http_server_listen(fx->srv, "127.0.0.1", 0, false), 0);
    fx->port = rw_http_server_port(fx->srv);
}

static void start(fx_t *fx, uint64_t ttl_ms)
{
    start_t s = {.fx = fx, .ttl_ms = ttl_ms};
    fx->thread = rw_test_loop_start(start_checker, &s);
    if (s.rc != 0)
        fail_msg("checker: %d %s", s.rc, s.why);
}

static void get(fx_t *fx, const char *path, const char *key, rw_test_response_t *r)
{
    char headers[256] = "";
    if (key)
        snprintf(headers, sizeof headers, "x-api-key: %s\r\n", key);
    assert_int_equal(rw_test_http(fx->port, "GET", path, headers, NULL, 0, r), 0);
}

static void expect(fx_t *fx, const char *path, const char *key, int status, const char *body)
{
    rw_test_response_t r;
    get(fx, path, key, &r);
    if (r.status != status || (body && strcmp(r.body, body) != 0))
        fail_msg("%s: got %d %s, want %d %s", path, r.status, r.body, status, body ? body : "");
    rw_test_response_free(&r);
}

typedef struct {
    fx_t *fx;
    rw_apikeys_stats_t st;
} stats_t;

static void do_stats(uv_loop_t *loop, void *arg)
{
    stats_t *s = arg;
    rw_apikeys_stats(s->fx->ak, &s->st);
}

static rw_apikeys_stats_t stats(fx_t *fx)
{
    stats_t s = {.fx = fx};
    rw_test_loop_call(fx->thread, do_stats, &s);
    return s.st;
}

static const char forbidden[] = "{\"message\":\"Forbidden\"}";

static void answers_403_429_and_limit_exceeded_as_api_gateway(void **state)
{
    fx_t *fx = *state;
    rw_apikey_record_t rb, rm, ra, rr, rn;
    char kb[RW_APIKEY_MAX + 1], km[RW_APIKEY_MAX + 1], ka[RW_APIKEY_MAX + 1],
        kr[RW_APIKEY_MAX + 1], kn[RW_APIKEY_MAX + 1];
    create(fx, "basic", (const char *const[]){"basic"}, 1, &rb, kb);
    create(fx, "metered", (const char *const[]){"metered"}, 1, &rm, km);
    create(fx, "a-only", (const char *const[]){"a-only"}, 1, &ra, ka);
    create(fx, "revoked", (const char *const[]){"basic"}, 1, &rr, kr);
    create(fx, "no plan", NULL, 0, &rn, kn);
    char err[256];
    assert_int_equal(rw_apikeys_revoke_sync(fx->client, fx->db, rr.id, err, sizeof err), 0);
    start(fx, 0);

    /* No key, a malformed key, a well-formed unknown key, a revoked key, a
     * key in no plan: 403 Forbidden. */
    expect(fx, "/x", NULL, 403, forbidden);
    expect(fx, "/x", "not-a-key", 403, forbidden);
    char unknown[RW_APIKEY_MAX + 1];
    assert_int_equal(rw_apikey_generate("rwk", unknown, sizeof unknown), 0);
    expect(fx, "/x", unknown, 403, forbidden);
    expect(fx, "/x", kr, 403, forbidden);
    expect(fx, "/x", kn, 403, forbidden);
    rw_test_response_t r;
    char twice[256];
    snprintf(twice, sizeof twice, "x-api-key: %s\r\nX-API-Key: %s\r\n", kb, kb);
    assert_int_equal(rw_test_http(fx->port, "GET", "/x", twice, NULL, 0, &r), 0);
    assert_int_equal(r.status, 403);
    rw_test_response_free(&r);

    /* Throttle: burst 5, then 429 with Retry-After. */
    char want[128];
    snprintf(want, sizeof want, "{\"apiKeyId\":\"%s\",\"plan\":\"basic\"}", rb.id);
    for (int i = 0; i < 5; i++)
        expect(fx, "/x", kb, 200, want);
    get(fx, "/x", kb, &r);
    assert_int_equal(r.status, 429);
    assert_string_equal(r.body, "{\"message\":\"Too Many Requests\"}");
    char h[64];
    assert_non_null(rw_test_header(&r, "retry-after", h, sizeof h));
    assert_string_equal(h, "1000");
    rw_test_response_free(&r);
    /* The key was read from the database once, then from the cache. */
    rw_apikeys_stats_t st = stats(fx);
    assert_int_equal(st.checks, 12);
    assert_int_equal(st.lookups, 4); /* unknown, revoked, plan-less, basic */

    /* Quota: 3 a day, then 429 Limit Exceeded. */
    snprintf(want, sizeof want, "{\"apiKeyId\":\"%s\",\"plan\":\"metered\"}", rm.id);
    for (int i = 0; i < 3; i++)
        expect(fx, "/x", km, 200, want);
    expect(fx, "/x", km, 429, "{\"message\":\"Limit Exceeded\"}");
    expect(fx, "/x", km, 429, "{\"message\":\"Limit Exceeded\"}");
    int64_t used;
    assert_int_equal(rw_apikeys_usage_sync(fx->client, fx->db, "metered", rm.id, RW_QUOTA_DAY,
                                           (int64_t)time(NULL), &used, err, sizeof err), 0);
    assert_int_equal(used, 3); /* refused requests are not counted */

    /* A plan that covers API a only. */
    snprintf(want, sizeof want, "{\"apiKeyId\":\"%s\",\"plan\":\"a-only\"}", ra.id);
    expect(fx, "/a", ka, 200, want);
    expect(fx, "/b", ka, 403, forbidden);
    expect(fx, "/b", kb, 429, NULL); /* basic covers every API: still throttled */

    st = stats(fx);
    assert_int_equal(st.db_errors, 0);
    assert_int_equal(st.quota_calls, 5);
    rw_apikey_record_clear(&rb);
    rw_apikey_record_clear(&rm);
    rw_apikey_record_clear(&ra);
    rw_apikey_record_clear(&rr);
    rw_apikey_record_clear(&rn);
}

static void caches_lookups_and_honours_revocation_within_the_bound(void **state)
{
    fx_t *fx = *state;
    rw_apikey_record_t rec;
    char key[RW_APIKEY_MAX + 1], err[256];
    create(fx, "cached", (const char *const[]){"a-only"}, 1, &rec, key);
    start(fx, 1500);
    for (int i = 0; i < 4; i++)
        expect(fx, "/a", key, 200, NULL);
    rw_apikeys_stats_t st = stats(fx);
    assert_int_equal(st.lookups, 1);
    assert_int_equal(st.cache_hits, 3);

    /* Revoked by another gateway (here: the CLI's call): this one may serve
     * the key until its cache entry is 1.5 s old, and refuses it after. */
    assert_int_equal(rw_apikeys_revoke_sync(fx->client, fx->db, rec.id, err, sizeof err), 0);
    rw_test_sleep_ms(1600);
    expect(fx, "/a", key, 403, forbidden);
    st = stats(fx);
    assert_int_equal(st.lookups, 2);
    rw_apikey_record_clear(&rec);
}

/* The admin API's calls, on the loop. */
static void on_admin(rw_apikeys_admin_result_t *res, void *arg)
{
    fx_t *fx = arg;
    fx->admin_status = res->status;
    if (res->clear_key[0])
        snprintf(fx->admin_key, sizeof fx->admin_key, "%s", res->clear_key);
    fx->admin_n = res->n_recs;
}

typedef struct {
    fx_t *fx;
    int op;
    char id[32];
    int rc;
} admin_t;

static void do_admin(uv_loop_t *loop, void *arg)
{
    admin_t *a = arg;
    static const char *const p[] = {"a-only"};
    static const char *const unknown[] = {"gold"};
    switch (a->op) {
    case 0:
        a->rc = rw_apikeys_create(a->fx->ak, "from admin", p, 1, on_admin, a->fx);
        break;
    case 1:
        a->rc = rw_apikeys_list(a->fx->ak, on_admin, a->fx);
        break;
    case 2:
        a->rc = rw_apikeys_revoke(a->fx->ak, a->id, on_admin, a->fx);
        break;
    case 3:
        a->rc = rw_apikeys_create(a->fx->ak, "bad plan", unknown, 1, on_admin, a->fx);
        break;
    }
}

typedef struct {
    fx_t *fx;
    int status;
} peek_t;

static void do_peek(uv_loop_t *loop, void *arg)
{
    peek_t *p = arg;
    p->status = p->fx->admin_status;
}

/* Runs one admin call and waits (bounded) for its callback. */
static int admin(fx_t *fx, int op, const char *id)
{
    admin_t a = {.fx = fx, .op = op};
    if (id)
        snprintf(a.id, sizeof a.id, "%s", id);
    fx->admin_status = 1; /* "pending": callbacks set 0 or a negative code */
    rw_test_loop_call(fx->thread, do_admin, &a);
    if (a.rc != 0)
        return a.rc;
    peek_t p = {.fx = fx, .status = 1};
    for (int i = 0; i < 1000 && p.status == 1; i++) {
        rw_test_sleep_ms(10);
        rw_test_loop_call(fx->thread, do_peek, &p);
    }
    assert_int_not_equal(p.status, 1);
    return p.status;
}

static void administers_keys_from_the_loop(void **state)
{
    fx_t *fx = *state;
    start(fx, 60000);
    assert_int_equal(admin(fx, 0, NULL), 0);
    char key[RW_APIKEY_MAX + 1];
    snprintf(key, sizeof key, "%s", fx->admin_key);
    assert_int_equal(rw_apikey_check_format(key, strlen(key)), 0);
    rw_test_response_t r;
    get(fx, "/a", key, &r);
    assert_int_equal(r.status, 200);
    cJSON *j = cJSON_Parse(r.body);
    char id[32];
    snprintf(id, sizeof id, "%s", cJSON_GetObjectItem(j, "apiKeyId")->valuestring);
    cJSON_Delete(j);
    rw_test_response_free(&r);
    assert_int_equal(admin(fx, 1, NULL), 0);
    assert_int_equal(fx->admin_n, 1);
    /* Revoked through this worker: refused at once, despite a long cache. */
    assert_int_equal(admin(fx, 2, id), 0);
    expect(fx, "/a", key, 403, forbidden);
    assert_int_equal(admin(fx, 2, "nokey00000"), RW_ENOTFOUND);
    assert_int_equal(admin(fx, 3, NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(creates_lists_revokes_and_stores_only_hashes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(counts_quota_exactly_under_concurrency, setup, teardown),
        cmocka_unit_test(labels_quota_periods_in_utc),
        cmocka_unit_test_setup_teardown(answers_403_429_and_limit_exceeded_as_api_gateway, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(caches_lookups_and_honours_revocation_within_the_bound,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(administers_keys_from_the_loop, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
