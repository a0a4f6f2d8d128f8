/* `reelway serve`: the supervisor process. It owns the local database, reserves
 * the port, forks one worker per core (each with its own loop, all sharing the
 * port through SO_REUSEPORT so the kernel spreads connections), restarts a
 * worker that dies, and stops everything in order on SIGTERM/SIGINT. */
#include "app.h"
#include "cli.h"
#include "config.h"
#include "functions.h"
#include "localdb.h"
#include "metrics.h"
#include "template.h"
#include "throttle.h"

#include "reelway/error.h"
#include "reelway/gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <mongoc/mongoc.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define MAX_WORKERS 256

typedef struct {
    pid_t pid;
    time_t started;
    int quick_deaths; /* consecutive deaths within a second of starting */
} worker_slot_t;

/* Binds host:port with SO_REUSEPORT without listening: it reserves the port
 * (and resolves port 0) while the workers open their own listening sockets. */
static int reserve_port(const char *host, int port, int *bound_port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (strchr(host, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return RW_ECONFIG;
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return RW_ECONFIG;
        len = sizeof *a;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    len = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &len);
    *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static pid_t spawn_worker(rw_config_t *cfg, rw_gateway_node_t *node, int index, const char *db_uri,
                          int ready_fd, const sigset_t *oldmask)
{
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* Worker: the database belongs to the supervisor, not to us. */
    rw_localdb_guard(NULL);
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(1);
#else
    (void)parent;
#endif
    sigprocmask(SIG_SETMASK, oldmask, NULL);
    node->worker_index = index;
    int status = rw_gateway_run_worker(cfg, node, db_uri, -1, ready_fd);
    mongoc_cleanup();
    exit(status);
}

/* Waits for `expected` readiness lines on fd; returns how many arrived. */
static int wait_ready(int fd, int expected, int timeout_ms)
{
    int got = 0;
    char buf[256];
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (got < expected) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (elapsed >= timeout_ms)
            break;
        fd_set set;
        FD_ZERO(&set);
        FD_SET(fd, &set);
        struct timeval tv = {(timeout_ms - elapsed) / 1000, ((timeout_ms - elapsed) % 1000) * 1000};
        int n = select(fd + 1, &set, NULL, NULL, &tv);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0)
            break; /* every writer closed: some worker died before listening */
        for (ssize_t i = 0; i < r; i++)
            got += buf[i] == '\n';
    }
    return got;
}

static void stop_workers(worker_slot_t *slots, int n, uint64_t timeout_ms)
{
    for (int i = 0; i < n; i++)
        if (slots[i].pid > 0)
            kill(slots[i].pid, SIGTERM);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int alive = 0;
        for (int i = 0; i < n; i++) {
            if (slots[i].pid <= 0)
                continue;
            if (waitpid(slots[i].pid, NULL, WNOHANG) == slots[i].pid)
                slots[i].pid = 0;
            else
                alive++;
        }
        if (!alive)
            return;
        clock_gettime(CLOCK_MONOTONIC, &now);
        /* Signed: the nanosecond difference is negative whenever a second
         * boundary was crossed, and as unsigned it wrapped to "very late". */
        int64_t elapsed = (int64_t)(now.tv_sec - start.tv_sec) * 1000 +
                          ((int64_t)now.tv_nsec - (int64_t)start.tv_nsec) / 1000000;
        if (elapsed > (int64_t)timeout_ms) {
            for (int i = 0; i < n; i++)
                if (slots[i].pid > 0) {
                    fprintf(stderr, "reelway: worker %d did not stop in time; killing it\n",
                            (int)slots[i].pid);
                    kill(slots[i].pid, SIGKILL);
                    waitpid(slots[i].pid, NULL, 0);
                    slots[i].pid = 0;
                }
            return;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int write_port_file(const char *path, int port)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -errno;
    fprintf(f, "%d\n", port);
    fclose(f);
    return rename(tmp, path) == 0 ? 0 : -errno;
}

/* Loads and checks the template before anything starts: reelway refuses to
 * serve a template with errors. */
static int load_template(const rw_config_t *cfg, rw_template_t **tpl)
{
    *tpl = NULL;
    if (!cfg->template_path[0])
        return 0;
    rw_diag_list_t diags;
    rw_diag_list_init(&diags);
    char endpoint[512];
    snprintf(endpoint, sizeof endpoint, "http://%s:%d", cfg->host, cfg->port);
    /* --parameter-overrides "Name=Value Name2=Value2" */
    char buf[sizeof cfg->parameter_overrides];
    snprintf(buf, sizeof buf, "%s", cfg->parameter_overrides);
    rw_template_override_t overrides[64];
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, " ", &save); tok && n < 64; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) {
            fprintf(stderr, "reelway: --parameter-overrides: '%s' is not NAME=VALUE\n", tok);
            return RW_ECONFIG;
        }
        *eq = '\0';
        overrides[n++] = (rw_template_override_t){tok, eq + 1};
    }
    rw_template_params_t params = {.endpoint = endpoint, .overrides = overrides,
                                   .override_count = n, .check_code = true};
    int rc = rw_template_load(cfg->template_path, &params, tpl, &diags);
    if (rc != 0) {
        rw_diag_list_print(&diags, cfg->template_path, stderr);
        if (!diags.count)
            fprintf(stderr, "reelway: cannot load %s: %s\n", cfg->template_path, rw_strerror(rc));
        fprintf(stderr, "reelway: refusing to start: the template has %zu error%s (see `reelway "
                        "validate %s`)\n", diags.count, diags.count == 1 ? "" : "s",
                cfg->template_path);
        rw_diag_list_free(&diags);
        return rc ? rc : RW_ECONFIG;
    }
    rw_diag_list_free(&diags);
    return 0;
}

