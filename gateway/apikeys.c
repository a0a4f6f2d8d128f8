/* API keys and usage plans: the stored keys (hashed) and their administration,
 * quota counters in MongoDB, and the per-request check that ties a presented
 * x-api-key to its plan's shared throttle and quota. */
#include "apikeys.h"

#include "lru.h"

#include "reelway/error.h"

#include <errno.h>
#include <stdatomic.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DEFAULT_CACHE_TTL_MS 5000
#define DEFAULT_NEGATIVE_TTL_MS 1000
#define DEFAULT_CACHE_ENTRIES 10000
#define PRIVATE_THROTTLE_SLOTS 1024
#define DUPLICATE_KEY 11000

/* ---- records ------------------------------------------------------------ */

void rw_apikey_record_clear(rw_apikey_record_t *rec)
{
    if (!rec)
        return;
    for (size_t i = 0; i < rec->n_plans; i++)
        free(rec->plans[i]);
    free(rec->plans);
    rec->plans = NULL;
    rec->n_plans = 0;
}

void rw_apikey_records_free(rw_apikey_record_t *recs, size_t n)
{
    if (!recs)
        return;
    for (size_t i = 0; i < n; i++)
        rw_apikey_record_clear(&recs[i]);
    free(recs);
}

/* The one adapter from mongoc's errors to ours. */
static int db_error(char *err, size_t errlen, const char *what, const bson_error_t *e)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", what, e->message);
    return RW_EDB;
}

static void set_err(char *err, size_t errlen, const char *fmt, const char *arg)
{
    if (err && errlen)
        snprintf(err, errlen, fmt, arg);
}

static const char *iter_utf8(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

static int record_from_bson(const bson_t *doc, rw_apikey_record_t *rec)
{
    memset(rec, 0, sizeof *rec);
    const char *s = iter_utf8(doc, "_id");
    snprintf(rec->id, sizeof rec->id, "%s", s ? s : "");
    s = iter_utf8(doc, "name");
    snprintf(rec->name, sizeof rec->name, "%s", s ? s : "");
    bson_iter_t it, arr;
    rec->enabled = bson_iter_init_find(&it, doc, "enabled") && BSON_ITER_HOLDS_BOOL(&it) &&
                   bson_iter_bool(&it);
    if (bson_iter_init_find(&it, doc, "created") && BSON_ITER_HOLDS_DATE_TIME(&it))
        rec->created_ms = bson_iter_date_time(&it);
    if (bson_iter_init_find(&it, doc, "plans") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr)) {
        size_t n = 0;
        bson_iter_t count = arr;
        while (bson_iter_next(&count))
            n++;
        rec->plans = calloc(n ? n : 1, sizeof *rec->plans);
        if (!rec->plans)
            return -ENOMEM;
        while (bson_iter_next(&arr)) {
            if (!BSON_ITER_HOLDS_UTF8(&arr))
                continue;
            if (!(rec->plans[rec->n_plans] = strdup(bson_iter_utf8(&arr, NULL)))) {
                rw_apikey_record_clear(rec);
                return -ENOMEM;
            }
            rec->n_plans++;
        }
    }
    return 0;
}

static mongoc_collection_t *keys_coll(mongoc_client_t *client, const char *db)
{
    return mongoc_client_get_collection(client, db, RW_APIKEYS_COLLECTION);
}

static bool valid_plan_id(const char *p)
{
    size_t n = p ? strlen(p) : 0;
    if (n == 0 || n > 256)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x21 || p[i] == '|' || p[i] == 0x7f)
            return false;
    return true;
}

static bool valid_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > RW_APIKEY_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
            return false;
    return true;
}

/* ---- blocking operations ------------------------------------------------ */

static bool create_index(mongoc_client_t *client, const char *db, const char *coll,
                         bson_t *index, bson_error_t *error)
{
    bson_t *cmd = BCON_NEW("createIndexes", BCON_UTF8(coll), "indexes", "[", BCON_DOCUMENT(index),
                           "]");
    mongoc_database_t *d = mongoc_client_get_database(client, db);
    bool ok = mongoc_database_write_command_with_opts(d, cmd, NULL, NULL, error);
    mongoc_database_destroy(d);
    bson_destroy(cmd);
    return ok;
}

int rw_apikeys_ensure_indexes(mongoc_client_t *client, const char *db, char *err, size_t errlen)
{
    bson_error_t error;
    bson_t *hash = BCON_NEW("key", "{", "hash", BCON_INT32(1), "}", "name", BCON_UTF8("hash_1"),
                            "unique", BCON_BOOL(true));
    bool ok = create_index(client, db, RW_APIKEYS_COLLECTION, hash, &error);
    bson_destroy(hash);
    if (!ok)
        return db_error(err, errlen, "cannot create the unique index on rw_api_keys.hash",
                        &error);
    /* Old quota counters can go by themselves where the server has TTL
     * indexes; where it does not, they only take a little room. */
    bson_t *ttl = BCON_NEW("key", "{", "expires", BCON_INT32(1), "}", "name",
                           BCON_UTF8("expires_1"), "expireAfterSeconds", BCON_INT32(0));
    create_index(client, db, RW_APIKEYS_USAGE_COLLECTION, ttl, &error);
    create_index(client, db, RW_APIKEYS_TICKETS_COLLECTION, ttl, &error);
    bson_destroy(ttl);
    return 0;
}

/* A key id: RW_APIKEY_ID_LEN characters of [a-z0-9], uniformly drawn. */
static int make_id(char out[RW_APIKEY_ID_LEN + 1])
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    size_t n = 0;
    while (n < RW_APIKEY_ID_LEN) {
        unsigned char raw[32];
        if (RAND_bytes(raw, sizeof raw) != 1) {
            ERR_clear_error();
            return RW_ECRYPTO;
        }
        for (size_t i = 0; i < sizeof raw && n < RW_APIKEY_ID_LEN; i++)
            if (raw[i] < 252) /* 252 = 7 * 36: no modulo bias */
                out[n++] = alphabet[raw[i] % 36];
    }
    out[n] = '\0';
    return 0;
}

