/*
 * rollwave-bench-due: does the scheduler's due selection follow the due
 * set, not the fleet?
 *
 * For each fleet size (--fleets) it creates a fresh database, migrates it
 * and seeds, in one statement, a fleet of which exactly --due instances are
 * due in enabled store apps; of the rest, half belong to disabled store
 * apps (due themselves, were their app enabled) and half are due far in
 * the future. Then it runs `rollwave-producer --once` --ticks times, each
 * on the same due set (the runs a tick created are deleted before the
 * next), and prints per fleet the medians of the tick time from the
 * producer's own log, the process wall time, the due-selection statement's
 * execution time (pg_stat_statements) and the instances selected, and
 * finally the ratio of the largest fleet's figures to the smallest's.
 *
 * It measures; it does not judge: no figure is compared with a threshold.
 * The exit status is 1 when it could not run to the end or when a tick
 * selected other instances than the due ones. Only the producer is
 * started: the batches it publishes are not consumed.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "bench_common.h"
#include "rw_config.h"
#include "rw_err.h"
#include "rw_migrate.h"
#include "rw_pg.h"

#define MAX_FLEETS 8
#define MAX_TICKS  15

typedef struct opts {
    long long fleets[MAX_FLEETS];
    size_t n_fleets;
    long long due;
    long long store_apps;
    long long ticks;
    long long timeout_s;
    const char *bin_dir;
    const char *log_dir;
    int keep_db;
} opts_t;

/* One fleet's figures; times in ms, medians over the ticks. */
typedef struct fleet_res {
    long long fleet, due, disabled, future;
    long long selected, distinct, not_due, runs;
    double seed_s;
    double empty_wall_ms; /* producer --once on the empty database */
    double wall_ms;       /* producer --once process */
    double tick_ms;       /* leader_elected -> event=tick in its log */
    double due_ms;        /* the due-selection statement */
    double jit_ms;        /* of which JIT compilation */
    double stmt_ms;       /* every statement of the tick */
    long long due_calls;
    long long rss_kb;
} fleet_res_t;

typedef struct bench {
    opts_t o;
    rw_bench_env_t env;
    char bin_dir[PATH_MAX];
    char log_dir[PATH_MAX];
    char db[64];
    char dsn[2048];
    rw_pg_t *admin;
    rw_pg_t *pg;
    int pgss;
} bench_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: rollwave-bench-due [options]\n"
            "Due-selection benchmark: for each fleet size, a fresh database "
            "whose\nfleet has exactly --due instances due in enabled store "
            "apps (the\nrest: half in disabled store apps, half due far in "
            "the future), and\n`rollwave-producer --once` timed on it. "
            "Prints per fleet the tick\ntime (producer log), the process "
            "wall time, the due-selection\nstatement time "
            "(pg_stat_statements) and the instances selected,\nthen the "
            "ratio of the largest fleet's times to the smallest's.\n\n"
            "Options:\n"
            "  --fleets N,N,...   fleet sizes, ascending (default "
            "10000,1000000)\n"
            "  --due D            due instances in every fleet (default "
            "1000)\n"
            "  --store-apps A     enabled store apps, and as many disabled "
            "ones\n"
            "                     (default 10)\n"
            "  --ticks T          producer --once runs per fleet, medians "
            "printed\n"
            "                     (default 5)\n"
            "  --timeout S        give up on one producer --once after S "
            "seconds\n"
            "                     (default 600)\n"
            "  --bin-dir DIR      rollwave-producer's directory (default: "
            "this\n"
            "                     program's directory)\n"
            "  --log-dir DIR      producer logs (default: a new directory "
            "under\n"
            "                     $TMPDIR)\n"
            "  --keep-db          keep the benchmark databases\n"
            "  --help             this text\n\n"
            "The producer inherits the environment; the benchmark sets its\n"
            "ROLLWAVE_PG_DSN (the fleet's database), "
            "ROLLWAVE_KAFKA_TOPIC_PREFIX\n(unique per run), "
            "ROLLWAVE_MAX_PER_RUN (the fleet size, so that a\nselection "
            "beyond the due set would show), ROLLWAVE_METRICS_PORT=0 "
            "and\nROLLWAVE_LOG_LEVEL=info (the tick time is read from its "
            "log).\n\n");
    rw_config_help(out, "rollwave-bench-due",
                   "Environment read by the benchmark itself:",
                   rw_bench_env_keys, rw_bench_n_env_keys);
}

