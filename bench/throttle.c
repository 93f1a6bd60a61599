/*
 * rollwave-bench-throttle: the fleet throttle benchmark.
 *
 * On a running stack (scripts/bench.sh --throttle brings one up) it rolls
 * one fleet out twice, each time in a fresh database with fresh topics,
 * against the Lagoon simulator with fixed build times:
 *
 *   throttled    ROLLWAVE_MAX_IN_FLIGHT = C on a simulator without a build
 *                cap, so whatever bounds Lagoon's builds is rollwave's
 *                own doing; compared with the ideal N * T / C;
 *   unthrottled  the throttle off (limit and rate out of reach, adaptive
 *                limit idle) on a simulator that runs C builds at once,
 *                queues the rest and slows every API answer down once more
 *                than C builds are in progress: what Lagoon goes through
 *                without the throttle.
 *
 * Both simulators have the same overload model; the throttled one never
 * reaches its knee when the throttle holds. It prints completion times,
 * the simulator's peaks and API latency, the workers' throttle metrics
 * and where the time of one budget slot goes. It measures; it does not
 * judge, except to say whether Lagoon saw more builds than the limit.
 * It does not start the stack or build anything.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "bench_common.h"
#include "rw_config.h"
#include "rw_err.h"
#include "rw_migrate.h"
#include "rw_pg.h"

#define PROG        "rollwave-bench-throttle"
#define MAX_DAEMONS 64
/* far above any fleet: the throttle never says no */
#define NO_LIMIT "100000000"
#define NO_RATE  "1000000000"

/* ---- options ---------------------------------------------------------- */

typedef struct opts {
    long long instances;
    long long build_ms;
    long long max_in_flight;
    long long workers;
    long long pollers;
    long long chunk_size;
    long long store_apps;
    long long rows_delay_ms;
    long long first_poll_delay_ms;
    long long poll_interval_ms;
    long long overload_ms;     /* per build in progress above the knee */
    long long overload_max_ms; /* cap of one answer's overload delay */
    long long timeout_s;
    long long warmup_s;
    long long progress_ms;
    int unthrottled; /* run the comparison rollout too */
    const char *bin_dir;
    const char *log_dir;
    const char *child_log_level;
} opts_t;

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: " PROG " [options]\n"
        "Fleet throttle benchmark: one rollout with the throttle at C builds\n"
        "in flight (compared with the ideal N*T/C), then the same rollout\n"
        "with the throttle off against a simulator that caps builds at C\n"
        "and slows its API down beyond C builds in progress.\n\n"
        "Options:\n"
        "  --instances N             fleet size (default 5000)\n"
        "  --build-ms T              simulator build time, every build "
        "(default 2000)\n"
        "  --max-in-flight C         ROLLWAVE_MAX_IN_FLIGHT of the throttled "
        "rollout,\n"
        "                            Lagoon's cap and overload knee of the "
        "other\n"
        "                            (default 100)\n"
        "  --workers W               workers (default 2)\n"
        "  --pollers P               pollers (default 2)\n"
        "  --chunk-size S            ROLLWAVE_BULK_CHUNK_SIZE (default 50)\n"
        "  --store-apps A            store apps, one run each (default 10)\n"
        "  --rows-delay-ms MS        simulator rows delay (default 100)\n"
        "  --first-poll-delay-ms MS  ROLLWAVE_FIRST_POLL_DELAY_MS (default: "
        "T plus\n"
        "                            the rows delay, when a build ends)\n"
        "  --poll-interval-ms MS     ROLLWAVE_POLL_INTERVAL_MS (default "
        "250)\n"
        "  --overload-ms-per-build M simulator overload delay per build in\n"
        "                            progress above C (default 5)\n"
        "  --overload-max-ms MS      longest overload delay (default 10000, "
        "below\n"
        "                            the Lagoon client's 30 s timeout)\n"
        "  --no-unthrottled          skip the rollout without the throttle\n"
        "  --timeout S               give up on a rollout after S seconds "
        "(default 300)\n"
        "  --warmup S                wait at most S s after the daemons "
        "are healthy for\n"
        "                            every consumer to own partitions "
        "(default 60; 0:\n"
        "                            no wait)\n"
        "  --progress-ms MS          progress line interval (default 1000)\n"
        "  --bin-dir DIR             daemon binaries (default: this "
        "program's directory)\n"
        "  --log-dir DIR             daemon logs (default: a new directory "
        "under $TMPDIR)\n"
        "  --child-log-level L       ROLLWAVE_LOG_LEVEL of the daemons "
        "(default warn)\n"
        "  --help                    this text\n\n"
        "The daemons inherit the environment (ROLLWAVE_THROTTLE_WAIT_MS, for\n"
        "one, is passed on); the benchmark sets their database, topic prefix,\n"
        "consumer groups, ROLLWAVE_MAX_PER_RUN=N, ROLLWAVE_BULK_CHUNK_SIZE,\n"
        "the poll delays, ROLLWAVE_MAX_IN_FLIGHT, "
        "ROLLWAVE_TRIGGER_RATE_PER_MIN\n"
        "(" NO_RATE ", never binding), ROLLWAVE_THROTTLE_ADJUST_S (3600 "
        "without\nthe throttle), ROLLWAVE_METRICS_PORT and "
        "ROLLWAVE_LOG_LEVEL.\n\n");
    rw_config_help(out, PROG, "Environment read by the benchmark itself:",
                   rw_bench_env_keys, rw_bench_n_env_keys);
}

