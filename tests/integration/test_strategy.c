/*
 * test_strategy: what the strategy work does against the real stack
 * (DESIGN.md section 10, "Strategies"):
 *
 *   - rw_window_open in SQL at fixed instants around the 2026 DST changes
 *     of Europe/Zurich and America/New_York, in two zones at one instant,
 *     a window crossing midnight, the group-over-app rule, and the table
 *     checks and zone trigger that keep bad windows out of the database;
 *   - rollwavectl strategy: values merged flag by flag, shown as text and
 *     JSON, every invalid value refused naming its field with nothing
 *     written, a stored strategy that no longer validates;
 *   - the scheduler leaving instances with a closed window alone (their
 *     next_redeploy_at kept) and scheduling them once it opens, a group's
 *     window over its app's, and schedule --show counting the waiting;
 *   - a manual run ignoring a closed window, and one with
 *     --respect-windows deferred by the worker in Postgres (nothing
 *     reaches Lagoon; queued again by the sweep and deferred again while
 *     closed) until the window opens;
 *   - a deferred chunk not holding its Kafka partition: another app's
 *     one-instance runs on the same partitions all complete meanwhile;
 *   - a run's own max_in_flight held at Lagoon's side, and another run
 *     without limit finishing while the limited one still runs.
 *
 * Windows are built around the current time in a zone (open: the hour
 * either side of now; closed: two hours ahead), so no clock is faked.
 * Each scenario with daemons runs a small fleet of its own and ends with
 * the shared invariant check.
 */
#include "rw_itest.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "rw_itest_fleet.h"
#include "rw_itest_pg.h"
#include "rw_pg.h"

static char scratch_dsn[512]; /* the SQL scenario's database */

/* A deadline for this build: sanitized daemons are several times slower. */
static long long deadline_ms(long long ms)
{
    const char *v = getenv("RW_SANITIZED");
    bool sanitized = RW_ITEST_ASAN || (v && *v && strcmp(v, "0") != 0);

    return sanitized ? 2 * ms : ms;
}

static int teardown(void **state)
{
    rw_itest_fleet_destroy(*state);
    *state = NULL;
    if (scratch_dsn[0]) {
        rw_itest_pg_drop_db(scratch_dsn);
        scratch_dsn[0] = '\0';
    }
    return 0;
}

/* ---- helpers ---- */

/* rollwavectl with up to 10 arguments; stdout in out, stderr in err. */
static int ctl(rw_itest_fleet_t *f, const char *const *args, char *out,
               size_t outlen, char *err, size_t errlen)
{
    const char *argv[12] = {"rollwavectl"};
    int n = 1;

    while (args[n - 1] && n < 11) {
        argv[n] = args[n - 1];
        n++;
    }
    argv[n] = NULL;
    return rw_itest_fleet_run_err(f, argv, out, outlen, err, errlen);
}

/* rollwavectl that must succeed; its stdout in out. */
static void ctl_ok(rw_itest_fleet_t *f, const char *const *args, char *out,
                   size_t outlen)
{
    char err[2048] = "";
    int rc = ctl(f, args, out, outlen, err, sizeof(err));

    if (rc != 0)
        fail_msg("rollwavectl %s %s %s ... exited %d: %s", args[0],
                 args[1] ? args[1] : "", args[1] && args[2] ? args[2] : "", rc,
                 err);
}

/*
 * A window of every day in zone, opening off minutes from now (local) and
 * lasting len minutes, as rollwavectl reads it.
 */
static void window_rel(rw_itest_fleet_t *f, const char *zone, int off, int len,
                       char *buf, size_t buflen)
{
    const char *p[1] = {zone};
    long long now = rw_itest_fleet_ll(
        f,
        "SELECT (EXTRACT(hour FROM now() AT TIME ZONE $1::text) * 60"
        " + EXTRACT(minute FROM now() AT TIME ZONE $1::text))::int",
        1, p);
    int from = (int)(((now + off) % 1440 + 1440) % 1440);
    int to = (from + len) % 1440;

    snprintf(buf, buflen, "%s Mon-Sun %02d:%02d-%02d:%02d", zone, from / 60,
             from % 60, to / 60, to % 60);
}

static void set_app_window(rw_itest_fleet_t *f, long long app,
                           const char *window)
{
    char app_s[24], out[4096];
    const char *args[] = {"strategy", "--store-app", app_s,
                          "--window", window,        NULL};

    snprintf(app_s, sizeof(app_s), "%lld", app);
    ctl_ok(f, args, out, sizeof(out));
}

static void redeploy(rw_itest_fleet_t *f, long long app, bool respect)
{
    char app_s[24], out[4096];
    const char *args[] = {"redeploy", "--store-app",
                          app_s,      "--by",
                          "itest",    respect ? "--respect-windows" : NULL,
                          NULL};

    snprintf(app_s, sizeof(app_s), "%lld", app);
    ctl_ok(f, args, out, sizeof(out));
}

