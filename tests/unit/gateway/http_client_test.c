/* The HTTP client against scripted raw upstreams (a libuv listener that
 * answers exact bytes): close-delimited and chunked bodies, trailers both
 * ways, interim 1xx answers, HEAD, every error code, name resolution, and
 * the one retry after a stale pooled connection. Each test
 * ends with the loop closing clean. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "reelway/error.h"
#include "rw_http_client.h"

typedef enum {
    SCRIPT_ANSWER,        /* send `answer`, keep the connection */
    SCRIPT_ANSWER_CLOSE,  /* send `answer`, then close */
    SCRIPT_SILENT,        /* never answer */
    SCRIPT_STALE_SECOND,  /* answer the first request; close on the second */
} script_mode_t;

typedef struct fixture_s fixture_t;

typedef struct raw_conn_s {
    uv_tcp_t tcp;
    fixture_t *fx;
    char buf[16384];
    size_t len;
    int requests;
} raw_conn_t;

struct fixture_s {
    rw_test_loop_t *thread;
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    rw_http_client_t *client;
    rw_http_client_opts_t opts;
    /* the script */
    script_mode_t mode;
    const char *answer;
    char raw_request[16384]; /* the last request as received */
    int accepted;
    /* the request under test */
    const char *host;
    int req_port;
    const char *method;
    int64_t body_length;
    uint64_t timeout_ms;
    const char *pieces[4];
    rw_http_header_t req_trailers[2];
    size_t n_req_trailers;
    /* what came back */
    bool done;
    int status_code;
    int result;
    char body[4096];
    size_t body_len;
    int64_t content_length;
    char trailers[512];
    char reason[160];
    rw_http_client_stats_t stats;
    int closes_pending;
};

/* ---- the raw upstream (loop thread) ------------------------------------ */

static void on_raw_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_raw_written(uv_write_t *w, int status)
{
    raw_conn_t *rc = w->data;
    if (rc->fx->mode == SCRIPT_ANSWER_CLOSE && !uv_is_closing((uv_handle_t *)&rc->tcp))
        uv_close((uv_handle_t *)&rc->tcp, on_raw_closed);
    free(w);
}

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
    raw_conn_t *rc = h->data;
    *b = uv_buf_init(rc->buf + rc->len, (unsigned)(sizeof rc->buf - rc->len - 1));
}

/* True once buf holds a whole request (head, and a sized or chunked body). */
static bool request_complete(const char *buf, size_t len)
{
    const char *end = strstr(buf, "\r\n\r\n");
    if (!end)
        return false;
    size_t head = (size_t)(end + 4 - buf);
    if (strstr(buf, "Transfer-Encoding: chunked") && strstr(buf, "Transfer-Encoding: chunked") < end) {
        const char *last = strstr(end + 2, "\r\n0\r\n");
        return last && strstr(last + 2, "\r\n\r\n");
    }
    const char *cl = strstr(buf, "Content-Length: ");
    if (cl && cl < end)
        return len >= head + strtoul(cl + 16, NULL, 10);
    return true;
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    raw_conn_t *rc = s->data;
    fixture_t *fx = rc->fx;
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, on_raw_closed);
        return;
    }
    rc->len += (size_t)n;
    rc->buf[rc->len] = '\0';
    if (!request_complete(rc->buf, rc->len))
        return;
    snprintf(fx->raw_request, sizeof fx->raw_request, "%s", rc->buf);
    rc->len = 0;
    rc->requests++;
    if (fx->mode == SCRIPT_SILENT)
        return;
    if (fx->mode == SCRIPT_STALE_SECOND && rc->requests == 2) {
        uv_close((uv_handle_t *)s, on_raw_closed);
        return;
    }
    uv_write_t *w = malloc(sizeof *w);
    w->data = rc;
    uv_buf_t out = uv_buf_init((char *)fx->answer, (unsigned)strlen(fx->answer));
    uv_write(w, s, &out, 1, on_raw_written);
}

