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

static void test_retriable_classification(void **state)
{
    (void)state;
    assert_true(rw_err_is_retriable(RW_ERR_LAGOON_NETWORK));
    assert_true(rw_err_is_retriable(RW_ERR_LAGOON_TIMEOUT));
    assert_true(rw_err_is_retriable(RW_ERR_LAGOON_SERVER));
    assert_true(rw_err_is_retriable(RW_ERR_LAGOON_RATE_LIMITED));
    assert_true(rw_err_is_retriable(RW_ERR_PG_CONN));
    assert_true(rw_err_is_retriable(RW_ERR_REDIS_CONN));
    assert_false(rw_err_is_retriable(RW_ERR_LAGOON_AUTH));
    assert_false(rw_err_is_retriable(RW_ERR_LAGOON_GRAPHQL));
    assert_false(rw_err_is_retriable(RW_ERR_CODEC_JSON));
    assert_false(rw_err_is_retriable(RW_ERR_STATE));
    assert_false(rw_err_is_retriable(RW_ERR__COUNT));
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_is_zero),
        cmocka_unit_test(test_every_error_has_name_and_message),
        cmocka_unit_test(test_retriable_classification),
        cmocka_unit_test(test_err_set_formats_and_returns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
