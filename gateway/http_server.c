/* The HTTP/1.1 server under the gateway: connections, llhttp parsing, limits
 * and timeouts, request bodies with backpressure, responses sized or chunked.
 *
 * One request per connection is in flight at a time: the parser pauses at the
 * end of each request head (so the handler runs outside llhttp's callbacks) and
 * at the end of each message (so a pipelined request waits for the response
 * before it). Pipelined bytes stay in the read buffer meanwhile, which keeps
 * answers in order with no queue of parsed requests. */
#include "reelway/http.h"

#include "reelway/error.h"
#include "http_fields.h"

#include <errno.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_BUF_SIZE (64 * 1024)
#define READ_BUF_CACHE 64
#define WRITE_HIGH_WATER (256 * 1024)

typedef struct conn_s conn_t;
typedef struct req_s req_t;

/* What the parser is waiting for before it may run again. */
enum block_e {
    BLOCK_NONE = 0,
    BLOCK_HANDLER,  /* head dispatched; the handler has not asked for the body */
    BLOCK_BODY,     /* the body consumer asked us to hold on (backpressure) */
    BLOCK_RESPONSE, /* message complete; the response has not ended yet */
};

enum body_mode_e { BODY_NONE, BODY_WHOLE, BODY_SINK, BODY_DISCARD };

enum timer_mode_e { TIMER_OFF, TIMER_HEAD, TIMER_BODY, TIMER_IDLE, TIMER_WRITE, TIMER_LINGER };

#define LINGER_MS 5000
#define LINGER_MAX_BYTES (16 << 20) /* a refused upload of this size can still be answered */

struct req_s {
    rw_http_req_t pub;
    conn_t *conn;                 /* NULL once the connection is gone */
    rw_fields_t head;             /* the target, then the header fields */
    size_t head_bytes;
    /* Trailers of a chunked body: their own storage, since the head's must
     * not move once the header array points into it. */
    rw_fields_t trail;
    rw_http_header_t *trailers;
    bool head_done;
    bool dispatched;              /* the handler has it: only rw_http_res_end frees it */
    bool message_done;            /* the whole request (body included) has been parsed */
    bool started;                 /* response head queued */
    bool ended;                   /* rw_http_res_end called */
    bool aborted;
    bool head_only;               /* HEAD, 204, 304: no body bytes go out */
    bool chunked_out;
    bool continue_sent;
    int64_t content_length_out;   /* announced, or -1 */
    uint64_t body_out;            /* body bytes announced so far */
    unsigned pending_writes;      /* uv_write requests not yet completed */
    unsigned holds;               /* callbacks into the handler under way */
    enum body_mode_e body_mode;
    uint64_t body_max;
    uint64_t body_seen;
    char *whole;                  /* BODY_WHOLE accumulation */
    size_t whole_len, whole_cap;
    rw_http_body_cb whole_cb;
    rw_http_body_sink_t sink;
    bool body_end_sent;
    rw_http_abort_cb on_abort;
};

struct conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    rw_http_server_t *srv;
    conn_t *prev, *next;
    llhttp_t parser;
    char *rbuf;
    size_t rstart, rlen;
    enum block_e block;
    bool reading;
    bool closing;
    bool close_after;             /* close once the current response is written */
    bool in_process;
    bool reprocess;
    bool eof;
    int handles_open;
    int parse_error;              /* HTTP status to answer for a parser/limit error */
    const char *parse_reason;
    bool stopped;                 /* no more parsing on this connection */
    bool lingering;               /* write side shut; discarding input before close */
    bool paused_mid_input;        /* llhttp stopped in a callback; it may have work
                                   * left that needs no input (end of a sized body) */
    uv_shutdown_t shutdown_req;
    enum timer_mode_e timer_mode_armed;
    uint64_t head_deadline;       /* loop time when the head must be complete */
    uint64_t head_armed_for;
    size_t write_queued;          /* bytes handed to uv_write, not completed */
    req_t *req;
    char remote_ip[48];
};

struct rw_http_server_s {
    uv_loop_t *loop;
    uv_tcp_t listener;
    bool listening;
    rw_http_limits_t limits;
    rw_http_handler_cb handler;
    void *arg;
    rw_http_done_cb on_done;
    void *done_cb_arg;
    unsigned n_conns;
    unsigned live_reqs;           /* requests not yet freed (a handler may hold one) */
    conn_t *conns;
    bool shutting_down;
    uv_timer_t shutdown_timer;
    bool shutdown_timer_open;
    bool listener_open;
    void (*done)(void *arg);
    void *done_arg;
    char *rbuf_cache[READ_BUF_CACHE];
    char discard[16384];          /* sink for bytes read while lingering */
    int n_rbuf_cache;
    time_t date_sec;
    char date[40];
    uint64_t rng[2];
    int port;
};

typedef struct {
    uv_write_t w;
    req_t *req;
    conn_t *conn;
    rw_http_write_cb cb;
    void *arg;
    size_t len;
    bool close_after;             /* shut the connection down once written */
    char inline_data[];           /* copied bytes and chunk framing */
} write_t;

static llhttp_settings_t parser_settings;
static void conn_process(conn_t *c);
static void on_timer(uv_timer_t *t);
static void conn_close(conn_t *c);
static void conn_end(conn_t *c);
static void conn_arm_timer(conn_t *c);
static void req_release(req_t *r);
static void body_finish(req_t *r, int status);

/* ---- small utilities ---------------------------------------------------- */

void rw_http_limits_default(rw_http_limits_t *l)
{
    l->max_header_bytes = 16 * 1024;
    l->max_uri_bytes = 8 * 1024;
    l->max_headers = 100;
    l->header_timeout_ms = 10000;
    l->body_timeout_ms = 30000;
    l->idle_timeout_ms = 60000;
    l->write_timeout_ms = 60000;
    l->max_connections = 10240;
    l->max_discard_bytes = 64 * 1024;
    l->shutdown_timeout_ms = 10000;
}

static void limits_fill(rw_http_limits_t *l, const rw_http_limits_t *given)
{
    rw_http_limits_default(l);
    if (!given)
        return;
#define TAKE(f)                                                                                    \
    if (given->f)                                                                                  \
    l->f = given->f
    TAKE(max_header_bytes);
    TAKE(max_uri_bytes);
    TAKE(max_headers);
    TAKE(header_timeout_ms);
    TAKE(body_timeout_ms);
    TAKE(idle_timeout_ms);
    TAKE(write_timeout_ms);
    TAKE(max_connections);
    TAKE(max_discard_bytes);
    TAKE(shutdown_timeout_ms);
#undef TAKE
}

const char *rw_http_status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 423: return "Locked";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 200 ? "Informational" : status < 300 ? "Success"
                  : status < 400 ? "Redirection" : status < 500 ? "Client Error" : "Server Error";
    }
}

