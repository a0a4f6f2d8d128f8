/* The C runtime client (functions/runtime) as a real process (the rw_fn_test
 * sample) against a Runtime API server written here on libuv + llhttp, which
 * sees every byte: keep-alive, context headers, buffered and error answers,
 * streamed responses with the prelude and error trailers, backpressure with a
 * slow reader over 100 MB, 413 answers, init errors, SIGTERM. (The emulator
 * test covers the same client against a third-party Runtime API; this one
 * covers what the emulator does not implement: streaming and trailers.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <llhttp.h>
#include <mongoc/mongoc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "reelway/error.h"
#include "rw_http_client.h"
#include "rw_test.h"

/* ------------------------------------------------------------------------ */
/* A Runtime API server for tests                                            */
/* ------------------------------------------------------------------------ */

#define MAX_RECORDS 64
#define CAPTURE_LIMIT (256 * 1024)

/* One request the function made, as the server received it. */
typedef struct rec_s {
    char method[8];
    char path[512];
    char headers[8192]; /* "name: value\n", names lowercased */
    char trailers[8192];
    char *body; /* the first CAPTURE_LIMIT bytes, NUL-terminated */
    size_t body_len;
    uint64_t body_total;
    uint64_t pattern_errors; /* bytes that are not 'a' + offset % 26 (when checked) */
    bool complete;
    int conn_id;
} rec_t;

typedef struct event_s {
    char *body;
    char *headers; /* extra header lines */
} event_t;

typedef struct server_s server_t;

typedef struct sconn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    llhttp_t parser;
    server_t *srv;
    int id;
    rec_t *rec;
    char field[256];
    size_t field_len;
    char value[8192];
    size_t value_len;
    bool headers_done, discard, closing, paused;
    struct sconn_s *next;
    char rbuf[64 * 1024];
} sconn_t;

struct server_s {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    int next_conn_id;
    sconn_t *conns;
    sconn_t *parked; /* a GET /next waiting for an event */
    event_t queue[16];
    int queued;
    rec_t recs[MAX_RECORDS];
    int n_recs;
    /* options */
    uint64_t body_limit;   /* answer 413 beyond (0: none) */
    unsigned slow_read_ms; /* pause reading after each read of a request body */
    bool check_pattern;
};

static llhttp_settings_t srv_settings;

static void srv_write(sconn_t *c, const char *data, size_t len);

static void on_write_done(uv_write_t *w, int status)
{
    free(w->data);
    free(w);
}

static void srv_write(sconn_t *c, const char *data, size_t len)
{
    if (c->closing)
        return;
    uv_write_t *w = malloc(sizeof *w);
    char *copy = malloc(len);
    memcpy(copy, data, len);
    w->data = copy;
    uv_buf_t buf = uv_buf_init(copy, (unsigned)len);
    if (uv_write(w, (uv_stream_t *)&c->tcp, &buf, 1, on_write_done) != 0) {
        free(copy);
        free(w);
    }
}

static void on_sconn_closed(uv_handle_t *h)
{
    sconn_t *c = h->data;
    if (uv_is_closing((uv_handle_t *)&c->timer) && c->timer.data == NULL)
        free(c);
    else
        c->tcp.data = NULL;
}

static void on_stimer_closed(uv_handle_t *h)
{
    sconn_t *c = h->data;
    c->timer.data = NULL;
    if (c->tcp.data == NULL)
        free(c);
}

