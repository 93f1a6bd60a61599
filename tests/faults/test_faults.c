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
 * Later scenarios need a recovery sweep and one retriability table in the
 * daemons (DESIGN.md section 11): aborts while chunks are in doubt, Redis
 * answering LOADING and READONLY, Postgres read-only, poll events lost,
 * malformed instances, kills during failing builds, Lagoon answers lost
 * after the bulk was created. Two tests check the harness's own fault
 * tools (the Redis proxy, the read-only switch) without a rollout.
 *
 * RW_FAULTS_SOAK=1: 10,000 instances and more faults, and the 120 s broker
 * outage, which only this mode runs. RW_FAULTS_TIMEOUT_S shortens the wait
 * for final runs while chasing a scenario that hangs. Sanitized builds
 * (RW_SANITIZED=1, or ASan detected at compile time) keep 2,000 instances
 * and inject fewer faults. It does not test single modules (their own
 * tests do) and never edits the daemons' behaviour beyond their
 * documented configuration keys.
 */
#include "rw_itest.h"

#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "rw_itest_fleet.h"
#include "rw_itest_redis_proxy.h"
#include "rw_kafka.h"
#include "rw_redis.h"
#include "rw_settings.h"

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

static bool env_on(const char *name)
{
    const char *v = getenv(name);

    return v && *v && strcmp(v, "0") != 0;
}

static void choose_size(void)
{
    bool soak = env_on("RW_FAULTS_SOAK");
    bool sanitized = env_on("RW_SANITIZED") || RW_ITEST_ASAN;

    size.instances = soak && !sanitized ? 10000 : 2000;
    size.scale = soak ? 3 : 1;
    size.final_timeout_ms = soak ? 900000 : sanitized ? 360000 : 240000;
    /* a shorter wait while chasing a scenario known to hang */
    if (getenv("RW_FAULTS_TIMEOUT_S") && atoll(getenv("RW_FAULTS_TIMEOUT_S")))
        size.final_timeout_ms = atoll(getenv("RW_FAULTS_TIMEOUT_S")) * 1000;
}

/* ---- fleet and seeding ---- */

static rw_itest_fleet_t *new_fleet(const char *extra_sim)
{
    char sim[512], max[24];
    rw_itest_fleet_t *f;

    snprintf(sim, sizeof(sim), "{" SIM_TIMINGS "%s%s}", extra_sim ? "," : "",
             extra_sim ? extra_sim : "");
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
        long long app =
            rw_itest_fleet_ll(f,
                              "INSERT INTO store_apps (name, redeploy_enabled,"
                              "   redeploy_interval_days)"
                              " VALUES ('app', true, 7) RETURNING id",
                              0, NULL);

        snprintf(app_s, sizeof(app_s), "%lld", app);
        snprintf(prefix, sizeof(prefix), "f%d-", a);
        snprintf(n_s, sizeof(n_s), "%d",
                 size.instances / APPS + (a < size.instances % APPS ? 1 : 0));
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
        rw_itest_sleep_ms(50);
    }
}

/* Keep polling the children (respawns, early exits) for ms. */
static void hold(rw_itest_fleet_t *f, long long ms)
{
    long long end = rw_itest_now_ms() + ms;

    while (rw_itest_now_ms() < end) {
        rw_itest_fleet_poll_kids(f);
        rw_itest_sleep_ms(50);
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
        rw_itest_sleep_ms(100);
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
           s->name, size.instances, s->faults, rw_itest_fleet_duplicates(s->f),
           lost_targets(s->f), leaked_locks(s->f), secs, base);
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

        rw_itest_sleep_ms((long)delay);
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

        if (seen == n && quiet_since && rw_itest_now_ms() - quiet_since > 3000)
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
                char size_s[24];
                snprintf(size_s, sizeof(size_s), "%zu", strlen(p[i].payload));
                if (plen != RW_KAFKA_DLQ_MAX_PAYLOAD ||
                    memcmp(payload, p[i].payload, plen) != 0 ||
                    !header_is(m, RW_KAFKA_HDR_TRUNCATED, size_s))
                    fail_msg("poison %s/%s: dead letter is not the message's "
                             "first %d bytes with %s: %s",
                             p[i].topic, p[i].what, RW_KAFKA_DLQ_MAX_PAYLOAD,
                             RW_KAFKA_HDR_TRUNCATED, size_s);
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
    chunks = rw_itest_fleet_ll(s.f, "SELECT count(*) FROM run_chunks", 0, NULL);
    assert_int_equal(rw_itest_fleet_sim_stat(s.f, "bulk_calls"), chunks);
    assert_int_equal(rw_itest_fleet_sim_stat(s.f, "duplicate_triggers"), 0);
    finish(&s);
}

