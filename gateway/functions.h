/* Functions as Lambda execution environments: the environment manager that
 * starts, reuses, times out and reaps them, and the Runtime API each one talks
 * to. Private to the gateway.
 *
 * Threading: everything runs on the manager's loop thread. */
#ifndef REELWAY_GATEWAY_FUNCTIONS_H
#define REELWAY_GATEWAY_FUNCTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct rw_fnmgr_s rw_fnmgr_t;
typedef struct rw_invoke_s rw_invoke_t;
typedef struct rw_fn_shared_s rw_fn_shared_t;

/** Lambda's synchronous payload limit, request and response (6 MB). */
#define RW_LAMBDA_PAYLOAD_MAX (6 * 1024 * 1024)

typedef enum rw_fn_runtime_e {
    RW_FN_PROVIDED, /**< CodeUri/bootstrap is run */
    RW_FN_PYTHON,   /**< python -m awslambdaric HANDLER */
    RW_FN_NODEJS    /**< node aws-lambda-ric HANDLER */
} rw_fn_runtime_t;

/** One function, as the template declares it. Strings are borrowed for the
 *  manager's lifetime. */
typedef struct rw_fn_config_s {
    const char *name;
    const char *arn;
    rw_fn_runtime_t runtime;
    const char *runtime_name;     /**< "provided.al2023", "python3.12", ... (AWS_EXECUTION_ENV) */
    const char *handler;          /**< _HANDLER (may be NULL for provided) */
    const char *code_path;        /**< absolute directory (LAMBDA_TASK_ROOT) */
    int memory_mb;
    int timeout_s;
    const char *const *env;       /**< "KEY=VALUE" strings from Environment.Variables */
    size_t n_env;
    int reserved_concurrency;     /**< -1 = unreserved */
    int provisioned_concurrency;  /**< environments kept warm (split across workers) */
} rw_fn_config_t;

typedef struct rw_fnmgr_opts_s {
    const char *data_dir;         /**< logs go to DATA_DIR/logs/FUNCTION/ */
    const char *python;           /**< interpreter that has awslambdaric (python runtimes) */
    const char *node;             /**< node binary (nodejs runtimes) */
    const char *node_ric;         /**< aws-lambda-ric's bin/index.mjs */
    uint64_t idle_ms;             /**< idle environments are reaped after this (600 s) */
    uint64_t init_timeout_ms;     /**< the init phase must end within this (10 s) */
    int max_environments;         /**< this worker's cap on live environments (64) */
    int account_concurrency;      /**< in-flight invocations for all functions (1000) */
    const char *region;           /**< AWS_REGION ("us-east-1") */
    const char *db_uri;           /**< given to functions as MONGODB_URI unless they set it */
    bool log_stdout;              /**< also copy function logs to our stdout */
    rw_fn_shared_t *shared;       /**< counters shared by the workers (NULL: this worker only) */
    int worker_index, worker_count;
} rw_fnmgr_opts_t;

/**
 * Counters that every worker process of one node shares (in-flight invocations
 * per function, for ReservedConcurrentExecutions and the account limit): made
 * by the supervisor before it forks, NULL on failure.
 */
rw_fn_shared_t *rw_fn_shared_new(size_t n_functions);
void rw_fn_shared_free(rw_fn_shared_t *s, size_t n_functions);

/** In-flight invocations of a function on this node (all workers). */
int rw_fn_shared_inflight(const rw_fn_shared_t *s, size_t fn);

/**
 * Creates the manager: checks every function's code (an executable bootstrap
 * for provided runtimes, the interpreter for the others) and starts the
 * provisioned environments. fns is copied shallowly (its strings must outlive
 * the manager). Returns NULL with the reason in why.
 */
rw_fnmgr_t *rw_fnmgr_new(uv_loop_t *loop, const rw_fnmgr_opts_t *opts, const rw_fn_config_t *fns,
                         size_t n, char *why, size_t whylen);

/** Index of a function by name, or -1. */
int rw_fnmgr_find(const rw_fnmgr_t *m, const char *name);

/** The function's configuration. */
const rw_fn_config_t *rw_fnmgr_config(const rw_fnmgr_t *m, int fn);