static void sconn_close(sconn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    server_t *s = c->srv;
    if (s->parked == c)
        s->parked = NULL;
    for (sconn_t **pp = &s->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    uv_close((uv_handle_t *)&c->timer, on_stimer_closed);
    uv_close((uv_handle_t *)&c->tcp, on_sconn_closed);
}

/* Hands the next queued event to the parked GET /next. */
static void deliver(server_t *s)
{
    if (s->parked == NULL || s->queued == 0)
        return;
    sconn_t *c = s->parked;
    s->parked = NULL;
    event_t ev = s->queue[0];
    memmove(s->queue, s->queue + 1, sizeof s->queue[0] * (size_t)--s->queued);
    size_t blen = strlen(ev.body);
    char *resp = malloc(blen + strlen(ev.headers) + 256);
    int n = sprintf(
        resp, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n",
        ev.headers, blen);
    memcpy(resp + n, ev.body, blen);
    srv_write(c, resp, (size_t)n + blen);
    free(resp);
    free(ev.body);
    free(ev.headers);
}

static int s_on_message_begin(llhttp_t *p)
{
    sconn_t *c = p->data;
    server_t *s = c->srv;
    if (s->n_recs == MAX_RECORDS)
        return HPE_USER;
    c->rec = &s->recs[s->n_recs++];
    memset(c->rec, 0, sizeof *c->rec);
    c->rec->conn_id = c->id;
    c->headers_done = false;
    c->field_len = c->value_len = 0;
    return 0;
}

static int s_on_url(llhttp_t *p, const char *at, size_t n)
{
    sconn_t *c = p->data;
    size_t len = strlen(c->rec->path);
    if (len + n < sizeof c->rec->path)
        memcpy(c->rec->path + len, at, n);
    return 0;
}

static int s_on_header_field(llhttp_t *p, const char *at, size_t n)
{
    sconn_t *c = p->data;
    for (size_t i = 0; i < n && c->field_len + 1 < sizeof c->field; i++)
        c->field[c->field_len++] = (char)(at[i] >= 'A' && at[i] <= 'Z' ? at[i] + 32 : at[i]);
    return 0;
}

static int s_on_header_value(llhttp_t *p, const char *at, size_t n)
{
    sconn_t *c = p->data;
    if (c->value_len + n < sizeof c->value) {
        memcpy(c->value + c->value_len, at, n);
        c->value_len += n;
    }
    return 0;
}

static int s_on_header_value_complete(llhttp_t *p)
{
    sconn_t *c = p->data;
    /* After the head, header fields are the chunked body's trailers. */
    char *dst = c->headers_done ? c->rec->trailers : c->rec->headers;
    size_t cap = sizeof c->rec->headers, len = strlen(dst);
    snprintf(dst + len, cap - len, "%.*s: %.*s\n", (int)c->field_len, c->field, (int)c->value_len,
             c->value);
    c->field_len = c->value_len = 0;
    return 0;
}

static int s_on_headers_complete(llhttp_t *p)
{
    sconn_t *c = p->data;
    c->headers_done = true;
    snprintf(c->rec->method, sizeof c->rec->method, "%s", llhttp_method_name(p->method));
    return 0;
}

static void respond_413(sconn_t *c)
{
    static const char body[] = "{\"errorMessage\":\"too large\",\"errorType\":\"RequestTooLarge\"}";
    char r[512];
    int n = snprintf(r, sizeof r,
                     "HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     sizeof body - 1, body);
    srv_write(c, r, (size_t)n);
    /* Keep reading (and dropping) what the client still sends, so it reads
     * the answer instead of a reset; it closes the connection. */
    c->discard = true;
}

static int s_on_body(llhttp_t *p, const char *at, size_t n)
{
    sconn_t *c = p->data;
    server_t *s = c->srv;
    rec_t *r = c->rec;
    if (s->check_pattern)
        for (size_t i = 0; i < n; i++)
            if (at[i] != (char)('a' + (r->body_total + i) % 26))
                r->pattern_errors++;
    if (r->body_len < CAPTURE_LIMIT) {
        if (r->body == NULL)
            r->body = malloc(CAPTURE_LIMIT + 1);
        size_t take = n < CAPTURE_LIMIT - r->body_len ? n : CAPTURE_LIMIT - r->body_len;
        memcpy(r->body + r->body_len, at, take);
        r->body_len += take;
        r->body[r->body_len] = '\0';
    }
    r->body_total += n;
    if (s->body_limit && r->body_total > s->body_limit) {
        respond_413(c);
        return HPE_USER;
    }
    return 0;
}

static int s_on_message_complete(llhttp_t *p)
{
    sconn_t *c = p->data;
    server_t *s = c->srv;
    c->rec->complete = true;
    if (strcmp(c->rec->method, "GET") == 0 && strstr(c->rec->path, "/runtime/invocation/next")) {
        s->parked = c;
        deliver(s);
    } else {
        static const char ok[] = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 15\r\n\r\n{\"status\":\"OK\"}";
        srv_write(c, ok, sizeof ok - 1);
    }
    return 0;
}

static void on_salloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sconn_t *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_sread(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);

static void on_resume(uv_timer_t *t)
{
    sconn_t *c = t->data;
    if (!c->closing && c->paused) {
        c->paused = false;
        uv_read_start((uv_stream_t *)&c->tcp, on_salloc, on_sread);
    }
}

static void on_sread(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    sconn_t *c = st->data;
    if (nread < 0) {
        sconn_close(c);
        return;
    }
    if (nread == 0 || c->discard)
        return;
    if (llhttp_execute(&c->parser, buf->base, (size_t)nread) != HPE_OK) {
        if (!c->discard)
            sconn_close(c);
        return;
    }
    /* The slow reader: after each read inside a request body, stop reading
     * for a while, so the client's writes back up to its handler. */
    if (c->srv->slow_read_ms && c->rec && !c->rec->complete && c->rec->body_total > 0) {
        c->paused = true;
        uv_read_stop(st);
        uv_timer_start(&c->timer, on_resume, c->srv->slow_read_ms, 0);
    }
}

static void on_sconnection(uv_stream_t *l, int status)
{
    server_t *s = l->data;
    sconn_t *c = calloc(1, sizeof *c);
    c->srv = s;
    c->id = ++s->next_conn_id;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->timer, on_stimer_closed);
        uv_close((uv_handle_t *)&c->tcp, on_sconn_closed);
        return;
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &srv_settings);
    c->parser.data = c;
    c->next = s->conns;
    s->conns = c;
    uv_read_start((uv_stream_t *)&c->tcp, on_salloc, on_sread);
}

static void server_setup(uv_loop_t *loop, void *arg)
{
    server_t *s = arg;
    llhttp_settings_init(&srv_settings);
    srv_settings.on_message_begin = s_on_message_begin;
    srv_settings.on_url = s_on_url;
    srv_settings.on_header_field = s_on_header_field;
    srv_settings.on_header_value = s_on_header_value;
    srv_settings.on_header_value_complete = s_on_header_value_complete;
    srv_settings.on_headers_complete = s_on_headers_complete;
    srv_settings.on_body = s_on_body;
    srv_settings.on_message_complete = s_on_message_complete;
    s->loop = loop;
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", 0, &addr);
    assert_int_equal(uv_tcp_bind(&s->listener, (const struct sockaddr *)&addr, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&s->listener, 16, on_sconnection), 0);
    struct sockaddr_storage name;
    int len = sizeof name;
    uv_tcp_getsockname(&s->listener, (struct sockaddr *)&name, &len);
    s->port = ntohs(((struct sockaddr_in *)&name)->sin_port);
}

static void server_teardown(uv_loop_t *loop, void *arg)
{
    server_t *s = arg;
    while (s->conns)
        sconn_close(s->conns);
    uv_close((uv_handle_t *)&s->listener, NULL);
    for (int i = 0; i < s->queued; i++) {
        free(s->queue[i].body);
        free(s->queue[i].headers);
    }
    s->queued = 0;
}

/* ---- the test side ---- */

typedef struct fixture_s {
    server_t srv;
    rw_test_loop_t *loop;
    rw_test_proc_t proc;
    bool proc_running;
    char dir[512];
    char log[600];
} fixture_t;

static fixture_t *fixture_new(void)
{
    fixture_t *f = calloc(1, sizeof *f);
    f->loop = rw_test_loop_start(server_setup, &f->srv);
    assert_true(f->srv.port > 0);
    assert_int_equal(rw_test_tmpdir(f->dir, sizeof f->dir, "rw-runtime"), 0);
    snprintf(f->log, sizeof f->log, "%s/function.log", f->dir);
    return f;
}

static const char *fn_bin(void)
{
    static char path[1024];
    const char *dir = getenv("RW_BINARY_DIR");
    snprintf(path, sizeof path, "%s/functions/samples/test/bootstrap", dir ? dir : ".");
    return path;
}

/* Starts rw_fn_test with _HANDLER=handler and the given extra environment. */
static void fn_start(fixture_t *f, const char *handler, const char *const extra[])
{
    char api[64], h[128];
    snprintf(api, sizeof api, "AWS_LAMBDA_RUNTIME_API=127.0.0.1:%d", f->srv.port);
    snprintf(h, sizeof h, "_HANDLER=%s", handler);
    const char *env[24] = {api, h, "AWS_LAMBDA_FUNCTION_NAME=fn-under-test",
                           "AWS_LAMBDA_FUNCTION_VERSION=7", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256",
                           "AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/fn-under-test",
                           "AWS_LAMBDA_LOG_STREAM_NAME=2024/05/01/[7]abc",
                           /* ASan keeps freed memory for a while; keep that small so the
                            * memory test measures the runtime, not the quarantine. */
                           "ASAN_OPTIONS=quarantine_size_mb=4:detect_leaks=1", NULL};
    size_t n = 8;
    for (size_t i = 0; extra && extra[i] && n + 1 < 24; i++)
        env[n++] = extra[i];
    env[n] = NULL;
    const char *unset[] = {"MONGODB_URI", "RW_FN_INIT_FAIL", "_X_AMZN_TRACE_ID", NULL};
    char *argv[] = {(char *)fn_bin(), NULL};
    assert_int_equal(rw_test_proc_start(&f->proc, argv, env, unset, f->log), 0);
    f->proc_running = true;
}

static void dump_log(const fixture_t *f)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "echo '--- function log:'; cat %s", f->log);
    (void)system(cmd);
}

