/*
 * test_health: the health gate's URL template (placeholders, encoding,
 * refusals, where {route} may stand, the strategy parser applying the
 * same rule), the redirect rule (same origin), the URL shown in
 * errors, and what an answer means. One batch against a closed local port
 * shows a connect error; real HTTP answers are the integration test's
 * (test_health).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "rw_health.h"
#include "rw_strategy.h"

static void expands(const char *tmpl, const char *route, const char *project,
                    const char *env, const char *want)
{
    char url[RW_HEALTH_URL_MAX], errstr[256] = "";

    if (rw_health_url(tmpl, route, project, env, url, sizeof(url), errstr,
                      sizeof(errstr)))
        fail_msg("%s: %s", tmpl, errstr);
    assert_string_equal(url, want);
    assert_int_equal(rw_health_url_check(tmpl, errstr, sizeof(errstr)), RW_OK);
}

static void refused(const char *tmpl, const char *route, rw_err_t want_err,
                    const char *want)
{
    char url[64] = "x", errstr[256] = "";

    assert_int_equal(rw_health_url(tmpl, route, "p", "e", url, sizeof(url),
                                   errstr, sizeof(errstr)),
                     want_err);
    assert_string_equal(url, "");
    if (!strstr(errstr, want))
        fail_msg("%s: error '%s' lacks '%s'", tmpl, errstr, want);
}

static void test_template(void **state)
{
    (void)state;
    expands("{route}/healthz", "https://main-shop.example.com", "shop", "main",
            "https://main-shop.example.com/healthz");
    expands("{route}", "http://r.example", "p", "e", "http://r.example");
    /* project and environment are percent-encoded, the route is a URL */
    expands("https://probe.example/{project}/{environment}?x=1",
            "http://unused", "my shop", "feature/a&b",
            "https://probe.example/my%20shop/feature%2Fa%26b?x=1");
    expands("http://{environment}.{project}.example/health", NULL, "p-1",
            "main", "http://main.p-1.example/health");
    expands("HTTPS://Example/{project}", NULL, "a.b_c~d", "e",
            "HTTPS://Example/a.b_c~d");
    /* after {route}: a path, a query, or nothing */
    expands("{route}?probe=1", "http://r.example", "p", "e",
            "http://r.example?probe=1");
    expands("{route}/{project}/{environment}", "http://r.example", "a b", "e",
            "http://r.example/a%20b/e");
}

