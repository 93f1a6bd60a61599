/*
 * test_lagoon: request bodies, response parsing, dates, status mapping and
 * error classification of the Lagoon client, including the aliased
 * find-bulk query and its answers, without a Lagoon. The HTTP
 * round trip against the simulator is in tests/integration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "rw_lagoon.h"

#define BULK_QUERY                                                             \
    "mutation ($input: BulkDeploymentLatestInput!) "                           \
    "{ bulkDeployEnvironmentLatest(input: $input) }"
#define DEPLOYMENTS_QUERY                                                      \
    "query ($bulkId: String!) { deploymentsByBulkId(bulkId: $bulkId) "         \
    "{ id name status created started completed "                              \
    "environment { name route project { name } } } }"

static json_t *load(const char *text)
{
    json_error_t jerr;
    json_t *root;

    assert_non_null(text);
    root = json_loads(text, 0, &jerr);
    if (!root)
        fail_msg("invalid JSON: %s: %s", jerr.text, text);
    return root;
}

/* ------------------------------------------------------------ requests */

static void test_bulk_request_exact_query_and_variables(void **state)
{
    rw_lagoon_env_t envs[] = {{"proj-a", "main"}, {"proj-b", "develop"}};
    rw_lagoon_var_t vars[] = {{"LAGOON_VARIABLES_ONLY", "true"}};
    json_t *root, *input, *env0, *env1, *bv;
    char *text;

    (void)state;
    assert_string_equal(rw_lagoon_bulk_query, BULK_QUERY);
    text = rw_lagoon_bulk_request_json("rollwave r1 c0 a1", envs, 2, vars, 1);
    root = load(text);
    assert_int_equal(json_object_size(root), 2);
    assert_string_equal(json_string_value(json_object_get(root, "query")),
                        BULK_QUERY);
    input = json_object_get(json_object_get(root, "variables"), "input");
    assert_true(json_is_object(input));
    assert_string_equal(json_string_value(json_object_get(input, "name")),
                        "rollwave r1 c0 a1");
    assert_int_equal(json_array_size(json_object_get(input, "environments")),
                     2);
    env0 = json_object_get(
        json_array_get(json_object_get(input, "environments"), 0),
        "environment");
    env1 = json_object_get(
        json_array_get(json_object_get(input, "environments"), 1),
        "environment");
    assert_string_equal(json_string_value(json_object_get(env0, "name")),
                        "main");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(env0, "project"), "name")),
                        "proj-a");
    assert_string_equal(json_string_value(json_object_get(env1, "name")),
                        "develop");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(env1, "project"), "name")),
                        "proj-b");
    bv = json_object_get(input, "buildVariables");
    assert_int_equal(json_array_size(bv), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(bv, 0), "name")),
        "LAGOON_VARIABLES_ONLY");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(bv, 0), "value")),
        "true");
    json_decref(root);
    free(text);
}

static void test_bulk_request_hostile_values_stay_in_variables(void **state)
{
    const char *evil = "evil\"}){x}";
    const char *evil_env = "main\") { __schema { types { name } } } #";
    rw_lagoon_env_t envs[] = {{evil, evil_env}};
    rw_lagoon_var_t vars[] = {{"X\"}", "$input"}};
    json_t *root, *env, *bv;
    const char *query;
    char *text;

    (void)state;
    text = rw_lagoon_bulk_request_json("bulk \"} $input", envs, 1, vars, 1);
    root = load(text);
    query = json_string_value(json_object_get(root, "query"));
    /* Byte-identical query whatever the values are. */
    assert_string_equal(query, BULK_QUERY);
    assert_null(strstr(query, "evil"));
    env = json_object_get(
        json_array_get(
            json_object_get(
                json_object_get(json_object_get(root, "variables"), "input"),
                "environments"),
            0),
        "environment");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(env, "project"), "name")),
                        evil);
    assert_string_equal(json_string_value(json_object_get(env, "name")),
                        evil_env);
    bv = json_array_get(
        json_object_get(
            json_object_get(json_object_get(root, "variables"), "input"),
            "buildVariables"),
        0);
    assert_string_equal(json_string_value(json_object_get(bv, "name")), "X\"}");
    assert_string_equal(json_string_value(json_object_get(bv, "value")),
                        "$input");
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(root, "variables"), "input"),
            "name")),
        "bulk \"} $input");
    json_decref(root);
    free(text);
}

static void test_bulk_request_without_vars_has_empty_list(void **state)
{
    rw_lagoon_env_t envs[] = {{"p", "e"}};
    json_t *root, *bv;
    char *text;

    (void)state;
    text = rw_lagoon_bulk_request_json("b", envs, 1, NULL, 0);
    root = load(text);
    bv = json_object_get(
        json_object_get(json_object_get(root, "variables"), "input"),
        "buildVariables");
    assert_true(json_is_array(bv));
    assert_int_equal(json_array_size(bv), 0);
    json_decref(root);
    free(text);
}

static void test_bulk_request_rejects_bad_input(void **state)
{
    rw_lagoon_env_t envs[] = {{"p", "e"}};
    rw_lagoon_env_t no_project[] = {{NULL, "e"}};
    rw_lagoon_env_t bad_utf8[] = {{"p\xff\xfe", "e"}};
    rw_lagoon_var_t no_value[] = {{"A", NULL}};

    (void)state;
    assert_null(rw_lagoon_bulk_request_json("b", envs, 0, NULL, 0));
    assert_null(rw_lagoon_bulk_request_json("b", NULL, 1, NULL, 0));
    assert_null(rw_lagoon_bulk_request_json(NULL, envs, 1, NULL, 0));
    assert_null(rw_lagoon_bulk_request_json("b", no_project, 1, NULL, 0));
    assert_null(rw_lagoon_bulk_request_json("b", bad_utf8, 1, NULL, 0));
    assert_null(rw_lagoon_bulk_request_json("b", envs, 1, no_value, 1));
    assert_null(rw_lagoon_bulk_request_json("b", envs, 1, NULL, 1));
}

static void test_deployments_request(void **state)
{
    json_t *root;
    char *text;

    (void)state;
    assert_string_equal(rw_lagoon_deployments_query, DEPLOYMENTS_QUERY);
    text = rw_lagoon_deployments_request_json("abc\"}) { x }");
    root = load(text);
    assert_int_equal(json_object_size(root), 2);
    assert_string_equal(json_string_value(json_object_get(root, "query")),
                        DEPLOYMENTS_QUERY);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(root, "variables"), "bulkId")),
                        "abc\"}) { x }");
    json_decref(root);
    free(text);
    assert_null(rw_lagoon_deployments_request_json(NULL));
    assert_null(rw_lagoon_deployments_request_json(""));
}

/* ------------------------------------------------------ classification */

