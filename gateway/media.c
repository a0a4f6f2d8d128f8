/* Media serving: GET/HEAD {ServePath}/{key+} opens the object on the
 * threadpool (no links followed, see reelway/bucket.h), answers conditional
 * and range requests from its stored metadata, and streams the bytes through
 * a pipeline (file readable -> response writable) with backpressure; a client
 * that goes away tears the pipeline down and stops the file reads. */
#include "media.h"

#include "internal.h"
#include "router.h"
#include "template.h"

#include "reelway/bucket.h"
#include "reelway/error.h"
#include "reelway/stream.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Bytes per file read, and what the file readable keeps ahead. */
#define READ_CHUNK (128 * 1024)
/* Resume reading once the client's queue is down to this (the server says
 * stop at 256 KiB). */
#define CLIENT_LOW_WATER (128 * 1024)

typedef struct served_s {
    const char *path; /* the ServePath, from the template */
    size_t path_len;
    const char *name; /* the bucket's logical id */
    rw_bucket_t *bucket;
} served_t;

struct gw_media_s {
    served_t *served;
    size_t n;
};

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- header parsing ------------------------------------------------------------------- */

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Digits into a saturating uint64 (a position past any object is as good as
 * infinity); false when there is no digit. */
static bool parse_pos(const char **pp, uint64_t *out)
{
    const char *p = *pp;
    if (!isdigit((unsigned char)*p))
        return false;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
    }
    *pp = p;
    *out = v;
    return true;
}

int rw__media_parse_range(const char *value, uint64_t size, uint64_t *first, uint64_t *last)
{
    const char *p = skip_ows(value);
    if (strncasecmp(p, "bytes", 5) != 0)
        return 0;
    p = skip_ows(p + 5);
    if (*p++ != '=')
        return 0;
    int count = 0;
    bool satisfiable = false;
    uint64_t f = 0, l = 0;
    for (;;) {
        p = skip_ows(p);
        if (*p == ',') { /* empty list elements are allowed (RFC 9110 5.6.1) */
            p++;
            continue;
        }
        if (*p == '\0')
            break;
        uint64_t a, b;
        bool ok;
        if (*p == '-') {
            p++;
            if (!parse_pos(&p, &b))
                return 0;
            /* Suffix: the last b bytes; none of an empty object, nor "-0". */
            ok = b > 0 && size > 0;
            a = b >= size ? 0 : size - b;
            b = size ? size - 1 : 0;
        } else {
            if (!parse_pos(&p, &a) || *p++ != '-')
                return 0;
            if (parse_pos(&p, &b)) {
                if (b < a)
                    return 0; /* an invalid range-spec: the header is ignored */
            } else {
                b = UINT64_MAX;
            }
            ok = a < size;
            if (b >= size)
                b = size ? size - 1 : 0;
        }
        p = skip_ows(p);
        if (*p != ',' && *p != '\0')
            return 0;
        count++;
        if (ok) {
            satisfiable = true;
            f = a;
            l = b;
        }
    }
    if (count == 0)
        return 0;
    if (!satisfiable)
        return -1;
    if (count > 1)
        return 0; /* several ranges: the whole object, 200 (documented) */
    *first = f;
    *last = l;
    return 1;
}

static int month_of(const char *m)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++)
        if (strncmp(m, months + 3 * i, 3) == 0)
            return i;
    return -1;
}