static int parse_fleets(const char *v, opts_t *o)
{
    char buf[256], *save = NULL;

    if (!v || strlen(v) >= sizeof(buf)) {
        fprintf(stderr, "rollwave-bench-due: --fleets needs a list such as "
                        "10000,1000000\n");
        return -1;
    }
    snprintf(buf, sizeof(buf), "%s", v);
    o->n_fleets = 0;
    for (char *t = strtok_r(buf, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        if (o->n_fleets == MAX_FLEETS) {
            fprintf(stderr, "rollwave-bench-due: at most %d fleets\n",
                    MAX_FLEETS);
            return -1;
        }
        if (rw_bench_parse_ll("rollwave-bench-due", "--fleets", t, 1, 100000000,
                              &o->fleets[o->n_fleets]))
            return -1;
        o->n_fleets++;
    }
    return o->n_fleets ? 0 : -1;
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long *dst = NULL, min = 0, max = 0;

        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--keep-db") == 0) {
            o->keep_db = 1;
            continue;
        } else if (strcmp(a, "--bin-dir") == 0 && v) {
            o->bin_dir = v;
            i++;
            continue;
        } else if (strcmp(a, "--log-dir") == 0 && v) {
            o->log_dir = v;
            i++;
            continue;
        } else if (strcmp(a, "--fleets") == 0) {
            if (parse_fleets(v, o))
                return -1;
            i++;
            continue;
        } else if (strcmp(a, "--due") == 0) {
            dst = &o->due, min = 1, max = 10000000;
        } else if (strcmp(a, "--store-apps") == 0) {
            dst = &o->store_apps, min = 1, max = 100000;
        } else if (strcmp(a, "--ticks") == 0) {
            dst = &o->ticks, min = 1, max = MAX_TICKS;
        } else if (strcmp(a, "--timeout") == 0) {
            dst = &o->timeout_s, min = 1, max = 86400;
        } else {
            fprintf(stderr,
                    "rollwave-bench-due: unknown argument '%s' (see "
                    "--help)\n",
                    a);
            return -1;
        }
        if (rw_bench_parse_ll("rollwave-bench-due", a, v, min, max, dst))
            return -1;
        i++;
    }
    for (size_t i = 0; i < o->n_fleets; i++)
        if (o->fleets[i] < o->due) {
            fprintf(stderr,
                    "rollwave-bench-due: fleet %lld is smaller than --due "
                    "%lld\n",
                    o->fleets[i], o->due);
            return -1;
        }
    return 0;
}

/* ---- SQL ---------------------------------------------------------------- */

/*
 * $1 enabled store apps and as many disabled ones (same cadence: only the
 * flag tells them apart); $2 instances, all redeploy-eligible with a
 * Lagoon target: the first $3 due now in the enabled apps, then even
 * numbers in the disabled apps (due now, were their app enabled) and odd
 * numbers in the enabled apps, due in 30 days and more. One statement.
 */
static const char SQL_SEED[] = RW_BENCH_MARK
    "WITH apps AS ("
    "  INSERT INTO store_apps (name, redeploy_enabled, redeploy_interval_days)"
    "  SELECT 'bench-app-' || g, g <= $1::int, 7"
    "    FROM generate_series(1, 2 * $1::int) g"
    "  RETURNING id, redeploy_enabled),"
    " arr AS (SELECT array_agg(id ORDER BY id) FILTER (WHERE redeploy_enabled)"
    "                  AS en,"
    "                array_agg(id ORDER BY id) FILTER"
    "                  (WHERE NOT redeploy_enabled) AS dis FROM apps)"
    " INSERT INTO app_instances (name, store_app_id, status, is_trial,"
    "     lagoon_project, lagoon_environment, next_redeploy_at)"
    " SELECT 'bench-i' || g,"
    "        CASE WHEN g > $3::bigint AND g % 2 = 0"
    "             THEN a.dis[1 + g % array_length(a.dis, 1)]"
    "             ELSE a.en[1 + g % array_length(a.en, 1)] END,"
    "        CASE WHEN g % 2 = 0 THEN 'running-healthy-claimed'"
    "             ELSE 'running-healthy-unclaimed' END,"
    "        false, 'bench-p' || g, 'main',"
    "        CASE WHEN g > $3::bigint AND g % 2 = 1"
    "             THEN now() + interval '30 days' + g * interval '1 second'"
    "        END"
    " FROM generate_series(1, $2::bigint) g, arr a";

