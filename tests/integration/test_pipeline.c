/*
 * test_pipeline: the rollout pipeline end to end: rollwave-producer --once,
 * rollwave-worker and rollwave-poller as child processes, against the real
 * Postgres, Redis and Kafka of the stack and a lagoon-sim of each
 * scenario's own. Every scenario runs in a fleet of its own (fresh
 * database, unique topic prefix and consumer groups, private Redis lock
 * keys, own simulator) and ends with the shared invariant check.
 *
 * It does not test the modules' edge cases (their own integration tests
 * do) nor operator commands other than redeploy.
 */
#include "rw_itest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rw_err.h"
#include "rw_itest_fleet.h"
#include "rw_kafka.h"
#include "rw_schedule.h"
#include "rw_settings.h"

#define FINAL_TIMEOUT_MS 60000

/* ---- seeding ---- */

/* Store app; interval and beta_interval in days, NULL = none. */
static long long add_app(rw_itest_fleet_t *f, bool enabled,
                         const char *interval, const char *beta_interval,
                         const char *chunk_size)
{
    const char *p[4] = {enabled ? "true" : "false", interval, beta_interval,
                        chunk_size};

    return rw_itest_fleet_ll(
        f,
        "INSERT INTO store_apps (name, redeploy_enabled,"
        "   redeploy_interval_days, beta_redeploy_interval_days,"
        "   bulk_chunk_size)"
        " VALUES ('app', $1::boolean, $2::int, $3::int, $4::int)"
        " RETURNING id",
        4, p);
}

static long long add_group(rw_itest_fleet_t *f, bool beta)
{
    const char *p[1] = {beta ? "true" : "false"};

    return rw_itest_fleet_ll(f,
                             "INSERT INTO user_groups (name, is_beta)"
                             " VALUES ('group', $1::boolean) RETURNING id",
                             1, p);
}

/*
 * One instance. group 0 = none; project NULL = "<name>"; next_s and
 * last_deployed_s are offsets from now in seconds (NULL = SQL NULL).
 */
static long long add_instance(rw_itest_fleet_t *f, long long app,
                              long long group, const char *name,
                              const char *status, bool trial,
                              const char *project, const char *next_s,
                              const char *last_deployed_s)
{
    char app_s[24], group_s[24];
    const char *p[8] = {name,
                        app_s,
                        group_s,
                        status,
                        trial ? "true" : "false",
                        project ? project : name,
                        next_s,
                        last_deployed_s};

    snprintf(app_s, sizeof(app_s), "%lld", app);
    snprintf(group_s, sizeof(group_s), "%lld", group);
    return rw_itest_fleet_ll(
        f,
        "INSERT INTO app_instances (name, store_app_id, user_group_id,"
        "   status, is_trial, lagoon_project, lagoon_environment,"
        "   next_redeploy_at, last_deployed_at)"
        " VALUES ($1, $2::bigint, NULLIF($3::bigint, 0), $4, $5::boolean,"
        "   $6, 'main', now() + make_interval(secs => $7::float8),"
        "   now() + make_interval(secs => $8::float8))"
        " RETURNING id",
        8, p);
}

/* n eligible instances "<prefix><k>", due now; returns the first id. */
static long long add_instances(rw_itest_fleet_t *f, long long app,
                               long long group, const char *prefix, int n)
{
    char app_s[24], group_s[24], n_s[16];
    const char *p[4] = {app_s, group_s, prefix, n_s};

    snprintf(app_s, sizeof(app_s), "%lld", app);
    snprintf(group_s, sizeof(group_s), "%lld", group);
    snprintf(n_s, sizeof(n_s), "%d", n);
    return rw_itest_fleet_ll(
        f,
        "WITH ins AS ("
        " INSERT INTO app_instances (name, store_app_id, user_group_id,"
        "   status, lagoon_project, lagoon_environment)"
        " SELECT $3 || g, $1::bigint, NULLIF($2::bigint, 0),"
        "   CASE WHEN g % 2 = 0 THEN 'running-healthy-claimed'"
        "        ELSE 'running-healthy-unclaimed' END, $3 || g, 'main'"
        " FROM generate_series(1, $4::int) g RETURNING id)"
        " SELECT min(id) FROM ins",
        4, p);
}

static void start_daemons(rw_itest_fleet_t *f, int workers, int pollers)
{
    for (int i = 0; i < workers; i++)
        rw_itest_fleet_start(f, "rollwave-worker", "worker");
    for (int i = 0; i < pollers; i++)
        rw_itest_fleet_start(f, "rollwave-poller", "poller");
}

/* A single text value (NULL allowed) of a query, copied into buf. */
static const char *text_of(rw_itest_fleet_t *f, char *buf, size_t len,
                           const char *sql, int n, const char *const *p)
{
    PGresult *res = rw_itest_fleet_q(f, sql, n, p);

    if (PQntuples(res) < 1 || PQgetisnull(res, 0, 0))
        snprintf(buf, len, "(null)");
    else
        snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return buf;
}

/* rollwavectl redeploy --instances ids; asserts exit 0, stdout in out. */
static void redeploy(rw_itest_fleet_t *f, const char *flag, const char *arg,
                     char *out, size_t outlen)
{
    const char *argv[] = {"rollwavectl", "redeploy", flag, arg,
                          "--by",        "itest",    NULL};
    int rc = rw_itest_fleet_run(f, argv, out, outlen);

    if (rc != 0)
        fail_msg("rollwavectl redeploy %s %s exited %d: %s", flag, arg, rc,
                 out ? out : "");
}

