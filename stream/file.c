/* Files as streams: a readable over a byte range and a writable that fsyncs
 * before finish. All I/O is uv_fs_* on the threadpool; the loop never blocks. */
#include "internal.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

/* ---- readable ---- */

static void fr_start(rw_file_readable_t *f);

static void on_fr_closed(uv_fs_t *req)
{
    rw_file_readable_t *f = req->data;
    uv_fs_req_cleanup(req);
    rw_stream_unref(&f->stream);
}

/* Closes an fd we own; the request slot is free when this is called. */
static void fr_close_fd(rw_file_readable_t *f)
{
    if (!f->own_fd || f->fd < 0)
        return;
    uv_file fd = f->fd;
    f->fd = -1;
    rw_stream_ref(&f->stream);
    if (uv_fs_close(rw_stream_loop(&f->stream), &f->req, fd, on_fr_closed) != 0)
        rw_stream_unref(&f->stream);
}

static void on_fr_open(uv_fs_t *req)
{
    rw_file_readable_t *f = req->data;
    ssize_t r = req->result;
    uv_fs_req_cleanup(req);
    f->busy = false;
    if (r >= 0)
        f->fd = (uv_file)r;
    if (rw_stream_destroyed(&f->stream))
        fr_close_fd(f);
    else if (r < 0)
        rw_stream_destroy(&f->stream, (int)r);
    else if (f->want)
        fr_start(f);
    rw_stream_unref(&f->stream);
}

static void on_fr_read(uv_fs_t *req)
{
    rw_file_readable_t *f = req->data;
    rw_stream_t *s = &f->stream;
    ssize_t r = req->result;
    rw_buf_t *buf = f->inbuf;
    f->inbuf = NULL;
    f->busy = false;
    uv_fs_req_cleanup(req);
    if (rw_stream_destroyed(s)) {
        rw_buf_unref(buf);
        fr_close_fd(f);
    } else if (r < 0) {
        rw_buf_unref(buf);
        rw_stream_destroy(s, (int)r);
    } else if (r == 0) {
        rw_buf_unref(buf);
        f->eof = true;
        if (f->end >= 0 && f->pos < f->end)
            rw_stream_destroy(s, RW_ETRUNC); /* the file is shorter than the range */
        else
            rw_readable_end(s);
    } else {
        f->pos += r;
        rw_chunk_t c = rw_chunk_of(buf, 0, (size_t)r);
        rw_buf_unref(buf);
        /* Read ahead before handing the chunk on, so the disk works while the
         * consumer does; only when asked, which bounds us to HWM + one chunk. */
        bool at_end = f->end >= 0 && f->pos >= f->end;
        if (f->want && !at_end)
            fr_start(f);
        f->want = false;
        rw_readable_push(s, c);
        if (at_end && !rw_stream_destroyed(s)) {
            f->eof = true;
            rw_readable_end(s);
        }
    }
    rw_stream_unref(s);
}

static void fr_start(rw_file_readable_t *f)
{
    rw_stream_t *s = &f->stream;
    if (f->busy || f->eof || rw_stream_destroyed(s))
        return;
    uv_loop_t *loop = rw_stream_loop(s);
    int err;
    f->req.data = f;
    if (f->fd < 0) {
        err = uv_fs_open(loop, &f->req, f->path, UV_FS_O_RDONLY, 0, on_fr_open);
    } else {
        size_t n = f->chunk_size;
        if (f->end >= 0 && (uint64_t)(f->end - f->pos) < n)
            n = (size_t)(f->end - f->pos);
        if (n == 0) {
            f->eof = true;
            rw_readable_end(s);
            return;
        }
        f->inbuf = rw_buf_new(n);
        if (f->inbuf == NULL) {
            rw_stream_destroy(s, UV_ENOMEM);
            return;
        }
        uv_buf_t iov = uv_buf_init(f->inbuf->base, (unsigned)n);
        err = uv_fs_read(loop, &f->req, f->fd, &iov, 1, f->pos, on_fr_read);
    }
    if (err != 0) {
        rw_buf_unref(f->inbuf);
        f->inbuf = NULL;
        rw_stream_destroy(s, err);
        return;
    }
    f->busy = true;
    rw_stream_ref(s);
}

static void fr_read(rw_stream_t *s, size_t size)
{
    rw_file_readable_t *f = rw__container_of(s, rw_file_readable_t, stream);
    f->want = true;
    fr_start(f);
}

