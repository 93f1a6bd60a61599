/*
 * rw_runs: creates deployment runs (scheduled, manual, retry) with their
 * targets, chunks, waves (the run's strategy: canaries first, then the
 * most outdated) and the first wave's outbox rows in one Postgres
 * transaction each. The scheduler and rollwavectl both go through here, so
 * a manual run is built exactly like a scheduled one. Later waves are
 * released by rw_waves.
 *
 * It does not trigger, poll or finalize runs (worker/, poller/,
 * rw_progress_finalize) nor publish the outbox rows it writes (rw_outbox).
 */
#ifndef RW_RUNS_H
#define RW_RUNS_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"
#include "rw_pg.h"

/* Eligible lifecycle statuses, as an SQL list and a C predicate. */
#define RW_ELIGIBLE_STATUSES_SQL                                               \
    "('running-healthy-unclaimed', 'running-healthy-claimed')"
bool rw_runs_status_eligible(const char *status);

typedef struct rw_run_spec {
    const char *trigger_source; /* "scheduled" | "manual" | "retry" */
    const char *triggered_by;   /* operator or "scheduler"; may be NULL */
    bool variables_only;        /* LAGOON_VARIABLES_ONLY=true redeploy */
    long long chunk_size;       /* used when the store app sets none */
    /* > 0: next_redeploy_at of an instance skipped for its Lagoon target
     * moves this far ahead (the scheduler); 0 leaves it alone */
    long long failure_backoff_s;
    /* the run waits for its targets' deployment windows (the worker holds
     * chunks while they are closed); the scheduler also picks only
     * instances whose window is open. Scheduled runs always do. */
    bool respect_windows;
    /* strategy JSON for this run (manual override, see rw_strategy.h);
     * NULL = the store app's store_apps.strategy */
    const char *strategy;
} rw_run_spec_t;

typedef struct rw_run_summary {
    long long id;
    char uuid[40];
    long long store_app_id; /* 0 for a run mixing store apps */
    long long targets;      /* every target, skipped ones included */
    long long skipped;
    int chunks;
    int waves; /* 0 when nothing is to be triggered */
    /* set when the run failed at creation because its store app's
     * strategy does not validate: "strategy: <why>" */
    char error[200];
} rw_run_summary_t;

/* One instance a manual run could not take, and why. */
typedef struct rw_run_skip {
    long long instance_id;
    char reason[96];
} rw_run_skip_t;

/*
 * Scheduler tick: due instances (eligible status, not trial, store app
 * enabled with an interval, Lagoon target known, not pending or in flight
 * in any run, next_redeploy_at null or past, with spec->respect_windows
 * their deployment window open now: a closed one keeps next_redeploy_at),
 * most outdated first, at most
 * max_instances, FOR UPDATE SKIP LOCKED; one run per store app, each in a
 * transaction of its own with its outbox rows. An instance whose Lagoon target
 * the codec refuses (see rw_codec_check_name) or that repeats another's project
 * and environment becomes a skipped target with the reason; the others are
 * scheduled. *runs (malloc'd, caller frees) lists the runs created; none due is
 * *n_runs = 0. On an error the runs committed before it are still listed (and
 * real). made_cb (may be NULL) is called after each run's commit, before the
 * next app is selected: the producer relays that run's batches there, so
 * the workers start on the first app while the others are still scheduled.
 */
typedef void (*rw_runs_made_cb)(const rw_run_summary_t *run, void *ud);
rw_err_t rw_runs_schedule(rw_pg_t *pg, long long max_instances,
                          const rw_run_spec_t *spec, rw_runs_made_cb made_cb,
                          void *ud, rw_run_summary_t **runs, size_t *n_runs,
                          char *errstr, size_t errlen);

/*
 * Manual run over the given instances (trials allowed) or, with ids NULL,
 * over every instance of store_app_id. Instances that cannot be redeployed
 * become skipped targets and are listed in *skips (malloc'd, caller frees;
 * may be NULL when the caller does not want them). Unknown instance ids:
 * RW_ERR_NOT_FOUND naming them, nothing written. No instance at all:
 * RW_ERR_NOT_FOUND. An override strategy (spec->strategy) that does not
 * validate: RW_ERR_INVALID_ARG with "strategy: <why>", nothing written.
 */
rw_err_t rw_runs_create_manual(rw_pg_t *pg, const long long *ids, size_t n_ids,
                               long long store_app_id,
                               const rw_run_spec_t *spec, rw_run_summary_t *run,
                               rw_run_skip_t **skips, size_t *n_skips,
                               char *errstr, size_t errlen);

#endif
