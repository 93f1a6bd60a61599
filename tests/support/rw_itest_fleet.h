/*
 * rw_itest_fleet: one isolated rollout pipeline per test scenario, for the
 * end-to-end integration tests. A fleet owns a fresh database (migrations
 * applied), a unique Kafka topic prefix (so topics, consumer groups and
 * Redis lock keys are private), its own rollwave-lagoon-sim child process
 * (so simulator counters belong to the scenario) and the daemons it starts
 * as child processes with the fleet's ROLLWAVE_* environment.
 *
 * It also holds the invariant checker every scenario ends with, and the
 * hooks of the fault suite: kill -9 and restart of a child, a daemon that
 * is expected to die (the worker's fault hook) and is started again, a
 * devbroker of the fleet's own whose broker 1 can be taken down, restarts
 * of the stack's Redis and Postgres (found through ROLLWAVE_STACK_DIR), a
 * Redis proxy that answers with error replies on demand, Postgres made
 * read-only for a while, and a scan of the children's logs for sanitizer
 * reports.
 *
 * It does not seed instances (scenarios do that with SQL) and does not
 * decide what a scenario asserts beyond the invariants. Every helper fails
 * the running test on error; none returns one. Children are started with
 * ASAN_OPTIONS=detect_leaks=1:exitcode=23, so a sanitized daemon that
 * leaks does not stop with status 0. RW_ITEST_KEEP_LOGS=1 keeps the
 * fleet's directory (children's logs) after teardown.
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
 * Like rw_itest_fleet_start with one more variable for this child only
 * (key NULL = none). With respawn, the child may exit with status 137 (the
 * worker's ROLLWAVE_FAULT_EXIT_AFTER_TRIGGER_PCT hook): the wait helpers
 * then start it again with the same settings instead of failing.
 */
pid_t rw_itest_fleet_start_with(rw_itest_fleet_t *f, const char *bin,
                                const char *role, const char *key,
                                const char *value, bool respawn);

/*
 * Like rw_itest_fleet_start_with for a child that is expected to die by
 * the worker's fault hook (status 137) and stay down: the wait helpers
 * accept that exit, count it, and do not start it again.
 */
pid_t rw_itest_fleet_start_mortal(rw_itest_fleet_t *f, const char *bin,
                                  const char *role, const char *key,
                                  const char *value);

/* How many mortal children have exited by the fault hook so far. */
long long rw_itest_fleet_fault_exits(rw_itest_fleet_t *f);

/* How many times respawned children were started again. */
long long rw_itest_fleet_respawns(const rw_itest_fleet_t *f);

/*
 * Start a one-shot binary of this build in the background (argv as for
 * rw_itest_fleet_run, at most 8 arguments); its exit is not a failure.
 */
pid_t rw_itest_fleet_spawn(rw_itest_fleet_t *f, const char *const *argv);

/* Wait for a child at most timeout_ms: its wait status, -1 on timeout. */
int rw_itest_fleet_wait(rw_itest_fleet_t *f, pid_t pid, long long timeout_ms);

/* Whether a child is still running (reaps it if not). */
bool rw_itest_fleet_alive(rw_itest_fleet_t *f, pid_t pid);

/*
 * SIGKILL a child (if still running) and reap it; with restart, start it
 * again with the same settings and return the new pid (else 0).
 */
pid_t rw_itest_fleet_kill9(rw_itest_fleet_t *f, pid_t pid, bool restart);

/* pid of the i-th running daemon started from bin, 0 if none. */
pid_t rw_itest_fleet_running(rw_itest_fleet_t *f, const char *bin, size_t i);

/*
 * SIGTERM every running daemon, wait for each (30 s at most) and assert
 * that each exited with status 0.
 */
void rw_itest_fleet_stop_all(rw_itest_fleet_t *f);

/*
 * The same for one daemon; with restart, start it again and return the
 * new pid (else 0).
 */
pid_t rw_itest_fleet_stop_one(rw_itest_fleet_t *f, pid_t pid, bool restart);

/*
 * Fail at once if a daemon exited on its own; start respawned ones again.
 * The wait helpers do this on every round.
 */
void rw_itest_fleet_poll_kids(rw_itest_fleet_t *f);

/*
 * Run a binary of this build to completion with argv (argv[0] is the
 * binary name; NULL-terminated). Its stdout goes into out (may be NULL).
 * Returns its exit status (-1 when killed by a signal).
 */
int rw_itest_fleet_run(rw_itest_fleet_t *f, const char *const *argv, char *out,
                       size_t outlen);

/* rw_itest_fleet_run that also keeps the child's stderr in err (may be
 * NULL), for commands whose refusals say why on stderr. */
int rw_itest_fleet_run_err(rw_itest_fleet_t *f, const char *const *argv,
                           char *out, size_t outlen, char *err, size_t errlen);

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
 * One round of rw_itest_fleet_wait_final: whether at least min_runs runs
 * exist and all are final (daemons checked as there).
 */
bool rw_itest_fleet_all_final(rw_itest_fleet_t *f, long long min_runs);

/*
 * Wait until the SQL count (first column) reaches at least want; fails
 * with what on timeout.
 */
void rw_itest_fleet_wait_count(rw_itest_fleet_t *f, const char *sql,
                               long long want, long long timeout_ms,
                               const char *what);

/* An enabled store app on a 7-day cadence; chunk_size 0 = the fleet's. */
long long rw_itest_fleet_add_app(rw_itest_fleet_t *f, long long chunk_size);

/*
 * n instances "<prefix><k>" of app (k from 1), all due now and eligible:
 * even k running-healthy-claimed, odd k running-healthy-unclaimed, Lagoon
 * target project "<prefix><k>", environment "main".
 */