/* ---- 8. the harness's own fault tools ---- */

static redisContext *redis_at(const char *host, int port)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);

    if (!c || c->err)
        fail_msg("redis connect %s:%d: %s", host, port,
                 c ? c->errstr : "out of memory");
    return c;
}

static redisReply *reply_of(redisContext *c)
{
    void *r = NULL;

    if (redisGetReply(c, &r) != REDIS_OK || !r)
        fail_msg("no reply through the proxy: %s", c->errstr);
    return r;
}

static void expect_reply(redisContext *c, int type, const char *str)
{
    redisReply *r = reply_of(c);

    if (r->type != type || (str && (!r->str || strcmp(r->str, str) != 0)))
        fail_msg("reply type %d \"%s\", want type %d \"%s\"", r->type,
                 r->str ? r->str : "", type, str ? str : "");
    freeReplyObject(r);
}

static void wait_forwarded(rw_itest_redis_proxy_t *p, long long want)
{
    long long deadline = rw_itest_now_ms() + 5000;

    while (rw_itest_redis_proxy_forwarded(p) < want) {
        if (rw_itest_now_ms() > deadline)
            fail_msg("the proxy forwarded %lld commands, want %lld",
                     rw_itest_redis_proxy_forwarded(p), want);
        rw_itest_sleep_ms(10);
    }
}

static rw_itest_redis_proxy_t *proxy_under_test;

static int proxy_teardown(void **state)
{
    (void)state;
    rw_itest_redis_proxy_destroy(proxy_under_test);
    proxy_under_test = NULL;
    return 0;
}

/*
 * The Redis fault proxy forwards pipelined commands in order, answers
 * every command with the error while failing, keeps a reply the server
 * still owes ahead of the errors that follow it, and forwards again.
 */
static void test_harness_redis_proxy(void **state)
{
    static const char loading[] =
        "LOADING Redis is loading the dataset in memory";
    rw_redis_url_t u;
    char errstr[256], key[96], list[128];
    redisContext *c, *direct;
    redisReply *r;
    rw_itest_redis_proxy_t *p;

    (void)state;
    if (rw_redis_url_parse(&u, rw_itest_env("ROLLWAVE_REDIS_URL"), errstr,
                           sizeof(errstr)))
        fail_msg("ROLLWAVE_REDIS_URL: %s", errstr);
    p = proxy_under_test = rw_itest_redis_proxy_new(u.host, u.port);
    c = redis_at("127.0.0.1", rw_itest_redis_proxy_port(p));
    direct = redis_at(u.host, u.port);
    rw_itest_unique(key, sizeof(key), "rwit_proxy");
    snprintf(list, sizeof(list), "%s:list", key);

    /* pipelined: three commands in one write, answered in order */
    redisAppendCommand(c, "SET %s 41", key);
    redisAppendCommand(c, "INCR %s", key);
    redisAppendCommand(c, "GET %s", key);
    expect_reply(c, REDIS_REPLY_STATUS, "OK");
    r = reply_of(c);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 42);
    freeReplyObject(r);
    expect_reply(c, REDIS_REPLY_STRING, "42");
    assert_int_equal(rw_itest_redis_proxy_forwarded(p), 3);

    /*
     * A reply still owed when the fault starts comes first: BLPOP blocks
     * in the server until the list gets an element, the PING behind it
     * is answered by the proxy, and only the push releases both.
     */
    redisAppendCommand(c, "BLPOP %s 0", list);
    if (redisBufferWrite(c, &(int){0}) != REDIS_OK)
        fail_msg("write through the proxy: %s", c->errstr);
    wait_forwarded(p, 4);
    rw_itest_redis_proxy_fail(p, loading);
    redisAppendCommand(c, "PING");
    redisAppendCommand(c, "SET %s 1", key);
    {
        int done = 0;
        while (!done)
            if (redisBufferWrite(c, &done) != REDIS_OK)
                fail_msg("write through the proxy: %s", c->errstr);
    }
    {
        long long deadline = rw_itest_now_ms() + 5000;
        while (rw_itest_redis_proxy_faulted(p) < 2) {
            if (rw_itest_now_ms() > deadline)
                fail_msg("the proxy answered %lld commands with the error",
                         rw_itest_redis_proxy_faulted(p));
            rw_itest_sleep_ms(10);
        }
    }
    r = redisCommand(direct, "RPUSH %s x", list);
    assert_non_null(r);
    freeReplyObject(r);
    r = reply_of(c);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 2);
    assert_string_equal(r->element[1]->str, "x");
    freeReplyObject(r);
    expect_reply(c, REDIS_REPLY_ERROR, loading);
    expect_reply(c, REDIS_REPLY_ERROR, loading);

    /* a new connection during the fault gets the error at once */
    {
        redisContext *c2 = redis_at("127.0.0.1", rw_itest_redis_proxy_port(p));
        r = redisCommand(c2, "GET %s", key);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_ERROR);
        freeReplyObject(r);
        redisFree(c2);
    }
    rw_itest_redis_proxy_fail(p, "READONLY You can't write against a read "
                                 "only replica.");
    r = redisCommand(c, "SET %s 2", key);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    assert_true(strncmp(r->str, "READONLY ", 9) == 0);
    freeReplyObject(r);

    /* forwarding again: the SETs answered with errors never ran */
    rw_itest_redis_proxy_fail(p, NULL);
    r = redisCommand(c, "GET %s", key);
    assert_non_null(r);
    assert_string_equal(r->str, "42");
    freeReplyObject(r);
    assert_int_equal(rw_itest_redis_proxy_faulted(p), 4);
    r = redisCommand(direct, "DEL %s %s", key, list);
    freeReplyObject(r);
    redisFree(c);
    redisFree(direct);
}

