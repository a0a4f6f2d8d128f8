/* The router: method + path templates as API Gateway has them ("/reels/{id}",
 * greedy "/{proxy+}", method ANY, the HTTP API's "$default" route), matched
 * most-specific first. Private to the gateway. */
#ifndef REELWAY_GATEWAY_ROUTER_H
#define REELWAY_GATEWAY_ROUTER_H

#include <stddef.h>

typedef struct rw_router_s rw_router_t;

#define RW_ROUTE_MAX_PARAMS 16

/** A match. Names point into the router; values are decoded copies owned by the
 *  match (free with rw_route_match_free). */
typedef struct rw_route_match_s {
    void *target;
    const char *route_key;      /* "GET /reels/{id}", "ANY /{proxy+}", "$default" */
    const char *resource;       /* "/reels/{id}"; "/{proxy+}" for $default */
    size_t n_params;
    const char *names[RW_ROUTE_MAX_PARAMS];
    char *values[RW_ROUTE_MAX_PARAMS];
} rw_route_match_t;

rw_router_t *rw_router_new(void);
void rw_router_free(rw_router_t *r);

/**
 * Adds a route. method is an HTTP method or "ANY"; path is "$default" or a
 * template starting with '/': literal segments, "{name}" segments, and one
 * "{name+}" as the last segment. target is borrowed. Returns 0, UV_EEXIST for
 * a duplicate method + path, or RW_EPARSE for a malformed template (with the
 * reason in why, if given).
 */
int rw_router_add(rw_router_t *r, const char *method, const char *path, void *target,
                  char *why, size_t whylen);

/**
 * Matches a request. path is the raw (percent-encoded) path without the query.
 * Returns 0 with *m filled; RW_ENOTFOUND when no route has this path (404);
 * UV_ENOTSUP when routes have this path but none for this method (405), with
 * the allowed methods ("GET, POST") in allow. Literal segments beat {param}
 * segments, which beat {greedy+}; an exact method beats ANY; "$default" takes
 * what nothing else does. A path with an invalid percent-encoding or an
 * encoded NUL matches nothing (RW_EPARSE: answer 400).
 */
int rw_router_match(const rw_router_t *r, const char *method, const char *path, size_t path_len,
                    rw_route_match_t *m, char *allow, size_t allow_len);

void rw_route_match_free(rw_route_match_t *m);

/** Percent-decodes src[0..len) into a new string; NULL on bad encoding or NUL. */
char *rw_percent_decode(const char *src, size_t len, size_t *out_len);

#endif
