/*
 * test_throttle: the fleet throttle end to end (DESIGN.md section 10): the
 * builds-in-flight cap and the trigger rate held fleet-wide across workers,
 * budget that comes back after kill -9 and after Redis loses everything,
 * the emergency brake (backlog kept in Kafka as lag, builds in flight
 * polled to their end), a batch waiting for budget that does not stall the
 * other partitions of its worker, the adaptive limit following Lagoon's
 * queued builds, and the refusals of limits that could never work.
 *
 * Every scenario runs a fleet of its own (rw_itest_fleet: database, topic
 * prefix, lagoon-sim, daemons of this build) and ends with the shared
 * invariant check plus the throttle's own: nothing in flight and no live
 * lease once every run has ended. Waits are conditions with deadlines;
 * the only timed observation is the brake's "nothing new for 3 s", which
 * starts after everything granted before the brake has been sent.
 *
 * It does not test rw_throttle's SQL case by case nor the worker's gate in
 * isolation, and it never asserts how fast a rollout is beyond its
 * deadline. Sanitized builds (RW_SANITIZED=1, or ASan detected at compile
 * time) get twice the deadlines.
 */
#include "rw_itest.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "rw_itest_fleet.h"
#include "rw_itest_pg.h"
#include "rw_kafka.h"
#include "rw_pg.h"
#include "rw_settings.h"

/* Resources a failed assertion would otherwise leave behind. */
static rw_pg_t *blocker; /* second session holding row locks */
static rd_kafka_t *kafka;
static rw_kafka_consumer_t *member; /* joins the worker group */
static int delivery_failures;

/* A deadline for this build: sanitized daemons are several times slower. */
static long long deadline_ms(long long ms)
{
    const char *v = getenv("RW_SANITIZED");
    bool sanitized = RW_ITEST_ASAN || (v && *v && strcmp(v, "0") != 0);

    return sanitized ? 2 * ms : ms;
}

/* ---- fleet and seeding ---- */

/*
 * A fleet with short builds (build_min..build_max ms, rows after 100 ms,
 * 50 ms in new and in pending; extra: more sim settings or NULL), the
 * adaptive limit's round every second, and max_in_flight / rate (NULL:
 * the harness's "unthrottled") seeded into the fleet row by the first
 * worker.
 */
static rw_itest_fleet_t *new_fleet(void **state, int build_min, int build_max,
                                   const char *extra, long long chunk,
                                   const char *max_in_flight, const char *rate)
{
    char sim[512];
    rw_itest_fleet_t *f;

    snprintf(sim, sizeof(sim),
             "{\"rows_delay_ms\":100,\"phase_ms\":50,\"build_min_ms\":%d,"
             "\"build_max_ms\":%d%s%s}",
             build_min, build_max, extra ? "," : "", extra ? extra : "");
    f = rw_itest_fleet_new(sim, chunk);
    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_THROTTLE_ADJUST_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_MAX_PER_RUN", "5000");
    /* a producer daemon is there for its recovery sweep, not its tick */
    rw_itest_fleet_set(f, "ROLLWAVE_TICK_INTERVAL_S", "86400");
    if (max_in_flight)
        rw_itest_fleet_set(f, "ROLLWAVE_MAX_IN_FLIGHT", max_in_flight);
    if (rate)
        rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_RATE_PER_MIN", rate);
    return f;
}

/*
 * Start the daemons and wait until each has its partitions. A rollout
 * started before the groups settle has batches held for budget while the
 * joins rebalance (test_held_batch_survives_rebalance covers a held batch
 * whose partition comes back to its worker); the other scenarios are
 * about the throttle, so they begin on settled groups.
 */
static void start_daemons(rw_itest_fleet_t *f, int workers, int pollers)
{
    pid_t pids[16];
    int n = 0;
    long long deadline = rw_itest_now_ms() + deadline_ms(30000);

    assert_true(workers + pollers <= 16);
    for (int i = 0; i < workers; i++)
        pids[n++] = rw_itest_fleet_start(f, "rollwave-worker", "worker");
    for (int i = 0; i < pollers; i++)
        pids[n++] = rw_itest_fleet_start(f, "rollwave-poller", "poller");
    for (int i = 0; i < n; i++)
        while (
            !rw_itest_fleet_log_has(f, pids[i], "event=partitions_assigned")) {
            rw_itest_fleet_poll_kids(f);
            if (rw_itest_now_ms() > deadline) {
                rw_itest_fleet_dump_logs(f);
                fail_msg("daemon %d of %d got no partitions within 30 s", i + 1,
                         n);
            }
            rw_itest_sleep_ms(100);
        }
}

/* rollwavectl redeploy --store-app app (a manual run, relayed at once). */
static void redeploy_app(rw_itest_fleet_t *f, long long app)
{
    char app_s[24], out[4096];
    const char *argv[] = {"rollwavectl", "redeploy", "--store-app", app_s,
                          "--by",        "itest",    NULL};
    int rc;

    snprintf(app_s, sizeof(app_s), "%lld", app);
    rc = rw_itest_fleet_run(f, argv, out, sizeof(out));
    if (rc != 0)
        fail_msg("rollwavectl redeploy --store-app %s exited %d: %s", app_s, rc,
                 out);
}

