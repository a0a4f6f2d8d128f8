/* The HTTP_PROXY integration end to end: a real upstream (our HTTP server on
 * 127.0.0.1), a real front server whose routes forward to it through the
 * HTTP client, and a blocking test client. Round trips, 20 MB both ways with
 * the proxy's memory bounded, backpressure counters, disconnects, upstream
 * failures with API Gateway's answers, chunked bodies with trailers,
 * HEAD/204/304, keep-alive reuse and hop-by-hop headers. Each test ends with
 * the loop closing clean. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_client.h"
#include "integration_http_proxy.h"
#include "reelway/error.h"
#include "reelway/http.h"
#include "reelway/stream.h"
#include "router.h"
#include "rw_http_client.h"

#define MB (1024 * 1024)
#define BIG (20 * MB)
#define PIECE (64 * 1024)

typedef struct fixture_s {
    rw_test_loop_t *thread;
    uv_loop_t *loop;
    rw_http_server_t *upstream, *front;
    int up_port, front_port, down_port, bad_port;
    rw_http_client_t *client;
    rw_router_t *router;
    rw_http_proxy_stats_t stats;
    char uri_up[128], uri_down[128], uri_bad[128];
    rw_http_proxy_conf_t conf_http, conf_rest, conf_down_http, conf_down_rest, conf_slow_http,
        conf_slow_rest, conf_bad, conf_post;
    uv_tcp_t bad_listener;
    /* observed on the loop thread */
    int upstream_aborts;
    int upstream_connections_seen;
    uint64_t upload_bytes, upload_sum;
    int closes_pending;
    int stream_close_rc;
} fixture_t;

static char pattern[PIECE];

static unsigned char pattern_at(uint64_t i)
{
    return (unsigned char)((i * 131 + 7) % 251);
}

/* ---- the upstream (loop thread) ----------------------------------------- */

typedef struct job_s {
    fixture_t *fx;
    rw_http_req_t *req;
    uv_timer_t timer;
    bool timer_open;
    uint64_t remaining;     /* bytes left to send; UINT64_MAX: endless */
    unsigned pending;
    bool aborted, ended;
    uint64_t sum, seen;
    bool paused_once;
    size_t chunk_len;
    bool reset_after;       /* abort the response after the first round */
} job_t;

static void job_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void job_finish(job_t *job)
{
    if (!job->ended) {
        job->ended = true;
        rw_http_res_end(job->req, NULL, 0);
    }
    if (job->timer_open)
        uv_close((uv_handle_t *)&job->timer, job_timer_closed);
    else
        free(job);
}

static void job_abort_cb(rw_http_req_t *req, int err)
{
    job_t *job = req->data;
    job->aborted = true;
    job->fx->upstream_aborts++;
    if (job->pending == 0)
        job_finish(job);
}

static void pump(job_t *job);

static void on_job_written(rw_http_req_t *req, int status, void *arg)
{
    job_t *job = arg;
    job->pending--;
    if (job->pending > 0)
        return;
    if (job->aborted || status < 0) {
        if (job->aborted)
            job_finish(job);
        return; /* the abort callback finishes it */
    }
    if (job->reset_after) {
        job->ended = true;
        rw_http_res_abort(job->req);
        job_finish(job);
        return;
    }
    if (job->remaining > 0)
        pump(job);
    else {
        char sum[32];
        snprintf(sum, sizeof sum, "%llu", (unsigned long long)job->sum);
        rw_http_header_t tr[] = {{"X-Checksum", 10, sum, strlen(sum)}};
        job->ended = true;
        rw_http_res_end(job->req, tr, 1);
        job_finish(job);
    }
}

/* Writes the pattern until the server says stop, then waits for the writes. */
static void pump(job_t *job)
{
    while (job->remaining > 0) {
        size_t n = job->remaining < job->chunk_len ? (size_t)job->remaining : job->chunk_len;
        for (size_t i = 0; i < n; i++)
            job->sum += (unsigned char)pattern[(job->seen + i) % PIECE];
        /* The pattern repeats every PIECE bytes: offset into it. */
        char *buf = malloc(n);
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern[(job->seen + i) % PIECE];
        int rc = rw_http_res_write(job->req, buf, n, false, on_job_written, job);
        free(buf);
        if (rc < 0)
            return; /* the abort callback follows */
        job->pending++;
        job->seen += n;
        if (job->remaining != UINT64_MAX)
            job->remaining -= n;
        if (rc == 0 || job->reset_after)
            return;
    }
}

