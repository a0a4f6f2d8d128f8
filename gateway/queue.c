/* The durable queue (see queue.h): enqueue writes a message document with write
 * concern majority; a consumer wins each change of a message's state by
 * inserting a transition record, hands claimed messages to the invoker, and
 * records how each delivery ended. */
#include "queue.h"
#include "docs.h"

#include "reelway/error.h"

#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define CLAIM_CANDIDATES 8
#define CLAIM_STEPS 4 /* transitions tried per candidate in one claim */
#define MAX_ID_LEN 128
#define NAME_MAX_LEN 120
#define DEFAULT_ATTEMPTS 3
#define MAX_ATTEMPTS_CAP 1000
#define DEFAULT_VISIBILITY_MS (960 * 1000)
#define DEAD_GRACE_MS (60 * 1000) /* a mover has this long before others finish its move */
#define COMPLETE_RETRY_MS 250
#define COMPLETE_RETRY_MAX_MS 8000
#define SWEEP_AGE_MS (3600 * 1000LL)
#define SWEEP_BATCH 500

static const char GENERIC_ERROR[] =
    "{\"errorType\":\"Reelway.UnknownError\",\"errorMessage\":\"the invocation failed\"}";

/* ---- small utilities ------------------------------------------------------- */

static int64_t epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void random_bytes(void *buf, size_t len)
{
    /* getrandom only fails before the pool is seeded or when interrupted; the
     * fallback mixes time and pid so ids stay distinct, though not secret. */
    if (getrandom(buf, len, 0) == (ssize_t)len)
        return;
    uint64_t x = (uint64_t)epoch_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)buf;
    unsigned char *p = buf;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = (unsigned char)x;
    }
}

static void make_uuid(char out[RW_QUEUE_ID_LEN])
{
    unsigned char b[16];
    random_bytes(b, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, RW_QUEUE_ID_LEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

static void make_token(char out[33])
{
    unsigned char b[16];
    random_bytes(b, sizeof b);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

static bool valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    return n > 0 && n <= NAME_MAX_LEN && bson_utf8_validate(s, n, false);
}

/* ---- where the queue lives -------------------------------------------------- */

typedef struct names_s {
    char db[NAME_MAX_LEN + 1]; /* empty: the client URI's database, else "reelway" */
    char coll[NAME_MAX_LEN + 1];
    char claims[NAME_MAX_LEN + 1];
    char dead[NAME_MAX_LEN + 1];
} names_t;

static int names_init(names_t *n, const rw_queue_opts_t *o)
{
    const char *db = o && o->db_name ? o->db_name : "";
    const char *coll = o && o->collection ? o->collection : RW_QUEUE_COLLECTION;
    const char *claims = o && o->claims ? o->claims : RW_QUEUE_CLAIMS;
    const char *dead = o && o->dead_letters ? o->dead_letters : RW_QUEUE_DEAD_LETTERS;
    if (strlen(db) > NAME_MAX_LEN || !valid_name(coll) || !valid_name(claims) || !valid_name(dead))
        return RW_ECONFIG;
    snprintf(n->db, sizeof n->db, "%s", db);
    snprintf(n->coll, sizeof n->coll, "%s", coll);
    snprintf(n->claims, sizeof n->claims, "%s", claims);
    snprintf(n->dead, sizeof n->dead, "%s", dead);
    return 0;
}

static const char *db_name(const names_t *n, mongoc_client_t *client)
{
    if (n->db[0])
        return n->db;
    const char *d = mongoc_uri_get_database(mongoc_client_get_uri(client));
    return d && *d ? d : "reelway";
}

static mongoc_collection_t *get_coll(const names_t *n, mongoc_client_t *client, const char *which)
{
    return mongoc_client_get_collection(client, db_name(n, client), which);
}

/* The one adapter from mongoc's errors: RW_EDB with the message in why. */
/* ---- indexes ----------------------------------------------------------------- */

/* One index per command: FerretDB 1.24 drops the connection (a recovered
 * panic) when one createIndexes names several indexes that all exist. */
static int create_index(mongoc_database_t *db, const char *coll, const char *name,
                        const char *field1, int dir1, const char *field2, int dir2, char *why,
                        size_t whylen)
{
    bson_t cmd = BSON_INITIALIZER, indexes, index, key;
    BSON_APPEND_UTF8(&cmd, "createIndexes", coll);
    bson_append_array_begin(&cmd, "indexes", -1, &indexes);
    bson_append_document_begin(&indexes, "0", -1, &index);
    bson_append_document_begin(&index, "key", -1, &key);
    BSON_APPEND_INT32(&key, field1, dir1);
    if (field2)
        BSON_APPEND_INT32(&key, field2, dir2);
    bson_append_document_end(&index, &key);
    BSON_APPEND_UTF8(&index, "name", name);
    bson_append_document_end(&indexes, &index);
    bson_append_array_end(&cmd, &indexes);
    bson_error_t error;
    bool ok = mongoc_database_write_command_with_opts(db, &cmd, NULL, NULL, &error);
    bson_destroy(&cmd);
    return ok ? 0 : rw_docs_error(&error, "cannot create the queue's indexes", why, whylen);
}

static int create_indexes(mongoc_client_t *client, const names_t *n, char *why, size_t whylen)
{
    mongoc_database_t *db = mongoc_client_get_database(client, db_name(n, client));
    int rc =
        create_index(db, n->coll, "state_1_visible_at_1", "state", 1, "visible_at", 1, why, whylen);
    if (rc == 0)
        rc = create_index(db, n->coll, "queue_1", "queue", 1, NULL, 0, why, whylen);
    if (rc == 0)
        rc = create_index(db, n->claims, "msg_1_gen_-1", "msg", 1, "gen", -1, why, whylen);
    if (rc == 0)
        rc = create_index(db, n->claims, "at_1", "at", 1, NULL, 0, why, whylen);
    mongoc_database_destroy(db);
    return rc;
}

int rw_queue_create_indexes(mongoc_client_t *client, const rw_queue_opts_t *opts, char *why,
                            size_t whylen)
{
    names_t n;
    if (names_init(&n, opts) != 0) {
        snprintf(why, whylen, "invalid queue collection names");
        return RW_ECONFIG;
    }
    return create_indexes(client, &n, why, whylen);
}

/* ---- producer ----------------------------------------------------------------- */

static int check_msg(const rw_queue_msg_t *msg)
{
    if (!msg || !msg->queue || (!msg->payload && msg->len))
        return UV_EINVAL;
    /* Only an SQS queue's message goes without a function: its queue's
     * targets consume it. */
    if (!msg->function && strncmp(msg->queue, RW_QUEUE_SQS_PREFIX, strlen(RW_QUEUE_SQS_PREFIX)))
        return UV_EINVAL;
    if (msg->max_attempts < 0 || msg->max_attempts > MAX_ATTEMPTS_CAP || msg->max_age_ms < 0 ||
        msg->visibility_ms < 0 || msg->delay_ms < 0)
        return UV_EINVAL;
    if (msg->id && (!*msg->id || strlen(msg->id) > MAX_ID_LEN))
        return UV_EINVAL;
    if (msg->len > RW_QUEUE_PAYLOAD_MAX)
        return RW_ELIMIT;
    if (!valid_name(msg->queue) || (msg->function && !valid_name(msg->function)))
        return RW_EPARSE;
    /* Strings must be valid UTF-8 for BSON; NUL is refused because deliveries
     * hand the payload on as a C string too. */
    if (msg->len && !bson_utf8_validate(msg->payload, msg->len, false))
        return RW_EPARSE;
    const char *opt[] = {msg->attributes, msg->trace_id, msg->id, msg->dead_letter};
    for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++)
        if (opt[i] && !bson_utf8_validate(opt[i], strlen(opt[i]), false))
            return RW_EPARSE;
    return 0;
}

/* The message document, as queue.h describes it. */
static bson_t *build_msg(const rw_queue_msg_t *msg, const char *id)
{
    int64_t now = epoch_ms();
    int64_t age = msg->max_age_ms ? msg->max_age_ms : RW_QUEUE_MAX_AGE_DEFAULT_MS;
    bson_t *doc = bson_new();
    BSON_APPEND_UTF8(doc, "_id", id);
    BSON_APPEND_UTF8(doc, "queue", msg->queue);
    if (msg->function)
        BSON_APPEND_UTF8(doc, "function", msg->function);
    bson_append_utf8(doc, "payload", -1, msg->len ? msg->payload : "", (int)msg->len);
    if (msg->attributes)
        BSON_APPEND_UTF8(doc, "attributes", msg->attributes);
    if (msg->trace_id)
        BSON_APPEND_UTF8(doc, "trace_id", msg->trace_id);
    BSON_APPEND_UTF8(doc, "state", "ready");
    BSON_APPEND_INT64(doc, "gen", 0);
    BSON_APPEND_INT32(doc, "attempts", 0);
    BSON_APPEND_INT32(doc, "failures", 0);
    BSON_APPEND_INT32(doc, "max_attempts",
                      msg->max_attempts ? msg->max_attempts : DEFAULT_ATTEMPTS);
    BSON_APPEND_DATE_TIME(doc, "visible_at", now + msg->delay_ms);
    BSON_APPEND_DATE_TIME(doc, "created_at", now);
    BSON_APPEND_DATE_TIME(doc, "expires_at", now + age);
    if (msg->visibility_ms)
        BSON_APPEND_INT64(doc, "visibility_ms", msg->visibility_ms);
    if (msg->dead_letter)
        BSON_APPEND_UTF8(doc, "dead_letter", msg->dead_letter);
    return doc;
}

static int insert_msg(mongoc_client_t *client, const names_t *n, const bson_t *doc, char *why,
                      size_t whylen)
{
    mongoc_collection_t *coll = get_coll(n, client, n->coll);
    bson_t opts = BSON_INITIALIZER;
    rw_docs_append_majority(&opts);
    bson_error_t error;
    bool ok = mongoc_collection_insert_one(coll, doc, &opts, NULL, &error);
    bson_destroy(&opts);
    mongoc_collection_destroy(coll);
    if (ok)
        return 0;
    if (error.code == 11000) {
        snprintf(why, whylen, "a message with this id exists");
        return UV_EEXIST;
    }
    return rw_docs_error(&error, "cannot enqueue", why, whylen);
}

int rw_queue_enqueue_sync(mongoc_client_t *client, const rw_queue_opts_t *opts,
                          const rw_queue_msg_t *msg, char id_out[RW_QUEUE_ID_LEN], char *why,
                          size_t whylen)
{
    names_t n;
    int rc = names_init(&n, opts);
    if (rc == 0)
        rc = check_msg(msg);
    if (rc != 0) {
        snprintf(why, whylen, "invalid message: %s", rw_strerror(rc));
        return rc;
    }
    char id[MAX_ID_LEN + 1];
    if (msg->id)
        snprintf(id, sizeof id, "%s", msg->id);
    else
        make_uuid(id);
    bson_t *doc = build_msg(msg, id);
    rc = insert_msg(client, &n, doc, why, whylen);
    bson_destroy(doc);
    if (id_out)
        snprintf(id_out, RW_QUEUE_ID_LEN, "%s", id);
    return rc;
}

int rw_queue_release_held_sync(mongoc_client_t *client, const rw_queue_opts_t *opts,
                               const char *id, char *why, size_t whylen)
{
    names_t n;
    if (names_init(&n, opts) != 0) {
        snprintf(why, whylen, "invalid queue collection names");
        return RW_ECONFIG;
    }
    /* Only while nobody has claimed it (gen 0): a consumer's claim writes
     * the cache after its record, and this must never overwrite its lease.
     * Should the two race anyway (the hold ended meanwhile), the record is
     * the truth and the next claimer repairs the cache (see claim_candidate). */
    int64_t now = epoch_ms();
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(id), "gen", BCON_INT64(0), "state", BCON_UTF8("ready"),
                           "visible_at", "{", "$gt", BCON_DATE_TIME(now), "}");
    bson_t *update = BCON_NEW("$set", "{", "visible_at", BCON_DATE_TIME(now), "}");
    bson_t opts_doc = BSON_INITIALIZER;
    rw_docs_append_majority(&opts_doc);
    mongoc_collection_t *coll = get_coll(&n, client, n.coll);
    bson_error_t error;
    bool ok = mongoc_collection_update_one(coll, sel, update, &opts_doc, NULL, &error);
    mongoc_collection_destroy(coll);
    bson_destroy(&opts_doc);
    bson_destroy(update);
    bson_destroy(sel);
    return ok ? 0 : rw_docs_error(&error, "cannot release the held message", why, whylen);
}