static void finish(rw_itest_fleet_t *f)
{
    rw_itest_fleet_check(f);
    rw_itest_fleet_stop_all(f);
}

static int teardown(void **state)
{
    rw_itest_fleet_destroy(*state);
    *state = NULL;
    return 0;
}

/* ---- 1. selection ---- */

/*
 * Only eligible, enabled, due, non-trial instances not in flight are
 * picked; each exclusion has an instance of its own.
 */
static void test_only_eligible_instances_are_picked(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 0);
    long long app, off, e1, e2, e3, fut, inel, trial, dis, fly, fake_run;
    char ids[256], want[256], buf[64];
    const char *p[3];

    *state = f;
    app = add_app(f, true, "7", NULL, NULL);
    off = add_app(f, false, "7", NULL, NULL);
    e1 = add_instance(f, app, 0, "e1", "running-healthy-unclaimed", false, NULL,
                      NULL, NULL);
    e2 = add_instance(f, app, 0, "e2", "running-healthy-claimed", false, NULL,
                      NULL, "-86400");
    e3 = add_instance(f, app, 0, "e3", "running-healthy-unclaimed", false, NULL,
                      "-3600", NULL);
    fut = add_instance(f, app, 0, "future", "running-healthy-unclaimed", false,
                       NULL, "86400", NULL);
    inel = add_instance(f, app, 0, "ineligible", "provisioning", false, NULL,
                        NULL, NULL);
    trial = add_instance(f, app, 0, "trial", "running-healthy-unclaimed", true,
                         NULL, NULL, NULL);
    dis = add_instance(f, off, 0, "disabled", "running-healthy-unclaimed",
                       false, NULL, NULL, NULL);
    fly = add_instance(f, app, 0, "inflight", "running-healthy-unclaimed",
                       false, NULL, NULL, NULL);

    /* another run holds "inflight" claimed */
    snprintf(buf, sizeof(buf), "%lld", app);
    p[0] = buf;
    fake_run = rw_itest_fleet_ll(
        f,
        "WITH r AS (INSERT INTO deployment_runs (store_app_id,"
        "   trigger_source, status, total_count, chunk_count, started_at)"
        " VALUES ($1::bigint, 'manual', 'running', 1, 1, now())"
        " RETURNING id),"
        " tr AS (INSERT INTO run_transitions (run_id, from_status, to_status)"
        " SELECT id, NULL, 'pending' FROM r UNION ALL"
        " SELECT id, 'pending', 'running' FROM r)"
        " SELECT id FROM r",
        1, p);
    {
        char run_s[24], fly_s[24];
        const char *q[2] = {run_s, fly_s};
        snprintf(run_s, sizeof(run_s), "%lld", fake_run);
        snprintf(fly_s, sizeof(fly_s), "%lld", fly);
        PQclear(rw_itest_fleet_q(
            f,
            "WITH c AS (INSERT INTO run_chunks (run_id, chunk, state,"
            "   attempt, bulk_name, target_count)"
            " VALUES ($1::bigint, 0, 'triggering', 1, 'held', 1))"
            " INSERT INTO run_targets (run_id, instance_id, chunk, state,"
            "   attempt, lagoon_project, lagoon_environment, claimed_at)"
            " VALUES ($1::bigint, $2::bigint, 0, 'claimed', 1, 'inflight',"
            "   'main', now())",
            2, q));
    }
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);

    rw_itest_fleet_tick(f);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE trigger_source = 'scheduled'",
                                       0, NULL),
                     1);
    text_of(f, ids, sizeof(ids),
            "SELECT string_agg(t.instance_id::text, ',' ORDER BY"
            "   t.instance_id)"
            " FROM run_targets t JOIN deployment_runs r ON r.id = t.run_id"
            " WHERE r.trigger_source = 'scheduled'",
            0, NULL);
    snprintf(want, sizeof(want), "%lld,%lld,%lld", e1, e2, e3);
    if (strcmp(ids, want) != 0)
        fail_msg("scheduled targets %s, want %s (excluded: future %lld, "
                 "ineligible %lld, trial %lld, disabled app %lld, in flight "
                 "%lld)",
                 ids, want, fut, inel, trial, dis, fly);

    /* the test's own run ends so the fleet can settle */
    {
        char run_s[24];
        const char *q[1] = {run_s};
        snprintf(run_s, sizeof(run_s), "%lld", fake_run);
        PQclear(rw_itest_fleet_q(
            f,
            "WITH t AS (UPDATE run_targets SET state = 'failed',"
            "   error = 'closed by test', finished_at = now()"
            "   WHERE run_id = $1::bigint RETURNING 1),"
            " c AS (UPDATE run_chunks SET state = 'failed', finished_at = now()"
            "   WHERE run_id = $1::bigint RETURNING 1),"
            " r AS (UPDATE deployment_runs SET status = 'failed',"
            "   failed_count = 1, completed_at = now()"
            "   WHERE id = $1::bigint RETURNING 1)"
            " INSERT INTO run_transitions (run_id, from_status, to_status)"
            " VALUES ($1::bigint, 'running', 'failed')",
            1, q));
    }
    rw_itest_fleet_wait_final(f, 2, FINAL_TIMEOUT_MS);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT succeeded_count FROM"
                                       " deployment_runs WHERE trigger_source"
                                       " = 'scheduled'",
                                       0, NULL),
                     3);
    /* excluded instances were never touched */
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM app_instances"
                                       " WHERE last_deploy_triggered_at IS"
                                       " NOT NULL",
                                       0, NULL),
                     3);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM app_instances"
                                       " WHERE name = 'future' AND"
                                       " next_redeploy_at > now() + interval"
                                       " '23 hours'",
                                       0, NULL),
                     1);
    /* next tick: the cadence moved the three on, and the instance that
     * was in flight is free now, so it alone is due */
    rw_itest_fleet_tick(f);
    text_of(f, ids, sizeof(ids),
            "SELECT string_agg(t.instance_id::text, ',')"
            " FROM run_targets t WHERE t.run_id ="
            "   (SELECT max(id) FROM deployment_runs)",
            0, NULL);
    snprintf(want, sizeof(want), "%lld", fly);
    if (strcmp(ids, want) != 0)
        fail_msg("second tick's targets %s, want only %s", ids, want);
    rw_itest_fleet_wait_final(f, 3, FINAL_TIMEOUT_MS);
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM deployment_runs", 0, NULL),
        3);
    finish(f);
}

