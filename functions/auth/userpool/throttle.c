/* Failed logins: repeated failures for one account are slowed down (an
 * exponential delay after LOGIN_SLOW_AFTER failures), then locked for
 * LOGIN_LOCK_S after LOGIN_LOCK_AFTER; a success starts over.
 *
 * The counter is shared by every gateway, and FerretDB 1.x runs $inc and
 * findAndModify without isolation, so the state is an append-only log per
 * key: each change inserts {_id: "<key>#<seq>", key, seq, failures, next_at,
 * locked_until} with seq one past the latest. Two environments changing the
 * same state race for the same _id, the database's primary key accepts one,
 * and the other reads the new state and tries again: a compare-and-swap that
 * works on MongoDB and FerretDB alike. An attempt is counted as failed when
 * it is claimed, before the password is checked, so parallel guesses cannot
 * all slip in before the first failure is recorded.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "reelway/error.h"
#include "userpool.h"

/* Claims lost in a row before the attempt is simply asked to wait. */
#define CAS_ATTEMPTS 8
/* States kept behind the latest, so that a racer that read an old state
 * cannot insert into a _id freed by pruning. */
#define KEEP_STATES 16

typedef struct state_s {
    int64_t seq;
    int failures;
    int64_t next_at_ms;
    int64_t locked_until_ms;
} state_t;

static int64_t ceil_s(int64_t ms)
{
    return ms <= 0 ? 0 : (ms + 999) / 1000;
}

/* The delay the failure count f imposes on the next attempt. */
static int64_t delay_ms(const up_config_t *cfg, int f)
{
    if (f < cfg->login_slow_after)
        return 0;
    int shift = f - cfg->login_slow_after;
    int64_t d = cfg->login_delay_base_ms;
    while (shift-- > 0 && d < cfg->login_delay_max_ms)
        d *= 2;
    return d < cfg->login_delay_max_ms ? d : cfg->login_delay_max_ms;
}

static int load_state(up_db_t *db, const char *key, state_t *st)
{
    bson_t *filter = BCON_NEW("key", BCON_UTF8(key));
    bson_t *opts = BCON_NEW("sort", "{", "seq", BCON_INT32(-1), "}");
    bson_t *doc = NULL;
    int rc = up_db_find_one(db, UP_COLL_THROTTLE, filter, opts, &doc);
    bson_destroy(filter);
    bson_destroy(opts);
    memset(st, 0, sizeof *st);
    if (rc == 0 && doc != NULL) {
        st->seq = up_bson_int(doc, "seq", 0);
        st->failures = (int)up_bson_int(doc, "failures", 0);
        st->next_at_ms = up_bson_date(doc, "next_at", 0);
        st->locked_until_ms = up_bson_date(doc, "locked_until", 0);
    }
    if (doc)
        bson_destroy(doc);
    return rc;
}

/* Inserts state st under key#st->seq: 0, -EEXIST (someone else wrote that
 * state first) or RW_EDB. */
static int insert_state(up_db_t *db, const char *key, const state_t *st)
{
    char id[128];
    snprintf(id, sizeof id, "%s#%lld", key, (long long)st->seq);
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "key", key);
    BSON_APPEND_INT64(&doc, "seq", st->seq);
    BSON_APPEND_INT32(&doc, "failures", st->failures);
    if (st->next_at_ms > 0)
        BSON_APPEND_DATE_TIME(&doc, "next_at", st->next_at_ms);
    if (st->locked_until_ms > 0)
        BSON_APPEND_DATE_TIME(&doc, "locked_until", st->locked_until_ms);
    BSON_APPEND_DATE_TIME(&doc, "at", up_now_ms());
    bson_error_t error;
    mongoc_collection_t *c = up_db_coll(db, UP_COLL_THROTTLE);
    int rc =
        mongoc_collection_insert_one(c, &doc, NULL, NULL, &error) ? 0 : up_db_error(db, &error);
    mongoc_collection_destroy(c);
    bson_destroy(&doc);
    return rc;
}

