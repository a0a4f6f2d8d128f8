/* The scheduler (scheduler.h): a timer on the loop wakes a threadpool job at
 * the next due time or lease renewal; the job keeps the lease, claims and
 * fires the due times, and finishes the firings a dead holder left. */
#include "scheduler.h"
#include "docs.h"

#include "cron.h"

#include "reelway/error.h"

#include <cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define SCOPE "scheduler"
#define RETRY_MS 1000           /* after a database error */
#define FOLLOWER_MAX_WAIT_MS 60000
#define RECOVER_AFTER_MS 2000   /* a claim this old whose holder is gone is finished by us */
#define SWEEP_EVERY_MS (600 * 1000LL)
#define SWEEP_AGE_MS (3600 * 1000LL)
#define MAX_DUE_STEPS 200000    /* due times walked in one tick (a week of minutes is 10080) */

typedef struct sched_s {
    char *name, *function, *expression, *input, *dead_letter;
    bool is_rate;
    int64_t period_s;
    rw_cron_t cron;
    bool enabled;
    int max_attempts;
    int64_t max_age_ms;
} sched_t;

struct rw_scheduler_s {
    uv_loop_t *loop;
    mongoc_client_pool_t *pool;
    rw_queue_opts_t qopts;
    char db_name[128];
    sched_t *scheds;
    size_t n_scheds;
    char owner[200];
    char leases[64]; /* the lease chain's collection */
    char region[64], account[64];
    int64_t lease_ms;
    uv_timer_t timer;
    uv_work_t work;
    bool job_out, closing, closed_timer, final_done;
    /* The job's state: touched by one job at a time, read on the loop between jobs. */
    bool indexes_ready;
    bool leader;
    int64_t lease_n, lease_at, lease_expires, lead_since;
    int64_t last_recover, last_sweep;
    int64_t next_wake;  /* epoch ms */
    unsigned fired_now; /* this job's firings */
    rw_scheduler_stats_t job_stats; /* this job's counts, added to stats on the loop */
    rw_scheduler_stats_t stats;
    bool stepped_down;
    bool job_steps_down; /* set on the loop before a job is queued: that job only steps down
                            (the job never reads `closing`, which the loop may set meanwhile) */
    void (*on_fired)(void *arg);
    void *arg;
    void (*close_done)(void *arg);
    void *close_arg;
};

