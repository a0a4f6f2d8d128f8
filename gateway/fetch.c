/* A blocking HTTP(S) GET with a deadline and a size limit, for the few times
 * the gateway itself is a client (an issuer's discovery document and JWKS).
 * Non-blocking sockets and poll() give the deadline; llhttp parses the answer;
 * OpenSSL verifies the peer against the system store (or a given CA file). */
#include "fetch.h"

#include "reelway/error.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <llhttp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Status line and headers beyond this are not a JWKS server we want to hear. */
#define HEAD_MAX (64 * 1024)

typedef struct url_s {
    bool tls;
    bool host_is_ip;
    char host[256];
    char port[8];
    char host_header[300];
    char target[4096];
} url_t;

typedef struct conn_s {
    int fd;
    SSL *ssl;
    uint64_t deadline_ms;
} conn_t;

typedef struct body_s {
    char *data;
    size_t len, cap, max;
    bool complete;
    bool overflow;
    bool oom;
} body_t;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool host_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-' || ch == '_';
}

static int parse_url(const char *url, url_t *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    const char *p;
    if (strncasecmp(url, "https://", 8) == 0) {
        u->tls = true;
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        p = url + 7;
    } else {
        snprintf(err, errlen, "not an http or https URL");
        return RW_EPARSE;
    }
    size_t alen = strcspn(p, "/?#");
    const char *auth_end = p + alen;
    if (memchr(p, '@', alen)) {
        snprintf(err, errlen, "URLs with user information are not supported");
        return RW_EPARSE;
    }
    const char *host = p, *host_end, *port = NULL;
    if (*p == '[') {
        const char *close = memchr(p, ']', alen);
        if (!close) {
            snprintf(err, errlen, "unterminated IPv6 literal");
            return RW_EPARSE;
        }
        host = p + 1;
        host_end = close;
        if (close + 1 < auth_end) {
            if (close[1] != ':') {
                snprintf(err, errlen, "junk after the IPv6 literal");
                return RW_EPARSE;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(p, ':', alen);
        host_end = colon ? colon : auth_end;
        port = colon ? colon + 1 : NULL;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0 || hlen >= sizeof u->host) {
        snprintf(err, errlen, "missing or overlong host");
        return RW_EPARSE;
    }
    memcpy(u->host, host, hlen);
    u->host[hlen] = '\0';
    struct in6_addr a6;
    struct in_addr a4;
    if (*p == '[') {
        if (inet_pton(AF_INET6, u->host, &a6) != 1) {
            snprintf(err, errlen, "invalid IPv6 literal");
            return RW_EPARSE;
        }
        u->host_is_ip = true;
    } else {
        for (size_t i = 0; i < hlen; i++)
            if (!host_char_ok(u->host[i])) {
                snprintf(err, errlen, "invalid character in the host name");
                return RW_EPARSE;
            }
        u->host_is_ip = inet_pton(AF_INET, u->host, &a4) == 1;
    }
    bool explicit_port = false;
    if (port) {
        size_t plen = (size_t)(auth_end - port);
        unsigned long v = 0;
        if (plen == 0 || plen > 5) {
            snprintf(err, errlen, "invalid port");
            return RW_EPARSE;
        }
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9') {
                snprintf(err, errlen, "invalid port");
                return RW_EPARSE;
            }
            v = v * 10 + (unsigned long)(port[i] - '0');
        }
        if (v == 0 || v > 65535) {
            snprintf(err, errlen, "port out of range");
            return RW_EPARSE;
        }
        snprintf(u->port, sizeof u->port, "%lu", v);
        explicit_port = v != (u->tls ? 443UL : 80UL);
    } else {
        snprintf(u->port, sizeof u->port, "%s", u->tls ? "443" : "80");
    }
    const char *fmt = *p == '[' ? "[%s]" : "%s";
    int n = snprintf(u->host_header, sizeof u->host_header, fmt, u->host);
    if (explicit_port)
        snprintf(u->host_header + n, sizeof u->host_header - (size_t)n, ":%s", u->port);
    /* The request target: path and query, never the fragment. */
    size_t tlen = strcspn(auth_end, "#");
    if (tlen + 2 > sizeof u->target) {
        snprintf(err, errlen, "URL path too long");
        return RW_EPARSE;
    }
    size_t off = 0;
    if (tlen == 0 || auth_end[0] == '?')
        u->target[off++] = '/';
    for (size_t i = 0; i < tlen; i++) {
        unsigned char ch = (unsigned char)auth_end[i];
        if (ch <= ' ' || ch == 0x7f) {
            snprintf(err, errlen, "space or control character in the URL");
            return RW_EPARSE;
        }
        u->target[off++] = (char)ch;
    }
    u->target[off] = '\0';
    return 0;
}

