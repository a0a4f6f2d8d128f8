/* The gateway as a client sees it: `reelway serve` with a template (HTTP API +
 * REST API), real function processes speaking the Runtime API (an sh + curl
 * runtime client), a real upstream for HTTP_PROXY. Events arrive in API
 * Gateway's shapes, answers are mapped back, failures give API Gateway's
 * errors, CORS preflights are answered, and every request is logged and
 * counted. */
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
#include <sys/wait.h>
#include <unistd.h>

#include "reelway/http.h"
#include "rw_http_client.h"
#include "rw_test.h"

static struct {
    char dir[512];
    char log[600];
    rw_test_proc_t proc;
    int port;
    rw_test_loop_t *upstream_loop;
    rw_http_server_t *upstream;
    int upstream_port;
} S;

/* ---- the upstream of the HTTP_PROXY route ------------------------------------------ */

static void upstream_handler(rw_http_req_t *req, void *arg)
{
    char body[512];
    int n = snprintf(body, sizeof body, "upstream saw %s %.*s?%.*s", req->method,
                     (int)req->path_len, req->path, (int)req->query_len, req->query);
    rw_http_header_t h = {"X-Upstream", 10, "1", 1};
    rw_http_respond(req, 200, &h, 1, body, (size_t)n);
}

static void start_upstream(uv_loop_t *loop, void *arg)
{
    S.upstream = rw_http_server_new(loop, NULL, upstream_handler, NULL);
    assert_int_equal(rw_http_server_listen(S.upstream, "127.0.0.1", 0, false), 0);
    S.upstream_port = rw_http_server_port(S.upstream);
}

static void stop_upstream(uv_loop_t *loop, void *arg)
{
    rw_http_server_shutdown(S.upstream, NULL, NULL);
}

/* ---- reelway ------------------------------------------------------------------------ */

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    S.upstream_loop = rw_test_loop_start(start_upstream, NULL);
    if (rw_test_tmpdir(S.dir, sizeof S.dir, "rw-gateway") != 0)
        return -1;
    snprintf(S.log, sizeof S.log, "%s/reelway.log", S.dir);
    char port_file[600], tpl[1024], overrides[256], uri_env[1024];
    snprintf(port_file, sizeof port_file, "%s/port", S.dir);
    snprintf(tpl, sizeof tpl, "%s/tests/integration/gateway/template.yaml", getenv("RW_SOURCE_DIR"));
    snprintf(overrides, sizeof overrides, "Upstream=http://127.0.0.1:%d", S.upstream_port);
    snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", rw_test_mongo_uri());
    char *argv[] = {(char *)rw_test_reelway_bin(), "serve", "--port", "0", "--port-file", port_file,
                    "--data-dir", S.dir, "--workers", "2", "--template", tpl,
                    "--parameter-overrides", overrides, NULL};
    const char *set[] = {uri_env, NULL};
    if (rw_test_proc_start(&S.proc, argv, set, NULL, S.log) != 0)
        return -1;
    S.port = rw_test_wait_int_file(port_file, 60000);
    if (S.port <= 0) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "cat %s", S.log);
        (void)system(cmd);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    if (S.proc.pid > 0)
        rw_test_proc_stop(&S.proc, SIGKILL, 10000);
    assert_int_equal(rw_test_loop_stop(S.upstream_loop, stop_upstream, NULL), 0);
    rw_test_rmtree(S.dir);
    return 0;
}

static cJSON *get_json(const char *method, const char *path, const char *headers, const char *body,
                       size_t len, rw_test_response_t *r, int expect_status)
{
    assert_int_equal(rw_test_http(S.port, method, path, headers, body, len, r), 0);
    if (r->status != expect_status)
        fprintf(stderr, "%s %s -> %d %s\n", method, path, r->status, r->body);
    assert_int_equal(r->status, expect_status);
    cJSON *j = cJSON_Parse(r->body);
    assert_non_null(j);
    return j;
}

static const char *str_at(const cJSON *o, const char *a, const char *b, const char *c)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b)
        x = cJSON_GetObjectItemCaseSensitive(x, b);
    if (c)
        x = cJSON_GetObjectItemCaseSensitive(x, c);
    return cJSON_IsString(x) ? x->valuestring : NULL;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void mock_integration(void **state)
{
    rw_test_response_t r;
    cJSON *j = get_json("GET", "/mock", NULL, NULL, 0, &r, 201);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "mocked")));
    char v[128];
    assert_string_equal(rw_test_header(&r, "x-mock", v, sizeof v), "yes");
    assert_string_equal(rw_test_header(&r, "content-type", v, sizeof v), "application/json");
    cJSON_Delete(j);
    rw_test_response_free(&r);
}

