/*
 * test_lagoon_sim: starts rollwave-lagoon-sim as a child process on a free
 * port (--port-file) and checks its Lagoon behaviour over real HTTP with
 * libcurl: bearer auth, the GraphQL operations (bulk mutation,
 * deploymentsByBulkId, aliased projectByName with environments and their
 * newest deployments), delayed rows, status
 * progression, counters, GraphQL errors, fault injection, rejected
 * environments, the concurrency cap (raised and lowered at run time), one
 * build per environment and superseded deployments, the overload delay,
 * the capacity stats and trigger timeline, the environments' routes and
 * their health answers, keep-alive under concurrent clients and the
 * command line. Needs only RW_BIN_DIR (set by ctest).
 */
#include "rw_itest.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#define TOKEN         "test-token-5f2c"
#define ROWS_DELAY_MS 600

#define MUTATION                                                               \
    "mutation ($input: BulkDeploymentLatestInput!) { "                         \
    "bulkDeployEnvironmentLatest(input: $input) }"
#define QUERY                                                                  \
    "query ($bulkId: String!) { deploymentsByBulkId(bulkId: $bulkId) { id "    \
    "name status created started completed environment { name project { "      \
    "name } } } }"

static pid_t sim_pid = -1;
static char base_url[64];
static char work_dir[256];

/* ---- process helpers ---------------------------------------------------- */

/*
 * Runs the sim binary with args (NULL-terminated) to completion; returns
 * its exit status and what it wrote to stdout and stderr (caller frees).
 */
static int run_sim_cli(const char *const *args, char **out, char **err)
{
    char bin[512], out_path[300], err_path[300];
    char *argv[16];
    int n = 0, status = 0;
    pid_t pid;

    rw_itest_bin(bin, sizeof(bin), "rollwave-lagoon-sim");
    snprintf(out_path, sizeof(out_path), "%s/cli.out", work_dir);
    snprintf(err_path, sizeof(err_path), "%s/cli.err", work_dir);
    argv[n++] = bin;
    for (; args[n - 1] && n < 15; n++)
        argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        /* The sim must not see a token from the caller's environment. */
        unsetenv("ROLLWAVE_SIM_TOKEN");
        dup2(fo, 1);
        dup2(fe, 2);
        execv(bin, argv);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(i ? err_path : out_path, "r");
        char *buf = calloc(1, 65536);
        assert_non_null(f);
        assert_non_null(buf);
        size_t got = fread(buf, 1, 65535, f);
        buf[got] = '\0';
        fclose(f);
        *(i ? err : out) = buf;
    }
    return WEXITSTATUS(status);
}

static int start_sim(void **state)
{
    char bin[512], port_file[300], log_file[300];
    long long deadline;
    int port = 0;

    (void)state;
    snprintf(work_dir, sizeof(work_dir), "%s/rw_lagoon_sim_XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(work_dir))
        fail_msg("mkdtemp: %s", strerror(errno));
    rw_itest_bin(bin, sizeof(bin), "rollwave-lagoon-sim");
    snprintf(port_file, sizeof(port_file), "%s/port", work_dir);
    snprintf(log_file, sizeof(log_file), "%s/sim.log", work_dir);
    sim_pid = fork();
    if (sim_pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (sim_pid == 0) {
        int fd = open(log_file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0)
            dup2(fd, 2);
        execl(bin, bin, "--token", TOKEN, "--port", "0", "--port-file",
              port_file, "--rows-delay-ms", "600", "--phase-ms", "100",
              "--build-min-ms", "300", "--build-max-ms", "600", "--log-level",
              "warn", (char *)NULL);
        _exit(127);
    }
    deadline = rw_itest_now_ms() + 15000;
    while (rw_itest_now_ms() < deadline) {
        FILE *f = fopen(port_file, "r");
        int status;
        if (f) {
            if (fscanf(f, "%d", &port) != 1)
                port = 0;
            fclose(f);
            if (port > 0)
                break;
        }
        if (waitpid(sim_pid, &status, WNOHANG) == sim_pid) {
            sim_pid = -1;
            fail_msg("rollwave-lagoon-sim (%s) exited at start; see %s", bin,
                     log_file);
        }
        rw_itest_sleep_ms(20);
    }
    if (port <= 0)
        fail_msg("rollwave-lagoon-sim wrote no port file within 15 s");
    snprintf(base_url, sizeof(base_url), "http://127.0.0.1:%d", port);
    return 0;
}

static int stop_sim(void **state)
{
    char path[300];
    int status;
    long long deadline;

    (void)state;
    if (sim_pid > 0) {
        kill(sim_pid, SIGTERM);
        deadline = rw_itest_now_ms() + 10000;
        while (waitpid(sim_pid, &status, WNOHANG) == 0) {
            if (rw_itest_now_ms() > deadline) {
                kill(sim_pid, SIGKILL);
                waitpid(sim_pid, &status, 0);
                break;
            }
            rw_itest_sleep_ms(20);
        }
        sim_pid = -1;
    }
    const char *files[] = {"port", "sim.log", "cli.out", "cli.err"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/%s", work_dir, files[i]);
        unlink(path);
    }
    rmdir(work_dir);
    return 0;
}

/* ---- HTTP helpers ---------------------------------------------------------
 */

typedef struct resp {
    long status;
    CURLcode cc;
    char *body;
    size_t len;
    long connects; /* new connections this request opened */
} resp_t;

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    resp_t *r = ud;
    char *b = realloc(r->body, r->len + size * n + 1);

    if (!b)
        return 0;
    memcpy(b + r->len, p, size * n);
    r->len += size * n;
    b[r->len] = '\0';
    r->body = b;
    return size * n;
}

/* One request on curl (reused when given, for keep-alive); body may be NULL
 * for GET. */
static resp_t http_on(CURL *curl, const char *path, const char *auth,
                      const char *body)
{
    resp_t r = {0};
    char url[256], hdr[256];
    struct curl_slist *hdrs = NULL;
    bool own = curl == NULL;

    if (own)
        curl = curl_easy_init();
    assert_non_null(curl);
    snprintf(url, sizeof(url), "%s%s", base_url, path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 20000L);
    hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    if (auth) {
        snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s", auth);
        hdrs = curl_slist_append(hdrs, hdr);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    } else {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    }
    r.cc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &r.connects);
    curl_slist_free_all(hdrs);
    if (own)
        curl_easy_cleanup(curl);
    return r;
}

static resp_t http(const char *path, const char *auth, const char *body)
{
    return http_on(NULL, path, auth, body);
}

static json_t *parse(const resp_t *r)
{
    json_error_t jerr;
    json_t *j;

    if (r->cc != CURLE_OK)
        fail_msg("request failed: %s", curl_easy_strerror(r->cc));
    j = json_loads(r->body ? r->body : "", 0, &jerr);
    if (!j)
        fail_msg("not JSON (%s): %.300s", jerr.text, r->body ? r->body : "");
    return j;
}

/* POST /graphql with the right token; returns the parsed answer. */
static json_t *gql(const char *query, json_t *vars, long *status)
{
    json_t *req = json_pack("{s:s}", "query", query);
    char *body;
    resp_t r;
    json_t *j;

    if (vars)
        json_object_set_new(req, "variables", vars);
    body = json_dumps(req, JSON_COMPACT);
    r = http("/graphql", TOKEN, body);
    j = parse(&r);
    if (status)
        *status = r.status;
    free(body);
    free(r.body);
    json_decref(req);
    return j;
}

static json_t *envs_of(const char *const *pairs)
{
    json_t *envs = json_array();

    for (size_t i = 0; pairs[i]; i += 2)
        json_array_append_new(
            envs, json_pack("{s:{s:s,s:{s:s}}}", "environment", "name",
                            pairs[i + 1], "project", "name", pairs[i]));
    return envs;
}

/* Triggers a bulk named name of "project", "environment", ..., NULL;
 * returns its id. */
static char *bulk_deploy_named(const char *name, const char *const *pairs)
{
    json_t *vars = json_pack("{s:{s:s,s:o}}", "input", "name", name,
                             "environments", envs_of(pairs));
    long status = 0;
    json_t *j = gql(MUTATION, vars, &status);
    const char *id;
    char *out;

    assert_int_equal(status, 200);
    id = json_string_value(json_object_get(json_object_get(j, "data"),
                                           "bulkDeployEnvironmentLatest"));
    if (!id)
        fail_msg("no bulk id in %s", json_dumps(j, JSON_COMPACT));
    out = strdup(id);
    json_decref(j);
    return out;
}

static char *bulk_deploy(const char *const *pairs)
{
    return bulk_deploy_named("rollwave test c0 a1", pairs);
}

/* deploymentsByBulkId rows (a new reference). */
static json_t *rows_of(const char *bulk_id)
{
    long status = 0;
    json_t *j = gql(QUERY, json_pack("{s:s}", "bulkId", bulk_id), &status);
    json_t *rows;

    assert_int_equal(status, 200);
    assert_null(json_object_get(j, "errors"));
    rows = json_object_get(json_object_get(j, "data"), "deploymentsByBulkId");
    assert_true(json_is_array(rows));
    json_incref(rows);
    json_decref(j);
    return rows;
}

static json_t *stats_at(const char *path)
{
    resp_t r = http(path, NULL, NULL);
    json_t *j;

    assert_int_equal(r.status, 200);
    j = parse(&r);
    free(r.body);
    return j;
}

static json_t *stats(void)
{
    return stats_at("/sim/stats");
}

static long long stat_int(json_t *s, const char *key)
{
    json_t *v = json_object_get(s, key);

    if (!json_is_integer(v))
        fail_msg("stats have no integer %s", key);
    return json_integer_value(v);
}

