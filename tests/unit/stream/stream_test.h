/* Shared by the stream tests: a bounded loop runner, a source and a sink
 * whose speed the test controls, and counters for what they saw. */
#ifndef REELWAY_STREAM_TEST_H
#define REELWAY_STREAM_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "reelway/stream.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Runs loop until nothing is left to do, at most max_iter iterations and
 * 120 s: a test that would hang fails instead. */
static inline void run_bounded(uv_loop_t *loop, uint64_t max_iter)
{
    uint64_t start = uv_hrtime();
    for (uint64_t i = 0;; i++) {
        if (!uv_run(loop, UV_RUN_ONCE))
            return;
        if (i >= max_iter || uv_hrtime() - start > 120ull * 1000000000ull)
            fail_msg("loop still busy after %llu iterations", (unsigned long long)i);
    }
}

/* Ends a test's loop: the scheduler goes, and the loop must close clean. */
static inline void finish_loop(uv_loop_t *loop)
{
    assert_int_equal(rw_stream_loop_close(loop), 0);
    run_bounded(loop, 100);
    assert_int_equal(uv_loop_close(loop), 0);
}

static inline void on_closed_count(rw_stream_t *s)
{
    int *n = s->data;
    (*n)++;
}

/* ---- a source producing `total` bytes in chunks of `chunk` ---- */

typedef struct test_src_s {
    rw_stream_t stream;
    uint64_t total, produced;
    size_t chunk;
    bool async;   /* read() only notes the request; test_src_pump pushes */
    bool wanted;  /* async: a read() is pending */
    int reads;    /* read() calls */
    int destroys; /* destroy hook calls */
    int destroy_err;
    int fail_at;           /* destroy with RW_EPARSE at this read (0: never) */
    size_t max_rlen;       /* highest readable length seen */
    rw_stream_t *watch[8]; /* stages whose buffers are checked at every read */
    size_t watch_n, bound_violations, bound;
    unsigned char fill;
} test_src_t;

static inline void test_check_bounds(rw_stream_t *const *watch, size_t n, size_t bound,
                                     size_t *violations)
{
    for (size_t i = 0; i < n; i++) {
        if (rw_readable_length(watch[i]) > bound || rw_writable_length(watch[i]) > bound)
            (*violations)++;
    }
}

static inline bool test_src_push_one(test_src_t *t)
{
    rw_stream_t *s = &t->stream;
    if (t->produced >= t->total) {
        rw_readable_end(s);
        return false;
    }
    size_t n = t->chunk;
    if (n > t->total - t->produced)
        n = (size_t)(t->total - t->produced);
    rw_buf_t *b = rw_buf_new(n);
    assert_non_null(b);
    memset(b->base, t->fill + (int)(t->produced / t->chunk), n);
    t->produced += n;
    rw_chunk_t c = rw_chunk_of(b, 0, n);
    rw_buf_unref(b);
    bool more = rw_readable_push(s, c);
    if (rw_readable_length(s) > t->max_rlen)
        t->max_rlen = rw_readable_length(s);
    return more;
}

static inline void test_src_read(rw_stream_t *s, size_t size)
{
    test_src_t *t = container_of(s, test_src_t, stream);
    t->reads++;
    test_check_bounds(t->watch, t->watch_n, t->bound, &t->bound_violations);
    if (t->fail_at && t->reads == t->fail_at) {
        rw_stream_destroy(s, RW_EPARSE);
        return;
    }
    if (t->async) {
        t->wanted = true;
        return;
    }
    test_src_push_one(t);
}

static inline void test_src_destroy(rw_stream_t *s, int err)
{
    test_src_t *t = container_of(s, test_src_t, stream);
    t->destroys++;
    t->destroy_err = err;
}

static const rw_stream_impl_t test_src_impl = {.read = test_src_read, .destroy = test_src_destroy};

static inline void test_src_init(uv_loop_t *loop, test_src_t *t, uint64_t total, size_t chunk,
                                 size_t hwm)
{
    memset(t, 0, sizeof(*t));
    t->total = total;
    t->chunk = chunk;
    t->fill = 'a';
    rw_stream_opts_t o = {.readable_hwm = hwm};
    assert_int_equal(rw_readable_init(loop, &t->stream, &test_src_impl, &o), 0);
}

