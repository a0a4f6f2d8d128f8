/* Functions as Lambda execution environments, through `reelway serve`: the C
 * runtime client's sample (rw_fn_test, functions/samples/test) behind an HTTP
 * API, one handler per function (tests/integration/functions/template.yaml).
 * Echo; errors, timeouts, crashes and init failures with what the logs say;
 * warm reuse, idle reaping and provisioned environments, seen as processes;
 * reserved concurrency across worker processes; Lambda's payload limits;
 * MemorySize; the standard environment variables; streamed responses with the
 * HTTP prelude, failing mid-stream, and 100 MB through a slow client with the
 * function's and the gateway's memory flat. */
#define _GNU_SOURCE /* strcasestr, memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rw_http_client.h"
#include "rw_test.h"

#define MiB (1024 * 1024)
/* How long the test's server gives an init phase (--init-timeout-ms): short,
 * so that an init that outlasts it fails in seconds, long enough for every
 * other cold start on a loaded machine or under the sanitizers. */
#define INIT_TIMEOUT_MS "3000"

typedef struct server_s {
    char dir[512];
    char log[600];
    rw_test_proc_t proc;
    int port;
} server_t;

/* The server most tests share: one worker, so that warm environments, their
 * counters and their processes are deterministic. */
static server_t MAIN;
/* A test's own server (other options), stopped by stop_other if the test
 * failed before it could stop it. */
static server_t OTHER;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void dump_file(const char *path)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "echo '--- %s:'; tail -40 '%s'", path, path);
    (void)system(cmd);
}

/* ---- the server ------------------------------------------------------------------ */

/* Starts `reelway serve` with the test template on the suite's database.
 * extra: more options (NULL-terminated), e.g. an idle limit. */
static void server_start(server_t *s, const char *workers, const char *const extra[])
{
    memset(s, 0, sizeof *s);
    assert_int_equal(rw_test_tmpdir(s->dir, sizeof s->dir, "rw-functions"), 0);
    snprintf(s->log, sizeof s->log, "%s/reelway.log", s->dir);
    char port_file[600], tpl[1024], uri_env[1024];
    snprintf(port_file, sizeof port_file, "%s/port", s->dir);
    snprintf(tpl, sizeof tpl, "%s/tests/integration/functions/template.yaml",
             getenv("RW_SOURCE_DIR"));
    snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", rw_test_mongo_uri());
    char *argv[32] = {(char *)rw_test_reelway_bin(),
                      "serve",
                      "--port",
                      "0",
                      "--port-file",
                      port_file,
                      "--data-dir",
                      s->dir,
                      "--workers",
                      (char *)workers,
                      "--template",
                      tpl,
                      "--init-timeout-ms",
                      INIT_TIMEOUT_MS};
    size_t n = 14;
    for (size_t i = 0; extra && extra[i] && n + 1 < 32; i++)
        argv[n++] = (char *)extra[i];
    argv[n] = NULL;
    /* Under ASan, freed memory waits in a quarantine (256 MB by default, and
     * a per-thread one): keep them small so that the memory test measures
     * the gateway. Other builds ignore the variable. */
    const char *set[] = {
        uri_env, "ASAN_OPTIONS=quarantine_size_mb=1:thread_local_quarantine_size_kb=64", NULL};
    const char *unset[] = {"REELWAY_FUNCTION_IDLE_MS", "REELWAY_FUNCTIONS_DIR",
                           "REELWAY_INIT_TIMEOUT_MS", NULL};
    assert_int_equal(rw_test_proc_start(&s->proc, argv, set, unset, s->log), 0);
    s->port = rw_test_wait_int_file(port_file, 60000);
    if (s->port <= 0) {
        dump_file(s->log);
        rw_test_proc_stop(&s->proc, SIGKILL, 10000);
        s->proc.pid = 0;
        fail_msg("reelway did not start (its log is above)");
    }
}

/* No process wrote a sanitizer report: the function processes' reports land
 * in their logs, reelway's in its own, not in the test's output. */
static void check_logs_clean(const server_t *s)
{
    int hits = rw_test_grep_tree(s->dir, "Sanitizer") + rw_test_grep_tree(s->dir, "runtime error:");
    if (hits) {
        char cmd[800];
        snprintf(cmd, sizeof cmd, "grep -rn -A30 -e Sanitizer -e 'runtime error:' '%s' | head -200",
                 s->dir);
        (void)system(cmd);
    }
    assert_int_equal(hits, 0);
}

/* SIGTERM: reelway stops its workers and every environment, and exits 0. */
static void server_stop(server_t *s)
{
    int status = rw_test_proc_stop(&s->proc, SIGTERM, 30000);
    s->proc.pid = 0; /* reaped: never signal that pid again */
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        dump_file(s->log);
        fail_msg("reelway exited with status %d", status);
    }
    check_logs_clean(s);
    rw_test_rmtree(s->dir);
}

static int stop_other(void **state)
{
    if (OTHER.proc.pid > 0) {
        rw_test_proc_stop(&OTHER.proc, SIGTERM, 30000);
        OTHER.proc.pid = 0;
        rw_test_rmtree(OTHER.dir);
    }
    return 0;
}

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    server_start(&MAIN, "1", NULL);
    return 0;
}

/* After a failure: whatever still runs is stopped (shutdown_is_clean checks
 * the clean stop; cmocka ignores what a group teardown says). */