static job_t *job_new(fixture_t *fx, rw_http_req_t *req)
{
    job_t *job = calloc(1, sizeof *job);
    job->fx = fx;
    job->req = req;
    job->chunk_len = PIECE;
    req->data = job;
    rw_http_req_on_abort(req, job_abort_cb);
    return job;
}

static uint64_t query_u64(const rw_http_req_t *req, const char *key)
{
    const char *p = strstr(req->query, key);
    return p ? strtoull(p + strlen(key) + 1, NULL, 10) : 0;
}

/* /echo: method, target, then every header on its own line, then the body. */
static void on_echo_body(rw_http_req_t *req, int status, const char *body, size_t len)
{
    size_t cap = 4096 + len;
    for (size_t i = 0; i < req->n_headers; i++)
        cap += req->headers[i].name_len + req->headers[i].value_len + 4;
    char *out = malloc(cap);
    size_t n = (size_t)snprintf(out, cap, "%s %s\n", req->method, req->target);
    for (size_t i = 0; i < req->n_headers; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s: %s\n", req->headers[i].name,
                              req->headers[i].value);
    n += (size_t)snprintf(out + n, cap - n, "\n");
    memcpy(out + n, body, len);
    n += len;
    rw_http_header_t hs[] = {{"Content-Type", 12, "text/plain", 10},
                             {"Keep-Alive", 10, "timeout=5", 9},
                             {"Proxy-Authenticate", 18, "Basic", 5},
                             {"Connection", 10, "X-Secret", 8},
                             {"X-Secret", 8, "hidden", 6},
                             {"X-Up", 4, "1", 1}};
    rw_http_respond(req, status == 0 ? 200 : 400, hs, 6, out, n);
    free(out);
}

/* /upload: counts and sums the body; once, stops reading for a while. */
static void on_upload_timer(uv_timer_t *t)
{
    job_t *job = t->data;
    rw_http_req_body_resume(job->req);
}

static bool on_upload_piece(rw_http_req_t *req, const char *piece, size_t len)
{
    job_t *job = req->data;
    for (size_t i = 0; i < len; i++)
        job->sum += (unsigned char)piece[i];
    job->seen += len;
    if (!job->paused_once && job->seen >= MB) {
        /* A slow upstream for a moment: the proxy must stop reading the client. */
        job->paused_once = true;
        uv_timer_start(&job->timer, on_upload_timer, 500, 0);
        return false;
    }
    return true;
}

static void on_upload_end(rw_http_req_t *req, int status)
{
    job_t *job = req->data;
    if (status != 0)
        return; /* the abort callback finishes the job */
    job->fx->upload_bytes = job->seen;
    job->fx->upload_sum = job->sum;
    char out[96];
    int n = snprintf(out, sizeof out, "bytes=%llu sum=%llu", (unsigned long long)job->seen,
                     (unsigned long long)job->sum);
    job->ended = true;
    rw_http_respond(req, 200, NULL, 0, out, (size_t)n);
    job_finish(job);
}

static const rw_http_body_sink_t upload_sink = {on_upload_piece, on_upload_end};

/* /echo-chunked: streams the request body back as a chunked response. */
static bool on_echo_piece(rw_http_req_t *req, const char *piece, size_t len)
{
    job_t *job = req->data;
    job->seen += len;
    rw_http_res_write(req, piece, len, false, NULL, NULL);
    return true;
}

static void on_echo_end(rw_http_req_t *req, int status)
{
    job_t *job = req->data;
    if (status != 0)
        return;
    /* The request's headers stay valid until it ends, trailers or not. */
    const char *host = rw_http_req_header(req, "host");
    char n[128];
    size_t k = (size_t)snprintf(n, sizeof n, "%llu host=%s", (unsigned long long)job->seen,
                                host ? host : "?");
    size_t nt = 0;
    const rw_http_header_t *tr_in = rw_http_req_trailers(req, &nt);
    for (size_t i = 0; i < nt && k < sizeof n; i++)
        k += (size_t)snprintf(n + k, sizeof n - k, " %s=%.20s", tr_in[i].name, tr_in[i].value);
    rw_http_header_t tr[] = {{"X-Body-Len", 10, n, strlen(n)}};
    job->ended = true;
    rw_http_res_end(req, tr, 1);
    job_finish(job);
}

static const rw_http_body_sink_t echo_sink = {on_echo_piece, on_echo_end};

