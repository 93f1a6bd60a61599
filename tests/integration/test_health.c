/*
 * test_health: the health gate end to end (docs/DESIGN.md, "Health
 * gate"). One fleet rolls out two store apps at once: one whose strategy
 * checks "{route}/healthz" (2 attempts, 1 s apart) over 30 instances in
 * chunks of 10, five of whose environments the simulator answers with
 * HTTP 503; and one without a gate whose environments all answer 503 too.
 * The five end failed with the reason, after exactly two checks each, and
 * count as failed in the run; the 25 others succeed after one check; the
 * app without a gate succeeds without a single check; every instance's
 * build is recorded as complete and no instance status changes
 * (rw_itest_fleet_check).
 *
 * The strategy is set on the store app and copied onto the run when the
 * run did not copy it itself at creation, so the test holds whether or not
 * run creation copies strategies.
 *
 * A second scenario (test_cadence) shows a gated chunk asking Lagoon at
 * most once per poll interval while its checks come more often.
 *
 * A third scenario runs rw_health_check_many against a small HTTP server
 * of its own: 2xx and 503, a redirect followed on the same host and not
 * to another host, another port of the host or another scheme, a
 * redirect loop cut short, a timeout, a timeout shared by a check's hops
 * (three redirects of 0.4 s each end a 1 s check), a batch larger than
 * the parallel window, and no credentials or cookies sent. The template
 * rules and the answer classes are the unit test's (tests/unit/
 * test_health.c).
 */
#include "rw_itest.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "rw_health.h"
#include "rw_itest_fleet.h"

#define GATED     30
#define UNGATED   10
#define N_FAILING 5

static const int failing[N_FAILING] = {3, 9, 14, 22, 27};

static bool is_failing(int k)
{
    for (int i = 0; i < N_FAILING; i++)
        if (failing[i] == k)
            return true;
    return false;
}

static int teardown(void **state)
{
    rw_itest_fleet_destroy(*state);
    *state = NULL;
    return 0;
}

static void redeploy_app(rw_itest_fleet_t *f, long long app)
{
    char app_s[24], out[4096];
    const char *argv[] = {"rollwavectl", "redeploy", "--store-app", app_s,
                          "--by",        "itest",    NULL};
    int rc;

    snprintf(app_s, sizeof(app_s), "%lld", app);
    rc = rw_itest_fleet_run(f, argv, out, sizeof(out));
    if (rc != 0)
        fail_msg("rollwavectl redeploy --store-app %s exited %d: %s", app_s, rc,
                 out);
}

static long long health_checks_of(json_t *stats, const char *env)
{
    json_t *v = json_object_get(json_object_get(stats, "health_checks"), env);

    return json_is_integer(v) ? json_integer_value(v) : 0;
}