static bool all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int num(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

/* hh:mm:ss at s */
static bool parse_clock(const char *s, struct tm *tm)
{
    if (!all_digits(s, 2) || s[2] != ':' || !all_digits(s + 3, 2) || s[5] != ':' ||
        !all_digits(s + 6, 2))
        return false;
    tm->tm_hour = num(s, 2);
    tm->tm_min = num(s + 3, 2);
    tm->tm_sec = num(s + 6, 2);
    return tm->tm_hour < 24 && tm->tm_min < 60 && tm->tm_sec < 61;
}

bool rw__media_parse_date(const char *v, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    v = skip_ows(v);
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    const char *comma = memchr(v, ',', n);
    if (comma && comma - v == 3 && n == 29) {
        /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
        if (v[4] != ' ' || !all_digits(v + 5, 2) || v[7] != ' ' || v[11] != ' ' ||
            !all_digits(v + 12, 4) || v[16] != ' ' || !parse_clock(v + 17, &tm) ||
            memcmp(v + 25, " GMT", 4) != 0)
            return false;
        tm.tm_mday = num(v + 5, 2);
        tm.tm_mon = month_of(v + 8);
        tm.tm_year = num(v + 12, 4) - 1900;
    } else if (comma) {
        /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
        const char *d = comma + 1;
        if ((size_t)(v + n - d) != 23 || d[0] != ' ' || !all_digits(d + 1, 2) || d[3] != '-' ||
            d[7] != '-' || !all_digits(d + 8, 2) || d[10] != ' ' || !parse_clock(d + 11, &tm) ||
            memcmp(d + 19, " GMT", 4) != 0)
            return false;
        tm.tm_mday = num(d + 1, 2);
        tm.tm_mon = month_of(d + 4);
        int yy = num(d + 8, 2);
        /* RFC 9110 5.6.7: a two-digit year more than 50 years in the future
         * is the most recent past year with those digits. */
        time_t now = time(NULL);
        struct tm nt;
        gmtime_r(&now, &nt);
        int year = 1900 + nt.tm_year - (1900 + nt.tm_year) % 100 + yy;
        if (year > 1900 + nt.tm_year + 50)
            year -= 100;
        tm.tm_year = year - 1900;
    } else if (n == 24) {
        /* asctime: "Sun Nov  6 08:49:37 1994" */
        if (v[3] != ' ' || v[7] != ' ' || !(v[8] == ' ' || isdigit((unsigned char)v[8])) ||
            !isdigit((unsigned char)v[9]) || v[10] != ' ' || !parse_clock(v + 11, &tm) ||
            v[19] != ' ' || !all_digits(v + 20, 4))
            return false;
        tm.tm_mon = month_of(v + 4);
        tm.tm_mday = (v[8] == ' ' ? 0 : v[8] - '0') * 10 + (v[9] - '0');
        tm.tm_year = num(v + 20, 4) - 1900;
    } else {
        return false;
    }
    if (tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_mday > 31)
        return false;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *out = (int64_t)t;
    return true;
}

bool rw__media_etag_match(const char *value, const char *etag_hex, bool strong)
{
    const char *p = skip_ows(value);
    if (*p == '*')
        return *skip_ows(p + 1) == '\0';
    size_t hn = strlen(etag_hex);
    while (*p) {
        p = skip_ows(p);
        bool weak = false;
        if (p[0] == 'W' && p[1] == '/') {
            weak = true;
            p += 2;
        }
        if (*p == '"') {
            const char *q = strchr(p + 1, '"');
            if (q == NULL)
                return false;
            size_t n = (size_t)(q - p - 1);
            if (n == hn && memcmp(p + 1, etag_hex, hn) == 0 && !(strong && weak))
                return true;
            p = q + 1;
        }
        /* on to the next member (a malformed one is skipped) */
        const char *c = strchr(p, ',');
        if (c == NULL)
            break;
        p = c + 1;
    }
    return false;
}

/* ---- building ---------------------------------------------------------------------------- */

static bool under(const char *path, size_t len, const char *prefix, size_t plen)
{
    return len >= plen && memcmp(path, prefix, plen) == 0 && (len == plen || path[plen] == '/');
}

/* Would an API take requests under path (with no ServePath declared, the
 * default must not shadow a route)? */
static bool api_claims(const rw_template_t *tpl, const char *path)
{
    size_t plen = strlen(path);
    for (size_t a = 0; a < tpl->api_count; a++) {
        const rw_tpl_api_t *api = &tpl->apis[a];
        size_t ml = strlen(api->mount);
        if (under(api->mount, ml, path, plen))
            return true; /* mounted at or below it */
        if (!under(path, plen, api->mount, ml))
            continue;
        const char *rest = path + ml;
        for (size_t r = 0; r < api->route_count; r++) {
            const rw_tpl_route_t *rt = &api->routes[r];
            if (rt->is_default || rt->path[1] == '{' ||
                under(rt->path, strlen(rt->path), rest, strlen(rest)))
                return true;
        }
    }
    return false;
}

int rw__media_build(rw_gateway_t *gw, char *why, size_t whylen)
{
    const rw_template_t *tpl = gw->node.tpl;
    if (tpl == NULL || tpl->bucket_count == 0)
        return 0;
    gw_media_t *m = calloc(1, sizeof *m);
    if (m == NULL)
        return UV_ENOMEM;
    m->served = calloc(tpl->bucket_count, sizeof *m->served);
    if (m->served == NULL) {
        free(m);
        return UV_ENOMEM;
    }
    gw->media = m;
    bool any = false;
    for (size_t i = 0; i < tpl->bucket_count; i++)
        any = any || tpl->buckets[i].serve_path != NULL;
    for (size_t i = 0; i < tpl->bucket_count; i++) {
        const rw_tpl_bucket_t *tb = &tpl->buckets[i];
        const char *path = tb->serve_path;
        if (!any && tb->storage == RW_TPL_STORAGE_FILESYSTEM) {
            any = true; /* the first filesystem bucket only */
            if (api_claims(tpl, RW_MEDIA_DEFAULT_SERVE_PATH))
                fprintf(stderr,
                        "reelway: bucket %s is not served at %s by default: an API has routes "
                        "there (set Metadata.Reelway.ServePath)\n",
                        tb->name, RW_MEDIA_DEFAULT_SERVE_PATH);
            else
                path = RW_MEDIA_DEFAULT_SERVE_PATH;
        }
        if (path == NULL)
            continue;
        if (tb->storage != RW_TPL_STORAGE_FILESYSTEM) {
            snprintf(why, whylen,
                     "bucket %s: serving a gridfs bucket at its ServePath is not supported yet",
                     tb->name);
            return RW_ECONFIG;
        }
        char dir[8192];
        if (tb->directory)
            snprintf(dir, sizeof dir, "%s", tb->directory);
        else
            snprintf(dir, sizeof dir, "%s/buckets/%s", gw->cfg.data_dir, tb->bucket_name);
        served_t *s = &m->served[m->n];
        rw_bucket_opts_t o = {.create = true};
        char reason[512];
        int rc = rw_bucket_open(dir, &o, &s->bucket, reason, sizeof reason);
        if (rc != 0) {
            snprintf(why, whylen, "bucket %s: %s", tb->name, reason);
            return rc;
        }
        s->path = path;
        s->path_len = strlen(path);
        s->name = tb->name;
        m->n++;
    }
    return 0;
}

void rw__media_free(rw_gateway_t *gw)
{
    gw_media_t *m = gw->media;
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n; i++)
        rw_bucket_free(m->served[i].bucket);
    free(m->served);
    free(m);
    gw->media = NULL;
}

