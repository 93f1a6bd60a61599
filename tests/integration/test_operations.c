/*
 * test_operations: the operator interfaces end to end. rollwavectl run
 * pause, resume, abort and retry, replay, lag, and the daemons' /metrics
 * and /healthz, each against a fleet of its own (fresh database, unique
 * topic prefix and consumer groups, own lagoon-sim) with the worker and
 * the poller as child processes; rollwavectl runs as a child with the
 * fleet's environment. Every scenario ends with the shared invariant
 * check.
 *
 * It does not test the commands' output formats beyond what a scenario
 * needs, nor the rollout itself (test_pipeline does).
 */
#include "rw_itest.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "rw_itest_fleet.h"
#include "rw_prom_check.h"
#include "rw_kafka.h"
#include "rw_redis.h"
#include "rw_settings.h"

#define FINAL_TIMEOUT_MS 60000
#define OUT_LEN          16384

/* ---- helpers ---- */

/*
 * rollwavectl with argv (NULL-terminated, without the binary name); stdout
 * and stderr into out and err (OUT_LEN each). Returns the exit status.
 */
static int ctl(rw_itest_fleet_t *f, const char *const *args, char *out,
               char *err)
{
    const char *argv[16] = {"rollwavectl"};
    size_t n = 1;

    for (size_t i = 0; args[i]; i++) {
        assert_true(n < 15);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    return rw_itest_fleet_run_err(f, argv, out, OUT_LEN, err, OUT_LEN);
}

/* rollwavectl run <verb> <uuid> --by itest-operator. */
static int run_verb(rw_itest_fleet_t *f, const char *verb, const char *uuid,
                    char *out, char *err)
{
    const char *args[] = {"run", verb, uuid, "--by", "itest-operator", NULL};

    return ctl(f, args, out, err);
}

static void expect_refused(rw_itest_fleet_t *f, const char *verb,
                           const char *uuid, int want_rc, const char *want_err)
{
    char out[OUT_LEN], err[OUT_LEN];
    int rc = run_verb(f, verb, uuid, out, err);

    if (rc != want_rc || !strstr(err, want_err))
        fail_msg("run %s %s: exit %d, stderr '%s'; want exit %d and '%s'", verb,
                 uuid, rc, err, want_rc, want_err);
}

/* A manual run of every instance of app; returns the new run's id. */
static long long redeploy_app(rw_itest_fleet_t *f, long long app)
{
    char app_s[24], out[OUT_LEN], err[OUT_LEN];
    const char *args[] = {"redeploy", "--store-app", app_s,
                          "--by",     "itest",       NULL};
    int rc;

    snprintf(app_s, sizeof(app_s), "%lld", app);
    rc = ctl(f, args, out, err);
    if (rc != 0)
        fail_msg("rollwavectl redeploy --store-app %s exited %d: %s%s", app_s,
                 rc, out, err);
    return rw_itest_fleet_ll(f, "SELECT max(id) FROM deployment_runs", 0, NULL);
}

static void run_uuid(rw_itest_fleet_t *f, long long id, char *buf, size_t len)
{
    char id_s[24];
    const char *p[1] = {id_s};
    PGresult *res;

    snprintf(id_s, sizeof(id_s), "%lld", id);
    res = rw_itest_fleet_q(f,
                           "SELECT uuid::text FROM deployment_runs"
                           " WHERE id = $1::bigint",
                           1, p);
    assert_int_equal(PQntuples(res), 1);
    snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* First column of sql with the run id as $1. */
static long long run_ll(rw_itest_fleet_t *f, long long id, const char *sql)
{
    char id_s[24];
    const char *p[1] = {id_s};

    snprintf(id_s, sizeof(id_s), "%lld", id);
    return rw_itest_fleet_ll(f, sql, 1, p);
}

static void run_text(rw_itest_fleet_t *f, long long id, const char *sql,
                     char *buf, size_t len)
{
    char id_s[24];
    const char *p[1] = {id_s};
    PGresult *res;

    snprintf(id_s, sizeof(id_s), "%lld", id);
    res = rw_itest_fleet_q(f, sql, 1, p);
    if (PQntuples(res) < 1 || PQgetisnull(res, 0, 0))
        snprintf(buf, len, "(null)");
    else
        snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

static void run_status(rw_itest_fleet_t *f, long long id, char *buf, size_t len)
{
    run_text(f, id, "SELECT status FROM deployment_runs WHERE id = $1::bigint",
             buf, len);
}

/* Wait until run id has status want (daemons checked on the way). */
static void wait_status(rw_itest_fleet_t *f, long long id, const char *want,
                        long long timeout_ms)
{
    long long deadline = rw_itest_now_ms() + timeout_ms;
    char st[64];

    for (;;) {
        run_status(f, id, st, sizeof(st));
        if (strcmp(st, want) == 0)
            return;
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("run %lld is %s after %lld ms, want %s", id, st,
                     timeout_ms, want);
        }
        rw_itest_fleet_poll_kids(f);
        rw_itest_sleep_ms(20);
    }
}

/* Run id's transitions as "from>to(reason),..." in order. */
static void transitions(rw_itest_fleet_t *f, long long id, char *buf,
                        size_t len)
{
    run_text(f, id,
             "SELECT string_agg(coalesce(from_status, '') || '>' ||"
             "   to_status || '(' || coalesce(reason, '') || ')', ','"
             "   ORDER BY id)"
             " FROM run_transitions WHERE run_id = $1::bigint",
             buf, len);
}

/* Wait until no target of any run is in flight. */
static void wait_no_flight(rw_itest_fleet_t *f, long long timeout_ms)
{
    long long deadline = rw_itest_now_ms() + timeout_ms, n;

    for (;;) {
        n = rw_itest_fleet_ll(f,
                              "SELECT count(*) FROM run_targets WHERE state"
                              " IN ('claimed', 'triggered', 'deploying')",
                              0, NULL);
        if (n == 0)
            return;
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("%lld targets still in flight after %lld ms", n,
                     timeout_ms);
        }
        rw_itest_fleet_poll_kids(f);
        rw_itest_sleep_ms(100);
    }
}

/* The simulator's trigger count of "project/main". */
static long long sim_triggers(json_t *stats, const char *project)
{
    char env[128];
    json_t *v;

    snprintf(env, sizeof(env), "%s/main", project);
    v = json_object_get(json_object_get(stats, "triggers"), env);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

/*
 * After a retry or replay of run id whose failed targets were the
 * projects in failed (comma-separated, with a comma at both ends): each
 * of those was triggered twice, every other target of the run once.
 */
static void check_retriggered(rw_itest_fleet_t *f, long long id,
                              const char *failed)
{
    json_t *stats = rw_itest_fleet_sim(f, "/sim/stats", NULL);
    char id_s[24], probe[128];
    const char *p[1] = {id_s};
    PGresult *res;

    snprintf(id_s, sizeof(id_s), "%lld", id);
    res = rw_itest_fleet_q(f,
                           "SELECT lagoon_project FROM run_targets"
                           " WHERE run_id = $1::bigint ORDER BY id",
                           1, p);
    assert_true(PQntuples(res) > 0);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *proj = PQgetvalue(res, i, 0);
        long long want, got = sim_triggers(stats, proj);

        snprintf(probe, sizeof(probe), ",%s,", proj);
        want = strstr(failed, probe) ? 2 : 1;
        if (got != want)
            fail_msg("%s/main was triggered %lld times, want %lld (failed "
                     "before: %s)",
                     proj, got, want, failed);
    }
    PQclear(res);
    json_decref(stats);
}

/* ",p1,p2,...," of run id's failed and timed-out targets; their count. */
static long long failed_projects(rw_itest_fleet_t *f, long long id, char *buf,
                                 size_t len)
{
    run_text(f, id,
             "SELECT ',' || coalesce(string_agg(lagoon_project, ','), '')"
             "   || ','"
             " FROM run_targets WHERE run_id = $1::bigint"
             "   AND state IN ('failed', 'timed_out')",
             buf, len);
    return run_ll(f, id,
                  "SELECT count(*) FROM run_targets WHERE run_id ="
                  " $1::bigint AND state IN ('failed', 'timed_out')");
}

/* A number that follows label in text ("published 3 batch"), -1 if none. */
static long long number_after(const char *text, const char *label)
{
    const char *at = strstr(text, label);

    return at ? strtoll(at + strlen(label), NULL, 10) : -1;
}

static void finish(rw_itest_fleet_t *f)
{
    rw_itest_fleet_check(f);
    rw_itest_fleet_stop_all(f);
    rw_itest_fleet_scan_logs(f);
}

static int teardown(void **state)
{
    rw_itest_fleet_destroy(*state);
    *state = NULL;
    return 0;
}

/* ---- 1. pause and resume ---- */

/*
 * Every Lagoon call answers 400 ms late, so run A's ten chunks trigger one
 * by one and A can be paused while most are still pending.
 */
static void test_pause_holds_run_resume_finishes(void **state)
{
    rw_itest_fleet_t *f =
        rw_itest_fleet_new("{\"fault_slow\":1.0,\"slow_ms\":400}", 2);
    long long app_a, app_b, a, b, chunks, targets, paused_at, n;
    char uuid[64], out[OUT_LEN], err[OUT_LEN], st[64], tr[2048];
    int rc;

    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_LAGOON_TIMEOUT_MS", "10000");
    app_a = rw_itest_fleet_add_app(f, 0);
    app_b = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app_a, "pa", 20);
    rw_itest_fleet_add_instances(f, app_b, "pb", 4);
    rw_itest_fleet_snapshot(f);
    rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");

    a = redeploy_app(f, app_a);
    run_uuid(f, a, uuid, sizeof(uuid));
    wait_status(f, a, "running", 30000);
    rc = run_verb(f, "pause", uuid, out, err);
    if (rc != 0)
        fail_msg("run pause exited %d: %s", rc, err);
    paused_at = rw_itest_now_ms();
    assert_non_null(strstr(out, "running -> paused"));
    /* a trigger already under way when the pause landed may still end */
    rw_itest_sleep_ms(1500);
    chunks = run_ll(f, a,
                    "SELECT count(*) FROM run_chunks WHERE run_id ="
                    " $1::bigint AND state = 'pending'");
    targets = run_ll(f, a,
                     "SELECT count(*) FROM run_targets WHERE run_id ="
                     " $1::bigint AND state = 'pending'");
    if (chunks < 3)
        fail_msg("only %lld of run A's 10 chunks were pending after the "
                 "pause: the slow trigger path did not hold them back",
                 chunks);
    assert_int_equal(targets, 2 * chunks);

    /* another run goes all the way while A holds */
    b = redeploy_app(f, app_b);
    wait_status(f, b, "completed", FINAL_TIMEOUT_MS);
    while (rw_itest_now_ms() - paused_at < 5000)
        rw_itest_sleep_ms(100);
    run_status(f, a, st, sizeof(st));
    assert_string_equal(st, "paused");
    n = run_ll(f, a,
               "SELECT count(*) FROM run_chunks WHERE run_id = $1::bigint"
               " AND state = 'pending'");
    if (n != chunks)
        fail_msg("paused run A had %lld pending chunks, %lld after %lld ms",
                 chunks, n, rw_itest_now_ms() - paused_at);
    assert_int_equal(run_ll(f, a,
                            "SELECT count(*) FROM run_targets WHERE run_id ="
                            " $1::bigint AND state = 'pending'"
                            " AND bulk_id IS NULL AND attempt = 0"),
                     targets);
    /* a retry would not resume it: refused, naming what to do instead */
    expect_refused(f, "retry", uuid, 1,
                   "cannot retry a paused run: resume it instead");
    run_status(f, a, st, sizeof(st));
    assert_string_equal(st, "paused");

    rc = run_verb(f, "resume", uuid, out, err);
    if (rc != 0)
        fail_msg("run resume exited %d: %s", rc, err);
    assert_non_null(strstr(out, "paused -> running"));
    assert_int_equal(number_after(out, "published "), chunks);
    rw_itest_fleet_wait_final(f, 2, FINAL_TIMEOUT_MS);
    run_status(f, a, st, sizeof(st));
    assert_string_equal(st, "completed");
    assert_int_equal(run_ll(f, a,
                            "SELECT succeeded_count FROM deployment_runs"
                            " WHERE id = $1::bigint"),
                     20);
    transitions(f, a, tr, sizeof(tr));
    if (run_ll(f, a,
               "SELECT count(*) FROM (SELECT from_status, to_status,"
               "   reason, row_number() OVER (ORDER BY id) AS k"
               "   FROM run_transitions WHERE run_id = $1::bigint) x"
               " WHERE (k = 3 AND from_status = 'running' AND to_status ="
               "   'paused' AND reason LIKE 'pause by itest-operator%')"
               "  OR (k = 4 AND from_status = 'paused' AND to_status ="
               "   'running' AND reason LIKE 'resume by itest-operator%')"
               "  OR (k = 5 AND from_status = 'running' AND to_status ="
               "   'completed')") != 3 ||
        run_ll(f, a,
               "SELECT count(*) FROM run_transitions"
               " WHERE run_id = $1::bigint") != 5)
        fail_msg("run A's transitions: %s; want pending, running, paused "
                 "and running by the operator, completed",
                 tr);
    finish(f);
}