static void test_gate(void **state)
{
    const char *strategy = "{\"health\":{\"url\":\"{route}/healthz\","
                           "\"attempts\":2,\"interval_s\":1}}";
    char sim[1024], app_s[24], env[64], want[128];
    const char *p[2];
    long long gated, plain, deadline_ms = RW_ITEST_ASAN ? 90000 : 45000;
    rw_itest_fleet_t *f;
    PGresult *res;
    json_t *stats;
    size_t at;

    /* the gated app's failing five, and every environment of the other */
    at = (size_t)snprintf(sim, sizeof(sim),
                          "{\"rows_delay_ms\":100,\"phase_ms\":50,"
                          "\"build_min_ms\":100,\"build_max_ms\":400,"
                          "\"health_fail\":[\"ng*/main\"");
    for (int i = 0; i < N_FAILING; i++)
        at += (size_t)snprintf(sim + at, sizeof(sim) - at, ",\"hg%d/main\"",
                               failing[i]);
    snprintf(sim + at, sizeof(sim) - at, "]}");
    f = rw_itest_fleet_new(sim, 10);
    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_MS", "300");
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_INTERVAL_MS", "500");

    gated = rw_itest_fleet_add_app(f, 0);
    plain = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, gated, "hg", GATED);
    rw_itest_fleet_add_instances(f, plain, "ng", UNGATED);
    snprintf(app_s, sizeof(app_s), "%lld", gated);
    p[0] = app_s;
    p[1] = strategy;
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE store_apps SET strategy = $2"
                             " WHERE id = $1::bigint",
                             2, p));
    rw_itest_fleet_snapshot(f);
    redeploy_app(f, gated);
    redeploy_app(f, plain);
    /* runs copy their app's strategy at creation: one run with a gate,
     * one without */
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE NULLIF(strategy, '')::jsonb"
                                       "       ? 'health'",
                                       0, NULL),
                     1);

    rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");
    rw_itest_fleet_wait_final(f, 2, deadline_ms);

    /* the gated run: five failed with the reason, counted as failed */
    res = rw_itest_fleet_q(f,
                           "SELECT i.lagoon_project, t.state, t.error,"
                           "       t.health_attempts, t.health_next_at IS NULL,"
                           "       t.lagoon_status, t.route"
                           " FROM run_targets t"
                           " JOIN app_instances i ON i.id = t.instance_id"
                           " WHERE i.store_app_id = $1::bigint"
                           " ORDER BY t.id",
                           1, p);
    assert_int_equal(PQntuples(res), GATED);
    for (int r = 0; r < PQntuples(res); r++) {
        const char *project = PQgetvalue(res, r, 0);
        const char *state_s = PQgetvalue(res, r, 1);
        const char *error = PQgetvalue(res, r, 2);
        int k = atoi(project + 2);

        /* the build completed either way; the gate decided */
        assert_string_equal(PQgetvalue(res, r, 5), "complete");
        assert_string_equal(PQgetvalue(res, r, 4), "t");
        if (strncmp(PQgetvalue(res, r, 6), "http://127.0.0.1:", 17) != 0)
            fail_msg("%s: route '%s'", project, PQgetvalue(res, r, 6));
        if (is_failing(k)) {
            snprintf(want, sizeof(want), "/sim/env/%s/main/healthz)", project);
            if (strcmp(state_s, "failed") != 0 ||
                strncmp(error, "health check: HTTP 503 after 2 attempts (http",
                        45) != 0 ||
                !strstr(error, want))
                fail_msg("%s: %s \"%s\", want failed \"health check: HTTP "
                         "503 after 2 attempts (...%s\"",
                         project, state_s, error, want);
            assert_string_equal(PQgetvalue(res, r, 3), "2");
        } else {
            if (strcmp(state_s, "succeeded") != 0)
                fail_msg("%s: %s \"%s\", want succeeded", project, state_s,
                         error);
            assert_string_equal(PQgetvalue(res, r, 3), "1");
        }
    }
    PQclear(res);
    res = rw_itest_fleet_q(f,
                           "SELECT status, succeeded_count, failed_count"
                           " FROM deployment_runs WHERE store_app_id = "
                           "$1::bigint",
                           1, p);
    assert_int_equal(PQntuples(res), 1);
    assert_string_equal(PQgetvalue(res, 0, 0), "partial_failed");
    assert_int_equal(atoi(PQgetvalue(res, 0, 1)), GATED - N_FAILING);
    assert_int_equal(atoi(PQgetvalue(res, 0, 2)), N_FAILING);
    PQclear(res);

    /* the run without a gate: all succeeded, nothing checked */
    snprintf(app_s, sizeof(app_s), "%lld", plain);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets t"
                                       " JOIN deployment_runs r"
                                       "   ON r.id = t.run_id"
                                       " WHERE r.store_app_id = $1::bigint"
                                       "   AND t.state = 'succeeded'"
                                       "   AND t.health_attempts = 0",
                                       1, p),
                     UNGATED);

    /* every instance's build is on record as complete */
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM app_instances"
                                       " WHERE last_deployment_status ="
                                       "   'complete'"
                                       "   AND last_deployed_at IS NOT NULL",
                                       0, NULL),
                     GATED + UNGATED);

    /* the simulator saw exactly the checks of the gate */
    stats = rw_itest_fleet_sim(f, "/sim/stats", NULL);
    for (int k = 1; k <= GATED; k++) {
        snprintf(env, sizeof(env), "hg%d/main", k);
        if (health_checks_of(stats, env) != (is_failing(k) ? 2 : 1))
            fail_msg("%s: %lld health checks, want %d", env,
                     health_checks_of(stats, env), is_failing(k) ? 2 : 1);
    }
    assert_int_equal(
        json_integer_value(json_object_get(stats, "health_requests")),
        GATED + N_FAILING);
    assert_int_equal(
        json_integer_value(json_object_get(stats, "health_failures")),
        2 * N_FAILING);
    json_decref(stats);

    rw_itest_fleet_check(f);
    rw_itest_fleet_stop_all(f);
    rw_itest_fleet_scan_logs(f);
}