/* The fleet as the scheduler sees it (without the in-flight check). */
static const char SQL_FLEET[] = RW_BENCH_MARK
    "SELECT count(*) AS total,"
    " count(*) FILTER (WHERE a.redeploy_enabled"
    "   AND COALESCE(i.next_redeploy_at, '-infinity') <= now()) AS due,"
    " count(*) FILTER (WHERE NOT a.redeploy_enabled) AS disabled,"
    " count(*) FILTER (WHERE a.redeploy_enabled"
    "   AND i.next_redeploy_at > now()) AS future"
    " FROM app_instances i JOIN store_apps a ON a.id = i.store_app_id"
    " WHERE NOT i.is_trial"
    "   AND i.status IN ('running-healthy-unclaimed',"
    "                    'running-healthy-claimed')"
    "   AND i.lagoon_project IS NOT NULL AND i.lagoon_environment IS NOT NULL";

/* What the tick selected: every target, and those that were not due. */
static const char SQL_SELECTED[] = RW_BENCH_MARK
    "SELECT count(*) AS selected, count(DISTINCT t.instance_id) AS distinct_i,"
    " count(*) FILTER (WHERE NOT a.redeploy_enabled"
    "   OR i.next_redeploy_at > now()) AS not_due,"
    " (SELECT count(*) FROM deployment_runs) AS runs"
    " FROM run_targets t JOIN app_instances i ON i.id = t.instance_id"
    " JOIN store_apps a ON a.id = i.store_app_id";

/* The runs of a tick and their batches go, so the next tick finds the
 * same due set (the selected instances have no other trace). */
static const char SQL_UNDO_RUNS[] = RW_BENCH_MARK "DELETE FROM deployment_runs";
static const char SQL_UNDO_OUTBOX[] = RW_BENCH_MARK "DELETE FROM outbox";

static const char SQL_PGSS_RESET[] =
    RW_BENCH_MARK "SELECT pg_stat_statements_reset(0, (SELECT oid FROM"
                  " pg_database WHERE datname = current_database()), 0)";

/*
 * The due selection is rw_runs.c's SQL_DUE_DECLARE, a cursor the producer
 * reads with FETCH: the DECLARE is counted once per app, the time is the
 * two's (the query runs as it is fetched). Its JIT time is part of its
 * execution time and shown apart: JIT follows the planner's cost estimate,
 * which grows with the fleet even when the rows read do not. Read through
 * to_jsonb, as pg_stat_statements before 1.10 has no JIT columns.
 */
#define DUE_DECLARE "s.query LIKE 'DECLARE rw_due %'"
#define DUE_STMTS                                                              \
    "(" DUE_DECLARE " OR s.query LIKE 'FETCH FORWARD % FROM rw_due')"
static const char SQL_PGSS_TICK[] = RW_BENCH_MARK
    "SELECT COALESCE(sum(calls) FILTER (WHERE " DUE_DECLARE
    "), 0)::bigint AS due_calls,"
    " COALESCE(sum(total_exec_time) FILTER (WHERE " DUE_STMTS
    "), 0)::float8 AS due_ms,"
    " COALESCE(sum(COALESCE((j->>'jit_generation_time')::float8, 0)"
    "   + COALESCE((j->>'jit_inlining_time')::float8, 0)"
    "   + COALESCE((j->>'jit_optimization_time')::float8, 0)"
    "   + COALESCE((j->>'jit_emission_time')::float8, 0)) FILTER"
    "   (WHERE " DUE_STMTS "), 0)::float8"
    "   AS due_jit_ms,"
    " COALESCE(sum(total_exec_time), 0)::float8 AS all_ms"
    " FROM pg_stat_statements s, to_jsonb(s) j"
    " WHERE s.dbid = (SELECT oid FROM pg_database"
    "                 WHERE datname = current_database())"
    "   AND s.query NOT LIKE '%rollwave-bench%'";

/* ---- the producer ------------------------------------------------------- */

