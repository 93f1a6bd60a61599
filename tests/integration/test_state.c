/*
 * test_state (integration): the run and target transition functions against
 * a real Postgres with the rollwave schema. A legal run transition moves
 * the run and records it in run_transitions; an illegal one writes nothing;
 * a stale `from` is a conflict with no audit row; a batched target
 * transition moves exactly the rows still in `from`. The chunk writer
 * moves chunks with their audit rows, guards the attempt and the poll
 * attempt, and a claim given back (never sent) takes its attempt back.
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

#include "rw_itest.h"
#include "rw_itest_pg.h"
#include "rw_progress.h"
#include "rw_state.h"

typedef struct fixture {
    char dsn[1024];
    rw_pg_t *pg;
    long long store_app_id;
} fixture_t;

/* ---- SQL helpers: any failure fails the test ---------------------------- */

static PGresult *q(rw_pg_t *pg, const char *sql, int n,
                   const char *const *params)
{
    PGresult *res = NULL;
    char errstr[512] = "";

    if (rw_pg_exec(pg, sql, n, params, &res, errstr, sizeof(errstr)) != RW_OK)
        fail_msg("%s: %s", sql, errstr);
    return res;
}

/* First column of the first row as a number, with one bigint parameter. */
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

/* First column of the first row as text ("NULL" for SQL NULL); frees. */
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

static void expect_str(rw_pg_t *pg, const char *sql, long long arg,
                       const char *want)
{
    char *got = q_str(pg, sql, arg);

    if (strcmp(got, want) != 0)
        fail_msg("%s [%lld]: got \"%s\", want \"%s\"", sql, arg, got, want);
    free(got);
}

static long long make_run(fixture_t *f, const char *status)
{
    const char *params[2] = {status, NULL};
    char app[24];
    PGresult *res = NULL;
    long long id = 0;

    snprintf(app, sizeof(app), "%lld", f->store_app_id);
    params[1] = app;
    res = q(f->pg,
            "INSERT INTO deployment_runs (trigger_source, status, "
            "store_app_id) VALUES ('manual', $1, $2::bigint) RETURNING id",
            2, params);
    id = rw_pg_ll(res, 0, "id", 0);
    PQclear(res);
    assert_true(id > 0);
    return id;
}

static long long make_instance(fixture_t *f)
{
    char app[24];
    char name[64];
    const char *params[2] = {app, name};
    PGresult *res = NULL;
    long long id = 0;

    snprintf(app, sizeof(app), "%lld", f->store_app_id);
    rw_itest_unique(name, sizeof(name), "inst");
    res = q(f->pg,
            "INSERT INTO app_instances (name, store_app_id, status, "
            "lagoon_project, lagoon_environment) VALUES ($2, $1::bigint, "
            "'running-healthy-unclaimed', $2, 'main') RETURNING id",
            2, params);
    id = rw_pg_ll(res, 0, "id", 0);
    PQclear(res);
    return id;
}

static long long make_target(fixture_t *f, long long run_id,
                             long long instance_id, const char *state)
{
    char r[24], i[24];
    const char *params[3] = {r, i, state};
    PGresult *res = NULL;
    long long id = 0;

    snprintf(r, sizeof(r), "%lld", run_id);
    snprintf(i, sizeof(i), "%lld", instance_id);
    res = q(f->pg,
            "INSERT INTO run_targets (run_id, instance_id, chunk, state) "
            "VALUES ($1::bigint, $2::bigint, 0, $3) RETURNING id",
            3, params);
    id = rw_pg_ll(res, 0, "id", 0);
    PQclear(res);
    return id;
}

static long long transitions_of(fixture_t *f, long long run_id)
{
    return q_ll(f->pg,
                "SELECT count(*) AS n FROM run_transitions WHERE run_id = $1",
                run_id);
}

#define RUN_STATUS   "SELECT status FROM deployment_runs WHERE id = $1"
#define TARGET_STATE "SELECT state FROM run_targets WHERE id = $1"

/* ---- fixture ------------------------------------------------------------ */

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    PGresult *res = NULL;

    assert_non_null(f);
    rw_itest_pg_fresh_db(f->dsn, sizeof(f->dsn));
    f->pg = rw_itest_pg_connect(f->dsn);
    res = q(f->pg,
            "INSERT INTO store_apps (name) VALUES ('state-test') RETURNING id",
            0, NULL);
    f->store_app_id = rw_pg_ll(res, 0, "id", 0);
    PQclear(res);
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