typedef struct opt_int {
    const char *flag;
    size_t off;
    long long min, max;
} opt_int_t;

#define OI(flag, field, min, max)                                              \
    {                                                                          \
        flag, offsetof(opts_t, field), min, max                                \
    }

static const opt_int_t int_opts[] = {
    OI("--instances", instances, 1, 10000000),
    OI("--build-ms", build_ms, 0, 3600000),
    OI("--max-in-flight", max_in_flight, 1, 100000),
    OI("--workers", workers, 1, MAX_DAEMONS / 2),
    OI("--pollers", pollers, 1, MAX_DAEMONS / 2),
    OI("--chunk-size", chunk_size, 1, 1000),
    OI("--store-apps", store_apps, 1, 100000),
    OI("--rows-delay-ms", rows_delay_ms, 0, 600000),
    OI("--first-poll-delay-ms", first_poll_delay_ms, 0, 3600000),
    OI("--poll-interval-ms", poll_interval_ms, 1, 3600000),
    OI("--overload-ms-per-build", overload_ms, 0, 3600000),
    OI("--overload-max-ms", overload_max_ms, 0, 3600000),
    OI("--timeout", timeout_s, 1, 86400),
    OI("--warmup", warmup_s, 0, 600),
    OI("--progress-ms", progress_ms, 100, 600000),
};
#define N_INT_OPTS (sizeof(int_opts) / sizeof(int_opts[0]))

/* 0 = go on, 1 = exit 0 (help), -1 = usage error. */
static int parse_args(int argc, char **argv, opts_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **str = NULL;
        size_t k;

        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "--no-unthrottled") == 0) {
            o->unthrottled = 0;
            continue;
        }
        if (strcmp(a, "--bin-dir") == 0)
            str = &o->bin_dir;
        else if (strcmp(a, "--log-dir") == 0)
            str = &o->log_dir;
        else if (strcmp(a, "--child-log-level") == 0)
            str = &o->child_log_level;
        if (str) {
            if (!v) {
                fprintf(stderr, PROG ": %s needs a value\n", a);
                return -1;
            }
            *str = v;
            i++;
            continue;
        }
        for (k = 0; k < N_INT_OPTS; k++)
            if (strcmp(a, int_opts[k].flag) == 0)
                break;
        if (k == N_INT_OPTS) {
            fprintf(stderr, PROG ": unknown argument '%s' (see --help)\n", a);
            return -1;
        }
        if (rw_bench_parse_ll(PROG, a, v, int_opts[k].min, int_opts[k].max,
                              (long long *)((char *)o + int_opts[k].off)))
            return -1;
        i++;
    }
    /* the throttle refuses a limit below one chunk (rw_throttle_validate) */
    if (o->max_in_flight < o->chunk_size) {
        fprintf(stderr,
                PROG ": --max-in-flight must be at least --chunk-size\n");
        return -1;
    }
    return 0;
}

/* ---- one rollout ------------------------------------------------------ */

/* What one rollout measured. Times are seconds. */
typedef struct result {
    int finished; /* every run final before the timeout */
    double elapsed_s;
    long long targets, terminal, succeeded;
    double completion_s; /* first trigger -> last run final */
    /* the simulator */
    long long peak_running, peak_in_progress, overload_delayed;
    long long api_count;
    double api_mean, api_p95, api_max;
    long long peak_trigger_per_s;
    /* the workers' /metrics */
    double wait_sum, wait_count, held_peak;
    double granted, budget, rate;
    /* one budget slot, per chunk (means) */
    long long chunks, waited_chunks;
    double call_s, build_s, poll_lag_s, wake_s, claim_s;
} result_t;

typedef struct phase {
    const char *name;
    int throttled;
    char sim_config[512];
    char db[64];
    char dsn[2048];
    char prefix[64];
    rw_pg_t *pg;
    rw_bench_daemon_t d[MAX_DAEMONS];
    size_t nd;
    size_t nworkers; /* d[0 .. nworkers-1] are the workers */
    rw_bench_daemon_t producer;
    result_t r;
} phase_t;

typedef struct bench {
    opts_t o;
    rw_bench_env_t env;
    rw_pg_t *admin;
    char log_dir[PATH_MAX];
    char bin_dir[PATH_MAX];
} bench_t;

static const char SQL_PROGRESS[] = RW_BENCH_MARK
    "SELECT (SELECT count(*) FROM deployment_runs) AS runs,"
    " (SELECT count(*) FROM deployment_runs WHERE status IN"
    "   ('completed', 'partial_failed', 'failed', 'cancelled')) AS runs_final,"
    " count(*) AS targets,"
    " count(*) FILTER (WHERE state IN ('claimed', 'triggered', 'deploying'))"
    "   AS in_flight,"
    " count(*) FILTER (WHERE state = 'pending') AS pending,"
    " count(*) FILTER (WHERE state = 'succeeded') AS succeeded,"
    " count(*) FILTER (WHERE state IN ('succeeded', 'failed', 'skipped',"
    "                  'timed_out', 'cancelled')) AS terminal"
    " FROM run_targets";

