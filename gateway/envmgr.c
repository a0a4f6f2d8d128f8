/* The environment manager: functions run as Lambda execution environments.
 * Each environment is a child process with its own Runtime API listener on
 * 127.0.0.1; it is started on demand (cold start), reused while warm (one
 * invocation at a time), killed on timeout, replaced after a crash, and reaped
 * when idle. The Runtime API lives here too: an environment's GET .../next is
 * parked until an invocation is dispatched to it. */
#define _GNU_SOURCE /* prlimit */
#include "functions.h"

#include "reelway/error.h"
#include "reelway/http.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RUNTIME_PREFIX "/2018-06-01/runtime/"
#define STREAM_COLLECT_MAX (20 * 1024 * 1024)
/* SIGTERM, then SIGKILL after this. Sanitizer builds run instrumented
 * functions whose exit (leak check) takes longer when many stop at once; cut
 * short, their reports would be lost. */
#if defined(__SANITIZE_ADDRESS__)
#define KILL_GRACE_MS 10000
#else
#define KILL_GRACE_MS 2000
#endif
/* How long an environment that answered is expected back for more work
 * (GET .../next) before a waiting call stops counting on it. */
#define NEXT_GRACE_MS 500

extern char **environ;

typedef struct env_s env_t;
typedef struct fn_s fn_t;

enum env_state_e { ENV_STARTING, ENV_IDLE, ENV_BUSY, ENV_DEAD };

struct rw_fn_shared_s {
    int total;           /* in-flight invocations, all functions */
    int inflight[];      /* per function */
};

struct fn_s {
    rw_fnmgr_t *m;
    rw_fn_config_t cfg;
    int index;
    env_t *envs;
    rw_invoke_t *q_head, *q_tail; /* invocations waiting for an environment */
    int queued;
    int starting;
    int provisioned_here;
};

struct env_s {
    rw_fnmgr_t *m;
    fn_t *fn;
    env_t *next;
    char id[33];
    enum env_state_e state;
    bool provisioned;
    uv_process_t proc;
    uv_pipe_t out, err;
    uv_timer_t timer;
    int handles;                  /* open libuv handles, plus the API server */
    bool exited, killed, closing;
    bool late;                    /* answered, but not back for more work in NEXT_GRACE_MS */
    int64_t exit_status;
    int term_signal;
    rw_http_server_t *api;
    int port;
    rw_http_req_t *next_req;      /* a parked GET .../invocation/next */
    rw_invoke_t *inv;             /* dispatched, not yet answered */
    uint64_t spawn_ns;
    double init_ms;               /* how long its init took */
    int peak_mb;                  /* its VmHWM when last measured (before a kill, after a call) */
    uint64_t ready_ns;            /* when its init ended (its first GET .../next) */
    bool served;                  /* it has been given an invocation */
    char *init_error;             /* body of POST .../init/error */
    char *init_error_type;
    const char *fail_type;        /* why it is being killed (timeout, init timeout, ...) */
    int log_fd;
    char log_stream[96];
};

struct rw_invoke_s {
    rw_fnmgr_t *m;
    fn_t *fn;
    env_t *env;
    rw_invoke_t *qnext;
    char id[40];
    char *payload;
    size_t len;
    char *trace_id, *client_context, *cognito_identity;
    rw_invoke_cbs_t cbs;
    void *arg;
    uint64_t queued_ns, dispatch_ns;
    int64_t deadline_ms;
    rw_http_req_t *resp_req;      /* the runtime's POST .../response while it streams */
    bool streaming;
    char *collect;                /* a streamed body collected for a caller without stream_data */
    size_t collect_len, collect_cap;
    bool detached;                /* the caller is gone: finish silently */
    bool cold;                    /* it waited for its environment's init */
    char content_type[128];       /* of a streamed response */
    bool done;
};

struct rw_fnmgr_s {
    uv_loop_t *loop;
    rw_fnmgr_opts_t opts;
    fn_t *fns;
    size_t n_fns;
    int n_envs;
    bool closing;
    int pending_envs;             /* environments not yet freed while closing */
    void (*close_done)(void *);
    void *close_arg;
    uint64_t rng[2];
    char logs_dir[4096];
    rw_fn_shared_t *shared;
    bool own_shared;
};

static void env_kill(env_t *e, const char *why);
static void fn_pump(fn_t *f);
static void on_env_timer(uv_timer_t *t);
static void on_api_request(rw_http_req_t *req, void *arg);

/* ---- small utilities ------------------------------------------------------- */

static int64_t epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rng_next(rw_fnmgr_t *m)
{
    uint64_t x = m->rng[0], y = m->rng[1];
    m->rng[0] = y;
    x ^= x << 23;
    m->rng[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return m->rng[1] + y;
}

static void make_uuid(rw_fnmgr_t *m, char out[40])
{
    uint64_t a = rng_next(m), b = rng_next(m);
    a = (a & ~0xf000ULL) | 0x4000ULL;
    b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
    snprintf(out, 40, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)((a >> 16) & 0xffff), (unsigned)(a & 0xffff), (unsigned)(b >> 48),
             (unsigned long long)(b & 0xffffffffffffULL));
}

