/*
 * test_metrics: the registry renders valid Prometheus text 0.0.4 (checked
 * line by line by an independent validator), escapes label values and HELP
 * text, accumulates histogram buckets, and counts exactly under concurrent
 * updates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rw_log.h"
#include "rw_metrics.h"
#include "rw_prom_check.h"

static void assert_valid(const char *text)
{
    char why[1200];
    int bad = rw_prom_check_exposition(text, why, sizeof(why));

    if (bad != 0)
        fail_msg("exposition line %d: %s\n---\n%s", bad, why, text);
}

static int teardown(void **state)
{
    (void)state;
    rw_metrics_shutdown();
    return 0;
}

/* ---- tests ------------------------------------------------------------ */

static void test_validator_rejects_bad_lines(void **state)
{
    char why[256];
    (void)state;

    /* The validator must be able to fail, or the other tests prove little. */
    assert_true(rw_prom_valid_line("a_b:c 1"));
    assert_true(rw_prom_valid_line("x{a=\"b\\\"\\n\\\\\",c=\"\"} -1.5e-3"));
    assert_true(rw_prom_valid_line("x NaN"));
    assert_false(rw_prom_valid_line("9abc 1"));
    assert_false(rw_prom_valid_line("abc"));
    assert_false(rw_prom_valid_line("abc 1 2"));
    assert_false(rw_prom_valid_line("abc 1x"));
    assert_false(rw_prom_valid_line("abc{a=\"b} 1"));
    assert_false(rw_prom_valid_line("abc{a=b} 1"));
    assert_false(rw_prom_valid_line("abc{a=\"b\",} 1"));
    assert_false(rw_prom_valid_line("abc{a=\"\\x\"} 1"));
    assert_false(rw_prom_valid_line("abc{a=\"b\"}1"));
    assert_false(rw_prom_valid_line("# TYPE abc summaryx"));
    assert_false(rw_prom_valid_line("# comment"));
    assert_false(rw_prom_valid_line("# HELP abc bad \\q escape"));
    assert_int_not_equal(rw_prom_check_exposition("a 1", why, sizeof(why)), 0);
    assert_int_not_equal(
        rw_prom_check_exposition("# HELP a h\n# TYPE a gauge\nb 1\n", why,
                                 sizeof(why)),
        0);
    assert_int_not_equal(
        rw_prom_check_exposition("# HELP a h\n# TYPE a gauge\n"
                                 "# HELP a h\n# TYPE a gauge\n",
                                 why, sizeof(why)),
        0);
}

static void test_counter_without_labels(void **state)
{
    rw_metric_t *m;
    char *text;
    (void)state;

    m = rw_metrics_counter("t_requests_total", "Requests handled.", NULL);
    assert_non_null(m);
    rw_metrics_add(m, 1);
    rw_metrics_add(m, 2.5);
    rw_metrics_add(m, -10); /* counters never go down */
    rw_metrics_add(m, NAN);
    rw_metrics_set(m, 100); /* set is for gauges only */
    assert_true(rw_metrics_value(m) == 3.5);

    text = rw_metrics_render();
    assert_non_null(text);
    assert_valid(text);
    assert_string_equal(text, "# HELP t_requests_total Requests handled.\n"
                              "# TYPE t_requests_total counter\n"
                              "t_requests_total 3.5\n");
    free(text);
}

static void test_gauge_with_labels_and_families(void **state)
{
    rw_metric_t *a, *b, *again;
    char *text;
    (void)state;

    a = rw_metrics_gauge("t_queue_depth", "Messages waiting.",
                         "topic=\"batches\",part=\"0\"");
    b = rw_metrics_gauge("t_queue_depth", "Other help is ignored.",
                         "topic=\"poll\",part=\"1\"");
    again =
        rw_metrics_gauge("t_queue_depth", "x", "topic=\"batches\",part=\"0\"");
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(a, again);
    /* One name, one type. */
    assert_null(rw_metrics_counter("t_queue_depth", "x", NULL));

    rw_metrics_set(a, 42);
    rw_metrics_add(a, -2);
    rw_metrics_set(b, 1e21);

    text = rw_metrics_render();
    assert_non_null(text);
    assert_valid(text);
    assert_string_equal(text,
                        "# HELP t_queue_depth Messages waiting.\n"
                        "# TYPE t_queue_depth gauge\n"
                        "t_queue_depth{topic=\"batches\",part=\"0\"} 40\n"
                        "t_queue_depth{topic=\"poll\",part=\"1\"} 1e+21\n");
    free(text);
}

