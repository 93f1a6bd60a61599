/*
 * rw_state: the three state machines of rollwave (run, target, chunk):
 * states, names, the legal edges, outcome and Lagoon-status rules, and the
 * one transition function per machine that writes a state change to
 * Postgres as a conditional UPDATE.
 *
 * Each machine has one table of legal edges; anything not in it is refused
 * (RW_ERR_STATE, logged, nothing written). Edges marked "retry" are legal
 * only when taken by a retry or replay.
 *
 * This module does not decide when a transition happens (the producer,
 * worker and poller do), does not open transactions (callers that need
 * several writes to be atomic wrap the calls in rw_pg_begin/commit) and
 * does not touch counters or any column other than the state's own
 * timestamps and error text.
 */
#ifndef RW_STATE_H
#define RW_STATE_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"
#include "rw_pg.h"

/* ---- run: deployment_runs.status --------------------------------------- */

typedef enum rw_run_state {
    RW_RUN_PENDING = 0,    /* created, no chunk triggered yet */
    RW_RUN_RUNNING,        /* at least one chunk triggered, not finalized */
    RW_RUN_PAUSED,         /* operator hold: no new chunk is triggered */
    RW_RUN_COMPLETED,      /* finalized, no target failed */
    RW_RUN_PARTIAL_FAILED, /* finalized, some targets succeeded, some not */
    RW_RUN_FAILED,         /* finalized, no target succeeded */
    RW_RUN_CANCELLED,      /* aborted by an operator before finishing */
    RW_RUN__COUNT
} rw_run_state_t;

/* ---- target: run_targets.state ----------------------------------------- */

typedef enum rw_target_state {
    RW_TARGET_PENDING = 0, /* waiting for its chunk to be triggered */
    RW_TARGET_CLAIMED,     /* locked and claimed by a worker, not yet sent */
    RW_TARGET_TRIGGERED,   /* in an accepted bulk mutation, no row yet */
    RW_TARGET_DEPLOYING,   /* Lagoon reports a non-terminal deployment */
    RW_TARGET_SUCCEEDED,   /* Lagoon reports the deployment complete */
    RW_TARGET_FAILED,      /* deployment failed, or trigger failed for good */
    RW_TARGET_SKIPPED,     /* not eligible, no Lagoon target, busy elsewhere */
    RW_TARGET_TIMED_OUT,   /* poll attempts exhausted before a final status */
    RW_TARGET_CANCELLED,   /* its run was cancelled before it was claimed */
    RW_TARGET__COUNT
} rw_target_state_t;

/* ---- chunk: run_chunks.state ------------------------------------------- */

typedef enum rw_chunk_state {
    RW_CHUNK_PENDING = 0, /* not yet sent to Lagoon */
    RW_CHUNK_TRIGGERING,  /* targets claimed, bulk mutation under way */
    RW_CHUNK_TRIGGERED,   /* bulk id recorded, being polled */
    RW_CHUNK_DONE,        /* every target of the chunk is terminal */
    RW_CHUNK_FAILED,      /* the bulk mutation failed for good, no bulk id */
    RW_CHUNK__COUNT
} rw_chunk_state_t;

/*
 * Names are the strings stored in Postgres ("partial_failed", "timed_out").
 * name() of an out-of-range value is "unknown"; parse() of an unknown or
 * NULL string is -1 (compare with < 0 before casting).
 */
const char *rw_run_state_name(rw_run_state_t s);
int rw_run_state_parse(const char *name);
const char *rw_target_state_name(rw_target_state_t s);
int rw_target_state_parse(const char *name);
const char *rw_chunk_state_name(rw_chunk_state_t s);
int rw_chunk_state_parse(const char *name);

/*
 * True when from -> to is an edge of the machine. retry says the edge is
 * taken by a retry or replay; retry-only edges need it, ordinary edges
 * accept either value. Self-loops and out-of-range states are never legal.
 */