static void test_classify(void **state)
{
    (void)state;
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 200), RW_OK);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 204), RW_OK);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 401), RW_ERR_LAGOON_AUTH);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 403), RW_ERR_LAGOON_AUTH);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 429),
                     RW_ERR_LAGOON_RATE_LIMITED);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 408), RW_ERR_LAGOON_TIMEOUT);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 500), RW_ERR_LAGOON_SERVER);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 502), RW_ERR_LAGOON_SERVER);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 503), RW_ERR_LAGOON_SERVER);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 599), RW_ERR_LAGOON_SERVER);
    /* Refused by the HTTP layer: never reached the resolver. */
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 400), RW_ERR_LAGOON_REJECTED);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 404), RW_ERR_LAGOON_REJECTED);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 413), RW_ERR_LAGOON_REJECTED);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 301), RW_ERR_LAGOON_REJECTED);
    /* No HTTP status at all, or an informational one: not an answer. */
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 0), RW_ERR_LAGOON_PROTOCOL);
    assert_int_equal(rw_lagoon_classify(CURLE_OK, 101), RW_ERR_LAGOON_PROTOCOL);
    assert_int_equal(rw_lagoon_classify(CURLE_OPERATION_TIMEDOUT, 0),
                     RW_ERR_LAGOON_TIMEOUT);
    /* The request never left: resolve, connect, TLS handshake. */
    assert_int_equal(rw_lagoon_classify(CURLE_COULDNT_CONNECT, 0),
                     RW_ERR_LAGOON_CONNECT);
    assert_int_equal(rw_lagoon_classify(CURLE_COULDNT_RESOLVE_HOST, 0),
                     RW_ERR_LAGOON_CONNECT);
    assert_int_equal(rw_lagoon_classify(CURLE_COULDNT_RESOLVE_PROXY, 0),
                     RW_ERR_LAGOON_CONNECT);
    assert_int_equal(rw_lagoon_classify(CURLE_SSL_CONNECT_ERROR, 0),
                     RW_ERR_LAGOON_CONNECT);
    assert_int_equal(rw_lagoon_classify(CURLE_PEER_FAILED_VERIFICATION, 0),
                     RW_ERR_LAGOON_CONNECT);
    /* Lost after the request may have gone out. */
    assert_int_equal(rw_lagoon_classify(CURLE_GOT_NOTHING, 0),
                     RW_ERR_LAGOON_NETWORK);
    assert_int_equal(rw_lagoon_classify(CURLE_RECV_ERROR, 0),
                     RW_ERR_LAGOON_NETWORK);
    assert_int_equal(rw_lagoon_classify(CURLE_SEND_ERROR, 0),
                     RW_ERR_LAGOON_NETWORK);
    assert_int_equal(rw_lagoon_classify(CURLE_PARTIAL_FILE, 0),
                     RW_ERR_LAGOON_NETWORK);
    assert_int_equal(rw_lagoon_classify(CURLE_URL_MALFORMAT, 0), RW_ERR_CONFIG);
    /* The curl result wins over a stale status code. */
    assert_int_equal(rw_lagoon_classify(CURLE_RECV_ERROR, 200),
                     RW_ERR_LAGOON_NETWORK);

    assert_true(rw_err_is_retriable(rw_lagoon_classify(CURLE_OK, 503)));
    assert_true(rw_err_is_retriable(rw_lagoon_classify(CURLE_OK, 429)));
    assert_true(
        rw_err_is_retriable(rw_lagoon_classify(CURLE_OPERATION_TIMEDOUT, 0)));
    assert_true(
        rw_err_is_retriable(rw_lagoon_classify(CURLE_COULDNT_CONNECT, 0)));
    /* the client re-reads a rotated token: worth another try */
    assert_true(rw_err_is_retriable(rw_lagoon_classify(CURLE_OK, 401)));
    assert_false(rw_err_is_retriable(rw_lagoon_classify(CURLE_OK, 400)));
}

/*
 * What a failed bulk deploy means for the rollout: whether Lagoon may have
 * run it depends on whether the request left us.
 */
static void test_classify_transport(void **state)
{
    static const struct {
        CURLcode cc;
        long sent;
        rw_err_t err;
        rw_err_class_t on_send;
    } cases[] = {
        {CURLE_OK, 100, RW_OK, RW_ERR_CLASS_PERMANENT},
        {CURLE_COULDNT_CONNECT, 0, RW_ERR_LAGOON_CONNECT, RW_ERR_CLASS_RETRY},
        {CURLE_COULDNT_RESOLVE_HOST, 0, RW_ERR_LAGOON_CONNECT,
         RW_ERR_CLASS_RETRY},
        {CURLE_SSL_CONNECT_ERROR, 0, RW_ERR_LAGOON_CONNECT, RW_ERR_CLASS_RETRY},
        /* a connect timeout: nothing was sent */
        {CURLE_OPERATION_TIMEDOUT, 0, RW_ERR_LAGOON_CONNECT,
         RW_ERR_CLASS_RETRY},
        {CURLE_OPERATION_TIMEDOUT, 412, RW_ERR_LAGOON_TIMEOUT,
         RW_ERR_CLASS_IN_DOUBT},
        {CURLE_RECV_ERROR, 412, RW_ERR_LAGOON_NETWORK, RW_ERR_CLASS_IN_DOUBT},
        {CURLE_SEND_ERROR, 412, RW_ERR_LAGOON_NETWORK, RW_ERR_CLASS_IN_DOUBT},
        {CURLE_GOT_NOTHING, 412, RW_ERR_LAGOON_NETWORK, RW_ERR_CLASS_IN_DOUBT},
        {CURLE_PARTIAL_FILE, 412, RW_ERR_LAGOON_NETWORK, RW_ERR_CLASS_IN_DOUBT},
        {CURLE_SEND_ERROR, 0, RW_ERR_LAGOON_CONNECT, RW_ERR_CLASS_RETRY},
        /* a connect failure stays one whatever the byte count says */
        {CURLE_COULDNT_CONNECT, 412, RW_ERR_LAGOON_CONNECT, RW_ERR_CLASS_RETRY},
        {CURLE_URL_MALFORMAT, 0, RW_ERR_CONFIG, RW_ERR_CLASS_PERMANENT},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        rw_err_t e = rw_lagoon_classify_transport(cases[i].cc, cases[i].sent);

        if (e != cases[i].err ||
            rw_err_class(e, RW_OP_SEND) != cases[i].on_send)
            fail_msg("case %zu (curl %d, %ld bytes): %s", i, (int)cases[i].cc,
                     cases[i].sent, rw_err_name(e));
    }
}

/* ------------------------------------------------------ bulk responses */

static void test_parse_bulk_ok(void **state)
{
    char id[RW_LAGOON_BULK_ID_MAX], err[256];

    (void)state;
    assert_int_equal(rw_lagoon_parse_bulk_response(
                         200,
                         "{\"data\":{\"bulkDeployEnvironmentLatest\":"
                         "\"5b0c7bde-1b47-4b5e-9d8c-2a3a7f4e1c11\"}}",
                         id, sizeof(id), err, sizeof(err)),
                     RW_OK);
    assert_string_equal(id, "5b0c7bde-1b47-4b5e-9d8c-2a3a7f4e1c11");
}