static void on_slow_timer(uv_timer_t *t)
{
    job_t *job = t->data;
    if (!job->aborted)
        rw_http_respond(job->req, 200, NULL, 0, "late", 4);
    job->ended = true;
    job_finish(job);
}

static void slow_abort_cb(rw_http_req_t *req, int err)
{
    job_t *job = req->data;
    job->aborted = true;
    job->fx->upstream_aborts++;
    uv_timer_stop(&job->timer);
    job_finish(job);
}

static bool path_is(const rw_http_req_t *req, const char *p)
{
    return req->path_len == strlen(p) && memcmp(req->path, p, req->path_len) == 0;
}

static void upstream_handler(rw_http_req_t *req, void *arg)
{
    fixture_t *fx = arg;
    if (path_is(req, "/echo")) {
        rw_http_req_read_body(req, MB, on_echo_body);
    } else if (path_is(req, "/upload")) {
        job_t *job = job_new(fx, req);
        uv_timer_init(fx->loop, &job->timer);
        job->timer.data = job;
        job->timer_open = true;
        rw_http_req_body_start(req, &upload_sink, 0);
    } else if (path_is(req, "/echo-chunked")) {
        job_new(fx, req);
        rw_http_res_start(req, 200, NULL, 0, -1);
        rw_http_req_body_start(req, &echo_sink, 0);
    } else if (path_is(req, "/download") || path_is(req, "/chunked-download") ||
               path_is(req, "/endless") || path_is(req, "/reset") ||
               path_is(req, "/reset-chunked")) {
        job_t *job = job_new(fx, req);
        bool sized = path_is(req, "/download") || path_is(req, "/reset");
        job->remaining = path_is(req, "/endless") ? UINT64_MAX : query_u64(req, "size");
        job->reset_after = path_is(req, "/reset") || path_is(req, "/reset-chunked");
        if (job->reset_after)
            job->remaining = MB;
        rw_http_header_t ct = {"Content-Type", 12, "application/octet-stream", 24};
        rw_http_res_start(req, 200, &ct, 1, sized ? (int64_t)job->remaining : -1);
        pump(job);
    } else if (path_is(req, "/head")) {
        rw_http_respond(req, 200, NULL, 0, "hello", 5);
    } else if (path_is(req, "/nocontent")) {
        rw_http_respond(req, 204, NULL, 0, NULL, 0);
    } else if (path_is(req, "/notmod")) {
        rw_http_header_t etag = {"ETag", 4, "\"abc\"", 5};
        rw_http_respond(req, 304, &etag, 1, NULL, 0);
    } else if (path_is(req, "/slow")) {
        job_t *job = job_new(fx, req);
        rw_http_req_on_abort(req, slow_abort_cb);
        uv_timer_init(fx->loop, &job->timer);
        job->timer.data = job;
        job->timer_open = true;
        uv_timer_start(&job->timer, on_slow_timer, 5000, 0);
    } else {
        rw_http_respond_error(req, 404, "Not Found", NULL, NULL, 0);
    }
}

/* ---- a malformed upstream: answers garbage to anything ----------------- */

static void on_bad_closed(uv_handle_t *h)
{
    free(h);
}

static void on_bad_written(uv_write_t *w, int status)
{
    uv_close((uv_handle_t *)w->handle, on_bad_closed);
    free(w);
}

static void on_bad_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    static char sink[4096];
    *b = uv_buf_init(sink, sizeof sink);
}

static void on_bad_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    if (n == 0)
        return;
    uv_read_stop(s);
    if (n < 0) {
        uv_close((uv_handle_t *)s, on_bad_closed);
        return;
    }
    static const char garbage[] = "HTTP/1.1 2x0 Bogus\r\nX: y\r\n\r\n";
    uv_write_t *w = malloc(sizeof *w);
    uv_buf_t buf = uv_buf_init((char *)garbage, sizeof garbage - 1);
    uv_write(w, s, &buf, 1, on_bad_written);
}

static void on_bad_connection(uv_stream_t *listener, int status)
{
    uv_tcp_t *c = malloc(sizeof *c);
    uv_tcp_init(listener->loop, c);
    if (uv_accept(listener, (uv_stream_t *)c) != 0) {
        uv_close((uv_handle_t *)c, on_bad_closed);
        return;
    }
    uv_read_start((uv_stream_t *)c, on_bad_alloc, on_bad_read);
}

/* ---- the front (loop thread) ------------------------------------------- */

