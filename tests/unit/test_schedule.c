/*
 * test_schedule: deterministic, uniform jitter; beta interval choice; next
 * redeploy time; capped exponential backoff with full jitter.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>

#include "rw_schedule.h"

#define WINDOW_S (180 * 60)

static void test_jitter_deterministic_and_bounded(void **state)
{
    (void)state;
    for (long long id = -1000; id < 20000; id++) {
        long long j = rw_schedule_jitter_s(id, WINDOW_S);
        assert_true(j >= 0 && j < WINDOW_S);
        assert_true(j == rw_schedule_jitter_s(id, WINDOW_S));
    }
    assert_true(rw_schedule_jitter_s(LLONG_MAX, WINDOW_S) >= 0);
    assert_true(rw_schedule_jitter_s(LLONG_MIN, WINDOW_S) < WINDOW_S);
    /* Degenerate windows. */
    assert_int_equal(rw_schedule_jitter_s(12345, 0), 0);
    assert_int_equal(rw_schedule_jitter_s(12345, -60), 0);
    assert_int_equal(rw_schedule_jitter_s(12345, 1), 0);
}

static void test_jitter_differs_between_ids(void **state)
{
    int same = 0;
    (void)state;

    /* Neighbouring ids must not share a slot (a bad mix would). */
    for (long long id = 1; id <= 1000; id++) {
        if (rw_schedule_jitter_s(id, WINDOW_S) ==
            rw_schedule_jitter_s(id + 1, WINDOW_S))
            same++;
    }
    assert_true(same < 5);
}

static void test_jitter_spread(void **state)
{
    enum { IDS = 10000, BUCKET_S = 600, BUCKETS = WINDOW_S / BUCKET_S };
    int counts[BUCKETS] = {0};
    const double mean = (double)IDS / BUCKETS;
    (void)state;

    for (long long id = 1; id <= IDS; id++)
        counts[rw_schedule_jitter_s(id, WINDOW_S) / BUCKET_S]++;
    for (int b = 0; b < BUCKETS; b++) {
        if (counts[b] < mean * 0.7 || counts[b] > mean * 1.3)
            fail_msg("bucket %d holds %d ids, mean %.1f", b, counts[b], mean);
    }

    /* Sparse ids (every 1000th, as after a big import) spread as well. */
    for (int b = 0; b < BUCKETS; b++)
        counts[b] = 0;
    for (long long i = 1; i <= IDS; i++)
        counts[rw_schedule_jitter_s(i * 1000, WINDOW_S) / BUCKET_S]++;
    for (int b = 0; b < BUCKETS; b++) {
        if (counts[b] < mean * 0.7 || counts[b] > mean * 1.3)
            fail_msg("sparse: bucket %d holds %d ids", b, counts[b]);
    }
}

static void test_interval_days(void **state)
{
    (void)state;
    assert_int_equal(rw_schedule_interval_days(false, 7, 2), 7);
    assert_int_equal(rw_schedule_interval_days(true, 7, 2), 2);
    /* Beta without its own interval falls back to the normal one. */
    assert_int_equal(rw_schedule_interval_days(true, 7, 0), 7);
    assert_int_equal(rw_schedule_interval_days(true, 7, -1), 7);
    assert_int_equal(rw_schedule_interval_days(false, 7, 0), 7);
}

static void test_next(void **state)
{
    const long long now = 1795451454; /* 2026-11-22T16:30:54Z */
    (void)state;

    for (long long id = 1; id < 500; id++) {
        long long j = rw_schedule_jitter_s(id, WINDOW_S);
        assert_true(rw_schedule_next_s(now, false, 7, 2, id, WINDOW_S) ==
                    now + 7 * 86400 + j);
        assert_true(rw_schedule_next_s(now, true, 7, 2, id, WINDOW_S) ==
                    now + 2 * 86400 + j);
        assert_true(rw_schedule_next_s(now, true, 7, 0, id, WINDOW_S) ==
                    now + 7 * 86400 + j);
    }
    assert_true(rw_schedule_next_s(now, false, 7, 0, 99, 0) == now + 7 * 86400);
    assert_true(rw_schedule_next_s(now, false, -3, 0, 99, 0) == now);
    /* Absurd intervals saturate instead of wrapping around. */
    assert_true(rw_schedule_next_s(now, false, LLONG_MAX, 0, 99, WINDOW_S) ==
                LLONG_MAX);
    assert_true(rw_schedule_next_s(LLONG_MAX - 10, false, 0, 0, 99, WINDOW_S) >=
                LLONG_MAX - 10);
}

