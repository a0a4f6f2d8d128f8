/* The digest-keyed cache: hits, deadlines, least-recently-used eviction,
 * replacement and removal, each releasing exactly the values it drops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "lru.h"

static int released;

static void release(void *v)
{
    released++;
    free(v);
}

static void key_of(uint8_t key[RW_LRU_KEY_LEN], unsigned n)
{
    memset(key, 0, RW_LRU_KEY_LEN);
    /* Same low bytes for many keys: they share buckets, so chains are exercised. */
    key[0] = (uint8_t)(n & 1);
    key[31] = (uint8_t)n;
    key[30] = (uint8_t)(n >> 8);
}

static int *val(int v)
{
    int *p = malloc(sizeof *p);
    *p = v;
    return p;
}

static void hits_expires_and_evicts_least_recent(void **state)
{
    released = 0;
    rw_lru_t *lru = rw__lru_new(3, release);
    uint8_t k[4][RW_LRU_KEY_LEN];
    for (unsigned i = 0; i < 4; i++)
        key_of(k[i], i);
    assert_int_equal(rw__lru_put(lru, k[0], val(0), 100), 0);
    assert_int_equal(rw__lru_put(lru, k[1], val(1), 100), 0);
    assert_int_equal(rw__lru_put(lru, k[2], val(2), 100), 0);
    assert_int_equal(rw__lru_size(lru), 3);
    /* Touch 0: 1 becomes the least recently used and goes first. */
    assert_int_equal(*(int *)rw__lru_get(lru, k[0], 10), 0);
    assert_int_equal(rw__lru_put(lru, k[3], val(3), 100), 0);
    assert_int_equal(released, 1);
    assert_null(rw__lru_get(lru, k[1], 10));
    assert_int_equal(*(int *)rw__lru_get(lru, k[0], 10), 0);
    assert_int_equal(*(int *)rw__lru_get(lru, k[2], 10), 2);
    assert_int_equal(*(int *)rw__lru_get(lru, k[3], 10), 3);
    /* At the deadline the entry is gone and released. */
    assert_null(rw__lru_get(lru, k[2], 100));
    assert_int_equal(released, 2);
    assert_int_equal(rw__lru_size(lru), 2);
    /* Replacing releases the old value. */
    assert_int_equal(rw__lru_put(lru, k[0], val(10), 200), 0);
    assert_int_equal(released, 3);
    assert_int_equal(*(int *)rw__lru_get(lru, k[0], 150), 10);
    rw__lru_remove(lru, k[3]);
    assert_int_equal(released, 4);
    assert_null(rw__lru_get(lru, k[3], 10));
    rw__lru_clear(lru);
    assert_int_equal(released, 5);
    assert_int_equal(rw__lru_size(lru), 0);
    rw__lru_free(lru);
    assert_int_equal(released, 5);
}

static void stays_bounded_under_many_keys(void **state)
{
    released = 0;
    rw_lru_t *lru = rw__lru_new(64, release);
    uint8_t k[RW_LRU_KEY_LEN];
    for (unsigned i = 0; i < 5000; i++) {
        key_of(k, i);
        rw__lru_put(lru, k, val((int)i), 1000);
        assert_true(rw__lru_size(lru) <= 64);
    }
    assert_int_equal(released, 5000 - 64);
    /* The last 64 are there, the one before is not. */
    for (unsigned i = 5000 - 64; i < 5000; i++) {
        key_of(k, i);
        int *v = rw__lru_get(lru, k, 1);
        assert_non_null(v);
        assert_int_equal(*v, (int)i);
    }
    key_of(k, 5000 - 65);
    assert_null(rw__lru_get(lru, k, 1));
    rw__lru_free(lru);
    assert_int_equal(released, 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hits_expires_and_evicts_least_recent),
        cmocka_unit_test(stays_bounded_under_many_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
