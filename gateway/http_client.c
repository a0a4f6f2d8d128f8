/* The gateway's HTTP/1.1 client: connects (uv_getaddrinfo + uv_tcp_connect,
 * trying each address), sends a request head and a streamed body, parses the
 * response with llhttp piece by piece, and keeps idle connections per upstream.
 *
 * Ownership in one paragraph: a request (creq) always has exactly one
 * connection (conn) while it is not done, from the moment it starts (a pooled
 * one, or a new one still resolving). Writes point at the connection, never
 * at the request, so a request can be freed while its last writes are still
 * in flight (they are cancelled by the close). A connection is freed only in
 * its handles' close callbacks, so code running inside llhttp_execute may
 * close it and still look at it until it returns. */
#include "http_client.h"
#include "http_fields.h"

#include "reelway/error.h"

#include <llhttp.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define READ_BUF_SIZE (64 * 1024)

typedef struct conn_s conn_t;

enum conn_state_e { CONN_RESOLVING, CONN_CONNECTING, CONN_ACTIVE, CONN_IDLE, CONN_CLOSING };
enum timer_kind_e { TK_NONE, TK_CONNECT, TK_PROGRESS, TK_IDLE };

/* One queued piece of the request: head, body piece (with its chunk framing)
 * or the last chunk. Kept on the request until the connection is ready. */
typedef struct wblock_s {
    uv_write_t w;
    conn_t *conn;
    struct wblock_s *next;
    size_t len;
    char data[];
} wblock_t;

/* The idle connections of one host:port. */
typedef struct upstream_s {
    struct upstream_s *next;
    conn_t *idle; /* most recently used first */
    unsigned n_idle;
    int port;
    char host[];
} upstream_t;

struct conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t connect_req;
    rw_http_client_t *cli;
    upstream_t *up;
    conn_t *prev, *next;           /* every connection of the client */
    conn_t *idle_prev, *idle_next; /* the upstream's idle list */
    enum conn_state_e state;
    enum timer_kind_e timer_kind;
    int handles_open;
    bool gai_pending;
    bool reopening;                /* tcp closing to try the next address */
    struct addrinfo *ai, *ai_next;
    llhttp_t parser;
    char *rbuf;
    size_t rstart, rlen;
    bool reading, in_process, reprocess, paused_mid_input;
    bool eof;
    bool msg_done;                 /* llhttp reached the end of the response */
    bool keep_alive;
    bool pool_when_written;        /* response done; pool once the writes finish */
    int parse_err;                 /* our reason for stopping llhttp */
    int fail_err;                  /* error for the request when the tcp handle closes */
    unsigned writes_pending;
    rw_http_creq_t *req;
};

struct rw_http_creq_s {
    rw_http_client_t *cli;
    rw_http_creq_t *prev, *next;
    conn_t *conn;                  /* non-NULL exactly while !done */
    upstream_t *up;
    const rw_http_creq_cbs_t *cbs;
    void *data;
    char *head;                    /* the request head, kept for one retry */
    size_t head_len;
    wblock_t *pending, **pending_tail;
    size_t queued;
    int64_t body_length;
    uint64_t body_written;
    uint64_t timeout_ms;
    bool head_request;
    bool ended_body;
    bool want_drain;
    bool on_reused_conn;
    bool retried;
    bool got_bytes;                /* any response byte arrived */
    bool head_done;                /* on_response delivered */
    bool paused;
    bool interim;                  /* parsing a 1xx answer */
    bool in_trailers;
    bool done;                     /* completed or aborted: no more callbacks */
    unsigned holds;
    size_t head_bytes, trailer_bytes;
    rw_fields_t fields;            /* the head's fields, then the trailers */
    size_t n_head_fields;
    rw_http_header_t *hdrs;
    char reason[160];
};

struct rw_http_client_s {
    uv_loop_t *loop;
    rw_http_client_opts_t opts;
    upstream_t *ups;
    conn_t *conns;
    rw_http_creq_t *reqs;
    unsigned n_conns, n_reqs;
    bool closing;
    void (*done)(void *arg);
    void *done_arg;
    rw_http_client_stats_t stats;
};

static llhttp_settings_t parser_settings;
static void conn_process(conn_t *c);
static void conn_close(conn_t *c);
static void conn_arm(conn_t *c);
static void creq_fail(rw_http_creq_t *q, int err);
static void client_maybe_done(rw_http_client_t *cli);
static void on_conn_handle_closed(uv_handle_t *h);

/* ---- small utilities ---------------------------------------------------- */

void rw_http_client_opts_default(rw_http_client_opts_t *o)
{
    o->connect_timeout_ms = 10000;
    o->idle_timeout_ms = 30000;
    o->max_idle_per_upstream = 16;
    o->max_head_bytes = 64 * 1024;
    o->write_high_water = 256 * 1024;
}

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

static bool name_is(const rw_http_header_t *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && strncasecmp(h->name, name, n) == 0;
}

/* ---- requests: holding, completing, freeing ------------------------------ */

