/* Starts and stops the local FerretDB (SQLite backend) that reelway uses when no
 * MONGODB_URI is given, and that the test fixture starts for the suite. */
#include "localdb.h"

#include "reelway/error.h"

#include <errno.h>
#include <fcntl.h>
#include <mongoc/mongoc.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#ifndef REELWAY_FERRETDB_DEFAULT
#define REELWAY_FERRETDB_DEFAULT ""
#endif

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static bool is_executable(const char *path)
{
    return path && *path && access(path, X_OK) == 0;
}

const char *rw_localdb_find_binary(void)
{
    static char found[PATH_MAX];
    const char *env = getenv("REELWAY_FERRETDB");
    if (is_executable(env))
        return env;
    if (is_executable(REELWAY_FERRETDB_DEFAULT))
        return REELWAY_FERRETDB_DEFAULT;
    const char *path = getenv("PATH");
    if (!path)
        return NULL;
    const char *p = path;
    while (*p) {
        size_t n = strcspn(p, ":");
        if (n > 0 && n + sizeof "/ferretdb" < sizeof found) {
            memcpy(found, p, n);
            memcpy(found + n, "/ferretdb", sizeof "/ferretdb");
            if (is_executable(found))
                return found;
        }
        p += n;
        if (*p == ':')
            p++;
    }
    return NULL;
}

int rw_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    else
        port = -errno;
    close(fd);
    return port;
}

static int mkdir_p(const char *dir)
{
    char buf[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return -EINVAL;
    memcpy(buf, dir, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int rw_db_ping(const char *uri_string, int timeout_ms, char *err, size_t errlen)
{
    bson_error_t error;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(uri_string, &error);
    if (!uri) {
        snprintf(err, errlen, "invalid MongoDB URI: %s", error.message);
        return RW_ECONFIG;
    }
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, timeout_ms);
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, timeout_ms);
    mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, timeout_ms);
    mongoc_client_t *client = mongoc_client_new_from_uri_with_error(uri, &error);
    mongoc_uri_destroy(uri);
    if (!client) {
        snprintf(err, errlen, "%s", error.message);
        return RW_EDB;
    }
    mongoc_client_set_error_api(client, MONGOC_ERROR_API_VERSION_2);
    bson_t cmd = BSON_INITIALIZER, reply;
    BSON_APPEND_INT32(&cmd, "ping", 1);
    bool ok = mongoc_client_command_simple(client, "admin", &cmd, NULL, &reply, &error);
    bson_destroy(&cmd);
    bson_destroy(&reply);
    mongoc_client_destroy(client);
    if (!ok) {
        snprintf(err, errlen, "%s", error.message);
        return RW_EDB;
    }
    return 0;
}

/* The last few lines of FerretDB's log, to explain why it did not come up. */
static void log_tail(const char *path, char *out, size_t outlen)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char buf[1024];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long off = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    fseek(f, off, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    snprintf(out, outlen, "%s", buf);
}

static pid_t spawn_ferretdb(const char *bin, const rw_localdb_t *db, const rw_localdb_opts_t *opts)
{
    char listen[64], sqlite[PATH_MAX + 16], state[PATH_MAX + 16];
    snprintf(listen, sizeof listen, "--listen-addr=127.0.0.1:%d", db->port);
    snprintf(sqlite, sizeof sqlite, "--sqlite-url=file:%s/", db->dir);
    snprintf(state, sizeof state, "--state-dir=%s", db->dir);
    char *argv[] = {(char *)bin,         "--handler=sqlite",      sqlite,
                    state,               listen,                  "--debug-addr=-",
                    "--telemetry=disable", "--log-level=warn",    NULL};
    int logfd = open(db->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0)
        return -errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = -errno;
        close(logfd);
        return e;
    }
    if (pid == 0) {
        /* Child: only async-signal-safe calls until exec. */
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
#ifdef __linux__
        if (opts->die_with_parent) {
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent)
                _exit(127);
        }
#else
        (void)parent;
#endif
        if (opts->new_session)
            setsid();
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        long maxfd = sysconf(_SC_OPEN_MAX);
        if (maxfd < 0 || maxfd > 65536)
            maxfd = 65536;
        for (int fd = 3; fd < maxfd; fd++)
            close(fd);
        if (chdir(db->dir) != 0)
            _exit(127);
        execv(bin, argv);
        _exit(127);
    }
    close(logfd);
    return pid;
}

