/* The runtime's life: environment, init, the next -> handler -> answer loop,
 * buffered, blocking and streaming invocations, logging, and SIGTERM. */
#include "internal.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef enum handler_kind_e { KIND_BUFFERED, KIND_BLOCKING, KIND_STREAM } handler_kind_t;

/* One invocation. The public part comes first so that rw_invocation_t * and
 * inv_t * convert both ways. */
typedef struct inv_s {
    rw_invocation_t pub;
    rw_stream_t body; /* streaming: the response body */
    rw_runtime_t *rt;
    handler_kind_t kind;
    bool body_open;      /* body initialised and not closed yet */
    bool in_work;        /* a blocking handler is running on the threadpool */
    bool completed;      /* the handler completed it (respond, fail or end) */
    bool response_done;  /* the Runtime API answered our POST, or the POST failed */
    bool runtime_failed; /* the Runtime API side is gone: send nothing more */
    bool started;        /* streaming: the POST head went out */
    bool terminated;     /* streaming: the last chunk (and trailers) went out */
    bool final_pending;  /* streaming: impl->final waits for the API's answer */
    bool writing;        /* streaming: a chunk's uv_write is in flight */
    bool term_writing;   /* streaming: the terminator's uv_write is in flight */
    bool finishing;      /* being released */
    bool fail_pending;   /* streaming: failed; the trailers follow the bytes written */
    int body_err;        /* what the body was destroyed with (RW_EPREMATURE for a bare destroy) */
    int api_err;         /* why the Runtime API side failed */
    /* the answer */
    bool is_error;
    char *answer;
    size_t answer_len;
    const char *content_type;
    char *error_type, *error_message;
    /* streaming */
    char *stream_content_type;
    uv_write_t chunk_req;
    char size_line[24];
    rw_chunk_t chunk;
    uv_write_t term_req;
    char *terminator;
    /* storage behind pub */
    rt_next_t next;
    char *payload;
    cJSON *event;
    uv_work_t work;
} inv_t;

static void poll_next(rw_runtime_t *rt);
static void maybe_finish(inv_t *inv);
static void post_answer(inv_t *inv);
static void stream_error(inv_t *inv);

#define INV(p) ((inv_t *)(p))
/* The body's data pointer is the handler's: find the invocation around it. */
#define BODY_INV(s) ((inv_t *)((char *)(s)-offsetof(inv_t, body)))

