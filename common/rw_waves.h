/*
 * rw_waves: the wave engine (docs/DESIGN.md, "Waves"). A run is cut into
 * waves at creation (rw_runs); this module moves them on: at the end of a
 * wave (or of any chunk, for the failure thresholds) under the run-row lock
 * that finalization holds, at the end of a bake (the producer's sweep), on
 * an operator's promote and resume.
 *
 * A wave's batches reach the outbox in exactly one place, rw_waves_release,
 * behind the guarded transition of the wave into running under the run-row
 * lock: a wave is released once, whoever tries and however often.
 *
 * Not here: planning the waves (rw_runs), the wave state writer (rw_state),
 * publishing the outbox (rw_outbox).
 */
#ifndef RW_WAVES_H
#define RW_WAVES_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"
#include "rw_pg.h"
#include "rw_state.h"

/*
 * SQL predicate: chunk `c` (a run_chunks or run_targets row with run_id
 * and chunk) belongs to a released wave, or to a run without waves. Only
 * such chunks are queued, re-queued by the sweep or counted as waiting.
 */
#define RW_WAVE_RELEASED_SQL(c)                                                \
    "NOT EXISTS (SELECT 1 FROM run_waves rw_w"                                 \
    " WHERE rw_w.run_id = " c ".run_id"                                        \
    "   AND " c ".chunk BETWEEN rw_w.first_chunk AND rw_w.last_chunk"          \
    "   AND rw_w.state NOT IN ('running', 'done'))"

/*
 * Inside the caller's transaction, with the run row locked FOR NO KEY
 * UPDATE and the run in *status (pending, running or paused): apply the
 * run's failure thresholds to its current wave and end that wave if none
 * of its chunks is open. A threshold crossed pauses the run (on_failure
 * pause; the reason goes to run_transitions) or aborts it (on_failure
 * abort: the run is cancelled, *status says so). A wave that ends stores
 * its counts and starts the next one's bake (baking, or
 * awaiting_promotion for a manual bake), unless a threshold holds it.
 * *hold is true when the run must not be finalized now: a later wave is
 * still to come, or the run was aborted. Runs without waves: *hold false,
 * nothing written.
 */
rw_err_t rw_waves_check(rw_pg_t *pg, long long run_id, rw_run_state_t *status,
                        bool *hold, char *errstr, size_t errlen);

/*
 * Inside the caller's transaction, the run row locked: move wave `wave`
 * from `from` into running (it becomes the run's current wave) and write
 * the batches of its pending chunks to the outbox. Not in `from`:
 * RW_ERR_CONFLICT, nothing written. *n_chunks counts the batches.
 */
rw_err_t rw_waves_release(rw_pg_t *pg, long long run_id, int wave,
                          rw_wave_state_t from, const char *reason,
                          long long *n_chunks, char *errstr, size_t errlen);

/*
 * Release every wave whose bake is over (baking, not_before <= now) of a
 * pending or running run, at most limit of them, one transaction each.
 * *n_released counts the waves released; the caller relays the outbox.
 */
rw_err_t rw_waves_release_due(rw_pg_t *pg, long long limit,
                              long long *n_released, char *errstr,
                              size_t errlen);

/*
 * Promote (inside the caller's transaction, run row locked, run pending
 * or running):
 * release now the next wave waiting on its bake or on a promotion. None
 * waiting: RW_ERR_STATE with the reason. *wave is the wave released.
 */
rw_err_t rw_waves_promote(rw_pg_t *pg, long long run_id, const char *reason,
                          int *wave, long long *n_chunks, char *errstr,
                          size_t errlen);

/*
 * Resume (inside the caller's transaction, run row locked, run just moved
 * to running): the failures so far are accepted (thresholds count from
 * here), then either the next wave is released, if the run was paused at
 * the end of a wave, or the pending chunks of released waves are queued
 * again. *n_chunks counts the batches written.
 */
rw_err_t rw_waves_resume(rw_pg_t *pg, long long run_id, const char *reason,
                         long long *n_chunks, char *errstr, size_t errlen);

/*
 * Abort (inside the caller's transaction, run row locked): every wave not
 * done is cancelled. Runs without waves: nothing.
 */
rw_err_t rw_waves_cancel(rw_pg_t *pg, long long run_id, const char *reason,
                         char *errstr, size_t errlen);

#endif
