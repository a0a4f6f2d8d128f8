/* Lambda authorizers (REST TOKEN/REQUEST, HTTP API REQUEST) with their result
 * cache. Private to the gateway; runs on the worker's loop. */
#ifndef REELWAY_GATEWAY_AUTHZ_LAMBDA_H
#define REELWAY_GATEWAY_AUTHZ_LAMBDA_H

#include <cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "app.h"

typedef struct rw_lambda_authz_s rw_lambda_authz_t;
struct rw_tpl_authorizer_s;

/**
 * The outcome of a check. status 0: allowed, authorizer is the event's
 * requestContext.authorizer (ownership passes to the callee) and usage_key the
 * answer's usageIdentifierKey (borrowed, or NULL). Otherwise the HTTP status to
 * answer (401, 403, 500) with message (NULL: API Gateway's null message) and a
 * reason for the log; -1 when the client went away (just end the request).
 */
typedef void (*rw_lambda_authz_done_cb)(gw_req_t *ctx, int status, const char *message,
                                        const char *reason, cJSON *authorizer,
                                        const char *usage_key);

/** One authorizer of one API in this worker. NULL with why on a bad config. */
rw_lambda_authz_t *rw_lambda_authz_new(rw_gateway_t *gw, const struct rw_tpl_authorizer_s *tpl,
                                       bool http_api, char *why, size_t whylen);
void rw_lambda_authz_free(rw_lambda_authz_t *a);

/** Authorizes ctx's request; done runs exactly once (possibly before return). */
void rw_lambda_authz_check(rw_lambda_authz_t *a, gw_req_t *ctx, rw_lambda_authz_done_cb done);

/** How many times the authorizer function was invoked (cache misses). */
uint64_t rw_lambda_authz_invocations(const rw_lambda_authz_t *a);

#endif