/* Stops the function (SIGTERM) and expects a clean exit 0. */
static void fn_stop_clean(fixture_t *f)
{
    int status = rw_test_proc_stop(&f->proc, SIGTERM, 10000);
    f->proc_running = false;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        dump_log(f);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void stop_server(uv_loop_t *loop, void *arg)
{
    server_teardown(loop, arg);
}

static void fixture_free(fixture_t *f)
{
    if (f->proc_running)
        rw_test_proc_stop(&f->proc, SIGKILL, 5000);
    assert_int_equal(rw_test_loop_stop(f->loop, stop_server, &f->srv), 0);
    for (int i = 0; i < f->srv.n_recs; i++)
        free(f->srv.recs[i].body);
    rw_test_rmtree(f->dir);
    free(f);
}

typedef struct push_s {
    const char *body;
    const char *headers;
} push_t;

typedef struct push_call_s {
    server_t *srv;
    push_t ev;
} push_call_t;

static void do_push(uv_loop_t *loop, void *arg)
{
    push_call_t *pc = arg;
    server_t *s = pc->srv;
    assert_true(s->queued < 16);
    s->queue[s->queued].body = strdup(pc->ev.body);
    s->queue[s->queued].headers = strdup(pc->ev.headers ? pc->ev.headers : "");
    s->queued++;
    deliver(s);
}

static int64_t epoch_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Queues an event with request id `id` and a deadline 60 s ahead. */
static void push_event(fixture_t *f, const char *id, const char *body, const char *more_headers)
{
    char headers[4096];
    snprintf(headers, sizeof headers,
             "Lambda-Runtime-Aws-Request-Id: %s\r\nLambda-Runtime-Deadline-Ms: %lld\r\n"
             "Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:"
             "fn-under-test\r\n%s",
             id, (long long)(epoch_ms() + 60000), more_headers ? more_headers : "");
    push_call_t pc = {.srv = &f->srv, .ev = {.body = body, .headers = headers}};
    rw_test_loop_call(f->loop, do_push, &pc);
}

/* A copy of the server's view, taken on its loop thread. */
typedef struct snap_call_s {
    server_t *srv;
    const char *method;
    const char *path_part;
    int nth;   /* which match (0: first) */
    rec_t out; /* body not copied: see body_copy */
    char *body_copy;
    bool found;
    int parked_conn;
    int n_recs;
} snap_call_t;

static void do_snap(uv_loop_t *loop, void *arg)
{
    snap_call_t *sc = arg;
    server_t *s = sc->srv;
    sc->n_recs = s->n_recs;
    sc->parked_conn = s->parked ? s->parked->id : 0;
    int seen = 0;
    for (int i = 0; i < s->n_recs; i++) {
        rec_t *r = &s->recs[i];
        if (strcmp(r->method, sc->method) != 0 || strstr(r->path, sc->path_part) == NULL)
            continue;
        if (seen++ < sc->nth)
            continue;
        sc->out = *r;
        sc->out.body = NULL;
        sc->body_copy = r->body ? malloc(r->body_len + 1) : NULL;
        if (sc->body_copy) {
            memcpy(sc->body_copy, r->body, r->body_len);
            sc->body_copy[r->body_len] = '\0';
        }
        sc->found = true;
        return;
    }
}

/* Waits (bounded) for the nth complete request matching method and path part. */
static bool wait_rec(fixture_t *f, const char *method, const char *path_part, int nth,
                     int timeout_ms, rec_t *out, char **body)
{
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        snap_call_t sc = {.srv = &f->srv, .method = method, .path_part = path_part, .nth = nth};
        rw_test_loop_call(f->loop, do_snap, &sc);
        if (sc.found && sc.out.complete) {
            if (out)
                *out = sc.out;
            if (body)
                *body = sc.body_copy;
            else
                free(sc.body_copy);
            return true;
        }
        free(sc.body_copy);
        if (!rw_test_pid_alive(f->proc.pid) && !sc.found)
            break;
        rw_test_sleep_ms(10);
    }
    return false;
}

