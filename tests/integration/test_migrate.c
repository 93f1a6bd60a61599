/*
 * test_migrate: the embedded migrations against a real Postgres
 * (ROLLWAVE_PG_DSN): first and repeated application, concurrent appliers
 * (threads and rollwavectl processes), and the schema constraints the
 * pipeline relies on (in-flight uniqueness, chunk bulk id, due index).
 */
#include "rw_itest_pg.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rw_migrate.h"
#include "rw_pg.h"

#define MAX_MIGRATIONS 64

/* The test's database; dropped by teardown even when the test failed. */
typedef struct fixture {
    char dsn[1024];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;

    if (f->dsn[0])
        rw_itest_pg_drop_db(f->dsn);
    free(f);
    return 0;
}

/* Run sql with up to 4 text parameters; returns the rw_pg_exec result. */
static rw_err_t q(rw_pg_t *pg, char *errstr, const char *sql, int n, ...)
{
    const char *params[4] = {NULL, NULL, NULL, NULL};
    va_list ap;

    assert_true(n <= 4);
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        params[i] = va_arg(ap, const char *);
    va_end(ap);
    return rw_pg_exec(pg, sql, n, params, NULL, errstr, 512);
}

/* First row's column col of sql (no parameters); fails the test on error. */
static long long q_ll(rw_pg_t *pg, const char *sql, const char *col)
{
    PGresult *res = NULL;
    char errstr[512];
    long long v;

    if (rw_pg_exec(pg, sql, 0, NULL, &res, errstr, sizeof(errstr)))
        fail_msg("%s: %s", sql, errstr);
    assert_int_equal(PQntuples(res), 1);
    v = rw_pg_ll(res, 0, col, -1);
    PQclear(res);
    return v;
}

typedef struct names {
    int n;
    char name[MAX_MIGRATIONS][64];
} names_t;

static void record_name(const char *name, void *ud)
{
    names_t *nm = ud;

    assert_true(nm->n < MAX_MIGRATIONS);
    snprintf(nm->name[nm->n++], sizeof(nm->name[0]), "%s", name);
}