static void http_api_event_v2(void **state)
{
    rw_test_response_t r;
    cJSON *e = get_json("GET", "/echo/42%20x?a=1&a=2&b=%C3%A9",
                        "X-Amzn-Trace-Id: Root=1-5759e988-bd862e3fe1be46a994272793\r\n"
                        "Cookie: c1=v1; c2=v2\r\nX-Multi: one\r\nX-Multi: two\r\n",
                        NULL, 0, &r, 200);
    assert_string_equal(str_at(e, "version", NULL, NULL), "2.0");
    assert_string_equal(str_at(e, "routeKey", NULL, NULL), "GET /echo/{id}");
    assert_string_equal(str_at(e, "rawPath", NULL, NULL), "/echo/42%20x");
    assert_string_equal(str_at(e, "rawQueryString", NULL, NULL), "a=1&a=2&b=%C3%A9");
    assert_string_equal(str_at(e, "queryStringParameters", "a", NULL), "1,2");
    assert_string_equal(str_at(e, "queryStringParameters", "b", NULL), "\xc3\xa9");
    assert_string_equal(str_at(e, "pathParameters", "id", NULL), "42 x");
    assert_string_equal(str_at(e, "headers", "x-multi", NULL), "one,two");
    assert_null(str_at(e, "headers", "cookie", NULL));
    cJSON *cookies = cJSON_GetObjectItem(e, "cookies");
    assert_int_equal(cJSON_GetArraySize(cookies), 2);
    assert_string_equal(cJSON_GetArrayItem(cookies, 1)->valuestring, "c2=v2");
    assert_string_equal(str_at(e, "requestContext", "http", "method"), "GET");
    assert_string_equal(str_at(e, "requestContext", "http", "sourceIp"), "127.0.0.1");
    assert_string_equal(str_at(e, "requestContext", "stage", NULL), "$default");
    /* The request id the function sees is the one the client gets back. */
    char rid[64], trace[128];
    assert_non_null(rw_test_header(&r, "apigw-requestid", rid, sizeof rid));
    assert_string_equal(str_at(e, "requestContext", "requestId", NULL), rid);
    /* The client's trace id is kept, for the function and in the answer. */
    assert_string_equal(rw_test_header(&r, "x-amzn-trace-id", trace, sizeof trace),
                        "Root=1-5759e988-bd862e3fe1be46a994272793");
    assert_string_equal(str_at(e, "headers", "x-amzn-trace-id", NULL), trace);
    /* A W3C traceparent is generated from the same trace, and passed on. */
    const char *tp = str_at(e, "headers", "traceparent", NULL);
    assert_non_null(tp);
    assert_int_equal(strlen(tp), 55);
    assert_memory_equal(tp, "00-5759e988bd862e3fe1be46a994272793-", 36);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(e, "isBase64Encoded")));
    cJSON_Delete(e);
    rw_test_response_free(&r);

    /* A text body travels as text, a binary one base64-encoded. */
    e = get_json("POST", "/echo/1", "Content-Type: application/json\r\n", "{\"x\":1}", 7, &r, 200);
    assert_string_equal(str_at(e, "body", NULL, NULL), "{\"x\":1}");
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(e, "isBase64Encoded")));
    cJSON_Delete(e);
    rw_test_response_free(&r);
    e = get_json("POST", "/echo/1", "Content-Type: image/png\r\n", "\x89PNG\0\1", 6, &r, 200);
    assert_string_equal(str_at(e, "body", NULL, NULL), "iVBORwAB");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(e, "isBase64Encoded")));
    cJSON_Delete(e);
    rw_test_response_free(&r);
}

static void rest_api_event_v1_and_mapping(void **state)
{
    rw_test_response_t r;
    cJSON *e = get_json("GET", "/Prod/items/7?q=1&q=2", NULL, NULL, 0, &r, 200);
    char ct[64];
    assert_string_equal(rw_test_header(&r, "content-type", ct, sizeof ct), "application/json");
    assert_string_equal(str_at(e, "resource", NULL, NULL), "/items/{id}");
    assert_string_equal(str_at(e, "path", NULL, NULL), "/items/7");
    assert_string_equal(str_at(e, "httpMethod", NULL, NULL), "GET");
    assert_string_equal(str_at(e, "pathParameters", "id", NULL), "7");
    assert_string_equal(str_at(e, "queryStringParameters", "q", NULL), "2");
    cJSON *mv = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "multiValueQueryStringParameters"), "q");
    assert_int_equal(cJSON_GetArraySize(mv), 2);
    assert_string_equal(str_at(e, "requestContext", "stage", NULL), "Prod");
    assert_string_equal(str_at(e, "requestContext", "resourcePath", NULL), "/items/{id}");
    assert_string_equal(str_at(e, "requestContext", "path", NULL), "/Prod/items/7");
    assert_string_equal(str_at(e, "requestContext", "identity", "sourceIp"), "127.0.0.1");
    cJSON_Delete(e);
    rw_test_response_free(&r);
}

