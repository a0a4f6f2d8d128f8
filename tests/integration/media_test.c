/* Media serving as a client sees it: `reelway serve` with a template that
 * declares buckets, objects put with libreelway_media, then GET/HEAD over
 * HTTP: headers, ranges, conditional requests, caching, errors, every
 * traversal attempt (raw and percent-encoded), 300 KB and 20 MB objects byte
 * for byte, and clients that go away mid-download while the worker's memory
 * stays flat and its file reads stop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <cJSON.h>
#include <dirent.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "reelway/bucket.h"
#include "reelway/http.h"
#include "rw_http_client.h"
#include "rw_test.h"

#define BIG_SIZE (20u * 1024 * 1024)
#define MID_SIZE (300u * 1024)

static struct {
    char dir[512];
    char log[600];
    char outside[600];
    rw_test_proc_t proc;
    int port;
    rw_bucket_t *media, *assets;
    char *big, *mid;
    char big_sha[65], mid_sha[65], ca_key[128], text_etag[70];
    int64_t text_mtime;
} S;

/* ---- helpers ------------------------------------------------------------------------- */

static void sha256_hex(const void *data, size_t len, char hex[65])
{
    unsigned char d[32];
    unsigned int n = 0;
    assert_int_equal(EVP_Digest(data, len, d, &n, EVP_sha256(), NULL), 1);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static char *random_bytes(size_t n, uint64_t seed)
{
    char *p = malloc(n);
    assert_non_null(p);
    uint64_t x = seed | 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        p[i] = (char)(x >> 24);
    }
    return p;
}

typedef struct {
    bool done;
    int err, closed;
} put_run_t;

static void on_put_done(rw_pipeline_t *p, int err)
{
    put_run_t *r = p->data;
    r->done = true;
    r->err = err;
}

static void on_put_closed(rw_stream_t *s)
{
    ((put_run_t *)s->data)->closed++;
}

typedef struct {
    rw_stream_t stream;
    const char *data;
    size_t len, pos;
} mem_src_t;

static void mem_read(rw_stream_t *s, size_t size)
{
    mem_src_t *m = (mem_src_t *)s;
    if (m->pos == m->len) {
        rw_readable_end(s);
        return;
    }
    size_t n = m->len - m->pos < 65536 ? m->len - m->pos : 65536;
    rw_readable_push(s, rw_chunk_static(m->data + m->pos, n));
    m->pos += n;
}

static const rw_stream_impl_t mem_impl = {.read = mem_read};

/* Puts data at key through the put stream (as an upload will). */
static void put_object(rw_bucket_t *b, const char *key, const char *data, size_t len,
                       const rw_bucket_put_opts_t *o, rw_bucket_meta_t *meta)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    put_run_t r = {0};
    mem_src_t src = {.data = data, .len = len};
    assert_int_equal(rw_readable_init(&loop, &src.stream, &mem_impl, NULL), 0);
    rw_bucket_put_t *put = malloc(sizeof *put);
    assert_int_equal(rw_bucket_put_init(&loop, put, b, key, strlen(key), o, NULL), 0);
    src.stream.data = put->stream.data = &r;
    rw_pipeline_t p = {.data = &r};
    assert_int_equal(rw_pipeline(&p, on_put_done, &src.stream, &put->stream, NULL), 0);
    uint64_t deadline = uv_hrtime() + 60000000000ull;
    for (int i = 0; i < 10000000 && !r.done && uv_hrtime() < deadline; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(r.done);
    assert_int_equal(r.err, 0);
    if (meta)
        *meta = *rw_bucket_put_meta(put);
    rw_stream_close(&src.stream, on_put_closed);
    rw_stream_close(&put->stream, on_put_closed);
    for (int i = 0; i < 100000 && r.closed < 2; i++)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(r.closed, 2);
    free(put);
    assert_int_equal(rw_stream_loop_close(&loop), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* Starts `reelway serve` (one worker) on the template text; returns the port. */
static int start_reelway(rw_test_proc_t *proc, const char *dir, const char *tpl_text,
                         const char *log)
{
    char tpl[700], port_file[700], uri_env[1024], asan[512];
    snprintf(tpl, sizeof tpl, "%s/template.yaml", dir);
    write_file(tpl, tpl_text);
    snprintf(port_file, sizeof port_file, "%s/port", dir);
    snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", rw_test_mongo_uri());
    /* Under ASan, freed memory sits in a quarantine (256 MiB by default) and
     * would count as growth in the memory checks; keep it small. */
    const char *prev = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s%squarantine_size_mb=4", prev ? prev : "",
             prev && *prev ? ":" : "");
    char *argv[] = {(char *)rw_test_reelway_bin(),
                    "serve",
                    "--port",
                    "0",
                    "--port-file",
                    port_file,
                    "--data-dir",
                    (char *)dir,
                    "--workers",
                    "1",
                    "--template",
                    tpl,
                    NULL};
    const char *set[] = {uri_env, asan, NULL};
    if (rw_test_proc_start(proc, argv, set, NULL, log) != 0)
        return -1;
    int port = rw_test_wait_int_file(port_file, 60000);
    if (port <= 0) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "cat %s", log);
        (void)!system(cmd);
    }
    return port;
}

