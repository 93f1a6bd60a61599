/*
 * test_waves: rollout strategies' waves end to end (DESIGN.md, "Waves"):
 * canaries first and bakes held between waves, a manual bake released by
 * `run promote`, failure thresholds that pause (then resume or abort) or
 * abort a run on their own, kill -9 of the producer and of a worker around
 * a wave change, and a store app strategy that no longer validates.
 *
 * Every scenario runs a fleet of its own (rw_itest_fleet: database, topic
 * prefix, lagoon-sim, daemons of this build) with fast builds, polls every
 * 300 ms and a sweep every second, and ends with the shared invariant
 * check. Timing assertions compare Postgres' own times (a wave's bake end
 * against the claims of the next wave), never the test's sleeps; the one
 * "nothing happens" observation (a manual bake holds) is taken after the
 * sweep has had several rounds to misbehave.
 *
 * It does not test rw_strategy's parsing (tests/unit/test_strategy.c) nor
 * the throttle's per-run limit.
 */
#include "rw_itest.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "rw_itest_fleet.h"

/* A deadline for this build: sanitized daemons are several times slower. */
static long long deadline_ms(long long ms)
{
    const char *v = getenv("RW_SANITIZED");
    bool sanitized = RW_ITEST_ASAN || (v && *v && strcmp(v, "0") != 0);

    return sanitized ? 2 * ms : ms;
}

/*
 * A fleet with builds of 100..300 ms (extra: more sim settings or NULL),
 * chunks of chunk, polls every 300 ms and a sweep every second.
 */
static rw_itest_fleet_t *new_fleet(void **state, long long chunk,
                                   const char *extra)
{
    char sim[512];
    rw_itest_fleet_t *f;

    snprintf(sim, sizeof(sim),
             "{\"rows_delay_ms\":100,\"phase_ms\":50,\"build_min_ms\":100,"
             "\"build_max_ms\":300%s%s}",
             extra ? "," : "", extra ? extra : "");
    f = rw_itest_fleet_new(sim, chunk);
    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_MS", "300");
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_INTERVAL_MS", "300");
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_INTERVAL_S", "1");
    /* the producer is there for its sweep (releases), not its tick */
    rw_itest_fleet_set(f, "ROLLWAVE_TICK_INTERVAL_S", "86400");
    return f;
}

static void start_daemons(rw_itest_fleet_t *f)
{
    rw_itest_fleet_start(f, "rollwave-producer", "producer");
    rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");
}

/*
 * A store app of the fleet's chunk size that the scheduler leaves alone
 * (the producer's first tick would otherwise start runs of its own): the
 * scenarios start their runs with rollwavectl redeploy.
 */
static long long add_app(rw_itest_fleet_t *f)
{
    long long app = rw_itest_fleet_add_app(f, 0);
    char app_s[24];
    const char *p[1] = {app_s};

    snprintf(app_s, sizeof(app_s), "%lld", app);
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE store_apps SET redeploy_enabled = false"
                             " WHERE id = $1::bigint",
                             1, p));
    return app;
}

static void set_strategy(rw_itest_fleet_t *f, long long app, const char *json)
{
    char app_s[24];
    const char *p[2] = {app_s, json};

    snprintf(app_s, sizeof(app_s), "%lld", app);
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE store_apps SET strategy = $2"
                             " WHERE id = $1::bigint",
                             2, p));
}

/* rollwavectl redeploy --store-app app [extra...]: the run's uuid. */
static void redeploy(rw_itest_fleet_t *f, long long app, const char *flag1,
                     const char *val1, const char *flag2, const char *val2,
                     char *uuid, size_t len)
{
    char app_s[24], out[8192];
    const char *argv[12] = {"rollwavectl", "redeploy", "--store-app",
                            app_s,         "--by",     "itest"};
    int n = 6, rc;
    const char *p;

    snprintf(app_s, sizeof(app_s), "%lld", app);
    if (flag1) {
        argv[n++] = flag1;
        argv[n++] = val1;
    }
    if (flag2) {
        argv[n++] = flag2;
        argv[n++] = val2;
    }
    argv[n] = NULL;
    rc = rw_itest_fleet_run(f, argv, out, sizeof(out));
    if (rc != 0)
        fail_msg("rollwavectl redeploy --store-app %s exited %d: %s", app_s, rc,
                 out);
    p = strstr(out, "run ");
    assert_non_null(p);
    snprintf(uuid, len, "%.36s", p + 4);
}