static void test_parse_bulk_graphql_error(void **state)
{
    char id[64] = "stale", err[256];
    rw_err_t e;

    (void)state;
    e = rw_lagoon_parse_bulk_response(
        200,
        "{\"data\":null,\"errors\":[{\"message\":\"Unknown project\"},"
        "{\"message\":\"second\"}]}",
        id, sizeof(id), err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_GRAPHQL);
    assert_false(rw_err_is_retriable(e));
    assert_non_null(strstr(err, "Unknown project"));
    assert_null(strstr(err, "second"));
    assert_string_equal(id, "");

    /* data present but the field null, with errors: still GraphQL. */
    e = rw_lagoon_parse_bulk_response(
        200,
        "{\"data\":{\"bulkDeployEnvironmentLatest\":null},"
        "\"errors\":[{\"message\":\"boom\"}]}",
        id, sizeof(id), err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_GRAPHQL);
    assert_non_null(strstr(err, "boom"));

    /* An error without a message is still a GraphQL error. */
    e = rw_lagoon_parse_bulk_response(200, "{\"data\":null,\"errors\":[{}]}",
                                      id, sizeof(id), err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_GRAPHQL);
}

static void test_parse_bulk_long_error_is_truncated(void **state)
{
    char body[4096], id[64], err[2048];
    size_t off;

    (void)state;
    off = (size_t)snprintf(body, sizeof(body),
                           "{\"data\":null,\"errors\":[{\"message\":\"");
    memset(body + off, 'm', 2000);
    off += 2000;
    snprintf(body + off, sizeof(body) - off, "\"}]}");
    assert_int_equal(rw_lagoon_parse_bulk_response(200, body, id, sizeof(id),
                                                   err, sizeof(err)),
                     RW_ERR_LAGOON_GRAPHQL);
    assert_true(strlen(err) < 400);
    assert_true(strlen(err) > 100);

    /* A small caller buffer truncates without overflow. */
    char small[16];
    assert_int_equal(rw_lagoon_parse_bulk_response(200, body, id, sizeof(id),
                                                   small, sizeof(small)),
                     RW_ERR_LAGOON_GRAPHQL);
    assert_int_equal(strlen(small), sizeof(small) - 1);

    /* cut on a character: "x" then 2-byte characters, cut after one byte
     * of the 150th (300 bytes); the message ends on the 149th */
    off = (size_t)snprintf(body, sizeof(body),
                           "{\"data\":null,\"errors\":[{\"message\":\"x");
    for (int i = 0; i < 400; i++, off += 2)
        memcpy(body + off, "\xc3\xa9", 2);
    snprintf(body + off, sizeof(body) - off, "\"}]}");
    assert_int_equal(rw_lagoon_parse_bulk_response(200, body, id, sizeof(id),
                                                   err, sizeof(err)),
                     RW_ERR_LAGOON_GRAPHQL);
    {
        const char *m = strstr(err, "x\xc3\xa9");
        size_t k;
        assert_non_null(m);
        for (k = 1; m[k] == '\xc3' && m[k + 1] == '\xa9'; k += 2)
            ;
        /* whatever follows the message, it is not a lone lead byte */
        assert_int_equal(k, 1 + 2 * 149);
        assert_true((unsigned char)m[k] < 0x80);
    }
}

static void test_parse_bulk_http_errors(void **state)
{
    char id[64], err[256];

    (void)state;
    assert_int_equal(
        rw_lagoon_parse_bulk_response(
            401,
            "{\"errors\":[{\"message\":\"Unauthorized - Bearer token "
            "signature is invalid\"}]}",
            id, sizeof(id), err, sizeof(err)),
        RW_ERR_LAGOON_AUTH);
    assert_non_null(strstr(err, "401"));
    assert_non_null(strstr(err, "Unauthorized"));
    assert_int_equal(rw_lagoon_parse_bulk_response(403, "", id, sizeof(id), err,
                                                   sizeof(err)),
                     RW_ERR_LAGOON_AUTH);
    assert_int_equal(rw_lagoon_parse_bulk_response(500, "<html>oops</html>", id,
                                                   sizeof(id), err,
                                                   sizeof(err)),
                     RW_ERR_LAGOON_SERVER);
    assert_non_null(strstr(err, "500"));
    assert_int_equal(rw_lagoon_parse_bulk_response(503, NULL, id, sizeof(id),
                                                   err, sizeof(err)),
                     RW_ERR_LAGOON_SERVER);
    assert_int_equal(rw_lagoon_parse_bulk_response(
                         429, "slow down", id, sizeof(id), err, sizeof(err)),
                     RW_ERR_LAGOON_RATE_LIMITED);
    assert_int_equal(rw_lagoon_parse_bulk_response(404, "nope", id, sizeof(id),
                                                   err, sizeof(err)),
                     RW_ERR_LAGOON_REJECTED);
    /* Validation failures answered with 400 and an errors array. */
    assert_int_equal(
        rw_lagoon_parse_bulk_response(
            400, "{\"errors\":[{\"message\":\"Unknown type \\\"Foo\\\".\"}]}",
            id, sizeof(id), err, sizeof(err)),
        RW_ERR_LAGOON_GRAPHQL);
    assert_non_null(strstr(err, "Unknown type"));
}

static void test_parse_bulk_protocol_errors(void **state)
{
    char id[64], tiny[8], err[256];
    const char *bad[] = {
        "",
        "not json",
        "[1,2]",
        "{\"data\":null}",
        "{\"data\":{}}",
        "{\"data\":{\"bulkDeployEnvironmentLatest\":42}}",
        "{\"data\":{\"bulkDeployEnvironmentLatest\":\"\"}}",
        "{\"data\":{\"bulkDeployEnvironmentLatest\":\"x\"",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rw_err_t e = rw_lagoon_parse_bulk_response(200, bad[i], id, sizeof(id),
                                                   err, sizeof(err));
        if (e != RW_ERR_LAGOON_PROTOCOL)
            fail_msg("body %zu (%s) gave %s", i, bad[i], rw_err_name(e));
        assert_true(strlen(err) > 0);
    }
    /* An id that does not fit the caller's buffer is refused, not cut. */
    assert_int_equal(
        rw_lagoon_parse_bulk_response(
            200, "{\"data\":{\"bulkDeployEnvironmentLatest\":\"12345678\"}}",
            tiny, sizeof(tiny), err, sizeof(err)),
        RW_ERR_LAGOON_PROTOCOL);
}

/* ------------------------------------------------- deployment responses */