/* ---- time and logs ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void log_v(const char *request_id, rw_runtime_level_t level, const char *fmt, va_list ap)
{
    char small[1024];
    char *msg = small;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n >= (int)sizeof small) {
        /* A long message gets its own buffer; if that fails, the start will do. */
        char *big = malloc((size_t)n + 1);
        if (big != NULL) {
            vsnprintf(big, (size_t)n + 1, fmt, ap2);
            msg = big;
        }
    }
    va_end(ap2);
    size_t cap = strlen(msg) + 128;
    char *line = malloc(cap);
    if (line != NULL) {
        size_t len = rw_runtime_log_format(line, cap, now_ms(), request_id, level, msg);
        /* One write per line keeps lines whole between threads and processes. */
        for (size_t off = 0; off < len;) {
            ssize_t w = write(STDOUT_FILENO, line + off, len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        free(line);
    }
    if (msg != small)
        free(msg);
}

void rw_runtime_log(const rw_invocation_t *inv, rw_runtime_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(inv ? inv->ctx.request_id : NULL, level, fmt, ap);
    va_end(ap);
}

static void rt_log(const inv_t *inv, rw_runtime_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void rt_log(const inv_t *inv, rw_runtime_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(inv ? inv->pub.ctx.request_id : NULL, level, fmt, ap);
    va_end(ap);
}

int64_t rw_runtime_remaining_ms(const rw_invocation_t *inv)
{
    return inv->ctx.deadline_ms - now_ms();
}

/* ---- the runtime object ---- */

rw_runtime_t *rw_runtime_new(void)
{
    rw_runtime_t *rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        abort(); /* fixed size */
    if (uv_loop_init(&rt->loop) != 0)
        abort();
    rt->loop_ready = true;
    return rt;
}

uv_loop_t *rw_runtime_loop(rw_runtime_t *rt)
{
    return &rt->loop;
}

static int add_handler(rw_runtime_t *rt, const char *name, handler_kind_t kind,
                       rw_runtime_handler_cb cb, rw_runtime_stream_cb stream_cb)
{
    if (name == NULL || *name == '\0' || (cb == NULL && stream_cb == NULL))
        return UV_EINVAL;
    for (size_t i = 0; i < rt->n_handlers; i++)
        if (strcmp(rt->handlers[i].name, name) == 0)
            return UV_EEXIST;
    if (rt->n_handlers == rt->cap_handlers) {
        size_t cap = rt->cap_handlers ? rt->cap_handlers * 2 : 8;
        rt_handler_t *h = realloc(rt->handlers, cap * sizeof *h);
        if (h == NULL)
            return UV_ENOMEM;
        rt->handlers = h;
        rt->cap_handlers = cap;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return UV_ENOMEM;
    rt->handlers[rt->n_handlers++] =
        (rt_handler_t){.name = copy, .kind = kind, .cb = cb, .stream_cb = stream_cb};
    return 0;
}

int rw_runtime_register(rw_runtime_t *rt, const char *name, rw_runtime_handler_cb cb)
{
    return add_handler(rt, name, KIND_BUFFERED, cb, NULL);
}

int rw_runtime_register_blocking(rw_runtime_t *rt, const char *name, rw_runtime_handler_cb cb)
{
    return add_handler(rt, name, KIND_BLOCKING, cb, NULL);
}

int rw_runtime_register_stream(rw_runtime_t *rt, const char *name, rw_runtime_stream_cb cb)
{
    return add_handler(rt, name, KIND_STREAM, NULL, cb);
}

void rw_runtime_on_init(rw_runtime_t *rt, rw_runtime_init_cb init, void *arg)
{
    rt->init = init;
    rt->init_arg = arg;
}

int rw_runtime_init_fail(rw_runtime_t *rt, const char *type, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    free(rt->init_error_type);
    free(rt->init_error_message);
    rt->init_error_type = strdup(type ? type : "Runtime.InitError");
    rt->init_error_message = strdup(msg);
    return RW_ECONFIG;
}

void rw_runtime_set_app(rw_runtime_t *rt, void *app, void (*cleanup)(void *app))
{
    rt->app = app;
    rt->app_cleanup = cleanup;
}

void *rw_runtime_app(const rw_runtime_t *rt)
{
    return rt->app;
}

void rw_runtime_free(rw_runtime_t *rt)
{
    if (rt == NULL)
        return;
    if (rt->loop_ready) {
        /* run() was never called (or failed early): nothing but the loop is open. */
        rw_stream_loop_close(&rt->loop);
        uv_run(&rt->loop, UV_RUN_DEFAULT);
        uv_loop_close(&rt->loop);
    }
    for (size_t i = 0; i < rt->n_handlers; i++)
        free(rt->handlers[i].name);
    free(rt->handlers);
    free(rt->init_error_type);
    free(rt->init_error_message);
    free(rt->function_name);
    free(rt->function_version);
    free(rt->log_group);
    free(rt->log_stream);
    free(rt->host_header);
    free(rt->path_prefix);
    rw__rt_next_clear(&rt->next);
    free(rt->req.head);
    free(rt->req.body);
    free(rt->req.value);
    free(rt->req.rbody);
    free(rt);
}

/* ---- stopping ---- */

static void shutdown_now(rw_runtime_t *rt)
{
    if (rt->stopped)
        return;
    rt->stopped = true;
    rw__rt_drop(rt);
    if (rt->init_error_timer_open) {
        rt->init_error_timer_open = false;
        uv_close((uv_handle_t *)&rt->init_error_timer, NULL);
    }
    if (rt->signals_open) {
        rt->signals_open = false;
        uv_close((uv_handle_t *)&rt->sigterm, NULL);
        uv_close((uv_handle_t *)&rt->sigint, NULL);
    }
}

void rw_runtime_stop(rw_runtime_t *rt)
{
    if (rt->stopping)
        return;
    rt->stopping = true;
    if (rt->inv == NULL)
        shutdown_now(rt);
    /* else: the invocation finishes, then inv_release stops. */
}

static void fatal(rw_runtime_t *rt, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fatal(rw_runtime_t *rt, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(NULL, RW_RUNTIME_FATAL, fmt, ap);
    va_end(ap);
    rt->exit_status = 1;
    rt->stopping = true;
    shutdown_now(rt);
}

static void on_signal(uv_signal_t *s, int signum)
{
    rw_runtime_stop(s->data);
}

/* ---- request heads ---- */

/* Appends the request id to a path, percent-encoding what is not plain. */
static void append_id(char *out, size_t cap, size_t *len, const char *id)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)id; *p && *len + 4 < cap; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '_' || *p == '.') {
            out[(*len)++] = (char)*p;
        } else {
            out[(*len)++] = '%';
            out[(*len)++] = hex[*p >> 4];
            out[(*len)++] = hex[*p & 15];
        }
    }
    out[*len] = '\0';
}

/* Header values we send must not break the head: CR, LF and NUL become spaces. */
static void sanitize(char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n')
            *s = ' ';
}

/* Builds "METHOD <prefix>/2018-06-01/runtime/<what> HTTP/1.1" and the common
 * headers, then `extra` (complete header lines), then the blank line. Returns a
 * malloc'd head or NULL. */
