/* The durable queue behind asynchronous (Event) invocations, bucket
 * notifications and SQS-style queues: one MongoDB collection of messages,
 * claimed under a lease (the visibility timeout), retried with backoff, and
 * moved to a dead-letter collection after their last attempt. Private to the
 * gateway.
 *
 * Delivery is at least once. A message whose consumer dies (kill -9, power
 * loss) is not lost: its lease ends and another consumer, or the same one
 * after a restart, delivers it again. Nothing else is needed at restart:
 * every state a dead consumer can leave a message in carries a time after
 * which any consumer takes it over, and every step below is either won by
 * one actor or idempotent. What happens exactly once is the message's
 * completion: it leaves the queue once, deleted after a successful
 * invocation or moved to the dead letters, never both, and never twice. A
 * function's side effects may still run twice (a consumer that dies after
 * the function finished, before recording it): functions must be idempotent,
 * as on Lambda.
 *
 * Why a log of transitions rather than findAndModify alone: a claim must be a
 * compare-and-set, and FerretDB 1.24 (the local default) runs findAndModify,
 * update and delete as a read followed by a separate write, so two consumers
 * can both "win" one message (the two-consumer test caught it doing so). The
 * one write both servers make atomic is an insert against the unique _id
 * index. So every change of a message's state (a claim, a retry, a release,
 * its completion, its move to the dead letters) is won by inserting the
 * record "<id>#<gen>" into RW_QUEUE_CLAIMS, gen being one past the message's
 * last; only the winner then writes the message. The message's state fields
 * are a cache of its latest record that makes claimable messages easy to
 * find; an actor that loses an insert reads the latest record, the truth even
 * when the cache lags (its writer died between its two writes).
 *
 * Documents of the queue collection (RW_QUEUE_COLLECTION):
 *
 *   _id           string  UUID; also the invocation's request id, the same for
 *                         every retry (as Lambda's)
 *   queue         string  the queue's name ("lambda-async", or "sqs:NAME" for an SQS queue)
 *   function      string  the function that consumes it (asynchronous invocations); absent
 *                         from an SQS message, which its queue's subscribers consume
 *   message_id    string  SQS MessageId when it is not the _id (a message redriven to its
 *                         dead-letter queue keeps the one it was sent with; optional)
 *   payload       string  the event (UTF-8, usually JSON), at most RW_QUEUE_PAYLOAD_MAX
 *   attributes    string  JSON object of message attributes (optional)
 *   trace_id      string  X-Amzn-Trace-Id form (optional)
 *   max_attempts  int32   failures allowed before the dead letters (1 + MaximumRetryAttempts)
 *   created_at    date    when it was enqueued
 *   expires_at    date    created_at + MaximumEventAgeInSeconds: older messages are
 *                         dead-lettered without being delivered
 *   visibility_ms int64   the lease a delivery gets (optional; the queue's VisibilityTimeout)
 *   dead_letter   string  the DeadLetterQueue/OnFailure name kept on its dead letter (optional)
 *  and the cache of its latest transition:
 *   state         string  "ready"    waiting; claimable once visible_at has passed
 *                         "inflight" delivered to `owner` until visible_at (the lease's end)
 *                         "dead"     being moved to the dead letters (finished by others
 *                                    once visible_at passes, should the mover die)
 *   gen           int64   transitions so far
 *   visible_at    date
 *   attempts      int32   deliveries so far (a throttled one is given back)
 *   failures      int32   deliveries that ended in a function error
 *   owner         string  the consumer holding it ("inflight")
 *   claimed_at    date
 *   first_claimed_at date  its first delivery (SQS's ApproximateFirstReceiveTimestamp)
 *   last_error    string  the last failure's error JSON ({"errorType":..,"errorMessage":..})
 *   last_error_at date
 *   dead_reason   string  "RetriesExhausted", "EventAgeExceeded", "DeliveryLimitExceeded",
 *                         "MaxReceiveCountExceeded" or "RetentionPeriodExceeded"
 *
 * Documents of RW_QUEUE_CLAIMS, one per transition: _id "<id>#<gen>", msg (the
 * message id), gen (int64), kind ("claim", "retry", "release", "done",
 * "dead"), owner, token (the writer's, so a retried insert whose reply was
 * lost is known as its own), at, until (dates: when it was written and when
 * the message may be claimed next), attempts, failures, and last_error and
 * reason when they apply; a "dead" record also holds forward (the messages
 * the dead one leaves in other queues, whole: see below) and letter (false
 * when no dead letter is kept: an SQS redrive). A message's records are
 * deleted right after it; those a dead actor left behind are swept after an
 * hour. A claim record's _id is also the delivery's receipt.
 *
 * Documents of the dead letters (RW_QUEUE_DEAD_LETTERS) have the message's _id
 * and fields (queue, function, payload, attributes, trace_id, max_attempts,
 * created_at, expires_at, visibility_ms, dead_letter) with its final
 * attempts, failures, last_error, last_error_at and dead_reason, plus dead_at
 * (date). The move is crash-safe: the "dead" record comes first, then the
 * dead letter is upserted by _id, then the forwarded messages are inserted
 * (ids derived from the message's, so a second insert is refused), then the
 * message and its records are deleted; whoever finds a "dead" record later
 * repeats the last three steps, which changes nothing when they were done.
 * A forwarded message is delivered at least once: should its mover die after
 * inserting it and before deleting the dead message, and a consumer take and
 * finish it before another actor repeats the move, it is inserted again.
 *
 * Forwards (rw_queue_forward_t) are how a message that dies reaches another
 * queue: an SQS queue's RedrivePolicy moves it to the dead-letter queue as a
 * message of that queue (no dead letter is kept: it lives on there), and an
 * asynchronous invocation's DestinationConfig.OnFailure or DeadLetterQueue
 * receives Lambda's records of the failure, besides the dead letter.
 *
 * Two kinds of targets consume messages. A function target claims the
 * messages of its function (asynchronous invocations) one at a time and
 * follows Lambda's asynchronous rules: a failure is retried with backoff
 * until max_attempts. A queue target claims the messages of its SQS queue in
 * batches for its function (an event source mapping) and follows SQS's: a
 * failed message is visible again its queue's VisibilityTimeout after it was
 * received; its receive count (attempts) reaching the RedrivePolicy's
 * maxReceiveCount moves it to the dead-letter queue; without a redrive
 * policy it is retried until its retention period ends.
 *
 * Indexes: {state: 1, visible_at: 1} (claims) and {queue: 1} on the queue;
 * {msg: 1, gen: -1} and {at: 1} on the records.
 *
 * Threading: every function here runs on the loop thread that owns the object
 * unless it says "blocking"; the database is only touched on libuv's
 * threadpool, through the mongoc_client_pool_t given. Times are the wall
 * clock of the machine that writes them: nodes sharing a database must keep
 * their clocks in step (NTP) or a lease may end early on a node whose clock
 * runs ahead.
 */