static void test_histogram(void **state)
{
    const double buckets[] = {0.5, 1, 10};
    const double other[] = {1, 2};
    rw_metric_t *h, *hl;
    char *text;
    (void)state;

    h = rw_metrics_histogram("t_latency_seconds", "Latency.", NULL, buckets, 3);
    hl = rw_metrics_histogram("t_latency_seconds", "Latency.", "op=\"x\"",
                              buckets, 3);
    assert_non_null(h);
    assert_non_null(hl);
    assert_null(rw_metrics_histogram("t_latency_seconds", "Latency.",
                                     "op=\"y\"", other, 2));

    /* le is inclusive: 0.5 falls in the 0.5 bucket. */
    rw_metrics_observe(h, 0.25);
    rw_metrics_observe(h, 0.5);
    rw_metrics_observe(h, 0.75);
    rw_metrics_observe(h, 5);
    rw_metrics_observe(h, 50);
    rw_metrics_observe(h, NAN);
    rw_metrics_observe(hl, 2);
    rw_metrics_add(h, 5); /* not a histogram operation */
    assert_true(rw_metrics_value(h) == 5);

    text = rw_metrics_render();
    assert_non_null(text);
    assert_valid(text);
    assert_string_equal(text,
                        "# HELP t_latency_seconds Latency.\n"
                        "# TYPE t_latency_seconds histogram\n"
                        "t_latency_seconds_bucket{le=\"0.5\"} 2\n"
                        "t_latency_seconds_bucket{le=\"1\"} 3\n"
                        "t_latency_seconds_bucket{le=\"10\"} 4\n"
                        "t_latency_seconds_bucket{le=\"+Inf\"} 5\n"
                        "t_latency_seconds_sum 56.5\n"
                        "t_latency_seconds_count 5\n"
                        "t_latency_seconds_bucket{op=\"x\",le=\"0.5\"} 0\n"
                        "t_latency_seconds_bucket{op=\"x\",le=\"1\"} 0\n"
                        "t_latency_seconds_bucket{op=\"x\",le=\"10\"} 1\n"
                        "t_latency_seconds_bucket{op=\"x\",le=\"+Inf\"} 1\n"
                        "t_latency_seconds_sum{op=\"x\"} 2\n"
                        "t_latency_seconds_count{op=\"x\"} 1\n");
    free(text);
}

static void test_escaping(void **state)
{
    rw_metric_t *m;
    char *text;
    (void)state;

    /* Raw value: C:\dir "q"<newline>end */
    m = rw_metrics_counter("t_escape_total", "Back\\slash and\nnewline.",
                           "path=\"C:\\dir \"q\"\nend\",b=\"\"");
    assert_non_null(m);
    rw_metrics_add(m, 1);
    text = rw_metrics_render();
    assert_non_null(text);
    assert_valid(text);
    assert_string_equal(
        text, "# HELP t_escape_total Back\\\\slash and\\nnewline.\n"
              "# TYPE t_escape_total counter\n"
              "t_escape_total{path=\"C:\\\\dir \\\"q\\\"\\nend\",b=\"\"} 1\n");
    free(text);
}

static void test_special_values(void **state)
{
    rw_metric_t *a, *b, *c, *d;
    char *text;
    (void)state;

    a = rw_metrics_gauge("t_nan", "n", NULL);
    b = rw_metrics_gauge("t_inf", "i", NULL);
    c = rw_metrics_gauge("t_ninf", "m", NULL);
    d = rw_metrics_gauge("t_frac", "f", NULL);
    rw_metrics_set(a, NAN);
    rw_metrics_set(b, INFINITY);
    rw_metrics_set(c, -INFINITY);
    rw_metrics_set(d, 0.1);
    text = rw_metrics_render();
    assert_non_null(text);
    assert_valid(text);
    assert_non_null(strstr(text, "\nt_nan NaN\n"));
    assert_non_null(strstr(text, "\nt_inf +Inf\n"));
    assert_non_null(strstr(text, "\nt_ninf -Inf\n"));
    assert_non_null(strstr(text, "\nt_frac 0.1\n"));
    free(text);
}

