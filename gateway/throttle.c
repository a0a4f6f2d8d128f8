/* Node-wide token buckets in shared memory. The table is open-addressed by a
 * 128-bit fingerprint of the bucket's name; a lookup scans a short probe
 * window without locks (the fingerprints are atomics), then takes the slot's
 * mutex and checks again, so a slot recycled meanwhile is never mistaken. */
#include "throttle.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PROBES 16
#define MAGIC 0x72777468726f746cULL /* "rwthrotl" */

typedef struct slot_s {
    pthread_mutex_t lock;
    _Atomic uint64_t fp0, fp1;      /* the bucket's name; (0, 0) = never used */
    _Atomic uint64_t last_used_ns;  /* for least-recently-used reuse */
    _Atomic uint64_t full_at_ns;    /* from then on the bucket is full: reusable freely */
    double tokens;                  /* under lock */
    uint64_t last_ns;               /* under lock: when tokens was computed */
} slot_t;

struct rw_throttle_s {
    uint64_t magic;
    size_t nslots;
    size_t map_len;
    pthread_mutex_t insert_lock; /* claiming a slot for a new bucket */
    slot_t slots[];
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* A robust mutex whose owner died is handed over "inconsistent": the bucket
 * it guarded is at worst a token off, so mark it consistent and go on. */
static void lock(pthread_mutex_t *m)
{
    if (pthread_mutex_lock(m) == EOWNERDEAD)
        pthread_mutex_consistent(m);
}

static int init_mutex(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc == 0)
        rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

rw_throttle_t *rw_throttle_create(size_t slots)
{
    size_t n = 1;
    size_t want = slots ? slots : RW_THROTTLE_SLOTS;
    while (n < want && n < ((size_t)1 << 30))
        n <<= 1;
    if (n < PROBES)
        n = PROBES;
    size_t len = sizeof(rw_throttle_t) + n * sizeof(slot_t);
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return NULL;
    rw_throttle_t *t = mem; /* zero-filled by the kernel */
    t->magic = MAGIC;
    t->nslots = n;
    t->map_len = len;
    int rc = init_mutex(&t->insert_lock);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = init_mutex(&t->slots[i].lock);
    if (rc != 0) {
        munmap(mem, len);
        errno = rc;
        return NULL;
    }
    return t;
}

void rw_throttle_destroy(rw_throttle_t *t)
{
    if (t && t->magic == MAGIC)
        munmap(t, t->map_len);
}

size_t rw_throttle_slots(const rw_throttle_t *t)
{
    return t->nslots;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Two independent 64-bit FNV-1a passes, finalised: the names are ids the
 * gateway chose (plan and key ids), not attacker input, so 128 bits of a
 * fast hash are plenty to keep buckets apart. */
static void fingerprint(const char *key, size_t len, uint64_t fp[2])
{
    uint64_t a = 0xcbf29ce484222325ULL, b = 0x84222325cbf29ce4ULL;
    for (size_t i = 0; i < len; i++) {
        a = (a ^ (unsigned char)key[i]) * 0x100000001b3ULL;
        b = (b ^ (unsigned char)key[i]) * 0x100000001b3ULL + 0x9e3779b97f4a7c15ULL;
    }
    fp[0] = mix(a ^ len);
    fp[1] = mix(b + len);
    if (fp[0] == 0 && fp[1] == 0)
        fp[1] = 1;
}

static bool matches(slot_t *s, const uint64_t fp[2])
{
    return atomic_load_explicit(&s->fp0, memory_order_acquire) == fp[0] &&
           atomic_load_explicit(&s->fp1, memory_order_acquire) == fp[1];
}

/* The bucket arithmetic, under the slot's lock. */
static bool take_locked(slot_t *s, double rate, double burst, uint64_t now, uint32_t *retry)
{
    double elapsed = now > s->last_ns ? (double)(now - s->last_ns) / 1e9 : 0.0;
    double tokens = s->tokens + rate * elapsed;
    if (tokens > burst)
        tokens = burst;
    bool ok = tokens >= 1.0;
    if (ok)
        tokens -= 1.0;
    else if (retry) {
        double wait = ceil((1.0 - tokens) / rate);
        *retry = wait < 1.0 ? 1 : wait > 86400.0 ? 86400 : (uint32_t)wait;
    }
    s->tokens = tokens;
    s->last_ns = now;
    atomic_store_explicit(&s->full_at_ns, now + (uint64_t)((burst - tokens) / rate * 1e9),
                          memory_order_relaxed);
    atomic_store_explicit(&s->last_used_ns, now, memory_order_relaxed);
    return ok;
}

bool rw_throttle_take(rw_throttle_t *t, const char *key, size_t key_len, double rate,
                      double burst, uint32_t *retry_after_s)
{
    if (!(rate > 0))
        return true;
    if (burst < 1.0)
        burst = 1.0;
    uint64_t fp[2];
    fingerprint(key, key_len, fp);
    size_t mask = t->nslots - 1, start = (size_t)fp[0] & mask;
    uint64_t now = mono_ns();

    for (size_t i = 0; i < PROBES; i++) {
        slot_t *s = &t->slots[(start + i) & mask];
        if (!matches(s, fp))
            continue;
        lock(&s->lock);
        if (matches(s, fp)) {
            bool ok = take_locked(s, rate, burst, now, retry_after_s);
            pthread_mutex_unlock(&s->lock);
            return ok;
        }
        pthread_mutex_unlock(&s->lock);
        break; /* recycled under us: claim a slot below */
    }

    /* Not found: claim a slot. One claimer at a time, so two processes
     * cannot give the same bucket two slots. */
    lock(&t->insert_lock);
    slot_t *victim = NULL, *reusable = NULL, *oldest = NULL;
    uint64_t oldest_ns = UINT64_MAX;
    for (size_t i = 0; i < PROBES; i++) {
        slot_t *s = &t->slots[(start + i) & mask];
        if (matches(s, fp)) {
            victim = s; /* another process claimed it meanwhile */
            break;
        }
        uint64_t f0 = atomic_load_explicit(&s->fp0, memory_order_acquire);
        uint64_t f1 = atomic_load_explicit(&s->fp1, memory_order_acquire);
        if (f0 == 0 && f1 == 0) {
            if (!victim)
                victim = s;
            continue;
        }
        if (!reusable && atomic_load_explicit(&s->full_at_ns, memory_order_relaxed) <= now)
            reusable = s;
        uint64_t used = atomic_load_explicit(&s->last_used_ns, memory_order_relaxed);
        if (used < oldest_ns) {
            oldest_ns = used;
            oldest = s;
        }
    }
    if (!victim)
        victim = reusable ? reusable : oldest;
    lock(&victim->lock);
    if (!matches(victim, fp)) {
        atomic_store_explicit(&victim->fp0, fp[0], memory_order_release);
        atomic_store_explicit(&victim->fp1, fp[1], memory_order_release);
        victim->tokens = burst;
        victim->last_ns = now;
    }
    pthread_mutex_unlock(&t->insert_lock);
    bool ok = take_locked(victim, rate, burst, now, retry_after_s);
    pthread_mutex_unlock(&victim->lock);
    return ok;
}
