/* reelway's C Lambda runtime client: the ABI of every C function.
 *
 * A function is a process (Lambda's "execution environment") that speaks the
 * AWS Lambda Runtime API (2018-06-01) over HTTP/1.1 to $AWS_LAMBDA_RUNTIME_API,
 * one invocation at a time, for as long as it is kept warm. This library is
 * that process's runtime: it fetches each event, hands it to your handler and
 * posts the answer, on a libuv loop of its own.
 *
 * Reading guide
 * -------------
 * A function binary has a small main of its own:
 *
 *     int main(void)
 *     {
 *         rw_runtime_t *rt = rw_runtime_new();
 *         rw_runtime_on_init(rt, on_init, NULL);          // optional
 *         rw_runtime_register(rt, "echo", on_echo);       // buffered
 *         rw_runtime_register_stream(rt, "feed", on_feed); // streaming
 *         int status = rw_runtime_run(rt);                // until SIGTERM
 *         rw_runtime_free(rt);
 *         return status;
 *     }
 *
 * and $_HANDLER picks the handler by name. Three kinds of handler:
 *
 * - buffered (rw_runtime_register): runs on the loop thread and answers once
 *   with rw_runtime_respond_json / rw_runtime_respond / rw_runtime_fail, in the
 *   handler or later from the loop thread (after a timer, after threadpool
 *   work): the answer call *is* the completion.
 * - blocking (rw_runtime_register_blocking): the same contract, but the
 *   handler runs on a libuv threadpool thread and may block (synchronous
 *   mongoc, sleeps); it must have answered when it returns.
 * - streaming (rw_runtime_register_stream): gets a writable stream (see
 *   reelway/stream.h) that becomes the chunked response body as you write it,
 *   with backpressure all the way to the Runtime API's socket: respect
 *   rw_writable_write's result and on_drain, or pipe a readable into it with
 *   rw_pipeline_start. Complete with rw_runtime_end (success: ends the body if
 *   it is not ended yet) or rw_runtime_fail (failure: an error answer if no
 *   byte was sent yet, else Lambda's error trailers after the bytes sent).
 *
 * Every invocation is completed exactly once, also after the Runtime API went
 * away (the body is then destroyed with that error and your writes fail): the
 * invocation and its body stay valid until you complete it, and must not be
 * touched afterwards. A handler that never completes runs until the
 * environment's Timeout kills the process, as on Lambda.
 *
 * Init: the optional init callback runs once, before the first event, and may
 * block (connect a mongoc client pool, parse config). What it keeps is shared
 * by every warm invocation (rw_runtime_set_app, inv->app). If it fails, or
 * $_HANDLER names no registered handler, the runtime posts the error to
 * /runtime/init/error and rw_runtime_run returns 1: exit with it.
 *
 * Logs: stdout is the function's log. rw_runtime_log writes one line per call
 * as Lambda's managed runtimes do: "<ISO-8601 UTC time>\t<request id>\t<LEVEL>\t
 * <message>", with newlines inside the message turned into carriage returns so
 * a message stays one log event.
 *
 * Shutdown: SIGTERM (or SIGINT) while waiting for an event ends the process at
 * once with status 0; during an invocation, the invocation finishes (its
 * answer is posted) and then the process exits with 0.
 *
 * Threads: everything here runs on the runtime's loop thread, except the
 * handlers registered with rw_runtime_register_blocking (a threadpool thread)
 * and the functions marked thread-safe.
 */
#ifndef REELWAY_RUNTIME_H
#define REELWAY_RUNTIME_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>
#include <uv.h>

#include "reelway/error.h"
#include "reelway/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rw_runtime_s rw_runtime_t;
typedef struct rw_invocation_s rw_invocation_t;

/** Log levels, named as Lambda names them in log lines. */
typedef enum rw_runtime_level_e {
    RW_RUNTIME_DEBUG,
    RW_RUNTIME_INFO,
    RW_RUNTIME_WARN,
    RW_RUNTIME_ERROR,
    RW_RUNTIME_FATAL,
} rw_runtime_level_t;