static void default_route_takes_the_rest(void **state)
{
    rw_test_response_t r;
    cJSON *e = get_json("DELETE", "/anything/else", NULL, NULL, 0, &r, 200);
    /* Wrap answers with the event as its body: the body is the v2 event. */
    cJSON_Delete(e);
    rw_test_response_free(&r);
    cJSON *ev = get_json("PUT", "/nothing", NULL, "z", 1, &r, 200);
    assert_string_equal(str_at(ev, "routeKey", NULL, NULL), "$default");
    assert_string_equal(str_at(ev, "requestContext", "http", "method"), "PUT");
    cJSON_Delete(ev);
    rw_test_response_free(&r);
}

static void not_found_and_method_not_allowed(void **state)
{
    rw_test_response_t r;
    cJSON *j = get_json("GET", "/Prod/nope", NULL, NULL, 0, &r, 404);
    assert_string_equal(str_at(j, "message", NULL, NULL), "Not Found");
    cJSON_Delete(j);
    rw_test_response_free(&r);
    j = get_json("DELETE", "/Prod/items/7", NULL, NULL, 0, &r, 405);
    char allow[64];
    assert_string_equal(rw_test_header(&r, "allow", allow, sizeof allow), "GET");
    cJSON_Delete(j);
    rw_test_response_free(&r);
    j = get_json("GET", "/Prod/items/%zz", NULL, NULL, 0, &r, 400);
    cJSON_Delete(j);
    rw_test_response_free(&r);
}

static void cors_preflight_and_simple(void **state)
{
    rw_test_response_t r;
    assert_int_equal(rw_test_http(S.port, "OPTIONS", "/echo/1",
                                  "Origin: https://app.example\r\n"
                                  "Access-Control-Request-Method: POST\r\n"
                                  "Access-Control-Request-Headers: content-type\r\n",
                                  NULL, 0, &r),
                     0);
    assert_int_equal(r.status, 204);
    char v[256];
    assert_string_equal(rw_test_header(&r, "access-control-allow-origin", v, sizeof v),
                        "https://app.example");
    assert_non_null(rw_test_header(&r, "access-control-allow-methods", v, sizeof v));
    assert_non_null(strstr(v, "POST"));
    assert_string_equal(rw_test_header(&r, "access-control-max-age", v, sizeof v), "300");
    rw_test_response_free(&r);
    /* An origin that is not allowed gets no CORS headers. */
    assert_int_equal(rw_test_http(S.port, "OPTIONS", "/echo/1",
                                  "Origin: https://evil.example\r\n"
                                  "Access-Control-Request-Method: POST\r\n",
                                  NULL, 0, &r),
                     0);
    assert_null(rw_test_header(&r, "access-control-allow-origin", v, sizeof v));
    rw_test_response_free(&r);
    /* A simple request from an allowed origin is answered with the header. */
    cJSON *e = get_json("GET", "/echo/1", "Origin: https://app.example\r\n", NULL, 0, &r, 200);
    assert_string_equal(rw_test_header(&r, "access-control-allow-origin", v, sizeof v),
                        "https://app.example");
    cJSON_Delete(e);
    rw_test_response_free(&r);
}