static char *dupstr(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int mkdir_p(const char *dir)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Peak resident memory of a process, in MB (VmHWM), 0 when unknown. This runs
 * after every invocation: one read of the whole file and a search, rather than
 * stdio's buffering and a sscanf per line. */
static int max_memory_mb(int pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *p = strstr(buf, "\nVmHWM:");
    if (p == NULL)
        return 0;
    long kb = strtol(p + 7, NULL, 10);
    return kb > 0 ? (int)((kb + 1023) / 1024) : 0;
}

/* Now as Lambda's log lines write it: 2024-05-01T12:00:00.123Z. */
static void iso_time(char *out, size_t len)
{
    int64_t ms = epoch_ms();
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* Appends bytes to the environment's log (and our stdout when asked). */
static void log_write(env_t *e, const char *bytes, size_t len)
{
    if (e->log_fd >= 0) {
        ssize_t n = write(e->log_fd, bytes, len);
        (void)n;
    }
    if (e->m->opts.log_stdout) {
        ssize_t n = write(1, bytes, len);
        (void)n;
    }
}

static void log_printf(env_t *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_printf(env_t *e, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        log_write(e, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* What the runtime wrote before it answered is already in the pipes: copy it
 * to the log first, so END and REPORT follow the invocation's own lines. */
static void drain_pipes(env_t *e)
{
    uv_pipe_t *pipes[] = {&e->out, &e->err};
    char buf[16384];
    for (int i = 0; i < 2; i++) {
        uv_os_fd_t fd;
        if (uv_is_closing((uv_handle_t *)pipes[i]) || uv_fileno((uv_handle_t *)pipes[i], &fd) != 0)
            continue;
        for (int rounds = 0; rounds < 64; rounds++) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n <= 0)
                break;
            log_write(e, buf, (size_t)n);
        }
    }
}

/* ---- shared counters ------------------------------------------------------- */

rw_fn_shared_t *rw_fn_shared_new(size_t n_functions)
{
    size_t size = sizeof(rw_fn_shared_t) + (n_functions + 1) * sizeof(int);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 0, size);
    return p;
}

void rw_fn_shared_free(rw_fn_shared_t *s, size_t n_functions)
{
    if (s)
        munmap(s, sizeof(rw_fn_shared_t) + (n_functions + 1) * sizeof(int));
}

int rw_fn_shared_inflight(const rw_fn_shared_t *s, size_t fn)
{
    return __atomic_load_n(&s->inflight[fn], __ATOMIC_RELAXED);
}

/* An in-flight slot: Lambda counts concurrency as invocations in flight, and
 * throttles (429) rather than queues what is over the limit. */
static bool slot_acquire(rw_fnmgr_t *m, fn_t *f)
{
    rw_fn_shared_t *s = m->shared;
    int n = __atomic_add_fetch(&s->inflight[f->index], 1, __ATOMIC_ACQ_REL);
    if (f->cfg.reserved_concurrency >= 0 && n > f->cfg.reserved_concurrency) {
        __atomic_sub_fetch(&s->inflight[f->index], 1, __ATOMIC_ACQ_REL);
        return false;
    }
    int t = __atomic_add_fetch(&s->total, 1, __ATOMIC_ACQ_REL);
    if (t > m->opts.account_concurrency) {
        __atomic_sub_fetch(&s->total, 1, __ATOMIC_ACQ_REL);
        __atomic_sub_fetch(&s->inflight[f->index], 1, __ATOMIC_ACQ_REL);
        return false;
    }
    return true;
}

static void slot_release(rw_fnmgr_t *m, fn_t *f)
{
    __atomic_sub_fetch(&m->shared->inflight[f->index], 1, __ATOMIC_ACQ_REL);
    __atomic_sub_fetch(&m->shared->total, 1, __ATOMIC_ACQ_REL);
}

/* ---- invocations ------------------------------------------------------------ */

static void invoke_free(rw_invoke_t *inv)
{
    free(inv->payload);
    free(inv->trace_id);
    free(inv->client_context);
    free(inv->cognito_identity);
    free(inv->collect);
    free(inv);
}

/* Ends an invocation: log lines, the slot, the caller's done, the memory. */
static void invoke_finish(rw_invoke_t *inv, rw_invoke_status_t status, const char *payload,
                          size_t len, const char *error_type)
{
    if (inv->done)
        return;
    inv->done = true;
    rw_fnmgr_t *m = inv->m;
    env_t *e = inv->env;
    inv->resp_req = NULL; /* on_stream_end ends it, seeing it is no longer current */
    double ms = 0;
    if (e) {
        e->inv = NULL;
        uv_timer_stop(&e->timer);
        if (!e->exited && !e->killed) {
            e->late = false;
            uv_timer_start(&e->timer, on_env_timer, NEXT_GRACE_MS, 0);
        }
        ms = (double)(uv_hrtime() - inv->dispatch_ns) / 1e6;
    }
    slot_release(m, inv->fn);
    if (!inv->detached) {
        rw_invoke_result_t res = {.status = status,
                                  .payload = payload ? payload : "",
                                  .len = payload ? len : 0,
                                  .error_type = error_type,
                                  .streamed = inv->streaming && inv->cbs.stream_data,
                                  .cold_start = inv->cold,
                                  .request_id = inv->id};
        if (inv->cbs.done)
            inv->cbs.done(inv, &res, inv->arg);
    }
    if (e) {
        /* The caller has its answer; now the bookkeeping (a few system calls
         * that need not delay it). The environment outlives this call: it is
         * freed only after its process has exited and its handles closed. */
        drain_pipes(e);
        /* A process that is gone cannot be asked (and its pid may be another
         * process's by now): then its last measure stands. */
        int mem = !e->exited && e->proc.pid > 0 ? max_memory_mb(e->proc.pid) : 0;
        if (mem > e->peak_mb)
            e->peak_mb = mem;
        mem = e->peak_mb;
        char init[64] = "";
        if (inv->cold)
            snprintf(init, sizeof init, "\tInit Duration: %.2f ms", e->init_ms);
        log_printf(e,
                   "END RequestId: %s\n"
                   "REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %.0f ms\t"
                   "Memory Size: %d MB\tMax Memory Used: %d MB%s%s%s\n",
                   inv->id, inv->id, ms, ceil(ms), inv->fn->cfg.memory_mb, mem, init,
                   status == RW_INVOKE_TIMEOUT ? "\tStatus: timeout" : "",
                   status == RW_INVOKE_CRASH ? "\tStatus: error" : "");
    }
    invoke_free(inv);
}

/* Finishes with an error JSON {"errorMessage": ..., "errorType": ...}. */
static void invoke_fail(rw_invoke_t *inv, rw_invoke_status_t status, const char *type,
                        const char *message)
{
    char body[1024];
    char msg[600];
    size_t j = 0;
    for (const char *p = message; *p && j + 2 < sizeof msg; p++) {
        if (*p == '"' || *p == '\\')
            msg[j++] = '\\';
        msg[j++] = (*p == '\n' || *p == '\r') ? ' ' : *p;
    }
    msg[j] = '\0';
    int n = snprintf(body, sizeof body, "{\"errorMessage\":\"%s\",\"errorType\":\"%s\"}", msg,
                     type);
    invoke_finish(inv, status, body, (size_t)n, type);
}

static void queue_remove(fn_t *f, rw_invoke_t *inv)
{
    rw_invoke_t **pp = &f->q_head;
    while (*pp && *pp != inv)
        pp = &(*pp)->qnext;
    if (!*pp)
        return;
    *pp = inv->qnext;
    if (f->q_tail == inv) {
        f->q_tail = NULL;
        for (rw_invoke_t *q = f->q_head; q; q = q->qnext)
            f->q_tail = q;
    }
    inv->qnext = NULL;
    f->queued--;
}

static rw_invoke_t *queue_pop(fn_t *f)
{
    rw_invoke_t *inv = f->q_head;
    if (inv)
        queue_remove(f, inv);
    return inv;
}

int rw_fnmgr_invoke(rw_fnmgr_t *m, int fn, const char *payload, size_t len,
                    const rw_invoke_opts_t *opts, const rw_invoke_cbs_t *cbs, void *arg,
                    rw_invoke_t **out)
{
    if (fn < 0 || (size_t)fn >= m->n_fns)
        return RW_ENOTFOUND;
    if (m->closing)
        return UV_ECANCELED;
    if (len > RW_LAMBDA_PAYLOAD_MAX)
        return RW_ELIMIT;
    fn_t *f = &m->fns[fn];
    if (!slot_acquire(m, f))
        return UV_EBUSY;
    rw_invoke_t *inv = calloc(1, sizeof *inv);
    if (!inv || !(inv->payload = malloc(len + 1))) {
        free(inv);
        slot_release(m, f);
        return UV_ENOMEM;
    }
    memcpy(inv->payload, payload, len);
    inv->payload[len] = '\0';
    inv->len = len;
    inv->m = m;
    inv->fn = f;
    inv->cbs = *cbs;
    inv->arg = arg;
    inv->queued_ns = uv_hrtime();
    if (opts && opts->request_id)
        snprintf(inv->id, sizeof inv->id, "%s", opts->request_id);
    else
        make_uuid(m, inv->id);
    if (opts) {
        inv->trace_id = dupstr(opts->trace_id);
        inv->client_context = dupstr(opts->client_context);
        inv->cognito_identity = dupstr(opts->cognito_identity);
    }
    if (f->q_tail)
        f->q_tail->qnext = inv;
    else
        f->q_head = inv;
    f->q_tail = inv;
    f->queued++;
    if (out)
        *out = inv;
    fn_pump(f);
    return 0;
}

const char *rw_invoke_content_type(const rw_invoke_t *inv)
{
    return inv->content_type[0] ? inv->content_type : NULL;
}

const char *rw_invoke_request_id(const rw_invoke_t *inv)
{
    return inv->id;
}

void rw_invoke_resume(rw_invoke_t *inv)
{
    if (inv->resp_req)
        rw_http_req_body_resume(inv->resp_req);
}

void rw_invoke_cancel(rw_invoke_t *inv)
{
    if (inv->done || inv->detached)
        return;
    if (!inv->env) {
        /* Still waiting for an environment: it never ran. */
        queue_remove(inv->fn, inv);
        invoke_finish(inv, RW_INVOKE_CANCELLED, NULL, 0, NULL);
        return;
    }
    /* Running: tell the caller now, drop whatever comes. A streamed response
     * is cut, so the function's writes fail and it stops producing. */
    rw_invoke_result_t res = {.status = RW_INVOKE_CANCELLED, .payload = "", .request_id = inv->id};
    inv->detached = true;
    if (inv->cbs.done)
        inv->cbs.done(inv, &res, inv->arg);
    if (inv->resp_req) {
        /* Answer the runtime's POST and close its connection: what it still
         * writes is discarded for a moment, then its socket is reset. */
        rw_http_req_t *req = inv->resp_req;
        invoke_finish(inv, RW_INVOKE_CANCELLED, NULL, 0, NULL);
        rw_http_req_close_after(req);
        rw_http_respond_error(req, 400, "the caller went away", NULL, NULL, 0);
    }
}

/* ---- environments ------------------------------------------------------------- */

static void env_maybe_free(env_t *e)
{
    if (e->handles > 0)
        return;
    rw_fnmgr_t *m = e->m;
    if (e->log_fd >= 0)
        close(e->log_fd);
    free(e->init_error);
    free(e->init_error_type);
    free(e);
    if (m->closing && --m->pending_envs == 0) {
        void (*done)(void *) = m->close_done;
        void *arg = m->close_arg;
        if (m->own_shared)
            rw_fn_shared_free(m->shared, m->n_fns);
        free(m->fns);
        free(m);
        if (done)
            done(arg);
    }
}

static void on_env_handle_closed(uv_handle_t *h)
{
    env_t *e = h->data;
    e->handles--;
    env_maybe_free(e);
}

static void on_api_closed(void *arg)
{
    env_t *e = arg;
    e->api = NULL;
    e->handles--;
    env_maybe_free(e);
}

static void env_unlink(env_t *e)
{
    fn_t *f = e->fn;
    for (env_t **pp = &f->envs; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    e->m->n_envs--;
    if (e->state == ENV_STARTING)
        f->starting--;
}

/* The process is gone: settle what it was doing, close the rest. */
static void on_env_exit(uv_process_t *p, int64_t exit_status, int term_signal)
{
    env_t *e = p->data;
    fn_t *f = e->fn;
    rw_fnmgr_t *m = e->m;
    e->exited = true;
    e->exit_status = exit_status;
    e->term_signal = term_signal;
    drain_pipes(e);
    enum env_state_e was = e->state;
    env_unlink(e);
    e->state = ENV_DEAD;
    char why[256];
    if (term_signal)
        snprintf(why, sizeof why, "signal: %s", strsignal(term_signal));
    else
        snprintf(why, sizeof why, "exit status %" PRId64, exit_status);
    if (e->inv) {
        rw_invoke_t *inv = e->inv;
        if (e->fail_type && !strcmp(e->fail_type, "timeout")) {
            char msg[128];
            snprintf(msg, sizeof msg, "Task timed out after %d.00 seconds", f->cfg.timeout_s);
            invoke_fail(inv, RW_INVOKE_TIMEOUT, "Sandbox.Timedout", msg);
        } else {
            char msg[384];
            snprintf(msg, sizeof msg, "RequestId: %s Error: Runtime exited with error: %s", inv->id,
                     why);
            log_printf(e, "%s\nRuntime.ExitError\n", msg);
            invoke_fail(inv, RW_INVOKE_CRASH, "Runtime.ExitError", msg);
        }
    } else if (was == ENV_STARTING && !m->closing) {
        /* The cold start failed: the invocation that caused it gets the error,
         * as Lambda returns an init failure to its invoker. */
        rw_invoke_t *inv = queue_pop(f);
        if (inv) {
            inv->env = NULL;
            if (e->init_error)
                invoke_finish(inv, RW_INVOKE_INIT_ERROR, e->init_error, strlen(e->init_error),
                              e->init_error_type ? e->init_error_type : "Runtime.InitError");
            else if (e->fail_type && !strcmp(e->fail_type, "init-timeout")) {
                char msg[128];
                snprintf(msg, sizeof msg, "the init phase did not finish within %.3g seconds",
                         (double)m->opts.init_timeout_ms / 1000);
                invoke_fail(inv, RW_INVOKE_INIT_ERROR, "Runtime.InitTimeout", msg);
            }
            else {
                char msg[320];
                snprintf(msg, sizeof msg, "Runtime exited without providing a reason (%s)", why);
                invoke_fail(inv, RW_INVOKE_INIT_ERROR, "Runtime.ExitError", msg);
            }
        }
    }
    if (e->next_req) {
        rw_http_req_t *req = e->next_req;
        e->next_req = NULL;
        rw_http_req_close_after(req);
        rw_http_res_end(req, NULL, 0);
    }
    e->closing = true;
    uv_close((uv_handle_t *)&e->proc, on_env_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&e->timer))
        uv_close((uv_handle_t *)&e->timer, on_env_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&e->out))
        uv_close((uv_handle_t *)&e->out, on_env_handle_closed);
    if (!uv_is_closing((uv_handle_t *)&e->err))
        uv_close((uv_handle_t *)&e->err, on_env_handle_closed);
    if (e->api)
        rw_http_server_shutdown(e->api, on_api_closed, e);
    if (!m->closing)
        fn_pump(f);
}

static void on_pipe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[65536]; /* consumed at once in on_pipe_read, on this thread */
    *buf = uv_buf_init(scratch, sizeof scratch);
}

