/*
 * test_ctl_runs: the read and settings commands of rollwavectl against a
 * real Postgres (a fresh database per test on ROLLWAVE_PG_DSN's server):
 * runs, run show, run wait, instance history, schedule and group. The
 * runs, targets, chunks and transitions are written by SQL, so no daemon
 * is involved; each command runs as a child process with the test
 * database's DSN, and both its text and its --json output are checked,
 * as are its exit codes for refused (1) and malformed (2) input.
 */
#include "rw_itest_pg.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rw_codec.h"
#include "rw_pg.h"
#include "rw_runs.h"

#define R1      "aaaaaaaa-0000-4000-8000-000000000001" /* partial_failed */
#define R2      "aaaaaaaa-0000-4000-8000-000000000002" /* completed */
#define R3      "aaaaaaaa-0000-4000-8000-000000000003" /* running */
#define R4      "aaaaaaaa-0000-4000-8000-000000000004" /* cancelled */
#define UNKNOWN "bbbbbbbb-0000-4000-8000-00000000000f"

/*
 * Store apps shop (1) and blog (2); groups regular (1) and testers (2,
 * beta); instances alpha, bravo, charlie (no Lagoon target), delta, echo.
 * Runs, newest first: R3 (1 h ago), R2 (2 h), R1 (3 h), R4 (4 h).
 * Instance 1 took part in R1, R2 and R3, in that order.
 */
static const char *const seed_sql[] = {
    "INSERT INTO store_apps (id, name, redeploy_enabled,"
    "  redeploy_interval_days)"
    " VALUES (1, 'shop', true, 7), (2, 'blog', false, NULL)",
    "INSERT INTO user_groups (id, name, is_beta)"
    " VALUES (1, 'regular', false), (2, 'testers', true)",
    "INSERT INTO app_instances (id, name, store_app_id, user_group_id,"
    "  status, lagoon_project, lagoon_environment) VALUES"
    " (1, 'alpha', 1, 1, 'running-healthy-claimed', 'p-alpha', 'main'),"
    " (2, 'bravo', 1, 2, 'running-healthy-claimed', 'p-bravo', 'main'),"
    " (3, 'charlie', 1, 1, 'running-healthy-unclaimed', NULL, NULL),"
    " (4, 'delta', 2, 1, 'running-healthy-unclaimed', 'p-delta', 'main'),"
    " (5, 'echo', 1, 1, 'running-healthy-unclaimed', 'p-echo', 'prod')",
    "INSERT INTO deployment_runs (id, uuid, store_app_id, trigger_source,"
    "  triggered_by, status, variables_only, total_count, succeeded_count,"
    "  failed_count, skipped_count, chunk_count, created_at, started_at,"
    "  completed_at, last_error) VALUES"
    " (1, '" R1 "', 1, 'manual', 'alice', 'partial_failed', true,"
    "  4, 1, 2, 1, 2, now() - interval '3 hours',"
    "  now() - interval '179 minutes', now() - interval '2 hours',"
    "  'chunk 1: 1 target(s) timed out'),"
    " (2, '" R2 "', 2, 'scheduled', NULL, 'completed', false,"
    "  1, 1, 0, 0, 1, now() - interval '2 hours',"
    "  now() - interval '119 minutes', now() - interval '115 minutes',"
    "  NULL),"
    " (3, '" R3 "', NULL, 'retry', 'bob', 'running', false,"
    "  2, 0, 0, 0, 1, now() - interval '1 hour',"
    "  now() - interval '59 minutes', NULL, NULL),"
    " (4, '" R4 "', 1, 'manual', 'carol', 'cancelled', false,"
    "  0, 0, 0, 0, 0, now() - interval '4 hours', NULL,"
    "  now() - interval '230 minutes', 'aborted by carol')",
    "INSERT INTO run_targets (run_id, instance_id, chunk, state, attempt,"
    "  lagoon_project, lagoon_environment, bulk_id, deployment_name,"
    "  lagoon_status, error, skip_reason, created_at, finished_at) VALUES"
    " (1, 1, 0, 'succeeded', 1, 'p-alpha', 'main', 'bulk-r1-c0',"
    "  'lagoon-build-a1', 'complete', NULL, NULL,"
    "  now() - interval '3 hours', now() - interval '150 minutes'),"
    " (1, 2, 0, 'failed', 1, 'p-bravo', 'main', 'bulk-r1-c0',"
    "  'lagoon-build-b1', 'failed', 'build failed: exit code 1', NULL,"
    "  now() - interval '3 hours', now() - interval '150 minutes'),"
    " (1, 3, 1, 'skipped', 0, NULL, NULL, NULL, NULL, NULL, NULL,"
    "  'no Lagoon target', now() - interval '3 hours',"
    "  now() - interval '3 hours'),"
    " (1, 5, 1, 'timed_out', 1, 'p-echo', 'prod', 'bulk-r1-c1', NULL,"
    "  NULL, 'poll attempts exhausted', NULL, now() - interval '3 hours',"
    "  now() - interval '2 hours'),"
    " (2, 1, 0, 'succeeded', 1, 'p-alpha', 'main', 'bulk-r2-c0',"
    "  'lagoon-build-a2', 'complete', NULL, NULL,"
    "  now() - interval '2 hours', now() - interval '115 minutes'),"
    " (3, 1, 0, 'deploying', 2, 'p-alpha', 'main', 'bulk-r3-c0',"
    "  'lagoon-build-a3', 'running', NULL, NULL,"
    "  now() - interval '1 hour', NULL),"
    " (3, 2, 0, 'succeeded', 2, 'p-bravo', 'main', 'bulk-r3-c0',"
    "  'lagoon-build-b3', 'complete', NULL, NULL,"
    "  now() - interval '1 hour', now() - interval '30 minutes')",
    "INSERT INTO run_chunks (run_id, chunk, state, attempt, bulk_id,"
    "  bulk_name, poll_attempts, target_count) VALUES"
    " (1, 0, 'done', 1, 'bulk-r1-c0', 'rollwave " R1 " c0 a1', 4, 2),"
    " (1, 1, 'done', 1, 'bulk-r1-c1', 'rollwave " R1 " c1 a1', 12, 2),"
    " (2, 0, 'done', 1, 'bulk-r2-c0', 'rollwave " R2 " c0 a1', 2, 1),"
    " (3, 0, 'triggered', 2, 'bulk-r3-c0', 'rollwave " R3 " c0 a2', 1, 2)",
    "INSERT INTO run_transitions (run_id, from_status, to_status, reason,"
    "  at) VALUES"
    " (1, NULL, 'pending', 'created', now() - interval '3 hours'),"
    " (1, 'pending', 'running', 'chunk 0 triggered',"
    "  now() - interval '179 minutes'),"
    " (1, 'running', 'partial_failed', 'finalized: 1 succeeded, 2 failed',"
    "  now() - interval '2 hours')",
};

typedef struct fixture {
    char dsn[1024];
    rw_pg_t *pg;
} fixture_t;

static void exec_sql(rw_pg_t *pg, const char *sql)
{
    char errstr[512];

    if (rw_pg_exec(pg, sql, 0, NULL, NULL, errstr, sizeof(errstr)))
        fail_msg("%s: %s", sql, errstr);
}

