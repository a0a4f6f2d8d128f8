/* The stream core: readable and writable halves, transforms, their state
 * machine and deferred events (Node.js stream semantics on libuv). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* How many times maybe_read calls a producer that pushes synchronously
 * before yielding to the scheduler (and so to the loop's I/O). */
#define READ_BUDGET 64

/* ---- queues: rings of chunks, allocated on first use, freed when empty ---- */

static int q_push(struct rw__queue_s *q, rw_chunk_t c)
{
    if (q->count == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 8;
        if (cap < q->cap)
            return UV_ENOMEM;
        rw_chunk_t *ring = malloc(cap * sizeof(*ring));
        if (ring == NULL)
            return UV_ENOMEM;
        for (uint32_t i = 0; i < q->count; i++)
            ring[i] = q->ring[(q->head + i) % q->cap];
        free(q->ring);
        q->ring = ring;
        q->cap = cap;
        q->head = 0;
    }
    q->ring[(q->head + q->count) % q->cap] = c;
    q->count++;
    return 0;
}

static rw_chunk_t q_shift(struct rw__queue_s *q)
{
    rw_chunk_t c = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    if (--q->count == 0) {
        /* An idle stream holds no allocation (see stream.h). */
        free(q->ring);
        q->ring = NULL;
        q->cap = q->head = 0;
    }
    return c;
}

/* ---- helpers ---- */

static size_t chunk_size(bool objects, const rw_chunk_t *c)
{
    return objects ? 1 : c->len;
}

static void drop_chunk(rw_stream_t *s, bool objects, rw_chunk_t c)
{
    if (!objects)
        rw_buf_unref(c.buf);
    else if (s->impl->free_obj != NULL && c.obj != NULL)
        s->impl->free_obj(s, c.obj);
}

static void schedule(rw_stream_t *s, unsigned what)
{
    s->pending |= what;
    if (!(s->flags & S_QUEUED)) {
        s->flags |= S_QUEUED;
        rw__sched_add(s->sched, s);
    }
}

/* The consumer's callback, or NULL once the stream is being closed. */
#define LISTENER(s, fn) ((s)->events != NULL && !((s)->flags & S_CLOSING) ? (s)->events->fn : NULL)

static bool half_done(const rw_stream_t *s)
{
    return (!(s->flags & S_READABLE) || (s->flags & R_END_EMITTED)) &&
           (!(s->flags & S_WRITABLE) || (s->flags & W_FINISHED));
}

/* ---- init ---- */

static int stream_init(uv_loop_t *loop, rw_stream_t *s, const rw_stream_impl_t *impl,
                       const rw_stream_opts_t *opts, uint32_t kind)
{
    static const rw_stream_opts_t defaults;
    if (loop == NULL || s == NULL || impl == NULL)
        return UV_EINVAL;
    if (opts == NULL)
        opts = &defaults;
    rw__sched_t *sched = rw__sched_get(loop);
    if (sched == NULL)
        return UV_ENOMEM;
    memset(s, 0, sizeof(*s));
    s->sched = sched;
    s->impl = impl;
    s->flags = kind;
    if (opts->readable_objects)
        s->flags |= R_OBJ;
    if (opts->writable_objects)
        s->flags |= W_OBJ;
    s->rhwm = opts->readable_hwm       ? opts->readable_hwm
              : opts->readable_objects ? RW_STREAM_DEFAULT_OBJECT_HWM
                                       : RW_STREAM_DEFAULT_HWM;
    s->whwm = opts->writable_hwm       ? opts->writable_hwm
              : opts->writable_objects ? RW_STREAM_DEFAULT_OBJECT_HWM
                                       : RW_STREAM_DEFAULT_HWM;
    rw__sched_live(sched, 1);
    return 0;
}

int rw_readable_init(uv_loop_t *loop, rw_stream_t *s, const rw_stream_impl_t *impl,
                     const rw_stream_opts_t *opts)
{
    if (impl == NULL || impl->read == NULL)
        return UV_EINVAL;
    return stream_init(loop, s, impl, opts, S_READABLE);
}