void rw_queue_derive_id(const char *id, const char *what, char out[RW_QUEUE_ID_LEN])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    /* A NUL between the two keeps ("ab", "c") and ("a", "bc") apart. */
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(ctx, id, strlen(id) + 1) ||
        !EVP_DigestUpdate(ctx, what, strlen(what)) || !EVP_DigestFinal_ex(ctx, md, &len))
        abort(); /* only out of memory: a fixed-size allocation */
    EVP_MD_CTX_free(ctx);
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x80); /* RFC 9562 version 8: custom */
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
    snprintf(out, RW_QUEUE_ID_LEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", md[0], md[1],
             md[2], md[3], md[4], md[5], md[6], md[7], md[8], md[9], md[10], md[11], md[12], md[13],
             md[14], md[15]);
}

struct rw_queue_s {
    uv_loop_t *loop;
    mongoc_client_pool_t *pool;
    names_t names;
    unsigned pending;
    bool closing;
    void (*close_done)(void *);
    void *close_arg;
};

typedef struct {
    uv_work_t work;
    rw_queue_t *q;
    bson_t *doc;
    char id[MAX_ID_LEN + 1];
    rw_queue_enqueue_cb cb;
    void *arg;
    int status;
    char why[256];
} enqueue_job_t;

rw_queue_t *rw_queue_new(uv_loop_t *loop, mongoc_client_pool_t *pool, const rw_queue_opts_t *opts)
{
    rw_queue_t *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    if (names_init(&q->names, opts) != 0) {
        free(q);
        return NULL;
    }
    q->loop = loop;
    q->pool = pool;
    return q;
}

static void queue_maybe_free(rw_queue_t *q)
{
    if (!q->closing || q->pending)
        return;
    void (*done)(void *) = q->close_done;
    void *arg = q->close_arg;
    free(q);
    if (done)
        done(arg);
}

static void on_enqueue_work(uv_work_t *w)
{
    enqueue_job_t *job = w->data;
    mongoc_client_t *client = mongoc_client_pool_pop(job->q->pool);
    job->status = insert_msg(client, &job->q->names, job->doc, job->why, sizeof job->why);
    mongoc_client_pool_push(job->q->pool, client);
}

static void on_enqueue_done(uv_work_t *w, int status)
{
    enqueue_job_t *job = w->data;
    rw_queue_t *q = job->q;
    if (status != 0) {
        job->status = status;
        snprintf(job->why, sizeof job->why, "the enqueue did not run");
    }
    job->cb(job->arg, job->status, job->id, job->status ? job->why : NULL);
    bson_destroy(job->doc);
    free(job);
    q->pending--;
    queue_maybe_free(q);
}

int rw_queue_enqueue(rw_queue_t *q, const rw_queue_msg_t *msg, rw_queue_enqueue_cb cb, void *arg)
{
    if (q->closing)
        return UV_ECANCELED;
    int rc = check_msg(msg);
    if (rc != 0)
        return rc;
    enqueue_job_t *job = calloc(1, sizeof *job);
    if (!job)
        return UV_ENOMEM;
    if (msg->id)
        snprintf(job->id, sizeof job->id, "%s", msg->id);
    else
        make_uuid(job->id);
    job->doc = build_msg(msg, job->id);
    job->q = q;
    job->cb = cb;
    job->arg = arg;
    job->work.data = job;
    rc = uv_queue_work(q->loop, &job->work, on_enqueue_work, on_enqueue_done);
    if (rc != 0) {
        bson_destroy(job->doc);
        free(job);
        return rc;
    }
    q->pending++;
    return 0;
}

void rw_queue_close(rw_queue_t *q, void (*done)(void *arg), void *arg)
{
    if (q->closing)
        return;
    q->closing = true;
    q->close_done = done;
    q->close_arg = arg;
    queue_maybe_free(q);
}

/* ---- transitions (threadpool) -------------------------------------------------------
 *
 * A message's state changes only through a transition whose record the actor
 * inserted first ("<id>#<gen>", gen one past the message's last): the unique
 * _id makes exactly one actor win each gen, on MongoDB and on FerretDB alike.
 * The winner then updates the message's cached state (or deletes it). An actor
 * that loses an insert reads the latest record, which is the truth even when
 * the cache lags behind (its writer died between the two writes).
 */

typedef struct transition_s {
    const char *kind; /* claim, retry, release, done, dead */
    int64_t until;    /* claimable again then: the lease's end, the retry time */
    int64_t attempts, failures;
    const char *last_error; /* retry, dead */
    const char *reason;     /* dead */
    const bson_t *forward;  /* dead: array of the messages it leaves in other queues, or NULL */
    bool no_letter;         /* dead: no dead letter is kept (a redrive) */
    int64_t at;             /* when it was recorded */
} transition_t;

/* A message's state as its cache or its latest record tells it. */
typedef struct head_s {
    int64_t gen;
    char state[16]; /* ready, inflight, dead, done */
    int64_t until;
    int64_t attempts, failures;
} head_t;

static const char *state_of(const char *kind)
{
    if (strcmp(kind, "claim") == 0)
        return "inflight";
    if (strcmp(kind, "dead") == 0 || strcmp(kind, "done") == 0)
        return kind;
    return "ready";
}

/* Reads a record into t; t->forward then points into storage (a bson_t the
 * caller destroys), valid while rec is. */
static void transition_from_record(transition_t *t, const bson_t *rec, bson_t *storage)
{
    const char *kind = rw_docs_utf8(rec, "kind", NULL);
    t->kind = kind ? kind : "claim";
    t->until = rw_docs_date(rec, "until", 0);
    t->attempts = rw_docs_int(rec, "attempts", 0);
    t->failures = rw_docs_int(rec, "failures", 0);
    t->last_error = rw_docs_utf8(rec, "last_error", NULL);
    t->reason = rw_docs_utf8(rec, "reason", NULL);
    t->at = rw_docs_date(rec, "at", 0);
    t->forward = NULL;
    bson_iter_t it;
    t->no_letter = bson_iter_init_find(&it, rec, "letter") && BSON_ITER_HOLDS_BOOL(&it) &&
                   !bson_iter_bool(&it);
    bson_init(storage);
    if (bson_iter_init_find(&it, rec, "forward") && BSON_ITER_HOLDS_ARRAY(&it)) {
        uint32_t len;
        const uint8_t *data;
        bson_iter_array(&it, &len, &data);
        bson_destroy(storage);
        if (bson_init_static(storage, data, len))
            t->forward = storage;
        else
            bson_init(storage);
    }
}

static void head_from_record(head_t *h, const bson_t *rec)
{
    transition_t t;
    bson_t forward;
    transition_from_record(&t, rec, &forward);
    bson_destroy(&forward);
    h->gen = rw_docs_int(rec, "gen", 0);
    snprintf(h->state, sizeof h->state, "%s", state_of(t.kind));
    h->until = t.until;
    h->attempts = t.attempts;
    h->failures = t.failures;
}

static void head_from_message(head_t *h, const bson_t *msg)
{
    const char *state = rw_docs_utf8(msg, "state", NULL);
    h->gen = rw_docs_int(msg, "gen", 0);
    snprintf(h->state, sizeof h->state, "%s", state ? state : "ready");
    h->until = rw_docs_date(msg, "visible_at", 0);
    h->attempts = rw_docs_int(msg, "attempts", 0);
    h->failures = rw_docs_int(msg, "failures", 0);
}

/* The latest transition record of message id, or NULL (none, or *rc < 0). */
static bson_t *latest_record(mongoc_client_t *client, const names_t *n, const char *id, int *rc,
                             char *why, size_t whylen)
{
    mongoc_collection_t *claims = get_coll(n, client, n->claims);
    bson_t *filter = BCON_NEW("msg", BCON_UTF8(id));
    bson_t *opts = BCON_NEW("sort", "{", "gen", BCON_INT32(-1), "}", "limit", BCON_INT64(1));
    bson_t *rec = rw_docs_find_one(claims, filter, opts, "cannot read the queue", rc, why, whylen);
    bson_destroy(opts);
    bson_destroy(filter);
    mongoc_collection_destroy(claims);
    return rec;
}

/* Inserts the record of transition gen of message id. Returns 0 when we won
 * it, including an earlier try of ours whose reply was lost (same token),
 * UV_EEXIST when another actor won it, or RW_EDB. */
static int record(mongoc_client_t *client, const names_t *n, const char *id, int64_t gen,
                  const transition_t *t, const char *owner, const char *token, char *why,
                  size_t whylen)
{
    char key[MAX_ID_LEN + 24];
    snprintf(key, sizeof key, "%s#%" PRId64, id, gen);
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "_id", key);
    BSON_APPEND_UTF8(&doc, "msg", id);
    BSON_APPEND_INT64(&doc, "gen", gen);
    BSON_APPEND_UTF8(&doc, "kind", t->kind);
    BSON_APPEND_UTF8(&doc, "owner", owner);
    BSON_APPEND_UTF8(&doc, "token", token);
    BSON_APPEND_DATE_TIME(&doc, "at", t->at);
    BSON_APPEND_DATE_TIME(&doc, "until", t->until);
    BSON_APPEND_INT32(&doc, "attempts", (int32_t)t->attempts);
    BSON_APPEND_INT32(&doc, "failures", (int32_t)t->failures);
    if (t->last_error)
        BSON_APPEND_UTF8(&doc, "last_error", t->last_error);
    if (t->reason)
        BSON_APPEND_UTF8(&doc, "reason", t->reason);
    if (t->forward)
        BSON_APPEND_ARRAY(&doc, "forward", t->forward);
    if (t->no_letter)
        BSON_APPEND_BOOL(&doc, "letter", false);
    bson_t opts = BSON_INITIALIZER;
    rw_docs_append_majority(&opts);
    mongoc_collection_t *claims = get_coll(n, client, n->claims);
    bson_error_t error;
    int rc = 0;
    if (!mongoc_collection_insert_one(claims, &doc, &opts, NULL, &error)) {
        if (error.code != 11000) {
            rc = rw_docs_error(&error, "cannot record a transition", why, whylen);
        } else {
            bson_t *filter = BCON_NEW("_id", BCON_UTF8(key));
            bson_t *theirs = rw_docs_find_one(claims, filter, NULL,
                                              "cannot read the queue", &rc, why, whylen);
            const char *their_token = theirs ? rw_docs_utf8(theirs, "token", NULL) : NULL;
            if (rc == 0)
                rc = their_token && strcmp(their_token, token) == 0 ? 0 : UV_EEXIST;
            bson_destroy(theirs);
            bson_destroy(filter);
        }
    }
    mongoc_collection_destroy(claims);
    bson_destroy(&opts);
    bson_destroy(&doc);
    return rc;
}

