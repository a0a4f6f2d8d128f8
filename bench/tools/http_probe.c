/* rw_bench_http: the small HTTP/1.1 client the benchmark scripts use where wrk
 * does not fit: latency percentiles of sequential requests, cold starts (a
 * fresh connection after a pause), and many idle keep-alive connections held
 * open. Blocking sockets with timeouts, 127.0.0.1 only. Not a test.
 *
 *   rw_bench_http latency PORT PATH N [HEADER]
 *       N GETs one after the other on one keep-alive connection (after N/10
 *       unmeasured ones); prints "p50_us p99_us mean_us".
 *   rw_bench_http cold PORT PATH N WAIT_MS [HEADER]
 *       N samples, each after WAIT_MS of quiet, on a new connection: connect
 *       to the last body byte; prints "p50_us p99_us max_us".
 *   rw_bench_http idle PORT PATH N HOLD_S READY_FILE
 *       opens N connections, one GET on each (so each is an established
 *       keep-alive connection the server has served), creates READY_FILE,
 *       holds them HOLD_S seconds, then prints "held K of N" (K: still open).
 *
 * Every answer must be a 200 with a Content-Length body, else it exits 1
 * saying what came back. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_S 30

static char rbuf[1 << 20];

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "rw_bench_http: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect");
    return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("send");
        p += w;
        n -= (size_t)w;
    }
}

/* Reads one response; exits unless it is a 200 with a Content-Length body. */
static void read_response(int fd)
{
    size_t have = 0;
    char *end = NULL;
    while (!(end = memmem(rbuf, have, "\r\n\r\n", 4))) {
        if (have == sizeof rbuf)
            die("response head too large");
        ssize_t r = recv(fd, rbuf + have, sizeof rbuf - have, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = 0;
            die(r == 0 ? "connection closed before the response" : "recv");
        }
        have += (size_t)r;
    }
    size_t head = (size_t)(end - rbuf) + 4;
    if (have < 12 || memcmp(rbuf + 9, "200", 3) != 0) {
        errno = 0;
        fprintf(stderr, "rw_bench_http: not a 200: %.*s\n", (int)(have < 400 ? have : 400), rbuf);
        exit(1);
    }
    long len = -1;
    for (char *line = rbuf; line < end; line = strstr(line, "\r\n") + 2) {
        if (strncasecmp(line, "content-length:", 15) == 0) {
            len = strtol(line + 15, NULL, 10);
            break;
        }
    }
    if (len < 0) {
        errno = 0;
        die("response without Content-Length");
    }
    size_t body = have - head;
    while (body < (size_t)len) {
        size_t room = sizeof rbuf;
        ssize_t r = recv(fd, rbuf, room, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            die("recv body");
        body += (size_t)r;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples. */
static uint64_t pct(const uint64_t *s, size_t n, double p)
{
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    return s[rank > n ? n - 1 : rank - 1];
}

static size_t build_request(char *out, size_t cap, int port, const char *path, const char *header)
{
    int n = snprintf(out, cap, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s%s\r\n", path, port,
                     header ? header : "", header ? "\r\n" : "");
    if (n < 0 || (size_t)n >= cap) {
        errno = 0;
        die("request too long");
    }
    return (size_t)n;
}

static int run_latency(int port, const char *path, long n, const char *header)
{
    char req[8192];
    size_t rlen = build_request(req, sizeof req, port, path, header);
    uint64_t *s = calloc((size_t)n, sizeof *s);
    if (!s)
        die("calloc");
    int fd = dial(port);
    for (long i = 0; i < n / 10; i++) {
        send_all(fd, req, rlen);
        read_response(fd);
    }
    uint64_t sum = 0;
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        send_all(fd, req, rlen);
        read_response(fd);
        s[i] = now_ns() - t0;
        sum += s[i];
    }
    close(fd);
    qsort(s, (size_t)n, sizeof *s, cmp_u64);
    printf("%.1f %.1f %.1f\n", pct(s, (size_t)n, 50) / 1e3, pct(s, (size_t)n, 99) / 1e3,
           (double)sum / (double)n / 1e3);
    free(s);
    return 0;
}

static int run_cold(int port, const char *path, long n, long wait_ms, const char *header)
{
    char req[8192];
    size_t rlen = build_request(req, sizeof req, port, path, header);
    uint64_t *s = calloc((size_t)n, sizeof *s);
    if (!s)
        die("calloc");
    for (long i = 0; i < n; i++) {
        struct timespec ts = {.tv_sec = wait_ms / 1000, .tv_nsec = (wait_ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) != 0)
            ;
        uint64_t t0 = now_ns();
        int fd = dial(port);
        send_all(fd, req, rlen);
        read_response(fd);
        s[i] = now_ns() - t0;
        close(fd);
    }
    qsort(s, (size_t)n, sizeof *s, cmp_u64);
    printf("%.1f %.1f %.1f\n", pct(s, (size_t)n, 50) / 1e3, pct(s, (size_t)n, 99) / 1e3,
           s[n - 1] / 1e3);
    free(s);
    return 0;
}

static int run_idle(int port, const char *path, long n, long hold_s, const char *ready)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char req[8192];
    size_t rlen = build_request(req, sizeof req, port, path, NULL);
    struct pollfd *fds = calloc((size_t)n, sizeof *fds);
    if (!fds)
        die("calloc");
    for (long i = 0; i < n; i++) {
        fds[i].fd = dial(port);
        fds[i].events = POLLIN;
        send_all(fds[i].fd, req, rlen);
        read_response(fds[i].fd);
    }
    FILE *f = fopen(ready, "w");
    if (!f)
        die(ready);
    fclose(f);
    sleep((unsigned)hold_s);
    /* Still open: nothing to read and no hang-up (an idle keep-alive
     * connection the server closed would show POLLIN with EOF). */
    if (poll(fds, (nfds_t)n, 0) < 0)
        die("poll");
    long open = 0;
    for (long i = 0; i < n; i++) {
        open += (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0;
        close(fds[i].fd);
    }
    printf("held %ld of %ld\n", open, n);
    free(fds);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && strcmp(argv[1], "latency") == 0)
        return run_latency(atoi(argv[2]), argv[3], atol(argv[4]), argc > 5 ? argv[5] : NULL);
    if (argc >= 6 && strcmp(argv[1], "cold") == 0)
        return run_cold(atoi(argv[2]), argv[3], atol(argv[4]), atol(argv[5]),
                        argc > 6 ? argv[6] : NULL);
    if (argc == 7 && strcmp(argv[1], "idle") == 0)
        return run_idle(atoi(argv[2]), argv[3], atol(argv[4]), atol(argv[5]), argv[6]);
    fprintf(stderr, "usage: %s latency PORT PATH N [HEADER]\n"
                    "       %s cold PORT PATH N WAIT_MS [HEADER]\n"
                    "       %s idle PORT PATH N HOLD_S READY_FILE\n",
            argv[0], argv[0], argv[0]);
    return 2;
}
