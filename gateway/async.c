/* Asynchronous invocations and the event sources that feed them: every Event
 * invocation is written to the durable queue in MongoDB before the caller
 * hears 202; each worker's consumer claims messages and runs them in the
 * functions' environments, with retries and dead letters as Lambda has them
 * (gateway/queue.c), their OnSuccess / OnFailure / DeadLetterQueue records
 * sent to SQS queues; the same consumer polls the SQS queues for their
 * subscriptions (sqs.c); the scheduler fires Schedule events (scheduler.c). */
#include "internal.h"
#include "queue.h"
#include "scheduler.h"
#include "template.h"

#include "reelway/error.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* SQS batches stay under the 6 MB invoke limit with room for the records'
 * other fields (sqs.c cuts a batch whose escaped bodies pass it). */
#define SQS_BATCH_MAX_BYTES (5 * 1024 * 1024)
#define SQS_CONCURRENCY 2 /* batches of one subscription in flight per worker */

/* What the consumer's targets and the invokers borrow, kept for the
 * gateway's life. */
typedef struct gw_async_s {
    rw_queue_target_t *targets;
    size_t n_targets;
    rw_queue_forward_t *forwards; /* the targets' forwards, in one array */
    char (*queue_keys)[160];      /* "sqs:NAME" of every template queue */
    rw_schedule_spec_t *schedules;
} gw_async_t;

static const rw_tpl_function_t *function_of(const rw_template_t *tpl, const char *name)
{
    for (size_t i = 0; i < tpl->function_count; i++)
        if (!strcmp(tpl->functions[i].name, name))
            return &tpl->functions[i];
    return NULL;
}

/* ---- OnSuccess: a record of each successful invocation ----------------------------- */

typedef struct success_s {
    rw_gateway_t *gw;
    rw_queue_delivery_t *d;
    const rw_tpl_function_t *f;
} success_t;

static void iso_now(char out[32])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", base, (int)(ts.tv_nsec / 1000000));
}

static cJSON *json_or_string(const char *text, size_t len)
{
    cJSON *j = len ? cJSON_ParseWithLength(text, len) : NULL;
    if (j)
        return j;
    char *copy = strndup(text ? text : "", len);
    j = cJSON_CreateString(copy ? copy : "");
    free(copy);
    return j;
}

static void on_success_sent(void *arg, int status, const char *id, const char *why)
{
    success_t *s = arg;
    if (status != 0 && status != UV_EEXIST)
        fprintf(stderr, "reelway: %s: cannot send the OnSuccess record of %s: %s\n", s->f->name,
                s->d->id, why ? why : rw_strerror(status));
    else if (s->gw->consumer)
        rw_queue_consumer_kick(s->gw->consumer);
    rw_queue_delivery_done(s->d, RW_QUEUE_OK, NULL, 0);
    free(s);
}

/* Lambda's record of a success, sent to the OnSuccess queue before the
 * message completes (so it is not lost; a redelivery after a crash sends it
 * under the same id, which the queue refuses). */
