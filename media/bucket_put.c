/* The put stream: a writable whose bytes go through the stream library's
 * SHA-256 pass-through into a file writable on the bucket's tmp/, committed
 * (metadata, fsync, rename, directory fsync) on the threadpool before the put
 * emits finish. */
#include "internal.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static void put_start_teardown(rw_bucket_put_t *put);

/* ---- the internal pipeline: sha -> file ---------------------------------------------- */

static void on_sha_drain(rw_stream_t *s)
{
    rw_bucket_put_t *put = s->data;
    if (put->drain_wait) {
        put->drain_wait = false;
        rw_writable_write_done(&put->stream, 0);
    }
}

static const rw_stream_events_t sha_events = {.on_drain = on_sha_drain};

static void on_pipeline_done(rw_pipeline_t *p, int err)
{
    rw_bucket_put_t *put = p->data;
    if (err == 0 && rw_sha256_digest(&put->sha, NULL, put->meta.sha256) != 0)
        err = RW_ECRYPTO;
    if (err != 0 && put->err == 0)
        put->err = err;
    if (err != 0) {
        /* Whatever the put waits for fails with the pipeline's error. */
        if (put->drain_wait) {
            put->drain_wait = false;
            rw_writable_write_done(&put->stream, err);
        } else if (!rw_stream_destroyed(&put->stream)) {
            rw_stream_destroy(&put->stream, err);
        }
    }
    put_start_teardown(put);
}

/* Runs on the threadpool: commit the file, or throw it away. */
static void put_work(uv_work_t *w)
{
    rw_bucket_put_t *put = w->data;
    if (put->err == 0 && put->final_wait) {
        put->meta.size = put->written;
        put->err =
            rw__bucket_commit(put->bucket, put->tmp_name, put->key, put->key_len, &put->meta);
        put->committed = put->err == 0;
    } else {
        rw__bucket_discard(put->bucket, put->tmp_name);
    }
}

static void put_work_done(uv_work_t *w, int status)
{
    rw_bucket_put_t *put = w->data;
    if (put->final_wait) {
        put->final_wait = false;
        rw_writable_final_done(&put->stream, put->committed ? 0 : put->err ? put->err : status);
    }
    put->ref_held = false;
    rw_stream_unref(&put->stream); /* last: may complete the put's close */
}

static void on_internal_closed(rw_stream_t *s)
{
    rw_bucket_put_t *put = s->data;
    if (--put->open_streams > 0)
        return;
    /* Every internal stream is closed, so the file writable's fd is closed
     * and no open of tmp_name can still be in flight: the file is ours to
     * rename or remove. */
    put->work.data = put;
    if (uv_queue_work(rw_stream_loop(&put->stream), &put->work, put_work, put_work_done) != 0) {
        /* Cannot happen with a valid loop; fail rather than hang. */
        rw__bucket_discard(put->bucket, put->tmp_name);
        if (put->final_wait) {
            put->final_wait = false;
            rw_writable_final_done(&put->stream, put->err ? put->err : UV_EIO);
        }
        put->ref_held = false;
        rw_stream_unref(&put->stream);
    }
}

static void put_start_teardown(rw_bucket_put_t *put)
{
    rw_stream_listen(&put->sha.stream, NULL);
    int n = put->open_streams;
    /* open_streams counts down in the close callbacks, which never run
     * inside rw_stream_close: read it before. */
    if (n >= 1)
        rw_stream_close(&put->sha.stream, on_internal_closed);
    if (n >= 2)
        rw_stream_close(&put->file.stream, on_internal_closed);
}

/* First write or end: set up the internal streams. On failure the streams
 * made so far are closed (the put's reference keeps it open meanwhile). */
static int put_start(rw_bucket_put_t *put)
{
    static atomic_uint seq;
    uv_loop_t *loop = rw_stream_loop(&put->stream);
    unsigned char rnd[8] = {0};
    if (uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL) != 0)
        memset(rnd, 0, sizeof rnd); /* the pid and counter still make it unique here */
    snprintf(put->tmp_name, sizeof put->tmp_name, "%ld-%u-%02x%02x%02x%02x%02x%02x%02x%02x.part",
             (long)getpid(), atomic_fetch_add(&seq, 1), rnd[0], rnd[1], rnd[2], rnd[3], rnd[4],
             rnd[5], rnd[6], rnd[7]);
    const char *root = rw_bucket_dir(put->bucket);
    size_t plen = strlen(root) + strlen(put->tmp_name) + 6;
    char *path = malloc(plen);
    if (path == NULL)
        return UV_ENOMEM;
    snprintf(path, plen, "%s/tmp/%s", root, put->tmp_name);
    put->started = true;
    put->ref_held = true;
    rw_stream_ref(&put->stream);
    int rc = rw_sha256_init(loop, &put->sha, NULL);
    if (rc == 0) {
        put->open_streams = 1;
        put->sha.stream.data = put;
        /* O_EXCL: the name is fresh, and a link planted under it is not
         * followed (O_CREAT | O_EXCL never follows the last component). */
        rc = rw_file_writable_open(loop, &put->file, path,
                                   UV_FS_O_WRONLY | UV_FS_O_CREAT | UV_FS_O_EXCL, 0644, NULL);
    }
    free(path);
    if (rc == 0) {
        put->open_streams = 2;
        put->file.stream.data = put;
        put->pipeline.data = put;
        rw_stream_listen(&put->sha.stream, &sha_events);
        rc = rw_pipeline(&put->pipeline, on_pipeline_done, &put->sha.stream, &put->file.stream,
                         NULL);
    }
    if (rc != 0) {
        put->err = rc;
        if (put->open_streams > 0) {
            put_start_teardown(put);
        } else {
            put->ref_held = false;
            rw_stream_unref(&put->stream);
        }
    }
    return rc;
}

