/* libuv stream handles (TCP, pipes, TTYs) as a readable and a writable: one
 * read becomes one chunk without copying; one chunk becomes one uv_write. */
#include "internal.h"

/* ---- readable ---- */

static void on_uv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    rw_uv_readable_t *r = h->data;
    rw_buf_t *b = rw_buf_new(r->chunk_size);
    /* On failure libuv reports UV_ENOBUFS to on_uv_read. */
    *out = b != NULL ? uv_buf_init(b->base, (unsigned)b->cap) : uv_buf_init(NULL, 0);
}

static void uvr_stop(rw_uv_readable_t *r)
{
    if (r->reading) {
        uv_read_stop(r->handle);
        r->reading = false;
    }
}

static void on_uv_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    rw_uv_readable_t *r = h->data;
    rw_stream_t *s = &r->stream;
    rw_buf_t *b = buf->base != NULL ? rw_buf_from_base(buf->base) : NULL;
    if (nread > 0) {
        rw_chunk_t c = rw_chunk_of(b, 0, (size_t)nread);
        rw_buf_unref(b);
        if (!rw_readable_push(s, c))
            uvr_stop(r); /* read() starts again once the consumer has room */
        return;
    }
    rw_buf_unref(b);
    if (nread == 0)
        return; /* EAGAIN: nothing this time */
    uvr_stop(r);
    if (nread == UV_EOF)
        rw_readable_end(s);
    else
        rw_stream_destroy(s, (int)nread);
}

static void uvr_read(rw_stream_t *s, size_t size)
{
    rw_uv_readable_t *r = rw__container_of(s, rw_uv_readable_t, stream);
    if (r->reading)
        return;
    r->handle->data = r;
    int err = uv_read_start(r->handle, on_uv_alloc, on_uv_read);
    if (err != 0) {
        rw_stream_destroy(s, err);
        return;
    }
    r->reading = true;
}

static void uvr_destroy(rw_stream_t *s, int err)
{
    rw_uv_readable_t *r = rw__container_of(s, rw_uv_readable_t, stream);
    if (!uv_is_closing((uv_handle_t *)r->handle))
        uvr_stop(r);
    r->reading = false;
}

static const rw_stream_impl_t uvr_impl = {.read = uvr_read, .destroy = uvr_destroy};

int rw_uv_readable_init(uv_loop_t *loop, rw_uv_readable_t *r, uv_stream_t *handle,
                        size_t chunk_size, const rw_stream_opts_t *opts)
{
    if (handle == NULL || chunk_size > UINT32_MAX)
        return UV_EINVAL;
    rw_stream_opts_t o = rw__bytes_opts(opts);
    int err = rw_readable_init(loop, &r->stream, &uvr_impl, &o);
    if (err != 0)
        return err;
    r->handle = handle;
    r->chunk_size = chunk_size ? chunk_size : 64 * 1024;
    r->reading = false;
    return 0;
}

/* ---- writable ---- */

static void on_uv_write(uv_write_t *req, int status)
{
    rw_uv_writable_t *w = req->data;
    rw_chunk_release(&w->inflight);
    rw_writable_write_done(&w->stream, status);
}

static void uvw_write(rw_stream_t *s, rw_chunk_t c)
{
    rw_uv_writable_t *w = rw__container_of(s, rw_uv_writable_t, stream);
    if (c.len > UINT32_MAX) {
        rw_chunk_release(&c);
        rw_writable_write_done(s, UV_EINVAL);
        return;
    }
    w->inflight = c;
    w->write_req.data = w;
    uv_buf_t b = uv_buf_init(c.base, (unsigned)c.len);
    int err = uv_write(&w->write_req, w->handle, &b, 1, on_uv_write);
    if (err != 0) {
        rw_chunk_release(&w->inflight);
        rw_writable_write_done(s, err);
    }
}

static void on_uv_shutdown(uv_shutdown_t *req, int status)
{
    rw_uv_writable_t *w = req->data;
    rw_writable_final_done(&w->stream, status);
}

static void uvw_final(rw_stream_t *s)
{
    rw_uv_writable_t *w = rw__container_of(s, rw_uv_writable_t, stream);
    if (w->no_shutdown) {
        rw_writable_final_done(s, 0);
        return;
    }
    w->shutdown_req.data = w;
    int err = uv_shutdown(&w->shutdown_req, w->handle, on_uv_shutdown);
    if (err != 0)
        rw_writable_final_done(s, err);
}

static const rw_stream_impl_t uvw_impl = {.write = uvw_write, .final = uvw_final};

int rw_uv_writable_init(uv_loop_t *loop, rw_uv_writable_t *w, uv_stream_t *handle, bool no_shutdown,
                        const rw_stream_opts_t *opts)
{
    if (handle == NULL)
        return UV_EINVAL;
    rw_stream_opts_t o = rw__bytes_opts(opts);
    int err = rw_writable_init(loop, &w->stream, &uvw_impl, &o);
    if (err != 0)
        return err;
    w->handle = handle;
    w->no_shutdown = no_shutdown;
    w->inflight.base = NULL;
    w->inflight.len = 0;
    w->inflight.buf = NULL;
    return 0;
}
