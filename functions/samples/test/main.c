/* rw_fn_test: the sample function the runtime, environment-manager and queue
 * tests run. One binary, many behaviours: $_HANDLER picks one (see
 * functions/samples/README.md for each handler's event). */
#include "reelway/runtime.h"

#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* What init keeps for every warm invocation. */
typedef struct app_s {
    mongoc_client_pool_t *pool; /* when MONGODB_URI is set */
    long counter;
    int init_ms;
} app_t;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int env_int(const char *name, int fallback)
{
    const char *v = getenv(name);
    return v && *v ? atoi(v) : fallback;
}

/* A query string value as JSON: a number or a boolean when it reads as one. */
static cJSON *query_value(const char *text)
{
    char *end;
    double d = strtod(text, &end);
    if (*text && *end == '\0')
        return cJSON_CreateNumber(d);
    if (strcmp(text, "true") == 0 || strcmp(text, "false") == 0)
        return cJSON_CreateBool(text[0] == 't');
    return cJSON_CreateString(text);
}

/* The handler's arguments (freed by the caller; NULL when there are none).
 * Invoked directly, they are the event. Behind an API Gateway route the event
 * is a proxy event (it has a requestContext): the arguments are then the
 * query string's parameters, overridden by the fields of a JSON object body,
 * so that a test can drive every handler through `reelway serve`. */
static cJSON *args_of(const rw_invocation_t *inv)
{
    const cJSON *ev = inv->event;
    if (!cJSON_IsObject(ev))
        return NULL;
    if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(ev, "requestContext")))
        return cJSON_Duplicate(ev, true);
    cJSON *args = cJSON_CreateObject();
    if (args == NULL)
        return NULL;
    const cJSON *q;
    cJSON_ArrayForEach(q, cJSON_GetObjectItemCaseSensitive(ev, "queryStringParameters"))
    {
        if (cJSON_IsString(q) && q->string)
            cJSON_AddItemToObject(args, q->string, query_value(q->valuestring));
    }
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(ev, "body");
    cJSON *fields =
        cJSON_IsString(body) && !cJSON_IsTrue(cJSON_GetObjectItem(ev, "isBase64Encoded"))
            ? cJSON_Parse(body->valuestring)
            : NULL;
    if (cJSON_IsObject(fields)) {
        while (fields->child) {
            cJSON *f = cJSON_DetachItemViaPointer(fields, fields->child);
            cJSON_DeleteItemFromObjectCaseSensitive(args, f->string);
            cJSON_AddItemToObject(args, f->string, f);
        }
    }
    cJSON_Delete(fields);
    return args;
}

/* Argument fields, with defaults for missing arguments or fields. */
static double num(const cJSON *args, const char *key, double fallback)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, key);
    return cJSON_IsNumber(v) ? v->valuedouble : fallback;
}

static const char *str(const cJSON *args, const char *key, const char *fallback)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(args, key);
    return cJSON_IsString(v) ? v->valuestring : fallback;
}

static void app_free(void *p)
{
    app_t *app = p;
    if (app->pool != NULL) {
        mongoc_client_pool_destroy(app->pool);
        mongoc_cleanup();
    }
    free(app);
}

static int on_init(rw_runtime_t *rt, void *arg)
{
    const char *handler = getenv("_HANDLER");
    const char *fail = getenv("RW_FN_INIT_FAIL");
    if ((fail && *fail) || (handler && strcmp(handler, "init-fail") == 0))
        return rw_runtime_init_fail(rt, "Sample.InitFailed", "%s",
                                    fail && *fail ? fail : "the init-fail handler never starts");
    int64_t start = mono_ms();
    if (handler && strcmp(handler, "slowinit") == 0)
        sleep_ms(env_int("RW_FN_INIT_SLEEP_MS", 1500));
    app_t *app = calloc(1, sizeof *app);
    if (app == NULL)
        return rw_runtime_init_fail(rt, "Runtime.OutOfMemory", "no memory for the app state");
    const char *uri = getenv("MONGODB_URI");
    if (uri && *uri) {
        mongoc_init();
        bson_error_t error;
        mongoc_uri_t *u = mongoc_uri_new_with_error(uri, &error);
        if (u == NULL) {
            mongoc_cleanup();
            free(app);
            return rw_runtime_init_fail(rt, "Sample.BadMongoUri", "%s", error.message);
        }
        app->pool = mongoc_client_pool_new(u);
        mongoc_uri_destroy(u);
        mongoc_client_pool_set_error_api(app->pool, MONGOC_ERROR_API_VERSION_2);
    }
    app->init_ms = (int)(mono_ms() - start);
    rw_runtime_set_app(rt, app, app_free);
    rw_runtime_log(NULL, RW_RUNTIME_INFO, "init done in %d ms", app->init_ms);
    return 0;
}