static char *make_head(rw_runtime_t *rt, const char *method, const char *what, const char *id,
                       const char *tail, const char *extra, size_t *len)
{
    char path[1024];
    size_t plen = 0;
    int n = snprintf(path, sizeof path, "%s/" RT_API_VERSION "/runtime/%s", rt->path_prefix, what);
    plen = n < 0 ? 0 : (size_t)n;
    if (plen >= sizeof path)
        plen = sizeof path - 1;
    if (id != NULL) {
        append_id(path, sizeof path, &plen, id);
        snprintf(path + plen, sizeof path - plen, "%s", tail ? tail : "");
    }
    size_t cap = strlen(path) + strlen(rt->host_header) + (extra ? strlen(extra) : 0) + 128;
    char *head = malloc(cap);
    if (head == NULL)
        return NULL;
    n = snprintf(head, cap, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: " RT_USER_AGENT "\r\n%s\r\n",
                 method, path, rt->host_header, extra ? extra : "");
    *len = (size_t)n;
    return head;
}

/* ---- init ---- */

static void on_init_error_posted(rw_runtime_t *rt, int err, int status)
{
    if (err < 0)
        rt_log(NULL, RW_RUNTIME_ERROR, "could not post the init error: %s", rw_strerror(err));
    rt->exit_status = 1;
    rt->stopping = true;
    shutdown_now(rt);
}

/* Lambda answers /init/error at once; an emulator may hold the answer until
 * an invocation arrives. The process is done either way. */
static void on_init_error_wait(uv_timer_t *t)
{
    rw_runtime_t *rt = t->data;
    rt_log(NULL, RW_RUNTIME_WARN, "no answer to /init/error after %d ms: exiting",
           RT_INIT_ERROR_WAIT_MS);
    rt->exit_status = 1;
    rt->stopping = true;
    shutdown_now(rt);
}

static void init_error(rw_runtime_t *rt, const char *type, const char *message)
{
    rt_log(NULL, RW_RUNTIME_ERROR, "Init Error\t%s: %s", type, message);
    size_t body_len = 0;
    char *body = rw_runtime_error_json(type, message, &body_len);
    char extra[512];
    char type_clean[256];
    snprintf(type_clean, sizeof type_clean, "%s", type);
    sanitize(type_clean);
    snprintf(extra, sizeof extra,
             "Lambda-Runtime-Function-Error-Type: %s\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n",
             type_clean, body_len);
    size_t head_len = 0;
    char *head = make_head(rt, "POST", "init/error", NULL, NULL, extra, &head_len);
    int err = head && body ? rw__rt_request(rt, REQ_INIT_ERROR, head, head_len, body, body_len,
                                            on_init_error_posted)
                           : UV_ENOMEM;
    if (!head || !body) {
        free(head);
        free(body);
    }
    if (err < 0) {
        rt->exit_status = 1;
        rt->stopping = true;
        shutdown_now(rt);
        return;
    }
    uv_timer_init(&rt->loop, &rt->init_error_timer);
    rt->init_error_timer.data = rt;
    rt->init_error_timer_open = true;
    uv_timer_start(&rt->init_error_timer, on_init_error_wait, RT_INIT_ERROR_WAIT_MS, 0);
}

static const rt_handler_t *find_handler(rw_runtime_t *rt, const char *name)
{
    if (name == NULL || *name == '\0')
        return rt->n_handlers == 1 ? &rt->handlers[0] : NULL;
    for (size_t i = 0; i < rt->n_handlers; i++)
        if (strcmp(rt->handlers[i].name, name) == 0)
            return &rt->handlers[i];
    /* Lambda's "file.function" form: the part after the last dot. */
    const char *dot = strrchr(name, '.');
    if (dot != NULL && dot[1] != '\0')
        return find_handler(rt, dot + 1);
    return NULL;
}

static char *env_dup(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    char *s = strdup(v && *v ? v : fallback);
    if (s == NULL)
        abort(); /* small and at start */
    return s;
}

int rw_runtime_run(rw_runtime_t *rt)
{
    if (rt->ran)
        return 1;
    rt->ran = true;
    /* A closed Runtime API connection must fail a write, not kill the process. */
    signal(SIGPIPE, SIG_IGN);

    rt->function_name = env_dup("AWS_LAMBDA_FUNCTION_NAME", "");
    rt->function_version = env_dup("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
    rt->log_group = env_dup("AWS_LAMBDA_LOG_GROUP_NAME", "");
    rt->log_stream = env_dup("AWS_LAMBDA_LOG_STREAM_NAME", "");
    const char *mem = getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE");
    rt->memory_mb = mem ? atoi(mem) : 0;

    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
    int err = rw__rt_parse_api(rt, api);
    if (err < 0) {
        fprintf(stderr,
                "reelway runtime: AWS_LAMBDA_RUNTIME_API=%s is not a usable host:port "
                "(%s)\n",
                api ? api : "(unset)", rw_strerror(err));
        return 1;
    }

    uv_signal_init(&rt->loop, &rt->sigterm);
    uv_signal_init(&rt->loop, &rt->sigint);
    rt->sigterm.data = rt->sigint.data = rt;
    uv_signal_start(&rt->sigterm, on_signal, SIGTERM);
    uv_signal_start(&rt->sigint, on_signal, SIGINT);
    rt->signals_open = true;

    const char *handler_name = getenv("_HANDLER");
    rt->handler = find_handler(rt, handler_name);
    if (rt->handler == NULL) {
        char names[1024] = "";
        size_t used = 0;
        for (size_t i = 0; i < rt->n_handlers && used < sizeof names; i++)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                                     rt->handlers[i].name);
        char msg[1400];
        snprintf(msg, sizeof msg, "no handler named \"%s\" (this function has: %s)",
                 handler_name ? handler_name : "", names);
        init_error(rt, "Runtime.HandlerNotFound", msg);
    } else if (rt->init != NULL) {
        int rc = rt->init(rt, rt->init_arg);
        if (rc != 0)
            init_error(rt, rt->init_error_type ? rt->init_error_type : "Runtime.InitError",
                       rt->init_error_message ? rt->init_error_message : rw_strerror(rc));
        else
            poll_next(rt);
    } else {
        poll_next(rt);
    }

    uv_run(&rt->loop, UV_RUN_DEFAULT);
    if (rt->app_cleanup != NULL) {
        rt->app_cleanup(rt->app);
        rt->app_cleanup = NULL;
        rt->app = NULL;
    }
    rw_stream_loop_close(&rt->loop);
    uv_run(&rt->loop, UV_RUN_DEFAULT);
    rt->loop_ready = false;
    if (uv_loop_close(&rt->loop) != 0) {
        fprintf(stderr, "reelway runtime: handles were left open on the loop at exit\n");
        return 1;
    }
    return rt->exit_status;
}