/* ---- 2. abort ---- */

static void test_abort_cancels_pending_targets(void **state)
{
    rw_itest_fleet_t *f =
        rw_itest_fleet_new("{\"fault_slow\":1.0,\"slow_ms\":400}", 2);
    long long app, a, cancelled, triggered;
    char uuid[64], out[OUT_LEN], err[OUT_LEN], st[64];
    PGresult *res;
    int rc;

    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_LAGOON_TIMEOUT_MS", "10000");
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "ab", 20);
    rw_itest_fleet_snapshot(f);
    rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");

    a = redeploy_app(f, app);
    run_uuid(f, a, uuid, sizeof(uuid));
    wait_status(f, a, "running", 30000);
    rc = run_verb(f, "abort", uuid, out, err);
    if (rc != 0)
        fail_msg("run abort exited %d: %s", rc, err);
    assert_non_null(strstr(out, "running -> cancelled"));
    cancelled = number_after(out, ", ");
    if (cancelled < 6)
        fail_msg("abort cancelled %lld targets of 20 (%s)", cancelled, out);

    /* chunks already triggered still end and are recorded */
    wait_no_flight(f, FINAL_TIMEOUT_MS);
    run_status(f, a, st, sizeof(st));
    assert_string_equal(st, "cancelled");
    triggered = run_ll(f, a,
                       "SELECT count(*) FROM run_targets WHERE run_id ="
                       " $1::bigint AND bulk_id IS NOT NULL");
    assert_true(triggered >= 2);
    assert_int_equal(cancelled + triggered, 20);
    assert_int_equal(run_ll(f, a,
                            "SELECT count(*) FROM run_targets WHERE run_id ="
                            " $1::bigint AND state = 'cancelled'"
                            " AND bulk_id IS NULL"),
                     cancelled);
    assert_int_equal(run_ll(f, a,
                            "SELECT count(*) FROM run_targets WHERE run_id ="
                            " $1::bigint AND bulk_id IS NOT NULL AND state"
                            " IN ('succeeded', 'failed', 'timed_out')"
                            " AND lagoon_status IS NOT NULL"),
                     triggered);
    res = rw_itest_fleet_q(f,
                           "SELECT total_count, succeeded_count,"
                           "  failed_count, skipped_count"
                           " FROM deployment_runs",
                           0, NULL);
    assert_int_equal(rw_pg_ll(res, 0, "total_count", -1), 20);
    assert_int_equal(rw_pg_ll(res, 0, "skipped_count", -1), cancelled);
    assert_int_equal(rw_pg_ll(res, 0, "succeeded_count", -1) +
                         rw_pg_ll(res, 0, "failed_count", -1),
                     triggered);
    PQclear(res);
    assert_int_equal(run_ll(f, a,
                            "SELECT count(*) FROM run_chunks WHERE run_id ="
                            " $1::bigint AND state = 'done' AND bulk_id IS"
                            " NOT NULL"),
                     triggered / 2);

    /* a cancelled run stays cancelled */
    expect_refused(f, "retry", uuid, 1, "cancelled");
    expect_refused(f, "resume", uuid, 1, "cannot resume a cancelled run");
    run_status(f, a, st, sizeof(st));
    assert_string_equal(st, "cancelled");
    assert_int_equal(run_ll(f, a,
                            "SELECT count(*) FROM run_transitions WHERE"
                            " run_id = $1::bigint AND to_status ="
                            " 'cancelled' AND from_status = 'running' AND"
                            " reason LIKE 'abort by itest-operator%'"),
                     1);
    finish(f);
}

