/*
 * test_api: rollwave-api against the real stack, one fleet per scenario
 * (its own database, topics and simulator; the API a child of the fleet):
 *
 *   endpoints    every route's happy path, writes recorded with the
 *                token's name (triggered_by, run_transitions, api_audit)
 *   auth         401 without a token, with a malformed or unknown one and
 *                after a revoke (within the cache bound); 403 for a
 *                viewer's writes and an operator's admin routes; failures
 *                counted in /metrics
 *   bad_input    non-numeric ids, unknown fields and query parameters,
 *                oversized bodies, invalid JSON, unknown uuids: 4xx JSON
 *                naming the field, and no row changed
 *   pagination   runs inserted between page fetches: every run that
 *                existed before the first page is seen exactly once, in
 *                order, and no run twice
 *   rollout      a manual run created through the API is rolled out by the
 *                worker and poller; its history appears under the
 *                instance; the invariants hold
 *   strategy     a run with a strategy and respect_windows from the body:
 *                its waves and deferred chunks served, a manual bake
 *                promoted (403 for a viewer, 409 once finished); an
 *                invalid strategy refused with 400 naming it; a run whose
 *                stored strategy fails at creation answered as failed
 *   lag_drain    parallel lag requests share one measurement; a
 *                decoded newline in a path stays inside its quoted log
 *                value; SIGTERM during a request lets it finish
 *   logs         a run with three failing builds: GET /runs/{uuid}/logs
 *                serves the failed targets' stored logs, redacted (no
 *                planted secret in the answer), paged by cursor, one
 *                instance's, a failed target without a row as "none";
 *                404 for an unknown run, 400 naming each bad query
 *                value, 401 without a token
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>
#include <signal.h>

#include <jansson.h>

#include "rw_itest.h"
#include "rw_itest_api.h"
#include "rw_itest_fleet.h"

static rw_itest_api_t ctx;

/* A deadline for this build: sanitized daemons are several times slower. */
static long long deadline_ms(long long ms)
{
    const char *v = getenv("RW_SANITIZED");
    bool sanitized = RW_ITEST_ASAN || (v && *v && strcmp(v, "0") != 0);

    return sanitized ? 2 * ms : ms;
}

static long http(const char *method, const char *path, const char *token,
                 const char *body, json_t **doc)
{
    return rw_itest_api_call(ctx.port, method, path, token, body, 0, doc, NULL);
}

static json_t *expect(const char *method, const char *path, const char *token,
                      const char *body, long want)
{
    return rw_itest_api_expect(&ctx, method, path, token, body, want);
}

static void expect_error(const char *method, const char *path,
                         const char *token, const char *body, long want,
                         const char *code, const char *field)
{
    rw_itest_api_expect_error(&ctx, method, path, token, body, want, code,
                              field);
}

static const char *str_at(json_t *doc, const char *key)
{
    const char *s = json_string_value(json_object_get(doc, key));

    if (!s)
        fail_msg("no string member %s", key);
    return s;
}

static long long int_at(json_t *doc, const char *key)
{
    json_t *v = json_object_get(doc, key);

    if (!json_is_integer(v))
        fail_msg("no integer member %s", key);
    return json_integer_value(v);
}

/* A fleet with fast builds and the API, the daemons when asked. */
static void start(bool daemons)
{
    rw_itest_api_start(&ctx,
                       "{\"rows_delay_ms\":100,\"phase_ms\":50,"
                       "\"build_min_ms\":200,\"build_max_ms\":500}",
                       daemons);
}

static int teardown(void **state)
{
    (void)state;
    rw_itest_fleet_destroy(ctx.f);
    memset(&ctx, 0, sizeof(ctx));
    return 0;
}

static long long q_ll(const char *sql)
{
    return rw_itest_fleet_ll(ctx.f, sql, 0, NULL);
}

/* An app with n instances; their ids into ids (n entries). */
static long long seed(int n, long long *ids)
{
    long long app = rw_itest_fleet_add_app(ctx.f, 0);
    char app_s[24];
    const char *p[1] = {app_s};
    PGresult *res;

    rw_itest_fleet_add_instances(ctx.f, app, "api", n);
    snprintf(app_s, sizeof(app_s), "%lld", app);
    res = rw_itest_fleet_q(ctx.f,
                           "SELECT id FROM app_instances"
                           " WHERE store_app_id = $1::bigint ORDER BY id",
                           1, p);
    assert_int_equal(PQntuples(res), n);
    for (int i = 0; i < n; i++)
        ids[i] = atoll(PQgetvalue(res, i, 0));
    PQclear(res);
    return app;
}

/* Wait until run uuid has status (one of "a|b" given as SQL list). */
static void wait_run(const char *uuid, const char *statuses)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM deployment_runs WHERE uuid = '%s'"
             " AND status IN %s",
             uuid, statuses);
    rw_itest_fleet_wait_count(ctx.f, sql, 1, deadline_ms(60000), sql);
}

/* ---- 1. endpoints ---- */