static void front_handler(rw_http_req_t *req, void *arg)
{
    fixture_t *fx = arg;
    rw_route_match_t m;
    char allow[128];
    int rc = rw_router_match(fx->router, req->method, req->path, req->path_len, &m, allow,
                             sizeof allow);
    if (rc != 0) {
        rw_http_respond_error(req, 404, "Not Found", NULL, NULL, 0);
        return;
    }
    rw__http_proxy_forward(req, m.target, &m, fx->client, &fx->stats);
    rw_route_match_free(&m);
}

static int closed_port(void)
{
    /* A port nobody listens on: bound, read back, closed. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

static void start_servers(uv_loop_t *loop, void *arg)
{
    fixture_t *fx = arg;
    fx->loop = loop;
    rw_http_limits_t lim = {0};
    lim.shutdown_timeout_ms = 2000;
    fx->upstream = rw_http_server_new(loop, &lim, upstream_handler, fx);
    assert_int_equal(rw_http_server_listen(fx->upstream, "127.0.0.1", 0, false), 0);
    fx->up_port = rw_http_server_port(fx->upstream);
    fx->front = rw_http_server_new(loop, &lim, front_handler, fx);
    assert_int_equal(rw_http_server_listen(fx->front, "127.0.0.1", 0, false), 0);
    fx->front_port = rw_http_server_port(fx->front);
    fx->client = rw_http_client_new(loop, NULL);
    assert_non_null(fx->client);

    uv_tcp_init(loop, &fx->bad_listener);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_bind(&fx->bad_listener, (struct sockaddr *)&sa, 0);
    assert_int_equal(uv_listen((uv_stream_t *)&fx->bad_listener, 16, on_bad_connection), 0);
    int len = sizeof sa;
    uv_tcp_getsockname(&fx->bad_listener, (struct sockaddr *)&sa, &len);
    fx->bad_port = ntohs(sa.sin_port);
    fx->down_port = closed_port();

    snprintf(fx->uri_up, sizeof fx->uri_up, "http://127.0.0.1:%d/{proxy}", fx->up_port);
    snprintf(fx->uri_down, sizeof fx->uri_down, "http://127.0.0.1:%d/{proxy}", fx->down_port);
    snprintf(fx->uri_bad, sizeof fx->uri_bad, "http://127.0.0.1:%d/{proxy}", fx->bad_port);
    fx->conf_http = (rw_http_proxy_conf_t){.uri = fx->uri_up, .http_method = "ANY"};
    fx->conf_rest = fx->conf_http;
    fx->conf_rest.flavour = RW_HTTP_PROXY_REST_API;
    fx->conf_down_http = (rw_http_proxy_conf_t){.uri = fx->uri_down};
    fx->conf_down_rest = fx->conf_down_http;
    fx->conf_down_rest.flavour = RW_HTTP_PROXY_REST_API;
    fx->conf_slow_http = (rw_http_proxy_conf_t){.uri = fx->uri_up, .timeout_ms = 200};
    fx->conf_slow_rest = fx->conf_slow_http;
    fx->conf_slow_rest.flavour = RW_HTTP_PROXY_REST_API;
    fx->conf_bad = (rw_http_proxy_conf_t){.uri = fx->uri_bad};
    fx->conf_post = (rw_http_proxy_conf_t){.uri = fx->uri_up, .http_method = "POST"};

    fx->router = rw_router_new();
    assert_int_equal(rw_router_add(fx->router, "ANY", "/p/{proxy+}", &fx->conf_http, NULL, 0), 0);
    assert_int_equal(rw_router_add(fx->router, "ANY", "/rest/{proxy+}", &fx->conf_rest, NULL, 0),
                     0);
    assert_int_equal(
        rw_router_add(fx->router, "ANY", "/down/{proxy+}", &fx->conf_down_http, NULL, 0), 0);
    assert_int_equal(
        rw_router_add(fx->router, "ANY", "/down-rest/{proxy+}", &fx->conf_down_rest, NULL, 0),
        0);
    assert_int_equal(
        rw_router_add(fx->router, "ANY", "/slow/{proxy+}", &fx->conf_slow_http, NULL, 0), 0);
    assert_int_equal(
        rw_router_add(fx->router, "ANY", "/slow-rest/{proxy+}", &fx->conf_slow_rest, NULL, 0),
        0);
    assert_int_equal(rw_router_add(fx->router, "ANY", "/bad/{proxy+}", &fx->conf_bad, NULL, 0),
                     0);
    assert_int_equal(
        rw_router_add(fx->router, "GET", "/as-post/{proxy+}", &fx->conf_post, NULL, 0), 0);
}

static void on_closed_one(void *arg)
{
    fixture_t *fx = arg;
    fx->closes_pending--;
}

static void on_bad_listener_closed(uv_handle_t *h)
{
    fixture_t *fx = h->data;
    fx->closes_pending--;
}

static void stop_all(uv_loop_t *loop, void *arg)
{
    fixture_t *fx = arg;
    fx->closes_pending = 4;
    rw_http_client_close(fx->client, on_closed_one, fx);
    rw_http_server_shutdown(fx->front, on_closed_one, fx);
    rw_http_server_shutdown(fx->upstream, on_closed_one, fx);
    fx->bad_listener.data = fx;
    uv_close((uv_handle_t *)&fx->bad_listener, on_bad_listener_closed);
    rw_router_free(fx->router);
    /* Nothing here made a stream, so this finds no scheduler; it is the
     * contract of every loop that may have one. */
    fx->stream_close_rc = rw_stream_loop_close(loop);
}