static void set_config(const char *json)
{
    resp_t r = http("/sim/config", NULL, json);

    if (r.status != 200)
        fail_msg("POST /sim/config %s -> %ld %s", json, r.status,
                 r.body ? r.body : "");
    free(r.body);
}

/* Every test starts from an empty sim with the start-up timings. */
static int fresh(void **state)
{
    resp_t r;

    (void)state;
    set_config("{\"rows_delay_ms\":600,\"phase_ms\":100,\"build_min_ms\":300,"
               "\"build_max_ms\":600,\"fail_rate\":0,\"cancel_rate\":0,"
               "\"max_concurrent_builds\":0,\"reject\":[],"
               "\"fault_http500\":0,\"fault_graphql_error\":0,"
               "\"fault_slow\":0,\"fault_drop\":0,\"slow_ms\":30000,"
               "\"fault_http500_executed\":0,\"fault_garbled_executed\":0,"
               "\"overload_knee\":0,\"overload_ms_per_build\":10,"
               "\"overload_max_ms\":30000,\"health_fail\":[],"
               "\"health_fail_percent\":0,\"log_bytes\":0,"
               "\"log_error_percent\":0}");
    r = http("/sim/reset", NULL, "");
    assert_int_equal(r.status, 200);
    free(r.body);
    return 0;
}

static const char *first_error(json_t *j)
{
    json_t *errors = json_object_get(j, "errors");

    if (!json_is_array(errors) || json_array_size(errors) == 0)
        fail_msg("expected GraphQL errors in %s", json_dumps(j, JSON_COMPACT));
    assert_true(json_is_null(json_object_get(j, "data")));
    return json_string_value(
        json_object_get(json_array_get(errors, 0), "message"));
}

static bool is_date(const char *s)
{
    static const char fmt[] = "dddd-dd-dd dd:dd:dd";

    if (!s || strlen(s) != sizeof(fmt) - 1)
        return false;
    for (size_t i = 0; fmt[i]; i++)
        if (fmt[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != fmt[i])
            return false;
    return true;
}

static bool is_build_name(const char *s)
{
    if (!s || strlen(s) != 19 || strncmp(s, "lagoon-build-", 13) != 0)
        return false;
    for (int i = 13; i < 19; i++)
        if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int status_rank(const char *s)
{
    static const char *const order[] = {"new",      "pending",  "queued",
                                        "running",  "complete", "failed",
                                        "cancelled"};
    for (int i = 0; i < 7; i++)
        if (strcmp(s, order[i]) == 0)
            return i > 4 ? 4 : i;
    fail_msg("unknown status '%s'", s);
    return -1;
}

static const char *row_status(json_t *row)
{
    return json_string_value(json_object_get(row, "status"));
}

static const char *row_env(json_t *row)
{
    return json_string_value(
        json_object_get(json_object_get(row, "environment"), "name"));
}

/* Polls until every row of the bulk is terminal (or fails the test). */
static json_t *wait_terminal(const char *bulk_id, size_t want_rows)
{
    long long deadline = rw_itest_now_ms() + 20000;

    while (rw_itest_now_ms() < deadline) {
        json_t *rows = rows_of(bulk_id);
        size_t i, done = 0;
        json_t *row;
        json_array_foreach(rows, i, row)
        {
            if (status_rank(row_status(row)) == 4)
                done++;
        }
        if (json_array_size(rows) == want_rows && done == want_rows)
            return rows;
        json_decref(rows);
        rw_itest_sleep_ms(50);
    }
    fail_msg("bulk %s did not reach terminal states within 20 s", bulk_id);
    return NULL;
}

/* ---- tests -------------------------------------------------------------- */

static void test_command_line(void **state)
{
    static const char *const flags[] = {"--host",
                                        "--port",
                                        "--port-file",
                                        "--token",
                                        "--log-level",
                                        "--seed",
                                        "--rows-delay-ms",
                                        "--build-min-ms",
                                        "--build-max-ms",
                                        "--phase-ms",
                                        "--fail-rate",
                                        "--cancel-rate",
                                        "--max-concurrent-builds",
                                        "--reject",
                                        "--fault-http500",
                                        "--fault-graphql-error",
                                        "--fault-slow",
                                        "--slow-ms",
                                        "--fault-drop",
                                        "--fault-http500-executed",
                                        "--fault-garbled-executed",
                                        "--overload-knee",
                                        "--overload-ms-per-build",
                                        "--overload-max-ms",
                                        "ROLLWAVE_SIM_ROWS_DELAY_MS",
                                        NULL};
    const char *help[] = {"--help", NULL};
    const char *bogus[] = {"--token", "t", "--bogus", "1", NULL};
    const char *bad_rate[] = {"--token", "t", "--fail-rate", "2", NULL};
    const char *no_token[] = {"--port", "0", NULL};
    const char *no_value[] = {"--token", "t", "--phase-ms", NULL};
    char *out, *err;

    (void)state;
    assert_int_equal(run_sim_cli(help, &out, &err), 0);
    for (size_t i = 0; flags[i]; i++)
        if (!strstr(out, flags[i]))
            fail_msg("--help does not list %s", flags[i]);
    free(out);
    free(err);

    assert_int_equal(run_sim_cli(bogus, &out, &err), 2);
    assert_non_null(strstr(err, "--bogus"));
    free(out);
    free(err);
    assert_int_equal(run_sim_cli(bad_rate, &out, &err), 2);
    assert_non_null(strstr(err, "--fail-rate"));
    free(out);
    free(err);
    assert_int_equal(run_sim_cli(no_token, &out, &err), 2);
    assert_non_null(strstr(err, "--token"));
    free(out);
    free(err);
    assert_int_equal(run_sim_cli(no_value, &out, &err), 2);
    assert_non_null(strstr(err, "--phase-ms"));
    free(out);
    free(err);

    /* Settings also come from ROLLWAVE_SIM_* variables (read before the
     * flags, so the variable is what gets reported here). */
    setenv("ROLLWAVE_SIM_CANCEL_RATE", "-1", 1);
    assert_int_equal(run_sim_cli(no_value, &out, &err), 2);
    unsetenv("ROLLWAVE_SIM_CANCEL_RATE");
    assert_non_null(strstr(err, "ROLLWAVE_SIM_CANCEL_RATE"));
    free(out);
    free(err);
}

static void test_auth(void **state)
{
    const char *body = "{\"query\":\"{ __typename }\"}";
    resp_t r;
    json_t *j;
    const char *msg;

    (void)state;
    for (int i = 0; i < 2; i++) {
        r = http("/graphql", i ? "wrong-token" : NULL, body);
        assert_int_equal(r.status, 401);
        j = parse(&r);
        msg = json_string_value(json_object_get(
            json_array_get(json_object_get(j, "errors"), 0), "message"));
        assert_non_null(msg);
        assert_non_null(strstr(msg, "Unauthorized - Bearer token"));
        json_decref(j);
        free(r.body);
    }
    r = http("/graphql", TOKEN, body);
    assert_int_equal(r.status, 200);
    j = parse(&r);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(j, "data"), "__typename")),
                        "Query");
    json_decref(j);
    free(r.body);
}

static void test_bulk_lifecycle(void **state)
{
    const char *const pairs[] = {"lc-proj",  "main", "lc-proj", "develop",
                                 "lc-other", "main", NULL};
    int rank[3] = {0, 0, 0};
    long long t0, first_seen = 0;
    char *bulk;
    json_t *rows, *row;
    size_t i;
    long long last_id = 0;

    (void)state;
    t0 = rw_itest_now_ms();
    bulk = bulk_deploy(pairs);
    /* uuid v4: 8-4-4-4-12 hex, version nibble 4, variant 8..b. */
    assert_int_equal(strlen(bulk), 36);
    assert_int_equal(bulk[14], '4');
    assert_non_null(strchr("89ab", bulk[19]));
    for (i = 0; i < 36; i++)
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(bulk[i], '-');
        else
            assert_true(isxdigit((unsigned char)bulk[i]));

    /* Rows appear only after rows-delay; statuses never go backwards. */
    while (rw_itest_now_ms() - t0 < 20000) {
        rows = rows_of(bulk);
        if (json_array_size(rows) > 0 && !first_seen) {
            first_seen = rw_itest_now_ms();
            assert_int_equal(json_array_size(rows), 3);
        }
        bool all_done = json_array_size(rows) == 3;
        json_array_foreach(rows, i, row)
        {
            int r = status_rank(row_status(row));
            assert_true(r >= rank[i]);
            rank[i] = r;
            if (r != 4)
                all_done = false;
        }
        json_decref(rows);
        if (all_done)
            break;
        rw_itest_sleep_ms(30);
    }
    assert_true(first_seen > 0);
    if (first_seen - t0 < ROWS_DELAY_MS - 5)
        fail_msg("rows appeared after %lld ms, before the %d ms delay",
                 first_seen - t0, ROWS_DELAY_MS);

    rows = wait_terminal(bulk, 3);
    json_array_foreach(rows, i, row)
    {
        long long id = json_integer_value(json_object_get(row, "id"));
        json_t *env = json_object_get(row, "environment");
        const char *project = json_string_value(
            json_object_get(json_object_get(env, "project"), "name"));

        assert_true(id > last_id);
        last_id = id;
        assert_true(
            is_build_name(json_string_value(json_object_get(row, "name"))));
        assert_string_equal(row_status(row), "complete");
        assert_true(
            is_date(json_string_value(json_object_get(row, "created"))));
        assert_true(
            is_date(json_string_value(json_object_get(row, "started"))));
        assert_true(
            is_date(json_string_value(json_object_get(row, "completed"))));
        assert_true(
            strcmp(json_string_value(json_object_get(row, "started")),
                   json_string_value(json_object_get(row, "completed"))) <= 0);
        assert_string_equal(row_env(row), pairs[2 * i + 1]);
        assert_string_equal(project, pairs[2 * i]);
    }
    json_decref(rows);
    free(bulk);
}