static void run_uuid(rw_itest_fleet_t *f, long long app, char *buf, size_t len)
{
    char app_s[24];
    const char *p[1] = {app_s};
    PGresult *res;

    snprintf(app_s, sizeof(app_s), "%lld", app);
    res = rw_itest_fleet_q(f,
                           "SELECT uuid::text FROM deployment_runs"
                           " WHERE store_app_id = $1::bigint",
                           1, p);
    if (PQntuples(res) != 1)
        fail_msg("store app %lld has %d runs, want 1", app, PQntuples(res));
    snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* State of the single chunk of app's run. */
static void chunk_state(rw_itest_fleet_t *f, long long app, char *buf,
                        size_t len)
{
    char app_s[24];
    const char *p[1] = {app_s};
    PGresult *res;

    snprintf(app_s, sizeof(app_s), "%lld", app);
    res = rw_itest_fleet_q(f,
                           "SELECT c.state FROM run_chunks c"
                           " JOIN deployment_runs r ON r.id = c.run_id"
                           " WHERE r.store_app_id = $1::bigint",
                           1, p);
    if (PQntuples(res) != 1)
        fail_msg("store app %lld's run has %d chunks, want 1", app,
                 PQntuples(res));
    snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* ---- the throttle as the operator and Postgres see it ---- */

static long long in_flight(rw_itest_fleet_t *f)
{
    return rw_itest_fleet_ll(f, "SELECT rw_throttle_in_flight()", 0, NULL);
}

static long long live_leases(rw_itest_fleet_t *f)
{
    return rw_itest_fleet_ll(f,
                             "SELECT count(*) FROM throttle_leases"
                             " WHERE expires_at > clock_timestamp()",
                             0, NULL);
}

/* Chunks past pending (done: finished), per mille of all. */
static long long progress(rw_itest_fleet_t *f, bool done)
{
    return rw_itest_fleet_ll(
        f,
        done ? "SELECT COALESCE(1000 * count(*) FILTER (WHERE state IN"
               " ('done', 'failed')) / NULLIF(count(*), 0), 0)"
               " FROM run_chunks"
             : "SELECT COALESCE(1000 * count(*) FILTER (WHERE state <>"
               " 'pending') / NULLIF(count(*), 0), 0) FROM run_chunks",
        0, NULL);
}

static void wait_progress(rw_itest_fleet_t *f, bool done, long long permille,
                          long long timeout_ms)
{
    long long deadline = rw_itest_now_ms() + timeout_ms;

    while (progress(f, done) < permille) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("chunks %s: %lld per mille after %lld ms, want %lld",
                     done ? "finished" : "past pending", progress(f, done),
                     timeout_ms, permille);
        }
        rw_itest_sleep_ms(50);
    }
}

/*
 * rollwavectl throttle [a1 [a2]] --json --by itest; asserts exit 0 and
 * returns the JSON it printed (the caller json_decref()s it).
 */
static json_t *throttle(rw_itest_fleet_t *f, const char *a1, const char *a2)
{
    const char *argv[8];
    char out[4096];
    size_t n = 0;
    json_error_t jerr;
    json_t *o;
    int rc;

    argv[n++] = "rollwavectl";
    argv[n++] = "throttle";
    if (a1)
        argv[n++] = a1;
    if (a2)
        argv[n++] = a2;
    argv[n++] = "--json";
    argv[n++] = "--by";
    argv[n++] = "itest";
    argv[n] = NULL;
    rc = rw_itest_fleet_run(f, argv, out, sizeof(out));
    if (rc != 0)
        fail_msg("rollwavectl throttle %s %s exited %d: %s", a1 ? a1 : "",
                 a2 ? a2 : "", rc, out);
    o = json_loads(out, 0, &jerr);
    if (!json_is_object(o))
        fail_msg("rollwavectl throttle --json printed no object: %s", out);
    return o;
}

static long long jll(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);

    if (!json_is_integer(v))
        fail_msg("no integer \"%s\" in rollwavectl's JSON", key);
    return (long long)json_integer_value(v);
}

/* One field of rollwavectl throttle --json. */
static long long throttle_field(rw_itest_fleet_t *f, const char *key)
{
    json_t *o = throttle(f, NULL, NULL);
    long long v = jll(o, key);

    json_decref(o);
    return v;
}

/* The worker group's lag on the batches topic (rollwavectl lag). */
static long long batches_lag(rw_itest_fleet_t *f)
{
    char group[160], topic[160], out[65536];
    const char *argv[] = {"rollwavectl", "lag", "--group",    group,
                          "--topic",     topic, "--interval", "0",
                          "--json",      NULL};
    json_error_t jerr;
    json_t *root, *g;
    long long lag;
    int rc;

    snprintf(group, sizeof(group), "%sworker", rw_itest_fleet_prefix(f));
    snprintf(topic, sizeof(topic), "%sbatches", rw_itest_fleet_prefix(f));
    rc = rw_itest_fleet_run(f, argv, out, sizeof(out));
    if (rc != 0)
        fail_msg("rollwavectl lag exited %d: %s", rc, out);
    root = json_loads(out, 0, &jerr);
    g = json_array_get(json_object_get(root, "groups"), 0);
    if (!json_is_integer(json_object_get(g, "lag")))
        fail_msg("rollwavectl lag --json gave no lag for %s: %s", group, out);
    lag = (long long)json_integer_value(json_object_get(g, "lag"));
    json_decref(root);
    return lag;
}

/* Wait until the worker group has consumed every batch message. */
static void wait_lag_drained(rw_itest_fleet_t *f, long long timeout_ms)
{
    long long deadline = rw_itest_now_ms() + timeout_ms, lag;

    while ((lag = batches_lag(f)) != 0) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("batches lag still %lld after %lld ms", lag, timeout_ms);
        }
        rw_itest_sleep_ms(250);
    }
}

/*
 * What every throttled scenario ends with: the usual invariants, then the
 * budget all given back: no target in flight, no live lease (a dead
 * worker's expired long ago), nothing counted by rw_throttle_in_flight().
 */
static void finish(rw_itest_fleet_t *f)
{
    rw_itest_fleet_check(f);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "duplicate_triggers"), 0);
    assert_int_equal(live_leases(f), 0);
    assert_int_equal(in_flight(f), 0);
    assert_int_equal(throttle_field(f, "in_flight"), 0);
    assert_int_equal(throttle_field(f, "leased"), 0);
    rw_itest_fleet_stop_all(f);
    rw_itest_fleet_scan_logs(f);
}