static int teardown(void **state)
{
    if (MAIN.proc.pid > 0) {
        rw_test_proc_stop(&MAIN.proc, SIGKILL, 10000);
        MAIN.proc.pid = 0;
        rw_test_rmtree(MAIN.dir);
    }
    return 0;
}

/* ---- HTTP ---------------------------------------------------------------------------- */

/* One request; the answer must have expect_status and a JSON body. */
static cJSON *call(const server_t *s, const char *method, const char *path, const char *body,
                   int expect_status, rw_test_response_t *r)
{
    const char *headers = body ? "Content-Type: application/json\r\n" : NULL;
    assert_int_equal(rw_test_http(s->port, method, path, headers, body, body ? strlen(body) : 0, r),
                     0);
    if (r->status != expect_status) {
        fprintf(stderr, "%s %s -> %d %.500s\n", method, path, r->status, r->body);
        dump_file(s->log);
        rw_test_response_free(r);
        fail_msg("%s %s: status %d, expected %d", method, path, r->status, expect_status);
    }
    cJSON *j = cJSON_Parse(r->body);
    if (j == NULL) {
        fprintf(stderr, "%s %s: not JSON: %.300s\n", method, path, r->body);
        rw_test_response_free(r);
        fail_msg("%s %s: the answer is not JSON", method, path);
    }
    return j;
}

/* The same, for when only the JSON matters. */
static cJSON *get(const server_t *s, const char *path, int expect_status)
{
    rw_test_response_t r;
    cJSON *j = call(s, "GET", path, NULL, expect_status, &r);
    rw_test_response_free(&r);
    return j;
}

static void expect_message(const server_t *s, const char *path, int status, const char *message)
{
    cJSON *j = get(s, path, status);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
    assert_true(cJSON_IsString(m));
    assert_string_equal(m->valuestring, message);
    cJSON_Delete(j);
}

static int int_at(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v))
        fail_msg("no number '%s' in the answer", key);
    return v->valueint;
}

static const char *str_at(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- function logs ------------------------------------------------------------------- */

static char logbuf[1 << 20];

/* Waits (bounded) until a function's logs contain needle; returns them. */
static const char *wait_log(const server_t *s, const char *fn, const char *needle)
{
    for (long deadline = now_ms() + 20000; now_ms() < deadline; rw_test_sleep_ms(20)) {
        rw_test_function_logs(s->dir, fn, logbuf, sizeof logbuf);
        if (strstr(logbuf, needle))
            return logbuf;
    }
    fprintf(stderr, "--- logs of %s:\n%s\n", fn, logbuf);
    fail_msg("the logs of %s never said '%s'", fn, needle);
    return NULL;
}

/* ---- processes ---------------------------------------------------------------------- */

static pid_t parent_of(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
    char st;
    int ppid;
    if (!p || sscanf(p + 1, " %c %d", &st, &ppid) != 2)
        return -1;
    return ppid;
}

/* Whether pid's environment holds the entry "NAME=VALUE". */
static bool environ_has(pid_t pid, const char *entry)
{
    char path[64];
    static char env[1 << 16];
    snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(env, 1, sizeof env - 1, f);
    fclose(f);
    env[n] = '\0';
    for (size_t i = 0; i < n; i += strlen(env + i) + 1)
        if (!strcmp(env + i, entry))
            return true;
    return false;
}

/* The server's worker processes (its children: it uses the suite's database,
 * so it starts no FerretDB). */
static int worker_pids(const server_t *s, pid_t *out, int cap)
{
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid > 0 && parent_of(pid) == s->proc.pid && rw_test_pid_alive(pid) && n < cap)
            out[n++] = pid;
    }
    if (d)
        closedir(d);
    return n;
}

/* The live environments of a function: processes whose parent is one of the
 * server's workers and whose AWS_LAMBDA_FUNCTION_NAME is fn. */
static int env_pids(const server_t *s, const char *fn, pid_t *out, int cap)
{
    pid_t workers[16];
    int nw = worker_pids(s, workers, 16);
    char entry[128];
    snprintf(entry, sizeof entry, "AWS_LAMBDA_FUNCTION_NAME=%s", fn);
    int n = 0;
    DIR *d = opendir("/proc");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0)
            continue;
        pid_t ppid = parent_of(pid);
        bool ours = false;
        for (int i = 0; i < nw; i++)
            ours |= ppid == workers[i];
        if (ours && rw_test_pid_alive(pid) && environ_has(pid, entry) && n < cap)
            out[n++] = pid;
    }
    if (d)
        closedir(d);
    return n;
}

/* The one environment of fn (waiting for it, bounded). */
static pid_t the_env(const server_t *s, const char *fn)
{
    pid_t pids[8];
    int n = 0;
    for (long deadline = now_ms() + 20000; now_ms() < deadline; rw_test_sleep_ms(20))
        if ((n = env_pids(s, fn, pids, 8)) >= 1)
            break;
    assert_int_equal(n, 1);
    return pids[0];
}

/* Waits (bounded) for a process to be gone. */
static bool wait_gone(pid_t pid, int timeout_ms)
{
    for (long deadline = now_ms() + timeout_ms; now_ms() < deadline; rw_test_sleep_ms(20))
        if (!rw_test_pid_alive(pid))
            return true;
    return !rw_test_pid_alive(pid);
}

/* A /proc/PID/status field in kB (VmRSS, VmHWM), or -1. */
static long status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl) && line[fl] == ':') {
            kb = atol(line + fl + 1);
            break;
        }
    fclose(f);
    return kb;
}

/* ---- the tests ----------------------------------------------------------------------- */