/* ---- 2b. the sweep's release of locks a poller left behind ---- */

/*
 * Two finished runs whose pollers' lock releases never happened (their
 * locks put back by hand, as a poller dying between its commit and its
 * release leaves them) lose those locks to the producer's sweep, several
 * runs' chunks per pipeline; a lock another owner holds on one of their
 * instances stays. Ten chunks, three a round, all finished at the same
 * time (the cursor's ties), and Redis refusing every command at first:
 * the cursor must not pass a chunk whose release failed.
 */
static void test_sweep_releases_locks_left(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 2);
    long long app[2], run[2], deadline, foreign;
    char uuid[2][64], key[160], id_s[24];
    const char *p[1] = {id_s};
    PGresult *res;
    int planted = 0;

    *state = f;
    rw_itest_fleet_redis_proxy(f);
    app[0] = rw_itest_fleet_add_app(f, 0);
    app[1] = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app[0], "sa", 10);
    rw_itest_fleet_add_instances(f, app[1], "sb", 10);
    rw_itest_fleet_snapshot(f);
    rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");
    for (int r = 0; r < 2; r++) {
        run[r] = redeploy_app(f, app[r]);
        run_uuid(f, run[r], uuid[r], sizeof(uuid[r]));
    }
    rw_itest_fleet_wait_final(f, 2, FINAL_TIMEOUT_MS);
    assert_int_equal(rw_itest_fleet_lock_keys(f), 0);
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM run_chunks", 0, NULL), 10);

    /* every target's lock back, held by its run; the first instance of
     * run 0 held by someone else instead */
    for (int r = 0; r < 2; r++) {
        snprintf(id_s, sizeof(id_s), "%lld", run[r]);
        res = rw_itest_fleet_q(f,
                               "SELECT instance_id FROM run_targets"
                               " WHERE run_id = $1::bigint ORDER BY id",
                               1, p);
        assert_int_equal(PQntuples(res), 10);
        for (int i = 0; i < PQntuples(res); i++) {
            bool other = r == 0 && i == 0;
            const char *set[] = {
                "SET", key,      other ? "someone-else" : uuid[r],
                "PX",  "600000", NULL};
            rw_redis_lock_key(key, sizeof(key), rw_itest_fleet_prefix(f),
                              strtoll(PQgetvalue(res, i, 0), NULL, 10));
            rw_itest_fleet_redis_cmd(f, set);
            planted++;
        }
        PQclear(res);
    }
    assert_int_equal(rw_itest_fleet_lock_keys(f), planted);
    /* finished long enough ago for the sweep to take them */
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE run_chunks SET finished_at = now()"
                             " - interval '15 seconds'",
                             0, NULL));

    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_INTERVAL_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_BATCH", "3");
    rw_itest_fleet_set(f, "ROLLWAVE_TICK_INTERVAL_S", "86400");
    rw_itest_fleet_redis_fault(f, "READONLY You can't write against a read "
                                  "only replica.");
    rw_itest_fleet_start(f, "rollwave-producer", "producer");
    /* sweeps that fail: every lock stays, and so does the cursor */
    deadline = rw_itest_now_ms() + 30000;
    while (rw_itest_fleet_redis_faulted(f) < 3) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline)
            fail_msg("the producer sent Redis %lld commands in 30 s",
                     rw_itest_fleet_redis_faulted(f));
        rw_itest_sleep_ms(200);
    }
    rw_itest_sleep_ms(2500);
    assert_int_equal(rw_itest_fleet_lock_keys(f), planted);
    rw_itest_fleet_redis_fault(f, NULL);
    deadline = rw_itest_now_ms() + 30000;
    while (rw_itest_fleet_lock_keys(f) > 1) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline)
            fail_msg("the sweep left %lld of %d locks (want 1)",
                     rw_itest_fleet_lock_keys(f), planted);
        rw_itest_sleep_ms(200);
    }
    /* a few sweeps more: the foreign lock is never taken */
    rw_itest_sleep_ms(2500);
    assert_int_equal(rw_itest_fleet_lock_keys(f), 1);
    /* ... and it is the one left */
    snprintf(id_s, sizeof(id_s), "%lld", run[0]);
    foreign =
        rw_itest_fleet_ll(f,
                          "SELECT instance_id FROM run_targets"
                          " WHERE run_id = $1::bigint ORDER BY id LIMIT 1",
                          1, p);
    assert_true(rw_itest_fleet_lock_pttl(f, foreign) > 0);
    rw_redis_lock_key(key, sizeof(key), rw_itest_fleet_prefix(f), foreign);
    {
        const char *del[] = {"DEL", key, NULL};
        rw_itest_fleet_redis_cmd(f, del);
    }
    finish(f);
}