static void test_backoff_ceiling_without_rng(void **state)
{
    (void)state;
    /* rng NULL returns the ceiling: base * 2^retry, capped. */
    assert_int_equal(rw_backoff_ms(0, 100, 60000, NULL), 100);
    assert_int_equal(rw_backoff_ms(1, 100, 60000, NULL), 200);
    assert_int_equal(rw_backoff_ms(5, 100, 60000, NULL), 3200);
    assert_int_equal(rw_backoff_ms(9, 100, 60000, NULL), 51200);
    assert_int_equal(rw_backoff_ms(10, 100, 60000, NULL), 60000);
    assert_int_equal(rw_backoff_ms(-4, 100, 60000, NULL), 100);
    assert_int_equal(rw_backoff_ms(3, 500, 100, NULL), 100);
    assert_int_equal(rw_backoff_ms(3, 0, 100, NULL), 0);
    assert_int_equal(rw_backoff_ms(3, 100, 0, NULL), 0);
    assert_int_equal(rw_backoff_ms(3, -100, 1000, NULL), 0);
    /* No overflow, however large the retry count or the values. */
    for (int r = 30; r < 200; r++) {
        assert_true(rw_backoff_ms(r, 1000, 3600000, NULL) == 3600000);
        assert_true(rw_backoff_ms(r, 1, LLONG_MAX, NULL) > 0);
        assert_true(rw_backoff_ms(r, LLONG_MAX / 3, LLONG_MAX, NULL) ==
                    LLONG_MAX);
    }
    assert_true(rw_backoff_ms(INT_MAX, 1000, 3600000, NULL) == 3600000);
    assert_true(rw_backoff_ms(61, 1, LLONG_MAX, NULL) == (1LL << 61));
}

static void test_backoff_full_jitter(void **state)
{
    uint64_t rng = 42;
    (void)state;

    for (int r = 0; r < 12; r++) {
        long long ceiling = rw_backoff_ms(r, 100, 60000, NULL);
        long long lo = LLONG_MAX, hi = 0, sum = 0;
        for (int i = 0; i < 4000; i++) {
            long long d = rw_backoff_ms(r, 100, 60000, &rng);
            assert_true(d >= 0 && d <= ceiling);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
            sum += d;
        }
        /* Full jitter covers [0, ceiling] with mean near ceiling / 2. */
        assert_true(lo <= ceiling / 10);
        assert_true(hi >= ceiling - ceiling / 10);
        double mean = (double)sum / 4000;
        assert_true(mean > ceiling * 0.4 && mean < ceiling * 0.6);
    }
    /* The ceiling grows with retries until it reaches the cap. */
    for (int r = 1; r < 10; r++)
        assert_true(rw_backoff_ms(r, 100, 60000, NULL) >
                    rw_backoff_ms(r - 1, 100, 60000, NULL));
    /* Huge values and retry counts stay in bounds with jitter too. */
    for (int r = 0; r < 300; r++) {
        long long d = rw_backoff_ms(r, LLONG_MAX / 2, LLONG_MAX, &rng);
        assert_true(d >= 0);
    }
}

static void test_backoff_rng_state(void **state)
{
    uint64_t a = 7, b = 7, zero = 0;
    int differ = 0;
    (void)state;

    /* Same seed, same sequence: callers can reproduce a schedule. */
    for (int i = 0; i < 100; i++)
        assert_true(rw_backoff_ms(8, 100, 60000, &a) ==
                    rw_backoff_ms(8, 100, 60000, &b));
    /* The state advances, so draws differ. */
    long long first = rw_backoff_ms(8, 100, 60000, &a);
    for (int i = 0; i < 100; i++)
        differ += rw_backoff_ms(8, 100, 60000, &a) != first;
    assert_true(differ > 90);
    /* A zero state is not stuck at zero forever. */
    rw_backoff_ms(8, 100, 60000, &zero);
    assert_true(zero != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jitter_deterministic_and_bounded),
        cmocka_unit_test(test_jitter_differs_between_ids),
        cmocka_unit_test(test_jitter_spread),
        cmocka_unit_test(test_interval_days),
        cmocka_unit_test(test_next),
        cmocka_unit_test(test_backoff_ceiling_without_rng),
        cmocka_unit_test(test_backoff_full_jitter),
        cmocka_unit_test(test_backoff_rng_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
