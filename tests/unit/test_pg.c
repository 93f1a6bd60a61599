/*
 * test_pg: the parts of rw_pg that need no server: array literals, SQLSTATE
 * mapping, column access on client-built results, DSN secrecy on parse
 * errors. The server-facing parts are in tests/integration/test_pg.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_pg.h"

static void test_array_empty(void **state)
{
    rw_pg_array_t a;
    (void)state;

    rw_pg_array_init(&a);
    assert_string_equal(rw_pg_array_finish(&a), "{}");
    assert_int_equal(a.n, 0);
    rw_pg_array_free(&a);
}

static void test_array_integers(void **state)
{
    rw_pg_array_t a;
    (void)state;

    rw_pg_array_init(&a);
    assert_int_equal(rw_pg_array_add_ll(&a, 1), RW_OK);
    assert_int_equal(rw_pg_array_add_ll(&a, -2), RW_OK);
    assert_int_equal(rw_pg_array_add_ll(&a, 9223372036854775807LL), RW_OK);
    assert_int_equal(rw_pg_array_add_ll(&a, 0), RW_OK);
    assert_string_equal(rw_pg_array_finish(&a), "{1,-2,9223372036854775807,0}");
    assert_int_equal(a.n, 4);
    rw_pg_array_free(&a);
}

static void test_array_text_quoting(void **state)
{
    rw_pg_array_t a;
    (void)state;

    rw_pg_array_init(&a);
    assert_int_equal(rw_pg_array_add_str(&a, "plain"), RW_OK);
    assert_int_equal(rw_pg_array_add_str(&a, "say \"hi\""), RW_OK);
    assert_int_equal(rw_pg_array_add_str(&a, "back\\slash"), RW_OK);
    assert_int_equal(rw_pg_array_add_str(&a, "a,b"), RW_OK);
    assert_int_equal(rw_pg_array_add_str(&a, "{x}"), RW_OK);
    assert_int_equal(rw_pg_array_add_str(&a, " spaced "), RW_OK);
    assert_int_equal(rw_pg_array_add_str(&a, ""), RW_OK);
    assert_string_equal(rw_pg_array_finish(&a),
                        "{\"plain\",\"say \\\"hi\\\"\",\"back\\\\slash\","
                        "\"a,b\",\"{x}\",\" spaced \",\"\"}");
    rw_pg_array_free(&a);
}

static void test_array_null_versus_null_text(void **state)
{
    rw_pg_array_t a;
    (void)state;

    rw_pg_array_init(&a);
    assert_int_equal(rw_pg_array_add_str(&a, NULL), RW_OK);
    assert_int_equal(rw_pg_array_add_str(&a, "NULL"), RW_OK);
    assert_int_equal(rw_pg_array_add_str(&a, NULL), RW_OK);
    assert_string_equal(rw_pg_array_finish(&a), "{NULL,\"NULL\",NULL}");
    assert_int_equal(a.n, 3);
    rw_pg_array_free(&a);
}

static void test_array_only_quote_and_backslash(void **state)
{
    rw_pg_array_t a;
    (void)state;

    rw_pg_array_init(&a);
    assert_int_equal(rw_pg_array_add_str(&a, "\""), RW_OK);
    assert_int_equal(rw_pg_array_add_str(&a, "\\"), RW_OK);
    assert_int_equal(rw_pg_array_add_str(&a, "\\\""), RW_OK);
    assert_string_equal(rw_pg_array_finish(&a),
                        "{\"\\\"\",\"\\\\\",\"\\\\\\\"\"}");
    rw_pg_array_free(&a);
}

static void test_array_add_after_finish(void **state)
{
    rw_pg_array_t a;
    (void)state;

    rw_pg_array_init(&a);
    assert_int_equal(rw_pg_array_add_ll(&a, 7), RW_OK);
    assert_string_equal(rw_pg_array_finish(&a), "{7}");
    assert_int_equal(rw_pg_array_add_ll(&a, 8), RW_OK);
    assert_string_equal(rw_pg_array_finish(&a), "{7,8}");
    rw_pg_array_free(&a);
    /* a freed builder is empty again */
    assert_null(a.buf);
    assert_int_equal(a.n, 0);
    assert_string_equal(rw_pg_array_finish(&a), "{}");
    rw_pg_array_free(&a);
}

static void test_array_grows(void **state)
{
    rw_pg_array_t a;
    const char *lit;
    long long sum = 0;
    int count = 0;
    (void)state;

    rw_pg_array_init(&a);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(rw_pg_array_add_ll(&a, 100000 + i), RW_OK);
    lit = rw_pg_array_finish(&a);
    assert_non_null(lit);
    assert_int_equal(lit[0], '{');
    assert_int_equal(lit[strlen(lit) - 1], '}');
    /* every element present, in order, nothing lost at a growth step */
    for (const char *p = lit + 1; *p && *p != '}'; count++) {
        char *end;
        long long v = strtoll(p, &end, 10);
        assert_int_equal(v, 100000 + count);
        sum += v;
        p = *end == ',' ? end + 1 : end;
    }
    assert_int_equal(count, 10000);
    assert_int_equal(sum, 10000LL * 100000 + 9999LL * 10000 / 2);
    rw_pg_array_free(&a);
}

