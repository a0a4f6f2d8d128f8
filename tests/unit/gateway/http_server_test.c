/* The HTTP/1.1 server, spoken to over real sockets: keep-alive, pipelining in
 * order, HEAD, 100-continue, sized and chunked bodies both ways, every limit
 * with its JSON error, timeouts against slow clients, backpressure on bodies,
 * aborts, and graceful shutdown. Each test ends with the loop closing clean. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reelway/error.h"
#include "reelway/http.h"
#include "rw_http_client.h"

typedef struct {
    rw_http_server_t *server;
    rw_http_limits_t limits;
    int port;
    rw_test_loop_t *thread;
    /* observations made on the loop thread */
    int aborts;
    int max_pieces_while_paused;
    uint64_t streamed_bytes;
    int shutdown_done;
} fixture_t;

/* ---- handlers (loop thread) --------------------------------------------- */

typedef struct {
    uv_timer_t timer;
    rw_http_req_t *req;
    fixture_t *fx;
    uint64_t count;
    bool paused;
    int pieces_while_paused;
} job_t;

static void on_job_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_echo_body(rw_http_req_t *req, int status, const char *body, size_t len)
{
    if (status == RW_ELIMIT) {
        rw_http_respond_error(req, 413, "Request Entity Too Large", "body over the route's limit",
                              NULL, 0);
        return;
    }
    if (status != 0) {
        rw_http_respond_error(req, 400, "Bad Request", rw_strerror(status), NULL, 0);
        return;
    }
    char n[32];
    snprintf(n, sizeof n, "%zu", len);
    rw_http_header_t hs[2] = {{"X-Body-Len", 10, n, strlen(n)}};
    size_t nt;
    const rw_http_header_t *tr = rw_http_req_trailers(req, &nt);
    if (nt == 1)
        hs[1] = (rw_http_header_t){"X-Got-Trailer", 13, tr[0].value, tr[0].value_len};
    rw_http_respond(req, 200, hs, nt == 1 ? 2 : 1, body, len);
}

static void on_slow_timer(uv_timer_t *t)
{
    job_t *job = t->data;
    if (rw_http_req_alive(job->req))
        rw_http_respond(job->req, 200, NULL, 0, "slow", 4);
    else
        rw_http_res_end(job->req, NULL, 0);
    uv_close((uv_handle_t *)t, on_job_closed);
}

static void on_slow_abort(rw_http_req_t *req, int err)
{
    job_t *job = req->data;
    job->fx->aborts++;
}

static void on_resume_timer(uv_timer_t *t)
{
    job_t *job = t->data;
    job->paused = false;
    rw_http_req_body_resume(job->req);
}

/* Body sink that says "stop" after every piece and resumes on a timer: the
 * server must not deliver anything while paused. */
static bool on_piece_paced(rw_http_req_t *req, const char *piece, size_t len)
{
    job_t *job = req->data;
    if (job->paused)
        job->pieces_while_paused++;
    job->count += len;
    job->paused = true;
    uv_timer_start(&job->timer, on_resume_timer, 1, 0);
    return false;
}

static void on_piece_end(rw_http_req_t *req, int status)
{
    job_t *job = req->data;
    job->fx->streamed_bytes = job->count;
    job->fx->max_pieces_while_paused = job->pieces_while_paused;
    uv_timer_stop(&job->timer);
    if (status != 0) {
        rw_http_respond_error(req, status == RW_ELIMIT ? 413 : 400, "Body failed",
                              rw_strerror(status), NULL, 0);
    } else {
        char n[32];
        int len = snprintf(n, sizeof n, "%llu", (unsigned long long)job->count);
        rw_http_respond(req, 200, NULL, 0, n, (size_t)len);
    }
    uv_close((uv_handle_t *)&job->timer, on_job_closed);
}