/* ProvisionedConcurrencyConfig: the environment is started and initialized
 * when reelway starts, before any request; the first call finds it warm. */
static void provisioned_environment_is_warm_before_the_first_call(void **state)
{
    pid_t pid = the_env(&MAIN, "Provisioned");
    wait_log(&MAIN, "Provisioned", "INFO\tinit done");
    rw_test_function_logs(MAIN.dir, "Provisioned", logbuf, sizeof logbuf);
    assert_null(strstr(logbuf, "START RequestId"));

    rw_test_response_t r;
    cJSON *j = call(&MAIN, "GET", "/provisioned", NULL, 200, &r);
    assert_int_equal(int_at(j, "count"), 1);
    assert_int_equal(int_at(j, "pid"), (int)pid);
    cJSON_Delete(j);
    rw_test_response_free(&r);
    j = get(&MAIN, "/provisioned", 200);
    assert_int_equal(int_at(j, "count"), 2);
    assert_int_equal(int_at(j, "pid"), (int)pid);
    cJSON_Delete(j);

    /* Its init was reported on its own, before the first call; no call was a
     * cold start: no REPORT has an Init Duration, the metrics count none. */
    const char *logs = wait_log(&MAIN, "Provisioned", "REPORT RequestId: ");
    const char *init = strstr(logs, "INIT_REPORT Init Duration: ");
    assert_non_null(init);
    assert_true(init < strstr(logs, "START RequestId: "));
    assert_non_null(strstr(init, "\tPhase: init\tStatus: success\n"));
    assert_null(strstr(logs, "\tInit Duration: "));
    assert_int_equal(rw_test_http(MAIN.port, "GET", "/_/metrics", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(
        strstr(r.body, "reelway_function_cold_starts_total{function=\"Provisioned\"} 0\n"));
    rw_test_response_free(&r);
}

/* The slow reader's side of a chunked body: checks the framing and that byte
 * i is 'a' + i % 26, as the stream handlers write it. */
typedef struct chunked_s {
    enum { CH_SIZE, CH_DATA, CH_DATA_END, CH_TRAILER, CH_DONE, CH_BAD } state;
    char line[128];
    size_t line_len;
    uint64_t remaining, total;
} chunked_t;

static void chunked_feed(chunked_t *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n && c->state != CH_BAD;) {
        switch (c->state) {
        case CH_SIZE:
        case CH_TRAILER:
        case CH_DATA_END: {
            char ch = p[i++];
            if (c->line_len + 1 >= sizeof c->line) {
                c->state = CH_BAD;
                break;
            }
            c->line[c->line_len++] = ch;
            if (ch != '\n')
                break;
            c->line[c->line_len] = '\0';
            bool empty = !strcmp(c->line, "\r\n");
            c->line_len = 0;
            if (c->state == CH_DATA_END) {
                c->state = empty ? CH_SIZE : CH_BAD;
            } else if (c->state == CH_TRAILER) {
                if (empty)
                    c->state = CH_DONE;
            } else {
                char *end;
                c->remaining = strtoull(c->line, &end, 16);
                if (end == c->line)
                    c->state = CH_BAD;
                else
                    c->state = c->remaining ? CH_DATA : CH_TRAILER;
            }
            break;
        }
        case CH_DATA: {
            size_t take = n - i < c->remaining ? n - i : (size_t)c->remaining;
            for (size_t k = 0; k < take; k++)
                if (p[i + k] != (char)('a' + (c->total + k) % 26)) {
                    c->state = CH_BAD;
                    break;
                }
            if (c->state == CH_BAD)
                break;
            c->total += take;
            c->remaining -= take;
            i += take;
            if (!c->remaining)
                c->state = CH_DATA_END;
            break;
        }
        case CH_DONE:
            c->state = CH_BAD; /* nothing may follow on this connection */
            break;
        case CH_BAD:
            break;
        }
    }
}

/* 100 MB streamed to a client that reads slowly: TCP pushes back, the gateway
 * stops reading from the environment, the function waits for drain. Neither
 * the function's nor the gateway worker's memory grows with the body. */
static void streamed_100mb_through_a_slow_client_keeps_memory_flat(void **state)
{
    /* A first, small call starts the environment. */
    rw_test_response_t r;
    assert_int_equal(rw_test_http(MAIN.port, "GET", "/stream-large?bytes=65536", NULL, NULL, 0, &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 65536);
    rw_test_response_free(&r);
    pid_t fn = the_env(&MAIN, "StreamLarge");
    pid_t worker;
    assert_int_equal(worker_pids(&MAIN, &worker, 1), 1);
    long fn_before = status_kb(fn, "VmRSS"), gw_before = status_kb(worker, "VmRSS");
    assert_true(fn_before > 0 && gw_before > 0);

    int fd = rw_test_connect(MAIN.port);
    assert_true(fd >= 0);
    int rcvbuf = 32 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    const char *req = "GET /stream-large HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_int_equal(rw_test_send(fd, req, strlen(req)), 0);

    static char buf[65536];
    char head[8192];
    size_t head_len = 0;
    bool in_body = false;
    chunked_t ch = {.state = CH_SIZE};
    long fn_max = fn_before, gw_max = gw_before;
    long deadline = now_ms() + 240000;
    for (long reads = 0;
         reads < 1000000 && ch.state != CH_DONE && ch.state != CH_BAD && now_ms() < deadline;
         reads++) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        const char *p = buf;
        size_t len = (size_t)n;
        if (!in_body) {
            size_t take = len < sizeof head - 1 - head_len ? len : sizeof head - 1 - head_len;
            memcpy(head + head_len, p, take);
            head_len += take;
            head[head_len] = '\0';
            char *end = strstr(head, "\r\n\r\n");
            if (!end) {
                assert_true(head_len < sizeof head - 1);
                continue;
            }
            size_t hl = (size_t)(end + 4 - head);
            assert_memory_equal(head, "HTTP/1.1 200 ", 13);
            assert_non_null(strcasestr(head, "\r\ntransfer-encoding: chunked\r\n"));
            in_body = true;
            /* What followed the head in this read is body. */
            size_t used = hl - (head_len - take);
            p += used;
            len -= used;
        }
        chunked_feed(&ch, p, len);
        if (reads % 32 == 0) {
            long a = status_kb(fn, "VmRSS"), b = status_kb(worker, "VmRSS");
            fn_max = a > fn_max ? a : fn_max;
            gw_max = b > gw_max ? b : gw_max;
        }
        rw_test_sleep_ms(1); /* the slow reader */
    }
    if (ch.state != CH_DONE)
        fprintf(stderr, "stream: state %d after %llu bytes\n", (int)ch.state,
                (unsigned long long)ch.total);
    assert_int_equal(ch.state, CH_DONE);
    assert_int_equal(ch.total, 100ull * MiB);
    assert_true(rw_test_wait_closed(fd, 10000));
    close(fd);

    /* Peak memory: sampled during the stream, and the kernel's high-water
     * mark where it keeps one. */
    long fn_hwm = status_kb(fn, "VmHWM"), gw_hwm = status_kb(worker, "VmHWM");
    fn_max = fn_hwm > fn_max ? fn_hwm : fn_max;
    gw_max = gw_hwm > gw_max ? gw_hwm : gw_max;
    fprintf(stderr, "memory (kB): function %ld -> %ld, gateway worker %ld -> %ld\n", fn_before,
            fn_max, gw_before, gw_max);
    assert_true(fn_max - fn_before < 32 * 1024);
    assert_true(gw_max - gw_before < 32 * 1024);

    /* The function waited for drain: backpressure reached it. */
    const char *logs = wait_log(&MAIN, "StreamLarge", "stream: 104857600 of 104857600 bytes");
    const char *line = strstr(logs, "stream: 104857600 of 104857600 bytes written, ");
    long drains = atol(line + strlen("stream: 104857600 of 104857600 bytes written, "));
    assert_true(drains > 0);
}

static void echo_returns_the_event(void **state)
{
    rw_test_response_t r;
    cJSON *ev = call(&MAIN, "POST", "/echo?x=1", "{\"hello\":\"world\"}", 200, &r);
    assert_string_equal(str_at(ev, "version"), "2.0");
    assert_string_equal(str_at(ev, "routeKey"), "ANY /echo");
    assert_string_equal(str_at(ev, "rawPath"), "/echo");
    assert_string_equal(str_at(ev, "rawQueryString"), "x=1");
    assert_string_equal(str_at(ev, "body"), "{\"hello\":\"world\"}");
    char ct[64];
    assert_string_equal(rw_test_header(&r, "content-type", ct, sizeof ct), "application/json");
    cJSON_Delete(ev);
    rw_test_response_free(&r);
    /* The function's own line sits between START and END of its request. */
    const char *logs = wait_log(&MAIN, "Echo", "END RequestId: ");
    const char *start = strstr(logs, "START RequestId: ");
    const char *own = strstr(logs, "\tINFO\techo: ");
    const char *end = strstr(logs, "END RequestId: ");
    assert_non_null(start);
    assert_non_null(own);
    assert_true(start < own && own < end);
}

static void function_error_is_502_and_logged(void **state)
{
    expect_message(&MAIN, "/error?type=Test.Broken&message=it%20broke%20on%20purpose", 502,
                   "Internal server error");
    wait_log(&MAIN, "Fails",
             "\tERROR\tInvoke Error \t{\"errorMessage\":\"it broke on purpose\","
             "\"errorType\":\"Test.Broken\"");
    /* A handled error leaves the environment as it was: the next call finds it. */
    pid_t pid = the_env(&MAIN, "Fails");
    expect_message(&MAIN, "/error", 502, "Internal server error");
    assert_int_equal(the_env(&MAIN, "Fails"), pid);
}

static void timeout_is_504_and_replaces_the_environment(void **state)
{
    cJSON *j = get(&MAIN, "/sleep?ms=10", 200);
    assert_int_equal(int_at(j, "slept_ms"), 10);
    cJSON_Delete(j);
    pid_t before = the_env(&MAIN, "Slow");

    /* Timeout: 1 in the template. */
    rw_test_response_t r;
    j = call(&MAIN, "GET", "/sleep?ms=5000", NULL, 504, &r);
    assert_string_equal(str_at(j, "message"), "Endpoint request timed out");
    cJSON_Delete(j);
    rw_test_response_free(&r);
    assert_true(wait_gone(before, 10000));
    /* Lambda's lines: the timeout, then a REPORT with its status and the
     * memory measured before the kill. */
    const char *logs = wait_log(&MAIN, "Slow", "\tStatus: timeout");
    const char *said = strstr(logs, " Task timed out after 1.00 seconds\n");
    assert_non_null(said);
    const char *report = strstr(said, "REPORT RequestId: ");
    assert_non_null(report);
    const char *mem = strstr(report, "\tMax Memory Used: ");
    assert_non_null(mem);
    assert_true(mem < strstr(report, "\tStatus: timeout"));
    assert_true(atoi(mem + strlen("\tMax Memory Used: ")) > 0);

    /* The next call gets a new environment. */
    j = get(&MAIN, "/sleep?ms=10", 200);
    assert_int_equal(int_at(j, "slept_ms"), 10);
    cJSON_Delete(j);
    pid_t after = the_env(&MAIN, "Slow");
    assert_int_not_equal(after, before);
}

static void crash_is_502_and_replaces_the_environment(void **state)
{
    expect_message(&MAIN, "/crash", 502, "Internal server error");
    wait_log(&MAIN, "Crash", "Runtime exited with error: signal: Aborted");
    wait_log(&MAIN, "Crash", "INFO\tcrashing on purpose");
    pid_t pids[4];
    for (long deadline = now_ms() + 10000; now_ms() < deadline; rw_test_sleep_ms(20))
        if (env_pids(&MAIN, "Crash", pids, 4) == 0)
            break;
    assert_int_equal(env_pids(&MAIN, "Crash", pids, 4), 0);

    /* A second call starts a second environment (its own log stream), which
     * crashes in turn; the gateway carries on. */
    expect_message(&MAIN, "/crash", 502, "Internal server error");
    int files = 0;
    for (long deadline = now_ms() + 10000; now_ms() < deadline && files < 2; rw_test_sleep_ms(20))
        files = rw_test_function_logs(MAIN.dir, "Crash", logbuf, sizeof logbuf);
    assert_int_equal(files, 2);
    cJSON *j = get(&MAIN, "/sleep?ms=1", 200);
    cJSON_Delete(j);
}

static void init_error_is_502_and_logged(void **state)
{
    expect_message(&MAIN, "/init-fail", 502, "Internal server error");
    wait_log(&MAIN, "InitFails",
             "\tERROR\tInit Error\tSample.InitFailed: the init-fail handler never starts");
    wait_log(&MAIN, "InitFails", "\tPhase: init\tStatus: error\tError Type: Sample.InitFailed");
    rw_test_function_logs(MAIN.dir, "InitFails", logbuf, sizeof logbuf);
    assert_null(strstr(logbuf, "START RequestId"));
}

/* The server's init limit is INIT_TIMEOUT_MS (Lambda's is 10 s): an init that
 * outlasts it fails the cold start; one within it is fine. */
static void init_over_the_limit_fails_the_cold_start(void **state)
{
    expect_message(&MAIN, "/init-too-long", 502, "Internal server error");
    wait_log(&MAIN, "InitTooLong", "\tPhase: init\tStatus: timeout");
    pid_t pids[4];
    for (long deadline = now_ms() + 10000; now_ms() < deadline; rw_test_sleep_ms(20))
        if (env_pids(&MAIN, "InitTooLong", pids, 4) == 0)
            break;
    assert_int_equal(env_pids(&MAIN, "InitTooLong", pids, 4), 0);

    cJSON *j = get(&MAIN, "/init-in-time", 200);
    assert_true(int_at(j, "init_ms") >= 100);
    cJSON_Delete(j);
}

/* One worker: its environment serves call after call, counting them. Each
 * call is made as soon as the previous answer is in, while the environment
 * has not yet asked for more work: it is waited for, no other is started. */
static void warm_environment_is_reused(void **state)
{
    pid_t pid = 0;
    char first_id[64] = "";
    for (int call_no = 1; call_no <= 20; call_no++) {
        rw_test_response_t r;
        cJSON *j = call(&MAIN, "GET", "/counter", NULL, 200, &r);
        assert_int_equal(int_at(j, "count"), call_no);
        if (call_no == 1)
            pid = int_at(j, "pid");
        assert_int_equal(int_at(j, "pid"), pid);
        cJSON_Delete(j);
        rw_test_response_free(&r);
    }
    assert_int_equal(the_env(&MAIN, "Counter"), pid);
    assert_int_equal(rw_test_function_logs(MAIN.dir, "Counter", logbuf, sizeof logbuf), 1);
    /* Only the first REPORT has an Init Duration: the others were warm. */
    const char *logs = wait_log(&MAIN, "Counter", "REPORT RequestId");
    int reports = 0, with_init = 0;
    for (const char *p = logs; (p = strstr(p, "REPORT RequestId: ")); p++) {
        size_t n = strcspn(p, "\n");
        reports++;
        if (memmem(p, n, "\tInit Duration: ", 16)) {
            with_init++;
            snprintf(first_id, sizeof first_id, "%.36s", p + 18);
        }
    }
    assert_int_equal(reports, 20);
    assert_int_equal(with_init, 1);
    const char *first_start = strstr(logs, "START RequestId: ");
    assert_memory_equal(first_start + 17, first_id, 36);
    rw_test_response_t r;
    assert_int_equal(rw_test_http(MAIN.port, "GET", "/_/metrics", NULL, NULL, 0, &r), 0);
    assert_non_null(strstr(r.body, "reelway_function_cold_starts_total{function=\"Counter\"} 1\n"));
    rw_test_response_free(&r);
}

static void standard_environment_variables(void **state)
{
    cJSON *a = get(&MAIN, "/env", 200);
    cJSON *b = get(&MAIN, "/env-too", 200);
    assert_string_equal(str_at(a, "AWS_LAMBDA_FUNCTION_NAME"), "Env");
    assert_string_equal(str_at(b, "AWS_LAMBDA_FUNCTION_NAME"), "EnvToo");
    assert_string_equal(str_at(a, "_HANDLER"), "env");
    assert_string_equal(str_at(a, "AWS_LAMBDA_FUNCTION_VERSION"), "$LATEST");
    assert_string_equal(str_at(a, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), "256");
    assert_string_equal(str_at(b, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), "128");
    assert_string_equal(str_at(a, "AWS_LAMBDA_LOG_GROUP_NAME"), "/aws/lambda/Env");
    assert_string_equal(str_at(a, "AWS_REGION"), "us-east-1");
    assert_string_equal(str_at(a, "TZ"), ":UTC");
    /* The built bootstrap's directory: the CodeUri mapped into the build tree. */
    char root[1024];
    snprintf(root, sizeof root, "%s/functions/samples/test", getenv("RW_BINARY_DIR"));
    assert_string_equal(str_at(a, "LAMBDA_TASK_ROOT"), root);
    /* Each environment has its own Runtime API on the loopback. */
    const char *api_a = str_at(a, "AWS_LAMBDA_RUNTIME_API");
    const char *api_b = str_at(b, "AWS_LAMBDA_RUNTIME_API");
    assert_non_null(api_a);
    assert_non_null(api_b);
    int port_a = 0, port_b = 0;
    char tail;
    assert_int_equal(sscanf(api_a, "127.0.0.1:%d%c", &port_a, &tail), 1);
    assert_int_equal(sscanf(api_b, "127.0.0.1:%d%c", &port_b, &tail), 1);
    assert_true(port_a > 0 && port_a < 65536 && port_b > 0 && port_b < 65536);
    assert_int_not_equal(port_a, port_b);
    /* The log stream names the environment's log file: DATE/[$LATEST]ID is
     * logs/Env/DATE-ID.log. */
    const char *stream = str_at(a, "AWS_LAMBDA_LOG_STREAM_NAME");
    assert_non_null(stream);
    const char *id = strstr(stream, "/[$LATEST]");
    assert_non_null(id);
    int y, mo, d;
    assert_int_equal(sscanf(stream, "%4d/%2d/%2d/", &y, &mo, &d), 3);
    char path[1400];
    snprintf(path, sizeof path, "%s/logs/Env/%04d-%02d-%02d-%s.log", MAIN.dir, y, mo, d,
             id + strlen("/[$LATEST]"));
    assert_int_equal(access(path, R_OK), 0);
    cJSON_Delete(a);
    cJSON_Delete(b);

    /* The template's Environment, and the database reelway uses. */
    rw_test_response_t r;
    cJSON *j = call(&MAIN, "POST", "/env",
                    "{\"names\":[\"GREETING\",\"MONGODB_URI\",\"RW_NOT_SET_ANYWHERE\"]}", 200, &r);
    assert_string_equal(str_at(j, "GREETING"), "hello from the template");
    assert_string_equal(str_at(j, "MONGODB_URI"), rw_test_mongo_uri());
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "RW_NOT_SET_ANYWHERE")));
    cJSON_Delete(j);
    rw_test_response_free(&r);
}