static void send_success(success_t *s, const char *response, size_t len)
{
    const rw_template_t *tpl = s->gw->node.tpl;
    const rw_tpl_queue_t *q = &tpl->queues[s->f->on_success_queue];
    char ts[32], arn[512], queue[160], id[RW_QUEUE_ID_LEN];
    iso_now(ts);
    snprintf(arn, sizeof arn, "%s:$LATEST", s->f->arn);
    snprintf(queue, sizeof queue, RW_QUEUE_SQS_PREFIX "%s", q->queue_name);
    cJSON *rec = cJSON_CreateObject();
    cJSON_AddStringToObject(rec, "version", "1.0");
    cJSON_AddStringToObject(rec, "timestamp", ts);
    cJSON *ctx = cJSON_AddObjectToObject(rec, "requestContext");
    cJSON_AddStringToObject(ctx, "requestId", s->d->id);
    cJSON_AddStringToObject(ctx, "functionArn", arn);
    cJSON_AddStringToObject(ctx, "condition", "Success");
    cJSON_AddNumberToObject(ctx, "approximateInvokeCount", s->d->attempt);
    cJSON_AddItemToObject(rec, "requestPayload", json_or_string(s->d->payload, s->d->len));
    cJSON *resp = cJSON_AddObjectToObject(rec, "responseContext");
    cJSON_AddNumberToObject(resp, "statusCode", 200);
    cJSON_AddStringToObject(resp, "executedVersion", "$LATEST");
    cJSON_AddItemToObject(rec, "responsePayload", json_or_string(response, len));
    char *payload = cJSON_PrintUnformatted(rec);
    cJSON_Delete(rec);
    char what[200];
    snprintf(what, sizeof what, "on-success:%s", queue);
    rw_queue_derive_id(s->d->id, what, id);
    rw_queue_msg_t msg = {.queue = queue,
                          .payload = payload,
                          .len = payload ? strlen(payload) : 0,
                          .id = id,
                          .max_age_ms = (int64_t)q->retention_s * 1000,
                          .delay_ms = (int64_t)q->delay_s * 1000};
    int rc = payload && s->gw->queue ? rw_queue_enqueue(s->gw->queue, &msg, on_success_sent, s)
                                     : UV_ENOMEM;
    cJSON_free(payload);
    if (rc != 0)
        on_success_sent(s, rc, NULL, "the record was not queued");
}

static void on_invoked(rw_invoke_t *inv, const rw_invoke_result_t *res, void *arg)
{
    success_t *s = arg;
    switch (res->status) {
    case RW_INVOKE_OK:
        send_success(s, res->payload, res->len);
        return;
    case RW_INVOKE_CANCELLED:
    case RW_INVOKE_SHUTDOWN:
        rw_queue_delivery_done(s->d, RW_QUEUE_RELEASE, NULL, 0);
        break;
    default:
        rw_queue_delivery_done(s->d, RW_QUEUE_FAILED, res->payload, res->len);
        break;
    }
    free(s);
}

/* The consumer's invoker of Event invocations: the environment manager's
 * (queue_invoke.c), plus the OnSuccess record for functions that have one. */
static int invoke_async(void *arg, rw_queue_delivery_t *d)
{
    rw_gateway_t *gw = arg;
    const rw_tpl_function_t *f = function_of(gw->node.tpl, d->function);
    if (!f || f->on_success_queue < 0)
        return rw_queue_invoke_function(gw->fnmgr, d);
    int fn = rw_fnmgr_find(gw->fnmgr, d->function);
    if (fn < 0)
        return RW_ENOTFOUND;
    success_t *s = malloc(sizeof *s);
    if (!s)
        return UV_ENOMEM;
    *s = (success_t){gw, d, f};
    rw_invoke_opts_t opts = {.request_id = d->id, .trace_id = d->trace_id};
    static const rw_invoke_cbs_t cbs = {.done = on_invoked};
    int rc = rw_fnmgr_invoke(gw->fnmgr, fn, d->payload, d->len, &opts, &cbs, s, NULL);
    if (rc != 0)
        free(s);
    return rc;
}

/* ---- start and stop ------------------------------------------------------------------- */

static void async_free(gw_async_t *a)
{
    if (!a)
        return;
    free(a->targets);
    free(a->forwards);
    free(a->queue_keys);
    free(a->schedules);
    free(a);
}

/* The async invocation fields of a function's messages. */
static void async_msg(const rw_template_t *tpl, const rw_tpl_function_t *f, rw_queue_msg_t *msg)
{
    msg->queue = RW_QUEUE_ASYNC;
    msg->function = f->name;
    msg->max_attempts = 1 + f->max_retry_attempts;
    msg->max_age_ms = (int64_t)f->max_event_age_s * 1000;
    msg->dead_letter = f->on_failure_queue >= 0    ? tpl->queues[f->on_failure_queue].queue_name
                       : f->dead_letter_queue >= 0 ? tpl->queues[f->dead_letter_queue].queue_name
                                                   : NULL;
}