/* SQLSTATE of an INSERT on conn ("" when it worked). */
static void try_write(PGconn *conn, char *state, size_t len)
{
    PGresult *res =
        PQexecParams(conn, "INSERT INTO user_groups (name) VALUES ('ro-probe')",
                     0, NULL, NULL, NULL, NULL, 0);
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    snprintf(state, len, "%s",
             PQresultStatus(res) == PGRES_COMMAND_OK ? ""
             : st                                    ? st
                                                     : "no sqlstate");
    PQclear(res);
}

/*
 * Postgres read-only: a session that was open is cut, a new one refuses
 * to write (25006, read_only_sql_transaction), the fleet's own connection
 * still reads; once undone, new sessions write again.
 */
static void test_harness_pg_read_only(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(NULL, 0);
    PGconn *daemon, *fresh;
    PGresult *res;
    char st[16];

    *state = f;
    daemon = PQconnectdb(rw_itest_fleet_dsn(f));
    assert_int_equal(PQstatus(daemon), CONNECTION_OK);
    try_write(daemon, st, sizeof(st));
    assert_string_equal(st, "");

    assert_true(rw_itest_fleet_pg_read_only(f, true) >= 1);
    res = PQexecParams(daemon, "SELECT 1", 0, NULL, NULL, NULL, NULL, 0);
    assert_int_not_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    PQfinish(daemon);
    fresh = PQconnectdb(rw_itest_fleet_dsn(f));
    assert_int_equal(PQstatus(fresh), CONNECTION_OK);
    try_write(fresh, st, sizeof(st));
    assert_string_equal(st, "25006");
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM user_groups", 0, NULL), 1);

    assert_int_equal(rw_itest_fleet_pg_read_only(f, false), 0);
    /* the session opened while read-only follows the reload too */
    try_write(fresh, st, sizeof(st));
    assert_string_equal(st, "");
    PQfinish(fresh);
    assert_int_equal(
        rw_itest_fleet_ll(f, "SELECT count(*) FROM user_groups", 0, NULL), 2);
}

/* ---- 9. faults the recovery sweep and the retry table must absorb ---- */

static long long chunks_in(rw_itest_fleet_t *f, const char *state)
{
    const char *p[1] = {state};

    return rw_itest_fleet_ll(
        f, "SELECT count(*) FROM run_chunks WHERE state = $1", 1, p);
}

