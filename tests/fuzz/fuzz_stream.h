/* Shared by the stream fuzzers: runs bytes through a transform in pieces
 * chosen by the input itself, and checks the result does not depend on where
 * the input was cut (the output and the error must match a whole-input run). */
#ifndef REELWAY_FUZZ_STREAM_H
#define REELWAY_FUZZ_STREAM_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reelway/stream.h"

typedef struct fuzz_out_s {
    char *p;
    size_t len, cap;
    int err;
} fuzz_out_t;

static void fuzz_append(fuzz_out_t *o, const void *p, size_t n)
{
    if (o->len + n > o->cap) {
        o->cap = (o->len + n) * 2 + 64;
        o->p = realloc(o->p, o->cap);
        if (o->p == NULL)
            abort();
    }
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

static void fuzz_on_error(rw_stream_t *s, int err)
{
    ((fuzz_out_t *)s->data)->err = err;
}

/* make: initialises the transform in mem on loop. on_data: collects output. */
typedef int (*fuzz_make_fn)(uv_loop_t *loop, void *mem);

static void fuzz_run(fuzz_make_fn make, void *mem, void (*on_data)(rw_stream_t *, rw_chunk_t),
                     const uint8_t *in, size_t n, uint32_t seed, bool split, fuzz_out_t *out)
{
    static const rw_stream_events_t none;
    rw_stream_events_t ev = none;
    ev.on_data = on_data;
    ev.on_error = fuzz_on_error;
    uv_loop_t loop;
    uv_loop_init(&loop);
    if (make(&loop, mem) != 0)
        abort();
    rw_stream_t *s = mem;
    s->data = out;
    rw_stream_listen(s, &ev);
    rw_readable_resume(s);
    rw_buf_t *b = rw_buf_new(n ? n : 1);
    memcpy(b->base, in, n);
    size_t at = 0;
    while (at < n) {
        size_t piece = n - at;
        if (split) {
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 16) % 17;
            if (piece > n - at)
                piece = n - at;
        }
        rw_writable_write(s, rw_chunk_of(b, at, piece));
        at += piece;
    }
    rw_buf_unref(b);
    rw_writable_end(s);
    for (int i = 0; i < 100000 && uv_run(&loop, UV_RUN_ONCE); i++)
        ;
    rw_stream_close(s, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (rw_stream_loop_close(&loop) != 0)
        abort();
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        abort();
}

/* The differential check: whole input vs the same input cut by the seed. */
static void fuzz_check(fuzz_make_fn make, void *mem, void (*on_data)(rw_stream_t *, rw_chunk_t),
                       const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    uint32_t seed = (uint32_t)data[0] << 8 | data[1];
    fuzz_out_t whole = {0}, cut = {0};
    fuzz_run(make, mem, on_data, data + 2, size - 2, seed, false, &whole);
    fuzz_run(make, mem, on_data, data + 2, size - 2, seed, true, &cut);
    if (whole.err != cut.err || whole.len != cut.len ||
        (whole.len && memcmp(whole.p, cut.p, whole.len) != 0)) {
        fprintf(stderr, "split changed the result: err %d vs %d, len %zu vs %zu\n", whole.err,
                cut.err, whole.len, cut.len);
        abort();
    }
    free(whole.p);
    free(cut.p);
}

#endif