/* ---- 2. max_per_run and order ---- */

static void test_max_per_run_most_outdated_first(void **state)
{
    rw_itest_fleet_t *f;
    long long app, r1, o2, n2, o1, r2, n1;
    char got[256], want[256];
    static const char targets_sql[] =
        "SELECT string_agg(t.instance_id::text || '@' || t.chunk,"
        "   ',' ORDER BY t.id)"
        " FROM run_targets t WHERE t.run_id ="
        "   (SELECT max(id) FROM deployment_runs)";

    f = rw_itest_fleet_new(NULL, 2);
    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_MAX_PER_RUN", "4");
    app = add_app(f, true, "7", NULL, NULL);
    /* inserted out of order so that id order cannot pass for the rule */
    r1 = add_instance(f, app, 0, "r1", "running-healthy-unclaimed", false, NULL,
                      NULL, "-86400");
    o2 = add_instance(f, app, 0, "o2", "running-healthy-unclaimed", false, NULL,
                      NULL, "-1728000");
    n2 = add_instance(f, app, 0, "n2", "running-healthy-claimed", false, NULL,
                      NULL, NULL);
    o1 = add_instance(f, app, 0, "o1", "running-healthy-unclaimed", false, NULL,
                      NULL, "-2592000");
    r2 = add_instance(f, app, 0, "r2", "running-healthy-unclaimed", false, NULL,
                      NULL, "-7200");
    n1 = add_instance(f, app, 0, "n1", "running-healthy-unclaimed", false, NULL,
                      "-60", NULL);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);

    rw_itest_fleet_tick(f);
    text_of(f, got, sizeof(got), targets_sql, 0, NULL);
    /* never deployed (by id), then the oldest deploys; chunks in order */
    snprintf(want, sizeof(want), "%lld@0,%lld@0,%lld@1,%lld@1", n2, n1, o1, o2);
    if (strcmp(got, want) != 0)
        fail_msg("first run targets (instance@chunk) %s, want %s", got, want);
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);

    /* the recent ones are next, oldest first */
    rw_itest_fleet_tick(f);
    text_of(f, got, sizeof(got), targets_sql, 0, NULL);
    snprintf(want, sizeof(want), "%lld@0,%lld@0", r1, r2);
    if (strcmp(got, want) != 0)
        fail_msg("second run targets %s, want %s", got, want);
    rw_itest_fleet_wait_final(f, 2, FINAL_TIMEOUT_MS);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'completed'",
                                       0, NULL),
                     2);
    finish(f);
}

/* ---- 3. one run per store app, chunk cap ---- */

static void test_one_run_per_app_and_chunk_cap(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 7);
    long long a, b, c;
    char got[512];
    json_t *stats, *per_call;

    *state = f;
    a = add_app(f, true, "7", NULL, NULL);
    b = add_app(f, true, "7", NULL, NULL);
    c = add_app(f, true, "7", NULL, "3"); /* its own, smaller chunk size */
    add_instances(f, a, 0, "a", 30);
    add_instances(f, b, 0, "b", 5);
    add_instances(f, c, 0, "c", 4);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);

    rw_itest_fleet_tick(f);
    text_of(f, got, sizeof(got),
            "SELECT string_agg(x, ' ' ORDER BY x) FROM ("
            " SELECT r.store_app_id || ':' || r.total_count || ':' ||"
            "   string_agg(c.target_count::text, '+' ORDER BY c.chunk) AS x"
            " FROM deployment_runs r JOIN run_chunks c ON c.run_id = r.id"
            " GROUP BY r.id) s",
            0, NULL);
    {
        char want[256];
        /* sorted as text, like the query */
        const char *parts[3];
        char pa[64], pb[64], pc[64];
        snprintf(pa, sizeof(pa), "%lld:30:7+7+7+7+2", a);
        snprintf(pb, sizeof(pb), "%lld:5:5", b);
        snprintf(pc, sizeof(pc), "%lld:4:3+1", c);
        parts[0] = pa;
        parts[1] = pb;
        parts[2] = pc;
        for (int i = 0; i < 3; i++)
            for (int j = i + 1; j < 3; j++)
                if (strcmp(parts[j], parts[i]) < 0) {
                    const char *t = parts[i];
                    parts[i] = parts[j];
                    parts[j] = t;
                }
        snprintf(want, sizeof(want), "%s %s %s", parts[0], parts[1], parts[2]);
        if (strcmp(got, want) != 0)
            fail_msg("runs (app:targets:chunk sizes) %s, want %s", got, want);
    }
    rw_itest_fleet_wait_final(f, 3, FINAL_TIMEOUT_MS);

    stats = rw_itest_fleet_sim(f, "/sim/stats?triggers=false", NULL);
    assert_int_equal(json_integer_value(json_object_get(stats, "bulk_calls")),
                     8);
    assert_int_equal(
        json_integer_value(json_object_get(stats, "max_envs_per_call")), 7);
    assert_int_equal(
        json_integer_value(json_object_get(stats, "duplicate_triggers")), 0);
    per_call = json_object_get(stats, "envs_per_call");
    assert_int_equal(json_integer_value(json_object_get(per_call, "7")), 4);
    assert_int_equal(json_integer_value(json_object_get(per_call, "5")), 1);
    assert_int_equal(json_integer_value(json_object_get(per_call, "3")), 1);
    assert_int_equal(json_integer_value(json_object_get(per_call, "2")), 1);
    assert_int_equal(json_integer_value(json_object_get(per_call, "1")), 1);
    json_decref(stats);
    finish(f);
}