static int64_t epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void make_uuid(char out[RW_QUEUE_ID_LEN])
{
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        /* Unseeded or interrupted: derive one from the time, unique enough. */
        char seed[64];
        snprintf(seed, sizeof seed, "%" PRId64 ":%p", epoch_ms(), (void *)out);
        rw_queue_derive_id(seed, "uuid", out);
        return;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, RW_QUEUE_ID_LEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

static mongoc_collection_t *get_coll(rw_scheduler_t *s, mongoc_client_t *client, const char *name)
{
    const char *db = s->db_name;
    if (!db[0]) {
        const char *d = mongoc_uri_get_database(mongoc_client_get_uri(client));
        db = d && *d ? d : "reelway";
    }
    return mongoc_client_get_collection(client, db, name);
}

/* Inserts doc into coll: 0, UV_EEXIST (the _id is taken: someone else won) or RW_EDB. */
static int insert(mongoc_collection_t *coll, const bson_t *doc, char *why, size_t whylen)
{
    bson_t opts = BSON_INITIALIZER;
    rw_docs_append_majority(&opts);
    bson_error_t error;
    bool ok = mongoc_collection_insert_one(coll, doc, &opts, NULL, &error);
    bson_destroy(&opts);
    if (ok)
        return 0;
    if (error.code == 11000)
        return UV_EEXIST;
    return rw_docs_error(&error, "cannot write", why, whylen);
}

/* ---- due times ------------------------------------------------------------------- */

/* The first due time of sc after after_s, or -1 (never again). */
static int64_t next_due(const sched_t *sc, int64_t after_s)
{
    return sc->is_rate ? rw_rate_next(sc->period_s, after_s) : rw_cron_next(&sc->cron, after_s);
}

static void iso_time(int64_t s, char out[32])
{
    time_t t = (time_t)s;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The event of a firing: the schedule's Input, or EventBridge's scheduled event. */
static char *event_of(const rw_scheduler_t *s, const sched_t *sc, int64_t due_s, const char *id)
{
    if (sc->input)
        return strdup(sc->input);
    char when[32], arn[512];
    iso_time(due_s, when);
    snprintf(arn, sizeof arn, "arn:aws:events:%s:%s:rule/%s", s->region, s->account, sc->name);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "version", "0");
    cJSON_AddStringToObject(e, "id", id);
    cJSON_AddStringToObject(e, "detail-type", "Scheduled Event");
    cJSON_AddStringToObject(e, "source", "aws.events");
    cJSON_AddStringToObject(e, "account", s->account);
    cJSON_AddStringToObject(e, "time", when);
    cJSON_AddStringToObject(e, "region", s->region);
    cJSON *resources = cJSON_AddArrayToObject(e, "resources");
    cJSON_AddItemToArray(resources, cJSON_CreateString(arn));
    cJSON_AddObjectToObject(e, "detail");
    char *text = cJSON_PrintUnformatted(e);
    cJSON_Delete(e);
    return text;
}

/* ---- the job (threadpool) --------------------------------------------------------- */

typedef struct job_ctx_s {
    rw_scheduler_t *s;
    mongoc_client_t *client;
    mongoc_collection_t *leases, *firings;
    int64_t now; /* ms */
    char why[256];
} job_ctx_t;

/* One index per command (FerretDB 1.24 drops the connection when a
 * createIndexes of several indexes finds them all there: see queue.c). */
static int create_index(mongoc_client_t *client, rw_scheduler_t *s, const char *coll,
                        const char *name, const char *f1, int d1, const char *f2, int d2,
                        char *why, size_t whylen)
{
    mongoc_collection_t *c = get_coll(s, client, coll);
    bson_t *keys = f2 ? BCON_NEW(f1, BCON_INT32(d1), f2, BCON_INT32(d2))
                      : BCON_NEW(f1, BCON_INT32(d1));
    bson_t cmd = BSON_INITIALIZER, indexes, index;
    BSON_APPEND_UTF8(&cmd, "createIndexes", mongoc_collection_get_name(c));
    bson_append_array_begin(&cmd, "indexes", -1, &indexes);
    bson_append_document_begin(&indexes, "0", -1, &index);
    BSON_APPEND_DOCUMENT(&index, "key", keys);
    BSON_APPEND_UTF8(&index, "name", name);
    bson_append_document_end(&indexes, &index);
    bson_append_array_end(&cmd, &indexes);
    bson_error_t error;
    bool ok = mongoc_collection_write_command_with_opts(c, &cmd, NULL, NULL, &error);
    bson_destroy(&cmd);
    bson_destroy(keys);
    mongoc_collection_destroy(c);
    return ok ? 0 : rw_docs_error(&error, "cannot create the scheduler's indexes", why, whylen);
}

/* Inserts lease link n for us, lasting `until`. 0: ours; UV_EEXIST: taken. */
static int insert_link(job_ctx_t *j, int64_t n, int64_t until)
{
    rw_scheduler_t *s = j->s;
    char key[64];
    snprintf(key, sizeof key, SCOPE "#%" PRId64, n);
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(key), "scope", BCON_UTF8(SCOPE), "n", BCON_INT64(n),
                           "owner", BCON_UTF8(s->owner), "at", BCON_DATE_TIME(j->now),
                           "expires_at", BCON_DATE_TIME(until));
    int rc = insert(j->leases, doc, j->why, sizeof j->why);
    bson_destroy(doc);
    if (rc == 0) {
        s->lease_n = n;
        s->lease_at = j->now;
        s->lease_expires = until;
        /* Links far behind are of no use to anyone. */
        bson_t *old = BCON_NEW("scope", BCON_UTF8(SCOPE), "n", "{", "$lt", BCON_INT64(n - 2), "}");
        mongoc_collection_delete_many(j->leases, old, NULL, NULL, NULL);
        bson_destroy(old);
    }
    return rc;
}

