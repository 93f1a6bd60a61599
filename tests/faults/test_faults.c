/*
 * test_faults: the fault suite. Each scenario drives a real rollout of at
 * least 2,000 instances (4 store apps, 2 workers, 2 pollers, a fleet of
 * its own: database, topic prefix, lagoon-sim) through the producer,
 * workers and pollers of this build, injects one kind of fault while it
 * runs, and ends with the shared invariant check (every target terminal,
 * every run finalized exactly once, no environment triggered twice for
 * one target attempt, no lock left, no status changed, no outbox row
 * unpublished, nothing dropped without a dead letter). Daemons must stop
 * with status 0 on SIGTERM, which under the sanitizer build also means
 * no leak, and their logs must hold no sanitizer report.
 *
 * Each scenario prints one line:
 *   fault=<name> instances=N faults_injected=K duplicates=D
 *   lost_targets=L leaked_locks=X seconds=T baseline_seconds=B
 * where B is a fault-free rollout of the same size measured first.
 *
 * RW_FAULTS_SOAK=1: 10,000 instances and more faults. Sanitized builds
 * (RW_SANITIZED=1, or ASan detected at compile time) keep 2,000 instances
 * and inject fewer faults. It does not test single modules (their own
 * tests do) and never edits the daemons' behaviour beyond their
 * documented configuration keys.
 */
#include "rw_itest.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rw_itest_fleet.h"
#include "rw_kafka.h"
#include "rw_settings.h"

#if defined(__SANITIZE_ADDRESS__)
#define BUILT_WITH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BUILT_WITH_ASAN 1
#endif
#endif
#ifndef BUILT_WITH_ASAN
#define BUILT_WITH_ASAN 0
#endif

#define APPS       4
#define CHUNK_SIZE 25
/* builds long enough that a fault lands while chunks are in flight */
#define SIM_TIMINGS                                                            \
    "\"rows_delay_ms\":200,\"phase_ms\":150,\"build_min_ms\":600,"             \
    "\"build_max_ms\":1800"

typedef struct sizing {
    int instances;
    int scale; /* multiplies the number of faults per scenario */
    long long final_timeout_ms;
} sizing_t;

static sizing_t size;
static double baseline_s = -1;

/* Progress measures: chunks past pending, or chunks done. */
enum progress { TRIGGERED, FINISHED };

typedef struct scen {
    rw_itest_fleet_t *f;
    const char *name;
    long long t0;
    long long faults;
} scen_t;

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static bool env_on(const char *name)
{
    const char *v = getenv(name);

    return v && *v && strcmp(v, "0") != 0;
}

static void choose_size(void)
{
    bool soak = env_on("RW_FAULTS_SOAK");
    bool sanitized = env_on("RW_SANITIZED") || BUILT_WITH_ASAN;

    size.instances = soak && !sanitized ? 10000 : 2000;
    size.scale = soak ? 3 : 1;
    size.final_timeout_ms = soak ? 900000 : sanitized ? 360000 : 240000;
}

/* ---- fleet and seeding ---- */

static rw_itest_fleet_t *new_fleet(const char *extra_sim)
{
    char sim[512], max[24];
    rw_itest_fleet_t *f;

    snprintf(sim, sizeof(sim), "{" SIM_TIMINGS "%s%s}",
             extra_sim ? "," : "", extra_sim ? extra_sim : "");
    f = rw_itest_fleet_new(sim, CHUNK_SIZE);
    snprintf(max, sizeof(max), "%d", size.instances);
    rw_itest_fleet_set(f, "ROLLWAVE_MAX_PER_RUN", max);
    /* reconciliation of a trigger in doubt within seconds, not minutes */
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_SETTLE_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_LAGOON_TIMEOUT_MS", "2000");
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_BACKOFF_BASE_MS", "100");
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_BACKOFF_MAX_MS", "1000");
    /* the recovery sweep of the producer daemon, on a test's time scale;
     * the daemon's own scheduler tick runs once, at its start */
    rw_itest_fleet_set(f, "ROLLWAVE_TICK_INTERVAL_S", "86400");
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_INTERVAL_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_POLL_STALE_S", "15");
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_PENDING_STALE_S", "30");
    return f;
}