/* rollwavectl run verb uuid; its exit status, output into out. */
static int run_cmd(rw_itest_fleet_t *f, const char *verb, const char *uuid,
                   char *out, size_t len)
{
    const char *argv[] = {"rollwavectl", "run",   verb, uuid,
                          "--by",        "itest", NULL};
    const char *show[] = {"rollwavectl", "run", verb, uuid, NULL};

    return rw_itest_fleet_run(f, strcmp(verb, "show") == 0 ? show : argv, out,
                              len);
}

/* One integer about run uuid: sql with $1 = the uuid. */
static long long run_ll(rw_itest_fleet_t *f, const char *uuid, const char *sql)
{
    const char *p[1] = {uuid};
    return rw_itest_fleet_ll(f, sql, 1, p);
}

static void wave_state(rw_itest_fleet_t *f, const char *uuid, int wave,
                       char *buf, size_t len)
{
    char wave_s[16];
    const char *p[2] = {uuid, wave_s};
    PGresult *res;

    snprintf(wave_s, sizeof(wave_s), "%d", wave);
    res = rw_itest_fleet_q(f,
                           "SELECT w.state FROM run_waves w"
                           " JOIN deployment_runs r ON r.id = w.run_id"
                           " WHERE r.uuid = $1::uuid AND w.wave = $2::int",
                           2, p);
    if (PQntuples(res) != 1)
        fail_msg("run %s has no wave %d", uuid, wave);
    snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* Wait until wave `wave` of run uuid is in state; fail after timeout. */
static void wait_wave(rw_itest_fleet_t *f, const char *uuid, int wave,
                      const char *state, long long timeout_ms)
{
    long long deadline = rw_itest_now_ms() + deadline_ms(timeout_ms);
    char now[32];

    for (;;) {
        wave_state(f, uuid, wave, now, sizeof(now));
        if (strcmp(now, state) == 0)
            return;
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("run %s wave %d is %s after %lld ms, want %s", uuid, wave,
                     now, timeout_ms, state);
        }
        rw_itest_sleep_ms(100);
    }
}

static void wait_status(rw_itest_fleet_t *f, const char *uuid,
                        const char *status, long long timeout_ms)
{
    const char *p[2] = {uuid, status};
    long long deadline = rw_itest_now_ms() + deadline_ms(timeout_ms);

    while (rw_itest_fleet_ll(f,
                             "SELECT count(*) FROM deployment_runs"
                             " WHERE uuid = $1::uuid AND status = $2",
                             2, p) != 1) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("run %s is not %s after %lld ms", uuid, status,
                     timeout_ms);
        }
        rw_itest_sleep_ms(100);
    }
}

/* Targets of run uuid in wave `wave` that reached Lagoon (a bulk id). */
static long long wave_triggered(rw_itest_fleet_t *f, const char *uuid, int wave)
{
    char wave_s[16];
    const char *p[2] = {uuid, wave_s};

    snprintf(wave_s, sizeof(wave_s), "%d", wave);
    return rw_itest_fleet_ll(
        f,
        "SELECT count(*) FROM run_targets t"
        " JOIN deployment_runs r ON r.id = t.run_id"
        " JOIN run_waves w ON w.run_id = r.id AND w.wave = $2::int"
        " WHERE r.uuid = $1::uuid AND t.state <> 'skipped'"
        "   AND t.chunk BETWEEN w.first_chunk AND w.last_chunk"
        "   AND (t.bulk_id IS NOT NULL OR t.claimed_at IS NOT NULL)",
        2, p);
}

/*
 * Exactly one batch outbox row per chunk of a released wave (one that
 * started) and none for the others: no wave was released twice, none written
 * before its time.
 */