static void test_endpoints(void **state)
{
    long long ids[4], app, group;
    char path[256], body[256], uuid[40];
    json_t *doc, *run, *states;

    (void)state;
    start(false);
    app = seed(4, ids);
    group = q_ll("INSERT INTO user_groups (name) VALUES ('api-group')"
                 " RETURNING id");

    doc = expect("GET", "/api/v1/whoami", ctx.operator, NULL, 200);
    assert_string_equal(str_at(doc, "name"), "operator-1");
    assert_string_equal(str_at(doc, "role"), "operator");
    assert_true(
        json_is_true(json_object_get(json_object_get(doc, "may"), "control")));
    assert_true(
        json_is_false(json_object_get(json_object_get(doc, "may"), "admin")));
    json_decref(doc);

    /* a manual run of two instances; no worker runs in this fleet, so it
     * stays pending until aborted */
    snprintf(body, sizeof(body),
             "{\"instance_ids\":[%lld,%lld],\"variables_only\":true}", ids[0],
             ids[1]);
    doc = expect("POST", "/api/v1/runs", ctx.operator, body, 201);
    snprintf(uuid, sizeof(uuid), "%s", str_at(doc, "uuid"));
    assert_int_equal(int_at(doc, "targets"), 2);
    assert_int_equal(int_at(doc, "chunks"), 1);
    json_decref(doc);
    {
        const char *p[1] = {uuid};
        PGresult *res =
            rw_itest_fleet_q(ctx.f,
                             "SELECT triggered_by, variables_only::text AS v,"
                             " trigger_source FROM deployment_runs"
                             " WHERE uuid = $1::uuid",
                             1, p);
        assert_int_equal(PQntuples(res), 1);
        assert_string_equal(PQgetvalue(res, 0, 0), "operator-1");
        assert_string_equal(PQgetvalue(res, 0, 1), "true");
        assert_string_equal(PQgetvalue(res, 0, 2), "manual");
        PQclear(res);
    }
    /* its batch is published by the API's relay thread (no daemon runs
     * here to do it): nothing left in the outbox */
    rw_itest_fleet_wait_count(ctx.f,
                              "SELECT (count(*) = 0)::int FROM outbox"
                              " WHERE published_at IS NULL",
                              1, deadline_ms(10000), "the outbox relayed");

    doc = expect("GET", "/api/v1/runs", ctx.viewer, NULL, 200);
    run = json_array_get(json_object_get(doc, "runs"), 0);
    assert_string_equal(str_at(run, "uuid"), uuid);
    assert_int_equal(int_at(run, "pending"), 2);
    assert_int_equal(int_at(run, "total"), 2);
    assert_true(json_is_null(json_object_get(doc, "next_cursor")));
    json_decref(doc);

    snprintf(path, sizeof(path), "/api/v1/runs/%s", uuid);
    doc = expect("GET", path, ctx.viewer, NULL, 200);
    assert_string_equal(str_at(json_object_get(doc, "run"), "status"),
                        "pending");
    states = json_object_get(doc, "targets_by_state");
    assert_int_equal(int_at(states, "pending"), 2);
    assert_int_equal(int_at(doc, "targets_total"), 2);
    assert_int_equal(json_array_size(json_object_get(doc, "chunks")), 1);
    json_decref(doc);

    /* control: the CLI's refusals, then an abort */
    snprintf(path, sizeof(path), "/api/v1/runs/%s/pause", uuid);
    expect_error("POST", path, ctx.operator, NULL, 409, "conflict", NULL);
    snprintf(path, sizeof(path), "/api/v1/runs/%s/abort", uuid);
    doc = expect("POST", path, ctx.operator, "{}", 200);
    assert_string_equal(str_at(doc, "status_before"), "pending");
    assert_string_equal(str_at(doc, "status_after"), "cancelled");
    assert_int_equal(int_at(doc, "targets"), 2);
    json_decref(doc);
    snprintf(path, sizeof(path), "/api/v1/runs/%s/resume", uuid);
    expect_error("POST", path, ctx.operator, NULL, 409, "conflict", NULL);
    snprintf(path, sizeof(path), "/api/v1/runs/%s/retry", uuid);
    expect_error("POST", path, ctx.operator, NULL, 409, "conflict", NULL);
    {
        const char *p[1] = {uuid};
        assert_int_equal(
            rw_itest_fleet_ll(ctx.f,
                              "SELECT count(*) FROM run_transitions t"
                              " JOIN deployment_runs r ON r.id = t.run_id"
                              " WHERE r.uuid = $1::uuid"
                              "   AND t.to_status = 'cancelled'"
                              "   AND t.reason LIKE '%operator-1%'",
                              1, p),
            1);
    }

    /* a whole store app, by its id */
    snprintf(body, sizeof(body), "{\"store_app_id\":%lld}", app);
    doc = expect("POST", "/api/v1/runs", ctx.operator, body, 201);
    assert_int_equal(int_at(doc, "targets"), 4);
    snprintf(path, sizeof(path), "/api/v1/runs/%s/abort", str_at(doc, "uuid"));
    json_decref(doc);
    json_decref(expect("POST", path, ctx.operator, NULL, 200));

    /* filters: both runs are of the app (the first names two of its
     * instances), another app has none; created_* around now */
    snprintf(path, sizeof(path), "/api/v1/runs?store_app=%lld", app);
    doc = expect("GET", path, ctx.viewer, NULL, 200);
    assert_int_equal(json_array_size(json_object_get(doc, "runs")), 2);
    assert_int_equal(
        int_at(json_array_get(json_object_get(doc, "runs"), 0), "total"), 4);
    json_decref(doc);
    snprintf(path, sizeof(path), "/api/v1/runs?store_app=%lld", app + 1000);
    doc = expect("GET", path, ctx.viewer, NULL, 200);
    assert_int_equal(json_array_size(json_object_get(doc, "runs")), 0);
    json_decref(doc);
    doc = expect("GET", "/api/v1/runs?created_after=2000-01-01", ctx.viewer,
                 NULL, 200);
    assert_int_equal(json_array_size(json_object_get(doc, "runs")), 2);
    json_decref(doc);
    doc = expect("GET", "/api/v1/runs?created_before=2000-01-01T00:00:00Z",
                 ctx.viewer, NULL, 200);
    assert_int_equal(json_array_size(json_object_get(doc, "runs")), 0);
    json_decref(doc);

    snprintf(path, sizeof(path), "/api/v1/instances/%lld", ids[0]);
    doc = expect("GET", path, ctx.viewer, NULL, 200);
    assert_int_equal(int_at(doc, "id"), ids[0]);
    assert_int_equal(int_at(doc, "runs"), 2);
    assert_true(json_object_get(doc, "next_redeploy_at") != NULL);
    assert_true(json_object_get(doc, "last_deployment_status") != NULL);
    json_decref(doc);
    snprintf(path, sizeof(path),
             "/api/v1/instances/%lld/deployments?skip=0&take=1", ids[0]);
    doc = expect("GET", path, ctx.viewer, NULL, 200);
    assert_int_equal(int_at(doc, "total"), 2);
    assert_int_equal(json_array_size(json_object_get(doc, "deployments")), 1);
    /* newest first: the store app's run, not the first one */
    assert_string_not_equal(
        str_at(json_array_get(json_object_get(doc, "deployments"), 0), "run"),
        uuid);
    json_decref(doc);
    snprintf(path, sizeof(path),
             "/api/v1/instances/%lld/deployments?skip=1&take=5", ids[0]);
    doc = expect("GET", path, ctx.viewer, NULL, 200);
    assert_string_equal(
        str_at(json_array_get(json_object_get(doc, "deployments"), 0), "run"),
        uuid);
    json_decref(doc);

    snprintf(path, sizeof(path), "/api/v1/store-apps/%lld/schedule", app);
    doc = expect("PUT", path, ctx.admin,
                 "{\"enabled\":true,\"interval_days\":9,"
                 "\"beta_interval_days\":3}",
                 200);
    assert_true(json_is_true(json_object_get(doc, "enabled")));
    json_decref(doc);
    doc = expect("GET", path, ctx.viewer, NULL, 200);
    assert_int_equal(int_at(doc, "interval_days"), 9);
    assert_int_equal(int_at(doc, "beta_interval_days"), 3);
    json_decref(doc);
    json_decref(expect("PUT", path, ctx.admin, "{\"enabled\":false}", 200));
    {
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM store_apps WHERE id = %lld AND NOT"
                 " redeploy_enabled AND redeploy_interval_days = 9",
                 app);
        assert_int_equal(q_ll(sql), 1);
    }

    snprintf(path, sizeof(path), "/api/v1/user-groups/%lld", group);
    doc = expect("PUT", path, ctx.admin, "{\"is_beta\":true}", 200);
    assert_true(json_is_true(json_object_get(doc, "is_beta")));
    json_decref(doc);
    {
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM user_groups WHERE id = %lld AND"
                 " is_beta",
                 group);
        assert_int_equal(q_ll(sql), 1);
    }

    doc = expect("GET", "/api/v1/lag?interval_s=0", ctx.viewer, NULL, 200);
    assert_int_equal(int_at(doc, "interval_s"), 0);
    assert_int_equal(json_array_size(json_object_get(doc, "groups")), 2);
    assert_string_equal(
        str_at(json_array_get(json_object_get(doc, "groups"), 0), "group"),
        "rollwave-worker");
    json_decref(doc);

    /* tokens, by an admin: created (shown once), listed, revoked */
    doc = expect("POST", "/api/v1/tokens", ctx.admin,
                 "{\"name\":\"bot-1\",\"role\":\"viewer\"}", 201);
    {
        char bot[80], body_t[160];
        snprintf(bot, sizeof(bot), "%s", str_at(doc, "token"));
        json_decref(doc);
        doc = expect("GET", "/api/v1/whoami", bot, NULL, 200);
        assert_string_equal(str_at(doc, "name"), "bot-1");
        assert_string_equal(str_at(doc, "role"), "viewer");
        json_decref(doc);
        expect_error("POST", "/api/v1/tokens", ctx.admin,
                     "{\"name\":\"bot-1\",\"role\":\"viewer\"}", 409,
                     "conflict", "name");
        expect_error("POST", "/api/v1/tokens", ctx.admin,
                     "{\"name\":\"bad name\",\"role\":\"viewer\"}", 400,
                     "bad_request", "name");
        expect_error("POST", "/api/v1/tokens", ctx.admin,
                     "{\"name\":\"bot-2\",\"role\":\"root\"}", 400,
                     "bad_request", "role");
        expect_error("GET", "/api/v1/tokens", ctx.operator, NULL, 403,
                     "forbidden", NULL);
        doc = expect("GET", "/api/v1/tokens", ctx.admin, NULL, 200);
        /* four tokens; nothing secret in the list */
        assert_int_equal(json_array_size(json_object_get(doc, "tokens")), 4);
        {
            char *dump = json_dumps(doc, JSON_COMPACT);
            assert_null(strstr(dump, "rwt_"));
            assert_null(strstr(dump, "hash"));
            free(dump);
        }
        json_decref(doc);
        json_decref(
            expect("DELETE", "/api/v1/tokens/bot-1", ctx.admin, NULL, 200));
        expect_error("DELETE", "/api/v1/tokens/bot-1", ctx.admin, NULL, 404,
                     "not_found", "name");
        snprintf(body_t, sizeof(body_t),
                 "SELECT count(*) FROM api_tokens"
                 " WHERE name = 'bot-1' AND"
                 " revoked_at IS NOT NULL");
        assert_int_equal(q_ll(body_t), 1);
    }

    /* every accepted write is in the audit, under its token's name */
    assert_int_equal(q_ll("SELECT count(*) FROM api_audit"
                          " WHERE status BETWEEN 200 AND 299"),
                     9);
    assert_int_equal(q_ll("SELECT count(*) FROM api_audit"
                          " WHERE token_name = 'admin-1'"),
                     5);
    /* the token's text is never in the audit */
    assert_int_equal(q_ll("SELECT count(*) FROM api_audit"
                          " WHERE detail LIKE '%rwt_%'"),
                     0);
    /* the dashboard is served from the binary */
    {
        char *text = NULL;
        long st =
            rw_itest_api_call(ctx.port, "GET", "/", NULL, NULL, 0, NULL, &text);
        assert_int_equal(st, 200);
        assert_non_null(text);
        assert_non_null(strstr(text, "rollwave"));
        free(text);
    }
}