static void on_raw_connection(uv_stream_t *l, int status)
{
    fixture_t *fx = l->data;
    raw_conn_t *rc = calloc(1, sizeof *rc);
    rc->fx = fx;
    uv_tcp_init(l->loop, &rc->tcp);
    rc->tcp.data = rc;
    if (uv_accept(l, (uv_stream_t *)&rc->tcp) != 0) {
        uv_close((uv_handle_t *)&rc->tcp, on_raw_closed);
        return;
    }
    fx->accepted++;
    uv_read_start((uv_stream_t *)&rc->tcp, raw_alloc, raw_read);
}

/* ---- the request under test (loop thread) ------------------------------ */

static void on_response(rw_http_creq_t *q, const rw_http_response_t *res)
{
    fixture_t *fx = rw_http_creq_data(q);
    fx->status_code = res->status;
    fx->content_length = res->content_length;
}

static bool on_body(rw_http_creq_t *q, const char *piece, size_t len)
{
    fixture_t *fx = rw_http_creq_data(q);
    if (fx->body_len + len < sizeof fx->body) {
        memcpy(fx->body + fx->body_len, piece, len);
        fx->body_len += len;
    }
    return true;
}

static void on_complete(rw_http_creq_t *q, int status, const rw_http_header_t *tr, size_t n)
{
    fixture_t *fx = rw_http_creq_data(q);
    fx->result = status;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(fx->trailers + k, sizeof fx->trailers - k, "%s: %s\n", tr[i].name,
                              tr[i].value);
    const char *why = rw_http_creq_reason(q);
    snprintf(fx->reason, sizeof fx->reason, "%s", why ? why : "");
    rw_http_client_stats(fx->client, &fx->stats);
    fx->done = true;
}

static const rw_http_creq_cbs_t cbs = {on_response, on_body, NULL, on_complete};

static void start_request(uv_loop_t *loop, void *arg)
{
    fixture_t *fx = arg;
    fx->done = false;
    fx->status_code = 0;
    fx->result = 1;
    fx->body_len = 0;
    fx->trailers[0] = fx->reason[0] = fx->body[0] = '\0';
    rw_http_header_t hs[] = {{"X-Test", 6, "1", 1}};
    rw_http_request_t r = {
        .method = fx->method ? fx->method : "GET",
        .host = fx->host ? fx->host : "127.0.0.1",
        .port = fx->req_port ? fx->req_port : fx->port,
        .target = "/t?q=1",
        .headers = hs,
        .n_headers = 1,
        .body_length = fx->body_length,
        .timeout_ms = fx->timeout_ms,
    };
    rw_http_creq_t *q;
    int rc = rw_http_client_request(fx->client, &r, &cbs, fx, &q);
    if (rc < 0) {
        fx->result = rc;
        fx->done = true;
        return;
    }
    for (int i = 0; i < 4 && fx->pieces[i]; i++)
        rw_http_creq_write(q, fx->pieces[i], strlen(fx->pieces[i]));
    rw_http_creq_end(q, fx->req_trailers, fx->n_req_trailers);
}

static void read_done(uv_loop_t *loop, void *arg)
{
    (void)loop, (void)arg;
}

/* Runs the fixture's request and waits (bounded: 10 s) for on_complete. */
static void run_request(fixture_t *fx)
{
    rw_test_loop_call(fx->thread, start_request, fx);
    for (int i = 0; i < 1000 && !fx->done; i++) {
        rw_test_sleep_ms(10);
        rw_test_loop_call(fx->thread, read_done, fx); /* a barrier for fx's fields */
    }
    assert_true(fx->done);
}

/* ---- fixture ------------------------------------------------------------ */

static void start(uv_loop_t *loop, void *arg)
{
    fixture_t *fx = arg;
    fx->loop = loop;
    uv_tcp_init(loop, &fx->listener);
    fx->listener.data = fx;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_bind(&fx->listener, (struct sockaddr *)&sa, 0);
    uv_listen((uv_stream_t *)&fx->listener, 16, on_raw_connection);
    int len = sizeof sa;
    uv_tcp_getsockname(&fx->listener, (struct sockaddr *)&sa, &len);
    fx->port = ntohs(sa.sin_port);
    fx->client = rw_http_client_new(loop, &fx->opts);
}