static void on_fired(void *arg)
{
    rw_gateway_t *gw = arg;
    if (gw->consumer)
        rw_queue_consumer_kick(gw->consumer);
}

static int start_scheduler(rw_gateway_t *gw, const rw_queue_opts_t *qo, const char *owner,
                           char *why, size_t whylen)
{
    const rw_template_t *tpl = gw->node.tpl;
    gw_async_t *a = gw->async;
    if (!tpl->schedule_count)
        return 0;
    a->schedules = calloc(tpl->schedule_count, sizeof *a->schedules);
    if (!a->schedules)
        return UV_ENOMEM;
    for (size_t i = 0; i < tpl->schedule_count; i++) {
        const rw_tpl_schedule_t *sc = &tpl->schedules[i];
        const rw_tpl_function_t *f = &tpl->functions[sc->function];
        rw_queue_msg_t m = {0};
        async_msg(tpl, f, &m);
        a->schedules[i] = (rw_schedule_spec_t){.name = sc->name,
                                               .function = f->name,
                                               .expression = sc->expression,
                                               .is_rate = sc->is_rate,
                                               .rate_s = sc->rate_s,
                                               .cron = (const char *const *)sc->cron,
                                               .input = sc->input,
                                               .enabled = sc->enabled,
                                               .max_attempts = m.max_attempts,
                                               .max_age_ms = m.max_age_ms,
                                               .dead_letter = m.dead_letter};
    }
    rw_scheduler_opts_t so = {.schedules = a->schedules,
                              .n_schedules = tpl->schedule_count,
                              .owner = owner,
                              .region = tpl->region,
                              .account_id = tpl->account_id,
                              .lease_ms = gw->cfg.schedule_lease_ms,
                              .time_scale = gw->cfg.test_schedule_scale,
                              .on_fired = on_fired,
                              .arg = gw};
    return rw_scheduler_new(gw->loop, gw->pool, qo, &so, &gw->scheduler, why, whylen);
}