/* Keeps or takes the lease. Returns 0 (s->leader says the outcome) or RW_EDB. */
static int keep_lease(job_ctx_t *j)
{
    rw_scheduler_t *s = j->s;
    int64_t margin = s->lease_ms / 5;
    bool was_leader = s->leader;
    if (s->leader && j->now < s->lease_expires - margin) {
        if (j->now < s->lease_at + s->lease_ms / 3)
            return 0;
        int rc = insert_link(j, s->lease_n + 1, j->now + s->lease_ms);
        if (rc == UV_EEXIST) {
            /* Only a contender who saw our link expired takes the next one. */
            fprintf(stderr, "reelway: scheduler: %s lost the lease (link %" PRId64 " taken)\n",
                    s->owner, s->lease_n + 1);
            s->leader = false;
            return 0;
        }
        /* On a database error we still hold the link we have, until its margin. */
        return rc;
    }
    s->leader = false;
    bson_t *filter = BCON_NEW("scope", BCON_UTF8(SCOPE));
    bson_t *opts = BCON_NEW("sort", "{", "n", BCON_INT32(-1), "}", "limit", BCON_INT64(1));
    int rc;
    bson_t *latest = rw_docs_find_one(j->leases, filter, opts,
                                      "cannot read", &rc, j->why, sizeof j->why);
    bson_destroy(opts);
    bson_destroy(filter);
    if (rc != 0)
        return rc;
    int64_t n = latest ? rw_docs_int(latest, "n", 0) : 0;
    int64_t expires = latest ? rw_docs_date(latest, "expires_at", 0) : 0;
    const char *owner = latest ? rw_docs_utf8(latest, "owner", NULL) : NULL;
    bool mine = owner && strcmp(owner, s->owner) == 0;
    if (latest && expires > j->now && !mine) {
        /* Someone else holds it: look again when it would expire. */
        s->next_wake = expires + 20;
        bson_destroy(latest);
        return 0;
    }
    bson_destroy(latest);
    rc = insert_link(j, n + 1, j->now + s->lease_ms);
    if (rc == UV_EEXIST) {
        /* Another contender was quicker: its link lasts about this long. */
        s->next_wake = j->now + s->lease_ms;
        return 0;
    }
    if (rc != 0)
        return rc;
    s->leader = true;
    if (!was_leader || !mine) {
        s->lead_since = j->now;
        s->job_stats.leads++;
        fprintf(stderr, "reelway: scheduler: %s holds the lease (link %" PRId64 "): it fires the "
                        "schedules\n",
                s->owner, n + 1);
    }
    return 0;
}

static int set_state(job_ctx_t *j, const char *key, const char *state)
{
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(key));
    bson_t *update = BCON_NEW("$set", "{", "state", BCON_UTF8(state), "}");
    bson_t opts = BSON_INITIALIZER;
    rw_docs_append_majority(&opts);
    bson_error_t error;
    bool ok = mongoc_collection_update_one(j->firings, sel, update, &opts, NULL, &error);
    bson_destroy(&opts);
    bson_destroy(update);
    bson_destroy(sel);
    return ok ? 0 : rw_docs_error(&error, "cannot record a firing", j->why, sizeof j->why);
}

/* Carries a claimed firing through: enqueue held, mark, release, mark (see
 * scheduler.h). Every step may be repeated by whoever finds it unfinished. */
