/*
 * test_api_validate: what rollwave-api checks before a handler runs: path
 * patterns and their parameters, ids and limits in query values, uuids,
 * query parameter names, and JSON bodies against a field table (unknown
 * members, types, bounds, required members, arrays). Also the route table
 * itself: every pattern well formed and under /api/v1, no route twice,
 * writes never open to viewers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "api.h"

static void test_path_match(void **state)
{
    char p[RW_API_MAX_PARAMS][RW_API_PARAM_LEN + 1];
    char long_seg[RW_API_PARAM_LEN + 40];
    int n;

    (void)state;
    assert_true(rw_api_path_match("/api/v1/runs", "/api/v1/runs", p, &n));
    assert_int_equal(n, 0);
    assert_false(rw_api_path_match("/api/v1/runs", "/api/v1/runs/", p, &n));
    assert_false(rw_api_path_match("/api/v1/runs", "/api/v1/run", p, &n));
    assert_true(rw_api_path_match("/api/v1/runs/{uuid}/pause",
                                  "/api/v1/runs/0b0e-x/pause", p, &n));
    assert_int_equal(n, 1);
    assert_string_equal(p[0], "0b0e-x");
    assert_false(
        rw_api_path_match("/api/v1/runs/{uuid}", "/api/v1/runs/", p, &n));
    assert_false(rw_api_path_match("/api/v1/runs/{uuid}",
                                   "/api/v1/runs/a/pause", p, &n));
    assert_true(rw_api_path_match("/api/v1/instances/{id}/deployments",
                                  "/api/v1/instances/42/deployments", p, &n));
    assert_string_equal(p[0], "42");
    /* a parameter longer than any id or uuid is no match */
    memset(long_seg, 'a', sizeof(long_seg));
    memcpy(long_seg, "/api/v1/runs/", 13);
    long_seg[sizeof(long_seg) - 1] = '\0';
    assert_false(rw_api_path_match("/api/v1/runs/{uuid}", long_seg, p, &n));
}

static void test_parse_ll(void **state)
{
    long long v = -1;

    (void)state;
    assert_true(rw_api_parse_ll("42", 1, 100, &v));
    assert_int_equal(v, 42);
    assert_true(rw_api_parse_ll("9223372036854775807", 1, INT64_MAX, &v));
    assert_int_equal(v, INT64_MAX);
    v = 7;
    assert_false(rw_api_parse_ll("9223372036854775808", 1, INT64_MAX, &v));
    assert_false(rw_api_parse_ll("", 0, 10, &v));
    assert_false(rw_api_parse_ll(NULL, 0, 10, &v));
    assert_false(rw_api_parse_ll("-1", -5, 10, &v));
    assert_false(rw_api_parse_ll("+1", 0, 10, &v));
    assert_false(rw_api_parse_ll(" 1", 0, 10, &v));
    assert_false(rw_api_parse_ll("1x", 0, 10, &v));
    assert_false(rw_api_parse_ll("abc", 0, 10, &v));
    assert_false(rw_api_parse_ll("0", 1, 10, &v));
    assert_false(rw_api_parse_ll("11", 1, 10, &v));
    assert_int_equal(v, 7); /* untouched by refusals */
}

static void test_parse_key(void **state)
{
    long long k[3] = {-1, -1, -1};

    (void)state;
    assert_true(rw_api_parse_key("3.1042.0", k, 3));
    assert_int_equal(k[0], 3);
    assert_int_equal(k[1], 1042);
    assert_int_equal(k[2], 0);
    assert_true(rw_api_parse_key("9223372036854775807", k, 1));
    assert_int_equal(k[0], INT64_MAX);
    k[0] = 5;
    assert_false(rw_api_parse_key("3.1042", k, 3));     /* too few */
    assert_false(rw_api_parse_key("3.1042.1.2", k, 3)); /* too many */
    assert_false(rw_api_parse_key("3..1", k, 3));
    assert_false(rw_api_parse_key(".3.1", k, 3));
    assert_false(rw_api_parse_key("3.1.", k, 3));
    assert_false(rw_api_parse_key("3.-1.2", k, 3));
    assert_false(rw_api_parse_key("3.1.x", k, 3));
    assert_false(rw_api_parse_key("3.99999999999999999999.1", k, 3));
    assert_false(rw_api_parse_key("", k, 1));
    assert_false(rw_api_parse_key(NULL, k, 1));
    assert_false(rw_api_parse_key("1", k, RW_API_MAX_KEY + 1));
    assert_int_equal(k[0], 5); /* untouched by refusals */
}