/* ---- 3. retry, and requests the run's state refuses ---- */

static void test_retry_retriggers_only_failed(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new("{\"fail_rate\":0.5}", 5);
    long long app, a, nfailed;
    char uuid[64], out[OUT_LEN], err[OUT_LEN], st[64], failed[1024];
    pid_t worker;
    int rc;

    *state = f;
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "rt", 20);
    rw_itest_fleet_snapshot(f);
    worker = rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");

    a = redeploy_app(f, app);
    run_uuid(f, a, uuid, sizeof(uuid));
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);
    run_status(f, a, st, sizeof(st));
    assert_string_equal(st, "partial_failed");
    nfailed = failed_projects(f, a, failed, sizeof(failed));
    assert_true(nfailed > 0 && nfailed < 20);

    /* with the worker stopped the retried run stays running */
    rw_itest_fleet_stop_one(f, worker, false);
    rw_itest_fleet_sim_config(f, "{\"fail_rate\":0}");
    rc = run_verb(f, "retry", uuid, out, err);
    if (rc != 0)
        fail_msg("run retry exited %d: %s", rc, err);
    assert_non_null(strstr(out, "partial_failed -> running"));
    assert_int_equal(number_after(out, ", "), nfailed);
    assert_true(number_after(out, "published ") > 0);
    run_status(f, a, st, sizeof(st));
    assert_string_equal(st, "running");
    expect_refused(f, "retry", uuid, 1, "cannot retry a running run");

    rw_itest_fleet_start(f, "rollwave-worker", "worker");
    wait_status(f, a, "completed", FINAL_TIMEOUT_MS);
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);
    assert_int_equal(run_ll(f, a,
                            "SELECT succeeded_count FROM deployment_runs"
                            " WHERE id = $1::bigint"),
                     20);
    check_retriggered(f, a, failed);
    assert_int_equal(run_ll(f, a,
                            "SELECT count(*) FROM run_transitions WHERE"
                            " run_id = $1::bigint AND from_status ="
                            " 'partial_failed' AND to_status = 'running'"
                            " AND reason LIKE 'retry by itest-operator%'"),
                     1);

    expect_refused(f, "resume", uuid, 1, "cannot resume a completed run");
    expect_refused(f, "pause", uuid, 1, "cannot pause a completed run");
    expect_refused(f, "pause", "not-a-uuid", 2, "not a run uuid");
    expect_refused(f, "retry", "00000000-0000-4000-8000-000000000000", 1,
                   "no run");
    run_status(f, a, st, sizeof(st));
    assert_string_equal(st, "completed");
    rw_itest_fleet_expect_extra_triggers(f, nfailed);
    finish(f);
}