int rw_writable_init(uv_loop_t *loop, rw_stream_t *s, const rw_stream_impl_t *impl,
                     const rw_stream_opts_t *opts)
{
    if (impl == NULL || impl->write == NULL)
        return UV_EINVAL;
    return stream_init(loop, s, impl, opts, S_WRITABLE);
}

int rw_duplex_init(uv_loop_t *loop, rw_stream_t *s, const rw_stream_impl_t *impl,
                   const rw_stream_opts_t *opts)
{
    if (impl == NULL || impl->read == NULL || impl->write == NULL)
        return UV_EINVAL;
    return stream_init(loop, s, impl, opts, S_READABLE | S_WRITABLE);
}

int rw_transform_init(uv_loop_t *loop, rw_stream_t *s, const rw_stream_impl_t *impl,
                      const rw_stream_opts_t *opts)
{
    if (impl == NULL || impl->read != NULL || impl->write == NULL)
        return UV_EINVAL;
    return stream_init(loop, s, impl, opts, S_READABLE | S_WRITABLE | S_TRANSFORM);
}

static void passthrough_write(rw_stream_t *s, rw_chunk_t chunk)
{
    rw_readable_push(s, chunk);
    rw_transform_done(s, 0);
}

static const rw_stream_impl_t passthrough_impl = {.write = passthrough_write};

int rw_passthrough_init(uv_loop_t *loop, rw_stream_t *s, const rw_stream_opts_t *opts)
{
    if (opts != NULL && opts->readable_objects != opts->writable_objects)
        return UV_EINVAL;
    return rw_transform_init(loop, s, &passthrough_impl, opts);
}

uv_loop_t *rw_stream_loop(const rw_stream_t *s)
{
    return rw__sched_loop(s->sched);
}

static void maybe_read(rw_stream_t *s);

void rw_stream_listen(rw_stream_t *s, const rw_stream_events_t *ev)
{
    s->events = ev;
    if (ev != NULL && ev->on_readable != NULL && (s->flags & S_READABLE)) {
        s->flags |= R_NEED_READABLE;
        schedule(s, s->rq.count || (s->flags & R_ENDED) ? T_READABLE | T_READ : T_READ);
    }
}

/* ---- destroy and close ---- */

void rw_stream_destroy(rw_stream_t *s, int err)
{
    if (s->flags & S_DESTROYED)
        return;
    s->flags |= S_DESTROYED;
    if (s->flags & X_WAIT) {
        /* The transform already consumed its chunk; only the completion was held. */
        s->flags &= ~(W_WRITING | X_WAIT);
        s->wcur = 0;
    }
    s->flags &= ~R_FLOWING;
    if (err != 0) {
        s->err = err;
        s->flags |= S_ERROR_PENDING;
    }
    while (s->rq.count > 0)
        drop_chunk(s, s->flags & R_OBJ, q_shift(&s->rq));
    s->rlen = 0;
    while (s->wq.count > 0)
        drop_chunk(s, s->flags & W_OBJ, q_shift(&s->wq));
    s->wlen = s->wcur;
    if (s->impl->destroy != NULL)
        s->impl->destroy(s, err);
    schedule(s, T_CLOSE);
}

void rw_stream_close(rw_stream_t *s, rw_stream_close_cb close_cb)
{
    if (s->flags & S_CLOSING)
        return;
    s->flags |= S_CLOSING;
    s->close_cb = close_cb;
    if (!(s->flags & S_DESTROYED))
        rw_stream_destroy(s, 0);
    else
        schedule(s, T_CLOSE);
}

void rw_stream_ref(rw_stream_t *s)
{
    s->refs++;
}

void rw_stream_unref(rw_stream_t *s)
{
    if (--s->refs == 0 && (s->flags & S_DESTROYED))
        schedule(s, T_CLOSE);
}

bool rw_stream_destroyed(const rw_stream_t *s)
{
    return s->flags & S_DESTROYED;
}

int rw_stream_error(const rw_stream_t *s)
{
    return s->err;
}

/* ---- readable ---- */