static void test_unknown_bulk_and_reset(void **state)
{
    const char *const pairs[] = {"rs-proj", "main", NULL};
    json_t *rows, *s;
    char *bulk;

    (void)state;
    rows = rows_of("5b0e4b52-0000-4000-8000-000000000000");
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);

    set_config("{\"rows_delay_ms\":0,\"phase_ms\":0,\"build_min_ms\":0,"
               "\"build_max_ms\":0}");
    bulk = bulk_deploy(pairs);
    rows = rows_of(bulk);
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);

    free(http("/sim/reset", NULL, "").body);
    rows = rows_of(bulk);
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);
    s = stats();
    assert_int_equal(stat_int(s, "bulk_calls"), 0);
    assert_int_equal(stat_int(s, "environments_triggered"), 0);
    assert_int_equal(json_object_size(json_object_get(s, "triggers")), 0);
    json_decref(s);
    free(bulk);
}

static void test_stats_counters(void **state)
{
    const char *const two[] = {"st-proj", "a", "st-proj", "b", NULL};
    const char *const one[] = {"st-proj", "a", NULL};
    json_t *s, *triggers, *per_call;
    long long before;

    (void)state;
    s = stats();
    before = stat_int(s, "graphql_requests");
    json_decref(s);

    free(bulk_deploy(two));
    free(bulk_deploy(one));
    s = stats();
    assert_int_equal(stat_int(s, "bulk_calls"), 2);
    assert_int_equal(stat_int(s, "deploy_requests"), 2);
    assert_int_equal(stat_int(s, "environments_triggered"), 3);
    assert_int_equal(stat_int(s, "max_envs_per_call"), 2);
    assert_int_equal(stat_int(s, "duplicate_triggers"), 1);
    assert_int_equal(stat_int(s, "graphql_requests"), before + 2);
    per_call = json_object_get(s, "envs_per_call");
    assert_int_equal(json_integer_value(json_object_get(per_call, "1")), 1);
    assert_int_equal(json_integer_value(json_object_get(per_call, "2")), 1);
    triggers = json_object_get(s, "triggers");
    assert_int_equal(json_object_size(triggers), 2);
    assert_int_equal(json_integer_value(json_object_get(triggers, "st-proj/a")),
                     2);
    assert_int_equal(json_integer_value(json_object_get(triggers, "st-proj/b")),
                     1);
    assert_true(json_is_object(json_object_get(s, "faults_injected")));
    json_decref(s);

    /* ?triggers=false leaves the per-environment map out. */
    resp_t r = http("/sim/stats?triggers=false", NULL, NULL);
    s = parse(&r);
    assert_null(json_object_get(s, "triggers"));
    assert_int_equal(stat_int(s, "bulk_calls"), 2);
    json_decref(s);
    free(r.body);
}

static void expect_gql_error(const char *query, json_t *vars, const char *want)
{
    long status = 0;
    json_t *j = gql(query, vars, &status);
    const char *msg;

    assert_int_equal(status, 200);
    msg = first_error(j);
    if (!msg || !strstr(msg, want))
        fail_msg("expected error containing '%s', got '%s'", want,
                 msg ? msg : "(none)");
    json_decref(j);
}

static void test_graphql_errors(void **state)
{
    const char *const pairs[] = {"er-proj", "main", NULL};
    json_t *s;

    (void)state;
    expect_gql_error("{ deployEnvironmentLatest }", NULL,
                     "Cannot query field \"deployEnvironmentLatest\" on type "
                     "\"Query\".");
    expect_gql_error(
        "query ($input: BulkDeploymentLatestInput!) { "
        "bulkDeployEnvironmentLatest(input: $input) }",
        json_pack("{s:{s:o}}", "input", "environments", envs_of(pairs)),
        "Cannot query field \"bulkDeployEnvironmentLatest\" on "
        "type \"Query\".");
    expect_gql_error(
        "mutation ($input: BulkDeployLatestInput!) { "
        "bulkDeployEnvironmentLatest(input: $input) }",
        json_pack("{s:{s:o}}", "input", "environments", envs_of(pairs)),
        "Unknown type \"BulkDeployLatestInput\".");
    expect_gql_error("query ($bulkId: ID!) { deploymentsByBulkId(bulkId: "
                     "$bulkId) { id } }",
                     json_pack("{s:s}", "bulkId", "x"),
                     "Variable \"$bulkId\" of type \"ID!\" used in position "
                     "expecting type \"String!\".");
    expect_gql_error(MUTATION, json_pack("{s:{s:s}}", "input", "name", "x"),
                     "Field \"environments\" of required type");
    expect_gql_error(MUTATION, json_pack("{s:{s:[]}}", "input", "environments"),
                     "at least one environment");
    expect_gql_error(MUTATION,
                     json_pack("{s:{s:[{s:{s:i}}]}}", "input", "environments",
                               "environment", "name", 7),
                     "String cannot represent a non string value: 7");
    expect_gql_error(MUTATION, NULL,
                     "Variable \"$input\" of required type "
                     "\"BulkDeploymentLatestInput!\" was not provided.");
    expect_gql_error("query { deploymentsByBulkId(bulkId: \"x\") { id } }",
                     NULL, "must be passed as a variable");
    expect_gql_error("query ($bulkId: String!) { deploymentsByBulkId(bulkId: "
                     "$bulkId) { id uiLink } }",
                     json_pack("{s:s}", "bulkId", "x"),
                     "Cannot query field \"uiLink\" on type \"Deployment\".");
    expect_gql_error("query { deploymentsByBulkId(", NULL, "Syntax Error");
    s = stats();
    assert_int_equal(stat_int(s, "bulk_calls"), 0);
    assert_int_equal(stat_int(s, "environments_triggered"), 0);
    json_decref(s);
}

#define FIND_QUERY                                                             \
    "query ($limit: Int, $p0: String!, $p1: String!, $p2: String!) { "         \
    "a: projectByName(name: $p0) { name environments { name "                  \
    "deployments(limit: $limit) { id name status created bulkId bulkName } } " \
    "} b: projectByName(name: $p1) { name } c: projectByName(name: $p2) { "    \
    "name } }"

/* data of FIND_QUERY for pn-proj, pn-other, pn-unknown (a new reference). */
static json_t *find_query(json_t *limit)
{
    long status = 0;
    json_t *vars = json_pack("{s:o,s:s,s:s,s:s}", "limit", limit, "p0",
                             "pn-proj", "p1", "pn-other", "p2", "pn-unknown");
    json_t *j = gql(FIND_QUERY, vars, &status);
    json_t *data;

    assert_int_equal(status, 200);
    if (json_object_get(j, "errors"))
        fail_msg("errors: %s", json_dumps(j, JSON_COMPACT));
    data = json_object_get(j, "data");
    json_incref(data);
    json_decref(j);
    return data;
}

/* Environment name of a projectByName answer, by position. */
static json_t *env_at(json_t *project, size_t i)
{
    return json_array_get(json_object_get(project, "environments"), i);
}

static const char *dep_str(json_t *env, size_t i, const char *key)
{
    return json_string_value(json_object_get(
        json_array_get(json_object_get(env, "deployments"), i), key));
}

static size_t n_deps(json_t *env)
{
    json_t *d = json_object_get(env, "deployments");

    if (!json_is_array(d))
        fail_msg("deployments is not a list: %s", json_dumps(env, 0));
    return json_array_size(d);
}

