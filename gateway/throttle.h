/* Token buckets shared by every worker process of one node: a fixed-size table
 * in an anonymous shared mapping that the supervisor creates before it forks
 * the workers, so a usage plan's rateLimit/burstLimit holds for the node as a
 * whole, not per worker. Private to the gateway.
 *
 * Each slot has its own process-shared, robust mutex (a worker killed while
 * holding one does not wedge the others); claiming a slot for a new bucket
 * takes one table-wide mutex. A full table reuses first the slots whose bucket
 * has refilled completely (forgetting those changes nothing), then the least
 * recently used one (that bucket restarts full).
 *
 * Threading: rw_throttle_take may be called from any thread of any process
 * that inherited the mapping. */
#ifndef REELWAY_GATEWAY_THROTTLE_H
#define REELWAY_GATEWAY_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rw_throttle_s rw_throttle_t;

/** Default number of buckets (distinct plan + key pairs active at once). */
#define RW_THROTTLE_SLOTS 16384

/**
 * Maps a table of `slots` buckets (rounded up to a power of two; 0 = the
 * default) with MAP_SHARED | MAP_ANONYMOUS. Call it in the supervisor before
 * forking the workers: the children inherit the same memory. Returns NULL
 * with errno set on failure.
 */
rw_throttle_t *rw_throttle_create(size_t slots);

/** Unmaps this process's view of the table (the memory goes when the last
 * process unmaps it or exits). NULL ok. */
void rw_throttle_destroy(rw_throttle_t *t);

/**
 * Takes one token from the bucket named key[0..key_len) (e.g. "plan\x1fkey"),
 * which refills at rate tokens per second up to burst. A new bucket starts
 * full. Returns true if a token was taken; false if the bucket is empty, with
 * *retry_after_s (may be NULL) set to the whole seconds until one is back
 * (at least 1). rate <= 0 means no throttle (always true); burst < 1 counts as 1.
 */
bool rw_throttle_take(rw_throttle_t *t, const char *key, size_t key_len, double rate,
                      double burst, uint32_t *retry_after_s);

/** Number of slots in the table. */
size_t rw_throttle_slots(const rw_throttle_t *t);

#endif