void rw_itest_fleet_add_instances(rw_itest_fleet_t *f, long long app,
                                  const char *prefix, int n);

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

/* Milliseconds left on instance_id's lock (PTTL: -2 none, -1 no TTL). */
long long rw_itest_fleet_lock_pttl(rw_itest_fleet_t *f, long long instance_id);

/*
 * Send one command (argv, NULL-terminated) to the stack's Redis directly,
 * not through a fault proxy; fails the test on an error reply. For faults
 * the helpers above do not cover, such as FLUSHALL in the middle of a
 * rollout.
 */
void rw_itest_fleet_redis_cmd(rw_itest_fleet_t *f, const char *const *argv);

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

/*
 * Dead letters the check expects (default 0, and then exactly none):
 * scenarios that inject n poison messages say so, and the check wants at
 * least n letters (delivery is at least once, so a poison may be
 * dead-lettered twice); the scenario checks what each letter is.
 */
void rw_itest_fleet_expect_dead_letters(rw_itest_fleet_t *f, long long n);

/*
 * Triggers beyond the targets with a bulk id that the check expects
 * (default 0): a retry or replay of a target whose build failed triggers
 * its environment again on the same target row, which keeps one bulk id.
 * The check then wants exactly n such triggers in all; the scenario checks
 * which environments they were.
 */
void rw_itest_fleet_expect_extra_triggers(rw_itest_fleet_t *f, long long n);

/*
 * Lagoon triggers beyond the targets that carry a bulk id, summed over
 * environments: 0 unless some environment was triggered twice for one
 * target attempt (or a trigger went unrecorded).
 */
long long rw_itest_fleet_duplicates(rw_itest_fleet_t *f);

/*
 * Whether the log of the child started as pid (running or not) holds
 * needle, e.g. an event= line that shows the child reached a state.
 */
bool rw_itest_fleet_log_has(rw_itest_fleet_t *f, pid_t pid, const char *needle);
/* How many times needle occurs in that log (0 when it cannot be read). */
size_t rw_itest_fleet_log_count(rw_itest_fleet_t *f, pid_t pid,
                                const char *needle);

/* Print the tail of the latest children's logs (on the way to a failure). */
void rw_itest_fleet_dump_logs(rw_itest_fleet_t *f);

/*
 * Fail if a child's log holds an AddressSanitizer, LeakSanitizer or
 * UndefinedBehaviorSanitizer report. Call after stopping the daemons.
 */
void rw_itest_fleet_scan_logs(rw_itest_fleet_t *f);

/* ---- Kafka ---- */

/*
 * Give the fleet a rollwave-devbroker of its own (brokers brokers, topics
 * of the fleet's prefix, 6 partitions) and point children started later
 * at it. Call before starting daemons.
 */
void rw_itest_fleet_private_broker(rw_itest_fleet_t *f, int brokers);

/* The bootstrap string the fleet's children use. */
const char *rw_itest_fleet_brokers(rw_itest_fleet_t *f);

/* Take broker 1 of the private devbroker down (SIGUSR1) / up (SIGUSR2). */
void rw_itest_fleet_broker_down(rw_itest_fleet_t *f);
void rw_itest_fleet_broker_up(rw_itest_fleet_t *f);

/* ---- the stack's servers (ROLLWAVE_STACK_DIR) ---- */

/*
 * Shut the stack's Redis down (nosave: every lock is lost), keep it down
 * for down_ms, start it again on the same port, wait until it answers.
 */
void rw_itest_fleet_restart_redis(rw_itest_fleet_t *f, long long down_ms);

/*
 * The two halves of rw_itest_fleet_restart_redis, for scenarios that probe
 * something while Redis is down: stop waits until it no longer answers,
 * start until it answers again.
 */
void rw_itest_fleet_stop_redis(rw_itest_fleet_t *f);
void rw_itest_fleet_start_redis(rw_itest_fleet_t *f);

/*
 * Put a Redis fault proxy (rw_itest_redis_proxy) between the fleet's
 * children and the stack's Redis: children started later get its address
 * as ROLLWAVE_REDIS_URL (same database and credentials). The harness's own
 * look-ups (lock keys, cleanup) still go to Redis directly. Call before
 * starting daemons; the fleet stops the proxy when destroyed.
 */
void rw_itest_fleet_redis_proxy(rw_itest_fleet_t *f);

/*
 * Through the proxy, answer every command of the children with the error
 * reply error ("LOADING Redis is loading the dataset in memory", without
 * the '-'); NULL forwards again.
 */
void rw_itest_fleet_redis_fault(rw_itest_fleet_t *f, const char *error);

/* Commands the proxy answered with an error so far. */
long long rw_itest_fleet_redis_faulted(rw_itest_fleet_t *f);

/*
 * on: make the stack's Postgres read-only for every new transaction
 * (ALTER SYSTEM SET default_transaction_read_only = on, pg_reload_conf()),
 * wait until a new session sees it, then terminate every other session on
 * the fleet's database but the fleet's own connection, so the daemons
 * reconnect into read-only sessions, as after a failover to a standby.
 * off: undo it (ALTER SYSTEM RESET) and wait until a new session writes.
 * The fleet undoes it when destroyed, after a failure too. Returns the
 * number of sessions terminated (0 for off).
 */
long long rw_itest_fleet_pg_read_only(rw_itest_fleet_t *f, bool on);

/*
 * Stop the stack's Postgres (fast: sessions are cut), keep it down for
 * down_ms, start it again on the same port, wait until it accepts
 * connections. Every fleet's connections must reconnect.
 */
void rw_itest_fleet_restart_pg(rw_itest_fleet_t *f, long long down_ms);

#endif