static void on_pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    env_t *e = s->data;
    if (n > 0)
        log_write(e, buf->base, (size_t)n);
    else if (n < 0)
        uv_read_stop(s);
}

static void on_env_timer(uv_timer_t *t)
{
    env_t *e = t->data;
    switch (e->state) {
    case ENV_STARTING:
        log_printf(e, "INIT_REPORT Init Duration: %.2f ms\tPhase: init\tStatus: timeout\n",
                   (double)(uv_hrtime() - e->spawn_ns) / 1e6);
        env_kill(e, "init-timeout");
        break;
    case ENV_BUSY:
        if (e->inv) {
            /* Lambda's line, and the memory measured while it still runs. */
            char when[32];
            iso_time(when, sizeof when);
            log_printf(e, "%s %s Task timed out after %d.00 seconds\n", when, e->inv->id,
                       e->fn->cfg.timeout_s);
            int mem = max_memory_mb(e->proc.pid);
            if (mem > e->peak_mb)
                e->peak_mb = mem;
            env_kill(e, "timeout");
        } else {
            /* It answered but has not asked for more work: calls waiting
             * for it get an environment of their own. */
            e->late = true;
            fn_pump(e->fn);
        }
        break;
    case ENV_IDLE:
        env_kill(e, "idle");
        break;
    default:
        break;
    }
}