int rw__fetch_check_url(const char *url)
{
    url_t u;
    char err[128];
    return url ? parse_url(url, &u, err, sizeof err) : RW_EPARSE;
}

/* Waits until fd is ready for events or the deadline passes. */
static int wait_io(int fd, short events, uint64_t deadline_ms)
{
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline_ms)
            return RW_ETIMEOUT;
        uint64_t left = deadline_ms - now;
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0)
            return 0;
        if (n == 0)
            return RW_ETIMEOUT;
        if (errno != EINTR)
            return -errno;
    }
}

/* After a failed send/recv: 0 to try again (once the socket is ready), or
 * the error. */
static int io_retry(conn_t *c, short events)
{
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return wait_io(c->fd, events, c->deadline_ms);
    return errno == EINTR ? 0 : -errno;
}

static int connect_any(const url_t *u, uint64_t deadline_ms, int *out, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = u->host_is_ip ? AI_NUMERICHOST : 0;
    int g = getaddrinfo(u->host, u->port, &hints, &res);
    if (g != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", u->host, gai_strerror(g));
        return RW_ENOTFOUND;
    }
    int rc = -ECONNREFUSED;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            *out = fd;
            rc = 0;
            break;
        }
        if (errno != EINPROGRESS) {
            rc = -errno;
            close(fd);
            continue;
        }
        rc = wait_io(fd, POLLOUT, deadline_ms);
        if (rc == 0) {
            int soerr = 0;
            socklen_t len = sizeof soerr;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
            rc = -soerr;
        }
        if (rc == 0) {
            *out = fd;
            break;
        }
        close(fd);
        if (rc == RW_ETIMEOUT)
            break;
    }
    freeaddrinfo(res);
    if (rc != 0)
        snprintf(err, errlen, "cannot connect to %s:%s: %s", u->host, u->port, rw_strerror(rc));
    return rc;
}

static void ssl_reason(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[200] = "unknown error";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    snprintf(err, errlen, "%s: %s", what, buf);
    ERR_clear_error();
}

/* Drives an OpenSSL call that wants the socket readable or writable. */
static int ssl_wait(conn_t *c, int ret, char *err, size_t errlen, const char *what)
{
    int e = SSL_get_error(c->ssl, ret);
    if (e == SSL_ERROR_WANT_READ)
        return wait_io(c->fd, POLLIN, c->deadline_ms);
    if (e == SSL_ERROR_WANT_WRITE)
        return wait_io(c->fd, POLLOUT, c->deadline_ms);
    long v = SSL_get_verify_result(c->ssl);
    if (v != X509_V_OK) {
        snprintf(err, errlen, "%s: certificate verification failed: %s", what,
                 X509_verify_cert_error_string(v));
        ERR_clear_error();
    } else if (e == SSL_ERROR_SYSCALL && errno != 0) {
        snprintf(err, errlen, "%s: %s", what, strerror(errno));
        ERR_clear_error();
    } else {
        ssl_reason(err, errlen, what);
    }
    return RW_ECRYPTO;
}

