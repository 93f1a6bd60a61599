/*
 * test_chunk_races (integration): the trigger endings of rw_chunk against
 * run control and against each other, on a real Postgres. Each test plays
 * one interleaving of a worker (or the recovery sweep) with an operator or
 * a second handler, and checks the invariants of DESIGN.md section 7
 * afterwards: a cancelled run has every target terminal and no open chunk;
 * a chunk records the bulk of its current attempt only.
 *
 * Needs ROLLWAVE_PG_DSN (scripts/stack.sh env).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>
#include <unistd.h>

#include "rw_chunk.h"
#include "rw_control.h"
#include "rw_itest.h"
#include "rw_itest_pg.h"
#include "rw_progress.h"
#include "rw_state.h"

typedef struct fixture {
    char dsn[1024];
    rw_pg_t *pg;
    long long store_app_id;
    rw_settings_t s;
} fixture_t;

static PGresult *q(rw_pg_t *pg, const char *sql, int n,
                   const char *const *params)
{
    PGresult *res = NULL;
    char errstr[512] = "";

    if (rw_pg_exec(pg, sql, n, params, &res, errstr, sizeof(errstr)) != RW_OK)
        fail_msg("%s: %s", sql, errstr);
    return res;
}

static long long q_ll(rw_pg_t *pg, const char *sql, long long arg)
{
    char a[24];
    const char *params[1] = {a};
    PGresult *res = NULL;
    long long v = 0;

    snprintf(a, sizeof(a), "%lld", arg);
    res = q(pg, sql, 1, params);
    if (PQntuples(res) != 1)
        fail_msg("%s: %d rows", sql, PQntuples(res));
    v = rw_pg_ll(res, 0, PQfname(res, 0), -1);
    PQclear(res);
    return v;
}

static char *q_str(rw_pg_t *pg, const char *sql, long long arg)
{
    char a[24];
    const char *params[1] = {a};
    PGresult *res = NULL;
    char *v = NULL;

    snprintf(a, sizeof(a), "%lld", arg);
    res = q(pg, sql, 1, params);
    if (PQntuples(res) != 1)
        fail_msg("%s: %d rows", sql, PQntuples(res));
    v = strdup(PQgetisnull(res, 0, 0) ? "NULL" : PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

/*
 * A running run with one chunk being triggered: chunk 0 triggering at
 * attempt `attempt` (bulk name of that attempt, sent just now), one target
 * claimed for that attempt. Returns the run id; uuid, target and instance
 * ids through the pointers.
 */
static long long triggering_run(fixture_t *f, int attempt, char *uuid,
                                size_t uuid_len, long long *target,
                                long long *instance)
{
    char app[24], name[64], run_s[24], inst_s[24], att_s[16], bulk[128];
    const char *p[4];
    PGresult *res = NULL;
    long long run_id;

    snprintf(app, sizeof(app), "%lld", f->store_app_id);
    p[0] = app;
    res = q(f->pg,
            "INSERT INTO deployment_runs (trigger_source, status, "
            "store_app_id, started_at) VALUES ('manual', 'running', "
            "$1::bigint, now()) RETURNING id, uuid::text AS uuid",
            1, p);
    run_id = rw_pg_ll(res, 0, "id", 0);
    snprintf(uuid, uuid_len, "%s", rw_pg_str(res, 0, "uuid"));
    PQclear(res);

    rw_itest_unique(name, sizeof(name), "inst");
    p[0] = app;
    p[1] = name;
    res = q(f->pg,
            "INSERT INTO app_instances (name, store_app_id, status, "
            "lagoon_project, lagoon_environment) VALUES ($2, $1::bigint, "
            "'running-healthy-unclaimed', $2, 'main') RETURNING id",
            2, p);
    *instance = rw_pg_ll(res, 0, "id", 0);
    PQclear(res);

    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    snprintf(inst_s, sizeof(inst_s), "%lld", *instance);
    snprintf(att_s, sizeof(att_s), "%d", attempt);
    snprintf(bulk, sizeof(bulk), "rollwave %s c0 a%d", uuid, attempt);
    p[0] = run_s;
    p[1] = inst_s;
    p[2] = att_s;
    p[3] = bulk;
    res = q(f->pg,
            "INSERT INTO run_targets (run_id, instance_id, chunk, state, "
            "attempt, lagoon_project, lagoon_environment, claimed_at)"
            " SELECT $1::bigint, id, 0, 'claimed', $3::int, lagoon_project,"
            "        lagoon_environment, now()"
            " FROM app_instances WHERE id = $2::bigint RETURNING id",
            3, p);
    *target = rw_pg_ll(res, 0, "id", 0);
    PQclear(res);
    /* $2 (the instance) is not needed here; typed so it can be passed */
    PQclear(q(f->pg,
              "INSERT INTO run_chunks (run_id, chunk, state, attempt, "
              "bulk_name, sent_at, target_count) VALUES ($1::bigint, 0, "
              "'triggering', $3::int, $4, now(), 1 + 0 * $2::bigint)",
              4, p));
    return run_id;
}