/* Start n workers and pollers and wait until each has its partitions. */
static pid_t start_daemons(rw_itest_fleet_t *f)
{
    pid_t pids[2];
    long long deadline = rw_itest_now_ms() + deadline_ms(30000);

    pids[0] = rw_itest_fleet_start(f, "rollwave-worker", "worker");
    pids[1] = rw_itest_fleet_start(f, "rollwave-poller", "poller");
    for (int i = 0; i < 2; i++)
        while (
            !rw_itest_fleet_log_has(f, pids[i], "event=partitions_assigned")) {
            rw_itest_fleet_poll_kids(f);
            if (rw_itest_now_ms() > deadline) {
                rw_itest_fleet_dump_logs(f);
                fail_msg("daemon %d got no partitions within 30 s", i);
            }
            rw_itest_sleep_ms(50);
        }
    return pids[0];
}

/*
 * The producer, for its recovery sweep (it queues deferred chunks again),
 * sweeping every second; its tick is left to the scenario (apps made by
 * quiet_app are not scheduled).
 */
static pid_t start_producer(rw_itest_fleet_t *f)
{
    return rw_itest_fleet_start(f, "rollwave-producer", "producer");
}

static void sweep_settings(rw_itest_fleet_t *f)
{
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_INTERVAL_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_TICK_INTERVAL_S", "86400");
}

/* A store app the scheduler leaves alone: runs come from redeploy. */
static long long quiet_app(rw_itest_fleet_t *f, long long chunk_size)
{
    long long app = rw_itest_fleet_add_app(f, chunk_size);
    char app_s[24];
    const char *p[1] = {app_s};

    snprintf(app_s, sizeof(app_s), "%lld", app);
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE store_apps SET redeploy_enabled = false"
                             " WHERE id = $1::bigint",
                             1, p));
    return app;
}

/*
 * The partition librdkafka's default partitioner (consistent_random:
 * CRC-32 of the key) gives a keyed message among parts.
 */
static int partition_of(const char *key, int parts)
{
    unsigned long crc = 0xffffffffUL;

    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        crc ^= *p;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320UL & (0UL - (crc & 1UL)));
    }
    return (int)((crc ^ 0xffffffffUL) % (unsigned long)parts);
}

static void finish(rw_itest_fleet_t *f)
{
    rw_itest_fleet_check(f);
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM throttle_leases", 0, NULL),
        0);
    rw_itest_fleet_stop_all(f);
    rw_itest_fleet_scan_logs(f);
}

/* ---- 1. windows in SQL ---- */