static void assert_one_batch_per_chunk(rw_itest_fleet_t *f, const char *uuid)
{
    const char *p[1] = {uuid};
    PGresult *res = rw_itest_fleet_q(
        f,
        "SELECT c.chunk, w.state, w.started_at IS NOT NULL AS released,"
        "  (SELECT count(*) FROM outbox o WHERE o.topic = 'batches'"
        "     AND o.msg_key = r.uuid::text || ':' || c.chunk) AS n"
        " FROM run_chunks c JOIN deployment_runs r ON r.id = c.run_id"
        " JOIN run_waves w ON w.run_id = r.id"
        "  AND c.chunk BETWEEN w.first_chunk AND w.last_chunk"
        " WHERE r.uuid = $1::uuid ORDER BY c.chunk",
        1, p);

    assert_true(PQntuples(res) > 0);
    for (int i = 0; i < PQntuples(res); i++) {
        /* a wave cancelled while running was released all the same */
        bool released = strcmp(PQgetvalue(res, i, 2), "t") == 0;
        long long n = atoll(PQgetvalue(res, i, 3));
        if (n != (released ? 1 : 0))
            fail_msg("run %s chunk %s (wave %s): %lld batch rows, want %d",
                     uuid, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), n,
                     released ? 1 : 0);
    }
    PQclear(res);
}

static void finish(rw_itest_fleet_t *f)
{
    rw_itest_fleet_check(f);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "duplicate_triggers"), 0);
    rw_itest_fleet_stop_all(f);
    rw_itest_fleet_scan_logs(f);
}

/* ---- scenarios ---- */

/*
 * Waves 4,50%,100% of 40 instances of which the last 4 are beta: wave 1
 * is exactly the beta ones (canaries before the most outdated), and no
 * target of a wave is claimed before the previous wave ended and its 2 s
 * bake passed.
 */
static void test_canaries_and_bake(void **state)
{
    rw_itest_fleet_t *f = new_fleet(state, 3, NULL);
    long long app = add_app(f);
    char uuid[40];
    const char *p[1] = {uuid};

    rw_itest_fleet_add_instances(f, app, "cb", 40);
    PQclear(
        rw_itest_fleet_q(f,
                         "WITH g AS (INSERT INTO user_groups (name, is_beta)"
                         "           VALUES ('beta', true) RETURNING id)"
                         " UPDATE app_instances SET user_group_id = g.id FROM g"
                         " WHERE name IN ('cb37', 'cb38', 'cb39', 'cb40')",
                         0, NULL));
    set_strategy(f, app,
                 "{\"waves\":[\"4\",\"50%\",\"100%\"],\"bake\":\"2s\"}");
    rw_itest_fleet_snapshot(f);
    start_daemons(f);
    redeploy(f, app, NULL, NULL, NULL, NULL, uuid, sizeof(uuid));
    rw_itest_fleet_wait_final(f, 1, deadline_ms(60000));

    assert_int_equal(run_ll(f, uuid,
                            "SELECT count(*) FROM deployment_runs"
                            " WHERE uuid = $1::uuid AND status = 'completed'"),
                     1);
    /* wave 1: the four beta instances, nothing else */
    assert_int_equal(
        rw_itest_fleet_ll(f,
                          "SELECT count(*) FILTER (WHERE g.is_beta)"
                          "  * 100 + count(*)"
                          " FROM run_targets t"
                          " JOIN deployment_runs r ON r.id = t.run_id"
                          " JOIN run_waves w ON w.run_id = r.id AND w.wave = 1"
                          " JOIN app_instances i ON i.id = t.instance_id"
                          " LEFT JOIN user_groups g ON g.id = i.user_group_id"
                          " WHERE r.uuid = $1::uuid"
                          "   AND t.chunk BETWEEN w.first_chunk"
                          "                   AND w.last_chunk",
                          1, p),
        404);
    /* sizes 4, 20 (50%), 40; every wave done */
    assert_int_equal(run_ll(f, uuid,
                            "SELECT count(*) FROM (SELECT string_agg("
                            "  w.target_count::text || ':' || w.state, ','"
                            "  ORDER BY w.wave) AS s"
                            " FROM run_waves w JOIN deployment_runs r"
                            "   ON r.id = w.run_id WHERE r.uuid = $1::uuid) x"
                            " WHERE x.s = '4:done,16:done,20:done'"),
                     1);
    /* no claim of wave n+1 before wave n ended + 2 s (its not_before) */
    assert_int_equal(
        run_ll(f, uuid,
               "SELECT count(*) FROM run_waves w"
               " JOIN deployment_runs r ON r.id = w.run_id"
               " JOIN run_waves prev ON prev.run_id = w.run_id"
               "  AND prev.wave = w.wave - 1"
               " JOIN run_targets t ON t.run_id = r.id"
               "  AND t.chunk BETWEEN w.first_chunk AND w.last_chunk"
               " WHERE r.uuid = $1::uuid"
               "   AND (t.claimed_at < w.not_before"
               "        OR w.not_before < prev.finished_at"
               "                          + interval '2 seconds')"),
        0);
    assert_int_equal(run_ll(f, uuid,
                            "SELECT count(*) FROM run_waves w"
                            " JOIN deployment_runs r ON r.id = w.run_id"
                            " WHERE r.uuid = $1::uuid AND w.wave > 1"
                            "   AND w.not_before IS NOT NULL"),
                     2);
    assert_one_batch_per_chunk(f, uuid);
    finish(f);
}

