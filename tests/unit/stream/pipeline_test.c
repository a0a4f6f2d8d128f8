/* pipe and pipeline: backpressure bounds in every stage, completion, teardown
 * on errors from each stage and on a destination that goes away early. */
#include "stream_test.h"

static int done_calls, done_err;
static void on_done(rw_pipeline_t *p, int err)
{
    done_calls++;
    done_err = err;
}

static int setup(void **state)
{
    done_calls = 0;
    done_err = 1;
    return 0;
}

/* A fast source, three pass-throughs and a slow sink: no half of any stage
 * ever holds more than its HWM plus one chunk, yet every byte arrives. */
static void backpressure_bounds_every_stage(void **state)
{
    enum { HWM = 4096, CHUNK = 1000, TOTAL = 2000000 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, TOTAL, CHUNK, HWM);
    rw_stream_t t[3];
    rw_stream_opts_t o = {.readable_hwm = HWM, .writable_hwm = HWM};
    for (int i = 0; i < 3; i++)
        assert_int_equal(rw_passthrough_init(&loop, &t[i], &o), 0);
    test_sink_t k;
    test_sink_init(&loop, &k, HWM);
    test_sink_slow(&k);
    rw_stream_t *stages[] = {&src.stream, &t[0], &t[1], &t[2], &k.stream};
    for (int i = 0; i < 5; i++) {
        src.watch[i] = k.watch[i] = stages[i];
    }
    src.watch_n = k.watch_n = 5;
    src.bound = k.bound = HWM + CHUNK;

    /* Also sample every stage once per loop iteration. */
    size_t max_len[5] = {0}, violations = 0;
    rw_pipeline_t p;
    assert_int_equal(rw_pipeline_start(&p, stages, 5, on_done), 0);
    for (int iter = 0; done_calls == 0 && iter < 1000000; iter++) {
        uv_run(&loop, UV_RUN_ONCE);
        test_check_bounds(stages, 5, HWM + CHUNK, &violations);
        for (int i = 0; i < 5; i++) {
            size_t n = rw_readable_length(stages[i]) + rw_writable_length(stages[i]);
            if (n > max_len[i])
                max_len[i] = n;
        }
    }
    assert_int_equal(done_calls, 1);
    assert_int_equal(done_err, 0);
    assert_int_equal(k.bytes, TOTAL);
    assert_int_equal(src.bound_violations, 0);
    assert_int_equal(k.bound_violations, 0);
    assert_int_equal(violations, 0);
    /* The test pushed hard enough to fill every stage up to the HWM. */
    for (int i = 0; i < 4; i++)
        assert_true(max_len[i] >= HWM);
    assert_true(k.max_wlen >= HWM - CHUNK); /* sampled after one completion */
    assert_true(k.max_wlen <= HWM + CHUNK);
    for (int i = 0; i < 5; i++)
        rw_stream_close(stages[i], NULL);
    test_sink_close_handle(&k);
    run_bounded(&loop, 1000);
    finish_loop(&loop);
}

static void on_pump(uv_idle_t *h)
{
    test_src_pump(h->data);
}

/* The destination goes away mid-stream: the source is destroyed and done is
 * called once with a clear error. */
static void run_destination_gone(int destroy_err, int want)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 100000000, 1000, 0);
    src.async = true; /* data arrives by "I/O", like a cursor */
    uv_idle_t pump;
    uv_idle_init(&loop, &pump);
    pump.data = &src;
    uv_idle_start(&pump, on_pump);
    rw_stream_t t;
    assert_int_equal(rw_passthrough_init(&loop, &t, NULL), 0);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    k.destroy_at = 5;
    k.destroy_err = destroy_err;
    rw_pipeline_t p;
    assert_int_equal(rw_pipeline(&p, on_done, &src.stream, &t, &k.stream, NULL), 0);
    for (int i = 0; i < 10000 && done_calls == 0; i++)
        uv_run(&loop, UV_RUN_ONCE);
    uv_idle_stop(&pump);
    run_bounded(&loop, 1000);
    assert_int_equal(done_calls, 1);
    assert_int_equal(done_err, want);
    assert_int_equal(src.destroys, 1);
    assert_int_equal(src.destroy_err, want);
    assert_true(rw_stream_destroyed(&t));
    assert_true(src.produced < src.total);
    rw_stream_close(&src.stream, NULL);
    rw_stream_close(&t, NULL);
    rw_stream_close(&k.stream, NULL);
    test_sink_close_handle(&k);
    uv_close((uv_handle_t *)&pump, NULL);
    run_bounded(&loop, 1000);
    assert_int_equal(done_calls, 1);
    finish_loop(&loop);
}

static void destination_destroyed_stops_source(void **state)
{
    run_destination_gone(0, RW_EPREMATURE);
}

static void destination_reset_stops_source_with_its_error(void **state)
{
    run_destination_gone(UV_ECONNRESET, UV_ECONNRESET);
}

/* ---- errors from each stage ---- */

static int fail_transform_at, fail_flush_err, xf_chunks;
static void failing_write(rw_stream_t *s, rw_chunk_t c)
{
    xf_chunks++;
    if (xf_chunks == fail_transform_at) {
        rw_chunk_release(&c);
        rw_transform_done(s, RW_ELIMIT);
        return;
    }
    rw_readable_push(s, c);
    rw_transform_done(s, 0);
}
static void failing_flush(rw_stream_t *s)
{
    rw_transform_flush_done(s, fail_flush_err);
}
static const rw_stream_impl_t failing_impl = {.write = failing_write, .final = failing_flush};

enum { FAIL_SOURCE, FAIL_TRANSFORM, FAIL_FLUSH, FAIL_WRITE, FAIL_FINAL };