/* ---- one request ---------------------------------------------------------------------------- */

typedef struct media_req_s {
    rw_gateway_t *gw;
    gw_req_t *ctx;
    rw_http_req_t *req; /* NULL once ended */
    const served_t *srv;
    rw_bucket_get_t get;
    uv_file fd;
    uv_fs_t close_req;
    rw_file_readable_t file;
    rw_stream_t sink; /* the response body as a writable */
    rw_pipeline_t pipe;
    int open_streams;
    unsigned writes; /* rw_http_res_write callbacks to come */
    bool aborted;    /* the client went away (or timed out) */
    bool sink_wait;  /* a sink write waits for the client's queue to go down */
    bool pipe_running;
    bool fd_closing;
    /* header values */
    char etag[70];
    char last_modified[40];
    char content_range[96];
    const char *cache_control;
} media_req_t;

typedef struct sink_write_s {
    media_req_t *m;
    rw_chunk_t chunk;
} sink_write_t;

static void maybe_free(media_req_t *m)
{
    if (m->req || m->writes || m->open_streams || m->fd >= 0 || m->fd_closing)
        return;
    rw_gateway_t *gw = m->gw;
    free(m);
    rw__gateway_work_done(gw); /* last: the gateway may be waiting to go */
}

static void on_fd_closed(uv_fs_t *r)
{
    media_req_t *m = r->data;
    uv_fs_req_cleanup(r);
    m->fd_closing = false;
    maybe_free(m);
}

static void close_fd(media_req_t *m)
{
    if (m->fd < 0)
        return;
    uv_file fd = m->fd;
    m->fd = -1;
    m->close_req.data = m;
    m->fd_closing = true;
    if (uv_fs_close(m->gw->loop, &m->close_req, fd, on_fd_closed) != 0)
        m->fd_closing = false; /* cannot happen with a valid fd and loop */
}

/* Ends the HTTP request (exactly once), then lets go of what remains. */
static void end_request(media_req_t *m, bool cut)
{
    rw_http_req_t *req = m->req;
    if (req == NULL)
        return;
    m->req = NULL;
    if (cut)
        rw_http_res_abort(req);
    else
        rw_http_res_end(req, NULL, 0);
}