static void on_kill_grace(uv_timer_t *t)
{
    env_t *e = t->data;
    if (!e->exited)
        uv_process_kill(&e->proc, SIGKILL);
}

/* Stops an environment. Timeouts kill at once (Lambda does); idle reaping and
 * shutdown ask with SIGTERM first and insist after a grace period. */
static void env_kill(env_t *e, const char *why)
{
    if (e->killed || e->exited)
        return;
    e->killed = true;
    e->fail_type = why;
    bool hard = !strcmp(why, "timeout") || !strcmp(why, "init-timeout") || !strcmp(why, "init-error");
    uv_process_kill(&e->proc, hard ? SIGKILL : SIGTERM);
    if (!hard) {
        uv_timer_stop(&e->timer);
        uv_timer_start(&e->timer, on_kill_grace, KILL_GRACE_MS, 0);
    }
}

static void build_env_var(char ***vars, size_t *n, size_t *cap, const char *key, const char *value)
{
    if (*n + 2 > *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *vars = realloc(*vars, *cap * sizeof **vars);
    }
    size_t len = strlen(key) + strlen(value) + 2;
    char *kv = malloc(len);
    snprintf(kv, len, "%s=%s", key, value);
    (*vars)[(*n)++] = kv;
    (*vars)[*n] = NULL;
}

static bool env_has(const rw_fn_config_t *c, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i < c->n_env; i++)
        if (!strncmp(c->env[i], key, kl) && c->env[i][kl] == '=')
            return true;
    return false;
}

