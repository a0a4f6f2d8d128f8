/* The template: reelway's subset of AWS SAM (docs/template.md), loaded from a
 * template.yaml into the in-memory model that the router, the authorizers, the
 * environment manager and the event sources read. Private to the gateway. */
#ifndef REELWAY_GATEWAY_TEMPLATE_H
#define REELWAY_GATEWAY_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------------------ */
/* Diagnostics                                                               */
/* ------------------------------------------------------------------------ */

/** One problem found in a template. */
typedef struct rw_diag_s {
    int line;      /**< 1-based line; 0 when the problem has no place in the file */
    int col;       /**< 1-based column; 0 with line 0 */
    char *message; /**< the reason, one line, owned by the list */
} rw_diag_t;

/** A growable list of diagnostics, sorted by position once a load finishes. */
typedef struct rw_diag_list_s {
    rw_diag_t *items;
    size_t count;
    size_t cap;
    bool truncated; /**< more than RW_DIAG_MAX problems: the rest were dropped */
} rw_diag_list_t;

/** A load stops recording after this many diagnostics (pathological input). */
#define RW_DIAG_MAX 1000

/** Initializes an empty list. Never fails. */
void rw_diag_list_init(rw_diag_list_t *list);

/** Frees every message and the array; the list is empty and reusable after. Accepts NULL. */
void rw_diag_list_free(rw_diag_list_t *list);

/**
 * Appends a diagnostic (printf-style message, copied). Returns 0, or UV_ENOMEM
 * when memory ran out (the diagnostic is dropped). Past RW_DIAG_MAX entries the
 * diagnostic is dropped, `truncated` is set and 0 is returned.
 */