/* ---- buffered handlers ---- */

static void on_echo(rw_invocation_t *inv)
{
    rw_runtime_log(inv, RW_RUNTIME_INFO, "echo: %zu bytes", inv->payload_len);
    if (inv->event != NULL)
        rw_runtime_respond_json(inv, cJSON_Duplicate(inv->event, true));
    else
        rw_runtime_respond(inv, inv->payload, inv->payload_len, "application/octet-stream");
}

static void on_error(rw_invocation_t *inv)
{
    cJSON *args = args_of(inv);
    rw_runtime_fail(inv, str(args, "type", "Sample.Error"), "%s",
                    str(args, "message", "the error handler always fails"));
    cJSON_Delete(args);
}

typedef struct sleeper_s {
    uv_timer_t timer;
    rw_invocation_t *inv;
    int64_t ms;
} sleeper_t;

static void on_sleeper_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_slept(uv_timer_t *t)
{
    sleeper_t *s = t->data;
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "slept_ms", (double)s->ms);
    rw_runtime_respond_json(s->inv, out);
    uv_close((uv_handle_t *)t, on_sleeper_closed);
}

/* Answers after a timer on the runtime's loop: an asynchronous buffered handler. */
static void on_sleep(rw_invocation_t *inv)
{
    sleeper_t *s = calloc(1, sizeof *s);
    if (s == NULL) {
        rw_runtime_fail(inv, "Runtime.OutOfMemory", "no memory for the timer");
        return;
    }
    cJSON *args = args_of(inv);
    s->inv = inv;
    s->ms = (int64_t)num(args, "ms", 1000);
    cJSON_Delete(args);
    uv_timer_init(rw_runtime_loop(inv->runtime), &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, on_slept, (uint64_t)(s->ms > 0 ? s->ms : 0), 0);
}

static void on_crash(rw_invocation_t *inv)
{
    rw_runtime_log(inv, RW_RUNTIME_INFO, "crashing on purpose");
    abort();
}

static void on_slowinit(rw_invocation_t *inv)
{
    const app_t *app = inv->app;
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "init_ms", app->init_ms);
    rw_runtime_respond_json(inv, out);
}

static void on_init_fail(rw_invocation_t *inv)
{
    rw_runtime_fail(inv, "Sample.Unreachable", "init should have failed");
}

static void on_env(rw_invocation_t *inv)
{
    static const char *const standard[] = {"AWS_LAMBDA_RUNTIME_API",
                                           "_HANDLER",
                                           "AWS_LAMBDA_FUNCTION_NAME",
                                           "AWS_LAMBDA_FUNCTION_VERSION",
                                           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                                           "AWS_LAMBDA_LOG_GROUP_NAME",
                                           "AWS_LAMBDA_LOG_STREAM_NAME",
                                           "AWS_REGION",
                                           "LAMBDA_TASK_ROOT",
                                           "TZ",
                                           "_X_AMZN_TRACE_ID",
                                           NULL};
    cJSON *out = cJSON_CreateObject();
    cJSON *args = args_of(inv);
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(args, "names");
    if (cJSON_IsArray(names)) {
        const cJSON *n;
        cJSON_ArrayForEach(n, names)
        {
            if (!cJSON_IsString(n))
                continue;
            const char *v = getenv(n->valuestring);
            cJSON_AddItemToObject(out, n->valuestring,
                                  v ? cJSON_CreateString(v) : cJSON_CreateNull());
        }
    } else {
        for (const char *const *n = standard; *n; n++) {
            const char *v = getenv(*n);
            cJSON_AddItemToObject(out, *n, v ? cJSON_CreateString(v) : cJSON_CreateNull());
        }
    }
    cJSON_Delete(args);
    rw_runtime_respond_json(inv, out);
}