/* Milliseconds since the epoch of a log line's "2026-01-02T03:04:05.678Z". */
static double log_ts_ms(const char *line)
{
    struct tm tm;
    const char *rest;
    int ms = 0;

    memset(&tm, 0, sizeof(tm));
    rest = strptime(line, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest || sscanf(rest, ".%3dZ", &ms) != 1)
        return -1;
    return (double)timegm(&tm) * 1000.0 + ms;
}

/*
 * The tick as the producer logs it: from "event=leader_elected" (the tick
 * starts right after) to "event=tick" (runs created; the relay follows).
 * -1 when either line is missing.
 */
static double tick_from_log(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    double t0 = -1, t1 = -1;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f)) {
        if (strstr(line, " event=leader_elected"))
            t0 = log_ts_ms(line);
        else if (strstr(line, " event=tick "))
            t1 = log_ts_ms(line);
    }
    fclose(f);
    return t0 >= 0 && t1 >= t0 ? t1 - t0 : -1;
}

/* One `rollwave-producer --once` on the current database. */
static rw_err_t run_producer(bench_t *b, long long max_per_run,
                             const char *log_path, double *wall_ms,
                             long long *rss_kb, char *errstr, size_t errlen)
{
    rw_bench_envset_t e;
    char bin[PATH_MAX + 32], v[64];
    char *argv[3] = {(char *)"rollwave-producer", (char *)"--once", NULL};
    struct rusage ru;
    long long t0, deadline;
    pid_t pid;
    int st = 0, rc = 0;

    snprintf(bin, sizeof(bin), "%s/rollwave-producer", b->bin_dir);
    if (rw_bench_env_copy(&e))
        rc = -1;
    rc |= rw_bench_env_put(&e, "ROLLWAVE_PG_DSN", b->dsn);
    snprintf(v, sizeof(v), "rwbench-due-%d-%lld.", (int)getpid(),
             (long long)time(NULL));
    rc |= rw_bench_env_put(&e, "ROLLWAVE_KAFKA_TOPIC_PREFIX", v);
    snprintf(v, sizeof(v), "%lld", max_per_run);
    rc |= rw_bench_env_put(&e, "ROLLWAVE_MAX_PER_RUN", v);
    rc |= rw_bench_env_put(&e, "ROLLWAVE_METRICS_PORT", "0");
    rc |= rw_bench_env_put(&e, "ROLLWAVE_LOG_LEVEL", "info");
    if (rc) {
        rw_bench_env_free(&e);
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM,
                          "cannot prepare the producer's environment");
    }
    t0 = rw_bench_mono_ms();
    pid = rw_bench_spawn(bin, argv, e.v, log_path);
    rw_bench_env_free(&e);
    if (pid < 0)
        return rw_err_set(errstr, errlen, RW_ERR_IO, "cannot start %s: %s", bin,
                          strerror(errno));
    deadline = t0 + b->o.timeout_s * 1000;
    /* polled, not a blocking wait, so that Ctrl-C and the timeout end it;
     * 2 ms of polling error against ticks of tens of ms and more */
    for (;;) {
        pid_t r = wait4(pid, &st, WNOHANG, &ru);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return rw_err_set(errstr, errlen, RW_ERR_IO, "wait4: %s",
                              strerror(errno));
        if (rw_bench_interrupted || rw_bench_mono_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return rw_err_set(
                errstr, errlen,
                rw_bench_interrupted ? RW_ERR_SHUTDOWN : RW_ERR_TIMEOUT,
                "producer --once %s (see %s)",
                rw_bench_interrupted ? "interrupted" : "timed out", log_path);
        }
        rw_bench_sleep_ms(2);
    }
    *wall_ms = (double)(rw_bench_mono_ms() - t0);
    *rss_kb = ru.ru_maxrss;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char how[48];
        return rw_err_set(errstr, errlen, RW_ERR_IO,
                          "producer --once %s (see %s)",
                          rw_bench_exit_text(st, how, sizeof(how)), log_path);
    }
    return RW_OK;
}

/* ---- one fleet ---------------------------------------------------------- */

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, c = *(const double *)y;
    return (a > c) - (a < c);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof(v[0]), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* A fresh, migrated database for fleet; pg_stat_statements if preloaded. */