#ifndef REELWAY_GATEWAY_QUEUE_H
#define REELWAY_GATEWAY_QUEUE_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/** The collection holding every queue's messages. */
#define RW_QUEUE_COLLECTION "rw_queue"
/** The collection of transition records (see above). */
#define RW_QUEUE_CLAIMS "rw_queue_claims"
/** The collection of dead letters. */
#define RW_QUEUE_DEAD_LETTERS "rw_dead_letters"
/** Lambda's payload limit for asynchronous invocations (1 MB). */
#define RW_QUEUE_PAYLOAD_MAX (1024 * 1024)
/** Bytes of a message id: a UUID and its NUL. */
#define RW_QUEUE_ID_LEN 37
/** A failure's error JSON longer than this is replaced by a summary. */
#define RW_QUEUE_ERROR_MAX (64 * 1024)
/** Lambda's default MaximumEventAgeInSeconds (6 hours), in ms. */
#define RW_QUEUE_MAX_AGE_DEFAULT_MS (6 * 3600 * 1000LL)

/** Where the queue lives. Strings are copied. */
typedef struct rw_queue_opts_s {
    const char *db_name;      /**< NULL: the URI's database, else "reelway" */
    const char *collection;   /**< NULL: RW_QUEUE_COLLECTION */
    const char *claims;       /**< NULL: RW_QUEUE_CLAIMS */
    const char *dead_letters; /**< NULL: RW_QUEUE_DEAD_LETTERS */
} rw_queue_opts_t;

