/* One gateway per worker: its HTTP server, its database pool, and the request
 * handler that sends each request where it belongs. */
#include "internal.h"

#include "http_client.h"
#include "media.h"

#include "reelway/error.h"
#include "reelway/stream.h"

#include <cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool path_is(const rw_http_req_t *req, const char *path)
{
    size_t n = strlen(path);
    return req->path_len == n && memcmp(req->path, path, n) == 0;
}

static void handle_request(rw_http_req_t *req, void *arg)
{
    rw_gateway_t *gw = arg;
    if (req->path_len >= 3 && memcmp(req->path, "/_/", 3) == 0) {
        bool get = !strcmp(req->method, "GET") || !strcmp(req->method, "HEAD");
        if (rw__admin_match(req)) {
            rw__admin(gw, req);
            return;
        }
        if (rw__sqs_admin_match(req)) {
            rw__sqs_admin(gw, req);
            return;
        }
        if (path_is(req, "/_/health") || path_is(req, "/_/metrics")) {
            bool health = path_is(req, "/_/health");
            rw__app_ctx(gw, req, health ? RW_APP_RID_HEALTH : RW_APP_RID_METRICS);
            if (!get) {
                rw_http_header_t allow = {"Allow", 5, "GET, HEAD", 9};
                rw_http_respond_error(req, 405, "Method Not Allowed", "use GET", &allow, 1);
            } else if (health) {
                rw__gateway_health(gw, req);
            } else {
                rw__app_metrics(gw, req);
            }
            return;
        }
    }
    if (rw__invoke_api_match(req)) {
        rw__invoke_api(gw, req);
        return;
    }
    /* Buckets at their ServePath (media.c), unless an API's longer mount holds the path. */
    if (rw__media_route(gw, req))
        return;
    if (rw__app_route(gw, req))
        return;
    rw_http_respond_error(req, 404, "Not Found", "no route matches this path", NULL, 0);
}

static void on_closed_nothing_to_do(void *arg)
{
}

