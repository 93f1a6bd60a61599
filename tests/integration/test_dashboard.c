/*
 * test_dashboard: the dashboard in a real browser. Headless Chromium
 * (Debian's chromium and chromium-driver, installed by scripts/deps.sh) is
 * driven through chromedriver's WebDriver HTTP API against a fleet with
 * rollwave-api, a worker and a poller:
 *
 *   run A  every build fails (simulator fail_rate 1), finished: failed
 *   run B  builds of minutes, in progress while the browser looks
 *
 * and asserts on the rendered DOM: both runs listed with progress bars
 * that match their targets, run A's page listing its failed targets with
 * their reasons (an instance name holding markup shown as text, not
 * parsed) and a "log" link each opening the target's stored build log
 * (redacted), no control button for a viewer, pause / abort for an operator,
 * and a click on "pause" pausing run B in Postgres; then
 *
 *   run C  two waves with a manual bake between them
 *
 * whose page shows its waves and, for the operator, a "promote" button
 * that releases wave 2. Screenshots of the runs list and of run A's page
 * are written to <build>/artefacts/.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "rw_itest.h"
#include "rw_itest_api.h"
#include "rw_itest_fleet.h"

static rw_itest_api_t ctx;
static pid_t driver; /* chromedriver */
static int driver_port;
static char session[128]; /* WebDriver session id, "" = none */

static long long deadline_ms(long long ms)
{
    const char *v = getenv("RW_SANITIZED");
    bool sanitized = RW_ITEST_ASAN || (v && *v && strcmp(v, "0") != 0);

    return sanitized ? 2 * ms : ms;
}

/* ---- WebDriver ---- */

/* method path (under the session unless absolute) -> the answer's value. */
static json_t *wd(const char *method, const char *path, json_t *body)
{
    char full[512], *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_t *doc = NULL, *value;
    long st;

    if (path[0] == '/')
        snprintf(full, sizeof(full), "%s", path);
    else
        snprintf(full, sizeof(full), "/session/%s/%s", session, path);
    st = rw_itest_api_call(driver_port, method, full, NULL,
                           text ? text
                                : (strcmp(method, "POST") == 0 ? "{}" : NULL),
                           0, &doc, NULL);
    free(text);
    json_decref(body);
    if (st != 200 || !doc) {
        char *dump = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        fail_msg("webdriver %s %s: %ld %s", method, full, st, dump ? dump : "");
    }
    value = json_incref(json_object_get(doc, "value"));
    json_decref(doc);
    return value;
}

/* Run script in the page with args (owned); its return value. */
static json_t *js(const char *script, json_t *args)
{
    return wd("POST", "execute/sync",
              json_pack("{s:s, s:o}", "script", script, "args",
                        args ? args : json_array()));
}

static void wait_js(const char *what, const char *script, json_t *args)
{
    long long until = rw_itest_now_ms() + deadline_ms(20000);

    for (;;) {
        json_t *v = js(script, json_incref(args));
        bool ok = json_is_true(v);
        json_decref(v);
        if (ok)
            break;
        if (rw_itest_now_ms() > until) {
            json_t *html = js("return document.body.innerText", NULL);
            fail_msg("dashboard: %s did not happen; page text: %.2000s", what,
                     json_string_value(html) ? json_string_value(html) : "");
        }
        rw_itest_sleep_ms(100);
    }
    json_decref(args);
}

static const char *element_key = "element-6066-11e4-a52e-4f735466cecf";

static char *find(const char *css)
{
    json_t *v =
        wd("POST", "element",
           json_pack("{s:s, s:s}", "using", "css selector", "value", css));
    const char *key = json_string_value(json_object_get(v, element_key));
    char *id;

    if (!key)
        fail_msg("webdriver: no element reference for %s", css);
    id = strdup(key);
    json_decref(v);
    return id;
}

/*
 * Found and clicked in one script: a page showing a run in progress is
 * rendered anew every 2 s, which can replace the element between a
 * WebDriver find and its click (a stale element reference).
 */
static void click(const char *css)
{
    json_t *v = js("const e = document.querySelector(arguments[0]);"
                   "if (!e) return false;"
                   "e.click();"
                   "return true;",
                   json_pack("[s]", css));

    if (!json_is_true(v))
        fail_msg("dashboard: no %s to click", css);
    json_decref(v);
}