/* ---- next ---- */

static void dispatch(inv_t *inv);

static void on_next(rw_runtime_t *rt, int err, int status)
{
    if (rt->stopped)
        return; /* dropped by a stop: nothing to do */
    if (err < 0) {
        fatal(rt, "the Runtime API at %s is unreachable: %s", rt->host_header, rw_strerror(err));
        return;
    }
    rt_request_t *r = &rt->req;
    if (status != 200) {
        fatal(rt, "the Runtime API answered %d to /invocation/next: %.512s", status,
              r->rbody ? r->rbody : "");
        return;
    }
    if (rt->next.request_id == NULL || *rt->next.request_id == '\0') {
        fatal(rt, "the Runtime API sent an event without Lambda-Runtime-Aws-Request-Id");
        return;
    }
    inv_t *inv = calloc(1, sizeof *inv);
    if (inv == NULL)
        abort(); /* fixed size */
    inv->rt = rt;
    inv->kind = (handler_kind_t)rt->handler->kind;
    inv->next = rt->next;
    memset(&rt->next, 0, sizeof rt->next);
    inv->payload = r->rbody;
    inv->pub.payload_len = r->rbody_len;
    r->rbody = NULL;
    r->rbody_len = r->rbody_cap = 0;
    bool too_large = r->rbody_overflow, nomem = r->rbody_nomem;
    if (inv->payload == NULL) {
        inv->payload = strdup("");
        inv->pub.payload_len = 0;
        if (inv->payload == NULL)
            abort();
    }
    if (inv->pub.payload_len > 0)
        inv->event = cJSON_ParseWithLength(inv->payload, inv->pub.payload_len);

    rw_invocation_t *pub = &inv->pub;
    pub->runtime = rt;
    pub->app = rt->app;
    pub->event = inv->event;
    pub->payload = inv->payload;
    rw_runtime_context_t *ctx = &pub->ctx;
    ctx->request_id = inv->next.request_id;
    ctx->deadline_ms = inv->next.deadline ? strtoll(inv->next.deadline, NULL, 10) : 0;
    ctx->invoked_function_arn = inv->next.arn ? inv->next.arn : "";
    ctx->trace_id = inv->next.trace_id;
    ctx->client_context = inv->next.client_context;
    ctx->cognito_identity = inv->next.cognito_identity;
    ctx->function_name = rt->function_name;
    ctx->function_version = rt->function_version;
    ctx->memory_limit_mb = rt->memory_mb;
    ctx->log_group_name = rt->log_group;
    ctx->log_stream_name = rt->log_stream;
    /* As Lambda's runtimes do, for the X-Ray SDK and anyone reading it. */
    if (ctx->trace_id != NULL)
        setenv("_X_AMZN_TRACE_ID", ctx->trace_id, 1);
    else
        unsetenv("_X_AMZN_TRACE_ID");
    rt->inv = inv;

    if (too_large || nomem) {
        inv->kind = KIND_BUFFERED; /* answer with an error, without the handler */
        rw_runtime_fail(pub, too_large ? "Runtime.EventTooLarge" : "Runtime.OutOfMemory",
                        "the event could not be received (%s)",
                        too_large ? "larger than the runtime accepts" : "out of memory");
        return;
    }
    dispatch(inv);
}

static void poll_next(rw_runtime_t *rt)
{
    if (rt->stopping) {
        shutdown_now(rt);
        return;
    }
    size_t head_len = 0;
    char *head = make_head(rt, "GET", "invocation/next", NULL, NULL, NULL, &head_len);
    int err = head ? rw__rt_request(rt, REQ_NEXT, head, head_len, NULL, 0, on_next) : UV_ENOMEM;
    if (err < 0)
        fatal(rt, "cannot ask the Runtime API for the next event: %s", rw_strerror(err));
}