static const char *template_text = "AWSTemplateFormatVersion: \"2010-09-09\"\n"
                                   "Transform: AWS::Serverless-2016-10-31\n"
                                   "Resources:\n"
                                   "  MediaBucket:\n"
                                   "    Type: AWS::S3::Bucket\n"
                                   "    Properties:\n"
                                   "      BucketName: reels-media\n"
                                   "    Metadata:\n"
                                   "      Reelway:\n"
                                   "        Directory: media-bucket\n"
                                   "        ServePath: /media\n"
                                   "  AssetsBucket:\n"
                                   "    Type: AWS::S3::Bucket\n"
                                   "    Properties:\n"
                                   "      BucketName: assets\n"
                                   "    Metadata:\n"
                                   "      Reelway:\n"
                                   "        Directory: assets-bucket\n"
                                   "        ServePath: /cdn/assets\n"
                                   "  UploadsBucket:\n"
                                   "    Type: AWS::S3::Bucket\n"
                                   "    Properties:\n"
                                   "      BucketName: uploads\n"
                                   "  Ops:\n"
                                   "    Type: AWS::Serverless::HttpApi\n"
                                   "    Metadata:\n"
                                   "      Reelway:\n"
                                   "        BasePath: /media/ops\n"
                                   "    Properties:\n"
                                   "      DefinitionBody:\n"
                                   "        openapi: \"3.0.1\"\n"
                                   "        paths:\n"
                                   "          /ping:\n"
                                   "            get:\n"
                                   "              x-amazon-apigateway-integration:\n"
                                   "                type: mock\n"
                                   "                responses:\n"
                                   "                  default:\n"
                                   "                    statusCode: \"201\"\n"
                                   "                    responseTemplates:\n"
                                   "                      application/json: '{\"pong\":true}'\n";

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    if (rw_test_tmpdir(S.dir, sizeof S.dir, "rw-media") != 0)
        return -1;
    snprintf(S.log, sizeof S.log, "%s/reelway.log", S.dir);
    snprintf(S.outside, sizeof S.outside, "%s/outside", S.dir);
    mkdir(S.outside, 0755);
    char p[700];
    snprintf(p, sizeof p, "%s/secret", S.outside);
    write_file(p, "SECRET outside the bucket");

    /* The buckets as the server will find them, filled through the library. */
    char bdir[700];
    rw_bucket_opts_t bo = {.create = true};
    snprintf(bdir, sizeof bdir, "%s/media-bucket", S.dir);
    assert_int_equal(rw_bucket_open(bdir, &bo, &S.media, NULL, 0), 0);
    snprintf(bdir, sizeof bdir, "%s/assets-bucket", S.dir);
    assert_int_equal(rw_bucket_open(bdir, &bo, &S.assets, NULL, 0), 0);

    rw_bucket_put_opts_t text = {.content_type = "text/plain; charset=utf-8"};
    rw_bucket_meta_t m;
    put_object(S.media, "hello.txt", "0123456789abcdefghij", 20, &text, &m);
    snprintf(S.text_etag, sizeof S.text_etag, "\"%s\"", m.sha256);
    S.text_mtime = m.mtime;
    S.mid = random_bytes(MID_SIZE, 300);
    sha256_hex(S.mid, MID_SIZE, S.mid_sha);
    rw_bucket_put_opts_t webp = {.content_type = "image/webp"};
    put_object(S.media, "reels/abc/720.webp", S.mid, MID_SIZE, &webp, NULL);
    snprintf(S.ca_key, sizeof S.ca_key, "reels/abc/%s.webp", S.mid_sha);
    put_object(S.media, S.ca_key, S.mid, MID_SIZE, &webp, NULL);
    S.big = random_bytes(BIG_SIZE, 20);
    sha256_hex(S.big, BIG_SIZE, S.big_sha);
    rw_bucket_put_opts_t mp4 = {.content_type = "video/mp4"};
    put_object(S.media, "reels/abc/video.mp4", S.big, BIG_SIZE, &mp4, NULL);
    rw_bucket_put_opts_t cc = {.content_type = "image/png", .cache_control = "no-cache"};
    put_object(S.media, "avatars/u1.png", "\x89PNG", 4, &cc, NULL);
    put_object(S.media, "empty", "", 0, NULL, NULL);
    put_object(S.media, "dir/x", "x", 1, NULL, NULL);
    put_object(S.media, "sp ace/\xc3\xa9t\xc3\xa9.txt", "utf8 key", 8, &text, NULL);
    put_object(S.assets, "app.css", "body{}", 6, NULL, NULL);

    /* Links planted inside the bucket, pointing out of it. */
    char link[800];
    snprintf(link, sizeof link, "%s/media-bucket/objects/evil", S.dir);
    snprintf(p, sizeof p, "%s/secret", S.outside);
    assert_int_equal(symlink(p, link), 0);
    snprintf(link, sizeof link, "%s/media-bucket/objects/dirlink", S.dir);
    assert_int_equal(symlink(S.outside, link), 0);
    snprintf(link, sizeof link, "%s/media-bucket/objects/dir/up", S.dir);
    assert_int_equal(symlink("../../..", link), 0);

    S.port = start_reelway(&S.proc, S.dir, template_text, S.log);
    return S.port > 0 ? 0 : -1;
}

/* A worker's sanitizer report or unclosed handles do not change the
 * supervisor's exit status: look for them in the log. */
