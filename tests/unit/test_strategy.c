/*
 * test_strategy: the strategy's JSON and text forms, one test per
 * validation rule (each error names its field), wave sizes, the canonical
 * JSON round trip, and deployment windows without a clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "rw_strategy.h"

/* text must be refused with a message that contains want. */
static void refused(const char *text, const char *want)
{
    rw_strategy_t st;
    char errstr[256] = "";

    if (rw_strategy_parse_json(text, &st, errstr, sizeof(errstr)) == RW_OK)
        fail_msg("accepted: %s", text);
    if (!strstr(errstr, want))
        fail_msg("%s: error '%s' lacks '%s'", text, errstr, want);
}

static rw_strategy_t parsed(const char *text)
{
    rw_strategy_t st;
    char errstr[256] = "";

    if (rw_strategy_parse_json(text, &st, errstr, sizeof(errstr)) != RW_OK)
        fail_msg("%s: %s", text, errstr);
    return st;
}

static void test_default(void **state)
{
    rw_strategy_t st = parsed(NULL);
    char *json;

    (void)state;
    assert_true(rw_strategy_is_default(&st));
    st = parsed("");
    assert_true(rw_strategy_is_default(&st));
    st = parsed("{}");
    assert_true(rw_strategy_is_default(&st));
    json = rw_strategy_to_json(&st);
    assert_string_equal(json, "{}");
    free(json);
    st = parsed("{\"bake\":\"10m\"}");
    assert_false(rw_strategy_is_default(&st));
}

static void test_full(void **state)
{
    rw_strategy_t st =
        parsed("{\"waves\":[\"1\",\"10%\",\"100%\"],\"bake\":\"10m\","
               "\"max_in_flight\":\"12.5%\",\"max_failures_wave\":\"5%\","
               "\"max_failures_run\":50,\"on_failure\":\"abort\","
               "\"health\":{\"url\":\"{route}/healthz\",\"attempts\":5,"
               "\"interval_s\":2}}");

    (void)state;
    assert_int_equal(st.n_waves, 3);
    assert_false(st.waves[0].percent);
    assert_int_equal(st.waves[0].value, 1);
    assert_true(st.waves[1].percent);
    assert_int_equal(st.waves[1].value, 1000);
    assert_int_equal(st.waves[2].value, 10000);
    assert_int_equal(st.bake_s, 600);
    assert_true(st.max_in_flight.percent);
    assert_int_equal(st.max_in_flight.value, 1250);
    assert_int_equal(st.max_failures_run.value, 50);
    assert_int_equal(st.on_failure, RW_ON_FAILURE_ABORT);
    assert_true(st.health.set);
    assert_string_equal(st.health.url, "{route}/healthz");
    assert_int_equal(st.health.attempts, 5);
    assert_int_equal(st.health.interval_s, 2);
}

static void test_round_trip(void **state)
{
    static const char *const texts[] = {
        "{\"waves\":[\"1\",\"5\"]}",
        "{\"waves\":[\"2\",\"12.5%\",\"33.33%\",\"100%\"],\"bake\":\"manual\","
        "\"max_in_flight\":\"20\",\"max_failures_wave\":\"0\","
        "\"max_failures_run\":\"2.5%\",\"on_failure\":\"abort\","
        "\"health\":{\"url\":\"https://x/{project}\",\"attempts\":3,"
        "\"interval_s\":10}}",
        "{\"bake\":\"90s\"}",
        "{\"bake\":\"2h\",\"max_in_flight\":\"5%\"}",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        rw_strategy_t a = parsed(texts[i]);
        char *json = rw_strategy_to_json(&a);
        rw_strategy_t b;

        assert_non_null(json);
        /* canonical: the inputs above are already canonical */
        assert_string_equal(json, texts[i]);
        b = parsed(json);
        assert_memory_equal(&a, &b, sizeof(a));
        free(json);
    }
}

