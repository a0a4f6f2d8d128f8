/* reelway's HTTP/1.1 server: libuv + llhttp, keep-alive, pipelining answered in
 * order, Expect: 100-continue, request bodies read piece by piece with
 * backpressure, responses sized or chunked, limits that answer with JSON errors.
 *
 * Threading: a server lives on one uv loop; every function here must be called
 * on that loop's thread, and every callback runs on it.
 *
 * Request lifecycle: the server calls the handler once the request head is
 * parsed (the body has not been read yet). The handler then reads the body
 * (rw_http_req_read_body: whole, bounded; or rw_http_req_body_start: piece by
 * piece) or ignores it, and answers with rw_http_respond or rw_http_res_start /
 * rw_http_res_write / rw_http_res_end. Every request must be ended exactly once
 * by rw_http_res_end (rw_http_respond ends it), also after an abort. The
 * request's memory stays valid until then.
 */
#ifndef REELWAY_HTTP_H
#define REELWAY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rw_http_server_s rw_http_server_t;
typedef struct rw_http_req_s rw_http_req_t;

/** A header: name and value, not NUL-terminated in general (but see below). */
typedef struct rw_http_header_s {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} rw_http_header_t;

/** Limits of one server. Zero fields take the documented default. */
typedef struct rw_http_limits_s {
    size_t max_header_bytes;        /**< request line + headers; 431 beyond (16 KiB) */
    size_t max_uri_bytes;           /**< request target; 414 beyond (8 KiB) */
    size_t max_headers;             /**< number of header lines; 431 beyond (100) */
    uint64_t header_timeout_ms;     /**< whole head must arrive within; 408 (10 s) */
    uint64_t body_timeout_ms;       /**< longest gap between body reads; 408 (30 s) */
    uint64_t idle_timeout_ms;       /**< keep-alive idle before close (60 s) */
    uint64_t write_timeout_ms;      /**< longest wait for the client to take bytes (60 s) */
    unsigned max_connections;       /**< open connections per server; 503 beyond (10240) */
    size_t max_discard_bytes;       /**< unread body we drain to keep a connection (64 KiB) */
    uint64_t shutdown_timeout_ms;   /**< graceful stop deadline (10 s) */
} rw_http_limits_t;

/** Called with a parsed request head. See the lifecycle at the top. */
typedef void (*rw_http_handler_cb)(rw_http_req_t *req, void *arg);

/** Called once for a request whose client went away or timed out before the end. */
typedef void (*rw_http_abort_cb)(rw_http_req_t *req, int err);

/** Completion of rw_http_req_read_body: status 0, or RW_ELIMIT (body over max),
 *  or a connection error. The body is valid until the request ends. */
typedef void (*rw_http_body_cb)(rw_http_req_t *req, int status, const char *body, size_t len);

/**
 * Piece-by-piece body delivery: `data` is called for each piece (valid only
 * during the call) and may return false to ask for no more data until
 * rw_http_req_body_resume; `end` is called once with 0 at the end of the body or
 * a negative code (RW_ELIMIT, UV_ECONNRESET, RW_ETIMEOUT, ...).
 */
typedef struct rw_http_body_sink_s {
    bool (*data)(rw_http_req_t *req, const char *piece, size_t len);
    void (*end)(rw_http_req_t *req, int status);
} rw_http_body_sink_t;

/** Completion of one rw_http_res_write: 0 or a negative code. */
typedef void (*rw_http_write_cb)(rw_http_req_t *req, int status, void *arg);

