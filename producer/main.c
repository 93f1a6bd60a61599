/*
 * rollwave-producer: Scheduler: picks due instances on each store app's
 * cadence, starts runs and relays their batches to Kafka. This file holds the
 * configuration table and process start.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rw_config.h"
#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_outbox.h"
#include "rw_retention.h"
#include "rw_runs.h"
#include "rw_service.h"
#include "rw_settings.h"
#include "rw_webhook.h"
#include "sweep.h"

/* pg_try_advisory_lock key of the scheduler leader: "rw-sched" in ASCII */
#define LEADER_LOCK_KEY 0x72772d7363686564LL

typedef struct producer {
    rw_service_t svc;
    int leader;
    unsigned reconnects; /* an advisory lock does not survive a reconnect */
    rw_metric_t *m_runs, *m_targets, *m_ticks;
    rw_sweep_stats_t sweep; /* the last sweep's, with its lock cursor */
    long long relayed_ms;   /* last relay inside the current tick */
} producer_t;

/* Become (or stay) the leader; false when another replica leads. */
static bool lead(producer_t *pr)
{
    char errstr[256];
    int got = 0;

    if (pr->leader && rw_pg_reconnects(pr->svc.pg) == pr->reconnects)
        return true;
    pr->leader = 0;
    if (rw_pg_try_advisory_lock(pr->svc.pg, LEADER_LOCK_KEY, &got, errstr,
                                sizeof(errstr))) {
        rw_warn("producer", "event=leader_check_failed detail=\"%s\"", errstr);
        return false;
    }
    if (got) {
        pr->leader = 1;
        pr->reconnects = rw_pg_reconnects(pr->svc.pg);
        rw_info("producer", "event=leader_elected");
    }
    return got != 0;
}

/* Publish runs by status as gauges (every status, so absent ones read 0). */
static void runs_by_status(producer_t *pr)
{
    static const char sql[] =
        "SELECT s.status, count(r.id) AS n"
        " FROM unnest(ARRAY['pending', 'running', 'paused', 'completed',"
        "                   'partial_failed', 'failed', 'cancelled']) AS "
        "s(status)"
        " LEFT JOIN deployment_runs r ON r.status = s.status"
        " GROUP BY s.status";
    static const char oldest_sql[] =
        /* open since creation, or since a retry re-opened it */
        "SELECT COALESCE(EXTRACT(epoch FROM now() - min(COALESCE("
        "  (SELECT max(t.at) FROM run_transitions t"
        "    WHERE t.run_id = r.id AND t.from_status IN ('completed',"
        "          'partial_failed', 'failed')), r.created_at))), 0)::bigint"
        "  AS age_s"
        " FROM deployment_runs r WHERE r.status IN ('pending', 'running')";
    PGresult *res = NULL;
    char errstr[256];

    if (rw_pg_exec(pr->svc.pg, sql, 0, NULL, &res, errstr, sizeof(errstr))) {
        rw_warn("producer", "event=run_gauges_failed detail=\"%s\"", errstr);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "status=\"%s\"",
                 rw_pg_str(res, i, "status"));
        rw_metrics_set(
            rw_metrics_gauge("rollwave_runs", "runs by status", labels),
            (double)rw_pg_ll(res, i, "n", 0));
    }
    PQclear(res);
    res = NULL;
    /* the alert "a run open far longer than its polling horizon" */
    if (rw_pg_exec(pr->svc.pg, oldest_sql, 0, NULL, &res, errstr,
                   sizeof(errstr))) {
        rw_warn("producer", "event=run_gauges_failed detail=\"%s\"", errstr);
        return;
    }
    rw_metrics_set(rw_metrics_gauge("rollwave_run_oldest_open_seconds",
                                    "age of the oldest pending or running "
                                    "run (0 = none)",
                                    NULL),
                   (double)rw_pg_ll(res, 0, "age_s", 0));
    PQclear(res);
}

/*
 * After each run of a tick commits: once a second at most, publish what
 * is committed, so a long tick (a million instances over a few apps) has
 * workers on its first runs while it schedules the next. A relay waits
 * for its delivery reports, so one per run would make a tick over a
 * thousand small apps a thousand round trips to Kafka long. What fails
 * here stays in the outbox for the tick's last relay.
 */
#define TICK_RELAY_EVERY_MS 1000
static void run_made(const rw_run_summary_t *run, void *ud)
{
    producer_t *pr = ud;
    long long published = 0;
    char errstr[512];
    rw_err_t err;

    (void)run;
    if (rw_now_mono_ms() - pr->relayed_ms < TICK_RELAY_EVERY_MS)
        return;
    pr->relayed_ms = rw_now_mono_ms();
    err = rw_outbox_relay(pr->svc.pg, pr->svc.kp, pr->svc.s,
                          RW_OUTBOX_RELAY_BATCH, 0, &published, errstr,
                          sizeof(errstr));
    if (err)
        rw_warn("producer", "event=relay_failed err=%s detail=\"%s\"",
                rw_err_name(err), errstr);
}