/* ---- 4. cadence and jitter ---- */

/*
 * For every instance of app: next_redeploy_at - last_deploy_triggered_at
 * is interval + the instance's own jitter (within clock rounding), and
 * within [interval, interval + window]. Returns the number checked.
 */
static int check_cadence(rw_itest_fleet_t *f, long long app, long long window,
                         long long normal_days, long long beta_days)
{
    char app_s[24];
    const char *p[1] = {app_s};
    PGresult *res;
    int n;

    snprintf(app_s, sizeof(app_s), "%lld", app);
    res = rw_itest_fleet_q(
        f,
        "SELECT i.id, COALESCE(g.is_beta, false) AS is_beta,"
        "  extract(epoch FROM i.next_redeploy_at"
        "                     - i.last_deploy_triggered_at)::float8 AS gap"
        " FROM app_instances i LEFT JOIN user_groups g"
        "   ON g.id = i.user_group_id"
        " WHERE i.store_app_id = $1::bigint ORDER BY i.id",
        1, p);
    n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        long long id = rw_pg_ll(res, i, "id", 0);
        bool beta = rw_pg_bool(res, i, "is_beta", 0);
        const char *gap_s = rw_pg_str(res, i, "gap");
        double gap, base, want;

        if (!gap_s)
            fail_msg("instance %lld has no next_redeploy_at or trigger time",
                     id);
        gap = atof(gap_s);
        base = (double)(beta ? beta_days : normal_days) * 86400.0;
        want = base + (double)rw_schedule_jitter_s(id, window);
        if (gap < base - 2 || gap > base + (double)window + 2)
            fail_msg("instance %lld (%s): gap %.0f s outside [%.0f, %.0f]", id,
                     beta ? "beta" : "regular", gap, base,
                     base + (double)window);
        if (gap < want - 2 || gap > want + 2)
            fail_msg("instance %lld: gap %.1f s, interval + its jitter is "
                     "%.0f s",
                     id, gap, want);
    }
    PQclear(res);
    return n;
}

static void test_beta_interval_and_stable_jitter(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 0);
    const long long window = 3600;
    long long a, b, reg, beta;
    char app_s[24], out[2048];
    const char *p[1] = {app_s};

    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_JITTER_WINDOW_MIN", "60");
    a = add_app(f, true, "7", "2", NULL);
    b = add_app(f, true, "5", NULL, NULL); /* beta follows the normal one */
    reg = add_group(f, false);
    beta = add_group(f, true);
    add_instances(f, a, reg, "reg", 8);
    add_instances(f, a, beta, "beta", 8);
    add_instances(f, a, 0, "nogroup", 2);
    add_instances(f, b, beta, "bbeta", 3);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);

    rw_itest_fleet_tick(f);
    rw_itest_fleet_wait_final(f, 2, FINAL_TIMEOUT_MS);
    assert_int_equal(check_cadence(f, a, window, 7, 2), 18);
    assert_int_equal(check_cadence(f, b, window, 5, 5), 3);

    /* one cohort, one trigger time: spread over the window */
    snprintf(app_s, sizeof(app_s), "%lld", a);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(DISTINCT"
                                       " next_redeploy_at) FROM app_instances"
                                       " WHERE store_app_id = $1::bigint"
                                       " AND name LIKE 'reg%'",
                                       1, p),
                     8);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(DISTINCT"
                                       " next_redeploy_at) FROM app_instances"
                                       " WHERE store_app_id = $1::bigint"
                                       " AND name LIKE 'beta%'",
                                       1, p),
                     8);

    /* a second rollout gives every instance the same jitter again */
    PQclear(rw_itest_fleet_q(f,
                             "CREATE TABLE itest_first AS SELECT id,"
                             " last_deploy_triggered_at AS t FROM"
                             " app_instances",
                             0, NULL));
    redeploy(f, "--store-app", app_s, out, sizeof(out));
    rw_itest_fleet_wait_final(f, 3, FINAL_TIMEOUT_MS);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM app_instances i"
                                       " JOIN itest_first x ON x.id = i.id"
                                       " WHERE i.store_app_id = $1::bigint"
                                       " AND i.last_deploy_triggered_at > x.t",
                                       1, p),
                     18);
    assert_int_equal(check_cadence(f, a, window, 7, 2), 18);
    finish(f);
}

/* ---- 5. trigger failure ---- */