static int finish_firing(job_ctx_t *j, const sched_t *sc, int64_t due_s, const char *key,
                         const char *msg_id, const char *state)
{
    rw_scheduler_t *s = j->s;
    int rc = 0;
    if (strcmp(state, "claimed") == 0) {
        char *payload = event_of(s, sc, due_s, msg_id);
        if (!payload) {
            snprintf(j->why, sizeof j->why, "out of memory");
            return UV_ENOMEM;
        }
        rw_queue_msg_t msg = {.queue = RW_QUEUE_ASYNC,
                              .function = sc->function,
                              .payload = payload,
                              .len = strlen(payload),
                              .id = msg_id,
                              .max_attempts = sc->max_attempts,
                              .max_age_ms = sc->max_age_ms,
                              .delay_ms = RW_SCHEDULE_HOLD_MS,
                              .dead_letter = sc->dead_letter};
        char id[RW_QUEUE_ID_LEN];
        rc = rw_queue_enqueue_sync(j->client, &s->qopts, &msg, id, j->why, sizeof j->why);
        free(payload);
        if (rc == UV_EEXIST)
            rc = 0; /* enqueued before its holder died */
        if (rc == 0)
            rc = set_state(j, key, "enqueued");
        state = "enqueued";
    }
    if (rc == 0 && strcmp(state, "enqueued") == 0) {
        rc = rw_queue_release_held_sync(j->client, &s->qopts, msg_id, j->why, sizeof j->why);
        if (rc == 0)
            rc = set_state(j, key, "released");
    }
    return rc;
}

/* Claims due time due_s of sc as fired (or, disabled, as skipped). Returns 0
 * (claimed and fired, or someone else had it) or an error. */
static int claim(job_ctx_t *j, const sched_t *sc, int64_t due_s, const char *state,
                 const char *reason)
{
    rw_scheduler_t *s = j->s;
    char key[256], msg_id[RW_QUEUE_ID_LEN];
    snprintf(key, sizeof key, "%s#%" PRId64, sc->name, due_s);
    make_uuid(msg_id);
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(key), "schedule", BCON_UTF8(sc->name), "due",
                           BCON_DATE_TIME(due_s * 1000), "state", BCON_UTF8(state), "msg",
                           BCON_UTF8(msg_id), "owner", BCON_UTF8(s->owner), "at",
                           BCON_DATE_TIME(j->now));
    if (reason)
        BSON_APPEND_UTF8(doc, "reason", reason);
    int rc = insert(j->firings, doc, j->why, sizeof j->why);
    bson_destroy(doc);
    if (rc == UV_EEXIST)
        return 0;
    if (rc != 0 || strcmp(state, "claimed") != 0)
        return rc;
    rc = finish_firing(j, sc, due_s, key, msg_id, "claimed");
    if (rc == 0) {
        s->job_stats.fired++;
        s->fired_now++;
    }
    return rc;
}

static void wake_at(rw_scheduler_t *s, int64_t ms)
{
    if (ms < s->next_wake)
        s->next_wake = ms;
}