static void test_uuid(void **state)
{
    (void)state;
    assert_true(rw_api_is_uuid("31014f31-6853-4554-9179-c8985f0fcfb2"));
    assert_true(rw_api_is_uuid("31014F31-6853-4554-9179-C8985F0FCFB2"));
    assert_false(rw_api_is_uuid("31014f31-6853-4554-9179-c8985f0fcfb"));
    assert_false(rw_api_is_uuid("31014f31x6853-4554-9179-c8985f0fcfb2"));
    assert_false(rw_api_is_uuid("g1014f31-6853-4554-9179-c8985f0fcfb2"));
    assert_false(rw_api_is_uuid(""));
    assert_false(rw_api_is_uuid(NULL));
}

static void test_query_names(void **state)
{
    static const char *const allowed[] = {"skip", "take", NULL};

    (void)state;
    assert_true(rw_api_query_allowed(allowed, "skip"));
    assert_true(rw_api_query_allowed(allowed, "take"));
    assert_false(rw_api_query_allowed(allowed, "Take"));
    assert_false(rw_api_query_allowed(allowed, "limit"));
    assert_false(rw_api_query_allowed(NULL, "skip"));
}

static const rw_api_field_t fields[] = {
    {"ids", RW_API_F_INT_ARRAY, false, 1, 3},
    {"app", RW_API_F_INT, false, 1, 1000},
    {"on", RW_API_F_BOOL, true, 0, 0},
    {"beta", RW_API_F_INT_NULL, false, 1, 10},
};

/* The member check_body blames for text, "" for the body itself, NULL
 * when it passes. */
static const char *blame(const char *text)
{
    static char field[64];
    json_t *body = json_loads(text, 0, NULL);
    const char *f = NULL;
    char errstr[256];
    rw_err_t err;

    assert_non_null(body);
    err = rw_api_check_body(body, fields, 4, &f, errstr, sizeof(errstr));
    snprintf(field, sizeof(field), "%s", f ? f : "");
    json_decref(body);
    return err ? field : NULL;
}

static void test_body(void **state)
{
    const char *f = NULL;
    char errstr[256];

    (void)state;
    assert_null(blame("{\"on\": true}"));
    assert_null(blame("{\"on\": false, \"ids\": [1, 2, 3], \"app\": 1000}"));
    assert_null(blame("{\"on\": true, \"beta\": null}"));
    assert_null(blame("{\"on\": true, \"beta\": 10}"));
    assert_string_equal(blame("{}"), "on");
    assert_string_equal(blame("{\"on\": true, \"extra\": 1}"), "extra");
    assert_string_equal(blame("{\"on\": 1}"), "on");
    assert_string_equal(blame("{\"on\": \"true\"}"), "on");
    assert_string_equal(blame("{\"on\": true, \"app\": 0}"), "app");
    assert_string_equal(blame("{\"on\": true, \"app\": 1001}"), "app");
    assert_string_equal(blame("{\"on\": true, \"app\": 1.5}"), "app");
    assert_string_equal(blame("{\"on\": true, \"app\": null}"), "app");
    assert_string_equal(blame("{\"on\": true, \"beta\": 11}"), "beta");
    assert_string_equal(blame("{\"on\": true, \"ids\": []}"), "ids");
    assert_string_equal(blame("{\"on\": true, \"ids\": [1, 2, 3, 4]}"), "ids");
    assert_string_equal(blame("{\"on\": true, \"ids\": [1, \"2\"]}"), "ids");
    assert_string_equal(blame("{\"on\": true, \"ids\": [0]}"), "ids");
    assert_string_equal(blame("{\"on\": true, \"ids\": 5}"), "ids");
    /* not an object at all: no member to blame */
    assert_string_equal(blame("[1]"), "");
    /* no body: fine unless something is required */
    assert_int_equal(
        rw_api_check_body(NULL, fields, 4, &f, errstr, sizeof(errstr)),
        RW_ERR_INVALID_ARG);
    assert_string_equal(f, "on");
    assert_int_equal(
        rw_api_check_body(NULL, fields, 2, &f, errstr, sizeof(errstr)), RW_OK);
    /* an empty table takes {} and nothing else */
    {
        json_t *empty = json_object(), *one = json_pack("{s:i}", "x", 1);
        assert_int_equal(
            rw_api_check_body(empty, NULL, 0, &f, errstr, sizeof(errstr)),
            RW_OK);
        assert_int_equal(
            rw_api_check_body(one, NULL, 0, &f, errstr, sizeof(errstr)),
            RW_ERR_INVALID_ARG);
        assert_string_equal(f, "x");
        json_decref(empty);
        json_decref(one);
    }
}