static void add_str_or_null(cJSON *o, const char *key, const char *v)
{
    cJSON_AddItemToObject(o, key, v ? cJSON_CreateString(v) : cJSON_CreateNull());
}

static void on_context(rw_invocation_t *inv)
{
    const rw_runtime_context_t *c = &inv->ctx;
    cJSON *out = cJSON_CreateObject();
    add_str_or_null(out, "request_id", c->request_id);
    cJSON_AddNumberToObject(out, "deadline_ms", (double)c->deadline_ms);
    cJSON_AddNumberToObject(out, "remaining_ms", (double)rw_runtime_remaining_ms(inv));
    add_str_or_null(out, "invoked_function_arn", c->invoked_function_arn);
    add_str_or_null(out, "trace_id", c->trace_id);
    add_str_or_null(out, "x_amzn_trace_id", getenv("_X_AMZN_TRACE_ID"));
    add_str_or_null(out, "client_context", c->client_context);
    add_str_or_null(out, "cognito_identity", c->cognito_identity);
    add_str_or_null(out, "function_name", c->function_name);
    add_str_or_null(out, "function_version", c->function_version);
    cJSON_AddNumberToObject(out, "memory_limit_mb", c->memory_limit_mb);
    add_str_or_null(out, "log_group_name", c->log_group_name);
    add_str_or_null(out, "log_stream_name", c->log_stream_name);
    cJSON_AddNumberToObject(out, "pid", getpid());
    rw_runtime_log(inv, RW_RUNTIME_INFO, "context asked");
    rw_runtime_respond_json(inv, out);
}

static void on_counter(rw_invocation_t *inv)
{
    app_t *app = inv->app;
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "count", (double)++app->counter);
    cJSON_AddNumberToObject(out, "pid", getpid());
    rw_runtime_respond_json(inv, out);
}

/* Allocates and touches N MB, so that a memory limit (RLIMIT_AS or a cgroup)
 * bites: either malloc fails (an error answer) or the process is killed. */
static void on_memhog(rw_invocation_t *inv)
{
    static char *held;
    cJSON *args = args_of(inv);
    size_t mb = (size_t)num(args, "mb", 64);
    bool hold = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "hold"));
    cJSON_Delete(args);
    char *p = malloc(mb << 20);
    if (p == NULL) {
        rw_runtime_fail(inv, "Sample.OutOfMemory", "could not allocate %zu MB", mb);
        return;
    }
    for (size_t off = 0; off < (mb << 20); off += 4096)
        p[off] = (char)off;
    rw_runtime_log(inv, RW_RUNTIME_INFO, "memhog: %zu MB allocated", mb);
    if (hold) {
        free(held); /* at most one held block at a time */
        held = p;
    } else {
        free(p);
    }
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "allocated_mb", (double)mb);
    rw_runtime_respond_json(inv, out);
}

/* Where record and batch write when the event does not say: the function's
 * environment (a template can set them), else reelway.deliveries. */
static const char *record_db(void)
{
    const char *v = getenv("RW_FN_RECORD_DB");
    return v && *v ? v : "reelway";
}

static const char *record_collection(void)
{
    const char *v = getenv("RW_FN_RECORD_COLLECTION");
    return v && *v ? v : "deliveries";
}

/* Inserts {request_id, pid, at, event} into db.collection; 0 or the reason in err. */
static int insert_record(app_t *app, const rw_invocation_t *inv, const char *db,
                         const char *collection, char *err, size_t errlen)
{
    bson_error_t error;
    bson_t *event = inv->payload_len ? bson_new_from_json((const uint8_t *)inv->payload,
                                                          (ssize_t)inv->payload_len, &error)
                                     : bson_new();
    if (event == NULL) {
        snprintf(err, errlen, "the event is not a JSON object: %s", error.message);
        return -1;
    }
    bson_t rec = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&rec, "request_id", inv->ctx.request_id);
    BSON_APPEND_INT32(&rec, "pid", getpid());
    BSON_APPEND_DATE_TIME(&rec, "at", (int64_t)time(NULL) * 1000);
    BSON_APPEND_DOCUMENT(&rec, "event", event);
    bson_destroy(event);
    mongoc_client_t *client = mongoc_client_pool_pop(app->pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, db, collection);
    bool ok = mongoc_collection_insert_one(coll, &rec, NULL, NULL, &error);
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(app->pool, client);
    bson_destroy(&rec);
    if (!ok) {
        snprintf(err, errlen, "insert failed: %s", error.message);
        return -1;
    }
    return 0;
}

