/*
 * test_time: rw_time_parse and rw_time_format, the one date parser of
 * rollwave: calendar checks (month lengths, leap years, leap second),
 * separators, fractions, offsets, the three forms (default, RFC 3339,
 * partial) and garbage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "rw_time.h"

/* 2026-11-22T16:00:00Z */
#define T0 1795363200000LL

typedef struct ok_case {
    const char *s;
    unsigned flags;
    long long want;
} ok_case_t;

typedef struct bad_case {
    const char *s;
    unsigned flags;
    const char *why; /* expected in errstr */
} bad_case_t;

static void test_accepts(void **state)
{
    static const ok_case_t ok[] = {
        {"2026-11-22T16:00:00Z", 0, T0},
        {"2026-11-22 16:00:00", 0, T0},
        {"2026-11-22t16:00:00z", 0, T0},
        {"2026-11-22T16:00:00", 0, T0}, /* no zone: UTC */
        {"2026-11-22T16:00:00.5Z", 0, T0 + 500},
        {"2026-11-22T16:00:00,25Z", 0, T0 + 250},
        {"2026-11-22T16:00:00.123456789Z", 0, T0 + 123},
        {"2026-11-22T16:00:00.1234567891234Z", 0, T0 + 123},
        {"2026-11-22T18:00:00+02:00", 0, T0},
        {"2026-11-22T18:30:00+0230", 0, T0},
        {"2026-11-22T18:00:00+02", 0, T0},
        {"2026-11-22T11:00:00-05:00", 0, T0},
        {"2026-11-22T11:00:00.250-05:00", 0, T0 + 250},
        {"2026-11-23T15:59:00+23:59", 0, T0},
        /* leap years */
        {"2024-02-29T12:00:00Z", 0, 1709208000000LL},
        {"2000-02-29T00:00:00Z", 0, 951782400000LL},
        /* a leap second is the next minute's first second */
        {"2016-12-31T23:59:60Z", 0, 1483228800000LL},
        {"2016-12-31T23:59:60Z", RW_TIME_RFC3339, 1483228800000LL},
        {"1970-01-01T00:00:00Z", RW_TIME_RFC3339, 0},
        {"1969-12-31T23:59:59.999Z", RW_TIME_RFC3339, -1},
        {"2026-11-22T18:00:00.5+02:00", RW_TIME_RFC3339, T0 + 500},
        {"9999-12-31T23:59:59.999Z", RW_TIME_RFC3339, 253402300799999LL},
        {"0000-01-01T00:01:00+00:01", RW_TIME_RFC3339, -62167219200000LL},
        /* what an operator types */
        {"2026-11-22", RW_TIME_PARTIAL, T0 - 16 * 3600000LL},
        {"2026-11-22T16:00", RW_TIME_PARTIAL, T0},
        {"2026-11-22 18:00+02:00", RW_TIME_PARTIAL, T0},
        {"2026-11-22T16:00:00Z", RW_TIME_PARTIAL, T0},
    };
    char errstr[128];

    (void)state;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        long long ms = -42;
        if (rw_time_parse(ok[i].s, ok[i].flags, &ms, errstr, sizeof(errstr)))
            fail_msg("rejected %s (flags %u): %s", ok[i].s, ok[i].flags,
                     errstr);
        if (ms != ok[i].want)
            fail_msg("%s gave %lld, want %lld", ok[i].s, ms, ok[i].want);
    }
}