/* The number of records matching method and path part. */
static int count_recs(fixture_t *f, const char *method, const char *path_part)
{
    int n = 0;
    for (;; n++) {
        snap_call_t sc = {.srv = &f->srv, .method = method, .path_part = path_part, .nth = n};
        rw_test_loop_call(f->loop, do_snap, &sc);
        free(sc.body_copy);
        if (!sc.found)
            return n;
    }
}

/* The value of a header line "name: value" in a rec's header or trailer text. */
static bool header_in(const char *text, const char *name, char *buf, size_t len)
{
    size_t nlen = strlen(name);
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        if (strncasecmp(p, name, nlen) == 0 && p[nlen] == ':') {
            const char *v = p + nlen + 1;
            while (*v == ' ')
                v++;
            size_t vlen = eol ? (size_t)(eol - v) : strlen(v);
            snprintf(buf, len, "%.*s", (int)vlen, v);
            return true;
        }
        p = eol ? eol + 1 : NULL;
    }
    return false;
}

static bool log_contains(const fixture_t *f, const char *needle)
{
    FILE *fp = fopen(f->log, "r");
    if (!fp)
        return false;
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof line, fp))
        found = strstr(line, needle) != NULL;
    fclose(fp);
    return found;
}

static void dump_log(const fixture_t *f);

static bool wait_log(const fixture_t *f, const char *needle, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        if (log_contains(f, needle))
            return true;
        rw_test_sleep_ms(10);
    }
    fprintf(stderr, "not in the function log: %s\n", needle);
    dump_log(f);
    return false;
}

static char *b64_decode(const char *in, size_t *len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(in);
    char *out = malloc(n / 4 * 3 + 1);
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n && in[i] != '='; i++) {
        const char *pos = strchr(alphabet, in[i]);
        assert_non_null(pos);
        acc = acc << 6 | (unsigned)(pos - alphabet);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)(acc >> bits & 0xff);
        }
    }
    out[o] = '\0';
    *len = o;
    return out;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */
/* ------------------------------------------------------------------------ */