/* The cache update that follows a won transition. */
static bson_t *head_update(const transition_t *t, int64_t gen, const char *owner)
{
    bool claim = strcmp(t->kind, "claim") == 0;
    bson_t *u = bson_new();
    bson_t set, unset;
    bson_append_document_begin(u, "$set", -1, &set);
    BSON_APPEND_UTF8(&set, "state", state_of(t->kind));
    BSON_APPEND_INT64(&set, "gen", gen);
    BSON_APPEND_DATE_TIME(&set, "visible_at", t->until);
    BSON_APPEND_INT32(&set, "attempts", (int32_t)t->attempts);
    BSON_APPEND_INT32(&set, "failures", (int32_t)t->failures);
    if (claim) {
        BSON_APPEND_UTF8(&set, "owner", owner);
        BSON_APPEND_DATE_TIME(&set, "claimed_at", t->at);
        if (t->attempts == 1)
            BSON_APPEND_DATE_TIME(&set, "first_claimed_at", t->at);
    }
    if (t->last_error) {
        BSON_APPEND_UTF8(&set, "last_error", t->last_error);
        BSON_APPEND_DATE_TIME(&set, "last_error_at", t->at);
    }
    if (t->reason)
        BSON_APPEND_UTF8(&set, "dead_reason", t->reason);
    bson_append_document_end(u, &set);
    if (!claim) {
        bson_append_document_begin(u, "$unset", -1, &unset);
        BSON_APPEND_UTF8(&unset, "owner", "");
        BSON_APPEND_UTF8(&unset, "claimed_at", "");
        bson_append_document_end(u, &unset);
    }
    return u;
}

/* Writes the cache after a won transition; never an upsert, so a message
 * that is gone stays gone (*found tells). */
static int write_head(mongoc_client_t *client, const names_t *n, const char *id,
                      const transition_t *t, int64_t gen, const char *owner, bool *found, char *why,
                      size_t whylen)
{
    mongoc_collection_t *coll = get_coll(n, client, n->coll);
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *update = head_update(t, gen, owner);
    bson_t opts = BSON_INITIALIZER;
    rw_docs_append_majority(&opts);
    bson_error_t error;
    bson_t reply;
    bool ok = mongoc_collection_update_one(coll, sel, update, &opts, &reply, &error);
    *found = ok && rw_docs_int(&reply, "matchedCount", 0) > 0;
    bson_destroy(&reply);
    bson_destroy(&opts);
    bson_destroy(update);
    bson_destroy(sel);
    mongoc_collection_destroy(coll);
    return ok ? 0 : rw_docs_error(&error, "cannot update the message", why, whylen);
}

/* Deletes the message, then its records: in this order, so that a record
 * gen can only be won again once the message it would change is gone. Sets
 * *found (may be NULL) when the message was still there. */
static int remove_msg(mongoc_client_t *client, const names_t *n, const char *id, bool *found,
                      char *why, size_t whylen)
{
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *by_msg = BCON_NEW("msg", BCON_UTF8(id));
    bson_t opts = BSON_INITIALIZER;
    rw_docs_append_majority(&opts);
    bson_error_t error;
    int rc = 0;
    bson_t reply;
    mongoc_collection_t *coll = get_coll(n, client, n->coll);
    if (!mongoc_collection_delete_one(coll, sel, &opts, &reply, &error))
        rc = rw_docs_error(&error, "cannot delete the message", why, whylen);
    if (found)
        *found = rc == 0 && rw_docs_int(&reply, "deletedCount", 0) > 0;
    bson_destroy(&reply);
    mongoc_collection_destroy(coll);
    if (rc == 0) {
        mongoc_collection_t *claims = get_coll(n, client, n->claims);
        if (!mongoc_collection_delete_many(claims, by_msg, &opts, NULL, &error))
            rc = rw_docs_error(&error, "cannot delete the message's records", why, whylen);
        mongoc_collection_destroy(claims);
    }
    bson_destroy(&opts);
    bson_destroy(by_msg);
    bson_destroy(sel);
    return rc;
}

/* Inserts the messages a dead one leaves in other queues (t->forward of its
 * "dead" record). Their ids are derived from the dead message's: a second
 * mover's insert is refused, which is success. */
static int insert_forwards(mongoc_client_t *client, const names_t *n, const bson_t *forward,
                           char *why, size_t whylen)
{
    if (!forward)
        return 0;
    bson_iter_t it;
    if (!bson_iter_init(&it, forward))
        return 0;
    mongoc_collection_t *coll = get_coll(n, client, n->coll);
    bson_t opts = BSON_INITIALIZER;
    rw_docs_append_majority(&opts);
    int rc = 0;
    while (rc == 0 && bson_iter_next(&it)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&it))
            continue;
        uint32_t len;
        const uint8_t *data;
        bson_iter_document(&it, &len, &data);
        bson_t msg;
        bson_error_t error;
        if (bson_init_static(&msg, data, len) &&
            !mongoc_collection_insert_one(coll, &msg, &opts, NULL, &error) && error.code != 11000)
            rc = rw_docs_error(&error, "cannot forward the dead message", why, whylen);
    }
    bson_destroy(&opts);
    mongoc_collection_destroy(coll);
    return rc;
}

/* Finishes a won "dead" transition t: the dead letter is the message with its
 * final counts and error from t, upserted by _id so that a second mover (after
 * a crash) changes nothing; then the message goes. */
static int move_dead(mongoc_client_t *client, const names_t *n, const char *id,
                     const transition_t *t, char *why, size_t whylen)
{
    static const char *const replaced[] = {
        "state",    "owner",    "visible_at", "claimed_at",    "gen",
        "attempts", "failures", "last_error", "last_error_at", "dead_reason"};
    int rc;
    mongoc_collection_t *coll = get_coll(n, client, n->coll);
    bson_t *sel = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *msg = rw_docs_find_one(coll, sel, NULL, "cannot read the queue", &rc, why, whylen);
    mongoc_collection_destroy(coll);
    if (rc != 0 || !msg) {
        bson_destroy(sel);
        return rc != 0 ? rc : remove_msg(client, n, id, NULL, why, whylen); /* moved already */
    }
    bson_t letter = BSON_INITIALIZER;
    bson_iter_t it;
    bson_iter_init(&it, msg);
    while (bson_iter_next(&it)) {
        const char *key = bson_iter_key(&it);
        bool skip = false;
        for (size_t i = 0; i < sizeof replaced / sizeof replaced[0]; i++)
            skip |= strcmp(key, replaced[i]) == 0;
        if (!skip)
            bson_append_iter(&letter, key, -1, &it);
    }
    BSON_APPEND_INT32(&letter, "attempts", (int32_t)t->attempts);
    BSON_APPEND_INT32(&letter, "failures", (int32_t)t->failures);
    BSON_APPEND_UTF8(&letter, "last_error", t->last_error ? t->last_error : GENERIC_ERROR);
    BSON_APPEND_DATE_TIME(&letter, "last_error_at", t->at);
    BSON_APPEND_UTF8(&letter, "dead_reason", t->reason ? t->reason : "RetriesExhausted");
    BSON_APPEND_DATE_TIME(&letter, "dead_at", epoch_ms());
    bson_t opts = BSON_INITIALIZER;
    BSON_APPEND_BOOL(&opts, "upsert", true);
    rw_docs_append_majority(&opts);
    bson_error_t error;
    mongoc_collection_t *dead = get_coll(n, client, n->dead);
    /* On FerretDB an upsert is a read then an insert: of two movers racing,
     * one may get a duplicate key for the letter the other just wrote. */
    if (t->no_letter || mongoc_collection_replace_one(dead, sel, &letter, &opts, NULL, &error) ||
        error.code == 11000)
        rc = insert_forwards(client, n, t->forward, why, whylen);
    else
        rc = rw_docs_error(&error, "cannot write the dead letter", why, whylen);
    if (rc == 0)
        rc = remove_msg(client, n, id, NULL, why, whylen);
    mongoc_collection_destroy(dead);
    bson_destroy(&opts);
    bson_destroy(&letter);
    bson_destroy(msg);
    bson_destroy(sel);
    return rc;
}

/* Finishes what a record that ends a message decided (its actor may have
 * died between the record and the rest): done deletes, dead moves. */
static int finish_terminal(mongoc_client_t *client, const names_t *n, const char *id,
                           const bson_t *rec, char *why, size_t whylen)
{
    transition_t t;
    bson_t forward;
    transition_from_record(&t, rec, &forward);
    int rc = strcmp(t.kind, "dead") == 0 ? move_dead(client, n, id, &t, why, whylen)
                                          : remove_msg(client, n, id, NULL, why, whylen);
    bson_destroy(&forward);
    return rc;
}

/* ---- consumer ------------------------------------------------------------------ */

typedef struct delivery_s delivery_t;
typedef struct batch_s batch_t;

typedef struct target_s {
    char *function;
    char *queue; /* NULL: a function target */
    int concurrency;
    int inflight; /* deliveries (function target) or batches, the gathering one included */
    int64_t visibility_ms;
    int batch_size;
    uint64_t batch_window_ms;
    size_t batch_max_bytes;
    int64_t sqs_visibility_ms;
    int max_receives;
    rw_queue_forward_t *forwards; /* strings owned */
    size_t n_forwards;
    batch_t *gathering; /* queue target: the batch being filled */
} target_t;

/* A queue target's batch: filled while its window lasts, then invoked; it
 * holds a concurrency slot of its target until its last delivery ends. */
struct batch_s {
    target_t *target;
    delivery_t **items;
    size_t n;
    size_t bytes;
    uint64_t deadline; /* loop time its window closes */
    size_t remaining;  /* deliveries not yet ended (from the flush on) */
    batch_t *next;     /* the consumer's list of gathering batches */
};

struct rw_queue_consumer_s {
    uv_loop_t *loop;
    mongoc_client_pool_t *pool;
    names_t names;
    char owner[160];
    target_t *targets;
    size_t n_targets;
    int max_inflight;
    int inflight; /* deliveries from claim to recorded outcome */
    uint64_t poll_min, poll_max, poll_wait;
    uint64_t retry_base, release_delay, sweep_interval;
    int64_t visibility_ms;
    int max_lost;
    rw_queue_invoke_cb invoke;
    rw_queue_invoke_batch_cb invoke_batch;
    void *invoke_arg;
    uv_timer_t poll_timer;  /* next claim */
    uv_timer_t retry_timer; /* outcomes waiting after a database error */
    uv_timer_t sweep_timer; /* records left by dead consumers */
    uv_timer_t batch_timer; /* the first gathering batch's window */
    delivery_t *retries;
    batch_t *gathering; /* batches being filled, in no order */
    int open_handles;
    unsigned jobs; /* threadpool jobs not yet back */
    bool indexes_ready;
    bool claiming; /* a claim job is out: never two at once */
    bool sweeping;
    bool kicked;         /* new messages may have arrived during that claim */
    bool capacity_bound; /* the last claim left a target out for lack of room */
    bool closing;
    void (*close_done)(void *);
    void *close_arg;
    rw_queue_stats_t stats;
};

struct delivery_s {
    rw_queue_delivery_t pub; /* first: the invoker's pointer is ours */
    rw_queue_consumer_t *c;
    target_t *target;
    batch_t *batch;             /* queue targets */
    bson_t *doc;                /* the message as claimed; owns pub's strings */
    int64_t gen;                /* the claim's transition */
    int64_t claim_at;           /* when it was claimed (its receive) */
    int64_t attempts, failures; /* after the claim */
    int max_attempts;
    bool ended;
    rw_queue_outcome_t outcome;
    char *error;
    char receipt[MAX_ID_LEN + 24];
    char token[33]; /* of the outcome's transition, kept across retries */
    int64_t recorded_at;
    uv_work_t work;
    int status; /* of the outcome's writes */
    bool lease_lost, dead_lettered;
    char why[256];
    int tries;
    uint64_t retry_at; /* loop time of the next try after a database error */
    delivery_t *next;
};