static void test_apply_to_empty_db(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    names_t nm = {0};
    rw_pg_t *pg;
    PGresult *res = NULL;
    int n = -1;
    static const char *const tables[] = {
        "store_apps",  "user_groups", "app_instances",   "deployment_runs",
        "run_targets", "run_chunks",  "run_transitions", "outbox",
    };

    assert_true(rw_migrations_count > 0);
    assert_true(rw_migrations_count <= MAX_MIGRATIONS);
    rw_itest_pg_empty_db(f->dsn, sizeof(f->dsn));
    pg = rw_itest_pg_connect(f->dsn);

    assert_int_equal(
        rw_migrate_apply(pg, record_name, &nm, &n, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(n, (int)rw_migrations_count);
    assert_int_equal(nm.n, (int)rw_migrations_count);
    /* reported in strictly increasing name order, each embedded one */
    for (int i = 0; i < nm.n; i++) {
        int found = 0;
        if (i > 0)
            assert_true(strcmp(nm.name[i - 1], nm.name[i]) < 0);
        for (size_t j = 0; j < rw_migrations_count; j++)
            if (strcmp(rw_migrations[j].name, nm.name[i]) == 0)
                found = 1;
        assert_true(found);
    }
    assert_string_equal(nm.name[0], "0001_core");

    /* schema_migrations holds exactly the applied names */
    assert_int_equal(rw_pg_exec(pg,
                                "SELECT name FROM schema_migrations"
                                " ORDER BY name",
                                0, NULL, &res, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(PQntuples(res), nm.n);
    for (int i = 0; i < nm.n; i++)
        assert_string_equal(rw_pg_str(res, i, "name"), nm.name[i]);
    PQclear(res);

    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        const char *params[1] = {tables[i]};
        assert_int_equal(rw_pg_exec(pg,
                                    "SELECT to_regclass($1) IS NOT NULL AS ok",
                                    1, params, &res, errstr, sizeof(errstr)),
                         RW_OK);
        assert_int_equal(rw_pg_bool(res, 0, "ok", 0), 1);
        PQclear(res);
    }

    /* the lock is released: another session can take it at once */
    {
        rw_pg_t *other = rw_itest_pg_connect(f->dsn);
        int got = 0;
        assert_int_equal(rw_pg_try_advisory_lock(other, RW_MIGRATE_LOCK_KEY,
                                                 &got, errstr, sizeof(errstr)),
                         RW_OK);
        assert_int_equal(got, 1);
        rw_pg_destroy(other);
    }

    /* second run: nothing to do */
    nm.n = 0;
    assert_int_equal(
        rw_migrate_apply(pg, record_name, &nm, &n, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(n, 0);
    assert_int_equal(nm.n, 0);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM schema_migrations", "n"),
        (long long)rw_migrations_count);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

typedef struct status_seen {
    int applied, pending, unknown;
} status_seen_t;

static void record_status(const char *name, const char *applied_at,
                          int embedded, void *ud)
{
    status_seen_t *s = ud;

    assert_non_null(name);
    if (!embedded)
        s->unknown++;
    else if (applied_at)
        s->applied++;
    else
        s->pending++;
    if (applied_at)
        assert_int_equal(strlen(applied_at), strlen("2026-11-22T16:30:54Z"));
}

static void test_status(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    status_seen_t seen = {0};
    rw_pg_t *pg;

    rw_itest_pg_empty_db(f->dsn, sizeof(f->dsn));
    pg = rw_itest_pg_connect(f->dsn);

    assert_int_equal(
        rw_migrate_status(pg, record_status, &seen, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(seen.pending, (int)rw_migrations_count);
    assert_int_equal(seen.applied, 0);
    /* status only reads: no bookkeeping table appeared */
    assert_int_equal(q_ll(pg,
                          "SELECT (to_regclass('schema_migrations') IS NULL)"
                          "::int AS absent",
                          "absent"),
                     1);

    assert_int_equal(
        rw_migrate_apply(pg, NULL, NULL, NULL, errstr, sizeof(errstr)), RW_OK);
    /* a migration applied by a newer binary is reported as unknown */
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO schema_migrations (name) VALUES ($1)", 1,
                       "9999_from_the_future"),
                     RW_OK);
    memset(&seen, 0, sizeof(seen));
    assert_int_equal(
        rw_migrate_status(pg, record_status, &seen, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(seen.applied, (int)rw_migrations_count);
    assert_int_equal(seen.pending, 0);
    assert_int_equal(seen.unknown, 1);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

#define N_APPLIERS 4

typedef struct applier {
    const char *dsn;
    pthread_barrier_t *start;
    names_t names;
    int n;
    rw_err_t err;
    char errstr[512];
} applier_t;

/* No cmocka asserts here: they must not longjmp out of another thread. */
static void *applier_main(void *arg)
{
    applier_t *a = arg;
    rw_pg_t *pg = NULL;

    a->err = rw_pg_new(&pg, a->dsn, a->errstr, sizeof(a->errstr));
    pthread_barrier_wait(a->start);
    if (a->err == RW_OK)
        a->err = rw_migrate_apply(pg, record_name, &a->names, &a->n, a->errstr,
                                  sizeof(a->errstr));
    rw_pg_destroy(pg);
    return NULL;
}

static void test_concurrent_appliers(void **state)
{
    fixture_t *f = *state;
    pthread_barrier_t start;
    pthread_t th[N_APPLIERS];
    applier_t *ap = calloc(N_APPLIERS, sizeof(*ap));
    rw_pg_t *pg;
    int total = 0;

    assert_non_null(ap);
    rw_itest_pg_empty_db(f->dsn, sizeof(f->dsn));
    pthread_barrier_init(&start, NULL, N_APPLIERS);
    for (int i = 0; i < N_APPLIERS; i++) {
        ap[i].dsn = f->dsn;
        ap[i].start = &start;
        assert_int_equal(pthread_create(&th[i], NULL, applier_main, &ap[i]), 0);
    }
    for (int i = 0; i < N_APPLIERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);

    for (int i = 0; i < N_APPLIERS; i++) {
        if (ap[i].err)
            fail_msg("applier %d: %s", i, ap[i].errstr);
        assert_int_equal(ap[i].n, ap[i].names.n);
        total += ap[i].n;
    }
    /* each migration applied by exactly one of them */
    assert_int_equal(total, (int)rw_migrations_count);
    for (size_t j = 0; j < rw_migrations_count; j++) {
        int times = 0;
        for (int i = 0; i < N_APPLIERS; i++)
            for (int k = 0; k < ap[i].names.n; k++)
                if (strcmp(ap[i].names.name[k], rw_migrations[j].name) == 0)
                    times++;
        assert_int_equal(times, 1);
    }
    pg = rw_itest_pg_connect(f->dsn);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM schema_migrations", "n"),
        (long long)rw_migrations_count);
    rw_pg_destroy(pg);
    free(ap);
}

typedef struct ctl_child {
    pid_t pid;
    int fd; /* read end of the child's stdout */
} ctl_child_t;

/*
 * Start "rollwavectl [a1 [a2]]" with ROLLWAVE_PG_DSN=dsn in its environment
 * only: this process keeps its own DSN, and the DSN never passes through a
 * shell.
 */
static ctl_child_t ctl_start(const char *dsn, const char *a1, const char *a2)
{
    static char bin[1024];
    char *argv[4];
    int argc = 0, fds[2];
    ctl_child_t c;

    rw_itest_bin(bin, sizeof(bin), "rollwavectl");
    argv[argc++] = bin;
    if (a1)
        argv[argc++] = (char *)a1;
    if (a2)
        argv[argc++] = (char *)a2;
    argv[argc] = NULL;
    assert_int_equal(pipe(fds), 0);
    c.pid = fork();
    assert_true(c.pid >= 0);
    if (c.pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        dup2(fds[1], STDOUT_FILENO);
        /* usage and failure messages are expected: keep the log clean */
        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        setenv("ROLLWAVE_PG_DSN", dsn, 1);
        setenv("ROLLWAVE_LOG_LEVEL", "warn", 1);
        execv(bin, argv);
        _exit(127);
    }
    close(fds[1]);
    c.fd = fds[0];
    return c;
}

/* Read all of the child's stdout into out and return its exit status. */
static int ctl_finish(ctl_child_t c, char *out, size_t len)
{
    size_t n = 0;
    ssize_t r;
    int st = 0;

    while (n + 1 < len) {
        r = read(c.fd, out + n, len - 1 - n);
        if (r == 0)
            break;
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r > 0);
        n += (size_t)r;
    }
    out[n] = '\0';
    close(c.fd);
    assert_int_equal(waitpid(c.pid, &st, 0), c.pid);
    assert_true(WIFEXITED(st));
    assert_int_not_equal(WEXITSTATUS(st), 127);
    return WEXITSTATUS(st);
}

static int count_lines(const char *out, const char *line)
{
    int n = 0;
    size_t len = strlen(line);

    for (const char *p = out; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        if (l == len && strncmp(p, line, len) == 0)
            n++;
        p = nl ? nl + 1 : NULL;
    }
    return n;
}

static void test_rollwavectl_migrate(void **state)
{
    fixture_t *f = *state;
    char bad[1024], line[128];
    char out1[8192], out2[8192];
    ctl_child_t c1, c2;
    int rc1, rc2;

    rw_itest_pg_empty_db(f->dsn, sizeof(f->dsn));

    c1 = ctl_start(f->dsn, "migrate", "--status");
    assert_int_equal(ctl_finish(c1, out1, sizeof(out1)), 0);
    for (size_t j = 0; j < rw_migrations_count; j++) {
        snprintf(line, sizeof(line), "%s", rw_migrations[j].name);
        assert_non_null(strstr(out1, line));
    }
    snprintf(line, sizeof(line), "%zu migration(s) pending",
             rw_migrations_count);
    assert_int_equal(count_lines(out1, line), 1);

    /* two processes at once: each migration applied by exactly one */
    c1 = ctl_start(f->dsn, "migrate", NULL);
    c2 = ctl_start(f->dsn, "migrate", NULL);
    rc1 = ctl_finish(c1, out1, sizeof(out1));
    rc2 = ctl_finish(c2, out2, sizeof(out2));
    assert_int_equal(rc1, 0);
    assert_int_equal(rc2, 0);
    for (size_t j = 0; j < rw_migrations_count; j++) {
        snprintf(line, sizeof(line), "applied %s", rw_migrations[j].name);
        assert_int_equal(count_lines(out1, line) + count_lines(out2, line), 1);
    }
    snprintf(line, sizeof(line), "%zu migration(s) applied",
             rw_migrations_count);
    assert_int_equal(count_lines(out1, line) + count_lines(out2, line), 1);
    assert_int_equal(count_lines(out1, "schema up to date") +
                         count_lines(out2, "schema up to date"),
                     1);

    c1 = ctl_start(f->dsn, "migrate", NULL);
    assert_int_equal(ctl_finish(c1, out1, sizeof(out1)), 0);
    assert_string_equal(out1, "schema up to date\n");

    c1 = ctl_start(f->dsn, "migrate", "--status");
    assert_int_equal(ctl_finish(c1, out1, sizeof(out1)), 0);
    assert_null(strstr(out1, "pending"));
    assert_int_equal(count_lines(out1, "schema up to date"), 1);
    assert_non_null(strstr(out1, "0001_core"));
    assert_non_null(strstr(out1, " applied 2"));

    /* usage errors exit 2, failures exit 1, help 0 */
    c1 = ctl_start(f->dsn, "migrate", "--bogus");
    assert_int_equal(ctl_finish(c1, out1, sizeof(out1)), 2);
    c1 = ctl_start(f->dsn, "no-such-command", NULL);
    assert_int_equal(ctl_finish(c1, out1, sizeof(out1)), 2);
    c1 = ctl_start(f->dsn, NULL, NULL);
    assert_int_equal(ctl_finish(c1, out1, sizeof(out1)), 2);
    c1 = ctl_start("", "migrate", NULL);
    assert_int_equal(ctl_finish(c1, out1, sizeof(out1)), 2);
    c1 = ctl_start(f->dsn, "--help", NULL);
    assert_int_equal(ctl_finish(c1, out1, sizeof(out1)), 0);
    assert_non_null(strstr(out1, "migrate"));
    c1 = ctl_start(f->dsn, "migrate", "--help");
    assert_int_equal(ctl_finish(c1, out1, sizeof(out1)), 0);
    assert_non_null(strstr(out1, "ROLLWAVE_PG_DSN"));
    rw_itest_pg_dsn(bad, sizeof(bad), "rw_no_such_database");
    c1 = ctl_start(bad, "migrate", NULL);
    assert_int_equal(ctl_finish(c1, out1, sizeof(out1)), 1);
    assert_string_equal(out1, "");
}

/* A store app, an instance and three runs to hang targets and chunks on. */
static void seed_runs(rw_pg_t *pg)
{
    char errstr[512];

    if (q(pg, errstr,
          "INSERT INTO store_apps (id, name) VALUES (1, 'app');"
          " INSERT INTO app_instances (id, name, store_app_id, status)"
          " VALUES (1, 'inst', 1, 'running-healthy-claimed');"
          " INSERT INTO deployment_runs (id, trigger_source)"
          " VALUES (1, 'manual'), (2, 'scheduled'), (3, 'retry')",
          0) == RW_OK)
        fail_msg("several statements must be refused by rw_pg_exec");
    assert_int_equal(
        q(pg, errstr, "INSERT INTO store_apps (id, name) VALUES (1, 'app')", 0),
        RW_OK);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO app_instances"
                       " (id, name, store_app_id, status)"
                       " VALUES (1, 'inst', 1, 'running-healthy-claimed')",
                       0),
                     RW_OK);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO deployment_runs (id, trigger_source)"
                       " VALUES (1, 'manual'), (2, 'scheduled'),"
                       " (3, 'retry')",
                       0),
                     RW_OK);
}

/* One target: run ($1), instance ($2), chunk 0, state ($3). */
static const char INS_TARGET[] =
    "INSERT INTO run_targets (run_id, instance_id, chunk, state)"
    " VALUES ($1::bigint, $2::bigint, 0, $3)";

/* A fresh database at the latest migration, seeded as seed_runs does. */
static rw_pg_t *fresh_seeded(fixture_t *f)
{
    rw_pg_t *pg;

    rw_itest_pg_fresh_db(f->dsn, sizeof(f->dsn));
    pg = rw_itest_pg_connect(f->dsn);
    seed_runs(pg);
    return pg;
}

/* The kept count (0019) equals the markers, whatever wrote them. */
static long long count_matches(rw_pg_t *pg)
{
    long long kept = q_ll(
        pg, "SELECT COALESCE(sum(n), 0) AS n FROM target_in_flight_delta", "n");

    assert_int_equal(
        kept, q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"));
    return kept;
}

static void test_in_flight_unique_index(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    const char *ins = "INSERT INTO run_targets (run_id, instance_id, chunk,"
                      " state) VALUES ($1::bigint, 1, 0, $2)";
    rw_pg_t *pg;

    pg = fresh_seeded(f);

    assert_int_equal(q(pg, errstr, ins, 2, "1", "claimed"), RW_OK);
    /* a second in-flight row for the instance, in any in-flight state */
    assert_int_equal(q(pg, errstr, ins, 2, "2", "claimed"), RW_ERR_PG_UNIQUE);
    assert_non_null(strstr(errstr, "target_in_flight_pkey"));
    assert_int_equal(q(pg, errstr, ins, 2, "2", "triggered"), RW_ERR_PG_UNIQUE);
    assert_int_equal(q(pg, errstr, ins, 2, "2", "deploying"), RW_ERR_PG_UNIQUE);
    /* terminal and pending rows for the same instance are fine */
    assert_int_equal(q(pg, errstr, ins, 2, "2", "failed"), RW_OK);
    assert_int_equal(q(pg, errstr, ins, 2, "3", "pending"), RW_OK);
    /* ... but cannot move into flight while run 1 holds it */
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = 'claimed'"
                       " WHERE run_id = 3",
                       0),
                     RW_ERR_PG_UNIQUE);
    /* one row per (run, instance) */
    assert_int_equal(q(pg, errstr, ins, 2, "1", "succeeded"), RW_ERR_PG_UNIQUE);
    assert_null(strstr(errstr, "in_flight"));
    /* once run 1's target is terminal, another run may take the instance */
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = 'succeeded'"
                       " WHERE run_id = 1",
                       0),
                     RW_OK);
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = 'claimed'"
                       " WHERE run_id = 3",
                       0),
                     RW_OK);
    /* unknown states are refused */
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = 'bogus'"
                       " WHERE run_id = 2",
                       0),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "23514"));
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

