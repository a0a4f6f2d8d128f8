/* Subcommands that talk to a running reelway: `reelway invoke`, `reelway queue send`,
 * `reelway apikey`. */
#define _GNU_SOURCE /* strcasestr */
#include "cli.h"

#include "apikeys.h"
#include "config.h"

#include <cJSON.h>
#include <mongoc/mongoc.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int rw_admin_key_load_or_create(rw_config_t *cfg, bool create, FILE *err)
{
    if (cfg->admin_key[0])
        return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/admin-key", cfg->data_dir);
    FILE *f = fopen(path, "r");
    if (f) {
        char key[256] = "";
        if (fgets(key, sizeof key, f))
            key[strcspn(key, "\r\n")] = '\0';
        fclose(f);
        if (key[0]) {
            snprintf(cfg->admin_key, sizeof cfg->admin_key, "%s", key);
            return 0;
        }
    }
    if (!create) {
        fprintf(err, "reelway: no admin key: set REELWAY_ADMIN_KEY or start reelway once with "
                     "--data-dir %s (it writes %s)\n", cfg->data_dir, path);
        return -1;
    }
    unsigned char raw[24];
    if (getrandom(raw, sizeof raw, 0) != sizeof raw)
        return -1;
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(cfg->admin_key + 2 * i, 3, "%02x", raw[i]);
    mkdir(cfg->data_dir, 0700);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(err, "reelway: cannot write the admin key to %s: %s\n", path, strerror(errno));
        return -1;
    }
    dprintf(fd, "%s\n", cfg->admin_key);
    close(fd);
    fprintf(err, "reelway: generated an admin key in %s (the Invoke API and `reelway invoke` use "
                 "it)\n", path);
    return 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f)
        return NULL;
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        if (r == 0)
            break;
        n += r;
    }
    if (f != stdin)
        fclose(f);
    *len = n;
    return buf;
}

/* One request to the running gateway (loopback, the admin key), read whole
 * (the server closes after it). On 0, *resp is the whole answer (free it),
 * *body points into it and *n is the answer's total length. */