/* The simulator's builds in progress never exceeded limit. */
static void assert_peaks_within(rw_itest_fleet_t *f, long long limit)
{
    long long running = rw_itest_fleet_sim_stat(f, "peak_concurrent_builds");
    long long in_progress =
        rw_itest_fleet_sim_stat(f, "peak_in_progress_builds");

    if (running > limit || in_progress > limit)
        fail_msg("Lagoon saw up to %lld builds running and %lld in "
                 "progress, the limit is %lld",
                 running, in_progress, limit);
    /* the rollout ran at all: the bound is not met by an empty sim */
    assert_true(running > 0 && in_progress > 0);
}

static int teardown(void **state)
{
    if (blocker) {
        rw_pg_destroy(blocker);
        blocker = NULL;
    }
    if (kafka) {
        rd_kafka_destroy(kafka);
        kafka = NULL;
    }
    rw_kafka_consumer_destroy(member);
    member = NULL;
    rw_itest_fleet_destroy(*state);
    *state = NULL;
    return 0;
}

/* ---- 1. the in-flight cap ---- */

/*
 * 2,000 instances in chunks of 50, two workers and two pollers, at most
 * 100 builds in flight: Lagoon never has more than 100 of ours in
 * progress (running or queued), and every run ends.
 */
static void test_in_flight_cap(void **state)
{
    rw_itest_fleet_t *f = new_fleet(state, 300, 800, NULL, 50, "100", NULL);
    long long app;

    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "cap", 2000);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 2, 2);
    rw_itest_fleet_tick(f);
    rw_itest_fleet_wait_final(f, 1, deadline_ms(120000));

    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'completed' AND"
                                       " succeeded_count = 2000",
                                       0, NULL),
                     1);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"),
                     2000);
    assert_peaks_within(f, 100);
    finish(f);
}

/* ---- 2. the trigger rate ---- */

/*
 * 600 environments a minute, chunks (and the bucket) of 10, 300
 * instances, no in-flight limit: no 10-second window of Lagoon's trigger
 * timeline holds more than 100 plus the one chunk the bucket starts with.
 */
static void test_trigger_rate(void **state)
{
    rw_itest_fleet_t *f = new_fleet(state, 300, 800, NULL, 10, NULL, "600");
    long long app, total = 0, worst = 0, worst_at = 0;
    json_t *stats, *per;
    size_t len;

    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "rate", 300);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 2, 1);
    rw_itest_fleet_tick(f);
    rw_itest_fleet_wait_final(f, 1, deadline_ms(120000));

    stats =
        rw_itest_fleet_sim(f, "/sim/stats?triggers=false&timeline=true", NULL);
    per = json_object_get(json_object_get(stats, "trigger_timeline"),
                          "per_second");
    if (!json_is_array(per))
        fail_msg("/sim/stats?timeline=true has no trigger_timeline");
    len = json_array_size(per);
    for (size_t i = 0; i < len; i++) {
        long long window = 0;
        for (size_t j = i; j < i + 10 && j < len; j++)
            window += (long long)json_integer_value(json_array_get(per, j));
        total += (long long)json_integer_value(json_array_get(per, i));
        if (window > worst) {
            worst = window;
            worst_at = (long long)i;
        }
    }
    json_decref(stats);
    assert_int_equal(total, 300);
    if (worst > 100 + 10)
        fail_msg("%lld environments triggered in the 10 s from second %lld, "
                 "want at most 110 (600/min plus one chunk)",
                 worst, worst_at);
    /* 290 after the first chunk at 10/s: the last second is 28 or later */
    if (len < 29)
        fail_msg("300 environments triggered within %zu s at 600/min", len);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'completed'",
                                       0, NULL),
                     1);
    finish(f);
}

/* ---- 3. budget never leaks ---- */

/*
 * ~1,000 instances in chunks of 25 under a limit of 100, two workers, two
 * pollers and the producer daemon (its recovery sweep), leases of 5 s.
 */
static rw_itest_fleet_t *leak_fleet(void **state)
{
    rw_itest_fleet_t *f = new_fleet(state, 300, 800, NULL, 25, "100", NULL);
    long long app;

    rw_itest_fleet_set(f, "ROLLWAVE_THROTTLE_LEASE_S", "5");
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_SETTLE_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_LAGOON_TIMEOUT_MS", "2000");
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_BACKOFF_BASE_MS", "100");
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_BACKOFF_MAX_MS", "1000");
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_INTERVAL_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_POLL_STALE_S", "15");
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_PENDING_STALE_S", "30");
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "leak", 1000);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 2, 2);
    rw_itest_fleet_tick(f);
    rw_itest_fleet_start(f, "rollwave-producer", "producer");
    return f;
}

/* Run sql on the blocking session; fails the test on error. */
static void blocker_exec(const char *sql)
{
    char errstr[512];

    if (rw_pg_exec(blocker, sql, 0, NULL, NULL, errstr, sizeof(errstr)))
        fail_msg("blocking session: %s\n  in: %s", errstr, sql);
}

/*
 * A worker that has taken budget and not yet claimed: with the pending
 * chunks locked by another session, the next worker granted a lease
 * blocks in its claim holding it. The holder of the first live lease
 * ("host:pid") is returned with the lease's id.
 */
static pid_t wait_lease_holder(rw_itest_fleet_t *f, long long *lease_id,
                               long long timeout_ms)
{
    long long deadline = rw_itest_now_ms() + timeout_ms;

    for (;;) {
        PGresult *res = rw_itest_fleet_q(
            f,
            "SELECT id, holder FROM throttle_leases"
            " WHERE expires_at > clock_timestamp() ORDER BY id LIMIT 1",
            0, NULL);
        if (PQntuples(res) == 1) {
            const char *holder = rw_pg_str(res, 0, "holder");
            const char *colon = holder ? strrchr(holder, ':') : NULL;
            pid_t pid = colon ? (pid_t)atol(colon + 1) : 0;

            *lease_id = rw_pg_ll(res, 0, "id", 0);
            PQclear(res);
            if (pid <= 0)
                fail_msg("lease holder \"%s\" names no pid",
                         holder ? holder : "");
            return pid;
        }
        PQclear(res);
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("no worker took budget within %lld ms", timeout_ms);
        }
        rw_itest_sleep_ms(20);
    }
}