static void context_headers_reach_the_handler_over_one_connection(void **state)
{
    fixture_t *f = fixture_new();
    fn_start(f, "context", NULL);
    push_event(f, "req-1", "{}",
               "Lambda-Runtime-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1\r\n"
               "Lambda-Runtime-Client-Context: eyJjdXN0b20iOnsiYSI6MX19\r\n"
               "Lambda-Runtime-Cognito-Identity: {\"cognitoIdentityId\":\"us-east-1:42\"}\r\n");
    rec_t rec;
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/2018-06-01/runtime/invocation/req-1/response", 0, 10000, &rec,
                         &body));
    cJSON *doc = cJSON_Parse(body);
    assert_non_null(doc);
    assert_string_equal(cJSON_GetObjectItem(doc, "request_id")->valuestring, "req-1");
    double deadline = cJSON_GetObjectItem(doc, "deadline_ms")->valuedouble;
    double remaining = cJSON_GetObjectItem(doc, "remaining_ms")->valuedouble;
    assert_true(deadline > (double)epoch_ms());
    assert_true(remaining > 0 && remaining <= 60000);
    assert_string_equal(cJSON_GetObjectItem(doc, "invoked_function_arn")->valuestring,
                        "arn:aws:lambda:us-east-1:123456789012:function:fn-under-test");
    assert_string_equal(cJSON_GetObjectItem(doc, "trace_id")->valuestring,
                        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1");
    assert_string_equal(cJSON_GetObjectItem(doc, "x_amzn_trace_id")->valuestring,
                        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1");
    assert_string_equal(cJSON_GetObjectItem(doc, "client_context")->valuestring,
                        "eyJjdXN0b20iOnsiYSI6MX19");
    assert_string_equal(cJSON_GetObjectItem(doc, "cognito_identity")->valuestring,
                        "{\"cognitoIdentityId\":\"us-east-1:42\"}");
    assert_string_equal(cJSON_GetObjectItem(doc, "function_name")->valuestring, "fn-under-test");
    assert_string_equal(cJSON_GetObjectItem(doc, "function_version")->valuestring, "7");
    assert_int_equal(cJSON_GetObjectItem(doc, "memory_limit_mb")->valueint, 256);
    assert_string_equal(cJSON_GetObjectItem(doc, "log_group_name")->valuestring,
                        "/aws/lambda/fn-under-test");
    assert_string_equal(cJSON_GetObjectItem(doc, "log_stream_name")->valuestring,
                        "2024/05/01/[7]abc");
    cJSON_Delete(doc);
    free(body);
    char ct[128];
    assert_true(header_in(rec.headers, "content-type", ct, sizeof ct));
    assert_string_equal(ct, "application/json");

    /* A second event without a trace id: the variable is gone again. */
    push_event(f, "req-2", "{}", NULL);
    assert_true(wait_rec(f, "POST", "/invocation/req-2/response", 0, 10000, NULL, &body));
    doc = cJSON_Parse(body);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(doc, "x_amzn_trace_id")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(doc, "client_context")));
    cJSON_Delete(doc);
    free(body);

    /* Every request went over one keep-alive connection. */
    rec_t next3;
    assert_true(wait_rec(f, "GET", "/runtime/invocation/next", 2, 10000, &next3, NULL));
    rec_t first;
    assert_true(wait_rec(f, "GET", "/runtime/invocation/next", 0, 0, &first, NULL));
    assert_int_equal(first.conn_id, 1);
    assert_int_equal(next3.conn_id, 1);
    assert_int_equal(rec.conn_id, 1);

    /* The logger's line: time, request id, level, message. */
    assert_true(wait_log(f, "\treq-1\tINFO\tcontext asked", 5000));
    fn_stop_clean(f);
    fixture_free(f);
}

static void echo_returns_raw_bytes_when_not_json(void **state)
{
    fixture_t *f = fixture_new();
    fn_start(f, "echo", NULL);
    push_event(f, "raw-1", "just bytes, not JSON", NULL);
    rec_t rec;
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/invocation/raw-1/response", 0, 10000, &rec, &body));
    assert_string_equal(body, "just bytes, not JSON");
    char ct[128];
    assert_true(header_in(rec.headers, "content-type", ct, sizeof ct));
    assert_string_equal(ct, "application/octet-stream");
    free(body);
    fn_stop_clean(f);
    fixture_free(f);
}

static void error_goes_to_the_error_endpoint(void **state)
{
    fixture_t *f = fixture_new();
    fn_start(f, "error", NULL);
    push_event(f, "err-1", "{\"type\":\"Custom.Broken\",\"message\":\"it broke\"}", NULL);
    rec_t rec;
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/invocation/err-1/error", 0, 10000, &rec, &body));
    assert_string_equal(
        body, "{\"errorMessage\":\"it broke\",\"errorType\":\"Custom.Broken\",\"stackTrace\":[]}");
    char type[128];
    assert_true(header_in(rec.headers, "lambda-runtime-function-error-type", type, sizeof type));
    assert_string_equal(type, "Custom.Broken");
    free(body);
    assert_int_equal(count_recs(f, "POST", "/invocation/err-1/response"), 0);
    assert_true(wait_log(f, "\terr-1\tERROR\tInvoke Error", 5000));
    fn_stop_clean(f);
    fixture_free(f);
}

static void streaming_sends_prelude_and_chunks(void **state)
{
    fixture_t *f = fixture_new();
    fn_start(f, "stream", NULL);
    push_event(f, "st-1",
               "{\"bytes\":1000,\"chunks\":4,\"status\":201,\"headers\":{\"x-a\":\"b\"},"
               "\"cookies\":[\"c=d\"]}",
               NULL);
    rec_t rec;
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/invocation/st-1/response", 0, 10000, &rec, &body));
    char v[256];
    assert_true(header_in(rec.headers, "lambda-runtime-function-response-mode", v, sizeof v));
    assert_string_equal(v, "streaming");
    assert_true(header_in(rec.headers, "transfer-encoding", v, sizeof v));
    assert_string_equal(v, "chunked");
    assert_true(header_in(rec.headers, "trailer", v, sizeof v));
    assert_string_equal(v,
                        "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body");
    assert_true(header_in(rec.headers, "content-type", v, sizeof v));
    assert_string_equal(v, "application/vnd.awslambda.http-integration-response");

    const char *prelude = "{\"statusCode\":201,\"headers\":{\"x-a\":\"b\"},\"cookies\":[\"c=d\"]}";
    size_t plen = strlen(prelude);
    assert_int_equal(rec.body_len, plen + 8 + 1000);
    assert_memory_equal(body, prelude, plen);
    static const char zeros[8];
    assert_memory_equal(body + plen, zeros, 8);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal(body[plen + 8 + i], 'a' + i % 26);
    assert_string_equal(rec.trailers, "");
    free(body);

    /* Lambda asks for a new connection after a streamed response. */
    rec_t next2;
    assert_true(wait_rec(f, "GET", "/runtime/invocation/next", 1, 10000, &next2, NULL));
    assert_int_not_equal(next2.conn_id, rec.conn_id);
    assert_true(wait_log(f, "\tst-1\tINFO\tstream: 1000 of 1000 bytes written", 5000));
    fn_stop_clean(f);
    fixture_free(f);
}

