/*
 * rw_state: the four state machines of rollwave (run, target, chunk, wave):
 * states, names, the legal edges, outcome and Lagoon-status rules, and the
 * one transition function per machine that writes a state change to
 * Postgres as a conditional UPDATE.
 *
 * Each machine has one table of legal edges; anything not in it is refused
 * (RW_ERR_STATE, logged, nothing written). Edges marked "retry" are legal
 * only when taken by a retry or replay.
 *
 * Every state column of Postgres is written here and nowhere else
 * (tests/unit/check_state_writers.py checks it): deployment_runs.status,
 * run_targets.state, run_chunks.state and run_waves.state.
 *
 * This module does not decide when a transition happens (the producer,
 * worker, poller and sweep do), does not open transactions (callers that
 * need several writes to be atomic wrap the calls in rw_pg_begin/commit)
 * and does not touch counters or any column other than the state's own
 * bookkeeping (timestamps, error text, attempt and bulk columns).
 */
#ifndef RW_STATE_H
#define RW_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

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

/*
 * The in-flight states (rw_target_in_flight) as an SQL list, for the SQL
 * embedded in C: the states the unique index guards, so one instance is in
 * at most one of them. test_state holds the list and the predicate
 * together. Counting the fleet's builds in flight is rw_throttle_in_flight()
 * in SQL.
 */
#define RW_TARGET_IN_FLIGHT_SQL "('claimed', 'triggered', 'deploying')"
/* The terminal states (rw_target_terminal) as an SQL list, likewise. */
#define RW_TARGET_TERMINAL_SQL                                                 \
    "('succeeded', 'failed', 'skipped', 'timed_out', 'cancelled')"

/*
 * The run-count rule, as the select list of every count of a run's targets
 * (rows with a `state` column): timed-out targets count as failed, and
 * cancelled ones as skipped, so that total = succeeded + failed + skipped
 * holds for an aborted run too. Gives the columns succeeded, failed and
 * skipped.
 */
#define RW_TARGET_COUNTS_SQL                                                   \
    "count(*) FILTER (WHERE state = 'succeeded') AS succeeded,"                \
    " count(*) FILTER (WHERE state IN ('failed', 'timed_out')) AS failed,"     \
    " count(*) FILTER (WHERE state IN ('skipped', 'cancelled')) AS skipped"

/* ---- chunk: run_chunks.state ------------------------------------------- */

typedef enum rw_chunk_state {
    RW_CHUNK_PENDING = 0, /* not yet sent to Lagoon */
    RW_CHUNK_TRIGGERING,  /* targets claimed, bulk mutation under way */
    RW_CHUNK_TRIGGERED,   /* bulk id recorded, being polled */
    RW_CHUNK_DONE,        /* every target of the chunk is terminal */
    RW_CHUNK_FAILED,      /* the bulk mutation failed for good, no bulk id */
    RW_CHUNK__COUNT
} rw_chunk_state_t;

/* ---- wave: run_waves.state --------------------------------------------- */
typedef enum rw_wave_state {
    RW_WAVE_PENDING = 0,        /* not released; an earlier wave runs */
    RW_WAVE_BAKING,             /* previous wave done; released at not_before */
    RW_WAVE_AWAITING_PROMOTION, /* manual bake: released by run promote */
    RW_WAVE_RUNNING,            /* released: its batches are in the outbox */
    RW_WAVE_DONE,               /* every chunk of the wave closed */
    RW_WAVE_CANCELLED,          /* its run was aborted before it ended */
    RW_WAVE__COUNT
} rw_wave_state_t;

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
const char *rw_wave_state_name(rw_wave_state_t s);
int rw_wave_state_parse(const char *name);

/*
 * True when from -> to is an edge of the machine. retry says the edge is
 * taken by a retry or replay; retry-only edges need it, ordinary edges
 * accept either value. Self-loops and out-of-range states are never legal.
 */
bool rw_run_edge_ok(rw_run_state_t from, rw_run_state_t to, bool retry);
bool rw_target_edge_ok(rw_target_state_t from, rw_target_state_t to,
                       bool retry);
bool rw_chunk_edge_ok(rw_chunk_state_t from, rw_chunk_state_t to, bool retry);
bool rw_wave_edge_ok(rw_wave_state_t from, rw_wave_state_t to, bool retry);

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
 * Target state for a raw Lagoon deployment status, classified by
 * rw_lagoon's status table: complete -> succeeded; failed, error,
 * cancelled -> failed; anything else, NULL included -> deploying. has_row
 * false (Lagoon shows no deployment for the environment yet) -> triggered.
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
                                   rw_target_state_t from, rw_target_state_t to,
                                   bool retry, const char *error,
                                   const char *bulk_id, long long **changed_ids,
                                   size_t *n_changed, char *errstr,
                                   size_t errlen);

