/*
 * rw_progress: what happens to a run after its chunks ended: chunk
 * completion and run finalization exactly once. (A poll's Lagoon results
 * are written onto targets and instances by rw_target_apply, rw_state.h:
 * one statement per chunk.)
 *
 * It does not talk to Lagoon, Kafka or Redis: callers act on what these
 * functions report.
 */
#ifndef RW_PROGRESS_H
#define RW_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "rw_err.h"
#include "rw_pg.h"
#include "rw_state.h"

/*
 * A chunk of the run ended (its poller committed it): rw_progress_finalize
 * unless one unlocked read shows there is nothing for it to do, which is
 * the common case: a running (or pending) run without failure thresholds
 * (its failures cannot pause or abort it) that still has open chunks, and
 * whose current wave, if one is running, still has open chunks. A run
 * with thresholds is offered at every chunk end, as every run was before,
 * so a failure whose own offer was lost (a crash between its commit and
 * the offer) is still applied at the next chunk end. Whichever of two
 * racing chunk ends commits last reads the other's commit, so the end of a
 * wave or run is never missed; the recovery sweep stays the backstop.
 */
rw_err_t rw_progress_chunk_ended(rw_pg_t *pg, long long run_id, bool *finalized,
                                 char *errstr, size_t errlen);

/* Whether a run's strategy (its JSON) sets a failure threshold; one that
 * does not parse counts as having one (rw_waves_check stops it). */
bool rw_progress_has_thresholds(const char *strategy_json);

/*
 * Finalize the run if every chunk is over (done or failed): in its own
 * transaction, lock the run row, count its targets, store the counts and
 * move it to its outcome (rw_run_outcome). A run already final, cancelled,
 * or with chunks still open is left alone. *finalized is true only for the
 * call that finalized it, so each run is finalized exactly once however
 * many workers and pollers race here. Under the same lock, before that,
 * the run's failure thresholds are applied and its current wave ended when
 * its chunks are (rw_waves_check): every chunk ending offers the run here.
 */
rw_err_t rw_progress_finalize(rw_pg_t *pg, long long run_id, bool *finalized,
                              rw_run_state_t *outcome, char *errstr,
                              size_t errlen);

/*
 * Finalize every open run whose chunks are all over: the backstop for a
 * finalization that failed after its last chunk was recorded. *n_finalized
 * counts the runs this call finalized.
 */
rw_err_t rw_progress_sweep(rw_pg_t *pg, long long *n_finalized, char *errstr,
                           size_t errlen);

#endif
