/* The gateway: one per worker process (or per loop when embedded). It owns the
 * HTTP server, the database pool, the routes and everything behind them.
 *
 * Threading: all functions run on the gateway's loop thread. Database work is
 * done on libuv's threadpool and comes back through the loop. */
#ifndef REELWAY_GATEWAY_H
#define REELWAY_GATEWAY_H

#include <stdbool.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rw_gateway_s rw_gateway_t;
struct rw_config_s;
struct rw_template_s;
struct rw_metrics_s;
struct rw_fn_shared_s;
struct rw_throttle_s;

/**
 * What the supervisor prepares once for all workers of a node, before it
 * forks: the loaded template and the shared-memory counters. All may be NULL
 * (no template: only the built-in routes).
 */
typedef struct rw_gateway_node_s {
    const struct rw_template_s *tpl;
    struct rw_metrics_s *metrics;
    struct rw_fn_shared_s *fn_shared;
    struct rw_throttle_s *throttle; /* usage plans' token buckets */
    int worker_index, worker_count;
} rw_gateway_node_t;

/**
 * Creates a gateway on loop for cfg and node (borrowed for the gateway's life),
 * connected to the database at db_uri
 * (borrowed; copied). listen_fd >= 0 is an already bound socket to listen on
 * (ownership passes to the gateway); -1 makes the gateway bind cfg->host and
 * cfg->port itself with SO_REUSEPORT. Returns 0 and the gateway in *out, or a
 * negative code with the reason printed to stderr.
 */
int rw_gateway_start(uv_loop_t *loop, const struct rw_config_s *cfg,
                     const rw_gateway_node_t *node, const char *db_uri, int listen_fd,
                     rw_gateway_t **out);

/** The port the gateway listens on. */
int rw_gateway_port(const rw_gateway_t *gw);

/**
 * Graceful stop: no new connections, in-flight requests finish until the
 * shutdown deadline, then everything closes and the gateway frees itself; the
 * loop then has nothing left of it. done (may be NULL) runs once at the end.
 */
void rw_gateway_stop(rw_gateway_t *gw, void (*done)(void *arg), void *arg);

/**
 * Runs one worker until SIGTERM or SIGINT: a loop, a gateway, signal handling,
 * and a clean loop close. ready_fd >= 0 gets one byte once listening. Returns a
 * process exit status.
 */
int rw_gateway_run_worker(const struct rw_config_s *cfg, const rw_gateway_node_t *node,
                          const char *db_uri, int listen_fd, int ready_fd);

/**
 * `reelway serve`: starts the local database unless MONGODB_URI is set, forks
 * cfg->workers worker processes sharing the port (SO_REUSEPORT), restarts a
 * worker that dies, and on SIGTERM/SIGINT stops the workers gracefully and
 * then the database. Returns a process exit status.
 */
int rw_serve(struct rw_config_s *cfg);

#ifdef __cplusplus
}
#endif
#endif /* REELWAY_GATEWAY_H */
