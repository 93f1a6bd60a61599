/*
 * rw_schedule: jitter, cadence and backoff arithmetic (see rw_schedule.h).
 *
 * Everything is integer math on caller-supplied values; the module never
 * reads a clock or touches shared state, so it is trivially thread-safe and
 * reproducible in tests.
 */
#include "rw_schedule.h"

#include <limits.h>

/*
 * splitmix64 finaliser: a bijective 64-bit mix whose output bits each
 * depend on all input bits, so sequential instance ids land far apart.
 */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

long long rw_schedule_jitter_s(long long instance_id, long long window_s)
{
    if (window_s <= 0)
        return 0;
    /* Modulo bias is below window / 2^64: irrelevant for any real window. */
    return (long long)(mix64((uint64_t)instance_id) % (uint64_t)window_s);
}

long long rw_schedule_interval_days(bool is_beta, long long interval_days,
                                    long long beta_interval_days)
{
    if (is_beta && beta_interval_days > 0)
        return beta_interval_days;
    return interval_days;
}

/* a + b for b >= 0, saturating at LLONG_MAX. */
static long long sat_add(long long a, long long b)
{
    if (b > 0 && a > LLONG_MAX - b)
        return LLONG_MAX;
    return a + b;
}

long long rw_schedule_next_s(long long now_s, bool is_beta,
                             long long interval_days,
                             long long beta_interval_days,
                             long long instance_id, long long jitter_window_s)
{
    long long days =
        rw_schedule_interval_days(is_beta, interval_days, beta_interval_days);
    long long interval_s = 0;

    if (days < 0)
        days = 0;
    interval_s = days > LLONG_MAX / 86400 ? LLONG_MAX : days * 86400;
    return sat_add(sat_add(now_s, interval_s),
                   rw_schedule_jitter_s(instance_id, jitter_window_s));
}

uint64_t rw_rand_next(uint64_t *state)
{
    uint64_t x = *state;

    if (x == 0)
        x = 0x2545f4914f6cdd1dULL; /* the one state xorshift cannot leave */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

long long rw_backoff_ms(int retry, long long base_ms, long long max_ms,
                        uint64_t *rng_state)
{
    long long ceiling = 0;

    if (base_ms <= 0 || max_ms <= 0)
        return 0;
    if (retry < 0)
        retry = 0;
    /* base << retry overflows once it passes max; test before shifting. */
    if (base_ms >= max_ms || retry >= 62 || base_ms > (max_ms >> retry))
        ceiling = max_ms;
    else
        ceiling = base_ms << retry;
    if (ceiling > max_ms)
        ceiling = max_ms;
    if (!rng_state)
        return ceiling;
    return (long long)(rw_rand_next(rng_state) % ((uint64_t)ceiling + 1));
}