static void fail(media_req_t *m, int status, const char *message, const char *reason)
{
    snprintf(m->ctx->error_reason, sizeof m->ctx->error_reason, "%s", reason ? reason : message);
    rw_http_respond_error(m->req, status, message, status < 500 ? reason : NULL, NULL, 0);
    m->req = NULL; /* rw_http_respond_error ended it */
}

/* ---- the response body as a writable stream ---- */

static void on_client_written(rw_http_req_t *req, int status, void *arg)
{
    sink_write_t *w = arg;
    media_req_t *m = w->m;
    rw_chunk_release(&w->chunk);
    free(w);
    m->writes--;
    if (m->sink_wait &&
        (status < 0 || m->req == NULL || rw_http_res_queued(req) <= CLIENT_LOW_WATER)) {
        m->sink_wait = false;
        rw_writable_write_done(&m->sink, status < 0 ? status : 0);
    }
    maybe_free(m);
}

static void sink_write(rw_stream_t *s, rw_chunk_t chunk)
{
    media_req_t *m = container_of(s, media_req_t, sink);
    sink_write_t *w = m->req ? malloc(sizeof *w) : NULL;
    if (w == NULL) {
        rw_chunk_release(&chunk);
        rw_writable_write_done(s, m->req ? UV_ENOMEM : UV_ECONNRESET);
        return;
    }
    w->m = m;
    w->chunk = chunk;
    /* The chunk's bytes go to the socket as they are (no copy): the chunk is
     * held until the write's callback. */
    int rc = rw_http_res_write(m->req, chunk.base, chunk.len, true, on_client_written, w);
    if (rc < 0) {
        rw_chunk_release(&w->chunk);
        free(w);
        rw_writable_write_done(s, rc);
        return;
    }
    m->writes++;
    if (rc == 1)
        rw_writable_write_done(s, 0);
    else
        m->sink_wait = true; /* over the client's high-water mark */
}

static const rw_stream_impl_t sink_impl = {.write = sink_write};

static void on_stream_closed(rw_stream_t *s)
{
    media_req_t *m = s->data;
    if (--m->open_streams == 0)
        close_fd(m); /* no read is in flight on it any more */
    maybe_free(m);
}

static void on_piped(rw_pipeline_t *p, int err)
{
    media_req_t *m = p->data;
    m->pipe_running = false;
    if (err != 0 && !m->aborted)
        snprintf(m->ctx->error_reason, sizeof m->ctx->error_reason, "reading the object: %s",
                 rw_strerror(err));
    /* A failure after the status went out can only cut the connection. */
    end_request(m, err != 0 && !m->aborted);
    rw_stream_close(&m->file.stream, on_stream_closed);
    rw_stream_close(&m->sink, on_stream_closed);
}

static void on_abort(rw_http_req_t *req, int err)
{
    media_req_t *m = req->data;
    m->aborted = true;
    /* Tear the pipeline down: the file readable stops reading. on_piped
     * then ends the request. Before the pipeline, on_got does. */
    if (m->pipe_running)
        rw_stream_destroy(&m->sink, err ? err : UV_ECONNRESET);
}

static int stream_body(media_req_t *m, uint64_t offset, uint64_t length)
{
    uv_loop_t *loop = m->gw->loop;
    rw_stream_opts_t ro = {.readable_hwm = READ_CHUNK};
    int rc = rw_file_readable_init(loop, &m->file, m->fd, (int64_t)offset, (int64_t)length,
                                   READ_CHUNK, &ro);
    if (rc != 0)
        return rc;
    m->file.stream.data = m;
    m->open_streams++;
    rw_stream_opts_t wo = {.writable_hwm = READ_CHUNK};
    rc = rw_writable_init(loop, &m->sink, &sink_impl, &wo);
    if (rc == 0) {
        m->sink.data = m;
        m->open_streams++;
        m->pipe.data = m;
        rc = rw_pipeline(&m->pipe, on_piped, &m->file.stream, &m->sink, NULL);
    }
    if (rc != 0) {
        rw_stream_close(&m->file.stream, on_stream_closed);
        if (m->open_streams == 2)
            rw_stream_close(&m->sink, on_stream_closed);
        return rc;
    }
    m->pipe_running = true;
    return 0;
}