/* ---- 2. auth ---- */

static double metric(const char *line_prefix)
{
    char *text = NULL, *p;
    double v = -1;

    assert_int_equal(rw_itest_api_call(ctx.metrics_port, "GET", "/metrics",
                                       NULL, NULL, 0, NULL, &text),
                     200);
    p = text ? strstr(text, line_prefix) : NULL;
    if (p)
        v = strtod(p + strlen(line_prefix), NULL);
    free(text);
    return v;
}

static void test_auth(void **state)
{
    static const char *const writes[][3] = {
        /* method, path, body */
        {"POST", "/api/v1/runs", "{\"store_app_id\":1}"},
        {"POST", "/api/v1/runs/00000000-0000-0000-0000-000000000000/pause",
         NULL},
        {"PUT", "/api/v1/store-apps/1/schedule", "{\"enabled\":false}"},
        {"PUT", "/api/v1/user-groups/1", "{\"is_beta\":true}"},
    };
    long long ids[1], runs_before;
    char bogus[80], revoked[80];
    long long until;

    (void)state;
    start(false);
    seed(1, ids);
    runs_before = q_ll("SELECT count(*) FROM deployment_runs");

    expect_error("GET", "/api/v1/runs", NULL, NULL, 401, "unauthorized", NULL);
    assert_true(
        metric("rollwave_api_auth_failures_total{reason=\"missing\"} ") >= 1);
    expect_error("GET", "/api/v1/runs", "not-a-token", NULL, 401,
                 "unauthorized", NULL);
    /* well formed, never issued */
    snprintf(bogus, sizeof(bogus), "rwt_%064d", 0);
    expect_error("GET", "/api/v1/runs", bogus, NULL, 401, "unauthorized", NULL);
    assert_true(
        metric("rollwave_api_auth_failures_total{reason=\"invalid\"} ") >= 2);

    /* a viewer reads and writes nothing; an operator no admin route */
    for (size_t i = 0; i < sizeof(writes) / sizeof(writes[0]); i++) {
        expect_error(writes[i][0], writes[i][1], ctx.viewer, writes[i][2], 403,
                     "forbidden", NULL);
        if (strcmp(writes[i][0], "PUT") == 0)
            expect_error(writes[i][0], writes[i][1], ctx.operator, writes[i][2],
                         403, "forbidden", NULL);
    }
    assert_int_equal(q_ll("SELECT count(*) FROM deployment_runs"), runs_before);
    assert_int_equal(q_ll("SELECT count(*) FROM api_audit"), 0);

    /* tokens are stored as hashes only */
    assert_int_equal(q_ll("SELECT count(*) FROM api_tokens"
                          " WHERE token_hash LIKE 'rwt_%'"),
                     0);

    /* a revoked token stops working within the cache bound */
    rw_itest_api_token(&ctx, "short-lived", "operator", revoked,
                       sizeof(revoked));
    json_decref(expect("GET", "/api/v1/whoami", revoked, NULL, 200));
    {
        const char *argv[] = {"rollwavectl", "token", "revoke", "short-lived",
                              NULL};
        assert_int_equal(rw_itest_fleet_run(ctx.f, argv, NULL, 0), 0);
    }
    until = rw_itest_now_ms() + RW_ITEST_API_TOKEN_CACHE_S * 1000 + 500;
    while (http("GET", "/api/v1/whoami", revoked, NULL, NULL) != 401) {
        if (rw_itest_now_ms() > until)
            fail_msg("a revoked token was still accepted after %d s",
                     RW_ITEST_API_TOKEN_CACHE_S);
        rw_itest_sleep_ms(50);
    }
}

/* ---- 3. bad input ---- */