/* True while pid exists and is not a zombie (a detached FerretDB is reaped by
 * whoever adopted it, which may take a moment or never happen in a container). */
static bool pid_alive(pid_t pid)
{
    int status;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
        return false;
    if (r < 0 && errno == ECHILD) {
        if (kill(pid, 0) != 0)
            return false;
        char path[64], buf[256];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
            return true;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *rp = strrchr(buf, ')');
        return !(rp && rp[1] == ' ' && rp[2] == 'Z');
    }
    return true;
}

int rw_localdb_start(rw_localdb_t *db, const rw_localdb_opts_t *opts, char *err, size_t errlen)
{
    memset(db, 0, sizeof *db);
    const char *bin = opts->ferretdb ? opts->ferretdb : rw_localdb_find_binary();
    if (!bin) {
        snprintf(err, errlen,
                 "FerretDB not found: run scripts/setup, set REELWAY_FERRETDB, or set "
                 "MONGODB_URI to use another server");
        return RW_ENOTFOUND;
    }
    int rc = mkdir_p(opts->dir);
    if (rc != 0) {
        snprintf(err, errlen, "cannot create %s: %s", opts->dir, rw_strerror(rc));
        return rc;
    }
    if (!realpath(opts->dir, db->dir)) {
        rc = -errno;
        snprintf(err, errlen, "cannot resolve %s: %s", opts->dir, rw_strerror(rc));
        return rc;
    }
    snprintf(db->log_path, sizeof db->log_path, "%s/ferretdb.log", db->dir);
    int timeout = opts->start_timeout_ms > 0 ? opts->start_timeout_ms : 30000;

    for (int attempt = 0; attempt < 3; attempt++) {
        db->port = rw_free_port();
        if (db->port < 0) {
            snprintf(err, errlen, "no free port: %s", rw_strerror(db->port));
            return db->port;
        }
        snprintf(db->uri, sizeof db->uri, "mongodb://127.0.0.1:%d/", db->port);
        pid_t pid = spawn_ferretdb(bin, db, opts);
        if (pid < 0) {
            snprintf(err, errlen, "cannot start %s: %s", bin, rw_strerror(pid));
            return (int)pid;
        }
        db->pid = pid;
        int64_t deadline = now_ms() + timeout;
        char why[256] = "";
        while (now_ms() < deadline) {
            if (!pid_alive(pid)) {
                db->pid = 0;
                break;
            }
            if (rw_db_ping(db->uri, 500, why, sizeof why) == 0)
                return 0;
            sleep_ms(50);
        }
        if (db->pid == 0)
            continue; /* exited: most likely the port was taken; try another */
        rw_localdb_stop(db, 2000);
        char tail[600];
        log_tail(db->log_path, tail, sizeof tail);
        snprintf(err, errlen, "FerretDB did not answer ping within %d ms (%s); log: %s", timeout,
                 why, tail);
        return RW_ETIMEOUT;
    }
    char tail[600];
    log_tail(db->log_path, tail, sizeof tail);
    snprintf(err, errlen, "FerretDB exited during start-up; log %s: %s", db->log_path, tail);
    return RW_ECHILD;
}

int rw_localdb_stop(rw_localdb_t *db, int timeout_ms)
{
    if (!db || db->pid <= 0)
        return 0;
    pid_t pid = db->pid;
    db->pid = 0;
    if (kill(pid, SIGTERM) != 0 && errno == ESRCH) {
        waitpid(pid, NULL, WNOHANG);
        return 0;
    }
    int64_t deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        if (!pid_alive(pid))
            return 0;
        sleep_ms(10);
    }
    kill(pid, SIGKILL);
    for (int i = 0; i < 200 && pid_alive(pid); i++)
        sleep_ms(10);
    return RW_ETIMEOUT;
}

static rw_localdb_t *guarded;

static void on_exit_stop_db(void)
{
    if (guarded)
        rw_localdb_stop(guarded, 5000);
}

void rw_localdb_guard(rw_localdb_t *db)
{
    static bool registered;
    guarded = db;
    if (db && !registered) {
        registered = true;
        atexit(on_exit_stop_db);
    }
}