/* One target's new standing after a poll. Strings are borrowed. */
typedef struct rw_target_update {
    long long target_id;
    long long instance_id;
    rw_target_state_t from;
    rw_target_state_t to;
    const char *lagoon_status;   /* raw Lagoon status, NULL if no row */
    const char *deployment_name; /* NULL if no row */
    time_t completed;            /* 0 = not completed */
    const char *error;           /* for failed / timed_out, else NULL */
    /* The health gate (health true writes these; false leaves them): */
    bool health;
    const char *route;        /* the environment's route; NULL = keep */
    int health_attempts;      /* checks made in this attempt */
    long long health_next_ms; /* next check due in ms; 0 = none due */
    const char *health_error; /* what the last failed check saw, or NULL */
} rw_target_update_t;

/*
 * The poll-result writer: n updates of one run, each with its own from
 * and to (from == to records only the Lagoon columns, and the health
 * gate's), and the instances' last_deployment_* fields copied from the
 * Lagoon rows (last_deployed_at only on a completed build; the instance
 * lifecycle status never), all in one statement. Every from != to edge is
 * checked first; an illegal one is RW_ERR_STATE and nothing is written. A
 * target no longer in its `from` is left alone, and so is one the update
 * would not change (its instance is still written). *n_moved counts the
 * target rows written. A new attempt of a target (entering claimed)
 * clears the gate's columns.
 */
rw_err_t rw_target_apply(rw_pg_t *pg, long long run_id,
                         const rw_target_update_t *u, size_t n, size_t *n_moved,
                         char *errstr, size_t errlen);

/* What a chunk transition writes besides the state. Unset = NULL / -1. */
typedef struct rw_chunk_change {
    /* entering triggering: the new attempt (the row must be at attempt-1)
     * and the bulk name of that attempt; sent_at is stamped with the
     * statement's own clock (the claim commits right before the send).
     * Any other
     * edge: the row must still be at this attempt (-1 = any), so the end
     * of an old attempt never lands on a newer one */
    int attempt;
    const char *bulk_name;
    /* entering triggered: Lagoon's bulk id (required); poll_attempts = 1 */
    const char *bulk_id;
    /* leaving triggered: the row must still be at this poll attempt */
    int poll_attempts;
    /* entering failed or pending: last_error (NULL clears it) */
    const char *error;
    /* entering pending on a replay: the replay that re-opened it */
    long long replay_id;
} rw_chunk_change_t;

#define RW_CHUNK_CHANGE_INIT                                                   \
    {                                                                          \
        -1, NULL, NULL, -1, NULL, 0                                            \
    }

/*
 * The one writer of run_chunks.state. Checks the edge like
 * rw_run_transition, then in one statement moves the chunks of run_id
 * listed in chunks (n of them; chunks NULL = every chunk of the run) that
 * are in `from` to `to`, writes the columns the edge owns (see
 * rw_chunk_change_t; entering done or failed sets finished_at, entering
 * pending clears the bulk, the poll count and finished_at), and appends one
 * chunk_transitions row with reason per chunk moved. *n_moved (may be
 * NULL) counts them; none moved is not an error here: single-chunk callers
 * that must win use rw_chunk_transition_one. ch may be NULL.
 */
rw_err_t rw_chunk_transition(rw_pg_t *pg, long long run_id, const int *chunks,
                             size_t n, rw_chunk_state_t from,
                             rw_chunk_state_t to, bool retry,
                             const rw_chunk_change_t *ch, const char *reason,
                             size_t *n_moved, char *errstr, size_t errlen);

/* One chunk; RW_ERR_CONFLICT when it did not move (not in `from`, or its
 * attempt / poll attempt is not the expected one). */
rw_err_t rw_chunk_transition_one(rw_pg_t *pg, long long run_id, int chunk,
                                 rw_chunk_state_t from, rw_chunk_state_t to,
                                 bool retry, const rw_chunk_change_t *ch,
                                 const char *reason, char *errstr,
                                 size_t errlen);

/*
 * The worker's claim (trigger step 3) as one statement, no transaction
 * needed: under a lock of the chunk row, if the chunk is still pending at
 * attempt - 1 and the throttle lease (lease_id > 0; 0 = none) is still
 * valid, the targets among target_ids that are still pending move to
 * claimed, and if at least one did, the chunk moves to triggering with
 * this attempt, bulk_name, sent_at stamped by the statement's clock and
 * its audit row (reason), and the lease is settled: from the commit on,
 * the claimed targets count themselves as in flight. Otherwise nothing
 * moves. A target whose instance another run has in flight fails the
 * whole statement on the markers' key (RW_ERR_PG_UNIQUE). The columns
 * written are those rw_target_transition and rw_chunk_transition write
 * for the same edges.
 */