/* The session's jit setting, as SHOW gives it. */
static void show_jit(rw_pg_t *pg, char *buf, size_t len)
{
    PGresult *res = NULL;
    char errstr[512];

    if (rw_pg_exec(pg, "SHOW jit", 0, NULL, &res, errstr, sizeof(errstr)))
        fail_msg("SHOW jit: %s", errstr);
    snprintf(buf, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    *state = f;
    rw_itest_pg_fresh_db(f->dsn, sizeof(f->dsn));
    f->pg = rw_itest_pg_connect(f->dsn);
    for (size_t i = 0; i < sizeof(seed_sql) / sizeof(seed_sql[0]); i++)
        exec_sql(f->pg, seed_sql[i]);
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;

    rw_pg_destroy(f->pg);
    if (f->dsn[0])
        rw_itest_pg_drop_db(f->dsn);
    free(f);
    return 0;
}

/* First row's column col of sql as text ("" for NULL), into buf. */
static const char *q_str(rw_pg_t *pg, const char *sql, const char *col,
                         char *buf, size_t len)
{
    PGresult *res = NULL;
    char errstr[512];
    const char *v;

    if (rw_pg_exec(pg, sql, 0, NULL, &res, errstr, sizeof(errstr)))
        fail_msg("%s: %s", sql, errstr);
    assert_int_equal(PQntuples(res), 1);
    v = rw_pg_str(res, 0, col);
    snprintf(buf, len, "%s", v ? v : "");
    PQclear(res);
    return buf;
}

/* ---- running rollwavectl ---------------------------------------------- */

typedef struct child {
    pid_t pid;
    FILE *out, *err; /* the child's stdout and stderr, read after exit */
} child_t;

typedef struct result {
    int rc;
    char out[65536];
    char err[4096];
} result_t;

/*
 * Start "rollwavectl args..." (NULL-terminated) with the test database's
 * DSN in its environment only: the DSN never passes through a shell.
 */
static child_t ctl_spawn(const fixture_t *f, const char *const *args)
{
    static char bin[1024];
    char *argv[16];
    int argc = 0;
    child_t c;

    rw_itest_bin(bin, sizeof(bin), "rollwavectl");
    argv[argc++] = bin;
    for (; *args; args++) {
        assert_true(argc < 15);
        argv[argc++] = (char *)*args;
    }
    argv[argc] = NULL;
    c.out = tmpfile();
    c.err = tmpfile();
    assert_non_null(c.out);
    assert_non_null(c.err);
    fflush(NULL);
    c.pid = fork();
    assert_true(c.pid >= 0);
    if (c.pid == 0) {
        dup2(fileno(c.out), STDOUT_FILENO);
        dup2(fileno(c.err), STDERR_FILENO);
        setenv("ROLLWAVE_PG_DSN", f->dsn, 1);
        setenv("ROLLWAVE_LOG_LEVEL", "warn", 1);
        execv(bin, argv);
        _exit(127);
    }
    return c;
}

static void read_all(FILE *fp, char *buf, size_t len)
{
    size_t n;

    rewind(fp);
    n = fread(buf, 1, len - 1, fp);
    buf[n] = '\0';
    fclose(fp);
}

/*
 * Wait up to timeout_ms for the child (killed and failed after that), then
 * collect its exit status and output into r.
 */
static void ctl_collect(child_t c, result_t *r, long long timeout_ms)
{
    long long deadline = rw_itest_now_ms() + timeout_ms;
    int st = 0;
    pid_t got;

    for (;;) {
        got = waitpid(c.pid, &st, WNOHANG);
        if (got == c.pid)
            break;
        assert_true(got == 0 || (got < 0 && errno == EINTR));
        if (rw_itest_now_ms() > deadline) {
            kill(c.pid, SIGKILL);
            waitpid(c.pid, &st, 0);
            fail_msg("rollwavectl did not exit within %lld ms", timeout_ms);
        }
        usleep(20000);
    }
    read_all(c.out, r->out, sizeof(r->out));
    read_all(c.err, r->err, sizeof(r->err));
    assert_true(WIFEXITED(st));
    r->rc = WEXITSTATUS(st);
    assert_int_not_equal(r->rc, 127);
}

/* Run rollwavectl with args (NULL-terminated) to completion. */
static void ctl_run(const fixture_t *f, result_t *r, const char *const *args)
{
    ctl_collect(ctl_spawn(f, args), r, 30000);
}

#define CTL(f, r, ...)                                                         \
    do {                                                                       \
        const char *const args_[] = {__VA_ARGS__, NULL};                       \
        ctl_run((f), (r), args_);                                              \
    } while (0)

/* ---- reading the output ----------------------------------------------- */

/*
 * The whitespace-separated words of the first line of out that contains
 * needle, into words (at most max of them, each at most 127 bytes).
 * Returns the number of words; fails the test when no line matches.
 */
static int line_words(const char *out, const char *needle, char words[][128],
                      int max)
{
    const char *hit = strstr(out, needle), *start, *end;
    char line[2048];
    char *save = NULL, *tok;
    int n = 0;

    if (!hit)
        fail_msg("no line with '%s' in:\n%s", needle, out);
    for (start = hit; start > out && start[-1] != '\n'; start--)
        ;
    end = strchr(hit, '\n');
    if (!end)
        end = hit + strlen(hit);
    assert_true((size_t)(end - start) < sizeof(line));
    memcpy(line, start, (size_t)(end - start));
    line[end - start] = '\0';
    for (tok = strtok_r(line, " ", &save); tok && n < max;
         tok = strtok_r(NULL, " ", &save))
        snprintf(words[n++], 128, "%s", tok);
    return n;
}

/* Position of needle in out; fails the test when it is missing. */
static size_t pos(const char *out, const char *needle)
{
    const char *p = strstr(out, needle);

    if (!p)
        fail_msg("'%s' missing from:\n%s", needle, out);
    return (size_t)(p - out);
}

static json_t *parse_json(const char *out)
{
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);

    if (!j)
        fail_msg("not JSON (%s at line %d):\n%s", jerr.text, jerr.line, out);
    return j;
}

static const char *jstr(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);

    if (!json_is_string(v))
        fail_msg("member '%s' is not a string", key);
    return json_string_value(v);
}

static long long jint(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);

    if (!json_is_integer(v))
        fail_msg("member '%s' is not an integer", key);
    return (long long)json_integer_value(v);
}

static void assert_jnull(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);

    if (!json_is_null(v))
        fail_msg("member '%s' is not null", key);
}

/* ---- runs --------------------------------------------------------------- */