/**
 * Stops every environment (SIGTERM, SIGKILL after 2 s), fails what is queued,
 * closes every handle, frees the manager, then calls done (may be NULL).
 * With no environment left to wait for, that happens before it returns.
 */
void rw_fnmgr_close(rw_fnmgr_t *m, void (*done)(void *arg), void *arg);

/** Live environments of a function in this worker (for tests and metrics). */
int rw_fnmgr_environments(const rw_fnmgr_t *m, int fn, int *idle, int *busy);

typedef enum rw_invoke_status_e {
    RW_INVOKE_OK,              /**< the function answered */
    RW_INVOKE_FUNCTION_ERROR,  /**< it reported an error (payload: the error JSON) */
    RW_INVOKE_TIMEOUT,         /**< Timeout passed: the environment was killed */
    RW_INVOKE_CRASH,           /**< the environment exited during the call (Runtime.ExitError) */
    RW_INVOKE_INIT_ERROR,      /**< init failed, timed out, or the runtime could not start */
    RW_INVOKE_RESPONSE_TOO_LARGE, /**< buffered response over 6 MB */
    RW_INVOKE_CANCELLED,       /**< the caller cancelled (rw_invoke_cancel) */
    RW_INVOKE_SHUTDOWN         /**< the manager closed first */
} rw_invoke_status_t;

/** What an invocation produced; valid during the done callback only. */
typedef struct rw_invoke_result_s {
    rw_invoke_status_t status;
    const char *payload;    /**< OK: the response (empty when streamed); errors: error JSON */
    size_t len;
    const char *error_type; /**< errors: errorType ("Runtime.ExitError", a function's own) */
    bool streamed;          /**< the body went through stream_data */
    bool cold_start;        /**< this invocation started its environment */
    const char *request_id;
} rw_invoke_result_t;

/**
 * The caller's side of an invocation. stream_start/stream_data may be NULL: a
 * streamed response is then collected (up to 20 MB) and given to done whole.
 * stream_data returns false to pause the environment's output until
 * rw_invoke_resume (backpressure reaches the function). done runs exactly once;
 * the invocation is freed right after it returns.
 */
typedef struct rw_invoke_cbs_s {
    void (*stream_start)(rw_invoke_t *inv, void *arg);
    bool (*stream_data)(rw_invoke_t *inv, const char *bytes, size_t len, void *arg);
    void (*done)(rw_invoke_t *inv, const rw_invoke_result_t *res, void *arg);
} rw_invoke_cbs_t;

typedef struct rw_invoke_opts_s {
    const char *request_id;        /**< NULL: a fresh UUID */
    const char *trace_id;          /**< Lambda-Runtime-Trace-Id (X-Amzn-Trace-Id form) */
    const char *client_context;    /**< Lambda-Runtime-Client-Context, or NULL */
    const char *cognito_identity;  /**< Lambda-Runtime-Cognito-Identity, or NULL */
} rw_invoke_opts_t;

/**
 * Invokes fn with payload (copied). Returns 0 (done will run), or without
 * calling anything: UV_EBUSY when throttled (reserved or account concurrency
 * reached: 429), RW_ELIMIT when payload is over 6 MB (413), RW_ENOTFOUND for a
 * bad index, UV_ECANCELED while closing.
 */
int rw_fnmgr_invoke(rw_fnmgr_t *m, int fn, const char *payload, size_t len,
                    const rw_invoke_opts_t *opts, const rw_invoke_cbs_t *cbs, void *arg,
                    rw_invoke_t **out);

/** Resumes a streamed response after stream_data returned false. */
void rw_invoke_resume(rw_invoke_t *inv);

/**
 * The caller is gone: the response is dropped (a streamed one is cut, so the
 * function's writes fail and it stops), done runs with RW_INVOKE_CANCELLED.
 */
void rw_invoke_cancel(rw_invoke_t *inv);

/** The Content-Type the runtime gave its streamed response (valid from
 *  stream_start on), or NULL. */
const char *rw_invoke_content_type(const rw_invoke_t *inv);

/** The invocation's request id. */
const char *rw_invoke_request_id(const rw_invoke_t *inv);

#endif
