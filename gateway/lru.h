/* A bounded cache keyed by 32-byte digests (SHA-256 of a token or an API key),
 * with a deadline per entry and least-recently-used eviction. Private to the
 * gateway; used by the JWT authorizer and the API-key check.
 *
 * Threading: not synchronised; each cache belongs to one loop thread. */
#ifndef REELWAY_GATEWAY_LRU_H
#define REELWAY_GATEWAY_LRU_H

#include <stddef.h>
#include <stdint.h>

#define RW_LRU_KEY_LEN 32

typedef struct rw_lru_s rw_lru_t;

/**
 * Creates a cache holding at most capacity entries (at least 1). free_value
 * (may be NULL) releases a value when its entry is removed, replaced, evicted,
 * expired or the cache is freed. Returns NULL on out of memory.
 */
rw_lru_t *rw__lru_new(size_t capacity, void (*free_value)(void *value));

/** Frees the cache and every value in it. NULL ok. */
void rw__lru_free(rw_lru_t *lru);

/**
 * The value for key if present and now_ms < its deadline (the entry becomes
 * the most recently used), else NULL (an expired entry is removed on the way).
 * The value is borrowed: it stays valid until the entry is removed.
 */
void *rw__lru_get(rw_lru_t *lru, const uint8_t key[RW_LRU_KEY_LEN], uint64_t now_ms);

/**
 * Inserts or replaces the entry for key; the cache owns value from now on
 * (the entries are preallocated, so this cannot fail). When full, the least
 * recently used entry is evicted. Returns 0.
 */
int rw__lru_put(rw_lru_t *lru, const uint8_t key[RW_LRU_KEY_LEN], void *value,
                uint64_t deadline_ms);

/** Removes the entry for key, if any. */
void rw__lru_remove(rw_lru_t *lru, const uint8_t key[RW_LRU_KEY_LEN]);

/** Removes every entry. */
void rw__lru_clear(rw_lru_t *lru);

/** Number of entries (expired ones included until they are looked at). */
size_t rw__lru_size(const rw_lru_t *lru);

#endif
