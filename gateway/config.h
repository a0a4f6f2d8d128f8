/* reelway's configuration: flags, then environment, then defaults. Private to
 * the gateway. */
#ifndef REELWAY_GATEWAY_CONFIG_H
#define REELWAY_GATEWAY_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "reelway/http.h"

typedef struct rw_config_s {
    char host[256];          /**< REELWAY_HOST / --host, default 127.0.0.1 */
    int port;                /**< REELWAY_PORT / --port, default 3000 (0 = any free port) */
    char data_dir[4096];     /**< REELWAY_DATA_DIR / --data-dir, default ./.reelway */
    char mongodb_uri[2048];  /**< MONGODB_URI / --mongodb-uri; empty = local FerretDB */
    char template_path[4096]; /**< REELWAY_TEMPLATE / --template; empty = none */
    char db_name[128];       /**< REELWAY_DB_NAME: reelway's own collections (reelway) */
    char parameter_overrides[4096]; /**< --parameter-overrides "K=V K2=V2" (as sam local) */
    int workers;             /**< REELWAY_WORKERS / --workers, default: number of cores */
    char admin_key[256];     /**< REELWAY_ADMIN_KEY: protects the admin and invoke APIs */
    bool invoke_api_public;  /**< --invoke-api-public: the Invoke API also off loopback */
    char port_file[4096];    /**< --port-file: write the bound port there once listening */
    bool access_log;         /**< REELWAY_ACCESS_LOG=0 turns the access log off */
    char source_dir[4096];   /**< where reelway was built from (maps CodeUri to functions_dir) */
    char functions_dir[4096]; /**< REELWAY_FUNCTIONS_DIR: build tree holding C functions' bootstraps */
    char python[4096];       /**< REELWAY_PYTHON: interpreter with awslambdaric */
    char node[4096];         /**< REELWAY_NODE: node binary */
    char node_ric[4096];     /**< REELWAY_NODE_RIC: aws-lambda-ric's bin/index.mjs */
    uint64_t idle_ms;        /**< REELWAY_FUNCTION_IDLE_MS: reap idle environments after (600000) */
    uint64_t init_timeout_ms; /**< REELWAY_INIT_TIMEOUT_MS: a cold start's init must end within (10000) */
    int max_environments;    /**< REELWAY_MAX_ENVIRONMENTS: per worker (64) */
    bool function_logs_stdout; /**< REELWAY_FUNCTION_LOGS=on: copy function logs to stdout */
    uint64_t async_retry_base_ms; /**< REELWAY_ASYNC_RETRY_BASE_MS: first retry wait (60000) */
    uint64_t async_lease_margin_ms; /**< REELWAY_ASYNC_LEASE_MARGIN_MS: a delivery's lease is
                                         init timeout + Timeout + this (30000); after a crash the
                                         message is delivered again when the lease ends */
    uint64_t schedule_lease_ms; /**< REELWAY_SCHEDULE_LEASE_MS: the scheduler lease's links last
                                     this long (15000); a dead node's schedules move to another
                                     within it */
    int test_schedule_scale;  /**< REELWAY_TEST_SCHEDULE_SCALE, tests only: every rate(...)
                                   period is divided by this (1); crons are not scaled */
    rw_http_limits_t limits; /**< REELWAY_MAX_CONNECTIONS, REELWAY_HEADER_TIMEOUT_MS, ... */
} rw_config_t;

/**
 * Fills cfg from argv (after the subcommand), the environment and defaults.
 * Returns 0, or RW_ECONFIG after printing the reason to err.
 */
int rw_config_load(rw_config_t *cfg, int argc, char **argv, FILE *err);

/** Prints the effective configuration once, secrets masked. */
void rw_config_print(const rw_config_t *cfg, const char *db_uri, FILE *out);

/**
 * Copies uri into out with any password replaced by "****".
 */
void rw_config_mask_uri(const char *uri, char *out, size_t len);

#endif