static void test_runs_list(void **state)
{
    fixture_t *f = *state;
    result_t *r = calloc(1, sizeof(*r));
    char w[12][128];
    json_t *j, *e;

    assert_non_null(r);
    CTL(f, r, "runs");
    assert_int_equal(r->rc, 0);
    /* newest first */
    assert_true(pos(r->out, "RUN") < pos(r->out, R3));
    assert_true(pos(r->out, R3) < pos(r->out, R2));
    assert_true(pos(r->out, R2) < pos(r->out, R1));
    assert_true(pos(r->out, R1) < pos(r->out, R4));
    /* uuid status source app total ok failed skipped created duration */
    assert_int_equal(line_words(r->out, R1, w, 12), 10);
    assert_string_equal(w[1], "partial_failed");
    assert_string_equal(w[2], "manual");
    assert_string_equal(w[3], "shop");
    assert_string_equal(w[4], "4");
    assert_string_equal(w[5], "1");
    assert_string_equal(w[6], "2");
    assert_string_equal(w[7], "1");
    assert_string_equal(w[9], "1h00m00s");
    /* a run in progress counts its targets live: one has succeeded */
    assert_int_equal(line_words(r->out, R3, w, 12), 10);
    assert_string_equal(w[1], "running");
    assert_string_equal(w[2], "retry");
    assert_string_equal(w[3], "-");
    assert_string_equal(w[4], "2");
    assert_string_equal(w[5], "1");
    assert_string_equal(w[6], "0");
    assert_int_equal(line_words(r->out, R2, w, 12), 10);
    assert_string_equal(w[3], "blog");
    assert_string_equal(w[9], "5m00s");

    CTL(f, r, "runs", "--json");
    assert_int_equal(r->rc, 0);
    j = parse_json(r->out);
    assert_true(json_is_array(j));
    assert_int_equal(json_array_size(j), 4);
    assert_string_equal(jstr(json_array_get(j, 0), "uuid"), R3);
    assert_string_equal(jstr(json_array_get(j, 1), "uuid"), R2);
    assert_string_equal(jstr(json_array_get(j, 3), "uuid"), R4);
    e = json_array_get(j, 0);
    assert_jnull(e, "store_app");
    assert_jnull(e, "store_app_id");
    assert_int_equal(jint(e, "succeeded"), 1);
    assert_jnull(e, "completed_at");
    e = json_array_get(j, 2);
    assert_string_equal(jstr(e, "uuid"), R1);
    assert_string_equal(jstr(e, "status"), "partial_failed");
    assert_string_equal(jstr(e, "source"), "manual");
    assert_string_equal(jstr(e, "triggered_by"), "alice");
    assert_string_equal(jstr(e, "store_app"), "shop");
    assert_int_equal(jint(e, "store_app_id"), 1);
    assert_int_equal(jint(e, "total"), 4);
    assert_int_equal(jint(e, "succeeded"), 1);
    assert_int_equal(jint(e, "failed"), 2);
    assert_int_equal(jint(e, "skipped"), 1);
    assert_int_equal(jint(e, "duration_s"), 3600);
    assert_true(json_is_true(json_object_get(e, "variables_only")));
    assert_int_equal(strlen(jstr(e, "created_at")),
                     strlen("2026-01-01T00:00:00Z"));
    json_decref(j);

    /* filters and limit */
    CTL(f, r, "runs", "--status", "completed", "--json");
    assert_int_equal(r->rc, 0);
    j = parse_json(r->out);
    assert_int_equal(json_array_size(j), 1);
    assert_string_equal(jstr(json_array_get(j, 0), "uuid"), R2);
    json_decref(j);

    CTL(f, r, "runs", "--store-app", "1");
    assert_int_equal(r->rc, 0);
    assert_true(pos(r->out, R1) < pos(r->out, R4));
    assert_null(strstr(r->out, R2));
    assert_null(strstr(r->out, R3));

    CTL(f, r, "runs", "--limit", "2", "--json");
    assert_int_equal(r->rc, 0);
    j = parse_json(r->out);
    assert_int_equal(json_array_size(j), 2);
    assert_string_equal(jstr(json_array_get(j, 0), "uuid"), R3);
    assert_string_equal(jstr(json_array_get(j, 1), "uuid"), R2);
    json_decref(j);

    CTL(f, r, "runs", "--status", "failed");
    assert_int_equal(r->rc, 0);
    assert_string_equal(r->out, "no runs\n");

    CTL(f, r, "runs", "--status", "failed", "--json");
    assert_int_equal(r->rc, 0);
    j = parse_json(r->out);
    assert_int_equal(json_array_size(j), 0);
    json_decref(j);

    /* bad input is a usage error, explained on stderr */
    CTL(f, r, "runs", "--status", "bogus");
    assert_int_equal(r->rc, 2);
    assert_string_equal(r->out, "");
    assert_non_null(strstr(r->err, "'bogus' is not a run status"));
    assert_non_null(strstr(r->err, "partial_failed"));
    CTL(f, r, "runs", "--limit", "0");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "runs", "--store-app", "x");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "runs", "--what");
    assert_int_equal(r->rc, 2);
    free(r);
}

/* ---- run show ----------------------------------------------------------- */

static void test_run_show_text(void **state)
{
    fixture_t *f = *state;
    result_t *r = calloc(1, sizeof(*r));
    char w[12][128];

    assert_non_null(r);
    CTL(f, r, "run", "show", R1);
    assert_int_equal(r->rc, 0);
    assert_int_equal(line_words(r->out, "status ", w, 12), 2);
    assert_string_equal(w[1], "partial_failed");
    assert_int_equal(line_words(r->out, "triggered by", w, 12), 3);
    assert_string_equal(w[2], "alice");
    assert_non_null(strstr(r->out, "shop (id 1)"));
    assert_int_equal(line_words(r->out, "variables only", w, 12), 3);
    assert_string_equal(w[2], "yes");
    assert_non_null(strstr(r->out, "chunk 1: 1 target(s) timed out"));
    assert_int_equal(line_words(r->out, "duration", w, 12), 2);
    assert_string_equal(w[1], "1h00m00s");

    /* targets by state */
    assert_int_equal(line_words(r->out, "  timed_out", w, 12), 2);
    assert_string_equal(w[1], "1");
    assert_int_equal(line_words(r->out, "  total", w, 12), 2);
    assert_string_equal(w[1], "4");

    /* chunks: chunk state attempt polls targets bulk-id bulk-name(4)
     * deferred-until deferred-because */
    assert_non_null(strstr(r->out, "chunks (2)"));
    assert_int_equal(line_words(r->out, "bulk-r1-c1", w, 12), 12);
    assert_string_equal(w[10], "-");
    assert_string_equal(w[11], "-");
    assert_string_equal(w[0], "1");
    assert_string_equal(w[1], "done");
    assert_string_equal(w[3], "12");
    assert_string_equal(w[4], "2");
    assert_string_equal(w[6], "rollwave");
    assert_string_equal(w[7], R1);
    assert_string_equal(w[8], "c1");

    /* transitions in order */
    assert_non_null(strstr(r->out, "transitions (3)"));
    assert_true(pos(r->out, "created") < pos(r->out, "chunk 0 triggered"));
    assert_true(pos(r->out, "chunk 0 triggered") <
                pos(r->out, "finalized: 1 succeeded, 2 failed"));
    assert_int_equal(line_words(r->out, "finalized:", w, 12), 8);
    assert_string_equal(w[0], "running");
    assert_string_equal(w[1], "partial_failed");

    /* failed and timed-out targets with their errors, then skipped ones */
    assert_non_null(strstr(r->out, "failed and timed-out targets (2)"));
    assert_int_equal(line_words(r->out, "build failed", w, 12), 10);
    assert_string_equal(w[0], "2");
    assert_string_equal(w[1], "bravo");
    assert_string_equal(w[2], "p-bravo/main");
    assert_string_equal(w[3], "failed");
    assert_int_equal(line_words(r->out, "poll attempts exhausted", w, 12), 8);
    assert_string_equal(w[0], "5");
    assert_string_equal(w[2], "p-echo/prod");
    assert_string_equal(w[3], "timed_out");
    assert_non_null(strstr(r->out, "skipped targets (1)"));
    assert_true(pos(r->out, "skipped targets (1)") <
                pos(r->out, "no Lagoon target"));
    assert_int_equal(line_words(r->out, "no Lagoon target", w, 12), 6);
    assert_string_equal(w[0], "3");
    assert_string_equal(w[1], "charlie");
    assert_string_equal(w[2], "-");

    /* a run of several store apps, still in progress */
    CTL(f, r, "run", "show", R3);
    assert_int_equal(r->rc, 0);
    assert_non_null(strstr(r->out, "(several)"));
    assert_int_equal(line_words(r->out, "  deploying", w, 12), 2);
    assert_string_equal(w[1], "1");
    assert_non_null(strstr(r->out, "failed and timed-out targets (0)"));
    free(r);
}