static void streaming_failure_midstream_sends_error_trailers(void **state)
{
    fixture_t *f = fixture_new();
    fn_start(f, "stream", NULL);
    push_event(f, "st-2", "{\"bytes\":1000,\"chunks\":4,\"fail_after\":500}", NULL);
    rec_t rec;
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/invocation/st-2/response", 0, 10000, &rec, &body));
    assert_int_equal(rec.body_len, 500);
    for (size_t i = 0; i < 500; i++)
        assert_int_equal(body[i], 'a' + i % 26);
    free(body);
    char type[128], b64[2048];
    assert_true(header_in(rec.trailers, "lambda-runtime-function-error-type", type, sizeof type));
    assert_string_equal(type, "Sample.StreamFailed");
    assert_true(header_in(rec.trailers, "lambda-runtime-function-error-body", b64, sizeof b64));
    size_t len = 0;
    char *json = b64_decode(b64, &len);
    assert_string_equal(json, "{\"errorMessage\":\"failed on purpose after 500 bytes\","
                              "\"errorType\":\"Sample.StreamFailed\",\"stackTrace\":[]}");
    free(json);
    assert_int_equal(count_recs(f, "POST", "/invocation/st-2/error"), 0);

    /* Failing before the first byte is an ordinary error answer. */
    push_event(f, "st-3", "{\"bytes\":1000,\"fail_after\":0}", NULL);
    assert_true(wait_rec(f, "POST", "/invocation/st-3/error", 0, 10000, &rec, &body));
    assert_string_equal(body, "{\"errorMessage\":\"failed on purpose after 0 bytes\","
                              "\"errorType\":\"Sample.StreamFailed\",\"stackTrace\":[]}");
    free(body);
    assert_int_equal(count_recs(f, "POST", "/invocation/st-3/response"), 0);
    fn_stop_clean(f);
    fixture_free(f);
}

static void streaming_from_a_pipeline_completes_from_its_done(void **state)
{
    fixture_t *f = fixture_new();
    f->srv.check_pattern = true;
    fn_start(f, "stream-pipe", NULL);
    push_event(f, "pipe-1", "{\"bytes\":300000,\"chunk\":10000}", NULL);
    rec_t rec;
    assert_true(wait_rec(f, "POST", "/invocation/pipe-1/response", 0, 10000, &rec, NULL));
    assert_int_equal(rec.body_total, 300000);
    assert_int_equal(rec.pattern_errors, 0);
    assert_string_equal(rec.trailers, "");

    /* The source fails: the pipeline tears the body down, the handler fails
     * the invocation from done, the caller gets the trailers. */
    push_event(f, "pipe-2", "{\"bytes\":300000,\"chunk\":10000,\"fail_after\":100000}", NULL);
    assert_true(wait_rec(f, "POST", "/invocation/pipe-2/response", 0, 10000, &rec, NULL));
    assert_true(rec.body_total <= 100000);
    assert_int_equal(rec.pattern_errors, 0);
    char type[128], b64[2048];
    assert_true(header_in(rec.trailers, "lambda-runtime-function-error-type", type, sizeof type));
    assert_string_equal(type, "Sample.PipelineFailed");
    assert_true(header_in(rec.trailers, "lambda-runtime-function-error-body", b64, sizeof b64));
    size_t len = 0;
    char *json = b64_decode(b64, &len);
    cJSON *doc = cJSON_Parse(json);
    assert_string_equal(cJSON_GetObjectItem(doc, "errorMessage")->valuestring,
                        rw_strerror(RW_EPARSE));
    cJSON_Delete(doc);
    free(json);
    assert_true(wait_log(f, "\tpipe-2\tINFO\tstream-pipe: pipeline done", 5000));
    fn_stop_clean(f);
    fixture_free(f);
}

static long vm_hwm_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *fp = fopen(path, "r");
    long kb = -1;
    while (fp && fgets(line, sizeof line, fp))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = atol(line + 6);
    if (fp)
        fclose(fp);
    return kb;
}

static void streaming_100mb_to_a_slow_reader_keeps_memory_flat(void **state)
{
    fixture_t *f = fixture_new();
    f->srv.slow_read_ms = 1; /* set before the function connects: no race */
    f->srv.check_pattern = true;
    fn_start(f, "stream-large", NULL);
    push_event(f, "big-1", "{}", NULL);
    rec_t rec;
    assert_true(wait_rec(f, "POST", "/invocation/big-1/response", 0, 240000, &rec, NULL));
    assert_int_equal(rec.body_total, 100ull * 1024 * 1024);
    assert_int_equal(rec.pattern_errors, 0);
    assert_string_equal(rec.trailers, "");
    /* The handler had to wait for drain: the slow reader pushed back... */
    assert_true(wait_log(f, "\tbig-1\tINFO\tstream: 104857600 of 104857600 bytes written", 5000));
    assert_false(log_contains(f, "written, 0 drains"));
    /* ...and so the function never held more than a few MB of it. */
    long hwm = vm_hwm_kb(f->proc.pid);
    fprintf(stderr, "function peak RSS after 100 MB streamed: %ld kB\n", hwm);
    assert_true(hwm > 0);
    assert_true(hwm < 64 * 1024);
    fn_stop_clean(f);
    fixture_free(f);
}