/* Every target succeeded: Lagoon was told to fail none, so any other end
 * is the fault's doing. */
static void assert_all_succeeded(rw_itest_fleet_t *f, const char *why)
{
    PGresult *res = rw_itest_fleet_q(
        f,
        "SELECT count(*) OVER () AS n, state, COALESCE(error, '') AS error"
        " FROM run_targets WHERE state <> 'succeeded' LIMIT 1",
        0, NULL);

    if (PQntuples(res) > 0) {
        char msg[700];
        snprintf(msg, sizeof(msg),
                 "%s targets did not succeed (%s); e.g. "
                 "%s: %s",
                 rw_pg_str(res, 0, "n"), why, rw_pg_str(res, 0, "state"),
                 rw_pg_str(res, 0, "error"));
        PQclear(res);
        fail_msg("%s", msg);
    }
    PQclear(res);
}

/*
 * a. Both workers die inside the trigger window of their first chunk
 * (the fault hook at 100 %), leaving chunks triggering: Lagoon ran those
 * bulks, nobody recorded them. The runs holding them are aborted before
 * any worker comes back. The recovery sweep must still resolve the chunks
 * in doubt (adopt the bulk found by name), so the aborted runs end
 * cancelled with every target terminal, no lock left, and each
 * environment Lagoon deployed carried by its target's bulk id.
 */
static void test_abort_in_doubt(void **state)
{
    scen_t s;
    rw_itest_fleet_t *f = new_fleet(NULL);
    PGresult *res;
    long long deadline, in_doubt, aborted = 0;

    for (int i = 0; i < 2; i++)
        rw_itest_fleet_start_mortal(f, "rollwave-worker", "worker",
                                    "ROLLWAVE_FAULT_EXIT_AFTER_TRIGGER_PCT",
                                    "100");
    start_daemons(f, 0, 2);
    begin(&s, state, "abort_in_doubt", f, false);
    deadline = rw_itest_now_ms() + 60000;
    while (rw_itest_fleet_fault_exits(f) < 2) {
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("%lld of 2 workers died by the fault hook in 60 s",
                     rw_itest_fleet_fault_exits(f));
        }
        rw_itest_sleep_ms(50);
    }
    s.faults = rw_itest_fleet_fault_exits(f);
    in_doubt = chunks_in(f, "triggering");
    assert_true(in_doubt >= 1);
    res = rw_itest_fleet_q(f,
                           "SELECT DISTINCT r.uuid::text AS uuid"
                           " FROM deployment_runs r JOIN run_chunks c"
                           "   ON c.run_id = r.id"
                           " WHERE c.state = 'triggering'",
                           0, NULL);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *argv[] = {"rollwavectl", "run", "abort",
                              rw_pg_str(res, i, "uuid"), NULL};
        char out[2048];
        int rc = rw_itest_fleet_run(f, argv, out, sizeof(out));
        if (rc != 0)
            fail_msg("rollwavectl run abort %s exited %d: %s", argv[3], rc,
                     out);
        aborted++;
    }
    PQclear(res);
    assert_true(aborted >= 1);
    start_daemons(f, 2, 0);
    rw_itest_fleet_wait_final(f, APPS, size.final_timeout_ms);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM deployment_runs"
                                       " WHERE status = 'cancelled'",
                                       0, NULL),
                     aborted);
    /*
     * Nothing of an aborted run may stay claimed or in doubt. The runs are
     * final at once (cancelled), but their chunks in doubt are resolved
     * by the sweep only once the settle window after the last send has
     * passed (two Lagoon timeouts plus the settle time): wait for that,
     * bounded, rather than race it.
     */
    rw_itest_fleet_wait_count(f,
                              "SELECT count(*) FROM run_chunks"
                              " WHERE state = 'triggering'",
                              0, 60000, "chunks in doubt resolved");
    finish(&s);
}

/*
 * b. Redis answers every command with -LOADING, then with -READONLY, for
 * about 5 s each while chunks are being claimed and polled. Both are
 * states a server passes through (restart, failover): the batches and
 * polls must be retried, nothing dead-lettered, nothing failed.
 */