/* ---- Kafka offsets of the worker group ---- */

static void kafka_settings(rw_itest_fleet_t *f, rw_settings_t *s)
{
    memset(s, 0, sizeof(*s));
    s->kafka_brokers = (char *)rw_itest_fleet_brokers(f);
    s->kafka_topic_prefix = (char *)rw_itest_fleet_prefix(f);
    s->kafka_security_protocol = "plaintext";
    s->kafka_properties = "";
    s->kafka_session_timeout_ms = 6000;
    s->kafka_group = "unused";
}

/*
 * The worker group's committed offsets on the batches topic ("p:off,..."),
 * and whether each equals the high watermark (lagging = false).
 */
static void worker_offsets(rw_itest_fleet_t *f, char *buf, size_t len,
                           bool *caught_up)
{
    rw_settings_t s;
    rw_kafka_consumer_t *kc = NULL;
    char errstr[512], topic[200], group[160];
    int64_t committed[64];
    int parts = 0;
    size_t off = 0;

    kafka_settings(f, &s);
    rw_kafka_topic(topic, sizeof(topic), &s, "batches");
    snprintf(group, sizeof(group), "%sworker", rw_itest_fleet_prefix(f));
    if (rw_kafka_consumer_new(&kc, &s, group, NULL, 0, errstr, sizeof(errstr)))
        fail_msg("consumer: %s", errstr);
    if (rw_kafka_partition_count(kc, topic, &parts, 10000, errstr,
                                 sizeof(errstr)))
        fail_msg("partitions of %s: %s", topic, errstr);
    assert_true(parts > 0 && parts <= 64);
    if (rw_kafka_committed(kc, topic, committed, parts, 10000, errstr,
                           sizeof(errstr)))
        fail_msg("committed offsets: %s", errstr);
    buf[0] = '\0';
    *caught_up = true;
    for (int p = 0; p < parts; p++) {
        int64_t lo = 0, hi = 0;
        if (rw_kafka_watermarks(kc, topic, p, &lo, &hi, 10000, errstr,
                                sizeof(errstr)))
            fail_msg("watermarks: %s", errstr);
        if (hi > 0 && committed[p] != hi)
            *caught_up = false;
        if (off < len)
            off += (size_t)snprintf(buf + off, len - off, "%d:%lld,", p,
                                    (long long)committed[p]);
    }
    rw_kafka_consumer_destroy(kc);
}