enum claim_result_e { CLAIM_NONE, CLAIM_MESSAGE, CLAIM_HANDLED, CLAIM_ERROR };

/* A queue target claims up to this many messages in one job; more come in the
 * next jobs while its batch window lasts. */
#define CLAIMS_PER_JOB 64
#define MAX_TARGETS 64

typedef struct claimed_s {
    bson_t *doc; /* the claimed message (its cache just written) */
    target_t *target;
    int64_t gen, lease_end, claim_at;
} claimed_t;

typedef struct {
    uv_work_t work;
    rw_queue_consumer_t *c;
    bool create_indexes, indexes_done;
    target_t *eligible[MAX_TARGETS];
    int room[MAX_TARGETS]; /* messages each eligible target may still take in this job */
    size_t n_eligible;
    int total_room;
    enum claim_result_e result;
    unsigned dead_lettered;
    bool handled;
    claimed_t claimed[CLAIMS_PER_JOB];
    size_t n_claimed;
    char why[256];
} claim_job_t;

static void start_claim(rw_queue_consumer_t *c);
static void complete(delivery_t *d);
static void consumer_maybe_free(rw_queue_consumer_t *c);

static void on_poll_timer(uv_timer_t *t)
{
    start_claim(t->data);
}

static void schedule_poll(rw_queue_consumer_t *c, uint64_t delay_ms)
{
    if (c->closing || c->claiming)
        return;
    uv_timer_start(&c->poll_timer, on_poll_timer, delay_ms, 0);
}

static void backoff(rw_queue_consumer_t *c)
{
    schedule_poll(c, c->poll_wait);
    c->poll_wait = c->poll_wait * 2 > c->poll_max ? c->poll_max : c->poll_wait * 2;
}

typedef struct {
    char id[MAX_ID_LEN + 1];
    char function[NAME_MAX_LEN + 1]; /* empty: none (an SQS message) */
    char queue[NAME_MAX_LEN + 1];
    int64_t visibility_ms;
    head_t head; /* as the cache says */
} candidate_t;

/* The eligible target with room left in this job that consumes cand, or -1. */
static int target_for(const claim_job_t *job, const candidate_t *cand)
{
    for (size_t i = 0; i < job->n_eligible; i++) {
        const target_t *t = job->eligible[i];
        if (job->room[i] <= 0)
            continue;
        if (t->queue ? strcmp(t->queue, cand->queue) == 0
                     : cand->function[0] && strcmp(t->function, cand->function) == 0)
            return (int)i;
    }
    return -1;
}

/* Appends {field: {$in: [the eligible targets' values]}} to or (an array under
 * construction) when some target has one; returns the next array index. */
static int append_in(bson_t *or, int index, const claim_job_t *job, bool queues)
{
    bson_t clause, in, arr;
    size_t k = 0;
    for (size_t i = 0; i < job->n_eligible; i++)
        k += (job->eligible[i]->queue != NULL) == queues;
    if (k == 0)
        return index;
    char key[16];
    snprintf(key, sizeof key, "%d", index);
    bson_append_document_begin(or, key, -1, &clause);
    bson_append_document_begin(&clause, queues ? "queue" : "function", -1, &in);
    bson_append_array_begin(&in, "$in", -1, &arr);
    k = 0;
    for (size_t i = 0; i < job->n_eligible; i++) {
        const target_t *t = job->eligible[i];
        if ((t->queue != NULL) != queues)
            continue;
        snprintf(key, sizeof key, "%zu", k++);
        BSON_APPEND_UTF8(&arr, key, queues ? t->queue : t->function);
    }
    bson_append_array_end(&in, &arr);
    bson_append_document_end(&clause, &in);
    bson_append_document_end(or, &clause);
    return index + 1;
}

/* The oldest visible messages of the eligible targets: ready ones, claimed
 * ones whose lease has ended (their consumer died or overran), and ones whose
 * mover died halfway to the dead letters. */