static void on_client_closed(void *arg)
{
    ((fixture_t *)arg)->closes_pending--;
}

static void on_listener_closed(uv_handle_t *h)
{
    ((fixture_t *)h->data)->closes_pending--;
}

static void close_raw_conns(uv_handle_t *h, void *arg)
{
    if (h->type == UV_TCP && h->data != arg && !uv_is_closing(h))
        uv_close(h, on_raw_closed);
}

static void stop(uv_loop_t *loop, void *arg)
{
    fixture_t *fx = arg;
    fx->closes_pending = 2;
    rw_http_client_close(fx->client, on_client_closed, fx);
    uv_close((uv_handle_t *)&fx->listener, on_listener_closed);
    /* The raw server's connections: everything TCP left that is not ours. */
    uv_walk(loop, close_raw_conns, fx);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    fx->opts.max_head_bytes = 4096;
    *state = fx;
    return 0;
}

static void begin(fixture_t *fx)
{
    fx->thread = rw_test_loop_start(start, fx);
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    assert_int_equal(rw_test_loop_stop(fx->thread, stop, fx), 0);
    assert_int_equal(fx->closes_pending, 0);
    free(fx);
    return 0;
}

/* ---- tests -------------------------------------------------------------- */

static void close_delimited_body(void **state)
{
    fixture_t *fx = *state;
    begin(fx);
    fx->mode = SCRIPT_ANSWER_CLOSE;
    fx->answer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello, until the end";
    run_request(fx);
    assert_int_equal(fx->result, 0);
    assert_int_equal(fx->status_code, 200);
    assert_int_equal(fx->content_length, -1);
    assert_string_equal(fx->body, "hello, until the end");
    assert_int_equal(fx->stats.idle, 0); /* a close-delimited connection is never pooled */
    assert_non_null(strstr(fx->raw_request, "GET /t?q=1 HTTP/1.1\r\n"));
    char host[64];
    snprintf(host, sizeof host, "Host: 127.0.0.1:%d\r\n", fx->port);
    assert_non_null(strstr(fx->raw_request, host));
    assert_non_null(strstr(fx->raw_request, "X-Test: 1\r\n"));
}