static bool log_has_trouble(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return true;
    char line[8192];
    bool bad = false;
    while (fgets(line, sizeof line, f))
        if (line[0] != '{' && (strstr(line, "Sanitizer") || strstr(line, "still open") ||
                               strstr(line, "runtime error:") || strstr(line, "killed by signal")))
            bad = true;
    fclose(f);
    if (bad) {
        fprintf(stderr, "reelway's log reports trouble:\n");
        char cmd[700];
        snprintf(cmd, sizeof cmd, "grep -v '^{' %s | tail -60", path);
        (void)!system(cmd);
    }
    return bad;
}

static int teardown(void **state)
{
    int status = rw_test_proc_stop(&S.proc, SIGTERM, 30000);
    rw_bucket_free(S.media);
    rw_bucket_free(S.assets);
    free(S.big);
    free(S.mid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "reelway exited with status %d; its log:\n", status);
        char cmd[700];
        snprintf(cmd, sizeof cmd, "tail -50 %s", S.log);
        (void)!system(cmd);
        return -1;
    }
    if (log_has_trouble(S.log))
        return -1;
    rw_test_rmtree(S.dir);
    return 0;
}

static void get(const char *method, const char *path, const char *headers, rw_test_response_t *r,
                int want)
{
    assert_int_equal(rw_test_http(S.port, method, path, headers, NULL, 0, r), 0);
    if (r->status != want)
        fprintf(stderr, "%s %s -> %d (want %d)\n%s\n%s\n", method, path, r->status, want, r->head,
                r->body ? r->body : "");
    assert_int_equal(r->status, want);
}

static const char *hdr(const rw_test_response_t *r, const char *name)
{
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    return rw_test_header(r, name, buf[k], sizeof buf[k]);
}

/* A JSON error answer: {"message": message, ...}. */
static void assert_json_error(const rw_test_response_t *r, const char *message)
{
    assert_string_equal(hdr(r, "content-type"), "application/json");
    cJSON *j = cJSON_Parse(r->body);
    assert_non_null(j);
    cJSON *msg = cJSON_GetObjectItem(j, "message");
    assert_true(cJSON_IsString(msg));
    assert_string_equal(msg->valuestring, message);
    cJSON_Delete(j);
}

/* ---- headers ------------------------------------------------------------------------ */

static void get_whole_object(void **state)
{
    rw_test_response_t r;
    get("GET", "/media/hello.txt", NULL, &r, 200);
    assert_int_equal(r.body_len, 20);
    assert_memory_equal(r.body, "0123456789abcdefghij", 20);
    assert_string_equal(hdr(&r, "content-length"), "20");
    assert_string_equal(hdr(&r, "content-type"), "text/plain; charset=utf-8");
    assert_string_equal(hdr(&r, "etag"), S.text_etag);
    assert_string_equal(hdr(&r, "accept-ranges"), "bytes");
    assert_string_equal(hdr(&r, "cache-control"), "public, max-age=60");
    assert_string_equal(hdr(&r, "x-content-type-options"), "nosniff");
    assert_non_null(hdr(&r, "content-security-policy"));
    assert_non_null(hdr(&r, "x-request-id"));
    char lm[40];
    rw_http_date(lm, sizeof lm, S.text_mtime);
    assert_string_equal(hdr(&r, "last-modified"), lm);
    assert_null(hdr(&r, "content-range"));
    rw_test_response_free(&r);

    /* A key with a space and UTF-8, percent-encoded in the URL. */
    get("GET", "/media/sp%20ace/%C3%A9t%C3%A9.txt", NULL, &r, 200);
    assert_int_equal(r.body_len, 8);
    assert_memory_equal(r.body, "utf8 key", 8);
    rw_test_response_free(&r);

    /* An empty object. */
    get("GET", "/media/empty", NULL, &r, 200);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(hdr(&r, "content-length"), "0");
    assert_string_equal(hdr(&r, "content-type"), "application/octet-stream");
    rw_test_response_free(&r);

    /* The other bucket, at its own ServePath. */
    get("GET", "/cdn/assets/app.css", NULL, &r, 200);
    assert_memory_equal(r.body, "body{}", 6);
    rw_test_response_free(&r);
}

static void head_request(void **state)
{
    rw_test_response_t r;
    get("HEAD", "/media/reels/abc/video.mp4", NULL, &r, 200);
    assert_int_equal(r.body_len, 0);
    char len[32];
    snprintf(len, sizeof len, "%u", BIG_SIZE);
    assert_string_equal(hdr(&r, "content-length"), len);
    assert_string_equal(hdr(&r, "content-type"), "video/mp4");
    char etag[70];
    snprintf(etag, sizeof etag, "\"%s\"", S.big_sha);
    assert_string_equal(hdr(&r, "etag"), etag);
    assert_string_equal(hdr(&r, "accept-ranges"), "bytes");
    rw_test_response_free(&r);
    /* HEAD with a range shows what GET would answer. */
    get("HEAD", "/media/hello.txt", "Range: bytes=5-9\r\n", &r, 206);
    assert_string_equal(hdr(&r, "content-range"), "bytes 5-9/20");
    assert_string_equal(hdr(&r, "content-length"), "5");
    assert_int_equal(r.body_len, 0);
    rw_test_response_free(&r);
}