static void test_trigger_failure_fails_run_and_backs_off(void **state)
{
    rw_itest_fleet_t *f =
        rw_itest_fleet_new("{\"fault_http500_mutation\":1.0}", 2);
    long long app, first;
    char ids[64], out[2048];

    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_RETRIES", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_BACKOFF_BASE_MS", "10");
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_BACKOFF_MAX_MS", "20");
    rw_itest_fleet_set(f, "ROLLWAVE_FAILURE_BACKOFF_S", "900");
    /* a 500 may mean Lagoon ran it: the recovery sweep looks each one up
     * by name (not found here) before the chunk is sent again */
    rw_itest_fleet_set(f, "ROLLWAVE_LAGOON_TIMEOUT_MS", "1000");
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_SETTLE_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_INTERVAL_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_TICK_INTERVAL_S", "86400");
    app = add_app(f, true, "7", NULL, NULL);
    first = add_instances(f, app, 0, "f", 4);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);

    rw_itest_fleet_tick(f);
    rw_itest_fleet_start(f, "rollwave-producer", "producer");
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'failed' AND"
                                       " failed_count = 4 AND"
                                       " succeeded_count = 0",
                                       0, NULL),
                     1);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets"
                                       " WHERE state = 'failed' AND bulk_id"
                                       " IS NULL AND error LIKE"
                                       " '%LAGOON_SERVER%'",
                                       0, NULL),
                     4);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_chunks"
                                       " WHERE state = 'failed'",
                                       0, NULL),
                     2);
    /* pushed back by the failure backoff, never recorded as triggered */
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM app_instances"
                                       " WHERE next_redeploy_at BETWEEN"
                                       " now() + interval '840 seconds' AND"
                                       " now() + interval '905 seconds'"
                                       " AND last_deploy_triggered_at IS NULL",
                                       0, NULL),
                     4);
    /* one call per chunk plus one retry each, none executed */
    assert_int_equal(rw_itest_fleet_sim_stat(f, "faults.http500"), 4);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "bulk_calls"), 0);

    /* a permanent error is not retried */
    rw_itest_fleet_sim_config(f, "{\"fault_http500_mutation\":0,"
                                 "\"fault_graphql_error\":1.0}");
    snprintf(ids, sizeof(ids), "%lld,%lld", first, first + 1);
    redeploy(f, "--instances", ids, out, sizeof(out));
    rw_itest_fleet_wait_final(f, 2, FINAL_TIMEOUT_MS);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE trigger_source = 'manual' AND"
                                       " status = 'failed' AND"
                                       " failed_count = 2",
                                       0, NULL),
                     1);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets"
                                       " WHERE state = 'failed' AND bulk_id"
                                       " IS NULL AND error LIKE"
                                       " '%LAGOON_GRAPHQL%'",
                                       0, NULL),
                     2);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "faults.graphql_error"), 1);
    /* backed off: the next tick finds nothing due */
    rw_itest_fleet_tick(f);
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM deployment_runs", 0, NULL),
        2);
    finish(f);
}

/* ---- 6. in flight elsewhere ---- */

static void test_manual_run_skips_instance_in_flight(void **state)
{
    rw_itest_fleet_t *f =
        rw_itest_fleet_new("{\"build_min_ms\":4000,\"build_max_ms\":5000}", 0);
    long long app, busy, idle;
    char ids[64], out[2048], busy_s[24], want[64];
    const char *p[1] = {busy_s};

    *state = f;
    app = add_app(f, true, "7", NULL, NULL);
    busy = add_instance(f, app, 0, "busy", "running-healthy-unclaimed", false,
                        NULL, NULL, NULL);
    idle = add_instance(f, app, 0, "idle", "running-healthy-unclaimed", false,
                        NULL, "86400", NULL);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);

    rw_itest_fleet_tick(f);
    rw_itest_fleet_wait_count(f,
                              "SELECT count(*) FROM run_targets WHERE state"
                              " IN ('triggered', 'deploying')",
                              1, 30000, "scheduled target in flight");
    snprintf(ids, sizeof(ids), "%lld,%lld", busy, idle);
    redeploy(f, "--instances", ids, out, sizeof(out));
    snprintf(want, sizeof(want), "skipped instance %lld: in flight", busy);
    if (!strstr(out, want))
        fail_msg("rollwavectl output lacks \"%s\":\n%s", want, out);

    snprintf(busy_s, sizeof(busy_s), "%lld", busy);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets t"
                                       " JOIN deployment_runs r ON"
                                       " r.id = t.run_id WHERE"
                                       " r.trigger_source = 'manual' AND"
                                       " t.instance_id = $1::bigint AND"
                                       " t.state = 'skipped' AND"
                                       " t.skip_reason LIKE '%in flight%'",
                                       1, p),
                     1);
    rw_itest_fleet_wait_final(f, 2, FINAL_TIMEOUT_MS);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'completed' AND"
                                       " ((trigger_source = 'scheduled' AND"
                                       "   succeeded_count = 1) OR"
                                       "  (trigger_source = 'manual' AND"
                                       "   succeeded_count = 1 AND"
                                       "   skipped_count = 1))",
                                       0, NULL),
                     2);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "duplicate_triggers"), 0);
    finish(f);
}

/* ---- 7. poll sequence ---- */