/* One scheduler tick: leftovers first, then due instances, then relay. */
static void tick(producer_t *pr)
{
    const rw_settings_t *s = pr->svc.s;
    rw_run_spec_t spec = {
        "scheduled",          "scheduler", false, s->bulk_chunk_size,
        s->failure_backoff_s, true,        NULL};
    rw_run_summary_t *runs = NULL;
    size_t n_runs = 0;
    long long published = 0, targets = 0;
    char errstr[512];
    rw_err_t err;

    if (!lead(pr)) {
        rw_debug("producer", "event=tick_skipped reason=not_leader");
        return;
    }
    rw_metrics_add(pr->m_ticks, 1);
    err = rw_outbox_relay(pr->svc.pg, pr->svc.kp, s, RW_OUTBOX_RELAY_BATCH, 0,
                          &published, errstr, sizeof(errstr));
    if (err)
        rw_warn("producer", "event=relay_failed err=%s detail=\"%s\"",
                rw_err_name(err), errstr);
    {
        long long pruned = 0;
        if (rw_outbox_prune(pr->svc.pg, s->outbox_retention_s,
                            RW_OUTBOX_PRUNE_BATCH, &pruned, errstr,
                            sizeof(errstr)))
            rw_warn("producer", "event=outbox_prune_failed detail=\"%s\"",
                    errstr);
    }
    pr->relayed_ms = rw_now_mono_ms();
    err = rw_runs_schedule(pr->svc.pg, s->max_per_run, &spec, run_made, pr,
                           &runs, &n_runs, errstr, sizeof(errstr));
    if (err) {
        rw_service_note(&pr->svc, err);
        rw_error("producer",
                 "event=schedule_failed err=%s runs_made=%zu detail=\"%s\"",
                 rw_err_name(err), n_runs, errstr);
    } else {
        rw_service_note_ok(&pr->svc, RW_SVC_PG);
    }
    for (size_t i = 0; i < n_runs; i++)
        targets += runs[i].targets;
    free(runs);
    rw_metrics_add(pr->m_runs, (double)n_runs);
    rw_metrics_add(pr->m_targets, (double)targets);
    rw_info("producer", "event=tick runs=%zu targets=%lld", n_runs, targets);
    err = rw_outbox_relay(pr->svc.pg, pr->svc.kp, s, RW_OUTBOX_RELAY_BATCH, 0,
                          &published, errstr, sizeof(errstr));
    if (err)
        rw_warn("producer", "event=relay_failed err=%s detail=\"%s\"",
                rw_err_name(err), errstr);
}

/* The recovery sweep, leader only (see sweep.h). */
static void sweep(producer_t *pr)
{
    char errstr[512];
    rw_err_t err;

    if (!lead(pr))
        return;
    err = rw_sweep_run(&pr->svc, &pr->sweep, errstr, sizeof(errstr));
    if (err) {
        rw_service_note(&pr->svc, err);
        rw_warn("producer", "event=sweep_failed err=%s detail=\"%s\"",
                rw_err_name(err), errstr);
        return;
    }
    rw_service_note_ok(&pr->svc, RW_SVC_PG);
}

/*
 * Retention of old runs, leader only: one bounded pass of small batches
 * (rw_retention.h); what is left waits for the next pass.
 */
static void retention(producer_t *pr)
{
    const rw_settings_t *s = pr->svc.s;
    char errstr[512];
    bool done = false;
    rw_err_t err;

    if (s->retention_days == 0 || !lead(pr))
        return;
    err = rw_retention_run(pr->svc.pg, s->retention_days, s->retention_batch,
                           s->retention_pass_batches, NULL, &done, errstr,
                           sizeof(errstr));
    if (err) {
        rw_service_note(&pr->svc, err);
        rw_warn("producer", "event=retention_failed err=%s detail=\"%s\"",
                rw_err_name(err), errstr);
    }
}

/*
 * The webhook deliverer: every replica runs one, on its own Postgres
 * connection, so a slow or dead receiver holds only this thread; replicas
 * share the work through the claim (rw_webhook.h). It stops when the main
 * loop ends (the first SIGTERM).
 */
typedef struct deliverer {
    const rw_settings_t *s;
    atomic_bool stop;
    pthread_t thread;
    bool started;
} deliverer_t;

/* Sleep up to ms, waking early when the thread is asked to stop. */
static void nap(deliverer_t *dl, int ms)
{
    while (ms > 0 && !atomic_load(&dl->stop)) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
        ms -= 50;
    }
}