static void cache_control_by_key(void **state)
{
    rw_test_response_t r;
    char path[300];
    /* The key holds the object's SHA-256: immutable, a year. */
    snprintf(path, sizeof path, "/media/%s", S.ca_key);
    get("GET", path, NULL, &r, 200);
    assert_string_equal(hdr(&r, "cache-control"), "public, max-age=31536000, immutable");
    assert_int_equal(r.body_len, MID_SIZE);
    rw_test_response_free(&r);
    /* Same bytes under a key without the digest: short. */
    get("GET", "/media/reels/abc/720.webp", NULL, &r, 200);
    assert_string_equal(hdr(&r, "cache-control"), "public, max-age=60");
    assert_string_equal(hdr(&r, "content-type"), "image/webp");
    rw_test_response_free(&r);
    /* What the put stored wins. */
    get("GET", "/media/avatars/u1.png", NULL, &r, 200);
    assert_string_equal(hdr(&r, "cache-control"), "no-cache");
    assert_string_equal(hdr(&r, "content-type"), "image/png");
    rw_test_response_free(&r);
    /* A key that looks like a digest but is not this object's. */
    put_object(S.media,
               "reels/abc/0000000000000000000000000000000000000000000000000000000000000000", "x", 1,
               NULL, NULL);
    get("GET", "/media/reels/abc/0000000000000000000000000000000000000000000000000000000000000000",
        NULL, &r, 200);
    assert_string_equal(hdr(&r, "cache-control"), "public, max-age=60");
    rw_test_response_free(&r);
}

/* ---- ranges ------------------------------------------------------------------------ */

static void range_case(const char *range, int status, const char *body, const char *content_range)
{
    char h[256];
    snprintf(h, sizeof h, "Range: %s\r\n", range);
    rw_test_response_t r;
    get("GET", "/media/hello.txt", h, &r, status);
    if (body) {
        assert_int_equal(r.body_len, strlen(body));
        assert_memory_equal(r.body, body, strlen(body));
        char len[16];
        snprintf(len, sizeof len, "%zu", strlen(body));
        assert_string_equal(hdr(&r, "content-length"), len);
    }
    if (content_range)
        assert_string_equal(hdr(&r, "content-range"), content_range);
    else
        assert_null(hdr(&r, "content-range"));
    if (status == 206 || status == 200)
        assert_string_equal(hdr(&r, "etag"), S.text_etag);
    rw_test_response_free(&r);
}

static void ranges_first_last(void **state)
{
    range_case("bytes=0-4", 206, "01234", "bytes 0-4/20");
    range_case("bytes=5-9", 206, "56789", "bytes 5-9/20");
    range_case("bytes=19-19", 206, "j", "bytes 19-19/20");
    /* A last position past the end is clamped. */
    range_case("bytes=15-1000", 206, "fghij", "bytes 15-19/20");
    range_case("bytes=15-99999999999999999999999", 206, "fghij", "bytes 15-19/20");
    range_case("Bytes = 1-2", 206, "12", "bytes 1-2/20");
}

static void ranges_open_ended(void **state)
{
    range_case("bytes=10-", 206, "abcdefghij", "bytes 10-19/20");
    range_case("bytes=0-", 206, "0123456789abcdefghij", "bytes 0-19/20");
}

static void ranges_suffix(void **state)
{
    range_case("bytes=-3", 206, "hij", "bytes 17-19/20");
    range_case("bytes=-20", 206, "0123456789abcdefghij", "bytes 0-19/20");
    range_case("bytes=-500", 206, "0123456789abcdefghij", "bytes 0-19/20");
}

static void ranges_unsatisfiable(void **state)
{
    range_case("bytes=20-", 416, NULL, "bytes */20");
    range_case("bytes=25-30", 416, NULL, "bytes */20");
    range_case("bytes=-0", 416, NULL, "bytes */20");
    range_case("bytes=99999999999999999999-", 416, NULL, "bytes */20");
    rw_test_response_t r;
    get("GET", "/media/hello.txt", "Range: bytes=30-40\r\n", &r, 416);
    assert_json_error(&r, "Range Not Satisfiable");
    rw_test_response_free(&r);
    /* Nothing in an empty object can be satisfied. */
    get("GET", "/media/empty", "Range: bytes=0-\r\n", &r, 416);
    assert_string_equal(hdr(&r, "content-range"), "bytes */0");
    rw_test_response_free(&r);
}

static void ranges_ignored(void **state)
{
    /* Several ranges: the whole object (documented), as the RFC allows. */
    range_case("bytes=0-1,5-6", 200, "0123456789abcdefghij", NULL);
    /* Malformed or another unit: ignored. */
    range_case("bytes=5-2", 200, "0123456789abcdefghij", NULL);
    range_case("bytes=abc", 200, "0123456789abcdefghij", NULL);
    range_case("items=0-1", 200, "0123456789abcdefghij", NULL);
    range_case("bytes 0-1", 200, "0123456789abcdefghij", NULL);
}

