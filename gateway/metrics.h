/* Metrics every worker of a node writes into one shared memory region, so that
 * /_/metrics (answered by whichever worker gets it) shows the whole node, in
 * Prometheus text format. Private to the gateway. */
#ifndef REELWAY_GATEWAY_METRICS_H
#define REELWAY_GATEWAY_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rw_metrics_s rw_metrics_t;

/**
 * Creates the shared region for n_routes routes (names copied; their order is
 * the route id) and up to max_workers workers. Call before forking. NULL on
 * failure.
 */
rw_metrics_t *rw_metrics_new(const char *const *route_names, size_t n_routes, int max_workers,
                             const char *const *function_names, size_t n_functions);
void rw_metrics_free(rw_metrics_t *m);

/** Counts one finished request of route id (out of range: the last route). */
void rw_metrics_request(rw_metrics_t *m, size_t route, int status, uint64_t latency_us,
                        uint64_t bytes_in, uint64_t bytes_out);

/** This worker's open connections (a gauge; the total is summed). */
void rw_metrics_connections(rw_metrics_t *m, int worker, int64_t open);

/** Counts one function invocation: outcome is a short label ("ok", "error",
 *  "timeout", "crash", "throttled", ...); cold marks a cold start. */
void rw_metrics_invocation(rw_metrics_t *m, size_t function, const char *outcome, bool cold,
                           uint64_t duration_us);

/** Writes the Prometheus text exposition into a malloc'd buffer. */
char *rw_metrics_render(const rw_metrics_t *m, size_t *len);

#endif