/* From the first trigger sent to the last run final, database clock. */
static const char SQL_COMPLETION[] = RW_BENCH_MARK
    "SELECT extract(epoch FROM (SELECT max(completed_at) FROM deployment_runs)"
    "   - (SELECT min(sent_at) FROM run_chunks)) AS completion_s";

/*
 * Where one budget slot's time goes, per chunk: the trigger call (sent ->
 * recorded); the build, until a poll saw the chunk's last build finished;
 * and for a chunk that had to wait for budget, from the last target
 * finished before its claim (what freed the budget) to the claim, then
 * from the claim to the send. Lagoon stamps its completed time in whole
 * seconds, too coarse here, so a build's end is taken as its trigger plus
 * $1 ms (rows delay + build time): exact on a simulator without a build
 * cap, where no build waits in queued.
 */
static const char SQL_SLOT[] = RW_BENCH_MARK
    "WITH ch AS ("
    "  SELECT c.sent_at, c.triggered_at, min(t.claimed_at) AS claimed,"
    "         max(t.finished_at) AS finished"
    "  FROM run_chunks c"
    "  JOIN run_targets t ON t.run_id = c.run_id AND t.chunk = c.chunk"
    "  WHERE c.sent_at IS NOT NULL"
    "  GROUP BY c.id),"
    " w AS ("
    "  SELECT ch.*, (SELECT max(x.finished_at) FROM run_targets x"
    "                WHERE x.finished_at <= ch.claimed) AS freed,"
    "         ch.triggered_at + make_interval(secs => $1::float8 / 1000)"
    "           AS built"
    "  FROM ch)"
    " SELECT count(*) AS chunks,"
    "  count(freed) AS waited,"
    "  avg(extract(epoch FROM triggered_at - sent_at)) AS call_s,"
    "  avg(extract(epoch FROM built - sent_at)) AS build_s,"
    "  avg(extract(epoch FROM finished - built)) AS poll_lag_s,"
    "  avg(extract(epoch FROM claimed - freed)) AS wake_s,"
    "  avg(extract(epoch FROM sent_at - claimed)) AS claim_s"
    " FROM w";

static const char *bin_path(const bench_t *b, const char *name, char *buf,
                            size_t len)
{
    snprintf(buf, len, "%s/%s", b->bin_dir, name);
    return buf;
}

/* The daemon environment: inherited, plus the rollout's settings. */
static int daemon_env(const bench_t *b, const phase_t *ph, rw_bench_envset_t *e,
                      const char *group, int metrics_port)
{
    char v[64];
    int rc = 0;

    if (rw_bench_env_copy(e))
        return -1;
    rc |= rw_bench_env_put(e, "ROLLWAVE_PG_DSN", ph->dsn);
    rc |= rw_bench_env_put(e, "ROLLWAVE_KAFKA_TOPIC_PREFIX", ph->prefix);
    if (group) {
        snprintf(v, sizeof(v), "%s%s", ph->prefix, group);
        rc |= rw_bench_env_put(e, "ROLLWAVE_KAFKA_GROUP", v);
    }
    snprintf(v, sizeof(v), "%lld", b->o.instances);
    rc |= rw_bench_env_put(e, "ROLLWAVE_MAX_PER_RUN", v);
    snprintf(v, sizeof(v), "%lld", b->o.chunk_size);
    rc |= rw_bench_env_put(e, "ROLLWAVE_BULK_CHUNK_SIZE", v);
    snprintf(v, sizeof(v), "%lld", b->o.first_poll_delay_ms);
    rc |= rw_bench_env_put(e, "ROLLWAVE_FIRST_POLL_DELAY_MS", v);
    snprintf(v, sizeof(v), "%lld", b->o.poll_interval_ms);
    rc |= rw_bench_env_put(e, "ROLLWAVE_POLL_INTERVAL_MS", v);
    snprintf(v, sizeof(v), "%lld", b->o.max_in_flight);
    rc |= rw_bench_env_put(e, "ROLLWAVE_MAX_IN_FLIGHT",
                           ph->throttled ? v : NO_LIMIT);
    rc |= rw_bench_env_put(e, "ROLLWAVE_TRIGGER_RATE_PER_MIN", NO_RATE);
    /* without the throttle the adaptive limit must stay idle too: it would
     * bring the limit down to what Lagoon runs within one round */
    if (!ph->throttled)
        rc |= rw_bench_env_put(e, "ROLLWAVE_THROTTLE_ADJUST_S", "3600");
    if (!getenv("ROLLWAVE_KAFKA_SESSION_TIMEOUT_MS"))
        rc |= rw_bench_env_put(e, "ROLLWAVE_KAFKA_SESSION_TIMEOUT_MS", "6000");
    snprintf(v, sizeof(v), "%d", metrics_port);
    rc |= rw_bench_env_put(e, "ROLLWAVE_METRICS_PORT", v);
    rc |= rw_bench_env_put(e, "ROLLWAVE_LOG_LEVEL", b->o.child_log_level);
    return rc ? -1 : 0;
}