/*
 * A manual bake (flags on the redeploy): after wave 1 the run waits, the
 * sweep running every second releases nothing; run promote starts wave 2
 * and the audit names who promoted.
 */
static void test_manual_bake_promote(void **state)
{
    rw_itest_fleet_t *f = new_fleet(state, 2, NULL);
    long long app = add_app(f);
    char uuid[40], out[16384];

    rw_itest_fleet_add_instances(f, app, "mp", 10);
    rw_itest_fleet_snapshot(f);
    start_daemons(f);
    redeploy(f, app, "--waves", "2,100%", "--bake", "manual", uuid,
             sizeof(uuid));
    wait_wave(f, uuid, 2, "awaiting_promotion", 30000);
    /* several sweep rounds and poll intervals: still nothing of wave 2 */
    rw_itest_sleep_ms(3000);
    wait_wave(f, uuid, 2, "awaiting_promotion", 0);
    assert_int_equal(wave_triggered(f, uuid, 2), 0);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"), 2);
    assert_int_equal(run_cmd(f, "show", uuid, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "awaiting_promotion"));

    assert_int_equal(run_cmd(f, "promote", uuid, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "wave 2 released"));
    rw_itest_fleet_wait_final(f, 1, deadline_ms(30000));
    assert_int_equal(run_ll(f, uuid,
                            "SELECT count(*) FROM wave_transitions x"
                            " JOIN deployment_runs r ON r.id = x.run_id"
                            " WHERE r.uuid = $1::uuid AND x.wave = 2"
                            "   AND x.to_state = 'running'"
                            "   AND x.reason = 'promoted by itest'"),
                     1);
    /* a finished run has nothing left to promote */
    assert_int_not_equal(run_cmd(f, "promote", uuid, out, sizeof(out)), 0);
    assert_one_batch_per_chunk(f, uuid);
    finish(f);
}

/*
 * Failure thresholds. Three runs whose wave 1 has 3 failing builds of 4
 * (max_failures_wave 1): two pause with the reason recorded, wave 2
 * untouched; one is resumed and goes on to the end, the other aborted
 * (its wave 2 cancelled, never triggered). The third has on_failure
 * abort and ends without an operator.
 */