static void test_run_show_json(void **state)
{
    fixture_t *f = *state;
    result_t *r = calloc(1, sizeof(*r));
    json_t *j, *run, *by, *arr, *e;

    assert_non_null(r);
    CTL(f, r, "run", "show", R1, "--json");
    assert_int_equal(r->rc, 0);
    j = parse_json(r->out);
    run = json_object_get(j, "run");
    assert_true(json_is_object(run));
    assert_string_equal(jstr(run, "uuid"), R1);
    assert_string_equal(jstr(run, "status"), "partial_failed");
    assert_string_equal(jstr(run, "source"), "manual");
    assert_string_equal(jstr(run, "triggered_by"), "alice");
    assert_string_equal(jstr(run, "store_app"), "shop");
    assert_int_equal(jint(run, "store_app_id"), 1);
    assert_true(json_is_true(json_object_get(run, "variables_only")));
    assert_string_equal(jstr(run, "last_error"),
                        "chunk 1: 1 target(s) timed out");
    assert_int_equal(jint(run, "total"), 4);
    assert_int_equal(jint(run, "duration_s"), 3600);
    assert_non_null(json_string_value(json_object_get(run, "started_at")));

    by = json_object_get(j, "targets_by_state");
    assert_int_equal(jint(by, "succeeded"), 1);
    assert_int_equal(jint(by, "failed"), 1);
    assert_int_equal(jint(by, "timed_out"), 1);
    assert_int_equal(jint(by, "skipped"), 1);
    assert_int_equal(jint(by, "pending"), 0);
    assert_int_equal(jint(by, "deploying"), 0);
    assert_int_equal(jint(j, "targets_total"), 4);

    arr = json_object_get(j, "chunks");
    assert_int_equal(json_array_size(arr), 2);
    e = json_array_get(arr, 1);
    assert_int_equal(jint(e, "chunk"), 1);
    assert_string_equal(jstr(e, "state"), "done");
    assert_int_equal(jint(e, "attempt"), 1);
    assert_string_equal(jstr(e, "bulk_id"), "bulk-r1-c1");
    assert_string_equal(jstr(e, "bulk_name"), "rollwave " R1 " c1 a1");
    assert_int_equal(jint(e, "poll_attempts"), 12);
    assert_int_equal(jint(e, "target_count"), 2);

    arr = json_object_get(j, "transitions");
    assert_int_equal(json_array_size(arr), 3);
    assert_jnull(json_array_get(arr, 0), "from_status");
    assert_string_equal(jstr(json_array_get(arr, 0), "to_status"), "pending");
    assert_string_equal(jstr(json_array_get(arr, 1), "from_status"), "pending");
    assert_string_equal(jstr(json_array_get(arr, 2), "to_status"),
                        "partial_failed");
    assert_string_equal(jstr(json_array_get(arr, 2), "reason"),
                        "finalized: 1 succeeded, 2 failed");

    arr = json_object_get(j, "failed_targets");
    assert_int_equal(json_array_size(arr), 2);
    e = json_array_get(arr, 0);
    assert_int_equal(jint(e, "instance_id"), 2);
    assert_string_equal(jstr(e, "name"), "bravo");
    assert_string_equal(jstr(e, "project"), "p-bravo");
    assert_string_equal(jstr(e, "environment"), "main");
    assert_string_equal(jstr(e, "state"), "failed");
    assert_string_equal(jstr(e, "error"), "build failed: exit code 1");
    assert_string_equal(jstr(e, "lagoon_status"), "failed");
    e = json_array_get(arr, 1);
    assert_int_equal(jint(e, "instance_id"), 5);
    assert_string_equal(jstr(e, "state"), "timed_out");
    assert_string_equal(jstr(e, "error"), "poll attempts exhausted");

    arr = json_object_get(j, "skipped_targets");
    assert_int_equal(json_array_size(arr), 1);
    e = json_array_get(arr, 0);
    assert_int_equal(jint(e, "instance_id"), 3);
    assert_string_equal(jstr(e, "skip_reason"), "no Lagoon target");
    assert_jnull(e, "project");
    json_decref(j);

    /* the same run by its upper-case spelling */
    {
        char upper[64];
        snprintf(upper, sizeof(upper), "%s", R1);
        for (char *p = upper; *p; p++)
            if (*p >= 'a' && *p <= 'f')
                *p = (char)(*p - 'a' + 'A');
        CTL(f, r, "run", "show", upper, "--json");
        assert_int_equal(r->rc, 0);
        j = parse_json(r->out);
        assert_string_equal(jstr(json_object_get(j, "run"), "uuid"), R1);
        json_decref(j);
    }
    free(r);
}

static void test_run_show_refusals(void **state)
{
    fixture_t *f = *state;
    result_t *r = calloc(1, sizeof(*r));

    assert_non_null(r);
    CTL(f, r, "run", "show", UNKNOWN);
    assert_int_equal(r->rc, 1);
    assert_string_equal(r->out, "");
    assert_non_null(strstr(r->err, "no run " UNKNOWN));
    CTL(f, r, "run", "show", UNKNOWN, "--json");
    assert_int_equal(r->rc, 1);
    assert_string_equal(r->out, "");
    CTL(f, r, "run", "show", "not-a-uuid");
    assert_int_equal(r->rc, 2);
    assert_non_null(strstr(r->err, "'not-a-uuid' is not a run UUID"));
    CTL(f, r, "run", "show", "aaaaaaaa-0000-4000-8000-00000000000g");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "run", "show");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "run", "show", R1, R2);
    assert_int_equal(r->rc, 2);
    CTL(f, r, "run", "show", R1, "--verbose");
    assert_int_equal(r->rc, 2);
    free(r);
}

/* ---- run wait ----------------------------------------------------------- */

static void test_run_wait(void **state)
{
    fixture_t *f = *state;
    result_t *r = calloc(1, sizeof(*r));
    const char *const wait_r3[] = {"run", "wait", R3, NULL};
    char buf[64];
    child_t c;
    int st;

    assert_non_null(r);
    /* already final: the exit status says how it ended */
    CTL(f, r, "run", "wait", R2);
    assert_int_equal(r->rc, 0);
    assert_non_null(strstr(r->out, "completed"));
    CTL(f, r, "run", "wait", R1);
    assert_int_equal(r->rc, 1);
    assert_non_null(strstr(r->out, "partial_failed"));
    assert_non_null(strstr(r->err, "ended partial_failed"));
    CTL(f, r, "run", "wait", R4);
    assert_int_equal(r->rc, 1);
    CTL(f, r, "run", "wait", UNKNOWN);
    assert_int_equal(r->rc, 1);
    assert_non_null(strstr(r->err, "no run " UNKNOWN));
    CTL(f, r, "run", "wait", "1234");
    assert_int_equal(r->rc, 2);

    /* in progress: waits until the run is finalized, then exits 0 */
    c = ctl_spawn(f, wait_r3);
    usleep(1500 * 1000);
    st = 0;
    assert_int_equal(waitpid(c.pid, &st, WNOHANG), 0);
    exec_sql(f->pg, "UPDATE deployment_runs SET status = 'completed',"
                    " completed_at = now() WHERE uuid = '" R3 "'");
    ctl_collect(c, r, 15000);
    assert_int_equal(r->rc, 0);
    assert_true(pos(r->out, "running") < pos(r->out, "completed"));
    assert_string_equal(q_str(f->pg,
                              "SELECT status FROM deployment_runs"
                              " WHERE uuid = '" R3 "'",
                              "status", buf, sizeof(buf)),
                        "completed");

    /* ... and exits 1 when it ends failed */
    exec_sql(f->pg, "UPDATE deployment_runs SET status = 'running',"
                    " completed_at = NULL WHERE uuid = '" R3 "'");
    c = ctl_spawn(f, wait_r3);
    usleep(1500 * 1000);
    assert_int_equal(waitpid(c.pid, &st, WNOHANG), 0);
    exec_sql(f->pg, "UPDATE deployment_runs SET status = 'failed',"
                    " completed_at = now() WHERE uuid = '" R3 "'");
    ctl_collect(c, r, 15000);
    assert_int_equal(r->rc, 1);
    assert_non_null(strstr(r->err, "ended failed"));
    free(r);
}

