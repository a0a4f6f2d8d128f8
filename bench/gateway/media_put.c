/* rw_bench_media_put: puts a file into a bucket through the put stream (file
 * readable -> put), for bench/gateway/media. Usage: DIR KEY FILE [TYPE]. */
#include "reelway/bucket.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int result = 1;

static void on_done(rw_pipeline_t *p, int err)
{
    result = err;
    if (err != 0)
        fprintf(stderr, "rw_bench_media_put: %s\n", rw_strerror(err));
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: %s BUCKET_DIR KEY FILE [CONTENT_TYPE]\n", argv[0]);
        return 2;
    }
    rw_bucket_t *b;
    rw_bucket_opts_t bo = {.create = true};
    char why[512];
    if (rw_bucket_open(argv[1], &bo, &b, why, sizeof why) != 0) {
        fprintf(stderr, "rw_bench_media_put: %s\n", why);
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_file_readable_t src;
    rw_bucket_put_t put;
    rw_bucket_put_opts_t po = {.content_type = argc == 5 ? argv[4] : NULL};
    rw_pipeline_t p;
    if (rw_file_readable_open(&loop, &src, argv[3], 0, -1, 0, NULL) != 0 ||
        rw_bucket_put_init(&loop, &put, b, argv[2], strlen(argv[2]), &po, NULL) != 0 ||
        rw_pipeline(&p, on_done, &src.stream, &put.stream, NULL) != 0) {
        fprintf(stderr, "rw_bench_media_put: cannot start the put\n");
        return 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (result == 0)
        printf("%s\n", rw_bucket_put_meta(&put)->sha256);
    rw_stream_close(&src.stream, NULL);
    rw_stream_close(&put.stream, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    rw_stream_loop_close(&loop);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    rw_bucket_free(b);
    return result == 0 ? 0 : 1;
}
