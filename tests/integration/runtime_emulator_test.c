/* The C runtime client against a Lambda Runtime API implementation that is
 * not ours: cargo-lambda's emulator (`cargo lambda watch --only-lambda-apis`,
 * installed by scripts/setup from its PyPI package). The function is the
 * rw_fn_test sample as a real process; calls go through the emulator's invoke
 * endpoint (POST /2015-03-31/functions/_/invocations), as an SDK's would.
 *
 * AWS's own Runtime Interface Emulator would be the first choice, but its Go
 * module is not served by the module proxy this project can reach. What the
 * emulator does not implement (streamed responses: it answers 500 to them, and
 * a real deadline: it sends 600000 instead of an epoch time) is covered by
 * runtime_api_test.c against a Runtime API server written in the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <cJSON.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rw_http_client.h"
#include "rw_test.h"

#define INVOKE_PATH "/2015-03-31/functions/_/invocations"

typedef struct emu_s {
    char dir[512];
    char manifest[600];
    char log[600];
    char fn_log[600];
    char path_env[4096];
    int port;
    rw_test_proc_t proc;
    rw_test_proc_t fn;
    bool fn_running;
} emu_t;

static const char *emulator_bin(void)
{
    const char *bin = getenv("RW_CARGO_LAMBDA");
    return bin && access(bin, X_OK) == 0 ? bin : NULL;
}

/* The PATH the emulator runs with: rustup's ~/.cargo/bin first, then ours. */
static const char *emulator_path(void)
{
    static char path_env[4096];
    const char *home = getenv("HOME"), *path = getenv("PATH");
    snprintf(path_env, sizeof path_env, "PATH=%s/.cargo/bin:%s", home ? home : "/root",
             path ? path : "/usr/bin:/bin");
    return path_env;
}