static void test_project_by_name(void **state)
{
    const char *const first[] = {"pn-proj",  "main", "pn-proj", "dev",
                                 "pn-other", "main", NULL};
    const char *const second[] = {"pn-proj", "main", NULL};
    char *bulk_a, *bulk_b;
    json_t *data, *a, *main_env, *dev_env, *rows;
    long long t0;

    (void)state;
    /* A delay no loaded machine overshoots between two requests. */
    set_config("{\"rows_delay_ms\":1500}");
    t0 = rw_itest_now_ms();
    bulk_a = bulk_deploy_named("rollwave run-1 c0 a1", first);

    /* Before rows-delay the project and its environments exist, but no
     * deployment does: a bulk cannot be found by its name yet. */
    data = find_query(json_integer(10));
    if (rw_itest_now_ms() - t0 >= 1500)
        fail_msg("mutation and query took over 1500 ms: cannot observe the "
                 "rows delay");
    a = json_object_get(data, "a");
    assert_string_equal(json_string_value(json_object_get(a, "name")),
                        "pn-proj");
    assert_int_equal(json_array_size(json_object_get(a, "environments")), 2);
    assert_int_equal(n_deps(env_at(a, 0)), 0);
    assert_int_equal(n_deps(env_at(a, 1)), 0);
    json_decref(data);

    rows = wait_terminal(bulk_a, 3);
    json_decref(rows);
    bulk_b = bulk_deploy_named("rollwave run-1 c0 a2", second);
    rows = wait_terminal(bulk_b, 1);
    json_decref(rows);

    /* limit 1: the newest deployment of each environment only. */
    data = find_query(json_integer(1));
    a = json_object_get(data, "a");
    main_env = env_at(a, 0);
    dev_env = env_at(a, 1);
    assert_string_equal(json_string_value(json_object_get(main_env, "name")),
                        "main");
    assert_string_equal(json_string_value(json_object_get(dev_env, "name")),
                        "dev");
    assert_int_equal(n_deps(main_env), 1);
    assert_string_equal(dep_str(main_env, 0, "bulkId"), bulk_b);
    assert_string_equal(dep_str(main_env, 0, "bulkName"),
                        "rollwave run-1 c0 a2");
    assert_string_equal(dep_str(main_env, 0, "status"), "complete");
    assert_true(is_date(dep_str(main_env, 0, "created")));
    assert_true(is_build_name(dep_str(main_env, 0, "name")));
    assert_int_equal(n_deps(dev_env), 1);
    assert_string_equal(dep_str(dev_env, 0, "bulkId"), bulk_a);
    assert_string_equal(dep_str(dev_env, 0, "bulkName"),
                        "rollwave run-1 c0 a1");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(data, "b"), "name")),
        "pn-other");
    /* An unknown project is null, present under its alias, no error. */
    assert_non_null(json_object_get(data, "c"));
    assert_true(json_is_null(json_object_get(data, "c")));
    json_decref(data);

    /* No limit: every deployment, newest first. */
    data = find_query(json_null());
    main_env = env_at(json_object_get(data, "a"), 0);
    assert_int_equal(n_deps(main_env), 2);
    assert_string_equal(dep_str(main_env, 0, "bulkId"), bulk_b);
    assert_string_equal(dep_str(main_env, 1, "bulkId"), bulk_a);
    assert_true(json_integer_value(json_object_get(
                    json_array_get(json_object_get(main_env, "deployments"), 0),
                    "id")) >
                json_integer_value(json_object_get(
                    json_array_get(json_object_get(main_env, "deployments"), 1),
                    "id")));
    json_decref(data);

    /* Aliases below the root, deployments(name:), and bulkId, bulkName
     * and priority on deploymentsByBulkId rows. */
    {
        long status = 0;
        const char *build;
        json_t *j, *env, *vars;

        data = find_query(json_integer(5));
        build = dep_str(env_at(json_object_get(data, "a"), 0), 1, "name");
        vars = json_pack("{s:s,s:i,s:s,s:s}", "p", "pn-proj", "one", 1, "dn",
                         build, "b", bulk_a);
        j = gql("query ($p: String!, $one: Int!, $dn: String, $b: String!) "
                "{ proj: projectByName(name: $p) { envs: environments { "
                "n: name latest: deployments(limit: $one) { bid: bulkId } "
                "named: deployments(name: $dn) { bulkName } } } "
                "rows: deploymentsByBulkId(bulkId: $b) { bulkId bulkName "
                "priority environment { name } } }",
                vars, &status);
        assert_int_equal(status, 200);
        assert_null(json_object_get(j, "errors"));
        env = json_array_get(
            json_object_get(json_object_get(json_object_get(j, "data"), "proj"),
                            "envs"),
            0);
        assert_string_equal(json_string_value(json_object_get(env, "n")),
                            "main");
        assert_int_equal(json_array_size(json_object_get(env, "latest")), 1);
        assert_string_equal(
            json_string_value(json_object_get(
                json_array_get(json_object_get(env, "latest"), 0), "bid")),
            bulk_b);
        assert_int_equal(json_array_size(json_object_get(env, "named")), 1);
        assert_string_equal(
            json_string_value(json_object_get(
                json_array_get(json_object_get(env, "named"), 0), "bulkName")),
            "rollwave run-1 c0 a1");
        rows = json_object_get(json_object_get(j, "data"), "rows");
        assert_int_equal(json_array_size(rows), 3);
        for (size_t i = 0; i < 3; i++) {
            json_t *row = json_array_get(rows, i);

            assert_string_equal(
                json_string_value(json_object_get(row, "bulkId")), bulk_a);
            assert_string_equal(
                json_string_value(json_object_get(row, "bulkName")),
                "rollwave run-1 c0 a1");
            assert_true(json_is_null(json_object_get(row, "priority")));
        }
        json_decref(j);
        json_decref(data);
    }
    free(bulk_a);
    free(bulk_b);
}

static void test_project_by_name_errors_reject_reset(void **state)
{
    const char *const pairs[] = {"pr-proj", "ok", "pr-proj", "rej", NULL};
    const char *q = "query ($p: String!) { projectByName(name: $p) { "
                    "environments { name deployments { id } } } }";
    long status = 0;
    json_t *j, *envs;
    char *bulk;

    (void)state;
    expect_gql_error("{ projectByName(name: \"pr-proj\") { name } }", NULL,
                     "must be passed as a variable");
    expect_gql_error("query ($p: String) { projectByName(name: $p) { name } }",
                     json_pack("{s:s}", "p", "x"),
                     "Variable \"$p\" of type \"String\" used in position "
                     "expecting type \"String!\".");
    expect_gql_error("query ($p: String!) { projectByName(name: $p) }",
                     json_pack("{s:s}", "p", "x"),
                     "must have a selection of subfields");
    expect_gql_error("query ($p: String!, $n: Int) { projectByName(name: $p) "
                     "{ environments { deployments(first: $n) { id } } } }",
                     json_pack("{s:s}", "p", "x"),
                     "Unknown argument \"first\" on field "
                     "\"Environment.deployments\".");
    expect_gql_error("query ($p: String!, $n: String) { projectByName(name: "
                     "$p) { environments { deployments(limit: $n) { id } } } }",
                     json_pack("{s:s}", "p", "x"),
                     "Variable \"$n\" of type \"String\" used in position "
                     "expecting type \"Int\".");
    expect_gql_error("query ($p: String!) { projectByName(name: $p) { "
                     "environments { deployments(limit: 3) { id } } } }",
                     json_pack("{s:s}", "p", "x"),
                     "must be passed as a variable");
    expect_gql_error("query ($b: String!) { deploymentsByBulkId(bulkId: $b) "
                     "{ environment { deployments { id } } } }",
                     json_pack("{s:s}", "b", "x"), "only under projectByName");

    /* A rejected environment belongs to its project but never gets a
     * deployment. */
    set_config("{\"reject\":[\"pr-proj/rej\"],\"rows_delay_ms\":0,"
               "\"phase_ms\":0,\"build_min_ms\":0,\"build_max_ms\":0}");
    bulk = bulk_deploy(pairs);
    json_decref(wait_terminal(bulk, 1));
    j = gql(q, json_pack("{s:s}", "p", "pr-proj"), &status);
    assert_int_equal(status, 200);
    envs = json_object_get(
        json_object_get(json_object_get(j, "data"), "projectByName"),
        "environments");
    assert_int_equal(json_array_size(envs), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(envs, 1), "name")),
        "rej");
    assert_int_equal(n_deps(json_array_get(envs, 0)), 1);
    assert_int_equal(n_deps(json_array_get(envs, 1)), 0);
    json_decref(j);

    /* Reset forgets projects too. */
    free(http("/sim/reset", NULL, "").body);
    j = gql(q, json_pack("{s:s}", "p", "pr-proj"), &status);
    assert_int_equal(status, 200);
    assert_null(json_object_get(j, "errors"));
    assert_true(json_is_null(
        json_object_get(json_object_get(j, "data"), "projectByName")));
    json_decref(j);
    free(bulk);
}

static void test_faults(void **state)
{
    const char *body = "{\"query\":\"{ __typename }\"}";
    resp_t r;
    json_t *s, *faults, *j;
    long long t0;

    (void)state;
    set_config("{\"fault_http500\":1}");
    for (int i = 0; i < 3; i++) {
        r = http("/graphql", TOKEN, body);
        assert_int_equal(r.cc, CURLE_OK);
        assert_int_equal(r.status, 500);
        free(r.body);
    }
    set_config("{\"fault_http500\":0,\"fault_graphql_error\":1}");
    r = http("/graphql", TOKEN, body);
    assert_int_equal(r.status, 200);
    j = parse(&r);
    assert_non_null(first_error(j));
    json_decref(j);
    free(r.body);

    set_config("{\"fault_graphql_error\":0,\"fault_drop\":1}");
    r = http("/graphql", TOKEN, body);
    assert_int_equal(r.cc, CURLE_GOT_NOTHING);
    free(r.body);

    set_config("{\"fault_drop\":0,\"fault_slow\":1,\"slow_ms\":400}");
    t0 = rw_itest_now_ms();
    r = http("/graphql", TOKEN, body);
    assert_int_equal(r.status, 200);
    assert_true(rw_itest_now_ms() - t0 >= 400);
    free(r.body);

    set_config("{\"fault_slow\":0}");
    r = http("/graphql", TOKEN, body);
    assert_int_equal(r.status, 200);
    free(r.body);

    s = stats();
    faults = json_object_get(s, "faults_injected");
    assert_int_equal(json_integer_value(json_object_get(faults, "http500")), 3);
    assert_int_equal(
        json_integer_value(json_object_get(faults, "graphql_error")), 1);
    assert_int_equal(json_integer_value(json_object_get(faults, "drop")), 1);
    assert_int_equal(json_integer_value(json_object_get(faults, "slow")), 1);
    assert_int_equal(stat_int(s, "graphql_requests"), 7);
    json_decref(s);

    /* Bad settings are refused whole, with a reason. */
    r = http("/sim/config", NULL, "{\"fault_http500\":1.5}");
    assert_int_equal(r.status, 400);
    free(r.body);
    r = http("/sim/config", NULL, "{\"no_such_setting\":1}");
    assert_int_equal(r.status, 400);
    free(r.body);
    r = http("/sim/config", NULL, "{\"fault_drop\":0.25,\"build_min_ms\":-1}");
    assert_int_equal(r.status, 400);
    free(r.body);
    r = http("/sim/config", NULL, NULL);
    j = parse(&r);
    assert_true(json_is_number(json_object_get(j, "fault_drop")));
    assert_true(json_number_value(json_object_get(j, "fault_drop")) == 0.0);
    assert_null(json_object_get(j, "token"));
    json_decref(j);
    free(r.body);
}