static void *deliver_main(void *arg)
{
    deliverer_t *dl = arg;
    rw_webhook_opts_t o = {
        (int)dl->s->webhook_concurrency, (long)dl->s->webhook_timeout_ms,
        dl->s->webhook_backoff_ms, (int)dl->s->webhook_max_attempts,
        dl->s->webhook_poll_ms};
    rw_webhook_deliverer_t *d = NULL;
    char errstr[512];

    /* the main loop sets stop once it sees the drain: the signal flag is
     * not read from this thread */
    while (!atomic_load(&dl->stop)) {
        rw_err_t err;
        if (!d && rw_webhook_deliverer_new(&d, dl->s->pg_dsn, &o, errstr,
                                           sizeof(errstr))) {
            rw_warn("producer", "event=webhook_start_failed detail=\"%s\"",
                    errstr);
            nap(dl, 1000);
            continue;
        }
        err = rw_webhook_deliverer_step(d, 200, errstr, sizeof(errstr));
        if (err) {
            rw_warn("producer",
                    "event=webhook_step_failed err=%s detail=\"%s\"",
                    rw_err_name(err), errstr);
            nap(dl, 200);
        }
    }
    rw_webhook_deliverer_destroy(d);
    return NULL;
}

static void deliverer_start(deliverer_t *dl, const rw_settings_t *s)
{
    dl->s = s;
    atomic_init(&dl->stop, false);
    if (s->webhook_concurrency == 0)
        return;
    if (pthread_create(&dl->thread, NULL, deliver_main, dl) != 0) {
        rw_error("producer", "event=webhook_thread_failed");
        return;
    }
    dl->started = true;
}

static void deliverer_stop(deliverer_t *dl)
{
    if (!dl->started)
        return;
    atomic_store(&dl->stop, true);
    pthread_join(dl->thread, NULL);
    dl->started = false;
}

static const rw_cfg_key_t keys[] = {
    RW_KEYS_PROCESS("9101"),
    RW_KEYS_PG,
    RW_KEYS_REDIS,
    RW_KEYS_KAFKA,
    RW_KEYS_LAGOON,
    RW_KEYS_SCHEDULE,
    RW_KEYS_OUTBOX,
    RW_KEYS_RETENTION,
    RW_KEYS_TRIGGER,
    RW_KEYS_LOCK,
    RW_KEYS_POLL,
    RW_KEYS_SWEEP,
    RW_KEYS_WEBHOOK,
};

int main(int argc, char **argv)
{
    static const char *const flags[] = {"--once", NULL};
    rw_settings_t s;
    producer_t pr;
    deliverer_t dl;
    char errstr[512];
    bool once = false;
    rw_err_t err;

    memset(&s, 0, sizeof(s));
    memset(&pr, 0, sizeof(pr));
    memset(&dl, 0, sizeof(dl));
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--once") == 0)
            once = true;
    rw_config_init(argc, argv, "rollwave-producer",
                   "Scheduler: picks due instances on each store app's "
                   "cadence, starts runs and relays their batches to Kafka.",
                   flags, keys, sizeof(keys) / sizeof(keys[0]), &s);
    rw_daemon_signals_install("producer");
    err = rw_service_open(&pr.svc, "producer", &s,
                          RW_SVC_PG | RW_SVC_REDIS | RW_SVC_LAGOON |
                              RW_SVC_PRODUCER,
                          NULL, errstr, sizeof(errstr));
    if (err) {
        rw_error("producer", "event=start_failed err=%s detail=\"%s\"",
                 rw_err_name(err), errstr);
        rw_settings_free(&s);
        return 1;
    }
    pr.m_runs = rw_metrics_counter("rollwave_runs_created_total",
                                   "runs created by the scheduler", NULL);
    pr.m_targets = rw_metrics_counter("rollwave_targets_scheduled_total",
                                      "targets in scheduled runs", NULL);
    pr.m_ticks = rw_metrics_counter("rollwave_scheduler_ticks_total",
                                    "scheduler ticks run as leader", NULL);
    if (once) {
        /* one tick, and wait for the leader lock rather than skip it */
        for (int tries = 0; !lead(&pr) && tries < 600 && !rw_daemon_draining();
             tries++)
            rw_service_sleep(100);
        tick(&pr);
        sweep(&pr);
        retention(&pr);
    } else {
        long long next = 0, next_sweep = 0, next_retention = 0;
        deliverer_start(&dl, &s);
        while (!rw_daemon_draining()) {
            if (rw_now_mono_ms() >= next) {
                tick(&pr);
                next = rw_now_mono_ms() + s.tick_interval_s * 1000;
            }
            if (rw_now_mono_ms() >= next_sweep) {
                sweep(&pr);
                /* every replica, so a replica that lost the lead exports
                 * no stale figures (dashboards take the max) */
                runs_by_status(&pr);
                next_sweep = rw_now_mono_ms() + s.sweep_interval_s * 1000;
            }
            if (rw_now_mono_ms() >= next_retention) {
                retention(&pr);
                next_retention =
                    rw_now_mono_ms() + s.retention_interval_s * 1000;
            }
            rw_service_sleep(200);
        }
    }
    rw_info("producer", "event=stopping");
    deliverer_stop(&dl);
    rw_service_close(&pr.svc);
    rw_settings_free(&s);
    return 0;
}
