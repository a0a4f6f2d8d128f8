/* libFuzzer target for the HTTP/1.1 server's glue around llhttp: any bytes a
 * client can send (one connection, then a half-close) end in answers that are
 * well-formed HTTP, or a closed connection; never a crash, a leak, a hang or a
 * server that stops answering. Seeds: tests/fuzz/seeds/http. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "reelway/error.h"
#include "reelway/http.h"

static uv_loop_t loop;
static rw_http_server_t *server;
static int port;

static void on_body(rw_http_req_t *req, int status, const char *body, size_t len)
{
    if (status == RW_ELIMIT) {
        rw_http_respond_error(req, 413, "Request Too Long", NULL, NULL, 0);
        return;
    }
    if (status != 0) {
        rw_http_res_end(req, NULL, 0);
        return;
    }
    rw_http_respond(req, 200, NULL, 0, body, len);
}

static bool on_piece(rw_http_req_t *req, const char *p, size_t n)
{
    return n % 3 != 0; /* pause now and then */
}

static void on_resume(uv_timer_t *t)
{
    rw_http_req_body_resume(t->data);
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

static bool on_piece_paced(rw_http_req_t *req, const char *p, size_t n)
{
    if (on_piece(req, p, n))
        return true;
    uv_timer_t *t = malloc(sizeof *t);
    uv_timer_init(&loop, t);
    t->data = req;
    uv_timer_start(t, on_resume, 0, 0);
    return false;
}

static void on_sink_end(rw_http_req_t *req, int status)
{
    if (status != 0 && !rw_http_req_alive(req)) {
        rw_http_res_end(req, NULL, 0);
        return;
    }
    rw_http_res_start(req, status ? 400 : 200, NULL, 0, -1);
    rw_http_res_write(req, "ok", 2, false, NULL, NULL);
    rw_http_header_t tr = {"X-T", 3, "1", 1};
    rw_http_res_end(req, &tr, 1);
}

static void handler(rw_http_req_t *req, void *arg)
{
    /* The route depends on the path's first character, so the fuzzer reaches
     * every way a handler can treat a body. */
    char c = req->path_len > 1 ? req->path[1] : '/';
    if (c == 'e') {
        if (rw_http_req_read_body(req, 4096, on_body) == RW_ELIMIT)
            rw_http_respond_error(req, 413, "Request Too Long", NULL, NULL, 0);
    } else if (c == 's') {
        rw_http_body_sink_t sink = {on_piece_paced, on_sink_end};
        if (rw_http_req_body_start(req, &sink, 4096) != 0)
            rw_http_respond_error(req, 413, "Request Too Long", NULL, NULL, 0);
    } else {
        rw_http_respond(req, 204, NULL, 0, NULL, 0);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    uv_loop_init(&loop);
    rw_http_limits_t limits = {.max_header_bytes = 2048, .max_uri_bytes = 512, .max_headers = 20,
                               .header_timeout_ms = 1000, .body_timeout_ms = 1000,
                               .idle_timeout_ms = 1000};
    server = rw_http_server_new(&loop, &limits, handler, NULL);
    if (rw_http_server_listen(server, "127.0.0.1", 0, false) != 0)
        abort();
    port = rw_http_server_port(server);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 && errno != EINPROGRESS)
        abort();
    size_t sent = 0;
    bool shut = false, closed = false;
    char buf[65536];
    size_t got = 0;
    for (int round = 0; round < 2000 && !closed; round++) {
        if (sent < size) {
            ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
        } else if (!shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        ssize_t n = recv(fd, buf + (got < sizeof buf / 2 ? got : 0),
                         sizeof buf - (got < sizeof buf / 2 ? got : 0), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            closed = true;
        else if (n > 0 && got < sizeof buf / 2)
            got += (size_t)n;
        if (round > 100)
            usleep(100);
    }
    /* Whatever came back starts as an HTTP/1.1 answer. */
    if (got >= 9 && memcmp(buf, "HTTP/1.1 ", 9) != 0)
        abort();
    close(fd);
    /* Let the server notice, close, and free the connection. */
    for (int i = 0; i < 50 && rw_http_server_connections(server) > 0; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    return 0;
}