static void test_window_sql(void **state)
{
    /* days: bit 0 Monday .. bit 6 Sunday (64) */
    static const struct {
        const char *tz;
        int days, from, to;
        const char *at;
        bool want;
    } cases[] = {
        /* Zurich springs forward Sun 29 Mar 2026 at 01:00Z (02:00 CET ->
         * 03:00 CEST): Sun 02:00-04:00 opens at 03:00 local, lasts 1 h */
        {"Europe/Zurich", 64, 120, 240, "2026-03-29 00:30Z", false},
        {"Europe/Zurich", 64, 120, 240, "2026-03-29 01:00Z", true},
        {"Europe/Zurich", 64, 120, 240, "2026-03-29 01:59Z", true},
        {"Europe/Zurich", 64, 120, 240, "2026-03-29 02:00Z", false},
        /* falls back Sun 25 Oct 2026 at 01:00Z: 02:00-03:00 happens twice */
        {"Europe/Zurich", 64, 120, 180, "2026-10-24 23:59Z", false},
        {"Europe/Zurich", 64, 120, 180, "2026-10-25 00:30Z", true},
        {"Europe/Zurich", 64, 120, 180, "2026-10-25 01:30Z", true},
        {"Europe/Zurich", 64, 120, 180, "2026-10-25 02:00Z", false},
        /* office hours follow the wall clock across the change */
        {"Europe/Zurich", 31, 540, 1020, "2026-03-27 15:30Z", true},
        {"Europe/Zurich", 31, 540, 1020, "2026-03-30 15:30Z", false},
        {"Europe/Zurich", 31, 540, 1020, "2026-03-30 07:30Z", true},
        /* New York springs forward Sun 8 Mar 2026 at 07:00Z */
        {"America/New_York", 64, 60, 180, "2026-03-08 06:30Z", true},
        {"America/New_York", 64, 60, 180, "2026-03-08 07:00Z", false},
        /* and falls back Sun 1 Nov 2026 at 06:00Z: 01:xx twice */
        {"America/New_York", 64, 60, 120, "2026-11-01 05:30Z", true},
        {"America/New_York", 64, 60, 120, "2026-11-01 06:30Z", true},
        {"America/New_York", 64, 60, 120, "2026-11-01 07:00Z", false},
        /* one instant (Wed 1 Jul 2026 12:00Z), two zones: 14:00 in
         * Zurich, 08:00 in New York */
        {"Europe/Zurich", 4, 780, 900, "2026-07-01 12:00Z", true},
        {"America/New_York", 4, 780, 900, "2026-07-01 12:00Z", false},
        {"America/New_York", 4, 420, 540, "2026-07-01 12:00Z", true},
        /* crossing midnight belongs to the day it opens: Sat 22:00-02:00
         * is open at 01:30 CET on Sunday 29 Mar, closed on Saturday's
         * small hours and once the change skips to 03:00 */
        {"Europe/Zurich", 32, 1320, 120, "2026-03-29 00:30Z", true},
        {"Europe/Zurich", 32, 1320, 120, "2026-03-28 00:30Z", false},
        {"Europe/Zurich", 32, 1320, 120, "2026-03-29 01:00Z", false},
        {"Europe/Zurich", 32, 1320, 120, "2026-03-28 21:30Z", true},
        /* no window: always open */
        {NULL, 0, 0, 0, "2026-03-29 00:30Z", true},
    };
    rw_pg_t *pg;
    PGresult *res = NULL;
    char errstr[512];
    long long app, grp;

    (void)state;
    rw_itest_pg_fresh_db(scratch_dsn, sizeof(scratch_dsn));
    pg = rw_itest_pg_connect(scratch_dsn);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char d[8], fr[8], to[8];
        const char *p[5] = {cases[i].tz, d, fr, to, cases[i].at};

        snprintf(d, sizeof(d), "%d", cases[i].days);
        snprintf(fr, sizeof(fr), "%d", cases[i].from);
        snprintf(to, sizeof(to), "%d", cases[i].to);
        if (rw_pg_exec(pg,
                       "SELECT rw_window_open($1::text, $2::smallint,"
                       " $3::smallint, $4::smallint, $5::timestamptz) AS o",
                       5, p, &res, errstr, sizeof(errstr)))
            fail_msg("case %zu: %s", i, errstr);
        if (rw_pg_bool(res, 0, "o", -1) != cases[i].want)
            fail_msg("case %zu: %s days %d %d-%d at %s: want %s", i,
                     cases[i].tz ? cases[i].tz : "(none)", cases[i].days,
                     cases[i].from, cases[i].to, cases[i].at,
                     cases[i].want ? "open" : "closed");
        PQclear(res);
        res = NULL;
    }

    /* a group's window wins over its app's; no group window: the app's */
    assert_int_equal(rw_pg_exec(pg,
                                "INSERT INTO store_apps (name, window_tz,"
                                " window_days, window_from_min,"
                                " window_to_min)"
                                " VALUES ('a', 'UTC', 127, 0, 60)"
                                " RETURNING id",
                                0, NULL, &res, errstr, sizeof(errstr)),
                     RW_OK);
    app = rw_pg_ll(res, 0, "id", 0);
    PQclear(res);
    assert_int_equal(rw_pg_exec(pg,
                                "INSERT INTO user_groups (name, window_tz,"
                                " window_days, window_from_min,"
                                " window_to_min)"
                                " VALUES ('g', 'UTC', 127, 600, 660)"
                                " RETURNING id",
                                0, NULL, &res, errstr, sizeof(errstr)),
                     RW_OK);
    grp = rw_pg_ll(res, 0, "id", 0);
    PQclear(res);
    {
        char app_s[24], grp_s[24];
        const char *p[2] = {app_s, grp_s};
        snprintf(app_s, sizeof(app_s), "%lld", app);
        snprintf(grp_s, sizeof(grp_s), "%lld", grp);
        assert_int_equal(
            rw_pg_exec(pg,
                       "SELECT"
                       " rw_instance_window_open($2::bigint, a.window_tz,"
                       "   a.window_days, a.window_from_min, a.window_to_min,"
                       "   '2026-07-01 10:30Z') AS grp_at_1030,"
                       " rw_instance_window_open($2::bigint, a.window_tz,"
                       "   a.window_days, a.window_from_min, a.window_to_min,"
                       "   '2026-07-01 00:30Z') AS grp_at_0030,"
                       " rw_instance_window_open(NULL, a.window_tz,"
                       "   a.window_days, a.window_from_min, a.window_to_min,"
                       "   '2026-07-01 00:30Z') AS app_at_0030"
                       " FROM store_apps a WHERE a.id = $1::bigint",
                       2, p, &res, errstr, sizeof(errstr)),
            RW_OK);
        assert_true(rw_pg_bool(res, 0, "grp_at_1030", 0));
        assert_false(rw_pg_bool(res, 0, "grp_at_0030", 1));
        assert_true(rw_pg_bool(res, 0, "app_at_0030", 0));
        PQclear(res);
        res = NULL;
        /* a group without a window defers to the app */
        assert_int_equal(
            rw_pg_exec(pg,
                       "UPDATE user_groups SET window_tz = NULL,"
                       " window_days = NULL, window_from_min = NULL,"
                       " window_to_min = NULL WHERE id = $2::bigint"
                       " AND $1::bigint > 0",
                       2, p, NULL, errstr, sizeof(errstr)),
            RW_OK);
        assert_int_equal(
            rw_pg_exec(pg,
                       "SELECT rw_instance_window_open($2::bigint,"
                       " a.window_tz, a.window_days, a.window_from_min,"
                       " a.window_to_min, '2026-07-01 00:30Z') AS o"
                       " FROM store_apps a WHERE a.id = $1::bigint",
                       2, p, &res, errstr, sizeof(errstr)),
            RW_OK);
        assert_true(rw_pg_bool(res, 0, "o", 0));
        PQclear(res);
        res = NULL;
    }

    /* nothing bad gets stored, whoever writes it */
    assert_int_not_equal(rw_pg_exec(pg,
                                    "UPDATE store_apps SET window_tz ="
                                    " 'Mars/Olympus'",
                                    0, NULL, NULL, errstr, sizeof(errstr)),
                         RW_OK);
    assert_non_null(strstr(errstr, "window time zone 'Mars/Olympus' is not "
                                   "known"));
    assert_int_not_equal(rw_pg_exec(pg,
                                    "INSERT INTO user_groups (name,"
                                    " window_tz) VALUES ('h', 'UTC')",
                                    0, NULL, NULL, errstr, sizeof(errstr)),
                         RW_OK);
    assert_non_null(strstr(errstr, "window_all_or_none"));
    assert_int_not_equal(rw_pg_exec(pg,
                                    "UPDATE store_apps SET window_to_min ="
                                    " window_from_min",
                                    0, NULL, NULL, errstr, sizeof(errstr)),
                         RW_OK);
    assert_non_null(strstr(errstr, "window_values"));
    assert_int_not_equal(rw_pg_exec(pg, "UPDATE store_apps SET window_days = 0",
                                    0, NULL, NULL, errstr, sizeof(errstr)),
                         RW_OK);
    rw_pg_destroy(pg);
}

