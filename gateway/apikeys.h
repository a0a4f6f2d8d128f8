/* API keys and usage plans, as API Gateway's REST APIs have them. Private to
 * the gateway.
 *
 * Keys are stored hashed: collection rw_api_keys holds
 *   {_id: key id (10 characters), name, hash: SHA-256 hex of the key (unique
 *    index), enabled, created: date, plans: [plan ids]}
 * and the clear key ("rwk_" + 43 characters) is shown once, at creation.
 *
 * A request to a route that requires a key (rw_apikeys_check):
 *   - no x-api-key, a malformed, unknown or revoked key, or a key in no usage
 *     plan for this API                         403 {"message":"Forbidden"}
 *   - over the plan's throttle (rateLimit/s, burstLimit): a token bucket
 *     shared by every worker of the node       429 {"message":"Too Many Requests"}
 *                                                  with Retry-After (seconds)
 *   - over the plan's quota (limit per UTC DAY, ISO WEEK from Monday, or
 *     MONTH), counted in MongoDB with atomic conditional increments, so every
 *     gateway sharing the database shares it   429 {"message":"Limit Exceeded"}
 *   - otherwise the request goes on; the key's id is for
 *     requestContext.identity.apiKeyId (and the presented key for apiKey).
 * Quota counters live in rw_api_usage: {_id: "<plan>|<key id>|<period>", plan,
 * key, period ("D2024-05-17", "W2024-05-13", "M2024-05"), count, expires}.
 * A refused request (throttled, or over quota) does not count. On FerretDB
 * 1.x, whose updates are not atomic (a read, then a write), each counted
 * request instead inserts a ticket {_id: "<counter id>#<n>"} with n from 1 to
 * the limit into rw_api_usage_tickets: the unique _id is the atomic step, and
 * the counter document is only a hint there (see apikeys.c).
 *
 * Lookups are cached per worker: a found key for cache_ttl_ms (5 s by
 * default), an unknown one for negative_ttl_ms (1 s). So a revoked key stops
 * working on every gateway within cache_ttl_ms of the revocation (at once on
 * the gateway that revoked it), and a new key may be refused for up to
 * negative_ttl_ms by a gateway that had just been shown it unknown.
 *
 * Threading: rw_apikeys_* functions taking an rw_apikeys_t run on its loop
 * thread, and their callbacks too; database work runs on libuv's threadpool
 * with clients from the pool. The *_sync functions block: for the CLI and for
 * threadpool jobs, never for a loop thread. */
#ifndef REELWAY_GATEWAY_APIKEYS_H
#define REELWAY_GATEWAY_APIKEYS_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "reelway/auth.h"
#include "reelway/http.h"
#include "throttle.h"

#define RW_APIKEYS_COLLECTION "rw_api_keys"
#define RW_APIKEYS_USAGE_COLLECTION "rw_api_usage"
#define RW_APIKEYS_TICKETS_COLLECTION "rw_api_usage_tickets"
/** The prefix of the keys reelway issues. */
#define RW_APIKEY_PREFIX "rwk"
/** Key ids: lower-case letters and digits, as long as API Gateway's. */
#define RW_APIKEY_ID_LEN 10
/** Longest key name. */
#define RW_APIKEY_NAME_MAX 128

typedef enum rw_quota_period_e {
    RW_QUOTA_NONE = 0,
    RW_QUOTA_DAY,   /**< from 00:00 UTC */
    RW_QUOTA_WEEK,  /**< from Monday 00:00 UTC */
    RW_QUOTA_MONTH, /**< from the 1st, 00:00 UTC */
} rw_quota_period_t;

/** A usage plan, as the template declares it (strings borrowed by the config,
 * copied by rw_apikeys_new). */
typedef struct rw_usage_plan_s {
    const char *id; /**< what keys' "plans" arrays name */
    /** The APIs (e.g. "<api>/<stage>", whatever the caller passes to
     * rw_apikeys_check) the plan covers; none: every API. */
    const char *const *apis;
    size_t n_apis;
    double rate_limit;  /**< steady requests per second; <= 0: no throttle */
    double burst_limit; /**< bucket size; < 1 counts as 1 */
    int64_t quota_limit; /**< requests per period; <= 0: no quota */
    rw_quota_period_t quota_period;
} rw_usage_plan_t;

typedef struct rw_apikeys_config_s {
    const char *db_name; /**< the database holding the collections; required */
    const rw_usage_plan_t *plans;
    size_t n_plans;
    uint64_t cache_ttl_ms;    /**< found keys (5000; the revocation bound) */
    uint64_t negative_ttl_ms; /**< unknown keys (1000) */
    size_t cache_entries;     /**< keys remembered per worker (10000) */
} rw_apikeys_config_t;