/* ---- the invocation's end ---- */

static void inv_release(inv_t *inv)
{
    rw_runtime_t *rt = inv->rt;
    rt->inv = NULL;
    rw__rt_next_clear(&inv->next);
    free(inv->payload);
    cJSON_Delete(inv->event);
    free(inv->answer);
    free(inv->error_type);
    free(inv->error_message);
    free(inv->stream_content_type);
    free(inv->terminator);
    free(inv);
    poll_next(rt); /* or stop, if asked meanwhile */
}

static void on_body_closed(rw_stream_t *s)
{
    inv_release(BODY_INV(s));
}

/* Releases the invocation once the handler completed it, the Runtime API
 * answered (or failed), and no write of ours is in flight. */
static void maybe_finish(inv_t *inv)
{
    if (inv->finishing || !inv->completed || !inv->response_done || inv->writing ||
        inv->term_writing)
        return;
    inv->finishing = true;
    if (inv->body_open) {
        inv->body_open = false;
        rw_stream_close(&inv->body, on_body_closed); /* its memory is inv's */
        return;
    }
    inv_release(inv);
}

/* Logs what became of a POST of ours. */
static void report_post(inv_t *inv, int err, int status)
{
    const char *body = inv->rt->req.rbody ? inv->rt->req.rbody : "";
    if (err < 0)
        rt_log(inv, RW_RUNTIME_ERROR, "the Runtime API did not take the answer: %s",
               rw_strerror(err));
    else if (status == 413)
        rt_log(inv, RW_RUNTIME_ERROR,
               "Function.ResponseSizeTooLarge: the response is larger than the Runtime API "
               "accepts (413): %.512s",
               body);
    else if (status / 100 != 2)
        rt_log(inv, RW_RUNTIME_ERROR, "the Runtime API refused the answer (%d): %.512s", status,
               body);
}

static void on_answer_posted(rw_runtime_t *rt, int err, int status)
{
    inv_t *inv = rt->inv;
    inv->response_done = true;
    report_post(inv, err, status);
    maybe_finish(inv);
}

/* Posts a buffered answer (or an error before any streamed byte). */
static void post_answer(inv_t *inv)
{
    rw_runtime_t *rt = inv->rt;
    if (rt->stopped) {
        inv->response_done = true;
        maybe_finish(inv);
        return;
    }
    char extra[512];
    char *body;
    size_t body_len = 0;
    rt_req_kind_t kind;
    const char *what;
    if (inv->is_error) {
        body = rw_runtime_error_json(inv->error_type, inv->error_message, &body_len);
        char type[256];
        snprintf(type, sizeof type, "%s", inv->error_type);
        sanitize(type);
        snprintf(extra, sizeof extra,
                 "Lambda-Runtime-Function-Error-Type: %s\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\n",
                 type, body_len);
        kind = REQ_ERROR;
        what = "/error";
    } else {
        body = inv->answer;
        body_len = inv->answer_len;
        inv->answer = NULL;
        char ct[256];
        snprintf(ct, sizeof ct, "%s", inv->content_type);
        sanitize(ct);
        snprintf(extra, sizeof extra, "Content-Type: %s\r\nContent-Length: %zu\r\n", ct, body_len);
        kind = REQ_RESPONSE;
        what = "/response";
    }
    size_t head_len = 0;
    char *head =
        make_head(rt, "POST", "invocation/", inv->pub.ctx.request_id, what, extra, &head_len);
    int err = UV_ENOMEM;
    if (head != NULL && (body != NULL || body_len == 0))
        err = rw__rt_request(rt, kind, head, head_len, body, body_len, on_answer_posted);
    else {
        free(head);
        free(body);
    }
    if (err < 0) {
        inv->response_done = true;
        report_post(inv, err, 0);
        maybe_finish(inv);
    }
}

/* ---- buffered answers ---- */

/* The handler has recorded its answer. */
static void complete_buffered(inv_t *inv)
{
    inv->completed = true;
    if (inv->in_work)
        return; /* the blocking handler's after-work callback posts it */
    post_answer(inv);
}

static int check_buffered(inv_t *inv)
{
    if (inv->completed)
        return UV_EALREADY;
    if (inv->kind == KIND_STREAM)
        return UV_EINVAL;
    return 0;
}

static void set_error(inv_t *inv, const char *type, const char *message)
{
    free(inv->error_type);
    free(inv->error_message);
    inv->is_error = true;
    inv->error_type = strdup(type ? type : "Error");
    inv->error_message = strdup(message ? message : "");
    if (inv->error_type == NULL || inv->error_message == NULL)
        abort(); /* short strings */
}

int rw_runtime_respond_json(rw_invocation_t *pub, cJSON *doc)
{
    inv_t *inv = INV(pub);
    int err = check_buffered(inv);
    if (err < 0) {
        cJSON_Delete(doc);
        return err;
    }
    char *text = doc ? cJSON_PrintUnformatted(doc) : strdup("null");
    cJSON_Delete(doc);
    if (text == NULL) {
        set_error(inv, "Runtime.OutOfMemory", "the answer could not be serialised");
        complete_buffered(inv);
        return UV_ENOMEM;
    }
    inv->answer = text;
    inv->answer_len = strlen(text);
    inv->content_type = "application/json";
    complete_buffered(inv);
    return 0;
}