static env_t *env_spawn(fn_t *f, bool provisioned)
{
    rw_fnmgr_t *m = f->m;
    env_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->m = m;
    e->fn = f;
    e->log_fd = -1;
    e->provisioned = provisioned;
    e->state = ENV_STARTING;
    snprintf(e->id, sizeof e->id, "%016llx%016llx", (unsigned long long)rng_next(m),
             (unsigned long long)rng_next(m));

    /* Its own Runtime API listener: the environment can reach nothing else. */
    rw_http_limits_t limits = {
        .max_connections = 8,
        .idle_timeout_ms = 24ULL * 3600 * 1000,
        .body_timeout_ms = (uint64_t)f->cfg.timeout_s * 1000 + 5000,
        .write_timeout_ms = (uint64_t)f->cfg.timeout_s * 1000 + 5000,
        .header_timeout_ms = 30000,
        .shutdown_timeout_ms = 1000,
    };
    e->api = rw_http_server_new(m->loop, &limits, on_api_request, e);
    if (!e->api || rw_http_server_listen(e->api, "127.0.0.1", 0, false) != 0) {
        if (e->api) {
            e->handles = 1;
            rw_http_server_shutdown(e->api, on_api_closed, e);
            return NULL; /* freed from on_api_closed */
        }
        free(e);
        return NULL;
    }
    e->port = rw_http_server_port(e->api);

    /* Log stream named as Lambda names them: DATE/[$LATEST]ID. */
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    snprintf(e->log_stream, sizeof e->log_stream, "%04d/%02d/%02d/[$LATEST]%s",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, e->id);
    char path[4600];
    snprintf(path, sizeof path, "%s/%s", m->logs_dir, f->cfg.name);
    mkdir_p(path);
    snprintf(path + strlen(path), sizeof path - strlen(path), "/%04d-%02d-%02d-%s.log",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, e->id);
    e->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

    /* The environment variables Lambda sets, then the template's. */
    char **vars = NULL;
    size_t nv = 0, cap = 0;
    char api[64], mem[16];
    snprintf(api, sizeof api, "127.0.0.1:%d", e->port);
    snprintf(mem, sizeof mem, "%d", f->cfg.memory_mb);
    char group[600], exec_env[128];
    snprintf(group, sizeof group, "/aws/lambda/%s", f->cfg.name);
    snprintf(exec_env, sizeof exec_env, "AWS_Lambda_%s", f->cfg.runtime_name);
    const char *path_env = getenv("PATH");
    build_env_var(&vars, &nv, &cap, "AWS_LAMBDA_RUNTIME_API", api);
    build_env_var(&vars, &nv, &cap, "_HANDLER", f->cfg.handler ? f->cfg.handler : "");
    build_env_var(&vars, &nv, &cap, "AWS_LAMBDA_FUNCTION_NAME", f->cfg.name);
    build_env_var(&vars, &nv, &cap, "AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
    build_env_var(&vars, &nv, &cap, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", mem);
    build_env_var(&vars, &nv, &cap, "AWS_LAMBDA_LOG_GROUP_NAME", group);
    build_env_var(&vars, &nv, &cap, "AWS_LAMBDA_LOG_STREAM_NAME", e->log_stream);
    build_env_var(&vars, &nv, &cap, "AWS_LAMBDA_INITIALIZATION_TYPE",
                  provisioned ? "provisioned-concurrency" : "on-demand");
    build_env_var(&vars, &nv, &cap, "AWS_REGION", m->opts.region);
    build_env_var(&vars, &nv, &cap, "AWS_DEFAULT_REGION", m->opts.region);
    build_env_var(&vars, &nv, &cap, "AWS_EXECUTION_ENV", exec_env);
    build_env_var(&vars, &nv, &cap, "LAMBDA_TASK_ROOT", f->cfg.code_path);
    build_env_var(&vars, &nv, &cap, "LAMBDA_RUNTIME_DIR", f->cfg.code_path);
    build_env_var(&vars, &nv, &cap, "TZ", ":UTC");
    build_env_var(&vars, &nv, &cap, "LANG", "en_US.UTF-8");
    build_env_var(&vars, &nv, &cap, "HOME", "/tmp");
    build_env_var(&vars, &nv, &cap, "PATH", path_env ? path_env : "/usr/local/bin:/usr/bin:/bin");
    if (f->cfg.runtime == RW_FN_PYTHON)
        build_env_var(&vars, &nv, &cap, "PYTHONPATH", f->cfg.code_path);
    /* libmongoc keeps its counters in a shared-memory file per process, which
     * only a clean exit removes: every environment killed at a timeout would
     * leave one in /dev/shm for good. (A template may turn them back on.) */
    if (!env_has(&f->cfg, "MONGOC_DISABLE_SHM"))
        build_env_var(&vars, &nv, &cap, "MONGOC_DISABLE_SHM", "1");
    if (m->opts.db_uri && !env_has(&f->cfg, "MONGODB_URI"))
        build_env_var(&vars, &nv, &cap, "MONGODB_URI", m->opts.db_uri);
    for (size_t i = 0; i < f->cfg.n_env; i++) {
        const char *eq = strchr(f->cfg.env[i], '=');
        if (!eq)
            continue;
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)(eq - f->cfg.env[i]), f->cfg.env[i]);
        build_env_var(&vars, &nv, &cap, key, eq + 1);
    }

    char bootstrap[4200];
    char *args[5] = {NULL};
    switch (f->cfg.runtime) {
    case RW_FN_PROVIDED:
        snprintf(bootstrap, sizeof bootstrap, "%s/bootstrap", f->cfg.code_path);
        args[0] = bootstrap;
        break;
    case RW_FN_PYTHON:
        args[0] = (char *)m->opts.python;
        args[1] = "-m";
        args[2] = "awslambdaric";
        args[3] = (char *)(f->cfg.handler ? f->cfg.handler : "");
        break;
    case RW_FN_NODEJS:
        args[0] = (char *)m->opts.node;
        args[1] = (char *)m->opts.node_ric;
        args[2] = (char *)(f->cfg.handler ? f->cfg.handler : "");
        break;
    }
    uv_pipe_init(m->loop, &e->out, 0);
    uv_pipe_init(m->loop, &e->err, 0);
    uv_timer_init(m->loop, &e->timer);
    e->out.data = e->err.data = e->timer.data = e->proc.data = e;
    e->handles = 5; /* out, err, timer, proc, api */
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&e->out},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&e->err},
    };
    uv_process_options_t po = {
        .exit_cb = on_env_exit,
        .file = args[0],
        .args = args,
        .env = vars,
        .cwd = f->cfg.code_path,
        .stdio_count = 3,
        .stdio = stdio,
    };
    e->spawn_ns = uv_hrtime();
    int rc = uv_spawn(m->loop, &e->proc, &po);
    for (size_t i = 0; i < nv; i++)
        free(vars[i]);
    free(vars);
    if (rc != 0) {
        log_printf(e, "reelway: cannot start %s: %s\n", args[0], rw_strerror(rc));
        e->closing = true;
        uv_close((uv_handle_t *)&e->out, on_env_handle_closed);
        uv_close((uv_handle_t *)&e->err, on_env_handle_closed);
        uv_close((uv_handle_t *)&e->timer, on_env_handle_closed);
        uv_close((uv_handle_t *)&e->proc, on_env_handle_closed); /* a failed spawn still inits it */
        rw_http_server_shutdown(e->api, on_api_closed, e);
        return NULL;
    }
    /* MemorySize bounds the environment's private writable memory (heap,
     * stacks): allocations past it fail, as they would in Lambda. Not in a
     * sanitizer build: its C functions are instrumented too, and ASan's
     * shadow memory (terabytes, reserved at start) counts against the limit,
     * so they could not start. The function's log says so. */
#if !defined(__SANITIZE_ADDRESS__)
    struct rlimit lim = {(rlim_t)f->cfg.memory_mb << 20, (rlim_t)f->cfg.memory_mb << 20};
    prlimit(e->proc.pid, RLIMIT_DATA, &lim, NULL);
#else
    log_printf(e, "reelway: MemorySize (%d MB) is not enforced in a sanitizer build\n",
               f->cfg.memory_mb);
#endif
    uv_read_start((uv_stream_t *)&e->out, on_pipe_alloc, on_pipe_read);
    uv_read_start((uv_stream_t *)&e->err, on_pipe_alloc, on_pipe_read);
    uv_timer_start(&e->timer, on_env_timer, m->opts.init_timeout_ms, 0);
    e->next = f->envs;
    f->envs = e;
    f->starting++;
    m->n_envs++;
    return e;
}

/* Hands an invocation to an idle environment: the parked GET .../next gets it. */
static void dispatch(env_t *e, rw_invoke_t *inv)
{
    rw_fnmgr_t *m = e->m;
    fn_t *f = e->fn;
    rw_http_req_t *req = e->next_req;
    e->next_req = NULL;
    e->state = ENV_BUSY;
    e->inv = inv;
    inv->env = e;
    /* A cold start is a call that waited for an init: the first call of an
     * environment started for it. A provisioned (or otherwise already
     * initialized) environment serves its first call warm, as in Lambda,
     * where its REPORT has no Init Duration. */
    inv->cold = !e->served && e->ready_ns > inv->queued_ns;
    e->served = true;
    inv->dispatch_ns = uv_hrtime();
    inv->deadline_ms = epoch_ms() + (int64_t)f->cfg.timeout_s * 1000;
    char deadline[32];
    snprintf(deadline, sizeof deadline, "%" PRId64, inv->deadline_ms);
    rw_http_header_t hs[8];
    size_t n = 0;
#define H(name, value)                                                                             \
    hs[n++] = (rw_http_header_t){name, sizeof name - 1, value, strlen(value)}
    H("Content-Type", "application/json");
    H("Lambda-Runtime-Aws-Request-Id", inv->id);
    H("Lambda-Runtime-Deadline-Ms", deadline);
    H("Lambda-Runtime-Invoked-Function-Arn", f->cfg.arn);
    if (inv->trace_id)
        H("Lambda-Runtime-Trace-Id", inv->trace_id);
    if (inv->client_context)
        H("Lambda-Runtime-Client-Context", inv->client_context);
    if (inv->cognito_identity)
        H("Lambda-Runtime-Cognito-Identity", inv->cognito_identity);
#undef H
    uv_timer_stop(&e->timer);
    uv_timer_start(&e->timer, on_env_timer, (uint64_t)f->cfg.timeout_s * 1000, 0);
    rw_http_respond(req, 200, hs, n, inv->payload, inv->len);
    /* Logged once the event is on its way: the function's own lines come
     * through its pipes, read on a later turn of the loop, so they still
     * follow. */
    log_printf(e, "START RequestId: %s Version: $LATEST\n", inv->id);
    (void)m;
}

