/* A deliberately simple, strict HTTP/1.1 client for tests, a loop thread for
 * in-process servers, and child-process helpers. */
#include "rw_http_client.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

void rw_test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void reader_reset(int fd);

int rw_test_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    reader_reset(fd);
    return fd;
}

int rw_test_send(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Buffered reading: a response may arrive in any split. */
typedef struct {
    int fd;
    char buf[65536];
    size_t start, len;
    bool eof;
} reader_t;

static int fill(reader_t *rd)
{
    if (rd->eof)
        return -1;
    if (rd->start > 0) {
        memmove(rd->buf, rd->buf + rd->start, rd->len);
        rd->start = 0;
    }
    if (rd->len == sizeof rd->buf)
        return -1;
    ssize_t n;
    do
        n = recv(rd->fd, rd->buf + rd->len, sizeof rd->buf - rd->len, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        rd->eof = true;
        return -1;
    }
    rd->len += (size_t)n;
    return 0;
}

static int read_line(reader_t *rd, char *out, size_t cap)
{
    for (;;) {
        char *nl = memchr(rd->buf + rd->start, '\n', rd->len);
        if (nl) {
            size_t n = (size_t)(nl - (rd->buf + rd->start)) + 1;
            if (n >= cap)
                return -1;
            memcpy(out, rd->buf + rd->start, n);
            out[n] = '\0';
            rd->start += n;
            rd->len -= n;
            return (int)n;
        }
        if (fill(rd) != 0)
            return -1;
    }
}

static int read_exact(reader_t *rd, char *out, size_t n)
{
    while (rd->len < n) {
        size_t have = rd->len;
        memcpy(out, rd->buf + rd->start, have);
        out += have;
        n -= have;
        rd->start += have;
        rd->len = 0;
        if (fill(rd) != 0)
            return -1;
    }
    memcpy(out, rd->buf + rd->start, n);
    rd->start += n;
    rd->len -= n;
    return 0;
}

static int body_append(rw_test_response_t *r, size_t *cap, const char *p, size_t n)
{
    if (r->body_len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < r->body_len + n + 1)
            c *= 2;
        char *b = realloc(r->body, c);
        if (!b)
            return -1;
        r->body = b;
        *cap = c;
    }
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return 0;
}

const char *rw_test_header(const rw_test_response_t *r, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    const char *line = strchr(r->head, '\n');
    while (line && line[1]) {
        line++;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = strcspn(v, "\r\n");
            if (vl >= len)
                vl = len - 1;
            memcpy(buf, v, vl);
            buf[vl] = '\0';
            return buf;
        }
        line = strchr(line, '\n');
    }
    return NULL;
}

/* Readers are kept per fd between responses on one connection (pipelining);
 * rw_test_connect resets the one for a new socket. They are per thread, and
 * freed when a thread that used them exits (tests that call from threads
 * would otherwise leak them). */
#define MAX_READERS 64
static __thread reader_t *readers[MAX_READERS];
static pthread_key_t readers_key;
static pthread_once_t readers_once = PTHREAD_ONCE_INIT;

static void free_readers(void *list)
{
    reader_t **r = list;
    for (int i = 0; i < MAX_READERS; i++) {
        free(r[i]);
        r[i] = NULL;
    }
}

static void make_readers_key(void)
{
    pthread_key_create(&readers_key, free_readers);
}

static reader_t *reader_for(int fd)
{
    int slot = fd % MAX_READERS;
    if (!readers[slot]) {
        pthread_once(&readers_once, make_readers_key);
        pthread_setspecific(readers_key, readers);
        readers[slot] = calloc(1, sizeof(reader_t));
    }
    if (readers[slot]->fd != fd) {
        memset(readers[slot], 0, sizeof(reader_t));
        readers[slot]->fd = fd;
    }
    return readers[slot];
}

static void reader_reset(int fd)
{
    reader_t *rd = reader_for(fd);
    memset(rd, 0, sizeof *rd);
    rd->fd = fd;
}