static int tls_start(conn_t *c, SSL_CTX **ctx_out, const url_t *u, const char *ca_file, char *err,
                     size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    *ctx_out = ctx;
    if (!ctx) {
        ssl_reason(err, errlen, "cannot create a TLS context");
        return RW_ECRYPTO;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* A close without close_notify reads as EOF; llhttp's framing then tells a
     * complete body from a truncated one. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        ssl_reason(err, errlen,
                   ca_file ? "cannot load the CA file" : "cannot load the system CA store");
        return RW_ECRYPTO;
    }
    c->ssl = SSL_new(ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        ssl_reason(err, errlen, "cannot create a TLS session");
        return RW_ECRYPTO;
    }
    if (u->host_is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), u->host) != 1) {
            ssl_reason(err, errlen, "cannot set the expected IP address");
            return RW_ECRYPTO;
        }
    } else if (SSL_set_tlsext_host_name(c->ssl, u->host) != 1 ||
               SSL_set1_host(c->ssl, u->host) != 1) {
        ssl_reason(err, errlen, "cannot set the expected host name");
        return RW_ECRYPTO;
    }
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1)
            return 0;
        int rc = ssl_wait(c, r, err, errlen, "TLS handshake");
        if (rc == RW_ETIMEOUT)
            snprintf(err, errlen, "TLS handshake with %s timed out", u->host);
        if (rc != 0)
            return rc;
    }
}

static int write_all(conn_t *c, const char *p, size_t n, char *err, size_t errlen)
{
    while (n > 0) {
        ssize_t w;
        if (c->ssl) {
            int r = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
            if (r <= 0) {
                int rc = ssl_wait(c, r, err, errlen, "TLS write");
                if (rc != 0)
                    return rc;
                continue;
            }
            w = r;
        } else {
            w = send(c->fd, p, n, MSG_NOSIGNAL);
            if (w < 0) {
                int rc = io_retry(c, POLLOUT);
                if (rc != 0) {
                    snprintf(err, errlen, "cannot send the request: %s", rw_strerror(rc));
                    return rc;
                }
                continue;
            }
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads some bytes: > 0 their count, 0 at the end of the stream, < 0 an error. */
static long read_some(conn_t *c, char *buf, size_t cap, char *err, size_t errlen)
{
    for (;;) {
        if (c->ssl) {
            int r = SSL_read(c->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
            if (r > 0)
                return r;
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && errno == 0)) {
                ERR_clear_error();
                return 0;
            }
            int rc = ssl_wait(c, r, err, errlen, "TLS read");
            if (rc != 0)
                return rc;
        } else {
            ssize_t r = recv(c->fd, buf, cap, 0);
            if (r >= 0)
                return r;
            int rc = io_retry(c, POLLIN);
            if (rc != 0) {
                snprintf(err, errlen, "cannot read the response: %s", rw_strerror(rc));
                return rc;
            }
        }
    }
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    body_t *b = p->data;
    if (n > b->max - b->len) {
        b->overflow = true;
        return -1;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data) {
            b->oom = true;
            return -1;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, at, n);
    b->len += n;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    body_t *b = p->data;
    b->complete = true;
    return HPE_PAUSED;
}

/* Runs the exchange on a connected socket. */
static int exchange(conn_t *c, const url_t *u, const rw_fetch_opts_t *o, rw_fetch_result_t *res)
{
    char req[4608];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: reelway\r\n"
                     "Accept: application/json\r\nAccept-Encoding: identity\r\n"
                     "Connection: close\r\n\r\n",
                     u->target, u->host_header);
    if (n < 0 || (size_t)n >= sizeof req) {
        snprintf(res->error, sizeof res->error, "request too long");
        return RW_EPARSE;
    }
    int rc = write_all(c, req, (size_t)n, res->error, sizeof res->error);
    if (rc != 0)
        return rc;

    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &settings);
    body_t body = {.max = o->max_bytes};
    parser.data = &body;
    size_t total = 0;
    char buf[16384];
    for (;;) {
        long got = read_some(c, buf, sizeof buf, res->error, sizeof res->error);
        if (got < 0) {
            rc = (int)got;
            if (rc == RW_ETIMEOUT)
                snprintf(res->error, sizeof res->error, "no complete response from %s in %llu ms",
                         u->host, (unsigned long long)o->timeout_ms);
            break;
        }
        if (got == 0) {
            llhttp_errno_t e = llhttp_finish(&parser);
            if (body.complete) {
                rc = 0;
            } else if (e != HPE_OK) {
                snprintf(res->error, sizeof res->error, "malformed response: %s",
                         llhttp_get_error_reason(&parser));
                rc = RW_EPARSE;
            } else {
                snprintf(res->error, sizeof res->error, "connection closed before the end of "
                                                        "the response");
                rc = RW_ETRUNC;
            }
            break;
        }
        total += (size_t)got;
        if (total > o->max_bytes + HEAD_MAX) {
            snprintf(res->error, sizeof res->error, "response larger than %zu bytes", o->max_bytes);
            rc = RW_ELIMIT;
            break;
        }
        llhttp_errno_t e = llhttp_execute(&parser, buf, (size_t)got);
        if (body.complete) {
            rc = 0;
            break;
        }
        if (e != HPE_OK) {
            if (body.overflow) {
                snprintf(res->error, sizeof res->error, "body larger than %zu bytes",
                         o->max_bytes);
                rc = RW_ELIMIT;
            } else if (body.oom) {
                snprintf(res->error, sizeof res->error, "out of memory");
                rc = -ENOMEM;
            } else {
                snprintf(res->error, sizeof res->error, "malformed response: %s",
                         llhttp_get_error_reason(&parser));
                rc = RW_EPARSE;
            }
            break;
        }
    }
    if (rc == 0) {
        if (!body.data && !(body.data = malloc(1))) {
            snprintf(res->error, sizeof res->error, "out of memory");
            return -ENOMEM;
        }
        body.data[body.len] = '\0';
        res->status = llhttp_get_status_code(&parser);
        res->body = body.data;
        res->len = body.len;
        return 0;
    }
    free(body.data);
    return rc;
}