/* Fires what is due of sc. */
static int run_schedule(job_ctx_t *j, const sched_t *sc)
{
    rw_scheduler_t *s = j->s;
    int64_t now_s = j->now / 1000;
    bson_t *filter = BCON_NEW("schedule", BCON_UTF8(sc->name));
    bson_t *opts = BCON_NEW("sort", "{", "due", BCON_INT32(-1), "}", "limit", BCON_INT64(1),
                            "projection", "{", "due", BCON_INT32(1), "}");
    int rc;
    bson_t *latest = rw_docs_find_one(j->firings, filter, opts,
                                      "cannot read", &rc, j->why, sizeof j->why);
    bson_destroy(opts);
    bson_destroy(filter);
    if (rc != 0)
        return rc;
    if (!latest) {
        /* First sight: start from the next due time, as a new rule does. */
        rc = claim(j, sc, now_s, "skipped", "first seen");
        wake_at(s, j->now + 10);
        return rc;
    }
    int64_t watermark = rw_docs_date(latest, "due", 0) / 1000;
    bson_destroy(latest);
    int64_t due = next_due(sc, watermark);
    if (due < 0)
        return 0; /* never again */
    if (due > now_s) {
        wake_at(s, due * 1000);
        return 0;
    }
    if (!sc->enabled) {
        /* Disabled: the latest due time is marked skipped, so that enabling
         * the schedule again does not fire for the time it was off. */
        int64_t last = due;
        for (int k = 0; k < MAX_DUE_STEPS; k++) {
            int64_t next = next_due(sc, last);
            if (next < 0 || next > now_s)
                break;
            last = next;
        }
        rc = claim(j, sc, last, "skipped", "disabled");
        int64_t next = next_due(sc, last);
        if (next > 0)
            wake_at(s, next * 1000);
        return rc;
    }
    /* Due times before this worker took the lease were missed by everyone:
     * the latest of them fires once. Those since, each in turn. */
    int64_t lead_s = (s->lead_since + 999) / 1000;
    int64_t last_missed = -1, missed = 0;
    for (int k = 0; k < MAX_DUE_STEPS && due >= 0 && due <= now_s; k++) {
        if (due < lead_s) {
            last_missed = due;
            missed++;
        } else {
            if (last_missed >= 0) {
                rc = claim(j, sc, last_missed, "claimed", NULL);
                last_missed = -1;
                if (rc != 0)
                    return rc;
            }
            rc = claim(j, sc, due, "claimed", NULL);
            if (rc != 0)
                return rc;
        }
        due = next_due(sc, due);
    }
    if (last_missed >= 0) {
        if (missed > 1) {
            char when[32];
            iso_time(last_missed, when);
            fprintf(stderr,
                    "reelway: schedule %s: %" PRId64 " due times passed while no worker held the "
                    "scheduler lease; firing once, for %s\n",
                    sc->name, missed, when);
        }
        rc = claim(j, sc, last_missed, "claimed", NULL);
        if (rc != 0)
            return rc;
    }
    if (due > 0)
        wake_at(s, due * 1000);
    return 0;
}

static const sched_t *find_sched(const rw_scheduler_t *s, const char *name)
{
    for (size_t i = 0; i < s->n_scheds; i++)
        if (strcmp(s->scheds[i].name, name) == 0)
            return &s->scheds[i];
    return NULL;
}

/* Finishes the firings whose holder died between their claim and their release. */
static int recover(job_ctx_t *j)
{
    rw_scheduler_t *s = j->s;
    bson_t *filter = BCON_NEW("state", "{", "$in", "[", BCON_UTF8("claimed"), BCON_UTF8("enqueued"),
                              "]", "}", "at", "{", "$lt", BCON_DATE_TIME(j->now - RECOVER_AFTER_MS),
                              "}");
    bson_t *opts = BCON_NEW("limit", BCON_INT64(100));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(j->firings, filter, opts, NULL);
    const bson_t *doc;
    int rc = 0;
    while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
        const char *key = rw_docs_utf8(doc, "_id", NULL);
        const char *name = rw_docs_utf8(doc, "schedule", NULL);
        const char *msg = rw_docs_utf8(doc, "msg", NULL), *state = rw_docs_utf8(doc, "state", NULL);
        const sched_t *sc = name ? find_sched(s, name) : NULL;
        if (!key || !msg || !state || !sc)
            continue; /* a schedule no longer in the template: swept in time */
        rc = finish_firing(j, sc, rw_docs_date(doc, "due", 0) / 1000, key, msg, state);
        if (rc == 0) {
            s->job_stats.recovered++;
            s->fired_now++;
            fprintf(stderr, "reelway: schedule %s: finished the firing %s its holder left\n", name,
                    key);
        }
    }
    bson_error_t error;
    if (rc == 0 && mongoc_cursor_error(cur, &error))
        rc = rw_docs_error(&error, "cannot look for unfinished firings", j->why, sizeof j->why);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(filter);
    return rc;
}