static int count_headers(const rw_test_response_t *r, const char *name, const char *value)
{
    char needle[256];
    snprintf(needle, sizeof needle, "\r\n%s: %s\r\n", name, value);
    int n = 0;
    for (const char *p = r->head; (p = strcasestr(p, needle)); p++)
        n++;
    return n;
}

/* A streamed answer that starts with Lambda's HTTP-integration prelude: its
 * status, headers and cookies become the response's. */
static void streamed_response_with_the_http_prelude(void **state)
{
    const char *body = "{\"bytes\":5000,\"chunk\":700,\"status\":201,"
                       "\"headers\":{\"content-type\":\"text/plain\",\"x-streamed\":\"yes\"},"
                       "\"cookies\":[\"a=1; Path=/\",\"b=2; HttpOnly\"]}";
    rw_test_response_t r;
    assert_int_equal(rw_test_http(MAIN.port, "POST", "/stream",
                                  "Content-Type: application/json\r\n", body, strlen(body), &r),
                     0);
    assert_int_equal(r.status, 201);
    assert_true(r.chunked);
    char v[128];
    assert_string_equal(rw_test_header(&r, "content-type", v, sizeof v), "text/plain");
    assert_string_equal(rw_test_header(&r, "x-streamed", v, sizeof v), "yes");
    assert_int_equal(count_headers(&r, "set-cookie", "a=1; Path=/"), 1);
    assert_int_equal(count_headers(&r, "set-cookie", "b=2; HttpOnly"), 1);
    assert_non_null(rw_test_header(&r, "apigw-requestid", v, sizeof v));
    assert_int_equal(r.body_len, 5000);
    for (size_t i = 0; i < r.body_len; i++)
        if (r.body[i] != (char)('a' + i % 26))
            fail_msg("byte %zu is '%c'", i, r.body[i]);
    rw_test_response_free(&r);

    /* Without the prelude: 200, the runtime's content type. */
    const char *plain = "{\"bytes\":300,\"content_type\":\"application/x-ndjson\"}";
    assert_int_equal(rw_test_http(MAIN.port, "POST", "/stream",
                                  "Content-Type: application/json\r\n", plain, strlen(plain), &r),
                     0);
    assert_int_equal(r.status, 200);
    assert_string_equal(rw_test_header(&r, "content-type", v, sizeof v), "application/x-ndjson");
    assert_int_equal(r.body_len, 300);
    rw_test_response_free(&r);
}