void rw_http_date(char *buf, size_t len, int64_t t)
{
    static const char *days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static const char *server_date(rw_http_server_t *s)
{
    time_t now = time(NULL);
    if (now != s->date_sec) {
        s->date_sec = now;
        rw_http_date(s->date, sizeof s->date, now);
    }
    return s->date;
}

static uint64_t rng_next(rw_http_server_t *s)
{
    /* xorshift128+: request ids need uniqueness, not secrecy. */
    uint64_t x = s->rng[0], y = s->rng[1];
    s->rng[0] = y;
    x ^= x << 23;
    s->rng[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return s->rng[1] + y;
}

static void make_request_id(rw_http_server_t *s, char out[40])
{
    uint64_t a = rng_next(s), b = rng_next(s);
    a = (a & ~0xf000ULL) | 0x4000ULL;                       /* version 4 */
    b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; /* variant */
    snprintf(out, 40, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)((a >> 16) & 0xffff), (unsigned)(a & 0xffff), (unsigned)(b >> 48),
             (unsigned long long)(b & 0xffffffffffffULL));
}

/* RFC 7230 token characters, for header names. */
static bool is_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 32 || ch >= 127 || strchr("()<>@,;:\\\"/[]?={}", ch))
            return false;
    }
    return true;
}

static bool is_safe_value(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return false;
    return true;
}

/* Appends a JSON string literal (with quotes) to buf; returns the new length. */
static size_t json_str(char *buf, size_t len, size_t cap, const char *s)
{
    if (len < cap)
        buf[len] = '"';
    len++;
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;
        char esc[8];
        const char *out = NULL;
        size_t n = 1;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\', esc[1] = (char)ch, out = esc, n = 2;
        } else if (ch < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", ch), out = esc, n = 6;
        }
        for (size_t i = 0; i < n; i++, len++)
            if (len < cap)
                buf[len] = out ? out[i] : (char)ch;
    }
    if (len < cap)
        buf[len] = '"';
    return len + 1;
}

/* ---- read buffers ------------------------------------------------------- */

static char *rbuf_get(rw_http_server_t *s)
{
    if (s->n_rbuf_cache > 0)
        return s->rbuf_cache[--s->n_rbuf_cache];
    return malloc(READ_BUF_SIZE);
}

static void rbuf_put(rw_http_server_t *s, char *buf)
{
    if (!buf)
        return;
    if (s->n_rbuf_cache < READ_BUF_CACHE)
        s->rbuf_cache[s->n_rbuf_cache++] = buf;
    else
        free(buf);
}

/* Gives the read buffer back when nothing unparsed is left in it, so idle
 * keep-alive connections hold no buffer. */
static void conn_trim_rbuf(conn_t *c)
{
    if (c->rbuf && c->rlen == 0) {
        rbuf_put(c->srv, c->rbuf);
        c->rbuf = NULL;
        c->rstart = 0;
    }
}


/* ---- writing ------------------------------------------------------------ */

static void on_write(uv_write_t *w, int status)
{
    write_t *wr = (write_t *)w;
    conn_t *c = wr->conn;
    req_t *r = wr->req;
    c->write_queued -= wr->len;
    if (r) {
        /* Held: the callback may end the request (a proxy resuming its
         * upstream can finish the response right there). */
        r->pending_writes--;
        r->holds++;
        if (wr->cb)
            wr->cb(&r->pub, status, wr->arg);
    }
    bool close_now = wr->close_after;
    free(wr);
    if (!c->closing) {
        /* Close on a failed write, after a write meant to be the last one (a
         * rejection), or once the last response of a closing connection is out. */
        if (status < 0)
            conn_close(c);
        else if ((close_now && c->write_queued == 0) ||
                 (c->close_after && !c->req && c->write_queued == 0))
            conn_end(c);
        else
            conn_arm_timer(c);
    }
    if (r) {
        r->holds--;
        req_release(r);
    }
}

/* Queues bufs on the connection. copy_len bytes of inline storage are
 * allocated with the write request for copied data or framing. */
static write_t *write_new(conn_t *c, req_t *r, size_t inline_len)
{
    write_t *wr = malloc(sizeof *wr + inline_len);
    if (!wr)
        return NULL;
    memset(wr, 0, sizeof *wr);
    wr->conn = c;
    wr->req = r;
    return wr;
}

static int write_submit(write_t *wr, uv_buf_t *bufs, unsigned nbufs)
{
    conn_t *c = wr->conn;
    size_t len = 0;
    for (unsigned i = 0; i < nbufs; i++)
        len += bufs[i].len;
    wr->len = len;
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, bufs, nbufs, on_write);
    if (rc < 0) {
        free(wr);
        return rc;
    }
    c->write_queued += len;
    if (wr->req) {
        wr->req->pending_writes++;
        wr->req->pub.bytes_out += len;
    }
    conn_arm_timer(c);
    return 0;
}

/* A response the server writes itself (errors before or outside a handler):
 * copied, and the connection closes after it when close_after. */
static void write_raw(conn_t *c, const char *data, size_t len, bool close_after)
{
    if (c->closing)
        return;
    write_t *wr = write_new(c, NULL, len);
    if (!wr) {
        conn_close(c);
        return;
    }
    memcpy(wr->inline_data, data, len);
    wr->close_after = close_after;
    uv_buf_t buf = uv_buf_init(wr->inline_data, (unsigned)len);
    if (write_submit(wr, &buf, 1) < 0)
        conn_close(c);
}

/* Builds {"message":...,"reason":...} into out. */
static size_t error_body(char *out, size_t cap, const char *message, const char *reason)
{
    size_t n = 0;
    n += (size_t)snprintf(out, cap, "{\"message\":");
    if (message) {
        n = json_str(out, n, cap, message);
    } else {
        /* API Gateway answers some errors with a null message. */
        if (n + 4 < cap)
            memcpy(out + n, "null", 4);
        n += 4;
    }
    if (reason) {
        if (n + 10 < cap)
            memcpy(out + n, ",\"reason\":", 10);
        n += 10;
        n = json_str(out, n, cap, reason);
    }
    if (n < cap)
        out[n] = '}';
    n++;
    if (n >= cap)
        n = cap - 1;
    out[n] = '\0';
    return n;
}

/* Answers a protocol or limit error outside any handler, then closes. */
static void conn_reject(conn_t *c, int status, const char *reason)
{
    char body[512], head[1024], rid[40];
    size_t blen = error_body(body, sizeof body, rw_http_status_text(status), reason);
    make_request_id(c->srv, rid);
    int hlen = snprintf(head, sizeof head,
                        "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\nX-Request-Id: %s\r\n\r\n%s",
                        status, rw_http_status_text(status), server_date(c->srv), blen, rid, body);
    c->close_after = true;
    write_raw(c, head, (size_t)hlen < sizeof head ? (size_t)hlen : sizeof head - 1, true);
}

