/*
 * test_pg: rw_pg against a real Postgres (ROLLWAVE_PG_DSN): parameters and
 * array literals round-trip hostile text, large unnest batches, SQLSTATE
 * mapping of real server errors (transient states retriable), transactions,
 * reconnect after the backend is killed, advisory locks. Every test works in
 * its own fresh database.
 */
#include "rw_itest_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rw_pg.h"

typedef struct fixture {
    char dsn[1024];
    rw_pg_t *pg;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    rw_itest_pg_fresh_db(f->dsn, sizeof(f->dsn));
    f->pg = rw_itest_pg_connect(f->dsn);
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

static const char *const hostile[] = {
    "plain",
    "it's",
    "'; DROP TABLE store_apps; --",
    "double \"quoted\"",
    "back\\slash \\\\ and \\\"",
    "{braces},commas, and spaces ",
    "  leading and trailing  ",
    "NULL",
    "",
    "$1 $2 ::text",
    "line\nbreak\ttab\rcr",
    "unicode \xc3\xa9\xe2\x82\xac \xf0\x9f\x9a\x80",
    "E'\\x00'",
};
#define N_HOSTILE (sizeof(hostile) / sizeof(hostile[0]))

static void test_params_round_trip(void **state)
{
    fixture_t *f = *state;
    char errstr[512];

    for (size_t i = 0; i < N_HOSTILE; i++) {
        PGresult *res = NULL;
        const char *params[2] = {hostile[i], NULL};
        rw_err_t err = rw_pg_exec(
            f->pg, "SELECT $1::text AS v, $2::text AS n, length($1) AS len", 2,
            params, &res, errstr, sizeof(errstr));
        assert_int_equal(err, RW_OK);
        assert_string_equal(rw_pg_str(res, 0, "v"), hostile[i]);
        assert_null(rw_pg_str(res, 0, "n"));
        PQclear(res);
    }
    /* and through a table, the way the pipeline stores names */
    for (size_t i = 0; i < N_HOSTILE; i++) {
        PGresult *res = NULL;
        const char *params[1] = {hostile[i]};
        assert_int_equal(rw_pg_exec(f->pg,
                                    "INSERT INTO store_apps (name) VALUES ($1)"
                                    " RETURNING name",
                                    1, params, &res, errstr, sizeof(errstr)),
                         RW_OK);
        assert_string_equal(rw_pg_str(res, 0, "name"), hostile[i]);
        PQclear(res);
    }
}

static void test_text_array_round_trip(void **state)
{
    fixture_t *f = *state;
    rw_pg_array_t a;
    PGresult *res = NULL;
    const char *params[1];
    char errstr[512];

    rw_pg_array_init(&a);
    for (size_t i = 0; i < N_HOSTILE; i++)
        assert_int_equal(rw_pg_array_add_str(&a, hostile[i]), RW_OK);
    assert_int_equal(rw_pg_array_add_str(&a, NULL), RW_OK);
    params[0] = rw_pg_array_finish(&a);
    assert_non_null(params[0]);
    assert_int_equal(rw_pg_exec(f->pg,
                                "SELECT u.v, u.i FROM unnest($1::text[])"
                                " WITH ORDINALITY AS u(v, i) ORDER BY u.i",
                                1, params, &res, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(PQntuples(res), N_HOSTILE + 1);
    for (size_t i = 0; i < N_HOSTILE; i++)
        assert_string_equal(rw_pg_str(res, (int)i, "v"), hostile[i]);
    assert_null(rw_pg_str(res, (int)N_HOSTILE, "v"));
    PQclear(res);

    /* the empty array is a valid, empty batch */
    rw_pg_array_free(&a);
    rw_pg_array_init(&a);
    params[0] = rw_pg_array_finish(&a);
    assert_int_equal(rw_pg_exec(f->pg,
                                "SELECT count(*) AS n FROM unnest($1::text[])",
                                1, params, &res, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_ll(res, 0, "n", -1), 0);
    PQclear(res);
    rw_pg_array_free(&a);
}

static void test_batch_of_10000_through_unnest(void **state)
{
    fixture_t *f = *state;
    rw_pg_array_t names, ids, renamed;
    PGresult *res = NULL;
    const char *params[2];
    char buf[64], errstr[512];
    int n;

    rw_pg_array_init(&names);
    for (int i = 0; i < 10000; i++) {
        snprintf(buf, sizeof(buf), "app \"%d\", {x}", i);
        assert_int_equal(rw_pg_array_add_str(&names, buf), RW_OK);
    }
    params[0] = rw_pg_array_finish(&names);
    assert_int_equal(rw_pg_exec(f->pg,
                                "INSERT INTO store_apps (name)"
                                " SELECT n FROM unnest($1::text[]) AS n"
                                " RETURNING id",
                                1, params, &res, errstr, sizeof(errstr)),
                     RW_OK);
    n = PQntuples(res);
    assert_int_equal(n, 10000);

    /* one UPDATE over two parallel arrays, the shape the pipeline uses */
    rw_pg_array_init(&ids);
    rw_pg_array_init(&renamed);
    for (int i = 0; i < n; i++) {
        assert_int_equal(rw_pg_array_add_ll(&ids, rw_pg_ll(res, i, "id", -1)),
                         RW_OK);
        snprintf(buf, sizeof(buf), "renamed %d", i);
        assert_int_equal(rw_pg_array_add_str(&renamed, i % 2 ? buf : NULL),
                         RW_OK);
    }
    PQclear(res);
    params[0] = rw_pg_array_finish(&ids);
    params[1] = rw_pg_array_finish(&renamed);
    assert_int_equal(
        rw_pg_exec(f->pg,
                   "UPDATE store_apps s SET name = COALESCE(u.name, '-')"
                   " FROM unnest($1::bigint[], $2::text[]) AS u(id, name)"
                   " WHERE s.id = u.id",
                   2, params, &res, errstr, sizeof(errstr)),
        RW_OK);
    assert_string_equal(PQcmdTuples(res), "10000");
    PQclear(res);
    assert_int_equal(rw_pg_exec(f->pg,
                                "SELECT count(*) FILTER (WHERE name = '-')"
                                " AS dashes, count(*) FILTER (WHERE name"
                                " LIKE 'renamed %') AS renamed"
                                " FROM store_apps",
                                0, NULL, &res, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_ll(res, 0, "dashes", -1), 5000);
    assert_int_equal(rw_pg_ll(res, 0, "renamed", -1), 5000);
    PQclear(res);
    rw_pg_array_free(&names);
    rw_pg_array_free(&ids);
    rw_pg_array_free(&renamed);
}

/* Raise a given SQLSTATE from the server. */
static rw_err_t raise_state(rw_pg_t *pg, const char *code, char *errstr,
                            size_t errlen)
{
    const char *params[1] = {code};
    rw_err_t err;

    err = rw_pg_exec(pg,
                     "CREATE OR REPLACE FUNCTION pg_test_raise(code text)"
                     " RETURNS void LANGUAGE plpgsql AS $$ BEGIN"
                     " RAISE EXCEPTION 'raised %', code USING ERRCODE = code;"
                     " END $$",
                     0, NULL, NULL, errstr, errlen);
    if (err)
        return err;
    return rw_pg_exec(pg, "SELECT pg_test_raise($1)", 1, params, NULL, errstr,
                      errlen);
}

static void test_server_errors_are_mapped(void **state)
{
    fixture_t *f = *state;
    PGresult *res = (PGresult *)&res;
    char errstr[512];

    assert_int_equal(
        rw_pg_exec(f->pg, "SELEC 1", 0, NULL, &res, errstr, sizeof(errstr)),
        RW_ERR_PG_QUERY);
    assert_null(res);
    assert_non_null(strstr(errstr, "42601"));
    assert_non_null(strstr(errstr, "syntax error"));

    assert_int_equal(raise_state(f->pg, "40001", errstr, sizeof(errstr)),
                     RW_ERR_PG_RETRY);
    assert_non_null(strstr(errstr, "raised 40001"));
    assert_int_equal(raise_state(f->pg, "40P01", errstr, sizeof(errstr)),
                     RW_ERR_PG_RETRY);
    assert_int_equal(raise_state(f->pg, "23503", errstr, sizeof(errstr)),
                     RW_ERR_PG_QUERY);

    assert_int_equal(rw_pg_exec(f->pg,
                                "INSERT INTO schema_migrations (name)"
                                " VALUES ('0001_core')",
                                0, NULL, NULL, errstr, sizeof(errstr)),
                     RW_ERR_PG_UNIQUE);
    assert_non_null(strstr(errstr, "23505"));
    assert_non_null(strstr(errstr, "0001_core"));
}

static void test_transactions(void **state)
{
    fixture_t *f = *state;
    PGresult *res = NULL;
    const char *params[1] = {"tx-app"};
    char errstr[512];

    /* rollback with nothing open is a no-op */
    assert_int_equal(rw_pg_rollback(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_commit(f->pg, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);

    /* rolled back work is gone */
    assert_int_equal(rw_pg_begin(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_true(rw_pg_in_tx(f->pg));
    assert_int_equal(rw_pg_begin(f->pg, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_int_equal(rw_pg_exec(f->pg,
                                "INSERT INTO store_apps (name) VALUES ($1)", 1,
                                params, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_rollback(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_false(rw_pg_in_tx(f->pg));

    /* committed work stays */
    assert_int_equal(rw_pg_begin(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_exec(f->pg,
                                "INSERT INTO store_apps (name) VALUES ($1)", 1,
                                params, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_commit(f->pg, errstr, sizeof(errstr)), RW_OK);

    /* a failed statement poisons the transaction: COMMIT must say so */
    assert_int_equal(rw_pg_begin(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_exec(f->pg,
                                "INSERT INTO store_apps (name) VALUES ($1)", 1,
                                params, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(
        rw_pg_exec(f->pg, "SELECT 1/0", 0, NULL, NULL, errstr, sizeof(errstr)),
        RW_ERR_PG_QUERY);
    assert_int_equal(rw_pg_commit(f->pg, errstr, sizeof(errstr)),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "rolled back"));
    assert_false(rw_pg_in_tx(f->pg));

    assert_int_equal(rw_pg_exec(f->pg,
                                "SELECT count(*) AS n FROM store_apps"
                                " WHERE name = $1",
                                1, params, &res, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_ll(res, 0, "n", -1), 1);
    PQclear(res);
}

static int backend_pid(rw_pg_t *pg)
{
    PGresult *res = NULL;
    char errstr[512];
    int pid;

    assert_int_equal(rw_pg_exec(pg, "SELECT pg_backend_pid() AS pid", 0, NULL,
                                &res, errstr, sizeof(errstr)),
                     RW_OK);
    pid = (int)rw_pg_ll(res, 0, "pid", -1);
    PQclear(res);
    assert_true(pid > 0);
    return pid;
}

/* Terminate backend pid from another connection and wait until it is gone. */
static void kill_backend(const char *dsn, int pid)
{
    rw_pg_t *admin = rw_itest_pg_connect(dsn);
    PGresult *res = NULL;
    char pidbuf[16], errstr[512];
    const char *params[1] = {pidbuf};
    long long deadline = rw_itest_now_ms() + 10000;

    snprintf(pidbuf, sizeof(pidbuf), "%d", pid);
    assert_int_equal(rw_pg_exec(admin,
                                "SELECT pg_terminate_backend($1::int) AS ok", 1,
                                params, &res, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_bool(res, 0, "ok", 0), 1);
    PQclear(res);
    for (;;) {
        assert_int_equal(rw_pg_exec(admin,
                                    "SELECT count(*) AS n FROM pg_stat_activity"
                                    " WHERE pid = $1::int",
                                    1, params, &res, errstr, sizeof(errstr)),
                         RW_OK);
        if (rw_pg_ll(res, 0, "n", -1) == 0) {
            PQclear(res);
            break;
        }
        PQclear(res);
        assert_true(rw_itest_now_ms() < deadline);
        usleep(20000);
    }
    rw_pg_destroy(admin);
}

static void test_reconnect_outside_transaction(void **state)
{
    fixture_t *f = *state;
    PGresult *res = NULL;
    char errstr[512];
    int pid = backend_pid(f->pg);

    kill_backend(f->dsn, pid);
    assert_int_equal(rw_pg_reconnects(f->pg), 0);
    assert_int_equal(rw_pg_exec(f->pg, "SELECT 41 + 1 AS v", 0, NULL, &res,
                                errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_ll(res, 0, "v", -1), 42);
    PQclear(res);
    assert_int_equal(rw_pg_reconnects(f->pg), 1);
    assert_int_not_equal(backend_pid(f->pg), pid);
}

static void test_connection_lost_inside_transaction(void **state)
{
    fixture_t *f = *state;
    PGresult *res = NULL;
    const char *params[1] = {"lost-tx"};
    char errstr[512];
    int pid;

    assert_int_equal(rw_pg_begin(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_exec(f->pg,
                                "INSERT INTO store_apps (name) VALUES ($1)", 1,
                                params, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    pid = backend_pid(f->pg);
    kill_backend(f->dsn, pid);

    /* no silent reconnect: the transaction's first statement died */
    assert_int_equal(
        rw_pg_exec(f->pg, "SELECT 1", 0, NULL, NULL, errstr, sizeof(errstr)),
        RW_ERR_PG_CONN);
    assert_true(rw_pg_in_tx(f->pg));
    assert_int_equal(
        rw_pg_exec(f->pg, "SELECT 1", 0, NULL, NULL, errstr, sizeof(errstr)),
        RW_ERR_PG_CONN);
    assert_int_equal(rw_pg_commit(f->pg, errstr, sizeof(errstr)),
                     RW_ERR_PG_CONN);
    assert_false(rw_pg_in_tx(f->pg));
    assert_int_equal(rw_pg_rollback(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_reconnects(f->pg), 0);

    /* the caller's retry of the whole transaction works */
    assert_int_equal(rw_pg_begin(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_reconnects(f->pg), 1);
    assert_int_equal(rw_pg_exec(f->pg,
                                "INSERT INTO store_apps (name) VALUES ($1)", 1,
                                params, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_commit(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_exec(f->pg,
                                "SELECT count(*) AS n FROM store_apps"
                                " WHERE name = $1",
                                1, params, &res, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_ll(res, 0, "n", -1), 1);
    PQclear(res);
}

/* How many statements this session has prepared (pg_prepared_statements). */
static long long prepared_count(rw_pg_t *pg)
{
    PGresult *res =
        PQexec(rw_pg_conn(pg), "SELECT count(*) FROM pg_prepared_statements");
    long long n;

    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    n = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return n;
}

static long long select_plus(rw_pg_t *pg, const char *v)
{
    PGresult *res = NULL;
    const char *params[1] = {v};
    char errstr[512];
    long long n;

    assert_int_equal(rw_pg_exec(pg, "SELECT $1::bigint + 1 AS v", 1, params,
                                &res, errstr, sizeof(errstr)),
                     RW_OK);
    n = rw_pg_ll(res, 0, "v", -1);
    PQclear(res);
    return n;
}

/*
 * Prepared once per session, by text: the same statement again runs by
 * name, a new text gets its own, statements without parameters are not
 * prepared, and a statement the server lost (DISCARD ALL, a pooler, a
 * reconnect) is prepared again without the caller seeing it, except
 * inside a transaction, where the failed statement aborted it.
 */
static void test_prepared_statements(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    const char *params[1] = {"x"};
    int pid;

    assert_int_equal(prepared_count(f->pg), 0);
    assert_int_equal(select_plus(f->pg, "1"), 2); /* off by default */
    assert_int_equal(prepared_count(f->pg), 0);

    rw_pg_set_prepare(f->pg, 1);
    assert_int_equal(select_plus(f->pg, "1"), 2);
    assert_int_equal(select_plus(f->pg, "41"), 42);
    assert_int_equal(prepared_count(f->pg), 1);
    assert_int_equal(
        rw_pg_exec(f->pg, "SELECT 1", 0, NULL, NULL, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(prepared_count(f->pg), 1);
    assert_int_equal(rw_pg_exec(f->pg, "SELECT length($1::text) AS n", 1,
                                params, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(prepared_count(f->pg), 2);

    /* a syntax error is the statement's own error, and is not kept */
    assert_int_equal(rw_pg_exec(f->pg, "SELEC $1::int", 1, params, NULL, errstr,
                                sizeof(errstr)),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "syntax error"));
    assert_int_equal(prepared_count(f->pg), 2);

    /* dropped under it: prepared again, outside a transaction unseen */
    PQclear(PQexec(rw_pg_conn(f->pg), "DEALLOCATE ALL"));
    assert_int_equal(prepared_count(f->pg), 0);
    assert_int_equal(select_plus(f->pg, "9"), 10);
    assert_int_equal(prepared_count(f->pg), 1);

    /* inside a transaction the statement fails, retriably (the
     * transaction is aborted; the caller's retry of it works) */
    PQclear(PQexec(rw_pg_conn(f->pg), "DEALLOCATE ALL"));
    assert_int_equal(rw_pg_begin(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_exec(f->pg, "SELECT $1::bigint + 1 AS v", 1, params,
                                NULL, errstr, sizeof(errstr)),
                     RW_ERR_PG_RETRY);
    assert_int_equal(rw_pg_rollback(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(select_plus(f->pg, "1"), 2);
    assert_int_equal(prepared_count(f->pg), 1);

    /* a schema change under a cached plan (0A000): outside a transaction
     * unseen, and the server keeps no statement the cache forgot */
    PQclear(PQexec(rw_pg_conn(f->pg), "CREATE TABLE pg_prep (a int)"));
    PQclear(PQexec(rw_pg_conn(f->pg), "INSERT INTO pg_prep VALUES (1)"));
    assert_int_equal(
        rw_pg_exec(f->pg, "SELECT * FROM pg_prep WHERE a = $1::int", 1,
                   (const char *const[]){"1"}, NULL, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(prepared_count(f->pg), 2);
    PQclear(PQexec(rw_pg_conn(f->pg), "ALTER TABLE pg_prep ADD COLUMN b int"));
    assert_int_equal(
        rw_pg_exec(f->pg, "SELECT * FROM pg_prep WHERE a = $1::int", 1,
                   (const char *const[]){"1"}, NULL, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(select_plus(f->pg, "5"), 6);
    assert_int_equal(prepared_count(f->pg), 2);

    /* a new session has none: the reconnect forgets them */
    pid = backend_pid(f->pg);
    kill_backend(f->dsn, pid);
    assert_int_equal(select_plus(f->pg, "2"), 3);
    assert_int_equal(rw_pg_reconnects(f->pg), 1);
    assert_int_equal(prepared_count(f->pg), 1);
}

/* Sequential scans of pg_replan in this transaction so far. */
static long long seq_scans(rw_pg_t *pg)
{
    PGresult *res = NULL;
    char errstr[512];
    long long n;

    assert_int_equal(rw_pg_exec(pg,
                                "SELECT COALESCE(sum(seq_scan), 0) AS n"
                                " FROM pg_stat_xact_user_tables"
                                " WHERE relname = 'pg_replan'",
                                0, NULL, &res, errstr, sizeof(errstr)),
                     RW_OK);
    n = strtoll(rw_pg_str(res, 0, "n"), NULL, 10);
    PQclear(res);
    return n;
}

/*
 * A statement run on an empty, analyzed table and prepared keeps reading
 * the whole table once it has filled (the plan cached while it was
 * empty); rw_pg_exec_replan plans it again at each call and looks the row
 * up by key. Autovacuum is off for the table, so no new statistics
 * replace the cached plan meanwhile.
 */
static void test_replan(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    const char *sql = "SELECT v FROM pg_replan WHERE id = $1::bigint";
    const char *params[1] = {"5000"};
    long long before;

    assert_int_equal(rw_pg_exec(f->pg,
                                "CREATE TABLE pg_replan (id bigint PRIMARY KEY,"
                                " v int) WITH (autovacuum_enabled = false)",
                                0, NULL, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_exec(f->pg, "ANALYZE pg_replan", 0, NULL, NULL,
                                errstr, sizeof(errstr)),
                     RW_OK);
    rw_pg_set_prepare(f->pg, 1);
    for (int i = 0; i < 8; i++)
        assert_int_equal(
            rw_pg_exec(f->pg, sql, 1, params, NULL, errstr, sizeof(errstr)),
            RW_OK);
    assert_int_equal(rw_pg_exec(f->pg,
                                "INSERT INTO pg_replan (id, v)"
                                " SELECT g, g FROM generate_series(1, 20000) g",
                                0, NULL, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_begin(f->pg, errstr, sizeof(errstr)), RW_OK);
    before = seq_scans(f->pg);
    assert_int_equal(
        rw_pg_exec(f->pg, sql, 1, params, NULL, errstr, sizeof(errstr)), RW_OK);
    /* the premise: the prepared plan still scans the table */
    assert_true(seq_scans(f->pg) > before);
    before = seq_scans(f->pg);
    assert_int_equal(
        rw_pg_exec_replan(f->pg, sql, 1, params, NULL, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(seq_scans(f->pg), before);
    assert_int_equal(rw_pg_commit(f->pg, errstr, sizeof(errstr)), RW_OK);
    /* the session's setting is as it was */
    assert_int_equal(prepared_count(f->pg), 1);
    assert_int_equal(select_plus(f->pg, "1"), 2);
    assert_int_equal(prepared_count(f->pg), 2);
}

static void test_advisory_locks(void **state)
{
    fixture_t *f = *state;
    rw_pg_t *other = rw_itest_pg_connect(f->dsn);
    char errstr[512];
    int got = -1;
    const long long key = 0x7277746573740001LL;

    assert_int_equal(
        rw_pg_try_advisory_lock(f->pg, key, &got, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(got, 1);
    assert_int_equal(
        rw_pg_try_advisory_lock(other, key, &got, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(got, 0);
    assert_int_equal(rw_pg_advisory_unlock(other, key, errstr, sizeof(errstr)),
                     RW_ERR_NOT_FOUND);
    assert_int_equal(rw_pg_advisory_unlock(f->pg, key, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(
        rw_pg_try_advisory_lock(other, key, &got, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(got, 1);
    /* a session lock dies with its session */
    rw_pg_destroy(other);
    assert_int_equal(rw_pg_advisory_lock(f->pg, key, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_advisory_unlock(f->pg, key, errstr, sizeof(errstr)),
                     RW_OK);
}

/* The password of ROLLWAVE_PG_DSN, if it has one, into out ("" if not). */
static void dsn_password(char *out, size_t len)
{
    PQconninfoOption *opts;
    char *perr = NULL;

    out[0] = '\0';
    opts = PQconninfoParse(rw_itest_env("ROLLWAVE_PG_DSN"), &perr);
    assert_non_null(opts);
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val)
            snprintf(out, len, "%s", o->val);
    PQconninfoFree(opts);
}

static void test_connect_error_hides_password(void **state)
{
    rw_pg_t *pg = NULL;
    char dsn[1200], password[256], errstr[512];
    (void)state;

    /* the real server and credentials, a database that does not exist */
    rw_itest_pg_dsn(dsn, sizeof(dsn) - 40, "rw_no_such_database");
    dsn_password(password, sizeof(password));
    if (!password[0]) {
        /* trust/peer servers ignore it; it must not surface either way */
        strcat(dsn, " password='Hunter2Secret'");
        snprintf(password, sizeof(password), "Hunter2Secret");
    }
    assert_int_equal(rw_pg_new(&pg, dsn, errstr, sizeof(errstr)),
                     RW_ERR_PG_CONN);
    assert_null(pg);
    /* the server's reason is there, the secret is not */
    assert_non_null(strstr(errstr, "rw_no_such_database"));
    assert_null(strstr(errstr, password));
}

/*
 * Server states that pass: a read-only primary (as after a failover), a
 * statement cancelled by statement_timeout, a lock not available, disk
 * full. Each is PG_UNAVAILABLE, retriable, and leaves the session usable
 * without a reconnect.
 */
static void test_transient_states_are_retriable(void **state)
{
    fixture_t *f = *state;
    const char *params[1] = {"read-only-app"};
    const char *insert = "INSERT INTO store_apps (name) VALUES ($1)";
    rw_pg_t *other = NULL;
    char errstr[512];
    rw_err_t e;

    assert_int_equal(rw_pg_exec(f->pg, "SET default_transaction_read_only = on",
                                0, NULL, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    e = rw_pg_exec(f->pg, insert, 1, params, NULL, errstr, sizeof(errstr));
    assert_int_equal(e, RW_ERR_PG_UNAVAILABLE);
    assert_true(rw_err_is_retriable(e));
    assert_non_null(strstr(errstr, "25006"));
    assert_int_equal(rw_pg_exec(f->pg,
                                "SET default_transaction_read_only = off", 0,
                                NULL, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    /* the retry succeeds once the server accepts writes again */
    assert_int_equal(
        rw_pg_exec(f->pg, insert, 1, params, NULL, errstr, sizeof(errstr)),
        RW_OK);

    /* the timeout is far below the sleep, far above a SET */
    assert_int_equal(rw_pg_exec(f->pg, "SET statement_timeout = '100ms'", 0,
                                NULL, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    e = rw_pg_exec(f->pg, "SELECT pg_sleep(30)", 0, NULL, NULL, errstr,
                   sizeof(errstr));
    assert_int_equal(e, RW_ERR_PG_UNAVAILABLE);
    assert_non_null(strstr(errstr, "57014"));
    assert_int_equal(rw_pg_exec(f->pg, "RESET statement_timeout", 0, NULL, NULL,
                                errstr, sizeof(errstr)),
                     RW_OK);

    /* another session holds the table: NOWAIT gives up at once */
    other = rw_itest_pg_connect(f->dsn);
    assert_int_equal(rw_pg_begin(other, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_exec(other,
                                "LOCK TABLE store_apps IN ACCESS EXCLUSIVE "
                                "MODE",
                                0, NULL, NULL, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_pg_begin(f->pg, errstr, sizeof(errstr)), RW_OK);
    e = rw_pg_exec(f->pg, "LOCK TABLE store_apps IN SHARE MODE NOWAIT", 0, NULL,
                   NULL, errstr, sizeof(errstr));
    assert_int_equal(e, RW_ERR_PG_UNAVAILABLE);
    assert_non_null(strstr(errstr, "55P03"));
    assert_int_equal(rw_pg_rollback(f->pg, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_rollback(other, errstr, sizeof(errstr)), RW_OK);
    rw_pg_destroy(other);

    /* class 53 through the server's own error path */
    assert_int_equal(raise_state(f->pg, "53100", errstr, sizeof(errstr)),
                     RW_ERR_PG_UNAVAILABLE);
    assert_int_equal(rw_pg_reconnects(f->pg), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_params_round_trip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_text_array_round_trip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_batch_of_10000_through_unnest,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_errors_are_mapped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transient_states_are_retriable,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_outside_transaction,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_lost_inside_transaction,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_advisory_locks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepared_statements, setup,
                                        teardown),
        cmocka_unit_test(test_connect_error_hides_password),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