/* A stream that fails after its status line is out: the client gets what was
 * written, then the error in a trailer, and the connection closes so it knows
 * the body is incomplete. */
static void stream_failing_midway_is_cut(void **state)
{
    const char *bodies[] = {
        "{\"bytes\":100000,\"chunk\":1000,\"fail_after\":5000}",
        "{\"bytes\":100000,\"chunk\":1000,\"fail_after\":5000,\"status\":200,"
        "\"headers\":{\"x-prelude\":\"1\"}}",
    };
    for (size_t k = 0; k < 2; k++) {
        int fd = rw_test_connect(MAIN.port);
        assert_true(fd >= 0);
        char req[512];
        int n = snprintf(req, sizeof req,
                         "POST /stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         strlen(bodies[k]), bodies[k]);
        assert_int_equal(rw_test_send(fd, req, (size_t)n), 0);
        rw_test_response_t r;
        int rc = rw_test_read_response(fd, &r, false);
        assert_int_equal(rc, 0);
        assert_int_equal(r.status, 200);
        assert_true(r.chunked);
        assert_int_equal(r.body_len, 5000);
        assert_non_null(
            strcasestr(r.trailers, "Lambda-Runtime-Function-Error-Type: Sample.StreamFailed"));
        assert_true(rw_test_wait_closed(fd, 10000));
        rw_test_response_free(&r);
        close(fd);
    }
    wait_log(&MAIN, "Stream", "failed on purpose after 5000 bytes");
}

static void reserved_concurrency_zero_always_throttles(void **state)
{
    for (int i = 0; i < 3; i++) {
        rw_test_response_t r;
        assert_int_equal(rw_test_http(MAIN.port, "GET", "/disabled", NULL, NULL, 0, &r), 0);
        assert_int_equal(r.status, 429);
        assert_string_equal(r.body, "{\"message\":\"Too Many Requests\"}");
        rw_test_response_free(&r);
    }
    /* It never ran: no environment, no log. */
    pid_t pids[2];
    assert_int_equal(env_pids(&MAIN, "Disabled", pids, 2), 0);
    assert_int_equal(rw_test_function_logs(MAIN.dir, "Disabled", logbuf, sizeof logbuf), 0);
}

/* ReservedConcurrentExecutions: 1 on a server with two workers: while one
 * call is in flight, every other is throttled, whichever worker takes it (the
 * counters are shared); once it ends, calls go through again. */
static void reserved_concurrency_throttles_across_workers(void **state)
{
    server_t *two = &OTHER;
    server_start(two, "2", NULL);
    int fd = rw_test_connect(two->port);
    assert_true(fd >= 0);
    const char *slow = "GET /one-at-a-time?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n";
    assert_int_equal(rw_test_send(fd, slow, strlen(slow)), 0);
    /* In flight once its environment started it. */
    wait_log(two, "OneAtATime", "START RequestId: ");
    for (int i = 0; i < 4; i++) {
        rw_test_response_t r;
        assert_int_equal(rw_test_http(two->port, "GET", "/one-at-a-time?ms=1", NULL, NULL, 0, &r),
                         0);
        assert_int_equal(r.status, 429);
        assert_string_equal(r.body, "{\"message\":\"Too Many Requests\"}");
        rw_test_response_free(&r);
    }
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"slept_ms\":5000}");
    rw_test_response_free(&r);
    close(fd);
    cJSON *j = get(two, "/one-at-a-time?ms=1", 200);
    assert_int_equal(int_at(j, "slept_ms"), 1);
    cJSON_Delete(j);
    server_stop(two);
}