int rw__async_start(rw_gateway_t *gw, char *why, size_t whylen)
{
    const rw_template_t *tpl = gw->node.tpl;
    if (!tpl || !gw->fnmgr || !tpl->function_count)
        return 0;
    rw_queue_opts_t qo = {.db_name = gw->cfg.db_name};
    gw->queue = rw_queue_new(gw->loop, gw->pool, &qo);
    gw_async_t *a = calloc(1, sizeof *a);
    gw->async = a;
    size_t n_targets = tpl->function_count + tpl->subscription_count;
    if (!gw->queue || !a || !(a->targets = calloc(n_targets, sizeof *a->targets)) ||
        !(a->forwards = calloc(2 * tpl->function_count + tpl->subscription_count + 1,
                               sizeof *a->forwards)) ||
        !(a->queue_keys = calloc(tpl->queue_count + 1, sizeof *a->queue_keys))) {
        snprintf(why, whylen, "cannot create the async queue: out of memory");
        return UV_ENOMEM;
    }
    for (size_t i = 0; i < tpl->queue_count; i++)
        snprintf(a->queue_keys[i], sizeof a->queue_keys[i], RW_QUEUE_SQS_PREFIX "%s",
                 tpl->queues[i].queue_name);
    size_t nf = 0;
    for (size_t i = 0; i < tpl->function_count; i++) {
        const rw_tpl_function_t *f = &tpl->functions[i];
        rw_queue_forward_t *fw = &a->forwards[nf];
        size_t k = 0;
        /* A function's dead invocations also go to its OnFailure destination
         * (Lambda's record) and its DeadLetterQueue (the event itself). */
        if (f->on_failure_queue >= 0) {
            const rw_tpl_queue_t *q = &tpl->queues[f->on_failure_queue];
            fw[k++] = (rw_queue_forward_t){.kind = RW_QUEUE_FORWARD_ON_FAILURE,
                                           .queue = a->queue_keys[f->on_failure_queue],
                                           .max_age_ms = (int64_t)q->retention_s * 1000,
                                           .delay_ms = (int64_t)q->delay_s * 1000,
                                           .function_arn = f->arn};
        }
        if (f->dead_letter_queue >= 0) {
            const rw_tpl_queue_t *q = &tpl->queues[f->dead_letter_queue];
            fw[k++] = (rw_queue_forward_t){.kind = RW_QUEUE_FORWARD_DLQ,
                                           .queue = a->queue_keys[f->dead_letter_queue],
                                           .max_age_ms = (int64_t)q->retention_s * 1000,
                                           .delay_ms = (int64_t)q->delay_s * 1000};
        }
        nf += k;
        /* The lease must outlast a cold start and the whole Timeout: time a
         * delivery waits in the manager counts against it. */
        a->targets[a->n_targets++] = (rw_queue_target_t){
            .function = f->name,
            .concurrency = f->reserved_concurrency > 0 && f->reserved_concurrency < 4
                               ? f->reserved_concurrency
                               : 4,
            .visibility_ms = (int64_t)gw->cfg.init_timeout_ms + (int64_t)f->timeout_s * 1000 +
                             (int64_t)gw->cfg.async_lease_margin_ms,
            .forwards = k ? fw : NULL,
            .n_forwards = k,
        };
    }
    for (size_t i = 0; i < tpl->subscription_count; i++) {
        const rw_tpl_subscription_t *sub = &tpl->subscriptions[i];
        if (!sub->enabled)
            continue; /* a disabled event source mapping polls nothing */
        const rw_tpl_function_t *f = &tpl->functions[sub->function];
        const rw_tpl_queue_t *q = &tpl->queues[sub->queue];
        rw_queue_forward_t *fw = NULL;
        if (q->dead_letter_queue >= 0 && q->max_receive_count > 0) {
            const rw_tpl_queue_t *dlq = &tpl->queues[q->dead_letter_queue];
            fw = &a->forwards[nf++];
            *fw = (rw_queue_forward_t){.kind = RW_QUEUE_FORWARD_REDRIVE,
                                       .queue = a->queue_keys[q->dead_letter_queue],
                                       .max_age_ms = (int64_t)dlq->retention_s * 1000};
        }
        a->targets[a->n_targets++] = (rw_queue_target_t){
            .function = f->name,
            .queue = a->queue_keys[sub->queue],
            .concurrency = f->reserved_concurrency > 0 && f->reserved_concurrency < SQS_CONCURRENCY
                               ? f->reserved_concurrency
                               : SQS_CONCURRENCY,
            /* Held from the claim: through the batching window, a cold
             * start and the whole Timeout. */
            .visibility_ms = (int64_t)sub->batch_window_s * 1000 +
                             (int64_t)gw->cfg.init_timeout_ms + (int64_t)f->timeout_s * 1000 +
                             (int64_t)gw->cfg.async_lease_margin_ms,
            .batch_size = sub->batch_size,
            .batch_window_ms = (uint64_t)sub->batch_window_s * 1000,
            .batch_max_bytes = SQS_BATCH_MAX_BYTES,
            .sqs_visibility_ms = (int64_t)q->visibility_timeout_s * 1000,
            .max_receives = fw ? q->max_receive_count : 0,
            .forwards = fw,
            .n_forwards = fw ? 1 : 0,
        };
    }
    char owner[128];
    char host[64] = "host";
    gethostname(host, sizeof host);
    snprintf(owner, sizeof owner, "%s:%d:w%d", host, (int)getpid(), gw->node.worker_index);
    rw_queue_consumer_opts_t co = {
        .owner = owner,
        .targets = a->targets,
        .n_targets = a->n_targets,
        .retry_base_ms = gw->cfg.async_retry_base_ms,
        .invoke = invoke_async,
        .invoke_batch = rw__sqs_invoke_batch,
        .invoke_arg = gw,
    };
    int rc = rw_queue_consumer_new(gw->loop, gw->pool, &qo, &co, &gw->consumer);
    if (rc != 0) {
        snprintf(why, whylen, "cannot start the async consumer: %s", rw_strerror(rc));
        return rc;
    }
    rc = start_scheduler(gw, &qo, owner, why, whylen);
    if (rc != 0 && !why[0])
        snprintf(why, whylen, "cannot start the scheduler: %s", rw_strerror(rc));
    return rc;
}