/*
 * 0016_in_flight upgrades a database in place: a database at the migration
 * before it, holding targets in flight and done, gets one marker per
 * in-flight target, keeps refusing a second claim of an instance in flight,
 * and lets the claim through once the first target is done.
 */
static void test_in_flight_upgrade_in_place(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    rw_pg_t *pg;
    size_t applied = 0;
    const char *ins = INS_TARGET;

    rw_itest_pg_empty_db(f->dsn, sizeof(f->dsn));
    pg = rw_itest_pg_connect(f->dsn);
    assert_int_equal(q(pg, errstr,
                       "CREATE TABLE schema_migrations (name text PRIMARY KEY,"
                       " applied_at timestamptz NOT NULL DEFAULT now())",
                       0),
                     RW_OK);
    for (size_t i = 0; i < rw_migrations_count; i++) {
        const rw_migration_t *m = &rw_migrations[i];
        PGresult *r;

        if (strcmp(m->name, "0016") >= 0)
            continue;
        r = PQexec(rw_pg_conn(pg), m->sql);
        assert_int_equal(rw_pg_result_err(pg, r, errstr, sizeof(errstr)),
                         RW_OK);
        PQclear(r);
        assert_int_equal(q(pg, errstr,
                           "INSERT INTO schema_migrations (name) VALUES ($1)",
                           1, m->name),
                         RW_OK);
        applied++;
    }
    assert_true(applied >= 14);
    seed_runs(pg);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO app_instances (id, name, store_app_id,"
                       " status) VALUES (2, 'inst2', 1,"
                       " 'running-healthy-claimed')",
                       0),
                     RW_OK);
    /* run 1: instance 1 in flight, instance 2 done; run 3: both pending */
    assert_int_equal(q(pg, errstr, ins, 3, "1", "1", "triggered"), RW_OK);
    assert_int_equal(q(pg, errstr, ins, 3, "1", "2", "succeeded"), RW_OK);
    assert_int_equal(q(pg, errstr, ins, 3, "3", "1", "pending"), RW_OK);
    assert_int_equal(q(pg, errstr, ins, 3, "3", "2", "pending"), RW_OK);

    assert_int_equal(
        rw_migrate_apply(pg, NULL, NULL, NULL, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM schema_migrations", "n"),
        (long long)rw_migrations_count);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM target_in_flight f"
                          " JOIN run_targets t ON t.id = f.target_id"
                          " WHERE f.instance_id = 1 AND f.run_id = 1"
                          " AND t.run_id = 1 AND t.instance_id = 1",
                          "n"),
                     1);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 1);
    /* 0019 starts the kept count from the markers there */
    assert_int_equal(count_matches(pg), 1);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM pg_indexes"
                          " WHERE indexname = 'run_targets_in_flight_uidx'",
                          "n"),
                     0);
    /* 0023: room on run_targets' pages for every version of a chunk */
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM pg_class"
                          " WHERE relname = 'run_targets'"
                          " AND 'fillfactor=30' = ANY(reloptions)",
                          "n"),
                     1);
    /* 0021: the run key by triggers */
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM pg_constraint"
                          " WHERE conname = 'run_targets_run_id_fkey'",
                          "n"),
                     0);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM pg_trigger"
                          " WHERE tgname IN ('run_targets_run_exists',"
                          " 'deployment_runs_delete_targets',"
                          " 'deployment_runs_truncate_targets')",
                          "n"),
                     3);
    /* 0017: room for HOT updates on the instances' pages */
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM pg_class"
                          " WHERE relname = 'app_instances'"
                          " AND 'fillfactor=85' = ANY(reloptions)",
                          "n"),
                     1);
    /* instance 1 is still held by run 1; instance 2 may go */
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = 'claimed'"
                       " WHERE run_id = 3",
                       0),
                     RW_ERR_PG_UNIQUE);
    assert_non_null(strstr(errstr, "target_in_flight_pkey"));
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = 'claimed'"
                       " WHERE run_id = 3 AND instance_id = 2",
                       0),
                     RW_OK);
    /* run 1's target ends: its marker goes, run 3 takes instance 1 */
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = 'failed'"
                       " WHERE run_id = 1 AND instance_id = 1",
                       0),
                     RW_OK);
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = 'claimed'"
                       " WHERE run_id = 3 AND instance_id = 1",
                       0),
                     RW_OK);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM target_in_flight"
                          " WHERE run_id = 3",
                          "n"),
                     2);
    /* the throttle counts exactly the markers' targets */
    assert_int_equal(q_ll(pg, "SELECT rw_throttle_in_flight() AS n", "n"), 2);
    /* a state change inside flight keeps the marker; deleting drops it */
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = 'triggered'"
                       " WHERE run_id = 3",
                       0),
                     RW_OK);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 2);
    assert_int_equal(
        q(pg, errstr, "DELETE FROM deployment_runs WHERE id = 3", 0), RW_OK);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 0);
    /* a target never moves to another instance or run; TRUNCATE takes the
     * markers with it */
    assert_int_equal(q(pg, errstr, ins, 3, "2", "2", "claimed"), RW_OK);
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET instance_id = 1"
                       " WHERE run_id = 2 AND instance_id = 2",
                       0),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "cannot change"));
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET run_id = 1"
                       " WHERE run_id = 2 AND instance_id = 2",
                       0),
                     RW_ERR_PG_QUERY);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM target_in_flight"
                          " WHERE instance_id = 2 AND run_id = 2",
                          "n"),
                     1);
    assert_int_equal(q(pg, errstr, "TRUNCATE run_targets CASCADE", 0), RW_OK);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 0);
    assert_int_equal(q(pg, errstr, ins, 3, "1", "2", "claimed"), RW_OK);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

