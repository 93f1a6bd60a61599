/*
 * sim_model: the state of the simulated Lagoon: bulks, their deployments,
 * build scheduling under a concurrency cap and one build per environment,
 * fault draws, the overload delay and the counters of /sim/stats.
 * Thread-safe behind one mutex. It knows nothing about HTTP or GraphQL
 * syntax.
 *
 * Timings, outcome rates and reject patterns are applied when a bulk is
 * created, so /sim/config changes to them affect later bulks; the
 * concurrency cap, the overload model and the fault rates apply at once.
 *
 * As Lagoon's remote controller does, an environment builds one deployment
 * at a time: one that is ready while an older one of its environment runs
 * waits in queued (taking no slot of the cap) until that one ends, and a
 * deployment that appears (is created) while an older one of its
 * environment has not started running cancels that older one at once.
 *
 * Projects and environments are known from the bulks that named them
 * (rejected environments included): projectByName answers from that, with
 * each environment's visible deployments newest first.
 *
 * Deployment timings are fixed when a bulk is created (rows appear after
 * rows-delay-ms, then phase-ms in new and in pending, then a build of a
 * duration hashed from bulk id + environment); the only things decided
 * later are when a build starts, because a full concurrency cap or an
 * older build of its environment keeps it in queued, and whether a newer
 * deployment cancels it first. Every call first advances the schedule to
 * "now" by processing appear, start and end events in time order (two
 * heaps), so the cost is per event, never per stored deployment.
 */
#ifndef RW_SIM_MODEL_H
#define RW_SIM_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "rw_err.h"
#include "sim_buf.h"
#include "sim_buildlog.h"
#include "sim_config.h"

typedef struct rw_sim rw_sim_t;

#define RW_SIM_UUID_LEN 36

/* One environment of a bulk mutation; strings are the caller's. */
typedef struct rw_sim_target {
    const char *project;
    const char *environment;
} rw_sim_target_t;

/* One deployment row as deploymentsByBulkId shows it; valid in the callback. */
typedef struct rw_sim_row {
    long long id;
    const char *name;   /* lagoon-build-xxxxxx */
    const char *status; /* new, pending, queued, running, complete, ... */
    long long created_ms, started_ms, completed_ms; /* 0 = not reached */
    const char *project;
    size_t project_len;
    const char *environment;
    size_t environment_len;
    const char *bulk_id;
    const char *bulk_name;  /* may be NULL */
    const char *route_base; /* the environment's route: rw_sim_route_base */
} rw_sim_row_t;

typedef void (*rw_sim_row_fn)(const rw_sim_row_t *row, void *ud);

/* One environment of a project snapshot. */
typedef struct rw_sim_env_snap {
    const char *name;
    size_t name_len;
    const rw_sim_row_t *rows; /* visible rows: created desc, then id desc */
    size_t n_rows;
} rw_sim_env_snap_t;

/*
 * A copy of one project as projectByName shows it, taken under the lock
 * so that rendering needs none. Everything lives in one allocation.
 */
typedef struct rw_sim_project_snap {
    const char *name;
    size_t name_len;
    const rw_sim_env_snap_t *envs; /* in the order the sim first saw them */
    size_t n_envs;
    const char *route_base; /* as in rw_sim_row_t */
} rw_sim_project_snap_t;

typedef enum rw_sim_fault {
    RW_SIM_FAULT_NONE = 0,
    RW_SIM_FAULT_DROP,    /* close the connection, do not execute */
    RW_SIM_FAULT_HTTP500, /* answer 500, do not execute */
    RW_SIM_FAULT_GRAPHQL, /* answer a GraphQL error, do not execute */
    RW_SIM_FAULT_SLOW,    /* execute, then answer after slow_ms */
    /* bulk deploy mutations only: execute, then answer HTTP 500 */
    RW_SIM_FAULT_HTTP500_EXECUTED,
    /* bulk deploy mutations only: execute, then answer 200, cut in half */
    RW_SIM_FAULT_GARBLED_EXECUTED,
    RW_SIM_FAULT_KINDS /* count, not a fault */
} rw_sim_fault_t;

/* Copies cfg. */
rw_err_t rw_sim_new(const rw_sim_config_t *cfg, rw_sim_t **out, char *errstr,
                    size_t errlen);
void rw_sim_destroy(rw_sim_t *sim);

/*
 * The start of every environment's route (<base>/sim/env/<project>/
 * <environment>, both names percent-encoded): the route-base option, or
 * http://127.0.0.1:<port> when it is empty. Set once, after the server is
 * listening and before its port is announced; rows and snapshots point at
 * it for the sim's lifetime.
 */
void rw_sim_set_route_base(rw_sim_t *sim, int port);

/*
 * A GET of an environment's route (project and environment as the path
 * names them, len bytes each): the HTTP status it answers. 200 normally;
 * 503 when project/environment matches a health-fail pattern or is drawn
 * by health-fail-percent (a hash of seed and project/environment, so the
 * same environments fail every time); 404 for an environment no bulk ever
 * named. Counted in health_requests, health_failures (every answer but
 * 200) and, per known environment, health_checks.
 */
int rw_sim_health(rw_sim_t *sim, const char *project, size_t project_len,
                  const char *environment, size_t environment_len);