static void function_failures_map_to_api_gateway_errors(void **state)
{
    rw_test_response_t r;
    struct {
        const char *path;
        int status;
        const char *message;
    } cases[] = {
        {"/crash", 502, "Internal server error"},
        {"/crash", 502, "Internal server error"}, /* a new environment replaced the dead one */
        {"/fails", 502, "Internal server error"},
        {"/Prod/bad", 502, "Internal server error"},
        {"/Prod/raw/1", 502, "Internal server error"}, /* v1 answer without statusCode */
        {"/slow", 504, "Endpoint request timed out"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *j = get_json("GET", cases[i].path, NULL, NULL, 0, &r, cases[i].status);
        assert_string_equal(str_at(j, "message", NULL, NULL), cases[i].message);
        cJSON_Delete(j);
        rw_test_response_free(&r);
    }
    /* The gateway is fine afterwards. */
    cJSON *j = get_json("GET", "/mock", NULL, NULL, 0, &r, 201);
    cJSON_Delete(j);
    rw_test_response_free(&r);
}

static void http_proxy_integration(void **state)
{
    rw_test_response_t r;
    assert_int_equal(rw_test_http(S.port, "GET", "/up/a/b?x=1", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "upstream saw GET /base/a/b?x=1");
    char v[16];
    assert_string_equal(rw_test_header(&r, "x-upstream", v, sizeof v), "1");
    rw_test_response_free(&r);
}

static void body_over_api_gateway_limit_is_413(void **state)
{
    /* As curl does for a large upload: announce it, wait for 100 Continue. The
     * gateway refuses at once, without reading it. */
    int fd = rw_test_connect(S.port);
    assert_true(fd >= 0);
    const char *head = "POST /echo/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 11534336\r\n"
                       "Expect: 100-continue\r\n\r\n";
    assert_int_equal(rw_test_send(fd, head, strlen(head)), 0);
    rw_test_response_t r;
    assert_int_equal(rw_test_read_response(fd, &r, false), 0);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "\"message\":\"Request Too Long\""));
    assert_true(r.closed);
    rw_test_response_free(&r);
    close(fd);

    /* Under the limit but over Lambda's 6 MB once in the event: 413 too. */
    size_t n = 7 * 1024 * 1024;
    char *big = malloc(n);
    memset(big, 'x', n);
    assert_int_equal(rw_test_http(S.port, "POST", "/echo/1", "Content-Type: text/plain\r\n", big, n,
                                  &r), 0);
    assert_int_equal(r.status, 413);
    rw_test_response_free(&r);
    free(big);
}

/* Python's awslambdaric and Node's aws-lambda-ric, as published, unchanged. */
static void real_runtime_clients(void **state)
{
    const char *runtimes[] = {"py", "node"};
    for (int k = 0; k < 2; k++) {
        /* Two workers each keep their own warm environments: of three calls,
         * two land on one worker, whose environment has then counted two. */
        int max_count = 0;
        for (int call = 1; call <= 3; call++) {
            char path[64];
            snprintf(path, sizeof path, "/%s/%d", runtimes[k], call);
            rw_test_response_t r;
            cJSON *b = get_json("GET", path, NULL, NULL, 0, &r, 200);
            char v[128], rid[64];
            assert_string_equal(rw_test_header(&r, "x-runtime", v, sizeof v),
                                k == 0 ? "python" : "node");
            assert_string_equal(str_at(b, "routeKey", NULL, NULL),
                                k == 0 ? "GET /py/{id}" : "GET /node/{id}");
            assert_string_equal(str_at(b, "rawPath", NULL, NULL), path);
            assert_string_equal(str_at(b, "method", NULL, NULL), "GET");
            assert_string_equal(str_at(b, "function", NULL, NULL), k == 0 ? "Py" : "Node");
            assert_string_equal(str_at(b, "memory", NULL, NULL), "256");
            int remaining = cJSON_GetObjectItem(b, "remainingMs")->valueint;
            assert_true(remaining > 0 && remaining <= 3000);
            /* The Lambda request id is not the API request id, as in AWS; it is
             * fresh per call. The warm environment counts calls. */
            assert_non_null(rw_test_header(&r, "apigw-requestid", rid, sizeof rid));
            assert_string_not_equal(str_at(b, "requestId", NULL, NULL), rid);
            int count = cJSON_GetObjectItem(b, "count")->valueint;
            assert_true(count >= 1 && count <= call);
            if (count > max_count)
                max_count = count;
            if (k == 0)
                assert_string_equal(rw_test_header(&r, "set-cookie", v, sizeof v), "py=1; Path=/");
            cJSON_Delete(b);
            rw_test_response_free(&r);
        }
        assert_true(max_count >= 2);
    }
    /* An exception in either runtime is a 502 for the client and a logged error. */
    const char *fails[] = {"/py-fails", "/node-fails"};
    const char *fn[] = {"PyFails", "NodeFails"};
    const char *what[] = {"ValueError: python handler failed on purpose",
                          "node handler failed on purpose"};
    for (int k = 0; k < 2; k++) {
        rw_test_response_t r;
        cJSON *j = get_json("GET", fails[k], NULL, NULL, 0, &r, 502);
        assert_string_equal(str_at(j, "message", NULL, NULL), "Internal server error");
        cJSON_Delete(j);
        rw_test_response_free(&r);
        static char logs[65536];
        bool seen = false;
        for (int tries = 0; tries < 100 && !seen; tries++) {
            rw_test_function_logs(S.dir, fn[k], logs, sizeof logs);
            seen = strstr(logs, what[k]) != NULL;
            if (!seen)
                rw_test_sleep_ms(20);
        }
        assert_true(seen);
    }
}

