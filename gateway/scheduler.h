/* The scheduler: fires the template's Schedule events (rate and cron, as
 * EventBridge reads them) as asynchronous invocations through the durable
 * queue, once per due time across every node sharing the database. Private
 * to the gateway.
 *
 * Election. Every worker of every node runs a scheduler; the one holding the
 * scheduler lease fires. The lease is a chain of documents in RW_SCHEDULE_LEASES,
 * "scheduler#<n>" = {n, owner, at, expires_at}: the holder of link n renews by
 * inserting link n+1 before expires_at; anyone else takes over by inserting
 * link n+1 once link n has expired. Both are inserts against the unique _id,
 * the one write FerretDB 1.24 makes atomic, so exactly one contender wins each
 * link; a holder acts only until a margin before its link expires, so with
 * clocks in step (NTP) two holders never overlap. A node that dies (kill -9)
 * stops renewing and another takes over when its link expires; a node that
 * stops cleanly ends its link at once.
 *
 * Exactly once per due time. The lease only saves work: what makes a firing
 * happen once is its claim, the document "<schedule>#<due>" of
 * RW_SCHEDULE_FIRINGS, inserted before anything else. Its winner then
 * (1) enqueues the invocation held back (delayed by an hour) under the
 * message id the claim names, (2) marks the claim "enqueued", (3) releases
 * the message and (4) marks the claim "released". A holder that dies midway
 * leaves a claim in "claimed" or "enqueued", which the next holder finishes:
 * enqueueing under the same id again is refused, releasing twice changes
 * nothing, and the message cannot run (and be deleted, which would let a
 * second enqueue through) before its claim says "enqueued". So each due time
 * fires once, across nodes, crashes and restarts.
 *
 * Missed due times. The firings of a schedule keep its watermark: the latest
 * due time claimed (fired, or skipped while the schedule was disabled). Due
 * times after it fire in order while one worker holds the lease; those that
 * passed while no one held it (every node down, or a dead holder's lease
 * running out) fire once, as the latest of them, when a worker takes the
 * lease: not in a burst. A schedule seen for the first time starts from the
 * next due time, as a new EventBridge rule does.
 *
 * Times. A rate(N unit) is due at the multiples of its period since the epoch
 * (a rate(1 hour) on the hour; EventBridge counts from the rule's creation
 * instead); a cron at the matching minutes, UTC. time_scale is for tests
 * only: it divides every rate's period (rate(1 minute) at 60 is due every
 * second); crons are not scaled.
 *
 * Threading: the functions here run on the loop thread; the database is
 * touched on the threadpool, one job at a time.
 */
#ifndef REELWAY_GATEWAY_SCHEDULER_H
#define REELWAY_GATEWAY_SCHEDULER_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "queue.h"

/** The lease chain's collection. */
#define RW_SCHEDULE_LEASES "rw_schedule_leases"
/** The firings' collection (claims and watermarks). */
#define RW_SCHEDULE_FIRINGS "rw_schedule_firings"
/** A firing's message is held back this long until its claim records it. */
#define RW_SCHEDULE_HOLD_MS (3600 * 1000LL)

/** One schedule. Strings are copied. */
typedef struct rw_schedule_spec_s {
    const char *name;       /**< unique: it keys the firings */
    const char *function;   /**< the function invoked (asynchronously) */
    const char *expression; /**< as written, for logs */
    bool is_rate;
    int64_t rate_s;           /**< rate: the period */
    const char *const *cron;  /**< cron: its six fields */
    const char *input;        /**< the event (JSON text), or NULL: EventBridge's scheduled event */
    bool enabled;
    int max_attempts;  /**< the invocation's: 1 + MaximumRetryAttempts */
    int64_t max_age_ms; /**< MaximumEventAgeInSeconds * 1000 */
    const char *dead_letter; /**< kept on its dead letter, or NULL */
} rw_schedule_spec_t;

typedef struct rw_scheduler_opts_s {
    const rw_schedule_spec_t *schedules; /**< copied */
    size_t n_schedules;
    const char *owner;      /**< this worker in the lease ("HOST:PID:wN") */
    const char *region;     /**< of the scheduled event and the rule ARN */
    const char *account_id;
    uint64_t lease_ms;      /**< a lease link lasts this long (15000); renewed at a third */
    int time_scale;         /**< tests only: rates run this many times faster (1) */
    const char *leases_collection; /**< tests only: NULL = RW_SCHEDULE_LEASES. Schedulers
                                        given different ones each hold a lease of their own,
                                        so they all race for every due time: what the claims
                                        alone must settle */
    void (*on_fired)(void *arg); /**< loop thread, after a tick enqueued firings (or NULL) */
    void *arg;
} rw_scheduler_opts_t;

typedef struct rw_scheduler_s rw_scheduler_t;

/**
 * Creates a scheduler on loop and starts it; pool and qopts are borrowed (the
 * pool must outlive it). Returns 0 and the scheduler in *out, or RW_ECONFIG
 * (a cron that does not compile, a name or function missing) or UV_ENOMEM,
 * with the reason in why, without starting anything.
 */
int rw_scheduler_new(uv_loop_t *loop, mongoc_client_pool_t *pool, const rw_queue_opts_t *qopts,
                     const rw_scheduler_opts_t *opts, rw_scheduler_t **out, char *why,
                     size_t whylen);

/** What a scheduler has done (for tests and metrics). */
typedef struct rw_scheduler_stats_s {
    uint64_t ticks;      /**< threadpool jobs run */
    uint64_t leads;      /**< leases taken (not renewals) */
    uint64_t fired;      /**< due times this worker fired */
    uint64_t recovered;  /**< firings a dead holder left, finished here */
    uint64_t db_errors;
    bool leader;         /**< holds the lease after its last tick */
} rw_scheduler_stats_t;

/** Copies the scheduler's counters to out. */
void rw_scheduler_stats(const rw_scheduler_t *s, rw_scheduler_stats_t *out);

/**
 * Stops: waits for its job, ends its lease link when it holds one (so that
 * another worker takes over at once), closes its timer, frees it, then calls
 * done (may be NULL).
 */
void rw_scheduler_close(rw_scheduler_t *s, void (*done)(void *arg), void *arg);

#endif