int rw_apikeys_create_sync(mongoc_client_t *client, const char *db, const char *name,
                           const char *const *plans, size_t n_plans, rw_apikey_record_t *rec,
                           char clear_key[RW_APIKEY_MAX + 1], char *err, size_t errlen)
{
    memset(rec, 0, sizeof *rec);
    clear_key[0] = '\0';
    if (!valid_name(name)) {
        set_err(err, errlen, "%s", "a key name is 1 to 128 printable characters");
        return -EINVAL;
    }
    for (size_t i = 0; i < n_plans; i++)
        if (!valid_plan_id(plans[i])) {
            set_err(err, errlen, "invalid usage plan id \"%s\"", plans[i] ? plans[i] : "");
            return -EINVAL;
        }
    int rc = rw_apikeys_ensure_indexes(client, db, err, errlen);
    if (rc != 0)
        return rc;
    mongoc_collection_t *coll = keys_coll(client, db);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    char hash[RW_TOKEN_HASH_LEN + 1];
    /* An id or hash collision is astronomically unlikely; retry anyway. */
    for (int attempt = 0; attempt < 3; attempt++) {
        if ((rc = rw_apikey_generate(RW_APIKEY_PREFIX, clear_key, RW_APIKEY_MAX + 1)) != 0 ||
            (rc = rw_token_hash(clear_key, strlen(clear_key), hash)) != 0 ||
            (rc = make_id(rec->id)) != 0) {
            set_err(err, errlen, "%s", "cannot generate a key");
            break;
        }
        bson_t doc = BSON_INITIALIZER, arr;
        BSON_APPEND_UTF8(&doc, "_id", rec->id);
        BSON_APPEND_UTF8(&doc, "name", name);
        BSON_APPEND_UTF8(&doc, "hash", hash);
        BSON_APPEND_BOOL(&doc, "enabled", true);
        BSON_APPEND_DATE_TIME(&doc, "created", now_ms);
        BSON_APPEND_ARRAY_BEGIN(&doc, "plans", &arr);
        for (size_t i = 0; i < n_plans; i++) {
            char k[16];
            snprintf(k, sizeof k, "%zu", i);
            bson_append_utf8(&arr, k, -1, plans[i], -1);
        }
        bson_append_array_end(&doc, &arr);
        bson_error_t error;
        bool ok = mongoc_collection_insert_one(coll, &doc, NULL, NULL, &error);
        bson_destroy(&doc);
        if (ok) {
            rc = 0;
            break;
        }
        rc = db_error(err, errlen, "cannot store the key", &error);
        if (error.code != DUPLICATE_KEY)
            break;
    }
    mongoc_collection_destroy(coll);
    if (rc != 0) {
        memset(clear_key, 0, RW_APIKEY_MAX + 1);
        return rc;
    }
    snprintf(rec->name, sizeof rec->name, "%s", name);
    rec->enabled = true;
    rec->created_ms = now_ms;
    rec->plans = calloc(n_plans ? n_plans : 1, sizeof *rec->plans);
    for (size_t i = 0; rec->plans && i < n_plans; i++)
        if ((rec->plans[i] = strdup(plans[i])))
            rec->n_plans++;
    return 0;
}

static int find_one(mongoc_client_t *client, const char *db, const bson_t *filter,
                    rw_apikey_record_t *rec, char *err, size_t errlen)
{
    mongoc_collection_t *coll = keys_coll(client, db);
    bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t error;
    int rc = RW_ENOTFOUND;
    if (mongoc_cursor_next(cur, &doc))
        rc = record_from_bson(doc, rec);
    else if (mongoc_cursor_error(cur, &error))
        rc = db_error(err, errlen, "cannot read rw_api_keys", &error);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    mongoc_collection_destroy(coll);
    if (rc == RW_ENOTFOUND)
        set_err(err, errlen, "%s", "no such key");
    return rc;
}

int rw_apikeys_get_sync(mongoc_client_t *client, const char *db, const char *id,
                        rw_apikey_record_t *rec, char *err, size_t errlen)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    int rc = find_one(client, db, filter, rec, err, errlen);
    bson_destroy(filter);
    return rc;
}

int rw_apikeys_find_by_hash_sync(mongoc_client_t *client, const char *db, const char *hash,
                                 rw_apikey_record_t *rec, char *err, size_t errlen)
{
    bson_t *filter = BCON_NEW("hash", BCON_UTF8(hash));
    int rc = find_one(client, db, filter, rec, err, errlen);
    bson_destroy(filter);
    return rc;
}

int rw_apikeys_list_sync(mongoc_client_t *client, const char *db, rw_apikey_record_t **recs,
                         size_t *n, char *err, size_t errlen)
{
    *recs = NULL;
    *n = 0;
    mongoc_collection_t *coll = keys_coll(client, db);
    bson_t filter = BSON_INITIALIZER;
    /* The hash never leaves the database through a listing. */
    bson_t *opts = BCON_NEW("sort", "{", "created", BCON_INT32(1), "_id", BCON_INT32(1), "}",
                            "projection", "{", "hash", BCON_INT32(0), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    const bson_t *doc;
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && mongoc_cursor_next(cur, &doc)) {
        if (*n == cap) {
            size_t c = cap ? cap * 2 : 16;
            rw_apikey_record_t *p = realloc(*recs, c * sizeof *p);
            if (!p) {
                rc = -ENOMEM;
                break;
            }
            *recs = p;
            cap = c;
        }
        if ((rc = record_from_bson(doc, &(*recs)[*n])) == 0)
            (*n)++;
    }
    bson_error_t error;
    if (rc == 0 && mongoc_cursor_error(cur, &error))
        rc = db_error(err, errlen, "cannot list rw_api_keys", &error);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
    if (rc != 0) {
        rw_apikey_records_free(*recs, *n);
        *recs = NULL;
        *n = 0;
    }
    return rc;
}

static int64_t reply_count(const bson_t *reply, const char *field)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, reply, field) &&
        (BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it) || BSON_ITER_HOLDS_DOUBLE(&it)))
        return bson_iter_as_int64(&it);
    return 0;
}