static void test_sqlstate_mapping(void **state)
{
    (void)state;
    assert_int_equal(rw_pg_classify_sqlstate("08006"), RW_ERR_PG_CONN);
    assert_int_equal(rw_pg_classify_sqlstate("08001"), RW_ERR_PG_CONN);
    assert_int_equal(rw_pg_classify_sqlstate("08P01"), RW_ERR_PG_CONN);
    assert_int_equal(rw_pg_classify_sqlstate("57P01"), RW_ERR_PG_CONN);
    assert_int_equal(rw_pg_classify_sqlstate("57P02"), RW_ERR_PG_CONN);
    assert_int_equal(rw_pg_classify_sqlstate("57P03"), RW_ERR_PG_CONN);
    assert_int_equal(rw_pg_classify_sqlstate("40001"), RW_ERR_PG_RETRY);
    assert_int_equal(rw_pg_classify_sqlstate("40P01"), RW_ERR_PG_RETRY);
    assert_int_equal(rw_pg_classify_sqlstate("23505"), RW_ERR_PG_UNIQUE);
    assert_int_equal(rw_pg_classify_sqlstate("23503"), RW_ERR_PG_QUERY);
    assert_int_equal(rw_pg_classify_sqlstate("23514"), RW_ERR_PG_QUERY);
    assert_int_equal(rw_pg_classify_sqlstate("40002"), RW_ERR_PG_QUERY);
    assert_int_equal(rw_pg_classify_sqlstate("42601"), RW_ERR_PG_QUERY);
    assert_int_equal(rw_pg_classify_sqlstate(NULL), RW_ERR_PG_QUERY);
    assert_int_equal(rw_pg_classify_sqlstate(""), RW_ERR_PG_QUERY);
    assert_int_equal(rw_pg_classify_sqlstate("08"), RW_ERR_PG_QUERY);
    assert_int_equal(rw_pg_classify_sqlstate("530000"), RW_ERR_PG_QUERY);
}

/*
 * Transient server states: a failover's read-only primary, resources
 * running out, a cancelled statement, a lock timeout. Each must be
 * retried, never dead-lettered.
 */
static void test_sqlstate_unavailable(void **state)
{
    static const char *const unavailable[] = {
        "25006", /* read_only_sql_transaction */
        "53000", /* insufficient_resources */
        "53100", /* disk_full */
        "53200", /* out_of_memory */
        "53300", /* too_many_connections */
        "53400", /* configuration_limit_exceeded */
        "57014", /* query_canceled */
        "55P03", /* lock_not_available */
    };
    /* neighbours of the listed codes that mean a wrong statement */
    static const char *const permanent[] = {
        "25001", "25P02", "55000", "55006", "57000",
        "57P04", "54000", "52000", "22012", "42P01",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(unavailable) / sizeof(*unavailable); i++) {
        rw_err_t e = rw_pg_classify_sqlstate(unavailable[i]);

        if (e != RW_ERR_PG_UNAVAILABLE)
            fail_msg("%s -> %s", unavailable[i], rw_err_name(e));
        assert_true(rw_err_is_retriable(e));
        assert_int_equal(rw_err_class(e, RW_OP_SEND), RW_ERR_CLASS_RETRY);
    }
    for (size_t i = 0; i < sizeof(permanent) / sizeof(*permanent); i++) {
        rw_err_t e = rw_pg_classify_sqlstate(permanent[i]);

        if (e != RW_ERR_PG_QUERY)
            fail_msg("%s -> %s", permanent[i], rw_err_name(e));
        assert_false(rw_err_is_retriable(e));
    }
    /* the other retriable codes keep their own, more precise codes */
    assert_true(rw_err_is_retriable(rw_pg_classify_sqlstate("08006")));
    assert_true(rw_err_is_retriable(rw_pg_classify_sqlstate("57P01")));
    assert_true(rw_err_is_retriable(rw_pg_classify_sqlstate("40P01")));
}

/* A two-row result built client-side: id, name, flag, note. */
static PGresult *make_result(void)
{
    PGresAttDesc attrs[4];
    const char *names[4] = {"id", "name", "flag", "note"};
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);

    assert_non_null(res);
    memset(attrs, 0, sizeof(attrs));
    for (int i = 0; i < 4; i++) {
        attrs[i].name = (char *)names[i];
        attrs[i].typlen = -1;
        attrs[i].atttypmod = -1;
    }
    assert_true(PQsetResultAttrs(res, 4, attrs));
    assert_true(PQsetvalue(res, 0, 0, "42", 2));
    assert_true(PQsetvalue(res, 0, 1, "alpha", 5));
    assert_true(PQsetvalue(res, 0, 2, "t", 1));
    assert_true(PQsetvalue(res, 0, 3, NULL, -1));
    assert_true(PQsetvalue(res, 1, 0, "x9", 2));
    assert_true(PQsetvalue(res, 1, 1, "", 0));
    assert_true(PQsetvalue(res, 1, 2, "f", 1));
    assert_true(PQsetvalue(res, 1, 3, "-7", 2));
    return res;
}

