/* The runtime's HTTP/1.1 client for the Lambda Runtime API: one keep-alive
 * connection, one request at a time, responses parsed with llhttp. */
#include "internal.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void conn_close(rt_conn_t *c);
static void request_fail(rw_runtime_t *rt, int err);
static int request_send(rw_runtime_t *rt);

/* ---- the address ---- */

int rw__rt_parse_api(rw_runtime_t *rt, const char *api)
{
    if (api == NULL || *api == '\0')
        return UV_EINVAL;
    if (strncmp(api, "http://", 7) == 0)
        api += 7;
    const char *slash = strchr(api, '/');
    size_t hostport_len = slash ? (size_t)(slash - api) : strlen(api);
    if (hostport_len == 0 || hostport_len > 255)
        return UV_EINVAL;
    char hostport[256];
    memcpy(hostport, api, hostport_len);
    hostport[hostport_len] = '\0';

    /* host, [v6 host] or host:port; Lambda always gives an address and a port. */
    char host[256];
    const char *port = "80";
    if (hostport[0] == '[') {
        char *end = strchr(hostport, ']');
        if (end == NULL)
            return UV_EINVAL;
        *end = '\0';
        snprintf(host, sizeof host, "%s", hostport + 1);
        if (end[1] == ':')
            port = end + 2;
        else if (end[1] != '\0')
            return UV_EINVAL;
    } else {
        char *colon = strrchr(hostport, ':');
        if (colon != NULL) {
            *colon = '\0';
            port = colon + 1;
        }
        snprintf(host, sizeof host, "%s", hostport);
    }
    if (*host == '\0' || *port == '\0')
        return UV_EINVAL;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL)
        return UV_EAI_NONAME;
    memcpy(&rt->addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);

    /* Keep the text for the Host header as given (bracketed v6, port). */
    free(rt->host_header);
    free(rt->path_prefix);
    rt->host_header = strndup(api, hostport_len);
    rt->path_prefix = strdup(slash ? slash : "");
    if (rt->host_header == NULL || rt->path_prefix == NULL)
        return UV_ENOMEM;
    /* "/.rt/" and "/.rt" both mean the prefix "/.rt". */
    size_t plen = strlen(rt->path_prefix);
    while (plen > 0 && rt->path_prefix[plen - 1] == '/')
        rt->path_prefix[--plen] = '\0';
    return 0;
}

void rw__rt_next_clear(rt_next_t *next)
{
    free(next->request_id);
    free(next->deadline);
    free(next->arn);
    free(next->trace_id);
    free(next->client_context);
    free(next->cognito_identity);
    memset(next, 0, sizeof *next);
}

/* ---- response parsing ---- */

static rw_runtime_t *parser_rt(llhttp_t *p)
{
    return ((rt_conn_t *)p->data)->rt;
}

static int on_message_begin(llhttp_t *p)
{
    rw_runtime_t *rt = parser_rt(p);
    rt->req.response_started = true;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    rt_request_t *r = &parser_rt(p)->req;
    if (r->field_len + n >= sizeof r->field)
        r->field_overflow = true;
    else {
        memcpy(r->field + r->field_len, at, n);
        r->field_len += n;
    }
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    rt_request_t *r = &parser_rt(p)->req;
    if (r->value_overflow || r->value_len + n > RT_MAX_HEADER_VALUE) {
        r->value_overflow = true;
        return 0;
    }
    if (r->value_len + n + 1 > r->value_cap) {
        size_t cap = r->value_cap ? r->value_cap : 256;
        while (cap < r->value_len + n + 1)
            cap *= 2;
        char *v = realloc(r->value, cap);
        if (v == NULL) {
            r->value_overflow = true;
            return 0;
        }
        r->value = v;
        r->value_cap = cap;
    }
    memcpy(r->value + r->value_len, at, n);
    r->value_len += n;
    r->value[r->value_len] = '\0';
    return 0;
}