static rw_err_t open_db(bench_t *b, long long fleet, char *errstr,
                        size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    const char *libs;

    snprintf(b->db, sizeof(b->db), "rwbench_due_%d_%lld", (int)getpid(), fleet);
    err = rw_bench_admin_db(b->admin, "DROP DATABASE IF EXISTS", b->db,
                            " WITH (FORCE)", errstr, errlen);
    if (!err)
        err = rw_bench_admin_db(b->admin, "CREATE DATABASE", b->db, "", errstr,
                                errlen);
    if (!err)
        err = rw_bench_dsn_with_db(b->env.pg_dsn, b->db, b->dsn, sizeof(b->dsn),
                                   errstr, errlen);
    if (!err)
        err = rw_pg_new(&b->pg, b->dsn, errstr, errlen);
    if (!err)
        err = rw_migrate_apply(b->pg, NULL, NULL, NULL, errstr, errlen);
    if (!err)
        err = rw_pg_exec(b->pg,
                         RW_BENCH_MARK "SELECT current_setting("
                                       "'shared_preload_libraries') AS l",
                         0, NULL, &res, errstr, errlen);
    if (err)
        goto out;
    libs = rw_pg_str(res, 0, "l");
    b->pgss = libs && strstr(libs, "pg_stat_statements");
    if (!b->pgss) {
        fprintf(stderr, "bench: pg_stat_statements is not in "
                        "shared_preload_libraries: no statement times\n");
        goto out;
    }
    err = rw_pg_exec(b->pg,
                     RW_BENCH_MARK
                     "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
                     0, NULL, NULL, errstr, errlen);
    /* the benchmark's own statements stay out of the figures; their mark
     * excludes them where this is not allowed */
    if (!err)
        rw_pg_exec(b->pg, RW_BENCH_MARK "SET pg_stat_statements.track = 'none'",
                   0, NULL, NULL, NULL, 0);
out:
    PQclear(res);
    return err;
}

static void close_db(bench_t *b)
{
    char errstr[512];

    rw_pg_destroy(b->pg);
    b->pg = NULL;
    if (!b->db[0])
        return;
    if (b->o.keep_db)
        fprintf(stderr, "bench: kept database %s\n", b->db);
    else if (rw_bench_admin_db(b->admin, "DROP DATABASE IF EXISTS", b->db,
                               " WITH (FORCE)", errstr, sizeof(errstr)))
        fprintf(stderr, "bench: drop database %s: %s\n", b->db, errstr);
    b->db[0] = '\0';
}

static rw_err_t seed(bench_t *b, fleet_res_t *r, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    char a_s[24], n_s[24], d_s[24];
    const char *p[3] = {a_s, n_s, d_s};
    long long t0 = rw_bench_mono_ms();

    snprintf(a_s, sizeof(a_s), "%lld", b->o.store_apps);
    snprintf(n_s, sizeof(n_s), "%lld", r->fleet);
    snprintf(d_s, sizeof(d_s), "%lld", b->o.due);
    fprintf(stderr, "bench: seeding %lld instances (%lld due) in %s\n",
            r->fleet, b->o.due, b->db);
    err = rw_pg_exec(b->pg, SQL_SEED, 3, p, NULL, errstr, errlen);
    if (!err)
        err = rw_pg_exec(b->pg, RW_BENCH_MARK "VACUUM (ANALYZE)", 0, NULL, NULL,
                         errstr, errlen);
    r->seed_s = (double)(rw_bench_mono_ms() - t0) / 1000.0;
    return err;
}

/* The due set before a tick: exactly what the fleet was seeded with. */
static rw_err_t check_fleet(bench_t *b, fleet_res_t *r, char *errstr,
                            size_t errlen)
{
    PGresult *res = NULL;
    rw_err_t err;

    err = rw_pg_exec(b->pg, SQL_FLEET, 0, NULL, &res, errstr, errlen);
    if (err)
        return err;
    r->due = rw_pg_ll(res, 0, "due", -1);
    r->disabled = rw_pg_ll(res, 0, "disabled", -1);
    r->future = rw_pg_ll(res, 0, "future", -1);
    if (rw_pg_ll(res, 0, "total", -1) != r->fleet || r->due != b->o.due)
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "fleet of %lld has %lld eligible instances, %lld "
                         "due; expected %lld and %lld",
                         r->fleet, rw_pg_ll(res, 0, "total", -1), r->due,
                         r->fleet, b->o.due);
    PQclear(res);
    return err;
}

