/* test_err: the error table is complete, named and classified. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "rw_err.h"

static void test_ok_is_zero(void **state)
{
    (void)state;
    assert_int_equal(RW_OK, 0);
    assert_string_equal(rw_err_name(RW_OK), "OK");
    assert_false(rw_err_is_retriable(RW_OK));
}

static void test_every_error_has_name_and_message(void **state)
{
    (void)state;
    for (int e = 0; e < RW_ERR__COUNT; e++) {
        assert_non_null(rw_err_name((rw_err_t)e));
        assert_true(strlen(rw_err_name((rw_err_t)e)) > 0);
        assert_true(strlen(rw_err_str((rw_err_t)e)) > 0);
        for (int o = 0; o < e; o++)
            assert_string_not_equal(rw_err_name((rw_err_t)e),
                                    rw_err_name((rw_err_t)o));
    }
    assert_string_equal(rw_err_name(RW_ERR__COUNT), "UNKNOWN");
    assert_string_equal(rw_err_name((rw_err_t)-1), "UNKNOWN");
}

#define P RW_ERR_CLASS_PERMANENT
#define R RW_ERR_CLASS_RETRY
#define D RW_ERR_CLASS_IN_DOUBT

/*
 * The expected class of every code, written out by hand rather than
 * generated from RW_ERR_MAP, so that a changed row in the map shows up
 * here as a deliberate edit.
 */
static const struct {
    rw_err_t err;
    rw_err_class_t on_read, on_send;
} expected[] = {
    {RW_OK, P, P},
    {RW_ERR_NOMEM, P, P},
    {RW_ERR_INVALID_ARG, P, P},
    {RW_ERR_CONFIG, P, P},
    {RW_ERR_IO, R, R},
    {RW_ERR_NOT_FOUND, P, P},
    {RW_ERR_CONFLICT, P, P},
    /* a timed-out or lost call may have been applied */
    {RW_ERR_TIMEOUT, R, D},
    {RW_ERR_SHUTDOWN, P, P},
    {RW_ERR_PG_CONN, R, D},
    {RW_ERR_PG_QUERY, P, P},
    {RW_ERR_PG_RETRY, R, R},
    {RW_ERR_PG_UNIQUE, P, P},
    /* the server refused the statement: nothing was applied */
    {RW_ERR_PG_UNAVAILABLE, R, R},
    {RW_ERR_REDIS_CONN, R, D},
    {RW_ERR_REDIS_REPLY, P, P},
    {RW_ERR_REDIS_UNAVAILABLE, R, R},
    {RW_ERR_LOCK_HELD, P, P},
    {RW_ERR_KAFKA, P, P},
    {RW_ERR_KAFKA_TRANSIENT, R, R},
    /* the request never left: safe to send again */
    {RW_ERR_LAGOON_CONNECT, R, R},
    {RW_ERR_LAGOON_NETWORK, R, D},
    {RW_ERR_LAGOON_TIMEOUT, R, D},
    {RW_ERR_LAGOON_SERVER, R, D},
    {RW_ERR_LAGOON_RATE_LIMITED, R, R},
    /* the token file is re-read: a rotation must not fail a rollout */
    {RW_ERR_LAGOON_AUTH, R, R},
    {RW_ERR_LAGOON_GRAPHQL, P, P},
    /* a 200 we cannot read may carry an accepted bulk */
    {RW_ERR_LAGOON_PROTOCOL, P, D},
    {RW_ERR_LAGOON_REJECTED, P, P},
    {RW_ERR_CODEC_JSON, P, P},
    {RW_ERR_CODEC_VERSION, P, P},
    {RW_ERR_CODEC_FIELD, P, P},
    {RW_ERR_CODEC_TOO_LARGE, P, P},
    {RW_ERR_STATE, P, P},
};