static const char rows_body[] =
    "{\"data\":{\"deploymentsByBulkId\":["
    /* 0: plain Lagoon date format, still running */
    "{\"id\":10,\"name\":\"lagoon-build-aaa\",\"status\":\"running\","
    "\"created\":\"2026-11-22 16:00:00\",\"started\":\"2026-11-22 16:00:01\","
    "\"completed\":null,"
    "\"environment\":{\"name\":\"main\",\"project\":{\"name\":\"p1\"}}},"
    /* 1: ISO 8601 with Z and fractional seconds, complete */
    "{\"id\":11,\"name\":\"lagoon-build-bbb\",\"status\":\"complete\","
    "\"created\":\"2026-11-22T16:00:00Z\","
    "\"started\":\"2026-11-22T16:00:02.123Z\","
    "\"completed\":\"2026-11-22T18:05:00+02:00\","
    "\"environment\":{\"name\":\"main\",\"route\":\"https://p2.example\","
    "\"project\":{\"name\":\"p2\"}}},"
    /* 2: environment deleted: skipped */
    "{\"id\":12,\"name\":\"lagoon-build-ccc\",\"status\":\"failed\","
    "\"created\":\"2026-11-22 16:00:00\",\"started\":null,\"completed\":null,"
    "\"environment\":null},"
    /* 3: older duplicate for p1/main, higher id later in the list */
    "{\"id\":7,\"name\":\"lagoon-build-old\",\"status\":\"failed\","
    "\"created\":\"2026-11-20 10:00:00\",\"started\":null,\"completed\":null,"
    "\"environment\":{\"name\":\"main\",\"project\":{\"name\":\"p1\"}}},"
    /* 4: newest for p1/main; null name and status, missing dates */
    "{\"id\":15,\"name\":null,\"status\":null,"
    "\"environment\":{\"name\":\"main\",\"project\":{\"name\":\"p1\"}}},"
    /* 5: project null: skipped */
    "{\"id\":16,\"name\":\"x\",\"status\":\"new\","
    "\"environment\":{\"name\":\"main\",\"project\":null}}"
    "]}}";

static void test_parse_deployments_rows(void **state)
{
    rw_lagoon_deployments_t *d = NULL;
    const rw_lagoon_deployment_t *r;
    char err[256];

    (void)state;
    assert_int_equal(rw_lagoon_parse_deployments_response(200, rows_body, &d,
                                                          err, sizeof(err)),
                     RW_OK);
    assert_non_null(d);
    assert_int_equal(d->n, 4);

    /* 2026-11-22 16:00:00 UTC */
    assert_int_equal(d->rows[0].id, 10);
    assert_string_equal(d->rows[0].name, "lagoon-build-aaa");
    assert_string_equal(d->rows[0].status, "running");
    assert_string_equal(d->rows[0].project, "p1");
    assert_string_equal(d->rows[0].environment, "main");
    /* no route field, or null: "" */
    assert_string_equal(d->rows[0].route, "");
    assert_int_equal(d->rows[0].created, 1795363200);
    assert_int_equal(d->rows[0].started, 1795363201);
    assert_int_equal(d->rows[0].completed, 0);

    r = rw_lagoon_deployments_find(d, "p2", "main");
    assert_non_null(r);
    assert_int_equal(r->id, 11);
    assert_string_equal(r->route, "https://p2.example");
    assert_int_equal(r->created, 1795363200);
    assert_int_equal(r->started, 1795363202);
    /* 18:05 at +02:00 is 16:05 UTC */
    assert_int_equal(r->completed, 1795363200 + 5 * 60);

    /* highest id wins for p1/main, whatever the order */
    r = rw_lagoon_deployments_find(d, "p1", "main");
    assert_non_null(r);
    assert_int_equal(r->id, 15);
    assert_string_equal(r->name, "");
    assert_string_equal(r->status, "");
    assert_int_equal(r->created, 0);
    assert_int_equal(rw_lagoon_status_parse(r->status),
                     RW_LAGOON_STATUS_UNKNOWN);

    assert_null(rw_lagoon_deployments_find(d, "p3", "main"));
    assert_null(rw_lagoon_deployments_find(d, "p1", "develop"));
    assert_null(rw_lagoon_deployments_find(d, NULL, "main"));
    assert_null(rw_lagoon_deployments_find(NULL, "p1", "main"));
    rw_lagoon_deployments_free(d);
}

static void test_parse_deployments_empty_and_missing(void **state)
{
    rw_lagoon_deployments_t *d = NULL;
    char err[256];
    const char *protocol[] = {
        "{\"data\":{\"deploymentsByBulkId\":null}}",
        "{\"data\":{}}",
        "{\"data\":null}",
        "{}",
        "{\"data\":{\"deploymentsByBulkId\":{\"id\":1}}}",
        "{\"data\":{\"deploymentsByBulkId\":[42]}}",
        "{\"data\":{\"deploymentsByBulkId\":[{\"name\":\"no id\"}]}}",
        "{\"data\":{\"deploymentsByBulkId\":[{\"id\":\"12x\"}]}}",
        "{\"data\":",
    };

    (void)state;
    assert_int_equal(rw_lagoon_parse_deployments_response(
                         200, "{\"data\":{\"deploymentsByBulkId\":[]}}", &d,
                         err, sizeof(err)),
                     RW_OK);
    assert_non_null(d);
    assert_int_equal(d->n, 0);
    assert_null(rw_lagoon_deployments_find(d, "p", "e"));
    rw_lagoon_deployments_free(d);

    for (size_t i = 0; i < sizeof(protocol) / sizeof(protocol[0]); i++) {
        d = (rw_lagoon_deployments_t *)1;
        rw_err_t e = rw_lagoon_parse_deployments_response(200, protocol[i], &d,
                                                          err, sizeof(err));
        if (e != RW_ERR_LAGOON_PROTOCOL)
            fail_msg("body %zu (%s) gave %s", i, protocol[i], rw_err_name(e));
        assert_null(d);
    }
}

static void test_parse_deployments_errors(void **state)
{
    rw_lagoon_deployments_t *d = NULL;
    char err[256];

    (void)state;
    assert_int_equal(
        rw_lagoon_parse_deployments_response(
            200,
            "{\"data\":null,\"errors\":[{\"message\":\"Cannot query field "
            "\\\"x\\\" on type \\\"Query\\\".\"}]}",
            &d, err, sizeof(err)),
        RW_ERR_LAGOON_GRAPHQL);
    assert_null(d);
    assert_non_null(strstr(err, "Cannot query field"));
    assert_int_equal(rw_lagoon_parse_deployments_response(
                         500, "{\"errors\":[{\"message\":\"internal\"}]}", &d,
                         err, sizeof(err)),
                     RW_ERR_LAGOON_SERVER);
    assert_null(d);
    assert_int_equal(rw_lagoon_parse_deployments_response(
                         401, "{\"errors\":[]}", &d, err, sizeof(err)),
                     RW_ERR_LAGOON_AUTH);
    assert_int_equal(
        rw_lagoon_parse_deployments_response(429, NULL, &d, err, sizeof(err)),
        RW_ERR_LAGOON_RATE_LIMITED);
}

