/* Private to stream/: the state bits of rw_stream_t, the per-loop scheduler
 * and the hooks the adapters and pipelines share with the core. */
#ifndef REELWAY_STREAM_INTERNAL_H
#define REELWAY_STREAM_INTERNAL_H

#include "reelway/stream.h"

#include <stddef.h>

#define rw__container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* rw_stream_t.flags: S_ the stream, R_ its readable half, W_ its writable half. */
enum {
    S_READABLE = 1u << 0,
    S_WRITABLE = 1u << 1,
    S_TRANSFORM = 1u << 2,
    S_QUEUED = 1u << 3, /* in its scheduler's list */
    S_DESTROYED = 1u << 4,
    S_CLOSING = 1u << 5,       /* rw_stream_close called */
    S_ERROR_PENDING = 1u << 6, /* on_error still to send */
    S_CLOSE_EMITTED = 1u << 7,
    S_CLOSE_DONE = 1u << 8, /* close_cb called */
    R_OBJ = 1u << 9,
    R_FLOWING = 1u << 10,
    R_READING = 1u << 11, /* impl->read called, nothing pushed since */
    R_SYNC = 1u << 12,    /* inside impl->read */
    R_ENDED = 1u << 13,   /* rw_readable_end called */
    R_END_EMITTED = 1u << 14,
    R_NEED_READABLE = 1u << 15,
    R_AWAIT_DRAIN = 1u << 16, /* paused by its pipe until the destination drains */
    W_OBJ = 1u << 17,
    W_WRITING = 1u << 18, /* impl->write in flight */
    W_SYNC = 1u << 19,    /* inside impl->write */
    W_NEED_DRAIN = 1u << 20,
    W_ENDING = 1u << 21, /* rw_writable_end called */
    W_FINAL_CALLED = 1u << 22,
    W_FINAL_PENDING = 1u << 23, /* impl->final in flight */
    W_PREFINISHED = 1u << 24,   /* final done, on_finish due */
    W_FINISHED = 1u << 25,
    X_WAIT = 1u << 26, /* transform completion held back by a full readable side */
};

/* rw_stream_t.pending: deferred work for the scheduler. */
enum {
    T_FLOW = 1u << 0,
    T_READ = 1u << 1,
    T_READABLE = 1u << 2,
    T_END = 1u << 3,
    T_DRAIN = 1u << 4,
    T_FINISH = 1u << 5,
    T_CLOSE = 1u << 6,
    T_FINAL = 1u << 7,
};

/* The caller's options with both halves forced to byte mode (adapters). */
static inline rw_stream_opts_t rw__bytes_opts(const rw_stream_opts_t *opts)
{
    rw_stream_opts_t o = {0};
    if (opts != NULL)
        o = *opts;
    o.readable_objects = o.writable_objects = false;
    return o;
}

typedef struct rw__sched_s rw__sched_t;

/* The scheduler of loop, made on first use. NULL only when out of memory. */
rw__sched_t *rw__sched_get(uv_loop_t *loop);
uv_loop_t *rw__sched_loop(const rw__sched_t *sched);
/* Queues s (not already queued) to have rw__stream_process run on it. */
void rw__sched_add(rw__sched_t *sched, rw_stream_t *s);
/* Counts the open streams of a scheduler (init +1, close_cb -1). */
void rw__sched_live(rw__sched_t *sched, int delta);

/* Runs a stream's deferred work; called by the scheduler only. */
void rw__stream_process(rw_stream_t *s);

/* Called by the core when a pipeline stage ended, finished or was destroyed:
 * ends the pipeline when every stage is complete or one failed. */
void rw__pipeline_report(rw_pipeline_t *p, rw_stream_t *s);

#endif