static int update_key(mongoc_client_t *client, const char *db, const char *id, bson_t *update,
                      char *err, size_t errlen)
{
    mongoc_collection_t *coll = keys_coll(client, db);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    bson_t reply;
    bson_error_t error;
    int rc = 0;
    if (!mongoc_collection_update_one(coll, filter, update, NULL, &reply, &error))
        rc = db_error(err, errlen, "cannot update rw_api_keys", &error);
    else if (reply_count(&reply, "matchedCount") == 0) {
        set_err(err, errlen, "no key with id \"%s\"", id);
        rc = RW_ENOTFOUND;
    }
    bson_destroy(&reply);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    return rc;
}

int rw_apikeys_revoke_sync(mongoc_client_t *client, const char *db, const char *id, char *err,
                           size_t errlen)
{
    bson_t *update = BCON_NEW("$set", "{", "enabled", BCON_BOOL(false), "}");
    int rc = update_key(client, db, id, update, err, errlen);
    bson_destroy(update);
    return rc;
}

int rw_apikeys_associate_sync(mongoc_client_t *client, const char *db, const char *id,
                              const char *plan, bool add, char *err, size_t errlen)
{
    if (!valid_plan_id(plan)) {
        set_err(err, errlen, "invalid usage plan id \"%s\"", plan ? plan : "");
        return -EINVAL;
    }
    bson_t *update = BCON_NEW(add ? "$addToSet" : "$pull", "{", "plans", BCON_UTF8(plan), "}");
    int rc = update_key(client, db, id, update, err, errlen);
    bson_destroy(update);
    return rc;
}

/* ---- quotas ------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date, and back (Howard
 * Hinnant's algorithms): no dependence on the process's time zone. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

void rw_quota_period_label(rw_quota_period_t period, int64_t now_s, char out[16], int64_t *end_s)
{
    int64_t days = now_s >= 0 ? now_s / 86400 : -((-now_s + 86399) / 86400);
    int64_t y;
    unsigned m, d;
    switch (period) {
    case RW_QUOTA_WEEK: {
        int64_t monday = days - (((days + 3) % 7) + 7) % 7; /* 1970-01-01 was a Thursday */
        civil_from_days(monday, &y, &m, &d);
        snprintf(out, 16, "W%04lld-%02u-%02u", (long long)y, m, d);
        *end_s = (monday + 7) * 86400;
        return;
    }
    case RW_QUOTA_MONTH:
        civil_from_days(days, &y, &m, &d);
        snprintf(out, 16, "M%04lld-%02u", (long long)y, m);
        *end_s = (m == 12 ? days_from_civil(y + 1, 1, 1) : days_from_civil(y, m + 1, 1)) * 86400;
        return;
    default:
        civil_from_days(days, &y, &m, &d);
        snprintf(out, 16, "D%04lld-%02u-%02u", (long long)y, m, d);
        *end_s = (days + 1) * 86400;
        return;
    }
}

rw_quota_period_t rw_quota_period_parse(const char *name)
{
    if (!name)
        return RW_QUOTA_NONE;
    if (strcmp(name, "DAY") == 0)
        return RW_QUOTA_DAY;
    if (strcmp(name, "WEEK") == 0)
        return RW_QUOTA_WEEK;
    if (strcmp(name, "MONTH") == 0)
        return RW_QUOTA_MONTH;
    return RW_QUOTA_NONE;
}

static void usage_id(char *out, size_t len, const char *plan, const char *key_id,
                     rw_quota_period_t period, int64_t now_s, int64_t *end_s, char label[16])
{
    rw_quota_period_label(period, now_s, label, end_s);
    snprintf(out, len, "%s|%s|%s", plan, key_id, label);
}

/* Which atomic step the server offers for counting. MongoDB applies an update
 * to one document atomically, filter included, so "increment if below the
 * limit" is one safe operation. FerretDB 1.x applies an update as a read
 * followed by a write of the whole document (measured here: concurrent
 * conditional increments overshoot the limit and lose counts); what it does
 * atomically is refuse a second document with the same _id. There, each
 * counted request inserts a ticket "<counter id>#<n>" for n = 1..limit: a
 * ticket number can be taken once only, so exactly `limit` requests pass.
 * One database server per process, so the answer is kept once found. */
enum { SERVER_UNKNOWN = 0, SERVER_ATOMIC_UPDATES, SERVER_INSERT_ONLY };
static _Atomic int server_kind = SERVER_UNKNOWN;

static int detect_server(mongoc_client_t *client, char *err, size_t errlen)
{
    int kind = atomic_load(&server_kind);
    if (kind != SERVER_UNKNOWN)
        return kind;
    bson_t *cmd = BCON_NEW("buildInfo", BCON_INT32(1));
    bson_t reply;
    bson_error_t error;
    bool ok = mongoc_client_command_simple(client, "admin", cmd, NULL, &reply, &error);
    bson_destroy(cmd);
    if (!ok) {
        bson_destroy(&reply);
        return db_error(err, errlen, "cannot ask the server what it is", &error);
    }
    kind = SERVER_ATOMIC_UPDATES;
    const char *ferret = iter_utf8(&reply, "ferretdbVersion");
    if (ferret) {
        const char *v = ferret[0] == 'v' ? ferret + 1 : ferret;
        if (strtol(v, NULL, 10) < 2)
            kind = SERVER_INSERT_ONLY;
    }
    bson_destroy(&reply);
    atomic_store(&server_kind, kind);
    return kind;
}