/* APPS store apps with instances.instances eligible instances, all due. */
static void seed(rw_itest_fleet_t *f)
{
    for (int a = 0; a < APPS; a++) {
        char app_s[24], n_s[16], prefix[16];
        const char *p[3] = {app_s, prefix, n_s};
        long long app = rw_itest_fleet_ll(
            f,
            "INSERT INTO store_apps (name, redeploy_enabled,"
            "   redeploy_interval_days)"
            " VALUES ('app', true, 7) RETURNING id",
            0, NULL);

        snprintf(app_s, sizeof(app_s), "%lld", app);
        snprintf(prefix, sizeof(prefix), "f%d-", a);
        snprintf(n_s, sizeof(n_s), "%d",
                 size.instances / APPS +
                     (a < size.instances % APPS ? 1 : 0));
        PQclear(rw_itest_fleet_q(
            f,
            "INSERT INTO app_instances (name, store_app_id, status,"
            "   lagoon_project, lagoon_environment)"
            " SELECT $2 || g, $1::bigint,"
            "   CASE WHEN g % 2 = 0 THEN 'running-healthy-claimed'"
            "        ELSE 'running-healthy-unclaimed' END, $2 || g, 'main'"
            " FROM generate_series(1, $3::int) g",
            3, p));
    }
    rw_itest_fleet_snapshot(f);
}

static void start_daemons(rw_itest_fleet_t *f, int workers, int pollers)
{
    for (int i = 0; i < workers; i++)
        rw_itest_fleet_start(f, "rollwave-worker", "worker");
    for (int i = 0; i < pollers; i++)
        rw_itest_fleet_start(f, "rollwave-poller", "poller");
}

/* Fleet seeded, daemons (2 + 2) up, scheduler tick done, clock started. */
static void begin(scen_t *s, void **state, const char *name,
                  rw_itest_fleet_t *f, bool start)
{
    memset(s, 0, sizeof(*s));
    s->f = f;
    s->name = name;
    *state = f;
    seed(f);
    if (start)
        start_daemons(f, 2, 2);
    s->t0 = rw_itest_now_ms();
    rw_itest_fleet_tick(f);
    /* the leader's recovery sweep, as in production */
    if (start)
        rw_itest_fleet_start(f, "rollwave-producer", "producer");
}

/* Share of chunks (per mille) past pending or done; 1000 when final. */
static long long progress(rw_itest_fleet_t *f, enum progress what)
{
    return rw_itest_fleet_ll(
        f,
        what == TRIGGERED
            ? "SELECT COALESCE(1000 * count(*) FILTER (WHERE state <>"
              " 'pending') / NULLIF(count(*), 0), 0) FROM run_chunks"
            : "SELECT COALESCE(1000 * count(*) FILTER (WHERE state IN"
              " ('done', 'failed')) / NULLIF(count(*), 0), 0)"
              " FROM run_chunks",
        0, NULL);
}

/*
 * Wait until progress reaches permille; false when every run ended
 * first (the fault would land on a finished rollout).
 */
static bool wait_progress(scen_t *s, enum progress what, long long permille)
{
    long long deadline = rw_itest_now_ms() + size.final_timeout_ms;

    for (;;) {
        if (progress(s->f, what) >= permille)
            return true;
        if (rw_itest_fleet_all_final(s->f, APPS))
            return false;
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(s->f);
            fail_msg("%s: progress stuck below %lld per mille", s->name,
                     permille);
        }
        sleep_ms(50);
    }
}

/* Keep polling the children (respawns, early exits) for ms. */
static void hold(rw_itest_fleet_t *f, long long ms)
{
    long long end = rw_itest_now_ms() + ms;

    while (rw_itest_now_ms() < end) {
        rw_itest_fleet_poll_kids(f);
        sleep_ms(50);
    }
}

static long long lost_targets(rw_itest_fleet_t *f)
{
    return rw_itest_fleet_ll(
        f,
        "SELECT count(*) FROM app_instances i WHERE NOT EXISTS ("
        " SELECT 1 FROM run_targets t WHERE t.instance_id = i.id AND"
        "  t.state IN ('succeeded', 'failed', 'timed_out', 'skipped',"
        "  'cancelled'))",
        0, NULL);
}

static long long leaked_locks(rw_itest_fleet_t *f)
{
    long long deadline = rw_itest_now_ms() + 5000, n;

    /* the lock release follows the commit that ends a target */
    while ((n = rw_itest_fleet_lock_keys(f)) > 0 &&
           rw_itest_now_ms() < deadline)
        sleep_ms(100);
    return n;
}

/*
 * Outbox rows whose writer could not mark them published (Postgres gone
 * at that moment) are left to the daemons' sweep, which takes rows older
 * than 15 s every 10 s: give it that long before the check looks.
 */
static void wait_outbox(rw_itest_fleet_t *f)
{
    long long deadline = rw_itest_now_ms() + 40000;

    while (rw_itest_fleet_ll(f,
                             "SELECT count(*) FROM outbox"
                             " WHERE published_at IS NULL",
                             0, NULL) > 0 &&
           rw_itest_now_ms() < deadline)
        hold(f, 500);
}