/* Everything a refused request could have changed, as one text. */
static void fingerprint(char *buf, size_t len)
{
    PGresult *res = rw_itest_fleet_q(
        ctx.f,
        "SELECT (SELECT count(*) FROM deployment_runs) || '/' ||"
        " (SELECT count(*) FROM run_targets) || '/' ||"
        " (SELECT count(*) FROM run_transitions) || '/' ||"
        " (SELECT count(*) FROM outbox) || '/' ||"
        " (SELECT count(*) FROM api_audit) || '/' ||"
        " (SELECT md5(string_agg(a::text, ',' ORDER BY id))"
        "    FROM store_apps a) || '/' ||"
        " (SELECT md5(string_agg(g::text, ',' ORDER BY id))"
        "    FROM user_groups g) || '/' ||"
        " (SELECT string_agg(status, ',' ORDER BY id) FROM deployment_runs)",
        0, NULL);
    snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

static void test_bad_input(void **state)
{
    static const struct {
        const char *method, *path, *body, *code, *field;
        long status;
    } cases[] = {
        {"GET", "/api/v1/instances/abc", NULL, "bad_request", "id", 400},
        {"GET", "/api/v1/instances/0", NULL, "bad_request", "id", 400},
        {"GET", "/api/v1/instances/-3", NULL, "bad_request", "id", 400},
        {"GET", "/api/v1/instances/99999999", NULL, "not_found", "id", 404},
        {"GET", "/api/v1/instances/1x/deployments", NULL, "bad_request", "id",
         400},
        {"GET", "/api/v1/instances/1/deployments?take=101", NULL, "bad_request",
         "take", 400},
        {"GET", "/api/v1/instances/1/deployments?skip=-1", NULL, "bad_request",
         "skip", 400},
        {"GET", "/api/v1/runs/not-a-uuid", NULL, "bad_request", "uuid", 400},
        {"GET", "/api/v1/runs/6f1c2a52-0000-4000-8000-000000000000", NULL,
         "not_found", "uuid", 404},
        {"GET", "/api/v1/runs?limit=0", NULL, "bad_request", "limit", 400},
        {"GET", "/api/v1/runs?limit=201", NULL, "bad_request", "limit", 400},
        {"GET", "/api/v1/runs?status=bogus", NULL, "bad_request", "status",
         400},
        {"GET", "/api/v1/runs?source=cron", NULL, "bad_request", "source", 400},
        {"GET", "/api/v1/runs?cursor=abc", NULL, "bad_request", "cursor", 400},
        {"GET", "/api/v1/runs?created_before=yesterday", NULL, "bad_request",
         "created_before", 400},
        {"GET", "/api/v1/runs?store_app=1&sort=id", NULL, "bad_request", "sort",
         400},
        {"GET", "/api/v1/lag?interval_s=11", NULL, "bad_request", "interval_s",
         400},
        {"GET", "/api/v1/lag?interval_s=3", NULL, "bad_request", "interval_s",
         400},
        {"POST", "/api/v1/runs", "{\"instance_ids\":[1],\"extra\":1}",
         "bad_request", "extra", 400},
        {"POST", "/api/v1/runs", "{\"instance_ids\":[\"1\"]}", "bad_request",
         "instance_ids", 400},
        {"POST", "/api/v1/runs", "{\"instance_ids\":[]}", "bad_request",
         "instance_ids", 400},
        {"POST", "/api/v1/runs", "{}", "bad_request", "instance_ids", 400},
        {"POST", "/api/v1/runs", "{\"instance_ids\":[1],\"store_app_id\":1}",
         "bad_request", "store_app_id", 400},
        {"POST", "/api/v1/runs", "{\"store_app_id\":1,\"variables_only\":1}",
         "bad_request", "variables_only", 400},
        {"POST", "/api/v1/runs", "{\"instance_ids\":[1", "bad_request", NULL,
         400},
        {"POST", "/api/v1/runs", "[1,2]", "bad_request", NULL, 400},
        {"POST", "/api/v1/runs", "{\"store_app_id\":1,\"store_app_id\":2}",
         "bad_request", NULL, 400},
        {"POST", "/api/v1/runs", "{\"instance_ids\":[99999999]}", "not_found",
         "instance_ids", 404},
        {"POST", "/api/v1/runs/6f1c2a52-0000-4000-8000-000000000000/abort",
         NULL, "not_found", "uuid", 404},
        {"POST", "/api/v1/runs/zzz/abort", NULL, "bad_request", "uuid", 400},
        {"POST", "/api/v1/runs/6f1c2a52-0000-4000-8000-000000000000/pause",
         "{\"force\":true}", "bad_request", "force", 400},
        {"PUT", "/api/v1/store-apps/1/schedule", "{\"enabled\":true}",
         "bad_request", "interval_days", 400},
        {"PUT", "/api/v1/store-apps/1/schedule",
         "{\"enabled\":true,\"interval_days\":0}", "bad_request",
         "interval_days", 400},
        {"PUT", "/api/v1/store-apps/1/schedule",
         "{\"enabled\":false,\"interval_days\":3}", "bad_request",
         "interval_days", 400},
        {"PUT", "/api/v1/store-apps/1/schedule", "{\"enabled\":\"yes\"}",
         "bad_request", "enabled", 400},
        {"PUT", "/api/v1/store-apps/99999999/schedule", "{\"enabled\":false}",
         "not_found", "id", 404},
        {"PUT", "/api/v1/user-groups/1", "{\"is_beta\":1}", "bad_request",
         "is_beta", 400},
        {"PUT", "/api/v1/user-groups/1", "{\"beta\":true}", "bad_request",
         "beta", 400},
        {"PUT", "/api/v1/user-groups/99999999", "{\"is_beta\":true}",
         "not_found", "id", 404},
        {"DELETE", "/api/v1/runs", NULL, "method_not_allowed", NULL, 405},
        {"GET", "/api/v1/nothing", NULL, "not_found", NULL, 404},
        {"GET", "/api/v2/runs", NULL, "not_found", NULL, 404},
    };
    long long ids[2];
    char before[512], after[512], *big;
    size_t big_len = 70 * 1024;
    json_t *doc = NULL;
    long st;

    (void)state;
    start(false);
    seed(2, ids);
    json_decref(expect("POST", "/api/v1/runs", ctx.operator,
                       "{\"store_app_id\":1}", 201));
    q_ll("INSERT INTO user_groups (name) VALUES ('g') RETURNING id");
    fingerprint(before, sizeof(before));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_error(cases[i].method, cases[i].path, ctx.admin, cases[i].body,
                     cases[i].status, cases[i].code, cases[i].field);

    /* an oversized body, announced by Content-Length */
    big = malloc(big_len);
    assert_non_null(big);
    memset(big, ' ', big_len);
    big[0] = '{';
    big[big_len - 1] = '}';
    st = rw_itest_api_call(ctx.port, "POST", "/api/v1/runs", ctx.admin, big,
                           big_len, &doc, NULL);
    free(big);
    assert_int_equal(st, 413);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(doc, "error"), "code")),
                        "payload_too_large");
    json_decref(doc);

    fingerprint(after, sizeof(after));
    assert_string_equal(before, after);
}

/* ---- 4. pagination ---- */

static void insert_runs(int n)
{
    char sql[256];

    snprintf(sql, sizeof(sql),
             "WITH i AS (INSERT INTO deployment_runs (trigger_source, status)"
             " SELECT 'manual', 'completed' FROM generate_series(1, %d)"
             " RETURNING id) SELECT count(*) FROM i",
             n);
    assert_int_equal(q_ll(sql), n);
}