/** The name of the queue of asynchronous invocations. */
#define RW_QUEUE_ASYNC "lambda-async"
/** The prefix of an SQS queue's name in the collection ("sqs:" QueueName). */
#define RW_QUEUE_SQS_PREFIX "sqs:"

/** A message to enqueue. Everything is borrowed for the duration of the call. */
typedef struct rw_queue_msg_s {
    const char *queue;    /**< required */
    const char *function; /**< the function that consumes it; NULL for a message of an SQS
                               queue ("sqs:NAME"), which the queue targets of its queue
                               consume (required otherwise) */
    const char *payload;  /**< UTF-8, len bytes (not NUL-terminated), at most 1 MB */
    size_t len;
    const char *attributes;  /**< JSON object text, or NULL */
    const char *trace_id;    /**< or NULL */
    const char *id;          /**< a caller-chosen id (idempotency key), or NULL: a fresh UUID */
    int max_attempts;        /**< 1 + MaximumRetryAttempts; 0: 3 (Lambda's default) */
    int64_t max_age_ms;      /**< MaximumEventAgeInSeconds * 1000; 0: 6 hours */
    int64_t visibility_ms;   /**< the queue's VisibilityTimeout, or 0 (the consumer decides) */
    int64_t delay_ms;        /**< first delivery no sooner than this (DelaySeconds), or 0 */
    const char *dead_letter; /**< DeadLetterQueue/OnFailure name kept on the dead letter, or NULL */
} rw_queue_msg_t;

/* ---- producer ------------------------------------------------------------- */

typedef struct rw_queue_s rw_queue_t;

/**
 * Called on the loop thread when an enqueue ends. status is 0 once the write
 * is acknowledged by a majority (the gateway may answer 202 then, not
 * before), UV_EEXIST when a message with the caller's id already exists, or
 * RW_EDB; why (NULL on success) says more. id is the message's id (the
 * request id). Both strings are valid during the call only.
 */
typedef void (*rw_queue_enqueue_cb)(void *arg, int status, const char *id, const char *why);

/**
 * Creates a producer on loop writing through pool (borrowed: it must outlive
 * the producer; used only on the threadpool). Returns NULL when out of memory.
 */
rw_queue_t *rw_queue_new(uv_loop_t *loop, mongoc_client_pool_t *pool, const rw_queue_opts_t *opts);

/**
 * Enqueues msg (copied at once) on the threadpool; cb runs once on the loop.
 * Returns 0, or without calling cb: RW_ELIMIT (payload over 1 MB), RW_EPARSE
 * (a string is not UTF-8 or holds a NUL, a name is over 120 bytes), UV_EINVAL
 * (queue or function missing, a negative number, an id over 128 bytes),
 * UV_ECANCELED (closing), UV_ENOMEM. The message is claimable as soon as the
 * write lands; cb may run after a consumer already has it.
 */
int rw_queue_enqueue(rw_queue_t *q, const rw_queue_msg_t *msg, rw_queue_enqueue_cb cb, void *arg);

/**
 * Waits for the enqueues in flight (their callbacks run), frees the producer,
 * then calls done (may be NULL). New enqueues fail with UV_ECANCELED.
 */
void rw_queue_close(rw_queue_t *q, void (*done)(void *arg), void *arg);

/**
 * Blocking enqueue through client (the CLI's `reelway invoke --async`): same
 * checks and document as rw_queue_enqueue. Writes the id to id_out and returns
 * 0, or a negative code with the reason in why. Any thread; never on a loop.
 */