static void test_poll_sequence_to_success(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(
        "{\"phase_ms\":2000,\"build_min_ms\":2600,\"build_max_ms\":3000}", 0);
    long long app, id, deadline;
    char seen[256] = "", last[32] = "", id_s[24], buf[128], dname[128];
    const char *p[1] = {id_s};
    bool saw_deploying = false;
    int lock_samples = 0;

    *state = f;
    /* far from half the TTL: the polls must leave the lock alone */
    rw_itest_fleet_set(f, "ROLLWAVE_LOCK_TTL_S", "600");
    app = add_app(f, true, "7", NULL, NULL);
    id = add_instance(f, app, 0, "one", "running-healthy-unclaimed", false,
                      NULL, NULL, NULL);
    snprintf(id_s, sizeof(id_s), "%lld", id);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);
    rw_itest_fleet_tick(f);

    /* sample what the poller writes until the run is over */
    deadline = rw_itest_now_ms() + FINAL_TIMEOUT_MS;
    for (;;) {
        PGresult *res = rw_itest_fleet_q(
            f,
            "SELECT t.state, t.lagoon_status, r.status FROM run_targets t"
            " JOIN deployment_runs r ON r.id = t.run_id"
            " WHERE t.instance_id = $1::bigint",
            1, p);
        const char *ls =
            PQntuples(res) ? rw_pg_str(res, 0, "lagoon_status") : NULL;
        const char *run_status =
            PQntuples(res) ? rw_pg_str(res, 0, "status") : "none";
        bool over = strcmp(run_status, "completed") == 0 ||
                    strcmp(run_status, "failed") == 0 ||
                    strcmp(run_status, "partial_failed") == 0 ||
                    strcmp(run_status, "cancelled") == 0;

        if (PQntuples(res) &&
            strcmp(rw_pg_str(res, 0, "state"), "deploying") == 0)
            saw_deploying = true;
        /*
         * Polls come every second; one that renewed the lock would leave
         * it with more than its TTL less the time since the claim. Taken
         * with the claim, it has at most that.
         */
        {
            long long age = rw_itest_fleet_ll(
                f,
                "SELECT COALESCE(max((extract(epoch FROM now() - sent_at)"
                "                     * 1000)::bigint), -1)"
                " FROM run_chunks WHERE state = 'triggered'",
                0, NULL);
            long long pttl = age >= 2500 ? rw_itest_fleet_lock_pttl(f, id) : 0;

            if (age >= 2500 && pttl > 0) {
                if (pttl + age > 600000 + 500)
                    fail_msg("lock renewed by a poll: %lld ms left %lld ms "
                             "after the claim (TTL 600 s)",
                             pttl, age);
                lock_samples++;
            }
        }
        if (ls && strcmp(ls, last) != 0) {
            snprintf(last, sizeof(last), "%s", ls);
            strncat(seen, ls, sizeof(seen) - strlen(seen) - 2);
            strncat(seen, " ", sizeof(seen) - strlen(seen) - 1);
        }
        PQclear(res);
        if (over)
            break;
        if (rw_itest_now_ms() > deadline)
            rw_itest_fleet_wait_final(f, 1, 0); /* fails with the details */
        rw_itest_sleep_ms(100);
    }
    if (!strstr(seen, "new ") || !strstr(seen, "running ") ||
        strstr(seen, "new ") > strstr(seen, "running ") ||
        strcmp(last, "complete") != 0)
        fail_msg("Lagoon statuses recorded: %s; want new ... running ... "
                 "complete",
                 seen);
    assert_true(saw_deploying);
    assert_true(lock_samples > 0);

    text_of(f, dname, sizeof(dname),
            "SELECT deployment_name FROM run_targets WHERE state ="
            " 'succeeded' AND lagoon_status = 'complete' AND finished_at IS"
            " NOT NULL AND instance_id = $1::bigint",
            1, p);
    if (strncmp(dname, "lagoon-build-", 13) != 0)
        fail_msg("succeeded target's deployment name: %s", dname);
    text_of(f, buf, sizeof(buf),
            "SELECT i.last_deployment_name || '|' || i.last_deployment_status"
            "   || '|' || (i.last_deployed_at > now() - interval '1 minute')"
            "   || '|' || (i.deployment_run_id = r.id)"
            " FROM app_instances i, deployment_runs r"
            " WHERE i.id = $1::bigint",
            1, p);
    {
        char want[200];
        snprintf(want, sizeof(want), "%s|complete|true|true", dname);
        assert_string_equal(buf, want);
    }
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'completed' AND"
                                       " succeeded_count = 1 AND"
                                       " completed_at IS NOT NULL",
                                       0, NULL),
                     1);
    finish(f);
}

/* ---- 8. failed builds ---- */

static void test_failed_and_mixed_builds(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new("{\"fail_rate\":1.0}", 10);
    long long a, b, ok, failed;
    PGresult *res;

    *state = f;
    a = add_app(f, true, "7", NULL, NULL);
    b = add_app(f, true, "7", NULL, NULL);
    add_instances(f, a, 0, "a", 6);
    add_instances(f, b, 0, "b", 40);
    {
        char b_s[24];
        const char *p[1] = {b_s};
        snprintf(b_s, sizeof(b_s), "%lld", b);
        PQclear(rw_itest_fleet_q(f,
                                 "UPDATE app_instances SET next_redeploy_at ="
                                 " now() + interval '1 day'"
                                 " WHERE store_app_id = $1::bigint",
                                 1, p));
    }
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);

    rw_itest_fleet_tick(f);
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'failed' AND"
                                       " failed_count = 6 AND total_count = 6",
                                       0, NULL),
                     1);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets"
                                       " WHERE state = 'failed' AND"
                                       " lagoon_status = 'failed'",
                                       0, NULL),
                     6);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM app_instances"
                                       " WHERE last_deployment_status ="
                                       " 'failed' AND last_deployed_at IS NULL",
                                       0, NULL),
                     6);

    /* half and half, decided per environment by the simulator */
    rw_itest_fleet_sim_config(f, "{\"fail_rate\":0.5}");
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE app_instances SET next_redeploy_at = NULL"
                             " WHERE name LIKE 'b%'",
                             0, NULL));
    rw_itest_fleet_tick(f);
    rw_itest_fleet_wait_final(f, 2, FINAL_TIMEOUT_MS);
    res = rw_itest_fleet_q(f,
                           "SELECT status, total_count, succeeded_count,"
                           "  failed_count, skipped_count, chunk_count"
                           " FROM deployment_runs ORDER BY id DESC LIMIT 1",
                           0, NULL);
    ok = rw_pg_ll(res, 0, "succeeded_count", -1);
    failed = rw_pg_ll(res, 0, "failed_count", -1);
    assert_string_equal(rw_pg_str(res, 0, "status"), "partial_failed");
    assert_int_equal(rw_pg_ll(res, 0, "total_count", -1), 40);
    assert_int_equal(rw_pg_ll(res, 0, "chunk_count", -1), 4);
    assert_int_equal(rw_pg_ll(res, 0, "skipped_count", -1), 0);
    assert_true(ok > 0 && failed > 0);
    assert_int_equal(ok + failed, 40);
    PQclear(res);
    finish(f);
}