/* Drops firings older than an hour behind each schedule's watermark, and
 * finished ones of schedules no longer in the template after a day. The
 * watermark itself always stays. */
static void sweep(job_ctx_t *j)
{
    rw_scheduler_t *s = j->s;
    for (size_t i = 0; i < s->n_scheds; i++) {
        bson_t *filter = BCON_NEW("schedule", BCON_UTF8(s->scheds[i].name));
        bson_t *opts = BCON_NEW("sort", "{", "due", BCON_INT32(-1), "}", "limit", BCON_INT64(1));
        int rc;
        bson_t *latest = rw_docs_find_one(j->firings, filter, opts,
                                          "cannot read", &rc, j->why, sizeof j->why);
        if (latest) {
            bson_t *old = BCON_NEW("schedule", BCON_UTF8(s->scheds[i].name), "due", "{", "$lt",
                                   BCON_DATE_TIME(rw_docs_date(latest, "due", 0)), "}", "at", "{",
                                   "$lt", BCON_DATE_TIME(j->now - SWEEP_AGE_MS), "}", "state", "{",
                                   "$in", "[", BCON_UTF8("released"), BCON_UTF8("skipped"), "]",
                                   "}");
            mongoc_collection_delete_many(j->firings, old, NULL, NULL, NULL);
            bson_destroy(old);
            bson_destroy(latest);
        }
        bson_destroy(opts);
        bson_destroy(filter);
    }
}

static void on_work(uv_work_t *w)
{
    rw_scheduler_t *s = w->data;
    job_ctx_t j = {.s = s};
    j.client = mongoc_client_pool_pop(s->pool);
    j.leases = get_coll(s, j.client, s->leases);
    j.firings = get_coll(s, j.client, RW_SCHEDULE_FIRINGS);
    j.now = epoch_ms();
    s->fired_now = 0;
    memset(&s->job_stats, 0, sizeof s->job_stats);
    s->job_stats.ticks = 1;
    int rc = 0;
    if (s->job_steps_down) {
        /* Stepping down: a link that expires now lets another take over at once. */
        if (s->leader && j.now < s->lease_expires)
            insert_link(&j, s->lease_n + 1, j.now);
        s->leader = false;
        s->stepped_down = true;
        goto out;
    }
    s->next_wake = j.now + FOLLOWER_MAX_WAIT_MS;
    if (!s->indexes_ready) {
        rc = create_index(j.client, s, s->leases, "scope_1_n_-1", "scope", 1, "n", -1,
                          j.why, sizeof j.why);
        if (rc == 0)
            rc = create_index(j.client, s, RW_SCHEDULE_FIRINGS, "schedule_1_due_-1", "schedule",
                              1, "due", -1, j.why, sizeof j.why);
        if (rc != 0)
            goto out;
        s->indexes_ready = true;
    }
    rc = keep_lease(&j);
    if (rc != 0 || !s->leader)
        goto out;
    /* Renew in time, act only while the link is good. */
    wake_at(s, s->lease_at + s->lease_ms / 3);
    if (j.now - s->last_recover >= s->lease_ms / 3) {
        rc = recover(&j);
        if (rc != 0)
            goto out;
        s->last_recover = j.now;
    }
    for (size_t i = 0; i < s->n_scheds && rc == 0; i++) {
        j.now = epoch_ms();
        if (j.now >= s->lease_expires - s->lease_ms / 5)
            break; /* the link is running out: renew first */
        rc = run_schedule(&j, &s->scheds[i]);
    }
    if (rc == 0 && j.now - s->last_sweep >= SWEEP_EVERY_MS) {
        sweep(&j);
        s->last_sweep = j.now;
    }
out:
    if (rc != 0) {
        s->job_stats.db_errors++;
        fprintf(stderr, "reelway: scheduler: %s\n", j.why);
        s->next_wake = epoch_ms() + RETRY_MS;
    }
    mongoc_collection_destroy(j.firings);
    mongoc_collection_destroy(j.leases);
    mongoc_client_pool_push(s->pool, j.client);
}