static void handler(rw_http_req_t *req, void *arg)
{
    char path[256];
    snprintf(path, sizeof path, "%.*s", (int)req->path_len, req->path);
    if (!strcmp(path, "/hello")) {
        rw_http_header_t hs[] = {{"Content-Type", 12, "text/plain", 10}};
        rw_http_respond(req, 200, hs, 1, "hello", 5);
    } else if (!strcmp(path, "/echo")) {
        if (rw_http_req_read_body(req, 1 << 20, on_echo_body) == RW_ELIMIT)
            rw_http_respond_error(req, 413, "Request Entity Too Large", "Content-Length over limit",
                                  NULL, 0);
    } else if (!strcmp(path, "/tiny")) {
        if (rw_http_req_read_body(req, 10, on_echo_body) == RW_ELIMIT)
            rw_http_respond_error(req, 413, "Request Entity Too Large", "Content-Length over limit",
                                  NULL, 0);
    } else if (!strcmp(path, "/chunked")) {
        rw_http_res_start(req, 200, NULL, 0, -1);
        rw_http_res_write(req, "one,", 4, false, NULL, NULL);
        rw_http_res_write(req, "two,", 4, false, NULL, NULL);
        static const char three[] = "three";
        rw_http_res_write(req, three, 5, true, NULL, NULL);
        rw_http_header_t tr[] = {{"X-Checksum", 10, "abc", 3}};
        rw_http_res_end(req, tr, 1);
    } else if (!strcmp(path, "/bad-header")) {
        rw_http_header_t hs[] = {{"X-Evil", 6, "a\r\nSet-Cookie: x=1", 18}};
        rw_http_respond(req, 200, hs, 1, "nope", 4);
    } else if (!strcmp(path, "/short")) {
        rw_http_res_start(req, 200, NULL, 0, 10);
        rw_http_res_write(req, "12345", 5, false, NULL, NULL);
        rw_http_res_end(req, NULL, 0);
    } else {
        rw_http_respond_error(req, 404, "Not Found", NULL, NULL, 0);
    }
}

static void on_end_timer(uv_timer_t *t)
{
    job_t *job = t->data;
    rw_http_res_end(job->req, NULL, 0);
    uv_close((uv_handle_t *)t, on_job_closed);
}

/* /slow, /stream and /end-later need the loop; they are served by this wrapper. */
static uv_loop_t *test_loop;

static void handler_with_loop(rw_http_req_t *req, void *arg)
{
    fixture_t *fx = arg;
    if (req->path_len == 5 && !memcmp(req->path, "/slow", 5)) {
        job_t *job = calloc(1, sizeof *job);
        job->req = req;
        job->fx = fx;
        req->data = job;
        rw_http_req_on_abort(req, on_slow_abort);
        uv_timer_init(test_loop, &job->timer);
        job->timer.data = job;
        uv_timer_start(&job->timer, on_slow_timer, 200, 0);
        return;
    }
    if (req->path_len == 10 && !memcmp(req->path, "/end-later", 10)) {
        /* The whole body is written now; the end comes later, from a timer,
         * once no write is in flight any more. */
        job_t *job = calloc(1, sizeof *job);
        job->req = req;
        job->fx = fx;
        uv_timer_init(test_loop, &job->timer);
        job->timer.data = job;
        rw_http_res_start(req, 200, NULL, 0, 5);
        rw_http_res_write(req, "later", 5, false, NULL, NULL);
        uv_timer_start(&job->timer, on_end_timer, 20, 0);
        return;
    }
    if (req->path_len == 7 && !memcmp(req->path, "/stream", 7)) {
        job_t *job = calloc(1, sizeof *job);
        job->req = req;
        job->fx = fx;
        req->data = job;
        uv_timer_init(test_loop, &job->timer);
        job->timer.data = job;
        rw_http_body_sink_t sink = {on_piece_paced, on_piece_end};
        int rc = rw_http_req_body_start(req, &sink, 64 << 20);
        if (rc != 0) {
            rw_http_respond_error(req, 413, "too big", NULL, NULL, 0);
            uv_close((uv_handle_t *)&job->timer, on_job_closed);
        }
        return;
    }
    handler(req, arg);
}

/* ---- fixture ------------------------------------------------------------- */

static void start_server(uv_loop_t *loop, void *arg)
{
    fixture_t *fx = arg;
    test_loop = loop;
    fx->server = rw_http_server_new(loop, &fx->limits, handler_with_loop, fx);
    assert_int_equal(rw_http_server_listen(fx->server, "127.0.0.1", 0, false), 0);
    fx->port = rw_http_server_port(fx->server);
}

static void on_shutdown(void *arg)
{
    fixture_t *fx = arg;
    fx->shutdown_done++;
}

static void stop_server(uv_loop_t *loop, void *arg)
{
    fixture_t *fx = arg;
    if (fx->server)
        rw_http_server_shutdown(fx->server, on_shutdown, fx);
    fx->server = NULL;
}

static fixture_t *fixture_new(const rw_http_limits_t *limits)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    if (limits)
        fx->limits = *limits;
    fx->thread = rw_test_loop_start(start_server, fx);
    assert_true(fx->port > 0);
    return fx;
}

static void fixture_free(fixture_t *fx)
{
    assert_int_equal(rw_test_loop_stop(fx->thread, stop_server, fx), 0);
    assert_int_equal(fx->shutdown_done, 1);
    free(fx);
}