/* --function-idle-ms: an idle environment is stopped; the next call starts a
 * new one (a cold start). Provisioned environments are kept. */
static void idle_environments_are_reaped(void **state)
{
    server_t *s = &OTHER;
    const char *idle[] = {"--function-idle-ms", "300", NULL};
    server_start(s, "1", idle);
    pid_t provisioned = the_env(s, "Provisioned");
    rw_test_response_t r;
    cJSON *j = call(s, "GET", "/counter", NULL, 200, &r);
    pid_t first = int_at(j, "pid");
    assert_int_equal(int_at(j, "count"), 1);
    cJSON_Delete(j);
    rw_test_response_free(&r);
    assert_true(wait_gone(first, 20000));
    /* Stopped, not crashed: SIGTERM and a clean exit, no error in the log. */
    rw_test_function_logs(s->dir, "Counter", logbuf, sizeof logbuf);
    assert_null(strstr(logbuf, "Runtime.ExitError"));

    j = call(s, "GET", "/counter", NULL, 200, &r);
    pid_t second = int_at(j, "pid");
    assert_int_not_equal(second, first);
    assert_int_equal(int_at(j, "count"), 1);
    cJSON_Delete(j);
    rw_test_response_free(&r);
    /* Two environments, two log streams, and both calls were cold starts. */
    int files = 0, cold = 0;
    for (long deadline = now_ms() + 20000; now_ms() < deadline && cold < 2; rw_test_sleep_ms(20)) {
        files = rw_test_function_logs(s->dir, "Counter", logbuf, sizeof logbuf);
        cold = 0;
        for (const char *p = logbuf; (p = strstr(p, "\tInit Duration: ")); p++)
            cold++;
    }
    assert_int_equal(files, 2);
    assert_int_equal(cold, 2);

    assert_true(rw_test_pid_alive(provisioned));
    server_stop(s);
}