/* MongoDB: one conditional increment on the period's counter document. */
static int consume_counter(mongoc_collection_t *coll, const char *id, const char *plan,
                           const char *key_id, const char *label, int64_t end_s, int64_t limit,
                           int64_t *used, char *err, size_t errlen)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id), "count", "{", "$lt", BCON_INT64(limit), "}");
    bson_t *inc = BCON_NEW("$inc", "{", "count", BCON_INT64(1), "}");
    int rc = RW_ELIMIT;
    bool inserted_tried = false;
    /* The counter moves only through "increment if below the limit", one
     * atomic update: concurrent gateways can never push it past the limit.
     * The period's first request creates it; a racing creator loses with a
     * duplicate key and goes back to the update. */
    for (int attempt = 0; attempt < 3; attempt++) {
        bson_t reply;
        bson_error_t error;
        bool ok = mongoc_collection_update_one(coll, filter, inc, NULL, &reply, &error);
        int64_t matched = ok ? reply_count(&reply, "matchedCount") : 0;
        bson_destroy(&reply);
        if (!ok) {
            rc = db_error(err, errlen, "cannot count the request", &error);
            break;
        }
        if (matched > 0) {
            rc = 0;
            break;
        }
        if (inserted_tried) {
            rc = RW_ELIMIT;
            break;
        }
        inserted_tried = true;
        bson_t *doc = BCON_NEW("_id", BCON_UTF8(id), "plan", BCON_UTF8(plan), "key",
                               BCON_UTF8(key_id), "period", BCON_UTF8(label), "count",
                               BCON_INT64(1), "expires", BCON_DATE_TIME((end_s + 86400) * 1000));
        ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, &error);
        bson_destroy(doc);
        if (ok) {
            if (used)
                *used = 1;
            rc = 0;
            break;
        }
        if (error.code != DUPLICATE_KEY) {
            rc = db_error(err, errlen, "cannot count the request", &error);
            break;
        }
    }
    bson_destroy(inc);
    bson_destroy(filter);
    return rc;
}

/* FerretDB 1.x: take the next free ticket number. The counter document only
 * remembers the highest ticket taken, as a hint (never above the truth, so no
 * ticket is skipped); the tickets decide. */
static int consume_ticket(mongoc_client_t *client, const char *db, mongoc_collection_t *coll,
                          const char *id, const char *plan, const char *key_id, const char *label,
                          int64_t end_s, int64_t limit, int64_t *used, char *err, size_t errlen)
{
    mongoc_collection_t *tickets =
        mongoc_client_get_collection(client, db, RW_APIKEYS_TICKETS_COLLECTION);
    bson_t *byid = BCON_NEW("_id", BCON_UTF8(id));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, byid, NULL, NULL);
    const bson_t *doc;
    bson_error_t error;
    int64_t n = 1;
    int rc = 0;
    if (mongoc_cursor_next(cur, &doc))
        n = reply_count(doc, "count") + 1;
    else if (mongoc_cursor_error(cur, &error))
        rc = db_error(err, errlen, "cannot read the quota counter", &error);
    mongoc_cursor_destroy(cur);
    /* Every duplicate means another request took that number: progress
     * for someone at each step, so a bounded walk suffices. */
    for (int attempt = 0; rc == 0; attempt++) {
        if (n > limit) {
            rc = RW_ELIMIT;
            break;
        }
        if (attempt == 1000) {
            snprintf(err, errlen, "too much contention on the quota counter %s", id);
            rc = RW_EDB;
            break;
        }
        char ticket[600];
        snprintf(ticket, sizeof ticket, "%s#%012lld", id, (long long)n);
        bson_t *t = BCON_NEW("_id", BCON_UTF8(ticket), "plan", BCON_UTF8(plan), "key",
                             BCON_UTF8(key_id), "period", BCON_UTF8(label), "expires",
                             BCON_DATE_TIME((end_s + 86400) * 1000));
        bool ok = mongoc_collection_insert_one(tickets, t, NULL, NULL, &error);
        bson_destroy(t);
        if (ok)
            break;
        if (error.code != DUPLICATE_KEY)
            rc = db_error(err, errlen, "cannot count the request", &error);
        n++;
    }
    if (rc == 0) {
        if (used)
            *used = n;
        /* Best effort: move the hint up, and on a period's first ticket drop
         * the key's tickets of earlier periods. */
        if (n == 1) {
            bson_t *c = BCON_NEW("_id", BCON_UTF8(id), "plan", BCON_UTF8(plan), "key",
                                 BCON_UTF8(key_id), "period", BCON_UTF8(label), "count",
                                 BCON_INT64(1), "expires", BCON_DATE_TIME((end_s + 86400) * 1000));
            mongoc_collection_insert_one(coll, c, NULL, NULL, &error);
            bson_destroy(c);
            bson_t *old = BCON_NEW("plan", BCON_UTF8(plan), "key", BCON_UTF8(key_id), "period",
                                   "{", "$ne", BCON_UTF8(label), "}");
            mongoc_collection_delete_many(tickets, old, NULL, NULL, &error);
            mongoc_collection_delete_many(coll, old, NULL, NULL, &error);
            bson_destroy(old);
        } else {
            bson_t *f = BCON_NEW("_id", BCON_UTF8(id), "count", "{", "$lt", BCON_INT64(n), "}");
            bson_t *u = BCON_NEW("$set", "{", "count", BCON_INT64(n), "}");
            mongoc_collection_update_one(coll, f, u, NULL, NULL, &error);
            bson_destroy(u);
            bson_destroy(f);
        }
    }
    bson_destroy(byid);
    mongoc_collection_destroy(tickets);
    return rc;
}

int rw_apikeys_quota_consume_sync(mongoc_client_t *client, const char *db, const char *plan,
                                  const char *key_id, int64_t limit, rw_quota_period_t period,
                                  int64_t now_s, int64_t *used, char *err, size_t errlen)
{
    if (used)
        *used = -1;
    if (limit <= 0 || period == RW_QUOTA_NONE)
        return 0;
    int kind = detect_server(client, err, errlen);
    if (kind < 0)
        return kind;
    char id[512], label[16];
    int64_t end_s;
    usage_id(id, sizeof id, plan, key_id, period, now_s, &end_s, label);
    mongoc_collection_t *coll =
        mongoc_client_get_collection(client, db, RW_APIKEYS_USAGE_COLLECTION);
    int rc = kind == SERVER_INSERT_ONLY
                 ? consume_ticket(client, db, coll, id, plan, key_id, label, end_s, limit, used,
                                  err, errlen)
                 : consume_counter(coll, id, plan, key_id, label, end_s, limit, used, err, errlen);
    mongoc_collection_destroy(coll);
    if (rc == RW_ELIMIT)
        set_err(err, errlen, "%s", "the usage plan's quota for this period is used up");
    return rc;
}