int rw_runtime_respond(rw_invocation_t *pub, const void *bytes, size_t len,
                       const char *content_type)
{
    inv_t *inv = INV(pub);
    int err = check_buffered(inv);
    if (err < 0)
        return err;
    char *copy = malloc(len ? len : 1);
    if (copy == NULL) {
        set_error(inv, "Runtime.OutOfMemory", "the answer could not be copied");
        complete_buffered(inv);
        return UV_ENOMEM;
    }
    if (len)
        memcpy(copy, bytes, len);
    inv->answer = copy;
    inv->answer_len = len;
    /* The caller's string may not outlive the call: keep our own. */
    free(inv->stream_content_type);
    inv->stream_content_type = strdup(content_type ? content_type : "application/octet-stream");
    inv->content_type =
        inv->stream_content_type ? inv->stream_content_type : "application/octet-stream";
    complete_buffered(inv);
    return 0;
}

int rw_runtime_failv(rw_invocation_t *pub, const char *type, const char *fmt, va_list ap)
{
    inv_t *inv = INV(pub);
    if (inv->completed)
        return UV_EALREADY;
    char msg[4096];
    vsnprintf(msg, sizeof msg, fmt, ap);
    set_error(inv, type, msg);
    /* Lambda's runtimes log the failure with the invocation's id. */
    char *doc = rw_runtime_error_json(inv->error_type, inv->error_message, NULL);
    rt_log(inv, RW_RUNTIME_ERROR, "Invoke Error \t%s", doc ? doc : msg);
    free(doc);
    if (inv->kind != KIND_STREAM) {
        complete_buffered(inv);
        return 0;
    }
    inv->completed = true;
    stream_error(inv);
    return 0;
}

int rw_runtime_fail(rw_invocation_t *pub, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = rw_runtime_failv(pub, type, fmt, ap);
    va_end(ap);
    return err;
}

/* ---- blocking handlers ---- */

static void on_work(uv_work_t *w)
{
    inv_t *inv = w->data;
    inv->rt->handler->cb(&inv->pub);
}

static void on_after_work(uv_work_t *w, int status)
{
    inv_t *inv = w->data;
    inv->in_work = false;
    if (!inv->completed)
        set_error(inv, "Runtime.NoResponse", "the handler returned without answering");
    inv->completed = true;
    post_answer(inv);
}

/* ---- streaming ---- */

/* The Runtime API side failed under a streaming invocation: nothing more can
 * be sent; the handler sees its writes fail and still completes. */
static void stream_api_failed(inv_t *inv, int err)
{
    if (inv->runtime_failed)
        return;
    inv->runtime_failed = true;
    inv->api_err = err;
    if (inv->body_open && !rw_stream_destroyed(&inv->body))
        rw_stream_destroy(&inv->body, err);
    if (inv->final_pending) {
        inv->final_pending = false;
        rw_writable_final_done(&inv->body, err);
    }
}

static void on_stream_done(rw_runtime_t *rt, int err, int status)
{
    inv_t *inv = rt->inv;
    inv->response_done = true;
    /* Lambda asks runtimes to close the connection after a streamed response;
     * a response cut short leaves it unusable anyway. */
    rw__rt_drop(rt);
    bool ok = err == 0 && status / 100 == 2 && inv->terminated;
    if (!ok) {
        report_post(inv, err, status);
        stream_api_failed(inv, err < 0 ? err : status == 413 ? RW_ELIMIT : RW_EPREMATURE);
    } else if (inv->final_pending) {
        inv->final_pending = false;
        rw_writable_final_done(&inv->body, 0);
    }
    maybe_finish(inv);
}

/* Sends the streaming POST's head before the first byte of the body. */
static int stream_start(inv_t *inv)
{
    if (inv->started)
        return 0;
    if (inv->runtime_failed)
        return inv->api_err;
    rw_runtime_t *rt = inv->rt;
    if (rt->stopped) {
        stream_api_failed(inv, UV_ECANCELED);
        return UV_ECANCELED;
    }
    char ct[256];
    snprintf(ct, sizeof ct, "%s",
             inv->stream_content_type ? inv->stream_content_type : "application/octet-stream");
    sanitize(ct);
    char extra[600];
    snprintf(extra, sizeof extra,
             "Lambda-Runtime-Function-Response-Mode: streaming\r\n"
             "Transfer-Encoding: chunked\r\n"
             "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n"
             "Content-Type: %s\r\n",
             ct);
    size_t head_len = 0;
    char *head = make_head(rt, "POST", "invocation/", inv->pub.ctx.request_id, "/response", extra,
                           &head_len);
    int err =
        head ? rw__rt_request(rt, REQ_STREAM, head, head_len, NULL, 0, on_stream_done) : UV_ENOMEM;
    if (err < 0) {
        rt_log(inv, RW_RUNTIME_ERROR, "cannot start the streamed response: %s", rw_strerror(err));
        inv->response_done = true;
        stream_api_failed(inv, err);
        return err;
    }
    inv->started = true;
    return 0;
}