static void creq_free(rw_http_creq_t *q)
{
    rw_http_client_t *cli = q->cli;
    for (wblock_t *b = q->pending, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    if (q->prev)
        q->prev->next = q->next;
    else
        cli->reqs = q->next;
    if (q->next)
        q->next->prev = q->prev;
    cli->n_reqs--;
    free(q->head);
    rw_fields_free(&q->fields);
    free(q->hdrs);
    free(q);
    client_maybe_done(cli);
}

static void creq_hold(rw_http_creq_t *q)
{
    q->holds++;
}

/* Returns true when q is still usable (not done) after the hold ends. */
static bool creq_unhold(rw_http_creq_t *q)
{
    q->holds--;
    if (q->done) {
        if (q->holds == 0)
            creq_free(q);
        return false;
    }
    return true;
}

static void creq_detach(rw_http_creq_t *q)
{
    conn_t *c = q->conn;
    if (c) {
        c->req = NULL;
        q->conn = NULL;
    }
}

static void creq_complete(rw_http_creq_t *q, int status, const rw_http_header_t *trailers,
                          size_t n_trailers)
{
    if (q->done)
        return;
    creq_detach(q);
    q->done = true;
    creq_hold(q);
    q->cbs->on_complete(q, status, trailers, n_trailers);
    creq_unhold(q);
}

/* ---- writing ------------------------------------------------------------- */

static wblock_t *wblock_new(size_t len)
{
    wblock_t *b = malloc(sizeof *b + len);
    if (b) {
        b->next = NULL;
        b->conn = NULL;
        b->len = len;
    }
    return b;
}

static void pool_put(conn_t *c);

static void on_written(uv_write_t *w, int status)
{
    wblock_t *b = (wblock_t *)w;
    conn_t *c = b->conn;
    size_t len = b->len;
    free(b);
    c->writes_pending--;
    if (c->state == CONN_CLOSING)
        return;
    rw_http_creq_t *q = c->req;
    if (!q) {
        if (c->pool_when_written && c->writes_pending == 0)
            pool_put(c);
        return;
    }
    q->queued -= len;
    if (status < 0) {
        creq_fail(q, status);
        return;
    }
    conn_arm(c); /* the upstream took bytes: that is progress */
    if (q->want_drain && q->queued == 0) {
        q->want_drain = false;
        if (q->cbs->on_drain) {
            creq_hold(q);
            q->cbs->on_drain(q);
            creq_unhold(q);
        }
    }
}

/* A failure found inside a call of the caller's (write, end): the request
 * completes from the connection's close callback, never inside that call. */
static void conn_fail_later(conn_t *c, int err)
{
    if (c->state == CONN_CLOSING)
        return;
    c->fail_err = err;
    conn_close(c);
}

static int wblock_submit(conn_t *c, wblock_t *b)
{
    b->conn = c;
    uv_buf_t buf = uv_buf_init(b->data, (unsigned)b->len);
    int rc = uv_write(&b->w, (uv_stream_t *)&c->tcp, &buf, 1, on_written);
    if (rc < 0) {
        if (c->req)
            c->req->queued -= b->len;
        free(b);
        return rc;
    }
    c->writes_pending++;
    return 0;
}

/* Hands a block to the connection, or keeps it until the connection is ready. */
static int creq_queue(rw_http_creq_t *q, wblock_t *b)
{
    conn_t *c = q->conn;
    q->queued += b->len;
    if (c->state == CONN_ACTIVE) {
        int rc = wblock_submit(c, b);
        if (rc < 0)
            conn_fail_later(c, rc);
        return rc;
    }
    *q->pending_tail = b;
    q->pending_tail = &b->next;
    return 0;
}

/* ---- connections ------------------------------------------------------- */

static void idle_unlink(conn_t *c)
{
    upstream_t *up = c->up;
    if (c->idle_prev)
        c->idle_prev->idle_next = c->idle_next;
    else
        up->idle = c->idle_next;
    if (c->idle_next)
        c->idle_next->idle_prev = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
    up->n_idle--;
    c->cli->stats.idle--;
}

static void conn_maybe_free(conn_t *c)
{
    if (c->handles_open > 0 || c->gai_pending)
        return;
    rw_http_client_t *cli = c->cli;
    if (c->prev)
        c->prev->next = c->next;
    else
        cli->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    cli->n_conns--;
    if (c->ai)
        uv_freeaddrinfo(c->ai);
    free(c->rbuf);
    free(c);
    client_maybe_done(cli);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    c->handles_open--;
    if (h == (uv_handle_t *)&c->tcp && c->req) {
        /* conn_fail_later: now the request may hear of it. */
        rw_http_creq_t *q = c->req;
        creq_detach(q);
        creq_fail(q, c->fail_err ? c->fail_err : UV_ECONNRESET);
    }
    conn_maybe_free(c);
}

static void conn_close(conn_t *c)
{
    if (c->state == CONN_CLOSING)
        return;
    if (c->state == CONN_IDLE)
        idle_unlink(c);
    else if (c->state == CONN_ACTIVE)
        c->cli->stats.active--;
    c->state = CONN_CLOSING;
    if (c->gai_pending)
        uv_cancel((uv_req_t *)&c->gai);
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    if (!c->reopening)
        uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

static void on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    enum timer_kind_e kind = c->timer_kind;
    c->timer_kind = TK_NONE;
    rw_http_creq_t *q = c->req;
    switch (kind) {
    case TK_CONNECT:
    case TK_PROGRESS:
        if (q) {
            creq_detach(q);
            conn_close(c);
            creq_fail(q, kind == TK_CONNECT ? UV_ETIMEDOUT : RW_ETIMEOUT);
        } else {
            conn_close(c);
        }
        break;
    default:
        conn_close(c);
        break;
    }
}

static void timer_set(conn_t *c, enum timer_kind_e kind, uint64_t ms, bool restart)
{
    if (kind == TK_NONE || ms == 0) {
        if (c->timer_kind != TK_NONE)
            uv_timer_stop(&c->timer);
        c->timer_kind = TK_NONE;
        return;
    }
    if (!restart && c->timer_kind == kind)
        return;
    c->timer_kind = kind;
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

/* The progress timer runs only while the upstream owes us something: the
 * response head once the request is (being) sent, or body bytes while we
 * read. Every call restarts it: callers call on progress. */
static void conn_arm(conn_t *c)
{
    if (c->state != CONN_ACTIVE)
        return;
    rw_http_creq_t *q = c->req;
    bool owes = false;
    if (q && !q->head_done)
        owes = q->ended_body || q->queued > 0;
    else if (q)
        owes = !q->paused && !c->eof;
    timer_set(c, owes ? TK_PROGRESS : TK_NONE, q ? q->timeout_ms : 0, true);
}

static conn_t *conn_alloc(rw_http_client_t *cli, upstream_t *up)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cli = cli;
    c->up = up;
    uv_tcp_init(cli->loop, &c->tcp);
    uv_timer_init(cli->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    c->next = cli->conns;
    if (cli->conns)
        cli->conns->prev = c;
    cli->conns = c;
    cli->n_conns++;
    return c;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    if (!c->rbuf) {
        c->rbuf = malloc(READ_BUF_SIZE);
        c->rstart = c->rlen = 0;
        if (!c->rbuf) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
    }
    if (c->rstart > 0) {
        memmove(c->rbuf, c->rbuf + c->rstart, c->rlen);
        c->rstart = 0;
    }
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(READ_BUF_SIZE - c->rlen));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = stream->data;
    if (nread == 0)
        return;
    if (c->state != CONN_ACTIVE || !c->req) {
        /* Idle (or waiting to be pooled): the upstream closed it, or sent
         * bytes nobody asked for. Either way it cannot be reused. */
        conn_close(c);
        return;
    }
    if (nread == UV_ENOBUFS) {
        uv_read_stop(stream); /* buffer full of unparsed bytes */
        c->reading = false;
        return;
    }
    if (nread < 0) {
        uv_read_stop(stream);
        c->reading = false;
        if (nread == UV_EOF) {
            c->eof = true;
            conn_process(c);
            return;
        }
        rw_http_creq_t *q = c->req;
        creq_detach(q);
        conn_close(c);
        creq_fail(q, (int)nread);
        return;
    }
    c->rlen += (size_t)nread;
    c->req->got_bytes = true;
    conn_arm(c);
    conn_process(c);
}

static void conn_update_reading(conn_t *c)
{
    bool want;
    if (c->state == CONN_IDLE || (c->state == CONN_ACTIVE && !c->req))
        want = true;
    else if (c->state == CONN_ACTIVE)
        want = !c->req->paused && !c->eof && !c->msg_done && c->rlen < READ_BUF_SIZE;
    else
        want = false;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* The connection is ready for its request: send what was queued. */
static void conn_begin(conn_t *c)
{
    rw_http_creq_t *q = c->req;
    c->state = CONN_ACTIVE;
    c->cli->stats.active++;
    c->eof = c->msg_done = c->paused_mid_input = false;
    c->rstart = c->rlen = 0;
    c->parse_err = 0;
    llhttp_init(&c->parser, HTTP_RESPONSE, &parser_settings);
    c->parser.data = c;
    timer_set(c, TK_NONE, 0, false);
    wblock_t *head = wblock_new(q->head_len);
    if (!head) {
        conn_fail_later(c, UV_ENOMEM);
        return;
    }
    memcpy(head->data, q->head, q->head_len);
    q->queued += head->len;
    int rc = wblock_submit(c, head);
    wblock_t *b = q->pending;
    q->pending = NULL;
    q->pending_tail = &q->pending;
    while (b) {
        wblock_t *next = b->next;
        if (rc == 0)
            rc = wblock_submit(c, b);
        else {
            q->queued -= b->len;
            free(b);
        }
        b = next;
    }
    if (rc < 0) {
        conn_fail_later(c, rc);
        return;
    }
    conn_update_reading(c);
    conn_arm(c);
}

static void try_connect(conn_t *c);

static void on_tcp_reopened(uv_handle_t *h)
{
    conn_t *c = h->data;
    c->reopening = false;
    if (c->state == CONN_CLOSING) {
        c->handles_open--;
        conn_maybe_free(c);
        return;
    }
    uv_tcp_init(c->cli->loop, &c->tcp);
    c->tcp.data = c;
    try_connect(c);
}

/* A failed connect: try the next address on a fresh socket, or give up. */
static void connect_failed(conn_t *c, int err)
{
    if (c->ai_next) {
        c->reopening = true;
        uv_close((uv_handle_t *)&c->tcp, on_tcp_reopened);
        return;
    }
    rw_http_creq_t *q = c->req;
    if (q)
        creq_detach(q);
    conn_close(c);
    if (q)
        creq_fail(q, err);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    if (c->state == CONN_CLOSING || c->reopening)
        return;
    if (status < 0) {
        connect_failed(c, status);
        return;
    }
    c->cli->stats.connects++;
    uv_tcp_nodelay(&c->tcp, 1);
    if (!c->req) { /* cannot happen: a connecting conn always has its request */
        conn_close(c);
        return;
    }
    conn_begin(c);
}

static void try_connect(conn_t *c)
{
    struct addrinfo *ai = c->ai_next;
    c->ai_next = ai->ai_next;
    c->state = CONN_CONNECTING;
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, ai->ai_addr, on_connect);
    if (rc < 0)
        connect_failed(c, rc);
}

static void on_resolved(uv_getaddrinfo_t *gai, int status, struct addrinfo *res)
{
    conn_t *c = gai->data;
    c->gai_pending = false;
    if (c->state == CONN_CLOSING) {
        if (res)
            uv_freeaddrinfo(res);
        conn_maybe_free(c);
        return;
    }
    if (status < 0 || !res) {
        if (res)
            uv_freeaddrinfo(res);
        connect_failed(c, status < 0 ? status : UV_EAI_NONAME);
        return;
    }
    c->ai = c->ai_next = res;
    try_connect(c);
}

/* A new connection for q: resolve (numeric hosts too, so that every failure
 * arrives through a callback), then connect. */
static int conn_open(rw_http_creq_t *q)
{
    rw_http_client_t *cli = q->cli;
    conn_t *c = conn_alloc(cli, q->up);
    if (!c)
        return UV_ENOMEM;
    c->state = CONN_RESOLVING;
    c->req = q;
    q->conn = c;
    q->on_reused_conn = false;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    struct in6_addr a6;
    struct in_addr a4;
    if (uv_inet_pton(AF_INET, q->up->host, &a4) == 0 ||
        uv_inet_pton(AF_INET6, q->up->host, &a6) == 0)
        hints.ai_flags = AI_NUMERICHOST;
    else
        hints.ai_flags = AI_ADDRCONFIG;
    char port[16];
    snprintf(port, sizeof port, "%d", q->up->port);
    c->gai.data = c;
    int rc = uv_getaddrinfo(cli->loop, &c->gai, on_resolved, q->up->host, port, &hints);
    if (rc < 0) {
        creq_detach(q);
        conn_close(c);
        return rc;
    }
    c->gai_pending = true;
    timer_set(c, TK_CONNECT, cli->opts.connect_timeout_ms, true);
    return 0;
}

/* ---- the pool ------------------------------------------------------------ */

static void pool_put(conn_t *c)
{
    rw_http_client_t *cli = c->cli;
    upstream_t *up = c->up;
    c->pool_when_written = false;
    if (cli->closing || up->n_idle >= cli->opts.max_idle_per_upstream || c->rlen > 0) {
        conn_close(c);
        return;
    }
    c->state = CONN_IDLE;
    cli->stats.active--;
    cli->stats.idle++;
    c->idle_prev = NULL;
    c->idle_next = up->idle;
    if (up->idle)
        up->idle->idle_prev = c;
    up->idle = c;
    up->n_idle++;
    free(c->rbuf); /* idle connections hold no buffer */
    c->rbuf = NULL;
    c->rstart = c->rlen = 0;
    conn_update_reading(c);
    timer_set(c, TK_IDLE, cli->opts.idle_timeout_ms, true);
}

static conn_t *pool_take(upstream_t *up)
{
    conn_t *c = up->idle;
    if (!c)
        return NULL;
    idle_unlink(c);
    timer_set(c, TK_NONE, 0, false);
    return c;
}

static upstream_t *upstream_get(rw_http_client_t *cli, const char *host, int port)
{
    for (upstream_t *u = cli->ups; u; u = u->next)
        if (u->port == port && strcmp(u->host, host) == 0)
            return u;
    size_t n = strlen(host);
    upstream_t *u = calloc(1, sizeof *u + n + 1);
    if (!u)
        return NULL;
    memcpy(u->host, host, n + 1);
    u->port = port;
    u->next = cli->ups;
    cli->ups = u;
    return u;
}

/* Gives q a connection: a pooled one (the head goes out now) or a new one. */
static int creq_attach(rw_http_creq_t *q, bool allow_pool)
{
    conn_t *c = allow_pool ? pool_take(q->up) : NULL;
    if (!c)
        return conn_open(q);
    c->req = q;
    q->conn = c;
    q->on_reused_conn = true;
    q->cli->stats.reuses++;
    conn_begin(c);
    return 0;
}

/* Fails q, or resends it once on a new connection when a pooled connection
 * turned out to be closed by the upstream before it saw the request (the
 * race every keep-alive client has). Only for requests without a body: a
 * streamed body cannot be replayed. */
static void creq_fail(rw_http_creq_t *q, int err)
{
    if (q->done)
        return;
    conn_t *c = q->conn;
    if (c) {
        creq_detach(q);
        conn_close(c);
    }
    bool stale = err == RW_EPREMATURE || err == UV_ECONNRESET || err == UV_EPIPE;
    if (stale && q->on_reused_conn && !q->got_bytes && !q->retried && q->body_length == 0 &&
        q->head && !q->cli->closing) {
        q->retried = true;
        q->cli->stats.retries++;
        q->queued = 0;
        if (conn_open(q) == 0)
            return;
    }
    creq_complete(q, err, NULL, 0);
}

/* ---- the response parser ---------------------------------------------- */

static int stop_parser(conn_t *c, int err, const char *reason)
{
    c->parse_err = err;
    if (c->req && reason)
        snprintf(c->req->reason, sizeof c->req->reason, "%s", reason);
    llhttp_set_error_reason(&c->parser, reason);
    return HPE_USER;
}

static int count_bytes(conn_t *c, rw_http_creq_t *q, size_t n)
{
    size_t *counter = q->in_trailers ? &q->trailer_bytes : &q->head_bytes;
    *counter += n;
    if (*counter > c->cli->opts.max_head_bytes)
        return stop_parser(c, RW_ELIMIT, q->in_trailers ? "response trailers too large"
                                                        : "response head too large");
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    rw_http_creq_t *q = c->req;
    if (!q)
        return HPE_PAUSED;
    rw_fields_reset(&q->fields);
    q->head_bytes = q->trailer_bytes = 0;
    q->interim = false;
    q->in_trailers = false;
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    return c->req ? count_bytes(c, c->req, n) : HPE_USER;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    rw_http_creq_t *q = c->req;
    if (!q || count_bytes(c, q, n) != 0)
        return HPE_USER;
    /* A new field line: ": " and CRLF count towards the limit too. */
    if (rw_fields_opening(&q->fields) && count_bytes(c, q, 4) != 0)
        return HPE_USER;
    return rw_fields_name(&q->fields, at, n) == 0 ? 0 : stop_parser(c, UV_ENOMEM, "out of memory");
}

static int on_header_field_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    rw_http_creq_t *q = c->req;
    return q && rw_fields_name_done(&q->fields) == 0 ? 0
                                                     : stop_parser(c, UV_ENOMEM, "out of memory");
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    rw_http_creq_t *q = c->req;
    if (!q || count_bytes(c, q, n) != 0)
        return HPE_USER;
    return rw_fields_value(&q->fields, at, n) == 0 ? 0
                                                   : stop_parser(c, UV_ENOMEM, "out of memory");
}

