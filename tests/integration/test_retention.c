/*
 * test_retention: old runs go, in batches, and nothing else does.
 *
 * Three real runs: A over all twelve instances, B over six of them, both
 * rolled out by a worker and a poller; C created while no daemon runs, so
 * it stays open. A and C are moved 100 days back. Then:
 *
 *   - `retention --dry-run` counts A and its rows and deletes nothing;
 *   - the first batch marks A, and `run retry` of A is refused from then
 *     on (a run is never re-opened half deleted);
 *   - `retention --batch 4` deletes A with its targets, chunks,
 *     transitions and webhook deliveries (three fleet-wide subscriptions
 *     that no deliverer serves: six rows per run); B is intact; C, open however
 * old, is intact; the six instances whose last run was A keep their
 * last_deployment_* fields and only lose the pointer; no statement deleted or
 * updated more than 4 rows of any table (statement-level triggers with
 * transition tables count them);
 *   - the producer's pass (`rollwave-producer --once`) does the same to B
 *     once B is old.
 */
#include "rw_itest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_itest_fleet.h"

#define FINAL_TIMEOUT_MS 60000
#define OUT_LEN          8192

/* Rows each statement touched, per table: statement-level triggers with
 * transition tables, installed on every table the retention writes. */
static const char *const counters[] = {
    "CREATE TABLE rw_test_stmt (tbl text, op text, n bigint)",
    "CREATE FUNCTION rw_test_count() RETURNS trigger LANGUAGE plpgsql AS $$"
    " BEGIN"
    "  INSERT INTO rw_test_stmt SELECT TG_TABLE_NAME, TG_OP, count(*)"
    "   FROM old_rows;"
    "  RETURN NULL;"
    " END $$",
    "CREATE TRIGGER rw_test_del AFTER DELETE ON run_targets"
    " REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION rw_test_count()",
    "CREATE TRIGGER rw_test_del AFTER DELETE ON run_chunks"
    " REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION rw_test_count()",
    "CREATE TRIGGER rw_test_del AFTER DELETE ON chunk_transitions"
    " REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION rw_test_count()",
    "CREATE TRIGGER rw_test_del AFTER DELETE ON run_transitions"
    " REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION rw_test_count()",
    "CREATE TRIGGER rw_test_del AFTER DELETE ON webhook_deliveries"
    " REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION rw_test_count()",
    "CREATE TRIGGER rw_test_del AFTER DELETE ON deployment_runs"
    " REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION rw_test_count()",
    "CREATE TRIGGER rw_test_upd AFTER UPDATE ON app_instances"
    " REFERENCING OLD TABLE AS old_rows"
    " FOR EACH STATEMENT EXECUTE FUNCTION rw_test_count()",
};

/* The instances' deployment bookkeeping, which retention must keep. */
static const char SQL_LAST_DEPLOY[] =
    "SELECT md5(string_agg(concat_ws('|', id, last_deployment_name,"
    "  last_deployment_status, last_deployed_at,"
    "  last_deploy_triggered_at, next_redeploy_at, status), ',' ORDER BY id))"
    " FROM app_instances";

static int teardown(void **state)
{
    rw_itest_fleet_destroy(*state);
    *state = NULL;
    return 0;
}

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

/* A manual run; returns its id. */
static long long redeploy(rw_itest_fleet_t *f, const char *opt, const char *val)
{
    char out[OUT_LEN], err[OUT_LEN];
    const char *args[] = {"redeploy", opt, val, "--by", "itest", NULL};
    int rc = ctl(f, args, out, err);

    if (rc != 0)
        fail_msg("rollwavectl redeploy %s %s exited %d: %s%s", opt, val, rc,
                 out, err);
    return rw_itest_fleet_ll(f, "SELECT max(id) FROM deployment_runs", 0, NULL);
}

static long long count_of(rw_itest_fleet_t *f, const char *table, long long run)
{
    char sql[160], run_s[24];
    const char *p[1] = {run_s};

    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE run_id = $1",
             table);
    snprintf(run_s, sizeof(run_s), "%lld", run);
    return rw_itest_fleet_ll(f, sql, 1, p);
}

