/* Private to libreelway_runtime: the runtime's state and its HTTP/1.1 client
 * for the Runtime API (client.c), shared with the invocation logic (runtime.c). */
#ifndef REELWAY_RUNTIME_INTERNAL_H
#define REELWAY_RUNTIME_INTERNAL_H

#include "reelway/runtime.h"

#include <llhttp.h>
#include <stdbool.h>
#include <sys/socket.h>

#define RT_API_VERSION "2018-06-01"
#define RT_USER_AGENT "reelway-runtime/0.1"
/* An event larger than this is refused without calling the handler (Lambda's
 * own limits are 6 MB buffered and 1 MB asynchronous; this is a safety net). */
#define RT_MAX_EVENT (32u * 1024 * 1024)
/* A header value we keep from /next (client context and identity are the
 * longest: 3583 bytes of base64 at most on Lambda). */
#define RT_MAX_HEADER_VALUE (16u * 1024)
/* What we keep of an error answer's body, for the log. */
#define RT_MAX_ERROR_BODY 1024
/* How long a failed init waits for /init/error's answer before exiting anyway. */
#define RT_INIT_ERROR_WAIT_MS 3000

typedef enum rt_req_kind_e {
    REQ_NONE,
    REQ_NEXT,       /* GET  /runtime/invocation/next */
    REQ_RESPONSE,   /* POST /runtime/invocation/{id}/response, buffered */
    REQ_STREAM,     /* POST /runtime/invocation/{id}/response, streaming (chunked) */
    REQ_ERROR,      /* POST /runtime/invocation/{id}/error */
    REQ_INIT_ERROR, /* POST /runtime/init/error */
} rt_req_kind_t;

/* Called once when the request's response has arrived (err 0, status set) or
 * the request failed (err < 0, status 0). Runs on the loop thread, outside
 * llhttp's callbacks. */
typedef void (*rt_done_cb)(rw_runtime_t *rt, int err, int status);

typedef struct rt_conn_s rt_conn_t;

/* The one request in flight (the Runtime API is used one request at a time). */
typedef struct rt_request_s {
    rt_req_kind_t kind;
    bool active;
    char *head; /* owned; kept until the response, for one retry */
    size_t head_len;
    char *body; /* owned (buffered kinds) */
    size_t body_len;
    rt_done_cb done;
    uv_write_t write_req;
    bool writing;  /* write_req is with libuv: head, body and write_req stay put */
    int fail_err;  /* a failure waiting for the write to end (its callback goes on) */
    bool fail_stale;
    bool retried;
    bool response_started; /* a byte of the response arrived */
    /* the response */
    int status;
    bool complete;
    char field[64]; /* header name being parsed (longer names are not ours) */
    size_t field_len;
    bool field_overflow;
    char *value; /* header value being parsed */
    size_t value_len, value_cap;
    bool value_overflow;
    char *rbody; /* /next: the event; others: the start of an error body */
    size_t rbody_len, rbody_cap, rbody_limit;
    bool rbody_overflow, rbody_nomem;
} rt_request_t;

/* What /next told us, moved into the invocation at dispatch. */
typedef struct rt_next_s {
    char *request_id, *deadline, *arn, *trace_id, *client_context, *cognito_identity;
} rt_next_t;

struct rt_conn_s {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    llhttp_t parser;
    rw_runtime_t *rt;
    bool connected;
    bool dead; /* must not carry another request (close after this one) */
    bool closing;
    unsigned requests; /* requests completed on it (a reused connection may be stale) */
    char rbuf[64 * 1024];
};

typedef struct rt_handler_s {
    char *name;
    int kind; /* handler_kind_t in runtime.c */
    rw_runtime_handler_cb cb;
    rw_runtime_stream_cb stream_cb;
} rt_handler_t;

struct rw_runtime_s {
    uv_loop_t loop;
    uv_signal_t sigterm, sigint;
    uv_timer_t init_error_timer; /* bounds the wait for /init/error's answer */
    bool loop_ready, signals_open, ran, init_error_timer_open;
    /* handlers */
    rt_handler_t *handlers;
    size_t n_handlers, cap_handlers;
    const rt_handler_t *handler;
    /* init and app state */
    rw_runtime_init_cb init;
    void *init_arg;
    char *init_error_type, *init_error_message;
    void *app;
    void (*app_cleanup)(void *app);
    /* environment */
    char *function_name, *function_version, *log_group, *log_stream;
    int memory_mb;
    /* the Runtime API */
    char *host_header; /* host[:port] as given, for Host: */
    char *path_prefix; /* "" or "/.rt" and the like */
    struct sockaddr_storage addr;
    rt_conn_t *conn; /* current connection, or NULL */
    rt_request_t req;
    rt_next_t next;
    void (*on_connected)(rw_runtime_t *rt, int err); /* rw__rt_connect's callback */
    /* lifecycle */
    struct inv_s *inv; /* the invocation running, or NULL */
    bool stopping, stopped;
    int exit_status;
};

/* ---- client.c ---- */

/** Parses "[http://]host[:port][/prefix]" into rt (host header, prefix,
 *  resolved address). Blocking getaddrinfo: called before the loop runs. */
int rw__rt_parse_api(rw_runtime_t *rt, const char *api);

/**
 * Sends a request: the head (and body for buffered kinds), both owned by the
 * client from now on (freed even on failure). Connects first if needed.
 * REQ_STREAM needs a connected connection (see rw__rt_connect) and sends only
 * the head: write the chunked body with rw__rt_write. done runs once, never
 * inside this call. Returns 0 or a negative code (done is then not called).
 */
int rw__rt_request(rw_runtime_t *rt, rt_req_kind_t kind, char *head, size_t head_len, char *body,
                   size_t body_len, rt_done_cb done);

/** Makes sure a connection is open; cb(rt, err) runs once, never inside this call. */
void rw__rt_connect(rw_runtime_t *rt, void (*cb)(rw_runtime_t *rt, int err));

/** Writes bufs on the current connection (the body of a REQ_STREAM). Returns
 *  0 (cb will run) or a negative code (no connection; cb will not run). */
int rw__rt_write(rw_runtime_t *rt, uv_write_t *req, const uv_buf_t *bufs, unsigned n,
                 uv_write_cb cb);

/** Closes the current connection (a request in flight fails with UV_ECANCELED). */
void rw__rt_drop(rw_runtime_t *rt);

/** Frees the /next headers kept in next and empties it. */
void rw__rt_next_clear(rt_next_t *next);

#endif