static int cli_http(const rw_config_t *cfg, const char *method, const char *path,
                    const char *extra_headers, const char *payload, size_t len, int *status,
                    char **resp_out, char **body_out, size_t *n_out)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    if (getaddrinfo(cfg->host, port, &hints, &ai) != 0) {
        fprintf(stderr, "reelway: cannot resolve %s\n", cfg->host);
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        fprintf(stderr, "reelway: cannot connect to %s:%d: %s (is reelway serve running?)\n",
                cfg->host, cfg->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    char head[2048];
    int hl = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: %s:%d\r\nX-Reelway-Admin-Key: %s\r\n%s"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      method, path, cfg->host, cfg->port, cfg->admin_key,
                      extra_headers ? extra_headers : "", len);
    if (hl < 0 || (size_t)hl >= sizeof head || write(fd, head, (size_t)hl) != hl ||
        (len && write(fd, payload, len) != (ssize_t)len)) {
        fprintf(stderr, "reelway: cannot send the request: %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    size_t cap = 65536, n = 0;
    char *resp = malloc(cap + 1);
    while (resp) {
        if (n == cap) {
            cap *= 2;
            char *bigger = realloc(resp, cap + 1);
            if (!bigger) {
                free(resp);
                resp = NULL;
                break;
            }
            resp = bigger;
        }
        ssize_t r = read(fd, resp + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (!resp) {
        fprintf(stderr, "reelway: out of memory reading the answer\n");
        return -1;
    }
    resp[n] = '\0';
    char *body = strstr(resp, "\r\n\r\n");
    if (sscanf(resp, "HTTP/1.%*d %d", status) != 1 || !body) {
        fprintf(stderr, "reelway: malformed answer from the gateway\n");
        free(resp);
        return -1;
    }
    *body = '\0';
    *resp_out = resp;
    *body_out = body + 4;
    *n_out = n;
    return 0;
}

int rw_cli_invoke(int argc, char **argv)
{
    const char *name = NULL, *event_file = NULL;
    bool async = false;
    rw_config_t cfg;
    /* Our own flags first; the rest are `serve`'s (host, port, data dir, key). */
    char *rest[64];
    int nrest = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--event") && i + 1 < argc)
            event_file = argv[++i];
        else if (!strcmp(argv[i], "--async"))
            async = true;
        else if (argv[i][0] != '-' && !name)
            name = argv[i];
        else if (nrest < 64)
            rest[nrest++] = argv[i];
    }
    if (!name) {
        fprintf(stderr, "usage: reelway invoke NAME [--event FILE|-] [--async] [--host H] "
                        "[--port P] [--data-dir D]\n");
        return 2;
    }
    if (rw_config_load(&cfg, nrest, rest, stderr) != 0)
        return 2;
    if (rw_admin_key_load_or_create(&cfg, false, stderr) != 0)
        return 2;
    size_t len = 4;
    char *payload = event_file ? read_file(event_file, &len) : strdup("null");
    if (!payload) {
        fprintf(stderr, "reelway: cannot read %s: %s\n", event_file, strerror(errno));
        return 2;
    }
    char head[1024];
    snprintf(head, sizeof head, "X-Amz-Invocation-Type: %s\r\nContent-Type: application/json\r\n",
             async ? "Event" : "RequestResponse");
    char path[512];
    snprintf(path, sizeof path, "/2015-03-31/functions/%s/invocations", name);
    int status = 0;
    char *resp = NULL, *body = NULL;
    size_t n = 0;
    int hrc = cli_http(&cfg, "POST", path, head, payload, len, &status, &resp, &body, &n);
    free(payload);
    if (hrc != 0)
        return 2;
    bool function_error = strcasestr(resp, "\r\nX-Amz-Function-Error:") != NULL;
    const char *rid = strcasestr(resp, "\r\nx-amzn-RequestId: ");
    int rc = 0;
    if (async && status == 202) {
        printf("%.*s\n", rid ? (int)strcspn(rid + 20, "\r\n") : 0, rid ? rid + 20 : "");
    } else if (status == 200) {
        fwrite(body, 1, n - (size_t)(body - resp), stdout);
        if (n > (size_t)(body - resp) && body[n - (size_t)(body - resp) - 1] != '\n')
            putchar('\n');
        if (function_error) {
            fprintf(stderr, "reelway: the function failed\n");
            rc = 1;
        }
    } else {
        fprintf(stderr, "reelway: HTTP %d: %s\n", status, body);
        rc = 1;
    }
    free(resp);
    return rc;
}

/* ---- reelway queue ------------------------------------------------------------ */

int rw_cli_queue(int argc, char **argv)
{
    const char *usage = "usage: reelway queue send NAME (--body TEXT | --file FILE|-) "
                        "[--delay-seconds N] [--host H] [--port P] [--data-dir D]\n";
    if (argc < 2 || strcmp(argv[0], "send") != 0) {
        fputs(usage, stderr);
        return 2;
    }
    const char *name = NULL, *text = NULL, *file = NULL, *delay = NULL;
    char *rest[64];
    int nrest = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--body") && i + 1 < argc)
            text = argv[++i];
        else if ((!strcmp(argv[i], "--body-file") || !strcmp(argv[i], "--file")) && i + 1 < argc)
            file = argv[++i];
        else if (!strcmp(argv[i], "--delay-seconds") && i + 1 < argc)
            delay = argv[++i];
        else if (argv[i][0] != '-' && !name)
            name = argv[i];
        else if (nrest < 64)
            rest[nrest++] = argv[i];
    }
    /* A QueueName is 1 to 80 of A-Z a-z 0-9 - _: nothing to escape in a path. */
    size_t nl = name ? strlen(name) : 0;
    if (!name || nl > 80 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != nl ||
        (!text) == (!file) || (delay && strspn(delay, "0123456789") != strlen(delay))) {
        fputs(usage, stderr);
        return 2;
    }
    rw_config_t cfg;
    if (rw_config_load(&cfg, nrest, rest, stderr) != 0)
        return 2;
    if (rw_admin_key_load_or_create(&cfg, false, stderr) != 0)
        return 2;
    size_t len = text ? strlen(text) : 0;
    char *body = text ? strdup(text) : read_file(file, &len);
    if (!body) {
        fprintf(stderr, "reelway: cannot read %s: %s\n", file ? file : "the body",
                strerror(errno));
        return 2;
    }
    char path[256];
    snprintf(path, sizeof path, "/_/admin/queues/%s/messages%s%s", name,
             delay ? "?DelaySeconds=" : "", delay ? delay : "");
    int status = 0;
    char *resp = NULL, *answer = NULL;
    size_t n = 0;
    int hrc = cli_http(&cfg, "POST", path, "Content-Type: text/plain; charset=utf-8\r\n", body,
                       len, &status, &resp, &answer, &n);
    free(body);
    if (hrc != 0)
        return 2;
    int rc = 0;
    if (status == 200) {
        cJSON *o = cJSON_Parse(answer);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "MessageId");
        printf("%s\n", cJSON_IsString(id) ? id->valuestring : answer);
        cJSON_Delete(o);
    } else {
        fprintf(stderr, "reelway: HTTP %d: %s\n", status, answer);
        rc = 1;
    }
    free(resp);
    return rc;
}

/* ---- reelway apikey ----------------------------------------------------------- */

/* The database a running reelway uses: MONGODB_URI, or the local FerretDB
 * that `reelway serve` recorded in DATA_DIR/db.uri. */
static int cli_db_uri(const rw_config_t *cfg, char *out, size_t len)
{
    if (cfg->mongodb_uri[0]) {
        snprintf(out, len, "%s", cfg->mongodb_uri);
        return 0;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/db.uri", cfg->data_dir);
    FILE *f = fopen(path, "r");
    if (!f || !fgets(out, (int)len, f)) {
        if (f)
            fclose(f);
        fprintf(stderr, "reelway: no database: set MONGODB_URI, or start `reelway serve "
                        "--data-dir %s` (its local database is recorded in %s)\n",
                cfg->data_dir, path);
        return -1;
    }
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

int rw_cli_apikey(int argc, char **argv)
{
    const char *usage = "usage: reelway apikey create NAME [--plan PLAN]... | list | revoke ID | "
                        "associate ID PLAN | dissociate ID PLAN  [--data-dir D] [--db-name N]\n";
    if (argc < 1) {
        fputs(usage, stderr);
        return 2;
    }
    const char *verb = argv[0];
    const char *args[4] = {0};
    const char *plans[32];
    size_t n_args = 0, n_plans = 0;
    char *rest[64];
    int nrest = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--plan") && i + 1 < argc && n_plans < 32)
            plans[n_plans++] = argv[++i];
        else if (argv[i][0] != '-' && n_args < 4)
            args[n_args++] = argv[i];
        else if (nrest < 63) {
            rest[nrest++] = argv[i];
            if (i + 1 < argc && !strchr(argv[i], '='))
                rest[nrest++] = argv[++i];
        }
    }
    rw_config_t cfg;
    if (rw_config_load(&cfg, nrest, rest, stderr) != 0)
        return 2;
    char uri[2048];
    if (cli_db_uri(&cfg, uri, sizeof uri) != 0)
        return 2;
    mongoc_client_t *client = mongoc_client_new(uri);
    if (!client) {
        fprintf(stderr, "reelway: invalid database URI\n");
        return 2;
    }
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    char err[512] = "";
    int rc = 0;
    rw_apikeys_ensure_indexes(client, cfg.db_name, err, sizeof err);
    if (!strcmp(verb, "create") && n_args == 1) {
        rw_apikey_record_t rec;
        char key[RW_APIKEY_MAX + 1];
        rc = rw_apikeys_create_sync(client, cfg.db_name, args[0], plans, n_plans, &rec, key, err,
                                    sizeof err);
        if (rc == 0) {
            printf("id:   %s\nname: %s\nkey:  %s\n(the key is shown only now; it is stored hashed)\n",
                   rec.id, rec.name, key);
            rw_apikey_record_clear(&rec);
        }
    } else if (!strcmp(verb, "list") && n_args == 0) {
        rw_apikey_record_t *recs = NULL;
        size_t n = 0;
        rc = rw_apikeys_list_sync(client, cfg.db_name, &recs, &n, err, sizeof err);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            printf("%s  %-8s  %s  plans:", recs[i].id, recs[i].enabled ? "enabled" : "revoked",
                   recs[i].name);
            for (size_t k = 0; k < recs[i].n_plans; k++)
                printf(" %s", recs[i].plans[k]);
            printf("\n");
        }
        rw_apikey_records_free(recs, n);
    } else if (!strcmp(verb, "revoke") && n_args == 1) {
        rc = rw_apikeys_revoke_sync(client, cfg.db_name, args[0], err, sizeof err);
        if (rc == 0)
            printf("revoked %s (within 5 s on every gateway)\n", args[0]);
    } else if ((!strcmp(verb, "associate") || !strcmp(verb, "dissociate")) && n_args == 2) {
        rc = rw_apikeys_associate_sync(client, cfg.db_name, args[0], args[1],
                                       !strcmp(verb, "associate"), err, sizeof err);
    } else {
        fputs(usage, stderr);
        mongoc_client_destroy(client);
        return 2;
    }
    mongoc_client_destroy(client);
    if (rc != 0) {
        fprintf(stderr, "reelway: apikey %s: %s\n", verb, err[0] ? err : "failed");
        return 1;
    }
    return 0;
}