/* ---- instance history --------------------------------------------------- */

static void test_instance_history(void **state)
{
    fixture_t *f = *state;
    result_t *r = calloc(1, sizeof(*r));
    char w[16][128];
    json_t *j, *arr, *e;

    assert_non_null(r);
    CTL(f, r, "instance", "history", "1");
    assert_int_equal(r->rc, 0);
    assert_non_null(strstr(r->out, "instance 1 alpha (p-alpha/main)"));
    assert_non_null(strstr(r->out, "3 run(s); showing 1-3"));
    assert_true(pos(r->out, R3) < pos(r->out, R2));
    assert_true(pos(r->out, R2) < pos(r->out, R1));
    assert_null(strstr(r->out, R4));
    /* run status source state attempt bulk deployment lagoon ... */
    assert_true(line_words(r->out, R3, w, 16) >= 8);
    assert_string_equal(w[1], "running");
    assert_string_equal(w[2], "retry");
    assert_string_equal(w[3], "deploying");
    assert_string_equal(w[4], "2");
    assert_string_equal(w[5], "bulk-r3-c0");
    assert_string_equal(w[6], "lagoon-build-a3");
    assert_string_equal(w[7], "running");

    CTL(f, r, "instance", "history", "1", "--json");
    assert_int_equal(r->rc, 0);
    j = parse_json(r->out);
    assert_int_equal(jint(json_object_get(j, "instance"), "runs"), 3);
    assert_string_equal(jstr(json_object_get(j, "instance"), "name"), "alpha");
    arr = json_object_get(j, "history");
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(jstr(json_array_get(arr, 0), "run"), R3);
    assert_string_equal(jstr(json_array_get(arr, 1), "run"), R2);
    e = json_array_get(arr, 2);
    assert_string_equal(jstr(e, "run"), R1);
    assert_string_equal(jstr(e, "run_status"), "partial_failed");
    assert_string_equal(jstr(e, "source"), "manual");
    assert_string_equal(jstr(e, "state"), "succeeded");
    assert_int_equal(jint(e, "attempt"), 1);
    assert_string_equal(jstr(e, "bulk_id"), "bulk-r1-c0");
    assert_string_equal(jstr(e, "deployment_name"), "lagoon-build-a1");
    assert_string_equal(jstr(e, "lagoon_status"), "complete");
    assert_non_null(json_string_value(json_object_get(e, "finished_at")));
    json_decref(j);

    /* paging */
    CTL(f, r, "instance", "history", "1", "--skip", "1", "--take", "1",
        "--json");
    assert_int_equal(r->rc, 0);
    j = parse_json(r->out);
    assert_int_equal(jint(j, "skip"), 1);
    assert_int_equal(jint(j, "take"), 1);
    arr = json_object_get(j, "history");
    assert_int_equal(json_array_size(arr), 1);
    assert_string_equal(jstr(json_array_get(arr, 0), "run"), R2);
    json_decref(j);

    CTL(f, r, "instance", "history", "1", "--skip", "2", "--take", "5");
    assert_int_equal(r->rc, 0);
    assert_non_null(strstr(r->out, "showing 3-3"));
    assert_non_null(strstr(r->out, R1));
    assert_null(strstr(r->out, R2));

    CTL(f, r, "instance", "history", "1", "--skip", "3");
    assert_int_equal(r->rc, 0);
    assert_non_null(strstr(r->out, "none after skipping 3"));

    /* the error and the skip reason of a target */
    CTL(f, r, "instance", "history", "2", "--json");
    assert_int_equal(r->rc, 0);
    j = parse_json(r->out);
    arr = json_object_get(j, "history");
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(jstr(json_array_get(arr, 1), "error"),
                        "build failed: exit code 1");
    json_decref(j);
    CTL(f, r, "instance", "history", "3");
    assert_int_equal(r->rc, 0);
    assert_non_null(strstr(r->out, "no Lagoon target"));

    /* an instance with no history, an unknown one, bad arguments */
    CTL(f, r, "instance", "history", "4", "--json");
    assert_int_equal(r->rc, 0);
    j = parse_json(r->out);
    assert_int_equal(json_array_size(json_object_get(j, "history")), 0);
    json_decref(j);
    CTL(f, r, "instance", "history", "999");
    assert_int_equal(r->rc, 1);
    assert_non_null(strstr(r->err, "no instance with id 999"));
    CTL(f, r, "instance", "history", "1", "--take", "0");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "instance", "history", "1", "--skip", "-1");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "instance", "history", "abc");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "instance", "history");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "instance", "list", "1");
    assert_int_equal(r->rc, 2);
    free(r);
}

/* ---- schedule and group ------------------------------------------------- */

#define APP2_SETTINGS                                                          \
    "SELECT redeploy_enabled::text || ' ' ||"                                  \
    " COALESCE(redeploy_interval_days::text, '-') || ' ' ||"                   \
    " COALESCE(beta_redeploy_interval_days::text, '-') AS s"                   \
    " FROM store_apps WHERE id = 2"