/* Hands a chunk to whoever consumes the readable half. */
static void deliver(rw_stream_t *s, rw_chunk_t c)
{
    rw_stream_t *dst = s->pipe_dst;
    if (dst != NULL) {
        int r = rw_writable_write(dst, c);
        if (r <= 0 && dst == s->pipe_dst) {
            /* Node's pipe: pause until the destination drains. An error means
             * the destination is gone; its close unpipes or tears down. */
            s->flags &= ~R_FLOWING;
            if (r == 0)
                s->flags |= R_AWAIT_DRAIN;
        }
        return;
    }
    void (*on_data)(rw_stream_t *, rw_chunk_t) = LISTENER(s, on_data);
    if (on_data != NULL)
        on_data(s, c);
    else
        drop_chunk(s, s->flags & R_OBJ, c); /* flowing with nobody listening: Node drops it */
}

/* Asks the producer for more while below the HWM. A producer that pushes
 * synchronously is called again here in a loop, not recursively. */
static void maybe_read(rw_stream_t *s)
{
    for (int n = 0;; n++) {
        uint32_t f = s->flags;
        if ((f & (S_DESTROYED | R_ENDED | R_READING | R_SYNC)) || !(f & S_READABLE))
            return;
        if (s->rlen >= s->rhwm)
            return;
        if (n == READ_BUDGET) {
            schedule(s, T_READ);
            return;
        }
        if (f & S_TRANSFORM) {
            /* A transform's "read" releases the completion it held back. */
            if (!(f & X_WAIT))
                return;
            s->flags &= ~X_WAIT;
            rw_writable_write_done(s, 0);
            continue;
        }
        s->flags |= R_READING | R_SYNC;
        s->impl->read(s, s->rhwm - s->rlen);
        s->flags &= ~R_SYNC;
    }
}

static void flow(rw_stream_t *s)
{
    while ((s->flags & (R_FLOWING | S_DESTROYED)) == R_FLOWING && s->rq.count > 0) {
        rw_chunk_t c = q_shift(&s->rq);
        s->rlen -= chunk_size(s->flags & R_OBJ, &c);
        deliver(s, c);
    }
    if (s->flags & S_DESTROYED)
        return;
    if ((s->flags & R_ENDED) && s->rq.count == 0)
        schedule(s, T_END);
    else
        maybe_read(s);
}

bool rw_readable_push(rw_stream_t *s, rw_chunk_t chunk)
{
    bool objects = s->flags & R_OBJ;
    if (s->flags & S_DESTROYED) {
        drop_chunk(s, objects, chunk);
        return false;
    }
    if (s->flags & R_ENDED) {
        drop_chunk(s, objects, chunk);
        rw_stream_destroy(s, RW_EWRITEEND);
        return false;
    }
    s->flags &= ~R_READING;
    if (!objects && chunk.len == 0) {
        rw_buf_unref(chunk.buf);
    } else if ((s->flags & R_FLOWING) && s->rq.count == 0) {
        deliver(s, chunk);
    } else {
        int err = q_push(&s->rq, chunk);
        if (err != 0) {
            drop_chunk(s, objects, chunk);
            rw_stream_destroy(s, err);
            return false;
        }
        s->rlen += chunk_size(objects, &chunk);
        if (s->flags & R_FLOWING)
            schedule(s, T_FLOW);
        else if (s->flags & R_NEED_READABLE)
            schedule(s, T_READABLE);
    }
    if (s->flags & S_DESTROYED)
        return false;
    /* Outside impl->read (data that arrived by I/O), ask for more now; inside
     * it, maybe_read's loop does. */
    if (!(s->flags & R_SYNC) && (s->flags & (S_TRANSFORM | X_WAIT)) != S_TRANSFORM)
        maybe_read(s); /* (a transform only "reads" to release a held completion) */
    return !(s->flags & S_DESTROYED) && s->rlen < s->rhwm;
}

void rw_readable_end(rw_stream_t *s)
{
    if (s->flags & (R_ENDED | S_DESTROYED))
        return;
    s->flags |= R_ENDED;
    s->flags &= ~R_READING;
    unsigned what = s->flags & R_NEED_READABLE ? T_READABLE : 0;
    if (s->rq.count == 0)
        what |= T_END;
    if (what)
        schedule(s, what);
}

