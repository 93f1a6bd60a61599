/*
 * test_buildlog: the pure parts of build logs: the cut to the last bytes
 * behind its marker (line starts, UTF-8, NUL bytes, the slack that keeps
 * a split secret out), redaction before the cut, the recognition of
 * Lagoon's "error loading the logs" string and ROLLWAVE_LOG_FETCH.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_buildlog.h"
#include "rw_lagoon.h"

static void test_short_log_kept_whole(void **state)
{
    size_t len = 0;
    char *out = rw_buildlog_shape(NULL, 0, "a\nb\n", 4, 1024, &len);

    (void)state;
    assert_string_equal(out, "a\nb\n");
    assert_int_equal(len, 4);
    free(out);
}

static void test_cut_keeps_last_lines_with_marker(void **state)
{
    size_t n = 10000, len = 0;
    char *log = malloc(n + 1);
    char *out;
    const char *body;

    (void)state;
    for (size_t i = 0; i < n; i++)
        log[i] = i % 10 == 9 ? '\n' : (char)('0' + i % 10);
    log[n] = '\0';
    out = rw_buildlog_shape(NULL, 0, log, n, 1024, &len);
    assert_non_null(out);
    /* the marker, then whole lines only, within the limit */
    assert_true(strncmp(out, "[... ", 5) == 0);
    body = strchr(out, '\n') + 1;
    assert_true(strlen(body) <= 1024);
    assert_true(strlen(body) > 1024 - 10);
    assert_memory_equal(body, "012345678\n", 10);
    assert_string_equal(body, log + n - strlen(body));
    {
        char mark[64];
        snprintf(mark, sizeof(mark), "[... %zu bytes cut ...]\n",
                 n - strlen(body));
        assert_memory_equal(out, mark, strlen(mark));
    }
    assert_int_equal(len, strlen(out));
    free(out);
    free(log);
}

/* Several MiB: the marker counts the bytes of the first cut as well. */
static void test_cut_marker_counts_first_cut(void **state)
{
    size_t max = 4096, n = 4000000, len = 0;
    char *log = malloc(n + 1);
    char *out, mark[64];
    const char *body;

    (void)state;
    for (size_t i = 0; i < n; i++)
        log[i] = i % 100 == 99 ? '\n' : 'x';
    log[n] = '\0';
    out = rw_buildlog_shape(NULL, 0, log, n, max, &len);
    assert_non_null(out);
    body = strchr(out, '\n') + 1;
    assert_true(strlen(body) <= max);
    snprintf(mark, sizeof(mark), "[... %zu bytes cut ...]\n", n - strlen(body));
    assert_memory_equal(out, mark, strlen(mark));
    assert_int_equal(len, strlen(mark) + strlen(body));
    free(out);
    free(log);
}

static void test_cut_never_splits_utf8(void **state)
{
    /* one long line of two-byte characters: no line start to cut at */
    size_t n = 4000;
    char *log = malloc(n + 1);
    char *out;
    const char *body;

    (void)state;
    for (size_t i = 0; i < n; i += 2) {
        log[i] = (char)0xC3;
        log[i + 1] = (char)0xA9;
    }
    log[n] = '\0';
    out = rw_buildlog_shape(NULL, 0, log, n, 1025, NULL);
    body = strchr(out, '\n') + 1;
    assert_int_equal((unsigned char)body[0], 0xC3);
    assert_true(strlen(body) <= 1025);
    free(out);
    free(log);
}

static void test_nul_bytes_become_spaces(void **state)
{
    size_t len = 0;
    char *out = rw_buildlog_shape(NULL, 0, "a\0b", 3, 1024, &len);

    (void)state;
    assert_int_equal(len, 3);
    assert_memory_equal(out, "a b", 3);
    free(out);
}

static void test_redacts_before_cut_and_split_secret_dropped(void **state)
{
    rw_redactor_t *r = rw_redactor_new();
    const rw_redactor_t *rs[2] = {NULL, r};
    const char *secret = "s3cr3t-value-123456";
    size_t max = 1024, n = max + RW_BUILDLOG_SLACK + 100, len;
    char *log = malloc(n + 1);
    char *out;
    bool added;

    (void)state;
    assert_int_equal(rw_redactor_add_secret(r, secret, strlen(secret), &added),
                     RW_OK);
    memset(log, 'x', n);
    for (size_t i = 99; i < n; i += 100)
        log[i] = '\n';
    /* a secret across the first cut (only its tail is in what is read) */
    memcpy(log + 100 - 5, secret, strlen(secret));
    /* and one in the part kept */
    memcpy(log + n - 50, secret, strlen(secret));
    log[n] = '\0';
    out = rw_buildlog_shape(rs, 2, log, n, max, &len);
    assert_non_null(out);
    assert_null(strstr(out, secret));
    assert_null(strstr(out, secret + 5));
    assert_non_null(strstr(out, "[REDACTED]"));
    free(out);
    free(log);
    rw_redactor_free(r);
}