static void test_pagination(void **state)
{
    long long *seen = NULL, prev = INT64_MAX;
    size_t n_seen = 0;
    long long pre_max, pre_count;
    char path[256], cursor[32] = "";
    int pages = 0;

    (void)state;
    start(false);
    insert_runs(25);
    pre_max = q_ll("SELECT max(id) FROM deployment_runs");
    pre_count = q_ll("SELECT count(*) FROM deployment_runs");
    for (;;) {
        json_t *doc, *runs, *r, *next;
        size_t i;

        snprintf(path, sizeof(path), "/api/v1/runs?limit=7%s%s",
                 cursor[0] ? "&cursor=" : "", cursor);
        doc = expect("GET", path, ctx.viewer, NULL, 200);
        runs = json_object_get(doc, "runs");
        assert_true(json_array_size(runs) <= 7);
        json_array_foreach(runs, i, r)
        {
            long long id = int_at(r, "id");
            if (id >= prev)
                fail_msg("page %d: id %lld after %lld (not newest first)",
                         pages, id, prev);
            prev = id;
            for (size_t k = 0; k < n_seen; k++)
                if (seen[k] == id)
                    fail_msg("run %lld listed twice", id);
            seen = realloc(seen, (n_seen + 1) * sizeof(*seen));
            seen[n_seen++] = id;
        }
        next = json_object_get(doc, "next_cursor");
        if (json_is_null(next)) {
            json_decref(doc);
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", json_string_value(next));
        json_decref(doc);
        /* other writers meanwhile */
        insert_runs(3);
        pages++;
        assert_true(pages < 20);
    }
    /* every run that existed before the first page, exactly once */
    {
        long long found = 0;
        for (size_t k = 0; k < n_seen; k++)
            found += seen[k] <= pre_max;
        assert_int_equal(found, pre_count);
    }
    assert_true(pages >= 3);
    free(seen);

    /* a time range is an id range: before every run, none; after the
     * newest, none; around them all, every one */
    {
        json_t *doc =
            expect("GET", "/api/v1/runs?created_before=2000-01-01T00:00:00Z",
                   ctx.viewer, NULL, 200);
        assert_int_equal(json_array_size(json_object_get(doc, "runs")), 0);
        assert_true(json_is_null(json_object_get(doc, "next_cursor")));
        json_decref(doc);
        doc = expect("GET", "/api/v1/runs?created_after=2999-01-01T00:00:00Z",
                     ctx.viewer, NULL, 200);
        assert_int_equal(json_array_size(json_object_get(doc, "runs")), 0);
        json_decref(doc);
        doc = expect("GET",
                     "/api/v1/runs?created_after=2000-01-01T00:00:00Z"
                     "&created_before=2999-01-01T00:00:00Z&limit=200",
                     ctx.viewer, NULL, 200);
        assert_int_equal(
            (long long)json_array_size(json_object_get(doc, "runs")),
            q_ll("SELECT count(*) FROM deployment_runs"));
        json_decref(doc);
    }
    /* a page that holds exactly the rows left is the last */
    {
        long long all = q_ll("SELECT count(*) FROM deployment_runs");
        json_t *doc;
        snprintf(path, sizeof(path), "/api/v1/runs?limit=%lld", all);
        doc = expect("GET", path, ctx.viewer, NULL, 200);
        assert_int_equal(
            (long long)json_array_size(json_object_get(doc, "runs")), all);
        assert_true(json_is_null(json_object_get(doc, "next_cursor")));
        json_decref(doc);
    }

    /* a filter pages the same way, over its own index */
    q_ll("WITH u AS (UPDATE deployment_runs SET status = 'failed'"
         " WHERE id % 2 = 0 RETURNING 1) SELECT count(*) FROM u");
    {
        long long want = q_ll("SELECT count(*) FROM deployment_runs"
                              " WHERE status = 'failed'"),
                  got = 0;
        cursor[0] = '\0';
        for (int page = 0; page < 40; page++) {
            json_t *doc, *next;
            snprintf(path, sizeof(path),
                     "/api/v1/runs?status=failed&limit=10%s%s",
                     cursor[0] ? "&cursor=" : "", cursor);
            doc = expect("GET", path, ctx.viewer, NULL, 200);
            got += (long long)json_array_size(json_object_get(doc, "runs"));
            next = json_object_get(doc, "next_cursor");
            if (json_is_null(next)) {
                json_decref(doc);
                break;
            }
            snprintf(cursor, sizeof(cursor), "%s", json_string_value(next));
            json_decref(doc);
        }
        assert_int_equal(got, want);
    }
}

/* ---- 5. a manual run rolled out ---- */

static void test_rollout(void **state)
{
    long long ids[3];
    char body[128], path[256], uuid[40];
    json_t *doc, *dep;

    (void)state;
    start(true);
    seed(3, ids);
    rw_itest_fleet_snapshot(ctx.f);
    snprintf(body, sizeof(body), "{\"instance_ids\":[%lld,%lld,%lld]}", ids[0],
             ids[1], ids[2]);
    doc = expect("POST", "/api/v1/runs", ctx.operator, body, 201);
    snprintf(uuid, sizeof(uuid), "%s", str_at(doc, "uuid"));
    json_decref(doc);
    wait_run(uuid, "('completed')");

    snprintf(path, sizeof(path), "/api/v1/runs/%s", uuid);
    doc = expect("GET", path, ctx.viewer, NULL, 200);
    assert_int_equal(
        int_at(json_object_get(doc, "targets_by_state"), "succeeded"), 3);
    assert_int_equal(int_at(json_object_get(doc, "run"), "succeeded"), 3);
    assert_string_equal(str_at(json_object_get(doc, "run"), "triggered_by"),
                        "operator-1");
    json_decref(doc);

    snprintf(path, sizeof(path), "/api/v1/instances/%lld/deployments", ids[1]);
    doc = expect("GET", path, ctx.viewer, NULL, 200);
    dep = json_array_get(json_object_get(doc, "deployments"), 0);
    assert_string_equal(str_at(dep, "run"), uuid);
    assert_string_equal(str_at(dep, "state"), "succeeded");
    assert_string_equal(str_at(dep, "lagoon_status"), "complete");
    assert_non_null(json_string_value(json_object_get(dep, "deployment_name")));
    json_decref(doc);

    snprintf(path, sizeof(path), "/api/v1/instances/%lld", ids[1]);
    doc = expect("GET", path, ctx.viewer, NULL, 200);
    assert_string_equal(str_at(doc, "last_deployment_status"), "complete");
    assert_non_null(
        json_string_value(json_object_get(doc, "last_deployed_at")));
    json_decref(doc);

    doc = expect("GET", "/api/v1/runs?status=completed&source=manual",
                 ctx.viewer, NULL, 200);
    assert_int_equal(json_array_size(json_object_get(doc, "runs")), 1);
    assert_int_equal(
        int_at(json_array_get(json_object_get(doc, "runs"), 0), "succeeded"),
        3);
    json_decref(doc);

    rw_itest_fleet_check(ctx.f);
    rw_itest_fleet_stop_all(ctx.f);
}

/* ---- 6. strategies, waves and promote ---- */

/* Wait until wave wave of run uuid is in state. */
static void wait_wave(const char *uuid, int wave, const char *state)
{
    char sql[512];

    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM run_waves w JOIN deployment_runs r"
             " ON r.id = w.run_id WHERE r.uuid = '%s' AND w.wave = %d"
             " AND w.state = '%s'",
             uuid, wave, state);
    rw_itest_fleet_wait_count(ctx.f, sql, 1, deadline_ms(30000), sql);
}