/* Print the scenario's line (every run has ended). */
static double report(scen_t *s)
{
    double secs = (double)(rw_itest_now_ms() - s->t0) / 1000.0;
    char base[32];

    wait_outbox(s->f);
    if (strcmp(s->name, "none") == 0)
        baseline_s = secs;
    if (baseline_s >= 0)
        snprintf(base, sizeof(base), "%.1f", baseline_s);
    else
        snprintf(base, sizeof(base), "n/a");
    printf("fault=%s instances=%d faults_injected=%lld duplicates=%lld "
           "lost_targets=%lld leaked_locks=%lld seconds=%.1f "
           "baseline_seconds=%s\n",
           s->name, size.instances, s->faults,
           rw_itest_fleet_duplicates(s->f), lost_targets(s->f),
           leaked_locks(s->f), secs, base);
    fflush(stdout);
    return secs;
}

/*
 * Wait for every run to end, print the scenario's line, check every
 * invariant, stop the daemons (status 0 each: drained, and no leak under
 * the sanitizers) and scan their logs.
 */
static void finish(scen_t *s)
{
    rw_itest_fleet_wait_final(s->f, APPS, size.final_timeout_ms);
    report(s);
    rw_itest_fleet_check(s->f);
    assert_int_equal(lost_targets(s->f), 0);
    rw_itest_fleet_stop_all(s->f);
    rw_itest_fleet_scan_logs(s->f);
}

static int teardown(void **state)
{
    rw_itest_fleet_destroy(*state);
    *state = NULL;
    return 0;
}

/* ---- 0. the fault-free baseline ---- */

static void test_baseline(void **state)
{
    scen_t s;

    begin(&s, state, "none", new_fleet(NULL), true);
    finish(&s);
}

/* ---- 1. kill -9 of workers ---- */

static void test_worker_kill9(void **state)
{
    scen_t s;
    int kills = 4 * size.scale;

    begin(&s, state, "worker_kill9", new_fleet(NULL), true);
    for (int i = 1; i <= kills; i++) {
        pid_t pid;
        if (!wait_progress(&s, TRIGGERED, 1000LL * i / (kills + 1)))
            break;
        pid = rw_itest_fleet_running(s.f, "rollwave-worker", (size_t)(i % 2));
        if (!pid)
            fail_msg("no worker running to kill");
        rw_itest_fleet_kill9(s.f, pid, true);
        s.faults++;
    }
    assert_true(s.faults >= 2);
    finish(&s);
}

/*
 * One worker dies right after a successful Lagoon call, before recording
 * it (30 % of its triggers); it comes back each time. Redelivery must
 * find the bulk by name and adopt it: not one environment twice.
 */
static void test_worker_exit_in_trigger_window(void **state)
{
    scen_t s;
    rw_itest_fleet_t *f = new_fleet(NULL);

    /* fewer, larger chunks: each death costs a group rebalance */
    rw_itest_fleet_set(f, "ROLLWAVE_BULK_CHUNK_SIZE", "25");
    rw_itest_fleet_start_with(f, "rollwave-worker", "worker",
                              "ROLLWAVE_FAULT_EXIT_AFTER_TRIGGER_PCT", "30",
                              true);
    rw_itest_fleet_start(f, "rollwave-worker", "worker");
    start_daemons(f, 0, 2);
    begin(&s, state, "worker_exit_after_trigger", f, false);
    rw_itest_fleet_start(f, "rollwave-producer", "producer");
    rw_itest_fleet_wait_final(f, APPS, size.final_timeout_ms);
    s.faults = rw_itest_fleet_respawns(f);
    assert_true(s.faults >= 1);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "duplicate_triggers"), 0);
    assert_int_equal(rw_itest_fleet_duplicates(f), 0);
    finish(&s);
}

/* ---- 2. kill -9 of pollers and of the producer ---- */

static void test_poller_kill9(void **state)
{
    scen_t s;
    int kills = 4 * size.scale;

    begin(&s, state, "poller_kill9", new_fleet(NULL), true);
    for (int i = 1; i <= kills; i++) {
        pid_t pid;
        if (!wait_progress(&s, FINISHED, 1000LL * i / (kills + 2)))
            break;
        pid = rw_itest_fleet_running(s.f, "rollwave-poller", (size_t)(i % 2));
        if (!pid)
            fail_msg("no poller running to kill");
        rw_itest_fleet_kill9(s.f, pid, true);
        s.faults++;
    }
    assert_true(s.faults >= 2);
    finish(&s);
}