/**
 * What Lambda tells a handler about the invocation and the function. Strings
 * are NUL-terminated and valid until the invocation completes; the optional
 * ones are NULL when the Runtime API did not send them.
 */
typedef struct rw_runtime_context_s {
    const char *request_id;           /**< Lambda-Runtime-Aws-Request-Id */
    int64_t deadline_ms;              /**< Lambda-Runtime-Deadline-Ms: Unix epoch ms */
    const char *invoked_function_arn; /**< Lambda-Runtime-Invoked-Function-Arn ("" if none) */
    const char *trace_id;         /**< Lambda-Runtime-Trace-Id (also $_X_AMZN_TRACE_ID) or NULL */
    const char *client_context;   /**< Lambda-Runtime-Client-Context, as sent, or NULL */
    const char *cognito_identity; /**< Lambda-Runtime-Cognito-Identity, as sent, or NULL */
    const char *function_name;    /**< $AWS_LAMBDA_FUNCTION_NAME ("" if unset) */
    const char *function_version; /**< $AWS_LAMBDA_FUNCTION_VERSION ("$LATEST" if unset) */
    int memory_limit_mb;          /**< $AWS_LAMBDA_FUNCTION_MEMORY_SIZE (0 if unset) */
    const char *log_group_name;   /**< $AWS_LAMBDA_LOG_GROUP_NAME ("" if unset) */
    const char *log_stream_name;  /**< $AWS_LAMBDA_LOG_STREAM_NAME ("" if unset) */
} rw_runtime_context_t;

/**
 * One invocation, owned by the runtime, valid from the handler call until the
 * handler completes it. Fields are read-only except data.
 */
struct rw_invocation_s {
    void *data;               /**< yours */
    rw_runtime_t *runtime;    /**< the runtime that received it */
    void *app;                /**< what init kept with rw_runtime_set_app (or NULL) */
    const cJSON *event;       /**< the event parsed as JSON, or NULL when it is not JSON */
    const char *payload;      /**< the event's raw bytes, NUL-terminated */
    size_t payload_len;       /**< their number, without the NUL */
    rw_runtime_context_t ctx; /**< request id, deadline, ARN, ... */
};

/**
 * A buffered (or blocking) handler: answer inv once with rw_runtime_respond_json,
 * rw_runtime_respond or rw_runtime_fail, now or later.
 */
typedef void (*rw_runtime_handler_cb)(rw_invocation_t *inv);

/**
 * A streaming handler: write the response to body (owned by the runtime: never
 * close it) and complete with rw_runtime_end or rw_runtime_fail, now or later.
 * You may set body->data and listen to its events (rw_stream_listen); stop
 * listening (rw_stream_listen(body, NULL)) before you complete if your
 * listener's memory goes away then. Each write becomes one chunk of the
 * chunked request body, sent without copying; a write completes when the
 * Runtime API's socket took it, so the body's high-water mark
 * (RW_STREAM_DEFAULT_HWM, 64 KiB) bounds what waits in this process:
 * rw_writable_write returns 0 at it, and on_drain says when to go on. The
 * first write sends the request head (set the content type or the prelude
 * before it); the body's 'finish' means the Runtime API accepted the whole
 * response. If the Runtime API goes away or refuses the response (413), the
 * body is destroyed with that error (UV_E*, RW_ELIMIT): writes fail and
 * on_error tells a listener.
 */
typedef void (*rw_runtime_stream_cb)(rw_invocation_t *inv, rw_stream_t *body);

/**
 * The init callback: runs once on the loop thread before the first event, and
 * may block. Return 0, or a negative code on failure (rw_runtime_init_fail
 * says why and returns one).
 */
typedef int (*rw_runtime_init_cb)(rw_runtime_t *rt, void *arg);

/* ---- the runtime -------------------------------------------------------- */

/** Creates a runtime with its own loop. Aborts on out of memory (fixed size). */
rw_runtime_t *rw_runtime_new(void);

/** Frees a runtime after rw_runtime_run returned (or was never called). Accepts NULL. */
void rw_runtime_free(rw_runtime_t *rt);