static rw_err_t start_daemon(const bench_t *b, phase_t *ph,
                             rw_bench_daemon_t *d, const char *bin_name,
                             const char *group, char *const extra_arg,
                             char *errstr, size_t errlen)
{
    rw_bench_envset_t e = {0};
    char bin[PATH_MAX + 64], log[PATH_MAX + 128];
    char *argv[3] = {(char *)bin_name, extra_arg, NULL};

    d->metrics_port = rw_bench_free_port();
    if (d->metrics_port <= 0 || daemon_env(b, ph, &e, group, d->metrics_port)) {
        rw_bench_env_free(&e);
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "cannot prepare %s",
                          d->name);
    }
    snprintf(log, sizeof(log), "%s/%s-%s.log", b->log_dir, ph->name, d->name);
    d->pid =
        rw_bench_spawn(bin_path(b, bin_name, bin, sizeof(bin)), argv, e.v, log);
    rw_bench_env_free(&e);
    if (d->pid < 0)
        return rw_err_set(errstr, errlen, RW_ERR_IO, "cannot start %s: %s",
                          d->name, strerror(errno));
    return RW_OK;
}

static rw_err_t died(const bench_t *b, const phase_t *ph,
                     const rw_bench_daemon_t *d, const char *when, char *errstr,
                     size_t errlen)
{
    char how[48];

    return rw_err_set(errstr, errlen, RW_ERR_IO, "%s %s %s (see %s/%s-%s.log)",
                      d->name, rw_bench_exit_text(d->status, how, sizeof(how)),
                      when, b->log_dir, ph->name, d->name);
}

static rw_err_t start_consumers(const bench_t *b, phase_t *ph, char *errstr,
                                size_t errlen)
{
    rw_err_t err = RW_OK;
    long long deadline;

    for (long long i = 0; i < b->o.workers && !err; i++) {
        rw_bench_daemon_t *w = &ph->d[ph->nd++];
        snprintf(w->name, sizeof(w->name), "worker-%lld", i + 1);
        err = start_daemon(b, ph, w, "rollwave-worker", "worker", NULL, errstr,
                           errlen);
    }
    ph->nworkers = ph->nd;
    for (long long i = 0; i < b->o.pollers && !err; i++) {
        rw_bench_daemon_t *p = &ph->d[ph->nd++];
        snprintf(p->name, sizeof(p->name), "poller-%lld", i + 1);
        err = start_daemon(b, ph, p, "rollwave-poller", "poller", NULL, errstr,
                           errlen);
    }
    if (err)
        return err;
    deadline = rw_bench_mono_ms() + 60000;
    for (size_t i = 0; i < ph->nd; i++) {
        char url[128];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz",
                 ph->d[i].metrics_port);
        while (rw_bench_http(url, NULL, NULL) != 200) {
            if (rw_bench_reap(&ph->d[i]))
                return died(b, ph, &ph->d[i], "at start", errstr, errlen);
            if (rw_bench_mono_ms() > deadline || rw_bench_interrupted)
                return rw_err_set(errstr, errlen, RW_ERR_TIMEOUT,
                                  "%s not healthy within 60 s", ph->d[i].name);
            rw_bench_sleep_ms(100);
        }
    }
    if (b->o.warmup_s > 0) {
        fprintf(stderr,
                "bench: %zu daemons healthy; waiting up to %lld s for the "
                "consumer groups to form\n",
                ph->nd, b->o.warmup_s);
        return rw_bench_wait_groups(ph->d, ph->nd, b->o.warmup_s, errstr,
                                    errlen);
    }
    return RW_OK;
}

/* A fresh database, migrated and seeded. */
static rw_err_t setup_db(bench_t *b, phase_t *ph, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    char n_s[24], a_s[24];
    const char *p[2] = {a_s, n_s};

    snprintf(ph->db, sizeof(ph->db), "rwbench_thr_%s_%d_%lld", ph->name,
             (int)getpid(), (long long)time(NULL));
    snprintf(ph->prefix, sizeof(ph->prefix), "rwbench-thr-%s-%d-%lld.",
             ph->name, (int)getpid(), (long long)time(NULL));
    err = rw_bench_admin_db(b->admin, "CREATE DATABASE", ph->db, "", errstr,
                            errlen);
    if (err)
        return err;
    err = rw_bench_dsn_with_db(b->env.pg_dsn, ph->db, ph->dsn, sizeof(ph->dsn),
                               errstr, errlen);
    if (!err)
        err = rw_pg_new(&ph->pg, ph->dsn, errstr, errlen);
    if (!err)
        err = rw_migrate_apply(ph->pg, NULL, NULL, NULL, errstr, errlen);
    if (err)
        return err;
    snprintf(n_s, sizeof(n_s), "%lld", b->o.instances);
    snprintf(a_s, sizeof(a_s), "%lld", b->o.store_apps);
    err = rw_pg_exec(ph->pg, rw_bench_sql_seed, 2, p, NULL, errstr, errlen);
    if (!err)
        err = rw_pg_exec(ph->pg, RW_BENCH_MARK "ANALYZE", 0, NULL, NULL, errstr,
                         errlen);
    return err;
}

