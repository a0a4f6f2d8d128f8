/* HTTP/1.1 chunked transfer coding (RFC 9112 section 7.1): an encoder that
 * frames chunks without copying them and a strict, incremental decoder. */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- encoder ---- */

/* Size lines are carved from 4 KiB arenas, so framing a chunk costs no
 * allocation most of the time; an arena is freed with its last slice. */
#define ARENA_SIZE 4096
#define SIZE_LINE_MAX 20 /* 16 hex digits + CRLF, rounded */

static void enc_write(rw_stream_t *s, rw_chunk_t c)
{
    rw_chunked_encoder_t *e = rw__container_of(s, rw_chunked_encoder_t, stream);
    if (c.len == 0) {
        rw_chunk_release(&c); /* "0\r\n" would end the body */
        rw_transform_done(s, 0);
        return;
    }
    if (e->arena == NULL || e->arena_used + SIZE_LINE_MAX > e->arena->cap) {
        rw_buf_unref(e->arena);
        e->arena_used = 0;
        e->arena = rw_buf_new(ARENA_SIZE);
        if (e->arena == NULL) {
            rw_chunk_release(&c);
            rw_transform_done(s, UV_ENOMEM);
            return;
        }
    }
    int n = snprintf(e->arena->base + e->arena_used, SIZE_LINE_MAX, "%zx\r\n", c.len);
    rw_readable_push(s, rw_chunk_of(e->arena, e->arena_used, (size_t)n));
    e->arena_used += (size_t)n;
    rw_readable_push(s, c);
    rw_readable_push(s, rw_chunk_static("\r\n", 2));
    rw_transform_done(s, 0);
}

static void enc_flush(rw_stream_t *s)
{
    rw_chunked_encoder_t *e = rw__container_of(s, rw_chunked_encoder_t, stream);
    if (e->trailers_len == 0) {
        rw_readable_push(s, rw_chunk_static("0\r\n\r\n", 5));
        rw_transform_flush_done(s, 0);
        return;
    }
    rw_buf_t *b = rw_buf_new(3 + e->trailers_len + 2);
    if (b == NULL) {
        rw_transform_flush_done(s, UV_ENOMEM);
        return;
    }
    memcpy(b->base, "0\r\n", 3);
    memcpy(b->base + 3, e->trailers, e->trailers_len);
    memcpy(b->base + 3 + e->trailers_len, "\r\n", 2);
    rw_readable_push(s, rw_chunk_of(b, 0, b->cap));
    rw_buf_unref(b);
    rw_transform_flush_done(s, 0);
}

static void enc_destroy(rw_stream_t *s, int err)
{
    rw_chunked_encoder_t *e = rw__container_of(s, rw_chunked_encoder_t, stream);
    rw_buf_unref(e->arena);
    e->arena = NULL;
    free(e->trailers);
    e->trailers = NULL;
    e->trailers_len = 0;
}

static const rw_stream_impl_t enc_impl = {
    .write = enc_write, .final = enc_flush, .destroy = enc_destroy};

int rw_chunked_encoder_init(uv_loop_t *loop, rw_chunked_encoder_t *e, const rw_stream_opts_t *opts)
{
    rw_stream_opts_t o = rw__bytes_opts(opts);
    int err = rw_transform_init(loop, &e->stream, &enc_impl, &o);
    if (err == 0) {
        e->arena = NULL;
        e->arena_used = 0;
        e->trailers = NULL;
        e->trailers_len = 0;
    }
    return err;
}

/* RFC 9110 tchar: what a field name may contain. */
static bool is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int rw_chunked_encoder_trailer(rw_chunked_encoder_t *e, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    if (rw_stream_destroyed(&e->stream))
        return RW_EDESTROYED;
    if (nl == 0)
        return UV_EINVAL;
    for (size_t i = 0; i < nl; i++)
        if (!is_tchar((unsigned char)name[i]))
            return UV_EINVAL;
    for (size_t i = 0; i < vl; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c == '\r' || c == '\n' || (c < 0x20 && c != '\t') || c == 0x7f)
            return UV_EINVAL;
    }
    size_t add = nl + 2 + vl + 2;
    char *t = realloc(e->trailers, e->trailers_len + add);
    if (t == NULL)
        return UV_ENOMEM;
    char *p = t + e->trailers_len;
    memcpy(p, name, nl);
    memcpy(p + nl, ": ", 2);
    memcpy(p + nl + 2, value, vl);
    memcpy(p + nl + 2 + vl, "\r\n", 2);
    e->trailers = t;
    e->trailers_len += add;
    return 0;
}

/* ---- decoder ---- */

enum {
    D_SIZE,    /* hex digits of a chunk size */
    D_EXT,     /* after the size: whitespace / chunk extensions up to CR */
    D_SIZE_LF, /* CR seen at the end of the size line */
    D_DATA,    /* chunk data */
    D_DATA_CR, /* CRLF after the data */
    D_DATA_LF,
    D_TRAILER,    /* start of a trailer line (or of the final empty line) */
    D_TRAILER_IN, /* inside a trailer line */
    D_TRAILER_LF,
    D_END_LF, /* CR of the final empty line seen */
    D_DONE,
};

#define SIZE_LINE_LIMIT 1024

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int trailer_add(rw_chunked_decoder_t *d, const char *p, size_t n)
{
    if (n > d->max_trailers - d->trailers_len)
        return RW_ELIMIT;
    if (d->trailers == NULL) {
        /* Bounded by max_trailers, so one allocation of that size is fine. */
        d->trailers = malloc(d->max_trailers);
        if (d->trailers == NULL)
            return UV_ENOMEM;
    }
    memcpy(d->trailers + d->trailers_len, p, n);
    d->trailers_len += n;
    return 0;
}