/*
 * The markers follow many-row statements (0018 collects the leaving pairs
 * first and deletes them through the primary key): one statement moving
 * two instances' targets out of one run and into another, a statement
 * whose targets stay in flight, a delete of a run with targets in flight
 * and done. The triggers' functions keep the planner off sequential scans.
 */
static void test_in_flight_markers_many_rows(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    const char *ins = INS_TARGET;
    char sql[512];

    rw_pg_t *pg = fresh_seeded(f);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO app_instances (id, name, store_app_id,"
                       " status) VALUES (2, 'inst2', 1, 'running-healthy-"
                       "claimed'), (3, 'inst3', 1, 'running-healthy-claimed')",
                       0),
                     RW_OK);
    for (int i = 1; i <= 3; i++) {
        char inst[8];

        snprintf(inst, sizeof(inst), "%d", i);
        assert_int_equal(q(pg, errstr, ins, 3, "1", inst, "claimed"), RW_OK);
        if (i < 3)
            assert_int_equal(q(pg, errstr, ins, 3, "2", inst, "pending"),
                             RW_OK);
    }
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 3);
    /* run 1 lets instances 1 and 2 go as run 2 takes them, in one
     * statement; instance 3 stays with run 1 */
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = CASE run_id"
                       " WHEN 1 THEN 'succeeded' ELSE 'claimed' END"
                       " WHERE instance_id IN (1, 2)",
                       0),
                     RW_OK);
    for (int i = 1; i <= 3; i++) {
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) AS n FROM target_in_flight f"
                 " JOIN run_targets t ON t.id = f.target_id"
                 " AND t.instance_id = f.instance_id AND t.run_id = f.run_id"
                 " WHERE f.instance_id = %d AND f.run_id = %d",
                 i, i < 3 ? 2 : 1);
        assert_int_equal(q_ll(pg, sql, "n"), 1);
    }
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 3);
    /* moves inside flight keep every marker */
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = 'triggered'"
                       " WHERE state = 'claimed'",
                       0),
                     RW_OK);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 3);
    /* a second claim of an instance in flight is still refused */
    assert_int_equal(q(pg, errstr, ins, 3, "3", "1", "claimed"),
                     RW_ERR_PG_UNIQUE);
    assert_non_null(strstr(errstr, "target_in_flight_pkey"));
    /* deleting run 1 (one target in flight, two done) drops its marker
     * only */
    assert_int_equal(
        q(pg, errstr, "DELETE FROM deployment_runs WHERE id = 1", 0), RW_OK);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 2);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM target_in_flight"
                          " WHERE run_id = 2",
                          "n"),
                     2);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM pg_proc"
                          " WHERE proname IN ('rw_in_flight_upd',"
                          " 'rw_in_flight_del')"
                          " AND 'enable_seqscan=off' = ANY(proconfig)",
                          "n"),
                     2);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

/*
 * The fleet's in-flight count is kept by the markers' writers (0019): it
 * follows inserts, many-row updates, deletes and TRUNCATE from two
 * connections, the take folds its rows without changing it, and
 * rw_throttle_in_flight() still leaves out a target triggered longer ago
 * than no_row_s without a deployment row, and only such a target.
 */
