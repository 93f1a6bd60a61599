/*
 * rw_itest_fleet: one isolated rollout pipeline per test scenario, for the
 * end-to-end integration tests. A fleet owns a fresh database (migrations
 * applied), a unique Kafka topic prefix (so topics, consumer groups and
 * Redis lock keys are private), its own rollwave-lagoon-sim child process
 * (so simulator counters belong to the scenario) and the daemons it starts
 * as child processes with the fleet's ROLLWAVE_* environment.
 *
 * It also holds the invariant checker every scenario ends with. It does
 * not seed instances (scenarios do that with SQL) and does not decide what
 * a scenario asserts beyond the invariants. Every helper fails the running
 * test on error; none returns one.
 */
#ifndef RW_ITEST_FLEET_H
#define RW_ITEST_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "rw_itest.h"
#include "rw_pg.h"

typedef struct rw_itest_fleet rw_itest_fleet_t;

/*
 * Create a fleet. The simulator starts with fast timings (rows after
 * 200 ms, 100 ms in new and in pending, builds of 200..600 ms); sim_config
 * (JSON for POST /sim/config, may be NULL) changes them before anything
 * runs. bulk_chunk_size (0 = 50) is passed to the daemons as
 * ROLLWAVE_BULK_CHUNK_SIZE and is the cap the invariant checker holds
 * every Lagoon call to.
 */
rw_itest_fleet_t *rw_itest_fleet_new(const char *sim_config,
                                     long long bulk_chunk_size);

/*
 * Kill whatever children are still running (SIGKILL, no assertions), stop
 * the simulator, delete the fleet's Redis keys and drop its database.
 * Meant for teardown, after a failure too. NULL ok.
 */
void rw_itest_fleet_destroy(rw_itest_fleet_t *f);

/* Set (or replace) one ROLLWAVE_* variable for children started later. */
void rw_itest_fleet_set(rw_itest_fleet_t *f, const char *key,
                        const char *value);

const char *rw_itest_fleet_prefix(const rw_itest_fleet_t *f);
const char *rw_itest_fleet_dsn(const rw_itest_fleet_t *f);
long long rw_itest_fleet_chunk_size(const rw_itest_fleet_t *f);

/* The fleet's own Postgres connection (owned by the fleet). */
rw_pg_t *rw_itest_fleet_pg(rw_itest_fleet_t *f);

/*
 * Start a daemon of this build ("rollwave-worker", "rollwave-poller") in
 * the background; its consumer group is "<prefix><role>" so that all
 * workers of a fleet share one group and all pollers another.
 */
pid_t rw_itest_fleet_start(rw_itest_fleet_t *f, const char *bin,
                           const char *role);

/*
 * SIGTERM every running daemon, wait for each (30 s at most) and assert
 * that each exited with status 0.
 */
void rw_itest_fleet_stop_all(rw_itest_fleet_t *f);

/*
 * Run a binary of this build to completion with argv (argv[0] is the
 * binary name; NULL-terminated). Its stdout goes into out (may be NULL).
 * Returns its exit status (-1 when killed by a signal).
 */
int rw_itest_fleet_run(rw_itest_fleet_t *f, const char *const *argv, char *out,
                       size_t outlen);

/* rollwave-producer --once; asserts exit status 0. */
void rw_itest_fleet_tick(rw_itest_fleet_t *f);

/* ---- SQL ---- */

/* Run sql with text parameters; the caller PQclear()s the result. */
PGresult *rw_itest_fleet_q(rw_itest_fleet_t *f, const char *sql, int n,
                           const char *const *params);

/* First column of the first row as an integer (NULL = -1). */
long long rw_itest_fleet_ll(rw_itest_fleet_t *f, const char *sql, int n,
                            const char *const *params);

/*
 * Remember every instance's lifecycle status; the invariant checker then
 * asserts no status changed since. Call after seeding.
 */
void rw_itest_fleet_snapshot(rw_itest_fleet_t *f);

/*
 * Wait until at least min_runs runs exist and every run is final
 * (completed, partial_failed, failed, cancelled). On timeout the test
 * fails naming each run's status and its targets' states.
 */
void rw_itest_fleet_wait_final(rw_itest_fleet_t *f, long long min_runs,
                               long long timeout_ms);

/*
 * Wait until the SQL count (first column) reaches at least want; fails
 * with what on timeout.
 */
void rw_itest_fleet_wait_count(rw_itest_fleet_t *f, const char *sql,
                               long long want, long long timeout_ms,
                               const char *what);

/* ---- the simulator ---- */

/* GET (body NULL) or POST JSON to the simulator's admin API. */
json_t *rw_itest_fleet_sim(rw_itest_fleet_t *f, const char *path,
                           const char *body);
void rw_itest_fleet_sim_config(rw_itest_fleet_t *f, const char *json);
/* One integer of /sim/stats (faults_injected.<x> as "faults.<x>"). */
long long rw_itest_fleet_sim_stat(rw_itest_fleet_t *f, const char *key);

/* ---- Redis ---- */

/* Number of "<prefix>lock:*" keys in Redis right now. */
long long rw_itest_fleet_lock_keys(rw_itest_fleet_t *f);

/* ---- invariants ---- */

/*
 * The invariants of DESIGN.md section 7, checked after every scenario:
 * every run final and finalized exactly once (one run_transitions row into
 * a final state) with counts equal to its targets; every target and chunk
 * terminal; no instance status changed since the snapshot; no outbox row
 * unpublished and no Redis lock left (both given a few seconds, since they
 * follow the commit that ends a run); no dead letter; the simulator saw
 * each environment exactly as often as targets carry a bulk id for it, and
 * no call carried more than the chunk size.
 */
void rw_itest_fleet_check(rw_itest_fleet_t *f);

/* Print the tail of every child's log (on the way to a failure). */
void rw_itest_fleet_dump_logs(rw_itest_fleet_t *f);

#endif