static long long due_left(rw_itest_fleet_t *f)
{
    return rw_itest_fleet_ll(f,
                             "SELECT count(*) FROM app_instances i"
                             " WHERE NOT EXISTS (SELECT 1 FROM run_targets t"
                             "   WHERE t.instance_id = i.id)",
                             0, NULL);
}

/*
 * Ticks of one eighth of the fleet each; several are killed at random
 * points (between their commit and their relay when the timing falls
 * so). Later ticks at start-up, or the daemons' sweep, relay what a
 * killed one left unpublished.
 */
static void test_producer_kill9(void **state)
{
    scen_t s;
    rw_itest_fleet_t *f = new_fleet(NULL);
    const char *argv[] = {"rollwave-producer", "--once", NULL};
    char per_run[24];
    int kills = 6 * size.scale, rounds = 0;
    long long tick_ms, stranded = 0;
    unsigned seed_v = (unsigned)getpid();

    snprintf(per_run, sizeof(per_run), "%d", size.instances / 8);
    rw_itest_fleet_set(f, "ROLLWAVE_MAX_PER_RUN", per_run);
    *state = f;
    seed(f);
    start_daemons(f, 2, 2);
    memset(&s, 0, sizeof(s));
    s.f = f;
    s.name = "producer_kill9";
    s.t0 = rw_itest_now_ms();
    rw_itest_fleet_tick(f);
    tick_ms = rw_itest_now_ms() - s.t0;
    srand(seed_v);
    for (int i = 0; i < kills; i++) {
        pid_t pid = rw_itest_fleet_spawn(f, argv);
        long long delay = tick_ms / 10 + rand() % (tick_ms * 8 / 10 + 1);

        sleep_ms((long)delay);
        if (rw_itest_fleet_alive(f, pid)) {
            rw_itest_fleet_kill9(f, pid, false);
            s.faults++;
            stranded += rw_itest_fleet_ll(f,
                                          "SELECT count(*) FROM outbox"
                                          " WHERE published_at IS NULL",
                                          0, NULL) > 0;
        } else {
            int st = rw_itest_fleet_wait(f, pid, 1000);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                fail_msg("rollwave-producer --once ended with status %d", st);
        }
    }
    /* the rest of the fleet, tick by tick, as the scheduler would */
    while (due_left(f) > 0) {
        if (++rounds > 40)
            fail_msg("%lld instances still unscheduled after 40 ticks",
                     due_left(f));
        rw_itest_fleet_tick(f);
    }
    printf("producer_kill9: %lld of %lld kills left outbox rows unpublished "
           "(seed %u)\n",
           stranded, s.faults, seed_v);
    assert_true(s.faults >= 1);
    {
        long long runs = rw_itest_fleet_ll(
            f, "SELECT count(*) FROM deployment_runs", 0, NULL);
        rw_itest_fleet_wait_final(f, runs, size.final_timeout_ms);
    }
    finish(&s);
}

/* ---- 3. Lagoon misbehaving ---- */

static long long sim_faults(rw_itest_fleet_t *f)
{
    return rw_itest_fleet_sim_stat(f, "faults.http500") +
           rw_itest_fleet_sim_stat(f, "faults.graphql_error") +
           rw_itest_fleet_sim_stat(f, "faults.slow") +
           rw_itest_fleet_sim_stat(f, "faults.drop");
}

/*
 * HTTP 500s, GraphQL errors and dropped connections through the rollout.
 * A GraphQL error on the mutation is permanent: those chunks fail and
 * their runs end partial_failed, which is correct; the invariants hold
 * all the same. With the faults cleared, `rollwavectl run retry`
 * completes them.
 */
static void test_lagoon_faults(void **state)
{
    scen_t s;
    rw_itest_fleet_t *f = new_fleet("\"fault_http500\":0.08,"
                                    "\"fault_graphql_error\":0.05,"
                                    "\"fault_drop\":0.04");
    PGresult *res;

    begin(&s, state, "lagoon_faults", f, true);
    rw_itest_fleet_wait_final(f, APPS, size.final_timeout_ms);
    s.faults = sim_faults(f);
    assert_true(s.faults > 0);
    report(&s);
    rw_itest_fleet_check(f);
    /* only the permanent errors fail a trigger for good: 5xx and drops
     * are retried until they pass */
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets"
                                       " WHERE state = 'failed' AND (error"
                                       " IS NULL OR error NOT LIKE"
                                       " '%LAGOON_GRAPHQL%')",
                                       0, NULL),
                     0);

    rw_itest_fleet_sim_config(f, "{\"fault_http500\":0,"
                                 "\"fault_graphql_error\":0,"
                                 "\"fault_drop\":0}");
    res = rw_itest_fleet_q(f,
                           "SELECT uuid::text AS uuid FROM deployment_runs"
                           " WHERE status <> 'completed' ORDER BY id",
                           0, NULL);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *argv[] = {"rollwavectl", "run", "retry",
                              rw_pg_str(res, i, "uuid"), NULL};
        char out[2048];
        int rc = rw_itest_fleet_run(f, argv, out, sizeof(out));
        if (rc != 0)
            fail_msg("rollwavectl run retry %s exited %d: %s", argv[3], rc,
                     out);
    }
    PQclear(res);
    s.name = "lagoon_faults_after_retry";
    finish(&s);
    /* after the retry every instance's last target succeeded */
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status <> 'completed'",
                                       0, NULL),
                     0);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(DISTINCT instance_id)"
                                       " FROM run_targets"
                                       " WHERE state = 'succeeded'",
                                       0, NULL),
                     size.instances);
}

