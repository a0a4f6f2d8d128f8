/* The `reelway` binary: one entry point, one subcommand per job. */
#include "cli.h"
#include "config.h"
#include "template.h"

#include "reelway/gateway.h"

#include <mongoc/mongoc.h>
#include <stdio.h>
#include <string.h>

static const char usage[] =
    "reelway: a self-hostable serverless backend for a reels app\n"
    "\n"
    "usage: reelway <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve      run the gateway (starts a local FerretDB unless MONGODB_URI is set)\n"
    "  validate F check a template: every unsupported or invalid element, with its line\n"
    "  invoke N   invoke function N on a running reelway [--event FILE] [--async]\n"
    "  apikey ... API keys: create NAME [--plan P]..., list, revoke ID, associate ID P\n"
    "  queue send NAME --body TEXT|--file F [--delay-seconds N]\n"
    "             send a message to SQS queue NAME (its QueueName) of a running reelway\n"
    "  version    print the version\n"
    "  help       this text\n"
    "\n"
    "serve options (flag, or environment variable):\n"
    "  --host H              REELWAY_HOST        address to listen on (127.0.0.1)\n"
    "  --port P              REELWAY_PORT        port, 0 = any free port (3000)\n"
    "  --data-dir D          REELWAY_DATA_DIR    local data: database, buckets, logs (.reelway)\n"
    "  --mongodb-uri U       MONGODB_URI         use this MongoDB instead of a local FerretDB\n"
    "  --template F          REELWAY_TEMPLATE    the app's SAM template\n"
    "  --workers N           REELWAY_WORKERS     worker processes (number of cores)\n"
    "  --admin-key K         REELWAY_ADMIN_KEY   key for the admin and invoke APIs\n"
    "  --port-file F                             write the bound port to F once listening\n"
    "  --access-log on|off   REELWAY_ACCESS_LOG  one JSON line per request on stdout (on)\n"
    "  --functions-dir D     REELWAY_FUNCTIONS_DIR where built C functions are (the build tree)\n"
    "  --function-idle-ms N  REELWAY_FUNCTION_IDLE_MS reap idle environments after (600000)\n"
    "  --init-timeout-ms N   REELWAY_INIT_TIMEOUT_MS a cold start's init limit (10000)\n"
    "  --schedule-lease-ms N REELWAY_SCHEDULE_LEASE_MS the scheduler lease (15000): a dead\n"
    "                        node's schedules move to another within it\n"
    "  --test-schedule-scale N REELWAY_TEST_SCHEDULE_SCALE tests only: rate(...) periods\n"
    "                        divided by N (rate(1 minute) at 60: every second)\n"
    "  --max-connections N   REELWAY_MAX_CONNECTIONS (10240 per worker)\n"
    "  --header-timeout-ms N REELWAY_HEADER_TIMEOUT_MS (10000)\n"
    "  --body-timeout-ms N   REELWAY_BODY_TIMEOUT_MS (30000)\n"
    "  --idle-timeout-ms N   REELWAY_IDLE_TIMEOUT_MS (60000)\n"
    "  --shutdown-timeout-ms N REELWAY_SHUTDOWN_TIMEOUT_MS (10000)\n"
    "  --max-header-bytes N  REELWAY_MAX_HEADER_BYTES (16384)\n"
    "  --max-uri-bytes N     REELWAY_MAX_URI_BYTES (8192)\n";

/* mongo-c-driver logs through this. FerretDB lacks endSessions, which the
 * driver sends when a client goes away: that warning is noise, not a fault. */
static void on_mongoc_log(mongoc_log_level_t level, const char *domain, const char *message,
                          void *arg)
{
    if (level > MONGOC_LOG_LEVEL_WARNING)
        return;
    if (strstr(message, "endSessions"))
        return;
    fprintf(stderr, "reelway: mongoc %s: %s\n", mongoc_log_level_str(level), message);
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "help";
    /* Every command: libmongoc's own messages go to stderr through reelway's
     * filter, never to a command's output. */
    mongoc_log_set_handler(on_mongoc_log, NULL);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("reelway %s\n", REELWAY_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "validate")) {
        if (argc != 3) {
            fprintf(stderr, "usage: reelway validate TEMPLATE\n");
            return 2;
        }
        int errors = rw_template_validate_file(argv[2], stdout);
        if (errors < 0)
            return 2;
        if (errors == 0)
            printf("%s: valid\n", argv[2]);
        return errors == 0 ? 0 : 1;
    }
    if (!strcmp(cmd, "invoke"))
        return rw_cli_invoke(argc - 2, argv + 2);
    if (!strcmp(cmd, "queue"))
        return rw_cli_queue(argc - 2, argv + 2);
    if (!strcmp(cmd, "apikey")) {
        mongoc_init();
        int status = rw_cli_apikey(argc - 2, argv + 2);
        mongoc_cleanup();
        return status;
    }
    if (!strcmp(cmd, "serve")) {
        rw_config_t cfg;
        if (rw_config_load(&cfg, argc - 2, argv + 2, stderr) != 0)
            return 2;
        mongoc_init();
        int status = rw_serve(&cfg);
        mongoc_cleanup();
        return status;
    }
    fprintf(stderr, "reelway: unknown command '%s'\n\n%s", cmd, usage);
    return 2;
}