static void test_schedule(void **state)
{
    fixture_t *f = *state;
    result_t *r = calloc(1, sizeof(*r));
    char w[8][128], buf[64];

    assert_non_null(r);
    CTL(f, r, "schedule", "--store-app", "2", "--enable", "--interval-days",
        "5", "--beta-interval-days", "2");
    assert_int_equal(r->rc, 0);
    assert_non_null(strstr(r->out, "store app 2 (blog)"));
    assert_int_equal(line_words(r->out, "scheduled redeploys", w, 8), 3);
    assert_string_equal(w[2], "enabled");
    assert_int_equal(line_words(r->out, "  interval days", w, 8), 3);
    assert_string_equal(w[2], "5");
    assert_int_equal(line_words(r->out, "beta interval days", w, 8), 4);
    assert_string_equal(w[3], "2");
    assert_string_equal(q_str(f->pg, APP2_SETTINGS, "s", buf, sizeof(buf)),
                        "true 5 2");

    /* --enable states the whole cadence: no beta interval = the normal one */
    CTL(f, r, "schedule", "--store-app", "2", "--enable", "--interval-days",
        "9");
    assert_int_equal(r->rc, 0);
    assert_non_null(strstr(r->out, "same as interval"));
    assert_string_equal(q_str(f->pg, APP2_SETTINGS, "s", buf, sizeof(buf)),
                        "true 9 -");

    CTL(f, r, "schedule", "--disable", "--store-app", "2");
    assert_int_equal(r->rc, 0);
    assert_int_equal(line_words(r->out, "scheduled redeploys", w, 8), 3);
    assert_string_equal(w[2], "disabled");
    assert_string_equal(q_str(f->pg, APP2_SETTINGS, "s", buf, sizeof(buf)),
                        "false 9 -");

    /* refused: nothing changes */
    CTL(f, r, "schedule", "--store-app", "999", "--disable");
    assert_int_equal(r->rc, 1);
    assert_non_null(strstr(r->err, "no store app with id 999"));
    CTL(f, r, "schedule", "--store-app", "999", "--enable", "--interval-days",
        "3");
    assert_int_equal(r->rc, 1);
    CTL(f, r, "schedule", "--store-app", "2", "--enable", "--disable",
        "--interval-days", "3");
    assert_int_equal(r->rc, 2);
    assert_non_null(strstr(r->err, "exactly one of --enable and --disable"));
    CTL(f, r, "schedule", "--store-app", "2", "--enable");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "schedule", "--store-app", "2", "--enable", "--interval-days",
        "0");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "schedule", "--store-app", "2", "--enable", "--interval-days",
        "3", "--beta-interval-days", "0");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "schedule", "--store-app", "2", "--disable", "--interval-days",
        "3");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "schedule", "--enable", "--interval-days", "3");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "schedule", "--store-app", "2");
    assert_int_equal(r->rc, 2);
    assert_string_equal(q_str(f->pg, APP2_SETTINGS, "s", buf, sizeof(buf)),
                        "false 9 -");
    /* the other app was never touched */
    assert_string_equal(q_str(f->pg,
                              "SELECT redeploy_enabled::text || ' ' ||"
                              " redeploy_interval_days AS s"
                              " FROM store_apps WHERE id = 1",
                              "s", buf, sizeof(buf)),
                        "true 7");
    free(r);
}

static void test_group(void **state)
{
    fixture_t *f = *state;
    result_t *r = calloc(1, sizeof(*r));
    char buf[64];
    static const char beta_flags[] =
        "SELECT string_agg(is_beta::text, ',' ORDER BY id) AS s"
        " FROM user_groups";

    assert_non_null(r);
    CTL(f, r, "group", "--id", "1", "--beta", "true");
    assert_int_equal(r->rc, 0);
    assert_string_equal(r->out, "user group 1 (regular): beta yes\n");
    assert_string_equal(q_str(f->pg, beta_flags, "s", buf, sizeof(buf)),
                        "true,true");
    CTL(f, r, "group", "--beta", "false", "--id", "2");
    assert_int_equal(r->rc, 0);
    assert_string_equal(r->out, "user group 2 (testers): beta no\n");
    assert_string_equal(q_str(f->pg, beta_flags, "s", buf, sizeof(buf)),
                        "true,false");

    CTL(f, r, "group", "--id", "999", "--beta", "true");
    assert_int_equal(r->rc, 1);
    assert_non_null(strstr(r->err, "no user group with id 999"));
    CTL(f, r, "group", "--id", "2", "--beta", "maybe");
    assert_int_equal(r->rc, 2);
    assert_non_null(strstr(r->err, "true or false"));
    CTL(f, r, "group", "--id", "2");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "group", "--beta", "true");
    assert_int_equal(r->rc, 2);
    CTL(f, r, "group", "--id", "0", "--beta", "true");
    assert_int_equal(r->rc, 2);
    assert_string_equal(q_str(f->pg, beta_flags, "s", buf, sizeof(buf)),
                        "true,false");
    free(r);
}

/* ---- malformed Lagoon targets ----------------------------------------- */

/*
 * Instances of the enabled shop app whose Lagoon names the codec refuses,
 * and one repeating echo's project and environment. A 300-byte project
 * name is built by repeat() in SQL.
 */
static const char BAD_TARGETS_SQL[] =
    "INSERT INTO app_instances (id, name, store_app_id, user_group_id,"
    "  status, lagoon_project, lagoon_environment) VALUES"
    " (10, 'empty-env', 1, 1, 'running-healthy-claimed', 'p-ten', ''),"
    " (11, 'newline-env', 1, 1, 'running-healthy-claimed', 'p-eleven',"
    "  E'ma\\nin'),"
    " (12, 'long-project', 1, 1, 'running-healthy-claimed',"
    "  repeat('p', 300), 'main'),"
    " (13, 'c1-env', 1, 1, 'running-healthy-claimed', 'p-thirteen',"
    "  E'ma\\u0085in'),"
    " (14, 'echo-twin', 1, 1, 'running-healthy-unclaimed', 'p-echo',"
    "  'prod')";

/* skip_reason of instance iid's target in the newest run, "" if none. */
static const char *skip_reason_of(rw_pg_t *pg, long long iid, char *buf,
                                  size_t len)
{
    char sql[256];

    snprintf(sql, sizeof(sql),
             "SELECT state || ': ' || COALESCE(skip_reason, '') AS s"
             " FROM run_targets WHERE instance_id = %lld"
             " ORDER BY run_id DESC LIMIT 1",
             iid);
    return q_str(pg, sql, "s", buf, len);
}

static void test_tick_skips_bad_targets(void **state)
{
    fixture_t *f = *state;
    rw_run_spec_t spec = {"scheduled", "scheduler", false, 50,
                          3600,        false,       NULL};
    rw_run_summary_t *runs = NULL;
    size_t n_runs = 0;
    char errstr[512], buf[512], jit[16], jit_after[16];

    exec_sql(f->pg, BAD_TARGETS_SQL);
    /* the fixture's runs carry explicit ids */
    exec_sql(f->pg, "SELECT setval('deployment_runs_id_seq', 100)");
    show_jit(f->pg, jit, sizeof(jit));
    if (rw_runs_schedule(f->pg, 50, &spec, NULL, NULL, &runs, &n_runs, errstr,
                         sizeof(errstr)))
        fail_msg("schedule: %s", errstr);
    /* the due selection's own settings end with its transactions */
    assert_false(rw_pg_in_tx(f->pg));
    show_jit(f->pg, jit_after, sizeof(jit_after));
    assert_string_equal(jit_after, jit);
    /* one run for shop: bravo and echo scheduled, five skipped */
    assert_int_equal(n_runs, 1);
    assert_int_equal(runs[0].store_app_id, 1);
    assert_int_equal(runs[0].targets, 7);
    assert_int_equal(runs[0].skipped, 5);
    assert_int_equal(runs[0].chunks, 1);
    assert_string_equal(skip_reason_of(f->pg, 2, buf, sizeof(buf)),
                        "pending: ");
    assert_string_equal(skip_reason_of(f->pg, 5, buf, sizeof(buf)),
                        "pending: ");
    assert_string_equal(skip_reason_of(f->pg, 10, buf, sizeof(buf)),
                        "skipped: invalid lagoon target: environment: empty");
    assert_string_equal(skip_reason_of(f->pg, 11, buf, sizeof(buf)),
                        "skipped: invalid lagoon target: environment: "
                        "contains control characters");
    assert_string_equal(skip_reason_of(f->pg, 12, buf, sizeof(buf)),
                        "skipped: invalid lagoon target: project: expected "
                        "1..255 bytes, got 300");
    assert_string_equal(skip_reason_of(f->pg, 13, buf, sizeof(buf)),
                        "skipped: invalid lagoon target: environment: "
                        "contains control characters");
    assert_string_equal(skip_reason_of(f->pg, 14, buf, sizeof(buf)),
                        "skipped: duplicate lagoon target: same as "
                        "instance 5");
    /* one batch message, for the two good instances only */
    assert_string_equal(q_str(f->pg,
                              "SELECT count(*) AS s FROM outbox"
                              " WHERE topic = 'batches'",
                              "s", buf, sizeof(buf)),
                        "1");
    assert_string_equal(
        q_str(f->pg,
              "SELECT string_agg(t->>'instance_id', ','"
              "                  ORDER BY (t->>'instance_id')::int) AS s"
              " FROM outbox o,"
              "      json_array_elements(o.payload::json->'targets') t"
              " WHERE o.topic = 'batches'",
              "s", buf, sizeof(buf)),
        "2,5");
    /* the skipped ones wait for the failure backoff, the others do not */
    assert_string_equal(
        q_str(f->pg,
              "SELECT string_agg(id::text, ',' ORDER BY id) AS s"
              " FROM app_instances"
              " WHERE next_redeploy_at > now() + interval '3590 seconds'",
              "s", buf, sizeof(buf)),
        "10,11,12,13,14");
    assert_string_equal(q_str(f->pg,
                              "SELECT count(*) AS s FROM app_instances"
                              " WHERE id IN (2, 5)"
                              "   AND next_redeploy_at IS NULL",
                              "s", buf, sizeof(buf)),
                        "2");
    free(runs);
    runs = NULL;

    /* the next tick finds nothing: pending targets and pushed-back ones */
    if (rw_runs_schedule(f->pg, 50, &spec, NULL, NULL, &runs, &n_runs, errstr,
                         sizeof(errstr)))
        fail_msg("schedule: %s", errstr);
    assert_int_equal(n_runs, 0);
    free(runs);
}

