/* libFuzzer target: the HTTP chunked decoder, whole input vs cut input. */
#include "fuzz_stream.h"

static rw_chunked_decoder_t decoder;

static int make(uv_loop_t *loop, void *mem)
{
    return rw_chunked_decoder_init(loop, mem, 256, NULL);
}

static void on_data(rw_stream_t *s, rw_chunk_t c)
{
    fuzz_append(s->data, c.base, c.len);
    rw_chunk_release(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_check(make, &decoder, on_data, data, size);
    return 0;
}