/*
 * A gated chunk whose builds end at different times: the targets built
 * first are checked (and those that fail, checked again a second later)
 * while the others still build, so the chunk's events come as often as
 * its checks are due. Lagoon is still asked at most once per poll
 * interval: the reads are at least 95% of an interval apart (the slack
 * of rounding), all between the chunk's trigger and its last read, so
 * there are at most (last read - trigger) / (0.95 interval) + 1.
 */
static void test_cadence(void **state)
{
    enum { N = 8, N_FAILING_C = 4, INTERVAL_MS = 2000 };
    const char *strategy = "{\"health\":{\"url\":\"{route}/healthz\","
                           "\"attempts\":4,\"interval_s\":1}}";
    const char *p[2];
    char app_s[24], env[64];
    long long app, reads, window_ms,
        deadline_ms = RW_ITEST_ASAN ? 60000 : 30000;
    rw_itest_fleet_t *f;
    json_t *stats;

    /* one build at a time: they end about every half second */
    f = rw_itest_fleet_new("{\"rows_delay_ms\":100,\"phase_ms\":50,"
                           "\"build_min_ms\":400,\"build_max_ms\":600,"
                           "\"max_concurrent_builds\":1,"
                           "\"health_fail\":[\"hc1/main\",\"hc2/main\","
                           "\"hc3/main\",\"hc4/main\"]}",
                           10);
    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_MS", "300");
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_INTERVAL_MS", "2000");
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "hc", N);
    snprintf(app_s, sizeof(app_s), "%lld", app);
    p[0] = app_s;
    p[1] = strategy;
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE store_apps SET strategy = $2"
                             " WHERE id = $1::bigint",
                             2, p));
    rw_itest_fleet_snapshot(f);
    redeploy_app(f, app);
    PQclear(
        rw_itest_fleet_q(f,
                         "UPDATE deployment_runs r SET strategy = s.strategy"
                         " FROM store_apps s WHERE s.id = r.store_app_id"
                         "   AND r.strategy IS NULL",
                         0, NULL));
    rw_itest_fleet_start(f, "rollwave-worker", "worker");
    rw_itest_fleet_start(f, "rollwave-poller", "poller");
    rw_itest_fleet_wait_final(f, 1, deadline_ms);

    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM run_chunks", 0, NULL), 1);
    window_ms = rw_itest_fleet_ll(
        f,
        "SELECT (extract(epoch FROM lagoon_read_at - triggered_at) * 1000)"
        "         ::bigint FROM run_chunks",
        0, NULL);
    stats = rw_itest_fleet_sim(f, "/sim/stats", NULL);
    reads = json_integer_value(json_object_get(stats, "rows_requests"));
    if (reads < 1 || window_ms < 0 ||
        reads > window_ms / (INTERVAL_MS - INTERVAL_MS / 20) + 1)
        fail_msg("%lld deploymentsByBulkId in %lld ms, want at most one "
                 "per %d ms",
                 reads, window_ms, INTERVAL_MS);
    /* the checks kept their own cadence: every target checked until its
     * gate ended, the failing ones four times */
    for (int k = 1; k <= N; k++) {
        long long want = k <= N_FAILING_C ? 4 : 1;
        snprintf(env, sizeof(env), "hc%d/main", k);
        if (health_checks_of(stats, env) != want)
            fail_msg("%s: %lld health checks, want %lld", env,
                     health_checks_of(stats, env), want);
    }
    json_decref(stats);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets"
                                       " WHERE state = 'failed'"
                                       "   AND error LIKE 'health check: HTTP"
                                       " 503 after 4 attempts%'",
                                       0, NULL),
                     N_FAILING_C);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets"
                                       " WHERE state = 'succeeded'",
                                       0, NULL),
                     N - N_FAILING_C);
    rw_itest_fleet_check(f);
    rw_itest_fleet_stop_all(f);
    rw_itest_fleet_scan_logs(f);
}

