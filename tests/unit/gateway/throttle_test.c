/* Node-wide token buckets: counts, not timings (rates are so slow that no
 * token comes back during a test): a burst then a refusal with Retry-After,
 * buckets kept apart, one bucket drained by a forked child and its parent
 * together, concurrent processes never taking more than the burst, and a full
 * table recycling slots without losing the bucket in use. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "throttle.h"

/* One token per 1000 s: nothing refills while a test runs. */
#define SLOW 0.001

static bool take(rw_throttle_t *t, const char *key, double burst, uint32_t *retry)
{
    return rw_throttle_take(t, key, strlen(key), SLOW, burst, retry);
}

static void burst_then_429_with_retry_after(void **state)
{
    rw_throttle_t *t = rw_throttle_create(64);
    assert_non_null(t);
    uint32_t retry = 0;
    for (int i = 0; i < 5; i++)
        assert_true(take(t, "plan\x1fkey-a", 5, &retry));
    assert_false(take(t, "plan\x1fkey-a", 5, &retry));
    /* One token takes 1000 s at this rate. */
    assert_int_equal(retry, 1000);
    /* Another key of the same plan has its own bucket. */
    assert_true(take(t, "plan\x1fkey-b", 5, NULL));
    /* A faster plan: Retry-After is whole seconds, at least 1. */
    assert_true(rw_throttle_take(t, "fast", 4, 1000.0, 1, NULL));
    bool ok = rw_throttle_take(t, "fast", 4, 1000.0, 1, &retry);
    if (!ok)
        assert_int_equal(retry, 1);
    /* No rate: no throttle. */
    for (int i = 0; i < 100; i++)
        assert_true(rw_throttle_take(t, "free", 4, 0, 0, NULL));
    /* A burst under 1 still lets one request through. */
    assert_true(take(t, "tiny", 0, NULL));
    assert_false(take(t, "tiny", 0, NULL));
    rw_throttle_destroy(t);
}

static int drain_in_child(rw_throttle_t *t, const char *key, double burst, int max)
{
    int allowed = 0;
    for (int i = 0; i < max; i++)
        allowed += take(t, key, burst, NULL) ? 1 : 0;
    return allowed;
}

static void a_bucket_is_shared_with_forked_workers(void **state)
{
    rw_throttle_t *t = rw_throttle_create(0); /* before the fork, as the supervisor does */
    assert_non_null(t);
    for (int i = 0; i < 3; i++)
        assert_true(take(t, "p\x1fk", 10, NULL));
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(drain_in_child(t, "p\x1fk", 10, 50));
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    /* The child found the 7 tokens the parent left... */
    assert_int_equal(WEXITSTATUS(status), 7);
    /* ...and the parent sees the bucket the child emptied. */
    assert_false(take(t, "p\x1fk", 10, NULL));
    rw_throttle_destroy(t);
}

static void concurrent_workers_never_exceed_the_burst(void **state)
{
    enum { WORKERS = 4, TRIES = 60, BURST = 100 };
    rw_throttle_t *t = rw_throttle_create(256);
    assert_non_null(t);
    pid_t pids[WORKERS];
    fflush(NULL);
    for (int w = 0; w < WORKERS; w++) {
        pids[w] = fork();
        assert_true(pids[w] >= 0);
        if (pids[w] == 0) {
            /* Every worker also churns other buckets, so slots get claimed
             * concurrently with the shared one. */
            int allowed = 0;
            for (int i = 0; i < TRIES; i++) {
                char other[32];
                snprintf(other, sizeof other, "w%d-%d", w, i);
                take(t, other, 1, NULL);
                allowed += take(t, "shared", BURST, NULL) ? 1 : 0;
            }
            _exit(allowed);
        }
    }
    int total = 0;
    for (int w = 0; w < WORKERS; w++) {
        int status = 0;
        assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
        assert_true(WIFEXITED(status));
        total += WEXITSTATUS(status);
    }
    assert_int_equal(total, BURST);
    assert_false(take(t, "shared", BURST, NULL));
    rw_throttle_destroy(t);
}

static void a_full_table_recycles_slots(void **state)
{
    rw_throttle_t *t = rw_throttle_create(16);
    assert_non_null(t);
    assert_int_equal(rw_throttle_slots(t), 16);
    char key[32];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof key, "key-%d", i);
        /* A new bucket starts full, whatever slot it lands in. */
        assert_true(take(t, key, 1, NULL));
    }
    /* The bucket used last keeps its state. */
    assert_false(take(t, "key-199", 1, NULL));
    rw_throttle_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_then_429_with_retry_after),
        cmocka_unit_test(a_bucket_is_shared_with_forked_workers),
        cmocka_unit_test(concurrent_workers_never_exceed_the_burst),
        cmocka_unit_test(a_full_table_recycles_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