/* The simulator's settings for this rollout, then its counters zeroed. */
static rw_err_t setup_sim(const bench_t *b, phase_t *ph, char *errstr,
                          size_t errlen)
{
    char url[600];

    snprintf(ph->sim_config, sizeof(ph->sim_config),
             "{\"rows_delay_ms\":%lld,\"phase_ms\":0,\"build_min_ms\":%lld,"
             "\"build_max_ms\":%lld,\"fail_rate\":0,\"cancel_rate\":0,"
             "\"max_concurrent_builds\":%lld,\"overload_knee\":%lld,"
             "\"overload_ms_per_build\":%lld,\"overload_max_ms\":%lld}",
             b->o.rows_delay_ms, b->o.build_ms, b->o.build_ms,
             ph->throttled ? 0 : b->o.max_in_flight, b->o.max_in_flight,
             b->o.overload_ms, b->o.overload_max_ms);
    snprintf(url, sizeof(url), "%s/sim/config", b->env.sim_admin_url);
    if (rw_bench_http(url, ph->sim_config, NULL) != 200)
        return rw_err_set(errstr, errlen, RW_ERR_IO,
                          "POST /sim/config refused %s", ph->sim_config);
    snprintf(url, sizeof(url), "%s/sim/reset", b->env.sim_admin_url);
    if (rw_bench_http(url, "{}", NULL) != 200)
        return rw_err_set(errstr, errlen, RW_ERR_IO, "POST /sim/reset failed");
    return RW_OK;
}

static json_t *sim_stats(const bench_t *b, int timeline)
{
    char url[600], *body = NULL;
    json_t *j = NULL;

    snprintf(url, sizeof(url), "%s/sim/stats?triggers=false%s",
             b->env.sim_admin_url, timeline ? "&timeline=true" : "");
    if (rw_bench_http(url, NULL, &body) == 200 && body)
        j = json_loads(body, 0, NULL);
    free(body);
    return j;
}

static long long jint(const json_t *j, const char *key)
{
    return (long long)json_integer_value(json_object_get(j, key));
}

/* Builds held by the workers now, summed over their /metrics. */
static double held_now(const phase_t *ph)
{
    double held = 0;

    for (size_t i = 0; i < ph->nworkers; i++) {
        char url[128], *text = NULL;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics",
                 ph->d[i].metrics_port);
        if (rw_bench_http(url, NULL, &text) == 200 && text)
            held += rw_bench_metric_sum(text, "rollwave_throttle_held_batches",
                                        NULL);
        free(text);
    }
    return held;
}

/* One progress line; *done is set once every run is final. */
static void progress(const bench_t *b, phase_t *ph, long long t0, int tty,
                     int *done)
{
    PGresult *res = NULL;
    json_t *j = sim_stats(b, 0);
    char errstr[256];
    long long runs, final;
    double held = held_now(ph);

    *done = 0;
    if (held > ph->r.held_peak)
        ph->r.held_peak = held;
    if (rw_pg_exec(ph->pg, SQL_PROGRESS, 0, NULL, &res, errstr,
                   sizeof(errstr))) {
        fprintf(stderr, "bench: progress query failed: %s\n", errstr);
        json_decref(j);
        return;
    }
    runs = rw_pg_ll(res, 0, "runs", 0);
    final = rw_pg_ll(res, 0, "runs_final", 0);
    ph->r.targets = rw_pg_ll(res, 0, "targets", 0);
    ph->r.terminal = rw_pg_ll(res, 0, "terminal", 0);
    fprintf(stderr,
            "%s%s %6.1fs runs %lld/%lld final | targets %lld: pending %lld "
            "in flight %lld terminal %lld | lagoon running %lld in progress "
            "%lld | held batches %.0f%s",
            tty ? "\r" : "", ph->name, (double)(rw_bench_mono_ms() - t0) / 1e3,
            final, runs, ph->r.targets, rw_pg_ll(res, 0, "pending", 0),
            rw_pg_ll(res, 0, "in_flight", 0), ph->r.terminal,
            jint(j, "running_builds"), jint(j, "in_progress_builds"), held,
            tty ? "\033[K" : "\n");
    *done = runs > 0 && final == runs && ph->producer.exited;
    PQclear(res);
    json_decref(j);
}

/* Run the producer tick and follow the rollout to its end or timeout. */
static rw_err_t follow(const bench_t *b, phase_t *ph, char *errstr,
                       size_t errlen)
{
    rw_err_t err;
    long long t0, next_progress = 0;
    int tty = isatty(STDERR_FILENO), done = 0;

    snprintf(ph->producer.name, sizeof(ph->producer.name), "producer");
    t0 = rw_bench_mono_ms();
    err = start_daemon(b, ph, &ph->producer, "rollwave-producer", NULL,
                       "--once", errstr, errlen);
    if (err)
        return err;
    while (!rw_bench_interrupted) {
        if (!ph->producer.exited && rw_bench_reap(&ph->producer) &&
            (!WIFEXITED(ph->producer.status) ||
             WEXITSTATUS(ph->producer.status) != 0))
            return died(b, ph, &ph->producer, "in --once", errstr, errlen);
        for (size_t i = 0; i < ph->nd; i++)
            if (rw_bench_reap(&ph->d[i]))
                return died(b, ph, &ph->d[i], "during the rollout", errstr,
                            errlen);
        if (rw_bench_mono_ms() >= next_progress) {
            next_progress = rw_bench_mono_ms() + b->o.progress_ms;
            progress(b, ph, t0, tty, &done);
            if (done)
                break;
        }
        if (rw_bench_mono_ms() - t0 > b->o.timeout_s * 1000)
            break;
        rw_bench_sleep_ms(50);
    }
    if (tty)
        fputc('\n', stderr);
    ph->r.elapsed_s = (double)(rw_bench_mono_ms() - t0) / 1e3;
    ph->r.finished = done;
    if (rw_bench_interrupted)
        return rw_err_set(errstr, errlen, RW_ERR_SHUTDOWN, "interrupted");
    return RW_OK;
}