/* ---- the put's writable side ----------------------------------------------------------------- */

static void put_write(rw_stream_t *s, rw_chunk_t chunk)
{
    rw_bucket_put_t *put = container_of(s, rw_bucket_put_t, stream);
    int rc = put->started ? put->err : put_start(put);
    if (rc == 0 && chunk.len > put->max_bytes - put->written)
        rc = RW_ELIMIT;
    if (rc != 0) {
        rw_chunk_release(&chunk);
        rw_writable_write_done(s, rc);
        return;
    }
    put->written += chunk.len;
    rc = rw_writable_write(&put->sha.stream, chunk);
    if (rc == 0)
        put->drain_wait = true; /* on_sha_drain (or the pipeline's failure) completes it */
    else
        rw_writable_write_done(s, rc < 0 ? rc : 0);
}

static void put_final(rw_stream_t *s)
{
    rw_bucket_put_t *put = container_of(s, rw_bucket_put_t, stream);
    int rc = put->started ? put->err : put_start(put);
    if (rc != 0) {
        rw_writable_final_done(s, rc);
        return;
    }
    put->final_wait = true;
    /* An error here means the pipeline failed already; its done completes. */
    rw_writable_end(&put->sha.stream);
}

static void put_destroy(rw_stream_t *s, int err)
{
    rw_bucket_put_t *put = container_of(s, rw_bucket_put_t, stream);
    /* Destroyed before the internal pipeline is over (the body's source
     * failed, the user closed it, a write failed): stop the pipeline, whose
     * done removes the temporary file. Once the commit runs it completes. */
    if (put->started && put->open_streams == 2 && !rw_stream_destroyed(&put->sha.stream))
        rw_stream_destroy(&put->sha.stream, err ? err : RW_EPREMATURE);
}

static const rw_stream_impl_t put_impl = {
    .write = put_write, .final = put_final, .destroy = put_destroy};

/* ---- setting up ---------------------------------------------------------------------------------
 */

static bool user_name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > RW_BUCKET_NAME_MAX)
        return false;
    return strspn(n, "abcdefghijklmnopqrstuvwxyz0123456789-_") == len;
}

static int fill_meta(rw_bucket_meta_t *m, const rw_bucket_put_opts_t *o)
{
    memset(m, 0, sizeof *m);
    const char *type = o && o->content_type ? o->content_type : RW_BUCKET_DEFAULT_TYPE;
    size_t tn = strlen(type);
    if (tn == 0 || tn > RW_BUCKET_TYPE_MAX || !rw__bucket_field_ok(type, tn, false))
        return UV_EINVAL;
    memcpy(m->content_type, type, tn + 1);
    if (o && o->cache_control) {
        size_t cn = strlen(o->cache_control);
        if (cn > RW_BUCKET_CACHE_MAX || !rw__bucket_field_ok(o->cache_control, cn, false))
            return UV_EINVAL;
        memcpy(m->cache_control, o->cache_control, cn + 1);
    }
    size_t n = o ? o->n_user : 0, used = 0, total = 0;
    if (n > RW_BUCKET_USER_COUNT)
        return UV_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const rw_bucket_kv_t *kv = &o->user[i];
        if (kv->name == NULL || kv->value == NULL || !user_name_ok(kv->name))
            return UV_EINVAL;
        size_t nn = strlen(kv->name), vn = strlen(kv->value);
        total += nn + vn;
        if (total > RW_BUCKET_USER_MAX || !rw__bucket_field_ok(kv->value, vn, true))
            return UV_EINVAL;
        for (size_t k = 0; k < i; k++)
            if (strcmp(o->user[k].name, kv->name) == 0)
                return UV_EINVAL;
        memcpy(m->user + used, kv->name, nn + 1);
        used += nn + 1;
        memcpy(m->user + used, kv->value, vn + 1);
        used += vn + 1;
    }
    m->n_user = n;
    return 0;
}

int rw_bucket_put_init(uv_loop_t *loop, rw_bucket_put_t *put, rw_bucket_t *b, const char *key,
                       size_t len, const rw_bucket_put_opts_t *opts,
                       const rw_stream_opts_t *opts_stream)
{
    if (put == NULL || b == NULL || rw_bucket_key_check(key, len, NULL) != 0)
        return UV_EINVAL;
    memset(put, 0, sizeof *put);
    int rc = fill_meta(&put->meta, opts);
    if (rc != 0)
        return rc;
    rw_stream_opts_t so = {0};
    if (opts_stream)
        so = *opts_stream;
    so.readable_objects = so.writable_objects = false;
    rc = rw_writable_init(loop, &put->stream, &put_impl, &so);
    if (rc != 0)
        return rc;
    put->bucket = b;
    put->max_bytes = opts && opts->max_bytes ? opts->max_bytes : RW_BUCKET_DEFAULT_MAX_BYTES;
    memcpy(put->key, key, len);
    put->key[len] = '\0';
    put->key_len = len;
    return 0;
}

const rw_bucket_meta_t *rw_bucket_put_meta(const rw_bucket_put_t *put)
{
    return put->committed && rw_writable_finished(&put->stream) ? &put->meta : NULL;
}