static void test_template_refused(void **state)
{
    char errstr[256];

    (void)state;
    refused("{route}/{host}", "http://r", RW_ERR_INVALID_ARG,
            "unknown placeholder {host}");
    refused("{route}/{Route}", "http://r", RW_ERR_INVALID_ARG,
            "unknown placeholder {Route}");
    refused("{route}/{project", "http://r", RW_ERR_INVALID_ARG,
            "'{' without '}'");
    refused("{route}/x}", "http://r", RW_ERR_INVALID_ARG, "'}' without '{'");
    refused("ftp://x/{project}", "http://r", RW_ERR_INVALID_ARG,
            "does not start with http://, https:// or {route}");
    refused("", "http://r", RW_ERR_INVALID_ARG, "empty");
    /* the environment has no route: nothing to check */
    refused("{route}/healthz", "", RW_ERR_NOT_FOUND, "no route");
    refused("{route}/healthz", NULL, RW_ERR_NOT_FOUND, "no route");
    /* a route that is not an http(s) URL */
    refused("{route}/healthz", "file:///etc/passwd", RW_ERR_INVALID_ARG,
            "not an http(s) URL");
    /* longer than the buffer (64) */
    refused("{route}/healthz",
            "http://a-very-long-route-name.example.com/with/a/long/path/on",
            RW_ERR_INVALID_ARG, "longer than 63");
    assert_int_equal(rw_health_url_check("{route}/{x}", errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
}

/*
 * {route} is inserted as is: anything after it but a path or a query could
 * make it another host, and anywhere but at the start it could be read as
 * a path, a user name or a query of another host.
 */
static void test_template_route_place(void **state)
{
    static const char *const bad[] = {
        "{route}@evil.example/", "{route}.evil.example/",
        "{route}:8080/",         "{route}#x",
        "{route}{project}",      "{route}\\x",
        "http://x/{route}",      "http://{route}/",
        "{route}/{route}",       "https://probe?{route}",
    };
    char errstr[256];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errstr[0] = '\0';
        if (rw_health_url_check(bad[i], errstr, sizeof(errstr)) !=
                RW_ERR_INVALID_ARG ||
            !strstr(errstr, "{route} only at the start"))
            fail_msg("%s: accepted or other error '%s'", bad[i], errstr);
        refused(bad[i], "http://r", RW_ERR_INVALID_ARG,
                "{route} only at the start");
    }
    assert_int_equal(rw_health_url_check("{route}", errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_health_url_check("{route}/a", errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_health_url_check("{route}?a", errstr, sizeof(errstr)),
                     RW_OK);
}

/* The redirect rule: the same scheme, host and port, nothing else. */
static void test_same_origin(void **state)
{
    (void)state;
    assert_true(
        rw_health_same_origin("http://h.example/a", "http://h.example/b"));
    assert_true(
        rw_health_same_origin("http://h.example/a", "http://H.Example:80/b?c"));
    assert_true(rw_health_same_origin("https://h.example:443/a",
                                      "https://h.example/b"));
    assert_true(rw_health_same_origin("http://127.0.0.1:8080/a",
                                      "http://127.0.0.1:8080/b"));
    /* another port of the same host: another service */
    assert_false(rw_health_same_origin("http://127.0.0.1:8080/a",
                                       "http://127.0.0.1:8081/a"));
    assert_false(
        rw_health_same_origin("http://h.example/a", "http://h.example:8080/"));
    /* never a downgrade, nor another scheme */
    assert_false(
        rw_health_same_origin("https://h.example/a", "http://h.example/a"));
    assert_false(
        rw_health_same_origin("http://h.example/a", "https://h.example/a"));
    assert_false(
        rw_health_same_origin("http://h.example/a", "http://g.example/"));
    assert_false(rw_health_same_origin("http://h.example/a", "/relative"));
    assert_false(
        rw_health_same_origin("http://h.example/a", "ftp://h.example/"));
    assert_false(rw_health_same_origin(NULL, "http://h.example/"));
    assert_false(rw_health_same_origin("http://h.example/", NULL));
}

/* The strategy parser refuses what the poller could not expand. */
static void test_strategy_uses_rule(void **state)
{
    rw_strategy_t st;
    char errstr[256] = "";

    (void)state;
    assert_int_equal(
        rw_strategy_parse_json("{\"health\":{\"url\":\"{route}/{nope}\"}}", &st,
                               errstr, sizeof(errstr)),
        RW_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "strategy.health.url: unknown placeholder "
                                   "{nope}"));
    assert_int_equal(
        rw_strategy_parse_json("{\"health\":{\"url\":\"{route}/healthz\","
                               "\"attempts\":2,\"interval_s\":1}}",
                               &st, errstr, sizeof(errstr)),
        RW_OK);
    assert_true(st.health.set);
    assert_string_equal(st.health.url, "{route}/healthz");
    assert_int_equal(
        rw_strategy_parse_json("{\"health\":{\"url\":\"{route}@x.example/\"}}",
                               &st, errstr, sizeof(errstr)),
        RW_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "{route} only at the start"));
}

static void test_display(void **state)
{
    char buf[128];

    (void)state;
    rw_health_url_display("https://h.example/healthz?token=s3cret#x", buf,
                          sizeof(buf));
    assert_string_equal(buf, "https://h.example/healthz");
    rw_health_url_display("https://user:pw@h.example:8443/a?b", buf,
                          sizeof(buf));
    assert_string_equal(buf, "https://h.example:8443/a");
    /* an @ in the path is not a password */
    rw_health_url_display("http://h/a@b", buf, sizeof(buf));
    assert_string_equal(buf, "http://h/a@b");
    rw_health_url_display("http://h.example/a", buf, 10);
    /* cut to fit, and marked */
    assert_string_equal(buf, "http:/...");
}

static void test_classify(void **state)
{
    char what[64];

    (void)state;
    assert_int_equal(rw_health_classify(CURLE_OK, 200, what, sizeof(what)),
                     RW_HEALTH_OK);
    assert_string_equal(what, "HTTP 200");
    assert_int_equal(rw_health_classify(CURLE_OK, 204, NULL, 0), RW_HEALTH_OK);
    assert_int_equal(rw_health_classify(CURLE_OK, 299, NULL, 0), RW_HEALTH_OK);
    assert_int_equal(rw_health_classify(CURLE_OK, 503, what, sizeof(what)),
                     RW_HEALTH_FAILED);
    assert_string_equal(what, "HTTP 503");
    /* a redirect not followed (another host) is not healthy */
    assert_int_equal(rw_health_classify(CURLE_OK, 302, what, sizeof(what)),
                     RW_HEALTH_FAILED);
    assert_string_equal(what, "HTTP 302");
    assert_int_equal(rw_health_classify(CURLE_OK, 404, NULL, 0),
                     RW_HEALTH_FAILED);
    assert_int_equal(rw_health_classify(CURLE_OK, 199, NULL, 0),
                     RW_HEALTH_FAILED);
    assert_int_equal(
        rw_health_classify(CURLE_OPERATION_TIMEDOUT, 0, what, sizeof(what)),
        RW_HEALTH_ERROR);
    assert_string_equal(what, "timeout");
    assert_int_equal(
        rw_health_classify(CURLE_COULDNT_CONNECT, 0, what, sizeof(what)),
        RW_HEALTH_ERROR);
    assert_string_equal(what, "connect error");
    assert_int_equal(
        rw_health_classify(CURLE_COULDNT_RESOLVE_HOST, 0, what, sizeof(what)),
        RW_HEALTH_ERROR);
    assert_string_equal(what, "connect error");
    assert_int_equal(
        rw_health_classify(CURLE_RECV_ERROR, 0, what, sizeof(what)),
        RW_HEALTH_ERROR);
    assert_string_equal(what, curl_easy_strerror(CURLE_RECV_ERROR));
}

/* A closed local port: every check of the batch is a connect error. */
static void test_batch_connect_error(void **state)
{
    rw_health_check_t ck[3];
    char errstr[256];

    (void)state;
    memset(ck, 0, sizeof(ck));
    for (int i = 0; i < 3; i++)
        ck[i].url = "http://127.0.0.1:1/healthz";
    assert_int_equal(rw_health_check_many(ck, 3, 2000, errstr, sizeof(errstr)),
                     RW_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ck[i].result, RW_HEALTH_ERROR);
        assert_int_equal(ck[i].http_status, 0);
        assert_string_equal(ck[i].what, "connect error");
    }
    assert_int_equal(
        rw_health_check_many(NULL, 0, 2000, errstr, sizeof(errstr)), RW_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_template),
        cmocka_unit_test(test_template_refused),
        cmocka_unit_test(test_template_route_place),
        cmocka_unit_test(test_same_origin),
        cmocka_unit_test(test_strategy_uses_rule),
        cmocka_unit_test(test_display),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_batch_connect_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
