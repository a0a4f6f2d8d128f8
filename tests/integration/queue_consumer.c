/* A standalone queue consumer for the kill -9 test: it consumes one function's
 * messages and runs each through a handler that records the delivery in
 * MongoDB, waits, records the completion, then succeeds. With a completion
 * budget it stalls every delivery past it (recorded, never completed), so the
 * test can kill it mid-processing at a known point.
 *
 * usage: rw_queue_consumer URI DB FUNCTION CONCURRENCY HOLD_MS COMPLETE_MAX OWNER
 *        COMPLETE_MAX < 0: no budget. Runs until SIGTERM (exit 0) or SIGKILL. */
#include "queue.h"
#include "reelway/error.h"

#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_STALLED 64

typedef struct {
    uv_loop_t *loop;
    mongoc_client_pool_t *pool;
    const char *db, *owner;
    int hold_ms;
    int complete_max;
    int completing;
    rw_queue_delivery_t *stalled[MAX_STALLED];
    int n_stalled;
    rw_queue_consumer_t *consumer;
    uv_signal_t sigterm;
} app_t;

typedef struct {
    uv_work_t work;
    uv_timer_t timer;
    app_t *app;
    rw_queue_delivery_t *d;
    const char *coll;
    bool ok;
} step_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Threadpool: one record in deliveries or completions. */
static void on_record_work(uv_work_t *w)
{
    step_t *s = w->data;
    mongoc_client_t *client = mongoc_client_pool_pop(s->app->pool);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, s->app->db, s->coll);
    bson_t *doc = BCON_NEW("msg", BCON_UTF8(s->d->id), "attempt", BCON_INT32(s->d->attempt),
                           "owner", BCON_UTF8(s->app->owner), "pid", BCON_INT32((int)getpid()),
                           "at", BCON_DATE_TIME(now_ms()));
    bson_error_t error;
    s->ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, &error);
    if (!s->ok)
        fprintf(stderr, "consumer %s: cannot record in %s: %s\n", s->app->owner, s->coll,
                error.message);
    bson_destroy(doc);
    mongoc_collection_destroy(coll);
    mongoc_client_pool_push(s->app->pool, client);
}

static void on_completion_recorded(uv_work_t *w, int status)
{
    step_t *s = w->data;
    rw_queue_delivery_done(s->d, s->ok ? RW_QUEUE_OK : RW_QUEUE_FAILED, NULL, 0);
    free(s);
}

static void on_timer_closed(uv_handle_t *h)
{
    step_t *s = h->data;
    s->coll = "completions";
    uv_queue_work(s->app->loop, &s->work, on_record_work, on_completion_recorded);
}

static void on_hold_end(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, on_timer_closed);
}

static void on_delivery_recorded(uv_work_t *w, int status)
{
    step_t *s = w->data;
    app_t *app = s->app;
    if (!s->ok) {
        rw_queue_delivery_done(s->d, RW_QUEUE_FAILED, NULL, 0);
        free(s);
        return;
    }
    if (app->complete_max >= 0 && app->completing >= app->complete_max &&
        app->n_stalled < MAX_STALLED) {
        /* Over budget: hold it until we are killed (or given back at SIGTERM). */
        printf("consumer %s: stalled on %s\n", app->owner, s->d->id);
        fflush(stdout);
        app->stalled[app->n_stalled++] = s->d;
        free(s);
        return;
    }
    app->completing++;
    uv_timer_init(app->loop, &s->timer);
    s->timer.data = s;
    uv_timer_start(&s->timer, on_hold_end, (uint64_t)app->hold_ms, 0);
}

static int invoke(void *arg, rw_queue_delivery_t *d)
{
    app_t *app = arg;
    step_t *s = calloc(1, sizeof *s);
    if (!s)
        return UV_ENOMEM;
    s->app = app;
    s->d = d;
    s->coll = "deliveries";
    s->work.data = s;
    int rc = uv_queue_work(app->loop, &s->work, on_record_work, on_delivery_recorded);
    if (rc != 0)
        free(s);
    return rc;
}

static void on_sigterm(uv_signal_t *sig, int signum)
{
    app_t *app = sig->data;
    printf("consumer %s: stopping\n", app->owner);
    fflush(stdout);
    rw_queue_consumer_close(app->consumer, NULL, NULL);
    for (int i = 0; i < app->n_stalled; i++)
        rw_queue_delivery_done(app->stalled[i], RW_QUEUE_RELEASE, NULL, 0);
    app->n_stalled = 0;
    uv_close((uv_handle_t *)sig, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 8) {
        fprintf(stderr, "usage: %s URI DB FUNCTION CONCURRENCY HOLD_MS COMPLETE_MAX OWNER\n",
                argv[0]);
        return 2;
    }
    mongoc_init();
    uv_loop_t loop;
    uv_loop_init(&loop);
    mongoc_uri_t *uri = mongoc_uri_new(argv[1]);
    if (!uri)
        return 2;
    app_t app = {.loop = &loop,
                 .db = argv[2],
                 .owner = argv[7],
                 .hold_ms = atoi(argv[5]),
                 .complete_max = atoi(argv[6])};
    app.pool = mongoc_client_pool_new(uri);
    mongoc_client_pool_set_error_api(app.pool, MONGOC_ERROR_API_VERSION_2);
    rw_queue_opts_t qopts = {.db_name = argv[2]};
    rw_queue_target_t target = {.function = argv[3], .concurrency = atoi(argv[4])};
    rw_queue_consumer_opts_t opts = {.owner = argv[7],
                                     .targets = &target,
                                     .n_targets = 1,
                                     .poll_min_ms = 20,
                                     .poll_max_ms = 200,
                                     .invoke = invoke,
                                     .invoke_arg = &app};
    int rc = rw_queue_consumer_new(&loop, app.pool, &qopts, &opts, &app.consumer);
    if (rc != 0) {
        fprintf(stderr, "consumer: %s\n", rw_strerror(rc));
        return 1;
    }
    uv_signal_init(&loop, &app.sigterm);
    app.sigterm.data = &app;
    uv_signal_start(&app.sigterm, on_sigterm, SIGTERM);
    printf("consumer %s: running (pid %d)\n", app.owner, (int)getpid());
    fflush(stdout);
    uv_run(&loop, UV_RUN_DEFAULT);
    int status = uv_loop_close(&loop) == 0 ? 0 : 1;
    mongoc_client_pool_destroy(app.pool);
    mongoc_uri_destroy(uri);
    mongoc_cleanup();
    return status;
}