/* Scrape the workers' throttle metrics, then stop every daemon. */
static void stop_daemons(phase_t *ph)
{
    for (size_t i = 0; i < ph->nworkers; i++) {
        char url[128], *text = NULL;
        if (ph->d[i].pid <= 0 || rw_bench_reap(&ph->d[i]))
            continue;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics",
                 ph->d[i].metrics_port);
        if (rw_bench_http(url, NULL, &text) == 200 && text) {
            const char *wait = "rollwave_throttle_wait_seconds";
            const char *dec = "rollwave_throttle_decisions_total";
            char name[96];
            snprintf(name, sizeof(name), "%s_sum", wait);
            ph->r.wait_sum += rw_bench_metric_sum(text, name, NULL);
            snprintf(name, sizeof(name), "%s_count", wait);
            ph->r.wait_count += rw_bench_metric_sum(text, name, NULL);
            ph->r.granted += rw_bench_metric_sum(text, dec, "\"granted\"");
            ph->r.budget += rw_bench_metric_sum(text, dec, "\"budget\"");
            ph->r.rate += rw_bench_metric_sum(text, dec, "\"rate\"");
        }
        free(text);
    }
    for (size_t i = 0; i < ph->nd; i++)
        if (ph->d[i].pid > 0 && !rw_bench_reap(&ph->d[i]))
            kill(ph->d[i].pid, SIGTERM);
    for (size_t i = 0; i < ph->nd; i++)
        if (ph->d[i].pid > 0)
            rw_bench_stop_daemon(&ph->d[i]);
    if (ph->producer.pid > 0)
        rw_bench_stop_daemon(&ph->producer);
}

/* Read what the database and the simulator say about the rollout. */
static void collect(const bench_t *b, phase_t *ph)
{
    PGresult *res = NULL;
    char errstr[512];
    json_t *j = sim_stats(b, 1), *lat, *per_s;
    result_t *r = &ph->r;
    char build_ms[24];
    const char *p[1] = {build_ms};
    size_t i;
    json_t *v;

    if (!rw_pg_exec(ph->pg, SQL_PROGRESS, 0, NULL, &res, errstr,
                    sizeof(errstr))) {
        r->targets = rw_pg_ll(res, 0, "targets", 0);
        r->terminal = rw_pg_ll(res, 0, "terminal", 0);
        r->succeeded = rw_pg_ll(res, 0, "succeeded", 0);
    }
    PQclear(res);
    res = NULL;
    if (!rw_pg_exec(ph->pg, SQL_COMPLETION, 0, NULL, &res, errstr,
                    sizeof(errstr)))
        r->completion_s = rw_bench_num(res, "completion_s");
    PQclear(res);
    res = NULL;
    snprintf(build_ms, sizeof(build_ms), "%lld",
             b->o.rows_delay_ms + b->o.build_ms);
    if (!rw_pg_exec(ph->pg, SQL_SLOT, 1, p, &res, errstr, sizeof(errstr))) {
        r->chunks = rw_pg_ll(res, 0, "chunks", 0);
        r->waited_chunks = rw_pg_ll(res, 0, "waited", 0);
        r->call_s = rw_bench_num(res, "call_s");
        r->build_s = rw_bench_num(res, "build_s");
        r->poll_lag_s = rw_bench_num(res, "poll_lag_s");
        r->wake_s = rw_bench_num(res, "wake_s");
        r->claim_s = rw_bench_num(res, "claim_s");
    } else {
        fprintf(stderr, "bench: slot query failed: %s\n", errstr);
    }
    PQclear(res);
    if (!j) {
        fprintf(stderr, "bench: /sim/stats not available\n");
        return;
    }
    r->peak_running = jint(j, "peak_concurrent_builds");
    r->peak_in_progress = jint(j, "peak_in_progress_builds");
    r->overload_delayed = jint(j, "overload_delayed");
    lat = json_object_get(j, "api_latency_ms");
    r->api_count = jint(lat, "count");
    r->api_mean = json_number_value(json_object_get(lat, "mean"));
    r->api_p95 = json_number_value(json_object_get(lat, "p95"));
    r->api_max = json_number_value(json_object_get(lat, "max"));
    per_s =
        json_object_get(json_object_get(j, "trigger_timeline"), "per_second");
    json_array_foreach(per_s, i, v)
    {
        if (json_integer_value(v) > r->peak_trigger_per_s)
            r->peak_trigger_per_s = json_integer_value(v);
    }
    json_decref(j);
}

static void teardown(bench_t *b, phase_t *ph)
{
    char errstr[512];

    stop_daemons(ph);
    rw_pg_destroy(ph->pg);
    ph->pg = NULL;
    if (ph->db[0] &&
        rw_bench_admin_db(b->admin, "DROP DATABASE IF EXISTS", ph->db,
                          " WITH (FORCE)", errstr, sizeof(errstr)))
        fprintf(stderr, "bench: drop database %s: %s\n", ph->db, errstr);
    ph->db[0] = '\0';
}