/** A stored key, never its clear value. */
typedef struct rw_apikey_record_s {
    char id[RW_APIKEY_ID_LEN + 1];
    char name[RW_APIKEY_NAME_MAX + 1];
    bool enabled;
    int64_t created_ms; /**< milliseconds since the epoch */
    char **plans;       /**< malloc()ed; rw_apikey_record_clear frees them */
    size_t n_plans;
} rw_apikey_record_t;

/** Frees a record's plans (the record itself is the caller's). */
void rw_apikey_record_clear(rw_apikey_record_t *rec);

/** Frees an array of n records from rw_apikeys_list_sync. NULL ok. */
void rw_apikey_records_free(rw_apikey_record_t *recs, size_t n);

/* ---- blocking: the CLI, the admin API's jobs, tests ---------------------- */

/**
 * Creates the unique index on hash (idempotent). Returns 0 or RW_EDB with the
 * reason in err.
 */
int rw_apikeys_ensure_indexes(mongoc_client_t *client, const char *db, char *err, size_t errlen);

/**
 * Creates an enabled key named name (1..RW_APIKEY_NAME_MAX printable
 * characters) in the plans plans[0..n_plans) (ids are stored as given: check
 * them against the template first). Writes the clear key, shown only now, to
 * clear_key and the stored record to *rec (clear it after).
 * Returns 0, -EINVAL (bad name or plan id), RW_EDB or RW_ECRYPTO.
 */
int rw_apikeys_create_sync(mongoc_client_t *client, const char *db, const char *name,
                           const char *const *plans, size_t n_plans, rw_apikey_record_t *rec,
                           char clear_key[RW_APIKEY_MAX + 1], char *err, size_t errlen);

/** Lists every key, oldest first, into a new array (rw_apikey_records_free).
 * Returns 0 or RW_EDB. */
int rw_apikeys_list_sync(mongoc_client_t *client, const char *db, rw_apikey_record_t **recs,
                         size_t *n, char *err, size_t errlen);

/** Reads one key by id. Returns 0, RW_ENOTFOUND or RW_EDB. */
int rw_apikeys_get_sync(mongoc_client_t *client, const char *db, const char *id,
                        rw_apikey_record_t *rec, char *err, size_t errlen);

/** Finds the key whose clear value hashes to hash (rw_token_hash). Returns 0,
 * RW_ENOTFOUND or RW_EDB. */
int rw_apikeys_find_by_hash_sync(mongoc_client_t *client, const char *db, const char *hash,
                                 rw_apikey_record_t *rec, char *err, size_t errlen);

/** Revokes (disables) a key; the record stays, for audit. Returns 0,
 * RW_ENOTFOUND or RW_EDB. */
int rw_apikeys_revoke_sync(mongoc_client_t *client, const char *db, const char *id, char *err,
                           size_t errlen);

/** Adds (add = true) or removes a key's association with a usage plan.
 * Returns 0, RW_ENOTFOUND (no such key), -EINVAL or RW_EDB. */
int rw_apikeys_associate_sync(mongoc_client_t *client, const char *db, const char *id,
                              const char *plan, bool add, char *err, size_t errlen);

/**
 * Counts one request against a quota: atomically increments the counter of
 * (plan, key, the period holding now_s) unless it already reached limit.
 * Returns 0 (counted; *used, if non-NULL, gets the count after it when
 * known, else -1), RW_ELIMIT (the period's quota is used up; nothing counted)
 * or RW_EDB. Safe from any number of threads and gateways at once.
 */
int rw_apikeys_quota_consume_sync(mongoc_client_t *client, const char *db, const char *plan,
                                  const char *key_id, int64_t limit, rw_quota_period_t period,
                                  int64_t now_s, int64_t *used, char *err, size_t errlen);

/** The requests counted in the period holding now_s (0 if none). Returns 0 or RW_EDB. */
int rw_apikeys_usage_sync(mongoc_client_t *client, const char *db, const char *plan,
                          const char *key_id, rw_quota_period_t period, int64_t now_s,
                          int64_t *used, char *err, size_t errlen);

/** Writes the period label for now_s ("D2024-05-17", "W2024-05-13" for the
 * week's Monday, "M2024-05") and the period's end (seconds) to *end_s. */
void rw_quota_period_label(rw_quota_period_t period, int64_t now_s, char out[16],
                           int64_t *end_s);

/** Parses "DAY", "WEEK" or "MONTH" (API Gateway's names); RW_QUOTA_NONE otherwise. */
rw_quota_period_t rw_quota_period_parse(const char *name);