static void type(const char *css, const char *text)
{
    char path[256], *id = find(css);

    snprintf(path, sizeof(path), "element/%s/value", id);
    json_decref(wd("POST", path, json_pack("{s:s}", "text", text)));
    free(id);
}

static void go(const char *hash)
{
    json_decref(js("location.hash = arguments[0]", json_pack("[s]", hash)));
}

static int b64(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* The page as PNG into <build>/artefacts/name. */
static void screenshot(const char *name)
{
    json_t *v = wd("GET", "screenshot", NULL);
    const char *s = json_string_value(v);
    char dir[1024], path[1200];
    unsigned char *png;
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    FILE *fp;

    assert_non_null(s);
    png = malloc(strlen(s));
    assert_non_null(png);
    for (const char *p = s; *p; p++) {
        int d = b64(*p);
        if (d < 0)
            continue;
        acc = (acc << 6) | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            png[n++] = (unsigned char)(acc >> bits);
        }
    }
    assert_true(n > 8 && memcmp(png, "\x89PNG", 4) == 0);
    snprintf(dir, sizeof(dir), "%s/../artefacts", rw_itest_env("RW_BIN_DIR"));
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", dir, strerror(errno));
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(png, 1, n, fp), n);
    fclose(fp);
    free(png);
    json_decref(v);
    print_message("screenshot: %s\n", path);
}

static void browser_start(void)
{
    char port[32];
    long long until;
    json_t *v;

    if (access("/usr/bin/chromedriver", X_OK) != 0 ||
        access("/usr/bin/chromium", X_OK) != 0)
        fail_msg("chromium and chromium-driver are not installed (run "
                 "scripts/deps.sh)");
    driver_port = rw_itest_api_free_port();
    snprintf(port, sizeof(port), "--port=%d", driver_port);
    driver = fork();
    assert_true(driver >= 0);
    if (driver == 0) {
        execl("/usr/bin/chromedriver", "chromedriver", port, "--silent",
              (char *)NULL);
        _exit(127);
    }
    until = rw_itest_now_ms() + 15000;
    while (rw_itest_api_call(driver_port, "GET", "/status", NULL, NULL, 0, NULL,
                             NULL) != 200) {
        if (rw_itest_now_ms() > until)
            fail_msg("chromedriver did not start");
        rw_itest_sleep_ms(50);
    }
    v = wd("POST", "/session",
           json_pack("{s:{s:{s:s, s:{s:s, s:[s,s,s,s,s]}}}}", "capabilities",
                     "alwaysMatch", "browserName", "chrome",
                     "goog:chromeOptions", "binary", "/usr/bin/chromium",
                     "args", "--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"));
    snprintf(session, sizeof(session), "%s",
             json_string_value(json_object_get(v, "sessionId")));
    json_decref(v);
    assert_true(session[0] != '\0');
}

static int teardown(void **state)
{
    (void)state;
    if (session[0]) {
        char path[200];
        snprintf(path, sizeof(path), "/session/%s", session);
        rw_itest_api_call(driver_port, "DELETE", path, NULL, NULL, 0, NULL,
                          NULL);
        session[0] = '\0';
    }
    if (driver > 0) {
        kill(driver, SIGTERM);
        waitpid(driver, NULL, 0);
        driver = 0;
    }
    rw_itest_fleet_destroy(ctx.f);
    memset(&ctx, 0, sizeof(ctx));
    return 0;
}

/* ---- the scenario ---- */

static void create_run(long long app, char *uuid, size_t len)
{
    char body[64];
    json_t *doc;

    snprintf(body, sizeof(body), "{\"store_app_id\":%lld}", app);
    doc = rw_itest_api_expect(&ctx, "POST", "/api/v1/runs", ctx.operator, body,
                              201);
    snprintf(uuid, len, "%s", json_string_value(json_object_get(doc, "uuid")));
    json_decref(doc);
}

static void wait_status(const char *uuid, const char *status)
{
    char sql[256];

    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM deployment_runs WHERE uuid = '%s' AND"
             " status = '%s'",
             uuid, status);
    rw_itest_fleet_wait_count(ctx.f, sql, 1, deadline_ms(60000), sql);
}

static void sign_in(const char *token)
{
    wait_js("the token form", "return !document.getElementById('login').hidden",
            NULL);
    type("#token", token);
    click("#login button[type=submit]");
    wait_js("signing in",
            "return document.getElementById('who').dataset.role !== undefined"
            " && document.getElementById('login').hidden",
            NULL);
}