static void if_range(void **state)
{
    char h[512];
    /* The current ETag: the range applies. */
    snprintf(h, sizeof h, "Range: bytes=0-1\r\nIf-Range: %s\r\n", S.text_etag);
    rw_test_response_t r;
    get("GET", "/media/hello.txt", h, &r, 206);
    assert_memory_equal(r.body, "01", 2);
    rw_test_response_free(&r);
    /* Another version: the whole object. */
    get("GET", "/media/hello.txt",
        "Range: bytes=0-1\r\nIf-Range: "
        "\"0000000000000000000000000000000000000000000000000000000000000000\"\r\n",
        &r, 200);
    assert_int_equal(r.body_len, 20);
    rw_test_response_free(&r);
    /* A weak tag never satisfies If-Range (strong comparison). */
    snprintf(h, sizeof h, "Range: bytes=0-1\r\nIf-Range: W/%s\r\n", S.text_etag);
    get("GET", "/media/hello.txt", h, &r, 200);
    rw_test_response_free(&r);
    /* The Last-Modified date, exactly: the range applies; another date: not. */
    char lm[40];
    rw_http_date(lm, sizeof lm, S.text_mtime);
    snprintf(h, sizeof h, "Range: bytes=2-3\r\nIf-Range: %s\r\n", lm);
    get("GET", "/media/hello.txt", h, &r, 206);
    assert_memory_equal(r.body, "23", 2);
    rw_test_response_free(&r);
    rw_http_date(lm, sizeof lm, S.text_mtime - 3600);
    snprintf(h, sizeof h, "Range: bytes=2-3\r\nIf-Range: %s\r\n", lm);
    get("GET", "/media/hello.txt", h, &r, 200);
    rw_test_response_free(&r);
}

/* ---- conditional requests ------------------------------------------------------------ */

static void if_none_match(void **state)
{
    char h[512];
    rw_test_response_t r;
    snprintf(h, sizeof h, "If-None-Match: %s\r\n", S.text_etag);
    get("GET", "/media/hello.txt", h, &r, 304);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(hdr(&r, "etag"), S.text_etag);
    assert_string_equal(hdr(&r, "cache-control"), "public, max-age=60");
    assert_non_null(hdr(&r, "last-modified"));
    assert_null(hdr(&r, "content-length"));
    rw_test_response_free(&r);
    /* In a list, weak (If-None-Match compares weakly), and "*". */
    snprintf(h, sizeof h, "If-None-Match: \"aaa\", W/%s , \"bbb\"\r\n", S.text_etag);
    get("GET", "/media/hello.txt", h, &r, 304);
    rw_test_response_free(&r);
    get("GET", "/media/hello.txt", "If-None-Match: *\r\n", &r, 304);
    rw_test_response_free(&r);
    /* The list split over two header lines. */
    snprintf(h, sizeof h, "If-None-Match: \"aaa\"\r\nIf-None-Match: %s\r\n", S.text_etag);
    get("GET", "/media/hello.txt", h, &r, 304);
    rw_test_response_free(&r);
    get("HEAD", "/media/hello.txt", "If-None-Match: *\r\n", &r, 304);
    rw_test_response_free(&r);
    /* Other tags: the object. */
    get("GET", "/media/hello.txt", "If-None-Match: \"aaa\", \"bbb\"\r\n", &r, 200);
    assert_int_equal(r.body_len, 20);
    rw_test_response_free(&r);
}

static void if_modified_since(void **state)
{
    char h[512], d[40];
    rw_test_response_t r;
    rw_http_date(d, sizeof d, S.text_mtime);
    snprintf(h, sizeof h, "If-Modified-Since: %s\r\n", d);
    get("GET", "/media/hello.txt", h, &r, 304);
    rw_test_response_free(&r);
    rw_http_date(d, sizeof d, S.text_mtime + 86400);
    snprintf(h, sizeof h, "If-Modified-Since: %s\r\n", d);
    get("GET", "/media/hello.txt", h, &r, 304);
    rw_test_response_free(&r);
    /* The two obsolete formats are HTTP-dates too. */
    time_t later = (time_t)(S.text_mtime + 86400);
    struct tm tm;
    gmtime_r(&later, &tm);
    char obs[64];
    strftime(obs, sizeof obs, "%A, %d-%b-%y %H:%M:%S GMT", &tm);
    snprintf(h, sizeof h, "If-Modified-Since: %s\r\n", obs);
    get("GET", "/media/hello.txt", h, &r, 304);
    rw_test_response_free(&r);
    strftime(obs, sizeof obs, "%a %b %e %H:%M:%S %Y", &tm);
    snprintf(h, sizeof h, "If-Modified-Since: %s\r\n", obs);
    get("GET", "/media/hello.txt", h, &r, 304);
    rw_test_response_free(&r);
    /* Modified since an earlier date: the object. */
    rw_http_date(d, sizeof d, S.text_mtime - 1);
    snprintf(h, sizeof h, "If-Modified-Since: %s\r\n", d);
    get("GET", "/media/hello.txt", h, &r, 200);
    assert_int_equal(r.body_len, 20);
    rw_test_response_free(&r);
    /* Not a date: ignored. */
    get("GET", "/media/hello.txt", "If-Modified-Since: yesterday\r\n", &r, 200);
    rw_test_response_free(&r);
}

static void if_none_match_wins(void **state)
{
    char h[512], d[40];
    rw_test_response_t r;
    /* A stale tag with a date that alone would give 304: the tag decides. */
    rw_http_date(d, sizeof d, S.text_mtime + 86400);
    snprintf(h, sizeof h, "If-None-Match: \"stale\"\r\nIf-Modified-Since: %s\r\n", d);
    get("GET", "/media/hello.txt", h, &r, 200);
    assert_int_equal(r.body_len, 20);
    rw_test_response_free(&r);
    /* And the other way round. */
    rw_http_date(d, sizeof d, S.text_mtime - 86400);
    snprintf(h, sizeof h, "If-None-Match: %s\r\nIf-Modified-Since: %s\r\n", S.text_etag, d);
    get("GET", "/media/hello.txt", h, &r, 304);
    rw_test_response_free(&r);
}

