/* Pass-through transforms that look at the bytes: the byte limit, SHA-256
 * (OpenSSL EVP) and gzip (zlib). */
#include "internal.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <zlib.h>

/* ---- byte limit ---- */

static void limit_write(rw_stream_t *s, rw_chunk_t c)
{
    rw_limit_t *l = rw__container_of(s, rw_limit_t, stream);
    if (c.len > l->limit - l->seen) {
        rw_chunk_release(&c);
        rw_transform_done(s, RW_ELIMIT);
        return;
    }
    l->seen += c.len;
    rw_readable_push(s, c);
    rw_transform_done(s, 0);
}

static const rw_stream_impl_t limit_impl = {.write = limit_write};

int rw_limit_init(uv_loop_t *loop, rw_limit_t *l, uint64_t limit, const rw_stream_opts_t *opts)
{
    rw_stream_opts_t o = rw__bytes_opts(opts);
    int err = rw_transform_init(loop, &l->stream, &limit_impl, &o);
    if (err == 0) {
        l->limit = limit;
        l->seen = 0;
    }
    return err;
}

uint64_t rw_limit_count(const rw_limit_t *l)
{
    return l->seen;
}

/* ---- SHA-256 ---- */

static void sha_write(rw_stream_t *s, rw_chunk_t c)
{
    rw_sha256_t *h = rw__container_of(s, rw_sha256_t, stream);
    if (EVP_DigestUpdate(h->md, c.base, c.len) != 1) {
        rw_chunk_release(&c);
        rw_transform_done(s, RW_ECRYPTO);
        return;
    }
    rw_readable_push(s, c);
    rw_transform_done(s, 0);
}

static void sha_flush(rw_stream_t *s)
{
    rw_sha256_t *h = rw__container_of(s, rw_sha256_t, stream);
    unsigned int n = 0;
    int ok = EVP_DigestFinal_ex(h->md, h->digest, &n) == 1 && n == sizeof h->digest;
    h->have_digest = ok;
    rw_transform_flush_done(s, ok ? 0 : RW_ECRYPTO);
}

static void sha_destroy(rw_stream_t *s, int err)
{
    rw_sha256_t *h = rw__container_of(s, rw_sha256_t, stream);
    EVP_MD_CTX_free(h->md); /* the digest, if any, stays readable */
    h->md = NULL;
}

static const rw_stream_impl_t sha_impl = {
    .write = sha_write, .final = sha_flush, .destroy = sha_destroy};

int rw_sha256_init(uv_loop_t *loop, rw_sha256_t *h, const rw_stream_opts_t *opts)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return RW_ECRYPTO;
    }
    rw_stream_opts_t o = rw__bytes_opts(opts);
    int err = rw_transform_init(loop, &h->stream, &sha_impl, &o);
    if (err != 0) {
        EVP_MD_CTX_free(md);
        return err;
    }
    h->md = md;
    h->have_digest = false;
    return 0;
}

int rw_sha256_digest(const rw_sha256_t *h, unsigned char out[32], char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    if (!h->have_digest)
        return UV_EAGAIN;
    for (int i = 0; i < 32; i++) {
        if (out != NULL)
            out[i] = h->digest[i];
        if (hex != NULL) {
            hex[2 * i] = digits[h->digest[i] >> 4];
            hex[2 * i + 1] = digits[h->digest[i] & 15];
        }
    }
    if (hex != NULL)
        hex[64] = 0;
    return 0;
}

/* ---- gzip ---- */

#define GZIP_OUT 16384

/* Pushes what deflate wrote since the last push (a slice: the buffer is
 * shared with the chunks already out, never rewritten under them). */
static void gzip_emit(rw_gzip_t *g)
{
    z_stream *z = g->z;
    size_t used = (size_t)((char *)z->next_out - g->out->base);
    if (used > g->out_start) {
        rw_readable_push(&g->stream, rw_chunk_of(g->out, g->out_start, used - g->out_start));
        g->out_start = used;
    }
}

/* Runs deflate until it has consumed its input (and, for flush modes, has
 * nothing more to say). Returns 0 or RW_EZLIB / UV_ENOMEM. */
static int gzip_run(rw_gzip_t *g, int flush)
{
    z_stream *z = g->z;
    for (;;) {
        if (g->out == NULL || z->avail_out == 0) {
            if (g->out != NULL)
                gzip_emit(g);
            rw_buf_unref(g->out);
            g->out = rw_buf_new(GZIP_OUT);
            if (g->out == NULL)
                return UV_ENOMEM;
            g->out_start = 0;
            z->next_out = (Bytef *)g->out->base;
            z->avail_out = GZIP_OUT;
        }
        int r = deflate(z, flush);
        if (r == Z_STREAM_END)
            return 0;
        if (r != Z_OK && r != Z_BUF_ERROR)
            return RW_EZLIB;
        /* Done when the input is used up and deflate did not fill the output:
         * for Z_FINISH only Z_STREAM_END says so. */
        if (flush != Z_FINISH && z->avail_in == 0 && z->avail_out > 0)
            return 0;
        if (r == Z_BUF_ERROR && z->avail_out > 0)
            return RW_EZLIB; /* no progress possible with room left: a bug */
    }
}

static void gzip_write(rw_stream_t *s, rw_chunk_t c)
{
    rw_gzip_t *g = rw__container_of(s, rw_gzip_t, stream);
    z_stream *z = g->z;
    z->next_in = (Bytef *)c.base;
    z->avail_in = (uInt)c.len; /* chunks above 4 GiB are not a thing here */
    int err =
        c.len > UINT32_MAX ? UV_EINVAL : gzip_run(g, g->sync_flush ? Z_SYNC_FLUSH : Z_NO_FLUSH);
    z->next_in = NULL; /* deflate keeps its own copy of the window */
    rw_chunk_release(&c);
    if (err == 0 && g->sync_flush)
        gzip_emit(g);
    rw_transform_done(s, err);
}

static void gzip_flush(rw_stream_t *s)
{
    rw_gzip_t *g = rw__container_of(s, rw_gzip_t, stream);
    int err = gzip_run(g, Z_FINISH);
    if (err == 0)
        gzip_emit(g);
    rw_transform_flush_done(s, err);
}

static void gzip_destroy(rw_stream_t *s, int err)
{
    rw_gzip_t *g = rw__container_of(s, rw_gzip_t, stream);
    if (g->z != NULL) {
        deflateEnd(g->z);
        free(g->z);
        g->z = NULL;
    }
    rw_buf_unref(g->out);
    g->out = NULL;
}

static const rw_stream_impl_t gzip_impl = {
    .write = gzip_write, .final = gzip_flush, .destroy = gzip_destroy};

int rw_gzip_init(uv_loop_t *loop, rw_gzip_t *g, int level, bool sync_flush,
                 const rw_stream_opts_t *opts)
{
    if (level < -1 || level > 9)
        return UV_EINVAL;
    z_stream *z = calloc(1, sizeof(*z));
    if (z == NULL)
        return UV_ENOMEM;
    /* windowBits 15 + 16: gzip header and trailer instead of zlib's. */
    int r = deflateInit2(z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
    if (r != Z_OK) {
        free(z);
        return r == Z_MEM_ERROR ? UV_ENOMEM : RW_EZLIB;
    }
    rw_stream_opts_t o = rw__bytes_opts(opts);
    int err = rw_transform_init(loop, &g->stream, &gzip_impl, &o);
    if (err != 0) {
        deflateEnd(z);
        free(z);
        return err;
    }
    g->z = z;
    g->out = NULL;
    g->out_start = 0;
    g->sync_flush = sync_flush;
    return 0;
}