static void wait_worker_caught_up(rw_itest_fleet_t *f, long long timeout_ms)
{
    long long deadline = rw_itest_now_ms() + timeout_ms;
    char offs[1024];
    bool done = false;

    for (;;) {
        worker_offsets(f, offs, sizeof(offs), &done);
        if (done)
            return;
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("worker group has not consumed every batch: %s", offs);
        }
        rw_itest_fleet_poll_kids(f);
        rw_itest_sleep_ms(200);
    }
}

/* ---- 4. replay ---- */

static void test_replay_retriggers_only_failed(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new("{\"fail_rate\":0.5}", 5);
    long long app, a, nfailed;
    char group[160], topic[200], out[OUT_LEN], err[OUT_LEN], st[64];
    char failed[1024], before[1024], after[1024];
    pid_t worker;
    bool done;
    int rc;

    *state = f;
    /* a broker of its own: a replay that upsets the broker takes down
     * this scenario only */
    rw_itest_fleet_private_broker(f, 1);
    snprintf(group, sizeof(group), "%sworker", rw_itest_fleet_prefix(f));
    snprintf(topic, sizeof(topic), "%sbatches", rw_itest_fleet_prefix(f));
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "rp", 20);
    rw_itest_fleet_snapshot(f);
    worker = rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");

    a = redeploy_app(f, app);
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);
    run_status(f, a, st, sizeof(st));
    assert_string_equal(st, "partial_failed");
    nfailed = failed_projects(f, a, failed, sizeof(failed));
    assert_true(nfailed > 0 && nfailed < 20);
    wait_worker_caught_up(f, 30000);

    /* refused while a worker is a live member of the group */
    {
        const char *args[] = {"replay", "--group",       group,       "--topic",
                              topic,    "--to-earliest", "--execute", NULL};
        rc = ctl(f, args, out, err);
        if (rc != 1 || !strstr(err, "live members"))
            fail_msg("replay --execute with a live worker: exit %d, "
                     "stderr '%s'; want exit 1, refused",
                     rc, err);
    }
    worker_offsets(f, before, sizeof(before), &done);
    assert_true(done);

    rw_itest_fleet_stop_one(f, worker, false);
    {
        const char *args[] = {"replay", "--group",       group, "--topic",
                              topic,    "--to-earliest", NULL};
        rc = ctl(f, args, out, err);
        if (rc != 0 || !strstr(out, "dry run"))
            fail_msg("replay dry run: exit %d: %s%s", rc, out, err);
    }
    worker_offsets(f, after, sizeof(after), &done);
    if (strcmp(before, after) != 0)
        fail_msg("a dry run moved the committed offsets: %s -> %s", before,
                 after);
    {
        const char *args[] = {"replay", "--group",       group,       "--topic",
                              topic,    "--to-earliest", "--execute", NULL};
        rc = ctl(f, args, out, err);
        if (rc != 0 || !strstr(out, "committed"))
            fail_msg("replay --execute: exit %d: %s%s", rc, out, err);
    }
    worker_offsets(f, after, sizeof(after), &done);
    if (done || strcmp(before, after) == 0)
        fail_msg("replay --execute left the offsets at %s (were %s)", after,
                 before);

    rw_itest_fleet_sim_config(f, "{\"fail_rate\":0}");
    rw_itest_fleet_start(f, "rollwave-worker", "worker");
    wait_status(f, a, "completed", FINAL_TIMEOUT_MS);
    wait_worker_caught_up(f, 30000);
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);
    assert_int_equal(run_ll(f, a,
                            "SELECT succeeded_count FROM deployment_runs"
                            " WHERE id = $1::bigint"),
                     20);
    check_retriggered(f, a, failed);
    rw_itest_fleet_expect_extra_triggers(f, nfailed);
    finish(f);
}