/* Finds an executable cargo on the emulator's PATH (into out). */
static bool cargo_on_path(char *out, size_t len)
{
    const char *p = emulator_path() + strlen("PATH=");
    while (*p) {
        size_t n = strcspn(p, ":");
        snprintf(out, len, "%.*s/cargo", (int)n, p);
        if (n && access(out, X_OK) == 0)
            return true;
        p += n;
        if (*p == ':')
            p++;
    }
    return false;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void dump(const char *path)
{
    char cmd[700];
    snprintf(cmd, sizeof cmd, "echo '--- %s:'; tail -30 %s", path, path);
    (void)system(cmd);
}

/* Starts the emulator on a free loopback port and waits until it listens. */
static emu_t *emu_start(void)
{
    emu_t *e = calloc(1, sizeof *e);
    assert_int_equal(rw_test_tmpdir(e->dir, sizeof e->dir, "rw-emu"), 0);
    /* The emulator reads a Cargo manifest even when it only serves the APIs
     * (`cargo metadata`): give it an empty package. */
    snprintf(e->manifest, sizeof e->manifest, "%s/Cargo.toml", e->dir);
    write_file(e->manifest, "[package]\nname = \"rwfn\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"
                            "[[bin]]\nname = \"rwfn\"\npath = \"main.rs\"\n");
    char main_rs[600];
    snprintf(main_rs, sizeof main_rs, "%s/main.rs", e->dir);
    write_file(main_rs, "fn main() {}\n");
    snprintf(e->log, sizeof e->log, "%s/emulator.log", e->dir);
    snprintf(e->fn_log, sizeof e->fn_log, "%s/function.log", e->dir);
    /* cargo must be on PATH for the emulator; rustup puts it in ~/.cargo/bin. */
    snprintf(e->path_env, sizeof e->path_env, "%s", emulator_path());

    for (int attempt = 0; attempt < 3; attempt++) {
        e->port = free_port();
        char port[16];
        snprintf(port, sizeof port, "%d", e->port);
        char *argv[] = {(char *)emulator_bin(),
                        "lambda",
                        "watch",
                        "--only-lambda-apis",
                        "--manifest-path",
                        e->manifest,
                        "-A",
                        "127.0.0.1",
                        "-P",
                        port,
                        NULL};
        const char *set[] = {e->path_env, NULL};
        assert_int_equal(rw_test_proc_start(&e->proc, argv, set, NULL, e->log), 0);
        for (int waited = 0; waited < 30000 && rw_test_pid_alive(e->proc.pid); waited += 50) {
            int fd = rw_test_connect(e->port);
            if (fd >= 0) {
                close(fd);
                return e;
            }
            rw_test_sleep_ms(50);
        }
        dump(e->log);
        rw_test_proc_stop(&e->proc, SIGTERM, 5000);
    }
    fail_msg("the emulator did not start (log above)");
    return NULL;
}

static const char *fn_bin(void)
{
    static char path[1024];
    const char *dir = getenv("RW_BINARY_DIR");
    snprintf(path, sizeof path, "%s/functions/samples/test/bootstrap", dir ? dir : ".");
    return path;
}

static void fn_start(emu_t *e, const char *handler, const char *extra)
{
    char api[128], h[128];
    snprintf(api, sizeof api, "AWS_LAMBDA_RUNTIME_API=http://127.0.0.1:%d/.rt", e->port);
    snprintf(h, sizeof h, "_HANDLER=%s", handler);
    const char *set[] = {api,
                         h,
                         "AWS_LAMBDA_FUNCTION_NAME=emulated",
                         "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
                         extra ? extra : "RW_FN_UNUSED=1",
                         NULL};
    const char *unset[] = {"MONGODB_URI", "RW_FN_INIT_FAIL", NULL};
    char *argv[] = {(char *)fn_bin(), NULL};
    assert_int_equal(rw_test_proc_start(&e->fn, argv, set, unset, e->fn_log), 0);
    e->fn_running = true;
}

static void emu_stop(emu_t *e)
{
    if (e->fn_running) {
        int status = rw_test_proc_stop(&e->fn, SIGTERM, 10000);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            dump(e->fn_log);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    rw_test_proc_stop(&e->proc, SIGTERM, 10000);
    rw_test_rmtree(e->dir);
    free(e);
}

/* One synchronous invocation through the emulator. */
static cJSON *invoke(emu_t *e, const char *event, int *status)
{
    rw_test_response_t r;
    int rc = rw_test_http(e->port, "POST", INVOKE_PATH, "Content-Type: application/json\r\n", event,
                          strlen(event), &r);
    if (rc != 0) {
        dump(e->log);
        dump(e->fn_log);
    }
    assert_int_equal(rc, 0);
    *status = r.status;
    cJSON *doc = cJSON_Parse(r.body);
    if (doc == NULL)
        fprintf(stderr, "not JSON (status %d): %s\n", r.status, r.body);
    rw_test_response_free(&r);
    return doc;
}

static bool file_contains(const char *path, const char *needle)
{
    FILE *fp = fopen(path, "r");
    char line[8192];
    bool found = false;
    while (fp && !found && fgets(line, sizeof line, fp))
        found = strstr(line, needle) != NULL;
    if (fp)
        fclose(fp);
    return found;
}

/* The emulator and the cargo it runs are part of the test setup (scripts/setup
 * installs both): without them the test fails, it does not skip. */
static int setup(void **state)
{
    if (emulator_bin() == NULL) {
        fprintf(stderr,
                "the Runtime API emulator is missing (RW_CARGO_LAMBDA=%s): run scripts/setup\n",
                getenv("RW_CARGO_LAMBDA") ? getenv("RW_CARGO_LAMBDA") : "(unset)");
        return -1;
    }
    char cargo[4200];
    if (!cargo_on_path(cargo, sizeof cargo)) {
        fprintf(stderr, "cargo is missing (the emulator runs `cargo metadata`); looked in "
                        "~/.cargo/bin and $PATH: run scripts/setup\n");
        return -1;
    }
    return 0;
}

static void echo_round_trip(void **state)
{
    emu_t *e = emu_start();
    fn_start(e, "echo", NULL);
    int status = 0;
    cJSON *out = invoke(e, "{\"hello\":\"world\",\"n\":[1,2,3],\"nested\":{\"ok\":true}}", &status);
    assert_int_equal(status, 200);
    char *text = cJSON_PrintUnformatted(out);
    assert_string_equal(text, "{\"hello\":\"world\",\"n\":[1,2,3],\"nested\":{\"ok\":true}}");
    cJSON_free(text);
    cJSON_Delete(out);
    emu_stop(e);
}

static void error_reaches_the_invoker(void **state)
{
    emu_t *e = emu_start();
    fn_start(e, "error", NULL);
    int status = 0;
    cJSON *out = invoke(e, "{\"type\":\"Custom.Broken\",\"message\":\"it broke\"}", &status);
    assert_int_not_equal(status, 200);
    assert_non_null(out);
    assert_string_equal(cJSON_GetObjectItem(out, "errorType")->valuestring, "Custom.Broken");
    assert_string_equal(cJSON_GetObjectItem(out, "errorMessage")->valuestring, "it broke");
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(out, "stackTrace")));
    cJSON_Delete(out);
    /* The function is still there for the next call. */
    out = invoke(e, "{\"message\":\"again\"}", &status);
    assert_string_equal(cJSON_GetObjectItem(out, "errorMessage")->valuestring, "again");
    cJSON_Delete(out);
    emu_stop(e);
}