/*
 * Answers slower than the client's timeout: the sim executes the call,
 * the worker sees a timeout. Calling again with the same bulk name would
 * deploy every environment of the chunk twice.
 */
static void test_lagoon_slow(void **state)
{
    scen_t s;

    begin(&s, state, "lagoon_slow",
          new_fleet("\"fault_slow\":0.1,\"slow_ms\":3000"), true);
    rw_itest_fleet_wait_final(s.f, APPS, size.final_timeout_ms);
    s.faults = sim_faults(s.f);
    assert_true(s.faults > 0);
    finish(&s);
}

/* ---- 4. Redis and Postgres restarted ---- */

static void restart_scenario(void **state, const char *name, bool pg)
{
    scen_t s;
    int restarts = 2 * size.scale;

    begin(&s, state, name, new_fleet(NULL), true);
    for (int i = 1; i <= restarts; i++) {
        if (!wait_progress(&s, TRIGGERED, 1000LL * i / (restarts + 1)))
            break;
        if (pg)
            rw_itest_fleet_restart_pg(s.f, 1000);
        else
            rw_itest_fleet_restart_redis(s.f, 1000);
        s.faults++;
        /* no daemon may have exited over it */
        rw_itest_fleet_poll_kids(s.f);
    }
    assert_true(s.faults >= 1);
    finish(&s);
}

static void test_redis_restart(void **state)
{
    restart_scenario(state, "redis_restart", false);
}

static void test_postgres_restart(void **state)
{
    restart_scenario(state, "postgres_restart", true);
}

/* ---- 5. a Kafka broker down and up ---- */

static void test_broker_down(void **state)
{
    scen_t s;
    rw_itest_fleet_t *f = new_fleet(NULL);
    int outages = 2 * size.scale;

    *state = f;
    rw_itest_fleet_private_broker(f, 3);
    begin(&s, state, "broker_down", f, true);
    for (int i = 1; i <= outages; i++) {
        if (!wait_progress(&s, TRIGGERED, 1000LL * i / (outages + 1)))
            break;
        rw_itest_fleet_broker_down(f);
        s.faults++;
        hold(f, 4000);
        rw_itest_fleet_broker_up(f);
        hold(f, 1000);
    }
    assert_true(s.faults >= 1);
    finish(&s);
}

/* ---- 6. poison messages ---- */

typedef struct poison {
    const char *topic; /* "batches" or "poll" */
    const char *what;
    const char *reason; /* the error name the dead letter must carry */
    char *payload;
    int32_t partition; /* where it landed (delivery report) */
    int64_t offset;
    bool seen;
} poison_t;

static void on_delivery(void *opaque, void *msg_opaque, rw_err_t result,
                        int32_t partition, int64_t offset, const char *errmsg)
{
    poison_t *p = msg_opaque;

    (void)opaque;
    if (result)
        fail_msg("poison %s/%s not delivered: %s", p->topic, p->what, errmsg);
    p->partition = partition;
    p->offset = offset;
}

static void kafka_settings(rw_itest_fleet_t *f, rw_settings_t *s)
{
    memset(s, 0, sizeof(*s));
    s->kafka_brokers = (char *)rw_itest_fleet_brokers(f);
    s->kafka_topic_prefix = (char *)rw_itest_fleet_prefix(f);
    s->kafka_security_protocol = "plaintext";
    /* the oversized poison is larger than librdkafka's default cap */
    s->kafka_properties = "message.max.bytes=4000000";
    s->kafka_session_timeout_ms = 6000;
    s->kafka_group = "unused";
}

static char *big_payload(const char *type)
{
    size_t n = 1024 * 1024 + 4096;
    char *p = malloc(n + 200);
    int off;

    assert_non_null(p);
    off = snprintf(p, 200, "{\"v\":1,\"type\":\"%s\",\"pad\":\"", type);
    memset(p + off, 'x', n);
    snprintf(p + off + n, 8, "\"}");
    return p;
}