static void chunked_both_ways_with_trailers(void **state)
{
    fixture_t *fx = *state;
    begin(fx);
    fx->mode = SCRIPT_ANSWER;
    fx->answer = "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-R: 2\r\nX-Sum: 7\r\n\r\n";
    fx->method = "POST";
    fx->body_length = -1;
    fx->pieces[0] = "hello";
    fx->pieces[1] = " world";
    fx->req_trailers[0] = (rw_http_header_t){"X-T", 3, "1", 1};
    fx->n_req_trailers = 1;
    run_request(fx);
    assert_int_equal(fx->result, 0);
    assert_int_equal(fx->status_code, 201);
    assert_string_equal(fx->body, "abcdefg");
    assert_string_equal(fx->trailers, "X-R: 2\nX-Sum: 7\n");
    assert_non_null(strstr(fx->raw_request, "Transfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(fx->raw_request, "\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"));
    assert_int_equal(fx->stats.idle, 1); /* the chunked answer ended cleanly: pooled */
}

static void interim_answers_are_skipped_and_head_has_no_body(void **state)
{
    fixture_t *fx = *state;
    begin(fx);
    fx->mode = SCRIPT_ANSWER;
    fx->answer = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                 "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    run_request(fx);
    assert_int_equal(fx->result, 0);
    assert_int_equal(fx->status_code, 200);
    assert_string_equal(fx->body, "ok");

    /* HEAD: a Content-Length, no body follows, and the connection is reused. */
    fx->answer = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    fx->method = "HEAD";
    run_request(fx);
    assert_int_equal(fx->result, 0);
    assert_int_equal(fx->content_length, 10);
    assert_int_equal(fx->body_len, 0);
    assert_int_equal(fx->stats.connects, 1);
    assert_int_equal(fx->stats.reuses, 1);
    assert_int_equal(fx->stats.idle, 1);
}

static void errors_are_reported_once_with_their_code(void **state)
{
    fixture_t *fx = *state;
    fx->opts.max_head_bytes = 256;
    begin(fx);
    /* Malformed. */
    fx->mode = SCRIPT_ANSWER_CLOSE;
    fx->answer = "HTTP/1.1 2x0 Nope\r\n\r\n";
    run_request(fx);
    assert_int_equal(fx->result, RW_EPARSE);
    assert_true(fx->reason[0] != '\0');
    /* Cut mid-body. */
    fx->answer = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..";
    run_request(fx);
    assert_int_equal(fx->result, RW_EPREMATURE);
    assert_int_equal(fx->status_code, 200);
    /* Closed before any answer, on a fresh connection: no retry. */
    fx->answer = "";
    run_request(fx);
    assert_int_equal(fx->result, RW_EPREMATURE);
    assert_int_equal(fx->stats.retries, 0);
    /* Head larger than max_head_bytes. */
    static char big[1024];
    memset(big, 0, sizeof big);
    strcpy(big, "HTTP/1.1 200 OK\r\nX-Big: ");
    memset(big + strlen(big), 'b', 600);
    strcat(big, "\r\nContent-Length: 0\r\n\r\n");
    fx->answer = big;
    run_request(fx);
    assert_int_equal(fx->result, RW_ELIMIT);
    /* No answer within the progress timeout. */
    fx->mode = SCRIPT_SILENT;
    fx->timeout_ms = 100;
    run_request(fx);
    assert_int_equal(fx->result, RW_ETIMEOUT);
    assert_int_equal(fx->status_code, 0);
    /* Nobody listening. */
    fx->timeout_ms = 0;
    int port = fx->port;
    fx->req_port = 1; /* tcpmux: never served here */
    run_request(fx);
    assert_int_equal(fx->result, UV_ECONNREFUSED);
    fx->req_port = port;
    /* A sized body: the write beyond the length is refused (RW_ELIMIT, nothing
     * queued), so the body ends short and the request fails with RW_ETRUNC. */
    fx->mode = SCRIPT_ANSWER;
    fx->method = "PUT";
    fx->body_length = 5;
    fx->pieces[0] = "12345678";
    run_request(fx);
    assert_int_equal(fx->result, RW_ETRUNC);
}

static void names_are_resolved(void **state)
{
    fixture_t *fx = *state;
    begin(fx);
    fx->mode = SCRIPT_ANSWER;
    fx->answer = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlocal";
    /* A name goes through uv_getaddrinfo. Where "localhost" resolves to ::1
     * first (nobody listens there) this also takes the fallback to the next
     * address; on a machine whose localhost is 127.0.0.1 only, it does not. */
    fx->host = "localhost";
    run_request(fx);
    assert_int_equal(fx->result, 0);
    assert_string_equal(fx->body, "local");
}

static void stale_pooled_connection_is_retried_once(void **state)
{
    fixture_t *fx = *state;
    begin(fx);
    fx->mode = SCRIPT_STALE_SECOND;
    fx->answer = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none";
    run_request(fx);
    assert_int_equal(fx->result, 0);
    assert_int_equal(fx->stats.idle, 1);
    /* The pooled connection is closed by the upstream as the request arrives:
     * the request (no body) goes again on a new connection. */
    run_request(fx);
    assert_int_equal(fx->result, 0);
    assert_string_equal(fx->body, "one");
    assert_int_equal(fx->stats.retries, 1);
    assert_int_equal(fx->stats.connects, 2);
    assert_int_equal(fx->accepted, 2);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(close_delimited_body, setup, teardown),
        cmocka_unit_test_setup_teardown(chunked_both_ways_with_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(interim_answers_are_skipped_and_head_has_no_body, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(errors_are_reported_once_with_their_code, setup, teardown),
        cmocka_unit_test_setup_teardown(names_are_resolved, setup, teardown),
        cmocka_unit_test_setup_teardown(stale_pooled_connection_is_retried_once, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