int rw_test_read_response(int fd, rw_test_response_t *r, bool head_request)
{
    reader_t *rd = reader_for(fd);
    memset(r, 0, sizeof *r);
    char line[8192];
    for (;;) {
        size_t hl = 0;
        r->head[0] = '\0';
        if (read_line(rd, line, sizeof line) < 0)
            return -1;
        if (sscanf(line, "HTTP/1.%*d %d", &r->status) != 1)
            return -1;
        for (;;) {
            size_t n = strlen(line);
            if (hl + n + 1 > sizeof r->head)
                return -1;
            memcpy(r->head + hl, line, n + 1);
            hl += n;
            if (strcmp(line, "\r\n") == 0)
                break;
            if (read_line(rd, line, sizeof line) < 0)
                return -1;
        }
        if (r->status >= 200)
            break;
    }
    char v[256];
    size_t cap = 0;
    r->body = malloc(1);
    r->body[0] = '\0';
    bool close = rw_test_header(r, "connection", v, sizeof v) && strcasecmp(v, "close") == 0;
    if (head_request || r->status == 204 || r->status == 304) {
        r->closed = close;
        return 0;
    }
    if (rw_test_header(r, "transfer-encoding", v, sizeof v) && strcasecmp(v, "chunked") == 0) {
        r->chunked = true;
        for (;;) {
            if (read_line(rd, line, sizeof line) < 0)
                return -1;
            char *end;
            unsigned long size = strtoul(line, &end, 16);
            if (end == line)
                return -1;
            if (size == 0)
                break;
            char *tmp = malloc(size);
            if (!tmp || read_exact(rd, tmp, size) != 0 || body_append(r, &cap, tmp, size) != 0) {
                free(tmp);
                return -1;
            }
            free(tmp);
            if (read_line(rd, line, sizeof line) < 0 || strcmp(line, "\r\n") != 0)
                return -1;
        }
        size_t tl = 0;
        for (;;) {
            if (read_line(rd, line, sizeof line) < 0)
                return -1;
            if (strcmp(line, "\r\n") == 0)
                break;
            size_t n = strlen(line);
            if (tl + n + 1 < sizeof r->trailers) {
                memcpy(r->trailers + tl, line, n + 1);
                tl += n;
            }
        }
    } else if (rw_test_header(r, "content-length", v, sizeof v)) {
        size_t n = strtoull(v, NULL, 10);
        char *tmp = malloc(n + 1);
        if (!tmp || read_exact(rd, tmp, n) != 0 || body_append(r, &cap, tmp, n) != 0) {
            free(tmp);
            return -1;
        }
        free(tmp);
    } else {
        /* Close-delimited. */
        for (;;) {
            if (rd->len && body_append(r, &cap, rd->buf + rd->start, rd->len) != 0)
                return -1;
            rd->start += rd->len;
            rd->len = 0;
            if (fill(rd) != 0)
                break;
        }
        close = true;
    }
    r->closed = close;
    return 0;
}

int rw_test_http(int port, const char *method, const char *path, const char *extra_headers,
                 const char *body, size_t body_len, rw_test_response_t *r)
{
    int fd = rw_test_connect(port);
    if (fd < 0) {
        memset(r, 0, sizeof *r);
        return -1;
    }
    size_t cap = strlen(method) + strlen(path) + (extra_headers ? strlen(extra_headers) : 0) + 256;
    char *head = malloc(cap);
    int n = snprintf(head, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s", method, path, port,
                     extra_headers ? extra_headers : "");
    if (body)
        n += snprintf(head + n, cap - (size_t)n, "Content-Length: %zu\r\n", body_len);
    n += snprintf(head + n, cap - (size_t)n, "Connection: close\r\n\r\n");
    int rc = rw_test_send(fd, head, (size_t)n);
    free(head);
    if (rc == 0 && body && body_len)
        rc = rw_test_send(fd, body, body_len);
    if (rc == 0)
        rc = rw_test_read_response(fd, r, strcmp(method, "HEAD") == 0);
    else
        memset(r, 0, sizeof *r);
    close(fd);
    return rc;
}

void rw_test_response_free(rw_test_response_t *r)
{
    free(r->body);
    r->body = NULL;
}

bool rw_test_wait_closed(int fd, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    char buf[4096];
    while (now_ms() < deadline) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int n = poll(&pfd, 1, 100);
        if (n <= 0)
            continue;
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            return true;
    }
    return false;
}

/* ---- loop thread ------------------------------------------------------- */

struct rw_test_loop_s {
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void (*fn)(uv_loop_t *, void *);
    void *arg;
    bool pending, stopping;
    int close_rc;
};

