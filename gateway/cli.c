/* Subcommands that talk to a running reelway: `reelway invoke`. */
#define _GNU_SOURCE /* strcasestr */
#include "cli.h"

#include "config.h"

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
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg.port);
    if (getaddrinfo(cfg.host, port, &hints, &ai) != 0) {
        fprintf(stderr, "reelway: cannot resolve %s\n", cfg.host);
        free(payload);
        return 2;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        fprintf(stderr, "reelway: cannot connect to %s:%d: %s (is reelway serve running?)\n",
                cfg.host, cfg.port, strerror(errno));
        freeaddrinfo(ai);
        free(payload);
        return 2;
    }
    freeaddrinfo(ai);
    char head[1024];
    int hl = snprintf(head, sizeof head,
                      "POST /2015-03-31/functions/%s/invocations HTTP/1.1\r\nHost: %s:%d\r\n"
                      "X-Amz-Invocation-Type: %s\r\nX-Reelway-Admin-Key: %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n",
                      name, cfg.host, cfg.port, async ? "Event" : "RequestResponse", cfg.admin_key,
                      len);
    if (write(fd, head, (size_t)hl) != hl || write(fd, payload, len) != (ssize_t)len) {
        fprintf(stderr, "reelway: cannot send the request: %s\n", strerror(errno));
        close(fd);
        free(payload);
        return 2;
    }
    free(payload);
    /* Read the whole answer (the server closes after it). */
    size_t cap = 65536, n = 0;
    char *resp = malloc(cap + 1);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            resp = realloc(resp, cap + 1);
        }
        ssize_t r = read(fd, resp + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    resp[n] = '\0';
    int status = 0;
    char *body = strstr(resp, "\r\n\r\n");
    if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1 || !body) {
        fprintf(stderr, "reelway: malformed answer from the gateway\n");
        free(resp);
        return 2;
    }
    *body = '\0';
    body += 4;
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