/* Async source: push one chunk if a read is pending. */
static inline void test_src_pump(test_src_t *t)
{
    if (t->wanted && !rw_stream_destroyed(&t->stream)) {
        t->wanted = false;
        test_src_push_one(t);
    }
}

/* ---- a sink that completes writes at once or when the test says ---- */

typedef struct test_sink_s {
    rw_stream_t stream;
    uint64_t bytes;
    size_t writes, finals;
    bool hold; /* keep each write pending until test_sink_complete */
    bool writing;
    int fail_write_at; /* complete write number n with UV_EIO (0: never) */
    int fail_final;    /* complete final with this error */
    int destroy_at;    /* destroy the sink (err destroy_err) at write n */
    int destroy_err;
    int destroys;
    size_t max_wlen;
    unsigned char *copy; /* when set, bytes are copied here (capacity copy_cap) */
    size_t copy_cap;
    uv_idle_t slow; /* slow mode: completes one write per loop iteration */
    rw_stream_t *watch[8];
    size_t watch_n, bound_violations, bound;
} test_sink_t;

static inline void test_sink_write(rw_stream_t *s, rw_chunk_t c)
{
    test_sink_t *k = container_of(s, test_sink_t, stream);
    k->writes++;
    test_check_bounds(k->watch, k->watch_n, k->bound, &k->bound_violations);
    if (rw_writable_length(s) > k->max_wlen)
        k->max_wlen = rw_writable_length(s);
    if (k->copy != NULL) {
        assert_true(k->bytes + c.len <= k->copy_cap);
        memcpy(k->copy + k->bytes, c.base, c.len);
    }
    k->bytes += c.len;
    rw_chunk_release(&c);
    if (k->destroy_at && (int)k->writes == k->destroy_at) {
        k->writing = true; /* leave the write pending: destroy with it in flight */
        rw_stream_destroy(s, k->destroy_err);
        rw_writable_write_done(s, 0);
        k->writing = false;
        return;
    }
    if (k->hold) {
        k->writing = true;
        return;
    }
    rw_writable_write_done(s, k->fail_write_at && (int)k->writes == k->fail_write_at ? UV_EIO : 0);
}

static inline void test_sink_complete(test_sink_t *k, int err)
{
    if (k->writing) {
        k->writing = false;
        rw_writable_write_done(&k->stream, err);
    }
}

static inline void test_sink_final(rw_stream_t *s)
{
    test_sink_t *k = container_of(s, test_sink_t, stream);
    k->finals++;
    rw_writable_final_done(s, k->fail_final);
}

static inline void test_sink_destroy(rw_stream_t *s, int err)
{
    test_sink_t *k = container_of(s, test_sink_t, stream);
    k->destroys++;
    if (uv_is_active((uv_handle_t *)&k->slow))
        uv_idle_stop(&k->slow);
}

static const rw_stream_impl_t test_sink_impl = {
    .write = test_sink_write, .final = test_sink_final, .destroy = test_sink_destroy};

static inline void on_slow_idle(uv_idle_t *h)
{
    test_sink_t *k = h->data;
    test_sink_complete(k, 0);
    if (rw_writable_finished(&k->stream) || rw_stream_destroyed(&k->stream))
        uv_idle_stop(h);
}

static inline void test_sink_init(uv_loop_t *loop, test_sink_t *k, size_t hwm)
{
    memset(k, 0, sizeof(*k));
    rw_stream_opts_t o = {.writable_hwm = hwm};
    assert_int_equal(rw_writable_init(loop, &k->stream, &test_sink_impl, &o), 0);
    uv_idle_init(loop, &k->slow);
    k->slow.data = k;
}

/* Slow mode: one completion per loop iteration, whatever the producer does. */
static inline void test_sink_slow(test_sink_t *k)
{
    k->hold = true;
    uv_idle_start(&k->slow, on_slow_idle);
}

static inline void test_sink_close_handle(test_sink_t *k)
{
    uv_close((uv_handle_t *)&k->slow, NULL);
}

#endif