static void test_strategy(void **state)
{
    long long ids[4], runs_before, app;
    char body[512], path[256], uuid[40], sql[512];
    json_t *doc, *waves, *chunk;
    size_t i;
    int deferred = 0;

    (void)state;
    start(true);
    seed(4, ids);
    /* a store app whose stored strategy no longer validates */
    app = rw_itest_fleet_add_app(ctx.f, 0);
    rw_itest_fleet_add_instances(ctx.f, app, "bad", 2);
    rw_itest_fleet_snapshot(ctx.f);

    /* refused strategies write nothing, and say which field */
    runs_before = q_ll("SELECT count(*) FROM deployment_runs");
    snprintf(body, sizeof(body),
             "{\"instance_ids\":[%lld],\"strategy\":{\"waves\":[\"50%%\"]}}",
             ids[0]);
    expect_error("POST", "/api/v1/runs", ctx.operator, body, 400, "bad_request",
                 "strategy");
    snprintf(body, sizeof(body),
             "{\"instance_ids\":[%lld],\"strategy\":\"2,100%%\"}", ids[0]);
    expect_error("POST", "/api/v1/runs", ctx.operator, body, 400, "bad_request",
                 "strategy");
    snprintf(body, sizeof(body),
             "{\"instance_ids\":[%lld],\"respect_windows\":1}", ids[0]);
    expect_error("POST", "/api/v1/runs", ctx.operator, body, 400, "bad_request",
                 "respect_windows");
    assert_int_equal(q_ll("SELECT count(*) FROM deployment_runs"), runs_before);

    /* two waves with a manual bake between them */
    snprintf(body, sizeof(body),
             "{\"instance_ids\":[%lld,%lld,%lld,%lld],\"respect_windows\":"
             "true,\"strategy\":{\"waves\":[\"2\",\"100%%\"],\"bake\":"
             "\"manual\"}}",
             ids[0], ids[1], ids[2], ids[3]);
    doc = expect("POST", "/api/v1/runs", ctx.operator, body, 201);
    snprintf(uuid, sizeof(uuid), "%s", str_at(doc, "uuid"));
    assert_string_equal(str_at(doc, "status"), "pending");
    assert_true(json_is_null(json_object_get(doc, "error")));
    assert_int_equal(int_at(doc, "waves"), 2);
    json_decref(doc);
    wait_wave(uuid, 2, "awaiting_promotion");

    /* a held chunk shows until when and why */
    snprintf(sql, sizeof(sql),
             "WITH u AS (UPDATE run_chunks c SET not_before = now() +"
             " interval '1 hour', deferred_reason = 'window closed'"
             " FROM deployment_runs r WHERE r.id = c.run_id AND"
             " r.uuid = '%s' AND c.state = 'pending' RETURNING 1)"
             " SELECT count(*) FROM u",
             uuid);
    assert_true(q_ll(sql) >= 1);
    snprintf(path, sizeof(path), "/api/v1/runs/%s", uuid);
    doc = expect("GET", path, ctx.viewer, NULL, 200);
    assert_true(json_is_true(
        json_object_get(json_object_get(doc, "run"), "respect_windows")));
    waves = json_object_get(doc, "waves");
    assert_int_equal(json_array_size(waves), 2);
    assert_int_equal(int_at(json_array_get(waves, 0), "wave"), 1);
    assert_int_equal(int_at(json_array_get(waves, 0), "target_count"), 2);
    assert_int_equal(int_at(json_array_get(waves, 0), "succeeded"), 2);
    assert_string_equal(str_at(json_array_get(waves, 1), "state"),
                        "awaiting_promotion");
    assert_int_equal(int_at(json_array_get(waves, 1), "succeeded"), 0);
    json_array_foreach(json_object_get(doc, "chunks"), i, chunk)
    {
        if (json_is_null(json_object_get(chunk, "deferred_until"))) {
            assert_true(
                json_is_null(json_object_get(chunk, "deferred_reason")));
            continue;
        }
        assert_string_equal(str_at(chunk, "state"), "pending");
        assert_string_equal(str_at(chunk, "deferred_reason"), "window closed");
        deferred++;
    }
    assert_true(deferred >= 1);
    json_decref(doc);
    snprintf(sql, sizeof(sql),
             "WITH u AS (UPDATE run_chunks c SET not_before = NULL,"
             " deferred_reason = NULL FROM deployment_runs r"
             " WHERE r.id = c.run_id AND r.uuid = '%s' AND"
             " c.not_before IS NOT NULL RETURNING 1) SELECT count(*) FROM u",
             uuid);
    assert_int_equal(q_ll(sql), deferred);

    /* promote: an operator's, not a viewer's; then the run finishes */
    snprintf(path, sizeof(path), "/api/v1/runs/%s/promote", uuid);
    expect_error("POST", path, ctx.viewer, NULL, 403, "forbidden", NULL);
    doc = expect("POST", path, ctx.operator, NULL, 200);
    assert_string_equal(str_at(doc, "action"), "promote");
    assert_int_equal(int_at(doc, "wave"), 2);
    json_decref(doc);
    wait_run(uuid, "('completed')");
    expect_error("POST", path, ctx.operator, NULL, 409, "conflict", NULL);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM api_audit WHERE token_name = 'operator-1'"
             " AND path = '/api/v1/runs/%s/promote' AND status = 200",
             uuid);
    assert_int_equal(q_ll(sql), 1);

    /* the store app whose stored strategy does not validate: the run
     * exists, failed at creation, and the answer says so */
    snprintf(sql, sizeof(sql),
             "WITH u AS (UPDATE store_apps SET strategy ="
             " '{\"waves\":[\"50%%\"]}' WHERE id = %lld RETURNING 1)"
             " SELECT count(*) FROM u",
             app);
    assert_int_equal(q_ll(sql), 1);
    snprintf(body, sizeof(body), "{\"store_app_id\":%lld}", app);
    doc = expect("POST", "/api/v1/runs", ctx.operator, body, 201);
    assert_string_equal(str_at(doc, "status"), "failed");
    assert_non_null(strstr(str_at(doc, "error"), "strategy"));
    snprintf(uuid, sizeof(uuid), "%s", str_at(doc, "uuid"));
    json_decref(doc);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM deployment_runs WHERE uuid = '%s'"
             " AND status = 'failed'",
             uuid);
    assert_int_equal(q_ll(sql), 1);

    rw_itest_fleet_check(ctx.f);
    rw_itest_fleet_stop_all(ctx.f);
}

/* ---- 7. lag, log lines and the drain ---- */

typedef struct call {
    pthread_t t;
    const char *path;
    long status;
    json_t *doc;
} call_t;

static void *call_main(void *arg)
{
    call_t *c = arg;

    c->status = rw_itest_api_call(ctx.port, "GET", c->path, ctx.viewer, NULL, 0,
                                  &c->doc, NULL);
    return NULL;
}