static rw_chunk_claim_t claim_of(long long target, long long instance)
{
    rw_chunk_claim_t c;

    memset(&c, 0, sizeof(c));
    c.target_id = target;
    c.instance_id = instance;
    c.project = "p";
    c.environment = "main";
    return c;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    PGresult *res = NULL;

    assert_non_null(f);
    rw_itest_pg_fresh_db(f->dsn, sizeof(f->dsn));
    f->pg = rw_itest_pg_connect(f->dsn);
    res =
        q(f->pg, "INSERT INTO store_apps (name) VALUES ('races') RETURNING id",
          0, NULL);
    f->store_app_id = rw_pg_ll(res, 0, "id", 0);
    PQclear(res);
    f->s.kafka_topic_prefix = (char *)"rw-test.";
    f->s.failure_backoff_s = 3600;
    f->s.first_poll_delay_s = 10;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;

    rw_pg_destroy(f->pg);
    rw_itest_pg_drop_db(f->dsn);
    free(f);
    return 0;
}

/* The claim of test_claim_after_abort_locks, on its own connection. */
typedef struct claimer {
    const char *dsn;
    long long run_id;
    long long ids[4];
    rw_err_t err;
    rw_chunk_claim_result_t r;
    char errstr[512];
} claimer_t;

static int claimer_main(void *arg)
{
    claimer_t *c = arg;
    rw_pg_t *pg = rw_itest_pg_connect(c->dsn);

    c->err = rw_chunk_claim(pg, c->run_id, 0, 1, "rollwave x c0 a1", "claimed",
                            c->ids, 4, 0, &c->r, c->errstr, sizeof(c->errstr));
    rw_pg_destroy(pg);
    return 0;
}

/*
 * A worker's one-statement claim meets an abort in progress: the abort
 * (rw_control_abort's order: the run's pending targets, then its pending
 * chunks, in one transaction) holds the targets when the claim arrives.
 * The claim takes the targets before the chunk, as the abort does, so it
 * waits instead of deadlocking: the abort commits, the claim finds the
 * chunk no longer pending and moves nothing. (Taking the chunk first had
 * Postgres cancel one of the two with a deadlock.)
 */