static rw_err_t run_phase(bench_t *b, phase_t *ph, char *errstr, size_t errlen)
{
    rw_err_t err;

    fprintf(stderr, "bench: %s rollout of %lld instances\n", ph->name,
            b->o.instances);
    err = setup_db(b, ph, errstr, errlen);
    if (!err)
        err = setup_sim(b, ph, errstr, errlen);
    if (!err)
        err = start_consumers(b, ph, errstr, errlen);
    if (!err)
        err = follow(b, ph, errstr, errlen);
    stop_daemons(ph);
    if (!err)
        collect(b, ph);
    teardown(b, ph);
    return err;
}

/* ---- the report ------------------------------------------------------- */

static void print_end(const result_t *r, double ideal)
{
    if (r->finished)
        printf("  completion time      %8.1f s  (first trigger -> last run "
               "final)\n",
               r->completion_s);
    else
        printf("  completion time      not finished after %.0f s: %lld of "
               "%lld targets terminal\n",
               r->elapsed_s, r->terminal, r->targets);
    if (r->finished && ideal > 0)
        printf("  ratio to ideal       %8.2f   (target <= 1.15)\n",
               r->completion_s / ideal);
}

static void print_sim(const result_t *r, long long c, int judge)
{
    printf("  lagoon peak running  %8lld%s\n", r->peak_running,
           judge ? (r->peak_running <= c ? "   OK (<= limit)"
                                         : "   EXCEEDED the limit")
                 : "");
    printf("  lagoon peak in prog. %8lld%s   (running + queued)\n",
           r->peak_in_progress,
           judge ? (r->peak_in_progress <= c ? "   OK (<= limit)"
                                             : "   EXCEEDED the limit")
                 : "");
    printf("  lagoon API latency   mean %.1f ms, p95 %.1f ms, max %.1f ms "
           "over %lld requests (%lld delayed by overload)\n",
           r->api_mean, r->api_p95, r->api_max, r->api_count,
           r->overload_delayed);
    printf("  peak trigger rate    %8lld environments/s\n",
           r->peak_trigger_per_s);
}

static void print_slot(const bench_t *b, const result_t *r, double ideal)
{
    /* build_s runs from the send, so it holds the trigger call */
    double cycle = r->build_s + r->poll_lag_s + r->wake_s + r->claim_s;
    double slots = (double)b->o.max_in_flight / (double)b->o.chunk_size;
    double rounds = (double)b->o.instances / (double)b->o.max_in_flight;

    printf("\nwhere a budget slot's time goes (%lld chunks, %lld of them "
           "waited for budget; means)\n",
           r->chunks, r->waited_chunks);
    printf("  trigger call         %6.2f s  sent -> recorded (bulk mutation "
           "and commit)\n",
           r->call_s);
    printf(
        "  Lagoon build         %6.2f s  recorded -> build ended (rows delay "
        "%lld ms + build %lld ms)\n",
        r->build_s - r->call_s, b->o.rows_delay_ms, b->o.build_ms);
    printf("  seen by a poll       %6.2f s  build ended -> target terminal "
           "in Postgres\n",
           r->poll_lag_s);
    printf("  budget wake-up       %6.2f s  last target freeing budget -> "
           "next chunk claimed\n",
           r->wake_s);
    printf("  claim -> send        %6.2f s  locks, claim transaction\n",
           r->claim_s);
    printf("  slot cycle           %6.2f s  vs %.2f s ideal; %.0f slots of "
           "%lld, %.0f rounds of the limit -> about %.1f s\n",
           cycle, (double)b->o.build_ms / 1e3, slots, b->o.chunk_size, rounds,
           rounds * cycle);
    printf("  The poll interval: a build is seen finished at the first poll "
           "after it ends.\n"
           "  Polls come %lld ms after the trigger, then %lld ms after each "
           "poll is handled, so a\n"
           "  build of %.1f s (plus the rows delay) is seen up to one "
           "interval late; its\n"
           "  budget stays taken meanwhile. Measured: %.2f s per slot cycle, "
           "%.0f%% of the\n"
           "  cycle: about %.0f s added to the completion time (ideal %.0f "
           "s).\n",
           b->o.first_poll_delay_ms, b->o.poll_interval_ms,
           (double)b->o.build_ms / 1e3, r->poll_lag_s,
           cycle > 0 ? 100.0 * r->poll_lag_s / cycle : 0.0,
           rounds * r->poll_lag_s, ideal);
}

