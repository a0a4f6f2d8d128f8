/* libFuzzer target: the NDJSON framer, whole input vs cut input. */
#include "fuzz_stream.h"

static rw_ndjson_framer_t framer;

static int make(uv_loop_t *loop, void *mem)
{
    return rw_ndjson_framer_init(loop, mem, 64, NULL, NULL);
}

static void on_data(rw_stream_t *s, rw_chunk_t c)
{
    rw_ndjson_line_t *l = c.obj;
    if (l->len == 0 || l->len > 64 || l->data[l->len] != 0 || memchr(l->data, '\n', l->len))
        abort(); /* never an empty, oversized, unterminated or multi-line line */
    fuzz_append(s->data, l->data, l->len);
    fuzz_append(s->data, "\n", 1);
    free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_check(make, &framer, on_data, data, size);
    return 0;
}