int rw_apikeys_usage_sync(mongoc_client_t *client, const char *db, const char *plan,
                          const char *key_id, rw_quota_period_t period, int64_t now_s,
                          int64_t *used, char *err, size_t errlen)
{
    char id[512], label[16];
    int64_t end_s;
    usage_id(id, sizeof id, plan, key_id, period, now_s, &end_s, label);
    *used = 0;
    int kind = detect_server(client, err, errlen);
    if (kind < 0)
        return kind;
    bson_error_t error;
    int rc = 0;
    if (kind == SERVER_INSERT_ONLY) {
        /* The tickets are the count; the counter is only a hint. */
        mongoc_collection_t *tickets =
            mongoc_client_get_collection(client, db, RW_APIKEYS_TICKETS_COLLECTION);
        bson_t *filter = BCON_NEW("plan", BCON_UTF8(plan), "key", BCON_UTF8(key_id), "period",
                                  BCON_UTF8(label));
        int64_t n = mongoc_collection_count_documents(tickets, filter, NULL, NULL, NULL, &error);
        if (n < 0)
            rc = db_error(err, errlen, "cannot count the quota tickets", &error);
        else
            *used = n;
        bson_destroy(filter);
        mongoc_collection_destroy(tickets);
        return rc;
    }
    mongoc_collection_t *coll =
        mongoc_client_get_collection(client, db, RW_APIKEYS_USAGE_COLLECTION);
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, NULL, NULL);
    const bson_t *doc;
    if (mongoc_cursor_next(cur, &doc))
        *used = reply_count(doc, "count");
    else if (mongoc_cursor_error(cur, &error))
        rc = db_error(err, errlen, "cannot read rw_api_usage", &error);
    mongoc_cursor_destroy(cur);
    bson_destroy(filter);
    mongoc_collection_destroy(coll);
    return rc;
}

/* ---- the checker -------------------------------------------------------- */

typedef struct plan_s {
    char *id;
    char **apis;
    size_t n_apis;
    double rate, burst;
    int64_t quota_limit;
    rw_quota_period_t quota_period;
} plan_t;

/* What the cache knows about one presented key. */
typedef struct key_entry_s {
    bool found;
    bool enabled;
    char id[RW_APIKEY_ID_LEN + 1];
    char **plans;
    size_t n_plans;
} key_entry_t;

struct rw_apikeys_s {
    uv_loop_t *loop;
    mongoc_client_pool_t *pool;
    rw_throttle_t *throttle;
    bool own_throttle;
    char *db;
    plan_t *plans;
    size_t n_plans;
    uint64_t ttl_ms, negative_ttl_ms;
    rw_lru_t *cache;
    rw_apikeys_stats_t stats;
    unsigned pending;
    bool closing;
    void (*close_done)(void *);
    void *close_arg;
};

typedef enum job_kind_e {
    JOB_INDEXES,
    JOB_LOOKUP,
    JOB_QUOTA,
    JOB_CREATE,
    JOB_LIST,
    JOB_REVOKE,
    JOB_ASSOCIATE,
} job_kind_t;

typedef struct job_s {
    uv_work_t work;
    rw_apikeys_t *ak;
    job_kind_t kind;
    int rc;
    char err[256];
    /* checks */
    rw_apikeys_cb cb;
    void *arg;
    char *api;
    char hash[RW_TOKEN_HASH_LEN + 1];
    uint8_t digest[RW_LRU_KEY_LEN];
    key_entry_t *entry;
    const plan_t *plan;
    char key_id[RW_APIKEY_ID_LEN + 1];
    int64_t now_s;
    /* administration */
    rw_apikeys_admin_cb acb;
    char *name;
    char **plan_ids;
    size_t n_plan_ids;
    char *id;
    char *plan_id;
    bool add;
    rw_apikeys_admin_result_t ares;
} job_t;

static void free_strv(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void entry_free(void *p)
{
    key_entry_t *e = p;
    if (!e)
        return;
    free_strv(e->plans, e->n_plans);
    free(e);
}

static void hex_to_bytes(const char *hex, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        for (int k = 0; k < 2; k++) {
            char c = hex[2 * i + (size_t)k];
            v = v * 16 + (unsigned)(c >= 'a' ? c - 'a' + 10 : c - '0');
        }
        out[i] = (uint8_t)v;
    }
}

static void result_init(rw_apikeys_result_t *res)
{
    res->http_status = 0;
    res->message = NULL;
    res->retry_after_s = 0;
    res->key_id[0] = '\0';
    res->plan_id = NULL;
    res->detail[0] = '\0';
}

static void refuse(rw_apikeys_result_t *res, int status, const char *message, const char *detail)
{
    res->http_status = status;
    res->message = message;
    snprintf(res->detail, sizeof res->detail, "%s", detail);
}

static const plan_t *find_plan(const rw_apikeys_t *ak, const char *id)
{
    for (size_t i = 0; i < ak->n_plans; i++)
        if (strcmp(ak->plans[i].id, id) == 0)
            return &ak->plans[i];
    return NULL;
}

/* The key's plan for this API: the first of its plans that covers it. */
static const plan_t *plan_for(const rw_apikeys_t *ak, const key_entry_t *e, const char *api)
{
    for (size_t i = 0; i < e->n_plans; i++) {
        const plan_t *p = find_plan(ak, e->plans[i]);
        if (!p)
            continue;
        if (!api || p->n_apis == 0)
            return p;
        for (size_t j = 0; j < p->n_apis; j++)
            if (strcmp(p->apis[j], api) == 0)
                return p;
    }
    return NULL;
}

static void job_done(rw_apikeys_t *ak);
static int queue_job(rw_apikeys_t *ak, job_t *job);

/* Everything after the lookup that needs no database: the key's state, its
 * plan, the throttle. Returns true when a quota must still be counted. */