/* Blocking handler (threadpool) for SQS batches: records the whole event,
 * then fails the invocation when a message's body says {"fail": true}, else
 * answers {"batchItemFailures": [...]} with the messages whose body says
 * {"fail_item": true}. */
static void on_batch(rw_invocation_t *inv)
{
    app_t *app = inv->app;
    if (app->pool == NULL) {
        rw_runtime_fail(inv, "Sample.NoDatabase", "MONGODB_URI is not set");
        return;
    }
    char err[256];
    if (insert_record(app, inv, record_db(), record_collection(), err, sizeof err) != 0) {
        rw_runtime_fail(inv, "Sample.DatabaseError", "%s", err);
        return;
    }
    cJSON *failures = cJSON_CreateArray();
    bool fail = false;
    const cJSON *r;
    cJSON_ArrayForEach(r, cJSON_GetObjectItemCaseSensitive(inv->event, "Records"))
    {
        const cJSON *body = cJSON_GetObjectItemCaseSensitive(r, "body");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(r, "messageId");
        cJSON *fields = cJSON_IsString(body) ? cJSON_Parse(body->valuestring) : NULL;
        fail |= cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(fields, "fail"));
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(fields, "fail_item")) &&
            cJSON_IsString(id)) {
            cJSON *item = cJSON_CreateObject();
            cJSON_AddStringToObject(item, "itemIdentifier", id->valuestring);
            cJSON_AddItemToArray(failures, item);
        }
        cJSON_Delete(fields);
    }
    if (fail) {
        cJSON_Delete(failures);
        rw_runtime_fail(inv, "Sample.BatchFailed", "a message asked the batch to fail");
        return;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON_AddItemToObject(out, "batchItemFailures", failures);
    rw_runtime_respond_json(inv, out);
}

/* Blocking handler (threadpool): appends a delivery record to a collection,
 * with the synchronous mongoc API and the pool made at init. */
static void on_record(rw_invocation_t *inv)
{
    app_t *app = inv->app;
    if (app->pool == NULL) {
        rw_runtime_fail(inv, "Sample.NoDatabase", "MONGODB_URI is not set");
        return;
    }
    cJSON *args = args_of(inv);
    int64_t wait = (int64_t)num(args, "sleep_ms", 0);
    bool fail = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(args, "fail"));
    char db[128], collection[128];
    snprintf(db, sizeof db, "%s", str(args, "db", record_db()));
    snprintf(collection, sizeof collection, "%s", str(args, "collection", record_collection()));
    /* With "started": a record of the delivery before the work (the sleep),
     * so that a crash mid-work leaves a delivery without a completion. */
    char started[128];
    snprintf(started, sizeof started, "%s", str(args, "started", ""));
    cJSON_Delete(args);
    if (started[0] && app->pool) {
        bson_t mark = BSON_INITIALIZER;
        BSON_APPEND_UTF8(&mark, "request_id", inv->ctx.request_id);
        BSON_APPEND_INT32(&mark, "pid", getpid());
        mongoc_client_t *client = mongoc_client_pool_pop(app->pool);
        mongoc_collection_t *coll = mongoc_client_get_collection(client, db, started);
        bson_error_t err;
        bool ok = mongoc_collection_insert_one(coll, &mark, NULL, NULL, &err);
        mongoc_collection_destroy(coll);
        mongoc_client_pool_push(app->pool, client);
        bson_destroy(&mark);
        if (!ok) {
            rw_runtime_fail(inv, "Sample.DatabaseError", "insert failed: %s", err.message);
            return;
        }
    }
    if (wait > 0)
        sleep_ms(wait);
    char err[256];
    if (insert_record(app, inv, db, collection, err, sizeof err) != 0) {
        rw_runtime_fail(inv, strncmp(err, "insert", 6) ? "Sample.BadEvent" : "Sample.DatabaseError",
                        "%s", err);
        return;
    }
    if (fail) {
        rw_runtime_fail(inv, "Sample.RecordFailed", "recorded, then failed on purpose");
        return;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON_AddBoolToObject(out, "recorded", true);
    cJSON_AddStringToObject(out, "request_id", inv->ctx.request_id);
    rw_runtime_respond_json(inv, out);
}