/* ---- run transitions ---------------------------------------------------- */

static void test_run_legal_transitions_recorded(void **state)
{
    fixture_t *f = *state;
    long long run = make_run(f, "pending");
    char errstr[512] = "";
    char *started = NULL;

    assert_int_equal(
        rw_run_transition(f->pg, run, RW_RUN_PENDING, RW_RUN_RUNNING, false,
                          "chunk 0 triggered", errstr, sizeof(errstr)),
        RW_OK);
    expect_str(f->pg, RUN_STATUS, run, "running");
    expect_str(f->pg,
               "SELECT (started_at IS NOT NULL AND completed_at IS NULL)::text"
               " FROM deployment_runs WHERE id = $1",
               run, "true");
    assert_int_equal(transitions_of(f, run), 1);
    expect_str(f->pg,
               "SELECT from_status || '>' || to_status || ':' || reason"
               " FROM run_transitions WHERE run_id = $1",
               run, "pending>running:chunk 0 triggered");
    started = q_str(
        f->pg, "SELECT started_at FROM deployment_runs WHERE id = $1", run);

    /* Pause and resume keep the first start time. */
    assert_int_equal(rw_run_transition(f->pg, run, RW_RUN_RUNNING,
                                       RW_RUN_PAUSED, false, NULL, errstr,
                                       sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_run_transition(f->pg, run, RW_RUN_PAUSED,
                                       RW_RUN_RUNNING, false, "resume", errstr,
                                       sizeof(errstr)),
                     RW_OK);
    expect_str(f->pg, "SELECT started_at FROM deployment_runs WHERE id = $1",
               run, started);

    assert_int_equal(rw_run_transition(f->pg, run, RW_RUN_RUNNING,
                                       RW_RUN_PARTIAL_FAILED, false,
                                       "finalized", errstr, sizeof(errstr)),
                     RW_OK);
    expect_str(f->pg, RUN_STATUS, run, "partial_failed");
    expect_str(f->pg,
               "SELECT (completed_at IS NOT NULL)::text FROM deployment_runs"
               " WHERE id = $1",
               run, "true");

    /* A retry reopens the run: completed_at is cleared again. */
    assert_int_equal(rw_run_transition(f->pg, run, RW_RUN_PARTIAL_FAILED,
                                       RW_RUN_RUNNING, true, "retry", errstr,
                                       sizeof(errstr)),
                     RW_OK);
    expect_str(f->pg,
               "SELECT (completed_at IS NULL)::text FROM deployment_runs"
               " WHERE id = $1",
               run, "true");
    expect_str(f->pg, "SELECT started_at FROM deployment_runs WHERE id = $1",
               run, started);
    assert_int_equal(transitions_of(f, run), 5);
    /* The audit trail lists every step in order; NULL reason kept NULL. */
    expect_str(f->pg,
               "SELECT string_agg(from_status || '>' || to_status || '/' ||"
               " coalesce(reason, '-'), ' ' ORDER BY id)"
               " FROM run_transitions WHERE run_id = $1",
               run,
               "pending>running/chunk 0 triggered running>paused/- "
               "paused>running/resume running>partial_failed/finalized "
               "partial_failed>running/retry");
    free(started);
}

static void test_run_illegal_transition_writes_nothing(void **state)
{
    fixture_t *f = *state;
    long long run = make_run(f, "completed");
    char errstr[512] = "";

    /* completed -> running is a retry-only edge. */
    assert_int_equal(rw_run_transition(f->pg, run, RW_RUN_COMPLETED,
                                       RW_RUN_RUNNING, false, "no retry",
                                       errstr, sizeof(errstr)),
                     RW_ERR_STATE);
    assert_non_null(strstr(errstr, "completed -> running"));
    /* cancelled is final, even for a retry. */
    assert_int_equal(rw_run_transition(f->pg, run, RW_RUN_CANCELLED,
                                       RW_RUN_RUNNING, true, "x", errstr,
                                       sizeof(errstr)),
                     RW_ERR_STATE);
    assert_int_equal(rw_run_transition(f->pg, run, RW_RUN_COMPLETED,
                                       RW_RUN_PENDING, true, "x", errstr,
                                       sizeof(errstr)),
                     RW_ERR_STATE);
    expect_str(f->pg, RUN_STATUS, run, "completed");
    assert_int_equal(transitions_of(f, run), 0);
}

static void test_run_stale_from_conflicts(void **state)
{
    fixture_t *f = *state;
    long long run = make_run(f, "running");
    char errstr[512] = "";

    /* Another worker already moved it from pending to running. */
    assert_int_equal(rw_run_transition(f->pg, run, RW_RUN_PENDING,
                                       RW_RUN_RUNNING, false, "late", errstr,
                                       sizeof(errstr)),
                     RW_ERR_CONFLICT);
    assert_non_null(strstr(errstr, "no longer pending"));
    expect_str(f->pg, RUN_STATUS, run, "running");
    assert_int_equal(transitions_of(f, run), 0);

    /* Two finalizers racing: the first wins, the second conflicts. */
    assert_int_equal(rw_run_transition(f->pg, run, RW_RUN_RUNNING,
                                       RW_RUN_COMPLETED, false, "first", errstr,
                                       sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_run_transition(f->pg, run, RW_RUN_RUNNING,
                                       RW_RUN_FAILED, false, "second", errstr,
                                       sizeof(errstr)),
                     RW_ERR_CONFLICT);
    expect_str(f->pg, RUN_STATUS, run, "completed");
    assert_int_equal(transitions_of(f, run), 1);

    /* A run that does not exist cannot be moved either. */
    assert_int_equal(rw_run_transition(f->pg, run + 100000, RW_RUN_PENDING,
                                       RW_RUN_RUNNING, false, "ghost", errstr,
                                       sizeof(errstr)),
                     RW_ERR_CONFLICT);
    assert_int_equal(transitions_of(f, run + 100000), 0);
}

/* ---- target transitions ------------------------------------------------- */

static void test_target_batch_moves_only_rows_in_from(void **state)
{
    fixture_t *f = *state;
    long long run = make_run(f, "running");
    long long other_run = make_run(f, "running");
    long long t[5];
    long long foreign = 0;
    long long *changed = NULL;
    size_t n_changed = 99;
    char errstr[512] = "";

    t[0] = make_target(f, run, make_instance(f), "pending");
    t[1] = make_target(f, run, make_instance(f), "skipped");
    t[2] = make_target(f, run, make_instance(f), "pending");
    t[3] = make_target(f, run, make_instance(f), "succeeded");
    t[4] = make_target(f, run, make_instance(f), "pending");
    foreign = make_target(f, other_run, make_instance(f), "pending");

    /* Repeated ids and another run's target are harmless. */
    long long ids[] = {t[4], t[0], t[1], t[2], t[3], t[0], foreign};
    assert_int_equal(rw_target_transition(f->pg, run, ids, 7, RW_TARGET_PENDING,
                                          RW_TARGET_CLAIMED, false, NULL,
                                          &changed, &n_changed, errstr,
                                          sizeof(errstr)),
                     RW_OK);
    assert_int_equal(n_changed, 3);
    assert_true(changed[0] == t[0] && changed[1] == t[2] && changed[2] == t[4]);
    free(changed);
    expect_str(f->pg, TARGET_STATE, t[0], "claimed");
    expect_str(f->pg, TARGET_STATE, t[1], "skipped");
    expect_str(f->pg, TARGET_STATE, t[2], "claimed");
    expect_str(f->pg, TARGET_STATE, t[3], "succeeded");
    expect_str(f->pg, TARGET_STATE, t[4], "claimed");
    expect_str(f->pg, TARGET_STATE, foreign, "pending");
    expect_str(f->pg,
               "SELECT (claimed_at IS NOT NULL AND finished_at IS NULL)::text"
               " FROM run_targets WHERE id = $1",
               t[0], "true");

    /* Redelivery: the same batch again moves nothing. */
    assert_int_equal(rw_target_transition(f->pg, run, ids, 7, RW_TARGET_PENDING,
                                          RW_TARGET_CLAIMED, false, NULL,
                                          &changed, &n_changed, errstr,
                                          sizeof(errstr)),
                     RW_OK);
    assert_int_equal(n_changed, 0);
    assert_null(changed);

    /* Trigger failed for good: terminal, with the error and finished_at. */
    long long fail_ids[] = {t[0], t[2]};
    assert_int_equal(rw_target_transition(f->pg, run, fail_ids, 2,
                                          RW_TARGET_CLAIMED, RW_TARGET_FAILED,
                                          false, "lagoon said no", &changed,
                                          &n_changed, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(n_changed, 2);
    free(changed);
    expect_str(f->pg,
               "SELECT state || ':' || error || ':' ||"
               " (finished_at IS NOT NULL)::text FROM run_targets"
               " WHERE id = $1",
               t[2], "failed:lagoon said no:true");
    expect_str(f->pg, TARGET_STATE, t[4], "claimed");
}

static void test_target_illegal_and_retry_edges(void **state)
{
    fixture_t *f = *state;
    long long run = make_run(f, "running");
    long long t = make_target(f, run, make_instance(f), "failed");
    long long *changed = NULL;
    size_t n_changed = 0;
    char errstr[512] = "";

    q_ll(f->pg,
         "UPDATE run_targets SET error = 'boom', finished_at = now()"
         " WHERE id = $1 RETURNING id",
         t);
    /* failed -> pending needs retry; refused without writing anything. */
    assert_int_equal(rw_target_transition(f->pg, run, &t, 1, RW_TARGET_FAILED,
                                          RW_TARGET_PENDING, false, NULL,
                                          &changed, &n_changed, errstr,
                                          sizeof(errstr)),
                     RW_ERR_STATE);
    assert_int_equal(n_changed, 0);
    assert_null(changed);
    expect_str(f->pg,
               "SELECT state || ':' || error FROM run_targets"
               " WHERE id = $1",
               t, "failed:boom");
    /* succeeded never goes back. */
    assert_int_equal(rw_target_transition(f->pg, run, &t, 1,
                                          RW_TARGET_SUCCEEDED,
                                          RW_TARGET_PENDING, true, NULL, NULL,
                                          NULL, errstr, sizeof(errstr)),
                     RW_ERR_STATE);

    /* With retry: back to pending, error and finished_at cleared. */
    assert_int_equal(rw_target_transition(f->pg, run, &t, 1, RW_TARGET_FAILED,
                                          RW_TARGET_PENDING, true, NULL, NULL,
                                          &n_changed, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(n_changed, 1);
    expect_str(f->pg,
               "SELECT state || ':' || coalesce(error, '-') || ':' ||"
               " (finished_at IS NULL)::text FROM run_targets WHERE id = $1",
               t, "pending:-:true");

    /* Nothing to move is not an error. */
    assert_int_equal(rw_target_transition(f->pg, run, NULL, 0,
                                          RW_TARGET_PENDING, RW_TARGET_CLAIMED,
                                          false, NULL, &changed, &n_changed,
                                          errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(n_changed, 0);
}

static void test_target_in_flight_elsewhere_is_unique_violation(void **state)
{
    fixture_t *f = *state;
    long long inst = make_instance(f);
    long long run_a = make_run(f, "running");
    long long run_b = make_run(f, "running");
    long long ta = make_target(f, run_a, inst, "deploying");
    long long tb = make_target(f, run_b, inst, "pending");
    long long *changed = NULL;
    size_t n_changed = 0;
    char errstr[512] = "";

    (void)ta;
    assert_int_equal(rw_target_transition(f->pg, run_b, &tb, 1,
                                          RW_TARGET_PENDING, RW_TARGET_CLAIMED,
                                          false, NULL, &changed, &n_changed,
                                          errstr, sizeof(errstr)),
                     RW_ERR_PG_UNIQUE);
    assert_int_equal(n_changed, 0);
    assert_null(changed);
    expect_str(f->pg, TARGET_STATE, tb, "pending");

    /* The skip path the worker takes instead is fine. */
    assert_int_equal(
        rw_target_transition(f->pg, run_b, &tb, 1, RW_TARGET_PENDING,
                             RW_TARGET_SKIPPED, false, "in flight elsewhere",
                             &changed, &n_changed, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(n_changed, 1);
    free(changed);
    expect_str(f->pg, TARGET_STATE, tb, "skipped");
}

/* ---- chunk transitions -------------------------------------------------- */

static void make_chunk(fixture_t *f, long long run_id, int chunk)
{
    char r[24], c[16];
    const char *params[2] = {r, c};

    snprintf(r, sizeof(r), "%lld", run_id);
    snprintf(c, sizeof(c), "%d", chunk);
    PQclear(q(f->pg,
              "INSERT INTO run_chunks (run_id, chunk) VALUES ($1::bigint,"
              " $2::int)",
              2, params));
}

#define CHUNK_ROW                                                              \
    "SELECT state || ':' || attempt || ':' || COALESCE(bulk_name, '-') ||"     \
    " ':' || COALESCE(bulk_id, '-') || ':' || poll_attempts || ':' ||"         \
    " (sent_at IS NOT NULL)::text || ':' || (finished_at IS NOT NULL)::text"   \
    " || ':' || send_failures FROM run_chunks WHERE run_id = $1 AND chunk = 0"

static long long chunk_audit(fixture_t *f, long long run_id)
{
    return q_ll(f->pg,
                "SELECT count(*) FROM chunk_transitions WHERE run_id = $1",
                run_id);
}

static void test_chunk_lifecycle_audited_and_guarded(void **state)
{
    fixture_t *f = *state;
    long long run = make_run(f, "running");
    rw_chunk_change_t ch = RW_CHUNK_CHANGE_INIT;
    char errstr[512] = "";
    size_t moved = 9;

    make_chunk(f, run, 0);
    make_chunk(f, run, 1);

    /* entering triggering needs the next attempt: a stale one conflicts */
    ch.attempt = 2;
    ch.bulk_name = "rollwave x c0 a2";
    assert_int_equal(rw_chunk_transition_one(f->pg, run, 0, RW_CHUNK_PENDING,
                                             RW_CHUNK_TRIGGERING, false, &ch,
                                             "claimed", errstr, sizeof(errstr)),
                     RW_ERR_CONFLICT);
    assert_int_equal(chunk_audit(f, run), 0);
    ch.attempt = 1;
    ch.bulk_name = "rollwave x c0 a1";
    assert_int_equal(rw_chunk_transition_one(f->pg, run, 0, RW_CHUNK_PENDING,
                                             RW_CHUNK_TRIGGERING, false, &ch,
                                             "claimed", errstr, sizeof(errstr)),
                     RW_OK);
    expect_str(f->pg, CHUNK_ROW, run,
               "triggering:1:rollwave x c0 a1:-:0:true:false:0");
    /* a second worker racing for the same attempt loses */
    assert_int_equal(rw_chunk_transition_one(f->pg, run, 0, RW_CHUNK_PENDING,
                                             RW_CHUNK_TRIGGERING, false, &ch,
                                             "claimed", errstr, sizeof(errstr)),
                     RW_ERR_CONFLICT);

    /* never sent: back to pending, counted, the attempt number kept */
    ch = (rw_chunk_change_t)RW_CHUNK_CHANGE_INIT;
    ch.error = "connection refused";
    assert_int_equal(rw_chunk_transition_one(f->pg, run, 0, RW_CHUNK_TRIGGERING,
                                             RW_CHUNK_PENDING, false, &ch,
                                             "unsent", errstr, sizeof(errstr)),
                     RW_OK);
    expect_str(f->pg, CHUNK_ROW, run, "pending:1:-:-:0:false:false:1");

    /* the next attempt, then triggered with its bulk id */
    ch = (rw_chunk_change_t)RW_CHUNK_CHANGE_INIT;
    ch.attempt = 2;
    ch.bulk_name = "rollwave x c0 a2";
    assert_int_equal(rw_chunk_transition_one(f->pg, run, 0, RW_CHUNK_PENDING,
                                             RW_CHUNK_TRIGGERING, false, &ch,
                                             "claimed", errstr, sizeof(errstr)),
                     RW_OK);
    /* triggered without a bulk id is refused before any SQL */
    ch = (rw_chunk_change_t)RW_CHUNK_CHANGE_INIT;
    assert_int_equal(rw_chunk_transition_one(
                         f->pg, run, 0, RW_CHUNK_TRIGGERING, RW_CHUNK_TRIGGERED,
                         false, &ch, "accepted", errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    ch.bulk_id = "bulk-1";
    assert_int_equal(rw_chunk_transition_one(
                         f->pg, run, 0, RW_CHUNK_TRIGGERING, RW_CHUNK_TRIGGERED,
                         false, &ch, "accepted", errstr, sizeof(errstr)),
                     RW_OK);
    expect_str(f->pg, CHUNK_ROW, run,
               "triggered:2:rollwave x c0 a2:bulk-1:1:true:false:1");

    /* polls: a stale poll attempt neither steps nor finishes the chunk */
    assert_int_equal(
        rw_chunk_poll_step(f->pg, run, 0, 1, -1, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(
        rw_chunk_poll_step(f->pg, run, 0, 1, -1, errstr, sizeof(errstr)),
        RW_ERR_CONFLICT);
    ch = (rw_chunk_change_t)RW_CHUNK_CHANGE_INIT;
    ch.poll_attempts = 1;
    assert_int_equal(rw_chunk_transition_one(
                         f->pg, run, 0, RW_CHUNK_TRIGGERED, RW_CHUNK_DONE,
                         false, &ch, "terminal", errstr, sizeof(errstr)),
                     RW_ERR_CONFLICT);
    ch.poll_attempts = 2;
    assert_int_equal(rw_chunk_transition_one(
                         f->pg, run, 0, RW_CHUNK_TRIGGERED, RW_CHUNK_DONE,
                         false, &ch, "terminal", errstr, sizeof(errstr)),
                     RW_OK);
    expect_str(f->pg, CHUNK_ROW, run,
               "done:2:rollwave x c0 a2:bulk-1:2:true:true:1");

    /* done -> pending only on a retry; it resets the bulk and the count */
    ch = (rw_chunk_change_t)RW_CHUNK_CHANGE_INIT;
    assert_int_equal(rw_chunk_transition(f->pg, run, NULL, 0, RW_CHUNK_DONE,
                                         RW_CHUNK_PENDING, false, &ch, "retry",
                                         &moved, errstr, sizeof(errstr)),
                     RW_ERR_STATE);
    ch.replay_id = 7;
    assert_int_equal(rw_chunk_transition(f->pg, run, NULL, 0, RW_CHUNK_DONE,
                                         RW_CHUNK_PENDING, true, &ch, "retry",
                                         &moved, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(moved, 1); /* chunk 1 is pending: not moved */
    expect_str(f->pg, CHUNK_ROW, run, "pending:2:-:-:0:false:false:0");
    expect_str(f->pg,
               "SELECT replay_id::text FROM run_chunks WHERE run_id = $1"
               " AND chunk = 0",
               run, "7");

    /* every move, and only the moves, left an audit row */
    assert_int_equal(chunk_audit(f, run), 6);
    expect_str(f->pg,
               "SELECT string_agg(from_state || '>' || to_state, ','"
               " ORDER BY id) FROM chunk_transitions WHERE run_id = $1",
               run,
               "pending>triggering,triggering>pending,pending>triggering,"
               "triggering>triggered,triggered>done,done>pending");
}

/*
 * Entering triggering stamps sent_at at the statement's own time, not the
 * transaction's start: the claim commits right before the send, and the
 * sweep's settle window counts from the stamp.
 */
static void test_chunk_triggering_stamps_sent_at(void **state)
{
    fixture_t *f = *state;
    long long run = make_run(f, "running");
    rw_chunk_change_t ch = RW_CHUNK_CHANGE_INIT;
    char errstr[512] = "";
    char *late = NULL;

    make_chunk(f, run, 0);
    ch.attempt = 1;
    ch.bulk_name = "rollwave x c0 a1";
    assert_int_equal(rw_pg_begin(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_exec(f->pg, "SELECT pg_sleep(0.05)", 0, NULL, NULL,
                                errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_chunk_transition_one(f->pg, run, 0, RW_CHUNK_PENDING,
                                             RW_CHUNK_TRIGGERING, false, &ch,
                                             "claimed", errstr, sizeof(errstr)),
                     RW_OK);
    late = q_str(f->pg,
                 "SELECT (sent_at >= now() + interval '40 milliseconds')::text"
                 " FROM run_chunks WHERE run_id = $1 AND chunk = 0",
                 run);
    assert_string_equal(late, "true");
    assert_int_equal(rw_pg_commit(f->pg, errstr, sizeof(errstr)), RW_OK);
    free(late);
}

/* One statement with one bigint parameter, for the set-up below. */
static void x1(fixture_t *f, const char *sql, long long arg)
{
    char a[24];
    const char *params[1] = {a};

    snprintf(a, sizeof(a), "%lld", arg);
    PQclear(q(f->pg, sql, 1, params));
}

/*
 * A chunk's end: nothing moves while the run and its wave go on without
 * a threshold crossed; a failure recorded in another chunk and never
 * offered (its poller died after the commit) is applied at this chunk's
 * end although other chunks are open (the run pauses); the last chunk
 * finalizes the run, once.
 */
static void test_chunk_ended(void **state)
{
    fixture_t *f = *state;
    long long run = make_run(f, "running");
    long long done_run = make_run(f, "running");
    long long t0;
    bool finalized = true;
    char errstr[512] = "";

    assert_false(rw_progress_has_thresholds(NULL));
    assert_false(rw_progress_has_thresholds("{\"bake\":\"0\"}"));
    assert_true(rw_progress_has_thresholds("{\"max_failures_run\":\"5%\"}"));
    assert_true(rw_progress_has_thresholds("not a strategy"));
    x1(f,
       "UPDATE deployment_runs SET current_wave = 1, strategy ="
       " '{\"waves\":[\"100%\"],\"bake\":\"0\",\"max_failures_wave\":\"0\"}'"
       " WHERE id = $1",
       run);
    x1(f,
       "INSERT INTO run_waves (run_id, wave, first_chunk, last_chunk,"
       " target_count, state) VALUES ($1, 1, 0, 1, 2, 'running')",
       run);
    make_chunk(f, run, 0);
    make_chunk(f, run, 1);
    x1(f,
       "UPDATE run_chunks SET state = 'done' WHERE run_id = $1 AND chunk = 0",
       run);
    /* chunk 1 stays pending: open */
    make_instance(f); /* chunk 1's, below */
    t0 = make_target(f, run, make_instance(f), "succeeded");
    x1(f,
       "INSERT INTO run_targets (run_id, instance_id, chunk, state)"
       " SELECT $1, id, 1, 'pending' FROM app_instances"
       " ORDER BY id DESC OFFSET 1 LIMIT 1",
       run);

    assert_int_equal(
        rw_progress_chunk_ended(f->pg, run, &finalized, errstr, sizeof(errstr)),
        RW_OK);
    assert_false(finalized);
    expect_str(f->pg, RUN_STATUS, run, "running");
    assert_int_equal(transitions_of(f, run), 0);

    /* chunk 0's target failed, never offered: the next chunk end (here
     * chunk 0's again) applies the wave's threshold (0) */
    x1(f, "UPDATE run_targets SET state = 'failed' WHERE id = $1", t0);
    assert_int_equal(
        rw_progress_chunk_ended(f->pg, run, &finalized, errstr, sizeof(errstr)),
        RW_OK);
    assert_false(finalized);
    expect_str(f->pg, RUN_STATUS, run, "paused");

    /* a run's last chunk ends it, once */
    make_chunk(f, done_run, 0);
    x1(f, "UPDATE run_chunks SET state = 'done' WHERE run_id = $1", done_run);
    make_target(f, done_run, make_instance(f), "succeeded");
    assert_int_equal(rw_progress_chunk_ended(f->pg, done_run, &finalized,
                                             errstr, sizeof(errstr)),
                     RW_OK);
    assert_true(finalized);
    expect_str(f->pg, RUN_STATUS, done_run, "completed");
    assert_int_equal(rw_progress_chunk_ended(f->pg, done_run, &finalized,
                                             errstr, sizeof(errstr)),
                     RW_OK);
    assert_false(finalized);
}

static void test_target_claim_given_back_takes_attempt_back(void **state)
{
    fixture_t *f = *state;
    long long run = make_run(f, "running");
    long long t = make_target(f, run, make_instance(f), "pending");
    size_t n = 0;
    char errstr[512] = "";

    assert_int_equal(rw_target_transition(f->pg, run, &t, 1, RW_TARGET_PENDING,
                                          RW_TARGET_CLAIMED, false, NULL, NULL,
                                          &n, errstr, sizeof(errstr)),
                     RW_OK);
    expect_str(f->pg, "SELECT attempt::text FROM run_targets WHERE id = $1", t,
               "1");
    assert_int_equal(rw_target_transition(f->pg, run, &t, 1, RW_TARGET_CLAIMED,
                                          RW_TARGET_PENDING, false, NULL, NULL,
                                          &n, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(n, 1);
    expect_str(f->pg,
               "SELECT state || ':' || attempt || ':' ||"
               " (claimed_at IS NULL)::text FROM run_targets WHERE id = $1",
               t, "pending:0:true");
}

/*
 * The health gate's columns go through rw_target_apply: written only by an
 * update that carries them, left alone by one that does not (and an
 * update that changes nothing writes no row), and cleared when a retry
 * claims the target again.
 */
static void test_target_apply_health_columns(void **state)
{
    fixture_t *f = *state;
    long long run = make_run(f, "running");
    long long t = make_target(f, run, make_instance(f), "triggered");
    rw_target_update_t u;
    size_t n = 0;
    char errstr[512] = "";
    const char *cols = "SELECT state || ':' || lagoon_status || ':' ||"
                       " health_attempts || ':' ||"
                       " COALESCE(route, '-') || ':' ||"
                       " COALESCE(health_error, '-') || ':' ||"
                       " CASE WHEN health_next_at IS NULL THEN 'none'"
                       "      WHEN health_next_at > now() + interval '50 s'"
                       "       AND health_next_at <= now() + interval '60 s'"
                       "      THEN 'in60s' ELSE 'other' END"
                       " FROM run_targets WHERE id = $1";

    /* a completed build awaiting its first check */
    memset(&u, 0, sizeof(u));
    u.target_id = t;
    u.from = RW_TARGET_TRIGGERED;
    u.to = RW_TARGET_DEPLOYING;
    u.lagoon_status = "complete";
    u.deployment_name = "lagoon-build-a";
    u.health = true;
    u.route = "https://r.example";
    u.health_attempts = 1;
    u.health_next_ms = 60000;
    u.health_error = "HTTP 503";
    assert_int_equal(
        rw_target_apply(f->pg, run, &u, 1, &n, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(n, 1);
    expect_str(f->pg, cols, t,
               "deploying:complete:1:https://r.example:HTTP 503:in60s");

    /* nothing to say about it (no row, no check due): not written */
    memset(&u, 0, sizeof(u));
    u.target_id = t;
    u.from = u.to = RW_TARGET_DEPLOYING;
    assert_int_equal(
        rw_target_apply(f->pg, run, &u, 1, &n, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(n, 0);
    expect_str(f->pg, cols, t,
               "deploying:complete:1:https://r.example:HTTP 503:in60s");

    /* the last attempt fails it; the route stays when none is given */
    u.to = RW_TARGET_FAILED;
    u.error = "health check: HTTP 503 after 2 attempts (https://r.example)";
    u.health = true;
    u.health_attempts = 2;
    u.health_error = "HTTP 503";
    assert_int_equal(
        rw_target_apply(f->pg, run, &u, 1, &n, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(n, 1);
    expect_str(f->pg, cols, t,
               "failed:complete:2:https://r.example:HTTP 503:none");
    expect_str(f->pg, "SELECT error FROM run_targets WHERE id = $1", t,
               "health check: HTTP 503 after 2 attempts (https://r.example)");

    /* a retry's claim starts the gate afresh */
    assert_int_equal(rw_target_transition(f->pg, run, &t, 1, RW_TARGET_FAILED,
                                          RW_TARGET_PENDING, true, NULL, NULL,
                                          &n, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_target_transition(f->pg, run, &t, 1, RW_TARGET_PENDING,
                                          RW_TARGET_CLAIMED, false, NULL, NULL,
                                          &n, errstr, sizeof(errstr)),
                     RW_OK);
    expect_str(f->pg, cols, t, "claimed:complete:0:-:-:none");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_legal_transitions_recorded),
        cmocka_unit_test(test_run_illegal_transition_writes_nothing),
        cmocka_unit_test(test_run_stale_from_conflicts),
        cmocka_unit_test(test_target_batch_moves_only_rows_in_from),
        cmocka_unit_test(test_target_illegal_and_retry_edges),
        cmocka_unit_test(test_target_in_flight_elsewhere_is_unique_violation),
        cmocka_unit_test(test_chunk_lifecycle_audited_and_guarded),
        cmocka_unit_test(test_chunk_triggering_stamps_sent_at),
        cmocka_unit_test(test_chunk_ended),
        cmocka_unit_test(test_target_claim_given_back_takes_attempt_back),
        cmocka_unit_test(test_target_apply_health_columns),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