/*
 * kill -9 of a worker that holds budget (a live lease, its claim blocked
 * on row locks), then of a poller: the dead worker's lease expires, the
 * rollout completes within the limit, and nothing stays in flight.
 */
static void test_budget_survives_kill9(void **state)
{
    rw_itest_fleet_t *f = leak_fleet(state);
    long long lease = 0, pending, deadline;
    char lease_s[24];
    const char *p[1] = {lease_s};
    pid_t holder, poller;

    wait_progress(f, true, 200, deadline_ms(60000));
    blocker = rw_itest_pg_connect(rw_itest_fleet_dsn(f));
    blocker_exec("BEGIN");
    blocker_exec("SELECT 1 FROM run_chunks WHERE state = 'pending'"
                 " FOR UPDATE");
    pending = rw_itest_fleet_ll(f,
                                "SELECT count(*) FROM run_chunks"
                                " WHERE state = 'pending'",
                                0, NULL);
    if (pending == 0)
        fail_msg("every chunk was past pending before the claim could be "
                 "blocked");
    holder = wait_lease_holder(f, &lease, deadline_ms(20000));
    /* the lease is budget: it counts while its holder lives or not */
    assert_true(in_flight(f) >= 25);
    assert_true(throttle_field(f, "leased") >= 25);
    /* fails unless the holder is one of the fleet's workers */
    rw_itest_fleet_kill9(f, holder, true);
    blocker_exec("ROLLBACK");
    rw_pg_destroy(blocker);
    blocker = NULL;

    /* the dead holder's lease goes by itself, lease_s after it was taken */
    snprintf(lease_s, sizeof(lease_s), "%lld", lease);
    deadline = rw_itest_now_ms() + deadline_ms(15000);
    while (rw_itest_fleet_ll(f,
                             "SELECT count(*) FROM throttle_leases"
                             " WHERE id = $1::bigint AND"
                             " expires_at > clock_timestamp()",
                             1, p) > 0) {
        if (rw_itest_now_ms() > deadline)
            fail_msg("the killed worker's lease %lld is still live", lease);
        rw_itest_sleep_ms(100);
    }

    wait_progress(f, true, 600, deadline_ms(90000));
    poller = rw_itest_fleet_running(f, "rollwave-poller", 0);
    assert_true(poller > 0);
    rw_itest_fleet_kill9(f, poller, true);

    rw_itest_fleet_wait_final(f, 1, deadline_ms(120000));
    assert_peaks_within(f, 100);
    finish(f);
}

/* FLUSHALL mid-rollout: losing Redis loses neither budget nor the limit. */
static void test_budget_survives_redis_flush(void **state)
{
    rw_itest_fleet_t *f = leak_fleet(state);
    const char *flush[] = {"FLUSHALL", NULL};

    wait_progress(f, true, 300, deadline_ms(60000));
    assert_true(progress(f, true) < 1000);
    rw_itest_fleet_redis_cmd(f, flush);
    assert_int_equal(rw_itest_fleet_lock_keys(f), 0);

    rw_itest_fleet_wait_final(f, 1, deadline_ms(120000));
    assert_peaks_within(f, 100);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'completed'",
                                       0, NULL),
                     1);
    finish(f);
}

/* ---- 4. the emergency brake ---- */

static long long chunks_in(rw_itest_fleet_t *f, const char *state)
{
    const char *p[1] = {state};

    return rw_itest_fleet_ll(
        f, "SELECT count(*) FROM run_chunks WHERE state = $1", 1, p);
}

/*
 * --max-in-flight 0 mid-rollout: once what was granted before the brake
 * has been sent, Lagoon sees nothing new; the builds in flight are polled
 * to their end; the backlog waits in Kafka as lag. --max-in-flight 100
 * resumes, the rollout completes and the lag drains.
 */
static void test_emergency_brake(void **state)
{
    rw_itest_fleet_t *f = new_fleet(state, 300, 800, NULL, 25, "100", NULL);
    long long app, braked_at, deadline, triggered, lag;
    json_t *o;

    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "brake", 600);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 2, 2);
    rw_itest_fleet_tick(f);
    wait_progress(f, false, 200, deadline_ms(60000));

    o = throttle(f, "--max-in-flight", "0");
    braked_at = rw_itest_now_ms();
    assert_int_equal(jll(o, "max_in_flight"), 0);
    assert_int_equal(jll(o, "limit"), 0);
    json_decref(o);
    assert_true(chunks_in(f, "pending") > 0);

    /* grace: budget granted before the brake is claimed and sent (or
     * given back); at least 2 s, as a worker reads the row every second */
    deadline = rw_itest_now_ms() + deadline_ms(20000);
    while (rw_itest_now_ms() - braked_at < 2000 || live_leases(f) > 0 ||
           chunks_in(f, "triggering") > 0) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline)
            fail_msg("leases (%lld) or triggering chunks (%lld) outlive the "
                     "brake",
                     live_leases(f), chunks_in(f, "triggering"));
        rw_itest_sleep_ms(100);
    }
    triggered = rw_itest_fleet_sim_stat(f, "environments_triggered");
    for (int i = 0; i < 12; i++) {
        long long now = rw_itest_fleet_sim_stat(f, "environments_triggered");
        if (now != triggered)
            fail_msg("braked, yet Lagoon saw %lld environments triggered, "
                     "then %lld",
                     triggered, now);
        rw_itest_sleep_ms(250);
    }

    /* polling goes on: every build in flight ends, nothing new starts */
    deadline = rw_itest_now_ms() + deadline_ms(30000);
    while (in_flight(f) > 0) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline)
            fail_msg("braked: %lld builds still in flight after 30 s",
                     in_flight(f));
        rw_itest_sleep_ms(200);
    }
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"),
                     triggered);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "in_progress_builds"), 0);
    assert_true(chunks_in(f, "pending") > 0);
    lag = batches_lag(f);
    if (lag <= 0)
        fail_msg("braked with %lld chunks pending, the batches lag is %lld",
                 chunks_in(f, "pending"), lag);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'running'",
                                       0, NULL),
                     1);

    json_decref(throttle(f, "--max-in-flight", "100"));
    rw_itest_fleet_wait_final(f, 1, deadline_ms(90000));
    assert_true(rw_itest_fleet_sim_stat(f, "environments_triggered") >
                triggered);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"), 600);
    wait_lag_drained(f, deadline_ms(30000));
    assert_peaks_within(f, 100);
    finish(f);
}

