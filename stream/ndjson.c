/* NDJSON: a framer (bytes -> one object per line, bounded line length) and a
 * serializer (objects -> lines). JSON itself is the codec's business. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int line_decode(void *ctx, const char *line, size_t len, void **obj)
{
    rw_ndjson_line_t *l = malloc(sizeof(*l) + len + 1);
    if (l == NULL)
        return UV_ENOMEM;
    l->len = len;
    memcpy(l->data, line, len);
    l->data[len] = 0;
    *obj = l;
    return 0;
}

static void line_free(void *ctx, void *obj)
{
    free(obj);
}

static void codec_defaults(rw_ndjson_codec_t *dst, const rw_ndjson_codec_t *src)
{
    memset(dst, 0, sizeof(*dst));
    if (src != NULL)
        *dst = *src;
    if (dst->decode == NULL)
        dst->decode = line_decode;
    if (dst->free_obj == NULL)
        dst->free_obj = line_free;
}

/* ---- framer ---- */

/* Hands one complete line (without "\n") to the codec and pushes the object. */
static int framer_line(rw_ndjson_framer_t *f, const char *p, size_t n)
{
    if (n > 0 && p[n - 1] == '\r')
        n--;
    if (n == 0)
        return 0; /* blank lines separate nothing */
    if (n > f->max_line)
        return RW_ELINE;
    void *obj = NULL;
    int err = f->codec.decode(f->codec.ctx, p, n, &obj);
    if (err != 0)
        return err < 0 ? err : RW_EPARSE;
    rw_readable_push(&f->stream, rw_chunk_obj(obj));
    return 0;
}

/* Appends to the partial line (only lines split across chunks get here). A
 * "\r" may follow max_line bytes, hence max_line + 1. */
static int framer_keep(rw_ndjson_framer_t *f, const char *p, size_t n)
{
    if (n > f->max_line + 1 - f->line_len)
        return RW_ELINE;
    size_t need = f->line_len + n;
    if (need > f->line_cap) {
        size_t cap = f->line_cap ? f->line_cap : 256;
        while (cap < need)
            cap *= 2;
        if (cap > f->max_line + 1)
            cap = f->max_line + 1;
        char *l = realloc(f->line, cap);
        if (l == NULL)
            return UV_ENOMEM;
        f->line = l;
        f->line_cap = cap;
    }
    memcpy(f->line + f->line_len, p, n);
    f->line_len += n;
    return 0;
}

static int framer_feed(rw_ndjson_framer_t *f, const char *p, size_t n)
{
    while (n > 0 && !rw_stream_destroyed(&f->stream)) {
        const char *nl = memchr(p, '\n', n);
        if (nl == NULL)
            return framer_keep(f, p, n);
        size_t k = (size_t)(nl - p);
        int err;
        if (f->line_len > 0) {
            err = framer_keep(f, p, k);
            if (err == 0)
                err = framer_line(f, f->line, f->line_len);
            f->line_len = 0;
        } else {
            err = framer_line(f, p, k); /* whole line inside the chunk: no copy */
        }
        if (err != 0)
            return err;
        p += k + 1;
        n -= k + 1;
    }
    return 0;
}

static void framer_write(rw_stream_t *s, rw_chunk_t c)
{
    rw_ndjson_framer_t *f = rw__container_of(s, rw_ndjson_framer_t, stream);
    int err = framer_feed(f, c.base, c.len);
    rw_chunk_release(&c);
    rw_transform_done(s, err);
}

static void framer_flush(rw_stream_t *s)
{
    rw_ndjson_framer_t *f = rw__container_of(s, rw_ndjson_framer_t, stream);
    int err = 0;
    if (f->line_len > 0) {
        /* The last line needs no newline. */
        err = framer_line(f, f->line, f->line_len);
        f->line_len = 0;
    }
    rw_transform_flush_done(s, err);
}

static void framer_destroy(rw_stream_t *s, int err)
{
    rw_ndjson_framer_t *f = rw__container_of(s, rw_ndjson_framer_t, stream);
    free(f->line);
    f->line = NULL;
    f->line_len = f->line_cap = 0;
}

static void framer_free_obj(rw_stream_t *s, void *obj)
{
    rw_ndjson_framer_t *f = rw__container_of(s, rw_ndjson_framer_t, stream);
    f->codec.free_obj(f->codec.ctx, obj);
}

static const rw_stream_impl_t framer_impl = {.write = framer_write,
                                             .final = framer_flush,
                                             .destroy = framer_destroy,
                                             .free_obj = framer_free_obj};

int rw_ndjson_framer_init(uv_loop_t *loop, rw_ndjson_framer_t *f, size_t max_line,
                          const rw_ndjson_codec_t *codec, const rw_stream_opts_t *opts)
{
    rw_stream_opts_t o = {0};
    if (opts != NULL)
        o = *opts;
    o.readable_objects = true;
    o.writable_objects = false;
    if (max_line == SIZE_MAX)
        return UV_EINVAL;
    int err = rw_transform_init(loop, &f->stream, &framer_impl, &o);
    if (err != 0)
        return err;
    codec_defaults(&f->codec, codec);
    f->line = NULL;
    f->line_len = f->line_cap = 0;
    f->max_line = max_line ? max_line : 1024 * 1024;
    return 0;
}

/* ---- serializer ---- */

static void ser_write(rw_stream_t *s, rw_chunk_t c)
{
    rw_ndjson_serializer_t *z = rw__container_of(s, rw_ndjson_serializer_t, stream);
    int err = 0;
    if (z->codec.encode == NULL) {
        /* rw_ndjson_line_t: line and newline in one buffer, one push. */
        rw_ndjson_line_t *l = c.obj;
        rw_buf_t *b = rw_buf_new(l->len + 1);
        if (b == NULL) {
            err = UV_ENOMEM;
        } else {
            memcpy(b->base, l->data, l->len);
            b->base[l->len] = '\n';
            rw_readable_push(s, rw_chunk_of(b, 0, l->len + 1));
            rw_buf_unref(b);
        }
    } else {
        rw_chunk_t line = {0};
        err = z->codec.encode(z->codec.ctx, c.obj, &line);
        if (err == 0) {
            rw_readable_push(s, line);
            rw_readable_push(s, rw_chunk_static("\n", 1));
        }
    }
    z->codec.free_obj(z->codec.ctx, c.obj);
    rw_transform_done(s, err);
}

static void ser_free_obj(rw_stream_t *s, void *obj)
{
    rw_ndjson_serializer_t *z = rw__container_of(s, rw_ndjson_serializer_t, stream);
    z->codec.free_obj(z->codec.ctx, obj);
}

static const rw_stream_impl_t ser_impl = {.write = ser_write, .free_obj = ser_free_obj};

int rw_ndjson_serializer_init(uv_loop_t *loop, rw_ndjson_serializer_t *z,
                              const rw_ndjson_codec_t *codec, const rw_stream_opts_t *opts)
{
    rw_stream_opts_t o = {0};
    if (opts != NULL)
        o = *opts;
    o.readable_objects = false;
    o.writable_objects = true;
    int err = rw_transform_init(loop, &z->stream, &ser_impl, &o);
    if (err != 0)
        return err;
    codec_defaults(&z->codec, codec);
    return 0;
}