static void close_consumer(void *arg);

typedef struct closing_s {
    rw_gateway_t *gw;
    void (*done)(void *arg);
    void *arg;
} closing_t;

/* The scheduler stops first (it steps down, so another node fires at once),
 * then the consumer (its deliveries in flight are released), then the
 * functions it feeds can go. */
void rw__async_close(rw_gateway_t *gw, void (*done)(void *arg), void *arg)
{
    closing_t *cl = malloc(sizeof *cl);
    if (!cl)
        abort(); /* a fixed-size allocation */
    *cl = (closing_t){gw, done, arg};
    rw_scheduler_t *s = gw->scheduler;
    gw->scheduler = NULL;
    if (s)
        rw_scheduler_close(s, close_consumer, cl);
    else
        close_consumer(cl);
}

static void close_consumer(void *arg)
{
    closing_t *cl = arg;
    rw_gateway_t *gw = cl->gw;
    void (*done)(void *) = cl->done;
    void *done_arg = cl->arg;
    free(cl);
    rw_queue_consumer_t *c = gw->consumer;
    gw->consumer = NULL;
    if (c)
        rw_queue_consumer_close(c, done, done_arg);
    else
        done(done_arg);
}

void rw__async_close_producer(rw_gateway_t *gw, void (*done)(void *arg), void *arg)
{
    rw_queue_t *q = gw->queue;
    gw->queue = NULL;
    async_free(gw->async);
    gw->async = NULL;
    if (q)
        rw_queue_close(q, done, arg);
    else
        done(arg);
}

typedef struct {
    rw_gateway_t *gw;
    void (*cb)(void *arg, int status, const char *request_id);
    void *arg;
} enqueue_t;

static void on_enqueued(void *arg, int status, const char *id, const char *why)
{
    enqueue_t *e = arg;
    if (status != 0)
        fprintf(stderr, "reelway: cannot queue an async invocation: %s\n", why ? why : "");
    else if (e->gw->consumer)
        rw_queue_consumer_kick(e->gw->consumer);
    e->cb(e->arg, status, id);
    free(e);
}

int rw__gateway_enqueue(rw_gateway_t *gw, const char *function, const char *payload, size_t len,
                        const char *request_id,
                        void (*cb)(void *arg, int status, const char *request_id), void *arg)
{
    if (!gw->queue)
        return UV_ENOSYS;
    const rw_template_t *tpl = gw->node.tpl;
    const rw_tpl_function_t *f = function_of(tpl, function);
    if (!f)
        return RW_ENOTFOUND;
    if (len > RW_QUEUE_PAYLOAD_MAX)
        return RW_ELIMIT;
    rw_queue_msg_t msg = {.payload = payload, .len = len, .id = request_id};
    async_msg(tpl, f, &msg);
    enqueue_t *e = malloc(sizeof *e);
    if (!e)
        return UV_ENOMEM;
    *e = (enqueue_t){gw, cb, arg};
    int rc = rw_queue_enqueue(gw->queue, &msg, on_enqueued, e);
    if (rc != 0)
        free(e);
    return rc;
}