static int setup(void **state)
{
    for (size_t i = 0; i < PIECE; i++)
        pattern[i] = (char)pattern_at(i);
    fixture_t *fx = calloc(1, sizeof *fx);
    fx->thread = rw_test_loop_start(start_servers, fx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(rw_test_loop_stop(fx->thread, stop_all, fx), 0);
    assert_int_equal(fx->closes_pending, 0);
    assert_int_equal(fx->stream_close_rc, 0);
    free(fx);
    return 0;
}

/* ---- observation helpers (test thread) -------------------------------- */

typedef struct {
    fixture_t *fx;
    rw_http_proxy_stats_t stats;
    rw_http_client_stats_t cstats;
    int upstream_aborts;
    unsigned upstream_conns, front_conns;
    uint64_t upload_bytes, upload_sum;
} snapshot_t;

static void take_snapshot(uv_loop_t *loop, void *arg)
{
    snapshot_t *s = arg;
    s->stats = s->fx->stats;
    rw_http_client_stats(s->fx->client, &s->cstats);
    s->upstream_aborts = s->fx->upstream_aborts;
    s->upstream_conns = rw_http_server_connections(s->fx->upstream);
    s->front_conns = rw_http_server_connections(s->fx->front);
    s->upload_bytes = s->fx->upload_bytes;
    s->upload_sum = s->fx->upload_sum;
}

static snapshot_t snap(fixture_t *fx)
{
    snapshot_t s = {.fx = fx};
    rw_test_loop_call(fx->thread, take_snapshot, &s);
    return s;
}

/* Waits (bounded: 10 s) until the upstream has seen n aborts. */
static snapshot_t wait_aborts(fixture_t *fx, int n)
{
    snapshot_t s;
    for (int i = 0; i < 500; i++) {
        s = snap(fx);
        if (s.upstream_aborts >= n)
            break;
        rw_test_sleep_ms(20);
    }
    return s;
}

/* Case-insensitive strstr (strcasestr is a GNU extension). */
static const char *ci_find(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return hay;
    return NULL;
}

static const char *header(const rw_test_response_t *r, const char *name)
{
    static char buf[1024];
    return rw_test_header(r, name, buf, sizeof buf);
}

/* ---- tests ------------------------------------------------------------- */

static void get_and_post_round_trip(void **state)
{
    fixture_t *fx = *state;
    rw_test_response_t r;
    assert_int_equal(rw_test_http(fx->front_port, "GET", "/p/echo?x=1&y=%20z", NULL, NULL, 0, &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "GET /echo?x=1&y=%20z\n"));
    assert_string_equal(header(&r, "x-up"), "1");
    rw_test_response_free(&r);

    static const char body[] = "{\"hello\":\"world\"}";
    assert_int_equal(rw_test_http(fx->front_port, "POST", "/p/echo", "Content-Type: application/json\r\n",
                                  body, sizeof body - 1, &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "POST /echo\n"));
    assert_non_null(strstr(r.body, "Content-Type: application/json\n"));
    char cl[64];
    snprintf(cl, sizeof cl, "Content-Length: %zu\n", sizeof body - 1);
    assert_non_null(strstr(r.body, cl));
    const char *got = strstr(r.body, "\n\n");
    assert_non_null(got);
    assert_string_equal(got + 2, body);
    rw_test_response_free(&r);

    /* httpMethod POST on a GET route: the upstream sees POST with an empty body. */
    assert_int_equal(rw_test_http(fx->front_port, "GET", "/as-post/echo", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "POST /echo\n"));
    assert_non_null(strstr(r.body, "Content-Length: 0\n"));
    rw_test_response_free(&r);
}

static void hop_by_hop_headers_removed(void **state)
{
    fixture_t *fx = *state;
    rw_test_response_t r;
    const char *hs = "Connection: keep-alive, X-Hop\r\n"
                     "X-Hop: secret\r\n"
                     "Keep-Alive: timeout=5\r\n"
                     "TE: trailers\r\n"
                     "Proxy-Authorization: Basic Zm9v\r\n"
                     "Trailer: X-Sum\r\n"
                     "X-Keep: yes\r\n"
                     "X-Forwarded-For: 203.0.113.9\r\n"
                     "X-Forwarded-Proto: https\r\n";
    assert_int_equal(rw_test_http(fx->front_port, "GET", "/p/echo", hs, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    const char *seen = r.body;
    assert_null(ci_find(seen, "\nx-hop:"));
    assert_null(ci_find(seen, "\nkeep-alive:"));
    assert_null(ci_find(seen, "\nte:"));
    assert_null(ci_find(seen, "\nproxy-authorization:"));
    assert_null(ci_find(seen, "\ntrailer:"));
    assert_null(ci_find(seen, "\nconnection:"));
    assert_null(ci_find(seen, "https"));
    assert_non_null(strstr(seen, "\nX-Keep: yes\n"));
    char want[128];
    snprintf(want, sizeof want, "\nHost: 127.0.0.1:%d\n", fx->up_port);
    assert_non_null(strstr(seen, want));
    assert_non_null(strstr(seen, "\nX-Forwarded-For: 203.0.113.9, 127.0.0.1\n"));
    assert_non_null(strstr(seen, "\nX-Forwarded-Proto: http\n"));
    snprintf(want, sizeof want, "\nX-Forwarded-Port: %d\n", fx->front_port);
    assert_non_null(strstr(seen, want));
    snprintf(want, sizeof want,
             "\nForwarded: for=203.0.113.9, for=127.0.0.1;host=\"127.0.0.1:%d\";proto=http\n",
             fx->front_port);
    assert_non_null(strstr(seen, want));
    /* The upstream's hop-by-hop response headers stop at the proxy too. */
    assert_null(header(&r, "keep-alive"));
    assert_null(header(&r, "proxy-authenticate"));
    assert_null(header(&r, "x-secret"));
    assert_string_equal(header(&r, "x-up"), "1");
    rw_test_response_free(&r);

    /* A REST API route: no Forwarded header. */
    assert_int_equal(rw_test_http(fx->front_port, "GET", "/rest/echo", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_null(ci_find(r.body, "\nforwarded:"));
    assert_non_null(strstr(r.body, "\nX-Forwarded-For: 127.0.0.1\n"));
    rw_test_response_free(&r);
}

static void upload_20mb_streamed_with_bounded_memory(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->front_port);
    assert_true(fd >= 0);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "POST /p/upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", BIG);
    assert_int_equal(rw_test_send(fd, head, (size_t)n), 0);
    uint64_t sum = 0;
    for (int sent = 0; sent < BIG; sent += PIECE) {
        for (size_t i = 0; i < PIECE; i++)
            sum += (unsigned char)pattern[i];
        assert_int_equal(rw_test_send(fd, pattern, PIECE), 0);
    }
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    close(fd);
    assert_int_equal(r.status, 200);
    char want[96];
    snprintf(want, sizeof want, "bytes=%d sum=%llu", BIG, (unsigned long long)sum);
    assert_string_equal(r.body, want);
    rw_test_response_free(&r);

    snapshot_t s = snap(fx);
    assert_int_equal(s.upload_bytes, BIG);
    /* The upstream stopped reading for a while: the proxy stopped reading the
     * client instead of buffering, and never held more than its high-water
     * mark plus a piece or two. */
    assert_true(s.stats.client_read_pauses > 0);
    assert_in_range(s.stats.max_held_bytes, 1, 512 * 1024);
    assert_int_equal(s.stats.completed, 1);
}

static void download_20mb_streamed_slow_client(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->front_port);
    assert_true(fd >= 0);
    char req[128];
    int n = snprintf(req, sizeof req, "GET /p/download?size=%d HTTP/1.1\r\nHost: x\r\n\r\n", BIG);
    assert_int_equal(rw_test_send(fd, req, (size_t)n), 0);
    /* A client that does not read: every buffer on the way fills, and the
     * proxy must stop reading the upstream rather than hold the body. */
    snapshot_t s;
    for (int i = 0; i < 500; i++) {
        s = snap(fx);
        if (s.stats.upstream_read_pauses > 0)
            break;
        rw_test_sleep_ms(20);
    }
    assert_true(s.stats.upstream_read_pauses > 0);
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    close(fd);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, BIG);
    assert_false(r.chunked);
    bool same = true;
    for (size_t i = 0; i < r.body_len && same; i++)
        same = (unsigned char)r.body[i] == pattern_at(i % PIECE);
    assert_true(same);
    rw_test_response_free(&r);
    s = snap(fx);
    assert_in_range(s.stats.max_held_bytes, 1, 512 * 1024);
    assert_int_equal(s.stats.completed, 1);
}

static void client_disconnect_aborts_upstream(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->front_port);
    assert_true(fd >= 0);
    const char req[] = "GET /p/endless HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(rw_test_send(fd, req, sizeof req - 1), 0);
    char buf[65536];
    size_t got = 0;
    while (got < 256 * 1024) {
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        assert_true(k > 0);
        got += (size_t)k;
    }
    close(fd);
    snapshot_t s = wait_aborts(fx, 1);
    assert_int_equal(s.upstream_aborts, 1);
    assert_int_equal(s.stats.client_aborts, 1);
    /* The aborted upstream connection is closed, never pooled. */
    for (int i = 0; i < 250 && (s.upstream_conns > 0 || s.cstats.idle > 0); i++) {
        rw_test_sleep_ms(20);
        s = snap(fx);
    }
    assert_int_equal(s.upstream_conns, 0);
    assert_int_equal(s.cstats.idle, 0);
}