/* ---- connection lifecycle ------------------------------------------------ */

static void conn_free(conn_t *c)
{
    rw_http_server_t *s = c->srv;
    rbuf_put(s, c->rbuf);
    c->rbuf = NULL;
    free(c);
}

static void server_maybe_done(rw_http_server_t *s);

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->handles_open > 0)
        return;
    rw_http_server_t *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    req_t *r = c->req;
    if (r) {
        /* A handler that has not ended it yet frees it from rw_http_res_end; a
         * request whose head never completed had no handler: it goes now. */
        c->req = NULL;
        r->conn = NULL;
        if (!r->dispatched)
            r->ended = true;
        req_release(r);
    }
    conn_free(c);
    server_maybe_done(s);
}

/* The handler may end (and so free) the request from any callback; holding
 * it keeps it alive until the caller is done looking at it. */
static void req_hold(req_t *r)
{
    r->holds++;
}

static void req_unhold(req_t *r)
{
    r->holds--;
    req_release(r);
}

static void req_abort(req_t *r, int err)
{
    if (r->aborted)
        return;
    r->aborted = true;
    req_hold(r);
    if (!r->message_done)
        body_finish(r, err);
    if (!r->ended && r->on_abort)
        r->on_abort(&r->pub, err);
    req_unhold(r);
}

static void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->req && !c->req->ended)
        req_abort(c->req, UV_ECONNRESET);
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

/* Orderly close after the last response: shut our side, then read and drop
 * whatever the client still sends for a moment. Closing a socket with unread
 * input makes the kernel send RST, which can destroy the response in flight
 * before the client has read it (a 413 for an upload it is still sending). */
static void on_discard_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    *buf = uv_buf_init(c->srv->discard, sizeof c->srv->discard);
}

static void on_discard_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = stream->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    c->rlen += (size_t)nread; /* only counted: rbuf is not used while lingering */
    if (c->rlen > LINGER_MAX_BYTES)
        conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = uv_read_start((uv_stream_t *)&c->tcp, on_discard_alloc, on_discard_read) == 0;
    if (!c->reading) {
        conn_close(c);
        return;
    }
    c->timer_mode_armed = TIMER_LINGER;
    uv_timer_start(&c->timer, on_timer, LINGER_MS, 0);
}

static void conn_end(conn_t *c)
{
    if (c->closing || c->lingering)
        return;
    c->lingering = true;
    c->stopped = true;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    rbuf_put(c->srv, c->rbuf);
    c->rbuf = NULL;
    c->rstart = c->rlen = 0;
    uv_timer_stop(&c->timer);
    c->timer_mode_armed = TIMER_OFF;
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close(c);
}

/* The current request is done on this connection: its response has ended and
 * its body has been read or will be discarded. Moves on to the next request. */
static void conn_request_done(conn_t *c)
{
    req_t *r = c->req;
    if (!r->message_done && !c->stopped) {
        /* The handler answered without reading the whole body: drain it if it is
         * small enough, else close so the client cannot desynchronise us. A
         * client that waits for 100 Continue it never got will not send the
         * body at all, so that connection cannot be reused either. */
        uint64_t left = r->pub.chunked ? 0 : r->pub.content_length - r->body_seen;
        if (left > c->srv->limits.max_discard_bytes || (r->pub.expect_continue && !r->continue_sent))
            c->close_after = true;
        r->body_mode = BODY_DISCARD;
        r->body_max = r->body_seen + c->srv->limits.max_discard_bytes;
        if (c->block == BLOCK_HANDLER || c->block == BLOCK_BODY)
            c->block = BLOCK_NONE;
        if (!c->close_after)
            return;
    }
    c->req = NULL;
    r->conn = NULL;
    if (c->block == BLOCK_RESPONSE)
        c->block = BLOCK_NONE;
}

/* ---- the parser's callbacks ------------------------------------------- */

static req_t *req_new(conn_t *c)
{
    req_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    c->srv->live_reqs++;
    r->conn = c;
    r->pub.server = c->srv;
    r->content_length_out = -1;
    r->pub.start_ns = uv_hrtime();
    memcpy(r->pub.remote_ip, c->remote_ip, sizeof r->pub.remote_ip);
    make_request_id(c->srv, r->pub.request_id);
    return r;
}

static int on_message_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    req_t *r = req_new(c);
    if (!r) {
        c->parse_error = 503;
        c->parse_reason = "out of memory";
        return HPE_USER;
    }
    c->req = r;
    c->head_deadline = uv_now(c->srv->loop) + c->srv->limits.header_timeout_ms;
    return 0;
}

static int limit_error(conn_t *c, int status, const char *reason)
{
    c->parse_error = status;
    c->parse_reason = reason;
    llhttp_set_error_reason(&c->parser, reason);
    return HPE_USER;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    req_t *r = c->req;
    if (r->head.len + n > c->srv->limits.max_uri_bytes)
        return limit_error(c, 414, "request target longer than the limit");
    r->head_bytes += n;
    return rw_fields_append(&r->head, at, n) == 0 ? 0 : limit_error(c, 503, "out of memory");
}

static int on_url_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    req_t *r = c->req;
    r->pub.target_len = r->head.len;
    return rw_fields_terminate(&r->head) == 0 ? 0 : limit_error(c, 503, "out of memory");
}

static int head_grow(conn_t *c, req_t *r, size_t n)
{
    r->head_bytes += n;
    if (r->head_bytes > c->srv->limits.max_header_bytes)
        return limit_error(c, 431, "request headers larger than the limit");
    return 0;
}

static int trailer_span(conn_t *c, req_t *r, const char *at, size_t n, int what)
{
    /* what: 0 name bytes, 1 name complete, 2 value bytes, 3 value complete */
    rw_fields_t *t = &r->trail;
    int rc;
    if (t->len + n + 1 > c->srv->limits.max_header_bytes)
        return limit_error(c, 400, "request trailers larger than the limit");
    if (what == 0 && rw_fields_opening(t) && t->n == c->srv->limits.max_headers)
        return limit_error(c, 400, "too many request trailers");
    switch (what) {
    case 0: rc = rw_fields_name(t, at, n); break;
    case 1: rc = rw_fields_name_done(t); break;
    case 2: rc = rw_fields_value(t, at, n); break;
    default: rc = rw_fields_value_done(t); break;
    }
    return rc == 0 ? 0 : limit_error(c, 503, "out of memory");
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    req_t *r = c->req;
    if (r->head_done)
        return trailer_span(c, r, at, n, 0);
    if (head_grow(c, r, n) != 0)
        return HPE_USER;
    if (rw_fields_opening(&r->head)) {
        /* A new header line: ": " and CRLF count towards the head size too. */
        if (head_grow(c, r, 4) != 0)
            return HPE_USER;
        if (r->head.n == c->srv->limits.max_headers)
            return limit_error(c, 431, "too many request headers");
    }
    return rw_fields_name(&r->head, at, n) == 0 ? 0 : limit_error(c, 503, "out of memory");
}