int rw__fetch_get(const char *url, const rw_fetch_opts_t *opts, rw_fetch_result_t *res)
{
    memset(res, 0, sizeof *res);
    rw_fetch_opts_t o = opts ? *opts : (rw_fetch_opts_t){0};
    if (!o.timeout_ms)
        o.timeout_ms = RW_FETCH_TIMEOUT_MS;
    if (!o.max_bytes)
        o.max_bytes = RW_FETCH_MAX_BYTES;
    url_t u;
    int rc = parse_url(url, &u, res->error, sizeof res->error);
    if (rc != 0)
        return rc;

    /* OpenSSL writes to the socket with write(): a peer that closes early
     * would raise SIGPIPE in this thread. Block it for the exchange and
     * swallow one raised meanwhile, so the process's disposition never matters. */
    sigset_t pipe_set, old_mask, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
    sigpending(&pending);
    bool pipe_was_pending = sigismember(&pending, SIGPIPE);

    conn_t c = {.fd = -1, .deadline_ms = mono_ms() + o.timeout_ms};
    SSL_CTX *ctx = NULL;
    rc = connect_any(&u, c.deadline_ms, &c.fd, res->error, sizeof res->error);
    if (rc == 0 && u.tls)
        rc = tls_start(&c, &ctx, &u, o.ca_file, res->error, sizeof res->error);
    if (rc == 0)
        rc = exchange(&c, &u, &o, res);
    if (c.ssl) {
        SSL_free(c.ssl);
        c.ssl = NULL;
    }
    SSL_CTX_free(ctx);
    ERR_clear_error();
    if (c.fd >= 0)
        close(c.fd);

    if (!pipe_was_pending) {
        sigpending(&pending);
        if (sigismember(&pending, SIGPIPE)) {
            struct timespec zero = {0, 0};
            sigtimedwait(&pipe_set, NULL, &zero);
        }
    }
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    return rc;
}

void rw__fetch_result_free(rw_fetch_result_t *res)
{
    if (!res)
        return;
    free(res->body);
    res->body = NULL;
    res->len = 0;
}