static void test_redis_error_replies(void **state)
{
    static const char *const errors[] = {
        "LOADING Redis is loading the dataset in memory",
        "READONLY You can't write against a read only replica."};
    scen_t s;
    rw_itest_fleet_t *f = new_fleet(NULL);

    rw_itest_fleet_redis_proxy(f);
    begin(&s, state, "redis_error_replies", f, true);
    for (int i = 0; i < 2; i++) {
        long long before;
        if (!wait_progress(&s, TRIGGERED, 200 + 300LL * i))
            fail_msg("the rollout ended before the %s window", errors[i]);
        before = rw_itest_fleet_redis_faulted(f);
        rw_itest_fleet_redis_fault(f, errors[i]);
        hold(f, 5000);
        rw_itest_fleet_redis_fault(f, NULL);
        /* the daemons did talk to Redis during the window */
        assert_true(rw_itest_fleet_redis_faulted(f) > before);
        s.faults++;
    }
    rw_itest_fleet_wait_final(f, APPS, size.final_timeout_ms);
    assert_all_succeeded(f, "Redis errors are retriable");
    /* the check wants the dead-letter topic empty */
    finish(&s);
}

/*
 * c. Postgres read-only for about 5 s mid-rollout, the daemons' sessions
 * cut so that they reconnect into it (a failover onto a standby that is
 * not yet promoted): retried, nothing dead-lettered, every run final.
 */
static void test_postgres_read_only(void **state)
{
    scen_t s;
    rw_itest_fleet_t *f = new_fleet(NULL);

    begin(&s, state, "postgres_read_only", f, true);
    if (!wait_progress(&s, TRIGGERED, 300))
        fail_msg("the rollout ended before the read-only window");
    s.faults = rw_itest_fleet_pg_read_only(f, true);
    assert_true(s.faults >= 4); /* at least one session per daemon */
    hold(f, 5000);
    rw_itest_fleet_pg_read_only(f, false);
    rw_itest_fleet_wait_final(f, APPS, size.final_timeout_ms);
    assert_all_succeeded(f, "a read-only Postgres is retriable");
    finish(&s);
}

/*
 * Move the consumer group <prefix><role> of topic <prefix><topic> to the
 * end of every partition with `rollwavectl replay --execute` (--to-offset
 * is clamped to the high watermark) and return how many messages that
 * skipped: what an operator's offset reset or a topic's retention does.
 */
static long long skip_to_end(rw_itest_fleet_t *f, const char *role,
                             const char *topic_name)
{
    char group[160], topic[200], out[16384];
    const char *argv[] = {
        "rollwavectl", "replay", "--group",     group,
        "--topic",     topic,    "--to-offset", "9223372036854775807",
        "--execute",   "--json", NULL};
    json_t *plan, *parts, *part;
    json_error_t jerr;
    size_t i;
    long long skipped = 0;
    int rc;

    snprintf(group, sizeof(group), "%s%s", rw_itest_fleet_prefix(f), role);
    snprintf(topic, sizeof(topic), "%s%s", rw_itest_fleet_prefix(f),
             topic_name);
    rc = rw_itest_fleet_run(f, argv, out, sizeof(out));
    if (rc != 0)
        fail_msg("rollwavectl replay to the end exited %d: %s", rc, out);
    plan = json_loads(out, 0, &jerr);
    if (!plan)
        fail_msg("replay --json printed no JSON: %s", out);
    parts = json_object_get(plan, "partitions");
    json_array_foreach(parts, i, part)
    {
        json_t *cur = json_object_get(part, "current");
        long long from = json_is_integer(cur)
                             ? json_integer_value(cur)
                             : json_integer_value(json_object_get(part, "low"));
        skipped += json_integer_value(json_object_get(part, "new")) - from;
    }
    json_decref(plan);
    return skipped;
}

/*
 * d. Poll events lost: the pollers stop while chunks are triggered, the
 * workers trigger the rest, and the poll group is moved past every event
 * written meanwhile (as an operator's mistaken replay, or a topic whose
 * retention ran out, would). Restarted pollers see none of them; the
 * recovery sweep must re-emit the poll event of every triggered chunk
 * whose polls stopped, so every run still finishes.
 */