void rw_readable_resume(rw_stream_t *s)
{
    if ((s->flags & (S_DESTROYED | S_READABLE)) != S_READABLE)
        return;
    s->flags |= R_FLOWING;
    s->flags &= ~R_AWAIT_DRAIN;
    schedule(s, T_FLOW);
}

void rw_readable_pause(rw_stream_t *s)
{
    s->flags &= ~R_FLOWING;
}

bool rw_readable_flowing(const rw_stream_t *s)
{
    return s->flags & R_FLOWING;
}

static int take(rw_stream_t *s, size_t max, rw_chunk_t *out)
{
    rw_chunk_t *head = &s->rq.ring[s->rq.head];
    if (!(s->flags & R_OBJ) && max > 0 && head->len > max) {
        *out = rw_chunk_slice(head, 0, max);
        head->base += max;
        head->len -= max;
        s->rlen -= max;
    } else {
        *out = q_shift(&s->rq);
        s->rlen -= chunk_size(s->flags & R_OBJ, out);
    }
    if (s->rq.count == 0 && (s->flags & R_ENDED))
        schedule(s, T_END);
    return 1;
}

int rw_readable_read(rw_stream_t *s, size_t max, rw_chunk_t *out)
{
    if (s->flags & R_END_EMITTED)
        return UV_EOF;
    if (s->flags & S_DESTROYED)
        return s->err ? s->err : RW_EDESTROYED;
    if (!(s->flags & S_READABLE))
        return UV_EINVAL;
    if (s->rq.count > 0) {
        take(s, max, out);
        maybe_read(s);
        return 1;
    }
    if (s->flags & R_ENDED) {
        schedule(s, T_END);
        return UV_EOF;
    }
    s->flags |= R_NEED_READABLE;
    maybe_read(s);
    if (s->rq.count > 0 && !(s->flags & S_DESTROYED)) {
        s->flags &= ~R_NEED_READABLE;
        return take(s, max, out);
    }
    return 0;
}

size_t rw_readable_length(const rw_stream_t *s)
{
    return s->rlen;
}

bool rw_readable_ended(const rw_stream_t *s)
{
    return s->flags & R_END_EMITTED;
}

/* ---- writable ---- */

static void maybe_final(rw_stream_t *s);

/* Becomes idle after writes: drain (deferred, as Node does after a synchronous
 * write) and, once ended, final. */
static void writes_idle(rw_stream_t *s)
{
    if ((s->flags & W_NEED_DRAIN) && s->wlen == 0)
        schedule(s, T_DRAIN);
    if (s->flags & W_ENDING)
        maybe_final(s);
}

/* Runs writes until one is pending asynchronously or the queue is empty;
 * synchronous completions loop here instead of recursing. */
static void start_writes(rw_stream_t *s, rw_chunk_t c)
{
    for (;;) {
        s->flags |= W_WRITING | W_SYNC;
        s->wcur = chunk_size(s->flags & W_OBJ, &c);
        s->impl->write(s, c);
        s->flags &= ~W_SYNC;
        if (s->flags & (W_WRITING | S_DESTROYED))
            return;
        if (s->wq.count == 0)
            break;
        c = q_shift(&s->wq);
    }
    writes_idle(s);
}

int rw_writable_write(rw_stream_t *s, rw_chunk_t chunk)
{
    bool objects = s->flags & W_OBJ;
    if (!(s->flags & S_WRITABLE)) {
        drop_chunk(s, objects, chunk);
        return UV_EINVAL;
    }
    if (s->flags & S_DESTROYED) {
        drop_chunk(s, objects, chunk);
        return RW_EDESTROYED;
    }
    if (s->flags & W_ENDING) {
        drop_chunk(s, objects, chunk);
        rw_stream_destroy(s, RW_EWRITEEND);
        return RW_EWRITEEND;
    }
    size_t n = chunk_size(objects, &chunk);
    if (!objects && n == 0) {
        rw_buf_unref(chunk.buf); /* nothing to write; Node would pass it, we need not */
        return s->wlen < s->whwm;
    }
    s->wlen += n;
    if ((s->flags & W_WRITING) || s->wq.count > 0) {
        int err = q_push(&s->wq, chunk);
        if (err != 0) {
            s->wlen -= n;
            drop_chunk(s, objects, chunk);
            rw_stream_destroy(s, err);
            return err;
        }
    } else {
        /* Node decides before _write runs; deciding after lets a write that
         * completed at once (a synchronous sink, a transform whose output
         * flowed on) say "go on" instead of forcing a drain round trip. */
        start_writes(s, chunk);
    }
    if (s->wlen < s->whwm)
        return 1;
    s->flags |= W_NEED_DRAIN;
    return 0;
}