static long long run_exists(rw_itest_fleet_t *f, long long run)
{
    char run_s[24];
    const char *p[1] = {run_s};

    snprintf(run_s, sizeof(run_s), "%lld", run);
    return rw_itest_fleet_ll(f,
                             "SELECT count(*) FROM deployment_runs"
                             " WHERE id = $1",
                             1, p);
}

static void age(rw_itest_fleet_t *f, long long run)
{
    char run_s[24];
    const char *p[1] = {run_s};

    snprintf(run_s, sizeof(run_s), "%lld", run);
    rw_itest_fleet_ll(f,
                      "WITH u AS (UPDATE deployment_runs"
                      "  SET created_at = created_at - interval '100 days',"
                      "      completed_at = completed_at - interval '100 days'"
                      "  WHERE id = $1 RETURNING 1) SELECT count(*) FROM u",
                      1, p);
}

static void test_old_runs_go_in_batches(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 5);
    char out[OUT_LEN], err[OUT_LEN], ids[256] = "", *last = NULL;
    long long app, a, b, c, b_targets, b_chunks, b_tr, c_targets;
    PGresult *res;
    int rc;

    *state = f;
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "rt", 12);
    rw_itest_fleet_snapshot(f);
    for (int i = 0; i < 3; i++)
        PQclear(rw_itest_fleet_q(
            f,
            "INSERT INTO webhooks (url, events, secret)"
            " VALUES ('http://127.0.0.1:9/hook',"
            " '{run.started,run.finished}', 'retention-test-secret')",
            0, NULL));
    rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");

    {
        char app_s[24];
        snprintf(app_s, sizeof(app_s), "%lld", app);
        a = redeploy(f, "--store-app", app_s);
    }
    rw_itest_fleet_wait_final(f, 1, FINAL_TIMEOUT_MS);
    res = rw_itest_fleet_q(f,
                           "SELECT string_agg(id::text, ',' ORDER BY id)"
                           " FROM (SELECT id FROM app_instances ORDER BY id"
                           " LIMIT 6) s",
                           0, NULL);
    snprintf(ids, sizeof(ids), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    b = redeploy(f, "--instances", ids);
    rw_itest_fleet_wait_final(f, 2, FINAL_TIMEOUT_MS);
    rw_itest_fleet_check(f);
    rw_itest_fleet_stop_all(f);

    /* C: created with no daemon running, so it stays open */
    {
        char app_s[24];
        snprintf(app_s, sizeof(app_s), "%lld", app);
        c = redeploy(f, "--store-app", app_s);
    }
    age(f, a);
    age(f, c);
    assert_int_equal(count_of(f, "run_targets", a), 12);
    /* six instances were last triggered by A, six by B */
    {
        char a_s[24];
        const char *p[1] = {a_s};
        snprintf(a_s, sizeof(a_s), "%lld", a);
        assert_int_equal(rw_itest_fleet_ll(f,
                                           "SELECT count(*) FROM app_instances"
                                           " WHERE deployment_run_id = $1",
                                           1, p),
                         6);
    }
    b_targets = count_of(f, "run_targets", b);
    b_chunks = count_of(f, "run_chunks", b);
    b_tr = count_of(f, "chunk_transitions", b);
    c_targets = count_of(f, "run_targets", c);
    assert_int_equal(b_targets, 6);
    assert_int_equal(count_of(f, "webhook_deliveries", a), 6);
    assert_int_equal(count_of(f, "webhook_deliveries", b), 6);
    res = rw_itest_fleet_q(f, SQL_LAST_DEPLOY, 0, NULL);
    last = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);

    /* the dry run counts A only and deletes nothing */
    {
        const char *args[] = {"retention", "--dry-run", "--json", NULL};
        json_t *o, *tables;
        rc = ctl(f, args, out, err);
        if (rc != 0)
            fail_msg("retention --dry-run exited %d: %s", rc, err);
        o = json_loads(out, 0, NULL);
        assert_non_null(o);
        tables = json_object_get(o, "tables");
        assert_int_equal(
            json_integer_value(json_object_get(tables, "deployment_runs")), 1);
        assert_int_equal(
            json_integer_value(json_object_get(tables, "run_targets")), 12);
        assert_int_equal(
            json_integer_value(json_object_get(
                tables, "app_instances (deployment_run_id cleared)")),
            6);
        json_decref(o);
        assert_int_equal(count_of(f, "run_targets", a), 12);
    }

    /* the first batch only marks A: from then on it cannot be re-opened */
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT o_rows FROM rw_retention_batch("
                                       " now() - interval '90 days', 4)",
                                       0, NULL),
                     1);
    {
        char uuid[64], a_s[24];
        const char *p[1] = {a_s};
        const char *args[] = {"run", "retry", uuid, NULL};
        snprintf(a_s, sizeof(a_s), "%lld", a);
        res = rw_itest_fleet_q(f,
                               "SELECT uuid::text FROM deployment_runs"
                               " WHERE id = $1::bigint",
                               1, p);
        snprintf(uuid, sizeof(uuid), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        rc = ctl(f, args, out, err);
        if (rc == 0 || !strstr(err, "retention"))
            fail_msg("run retry of a run being deleted exited %d: %s%s", rc,
                     out, err);
        assert_int_equal(count_of(f, "run_targets", a), 12);
    }
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        PQclear(rw_itest_fleet_q(f, counters[i], 0, NULL));
    {
        const char *args[] = {"retention", "--batch", "4", NULL};
        rc = ctl(f, args, out, err);
        if (rc != 0)
            fail_msg("retention exited %d: %s%s", rc, out, err);
    }
    /* A is gone with everything that referenced it */
    assert_int_equal(run_exists(f, a), 0);
    assert_int_equal(count_of(f, "run_targets", a), 0);
    assert_int_equal(count_of(f, "run_chunks", a), 0);
    assert_int_equal(count_of(f, "chunk_transitions", a), 0);
    assert_int_equal(count_of(f, "run_transitions", a), 0);
    assert_int_equal(count_of(f, "webhook_deliveries", a), 0);
    /* B (new) and C (open) are intact */
    assert_int_equal(count_of(f, "run_targets", b), b_targets);
    assert_int_equal(count_of(f, "run_chunks", b), b_chunks);
    assert_int_equal(count_of(f, "chunk_transitions", b), b_tr);
    assert_int_equal(count_of(f, "run_targets", c), c_targets);
    assert_int_equal(count_of(f, "webhook_deliveries", b), 6);
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM deployment_runs", 0, NULL),
        2);
    /* the instances keep what they know about their last deployment */
    res = rw_itest_fleet_q(f, SQL_LAST_DEPLOY, 0, NULL);
    assert_string_equal(PQgetvalue(res, 0, 0), last);
    PQclear(res);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM app_instances"
                                       " WHERE deployment_run_id IS NULL",
                                       0, NULL),
                     6);
    /* batches: no statement touched more than 4 rows of a table */
    assert_true(rw_itest_fleet_ll(f,
                                  "SELECT count(*) FROM rw_test_stmt"
                                  " WHERE tbl = 'run_targets'",
                                  0, NULL) >= 3);
    {
        long long worst = rw_itest_fleet_ll(
            f, "SELECT COALESCE(max(n), 0) FROM rw_test_stmt", 0, NULL);
        if (worst > 4) {
            res = rw_itest_fleet_q(f,
                                   "SELECT string_agg(tbl || ' ' || op || ' '"
                                   " || n, ', ') FROM rw_test_stmt WHERE n > 4",
                                   0, NULL);
            fail_msg("a retention statement touched %lld rows: %s", worst,
                     PQgetvalue(res, 0, 0));
        }
    }

    /* the producer's leader does the same once B is old */
    age(f, b);
    rw_itest_fleet_set(f, "ROLLWAVE_RETENTION_BATCH", "3");
    rw_itest_fleet_set(f, "ROLLWAVE_RETENTION_PASS_BATCHES", "1000");
    rw_itest_fleet_tick(f);
    assert_int_equal(count_of(f, "run_targets", b), 0);
    assert_int_equal(count_of(f, "webhook_deliveries", b), 0);
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM deployment_runs", 0, NULL),
        1);
    assert_int_equal(count_of(f, "run_targets", c), c_targets);
    res = rw_itest_fleet_q(f, SQL_LAST_DEPLOY, 0, NULL);
    assert_string_equal(PQgetvalue(res, 0, 0), last);
    PQclear(res);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT COALESCE(max(n), 0)"
                                       " FROM rw_test_stmt WHERE n > 4",
                                       0, NULL),
                     0);
    free(last);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_old_runs_go_in_batches, teardown),
    };

    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