static void test_in_flight_count_kept(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    const char *ins = INS_TARGET;

    rw_pg_t *pg = fresh_seeded(f);
    rw_pg_t *pg2 = rw_itest_pg_connect(f->dsn);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO app_instances (id, name, store_app_id,"
                       " status) SELECT i, 'inst' || i, 1,"
                       " 'running-healthy-claimed'"
                       " FROM generate_series(2, 6) AS i",
                       0),
                     RW_OK);
    assert_int_equal(count_matches(pg), 0);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO run_targets (run_id, instance_id, chunk,"
                       " state) SELECT 1, i, 0, CASE WHEN i <= 4"
                       " THEN 'claimed' ELSE 'pending' END"
                       " FROM generate_series(1, 6) AS i",
                       0),
                     RW_OK);
    assert_int_equal(count_matches(pg), 4);
    /* the other connection moves two in, one out, in one statement */
    assert_int_equal(q(pg2, errstr,
                       "UPDATE run_targets SET state = CASE WHEN instance_id"
                       " = 1 THEN 'succeeded' ELSE 'claimed' END"
                       " WHERE run_id = 1 AND instance_id IN (1, 5, 6)",
                       0),
                     RW_OK);
    assert_int_equal(count_matches(pg2), 5);
    assert_int_equal(q_ll(pg, "SELECT rw_throttle_in_flight() AS n", "n"), 5);
    /* a claim rolled back, whole or to a savepoint, leaves no count */
    assert_int_equal(q(pg2, errstr, "BEGIN", 0), RW_OK);
    assert_int_equal(q(pg2, errstr, ins, 3, "2", "1", "claimed"), RW_OK);
    assert_int_equal(count_matches(pg2), 6);
    assert_int_equal(count_matches(pg), 5);
    assert_int_equal(q(pg2, errstr, "ROLLBACK", 0), RW_OK);
    assert_int_equal(count_matches(pg), 5);
    assert_int_equal(q(pg2, errstr, "BEGIN", 0), RW_OK);
    assert_int_equal(q(pg2, errstr, "SAVEPOINT s", 0), RW_OK);
    assert_int_equal(q(pg2, errstr, ins, 3, "2", "1", "claimed"), RW_OK);
    assert_int_equal(q(pg2, errstr, "ROLLBACK TO SAVEPOINT s", 0), RW_OK);
    assert_int_equal(q(pg2, errstr, "COMMIT", 0), RW_OK);
    assert_int_equal(count_matches(pg), 5);
    assert_int_equal(q(pg2, errstr, ins, 3, "2", "1", "claimed"), RW_OK);
    assert_int_equal(q(pg2, errstr, ins, 3, "3", "1", "claimed"),
                     RW_ERR_PG_UNIQUE);
    assert_int_equal(count_matches(pg), 6);
    /* a target's id cannot change (its marker is found by it) */
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET id = id + 1000"
                       " WHERE run_id = 2 AND instance_id = 1",
                       0),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "cannot change"));

    /* three markers older than no_row_s (600 s by default): a target
     * triggered that long ago is left out, a deploying one and one
     * triggered lately still count */
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = CASE instance_id"
                       " WHEN 2 THEN 'triggered' WHEN 3 THEN 'deploying'"
                       " ELSE 'triggered' END,"
                       " triggered_at = CASE instance_id WHEN 4 THEN now()"
                       " ELSE now() - interval '700 seconds' END"
                       " WHERE run_id = 1 AND instance_id IN (2, 3, 4)",
                       0),
                     RW_OK);
    assert_int_equal(q(pg, errstr,
                       "UPDATE target_in_flight"
                       " SET since = now() - interval '800 seconds'"
                       " WHERE run_id = 1 AND instance_id IN (2, 3, 4)",
                       0),
                     RW_OK);
    assert_int_equal(count_matches(pg), 6);
    assert_int_equal(q_ll(pg, "SELECT rw_throttle_in_flight() AS n", "n"), 5);
    /* with a no_row_s longer than its age, it counts again */
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO fleet_throttle (id, max_in_flight,"
                       " trigger_rate_per_min, burst, effective_limit,"
                       " no_row_s, tokens) VALUES (1, 100, 60, 10, 100, 900,"
                       " 10)",
                       0),
                     RW_OK);
    assert_int_equal(q_ll(pg, "SELECT rw_throttle_in_flight() AS n", "n"), 6);

    assert_int_equal(
        q(pg2, errstr, "DELETE FROM deployment_runs WHERE id = 2", 0), RW_OK);
    assert_int_equal(count_matches(pg), 5);

    /* forty statements moving instance 6 out of flight and back: the next
     * take folds the rows into one, the count unchanged */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(q(i % 2 ? pg : pg2, errstr,
                           "UPDATE run_targets SET state = 'pending'"
                           " WHERE run_id = 1 AND instance_id = 6",
                           0),
                         RW_OK);
        assert_int_equal(q(i % 2 ? pg2 : pg, errstr,
                           "UPDATE run_targets SET state = 'claimed'"
                           " WHERE run_id = 1 AND instance_id = 6",
                           0),
                         RW_OK);
    }
    assert_true(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight_delta", "n") > 32);
    assert_int_equal(count_matches(pg), 5);
    /* the take counts the five (and its own grant of one) */
    assert_int_equal(q_ll(pg,
                          "SELECT o_in_flight AS n"
                          " FROM rw_throttle_take(1, 'test', 1)"
                          " WHERE o_reason = 'granted'",
                          "n"),
                     6);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight_delta", "n"), 1);
    assert_int_equal(count_matches(pg), 5);

    /* a count that went wrong behind the triggers' back (a hand edit) is
     * made good by the next adjustment round */
    assert_int_equal(
        q(pg, errstr, "INSERT INTO target_in_flight_delta (n) VALUES (-3)", 0),
        RW_OK);
    assert_int_equal(
        q_ll(pg, "SELECT sum(n) AS n FROM target_in_flight_delta", "n"), 2);
    /* ... while the other connection has a leave (-1) and a claim (+1)
     * not yet committed: neither is lost nor counted twice */
    assert_int_equal(q(pg2, errstr, "BEGIN", 0), RW_OK);
    assert_int_equal(q(pg2, errstr,
                       "UPDATE run_targets SET state = 'succeeded'"
                       " WHERE run_id = 1 AND instance_id = 5",
                       0),
                     RW_OK);
    assert_int_equal(q(pg2, errstr, ins, 3, "3", "1", "claimed"), RW_OK);
    assert_int_equal(
        q_ll(pg, "SELECT o_adjusted::int AS n FROM rw_throttle_adjust(0)", "n"),
        1);
    assert_int_equal(count_matches(pg), 5);
    assert_int_equal(q(pg2, errstr, "COMMIT", 0), RW_OK);
    assert_int_equal(count_matches(pg), 5);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM target_in_flight"
                          " WHERE instance_id IN (1, 5) AND run_id = 3",
                          "n"),
                     1);

    /* TRUNCATE inside a REPEATABLE READ transaction whose snapshot
     * predates another connection's committed change still empties the
     * count with the markers */
    assert_int_equal(q(pg, errstr, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0),
                     RW_OK);
    assert_int_equal(q_ll(pg, "SELECT count(*) AS n FROM app_instances", "n"),
                     6);
    assert_int_equal(q(pg2, errstr,
                       "UPDATE run_targets SET state = 'succeeded'"
                       " WHERE run_id = 1 AND instance_id = 3",
                       0),
                     RW_OK);
    assert_int_equal(q(pg, errstr, "TRUNCATE run_targets CASCADE", 0), RW_OK);
    assert_int_equal(q(pg, errstr, "COMMIT", 0), RW_OK);
    assert_int_equal(count_matches(pg), 0);
    assert_int_equal(q(pg2, errstr, ins, 3, "3", "1", "claimed"), RW_OK);
    assert_int_equal(count_matches(pg), 1);
    /* a TRUNCATE naming the delta rows as well goes through */
    assert_int_equal(
        q(pg, errstr, "TRUNCATE target_in_flight, target_in_flight_delta", 0),
        RW_OK);
    assert_int_equal(count_matches(pg), 0);
    rw_pg_destroy(pg2);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

/*
 * 0020: app_instances.deployment_run_id has no foreign key any more, and
 * deleting or truncating runs still clears the instances naming them
 * (and only those), leaving the instances in place.
 */
static void test_instance_run_ref_cleared(void **state)
{
    fixture_t *f = *state;
    char errstr[512];

    rw_pg_t *pg = fresh_seeded(f);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO app_instances (id, name, store_app_id,"
                       " status, deployment_run_id) SELECT i, 'inst' || i, 1,"
                       " 'running-healthy-claimed', i % 3 + 1"
                       " FROM generate_series(2, 7) AS i",
                       0),
                     RW_OK);
    assert_int_equal(q(pg, errstr,
                       "UPDATE app_instances SET deployment_run_id = 1"
                       " WHERE id = 1",
                       0),
                     RW_OK);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM pg_constraint"
                          " WHERE conname = 'app_instances_deployment_run_fk'",
                          "n"),
                     0);
    /* instances 1, 3 and 6 name run 1; 4 and 7 run 2; 2 and 5 run 3 */
    assert_int_equal(
        q(pg, errstr, "DELETE FROM deployment_runs WHERE id = 1", 0), RW_OK);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM app_instances"
                          " WHERE deployment_run_id IS NULL",
                          "n"),
                     3);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM app_instances"
                          " WHERE deployment_run_id IS NULL"
                          " AND id IN (1, 3, 6)",
                          "n"),
                     3);
    assert_int_equal(q(pg, errstr, "TRUNCATE deployment_runs CASCADE", 0),
                     RW_OK);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM app_instances"
                          " WHERE deployment_run_id IS NULL",
                          "n"),
                     7);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