static bool judge(rw_apikeys_t *ak, const key_entry_t *e, const char *api,
                  rw_apikeys_result_t *res, const plan_t **plan_out)
{
    if (!e->found) {
        refuse(res, 403, "Forbidden", "unknown API key");
        return false;
    }
    snprintf(res->key_id, sizeof res->key_id, "%s", e->id);
    if (!e->enabled) {
        refuse(res, 403, "Forbidden", "the API key is revoked");
        return false;
    }
    const plan_t *p = plan_for(ak, e, api);
    if (!p) {
        refuse(res, 403, "Forbidden", "the API key is in no usage plan for this API");
        return false;
    }
    res->plan_id = p->id;
    char bucket[RW_APIKEY_ID_LEN + 300];
    int n = snprintf(bucket, sizeof bucket, "%s\x1f%s", p->id, e->id);
    uint32_t retry = 0;
    if (!rw_throttle_take(ak->throttle, bucket, (size_t)n, p->rate, p->burst, &retry)) {
        refuse(res, 429, "Too Many Requests", "over the usage plan's throttle");
        res->retry_after_s = retry;
        return false;
    }
    if (p->quota_limit > 0 && p->quota_period != RW_QUOTA_NONE) {
        *plan_out = p;
        return true;
    }
    res->http_status = 200;
    return false;
}

/* Continues a check once the key's entry is known: answers through cb, or
 * goes on to the quota. */
static void continue_check(rw_apikeys_t *ak, job_t *job, const key_entry_t *e)
{
    rw_apikeys_result_t res;
    result_init(&res);
    const plan_t *p = NULL;
    if (judge(ak, e, job->api, &res, &p)) {
        job->kind = JOB_QUOTA;
        job->plan = p;
        snprintf(job->key_id, sizeof job->key_id, "%s", e->id);
        job->now_s = (int64_t)time(NULL);
        job->entry = NULL;
        ak->stats.quota_calls++;
        if (queue_job(ak, job) == 0)
            return;
        refuse(&res, 500, "Internal Server Error", "cannot queue the quota count");
    }
    job->cb(&res, job->arg);
    free(job->api);
    free(job);
}

static void work(uv_work_t *w)
{
    job_t *job = w->data;
    rw_apikeys_t *ak = job->ak;
    mongoc_client_t *client = mongoc_client_pool_pop(ak->pool);
    char *err = job->err;
    size_t errlen = sizeof job->err;
    switch (job->kind) {
    case JOB_INDEXES:
        job->rc = rw_apikeys_ensure_indexes(client, ak->db, err, errlen);
        break;
    case JOB_LOOKUP: {
        rw_apikey_record_t rec;
        job->rc = rw_apikeys_find_by_hash_sync(client, ak->db, job->hash, &rec, err, errlen);
        if (job->rc != 0 && job->rc != RW_ENOTFOUND)
            break;
        key_entry_t *e = calloc(1, sizeof *e);
        if (!e) {
            job->rc = -ENOMEM;
        } else if (job->rc == 0) {
            e->found = true;
            e->enabled = rec.enabled;
            memcpy(e->id, rec.id, sizeof e->id);
            e->plans = rec.plans; /* taken over */
            e->n_plans = rec.n_plans;
            rec.plans = NULL;
            rec.n_plans = 0;
        }
        if (job->rc == 0)
            rw_apikey_record_clear(&rec);
        job->entry = e;
        if (e)
            job->rc = 0;
        break;
    }
    case JOB_QUOTA:
        job->rc = rw_apikeys_quota_consume_sync(client, ak->db, job->plan->id, job->key_id,
                                                job->plan->quota_limit, job->plan->quota_period,
                                                job->now_s, NULL, err, errlen);
        break;
    case JOB_CREATE:
        job->rc = rw_apikeys_create_sync(client, ak->db, job->name,
                                         (const char *const *)job->plan_ids, job->n_plan_ids,
                                         &job->ares.rec, job->ares.clear_key, err, errlen);
        break;
    case JOB_LIST:
        job->rc = rw_apikeys_list_sync(client, ak->db, &job->ares.recs, &job->ares.n_recs, err,
                                       errlen);
        break;
    case JOB_REVOKE:
        job->rc = rw_apikeys_revoke_sync(client, ak->db, job->id, err, errlen);
        break;
    case JOB_ASSOCIATE:
        job->rc = rw_apikeys_associate_sync(client, ak->db, job->id, job->plan_id, job->add, err,
                                            errlen);
        break;
    }
    mongoc_client_pool_push(ak->pool, client);
}

static void admin_free(job_t *job)
{
    free(job->name);
    free_strv(job->plan_ids, job->n_plan_ids);
    free(job->id);
    free(job->plan_id);
    rw_apikey_record_clear(&job->ares.rec);
    rw_apikey_records_free(job->ares.recs, job->ares.n_recs);
    OPENSSL_cleanse(job->ares.clear_key, sizeof job->ares.clear_key);
    free(job);
}

static void after_work(uv_work_t *w, int status)
{
    job_t *job = w->data;
    rw_apikeys_t *ak = job->ak;
    if (status != 0 && job->rc == 0) {
        job->rc = RW_EDB;
        snprintf(job->err, sizeof job->err, "the job was cancelled");
    }
    if (job->rc == RW_EDB)
        ak->stats.db_errors++;
    switch (job->kind) {
    case JOB_INDEXES:
        if (job->rc != 0)
            fprintf(stderr, "reelway: api keys: %s\n", job->err);
        free(job);
        break;
    case JOB_LOOKUP: {
        key_entry_t *e = job->entry;
        if (job->rc != 0 || !e) {
            rw_apikeys_result_t res;
            result_init(&res);
            refuse(&res, 500, "Internal Server Error", job->err);
            entry_free(e);
            job->cb(&res, job->arg);
            free(job->api);
            free(job);
            break;
        }
        rw__lru_put(ak->cache, job->digest, e,
                    uv_now(ak->loop) + (e->found ? ak->ttl_ms : ak->negative_ttl_ms));
        continue_check(ak, job, e);
        break;
    }
    case JOB_QUOTA: {
        rw_apikeys_result_t res;
        result_init(&res);
        snprintf(res.key_id, sizeof res.key_id, "%s", job->key_id);
        res.plan_id = job->plan->id;
        if (job->rc == 0)
            res.http_status = 200;
        else if (job->rc == RW_ELIMIT)
            refuse(&res, 429, "Limit Exceeded", "over the usage plan's quota");
        else
            refuse(&res, 500, "Internal Server Error", job->err);
        job->cb(&res, job->arg);
        free(job->api);
        free(job);
        break;
    }
    default:
        job->ares.status = job->rc;
        snprintf(job->ares.error, sizeof job->ares.error, "%s", job->rc ? job->err : "");
        if (job->rc == 0 && (job->kind == JOB_REVOKE || job->kind == JOB_ASSOCIATE))
            rw__lru_clear(ak->cache);
        job->acb(&job->ares, job->arg);
        admin_free(job);
        break;
    }
    job_done(ak);
}