typedef struct rw_chunk_claim_result {
    bool chunk_ok;      /* the chunk was pending at attempt - 1 */
    bool lease_ok;      /* no lease given, or it was still valid */
    bool moved;         /* the chunk moved to triggering */
    long long *claimed; /* the targets moved to claimed, ascending; free() */
    size_t n_claimed;
} rw_chunk_claim_result_t;

rw_err_t rw_chunk_claim(rw_pg_t *pg, long long run_id, int chunk, int attempt,
                        const char *bulk_name, const char *reason,
                        const long long *target_ids, size_t n,
                        long long lease_id, rw_chunk_claim_result_t *out,
                        char *errstr, size_t errlen);

/*
 * An accepted bulk recorded as one statement: the chunk triggering ->
 * triggered (guarded by state and attempt; bulk id, poll attempt 1, audit
 * row with reason) and, only if it moved, the claimed targets among
 * target_ids -> triggered with the bulk id, the instances' deployment run,
 * trigger time and next due time (next_s[i] > 0: that Unix second; 0:
 * unchanged), and the first poll event (poll_key, poll_json) in the
 * outbox (*outbox_id). A chunk no longer triggering at this attempt:
 * RW_ERR_CONFLICT, nothing written. The run's own pending -> running is
 * not part of it (rw_chunk_record_triggered puts the two in one
 * transaction for a run still pending).
 */
rw_err_t
rw_chunk_mark_triggered(rw_pg_t *pg, long long run_id, int chunk, int attempt,
                        const char *bulk_id, const char *reason,
                        const long long *target_ids,
                        const long long *instance_ids, const long long *next_s,
                        size_t n, const char *poll_key, const char *poll_json,
                        long long *outbox_id, char *errstr, size_t errlen);

/*
 * Bookkeeping of a chunk that stays in its state, each a conditional
 * UPDATE returning RW_ERR_CONFLICT when the row is not as expected:
 * - poll_step: a triggered chunk at poll attempt `attempt` moves to
 *   attempt + 1 (the poll was recorded; its next event is queued); when
 *   the poll asked Lagoon, lagoon_read_ago_ms (>= 0) before now, that is
 *   the chunk's lagoon_read_at; -1 leaves it;
 * - touch: updated_at = now(), so the sweep does not act on it again
 *   before its period.
 */
rw_err_t rw_chunk_poll_step(rw_pg_t *pg, long long run_id, int chunk,
                            int attempt, long long lagoon_read_ago_ms,
                            char *errstr, size_t errlen);
rw_err_t rw_chunk_touch(rw_pg_t *pg, long long run_id, int chunk, char *errstr,
                        size_t errlen);

/*
 * Deferred chunks (a reason of the chunk's own: a deployment window
 * closed, the run's per-run limit reached) wait in Postgres, not in Kafka:
 * - defer: a pending chunk still at attempt gets not_before (the given
 *   instant, or now + delay_ms when not_before is NULL; never before now)
 *   and the reason; the worker then acknowledges its batch;
 * - undefer: a pending chunk whose not_before has passed loses it, in the
 *   transaction that writes its batch again (the recovery sweep).
 * Both write no state and give RW_ERR_CONFLICT when the row moved on.
 * Every chunk transition clears not_before; deferred_reason stays as the
 * last reason given.
 */
rw_err_t rw_chunk_defer(rw_pg_t *pg, long long run_id, int chunk, int attempt,
                        const char *not_before, long long delay_ms,
                        const char *reason, char *errstr, size_t errlen);
rw_err_t rw_chunk_undefer(rw_pg_t *pg, long long run_id, int chunk,
                          char *errstr, size_t errlen);

/* last_error of a triggering chunk still at attempt (why it is in doubt),
 * so whoever resolves it can say what happened. */
rw_err_t rw_chunk_note_error(rw_pg_t *pg, long long run_id, int chunk,
                             int attempt, const char *error, char *errstr,
                             size_t errlen);

/*
 * The one writer of run_waves.state. Checks the edge like
 * rw_run_transition, then in one statement moves wave `wave` of run_id from
 * `from` to `to` and appends its wave_transitions row with reason. Entering
 * baking sets not_before = now() + bake_s; entering running sets
 * started_at and makes it the run's current_wave (the one place that
 * column is written); entering done stores succeeded and failed (the
 * wave's counts, >= 0) and finished_at, as does cancelled (counts left).
 * Not in `from`: RW_ERR_CONFLICT, nothing written.
 */
rw_err_t rw_wave_transition(rw_pg_t *pg, long long run_id, int wave,
                            rw_wave_state_t from, rw_wave_state_t to,
                            long long bake_s, long long succeeded,
                            long long failed, const char *reason, char *errstr,
                            size_t errlen);

#endif