static int on_header_field_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    req_t *r = c->req;
    if (r->head_done)
        return trailer_span(c, r, NULL, 0, 1);
    return rw_fields_name_done(&r->head) == 0 ? 0 : limit_error(c, 503, "out of memory");
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    req_t *r = c->req;
    if (r->head_done)
        return trailer_span(c, r, at, n, 2);
    if (head_grow(c, r, n) != 0)
        return HPE_USER;
    return rw_fields_value(&r->head, at, n) == 0 ? 0 : limit_error(c, 503, "out of memory");
}

static int on_header_value_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    if (c->req->head_done)
        return trailer_span(c, c->req, NULL, 0, 3);
    return rw_fields_value_done(&c->req->head) == 0 ? 0 : limit_error(c, 503, "out of memory");
}

static int on_headers_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    req_t *r = c->req;
    rw_http_req_t *q = &r->pub;
    q->headers = calloc(r->head.n ? r->head.n : 1, sizeof *q->headers);
    if (!q->headers)
        return limit_error(c, 503, "out of memory");
    rw_fields_export(&r->head, 0, r->head.n, q->headers);
    q->n_headers = r->head.n;
    q->target = r->head.bytes;
    const char *qm = memchr(q->target, '?', q->target_len);
    q->path = q->target;
    q->path_len = qm ? (size_t)(qm - q->target) : q->target_len;
    q->query = qm ? qm + 1 : "";
    q->query_len = qm ? q->target_len - q->path_len - 1 : 0;
    q->method_id = llhttp_get_method(p);
    q->method = llhttp_method_name((llhttp_method_t)q->method_id);
    q->http_major = llhttp_get_http_major(p);
    q->http_minor = llhttp_get_http_minor(p);
    q->keep_alive = llhttp_should_keep_alive(p);
    q->chunked = (p->flags & F_CHUNKED) != 0;
    q->content_length = q->chunked ? 0 : p->content_length;
    q->has_body = q->chunked || q->content_length > 0;
    q->bytes_in = r->head_bytes;
    r->head_done = true;
    r->head_only = q->method_id == HTTP_HEAD;
    const char *expect = rw_http_req_header(q, "expect");
    if (expect) {
        if (strcasecmp(expect, "100-continue") != 0)
            return limit_error(c, 417, "only Expect: 100-continue is supported");
        q->expect_continue = q->http_major == 1 && q->http_minor >= 1;
    }
    if (q->method_id == HTTP_CONNECT || (p->flags & F_UPGRADE))
        return limit_error(c, 501, "CONNECT and protocol upgrades are not supported");
    c->block = BLOCK_HANDLER;
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    req_t *r = c->req;
    if (n == 0)
        return 0; /* llhttp may report an empty span when resumed mid-body */
    r->body_seen += n;
    r->pub.bytes_in += n;
    if (r->body_max && r->body_seen > r->body_max) {
        /* Over the route's limit (the handler answers 413 from the body's
         * RW_ELIMIT) or over the drain limit: stop parsing, close after. */
        c->close_after = true;
        c->stopped = true;
        body_finish(r, RW_ELIMIT);
        return limit_error(c, 413, "request body larger than the limit");
    }
    switch (r->body_mode) {
    case BODY_WHOLE:
        if (r->whole_len + n > r->whole_cap) {
            size_t cap = r->whole_cap ? r->whole_cap : 16384;
            while (cap < r->whole_len + n)
                cap *= 2;
            char *w = realloc(r->whole, cap + 1);
            if (!w)
                return limit_error(c, 503, "out of memory");
            r->whole = w;
            r->whole_cap = cap;
        }
        memcpy(r->whole + r->whole_len, at, n);
        r->whole_len += n;
        return 0;
    case BODY_SINK:
        if (!r->sink.data(&r->pub, at, n)) {
            c->block = BLOCK_BODY;
            return HPE_PAUSED;
        }
        return 0;
    default:
        return 0;
    }
}

static int on_message_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    req_t *r = c->req;
    r->message_done = true;
    if (r->trail.n && !r->trailers) {
        r->trailers = calloc(r->trail.n, sizeof *r->trailers);
        if (!r->trailers)
            return limit_error(c, 503, "out of memory");
        rw_fields_export(&r->trail, 0, r->trail.n, r->trailers);
    }
    body_finish(r, 0);
    if (c->req != r) {
        /* The handler ended it from the body callback and it was let go. */
        return c->close_after ? HPE_PAUSED : 0;
    }
    if (r->ended) {
        /* The response went out before the body was drained: release now. */
        c->req = NULL;
        r->conn = NULL;
        req_release(r);
        c->block = BLOCK_NONE;
        return c->close_after ? HPE_PAUSED : 0;
    }
    c->block = BLOCK_RESPONSE;
    return HPE_PAUSED;
}

/* ---- processing loop ----------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    if (!c->rbuf) {
        c->rbuf = rbuf_get(c->srv);
        c->rstart = c->rlen = 0;
        if (!c->rbuf) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
    }
    if (c->rstart > 0 && c->rstart + c->rlen > READ_BUF_SIZE / 2) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rlen);
        c->rstart = 0;
    }
    size_t used = c->rstart + c->rlen;
    *buf = uv_buf_init(c->rbuf + used, (unsigned)(READ_BUF_SIZE - used));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = stream->data;
    if (nread == UV_ENOBUFS) {
        /* Buffer full of unparsed bytes: stop until the parser frees some. */
        uv_read_stop(stream);
        c->reading = false;
        return;
    }
    if (nread < 0) {
        req_t *r = c->req;
        c->eof = true;
        uv_read_stop(stream);
        c->reading = false;
        if (nread == UV_EOF && r && r->message_done && !r->ended) {
            /* The client sent its whole request and shut its side: answer it,
             * then close (a full close shows up as a failed write). */
            c->close_after = true;
            return;
        }
        /* Nothing more will be parsed: give the read buffer back now. Kept
         * until the close callback, the buffers of the connections one poll
         * reports closed (up to 1024 at once) would all be live together:
         * 64 KiB each, which malloc then keeps. */
        rbuf_put(c->srv, c->rbuf);
        c->rbuf = NULL;
        c->rstart = c->rlen = 0;
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    c->rlen += (size_t)nread;
    if (c->req && c->req->head_done)
        conn_arm_timer(c); /* progress on the body restarts its timeout */
    conn_process(c);
}