int rw_gateway_start(uv_loop_t *loop, const rw_config_t *cfg, const rw_gateway_node_t *node,
                     const char *db_uri, int listen_fd, rw_gateway_t **out)
{
    rw_gateway_t *gw = calloc(1, sizeof *gw);
    if (!gw)
        return UV_ENOMEM;
    gw->loop = loop;
    gw->cfg = *cfg;
    if (node)
        gw->node = *node;
    if (gw->node.worker_count <= 0)
        gw->node.worker_count = 1;
    snprintf(gw->db_uri, sizeof gw->db_uri, "%s", db_uri);
    bson_error_t error;
    gw->mongo_uri = mongoc_uri_new_with_error(db_uri, &error);
    int rc;
    if (!gw->mongo_uri) {
        fprintf(stderr, "reelway: invalid MongoDB URI: %s\n", error.message);
        rc = RW_ECONFIG;
        goto fail;
    }
    /* A request must not wait 30 s (the driver's default) for a dead database:
     * fail fast unless the operator chose otherwise in the URI. */
    if (!mongoc_uri_has_option(gw->mongo_uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
        mongoc_uri_set_option_as_int32(gw->mongo_uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 3000);
    if (!mongoc_uri_has_option(gw->mongo_uri, MONGOC_URI_CONNECTTIMEOUTMS))
        mongoc_uri_set_option_as_int32(gw->mongo_uri, MONGOC_URI_CONNECTTIMEOUTMS, 3000);
    gw->pool = mongoc_client_pool_new_with_error(gw->mongo_uri, &error);
    if (!gw->pool) {
        fprintf(stderr, "reelway: cannot create the database pool: %s\n", error.message);
        rc = RW_EDB;
        goto fail;
    }
    mongoc_client_pool_set_error_api(gw->pool, MONGOC_ERROR_API_VERSION_2);
    char why[512] = "";
    gw->authorizers_open = true;
    rc = rw__app_build(gw, why, sizeof why);
    if (rc == 0)
        rc = rw__async_start(gw, why, sizeof why);
    gw->queue_open = gw->queue != NULL;
    if (rc != 0) {
        fprintf(stderr, "reelway: %s\n", why[0] ? why : rw_strerror(rc));
        goto fail;
    }
    rc = rw__media_build(gw, why, sizeof why);
    if (rc != 0) {
        fprintf(stderr, "reelway: %s\n", why[0] ? why : rw_strerror(rc));
        goto fail;
    }
    gw->http_client = rw_http_client_new(loop, NULL);
    if (!gw->http_client) {
        rc = UV_ENOMEM;
        goto fail;
    }
    gw->http = rw_http_server_new(loop, &cfg->limits, handle_request, gw);
    if (!gw->http) {
        rc = UV_ENOMEM;
        goto fail;
    }
    rw__app_attach(gw);
    if (listen_fd >= 0)
        rc = rw_http_server_listen_fd(gw->http, listen_fd);
    else
        rc = rw_http_server_listen(gw->http, cfg->host, cfg->port, true);
    if (rc < 0) {
        fprintf(stderr, "reelway: cannot listen on %s:%d: %s\n", cfg->host, cfg->port,
                rw_strerror(rc));
        goto fail;
    }
    *out = gw;
    return 0;
fail:
    if (gw->http) {
        rw_http_server_shutdown(gw->http, NULL, NULL);
        gw->http = NULL;
    }
    rw__async_close(gw, on_closed_nothing_to_do, NULL);
    rw__async_close_producer(gw, on_closed_nothing_to_do, NULL);
    if (gw->fnmgr)
        rw_fnmgr_close(gw->fnmgr, NULL, NULL);
    if (gw->http_client)
        rw_http_client_close(gw->http_client, NULL, NULL);
    /* Closing these completes on the loop, which the caller still runs. */
    rw__authorize_close(gw, on_closed_nothing_to_do, NULL);
    rw__app_free(gw);
    rw__media_free(gw);
    if (gw->pool)
        mongoc_client_pool_destroy(gw->pool);
    if (gw->mongo_uri)
        mongoc_uri_destroy(gw->mongo_uri);
    free(gw);
    return rc;
}

int rw_gateway_port(const rw_gateway_t *gw)
{
    return rw_http_server_port(gw->http);
}

static void gateway_free(rw_gateway_t *gw)
{
    void (*done)(void *) = gw->stop_done;
    void *arg = gw->stop_arg;
    rw__app_free(gw);
    rw__media_free(gw);
    mongoc_client_pool_destroy(gw->pool);
    mongoc_uri_destroy(gw->mongo_uri);
    free(gw);
    if (done)
        done(arg);
}

static void maybe_free(rw_gateway_t *gw)
{
    if (gw->stopping && !gw->http && !gw->fnmgr && !gw->http_client && !gw->authorizers_open &&
        !gw->queue_open && gw->pending_work == 0)
        gateway_free(gw);
}

static void on_producer_closed(void *arg)
{
    rw_gateway_t *gw = arg;
    gw->queue_open = false;
    maybe_free(gw);
}

static void on_authorizers_closed(void *arg)
{
    rw_gateway_t *gw = arg;
    gw->authorizers_open = false;
    maybe_free(gw);
}

static void on_http_client_closed(void *arg)
{
    rw_gateway_t *gw = arg;
    gw->http_client = NULL;
    maybe_free(gw);
}

void rw__gateway_work_done(rw_gateway_t *gw)
{
    gw->pending_work--;
    maybe_free(gw);
}

static void on_fnmgr_closed(void *arg)
{
    rw_gateway_t *gw = arg;
    gw->fnmgr = NULL;
    maybe_free(gw);
}

/* The event sources have stopped (the scheduler, then the consumer, which
 * released what it held): the functions can stop now. */
static void on_consumer_closed(void *arg)
{
    rw_gateway_t *gw = arg;
    gw->pending_work++; /* held, as in on_http_stopped */
    rw__async_close_producer(gw, on_producer_closed, gw);
    if (gw->fnmgr)
        rw_fnmgr_close(gw->fnmgr, on_fnmgr_closed, gw);
    rw__gateway_work_done(gw);
}

/* In-flight requests finished (or hit the deadline): now the functions can go. */
static void on_http_stopped(void *arg)
{
    rw_gateway_t *gw = arg;
    gw->http = NULL;
    /* Held: any of these closes may finish at once (an idle client, no
     * functions) and would free gw before the next line reads it. */
    gw->pending_work++;
    if (gw->authorizers_open)
        rw__authorize_close(gw, on_authorizers_closed, gw);
    if (gw->http_client)
        rw_http_client_close(gw->http_client, on_http_client_closed, gw);
    rw__async_close(gw, on_consumer_closed, gw);
    rw__gateway_work_done(gw);
}

void rw_gateway_stop(rw_gateway_t *gw, void (*done)(void *arg), void *arg)
{
    if (gw->stopping)
        return;
    gw->stopping = true;
    gw->stop_done = done;
    gw->stop_arg = arg;
    rw_http_server_shutdown(gw->http, on_http_stopped, gw);
}

/* ---- health ------------------------------------------------------------- */

typedef struct {
    uv_work_t work;
    rw_gateway_t *gw;
    rw_http_req_t *req;
    int rc;
    char reason[256];
} health_job_t;

static void do_ping(uv_work_t *w)
{
    health_job_t *job = w->data;
    mongoc_client_t *client = mongoc_client_pool_try_pop(job->gw->pool);
    if (!client)
        client = mongoc_client_pool_pop(job->gw->pool);
    bson_t cmd = BSON_INITIALIZER;
    BSON_APPEND_INT32(&cmd, "ping", 1);
    bson_error_t error;
    bool ok = mongoc_client_command_simple(client, "admin", &cmd, NULL, NULL, &error);
    bson_destroy(&cmd);
    mongoc_client_pool_push(job->gw->pool, client);
    job->rc = ok ? 0 : RW_EDB;
    if (!ok)
        snprintf(job->reason, sizeof job->reason, "%s", error.message);
}

static void after_ping(uv_work_t *w, int status)
{
    health_job_t *job = w->data;
    rw_gateway_t *gw = job->gw;
    rw_http_header_t hs[] = {{"Content-Type", 12, "application/json", 16},
                             {"Cache-Control", 13, "no-store", 8}};
    if (status == 0 && job->rc == 0) {
        static const char ok[] = "{\"status\":\"ok\",\"db\":\"ok\"}";
        rw_http_respond(job->req, 200, hs, 2, ok, sizeof ok - 1);
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "status", "error");
        cJSON_AddStringToObject(o, "db", "down");
        cJSON_AddStringToObject(o, "reason",
                                job->reason[0] ? job->reason : "the database check did not run");
        char *body = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (body)
            rw_http_respond(job->req, 503, hs, 2, body, strlen(body));
        else
            rw_http_respond_error(job->req, 503, "Service Unavailable", "out of memory", NULL, 0);
        cJSON_free(body);
    }
    free(job);
    rw__gateway_work_done(gw);
}

void rw__gateway_health(rw_gateway_t *gw, rw_http_req_t *req)
{
    health_job_t *job = calloc(1, sizeof *job);
    if (!job) {
        rw_http_respond_error(req, 503, "Service Unavailable", "out of memory", NULL, 0);
        return;
    }
    job->gw = gw;
    job->req = req;
    job->work.data = job;
    if (uv_queue_work(gw->loop, &job->work, do_ping, after_ping) != 0) {
        free(job);
        rw_http_respond_error(req, 503, "Service Unavailable", "cannot queue the check", NULL,
                              0);
        return;
    }
    gw->pending_work++;
}

/* ---- a worker's life ---------------------------------------------------- */

typedef struct {
    rw_gateway_t *gw;
    uv_signal_t sigterm, sigint;
    bool stopping;
} worker_t;

static void on_gateway_stopped(void *arg)
{
    worker_t *w = arg;
    w->gw = NULL;
    uv_close((uv_handle_t *)&w->sigterm, NULL);
    uv_close((uv_handle_t *)&w->sigint, NULL);
}

static void on_stop_signal(uv_signal_t *s, int signum)
{
    worker_t *w = s->data;
    if (w->stopping)
        return;
    w->stopping = true;
    rw_gateway_stop(w->gw, on_gateway_stopped, w);
}

static void on_walk_report(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        fprintf(stderr, "reelway: handle of type %s still open at exit\n",
                uv_handle_type_name(h->type));
}

int rw_gateway_run_worker(const rw_config_t *cfg, const rw_gateway_node_t *node, const char *db_uri,
                          int listen_fd, int ready_fd)
{
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        return 1;
    worker_t w = {0};
    int rc = rw_gateway_start(&loop, cfg, node, db_uri, listen_fd, &w.gw);
    if (rc != 0) {
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return 1;
    }
    uv_signal_init(&loop, &w.sigterm);
    uv_signal_init(&loop, &w.sigint);
    w.sigterm.data = w.sigint.data = &w;
    uv_signal_start(&w.sigterm, on_stop_signal, SIGTERM);
    uv_signal_start(&w.sigint, on_stop_signal, SIGINT);
    if (ready_fd >= 0) {
        char port[16];
        int n = snprintf(port, sizeof port, "%d\n", rw_gateway_port(w.gw));
        if (write(ready_fd, port, (size_t)n) != n)
            fprintf(stderr, "reelway: cannot report readiness\n");
        close(ready_fd);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    int status = 0;
    /* The stream scheduler's handle (made by the first stream on this loop)
     * closes like any handle: one more turn of the loop. */
    if (rw_stream_loop_close(&loop) != 0)
        fprintf(stderr, "reelway: streams still open at exit\n");
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) {
        uv_walk(&loop, on_walk_report, NULL);
        status = 1;
    }
    return status;
}