static void on_async(uv_async_t *a)
{
    rw_test_loop_t *t = a->data;
    pthread_mutex_lock(&t->mu);
    void (*fn)(uv_loop_t *, void *) = t->fn;
    void *arg = t->arg;
    pthread_mutex_unlock(&t->mu);
    if (fn)
        fn(&t->loop, arg);
    pthread_mutex_lock(&t->mu);
    t->fn = NULL;
    t->pending = false;
    if (t->stopping)
        uv_close((uv_handle_t *)&t->async, NULL);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void *loop_main(void *arg)
{
    rw_test_loop_t *t = arg;
    uv_run(&t->loop, UV_RUN_DEFAULT);
    t->close_rc = uv_loop_close(&t->loop);
    return NULL;
}

rw_test_loop_t *rw_test_loop_start(void (*fn)(uv_loop_t *loop, void *arg), void *arg)
{
    rw_test_loop_t *t = calloc(1, sizeof *t);
    uv_loop_init(&t->loop);
    uv_async_init(&t->loop, &t->async, on_async);
    t->async.data = t;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    if (fn)
        fn(&t->loop, arg); /* before the thread starts: no race */
    pthread_create(&t->thread, NULL, loop_main, t);
    return t;
}

void rw_test_loop_call(rw_test_loop_t *t, void (*fn)(uv_loop_t *loop, void *arg), void *arg)
{
    pthread_mutex_lock(&t->mu);
    while (t->pending)
        pthread_cond_wait(&t->cv, &t->mu);
    t->fn = fn;
    t->arg = arg;
    t->pending = true;
    uv_async_send(&t->async);
    while (t->pending)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

int rw_test_loop_stop(rw_test_loop_t *t, void (*stop)(uv_loop_t *loop, void *arg), void *arg)
{
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_mutex_unlock(&t->mu);
    rw_test_loop_call(t, stop, arg);
    pthread_join(t->thread, NULL);
    int rc = t->close_rc;
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
    return rc;
}

/* ---- processes ---------------------------------------------------------- */

static int proc_start(rw_test_proc_t *p, char *const argv[], const char *const env_set[],
                      const char *const env_unset[], const char *log_path, bool group)
{
    memset(p, 0, sizeof *p);
    snprintf(p->log_path, sizeof p->log_path, "%s", log_path);
    int logfd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        for (size_t i = 0; env_unset && env_unset[i]; i++)
            unsetenv(env_unset[i]);
        for (size_t i = 0; env_set && env_set[i]; i++) {
            char kv[4096];
            snprintf(kv, sizeof kv, "%s", env_set[i]);
            char *eq = strchr(kv, '=');
            if (eq) {
                *eq = '\0';
                setenv(kv, eq + 1, 1);
            }
        }
        dup2(logfd, 1);
        dup2(logfd, 2);
        if (group)
            setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(argv[0], argv);
        _exit(127);
    }
    close(logfd);
    p->pid = pid;
    return 0;
}

int rw_test_proc_start(rw_test_proc_t *p, char *const argv[], const char *const env_set[],
                       const char *const env_unset[], const char *log_path)
{
    return proc_start(p, argv, env_set, env_unset, log_path, false);
}

int rw_test_proc_start_group(rw_test_proc_t *p, char *const argv[], const char *const env_set[],
                             const char *const env_unset[], const char *log_path)
{
    int rc = proc_start(p, argv, env_set, env_unset, log_path, true);
    if (rc == 0)
        setpgid(p->pid, p->pid); /* also from here: whoever runs first wins */
    return rc;
}

void rw_test_proc_kill_group(rw_test_proc_t *p)
{
    if (p->pid <= 0)
        return;
    kill(-p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

int rw_test_proc_wait(rw_test_proc_t *p, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            return status;
        }
        if (r < 0)
            return -1;
        if (now_ms() >= deadline)
            return -1;
        rw_test_sleep_ms(20);
    }
}

int rw_test_proc_stop(rw_test_proc_t *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, sig);
    int status = rw_test_proc_wait(p, timeout_ms);
    if (status == -1 && p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &status, 0);
        p->pid = 0;
        return -1;
    }
    return status;
}

int rw_test_wait_int_file(const char *path, int timeout_ms)
{
    long deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        FILE *f = fopen(path, "r");
        if (f) {
            int v = -1;
            int ok = fscanf(f, "%d", &v);
            fclose(f);
            if (ok == 1)
                return v;
        }
        rw_test_sleep_ms(20);
    }
    return -1;
}

bool rw_test_pid_alive(pid_t pid)
{
    if (pid <= 0 || kill(pid, 0) != 0)
        return false;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *rp = strrchr(buf, ')');
    return !(rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'));
}

const char *rw_test_reelway_bin(void)
{
    static char path[4096];
    const char *dir = getenv("RW_BINARY_DIR");
    snprintf(path, sizeof path, "%s/gateway/reelway", dir ? dir : ".");
    return path;
}

int rw_test_tmpdir(char *buf, size_t len, const char *prefix)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, len, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", prefix);
    return mkdtemp(buf) ? 0 : -1;
}

int rw_test_function_logs(const char *data_dir, const char *fn, char *buf, size_t cap)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/logs/%s", data_dir, fn);
    buf[0] = '\0';
    size_t len = 0;
    int files = 0;
    DIR *d = opendir(dir);
    struct dirent *ent;
    while (d && (ent = readdir(d))) {
        if (ent->d_name[0] == '.')
            continue;
        files++;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        len += fread(buf + len, 1, cap - 1 - len, f);
        buf[len] = '\0';
        fclose(f);
    }
    if (d)
        closedir(d);
    return files;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

void rw_test_rmtree(const char *path)
{
    if (path && path[0] == '/')
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *grep_needle;
static int grep_hits;

static int grep_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag != FTW_F || !S_ISREG(st->st_mode))
        return 0;
    FILE *f = fopen(path, "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f))
        grep_hits += strstr(line, grep_needle) != NULL;
    if (f)
        fclose(f);
    return 0;
}

int rw_test_grep_tree(const char *dir, const char *needle)
{
    grep_needle = needle;
    grep_hits = 0;
    nftw(dir, grep_entry, 16, FTW_PHYS);
    return grep_hits;
}
