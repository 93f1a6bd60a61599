/*
 * gate: the worker's side of the fleet throttle (common/rw_throttle). A
 * batch asks the gate for budget before it takes any lock; a batch that
 * does not fit is held with its partition paused (RW_MSG_WAIT) and asks
 * again later, so the backlog stays in Kafka as consumer lag.
 *
 * The gate keeps the last answer it had from Postgres: a batch asking
 * while that answer is fresh and says "full" waits without a statement,
 * so a worker holding many batches costs Postgres one read per
 * ROLLWAVE_THROTTLE_WAIT_MS, not one per batch.
 */
#ifndef RW_WORKER_GATE_H
#define RW_WORKER_GATE_H

#include <stdbool.h>

#include "rw_service.h"
#include "rw_throttle.h"

typedef struct rw_gate {
    rw_throttle_state_t st; /* last read (limits), updated by takes */
    long long st_ms;        /* monotonic time of st, 0 = never */
    long long noted_ms;     /* last rw_throttle_note_waiting */
    char holder[96];        /* host:pid, on the leases it takes */
    rw_metric_t *m_in_flight, *m_limit, *m_effective, *m_tokens, *m_rate;
    rw_metric_t *m_waiting, *m_wait_s, *m_verdict[RW_THROTTLE_VERDICTS];
} rw_gate_t;

/* Seed the fleet row from the settings if there is none; read it once. */
void rw_gate_init(rw_gate_t *g, rw_service_t *svc);

/*
 * Every loop turn: read the throttle again when due (every second, every
 * ROLLWAVE_THROTTLE_WAIT_MS while batches wait), running the adaptive
 * limit's round when it is due fleet-wide, and export the gauges.
 */
void rw_gate_tick(rw_gate_t *g, rw_service_t *svc);

/*
 * Ask for budget for n targets of run run_id, whose own limit is run_limit
 * targets in flight (<= 0: none). true: granted, *lease holds it until the
 * claim settles it (rw_throttle_settle) or rw_throttle_release gives it
 * back. false: not granted, *verdict says why (RW_THROTTLE_RUN_LIMIT: the
 * run's own limit, which the caller defers rather than holds) and why in
 * words; hold the batch for *wait_ms; err is set only when Postgres failed.
 */
bool rw_gate_take(rw_gate_t *g, rw_service_t *svc, long long n,
                  long long run_id, long long run_limit, long long *lease,
                  long long *wait_ms, rw_throttle_verdict_t *verdict, char *why,
                  size_t why_len, rw_err_t *err, char *errstr, size_t errlen);

#endif