static int queue_job(rw_apikeys_t *ak, job_t *job)
{
    job->ak = ak;
    job->work.data = job;
    int rc = uv_queue_work(ak->loop, &job->work, work, after_work);
    if (rc == 0)
        ak->pending++;
    return rc;
}

int rw_apikeys_check(rw_apikeys_t *ak, const rw_http_req_t *req, const char *api,
                     rw_apikeys_result_t *res, rw_apikeys_cb cb, void *arg)
{
    if (!ak || ak->closing || !req || !res || !cb)
        return -EINVAL;
    ak->stats.checks++;
    result_init(res);
    const char *key = NULL;
    int count = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        const rw_http_header_t *h = &req->headers[i];
        if (h->name_len == 9 && strncasecmp(h->name, "x-api-key", 9) == 0) {
            key = h->value;
            count++;
        }
    }
    if (count == 0) {
        refuse(res, 403, "Forbidden", "no x-api-key header");
        return RW_APIKEYS_DONE;
    }
    if (count > 1) {
        refuse(res, 403, "Forbidden", "x-api-key given more than once");
        return RW_APIKEYS_DONE;
    }
    size_t len = strlen(key);
    if (rw_apikey_check_format(key, len) != 0) {
        refuse(res, 403, "Forbidden", "malformed API key");
        return RW_APIKEYS_DONE;
    }
    char hash[RW_TOKEN_HASH_LEN + 1];
    if (rw_token_hash(key, len, hash) != 0) {
        refuse(res, 500, "Internal Server Error", "cannot hash the key");
        return RW_APIKEYS_DONE;
    }
    uint8_t digest[RW_LRU_KEY_LEN];
    hex_to_bytes(hash, digest, sizeof digest);
    key_entry_t *e = rw__lru_get(ak->cache, digest, uv_now(ak->loop));
    if (e) {
        ak->stats.cache_hits++;
        const plan_t *p = NULL;
        if (!judge(ak, e, api, res, &p))
            return RW_APIKEYS_DONE;
        job_t *job = calloc(1, sizeof *job);
        if (!job || (api && !(job->api = strdup(api)))) {
            free(job);
            return -ENOMEM;
        }
        job->kind = JOB_QUOTA;
        job->cb = cb;
        job->arg = arg;
        job->plan = p;
        snprintf(job->key_id, sizeof job->key_id, "%s", e->id);
        job->now_s = (int64_t)time(NULL);
        ak->stats.quota_calls++;
        if (queue_job(ak, job) != 0) {
            free(job->api);
            free(job);
            refuse(res, 500, "Internal Server Error", "cannot queue the quota count");
            return RW_APIKEYS_DONE;
        }
        return RW_APIKEYS_PENDING;
    }
    job_t *job = calloc(1, sizeof *job);
    if (!job || (api && !(job->api = strdup(api)))) {
        free(job);
        return -ENOMEM;
    }
    job->kind = JOB_LOOKUP;
    job->cb = cb;
    job->arg = arg;
    memcpy(job->hash, hash, sizeof hash);
    memcpy(job->digest, digest, sizeof digest);
    ak->stats.lookups++;
    if (queue_job(ak, job) != 0) {
        free(job->api);
        free(job);
        refuse(res, 500, "Internal Server Error", "cannot queue the key lookup");
        return RW_APIKEYS_DONE;
    }
    return RW_APIKEYS_PENDING;
}

void rw_apikeys_respond(rw_http_req_t *req, const rw_apikeys_result_t *res)
{
    char retry[16];
    rw_http_header_t h[1];
    size_t n = 0;
    if (res->http_status == 429 && res->retry_after_s > 0) {
        int len = snprintf(retry, sizeof retry, "%u", res->retry_after_s);
        h[n++] = (rw_http_header_t){"Retry-After", 11, retry, (size_t)len};
    }
    rw_http_respond_error(req, res->http_status ? res->http_status : 500,
                          res->message ? res->message : "Internal Server Error", NULL, h, n);
}

/* ---- administration on the loop ----------------------------------------- */

static int admin_queue(rw_apikeys_t *ak, job_t *job, rw_apikeys_admin_cb cb, void *arg)
{
    job->acb = cb;
    job->arg = arg;
    int rc = queue_job(ak, job);
    if (rc != 0)
        admin_free(job);
    return rc;
}

static bool plans_known(const rw_apikeys_t *ak, const char *const *plans, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!plans[i] || !find_plan(ak, plans[i]))
            return false;
    return true;
}

int rw_apikeys_create(rw_apikeys_t *ak, const char *name, const char *const *plans,
                      size_t n_plans, rw_apikeys_admin_cb cb, void *arg)
{
    if (!ak || ak->closing || !cb || !valid_name(name) || (n_plans && !plans) ||
        !plans_known(ak, plans, n_plans))
        return -EINVAL;
    job_t *job = calloc(1, sizeof *job);
    if (!job)
        return -ENOMEM;
    job->kind = JOB_CREATE;
    job->name = strdup(name);
    job->plan_ids = calloc(n_plans ? n_plans : 1, sizeof *job->plan_ids);
    if (!job->name || !job->plan_ids) {
        admin_free(job);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n_plans; i++) {
        if (!(job->plan_ids[i] = strdup(plans[i]))) {
            admin_free(job);
            return -ENOMEM;
        }
        job->n_plan_ids++;
    }
    return admin_queue(ak, job, cb, arg);
}

int rw_apikeys_list(rw_apikeys_t *ak, rw_apikeys_admin_cb cb, void *arg)
{
    if (!ak || ak->closing || !cb)
        return -EINVAL;
    job_t *job = calloc(1, sizeof *job);
    if (!job)
        return -ENOMEM;
    job->kind = JOB_LIST;
    return admin_queue(ak, job, cb, arg);
}