static void test_refuses(void **state)
{
    static const bad_case_t bad[] = {
        /* impossible dates never roll over into the next month */
        {"2026-02-31T10:00:00Z", 0, "no such day"},
        {"2026-02-31", RW_TIME_PARTIAL, "no such day"},
        {"2026-02-29T10:00:00Z", 0, "no such day"},
        {"1900-02-29T00:00:00Z", 0, "no such day"},
        {"2026-04-31T10:00:00Z", 0, "no such day"},
        {"2026-11-00T10:00:00Z", 0, "no such day"},
        {"2026-11-32T10:00:00Z", 0, "no such day"},
        {"2026-13-01T10:00:00Z", 0, "month out of range"},
        {"2026-00-01T10:00:00Z", 0, "month out of range"},
        {"2026-11-22T24:00:00Z", 0, "time of day"},
        {"2026-11-22T16:60:00Z", 0, "time of day"},
        {"2026-11-22T16:00:61Z", 0, "time of day"},
        {"2026-11-22T16:00:00+24:00", 0, "offset out of range"},
        {"2026-11-22T16:00:00+02:60", 0, "offset out of range"},
        {"2026-11-22T16:00:00+2:00", 0, "offset"},
        {"2026-11-22T16:00:00+02:", 0, "offset"},
        {"2026-11-22T16:00:00.Z", 0, "fraction"},
        {"2026-11-22T16:00:00Zjunk", 0, "unexpected text"},
        {"2026-11-22T16:00:00 ", 0, "unexpected text"},
        {"2026-11-22X16:00:00", 0, "after the date"},
        {"2026/11/22 16:00:00", 0, "YYYY-MM-DD"},
        {"2026-1", 0, "YYYY-MM-DD"},
        {"", 0, "YYYY-MM-DD"},
        {"yesterday", RW_TIME_PARTIAL, "YYYY-MM-DD"},
        /* seconds and the time are required unless partial */
        {"2026-11-22", 0, "after the date"},
        {"2026-11-22 16:00", 0, "HH:MM:SS"},
        {"2026-11-22T16", RW_TIME_PARTIAL, "HH:MM:SS"},
        /* RFC 3339 as the messages spell it */
        {"2026-11-22 16:00:00Z", RW_TIME_RFC3339, "expected T"},
        {"2026-11-22T16:00:00", RW_TIME_RFC3339, "zone"},
        {"2026-11-22T16:00:00+0200", RW_TIME_RFC3339, "HH:MM"},
        {"2026-11-22T16:00:00+02", RW_TIME_RFC3339, "HH:MM"},
        {"2026-11-22T16:00:00,5Z", RW_TIME_RFC3339, "zone"},
        {"2026-11-22T16:00:54.1234567890Z", RW_TIME_RFC3339, "1..9 digits"},
        {"2026-11-22", RW_TIME_RFC3339, "expected T"},
        /* outside what the formatter can write back */
        {"9999-12-31T23:59:60Z", 0, "0000..9999"},
        {"9999-12-31T23:00:00-01:00", 0, "0000..9999"},
        {"0000-01-01T00:00:00+00:01", 0, "0000..9999"},
    };
    char errstr[128];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        long long ms = -42;
        errstr[0] = '\0';
        if (rw_time_parse(bad[i].s, bad[i].flags, &ms, errstr,
                          sizeof(errstr)) != RW_ERR_INVALID_ARG)
            fail_msg("accepted \"%s\" (flags %u)", bad[i].s, bad[i].flags);
        if (!strstr(errstr, bad[i].why))
            fail_msg("\"%s\": reason \"%s\", want \"%s\"", bad[i].s, errstr,
                     bad[i].why);
        assert_int_equal(ms, -42);
    }
    assert_int_equal(rw_time_parse(NULL, 0, &(long long){0}, NULL, 0),
                     RW_ERR_INVALID_ARG);
}

static void test_format(void **state)
{
    char buf[RW_TIME_BUF];
    long long back = 0;
    static const long long samples[] = {
        0, -1, T0 + 123, 951782400000LL, 253402300799999LL, -62167219200000LL,
    };

    (void)state;
    assert_int_equal(rw_time_format(buf, sizeof(buf), T0 + 7), RW_OK);
    assert_string_equal(buf, "2026-11-22T16:00:00.007Z");
    assert_int_equal(rw_time_format(buf, sizeof(buf), -1), RW_OK);
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
    assert_int_equal(rw_time_format(buf, sizeof(buf) - 1, 0),
                     RW_ERR_INVALID_ARG);
    assert_int_equal(rw_time_format(buf, sizeof(buf), 253402300800000LL),
                     RW_ERR_INVALID_ARG);
    assert_string_equal(buf, "");
    assert_int_equal(rw_time_format(buf, sizeof(buf), -62167219200001LL),
                     RW_ERR_INVALID_ARG);
    /* everything formatted parses back, strictly, to the same instant */
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        assert_int_equal(rw_time_format(buf, sizeof(buf), samples[i]), RW_OK);
        assert_int_equal(rw_time_parse(buf, RW_TIME_RFC3339, &back, NULL, 0),
                         RW_OK);
        assert_int_equal(back, samples[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts),
        cmocka_unit_test(test_refuses),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