/* ---- on the loop: the request pipeline ---------------------------------- */

typedef struct rw_apikeys_s rw_apikeys_t;

/** The outcome of one check. */
typedef struct rw_apikeys_result_s {
    /** 200: allowed; 403, 429 or 500: answer with rw_apikeys_respond. */
    int http_status;
    /** "Forbidden", "Too Many Requests", "Limit Exceeded" or "Internal Server
     * Error"; NULL when allowed. Static. */
    const char *message;
    uint32_t retry_after_s;            /**< 429 from the throttle: seconds */
    char key_id[RW_APIKEY_ID_LEN + 1]; /**< the key's id ("" if unknown) */
    const char *plan_id;               /**< the plan applied (borrowed from the config) */
    char detail[192];                  /**< for logs (never the key) */
} rw_apikeys_result_t;

/** Completion of a check that went to the database; result valid during the call. */
typedef void (*rw_apikeys_cb)(rw_apikeys_result_t *result, void *arg);

#define RW_APIKEYS_DONE 0
#define RW_APIKEYS_PENDING 1

/** Counters, for tests and metrics. */
typedef struct rw_apikeys_stats_s {
    uint64_t checks, cache_hits, lookups, quota_calls, db_errors;
} rw_apikeys_stats_t;

/**
 * Creates the key checker for one worker. pool is borrowed (it must outlive
 * the checker); throttle is the node's shared table from rw_throttle_create
 * (borrowed; NULL makes a private table for this process, e.g. in tests or a
 * single-process gateway). The unique index is ensured in the background.
 * Returns 0 with *out, RW_ECONFIG (why says which plan or field), -ENOMEM.
 */
int rw_apikeys_new(uv_loop_t *loop, mongoc_client_pool_t *pool, rw_throttle_t *throttle,
                   const rw_apikeys_config_t *cfg, rw_apikeys_t **out, char *why, size_t whylen);

/**
 * Checks req's x-api-key for a route of API api (matched against the plans'
 * apis; NULL: any plan of the key). Returns RW_APIKEYS_DONE with *res filled
 * (cb not called): a cached key without quota, or any refusal found without
 * the database; RW_APIKEYS_PENDING: cb(result, arg) runs later on the loop,
 * exactly once (also if the checker is closed meanwhile); -EINVAL or -ENOMEM
 * (cb not called). req and api are read during the call only.
 */
int rw_apikeys_check(rw_apikeys_t *ak, const rw_http_req_t *req, const char *api,
                     rw_apikeys_result_t *res, rw_apikeys_cb cb, void *arg);

/** Answers a refused request ({"message": ...}, Retry-After on a throttle 429)
 * and ends it. */
void rw_apikeys_respond(rw_http_req_t *req, const rw_apikeys_result_t *res);

/** Completion of an admin call: status 0 or a negative code; for create,
 * clear_key and rec are set; for list, recs/n_recs; for revoke and associate,
 * only status. Everything is valid during the call only. */
typedef struct rw_apikeys_admin_result_s {
    int status;
    char error[256];
    rw_apikey_record_t rec;
    char clear_key[RW_APIKEY_MAX + 1];
    rw_apikey_record_t *recs;
    size_t n_recs;
} rw_apikeys_admin_result_t;

typedef void (*rw_apikeys_admin_cb)(rw_apikeys_admin_result_t *result, void *arg);

/** The admin API's calls, run on the threadpool. Plan ids are checked against
 * the configured plans (-EINVAL). A revocation or dissociation made here
 * empties this worker's cache at once. Return 0 (cb runs later, once) or a
 * negative code (cb not called). Arguments are copied. */
int rw_apikeys_create(rw_apikeys_t *ak, const char *name, const char *const *plans,
                      size_t n_plans, rw_apikeys_admin_cb cb, void *arg);
int rw_apikeys_list(rw_apikeys_t *ak, rw_apikeys_admin_cb cb, void *arg);
int rw_apikeys_revoke(rw_apikeys_t *ak, const char *id, rw_apikeys_admin_cb cb, void *arg);
int rw_apikeys_associate(rw_apikeys_t *ak, const char *id, const char *plan, bool add,
                         rw_apikeys_admin_cb cb, void *arg);

/** Fills *st with the checker's counters. */
void rw_apikeys_stats(const rw_apikeys_t *ak, rw_apikeys_stats_t *st);

/**
 * Closes the checker once its threadpool jobs are back (their callbacks run
 * first), then calls done(arg) (may be NULL; it may run before this returns
 * when nothing is in flight). Checks after close are refused (-EINVAL).
 */
void rw_apikeys_close(rw_apikeys_t *ak, void (*done)(void *arg), void *arg);

#endif