/* Sanitizer builds (functions too) run without the limit: see envmgr.c. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#endif

/* MemorySize bounds what an environment may allocate: 64 MB fit in 128, 512
 * do not, although the machine has them; the environment carries on. */
static void memory_size_is_enforced(void **state)
{
    cJSON *j = get(&MAIN, "/memhog?mb=64", 200);
    assert_int_equal(int_at(j, "allocated_mb"), 64);
    cJSON_Delete(j);
#ifdef SANITIZED
    /* AddressSanitizer's shadow memory counts against RLIMIT_DATA: the
     * gateway says it does not enforce the limit rather than fail them all. */
    wait_log(&MAIN, "MemHog", "reelway: MemorySize (128 MB) is not enforced in a sanitizer build");
#else
    pid_t pid = the_env(&MAIN, "MemHog");
    expect_message(&MAIN, "/memhog?mb=512", 502, "Internal server error");
    const char *logs = wait_log(&MAIN, "MemHog", "could not allocate 512 MB");
    /* What it used stays within its size, as measured. */
    for (const char *p = logs; (p = strstr(p, "\tMax Memory Used: ")); p++)
        assert_true(atoi(p + strlen("\tMax Memory Used: ")) <= 128);
    j = get(&MAIN, "/memhog?mb=64", 200);
    assert_int_equal(int_at(j, "allocated_mb"), 64);
    cJSON_Delete(j);
    assert_int_equal(the_env(&MAIN, "MemHog"), pid);
#endif
}

