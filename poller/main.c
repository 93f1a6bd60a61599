/*
 * rollwave-poller: Poller: follows triggered bulks in Lagoon and writes
 * terminal states back. This file holds the configuration table and process
 * start.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "poll.h"
#include "rw_codec.h"
#include "rw_config.h"
#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_outbox.h"
#include "rw_progress.h"
#include "rw_service.h"
#include "rw_settings.h"

#define SWEEP_MIN_AGE_S 15
#define SWEEP_EVERY_MS  10000
#define MAX_HELD        1024

/*
 * A poll event not yet due is held here and its partition paused: no busy
 * loop, no sleeping through heartbeats. At most one per partition; when it
 * is handled the partition is rewound to the next offset and resumed, so
 * anything fetched after it is read again in order.
 */
typedef struct held {
    rw_kafka_msg_t *msg;
    long long due_ms;
    int retries;
} held_t;

typedef struct poller {
    held_t held[MAX_HELD];
    size_t n_held;
    long long last_sweep;
    rw_poller_logs_t *logs;
} poller_t;

static const rw_cfg_key_t keys[] = {
    RW_KEYS_PROCESS("9103"),
    RW_KEYS_PG,
    RW_KEYS_PG_PREPARE,
    RW_KEYS_REDIS,
    RW_KEYS_KAFKA,
    RW_KEYS_KAFKA_GROUP("rollwave-poller"),
    RW_KEYS_LAGOON,
    RW_KEYS_LOCK,
    RW_KEYS_POLL,
    RW_KEYS_BUILD_LOGS,
};

static held_t *held_for(poller_t *p, const rw_kafka_msg_t *msg)
{
    for (size_t i = 0; i < p->n_held; i++)
        if (strcmp(rw_kafka_msg_topic(p->held[i].msg),
                   rw_kafka_msg_topic(msg)) == 0 &&
            rw_kafka_msg_partition(p->held[i].msg) ==
                rw_kafka_msg_partition(msg))
            return &p->held[i];
    return NULL;
}

/*
 * The farthest ahead a poll event we produce can be due: the longer of the
 * two poll delays plus an hour for clock skew between hosts.
 */
static long long due_horizon_ms(const rw_settings_t *s)
{
    long long a = rw_settings_poll_interval_ms(s);
    long long b = rw_settings_first_poll_delay_ms(s);

    return (a > b ? a : b) + 3600 * 1000;
}

/* Decode and, when due, handle. *due_ms is set when it is not due yet. */
static rw_msg_outcome_t process(rw_service_t *svc, poller_t *p,
                                rw_kafka_msg_t *msg, long long *due_ms,
                                char *reason, size_t len)
{
    rw_poll_msg_t m;
    size_t plen = 0;
    const void *payload = rw_kafka_msg_payload(msg, &plen);
    char errstr[512];
    rw_err_t err;
    rw_msg_outcome_t outcome;

    *due_ms = 0;
    memset(&m, 0, sizeof(m));
    err = rw_codec_poll_decode(payload, plen, &m, errstr, sizeof(errstr));
    if (err) {
        snprintf(reason, len, "%s: %s", rw_err_name(err), errstr);
        rw_codec_poll_free(&m);
        return RW_MSG_DEAD;
    }
    if (m.due_at_ms > rw_now_wall_ms() + due_horizon_ms(svc->s)) {
        /* never hold a partition hostage to a bogus timestamp */
        snprintf(reason, len, "due_at is more than %lld s in the future",
                 due_horizon_ms(svc->s) / 1000);
        rw_codec_poll_free(&m);
        return RW_MSG_DEAD;
    }
    if (m.due_at_ms > rw_now_wall_ms()) {
        *due_ms = m.due_at_ms;
        rw_codec_poll_free(&m);
        return RW_MSG_KEEP;
    }
    outcome = rw_poller_poll(svc, p->logs, &m, reason, len);
    rw_codec_poll_free(&m);
    return outcome;
}

/* Held event i let go unacknowledged (the partition's next owner reads it
 * from the committed offset); the last one takes its place. */
