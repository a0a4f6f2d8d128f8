/* Reference-counted buffers and the chunks (slices) that travel through
 * streams: the only place bytes are allocated for the core. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

rw_buf_t *rw_buf_new(size_t cap)
{
    if (cap > SIZE_MAX - sizeof(rw_buf_t))
        return NULL;
    rw_buf_t *buf = malloc(sizeof(*buf) + cap);
    if (buf == NULL)
        return NULL;
    /* The bytes follow the header, so rw_buf_from_base is pointer arithmetic. */
    buf->base = (char *)(buf + 1);
    buf->cap = cap;
    buf->data = NULL;
    buf->refs = 1;
    buf->free_cb = NULL;
    return buf;
}

void rw_buf_init_external(rw_buf_t *buf, char *base, size_t cap, rw_buf_free_cb free_cb)
{
    buf->base = base;
    buf->cap = cap;
    buf->refs = 1;
    buf->free_cb = free_cb;
}

rw_buf_t *rw_buf_ref(rw_buf_t *buf)
{
    buf->refs++;
    return buf;
}

void rw_buf_unref(rw_buf_t *buf)
{
    if (buf == NULL || --buf->refs > 0)
        return;
    if (buf->free_cb != NULL)
        buf->free_cb(buf);
    else
        free(buf);
}

rw_buf_t *rw_buf_from_base(char *base)
{
    return (rw_buf_t *)base - 1;
}

rw_chunk_t rw_chunk_of(rw_buf_t *buf, size_t off, size_t len)
{
    rw_chunk_t c = {.base = buf->base + off, .len = len, .buf = rw_buf_ref(buf)};
    return c;
}

rw_chunk_t rw_chunk_static(const void *base, size_t len)
{
    /* The cast drops const: chunks never write through base. */
    rw_chunk_t c = {.base = (char *)base, .len = len, .buf = NULL};
    return c;
}

rw_chunk_t rw_chunk_obj(void *obj)
{
    rw_chunk_t c = {.obj = obj, .len = 0, .buf = NULL};
    return c;
}

rw_chunk_t rw_chunk_slice(const rw_chunk_t *c, size_t off, size_t len)
{
    rw_chunk_t s = {.base = c->base + off, .len = len, .buf = c->buf};
    if (s.buf != NULL)
        rw_buf_ref(s.buf);
    return s;
}

int rw_chunk_copy(rw_chunk_t *out, const void *p, size_t len)
{
    rw_buf_t *buf = rw_buf_new(len);
    if (buf == NULL)
        return UV_ENOMEM;
    if (len > 0)
        memcpy(buf->base, p, len);
    out->base = buf->base;
    out->len = len;
    out->buf = buf; /* the new buffer's only reference moves to the chunk */
    return 0;
}

void rw_chunk_release(rw_chunk_t *c)
{
    rw_buf_unref(c->buf);
    c->buf = NULL;
    c->base = NULL;
    c->len = 0;
}