/** The runtime's loop: start your timers and threadpool work on it. */
uv_loop_t *rw_runtime_loop(rw_runtime_t *rt);

/**
 * Registers a buffered handler under name (copied), run on the loop thread.
 * Returns 0, UV_EINVAL (empty name, NULL cb), UV_EEXIST (name taken) or
 * UV_ENOMEM. Call before rw_runtime_run.
 */
int rw_runtime_register(rw_runtime_t *rt, const char *name, rw_runtime_handler_cb cb);

/**
 * Registers a buffered handler that runs on a libuv threadpool thread, where
 * it may block. It must answer (respond or fail) before it returns; the answer
 * is posted from the loop thread afterwards. It may call rw_runtime_log and
 * rw_runtime_remaining_ms but nothing that touches the loop. As rw_runtime_register.
 */
int rw_runtime_register_blocking(rw_runtime_t *rt, const char *name, rw_runtime_handler_cb cb);

/** Registers a streaming handler. As rw_runtime_register. */
int rw_runtime_register_stream(rw_runtime_t *rt, const char *name, rw_runtime_stream_cb cb);

/** Sets the init callback (at most one; a later call replaces it). */
void rw_runtime_on_init(rw_runtime_t *rt, rw_runtime_init_cb init, void *arg);

/**
 * From the init callback: records why init failed (type like "Config.Missing",
 * then a printf-style message) for /runtime/init/error, and returns RW_ECONFIG
 * so that `return rw_runtime_init_fail(rt, ...);` reads naturally.
 */