int rw_diag_list_add(rw_diag_list_t *list, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/**
 * Prints each diagnostic as `FILE:LINE:COL: error: reason` (or `FILE: error:
 * reason` when it has no line) to out, in list order.
 */
void rw_diag_list_print(const rw_diag_list_t *list, const char *file, FILE *out);

/* ------------------------------------------------------------------------ */
/* The model                                                                 */
/* ------------------------------------------------------------------------ */
/* Every string and array below is owned by the rw_template_t and freed by
 * rw_template_free. References between objects are indices into the arrays of
 * the rw_template_t (or of the API, for authorizers), -1 when absent. Every
 * object keeps the line and column of its declaration, so that a problem found
 * at run time can point back into the file. The model is immutable once
 * loaded and may be read from any thread. */

/** A name and a value (environment variables, stage variables, headers). */
typedef struct rw_tpl_kv_s {
    char *key;
    char *value;
} rw_tpl_kv_t;

typedef enum rw_tpl_param_type_e {
    RW_TPL_PARAM_STRING, /**< Type: String */
    RW_TPL_PARAM_NUMBER  /**< Type: Number (the value is kept as its text) */
} rw_tpl_param_type_t;

/** A template parameter, with the value in effect (override, else Default). */
typedef struct rw_tpl_param_s {
    char *name;
    rw_tpl_param_type_t type;
    char *description;     /**< NULL when absent */
    char *default_value;   /**< NULL when there is no Default */
    char **allowed_values; /**< AllowedValues */
    size_t allowed_value_count;
    char *allowed_pattern; /**< AllowedPattern (POSIX extended, whole value), or NULL */
    long min_length;       /**< MinLength, -1 when absent */
    long max_length;       /**< MaxLength, -1 when absent */
    bool has_min_value, has_max_value;
    double min_value, max_value; /**< MinValue / MaxValue (Number) */
    bool no_echo;                /**< NoEcho: never print the value */
    char *value;                 /**< the value in use */
    bool overridden;             /**< the value came from rw_template_params_t */
    int line, col;
} rw_tpl_param_t;

/** The kind of a function's runtime. */
typedef enum rw_tpl_runtime_e {
    RW_TPL_RUNTIME_PROVIDED, /**< provided, provided.al2023: CodeUri holds `bootstrap` */
    RW_TPL_RUNTIME_PYTHON,   /**< python3.9 .. python3.13, through awslambdaric */
    RW_TPL_RUNTIME_NODEJS    /**< nodejs20.x, through aws-lambda-ric */
} rw_tpl_runtime_t;

/** The kind of a function event (what invokes the function). */
typedef enum rw_tpl_event_kind_e {
    RW_TPL_EVENT_API,      /**< a REST API route (payload 1.0) */
    RW_TPL_EVENT_HTTP_API, /**< an HTTP API route (payload 2.0 by default) */
    RW_TPL_EVENT_S3,       /**< a bucket notification */
    RW_TPL_EVENT_SQS,      /**< a queue subscription (event source mapping) */
    RW_TPL_EVENT_SCHEDULE  /**< a rate() or cron() schedule */
} rw_tpl_event_kind_t;

/** One entry of a function's Events: where its details live in the model. */
typedef struct rw_tpl_event_s {
    char *name; /**< the key under Events */
    rw_tpl_event_kind_t kind;
    int api;   /**< API and HTTP_API: index into rw_template_t.apis, else -1 */
    int index; /**< API/HTTP_API: index into that API's routes; S3: into notifications;
                    SQS: into subscriptions; SCHEDULE: into schedules */
    int line, col;
} rw_tpl_event_t;

/** An AWS::Serverless::Function, with Globals.Function merged in. */
typedef struct rw_tpl_function_s {
    char *name;        /**< the logical id: the function's name everywhere */
    char *arn;         /**< arn:aws:lambda:REGION:ACCOUNT:function:NAME */
    char *description; /**< NULL when absent */
    char *runtime;     /**< as written: "provided.al2023", "python3.12", "nodejs20.x" */
    rw_tpl_runtime_t runtime_kind;
    char *handler;      /**< _HANDLER; NULL only for provided runtimes that give none */
    char *code_uri;     /**< CodeUri as written */
    char *code_path;    /**< absolute, normalized: the template's directory + CodeUri */
    char *architecture; /**< "x86_64" (default) or "arm64" */
    int memory_mb;      /**< MemorySize, 128..10240, default 128 */
    int timeout_s;      /**< Timeout, 1..900, default 3 */
    rw_tpl_kv_t *env;   /**< Environment.Variables, resolved, in file order */
    size_t env_count;
    int reserved_concurrency;    /**< ReservedConcurrentExecutions, -1 = unreserved */
    int provisioned_concurrency; /**< ProvisionedConcurrentExecutions, 0 = none */
    char *auto_publish_alias;    /**< AutoPublishAlias, NULL when absent */
    /* Asynchronous (Event) invocations: EventInvokeConfig and DeadLetterQueue. */
    int max_retry_attempts; /**< 0..2, default 2 */
    int max_event_age_s;    /**< 60..21600, default 21600 */
    int on_success_queue;   /**< DestinationConfig.OnSuccess (SQS), queue index or -1 */
    int on_failure_queue;   /**< DestinationConfig.OnFailure (SQS), queue index or -1 */
    int dead_letter_queue;  /**< DeadLetterQueue (SQS), queue index or -1 */
    rw_tpl_event_t *events;
    size_t event_count;
    int line, col;
} rw_tpl_function_t;

/** Where an authorizer finds the caller's identity. */
typedef enum rw_tpl_identity_kind_e {
    RW_TPL_IDENTITY_HEADER,         /**< a request header (name as written) */
    RW_TPL_IDENTITY_QUERY,          /**< a query string parameter */
    RW_TPL_IDENTITY_STAGE_VARIABLE, /**< a stage variable */
    RW_TPL_IDENTITY_CONTEXT         /**< a $context variable (e.g. "sourceIp") */
} rw_tpl_identity_kind_t;

typedef struct rw_tpl_identity_s {
    rw_tpl_identity_kind_t kind;
    char *name;
} rw_tpl_identity_t;

typedef enum rw_tpl_authorizer_kind_e {
    RW_TPL_AUTH_JWT,           /**< HTTP API JwtConfiguration */
    RW_TPL_AUTH_COGNITO,       /**< REST UserPoolArn: a JWT from a user pool (issuer) */
    RW_TPL_AUTH_LAMBDA_TOKEN,  /**< REST Lambda authorizer, FunctionPayloadType TOKEN */
    RW_TPL_AUTH_LAMBDA_REQUEST /**< REST REQUEST, or any HTTP API Lambda authorizer */
} rw_tpl_authorizer_kind_t;

/** A JWT issuer an authorizer trusts, and where its keys come from. */
typedef struct rw_tpl_issuer_s {
    char *issuer;    /**< the `iss` tokens must carry */
    char *jwks_uri;  /**< Metadata.Reelway JwksUri, else ISSUER/.well-known/jwks.json */
    char *jwks_file; /**< Metadata.Reelway JwksFile (absolute path), else NULL */
} rw_tpl_issuer_t;

/** An entry of an API's Auth.Authorizers. */
typedef struct rw_tpl_authorizer_s {
    char *name;
    rw_tpl_authorizer_kind_t kind;
    rw_tpl_identity_t *identity; /**< identity sources, in order */
    size_t identity_count;
    /* JWT and COGNITO */
    rw_tpl_issuer_t *issuers; /**< JWT: exactly one; COGNITO: one per user pool */
    size_t issuer_count;
    char **audiences; /**< JWT: JwtConfiguration.audience (aud or client_id); COGNITO: none */
    size_t audience_count;
    char **default_scopes; /**< JWT AuthorizationScopes: used by routes that name none */
    size_t default_scope_count;
    /* LAMBDA_TOKEN and LAMBDA_REQUEST */
    int function;          /**< the authorizer function (index into functions) */
    char *payload_version; /**< "1.0" or "2.0" (HTTP API); "1.0" for REST */
    bool simple_responses; /**< EnableSimpleResponses (HTTP API, payload 2.0) */
    /* all kinds */
    int ttl_s;                   /**< result cache TTL (ReauthorizeEvery), 0 = no cache */
    char *validation_expression; /**< TOKEN / COGNITO: POSIX ERE the token must match */
    int line, col;
} rw_tpl_authorizer_t;

/** How a route is served. */
typedef enum rw_tpl_integration_e {
    RW_TPL_INTEGRATION_FUNCTION,  /**< Lambda proxy integration */
    RW_TPL_INTEGRATION_MOCK,      /**< a fixed response from the template */
    RW_TPL_INTEGRATION_HTTP_PROXY /**< forwarded to an upstream URL */
} rw_tpl_integration_t;

/** MOCK: the fixed response (API Gateway's `default` integration response). */
typedef struct rw_tpl_mock_s {
    int status;           /**< 100..599 */
    rw_tpl_kv_t *headers; /**< from method.response.header.* responseParameters */
    size_t header_count;
    char *content_type; /**< the responseTemplates key, or NULL */
    char *body;         /**< the responseTemplates value verbatim, "" when none */
} rw_tpl_mock_t;

/** HTTP_PROXY: the upstream. */
typedef struct rw_tpl_http_proxy_s {
    char *uri;    /**< http:// URL; {name} placeholders take the route's path parameters */
    char *method; /**< httpMethod; NULL or "ANY" = the request's method */
} rw_tpl_http_proxy_t;

/** One route of an API. */
typedef struct rw_tpl_route_s {
    char *method;    /**< "GET", "POST", ..., "ANY" (upper case; "ANY" for $default) */
    char *path;      /**< "/reels/{id}", "/{proxy+}", "/", or "$default" */
    bool is_default; /**< the HTTP API $default route */
    char *route_key; /**< "GET /reels/{id}" or "$default", as API Gateway names it */
    rw_tpl_integration_t integration;
    int function;                   /**< FUNCTION: index into functions, else -1 */
    char *payload_version;          /**< "2.0" or "1.0" (FUNCTION and HTTP_PROXY) */
    int timeout_ms;                 /**< integration timeout: 50..30000 (HTTP), ..29000 (REST) */
    rw_tpl_mock_t mock;             /**< MOCK only */
    rw_tpl_http_proxy_t http_proxy; /**< HTTP_PROXY only */
    int authorizer;                 /**< index into the API's authorizers, -1 = open */
    char **scopes;                  /**< AuthorizationScopes required (JWT / COGNITO) */
    size_t scope_count;
    bool api_key_required; /**< REST: x-api-key checked against the usage plans */
    int event_function;    /**< the function whose Events declared it, or -1 (DefinitionBody) */
    char *event_name;      /**< that event's name, or NULL */
    int line, col;
} rw_tpl_route_t;

/** CORS of an API (HTTP API CorsConfiguration, or REST Cors normalized). */
typedef struct rw_tpl_cors_s {
    bool enabled;
    char **allow_origins; /**< "*" or origins */
    size_t allow_origin_count;
    char **allow_methods; /**< empty: the methods of the matched path (REST default) */
    size_t allow_method_count;
    char **allow_headers;
    size_t allow_header_count;
    char **expose_headers;
    size_t expose_header_count;
    int max_age_s; /**< -1 when not given */
    bool allow_credentials;
} rw_tpl_cors_t;

typedef enum rw_tpl_api_kind_e {
    RW_TPL_API_REST, /**< AWS::Serverless::Api: payload 1.0, API keys, usage plans */
    RW_TPL_API_HTTP  /**< AWS::Serverless::HttpApi: payload 2.0 by default */
} rw_tpl_api_kind_t;

/** An API: AWS::Serverless::Api or ::HttpApi, explicit or implicit. */
typedef struct rw_tpl_api_s {
    char *name; /**< logical id; "ServerlessRestApi" / "ServerlessHttpApi" when implicit */
    rw_tpl_api_kind_t kind;
    bool implicit;     /**< created for events that name no API, as SAM does */
    char *description; /**< NULL when absent */
    char *stage;       /**< StageName: REST required (implicit: "Prod"), HTTP "$default" */
    char *base_path;   /**< Metadata.Reelway.BasePath, or NULL */
    char *mount;       /**< URL prefix it is served under: base path, else "/STAGE",
                            else "" ($default stage) */
    char *endpoint;    /**< the gateway's endpoint + mount (GetAtt ApiEndpoint) */
    char *default_payload_version; /**< "2.0" (HTTP) or "1.0" (REST) */
    rw_tpl_kv_t *stage_variables;  /**< REST Variables / HTTP StageVariables */
    size_t stage_variable_count;
    char **binary_media_types; /**< REST BinaryMediaTypes, "~1" decoded to "/" */
    size_t binary_media_type_count;
    rw_tpl_cors_t cors;
    rw_tpl_authorizer_t *authorizers;
    size_t authorizer_count;
    int default_authorizer;    /**< index into authorizers, -1 when none */
    bool api_key_required;     /**< REST Auth.ApiKeyRequired (default of its routes) */
    bool authorize_preflight;  /**< REST AddDefaultAuthorizerToCorsPreflight (true) */
    bool api_key_on_preflight; /**< REST AddApiKeyRequiredToCorsPreflight (true) */
    bool fail_on_warnings;     /**< FailOnWarnings (kept; reelway has errors, never warnings) */
    rw_tpl_route_t *routes;
    size_t route_count;
    int line, col;
} rw_tpl_api_t;

typedef enum rw_tpl_period_e {
    RW_TPL_PERIOD_NONE,
    RW_TPL_PERIOD_DAY,
    RW_TPL_PERIOD_WEEK,
    RW_TPL_PERIOD_MONTH
} rw_tpl_period_t;

/** A usage plan: standalone AWS::ApiGateway::UsagePlan or from an Api's Auth.UsagePlan. */
typedef struct rw_tpl_usage_plan_s {
    char *name;        /**< logical id; SAM's "<Api>UsagePlan" / "ServerlessUsagePlan" */
    char *plan_name;   /**< UsagePlanName, or NULL */
    char *description; /**< or NULL */
    int *apis;         /**< the REST APIs it covers (indices) */
    size_t api_count;
    long quota_limit; /**< Quota.Limit, -1 = no quota */
    int quota_offset; /**< Quota.Offset */
    rw_tpl_period_t quota_period;
    double rate_limit;  /**< Throttle.RateLimit (requests/s), -1 = none */
    long burst_limit;   /**< Throttle.BurstLimit, -1 = none */
    bool from_api_auth; /**< declared by Auth.UsagePlan of an Api (PER_API or SHARED) */
    int line, col;
} rw_tpl_usage_plan_t;

/** An AWS::ApiGateway::ApiKey. */
typedef struct rw_tpl_api_key_s {
    char *name;        /**< logical id */
    char *key_name;    /**< Name, or NULL */
    char *description; /**< or NULL */
    char *value;       /**< Value (the key itself), or NULL: `reelway apikey` makes one */
    bool enabled;      /**< Enabled, default false as in CloudFormation */
    char *customer_id; /**< or NULL */
    int *apis;         /**< StageKeys: REST APIs (indices) */
    size_t api_count;
    int *usage_plans; /**< from AWS::ApiGateway::UsagePlanKey resources (indices) */
    size_t usage_plan_count;
    int line, col;
} rw_tpl_api_key_t;

typedef enum rw_tpl_storage_e {
    RW_TPL_STORAGE_FILESYSTEM, /**< files under a directory (default) */
    RW_TPL_STORAGE_GRIDFS      /**< MongoDB GridFS */
} rw_tpl_storage_t;

/** An AWS::S3::Bucket, kept locally. */
typedef struct rw_tpl_bucket_s {
    char *name;               /**< logical id */
    char *bucket_name;        /**< BucketName, else the logical id in lower case */
    char *arn;                /**< arn:aws:s3:::BUCKET */
    rw_tpl_storage_t storage; /**< Metadata.Reelway.Storage */
    char *directory;          /**< Metadata.Reelway.Directory (absolute), NULL = the data dir's */
    char *serve_path;         /**< Metadata.Reelway.ServePath: the gateway serves objects there */
    int line, col;
} rw_tpl_bucket_t;

/** S3 event types a notification asks for (bits). */
enum {
    RW_TPL_S3_CREATED_PUT = 1 << 0,
    RW_TPL_S3_CREATED_POST = 1 << 1,
    RW_TPL_S3_CREATED_COPY = 1 << 2,
    RW_TPL_S3_CREATED_MULTIPART = 1 << 3,
    RW_TPL_S3_REMOVED_DELETE = 1 << 4,
    RW_TPL_S3_REMOVED_MARKER = 1 << 5,
    RW_TPL_S3_CREATED_ALL = 0x0f,
    RW_TPL_S3_REMOVED_ALL = 0x30
};

/** A bucket notification: an S3 event of a function (invoked asynchronously). Parsed
 *  and kept in the model, but not served yet: a template with one loads only with
 *  rw_template_params_t.keep_unserved (see there). */
typedef struct rw_tpl_notification_s {
    int bucket;
    int function;
    unsigned events; /**< RW_TPL_S3_* bits */
    char *prefix;    /**< Filter.S3Key prefix rule, or NULL */
    char *suffix;    /**< suffix rule, or NULL */
    char *event_name;
    int line, col;
} rw_tpl_notification_t;

/** An AWS::SQS::Queue (a MongoDB collection in reelway). */
typedef struct rw_tpl_queue_s {
    char *name;               /**< logical id */
    char *queue_name;         /**< QueueName, else the logical id */
    char *arn;                /**< arn:aws:sqs:REGION:ACCOUNT:NAME */
    char *url;                /**< https://sqs.REGION.amazonaws.com/ACCOUNT/NAME (Ref) */
    int visibility_timeout_s; /**< 0..43200, default 30 */
    int retention_s;          /**< MessageRetentionPeriod 60..1209600, default 345600 */
    int delay_s;              /**< DelaySeconds 0..900, default 0 */
    int max_message_bytes;    /**< MaximumMessageSize 1024..262144, default 262144 */
    int dead_letter_queue;    /**< RedrivePolicy.deadLetterTargetArn (index), -1 */
    int max_receive_count;    /**< RedrivePolicy.maxReceiveCount, 0 when no redrive */
    int line, col;
} rw_tpl_queue_t;

/** An SQS event of a function: the function polls the queue in batches. */
typedef struct rw_tpl_subscription_s {
    int queue;
    int function;
    int batch_size;                  /**< 1..10000, default 10 */
    int batch_window_s;              /**< MaximumBatchingWindowInSeconds 0..300 */
    bool enabled;                    /**< default true */
    bool report_batch_item_failures; /**< FunctionResponseTypes: [ReportBatchItemFailures] */
    char *event_name;
    int line, col;
} rw_tpl_subscription_t;

/** A Schedule event: invokes a function asynchronously on a rate or cron. */
typedef struct rw_tpl_schedule_s {
    char *name; /**< Name, else FUNCTION + EVENT (unique: it keys the lease) */
    int function;
    char *expression; /**< "rate(5 minutes)" or "cron(0 12 * * ? *)" as written */
    bool is_rate;
    long rate_s;   /**< rate: the period in seconds */
    char *cron[6]; /**< cron: minutes hours day-of-month month day-of-week year */
    char *input;   /**< Input (JSON text) or NULL: the EventBridge scheduled event */
    char *description;
    bool enabled; /**< Enabled / State, default true */
    char *event_name;
    int line, col;
} rw_tpl_schedule_t;

/** An entry of Outputs, its Value resolved. */
typedef struct rw_tpl_output_s {
    char *name;
    char *description; /**< or NULL */
    char *value;
    int line, col;
} rw_tpl_output_t;

/** A loaded template. */
typedef struct rw_template_s {
    char *path;        /**< the file as given (or the name given to load_buffer) */
    char *dir;         /**< absolute directory CodeUri and other paths are relative to */
    char *description; /**< or NULL */
    char *region, *account_id, *stack_name, *endpoint; /**< pseudo parameters in use */
    rw_tpl_param_t *params;
    size_t param_count;
    rw_tpl_function_t *functions;
    size_t function_count;
    rw_tpl_api_t *apis; /**< explicit APIs in file order, then the implicit ones */
    size_t api_count;
    rw_tpl_usage_plan_t *usage_plans;
    size_t usage_plan_count;
    rw_tpl_api_key_t *api_keys;
    size_t api_key_count;
    rw_tpl_bucket_t *buckets;
    size_t bucket_count;
    rw_tpl_notification_t *notifications;
    size_t notification_count;
    rw_tpl_queue_t *queues;
    size_t queue_count;
    rw_tpl_subscription_t *subscriptions;
    size_t subscription_count;
    rw_tpl_schedule_t *schedules;
    size_t schedule_count;
    rw_tpl_output_t *outputs;
    size_t output_count;
    struct rw__template_arena_s *arena; /**< private: owns everything above */
} rw_template_t;

/* ------------------------------------------------------------------------ */
/* Loading                                                                   */
/* ------------------------------------------------------------------------ */

/** A parameter value given at load time (`--parameter-overrides NAME=VALUE`). */
typedef struct rw_template_override_s {
    const char *name;
    const char *value;
} rw_template_override_t;

/** What the loader needs beyond the file. Every field is optional (zero = default). */
typedef struct rw_template_params_s {
    const rw_template_override_t *overrides; /**< parameter values; borrowed */
    size_t override_count;
    const char *region;     /**< AWS::Region, default "us-east-1" */
    const char *account_id; /**< AWS::AccountId, default "000000000000" */
    const char *stack_name; /**< AWS::StackName, default "reelway" */
    const char *endpoint;   /**< the gateway's public URL, default "http://127.0.0.1:3000" */
    bool check_code;        /**< also report CodeUri paths that do not exist */
    bool keep_unserved;     /**< load elements reelway parses but does not serve yet (S3
                                 events: bucket notifications come with the upload path)
                                 into the model without an error. For tests of the model
                                 only: `reelway validate` and `serve` leave it false, so
                                 such a template is refused at the element's line */
} rw_template_params_t;

/** Templates larger than this are refused (CloudFormation's own limit is 1 MB). */
#define RW_TEMPLATE_MAX_BYTES (1024 * 1024)

/**
 * Reads and loads the template at path. params may be NULL. Every problem
 * found (YAML syntax, unsupported or unknown element, wrong type, bad value,
 * dangling reference, conflict) is appended to diags, which the caller owns
 * and frees; all of them are reported, not just the first.
 *
 * Returns 0 and sets *out to a model the caller frees with rw_template_free;
 * RW_ECONFIG when the template has errors (*out = NULL, diags say why); a
 * negative errno (UV_ENOENT, ...) when the file cannot be read; RW_ELIMIT when
 * it is larger than RW_TEMPLATE_MAX_BYTES or its values expand past the
 * loader's memory cap (64 MiB); UV_ENOMEM. Blocking (reads a file):
 * call it off the loop thread or before the loop runs. Thread-safe.
 */
int rw_template_load(const char *path, const rw_template_params_t *params, rw_template_t **out,
                     rw_diag_list_t *diags);

/**
 * Loads a template held in memory (data need not be NUL-terminated; it is
 * borrowed for the call only). name is used in the model's path; base_dir is
 * the directory relative paths (CodeUri) are taken from (NULL = the current
 * directory). Returns as rw_template_load does.
 */
int rw_template_load_buffer(const char *data, size_t len, const char *name, const char *base_dir,
                            const rw_template_params_t *params, rw_template_t **out,
                            rw_diag_list_t *diags);

/** Frees a model and everything it owns. Accepts NULL. */
void rw_template_free(rw_template_t *tpl);

/**
 * `reelway validate FILE`: loads the file with default parameters (no CodeUri
 * existence check) and prints each problem as `FILE:LINE:COL: error: reason`
 * to out. Returns the number of errors (0 = valid), or a negative code when
 * the file cannot be read (a line saying why is printed too).
 */
int rw_template_validate_file(const char *path, FILE *out);

/** Index of the function called name, or -1. */
int rw_template_find_function(const rw_template_t *tpl, const char *name);

/** Index of the API whose logical id is name, or -1. */
int rw_template_find_api(const rw_template_t *tpl, const char *name);

/** Index of the queue whose logical id is name, or -1. */
int rw_template_find_queue(const rw_template_t *tpl, const char *name);

/** Index of the bucket whose logical id is name, or -1. */
int rw_template_find_bucket(const rw_template_t *tpl, const char *name);

/** The parameter called name, or NULL. */
const rw_tpl_param_t *rw_template_find_param(const rw_template_t *tpl, const char *name);

/** The output called name, or NULL. */
const rw_tpl_output_t *rw_template_find_output(const rw_template_t *tpl, const char *name);

#endif