static void test_failure_thresholds(void **state)
{
    rw_itest_fleet_t *f =
        new_fleet(state, 2,
                  "\"fail\":[\"ta[1-3]/main\",\"tb[1-3]/main\","
                  "\"tc[1-3]/main\"]");
    long long a = add_app(f), b = add_app(f), c = add_app(f);
    char ua[40], ub[40], uc[40], out[16384];
    const char *pause = "{\"waves\":[\"4\",\"100%\"],\"bake\":\"0\","
                        "\"max_failures_wave\":\"1\"}";

    rw_itest_fleet_add_instances(f, a, "ta", 10);
    rw_itest_fleet_add_instances(f, b, "tb", 10);
    rw_itest_fleet_add_instances(f, c, "tc", 10);
    set_strategy(f, a, pause);
    set_strategy(f, b, pause);
    set_strategy(f, c,
                 "{\"waves\":[\"4\",\"100%\"],\"bake\":\"0\","
                 "\"max_failures_wave\":\"1\",\"on_failure\":\"abort\"}");
    rw_itest_fleet_snapshot(f);
    start_daemons(f);
    redeploy(f, a, NULL, NULL, NULL, NULL, ua, sizeof(ua));
    redeploy(f, b, NULL, NULL, NULL, NULL, ub, sizeof(ub));
    redeploy(f, c, NULL, NULL, NULL, NULL, uc, sizeof(uc));

    wait_status(f, ua, "paused", 30000);
    wait_status(f, ub, "paused", 30000);
    wait_status(f, uc, "cancelled", 30000);
    /* the reason, as recorded and as run show prints it */
    assert_int_equal(run_ll(f, ua,
                            "SELECT count(*) FROM run_transitions x"
                            " JOIN deployment_runs r ON r.id = x.run_id"
                            " WHERE r.uuid = $1::uuid"
                            "   AND x.to_status = 'paused'"
                            "   AND x.reason ~ '^paused: wave 1 failures"
                            " [23]/4 > 1$'"),
                     1);
    assert_int_equal(run_cmd(f, "show", ua, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "paused: wave 1 failures"));
    /* wave 1 of the paused runs ends (its in-flight builds are polled),
     * wave 2 is not released */
    rw_itest_fleet_wait_count(
        f,
        "SELECT count(*) FROM run_chunks c JOIN run_waves w"
        "  ON w.run_id = c.run_id AND w.wave = 1"
        "  AND c.chunk BETWEEN w.first_chunk AND w.last_chunk"
        " WHERE c.state NOT IN ('triggering', 'triggered')",
        6, deadline_ms(30000), "wave 1 chunks closed or left pending");
    assert_int_equal(wave_triggered(f, ua, 2), 0);
    assert_int_equal(wave_triggered(f, ub, 2), 0);
    assert_int_equal(wave_triggered(f, uc, 2), 0);

    /* a resumes and runs to its end; b is aborted */
    assert_int_equal(run_cmd(f, "resume", ua, out, sizeof(out)), 0);
    assert_int_equal(run_cmd(f, "abort", ub, out, sizeof(out)), 0);
    rw_itest_fleet_wait_final(f, 3, deadline_ms(30000));
    assert_int_equal(run_ll(f, ua,
                            "SELECT count(*) FROM deployment_runs WHERE"
                            " uuid = $1::uuid AND status = 'partial_failed'"
                            " AND succeeded_count = 7 AND failed_count = 3"),
                     1);
    assert_int_equal(wave_triggered(f, ua, 2), 6);
    {
        char st[32];
        wave_state(f, ua, 2, st, sizeof(st));
        assert_string_equal(st, "done");
        wave_state(f, ub, 2, st, sizeof(st));
        assert_string_equal(st, "cancelled");
        wave_state(f, uc, 2, st, sizeof(st));
        assert_string_equal(st, "cancelled");
    }
    assert_int_equal(wave_triggered(f, ub, 2), 0);
    assert_int_equal(wave_triggered(f, uc, 2), 0);
    assert_int_equal(run_ll(f, uc,
                            "SELECT count(*) FROM run_transitions x"
                            " JOIN deployment_runs r ON r.id = x.run_id"
                            " WHERE r.uuid = $1::uuid"
                            "   AND x.to_status = 'cancelled'"
                            "   AND x.reason LIKE 'aborted: wave 1 failures%'"),
                     1);
    assert_int_equal(wave_triggered(f, ua, 1), 4);
    assert_one_batch_per_chunk(f, ua);
    assert_one_batch_per_chunk(f, ub);
    assert_one_batch_per_chunk(f, uc);
    finish(f);
}

/*
 * kill -9 of the producer while a wave bakes, and of the worker right as
 * the next wave is released: each wave is still released once (one batch
 * row per chunk, one transition into running), nothing is triggered twice,
 * and the run completes.
 */
static void test_kill9_around_waves(void **state)
{
    rw_itest_fleet_t *f = new_fleet(state, 3, NULL);
    long long app = add_app(f);
    char uuid[40];
    pid_t producer, worker;

    /* a claim the killed worker leaves is resolved by the sweep after
     * 2 x (timeout + 1 s) + settle: seconds here, not minutes */
    rw_itest_fleet_set(f, "ROLLWAVE_LAGOON_TIMEOUT_MS", "2000");
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_SETTLE_S", "2");

    rw_itest_fleet_add_instances(f, app, "kw", 24);
    set_strategy(f, app,
                 "{\"waves\":[\"3\",\"50%\",\"100%\"],\"bake\":\"2s\"}");
    rw_itest_fleet_snapshot(f);
    producer = rw_itest_fleet_start(f, "rollwave-producer", "producer");
    worker = rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");
    redeploy(f, app, NULL, NULL, NULL, NULL, uuid, sizeof(uuid));

    wait_wave(f, uuid, 2, "baking", 30000);
    producer = rw_itest_fleet_kill9(f, producer, true);
    wait_wave(f, uuid, 2, "running", 30000);
    worker = rw_itest_fleet_kill9(f, worker, true);
    wait_wave(f, uuid, 3, "baking", 30000);
    producer = rw_itest_fleet_kill9(f, producer, true);
    wait_wave(f, uuid, 3, "running", 30000);
    worker = rw_itest_fleet_kill9(f, worker, true);
    (void)producer;
    (void)worker;
    rw_itest_fleet_wait_final(f, 1, deadline_ms(60000));

    assert_int_equal(run_ll(f, uuid,
                            "SELECT count(*) FROM deployment_runs"
                            " WHERE uuid = $1::uuid AND status = 'completed'"),
                     1);
    assert_int_equal(run_ll(f, uuid,
                            "SELECT count(*) FROM wave_transitions x"
                            " JOIN deployment_runs r ON r.id = x.run_id"
                            " WHERE r.uuid = $1::uuid"
                            "   AND x.to_state = 'running'"),
                     2); /* waves 2 and 3; wave 1 ran from creation */
    assert_one_batch_per_chunk(f, uuid);
    finish(f);
}