/* Lambda's 6 MB: an event over it is refused before any function runs (413),
 * a buffered answer over it fails the call (502). */
static void payload_limits(void **state)
{
    /* 5 MB of body make a 5 MB event: it goes through, both ways. */
    size_t n = 5 * MiB;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    rw_test_response_t r;
    assert_int_equal(
        rw_test_http(MAIN.port, "POST", "/echo", "Content-Type: text/plain\r\n", big, n, &r), 0);
    assert_int_equal(r.status, 200);
    cJSON *ev = cJSON_Parse(r.body);
    assert_non_null(ev);
    assert_int_equal(strlen(str_at(ev, "body")), n);
    cJSON_Delete(ev);
    rw_test_response_free(&r);
    free(big);

    n = 6 * MiB + 1000;
    big = malloc(n);
    assert_non_null(big);
    memset(big, 'y', n);
    assert_int_equal(
        rw_test_http(MAIN.port, "POST", "/echo", "Content-Type: text/plain\r\n", big, n, &r), 0);
    assert_int_equal(r.status, 413);
    cJSON *j = cJSON_Parse(r.body);
    assert_string_equal(str_at(j, "message"), "Request Too Long");
    cJSON_Delete(j);
    rw_test_response_free(&r);
    free(big);

    /* A small buffered answer of the blob handler goes through... */
    assert_int_equal(rw_test_http(MAIN.port, "GET", "/blob?bytes=1000", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 1000);
    rw_test_response_free(&r);
    pid_t pid = the_env(&MAIN, "Blob");
    /* ...one over 6 MB does not: the Runtime API refuses it (413) before it
     * has all of it; both sides log it. */
    expect_message(&MAIN, "/blob?bytes=7000000", 502, "Internal server error");
    wait_log(&MAIN, "Blob", "Function.ResponseSizeTooLarge: response payload over 6 MB");
    wait_log(&MAIN, "Blob", "\tERROR\tFunction.ResponseSizeTooLarge: the response is larger");
    /* The function carries on in the same environment. */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(rw_test_http(MAIN.port, "GET", "/blob?bytes=10", NULL, NULL, 0, &r), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "abcdefghij");
        rw_test_response_free(&r);
    }
    assert_int_equal(the_env(&MAIN, "Blob"), pid);
    assert_true(rw_test_pid_alive(pid));
}

/* Last: the shared server stops cleanly on SIGTERM (exit 0, every
 * environment stopped with it), and no process wrote a sanitizer report. */
static void shutdown_is_clean(void **state)
{
    pid_t envs[64];
    int n = 0;
    for (const char *const *fn =
             (const char *const[]){"Echo", "Counter", "StreamLarge", "Provisioned", NULL};
         *fn; fn++)
        n += env_pids(&MAIN, *fn, envs + n, 64 - n);
    assert_true(n >= 4);
    server_stop(&MAIN);
    for (int i = 0; i < n; i++)
        assert_true(wait_gone(envs[i], 10000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* First: nothing has called the provisioned function yet, and the
         * memory baseline is a fresh server's. */
        cmocka_unit_test(provisioned_environment_is_warm_before_the_first_call),
        cmocka_unit_test(streamed_100mb_through_a_slow_client_keeps_memory_flat),
        cmocka_unit_test(echo_returns_the_event),
        cmocka_unit_test(function_error_is_502_and_logged),
        cmocka_unit_test(timeout_is_504_and_replaces_the_environment),
        cmocka_unit_test(crash_is_502_and_replaces_the_environment),
        cmocka_unit_test(init_error_is_502_and_logged),
        cmocka_unit_test(init_over_the_limit_fails_the_cold_start),
        cmocka_unit_test(warm_environment_is_reused),
        cmocka_unit_test(standard_environment_variables),
        cmocka_unit_test(streamed_response_with_the_http_prelude),
        cmocka_unit_test(stream_failing_midway_is_cut),
        cmocka_unit_test(reserved_concurrency_zero_always_throttles),
        cmocka_unit_test_teardown(reserved_concurrency_throttles_across_workers, stop_other),
        cmocka_unit_test_teardown(idle_environments_are_reaped, stop_other),
        cmocka_unit_test(memory_size_is_enforced),
        cmocka_unit_test(payload_limits),
        cmocka_unit_test(shutdown_is_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