static void test_lagoon_error_string_recognized(void **state)
{
    const char *e = "There was an error loading the logs: NoSuchKey";
    const char *ok = "##############\nBEGIN Initial Setup\n";

    (void)state;
    assert_true(rw_lagoon_log_is_error(e, strlen(e)));
    assert_true(rw_lagoon_log_is_error("\n There was an error loading the "
                                       "logs: x",
                                       40));
    assert_false(rw_lagoon_log_is_error(ok, strlen(ok)));
    assert_false(rw_lagoon_log_is_error("There was an error", 18));
    assert_false(rw_lagoon_log_is_error(NULL, 0));
}

static void test_build_logs_parse(void **state)
{
    const char *body =
        "{\"data\":{\"d0\":{\"name\":\"lagoon-build-a\",\"buildLog\":"
        "\"line\\n\"},"
        "\"d1\":{\"name\":\"lagoon-build-b\",\"buildLog\":\"There was an "
        "error loading the logs: boom\"},\"d2\":null,"
        "\"d3\":{\"name\":\"lagoon-build-c\",\"buildLog\":null}}}";
    rw_lagoon_build_log_t out[4];
    char errstr[256];

    (void)state;
    memset(out, 0, sizeof(out));
    assert_int_equal(rw_lagoon_parse_build_logs_response(
                         200, body, 4, out, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(out[0].state, RW_LAGOON_LOG_OK);
    assert_string_equal(out[0].text, "line\n");
    assert_int_equal(out[1].state, RW_LAGOON_LOG_UNAVAILABLE);
    assert_int_equal(out[2].state, RW_LAGOON_LOG_NONE);
    assert_int_equal(out[3].state, RW_LAGOON_LOG_NONE);
    rw_lagoon_build_logs_clear(out, 4);
    assert_int_equal(rw_lagoon_parse_build_logs_response(
                         200,
                         "{\"errors\":[{\"message\":\"no\"}],\"data\":null}", 1,
                         out, errstr, sizeof(errstr)),
                     RW_ERR_LAGOON_GRAPHQL);
}

static void test_request_uses_variables_only(void **state)
{
    rw_lagoon_log_req_t reqs[2] = {{"p\"1", "main", "lagoon-build-a"},
                                   {"p2", "dev", "lagoon-build-b"}};
    char *body = rw_lagoon_build_logs_request_json(reqs, 2);

    (void)state;
    assert_non_null(body);
    assert_non_null(strstr(body, "d1: deploymentByName(input: $d1)"));
    assert_non_null(strstr(body, "$d0: DeploymentByNameInput!"));
    /* the names are in the variables, never in the query text */
    assert_non_null(strstr(body, "\"variables\""));
    assert_true(strstr(body, "p\\\"1") > strstr(body, "\"variables\""));
    free(body);
    assert_null(rw_lagoon_build_logs_request_json(reqs, 0));
}

static void test_mode_parse(void **state)
{
    rw_buildlog_mode_t m;
    char errstr[128];

    (void)state;
    assert_int_equal(rw_buildlog_mode_parse("all", &m, errstr, 128), RW_OK);
    assert_int_equal(m, RW_BUILDLOG_ALL);
    assert_int_equal(rw_buildlog_mode_parse("none", &m, errstr, 128), RW_OK);
    assert_int_equal(m, RW_BUILDLOG_NONE);
    assert_int_equal(rw_buildlog_mode_parse("failed", &m, errstr, 128), RW_OK);
    assert_int_equal(m, RW_BUILDLOG_FAILED);
    assert_int_equal(rw_buildlog_mode_parse("some", &m, errstr, 128),
                     RW_ERR_CONFIG);
    assert_non_null(strstr(errstr, "ROLLWAVE_LOG_FETCH"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_log_kept_whole),
        cmocka_unit_test(test_cut_keeps_last_lines_with_marker),
        cmocka_unit_test(test_cut_marker_counts_first_cut),
        cmocka_unit_test(test_cut_never_splits_utf8),
        cmocka_unit_test(test_nul_bytes_become_spaces),
        cmocka_unit_test(test_redacts_before_cut_and_split_secret_dropped),
        cmocka_unit_test(test_lagoon_error_string_recognized),
        cmocka_unit_test(test_build_logs_parse),
        cmocka_unit_test(test_request_uses_variables_only),
        cmocka_unit_test(test_mode_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
