/* The JWT authorizer's cost per request, measured with wrk against reelway's
 * HTTP server on one loop: the same fixed JSON answer (as a MOCK route) on
 * /none, and behind rw_jwt_authz_check with a warm RS256 token on /jwt, the
 * event's authorizer object built as the pipeline will. Not a test.
 *   rw_bench_authz [seconds per run, default 5] [connections, default 64]
 * Last line: authz: jwt=<req/s> none=<req/s> ratio=<jwt/none> (best of 3 each). */
#include <cJSON.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "authz_jwt.h"
#include "reelway/http.h"

static const char body[] = "{\"message\":\"hello from a mock route\"}";
static rw_jwt_authz_t *authz;
static rw_http_server_t *server;
static uv_loop_t loop;
static uv_async_t stop_async;

static void answer(rw_http_req_t *req, rw_jwt_authz_result_t *res)
{
    rw_http_header_t ct = {"Content-Type", 12, "application/json", 16};
    if (res->http_status != 200) {
        rw_jwt_authz_respond(req, res);
        return;
    }
    /* What the pipeline will do with the verdict: build the event's authorizer. */
    cJSON *auth = rw_jwt_authz_event_authorizer(res);
    cJSON_Delete(auth);
    rw_jwt_authz_result_release(res);
    rw_http_respond(req, 200, &ct, 1, body, sizeof body - 1);
}

static void on_authz(rw_jwt_authz_result_t *res, void *arg)
{
    answer(arg, res);
}

static void handler(rw_http_req_t *req, void *arg)
{
    if (req->path_len == 4 && memcmp(req->path, "/jwt", 4) == 0) {
        rw_jwt_authz_result_t res;
        if (rw_jwt_authz_check(authz, req, NULL, 0, &res, on_authz, req) == RW_JWT_AUTHZ_DONE)
            answer(req, &res);
        return;
    }
    rw_http_header_t ct = {"Content-Type", 12, "application/json", 16};
    rw_http_respond(req, 200, &ct, 1, body, sizeof body - 1);
}

static void on_stop(uv_async_t *a)
{
    rw_jwt_authz_stats_t st;
    rw_jwt_authz_stats(authz, &st);
    printf("authorizer: %llu checks, %llu cache hits, %llu signature verifications\n",
           (unsigned long long)st.checks, (unsigned long long)st.cache_hits,
           (unsigned long long)st.verifications);
    rw_http_server_shutdown(server, NULL, NULL);
    rw_jwt_authz_close(authz, NULL, NULL);
    uv_close((uv_handle_t *)a, NULL);
}

static void *loop_main(void *arg)
{
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

/* Runs wrk and returns its Requests/sec. */
static double wrk(int port, const char *path, const char *token, int seconds, int conns)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "wrk -t1 -c%d -d%ds -H 'Authorization: Bearer %s' http://127.0.0.1:%d%s 2>&1", conns,
             seconds, token, port, path);
    FILE *p = popen(cmd, "r");
    if (!p)
        return 0;
    char line[512];
    double rps = 0;
    while (fgets(line, sizeof line, p)) {
        if (strncmp(line, "Requests/sec:", 13) == 0)
            rps = atof(line + 13);
        if (strstr(line, "Non-2xx"))
            fprintf(stderr, "wrk: %s", line);
    }
    pclose(p);
    return rps;
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 5;
    int conns = argc > 2 ? atoi(argv[2]) : 64;
    signal(SIGPIPE, SIG_IGN); /* as `reelway serve` does: wrk hangs up mid-write at the end */
    rw_jwk_t *key;
    if (rw_jwk_generate(RW_JWK_RSA2048, &key) != 0)
        return 1;
    rw_jwks_t *set = rw_jwks_new();
    rw_jwks_add(set, key);
    char *jwks = NULL;
    rw_jwks_to_json(set, &jwks);
    char path[] = "/tmp/rw_bench_jwks_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, jwks, strlen(jwks)) != (ssize_t)strlen(jwks))
        return 1;
    close(fd);

    static const char *const aud[] = {"bench-client"};
    rw_jwt_authz_config_t cfg = {.issuer = "https://issuer.bench", .audiences = aud,
                                 .n_audiences = 1, .jwks_file = path};
    uv_loop_init(&loop);
    char why[256];
    if (rw_jwt_authz_new(&loop, &cfg, &authz, why, sizeof why) != 0) {
        fprintf(stderr, "authorizer: %s\n", why);
        return 1;
    }
    cJSON *claims = cJSON_CreateObject();
    cJSON_AddStringToObject(claims, "iss", "https://issuer.bench");
    cJSON_AddStringToObject(claims, "aud", "bench-client");
    cJSON_AddStringToObject(claims, "sub", "3f0c9d2e-bench-user");
    cJSON_AddStringToObject(claims, "scope", "reels/read reels/write");
    cJSON_AddStringToObject(claims, "email", "bench@example.com");
    cJSON_AddNumberToObject(claims, "iat", (double)time(NULL));
    cJSON_AddNumberToObject(claims, "exp", (double)time(NULL) + 3600);
    char *token = NULL;
    rw_jwt_sign(key, RW_JWT_ALG_INVALID, NULL, claims, &token);
    cJSON_Delete(claims);

    server = rw_http_server_new(&loop, NULL, handler, NULL);
    if (rw_http_server_listen(server, "127.0.0.1", 0, false) != 0)
        return 1;
    int port = rw_http_server_port(server);
    uv_async_init(&loop, &stop_async, on_stop);
    pthread_t th;
    pthread_create(&th, NULL, loop_main, NULL);

    wrk(port, "/jwt", token, 1, conns); /* warm-up: the token gets cached */
    /* The check alone, on this thread (the loop is idle between wrk runs): a
     * fake request carrying the warm token. */
    {
        char *hv = malloc(strlen(token) + 8);
        sprintf(hv, "Bearer %s", token);
        rw_http_header_t hs[] = {{"Host", 4, "127.0.0.1", 9}, {"User-Agent", 10, "wrk", 3},
                                 {"Authorization", 13, hv, strlen(hv)}};
        rw_http_req_t fake;
        memset(&fake, 0, sizeof fake);
        fake.method = "GET";
        fake.path = "/jwt";
        fake.path_len = 4;
        fake.query = "";
        fake.headers = hs;
        fake.n_headers = 3;
        struct timespec t0, t1;
        int n = 200000;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < n; i++) {
            rw_jwt_authz_result_t res;
            rw_jwt_authz_check(authz, &fake, NULL, 0, &res, on_authz, NULL);
            cJSON *auth = rw_jwt_authz_event_authorizer(&res);
            cJSON_Delete(auth);
            rw_jwt_authz_result_release(&res);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / n;
        printf("check + event authorizer, warm token: %.2f us per request\n", ns / 1000.0);
        free(hv);
    }
    double none = 0, jwt = 0;
    for (int run = 0; run < 3; run++) {
        double n = wrk(port, "/none", token, seconds, conns);
        double j = wrk(port, "/jwt", token, seconds, conns);
        printf("run %d: none=%.0f jwt=%.0f req/s\n", run + 1, n, j);
        none = n > none ? n : none;
        jwt = j > jwt ? j : jwt;
    }
    uv_async_send(&stop_async);
    pthread_join(th, NULL);
    uv_loop_close(&loop);
    unlink(path);
    free(token);
    free(jwks);
    rw_jwks_free(set);
    rw_jwk_free(key);
    printf("authz: jwt=%.0f none=%.0f ratio=%.3f\n", jwt, none, none > 0 ? jwt / none : 0);
    return 0;
}