/* The poison set; oversized ones only, or all but those. */
static size_t make_poison(poison_t *p, bool oversized)
{
    static const char unknown_run[] = "00000000-0000-4000-8000-00000000dead";
    static const char batch_tail[] =
        ",\"chunk\":0,\"attempt\":1,\"store_app_id\":1,"
        "\"variables_only\":false,\"targets\":[{\"instance_id\":1,"
        "\"project\":\"p\",\"environment\":\"main\"}]}";
    static const char poll_tail[] =
        ",\"chunk\":0,\"bulk_id\":\"b\",\"attempt\":1,"
        "\"due_at\":\"2020-01-01T00:00:00.000Z\"}";
    char buf[600];
    size_t n = 0;

#define POISON(t, w, r, text)                                                  \
    do {                                                                       \
        p[n].topic = (t);                                                      \
        p[n].what = (w);                                                       \
        p[n].reason = (r);                                                     \
        p[n].payload = (text);                                                 \
        assert_non_null(p[n].payload);                                         \
        n++;                                                                   \
    } while (0)

    if (oversized) {
        POISON("batches", "oversized", "CODEC_TOO_LARGE", big_payload("batch"));
        POISON("poll", "oversized", "CODEC_TOO_LARGE", big_payload("poll"));
        return n;
    }
    POISON("batches", "invalid json", "CODEC_JSON", strdup("{\"v\":1,"));
    snprintf(buf, sizeof(buf), "{\"v\":2,\"type\":\"batch\",\"run\":\"%s\"%s",
             unknown_run, batch_tail);
    POISON("batches", "unknown version", "CODEC_VERSION", strdup(buf));
    snprintf(buf, sizeof(buf), "{\"v\":1,\"type\":\"batch\"%s", batch_tail);
    POISON("batches", "missing run", "CODEC_FIELD", strdup(buf));
    snprintf(buf, sizeof(buf),
             "{\"v\":1,\"type\":\"batch\",\"run\":\"%s\",\"chunk\":\"zero\","
             "\"attempt\":1,\"targets\":[]}",
             unknown_run);
    POISON("batches", "chunk of the wrong type", "CODEC_FIELD", strdup(buf));
    snprintf(buf, sizeof(buf), "{\"v\":1,\"type\":\"batch\",\"run\":\"%s\"%s",
             unknown_run, batch_tail);
    POISON("batches", "unknown run", "NOT_FOUND", strdup(buf));

    POISON("poll", "invalid json", "CODEC_JSON", strdup("not json at all"));
    snprintf(buf, sizeof(buf), "{\"v\":7,\"type\":\"poll\",\"run\":\"%s\"%s",
             unknown_run, poll_tail);
    POISON("poll", "unknown version", "CODEC_VERSION", strdup(buf));
    snprintf(buf, sizeof(buf),
             "{\"v\":1,\"type\":\"poll\",\"run\":\"%s\",\"chunk\":0,"
             "\"attempt\":1,\"due_at\":\"2020-01-01T00:00:00.000Z\"}",
             unknown_run);
    POISON("poll", "missing bulk_id", "CODEC_FIELD", strdup(buf));
    snprintf(buf, sizeof(buf),
             "{\"v\":1,\"type\":\"poll\",\"run\":\"%s\",\"chunk\":0,"
             "\"bulk_id\":\"b\",\"attempt\":\"one\","
             "\"due_at\":\"2020-01-01T00:00:00.000Z\"}",
             unknown_run);
    POISON("poll", "attempt of the wrong type", "CODEC_FIELD", strdup(buf));
    snprintf(buf, sizeof(buf), "{\"v\":1,\"type\":\"poll\",\"run\":\"%s\"%s",
             unknown_run, poll_tail);
    POISON("poll", "unknown run", "NOT_FOUND", strdup(buf));
#undef POISON
    return n;
}

static void produce_poison(rw_itest_fleet_t *f, poison_t *p, size_t n)
{
    rw_settings_t s;
    rw_kafka_producer_t *kp = NULL;
    char errstr[512], topic[200];

    kafka_settings(f, &s);
    if (rw_kafka_producer_new(&kp, &s, on_delivery, NULL, errstr,
                              sizeof(errstr)))
        fail_msg("producer: %s", errstr);
    for (size_t i = 0; i < n; i++) {
        char key[32];
        snprintf(key, sizeof(key), "poison:%zu", i);
        rw_kafka_topic(topic, sizeof(topic), &s, p[i].topic);
        p[i].partition = -1;
        if (rw_kafka_produce(kp, topic, key, strlen(key), p[i].payload,
                             strlen(p[i].payload), NULL, 0, &p[i], errstr,
                             sizeof(errstr)))
            fail_msg("produce %s/%s: %s", p[i].topic, p[i].what, errstr);
    }
    if (rw_kafka_producer_flush(kp, 30000, errstr, sizeof(errstr)))
        fail_msg("flush: %s", errstr);
    rw_kafka_producer_destroy(kp);
    for (size_t i = 0; i < n; i++)
        assert_true(p[i].partition >= 0);
}