static void if_match_preconditions(void **state)
{
    char h[512];
    rw_test_response_t r;
    get("GET", "/media/hello.txt", "If-Match: \"other\"\r\n", &r, 412);
    assert_json_error(&r, "Precondition Failed");
    rw_test_response_free(&r);
    snprintf(h, sizeof h, "If-Match: %s\r\n", S.text_etag);
    get("GET", "/media/hello.txt", h, &r, 200);
    rw_test_response_free(&r);
    get("GET", "/media/hello.txt", "If-Unmodified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n", &r,
        412);
    rw_test_response_free(&r);
}

/* ---- errors --------------------------------------------------------------------------- */

static void not_found_bad_request_method(void **state)
{
    rw_test_response_t r;
    get("GET", "/media/no/such/object", NULL, &r, 404);
    assert_json_error(&r, "Not Found");
    rw_test_response_free(&r);
    get("GET", "/media/dir", NULL, &r, 404); /* a directory is not an object */
    rw_test_response_free(&r);
    get("GET", "/media/hello.txt/under", NULL, &r, 404);
    rw_test_response_free(&r);
    get("GET", "/media/", NULL, &r, 400);
    assert_json_error(&r, "Bad Request");
    rw_test_response_free(&r);
    get("GET", "/media", NULL, &r, 400);
    rw_test_response_free(&r);
    get("GET", "/media/a%zz", NULL, &r, 400);
    assert_json_error(&r, "Bad Request");
    rw_test_response_free(&r);
    const char *methods[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (size_t i = 0; i < 5; i++) {
        get(methods[i], "/media/hello.txt", NULL, &r, 405);
        assert_string_equal(hdr(&r, "allow"), "GET, HEAD");
        assert_json_error(&r, "Method Not Allowed");
        rw_test_response_free(&r);
    }
    /* The longest mount wins: an API below the ServePath keeps its routes. */
    get("GET", "/media/ops/ping", NULL, &r, 201);
    assert_non_null(strstr(r.body, "pong"));
    rw_test_response_free(&r);
    /* Not under a served prefix: the usual 404. */
    get("GET", "/mediax/hello.txt", NULL, &r, 404);
    rw_test_response_free(&r);
}

/* ---- traversal: every attempt refused, nothing outside the root read ---------------------- */

/* Waits (bounded) for the access-log line of request_id and returns its
 * "error" field (static), or NULL when the line has none. */
static const char *log_error_of(const char *request_id)
{
    static char err[512];
    for (int attempt = 0; attempt < 100; attempt++) {
        FILE *f = fopen(S.log, "r");
        assert_non_null(f);
        char line[8192];
        while (fgets(line, sizeof line, f)) {
            if (line[0] != '{' || !strstr(line, request_id))
                continue;
            fclose(f);
            cJSON *j = cJSON_Parse(line);
            assert_non_null(j);
            cJSON *e = cJSON_GetObjectItem(j, "error");
            const char *out = NULL;
            if (cJSON_IsString(e)) {
                snprintf(err, sizeof err, "%s", e->valuestring);
                out = err;
            }
            cJSON_Delete(j);
            return out;
        }
        fclose(f);
        rw_test_sleep_ms(50);
    }
    fail_msg("no access-log line for request %s", request_id);
    return NULL;
}

static void refused(const char *path, int status, const char *log_reason)
{
    rw_test_response_t r;
    get("GET", path, NULL, &r, status);
    assert_null(strstr(r.body ? r.body : "", "SECRET"));
    assert_null(strstr(r.body ? r.body : "", "root:"));
    assert_json_error(&r, status == 400 ? "Bad Request" : "Not Found");
    if (log_reason) {
        const char *e = log_error_of(hdr(&r, "x-request-id"));
        if (!e || !strstr(e, log_reason))
            fprintf(stderr, "%s: logged '%s', want '%s'\n", path, e ? e : "(none)", log_reason);
        assert_non_null(e);
        assert_non_null(strstr(e, log_reason));
    }
    rw_test_response_free(&r);
}

static void traversal_raw(void **state)
{
    refused("/media/../outside/secret", 400, "'..'");
    refused("/media/a/../../outside/secret", 400, "'..'");
    refused("/media/reels/../../../../etc/passwd", 400, "'..'");
    refused("/media//etc/passwd", 400, "starts with '/'");
    refused("/media/a//b", 400, "empty segment");
    refused("/media/a/./b", 400, "'.'");
    refused("/media/./hello.txt", 400, "'.'");
    refused("/media/hello.txt/", 400, "ends with '/'");
}

static void traversal_encoded(void **state)
{
    refused("/media/%2e%2e/outside/secret", 400, "'..'");
    refused("/media/%2E%2E%2Foutside%2Fsecret", 400, "'..'");
    refused("/media/..%2Foutside%2Fsecret", 400, "'..'");
    refused("/media/a%2F..%2F..%2Foutside%2Fsecret", 400, "'..'");
    refused("/media/%2Fetc%2Fpasswd", 400, "starts with '/'");
    refused("/media/a%2F%2Fb", 400, "empty segment");
    refused("/media/a%2F.%2Fb", 400, "'.'");
    refused("/media/hello.txt%00.png", 400, "NUL");
    refused("/media/..%5C..%5Coutside", 400, "backslash");
    refused("/media/%c0%ae%c0%ae/outside/secret", 400, "UTF-8"); /* overlong ".." */
    refused("/media/%252e%252e/outside", 404, NULL);             /* decoded once: a name */
}

static void traversal_symlinks(void **state)
{
    /* Links planted in the bucket: refused before their target is opened. */
    refused("/media/evil", 404, "symbolic link");
    refused("/media/dirlink/secret", 404, "symbolic link");
    refused("/media/dirlink%2Fsecret", 404, "symbolic link");
    refused("/media/dir/up/outside/secret", 404, "symbolic link");
    char p[700];
    snprintf(p, sizeof p, "%s/secret", S.outside);
    struct stat st;
    assert_int_equal(stat(p, &st), 0); /* still there, unchanged */
    assert_int_equal(st.st_size, 25);
}

/* ---- sizes ------------------------------------------------------------------------------ */

static void mid_object_byte_for_byte(void **state)
{
    rw_test_response_t r;
    get("GET", "/media/reels/abc/720.webp", NULL, &r, 200);
    assert_int_equal(r.body_len, MID_SIZE);
    assert_memory_equal(r.body, S.mid, MID_SIZE);
    rw_test_response_free(&r);
    get("GET", "/media/reels/abc/720.webp", "Range: bytes=100000-200000\r\n", &r, 206);
    assert_int_equal(r.body_len, 100001);
    assert_memory_equal(r.body, S.mid + 100000, 100001);
    rw_test_response_free(&r);
}

static void big_object_byte_for_byte(void **state)
{
    rw_test_response_t r;
    get("GET", "/media/reels/abc/video.mp4", NULL, &r, 200);
    assert_int_equal(r.body_len, BIG_SIZE);
    char sha[65];
    sha256_hex(r.body, r.body_len, sha);
    assert_string_equal(sha, S.big_sha);
    assert_memory_equal(r.body, S.big, BIG_SIZE);
    rw_test_response_free(&r);
    /* The last 5 MB, as a player seeking does. */
    get("GET", "/media/reels/abc/video.mp4", "Range: bytes=-5242880\r\n", &r, 206);
    assert_int_equal(r.body_len, 5242880);
    assert_memory_equal(r.body, S.big + BIG_SIZE - 5242880, 5242880);
    rw_test_response_free(&r);
}

/* Several requests on one keep-alive connection, one after the other. */
static void keep_alive(void **state)
{
    int fd = rw_test_connect(S.port);
    assert_true(fd >= 0);
    for (int i = 0; i < 3; i++) {
        const char *req = "GET /media/reels/abc/720.webp HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_int_equal(rw_test_send(fd, req, strlen(req)), 0);
        rw_test_response_t r;
        assert_int_equal(rw_test_read_response(fd, &r, false), 0);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, MID_SIZE);
        assert_memory_equal(r.body, S.mid, MID_SIZE);
        assert_false(r.closed);
        rw_test_response_free(&r);
    }
    close(fd);
}