/* ---- 2. rollwavectl strategy ---- */

/* Strategy and window columns of store app app, as one string. */
static void app_row(rw_itest_fleet_t *f, long long app, char *buf, size_t len)
{
    char app_s[24];
    const char *p[1] = {app_s};
    PGresult *res;

    snprintf(app_s, sizeof(app_s), "%lld", app);
    res = rw_itest_fleet_q(
        f,
        "SELECT concat_ws('|', COALESCE(strategy, '-'),"
        " COALESCE(window_tz, '-'), window_days, window_from_min,"
        " window_to_min) AS r FROM store_apps WHERE id = $1::bigint",
        1, p);
    snprintf(buf, len, "%s", rw_pg_str(res, 0, "r"));
    PQclear(res);
}

static json_t *show_json(rw_itest_fleet_t *f, const char *kind, long long id)
{
    char id_s[24], out[8192];
    const char *args[] = {"strategy", kind, id_s, "--show", "--json", NULL};
    json_t *o;

    snprintf(id_s, sizeof(id_s), "%lld", id);
    ctl_ok(f, args, out, sizeof(out));
    o = json_loads(out, 0, NULL);
    if (!o)
        fail_msg("strategy --show --json printed no JSON: %s", out);
    return o;
}

static const char *jstr(json_t *o, const char *path)
{
    json_t *v = json_object_get(o, path);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void test_strategy_cli(void **state)
{
    static const struct {
        const char *opt, *val, *want;
    } bad[] = {
        {"--waves", "10%,60%,50%,100%",
         "strategy.waves[2]: 50% is not above the previous wave (60%)"},
        {"--waves", "1,150%", "strategy.waves[1]: 150% is over 100%"},
        {"--waves", "10%,50%", "the last wave must be 100%"},
        {"--waves", "0,100%", "strategy.waves[0]"},
        {"--bake", "-5m", "strategy.bake: -5m is negative"},
        {"--bake", "soon", "strategy.bake"},
        {"--on-failure", "retry", "strategy.on_failure"},
        {"--max-in-flight", "0", "strategy.max_in_flight"},
        {"--max-failures-wave", "101%", "strategy.max_failures_wave"},
        {"--max-failures-run", "-1", "strategy.max_failures_run"},
        {"--health-url", "example.com/healthz", "strategy.health.url"},
        {"--health-attempts", "0", "strategy.health.attempts"},
        {"--health-interval", "99999", "strategy.health.interval_s"},
        /* attempts without a URL, with the stored strategy having none */
        {"--health-attempts", "5", "strategy.health.url: missing"},
        {"--window", "Mars/Olympus Mon-Fri 02:00-05:00",
         "window: time zone 'Mars/Olympus' is not known"},
        {"--window", "UTC Sat- 02:00-05:00", "window: 'Sat-' is not a day"},
        {"--window", "UTC Mon-Fri 24:00-05:00", "window: "},
        {"--window", "UTC Mon-Fri 02:00-02:00", "window: "},
        {"--frobnicate", "1", "unknown or incomplete argument"},
    };
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 0);
    char app_s[24], grp_s[24], before[2048], after[2048];
    char out[8192], err[4096];
    long long app, grp;
    json_t *o, *st;

    *state = f;
    app = rw_itest_fleet_add_app(f, 0);
    grp = rw_itest_fleet_ll(f,
                            "INSERT INTO user_groups (name) VALUES ('g')"
                            " RETURNING id",
                            0, NULL);
    snprintf(app_s, sizeof(app_s), "%lld", app);
    snprintf(grp_s, sizeof(grp_s), "%lld", grp);

    {
        const char *a[] = {"strategy",   "--store-app", app_s, "--waves",
                           "1,50%,100%", "--bake",      "10m", "--by",
                           "alice",      NULL};
        ctl_ok(f, a, out, sizeof(out));
        assert_non_null(strstr(out, "1, 50%, 100%"));
    }
    /* a flag changes what it names and nothing else */
    {
        const char *a[] = {"strategy",        "--store-app", app_s,
                           "--max-in-flight", "5",           NULL};
        ctl_ok(f, a, out, sizeof(out));
    }
    {
        const char *a[] = {"strategy",
                           "--store-app",
                           app_s,
                           "--window",
                           "Europe/Zurich mon-fri 02:00-05:00",
                           NULL};
        ctl_ok(f, a, out, sizeof(out));
    }
    o = show_json(f, "--store-app", app);
    st = json_object_get(o, "strategy");
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(st, "waves"), 1)),
        "50%");
    assert_string_equal(jstr(st, "bake"), "10m");
    assert_string_equal(jstr(st, "max_in_flight"), "5");
    assert_string_equal(jstr(o, "window"), "Europe/Zurich Mon-Fri 02:00-05:00");
    assert_string_equal(jstr(o, "updated_by"), "rollwavectl");
    json_decref(o);

    /* every bad value: exit 2, the field named, nothing written */
    app_row(f, app, before, sizeof(before));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *a[] = {"strategy", "--store-app", app_s,
                           bad[i].opt, bad[i].val,    NULL};
        int rc;

        err[0] = '\0';
        rc = ctl(f, a, out, sizeof(out), err, sizeof(err));
        app_row(f, app, after, sizeof(after));
        if (rc != 2 || !strstr(err, bad[i].want) || strcmp(before, after))
            fail_msg("strategy %s '%s': exit %d, stderr \"%s\", row %s -> "
                     "%s; want exit 2 saying \"%s\" and no change",
                     bad[i].opt, bad[i].val, rc, err, before, after,
                     bad[i].want);
    }

    /* the group override: set, shown, bad zone refused, removed */
    {
        const char *a[] = {"strategy",
                           "--user-group",
                           grp_s,
                           "--window",
                           "America/New_York Sat-Sun 22:00-02:00",
                           NULL};
        ctl_ok(f, a, out, sizeof(out));
    }
    o = show_json(f, "--user-group", grp);
    assert_string_equal(jstr(o, "window"),
                        "America/New_York Sat-Sun 22:00-02:00");
    json_decref(o);
    {
        const char *a[] = {"strategy",
                           "--user-group",
                           grp_s,
                           "--window",
                           "Nowhere/Land Mon 01:00-02:00",
                           NULL};
        assert_int_equal(ctl(f, a, out, sizeof(out), err, sizeof(err)), 2);
        assert_non_null(strstr(err, "window: time zone 'Nowhere/Land'"));
    }
    o = show_json(f, "--user-group", grp);
    assert_string_equal(jstr(o, "window"),
                        "America/New_York Sat-Sun 22:00-02:00");
    json_decref(o);
    {
        const char *a[] = {"strategy", "--user-group", grp_s, "--no-window",
                           NULL};
        ctl_ok(f, a, out, sizeof(out));
    }
    o = show_json(f, "--user-group", grp);
    assert_true(json_is_null(json_object_get(o, "window")));
    json_decref(o);

    /* a stored strategy that no longer validates: shown raw with the
     * reason, not merged into, replaced with --clear (the window stays) */
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE store_apps SET strategy = '{\"foo\":1}'"
                             " WHERE id = $1::bigint",
                             1, (const char *const[]){app_s}));
    {
        const char *a[] = {"strategy", "--store-app", app_s, "--show", NULL};
        assert_int_equal(ctl(f, a, out, sizeof(out), err, sizeof(err)), 1);
        assert_non_null(strstr(out, "{\"foo\":1}"));
        assert_non_null(strstr(err, "strategy: unknown key 'foo'"));
    }
    {
        const char *a[] = {"strategy", "--store-app", app_s,
                           "--bake",   "5m",          NULL};
        assert_int_equal(ctl(f, a, out, sizeof(out), err, sizeof(err)), 1);
        assert_non_null(strstr(err, "--clear"));
    }
    {
        const char *a[] = {"strategy", "--store-app", app_s,
                           "--clear",  "--bake",      "5m",
                           "--by",     "bob",         NULL};
        ctl_ok(f, a, out, sizeof(out));
    }
    app_row(f, app, after, sizeof(after));
    assert_string_equal(after, "{\"bake\":\"5m\"}|Europe/Zurich|31|120|300");
    {
        const char *a[] = {"strategy", "--store-app", app_s,
                           "--clear",  "--no-window", NULL};
        ctl_ok(f, a, out, sizeof(out));
    }
    app_row(f, app, after, sizeof(after));
    assert_string_equal(after, "-|-");

    /* the command is listed */
    {
        const char *a[] = {"--help", NULL};
        ctl_ok(f, a, out, sizeof(out));
        assert_non_null(strstr(out, "strategy"));
    }
}

