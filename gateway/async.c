/* Asynchronous invocations: every Event invocation is written to the durable
 * queue in MongoDB before the caller hears 202, and each worker's consumer
 * claims messages and runs them in the functions' environments, with retries
 * and dead letters as Lambda has them (gateway/queue.c). */
#include "internal.h"
#include "queue.h"
#include "template.h"

#include "reelway/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ASYNC_QUEUE "lambda-async"

int rw__async_start(rw_gateway_t *gw, char *why, size_t whylen)
{
    const rw_template_t *tpl = gw->node.tpl;
    if (!tpl || !gw->fnmgr || !tpl->function_count)
        return 0;
    rw_queue_opts_t qo = {.db_name = gw->cfg.db_name};
    gw->queue = rw_queue_new(gw->loop, gw->pool, &qo);
    if (!gw->queue) {
        snprintf(why, whylen, "cannot create the async queue");
        return UV_ENOMEM;
    }
    rw_queue_target_t *targets = calloc(tpl->function_count, sizeof *targets);
    if (!targets)
        return UV_ENOMEM;
    for (size_t i = 0; i < tpl->function_count; i++) {
        const rw_tpl_function_t *f = &tpl->functions[i];
        /* The lease must outlast a cold start and the whole Timeout: time a
         * delivery waits in the manager counts against it. */
        targets[i] = (rw_queue_target_t){
            .function = f->name,
            .concurrency = f->reserved_concurrency > 0 && f->reserved_concurrency < 4
                               ? f->reserved_concurrency
                               : 4,
            .visibility_ms = (int64_t)gw->cfg.init_timeout_ms + (int64_t)f->timeout_s * 1000 +
                             (int64_t)gw->cfg.async_lease_margin_ms,
        };
    }
    char owner[128];
    char host[64] = "host";
    gethostname(host, sizeof host);
    snprintf(owner, sizeof owner, "%s:%d:w%d", host, (int)getpid(), gw->node.worker_index);
    rw_queue_consumer_opts_t co = {
        .owner = owner,
        .targets = targets,
        .n_targets = tpl->function_count,
        .retry_base_ms = gw->cfg.async_retry_base_ms,
        .invoke = rw_queue_invoke_function,
        .invoke_arg = gw->fnmgr,
    };
    int rc = rw_queue_consumer_new(gw->loop, gw->pool, &qo, &co, &gw->consumer);
    free(targets);
    if (rc != 0)
        snprintf(why, whylen, "cannot start the async consumer: %s", rw_strerror(rc));
    return rc;
}

/* The consumer stops first (its deliveries in flight are released), then the
 * functions it feeds can go. */
void rw__async_close(rw_gateway_t *gw, void (*done)(void *arg), void *arg)
{
    rw_queue_consumer_t *c = gw->consumer;
    gw->consumer = NULL;
    if (c)
        rw_queue_consumer_close(c, done, arg);
    else
        done(arg);
}

void rw__async_close_producer(rw_gateway_t *gw, void (*done)(void *arg), void *arg)
{
    rw_queue_t *q = gw->queue;
    gw->queue = NULL;
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
    const rw_tpl_function_t *f = NULL;
    for (size_t i = 0; i < tpl->function_count && !f; i++)
        if (!strcmp(tpl->functions[i].name, function))
            f = &tpl->functions[i];
    if (!f)
        return RW_ENOTFOUND;
    if (len > RW_QUEUE_PAYLOAD_MAX)
        return RW_ELIMIT;
    const char *dlq = f->on_failure_queue >= 0    ? tpl->queues[f->on_failure_queue].name
                      : f->dead_letter_queue >= 0 ? tpl->queues[f->dead_letter_queue].name
                                                  : NULL;
    rw_queue_msg_t msg = {
        .queue = ASYNC_QUEUE,
        .function = function,
        .payload = payload,
        .len = len,
        .id = request_id,
        .max_attempts = 1 + f->max_retry_attempts,
        .max_age_ms = (int64_t)f->max_event_age_s * 1000,
        .dead_letter = dlq,
    };
    enqueue_t *e = malloc(sizeof *e);
    if (!e)
        return UV_ENOMEM;
    *e = (enqueue_t){gw, cb, arg};
    int rc = rw_queue_enqueue(gw->queue, &msg, on_enqueued, e);
    if (rc != 0)
        free(e);
    return rc;
}