static void parser_failed(conn_t *c, llhttp_errno_t err)
{
    /* Our own callbacks record why they stopped the parser; llhttp may report
     * that as HPE_USER or as a callback error depending on the callback. */
    int status = c->parse_error ? c->parse_error : 400;
    const char *reason = c->parse_error ? c->parse_reason : llhttp_get_error_reason(&c->parser);
    req_t *r = c->req;
    c->stopped = true;
    c->close_after = true;
    if (r && r->dispatched) {
        /* A dispatched request: its handler owns it and learns of the failure
         * through the body (RW_ELIMIT, RW_EPARSE); it answers, then we close. */
        req_hold(r);
        if (!r->message_done) {
            r->message_done = true;
            body_finish(r, status == 413 ? RW_ELIMIT : RW_EPARSE);
        }
        if (r->ended || r->body_mode == BODY_DISCARD)
            conn_close(c);
        req_unhold(r);
        return;
    }
    if (r) {
        /* Never dispatched: nobody else holds it. */
        c->req = NULL;
        r->conn = NULL;
        r->ended = true;
        req_release(r);
    }
    conn_reject(c, status ? status : 400, reason ? reason : "malformed request");
}

static void conn_process(conn_t *c)
{
    if (c->in_process) {
        c->reprocess = true;
        return;
    }
    if (c->closing || c->lingering)
        return;
    c->in_process = true;
    bool dispatch = false;
    do {
        c->reprocess = false;
        while (!c->closing && c->block == BLOCK_NONE && !c->stopped &&
               (c->rlen > 0 || c->paused_mid_input)) {
            if (c->close_after && !c->req)
                break; /* no more requests on a closing connection */
            const char *start = c->rlen > 0 ? c->rbuf + c->rstart : "";
            c->paused_mid_input = false;
            llhttp_errno_t err = llhttp_execute(&c->parser, start, c->rlen);
            size_t used = err == HPE_OK ? c->rlen : (size_t)(llhttp_get_error_pos(&c->parser) - start);
            c->rstart += used;
            c->rlen -= used;
            if (c->rlen == 0)
                c->rstart = 0;
            if (err == HPE_PAUSED) {
                llhttp_resume(&c->parser);
                c->paused_mid_input = true;
                if (c->block == BLOCK_HANDLER) {
                    dispatch = true;
                    break;
                }
                continue;
            }
            if (err != HPE_OK) {
                parser_failed(c, err);
                break;
            }
        }
        if (dispatch && !c->closing) {
            dispatch = false;
            req_t *r = c->req;
            r->dispatched = true;
            if (c->srv->shutting_down)
                c->close_after = true;
            c->srv->handler(&r->pub, c->srv->arg);
            continue; /* the handler may have unblocked the parser */
        }
    } while (c->reprocess && !c->closing);
    c->in_process = false;
    if (c->closing)
        return;
    if (c->close_after && !c->req && c->write_queued == 0) {
        conn_end(c);
        return;
    }
    /* Keep reading while there is room, also while the handler works, so that a
     * client that goes away is noticed (and a slow handler is not fed more than
     * a buffer's worth of pipelined bytes). */
    bool want = !c->eof && !(c->close_after && !c->req) && c->rstart + c->rlen < READ_BUF_SIZE &&
                !(c->block == BLOCK_BODY && c->rlen > 0);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    if (!c->req)
        conn_trim_rbuf(c);
    conn_arm_timer(c);
}

/* ---- timers -------------------------------------------------------------- */

static void on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    req_t *r = c->req;
    enum timer_mode_e mode = c->timer_mode_armed;
    c->timer_mode_armed = TIMER_OFF;
    switch (mode) {
    case TIMER_HEAD:
        /* Slow or silent client: a slow-loris must not hold the worker. */
        c->stopped = true;
        if (r) {
            c->req = NULL;
            r->conn = NULL;
            r->ended = true; /* never dispatched: nobody else holds it */
            req_release(r);
        }
        conn_reject(c, 408, "request head not received in time");
        break;
    case TIMER_BODY:
        c->stopped = true;
        if (r && !r->started && !r->ended) {
            /* Answer 408 ourselves; the handler sees the abort and must still
             * end the request, and whatever it writes is refused. */
            r->started = true;
            req_abort(r, RW_ETIMEOUT);
            conn_reject(c, 408, "request body not received in time");
        } else {
            conn_close(c);
        }
        break;
    default:
        conn_close(c);
        break;
    }
}

static void conn_arm_timer(conn_t *c)
{
    if (c->closing || c->lingering)
        return;
    rw_http_server_t *s = c->srv;
    req_t *r = c->req;
    enum timer_mode_e mode = TIMER_OFF;
    uint64_t after = 0;
    uint64_t now = uv_now(s->loop);
    if (c->write_queued > 0) {
        mode = TIMER_WRITE;
        after = s->limits.write_timeout_ms;
    } else if (c->stopped) {
        mode = TIMER_OFF;
    } else if (r && !r->head_done) {
        mode = TIMER_HEAD;
        after = c->head_deadline > now ? c->head_deadline - now : 1;
    } else if (r && !r->message_done && r->body_mode != BODY_NONE && c->block == BLOCK_NONE) {
        mode = TIMER_BODY;
        after = s->limits.body_timeout_ms;
    } else if (!r) {
        mode = TIMER_IDLE;
        after = s->limits.idle_timeout_ms;
    }
    if (mode == TIMER_OFF) {
        if (c->timer_mode_armed != TIMER_OFF)
            uv_timer_stop(&c->timer);
        c->timer_mode_armed = TIMER_OFF;
        return;
    }
    /* Re-arming on every read is what makes body and write timeouts count from
     * the last progress; the head deadline is absolute, so trickling bytes
     * cannot extend it. */
    if (mode == TIMER_HEAD && c->timer_mode_armed == TIMER_HEAD && c->head_armed_for == c->head_deadline)
        return;
    c->timer_mode_armed = mode;
    c->head_armed_for = c->head_deadline;
    uv_timer_start(&c->timer, on_timer, after, 0);
}

/* ---- accepting ----------------------------------------------------------- */

static void on_reject_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_reject_written(uv_write_t *w, int status)
{
    uv_close((uv_handle_t *)w->handle, on_reject_closed);
}

/* Over the connection limit: accept (to tell the client) and close at once. */
static void reject_connection(rw_http_server_t *s)
{
    static const char msg[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        "Content-Length: 65\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
        "{\"message\":\"Service Unavailable\",\"reason\":\"too many connections\"}";
    struct {
        uv_tcp_t tcp;
        uv_write_t w;
    } *rj = malloc(sizeof *rj);
    if (!rj)
        return;
    uv_tcp_init(s->loop, &rj->tcp);
    rj->tcp.data = rj;
    if (uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&rj->tcp) != 0) {
        uv_close((uv_handle_t *)&rj->tcp, on_reject_closed);
        return;
    }
    uv_buf_t buf = uv_buf_init((char *)msg, sizeof msg - 1);
    if (uv_write(&rj->w, (uv_stream_t *)&rj->tcp, &buf, 1, on_reject_written) != 0)
        uv_close((uv_handle_t *)&rj->tcp, on_reject_closed);
}

