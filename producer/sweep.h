/*
 * sweep: the recovery sweep (DESIGN.md section 11), run by the producer's
 * leader every ROLLWAVE_SWEEP_INTERVAL_S. Every run finishes whatever was
 * lost on the way:
 *
 *   in doubt    a chunk left `triggering` past the settle window after its
 *               last send, whatever its run's status, is looked up in
 *               Lagoon by its bulk name: found, the bulk is adopted and
 *               polled; not found, the claims are given back (and the
 *               batch queued again when the run is still going, or the
 *               targets cancelled when it was aborted), or, after
 *               ROLLWAVE_TRIGGER_RETRIES sends never found, failed for
 *               good; an inconclusive answer leaves it for the next sweep;
 *   poll lost   a `triggered` chunk not polled for ROLLWAVE_SWEEP_POLL_STALE_S
 *               gets its current poll event again;
 *   batch lost  a `pending` chunk of a released wave of a pending or
 *               running run untouched for ROLLWAVE_SWEEP_PENDING_STALE_S
 *               gets its batch again (an unreleased wave's are not lost,
 *               nor are deferred chunks);
 *   deferred    a `pending` chunk a worker deferred (window closed, run
 *               limit reached) whose not_before has passed gets its batch
 *               again, not_before cleared in the same transaction;
 *   waves       a wave whose bake is over is released: its batches are
 *               written and relayed (rw_waves_release_due);
 *   locks       the locks of targets of chunks finished since the last
 *               sweep are released again (by owner), in case their
 *               writer died or Redis refused between its commit and its
 *               release;
 *   finalize    a run whose chunks are all closed, or whose running wave
 *               has no open chunk, is finalized or moved to its next wave.
 *
 * Every query goes through an index of open chunks (run_chunks_open_age_
 * idx) or of open runs; each action is logged and counted in
 * rollwave_sweep_actions_total{action}. Racing a live worker or poller is
 * harmless: every change is a conditional transition, and the loser's
 * duplicate message is dropped like any redelivery.
 */
#ifndef RW_PRODUCER_SWEEP_H
#define RW_PRODUCER_SWEEP_H

#include "rw_service.h"

/* Counts of one sweep, per action. */
typedef struct rw_sweep_stats {
    long long adopted;      /* in doubt, bulk found: adopted */
    long long unsent;       /* in doubt, not found: claims given back */
    long long inconclusive; /* in doubt, lookup failed: left for later */
    long long failed;       /* in doubt, never found after every send */
    long long polls;        /* poll events re-emitted */
    long long batches;      /* batches re-queued */
    long long deferred;     /* deferred chunks' batches queued again */
    long long finalized;    /* runs finalized */
    long long locks;        /* locks of finished targets released again */
    long long released;     /* waves released after their bake */
    /* kept across sweeps: (finished_at, id) of the last chunk whose locks
     * were released ("" = start an hour back) */
    char locks_cursor[64];
    long long locks_cursor_id;
} rw_sweep_stats_t;

/*
 * One sweep (st carries the lock cursor from the previous one: zero it
 * once before the first) with svc's Postgres, Redis (locks of given-back
 * claims), Lagoon (bulk lookups) and producer (the outbox relay); the
 * producer always opens all four. Should Lagoon be NULL, in-doubt chunks
 * are left alone; should Redis be, no lock is released. Errors of one chunk
 * are logged and skipped; the return value is the first error of a query
 * that stopped the sweep.
 */
rw_err_t rw_sweep_run(rw_service_t *svc, rw_sweep_stats_t *st, char *errstr,
                      size_t errlen);

#endif
