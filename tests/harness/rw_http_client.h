/* Test-side HTTP/1.1 client over blocking sockets, a loop running on its own
 * thread (for servers under test), and child processes (reelway itself). Every
 * wait here is bounded. */
#ifndef REELWAY_TEST_HTTP_CLIENT_H
#define REELWAY_TEST_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

typedef struct {
    int status;
    char head[16384];      /* status line and headers, NUL-terminated */
    char *body;            /* malloc'd, NUL-terminated (free with rw_test_response_free) */
    size_t body_len;
    bool chunked;
    char trailers[4096];   /* raw trailer lines of a chunked body */
    bool closed;           /* the server closed the connection after this response */
} rw_test_response_t;

/** Connects to 127.0.0.1:port with 10 s send/receive timeouts; returns fd or -1. */
int rw_test_connect(int port);

/** Sends all bytes; returns 0 or -1. */
int rw_test_send(int fd, const void *data, size_t len);

/**
 * Reads one response (skipping 1xx interim answers unless keep_interim).
 * head_request: the request was HEAD (no body follows). Returns 0, or -1 on
 * timeout, close before a full response, or malformed framing.
 */
int rw_test_read_response(int fd, rw_test_response_t *r, bool head_request);

/** One request on a new connection; closes it afterwards. */
int rw_test_http(int port, const char *method, const char *path, const char *extra_headers,
                 const char *body, size_t body_len, rw_test_response_t *r);

/** Finds a response header (case-insensitive) into buf; returns buf or NULL. */
const char *rw_test_header(const rw_test_response_t *r, const char *name, char *buf, size_t len);

void rw_test_response_free(rw_test_response_t *r);

/** True when the peer closed fd (reads EOF within timeout_ms). */
bool rw_test_wait_closed(int fd, int timeout_ms);

/* ---- a loop on its own thread ------------------------------------------ */

typedef struct rw_test_loop_s rw_test_loop_t;

/** Starts a thread running a fresh loop; fn(loop, arg) runs on it first. */
rw_test_loop_t *rw_test_loop_start(void (*fn)(uv_loop_t *loop, void *arg), void *arg);

/** Runs fn(loop, arg) on the loop thread and waits until it returned. */
void rw_test_loop_call(rw_test_loop_t *t, void (*fn)(uv_loop_t *loop, void *arg), void *arg);

/**
 * Runs stop(loop, arg) on the loop thread, which must close everything it
 * opened; then waits for the loop to run out of work and returns the result of
 * uv_loop_close (0 when nothing was left open).
 */
int rw_test_loop_stop(rw_test_loop_t *t, void (*stop)(uv_loop_t *loop, void *arg), void *arg);

/* ---- child processes ----------------------------------------------------- */

typedef struct {
    pid_t pid;
    char log_path[512];    /* its stdout+stderr */
} rw_test_proc_t;

/**
 * Starts argv[0] with argv, the current environment plus env_set ("K=V", NULL
 * terminated) minus env_unset (names), output to log_path. Returns 0 or -1.
 */
int rw_test_proc_start(rw_test_proc_t *p, char *const argv[], const char *const env_set[],
                       const char *const env_unset[], const char *log_path);

/** As rw_test_proc_start, with the child leading a process group of its own, so
 *  that rw_test_proc_kill_group reaches everything it started. */
int rw_test_proc_start_group(rw_test_proc_t *p, char *const argv[], const char *const env_set[],
                             const char *const env_unset[], const char *log_path);

/** SIGKILLs p's whole process group (a crash of everything) and reaps p. */
void rw_test_proc_kill_group(rw_test_proc_t *p);

/** Waits up to timeout_ms for exit; returns the wait status, or -1 on timeout. */
int rw_test_proc_wait(rw_test_proc_t *p, int timeout_ms);

/** Sends sig, then waits up to timeout_ms (SIGKILL after); returns the wait status. */
int rw_test_proc_stop(rw_test_proc_t *p, int sig, int timeout_ms);

/** Waits up to timeout_ms for a file to exist and hold an integer; returns it or -1. */
int rw_test_wait_int_file(const char *path, int timeout_ms);

/** True while pid exists and is not a zombie. */
bool rw_test_pid_alive(pid_t pid);

/** Path of the built reelway binary ($RW_BINARY_DIR/gateway/reelway). */
const char *rw_test_reelway_bin(void);

/** Makes a fresh temporary directory (under $TMPDIR or /tmp); returns 0 or -1. */
int rw_test_tmpdir(char *buf, size_t len, const char *prefix);

/**
 * Every log file of function fn under reelway's data_dir (one per environment:
 * the files in data_dir/logs/fn), concatenated into buf (NUL-terminated, cut at cap).
 * Returns how many files there are.
 */
int rw_test_function_logs(const char *data_dir, const char *fn, char *buf, size_t cap);

/** Removes a directory tree (best effort). */
void rw_test_rmtree(const char *path);

/** Sleeps ms milliseconds. */
void rw_test_sleep_ms(int ms);



/** Lines containing needle in every regular file under dir (recursively). */
int rw_test_grep_tree(const char *dir, const char *needle);
#endif