static void metrics_access_log_and_function_logs(void **state)
{
    rw_test_response_t r;
    cJSON *j = get_json("GET", "/mock", NULL, NULL, 0, &r, 201);
    char rid[64];
    assert_non_null(rw_test_header(&r, "x-request-id", rid, sizeof rid));
    cJSON_Delete(j);
    rw_test_response_free(&r);

    assert_int_equal(rw_test_http(S.port, "GET", "/_/metrics", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "# TYPE reelway_requests_total counter"));
    assert_non_null(strstr(r.body, "reelway_requests_total{route=\"App GET /mock\",status=\"201\"}"));
    assert_non_null(strstr(r.body, "reelway_request_duration_seconds_bucket{route=\"App GET /mock\""));
    assert_non_null(strstr(r.body, "reelway_open_connections"));
    assert_non_null(strstr(r.body, "reelway_function_invocations_total{function=\"Echo\",outcome=\"ok\"}"));
    rw_test_response_free(&r);

    /* The access log line of that request: JSON with its id, route and status. */
    bool found = false;
    for (int tries = 0; tries < 100 && !found; tries++) {
        FILE *f = fopen(S.log, "r");
        char line[4096];
        while (f && fgets(line, sizeof line, f)) {
            if (!strstr(line, rid) || line[0] != '{')
                continue;
            cJSON *l = cJSON_Parse(line);
            assert_non_null(l);
            assert_string_equal(str_at(l, "route", NULL, NULL), "GET /mock");
            assert_int_equal(cJSON_GetObjectItem(l, "status")->valueint, 201);
            assert_true(cJSON_GetObjectItem(l, "latencyUs")->valuedouble >= 0);
            assert_true(cJSON_GetObjectItem(l, "bytesOut")->valuedouble > 0);
            cJSON_Delete(l);
            found = true;
        }
        if (f)
            fclose(f);
        if (!found)
            rw_test_sleep_ms(20);
    }
    assert_true(found);

    /* Function logs: START, the runtime's own line, END, REPORT. */
    char dir[700];
    snprintf(dir, sizeof dir, "%s/logs/Echo", S.dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *ent;
    bool start = false, end = false, report = false, own = false;
    while ((ent = readdir(d))) {
        if (ent->d_name[0] == '.')
            continue;
        char path[1024], line[1024];
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f)) {
            start |= !strncmp(line, "START RequestId: ", 17);
            end |= !strncmp(line, "END RequestId: ", 15);
            own |= !strncmp(line, "invocation ", 11);
            if (!strncmp(line, "REPORT RequestId: ", 18)) {
                report = true;
                assert_non_null(strstr(line, "\tDuration: "));
                assert_non_null(strstr(line, "\tBilled Duration: "));
                assert_non_null(strstr(line, "\tMemory Size: 128 MB"));
                assert_non_null(strstr(line, "\tMax Memory Used: "));
            }
        }
        if (f)
            fclose(f);
    }
    closedir(d);
    assert_true(start && end && report && own);
}

/* Last: reelway stops cleanly on SIGTERM (exit 0, nothing left behind), and
 * no process wrote a sanitizer report. A check in the group teardown would
 * not count: cmocka ignores its result. */
static void shutdown_is_clean(void **state)
{
    int status = rw_test_proc_stop(&S.proc, SIGTERM, 30000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(rw_test_grep_tree(S.dir, "Sanitizer"), 0);
    assert_int_equal(rw_test_grep_tree(S.dir, "runtime error:"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mock_integration),
        cmocka_unit_test(http_api_event_v2),
        cmocka_unit_test(rest_api_event_v1_and_mapping),
        cmocka_unit_test(default_route_takes_the_rest),
        cmocka_unit_test(not_found_and_method_not_allowed),
        cmocka_unit_test(cors_preflight_and_simple),
        cmocka_unit_test(function_failures_map_to_api_gateway_errors),
        cmocka_unit_test(http_proxy_integration),
        cmocka_unit_test(body_over_api_gateway_limit_is_413),
        cmocka_unit_test(real_runtime_clients),
        cmocka_unit_test(metrics_access_log_and_function_logs),
        cmocka_unit_test(shutdown_is_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