static void test_claim_after_abort_locks(void **state)
{
    fixture_t *f = *state;
    claimer_t c;
    thrd_t th;
    char app[24], run_s[24], errstr[512];
    const char *p[1] = {app};
    PGresult *res;

    memset(&c, 0, sizeof(c));
    snprintf(app, sizeof(app), "%lld", f->store_app_id);
    res = q(f->pg,
            "INSERT INTO deployment_runs (trigger_source, status,"
            " store_app_id, started_at) VALUES ('manual', 'running',"
            " $1::bigint, now()) RETURNING id",
            1, p);
    c.run_id = rw_pg_ll(res, 0, "id", 0);
    PQclear(res);
    snprintf(run_s, sizeof(run_s), "%lld", c.run_id);
    p[0] = run_s;
    PQclear(q(f->pg,
              "INSERT INTO app_instances (name, store_app_id, status,"
              " lagoon_project, lagoon_environment)"
              " SELECT 'abort-claim-' || $1 || '-' || g, r.store_app_id,"
              "   'running-healthy-unclaimed', 'p' || g, 'main'"
              " FROM deployment_runs r, generate_series(1, 4) g"
              " WHERE r.id = $1::bigint",
              1, p));
    PQclear(q(f->pg,
              "INSERT INTO run_targets (run_id, instance_id, chunk, state)"
              " SELECT $1::bigint, i.id, 0, 'pending' FROM app_instances i"
              " WHERE i.name LIKE 'abort-claim-' || $1 || '-%'",
              1, p));
    PQclear(q(f->pg,
              "INSERT INTO run_chunks (run_id, chunk, target_count)"
              " VALUES ($1::bigint, 0, 4)",
              1, p));
    res = q(f->pg,
            "SELECT id FROM run_targets WHERE run_id = $1::bigint"
            " ORDER BY id",
            1, p);
    assert_int_equal(PQntuples(res), 4);
    for (int i = 0; i < 4; i++)
        c.ids[i] = rw_pg_ll(res, i, "id", 0);
    PQclear(res);
    c.dsn = f->dsn;

    assert_int_equal(rw_pg_begin(f->pg, errstr, sizeof(errstr)), RW_OK);
    PQclear(q(f->pg,
              "UPDATE run_targets SET state = 'cancelled', updated_at = now()"
              " WHERE run_id = $1::bigint AND state = 'pending'",
              1, p));
    assert_int_equal(thrd_create(&th, claimer_main, &c), thrd_success);
    /* until the claim waits for a lock the abort holds (another session:
     * this one's view of pg_stat_activity is fixed for its transaction) */
    {
        rw_pg_t *watch = rw_itest_pg_connect(f->dsn);
        long long deadline = rw_itest_now_ms() + 20000;
        while (q_ll(watch,
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database()"
                    "   AND wait_event_type = 'Lock'"
                    "   AND query LIKE 'WITH t0 AS%' AND $1 > 0",
                    1) == 0) {
            assert_true(rw_itest_now_ms() < deadline);
            usleep(10 * 1000);
        }
        rw_pg_destroy(watch);
    }
    PQclear(q(f->pg,
              "UPDATE run_chunks SET state = 'done'"
              " WHERE run_id = $1::bigint AND state = 'pending'",
              1, p));
    assert_int_equal(rw_pg_commit(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(thrd_join(th, NULL), thrd_success);
    assert_int_equal(c.err, RW_OK);
    assert_false(c.r.chunk_ok);
    assert_false(c.r.moved);
    assert_int_equal(c.r.n_claimed, 0);
    free(c.r.claimed);
    assert_int_equal(q_ll(f->pg,
                          "SELECT count(*) FROM run_targets"
                          " WHERE run_id = $1 AND state = 'cancelled'",
                          c.run_id),
                     4);
}

/*
 * Worker (or sweep) loaded the run as running, sent the bulk and got an
 * answer that proves it never reached Lagoon (retry class). Meanwhile an
 * operator aborted the run: abort closes only pending chunks, this one was
 * triggering. The unsent ending gives the claim back on the strength of
 * its stale snapshot, then every repair there is runs: the held batch is
 * ignored for a cancelled run, the sweep re-queues pending chunks of
 * pending/running runs only and finalizes non-terminal runs only.
 * Invariant 3: the cancelled run must end with every target terminal and
 * no open chunk.
 */
static void test_abort_during_unsent_trigger_closes_chunk(void **state)
{
    fixture_t *f = *state;
    char uuid[40], errstr[512] = "";
    long long target = 0, instance = 0, run_id, fin = 0;
    rw_control_result_t out;
    rw_chunk_claim_t claim;
    rw_chunk_ref_t ref;
    char *tstate, *cstate;

    run_id = triggering_run(f, 1, uuid, sizeof(uuid), &target, &instance);
    /* the worker's snapshot, taken before the abort */
    ref.run_id = run_id;
    ref.run_uuid = uuid;
    ref.chunk = 0;
    ref.attempt = 1; /* the attempt the worker claimed */
    ref.run_status = RW_RUN_RUNNING;
    claim = claim_of(target, instance);

    assert_int_equal(rw_control_run(f->pg, uuid, RW_CONTROL_ABORT, 3, "op",
                                    &out, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_chunk_record_unsent(f->pg, NULL, &f->s, &ref, &claim, 1,
                                            "trigger failed: 503", errstr,
                                            sizeof(errstr)),
                     RW_OK);
    /* every repair the recovery sweep has for a run */
    assert_int_equal(rw_progress_sweep(f->pg, &fin, errstr, sizeof(errstr)),
                     RW_OK);

    tstate =
        q_str(f->pg, "SELECT state FROM run_targets WHERE id = $1", target);
    cstate = q_str(f->pg,
                   "SELECT state FROM run_chunks WHERE run_id = $1 AND "
                   "chunk = 0",
                   run_id);
    if (strcmp(tstate, "cancelled") != 0 || strcmp(cstate, "done") != 0)
        fail_msg("cancelled run left target %s and chunk %s: no handler "
                 "closes them any more",
                 tstate, cstate);
    free(tstate);
    free(cstate);
}

/*
 * Worker A claimed attempt 1 and sent it late (its send began after the
 * settle window counted from the claim). The sweep found no bulk named
 * a1, gave the claim back; worker B claimed attempt 2 and is sending it.
 * A's bulk id now arrives: recording it must not land on attempt 2,
 * whose bulk is named a2 (invariant 1: the chunk must point to the bulk of
 * its current attempt, or B's bulk is never polled and A's is adopted as
 * if it were B's).
 */
static void test_stale_attempt_cannot_record_its_bulk(void **state)
{
    fixture_t *f = *state;
    char uuid[40], errstr[512] = "";
    long long target = 0, instance = 0, run_id;
    rw_chunk_claim_t claim;
    rw_chunk_ref_t ref;
    rw_err_t err;
    char *bulk_id;

    /* the state after sweep unsent + worker B's claim: attempt 2 */
    run_id = triggering_run(f, 2, uuid, sizeof(uuid), &target, &instance);
    ref.run_id = run_id;
    ref.run_uuid = uuid;
    ref.chunk = 0;
    ref.attempt = 1; /* worker A ends its own attempt */
    ref.run_status = RW_RUN_RUNNING;
    claim = claim_of(target, instance);

    /* worker A, holding the bulk id Lagoon gave to "... c0 a1" */
    err = rw_chunk_record_triggered(f->pg, NULL, &f->s, &ref, &claim, 1,
                                    "bulk-of-attempt-1", "bulk accepted",
                                    errstr, sizeof(errstr));
    bulk_id = q_str(f->pg,
                    "SELECT bulk_id FROM run_chunks WHERE run_id = $1 AND "
                    "chunk = 0",
                    run_id);
    if (err == RW_OK && strcmp(bulk_id, "bulk-of-attempt-1") == 0)
        fail_msg("attempt 2 (bulk name a2) recorded attempt 1's bulk id %s; "
                 "chunk is %s",
                 bulk_id,
                 q_str(f->pg,
                       "SELECT state FROM run_chunks WHERE run_id = $1 AND "
                       "chunk = 0",
                       run_id));
    free(bulk_id);
    assert_int_equal(q_ll(f->pg,
                          "SELECT count(*) FROM run_targets WHERE id = $1 AND "
                          "state = 'claimed'",
                          target),
                     1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_abort_during_unsent_trigger_closes_chunk, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_stale_attempt_cannot_record_its_bulk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_after_abort_locks, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