/* One timed tick, what it selected, and the undoing of its runs. */
static rw_err_t one_tick(bench_t *b, fleet_res_t *r, int k, double *wall,
                         double *tick, double *due_ms, double *jit_ms,
                         double *all_ms, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char log[PATH_MAX + 64];

    snprintf(log, sizeof(log), "%s/producer-%lld-%d.log", b->log_dir, r->fleet,
             k + 1);
    err = check_fleet(b, r, errstr, errlen);
    if (!err && b->pgss)
        err = rw_pg_exec(b->pg, SQL_PGSS_RESET, 0, NULL, NULL, errstr, errlen);
    if (!err)
        err = run_producer(b, r->fleet, log, wall, &r->rss_kb, errstr, errlen);
    if (err)
        return err;
    *tick = tick_from_log(log);
    if (b->pgss) {
        err = rw_pg_exec(b->pg, SQL_PGSS_TICK, 0, NULL, &res, errstr, errlen);
        if (err)
            return err;
        r->due_calls = rw_pg_ll(res, 0, "due_calls", 0);
        *due_ms = rw_bench_num(res, "due_ms");
        *jit_ms = rw_bench_num(res, "due_jit_ms");
        *all_ms = rw_bench_num(res, "all_ms");
        PQclear(res);
        res = NULL;
    }
    err = rw_pg_exec(b->pg, SQL_SELECTED, 0, NULL, &res, errstr, errlen);
    if (err)
        return err;
    r->selected = rw_pg_ll(res, 0, "selected", -1);
    r->distinct = rw_pg_ll(res, 0, "distinct_i", -1);
    r->not_due = rw_pg_ll(res, 0, "not_due", -1);
    r->runs = rw_pg_ll(res, 0, "runs", -1);
    PQclear(res);
    fprintf(stderr,
            "bench: fleet %lld tick %d: %lld selected in %lld runs, tick "
            "%.0f ms (log), producer %.0f ms, due selection %.1f ms (JIT "
            "%.1f ms)\n",
            r->fleet, k + 1, r->selected, r->runs, *tick, *wall, *due_ms,
            *jit_ms);
    if (r->selected != b->o.due || r->distinct != b->o.due || r->not_due != 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "fleet %lld tick %d selected %lld instances (%lld "
                          "distinct, %lld not due); expected the %lld due",
                          r->fleet, k + 1, r->selected, r->distinct, r->not_due,
                          b->o.due);
    err = rw_pg_exec(b->pg, SQL_UNDO_RUNS, 0, NULL, NULL, errstr, errlen);
    if (!err)
        err = rw_pg_exec(b->pg, SQL_UNDO_OUTBOX, 0, NULL, NULL, errstr, errlen);
    /* the deleted rows would otherwise slow the next tick's probes and
     * every tick would measure a dirtier database than the one before */
    if (!err)
        err = rw_pg_exec(b->pg, RW_BENCH_MARK "VACUUM (ANALYZE)", 0, NULL, NULL,
                         errstr, errlen);
    return err;
}

static rw_err_t run_fleet(bench_t *b, fleet_res_t *r, char *errstr,
                          size_t errlen)
{
    rw_err_t err = RW_OK;
    double wall[MAX_TICKS], tick[MAX_TICKS], due[MAX_TICKS], jit[MAX_TICKS],
        all[MAX_TICKS];
    char log[PATH_MAX + 64];
    long long rss = 0;
    size_t n = (size_t)b->o.ticks;

    err = open_db(b, r->fleet, errstr, errlen);
    if (err)
        return err;
    /* what starting and an idle tick cost, to tell the selection apart */
    snprintf(log, sizeof(log), "%s/producer-%lld-empty.log", b->log_dir,
             r->fleet);
    err =
        run_producer(b, r->fleet, log, &r->empty_wall_ms, &rss, errstr, errlen);
    if (!err)
        err = seed(b, r, errstr, errlen);
    for (size_t k = 0; k < n && !err; k++) {
        wall[k] = tick[k] = due[k] = jit[k] = all[k] = -1;
        err = one_tick(b, r, (int)k, &wall[k], &tick[k], &due[k], &jit[k],
                       &all[k], errstr, errlen);
    }
    if (!err) {
        r->wall_ms = median(wall, n);
        r->tick_ms = median(tick, n);
        r->due_ms = median(due, n);
        r->jit_ms = median(jit, n);
        r->stmt_ms = median(all, n);
    }
    close_db(b);
    return err;
}