/* Keeps the /next headers the invocation needs. */
static int on_header_value_complete(llhttp_t *p)
{
    rw_runtime_t *rt = parser_rt(p);
    rt_request_t *r = &rt->req;
    char **slot = NULL;
    if (r->kind == REQ_NEXT && !r->field_overflow && !r->value_overflow) {
        r->field[r->field_len] = '\0';
        static const struct {
            const char *name;
            size_t off;
        } wanted[] = {
            {"Lambda-Runtime-Aws-Request-Id", offsetof(rt_next_t, request_id)},
            {"Lambda-Runtime-Deadline-Ms", offsetof(rt_next_t, deadline)},
            {"Lambda-Runtime-Invoked-Function-Arn", offsetof(rt_next_t, arn)},
            {"Lambda-Runtime-Trace-Id", offsetof(rt_next_t, trace_id)},
            {"Lambda-Runtime-Client-Context", offsetof(rt_next_t, client_context)},
            {"Lambda-Runtime-Cognito-Identity", offsetof(rt_next_t, cognito_identity)},
        };
        for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++)
            if (strcasecmp(r->field, wanted[i].name) == 0)
                slot = (char **)((char *)&rt->next + wanted[i].off);
    }
    if (slot != NULL) {
        free(*slot);
        *slot = strndup(r->value ? r->value : "", r->value_len);
        if (*slot == NULL)
            r->rbody_nomem = true;
    }
    r->field_len = 0;
    r->value_len = 0;
    r->field_overflow = r->value_overflow = false;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    rw_runtime_t *rt = parser_rt(p);
    rt_request_t *r = &rt->req;
    r->status = p->status_code;
    /* A /next body is the event; other bodies matter only for the log. */
    r->rbody_limit = r->kind == REQ_NEXT ? RT_MAX_EVENT : RT_MAX_ERROR_BODY;
    if (r->kind == REQ_NEXT && p->content_length > 0 && p->content_length <= RT_MAX_EVENT &&
        !(p->flags & F_CHUNKED)) {
        r->rbody = malloc((size_t)p->content_length + 1);
        if (r->rbody == NULL)
            r->rbody_nomem = true;
        else
            r->rbody_cap = (size_t)p->content_length + 1;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    rt_request_t *r = &parser_rt(p)->req;
    if (r->rbody_overflow || r->rbody_nomem)
        return 0;
    if (r->rbody_len + n > r->rbody_limit) {
        /* Keep parsing (the connection stays in sync) but drop the rest. */
        if (r->kind == REQ_NEXT)
            r->rbody_overflow = true;
        n = r->rbody_limit - r->rbody_len;
        if (n == 0)
            return 0;
    }
    if (r->rbody_len + n + 1 > r->rbody_cap) {
        size_t cap = r->rbody_cap ? r->rbody_cap : 4096;
        while (cap < r->rbody_len + n + 1)
            cap *= 2;
        char *b = realloc(r->rbody, cap);
        if (b == NULL) {
            r->rbody_nomem = true;
            return 0;
        }
        r->rbody = b;
        r->rbody_cap = cap;
    }
    memcpy(r->rbody + r->rbody_len, at, n);
    r->rbody_len += n;
    r->rbody[r->rbody_len] = '\0';
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    rt_conn_t *c = p->data;
    rt_request_t *r = &c->rt->req;
    r->complete = true;
    if (!llhttp_should_keep_alive(p))
        c->dead = true;
    /* Stop here: the completion runs outside llhttp's callbacks. */
    return HPE_PAUSED;
}

static llhttp_settings_t parser_settings;

static void settings_once(void)
{
    static bool ready;
    if (ready)
        return;
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_header_value_complete = on_header_value_complete;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
    ready = true;
}

/* ---- completion ---- */

static void request_reset(rt_request_t *r)
{
    free(r->head);
    free(r->body);
    free(r->value);
    free(r->rbody);
    memset(r, 0, sizeof *r);
}

/* Ends the active request and calls its done callback, last. */
static void request_finish(rw_runtime_t *rt, int err)
{
    rt_request_t *r = &rt->req;
    rt_done_cb done = r->done;
    int status = err == 0 ? r->status : 0;
    r->active = false;
    r->done = NULL;
    free(r->head);
    free(r->body);
    r->head = r->body = NULL;
    /* The response body stays readable (rt->req.rbody) during done. */
    if (done != NULL)
        done(rt, err, status);
}

static void request_retry_or_finish(rw_runtime_t *rt, int err, bool stale)
{
    rt_request_t *r = &rt->req;
    if (stale) {
        r->retried = true;
        if (request_send(rt) == 0)
            return;
    }
    request_finish(rt, err);
}