static void response_413_is_logged_and_the_function_carries_on(void **state)
{
    fixture_t *f = fixture_new();
    f->srv.body_limit = 1000;
    fn_start(f, "echo", NULL);
    char big[3000];
    snprintf(big, sizeof big, "{\"pad\":\"%02000d\"}", 0);
    push_event(f, "big-echo", big, NULL);
    assert_true(wait_log(f, "\tbig-echo\tERROR\tFunction.ResponseSizeTooLarge", 10000));
    push_event(f, "small-echo", "{\"ok\":1}", NULL);
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/invocation/small-echo/response", 0, 10000, NULL, &body));
    assert_string_equal(body, "{\"ok\":1}");
    free(body);
    fn_stop_clean(f);
    fixture_free(f);
}

/* The same when the answer is far more than the socket takes at once: the 413
 * arrives while the runtime is still writing it, and the request ends only
 * once libuv gave its buffers back (the connection is closed, the write
 * cancelled). */
static void response_413_while_the_body_is_being_written(void **state)
{
    fixture_t *f = fixture_new();
    f->srv.body_limit = 1000;
    fn_start(f, "blob", NULL);
    push_event(f, "big-blob", "{\"bytes\":8000000}", NULL);
    assert_true(wait_log(f, "\tbig-blob\tERROR\tFunction.ResponseSizeTooLarge", 10000));
    for (int i = 0; i < 2; i++) {
        char id[32];
        snprintf(id, sizeof id, "small-blob-%d", i);
        push_event(f, id, "{\"bytes\":10}", NULL);
        char path[96], *body = NULL;
        snprintf(path, sizeof path, "/invocation/%s/response", id);
        assert_true(wait_rec(f, "POST", path, 0, 10000, NULL, &body));
        assert_string_equal(body, "\"abcdefghij\"");
        free(body);
    }
    fn_stop_clean(f);
    fixture_free(f);
}

static void response_413_midstream_fails_the_writes_and_the_function_carries_on(void **state)
{
    fixture_t *f = fixture_new();
    f->srv.body_limit = 100 * 1000;
    fn_start(f, "stream", NULL);
    /* More than the sockets between the two hold, so that the 413 (sent after
     * 100 kB) always arrives before the handler could have written it all. */
    push_event(f, "big-st", "{\"bytes\":64000000,\"chunk\":10000}", NULL);
    assert_true(wait_log(f, "\tbig-st\tERROR\tFunction.ResponseSizeTooLarge", 20000));
    /* The handler saw its stream fail and stopped writing long before 64 MB. */
    assert_true(wait_log(f, "\tbig-st\tWARN\tstream: the response stream failed", 10000));
    assert_false(log_contains(f, "stream: 64000000 of 64000000"));
    push_event(f, "small-st", "{\"bytes\":10}", NULL);
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/invocation/small-st/response", 0, 10000, NULL, &body));
    assert_string_equal(body, "abcdefghij");
    free(body);
    fn_stop_clean(f);
    fixture_free(f);
}

static void sigterm_when_idle_exits_zero(void **state)
{
    fixture_t *f = fixture_new();
    fn_start(f, "echo", NULL);
    assert_true(wait_rec(f, "GET", "/runtime/invocation/next", 0, 10000, NULL, NULL));
    fn_stop_clean(f);
    fixture_free(f);
}

static void sigterm_during_an_invocation_finishes_it_first(void **state)
{
    fixture_t *f = fixture_new();
    fn_start(f, "sleep", NULL);
    assert_true(wait_rec(f, "GET", "/runtime/invocation/next", 0, 10000, NULL, NULL));
    push_event(f, "slow-1", "{\"ms\":500}", NULL);
    /* The event has left the server: the handler is sleeping. */
    for (int i = 0; i < 500; i++) {
        snap_call_t sc = {.srv = &f->srv, .method = "-", .path_part = "-"};
        rw_test_loop_call(f->loop, do_snap, &sc);
        if (sc.parked_conn == 0)
            break;
        rw_test_sleep_ms(10);
    }
    kill(f->proc.pid, SIGTERM);
    int status = rw_test_proc_wait(&f->proc, 10000);
    f->proc_running = false;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/invocation/slow-1/response", 0, 0, NULL, &body));
    assert_string_equal(body, "{\"slept_ms\":500}");
    free(body);
    /* It did not ask for another event. */
    assert_int_equal(count_recs(f, "GET", "/runtime/invocation/next"), 1);
    fixture_free(f);
}

static void unknown_handler_is_an_init_error(void **state)
{
    fixture_t *f = fixture_new();
    fn_start(f, "no-such-handler", NULL);
    rec_t rec;
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/2018-06-01/runtime/init/error", 0, 10000, &rec, &body));
    char type[128];
    assert_true(header_in(rec.headers, "lambda-runtime-function-error-type", type, sizeof type));
    assert_string_equal(type, "Runtime.HandlerNotFound");
    cJSON *doc = cJSON_Parse(body);
    assert_string_equal(cJSON_GetObjectItem(doc, "errorType")->valuestring,
                        "Runtime.HandlerNotFound");
    assert_non_null(
        strstr(cJSON_GetObjectItem(doc, "errorMessage")->valuestring, "no-such-handler"));
    cJSON_Delete(doc);
    free(body);
    int status = rw_test_proc_wait(&f->proc, 10000);
    f->proc_running = false;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_int_equal(count_recs(f, "GET", "/runtime/invocation/next"), 0);
    fixture_free(f);
}