/* ---- clients that go away ---------------------------------------------------------------- */

static pid_t worker_pid(void)
{
    char p[128], buf[256] = "";
    snprintf(p, sizeof p, "/proc/%d/task/%d/children", (int)S.proc.pid, (int)S.proc.pid);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    pid_t pid = (pid_t)atoi(buf);
    assert_true(pid > 0);
    return pid;
}

static uint64_t proc_field(pid_t pid, const char *file, const char *name)
{
    char p[128], line[256];
    snprintf(p, sizeof p, "/proc/%d/%s", (int)pid, file);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    uint64_t v = UINT64_MAX;
    size_t nl = strlen(name);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, nl) == 0 && line[nl] == ':')
            v = strtoull(line + nl + 1, NULL, 10);
    fclose(f);
    assert_true(v != UINT64_MAX);
    return v;
}

static int open_fds(pid_t pid)
{
    char p[128];
    snprintf(p, sizeof p, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(p);
    assert_non_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 2;
}

/* Connects with a small receive buffer (so the kernel does not take the
 * whole object for us) and asks for the 20 MB object. */
static int start_download(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    int rcv = 64 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)S.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char *req = "GET /media/reels/abc/video.mp4 HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(rw_test_send(fd, req, strlen(req)), 0);
    return fd;
}