/* ---- a small HTTP server for the checks themselves ---- */

typedef struct srv {
    struct MHD_Daemon *d, *d2; /* d2: the same answers on another port */
    int port, port2;
    pthread_mutex_t mu;
    int hits_ok, hits_loop, hits_port2, hits_hop_end, with_credentials;
} srv_t;

static srv_t srv;

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status,
                              const char *location)
{
    static char body[] = "{}";
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(body), body, MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret;

    if (location)
        MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, location);
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_req(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    char loc[128];

    (void)method;
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    pthread_mutex_lock(&srv.mu);
    if (MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_AUTHORIZATION) ||
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_COOKIE))
        srv.with_credentials++;
    if (strcmp(url, "/ok") == 0)
        srv.hits_ok++;
    if (strcmp(url, "/loop") == 0)
        srv.hits_loop++;
    if (strcmp(url, "/hop3") == 0)
        srv.hits_hop_end++;
    if (cls == &srv.port2)
        srv.hits_port2++;
    pthread_mutex_unlock(&srv.mu);
    if (strcmp(url, "/ok") == 0)
        return answer(c, 204, NULL);
    if (strcmp(url, "/fail") == 0)
        return answer(c, 503, NULL);
    if (strcmp(url, "/same") == 0) {
        snprintf(loc, sizeof(loc), "http://127.0.0.1:%d/ok", srv.port);
        return answer(c, 302, loc);
    }
    if (strcmp(url, "/other") == 0) {
        /* the same server by another name: another host to a check */
        snprintf(loc, sizeof(loc), "http://localhost:%d/ok", srv.port);
        return answer(c, 302, loc);
    }
    if (strcmp(url, "/otherport") == 0) {
        /* the same host, another port: another service */
        snprintf(loc, sizeof(loc), "http://127.0.0.1:%d/ok", srv.port2);
        return answer(c, 302, loc);
    }
    if (strcmp(url, "/https") == 0) {
        snprintf(loc, sizeof(loc), "https://127.0.0.1:%d/ok", srv.port);
        return answer(c, 302, loc);
    }
    if (strncmp(url, "/hop", 4) == 0 && url[4] >= '0' && url[4] < '3') {
        /* three hops of 0.4 s: more than a check's 1 s in all, though
         * each alone is well within it */
        usleep(400 * 1000);
        snprintf(loc, sizeof(loc), "/hop%c", url[4] + 1);
        return answer(c, 302, loc);
    }
    if (strcmp(url, "/hop3") == 0)
        return answer(c, 200, NULL);
    if (strcmp(url, "/loop") == 0)
        return answer(c, 307, "/loop");
    if (strcmp(url, "/slow") == 0) {
        usleep(1500 * 1000);
        return answer(c, 200, NULL);
    }
    return answer(c, 404, NULL);
}

static int srv_stop(void **state)
{
    (void)state;
    if (srv.d)
        MHD_stop_daemon(srv.d);
    if (srv.d2)
        MHD_stop_daemon(srv.d2);
    srv.d = NULL;
    srv.d2 = NULL;
    return 0;
}