static void test_column_access(void **state)
{
    PGresult *res = make_result();
    (void)state;

    assert_int_equal(rw_pg_col(res, "id"), 0);
    assert_int_equal(rw_pg_col(res, "note"), 3);
    assert_int_equal(rw_pg_col(res, "missing"), -1);

    assert_string_equal(rw_pg_str(res, 0, "name"), "alpha");
    assert_string_equal(rw_pg_str(res, 1, "name"), "");
    assert_null(rw_pg_str(res, 0, "note"));
    assert_null(rw_pg_str(res, 0, "missing"));
    assert_null(rw_pg_str(res, 2, "name"));
    assert_null(rw_pg_str(res, -1, "name"));

    assert_int_equal(rw_pg_ll(res, 0, "id", -1), 42);
    assert_int_equal(rw_pg_ll(res, 1, "note", 0), -7);
    assert_int_equal(rw_pg_ll(res, 0, "note", 99), 99);
    assert_int_equal(rw_pg_ll(res, 1, "id", 99), 99);
    assert_int_equal(rw_pg_ll(res, 1, "name", 5), 5);
    assert_int_equal(rw_pg_ll(res, 0, "missing", 3), 3);

    assert_int_equal(rw_pg_bool(res, 0, "flag", -1), 1);
    assert_int_equal(rw_pg_bool(res, 1, "flag", -1), 0);
    assert_int_equal(rw_pg_bool(res, 0, "note", -1), -1);
    assert_int_equal(rw_pg_bool(res, 0, "name", -1), -1);
    PQclear(res);
}

static void test_result_err_without_server(void **state)
{
    PGresult *ok = PQmakeEmptyPGresult(NULL, PGRES_COMMAND_OK);
    PGresult *copy = PQmakeEmptyPGresult(NULL, PGRES_COPY_IN);
    char errstr[256] = "";
    (void)state;

    assert_int_equal(rw_pg_result_err(NULL, ok, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_pg_result_err(NULL, copy, errstr, sizeof(errstr)),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "PGRES_COPY_IN"));
    assert_int_equal(rw_pg_result_err(NULL, NULL, errstr, sizeof(errstr)),
                     RW_ERR_PG_QUERY);
    PQclear(ok);
    PQclear(copy);
}

static void test_bad_dsn_never_echoes_secret(void **state)
{
    /* any non-NULL value: rw_pg_new must reset it on failure */
    rw_pg_t *pg = (rw_pg_t *)&pg;
    char errstr[512] = "";
    (void)state;

    /* libpq's own parse errors would quote the bad fragment */
    assert_int_equal(rw_pg_new(&pg, "host=x password=Hunter2Secret junk",
                               errstr, sizeof(errstr)),
                     RW_ERR_CONFIG);
    assert_null(pg);
    assert_true(strlen(errstr) > 0);
    assert_null(strstr(errstr, "Hunter2"));
    assert_null(strstr(errstr, "junk"));

    assert_int_equal(rw_pg_new(&pg, "postgresql://u:Hunter2Secret@h/db?x=1",
                               errstr, sizeof(errstr)),
                     RW_ERR_CONFIG);
    assert_null(pg);
    assert_null(strstr(errstr, "Hunter2"));

    /* parses, then fails inside libpq's connect: still no secret */
    assert_int_equal(rw_pg_new(&pg, "postgresql://u:Hunter2Secret@h:x/db",
                               errstr, sizeof(errstr)),
                     RW_ERR_PG_CONN);
    assert_null(pg);
    assert_true(strlen(errstr) > 0);
    assert_null(strstr(errstr, "Hunter2"));
}

static void test_null_handles(void **state)
{
    (void)state;
    rw_pg_destroy(NULL);
    assert_int_equal(rw_pg_rollback(NULL, NULL, 0), RW_OK);
    assert_null(rw_pg_conn(NULL));
    assert_int_equal(rw_pg_in_tx(NULL), 0);
    assert_int_equal(rw_pg_exec(NULL, "SELECT 1", 0, NULL, NULL, NULL, 0),
                     RW_ERR_INVALID_ARG);
    assert_int_equal(rw_pg_new(NULL, "dbname=x", NULL, 0), RW_ERR_INVALID_ARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_array_empty),
        cmocka_unit_test(test_array_integers),
        cmocka_unit_test(test_array_text_quoting),
        cmocka_unit_test(test_array_null_versus_null_text),
        cmocka_unit_test(test_array_only_quote_and_backslash),
        cmocka_unit_test(test_array_add_after_finish),
        cmocka_unit_test(test_array_grows),
        cmocka_unit_test(test_sqlstate_mapping),
        cmocka_unit_test(test_sqlstate_unavailable),
        cmocka_unit_test(test_column_access),
        cmocka_unit_test(test_result_err_without_server),
        cmocka_unit_test(test_bad_dsn_never_echoes_secret),
        cmocka_unit_test(test_null_handles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
