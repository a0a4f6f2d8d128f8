/* Configuration for `reelway serve`: command-line flags win over environment
 * variables, which win over defaults. Every value is checked here so the
 * server never starts half-configured. */
#include "config.h"

#include "reelway/error.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static int copy_str(char *dst, size_t cap, const char *src, const char *what, FILE *err)
{
    if (strlen(src) >= cap) {
        fprintf(err, "reelway: %s is too long (max %zu bytes)\n", what, cap - 1);
        return RW_ECONFIG;
    }
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

typedef struct {
    const char *flag;    /* --flag */
    const char *env;     /* environment variable */
    char kind;           /* 's' string, 'p' port, 'n' positive number, 'b' boolean */
    size_t off;          /* offset in rw_config_t for strings and ints */
    size_t cap;          /* string capacity */
    long max;
} option_t;

#define S(field) offsetof(rw_config_t, field), sizeof(((rw_config_t *)0)->field)
#define L(field) offsetof(rw_config_t, limits.field), 0
static const option_t options[] = {
    {"--host", "REELWAY_HOST", 's', S(host), 0},
    {"--port", "REELWAY_PORT", 'p', offsetof(rw_config_t, port), 0, 65535},
    {"--data-dir", "REELWAY_DATA_DIR", 's', S(data_dir), 0},
    {"--mongodb-uri", "MONGODB_URI", 's', S(mongodb_uri), 0},
    {"--template", "REELWAY_TEMPLATE", 's', S(template_path), 0},
    {"--db-name", "REELWAY_DB_NAME", 's', S(db_name), 0},
    {"--parameter-overrides", "REELWAY_PARAMETER_OVERRIDES", 's', S(parameter_overrides), 0},
    {"--workers", "REELWAY_WORKERS", 'n', offsetof(rw_config_t, workers), 0, 256},
    {"--admin-key", "REELWAY_ADMIN_KEY", 's', S(admin_key), 0},
    {"--port-file", NULL, 's', S(port_file), 0},
    {"--invoke-api-public", "REELWAY_INVOKE_API_PUBLIC", 'b', offsetof(rw_config_t, invoke_api_public),
     0, 1},
    {"--access-log", "REELWAY_ACCESS_LOG", 'b', offsetof(rw_config_t, access_log), 0, 1},
    {"--functions-dir", "REELWAY_FUNCTIONS_DIR", 's', S(functions_dir), 0},
    {"--python", "REELWAY_PYTHON", 's', S(python), 0},
    {"--node", "REELWAY_NODE", 's', S(node), 0},
    {"--node-ric", "REELWAY_NODE_RIC", 's', S(node_ric), 0},
    {"--function-idle-ms", "REELWAY_FUNCTION_IDLE_MS", 'U', offsetof(rw_config_t, idle_ms), 0,
     86400000},
    {"--init-timeout-ms", "REELWAY_INIT_TIMEOUT_MS", 'U', offsetof(rw_config_t, init_timeout_ms), 0,
     900000},
    {"--max-environments", "REELWAY_MAX_ENVIRONMENTS", 'n', offsetof(rw_config_t, max_environments),
     0, 100000},
    {"--function-logs", "REELWAY_FUNCTION_LOGS", 'b', offsetof(rw_config_t, function_logs_stdout), 0,
     1},
    {"--async-retry-base-ms", "REELWAY_ASYNC_RETRY_BASE_MS", 'U',
     offsetof(rw_config_t, async_retry_base_ms), 0, 86400000},
    {"--async-lease-margin-ms", "REELWAY_ASYNC_LEASE_MARGIN_MS", 'U',
     offsetof(rw_config_t, async_lease_margin_ms), 0, 86400000},
    {"--schedule-lease-ms", "REELWAY_SCHEDULE_LEASE_MS", 'U',
     offsetof(rw_config_t, schedule_lease_ms), 0, 3600000},
    {"--test-schedule-scale", "REELWAY_TEST_SCHEDULE_SCALE", 'n',
     offsetof(rw_config_t, test_schedule_scale), 0, 3600},
    {"--max-connections", "REELWAY_MAX_CONNECTIONS", 'u', L(max_connections), 10000000},
    {"--header-timeout-ms", "REELWAY_HEADER_TIMEOUT_MS", 'U', L(header_timeout_ms), 86400000},
    {"--body-timeout-ms", "REELWAY_BODY_TIMEOUT_MS", 'U', L(body_timeout_ms), 86400000},
    {"--idle-timeout-ms", "REELWAY_IDLE_TIMEOUT_MS", 'U', L(idle_timeout_ms), 86400000},
    {"--shutdown-timeout-ms", "REELWAY_SHUTDOWN_TIMEOUT_MS", 'U', L(shutdown_timeout_ms),
     86400000},
    {"--max-header-bytes", "REELWAY_MAX_HEADER_BYTES", 'z', L(max_header_bytes), 1 << 20},
    {"--max-uri-bytes", "REELWAY_MAX_URI_BYTES", 'z', L(max_uri_bytes), 1 << 20},
};
#undef S
#undef L

static int set_option(rw_config_t *cfg, const option_t *o, const char *value, const char *from,
                      FILE *err)
{
    char *base = (char *)cfg;
    long v;
    switch (o->kind) {
    case 's':
        return copy_str(base + o->off, o->cap, value, from, err);
    case 'b':
        if (!strcmp(value, "1") || !strcmp(value, "true") || !strcmp(value, "on"))
            *(bool *)(base + o->off) = true;
        else if (!strcmp(value, "0") || !strcmp(value, "false") || !strcmp(value, "off"))
            *(bool *)(base + o->off) = false;
        else
            goto bad;
        return 0;
    case 'p':
        if (!parse_long(value, 0, 65535, &v))
            goto bad;
        *(int *)(base + o->off) = (int)v;
        return 0;
    case 'n':
        if (!parse_long(value, 1, o->max, &v))
            goto bad;
        *(int *)(base + o->off) = (int)v;
        return 0;
    case 'u':
        if (!parse_long(value, 1, o->max, &v))
            goto bad;
        *(unsigned *)(base + o->off) = (unsigned)v;
        return 0;
    case 'U':
        if (!parse_long(value, 1, o->max, &v))
            goto bad;
        *(uint64_t *)(base + o->off) = (uint64_t)v;
        return 0;
    case 'z':
        if (!parse_long(value, 256, o->max, &v))
            goto bad;
        *(size_t *)(base + o->off) = (size_t)v;
        return 0;
    }
bad:
    fprintf(err, "reelway: invalid value for %s: '%s'\n", from, value);
    return RW_ECONFIG;
}

static void find_in_path(const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s", name);
    const char *path = getenv("PATH");
    while (path && *path) {
        size_t n = strcspn(path, ":");
        char cand[4096];
        snprintf(cand, sizeof cand, "%.*s/%s", (int)n, path, name);
        if (n && access(cand, X_OK) == 0) {
            snprintf(out, len, "%s", cand);
            return;
        }
        path += n;
        if (*path == ':')
            path++;
    }
}

int rw_config_load(rw_config_t *cfg, int argc, char **argv, FILE *err)
{
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->host, "127.0.0.1");
    cfg->port = 3000;
    strcpy(cfg->data_dir, ".reelway");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = cores > 0 ? (int)(cores > 64 ? 64 : cores) : 1;
    cfg->access_log = true;
    rw_http_limits_default(&cfg->limits);
    cfg->idle_ms = 600000;
    cfg->async_retry_base_ms = 60000;
    cfg->async_lease_margin_ms = 30000;
    cfg->schedule_lease_ms = 15000;
    cfg->test_schedule_scale = 1;
    strcpy(cfg->db_name, "reelway");
    cfg->init_timeout_ms = 10000; /* Lambda's limit on the init phase */
    cfg->max_environments = 64;
    snprintf(cfg->source_dir, sizeof cfg->source_dir, "%s", REELWAY_SOURCE_DIR);
    snprintf(cfg->functions_dir, sizeof cfg->functions_dir, "%s", REELWAY_BINARY_DIR);
    snprintf(cfg->python, sizeof cfg->python, "%s/.reelway/runtimes/python/bin/python",
             REELWAY_SOURCE_DIR);
    snprintf(cfg->node_ric, sizeof cfg->node_ric,
             "%s/.reelway/runtimes/node/node_modules/aws-lambda-ric/bin/index.mjs",
             REELWAY_SOURCE_DIR);
    find_in_path("node", cfg->node, sizeof cfg->node);

    const size_t n_options = sizeof options / sizeof options[0];
    for (size_t i = 0; i < n_options; i++) {
        const char *v = options[i].env ? getenv(options[i].env) : NULL;
        if (v && *v && set_option(cfg, &options[i], v, options[i].env, err) != 0)
            return RW_ECONFIG;
    }
    for (int a = 0; a < argc; a++) {
        const char *arg = argv[a];
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const option_t *o = NULL;
        for (size_t i = 0; i < n_options; i++)
            if (strlen(options[i].flag) == name_len && !strncmp(options[i].flag, arg, name_len))
                o = &options[i];
        if (!o) {
            fprintf(err, "reelway: unknown option '%s' (see `reelway help`)\n", arg);
            return RW_ECONFIG;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (a + 1 >= argc) {
                fprintf(err, "reelway: %s needs a value\n", o->flag);
                return RW_ECONFIG;
            }
            value = argv[++a];
        }
        if (set_option(cfg, o, value, o->flag, err) != 0)
            return RW_ECONFIG;
    }
    return 0;
}

