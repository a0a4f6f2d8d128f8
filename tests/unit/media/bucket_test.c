/* The filesystem bucket: key rules, no escape from the objects tree (each
 * attack, through openat2 and through the component walk), put/get round
 * trips through streams, metadata, failed and crashed puts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "internal.h" /* media/: the bucket's fds and openat2 state */
#include "reelway/bucket.h"
#include "rw_http_client.h" /* rw_test_tmpdir, rw_test_rmtree */

/* ---- fixtures ------------------------------------------------------------------ */

enum { MODE_AUTO, MODE_WALK };
static int mode_auto = MODE_AUTO, mode_walk = MODE_WALK;

typedef struct {
    char dir[512];     /* T */
    char root[600];    /* T/bucket */
    char outside[600]; /* T/outside, holding "secret" */
    rw_bucket_t *b;
    int mode;
} fx_t;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    p[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return p;
}

static int fx_setup(void **state)
{
    fx_t *fx = calloc(1, sizeof *fx);
    fx->mode = *state ? *(int *)*state : MODE_AUTO;
    if (rw_test_tmpdir(fx->dir, sizeof fx->dir, "rw-bucket") != 0)
        return -1;
    snprintf(fx->root, sizeof fx->root, "%s/bucket", fx->dir);
    snprintf(fx->outside, sizeof fx->outside, "%s/outside", fx->dir);
    mkdir(fx->outside, 0755);
    char p[700];
    snprintf(p, sizeof p, "%s/secret", fx->outside);
    write_file(p, "SECRET");
    rw_bucket_opts_t o = {.create = true, .no_openat2 = fx->mode == MODE_WALK};
    char why[256];
    int rc = rw_bucket_open(fx->root, &o, &fx->b, why, sizeof why);
    if (rc != 0) {
        fprintf(stderr, "rw_bucket_open: %s\n", why);
        return -1;
    }
    *state = fx;
    return 0;
}

static int fx_teardown(void **state)
{
    fx_t *fx = *state;
    rw_bucket_free(fx->b);
    rw_test_rmtree(fx->dir);
    free(fx);
    return 0;
}