static bool header_is(const rw_kafka_msg_t *m, const char *name,
                      const char *want)
{
    rw_kafka_header_t h;

    return rw_kafka_msg_header(m, name, &h) && h.len == strlen(want) &&
           memcmp(h.value, want, h.len) == 0;
}

/*
 * Read the dead-letter topic until every poison has its letter and the
 * topic stays quiet for 3 s. Each letter must be one of the poisons (no
 * good message dead-lettered), verbatim, with the expected reason and
 * source headers. A poison may have more than one letter: delivery is at
 * least once, and a rebalance between the dead letter and the offset
 * commit hands the message to the next consumer again.
 */
static rw_kafka_consumer_t *dlq_reader; /* the teardown closes it too */

static void read_dead_letters(rw_itest_fleet_t *f, poison_t *p, size_t n)
{
    rw_settings_t s;
    rw_kafka_consumer_t *kc = NULL;
    char errstr[512], dlq[200], group[200];
    const char *topics[1] = {dlq};
    long long deadline = rw_itest_now_ms() + 60000, quiet_since = 0;
    size_t seen = 0;

    kafka_settings(f, &s);
    rw_kafka_topic(dlq, sizeof(dlq), &s, "dlq");
    snprintf(group, sizeof(group), "%sdlq-reader", rw_itest_fleet_prefix(f));
    if (rw_kafka_consumer_new(&kc, &s, group, topics, 1, errstr,
                              sizeof(errstr)))
        fail_msg("dlq consumer: %s", errstr);
    dlq_reader = kc;
    while (rw_itest_now_ms() < deadline) {
        rw_kafka_msg_t *m = NULL;
        rw_kafka_header_t reason;
        size_t i;

        if (seen == n && quiet_since &&
            rw_itest_now_ms() - quiet_since > 3000)
            break;
        if (rw_kafka_consumer_poll(kc, 500, &m, errstr, sizeof(errstr)))
            fail_msg("dlq poll: %s", errstr);
        if (!m) {
            if (!quiet_since)
                quiet_since = rw_itest_now_ms();
            continue;
        }
        quiet_since = 0;
        if (!rw_kafka_msg_header(m, RW_KAFKA_HDR_REASON, &reason))
            fail_msg("dead letter at offset %" PRId64 " lacks rw-reason",
                     rw_kafka_msg_offset(m));
        for (i = 0; i < n; i++) {
            char want[2048], part[16], off[24], src_topic[200];
            size_t plen = 0;
            const void *payload = rw_kafka_msg_payload(m, &plen);

            rw_kafka_topic(src_topic, sizeof(src_topic), &s, p[i].topic);
            snprintf(part, sizeof(part), "%" PRId32, p[i].partition);
            snprintf(off, sizeof(off), "%" PRId64, p[i].offset);
            if (!header_is(m, RW_KAFKA_HDR_SOURCE_TOPIC, src_topic) ||
                !header_is(m, RW_KAFKA_HDR_SOURCE_PARTITION, part) ||
                !header_is(m, RW_KAFKA_HDR_SOURCE_OFFSET, off))
                continue;
            snprintf(want, sizeof(want), "%.*s", (int)reason.len,
                     (const char *)reason.value);
            if (!strstr(want, p[i].reason))
                fail_msg("poison %s/%s dead-lettered with reason \"%s\", "
                         "want %s",
                         p[i].topic, p[i].what, want, p[i].reason);
            if (strlen(p[i].payload) > RW_KAFKA_DLQ_MAX_PAYLOAD) {
                /* too large to dead-letter whole: its head, and its size */
                char size[24];
                snprintf(size, sizeof(size), "%zu", strlen(p[i].payload));
                if (plen != RW_KAFKA_DLQ_MAX_PAYLOAD ||
                    memcmp(payload, p[i].payload, plen) != 0 ||
                    !header_is(m, RW_KAFKA_HDR_TRUNCATED, size))
                    fail_msg("poison %s/%s: dead letter is not the message's "
                             "first %d bytes with %s: %s",
                             p[i].topic, p[i].what, RW_KAFKA_DLQ_MAX_PAYLOAD,
                             RW_KAFKA_HDR_TRUNCATED, size);
            } else if (plen != strlen(p[i].payload) ||
                       memcmp(payload, p[i].payload, plen) != 0) {
                fail_msg("poison %s/%s: dead letter is not the message "
                         "verbatim",
                         p[i].topic, p[i].what);
            }
            if (!p[i].seen)
                seen++;
            p[i].seen = true;
            break;
        }
        if (i == n) {
            char why[300];
            snprintf(why, sizeof(why), "%.*s", (int)reason.len,
                     (const char *)reason.value);
            fail_msg("a message that is none of the poisons was "
                     "dead-lettered (dlq offset %" PRId64 "): %s",
                     rw_kafka_msg_offset(m), why);
        }
        rw_kafka_msg_destroy(m);
    }
    rw_kafka_consumer_destroy(kc);
    dlq_reader = NULL;
    for (size_t i = 0; i < n; i++)
        if (!p[i].seen) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("poison %s/%s (partition %d offset %lld) has no dead "
                     "letter within 60 s",
                     p[i].topic, p[i].what, (int)p[i].partition,
                     (long long)p[i].offset);
        }
}