static void test_string_field(void **state)
{
    static const rw_api_field_t f[] = {
        {"name", RW_API_F_STRING, true, 1, 4},
    };
    const char *bad = NULL;
    char errstr[128];
    json_t *ok = json_pack("{s:s}", "name", "abcd");
    json_t *empty = json_pack("{s:s}", "name", "");
    json_t *lng = json_pack("{s:s}", "name", "abcde");
    json_t *num = json_pack("{s:i}", "name", 1);

    (void)state;
    assert_int_equal(rw_api_check_body(ok, f, 1, &bad, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(
        rw_api_check_body(empty, f, 1, &bad, errstr, sizeof(errstr)),
        RW_ERR_INVALID_ARG);
    assert_string_equal(bad, "name");
    assert_int_equal(rw_api_check_body(lng, f, 1, &bad, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_int_equal(rw_api_check_body(num, f, 1, &bad, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    json_decref(ok);
    json_decref(empty);
    json_decref(lng);
    json_decref(num);
}

static void test_object_field(void **state)
{
    static const rw_api_field_t f[] = {
        {"strategy", RW_API_F_OBJECT, false, 0, 0},
    };
    static const char *const bad_bodies[] = {
        "{\"strategy\": \"1,100%\"}", "{\"strategy\": [1]}",
        "{\"strategy\": null}", "{\"strategy\": 1}"};
    const char *bad = NULL;
    char errstr[128];
    json_t *body = json_loads("{\"strategy\": {\"waves\": [\"1\"]}}", 0, NULL);

    (void)state;
    assert_int_equal(
        rw_api_check_body(body, f, 1, &bad, errstr, sizeof(errstr)), RW_OK);
    json_decref(body);
    for (size_t i = 0; i < sizeof(bad_bodies) / sizeof(bad_bodies[0]); i++) {
        bad = NULL;
        body = json_loads(bad_bodies[i], 0, NULL);
        assert_non_null(body);
        assert_int_equal(
            rw_api_check_body(body, f, 1, &bad, errstr, sizeof(errstr)),
            RW_ERR_INVALID_ARG);
        assert_string_equal(bad, "strategy");
        json_decref(body);
    }
}

static void test_route_table(void **state)
{
    (void)state;
    assert_true(rw_api_routes_count > 0);
    for (size_t i = 0; i < rw_api_routes_count; i++) {
        const rw_api_route_t *r = &rw_api_routes[i];
        assert_int_equal(strncmp(r->pattern, "/api/v1/", 8), 0);
        assert_non_null(r->fn);
        assert_non_null(r->summary);
        assert_true(r->min_role >= RW_ROLE_VIEWER &&
                    r->min_role < RW_ROLE__COUNT);
        /* a write is never a viewer's */
        if (strcmp(r->method, "GET") != 0)
            assert_true(r->min_role >= RW_ROLE_OPERATOR);
        for (size_t j = i + 1; j < rw_api_routes_count; j++)
            assert_false(strcmp(r->method, rw_api_routes[j].method) == 0 &&
                         strcmp(r->pattern, rw_api_routes[j].pattern) == 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_match),
        cmocka_unit_test(test_parse_ll),
        cmocka_unit_test(test_parse_key),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_query_names),
        cmocka_unit_test(test_body),
        cmocka_unit_test(test_string_field),
        cmocka_unit_test(test_object_field),
        cmocka_unit_test(test_route_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
