/* The byte-level transforms: chunked encoder and decoder, NDJSON framer and
 * serializer, byte limit, SHA-256 and gzip. Parsers get every split point and
 * random splits of their input, and malformed input gives distinct errors. */
#include "stream_test.h"

#include <openssl/evp.h>
#include <zlib.h>

/* ---- run a transform over input cut into pieces, collecting its output ---- */

typedef struct collect_s {
    char *out;
    size_t len, cap;
    int err;
    bool ended;
    const char *watch_base; /* input, to see whether output slices point into it */
    size_t watch_len;
    int zero_copy; /* output chunks that point into the input */
} collect_t;

static void col_append(collect_t *c, const char *p, size_t n)
{
    if (c->len + n > c->cap) {
        c->cap = (c->len + n) * 2 + 64;
        c->out = realloc(c->out, c->cap);
        assert_non_null(c->out);
    }
    memcpy(c->out + c->len, p, n);
    c->len += n;
}

static void col_data(rw_stream_t *s, rw_chunk_t ch)
{
    collect_t *c = s->data;
    if (ch.buf == NULL && ch.len == 0 && ch.obj != NULL) {
        /* an object (rw_ndjson_line_t): record it as a line */
        rw_ndjson_line_t *l = ch.obj;
        assert_int_equal(l->data[l->len], 0);
        col_append(c, l->data, l->len);
        col_append(c, "\n", 1);
        free(l);
        return;
    }
    if (c->watch_base != NULL && ch.base >= c->watch_base && ch.base < c->watch_base + c->watch_len)
        c->zero_copy++;
    col_append(c, ch.base, ch.len);
    rw_chunk_release(&ch);
}

static void col_error(rw_stream_t *s, int err)
{
    collect_t *c = s->data;
    c->err = err;
}

static void col_end(rw_stream_t *s)
{
    collect_t *c = s->data;
    c->ended = true;
}

static const rw_stream_events_t col_events = {
    .on_data = col_data, .on_end = col_end, .on_error = col_error};

/* Writes in[0..n) to t in pieces cut at cuts[0..ncuts) (ascending), ends it,
 * runs the loop, and returns the error (0 on success). The input lives in one
 * rw_buf so slices of it can be recognised. */
static int run_cuts(uv_loop_t *loop, rw_stream_t *t, const char *in, size_t n, const size_t *cuts,
                    size_t ncuts, collect_t *c)
{
    rw_buf_t *b = rw_buf_new(n);
    assert_non_null(b);
    memcpy(b->base, in, n);
    c->watch_base = b->base;
    c->watch_len = n;
    t->data = c;
    rw_stream_listen(t, &col_events);
    rw_readable_resume(t);
    size_t at = 0;
    for (size_t i = 0; i <= ncuts; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        rw_writable_write(t, rw_chunk_of(b, at, end - at));
        at = end;
    }
    rw_buf_unref(b);
    rw_writable_end(t);
    run_bounded(loop, 100000);
    assert_true(rw_stream_destroyed(t));
    if (c->err == 0)
        assert_true(c->ended);
    return c->err;
}

typedef int (*make_fn)(uv_loop_t *loop, void *mem);

/* Runs input through a fresh transform made by make, cut at cuts. Fills out
 * (caller frees out->out) and returns the error. */
static int through(make_fn make, void *mem, const char *in, size_t n, const size_t *cuts,
                   size_t ncuts, collect_t *out)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    assert_int_equal(make(&loop, mem), 0);
    memset(out, 0, sizeof(*out));
    int err = run_cuts(&loop, (rw_stream_t *)mem, in, n, cuts, ncuts, out);
    rw_stream_close((rw_stream_t *)mem, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
    return err;
}

/* The same output (and error) for the whole input, for every single split
 * point, and for 300 random multi-way splits. */
static void check_all_splits(make_fn make, void *mem, const char *in, size_t n, const char *want,
                             size_t want_len, int want_err)
{
    collect_t whole, part;
    int err = through(make, mem, in, n, NULL, 0, &whole);
    assert_int_equal(err, want_err);
    if (want != NULL) {
        assert_int_equal(whole.len, want_len);
        assert_memory_equal(whole.out, want, want_len);
    }
    for (size_t cut = 0; cut <= n; cut++) {
        int e = through(make, mem, in, n, &cut, 1, &part);
        assert_int_equal(e, want_err);
        assert_int_equal(part.len, whole.len);
        if (whole.len)
            assert_memory_equal(part.out, whole.out, whole.len);
        free(part.out);
    }
    srand(42);
    for (int trial = 0; trial < 300; trial++) {
        size_t cuts[64], nc = 0, at = 0;
        while (nc < 64 && at < n) {
            at += (size_t)(rand() % 7);
            if (at > n)
                at = n;
            cuts[nc++] = at;
        }
        int e = through(make, mem, in, n, cuts, nc, &part);
        assert_int_equal(e, want_err);
        assert_int_equal(part.len, whole.len);
        if (whole.len)
            assert_memory_equal(part.out, whole.out, whole.len);
        free(part.out);
    }
    free(whole.out);
}