#define BULK_QUERY                                                             \
    "query ($p: String!) { projectByName(name: $p) { environments { name "     \
    "deployments { bulkId bulkName } } } }"

/*
 * The deployments of project's only environment that carry bulk name
 * name, once rows_delay has passed (rows appear after it): how a client
 * reconciling by bulk name would find a bulk whose answer it lost.
 */
static size_t deployments_named(const char *project, const char *name)
{
    long status = 0;
    json_t *j = gql(BULK_QUERY, json_pack("{s:s}", "p", project), &status);
    json_t *envs = json_object_get(
        json_object_get(json_object_get(j, "data"), "projectByName"),
        "environments");
    json_t *deps = json_object_get(json_array_get(envs, 0), "deployments");
    size_t n = 0;

    assert_int_equal(status, 200);
    if (json_array_size(envs) != 1 || !json_is_array(deps))
        fail_msg("%s: want one environment with deployments: %s", project,
                 json_dumps(j, JSON_COMPACT));
    for (size_t i = 0; i < json_array_size(deps); i++) {
        json_t *d = json_array_get(deps, i);
        const char *bn = json_string_value(json_object_get(d, "bulkName"));
        const char *bid = json_string_value(json_object_get(d, "bulkId"));
        if (bn && strcmp(bn, name) == 0 && bid && *bid)
            n++;
    }
    json_decref(j);
    return n;
}

/*
 * A mutation under one of the "executed" faults: the bulk is created but
 * the answer is bad. Returns the answer; the bulk must show up by name.
 */
static resp_t executed_fault(const char *project, const char *name)
{
    const char *const pairs[] = {project, "main", NULL};
    json_t *req =
        json_pack("{s:s,s:{s:{s:s,s:o}}}", "query", MUTATION, "variables",
                  "input", "name", name, "environments", envs_of(pairs));
    char *body = json_dumps(req, JSON_COMPACT);
    long long deadline;
    resp_t r;

    r = http("/graphql", TOKEN, body);
    free(body);
    json_decref(req);
    assert_int_equal(r.cc, CURLE_OK);
    /* the rows appear rows_delay_ms (600) after the mutation */
    deadline = rw_itest_now_ms() + 10000;
    while (deployments_named(project, name) == 0) {
        if (rw_itest_now_ms() > deadline)
            fail_msg("bulk %s of %s never showed up by name", name, project);
        rw_itest_sleep_ms(100);
    }
    assert_int_equal(deployments_named(project, name), 1);
    return r;
}

/*
 * fault_http500_executed and fault_garbled_executed: the bulk deploy is
 * executed (its deployments appear, findable by bulk name) and answered
 * with HTTP 500, or with HTTP 200 and half a JSON document. Queries are
 * never hit by these faults.
 */
static void test_faults_after_execute(void **state)
{
    json_error_t jerr;
    json_t *s, *faults, *j;
    resp_t r;

    (void)state;
    set_config("{\"fault_http500_executed\":1}");
    r = executed_fault("ex-500", "rollwave ex c0 a1");
    assert_int_equal(r.status, 500);
    assert_null(json_loads(r.body ? r.body : "", 0, &jerr));
    free(r.body);
    /* a query under the same setting is answered normally */
    r = http("/graphql", TOKEN, "{\"query\":\"{ __typename }\"}");
    assert_int_equal(r.status, 200);
    j = parse(&r);
    assert_null(json_object_get(j, "errors"));
    json_decref(j);
    free(r.body);

    set_config("{\"fault_http500_executed\":0,"
               "\"fault_garbled_executed\":1}");
    r = executed_fault("ex-garbled", "rollwave ex c1 a1");
    assert_int_equal(r.status, 200);
    assert_true(r.len > 0);
    j = json_loads(r.body ? r.body : "", 0, &jerr);
    if (j)
        fail_msg("the garbled answer parsed as JSON: %s", r.body);
    /* what is left is the head of the real answer */
    assert_true(strncmp(r.body, "{\"data\":", r.len < 8 ? r.len : 8) == 0);
    free(r.body);

    set_config("{\"fault_garbled_executed\":0}");
    s = stats();
    faults = json_object_get(s, "faults_injected");
    assert_int_equal(
        json_integer_value(json_object_get(faults, "http500_executed")), 1);
    assert_int_equal(
        json_integer_value(json_object_get(faults, "garbled_executed")), 1);
    assert_int_equal(json_integer_value(json_object_get(faults, "http500")), 0);
    /* both bulks were created, each environment triggered once */
    assert_int_equal(stat_int(s, "bulk_calls"), 2);
    assert_int_equal(stat_int(s, "environments_triggered"), 2);
    assert_int_equal(stat_int(s, "duplicate_triggers"), 0);
    json_decref(s);
}

static void test_reject(void **state)
{
    const char *const pairs[] = {"rj-proj", "rej-1", "rj-proj", "ok",
                                 "rj-proj", "rej-2", NULL};
    json_t *rows, *s;
    char *bulk;

    (void)state;
    set_config("{\"reject\":[\"rj-proj/rej-*\"],\"rows_delay_ms\":100,"
               "\"phase_ms\":0,\"build_min_ms\":50,\"build_max_ms\":50}");
    bulk = bulk_deploy(pairs);
    rows = wait_terminal(bulk, 1);
    assert_string_equal(row_env(json_array_get(rows, 0)), "ok");
    json_decref(rows);
    /* Well past every delay, the rejected ones still have no row. */
    rw_itest_sleep_ms(300);
    rows = rows_of(bulk);
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    s = stats();
    assert_int_equal(stat_int(s, "environments_triggered"), 3);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(s, "triggers"), "rj-proj/rej-1")),
                     1);
    json_decref(s);
    free(bulk);
}

#define LOG_QUERY                                                              \
    "query ($d0: DeploymentByNameInput!, $d1: DeploymentByNameInput!) { "      \
    "d0: deploymentByName(input: $d0) { name buildLog } "                      \
    "d1: deploymentByName(input: $d1) { name buildLog } }"

/* The buildLog of the deployment name of project/env, or NULL (a new
 * string); d1 asks for a deployment that does not exist. */
static char *build_log_of(const char *project, const char *env,
                          const char *name)
{
    json_t *vars =
        json_pack("{s:{s:s,s:s,s:s},s:{s:s,s:s,s:s}}", "d0", "project", project,
                  "environment", env, "name", name, "d1", "project", project,
                  "environment", env, "name", "lagoon-build-nosuch");
    long status = 0;
    json_t *j = gql(LOG_QUERY, vars, &status), *data, *log;
    char *out;

    assert_int_equal(status, 200);
    data = json_object_get(j, "data");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(data, "d0"), "name")),
        name);
    /* no such deployment: null, as Lagoon answers */
    assert_true(json_is_null(json_object_get(data, "d1")));
    log = json_object_get(json_object_get(data, "d0"), "buildLog");
    out = json_is_string(log) ? strdup(json_string_value(log)) : NULL;
    json_decref(j);
    return out;
}

static void test_build_log(void **state)
{
    const char *const pairs[] = {"lg-proj", "ok", "lg-proj", "bad", NULL};
    const char *mutation = "mutation ($input: BulkDeploymentLatestInput!) { "
                           "bulkDeployEnvironmentLatest(input: $input) }";
    json_t *vars, *j, *rows, *row, *s;
    char *bulk, *log, name_ok[32], name_bad[32];
    size_t i;
    long status = 0;

    (void)state;
    set_config("{\"fail\":[\"lg-proj/bad\"],\"rows_delay_ms\":50,"
               "\"phase_ms\":0,\"build_min_ms\":50,\"build_max_ms\":50,"
               "\"log_secret\":\"sim-test-bearer-5Rk2Wq8Zp\","
               "\"log_bytes\":0,\"log_error_percent\":0}");
    /* a bulk with a build variable: the log prints its value */
    vars = json_pack("{s:{s:s,s:o,s:[{s:s,s:s}]}}", "input", "name",
                     "rollwave log c0 a1", "environments", envs_of(pairs),
                     "buildVariables", "name", "API_SECRET", "value",
                     "var-value-9Hs3Lm1Qx");
    j = gql(mutation, vars, &status);
    assert_int_equal(status, 200);
    bulk = strdup(json_string_value(json_object_get(
        json_object_get(j, "data"), "bulkDeployEnvironmentLatest")));
    json_decref(j);
    rows = wait_terminal(bulk, 2);
    json_array_foreach(rows, i, row)
    {
        const char *n = json_string_value(json_object_get(row, "name"));
        snprintf(strcmp(row_env(row), "ok") == 0 ? name_ok : name_bad, 32, "%s",
                 n);
    }
    json_decref(rows);

    /* the log: its build's name, the planted secrets, how it ended */
    log = build_log_of("lg-proj", "bad", name_bad);
    assert_non_null(log);
    assert_non_null(strstr(log, name_bad));
    assert_non_null(strstr(log, "API_SECRET=var-value-9Hs3Lm1Qx\n"));
    assert_non_null(
        strstr(log, "Authorization: Bearer sim-test-bearer-5Rk2Wq8Zp'"));
    assert_non_null(strstr(log, "-----BEGIN OPENSSH PRIVATE KEY-----\n"));
    assert_non_null(strstr(log, "-----END OPENSSH PRIVATE KEY-----\n"));
    assert_non_null(strstr(log, "\nBuild failed\n"));
    assert_true(strlen(log) < 16384);
    free(log);
    log = build_log_of("lg-proj", "ok", name_ok);
    assert_non_null(strstr(log, "Build and Deploy complete\n"));
    free(log);

    /* --log-bytes pads before the last lines, to at least that size */
    set_config("{\"log_bytes\":3000000}");
    log = build_log_of("lg-proj", "bad", name_bad);
    assert_true(strlen(log) >= 3000000);
    assert_true(strlen(log) < 3000000 + 4096);
    assert_non_null(strstr(log + strlen(log) - 512, "\nBuild failed\n"));
    free(log);

    /* every answer the storage error, then none */
    set_config("{\"log_bytes\":0,\"log_error_percent\":100}");
    for (int k = 0; k < 5; k++) {
        log = build_log_of("lg-proj", "bad", name_bad);
        assert_string_equal(log, "There was an error loading the logs: "
                                 "NoSuchKey: The specified key does not "
                                 "exist.");
        free(log);
    }
    s = stats();
    assert_int_equal(stat_int(s, "log_errors"), 5);
    assert_int_equal(stat_int(s, "logs_served"), 2 + 1 + 5);
    json_decref(s);
    set_config("{\"log_error_percent\":0}");
    log = build_log_of("lg-proj", "bad", name_bad);
    assert_non_null(strstr(log, "\nBuild failed\n"));
    free(log);
    free(bulk);
}