static void test_parse_deployments_string_id_and_bad_date(void **state)
{
    rw_lagoon_deployments_t *d = NULL;
    char err[256];

    (void)state;
    assert_int_equal(
        rw_lagoon_parse_deployments_response(
            200,
            "{\"data\":{\"deploymentsByBulkId\":[{\"id\":\"99\","
            "\"name\":\"n\",\"status\":\"COMPLETE\",\"created\":\"yesterday\","
            "\"completed\":\"2026-11-22 16:00:00\",\"environment\":"
            "{\"name\":\"e\",\"project\":{\"name\":\"p\"}}}]}}",
            &d, err, sizeof(err)),
        RW_OK);
    assert_int_equal(d->n, 1);
    assert_int_equal(d->rows[0].id, 99);
    /* An unreadable date is treated as null rather than failing the poll. */
    assert_int_equal(d->rows[0].created, 0);
    assert_int_equal(d->rows[0].completed, 1795363200);
    assert_int_equal(rw_lagoon_status_parse(d->rows[0].status),
                     RW_LAGOON_STATUS_COMPLETE);
    rw_lagoon_deployments_free(d);
    rw_lagoon_deployments_free(NULL);
}

/* --------------------------------------------------------------- dates */

static void test_parse_time(void **state)
{
    static const struct {
        const char *s;
        time_t want;
    } ok[] = {
        {"2026-11-22 16:00:00", 1795363200},
        {"2026-11-22T16:00:00Z", 1795363200},
        {"2026-11-22T16:00:00z", 1795363200},
        {"2026-11-22T16:00:00", 1795363200},
        {"2026-11-22T16:00:00.5Z", 1795363200},
        {"2026-11-22T16:00:00.123456789Z", 1795363200},
        {"2026-11-22T18:00:00+02:00", 1795363200},
        {"2026-11-22T18:30:00+0230", 1795363200},
        {"2026-11-22T18:00:00+02", 1795363200},
        {"2026-11-22T11:00:00-05:00", 1795363200},
        {"2026-11-22T11:00:00.250-05:00", 1795363200},
        {"2026-11-23T00:30:00+08:30", 1795363200},
        {"1970-01-01 00:00:00", 0},
        {"2024-02-29 12:00:00", 1709208000},
        /* a leap second at a month's end is the next month's first second */
        {"2016-12-31T23:59:60Z", 1483228800},
    };
    static const char *bad[] = {
        "",
        "2026-11-22",
        "2026-11-22 16:00",
        "2026/11/22 16:00:00",
        "2026-13-22 16:00:00",
        "2026-02-31 10:00:00",
        "2026-04-31T10:00:00Z",
        "2026-11-32 16:00:00",
        "2026-11-22 24:00:00",
        "2026-11-22 16:60:00",
        "2026-11-22X16:00:00",
        "2026-11-22 16:00:00 ",
        "2026-11-22T16:00:00Zjunk",
        "2026-11-22T16:00:00.Z",
        "2026-11-22T16:00:00+2:00",
        "2026-11-22T16:00:00+02:",
        "2026-11-22T16:00:00+25:00",
        "yesterday",
    };
    time_t t;

    (void)state;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        t = -42;
        if (rw_lagoon_parse_time(ok[i].s, &t) != RW_OK)
            fail_msg("rejected %s", ok[i].s);
        if (t != ok[i].want)
            fail_msg("%s gave %lld, want %lld", ok[i].s, (long long)t,
                     (long long)ok[i].want);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (rw_lagoon_parse_time(bad[i], &t) != RW_ERR_INVALID_ARG)
            fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(rw_lagoon_parse_time(NULL, &t), RW_ERR_INVALID_ARG);
}

/* ------------------------------------------------------------ statuses */