static int setup(void **state)
{
    *state = fixture_new(NULL);
    return 0;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

static void send_str(int fd, const char *s)
{
    assert_int_equal(rw_test_send(fd, s, strlen(s)), 0);
}

/* ---- tests ------------------------------------------------------------------ */

static void get_and_keep_alive(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->port);
    assert_true(fd >= 0);
    rw_test_response_t r;
    char v[128];
    for (int i = 0; i < 3; i++) {
        send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_int_equal(rw_test_read_response(fd, &r, false), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello");
        assert_false(r.closed);
        assert_non_null(rw_test_header(&r, "date", v, sizeof v));
        assert_non_null(strstr(v, " GMT"));
        assert_non_null(rw_test_header(&r, "x-request-id", v, sizeof v));
        assert_int_equal(strlen(v), 36);
        assert_non_null(rw_test_header(&r, "content-length", v, sizeof v));
        assert_string_equal(v, "5");
        rw_test_response_free(&r);
    }
    close(fd);
}

/* A request ended after all its writes completed, before the server parsed
 * the end of its message (parsing pauses after dispatch): it is released
 * once, and the connection serves the next one. */
static void end_after_writes_completed(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->port);
    assert_true(fd >= 0);
    rw_test_response_t r;
    for (int i = 0; i < 3; i++) {
        send_str(fd, "GET /end-later HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_int_equal(rw_test_read_response(fd, &r, false), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "later");
        assert_false(r.closed);
        rw_test_response_free(&r);
    }
    send_str(fd, "GET /end-later HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_string_equal(r.body, "later");
    rw_test_response_free(&r);
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_string_equal(r.body, "hello");
    rw_test_response_free(&r);
    close(fd);
}

static void pipelined_requests_answered_in_order(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->port);
    send_str(fd, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                 "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                 "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_string_equal(r.body, "slow");
    rw_test_response_free(&r);
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_string_equal(r.body, "abc");
    rw_test_response_free(&r);
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_string_equal(r.body, "hello");
    rw_test_response_free(&r);
    assert_int_equal(rw_test_read_response(fd, &r, true), 0);
    assert_int_equal(r.status, 200);
    char v[32];
    assert_string_equal(rw_test_header(&r, "content-length", v, sizeof v), "5");
    rw_test_response_free(&r);
    /* Nothing else follows: HEAD sent no body bytes. */
    send_str(fd, "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_string_equal(r.body, "hello");
    assert_true(r.closed);
    rw_test_response_free(&r);
    assert_true(rw_test_wait_closed(fd, 5000));
    close(fd);
}

static void expect_100_continue(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->port);
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    char buf[64] = "";
    ssize_t n = recv(fd, buf, 25, MSG_WAITALL);
    assert_int_equal(n, 25);
    assert_string_equal(buf, "HTTP/1.1 100 Continue\r\n\r\n");
    send_str(fd, "hello");
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    rw_test_response_free(&r);
    close(fd);

    /* A route that answers without reading gets no 100, and the connection
     * closes after the answer (the body will never come). */
    fd = rw_test_connect(fx->port);
    send_str(fd, "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.closed);
    rw_test_response_free(&r);
    close(fd);

    /* Anything but 100-continue is refused with 417. */
    assert_int_equal(rw_test_http(fx->port, "POST", "/echo", "Expect: something\r\n", "x", 1, &r), 0);
    assert_int_equal(r.status, 417);
    rw_test_response_free(&r);
}

static void chunked_request_body(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->port);
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n");
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    char v[64];
    assert_non_null(rw_test_header(&r, "x-got-trailer", v, sizeof v));
    assert_string_equal(v, "t");
    rw_test_response_free(&r);
    close(fd);
}

static void chunked_response_with_trailers(void **state)
{
    fixture_t *fx = *state;
    rw_test_response_t r;
    assert_int_equal(rw_test_http(fx->port, "GET", "/chunked", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.chunked);
    assert_string_equal(r.body, "one,two,three");
    assert_string_equal(r.trailers, "X-Checksum: abc\r\n");
    rw_test_response_free(&r);
}

static void http10_closes_unless_keep_alive(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->port);
    send_str(fd, "GET /hello HTTP/1.0\r\n\r\n");
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.closed);
    rw_test_response_free(&r);
    assert_true(rw_test_wait_closed(fd, 5000));
    close(fd);

    fd = rw_test_connect(fx->port);
    send_str(fd, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_false(r.closed);
    char v[32];
    assert_string_equal(rw_test_header(&r, "connection", v, sizeof v), "keep-alive");
    rw_test_response_free(&r);
    /* A chunked answer is impossible in 1.0: the body is close-delimited. */
    send_str(fd, "GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_false(r.chunked);
    assert_string_equal(r.body, "one,two,three");
    assert_true(r.closed);
    rw_test_response_free(&r);
    close(fd);
}

static void body_over_route_limit_is_413(void **state)
{
    fixture_t *fx = *state;
    rw_test_response_t r;
    /* Declared too large: refused before reading, connection closed. */
    assert_int_equal(rw_test_http(fx->port, "POST", "/tiny", NULL, "0123456789AB", 12, &r), 0);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "\"message\":"));
    rw_test_response_free(&r);

    /* Chunked and growing past the limit: 413 once it crosses it. */
    int fd = rw_test_connect(fx->port);
    send_str(fd, "POST /tiny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "8\r\n01234567\r\n8\r\n89ABCDEF\r\n0\r\n\r\n");
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 413);
    assert_true(r.closed);
    rw_test_response_free(&r);
    assert_true(rw_test_wait_closed(fd, 5000));
    close(fd);

    /* The server is fine afterwards. */
    assert_int_equal(rw_test_http(fx->port, "POST", "/tiny", NULL, "0123456789", 10, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "0123456789");
    rw_test_response_free(&r);
}

static void unread_small_body_is_drained_and_connection_kept(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->port);
    send_str(fd, "POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
                 "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    rw_test_response_t r;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(rw_test_read_response(fd, &r, false), 0);
        assert_int_equal(r.status, 200);
        assert_false(r.closed);
        rw_test_response_free(&r);
    }
    close(fd);
}

static void head_limits_431_414_and_bad_requests_400(void **state)
{
    fixture_t *fx = *state;
    rw_test_response_t r;
    char *big = malloc(20100);
    strcpy(big, "GET /hello HTTP/1.1\r\nX-Big: ");
    size_t n = strlen(big);
    memset(big + n, 'a', 20000 - n);
    strcpy(big + 20000, "\r\n\r\n");
    int fd = rw_test_connect(fx->port);
    assert_int_equal(rw_test_send(fd, big, strlen(big)), 0);
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    close(fd);
    assert_int_equal(r.status, 431);
    assert_non_null(strstr(r.body, "\"reason\":\"request headers larger than the limit\""));
    assert_true(r.closed);
    rw_test_response_free(&r);

    char *uri = malloc(9000);
    memset(uri, 'u', 8999);
    uri[0] = '/';
    uri[8999] = '\0';
    assert_int_equal(rw_test_http(fx->port, "GET", uri, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 414);
    rw_test_response_free(&r);

    char many[4000] = "";
    for (int i = 0; i < 120; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "X-%d: v\r\n", i);
    assert_int_equal(rw_test_http(fx->port, "GET", "/hello", many, NULL, 0, &r), 0);
    assert_int_equal(r.status, 431);
    assert_non_null(strstr(r.body, "too many request headers"));
    rw_test_response_free(&r);

    const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "GET /hello HTTP/1.1\r\nNoColonHere\r\n\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        "GET /hello HTTP/9.9\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fd = rw_test_connect(fx->port);
        send_str(fd, bad[i]);
        assert_int_equal(rw_test_read_response(fd, &r, false), 0);
        if (r.status != 400)
            fprintf(stderr, "case %zu: %d %s\n", i, r.status, r.body);
        assert_true(r.status == 400);
        assert_non_null(strstr(r.body, "\"message\":\"Bad Request\",\"reason\":\""));
        assert_true(r.closed);
        rw_test_response_free(&r);
        close(fd);
    }
    free(big);
    free(uri);
}

static void crlf_in_response_header_is_refused(void **state)
{
    fixture_t *fx = *state;
    rw_test_response_t r;
    assert_int_equal(rw_test_http(fx->port, "GET", "/bad-header", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 502);
    char v[64];
    assert_null(rw_test_header(&r, "set-cookie", v, sizeof v));
    assert_null(rw_test_header(&r, "x-evil", v, sizeof v));
    rw_test_response_free(&r);
}

static void short_body_closes_connection(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->port);
    send_str(fd, "GET /short HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(rw_test_wait_closed(fd, 5000));
    close(fd);
}

static void body_backpressure_pauses_delivery(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->port);
    size_t size = 4 << 20;
    char head[128];
    snprintf(head, sizeof head, "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
             size);
    send_str(fd, head);
    char *body = malloc(size);
    memset(body, 'b', size);
    assert_int_equal(rw_test_send(fd, body, size), 0);
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(strtoull(r.body, NULL, 10), size);
    rw_test_response_free(&r);
    free(body);
    close(fd);
    assert_int_equal(fx->streamed_bytes, size);
    assert_int_equal(fx->max_pieces_while_paused, 0);
}

static void client_gone_aborts_request(void **state)
{
    fixture_t *fx = *state;
    int fd = rw_test_connect(fx->port);
    send_str(fd, "GET /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234");
    rw_test_sleep_ms(50);
    close(fd);
    /* The abort runs on the loop; a later request observes it. */
    rw_test_response_t r;
    for (int i = 0; i < 100 && fx->aborts == 0; i++)
        rw_test_sleep_ms(10);
    assert_int_equal(fx->aborts, 1);
    assert_int_equal(rw_test_http(fx->port, "GET", "/hello", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    rw_test_response_free(&r);
}

static void timeouts_stop_slow_clients(void **state)
{
    rw_http_limits_t limits = {.header_timeout_ms = 400,
                               .idle_timeout_ms = 300,
                               .body_timeout_ms = 300};
    fixture_t *fx = fixture_new(&limits);
    rw_test_response_t r;

    /* Slow loris: a byte every 100 ms keeps arriving, yet the head deadline is
     * absolute: 408 and close. */
    int fd = rw_test_connect(fx->port);
    const char *head = "GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    send_str(fd, head);
    bool got = false;
    for (int i = 0; i < 60 && !got; i++) {
        if (rw_test_send(fd, "a", 1) != 0)
            break;
        struct timeval tv = {0, 100000};
        fd_set set;
        FD_ZERO(&set);
        FD_SET(fd, &set);
        got = select(fd + 1, &set, NULL, NULL, &tv) > 0;
    }
    assert_true(got);
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 408);
    assert_true(r.closed);
    rw_test_response_free(&r);
    close(fd);

    /* Idle keep-alive connection: closed without a word. */
    fd = rw_test_connect(fx->port);
    assert_true(rw_test_wait_closed(fd, 5000));
    close(fd);

    /* Body that stops arriving: 408. */
    fd = rw_test_connect(fx->port);
    send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234");
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 408);
    assert_non_null(strstr(r.body, "body not received in time"));
    rw_test_response_free(&r);
    close(fd);
    fixture_free(fx);
}

static void connection_limit_answers_503(void **state)
{
    rw_http_limits_t limits = {.max_connections = 2};
    fixture_t *fx = fixture_new(&limits);
    int a = rw_test_connect(fx->port), b = rw_test_connect(fx->port);
    rw_test_response_t r;
    /* Make sure both are accepted before the third arrives. */
    send_str(a, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(rw_test_read_response(a, &r, false), 0);
    rw_test_response_free(&r);
    send_str(b, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(rw_test_read_response(b, &r, false), 0);
    rw_test_response_free(&r);
    int c = rw_test_connect(fx->port);
    assert_int_equal(rw_test_read_response(c, &r, false), 0);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "too many connections"));
    rw_test_response_free(&r);
    close(c);
    close(a);
    close(b);
    fixture_free(fx);
}

static void shutdown_lets_in_flight_finish(void **state)
{
    fixture_t *fx = fixture_new(NULL);
    int fd = rw_test_connect(fx->port);
    send_str(fd, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    rw_test_sleep_ms(50);
    rw_test_loop_call(fx->thread, stop_server, fx);
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "slow");
    assert_true(r.closed);
    rw_test_response_free(&r);
    close(fd);
    /* No new connections once stopped. */
    for (int i = 0; i < 100 && fx->shutdown_done == 0; i++)
        rw_test_sleep_ms(10);
    assert_int_equal(fx->shutdown_done, 1);
    assert_int_equal(rw_test_connect(fx->port), -1);
    fixture_free(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(get_and_keep_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(end_after_writes_completed, setup, teardown),
        cmocka_unit_test_setup_teardown(pipelined_requests_answered_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(expect_100_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(chunked_request_body, setup, teardown),
        cmocka_unit_test_setup_teardown(chunked_response_with_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(http10_closes_unless_keep_alive, setup, teardown),
        cmocka_unit_test_setup_teardown(body_over_route_limit_is_413, setup, teardown),
        cmocka_unit_test_setup_teardown(unread_small_body_is_drained_and_connection_kept, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(head_limits_431_414_and_bad_requests_400, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(crlf_in_response_header_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(short_body_closes_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(body_backpressure_pauses_delivery, setup, teardown),
        cmocka_unit_test_setup_teardown(client_gone_aborts_request, setup, teardown),
        cmocka_unit_test(timeouts_stop_slow_clients),
        cmocka_unit_test(connection_limit_answers_503),
        cmocka_unit_test(shutdown_lets_in_flight_finish),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
