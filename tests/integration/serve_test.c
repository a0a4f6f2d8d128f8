/* `reelway serve` as an operator runs it: it starts its local FerretDB, answers
 * /_/health, reports a dead database as 503 without crashing or hanging, and on
 * SIGTERM or SIGINT stops its workers and the database, leaving no process
 * behind. Also against the suite's database (FerretDB fixture or MONGODB_URI). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rw_http_client.h"
#include "rw_test.h"

typedef struct {
    char dir[512];
    char port_file[600];
    char log[600];
    rw_test_proc_t proc;
    int port;
} server_t;

/* Starts reelway with its own local FerretDB (MONGODB_URI removed), or with
 * the suite's database when use_suite_db. */
static void server_start(server_t *s, bool use_suite_db, int workers)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(rw_test_tmpdir(s->dir, sizeof s->dir, "rw-serve"), 0);
    snprintf(s->port_file, sizeof s->port_file, "%s/port", s->dir);
    snprintf(s->log, sizeof s->log, "%s/reelway.log", s->dir);
    char workers_arg[16];
    snprintf(workers_arg, sizeof workers_arg, "%d", workers);
    char uri_env[1024] = "";
    char *argv[] = {(char *)rw_test_reelway_bin(), "serve", "--port", "0", "--port-file",
                    s->port_file, "--data-dir", s->dir, "--workers", workers_arg, NULL};
    const char *set[] = {uri_env, NULL};
    const char *unset[] = {"MONGODB_URI", "REELWAY_PORT", "REELWAY_HOST", NULL};
    if (use_suite_db)
        snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", rw_test_mongo_uri());
    assert_int_equal(rw_test_proc_start(&s->proc, argv, use_suite_db ? set : NULL, unset, s->log),
                     0);
    s->port = rw_test_wait_int_file(s->port_file, 60000);
    if (s->port <= 0) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "cat %s", s->log);
        (void)system(cmd);
    }
    assert_true(s->port > 0);
}

/* The FerretDB pid reelway reported at start ("local FerretDB pid N"). */
static pid_t server_db_pid(const server_t *s)
{
    FILE *f = fopen(s->log, "r");
    assert_non_null(f);
    char line[1024];
    pid_t pid = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "local FerretDB pid ");
        if (p)
            pid = (pid_t)atoi(p + strlen("local FerretDB pid "));
    }
    fclose(f);
    return pid;
}

/* Pids of every live process whose command line mentions our data dir: the
 * workers (reelway serve --data-dir DIR) and FerretDB (--state-dir=DIR/db). */
static int processes_mentioning(const char *needle, pid_t *out, int cap)
{
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        if (pid <= 0 || pid == getpid())
            continue;
        char path[64], cmd[4096];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(cmd, 1, sizeof cmd - 1, f);
        fclose(f);
        for (size_t i = 0; i < len; i++)
            if (cmd[i] == '\0')
                cmd[i] = ' ';
        cmd[len] = '\0';
        if (strstr(cmd, needle) && rw_test_pid_alive(pid) && n < cap)
            out[n++] = pid;
    }
    if (d)
        closedir(d);
    return n;
}

static void expect_health(int port, int status, const char *body_part)
{
    rw_test_response_t r;
    assert_int_equal(rw_test_http(port, "GET", "/_/health", NULL, NULL, 0, &r), 0);
    if (r.status != status)
        fprintf(stderr, "health: %d %s\n", r.status, r.body);
    assert_int_equal(r.status, status);
    assert_non_null(strstr(r.body, body_part));
    char ct[128];
    assert_non_null(rw_test_header(&r, "content-type", ct, sizeof ct));
    assert_string_equal(ct, "application/json");
    rw_test_response_free(&r);
}

static void health_ok_then_sigterm_stops_everything(void **state)
{
    server_t s;
    server_start(&s, false, 2);
    pid_t db = server_db_pid(&s);
    assert_true(db > 0);
    assert_true(rw_test_pid_alive(db));
    expect_health(s.port, 200, "{\"status\":\"ok\",\"db\":\"ok\"}");

    pid_t pids[16];
    /* The supervisor, two workers and FerretDB are up. */
    assert_int_equal(processes_mentioning(s.dir, pids, 16), 4);

    int status = rw_test_proc_stop(&s.proc, SIGTERM, 30000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_false(rw_test_pid_alive(db));
    assert_int_equal(processes_mentioning(s.dir, pids, 16), 0);
    rw_test_rmtree(s.dir);
}

static void sigint_stops_everything_too(void **state)
{
    server_t s;
    server_start(&s, false, 1);
    pid_t db = server_db_pid(&s);
    expect_health(s.port, 200, "\"db\":\"ok\"");
    int status = rw_test_proc_stop(&s.proc, SIGINT, 30000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_false(rw_test_pid_alive(db));
    pid_t pids[16];
    assert_int_equal(processes_mentioning(s.dir, pids, 16), 0);
    rw_test_rmtree(s.dir);
}

static void killed_database_gives_503_and_server_survives(void **state)
{
    server_t s;
    server_start(&s, false, 2);
    pid_t db = server_db_pid(&s);
    expect_health(s.port, 200, "\"db\":\"ok\"");
    assert_int_equal(kill(db, SIGKILL), 0);
    for (int i = 0; i < 200 && rw_test_pid_alive(db); i++)
        rw_test_sleep_ms(10);
    /* Ask a few times: connections spread across both workers. */
    for (int i = 0; i < 3; i++)
        expect_health(s.port, 503, "\"db\":\"down\",\"reason\":\"");
    rw_test_response_t r;
    assert_int_equal(rw_test_http(s.port, "GET", "/no/such/route", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 404);
    rw_test_response_free(&r);
    int status = rw_test_proc_stop(&s.proc, SIGTERM, 30000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    pid_t pids[16];
    assert_int_equal(processes_mentioning(s.dir, pids, 16), 0);
    rw_test_rmtree(s.dir);
}

static void suite_database_health(void **state)
{
    server_t s;
    server_start(&s, true, 1);
    expect_health(s.port, 200, "{\"status\":\"ok\",\"db\":\"ok\"}");
    int status = rw_test_proc_stop(&s.proc, SIGTERM, 30000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    rw_test_rmtree(s.dir);
}

static void bad_flag_is_refused(void **state)
{
    char dir[512], log[600];
    assert_int_equal(rw_test_tmpdir(dir, sizeof dir, "rw-serve"), 0);
    snprintf(log, sizeof log, "%s/log", dir);
    rw_test_proc_t p;
    char *argv[] = {(char *)rw_test_reelway_bin(), "serve", "--port", "70000", NULL};
    assert_int_equal(rw_test_proc_start(&p, argv, NULL, NULL, log), 0);
    int status = rw_test_proc_wait(&p, 10000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
    /* The whole output, not its first line: a sanitizer or a library may
     * write a line of its own ahead of reelway's. */
    FILE *f = fopen(log, "r");
    assert_non_null(f);
    char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    fclose(f);
    if (!strstr(out, "reelway: invalid value for --port"))
        fprintf(stderr, "reelway's output:\n%s\n", out);
    assert_non_null(strstr(out, "reelway: invalid value for --port"));
    rw_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(health_ok_then_sigterm_stops_everything),
        cmocka_unit_test(sigint_stops_everything_too),
        cmocka_unit_test(killed_database_gives_503_and_server_survives),
        cmocka_unit_test(suite_database_health),
        cmocka_unit_test(bad_flag_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