void rw_config_mask_uri(const char *uri, char *out, size_t len)
{
    /* mongodb://user:password@host -> mongodb://user:****@host */
    const char *scheme = strstr(uri, "://");
    const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
    const char *colon = scheme ? memchr(scheme + 3, ':', at ? (size_t)(at - scheme - 3) : 0) : NULL;
    if (!colon) {
        snprintf(out, len, "%s", uri);
        return;
    }
    snprintf(out, len, "%.*s****%s", (int)(colon + 1 - uri), uri, at);
}

void rw_config_print(const rw_config_t *cfg, const char *db_uri, FILE *out)
{
    char masked[2048];
    rw_config_mask_uri(db_uri, masked, sizeof masked);
    fprintf(out,
            "reelway config: host=%s port=%d workers=%d data_dir=%s template=%s db=%s%s "
            "admin_key=%s access_log=%s max_connections=%u header_timeout_ms=%llu "
            "idle_timeout_ms=%llu\n",
            cfg->host, cfg->port, cfg->workers, cfg->data_dir,
            cfg->template_path[0] ? cfg->template_path : "(none)", masked,
            cfg->mongodb_uri[0] ? "" : " (local FerretDB)", cfg->admin_key[0] ? "****" : "(unset)",
            cfg->access_log ? "on" : "off", cfg->limits.max_connections,
            (unsigned long long)cfg->limits.header_timeout_ms,
            (unsigned long long)cfg->limits.idle_timeout_ms);
    if (cfg->test_schedule_scale > 1)
        fprintf(out, "reelway: TEST ONLY: --test-schedule-scale %d: every rate(...) schedule runs "
                     "%d times faster than its template says\n",
                cfg->test_schedule_scale, cfg->test_schedule_scale);
    fflush(out);
}