/* ---- chunked decoder ---- */

static int make_decoder(uv_loop_t *loop, void *mem)
{
    return rw_chunked_decoder_init(loop, mem, 64, NULL);
}

static const char chunked_ok[] = "5\r\nhello\r\n"
                                 "6;name=\"va;lue\"\r\n world\r\n"
                                 "A \r\n, chunked!\r\n"
                                 "0\r\n"
                                 "X-Checksum: abc\r\n"
                                 "Y: z\r\n"
                                 "\r\n";

static void decoder_every_split_same_output(void **state)
{
    rw_chunked_decoder_t d;
    const char *body = "hello world, chunked!";
    check_all_splits(make_decoder, &d, chunked_ok, sizeof chunked_ok - 1, body, strlen(body), 0);
}

static void decoder_keeps_trailers_and_does_not_copy(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_chunked_decoder_t d;
    assert_int_equal(make_decoder(&loop, &d), 0);
    collect_t c = {0};
    assert_int_equal(run_cuts(&loop, &d.stream, chunked_ok, sizeof chunked_ok - 1, NULL, 0, &c), 0);
    assert_int_equal(c.zero_copy, 3); /* each body piece is a slice of the input */
    size_t tlen;
    const char *t = rw_chunked_decoder_trailers(&d, &tlen);
    assert_non_null(t);
    assert_int_equal(tlen, strlen("X-Checksum: abc\r\nY: z\r\n"));
    assert_memory_equal(t, "X-Checksum: abc\r\nY: z\r\n", tlen);
    free(c.out);
    rw_stream_close(&d.stream, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static void decoder_malformed_gives_distinct_errors(void **state)
{
    static const struct {
        const char *in;
        int err;
    } cases[] = {
        {"zz\r\nhello\r\n0\r\n\r\n", RW_ECHUNK},     /* not hex */
        {"\r\n", RW_ECHUNK},                         /* no digits */
        {"-5\r\nhello\r\n0\r\n\r\n", RW_ECHUNK},     /* sign */
        {"10000000000000000\r\n", RW_ECHUNK},        /* overflows 64 bits */
        {"5\nhello\r\n0\r\n\r\n", RW_ECHUNK},        /* bare LF */
        {"5\r\nhelloXX0\r\n\r\n", RW_ECHUNK},        /* no CRLF after data */
        {"5;a\nb\r\nhello\r\n0\r\n\r\n", RW_ECHUNK}, /* LF inside an extension */
        {"0\r\nbad trailer\r\n\r\n", RW_ECHUNK},     /* field line without colon */
        {"0\r\n folded: x\r\n\r\n", RW_ECHUNK},      /* obsolete folding */
        {"0\r\n\r\nextra", RW_ECHUNK},               /* bytes after the end */
        {"5\r\nhel", RW_ETRUNC},                     /* truncated body */
        {"5\r\nhello\r\n", RW_ETRUNC},               /* no last chunk */
        {"0\r\nX: y\r\n", RW_ETRUNC},                /* no end of trailers */
        {"0\r\nX: 0123456789012345678901234567890123456789012345678901234567890123\r\n\r\n",
         RW_ELIMIT}, /* trailers over 64 bytes */
        /* found by chunked_fuzz: whichever comes first in the input wins, however cut */
        {"0\r\nX: 01234567890123456789012345678901234567890123456789012345678901\x01\r\n\r\n",
         RW_ELIMIT},
        {"0\r\nX: 0123456789\x01"
         "012345678901234567890123456789012345678901234567890\r\n\r\n",
         RW_ECHUNK},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rw_chunked_decoder_t d;
        print_message("case %zu: %s\n", i, cases[i].err == RW_ECHUNK ? "ECHUNK" : "other");
        check_all_splits(make_decoder, &d, cases[i].in, strlen(cases[i].in), NULL, 0, cases[i].err);
    }
}

/* ---- chunked encoder ---- */

static int make_encoder(uv_loop_t *loop, void *mem)
{
    return rw_chunked_encoder_init(loop, mem, NULL);
}

static void encoder_frames_without_copy_and_sends_trailers(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_chunked_encoder_t e;
    assert_int_equal(make_encoder(&loop, &e), 0);
    assert_int_equal(rw_chunked_encoder_trailer(&e, "X-Sum", "42"), 0);
    assert_int_equal(rw_chunked_encoder_trailer(&e, "Bad Name", "x"), UV_EINVAL);
    assert_int_equal(rw_chunked_encoder_trailer(&e, "X", "a\r\nInjected: 1"), UV_EINVAL);
    assert_int_equal(rw_chunked_encoder_trailer(&e, "", "x"), UV_EINVAL);
    collect_t c = {0};
    const char in[] = "hello world, and a longer piece of text";
    size_t cuts[] = {5, 5, 12};
    assert_int_equal(run_cuts(&loop, &e.stream, in, sizeof in - 1, cuts, 3, &c), 0);
    const char want[] = "5\r\nhello\r\n7\r\n world,\r\n1b\r\n and a longer piece of text\r\n"
                        "0\r\nX-Sum: 42\r\n\r\n";
    assert_int_equal(c.len, sizeof want - 1);
    assert_memory_equal(c.out, want, c.len);
    assert_int_equal(c.zero_copy, 3);
    free(c.out);
    rw_stream_close(&e.stream, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static void on_done(rw_pipeline_t *p, int err)
{
    *(int *)p->data = err;
}

static void encoder_then_decoder_round_trip(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    test_src_t src;
    test_src_init(&loop, &src, 1000000, 777, 0);
    rw_chunked_encoder_t e;
    rw_chunked_decoder_t d;
    rw_sha256_t h;
    test_sink_t k;
    assert_int_equal(make_encoder(&loop, &e), 0);
    assert_int_equal(rw_chunked_encoder_trailer(&e, "X-Sum", "42"), 0);
    assert_int_equal(make_decoder(&loop, &d), 0);
    assert_int_equal(rw_sha256_init(&loop, &h, NULL), 0);
    test_sink_init(&loop, &k, 0);
    rw_pipeline_t p;
    static int done_err = 1;
    assert_int_equal(rw_pipeline(&p, NULL, &src.stream, &e.stream, NULL), UV_EINVAL);
    assert_int_equal(
        rw_pipeline(&p, on_done, &src.stream, &e.stream, &d.stream, &h.stream, &k.stream, NULL), 0);
    p.data = &done_err;
    run_bounded(&loop, 100000);
    assert_int_equal(done_err, 0);
    assert_int_equal(k.bytes, 1000000);
    size_t tlen;
    const char *t = rw_chunked_decoder_trailers(&d, &tlen);
    assert_int_equal(tlen, 11);
    assert_memory_equal(t, "X-Sum: 42\r\n", 11);
    /* The digest of what the source made, computed here in one go. */
    unsigned char *all = malloc(1000000), want[32], got[32];
    for (size_t i = 0; i < 1000000; i++)
        all[i] = (unsigned char)('a' + (int)(i / 777));
    unsigned int wl;
    EVP_Digest(all, 1000000, want, &wl, EVP_sha256(), NULL);
    free(all);
    assert_int_equal(rw_sha256_digest(&h, got, NULL), 0);
    assert_memory_equal(got, want, 32);
    rw_stream_t *st[] = {&src.stream, &e.stream, &d.stream, &h.stream, &k.stream};
    for (int i = 0; i < 5; i++)
        rw_stream_close(st[i], NULL);
    test_sink_close_handle(&k);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

/* ---- NDJSON ---- */

static size_t max_line = 16;

static int make_framer(uv_loop_t *loop, void *mem)
{
    return rw_ndjson_framer_init(loop, mem, max_line, NULL, NULL);
}

static void framer_every_split_same_lines(void **state)
{
    rw_ndjson_framer_t f;
    const char in[] = "{\"a\":1}\n\r\n{\"b\":[2,3]}\r\n\n\n{\"c\":\"x\"}\n"
                      "{\"exactly\":16}\r\n{\"no\":\"newline\"}";
    const char want[] = "{\"a\":1}\n{\"b\":[2,3]}\n{\"c\":\"x\"}\n{\"exactly\":16}\n"
                        "{\"no\":\"newline\"}\n";
    max_line = 16;
    check_all_splits(make_framer, &f, in, sizeof in - 1, want, sizeof want - 1, 0);
}

static void framer_long_line_and_bad_json_fail(void **state)
{
    rw_ndjson_framer_t f;
    max_line = 16;
    const char too_long[] = "{\"a\":1}\n{\"seventeen\":\"17\"}\n{\"b\":2}\n";
    check_all_splits(make_framer, &f, too_long, sizeof too_long - 1, NULL, 0, RW_ELINE);
    const char no_newline_too_long[] = "{\"a\":1}\n0123456789abcdefg";
    check_all_splits(make_framer, &f, no_newline_too_long, sizeof no_newline_too_long - 1, NULL, 0,
                     RW_ELINE);
}

static int strict_decode(void *ctx, const char *line, size_t len, void **obj)
{
    /* A stand-in for a JSON parser: objects only. */
    if (line[0] != '{' || line[len - 1] != '}')
        return RW_EPARSE;
    rw_ndjson_line_t *l = malloc(sizeof(*l) + len + 1);
    l->len = len;
    memcpy(l->data, line, len);
    l->data[len] = 0;
    *obj = l;
    const char **seen = ctx;
    *seen = line;
    return 0;
}

static const char *seen_line;
static int make_strict_framer(uv_loop_t *loop, void *mem)
{
    rw_ndjson_codec_t codec = {.decode = strict_decode, .ctx = &seen_line};
    return rw_ndjson_framer_init(loop, mem, 0, &codec, NULL);
}

static void framer_codec_errors_and_decodes_in_place(void **state)
{
    rw_ndjson_framer_t f;
    const char bad[] = "{\"a\":1}\n[1,2]\n{\"b\":2}\n";
    check_all_splits(make_strict_framer, &f, bad, sizeof bad - 1, NULL, 0, RW_EPARSE);

    uv_loop_t loop;
    uv_loop_init(&loop);
    assert_int_equal(make_strict_framer(&loop, &f), 0);
    collect_t c = {0};
    const char one[] = "{\"in\":\"place\"}\n";
    assert_int_equal(run_cuts(&loop, &f.stream, one, sizeof one - 1, NULL, 0, &c), 0);
    assert_ptr_equal(seen_line, c.watch_base); /* the line was decoded where it lay */
    free(c.out);
    rw_stream_close(&f.stream, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static int encoded, freed;
static int upper_encode(void *ctx, void *obj, rw_chunk_t *out)
{
    rw_ndjson_line_t *l = obj;
    encoded++;
    return rw_chunk_copy(out, l->data, l->len);
}
static void count_free(void *ctx, void *obj)
{
    freed++;
    free(obj);
}

static void serializer_writes_lines_and_frees_objects(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_ndjson_serializer_t z;
    rw_ndjson_codec_t codec = {.encode = upper_encode, .free_obj = count_free};
    assert_int_equal(rw_ndjson_serializer_init(&loop, &z, &codec, NULL), 0);
    collect_t c = {0};
    z.stream.data = &c;
    rw_stream_listen(&z.stream, &col_events);
    rw_readable_resume(&z.stream);
    rw_ndjson_line_t *lines[3];
    for (int i = 0; i < 3; i++) {
        lines[i] = malloc(sizeof(rw_ndjson_line_t) + 8);
        lines[i]->len = (size_t)snprintf(lines[i]->data, 8, "{\"i\":%d}", i);
        rw_writable_write(&z.stream, rw_chunk_obj(lines[i]));
    }
    rw_writable_end(&z.stream);
    run_bounded(&loop, 1000);
    assert_int_equal(c.err, 0);
    assert_int_equal(c.len, 24);
    assert_memory_equal(c.out, "{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n", 24);
    assert_int_equal(encoded, 3);
    assert_int_equal(freed, 3);
    free(c.out);
    rw_stream_close(&z.stream, NULL);

    /* Destroyed with objects queued: they are freed with the codec's free. */
    rw_ndjson_serializer_t z2;
    assert_int_equal(rw_ndjson_serializer_init(&loop, &z2, &codec, NULL), 0);
    freed = 0;
    for (int i = 0; i < 5; i++) {
        rw_ndjson_line_t *l = malloc(sizeof(rw_ndjson_line_t) + 2);
        l->len = 1;
        memcpy(l->data, "x", 2);
        rw_writable_write(&z2.stream, rw_chunk_obj(l));
    }
    /* Nobody reads: 1 was serialized, its output is parked, the rest wait. */
    rw_stream_close(&z2.stream, NULL);
    assert_int_equal(freed, 5);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

/* ---- limit, sha256, gzip ---- */

static uint64_t limit_n;
static int make_limit(uv_loop_t *loop, void *mem)
{
    return rw_limit_init(loop, mem, limit_n, NULL);
}

static void limit_fails_past_n_bytes(void **state)
{
    rw_limit_t l;
    collect_t c;
    limit_n = 10;
    const char in[] = "0123456789";
    assert_int_equal(through(make_limit, &l, in, 10, (size_t[]){6}, 1, &c), 0);
    assert_int_equal(c.len, 10);
    free(c.out);
    const char over[] = "0123456789X";
    assert_int_equal(through(make_limit, &l, over, 11, (size_t[]){6}, 1, &c), RW_ELIMIT);
    assert_int_equal(c.len, 6); /* none of the offending chunk went through */
    free(c.out);
    assert_int_equal(through(make_limit, &l, over, 11, NULL, 0, &c), RW_ELIMIT);
    assert_int_equal(c.len, 0);
    free(c.out);
}

static int make_sha(uv_loop_t *loop, void *mem)
{
    return rw_sha256_init(loop, mem, NULL);
}

static void sha256_passes_through_and_digests(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_sha256_t h;
    assert_int_equal(make_sha(&loop, &h), 0);
    unsigned char d[32];
    char hex[65];
    assert_int_equal(rw_sha256_digest(&h, d, hex), UV_EAGAIN);
    collect_t c = {0};
    assert_int_equal(run_cuts(&loop, &h.stream, "abc", 3, (size_t[]){1}, 1, &c), 0);
    assert_int_equal(c.len, 3);
    assert_int_equal(c.zero_copy, 2);
    assert_int_equal(rw_sha256_digest(&h, d, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    free(c.out);
    rw_stream_close(&h.stream, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

static int make_gzip(uv_loop_t *loop, void *mem)
{
    return rw_gzip_init(loop, mem, 6, false, NULL);
}

static size_t gunzip(const char *in, size_t n, char *out, size_t cap)
{
    z_stream z = {0};
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    int r = inflate(&z, Z_SYNC_FLUSH);
    assert_true(r == Z_STREAM_END || r == Z_OK);
    size_t got = cap - z.avail_out;
    inflateEnd(&z);
    return got;
}

static void gzip_round_trips_through_zlib(void **state)
{
    size_t n = 3 * 1000 * 1000;
    char *in = malloc(n), *back = malloc(n + 1);
    srand(7);
    for (size_t i = 0; i < n; i++)
        in[i] = "abcdefgh \n{}:,"[rand() % 14];
    size_t cuts[100];
    for (int i = 0; i < 100; i++)
        cuts[i] = (size_t)i * 29000;
    rw_gzip_t g;
    collect_t c;
    assert_int_equal(through(make_gzip, &g, in, n, cuts, 100, &c), 0);
    assert_true(c.len < n * 6 / 10);           /* 14 symbols: ~3.8 bits each */
    assert_memory_equal(c.out, "\x1f\x8b", 2); /* gzip magic */
    assert_int_equal(gunzip(c.out, c.len, back, n + 1), n);
    assert_memory_equal(back, in, n);
    free(c.out);
    free(in);
    free(back);
}

static void gzip_sync_flush_makes_each_write_readable(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_gzip_t g;
    assert_int_equal(rw_gzip_init(&loop, &g, -1, true, NULL), 0);
    assert_int_equal(rw_gzip_init(&loop, &g, 12, true, NULL), UV_EINVAL);
    collect_t c = {0};
    g.stream.data = &c;
    rw_stream_listen(&g.stream, &col_events);
    rw_readable_resume(&g.stream);
    run_bounded(&loop, 100);
    rw_writable_write(&g.stream, rw_chunk_static("{\"line\":1}\n", 11));
    char back[64];
    assert_int_equal(gunzip(c.out, c.len, back, sizeof back), 11);
    assert_memory_equal(back, "{\"line\":1}\n", 11);
    free(c.out);
    rw_stream_close(&g.stream, NULL);
    run_bounded(&loop, 100);
    finish_loop(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decoder_every_split_same_output),
        cmocka_unit_test(decoder_keeps_trailers_and_does_not_copy),
        cmocka_unit_test(decoder_malformed_gives_distinct_errors),
        cmocka_unit_test(encoder_frames_without_copy_and_sends_trailers),
        cmocka_unit_test(encoder_then_decoder_round_trip),
        cmocka_unit_test(framer_every_split_same_lines),
        cmocka_unit_test(framer_long_line_and_bad_json_fail),
        cmocka_unit_test(framer_codec_errors_and_decodes_in_place),
        cmocka_unit_test(serializer_writes_lines_and_frees_objects),
        cmocka_unit_test(limit_fails_past_n_bytes),
        cmocka_unit_test(sha256_passes_through_and_digests),
        cmocka_unit_test(gzip_round_trips_through_zlib),
        cmocka_unit_test(gzip_sync_flush_makes_each_write_readable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