/* ---- 5. lag ---- */

/* Total lag of the worker group on the batches topic per rollwavectl. */
static long long worker_lag(rw_itest_fleet_t *f)
{
    char group[160], topic[200], out[OUT_LEN], err[OUT_LEN];
    const char *args[] = {"lag",        "--group", group,    "--topic", topic,
                          "--interval", "0",       "--json", NULL};
    json_error_t jerr;
    json_t *root, *g;
    long long lag;
    int rc;

    snprintf(group, sizeof(group), "%sworker", rw_itest_fleet_prefix(f));
    snprintf(topic, sizeof(topic), "%sbatches", rw_itest_fleet_prefix(f));
    rc = ctl(f, args, out, err);
    if (rc != 0)
        fail_msg("rollwavectl lag exited %d: %s", rc, err);
    root = json_loads(out, 0, &jerr);
    if (!root)
        fail_msg("lag --json is not JSON (%s): %s", jerr.text, out);
    g = json_array_get(json_object_get(root, "groups"), 0);
    if (!json_is_object(g) ||
        json_array_size(json_object_get(root, "groups")) != 1 ||
        !json_is_string(json_object_get(g, "group")) ||
        strcmp(json_string_value(json_object_get(g, "group")), group) != 0 ||
        !json_is_integer(json_object_get(g, "lag")))
        fail_msg("lag --json: want one group %s with a lag: %s", group, out);
    lag = json_integer_value(json_object_get(g, "lag"));
    json_decref(root);
    return lag;
}

static void test_lag_shows_unconsumed_batches(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 2);
    long long app, a, chunks, lag = -1, deadline;

    *state = f;
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "lg", 6);
    rw_itest_fleet_snapshot(f);

    a = redeploy_app(f, app);
    chunks = run_ll(f, a,
                    "SELECT chunk_count FROM deployment_runs"
                    " WHERE id = $1::bigint");
    assert_int_equal(chunks, 3);
    assert_int_equal(worker_lag(f), chunks);

    rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);
    deadline = rw_itest_now_ms() + 30000;
    while (rw_itest_now_ms() < deadline) {
        lag = worker_lag(f);
        if (lag == 0)
            break;
        rw_itest_sleep_ms(300);
    }
    if (lag != 0)
        fail_msg("worker group lag is %lld after the run ended", lag);
    finish(f);
}

/* ---- 6. metrics and health ---- */