bool rw_run_edge_ok(rw_run_state_t from, rw_run_state_t to, bool retry);
bool rw_target_edge_ok(rw_target_state_t from, rw_target_state_t to,
                       bool retry);
bool rw_chunk_edge_ok(rw_chunk_state_t from, rw_chunk_state_t to, bool retry);

/* completed, partial_failed, failed, cancelled. */
bool rw_run_terminal(rw_run_state_t s);
/* claimed, triggered, deploying: the states the unique index guards. */
bool rw_target_in_flight(rw_target_state_t s);
/* succeeded, failed, skipped, timed_out, cancelled. */
bool rw_target_terminal(rw_target_state_t s);
/* done, failed. */
bool rw_chunk_terminal(rw_chunk_state_t s);

/*
 * Final run state from its target counts: no failed -> completed; some
 * failed and none succeeded -> failed; otherwise partial_failed. Skipped
 * targets are not passed in: they never count as failures. Timed-out
 * targets count as failed.
 */
rw_run_state_t rw_run_outcome(long long succeeded, long long failed);

/*
 * Target state for a raw Lagoon deployment status. has_row false (Lagoon
 * shows no deployment for the environment yet) -> triggered.
 */
rw_target_state_t rw_target_from_lagoon(const char *lagoon_status,
                                        bool has_row);

/*
 * The one writer of deployment_runs.status. Checks the edge (illegal:
 * RW_ERR_STATE, logged, nothing written), then in one statement moves the
 * run from `from` to `to` (WHERE status = from), sets started_at on the
 * first entry into running, completed_at on entering a terminal state
 * (cleared again when a retry reopens the run), and appends the
 * run_transitions row with reason (may be NULL) only if the update hit.
 * No row moved: RW_ERR_CONFLICT (the run is not in `from`: someone else
 * moved it, or it does not exist). Postgres errors as rw_pg_exec returns
 * them. Works inside or outside a caller's transaction.
 */
rw_err_t rw_run_transition(rw_pg_t *pg, long long run_id, rw_run_state_t from,
                           rw_run_state_t to, bool retry, const char *reason,
                           char *errstr, size_t errlen);

/*
 * The one writer of run_targets.state. Checks the edge like
 * rw_run_transition, then one statement moves those of target_ids (n of
 * them; duplicates harmless) that belong to run_id and are in `from` to
 * `to`, setting error (NULL clears it), updated_at, claimed_at or
 * triggered_at on entering those states, and finished_at (now on entering
 * a terminal state, NULL otherwise). attempt, bulk_id and the Lagoon
 * columns are the callers' to write. Rows in any other state are left
 * alone: that is how redelivered messages stay harmless.
 *
 * On success *changed_ids (malloc'd, caller frees; NULL when none moved)
 * and *n_changed list the ids actually moved, in ascending order. Moving
 * none is not an error. changed_ids may be NULL when the caller only needs
 * the count. n == 0 writes nothing and returns RW_OK. Unique-index
 * violations (an instance in flight in another run) come back as
 * RW_ERR_PG_UNIQUE with nothing moved.
 */
rw_err_t rw_target_transition(rw_pg_t *pg, long long run_id,
                              const long long *target_ids, size_t n,
                              rw_target_state_t from, rw_target_state_t to,
                              bool retry, const char *error,
                              long long **changed_ids, size_t *n_changed,
                              char *errstr, size_t errlen);

/*
 * rw_target_transition that also records bulk_id (NULL = leave it) on the
 * moved rows: the claimed -> triggered step of a successful trigger. Both
 * functions start a new attempt on entering claimed (attempt + 1, bulk id
 * cleared).
 */
rw_err_t rw_target_transition_bulk(rw_pg_t *pg, long long run_id,
                                   const long long *target_ids, size_t n,
                                   rw_target_state_t from,
                                   rw_target_state_t to, bool retry,
                                   const char *error, const char *bulk_id,
                                   long long **changed_ids, size_t *n_changed,
                                   char *errstr, size_t errlen);

#endif