static void upstream_down_answers_like_api_gateway(void **state)
{
    fixture_t *fx = *state;
    rw_test_response_t r;
    assert_int_equal(rw_test_http(fx->front_port, "GET", "/down/x", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(header(&r, "content-type"), "application/json");
    assert_string_equal(r.body, "{\"message\":\"Service Unavailable\"}");
    rw_test_response_free(&r);
    assert_int_equal(rw_test_http(fx->front_port, "POST", "/down-rest/x", NULL, "abc", 3, &r), 0);
    assert_int_equal(r.status, 500);
    assert_string_equal(r.body, "{\"message\":\"Internal server error\"}");
    rw_test_response_free(&r);
    /* A malformed answer is a network error. */
    assert_int_equal(rw_test_http(fx->front_port, "GET", "/bad/x", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"message\":\"Service Unavailable\"}");
    rw_test_response_free(&r);
    snapshot_t s = snap(fx);
    assert_int_equal(s.stats.upstream_errors, 3);
}

static void upstream_too_slow_times_out(void **state)
{
    fixture_t *fx = *state;
    rw_test_response_t r;
    assert_int_equal(rw_test_http(fx->front_port, "GET", "/slow/slow", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"message\":\"Service Unavailable\"}");
    rw_test_response_free(&r);
    assert_int_equal(rw_test_http(fx->front_port, "GET", "/slow-rest/slow", NULL, NULL, 0, &r),
                     0);
    assert_int_equal(r.status, 504);
    assert_string_equal(r.body, "{\"message\":\"Endpoint request timed out\"}");
    rw_test_response_free(&r);
    /* The timed-out upstream requests were abandoned: their connections closed. */
    snapshot_t s = wait_aborts(fx, 2);
    assert_int_equal(s.upstream_aborts, 2);
}

static void chunked_both_ways_with_trailers(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->front_port);
    assert_true(fd >= 0);
    const char req[] = "POST /p/echo-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Client-Sum: 11\r\nX-Client-More: yes\r\n\r\n";
    assert_int_equal(rw_test_send(fd, req, sizeof req - 1), 0);
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.chunked);
    assert_string_equal(r.body, "hello world");
    char want_len[128];
    /* The client's trailers reached the upstream. */
    snprintf(want_len, sizeof want_len,
             "X-Body-Len: 11 host=127.0.0.1:%d X-Client-Sum=11 X-Client-More=yes\r\n", fx->up_port);
    assert_non_null(strstr(r.trailers, want_len));
    rw_test_response_free(&r);

    /* The same straight to the upstream server, whose request then ends with
     * trailers of its own: its headers must survive them. */
    int ufd = rw_test_connect(fx->up_port);
    assert_true(ufd >= 0);
    static char direct[8192];
    char big[4001];
    memset(big, 'v', 4000);
    big[4000] = '\0';
    int dn = snprintf(direct, sizeof direct,
                      "POST /echo-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Big: %s\r\n\r\n", big);
    assert_int_equal(rw_test_send(ufd, direct, (size_t)dn), 0);
    assert_int_equal(rw_test_read_response(ufd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    assert_non_null(strstr(r.trailers, "X-Body-Len: 11 host=x X-Big=vvvvvvvvvvvvvvvvvvvv\r\n"));
    rw_test_response_free(&r);
    close(ufd);

    /* A chunked download with a checksum trailer, on the same connection. */
    const char req2[] = "GET /p/chunked-download?size=300000 HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(rw_test_send(fd, req2, sizeof req2 - 1), 0);
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.chunked);
    assert_int_equal(r.body_len, 300000);
    uint64_t sum = 0;
    for (size_t i = 0; i < r.body_len; i++)
        sum += (unsigned char)r.body[i];
    char want[64];
    snprintf(want, sizeof want, "X-Checksum: %llu\r\n", (unsigned long long)sum);
    assert_non_null(strstr(r.trailers, want));
    rw_test_response_free(&r);
    close(fd);
}

static void head_204_304_keep_framing(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->front_port);
    assert_true(fd >= 0);
    rw_test_response_t r;
    const char head[] = "HEAD /p/head HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(rw_test_send(fd, head, sizeof head - 1), 0);
    assert_int_equal(rw_test_read_response(fd, &r, true), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "content-length"), "5");
    rw_test_response_free(&r);

    const char nc[] = "GET /p/nocontent HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(rw_test_send(fd, nc, sizeof nc - 1), 0);
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 204);
    assert_null(header(&r, "transfer-encoding"));
    rw_test_response_free(&r);

    const char nm[] = "GET /p/notmod HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"abc\"\r\n\r\n";
    assert_int_equal(rw_test_send(fd, nm, sizeof nm - 1), 0);
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 304);
    assert_string_equal(header(&r, "etag"), "\"abc\"");
    rw_test_response_free(&r);

    /* The connection is still in step: a normal request after all three. */
    const char get[] = "GET /p/head HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(rw_test_send(fd, get, sizeof get - 1), 0);
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    rw_test_response_free(&r);
    close(fd);
}

