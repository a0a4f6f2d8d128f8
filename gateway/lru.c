/* A fixed-capacity cache keyed by digests: one allocation for the entries, a
 * chained hash table of indices, and an intrusive recency list, so a lookup is
 * a hash, a short chain walk and two pointer swaps. */
#include "lru.h"

#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX

typedef struct entry_s {
    uint8_t key[RW_LRU_KEY_LEN];
    void *value;
    uint64_t deadline_ms;
    uint32_t prev, next; /* recency list (most recent at head); free list uses next */
    uint32_t chain;      /* next entry in the same hash bucket */
    uint32_t bucket;
} entry_t;

struct rw_lru_s {
    entry_t *entries;
    uint32_t *buckets;
    size_t capacity, nbuckets, size;
    uint32_t head, tail, free_list;
    void (*free_value)(void *);
};

/* Keys are digests of untrusted input: already uniformly spread, and an
 * attacker cannot choose them, so their first bytes make a fine hash. */
static size_t bucket_of(const rw_lru_t *lru, const uint8_t *key)
{
    uint64_t h;
    memcpy(&h, key, sizeof h);
    return (size_t)(h & (lru->nbuckets - 1));
}

rw_lru_t *rw__lru_new(size_t capacity, void (*free_value)(void *))
{
    if (capacity == 0)
        capacity = 1;
    if (capacity >= NIL / 2)
        return NULL;
    rw_lru_t *lru = calloc(1, sizeof *lru);
    if (!lru)
        return NULL;
    lru->capacity = capacity;
    lru->nbuckets = 1;
    while (lru->nbuckets < capacity * 2)
        lru->nbuckets <<= 1;
    lru->entries = calloc(capacity, sizeof *lru->entries);
    lru->buckets = malloc(lru->nbuckets * sizeof *lru->buckets);
    if (!lru->entries || !lru->buckets) {
        free(lru->entries);
        free(lru->buckets);
        free(lru);
        return NULL;
    }
    lru->free_value = free_value;
    lru->head = lru->tail = NIL; /* an empty list for clear() to walk */
    rw__lru_clear(lru);
    return lru;
}

static void list_unlink(rw_lru_t *lru, uint32_t i)
{
    entry_t *e = &lru->entries[i];
    if (e->prev != NIL)
        lru->entries[e->prev].next = e->next;
    else
        lru->head = e->next;
    if (e->next != NIL)
        lru->entries[e->next].prev = e->prev;
    else
        lru->tail = e->prev;
    e->prev = e->next = NIL;
}

static void list_push_front(rw_lru_t *lru, uint32_t i)
{
    entry_t *e = &lru->entries[i];
    e->prev = NIL;
    e->next = lru->head;
    if (lru->head != NIL)
        lru->entries[lru->head].prev = i;
    lru->head = i;
    if (lru->tail == NIL)
        lru->tail = i;
}

static uint32_t find(const rw_lru_t *lru, const uint8_t *key)
{
    for (uint32_t i = lru->buckets[bucket_of(lru, key)]; i != NIL; i = lru->entries[i].chain)
        if (memcmp(lru->entries[i].key, key, RW_LRU_KEY_LEN) == 0)
            return i;
    return NIL;
}

/* Takes entry i out of the table and the recency list, releases its value and
 * puts it on the free list. */
static void drop(rw_lru_t *lru, uint32_t i)
{
    entry_t *e = &lru->entries[i];
    uint32_t *link = &lru->buckets[e->bucket];
    while (*link != i)
        link = &lru->entries[*link].chain;
    *link = e->chain;
    list_unlink(lru, i);
    if (lru->free_value && e->value)
        lru->free_value(e->value);
    e->value = NULL;
    e->next = lru->free_list;
    lru->free_list = i;
    lru->size--;
}

void rw__lru_clear(rw_lru_t *lru)
{
    for (uint32_t i = lru->head; i != NIL;) {
        uint32_t next = lru->entries[i].next;
        if (lru->free_value && lru->entries[i].value)
            lru->free_value(lru->entries[i].value);
        lru->entries[i].value = NULL;
        i = next;
    }
    for (size_t b = 0; b < lru->nbuckets; b++)
        lru->buckets[b] = NIL;
    for (size_t i = 0; i < lru->capacity; i++) {
        lru->entries[i].prev = NIL;
        lru->entries[i].next = i + 1 < lru->capacity ? (uint32_t)(i + 1) : NIL;
    }
    lru->free_list = 0;
    lru->head = lru->tail = NIL;
    lru->size = 0;
}

void rw__lru_free(rw_lru_t *lru)
{
    if (!lru)
        return;
    rw__lru_clear(lru);
    free(lru->entries);
    free(lru->buckets);
    free(lru);
}

void *rw__lru_get(rw_lru_t *lru, const uint8_t key[RW_LRU_KEY_LEN], uint64_t now_ms)
{
    uint32_t i = find(lru, key);
    if (i == NIL)
        return NULL;
    if (now_ms >= lru->entries[i].deadline_ms) {
        drop(lru, i);
        return NULL;
    }
    if (lru->head != i) {
        list_unlink(lru, i);
        list_push_front(lru, i);
    }
    return lru->entries[i].value;
}

int rw__lru_put(rw_lru_t *lru, const uint8_t key[RW_LRU_KEY_LEN], void *value,
                uint64_t deadline_ms)
{
    uint32_t i = find(lru, key);
    if (i != NIL)
        drop(lru, i);
    if (lru->free_list == NIL)
        drop(lru, lru->tail);
    i = lru->free_list;
    entry_t *e = &lru->entries[i];
    lru->free_list = e->next;
    memcpy(e->key, key, RW_LRU_KEY_LEN);
    e->value = value;
    e->deadline_ms = deadline_ms;
    e->bucket = (uint32_t)bucket_of(lru, key);
    e->chain = lru->buckets[e->bucket];
    lru->buckets[e->bucket] = i;
    list_push_front(lru, i);
    lru->size++;
    return 0;
}

void rw__lru_remove(rw_lru_t *lru, const uint8_t key[RW_LRU_KEY_LEN])
{
    uint32_t i = find(lru, key);
    if (i != NIL)
        drop(lru, i);
}

size_t rw__lru_size(const rw_lru_t *lru)
{
    return lru->size;
}
