/*
 * rw_schedule: the arithmetic of redeploy cadence and retry timing.
 *
 * Deterministic per-instance jitter (so a fleet's redeploys spread evenly
 * over a window and an instance keeps its slot from one cycle to the next),
 * the beta/normal interval choice, the next redeploy time, and capped
 * exponential backoff with full jitter.
 *
 * Pure functions: no clock, no I/O, no global state. Callers pass the
 * current time and own any random state.
 */
#ifndef RW_SCHEDULE_H
#define RW_SCHEDULE_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Seconds in [0, window_s) derived only from instance_id (a splitmix64
 * mix, so consecutive ids spread uniformly). window_s <= 0 gives 0.
 */
long long rw_schedule_jitter_s(long long instance_id, long long window_s);

/*
 * The cadence in days for an instance: beta_interval_days when is_beta and
 * beta_interval_days > 0, otherwise interval_days.
 */
long long rw_schedule_interval_days(bool is_beta, long long interval_days,
                                    long long beta_interval_days);

/*
 * now_s + interval (days, see rw_schedule_interval_days) * 86400 + jitter
 * of instance_id over jitter_window_s. Saturates at LLONG_MAX instead of
 * overflowing; negative intervals count as 0.
 */
long long rw_schedule_next_s(long long now_s, bool is_beta,
                             long long interval_days,
                             long long beta_interval_days,
                             long long instance_id, long long jitter_window_s);

/*
 * Delay before retry number `retry` (0 = first retry): the ceiling is
 * base_ms * 2^retry capped at max_ms, and the result is drawn uniformly
 * from [0, ceiling] ("full jitter") using the caller's xorshift64 state,
 * which is advanced. A zero state is replaced by a fixed non-zero seed;
 * rng_state NULL returns the ceiling itself. Never negative, never above
 * max_ms, no overflow for any retry count; base_ms or max_ms <= 0 give 0.
 */
long long rw_backoff_ms(int retry, long long base_ms, long long max_ms,
                        uint64_t *rng_state);

/*
 * The next draw of a xorshift64 (Marsaglia) generator whose state is
 * advanced; a zero state is replaced by a fixed non-zero seed. Cheap and
 * good enough to decorrelate retries, waits and fault-injection draws; not
 * for anything secret.
 */
uint64_t rw_rand_next(uint64_t *state);

#endif