/* Matches waiting invocations with idle environments, and starts environments
 * for the ones that have none coming. */
static void fn_pump(fn_t *f)
{
    rw_fnmgr_t *m = f->m;
    if (m->closing)
        return;
    while (f->q_head) {
        env_t *idle = NULL;
        for (env_t *e = f->envs; e; e = e->next)
            if (e->state == ENV_IDLE && e->next_req && !e->killed)
                idle = e;
        if (!idle)
            break;
        dispatch(idle, queue_pop(f));
    }
    /* Provisioned environments are kept up whatever the load. */
    int live = 0;
    for (env_t *e = f->envs; e; e = e->next)
        if (e->provisioned && !e->killed)
            live++;
    while (live < f->provisioned_here && env_spawn(f, true))
        live++;
    /* An environment that has answered asks for more work a moment later: a
     * call that arrives in between waits for it rather than starting another
     * (a caller that calls again as soon as it has its answer stays warm). */
    int returning = 0;
    for (env_t *e = f->envs; e; e = e->next)
        if (e->state == ENV_BUSY && !e->inv && !e->killed && !e->late)
            returning++;
    while (f->queued > f->starting + returning) {
        if (m->n_envs >= m->opts.max_environments) {
            /* Make room: reap an idle environment of another function. */
            env_t *victim = NULL;
            for (size_t i = 0; i < m->n_fns && !victim; i++)
                for (env_t *e = m->fns[i].envs; e && !victim; e = e->next)
                    if (e->state == ENV_IDLE && !e->provisioned && !e->killed)
                        victim = e;
            if (victim)
                env_kill(victim, "idle");
            break; /* the queue waits for an environment to free up */
        }
        if (!env_spawn(f, false)) {
            rw_invoke_t *inv = queue_pop(f);
            if (inv)
                invoke_fail(inv, RW_INVOKE_INIT_ERROR, "Runtime.InvalidEntrypoint",
                            "the function's runtime could not be started");
            continue;
        }
    }
}

/* ---- the Runtime API ------------------------------------------------------------ */

static void api_error(rw_http_req_t *req, int status, const char *type, const char *message)
{
    char body[512];
    int n = snprintf(body, sizeof body, "{\"errorMessage\":\"%s\",\"errorType\":\"%s\"}", message,
                     type);
    rw_http_header_t h = {"Content-Type", 12, "application/json", 16};
    rw_http_respond(req, status, &h, 1, body, (size_t)n);
}

static void api_accepted(rw_http_req_t *req)
{
    static const char ok[] = "{\"status\":\"OK\"}";
    rw_http_header_t h = {"Content-Type", 12, "application/json", 16};
    rw_http_respond(req, 202, &h, 1, ok, sizeof ok - 1);
}

static void on_next_abort(rw_http_req_t *req, int err)
{
    env_t *e = req->data;
    if (e->next_req == req) {
        /* The runtime hung up its long poll: it cannot get work any more. */
        e->next_req = NULL;
        rw_http_res_end(req, NULL, 0);
        env_kill(e, "runtime-gone");
    } else {
        rw_http_res_end(req, NULL, 0);
    }
}

static void api_next(env_t *e, rw_http_req_t *req)
{
    fn_t *f = e->fn;
    if (e->next_req) {
        api_error(req, 400, "InvalidStateTransition", "a next request is already waiting");
        return;
    }
    if (e->inv) {
        /* Asking for more work without answering: the invocation has failed. */
        invoke_fail(e->inv, RW_INVOKE_FUNCTION_ERROR, "Runtime.NoResponse",
                    "the runtime asked for the next invocation without answering this one");
    }
    if (e->state == ENV_STARTING) {
        e->ready_ns = uv_hrtime();
        e->init_ms = (double)(e->ready_ns - e->spawn_ns) / 1e6;
        /* A provisioned environment's init happens before any call: it is
         * reported now, as Lambda does, not with a first invocation. */
        if (e->provisioned)
            log_printf(e, "INIT_REPORT Init Duration: %.2f ms\tPhase: init\tStatus: success\n",
                       e->init_ms);
        f->starting--;
        uv_timer_stop(&e->timer);
    }
    e->state = ENV_IDLE;
    e->late = false;
    e->next_req = req;
    req->data = e;
    rw_http_req_on_abort(req, on_next_abort);
    uv_timer_stop(&e->timer);
    if (!e->provisioned && e->m->opts.idle_ms)
        uv_timer_start(&e->timer, on_env_timer, e->m->opts.idle_ms, 0);
    fn_pump(f);
}

typedef struct {
    env_t *env;
    int kind; /* 0 response, 1 error, 2 init error */
} body_ctx_t;

static const char *header_or(const rw_http_req_t *req, const char *name, const char *dflt)
{
    const char *v = rw_http_req_header(req, name);
    return v && *v ? v : dflt;
}