static void on_connection(uv_stream_t *listener, int status)
{
    rw_http_server_t *s = listener->data;
    if (status < 0 || s->shutting_down)
        return;
    if (s->n_conns >= s->limits.max_connections) {
        reject_connection(s);
        return;
    }
    conn_t *c = calloc(1, sizeof *c);
    if (!c) {
        reject_connection(s);
        return;
    }
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->remote_ip, sizeof c->remote_ip);
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->remote_ip, sizeof c->remote_ip);
    }
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    conn_process(c);
}

/* ---- server -------------------------------------------------------------- */

rw_http_server_t *rw_http_server_new(uv_loop_t *loop, const rw_http_limits_t *limits,
                                     rw_http_handler_cb handler, void *arg)
{
    static bool settings_ready;
    if (!settings_ready) {
        llhttp_settings_init(&parser_settings);
        parser_settings.on_message_begin = on_message_begin;
        parser_settings.on_url = on_url;
        parser_settings.on_url_complete = on_url_complete;
        parser_settings.on_header_field = on_header_field;
        parser_settings.on_header_field_complete = on_header_field_complete;
        parser_settings.on_header_value = on_header_value;
        parser_settings.on_header_value_complete = on_header_value_complete;
        parser_settings.on_headers_complete = on_headers_complete;
        parser_settings.on_body = on_body;
        parser_settings.on_message_complete = on_message_complete;
        settings_ready = true;
    }
    rw_http_server_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->loop = loop;
    limits_fill(&s->limits, limits);
    s->handler = handler;
    s->arg = arg;
    s->port = -1;
    if (getrandom(s->rng, sizeof s->rng, 0) != sizeof s->rng) {
        s->rng[0] = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        s->rng[1] = uv_hrtime();
    }
    s->rng[0] |= 1;
    return s;
}

int rw_http_server_listen_fd(rw_http_server_t *s, int fd)
{
    int rc = uv_tcp_init(s->loop, &s->listener);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    s->listener.data = s;
    s->listener_open = true;
    rc = uv_tcp_open(&s->listener, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection);
    if (rc < 0)
        return rc;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&ss, &len) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    s->listening = true;
    return 0;
}

int rw_http_server_listen(rw_http_server_t *s, const char *host, int port, bool reuseport)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int rc;
    if (strchr(host, ':'))
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
    else
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    if (rc < 0)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    socklen_t slen = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&ss, slen) != 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return rw_http_server_listen_fd(s, fd);
}

int rw_http_server_port(const rw_http_server_t *s)
{
    return s->listening ? s->port : UV_ENOTCONN;
}

unsigned rw_http_server_connections(const rw_http_server_t *s)
{
    return s->n_conns;
}

static void server_free(rw_http_server_t *s)
{
    for (int i = 0; i < s->n_rbuf_cache; i++)
        free(s->rbuf_cache[i]);
    void (*done)(void *) = s->done;
    void *arg = s->done_arg;
    free(s);
    if (done)
        done(arg);
}

static void on_server_handle_closed(uv_handle_t *h)
{
    rw_http_server_t *s = h->data;
    if (h == (uv_handle_t *)&s->listener)
        s->listener_open = false;
    else
        s->shutdown_timer_open = false;
    server_maybe_done(s);
}

static void server_maybe_done(rw_http_server_t *s)
{
    if (!s->shutting_down || s->n_conns > 0)
        return;
    if (s->live_reqs > 0)
        return; /* a handler still holds a request; its end brings us back here */
    /* The last connection is gone: the deadline timer is not needed any more. */
    if (s->shutdown_timer_open && !uv_is_closing((uv_handle_t *)&s->shutdown_timer))
        uv_close((uv_handle_t *)&s->shutdown_timer, on_server_handle_closed);
    if (s->listener_open || s->shutdown_timer_open)
        return;
    server_free(s);
}

static void on_shutdown_deadline(uv_timer_t *t)
{
    rw_http_server_t *s = t->data;
    for (conn_t *c = s->conns; c; c = c->next)
        conn_close(c);
    uv_close((uv_handle_t *)&s->shutdown_timer, on_server_handle_closed);
}

int rw_http_server_shutdown(rw_http_server_t *s, void (*done)(void *arg), void *arg)
{
    if (s->shutting_down)
        return UV_EALREADY;
    s->shutting_down = true;
    s->done = done;
    s->done_arg = arg;
    if (s->listener_open)
        uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
    s->listening = false;
    /* Idle connections close now; busy ones close after their response. */
    conn_t *next;
    for (conn_t *c = s->conns; c; c = next) {
        next = c->next;
        c->close_after = true;
        if (!c->req && c->write_queued == 0)
            conn_close(c);
    }
    if (s->n_conns > 0) {
        uv_timer_init(s->loop, &s->shutdown_timer);
        s->shutdown_timer.data = s;
        s->shutdown_timer_open = true;
        uv_timer_start(&s->shutdown_timer, on_shutdown_deadline, s->limits.shutdown_timeout_ms, 0);
    }
    server_maybe_done(s);
    return 0;
}


/* ---- request API ---------------------------------------------------------- */

void rw_http_req_on_abort(rw_http_req_t *req, rw_http_abort_cb cb)
{
    ((req_t *)req)->on_abort = cb;
}

const char *rw_http_req_header(const rw_http_req_t *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = req->n_headers; i-- > 0;)
        if (req->headers[i].name_len == n && strncasecmp(req->headers[i].name, name, n) == 0)
            return req->headers[i].value;
    return NULL;
}

bool rw_http_req_alive(const rw_http_req_t *req)
{
    const req_t *r = (const req_t *)req;
    return r->conn && !r->conn->closing && !r->aborted && !r->ended;
}

void rw_http_req_close_after(rw_http_req_t *req)
{
    req_t *r = (req_t *)req;
    if (r->conn)
        r->conn->close_after = true;
}

static void req_release(req_t *r)
{
    /* Freed once the handler has ended it, the connection has let go of it,
     * and no write that mentions it is in flight. */
    if (!r->ended || r->pending_writes > 0 || r->conn || r->holds > 0)
        return;
    rw_http_server_t *srv = r->pub.server;
    if (r->dispatched && srv->on_done)
        srv->on_done(&r->pub, srv->done_cb_arg);
    free(r->whole);
    free(r->trailers);
    rw_fields_free(&r->trail);
    free(r->pub.headers);
    rw_fields_free(&r->head);
    free(r);
    /* A server being stopped waits for the last request a handler held. */
    srv->live_reqs--;
    server_maybe_done(srv);
}