static void test_poll_events_lost(void **state)
{
    scen_t s;
    rw_itest_fleet_t *f = new_fleet(NULL);
    pid_t pollers[2];
    long long skipped = 0;

    rw_itest_fleet_private_broker(f, 1);
    begin(&s, state, "poll_events_lost", f, true);
    for (int k = 0; k < 2; k++)
        pollers[k] = rw_itest_fleet_running(f, "rollwave-poller", (size_t)k);
    assert_true(pollers[0] > 0 && pollers[1] > 0);
    rw_itest_fleet_wait_count(f,
                              "SELECT count(*) FROM run_chunks"
                              " WHERE state = 'triggered'",
                              1, size.final_timeout_ms, "triggered chunks");
    rw_itest_fleet_stop_one(f, pollers[0], false);
    rw_itest_fleet_stop_one(f, pollers[1], false);
    /* every chunk past pending: its first poll event is in the topic */
    if (!wait_progress(&s, TRIGGERED, 1000))
        fail_msg("runs ended with the pollers stopped");
    rw_itest_fleet_wait_count(f,
                              "SELECT (count(*) = 0)::int FROM run_chunks"
                              " WHERE state IN ('pending', 'triggering')",
                              1, size.final_timeout_ms, "chunks all triggered");
    skipped = skip_to_end(f, "poller", "poll");
    /* the events were really lost, or the scenario proves nothing */
    assert_true(skipped > 0);
    s.faults = skipped;
    start_daemons(f, 0, 2);
    finish(&s);
}

/*
 * Batches lost: the runs are created and their batches published while no
 * worker runs; the workers' group is then moved to the end of the batches
 * topic (as an operator's offset reset or a topic's retention would), so
 * no batch is ever consumed. The recovery sweep re-queues the batches of
 * the pending chunks of those running runs, and every run finishes.
 */
static void test_batches_lost(void **state)
{
    scen_t s;
    rw_itest_fleet_t *f = new_fleet(NULL);
    long long skipped = 0;

    rw_itest_fleet_private_broker(f, 1);
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_PENDING_STALE_S", "10");
    start_daemons(f, 0, 2);
    begin(&s, state, "batches_lost", f, false);
    skipped = skip_to_end(f, "worker", "batches");
    /* the batches were really skipped, or the scenario proves nothing */
    assert_true(skipped > 0);
    s.faults = skipped;
    start_daemons(f, 2, 0);
    finish(&s);
    /* every batch came back through the sweep, none through Kafka's past */
    assert_true(rw_itest_fleet_ll(f,
                                  "SELECT count(*) FROM outbox WHERE topic ="
                                  " 'batches' AND created_at > (SELECT"
                                  " min(created_at) + interval '5 seconds'"
                                  " FROM outbox)",
                                  0, NULL) > 0);
}

/*
 * e. Instances whose Lagoon target cannot be valid: an empty environment,
 * a newline inside one, a 300-byte project name. Each is skipped with a
 * reason and never reaches Lagoon; every other instance is scheduled and
 * deployed.
 */