/* A path under the bucket's objects tree or its tmp dir. */
static void obj_path(const fx_t *fx, char *buf, size_t len, const char *rel)
{
    snprintf(buf, len, "%s/objects/%s", fx->root, rel);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static int tmp_entries(const fx_t *fx)
{
    char p[700];
    snprintf(p, sizeof p, "%s/tmp", fx->root);
    return count_entries(p);
}

static void sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char d[32];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(data, len, d, &n, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static char *random_bytes(size_t n)
{
    char *p = malloc(n ? n : 1);
    assert_non_null(p);
    uint64_t x = 0x9e3779b97f4a7c15ull ^ n;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = (char)(x >> 24);
    }
    return p;
}

/* ---- a loop that runs a put from memory ------------------------------------------ */

/* A readable over memory, pushing `chunk` bytes per read; fails with
 * fail_err once fail_after bytes went out (a client that goes away). */
typedef struct {
    rw_stream_t stream;
    const char *data;
    size_t len, pos, chunk, fail_after;
    int fail_err;
} mem_src_t;

static void mem_read(rw_stream_t *s, size_t size)
{
    mem_src_t *m = (mem_src_t *)s;
    if (m->fail_err && m->pos >= m->fail_after) {
        rw_stream_destroy(s, m->fail_err);
        return;
    }
    if (m->pos == m->len) {
        rw_readable_end(s);
        return;
    }
    size_t n = m->len - m->pos < m->chunk ? m->len - m->pos : m->chunk;
    rw_chunk_t c;
    assert_int_equal(rw_chunk_copy(&c, m->data + m->pos, n), 0);
    m->pos += n;
    rw_readable_push(s, c);
}

static const rw_stream_impl_t mem_impl = {.read = mem_read};

typedef struct {
    bool done;
    int err;
    int closed;
} run_t;

static void on_put_done(rw_pipeline_t *p, int err)
{
    run_t *r = p->data;
    r->done = true;
    r->err = err;
}

static void on_closed(rw_stream_t *s)
{
    run_t *r = s->data;
    r->closed++;
}

/* Runs the loop until *flag, for at most 60 s and 10 million iterations. */
static void run_until(uv_loop_t *loop, const bool *flag)
{
    uint64_t deadline = uv_hrtime() + 60ull * 1000000000ull;
    for (int i = 0; i < 10000000 && !*flag && uv_hrtime() < deadline; i++)
        uv_run(loop, UV_RUN_ONCE);
    assert_true(*flag);
}

static void run_closed(uv_loop_t *loop, run_t *r, int want)
{
    uint64_t deadline = uv_hrtime() + 60ull * 1000000000ull;
    for (int i = 0; i < 10000000 && r->closed < want && uv_hrtime() < deadline; i++)
        uv_run(loop, UV_RUN_ONCE);
    assert_int_equal(r->closed, want);
}

static void loop_finish(uv_loop_t *loop)
{
    assert_int_equal(rw_stream_loop_close(loop), 0);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

/* Puts data under key through a pipeline (memory -> put), chunk bytes at a
 * time; fail_after/fail_err make the source fail midway. Returns the
 * pipeline's error; on 0 copies the committed metadata into *meta. */
static int put_mem(rw_bucket_t *b, const char *key, const char *data, size_t len, size_t chunk,
                   const rw_bucket_put_opts_t *o, size_t fail_after, int fail_err,
                   rw_bucket_meta_t *meta)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    run_t r = {0};
    mem_src_t src = {
        .data = data, .len = len, .chunk = chunk, .fail_after = fail_after, .fail_err = fail_err};
    assert_int_equal(rw_readable_init(&loop, &src.stream, &mem_impl, NULL), 0);
    rw_bucket_put_t *put = malloc(sizeof *put);
    assert_int_equal(rw_bucket_put_init(&loop, put, b, key, strlen(key), o, NULL), 0);
    src.stream.data = put->stream.data = &r;
    rw_pipeline_t p = {.data = &r};
    assert_int_equal(rw_pipeline(&p, on_put_done, &src.stream, &put->stream, NULL), 0);
    run_until(&loop, &r.done);
    if (r.err == 0) {
        assert_non_null(rw_bucket_put_meta(put));
        if (meta)
            *meta = *rw_bucket_put_meta(put);
    } else {
        assert_null(rw_bucket_put_meta(put));
    }
    rw_stream_close(&src.stream, on_closed);
    rw_stream_close(&put->stream, on_closed);
    run_closed(&loop, &r, 2);
    free(put);
    loop_finish(&loop);
    return r.err;
}

/* Reads the object at key whole through rw_bucket_read_open. */
static int get_all(rw_bucket_t *b, const char *key, size_t klen, char **data,
                   rw_bucket_meta_t *meta)
{
    uv_file fd;
    int rc = rw_bucket_read_open(b, key, klen, &fd, meta);
    if (rc != 0) {
        assert_int_equal(fd, -1);
        return rc;
    }
    char *p = malloc(meta->size + 1);
    assert_non_null(p);
    size_t got = 0;
    while (got < meta->size) {
        ssize_t n = pread(fd, p + got, meta->size - got, (off_t)got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    char extra;
    assert_int_equal(pread(fd, &extra, 1, (off_t)got), 0);
    close(fd);
    *data = p;
    return 0;
}

/* ---- key rules -------------------------------------------------------------------------- */

static void key_check_case(const char *key, size_t len, bool ok, const char *reason_part)
{
    const char *why = "unset";
    int rc = rw_bucket_key_check(key, len, &why);
    if (ok) {
        if (rc != 0)
            fprintf(stderr, "key '%.*s' refused: %s\n", (int)len, key, why);
        assert_int_equal(rc, 0);
        assert_null(why);
    } else {
        assert_int_equal(rc, UV_EINVAL);
        assert_non_null(why);
        if (reason_part && !strstr(why, reason_part))
            fprintf(stderr, "key '%.*s': reason '%s'\n", (int)len, key, why);
        if (reason_part)
            assert_non_null(strstr(why, reason_part));
    }
}

#define KEY_OK(k) key_check_case(k, sizeof(k) - 1, true, NULL)
#define KEY_BAD(k, why) key_check_case(k, sizeof(k) - 1, false, why)

static void key_valid_forms(void **state)
{
    KEY_OK("a");
    KEY_OK("reels/abc/720.webp");
    KEY_OK("a..b/c...d");
    KEY_OK(".hidden/..x/x..");
    KEY_OK("%2e%2e/x"); /* a file named "%2e%2e": decoding is the caller's */
    KEY_OK("sp ace/+plus/~tilde/'q'");
    KEY_OK("\xc3\xa9t\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x8e\xac.webp"); /* é, €, 🎬 */
    char k[RW_BUCKET_KEY_MAX];
    for (size_t i = 0; i < sizeof k; i++)
        k[i] = (i % 200 == 199) ? '/' : 'x';
    key_check_case(k, sizeof k, true, NULL);
    memset(k, 'y', RW_BUCKET_SEGMENT_MAX);
    key_check_case(k, RW_BUCKET_SEGMENT_MAX, true, NULL);
}

static void key_refuses_empty_and_long(void **state)
{
    KEY_BAD("", "empty");
    key_check_case(NULL, 0, false, "empty");
    char k[RW_BUCKET_KEY_MAX + 1];
    memset(k, 'x', sizeof k);
    for (size_t i = 100; i < sizeof k; i += 100)
        k[i] = '/';
    key_check_case(k, sizeof k, false, "1024");
    memset(k, 'y', RW_BUCKET_SEGMENT_MAX + 1);
    key_check_case(k, RW_BUCKET_SEGMENT_MAX + 1, false, "255");
}

static void key_refuses_dot_dot(void **state)
{
    KEY_BAD("..", "'..'");
    KEY_BAD("../x", "'..'");
    KEY_BAD("a/../../x", "'..'");
    KEY_BAD("a/..", "'..'");
}

static void key_refuses_dot(void **state)
{
    KEY_BAD(".", "'.'");
    KEY_BAD("a/./b", "'.'");
    KEY_BAD("./a", "'.'");
}

static void key_refuses_absolute(void **state)
{
    KEY_BAD("/etc/passwd", "starts with '/'");
    KEY_BAD("/", "starts with '/'");
}

static void key_refuses_empty_segments(void **state)
{
    KEY_BAD("a//b", "empty segment");
    KEY_BAD("a/", "ends with '/'");
}

static void key_refuses_nul(void **state)
{
    KEY_BAD("a\0b", "NUL");
    KEY_BAD("a/\0/etc/passwd", "NUL");
}

static void key_refuses_backslash_and_controls(void **state)
{
    KEY_BAD("a\\b", "backslash");
    KEY_BAD("..\\x", "backslash");
    KEY_BAD("a\x01"
            "b",
            "control");
    KEY_BAD("a\nb", "control");
    KEY_BAD("a\x7f", "control");
}

static void key_refuses_bad_utf8(void **state)
{
    KEY_BAD("\x80", "UTF-8");               /* lone continuation */
    KEY_BAD("\xc0\xaf", "UTF-8");           /* overlong '/' */
    KEY_BAD("\xc0\xae\xc0\xae/x", "UTF-8"); /* overlong ".." */
    KEY_BAD("\xe0\x80\xaf", "UTF-8");       /* overlong, 3 bytes */
    KEY_BAD("\xed\xa0\x80", "UTF-8");       /* surrogate */
    KEY_BAD("\xf4\x90\x80\x80", "UTF-8");   /* past U+10FFFF */
    KEY_BAD("\xe2\x82", "UTF-8");           /* truncated */
    KEY_BAD("\xff", "UTF-8");
}

static void content_addressed_keys(void **state)
{
    char sha[65];
    sha256_hex("abc", 3, sha);
    char key[200];
    snprintf(key, sizeof key, "reels/r1/%s.webp", sha);
    assert_true(rw_bucket_key_content_addressed(key, strlen(key), sha));
    snprintf(key, sizeof key, "%s", sha);
    assert_true(rw_bucket_key_content_addressed(key, strlen(key), sha));
    /* Another object's digest, a prefix of it, upper case: no. */
    char other[65];
    sha256_hex("abd", 3, other);
    snprintf(key, sizeof key, "reels/r1/%s.webp", other);
    assert_false(rw_bucket_key_content_addressed(key, strlen(key), sha));
    snprintf(key, sizeof key, "reels/%.63s", sha);
    assert_false(rw_bucket_key_content_addressed(key, strlen(key), sha));
    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(sha[i] >= 'a' && sha[i] <= 'f' ? sha[i] - 32 : sha[i]);
    snprintf(key, sizeof key, "x/%s", upper);
    assert_false(rw_bucket_key_content_addressed(key, strlen(key), sha));
    assert_false(rw_bucket_key_content_addressed("short", 5, sha));
}

/* ---- no escape: each attack ---------------------------------------------------------------- */

/* Checks the resolution path in use: openat2 on this kernel in auto mode,
 * the walk when forced. */
static void assert_mode(const fx_t *fx)
{
    int have = atomic_load(&fx->b->have_openat2);
    if (fx->mode == MODE_WALK)
        assert_int_equal(have, 0);
    else
        assert_int_equal(have, 1);
}

static void expect_open(fx_t *fx, const char *key, size_t len, int want)
{
    uv_file fd = 12345;
    rw_bucket_meta_t m;
    int rc = rw_bucket_read_open(fx->b, key, len, &fd, &m);
    if (rc != want)
        fprintf(stderr, "key '%.*s': %s, want %s\n", (int)len, key, rw_err_name(rc),
                rw_err_name(want));
    assert_int_equal(rc, want);
    assert_int_equal(fd, -1);
}

/* One good object so that the resolution path is exercised and recorded. */
static void put_one(fx_t *fx, const char *key, const char *text)
{
    rw_bucket_meta_t m;
    assert_int_equal(put_mem(fx->b, key, text, strlen(text), 4, NULL, 0, 0, &m), 0);
    char *back;
    assert_int_equal(get_all(fx->b, key, strlen(key), &back, &m), 0);
    assert_memory_equal(back, text, strlen(text));
    free(back);
    assert_mode(fx);
}

static void escape_dot_dot(void **state)
{
    fx_t *fx = *state;
    put_one(fx, "a/x", "inside");
    expect_open(fx, "../outside/secret", 17, UV_EINVAL);
    expect_open(fx, "../x", 4, UV_EINVAL);
    expect_open(fx, "a/../../x", 9, UV_EINVAL);
    expect_open(fx, "a/../../../outside/secret", 25, UV_EINVAL);
}

static void escape_absolute(void **state)
{
    fx_t *fx = *state;
    put_one(fx, "a/x", "inside");
    char key[700];
    snprintf(key, sizeof key, "%s/secret", fx->outside);
    expect_open(fx, key, strlen(key), UV_EINVAL);
    expect_open(fx, "/etc/passwd", 11, UV_EINVAL);
}

static void escape_empty_and_dot_segments(void **state)
{
    fx_t *fx = *state;
    put_one(fx, "a/b", "inside");
    expect_open(fx, "a//b", 4, UV_EINVAL);
    expect_open(fx, "a/./b", 5, UV_EINVAL);
    expect_open(fx, "./a/b", 5, UV_EINVAL);
}

static void escape_nul(void **state)
{
    fx_t *fx = *state;
    put_one(fx, "a", "inside");
    /* "a\0/../../outside/secret": C would stop at the NUL; the key does not. */
    expect_open(fx, "a\0/../../outside/secret", 23, UV_EINVAL);
    expect_open(fx, "a\0", 2, UV_EINVAL);
}

static void escape_encoded_is_literal(void **state)
{
    fx_t *fx = *state;
    put_one(fx, "a", "inside");
    /* Not decoded here: "%2e%2e" is a name like any other, and absent. */
    expect_open(fx, "%2e%2e/outside/secret", 21, RW_ENOTFOUND);
    expect_open(fx, "..%2foutside%2fsecret", 21, RW_ENOTFOUND);
}

static void escape_symlink_leaf(void **state)
{
    fx_t *fx = *state;
    put_one(fx, "a", "inside");
    char link[700], target[700];
    obj_path(fx, link, sizeof link, "evil");
    snprintf(target, sizeof target, "%s/secret", fx->outside);
    assert_int_equal(symlink(target, link), 0);
    expect_open(fx, "evil", 4, UV_ELOOP);
    /* A relative link climbing out is no different. */
    obj_path(fx, link, sizeof link, "evil2");
    assert_int_equal(symlink("../../outside/secret", link), 0);
    expect_open(fx, "evil2", 5, UV_ELOOP);
}

static void escape_symlink_dir(void **state)
{
    fx_t *fx = *state;
    put_one(fx, "a", "inside");
    char link[700];
    obj_path(fx, link, sizeof link, "dirlink");
    assert_int_equal(symlink(fx->outside, link), 0);
    expect_open(fx, "dirlink/secret", 14, UV_ELOOP);
    /* Deeper: a link as a middle component. */
    put_one(fx, "d1/d2/x", "inside");
    obj_path(fx, link, sizeof link, "d1/up");
    assert_int_equal(symlink("../..", link), 0);
    expect_open(fx, "d1/up/outside/secret", 20, UV_ELOOP);
}

static void escape_symlink_within_root_refused(void **state)
{
    fx_t *fx = *state;
    /* Even a link that stays inside is refused: no links at all. */
    put_one(fx, "real/x", "inside");
    char link[700];
    obj_path(fx, link, sizeof link, "alias");
    assert_int_equal(symlink("real", link), 0);
    expect_open(fx, "alias/x", 7, UV_ELOOP);
    obj_path(fx, link, sizeof link, "real/y");
    assert_int_equal(symlink("x", link), 0);
    expect_open(fx, "real/y", 6, UV_ELOOP);
}

static void escape_put_through_symlink_dir(void **state)
{
    fx_t *fx = *state;
    put_one(fx, "a", "inside");
    char link[700];
    obj_path(fx, link, sizeof link, "dirlink");
    assert_int_equal(symlink(fx->outside, link), 0);
    int rc = put_mem(fx->b, "dirlink/planted", "x", 1, 1, NULL, 0, 0, NULL);
    assert_int_equal(rc, UV_ELOOP);
    char p[700];
    snprintf(p, sizeof p, "%s/planted", fx->outside);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(count_entries(fx->outside), 1);
    assert_int_equal(tmp_entries(fx), 0);
    /* Nor through a link as a deeper component that does not exist yet. */
    rc = put_mem(fx->b, "dirlink/new/planted", "x", 1, 1, NULL, 0, 0, NULL);
    assert_int_equal(rc, UV_ELOOP);
    assert_int_equal(count_entries(fx->outside), 1);
}

static void escape_put_over_symlink_leaf(void **state)
{
    fx_t *fx = *state;
    char link[700], target[700];
    obj_path(fx, link, sizeof link, "leaf");
    snprintf(target, sizeof target, "%s/secret", fx->outside);
    assert_int_equal(symlink(target, link), 0);
    /* The put replaces the link itself; the target is never written. */
    assert_int_equal(put_mem(fx->b, "leaf", "mine", 4, 2, NULL, 0, 0, NULL), 0);
    size_t n;
    char *s = read_whole(target, &n);
    assert_string_equal(s, "SECRET");
    free(s);
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    char *back;
    rw_bucket_meta_t m;
    assert_int_equal(get_all(fx->b, "leaf", 4, &back, &m), 0);
    assert_memory_equal(back, "mine", 4);
    free(back);
}

static void escape_remove_through_symlink(void **state)
{
    fx_t *fx = *state;
    put_one(fx, "a", "inside");
    char link[700], p[700];
    obj_path(fx, link, sizeof link, "dirlink");
    assert_int_equal(symlink(fx->outside, link), 0);
    assert_int_equal(rw_bucket_remove(fx->b, "dirlink/secret", 14), UV_ELOOP);
    snprintf(p, sizeof p, "%s/secret", fx->outside);
    assert_int_equal(access(p, F_OK), 0);
    assert_int_equal(rw_bucket_remove(fx->b, "../outside/secret", 17), UV_EINVAL);
    assert_int_equal(access(p, F_OK), 0);
}

static void special_files_are_not_objects(void **state)
{
    fx_t *fx = *state;
    put_one(fx, "dir/x", "inside");
    expect_open(fx, "dir", 3, RW_ENOTFOUND);
    char p[700];
    obj_path(fx, p, sizeof p, "fifo");
    assert_int_equal(mkfifo(p, 0644), 0);
    /* Opening a FIFO for reading would wait for a writer: it must not. */
    expect_open(fx, "fifo", 4, RW_ENOTFOUND);
    expect_open(fx, "missing", 7, RW_ENOTFOUND);
    expect_open(fx, "dir/x/under-a-file", 18, RW_ENOTFOUND);
}

/* ---- round trips ------------------------------------------------------------------------ */

static void put_get_round_trip(void **state)
{
    fx_t *fx = *state;
    size_t len = 300 * 1024 + 7;
    char *data = random_bytes(len);
    char sha[65];
    sha256_hex(data, len, sha);
    rw_bucket_meta_t m;
    time_t before = time(NULL);
    /* Odd chunk sizes: the bytes are hashed and written as they come. */
    assert_int_equal(put_mem(fx->b, "reels/abc/720.webp", data, len, 10007, NULL, 0, 0, &m), 0);
    assert_int_equal(m.size, len);
    assert_string_equal(m.sha256, sha);
    assert_string_equal(m.content_type, "application/octet-stream");
    assert_string_equal(m.cache_control, "");
    assert_true(m.mtime >= before && m.mtime <= time(NULL));
    char *back;
    rw_bucket_meta_t m2;
    assert_int_equal(get_all(fx->b, "reels/abc/720.webp", 18, &back, &m2), 0);
    assert_memory_equal(back, data, len);
    assert_int_equal(m2.size, len);
    assert_string_equal(m2.sha256, sha);
    assert_int_equal(m2.mtime, m.mtime);
    free(back);
    /* The object is a plain file at its key's path. */
    char p[700];
    obj_path(fx, p, sizeof p, "reels/abc/720.webp");
    size_t n;
    char *plain = read_whole(p, &n);
    assert_int_equal(n, len);
    assert_memory_equal(plain, data, len);
    free(plain);
    assert_int_equal(tmp_entries(fx), 0);
    free(data);
}

static void empty_object(void **state)
{
    fx_t *fx = *state;
    rw_bucket_meta_t m;
    assert_int_equal(put_mem(fx->b, "empty", "", 0, 1, NULL, 0, 0, &m), 0);
    assert_int_equal(m.size, 0);
    assert_string_equal(m.sha256,
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    char *back;
    assert_int_equal(get_all(fx->b, "empty", 5, &back, &m), 0);
    assert_int_equal(m.size, 0);
    free(back);
}

static void overwrite_is_atomic(void **state)
{
    fx_t *fx = *state;
    rw_bucket_meta_t m;
    assert_int_equal(put_mem(fx->b, "k", "old bytes", 9, 3, NULL, 0, 0, &m), 0);
    uv_file fd;
    rw_bucket_meta_t old;
    assert_int_equal(rw_bucket_read_open(fx->b, "k", 1, &fd, &old), 0);
    assert_int_equal(put_mem(fx->b, "k", "new content!", 12, 5, NULL, 0, 0, &m), 0);
    /* A reader that opened the old object keeps reading it whole. */
    char buf[32] = {0};
    assert_int_equal(pread(fd, buf, sizeof buf, 0), 9);
    assert_string_equal(buf, "old bytes");
    close(fd);
    char *back;
    assert_int_equal(get_all(fx->b, "k", 1, &back, &m), 0);
    assert_int_equal(m.size, 12);
    assert_memory_equal(back, "new content!", 12);
    free(back);
}

typedef struct {
    bool done;
    int status;
} get_run_t;

static void on_get(rw_bucket_get_t *g, int status)
{
    get_run_t *r = g->data;
    r->done = true;
    r->status = status;
}

static void async_get(void **state)
{
    fx_t *fx = *state;
    rw_bucket_meta_t m;
    assert_int_equal(put_mem(fx->b, "a/b/c.txt", "hello", 5, 5, NULL, 0, 0, &m), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_bucket_get_t g;
    get_run_t r = {0};
    g.data = &r;
    assert_int_equal(rw_bucket_get(&loop, fx->b, &g, "a/b/c.txt", 9, on_get), 0);
    run_until(&loop, &r.done);
    assert_int_equal(r.status, 0);
    assert_true(g.fd >= 0);
    assert_int_equal(g.meta.size, 5);
    assert_string_equal(g.meta.sha256, m.sha256);
    close(g.fd);
    r.done = false;
    assert_int_equal(rw_bucket_get(&loop, fx->b, &g, "a/b/none", 8, on_get), 0);
    run_until(&loop, &r.done);
    assert_int_equal(r.status, RW_ENOTFOUND);
    assert_int_equal(g.fd, -1);
    /* An invalid key fails at once; the callback never runs. */
    r.done = false;
    assert_int_equal(rw_bucket_get(&loop, fx->b, &g, "../x", 4, on_get), UV_EINVAL);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_false(r.done);
    loop_finish(&loop);
}

/* A put fed by the stream library's file readable: streamed, not buffered. */
static void on_file_put_done(rw_pipeline_t *p, int err)
{
    run_t *r = p->data;
    r->done = true;
    r->err = err;
}

static void put_from_file_stream(void **state)
{
    fx_t *fx = *state;
    size_t len = 5 * 1024 * 1024 + 123;
    char *data = random_bytes(len);
    char src_path[700];
    snprintf(src_path, sizeof src_path, "%s/source.bin", fx->dir);
    FILE *f = fopen(src_path, "wb");
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    uv_loop_t loop;
    uv_loop_init(&loop);
    run_t r = {0};
    rw_file_readable_t src;
    assert_int_equal(rw_file_readable_open(&loop, &src, src_path, 0, -1, 0, NULL), 0);
    rw_bucket_put_t put;
    rw_bucket_put_opts_t o = {.content_type = "video/mp4"};
    assert_int_equal(rw_bucket_put_init(&loop, &put, fx->b, "v/big.mp4", 9, &o, NULL), 0);
    src.stream.data = put.stream.data = &r;
    rw_pipeline_t p = {.data = &r};
    assert_int_equal(rw_pipeline(&p, on_file_put_done, &src.stream, &put.stream, NULL), 0);
    run_until(&loop, &r.done);
    assert_int_equal(r.err, 0);
    const rw_bucket_meta_t *m = rw_bucket_put_meta(&put);
    assert_non_null(m);
    char sha[65];
    sha256_hex(data, len, sha);
    assert_string_equal(m->sha256, sha);
    assert_int_equal(m->size, len);
    assert_string_equal(m->content_type, "video/mp4");
    rw_stream_close(&src.stream, on_closed);
    rw_stream_close(&put.stream, on_closed);
    run_closed(&loop, &r, 2);
    loop_finish(&loop);
    char *back;
    rw_bucket_meta_t m2;
    assert_int_equal(get_all(fx->b, "v/big.mp4", 9, &back, &m2), 0);
    assert_memory_equal(back, data, len);
    free(back);
    free(data);
}

/* ---- metadata ---------------------------------------------------------------------------- */

static void metadata_round_trip(void **state)
{
    fx_t *fx = *state;
    rw_bucket_kv_t user[] = {{"reel-id", "r_123"}, {"uploader", "Zo\xc3\xab K\xc3\xb6nig"}};
    rw_bucket_put_opts_t o = {.content_type = "image/webp",
                              .cache_control = "public, max-age=60",
                              .user = user,
                              .n_user = 2};
    rw_bucket_meta_t m;
    assert_int_equal(put_mem(fx->b, "reels/r_123/720.webp", "RIFFxxxxWEBP", 12, 4, &o, 0, 0, &m),
                     0);
    char *back;
    rw_bucket_meta_t g;
    assert_int_equal(get_all(fx->b, "reels/r_123/720.webp", 20, &back, &g), 0);
    free(back);
    assert_string_equal(g.content_type, "image/webp");
    assert_string_equal(g.cache_control, "public, max-age=60");
    assert_int_equal(g.n_user, 2);
    const char *n, *v;
    assert_true(rw_bucket_meta_user_at(&g, 0, &n, &v));
    assert_string_equal(n, "reel-id");
    assert_string_equal(v, "r_123");
    assert_true(rw_bucket_meta_user_at(&g, 1, &n, &v));
    assert_string_equal(n, "uploader");
    assert_string_equal(v, "Zo\xc3\xab K\xc3\xb6nig");
    assert_false(rw_bucket_meta_user_at(&g, 2, &n, &v));
    assert_string_equal(rw_bucket_meta_user(&g, "reel-id"), "r_123");
    assert_null(rw_bucket_meta_user(&g, "missing"));
    assert_int_equal(g.mtime, m.mtime);
    assert_string_equal(g.sha256, m.sha256);
    /* The attribute is readable text, as documented. */
    char p[700], attr[4096];
    obj_path(fx, p, sizeof p, "reels/r_123/720.webp");
    ssize_t an = getxattr(p, "user.reelway", attr, sizeof attr - 1);
    assert_true(an > 0);
    attr[an] = '\0';
    assert_non_null(strstr(attr, "reelway 1\nsize 12\n"));
    assert_non_null(strstr(attr, "type image/webp\n"));
    assert_non_null(strstr(attr, "user reel-id r_123\n"));
}

static void metadata_options_refused(void **state)
{
    fx_t *fx = *state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    rw_bucket_put_t put;
    rw_bucket_put_opts_t o = {.content_type = "text/html\r\nX-Evil: 1"};
    assert_int_equal(rw_bucket_put_init(&loop, &put, fx->b, "k", 1, &o, NULL), UV_EINVAL);
    o = (rw_bucket_put_opts_t){.content_type = ""};
    assert_int_equal(rw_bucket_put_init(&loop, &put, fx->b, "k", 1, &o, NULL), UV_EINVAL);
    o = (rw_bucket_put_opts_t){.cache_control = "max-age=1\n"};
    assert_int_equal(rw_bucket_put_init(&loop, &put, fx->b, "k", 1, &o, NULL), UV_EINVAL);
    rw_bucket_kv_t upper[] = {{"Upper", "x"}};
    o = (rw_bucket_put_opts_t){.user = upper, .n_user = 1};
    assert_int_equal(rw_bucket_put_init(&loop, &put, fx->b, "k", 1, &o, NULL), UV_EINVAL);
    rw_bucket_kv_t dup[] = {{"a", "1"}, {"a", "2"}};
    o = (rw_bucket_put_opts_t){.user = dup, .n_user = 2};
    assert_int_equal(rw_bucket_put_init(&loop, &put, fx->b, "k", 1, &o, NULL), UV_EINVAL);
    rw_bucket_kv_t crlf[] = {{"a", "x\r\ny"}};
    o = (rw_bucket_put_opts_t){.user = crlf, .n_user = 1};
    assert_int_equal(rw_bucket_put_init(&loop, &put, fx->b, "k", 1, &o, NULL), UV_EINVAL);
    char big[RW_BUCKET_USER_MAX + 1];
    memset(big, 'v', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    rw_bucket_kv_t large[] = {{"a", big}};
    o = (rw_bucket_put_opts_t){.user = large, .n_user = 1};
    assert_int_equal(rw_bucket_put_init(&loop, &put, fx->b, "k", 1, &o, NULL), UV_EINVAL);
    assert_int_equal(rw_bucket_put_init(&loop, &put, fx->b, "../k", 4, NULL, NULL), UV_EINVAL);
    loop_finish(&loop);
}

static void metadata_missing_or_stale(void **state)
{
    fx_t *fx = *state;
    char p[700];
    /* A file copied in without the attribute (a backup restored without
     * --xattrs): not served with made-up metadata. */
    obj_path(fx, p, sizeof p, "plain");
    write_file(p, "no attribute");
    expect_open(fx, "plain", 5, RW_EPARSE);
    /* A garbled attribute. */
    obj_path(fx, p, sizeof p, "garbled");
    write_file(p, "x");
    assert_int_equal(setxattr(p, "user.reelway", "reelway 2\n", 10, 0), 0);
    expect_open(fx, "garbled", 7, RW_EPARSE);
    assert_int_equal(setxattr(p, "user.reelway", "reelway 1\nsize 1\n", 17, 0), 0);
    expect_open(fx, "garbled", 7, RW_EPARSE);
    /* A file changed in place after its commit: its size no longer matches. */
    rw_bucket_meta_t m;
    assert_int_equal(put_mem(fx->b, "changed", "12345", 5, 5, NULL, 0, 0, &m), 0);
    obj_path(fx, p, sizeof p, "changed");
    FILE *f = fopen(p, "a");
    fputs("678", f);
    fclose(f);
    expect_open(fx, "changed", 7, RW_EPARSE);
}

/* ---- failures: nothing partial, nothing left behind ------------------------------------------ */

static void failed_put_leaves_nothing(void **state)
{
    fx_t *fx = *state;
    size_t len = 1024 * 1024;
    char *data = random_bytes(len);
    /* The source (an upload's client) goes away after 300 KB. */
    int rc =
        put_mem(fx->b, "up/video.mp4", data, len, 65536, NULL, 300 * 1024, UV_ECONNRESET, NULL);
    assert_int_equal(rc, UV_ECONNRESET);
    rw_bucket_meta_t m;
    char *back;
    assert_int_equal(get_all(fx->b, "up/video.mp4", 12, &back, &m), RW_ENOTFOUND);
    assert_int_equal(tmp_entries(fx), 0);
    /* Over an existing object, a failed put keeps the old one whole. */
    assert_int_equal(put_mem(fx->b, "up/video.mp4", "old", 3, 3, NULL, 0, 0, &m), 0);
    rc = put_mem(fx->b, "up/video.mp4", data, len, 65536, NULL, 500 * 1024, UV_ECONNRESET, NULL);
    assert_int_equal(rc, UV_ECONNRESET);
    assert_int_equal(get_all(fx->b, "up/video.mp4", 12, &back, &m), 0);
    assert_int_equal(m.size, 3);
    assert_memory_equal(back, "old", 3);
    free(back);
    assert_int_equal(tmp_entries(fx), 0);
    free(data);
}

static void limit_exceeded_leaves_nothing(void **state)
{
    fx_t *fx = *state;
    char *data = random_bytes(5000);
    rw_bucket_put_opts_t o = {.max_bytes = 4096};
    assert_int_equal(put_mem(fx->b, "big", data, 5000, 1000, &o, 0, 0, NULL), RW_ELIMIT);
    expect_open(fx, "big", 3, RW_ENOTFOUND);
    assert_int_equal(tmp_entries(fx), 0);
    /* Exactly at the limit is fine. */
    rw_bucket_meta_t m;
    assert_int_equal(put_mem(fx->b, "big", data, 4096, 1000, &o, 0, 0, &m), 0);
    assert_int_equal(m.size, 4096);
    free(data);
}

static void closed_before_end_stores_nothing(void **state)
{
    fx_t *fx = *state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    run_t r = {0};
    rw_bucket_put_t put;
    assert_int_equal(rw_bucket_put_init(&loop, &put, fx->b, "half", 4, NULL, NULL), 0);
    put.stream.data = &r;
    assert_true(rw_writable_write(&put.stream, rw_chunk_static("some bytes", 10)) >= 0);
    /* Let the temporary file be opened and written. */
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT), usleep(1000);
    rw_stream_close(&put.stream, on_closed);
    run_closed(&loop, &r, 1);
    loop_finish(&loop);
    expect_open(fx, "half", 4, RW_ENOTFOUND);
    assert_int_equal(tmp_entries(fx), 0);
}

static void key_clashes_with_directory(void **state)
{
    fx_t *fx = *state;
    assert_int_equal(put_mem(fx->b, "a", "file", 4, 4, NULL, 0, 0, NULL), 0);
    assert_int_equal(put_mem(fx->b, "a/b", "x", 1, 1, NULL, 0, 0, NULL), UV_ENOTDIR);
    assert_int_equal(put_mem(fx->b, "d/e", "x", 1, 1, NULL, 0, 0, NULL), 0);
    assert_int_equal(put_mem(fx->b, "d", "x", 1, 1, NULL, 0, 0, NULL), UV_EISDIR);
    assert_int_equal(tmp_entries(fx), 0);
    char *back;
    rw_bucket_meta_t m;
    assert_int_equal(get_all(fx->b, "a", 1, &back, &m), 0);
    assert_memory_equal(back, "file", 4);
    free(back);
}

/* A process killed in the middle of a put (a crash): no object under the
 * key, the partial file only in tmp/, swept once it is a day old. */
static void crash_mid_put(void **state)
{
    fx_t *fx = *state;
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        static rw_bucket_put_t put;
        if (rw_bucket_put_init(&loop, &put, fx->b, "crash/obj", 9, NULL, NULL) != 0)
            _exit(2);
        static char block[65536];
        memset(block, 'c', sizeof block);
        for (int i = 0; i < 8; i++)
            rw_writable_write(&put.stream, rw_chunk_static(block, sizeof block));
        /* Wait until bytes reached the temporary file, then die. */
        char tmp[700];
        snprintf(tmp, sizeof tmp, "%s/tmp", fx->root);
        for (int i = 0; i < 20000; i++) {
            uv_run(&loop, UV_RUN_NOWAIT);
            DIR *d = opendir(tmp);
            struct dirent *e;
            struct stat st;
            bool written = false;
            while (d && (e = readdir(d)) != NULL) {
                char p[1000];
                snprintf(p, sizeof p, "%s/%s", tmp, e->d_name);
                if (e->d_name[0] != '.' && stat(p, &st) == 0 && st.st_size > 0)
                    written = true;
            }
            if (d)
                closedir(d);
            if (written) {
                (void)!write(pipefd[1], "w", 1);
                kill(getpid(), SIGKILL);
            }
            usleep(500);
        }
        _exit(3);
    }
    close(pipefd[1]);
    char c = 0;
    assert_int_equal(read(pipefd[0], &c, 1), 1);
    close(pipefd[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    expect_open(fx, "crash/obj", 9, RW_ENOTFOUND);
    char p[700];
    obj_path(fx, p, sizeof p, "crash/obj");
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(tmp_entries(fx), 1);
    /* A younger leftover may be another process's put in flight: kept. */
    rw_bucket_t *again;
    rw_bucket_opts_t o = {0};
    assert_int_equal(rw_bucket_open(fx->root, &o, &again, NULL, 0), 0);
    rw_bucket_free(again);
    assert_int_equal(tmp_entries(fx), 1);
    /* Age it past a day: the next open removes it. */
    char tmpdir[700];
    snprintf(tmpdir, sizeof tmpdir, "%s/tmp", fx->root);
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        struct timespec ts[2] = {{time(NULL) - 2 * 86400, 0}, {time(NULL) - 2 * 86400, 0}};
        assert_int_equal(utimensat(dirfd(d), e->d_name, ts, 0), 0);
    }
    closedir(d);
    assert_int_equal(rw_bucket_open(fx->root, &o, &again, NULL, 0), 0);
    rw_bucket_free(again);
    assert_int_equal(tmp_entries(fx), 0);
}

static void remove_object(void **state)
{
    fx_t *fx = *state;
    assert_int_equal(put_mem(fx->b, "r/x", "gone soon", 9, 9, NULL, 0, 0, NULL), 0);
    assert_int_equal(rw_bucket_remove(fx->b, "r/x", 3), 0);
    expect_open(fx, "r/x", 3, RW_ENOTFOUND);
    assert_int_equal(rw_bucket_remove(fx->b, "r/x", 3), RW_ENOTFOUND);
    assert_int_equal(rw_bucket_remove(fx->b, "r", 1), RW_ENOTFOUND); /* a directory */
    assert_int_equal(rw_bucket_remove(fx->b, "nope/x", 6), RW_ENOTFOUND);
}

static void open_errors(void **state)
{
    fx_t *fx = *state;
    rw_bucket_t *b = NULL;
    char why[256] = "";
    char p[700];
    snprintf(p, sizeof p, "%s/missing", fx->dir);
    rw_bucket_opts_t o = {0};
    assert_int_equal(rw_bucket_open(p, &o, &b, why, sizeof why), UV_ENOENT);
    assert_null(b);
    assert_non_null(strstr(why, "missing"));
    /* A directory that is not a bucket (no objects/) is refused, not created. */
    assert_int_equal(rw_bucket_open(fx->outside, &o, &b, why, sizeof why), UV_ENOENT);
    assert_string_equal(rw_bucket_dir(fx->b), fx->root);
}

/* Each attack runs twice: resolved by openat2, then by the component walk. */
#define BOTH(fn)                                                                                   \
    {#fn " (openat2)", fn, fx_setup, fx_teardown, &mode_auto},                                     \
    {                                                                                              \
#fn " (walk)", fn, fx_setup, fx_teardown, &mode_walk                                       \
    }
#define ONE(fn) cmocka_unit_test_prestate_setup_teardown(fn, fx_setup, fx_teardown, &mode_auto)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_valid_forms),
        cmocka_unit_test(key_refuses_empty_and_long),
        cmocka_unit_test(key_refuses_dot_dot),
        cmocka_unit_test(key_refuses_dot),
        cmocka_unit_test(key_refuses_absolute),
        cmocka_unit_test(key_refuses_empty_segments),
        cmocka_unit_test(key_refuses_nul),
        cmocka_unit_test(key_refuses_backslash_and_controls),
        cmocka_unit_test(key_refuses_bad_utf8),
        cmocka_unit_test(content_addressed_keys),
        BOTH(escape_dot_dot),
        BOTH(escape_absolute),
        BOTH(escape_empty_and_dot_segments),
        BOTH(escape_nul),
        BOTH(escape_encoded_is_literal),
        BOTH(escape_symlink_leaf),
        BOTH(escape_symlink_dir),
        BOTH(escape_symlink_within_root_refused),
        BOTH(escape_put_through_symlink_dir),
        BOTH(escape_put_over_symlink_leaf),
        BOTH(escape_remove_through_symlink),
        BOTH(special_files_are_not_objects),
        BOTH(put_get_round_trip),
        ONE(empty_object),
        ONE(overwrite_is_atomic),
        BOTH(async_get),
        ONE(put_from_file_stream),
        ONE(metadata_round_trip),
        ONE(metadata_options_refused),
        ONE(metadata_missing_or_stale),
        ONE(failed_put_leaves_nothing),
        ONE(limit_exceeded_leaves_nothing),
        ONE(closed_before_end_stores_nothing),
        ONE(key_clashes_with_directory),
        ONE(crash_mid_put),
        ONE(remove_object),
        ONE(open_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