static void drop_held(poller_t *p, size_t i, const char *why)
{
    rw_kafka_msg_t *msg = p->held[i].msg;

    rw_info("poller",
            "event=held_dropped topic=%s partition=%d offset=%lld reason=%s",
            rw_kafka_msg_topic(msg), (int)rw_kafka_msg_partition(msg),
            (long long)rw_kafka_msg_offset(msg), why);
    rw_kafka_msg_destroy(msg);
    p->held[i] = p->held[--p->n_held];
}

/* A rebalance took topic/partition away: its held event is dropped
 * unacknowledged; the partition's next owner reads it again. */
static void revoked(rw_service_t *svc, const char *topic, int32_t partition,
                    void *ud)
{
    poller_t *p = ud;

    (void)svc;
    for (size_t i = 0; i < p->n_held;) {
        if (rw_kafka_msg_partition(p->held[i].msg) != partition ||
            strcmp(rw_kafka_msg_topic(p->held[i].msg), topic) != 0) {
            i++;
            continue;
        }
        drop_held(p, i, "revoked");
    }
}

static void hold(rw_service_t *svc, poller_t *p, rw_kafka_msg_t *msg,
                 long long due_ms)
{
    if (p->n_held == MAX_HELD) {
        /* cannot happen with fewer partitions than MAX_HELD; never drop */
        rw_kafka_consumer_seek(svc->kc, rw_kafka_msg_topic(msg),
                               rw_kafka_msg_partition(msg),
                               rw_kafka_msg_offset(msg), 5000, NULL, 0);
        rw_kafka_msg_destroy(msg);
        return;
    }
    rw_kafka_consumer_pause(svc->kc, rw_kafka_msg_topic(msg),
                            rw_kafka_msg_partition(msg), NULL, 0);
    rw_debug("poller",
             "event=poll_held topic=%s partition=%d offset=%lld due_in_ms=%lld",
             rw_kafka_msg_topic(msg), (int)rw_kafka_msg_partition(msg),
             (long long)rw_kafka_msg_offset(msg), due_ms - rw_now_wall_ms());
    p->held[p->n_held].msg = msg;
    p->held[p->n_held].due_ms = due_ms;
    p->held[p->n_held].retries = 0;
    p->n_held++;
}

static rw_msg_outcome_t handle(rw_service_t *svc, rw_kafka_msg_t *msg, void *ud,
                               char *reason, size_t len)
{
    poller_t *p = ud;
    long long due_ms;
    rw_msg_outcome_t outcome;

    if (held_for(p, msg)) {
        /* fetched before the pause took hold: pause it again; it is
         * read from the held event on after the resume */
        rw_kafka_consumer_pause(svc->kc, rw_kafka_msg_topic(msg),
                                rw_kafka_msg_partition(msg), NULL, 0);
        rw_kafka_msg_destroy(msg);
        return RW_MSG_KEEP;
    }
    outcome = process(svc, p, msg, &due_ms, reason, len);
    if (outcome == RW_MSG_KEEP)
        hold(svc, p, msg, due_ms);
    return outcome;
}

