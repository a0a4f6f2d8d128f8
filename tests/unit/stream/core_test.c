/* The stream core's state machine: readable (flowing, paused, HWM, end,
 * errors), writable (HWM, drain, end, final, finish, write after end, double
 * end, destroy with a write in flight), transform, duplex, object mode. */
#include "stream_test.h"

/* ---- an event log: each event appends one letter ---- */

static char evlog[512];
static int last_err;

static void log_ev(char c)
{
    size_t n = strlen(evlog);
    assert_true(n + 1 < sizeof evlog);
    evlog[n] = c;
    evlog[n + 1] = 0;
}

static uint64_t data_bytes;
static void ev_data(rw_stream_t *s, rw_chunk_t c)
{
    data_bytes += c.len;
    rw_chunk_release(&c);
    log_ev('D');
}
static void ev_readable(rw_stream_t *s)
{
    log_ev('R');
}
static void ev_end(rw_stream_t *s)
{
    log_ev('E');
}
static void ev_drain(rw_stream_t *s)
{
    log_ev('W');
}
static void ev_finish(rw_stream_t *s)
{
    log_ev('F');
}
static void ev_error(rw_stream_t *s, int err)
{
    last_err = err;
    log_ev('X');
}
static void ev_close(rw_stream_t *s)
{
    log_ev('C');
}

static const rw_stream_events_t all_events = {ev_data,   NULL,     ev_end,  ev_drain,
                                              ev_finish, ev_error, ev_close};
static const rw_stream_events_t paused_events = {NULL,      ev_readable, ev_end,  ev_drain,
                                                 ev_finish, ev_error,    ev_close};

static int setup(void **state)
{
    evlog[0] = 0;
    last_err = 0;
    data_bytes = 0;
    return 0;
}

static void flowing_delivers_everything_then_end_then_close(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 10 * 100, 100, 0);
    int closed = 0;
    src.stream.data = &closed;
    rw_stream_listen(&src.stream, &all_events);
    rw_readable_resume(&src.stream);
    assert_string_equal(evlog, ""); /* resume is deferred, like Node's */
    run_bounded(&loop, 1000);
    assert_string_equal(evlog, "DDDDDDDDDDEC");
    assert_int_equal(data_bytes, 1000);
    assert_true(rw_readable_ended(&src.stream));
    assert_true(rw_stream_destroyed(&src.stream)); /* auto-destroy after end */
    assert_int_equal(src.destroys, 1);
    assert_int_equal(src.destroy_err, 0);
    rw_stream_close(&src.stream, on_closed_count);
    assert_int_equal(closed, 0); /* never inside rw_stream_close */
    run_bounded(&loop, 100);
    assert_int_equal(closed, 1);
    finish_loop(&loop);
}

