/* The per-loop scheduler behind deferred stream events (Node's nextTick): one
 * uv_idle_t per loop and an intrusive list of streams with work pending. */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>

struct rw__sched_s {
    uv_idle_t idle;
    uv_loop_t *loop;
    rw_stream_t *head, *tail;
    size_t live;
    rw__sched_t *next;
};

/* Loops are few and streams are made on their loop's thread: a short list
 * under a mutex, with a per-thread cache of the last hit, is enough. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static rw__sched_t *registry;
static _Thread_local rw__sched_t *cached;

/* How many streams one idle callback processes before letting the loop poll
 * for I/O again: synchronous producers must not starve sockets and timers. */
#define SCHED_BUDGET 4096

static void on_idle(uv_idle_t *idle)
{
    rw__sched_t *sched = idle->data;
    for (int budget = SCHED_BUDGET; sched->head != NULL && budget > 0; budget--) {
        rw_stream_t *s = sched->head;
        sched->head = s->tick_next;
        if (sched->head == NULL)
            sched->tail = NULL;
        s->tick_next = NULL;
        s->flags &= ~S_QUEUED;
        rw__stream_process(s); /* may call close_cb: s is not touched after */
    }
    if (sched->head == NULL)
        uv_idle_stop(idle);
}

rw__sched_t *rw__sched_get(uv_loop_t *loop)
{
    rw__sched_t *sched = cached;
    if (sched != NULL && sched->loop == loop)
        return sched;
    pthread_mutex_lock(&registry_lock);
    for (sched = registry; sched != NULL; sched = sched->next)
        if (sched->loop == loop)
            break;
    if (sched == NULL) {
        sched = calloc(1, sizeof(*sched));
        if (sched != NULL) {
            uv_idle_init(loop, &sched->idle); /* cannot fail */
            sched->idle.data = sched;
            sched->loop = loop;
            sched->next = registry;
            registry = sched;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    if (sched != NULL)
        cached = sched;
    return sched;
}

uv_loop_t *rw__sched_loop(const rw__sched_t *sched)
{
    return sched->loop;
}

void rw__sched_add(rw__sched_t *sched, rw_stream_t *s)
{
    s->tick_next = NULL;
    if (sched->tail != NULL)
        sched->tail->tick_next = s;
    else
        sched->head = s;
    sched->tail = s;
    if (!uv_is_active((uv_handle_t *)&sched->idle))
        uv_idle_start(&sched->idle, on_idle);
}

void rw__sched_live(rw__sched_t *sched, int delta)
{
    sched->live += delta;
}

static void on_sched_closed(uv_handle_t *h)
{
    free(h->data);
}

int rw_stream_loop_close(uv_loop_t *loop)
{
    pthread_mutex_lock(&registry_lock);
    rw__sched_t **link = &registry;
    while (*link != NULL && (*link)->loop != loop)
        link = &(*link)->next;
    rw__sched_t *sched = *link;
    if (sched != NULL && sched->live > 0) {
        pthread_mutex_unlock(&registry_lock);
        return UV_EBUSY;
    }
    if (sched != NULL)
        *link = sched->next;
    pthread_mutex_unlock(&registry_lock);
    if (sched == NULL)
        return 0;
    if (cached == sched)
        cached = NULL;
    uv_close((uv_handle_t *)&sched->idle, on_sched_closed);
    return 0;
}