static void test_status(void **state)
{
    static const struct {
        const char *s;
        rw_lagoon_status_t st;
        bool terminal, success;
    } cases[] = {
        {"new", RW_LAGOON_STATUS_NEW, false, false},
        {"pending", RW_LAGOON_STATUS_PENDING, false, false},
        {"queued", RW_LAGOON_STATUS_QUEUED, false, false},
        {"running", RW_LAGOON_STATUS_RUNNING, false, false},
        {"complete", RW_LAGOON_STATUS_COMPLETE, true, true},
        {"failed", RW_LAGOON_STATUS_FAILED, true, false},
        {"error", RW_LAGOON_STATUS_ERROR, true, false},
        {"cancelled", RW_LAGOON_STATUS_CANCELLED, true, false},
        {"Complete", RW_LAGOON_STATUS_COMPLETE, true, true},
        {"RUNNING", RW_LAGOON_STATUS_RUNNING, false, false},
        {"completed", RW_LAGOON_STATUS_UNKNOWN, false, false},
        {"", RW_LAGOON_STATUS_UNKNOWN, false, false},
        {"unknown", RW_LAGOON_STATUS_UNKNOWN, false, false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rw_lagoon_status_t st = rw_lagoon_status_parse(cases[i].s);
        if (st != cases[i].st)
            fail_msg("%s parsed as %d", cases[i].s, (int)st);
        assert_int_equal(rw_lagoon_status_is_terminal(st), cases[i].terminal);
        assert_int_equal(rw_lagoon_status_is_success(st), cases[i].success);
    }
    assert_int_equal(rw_lagoon_status_parse(NULL), RW_LAGOON_STATUS_UNKNOWN);
    assert_string_equal(rw_lagoon_status_name(RW_LAGOON_STATUS_CANCELLED),
                        "cancelled");
    assert_string_equal(rw_lagoon_status_name(RW_LAGOON_STATUS_UNKNOWN),
                        "unknown");
    assert_string_equal(rw_lagoon_status_name((rw_lagoon_status_t)99),
                        "unknown");
}

/* ------------------------------------------------------------ find bulk */

#define FIND_SEL                                                               \
    "{ name environments { name deployments(limit: $limit) "                   \
    "{ id name status created bulkId bulkName } } }"
#define BULK_NAME "rollwave 7d1c0f52-1111-4aaa-8bbb-0123456789ab c3 a2"

static const char *query_of(json_t *root)
{
    return json_string_value(json_object_get(root, "query"));
}

static void test_find_bulk_request_exact(void **state)
{
    const char *projects[] = {"alpha", "beta"};
    json_t *root, *vars;
    char *text;

    (void)state;
    text = rw_lagoon_find_bulk_request_json(projects, 2, 10);
    root = load(text);
    assert_int_equal(json_object_size(root), 2);
    assert_string_equal(query_of(root),
                        "query ($limit: Int!, $p0: String!, $p1: String!) {"
                        " p0: projectByName(name: $p0) " FIND_SEL
                        " p1: projectByName(name: $p1) " FIND_SEL " }");
    vars = json_object_get(root, "variables");
    assert_int_equal(json_object_size(vars), 3);
    assert_int_equal(json_integer_value(json_object_get(vars, "limit")), 10);
    assert_string_equal(json_string_value(json_object_get(vars, "p0")),
                        "alpha");
    assert_string_equal(json_string_value(json_object_get(vars, "p1")), "beta");
    json_decref(root);
    free(text);
}

/* Project names that would break out of a string, add fields, reuse our
 * alias and variable names or smuggle comments: the query text is the
 * same as for plain names, and each name arrives intact in its variable. */
static void test_find_bulk_request_hostile_names(void **state)
{
    const char *hostile[] = {
        "x\") { __typename } evil: projectByName(name: \"y",
        "$p0",
        "p1: projectByName(name: $limit) # comment\n}",
        "quote\"back\\slash{brace}\tnewline\n\xc3\xa9t\xc3\xa9",
    };
    const char *plain[] = {"a", "b", "c", "d"};
    json_t *h, *p, *vars;
    char *ht, *pt;

    (void)state;
    ht = rw_lagoon_find_bulk_request_json(hostile, 4, 3);
    pt = rw_lagoon_find_bulk_request_json(plain, 4, 3);
    h = load(ht);
    p = load(pt);
    assert_string_equal(query_of(h), query_of(p));
    assert_null(strstr(query_of(h), "evil"));
    assert_null(strstr(query_of(h), "comment"));
    assert_null(strstr(query_of(h), "__typename"));
    vars = json_object_get(h, "variables");
    assert_int_equal(json_object_size(vars), 5);
    for (size_t i = 0; i < 4; i++) {
        char var[8];

        snprintf(var, sizeof(var), "p%zu", i);
        assert_string_equal(json_string_value(json_object_get(vars, var)),
                            hostile[i]);
    }
    assert_int_equal(json_integer_value(json_object_get(vars, "limit")), 3);
    json_decref(h);
    json_decref(p);
    free(ht);
    free(pt);
}

static void test_find_bulk_request_limits(void **state)
{
    const char *many[RW_LAGOON_FIND_BULK_MAX_PROJECTS + 1];
    char names[RW_LAGOON_FIND_BULK_MAX_PROJECTS + 1][16];
    const char *with_null[] = {"a", NULL};
    const char *with_empty[] = {"a", ""};
    const char *bad_utf8[] = {"caf\xe9"};
    json_t *root;
    char *text, last[40];

    (void)state;
    for (size_t i = 0; i <= RW_LAGOON_FIND_BULK_MAX_PROJECTS; i++) {
        snprintf(names[i], sizeof(names[i]), "proj-%zu", i);
        many[i] = names[i];
    }
    text = rw_lagoon_find_bulk_request_json(
        many, RW_LAGOON_FIND_BULK_MAX_PROJECTS, 10);
    root = load(text);
    snprintf(last, sizeof(last), " p%d: projectByName(name: $p%d) ",
             RW_LAGOON_FIND_BULK_MAX_PROJECTS - 1,
             RW_LAGOON_FIND_BULK_MAX_PROJECTS - 1);
    assert_non_null(strstr(query_of(root), last));
    assert_int_equal(json_object_size(json_object_get(root, "variables")),
                     RW_LAGOON_FIND_BULK_MAX_PROJECTS + 1);
    json_decref(root);
    free(text);

    assert_null(rw_lagoon_find_bulk_request_json(
        many, RW_LAGOON_FIND_BULK_MAX_PROJECTS + 1, 10));
    assert_null(rw_lagoon_find_bulk_request_json(many, 0, 10));
    assert_null(rw_lagoon_find_bulk_request_json(NULL, 1, 10));
    assert_null(rw_lagoon_find_bulk_request_json(many, 1, 0));
    assert_null(rw_lagoon_find_bulk_request_json(with_null, 2, 10));
    assert_null(rw_lagoon_find_bulk_request_json(with_empty, 2, 10));
    assert_null(rw_lagoon_find_bulk_request_json(bad_utf8, 1, 10));
}

static const char *const find_projects[] = {"alpha", "beta"};
static const rw_lagoon_env_t find_envs[] = {{"alpha", "main"},
                                            {"beta", "main"}};

/* Parse body (HTTP status) for BULK_NAME over find_projects/find_envs. */
static rw_err_t parse_find(long status, const char *body, char *id,
                           size_t idlen, bool *found, char *err)
{
    return rw_lagoon_parse_find_bulk_response(status, body, find_projects, 2,
                                              find_envs, 2, BULK_NAME, id,
                                              idlen, found, err, 256);
}

static void test_parse_find_bulk_found(void **state)
{
    const char *body =
        "{\"data\":{"
        "\"p0\":{\"name\":\"alpha\",\"environments\":["
        "{\"name\":\"main\",\"deployments\":["
        "{\"id\":31,\"name\":\"lagoon-build-zz\",\"status\":\"new\","
        "\"created\":\"2024-05-01 10:00:02\",\"bulkId\":null,"
        "\"bulkName\":null},"
        "{\"id\":30,\"name\":\"lagoon-build-aa\",\"status\":\"running\","
        "\"created\":\"2024-05-01 10:00:00\",\"bulkId\":\"bulk-2\","
        "\"bulkName\":\"" BULK_NAME "\"},"
        "{\"id\":12,\"name\":\"lagoon-build-bb\",\"status\":\"complete\","
        "\"created\":\"2024-04-01 10:00:00\",\"bulkId\":\"bulk-1\","
        "\"bulkName\":\"rollwave 7d1c0f52-1111-4aaa-8bbb-0123456789ab c3 "
        "a1\"}]},"
        "{\"name\":\"develop\",\"deployments\":[]}]},"
        "\"p1\":{\"name\":\"beta\",\"environments\":["
        "{\"name\":\"main\",\"deployments\":[{\"id\":29,\"bulkId\":"
        "\"bulk-2\",\"bulkName\":\"" BULK_NAME "\"}]}]}}}";
    char id[RW_LAGOON_BULK_ID_MAX], err[256];
    bool found = false;

    (void)state;
    assert_int_equal(parse_find(200, body, id, sizeof(id), &found, err), RW_OK);
    assert_true(found);
    assert_string_equal(id, "bulk-2");

    /* The id must fit the caller's buffer. */
    assert_int_equal(parse_find(200, body, id, 6, &found, err),
                     RW_ERR_LAGOON_PROTOCOL);
    assert_false(found);
    assert_string_equal(id, "");
}

static void test_parse_find_bulk_not_found(void **state)
{
    /* Our name only on an environment outside the chunk (alpha/feature),
     * an earlier attempt's name on ours, empty and null lists. */
    const char *body =
        "{\"data\":{"
        "\"p0\":{\"name\":\"alpha\",\"environments\":["
        "{\"name\":\"feature\",\"deployments\":[{\"id\":5,\"bulkId\":"
        "\"bulk-x\",\"bulkName\":\"" BULK_NAME "\"}]},"
        "{\"name\":\"main\",\"deployments\":[{\"id\":4,\"bulkId\":"
        "\"bulk-1\",\"bulkName\":\"rollwave 7d1c0f52-1111-4aaa-8bbb-"
        "0123456789ab c3 a1\"},{\"id\":3,\"bulkId\":null,\"bulkName\":"
        "null}]}]},"
        "\"p1\":{\"name\":\"beta\",\"environments\":["
        "{\"name\":\"main\",\"deployments\":null},"
        "{\"name\":\"other\",\"deployments\":[]}]}}}";
    const char *no_envs = "{\"data\":{\"p0\":{\"name\":\"alpha\","
                          "\"environments\":[]},\"p1\":{\"name\":\"beta\","
                          "\"environments\":null}}}";
    char id[RW_LAGOON_BULK_ID_MAX], err[256];
    bool found = true;

    (void)state;
    assert_int_equal(parse_find(200, body, id, sizeof(id), &found, err), RW_OK);
    assert_false(found);
    assert_string_equal(id, "");
    found = true;
    assert_int_equal(parse_find(200, no_envs, id, sizeof(id), &found, err),
                     RW_OK);
    assert_false(found);
}

/* projectByName answers null for a project Lagoon does not know: no match
 * there, and no error. */
static void test_parse_find_bulk_null_project(void **state)
{
    const char *both_null = "{\"data\":{\"p0\":null,\"p1\":null}}";
    const char *one_null =
        "{\"data\":{\"p0\":null,\"p1\":{\"name\":\"beta\","
        "\"environments\":[{\"name\":\"main\",\"deployments\":[{\"id\":1,"
        "\"bulkId\":\"bulk-9\",\"bulkName\":\"" BULK_NAME "\"}]}]}}}";
    char id[RW_LAGOON_BULK_ID_MAX], err[256];
    bool found = true;

    (void)state;
    assert_int_equal(parse_find(200, both_null, id, sizeof(id), &found, err),
                     RW_OK);
    assert_false(found);
    assert_int_equal(parse_find(200, one_null, id, sizeof(id), &found, err),
                     RW_OK);
    assert_true(found);
    assert_string_equal(id, "bulk-9");
}

static void test_parse_find_bulk_errors(void **state)
{
    const char *all_failed =
        "{\"errors\":[{\"message\":\"Unauthorized: You don't have "
        "permission to \\\"view\\\" on \\\"project\\\"\"}],\"data\":null}";
    const char *partial_miss =
        "{\"errors\":[{\"message\":\"Unauthorized\",\"path\":[\"p1\"]}],"
        "\"data\":{\"p0\":{\"name\":\"alpha\",\"environments\":[]},"
        "\"p1\":null}}";
    const char *partial_hit =
        "{\"errors\":[{\"message\":\"Unauthorized\",\"path\":[\"p0\"]}],"
        "\"data\":{\"p0\":null,\"p1\":{\"name\":\"beta\",\"environments\":"
        "[{\"name\":\"main\",\"deployments\":[{\"id\":1,\"bulkId\":"
        "\"bulk-5\",\"bulkName\":\"" BULK_NAME "\"}]}]}}}";
    const char *validation =
        "{\"errors\":[{\"message\":\"Cannot query field \\\"bulkName\\\" on "
        "type \\\"Deployment\\\".\"}]}";
    char id[RW_LAGOON_BULK_ID_MAX], err[256];
    bool found = true;
    rw_err_t e;

    (void)state;
    e = parse_find(200, all_failed, id, sizeof(id), &found, err);
    assert_int_equal(e, RW_ERR_LAGOON_GRAPHQL);
    assert_false(rw_err_is_retriable(e));
    assert_non_null(strstr(err, "Unauthorized"));
    assert_false(found);

    /* A project we could not read might hold the bulk: not "not found". */
    found = true;
    e = parse_find(200, partial_miss, id, sizeof(id), &found, err);
    assert_int_equal(e, RW_ERR_LAGOON_GRAPHQL);
    assert_false(found);

    /* A match is proof whatever else failed. */
    e = parse_find(200, partial_hit, id, sizeof(id), &found, err);
    assert_int_equal(e, RW_OK);
    assert_true(found);
    assert_string_equal(id, "bulk-5");

    assert_int_equal(parse_find(400, validation, id, sizeof(id), &found, err),
                     RW_ERR_LAGOON_GRAPHQL);
    assert_false(found);
    assert_int_equal(parse_find(200, validation, id, sizeof(id), &found, err),
                     RW_ERR_LAGOON_GRAPHQL);
    assert_int_equal(parse_find(401, all_failed, id, sizeof(id), &found, err),
                     RW_ERR_LAGOON_AUTH);
    e = parse_find(503, "", id, sizeof(id), &found, err);
    assert_int_equal(e, RW_ERR_LAGOON_SERVER);
    assert_true(rw_err_is_retriable(e));
    assert_int_equal(parse_find(429, NULL, id, sizeof(id), &found, err),
                     RW_ERR_LAGOON_RATE_LIMITED);
    assert_false(found);
}

static void test_parse_find_bulk_conflict_and_shape(void **state)
{
    const char *conflict =
        "{\"data\":{\"p0\":{\"name\":\"alpha\",\"environments\":[{\"name\":"
        "\"main\",\"deployments\":[{\"id\":2,\"bulkId\":\"bulk-a\","
        "\"bulkName\":\"" BULK_NAME "\"}]}]},\"p1\":{\"name\":\"beta\","
        "\"environments\":[{\"name\":\"main\",\"deployments\":[{\"id\":3,"
        "\"bulkId\":\"bulk-b\",\"bulkName\":\"" BULK_NAME "\"}]}]}}}";
    const char *no_id =
        "{\"data\":{\"p0\":null,\"p1\":{\"name\":\"beta\",\"environments\":"
        "[{\"name\":\"main\",\"deployments\":[{\"id\":3,\"bulkId\":null,"
        "\"bulkName\":\"" BULK_NAME "\"}]}]}}}";
    const char *const bad[] = {
        "{\"data\":{\"p0\":null}}",
        "{\"data\":{\"p0\":null,\"p1\":7}}",
        "{\"data\":{\"p0\":null,\"p1\":{\"environments\":{}}}}",
        "{\"data\":{\"p0\":null,\"p1\":{\"environments\":[{\"name\":"
        "\"main\",\"deployments\":\"x\"}]}}}",
        "{\"data\":null}",
        "{\"data\":",
        "[]",
    };
    char id[RW_LAGOON_BULK_ID_MAX], err[256];
    bool found = true;
    rw_err_t e;

    (void)state;
    e = parse_find(200, conflict, id, sizeof(id), &found, err);
    assert_int_equal(e, RW_ERR_CONFLICT);
    assert_non_null(strstr(err, "bulk-a"));
    assert_non_null(strstr(err, "bulk-b"));
    assert_false(found);
    assert_string_equal(id, "");

    found = true;
    assert_int_equal(parse_find(200, no_id, id, sizeof(id), &found, err),
                     RW_ERR_LAGOON_PROTOCOL);
    assert_false(found);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        found = true;
        e = parse_find(200, bad[i], id, sizeof(id), &found, err);
        if (e != RW_ERR_LAGOON_PROTOCOL)
            fail_msg("body %zu (%s): got %s", i, bad[i], rw_err_name(e));
        assert_false(found);
    }
    assert_int_equal(rw_lagoon_parse_find_bulk_response(
                         200, conflict, find_projects, 2, find_envs, 2, NULL,
                         id, sizeof(id), &found, err, sizeof(err)),
                     RW_ERR_INVALID_ARG);
}