int rw_runtime_init_fail(rw_runtime_t *rt, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/**
 * Keeps app (state built at init and shared by every warm invocation; seen as
 * inv->app) and the function that releases it when the runtime stops
 * (cleanup may be NULL).
 */
void rw_runtime_set_app(rw_runtime_t *rt, void *app, void (*cleanup)(void *app));

/** What rw_runtime_set_app kept, or NULL. */
void *rw_runtime_app(const rw_runtime_t *rt);

/**
 * Runs the function: reads the environment ($AWS_LAMBDA_RUNTIME_API as
 * host:port, optionally with "http://" before and a path prefix after, as
 * some emulators give it; $_HANDLER; the function's variables), runs init,
 * then answers invocations until SIGTERM/SIGINT or rw_runtime_stop. Returns the
 * process exit status: 0 after a clean stop, 1 after an init failure (already
 * reported to /runtime/init/error), a missing or unreachable Runtime API, or
 * an invalid answer from it (each logged to stderr). Call once.
 */
int rw_runtime_run(rw_runtime_t *rt);

/**
 * Asks the runtime to stop as SIGTERM does: at once when idle, after the
 * current invocation otherwise. Loop thread only.
 */
void rw_runtime_stop(rw_runtime_t *rt);

/* ---- answering an invocation ------------------------------------------- */

/**
 * Completes a buffered invocation with a JSON answer (application/json).
 * Takes ownership of doc whatever the result; NULL answers `null`. Returns 0,
 * UV_EALREADY (already completed), UV_EINVAL (a streaming invocation) or
 * UV_ENOMEM (the invocation then fails with Runtime.OutOfMemory).
 */
int rw_runtime_respond_json(rw_invocation_t *inv, cJSON *doc);

/**
 * Completes a buffered invocation with raw bytes (copied) of the given
 * content type (NULL: application/octet-stream). Returns as rw_runtime_respond_json.
 */
int rw_runtime_respond(rw_invocation_t *inv, const void *bytes, size_t len,
                       const char *content_type);

/**
 * Completes an invocation with an error: errorType `type` (NULL: "Error") and
 * a printf-style errorMessage, sent as {"errorMessage","errorType","stackTrace":[]}
 * to /invocation/{id}/error. For a streaming invocation that has written
 * bytes, the body is ended (write no more): what was written goes out, then
 * the error in the trailers Lambda-Runtime-Function-Error-Type and
 * -Error-Body (that JSON in base64), and the caller sees a response cut short
 * with that error. Returns 0 or UV_EALREADY.
 */
int rw_runtime_fail(rw_invocation_t *inv, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** rw_runtime_fail with a va_list. */
int rw_runtime_failv(rw_invocation_t *inv, const char *type, const char *fmt, va_list ap);

/**
 * Completes a streaming invocation successfully: ends the body if it is not
 * ended yet (a pipeline into it ends it itself: call this from its done
 * callback). If the body was destroyed with an error, the invocation fails
 * instead (errorType Runtime.StreamError, the error's text). Returns 0,
 * UV_EALREADY or UV_EINVAL (a buffered invocation).
 */
int rw_runtime_end(rw_invocation_t *inv);

/**
 * Streaming: sets the response's Content-Type (copied; default
 * application/octet-stream). Only before the first byte: returns 0, UV_EINVAL
 * (not streaming, or CR/LF in it) or UV_EALREADY (the body has started).
 */
int rw_runtime_set_content_type(rw_invocation_t *inv, const char *content_type);

/**
 * Streaming: writes Lambda's HTTP-integration prelude as the first bytes of
 * the body, as awslambda.HttpResponseStream.from does: the JSON object
 * {"statusCode":status,"headers":headers,"cookies":cookies} (headers: a cJSON
 * object of strings, cookies: an array of strings; either may be NULL and is
 * then left out), then 8 NUL bytes; and sets the Content-Type to
 * application/vnd.awslambda.http-integration-response. Only before the first
 * byte. Returns rw_writable_write's result (1, or 0: wait for drain), or
 * UV_EINVAL / UV_EALREADY / UV_ENOMEM.
 */
int rw_runtime_write_prelude(rw_invocation_t *inv, int status, const cJSON *headers,
                             const cJSON *cookies);

/** Milliseconds until the invocation's deadline (negative once passed). Thread-safe. */
int64_t rw_runtime_remaining_ms(const rw_invocation_t *inv);

/**
 * Writes one log line to stdout in Lambda's format (see the top), with inv's
 * request id (inv may be NULL: outside an invocation the field is empty).
 * Thread-safe: each line is one write(2).
 */
void rw_runtime_log(const rw_invocation_t *inv, rw_runtime_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- the formats, for tests and other runtimes (thread-safe) ------------ */

/** "DEBUG", "INFO", "WARN", "ERROR" or "FATAL". */
const char *rw_runtime_level_name(rw_runtime_level_t level);

/**
 * Formats one log line into buf (cap bytes, NUL-terminated, truncated to fit
 * and always ending in "\n"): "<time>\t<request_id>\t<LEVEL>\t<message>\n"
 * where time is epoch_ms as 2024-05-01T12:34:56.789Z and newlines in message
 * become "\r". request_id NULL gives an empty field. Returns the line's length.
 * cap must be at least 64.
 */
size_t rw_runtime_log_format(char *buf, size_t cap, int64_t epoch_ms, const char *request_id,
                             rw_runtime_level_t level, const char *message);

/**
 * Lambda's error document {"errorMessage":message,"errorType":type,
 * "stackTrace":[]} as a malloc'd NUL-terminated string (free() it); *len (may
 * be NULL) gets its length. NULL type gives "Error", NULL message "". Returns
 * NULL when out of memory.
 */
char *rw_runtime_error_json(const char *type, const char *message, size_t *len);

/**
 * The HTTP-integration prelude bytes (see rw_runtime_write_prelude) as a
 * malloc'd buffer (free() it) of *len bytes: the JSON text then 8 NUL bytes.
 * Returns NULL when out of memory or when headers / cookies are not an object
 * / an array.
 */
char *rw_runtime_prelude(int status, const cJSON *headers, const cJSON *cookies, size_t *len);

/**
 * Standard base64 (RFC 4648, with padding) of len bytes as a malloc'd
 * NUL-terminated string, or NULL when out of memory. Used for the
 * Lambda-Runtime-Function-Error-Body trailer.
 */
char *rw_runtime_base64(const void *bytes, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* REELWAY_RUNTIME_H */