/* Drops states long behind seq (best effort: they only take space). */
static void prune(up_db_t *db, const char *key, int64_t seq)
{
    if (seq <= KEEP_STATES)
        return;
    bson_t *filter =
        BCON_NEW("key", BCON_UTF8(key), "seq", "{", "$lt", BCON_INT64(seq - KEEP_STATES), "}");
    mongoc_collection_t *c = up_db_coll(db, UP_COLL_THROTTLE);
    mongoc_collection_delete_many(c, filter, NULL, NULL, NULL);
    mongoc_collection_destroy(c);
    bson_destroy(filter);
}

int up_throttle_claim(up_db_t *db, const char *key, up_attempt_t *a)
{
    const up_config_t *cfg = &db->app->cfg;
    state_t st;
    int rc;

    memset(a, 0, sizeof *a);
    snprintf(a->key, sizeof a->key, "%s", key);
    for (int i = 0; i < CAS_ATTEMPTS; i++) {
        if ((rc = load_state(db, key, &st)) != 0)
            return rc;
        int64_t now = up_now_ms();
        if (st.locked_until_ms > now) {
            a->verdict = UP_ATTEMPT_LOCKED;
            a->retry_after_s = ceil_s(st.locked_until_ms - now);
            return 0;
        }
        if (st.next_at_ms > now) {
            a->verdict = UP_ATTEMPT_SLOWED;
            a->retry_after_s = ceil_s(st.next_at_ms - now);
            return 0;
        }
        state_t next = {.seq = st.seq + 1, .failures = st.failures + 1};
        int64_t d = delay_ms(cfg, next.failures);
        next.next_at_ms = d > 0 ? now + d : 0;
        rc = insert_state(db, key, &next);
        if (rc == 0) {
            a->verdict = UP_ATTEMPT_GO;
            a->seq = next.seq;
            a->failures = next.failures;
            return 0;
        }
        if (rc != -EEXIST)
            return rc;
    }
    /* Lost every race: many attempts at once on one account. */
    a->verdict = UP_ATTEMPT_SLOWED;
    a->retry_after_s = 1;
    return 0;
}

/* Writes a state after the latest one, whatever it is now. */
static int append_state(up_db_t *db, const char *key, int64_t after_seq, state_t *next,
                        bool skip_if_locked)
{
    int rc = 0;
    int64_t seq = after_seq;
    for (int i = 0; i < CAS_ATTEMPTS; i++) {
        next->seq = seq + 1;
        if ((rc = insert_state(db, key, next)) != -EEXIST)
            break;
        state_t st;
        if ((rc = load_state(db, key, &st)) != 0)
            break;
        if (skip_if_locked && st.locked_until_ms > up_now_ms())
            return 0;
        seq = st.seq;
        rc = RW_EDB;
    }
    if (rc == 0)
        prune(db, key, next->seq);
    return rc;
}

int up_throttle_success(up_db_t *db, const up_attempt_t *a)
{
    state_t next = {0};
    return append_state(db, a->key, a->seq, &next, false);
}

int up_throttle_failure(up_db_t *db, const up_attempt_t *a, int64_t *retry_after_s)
{
    const up_config_t *cfg = &db->app->cfg;
    *retry_after_s = 0;
    if (a->failures >= cfg->login_lock_after) {
        state_t next = {.locked_until_ms = up_now_ms() + cfg->login_lock_s * 1000};
        rw_runtime_log(NULL, RW_RUNTIME_WARN, "login locked for %lld s after %d failures (%s)",
                       (long long)cfg->login_lock_s, a->failures, a->key);
        *retry_after_s = cfg->login_lock_s;
        return append_state(db, a->key, a->seq, &next, true);
    }
    /* The delay the claim set ran from the claim; it should run from this
     * answer, or a slow password check would eat it. Best effort: a conflict
     * means a newer state (another claim, a reset, a lock) governs anyway. */
    int64_t d = delay_ms(cfg, a->failures);
    if (d > 0) {
        state_t next = {.seq = a->seq + 1, .failures = a->failures, .next_at_ms = up_now_ms() + d};
        int rc = insert_state(db, a->key, &next);
        if (rc != 0 && rc != -EEXIST)
            return rc;
    }
    *retry_after_s = ceil_s(d);
    return 0;
}