static void test_manual_run_skips_bad_targets(void **state)
{
    fixture_t *f = *state;
    rw_run_spec_t spec = {"manual", "alice", false, 50, 0, false, NULL};
    const long long ids[] = {2, 10, 12, 5, 14};
    rw_run_summary_t run;
    rw_run_skip_t *skips = NULL;
    size_t n_skips = 0;
    char errstr[512], buf[512];

    exec_sql(f->pg, BAD_TARGETS_SQL);
    /* the fixture's runs carry explicit ids */
    exec_sql(f->pg, "SELECT setval('deployment_runs_id_seq', 100)");
    if (rw_runs_create_manual(f->pg, ids, 5, 0, &spec, &run, &skips, &n_skips,
                              errstr, sizeof(errstr)))
        fail_msg("manual run: %s", errstr);
    assert_int_equal(run.targets, 5);
    assert_int_equal(run.skipped, 3);
    assert_int_equal(n_skips, 3);
    for (size_t i = 0; i < n_skips; i++) {
        if (skips[i].instance_id == 14)
            assert_non_null(strstr(skips[i].reason, "duplicate lagoon"));
        else
            assert_non_null(strstr(skips[i].reason, "invalid lagoon target"));
        assert_true(skips[i].instance_id == 10 || skips[i].instance_id == 12 ||
                    skips[i].instance_id == 14);
    }
    /* an operator's run leaves the cadence alone */
    assert_string_equal(q_str(f->pg,
                              "SELECT count(*) AS s FROM app_instances"
                              " WHERE next_redeploy_at IS NOT NULL",
                              "s", buf, sizeof(buf)),
                        "0");
    free(skips);
}

/*
 * A run larger than the pieces it is made in (due rows are fetched, its
 * targets inserted 5,000 at a time, its batch messages 100 at a time):
 * every instance once, every chunk's count what its targets say, chunks
 * inside their wave, canaries first, and each first-wave chunk's message
 * lists exactly its targets, in selection order. The bad targets sit on
 * both sides of the pieces' edges.
 */
#define BIG_N 12003
static const char *const big_run_sql[] = {
    "INSERT INTO store_apps (id, name, redeploy_enabled,"
    "  redeploy_interval_days, strategy)"
    " VALUES (3, 'big', true, 7, '{\"waves\":[\"60%\",\"100%\"]}')",
    "INSERT INTO app_instances (id, name, store_app_id, user_group_id,"
    "  status, lagoon_project, lagoon_environment)"
    " SELECT 1000 + g, 'big' || g, 3,"
    "   CASE WHEN g % 100 = 0 THEN 2 ELSE 1 END,"
    "   'running-healthy-claimed',"
    "   CASE WHEN g = 11000 THEN 'big7' ELSE 'big' || g END,"
    "   CASE WHEN g IN (4999, 5001, 10500) THEN '' ELSE 'main' END"
    " FROM generate_series(1, 12003) g",
    "INSERT INTO store_apps (id, name, redeploy_enabled,"
    "  redeploy_interval_days) VALUES (4, 'five-thousand', true, 7)",
    "INSERT INTO app_instances (id, name, store_app_id, user_group_id,"
    "  status, lagoon_project, lagoon_environment)"
    " SELECT 20000 + g, 'ft' || g, 4, 1, 'running-healthy-claimed',"
    "   'ft' || g, 'main'"
    " FROM generate_series(1, 5000) g",
};

static long long big_ll(rw_pg_t *pg, const char *sql, const char *uuid)
{
    PGresult *res = NULL;
    const char *p[1] = {uuid};
    char errstr[512];
    long long v;

    if (rw_pg_exec(pg, sql, 1, p, &res, errstr, sizeof(errstr)))
        fail_msg("%s: %s", sql, errstr);
    assert_int_equal(PQntuples(res), 1);
    v = rw_pg_ll(res, 0, "n", -1);
    PQclear(res);
    return v;
}

#define RUN_OF "(SELECT id FROM deployment_runs WHERE uuid = $1::uuid)"

/* Run uuid's first-wave messages list exactly the pending targets of their
 * chunks, in selection order (instance id order here), and no others. */
static void assert_messages_match(rw_pg_t *pg, const char *uuid)
{
    assert_int_equal(
        big_ll(pg,
               "WITH m AS ("
               "  SELECT (o.payload::json->>'chunk')::int AS chunk,"
               "         (t.v->>'instance_id')::bigint AS iid, t.k"
               "  FROM outbox o,"
               "       json_array_elements(o.payload::json->'targets')"
               "         WITH ORDINALITY AS t(v, k)"
               "  WHERE o.topic = 'batches' AND o.msg_key LIKE $1 || ':%'),"
               " r AS ("
               "  SELECT chunk, instance_id AS iid,"
               "         row_number() OVER (PARTITION BY chunk"
               "                            ORDER BY instance_id) AS k"
               "  FROM run_targets"
               "  WHERE run_id = " RUN_OF " AND state = 'pending'"
               "    AND chunk <= (SELECT last_chunk FROM run_waves"
               "                  WHERE run_id = " RUN_OF " AND wave = 1))"
               " SELECT count(*) AS n FROM m FULL JOIN r"
               "   ON m.chunk = r.chunk AND m.iid = r.iid AND m.k = r.k"
               " WHERE m.iid IS NULL OR r.iid IS NULL",
               uuid),
        0);
}