/* ---- 5. a held batch does not stall its worker ---- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m,
                        void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        delivery_failures++;
}

/* A plain producer: the test picks partitions itself. */
static rd_kafka_t *kafka_new(rw_itest_fleet_t *f)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", rw_itest_fleet_brokers(f),
                          errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        fail_msg("kafka conf: %s", errstr);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk)
        fail_msg("kafka producer: %s", errstr);
    return rk;
}

static int partitions_of(rd_kafka_t *rk, const char *topic)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e;
    int n = 0;

    e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1)
        n = md->topics[0].partition_cnt;
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    if (n <= 0)
        fail_msg("no partitions for %s: %s", topic, rd_kafka_err2str(e));
    return n;
}

/* High watermark of one partition; 0 while the topic does not exist. */
static long long high_of(rd_kafka_t *rk, const char *topic, int partition)
{
    int64_t lo = 0, hi = 0;

    if (rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi,
                                         10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return 0;
    return (long long)hi;
}

static void produce_to(rd_kafka_t *rk, const char *topic, int partition,
                       const char *key, const char *payload)
{
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_KEY(key, strlen(key)),
        RD_KAFKA_V_VALUE((void *)payload, strlen(payload)),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);

    if (e)
        fail_msg("produce to %s/%d: %s", topic, partition, rd_kafka_err2str(e));
}

static void flush_all(rd_kafka_t *rk)
{
    if (rd_kafka_flush(rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        delivery_failures)
        fail_msg("test messages not delivered (%d failed)", delivery_failures);
}

/*
 * One worker, the batches topic's partitions. Budget 10, one chunk of 5
 * in flight with 25 s builds; a chunk of 10 (run B) cannot fit and is
 * held on its partition. Meanwhile poison on other partitions is
 * dead-lettered, and a chunk of 5 (run C, a store app with chunks of 5)
 * on another partition fits and is triggered, while B still waits.
 */
static void test_held_batch_does_not_stall(void **state)
{
    rw_itest_fleet_t *f = new_fleet(state, 25000, 26000, NULL, 10, "10", NULL);
    long long a, b, c, before[64], deadline;
    char batches[200], dlq[200], uuid_b[64], uuid_c[64], st[32], key[32];
    char waiting[128];
    const char *p[1] = {uuid_c};
    int parts, pb = -1;
    pid_t worker;
    PGresult *res;

    a = rw_itest_fleet_add_app(f, 0);
    b = rw_itest_fleet_add_app(f, 0);
    c = rw_itest_fleet_add_app(f, 5);
    rw_itest_fleet_add_instances(f, a, "a", 5);
    rw_itest_fleet_add_instances(f, b, "b", 10);
    rw_itest_fleet_add_instances(f, c, "c", 5);
    rw_itest_fleet_snapshot(f);
    worker = rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");
    kafka = kafka_new(f);
    snprintf(batches, sizeof(batches), "%sbatches", rw_itest_fleet_prefix(f));
    snprintf(dlq, sizeof(dlq), "%sdlq", rw_itest_fleet_prefix(f));

    /* A: five long builds hold half the budget */
    redeploy_app(f, a);
    rw_itest_fleet_wait_count(f,
                              "SELECT count(*) FROM run_targets WHERE state"
                              " IN ('triggered', 'deploying')",
                              5, deadline_ms(20000), "run A in flight");
    rw_itest_fleet_sim_config(f, "{\"build_min_ms\":300,"
                                 "\"build_max_ms\":800}");

    /* B: ten more do not fit; find the partition its batch waits on */
    parts = partitions_of(kafka, batches);
    assert_true(parts >= 3 && parts <= 64);
    for (int i = 0; i < parts; i++)
        before[i] = high_of(kafka, batches, i);
    redeploy_app(f, b);
    for (int i = 0; i < parts; i++) {
        long long grew = high_of(kafka, batches, i) - before[i];
        if (grew == 1 && pb < 0)
            pb = i;
        else if (grew != 0)
            fail_msg("partition %d of %s grew by %lld for one batch", i,
                     batches, grew);
    }
    if (pb < 0)
        fail_msg("run B's batch is on no partition of %s", batches);
    run_uuid(f, b, uuid_b, sizeof(uuid_b));
    snprintf(waiting, sizeof(waiting), "event=batch_waiting run=%s", uuid_b);
    deadline = rw_itest_now_ms() + deadline_ms(15000);
    while (!rw_itest_fleet_log_has(f, worker, waiting)) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("run B's batch was never held for budget");
        }
        rw_itest_sleep_ms(100);
    }

    /* poison on the other partitions goes to the dead letters */
    for (int i = 1; i <= 3; i++) {
        snprintf(key, sizeof(key), "poison:%d", i);
        produce_to(kafka, batches, (pb + i) % parts, key, "{\"v\":1,");
    }
    flush_all(kafka);
    rw_itest_fleet_expect_dead_letters(f, 3);
    deadline = rw_itest_now_ms() + deadline_ms(15000);
    for (;;) {
        long long dead = 0;
        int dparts = partitions_of(kafka, dlq);
        for (int i = 0; i < dparts; i++)
            dead += high_of(kafka, dlq, i);
        if (dead >= 3)
            break;
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("%lld of 3 poison messages dead-lettered while a batch "
                     "waits on another partition",
                     dead);
        }
        rw_itest_sleep_ms(100);
    }
    chunk_state(f, b, st, sizeof(st));
    assert_string_equal(st, "pending");

    /* C: five fit; its batch (a copy, whatever partition the original
     * took) goes to a partition other than B's */
    redeploy_app(f, c);
    run_uuid(f, c, uuid_c, sizeof(uuid_c));
    res = rw_itest_fleet_q(f,
                           "SELECT payload FROM outbox WHERE topic ="
                           " 'batches' AND msg_key LIKE $1 || ':%'",
                           1, p);
    assert_int_equal(PQntuples(res), 1);
    produce_to(kafka, batches, (pb + 1) % parts, "copy:c",
               PQgetvalue(res, 0, 0));
    PQclear(res);
    flush_all(kafka);
    deadline = rw_itest_now_ms() + deadline_ms(15000);
    for (;;) {
        chunk_state(f, c, st, sizeof(st));
        if (strcmp(st, "triggered") == 0 || strcmp(st, "done") == 0)
            break;
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("run C's chunk, which fits, is %s while B waits", st);
        }
        rw_itest_sleep_ms(100);
    }
    /* B waited all along: A's builds still hold the budget */
    chunk_state(f, b, st, sizeof(st));
    assert_string_equal(st, "pending");
    chunk_state(f, a, st, sizeof(st));
    assert_string_equal(st, "triggered");

    rw_itest_fleet_wait_final(f, 3, deadline_ms(90000));
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'completed'",
                                       0, NULL),
                     3);
    assert_peaks_within(f, 10);
    finish(f);
}