int rw_queue_enqueue_sync(mongoc_client_t *client, const rw_queue_opts_t *opts,
                          const rw_queue_msg_t *msg, char id_out[RW_QUEUE_ID_LEN], char *why,
                          size_t whylen);

/**
 * Blocking: makes a message that was enqueued with a delay visible now, unless
 * a consumer has already touched it (a held message, released: the scheduler
 * holds a firing until it has recorded it). Releasing twice, or a message that
 * is gone, changes nothing. Returns 0 or RW_EDB with why. Any thread.
 */
int rw_queue_release_held_sync(mongoc_client_t *client, const rw_queue_opts_t *opts,
                               const char *id, char *why, size_t whylen);

/**
 * Writes the id derived from id and what (a UUID-shaped SHA-256 digest): the
 * same inputs always give the same id, so that a message enqueued twice under
 * it is refused the second time. Any thread.
 */
void rw_queue_derive_id(const char *id, const char *what, char out[RW_QUEUE_ID_LEN]);

/**
 * Blocking: creates the queue's indexes if they are missing (idempotent; a
 * consumer also does it when it starts). Returns 0 or RW_EDB with why.
 */
int rw_queue_create_indexes(mongoc_client_t *client, const rw_queue_opts_t *opts, char *why,
                            size_t whylen);

/* ---- consumer ------------------------------------------------------------- */

typedef struct rw_queue_consumer_s rw_queue_consumer_t;

/** How a delivery ended, told by the invoker through rw_queue_delivery_done. */
typedef enum rw_queue_outcome_e {
    RW_QUEUE_OK,     /**< the function succeeded: the message is deleted */
    RW_QUEUE_FAILED, /**< function error, timeout, crash, init error: retried with
                          backoff while failures < max_attempts, then dead-lettered */
    RW_QUEUE_RELEASE /**< not run (throttled, shutting down): visible again after
                          release_delay_ms, the attempt is not counted */
} rw_queue_outcome_t;

/** A claimed message handed to the invoker. Valid until rw_queue_delivery_done. */
typedef struct rw_queue_delivery_s {
    const char *id; /**< the message id: use it as the invocation's request id */
    const char *message_id; /**< SQS MessageId: the id, or the one a redriven message kept */
    const char *receipt;    /**< this delivery's receipt (its claim record's id) */
    const char *queue;
    const char *function;   /**< the function to invoke (the target's) */
    const char *payload; /**< len bytes, NUL-terminated */
    size_t len;
    const char *attributes; /**< JSON object text, or NULL */
    const char *trace_id;   /**< or NULL */
    int attempt;            /**< 1 for the first delivery (SQS's ApproximateReceiveCount) */
    int64_t created_at_ms;  /**< enqueue time, ms since the epoch (SentTimestamp) */
    int64_t first_received_ms; /**< its first delivery (ApproximateFirstReceiveTimestamp) */
    int64_t lease_end_ms;   /**< the lease ends then (ms since the epoch): finish before */
    void *data;             /**< the invoker's */
} rw_queue_delivery_t;

/**
 * The invoker (the lead's glue to the environment manager): starts running
 * d->function with d->payload and returns 0, then calls rw_queue_delivery_done
 * exactly once on the loop thread, possibly before returning. It must end the
 * invocation before d->lease_end_ms: the lease is the function's timeout plus
 * a margin, so killing the function at its timeout is enough. A negative
 * return means it did not start and done must not be called: UV_EBUSY
 * (throttled) and UV_ECANCELED (closing) release the message, any other code
 * counts as a failed attempt ("Reelway.InvokeError").
 */
typedef int (*rw_queue_invoke_cb)(void *arg, rw_queue_delivery_t *d);