static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    assert_true(fd >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

typedef struct body {
    char *data;
    size_t len;
} body_t;

static size_t collect(char *ptr, size_t size, size_t nmemb, void *ud)
{
    body_t *b = ud;
    size_t n = size * nmemb;
    char *p = realloc(b->data, b->len + n + 1);

    if (!p)
        return 0;
    memcpy(p + b->len, ptr, n);
    b->data = p;
    b->len += n;
    p[b->len] = '\0';
    return n;
}

/* GET http://127.0.0.1:port/path: HTTP status (0 = no answer); body. */
static long http_get(int port, const char *path, char **body)
{
    CURL *c = curl_easy_init();
    body_t b = {NULL, 0};
    char url[128];
    long status = 0;

    assert_non_null(c);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (!b.data)
        b.data = calloc(1, 1);
    *body = b.data;
    return status;
}

/* Wait until /healthz answers want; its last body into buf. */
static void wait_health(rw_itest_fleet_t *f, int port, long want,
                        const char *what, char *buf, size_t len)
{
    long long deadline = rw_itest_now_ms() + 20000;
    long got;

    for (;;) {
        char *body = NULL;
        got = http_get(port, "/healthz", &body);
        snprintf(buf, len, "%s", body);
        free(body);
        if (got == want)
            return;
        if (rw_itest_now_ms() > deadline)
            fail_msg("%s /healthz on port %d answers %ld (%s), want %ld", what,
                     port, got, buf, want);
        rw_itest_fleet_poll_kids(f);
        rw_itest_sleep_ms(100);
    }
}

/* Validate every line of a /metrics body; fail naming the first bad one. */
static void validate_metrics(const char *what, char *body)
{
    char *save = NULL, *line;
    size_t len = strlen(body);
    int n = 0;

    if (len == 0 || body[len - 1] != '\n')
        fail_msg("%s /metrics does not end with a newline", what);
    body[len - 1] = '\0';
    for (line = body; line; line = save) {
        save = strchr(line, '\n');
        if (save)
            *save++ = '\0';
        if (!rw_prom_valid_line(line))
            fail_msg("%s /metrics line %d is malformed: '%s'", what, n + 1,
                     line);
        n++;
        if (save)
            save[-1] = '\n';
    }
    body[len - 1] = '\n';
    assert_true(n > 5);
}

/* Sum of every sample of metric name (any labels) in a /metrics body. */
static double metric_sum(const char *body, const char *name)
{
    size_t nlen = strlen(name);
    double sum = 0;
    const char *line = body;

    while (line && *line) {
        if (strncmp(line, name, nlen) == 0 &&
            (line[nlen] == ' ' || line[nlen] == '{')) {
            const char *v = line + nlen;
            if (*v == '{') /* label values may hold spaces, not '}' */
                v = strchr(v, '}') + 1;
            sum += strtod(v, NULL);
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return sum;
}

static void expect_moved(const char *what, const char *body, const char *name,
                         double at_least)
{
    double v = metric_sum(body, name);

    if (v < at_least) {
        /* the samples of that family, for the report */
        for (const char *l = strstr(body, name); l; l = strstr(l + 1, name))
            if (l == body || l[-1] == '\n')
                print_message("%.*s\n", (int)strcspn(l, "\n"), l);
        fail_msg("%s: %s is %g, want at least %g", what, name, v, at_least);
    }
}

static void test_metrics_and_health(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 5);
    int wport = free_port(), pport = free_port();
    long long app;
    char port_s[2][16], buf[2048];
    char *body = NULL;

    *state = f;
    while (pport == wport)
        pport = free_port();
    snprintf(port_s[0], sizeof(port_s[0]), "%d", wport);
    snprintf(port_s[1], sizeof(port_s[1]), "%d", pport);
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "mt", 10);
    rw_itest_fleet_snapshot(f);
    rw_itest_fleet_start_with(f, "rollwave-worker", "worker",
                              "ROLLWAVE_METRICS_PORT", port_s[0], false);
    rw_itest_fleet_start_with(f, "rollwave-poller", "poller",
                              "ROLLWAVE_METRICS_PORT", port_s[1], false);
    wait_health(f, wport, 200, "worker", buf, sizeof(buf));
    wait_health(f, pport, 200, "poller", buf, sizeof(buf));

    redeploy_app(f, app);
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT succeeded_count FROM"
                                       " deployment_runs",
                                       0, NULL),
                     10);

    assert_int_equal(http_get(wport, "/metrics", &body), 200);
    validate_metrics("worker", body);
    expect_moved("worker", body, "rollwave_messages_consumed_total", 2);
    expect_moved("worker", body, "rollwave_lagoon_calls_total", 2);
    expect_moved("worker", body, "rollwave_locks_acquired_total", 10);
    free(body);
    body = NULL;
    assert_int_equal(http_get(pport, "/metrics", &body), 200);
    validate_metrics("poller", body);
    expect_moved("poller", body, "rollwave_messages_consumed_total", 2);
    expect_moved("poller", body, "rollwave_lagoon_calls_total", 2);
    expect_moved("poller", body, "rollwave_targets_finished_total", 10);
    free(body);
    body = NULL;

    /* the stack's Redis goes away and comes back */
    rw_itest_fleet_stop_redis(f);
    wait_health(f, wport, 503, "worker", buf, sizeof(buf));
    if (!strstr(buf, "redis"))
        fail_msg("worker /healthz 503 does not name redis: %s", buf);
    wait_health(f, pport, 503, "poller", buf, sizeof(buf));
    if (!strstr(buf, "redis"))
        fail_msg("poller /healthz 503 does not name redis: %s", buf);
    rw_itest_fleet_start_redis(f);
    wait_health(f, wport, 200, "worker", buf, sizeof(buf));
    wait_health(f, pport, 200, "poller", buf, sizeof(buf));
    finish(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_pause_holds_run_resume_finishes,
                                  teardown),
        cmocka_unit_test_teardown(test_abort_cancels_pending_targets, teardown),
        cmocka_unit_test_teardown(test_sweep_releases_locks_left, teardown),
        cmocka_unit_test_teardown(test_retry_retriggers_only_failed, teardown),
        cmocka_unit_test_teardown(test_replay_retriggers_only_failed, teardown),
        cmocka_unit_test_teardown(test_lag_shows_unconsumed_batches, teardown),
        cmocka_unit_test_teardown(test_metrics_and_health, teardown),
    };

    /* a developer chasing one scenario may name it (cmocka pattern) */
    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