/* ---- report and main ---------------------------------------------------- */

static void print_ms(double ms)
{
    if (ms < 0)
        printf(" %10s", "-");
    else
        printf(" %10.1f", ms);
}

static void report(const bench_t *b, const fleet_res_t *r, size_t n)
{
    const fleet_res_t *lo = &r[0], *hi = &r[n - 1];

    printf("\nrollwave due-selection benchmark (%lld due per fleet, %lld "
           "enabled and %lld disabled\nstore apps; medians of %lld "
           "producer --once ticks; times in ms)\n",
           b->o.due, b->o.store_apps, b->o.store_apps, b->o.ticks);
    printf("  %10s %8s %9s %9s %8s %8s %10s %10s %10s %10s %10s %10s "
           "%8s\n",
           "fleet", "due", "disabled", "future", "selected", "seed s",
           "tick(log)", "producer", "empty run", "due stmt", "its JIT",
           "all stmts", "RSS MiB");
    for (size_t i = 0; i < n; i++) {
        printf("  %10lld %8lld %9lld %9lld %8lld %8.1f", r[i].fleet, r[i].due,
               r[i].disabled, r[i].future, r[i].selected, r[i].seed_s);
        print_ms(r[i].tick_ms);
        print_ms(r[i].wall_ms);
        print_ms(r[i].empty_wall_ms);
        print_ms(b->pgss ? r[i].due_ms : -1);
        print_ms(b->pgss ? r[i].jit_ms : -1);
        print_ms(b->pgss ? r[i].stmt_ms : -1);
        printf(" %8.1f\n", (double)r[i].rss_kb / 1024.0);
    }
    printf("  selected           every tick selected exactly the %lld due "
           "instances (none\n                     of a disabled store app "
           "or due in the future)\n",
           b->o.due);
    if (n < 2)
        return;
    printf("  ratio %lld/%lld  tick (log) %.2fx, due-selection statement "
           "%.2fx, producer --once %.2fx\n",
           hi->fleet, lo->fleet, rw_bench_per(hi->tick_ms, lo->tick_ms),
           rw_bench_per(hi->due_ms, lo->due_ms),
           rw_bench_per(hi->wall_ms, lo->wall_ms));
}

int main(int argc, char **argv)
{
    bench_t *b = calloc(1, sizeof(*b));
    fleet_res_t res[MAX_FLEETS];
    char errstr[1024] = "";
    rw_err_t err = RW_OK;
    size_t done = 0;
    int rc;

    if (!b)
        return 1;
    memset(res, 0, sizeof(res));
    b->o.fleets[0] = 10000;
    b->o.fleets[1] = 1000000;
    b->o.n_fleets = 2;
    b->o.due = 1000;
    b->o.store_apps = 10;
    b->o.ticks = 5;
    b->o.timeout_s = 600;
    rc = parse_args(argc, argv, &b->o);
    if (rc) {
        free(b);
        return rc > 0 ? 0 : 2;
    }
    err = rw_config_load(rw_bench_env_keys, rw_bench_n_env_keys, &b->env, NULL,
                         NULL, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "rollwave-bench-due: config error: %s\n", errstr);
        rw_config_free(rw_bench_env_keys, rw_bench_n_env_keys, &b->env);
        free(b);
        return 2;
    }
    rw_bench_signals();
    err = rw_bench_dirs(b->o.bin_dir, b->o.log_dir, "rollwave-bench-due",
                        b->bin_dir, b->log_dir, errstr, sizeof(errstr));
    if (!err)
        err = rw_pg_new(&b->admin, b->env.pg_dsn, errstr, sizeof(errstr));
    if (!err)
        fprintf(stderr, "bench: producer logs in %s\n", b->log_dir);
    for (size_t i = 0; i < b->o.n_fleets && !err; i++) {
        res[i].fleet = b->o.fleets[i];
        err = run_fleet(b, &res[i], errstr, sizeof(errstr));
        if (!err)
            done++;
    }
    if (done)
        report(b, res, done);
    if (err) {
        fprintf(stderr, "rollwave-bench-due: %s: %s\n", rw_err_name(err),
                errstr);
        rc = 1;
    }
    rw_pg_destroy(b->admin);
    rw_config_free(rw_bench_env_keys, rw_bench_n_env_keys, &b->env);
    free(b);
    return rc;
}
