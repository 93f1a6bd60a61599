/*
 * test_throttle: the throttle's pure parts: rate parsing (units, garbage)
 * and the validation an operator's limits go through (range, a budget
 * smaller than one chunk, a rate of 0), with messages naming the key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "rw_throttle.h"

static void test_rate_units(void **state)
{
    static const struct {
        const char *s;
        double want;
    } ok[] = {
        {"600", 600},        {"600/min", 600}, {"600/m", 600},    {"10/s", 600},
        {"10/h", 10.0 / 60}, {"0.5/s", 30},    {"1e3/min", 1000},
    };
    char errstr[256];

    (void)state;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        double v = -1;
        assert_int_equal(
            rw_throttle_parse_rate(ok[i].s, &v, errstr, sizeof(errstr)), RW_OK);
        assert_true(fabs(v - ok[i].want) < 1e-9);
    }
}

static void test_rate_garbage(void **state)
{
    static const char *const bad[] = {"",      "abc",    "/min", "10/day",
                                      "10 /s", "10/s/s", "nan",  "inf/min"};
    char errstr[256];
    double v = 0;

    (void)state;
    assert_int_equal(rw_throttle_parse_rate(NULL, &v, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errstr[0] = '\0';
        assert_int_equal(
            rw_throttle_parse_rate(bad[i], &v, errstr, sizeof(errstr)),
            RW_ERR_INVALID_ARG);
        assert_true(strlen(errstr) > 0);
    }
}

static void test_validate(void **state)
{
    char errstr[256];

    (void)state;
    /* the brake and any budget of at least one chunk are fine */
    assert_int_equal(
        rw_throttle_validate(0, "K", 600, "R", 50, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(
        rw_throttle_validate(50, "K", 600, "R", 50, errstr, sizeof(errstr)),
        RW_OK);
    /* smaller than one chunk: that chunk could never go */
    assert_int_equal(rw_throttle_validate(49, "ROLLWAVE_MAX_IN_FLIGHT", 600,
                                          "R", 50, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "ROLLWAVE_MAX_IN_FLIGHT"));
    assert_non_null(strstr(errstr, "chunk"));
    assert_int_equal(rw_throttle_validate(-1, "--max-in-flight", 600, "R", 50,
                                          errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "--max-in-flight"));
    /* a rate of 0 is not the brake: refused, naming the key */
    assert_int_equal(
        rw_throttle_validate(100, "K", 0, "--rate", 50, errstr, sizeof(errstr)),
        RW_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "--rate"));
    assert_int_equal(rw_throttle_validate(100, "K", NAN, "--rate", 50, errstr,
                                          sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    /* below one an hour: refused (its waits would be endless) */
    assert_int_equal(rw_throttle_validate(100, "K", 1.0 / 120, "--rate", 50,
                                          errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_int_equal(rw_throttle_validate(100, "K", 1.0 / 60, "--rate", 50,
                                          errstr, sizeof(errstr)),
                     RW_OK);
}

static void test_limit_and_names(void **state)
{
    rw_throttle_state_t st;

    (void)state;
    memset(&st, 0, sizeof(st));
    st.max_in_flight = 100;
    st.effective = 40;
    assert_int_equal(rw_throttle_limit(&st), 40);
    st.effective = 150; /* never above the configured limit */
    assert_int_equal(rw_throttle_limit(&st), 100);
    assert_string_equal(rw_throttle_verdict_name(RW_THROTTLE_GRANTED),
                        "granted");
    assert_string_equal(rw_throttle_verdict_name(RW_THROTTLE_RATE), "rate");
    assert_string_equal(rw_throttle_verdict_name((rw_throttle_verdict_t)99),
                        "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_units),
        cmocka_unit_test(test_rate_garbage),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_limit_and_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