/* ---- 3. the scheduler and windows ---- */

static long long count_of(rw_itest_fleet_t *f, const char *sql)
{
    return rw_itest_fleet_ll(f, sql, 0, NULL);
}

static void next_due(rw_itest_fleet_t *f, const char *sql, char *buf,
                     size_t len)
{
    PGresult *res = rw_itest_fleet_q(f, sql, 0, NULL);
    const char *v = rw_pg_str(res, 0, "string_agg");

    snprintf(buf, len, "%s", v ? v : "");
    PQclear(res);
}

/*
 * Six due instances; two of them in a group whose window is open, the
 * app's window closed: one scheduled run of the two, the four keep their
 * next_redeploy_at and show as waiting for their window. With the app's
 * window open, the next tick schedules them.
 */
static void test_schedule_windows(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 5);
    char grp_s[24], win[128], out[8192], before[4096], after[4096];
    long long app, grp;
    json_t *arr, *row = NULL;
    size_t i;
    static const char SQL_NEXT[] =
        "SELECT string_agg(id || '=' || next_redeploy_at, ',' ORDER BY id)"
        " FROM app_instances WHERE user_group_id IS NULL";

    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_MS", "200");
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_INTERVAL_MS", "200");
    app = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "win", 6);
    grp = count_of(f, "INSERT INTO user_groups (name) VALUES ('g')"
                      " RETURNING id");
    snprintf(grp_s, sizeof(grp_s), "%lld", grp);
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE app_instances SET next_redeploy_at ="
                             " date_trunc('second', now()) - interval '1 h',"
                             " user_group_id = CASE WHEN name IN"
                             " ('win1', 'win2') THEN $1::bigint END",
                             1, (const char *const[]){grp_s}));
    rw_itest_fleet_snapshot(f);
    window_rel(f, "Asia/Tokyo", 120, 60, win, sizeof(win));
    set_app_window(f, app, win);
    window_rel(f, "America/New_York", -60, 120, win, sizeof(win));
    {
        const char *a[] = {"strategy", "--user-group", grp_s, "--window", win,
                           NULL};
        ctl_ok(f, a, out, sizeof(out));
    }
    {
        const char *a[] = {"schedule", "--show", "--json", NULL};
        ctl_ok(f, a, out, sizeof(out));
    }
    arr = json_loads(out, 0, NULL);
    assert_non_null(arr);
    json_array_foreach(arr, i, row)
    {
        if (json_integer_value(json_object_get(row, "store_app_id")) == app)
            break;
    }
    assert_non_null(row);
    assert_int_equal(json_integer_value(json_object_get(row, "due")), 6);
    assert_int_equal(
        json_integer_value(json_object_get(row, "waiting_for_window")), 4);
    json_decref(arr);

    next_due(f, SQL_NEXT, before, sizeof(before));
    start_daemons(f);
    rw_itest_fleet_tick(f);
    rw_itest_fleet_wait_final(f, 1, deadline_ms(30000));
    assert_int_equal(count_of(f, "SELECT count(*) FROM deployment_runs"), 1);
    assert_int_equal(count_of(f, "SELECT count(*) FROM run_targets t"
                                 " JOIN app_instances i ON i.id ="
                                 " t.instance_id"
                                 " WHERE i.user_group_id IS NOT NULL"
                                 " AND t.state = 'succeeded'"),
                     2);
    assert_int_equal(count_of(f, "SELECT count(*) FROM run_targets t"
                                 " JOIN app_instances i ON i.id ="
                                 " t.instance_id"
                                 " WHERE i.user_group_id IS NULL"),
                     0);
    assert_int_equal(count_of(f, "SELECT count(*) FROM deployment_runs"
                                 " WHERE respect_windows"),
                     1);
    next_due(f, SQL_NEXT, after, sizeof(after));
    assert_string_equal(before, after);

    /* the window opens: the next tick takes the four */
    window_rel(f, "Asia/Tokyo", -30, 60, win, sizeof(win));
    set_app_window(f, app, win);
    rw_itest_fleet_tick(f);
    rw_itest_fleet_wait_final(f, 2, deadline_ms(30000));
    assert_int_equal(count_of(f, "SELECT count(*) FROM run_targets"
                                 " WHERE state = 'succeeded'"),
                     6);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"), 6);
    finish(f);
}