static void init_callback_failure_is_an_init_error(void **state)
{
    fixture_t *f = fixture_new();
    const char *extra[] = {"RW_FN_INIT_FAIL=the config is missing", NULL};
    fn_start(f, "echo", extra);
    rec_t rec;
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/runtime/init/error", 0, 10000, &rec, &body));
    assert_string_equal(body, "{\"errorMessage\":\"the config is missing\",\"errorType\":"
                              "\"Sample.InitFailed\",\"stackTrace\":[]}");
    free(body);
    int status = rw_test_proc_wait(&f->proc, 10000);
    f->proc_running = false;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_int_equal(count_recs(f, "GET", "/runtime/invocation/next"), 0);
    fixture_free(f);
}

static void env_handler_sees_the_function_environment(void **state)
{
    fixture_t *f = fixture_new();
    const char *extra[] = {"GREETING=hi there", NULL};
    fn_start(f, "env", extra);
    push_event(f, "env-1", "{\"names\":[\"GREETING\",\"AWS_LAMBDA_FUNCTION_NAME\",\"NOPE_X\"]}",
               NULL);
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/invocation/env-1/response", 0, 10000, NULL, &body));
    assert_string_equal(body, "{\"GREETING\":\"hi there\",\"AWS_LAMBDA_FUNCTION_NAME\":"
                              "\"fn-under-test\",\"NOPE_X\":null}");
    free(body);
    fn_stop_clean(f);
    fixture_free(f);
}

static void crash_kills_the_process(void **state)
{
    fixture_t *f = fixture_new();
    fn_start(f, "crash", NULL);
    push_event(f, "boom", "{}", NULL);
    int status = rw_test_proc_wait(&f->proc, 10000);
    f->proc_running = false;
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    assert_int_equal(count_recs(f, "POST", "/invocation/boom/"), 0);
    fixture_free(f);
}

/* The blocking handler with the mongoc pool made at init, warm across calls. */
static void record_appends_deliveries_with_the_init_pool(void **state)
{
    const char *uri = rw_test_mongo_uri();
    char db[64];
    rw_test_db_name(db, sizeof db, "runtime");
    fixture_t *f = fixture_new();
    char uri_env[1024];
    snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", uri);
    const char *extra[] = {uri_env, NULL};
    fn_start(f, "record", extra);
    char ev[256];
    snprintf(ev, sizeof ev, "{\"db\":\"%s\",\"collection\":\"deliveries\",\"id\":\"m-1\"}", db);
    push_event(f, "rec-1", ev, NULL);
    snprintf(ev, sizeof ev,
             "{\"db\":\"%s\",\"collection\":\"deliveries\",\"id\":\"m-2\",\"fail\":true}", db);
    push_event(f, "rec-2", ev, NULL);
    char *body = NULL;
    assert_true(wait_rec(f, "POST", "/invocation/rec-1/response", 0, 30000, NULL, &body));
    assert_string_equal(body, "{\"recorded\":true,\"request_id\":\"rec-1\"}");
    free(body);
    assert_true(wait_rec(f, "POST", "/invocation/rec-2/error", 0, 30000, NULL, &body));
    assert_non_null(strstr(body, "Sample.RecordFailed"));
    free(body);

    mongoc_client_t *client = mongoc_client_new(uri);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, db, "deliveries");
    bson_error_t error;
    bson_t filter = BSON_INITIALIZER;
    int64_t n = mongoc_collection_count_documents(coll, &filter, NULL, NULL, NULL, &error);
    assert_int_equal(n, 2);
    BSON_APPEND_UTF8(&filter, "event.id", "m-1");
    BSON_APPEND_UTF8(&filter, "request_id", "rec-1");
    n = mongoc_collection_count_documents(coll, &filter, NULL, NULL, NULL, &error);
    assert_int_equal(n, 1);
    bson_destroy(&filter);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);
    rw_test_drop_db(uri, db);
    fn_stop_clean(f);
    fixture_free(f);
}

int main(void)
{
    mongoc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(context_headers_reach_the_handler_over_one_connection),
        cmocka_unit_test(echo_returns_raw_bytes_when_not_json),
        cmocka_unit_test(error_goes_to_the_error_endpoint),
        cmocka_unit_test(streaming_sends_prelude_and_chunks),
        cmocka_unit_test(streaming_failure_midstream_sends_error_trailers),
        cmocka_unit_test(streaming_from_a_pipeline_completes_from_its_done),
        cmocka_unit_test(streaming_100mb_to_a_slow_reader_keeps_memory_flat),
        cmocka_unit_test(response_413_is_logged_and_the_function_carries_on),
        cmocka_unit_test(response_413_while_the_body_is_being_written),
        cmocka_unit_test(response_413_midstream_fails_the_writes_and_the_function_carries_on),
        cmocka_unit_test(sigterm_when_idle_exits_zero),
        cmocka_unit_test(sigterm_during_an_invocation_finishes_it_first),
        cmocka_unit_test(unknown_handler_is_an_init_error),
        cmocka_unit_test(init_callback_failure_is_an_init_error),
        cmocka_unit_test(env_handler_sees_the_function_environment),
        cmocka_unit_test(crash_kills_the_process),
        cmocka_unit_test(record_appends_deliveries_with_the_init_pool),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mongoc_cleanup();
    return rc;
}