/* Facts of one runs-list row: status and the counts of its bar. */
static json_t *row_facts(const char *uuid)
{
    return js("const r = document.querySelector("
              "  'tr.run-row[data-uuid=\"' + arguments[0] + '\"]');"
              "if (!r) return null;"
              "const segs = {};"
              "for (const s of r.querySelectorAll('.progress span'))"
              "  segs[s.className] = Number(s.dataset.count);"
              "return {status: r.dataset.status, segs: segs};",
              json_pack("[s]", uuid));
}

static long long seg(json_t *facts, const char *cls)
{
    return json_integer_value(
        json_object_get(json_object_get(facts, "segs"), cls));
}

static void test_dashboard(void **state)
{
    long long app_a, app_b, app_c;
    char uuid_a[40], uuid_b[40], uuid_c[40], url[128], hash[128], sql[256];
    json_t *facts, *v;

    (void)state;
    rw_itest_api_start(&ctx,
                       "{\"rows_delay_ms\":100,\"phase_ms\":50,"
                       "\"build_min_ms\":200,\"build_max_ms\":400,"
                       "\"fail_rate\":1.0}",
                       true);
    app_a = rw_itest_fleet_add_app(ctx.f, 0);
    rw_itest_fleet_add_instances(ctx.f, app_a, "fail", 4);
    /* markup in data must come out as text */
    snprintf(sql, sizeof(sql),
             "WITH u AS (UPDATE app_instances SET name ="
             " '<img id=\"pwn\" src=\"x\">' WHERE id = (SELECT min(id) FROM"
             " app_instances WHERE store_app_id = %lld) RETURNING 1)"
             " SELECT count(*) FROM u",
             app_a);
    assert_int_equal(rw_itest_fleet_ll(ctx.f, sql, 0, NULL), 1);
    create_run(app_a, uuid_a, sizeof(uuid_a));
    wait_status(uuid_a, "failed");

    /* builds that outlast the test: run B stays in progress */
    rw_itest_fleet_sim_config(ctx.f, "{\"fail_rate\":0,"
                                     "\"build_min_ms\":600000,"
                                     "\"build_max_ms\":900000}");
    app_b = rw_itest_fleet_add_app(ctx.f, 0);
    rw_itest_fleet_add_instances(ctx.f, app_b, "slow", 6);
    create_run(app_b, uuid_b, sizeof(uuid_b));
    wait_status(uuid_b, "running");

    browser_start();
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ctx.port);
    json_decref(wd("POST", "url", json_pack("{s:s}", "url", url)));
    sign_in(ctx.viewer);
    v = js("return document.getElementById('who').textContent", NULL);
    assert_string_equal(json_string_value(v), "viewer-1 (viewer)");
    json_decref(v);

    /* the runs list: both runs, bars matching their targets */
    wait_js("both runs listed",
            "return document.querySelectorAll('tr.run-row').length === 2",
            NULL);
    facts = row_facts(uuid_a);
    assert_string_equal(json_string_value(json_object_get(facts, "status")),
                        "failed");
    assert_int_equal(seg(facts, "seg-failed"), 4);
    assert_int_equal(seg(facts, "seg-succeeded"), 0);
    json_decref(facts);
    facts = row_facts(uuid_b);
    assert_string_equal(json_string_value(json_object_get(facts, "status")),
                        "running");
    assert_int_equal(seg(facts, "seg-in_flight") + seg(facts, "seg-pending"),
                     6);
    assert_int_equal(seg(facts, "seg-failed"), 0);
    json_decref(facts);
    screenshot("dashboard-runs.png");

    /* run A's page: its failed targets with reasons, no buttons */
    snprintf(hash, sizeof(hash), "#/runs/%s", uuid_a);
    go(hash);
    wait_js("run A's failed targets",
            "return document.querySelectorAll("
            "  '#failed-targets tbody tr').length === 4",
            NULL);
    v = js("return Array.from(document.querySelectorAll("
           "  '#failed-targets .reason')).every("
           "    (e) => e.textContent.length > 1)",
           NULL);
    assert_true(json_is_true(v));
    json_decref(v);
    v = js("return document.getElementById('pwn') === null &&"
           " document.getElementById('failed-targets').textContent"
           "   .includes('<img id=\"pwn\"')",
           NULL);
    assert_true(json_is_true(v));
    json_decref(v);
    v = js("return document.querySelectorAll('button[data-action]').length",
           NULL);
    assert_int_equal(json_integer_value(v), 0);
    json_decref(v);
    screenshot("dashboard-run.png");

    /* a failed target's "log" link opens its stored build log, with the
     * sim's planted bearer token redacted */
    rw_itest_fleet_wait_count(ctx.f,
                              "SELECT count(*) FROM target_logs"
                              " WHERE state = 'stored'",
                              4, deadline_ms(10000), "run A's four logs");
    v = js("return document.querySelectorAll("
           "  '#failed-targets a.log-link').length",
           NULL);
    assert_int_equal(json_integer_value(v), 4);
    json_decref(v);
    click("#failed-targets a.log-link");
    wait_js("a failed build's log",
            "const p = document.querySelector('pre.log-text');"
            "return !!p && p.textContent.includes('Build failed') &&"
            " p.textContent.includes('Authorization: Bearer [REDACTED]')",
            NULL);
    v = js("return document.querySelector('pre.log-text').textContent"
           "  .includes('rwsim-bearer-')",
           NULL);
    assert_true(json_is_false(v));
    json_decref(v);

    /* run B for a viewer: running, still no buttons */
    snprintf(hash, sizeof(hash), "#/runs/%s", uuid_b);
    go(hash);
    wait_js("run B's page",
            "const s = document.getElementById('run-status');"
            "return !!s && s.textContent === 'running'",
            NULL);
    v = js("return document.querySelectorAll('button[data-action]').length",
           NULL);
    assert_int_equal(json_integer_value(v), 0);
    json_decref(v);

    /* an operator gets the buttons, and pause pauses */
    click("#logout");
    sign_in(ctx.operator);
    go("#/runs");
    go(hash);
    wait_js("the operator's buttons",
            "return !!document.querySelector('button[data-action=pause]')"
            " && !!document.querySelector('button[data-action=abort]')",
            NULL);
    click("button[data-action=pause]");
    wait_status(uuid_b, "paused");
    wait_js("the page showing the pause",
            "const s = document.getElementById('run-status');"
            "return !!s && s.textContent === 'paused' &&"
            " !!document.querySelector('button[data-action=resume]')",
            NULL);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM run_transitions t JOIN deployment_runs r"
             " ON r.id = t.run_id WHERE r.uuid = '%s' AND"
             " t.to_status = 'paused' AND t.reason LIKE '%%operator-1%%'",
             uuid_b);
    assert_int_equal(rw_itest_fleet_ll(ctx.f, sql, 0, NULL), 1);

    /* run C waits for a promotion after wave 1: its page shows the waves
     * and a promote button, and the button releases wave 2 */
    rw_itest_fleet_sim_config(ctx.f, "{\"fail_rate\":0,"
                                     "\"build_min_ms\":200,"
                                     "\"build_max_ms\":400}");
    app_c = rw_itest_fleet_add_app(ctx.f, 0);
    rw_itest_fleet_add_instances(ctx.f, app_c, "waves", 3);
    {
        char body[160];
        json_t *doc;
        snprintf(body, sizeof(body),
                 "{\"store_app_id\":%lld,\"strategy\":{\"waves\":"
                 "[\"1\",\"100%%\"],\"bake\":\"manual\"}}",
                 app_c);
        doc = rw_itest_api_expect(&ctx, "POST", "/api/v1/runs", ctx.operator,
                                  body, 201);
        snprintf(uuid_c, sizeof(uuid_c), "%s",
                 json_string_value(json_object_get(doc, "uuid")));
        json_decref(doc);
    }
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM run_waves w JOIN deployment_runs r ON"
             " r.id = w.run_id WHERE r.uuid = '%s' AND w.wave = 2 AND"
             " w.state = 'awaiting_promotion'",
             uuid_c);
    rw_itest_fleet_wait_count(ctx.f, sql, 1, deadline_ms(30000), sql);
    snprintf(hash, sizeof(hash), "#/runs/%s", uuid_c);
    go(hash);
    wait_js("run C's waves and promote button",
            "return document.querySelectorAll('#waves tbody tr').length === 2"
            " && !!document.querySelector('button[data-action=promote]')",
            NULL);
    click("button[data-action=promote]");
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM run_waves w JOIN deployment_runs r ON"
             " r.id = w.run_id WHERE r.uuid = '%s' AND w.wave = 2 AND"
             " w.state IN ('running', 'done')",
             uuid_c);
    rw_itest_fleet_wait_count(ctx.f, sql, 1, deadline_ms(30000), sql);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_dashboard, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