/** A parsed request head. Strings are NUL-terminated; valid until the request ends. */
struct rw_http_req_s {
    void *data;                 /**< the handler's (an integration's) */
    void *app;                  /**< the application layer's, beside data (the gateway's
                                     pipeline keeps its per-request state here) */
    rw_http_server_t *server;
    const char *method;         /**< "GET", "POST", ... */
    int method_id;              /**< llhttp's llhttp_method_t */
    const char *target;         /**< raw request target as received */
    size_t target_len;
    const char *path;           /**< target up to '?' (still percent-encoded) */
    size_t path_len;
    const char *query;          /**< after '?', "" when none */
    size_t query_len;
    rw_http_header_t *headers;  /**< arrival order, original case, NUL-terminated strings */
    size_t n_headers;
    int http_major, http_minor;
    bool keep_alive;            /**< the client allows reuse */
    bool has_body;              /**< Content-Length > 0 or chunked */
    bool chunked;
    uint64_t content_length;    /**< when !chunked */
    bool expect_continue;
    char request_id[40];        /**< generated UUID, or adopted from X-Request-Id */
    char remote_ip[48];
    uint64_t start_ns;          /**< uv_hrtime() at the first byte of the request */
    uint64_t bytes_in;          /**< head + body bytes received so far */
    uint64_t bytes_out;         /**< response bytes written so far (head + body) */
    int status;                 /**< response status once started, else 0 */
};

/**
 * Called once per request the handler saw, when it is completely done: ended by
 * the handler and every byte of its response written (or the connection gone).
 * req->status and req->bytes_out are final; req->data is still the handler's
 * (free it here). The request is freed right after.
 */
typedef void (*rw_http_done_cb)(const rw_http_req_t *req, void *arg);

/** Default limits, as documented in rw_http_limits_t. */
void rw_http_limits_default(rw_http_limits_t *limits);

/**
 * Creates a server on loop. `limits` may be NULL for defaults. The handler is
 * called for every request. Returns NULL on out of memory.
 */
rw_http_server_t *rw_http_server_new(uv_loop_t *loop, const rw_http_limits_t *limits,
                                     rw_http_handler_cb handler, void *arg);

/**
 * Listens on host:port (port 0 = any free port; see rw_http_server_port).
 * reuseport sets SO_REUSEPORT so several worker processes share the port.
 * Returns 0 or a negative UV_E* code.
 */
int rw_http_server_listen(rw_http_server_t *s, const char *host, int port, bool reuseport);

/** Listens on an already bound socket fd (ownership passes to the server). */
int rw_http_server_listen_fd(rw_http_server_t *s, int fd);

/** Sets the per-request completion callback (access logs, metrics). */
void rw_http_server_on_done(rw_http_server_t *s, rw_http_done_cb cb, void *arg);

/** The port the server listens on, or a negative code. */
int rw_http_server_port(const rw_http_server_t *s);

/** Open connections right now. */
unsigned rw_http_server_connections(const rw_http_server_t *s);

/**
 * Graceful stop: stops accepting, closes idle connections, lets in-flight
 * requests finish until the shutdown deadline, then closes everything; requests
 * a handler still holds keep the server until they end. done is
 * called once when every connection and handle is closed; the server is freed
 * right after done returns. Calling it twice is an error (returns UV_EALREADY).
 */
int rw_http_server_shutdown(rw_http_server_t *s, void (*done)(void *arg), void *arg);

/** Sets the callback for an aborted request (client gone, timeout). */
void rw_http_req_on_abort(rw_http_req_t *req, rw_http_abort_cb cb);

/** Finds a request header (case-insensitive); returns its value or NULL. The
 *  last occurrence wins; see rw_http_req_header_at for all of them. */
const char *rw_http_req_header(const rw_http_req_t *req, const char *name);

/** True when the request is still connected and its response not yet ended. */
bool rw_http_req_alive(const rw_http_req_t *req);

/**
 * Reads the whole body into memory, up to max_bytes (RW_ELIMIT beyond: the
 * handler answers 413; a Content-Length over the limit fails at once without
 * reading). Sends 100 Continue first when the client asked for it. cb runs once.
 */
int rw_http_req_read_body(rw_http_req_t *req, size_t max_bytes, rw_http_body_cb cb);