static void test_waves_rules(void **state)
{
    (void)state;
    refused("{\"waves\":[\"10%\",\"60%\",\"50%\",\"100%\"]}",
            "strategy.waves[2]: 50% is not above the previous wave (60%)");
    refused("{\"waves\":[\"5\",\"5\"]}", "strategy.waves[1]");
    refused("{\"waves\":[\"1\",\"150%\"]}", "strategy.waves[1]: 150% is over");
    refused("{\"waves\":[\"0\",\"100%\"]}", "strategy.waves[0]: must be above");
    refused("{\"waves\":[\"-1\",\"100%\"]}", "strategy.waves[0]");
    refused("{\"waves\":[\"0%\",\"100%\"]}", "strategy.waves[0]");
    refused("{\"waves\":[\"10%\",\"50%\"]}",
            "strategy.waves[1]: the last wave must be 100%");
    refused("{\"waves\":[\"1\",\"50%\"]}", "the last wave must be 100%");
    refused("{\"waves\":[\"10%\",\"50\"]}",
            "strategy.waves[1]: a count (50) cannot follow");
    refused("{\"waves\":[]}", "strategy.waves");
    refused("{\"waves\":\"1,100%\"}", "strategy.waves: expected an array");
    refused("{\"waves\":[\"1.5\"]}", "strategy.waves[0]");
    refused("{\"waves\":[\"12.345%\",\"100%\"]}", "strategy.waves[0]");
    refused("{\"waves\":[1.5]}", "strategy.waves[0]");
    /* 16 counts plus the implied last wave are one too many */
    refused("{\"waves\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}",
            "strategy.waves: more than 16");
    refused("{\"waves\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}",
            "strategy.waves: more than 16");
    rw_strategy_t st = parsed("{\"waves\":[1,2,3,4,5,6,7,8,9,10,11,12,13,"
                              "14,15]}");
    assert_int_equal(st.n_waves, 15);
    st = parsed("{\"waves\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,\"100%\"]}");
    assert_int_equal(st.n_waves, 16);
}

