/*
 * rw_control: operator control of a run (pause, resume, abort, retry) and
 * the reopening of finished chunks that retries and replays share. Every
 * status change goes through the state machines of rw_state, so an illegal
 * request (resume a completed run, retry a running one) is refused with
 * the reason and changes nothing.
 *
 * What each verb means for the daemons:
 *   pause   no new chunk is triggered: workers acknowledge the run's batches
 *           and leave the chunks pending; chunks already triggered are
 *           still polled to the end;
 *   resume  the run runs again and the batches of its pending chunks are
 *           queued anew;
 *   abort   pending targets are cancelled, pending chunks closed, the run
 *           is cancelled at once; builds already started in Lagoon finish
 *           and are recorded, but never change the run's status;
 *   retry   failed and timed-out targets below the attempt limit go back to
 *           pending, their chunks are reopened and re-queued, the run runs
 *           again and is finalized again (only released waves have such
 *           targets; later waves keep their state);
 *   promote the next wave waiting on its bake or on a manual promotion is
 *           released now (rw_waves).
 */
#ifndef RW_CONTROL_H
#define RW_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"
#include "rw_pg.h"
#include "rw_state.h"

typedef enum rw_control_verb {
    RW_CONTROL_PAUSE,
    RW_CONTROL_RESUME,
    RW_CONTROL_ABORT,
    RW_CONTROL_RETRY,
    RW_CONTROL_PROMOTE,
} rw_control_verb_t;

typedef struct rw_control_result {
    char status_before[24];
    char status_after[24];
    long long targets; /* cancelled (abort) or reopened (retry) */
    long long chunks;  /* chunks queued anew (resume, retry, promote) */
    int wave;          /* the wave promoted */
} rw_control_result_t;

/*
 * Apply verb to the run with run_uuid in one transaction; batches to
 * (re)queue are written to the outbox (the caller relays them). by names
 * the operator for the audit trail. Unknown run: RW_ERR_NOT_FOUND; a verb
 * the run's state does not allow: RW_ERR_STATE with the reason in errstr;
 * retry with nothing to retry: RW_ERR_CONFLICT.
 */
rw_err_t rw_control_run(rw_pg_t *pg, const char *run_uuid,
                        rw_control_verb_t verb, long long max_attempts,
                        const char *by, rw_control_result_t *out, char *errstr,
                        size_t errlen);

/*
 * Reopen for another attempt the failed and timed-out targets (attempt <
 * max_attempts) of one chunk (chunk >= 0) or of every chunk (chunk < 0),
 * inside the caller's transaction: targets -> pending, their chunks ->
 * pending, and a finished run -> running. *n_targets tells how many
 * targets were reopened (0: nothing changed). replay_id (0 = none) is
 * recorded on the reopened chunks when a replayed batch reopens them, so
 * the same replayed offset never reopens them twice. With queue set, one
 * batch message per reopened chunk is written to the outbox.
 */
rw_err_t rw_control_reopen(rw_pg_t *pg, long long run_id, int chunk,
                           long long max_attempts, const char *reason,
                           long long replay_id, bool queue,
                           long long *n_targets, long long *n_chunks,
                           char *errstr, size_t errlen);

/*
 * Write one batch message per pending chunk of the run (only_chunk >= 0:
 * that chunk only) to the outbox, in the caller's transaction; the caller
 * relays them. *n_chunks counts the messages.
 */
rw_err_t rw_control_queue(rw_pg_t *pg, long long run_id, int only_chunk,
                          long long *n_chunks, char *errstr, size_t errlen);

/*
 * Abort inside the caller's transaction, the run row locked and in
 * status: pending targets cancelled, pending chunks closed, unfinished
 * waves cancelled, the run cancelled with reason and its counts stored.
 * *n_targets counts the targets cancelled.
 */
rw_err_t rw_control_abort(rw_pg_t *pg, long long run_id, rw_run_state_t status,
                          const char *reason, long long *n_targets,
                          char *errstr, size_t errlen);

#endif