#define ROUTE_QUERY                                                            \
    "query ($bulkId: String!) { deploymentsByBulkId(bulkId: $bulkId) { id "    \
    "environment { name route project { name } } } }"

/* The route of the bulk's row for environment env (a new string). */
static char *route_of(const char *bulk, const char *env)
{
    long status = 0;
    json_t *j = gql(ROUTE_QUERY, json_pack("{s:s}", "bulkId", bulk), &status);
    json_t *rows =
        json_object_get(json_object_get(j, "data"), "deploymentsByBulkId");
    char *route = NULL;
    size_t i;
    json_t *row;

    assert_int_equal(status, 200);
    json_array_foreach(rows, i, row)
    {
        json_t *e = json_object_get(row, "environment");
        if (strcmp(json_string_value(json_object_get(e, "name")), env) == 0)
            route = strdup(json_string_value(json_object_get(e, "route")));
    }
    if (!route)
        fail_msg("no route for %s in %s", env, json_dumps(j, JSON_COMPACT));
    json_decref(j);
    return route;
}

/* Status of a GET of route + suffix (the route must be the sim's). */
static long get_route(const char *route, const char *suffix)
{
    char path[512];
    resp_t r;

    assert_true(strncmp(route, base_url, strlen(base_url)) == 0);
    snprintf(path, sizeof(path), "%s%s", route + strlen(base_url), suffix);
    r = http(path, NULL, NULL);
    assert_int_equal(r.cc, CURLE_OK);
    free(r.body);
    return r.status;
}

static void test_routes_and_health(void **state)
{
    const char *const pairs[] = {"hp",  "ok",    "hp", "bad-1",
                                 "h p", "ma/in", NULL};
    char want[256], *ok, *bad, *odd;
    json_t *s, *checks;
    char *bulk;

    (void)state;
    set_config("{\"health_fail\":[\"hp/bad-*\"],\"rows_delay_ms\":50,"
               "\"phase_ms\":0,\"build_min_ms\":50,\"build_max_ms\":50}");
    bulk = bulk_deploy(pairs);
    json_decref(wait_terminal(bulk, 3));
    ok = route_of(bulk, "ok");
    bad = route_of(bulk, "bad-1");
    odd = route_of(bulk, "ma/in");
    snprintf(want, sizeof(want), "%s/sim/env/hp/ok", base_url);
    assert_string_equal(ok, want);
    /* both names percent-encoded */
    snprintf(want, sizeof(want), "%s/sim/env/h%%20p/ma%%2Fin", base_url);
    assert_string_equal(odd, want);

    assert_int_equal(get_route(ok, ""), 200);
    assert_int_equal(get_route(ok, "/healthz"), 200);
    assert_int_equal(get_route(bad, "/healthz"), 503);
    assert_int_equal(get_route(bad, ""), 503);
    /* an environment no bulk named has no route */
    assert_int_equal(get_route(base_url, "/sim/env/hp/nope"), 404);

    s = stats();
    assert_int_equal(stat_int(s, "health_requests"), 5);
    assert_int_equal(stat_int(s, "health_failures"), 3);
    checks = json_object_get(s, "health_checks");
    assert_int_equal(json_integer_value(json_object_get(checks, "hp/ok")), 2);
    assert_int_equal(json_integer_value(json_object_get(checks, "hp/bad-1")),
                     2);
    /* environments never checked are left out */
    assert_null(json_object_get(checks, "h p/ma/in"));
    json_decref(s);

    /* every environment fails at 100 %, none at 0 % once the pattern goes */
    set_config("{\"health_fail_percent\":100}");
    assert_int_equal(get_route(ok, "/healthz"), 503);
    set_config("{\"health_fail_percent\":0,\"health_fail\":[]}");
    assert_int_equal(get_route(bad, "/healthz"), 200);

    /* a reset forgets the counters */
    fresh(NULL);
    s = stats();
    assert_int_equal(stat_int(s, "health_requests"), 0);
    assert_int_equal(stat_int(s, "health_failures"), 0);
    json_decref(s);
    free(ok);
    free(bad);
    free(odd);
    free(bulk);
}

/* The percentage draws the same environments every time, about that many. */
static void test_health_fail_percent(void **state)
{
    enum { N = 40 };
    const char *pairs[2 * N + 1];
    char names[N][16], *routes[N];
    long first[N];
    int failing = 0;
    char *bulk;

    (void)state;
    set_config("{\"health_fail_percent\":50,\"rows_delay_ms\":50,"
               "\"phase_ms\":0,\"build_min_ms\":50,\"build_max_ms\":50}");
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "env-%d", i);
        pairs[2 * i] = "pct";
        pairs[2 * i + 1] = names[i];
    }
    pairs[2 * N] = NULL;
    bulk = bulk_deploy(pairs);
    json_decref(wait_terminal(bulk, N));
    for (int i = 0; i < N; i++) {
        routes[i] = route_of(bulk, names[i]);
        first[i] = get_route(routes[i], "/healthz");
        assert_true(first[i] == 200 || first[i] == 503);
        failing += first[i] == 503;
    }
    /* 50 % of 40: a fair hash lands well inside 8..32 */
    assert_in_range(failing, 8, 32);
    for (int i = 0; i < N; i++) {
        assert_int_equal(get_route(routes[i], "/healthz"), first[i]);
        free(routes[i]);
    }
    free(bulk);
}

static void test_concurrency_cap(void **state)
{
    const char *const pairs[] = {"cc-proj", "a", "cc-proj", "b",
                                 "cc-proj", "c", NULL};
    bool saw_queued = false;
    long long deadline;
    json_t *rows, *row, *s;
    char *bulk;
    size_t i;

    (void)state;
    set_config("{\"max_concurrent_builds\":1,\"rows_delay_ms\":0,"
               "\"phase_ms\":0,\"build_min_ms\":400,\"build_max_ms\":400}");
    bulk = bulk_deploy(pairs);
    deadline = rw_itest_now_ms() + 20000;
    while (rw_itest_now_ms() < deadline) {
        int running = 0, queued = 0, done = 0;
        rows = rows_of(bulk);
        json_array_foreach(rows, i, row)
        {
            const char *st = row_status(row);
            running += strcmp(st, "running") == 0;
            queued += strcmp(st, "queued") == 0;
            done += status_rank(st) == 4;
        }
        json_decref(rows);
        assert_true(running <= 1);
        if (queued > 0)
            saw_queued = true;
        if (done == 3)
            break;
        rw_itest_sleep_ms(30);
    }
    assert_true(saw_queued);
    rows = wait_terminal(bulk, 3);
    json_decref(rows);
    s = stats();
    assert_int_equal(stat_int(s, "peak_concurrent_builds"), 1);
    assert_int_equal(stat_int(s, "running_builds"), 0);
    json_decref(s);
    free(bulk);
}

#define ENV_QUERY                                                              \
    "query ($p: String!) { projectByName(name: $p) { environments { name "     \
    "deployments { id status created started completed bulkId } } } }"

/*
 * The deployments of project's first environment, newest first, as one
 * answer shows them (a consistent view of the environment; a new
 * reference).
 */
static json_t *env_deployments(const char *project)
{
    long status = 0;
    json_t *j = gql(ENV_QUERY, json_pack("{s:s}", "p", project), &status);
    json_t *envs = json_object_get(
        json_object_get(json_object_get(j, "data"), "projectByName"),
        "environments");
    json_t *deps = json_object_get(json_array_get(envs, 0), "deployments");

    assert_int_equal(status, 200);
    if (!json_is_array(deps))
        fail_msg("%s: no deployments in %s", project,
                 json_dumps(j, JSON_COMPACT));
    json_incref(deps);
    json_decref(j);
    return deps;
}

static const char *field_str(json_t *row, const char *key)
{
    return json_string_value(json_object_get(row, key));
}

/* The row of deps (newest first) that belongs to bulk, or NULL. */
static json_t *row_of_bulk(json_t *deps, const char *bulk)
{
    size_t i;
    json_t *row;

    json_array_foreach(deps, i, row)
    {
        if (strcmp(field_str(row, "bulkId"), bulk) == 0)
            return row;
    }
    return NULL;
}

/* Polls until bulk's only row has status want, or fails the test. */
static void wait_status(const char *bulk, const char *want)
{
    long long deadline = rw_itest_now_ms() + 20000;

    while (rw_itest_now_ms() < deadline) {
        json_t *rows = rows_of(bulk);
        bool hit = json_array_size(rows) == 1 &&
                   strcmp(row_status(json_array_get(rows, 0)), want) == 0;
        json_decref(rows);
        if (hit)
            return;
        rw_itest_sleep_ms(20);
    }
    fail_msg("bulk %s never reached %s within 20 s", bulk, want);
}

