/*
 * rw_throttle: the fleet-wide Lagoon throttle (docs/DESIGN.md, "The fleet
 * throttle"). Every worker obeys one row in Postgres (fleet_throttle):
 *
 *   builds in flight  at most min(max_in_flight, effective limit) targets
 *                     between claim and terminal, counted from run_targets
 *                     themselves plus the short leases of workers that took
 *                     budget and have not committed their claim yet;
 *   trigger rate      a token bucket of trigger_rate_per_min environments,
 *                     holding at most one chunk (GREATEST(burst, n));
 *   effective limit   lowered while Lagoon reports our builds queued, raised
 *                     again by one chunk per round once none are.
 *
 * A worker takes budget for a whole chunk (rw_throttle_take, one statement
 * serialised on the row), turns the lease into claimed targets in its
 * claim transaction (rw_throttle_settle) and gives nothing back: targets
 * leave the count as they become terminal, whoever writes that. Nothing
 * here touches Redis: losing Redis never means "unlimited".
 */
#ifndef RW_THROTTLE_H
#define RW_THROTTLE_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"
#include "rw_pg.h"

/* The throttle as read: limits, use, bucket. */
typedef struct rw_throttle_state {
    long long max_in_flight; /* configured; 0 = emergency brake */
    long long effective;     /* the adaptive limit (<= max_in_flight) */
    double rate_per_min;     /* trigger rate */
    long long burst;         /* bucket size: one chunk */
    long long in_flight;     /* targets in flight + live leases */
    double tokens;           /* in the bucket now */
    /* rw_throttle_read with detail only: */
    long long leased;         /* budget held by leases */
    long long queued;         /* in flight and reported queued by Lagoon */
    long long chunks_waiting; /* pending chunks of running runs */
    long long runs_waiting;   /* running runs with pending chunks */
    char updated_at[40];
    char updated_by[64];
} rw_throttle_state_t;

/* The limit in force: min(configured, effective). */
long long rw_throttle_limit(const rw_throttle_state_t *st);

/* What a take decided. */
typedef enum rw_throttle_verdict {
    RW_THROTTLE_GRANTED,
    RW_THROTTLE_BUDGET,       /* not enough builds in flight left */
    RW_THROTTLE_BRAKE,        /* max_in_flight is 0 */
    RW_THROTTLE_RATE,         /* not enough tokens: wait_ms says how long */
    RW_THROTTLE_UNCONFIGURED, /* no fleet row: seed it, nothing granted */
    RW_THROTTLE_RUN_LIMIT,    /* the run's own max_in_flight is reached */
} rw_throttle_verdict_t;

#define RW_THROTTLE_VERDICTS (RW_THROTTLE_RUN_LIMIT + 1)

const char *rw_throttle_verdict_name(rw_throttle_verdict_t v);

typedef struct rw_throttle_grant {
    rw_throttle_verdict_t verdict;
    long long lease_id; /* GRANTED only */
    long long in_flight;
    long long limit;
    double tokens;
    long long wait_ms;       /* RATE: until the bucket holds enough */
    long long run_in_flight; /* the run's targets and leases (with a limit) */
} rw_throttle_grant_t;

/*
 * Check the limits an operator or the environment asks for: max_in_flight
 * >= 0 and, unless 0, at least chunk_size (a chunk larger than the whole
 * budget could never be triggered); rate > 0. key_* name the setting in the
 * message ("ROLLWAVE_MAX_IN_FLIGHT", "--max-in-flight", ...).
 */
rw_err_t rw_throttle_validate(long long max_in_flight, const char *key_max,
                              double rate_per_min, const char *key_rate,
                              long long chunk_size, char *errstr,
                              size_t errlen);

/* "600/min", "10/s", "10/h" or "600" (per minute) -> per minute. */
rw_err_t rw_throttle_parse_rate(const char *text, double *per_min, char *errstr,
                                size_t errlen);

/*
 * Create the fleet row from the environment's defaults when there is none
 * (a row that exists is the operator's and is left alone).
 */
rw_err_t rw_throttle_seed(rw_pg_t *pg, long long max_in_flight,
                          double rate_per_min, long long burst, const char *by,
                          char *errstr, size_t errlen);

/*
 * Change the limits (max_in_flight < 0 or rate <= 0: keep that one). The
 * effective limit restarts at the new maximum: the operator's word wins
 * until Lagoon reports queued builds again. RW_ERR_NOT_FOUND: no row.
 */
rw_err_t rw_throttle_set(rw_pg_t *pg, long long max_in_flight,
                         double rate_per_min, const char *by, char *errstr,
                         size_t errlen);

/*
 * Read the throttle. adjust_every_s > 0 also runs the adaptive limit's
 * round when one is due fleet-wide (rw_throttle_adjust in SQL). detail
 * adds leases, queued builds and waiting chunks (costlier: for operators).
 * RW_ERR_NOT_FOUND: no fleet row.
 */
rw_err_t rw_throttle_read(rw_pg_t *pg, long long adjust_every_s, bool detail,
                          rw_throttle_state_t *st, char *errstr, size_t errlen);

/*
 * Take budget and tokens for n targets of run run_id, outside any
 * transaction (its own statement). run_limit > 0 is the run's own limit
 * (strategy.max_in_flight of its total): its targets in flight and leases
 * stay within it (RW_THROTTLE_RUN_LIMIT otherwise), except that a chunk
 * larger than the limit goes alone. run_limit <= 0: no run limit. On
 * GRANTED a lease of lease_s seconds holds the budget until
 * rw_throttle_settle; anything else grants nothing.
 */
rw_err_t rw_throttle_take(rw_pg_t *pg, long long n, const char *holder,
                          long long lease_s, long long run_id,
                          long long run_limit, rw_throttle_grant_t *g,
                          char *errstr, size_t errlen);

/*
 * Inside the claim transaction: the claimed targets now count themselves,
 * so the lease goes. RW_ERR_CONFLICT when the lease expired meanwhile (the
 * budget may have gone to another worker): roll the claim back.
 */
rw_err_t rw_throttle_settle(rw_pg_t *pg, long long lease_id, char *errstr,
                            size_t errlen);

/*
 * Say that this worker holds batches waiting for the throttle (best
 * effort; a no-op when another worker said so less than 5 s ago). The
 * recovery sweep leaves stale pending chunks alone while it is recent.
 */
void rw_throttle_note_waiting(rw_pg_t *pg);

/* Give a lease back unused (best effort: it expires anyway). */
void rw_throttle_release(rw_pg_t *pg, long long lease_id);

#endif
