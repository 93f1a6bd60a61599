/*
 * test_build_logs: build logs end to end (docs/DESIGN.md, "Build logs"):
 * the poller fetches the buildLog of targets that ended failed from
 * lagoon-sim, redacts it, cuts it and stores it in target_logs; rollwavectl
 * run logs and instance history show it.
 *
 * test_failed_logs: six instances in two chunks, three of whose builds
 * fail. Each failed target gets one stored log (the succeeded ones none,
 * ROLLWAVE_LOG_FETCH=failed) that is the sim's log of its deployment; the
 * planted bearer token (plain, base64, URL-encoded) and the PEM key body
 * are in none of: the stored texts, `run logs` (text and JSON), any
 * daemon's log. A failed target whose row is gone prints "no log". The
 * retention then deletes the logs with their run.
 *
 * test_unavailable_then_retry: two failing builds whose logs are 4 MB and
 * that Lagoon cannot read at first (log_error_percent 100): the rows are
 * unavailable, hold Lagoon's reason and never that text as the log; once
 * the sim serves the logs, a poller with a one-second retry wait stores
 * them, cut to their last ROLLWAVE_LOG_MAX_BYTES behind the marker line.
 * The first poller waits an hour between attempts, so no retry happens
 * before the sim changes: nothing here depends on timing.
 *
 * Both end with the fleet's invariant check. Sanitized builds get twice
 * the deadlines.
 */
#include "rw_itest.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "rw_itest_fleet.h"

/* '/', '+' and '=' make the base64 and URL-encoded forms differ. */
#define TOKEN "itest.Bearer/Zq81+mXv0Lp27Rt5Kw="
/* Lines of the sim's PEM block (tools/lagoon-sim/sim_buildlog.c). */
static const char *const pem_body[] = {
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    "QyNTUxOQAAACBzaW11bGF0ZWQtZGVwbG95LWtleS1ub3QtcmVhbC0wMDAx",
    "ZXktbWF0ZXJpYWwtZm9yLXJlZGFjdGlvbi10ZXN0cy1vbmx5LXNpbXVsYXRlZC1kZXBs",
};

#define N_FORMS 3
static char forms[N_FORMS][128]; /* the token: plain, base64, URL-encoded */

static long long deadline_ms(long long ms)
{
    const char *v = getenv("RW_SANITIZED");
    bool sanitized = RW_ITEST_ASAN || (v && *v && strcmp(v, "0") != 0);

    return sanitized ? 2 * ms : ms;
}

static void base64(const char *s, char *out, size_t len)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s), k = 0;

    for (size_t i = 0; i < n && k + 5 < len; i += 3) {
        unsigned v = (unsigned char)s[i] << 16;

        if (i + 1 < n)
            v |= (unsigned char)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)s[i + 2];
        out[k++] = b64[(v >> 18) & 63];
        out[k++] = b64[(v >> 12) & 63];
        out[k++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        out[k++] = i + 2 < n ? b64[v & 63] : '=';
    }
    out[k] = '\0';
}

static void url_encode(const char *s, char *out, size_t len)
{
    size_t k = 0;

    for (; *s && k + 4 < len; s++) {
        unsigned char c = (unsigned char)*s;

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
            (c >= '0' && c <= '9') || strchr("-._~", c))
            out[k++] = (char)c;
        else
            k += (size_t)snprintf(out + k, len - k, "%%%02X", c);
    }
    out[k] = '\0';
}

static void make_forms(void)
{
    snprintf(forms[0], sizeof(forms[0]), "%s", TOKEN);
    base64(TOKEN, forms[1], sizeof(forms[1]));
    url_encode(TOKEN, forms[2], sizeof(forms[2]));
    /* the three are different strings, else the test checks less */
    assert_string_not_equal(forms[0], forms[1]);
    assert_string_not_equal(forms[0], forms[2]);
}