static void request_fail(rw_runtime_t *rt, int err)
{
    rt_request_t *r = &rt->req;
    if (!r->active || r->fail_err)
        return;
    /* A keep-alive connection the server closed while idle fails the next
     * request before any answer: send it again once on a new connection.
     * Streamed bodies cannot be replayed. */
    rt_conn_t *c = rt->conn;
    bool stale = c != NULL && c->requests > 0 && !r->response_started && !r->retried &&
                 r->kind != REQ_STREAM && !rt->stopping;
    if (c != NULL)
        conn_close(c);
    if (r->writing) {
        /* libuv still holds the head, the body and write_req: the close
         * cancels the write, whose callback goes on (on_head_written). */
        r->fail_err = err;
        r->fail_stale = stale;
        return;
    }
    request_retry_or_finish(rt, err, stale);
}

/* ---- the connection ---- */

static void on_conn_closed(uv_handle_t *h)
{
    free(h->data);
}

static void conn_close(rt_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->rt->conn == c)
        c->rt->conn = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

void rw__rt_drop(rw_runtime_t *rt)
{
    if (rt->conn != NULL)
        conn_close(rt->conn);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    rt_conn_t *c = h->data;
    *buf = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    rt_conn_t *c = s->data;
    rw_runtime_t *rt = c->rt;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* The server closed or reset: fail what is in flight (or nothing). */
        if (rt->conn == c && rt->req.active)
            request_fail(rt, (int)nread == UV_EOF ? UV_ECONNRESET : (int)nread);
        else
            conn_close(c);
        return;
    }
    if (rt->conn != c || !rt->req.active) {
        /* Bytes nobody asked for: the connection is out of sync. */
        conn_close(c);
        return;
    }
    llhttp_errno_t perr = llhttp_execute(&c->parser, buf->base, (size_t)nread);
    if (perr == HPE_PAUSED) {
        const char *stop = llhttp_get_error_pos(&c->parser);
        llhttp_resume(&c->parser);
        if (stop != NULL && stop < buf->base + nread)
            c->dead = true; /* bytes after a complete answer: never reuse */
    } else if (perr != HPE_OK) {
        request_fail(rt, RW_EPARSE);
        return;
    }
    if (!rt->req.complete)
        return;
    c->requests++;
    if (rt->req.writing) {
        /* Answered before it took all of the request (a 413 that does not
         * wait for a body over its limit): the rest cannot go out on this
         * connection. Closing it cancels the write; the request ends in the
         * write's callback, since libuv holds its buffers until then. */
        conn_close(c);
        return;
    }
    if (c->dead)
        conn_close(c);
    request_finish(rt, 0);
}

static void on_head_written(uv_write_t *w, int status)
{
    rt_conn_t *c = w->data;
    rw_runtime_t *rt = c->rt;
    rt_request_t *r = &rt->req;
    r->writing = false;
    if (!r->active)
        return;
    if (r->fail_err) {
        int err = r->fail_err;
        bool stale = r->fail_stale;
        r->fail_err = 0;
        r->fail_stale = false;
        request_retry_or_finish(rt, err, stale);
    } else if (r->complete) {
        request_finish(rt, 0); /* the answer came first (on_read) */
    } else if (status < 0 && rt->conn == c) {
        request_fail(rt, status);
    }
}

/* Writes the active request's head (and buffered body) on the connected conn. */
static int request_write(rw_runtime_t *rt)
{
    rt_conn_t *c = rt->conn;
    rt_request_t *r = &rt->req;
    uv_buf_t bufs[2] = {uv_buf_init(r->head, (unsigned)r->head_len),
                        uv_buf_init(r->body, (unsigned)r->body_len)};
    llhttp_init(&c->parser, HTTP_RESPONSE, &parser_settings);
    c->parser.data = c;
    r->write_req.data = c;
    int err =
        uv_write(&r->write_req, (uv_stream_t *)&c->tcp, bufs, r->body_len ? 2 : 1, on_head_written);
    r->writing = err == 0;
    return err;
}

static void on_connect(uv_connect_t *req, int status)
{
    rt_conn_t *c = req->data;
    rw_runtime_t *rt = c->rt;
    if (c->closing)
        return; /* dropped meanwhile; whoever dropped it handled the request */
    if (status == 0)
        status = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    void (*cb)(rw_runtime_t *, int) = rt->on_connected;
    rt->on_connected = NULL;
    if (status < 0) {
        conn_close(c);
        if (rt->req.active)
            request_finish(rt, status);
        if (cb != NULL)
            cb(rt, status);
        return;
    }
    c->connected = true;
    uv_tcp_nodelay(&c->tcp, 1);
    if (rt->req.active) {
        int err = request_write(rt);
        if (err < 0)
            request_fail(rt, err);
    }
    if (cb != NULL)
        cb(rt, 0);
}