static void fr_destroy(rw_stream_t *s, int err)
{
    rw_file_readable_t *f = rw__container_of(s, rw_file_readable_t, stream);
    if (f->busy)
        uv_cancel((uv_req_t *)&f->req); /* best effort; its callback closes the fd */
    else
        fr_close_fd(f);
}

static void fr_close(rw_stream_t *s)
{
    rw_file_readable_t *f = rw__container_of(s, rw_file_readable_t, stream);
    free(f->path);
    f->path = NULL;
}

static const rw_stream_impl_t fr_impl = {.read = fr_read, .destroy = fr_destroy, .close = fr_close};

static int fr_init(uv_loop_t *loop, rw_file_readable_t *f, const char *path, uv_file fd,
                   int64_t offset, int64_t length, size_t chunk_size, const rw_stream_opts_t *opts)
{
    if (offset < 0 || length < -1 || (length >= 0 && offset > INT64_MAX - length) ||
        chunk_size > UINT32_MAX)
        return UV_EINVAL;
    char *p = NULL;
    if (path != NULL && (p = strdup(path)) == NULL)
        return UV_ENOMEM;
    rw_stream_opts_t o = rw__bytes_opts(opts);
    int err = rw_readable_init(loop, &f->stream, &fr_impl, &o);
    if (err != 0) {
        free(p);
        return err;
    }
    f->inbuf = NULL;
    f->path = p;
    f->fd = fd;
    f->own_fd = path != NULL;
    f->busy = f->eof = f->want = false;
    f->pos = offset;
    f->end = length < 0 ? -1 : offset + length;
    f->chunk_size = chunk_size ? chunk_size : 64 * 1024;
    return 0;
}

int rw_file_readable_open(uv_loop_t *loop, rw_file_readable_t *f, const char *path, int64_t offset,
                          int64_t length, size_t chunk_size, const rw_stream_opts_t *opts)
{
    if (path == NULL)
        return UV_EINVAL;
    return fr_init(loop, f, path, -1, offset, length, chunk_size, opts);
}

int rw_file_readable_init(uv_loop_t *loop, rw_file_readable_t *f, uv_file fd, int64_t offset,
                          int64_t length, size_t chunk_size, const rw_stream_opts_t *opts)
{
    if (fd < 0)
        return UV_EINVAL;
    return fr_init(loop, f, NULL, fd, offset, length, chunk_size, opts);
}

/* ---- writable ---- */

enum { FW_IDLE, FW_OPEN_WRITE, FW_OPEN_FINAL, FW_WRITE, FW_FSYNC, FW_CLOSE };

static void on_fw(uv_fs_t *req);

static int fw_submit(rw_file_writable_t *f, int step)
{
    uv_loop_t *loop = rw_stream_loop(&f->stream);
    int err;
    f->req.data = f;
    switch (step) {
    case FW_OPEN_WRITE:
    case FW_OPEN_FINAL:
        err = uv_fs_open(loop, &f->req, f->path, f->flags, f->mode, on_fw);
        break;
    case FW_WRITE: {
        uv_buf_t iov = uv_buf_init(f->cur.base + f->cur_off, (unsigned)(f->cur.len - f->cur_off));
        err = uv_fs_write(loop, &f->req, f->fd, &iov, 1, f->pos, on_fw);
        break;
    }
    case FW_FSYNC:
        err = uv_fs_fsync(loop, &f->req, f->fd, on_fw);
        break;
    default: {
        uv_file fd = f->fd;
        f->fd = -1;
        err = uv_fs_close(loop, &f->req, fd, on_fw);
        break;
    }
    }
    if (err == 0) {
        f->step = step;
        f->busy = true;
        rw_stream_ref(&f->stream);
    }
    return err;
}

/* Fails the operation the core is waiting for (a write or final). */
static void fw_fail(rw_file_writable_t *f, int step, int err)
{
    if (step == FW_OPEN_WRITE || step == FW_WRITE) {
        rw_chunk_release(&f->cur);
        rw_writable_write_done(&f->stream, err);
    } else {
        rw_writable_final_done(&f->stream, err);
    }
}

