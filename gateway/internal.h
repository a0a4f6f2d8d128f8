/* What the gateway's files share. Private to gateway/. */
#ifndef REELWAY_GATEWAY_INTERNAL_H
#define REELWAY_GATEWAY_INTERNAL_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <uv.h>

#include "app.h"
#include "config.h"
#include "functions.h"
#include "reelway/gateway.h"
#include "reelway/http.h"

struct rw_queue_delivery_s;

struct rw_gateway_s {
    uv_loop_t *loop;
    rw_config_t cfg;
    rw_gateway_node_t node;       /* template and shared memory, from the supervisor */
    char db_uri[2048];
    mongoc_uri_t *mongo_uri;
    mongoc_client_pool_t *pool;   /* thread-safe; used from threadpool work only */
    rw_http_server_t *http;
    bool stopping;
    void (*stop_done)(void *arg);
    void *stop_arg;
    unsigned pending_work;        /* threadpool jobs not yet back on the loop */
    /* from the template (app.c) */
    gw_api_t *apis;
    size_t n_apis;
    rw_fn_config_t *fn_configs;
    char ***fn_env;
    char **fn_paths;
    size_t n_fns;
    rw_fnmgr_t *fnmgr;
    struct rw_http_client_s *http_client; /* upstream connections (HTTP_PROXY) */
    struct rw_apikeys_s *apikeys;  /* API keys and usage plans (authorize.c) */
    struct rw_queue_s *queue;      /* async invocations: producer (async.c) */
    bool queue_open;               /* the producer is not closed yet */
    struct rw_queue_consumer_s *consumer; /* ... and this worker's consumer */
    struct rw_scheduler_s *scheduler;     /* Schedule events (scheduler.c) */
    struct gw_async_s *async;             /* what the invokers need (async.c) */
    bool authorizers_open;         /* closed asynchronously at stop */
    struct gw_media_s *media;     /* buckets served at their ServePath (media.c) */
};

/** GET /_/health: pings the database on the threadpool; 200 or 503 with the reason. */
void rw__gateway_health(rw_gateway_t *gw, rw_http_req_t *req);

/** The Lambda Invoke API (POST /2015-03-31/functions/NAME/invocations). */
bool rw__invoke_api_match(const rw_http_req_t *req);
void rw__invoke_api(rw_gateway_t *gw, rw_http_req_t *req);

/**
 * Stores an asynchronous invocation of function durably (the queue in MongoDB)
 * and calls cb(arg, 0, request_id) once the write is acknowledged, or with a
 * negative status. Returns 0, or a negative code without calling cb.
 */
int rw__gateway_enqueue(rw_gateway_t *gw, const char *function, const char *payload, size_t len,
                        const char *request_id,
                        void (*cb)(void *arg, int status, const char *request_id), void *arg);

/** The admin API (/_/admin/apikeys...). */
bool rw__admin_match(const rw_http_req_t *req);
void rw__admin(rw_gateway_t *gw, rw_http_req_t *req);

/** Loopback (unless --invoke-api-public) and the admin key: true, or the
 *  request is answered 403 and false returned. */
bool rw__admin_authorized(rw_gateway_t *gw, rw_http_req_t *req);

/** Answers with o as JSON (and deletes o); 500 when it cannot be printed. */
void rw__admin_respond_json(rw_http_req_t *req, int status, struct cJSON *o);

/** The queues' admin API: POST /_/admin/queues/{QueueName}/messages (sqs.c). */
bool rw__sqs_admin_match(const rw_http_req_t *req);
void rw__sqs_admin(rw_gateway_t *gw, rw_http_req_t *req);

/** The invoker of SQS subscriptions (a rw_queue_invoke_batch_cb; arg: the gateway). */
int rw__sqs_invoke_batch(void *arg, const char *function, struct rw_queue_delivery_s *const *ds,
                         size_t n);

/** Event sources and asynchronous invocations (async.c): the producer and the
 *  consumer (Event invocations and SQS subscriptions) start after the
 *  functions, then the scheduler. At stop the scheduler closes, then the
 *  consumer (done runs then), before the functions; the producer last. */
int rw__async_start(rw_gateway_t *gw, char *why, size_t whylen);
void rw__async_close(rw_gateway_t *gw, void (*done)(void *arg), void *arg);
void rw__async_close_producer(rw_gateway_t *gw, void (*done)(void *arg), void *arg);

/** A threadpool job of the gateway finished (the gateway may be waiting to free). */
void rw__gateway_work_done(rw_gateway_t *gw);

#endif