/**
 * The invoker of queue targets: starts running function with the batch ds[0..n)
 * (n >= 1, in the order claimed) and returns 0, then ends every delivery with
 * rw_queue_delivery_done, each exactly once, on the loop thread, in any order,
 * possibly before returning. A negative return means nothing started and no
 * delivery may be ended by the invoker: UV_EBUSY and UV_ECANCELED release the
 * batch, any other code fails it. The array is valid during the call only.
 */
typedef int (*rw_queue_invoke_batch_cb)(void *arg, const char *function,
                                        rw_queue_delivery_t *const *ds, size_t n);

/** What a forward leaves in its destination queue. */
typedef enum rw_queue_forward_kind_e {
    RW_QUEUE_FORWARD_REDRIVE,    /**< SQS RedrivePolicy: the message itself (body, attributes,
                                      MessageId, SentTimestamp kept); no dead letter is kept */
    RW_QUEUE_FORWARD_ON_FAILURE, /**< Lambda's DestinationConfig.OnFailure: an invocation
                                      record (version 1.0: requestContext, requestPayload,
                                      responseContext, responsePayload) */
    RW_QUEUE_FORWARD_DLQ         /**< Lambda's DeadLetterQueue: the event as it was, with the
                                      RequestID, ErrorCode and ErrorMessage attributes */
} rw_queue_forward_kind_t;

/** Where a target's dead messages also go. Strings are copied. */
typedef struct rw_queue_forward_s {
    rw_queue_forward_kind_t kind;
    const char *queue;        /**< the destination ("sqs:NAME") */
    int64_t max_age_ms;       /**< its MessageRetentionPeriod (0: 4 days) */
    int64_t delay_ms;         /**< its DelaySeconds (ON_FAILURE and DLQ only, as on AWS) */
    const char *function_arn; /**< ON_FAILURE: requestContext.functionArn (without $LATEST) */
} rw_queue_forward_t;

/** What this consumer serves: a function's asynchronous invocations, or an SQS
 *  queue for a function (an event source mapping). Strings are copied. */
typedef struct rw_queue_target_s {
    const char *function;  /**< the function invoked; a function target also claims by it */
    const char *queue;     /**< NULL: a function target; else a queue target of this queue
                                ("sqs:NAME"), whose batches go to invoke_batch */
    int concurrency;       /**< deliveries of it in flight here at once (>= 1); for a
                                queue target, batches */
    int64_t visibility_ms; /**< lease: its Timeout plus a margin (and the batch window).
                                A message's own visibility_ms wins when longer; when
                                neither is set, the consumer's default. */
    /* queue targets */
    int batch_size;             /**< 1..10000 messages per invocation */
    uint64_t batch_window_ms;   /**< wait up to this long to fill a batch (0: invoke with
                                     what one claim brought) */
    size_t batch_max_bytes;     /**< payload bytes per batch (0: no limit); a message that
                                     would pass it starts the next batch */
    int64_t sqs_visibility_ms;  /**< the queue's VisibilityTimeout: a failed message is
                                     visible again this long after its receive */
    int max_receives;           /**< RedrivePolicy maxReceiveCount (0: none) */
    /* both */
    const rw_queue_forward_t *forwards; /**< where its dead messages also go (a queue target:
                                             its redrive, used for MaxReceiveCountExceeded) */
    size_t n_forwards;
} rw_queue_target_t;

typedef struct rw_queue_consumer_opts_s {
    const char *owner;                /**< written on claimed messages; NULL: "HOST:PID" */
    const rw_queue_target_t *targets; /**< copied; messages for other functions are left alone */
    size_t n_targets;
    int max_inflight;           /**< deliveries in flight in total; 0: sum of concurrencies */
    uint64_t poll_min_ms;       /**< first wait after an empty poll (50) */
    uint64_t poll_max_ms;       /**< the wait doubles up to this (2000) */
    uint64_t retry_base_ms;     /**< failure n waits base * 2^(n-1): 1 min, 2 min (60000) */
    uint64_t release_delay_ms;  /**< a released message waits this (1000) */
    int64_t visibility_ms;      /**< default lease (960000: Lambda's 900 s maximum + 1 min) */
    int max_lost_deliveries;    /**< deliveries whose consumer vanished before the message
                                     is dead-lettered as a poison message (3) */
    uint64_t sweep_interval_ms; /**< how often old records are swept (3600000) */
    rw_queue_invoke_cb invoke;  /**< required with function targets */
    rw_queue_invoke_batch_cb invoke_batch; /**< required with queue targets */
    void *invoke_arg;           /**< for both */
} rw_queue_consumer_opts_t;