/* ---- streaming handlers ---- */

/* Byte i of every streamed body is 'a' + i % 26, so a reader can check it. */
#define MAX_CHUNK (1024 * 1024)
static char *pattern;

static const char *pattern_at(uint64_t offset)
{
    if (pattern == NULL) {
        pattern = malloc(MAX_CHUNK + 26);
        if (pattern == NULL)
            abort(); /* fixed size, once */
        for (size_t i = 0; i < MAX_CHUNK + 26; i++)
            pattern[i] = (char)('a' + i % 26);
    }
    return pattern + offset % 26;
}

/* A buffered answer of N pattern bytes, as a JSON string (so that behind an
 * HTTP API its content is the body): over 6 MB, the Runtime API refuses it
 * (Lambda's payload limit), which is what it is for. */
static void on_blob(rw_invocation_t *inv)
{
    cJSON *args = args_of(inv);
    double bytes = num(args, "bytes", 7.0 * 1024 * 1024);
    cJSON_Delete(args);
    size_t n = bytes > 0 ? (size_t)bytes : 0;
    char *blob = malloc(n + 2);
    if (blob == NULL) {
        rw_runtime_fail(inv, "Sample.OutOfMemory", "could not allocate %zu bytes", n);
        return;
    }
    blob[0] = '"';
    for (size_t off = 0; off < n; off += MAX_CHUNK)
        memcpy(blob + 1 + off, pattern_at(off), n - off < MAX_CHUNK ? n - off : MAX_CHUNK);
    blob[n + 1] = '"';
    rw_runtime_log(inv, RW_RUNTIME_INFO, "blob: answering %zu bytes", n + 2);
    rw_runtime_respond(inv, blob, n + 2, "application/json");
    free(blob);
}

typedef struct gen_s {
    rw_invocation_t *inv;
    rw_stream_t *body;
    uint64_t total, sent, chunk, fail_after;
    uint64_t delay_ms;
    unsigned long drains;
    uv_timer_t timer;
    bool done;
} gen_t;

static void pump(gen_t *g);

static void on_gen_closed(uv_handle_t *h)
{
    free(h->data);
}

/* The generator's last act: stop listening, complete, free itself. */
static void gen_finish(gen_t *g, bool ok)
{
    g->done = true;
    rw_stream_listen(g->body, NULL);
    rw_runtime_log(g->inv, RW_RUNTIME_INFO, "stream: %llu of %llu bytes written, %lu drains",
                   (unsigned long long)g->sent, (unsigned long long)g->total, g->drains);
    if (ok)
        rw_runtime_end(g->inv);
    else
        rw_runtime_fail(g->inv, "Sample.StreamFailed", "failed on purpose after %llu bytes",
                        (unsigned long long)g->sent);
    uv_close((uv_handle_t *)&g->timer, on_gen_closed);
}

static void on_gen_drain(rw_stream_t *s)
{
    pump(s->data);
}

static void on_gen_error(rw_stream_t *s, int err)
{
    gen_t *g = s->data;
    if (!g->done) {
        rw_runtime_log(g->inv, RW_RUNTIME_WARN, "stream: the response stream failed: %s",
                       rw_strerror(err));
        gen_finish(g, true); /* rw_runtime_end reports the stream's error */
    }
}

static const rw_stream_events_t gen_events = {.on_drain = on_gen_drain, .on_error = on_gen_error};

static void on_gen_timer(uv_timer_t *t)
{
    pump(t->data);
}

/* Writes while the body takes more (write returns 1), waits for drain when it
 * returns 0: the handler's side of backpressure. */