/* ---- 9. rows that never appear ---- */

static void test_rejected_chunk_times_out(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new("{\"reject\":[\"rej*/*\"]}", 3);
    long long app;

    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_MAX_ATTEMPTS", "3");
    app = add_app(f, true, "7", NULL, NULL);
    add_instances(f, app, 0, "rej", 3); /* lower ids: chunk 0 */
    add_instances(f, app, 0, "ok", 3);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);

    rw_itest_fleet_tick(f);
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'partial_failed' AND"
                                       " succeeded_count = 3 AND"
                                       " failed_count = 3",
                                       0, NULL),
                     1);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets"
                                       " WHERE state = 'timed_out' AND"
                                       " lagoon_project LIKE 'rej%' AND"
                                       " chunk = 0 AND bulk_id IS NOT NULL"
                                       " AND error LIKE '%3 polls%'",
                                       0, NULL),
                     3);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_chunks"
                                       " WHERE chunk = 0 AND state = 'done'"
                                       " AND poll_attempts = 3",
                                       0, NULL),
                     1);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets"
                                       " WHERE state = 'succeeded' AND"
                                       " chunk = 1",
                                       0, NULL),
                     3);
    finish(f);
}

/* ---- 10. redelivered batches ---- */

static void kafka_settings(rw_itest_fleet_t *f, rw_settings_t *s)
{
    memset(s, 0, sizeof(*s));
    s->kafka_brokers = (char *)rw_itest_env("ROLLWAVE_KAFKA_BROKERS");
    s->kafka_topic_prefix = (char *)rw_itest_fleet_prefix(f);
    s->kafka_security_protocol = "plaintext";
    s->kafka_properties = "";
    s->kafka_session_timeout_ms = 6000;
    s->kafka_group = "unused";
}

/* Produce every batch message of the outbox once more, verbatim. */
static int replay_batches(rw_itest_fleet_t *f)
{
    rw_settings_t s;
    rw_kafka_producer_t *kp = NULL;
    char errstr[512], topic[200];
    PGresult *res;
    int n;

    kafka_settings(f, &s);
    rw_kafka_topic(topic, sizeof(topic), &s, "batches");
    if (rw_kafka_producer_new(&kp, &s, NULL, NULL, errstr, sizeof(errstr)))
        fail_msg("producer: %s", errstr);
    res = rw_itest_fleet_q(f,
                           "SELECT msg_key, payload FROM outbox"
                           " WHERE topic = 'batches' ORDER BY id",
                           0, NULL);
    n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        const char *key = rw_pg_str(res, i, "msg_key");
        const char *payload = rw_pg_str(res, i, "payload");
        if (rw_kafka_produce(kp, topic, key, strlen(key), payload,
                             strlen(payload), NULL, 0, NULL, errstr,
                             sizeof(errstr)))
            fail_msg("produce: %s", errstr);
    }
    PQclear(res);
    if (rw_kafka_producer_flush(kp, 30000, errstr, sizeof(errstr)))
        fail_msg("flush: %s", errstr);
    rw_kafka_producer_destroy(kp);
    return n;
}

/* Wait until the worker group has committed every batch message. */
static void wait_batches_consumed(rw_itest_fleet_t *f, long long timeout_ms)
{
    rw_settings_t s;
    rw_kafka_consumer_t *kc = NULL;
    char errstr[512], topic[200], group[160], detail[512] = "";
    long long deadline = rw_itest_now_ms() + timeout_ms;
    int parts = 0;

    kafka_settings(f, &s);
    rw_kafka_topic(topic, sizeof(topic), &s, "batches");
    snprintf(group, sizeof(group), "%sworker", rw_itest_fleet_prefix(f));
    if (rw_kafka_consumer_new(&kc, &s, group, NULL, 0, errstr, sizeof(errstr)))
        fail_msg("consumer: %s", errstr);
    if (rw_kafka_partition_count(kc, topic, &parts, 10000, errstr,
                                 sizeof(errstr)))
        fail_msg("partitions of %s: %s", topic, errstr);
    assert_true(parts > 0 && parts <= 64);
    for (;;) {
        int64_t committed[64];
        bool all = true;
        size_t off = 0;

        if (rw_kafka_committed(kc, topic, committed, parts, 10000, errstr,
                               sizeof(errstr)))
            fail_msg("committed offsets: %s", errstr);
        for (int p = 0; p < parts; p++) {
            int64_t lo = 0, hi = 0;
            if (rw_kafka_watermarks(kc, topic, p, &lo, &hi, 10000, errstr,
                                    sizeof(errstr)))
                fail_msg("watermarks: %s", errstr);
            if (hi > 0 && committed[p] != hi)
                all = false;
            if (off < sizeof(detail))
                off += (size_t)snprintf(detail + off, sizeof(detail) - off,
                                        " p%d:%lld/%lld", p,
                                        (long long)committed[p], (long long)hi);
        }
        if (all)
            break;
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("worker group has not consumed every batch "
                     "(committed/end):%s",
                     detail);
        }
        rw_itest_sleep_ms(200);
    }
    rw_kafka_consumer_destroy(kc);
}