/* Handle held events that came due; sweep the outbox and stranded runs. */
static void tick(rw_service_t *svc, void *ud, int *timeout_ms)
{
    poller_t *p = ud;
    long long now = rw_now_wall_ms();

    for (size_t i = 0; i < p->n_held && !rw_daemon_draining();) {
        held_t *h = &p->held[i];
        char reason[512] = "";
        long long due_ms;
        rw_msg_outcome_t outcome;
        int64_t next;

        if (h->due_ms > now) {
            long long wait = h->due_ms - now;
            if (wait < *timeout_ms)
                *timeout_ms = (int)(wait > 0 ? wait : 0);
            i++;
            continue;
        }
        if (!rw_kafka_consumer_owns(svc->kc, rw_kafka_msg_topic(h->msg),
                                    rw_kafka_msg_partition(h->msg))) {
            /* revoked while held: the new owner reads it again */
            drop_held(p, i, "not_owned");
            continue;
        }
        outcome = process(svc, p, h->msg, &due_ms, reason, sizeof(reason));
        if (outcome == RW_MSG_RETRY) {
            h->due_ms =
                now + 200LL * (1LL << (h->retries < 6 ? h->retries : 6));
            h->retries++;
            rw_warn("poller", "event=retry reason=\"%s\"", reason);
            i++;
            continue;
        }
        if (outcome == RW_MSG_DEAD &&
            rw_service_dead_letter(svc, h->msg, reason)) {
            /* no dead letter, no ack: kept, tried again in a second (as
             * rw_service's held messages); a drain leaves it to be read
             * again after the restart */
            h->due_ms = now + 1000;
            i++;
            continue;
        }
        rw_service_ack(svc, h->msg);
        next = rw_kafka_msg_offset(h->msg) + 1;
        rw_kafka_consumer_seek(svc->kc, rw_kafka_msg_topic(h->msg),
                               rw_kafka_msg_partition(h->msg), next, 5000, NULL,
                               0);
        rw_kafka_consumer_resume(svc->kc, rw_kafka_msg_topic(h->msg),
                                 rw_kafka_msg_partition(h->msg), NULL, 0);
        rw_kafka_msg_destroy(h->msg);
        p->held[i] = p->held[--p->n_held];
    }

    if (rw_now_mono_ms() - p->last_sweep >= SWEEP_EVERY_MS) {
        long long published = 0, finalized = 0;
        char errstr[256];
        p->last_sweep = rw_now_mono_ms();
        if (rw_outbox_relay(svc->pg, svc->kp, svc->s, RW_OUTBOX_RELAY_BATCH,
                            SWEEP_MIN_AGE_S, &published, errstr,
                            sizeof(errstr)))
            rw_warn("poller", "event=outbox_sweep_failed detail=\"%s\"",
                    errstr);
        if (rw_progress_sweep(svc->pg, &finalized, errstr, sizeof(errstr)))
            rw_warn("poller", "event=finalize_sweep_failed detail=\"%s\"",
                    errstr);
    }
    rw_poller_logs_retry(p->logs, svc);
}

int main(int argc, char **argv)
{
    rw_settings_t s;
    rw_service_t svc;
    poller_t *p;
    char errstr[512];
    rw_err_t err;

    memset(&s, 0, sizeof(s));
    rw_config_init(argc, argv, "rollwave-poller",
                   "Poller: follows triggered bulks in Lagoon and writes "
                   "terminal states back.",
                   NULL, keys, sizeof(keys) / sizeof(keys[0]), &s);
    if (rw_settings_check_poll_locks(&s, errstr, sizeof(errstr))) {
        fprintf(stderr, "rollwave-poller: config error: %s\n", errstr);
        rw_settings_free(&s);
        return 2;
    }
    rw_daemon_signals_install("poller");
    p = calloc(1, sizeof(*p));
    if (!p) {
        rw_error("poller", "event=start_failed err=NOMEM");
        rw_settings_free(&s);
        return 1;
    }
    /* a bad ROLLWAVE_LOG_* setting or redaction pattern refuses to start */
    err = rw_poller_logs_new(&s, &p->logs, errstr, sizeof(errstr));
    if (err) {
        rw_error("poller", "event=start_failed err=%s detail=\"%s\"",
                 rw_err_name(err), errstr);
        free(p);
        rw_settings_free(&s);
        return 1;
    }
    err = rw_service_open(&svc, "poller", &s,
                          RW_SVC_PG | RW_SVC_REDIS | RW_SVC_LAGOON |
                              RW_SVC_PRODUCER | RW_SVC_CONSUMER,
                          "poll", errstr, sizeof(errstr));
    if (err) {
        rw_error("poller", "event=start_failed err=%s detail=\"%s\"",
                 rw_err_name(err), errstr);
        rw_poller_logs_destroy(p->logs);
        free(p);
        rw_settings_free(&s);
        return 1;
    }
    svc.on_revoke = revoked;
    err = rw_service_consume(&svc, handle, tick, p);
    /* held events were never acknowledged: they are read again later */
    for (size_t i = 0; i < p->n_held; i++)
        rw_kafka_msg_destroy(p->held[i].msg);
    p->n_held = 0;
    rw_service_close(&svc);
    rw_poller_logs_destroy(p->logs);
    free(p);
    rw_settings_free(&s);
    return err ? 1 : 0;
}