/*
 * 0021: run_targets.run_id is checked per statement instead of per row:
 * an insert naming a missing run is refused whole with the key's SQLSTATE
 * and name; deleting a run deletes its targets (their markers and logs
 * with them) and nobody else's; a delete waits for a transaction that is
 * inserting targets into that run and then deletes those too; TRUNCATE of
 * the runs takes the targets along; the retention still finds them.
 */
static void test_target_run_ref(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    const char *ins = "INSERT INTO run_targets (run_id, instance_id, chunk,"
                      " state) SELECT r, i, 0, $3"
                      " FROM unnest($1::bigint[]) AS r,"
                      "      unnest($2::bigint[]) AS i";
    rw_pg_t *pg, *pg2;
    PGconn *c2;
    PGresult *res;
    long long waited_ms = 0;

    pg = fresh_seeded(f);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO app_instances (id, name, store_app_id,"
                       " status) SELECT i, 'inst' || i, 1,"
                       " 'running-healthy-claimed'"
                       " FROM generate_series(2, 4) AS i",
                       0),
                     RW_OK);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM pg_constraint"
                          " WHERE conname = 'run_targets_run_id_fkey'",
                          "n"),
                     0);
    /* a missing run, alone or among good ones: nothing inserted */
    assert_int_equal(q(pg, errstr, ins, 3, "{9}", "{1}", "pending"),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "23503"));
    assert_non_null(strstr(errstr, "run_targets_run_id_fkey"));
    assert_int_equal(q(pg, errstr, ins, 3, "{1,9}", "{1,2}", "pending"),
                     RW_ERR_PG_QUERY);
    assert_int_equal(q_ll(pg, "SELECT count(*) AS n FROM run_targets", "n"), 0);
    /* runs 1, 2, 3 with instances 1-4; 1 and 2 in flight in run 1 */
    assert_int_equal(q(pg, errstr, ins, 3, "{1}", "{1,2}", "triggered"), RW_OK);
    assert_int_equal(q(pg, errstr, ins, 3, "{1}", "{3,4}", "succeeded"), RW_OK);
    assert_int_equal(q(pg, errstr, ins, 3, "{2,3}", "{1,2,3,4}", "pending"),
                     RW_OK);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO target_logs (target_id, run_id,"
                       " deployment_name, state, log)"
                       " SELECT id, run_id, 'lagoon-build-' || id, 'stored',"
                       " 'log' FROM run_targets WHERE run_id = 1",
                       0),
                     RW_OK);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 2);
    assert_int_equal(
        q(pg, errstr, "DELETE FROM deployment_runs WHERE id = 1", 0), RW_OK);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM run_targets"
                          " WHERE run_id = 1",
                          "n"),
                     0);
    assert_int_equal(q_ll(pg, "SELECT count(*) AS n FROM run_targets", "n"), 8);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 0);
    assert_int_equal(q_ll(pg, "SELECT count(*) AS n FROM target_logs", "n"), 0);
    assert_int_equal(count_matches(pg), 0);

    /* a delete of run 2 waits for a transaction inserting into it */
    assert_int_equal(q(pg, errstr, "BEGIN", 0), RW_OK);
    assert_int_equal(q(pg, errstr, ins, 3, "{2}", "{1}", "claimed"),
                     RW_ERR_PG_UNIQUE);
    assert_int_equal(q(pg, errstr, "ROLLBACK", 0), RW_OK);
    assert_int_equal(
        q(pg, errstr, "DELETE FROM run_targets WHERE run_id = 2", 0), RW_OK);
    assert_int_equal(q(pg, errstr, "BEGIN", 0), RW_OK);
    assert_int_equal(q(pg, errstr, ins, 3, "{2}", "{1,2}", "claimed"), RW_OK);
    pg2 = rw_itest_pg_connect(f->dsn);
    c2 = rw_pg_conn(pg2);
    assert_int_equal(
        PQsendQuery(c2, "DELETE FROM deployment_runs WHERE id = 2"), 1);
    while (waited_ms < 500) {
        assert_int_equal(PQconsumeInput(c2), 1);
        assert_int_equal(PQisBusy(c2), 1);
        rw_itest_sleep_ms(50);
        waited_ms += 50;
    }
    assert_int_equal(q(pg, errstr, "COMMIT", 0), RW_OK);
    while ((res = PQgetResult(c2)) != NULL) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            fail_msg("delete of run 2: %s", PQresultErrorMessage(res));
        PQclear(res);
    }
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM run_targets"
                          " WHERE run_id = 2",
                          "n"),
                     0);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 0);
    assert_int_equal(count_matches(pg), 0);
    /* and an insert into a run deleted meanwhile is refused */
    assert_int_equal(q(pg, errstr, ins, 3, "{2}", "{1}", "pending"),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "23503"));
    rw_pg_destroy(pg2);

    /* the retention's batches name run_targets, after target_logs */
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM rw_retention_children()"
                          " WHERE o_table = 'run_targets'::regclass"
                          " AND o_column = 'run_id'",
                          "n"),
                     1);
    assert_true(q_ll(pg,
                     "SELECT min(o) AS n FROM (SELECT o_table,"
                     " row_number() OVER () AS o"
                     " FROM rw_retention_children()) x"
                     " WHERE o_table = 'run_targets'::regclass",
                     "n") > q_ll(pg,
                                 "SELECT min(o) AS n FROM (SELECT o_table,"
                                 " row_number() OVER () AS o"
                                 " FROM rw_retention_children()) x"
                                 " WHERE o_table = 'target_logs'::regclass",
                                 "n"));

    /* TRUNCATE of the runs takes the targets along, with their markers */
    assert_int_equal(q(pg, errstr, ins, 3, "{3}", "{1}", "triggered"),
                     RW_ERR_PG_UNIQUE);
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_targets SET state = 'claimed'"
                       " WHERE run_id = 3 AND instance_id = 1",
                       0),
                     RW_OK);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 1);
    assert_int_equal(q(pg, errstr, "TRUNCATE deployment_runs CASCADE", 0),
                     RW_OK);
    assert_int_equal(q_ll(pg, "SELECT count(*) AS n FROM run_targets", "n"), 0);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 0);
    assert_int_equal(count_matches(pg), 0);

    /* At REPEATABLE READ, a delete of a run whose targets were committed
     * after the snapshot fails as it did with the key (40001), and a
     * TRUNCATE of the runs that could miss such targets is refused
     * unless it names run_targets: neither leaves targets behind. */
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO deployment_runs (id, trigger_source)"
                       " VALUES (5, 'manual')",
                       0),
                     RW_OK);
    pg2 = rw_itest_pg_connect(f->dsn);
    assert_int_equal(q(pg2, errstr, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0),
                     RW_OK);
    assert_int_equal(q_ll(pg2, "SELECT count(*) AS n FROM run_targets", "n"),
                     0);
    assert_int_equal(q(pg, errstr, ins, 3, "{5}", "{1,2}", "claimed"), RW_OK);
    assert_int_not_equal(
        q(pg2, errstr, "DELETE FROM deployment_runs WHERE id = 5", 0), RW_OK);
    assert_non_null(strstr(errstr, "40001"));
    assert_int_equal(q(pg2, errstr, "ROLLBACK", 0), RW_OK);
    assert_int_equal(q(pg2, errstr, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0),
                     RW_OK);
    assert_int_equal(q(pg2, errstr, "TRUNCATE deployment_runs CASCADE", 0),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "55000"));
    assert_int_equal(q(pg2, errstr, "ROLLBACK", 0), RW_OK);
    assert_int_equal(q(pg2, errstr, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0),
                     RW_OK);
    assert_int_equal(
        q(pg2, errstr, "TRUNCATE deployment_runs, run_targets CASCADE", 0),
        RW_OK);
    assert_int_equal(q(pg2, errstr, "COMMIT", 0), RW_OK);
    rw_pg_destroy(pg2);
    assert_int_equal(q_ll(pg, "SELECT count(*) AS n FROM run_targets", "n"), 0);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 0);
    assert_int_equal(count_matches(pg), 0);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

