/* 1 GiB through source -> three transforms -> sink: the process's resident
 * memory grows by less than 16 MiB, because every stage honours its HWM. */
#include "stream_test.h"

#include <stdio.h>

#if defined(__SANITIZE_ADDRESS__)
#define RW_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RW_ASAN 1
#endif
#endif

#ifdef RW_ASAN
/* ASan keeps freed memory in a quarantine (256 MiB by default) to catch
 * use-after-free; that would be counted as growth. A small one keeps the
 * check meaningful under the sanitizer too. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=4";
}
#endif

/* Reads a "Name:   123 kB" line of /proc/self/status, in bytes. */
static size_t status_kb(const char *name)
{
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    char line[256];
    size_t kb = 0, nl = strlen(name);
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, name, nl) == 0 && line[nl] == ':')
            kb = strtoull(line + nl + 1, NULL, 10);
    fclose(f);
    assert_true(kb > 0);
    return kb * 1024;
}

static int done_err = 1;
static void on_done(rw_pipeline_t *p, int err)
{
    done_err = err;
}

static void one_gib_keeps_rss_flat(void **state)
{
    const uint64_t total = 1ull << 30; /* about 1 s, 3 s under ASan */
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, total, 64 * 1024, 0);
    rw_limit_t lim;
    rw_sha256_t sha;
    rw_chunked_encoder_t enc;
    assert_int_equal(rw_limit_init(&loop, &lim, total, NULL), 0);
    assert_int_equal(rw_sha256_init(&loop, &sha, NULL), 0);
    assert_int_equal(rw_chunked_encoder_init(&loop, &enc, NULL), 0);
    test_sink_t k;
    test_sink_init(&loop, &k, 0);
    /* The sink completes one write per loop iteration, the source produces
     * whenever asked: without backpressure the data would pile up. */
    test_sink_slow(&k);
    rw_stream_t *stages[] = {&src.stream, &lim.stream, &sha.stream, &enc.stream, &k.stream};
    for (int i = 0; i < 5; i++)
        src.watch[i] = stages[i];
    src.watch_n = 5;
    src.bound = RW_STREAM_DEFAULT_HWM + 64 * 1024;

    size_t rss_before = status_kb("VmRSS");
    rw_pipeline_t p;
    assert_int_equal(rw_pipeline_start(&p, stages, 5, on_done), 0);
    run_bounded(&loop, 100000000);
    size_t hwm_after = status_kb("VmHWM");

    assert_int_equal(done_err, 0);
    assert_int_equal(rw_limit_count(&lim), total);
    /* what the sink got: the body plus chunked framing ("10000\r\n" ... "\r\n") */
    uint64_t chunks = total / (64 * 1024);
    assert_int_equal(k.bytes, total + chunks * (7 + 2) + 5);
    assert_int_equal(src.bound_violations, 0);
    print_message("rss before %zu KiB, peak after %zu KiB, growth %zd KiB\n", rss_before >> 10,
                  hwm_after >> 10, (ssize_t)(hwm_after - rss_before) >> 10);
    assert_true(hwm_after < rss_before + (16u << 20));
    for (int i = 0; i < 5; i++)
        rw_stream_close(stages[i], NULL);
    test_sink_close_handle(&k);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_gib_keeps_rss_flat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
