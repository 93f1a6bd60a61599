/*
 * test_lagoon_client: the Lagoon client against rollwave-lagoon-sim over
 * real HTTP. Each test starts its own simulator as a child process on a
 * free port (fast timings, a token of its own) and stops it afterwards, so
 * fault settings never leak between tests. Covers triggering, reading
 * rows, error classification and finding a bulk by name after the fact
 * (rows appear only after the sim's rows delay). It does not test the
 * sim's lifecycle rules beyond what the client relies on.
 */
#include "rw_itest.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "rw_err.h"
#include "rw_lagoon.h"

/* The --rows-delay-ms start_sim gives the simulator. */
#define SIM_ROWS_DELAY_MS 300

typedef struct sim {
    pid_t pid;
    char dir[256];
    char port_file[300];
    char log_file[300];
    char token_file[300];
    char token[64];
    char url[160];       /* .../graphql */
    char admin_url[128]; /* http://127.0.0.1:port */
} sim_t;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    if (!f)
        fail_msg("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void dump_sim_log(const sim_t *sim)
{
    char buf[4096];
    size_t n;
    FILE *f = fopen(sim->log_file, "r");

    if (!f)
        return;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    print_error("--- lagoon-sim log ---\n%s\n", buf);
}

static int start_sim(void **state)
{
    sim_t *sim = calloc(1, sizeof(*sim));
    const char *tmp = getenv("TMPDIR");
    char bin[512];
    long long deadline;
    int port = 0;

    assert_non_null(sim);
    rw_itest_bin(bin, sizeof(bin), "rollwave-lagoon-sim");
    if (access(bin, X_OK) != 0)
        fail_msg("%s is not an executable: build target rollwave-lagoon-sim",
                 bin);
    snprintf(sim->dir, sizeof(sim->dir), "%s/rw_lagoon_itest_XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(sim->dir))
        fail_msg("mkdtemp: %s", strerror(errno));
    snprintf(sim->port_file, sizeof(sim->port_file), "%s/port", sim->dir);
    snprintf(sim->log_file, sizeof(sim->log_file), "%s/sim.log", sim->dir);
    snprintf(sim->token_file, sizeof(sim->token_file), "%s/token", sim->dir);
    snprintf(sim->token, sizeof(sim->token), "itest-%ld-%ld", (long)getpid(),
             (long)rw_itest_now_ms());

    sim->pid = fork();
    if (sim->pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (sim->pid == 0) {
        int fd = open(sim->log_file, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        execl(bin, bin, "--port", "0", "--port-file", sim->port_file, "--token",
              sim->token, "--rows-delay-ms", "300", "--phase-ms", "100",
              "--build-min-ms", "200", "--build-max-ms", "400", (char *)NULL);
        _exit(127);
    }

    deadline = rw_itest_now_ms() + 10000;
    while (rw_itest_now_ms() < deadline) {
        FILE *f = fopen(sim->port_file, "r");
        int status;

        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
            if (port > 0)
                break;
        }
        if (waitpid(sim->pid, &status, WNOHANG) == sim->pid) {
            sim->pid = 0;
            dump_sim_log(sim);
            fail_msg("lagoon-sim exited before listening (status %d)", status);
        }
        rw_itest_sleep_ms(20);
    }
    if (port <= 0) {
        kill(sim->pid, SIGKILL);
        waitpid(sim->pid, NULL, 0);
        dump_sim_log(sim);
        fail_msg("lagoon-sim wrote no port to %s within 10 s", sim->port_file);
    }
    snprintf(sim->admin_url, sizeof(sim->admin_url), "http://127.0.0.1:%d",
             port);
    snprintf(sim->url, sizeof(sim->url), "%s/graphql", sim->admin_url);
    *state = sim;
    return 0;
}

static int stop_sim(void **state)
{
    sim_t *sim = *state;
    long long deadline;
    int status;

    if (!sim)
        return 0;
    if (sim->pid > 0) {
        kill(sim->pid, SIGTERM);
        deadline = rw_itest_now_ms() + 5000;
        while (waitpid(sim->pid, &status, WNOHANG) == 0) {
            if (rw_itest_now_ms() > deadline) {
                kill(sim->pid, SIGKILL);
                waitpid(sim->pid, &status, 0);
                break;
            }
            rw_itest_sleep_ms(20);
        }
    }
    unlink(sim->port_file);
    unlink(sim->log_file);
    unlink(sim->token_file);
    rmdir(sim->dir);
    free(sim);
    *state = NULL;
    return 0;
}

static size_t collect(char *ptr, size_t size, size_t nmemb, void *ud)
{
    char *buf = ud;
    size_t have = strlen(buf), n = size * nmemb;

    /* The admin answers are small; anything beyond 16 KiB is dropped. */
    if (have + n >= 16384)
        n = 16383 - have;
    memcpy(buf + have, ptr, n);
    buf[have + n] = '\0';
    return size * nmemb;
}

/* GET (body NULL) or POST JSON to the sim's admin API; returns the parsed
 * answer, failing the test on anything but HTTP 200 with JSON. */
static json_t *sim_admin(const sim_t *sim, const char *path, const char *body)
{
    char url[256], *resp = calloc(1, 16384);
    struct curl_slist *headers = NULL;
    json_error_t jerr;
    json_t *root;
    long code = 0;
    CURLcode cc;
    CURL *c = curl_easy_init();

    assert_non_null(c);
    assert_non_null(resp);
    snprintf(url, sizeof(url), "%s%s", sim->admin_url, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, resp);
    if (body) {
        headers = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK || code != 200)
        fail_msg("%s %s: curl %s, HTTP %ld, body %s", body ? "POST" : "GET",
                 path, curl_easy_strerror(cc), code, resp);
    root = json_loads(resp, 0, &jerr);
    if (!root)
        fail_msg("%s: not JSON: %s", path, resp);
    free(resp);
    return root;
}

static void sim_config(const sim_t *sim, const char *json)
{
    json_decref(sim_admin(sim, "/sim/config", json));
}

static long long stat_int(json_t *stats, const char *key)
{
    json_t *v = json_object_get(stats, key);

    if (!json_is_integer(v))
        fail_msg("/sim/stats has no integer %s", key);
    return json_integer_value(v);
}

static rw_lagoon_t *client(const sim_t *sim, const char *token,
                           const char *token_file, long timeout_ms)
{
    rw_lagoon_opts_t opts = {.url = sim->url,
                             .token = token,
                             .token_file = token_file,
                             .timeout_ms = timeout_ms,
                             .connect_timeout_ms = 2000};
    rw_lagoon_t *lc = NULL;
    char err[256];

    if (rw_lagoon_new(&lc, &opts, err, sizeof(err)) != RW_OK)
        fail_msg("rw_lagoon_new: %s", err);
    return lc;
}

static bool all_terminal(const rw_lagoon_deployments_t *d,
                         const rw_lagoon_env_t *envs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const rw_lagoon_deployment_t *r =
            rw_lagoon_deployments_find(d, envs[i].project, envs[i].environment);
        if (!r ||
            !rw_lagoon_status_is_terminal(rw_lagoon_status_parse(r->status)))
            return false;
    }
    return true;
}

static void test_bulk_rows_appear_and_finish(void **state)
{
    sim_t *sim = *state;
    char p1[64], p2[64], p3[64], bulk_id[RW_LAGOON_BULK_ID_MAX], err[256];
    rw_lagoon_env_t envs[3];
    rw_lagoon_var_t vars[] = {{"LAGOON_VARIABLES_ONLY", "true"}};
    rw_lagoon_deployments_t *d = NULL;
    rw_lagoon_t *lc = client(sim, sim->token, NULL, 5000);
    long long deadline;
    bool seen_rows = false;
    json_t *stats;

    rw_itest_unique(p1, sizeof(p1), "proj");
    rw_itest_unique(p2, sizeof(p2), "proj");
    rw_itest_unique(p3, sizeof(p3), "proj \"quoted\" {x}");
    envs[0] = (rw_lagoon_env_t){p1, "main"};
    envs[1] = (rw_lagoon_env_t){p2, "main"};
    envs[2] = (rw_lagoon_env_t){p3, "feature/x"};

    if (rw_lagoon_bulk_deploy(lc, "rollwave itest c0 a1", envs, 3, vars, 1,
                              bulk_id, sizeof(bulk_id), err,
                              sizeof(err)) != RW_OK)
        fail_msg("bulk deploy: %s", err);
    assert_int_equal(strlen(bulk_id), 36);

    /* Rows appear only after --rows-delay-ms. */
    if (rw_lagoon_deployments_by_bulk_id(lc, bulk_id, &d, err, sizeof(err)) !=
        RW_OK)
        fail_msg("deployments: %s", err);
    assert_int_equal(d->n, 0);
    rw_lagoon_deployments_free(d);
    d = NULL;

    deadline = rw_itest_now_ms() + 20000;
    for (;;) {
        if (rw_lagoon_deployments_by_bulk_id(lc, bulk_id, &d, err,
                                             sizeof(err)) != RW_OK)
            fail_msg("deployments: %s", err);
        if (d->n > 0 && !seen_rows) {
            seen_rows = true;
            assert_true(d->n <= 3);
            for (size_t i = 0; i < d->n; i++) {
                assert_true(d->rows[i].id > 0);
                assert_true(strlen(d->rows[i].name) > 0);
                assert_true(d->rows[i].created > 0);
                assert_int_not_equal(rw_lagoon_status_parse(d->rows[i].status),
                                     RW_LAGOON_STATUS_UNKNOWN);
            }
        }
        if (d->n == 3 && all_terminal(d, envs, 3))
            break;
        if (rw_itest_now_ms() > deadline)
            fail_msg("bulk %s not terminal after 20 s (%zu rows)", bulk_id,
                     d->n);
        rw_lagoon_deployments_free(d);
        d = NULL;
        rw_itest_sleep_ms(50);
    }
    for (size_t i = 0; i < 3; i++) {
        const rw_lagoon_deployment_t *r =
            rw_lagoon_deployments_find(d, envs[i].project, envs[i].environment);
        assert_non_null(r);
        /* The sim's default fail and cancel rates are 0. */
        assert_true(
            rw_lagoon_status_is_success(rw_lagoon_status_parse(r->status)));
        assert_true(r->completed > 0);
        assert_true(r->started > 0);
        assert_true(r->completed >= r->started);
        assert_true(r->started >= r->created);
    }
    rw_lagoon_deployments_free(d);
    d = NULL;

    /* An unknown bulk id is an empty list, not an error. */
    if (rw_lagoon_deployments_by_bulk_id(lc, "no-such-bulk", &d, err,
                                         sizeof(err)) != RW_OK)
        fail_msg("deployments of unknown bulk: %s", err);
    assert_int_equal(d->n, 0);
    rw_lagoon_deployments_free(d);

    stats = sim_admin(sim, "/sim/stats", NULL);
    assert_int_equal(stat_int(stats, "bulk_calls"), 1);
    assert_int_equal(stat_int(stats, "environments_triggered"), 3);
    assert_int_equal(stat_int(stats, "duplicate_triggers"), 0);
    assert_int_equal(stat_int(stats, "max_envs_per_call"), 3);
    json_decref(stats);
    rw_lagoon_destroy(lc);
}

static void test_bad_token_is_auth_error(void **state)
{
    sim_t *sim = *state;
    const char *bad = "definitely-not-the-token-8f3a";
    rw_lagoon_env_t envs[] = {{"p", "main"}};
    rw_lagoon_deployments_t *d = NULL;
    rw_lagoon_t *lc = client(sim, bad, NULL, 5000);
    char bulk_id[RW_LAGOON_BULK_ID_MAX], err[512];
    rw_err_t e;
    json_t *stats;

    e = rw_lagoon_bulk_deploy(lc, "b", envs, 1, NULL, 0, bulk_id,
                              sizeof(bulk_id), err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_AUTH);
    /* retried: the next attempt re-reads a rotated token file */
    assert_true(rw_err_is_retriable(e));
    assert_int_equal(rw_err_class(e, RW_OP_SEND), RW_ERR_CLASS_RETRY);
    assert_false(rw_lagoon_in_doubt(lc));
    assert_true(strlen(err) > 0);
    assert_null(strstr(err, bad));
    assert_null(strstr(err, sim->token));
    assert_string_equal(bulk_id, "");

    e = rw_lagoon_deployments_by_bulk_id(lc, "x", &d, err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_AUTH);
    assert_null(d);
    assert_null(strstr(err, bad));

    stats = sim_admin(sim, "/sim/stats", NULL);
    assert_int_equal(stat_int(stats, "bulk_calls"), 0);
    json_decref(stats);
    rw_lagoon_destroy(lc);
}

static void test_http500_is_retriable_server_error(void **state)
{
    sim_t *sim = *state;
    rw_lagoon_env_t envs[] = {{"p500", "main"}};
    rw_lagoon_deployments_t *d = NULL;
    rw_lagoon_t *lc = client(sim, sim->token, NULL, 5000);
    char bulk_id[RW_LAGOON_BULK_ID_MAX], err[256];
    rw_err_t e;
    json_t *stats;

    sim_config(sim, "{\"fault_http500\":1.0}");
    e = rw_lagoon_bulk_deploy(lc, "b", envs, 1, NULL, 0, bulk_id,
                              sizeof(bulk_id), err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_SERVER);
    assert_true(rw_err_is_retriable(e));
    /* a 500 may come after Lagoon queued the bulk */
    assert_int_equal(rw_err_class(e, RW_OP_SEND), RW_ERR_CLASS_IN_DOUBT);
    assert_non_null(strstr(err, "500"));
    e = rw_lagoon_deployments_by_bulk_id(lc, "x", &d, err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_SERVER);
    assert_null(d);

    stats = sim_admin(sim, "/sim/stats", NULL);
    assert_int_equal(
        stat_int(json_object_get(stats, "faults_injected"), "http500"), 2);
    json_decref(stats);

    /* Once the fault clears, the same handle works again. */
    sim_config(sim, "{\"fault_http500\":0}");
    e = rw_lagoon_bulk_deploy(lc, "b", envs, 1, NULL, 0, bulk_id,
                              sizeof(bulk_id), err, sizeof(err));
    if (e != RW_OK)
        fail_msg("after clearing the fault: %s: %s", rw_err_name(e), err);
    assert_true(strlen(bulk_id) > 0);
    rw_lagoon_destroy(lc);
}

static void test_graphql_error_fault(void **state)
{
    sim_t *sim = *state;
    rw_lagoon_env_t envs[] = {{"pgql", "main"}};
    rw_lagoon_deployments_t *d = NULL;
    rw_lagoon_t *lc = client(sim, sim->token, NULL, 5000);
    char bulk_id[RW_LAGOON_BULK_ID_MAX], err[256];
    rw_err_t e;

    sim_config(sim, "{\"fault_graphql_error\":1.0}");
    e = rw_lagoon_bulk_deploy(lc, "b", envs, 1, NULL, 0, bulk_id,
                              sizeof(bulk_id), err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_GRAPHQL);
    assert_false(rw_err_is_retriable(e));
    /* Lagoon refused it: nothing ran, nothing to reconcile */
    assert_int_equal(rw_err_class(e, RW_OP_SEND), RW_ERR_CLASS_PERMANENT);
    assert_false(rw_lagoon_in_doubt(lc));
    assert_true(strlen(err) > 0);
    e = rw_lagoon_deployments_by_bulk_id(lc, "x", &d, err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_GRAPHQL);
    assert_null(d);
    rw_lagoon_destroy(lc);
}

/*
 * The server reads the request and closes the connection unanswered: the
 * bulk may have been accepted, so a bulk deploy is in doubt. A request
 * that could not even connect is safe to send again.
 */
static void test_dropped_connection_is_network_error(void **state)
{
    sim_t *sim = *state;
    rw_lagoon_env_t envs[] = {{"pdrop", "main"}};
    rw_lagoon_deployments_t *d = NULL;
    rw_lagoon_t *lc = client(sim, sim->token, NULL, 5000);
    rw_lagoon_opts_t refused_opts = {.url = "http://127.0.0.1:1/graphql",
                                     .token = sim->token,
                                     .timeout_ms = 5000,
                                     .connect_timeout_ms = 2000};
    rw_lagoon_t *refused = NULL;
    char bulk_id[RW_LAGOON_BULK_ID_MAX], err[256];
    rw_err_t e;
    json_t *stats;

    sim_config(sim, "{\"fault_drop\":1.0}");
    e = rw_lagoon_deployments_by_bulk_id(lc, "x", &d, err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_NETWORK);
    assert_true(rw_err_is_retriable(e));
    assert_null(d);

    e = rw_lagoon_bulk_deploy(lc, "b", envs, 1, NULL, 0, bulk_id,
                              sizeof(bulk_id), err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_NETWORK);
    assert_int_equal(rw_err_class(e, RW_OP_SEND), RW_ERR_CLASS_IN_DOUBT);
    assert_true(rw_lagoon_in_doubt(lc));
    /* the request did reach the server */
    stats = sim_admin(sim, "/sim/stats", NULL);
    assert_true(stat_int(json_object_get(stats, "faults_injected"), "drop") >=
                2);
    json_decref(stats);

    /* Nothing listens on port 1: refused before anything was sent. */
    if (rw_lagoon_new(&refused, &refused_opts, err, sizeof(err)) != RW_OK)
        fail_msg("client: %s", err);
    e = rw_lagoon_bulk_deploy(refused, "b", envs, 1, NULL, 0, bulk_id,
                              sizeof(bulk_id), err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_CONNECT);
    assert_int_equal(rw_err_class(e, RW_OP_SEND), RW_ERR_CLASS_RETRY);
    assert_false(rw_lagoon_in_doubt(refused));
    rw_lagoon_destroy(refused);
    rw_lagoon_destroy(lc);
}

static void test_slow_response_is_timeout(void **state)
{
    sim_t *sim = *state;
    rw_lagoon_deployments_t *d = NULL;
    rw_lagoon_t *lc = client(sim, sim->token, NULL, 500);
    long long started;
    char err[256];
    rw_err_t e;

    sim_config(sim, "{\"fault_slow\":1.0,\"slow_ms\":3000}");
    started = rw_itest_now_ms();
    e = rw_lagoon_deployments_by_bulk_id(lc, "x", &d, err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_TIMEOUT);
    assert_true(rw_err_is_retriable(e));
    assert_true(rw_itest_now_ms() - started < 2500);
    assert_null(d);
    rw_lagoon_destroy(lc);
}

static void test_token_file_reread_after_401(void **state)
{
    sim_t *sim = *state;
    rw_lagoon_env_t envs[] = {{"prot", "main"}};
    rw_lagoon_t *lc;
    char bulk_id[RW_LAGOON_BULK_ID_MAX], err[256];
    rw_err_t e;

    write_file(sim->token_file, "stale-token-before-rotation\n");
    lc = client(sim, NULL, sim->token_file, 5000);

    e = rw_lagoon_bulk_deploy(lc, "b", envs, 1, NULL, 0, bulk_id,
                              sizeof(bulk_id), err, sizeof(err));
    assert_int_equal(e, RW_ERR_LAGOON_AUTH);
    assert_null(strstr(err, "stale-token-before-rotation"));

    /* Rotation: the file now holds the right token (with the newline and
     * spaces editors leave behind); the next call recovers by itself. */
    {
        char text[128];

        snprintf(text, sizeof(text), "  %s \n", sim->token);
        write_file(sim->token_file, text);
    }
    e = rw_lagoon_bulk_deploy(lc, "b", envs, 1, NULL, 0, bulk_id,
                              sizeof(bulk_id), err, sizeof(err));
    if (e != RW_OK)
        fail_msg("after token rotation: %s: %s", rw_err_name(e), err);
    assert_true(strlen(bulk_id) > 0);

    /* And it keeps working without further re-reads. */
    e = rw_lagoon_bulk_deploy(lc, "b", envs, 1, NULL, 0, bulk_id,
                              sizeof(bulk_id), err, sizeof(err));
    assert_int_equal(e, RW_OK);
    rw_lagoon_destroy(lc);
}

static rw_err_t find(rw_lagoon_t *lc, const char *name,
                     const rw_lagoon_env_t *envs, size_t n, char *id,
                     bool *found, char *err)
{
    return rw_lagoon_find_bulk(lc, name, envs, n, id, RW_LAGOON_BULK_ID_MAX,
                               found, err, 256);
}

static void test_find_bulk_after_trigger(void **state)
{
    sim_t *sim = *state;
    char p1[64], p2[96], bulk_id[RW_LAGOON_BULK_ID_MAX];
    char id[RW_LAGOON_BULK_ID_MAX], err[256];
    const char *name = "rollwave 0b7e2c8a-5d41-4c1e-9f3a-2a1b3c4d5e6f c2 a1";
    rw_lagoon_env_t envs[3];
    rw_lagoon_t *lc = client(sim, sim->token, NULL, 5000);
    long long t0, found_at = 0, before;
    bool found = true;
    json_t *stats;

    rw_itest_unique(p1, sizeof(p1), "fb");
    rw_itest_unique(p2, sizeof(p2), "fb \") { x } $p0 #");
    envs[0] = (rw_lagoon_env_t){p1, "main"};
    envs[1] = (rw_lagoon_env_t){p1, "develop"};
    envs[2] = (rw_lagoon_env_t){p2, "feature/x"};

    t0 = rw_itest_now_ms();
    if (rw_lagoon_bulk_deploy(lc, name, envs, 3, NULL, 0, bulk_id,
                              sizeof(bulk_id), err, sizeof(err)) != RW_OK)
        fail_msg("bulk deploy: %s", err);

    /* Accepted, but no row yet: "not found" only means "not visible". */
    assert_int_equal(find(lc, name, envs, 3, id, &found, err), RW_OK);
    if (rw_itest_now_ms() - t0 >= SIM_ROWS_DELAY_MS)
        fail_msg("trigger and find took over %d ms: cannot observe the "
                 "rows delay",
                 SIM_ROWS_DELAY_MS);
    assert_false(found);
    assert_string_equal(id, "");

    while (rw_itest_now_ms() - t0 < 10000) {
        if (find(lc, name, envs, 3, id, &found, err) != RW_OK)
            fail_msg("find bulk: %s", err);
        if (found) {
            found_at = rw_itest_now_ms();
            break;
        }
        rw_itest_sleep_ms(20);
    }
    if (!found_at)
        fail_msg("bulk %s not found by name within 10 s", bulk_id);
    assert_true(found_at - t0 >= SIM_ROWS_DELAY_MS - 5);
    assert_string_equal(id, bulk_id);

    /* One request for both projects. */
    stats = sim_admin(sim, "/sim/stats", NULL);
    before = stat_int(stats, "graphql_requests");
    json_decref(stats);
    assert_int_equal(find(lc, name, envs, 3, id, &found, err), RW_OK);
    assert_true(found);
    stats = sim_admin(sim, "/sim/stats", NULL);
    assert_int_equal(stat_int(stats, "graphql_requests"), before + 1);
    assert_int_equal(stat_int(stats, "bulk_calls"), 1);
    json_decref(stats);

    /* Another attempt's name is not ours. */
    found = true;
    assert_int_equal(find(lc,
                          "rollwave 0b7e2c8a-5d41-4c1e-9f3a-2a1b3c4d5e6f c2 a2",
                          envs, 3, id, &found, err),
                     RW_OK);
    assert_false(found);
    assert_string_equal(id, "");

    /* Only the chunk's environments count. */
    {
        rw_lagoon_env_t other[] = {{p1, "not-in-the-bulk"}};

        found = true;
        assert_int_equal(find(lc, name, other, 1, id, &found, err), RW_OK);
        assert_false(found);
    }

    /* An unknown project is no match and no error, also beside a known
     * one. */
    {
        char unknown[64];
        rw_lagoon_env_t none[1], mixed[2];

        rw_itest_unique(unknown, sizeof(unknown), "fb-never-deployed");
        none[0] = (rw_lagoon_env_t){unknown, "main"};
        mixed[0] = none[0];
        mixed[1] = envs[2];
        found = true;
        if (find(lc, name, none, 1, id, &found, err) != RW_OK)
            fail_msg("find in unknown project: %s", err);
        assert_false(found);
        assert_int_equal(find(lc, name, mixed, 2, id, &found, err), RW_OK);
        assert_true(found);
        assert_string_equal(id, bulk_id);
    }
    rw_lagoon_destroy(lc);
}

/* More projects than one request may alias: several requests, one answer;
 * and a name on two bulks is a conflict, never a guess. */
static void test_find_bulk_many_projects_and_conflict(void **state)
{
    enum { N = RW_LAGOON_FIND_BULK_MAX_PROJECTS + 10 };
    sim_t *sim = *state;
    char names[N][64], bulk_id[RW_LAGOON_BULK_ID_MAX], second[64];
    char id[RW_LAGOON_BULK_ID_MAX], err[256];
    const char *name = "rollwave 6a0f1e2d-3c4b-4a59-8877-665544332211 c0 a1";
    rw_lagoon_env_t envs[N];
    rw_lagoon_t *lc = client(sim, sim->token, NULL, 5000);
    bool found = false;
    long long before;
    json_t *stats;
    rw_err_t e;

    sim_config(sim, "{\"rows_delay_ms\":0}");
    for (size_t i = 0; i < N; i++) {
        rw_itest_unique(names[i], sizeof(names[i]), "fbm");
        envs[i] = (rw_lagoon_env_t){names[i], "main"};
    }
    if (rw_lagoon_bulk_deploy(lc, name, envs, N, NULL, 0, bulk_id,
                              sizeof(bulk_id), err, sizeof(err)) != RW_OK)
        fail_msg("bulk deploy: %s", err);

    stats = sim_admin(sim, "/sim/stats", NULL);
    before = stat_int(stats, "graphql_requests");
    json_decref(stats);
    if (find(lc, name, envs, N, id, &found, err) != RW_OK)
        fail_msg("find bulk: %s", err);
    assert_true(found);
    assert_string_equal(id, bulk_id);
    stats = sim_admin(sim, "/sim/stats", NULL);
    assert_int_equal(stat_int(stats, "graphql_requests"), before + 2);
    json_decref(stats);

    /* The same name again, on the last project only (the second request):
     * two bulks answer to it. */
    if (rw_lagoon_bulk_deploy(lc, name, &envs[N - 1], 1, NULL, 0, second,
                              sizeof(second), err, sizeof(err)) != RW_OK)
        fail_msg("second bulk deploy: %s", err);
    e = find(lc, name, envs, N, id, &found, err);
    assert_int_equal(e, RW_ERR_CONFLICT);
    assert_false(rw_err_is_retriable(e));
    assert_false(found);
    assert_string_equal(id, "");
    assert_non_null(strstr(err, bulk_id));
    assert_non_null(strstr(err, second));
    rw_lagoon_destroy(lc);
}

static void test_find_bulk_errors(void **state)
{
    sim_t *sim = *state;
    const char *bad = "not-the-token-77c1";
    rw_lagoon_env_t envs[] = {{"fbe", "main"}};
    rw_lagoon_t *lc = client(sim, sim->token, NULL, 5000);
    rw_lagoon_t *wrong = client(sim, bad, NULL, 5000);
    char id[RW_LAGOON_BULK_ID_MAX], err[256];
    bool found = true;
    rw_err_t e;

    e = find(wrong, "b", envs, 1, id, &found, err);
    assert_int_equal(e, RW_ERR_LAGOON_AUTH);
    assert_false(found);
    assert_null(strstr(err, bad));

    sim_config(sim, "{\"fault_graphql_error\":1.0}");
    found = true;
    e = find(lc, "b", envs, 1, id, &found, err);
    assert_int_equal(e, RW_ERR_LAGOON_GRAPHQL);
    assert_false(found);

    sim_config(sim, "{\"fault_graphql_error\":0,\"fault_http500\":1.0}");
    e = find(lc, "b", envs, 1, id, &found, err);
    assert_int_equal(e, RW_ERR_LAGOON_SERVER);
    assert_true(rw_err_is_retriable(e));

    sim_config(sim, "{\"fault_http500\":0,\"fault_drop\":1.0}");
    e = find(lc, "b", envs, 1, id, &found, err);
    assert_int_equal(e, RW_ERR_LAGOON_NETWORK);
    assert_true(rw_err_is_retriable(e));
    assert_false(found);
    rw_lagoon_destroy(wrong);
    rw_lagoon_destroy(lc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bulk_rows_appear_and_finish,
                                        start_sim, stop_sim),
        cmocka_unit_test_setup_teardown(test_bad_token_is_auth_error, start_sim,
                                        stop_sim),
        cmocka_unit_test_setup_teardown(test_http500_is_retriable_server_error,
                                        start_sim, stop_sim),
        cmocka_unit_test_setup_teardown(test_graphql_error_fault, start_sim,
                                        stop_sim),
        cmocka_unit_test_setup_teardown(
            test_dropped_connection_is_network_error, start_sim, stop_sim),
        cmocka_unit_test_setup_teardown(test_slow_response_is_timeout,
                                        start_sim, stop_sim),
        cmocka_unit_test_setup_teardown(test_token_file_reread_after_401,
                                        start_sim, stop_sim),
        cmocka_unit_test_setup_teardown(test_find_bulk_after_trigger, start_sim,
                                        stop_sim),
        cmocka_unit_test_setup_teardown(
            test_find_bulk_many_projects_and_conflict, start_sim, stop_sim),
        cmocka_unit_test_setup_teardown(test_find_bulk_errors, start_sim,
                                        stop_sim),
    };
    int failed;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