/* ---- 4. manual runs and windows ---- */

/* Pending chunks of respect_windows runs deferred for their window. */
static const char SQL_DEFERRED_WINDOW[] =
    "SELECT count(*) FROM run_chunks c"
    " JOIN deployment_runs r ON r.id = c.run_id"
    " WHERE r.respect_windows AND c.state = 'pending'"
    "   AND c.not_before > now()"
    "   AND c.deferred_reason = 'deployment window closed'";

/*
 * A closed window: a manual run goes anyway; one with --respect-windows is
 * deferred by the worker in Postgres (its batch acknowledged, nothing
 * reaches Lagoon, the fleet throttle's waiting stamp untouched); the sweep
 * queues it again after ROLLWAVE_WINDOW_WAIT_MS and the worker defers it
 * again while the window stays closed; once the window opens it goes.
 */
static void test_manual_respect_windows(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 3);
    char win[128], out[16384], run[40], first[64];
    long long app;
    pid_t producer;
    PGresult *res;

    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_MS", "200");
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_INTERVAL_MS", "200");
    rw_itest_fleet_set(f, "ROLLWAVE_WINDOW_WAIT_MS", "1500");
    sweep_settings(f);
    app = quiet_app(f, 0);
    rw_itest_fleet_add_instances(f, app, "man", 6);
    rw_itest_fleet_snapshot(f);
    window_rel(f, "Europe/Zurich", 120, 60, win, sizeof(win));
    set_app_window(f, app, win);
    producer = start_producer(f);
    start_daemons(f);

    redeploy(f, app, false);
    rw_itest_fleet_wait_final(f, 1, deadline_ms(30000));
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"), 6);

    redeploy(f, app, true);
    rw_itest_fleet_wait_count(f, SQL_DEFERRED_WINDOW, 2, deadline_ms(20000),
                              "both chunks deferred for their window");
    /* queued again by the sweep, deferred again by the worker: a later
     * not_before than the first deferral's */
    res = rw_itest_fleet_q(f,
                           "SELECT max(not_before)::text FROM run_chunks"
                           " WHERE not_before IS NOT NULL",
                           0, NULL);
    snprintf(first, sizeof(first), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    {
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "SELECT count(*) FROM run_chunks c"
                 " JOIN deployment_runs r ON r.id = c.run_id"
                 " WHERE r.respect_windows AND c.state = 'pending'"
                 "   AND c.not_before > '%s'::timestamptz",
                 first);
        rw_itest_fleet_wait_count(f, sql, 2, deadline_ms(20000),
                                  "chunks deferred a second time");
    }
    assert_true(rw_itest_fleet_log_has(f, producer, "event=deferred_requeued"));
    /* nothing of the second run triggered, no partition held */
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"), 6);
    assert_int_equal(count_of(f, "SELECT count(*) FROM run_targets t"
                                 " JOIN deployment_runs r ON r.id = t.run_id"
                                 " WHERE r.respect_windows"
                                 " AND t.state <> 'pending'"),
                     0);
    assert_int_equal(count_of(f, "SELECT count(*) FROM fleet_throttle"
                                 " WHERE waiting_seen_at IS NOT NULL"),
                     0);
    /* run show lists the deferral */
    res = rw_itest_fleet_q(f,
                           "SELECT uuid::text FROM deployment_runs"
                           " WHERE respect_windows",
                           0, NULL);
    snprintf(run, sizeof(run), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    {
        const char *a[] = {"run", "show", run, NULL};
        ctl_ok(f, a, out, sizeof(out));
        assert_non_null(strstr(out, "DEFERRED UNTIL"));
        assert_non_null(strstr(out, "deployment window closed"));
    }

    window_rel(f, "Europe/Zurich", -30, 60, win, sizeof(win));
    set_app_window(f, app, win);
    rw_itest_fleet_wait_final(f, 2, deadline_ms(30000));
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"), 12);
    finish(f);
}