static void run_stage_error(int where, int want)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 100000, 1000, 0);
    xf_chunks = 0;
    fail_transform_at = where == FAIL_TRANSFORM ? 7 : 0;
    fail_flush_err = where == FAIL_FLUSH ? RW_EZLIB : 0;
    src.fail_at = where == FAIL_SOURCE ? 3 : 0;
    rw_stream_t t1, t2;
    assert_int_equal(rw_passthrough_init(&loop, &t1, NULL), 0);
    assert_int_equal(rw_transform_init(&loop, &t2, &failing_impl, NULL), 0);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    k.fail_write_at = where == FAIL_WRITE ? 9 : 0;
    k.fail_final = where == FAIL_FINAL ? RW_ECRYPTO : 0;
    rw_pipeline_t p;
    assert_int_equal(rw_pipeline(&p, on_done, &src.stream, &t1, &t2, &k.stream, NULL), 0);
    run_bounded(&loop, 100000);
    assert_int_equal(done_calls, 1);
    assert_int_equal(done_err, want);
    rw_stream_t *all[] = {&src.stream, &t1, &t2, &k.stream};
    for (int i = 0; i < 4; i++) {
        assert_true(rw_stream_destroyed(all[i]));
        rw_stream_close(all[i], NULL);
    }
    assert_int_equal(src.destroys, 1);
    if (where >= 0 && where <= FAIL_WRITE)
        assert_false(rw_writable_finished(&k.stream));
    if (where < 0) {
        assert_true(rw_writable_finished(&k.stream));
        assert_int_equal(k.bytes, 100000);
    }
    test_sink_close_handle(&k);
    run_bounded(&loop, 1000);
    finish_loop(&loop);
}

static void source_error_tears_down(void **state)
{
    run_stage_error(FAIL_SOURCE, RW_EPARSE);
}
static void transform_error_tears_down(void **state)
{
    run_stage_error(FAIL_TRANSFORM, RW_ELIMIT);
}
static void flush_error_tears_down(void **state)
{
    run_stage_error(FAIL_FLUSH, RW_EZLIB);
}
static void sink_write_error_tears_down(void **state)
{
    run_stage_error(FAIL_WRITE, UV_EIO);
}
static void sink_final_error_tears_down(void **state)
{
    run_stage_error(FAIL_FINAL, RW_ECRYPTO);
}

static void success_calls_done_once_with_zero(void **state)
{
    run_stage_error(-1, 0);
}

static void start_validates_stages(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 10, 1, 0);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    rw_stream_t obj;
    rw_stream_opts_t oo = {.readable_objects = true, .writable_objects = true};
    assert_int_equal(rw_passthrough_init(&loop, &obj, &oo), 0);
    rw_pipeline_t p;
    rw_stream_t *one[] = {&src.stream};
    assert_int_equal(rw_pipeline_start(&p, one, 1, on_done), UV_EINVAL);
    assert_int_equal(rw_pipeline(&p, on_done, &k.stream, &src.stream, NULL), UV_EINVAL);
    assert_int_equal(rw_pipeline(&p, on_done, &src.stream, &obj, &k.stream, NULL), UV_EINVAL);
    assert_int_equal(rw_stream_pipe(&src.stream, &obj), UV_EINVAL);
    assert_int_equal(rw_stream_pipe(&src.stream, &k.stream), 0);
    assert_int_equal(rw_pipeline(&p, on_done, &src.stream, &k.stream, NULL), UV_EBUSY);
    run_bounded(&loop, 1000);
    assert_int_equal(done_calls, 0); /* a failed start never calls done */
    assert_int_equal(k.bytes, 10);   /* the plain pipe ran to the end */
    assert_true(rw_writable_finished(&k.stream));
    rw_stream_close(&src.stream, NULL);
    rw_stream_close(&k.stream, NULL);
    rw_stream_close(&obj, NULL);
    test_sink_close_handle(&k);
    run_bounded(&loop, 1000);
    finish_loop(&loop);
}

/* A plain pipe (no pipeline) stops the source when the destination goes, but
 * leaves it alive, as Node's pipe does. */
static void pipe_unpipes_when_destination_goes(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 1000000, 100, 0);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    k.destroy_at = 3;
    assert_int_equal(rw_stream_pipe(&src.stream, &k.stream), 0);
    run_bounded(&loop, 1000);
    assert_false(rw_stream_destroyed(&src.stream));
    assert_false(rw_readable_flowing(&src.stream));
    assert_true(src.produced < src.total);
    assert_true(rw_readable_length(&src.stream) <= RW_STREAM_DEFAULT_HWM + 100);
    rw_stream_close(&src.stream, NULL);
    rw_stream_close(&k.stream, NULL);
    test_sink_close_handle(&k);
    run_bounded(&loop, 1000);
    assert_int_equal(src.destroys, 1);
    finish_loop(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(backpressure_bounds_every_stage, setup),
        cmocka_unit_test_setup(destination_destroyed_stops_source, setup),
        cmocka_unit_test_setup(destination_reset_stops_source_with_its_error, setup),
        cmocka_unit_test_setup(source_error_tears_down, setup),
        cmocka_unit_test_setup(transform_error_tears_down, setup),
        cmocka_unit_test_setup(flush_error_tears_down, setup),
        cmocka_unit_test_setup(sink_write_error_tears_down, setup),
        cmocka_unit_test_setup(sink_final_error_tears_down, setup),
        cmocka_unit_test_setup(success_calls_done_once_with_zero, setup),
        cmocka_unit_test_setup(start_validates_stages, setup),
        cmocka_unit_test_setup(pipe_unpipes_when_destination_goes, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