static void test_invalid_registrations(void **state)
{
    const double down[] = {1, 0.5};
    const double inf[] = {1, INFINITY};
    const double ok[] = {1};
    char *text;
    (void)state;

    rw_log_set_level(RW_LOG_OFF); /* the failures below are expected */
    assert_null(rw_metrics_counter("1abc", "h", NULL));
    assert_null(rw_metrics_counter("a-b", "h", NULL));
    assert_null(rw_metrics_counter("", "h", NULL));
    assert_null(rw_metrics_counter(NULL, "h", NULL));
    assert_null(rw_metrics_counter("t_bad", "h", "a=b"));
    assert_null(rw_metrics_counter("t_bad", "h", "a=\"b"));
    assert_null(rw_metrics_counter("t_bad", "h", "a=\"b\","));
    assert_null(rw_metrics_counter("t_bad", "h", "9a=\"b\""));
    assert_null(rw_metrics_counter("t_bad", "h", "__a=\"b\""));
    assert_null(rw_metrics_histogram("t_h", "h", "le=\"1\"", ok, 1));
    assert_null(rw_metrics_histogram("t_h", "h", NULL, down, 2));
    assert_null(rw_metrics_histogram("t_h", "h", NULL, inf, 2));
    rw_log_set_level(RW_LOG_INFO);

    /* Updates through a failed registration are harmless no-ops. */
    rw_metrics_add(NULL, 1);
    rw_metrics_set(NULL, 1);
    rw_metrics_observe(NULL, 1);
    assert_true(rw_metrics_value(NULL) == 0);

    /* Nothing half-registered shows up. */
    text = rw_metrics_render();
    assert_non_null(text);
    assert_string_equal(text, "");
    free(text);
}

static void test_builtins(void **state)
{
    char *text, *p;
    double start;
    time_t now = time(NULL);
    (void)state;

    assert_int_equal(rw_metrics_init("rollwave-worker", "1.2.3"), 0);
    assert_int_equal(rw_metrics_init("rollwave-worker", "1.2.3"), 0);
    text = rw_metrics_render();
    assert_non_null(text);
    assert_valid(text);
    assert_non_null(strstr(text, "# TYPE rollwave_build_info gauge\n"
                                 "rollwave_build_info{binary=\"rollwave-"
                                 "worker\",version=\"1.2.3\"} 1\n"));
    p = strstr(text, "\nrollwave_start_time_seconds ");
    assert_non_null(p);
    start = strtod(p + strlen("\nrollwave_start_time_seconds "), NULL);
    assert_true(start >= (double)now - 60 && start <= (double)now + 2);
    free(text);
}

#define THREADS    4
#define PER_THREAD 100000

static rw_metric_t *conc_counter, *conc_gauge, *conc_hist;

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        rw_metrics_add(conc_counter, 1);
        rw_metrics_add(conc_gauge, i % 2 ? 1 : -1);
        rw_metrics_observe(conc_hist, (double)(i % 3));
    }
    return NULL;
}

static void test_concurrent_updates_are_exact(void **state)
{
    const double buckets[] = {0, 1};
    pthread_t th[THREADS];
    char *text;
    (void)state;

    conc_counter = rw_metrics_counter("t_conc_total", "c", NULL);
    conc_gauge = rw_metrics_gauge("t_conc_gauge", "g", NULL);
    conc_hist = rw_metrics_histogram("t_conc", "h", NULL, buckets, 2);
    assert_non_null(conc_counter);
    assert_non_null(conc_gauge);
    assert_non_null(conc_hist);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
    /* Render and register while the updates run. */
    for (int i = 0; i < 50; i++) {
        char name[32];
        snprintf(name, sizeof(name), "t_reg_%d", i);
        assert_non_null(rw_metrics_gauge(name, "r", NULL));
        text = rw_metrics_render();
        assert_non_null(text);
        assert_valid(text);
        free(text);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);

    assert_true(rw_metrics_value(conc_counter) == THREADS * PER_THREAD);
    assert_true(rw_metrics_value(conc_gauge) == 0);
    text = rw_metrics_render();
    assert_non_null(text);
    assert_non_null(strstr(text, "\nt_conc_total 400000\n"));
    assert_non_null(strstr(text, "\nt_conc_gauge 0\n"));
    /* i % 3 over 100000: 33334 zeros, 33333 ones, 33333 twos per thread. */
    assert_non_null(strstr(text, "\nt_conc_bucket{le=\"0\"} 133336\n"));
    assert_non_null(strstr(text, "\nt_conc_bucket{le=\"1\"} 266668\n"));
    assert_non_null(strstr(text, "\nt_conc_bucket{le=\"+Inf\"} 400000\n"));
    assert_non_null(strstr(text, "\nt_conc_sum 399996\n"));
    assert_non_null(strstr(text, "\nt_conc_count 400000\n"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validator_rejects_bad_lines),
        cmocka_unit_test_teardown(test_counter_without_labels, teardown),
        cmocka_unit_test_teardown(test_gauge_with_labels_and_families,
                                  teardown),
        cmocka_unit_test_teardown(test_histogram, teardown),
        cmocka_unit_test_teardown(test_escaping, teardown),
        cmocka_unit_test_teardown(test_special_values, teardown),
        cmocka_unit_test_teardown(test_invalid_registrations, teardown),
        cmocka_unit_test_teardown(test_builtins, teardown),
        cmocka_unit_test_teardown(test_concurrent_updates_are_exact, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