static void body_finish(req_t *r, int status)
{
    if (r->body_end_sent)
        return;
    if (r->body_mode == BODY_WHOLE) {
        r->body_end_sent = true;
        if (r->whole)
            r->whole[r->whole_len] = '\0';
        r->whole_cb(&r->pub, status, r->whole ? r->whole : "", status == 0 ? r->whole_len : 0);
    } else if (r->body_mode == BODY_SINK) {
        r->body_end_sent = true;
        r->sink.end(&r->pub, status);
    }
}

static void send_continue(req_t *r)
{
    conn_t *c = r->conn;
    if (!r->pub.expect_continue || r->continue_sent || r->started || !c)
        return;
    r->continue_sent = true;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    write_raw(c, cont, sizeof cont - 1, false);
}

static int body_begin(req_t *r, enum body_mode_e mode, uint64_t max)
{
    conn_t *c = r->conn;
    if (r->body_mode != BODY_NONE || r->ended)
        return UV_EALREADY;
    if (!c || c->closing || r->aborted)
        return UV_ECONNRESET;
    if (max && !r->pub.chunked && r->pub.content_length > max) {
        /* Known too large: fail now without reading it, close after the answer. */
        c->close_after = true;
        c->stopped = true;
        return RW_ELIMIT;
    }
    r->body_mode = mode;
    r->body_max = max;
    send_continue(r);
    if (c->block == BLOCK_HANDLER)
        c->block = BLOCK_NONE;
    conn_process(c);
    return 0;
}

int rw_http_req_read_body(rw_http_req_t *req, size_t max_bytes, rw_http_body_cb cb)
{
    req_t *r = (req_t *)req;
    r->whole_cb = cb;
    return body_begin(r, BODY_WHOLE, max_bytes);
}

int rw_http_req_body_start(rw_http_req_t *req, const rw_http_body_sink_t *sink,
                           uint64_t max_bytes)
{
    req_t *r = (req_t *)req;
    r->sink = *sink;
    return body_begin(r, BODY_SINK, max_bytes);
}

void rw_http_req_body_resume(rw_http_req_t *req)
{
    req_t *r = (req_t *)req;
    conn_t *c = r->conn;
    if (!c || c->closing || c->block != BLOCK_BODY || c->req != r)
        return;
    c->block = BLOCK_NONE;
    conn_process(c);
}

/* Serializes the status line and headers into a write request. */
/* Builds the response head into a new write request with room for `room`
 * more bytes after it (a small body that goes out in the same write). On
 * success *out holds it and *head_len the head's length; nothing is queued. */
static int res_head(req_t *r, int status, const rw_http_header_t *headers, size_t n_headers,
                    int64_t content_length, size_t room, write_t **out, size_t *head_len)
{
    rw_http_req_t *req = &r->pub;
    conn_t *c = r->conn;
    if (r->started || r->ended)
        return UV_EALREADY;
    if (status < 100 || status > 999)
        return UV_EINVAL;
    bool has_rid = false;
    size_t need = 256;
    for (size_t i = 0; i < n_headers; i++) {
        const rw_http_header_t *h = &headers[i];
        if (!is_token(h->name, h->name_len) || !is_safe_value(h->value, h->value_len))
            return RW_EPARSE;
        if (h->name_len == 12 && strncasecmp(h->name, "x-request-id", 12) == 0)
            has_rid = true;
        need += h->name_len + h->value_len + 4;
    }
    if (!c || c->closing || r->aborted)
        return UV_ECONNRESET;
    write_t *wr = write_new(c, r, need + room);
    if (!wr)
        return UV_ENOMEM;
    r->started = true;
    req->status = status;
    r->head_only = r->head_only || status == 204 || status == 304 || status < 200;
    bool close = c->close_after || !req->keep_alive || c->srv->shutting_down;
    if (!r->message_done && r->body_mode == BODY_NONE && req->has_body) {
        /* Answering without reading the body: a client waiting for 100 Continue
         * will never send it, and a large one is not worth draining. */
        if ((req->expect_continue && !r->continue_sent) ||
            (!req->chunked && req->content_length - r->body_seen > c->srv->limits.max_discard_bytes))
            close = true;
    }
    r->content_length_out = content_length;
    if (content_length < 0 && !r->head_only) {
        if (req->http_major == 1 && req->http_minor == 0)
            close = true; /* HTTP/1.0: the body ends when the connection does */
        else
            r->chunked_out = true;
    }
    if (close)
        c->close_after = true;
    char *p = wr->inline_data;
    size_t n = 0;
    n += (size_t)snprintf(p + n, need - n, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status,
                          rw_http_status_text(status), server_date(c->srv));
    for (size_t i = 0; i < n_headers; i++) {
        const rw_http_header_t *h = &headers[i];
        memcpy(p + n, h->name, h->name_len);
        n += h->name_len;
        p[n++] = ':';
        p[n++] = ' ';
        memcpy(p + n, h->value, h->value_len);
        n += h->value_len;
        p[n++] = '\r';
        p[n++] = '\n';
    }
    if (!has_rid)
        n += (size_t)snprintf(p + n, need - n, "X-Request-Id: %s\r\n", req->request_id);
    if (content_length >= 0 && status >= 200 && status != 204 && status != 304)
        n += (size_t)snprintf(p + n, need - n, "Content-Length: %lld\r\n",
                              (long long)content_length);
    else if (r->chunked_out)
        n += (size_t)snprintf(p + n, need - n, "Transfer-Encoding: chunked\r\n");
    if (close)
        n += (size_t)snprintf(p + n, need - n, "Connection: close\r\n");
    else if (req->http_minor == 0)
        n += (size_t)snprintf(p + n, need - n, "Connection: keep-alive\r\n");
    n += (size_t)snprintf(p + n, need - n, "\r\n");
    *out = wr;
    *head_len = n;
    return 0;
}

int rw_http_res_start(rw_http_req_t *req, int status, const rw_http_header_t *headers,
                      size_t n_headers, int64_t content_length)
{
    req_t *r = (req_t *)req;
    write_t *wr;
    size_t n;
    int rc = res_head(r, status, headers, n_headers, content_length, 0, &wr, &n);
    if (rc < 0)
        return rc;
    conn_t *c = r->conn;
    uv_buf_t buf = uv_buf_init(wr->inline_data, (unsigned)n);
    rc = write_submit(wr, &buf, 1);
    if (rc < 0)
        conn_close(c);
    return rc;
}