/*
 * 0022: the updated_at triggers run only for updates that leave
 * updated_at alone: those still get it touched, one that sets it keeps
 * its value (as the function always did), on both tables.
 */
static void test_touch_when(void **state)
{
    fixture_t *f = *state;
    char errstr[512];

    rw_pg_t *pg = fresh_seeded(f);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO run_chunks (run_id, chunk)"
                       " VALUES (1, 0)",
                       0),
                     RW_OK);
    assert_int_equal(
        q(pg, errstr, "UPDATE app_instances SET updated_at = '2001-01-01'", 0),
        RW_OK);
    assert_int_equal(
        q(pg, errstr, "UPDATE run_chunks SET updated_at = '2001-01-01'", 0),
        RW_OK);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM app_instances"
                          " WHERE updated_at = '2001-01-01'",
                          "n"),
                     1);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM run_chunks"
                          " WHERE updated_at = '2001-01-01'",
                          "n"),
                     1);
    assert_int_equal(
        q(pg, errstr, "UPDATE app_instances SET last_deployment_name = 'd'", 0),
        RW_OK);
    assert_int_equal(
        q(pg, errstr, "UPDATE run_chunks SET poll_attempts = 2", 0), RW_OK);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM app_instances"
                          " WHERE updated_at > now() - interval '1 hour'",
                          "n"),
                     1);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM run_chunks"
                          " WHERE updated_at > now() - interval '1 hour'",
                          "n"),
                     1);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM pg_trigger"
                          " WHERE tgname IN ('app_instances_touch',"
                          " 'run_chunks_touch') AND tgqual IS NOT NULL",
                          "n"),
                     2);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

/*
 * 0022: rw_in_flight_elsewhere names, of the instances asked for, those in
 * flight in a run other than the one given, with that run's uuid; it
 * reads the markers through their key whatever the planner thinks.
 */
static void test_in_flight_elsewhere(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    const char *ins = INS_TARGET;
    const char *ask = "SELECT string_agg(e.instance_id || ':' || r.id, ','"
                      " ORDER BY e.instance_id) AS v"
                      " FROM rw_in_flight_elsewhere($1::bigint[], $2::bigint) e"
                      " JOIN deployment_runs r ON r.uuid::text = e.run_uuid";
    PGresult *res = NULL;
    const char *p[2];

    rw_pg_t *pg = fresh_seeded(f);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO app_instances (id, name, store_app_id,"
                       " status) SELECT i, 'inst' || i, 1,"
                       " 'running-healthy-claimed'"
                       " FROM generate_series(2, 4) AS i",
                       0),
                     RW_OK);
    /* 1 in flight in run 1, 2 in run 2, 3 done in run 2, 4 nowhere */
    assert_int_equal(q(pg, errstr, ins, 3, "1", "1", "claimed"), RW_OK);
    assert_int_equal(q(pg, errstr, ins, 3, "2", "2", "deploying"), RW_OK);
    assert_int_equal(q(pg, errstr, ins, 3, "2", "3", "succeeded"), RW_OK);
    p[0] = "{1,2,3,4}";
    p[1] = "1";
    assert_int_equal(rw_pg_exec(pg, ask, 2, p, &res, errstr, sizeof(errstr)),
                     RW_OK);
    assert_string_equal(rw_pg_str(res, 0, "v"), "2:2");
    PQclear(res);
    p[1] = "3";
    assert_int_equal(rw_pg_exec(pg, ask, 2, p, &res, errstr, sizeof(errstr)),
                     RW_OK);
    assert_string_equal(rw_pg_str(res, 0, "v"), "1:1,2:2");
    PQclear(res);
    p[0] = "{3,4}";
    assert_int_equal(rw_pg_exec(pg, ask, 2, p, &res, errstr, sizeof(errstr)),
                     RW_OK);
    assert_true(PQgetisnull(res, 0, 0));
    PQclear(res);
    /* a marker whose run is gone still counts, named by its run id */
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO target_in_flight (instance_id, target_id,"
                       " run_id) VALUES (4, 999, 77)",
                       0),
                     RW_OK);
    assert_int_equal(
        rw_pg_exec(pg,
                   "SELECT string_agg(instance_id || ':' || run_uuid, ',') AS v"
                   " FROM rw_in_flight_elsewhere($1::bigint[], $2::bigint)",
                   2, p, &res, errstr, sizeof(errstr)),
        RW_OK);
    assert_string_equal(rw_pg_str(res, 0, "v"), "4:run 77 (deleted)");
    PQclear(res);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM pg_proc"
                          " WHERE proname = 'rw_in_flight_elsewhere'"
                          " AND 'enable_seqscan=off' = ANY (proconfig)"
                          " AND provolatile = 's'",
                          "n"),
                     1);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

static void test_chunk_bulk_id_check(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    const char *ins = "INSERT INTO run_chunks (run_id, chunk, state, bulk_id,"
                      " bulk_name) VALUES (1, $1::int, $2, $3, $4)";
    rw_pg_t *pg;

    pg = fresh_seeded(f);

    /* triggered without a bulk id (or name) */
    assert_int_equal(q(pg, errstr, ins, 4, "0", "triggered", NULL, NULL),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "run_chunks_bulk_id_chk"));
    assert_non_null(strstr(errstr, "23514"));
    assert_int_equal(q(pg, errstr, ins, 4, "0", "triggered", "b-1", NULL),
                     RW_ERR_PG_QUERY);
    /* pending, triggering or failed with one */
    assert_int_equal(q(pg, errstr, ins, 4, "0", "pending", "b-1", "n"),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "run_chunks_bulk_id_chk"));
    assert_int_equal(q(pg, errstr, ins, 4, "0", "triggering", "b-1", "n"),
                     RW_ERR_PG_QUERY);
    assert_int_equal(q(pg, errstr, ins, 4, "0", "failed", "b-1", "n"),
                     RW_ERR_PG_QUERY);
    /* no empty-string sentinel either */
    assert_int_equal(q(pg, errstr, ins, 4, "0", "triggered", "", "n"),
                     RW_ERR_PG_QUERY);
    assert_non_null(strstr(errstr, "run_chunks_bulk_id_nonempty_chk"));

    /* the valid shapes */
    assert_int_equal(q(pg, errstr, ins, 4, "0", "pending", NULL, NULL), RW_OK);
    assert_int_equal(q(pg, errstr, ins, 4, "1", "triggered", "b-1", "n1"),
                     RW_OK);
    assert_int_equal(q(pg, errstr, ins, 4, "2", "done", "b-2", "n2"), RW_OK);
    /* all targets skipped: done without ever having a bulk */
    assert_int_equal(q(pg, errstr, ins, 4, "3", "done", NULL, NULL), RW_OK);

    /* transitions are held to it too */
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_chunks SET state = 'triggered'"
                       " WHERE run_id = 1 AND chunk = 0",
                       0),
                     RW_ERR_PG_QUERY);
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_chunks SET state = 'pending'"
                       " WHERE run_id = 1 AND chunk = 1",
                       0),
                     RW_ERR_PG_QUERY);
    assert_int_equal(q(pg, errstr,
                       "UPDATE run_chunks SET state = 'triggered',"
                       " bulk_id = 'b-0', bulk_name = 'n0'"
                       " WHERE run_id = 1 AND chunk = 0",
                       0),
                     RW_OK);
    /* one row per (run, chunk) */
    assert_int_equal(q(pg, errstr, ins, 4, "1", "pending", NULL, NULL),
                     RW_ERR_PG_UNIQUE);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