void rw_writable_write_done(rw_stream_t *s, int err)
{
    if (!(s->flags & W_WRITING))
        return;
    s->flags &= ~W_WRITING;
    s->wlen -= s->wcur;
    s->wcur = 0;
    if (err != 0)
        rw_stream_destroy(s, err);
    if (s->flags & S_DESTROYED) {
        schedule(s, T_CLOSE); /* the write in flight was holding close back */
        return;
    }
    if (s->flags & W_SYNC)
        return; /* start_writes goes on */
    if (s->wq.count > 0)
        start_writes(s, q_shift(&s->wq));
    else
        writes_idle(s);
}

int rw_writable_end(rw_stream_t *s)
{
    if (!(s->flags & S_WRITABLE))
        return UV_EINVAL;
    if (s->flags & W_ENDING)
        return RW_EWRITEEND;
    if (s->flags & S_DESTROYED)
        return RW_EDESTROYED;
    s->flags |= W_ENDING;
    maybe_final(s);
    return 0;
}

/* Final runs deferred, as in Node: never inside the end() that allowed it. */
static void maybe_final(rw_stream_t *s)
{
    if ((s->flags & (W_ENDING | W_FINAL_CALLED | W_WRITING | S_DESTROYED)) == W_ENDING &&
        s->wq.count == 0)
        schedule(s, T_FINAL);
}

static void do_final(rw_stream_t *s)
{
    uint32_t f = s->flags;
    if ((f & (W_ENDING | W_FINAL_CALLED | W_WRITING | S_DESTROYED)) != W_ENDING || s->wq.count > 0)
        return;
    s->flags |= W_FINAL_CALLED;
    if (s->impl->final == NULL) {
        if (f & S_TRANSFORM)
            rw_readable_end(s);
        s->flags |= W_PREFINISHED;
        schedule(s, T_FINISH);
        return;
    }
    s->flags |= W_FINAL_PENDING;
    s->impl->final(s);
}

void rw_writable_final_done(rw_stream_t *s, int err)
{
    if (!(s->flags & W_FINAL_PENDING))
        return;
    s->flags &= ~W_FINAL_PENDING;
    if (err != 0)
        rw_stream_destroy(s, err);
    if (s->flags & S_DESTROYED) {
        schedule(s, T_CLOSE);
        return;
    }
    s->flags |= W_PREFINISHED;
    schedule(s, T_FINISH);
}

size_t rw_writable_length(const rw_stream_t *s)
{
    return s->wlen;
}

bool rw_writable_finished(const rw_stream_t *s)
{
    return s->flags & W_FINISHED;
}

/* ---- transform ---- */

void rw_transform_done(rw_stream_t *s, int err)
{
    if (err == 0 && !(s->flags & S_DESTROYED) && s->rlen >= s->rhwm) {
        /* Node's Transform: hold the callback until the readable side is read,
         * so the writable side fills up and says stop. */
        s->flags |= X_WAIT;
        return;
    }
    rw_writable_write_done(s, err);
}

void rw_transform_flush_done(rw_stream_t *s, int err)
{
    if (err == 0 && !(s->flags & S_DESTROYED))
        rw_readable_end(s);
    rw_writable_final_done(s, err);
}

/* ---- deferred events ---- */