static void test_class_of_every_code(void **state)
{
    size_t n = sizeof(expected) / sizeof(*expected);
    int seen[RW_ERR__COUNT] = {0};

    (void)state;
    /* every code listed exactly once: a new code needs a row here */
    assert_int_equal(n, RW_ERR__COUNT);
    for (size_t i = 0; i < n; i++) {
        rw_err_t e = expected[i].err;

        assert_true((int)e >= 0 && e < RW_ERR__COUNT);
        assert_int_equal(seen[e], 0);
        seen[e] = 1;
        if (rw_err_class(e, RW_OP_READ) != expected[i].on_read ||
            rw_err_class(e, RW_OP_SEND) != expected[i].on_send)
            fail_msg("%s: read %s send %s, expected %s / %s", rw_err_name(e),
                     rw_err_class_name(rw_err_class(e, RW_OP_READ)),
                     rw_err_class_name(rw_err_class(e, RW_OP_SEND)),
                     rw_err_class_name(expected[i].on_read),
                     rw_err_class_name(expected[i].on_send));
        /* the compatibility predicate is the READ class, nothing else */
        assert_int_equal(rw_err_is_retriable(e), expected[i].on_read == R);
        /* in doubt is a SEND-only outcome; a read is simply repeated */
        assert_int_not_equal(rw_err_class(e, RW_OP_READ), D);
    }
}

static void test_class_out_of_range(void **state)
{
    (void)state;
    assert_int_equal(rw_err_class(RW_ERR__COUNT, RW_OP_READ), P);
    assert_int_equal(rw_err_class((rw_err_t)-1, RW_OP_SEND), P);
    assert_false(rw_err_is_retriable(RW_ERR__COUNT));
    /* an op outside the enum is read cautiously, as a send */
    assert_int_equal(rw_err_class(RW_ERR_LAGOON_NETWORK, (rw_err_op_t)7), D);
    assert_string_equal(rw_err_class_name(P), "permanent");
    assert_string_equal(rw_err_class_name(R), "retry");
    assert_string_equal(rw_err_class_name(D), "in_doubt");
    assert_string_equal(rw_err_class_name((rw_err_class_t)3), "unknown");
    assert_string_equal(rw_err_class_name((rw_err_class_t)-1), "unknown");
}

static void test_err_set_formats_and_returns(void **state)
{
    char buf[32];
    (void)state;
    assert_int_equal(rw_err_set(buf, sizeof(buf), RW_ERR_CONFIG, "key %s", "X"),
                     RW_ERR_CONFIG);
    assert_string_equal(buf, "key X");
    assert_int_equal(rw_err_set(NULL, 0, RW_ERR_IO, "ignored"), RW_ERR_IO);
}

/* A cut message never ends inside a UTF-8 character. */
static void test_err_set_cuts_on_characters(void **state)
{
    char buf[6], s[16];
    (void)state;
    /* "ab" + e-acute (2 bytes) + euro (3 bytes): cuts inside each */
    rw_err_set(buf, sizeof(buf), RW_ERR_IO, "%s", "ab\xc3\xa9\xe2\x82\xac");
    assert_string_equal(buf, "ab\xc3\xa9"); /* euro cut after 1: dropped */
    rw_err_set(buf, 4, RW_ERR_IO, "%s", "ab\xc3\xa9");
    assert_string_equal(buf, "ab"); /* e-acute cut after 1 */
    rw_err_set(buf, 5, RW_ERR_IO, "%s", "ab\xc3\xa9!");
    assert_string_equal(buf, "ab\xc3\xa9"); /* whole: kept */
    rw_err_set(buf, 6, RW_ERR_IO, "%s", "abc\xe2\x82\xac");
    assert_string_equal(buf, "abc"); /* euro cut after 2 */
    rw_err_set(buf, sizeof(buf), RW_ERR_IO, "%s", "abcdefgh");
    assert_string_equal(buf, "abcde"); /* ASCII: as snprintf */
    strcpy(s, "x\xf0\x9f\x98");
    rw_utf8_trim_partial(s); /* a 4-byte character missing its last */
    assert_string_equal(s, "x");
    strcpy(s, "\xa9\xa9");
    rw_utf8_trim_partial(s); /* no lead byte at all: left to the checks */
    assert_string_equal(s, "\xa9\xa9");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_is_zero),
        cmocka_unit_test(test_every_error_has_name_and_message),
        cmocka_unit_test(test_class_of_every_code),
        cmocka_unit_test(test_class_out_of_range),
        cmocka_unit_test(test_err_set_formats_and_returns),
        cmocka_unit_test(test_err_set_cuts_on_characters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