static size_t read_some(int fd, size_t want)
{
    static char buf[65536];
    size_t got = 0;
    while (got < want) {
        ssize_t n = read(fd, buf, sizeof buf < want - got ? sizeof buf : want - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    return got;
}

/* Closes with RST (unread data is dropped, as a killed browser tab does). */
static void abandon(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* Waits (bounded) until the worker holds no more fds than it did at rest. */
static void wait_fds(pid_t pid, int baseline)
{
    for (int i = 0; i < 200 && open_fds(pid) > baseline; i++)
        rw_test_sleep_ms(25);
    assert_in_range(open_fds(pid), 0, baseline);
}

/* The worker's fd count once it stops moving (a response's object fd is
 * closed on the threadpool just after the response): three equal samples. */
static int settled_fds(pid_t pid)
{
    int last = open_fds(pid), same = 0;
    for (int i = 0; i < 100 && same < 3; i++) {
        rw_test_sleep_ms(20);
        int now = open_fds(pid);
        same = now == last ? same + 1 : 0;
        last = now;
    }
    return last;
}

static void disconnect_mid_download(void **state)
{
    pid_t w = worker_pid();
    /* Warm up: one whole download, so buffers, threads and arenas exist. */
    rw_test_response_t r;
    get("GET", "/media/reels/abc/video.mp4", NULL, &r, 200);
    assert_int_equal(r.body_len, BIG_SIZE);
    rw_test_response_free(&r);
    int fds = settled_fds(w);
    uint64_t rss0 = proc_field(w, "status", "VmRSS");
    uint64_t rchar0 = proc_field(w, "io", "rchar");

    /* 20 clients, one after the other, each gone after 256 KiB. */
    const int rounds = 20;
    for (int i = 0; i < rounds; i++) {
        int fd = start_download();
        assert_true(read_some(fd, 256 * 1024) == 256 * 1024);
        abandon(fd);
        wait_fds(w, fds); /* the object's fd is closed: the pipeline is down */
    }
    /* 8 at once that stop reading: the worker holds its high-water marks,
     * not the objects. */
    int stalled[8];
    for (int i = 0; i < 8; i++) {
        stalled[i] = start_download();
        assert_true(read_some(stalled[i], 4096) == 4096);
    }
    rw_test_sleep_ms(500);
    uint64_t rss_stalled = proc_field(w, "status", "VmRSS");
    assert_true(open_fds(w) >= fds + 8); /* 8 sockets and 8 objects open */
    for (int i = 0; i < 8; i++)
        abandon(stalled[i]);
    wait_fds(w, fds);
    uint64_t rss1 = proc_field(w, "status", "VmRSS");
    uint64_t rchar1 = proc_field(w, "io", "rchar");
    uint64_t read_mb = (rchar1 - rchar0) >> 20;
    print_message("worker VmRSS %llu kB at rest, %llu kB with 8 stalled clients, %llu kB after; "
                  "read %llu MiB for %d abandoned downloads of 20 MiB\n",
                  (unsigned long long)rss0, (unsigned long long)rss_stalled,
                  (unsigned long long)rss1, (unsigned long long)read_mb, rounds + 8);
    /* Flat: what is held is bounded by the high-water marks, not the sizes
     * (28 downloads of 20 MiB would be 560 MiB). */
    assert_true(rss_stalled < rss0 + 24 * 1024);
    assert_true(rss1 < rss0 + 24 * 1024);
    /* The reads stopped: each abandoned download read what the client took,
     * the socket buffers and the HWMs, far from its 20 MiB. */
    assert_true(read_mb < (uint64_t)(rounds + 8) * 10);
    /* And the worker still serves. */
    get("GET", "/media/hello.txt", NULL, &r, 200);
    rw_test_response_free(&r);
}

/* ---- the default ServePath ---------------------------------------------------------------- */

static void default_serve_path(void **state)
{
    char dir[512], log[600];
    assert_int_equal(rw_test_tmpdir(dir, sizeof dir, "rw-media-default"), 0);
    snprintf(log, sizeof log, "%s/reelway.log", dir);
    /* No bucket names a ServePath: the first one is served at /media, from
     * the data directory's buckets/NAME. */
    const char *tpl = "AWSTemplateFormatVersion: \"2010-09-09\"\n"
                      "Transform: AWS::Serverless-2016-10-31\n"
                      "Resources:\n"
                      "  Photos:\n"
                      "    Type: AWS::S3::Bucket\n"
                      "    Properties:\n"
                      "      BucketName: photos\n"
                      "  Other:\n"
                      "    Type: AWS::S3::Bucket\n"
                      "    Properties:\n"
                      "      BucketName: other\n";
    char bdir[700];
    snprintf(bdir, sizeof bdir, "%s/buckets/photos", dir);
    rw_bucket_opts_t bo = {.create = true};
    rw_bucket_t *b;
    assert_int_equal(rw_bucket_open(bdir, &bo, &b, NULL, 0), 0);
    put_object(b, "p/1.jpg", "JPEG", 4, NULL, NULL);
    rw_bucket_free(b);
    rw_test_proc_t proc;
    int port = start_reelway(&proc, dir, tpl, log);
    assert_true(port > 0);
    rw_test_response_t r;
    assert_int_equal(rw_test_http(port, "GET", "/media/p/1.jpg", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "JPEG", 4);
    rw_test_response_free(&r);
    int status = rw_test_proc_stop(&proc, SIGTERM, 30000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_false(log_has_trouble(log));
    rw_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(get_whole_object),
        cmocka_unit_test(head_request),
        cmocka_unit_test(cache_control_by_key),
        cmocka_unit_test(ranges_first_last),
        cmocka_unit_test(ranges_open_ended),
        cmocka_unit_test(ranges_suffix),
        cmocka_unit_test(ranges_unsatisfiable),
        cmocka_unit_test(ranges_ignored),
        cmocka_unit_test(if_range),
        cmocka_unit_test(if_none_match),
        cmocka_unit_test(if_modified_since),
        cmocka_unit_test(if_none_match_wins),
        cmocka_unit_test(if_match_preconditions),
        cmocka_unit_test(not_found_bad_request_method),
        cmocka_unit_test(traversal_raw),
        cmocka_unit_test(traversal_encoded),
        cmocka_unit_test(traversal_symlinks),
        cmocka_unit_test(mid_object_byte_for_byte),
        cmocka_unit_test(big_object_byte_for_byte),
        cmocka_unit_test(keep_alive),
        cmocka_unit_test(disconnect_mid_download),
        cmocka_unit_test(default_serve_path),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