static int on_header_value_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    rw_http_creq_t *q = c->req;
    return q && rw_fields_value_done(&q->fields) == 0 ? 0
                                                      : stop_parser(c, UV_ENOMEM, "out of memory");
}

/* Builds the header array for fields [from, to) (pointers into the fields'
 * bytes, which do not move again for this message's head). */
static int build_headers(rw_http_creq_t *q, size_t from, size_t to)
{
    free(q->hdrs);
    q->hdrs = calloc(to > from ? to - from : 1, sizeof *q->hdrs);
    if (!q->hdrs)
        return UV_ENOMEM;
    rw_fields_export(&q->fields, from, to, q->hdrs);
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    rw_http_creq_t *q = c->req;
    if (!q)
        return HPE_PAUSED;
    int status = p->status_code;
    if (status == 101)
        return stop_parser(c, RW_EPARSE, "protocol upgrades are not supported");
    if (status >= 100 && status < 200) {
        q->interim = true; /* 100 Continue, 103 Early Hints: the real answer follows */
        return 0;
    }
    if (build_headers(q, 0, q->fields.n) != 0)
        return stop_parser(c, UV_ENOMEM, "out of memory");
    rw_http_response_t res;
    memset(&res, 0, sizeof res);
    res.status = status;
    res.http_major = p->http_major;
    res.http_minor = p->http_minor;
    res.headers = q->hdrs;
    res.n_headers = q->fields.n;
    res.chunked = (p->flags & F_CHUNKED) != 0;
    res.content_length =
        !res.chunked && (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    res.has_body = !q->head_request && status != 204 && status != 304 && res.content_length != 0;
    res.keep_alive = llhttp_should_keep_alive(p) != 0;
    q->n_head_fields = q->fields.n;
    q->head_done = true;
    q->in_trailers = true; /* any further field lines are trailers */
    free(q->head);          /* an answered request is never resent */
    q->head = NULL;
    creq_hold(q);
    q->cbs->on_response(q, &res);
    if (!creq_unhold(q) || c->req != q)
        return HPE_PAUSED; /* aborted from the callback */
    conn_arm(c);
    return q->head_request ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    conn_t *c = p->data;
    rw_http_creq_t *q = c->req;
    if (!q)
        return HPE_PAUSED;
    creq_hold(q);
    bool more = q->cbs->on_body(q, at, n);
    if (!creq_unhold(q) || c->req != q)
        return HPE_PAUSED;
    if (!more) {
        q->paused = true;
        c->cli->stats.read_pauses++;
        conn_arm(c); /* paused by the consumer: the upstream owes nothing now */
        return HPE_PAUSED;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    rw_http_creq_t *q = c->req;
    if (!q)
        return HPE_PAUSED;
    if (q->interim) {
        q->interim = false;
        return 0;
    }
    c->msg_done = true;
    c->keep_alive = llhttp_should_keep_alive(p) != 0;
    return HPE_PAUSED;
}

/* The whole response is in: deliver the end, and pool the connection when the
 * upstream keeps it and nothing of this exchange is left on it. */
static void conn_response_done(conn_t *c)
{
    rw_http_creq_t *q = c->req;
    bool reuse = c->keep_alive && q->ended_body && q->pending == NULL && c->rlen == 0 &&
                 !c->eof && !c->cli->closing;
    size_t n_trailers = q->fields.n - q->n_head_fields;
    rw_http_header_t *trailers = NULL;
    if (n_trailers > 0 && build_headers(q, q->n_head_fields, q->fields.n) == 0)
        trailers = q->hdrs;
    else
        n_trailers = 0;
    creq_detach(q);
    if (reuse && c->writes_pending == 0) {
        pool_put(c);
    } else if (reuse) {
        c->pool_when_written = true;
        timer_set(c, TK_NONE, 0, false);
    } else {
        conn_close(c);
    }
    creq_complete(q, 0, trailers, n_trailers);
}

static void conn_parse_failed(conn_t *c, llhttp_errno_t err)
{
    rw_http_creq_t *q = c->req;
    int code = c->parse_err ? c->parse_err : RW_EPARSE;
    if (q && !c->parse_err)
        snprintf(q->reason, sizeof q->reason, "%s", llhttp_get_error_reason(&c->parser));
    if (!q) {
        conn_close(c);
        return;
    }
    creq_detach(q);
    conn_close(c);
    creq_fail(q, code);
}

static void conn_eof(conn_t *c)
{
    rw_http_creq_t *q = c->req;
    llhttp_errno_t err = llhttp_finish(&c->parser);
    if ((err == HPE_OK || err == HPE_PAUSED) && c->msg_done) {
        conn_response_done(c); /* a close-delimited body ends here */
        return;
    }
    snprintf(q->reason, sizeof q->reason, "connection closed before the response ended");
    creq_detach(q);
    conn_close(c);
    creq_fail(q, RW_EPREMATURE);
}

static void conn_process(conn_t *c)
{
    if (c->in_process) {
        c->reprocess = true;
        return;
    }
    c->in_process = true;
    do {
        c->reprocess = false;
        while (c->state == CONN_ACTIVE && c->req && !c->req->paused && !c->msg_done &&
               (c->rlen > 0 || c->paused_mid_input)) {
            const char *start = c->rlen > 0 ? c->rbuf + c->rstart : "";
            c->paused_mid_input = false;
            llhttp_errno_t err = llhttp_execute(&c->parser, start, c->rlen);
            size_t used = err == HPE_OK ? c->rlen
                                        : (size_t)(llhttp_get_error_pos(&c->parser) - start);
            c->rstart += used;
            c->rlen -= used;
            if (c->rlen == 0)
                c->rstart = 0;
            if (err == HPE_PAUSED) {
                llhttp_resume(&c->parser);
                c->paused_mid_input = true;
                continue;
            }
            if (err != HPE_OK) {
                conn_parse_failed(c, err);
                break;
            }
        }
        if (c->state == CONN_ACTIVE && c->req && c->msg_done) {
            conn_response_done(c);
        } else if (c->state == CONN_ACTIVE && c->req && c->eof && !c->req->paused &&
                   c->rlen == 0) {
            conn_eof(c);
        }
    } while (c->reprocess && c->state == CONN_ACTIVE && c->req);
    c->in_process = false;
    if (c->state == CONN_ACTIVE && c->req)
        conn_update_reading(c);
}

/* ---- public API ---------------------------------------------------------- */

rw_http_client_t *rw_http_client_new(uv_loop_t *loop, const rw_http_client_opts_t *opts)
{
    static bool settings_ready;
    if (!settings_ready) {
        llhttp_settings_init(&parser_settings);
        parser_settings.on_message_begin = on_message_begin;
        parser_settings.on_status = on_status;
        parser_settings.on_header_field = on_header_field;
        parser_settings.on_header_field_complete = on_header_field_complete;
        parser_settings.on_header_value = on_header_value;
        parser_settings.on_header_value_complete = on_header_value_complete;
        parser_settings.on_headers_complete = on_headers_complete;
        parser_settings.on_body = on_body;
        parser_settings.on_message_complete = on_message_complete;
        settings_ready = true;
    }
    rw_http_client_t *cli = calloc(1, sizeof *cli);
    if (!cli)
        return NULL;
    cli->loop = loop;
    rw_http_client_opts_default(&cli->opts);
    if (opts) {
#define TAKE(f)                                                                                    \
    if (opts->f)                                                                                   \
    cli->opts.f = opts->f
        TAKE(connect_timeout_ms);
        TAKE(idle_timeout_ms);
        TAKE(max_idle_per_upstream);
        TAKE(max_head_bytes);
        TAKE(write_high_water);
#undef TAKE
    }
    return cli;
}

static void client_maybe_done(rw_http_client_t *cli)
{
    if (!cli->closing || cli->n_conns > 0 || cli->n_reqs > 0)
        return;
    for (upstream_t *u = cli->ups, *next; u; u = next) {
        next = u->next;
        free(u);
    }
    void (*done)(void *) = cli->done;
    void *arg = cli->done_arg;
    free(cli);
    if (done)
        done(arg);
}

void rw_http_client_close(rw_http_client_t *cli, void (*done)(void *arg), void *arg)
{
    if (cli->closing)
        return;
    cli->closing = true;
    cli->done = done;
    cli->done_arg = arg;
    /* A completion may start or abort other requests: rescan from the start. */
    cli->n_reqs++; /* keeps the client alive while we walk */
    for (;;) {
        rw_http_creq_t *q = cli->reqs;
        while (q && q->done)
            q = q->next;
        if (!q)
            break;
        creq_fail(q, UV_ECANCELED);
    }
    for (conn_t *c = cli->conns; c; c = c->next)
        conn_close(c);
    cli->n_reqs--;
    client_maybe_done(cli);
}

void rw_http_client_stats(const rw_http_client_t *cli, rw_http_client_stats_t *out)
{
    *out = cli->stats;
}

void *rw_http_creq_data(const rw_http_creq_t *q)
{
    return q->data;
}

size_t rw_http_creq_queued(const rw_http_creq_t *q)
{
    return q->queued;
}

const char *rw_http_creq_reason(const rw_http_creq_t *q)
{
    return q->reason[0] ? q->reason : NULL;
}

static bool method_wants_length(const char *m)
{
    return strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0;
}

/* Serializes the request head; returns its length or a negative code. */
static int build_head(const rw_http_request_t *r, char **out, size_t *out_len)
{
    bool has_host = false;
    size_t need = strlen(r->method) + strlen(r->target) + strlen(r->host) + 128;
    for (size_t i = 0; i < r->n_headers; i++) {
        const rw_http_header_t *h = &r->headers[i];
        if (!is_token(h->name, h->name_len) || !is_safe_value(h->value, h->value_len))
            return RW_EPARSE;
        if (name_is(h, "content-length") || name_is(h, "transfer-encoding") ||
            name_is(h, "connection"))
            return UV_EINVAL;
        if (name_is(h, "host"))
            has_host = true;
        need += h->name_len + h->value_len + 4;
    }
    char *p = malloc(need);
    if (!p)
        return UV_ENOMEM;
    size_t n = (size_t)snprintf(p, need, "%s %s HTTP/1.1\r\n", r->method, r->target);
    if (!has_host) {
        bool v6 = strchr(r->host, ':') != NULL;
        n += (size_t)snprintf(p + n, need - n, "Host: %s%s%s", v6 ? "[" : "", r->host,
                              v6 ? "]" : "");
        if (r->port != 80)
            n += (size_t)snprintf(p + n, need - n, ":%d", r->port);
        n += (size_t)snprintf(p + n, need - n, "\r\n");
    }
    for (size_t i = 0; i < r->n_headers; i++) {
        const rw_http_header_t *h = &r->headers[i];
        memcpy(p + n, h->name, h->name_len);
        n += h->name_len;
        p[n++] = ':';
        p[n++] = ' ';
        memcpy(p + n, h->value, h->value_len);
        n += h->value_len;
        p[n++] = '\r';
        p[n++] = '\n';
    }
    if (r->body_length > 0 || (r->body_length == 0 && method_wants_length(r->method)))
        n += (size_t)snprintf(p + n, need - n, "Content-Length: %lld\r\n",
                              (long long)r->body_length);
    else if (r->body_length < 0)
        n += (size_t)snprintf(p + n, need - n, "Transfer-Encoding: chunked\r\n");
    n += (size_t)snprintf(p + n, need - n, "\r\n");
    *out = p;
    *out_len = n;
    return 0;
}

static bool valid_target(const char *t)
{
    if (!t || (t[0] != '/' && strcmp(t, "*") != 0))
        return false;
    for (; *t; t++)
        if ((unsigned char)*t <= 32 || *t == 127)
            return false;
    return true;
}

int rw_http_client_request(rw_http_client_t *cli, const rw_http_request_t *r,
                           const rw_http_creq_cbs_t *cbs, void *data, rw_http_creq_t **out)
{
    if (cli->closing)
        return UV_ECANCELED;
    if (!r->method || !is_token(r->method, strlen(r->method)) || !valid_target(r->target) ||
        !r->host || !r->host[0] || strlen(r->host) > 255 || r->port <= 0 || r->port > 65535 ||
        !cbs || !cbs->on_response || !cbs->on_body || !cbs->on_complete)
        return UV_EINVAL;
    for (const char *h = r->host; *h; h++)
        if ((unsigned char)*h <= 32 || *h == '/' || *h == '[' || *h == ']')
            return UV_EINVAL;
    rw_http_creq_t *q = calloc(1, sizeof *q);
    if (!q)
        return UV_ENOMEM;
    int rc = build_head(r, &q->head, &q->head_len);
    if (rc < 0) {
        free(q);
        return rc;
    }
    q->up = upstream_get(cli, r->host, r->port);
    if (!q->up) {
        free(q->head);
        free(q);
        return UV_ENOMEM;
    }
    q->cli = cli;
    q->cbs = cbs;
    q->data = data;
    q->body_length = r->body_length;
    q->head_request = r->head_request || strcmp(r->method, "HEAD") == 0;
    q->timeout_ms = r->timeout_ms;
    q->pending_tail = &q->pending;
    q->next = cli->reqs;
    if (cli->reqs)
        cli->reqs->prev = q;
    cli->reqs = q;
    cli->n_reqs++;
    cli->stats.requests++;
    rc = creq_attach(q, true);
    if (rc < 0) {
        q->done = true;
        creq_free(q);
        return rc;
    }
    *out = q;
    return 0;
}

int rw_http_creq_write(rw_http_creq_t *q, const char *bytes, size_t len)
{
    if (q->done)
        return UV_ECANCELED;
    if (q->conn->state == CONN_CLOSING)
        return q->conn->fail_err ? q->conn->fail_err : UV_ECANCELED;
    if (q->ended_body)
        return RW_EWRITEEND;
    size_t hwm = q->cli->opts.write_high_water;
    if (len == 0)
        return q->queued < hwm ? 1 : 0;
    bool chunked = q->body_length < 0;
    if (!chunked && q->body_written + len > (uint64_t)q->body_length)
        return RW_ELIMIT;
    wblock_t *b = wblock_new(len + (chunked ? 24 : 0));
    if (!b)
        return UV_ENOMEM;
    size_t n = 0;
    if (chunked)
        n = (size_t)snprintf(b->data, 24, "%zx\r\n", len);
    memcpy(b->data + n, bytes, len);
    n += len;
    if (chunked) {
        b->data[n++] = '\r';
        b->data[n++] = '\n';
    }
    b->len = n;
    q->body_written += len;
    int rc = creq_queue(q, b);
    if (rc < 0)
        return rc;
    if (q->queued >= hwm) {
        q->want_drain = true;
        return 0;
    }
    return 1;
}

int rw_http_creq_end(rw_http_creq_t *q, const rw_http_header_t *trailers, size_t n_trailers)
{
    if (q->done)
        return UV_ECANCELED;
    if (q->ended_body)
        return RW_EWRITEEND;
    conn_t *c = q->conn;
    if (c->state == CONN_CLOSING)
        return c->fail_err ? c->fail_err : UV_ECANCELED;
    q->ended_body = true;
    if (q->body_length >= 0) {
        if (q->body_written < (uint64_t)q->body_length) {
            snprintf(q->reason, sizeof q->reason, "request body shorter than its Content-Length");
            conn_fail_later(c, RW_ETRUNC);
            return RW_ETRUNC;
        }
    } else {
        size_t need = 8;
        for (size_t i = 0; i < n_trailers; i++)
            need += trailers[i].name_len + trailers[i].value_len + 4;
        wblock_t *b = wblock_new(need);
        if (!b)
            return UV_ENOMEM;
        char *p = b->data;
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
        b->len = n;
        int rc = creq_queue(q, b);
        if (rc < 0)
            return rc;
    }
    conn_arm(c); /* from now on the upstream owes the response */
    return 0;
}

void rw_http_creq_resume(rw_http_creq_t *q)
{
    if (q->done || !q->paused)
        return;
    q->paused = false;
    conn_t *c = q->conn;
    if (c->state != CONN_ACTIVE)
        return;
    conn_arm(c);
    conn_process(c);
}

void rw_http_creq_abort(rw_http_creq_t *q)
{
    if (q->done)
        return;
    conn_t *c = q->conn;
    creq_detach(q);
    if (c)
        conn_close(c);
    q->done = true;
    if (q->holds == 0)
        creq_free(q);
}