static void test_redelivered_batches_trigger_nothing_twice(void **state)
{
    rw_itest_fleet_t *f =
        rw_itest_fleet_new("{\"build_min_ms\":3000,\"build_max_ms\":3500}", 3);
    long long app;

    *state = f;
    app = add_app(f, true, "7", NULL, NULL);
    add_instances(f, app, 0, "d", 6);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 1, 1);

    rw_itest_fleet_tick(f);
    rw_itest_fleet_wait_count(f,
                              "SELECT count(*) FROM run_chunks"
                              " WHERE state = 'triggered'",
                              2, 30000, "chunks triggered");
    /* while the builds run */
    assert_int_equal(replay_batches(f), 2);
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);
    /* and after the run is over */
    assert_int_equal(replay_batches(f), 2);
    wait_batches_consumed(f, 30000);

    assert_int_equal(rw_itest_fleet_sim_stat(f, "bulk_calls"), 2);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"), 6);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "duplicate_triggers"), 0);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets"
                                       " WHERE state = 'succeeded' AND"
                                       " attempt = 1",
                                       0, NULL),
                     6);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_chunks"
                                       " WHERE state = 'done' AND"
                                       " attempt = 1",
                                       0, NULL),
                     2);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'completed'",
                                       0, NULL),
                     1);
    finish(f);
}

/* ---- 11. a fleet of 2,000 ---- */

static void test_large_rollout_two_workers_two_pollers(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 50);
    long long apps[4], eligible, calls = 0;
    PGresult *res;

    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_MAX_PER_RUN", "5000");
    for (int i = 0; i < 4; i++) {
        char prefix[16];
        apps[i] = add_app(f, true, "7", "2", NULL);
        snprintf(prefix, sizeof(prefix), "big%d-", i);
        add_instances(f, apps[i], 0, prefix, 500);
    }
    /* some that must stay out, and whose status must survive */
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE app_instances SET status ="
                             " 'provisioning' WHERE id % 37 = 0",
                             0, NULL));
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE app_instances SET is_trial = true"
                             " WHERE id % 41 = 0",
                             0, NULL));
    eligible = rw_itest_fleet_ll(f,
                                 "SELECT count(*) FROM app_instances"
                                 " WHERE id % 37 <> 0 AND id % 41 <> 0",
                                 0, NULL);
    rw_itest_fleet_snapshot(f);
    start_daemons(f, 2, 2);

    rw_itest_fleet_tick(f);
    rw_itest_fleet_wait_final(f, 4, 180000);

    res = rw_itest_fleet_q(f,
                           "SELECT count(*) AS runs, sum(total_count) AS total,"
                           "  sum(succeeded_count) AS ok,"
                           "  sum(chunk_count) AS chunks,"
                           "  count(*) FILTER (WHERE status = 'completed')"
                           "    AS completed"
                           " FROM deployment_runs",
                           0, NULL);
    assert_int_equal(rw_pg_ll(res, 0, "runs", -1), 4);
    assert_int_equal(rw_pg_ll(res, 0, "completed", -1), 4);
    assert_int_equal(rw_pg_ll(res, 0, "total", -1), eligible);
    assert_int_equal(rw_pg_ll(res, 0, "ok", -1), eligible);
    calls = rw_pg_ll(res, 0, "chunks", -1);
    PQclear(res);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "bulk_calls"), calls);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "distinct_environments"),
                     eligible);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "duplicate_triggers"), 0);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM app_instances"
                                       " WHERE last_deployment_status ="
                                       " 'complete'",
                                       0, NULL),
                     eligible);
    finish(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_only_eligible_instances_are_picked,
                                  teardown),
        cmocka_unit_test_teardown(test_max_per_run_most_outdated_first,
                                  teardown),
        cmocka_unit_test_teardown(test_one_run_per_app_and_chunk_cap, teardown),
        cmocka_unit_test_teardown(test_beta_interval_and_stable_jitter,
                                  teardown),
        cmocka_unit_test_teardown(test_trigger_failure_fails_run_and_backs_off,
                                  teardown),
        cmocka_unit_test_teardown(test_manual_run_skips_instance_in_flight,
                                  teardown),
        cmocka_unit_test_teardown(test_poll_sequence_to_success, teardown),
        cmocka_unit_test_teardown(test_failed_and_mixed_builds, teardown),
        cmocka_unit_test_teardown(test_rejected_chunk_times_out, teardown),
        cmocka_unit_test_teardown(
            test_redelivered_batches_trigger_nothing_twice, teardown),
        cmocka_unit_test_teardown(test_large_rollout_two_workers_two_pollers,
                                  teardown),
    };

    /* a developer chasing one scenario may name it (cmocka pattern) */
    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