/* File-level so that the teardown frees it after a failed assertion. */
static poison_t poison[16];

static int poison_teardown(void **state)
{
    for (size_t i = 0; i < sizeof(poison) / sizeof(poison[0]); i++)
        free(poison[i].payload);
    memset(poison, 0, sizeof(poison));
    rw_kafka_consumer_destroy(dlq_reader);
    dlq_reader = NULL;
    return teardown(state);
}

static void poison_scenario(void **state, const char *name, bool oversized)
{
    scen_t s;
    poison_t *p = poison;
    size_t n;

    memset(poison, 0, sizeof(poison));
    begin(&s, state, name, new_fleet(NULL), true);
    n = make_poison(p, oversized);
    wait_progress(&s, TRIGGERED, 200);
    produce_poison(s.f, p, n);
    s.faults = (long long)n;
    rw_itest_fleet_expect_dead_letters(s.f, (long long)n);
    read_dead_letters(s.f, p, n);
    finish(&s);
}

/* Invalid JSON, unknown versions, missing and wrongly typed fields and
 * unknown runs in both topics, while a rollout runs. */
static void test_poison_messages(void **state)
{
    poison_scenario(state, "poison_messages", false);
}

/* Payloads above the 1 MiB codec limit in both topics. */
static void test_poison_oversized(void **state)
{
    poison_scenario(state, "poison_oversized", true);
}

/* ---- 7. SIGTERM while busy ---- */

static void test_sigterm_drain(void **state)
{
    scen_t s;
    int rounds = 3 * size.scale;
    long long chunks;

    begin(&s, state, "sigterm_drain", new_fleet(NULL), true);
    for (int i = 1; i <= rounds; i++) {
        if (!wait_progress(&s, TRIGGERED, 1000LL * i / (rounds + 1)))
            break;
        /* each drains and exits 0, or this fails */
        rw_itest_fleet_stop_all(s.f);
        s.faults++;
        start_daemons(s.f, 2, 2);
    }
    assert_true(s.faults >= 1);
    rw_itest_fleet_wait_final(s.f, APPS, size.final_timeout_ms);
    /* nothing committed came back: one Lagoon call per chunk, no more */
    chunks = rw_itest_fleet_ll(s.f, "SELECT count(*) FROM run_chunks", 0,
                               NULL);
    assert_int_equal(rw_itest_fleet_sim_stat(s.f, "bulk_calls"), chunks);
    assert_int_equal(rw_itest_fleet_sim_stat(s.f, "duplicate_triggers"), 0);
    finish(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_baseline, teardown),
        cmocka_unit_test_teardown(test_worker_kill9, teardown),
        cmocka_unit_test_teardown(test_worker_exit_in_trigger_window,
                                  teardown),
        cmocka_unit_test_teardown(test_poller_kill9, teardown),
        cmocka_unit_test_teardown(test_producer_kill9, teardown),
        cmocka_unit_test_teardown(test_lagoon_faults, teardown),
        cmocka_unit_test_teardown(test_lagoon_slow, teardown),
        cmocka_unit_test_teardown(test_redis_restart, teardown),
        cmocka_unit_test_teardown(test_postgres_restart, teardown),
        cmocka_unit_test_teardown(test_broker_down, teardown),
        cmocka_unit_test_teardown(test_poison_messages, poison_teardown),
        cmocka_unit_test_teardown(test_poison_oversized, poison_teardown),
        cmocka_unit_test_teardown(test_sigterm_drain, teardown),
    };

    choose_size();
    /* one scenario at a time while chasing a failure (cmocka pattern) */
    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
