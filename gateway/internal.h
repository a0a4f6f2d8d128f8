/* What the gateway's files share. Private to gateway/. */
#ifndef REELWAY_GATEWAY_INTERNAL_H
#define REELWAY_GATEWAY_INTERNAL_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <uv.h>

#include "config.h"
#include "reelway/gateway.h"
#include "reelway/http.h"

struct rw_gateway_s {
    uv_loop_t *loop;
    rw_config_t cfg;
    char db_uri[2048];
    mongoc_uri_t *mongo_uri;
    mongoc_client_pool_t *pool;   /* thread-safe; used from threadpool work only */
    rw_http_server_t *http;
    bool stopping;
    void (*stop_done)(void *arg);
    void *stop_arg;
    unsigned pending_work;        /* threadpool jobs not yet back on the loop */
};

/** GET /_/health: pings the database on the threadpool; 200 or 503 with the reason. */
void rw__gateway_health(rw_gateway_t *gw, rw_http_req_t *req);

#endif