/* Decodes c, pushing body bytes as slices of it. Returns 0 or an error. */
static int dec_feed(rw_chunked_decoder_t *d, const rw_chunk_t *c)
{
    const unsigned char *p = (const unsigned char *)c->base;
    size_t n = c->len, i = 0;
    while (i < n) {
        unsigned char ch = p[i];
        switch (d->state) {
        case D_SIZE: {
            int v = hexval(ch);
            if (v >= 0) {
                if (d->digits == 16)
                    return RW_ECHUNK; /* would overflow 64 bits */
                d->remaining = d->remaining * 16 + (uint64_t)v;
                d->digits++;
            } else if (d->digits == 0) {
                return RW_ECHUNK;
            } else if (ch == '\r') {
                d->state = D_SIZE_LF;
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                d->state = D_EXT;
            } else {
                return RW_ECHUNK;
            }
            if (++d->line_len > SIZE_LINE_LIMIT)
                return RW_ECHUNK;
            i++;
            break;
        }
        case D_EXT:
            /* Extensions carry nothing we use; they may not hold control
             * characters (a bare LF here is the classic smuggling vector). */
            if (ch == '\r')
                d->state = D_SIZE_LF;
            else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return RW_ECHUNK;
            if (++d->line_len > SIZE_LINE_LIMIT)
                return RW_ECHUNK;
            i++;
            break;
        case D_SIZE_LF:
            if (ch != '\n')
                return RW_ECHUNK;
            d->state = d->remaining == 0 ? D_TRAILER : D_DATA;
            i++;
            break;
        case D_DATA: {
            size_t take = n - i;
            if (take > d->remaining)
                take = (size_t)d->remaining;
            rw_readable_push(&d->stream, rw_chunk_slice(c, i, take));
            d->remaining -= take;
            i += take;
            if (d->remaining == 0)
                d->state = D_DATA_CR;
            break;
        }
        case D_DATA_CR:
            if (ch != '\r')
                return RW_ECHUNK;
            d->state = D_DATA_LF;
            i++;
            break;
        case D_DATA_LF:
            if (ch != '\n')
                return RW_ECHUNK;
            d->state = D_SIZE;
            d->digits = 0;
            d->line_len = 0;
            i++;
            break;
        case D_TRAILER:
            if (ch == '\r') {
                d->state = D_END_LF;
                i++;
                break;
            }
            if (ch == ' ' || ch == '\t' || ch == ':')
                return RW_ECHUNK; /* obsolete line folding or an empty name */
            d->in_ext = false;    /* "seen the colon" for this line */
            d->state = D_TRAILER_IN;
            break;
        case D_TRAILER_IN: {
            /* Byte by byte, validity before size, so that where the input
             * was cut never changes which error comes out. */
            size_t start = i, room = d->max_trailers - d->trailers_len;
            while (i < n && p[i] != '\r') {
                if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f)
                    return RW_ECHUNK;
                if (i - start == room)
                    return RW_ELIMIT;
                if (p[i] == ':')
                    d->in_ext = true;
                i++;
            }
            int err = trailer_add(d, (const char *)p + start, i - start);
            if (err != 0)
                return err;
            if (i < n) {
                if (!d->in_ext)
                    return RW_ECHUNK; /* a field line needs a colon */
                d->state = D_TRAILER_LF;
                i++;
            }
            break;
        }
        case D_TRAILER_LF: {
            if (ch != '\n')
                return RW_ECHUNK;
            int err = trailer_add(d, "\r\n", 2);
            if (err != 0)
                return err;
            d->state = D_TRAILER;
            i++;
            break;
        }
        case D_END_LF:
            if (ch != '\n')
                return RW_ECHUNK;
            d->state = D_DONE;
            i++;
            break;
        default:              /* D_DONE */
            return RW_ECHUNK; /* bytes after the end of the body */
        }
    }
    return 0;
}

static void dec_write(rw_stream_t *s, rw_chunk_t c)
{
    rw_chunked_decoder_t *d = rw__container_of(s, rw_chunked_decoder_t, stream);
    int err = dec_feed(d, &c);
    rw_chunk_release(&c);
    rw_transform_done(s, err);
}

static void dec_flush(rw_stream_t *s)
{
    rw_chunked_decoder_t *d = rw__container_of(s, rw_chunked_decoder_t, stream);
    rw_transform_flush_done(s, d->state == D_DONE ? 0 : RW_ETRUNC);
}

static void dec_close(rw_stream_t *s)
{
    rw_chunked_decoder_t *d = rw__container_of(s, rw_chunked_decoder_t, stream);
    free(d->trailers); /* kept past destroy: the user reads them after the end */
    d->trailers = NULL;
    d->trailers_len = 0;
}

static const rw_stream_impl_t dec_impl = {
    .write = dec_write, .final = dec_flush, .close = dec_close};

int rw_chunked_decoder_init(uv_loop_t *loop, rw_chunked_decoder_t *d, size_t max_trailers,
                            const rw_stream_opts_t *opts)
{
    rw_stream_opts_t o = rw__bytes_opts(opts);
    int err = rw_transform_init(loop, &d->stream, &dec_impl, &o);
    if (err == 0) {
        d->remaining = 0;
        d->line_len = 0;
        d->max_trailers = max_trailers ? max_trailers : 8192;
        d->trailers = NULL;
        d->trailers_len = 0;
        d->state = D_SIZE;
        d->digits = 0;
        d->in_ext = false;
    }
    return err;
}

const char *rw_chunked_decoder_trailers(const rw_chunked_decoder_t *d, size_t *len)
{
    if (d->state != D_DONE || d->trailers_len == 0) {
        *len = 0;
        return NULL;
    }
    *len = d->trailers_len;
    return d->trailers;
}