/* Every If-None-Match / If-Match line, joined: a list may span several. */
static bool header_any_match(const rw_http_req_t *req, const char *name, const char *sha,
                             bool strong, bool *present)
{
    *present = false;
    size_t nl = strlen(name);
    for (size_t i = 0; i < req->n_headers; i++) {
        const rw_http_header_t *h = &req->headers[i];
        if (h->name_len != nl || strncasecmp(h->name, name, nl) != 0)
            continue;
        *present = true;
        if (rw__media_etag_match(h->value, sha, strong))
            return true;
    }
    return false;
}

/* The object is open: decide the answer (RFC 9110 13.2.2 order), then send
 * the head and, for GET, stream the body. */
static void answer(media_req_t *m)
{
    rw_http_req_t *req = m->req;
    const rw_bucket_meta_t *meta = &m->get.meta;
    bool head = !strcmp(req->method, "HEAD");
    snprintf(m->etag, sizeof m->etag, "\"%s\"", meta->sha256);
    rw_http_date(m->last_modified, sizeof m->last_modified, meta->mtime);
    if (meta->cache_control[0])
        m->cache_control = meta->cache_control;
    else if (rw_bucket_key_content_addressed(m->get.key, m->get.key_len, meta->sha256))
        m->cache_control = RW_MEDIA_CACHE_IMMUTABLE;
    else
        m->cache_control = RW_MEDIA_CACHE_DEFAULT;
    rw_http_header_t hs[12];
    size_t n = 0;
#define H(name, value) hs[n++] = (rw_http_header_t){name, strlen(name), value, strlen(value)}
    H("ETag", m->etag);
    H("Last-Modified", m->last_modified);
    H("Cache-Control", m->cache_control);

    /* Preconditions: If-Match, else If-Unmodified-Since -> 412. */
    bool present;
    const char *v;
    int64_t date;
    bool im = header_any_match(req, "if-match", meta->sha256, true, &present);
    if (present ? !im
                : ((v = rw_http_req_header(req, "if-unmodified-since")) &&
                   rw__media_parse_date(v, &date) && meta->mtime > date)) {
        rw_http_respond_error(req, 412, "Precondition Failed", NULL, hs, n);
        m->req = NULL;
        return;
    }
    /* If-None-Match (wins over If-Modified-Since when both came) -> 304. */
    bool inm = header_any_match(req, "if-none-match", meta->sha256, false, &present);
    bool not_modified = present ? inm
                                : ((v = rw_http_req_header(req, "if-modified-since")) &&
                                   rw__media_parse_date(v, &date) && meta->mtime <= date);
    if (not_modified) {
        rw_http_res_start(req, 304, hs, n, -1);
        end_request(m, false);
        return;
    }
    /* Range, honoured for GET and mirrored for HEAD (nginx does the same),
     * unless If-Range names another version. */
    uint64_t first = 0, last = 0;
    int range = 0;
    const char *rv = rw_http_req_header(req, "range");
    if (rv) {
        const char *ir = rw_http_req_header(req, "if-range");
        bool current = true;
        if (ir) {
            const char *t = skip_ows(ir);
            if (*t == '"' || (t[0] == 'W' && t[1] == '/'))
                current = rw__media_etag_match(t, meta->sha256, true) && *t == '"';
            else
                current = rw__media_parse_date(t, &date) && date == meta->mtime;
        }
        if (current)
            range = rw__media_parse_range(rv, meta->size, &first, &last);
    }
    if (range < 0) {
        snprintf(m->content_range, sizeof m->content_range, "bytes */%llu",
                 (unsigned long long)meta->size);
        H("Content-Range", m->content_range);
        rw_http_respond_error(req, 416, "Range Not Satisfiable", NULL, hs, n);
        m->req = NULL;
        return;
    }
    H("Content-Type", meta->content_type);
    H("Accept-Ranges", "bytes");
    /* Objects are whatever an uploader sent: never sniffed into something
     * active, and inert if opened as a page (as GitHub serves user content). */
    H("X-Content-Type-Options", "nosniff");
    H("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox");
    uint64_t offset = 0, length = meta->size;
    int status = 200;
    if (range > 0) {
        status = 206;
        offset = first;
        length = last - first + 1;
        snprintf(m->content_range, sizeof m->content_range, "bytes %llu-%llu/%llu",
                 (unsigned long long)first, (unsigned long long)last,
                 (unsigned long long)meta->size);
        H("Content-Range", m->content_range);
    }
#undef H
    int rc = rw_http_res_start(req, status, hs, n, (int64_t)length);
    if (rc != 0 || head || length == 0) {
        end_request(m, false);
        return;
    }
    rc = stream_body(m, offset, length);
    if (rc != 0) {
        snprintf(m->ctx->error_reason, sizeof m->ctx->error_reason, "streaming the object: %s",
                 rw_strerror(rc));
        end_request(m, true);
    }
}