static void on_fw(uv_fs_t *req)
{
    rw_file_writable_t *f = req->data;
    rw_stream_t *s = &f->stream;
    ssize_t r = req->result;
    int step = f->step;
    uv_fs_req_cleanup(req);
    f->busy = false;
    f->step = FW_IDLE;
    if (step == FW_OPEN_WRITE || step == FW_OPEN_FINAL) {
        if (r >= 0)
            f->fd = (uv_file)r;
    }
    int err = 0;
    if (step == FW_CLOSE) {
        /* nothing: the fd is gone */
    } else if (r < 0) {
        fw_fail(f, step, (int)r);
    } else if (rw_stream_destroyed(s)) {
        fw_fail(f, step, RW_EDESTROYED); /* completes what the core waits for */
    } else if (step == FW_OPEN_WRITE) {
        if ((err = fw_submit(f, FW_WRITE)) != 0)
            fw_fail(f, FW_WRITE, err);
    } else if (step == FW_WRITE) {
        f->pos += r;
        f->cur_off += (size_t)r;
        if (f->cur_off < f->cur.len) { /* a short write: go on */
            if ((err = fw_submit(f, FW_WRITE)) != 0)
                fw_fail(f, FW_WRITE, err);
        } else {
            rw_chunk_release(&f->cur);
            rw_writable_write_done(s, 0);
        }
    } else if (step == FW_OPEN_FINAL) {
        if ((err = fw_submit(f, FW_FSYNC)) != 0)
            fw_fail(f, FW_FSYNC, err);
    } else { /* FW_FSYNC: the data is on disk; now finish may be emitted */
        rw_writable_final_done(s, 0);
    }
    if (!f->busy && rw_stream_destroyed(s) && f->own_fd && f->fd >= 0)
        fw_submit(f, FW_CLOSE);
    rw_stream_unref(s);
}

static void fw_write(rw_stream_t *s, rw_chunk_t c)
{
    rw_file_writable_t *f = rw__container_of(s, rw_file_writable_t, stream);
    if (c.len > UINT32_MAX) {
        rw_chunk_release(&c);
        rw_writable_write_done(s, UV_EINVAL);
        return;
    }
    f->cur = c;
    f->cur_off = 0;
    int step = f->fd < 0 ? FW_OPEN_WRITE : FW_WRITE;
    int err = fw_submit(f, step);
    if (err != 0)
        fw_fail(f, step, err);
}

static void fw_final(rw_stream_t *s)
{
    rw_file_writable_t *f = rw__container_of(s, rw_file_writable_t, stream);
    int step = f->fd < 0 ? FW_OPEN_FINAL : FW_FSYNC;
    int err = fw_submit(f, step);
    if (err != 0)
        fw_fail(f, step, err);
}

static void fw_destroy(rw_stream_t *s, int err)
{
    rw_file_writable_t *f = rw__container_of(s, rw_file_writable_t, stream);
    if (!f->busy && f->own_fd && f->fd >= 0)
        fw_submit(f, FW_CLOSE);
    /* busy: on_fw closes the fd when the operation in flight completes */
}

static void fw_close(rw_stream_t *s)
{
    rw_file_writable_t *f = rw__container_of(s, rw_file_writable_t, stream);
    free(f->path);
    f->path = NULL;
}

static const rw_stream_impl_t fw_impl = {
    .write = fw_write, .final = fw_final, .destroy = fw_destroy, .close = fw_close};

static int fw_init(uv_loop_t *loop, rw_file_writable_t *f, const char *path, int flags, int mode,
                   uv_file fd, int64_t offset, const rw_stream_opts_t *opts)
{
    if (offset < 0)
        return UV_EINVAL;
    char *p = NULL;
    if (path != NULL && (p = strdup(path)) == NULL)
        return UV_ENOMEM;
    rw_stream_opts_t o = rw__bytes_opts(opts);
    int err = rw_writable_init(loop, &f->stream, &fw_impl, &o);
    if (err != 0) {
        free(p);
        return err;
    }
    memset(&f->cur, 0, sizeof(f->cur));
    f->cur_off = 0;
    f->path = p;
    f->flags = flags;
    f->mode = mode;
    f->fd = fd;
    f->own_fd = path != NULL;
    f->busy = false;
    f->pos = offset;
    f->step = FW_IDLE;
    return 0;
}

int rw_file_writable_open(uv_loop_t *loop, rw_file_writable_t *f, const char *path, int flags,
                          int mode, const rw_stream_opts_t *opts)
{
    if (path == NULL)
        return UV_EINVAL;
    return fw_init(loop, f, path, flags, mode, -1, 0, opts);
}

int rw_file_writable_init(uv_loop_t *loop, rw_file_writable_t *f, uv_file fd, int64_t offset,
                          const rw_stream_opts_t *opts)
{
    if (fd < 0)
        return UV_EINVAL;
    return fw_init(loop, f, NULL, 0, 0, fd, offset, opts);
}