/* Wall-clock milliseconds, the clock of every deployment timestamp. */
long long rw_sim_now_ms(void);

/*
 * Accepts a bulk of n >= 1 environments and writes its new uuid v4 into
 * bulk_id (RW_SIM_UUID_LEN + 1 bytes). Environments matching a reject
 * pattern are counted as triggered but never get a deployment row.
 */
rw_err_t rw_sim_bulk_deploy(rw_sim_t *sim, const char *name,
                            const rw_sim_target_t *targets, size_t n,
                            const rw_sim_var_t *vars, size_t n_vars,
                            char *bulk_id, char *errstr, size_t errlen);

/* A deployment row and its build log (NULL while the build has not run;
 * len bytes, not NUL-terminated); both valid in the callback only. */
typedef void (*rw_sim_log_fn)(const rw_sim_row_t *row, const char *log,
                              size_t len, void *ud);

/*
 * deploymentByName: calls fn, under the lock, with the deployment called
 * name (lagoon-build-xxxxxx) of project/environment and its buildLog, and
 * returns true; false (fn not called) when there is none. The log is the
 * bulk's build variables, the log-secret bearer token and a PEM block in
 * a Lagoon-like log of the deployment's status (sim_buildlog), padded to
 * log-bytes; with probability log-error-percent it is Lagoon's storage
 * error string instead (counted in log_errors; every log in
 * logs_served). fn must not call back into sim.
 */
bool rw_sim_deployment_by_name(rw_sim_t *sim, const char *project,
                               size_t project_len, const char *environment,
                               size_t environment_len, const char *name,
                               rw_sim_log_fn fn, void *ud);

/*
 * Calls fn, under the lock and in id order, for each deployment row of the
 * bulk that has appeared by now. Unknown bulk ids have no rows. fn must not
 * call back into sim. Returns the number of rows.
 */
size_t rw_sim_bulk_rows(rw_sim_t *sim, const char *bulk_id, rw_sim_row_fn fn,
                        void *ud);

/*
 * Snapshot of the project named name (len bytes). *out is NULL when no
 * bulk ever named the project; otherwise the caller frees it with
 * rw_sim_project_snap_free. Fails only when out of memory.
 */
rw_err_t rw_sim_project_snapshot(rw_sim_t *sim, const char *name, size_t len,
                                 rw_sim_project_snap_t **out);
/* Accepts NULL. */
void rw_sim_project_snap_free(rw_sim_project_snap_t *snap);

/*
 * Counts one /graphql request holding deploy_fields bulk mutations and
 * draws its fault; *slow_ms is set for RW_SIM_FAULT_SLOW.
 */
rw_sim_fault_t rw_sim_graphql_request(rw_sim_t *sim, int deploy_fields,
                                      long long *slow_ms);

/*
 * The extra delay of a /graphql answer under the overload model at this
 * moment: min(overload-max-ms, (in progress - overload-knee) *
 * overload-ms-per-build) when builds in progress (running + queued) exceed
 * a knee > 0, else 0. Counts the request as delayed when it is > 0. The
 * caller waits, outside the lock.
 */
long long rw_sim_overload_ms(rw_sim_t *sim);

/* Records one /graphql request's time from arrival to queued answer. */
void rw_sim_api_latency(rw_sim_t *sim, long long us);

/*
 * GET /sim/stats; with_triggers=false leaves out the per-env map,
 * with_timeline adds trigger_timeline (environments triggered per second
 * since the first trigger, for at most 7200 seconds; later ones are counted
 * in dropped_environments and set truncated).
 * graphql_requests: authorised POST /graphql requests, faulted or not.
 * rows_requests: deploymentsByBulkId fields answered (known bulk or not).
 * deploy_requests: bulkDeployEnvironmentLatest fields asked for, including
 * refused and faulted ones. bulk_calls: bulks created. environments_
 * triggered: environments in created bulks, rejected ones included (as are
 * triggers and duplicate_triggers, the environments triggered more than
 * once). peak_concurrent_builds / running_builds / queued_builds: builds in
 * running (or waiting in queued) at once. in_progress_builds: running +
 * queued now; peak_in_progress_builds: its highest value. superseded_
 * cancelled: deployments cancelled by a newer one of their environment.
 * overload_delayed: /graphql answers the overload model delayed.
 * api_latency_ms: count, mean, max and p95 (to 1/16) of the times passed
 * to rw_sim_api_latency. health_requests / health_failures: GETs of routes
 * and those not answered 200; with_triggers adds health_checks, the GETs
 * per known project/environment (those with one at least). Every counter
 * starts again at a reset.
 */
void rw_sim_stats_json(rw_sim_t *sim, bool with_triggers, bool with_timeline,
                       rw_sim_buf_t *b);

/*
 * POST /sim/config: applies the object atomically (all or nothing) and
 * writes the whole resulting configuration to answer.
 */
rw_err_t rw_sim_configure(rw_sim_t *sim, const json_t *obj,
                          rw_sim_buf_t *answer, char *errstr, size_t errlen);

/* The current configuration as JSON (no secrets). */
void rw_sim_config_get(rw_sim_t *sim, rw_sim_buf_t *b);

/* Forgets all bulks, deployments and counters; keeps the configuration. */
void rw_sim_reset(rw_sim_t *sim);

#endif