static void init_failure_is_reported(void **state)
{
    emu_t *e = emu_start();
    /* The emulator answers an init error to the invocation waiting for the
     * function, so the call goes first and the function starts after. */
    int fd = rw_test_connect(e->port);
    assert_true(fd >= 0);
    char req[256];
    int n = snprintf(req, sizeof req,
                     "POST " INVOKE_PATH " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Length: 2\r\n\r\n{}");
    assert_int_equal(rw_test_send(fd, req, (size_t)n), 0);
    rw_test_sleep_ms(300);
    fn_start(e, "echo", "RW_FN_INIT_FAIL=no configuration");
    int status = rw_test_proc_wait(&e->fn, 15000);
    e->fn_running = false;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    close(fd);
    cJSON *out = cJSON_Parse(r.body);
    rw_test_response_free(&r);
    assert_non_null(out);
    assert_string_equal(cJSON_GetObjectItem(out, "errorType")->valuestring, "Sample.InitFailed");
    assert_string_equal(cJSON_GetObjectItem(out, "errorMessage")->valuestring, "no configuration");
    cJSON_Delete(out);
    assert_true(
        file_contains(e->fn_log, "\tERROR\tInit Error\tSample.InitFailed: no configuration"));
    emu_stop(e);
}

static void warm_invocations_reuse_the_process(void **state)
{
    emu_t *e = emu_start();
    fn_start(e, "counter", NULL);
    int pid = 0;
    for (int i = 1; i <= 3; i++) {
        int status = 0;
        cJSON *out = invoke(e, "{}", &status);
        assert_int_equal(status, 200);
        assert_int_equal(cJSON_GetObjectItem(out, "count")->valueint, i);
        int this_pid = cJSON_GetObjectItem(out, "pid")->valueint;
        if (pid == 0)
            pid = this_pid;
        assert_int_equal(this_pid, pid);
        cJSON_Delete(out);
    }
    assert_int_equal(pid, (int)e->fn.pid);
    emu_stop(e);
}

static void context_carries_the_emulators_fields(void **state)
{
    emu_t *e = emu_start();
    fn_start(e, "context", NULL);
    int status = 0;
    cJSON *out = invoke(e, "{}", &status);
    assert_int_equal(status, 200);
    const char *id = cJSON_GetObjectItem(out, "request_id")->valuestring;
    assert_true(strlen(id) >= 32); /* a UUID */
    char line[128];
    snprintf(line, sizeof line, "\t%s\tINFO\tcontext asked", id);
    assert_true(file_contains(e->fn_log, line));
    assert_true(strlen(cJSON_GetObjectItem(out, "invoked_function_arn")->valuestring) > 0);
    const cJSON *trace = cJSON_GetObjectItem(out, "trace_id");
    assert_true(cJSON_IsString(trace));
    assert_non_null(strstr(trace->valuestring, "Root=1-"));
    assert_string_equal(cJSON_GetObjectItem(out, "x_amzn_trace_id")->valuestring,
                        trace->valuestring);
    assert_string_equal(cJSON_GetObjectItem(out, "function_name")->valuestring, "emulated");
    assert_int_equal(cJSON_GetObjectItem(out, "memory_limit_mb")->valueint, 128);
    /* A second call is a new request id. */
    cJSON *again = invoke(e, "{}", &status);
    assert_string_not_equal(cJSON_GetObjectItem(again, "request_id")->valuestring, id);
    cJSON_Delete(again);
    cJSON_Delete(out);
    emu_stop(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(echo_round_trip),
        cmocka_unit_test(error_reaches_the_invoker),
        cmocka_unit_test(init_failure_is_reported),
        cmocka_unit_test(warm_invocations_reuse_the_process),
        cmocka_unit_test(context_carries_the_emulators_fields),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