/**
 * Delivers the body piece by piece to sink, with backpressure: when sink->data
 * returns false the server stops reading the socket until
 * rw_http_req_body_resume. max_bytes bounds the body (0 = no bound).
 */
int rw_http_req_body_start(rw_http_req_t *req, const rw_http_body_sink_t *sink,
                           uint64_t max_bytes);

/**
 * The trailer fields of a chunked request body (arrival order, NUL-terminated
 * strings), once the body has ended successfully; NULL and *n = 0 otherwise.
 * Valid until the request ends.
 */
const rw_http_header_t *rw_http_req_trailers(const rw_http_req_t *req, size_t *n);

/** Resumes piece delivery after sink->data returned false. */
void rw_http_req_body_resume(rw_http_req_t *req);

/**
 * Starts the response: status line and headers. The server adds Date,
 * Connection, X-Request-Id (unless given), and Content-Length when
 * content_length >= 0, else Transfer-Encoding: chunked (HTTP/1.1) or
 * close-delimited (HTTP/1.0). The header array is copied. Header names and
 * values containing CR, LF or NUL are refused (RW_EPARSE) and nothing is sent.
 */
int rw_http_res_start(rw_http_req_t *req, int status, const rw_http_header_t *headers,
                      size_t n_headers, int64_t content_length);

/**
 * Writes a piece of the body. The bytes are copied unless `owned_by_caller_until_cb`
 * is true, in which case they must stay valid until cb runs. cb (may be NULL)
 * runs when the bytes reached the kernel or failed. Returns 1 while the
 * amount queued for this client is below its high-water mark, 0 when the caller
 * should wait for cb before writing more, or a negative code (nothing queued,
 * cb not called).
 */
int rw_http_res_write(rw_http_req_t *req, const char *bytes, size_t len,
                      bool owned_by_caller_until_cb, rw_http_write_cb cb, void *arg);

/** Bytes queued to this request's client and not yet written to the kernel. */
size_t rw_http_res_queued(const rw_http_req_t *req);

/**
 * Ends the response (last chunk for chunked responses, with optional trailers)
 * and releases the request: do not touch req afterwards. Always call it once,
 * even after an abort. If fewer bytes than the announced Content-Length were
 * written, the connection is closed (the client sees a truncated body).
 */
void rw_http_res_end(rw_http_req_t *req, const rw_http_header_t *trailers, size_t n_trailers);

/**
 * Ends the request by closing its connection at once, without finishing the
 * response: for a response whose status already went out and whose body can
 * no longer be completed (a proxied upstream that failed mid-body). The
 * client sees the connection close before the end of the body, never a
 * terminating chunk. No abort callback runs for this request. Like
 * rw_http_res_end, it releases the request: do not touch req afterwards, and
 * do not call rw_http_res_end too.
 */
void rw_http_res_abort(rw_http_req_t *req);

/** Answers the whole response at once and ends the request. */
void rw_http_respond(rw_http_req_t *req, int status, const rw_http_header_t *headers,
                     size_t n_headers, const char *body, size_t len);

/**
 * Answers {"message": message} (null when message is NULL, as API Gateway does
 * for some errors; plus "reason" when given) with the status as
 * application/json, and ends the request. extra may add headers (e.g. Allow).
 */
void rw_http_respond_error(rw_http_req_t *req, int status, const char *message,
                           const char *reason, const rw_http_header_t *extra, size_t n_extra);

/** Closes the connection after this request's response instead of keeping it. */
void rw_http_req_close_after(rw_http_req_t *req);

/** The reason phrase for a status code ("OK", "Not Found", ...). */
const char *rw_http_status_text(int status);

/** Writes an RFC 7231 IMF-fixdate for t into buf (at least 30 bytes). */
void rw_http_date(char *buf, size_t len, int64_t t);

#ifdef __cplusplus
}
#endif
#endif /* REELWAY_HTTP_H */