/*
 * The review's case: app A's --respect-windows run of three one-instance
 * chunks is deferred for a closed window; app B (no window) gets one-
 * instance manual runs until at least four of them share a partition with
 * A's chunks. Every run of B completes while A stays deferred and
 * untriggered; the window opens, the sweep queues A again, A completes.
 */
static void test_deferred_frees_partition(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(
        "{\"rows_delay_ms\":50,\"phase_ms\":30,\"build_min_ms\":50,"
        "\"build_max_ms\":100}",
        1);
    char win[128], key[80];
    bool a_part[6] = {false};
    long long app_a, app_b, b_runs = 0, shared = 0;
    PGresult *res;

    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_MS", "200");
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_INTERVAL_MS", "200");
    rw_itest_fleet_set(f, "ROLLWAVE_WINDOW_WAIT_MS", "2000");
    sweep_settings(f);
    app_a = quiet_app(f, 0);
    app_b = quiet_app(f, 0);
    rw_itest_fleet_add_instances(f, app_a, "wa", 3);
    rw_itest_fleet_add_instances(f, app_b, "nb", 40);
    rw_itest_fleet_snapshot(f);
    window_rel(f, "UTC", 120, 60, win, sizeof(win));
    set_app_window(f, app_a, win);

    redeploy(f, app_a, true);
    res = rw_itest_fleet_q(f,
                           "SELECT r.uuid::text || ':' || c.chunk"
                           " FROM run_chunks c"
                           " JOIN deployment_runs r ON r.id = c.run_id",
                           0, NULL);
    for (int i = 0; i < PQntuples(res); i++)
        a_part[partition_of(PQgetvalue(res, i, 0), 6)] = true;
    PQclear(res);
    /* B's runs, one instance each, until four share A's partitions */
    for (int k = 1; k <= 40 && shared < 4; k++) {
        char name[16], out[4096];
        const char *p[1] = {name};
        const char *a[] = {"redeploy", "--instances", NULL,
                           "--by",     "itest",       NULL};
        char id_s[24];

        snprintf(name, sizeof(name), "nb%d", k);
        snprintf(id_s, sizeof(id_s), "%lld",
                 rw_itest_fleet_ll(f,
                                   "SELECT id FROM app_instances"
                                   " WHERE name = $1::text",
                                   1, p));
        a[2] = id_s;
        ctl_ok(f, a, out, sizeof(out));
        b_runs++;
        res = rw_itest_fleet_q(f,
                               "SELECT r.uuid::text || ':' || c.chunk"
                               " FROM run_chunks c"
                               " JOIN deployment_runs r ON r.id = c.run_id"
                               " ORDER BY r.id DESC LIMIT 1",
                               0, NULL);
        snprintf(key, sizeof(key), "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        shared += a_part[partition_of(key, 6)];
    }
    assert_true(shared >= 4);
    (void)app_b;

    start_producer(f);
    start_daemons(f);
    rw_itest_fleet_wait_count(f,
                              "SELECT count(*) FROM deployment_runs"
                              " WHERE NOT respect_windows"
                              " AND status = 'completed'",
                              b_runs, deadline_ms(20000),
                              "every run of B completed");
    /* all of A's chunks wait, deferred for their window (not_before
     * itself comes and goes as the sweep re-queues them and the worker
     * defers them again) */
    assert_int_equal(count_of(f, "SELECT count(*) FROM run_chunks c"
                                 " JOIN deployment_runs r ON r.id = c.run_id"
                                 " WHERE r.respect_windows"
                                 "   AND c.state = 'pending'"
                                 "   AND c.deferred_reason ="
                                 "       'deployment window closed'"),
                     3);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"),
                     b_runs);

    window_rel(f, "UTC", -30, 60, win, sizeof(win));
    set_app_window(f, app_a, win);
    rw_itest_fleet_wait_final(f, b_runs + 1, deadline_ms(20000));
    assert_int_equal(count_of(f, "SELECT count(*) FROM deployment_runs"
                                 " WHERE status = 'completed'"),
                     b_runs + 1);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"),
                     b_runs + 3);
    finish(f);
}