static void pump(gen_t *g)
{
    while (!g->done) {
        if (g->sent >= g->fail_after) {
            gen_finish(g, false);
            return;
        }
        if (g->sent >= g->total) {
            gen_finish(g, true);
            return;
        }
        uint64_t len = g->chunk;
        if (len > g->total - g->sent)
            len = g->total - g->sent;
        if (len > g->fail_after - g->sent)
            len = g->fail_after - g->sent;
        /* A copy per chunk, as data read from a cursor or a file would be:
         * memory stays flat only because the generator waits for drain. */
        rw_chunk_t c;
        if (rw_chunk_copy(&c, pattern_at(g->sent), (size_t)len) < 0) {
            g->fail_after = g->sent; /* fails on the next turn */
            continue;
        }
        int r = rw_writable_write(g->body, c);
        g->sent += len;
        if (r < 0) {
            on_gen_error(g->body, r);
            return;
        }
        if (r == 0) {
            g->drains++;
            return; /* on_gen_drain resumes */
        }
        if (g->delay_ms > 0) {
            uv_timer_start(&g->timer, on_gen_timer, g->delay_ms, 0);
            return;
        }
    }
}

static void stream_with(rw_invocation_t *inv, rw_stream_t *body, uint64_t total, uint64_t chunk,
                        uint64_t delay_ms)
{
    gen_t *g = calloc(1, sizeof *g);
    if (g == NULL) {
        rw_runtime_fail(inv, "Runtime.OutOfMemory", "no memory for the generator");
        return;
    }
    cJSON *args = args_of(inv);
    g->inv = inv;
    g->body = body;
    g->total = (uint64_t)num(args, "bytes", (double)total);
    uint64_t chunks = (uint64_t)num(args, "chunks", 0);
    g->chunk =
        chunks > 0 ? (g->total + chunks - 1) / chunks : (uint64_t)num(args, "chunk", (double)chunk);
    if (g->chunk == 0)
        g->chunk = 1;
    if (g->chunk > MAX_CHUNK)
        g->chunk = MAX_CHUNK;
    double fail_after = num(args, "fail_after", -1);
    g->fail_after = fail_after < 0 ? UINT64_MAX : (uint64_t)fail_after;
    g->delay_ms = (uint64_t)num(args, "delay_ms", (double)delay_ms);
    uv_timer_init(rw_runtime_loop(inv->runtime), &g->timer);
    g->timer.data = g;
    body->data = g;
    rw_stream_listen(body, &gen_events);

    const char *ct = str(args, "content_type", NULL);
    if (ct != NULL)
        rw_runtime_set_content_type(inv, ct);
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(args, "status");
    int r = 1;
    if (cJSON_IsNumber(status) && g->fail_after > 0)
        r = rw_runtime_write_prelude(inv, status->valueint,
                                     cJSON_GetObjectItemCaseSensitive(args, "headers"),
                                     cJSON_GetObjectItemCaseSensitive(args, "cookies"));
    cJSON_Delete(args);
    if (r < 0) {
        g->done = true;
        rw_stream_listen(body, NULL);
        rw_runtime_fail(inv, "Sample.BadPrelude", "the prelude was refused: %s", rw_strerror(r));
        uv_close((uv_handle_t *)&g->timer, on_gen_closed);
        return;
    }
    if (r == 0) {
        g->drains++;
        return; /* the prelude filled the buffer: wait for drain */
    }
    pump(g);
}

static void on_stream(rw_invocation_t *inv, rw_stream_t *body)
{
    stream_with(inv, body, 1024, 256, 0);
}

static void on_stream_large(rw_invocation_t *inv, rw_stream_t *body)
{
    stream_with(inv, body, 100u * 1024 * 1024, 64 * 1024, 0);
}

static void on_stream_slow(rw_invocation_t *inv, rw_stream_t *body)
{
    stream_with(inv, body, 10 * 4096, 4096, 50);
}

/* ---- a pipeline into the body ---- */

/* A readable that produces the pattern (or fails with RW_EPARSE after
 * fail_after bytes), piped into the response body with rw_pipeline: the
 * runtime's body is an ordinary stage, backpressure included. */
typedef struct src_s {
    rw_stream_t stream;
    rw_pipeline_t pipeline;
    rw_invocation_t *inv;
    uint64_t total, sent, chunk, fail_after;
} src_t;