static void on_term_written(uv_write_t *w, int status)
{
    inv_t *inv = w->data;
    inv->term_writing = false;
    maybe_finish(inv);
}

/* The last chunk, with Lambda's error trailers when type is not NULL. */
static void send_terminator(inv_t *inv, const char *type, const char *message)
{
    if (inv->terminated || inv->runtime_failed)
        return;
    inv->terminated = true;
    char *doc = NULL, *b64 = NULL;
    size_t cap = 16;
    char type_clean[256] = "";
    if (type != NULL) {
        size_t doc_len = 0;
        doc = rw_runtime_error_json(type, message, &doc_len);
        b64 = doc ? rw_runtime_base64(doc, doc_len) : NULL;
        snprintf(type_clean, sizeof type_clean, "%s", type);
        sanitize(type_clean);
        cap += strlen(type_clean) + (b64 ? strlen(b64) : 0) + 96;
    }
    inv->terminator = malloc(cap);
    if (inv->terminator == NULL)
        abort(); /* a few hundred bytes */
    size_t len;
    if (type != NULL)
        len = (size_t)snprintf(inv->terminator, cap,
                               "0\r\nLambda-Runtime-Function-Error-Type: %s\r\n"
                               "Lambda-Runtime-Function-Error-Body: %s\r\n\r\n",
                               type_clean, b64 ? b64 : "");
    else
        len = (size_t)snprintf(inv->terminator, cap, "0\r\n\r\n");
    free(doc);
    free(b64);
    uv_buf_t buf = uv_buf_init(inv->terminator, (unsigned)len);
    inv->term_req.data = inv;
    inv->term_writing = true;
    int err = rw__rt_write(inv->rt, &inv->term_req, &buf, 1, on_term_written);
    if (err < 0) {
        inv->term_writing = false;
        stream_api_failed(inv, err);
    }
}

/* A failed streaming invocation: an error answer if nothing was sent yet,
 * else the error trailers after what was written. */
static void stream_error(inv_t *inv)
{
    bool open = inv->body_open && !rw_stream_destroyed(&inv->body);
    if (inv->runtime_failed) {
        /* The Runtime API is gone: nobody to tell. */
        if (open)
            rw_stream_destroy(&inv->body, RW_EPREMATURE);
    } else if (!inv->started) {
        /* Nothing was written (the first write starts the response). */
        if (open)
            rw_stream_destroy(&inv->body, RW_EPREMATURE);
        post_answer(inv);
        return;
    } else if (!inv->terminated && open) {
        /* What the handler wrote before failing still goes out: end the body,
         * and its final (body_final) sends the trailers after the last byte. */
        inv->fail_pending = true;
        rw_writable_end(&inv->body);
    } else if (!inv->terminated) {
        send_terminator(inv, inv->error_type, inv->error_message);
    } else {
        rt_log(inv, RW_RUNTIME_WARN,
               "the failure came after the response was complete: "
               "the caller got the whole response");
    }
    maybe_finish(inv);
}

static void on_chunk_written(uv_write_t *w, int status)
{
    inv_t *inv = w->data;
    inv->writing = false;
    rw_chunk_release(&inv->chunk);
    if (status < 0)
        stream_api_failed(inv, status);
    rw_writable_write_done(&inv->body, status);
    maybe_finish(inv);
}

static void body_write(rw_stream_t *s, rw_chunk_t chunk)
{
    inv_t *inv = BODY_INV(s);
    int err = stream_start(inv);
    if (err < 0) {
        rw_chunk_release(&chunk);
        rw_writable_write_done(s, err);
        return;
    }
    /* One chunk of the chunked coding per write, the bytes themselves not copied. */
    int n = snprintf(inv->size_line, sizeof inv->size_line, "%zx\r\n", chunk.len);
    uv_buf_t bufs[3] = {uv_buf_init(inv->size_line, (unsigned)n),
                        uv_buf_init(chunk.base, (unsigned)chunk.len), uv_buf_init("\r\n", 2)};
    inv->chunk = chunk;
    inv->chunk_req.data = inv;
    inv->writing = true;
    err = rw__rt_write(inv->rt, &inv->chunk_req, bufs, 3, on_chunk_written);
    if (err < 0) {
        inv->writing = false;
        rw_chunk_release(&inv->chunk);
        stream_api_failed(inv, err);
        rw_writable_write_done(s, err);
    }
}

static void body_final(rw_stream_t *s)
{
    inv_t *inv = BODY_INV(s);
    inv->final_pending = true;
    if (stream_start(inv) < 0 || inv->runtime_failed) {
        if (inv->final_pending) {
            inv->final_pending = false;
            rw_writable_final_done(s, inv->api_err ? inv->api_err : RW_EPREMATURE);
        }
        return;
    }
    if (inv->fail_pending)
        send_terminator(inv, inv->error_type, inv->error_message);
    else
        send_terminator(inv, NULL, NULL);
    /* final_done follows the Runtime API's answer (on_stream_done): so the
     * handler's 'finish' means Lambda has the whole response. */
}