static void test_malformed_instances(void **state)
{
    scen_t s;
    rw_itest_fleet_t *f = new_fleet(NULL);
    char max[24], app_s[24], long_project[301];
    const char *p[2] = {app_s, long_project};
    long long bad;

    memset(long_project, 'p', 300);
    long_project[300] = '\0';
    snprintf(max, sizeof(max), "%d", size.instances + 3);
    rw_itest_fleet_set(f, "ROLLWAVE_MAX_PER_RUN", max);
    *state = f;
    seed(f);
    snprintf(app_s, sizeof(app_s), "%lld",
             rw_itest_fleet_ll(f, "SELECT min(id) FROM store_apps", 0, NULL));
    PQclear(rw_itest_fleet_q(
        f,
        "INSERT INTO app_instances (name, store_app_id, status,"
        "   lagoon_project, lagoon_environment)"
        " VALUES ('bad-empty', $1::bigint, 'running-healthy-unclaimed',"
        "         'bad-empty', ''),"
        "        ('bad-newline', $1::bigint, 'running-healthy-unclaimed',"
        "         'bad-newline', E'main\\nevil'),"
        "        ('bad-long', $1::bigint, 'running-healthy-unclaimed',"
        "         $2, 'main')",
        2, p));
    rw_itest_fleet_snapshot(f);
    memset(&s, 0, sizeof(s));
    s.f = f;
    s.name = "malformed_instances";
    s.faults = 3;
    start_daemons(f, 2, 2);
    s.t0 = rw_itest_now_ms();
    {
        /* stderr kept: a tick that refuses the whole fleet says why there */
        const char *argv[] = {"rollwave-producer", "--once", NULL};
        static char err[8192];
        int rc = rw_itest_fleet_run_err(f, argv, NULL, 0, err, sizeof(err));
        long long runs = rw_itest_fleet_ll(
            f, "SELECT count(*) FROM deployment_runs", 0, NULL);
        if (rc != 0 || runs < APPS)
            fail_msg("the tick exited %d and created %lld runs (want %d): "
                     "three malformed instances must not hold up the rest"
                     "\n%s",
                     rc, runs, APPS, err);
    }
    rw_itest_fleet_wait_final(f, APPS, size.final_timeout_ms);
    bad = rw_itest_fleet_ll(
        f,
        "SELECT count(DISTINCT i.id) FROM app_instances i JOIN run_targets t"
        "   ON t.instance_id = i.id"
        " WHERE i.name LIKE 'bad-%' AND t.state = 'skipped'"
        "   AND COALESCE(t.skip_reason, t.error, '') <> ''",
        0, NULL);
    if (bad != 3)
        fail_msg("%lld of the 3 malformed instances were skipped with a "
                 "reason",
                 bad);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM run_targets t"
                                       " JOIN app_instances i"
                                       "   ON i.id = t.instance_id"
                                       " WHERE i.name NOT LIKE 'bad-%'"
                                       "   AND t.state = 'succeeded'",
                                       0, NULL),
                     size.instances);
    finish(&s);
}

/*
 * f. Failing builds (15 %) while a worker is killed and restarted several
 * times: redelivered batches of finished chunks are handled work, so no
 * failed target is triggered again. Lagoon's trigger count of each
 * environment equals its target's attempt, and every attempt is 1 (no
 * retry or replay was asked for).
 */
static void test_worker_kill9_failing_builds(void **state)
{
    scen_t s;
    int kills = 4 * size.scale;
    json_t *stats, *triggers;
    PGresult *res;
    long long failed, mismatched = 0;
    char first[300] = "";

    begin(&s, state, "worker_kill9_failing_builds",
          new_fleet("\"fail_rate\":0.15"), true);
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
    rw_itest_fleet_wait_final(s.f, APPS, size.final_timeout_ms);
    failed = rw_itest_fleet_ll(s.f,
                               "SELECT count(*) FROM run_targets"
                               " WHERE state = 'failed'",
                               0, NULL);
    assert_true(failed > 0);
    stats = rw_itest_fleet_sim(s.f, "/sim/stats", NULL);
    triggers = json_object_get(stats, "triggers");
    res = rw_itest_fleet_q(s.f,
                           "SELECT lagoon_project || '/' || lagoon_environment"
                           "   AS env, attempt, state FROM run_targets"
                           " WHERE bulk_id IS NOT NULL",
                           0, NULL);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *env = rw_pg_str(res, i, "env");
        long long attempt = rw_pg_ll(res, i, "attempt", -1);
        json_t *got = json_object_get(triggers, env);
        long long n = json_is_integer(got) ? json_integer_value(got) : 0;

        if (n != attempt || attempt != 1) {
            if (!mismatched)
                snprintf(first, sizeof(first),
                         "%s (%s): Lagoon triggered it %lld times, attempt "
                         "%lld",
                         env, rw_pg_str(res, i, "state"), n, attempt);
            mismatched++;
        }
    }
    PQclear(res);
    json_decref(stats);
    if (mismatched)
        fail_msg("%lld targets were triggered again or carry an attempt "
                 "above 1 without a retry; e.g. %s",
                 mismatched, first);
    finish(&s);
}

/* Wait (bounded) until the simulator has counted key at least once. */
static void wait_sim_stat(rw_itest_fleet_t *f, const char *key)
{
    long long deadline = rw_itest_now_ms() + 60000;

    while (rw_itest_fleet_sim_stat(f, key) < 1) {
        if (rw_itest_now_ms() > deadline)
            fail_msg("the simulator counted no %s in 60 s", key);
        rw_itest_sleep_ms(20);
    }
}