/* Fail naming where when text holds a form of the token or a PEM line. */
static void assert_no_secret(const char *text, const char *where)
{
    for (int i = 0; i < N_FORMS; i++)
        if (strstr(text, forms[i]))
            fail_msg("%s holds the bearer token (form %d: %s)", where, i,
                     forms[i]);
    for (size_t i = 0; i < sizeof(pem_body) / sizeof(pem_body[0]); i++)
        if (strstr(text, pem_body[i]))
            fail_msg("%s holds the PEM key body (line %zu)", where, i + 1);
}

static void assert_no_secret_in_log(rw_itest_fleet_t *f, pid_t pid,
                                    const char *who)
{
    for (int i = 0; i < N_FORMS; i++)
        if (rw_itest_fleet_log_has(f, pid, forms[i]))
            fail_msg("the %s's log holds the bearer token (form %d)", who, i);
    for (size_t i = 0; i < sizeof(pem_body) / sizeof(pem_body[0]); i++)
        if (rw_itest_fleet_log_has(f, pid, pem_body[i]))
            fail_msg("the %s's log holds the PEM key body", who);
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

static void the_run(rw_itest_fleet_t *f, char *uuid, size_t len)
{
    PGresult *res =
        rw_itest_fleet_q(f, "SELECT uuid::text FROM deployment_runs", 0, NULL);

    assert_int_equal(PQntuples(res), 1);
    snprintf(uuid, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

static long long instance_id(rw_itest_fleet_t *f, const char *name)
{
    const char *p[1] = {name};

    return rw_itest_fleet_ll(f, "SELECT id FROM app_instances WHERE name = $1",
                             1, p);
}

/* rollwavectl with up to 6 arguments after argv0; stdout into out. */
static void ctl(rw_itest_fleet_t *f, const char *const *argv, char *out,
                size_t len)
{
    int rc = rw_itest_fleet_run(f, argv, out, len);

    if (rc != 0)
        fail_msg("rollwavectl %s %s exited %d: %.2000s", argv[1], argv[2], rc,
                 out);
}

/* The "log" column of an instance's newest history row (NULL: none). */
static json_t *history_log(rw_itest_fleet_t *f, long long id, char *out,
                           size_t len, json_t **doc)
{
    char id_s[24];
    const char *argv[] = {"rollwavectl", "instance", "history",
                          id_s,          "--json",   NULL};
    json_error_t jerr;

    snprintf(id_s, sizeof(id_s), "%lld", id);
    ctl(f, argv, out, len);
    *doc = json_loads(out, 0, &jerr);
    if (!*doc)
        fail_msg("instance history --json: %s", jerr.text);
    return json_object_get(json_array_get(json_object_get(*doc, "history"), 0),
                           "log");
}

static void test_failed_logs(void **state)
{
    const char *failing[] = {"bl2", "bl4", "bl5"};
    char uuid[64], id_s[24], want[128];
    char *out = malloc(1 << 18);
    const char *p[1];
    rw_itest_fleet_t *f;
    PGresult *res;
    json_t *doc, *logs, *v;
    json_error_t jerr;
    pid_t worker, poller;
    long long app;

    assert_non_null(out);
    make_forms();
    f = rw_itest_fleet_new("{\"rows_delay_ms\":100,\"phase_ms\":50,"
                           "\"build_min_ms\":100,\"build_max_ms\":300,"
                           "\"fail\":[\"bl2/main\",\"bl4/main\",\"bl5/main\"],"
                           "\"log_secret\":\"" TOKEN "\"}",
                           3);
    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_MS", "300");
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_INTERVAL_MS", "300");
    rw_itest_fleet_set(f, "ROLLWAVE_LOG_FETCH", "failed");
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "bl", 6);
    rw_itest_fleet_snapshot(f);
    redeploy_app(f, app);
    worker = rw_itest_fleet_start(f, "rollwave-worker", "worker");
    poller = rw_itest_fleet_start(f, "rollwave-poller", "poller");
    rw_itest_fleet_wait_final(f, 1, deadline_ms(30000));
    /* logs are fetched after the poll's commit, so after the run ended */
    rw_itest_fleet_wait_count(f, "SELECT count(*) FROM target_logs", 3,
                              deadline_ms(10000), "three stored logs");
    rw_itest_fleet_stop_all(f);
    the_run(f, uuid, sizeof(uuid));

    /* one stored log per failed target, none for the others; each is its
     * deployment's log, whole, with the secrets redacted */
    res = rw_itest_fleet_q(
        f,
        "SELECT i.name, t.state, l.state AS log_state, l.attempts,"
        "  l.deployment_name = t.deployment_name, l.log, l.error,"
        "  l.bytes_original, octet_length(l.log), t.deployment_name"
        " FROM target_logs l JOIN run_targets t ON t.id = l.target_id"
        " JOIN app_instances i ON i.id = t.instance_id ORDER BY i.name",
        0, NULL);
    assert_int_equal(PQntuples(res), 3);
    for (int r = 0; r < 3; r++) {
        const char *log = PQgetvalue(res, r, 5);

        assert_string_equal(PQgetvalue(res, r, 0), failing[r]);
        assert_string_equal(PQgetvalue(res, r, 1), "failed");
        assert_string_equal(PQgetvalue(res, r, 2), "stored");
        assert_string_equal(PQgetvalue(res, r, 3), "1");
        assert_string_equal(PQgetvalue(res, r, 4), "t");
        assert_true(PQgetisnull(res, r, 6));
        snprintf(want, sizeof(want), "LAGOON_BUILD_NAME=%s\n",
                 PQgetvalue(res, r, 9));
        if (!strstr(log, want) || !strstr(log, "\nBuild failed\n"))
            fail_msg("%s: not its build's log: %.400s", failing[r], log);
        /* short logs are kept whole: no marker */
        assert_true(strncmp(log, "[... ", 5) != 0);
        assert_non_null(strstr(log, "Authorization: Bearer [REDACTED]"));
        /* the whole key block, its BEGIN and END lines too */
        assert_non_null(strstr(log, "id_ed25519\n[REDACTED]"));
        assert_null(strstr(log, "PRIVATE KEY"));
        assert_no_secret(log, "a stored log");
        /* redaction shortened it; the original size is Lagoon's */
        assert_true(atoll(PQgetvalue(res, r, 7)) >
                    atoll(PQgetvalue(res, r, 8)));
    }
    PQclear(res);
    /* nothing else in the database holds them either */
    {
        const char *tp[2] = {forms[0], pem_body[0]};
        assert_int_equal(
            rw_itest_fleet_ll(f,
                              "SELECT count(*) FROM target_logs"
                              " WHERE strpos(coalesce(log, '') ||"
                              "  coalesce(error, ''), $1) > 0"
                              "  OR strpos(coalesce(log, ''), $2) > 0",
                              2, tp),
            0);
    }

    /* run logs: every stored log, as text */
    {
        const char *argv[] = {"rollwavectl", "run", "logs", uuid, NULL};
        ctl(f, argv, out, 1 << 18);
        assert_no_secret(out, "run logs");
        for (int i = 0; i < 3; i++) {
            snprintf(want, sizeof(want), " %s (%s/main) lagoon-build-",
                     failing[i], failing[i]);
            if (!strstr(out, want))
                fail_msg("run logs names no log of %s: %.2000s", failing[i],
                         out);
        }
        assert_non_null(strstr(out, ": 3 log(s)"));
        assert_non_null(strstr(out, "target failed: "));
        assert_null(strstr(out, " bl1 (bl1/main)"));
    }
    /* as JSON, one instance */
    snprintf(id_s, sizeof(id_s), "%lld", instance_id(f, "bl4"));
    {
        const char *argv[] = {"rollwavectl", "run", "logs",   uuid,
                              "--instance",  id_s,  "--json", NULL};
        ctl(f, argv, out, 1 << 18);
        assert_no_secret(out, "run logs --json");
        doc = json_loads(out, 0, &jerr);
        if (!doc)
            fail_msg("run logs --json: %s: %.500s", jerr.text, out);
        logs = json_object_get(doc, "logs");
        assert_int_equal(json_array_size(logs), 1);
        v = json_array_get(logs, 0);
        assert_string_equal(json_string_value(json_object_get(v, "name")),
                            "bl4");
        assert_string_equal(json_string_value(json_object_get(v, "log_state")),
                            "stored");
        assert_non_null(strstr(json_string_value(json_object_get(v, "log")),
                               "Build failed"));
        json_decref(doc);
    }
    /* instance history: yes for a failed build's attempt, none otherwise */
    v = history_log(f, instance_id(f, "bl4"), out, 1 << 18, &doc);
    assert_string_equal(json_string_value(v), "yes");
    json_decref(doc);
    v = history_log(f, instance_id(f, "bl1"), out, 1 << 18, &doc);
    assert_true(json_is_null(v));
    json_decref(doc);

    /* a failed target whose log row is gone: "no log" */
    p[0] = id_s;
    PQclear(rw_itest_fleet_q(f,
                             "DELETE FROM target_logs l USING run_targets t"
                             " WHERE t.id = l.target_id"
                             "   AND t.instance_id = $1::bigint",
                             1, p));
    {
        const char *argv[] = {"rollwavectl", "run", "logs",     uuid,
                              "--instance",  id_s,  "--failed", NULL};
        ctl(f, argv, out, 1 << 18);
        assert_non_null(strstr(out, " bl4 (bl4/main) lagoon-build-"));
        assert_non_null(strstr(out, "target failed: no log\n"));
    }

    /* no daemon printed a secret */
    assert_no_secret_in_log(f, worker, "worker");
    assert_no_secret_in_log(f, poller, "poller");
    rw_itest_fleet_scan_logs(f);
    rw_itest_fleet_check(f);

    /* the retention takes the logs with their run */
    PQclear(
        rw_itest_fleet_q(f,
                         "UPDATE deployment_runs"
                         " SET created_at = created_at - interval '100 days',"
                         "  completed_at = completed_at - interval '100 days'",
                         0, NULL));
    {
        const char *argv[] = {"rollwavectl", "retention", "--batch", "1", NULL};
        ctl(f, argv, out, 1 << 18);
    }
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM deployment_runs", 0, NULL),
        0);
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM target_logs", 0, NULL), 0);
    free(out);
}

static void test_unavailable_then_retry(void **state)
{
    const long long max = 65536;
    char uuid[64], max_s[24], mark[64];
    char *out = malloc(1 << 19);
    rw_itest_fleet_t *f;
    PGresult *res;
    json_t *doc;
    pid_t first, second, worker;
    long long app;

    assert_non_null(out);
    make_forms();
    f = rw_itest_fleet_new("{\"rows_delay_ms\":100,\"phase_ms\":50,"
                           "\"build_min_ms\":100,\"build_max_ms\":300,"
                           "\"fail\":[\"bc*/main\"],\"log_bytes\":4000000,"
                           "\"log_error_percent\":100,"
                           "\"log_secret\":\"" TOKEN "\"}",
                           0);
    *state = f;
    snprintf(max_s, sizeof(max_s), "%lld", max);
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_MS", "300");
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_INTERVAL_MS", "300");
    rw_itest_fleet_set(f, "ROLLWAVE_LOG_MAX_BYTES", max_s);
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "bc", 2);
    rw_itest_fleet_snapshot(f);
    redeploy_app(f, app);
    worker = rw_itest_fleet_start(f, "rollwave-worker", "worker");
    first = rw_itest_fleet_start_with(f, "rollwave-poller", "poller",
                                      "ROLLWAVE_LOG_RETRY_S", "3600", false);
    rw_itest_fleet_wait_final(f, 1, deadline_ms(30000));
    rw_itest_fleet_wait_count(f, "SELECT count(*) FROM target_logs", 2,
                              deadline_ms(10000), "two unavailable logs");
    the_run(f, uuid, sizeof(uuid));

    /* unavailable: Lagoon's reason kept as the error, never as the log */
    res = rw_itest_fleet_q(f,
                           "SELECT state, attempts, log IS NULL, error"
                           " FROM target_logs ORDER BY id",
                           0, NULL);
    assert_int_equal(PQntuples(res), 2);
    for (int r = 0; r < 2; r++) {
        assert_string_equal(PQgetvalue(res, r, 0), "unavailable");
        assert_string_equal(PQgetvalue(res, r, 1), "1");
        assert_string_equal(PQgetvalue(res, r, 2), "t");
        if (strncmp(PQgetvalue(res, r, 3),
                    "There was an error loading the logs: ", 37) != 0)
            fail_msg("error '%s'", PQgetvalue(res, r, 3));
    }
    PQclear(res);
    {
        const char *argv[] = {"rollwavectl", "run", "logs", uuid, NULL};
        ctl(f, argv, out, 1 << 19);
        assert_non_null(
            strstr(out, "target failed: log unavailable (Lagoon: "));
        assert_non_null(strstr(out, "), 1 attempts\n"));
        assert_null(strstr(out, "There was an error loading the logs"));
    }
    {
        json_t *v = history_log(f, instance_id(f, "bc1"), out, 1 << 19, &doc);
        assert_string_equal(json_string_value(v), "unavailable");
        json_decref(doc);
    }

    /* Lagoon reads them again; a poller that retries after a second
     * stores them, cut */
    rw_itest_fleet_sim_config(f, "{\"log_error_percent\":0}");
    rw_itest_fleet_stop_one(f, first, false);
    second = rw_itest_fleet_start_with(f, "rollwave-poller", "poller",
                                       "ROLLWAVE_LOG_RETRY_S", "1", false);
    rw_itest_fleet_wait_count(f,
                              "SELECT count(*) FROM target_logs"
                              " WHERE state = 'stored'",
                              2, deadline_ms(15000), "two logs fetched again");
    rw_itest_fleet_stop_all(f);
    res = rw_itest_fleet_q(f,
                           "SELECT attempts, error IS NULL, bytes_original,"
                           "  octet_length(log), log"
                           " FROM target_logs ORDER BY id",
                           0, NULL);
    assert_int_equal(PQntuples(res), 2);
    for (int r = 0; r < 2; r++) {
        const char *log = PQgetvalue(res, r, 4);
        const char *body = strchr(log, '\n');
        long long bytes = atoll(PQgetvalue(res, r, 3));
        long long sent = atoll(PQgetvalue(res, r, 2));

        assert_string_equal(PQgetvalue(res, r, 0), "2");
        assert_string_equal(PQgetvalue(res, r, 1), "t");
        assert_true(sent >= 4000000);
        assert_non_null(body);
        body++;
        /* the marker counts what is missing; the rest fits the limit */
        long long kept = bytes - (long long)(body - log);

        /* the secrets sit at the head, in what was cut before redaction:
         * every byte missing is counted as Lagoon sent it */
        snprintf(mark, sizeof(mark), "[... %lld bytes cut ...]\n", sent - kept);
        if (strncmp(log, mark, strlen(mark)) != 0)
            fail_msg("log starts '%.60s', want '%s'", log, mark);
        assert_true(kept <= max);
        assert_true(kept > max - 512);
        /* the end of the build, whole lines from the first */
        assert_true(strncmp(body, "#5 ", 3) == 0);
        assert_non_null(strstr(body, "\nBuild failed\n"));
    }
    PQclear(res);
    assert_no_secret_in_log(f, worker, "worker");
    assert_no_secret_in_log(f, first, "first poller");
    assert_no_secret_in_log(f, second, "second poller");
    rw_itest_fleet_scan_logs(f);
    rw_itest_fleet_check(f);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_failed_logs, teardown),
        cmocka_unit_test_teardown(test_unavailable_then_retry, teardown),
    };

    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