static void test_waves_text(void **state)
{
    rw_strategy_t st;
    char errstr[256];

    (void)state;
    rw_strategy_default(&st);
    assert_int_equal(
        rw_strategy_parse_waves("1, 10%,100%", &st, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(st.n_waves, 3);
    /* a refused list leaves the strategy as it was */
    assert_int_equal(
        rw_strategy_parse_waves("1,,100%", &st, errstr, sizeof(errstr)),
        RW_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "strategy.waves[1]"));
    assert_int_equal(st.n_waves, 3);
    assert_int_equal(rw_strategy_parse_waves("", &st, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
}

static void test_wave_sizes(void **state)
{
    long long cum[RW_STRATEGY_MAX_WAVES];
    rw_strategy_t st;
    int n;

    (void)state;
    rw_strategy_default(&st);
    assert_int_equal(rw_strategy_wave_sizes(&st, 0, cum, 16), 0);
    assert_int_equal(rw_strategy_wave_sizes(&st, 7, cum, 16), 1);
    assert_int_equal(cum[0], 7);

    st = parsed("{\"waves\":[\"1\",\"10%\",\"100%\"]}");
    n = rw_strategy_wave_sizes(&st, 1000, cum, 16);
    assert_int_equal(n, 3);
    assert_int_equal(cum[0], 1);
    assert_int_equal(cum[1], 100);
    assert_int_equal(cum[2], 1000);
    /* ceil: 10% of 15 is 2; 1 then 2 */
    n = rw_strategy_wave_sizes(&st, 15, cum, 16);
    assert_int_equal(n, 3);
    assert_int_equal(cum[1], 2);
    /* 10% of 5 is 1, not above the canary: at least one more */
    n = rw_strategy_wave_sizes(&st, 5, cum, 16);
    assert_int_equal(n, 3);
    assert_int_equal(cum[0], 1);
    assert_int_equal(cum[1], 2);
    assert_int_equal(cum[2], 5);
    /* too small for every wave: those adding nothing go */
    n = rw_strategy_wave_sizes(&st, 2, cum, 16);
    assert_int_equal(n, 2);
    assert_int_equal(cum[0], 1);
    assert_int_equal(cum[1], 2);
    n = rw_strategy_wave_sizes(&st, 1, cum, 16);
    assert_int_equal(n, 1);
    assert_int_equal(cum[0], 1);

    /* counts only: the rest follows as a last wave */
    st = parsed("{\"waves\":[\"1\",\"5\"]}");
    n = rw_strategy_wave_sizes(&st, 20, cum, 16);
    assert_int_equal(n, 3);
    assert_int_equal(cum[0], 1);
    assert_int_equal(cum[1], 5);
    assert_int_equal(cum[2], 20);
    n = rw_strategy_wave_sizes(&st, 5, cum, 16);
    assert_int_equal(n, 2);
    assert_int_equal(cum[1], 5);
    /* ceil of 33.33% of 10 is 4 */
    st = parsed("{\"waves\":[\"33.33%\",\"100%\"]}");
    n = rw_strategy_wave_sizes(&st, 10, cum, 16);
    assert_int_equal(n, 2);
    assert_int_equal(cum[0], 4);
    /* max bounds the output; the last is still total */
    st = parsed("{\"waves\":[\"1\",\"2\",\"3\"]}");
    n = rw_strategy_wave_sizes(&st, 10, cum, 2);
    assert_int_equal(n, 2);
    assert_int_equal(cum[0], 1);
    assert_int_equal(cum[1], 10);
}

static void test_amounts(void **state)
{
    rw_amount_t a;
    char errstr[256];
    char buf[32];

    (void)state;
    assert_int_equal(
        rw_amount_parse("12.5%", "f", false, &a, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(a.value, 1250);
    rw_amount_format(&a, buf, sizeof(buf));
    assert_string_equal(buf, "12.5%");
    assert_int_equal(rw_amount_of(&a, 10), 2);
    assert_int_equal(
        rw_amount_parse("0", "my.field", false, &a, errstr, sizeof(errstr)),
        RW_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "my.field"));
    assert_int_equal(
        rw_amount_parse("0", "f", true, &a, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(
        rw_amount_parse("100.01%", "f", true, &a, errstr, sizeof(errstr)),
        RW_ERR_INVALID_ARG);
    assert_int_equal(
        rw_amount_parse("7", "f", false, &a, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_amount_of(&a, 5), 5);
    assert_int_equal(rw_amount_of(&a, 0), 0);
    a.set = false;
    assert_int_equal(rw_amount_of(&a, 9), 9);

    rw_strategy_format_bake(0, buf, sizeof(buf));
    assert_string_equal(buf, "0");
    rw_strategy_format_bake(86400, buf, sizeof(buf));
    assert_string_equal(buf, "1d");
    rw_strategy_format_bake(600, buf, sizeof(buf));
    assert_string_equal(buf, "10m");
    rw_strategy_format_bake(RW_STRATEGY_BAKE_MANUAL, buf, sizeof(buf));
    assert_string_equal(buf, "manual");
}

static void test_other_fields(void **state)
{
    (void)state;
    refused("{\"foo\":1}", "strategy: unknown key 'foo'");
    refused("{\"health\":{\"url\":\"https://x\",\"retries\":1}}",
            "strategy.health: unknown key 'retries'");
    refused("[1]", "strategy: expected a JSON object");
    refused("{\"bake\":", "strategy: not JSON");
    refused("{\"bake\":\"-5m\"}", "strategy.bake: -5m is negative");
    refused("{\"bake\":-5}", "strategy.bake");
    refused("{\"bake\":\"soon\"}", "strategy.bake: 'soon' is not a duration");
    refused("{\"bake\":\"10x\"}", "strategy.bake");
    refused("{\"bake\":\"31d\"}", "strategy.bake");
    refused("{\"on_failure\":\"retry\"}", "strategy.on_failure");
    refused("{\"max_in_flight\":0}", "strategy.max_in_flight: must be above");
    refused("{\"max_in_flight\":\"0%\"}", "strategy.max_in_flight");
    refused("{\"max_in_flight\":\"101%\"}", "strategy.max_in_flight");
    refused("{\"max_failures_wave\":\"x\"}", "strategy.max_failures_wave");
    refused("{\"max_failures_run\":-1}", "strategy.max_failures_run");
    refused("{\"health\":{\"url\":\"ftp://x\"}}", "strategy.health.url");
    refused("{\"health\":{\"url\":\"example.com/healthz\"}}",
            "strategy.health.url");
    refused("{\"health\":{\"attempts\":3}}", "strategy.health.url: missing");
    refused("{\"health\":{\"url\":\"https://x\",\"attempts\":0}}",
            "strategy.health.attempts");
    refused("{\"health\":{\"url\":\"https://x\",\"attempts\":101}}",
            "strategy.health.attempts");
    refused("{\"health\":{\"url\":\"https://x\",\"interval_s\":0}}",
            "strategy.health.interval_s");
    refused("{\"health\":{\"url\":\"https://x\",\"interval_s\":3601}}",
            "strategy.health.interval_s");
    refused("{\"health\":{\"url\":\"https://x\",\"interval_s\":\"5\"}}",
            "strategy.health.interval_s");
    refused("{\"bake\":\"1m\",\"bake\":\"2m\"}", "strategy: not JSON");

    rw_strategy_t st =
        parsed("{\"bake\":120,\"health\":{\"url\":\"http://h\"}}");
    assert_int_equal(st.bake_s, 120);
    assert_int_equal(st.health.attempts, 3);
    assert_int_equal(st.health.interval_s, 10);
    st = parsed("{\"bake\":\"0\",\"max_failures_wave\":0}");
    assert_int_equal(st.bake_s, 0);
    assert_true(st.max_failures_wave.set);
}

static void test_set(void **state)
{
    rw_strategy_t st = parsed("{\"waves\":[\"1\",\"100%\"],\"bake\":\"5m\"}");
    char errstr[256];

    (void)state;
    /* one field changes, the others stay */
    assert_int_equal(
        rw_strategy_set(&st, "bake", "manual", errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(st.bake_s, RW_STRATEGY_BAKE_MANUAL);
    assert_int_equal(st.n_waves, 2);
    assert_int_equal(
        rw_strategy_set(&st, "max_in_flight", "3", errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(
        rw_strategy_set(&st, "max_in_flight", "none", errstr, sizeof(errstr)),
        RW_OK);
    assert_false(st.max_in_flight.set);
    assert_int_equal(rw_strategy_set(&st, "nope", "1", errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "unknown key 'nope'"));
    /* attempts without a URL: set, then refused by validation */
    assert_int_equal(
        rw_strategy_set(&st, "health.attempts", "4", errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(rw_strategy_validate(&st, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "strategy.health.url"));
    assert_int_equal(
        rw_strategy_set(&st, "health.url", "https://h", errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(rw_strategy_validate(&st, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(st.health.attempts, 4);

    const char *name = NULL;
    size_t n = 0;
    while (rw_strategy_field_help(n, &name))
        n++;
    assert_int_equal(n, 9);
}

static void test_window_parse(void **state)
{
    static const struct {
        const char *text;
        const char *want;
    } bad[] = {
        {"", "is not \"Zone Days"},
        {"Europe/Zurich Mon-Fri", "is not \"Zone Days"},
        {"Europe/Zurich Mon-Fri 02:00-05:00 x", "is not \"Zone Days"},
        {"Europe//Zurich Mon-Fri 02:00-05:00", "not a time zone name"},
        {"Europe/Zur;ich Mon-Fri 02:00-05:00", "not a time zone name"},
        {"/etc/passwd Mon 02:00-05:00", "not a time zone name"},
        {"UTC Sat- 02:00-05:00", "'Sat-' is not a day"},
        {"UTC Mon-Fri, 02:00-05:00", "'' is not a day"},
        {"UTC Funday 02:00-05:00", "'Funday' is not a day"},
        {"UTC Mon 24:00-05:00", "is not HH:MM-HH:MM"},
        {"UTC Mon 02:00-24:00", "is not HH:MM-HH:MM"},
        {"UTC Mon 2:00-05:00", "is not HH:MM-HH:MM"},
        {"UTC Mon 02:60-05:00", "is not HH:MM-HH:MM"},
        {"UTC Mon 02:00", "is not HH:MM-HH:MM"},
        {"UTC Mon 02:00-02:00", "opens and closes at the same time"},
        {"UTC+2 Mon 02:00-05:00", "is an offset"},
        {"Etc/GMT-1 Mon 02:00-05:00", "is an offset"},
    };
    rw_window_t w;
    char errstr[256];
    char buf[128];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errstr[0] = '\0';
        if (rw_window_parse(bad[i].text, &w, errstr, sizeof(errstr)) == RW_OK)
            fail_msg("accepted: %s", bad[i].text);
        if (!strstr(errstr, "window: ") || !strstr(errstr, bad[i].want))
            fail_msg("%s: '%s' lacks '%s'", bad[i].text, errstr, bad[i].want);
    }
    assert_int_equal(rw_window_parse("Europe/Zurich Mon-Fri,Sun 02:00-05:30",
                                     &w, errstr, sizeof(errstr)),
                     RW_OK);
    assert_string_equal(w.tz, "Europe/Zurich");
    assert_int_equal(w.days, 0x1f | 0x40);
    assert_int_equal(w.from_min, 120);
    assert_int_equal(w.to_min, 330);
    rw_window_format(&w, buf, sizeof(buf));
    assert_string_equal(buf, "Europe/Zurich Mon-Fri,Sun 02:00-05:30");
    /* a range may wrap the week; days in any case; extra spaces */
    assert_int_equal(rw_window_parse("  America/New_York  fri-mon  22:00-02:00",
                                     &w, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(w.days, 0x01 | 0x10 | 0x20 | 0x40);
    rw_window_format(&w, buf, sizeof(buf));
    assert_string_equal(buf, "America/New_York Mon,Fri-Sun 22:00-02:00");
    /* names with a '-' that is not an offset */
    assert_int_equal(rw_window_parse("America/Port-au-Prince Tue 00:00-23:59",
                                     &w, errstr, sizeof(errstr)),
                     RW_OK);
}

static void test_window_open_local(void **state)
{
    rw_window_t w;
    char errstr[256];

    (void)state;
    assert_int_equal(
        rw_window_parse("UTC Mon-Fri 02:00-05:00", &w, errstr, sizeof(errstr)),
        RW_OK);
    assert_true(rw_window_open_local(&w, 0, 120));
    assert_true(rw_window_open_local(&w, 4, 299));
    assert_false(rw_window_open_local(&w, 4, 300)); /* closes at 05:00 */
    assert_false(rw_window_open_local(&w, 0, 119));
    assert_false(rw_window_open_local(&w, 5, 180)); /* Saturday */

    /* Mon 22:00-02:00 belongs to Monday: open Tuesday 01:00, not Monday */
    assert_int_equal(
        rw_window_parse("UTC Mon 22:00-02:00", &w, errstr, sizeof(errstr)),
        RW_OK);
    assert_true(rw_window_open_local(&w, 0, 22 * 60));
    assert_true(rw_window_open_local(&w, 0, 23 * 60 + 59));
    assert_true(rw_window_open_local(&w, 1, 60));
    assert_false(rw_window_open_local(&w, 1, 120));
    assert_false(rw_window_open_local(&w, 0, 60));
    assert_false(rw_window_open_local(&w, 1, 22 * 60));
    /* Sunday's window runs into Monday */
    assert_int_equal(
        rw_window_parse("UTC Sun 23:00-01:00", &w, errstr, sizeof(errstr)),
        RW_OK);
    assert_true(rw_window_open_local(&w, 0, 30));
    assert_false(rw_window_open_local(&w, 6, 30));
    assert_false(rw_window_open_local(&w, 7, 30));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_waves_rules),
        cmocka_unit_test(test_waves_text),
        cmocka_unit_test(test_wave_sizes),
        cmocka_unit_test(test_amounts),
        cmocka_unit_test(test_other_fields),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_window_parse),
        cmocka_unit_test(test_window_open_local),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