static void push_returns_false_at_hwm_and_read_resumes(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 1000, 4, 10);
    src.async = true;
    rw_stream_listen(&src.stream, &paused_events); /* asks for data */
    run_bounded(&loop, 100);
    assert_int_equal(src.reads, 1);
    assert_true(src.wanted);
    src.wanted = false;
    assert_true(test_src_push_one(&src)); /* 4 < 10 */
    src.wanted = false;                   /* push asked again at once: not async here */
    assert_true(test_src_push_one(&src)); /* 8 < 10 */
    src.wanted = false;
    assert_false(test_src_push_one(&src)); /* 12 >= 10 */
    int reads = src.reads;
    assert_int_equal(rw_readable_length(&src.stream), 12);
    run_bounded(&loop, 100);
    assert_int_equal(src.reads, reads); /* at the HWM nobody asks for more */
    assert_string_equal(evlog, "R");

    /* Reading below the HWM asks the producer again. */
    rw_chunk_t c;
    assert_int_equal(rw_readable_read(&src.stream, 0, &c), 1);
    assert_int_equal(c.len, 4);
    rw_chunk_release(&c);
    assert_int_equal(rw_readable_length(&src.stream), 8);
    assert_int_equal(src.reads, reads + 1);
    rw_stream_close(&src.stream, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static void paused_read_slices_without_copy(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 0, 1, 0);
    src.async = true;
    rw_buf_t *b = rw_buf_new(11);
    memcpy(b->base, "hello world", 11);
    rw_readable_push(&src.stream, rw_chunk_of(b, 0, 11));
    rw_readable_end(&src.stream);
    rw_chunk_t c;
    assert_int_equal(rw_readable_read(&src.stream, 5, &c), 1);
    assert_ptr_equal(c.base, b->base);
    assert_ptr_equal(c.buf, b);
    assert_memory_equal(c.base, "hello", 5);
    rw_chunk_release(&c);
    assert_int_equal(rw_readable_read(&src.stream, 5, &c), 1);
    assert_ptr_equal(c.base, b->base + 5);
    assert_int_equal(c.len, 5);
    rw_chunk_release(&c);
    assert_int_equal(rw_readable_read(&src.stream, 5, &c), 1);
    assert_int_equal(c.len, 1);
    assert_int_equal(c.base[0], 'd');
    rw_chunk_release(&c);
    assert_int_equal(b->refs, 1); /* only ours is left */
    rw_buf_unref(b);
    assert_int_equal(rw_readable_read(&src.stream, 5, &c), UV_EOF);
    rw_stream_listen(&src.stream, &all_events);
    run_bounded(&loop, 100);
    assert_string_equal(evlog, "EC");
    assert_int_equal(rw_readable_read(&src.stream, 5, &c), UV_EOF);
    rw_stream_close(&src.stream, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static void pause_buffers_and_resume_delivers(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 0, 1, 100);
    src.async = true;
    rw_stream_listen(&src.stream, &all_events);
    rw_readable_resume(&src.stream);
    run_bounded(&loop, 100);
    assert_true(rw_readable_flowing(&src.stream));
    rw_readable_push(&src.stream, rw_chunk_static("ab", 2));
    assert_string_equal(evlog, "D"); /* flowing, empty buffer: delivered at once */
    rw_readable_pause(&src.stream);
    assert_true(rw_readable_push(&src.stream, rw_chunk_static("cd", 2)));
    rw_readable_end(&src.stream);
    run_bounded(&loop, 100);
    assert_string_equal(evlog, "D"); /* paused: no data, no end while data is buffered */
    assert_int_equal(rw_readable_length(&src.stream), 2);
    rw_readable_resume(&src.stream);
    run_bounded(&loop, 100);
    assert_string_equal(evlog, "DDEC");
    assert_int_equal(data_bytes, 4);
    rw_stream_close(&src.stream, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static void push_after_end_is_an_error(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 0, 1, 0);
    src.async = true;
    rw_stream_listen(&src.stream, &all_events);
    rw_readable_end(&src.stream);
    rw_readable_end(&src.stream); /* twice: nothing more happens */
    assert_false(rw_readable_push(&src.stream, rw_chunk_static("x", 1)));
    assert_true(rw_stream_destroyed(&src.stream));
    assert_int_equal(rw_stream_error(&src.stream), RW_EWRITEEND);
    assert_false(rw_readable_push(&src.stream, rw_chunk_static("y", 1)));
    run_bounded(&loop, 100);
    assert_string_equal(evlog, "XC");
    assert_int_equal(last_err, RW_EWRITEEND);
    rw_chunk_t c;
    assert_int_equal(rw_readable_read(&src.stream, 0, &c), RW_EWRITEEND);
    rw_stream_close(&src.stream, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

/* ---- object mode ---- */

static int objs_freed;
static void free_int(rw_stream_t *s, void *obj)
{
    objs_freed++;
    free(obj);
}
static void obj_read(rw_stream_t *s, size_t size)
{
    (void)size;
}
static const rw_stream_impl_t obj_src_impl = {.read = obj_read, .free_obj = free_int};

static void *new_int(int v)
{
    int *p = malloc(sizeof *p);
    *p = v;
    return p;
}

static void object_mode_counts_items_and_frees_on_destroy(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_stream_t s;
    rw_stream_opts_t o = {.readable_objects = true, .readable_hwm = 2};
    assert_int_equal(rw_readable_init(&loop, &s, &obj_src_impl, &o), 0);
    objs_freed = 0;
    assert_true(rw_readable_push(&s, rw_chunk_obj(new_int(1))));
    assert_false(rw_readable_push(&s, rw_chunk_obj(new_int(2))));
    assert_false(rw_readable_push(&s, rw_chunk_obj(new_int(3))));
    assert_int_equal(rw_readable_length(&s), 3);
    rw_chunk_t c;
    assert_int_equal(rw_readable_read(&s, 0, &c), 1);
    assert_int_equal(*(int *)c.obj, 1);
    free(c.obj);
    rw_stream_listen(&s, &all_events);
    rw_stream_destroy(&s, RW_EDB);
    assert_int_equal(objs_freed, 2); /* the two still queued */
    run_bounded(&loop, 100);
    assert_string_equal(evlog, "XC");
    assert_int_equal(last_err, RW_EDB);
    rw_stream_close(&s, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

/* ---- writable ---- */

static int released;
static void count_release(rw_buf_t *b)
{
    released++;
}

static void write_returns_false_at_hwm_then_drain_end_finish(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_sink_t k;
    test_sink_init(&loop, &k, 10);
    k.hold = true;
    rw_stream_listen(&k.stream, &all_events);
    assert_int_equal(rw_writable_write(&k.stream, rw_chunk_static("abcd", 4)), 1);
    assert_int_equal(k.writes, 1); /* first write goes straight to the implementation */
    assert_int_equal(rw_writable_write(&k.stream, rw_chunk_static("efgh", 4)), 1);
    assert_int_equal(rw_writable_write(&k.stream, rw_chunk_static("ijkl", 4)), 0);
    assert_int_equal(rw_writable_length(&k.stream), 12);
    assert_int_equal(k.writes, 1); /* writes never overlap */
    test_sink_complete(&k, 0);
    assert_int_equal(k.writes, 2);
    test_sink_complete(&k, 0);
    test_sink_complete(&k, 0);
    assert_int_equal(k.writes, 3);
    assert_int_equal(rw_writable_length(&k.stream), 0);
    assert_string_equal(evlog, ""); /* drain is deferred */
    run_bounded(&loop, 100);
    assert_string_equal(evlog, "W");
    assert_int_equal(rw_writable_end(&k.stream), 0);
    assert_int_equal(rw_writable_end(&k.stream), RW_EWRITEEND); /* double end */
    run_bounded(&loop, 100);
    assert_int_equal(k.finals, 1);
    assert_string_equal(evlog, "WFC");
    assert_true(rw_writable_finished(&k.stream));
    assert_int_equal(k.bytes, 12);
    rw_stream_close(&k.stream, NULL);
    test_sink_close_handle(&k);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static void write_after_end_errors(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    rw_stream_listen(&k.stream, &all_events);
    assert_int_equal(rw_writable_end(&k.stream), 0);
    rw_buf_t b;
    char mem[4];
    released = 0;
    rw_buf_init_external(&b, mem, 4, count_release);
    assert_int_equal(rw_writable_write(&k.stream, rw_chunk_of(&b, 0, 4)), RW_EWRITEEND);
    rw_buf_unref(&b);
    assert_int_equal(released, 1); /* the refused chunk was released */
    run_bounded(&loop, 100);
    assert_string_equal(evlog, "XC");
    assert_int_equal(last_err, RW_EWRITEEND);
    assert_int_equal(k.finals, 0);
    assert_int_equal(rw_writable_write(&k.stream, rw_chunk_static("x", 1)), RW_EDESTROYED);
    assert_int_equal(rw_writable_end(&k.stream), RW_EWRITEEND);
    rw_stream_close(&k.stream, NULL);
    test_sink_close_handle(&k);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static void destroy_during_pending_write(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    k.hold = true;
    rw_stream_listen(&k.stream, &all_events);
    rw_buf_t b;
    char mem[8];
    released = 0;
    rw_buf_init_external(&b, mem, 8, count_release);
    rw_writable_write(&k.stream, rw_chunk_of(&b, 0, 4)); /* in flight */
    rw_writable_write(&k.stream, rw_chunk_of(&b, 4, 4)); /* queued */
    rw_buf_unref(&b);
    assert_int_equal(released, 0);
    int closed = 0;
    k.stream.data = &closed;
    rw_stream_close(&k.stream, on_closed_count);
    assert_int_equal(k.destroys, 1);
    run_bounded(&loop, 100);
    assert_int_equal(closed, 0);    /* the write in flight holds it */
    assert_string_equal(evlog, ""); /* nothing reaches the listener after close */
    test_sink_complete(&k, 0);
    assert_int_equal(k.writes, 1); /* the queued write was dropped, not started */
    run_bounded(&loop, 100);
    assert_int_equal(closed, 1);
    assert_int_equal(released, 1); /* both chunks released, buffer freed once */
    test_sink_close_handle(&k);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static void write_error_and_final_error_destroy(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    k.fail_write_at = 2;
    rw_stream_listen(&k.stream, &all_events);
    assert_int_equal(rw_writable_write(&k.stream, rw_chunk_static("a", 1)), 1);
    rw_writable_write(&k.stream, rw_chunk_static("b", 1));
    assert_true(rw_stream_destroyed(&k.stream));
    run_bounded(&loop, 100);
    assert_string_equal(evlog, "XC");
    assert_int_equal(last_err, UV_EIO);
    rw_stream_close(&k.stream, NULL);
    test_sink_close_handle(&k);

    evlog[0] = 0;
    test_sink_t k2;
    test_sink_init(&loop, &k2, 0);
    k2.fail_final = RW_EZLIB;
    rw_stream_listen(&k2.stream, &all_events);
    rw_writable_end(&k2.stream);
    run_bounded(&loop, 100);
    assert_string_equal(evlog, "XC");
    assert_int_equal(last_err, RW_EZLIB);
    assert_false(rw_writable_finished(&k2.stream));
    rw_stream_close(&k2.stream, NULL);
    test_sink_close_handle(&k2);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

/* ---- transform and duplex ---- */

static void upper_write(rw_stream_t *s, rw_chunk_t c)
{
    rw_chunk_t out;
    assert_int_equal(rw_chunk_copy(&out, c.base, c.len), 0);
    for (size_t i = 0; i < out.len; i++)
        if (out.base[i] >= 'a' && out.base[i] <= 'z')
            out.base[i] -= 32;
    rw_chunk_release(&c);
    rw_readable_push(s, out);
    rw_transform_done(s, 0);
}
static void upper_flush(rw_stream_t *s)
{
    rw_readable_push(s, rw_chunk_static("!", 1));
    rw_transform_flush_done(s, 0);
}
static const rw_stream_impl_t upper_impl = {.write = upper_write, .final = upper_flush};

static void transform_with_flush(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_stream_t t;
    assert_int_equal(rw_transform_init(&loop, &t, &upper_impl, NULL), 0);
    rw_stream_listen(&t, &paused_events);
    rw_writable_write(&t, rw_chunk_static("ab", 2));
    rw_writable_write(&t, rw_chunk_static("cd", 2));
    rw_writable_end(&t);
    run_bounded(&loop, 100);
    char got[16] = {0};
    size_t n = 0;
    rw_chunk_t c;
    int r;
    while ((r = rw_readable_read(&t, 0, &c)) == 1) {
        memcpy(got + n, c.base, c.len);
        n += c.len;
        rw_chunk_release(&c);
    }
    assert_int_equal(r, UV_EOF);
    assert_string_equal(got, "ABCD!");
    run_bounded(&loop, 100);
    assert_true(rw_readable_ended(&t));
    assert_true(rw_writable_finished(&t));
    assert_true(rw_stream_destroyed(&t));
    assert_non_null(strchr(evlog, 'F'));
    assert_non_null(strchr(evlog, 'E'));
    assert_int_equal(evlog[strlen(evlog) - 1], 'C');
    rw_stream_close(&t, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static void transform_holds_writes_while_readable_side_is_full(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_stream_t t;
    rw_stream_opts_t o = {.readable_hwm = 4, .writable_hwm = 4};
    assert_int_equal(rw_passthrough_init(&loop, &t, &o), 0);
    assert_int_equal(rw_writable_write(&t, rw_chunk_static("abcd", 4)), 0);
    /* The output sits unread at the readable HWM: the completion is held, so
     * the writable side keeps its 4 bytes and says stop. */
    assert_int_equal(rw_readable_length(&t), 4);
    assert_int_equal(rw_writable_length(&t), 4);
    assert_int_equal(rw_writable_write(&t, rw_chunk_static("efgh", 4)), 0);
    assert_int_equal(rw_writable_length(&t), 8);
    assert_int_equal(rw_readable_length(&t), 4); /* the second chunk was not transformed */
    rw_chunk_t c;
    assert_int_equal(rw_readable_read(&t, 0, &c), 1);
    assert_memory_equal(c.base, "abcd", 4);
    /* Reading released the held completion and ran the next transform. */
    assert_int_equal(rw_writable_length(&t), 4);
    assert_int_equal(rw_readable_length(&t), 4);
    assert_int_equal(rw_readable_read(&t, 0, &c), 1);
    assert_memory_equal(c.base, "efgh", 4);
    assert_int_equal(rw_writable_length(&t), 0);
    rw_stream_close(&t, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static int duplex_reads;
static void dup_read(rw_stream_t *s, size_t size)
{
    duplex_reads++;
}
static void dup_write(rw_stream_t *s, rw_chunk_t c)
{
    /* echo to the readable side, as a socket's peer would */
    rw_readable_push(s, c);
    rw_writable_write_done(s, 0);
}
static const rw_stream_impl_t dup_impl = {.read = dup_read, .write = dup_write};

static void duplex_halves_are_independent(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_stream_t d;
    assert_int_equal(rw_duplex_init(&loop, &d, &dup_impl, NULL), 0);
    rw_stream_listen(&d, &all_events);
    rw_readable_resume(&d);
    rw_writable_write(&d, rw_chunk_static("x", 1));
    rw_writable_end(&d);
    run_bounded(&loop, 100);
    assert_string_equal(evlog, "DF"); /* writable finished, readable still open */
    assert_false(rw_stream_destroyed(&d));
    assert_true(duplex_reads >= 1);
    rw_readable_end(&d);
    run_bounded(&loop, 100);
    assert_string_equal(evlog, "DFEC"); /* both halves done: auto-destroy */
    rw_stream_close(&d, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static void init_validates_and_loop_close_waits_for_streams(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_stream_t s;
    assert_int_equal(rw_readable_init(&loop, &s, &upper_impl, NULL), UV_EINVAL);
    assert_int_equal(rw_transform_init(&loop, &s, &dup_impl, NULL), UV_EINVAL);
    assert_int_equal(rw_writable_init(&loop, &s, &obj_src_impl, NULL), UV_EINVAL);
    assert_int_equal(rw_readable_init(&loop, &s, &obj_src_impl, NULL), 0);
    assert_ptr_equal(rw_stream_loop(&s), &loop);
    assert_int_equal(rw_stream_loop_close(&loop), UV_EBUSY);
    int closed = 0;
    s.data = &closed;
    rw_stream_close(&s, on_closed_count);
    rw_stream_close(&s, on_closed_count); /* a second close is ignored */
    assert_int_equal(rw_stream_loop_close(&loop), UV_EBUSY);
    run_bounded(&loop, 100);
    assert_int_equal(closed, 1);
    finish_loop(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(flowing_delivers_everything_then_end_then_close, setup),
        cmocka_unit_test_setup(push_returns_false_at_hwm_and_read_resumes, setup),
        cmocka_unit_test_setup(paused_read_slices_without_copy, setup),
        cmocka_unit_test_setup(pause_buffers_and_resume_delivers, setup),
        cmocka_unit_test_setup(push_after_end_is_an_error, setup),
        cmocka_unit_test_setup(object_mode_counts_items_and_frees_on_destroy, setup),
        cmocka_unit_test_setup(write_returns_false_at_hwm_then_drain_end_finish, setup),
        cmocka_unit_test_setup(write_after_end_errors, setup),
        cmocka_unit_test_setup(destroy_during_pending_write, setup),
        cmocka_unit_test_setup(write_error_and_final_error_destroy, setup),
        cmocka_unit_test_setup(transform_with_flush, setup),
        cmocka_unit_test_setup(transform_holds_writes_while_readable_side_is_full, setup),
        cmocka_unit_test_setup(duplex_halves_are_independent, setup),
        cmocka_unit_test_setup(init_validates_and_loop_close_waits_for_streams, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