/* -------------------------------------------------------------- handle */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static void test_new_config_errors(void **state)
{
    rw_lagoon_t *lc = (rw_lagoon_t *)1;
    rw_lagoon_opts_t opts = {0};
    char err[256], path[] = "/tmp/test_lagoon_tokenXXXXXX";
    int fd;

    (void)state;
    assert_int_equal(rw_lagoon_new(&lc, &opts, err, sizeof(err)),
                     RW_ERR_CONFIG);
    assert_null(lc);
    opts.url = "http://127.0.0.1:1/graphql";
    assert_int_equal(rw_lagoon_new(&lc, &opts, err, sizeof(err)),
                     RW_ERR_CONFIG);
    assert_null(lc);
    assert_non_null(strstr(err, "token"));

    opts.token_file = "/nonexistent/dir/token";
    assert_int_equal(rw_lagoon_new(&lc, &opts, err, sizeof(err)),
                     RW_ERR_CONFIG);
    assert_non_null(strstr(err, "/nonexistent/dir/token"));

    fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    write_file(path, " \n\t\n");
    opts.token_file = path;
    assert_int_equal(rw_lagoon_new(&lc, &opts, err, sizeof(err)),
                     RW_ERR_CONFIG);
    assert_non_null(strstr(err, "empty"));

    write_file(path, "  tok-from-file\n");
    assert_int_equal(rw_lagoon_new(&lc, &opts, err, sizeof(err)), RW_OK);
    assert_non_null(lc);
    rw_lagoon_destroy(lc);
    unlink(path);
    rw_lagoon_destroy(NULL);
}