int rw_http_res_write(rw_http_req_t *req, const char *bytes, size_t len,
                      bool owned_by_caller_until_cb, rw_http_write_cb cb, void *arg)
{
    req_t *r = (req_t *)req;
    conn_t *c = r->conn;
    if (!r->started || r->ended)
        return UV_EINVAL;
    if (!c || c->closing || r->aborted)
        return UV_ECONNRESET;
    if (r->content_length_out >= 0 && !r->head_only &&
        r->body_out + len > (uint64_t)r->content_length_out)
        return RW_ELIMIT;
    r->body_out += len;
    if (r->head_only || len == 0) {
        len = 0; /* HEAD, 204, 304: count what would have gone out, send nothing */
    }
    size_t inline_len = (owned_by_caller_until_cb ? 0 : len) + (r->chunked_out ? 24 : 0);
    write_t *wr = write_new(c, r, inline_len);
    if (!wr)
        return UV_ENOMEM;
    wr->cb = cb;
    wr->arg = arg;
    uv_buf_t bufs[3];
    unsigned nb = 0;
    char *data = (char *)bytes;
    if (!owned_by_caller_until_cb && len) {
        memcpy(wr->inline_data, bytes, len);
        data = wr->inline_data;
    }
    if (r->chunked_out && len) {
        char *frame = wr->inline_data + (owned_by_caller_until_cb ? 0 : len);
        int fl = snprintf(frame, 20, "%zx\r\n", len);
        bufs[nb++] = uv_buf_init(frame, (unsigned)fl);
        bufs[nb++] = uv_buf_init(data, (unsigned)len);
        memcpy(frame + 20, "\r\n", 2);
        bufs[nb++] = uv_buf_init(frame + 20, 2);
    } else {
        bufs[nb++] = uv_buf_init(data, (unsigned)len);
    }
    int rc = write_submit(wr, bufs, nb);
    if (rc < 0) {
        conn_close(c);
        return rc;
    }
    return c->write_queued < WRITE_HIGH_WATER ? 1 : 0;
}

size_t rw_http_res_queued(const rw_http_req_t *req)
{
    const req_t *r = (const req_t *)req;
    return r->conn ? r->conn->write_queued : 0;
}

/* The chunked body's terminator, with trailers (invalid ones are dropped). */
static void write_last_chunk(req_t *r, const rw_http_header_t *trailers, size_t n_trailers)
{
    conn_t *c = r->conn;
    size_t need = 8;
    for (size_t i = 0; i < n_trailers; i++)
        need += trailers[i].name_len + trailers[i].value_len + 4;
    write_t *wr = write_new(c, r, need);
    if (!wr) {
        conn_close(c);
        return;
    }
    char *p = wr->inline_data;
    size_t n = 0;
    p[n++] = '0', p[n++] = '\r', p[n++] = '\n';
    for (size_t i = 0; i < n_trailers; i++) {
        const rw_http_header_t *h = &trailers[i];
        if (!is_token(h->name, h->name_len) || !is_safe_value(h->value, h->value_len))
            continue;
        memcpy(p + n, h->name, h->name_len);
        n += h->name_len;
        p[n++] = ':', p[n++] = ' ';
        memcpy(p + n, h->value, h->value_len);
        n += h->value_len;
        p[n++] = '\r', p[n++] = '\n';
    }
    p[n++] = '\r', p[n++] = '\n';
    uv_buf_t buf = uv_buf_init(p, (unsigned)n);
    if (write_submit(wr, &buf, 1) < 0)
        conn_close(c);
}

void rw_http_res_end(rw_http_req_t *req, const rw_http_header_t *trailers, size_t n_trailers)
{
    req_t *r = (req_t *)req;
    if (r->ended)
        return;
    conn_t *c = r->conn;
    if (c && !c->closing && !r->aborted) {
        if (!r->started)
            rw_http_res_start(req, 204, NULL, 0, 0);
        if (r->chunked_out)
            write_last_chunk(r, trailers, n_trailers);
        else if (r->content_length_out >= 0 && !r->head_only &&
                 r->body_out < (uint64_t)r->content_length_out)
            c->close_after = true; /* short body: the only honest signal left */
    }
    r->ended = true;
    /* Held across conn_process: with its message not yet parsed (the parser
     * pauses after dispatch) and no write in flight, on_message_complete
     * would free it under us. */
    req_hold(r);
    c = r->conn; /* a failed write above may have closed the connection */
    if (c && !c->closing) {
        conn_request_done(c);
        conn_process(c);
    } else if (c) {
        c->req = NULL;
        r->conn = NULL;
    }
    req_unhold(r);
}

void rw_http_res_abort(rw_http_req_t *req)
{
    req_t *r = (req_t *)req;
    if (r->ended)
        return;
    /* Ended first, so conn_close does not report an abort back to the caller;
     * the connection's close callback lets go of the request. */
    r->ended = true;
    conn_t *c = r->conn;
    if (c)
        conn_close(c);
    req_release(r);
}

void rw_http_respond(rw_http_req_t *req, int status, const rw_http_header_t *headers,
                     size_t n_headers, const char *body, size_t len)
{
    req_t *r = (req_t *)req;
    if (!r->started) {
        /* Head and body in one write: one system call, and for a small answer
         * one TCP segment, so the client wakes up once. */
        write_t *wr;
        size_t n;
        int rc = res_head(r, status, headers, n_headers, (int64_t)len, len, &wr, &n);
        if (rc == RW_EPARSE) {
            /* Refuse CR/LF injection: say so rather than send the bad header. */
            rw_http_respond_error(req, 502, "Internal server error",
                                  "response header with an invalid name or CR/LF", NULL, 0);
            return;
        }
        if (rc == 0) {
            conn_t *c = r->conn;
            r->body_out = len;
            if (!r->head_only && len) {
                memcpy(wr->inline_data + n, body, len);
                n += len;
            }
            uv_buf_t buf = uv_buf_init(wr->inline_data, (unsigned)n);
            if (write_submit(wr, &buf, 1) < 0)
                conn_close(c);
        }
        rw_http_res_end(req, NULL, 0);
        return;
    }
    if (len && rw_http_req_alive(req))
        rw_http_res_write(req, body, len, false, NULL, NULL);
    rw_http_res_end(req, NULL, 0);
}

void rw_http_respond_error(rw_http_req_t *req, int status, const char *message,
                           const char *reason, const rw_http_header_t *extra, size_t n_extra)
{
    char body[1024];
    size_t blen = error_body(body, sizeof body, message, reason);
    rw_http_header_t hs[16];
    size_t n = 0;
    hs[n++] = (rw_http_header_t){"Content-Type", 12, "application/json", 16};
    for (size_t i = 0; i < n_extra && n < 16; i++)
        hs[n++] = extra[i];
    rw_http_respond(req, status, hs, n, body, blen);
}

const rw_http_header_t *rw_http_req_trailers(const rw_http_req_t *req, size_t *n)
{
    const req_t *r = (const req_t *)req;
    *n = r->trailers ? r->trail.n : 0;
    return r->trailers;
}

void rw_http_server_on_done(rw_http_server_t *s, rw_http_done_cb cb, void *arg)
{
    s->on_done = cb;
    s->done_cb_arg = arg;
}