/*
 * A second deployment of an environment whose first one is running waits
 * in queued (no slot of the cap taken, the cap has room) and starts when
 * the first one ends; it is not cancelled, and a running build is not
 * either.
 */
static void test_one_build_per_env(void **state)
{
    const char *const env[] = {"pe-proj", "main", NULL};
    bool saw_wait = false;
    long long deadline;
    char *first, *second;
    json_t *deps, *s, *a, *b;

    (void)state;
    set_config("{\"max_concurrent_builds\":5,\"rows_delay_ms\":0,"
               "\"phase_ms\":0,\"build_min_ms\":1000,\"build_max_ms\":1000}");
    first = bulk_deploy(env);
    wait_status(first, "running");
    second = bulk_deploy(env);
    deadline = rw_itest_now_ms() + 20000;
    for (;;) {
        const char *sa, *sb;
        deps = env_deployments("pe-proj");
        assert_int_equal(json_array_size(deps), 2);
        a = row_of_bulk(deps, first);
        b = row_of_bulk(deps, second);
        assert_non_null(a);
        assert_non_null(b);
        sa = row_status(a);
        sb = row_status(b);
        /* Never two builds of one environment at once. */
        assert_false(strcmp(sa, "running") == 0 && strcmp(sb, "running") == 0);
        if (strcmp(sa, "running") == 0) {
            assert_string_equal(sb, "queued");
            saw_wait = true;
        }
        if (status_rank(sa) == 4 && status_rank(sb) == 4)
            break;
        json_decref(deps);
        if (rw_itest_now_ms() > deadline)
            fail_msg("the two builds of pe-proj/main did not end in 20 s");
        rw_itest_sleep_ms(30);
    }
    assert_true(saw_wait);
    assert_string_equal(row_status(a), "complete");
    assert_string_equal(row_status(b), "complete");
    /* The second started when the first ended (second resolution). */
    assert_string_equal(field_str(b, "started"), field_str(a, "completed"));
    json_decref(deps);

    s = stats();
    assert_int_equal(stat_int(s, "peak_concurrent_builds"), 1);
    assert_int_equal(stat_int(s, "peak_in_progress_builds"), 2);
    assert_int_equal(stat_int(s, "in_progress_builds"), 0);
    assert_int_equal(stat_int(s, "superseded_cancelled"), 0);
    json_decref(s);
    free(first);
    free(second);
}

/* Queued behind its environment: counted in queued and in progress, not
 * running, while the cap has room. */
static void test_env_wait_stats(void **state)
{
    const char *const env[] = {"pw-proj", "main", NULL};
    char *first, *second;
    json_t *s;

    (void)state;
    set_config("{\"max_concurrent_builds\":0,\"rows_delay_ms\":0,"
               "\"phase_ms\":0,\"build_min_ms\":2000,\"build_max_ms\":2000}");
    first = bulk_deploy(env);
    second = bulk_deploy(env);
    /* Both rows appear at once; the second is ready at once and waits. */
    wait_status(second, "queued");
    s = stats();
    assert_int_equal(stat_int(s, "running_builds"), 1);
    assert_int_equal(stat_int(s, "queued_builds"), 1);
    assert_int_equal(stat_int(s, "in_progress_builds"), 2);
    assert_int_equal(stat_int(s, "peak_in_progress_builds"), 2);
    json_decref(s);
    free(first);
    free(second);
}

/*
 * Three bulks on one environment while the first builds: the second is
 * still waiting when the third appears, so it ends cancelled at that
 * moment, never started, and is counted; the first (running) is not
 * touched and the third builds after it.
 */
static void test_superseded_cancel(void **state)
{
    const char *const env[] = {"sc-proj", "main", NULL};
    char *bulk[3];
    json_t *deps, *r0, *r1, *r2, *s;
    long long deadline;

    (void)state;
    set_config("{\"max_concurrent_builds\":0,\"rows_delay_ms\":0,"
               "\"phase_ms\":100,\"build_min_ms\":1500,"
               "\"build_max_ms\":1500}");
    bulk[0] = bulk_deploy(env);
    wait_status(bulk[0], "running");
    bulk[1] = bulk_deploy(env);
    bulk[2] = bulk_deploy(env);
    /* The middle one is cancelled as soon as the third one's row exists. */
    json_decref(wait_terminal(bulk[1], 1));
    deadline = rw_itest_now_ms() + 20000;
    for (;;) {
        deps = env_deployments("sc-proj");
        assert_int_equal(json_array_size(deps), 3);
        r0 = row_of_bulk(deps, bulk[0]);
        r1 = row_of_bulk(deps, bulk[1]);
        r2 = row_of_bulk(deps, bulk[2]);
        assert_string_equal(row_status(r1), "cancelled");
        if (status_rank(row_status(r0)) == 4 &&
            status_rank(row_status(r2)) == 4)
            break;
        assert_false(strcmp(row_status(r0), "running") == 0 &&
                     strcmp(row_status(r2), "running") == 0);
        json_decref(deps);
        if (rw_itest_now_ms() > deadline)
            fail_msg("sc-proj/main builds did not end in 20 s");
        rw_itest_sleep_ms(30);
    }
    assert_string_equal(row_status(r0), "complete");
    assert_string_equal(row_status(r2), "complete");
    assert_true(json_is_null(json_object_get(r1, "started")));
    /* Cancelled when the third was created. */
    assert_string_equal(field_str(r1, "completed"), field_str(r2, "created"));
    assert_true(strcmp(field_str(r1, "completed"), field_str(r1, "created")) >=
                0);
    assert_true(strcmp(field_str(r2, "started"), field_str(r0, "completed")) >=
                0);
    json_decref(deps);
    s = stats();
    assert_int_equal(stat_int(s, "superseded_cancelled"), 1);
    assert_int_equal(stat_int(s, "peak_concurrent_builds"), 1);
    assert_int_equal(stat_int(s, "deployments"), 3);
    json_decref(s);
    for (int i = 0; i < 3; i++)
        free(bulk[i]);
}

/* Time of one { __typename } request in ms; asserts it was answered. */
static long long timed_request(void)
{
    long long t0 = rw_itest_now_ms();
    resp_t r = http("/graphql", TOKEN, "{\"query\":\"{ __typename }\"}");
    long long took = rw_itest_now_ms() - t0;

    assert_int_equal(r.cc, CURLE_OK);
    assert_int_equal(r.status, 200);
    free(r.body);
    return took;
}

/*
 * With 3 builds in progress (1 running under a cap of 1, 2 queued) and a
 * knee of 1, every /graphql answer waits (3 - 1) * 200 ms; at or below the
 * knee, or with the model off, none does; overload-max-ms caps the delay.
 */
static void test_overload_delay(void **state)
{
    const char *const envs[] = {"ov-proj", "a", "ov-proj", "b",
                                "ov-proj", "c", NULL};
    json_t *s, *lat;
    long long took;
    char *bulk;

    (void)state;
    set_config("{\"max_concurrent_builds\":1,\"rows_delay_ms\":0,"
               "\"phase_ms\":0,\"build_min_ms\":10000,"
               "\"build_max_ms\":10000}");
    bulk = bulk_deploy(envs);
    s = stats();
    assert_int_equal(stat_int(s, "running_builds"), 1);
    assert_int_equal(stat_int(s, "queued_builds"), 2);
    assert_int_equal(stat_int(s, "in_progress_builds"), 3);
    assert_int_equal(stat_int(s, "peak_in_progress_builds"), 3);
    assert_int_equal(stat_int(s, "peak_concurrent_builds"), 1);
    assert_int_equal(stat_int(s, "overload_delayed"), 0);
    json_decref(s);

    /* At the knee: no delay. */
    set_config("{\"overload_knee\":3,\"overload_ms_per_build\":200}");
    (void)timed_request();
    s = stats();
    assert_int_equal(stat_int(s, "overload_delayed"), 0);
    json_decref(s);

    set_config("{\"overload_knee\":1}");
    took = timed_request();
    if (took < 400 - 20)
        fail_msg("answer took %lld ms, the model says 400 ms", took);
    set_config("{\"overload_max_ms\":250}");
    took = timed_request();
    if (took < 250 - 20)
        fail_msg("answer took %lld ms, the capped model says 250 ms", took);
    s = stats();
    assert_int_equal(stat_int(s, "overload_delayed"), 2);
    lat = json_object_get(s, "api_latency_ms");
    assert_int_equal(json_integer_value(json_object_get(lat, "count")), 4);
    assert_true(json_number_value(json_object_get(lat, "max")) >= 400 - 20);
    assert_true(json_number_value(json_object_get(lat, "p95")) >= 400 - 20);
    assert_true(json_number_value(json_object_get(lat, "p95")) <=
                json_number_value(json_object_get(lat, "max")));
    assert_true(json_number_value(json_object_get(lat, "mean")) >=
                (400.0 + 250.0 - 40.0) / 4);
    json_decref(s);

    /* The model off: no delay whatever is in progress. */
    set_config("{\"overload_knee\":0}");
    (void)timed_request();
    s = stats();
    assert_int_equal(stat_int(s, "overload_delayed"), 2);
    json_decref(s);
    free(bulk);
}

static long long wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * ?timeline=true counts environments triggered (rejected ones included)
 * per second since the first trigger; the counts add up to
 * environments_triggered, and the second bulk, more than a second later,
 * lands in a later second. Latency counts start again at a reset.
 */
