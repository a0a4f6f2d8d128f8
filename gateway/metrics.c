/* Node-wide metrics in shared memory: plain counters updated with atomic adds
 * by every worker, rendered as Prometheus text on demand. */
#include "metrics.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define N_STATUS 500 /* 100..599 */
#define N_BUCKETS 15
static const double bucket_le[N_BUCKETS - 1] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                0.1,    0.25,  0.5,    1,     2.5,  5,     10};
static const char *const outcomes[] = {"ok", "error", "timeout", "crash", "init_error",
                                       "throttled", "too_large", "cancelled", "other"};
#define N_OUTCOMES (sizeof outcomes / sizeof outcomes[0])

typedef struct {
    uint64_t status[N_STATUS];
    uint64_t bucket[N_BUCKETS];
    uint64_t latency_us_sum;
    uint64_t bytes_in, bytes_out;
} route_stats_t;

typedef struct {
    uint64_t outcome[N_OUTCOMES];
    uint64_t cold_starts;
    uint64_t duration_us_sum;
} fn_stats_t;

typedef struct {
    int64_t connections[256];
    route_stats_t routes[]; /* then fn_stats_t functions[] */
} shared_t;

struct rw_metrics_s {
    shared_t *shm;
    size_t shm_size;
    size_t n_routes, n_functions;
    int max_workers;
    char **route_names;
    char **function_names;
    fn_stats_t *fns;
};

static char **copy_names(const char *const *names, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof *out);
    for (size_t i = 0; out && i < n; i++)
        out[i] = strdup(names[i]);
    return out;
}

rw_metrics_t *rw_metrics_new(const char *const *route_names, size_t n_routes, int max_workers,
                             const char *const *function_names, size_t n_functions)
{
    rw_metrics_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->n_routes = n_routes;
    m->n_functions = n_functions;
    m->max_workers = max_workers < 256 ? max_workers : 256;
    m->shm_size = sizeof(shared_t) + n_routes * sizeof(route_stats_t) +
                  n_functions * sizeof(fn_stats_t);
    void *p = mmap(NULL, m->shm_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(m);
        return NULL;
    }
    m->shm = p;
    m->fns = (fn_stats_t *)(m->shm->routes + n_routes);
    m->route_names = copy_names(route_names, n_routes);
    m->function_names = copy_names(function_names, n_functions);
    return m;
}

void rw_metrics_free(rw_metrics_t *m)
{
    if (!m)
        return;
    munmap(m->shm, m->shm_size);
    for (size_t i = 0; i < m->n_routes; i++)
        free(m->route_names[i]);
    for (size_t i = 0; i < m->n_functions; i++)
        free(m->function_names[i]);
    free(m->route_names);
    free(m->function_names);
    free(m);
}

static void add(uint64_t *p, uint64_t v)
{
    __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

void rw_metrics_request(rw_metrics_t *m, size_t route, int status, uint64_t latency_us,
                        uint64_t bytes_in, uint64_t bytes_out)
{
    if (!m || m->n_routes == 0)
        return;
    if (route >= m->n_routes)
        route = m->n_routes - 1;
    route_stats_t *r = &m->shm->routes[route];
    if (status >= 100 && status < 600)
        add(&r->status[status - 100], 1);
    size_t b = 0;
    while (b < N_BUCKETS - 1 && (double)latency_us / 1e6 > bucket_le[b])
        b++;
    add(&r->bucket[b], 1);
    add(&r->latency_us_sum, latency_us);
    add(&r->bytes_in, bytes_in);
    add(&r->bytes_out, bytes_out);
}

void rw_metrics_connections(rw_metrics_t *m, int worker, int64_t open)
{
    if (m && worker >= 0 && worker < m->max_workers)
        __atomic_store_n(&m->shm->connections[worker], open, __ATOMIC_RELAXED);
}

void rw_metrics_invocation(rw_metrics_t *m, size_t function, const char *outcome, bool cold,
                           uint64_t duration_us)
{
    if (!m || function >= m->n_functions)
        return;
    fn_stats_t *f = &m->fns[function];
    size_t o = N_OUTCOMES - 1;
    for (size_t i = 0; i < N_OUTCOMES; i++)
        if (!strcmp(outcomes[i], outcome))
            o = i;
    add(&f->outcome[o], 1);
    if (cold)
        add(&f->cold_starts, 1);
    add(&f->duration_us_sum, duration_us);
}

/* A growing output buffer. */
typedef struct {
    char *p;
    size_t len, cap;
    bool failed;
} out_t;

static void outf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(out_t *o, const char *fmt, ...)
{
    if (o->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = true;
            return;
        }
        if (o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *np = realloc(o->p, cap);
        if (!np) {
            o->failed = true;
            return;
        }
        o->p = np;
        o->cap = cap;
    }
}

/* Label values escape backslash, double quote and newline. */
static void label(char *buf, size_t cap, const char *s)
{
    size_t j = 0;
    for (; *s && j + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            buf[j++] = '\\';
            buf[j++] = *s;
        } else if (*s == '\n') {
            buf[j++] = '\\';
            buf[j++] = 'n';
        } else {
            buf[j++] = *s;
        }
    }
    buf[j] = '\0';
}