int rw_serve(rw_config_t *cfg)
{
    /* Signals are taken synchronously by the supervisor (sigtimedwait), so block
     * them before anything can be forked. */
    sigset_t mask, oldmask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, &oldmask);
    signal(SIGPIPE, SIG_IGN);

    rw_localdb_t db = {0};
    char db_uri[2048];
    char err[1024];
    rw_template_t *tpl = NULL;
    if (load_template(cfg, &tpl) != 0)
        return 1;
    if (rw_admin_key_load_or_create(cfg, true, stderr) != 0) {
        rw_template_free(tpl);
        return 1;
    }
    if (cfg->mongodb_uri[0]) {
        snprintf(db_uri, sizeof db_uri, "%s", cfg->mongodb_uri);
        if (rw_db_ping(db_uri, 10000, err, sizeof err) != 0) {
            char masked[2048];
            rw_config_mask_uri(db_uri, masked, sizeof masked);
            fprintf(stderr, "reelway: the database at %s does not answer: %s\n", masked, err);
            rw_template_free(tpl);
            return 1;
        }
    } else {
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/db", cfg->data_dir);
        rw_localdb_opts_t opts = {.dir = dir, .die_with_parent = true};
        if (rw_localdb_start(&db, &opts, err, sizeof err) != 0) {
            fprintf(stderr, "reelway: cannot start the local database: %s\n", err);
            rw_template_free(tpl);
            return 1;
        }
        rw_localdb_guard(&db);
        snprintf(db_uri, sizeof db_uri, "%s", db.uri);
        /* For `reelway apikey` and other tools run beside this server. */
        char uri_file[4200];
        snprintf(uri_file, sizeof uri_file, "%s/db.uri", cfg->data_dir);
        FILE *uf = fopen(uri_file, "w");
        if (uf) {
            fprintf(uf, "%s\n", db.uri);
            fclose(uf);
        }
        fprintf(stderr, "reelway: local FerretDB pid %d on %s (data in %s)\n", (int)db.pid, db.uri,
                db.dir);
    }
    rw_config_print(cfg, db_uri, stderr);

    int port = 0;
    int reserve_fd = reserve_port(cfg->host, cfg->port, &port);
    if (reserve_fd < 0) {
        fprintf(stderr, "reelway: cannot bind %s:%d: %s\n", cfg->host, cfg->port,
                rw_strerror(reserve_fd));
        rw_localdb_stop(&db, 5000);
        rw_template_free(tpl);
        return 1;
    }
    cfg->port = port;

    int nworkers = cfg->workers < MAX_WORKERS ? cfg->workers : MAX_WORKERS;
    /* What every worker shares: made before forking. */
    rw_gateway_node_t node = {.tpl = tpl, .worker_count = nworkers};
    char **names = NULL;
    size_t n_names = 0;
    size_t n_fns = tpl ? tpl->function_count : 0;
    const char **fn_names = calloc(n_fns ? n_fns : 1, sizeof *fn_names);
    for (size_t i = 0; i < n_fns; i++)
        fn_names[i] = tpl->functions[i].name;
    if (rw__app_metric_names(tpl, &names, &n_names) == 0)
        node.metrics = rw_metrics_new((const char *const *)names, n_names, nworkers, fn_names, n_fns);
    rw__app_names_free(names, n_names);
    free(fn_names);
    node.fn_shared = rw_fn_shared_new(n_fns);
    if (tpl && tpl->usage_plan_count)
        node.throttle = rw_throttle_create(RW_THROTTLE_SLOTS);
    worker_slot_t slots[MAX_WORKERS] = {{0}};
    int ready[2];
    int status = 0;
    if (pipe(ready) != 0) {
        perror("reelway: pipe");
        status = 1;
        goto out;
    }
    for (int i = 0; i < nworkers; i++) {
        slots[i].pid = spawn_worker(cfg, &node, i, db_uri, ready[1], &oldmask);
        slots[i].started = time(NULL);
    }
    close(ready[1]);
    int up = wait_ready(ready[0], nworkers, 30000);
    close(ready[0]);
    if (up < nworkers) {
        fprintf(stderr, "reelway: %d of %d workers failed to start\n", nworkers - up, nworkers);
        stop_workers(slots, nworkers, 5000);
        status = 1;
        goto out;
    }
    if (cfg->port_file[0] && write_port_file(cfg->port_file, port) != 0)
        fprintf(stderr, "reelway: cannot write %s\n", cfg->port_file);
    fprintf(stderr, "reelway: %d worker%s listening on http://%s:%d/\n", nworkers,
            nworkers == 1 ? "" : "s", cfg->host, port);
    if (strchr(cfg->host, ':'))
        printf("http://[%s]:%d/\n", cfg->host, port);
    else
        printf("http://%s:%d/\n", cfg->host, port);
    fflush(stdout);

    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&mask, &info);
        if (sig < 0)
            continue;
        if (sig == SIGTERM || sig == SIGINT) {
            fprintf(stderr, "reelway: %s: stopping workers\n", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            stop_workers(slots, nworkers, cfg->limits.shutdown_timeout_ms + 5000);
            break;
        }
        if (sig != SIGCHLD)
            continue;
        pid_t pid;
        int wstatus;
        while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
            if (pid == db.pid) {
                fprintf(stderr, "reelway: the local database (pid %d) exited; /_/health reports "
                                "it; restart reelway to bring it back\n", (int)pid);
                db.pid = 0;
                continue;
            }
            for (int i = 0; i < nworkers; i++) {
                if (slots[i].pid != pid)
                    continue;
                fprintf(stderr, "reelway: worker %d %s %d; starting a new one\n", (int)pid,
                        WIFSIGNALED(wstatus) ? "killed by signal" : "exited with status",
                        WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : WEXITSTATUS(wstatus));
                slots[i].quick_deaths = time(NULL) - slots[i].started < 2 ? slots[i].quick_deaths + 1 : 0;
                if (slots[i].quick_deaths >= 5) {
                    fprintf(stderr, "reelway: worker keeps dying at start; giving up\n");
                    slots[i].pid = 0;
                    stop_workers(slots, nworkers, cfg->limits.shutdown_timeout_ms + 5000);
                    status = 1;
                    goto out;
                }
                slots[i].pid = spawn_worker(cfg, &node, i, db_uri, -1, &oldmask);
                slots[i].started = time(NULL);
            }
        }
    }
out:
    close(reserve_fd);
    rw_metrics_free(node.metrics);
    rw_fn_shared_free(node.fn_shared, n_fns);
    if (node.throttle)
        rw_throttle_destroy(node.throttle);
    rw_template_free(tpl);
    if (db.pid > 0 || !cfg->mongodb_uri[0]) {
        char uri_file[4200];
        snprintf(uri_file, sizeof uri_file, "%s/db.uri", cfg->data_dir);
        unlink(uri_file);
    }
    rw_localdb_stop(&db, 10000);
    rw_localdb_guard(NULL);
    fprintf(stderr, "reelway: stopped\n");
    return status;
}