/*
 * The plan of the documented due-selection shape (one store app's due
 * instances) must use the due index.
 */
static void test_due_selection_uses_index(void **state)
{
    fixture_t *f = *state;
    char errstr[512], plan[4096] = "";
    PGresult *res = NULL;
    rw_pg_t *pg;

    rw_itest_pg_fresh_db(f->dsn, sizeof(f->dsn));
    pg = rw_itest_pg_connect(f->dsn);
    /* an empty table would be scanned anyway: take that option away */
    assert_int_equal(q(pg, errstr, "SET enable_seqscan = off", 0), RW_OK);
    assert_int_equal(
        rw_pg_exec(pg,
                   "EXPLAIN SELECT id FROM app_instances"
                   " WHERE store_app_id = 1 AND NOT is_trial"
                   " AND status IN ('running-healthy-unclaimed',"
                   " 'running-healthy-claimed')"
                   " AND COALESCE(next_redeploy_at, '-infinity'::timestamptz)"
                   " <= now()",
                   0, NULL, &res, errstr, sizeof(errstr)),
        RW_OK);
    for (int i = 0; i < PQntuples(res); i++) {
        strncat(plan, PQgetvalue(res, i, 0), sizeof(plan) - strlen(plan) - 2);
        strcat(plan, "\n");
    }
    PQclear(res);
    if (!strstr(plan, "app_instances_due_app_idx"))
        fail_msg("due selection does not use app_instances_due_app_idx:\n%s",
                 plan);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

static void test_updated_at_follows_updates(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    rw_pg_t *pg;

    rw_itest_pg_fresh_db(f->dsn, sizeof(f->dsn));
    pg = rw_itest_pg_connect(f->dsn);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO store_apps (id, name, created_at,"
                       " updated_at) VALUES (1, 'a', '2000-01-01Z',"
                       " '2000-01-01Z'), (2, 'b', '2000-01-01Z',"
                       " '2000-01-01Z')",
                       0),
                     RW_OK);
    assert_int_equal(
        q(pg, errstr, "UPDATE store_apps SET name = 'a2' WHERE id = 1", 0),
        RW_OK);
    /* an explicit value is kept */
    assert_int_equal(q(pg, errstr,
                       "UPDATE store_apps SET name = 'b2',"
                       " updated_at = '2001-01-01Z' WHERE id = 2",
                       0),
                     RW_OK);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM store_apps WHERE id = 1"
                          " AND updated_at > '2020-01-01Z'",
                          "n"),
                     1);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM store_apps WHERE id = 2"
                          " AND updated_at = '2001-01-01Z'",
                          "n"),
                     1);
    /* a few value constraints of the model */
    assert_int_equal(q(pg, errstr,
                       "UPDATE store_apps SET bulk_chunk_size = 1001"
                       " WHERE id = 1",
                       0),
                     RW_ERR_PG_QUERY);
    assert_int_equal(q(pg, errstr,
                       "UPDATE store_apps SET redeploy_interval_days = 0"
                       " WHERE id = 1",
                       0),
                     RW_ERR_PG_QUERY);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO deployment_runs (trigger_source)"
                       " VALUES ('cron')",
                       0),
                     RW_ERR_PG_QUERY);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO outbox (topic, msg_key, payload)"
                       " VALUES ('rollwave.batches', 'k', '{}')",
                       0),
                     RW_ERR_PG_QUERY);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

/*
 * 0024: the throttle's adjustment, planned while run_targets was empty
 * and analyzed so (a fresh database, a plan kept for the session), still
 * looks each marker's target up by key once the table has filled: no
 * sequential scan of run_targets per marker, which at a million targets
 * held the fleet row for minutes. Autovacuum is off for the table so that
 * no new statistics replace the plan meanwhile.
 */
static void test_adjust_by_key(void **state)
{
    fixture_t *f = *state;
    char errstr[512];
    const char *seq = "SELECT COALESCE(sum(seq_scan), 0) AS n"
                      " FROM pg_stat_xact_user_tables"
                      " WHERE relname = 'run_targets'";
    long long before;

    rw_pg_t *pg = fresh_seeded(f);
    assert_int_equal(q(pg, errstr,
                       "ALTER TABLE run_targets SET"
                       " (autovacuum_enabled = false)",
                       0),
                     RW_OK);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO fleet_throttle (id, max_in_flight,"
                       " trigger_rate_per_min, burst, effective_limit,"
                       " tokens) VALUES (1, 100, 60, 10, 100, 10)",
                       0),
                     RW_OK);
    assert_int_equal(q(pg, errstr, "ANALYZE run_targets", 0), RW_OK);
    assert_int_equal(q(pg, errstr, "ANALYZE target_in_flight", 0), RW_OK);
    /* planned now, with both tables empty */
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM rw_throttle_adjust(0)", "n"), 1);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO app_instances (id, name, store_app_id,"
                       " status) SELECT i, 'inst' || i, 1,"
                       " 'running-healthy-claimed'"
                       " FROM generate_series(2, 2001) AS i",
                       0),
                     RW_OK);
    assert_int_equal(q(pg, errstr,
                       "INSERT INTO run_targets (run_id, instance_id, chunk,"
                       " state) SELECT 1, i, i / 50,"
                       " CASE WHEN i % 100 = 0 THEN 'claimed'"
                       " ELSE 'succeeded' END"
                       " FROM generate_series(2, 2001) AS i",
                       0),
                     RW_OK);
    assert_int_equal(
        q_ll(pg, "SELECT count(*) AS n FROM target_in_flight", "n"), 20);
    assert_int_equal(q(pg, errstr, "BEGIN", 0), RW_OK);
    before = q_ll(pg, seq, "n");
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM rw_throttle_adjust(0)"
                          " WHERE o_adjusted",
                          "n"),
                     1);
    assert_int_equal(q_ll(pg, seq, "n"), before);
    assert_int_equal(q(pg, errstr, "COMMIT", 0), RW_OK);
    assert_int_equal(q_ll(pg,
                          "SELECT count(*) AS n FROM pg_proc"
                          " WHERE proname = 'rw_throttle_adjust'"
                          " AND 'enable_seqscan=off' = ANY (proconfig)",
                          "n"),
                     1);
    rw_pg_destroy(pg);
    rw_itest_pg_drop_db(f->dsn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_apply_to_empty_db),
        T(test_status),
        T(test_concurrent_appliers),
        T(test_rollwavectl_migrate),
        T(test_in_flight_unique_index),
        T(test_chunk_bulk_id_check),
        T(test_due_selection_uses_index),
        T(test_updated_at_follows_updates),
        T(test_in_flight_upgrade_in_place),
        T(test_in_flight_markers_many_rows),
        T(test_target_run_ref),
        T(test_touch_when),
        T(test_in_flight_elsewhere),
        T(test_in_flight_count_kept),
        T(test_instance_run_ref_cleared),
        T(test_adjust_by_key),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