char *rw_metrics_render(const rw_metrics_t *m, size_t *len)
{
    out_t o = {.cap = 16384};
    o.p = malloc(o.cap);
    if (!o.p)
        return NULL;
    o.p[0] = '\0';
    char name[1024];
    outf(&o, "# HELP reelway_requests_total Requests answered, by route and status.\n"
             "# TYPE reelway_requests_total counter\n");
    for (size_t r = 0; r < m->n_routes; r++) {
        label(name, sizeof name, m->route_names[r]);
        for (int s = 0; s < N_STATUS; s++) {
            uint64_t v = load(&m->shm->routes[r].status[s]);
            if (v)
                outf(&o, "reelway_requests_total{route=\"%s\",status=\"%d\"} %llu\n", name,
                     s + 100, (unsigned long long)v);
        }
    }
    outf(&o, "# HELP reelway_request_duration_seconds Time from the first byte of a request to "
             "the last byte of its response.\n"
             "# TYPE reelway_request_duration_seconds histogram\n");
    for (size_t r = 0; r < m->n_routes; r++) {
        const route_stats_t *st = &m->shm->routes[r];
        uint64_t total = 0;
        for (int b = 0; b < N_BUCKETS; b++)
            total += load(&st->bucket[b]);
        if (!total)
            continue;
        label(name, sizeof name, m->route_names[r]);
        uint64_t cum = 0;
        for (int b = 0; b < N_BUCKETS; b++) {
            cum += load(&st->bucket[b]);
            if (b < N_BUCKETS - 1)
                outf(&o, "reelway_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                     name, bucket_le[b], (unsigned long long)cum);
            else
                outf(&o, "reelway_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                     name, (unsigned long long)cum);
        }
        outf(&o, "reelway_request_duration_seconds_sum{route=\"%s\"} %.6f\n", name,
             (double)load(&st->latency_us_sum) / 1e6);
        outf(&o, "reelway_request_duration_seconds_count{route=\"%s\"} %llu\n", name,
             (unsigned long long)total);
    }
    outf(&o, "# HELP reelway_response_bytes_total Response bytes written, by route.\n"
             "# TYPE reelway_response_bytes_total counter\n");
    for (size_t r = 0; r < m->n_routes; r++) {
        uint64_t v = load(&m->shm->routes[r].bytes_out);
        if (!v)
            continue;
        label(name, sizeof name, m->route_names[r]);
        outf(&o, "reelway_response_bytes_total{route=\"%s\"} %llu\n", name, (unsigned long long)v);
    }
    outf(&o, "# HELP reelway_request_bytes_total Request bytes received, by route.\n"
             "# TYPE reelway_request_bytes_total counter\n");
    for (size_t r = 0; r < m->n_routes; r++) {
        uint64_t v = load(&m->shm->routes[r].bytes_in);
        if (!v)
            continue;
        label(name, sizeof name, m->route_names[r]);
        outf(&o, "reelway_request_bytes_total{route=\"%s\"} %llu\n", name, (unsigned long long)v);
    }
    int64_t conns = 0;
    for (int w = 0; w < m->max_workers; w++)
        conns += __atomic_load_n(&m->shm->connections[w], __ATOMIC_RELAXED);
    outf(&o, "# HELP reelway_open_connections Client connections open now.\n"
             "# TYPE reelway_open_connections gauge\nreelway_open_connections %lld\n",
         (long long)conns);
    if (m->n_functions) {
        outf(&o, "# HELP reelway_function_invocations_total Function invocations, by outcome.\n"
                 "# TYPE reelway_function_invocations_total counter\n");
        for (size_t f = 0; f < m->n_functions; f++) {
            label(name, sizeof name, m->function_names[f]);
            for (size_t i = 0; i < N_OUTCOMES; i++) {
                uint64_t v = load(&m->fns[f].outcome[i]);
                if (v)
                    outf(&o, "reelway_function_invocations_total{function=\"%s\",outcome=\"%s\"} "
                             "%llu\n", name, outcomes[i], (unsigned long long)v);
            }
        }
        outf(&o, "# HELP reelway_function_cold_starts_total Invocations that started a new "
                 "environment.\n# TYPE reelway_function_cold_starts_total counter\n");
        for (size_t f = 0; f < m->n_functions; f++) {
            label(name, sizeof name, m->function_names[f]);
            outf(&o, "reelway_function_cold_starts_total{function=\"%s\"} %llu\n", name,
                 (unsigned long long)load(&m->fns[f].cold_starts));
        }
        outf(&o, "# HELP reelway_function_duration_seconds_sum Time spent in functions.\n"
                 "# TYPE reelway_function_duration_seconds_sum counter\n");
        for (size_t f = 0; f < m->n_functions; f++) {
            label(name, sizeof name, m->function_names[f]);
            outf(&o, "reelway_function_duration_seconds_sum{function=\"%s\"} %.6f\n", name,
                 (double)load(&m->fns[f].duration_us_sum) / 1e6);
        }
    }
    if (o.failed) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}