/* ---- 5b. a held batch across a rebalance ---- */

/* Poll the extra group member (rebalance callbacks) for about ms. */
static void member_poll(long long ms)
{
    long long end = rw_itest_now_ms() + ms;
    char errstr[256];

    while (rw_itest_now_ms() < end) {
        rw_kafka_msg_t *m = NULL;
        if (rw_kafka_consumer_poll(member, 100, &m, errstr, sizeof(errstr)))
            fail_msg("extra group member: %s", errstr);
        rw_kafka_msg_destroy(m);
    }
}

/*
 * A second member of daemon's group (role "worker" or "poller"), for a
 * topic of its own: the eager rebalance revokes the daemon's partitions
 * and gives them back. Returns once the daemon logged the revoke.
 */
static void join_extra_member(rw_itest_fleet_t *f, const char *role,
                              pid_t daemon)
{
    char group[160], topic[160], errstr[512];
    const char *topics[1] = {topic};
    long long deadline;
    rw_settings_t s;

    memset(&s, 0, sizeof(s));
    s.kafka_brokers = (char *)rw_itest_fleet_brokers(f);
    s.kafka_topic_prefix = (char *)rw_itest_fleet_prefix(f);
    s.kafka_security_protocol = "plaintext";
    s.kafka_properties = "";
    s.kafka_session_timeout_ms = 6000;
    s.kafka_group = "unused";
    snprintf(group, sizeof(group), "%s%s", rw_itest_fleet_prefix(f), role);
    snprintf(topic, sizeof(topic), "%srebalance", rw_itest_fleet_prefix(f));
    if (rw_kafka_consumer_new(&member, &s, group, topics, 1, errstr,
                              sizeof(errstr)))
        fail_msg("extra group member: %s", errstr);
    deadline = rw_itest_now_ms() + deadline_ms(20000);
    while (!rw_itest_fleet_log_has(f, daemon, "event=partitions_revoked")) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline)
            fail_msg("the %s group did not rebalance", role);
        member_poll(100);
    }
}

/*
 * A batch held by the brake when the worker group rebalances and its
 * partition comes back to the same worker (a member joins for another
 * topic): once the brake is released, the batch must be triggered.
 */
static void test_held_batch_survives_rebalance(void **state)
{
    rw_itest_fleet_t *f = new_fleet(state, 300, 800, NULL, 10, "10", NULL);
    long long app, deadline;
    char uuid[64], waiting[128], st[32];
    pid_t worker;

    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "rb", 10);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);
    worker = rw_itest_fleet_running(f, "rollwave-worker", 0);
    json_decref(throttle(f, "--max-in-flight", "0"));
    redeploy_app(f, app);
    run_uuid(f, app, uuid, sizeof(uuid));
    snprintf(waiting, sizeof(waiting), "event=batch_waiting run=%s", uuid);
    rw_itest_fleet_wait_count(f, "SELECT count(*) FROM run_chunks", 1,
                              deadline_ms(10000), "chunk created");
    deadline = rw_itest_now_ms() + deadline_ms(15000);
    while (!rw_itest_fleet_log_has(f, worker, waiting)) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline)
            fail_msg("the braked batch was never held");
        rw_itest_sleep_ms(100);
    }

    join_extra_member(f, "worker", worker);
    /* the rebalance ends within a few session timeouts */
    member_poll(deadline_ms(8000));

    json_decref(throttle(f, "--max-in-flight", "10"));
    deadline = rw_itest_now_ms() + deadline_ms(20000);
    for (;;) {
        chunk_state(f, app, st, sizeof(st));
        if (strcmp(st, "pending") != 0)
            break;
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("brake released, yet the batch held across the "
                     "rebalance is still waiting (chunk %s, held message "
                     "dropped: %s)",
                     st,
                     rw_itest_fleet_log_has(f, worker, "event=held_dropped")
                         ? "yes"
                         : "no");
        }
        member_poll(200);
    }
    rw_kafka_consumer_destroy(member);
    member = NULL;
    rw_itest_fleet_wait_final(f, 1, deadline_ms(60000));
    finish(f);
}

/* Chunk ends of store app app's run recorded in its transitions. */
static long long chunk_ends(rw_itest_fleet_t *f, long long app)
{
    char app_s[24];
    const char *p[1] = {app_s};

    snprintf(app_s, sizeof(app_s), "%lld", app);
    return rw_itest_fleet_ll(f,
                             "SELECT count(*) FROM chunk_transitions t"
                             " JOIN deployment_runs r ON r.id = t.run_id"
                             " WHERE r.store_app_id = $1::bigint"
                             "   AND t.to_state IN ('done', 'failed')",
                             1, p);
}