static void report(const bench_t *b, const phase_t *on, const phase_t *off)
{
    double ideal = (double)b->o.instances * (double)b->o.build_ms / 1e3 /
                   (double)b->o.max_in_flight;
    const char *wait_ms = getenv("ROLLWAVE_THROTTLE_WAIT_MS");
    const result_t *r = &on->r;

    printf("\nrollwave throttle benchmark\n");
    printf("  fleet                %lld instances, %lld store apps, chunk "
           "size %lld\n",
           b->o.instances, b->o.store_apps, b->o.chunk_size);
    printf("  daemons              %lld workers, %lld pollers; first poll "
           "after %lld ms, then every %lld ms;\n"
           "                       ROLLWAVE_THROTTLE_WAIT_MS %s; trigger "
           "rate %s/min (never binding)\n",
           b->o.workers, b->o.pollers, b->o.first_poll_delay_ms,
           b->o.poll_interval_ms,
           wait_ms && *wait_ms ? wait_ms : "250 (default)", NO_RATE);
    printf("  ideal                %8.1f s  N * T / C = %lld * %.1f s / "
           "%lld (Lagoon's rows delay of\n"
           "                                 %lld ms per build not "
           "included)\n",
           ideal, b->o.instances, (double)b->o.build_ms / 1e3,
           b->o.max_in_flight, b->o.rows_delay_ms);

    printf("\nwith the throttle (ROLLWAVE_MAX_IN_FLIGHT=%lld; lagoon-sim "
           "without a build cap)\n",
           b->o.max_in_flight);
    printf("  lagoon-sim           %s\n", on->sim_config);
    print_end(r, ideal);
    printf("  targets              %lld, succeeded %lld\n", r->targets,
           r->succeeded);
    print_sim(r, b->o.max_in_flight, 1);
    printf("  throttle waits       %.0f grants, mean wait %.2f s before the "
           "grant; refused: %.0f budget, %.0f rate;\n"
           "                       peak held batches %.0f (all workers, "
           "sampled every %lld ms)\n",
           r->granted, rw_bench_per(r->wait_sum, r->wait_count), r->budget,
           r->rate, r->held_peak, b->o.progress_ms);
    if (r->chunks > 0)
        print_slot(b, r, ideal);

    if (!off)
        return;
    r = &off->r;
    printf("\nwithout the throttle (limit and rate out of reach, adaptive "
           "limit idle; lagoon-sim\nruns %lld builds at once, queues the rest "
           "and delays every API answer by %lld ms per\nbuild in progress "
           "above %lld, at most %lld ms)\n",
           b->o.max_in_flight, b->o.overload_ms, b->o.max_in_flight,
           b->o.overload_max_ms);
    printf("  lagoon-sim           %s\n", off->sim_config);
    print_end(r, ideal);
    printf("  targets              %lld, succeeded %lld\n", r->targets,
           r->succeeded);
    print_sim(r, b->o.max_in_flight, 0);

    printf("\nwhat the throttle saves Lagoon\n");
    printf("  builds in progress   %lld with, %lld without\n",
           on->r.peak_in_progress, off->r.peak_in_progress);
    printf("  API latency mean     %.1f ms with, %.1f ms without\n",
           on->r.api_mean, off->r.api_mean);
    printf("  API latency p95      %.1f ms with, %.1f ms without\n",
           on->r.api_p95, off->r.api_p95);
    if (on->r.finished && off->r.finished)
        printf("  completion time      %.1f s with, %.1f s without\n",
               on->r.completion_s, off->r.completion_s);
}

/* ---- main ------------------------------------------------------------- */

static rw_err_t prepare(bench_t *b, char *errstr, size_t errlen)
{
    rw_err_t err =
        rw_bench_dirs(b->o.bin_dir, b->o.log_dir, "rollwave-bench-throttle",
                      b->bin_dir, b->log_dir, errstr, errlen);

    if (err)
        return err;
    fprintf(stderr, "bench: daemon logs in %s\n", b->log_dir);
    return rw_pg_new(&b->admin, b->env.pg_dsn, errstr, errlen);
}

int main(int argc, char **argv)
{
    bench_t *b = calloc(1, sizeof(*b));
    phase_t *on = calloc(1, sizeof(*on)), *off = calloc(1, sizeof(*off));
    char errstr[1024] = "";
    rw_err_t err = RW_OK;
    int rc = 0;

    if (!b || !on || !off) {
        free(b);
        free(on);
        free(off);
        return 1;
    }
    b->o = (opts_t){.instances = 5000,
                    .build_ms = 2000,
                    .max_in_flight = 100,
                    .workers = 2,
                    .pollers = 2,
                    .chunk_size = 50,
                    .store_apps = 10,
                    .rows_delay_ms = 100,
                    .first_poll_delay_ms = -1, /* T + rows delay */
                    .poll_interval_ms = 250,
                    .overload_ms = 5,
                    .overload_max_ms = 10000,
                    .timeout_s = 300,
                    .warmup_s = 60,
                    .progress_ms = 1000,
                    .unthrottled = 1,
                    .child_log_level = "warn"};
    on->name = "throttled";
    on->throttled = 1;
    off->name = "unthrottled";
    rc = parse_args(argc, argv, &b->o);
    if (rc) {
        rc = rc > 0 ? 0 : 2;
        goto done;
    }
    if (b->o.first_poll_delay_ms < 0)
        /* the first poll when a build ends: nothing earlier can be seen */
        b->o.first_poll_delay_ms = b->o.build_ms + b->o.rows_delay_ms;
    err = rw_config_load(rw_bench_env_keys, rw_bench_n_env_keys, &b->env, NULL,
                         NULL, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, PROG ": config error: %s\n", errstr);
        rc = 2;
        goto done;
    }
    rw_bench_signals();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    err = prepare(b, errstr, sizeof(errstr));
    if (!err)
        err = run_phase(b, on, errstr, sizeof(errstr));
    if (!err && b->o.unthrottled)
        err = run_phase(b, off, errstr, sizeof(errstr));
    if (!err) {
        report(b, on, b->o.unthrottled ? off : NULL);
    } else {
        fprintf(stderr, PROG ": %s: %s\n", rw_err_name(err), errstr);
        rc = 1;
    }
    rw_pg_destroy(b->admin);
    curl_global_cleanup();
done:
    rw_config_free(rw_bench_env_keys, rw_bench_n_env_keys, &b->env);
    free(b);
    free(on);
    free(off);
    return rc;
}