/* Nothing listens on port 1 of loopback: a refused connection never
 * sent the request, so it is retriable even for the bulk deploy (not in
 * doubt), and the token never shows in the error. */
static void test_unreachable_is_connect_error(void **state)
{
    rw_lagoon_opts_t opts = {.url = "http://127.0.0.1:1/graphql",
                             .token = "sekrit-token-123",
                             .timeout_ms = 2000,
                             .connect_timeout_ms = 1000};
    rw_lagoon_env_t envs[] = {{"p", "e"}};
    rw_lagoon_deployments_t *d = (rw_lagoon_deployments_t *)1;
    rw_lagoon_t *lc = NULL;
    char id[64], err[512];
    rw_err_t e;

    (void)state;
    assert_int_equal(rw_lagoon_new(&lc, &opts, err, sizeof(err)), RW_OK);
    e = rw_lagoon_bulk_deploy(lc, "b", envs, 1, NULL, 0, id, sizeof(id), err,
                              sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_CONNECT);
    assert_true(rw_err_is_retriable(e));
    assert_int_equal(rw_err_class(e, RW_OP_SEND), RW_ERR_CLASS_RETRY);
    assert_false(rw_lagoon_in_doubt(lc));
    assert_true(strlen(err) > 0);
    assert_null(strstr(err, "sekrit"));
    e = rw_lagoon_deployments_by_bulk_id(lc, "bulk", &d, err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_CONNECT);
    assert_null(d);

    /* Arguments are checked before anything is sent. */
    assert_int_equal(rw_lagoon_bulk_deploy(lc, "b", envs, 0, NULL, 0, id,
                                           sizeof(id), err, sizeof(err)),
                     RW_ERR_INVALID_ARG);
    rw_lagoon_env_t empty[] = {{"p", ""}};
    assert_int_equal(rw_lagoon_bulk_deploy(lc, "b", empty, 1, NULL, 0, id,
                                           sizeof(id), err, sizeof(err)),
                     RW_ERR_INVALID_ARG);
    assert_int_equal(
        rw_lagoon_deployments_by_bulk_id(lc, "", &d, err, sizeof(err)),
        RW_ERR_INVALID_ARG);
    {
        bool found = true;

        e = rw_lagoon_find_bulk(lc, "b", envs, 1, id, sizeof(id), &found, err,
                                sizeof(err));
        assert_int_equal(e, RW_ERR_LAGOON_CONNECT);
        assert_false(found);
        assert_null(strstr(err, "sekrit"));
        assert_int_equal(rw_lagoon_find_bulk(lc, "", envs, 1, id, sizeof(id),
                                             &found, err, sizeof(err)),
                         RW_ERR_INVALID_ARG);
        assert_int_equal(rw_lagoon_find_bulk(lc, "b", empty, 1, id, sizeof(id),
                                             &found, err, sizeof(err)),
                         RW_ERR_INVALID_ARG);
        assert_int_equal(rw_lagoon_find_bulk(lc, "b", envs, 1, id, sizeof(id),
                                             NULL, err, sizeof(err)),
                         RW_ERR_INVALID_ARG);
    }
    rw_lagoon_destroy(lc);

    opts.url = "gopher://127.0.0.1:1/graphql";
    assert_int_equal(rw_lagoon_new(&lc, &opts, err, sizeof(err)), RW_OK);
    assert_int_equal(rw_lagoon_bulk_deploy(lc, "b", envs, 1, NULL, 0, id,
                                           sizeof(id), err, sizeof(err)),
                     RW_ERR_CONFIG);
    rw_lagoon_destroy(lc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bulk_request_exact_query_and_variables),
        cmocka_unit_test(test_bulk_request_hostile_values_stay_in_variables),
        cmocka_unit_test(test_bulk_request_without_vars_has_empty_list),
        cmocka_unit_test(test_bulk_request_rejects_bad_input),
        cmocka_unit_test(test_deployments_request),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_classify_transport),
        cmocka_unit_test(test_parse_bulk_ok),
        cmocka_unit_test(test_parse_bulk_graphql_error),
        cmocka_unit_test(test_parse_bulk_long_error_is_truncated),
        cmocka_unit_test(test_parse_bulk_http_errors),
        cmocka_unit_test(test_parse_bulk_protocol_errors),
        cmocka_unit_test(test_parse_deployments_rows),
        cmocka_unit_test(test_parse_deployments_empty_and_missing),
        cmocka_unit_test(test_parse_deployments_errors),
        cmocka_unit_test(test_parse_deployments_string_id_and_bad_date),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_find_bulk_request_exact),
        cmocka_unit_test(test_find_bulk_request_hostile_names),
        cmocka_unit_test(test_find_bulk_request_limits),
        cmocka_unit_test(test_parse_find_bulk_found),
        cmocka_unit_test(test_parse_find_bulk_not_found),
        cmocka_unit_test(test_parse_find_bulk_null_project),
        cmocka_unit_test(test_parse_find_bulk_errors),
        cmocka_unit_test(test_parse_find_bulk_conflict_and_shape),
        cmocka_unit_test(test_new_config_errors),
        cmocka_unit_test(test_unreachable_is_connect_error),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