static void arm(rw_scheduler_t *s);

static void scheduler_free(rw_scheduler_t *s)
{
    void (*done)(void *) = s->close_done;
    void *arg = s->close_arg;
    for (size_t i = 0; i < s->n_scheds; i++) {
        sched_t *sc = &s->scheds[i];
        free(sc->name);
        free(sc->function);
        free(sc->expression);
        free(sc->input);
        free(sc->dead_letter);
    }
    free(s->scheds);
    free(s);
    if (done)
        done(arg);
}

static void maybe_free(rw_scheduler_t *s)
{
    if (s->closing && s->closed_timer && !s->job_out && s->final_done)
        scheduler_free(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    rw_scheduler_t *s = h->data;
    s->closed_timer = true;
    maybe_free(s);
}


static void on_work_done(uv_work_t *w, int status)
{
    rw_scheduler_t *s = w->data;
    s->job_out = false;
    s->stats.ticks += s->job_stats.ticks;
    s->stats.leads += s->job_stats.leads;
    s->stats.fired += s->job_stats.fired;
    s->stats.recovered += s->job_stats.recovered;
    s->stats.db_errors += s->job_stats.db_errors;
    s->stats.leader = s->leader;
    if (s->closing) {
        /* A job that was out when the close came did not step down: one more. */
        s->job_steps_down = true;
        if (!s->stepped_down && s->leader &&
            uv_queue_work(s->loop, &s->work, on_work, on_work_done) == 0) {
            s->job_out = true;
            return;
        }
        s->final_done = true;
        maybe_free(s);
        return;
    }
    if (s->fired_now && s->on_fired)
        s->on_fired(s->arg);
    arm(s);
}

static void on_timer(uv_timer_t *t)
{
    rw_scheduler_t *s = t->data;
    if (s->closing || s->job_out)
        return;
    s->work.data = s;
    s->job_steps_down = false;
    if (uv_queue_work(s->loop, &s->work, on_work, on_work_done) != 0) {
        uv_timer_start(&s->timer, on_timer, RETRY_MS, 0);
        return;
    }
    s->job_out = true;
}

static void arm(rw_scheduler_t *s)
{
    int64_t wait = s->next_wake - epoch_ms();
    /* A little after the due second, so that the job sees it passed. */
    wait = wait < 0 ? 0 : wait + 5;
    if (wait > FOLLOWER_MAX_WAIT_MS)
        wait = FOLLOWER_MAX_WAIT_MS;
    uv_timer_start(&s->timer, on_timer, (uint64_t)wait, 0);
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    *oom |= d == NULL;
    return d;
}

int rw_scheduler_new(uv_loop_t *loop, mongoc_client_pool_t *pool, const rw_queue_opts_t *qopts,
                     const rw_scheduler_opts_t *opts, rw_scheduler_t **out, char *why,
                     size_t whylen)
{
    if (!opts || !opts->owner || !pool) {
        snprintf(why, whylen, "the scheduler needs an owner and a database");
        return RW_ECONFIG;
    }
    rw_scheduler_t *s = calloc(1, sizeof *s);
    if (!s)
        return UV_ENOMEM;
    s->scheds = calloc(opts->n_schedules ? opts->n_schedules : 1, sizeof *s->scheds);
    if (!s->scheds) {
        free(s);
        return UV_ENOMEM;
    }
    int scale = opts->time_scale > 0 ? opts->time_scale : 1;
    bool oom = false;
    for (size_t i = 0; i < opts->n_schedules; i++) {
        const rw_schedule_spec_t *o = &opts->schedules[i];
        sched_t *sc = &s->scheds[s->n_scheds++];
        sc->name = dup_or_null(o->name, &oom);
        sc->function = dup_or_null(o->function, &oom);
        sc->expression = dup_or_null(o->expression ? o->expression : "", &oom);
        sc->input = dup_or_null(o->input, &oom);
        sc->dead_letter = dup_or_null(o->dead_letter, &oom);
        sc->is_rate = o->is_rate;
        sc->enabled = o->enabled;
        sc->max_attempts = o->max_attempts;
        sc->max_age_ms = o->max_age_ms;
        if (oom)
            break;
        int rc = 0;
        if (!o->name || !o->function) {
            snprintf(why, whylen, "a schedule needs a name and a function");
            rc = RW_ECONFIG;
        } else if (o->is_rate) {
            sc->period_s = o->rate_s / scale > 0 ? o->rate_s / scale : 1;
            if (o->rate_s <= 0) {
                snprintf(why, whylen, "schedule %s: rate period %" PRId64 " s", o->name,
                         o->rate_s);
                rc = RW_ECONFIG;
            }
        } else {
            char reason[128] = "";
            if (!o->cron || rw_cron_parse(&sc->cron, o->cron, reason, sizeof reason) != 0) {
                snprintf(why, whylen, "schedule %s: %s: %s", o->name, sc->expression,
                         o->cron ? reason : "no cron fields");
                rc = RW_ECONFIG;
            }
        }
        if (rc != 0) {
            s->closing = true;
            s->closed_timer = s->final_done = true;
            s->close_done = NULL;
            scheduler_free(s);
            return rc;
        }
    }
    if (oom) {
        s->close_done = NULL;
        scheduler_free(s);
        return UV_ENOMEM;
    }
    s->loop = loop;
    s->pool = pool;
    if (qopts)
        s->qopts = *qopts;
    snprintf(s->db_name, sizeof s->db_name, "%s", qopts && qopts->db_name ? qopts->db_name : "");
    s->qopts.db_name = s->db_name[0] ? s->db_name : NULL;
    s->qopts.collection = s->qopts.claims = s->qopts.dead_letters = NULL;
    if (qopts) {
        /* Other collection names are the tests'; keep them borrowed as given. */
        s->qopts.collection = qopts->collection;
        s->qopts.claims = qopts->claims;
        s->qopts.dead_letters = qopts->dead_letters;
    }
    snprintf(s->owner, sizeof s->owner, "%s", opts->owner);
    snprintf(s->leases, sizeof s->leases, "%s",
             opts->leases_collection ? opts->leases_collection : RW_SCHEDULE_LEASES);
    snprintf(s->region, sizeof s->region, "%s", opts->region ? opts->region : "us-east-1");
    snprintf(s->account, sizeof s->account, "%s",
             opts->account_id ? opts->account_id : "000000000000");
    s->lease_ms = opts->lease_ms ? (int64_t)opts->lease_ms : 15000;
    if (s->lease_ms < 300)
        s->lease_ms = 300;
    s->on_fired = opts->on_fired;
    s->arg = opts->arg;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, on_timer, 0, 0);
    *out = s;
    return 0;
}

void rw_scheduler_stats(const rw_scheduler_t *s, rw_scheduler_stats_t *out)
{
    *out = s->stats;
}

void rw_scheduler_close(rw_scheduler_t *s, void (*done)(void *arg), void *arg)
{
    if (s->closing)
        return;
    s->closing = true;
    s->close_done = done;
    s->close_arg = arg;
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
    if (s->job_out)
        return; /* when it ends, on_work_done queues the job that steps down */
    s->work.data = s;
    s->job_steps_down = true;
    if (uv_queue_work(s->loop, &s->work, on_work, on_work_done) == 0)
        s->job_out = true;
    else
        s->final_done = true;
}