static void test_tick_large_run_in_pieces(void **state)
{
    fixture_t *f = *state;
    rw_run_spec_t spec = {"scheduled", "scheduler", false, 50,
                          3600,        false,       NULL};
    rw_run_summary_t *runs = NULL, *big = NULL, *small = NULL;
    size_t n_runs = 0;
    char errstr[512], uuid[40];

    for (size_t i = 0; i < sizeof(big_run_sql) / sizeof(big_run_sql[0]); i++)
        exec_sql(f->pg, big_run_sql[i]);
    exec_sql(f->pg, "SELECT setval('deployment_runs_id_seq', 100)");
    if (rw_runs_schedule(f->pg, 20000, &spec, NULL, NULL, &runs, &n_runs,
                         errstr, sizeof(errstr)))
        fail_msg("schedule: %s", errstr);
    for (size_t i = 0; i < n_runs; i++)
        if (runs[i].store_app_id == 3)
            big = &runs[i];
        else if (runs[i].store_app_id == 4)
            small = &runs[i];
    assert_non_null(big);
    assert_int_equal(big->targets, BIG_N);
    assert_int_equal(big->skipped, 4);
    assert_int_equal(big->waves, 2);
    snprintf(uuid, sizeof(uuid), "%s", big->uuid);

    /* every instance of the app once, the four bad ones skipped */
    assert_int_equal(big_ll(f->pg,
                            "SELECT count(DISTINCT t.instance_id) AS n"
                            " FROM run_targets t JOIN app_instances i"
                            "   ON i.id = t.instance_id AND i.store_app_id = 3"
                            " WHERE t.run_id = " RUN_OF,
                            uuid),
                     BIG_N);
    assert_int_equal(
        big_ll(f->pg,
               "SELECT count(*) AS n FROM run_targets WHERE run_id = " RUN_OF,
               uuid),
        BIG_N);
    assert_int_equal(big_ll(f->pg,
                            "SELECT count(*) AS n FROM run_targets"
                            " WHERE run_id = " RUN_OF " AND state = 'skipped'"
                            "   AND ((instance_id IN (5999, 6001, 11500)"
                            "         AND skip_reason LIKE 'invalid lagoon%')"
                            "     OR (instance_id = 12000 AND skip_reason ="
                            "         'duplicate lagoon target: same as"
                            " instance 1007'))",
                            uuid),
                     4);
    /* chunk counts are their pending targets, at most 50, none empty */
    assert_int_equal(big_ll(f->pg,
                            "SELECT count(*) AS n FROM run_chunks c"
                            " WHERE c.run_id = " RUN_OF
                            "   AND (c.target_count NOT BETWEEN 1 AND 50"
                            "     OR c.target_count <> (SELECT count(*)"
                            "        FROM run_targets t WHERE t.run_id ="
                            "        c.run_id AND t.chunk = c.chunk"
                            "        AND t.state = 'pending'))",
                            uuid),
                     0);
    /* waves: chunks in exactly one, 60% of the 11,999 live ones first */
    assert_int_equal(big_ll(f->pg,
                            "SELECT count(*) AS n FROM run_chunks c"
                            " WHERE c.run_id = " RUN_OF
                            "   AND (SELECT count(*) FROM run_waves w"
                            "        WHERE w.run_id = c.run_id AND c.chunk"
                            "        BETWEEN w.first_chunk AND w.last_chunk)"
                            "       <> 1",
                            uuid),
                     0);
    assert_int_equal(big_ll(f->pg,
                            "SELECT w.target_count AS n FROM run_waves w"
                            " WHERE w.run_id = " RUN_OF " AND w.wave = 1",
                            uuid),
                     7200);
    assert_int_equal(big_ll(f->pg,
                            "SELECT (w.last_chunk + 1) AS n FROM run_waves w"
                            " WHERE w.run_id = " RUN_OF " AND w.wave = 1",
                            uuid),
                     144);
    /* canaries first: no beta target after a regular one */
    assert_int_equal(
        big_ll(f->pg,
               "SELECT count(*) AS n FROM run_targets b"
               " JOIN app_instances bi ON bi.id = b.instance_id"
               " WHERE b.run_id = " RUN_OF " AND b.state = 'pending'"
               "   AND bi.user_group_id = 2 AND EXISTS ("
               "     SELECT 1 FROM run_targets r"
               "     JOIN app_instances ri ON ri.id = r.instance_id"
               "     WHERE r.run_id = b.run_id AND r.state = 'pending'"
               "       AND ri.user_group_id = 1 AND r.chunk < b.chunk)",
               uuid),
        0);
    /* the first wave's messages: one per chunk, exactly its targets */
    assert_int_equal(big_ll(f->pg,
                            "SELECT count(*) AS n FROM outbox"
                            " WHERE topic = 'batches'"
                            "   AND msg_key LIKE $1 || ':%'",
                            uuid),
                     144);
    assert_messages_match(f->pg, uuid);

    /* a run of exactly one target piece and one message piece */
    assert_non_null(small);
    snprintf(uuid, sizeof(uuid), "%s", small->uuid);
    assert_int_equal(small->targets, 5000);
    assert_int_equal(small->chunks, 100);
    assert_int_equal(big_ll(f->pg,
                            "SELECT count(DISTINCT t.instance_id) AS n"
                            " FROM run_targets t JOIN app_instances i"
                            "   ON i.id = t.instance_id AND i.store_app_id = 4"
                            " WHERE t.state = 'pending' AND t.run_id = " RUN_OF,
                            uuid),
                     5000);
    assert_int_equal(big_ll(f->pg,
                            "SELECT count(*) AS n FROM outbox"
                            " WHERE topic = 'batches'"
                            "   AND msg_key LIKE $1 || ':%'",
                            uuid),
                     100);
    assert_messages_match(f->pg, uuid);
    free(runs);
#undef RUN_OF
}

/* The SQL mirror of the Lagoon-name rule agrees with the codec's. */
static void test_name_rule_mirror(void **state)
{
    fixture_t *f = *state;
    static char s255[256], s256[257], e256[257];
    const char *samples[] = {
        "",        "a",     "main",       "ma\nin",       "tab\there",
        "del\x7f", "\x01",  "c1\xc2\x85", "nbsp\xc2\xa0", "\xc3\xa9t\xc3\xa9",
        "a b",     "x\x1f", s255,         s256,           e256,
    };
    char errstr[256], buf[16];

    memset(s255, 'a', 255);
    memset(s256, 'a', 256);
    for (int i = 0; i < 128; i++)
        memcpy(e256 + 2 * i, "\xc3\xa9", 2);
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        const char *p[1] = {samples[i]};
        PGresult *res = NULL;
        bool codec =
            rw_codec_check_name(samples[i], errstr, sizeof(errstr)) == RW_OK;

        assert_int_equal(rw_pg_exec(f->pg,
                                    "SELECT rw_lagoon_name_ok($1)::text AS ok",
                                    1, p, &res, errstr, sizeof(errstr)),
                         RW_OK);
        snprintf(buf, sizeof(buf), "%s", rw_pg_str(res, 0, "ok"));
        PQclear(res);
        if (strcmp(buf, codec ? "true" : "false") != 0)
            fail_msg("sample %zu: codec %d, SQL %s", i, codec, buf);
    }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_runs_list),
        T(test_run_show_text),
        T(test_run_show_json),
        T(test_run_show_refusals),
        T(test_run_wait),
        T(test_instance_history),
        T(test_schedule),
        T(test_group),
        T(test_tick_skips_bad_targets),
        T(test_manual_run_skips_bad_targets),
        T(test_tick_large_run_in_pieces),
        T(test_name_rule_mirror),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
