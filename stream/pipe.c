/* pipe (Node's readable.pipe) and pipeline (Node's stream.pipeline): data
 * flows through stages with backpressure; pipelines also tear down. */
#include "internal.h"

#include <stdarg.h>

int rw_stream_pipe(rw_stream_t *src, rw_stream_t *dst)
{
    if (src == dst || !(src->flags & S_READABLE) || !(dst->flags & S_WRITABLE) ||
        ((src->flags & S_DESTROYED) || (dst->flags & S_DESTROYED)) ||
        !(src->flags & R_OBJ) != !(dst->flags & W_OBJ) || src->sched != dst->sched)
        return UV_EINVAL;
    if (src->pipe_dst != NULL || dst->pipe_src != NULL)
        return UV_EBUSY;
    src->pipe_dst = dst;
    dst->pipe_src = src;
    rw_readable_resume(src);
    return 0;
}

void rw_stream_unpipe(rw_stream_t *src)
{
    rw_stream_t *dst = src->pipe_dst;
    if (dst == NULL)
        return;
    src->pipe_dst = NULL;
    dst->pipe_src = NULL;
    src->flags &= ~(R_FLOWING | R_AWAIT_DRAIN);
}

/* Stage i of n has completed its part of the pipeline. */
static bool stage_complete(const rw_stream_t *s, unsigned i, unsigned n)
{
    if (i + 1 < n && !(s->flags & R_END_EMITTED))
        return false;
    if (i > 0 && !(s->flags & W_FINISHED))
        return false;
    return true;
}

static void pipeline_over(rw_pipeline_t *p, int err)
{
    /* Detach first: destroying the stages below must not report back, and
     * after done nothing may touch p. */
    rw_stream_t *s = p->first;
    for (unsigned i = 0; i < p->stages; i++, s = s->pipe_dst)
        s->pipeline = NULL;
    if (err != 0) {
        s = p->first;
        for (unsigned i = 0; i < p->stages; i++, s = s->pipe_dst)
            rw_stream_destroy(s, err);
    }
    p->done(p, err);
}

void rw__pipeline_report(rw_pipeline_t *p, rw_stream_t *stage)
{
    int err = 0;
    bool all = true;
    rw_stream_t *s = p->first;
    for (unsigned i = 0; i < p->stages; i++, s = s->pipe_dst) {
        bool complete = stage_complete(s, i, p->stages);
        all = all && complete;
        if (err == 0 && (s->flags & S_DESTROYED) && (s->err != 0 || !complete))
            err = s->err ? s->err : RW_EPREMATURE;
    }
    /* The reporting stage's own error wins: it is the one that happened first. */
    if ((stage->flags & S_DESTROYED) && stage->err != 0)
        err = stage->err;
    if (err != 0 || all)
        pipeline_over(p, err);
}

int rw_pipeline_start(rw_pipeline_t *p, rw_stream_t *const *stages, size_t n, rw_pipeline_cb done)
{
    if (p == NULL || stages == NULL || n < 2 || n > 1024 || done == NULL)
        return UV_EINVAL;
    for (size_t i = 0; i < n; i++) {
        rw_stream_t *s = stages[i];
        if (s == NULL || (s->flags & S_DESTROYED) || s->pipeline != NULL)
            return UV_EINVAL;
        if (i + 1 < n) {
            rw_stream_t *d = stages[i + 1];
            if (d == NULL || !(s->flags & S_READABLE) || !(d->flags & S_WRITABLE) ||
                !(s->flags & R_OBJ) != !(d->flags & W_OBJ) || s->sched != d->sched)
                return UV_EINVAL;
            if (s->pipe_dst != NULL || d->pipe_src != NULL)
                return UV_EBUSY;
        }
    }
    p->done = done;
    p->first = stages[0];
    p->stages = (unsigned)n;
    for (size_t i = 0; i < n; i++)
        stages[i]->pipeline = p;
    for (size_t i = 0; i + 1 < n; i++)
        rw_stream_pipe(stages[i], stages[i + 1]); /* validated above: cannot fail */
    return 0;
}

int rw_pipeline(rw_pipeline_t *p, rw_pipeline_cb done, rw_stream_t *first, ...)
{
    rw_stream_t *stages[32];
    size_t n = 0;
    va_list ap;
    va_start(ap, first);
    for (rw_stream_t *s = first; s != NULL; s = va_arg(ap, rw_stream_t *)) {
        if (n == 32) {
            va_end(ap);
            return UV_EINVAL;
        }
        stages[n++] = s;
    }
    va_end(ap);
    return rw_pipeline_start(p, stages, n, done);
}