/* Opens a new connection; on_connect continues. */
static int conn_open(rw_runtime_t *rt)
{
    settings_once();
    rt_conn_t *c = calloc(1, sizeof *c);
    if (c == NULL)
        return UV_ENOMEM;
    c->rt = rt;
    int err = uv_tcp_init(&rt->loop, &c->tcp);
    if (err < 0) {
        free(c);
        return err;
    }
    c->tcp.data = c;
    c->connect_req.data = c;
    rt->conn = c;
    err = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&rt->addr, on_connect);
    if (err < 0) {
        conn_close(c);
        return err;
    }
    return 0;
}

static int request_send(rw_runtime_t *rt)
{
    rt_conn_t *c = rt->conn;
    rt_request_t *r = &rt->req;
    r->response_started = r->complete = false;
    r->status = 0;
    if (c != NULL && (c->dead || c->closing)) {
        conn_close(c);
        c = NULL;
    }
    if (c == NULL)
        return conn_open(rt); /* the head goes out from on_connect */
    if (!c->connected)
        return 0; /* connecting: on_connect writes it */
    return request_write(rt);
}

/* Runs a deferred done callback for requests that fail at once: callers are
 * promised that done never runs inside rw__rt_request. */
typedef struct deferred_s {
    uv_idle_t idle;
    rw_runtime_t *rt;
    int err;
    void (*cb)(rw_runtime_t *rt, int err);
} deferred_t;

static void on_deferred_closed(uv_handle_t *h)
{
    free(h->data);
}

static void on_deferred(uv_idle_t *idle)
{
    deferred_t *d = idle->data;
    uv_idle_stop(idle);
    uv_close((uv_handle_t *)idle, on_deferred_closed);
    d->cb(d->rt, d->err);
}

static void defer(rw_runtime_t *rt, void (*cb)(rw_runtime_t *rt, int err), int err)
{
    deferred_t *d = malloc(sizeof *d);
    if (d == NULL)
        abort(); /* fixed size */
    d->rt = rt;
    d->err = err;
    d->cb = cb;
    uv_idle_init(&rt->loop, &d->idle);
    d->idle.data = d;
    uv_idle_start(&d->idle, on_deferred);
}

int rw__rt_request(rw_runtime_t *rt, rt_req_kind_t kind, char *head, size_t head_len, char *body,
                   size_t body_len, rt_done_cb done)
{
    rt_request_t *r = &rt->req;
    if (r->active) {
        free(head);
        free(body);
        return UV_EBUSY;
    }
    if (kind == REQ_STREAM && (rt->conn == NULL || !rt->conn->connected || rt->conn->dead)) {
        free(head);
        free(body);
        return UV_ENOTCONN;
    }
    request_reset(r);
    r->kind = kind;
    r->active = true;
    r->head = head;
    r->head_len = head_len;
    r->body = body;
    r->body_len = body_len;
    r->done = done;
    int err = request_send(rt);
    if (err < 0) {
        r->active = false;
        r->done = NULL;
        return err;
    }
    return 0;
}

void rw__rt_connect(rw_runtime_t *rt, void (*cb)(rw_runtime_t *rt, int err))
{
    rt_conn_t *c = rt->conn;
    if (c != NULL && c->connected && !c->dead && !c->closing) {
        defer(rt, cb, 0);
        return;
    }
    if (c != NULL && !c->connected && !c->closing) {
        rt->on_connected = cb; /* already connecting */
        return;
    }
    if (c != NULL)
        conn_close(c);
    rt->on_connected = cb;
    int err = conn_open(rt);
    if (err < 0) {
        rt->on_connected = NULL;
        defer(rt, cb, err);
    }
}

int rw__rt_write(rw_runtime_t *rt, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                 uv_write_cb cb)
{
    rt_conn_t *c = rt->conn;
    if (c == NULL || !c->connected || c->closing)
        return UV_ENOTCONN;
    return uv_write(req, (uv_stream_t *)&c->tcp, bufs, n, cb);
}