/*
 * A poll event held by the poller until its due time when the poller group
 * rebalances and the partition comes back to the same poller: the event is
 * dropped at the revoke, read again from the committed offset and held
 * again, and its chunk ends once.
 */
static void test_held_poll_event_survives_rebalance(void **state)
{
    rw_itest_fleet_t *f = new_fleet(state, 300, 800, NULL, 10, NULL, NULL);
    long long app, deadline, delay_s = deadline_ms(10000) / 1000;
    char st[32], held[192], dropped[192], delay[24];
    pid_t poller;

    /* the first poll delay_s after the trigger: the event waits, held,
     * while the group rebalances (a round of the devbroker's takes the
     * session timeout less a second); its holds are debug lines */
    snprintf(delay, sizeof(delay), "%lld", delay_s);
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_S", delay);
    rw_itest_fleet_set(f, "ROLLWAVE_LOG_LEVEL", "debug");
    snprintf(held, sizeof(held), "event=poll_held topic=%spoll ",
             rw_itest_fleet_prefix(f));
    snprintf(
        dropped, sizeof(dropped),
        "event=held_dropped topic=%spoll partition=", rw_itest_fleet_prefix(f));
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "rp", 10);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);
    poller = rw_itest_fleet_running(f, "rollwave-poller", 0);
    redeploy_app(f, app);
    deadline = rw_itest_now_ms() + deadline_ms(15000);
    while (rw_itest_fleet_log_count(f, poller, held) == 0) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("the poller never held the chunk's poll event");
        }
        rw_itest_sleep_ms(50);
    }

    join_extra_member(f, "poller", poller);
    /* the scenario needs the revoke to come while the event is held */
    chunk_state(f, app, st, sizeof(st));
    if (strcmp(st, "triggered") != 0)
        fail_msg("inconclusive: the group rebalanced only after the poll "
                 "event's due time (chunk %s); raise the first poll delay",
                 st);
    if (rw_itest_fleet_log_count(f, poller, dropped) == 0)
        fail_msg("the poller did not drop its held event at the revoke");

    deadline = rw_itest_now_ms() + deadline_ms(60000);
    for (;;) {
        chunk_state(f, app, st, sizeof(st));
        if (strcmp(st, "done") == 0)
            break;
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("the chunk whose poll event was held across the "
                     "rebalance is still %s",
                     st);
        }
        member_poll(200);
    }
    /* one poll ended it, so every hold was of that one event: read again
     * after the reassignment and held again, the copy held before the
     * revoke was not the one processed */
    if (!rw_itest_fleet_log_has(f, poller, " chunk=0 polls=1\n"))
        fail_msg("the chunk took more than one poll: the holds counted "
                 "below are not of one event");
    if (rw_itest_fleet_log_count(f, poller, held) < 2)
        fail_msg("the poll event was not held again after the rebalance "
                 "(held %zu times)",
                 rw_itest_fleet_log_count(f, poller, held));
    rw_kafka_consumer_destroy(member);
    member = NULL;
    rw_itest_fleet_wait_final(f, 1, deadline_ms(60000));
    assert_int_equal(chunk_ends(f, app), 1);
    finish(f);
}

/* ---- 6. the adaptive limit ---- */

/* A store app's scheduled redeploys on or off (the next tick's due set). */
static void app_enabled(rw_itest_fleet_t *f, long long app, bool on)
{
    char app_s[24];
    const char *p[2] = {app_s, on ? "true" : "false"};

    snprintf(app_s, sizeof(app_s), "%lld", app);
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE store_apps SET redeploy_enabled = $2"
                             " WHERE id = $1",
                             2, p));
}

/*
 * Lagoon runs 30 builds at a time and queues the rest: the effective limit
 * comes down to at most 30 (never below one chunk); once Lagoon runs 100,
 * it rises above 30 again, and both rollouts complete. The second app's
 * run starts when Lagoon's cap goes up, so that the rise always has a
 * rollout to happen in: with one run, a machine slow enough to bring the
 * limit down late left too little of it for the rise (seen once, the run
 * over with the limit at 14).
 */
static void test_adaptive_limit(void **state)
{
    rw_itest_fleet_t *f = new_fleet(
        state, 1000, 2000, "\"max_concurrent_builds\":30", 10, "100", NULL);
    long long app, app2, eff = -1, lowest = 1000, deadline;

    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "adapt", 700);
    app2 = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app2, "later", 700);
    app_enabled(f, app2, false);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 2, 2);
    rw_itest_fleet_tick(f);

    deadline = rw_itest_now_ms() + deadline_ms(40000);
    for (;;) {
        json_t *o = throttle(f, NULL, NULL);
        eff = jll(o, "effective_limit");
        assert_int_equal(jll(o, "max_in_flight"), 100);
        json_decref(o);
        if (eff < lowest)
            lowest = eff;
        if (eff <= 30)
            break;
        if (rw_itest_fleet_all_final(f, 1))
            fail_msg("the rollout ended with the effective limit at %lld, "
                     "never at or below Lagoon's 30",
                     eff);
        if (rw_itest_now_ms() > deadline)
            fail_msg("effective limit %lld after 40 s of Lagoon queueing "
                     "beyond 30 builds",
                     eff);
        rw_itest_sleep_ms(200);
    }
    assert_true(progress(f, true) < 1000);

    rw_itest_fleet_sim_config(f, "{\"max_concurrent_builds\":100}");
    app_enabled(f, app2, true);
    rw_itest_fleet_tick(f);
    deadline = rw_itest_now_ms() + deadline_ms(40000);
    for (;;) {
        eff = throttle_field(f, "effective_limit");
        if (eff < lowest)
            lowest = eff;
        if (eff > 30)
            break;
        if (rw_itest_fleet_all_final(f, 2))
            fail_msg("the rollouts ended before the effective limit rose "
                     "above 30 (it is %lld)",
                     eff);
        if (rw_itest_now_ms() > deadline)
            fail_msg("effective limit still %lld 40 s after Lagoon's cap "
                     "went to 100",
                     eff);
        rw_itest_sleep_ms(200);
    }
    if (lowest < 10)
        fail_msg("the effective limit went down to %lld, below one chunk",
                 lowest);

    rw_itest_fleet_wait_final(f, 2, deadline_ms(120000));
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'completed' AND"
                                       " succeeded_count = 700",
                                       0, NULL),
                     2);
    assert_peaks_within(f, 100);
    finish(f);
}

