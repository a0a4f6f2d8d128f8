/* bench/stream: reelway's pipelines at full speed, for bench/stream/run.
 *   rw_bench_stream mem  <total bytes> <chunk>  memory -> 3 pass-throughs -> sink
 *   rw_bench_stream file <path> <chunk>          file -> SHA-256 -> sink
 *   rw_bench_stream memcpy <bytes>               the machine's memcpy bandwidth
 * Each prints "<MB/s>" (MB = 10^6 bytes) and, for file, the digest. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "reelway/stream.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- memory source: slices of one buffer, as Node's Buffer.subarray ---- */

typedef struct mem_src_s {
    rw_stream_t stream;
    rw_buf_t *buf;
    uint64_t left;
    size_t chunk;
} mem_src_t;

static void mem_read(rw_stream_t *s, size_t size)
{
    mem_src_t *m = (mem_src_t *)s;
    while (m->left > 0) {
        size_t n = m->left < m->chunk ? (size_t)m->left : m->chunk;
        m->left -= n;
        if (!rw_readable_push(s, rw_chunk_of(m->buf, 0, n)))
            return;
    }
    rw_readable_end(s);
}

static const rw_stream_impl_t mem_impl = {.read = mem_read};

/* ---- sink: counts and drops ---- */

typedef struct sink_s {
    rw_stream_t stream;
    uint64_t bytes;
} sink_t;

static void sink_write(rw_stream_t *s, rw_chunk_t c)
{
    ((sink_t *)s)->bytes += c.len;
    rw_chunk_release(&c);
    rw_writable_write_done(s, 0);
}

static const rw_stream_impl_t sink_impl = {.write = sink_write};

static int result = 1;
static void on_done(rw_pipeline_t *p, int err)
{
    result = err;
    if (err != 0)
        fprintf(stderr, "pipeline: %s\n", rw_strerror(err));
}

static void close_all(uv_loop_t *loop, rw_stream_t **st, int n)
{
    for (int i = 0; i < n; i++)
        rw_stream_close(st[i], NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    rw_stream_loop_close(loop);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
}

static int bench_mem(uint64_t total, size_t chunk)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mem_src_t src = {.left = total, .chunk = chunk};
    src.buf = rw_buf_new(chunk);
    memset(src.buf->base, 'x', chunk);
    rw_readable_init(&loop, &src.stream, &mem_impl, NULL);
    rw_stream_t t[3];
    for (int i = 0; i < 3; i++)
        rw_passthrough_init(&loop, &t[i], NULL);
    sink_t sink = {0};
    rw_writable_init(&loop, &sink.stream, &sink_impl, NULL);
    rw_stream_t *st[] = {&src.stream, &t[0], &t[1], &t[2], &sink.stream};
    rw_pipeline_t p;
    double t0 = now();
    rw_pipeline_start(&p, st, 5, on_done);
    uv_run(&loop, UV_RUN_DEFAULT);
    double dt = now() - t0;
    if (result != 0 || sink.bytes != total)
        return 1;
    printf("%.0f\n", total / dt / 1e6);
    close_all(&loop, st, 5);
    rw_buf_unref(src.buf);
    return 0;
}

static int bench_file(const char *path, size_t chunk)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_file_readable_t f;
    rw_sha256_t h;
    sink_t sink = {0};
    if (rw_file_readable_open(&loop, &f, path, 0, -1, chunk, NULL) != 0 ||
        rw_sha256_init(&loop, &h, NULL) != 0)
        return 1;
    rw_writable_init(&loop, &sink.stream, &sink_impl, NULL);
    rw_stream_t *st[] = {&f.stream, &h.stream, &sink.stream};
    rw_pipeline_t p;
    double t0 = now();
    rw_pipeline_start(&p, st, 3, on_done);
    uv_run(&loop, UV_RUN_DEFAULT);
    double dt = now() - t0;
    char hex[65];
    if (result != 0 || rw_sha256_digest(&h, NULL, hex) != 0)
        return 1;
    printf("%.0f %s\n", sink.bytes / dt / 1e6, hex);
    close_all(&loop, st, 3);
    return 0;
}

static int bench_memcpy(size_t n)
{
    char *a = malloc(n), *b = malloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    double best = 0;
    for (int round = 0; round < 5; round++) {
        double t0 = now();
        memcpy(b, a, n);
        double dt = now() - t0;
        if (n / dt > best)
            best = n / dt;
        a[round] = b[n - 1 - round]; /* keep the copies observable */
    }
    printf("%.0f\n", best / 1e6);
    free(a);
    free(b);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "mem") == 0)
        return bench_mem(strtoull(argv[2], NULL, 10), strtoull(argv[3], NULL, 10));
    if (argc == 4 && strcmp(argv[1], "file") == 0)
        return bench_file(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 3 && strcmp(argv[1], "memcpy") == 0)
        return bench_memcpy(strtoull(argv[2], NULL, 10));
    fprintf(stderr, "usage: %s mem <bytes> <chunk> | file <path> <chunk> | memcpy <bytes>\n",
            argv[0]);
    return 2;
}