static void test_trigger_timeline(void **state)
{
    const char *const two[] = {"tl-proj", "a", "tl-proj", "rej", NULL};
    const char *const three[] = {"tl-proj", "a", "tl-proj", "b",
                                 "tl-proj", "c", NULL};
    json_t *s, *tl, *per, *v;
    long long before, after, sum = 0;
    size_t i;

    (void)state;
    s = stats_at("/sim/stats?timeline=true");
    tl = json_object_get(s, "trigger_timeline");
    assert_true(json_is_null(json_object_get(tl, "start_ms")));
    assert_int_equal(json_array_size(json_object_get(tl, "per_second")), 0);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(s, "api_latency_ms"), "count")),
                     0);
    json_decref(s);

    set_config("{\"reject\":[\"tl-proj/rej\"]}");
    before = wall_ms();
    free(bulk_deploy(two));
    after = wall_ms();
    rw_itest_sleep_ms(1100);
    free(bulk_deploy(three));

    s = stats();
    assert_null(json_object_get(s, "trigger_timeline"));
    json_decref(s);
    s = stats_at("/sim/stats?timeline=true&triggers=false");
    assert_null(json_object_get(s, "triggers"));
    tl = json_object_get(s, "trigger_timeline");
    assert_true(json_is_integer(json_object_get(tl, "start_ms")));
    assert_true(json_integer_value(json_object_get(tl, "start_ms")) >= before);
    assert_true(json_integer_value(json_object_get(tl, "start_ms")) <= after);
    assert_true(json_is_false(json_object_get(tl, "truncated")));
    assert_int_equal(
        json_integer_value(json_object_get(tl, "dropped_environments")), 0);
    per = json_object_get(tl, "per_second");
    assert_true(json_array_size(per) >= 2);
    json_array_foreach(per, i, v)
    {
        sum += json_integer_value(v);
    }
    assert_int_equal(sum, stat_int(s, "environments_triggered"));
    assert_int_equal(sum, 5);
    assert_int_equal(json_integer_value(json_array_get(per, 0)), 2);
    assert_int_equal(
        json_integer_value(json_array_get(per, json_array_size(per) - 1)), 3);
    json_decref(s);
}

/*
 * Lowering max_concurrent_builds at run time cancels nothing: the running
 * builds finish, and a new one starts only once fewer than the new cap
 * run, that is after all three have ended.
 */
static void test_cap_lowered(void **state)
{
    const char *const three[] = {"cl-proj", "a", "cl-proj", "b",
                                 "cl-proj", "c", NULL};
    const char *const one[] = {"cl-proj", "d", NULL};
    char *first, *later;
    const char *last_end = "";
    json_t *rows, *row, *s;
    size_t i;
    long long deadline;

    (void)state;
    set_config("{\"max_concurrent_builds\":3,\"rows_delay_ms\":0,"
               "\"phase_ms\":0,\"build_min_ms\":1000,\"build_max_ms\":1000}");
    first = bulk_deploy(three);
    set_config("{\"max_concurrent_builds\":1}");
    later = bulk_deploy(one);
    deadline = rw_itest_now_ms() + 20000;
    for (;;) {
        bool three_done = true, later_queued;
        /*
         * The later build first: if it had left the queue, the three had
         * all ended before, so they read as ended after it (read the other
         * way round, they could end and let it start between the reads).
         */
        rows = rows_of(later);
        assert_int_equal(json_array_size(rows), 1);
        later_queued =
            strcmp(row_status(json_array_get(rows, 0)), "queued") == 0;
        json_decref(rows);
        rows = rows_of(first);
        json_array_foreach(rows, i, row)
        {
            three_done = three_done && status_rank(row_status(row)) == 4;
        }
        json_decref(rows);
        /* Not running while any of the three still runs. */
        if (!later_queued && !three_done)
            fail_msg("the later build left the queue before the three ended");
        if (three_done)
            break;
        if (rw_itest_now_ms() > deadline)
            fail_msg("the first three builds did not end in 20 s");
        rw_itest_sleep_ms(30);
    }
    rows = wait_terminal(first, 3);
    json_array_foreach(rows, i, row)
    {
        assert_string_equal(row_status(row), "complete");
        if (strcmp(field_str(row, "completed"), last_end) > 0)
            last_end = field_str(row, "completed");
    }
    json_t *lrows = wait_terminal(later, 1);
    assert_true(
        strcmp(field_str(json_array_get(lrows, 0), "started"), last_end) >= 0);
    json_decref(lrows);
    json_decref(rows);
    s = stats();
    assert_int_equal(stat_int(s, "peak_concurrent_builds"), 3);
    assert_int_equal(stat_int(s, "peak_in_progress_builds"), 4);
    json_decref(s);
    free(first);
    free(later);
}

static void test_outcome_rates(void **state)
{
    const char *const pairs[] = {"or-proj", "a", "or-proj", "b", "or-proj", "c",
                                 "or-proj", "d", NULL};
    static const char *const cfgs[] = {
        "{\"fail_rate\":1,\"cancel_rate\":0}",
        "{\"fail_rate\":0,\"cancel_rate\":1}",
    };
    static const char *const want[] = {"failed", "cancelled"};
    json_t *rows, *row;
    size_t i;

    (void)state;
    set_config("{\"rows_delay_ms\":0,\"phase_ms\":0,\"build_min_ms\":0,"
               "\"build_max_ms\":0}");
    for (int k = 0; k < 2; k++) {
        char *bulk;
        set_config(cfgs[k]);
        bulk = bulk_deploy(pairs);
        rows = wait_terminal(bulk, 4);
        json_array_foreach(rows, i, row)
        {
            assert_string_equal(row_status(row), want[k]);
        }
        json_decref(rows);
        free(bulk);
    }
}

typedef struct worker {
    int ok;
    long connects;
} worker_t;

static void *client_thread(void *arg)
{
    worker_t *w = arg;
    CURL *curl = curl_easy_init();

    for (int i = 0; i < 25 && curl; i++) {
        resp_t r =
            http_on(curl, "/graphql", TOKEN, "{\"query\":\"{ __typename }\"}");
        if (r.cc == CURLE_OK && r.status == 200 && r.body &&
            strstr(r.body, "\"Query\""))
            w->ok++;
        w->connects += r.connects;
        free(r.body);
    }
    curl_easy_cleanup(curl);
    return NULL;
}

static void test_concurrent_keepalive(void **state)
{
    pthread_t th[8];
    worker_t w[8];
    json_t *s;

    (void)state;
    memset(w, 0, sizeof(w));
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&th[i], NULL, client_thread, &w[i]), 0);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(w[i].ok, 25);
        /* One connection per client: every later request reused it. */
        assert_int_equal(w[i].connects, 1);
    }
    s = stats();
    assert_int_equal(stat_int(s, "graphql_requests"), 200);
    json_decref(s);
}

/* Last: SIGTERM stops the sim promptly and cleanly (a sanitizer build
 * reports leaks and errors through the exit status and the log). */
static void test_clean_shutdown(void **state)
{
    char log_file[300], line[512];
    long long t0, deadline;
    int status = 0;
    pid_t got = 0;
    FILE *f;

    (void)state;
    assert_true(sim_pid > 0);
    t0 = rw_itest_now_ms();
    assert_int_equal(kill(sim_pid, SIGTERM), 0);
    deadline = t0 + 10000;
    while (rw_itest_now_ms() < deadline) {
        got = waitpid(sim_pid, &status, WNOHANG);
        if (got == sim_pid)
            break;
        rw_itest_sleep_ms(20);
    }
    if (got != sim_pid)
        fail_msg("rollwave-lagoon-sim ignored SIGTERM for 10 s");
    sim_pid = -1;
    snprintf(log_file, sizeof(log_file), "%s/sim.log", work_dir);
    f = fopen(log_file, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        if (strstr(line, "Sanitizer") || strstr(line, "runtime error"))
            fail_msg("sim log: %s", line);
    fclose(f);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_command_line, fresh),
        cmocka_unit_test_setup(test_auth, fresh),
        cmocka_unit_test_setup(test_bulk_lifecycle, fresh),
        cmocka_unit_test_setup(test_unknown_bulk_and_reset, fresh),
        cmocka_unit_test_setup(test_stats_counters, fresh),
        cmocka_unit_test_setup(test_graphql_errors, fresh),
        cmocka_unit_test_setup(test_project_by_name, fresh),
        cmocka_unit_test_setup(test_project_by_name_errors_reject_reset, fresh),
        cmocka_unit_test_setup(test_faults, fresh),
        cmocka_unit_test_setup(test_faults_after_execute, fresh),
        cmocka_unit_test_setup(test_reject, fresh),
        cmocka_unit_test_setup(test_build_log, fresh),
        cmocka_unit_test_setup(test_routes_and_health, fresh),
        cmocka_unit_test_setup(test_health_fail_percent, fresh),
        cmocka_unit_test_setup(test_concurrency_cap, fresh),
        cmocka_unit_test_setup(test_cap_lowered, fresh),
        cmocka_unit_test_setup(test_one_build_per_env, fresh),
        cmocka_unit_test_setup(test_env_wait_stats, fresh),
        cmocka_unit_test_setup(test_superseded_cancel, fresh),
        cmocka_unit_test_setup(test_overload_delay, fresh),
        cmocka_unit_test_setup(test_trigger_timeline, fresh),
        cmocka_unit_test_setup(test_outcome_rates, fresh),
        cmocka_unit_test_setup(test_concurrent_keepalive, fresh),
        cmocka_unit_test(test_clean_shutdown),
    };
    int rc;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, start_sim, stop_sim);
    curl_global_cleanup();
    return rc;
}