/*
 * g. Lagoon creates the bulk and the answer is lost: HTTP 500, or a 200
 * whose body is cut in half. Both are in doubt, not failures: resending
 * would deploy the chunk twice. Every environment is triggered exactly
 * once and every run ends.
 */
static void test_lagoon_answer_lost(void **state)
{
    scen_t s;
    /* each kind first for certain, then both at random: a rate alone
     * could leave one kind never drawn. The throttle spreads the bulks
     * over waves, so the second kind still finds bulks to hit after the
     * first has hit one. */
    rw_itest_fleet_t *f = new_fleet("\"fault_garbled_executed\":1");
    json_t *stats, *triggers, *v;
    const char *env;
    long long twice = 0;

    rw_itest_fleet_set(f, "ROLLWAVE_MAX_IN_FLIGHT", "500");
    begin(&s, state, "lagoon_answer_lost", f, true);
    wait_sim_stat(f, "faults.garbled_executed");
    rw_itest_fleet_sim_config(f, "{\"fault_garbled_executed\":0,"
                                 "\"fault_http500_executed\":1}");
    wait_sim_stat(f, "faults.http500_executed");
    rw_itest_fleet_sim_config(f, "{\"fault_garbled_executed\":0.05,"
                                 "\"fault_http500_executed\":0.05}");
    rw_itest_fleet_wait_final(f, APPS, size.final_timeout_ms);
    assert_true(rw_itest_fleet_sim_stat(f, "faults.http500_executed") > 0);
    assert_true(rw_itest_fleet_sim_stat(f, "faults.garbled_executed") > 0);
    s.faults = rw_itest_fleet_sim_stat(f, "faults.http500_executed") +
               rw_itest_fleet_sim_stat(f, "faults.garbled_executed");
    stats = rw_itest_fleet_sim(f, "/sim/stats", NULL);
    triggers = json_object_get(stats, "triggers");
    json_object_foreach(triggers, env, v)
    {
        if (json_integer_value(v) != 1)
            twice++;
    }
    json_decref(stats);
    if (twice)
        fail_msg("%lld environments were deployed more than once", twice);
    assert_int_equal(rw_itest_fleet_sim_stat(f, "duplicate_triggers"), 0);
    finish(&s);
}

/*
 * h. (soak only) The whole Kafka cluster down for 120 s, longer than the
 * producer's delivery wait: poll events produced meanwhile must not be
 * lost (every run finishes), and the delivery reports that arrive after
 * the daemons gave up waiting must not touch freed memory (sanitizer logs
 * are scanned by finish).
 */
static void test_broker_down_long(void **state)
{
    scen_t s;
    rw_itest_fleet_t *f;

    if (!env_on("RW_FAULTS_SOAK"))
        skip();
    f = new_fleet(NULL);
    *state = f;
    rw_itest_fleet_private_broker(f, 1);
    begin(&s, state, "broker_down_long", f, true);
    if (!wait_progress(&s, TRIGGERED, 300))
        fail_msg("the rollout ended before the outage");
    rw_itest_fleet_broker_down(f);
    s.faults = 1;
    hold(f, 120000);
    rw_itest_fleet_broker_up(f);
    finish(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_baseline, teardown),
        cmocka_unit_test_teardown(test_worker_kill9, teardown),
        cmocka_unit_test_teardown(test_worker_exit_in_trigger_window, teardown),
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
        cmocka_unit_test_teardown(test_harness_redis_proxy, proxy_teardown),
        cmocka_unit_test_teardown(test_harness_pg_read_only, teardown),
        cmocka_unit_test_teardown(test_abort_in_doubt, teardown),
        cmocka_unit_test_teardown(test_redis_error_replies, teardown),
        cmocka_unit_test_teardown(test_postgres_read_only, teardown),
        cmocka_unit_test_teardown(test_poll_events_lost, teardown),
        cmocka_unit_test_teardown(test_batches_lost, teardown),
        cmocka_unit_test_teardown(test_malformed_instances, teardown),
        cmocka_unit_test_teardown(test_worker_kill9_failing_builds, teardown),
        cmocka_unit_test_teardown(test_lagoon_answer_lost, teardown),
        cmocka_unit_test_teardown(test_broker_down_long, teardown),
    };

    choose_size();
    /* one scenario at a time while chasing a failure (cmocka pattern) */
    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