static int find_candidates(claim_job_t *job, mongoc_collection_t *coll, int64_t now,
                           candidate_t *out, size_t max, size_t *n_out)
{
    bson_t filter = BSON_INITIALIZER, states, in, range, or;
    bson_append_document_begin(&filter, "state", -1, &states);
    bson_append_array_begin(&states, "$in", -1, &in);
    BSON_APPEND_UTF8(&in, "0", "ready");
    BSON_APPEND_UTF8(&in, "1", "inflight");
    BSON_APPEND_UTF8(&in, "2", "dead");
    bson_append_array_end(&states, &in);
    bson_append_document_end(&filter, &states);
    bson_append_document_begin(&filter, "visible_at", -1, &range);
    BSON_APPEND_DATE_TIME(&range, "$lte", now);
    bson_append_document_end(&filter, &range);
    /* Function targets claim by function, queue targets by queue (SQS
     * messages have no function, and asynchronous ones no "sqs:" queue). */
    bson_append_array_begin(&filter, "$or", -1, &or);
    append_in(&or, append_in(&or, 0, job, false), job, true);
    bson_append_array_end(&filter, &or);
    /* The payload stays behind: eight candidates could weigh 8 MB. */
    bson_t *opts = BCON_NEW("sort", "{", "visible_at", BCON_INT32(1), "}", "limit",
                            BCON_INT64((int64_t)max), "projection", "{", "function",
                            BCON_INT32(1), "queue", BCON_INT32(1), "visibility_ms", BCON_INT32(1),
                            "state", BCON_INT32(1), "gen", BCON_INT32(1), "visible_at",
                            BCON_INT32(1), "attempts", BCON_INT32(1), "failures", BCON_INT32(1),
                            "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, opts, NULL);
    const bson_t *doc;
    size_t n = 0;
    while (n < max && mongoc_cursor_next(cur, &doc)) {
        const char *id = rw_docs_utf8(doc, "_id", NULL);
        const char *fn = rw_docs_utf8(doc, "function", NULL);
        const char *queue = rw_docs_utf8(doc, "queue", NULL);
        if (!id || strlen(id) > MAX_ID_LEN || (fn && strlen(fn) > NAME_MAX_LEN) ||
            (queue && strlen(queue) > NAME_MAX_LEN))
            continue;
        snprintf(out[n].id, sizeof out[n].id, "%s", id);
        snprintf(out[n].function, sizeof out[n].function, "%s", fn ? fn : "");
        snprintf(out[n].queue, sizeof out[n].queue, "%s", queue ? queue : "");
        out[n].visibility_ms = rw_docs_int(doc, "visibility_ms", 0);
        head_from_message(&out[n].head, doc);
        n++;
    }
    bson_error_t error;
    int rc = 0;
    if (mongoc_cursor_error(cur, &error))
        rc = rw_docs_error(&error, "cannot look for messages", job->why, sizeof job->why);
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    bson_destroy(&filter);
    *n_out = n;
    return rc;
}

/* After a won claim: writes the cache and reads the whole message back.
 * NULL when the message is gone (its record is then dropped). */
static bson_t *take_message(claim_job_t *job, mongoc_client_t *client, const char *id,
                            const transition_t *t, int64_t gen, int *rc)
{
    rw_queue_consumer_t *c = job->c;
    mongoc_collection_t *coll = get_coll(&c->names, client, c->names.coll);
    bson_t *query = BCON_NEW("_id", BCON_UTF8(id));
    bson_t *update = head_update(t, gen, c->owner);
    mongoc_find_and_modify_opts_t *fam = mongoc_find_and_modify_opts_new();
    mongoc_find_and_modify_opts_set_update(fam, update);
    mongoc_find_and_modify_opts_set_flags(fam, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    bson_t extra = BSON_INITIALIZER;
    rw_docs_append_majority(&extra);
    mongoc_find_and_modify_opts_append(fam, &extra);
    bson_t reply;
    bson_error_t error;
    bson_t *doc = NULL;
    *rc = 0;
    if (mongoc_collection_find_and_modify_with_opts(coll, query, fam, &reply, &error)) {
        bson_iter_t it;
        if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
            uint32_t len;
            const uint8_t *data;
            bson_iter_document(&it, &len, &data);
            doc = bson_new_from_data(data, len);
        }
    } else {
        *rc = rw_docs_error(&error, "cannot claim a message", job->why, sizeof job->why);
    }
    bson_destroy(&reply);
    bson_destroy(&extra);
    mongoc_find_and_modify_opts_destroy(fam);
    bson_destroy(update);
    bson_destroy(query);
    mongoc_collection_destroy(coll);
    if (!doc && *rc == 0) {
        /* Completed and removed by a slower actor before we read it: our record
         * is the last trace of it. */
        *rc = remove_msg(client, &c->names, id, NULL, job->why, sizeof job->why);
    }
    return doc;
}

/* ---- forwards: what a dead message leaves in other queues ----------------------------- */

static void iso_time(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", base, (int)(ms % 1000));
}

/* A JSON text as a cJSON value, or the text as a JSON string. */
static cJSON *json_or_string(const char *text, size_t len)
{
    cJSON *j = text ? cJSON_ParseWithLength(text, len) : NULL;
    if (j)
        return j;
    char *copy = text ? strndup(text, len) : NULL;
    j = cJSON_CreateString(copy ? copy : "");
    free(copy);
    return j;
}

static cJSON *string_attribute(const char *value)
{
    cJSON *a = cJSON_CreateObject();
    cJSON_AddStringToObject(a, "stringValue", value);
    cJSON_AddItemToObject(a, "stringListValues", cJSON_CreateArray());
    cJSON_AddItemToObject(a, "binaryListValues", cJSON_CreateArray());
    cJSON_AddStringToObject(a, "dataType", "String");
    return a;
}

/* Lambda's record of a failed asynchronous invocation (its OnFailure
 * destination), or the event with Lambda's dead-letter attributes. */
static char *lambda_failure(const rw_queue_forward_t *f, const bson_t *msg, const transition_t *t,
                            int64_t now, char **attributes)
{
    uint32_t plen = 0;
    const char *payload = rw_docs_utf8(msg, "payload", &plen);
    const char *id = rw_docs_utf8(msg, "_id", NULL);
    cJSON *error = t->last_error ? cJSON_Parse(t->last_error) : NULL;
    const cJSON *message = cJSON_GetObjectItemCaseSensitive(error, "errorMessage");
    char *out = NULL;
    *attributes = NULL;
    if (f->kind == RW_QUEUE_FORWARD_DLQ) {
        cJSON *attrs = cJSON_CreateObject();
        char text[1024];
        snprintf(text, sizeof text, "%s",
                 cJSON_IsString(message) ? message->valuestring : "the invocation failed");
        cJSON_AddItemToObject(attrs, "RequestID", string_attribute(id ? id : ""));
        cJSON_AddItemToObject(attrs, "ErrorCode", string_attribute("200"));
        cJSON_AddItemToObject(attrs, "ErrorMessage", string_attribute(text));
        *attributes = cJSON_PrintUnformatted(attrs);
        cJSON_Delete(attrs);
        out = strndup(payload ? payload : "", plen);
        cJSON_Delete(error);
        return out;
    }
    char ts[32], arn[512];
    iso_time(now, ts);
    snprintf(arn, sizeof arn, "%s:$LATEST", f->function_arn ? f->function_arn : "");
    const char *condition = t->reason && strcmp(t->reason, "EventAgeExceeded") == 0
                                ? "EventAgeExceeded"
                                : "RetriesExhausted";
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddStringToObject(rec, "version", "1.0");
    cJSON_AddStringToObject(rec, "timestamp", ts);
    cJSON *ctx = cJSON_AddObjectToObject(rec, "requestContext");
    cJSON_AddStringToObject(ctx, "requestId", id ? id : "");
    cJSON_AddStringToObject(ctx, "functionArn", arn);
    cJSON_AddStringToObject(ctx, "condition", condition);
    cJSON_AddNumberToObject(ctx, "approximateInvokeCount", (double)t->attempts);
    cJSON_AddItemToObject(rec, "requestPayload", json_or_string(payload, plen));
    if (t->failures > 0) {
        cJSON *resp = cJSON_AddObjectToObject(rec, "responseContext");
        cJSON_AddNumberToObject(resp, "statusCode", 200);
        cJSON_AddStringToObject(resp, "executedVersion", "$LATEST");
        cJSON_AddStringToObject(resp, "functionError", "Unhandled");
        cJSON_AddItemToObject(rec, "responsePayload",
                              error ? error : json_or_string(t->last_error, strlen(t->last_error)));
        error = NULL;
    }
    out = cJSON_PrintUnformatted(rec);
    cJSON_Delete(rec);
    cJSON_Delete(error);
    return out;
}

/* Builds the messages the dead message msg leaves behind under the forwards
 * of target that apply to t's reason, into array; returns false when no dead
 * letter is to be kept (it was redriven). Runs when the "dead" transition is
 * decided; the record keeps them, so that whoever finishes the move inserts
 * the very same documents. */
static bool build_forwards(const target_t *target, const bson_t *msg, const transition_t *t,
                           int64_t now, bson_t *array)
{
    bool letter = true;
    const char *id = rw_docs_utf8(msg, "_id", NULL);
    bool receives = t->reason && strcmp(t->reason, "MaxReceiveCountExceeded") == 0;
    unsigned k = 0;
    for (size_t i = 0; id && i < target->n_forwards; i++) {
        const rw_queue_forward_t *f = &target->forwards[i];
        bool redrive = f->kind == RW_QUEUE_FORWARD_REDRIVE;
        if (redrive != receives)
            continue; /* a redrive is for receive counts; Lambda's records for the rest */
        char what[NAME_MAX_LEN + 32], fid[RW_QUEUE_ID_LEN];
        snprintf(what, sizeof what, "%s:%s",
                 redrive ? "redrive" : f->kind == RW_QUEUE_FORWARD_DLQ ? "dlq" : "on-failure",
                 f->queue);
        rw_queue_derive_id(id, what, fid);
        int64_t age = f->max_age_ms > 0 ? f->max_age_ms : 345600 * 1000LL;
        bson_t doc;
        char key[16];
        snprintf(key, sizeof key, "%u", k++);
        bson_append_document_begin(array, key, -1, &doc);
        BSON_APPEND_UTF8(&doc, "_id", fid);
        BSON_APPEND_UTF8(&doc, "queue", f->queue);
        if (redrive) {
            bson_iter_t it;
            static const char *const kept[] = {"payload", "attributes", "trace_id"};
            for (size_t j = 0; j < sizeof kept / sizeof kept[0]; j++)
                if (bson_iter_init_find(&it, msg, kept[j]))
                    bson_append_iter(&doc, kept[j], -1, &it);
            const char *mid = rw_docs_utf8(msg, "message_id", NULL);
            BSON_APPEND_UTF8(&doc, "message_id", mid ? mid : id);
            /* As SQS does: the dead-letter queue keeps the original
             * SentTimestamp, and its retention counts from it. */
            int64_t created = rw_docs_date(msg, "created_at", now);
            BSON_APPEND_DATE_TIME(&doc, "created_at", created);
            BSON_APPEND_DATE_TIME(&doc, "expires_at", created + age);
            BSON_APPEND_DATE_TIME(&doc, "visible_at", now);
            letter = false;
        } else {
            char *attributes = NULL;
            char *payload = lambda_failure(f, msg, t, now, &attributes);
            if (payload && bson_utf8_validate(payload, strlen(payload), false))
                BSON_APPEND_UTF8(&doc, "payload", payload);
            else
                BSON_APPEND_UTF8(&doc, "payload", "");
            if (attributes)
                BSON_APPEND_UTF8(&doc, "attributes", attributes);
            free(payload);
            cJSON_free(attributes);
            BSON_APPEND_DATE_TIME(&doc, "created_at", now);
            BSON_APPEND_DATE_TIME(&doc, "expires_at", now + age);
            BSON_APPEND_DATE_TIME(&doc, "visible_at", now + f->delay_ms);
        }
        BSON_APPEND_UTF8(&doc, "state", "ready");
        BSON_APPEND_INT64(&doc, "gen", 0);
        BSON_APPEND_INT32(&doc, "attempts", 0);
        BSON_APPEND_INT32(&doc, "failures", 0);
        BSON_APPEND_INT32(&doc, "max_attempts", DEFAULT_ATTEMPTS);
        bson_append_document_end(array, &doc);
    }
    return letter;
}

/* Records, writes and carries out the "dead" transition t of message msg
 * (gen: the record's), with the forwards target gives its reason. */
static int die(mongoc_client_t *client, rw_queue_consumer_t *c, const target_t *target,
               const bson_t *msg, const char *id, int64_t gen, transition_t *t, const char *token,
               bool *found, char *why, size_t whylen)
{
    bson_t forward = BSON_INITIALIZER;
    t->no_letter = !build_forwards(target, msg, t, t->at, &forward);
    t->forward = bson_count_keys(&forward) ? &forward : NULL;
    int rc = record(client, &c->names, id, gen, t, c->owner, token, why, whylen);
    if (rc == 0)
        rc = write_head(client, &c->names, id, t, gen, c->owner, found, why, whylen);
    if (rc == 0 && *found)
        rc = move_dead(client, &c->names, id, t, why, whylen);
    t->forward = NULL;
    bson_destroy(&forward);
    return rc;
}

/* A claimed message that must not be delivered: too old, received too often
 * (SQS), or its deliveries keep vanishing with their consumer (a poison
 * message that kills reelway). Moves it on and returns true; false to
 * deliver it. */
static bool settle_undeliverable(claim_job_t *job, mongoc_client_t *client, const claimed_t *cl,
                                 const char *id, const transition_t *claim, int64_t now, int *rc)
{
    rw_queue_consumer_t *c = job->c;
    const target_t *target = cl->target;
    char error[256];
    transition_t t = {.kind = "dead",
                      .at = now,
                      .until = now + DEAD_GRACE_MS,
                      .attempts = claim->attempts - 1,
                      .failures = claim->failures};
    /* Every delivery that ended was recorded as a failure or given back, so
     * the rest of those counted in attempts vanished with their consumer. */
    int64_t lost = claim->attempts - 1 - claim->failures;
    if (rw_docs_date(cl->doc, "expires_at", INT64_MAX) <= now) {
        t.reason = target->queue ? "RetentionPeriodExceeded" : "EventAgeExceeded";
        snprintf(error, sizeof error,
                 "{\"errorType\":\"Reelway.%s\",\"errorMessage\":\"the %s\"}", t.reason,
                 target->queue ? "message outlived its queue's retention period; it was not "
                                 "delivered"
                               : "event is older than its maximum age; it was not delivered");
    } else if (target->queue && target->max_receives > 0 &&
               claim->attempts > target->max_receives) {
        /* SQS counts every receive, those whose consumer vanished too. */
        t.reason = "MaxReceiveCountExceeded";
        snprintf(error, sizeof error,
                 "{\"errorType\":\"Reelway.MaxReceiveCountExceeded\",\"errorMessage\":\"received "
                 "%" PRId64 " times (maxReceiveCount %d)\"}",
                 claim->attempts - 1, target->max_receives);
    } else if (lost >= c->max_lost && !(target->queue && target->max_receives > 0)) {
        t.reason = "DeliveryLimitExceeded";
        snprintf(error, sizeof error,
                 "{\"errorType\":\"Reelway.DeliveryLimitExceeded\",\"errorMessage\":\"%" PRId64
                 " deliveries ended without an outcome (their consumer died)\"}",
                 lost);
    } else {
        return false;
    }
    t.last_error = error;
    char token[33];
    make_token(token);
    bool found = false;
    *rc = die(client, c, target, cl->doc, id, cl->gen + 1, &t, token, &found, job->why,
              sizeof job->why);
    if (*rc == 0 && !found)
        *rc = remove_msg(client, &c->names, id, NULL, job->why, sizeof job->why);
    job->dead_lettered += *rc == 0 && found;
    if (*rc == UV_EEXIST)
        *rc = 0; /* our lease passed to another in the meantime: theirs now */
    return true;
}

/* Tries to claim one candidate for target; on the way, finishes what dead
 * actors left (a record whose cache write never came, a half-done move).
 * Appends a claimed message to job->claimed, or sets job->handled. */
static int claim_candidate(claim_job_t *job, mongoc_client_t *client, candidate_t *cand,
                           target_t *target, int64_t now)
{
    rw_queue_consumer_t *c = job->c;
    head_t head = cand->head;
    int rc = 0;
    for (int step = 0; step < CLAIM_STEPS; step++) {
        if (strcmp(head.state, "dead") == 0 || strcmp(head.state, "done") == 0) {
            bson_t *rec =
                latest_record(client, &c->names, cand->id, &rc, job->why, sizeof job->why);
            const char *kind = rec ? rw_docs_utf8(rec, "kind", NULL) : NULL;
            if (kind && (strcmp(kind, "dead") == 0 || strcmp(kind, "done") == 0)) {
                rc = finish_terminal(client, &c->names, cand->id, rec, job->why, sizeof job->why);
                if (rc == 0) {
                    job->handled = true;
                    job->dead_lettered += strcmp(kind, "dead") == 0;
                }
            }
            bson_destroy(rec);
            return rc;
        }
        if (head.until > now)
            return 0; /* held, or waiting for its retry */
        /* The longer of the target's lease and the message's own; the
         * default only when neither names one. */
        int64_t lease = target->visibility_ms > cand->visibility_ms ? target->visibility_ms
                                                                    : cand->visibility_ms;
        if (lease <= 0)
            lease = c->visibility_ms;
        transition_t t = {.kind = "claim",
                          .at = now,
                          .until = now + lease,
                          .attempts = head.attempts + 1,
                          .failures = head.failures};
        char token[33];
        make_token(token);
        rc = record(client, &c->names, cand->id, head.gen + 1, &t, c->owner, token, job->why,
                    sizeof job->why);
        if (rc == UV_EEXIST) {
            /* Someone got there first; the latest record says what happened. */
            bson_t *rec =
                latest_record(client, &c->names, cand->id, &rc, job->why, sizeof job->why);
            if (!rec)
                return rc; /* the message is gone with its records */
            head_from_record(&head, rec);
            if (head.until > now && head.gen > cand->head.gen && strcmp(head.state, "dead") != 0 &&
                strcmp(head.state, "done") != 0) {
                /* Held or waiting, and the cache is behind (its writer died
                 * between its two writes, or is between them now): write what
                 * the record says, as its writer would have, so the message
                 * stops turning up as a candidate. */
                transition_t rt;
                bson_t forward;
                transition_from_record(&rt, rec, &forward);
                const char *owner = rw_docs_utf8(rec, "owner", NULL);
                bool found;
                rc = write_head(client, &c->names, cand->id, &rt, head.gen, owner ? owner : "",
                                &found, job->why, sizeof job->why);
                bson_destroy(&forward);
            }
            bson_destroy(rec);
            if (rc != 0)
                return rc;
            continue;
        }
        if (rc != 0)
            return rc;
        claimed_t *cl = &job->claimed[job->n_claimed];
        cl->gen = head.gen + 1;
        cl->lease_end = t.until;
        cl->claim_at = now;
        cl->target = target;
        cl->doc = take_message(job, client, cand->id, &t, cl->gen, &rc);
        if (!cl->doc)
            return rc;
        if (settle_undeliverable(job, client, cl, cand->id, &t, now, &rc)) {
            bson_destroy(cl->doc);
            cl->doc = NULL;
            if (rc == 0)
                job->handled = true;
            return rc;
        }
        job->n_claimed++;
        return 0;
    }
    return 0;
}

static void on_claim_work(uv_work_t *w)
{
    claim_job_t *job = w->data;
    rw_queue_consumer_t *c = job->c;
    mongoc_client_t *client = mongoc_client_pool_pop(c->pool);
    mongoc_collection_t *coll = NULL;
    candidate_t *cands = NULL;
    job->result = CLAIM_ERROR;
    if (job->create_indexes) {
        if (create_indexes(client, &c->names, job->why, sizeof job->why) != 0)
            goto out;
        job->indexes_done = true;
    }
    /* Enough candidates for the room, and some to spare for those others win. */
    size_t max = CLAIM_CANDIDATES + (size_t)(job->total_room > 1 ? job->total_room : 0);
    cands = calloc(max, sizeof *cands);
    if (!cands) {
        snprintf(job->why, sizeof job->why, "out of memory");
        goto out;
    }
    coll = get_coll(&c->names, client, c->names.coll);
    int64_t now = epoch_ms();
    size_t n;
    if (find_candidates(job, coll, now, cands, max, &n) != 0)
        goto out;
    job->result = CLAIM_NONE;
    /* Start at a random candidate so that consumers racing for the same
     * oldest messages spread out instead of all losing to the first; a
     * batch then fills with what follows. */
    uint32_t start = 0;
    random_bytes(&start, sizeof start);
    for (size_t i = 0; i < n && job->total_room > 0 && job->n_claimed < CLAIMS_PER_JOB; i++) {
        candidate_t *cand = &cands[(start + i) % n];
        int k = target_for(job, cand);
        if (k < 0)
            continue;
        size_t before = job->n_claimed;
        if (claim_candidate(job, client, cand, job->eligible[k], now) != 0) {
            job->result = CLAIM_ERROR;
            break;
        }
        if (job->n_claimed > before) {
            job->room[k]--;
            job->total_room--;
        }
    }
    if (job->result != CLAIM_ERROR)
        job->result = job->n_claimed ? CLAIM_MESSAGE : job->handled ? CLAIM_HANDLED : CLAIM_NONE;
out:
    free(cands);
    if (coll)
        mongoc_collection_destroy(coll);
    mongoc_client_pool_push(c->pool, client);
}

/* ---- batches ---------------------------------------------------------------------- */

static void on_batch_timer(uv_timer_t *t);

static void arm_batch_timer(rw_queue_consumer_t *c)
{
    if (c->closing || !c->gathering) {
        if (!c->closing)
            uv_timer_stop(&c->batch_timer);
        return;
    }
    uint64_t first = UINT64_MAX;
    for (batch_t *b = c->gathering; b; b = b->next)
        first = b->deadline < first ? b->deadline : first;
    uint64_t now = uv_now(c->loop);
    uv_timer_start(&c->batch_timer, on_batch_timer, first > now ? first - now : 0, 0);
}

static void unlink_gathering(rw_queue_consumer_t *c, batch_t *b)
{
    for (batch_t **pp = &c->gathering; *pp; pp = &(*pp)->next)
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    b->next = NULL;
    if (b->target->gathering == b)
        b->target->gathering = NULL;
}

static void end_unstarted(delivery_t *d, rw_queue_outcome_t outcome, const char *error);

/* The batch's window is over (full, timed out, or no window): it goes to the
 * invoker whole; a batch the invoker refuses ends here. */
static void flush_batch(rw_queue_consumer_t *c, batch_t *b)
{
    unlink_gathering(c, b);
    b->remaining = b->n;
    if (b->n == 0) {
        b->target->inflight--;
        free(b->items);
        free(b);
        return;
    }
    c->stats.batches++;
    size_t n = b->n;
    int rc = c->invoke_batch(c->invoke_arg, b->target->function, (rw_queue_delivery_t **)b->items,
                             n);
    if (rc == 0)
        return; /* b may be gone already: every delivery may have ended */
    char err[256];
    snprintf(err, sizeof err, "{\"errorType\":\"Reelway.InvokeError\",\"errorMessage\":\"%s\"}",
             rw_strerror(rc));
    bool release = rc == UV_EBUSY || rc == UV_ECANCELED;
    /* Ending the last delivery frees the batch: copy the list first. */
    delivery_t **items = malloc(n * sizeof *items);
    if (!items) {
        /* Out of memory: the leases end and the messages come back. */
        fprintf(stderr, "reelway: queue: out of memory ending a refused batch\n");
        return;
    }
    memcpy(items, b->items, n * sizeof *items);
    for (size_t i = 0; i < n; i++)
        end_unstarted(items[i], release ? RW_QUEUE_RELEASE : RW_QUEUE_FAILED, err);
    free(items);
}

static void on_batch_timer(uv_timer_t *t)
{
    rw_queue_consumer_t *c = t->data;
    uint64_t now = uv_now(c->loop);
    batch_t *b = c->gathering;
    while (b) {
        batch_t *next = b->next;
        if (b->deadline <= now)
            flush_batch(c, b);
        b = next;
    }
    arm_batch_timer(c);
}

static batch_t *new_batch(rw_queue_consumer_t *c, target_t *target)
{
    batch_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->items = calloc((size_t)target->batch_size, sizeof *b->items);
    if (!b->items) {
        free(b);
        return NULL;
    }
    b->target = target;
    b->deadline = uv_now(c->loop) + target->batch_window_ms;
    b->next = c->gathering;
    c->gathering = b;
    target->gathering = b;
    target->inflight++;
    return b;
}

/* Adds a claimed delivery to its target's gathering batch, starting one (or,
 * when the bytes would pass the limit, the next one) as needed. */
static void gather(rw_queue_consumer_t *c, delivery_t *d)
{
    target_t *target = d->target;
    batch_t *b = target->gathering;
    if (b && target->batch_max_bytes && b->n && b->bytes + d->pub.len > target->batch_max_bytes) {
        flush_batch(c, b);
        b = NULL;
    }
    if (!b && target->inflight < target->concurrency)
        b = new_batch(c, target);
    if (!b) {
        /* No room for another batch (or no memory): give it back unrun. */
        end_unstarted(d, RW_QUEUE_RELEASE, NULL);
        return;
    }
    d->batch = b;
    b->items[b->n++] = d;
    b->bytes += d->pub.len;
    if ((int)b->n >= target->batch_size)
        flush_batch(c, b);
}

/* ---- delivering ---------------------------------------------------------------------- */

/* Frees a delivery slot; a consumer that stopped for lack of room claims again. */
static void release_slot(rw_queue_consumer_t *c, delivery_t *d)
{
    c->inflight--;
    if (d->batch) {
        batch_t *b = d->batch;
        d->batch = NULL;
        if (--b->remaining == 0) {
            b->target->inflight--;
            free(b->items);
            free(b);
        }
    } else if (!d->target->queue) {
        d->target->inflight--;
    }
    if (c->closing || c->claiming)
        return;
    if (c->capacity_bound || !uv_is_active((uv_handle_t *)&c->poll_timer))
        schedule_poll(c, 0);
}

/* Ends a delivery the invoker never had (or gave back at once). */
static void end_unstarted(delivery_t *d, rw_queue_outcome_t outcome, const char *error)
{
    d->ended = true;
    d->outcome = outcome;
    if (outcome == RW_QUEUE_FAILED)
        d->error = strdup(error ? error : GENERIC_ERROR);
    complete(d);
}

static delivery_t *new_delivery(rw_queue_consumer_t *c, claimed_t *cl)
{
    delivery_t *d = calloc(1, sizeof *d);
    if (!d) {
        /* The lease ends and the message is delivered again later. */
        fprintf(stderr, "reelway: queue: out of memory for a delivery\n");
        return NULL;
    }
    d->c = c;
    d->target = cl->target;
    d->doc = cl->doc;
    cl->doc = NULL;
    d->gen = cl->gen;
    d->claim_at = cl->claim_at;
    uint32_t len;
    d->pub.id = rw_docs_utf8(d->doc, "_id", NULL);
    d->pub.message_id = rw_docs_utf8(d->doc, "message_id", NULL);
    if (!d->pub.message_id)
        d->pub.message_id = d->pub.id;
    snprintf(d->receipt, sizeof d->receipt, "%s#%" PRId64, d->pub.id, d->gen);
    d->pub.receipt = d->receipt;
    d->pub.queue = rw_docs_utf8(d->doc, "queue", NULL);
    d->pub.function = d->target->function;
    d->pub.payload = rw_docs_utf8(d->doc, "payload", &len);
    d->pub.len = len;
    if (!d->pub.payload)
        d->pub.payload = "";
    d->pub.attributes = rw_docs_utf8(d->doc, "attributes", NULL);
    d->pub.trace_id = rw_docs_utf8(d->doc, "trace_id", NULL);
    d->attempts = rw_docs_int(d->doc, "attempts", 1);
    d->failures = rw_docs_int(d->doc, "failures", 0);
    d->pub.attempt = (int)d->attempts;
    d->pub.created_at_ms = rw_docs_date(d->doc, "created_at", 0);
    d->pub.first_received_ms = rw_docs_date(d->doc, "first_claimed_at", cl->claim_at);
    d->pub.lease_end_ms = cl->lease_end;
    d->max_attempts = (int)rw_docs_int(d->doc, "max_attempts", DEFAULT_ATTEMPTS);
    c->inflight++;
    c->stats.delivered += !c->closing;
    return d;
}

static void deliver(rw_queue_consumer_t *c, claimed_t *cl)
{
    delivery_t *d = new_delivery(c, cl);
    if (!d)
        return;
    if (c->closing) {
        if (!d->target->queue)
            d->target->inflight++;
        d->ended = true;
        d->outcome = RW_QUEUE_RELEASE;
        complete(d);
        return;
    }
    if (d->target->queue) {
        gather(c, d);
        return;
    }
    d->target->inflight++;
    int rc = c->invoke(c->invoke_arg, &d->pub);
    if (rc == 0 || d->ended)
        return;
    char err[256];
    snprintf(err, sizeof err, "{\"errorType\":\"Reelway.InvokeError\",\"errorMessage\":\"%s\"}",
             rw_strerror(rc));
    end_unstarted(d, rc == UV_EBUSY || rc == UV_ECANCELED ? RW_QUEUE_RELEASE : RW_QUEUE_FAILED,
                  err);
}

static void on_claim_done(uv_work_t *w, int status)
{
    claim_job_t *job = w->data;
    rw_queue_consumer_t *c = job->c;
    c->jobs--;
    c->claiming = false;
    if (job->indexes_done)
        c->indexes_ready = true;
    enum claim_result_e result = status == 0 ? job->result : CLAIM_ERROR;
    c->stats.polls++;
    c->stats.empty_polls += result == CLAIM_NONE;
    c->stats.dead_lettered += job->dead_lettered;
    c->stats.db_errors += result == CLAIM_ERROR;
    /* Deliveries first, even after an error: those claimed before it are ours. */
    for (size_t i = 0; i < job->n_claimed; i++)
        deliver(c, &job->claimed[i]);
    /* No window: a batch goes with what this claim brought. */
    for (batch_t *b = c->gathering, *next; b; b = next) {
        next = b->next;
        if (b->target->batch_window_ms == 0)
            flush_batch(c, b);
    }
    arm_batch_timer(c);
    switch (result) {
    case CLAIM_MESSAGE:
    case CLAIM_HANDLED:
        c->poll_wait = c->poll_min;
        schedule_poll(c, 0);
        break;
    case CLAIM_NONE:
        if (c->kicked)
            schedule_poll(c, 0);
        else
            backoff(c);
        break;
    case CLAIM_ERROR:
        fprintf(stderr, "reelway: queue: %s\n", job->why[0] ? job->why : "claim failed");
        backoff(c);
        break;
    }
    c->kicked = false;
    for (size_t i = 0; i < job->n_claimed; i++)
        bson_destroy(job->claimed[i].doc);
    free(job);
    consumer_maybe_free(c);
}

/* Messages target may take now: one for a function target with a free slot;
 * for a queue target, what its gathering batch has room for, or a whole batch
 * when it may start one. */
static int target_room(const target_t *t)
{
    if (!t->queue)
        return t->inflight < t->concurrency;
    int room = 0;
    if (t->gathering)
        room = t->batch_size - (int)t->gathering->n;
    else if (t->inflight < t->concurrency)
        room = t->batch_size;
    return room < CLAIMS_PER_JOB ? room : CLAIMS_PER_JOB;
}

static void start_claim(rw_queue_consumer_t *c)
{
    if (c->closing || c->claiming)
        return;
    c->capacity_bound = false;
    if (c->inflight >= c->max_inflight) {
        c->capacity_bound = true;
        return;
    }
    claim_job_t *job = calloc(1, sizeof *job);
    if (!job) {
        backoff(c);
        return;
    }
    int left = c->max_inflight - c->inflight;
    for (size_t i = 0; i < c->n_targets; i++) {
        int room = target_room(&c->targets[i]);
        if (room > left)
            room = left;
        if (room > 0) {
            job->room[job->n_eligible] = room;
            job->eligible[job->n_eligible++] = &c->targets[i];
            job->total_room += room;
        } else {
            c->capacity_bound = true;
        }
    }
    if (job->total_room > CLAIMS_PER_JOB)
        job->total_room = CLAIMS_PER_JOB;
    if (job->n_eligible == 0) {
        free(job); /* every target is full: a freed slot polls again */
        return;
    }
    job->c = c;
    job->create_indexes = !c->indexes_ready;
    job->work.data = job;
    if (uv_queue_work(c->loop, &job->work, on_claim_work, on_claim_done) != 0) {
        free(job);
        backoff(c);
        return;
    }
    c->claiming = true;
    c->jobs++;
}

/* ---- recording an outcome (threadpool) ------------------------------------------ */

static void on_complete_work(uv_work_t *w)
{
    delivery_t *d = w->data;
    rw_queue_consumer_t *c = d->c;
    const target_t *target = d->target;
    const names_t *n = &c->names;
    mongoc_client_t *client = mongoc_client_pool_pop(c->pool);
    int64_t now = d->recorded_at;
    transition_t t = {.at = now, .until = now, .attempts = d->attempts, .failures = d->failures};
    switch (d->outcome) {
    case RW_QUEUE_OK:
        t.kind = "done";
        break;
    case RW_QUEUE_RELEASE:
        t.kind = "release";
        t.until = now + (int64_t)c->release_delay;
        t.attempts = d->attempts - 1;
        break;
    case RW_QUEUE_FAILED:
        t.failures = d->failures + 1;
        t.last_error = d->error;
        if (target->queue) {
            /* SQS: the receive count decides, and a failed message is
             * visible again when the visibility timeout that started at
             * its receive ends. */
            if (target->max_receives > 0 && d->attempts >= target->max_receives) {
                t.kind = "dead";
                t.until = now + DEAD_GRACE_MS;
                t.reason = "MaxReceiveCountExceeded";
            } else {
                int64_t visible = d->claim_at + target->sqs_visibility_ms;
                t.kind = "retry";
                t.until = visible > now ? visible : now;
            }
        } else if (t.failures < d->max_attempts) {
            /* Failure n waits base * 2^(n-1): Lambda's one minute, then two. */
            int shift = d->failures < 20 ? (int)d->failures : 20;
            t.kind = "retry";
            t.until = now + ((int64_t)c->retry_base << shift);
        } else {
            t.kind = "dead";
            t.until = now + DEAD_GRACE_MS;
            t.reason = "RetriesExhausted";
        }
        break;
    }
    bool found = false;
    if (strcmp(t.kind, "dead") == 0) {
        d->status = die(client, c, target, d->doc, d->pub.id, d->gen + 1, &t, d->token, &found,
                        d->why, sizeof d->why);
        if (d->status == UV_EEXIST) {
            d->status = 0;
            d->lease_lost = true;
            goto out;
        }
        if (d->status == 0 && !found)
            d->status = remove_msg(client, n, d->pub.id, NULL, d->why, sizeof d->why);
        d->dead_lettered = d->status == 0 && found;
        d->lease_lost = d->status == 0 && !found;
        goto out;
    }
    d->status =
        record(client, n, d->pub.id, d->gen + 1, &t, c->owner, d->token, d->why, sizeof d->why);
    if (d->status == UV_EEXIST) {
        d->status = 0;
        d->lease_lost = true;
        goto out;
    }
    if (d->status != 0)
        goto out;
    /* A message already gone means our lease had passed and the next holder
     * finished it, deleting its records: the one we just won is an orphan. */
    if (strcmp(t.kind, "done") == 0) {
        d->status = remove_msg(client, n, d->pub.id, &found, d->why, sizeof d->why);
    } else {
        d->status = write_head(client, n, d->pub.id, &t, d->gen + 1, c->owner, &found, d->why,
                               sizeof d->why);
        if (d->status == 0 && !found)
            d->status = remove_msg(client, n, d->pub.id, NULL, d->why, sizeof d->why);
    }
    d->lease_lost = d->status == 0 && !found;
out:
    mongoc_client_pool_push(c->pool, client);
}

static void delivery_free(delivery_t *d)
{
    bson_destroy(d->doc);
    free(d->error);
    free(d);
}

static void on_retry_timer(uv_timer_t *t);

static void arm_retry_timer(rw_queue_consumer_t *c)
{
    if (c->closing || !c->retries)
        return;
    uint64_t first = UINT64_MAX;
    for (delivery_t *d = c->retries; d; d = d->next)
        first = d->retry_at < first ? d->retry_at : first;
    uint64_t now = uv_now(c->loop);
    uv_timer_start(&c->retry_timer, on_retry_timer, first > now ? first - now : 0, 0);
}

static void on_retry_timer(uv_timer_t *t)
{
    rw_queue_consumer_t *c = t->data;
    uint64_t now = uv_now(c->loop);
    delivery_t **pp = &c->retries;
    while (*pp) {
        delivery_t *d = *pp;
        if (d->retry_at <= now) {
            *pp = d->next;
            d->next = NULL;
            complete(d);
        } else {
            pp = &d->next;
        }
    }
    arm_retry_timer(c);
}

static void on_complete_done(uv_work_t *w, int status)
{
    delivery_t *d = w->data;
    rw_queue_consumer_t *c = d->c;
    c->jobs--;
    if (status != 0 && d->status == 0) {
        d->status = status;
        snprintf(d->why, sizeof d->why, "the outcome was not recorded");
    }
    if (d->status != 0) {
        c->stats.db_errors++;
        /* Try again while the lease lasts (the same token makes a try whose
         * reply was lost count as ours); past it, another consumer may win. */
        uint64_t wait = (uint64_t)COMPLETE_RETRY_MS << (d->tries < 5 ? d->tries : 5);
        if (wait > COMPLETE_RETRY_MAX_MS)
            wait = COMPLETE_RETRY_MAX_MS;
        if (!c->closing && epoch_ms() + (int64_t)wait < d->pub.lease_end_ms) {
            fprintf(stderr, "reelway: queue: message %s: %s; trying again\n", d->pub.id, d->why);
            d->tries++;
            d->retry_at = uv_now(c->loop) + wait;
            d->next = c->retries;
            c->retries = d;
            arm_retry_timer(c);
            return;
        }
        fprintf(stderr,
                "reelway: queue: message %s: %s; it will be delivered again when its lease "
                "ends\n",
                d->pub.id, d->why);
    } else if (d->lease_lost) {
        c->stats.lease_lost++;
        fprintf(stderr,
                "reelway: queue: message %s: its lease ended before the outcome was recorded; "
                "the consumer now holding it decides\n",
                d->pub.id);
    } else if (d->dead_lettered) {
        c->stats.dead_lettered++;
    } else {
        c->stats.succeeded += d->outcome == RW_QUEUE_OK;
        c->stats.retried += d->outcome == RW_QUEUE_FAILED;
        c->stats.released += d->outcome == RW_QUEUE_RELEASE;
    }
    release_slot(c, d);
    delivery_free(d);
    consumer_maybe_free(c);
}

static void complete(delivery_t *d)
{
    rw_queue_consumer_t *c = d->c;
    if (!d->token[0]) {
        make_token(d->token);
        d->recorded_at = epoch_ms();
    }
    d->work.data = d;
    d->status = 0;
    d->lease_lost = d->dead_lettered = false;
    int rc = uv_queue_work(c->loop, &d->work, on_complete_work, on_complete_done);
    if (rc != 0) {
        fprintf(stderr, "reelway: queue: message %s: cannot record the outcome: %s\n", d->pub.id,
                rw_strerror(rc));
        release_slot(c, d);
        delivery_free(d);
        consumer_maybe_free(c);
        return;
    }
    c->jobs++;
}

static char *copy_error(const char *json, size_t len)
{
    if (!json || len == 0)
        return strdup(GENERIC_ERROR);
    if (len > RW_QUEUE_ERROR_MAX || !bson_utf8_validate(json, len, false)) {
        char buf[256];
        snprintf(buf, sizeof buf,
                 "{\"errorType\":\"Reelway.ErrorNotKept\",\"errorMessage\":\"the error was %zu "
                 "bytes%s\"}",
                 len, len > RW_QUEUE_ERROR_MAX ? "" : " of invalid UTF-8");
        return strdup(buf);
    }
    return strndup(json, len);
}

void rw_queue_delivery_done(rw_queue_delivery_t *pub, rw_queue_outcome_t outcome,
                            const char *error_json, size_t len)
{
    delivery_t *d = (delivery_t *)pub;
    if (d->ended) {
        fprintf(stderr, "reelway: queue: message %s ended twice (ignored)\n", d->pub.id);
        return;
    }
    d->ended = true;
    d->outcome = outcome;
    if (outcome == RW_QUEUE_FAILED) {
        d->error = copy_error(error_json, len);
        if (!d->error) {
            /* Out of memory: the message is delivered again when its lease ends. */
            fprintf(stderr, "reelway: queue: out of memory recording message %s\n", d->pub.id);
            rw_queue_consumer_t *c = d->c;
            release_slot(c, d);
            delivery_free(d);
            consumer_maybe_free(c);
            return;
        }
    }
    complete(d);
}

/* ---- sweeping the records of dead actors (threadpool) ----------------------------
 *
 * Records go with their message (remove_msg), except when an actor died
 * between the two deletes, and a message throttled for hours collects one per
 * release. Records older than an hour are dropped when their message is gone
 * or has moved past them: only the record one past a message's gen can ever
 * be contested, and no actor holds a stale view of a message for an hour.
 */

typedef struct {
    uv_work_t work;
    rw_queue_consumer_t *c;
    char why[256];
    int rc;
} sweep_job_t;

static void on_sweep_work(uv_work_t *w)
{
    sweep_job_t *job = w->data;
    const names_t *n = &job->c->names;
    mongoc_client_t *client = mongoc_client_pool_pop(job->c->pool);
    mongoc_collection_t *claims = get_coll(n, client, n->claims);
    mongoc_collection_t *coll = get_coll(n, client, n->coll);
    bson_t *old = BCON_NEW("at", "{", "$lt", BCON_DATE_TIME(epoch_ms() - SWEEP_AGE_MS), "}");
    bson_t *opts =
        BCON_NEW("limit", BCON_INT64(SWEEP_BATCH), "projection", "{", "msg", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(claims, old, opts, NULL);
    char(*msgs)[MAX_ID_LEN + 1] = calloc(SWEEP_BATCH, sizeof *msgs);
    size_t n_msgs = 0;
    const bson_t *doc;
    bson_error_t error;
    while (msgs && mongoc_cursor_next(cur, &doc)) {
        const char *m = rw_docs_utf8(doc, "msg", NULL);
        bool seen = !m || strlen(m) > MAX_ID_LEN;
        for (size_t i = 0; i < n_msgs && !seen; i++)
            seen = strcmp(msgs[i], m) == 0;
        if (!seen)
            snprintf(msgs[n_msgs++], sizeof msgs[0], "%s", m);
    }
    if (mongoc_cursor_error(cur, &error))
        job->rc = rw_docs_error(&error, "cannot sweep old records", job->why, sizeof job->why);
    mongoc_cursor_destroy(cur);
    for (size_t i = 0; i < n_msgs && job->rc == 0; i++) {
        bson_t *sel = BCON_NEW("_id", BCON_UTF8(msgs[i]));
        bson_t *proj = BCON_NEW("projection", "{", "gen", BCON_INT32(1), "}");
        bson_t *msg = rw_docs_find_one(coll, sel, proj,
                                       "cannot read the queue",
                                       &job->rc, job->why, sizeof job->why);
        bson_t *drop = msg ? BCON_NEW("msg", BCON_UTF8(msgs[i]), "gen", "{", "$lt",
                                      BCON_INT64(rw_docs_int(msg, "gen", 0)), "}", "at", "{", "$lt",
                                      BCON_DATE_TIME(epoch_ms() - SWEEP_AGE_MS), "}")
                           : BCON_NEW("msg", BCON_UTF8(msgs[i]));
        if (job->rc == 0 && !mongoc_collection_delete_many(claims, drop, NULL, NULL, &error))
            job->rc = rw_docs_error(&error, "cannot sweep old records", job->why, sizeof job->why);
        bson_destroy(drop);
        bson_destroy(msg);
        bson_destroy(proj);
        bson_destroy(sel);
    }
    free(msgs);
    bson_destroy(opts);
    bson_destroy(old);
    mongoc_collection_destroy(coll);
    mongoc_collection_destroy(claims);
    mongoc_client_pool_push(job->c->pool, client);
}

static void on_sweep_done(uv_work_t *w, int status)
{
    sweep_job_t *job = w->data;
    rw_queue_consumer_t *c = job->c;
    c->jobs--;
    c->sweeping = false;
    if (status == 0 && job->rc != 0) {
        c->stats.db_errors++;
        fprintf(stderr, "reelway: queue: %s\n", job->why);
    }
    free(job);
    consumer_maybe_free(c);
}

static void on_sweep_timer(uv_timer_t *t)
{
    rw_queue_consumer_t *c = t->data;
    if (c->closing || c->sweeping || !c->indexes_ready)
        return;
    sweep_job_t *job = calloc(1, sizeof *job);
    if (!job)
        return;
    job->c = c;
    job->work.data = job;
    if (uv_queue_work(c->loop, &job->work, on_sweep_work, on_sweep_done) != 0) {
        free(job);
        return;
    }
    c->sweeping = true;
    c->jobs++;
}

/* ---- the consumer's life ------------------------------------------------------- */

static void consumer_free(rw_queue_consumer_t *c)
{
    for (size_t i = 0; i < c->n_targets; i++) {
        target_t *t = &c->targets[i];
        free(t->function);
        free(t->queue);
        for (size_t k = 0; k < t->n_forwards; k++) {
            free((char *)t->forwards[k].queue);
            free((char *)t->forwards[k].function_arn);
        }
        free(t->forwards);
    }
    free(c->targets);
    free(c);
}

/* Copies a target's configuration; 0 or UV_ENOMEM (what was copied is freed
 * with the consumer). */
static int copy_target(target_t *t, const rw_queue_target_t *o)
{
    t->concurrency = o->concurrency;
    t->visibility_ms = o->visibility_ms;
    t->batch_size = o->batch_size > 0 ? o->batch_size : 1;
    t->batch_window_ms = o->batch_window_ms;
    t->batch_max_bytes = o->batch_max_bytes;
    t->sqs_visibility_ms = o->sqs_visibility_ms;
    t->max_receives = o->max_receives;
    t->function = strdup(o->function);
    t->queue = o->queue ? strdup(o->queue) : NULL;
    if (!t->function || (o->queue && !t->queue))
        return UV_ENOMEM;
    if (o->n_forwards) {
        t->forwards = calloc(o->n_forwards, sizeof *t->forwards);
        if (!t->forwards)
            return UV_ENOMEM;
        for (size_t k = 0; k < o->n_forwards; k++) {
            const rw_queue_forward_t *f = &o->forwards[k];
            rw_queue_forward_t *g = &t->forwards[t->n_forwards++];
            *g = *f;
            g->queue = strdup(f->queue);
            g->function_arn = f->function_arn ? strdup(f->function_arn) : NULL;
            if (!g->queue || (f->function_arn && !g->function_arn))
                return UV_ENOMEM;
        }
    }
    return 0;
}

static bool valid_target(const rw_queue_consumer_opts_t *opts, const rw_queue_target_t *t)
{
    if (!valid_name(t->function) || t->concurrency < 1 || t->visibility_ms < 0)
        return false;
    if (!t->queue)
        return opts->invoke != NULL;
    if (!valid_name(t->queue) || !opts->invoke_batch || t->batch_size < 1 ||
        t->batch_size > 10000 || t->sqs_visibility_ms < 0 || t->max_receives < 0)
        return false;
    for (size_t k = 0; k < t->n_forwards; k++)
        if (!t->forwards || !valid_name(t->forwards[k].queue) || t->forwards[k].max_age_ms < 0 ||
            t->forwards[k].delay_ms < 0)
            return false;
    return true;
}

static void consumer_maybe_free(rw_queue_consumer_t *c)
{
    if (!c->closing || c->open_handles || c->jobs || c->inflight)
        return;
    void (*done)(void *) = c->close_done;
    void *arg = c->close_arg;
    consumer_free(c);
    if (done)
        done(arg);
}

static void on_handle_closed(uv_handle_t *h)
{
    rw_queue_consumer_t *c = h->data;
    c->open_handles--;
    consumer_maybe_free(c);
}

int rw_queue_consumer_new(uv_loop_t *loop, mongoc_client_pool_t *pool, const rw_queue_opts_t *qopts,
                          const rw_queue_consumer_opts_t *opts, rw_queue_consumer_t **out)
{
    if (!opts || !opts->n_targets || !pool || opts->n_targets > MAX_TARGETS)
        return RW_ECONFIG;
    for (size_t i = 0; i < opts->n_targets; i++) {
        const rw_queue_target_t *t = &opts->targets[i];
        if (!valid_target(opts, t))
            return RW_ECONFIG;
        /* Forwards of a function target are Lambda's records; a queue
         * target's only forward is its redrive. */
        for (size_t k = 0; k < t->n_forwards; k++)
            if ((t->forwards[k].kind == RW_QUEUE_FORWARD_REDRIVE) != (t->queue != NULL))
                return RW_ECONFIG;
    }
    rw_queue_consumer_t *c = calloc(1, sizeof *c);
    if (!c)
        return UV_ENOMEM;
    if (names_init(&c->names, qopts) != 0) {
        free(c);
        return RW_ECONFIG;
    }
    c->targets = calloc(opts->n_targets, sizeof *c->targets);
    if (!c->targets) {
        free(c);
        return UV_ENOMEM;
    }
    int64_t total = 0;
    for (size_t i = 0; i < opts->n_targets; i++) {
        c->n_targets++;
        if (copy_target(&c->targets[i], &opts->targets[i]) != 0) {
            consumer_free(c);
            return UV_ENOMEM;
        }
        /* A queue target holds up to a batch per concurrency slot. */
        total += (int64_t)c->targets[i].concurrency *
                 (c->targets[i].queue ? c->targets[i].batch_size : 1);
    }
    if (total > 1000000)
        total = 1000000;
    c->loop = loop;
    c->pool = pool;
    if (opts->owner) {
        snprintf(c->owner, sizeof c->owner, "%s", opts->owner);
    } else {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(c->owner, sizeof c->owner, "%s:%d", host, (int)getpid());
    }
    c->max_inflight = opts->max_inflight > 0 ? opts->max_inflight : (int)total;
    c->poll_min = opts->poll_min_ms ? opts->poll_min_ms : 50;
    c->poll_max = opts->poll_max_ms ? opts->poll_max_ms : 2000;
    if (c->poll_max < c->poll_min)
        c->poll_max = c->poll_min;
    c->poll_wait = c->poll_min;
    c->retry_base = opts->retry_base_ms ? opts->retry_base_ms : 60000;
    c->release_delay = opts->release_delay_ms ? opts->release_delay_ms : 1000;
    c->sweep_interval = opts->sweep_interval_ms ? opts->sweep_interval_ms : 3600 * 1000;
    c->visibility_ms = opts->visibility_ms > 0 ? opts->visibility_ms : DEFAULT_VISIBILITY_MS;
    c->max_lost = opts->max_lost_deliveries > 0 ? opts->max_lost_deliveries : 3;
    c->invoke = opts->invoke;
    c->invoke_batch = opts->invoke_batch;
    c->invoke_arg = opts->invoke_arg;
    uv_timer_init(loop, &c->poll_timer);
    uv_timer_init(loop, &c->retry_timer);
    uv_timer_init(loop, &c->sweep_timer);
    uv_timer_init(loop, &c->batch_timer);
    c->poll_timer.data = c->retry_timer.data = c->sweep_timer.data = c->batch_timer.data = c;
    c->open_handles = 4;
    uv_timer_start(&c->sweep_timer, on_sweep_timer, c->sweep_interval, c->sweep_interval);
    schedule_poll(c, 0);
    *out = c;
    return 0;
}

void rw_queue_consumer_kick(rw_queue_consumer_t *c)
{
    if (c->closing)
        return;
    c->poll_wait = c->poll_min;
    if (c->claiming)
        c->kicked = true;
    else
        schedule_poll(c, 0);
}

int rw_queue_consumer_inflight(const rw_queue_consumer_t *c)
{
    return c->inflight;
}

void rw_queue_consumer_stats(const rw_queue_consumer_t *c, rw_queue_stats_t *out)
{
    *out = c->stats;
}

void rw_queue_consumer_close(rw_queue_consumer_t *c, void (*done)(void *arg), void *arg)
{
    if (c->closing)
        return;
    c->closing = true;
    c->close_done = done;
    c->close_arg = arg;
    /* Outcomes waiting to retry get one last try now. */
    delivery_t *d = c->retries;
    c->retries = NULL;
    while (d) {
        delivery_t *next = d->next;
        d->next = NULL;
        complete(d);
        d = next;
    }
    /* Batches still gathering were never invoked: given back unrun. */
    while (c->gathering) {
        batch_t *b = c->gathering;
        unlink_gathering(c, b);
        size_t n = b->n;
        b->remaining = n;
        if (n == 0) {
            b->target->inflight--;
            free(b->items);
            free(b);
            continue;
        }
        delivery_t **items = b->items;
        b->items = NULL; /* the last delivery to end frees b, not the list we walk */
        for (size_t i = 0; i < n; i++)
            end_unstarted(items[i], RW_QUEUE_RELEASE, NULL);
        free(items);
    }
    uv_close((uv_handle_t *)&c->poll_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->retry_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->sweep_timer, on_handle_closed);
    uv_close((uv_handle_t *)&c->batch_timer, on_handle_closed);
}
