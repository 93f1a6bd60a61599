/*
 * bench_common: helpers shared by the benchmark programs (rollout.c,
 * throttle.c): the stack's environment, option parsing, clocks, HTTP,
 * Prometheus text, daemons as child processes and the benchmark database.
 * Not part of any daemon; nothing here decides what a benchmark measures.
 */
#ifndef RW_BENCH_COMMON_H
#define RW_BENCH_COMMON_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#include <libpq-fe.h>

#include "rw_config.h"
#include "rw_err.h"
#include "rw_pg.h"

/* Every statement of a benchmark carries this mark, so that its own
 * queries can be told apart from the pipeline's in pg_stat_statements. */
#define RW_BENCH_MARK "/* rollwave-bench */ "

/* The stack, as scripts/stack.sh env exports it. */
typedef struct rw_bench_env {
    char *pg_dsn;
    char *redis_url;
    char *kafka_brokers;
    char *lagoon_url;
    char *lagoon_token;
    char *sim_admin_url;
} rw_bench_env_t;

extern const rw_cfg_key_t rw_bench_env_keys[];
extern const size_t rw_bench_n_env_keys;

/* Set by SIGINT and SIGTERM once rw_bench_signals installed the handler. */
extern volatile sig_atomic_t rw_bench_interrupted;

/* SIGINT, SIGTERM set rw_bench_interrupted; SIGPIPE is ignored. */
void rw_bench_signals(void);

/* An integer option in [min, max]; prints "prog: ..." and returns -1 when
 * it is not one. */
int rw_bench_parse_ll(const char *prog, const char *opt, const char *val,
                      long long min, long long max, long long *out);

long long rw_bench_mono_ms(void);
/* Sleeps ms, cut short by rw_bench_interrupted. */
void rw_bench_sleep_ms(long long ms);
/* x / n, 0 when n is 0. */
double rw_bench_per(double x, double n);
/* A free loopback TCP port (closed again: a small race we accept). */
int rw_bench_free_port(void);

/*
 * GET (post_json NULL) or POST url. *out (may be NULL) receives the body,
 * which the caller frees. Returns the HTTP status, or -1 when no answer.
 */
long rw_bench_http(const char *url, const char *post_json, char **out);

/* Sum of every sample of metric `name` (any labels) whose label text
 * contains `label_has` (NULL = any), from Prometheus text. */
double rw_bench_metric_sum(const char *text, const char *name,
                           const char *label_has);

/* A daemon started by a benchmark. */
typedef struct rw_bench_daemon {
    char name[32]; /* "worker-1", "poller-2", "producer" */
    pid_t pid;
    int metrics_port;
    int exited;
    int status;
    long long hwm_kb; /* VmHWM just before stopping, or ru_maxrss */
    double cpu0_s;    /* user + system CPU seconds when the rollout began */
    double cpu_s;     /* ... used since, read just before stopping */
    char *metrics;    /* /metrics text scraped before stopping */
} rw_bench_daemon_t;

/*
 * Waits until every one of the nd consumer daemons d has owned partitions
 * in its group (rollwave_consumer_assigned_partitions) for a second, or
 * max_s seconds have passed (always, with more consumers than
 * partitions); says which on stderr. An error when one of them exited.
 */
rw_err_t rw_bench_wait_groups(rw_bench_daemon_t *d, size_t nd, long long max_s,
                              char *errstr, size_t errlen);

/* An environment for execve, NULL-terminated. */
typedef struct rw_bench_envset {
    char **v;
    size_t n, cap;
} rw_bench_envset_t;

/* A copy of this process's environment, to be amended per daemon. */
int rw_bench_env_copy(rw_bench_envset_t *e);
/* Set or replace key. */
int rw_bench_env_put(rw_bench_envset_t *e, const char *key, const char *val);
void rw_bench_env_free(rw_bench_envset_t *e);

/*
 * fork + execve bin with envp; stdout and stderr go to log_path. Only
 * async-signal-safe calls happen between fork and exec (a benchmark may
 * run threads).
 */
pid_t rw_bench_spawn(const char *bin, char *const argv[], char *const envp[],
                     const char *log_path);
long long rw_bench_vm_hwm_kb(pid_t pid);
/* User + system CPU seconds pid has used so far (/proc), or -1. */
double rw_bench_proc_cpu_s(pid_t pid);
/* The parent of pid, or -1. */
long rw_bench_parent_pid(pid_t pid);
/* CPU seconds of root and its children: root's own, those of its children
 * that exited (and were waited for) and those of the living ones; -1 if
 * root cannot be read. For a Postgres server: every backend's. */
double rw_bench_tree_cpu_s(pid_t root);
/* The machine's CPU seconds so far, all cores: busy (neither idle nor
 * waiting for I/O) and in all; 0 on success. */
int rw_bench_machine_cpu_s(double *busy, double *all);
/* "exited with status 1" / "killed by signal 11" for a wait status. */
const char *rw_bench_exit_text(int status, char *buf, size_t len);
/* Reap d if it exited; returns 1 when it is gone. */
int rw_bench_reap(rw_bench_daemon_t *d);
/* SIGTERM (drain), then SIGKILL after 15 s. */
void rw_bench_stop_daemon(rw_bench_daemon_t *d);

/* dsn with its dbname replaced by dbname, as a key=value string. */
rw_err_t rw_bench_dsn_with_db(const char *dsn, const char *dbname, char *out,
                              size_t len, char *errstr, size_t errlen);
/* "CREATE DATABASE" / "DROP DATABASE IF EXISTS" db, then suffix. */
rw_err_t rw_bench_admin_db(rw_pg_t *admin, const char *verb, const char *db,
                           const char *suffix, char *errstr, size_t errlen);

/*
 * The fleet: $1 store apps enabled with a 7-day cadence (2 days for beta),
 * $2 redeploy-eligible instances with a Lagoon target each, none
 * due-dated, 10% in the beta group, half of them claimed.
 */
extern const char rw_bench_sql_seed[];

/* Column col of row 0 as a number, 0 when NULL. */
double rw_bench_num(const PGresult *res, const char *col);
/* The database clock, seconds since the epoch (0 on error). */
double rw_bench_db_now(rw_pg_t *pg);

/*
 * The daemons' directory (given, or this program's own) and a log
 * directory (given and created if missing, or a new "<tmp>/<name>-XXXXXX"
 * under $TMPDIR). Both buffers are PATH_MAX long.
 */
rw_err_t rw_bench_dirs(const char *bin_opt, const char *log_opt,
                       const char *name, char *bin_dir, char *log_dir,
                       char *errstr, size_t errlen);

#endif