/*
 * A store app strategy edited by hand into something that no longer
 * validates: the scheduler's next run fails with the parser's reason
 * (run show prints it), its instances back off, and the next tick does
 * not try again. An operator's bad override is refused outright.
 */
static void test_bad_strategy(void **state)
{
    rw_itest_fleet_t *f = new_fleet(state, 5, NULL);
    long long a = rw_itest_fleet_add_app(f, 0),
              b = rw_itest_fleet_add_app(f, 0);
    char out[16384], err[4096], app_s[24];
    const char *redeploy_bad[] = {"rollwavectl", "redeploy", "--store-app",
                                  app_s,         "--waves",  "50%,10%",
                                  NULL};
    PGresult *res;

    rw_itest_fleet_add_instances(f, a, "ba", 4);
    rw_itest_fleet_add_instances(f, b, "bb", 4);
    set_strategy(f, a, "{\"waves\": [\"1\", ");
    set_strategy(f, b, "{\"waves\":[\"50%\",\"10%\"]}");
    rw_itest_fleet_snapshot(f);
    rw_itest_fleet_tick(f);

    res = rw_itest_fleet_q(f,
                           "SELECT r.uuid::text, r.status, r.last_error,"
                           "  r.skipped_count, r.total_count,"
                           "  (SELECT count(*) FROM app_instances i"
                           "    WHERE i.store_app_id = r.store_app_id"
                           "      AND i.next_redeploy_at > now()) AS backed"
                           " FROM deployment_runs r ORDER BY r.store_app_id",
                           0, NULL);
    assert_int_equal(PQntuples(res), 2);
    for (int i = 0; i < 2; i++) {
        const char *uuid = PQgetvalue(res, i, 0);
        assert_string_equal(PQgetvalue(res, i, 1), "failed");
        assert_true(strncmp(PQgetvalue(res, i, 2), "strategy: ", 10) == 0);
        assert_string_equal(PQgetvalue(res, i, 3), "4");
        assert_string_equal(PQgetvalue(res, i, 4), "4");
        assert_string_equal(PQgetvalue(res, i, 5), "4");
        assert_int_equal(run_cmd(f, "show", uuid, out, sizeof(out)), 0);
        assert_non_null(strstr(out, PQgetvalue(res, i, 2)));
    }
    /* b's reason names the offending field */
    assert_non_null(strstr(PQgetvalue(res, 1, 2), "waves"));
    PQclear(res);
    /* backed off: the next tick starts nothing */
    rw_itest_fleet_tick(f);
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM deployment_runs", 0, NULL),
        2);

    snprintf(app_s, sizeof(app_s), "%lld", a);
    assert_int_equal(rw_itest_fleet_run_err(f, redeploy_bad, out, sizeof(out),
                                            err, sizeof(err)),
                     2);
    assert_non_null(strstr(err, "waves"));
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM deployment_runs", 0, NULL),
        2);
    rw_itest_fleet_check(f);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"), 0);
}

static int teardown(void **state)
{
    rw_itest_fleet_destroy(*state);
    *state = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_canaries_and_bake, teardown),
        cmocka_unit_test_teardown(test_manual_bake_promote, teardown),
        cmocka_unit_test_teardown(test_failure_thresholds, teardown),
        cmocka_unit_test_teardown(test_kill9_around_waves, teardown),
        cmocka_unit_test_teardown(test_bad_strategy, teardown),
    };

    /* a developer chasing one scenario may name it (cmocka pattern) */
    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