static void src_read(rw_stream_t *s, size_t size)
{
    src_t *src = (src_t *)s; /* stream is the first member */
    for (;;) {
        if (src->sent >= src->fail_after) {
            rw_stream_destroy(s, RW_EPARSE);
            return;
        }
        if (src->sent >= src->total) {
            rw_readable_end(s);
            return;
        }
        uint64_t len = src->chunk;
        if (len > src->total - src->sent)
            len = src->total - src->sent;
        if (len > src->fail_after - src->sent)
            len = src->fail_after - src->sent;
        rw_chunk_t c;
        if (rw_chunk_copy(&c, pattern_at(src->sent), (size_t)len) < 0) {
            rw_stream_destroy(s, UV_ENOMEM);
            return;
        }
        src->sent += len;
        if (!rw_readable_push(s, c))
            return;
    }
}

static const rw_stream_impl_t src_impl = {.read = src_read};

static void on_src_closed(rw_stream_t *s)
{
    free(s);
}

static void on_pipeline_done(rw_pipeline_t *p, int err)
{
    src_t *src = p->data;
    rw_invocation_t *inv = src->inv;
    rw_runtime_log(inv, RW_RUNTIME_INFO, "stream-pipe: pipeline done (%s) after %llu bytes",
                   err ? rw_strerror(err) : "ok", (unsigned long long)src->sent);
    rw_stream_close(&src->stream, on_src_closed);
    if (err == 0)
        rw_runtime_end(inv);
    else
        rw_runtime_fail(inv, "Sample.PipelineFailed", "%s", rw_strerror(err));
}

static void on_stream_pipe(rw_invocation_t *inv, rw_stream_t *body)
{
    src_t *src = calloc(1, sizeof *src);
    if (src == NULL ||
        rw_readable_init(rw_runtime_loop(inv->runtime), &src->stream, &src_impl, NULL) < 0) {
        free(src);
        rw_runtime_fail(inv, "Runtime.OutOfMemory", "no memory for the source");
        return;
    }
    cJSON *args = args_of(inv);
    src->inv = inv;
    src->total = (uint64_t)num(args, "bytes", 1024);
    src->chunk = (uint64_t)num(args, "chunk", 16384);
    if (src->chunk == 0 || src->chunk > MAX_CHUNK)
        src->chunk = 16384;
    double fail_after = num(args, "fail_after", -1);
    cJSON_Delete(args);
    src->fail_after = fail_after < 0 ? UINT64_MAX : (uint64_t)fail_after;
    src->pipeline.data = src;
    int err = rw_pipeline(&src->pipeline, on_pipeline_done, &src->stream, body, NULL);
    if (err < 0) {
        rw_stream_close(&src->stream, on_src_closed);
        rw_runtime_fail(inv, "Sample.PipelineFailed", "cannot start: %s", rw_strerror(err));
    }
}

int main(void)
{
    rw_runtime_t *rt = rw_runtime_new();
    rw_runtime_on_init(rt, on_init, NULL);
    rw_runtime_register(rt, "echo", on_echo);
    rw_runtime_register(rt, "error", on_error);
    rw_runtime_register(rt, "sleep", on_sleep);
    rw_runtime_register(rt, "crash", on_crash);
    rw_runtime_register(rt, "init-fail", on_init_fail);
    rw_runtime_register(rt, "slowinit", on_slowinit);
    rw_runtime_register(rt, "env", on_env);
    rw_runtime_register(rt, "context", on_context);
    rw_runtime_register(rt, "counter", on_counter);
    rw_runtime_register(rt, "memhog", on_memhog);
    rw_runtime_register(rt, "blob", on_blob);
    rw_runtime_register_blocking(rt, "record", on_record);
    rw_runtime_register_blocking(rt, "batch", on_batch);
    rw_runtime_register_stream(rt, "stream", on_stream);
    rw_runtime_register_stream(rt, "stream-large", on_stream_large);
    rw_runtime_register_stream(rt, "stream-slow", on_stream_slow);
    rw_runtime_register_stream(rt, "stream-pipe", on_stream_pipe);
    int status = rw_runtime_run(rt);
    rw_runtime_free(rt);
    free(pattern);
    return status;
}