static void on_got(rw_bucket_get_t *get, int status)
{
    media_req_t *m = get->data;
    m->fd = get->fd;
    if (m->aborted) {
        end_request(m, false);
    } else if (status == 0) {
        answer(m);
    } else if (status == RW_ENOTFOUND) {
        fail(m, 404, "Not Found", "no object has this key");
    } else if (status == UV_ELOOP) {
        /* A link planted in the bucket: not an object, and not worth telling
         * the client more; the log says why. */
        snprintf(m->ctx->error_reason, sizeof m->ctx->error_reason,
                 "a symbolic link is on the key's path (refused)");
        rw_http_respond_error(m->req, 404, "Not Found", "no object has this key", NULL, 0);
        m->req = NULL;
    } else if (status == UV_EINVAL || status == UV_ENAMETOOLONG) {
        fail(m, 400, "Bad Request", "invalid key");
    } else if (status == RW_EPARSE) {
        fail(m, 500, "Internal server error", "the object's file has no valid reelway metadata");
    } else {
        char reason[128];
        snprintf(reason, sizeof reason, "opening the object: %s", rw_strerror(status));
        fail(m, 500, "Internal server error", reason);
    }
    if (m->open_streams == 0)
        close_fd(m); /* nothing streams from it */
    maybe_free(m);
}

bool rw__media_route(rw_gateway_t *gw, rw_http_req_t *req)
{
    gw_media_t *media = gw->media;
    if (media == NULL)
        return false;
    const served_t *srv = NULL;
    for (size_t i = 0; i < media->n; i++) {
        const served_t *s = &media->served[i];
        if (under(req->path, req->path_len, s->path, s->path_len) &&
            (!srv || s->path_len > srv->path_len))
            srv = s;
    }
    if (srv == NULL)
        return false;
    /* The longest mount wins (docs/template.md): an API mounted below the
     * ServePath takes its own requests. */
    for (size_t a = 0; a < gw->n_apis; a++)
        if (gw->apis[a].mount_len > srv->path_len &&
            under(req->path, req->path_len, gw->apis[a].tpl->mount, gw->apis[a].mount_len))
            return false;
    gw_req_t *ctx = rw__app_ctx(gw, req, RW_APP_RID_MEDIA);
    if (ctx == NULL) {
        rw_http_respond_error(req, 503, "Service Unavailable", "out of memory", NULL, 0);
        return true;
    }
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        rw_http_header_t allow = {"Allow", 5, "GET, HEAD", 9};
        rw_http_respond_error(req, 405, "Method Not Allowed", "use GET or HEAD", &allow, 1);
        return true;
    }
    size_t off = srv->path_len + (req->path_len > srv->path_len ? 1 : 0);
    size_t klen = 0;
    char *key = rw_percent_decode(req->path + off, req->path_len - off, &klen);
    const char *why = NULL;
    if (key == NULL) {
        why = "invalid percent-encoding (or an encoded NUL) in the key";
    } else if (rw_bucket_key_check(key, klen, &why) != 0) {
        /* why is set */
    }
    if (why) {
        snprintf(ctx->error_reason, sizeof ctx->error_reason, "%s", why);
        rw_http_respond_error(req, 400, "Bad Request", why, NULL, 0);
        free(key);
        return true;
    }
    media_req_t *m = calloc(1, sizeof *m);
    if (m == NULL) {
        free(key);
        rw_http_respond_error(req, 503, "Service Unavailable", "out of memory", NULL, 0);
        return true;
    }
    m->gw = gw;
    m->ctx = ctx;
    m->req = req;
    m->srv = srv;
    m->fd = -1;
    m->get.data = m;
    int rc = rw_bucket_get(gw->loop, srv->bucket, &m->get, key, klen, on_got);
    free(key);
    if (rc != 0) {
        free(m);
        char reason[128];
        snprintf(reason, sizeof reason, "cannot queue the read: %s", rw_strerror(rc));
        snprintf(ctx->error_reason, sizeof ctx->error_reason, "%s", reason);
        rw_http_respond_error(req, 500, "Internal server error", NULL, NULL, 0);
        return true;
    }
    gw->pending_work++;
    req->data = m;
    rw_http_req_on_abort(req, on_abort);
    return true;
}