static void test_checks(void **state)
{
    enum { N = 80 };
    const union MHD_DaemonInfo *info;
    rw_health_check_t ck[N];
    char urls[N][96], errstr[256];
    const char *paths[] = {"/ok",   "/fail",      "/same",  "/other", "/loop",
                           "/slow", "/otherport", "/https", "/hop0"};
    enum { NP = sizeof(paths) / sizeof(paths[0]) };

    (void)state;
    pthread_mutex_init(&srv.mu, NULL);
    srv.d = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD |
                                 MHD_USE_THREAD_PER_CONNECTION,
                             0, NULL, NULL, on_req, NULL, MHD_OPTION_END);
    assert_non_null(srv.d);
    info = MHD_get_daemon_info(srv.d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    srv.port = info->port;
    srv.d2 = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
        NULL, on_req, &srv.port2, MHD_OPTION_END);
    assert_non_null(srv.d2);
    info = MHD_get_daemon_info(srv.d2, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    srv.port2 = info->port;

    memset(ck, 0, sizeof(ck));
    for (int i = 0; i < NP; i++)
        snprintf(urls[i], sizeof(urls[i]), "http://127.0.0.1:%d%s", srv.port,
                 paths[i]);
    /* more than the parallel window of healthy ones */
    for (int i = NP; i < N; i++)
        snprintf(urls[i], sizeof(urls[i]), "http://127.0.0.1:%d/ok?n=%d",
                 srv.port, i);
    for (int i = 0; i < N; i++)
        ck[i].url = urls[i];
    assert_int_equal(rw_health_check_many(ck, N, 1000, errstr, sizeof(errstr)),
                     RW_OK);

    assert_int_equal(ck[0].result, RW_HEALTH_OK);
    assert_string_equal(ck[0].what, "HTTP 204");
    assert_int_equal(ck[1].result, RW_HEALTH_FAILED);
    assert_string_equal(ck[1].what, "HTTP 503");
    /* followed on the same host */
    assert_int_equal(ck[2].result, RW_HEALTH_OK);
    /* not followed to another host */
    assert_int_equal(ck[3].result, RW_HEALTH_FAILED);
    assert_string_equal(ck[3].what, "HTTP 302");
    /* a loop ends after the first request and RW_HEALTH_MAX_REDIRECTS */
    assert_int_equal(ck[4].result, RW_HEALTH_FAILED);
    assert_string_equal(ck[4].what, "HTTP 307");
    assert_int_equal(srv.hits_loop, 1 + RW_HEALTH_MAX_REDIRECTS);
    assert_int_equal(ck[5].result, RW_HEALTH_ERROR);
    assert_string_equal(ck[5].what, "timeout");
    /* not followed to another port of the host, nor to another scheme */
    assert_int_equal(ck[6].result, RW_HEALTH_FAILED);
    assert_string_equal(ck[6].what, "HTTP 302");
    assert_int_equal(srv.hits_port2, 0);
    assert_int_equal(ck[7].result, RW_HEALTH_FAILED);
    assert_string_equal(ck[7].what, "HTTP 302");
    /* the check's time is shared by its hops: the third ends it */
    assert_int_equal(ck[8].result, RW_HEALTH_ERROR);
    assert_string_equal(ck[8].what, "timeout");
    assert_int_equal(srv.hits_hop_end, 0);
    for (int i = NP; i < N; i++)
        assert_int_equal(ck[i].result, RW_HEALTH_OK);
    /* /ok: its own check, the same-host redirect, the window; never the
     * other host's, port's or scheme's */
    assert_int_equal(srv.hits_ok, 1 + 1 + (N - NP));
    assert_int_equal(srv.with_credentials, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_gate, teardown),
        cmocka_unit_test_teardown(test_cadence, teardown),
        cmocka_unit_test_teardown(test_checks, srv_stop),
    };

    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