static void emit_end(rw_stream_t *s)
{
    if ((s->flags & (R_ENDED | R_END_EMITTED | S_DESTROYED)) != R_ENDED || s->rq.count > 0)
        return;
    s->flags |= R_END_EMITTED;
    s->flags &= ~R_FLOWING;
    if (s->pipe_dst != NULL)
        rw_writable_end(s->pipe_dst);
    void (*on_end)(rw_stream_t *) = LISTENER(s, on_end);
    if (on_end != NULL)
        on_end(s);
    if (s->pipeline != NULL)
        rw__pipeline_report(s->pipeline, s);
    if (!(s->flags & S_DESTROYED) && half_done(s))
        rw_stream_destroy(s, 0); /* Node's autoDestroy */
}

static void emit_finish(rw_stream_t *s)
{
    if ((s->flags & (W_PREFINISHED | W_FINISHED | S_DESTROYED)) != W_PREFINISHED)
        return;
    s->flags |= W_FINISHED;
    void (*on_finish)(rw_stream_t *) = LISTENER(s, on_finish);
    if (on_finish != NULL)
        on_finish(s);
    if (s->pipeline != NULL)
        rw__pipeline_report(s->pipeline, s);
    if (!(s->flags & S_DESTROYED) && half_done(s))
        rw_stream_destroy(s, 0);
}

static void emit_drain(rw_stream_t *s)
{
    if (!(s->flags & W_NEED_DRAIN) || s->wlen > 0 || (s->flags & S_DESTROYED))
        return;
    s->flags &= ~W_NEED_DRAIN;
    rw_stream_t *src = s->pipe_src;
    if (src != NULL && (src->flags & R_AWAIT_DRAIN))
        rw_readable_resume(src);
    void (*on_drain)(rw_stream_t *) = LISTENER(s, on_drain);
    if (on_drain != NULL)
        on_drain(s);
}

static void emit_close(rw_stream_t *s)
{
    s->flags |= S_CLOSE_EMITTED;
    /* A plain pipe stops at a destination that went away; a pipeline (below)
     * does more. */
    if (s->pipeline == NULL) {
        if (s->pipe_src != NULL)
            rw_stream_unpipe(s->pipe_src);
        if (s->pipe_dst != NULL)
            rw_stream_unpipe(s);
    }
    void (*on_close)(rw_stream_t *) = LISTENER(s, on_close);
    if (on_close != NULL)
        on_close(s);
}

void rw__stream_process(rw_stream_t *s)
{
    unsigned what = s->pending;
    s->pending = 0;
    if (!(s->flags & S_DESTROYED)) {
        if (what & (T_FLOW | T_READ)) {
            if (s->flags & R_FLOWING)
                flow(s);
            else
                maybe_read(s);
        }
        if ((what & T_READABLE) && !(s->flags & (S_DESTROYED | R_FLOWING))) {
            s->flags &= ~R_NEED_READABLE;
            void (*on_readable)(rw_stream_t *) = LISTENER(s, on_readable);
            if (on_readable != NULL)
                on_readable(s);
        }
        if (what & T_END)
            emit_end(s);
        if (what & T_DRAIN)
            emit_drain(s);
        if (what & T_FINAL)
            do_final(s);
        if (what & T_FINISH)
            emit_finish(s);
    }
    if (!(s->flags & S_DESTROYED))
        return;
    if (s->flags & S_ERROR_PENDING) {
        s->flags &= ~S_ERROR_PENDING;
        void (*on_error)(rw_stream_t *, int) = LISTENER(s, on_error);
        if (on_error != NULL)
            on_error(s, s->err);
    }
    if (s->pipeline != NULL)
        rw__pipeline_report(s->pipeline, s);
    if (!(s->flags & S_CLOSE_EMITTED) && s->refs == 0 &&
        !(s->flags & (W_WRITING | W_FINAL_PENDING)))
        emit_close(s);
    if ((s->flags & (S_CLOSE_EMITTED | S_CLOSING | S_CLOSE_DONE | S_QUEUED)) ==
        (S_CLOSE_EMITTED | S_CLOSING)) {
        s->flags |= S_CLOSE_DONE;
        rw__sched_live(s->sched, -1);
        if (s->impl->close != NULL)
            s->impl->close(s);
        if (s->close_cb != NULL)
            s->close_cb(s); /* last: s may be freed by it */
    }
}