int rw_apikeys_revoke(rw_apikeys_t *ak, const char *id, rw_apikeys_admin_cb cb, void *arg)
{
    if (!ak || ak->closing || !cb || !id)
        return -EINVAL;
    job_t *job = calloc(1, sizeof *job);
    if (!job)
        return -ENOMEM;
    job->kind = JOB_REVOKE;
    if (!(job->id = strdup(id))) {
        admin_free(job);
        return -ENOMEM;
    }
    return admin_queue(ak, job, cb, arg);
}

int rw_apikeys_associate(rw_apikeys_t *ak, const char *id, const char *plan, bool add,
                         rw_apikeys_admin_cb cb, void *arg)
{
    if (!ak || ak->closing || !cb || !id || !plan || (add && !find_plan(ak, plan)))
        return -EINVAL;
    job_t *job = calloc(1, sizeof *job);
    if (!job)
        return -ENOMEM;
    job->kind = JOB_ASSOCIATE;
    job->add = add;
    job->id = strdup(id);
    job->plan_id = strdup(plan);
    if (!job->id || !job->plan_id) {
        admin_free(job);
        return -ENOMEM;
    }
    return admin_queue(ak, job, cb, arg);
}

void rw_apikeys_stats(const rw_apikeys_t *ak, rw_apikeys_stats_t *st)
{
    *st = ak->stats;
}

/* ---- life --------------------------------------------------------------- */

static void apikeys_free(rw_apikeys_t *ak)
{
    for (size_t i = 0; i < ak->n_plans; i++) {
        free(ak->plans[i].id);
        free_strv(ak->plans[i].apis, ak->plans[i].n_apis);
    }
    free(ak->plans);
    free(ak->db);
    rw__lru_free(ak->cache);
    if (ak->own_throttle)
        rw_throttle_destroy(ak->throttle);
    free(ak);
}

static void finish_close(rw_apikeys_t *ak)
{
    void (*done)(void *) = ak->close_done;
    void *arg = ak->close_arg;
    apikeys_free(ak);
    if (done)
        done(arg);
}

static void job_done(rw_apikeys_t *ak)
{
    ak->pending--;
    if (ak->closing && ak->pending == 0)
        finish_close(ak);
}

void rw_apikeys_close(rw_apikeys_t *ak, void (*done)(void *arg), void *arg)
{
    if (!ak || ak->closing)
        return;
    ak->closing = true;
    ak->close_done = done;
    ak->close_arg = arg;
    if (ak->pending == 0)
        finish_close(ak);
}

int rw_apikeys_new(uv_loop_t *loop, mongoc_client_pool_t *pool, rw_throttle_t *throttle,
                   const rw_apikeys_config_t *cfg, rw_apikeys_t **out, char *why, size_t whylen)
{
    char scratch[8];
    if (!why) {
        why = scratch;
        whylen = sizeof scratch;
    }
    why[0] = '\0';
    *out = NULL;
    if (!cfg->db_name || !*cfg->db_name) {
        snprintf(why, whylen, "the API keys need a database name");
        return RW_ECONFIG;
    }
    for (size_t i = 0; i < cfg->n_plans; i++) {
        const rw_usage_plan_t *p = &cfg->plans[i];
        if (!valid_plan_id(p->id)) {
            snprintf(why, whylen, "usage plan %zu has no valid id", i);
            return RW_ECONFIG;
        }
        if (p->quota_limit > 0 && p->quota_period == RW_QUOTA_NONE) {
            snprintf(why, whylen, "usage plan %s has a quota limit but no period (DAY, WEEK or "
                     "MONTH)", p->id);
            return RW_ECONFIG;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->plans[j].id, p->id) == 0) {
                snprintf(why, whylen, "usage plan %s is declared twice", p->id);
                return RW_ECONFIG;
            }
    }
    rw_apikeys_t *ak = calloc(1, sizeof *ak);
    if (!ak)
        return -ENOMEM;
    ak->loop = loop;
    ak->pool = pool;
    ak->ttl_ms = cfg->cache_ttl_ms ? cfg->cache_ttl_ms : DEFAULT_CACHE_TTL_MS;
    ak->negative_ttl_ms = cfg->negative_ttl_ms ? cfg->negative_ttl_ms : DEFAULT_NEGATIVE_TTL_MS;
    ak->db = strdup(cfg->db_name);
    ak->cache = rw__lru_new(cfg->cache_entries ? cfg->cache_entries : DEFAULT_CACHE_ENTRIES,
                            entry_free);
    ak->plans = calloc(cfg->n_plans ? cfg->n_plans : 1, sizeof *ak->plans);
    if (!ak->db || !ak->cache || !ak->plans)
        goto oom;
    for (size_t i = 0; i < cfg->n_plans; i++) {
        const rw_usage_plan_t *src = &cfg->plans[i];
        plan_t *p = &ak->plans[i];
        ak->n_plans++;
        p->rate = src->rate_limit;
        p->burst = src->burst_limit;
        p->quota_limit = src->quota_limit;
        p->quota_period = src->quota_period;
        if (!(p->id = strdup(src->id)) ||
            !(p->apis = calloc(src->n_apis ? src->n_apis : 1, sizeof *p->apis)))
            goto oom;
        for (size_t j = 0; j < src->n_apis; j++) {
            if (!(p->apis[j] = strdup(src->apis[j])))
                goto oom;
            p->n_apis++;
        }
    }
    if (throttle) {
        ak->throttle = throttle;
    } else {
        if (!(ak->throttle = rw_throttle_create(PRIVATE_THROTTLE_SLOTS)))
            goto oom;
        ak->own_throttle = true;
    }
    job_t *job = calloc(1, sizeof *job);
    if (!job)
        goto oom;
    job->kind = JOB_INDEXES;
    if (queue_job(ak, job) != 0)
        free(job);
    *out = ak;
    return 0;
oom:
    snprintf(why, whylen, "out of memory");
    apikeys_free(ak);
    return -ENOMEM;
}