/* ---- 7. bad input ---- */

/* The fleet row as text: a refusal must leave every column alone. */
static void row_text(rw_itest_fleet_t *f, char *buf, size_t len)
{
    PGresult *res = rw_itest_fleet_q(
        f,
        "SELECT max_in_flight || '|' || trigger_rate_per_min || '|' ||"
        " burst || '|' || effective_limit || '|' || updated_at || '|' ||"
        " updated_by FROM fleet_throttle WHERE id = 1",
        0, NULL);

    if (PQntuples(res) != 1)
        fail_msg("no fleet throttle row");
    snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

static void test_bad_limits_refused(void **state)
{
    static const struct {
        const char *args[3];
        const char *names;
    } cases[] = {
        {{"--max-in-flight", "-1", NULL}, "--max-in-flight"},
        {{"--max-in-flight", "abc", NULL}, "--max-in-flight"},
        {{"--rate", "0", NULL}, "--rate"},
        {{"--rate", "5/day", NULL}, "--rate"},
        {{"--rate", NULL, NULL}, "--rate"},
        /* smaller than the fleet's chunk of 50: never triggerable */
        {{"--max-in-flight", "30", NULL}, "--max-in-flight"},
    };
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 50);
    char before[512], after[512], out[4096], err[4096];
    const char *worker[] = {"rollwave-worker", NULL};
    json_t *o;
    int rc;

    *state = f;
    o = throttle(f, "--max-in-flight", "100");
    assert_int_equal(jll(o, "max_in_flight"), 100);
    json_decref(o);
    o = throttle(f, "--rate", "600/min");
    assert_true(json_real_value(json_object_get(o, "trigger_rate_per_min")) ==
                600.0);
    json_decref(o);
    row_text(f, before, sizeof(before));

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *argv[6] = {"rollwavectl", "throttle"};
        size_t n = 2;
        for (size_t j = 0; cases[i].args[j]; j++)
            argv[n++] = cases[i].args[j];
        argv[n] = NULL;
        rc =
            rw_itest_fleet_run_err(f, argv, out, sizeof(out), err, sizeof(err));
        if (rc != 2 || !strstr(err, cases[i].names))
            fail_msg("rollwavectl throttle %s %s: exit %d, stderr \"%s\"; "
                     "want exit 2 naming %s",
                     cases[i].args[0], cases[i].args[1] ? cases[i].args[1] : "",
                     rc, err, cases[i].names);
        row_text(f, after, sizeof(after));
        if (strcmp(before, after) != 0)
            fail_msg("refused rollwavectl throttle %s %s changed the row: "
                     "%s -> %s",
                     cases[i].args[0], cases[i].args[1] ? cases[i].args[1] : "",
                     before, after);
    }
    /* one chunk exactly is a limit that works */
    o = throttle(f, "--max-in-flight", "50");
    assert_int_equal(jll(o, "max_in_flight"), 50);
    json_decref(o);

    /* a worker configured so never starts */
    rw_itest_fleet_set(f, "ROLLWAVE_MAX_IN_FLIGHT", "30");
    rc = rw_itest_fleet_run_err(f, worker, out, sizeof(out), err, sizeof(err));
    if (rc != 2 || !strstr(err, "ROLLWAVE_MAX_IN_FLIGHT"))
        fail_msg("rollwave-worker with ROLLWAVE_MAX_IN_FLIGHT=30 and chunks "
                 "of 50: exit %d, stderr \"%s\"; want exit 2 naming "
                 "ROLLWAVE_MAX_IN_FLIGHT",
                 rc, err);
}

/*
 * A cooperative assignor is refused at start, by name: a partition kept
 * across an incremental rebalance can be left paused or its seek dropped
 * (librdkafka 2.0.2), which the daemons' held messages cannot survive.
 */
static void test_cooperative_refused(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 50);
    static const char *const bins[] = {"rollwave-worker", "rollwave-poller"};
    static const char *const roles[] = {"worker", "poller"};

    *state = f;
    for (int i = 0; i < 2; i++) {
        pid_t pid = rw_itest_fleet_start_with(
            f, bins[i], roles[i], "ROLLWAVE_KAFKA_PROPERTIES",
            "partition.assignment.strategy=cooperative-sticky", false);
        int st = rw_itest_fleet_wait(f, pid, deadline_ms(30000));

        if (st == -1)
            fail_msg("%s with a cooperative assignor did not exit", bins[i]);
        assert_true(WIFEXITED(st));
        assert_int_not_equal(WEXITSTATUS(st), 0);
        assert_true(rw_itest_fleet_log_has(
            f, pid, "cooperative partition.assignment.strategy is refused"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_in_flight_cap, teardown),
        cmocka_unit_test_teardown(test_trigger_rate, teardown),
        cmocka_unit_test_teardown(test_budget_survives_kill9, teardown),
        cmocka_unit_test_teardown(test_budget_survives_redis_flush, teardown),
        cmocka_unit_test_teardown(test_emergency_brake, teardown),
        cmocka_unit_test_teardown(test_held_batch_does_not_stall, teardown),
        cmocka_unit_test_teardown(test_held_batch_survives_rebalance, teardown),
        cmocka_unit_test_teardown(test_held_poll_event_survives_rebalance,
                                  teardown),
        cmocka_unit_test_teardown(test_adaptive_limit, teardown),
        cmocka_unit_test_teardown(test_bad_limits_refused, teardown),
        cmocka_unit_test_teardown(test_cooperative_refused, teardown),
    };

    /* a developer chasing one scenario may name it (cmocka pattern) */
    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