static void on_buffered_body(rw_http_req_t *req, int status, const char *body, size_t len)
{
    env_t *e = req->data;
    rw_invoke_t *inv = e->inv;
    const char *path = req->path;
    bool is_init = strstr(path, "/init/error") != NULL;
    bool is_error = !is_init && strstr(path, "/error") != NULL;
    if (is_init) {
        if (status != 0) {
            api_error(req, 413, "RequestEntityTooLarge", "init error body too large");
            env_kill(e, "init-error");
            return;
        }
        free(e->init_error);
        free(e->init_error_type);
        e->init_error = strndup(body, len);
        e->init_error_type = dupstr(header_or(req, "Lambda-Runtime-Function-Error-Type",
                                              "Runtime.InitError"));
        log_printf(e, "INIT_REPORT Init Duration: %.2f ms\tPhase: init\tStatus: error\tError Type: %s\n",
                   (double)(uv_hrtime() - e->spawn_ns) / 1e6, e->init_error_type);
        api_accepted(req);
        env_kill(e, "init-error");
        return;
    }
    if (!inv) {
        api_error(req, 400, "InvalidStateTransition", "no invocation is in progress");
        return;
    }
    if (status == RW_ELIMIT) {
        api_error(req, 413, "RequestEntityTooLarge",
                  "Exceeded maximum allowed payload size (6291556 bytes).");
        log_printf(e, "Function.ResponseSizeTooLarge: response payload over 6 MB\n");
        invoke_fail(inv, RW_INVOKE_RESPONSE_TOO_LARGE, "Function.ResponseSizeTooLarge",
                    "Response payload size exceeded maximum allowed payload size (6291556 bytes).");
        return;
    }
    if (status != 0) {
        /* The runtime's connection broke mid-body: it will likely exit. */
        rw_http_res_end(req, NULL, 0);
        return;
    }
    api_accepted(req);
    if (is_error) {
        const char *type = header_or(req, "Lambda-Runtime-Function-Error-Type", "Unhandled");
        char *t = strdup(type);
        invoke_finish(inv, RW_INVOKE_FUNCTION_ERROR, body, len, t);
        free(t);
    } else {
        invoke_finish(inv, RW_INVOKE_OK, body, len, NULL);
    }
}

/* A streamed response: every piece goes to the caller as it arrives, and the
 * caller's "stop" pauses the runtime's socket (backpressure to the function). */
static bool on_stream_piece(rw_http_req_t *req, const char *piece, size_t len)
{
    /* req->data is the environment, which outlives its requests; the
     * invocation may be over already (timeout, cancel): then drop the bytes. */
    env_t *e = req->data;
    rw_invoke_t *inv = e->inv;
    if (!inv || inv->resp_req != req || inv->detached)
        return true;
    if (inv->cbs.stream_data)
        return inv->cbs.stream_data(inv, piece, len, inv->arg);
    if (inv->collect_len + len > STREAM_COLLECT_MAX)
        return true; /* checked at the end */
    if (inv->collect_len + len > inv->collect_cap) {
        size_t cap = inv->collect_cap ? inv->collect_cap * 2 : 65536;
        while (cap < inv->collect_len + len)
            cap *= 2;
        char *c = realloc(inv->collect, cap);
        if (!c)
            return true;
        inv->collect = c;
        inv->collect_cap = cap;
    }
    memcpy(inv->collect + inv->collect_len, piece, len);
    inv->collect_len += len;
    return true;
}

static void on_stream_end(rw_http_req_t *req, int status)
{
    env_t *e = req->data;
    rw_invoke_t *inv = e->inv;
    if (!inv || inv->resp_req != req) {
        rw_http_req_close_after(req);
        rw_http_res_end(req, NULL, 0);
        return;
    }
    inv->resp_req = NULL;
    if (status != 0) {
        rw_http_req_close_after(req);
        rw_http_res_end(req, NULL, 0);
        invoke_fail(inv, RW_INVOKE_FUNCTION_ERROR, "Runtime.TruncatedResponse",
                    "the streamed response ended before its last chunk");
        return;
    }
    size_t nt;
    const rw_http_header_t *tr = rw_http_req_trailers(req, &nt);
    const char *etype = NULL, *ebody = NULL;
    for (size_t i = 0; i < nt; i++) {
        if (!strcasecmp(tr[i].name, "Lambda-Runtime-Function-Error-Type"))
            etype = tr[i].value;
        else if (!strcasecmp(tr[i].name, "Lambda-Runtime-Function-Error-Body"))
            ebody = tr[i].value;
    }
    char *type = dupstr(etype);
    char *ebody_copy = dupstr(ebody);
    api_accepted(req);
    if (type) {
        /* The error body travels base64-encoded in the trailer; the caller gets
         * it as it came (it has already sent the status line anyway). */
        invoke_finish(inv, RW_INVOKE_FUNCTION_ERROR, ebody_copy, ebody_copy ? strlen(ebody_copy) : 0,
                      type);
    } else if (!inv->cbs.stream_data && inv->collect_len > STREAM_COLLECT_MAX) {
        invoke_fail(inv, RW_INVOKE_RESPONSE_TOO_LARGE, "Function.ResponseSizeTooLarge",
                    "streamed response larger than the 20 MB a buffered caller accepts");
    } else {
        invoke_finish(inv, RW_INVOKE_OK, inv->collect, inv->collect_len, NULL);
    }
    free(type);
    free(ebody_copy);
}

static void on_response_abort(rw_http_req_t *req, int err)
{
    /* The body sink reports the failure (on_stream_end / on_buffered_body). */
}

static void api_post(env_t *e, rw_http_req_t *req, const char *rest, size_t rest_len)
{
    /* rest: "invocation/{id}/response" | "invocation/{id}/error" | "init/error" */
    req->data = e;
    if (rest_len == 10 && !memcmp(rest, "init/error", 10)) {
        if (e->state != ENV_STARTING) {
            api_error(req, 403, "InvalidStateTransition", "init/error is only valid during init");
            return;
        }
        if (rw_http_req_read_body(req, RW_LAMBDA_PAYLOAD_MAX, on_buffered_body) != 0)
            api_error(req, 413, "RequestEntityTooLarge", "init error body too large");
        return;
    }
    if (rest_len < 11 || memcmp(rest, "invocation/", 11) != 0) {
        api_error(req, 404, "NotFound", "unknown Runtime API path");
        return;
    }
    const char *id = rest + 11;
    const char *slash = memchr(id, '/', rest_len - 11);
    if (!slash) {
        api_error(req, 404, "NotFound", "unknown Runtime API path");
        return;
    }
    size_t id_len = (size_t)(slash - id);
    size_t tail_len = rest_len - 11 - id_len - 1;
    const char *tail = slash + 1;
    bool is_response = tail_len == 8 && !memcmp(tail, "response", 8);
    bool is_error = tail_len == 5 && !memcmp(tail, "error", 5);
    if (!is_response && !is_error) {
        api_error(req, 404, "NotFound", "unknown Runtime API path");
        return;
    }
    rw_invoke_t *inv = e->inv;
    if (!inv || strlen(inv->id) != id_len || memcmp(inv->id, id, id_len) != 0) {
        api_error(req, 400, "InvalidRequestID", "Invalid request ID");
        return;
    }
    const char *mode = rw_http_req_header(req, "Lambda-Runtime-Function-Response-Mode");
    if (is_response && mode && !strcasecmp(mode, "streaming")) {
        inv->streaming = true;
        inv->resp_req = req;
        snprintf(inv->content_type, sizeof inv->content_type, "%s",
                 header_or(req, "Content-Type", ""));
        rw_http_req_on_abort(req, on_response_abort);
        if (inv->cbs.stream_start && !inv->detached)
            inv->cbs.stream_start(inv, inv->arg);
        rw_http_body_sink_t sink = {on_stream_piece, on_stream_end};
        if (rw_http_req_body_start(req, &sink, 0) != 0) {
            inv->resp_req = NULL;
            api_error(req, 400, "InvalidRequest", "cannot read the streamed response");
            invoke_fail(inv, RW_INVOKE_FUNCTION_ERROR, "Runtime.TruncatedResponse",
                        "the streamed response could not be read");
        }
        return;
    }
    int rc = rw_http_req_read_body(req, RW_LAMBDA_PAYLOAD_MAX, on_buffered_body);
    if (rc == RW_ELIMIT)
        on_buffered_body(req, RW_ELIMIT, NULL, 0);
    else if (rc != 0)
        rw_http_res_end(req, NULL, 0);
}