static void test_lag_drain(void **state)
{
    call_t calls[4];
    double before;
    pid_t api;
    char *text = NULL;

    (void)state;
    start(false);
    api = rw_itest_fleet_running(ctx.f, "rollwave-api", 0);
    assert_true(api > 0);

    /* four at once (two server threads): one measurement, one answer for
     * all */
    before = metric("\nrollwave_api_lag_measurements_total ");
    assert_true(before >= 0);
    for (int i = 0; i < 4; i++) {
        memset(&calls[i], 0, sizeof(calls[i]));
        calls[i].path = "/api/v1/lag?interval_s=2";
        assert_int_equal(
            pthread_create(&calls[i].t, NULL, call_main, &calls[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(calls[i].t, NULL), 0);
        assert_int_equal(calls[i].status, 200);
        assert_int_equal(int_at(calls[i].doc, "interval_s"), 2);
        assert_true(json_equal(calls[i].doc, calls[0].doc));
    }
    for (int i = 0; i < 4; i++)
        json_decref(calls[i].doc);
    assert_true(metric("\nrollwave_api_lag_measurements_total ") == before + 1);

    /* a decoded newline stays inside the quoted path, as a space */
    assert_int_equal(
        http("GET", "/api/v1/who%0Aevent=forged", ctx.viewer, NULL, NULL), 404);
    assert_true(rw_itest_fleet_log_has(ctx.f, api,
                                       "path=\"/api/v1/who event=forged\""));
    assert_false(rw_itest_fleet_log_has(ctx.f, api, "\nevent=forged"));

    /* SIGTERM while a request is in progress: it is answered in full,
     * then the server stops. A restarted API has no measurement to share,
     * so its first lag request takes the whole interval. */
    api = rw_itest_fleet_stop_one(ctx.f, api, true);
    assert_true(api > 0);
    {
        long long until = rw_itest_now_ms() + deadline_ms(10000);
        while (http("GET", "/api/v1/whoami", ctx.viewer, NULL, NULL) != 200) {
            if (rw_itest_now_ms() > until)
                fail_msg("the restarted API does not answer");
            rw_itest_sleep_ms(50);
        }
    }
    memset(&calls[0], 0, sizeof(calls[0]));
    calls[0].path = "/api/v1/lag?interval_s=2";
    assert_int_equal(pthread_create(&calls[0].t, NULL, call_main, &calls[0]),
                     0);
    {
        /* measuring, so counted in progress: the gauge alone could still
         * show the last whoami, whose completion may follow its answer */
        long long until = rw_itest_now_ms() + deadline_ms(10000);
        while (metric("\nrollwave_api_lag_measurements_total ") < 1) {
            if (rw_itest_now_ms() > until)
                fail_msg("the lag request never reached the server");
            rw_itest_sleep_ms(20);
        }
    }
    assert_int_equal(kill(api, SIGTERM), 0);
    assert_int_equal(pthread_join(calls[0].t, NULL), 0);
    assert_int_equal(calls[0].status, 200);
    assert_int_equal(int_at(calls[0].doc, "interval_s"), 2);
    assert_int_equal(json_array_size(json_object_get(calls[0].doc, "groups")),
                     2);
    json_decref(calls[0].doc);
    assert_int_equal(rw_itest_fleet_wait(ctx.f, api, deadline_ms(10000)), 0);
    /* and it no longer accepts */
    assert_true(rw_itest_api_call(ctx.port, "GET", "/api/v1/whoami", ctx.viewer,
                                  NULL, 0, NULL, &text) < 0);
    free(text);
}

/* ---- 8. build logs ---- */

/* The sim plants this bearer token in every build log it serves. */
#define LOG_TOKEN "itestApiLogBearer7Qe2Lx9Vt4Nc8Kp1"
/* The first line of the sim's planted deploy key (sim_buildlog.c). */
#define LOG_PEM                                                                \
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"

/* GET path as a viewer: 200, no planted secret in the raw answer. */
static json_t *get_logs(const char *path)
{
    json_t *doc = NULL;
    char *text = NULL;
    long got = rw_itest_api_call(ctx.port, "GET", path, ctx.viewer, NULL, 0,
                                 &doc, &text);

    if (got != 200 || !doc)
        fail_msg("GET %s answered %ld: %.500s", path, got, text ? text : "");
    if (strstr(text, LOG_TOKEN) || strstr(text, LOG_PEM))
        fail_msg("GET %s answers a planted secret", path);
    free(text);
    return doc;
}

/* The names of a page's logs joined by ',' into buf. */
static void log_names(json_t *doc, char *buf, size_t len)
{
    json_t *logs = json_object_get(doc, "logs"), *v;
    size_t i, k = 0;

    buf[0] = '\0';
    json_array_foreach(logs, i, v) k +=
        (size_t)snprintf(buf + k, k < len ? len - k : 0, "%s%s", i ? "," : "",
                         str_at(v, "name"));
}

static void test_logs(void **state)
{
    char body[64], path[256], base[128], uuid[40], names[256], cursor[80],
        want[64], order[64];
    PGresult *res;
    const char *p[1];
    long long ids[5], app;
    json_t *doc, *v;
    size_t i;

    (void)state;
    rw_itest_api_start(&ctx,
                       "{\"rows_delay_ms\":100,\"phase_ms\":50,"
                       "\"build_min_ms\":100,\"build_max_ms\":300,"
                       "\"fail\":[\"lg2/main\",\"lg3/main\",\"lg5/main\"],"
                       "\"log_secret\":\"" LOG_TOKEN "\"}",
                       true);
    app = rw_itest_fleet_add_app(ctx.f, 2);
    rw_itest_fleet_add_instances(ctx.f, app, "lg", 5);
    for (int k = 0; k < 5; k++) {
        char name[8];
        const char *np[1] = {name};

        snprintf(name, sizeof(name), "lg%d", k + 1);
        ids[k] = rw_itest_fleet_ll(
            ctx.f, "SELECT id FROM app_instances WHERE name = $1", 1, np);
    }
    rw_itest_fleet_snapshot(ctx.f);
    snprintf(body, sizeof(body), "{\"store_app_id\":%lld}", app);
    doc = expect("POST", "/api/v1/runs", ctx.operator, body, 201);
    snprintf(uuid, sizeof(uuid), "%s", str_at(doc, "uuid"));
    json_decref(doc);
    wait_run(uuid, "('partial_failed')");
    /* logs are fetched after the poll's commit, so after the run ended */
    rw_itest_fleet_wait_count(ctx.f,
                              "SELECT count(*) FROM target_logs"
                              " WHERE state = 'stored'",
                              3, deadline_ms(10000), "three stored logs");
    snprintf(base, sizeof(base), "/api/v1/runs/%s/logs", uuid);
    /* the order served: by chunk, then instance */
    res = rw_itest_fleet_q(ctx.f,
                           "SELECT string_agg(i.name, ','"
                           "  ORDER BY t.chunk, t.instance_id)"
                           " FROM run_targets t"
                           " JOIN app_instances i ON i.id = t.instance_id"
                           " WHERE t.state = 'failed'",
                           0, NULL);
    snprintf(order, sizeof(order), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    assert_int_equal(strlen(order), strlen("lg2,lg3,lg5"));

    /* the failed targets' logs, in chunk order, redacted */
    doc = get_logs(base);
    assert_string_equal(str_at(json_object_get(doc, "run"), "uuid"), uuid);
    assert_string_equal(str_at(json_object_get(doc, "run"), "status"),
                        "partial_failed");
    log_names(doc, names, sizeof(names));
    assert_string_equal(names, order);
    assert_true(json_is_null(json_object_get(doc, "next_cursor")));
    json_array_foreach(json_object_get(doc, "logs"), i, v)
    {
        const char *log = str_at(v, "log");

        assert_string_equal(str_at(v, "state"), "failed");
        assert_string_equal(str_at(v, "log_state"), "stored");
        assert_int_equal(int_at(v, "log_attempts"), 1);
        snprintf(want, sizeof(want), "%s/main", str_at(v, "name"));
        assert_string_equal(str_at(v, "target"), want);
        assert_non_null(strstr(str_at(v, "deployment_name"), "lagoon-build-"));
        assert_non_null(strstr(log, "\nBuild failed\n"));
        assert_non_null(strstr(log, "Authorization: Bearer [REDACTED]"));
        assert_null(strstr(log, LOG_TOKEN));
        assert_null(strstr(log, "PRIVATE KEY"));
        /* short logs are kept whole; redaction shortened them */
        assert_true(json_is_null(json_object_get(v, "cut_bytes")));
        assert_true(int_at(v, "bytes_original") > int_at(v, "bytes"));
        assert_int_equal(int_at(v, "bytes"), (long long)strlen(log));
        assert_true(json_is_null(json_object_get(v, "error")));
    }
    json_decref(doc);

    /* pages of two: the cursor resumes after the last row, then ends */
    snprintf(path, sizeof(path), "%s?limit=2&failed=true", base);
    doc = get_logs(path);
    log_names(doc, names, sizeof(names));
    assert_memory_equal(names, order, 7);
    assert_int_equal(strlen(names), 7);
    snprintf(cursor, sizeof(cursor), "%s", str_at(doc, "next_cursor"));
    json_decref(doc);
    snprintf(path, sizeof(path), "%s?limit=2&failed=true&cursor=%s", base,
             cursor);
    doc = get_logs(path);
    log_names(doc, names, sizeof(names));
    assert_string_equal(names, order + 8);
    assert_true(json_is_null(json_object_get(doc, "next_cursor")));
    json_decref(doc);

    /* one instance: a failed one's log; a succeeded one has none */
    snprintf(path, sizeof(path), "%s?instance=%lld", base, ids[2]);
    doc = get_logs(path);
    log_names(doc, names, sizeof(names));
    assert_string_equal(names, "lg3");
    json_decref(doc);
    snprintf(path, sizeof(path), "%s?instance=%lld&failed=false", base, ids[0]);
    doc = get_logs(path);
    assert_int_equal(json_array_size(json_object_get(doc, "logs")), 0);
    json_decref(doc);

    /* a page that ends exactly at the last row is the last */
    snprintf(path, sizeof(path), "%s?limit=3&failed=true", base);
    doc = get_logs(path);
    assert_int_equal(json_array_size(json_object_get(doc, "logs")), 3);
    assert_true(json_is_null(json_object_get(doc, "next_cursor")));
    json_decref(doc);

    /*
     * the cut count is read from the log's own text: a marker-like first
     * line in a build's output (a count past bigint, one larger than the
     * build) reads as not cut, and never fails the read; a cut as the
     * poller writes it (a shorter tail behind the marker) gives its count
     */
    {
        char i2[24], i3[24], i5[24];
        const char *cp[3] = {i2, i3, i5};
        const char *run_logs[] = {"rollwavectl", "run", "logs", uuid, NULL};
        char out[65536];

        snprintf(i2, sizeof(i2), "%lld", ids[1]);
        snprintf(i3, sizeof(i3), "%lld", ids[2]);
        snprintf(i5, sizeof(i5), "%lld", ids[4]);
        PQclear(rw_itest_fleet_q(
            ctx.f,
            "UPDATE target_logs l SET"
            " log = CASE t.instance_id"
            "  WHEN $1::bigint THEN"
            "   E'[... 99999999999999999999 bytes cut ...]\\n' || l.log"
            "  WHEN $2::bigint THEN E'[... 4990 bytes cut ...]\\n' || l.log"
            "  ELSE E'[... 123456789 bytes cut ...]\\n' || l.log END,"
            " bytes_original = CASE t.instance_id"
            "  WHEN $2::bigint THEN 4990 + octet_length(l.log)"
            "  ELSE l.bytes_original END"
            " FROM run_targets t WHERE t.id = l.target_id"
            " AND t.instance_id IN ($1::bigint, $2::bigint, $3::bigint)",
            3, cp));
        snprintf(path, sizeof(path), "%s?failed=true", base);
        doc = get_logs(path);
        assert_int_equal(json_array_size(json_object_get(doc, "logs")), 3);
        json_array_foreach(json_object_get(doc, "logs"), i, v)
        {
            if (strcmp(str_at(v, "name"), "lg3") == 0)
                assert_int_equal(int_at(v, "cut_bytes"), 4990);
            else
                assert_true(json_is_null(json_object_get(v, "cut_bytes")));
        }
        json_decref(doc);
        assert_int_equal(rw_itest_fleet_run(ctx.f, run_logs, out, sizeof(out)),
                         0);
        assert_non_null(strstr(out, "99999999999999999999 bytes cut"));
    }

    /* a failed target whose row is gone is still listed, as "none" */
    snprintf(body, sizeof(body), "%lld", ids[4]);
    p[0] = body;
    PQclear(rw_itest_fleet_q(ctx.f,
                             "DELETE FROM target_logs l USING run_targets t"
                             " WHERE t.id = l.target_id"
                             "   AND t.instance_id = $1::bigint",
                             1, p));
    snprintf(path, sizeof(path), "%s?failed=true&instance=%lld", base, ids[4]);
    doc = get_logs(path);
    v = json_array_get(json_object_get(doc, "logs"), 0);
    assert_int_equal(json_array_size(json_object_get(doc, "logs")), 1);
    assert_string_equal(str_at(v, "log_state"), "none");
    assert_true(json_is_null(json_object_get(v, "log")));
    json_decref(doc);

    /* refusals */
    expect_error("GET",
                 "/api/v1/runs/00000000-0000-4000-8000-000000000000/logs",
                 ctx.viewer, NULL, 404, "not_found", "uuid");
    expect_error("GET", "/api/v1/runs/not-a-uuid/logs", ctx.viewer, NULL, 400,
                 "bad_request", "uuid");
    {
        static const char *const bad[][2] = {
            {"failed=yes", "failed"},
            {"failed=", "failed"},
            {"limit=0", "limit"},
            {"limit=51", "limit"},
            {"instance=abc", "instance"},
            {"instance=0", "instance"},
            {"cursor=1.2", "cursor"},
            {"cursor=a.b.c", "cursor"},
            /* a chunk number is an int */
            {"cursor=2147483648.0.0", "cursor"},
        };
        for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
            snprintf(path, sizeof(path), "%s?%s", base, bad[k][0]);
            expect_error("GET", path, ctx.viewer, NULL, 400, "bad_request",
                         bad[k][1]);
        }
    }
    expect_error("GET", base, NULL, NULL, 401, "unauthorized", NULL);

    rw_itest_fleet_check(ctx.f);
    rw_itest_fleet_stop_all(ctx.f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_endpoints, teardown),
        cmocka_unit_test_teardown(test_auth, teardown),
        cmocka_unit_test_teardown(test_bad_input, teardown),
        cmocka_unit_test_teardown(test_pagination, teardown),
        cmocka_unit_test_teardown(test_rollout, teardown),
        cmocka_unit_test_teardown(test_strategy, teardown),
        cmocka_unit_test_teardown(test_lag_drain, teardown),
        cmocka_unit_test_teardown(test_logs, teardown),
    };

    /* a developer chasing one scenario may name it (cmocka pattern) */
    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