/**
 * Creates a consumer on loop and starts it: it creates the indexes, then
 * claims messages for its targets (one at a time for a function target, up
 * to the batch's room for a queue target), never more than their
 * concurrency, waiting with backoff while the queue is empty. pool is
 * borrowed (it must outlive the consumer). Returns 0 and the consumer in
 * *out, or RW_ECONFIG (no targets, a missing invoker, a concurrency or batch
 * size out of range) or UV_ENOMEM without starting anything.
 */
int rw_queue_consumer_new(uv_loop_t *loop, mongoc_client_pool_t *pool, const rw_queue_opts_t *qopts,
                          const rw_queue_consumer_opts_t *opts, rw_queue_consumer_t **out);

/** Tells the consumer new messages may be waiting (after an enqueue): it polls now. */
void rw_queue_consumer_kick(rw_queue_consumer_t *c);

/** Deliveries this consumer has in flight (claimed, not yet recorded as done). */
int rw_queue_consumer_inflight(const rw_queue_consumer_t *c);

/** What a consumer has done since it started (for metrics and tests). */
typedef struct rw_queue_stats_s {
    uint64_t polls;         /**< claim attempts sent to the database */
    uint64_t empty_polls;   /**< ... that found nothing to claim */
    uint64_t delivered;     /**< messages handed to the invoker */
    uint64_t succeeded;     /**< outcomes recorded: deleted after success */
    uint64_t retried;       /**< failures made ready again for a later attempt */
    uint64_t released;      /**< deliveries given back unrun (throttled, closing) */
    uint64_t dead_lettered; /**< messages this consumer moved to the dead letters */
    uint64_t lease_lost;    /**< outcomes not recorded: the lease had passed to another */
    uint64_t batches;       /**< batches handed to invoke_batch */
    uint64_t db_errors;     /**< database errors (each is retried or left to the lease) */
} rw_queue_stats_t;

/** Copies the consumer's counters to out. */
void rw_queue_consumer_stats(const rw_queue_consumer_t *c, rw_queue_stats_t *out);

/**
 * Stops claiming, releases the batches still gathering, waits for the
 * deliveries in flight to end (their outcome is recorded; the invoker must
 * end them, e.g. by closing the environment manager, which fails them as
 * shutdown: RW_QUEUE_RELEASE), closes its handles, frees the consumer, then
 * calls done (may be NULL).
 */
void rw_queue_consumer_close(rw_queue_consumer_t *c, void (*done)(void *arg), void *arg);

/**
 * The invoker for the environment manager (gateway/functions.h): pass it as
 * opts.invoke with the rw_fnmgr_t as opts.invoke_arg. It invokes d->function
 * with d->id as the request id (the same on every retry) and d->trace_id;
 * OK succeeds, a cancelled or shut-down invocation is released, and every
 * other status (function error, timeout, crash, init error, oversized
 * response) is a failed attempt carrying the manager's error JSON. Throttled
 * (UV_EBUSY) releases the message; an unknown function fails the attempt.
 */
int rw_queue_invoke_function(void *fnmgr, rw_queue_delivery_t *d);

/**
 * Ends a delivery (loop thread, exactly once). error_json (len bytes, copied)
 * describes a failure; NULL for OK and RELEASE, or a generic error is kept.
 * d must not be used afterwards.
 */
void rw_queue_delivery_done(rw_queue_delivery_t *d, rw_queue_outcome_t outcome,
                            const char *error_json, size_t len);

#endif