static void on_api_request(rw_http_req_t *req, void *arg)
{
    env_t *e = arg;
    if (e->exited || e->killed) {
        rw_http_req_close_after(req);
        api_error(req, 410, "EnvironmentGone", "this environment is shutting down");
        return;
    }
    size_t plen = strlen(RUNTIME_PREFIX);
    if (req->path_len < plen || memcmp(req->path, RUNTIME_PREFIX, plen) != 0) {
        api_error(req, 404, "NotFound", "unknown Runtime API path");
        return;
    }
    const char *rest = req->path + plen;
    size_t rest_len = req->path_len - plen;
    if (!strcmp(req->method, "GET") && rest_len == 15 && !memcmp(rest, "invocation/next", 15)) {
        api_next(e, req);
        return;
    }
    if (!strcmp(req->method, "POST")) {
        api_post(e, req, rest, rest_len);
        return;
    }
    api_error(req, 405, "MethodNotAllowed", "method not allowed here");
}

/* ---- the manager ---------------------------------------------------------------- */

rw_fnmgr_t *rw_fnmgr_new(uv_loop_t *loop, const rw_fnmgr_opts_t *opts, const rw_fn_config_t *fns,
                         size_t n, char *why, size_t whylen)
{
    for (size_t i = 0; i < n; i++) {
        const rw_fn_config_t *c = &fns[i];
        char path[4200];
        const char *need = NULL;
        if (c->runtime == RW_FN_PROVIDED) {
            snprintf(path, sizeof path, "%s/bootstrap", c->code_path);
            need = path;
        } else if (c->runtime == RW_FN_PYTHON) {
            need = opts->python;
        } else {
            need = opts->node;
            if (!opts->node_ric || access(opts->node_ric, R_OK) != 0) {
                snprintf(why, whylen, "function %s: aws-lambda-ric not installed (%s): run "
                                      "scripts/setup", c->name,
                         opts->node_ric ? opts->node_ric : "no path");
                return NULL;
            }
        }
        if (!need || access(need, X_OK) != 0) {
            snprintf(why, whylen, "function %s: %s is missing or not executable", c->name,
                     need ? need : "the runtime");
            return NULL;
        }
    }
    rw_fnmgr_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->loop = loop;
    m->opts = *opts;
    if (!m->opts.idle_ms)
        m->opts.idle_ms = 600000;
    if (!m->opts.init_timeout_ms)
        m->opts.init_timeout_ms = 10000;
    if (m->opts.max_environments <= 0)
        m->opts.max_environments = 64;
    if (m->opts.account_concurrency <= 0)
        m->opts.account_concurrency = 1000;
    if (!m->opts.region)
        m->opts.region = "us-east-1";
    if (m->opts.worker_count <= 0)
        m->opts.worker_count = 1;
    snprintf(m->logs_dir, sizeof m->logs_dir, "%s/logs", opts->data_dir ? opts->data_dir : ".");
    if (getrandom(m->rng, sizeof m->rng, 0) != sizeof m->rng) {
        m->rng[0] = (uint64_t)time(NULL);
        m->rng[1] = uv_hrtime();
    }
    m->rng[0] |= 1;
    m->shared = opts->shared;
    if (!m->shared) {
        m->shared = rw_fn_shared_new(n);
        m->own_shared = true;
    }
    m->fns = calloc(n ? n : 1, sizeof *m->fns);
    if (!m->shared || !m->fns) {
        if (m->own_shared)
            rw_fn_shared_free(m->shared, n);
        free(m->fns);
        free(m);
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    m->n_fns = n;
    for (size_t i = 0; i < n; i++) {
        fn_t *f = &m->fns[i];
        f->m = m;
        f->cfg = fns[i];
        f->index = (int)i;
        int p = fns[i].provisioned_concurrency;
        int w = m->opts.worker_count, k = m->opts.worker_index;
        f->provisioned_here = p / w + (k < p % w ? 1 : 0);
    }
    for (size_t i = 0; i < n; i++)
        fn_pump(&m->fns[i]);
    return m;
}

int rw_fnmgr_find(const rw_fnmgr_t *m, const char *name)
{
    for (size_t i = 0; i < m->n_fns; i++)
        if (!strcmp(m->fns[i].cfg.name, name))
            return (int)i;
    return -1;
}

const rw_fn_config_t *rw_fnmgr_config(const rw_fnmgr_t *m, int fn)
{
    return fn >= 0 && (size_t)fn < m->n_fns ? &m->fns[fn].cfg : NULL;
}

int rw_fnmgr_environments(const rw_fnmgr_t *m, int fn, int *idle, int *busy)
{
    int total = 0, i = 0, b = 0;
    for (env_t *e = m->fns[fn].envs; e; e = e->next) {
        total++;
        i += e->state == ENV_IDLE;
        b += e->state == ENV_BUSY;
    }
    if (idle)
        *idle = i;
    if (busy)
        *busy = b;
    return total;
}

void rw_fnmgr_close(rw_fnmgr_t *m, void (*done)(void *arg), void *arg)
{
    m->closing = true;
    m->close_done = done;
    m->close_arg = arg;
    /* Everything queued fails now; running invocations fail when their
     * environment exits. */
    for (size_t i = 0; i < m->n_fns; i++) {
        rw_invoke_t *inv;
        while ((inv = queue_pop(&m->fns[i])))
            invoke_fail(inv, RW_INVOKE_SHUTDOWN, "Runtime.Shutdown", "reelway is shutting down");
    }
    m->pending_envs = 1; /* held until every environment is asked to stop */
    for (size_t i = 0; i < m->n_fns; i++)
        for (env_t *e = m->fns[i].envs; e; e = e->next) {
            m->pending_envs++;
            env_kill(e, "shutdown");
        }
    /* Environments already unlinked but not yet freed are counted too. */
    if (--m->pending_envs == 0) {
        if (m->own_shared)
            rw_fn_shared_free(m->shared, m->n_fns);
        free(m->fns);
        free(m);
        if (done)
            done(arg);
    }
}