static void keep_alive_reuses_upstream_connections(void **state)
{
    fixture_t *fx = *state;
    for (int i = 0; i < 5; i++) {
        rw_test_response_t r;
        assert_int_equal(rw_test_http(fx->front_port, "GET", "/p/head", NULL, NULL, 0, &r), 0);
        assert_int_equal(r.status, 200);
        rw_test_response_free(&r);
    }
    snapshot_t s = snap(fx);
    assert_int_equal(s.cstats.connects, 1);
    assert_int_equal(s.cstats.reuses, 4);
    assert_int_equal(s.upstream_conns, 1);
    assert_int_equal(s.cstats.idle, 1);
}

static void upstream_reset_mid_body_closes_client(void **state)
{
    fixture_t *fx = *state;
    const char *paths[] = {"/p/reset", "/p/reset-chunked"};
    for (int k = 0; k < 2; k++) {
        int fd = rw_test_connect(fx->front_port);
        assert_true(fd >= 0);
        char req[128];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", paths[k]);
        assert_int_equal(rw_test_send(fd, req, (size_t)n), 0);
        rw_test_response_t r;
        /* The status went out; the body can only be cut short, never completed. */
        assert_int_equal(rw_test_read_response(fd, &r, false), -1);
        rw_test_response_free(&r);
        assert_true(rw_test_wait_closed(fd, 5000));
        close(fd);
    }
    snapshot_t s = snap(fx);
    assert_int_equal(s.stats.upstream_errors, 2);
    assert_int_equal(s.stats.completed, 0);
}

int main(void)
{
    /* As reelway serve does: a peer that went away is a write error, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(get_and_post_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(hop_by_hop_headers_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(upload_20mb_streamed_with_bounded_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(download_20mb_streamed_slow_client, setup, teardown),
        cmocka_unit_test_setup_teardown(client_disconnect_aborts_upstream, setup, teardown),
        cmocka_unit_test_setup_teardown(upstream_down_answers_like_api_gateway, setup, teardown),
        cmocka_unit_test_setup_teardown(upstream_too_slow_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(chunked_both_ways_with_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(head_204_304_keep_framing, setup, teardown),
        cmocka_unit_test_setup_teardown(keep_alive_reuses_upstream_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(upstream_reset_mid_body_closes_client, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