/* ---- 5. the run's own limit ---- */

/*
 * 16 instances in chunks of 2, strategy.max_in_flight 25% (4), builds of
 * 0.6-0.9 s, the fleet unthrottled: Lagoon never has more than 4 of the
 * run in progress, and chunks past the limit are deferred in Postgres
 * (queued again by the sweep), not held in Kafka: a run of another app
 * without limit, created after it, completes while it still runs.
 */
static void test_run_max_in_flight(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(
        "{\"rows_delay_ms\":100,\"phase_ms\":50,\"build_min_ms\":600,"
        "\"build_max_ms\":900}",
        2);
    char app_s[24], out[4096];
    long long app, other, peak;
    pid_t worker;

    *state = f;
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_MS", "200");
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_INTERVAL_MS", "200");
    rw_itest_fleet_set(f, "ROLLWAVE_THROTTLE_WAIT_MS", "50");
    rw_itest_fleet_set(f, "ROLLWAVE_RUN_LIMIT_WAIT_MS", "100");
    sweep_settings(f);
    app = quiet_app(f, 0);
    other = quiet_app(f, 0);
    snprintf(app_s, sizeof(app_s), "%lld", app);
    rw_itest_fleet_add_instances(f, app, "lim", 16);
    rw_itest_fleet_add_instances(f, other, "free", 6);
    rw_itest_fleet_snapshot(f);
    {
        const char *a[] = {"strategy",        "--store-app", app_s,
                           "--max-in-flight", "25%",         NULL};
        ctl_ok(f, a, out, sizeof(out));
    }
    redeploy(f, app, false);
    redeploy(f, other, false);
    start_producer(f);
    /* the run carries the snapshot of its app's strategy */
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE strategy::jsonb"
                                       "       ->> 'max_in_flight' = '25%'",
                                       0, NULL),
                     1);
    worker = start_daemons(f);
    rw_itest_fleet_wait_count(f,
                              "SELECT count(*) FROM deployment_runs r"
                              " JOIN store_apps a ON a.id = r.store_app_id"
                              " WHERE a.strategy IS NULL"
                              " AND r.status = 'completed'",
                              1, deadline_ms(20000),
                              "the run without limit completed");
    /* ... while the limited run still had work left */
    assert_int_equal(count_of(f, "SELECT count(*) FROM deployment_runs r"
                                 " JOIN store_apps a ON a.id = r.store_app_id"
                                 " WHERE a.strategy IS NOT NULL"
                                 " AND r.status IN ('pending', 'running')"),
                     1);
    rw_itest_fleet_wait_final(f, 2, deadline_ms(60000));

    /* the other run shares Lagoon: the limited run's peak is read from
     * its targets' times (in flight from claim to end) */
    peak = count_of(f, "SELECT max((SELECT count(*) FROM run_targets u"
                       "   WHERE u.run_id = t.run_id"
                       "   AND u.claimed_at <= t.claimed_at"
                       "   AND u.finished_at > t.claimed_at))"
                       " FROM run_targets t"
                       " JOIN deployment_runs r ON r.id = t.run_id"
                       " JOIN store_apps a ON a.id = r.store_app_id"
                       " WHERE a.strategy IS NOT NULL");
    if (peak > 4 || peak <= 0)
        fail_msg("the limited run had up to %lld targets in flight; its "
                 "limit is 4",
                 peak);
    assert_true(rw_itest_fleet_log_has(f, worker, "event=chunk_deferred"));
    assert_true(count_of(f, "SELECT count(*) FROM run_chunks"
                            " WHERE deferred_reason LIKE 'run limit:%'") > 0);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "environments_triggered"), 22);
    finish(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_window_sql, teardown),
        cmocka_unit_test_teardown(test_strategy_cli, teardown),
        cmocka_unit_test_teardown(test_schedule_windows, teardown),
        cmocka_unit_test_teardown(test_manual_respect_windows, teardown),
        cmocka_unit_test_teardown(test_deferred_frees_partition, teardown),
        cmocka_unit_test_teardown(test_run_max_in_flight, teardown),
    };

    /* a developer chasing one scenario may name it (cmocka pattern) */
    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