static void body_destroy(rw_stream_t *s, int err)
{
    inv_t *inv = BODY_INV(s);
    if (inv->finishing)
        return;
    inv->body_err = err != 0 ? err : rw_writable_finished(s) ? 0 : RW_EPREMATURE;
    /* Failed and ended, but destroyed before its final ran (a pipeline that
     * kept writing into the ended body): the trailers go out now. */
    if (inv->fail_pending && !inv->terminated && !inv->runtime_failed)
        send_terminator(inv, inv->error_type, inv->error_message);
}

static const rw_stream_impl_t body_impl = {
    .write = body_write,
    .final = body_final,
    .destroy = body_destroy,
};

int rw_runtime_end(rw_invocation_t *pub)
{
    inv_t *inv = INV(pub);
    if (inv->kind != KIND_STREAM)
        return UV_EINVAL;
    if (inv->completed)
        return UV_EALREADY;
    inv->completed = true;
    if (inv->runtime_failed) {
        maybe_finish(inv);
        return 0;
    }
    if (!rw_stream_destroyed(&inv->body)) {
        rw_writable_end(&inv->body); /* already ended (RW_EWRITEEND) is fine */
        maybe_finish(inv);
        return 0;
    }
    if (inv->body_err == 0) {
        maybe_finish(inv);
        return 0;
    }
    set_error(inv, "Runtime.StreamError", rw_strerror(inv->body_err));
    rt_log(inv, RW_RUNTIME_ERROR, "Invoke Error \tthe response stream failed: %s",
           rw_strerror(inv->body_err));
    stream_error(inv);
    return 0;
}

int rw_runtime_set_content_type(rw_invocation_t *pub, const char *content_type)
{
    inv_t *inv = INV(pub);
    if (inv->kind != KIND_STREAM || content_type == NULL || strpbrk(content_type, "\r\n"))
        return UV_EINVAL;
    if (inv->started)
        return UV_EALREADY;
    char *copy = strdup(content_type);
    if (copy == NULL)
        return UV_ENOMEM;
    free(inv->stream_content_type);
    inv->stream_content_type = copy;
    return 0;
}

int rw_runtime_write_prelude(rw_invocation_t *pub, int status, const cJSON *headers,
                             const cJSON *cookies)
{
    inv_t *inv = INV(pub);
    if (inv->kind != KIND_STREAM)
        return UV_EINVAL;
    if (inv->started || inv->completed)
        return UV_EALREADY;
    size_t len = 0;
    char *bytes = rw_runtime_prelude(status, headers, cookies, &len);
    if (bytes == NULL)
        return (headers && !cJSON_IsObject(headers)) || (cookies && !cJSON_IsArray(cookies))
                   ? UV_EINVAL
                   : UV_ENOMEM;
    int err =
        rw_runtime_set_content_type(pub, "application/vnd.awslambda.http-integration-response");
    rw_chunk_t c;
    if (err == 0)
        err = rw_chunk_copy(&c, bytes, len);
    free(bytes);
    if (err < 0)
        return err;
    return rw_writable_write(&inv->body, c);
}

/* ---- dispatch ---- */

static void on_stream_connected(rw_runtime_t *rt, int err)
{
    inv_t *inv = rt->inv;
    if (err < 0) {
        /* No way to answer: Lambda would see the environment as broken too. */
        inv->completed = inv->response_done = true;
        fatal(rt, "cannot reach the Runtime API to stream a response: %s", rw_strerror(err));
        maybe_finish(inv);
        return;
    }
    rw_stream_opts_t opts = {0};
    err = rw_writable_init(&rt->loop, &inv->body, &body_impl, &opts);
    if (err < 0) {
        rw_runtime_fail(&inv->pub, "Runtime.OutOfMemory", "cannot set up the response stream");
        return;
    }
    inv->body_open = true;
    rt->handler->stream_cb(&inv->pub, &inv->body);
}

static void dispatch(inv_t *inv)
{
    rw_runtime_t *rt = inv->rt;
    switch (inv->kind) {
    case KIND_BUFFERED:
        rt->handler->cb(&inv->pub);
        break;
    case KIND_BLOCKING: {
        inv->in_work = true;
        inv->work.data = inv;
        int err = uv_queue_work(&rt->loop, &inv->work, on_work, on_after_work);
        if (err < 0) {
            inv->in_work = false;
            rw_runtime_fail(&inv->pub, "Runtime.Unavailable", "cannot queue the handler: %s",
                            rw_strerror(err));
        }
        break;
    }
    case KIND_STREAM:
        /* The streamed response goes over the connection /next came on, unless
         * the server closed it: then over a new one, opened before the handler
         * runs so that its first write has somewhere to go. */
        rw__rt_connect(rt, on_stream_connected);
        break;
    }
}
