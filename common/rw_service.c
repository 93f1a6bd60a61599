/*
 * rw_service: connections, health, and the at-least-once consume loop the
 * daemons share. A message leaves the loop in exactly one of three ways:
 * its effect is durable (offset stored), it is dead-lettered with a reason
 * (then stored), or it is retried (the partition is rewound to it). A drain
 * finishes the message in hand first.
 */
#include "rw_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rw_daemon.h"
#include "rw_http.h"
#include "rw_log.h"
#include "rw_outbox.h"
#include "rw_schedule.h"

#define RETRY_BASE_MS 200
#define RETRY_MAX_MS  10000

/* A message waiting for its retry; its partition is paused meanwhile. */
typedef struct rw_held {
    rw_kafka_msg_t *msg;
    long long due_ms; /* monotonic */
    int retries;
    bool waiting;      /* RW_MSG_WAIT: not a failure, not counted */
    long long wait_ms; /* monotonic time it first waited, 0 = never */
} rw_held_t;

static void revoked(void *opaque, const char *topic, int32_t partition);

void rw_service_sleep(int ms)
{
    while (ms > 0 && !rw_daemon_draining()) {
        int step = ms > 100 ? 100 : ms;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* The health flags are shared with the HTTP thread (see rw_service_t). */
static void flag_set(atomic_int *flag, int v)
{
    atomic_store_explicit(flag, v, memory_order_relaxed);
}

static int flag_get(atomic_int *flag)
{
    return atomic_load_explicit(flag, memory_order_relaxed);
}

void rw_service_note(rw_service_t *svc, rw_err_t err)
{
    switch (err) {
    case RW_OK:
        break;
    case RW_ERR_PG_CONN:
        flag_set(&svc->pg_broken, 1);
        break;
    case RW_ERR_REDIS_CONN:
        flag_set(&svc->redis_broken, 1);
        break;
    case RW_ERR_KAFKA:
    case RW_ERR_KAFKA_TRANSIENT:
        flag_set(&svc->kafka_broken, 1);
        break;
    default:
        break;
    }
}

void rw_service_note_ok(rw_service_t *svc, unsigned what)
{
    if (what & RW_SVC_PG)
        flag_set(&svc->pg_broken, 0);
    if (what & RW_SVC_REDIS)
        flag_set(&svc->redis_broken, 0);
    if (what & (RW_SVC_CONSUMER | RW_SVC_PRODUCER))
        flag_set(&svc->kafka_broken, 0);
}

/*
 * /healthz runs on the HTTP thread: it must not touch the main thread's
 * connections. Postgres is pinged with a fresh connection attempt
 * (PQping, no query), Redis with a short-lived connection and PING; Kafka
 * reports what the main loop saw last.
 */
static rw_err_t health(void *ud, char *detail, size_t len)
{
    rw_service_t *svc = ud;

    if (svc->pg && PQping(svc->s->pg_dsn) != PQPING_OK)
        return rw_err_set(detail, len, RW_ERR_PG_CONN,
                          "postgres: not reachable");
    if (flag_get(&svc->pg_broken))
        return rw_err_set(detail, len, RW_ERR_PG_CONN,
                          "postgres: last statement lost the connection");
    if (svc->rc) {
        /* a connection of its own: the main thread's is not shareable */
        rw_redis_t *probe = NULL;
        char why[256];
        rw_err_t err =
            rw_redis_new(&probe, svc->s->redis_url, 1000, why, sizeof(why));
        if (!err)
            err = rw_redis_ping(probe, why, sizeof(why));
        rw_redis_destroy(probe);
        if (err)
            return rw_err_set(detail, len, RW_ERR_REDIS_CONN,
                              "redis: not reachable (%s)", rw_err_name(err));
        flag_set(&svc->redis_broken, 0);
    }
    if (flag_get(&svc->redis_broken))
        return rw_err_set(detail, len, RW_ERR_REDIS_CONN,
                          "redis: not reachable");
    if (flag_get(&svc->kafka_broken))
        return rw_err_set(detail, len, RW_ERR_KAFKA, "kafka: errors");
    return RW_OK;
}

rw_err_t rw_service_open(rw_service_t *svc, const char *name,
                         const rw_settings_t *s, unsigned needs,
                         const char *consume_topic, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    char labels[300];

    memset(svc, 0, sizeof(*svc));
    svc->name = name;
    svc->s = s;
    svc->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    rw_kafka_topic(svc->topic_batches, sizeof(svc->topic_batches), s,
                   "batches");
    rw_kafka_topic(svc->topic_poll, sizeof(svc->topic_poll), s, "poll");
    rw_kafka_topic(svc->topic_dlq, sizeof(svc->topic_dlq), s, "dlq");

    err = rw_metrics_init(name, "0.1.0");
    if (err)
        return rw_err_set(errstr, errlen, err, "metrics registry");
    if (consume_topic) {
        rw_kafka_topic(svc->consume_topic, sizeof(svc->consume_topic), s,
                       consume_topic);
        snprintf(labels, sizeof(labels), "topic=\"%s\"", svc->consume_topic);
        svc->m_consumed = rw_metrics_counter("rollwave_messages_consumed_total",
                                             "messages consumed", labels);
        svc->m_handled = rw_metrics_counter(
            "rollwave_messages_handled_total",
            "messages whose effect is durable (offset stored)", labels);
        svc->m_dead =
            rw_metrics_counter("rollwave_messages_dead_lettered_total",
                               "messages sent to the dead-letter "
                               "topic",
                               labels);
        svc->m_redis_rt = rw_metrics_counter(
            "rollwave_redis_round_trips_total",
            "round trips to Redis (a pipeline counts once)", NULL);
        svc->m_retried = rw_metrics_counter(
            "rollwave_messages_retried_total",
            "retriable failures; the message is processed again", labels);
        svc->m_held = rw_metrics_gauge(
            "rollwave_messages_held",
            "messages held for a retry with their partition paused", labels);
    }

    if (needs & RW_SVC_PG) {
        err = rw_pg_new(&svc->pg, s->pg_dsn, errstr, errlen);
        if (err)
            goto out;
        /* set only where ROLLWAVE_PG_PREPARE is a key (the hot paths) */
        rw_pg_set_prepare(svc->pg, (int)s->pg_prepare);
    }
    if (needs & RW_SVC_REDIS) {
        err = rw_redis_new(&svc->rc, s->redis_url, (long)s->redis_timeout_ms,
                           errstr, errlen);
        if (err)
            goto out;
    }
    if (needs & RW_SVC_LAGOON) {
        rw_lagoon_opts_t lo;
        memset(&lo, 0, sizeof(lo));
        lo.url = s->lagoon_url;
        lo.token = s->lagoon_token;
        lo.token_file = s->lagoon_token_file;
        lo.timeout_ms = (long)s->lagoon_timeout_ms;
        lo.connect_timeout_ms = (long)s->lagoon_connect_timeout_ms;
        lo.ca_file = s->lagoon_ca_file;
        err = rw_lagoon_global_init(errstr, errlen);
        if (!err)
            err = rw_lagoon_new(&svc->lc, &lo, errstr, errlen);
        if (err)
            goto out;
    }
    if (needs & RW_SVC_PRODUCER) {
        err = rw_kafka_producer_new(&svc->kp, s, rw_delivery_cb, NULL, errstr,
                                    errlen);
        if (err)
            goto out;
    }
    if (needs & RW_SVC_CONSUMER) {
        const char *topics[1] = {svc->consume_topic};
        err = rw_kafka_consumer_new(&svc->kc, s, s->kafka_group, topics, 1,
                                    errstr, errlen);
        if (err)
            goto out;
        if (rw_kafka_consumer_cooperative(svc->kc)) {
            /* a partition kept across an incremental rebalance can be
             * left paused, or its seek dropped (rw_kafka.h) */
            err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                             "ROLLWAVE_KAFKA_PROPERTIES: a cooperative "
                             "partition.assignment.strategy is refused; "
                             "the daemons use an eager one (range, "
                             "roundrobin)");
            goto out;
        }
        rw_kafka_consumer_on_revoke(svc->kc, revoked, svc);
    }
    if (s->metrics_port > 0) {
        err = rw_http_start(&svc->http, "0.0.0.0", (int)s->metrics_port, health,
                            svc, errstr, errlen);
        if (err)
            goto out;
    }
    rw_info(name, "event=started metrics_port=%lld consume=%s", s->metrics_port,
            consume_topic ? svc->consume_topic : "-");
out:
    if (err)
        rw_service_close(svc);
    return err;
}

void rw_service_close(rw_service_t *svc)
{
    if (!svc)
        return;
    rw_http_stop(svc->http);
    svc->http = NULL;
    if (svc->kc) {
        rw_kafka_consumer_close(svc->kc);
        rw_kafka_consumer_destroy(svc->kc);
        svc->kc = NULL;
    }
    rw_kafka_producer_destroy(svc->kp);
    svc->kp = NULL;
    rw_lagoon_destroy(svc->lc);
    svc->lc = NULL;
    rw_redis_destroy(svc->rc);
    svc->rc = NULL;
    rw_pg_destroy(svc->pg);
    svc->pg = NULL;
    rw_metrics_shutdown();
}

void rw_service_ack(rw_service_t *svc, const rw_kafka_msg_t *msg)
{
    char errstr[256];

    if (rw_kafka_consumer_store(svc->kc, msg, errstr, sizeof(errstr)))
        rw_warn(svc->name,
                "event=offset_store_failed topic=%s partition=%d "
                "offset=%lld detail=\"%s\"",
                rw_kafka_msg_topic(msg), (int)rw_kafka_msg_partition(msg),
                (long long)rw_kafka_msg_offset(msg), errstr);
    rw_metrics_add(svc->m_handled, 1);
}

rw_err_t rw_service_dead_letter(rw_service_t *svc, const rw_kafka_msg_t *msg,
                                const char *reason)
{
    rw_err_t err = RW_OK;
    rw_delivery_t *d = NULL;
    char errstr[256] = "";
    char qreason[512];

    rw_warn(svc->name,
            "event=dead_letter topic=%s partition=%d offset=%lld reason=%s",
            rw_kafka_msg_topic(msg), (int)rw_kafka_msg_partition(msg),
            (long long)rw_kafka_msg_offset(msg),
            rw_log_quote(qreason, sizeof(qreason), reason));
    /* on the heap: the report may come after this function gave up */
    d = rw_delivery_new(0);
    if (!d) {
        err = rw_err_set(errstr, sizeof(errstr), RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    err = rw_kafka_dead_letter(svc->kp, svc->topic_dlq, msg, reason,
                               rw_delivery_hold(d), errstr, sizeof(errstr));
    if (err) {
        rw_delivery_unhold(d); /* never queued: no report will come */
        goto out;
    }
    err = rw_delivery_wait(svc->kp, &d, 1, -1, errstr, sizeof(errstr));
    if (err)
        goto out;
    rw_delivery_done(d, &err);
    if (err)
        rw_err_set(errstr, sizeof(errstr), err, "delivery to %s failed",
                   svc->topic_dlq);
out:
    rw_delivery_release(d);
    if (err) {
        rw_error(svc->name, "event=dead_letter_failed err=%s detail=\"%s\"",
                 rw_err_name(err), errstr);
        return err;
    }
    rw_metrics_add(svc->m_dead, 1);
    return RW_OK;
}

rw_err_t rw_service_dead_letter_ack(rw_service_t *svc,
                                    const rw_kafka_msg_t *msg,
                                    const char *reason)
{
    rw_err_t err = RW_OK;

    for (;;) {
        err = rw_service_dead_letter(svc, msg, reason);
        if (!err || rw_daemon_draining())
            break;
        rw_service_sleep(1000);
    }
    if (err) {
        /*
         * Storing the offset now would drop the message for good: leave
         * it uncommitted so it is read again after the restart.
         */
        rw_warn(svc->name,
                "event=dead_letter_deferred topic=%s partition=%d "
                "offset=%lld reason=draining",
                rw_kafka_msg_topic(msg), (int)rw_kafka_msg_partition(msg),
                (long long)rw_kafka_msg_offset(msg));
        return err;
    }
    rw_service_ack(svc, msg);
    return RW_OK;
}

/* Index of the held message of msg's partition, or -1. */
static long held_for(const rw_service_t *svc, const rw_kafka_msg_t *msg)
{
    for (size_t i = 0; i < svc->n_held; i++)
        if (rw_kafka_msg_partition(svc->held[i].msg) ==
                rw_kafka_msg_partition(msg) &&
            strcmp(rw_kafka_msg_topic(svc->held[i].msg),
                   rw_kafka_msg_topic(msg)) == 0)
            return (long)i;
    return -1;
}

/*
 * Hold msg (ownership taken) for a retry: pause its partition and try it
 * again when due, instead of sleeping in the loop while the other
 * partitions wait. retries is how often it was retried before. A wait
 * (RW_MSG_WAIT) is held the same way but is not a failure: not counted,
 * not logged as a retry, and it keeps the time it first waited.
 */
static void hold(rw_service_t *svc, rw_kafka_msg_t *msg, int retries,
                 const char *reason, bool wait, long long wait_since_ms)
{
    long long delay =
        svc->retry_after_ms > 0
            ? svc->retry_after_ms
            : rw_backoff_ms(retries, RETRY_BASE_MS, RETRY_MAX_MS, &svc->rng);
    rw_held_t *h;

    if (wait) {
        rw_debug(svc->name,
                 "event=wait topic=%s partition=%d offset=%lld delay_ms=%lld "
                 "reason=\"%s\"",
                 rw_kafka_msg_topic(msg), (int)rw_kafka_msg_partition(msg),
                 (long long)rw_kafka_msg_offset(msg), delay, reason);
    } else {
        rw_metrics_add(svc->m_retried, 1);
        rw_warn(svc->name,
                "event=retry topic=%s partition=%d offset=%lld retries=%d "
                "delay_ms=%lld reason=\"%s\"",
                rw_kafka_msg_topic(msg), (int)rw_kafka_msg_partition(msg),
                (long long)rw_kafka_msg_offset(msg), retries + 1, delay,
                reason);
    }
    if (svc->n_held == svc->cap_held) {
        size_t cap = svc->cap_held ? svc->cap_held * 2 : 16;
        rw_held_t *grown = realloc(svc->held, cap * sizeof(*grown));
        if (!grown) {
            /* cannot hold it: rewind so it is read again, never dropped */
            rw_kafka_consumer_seek(svc->kc, rw_kafka_msg_topic(msg),
                                   rw_kafka_msg_partition(msg),
                                   rw_kafka_msg_offset(msg), 5000, NULL, 0);
            rw_kafka_msg_destroy(msg);
            return;
        }
        svc->held = grown;
        svc->cap_held = cap;
    }
    rw_kafka_consumer_pause(svc->kc, rw_kafka_msg_topic(msg),
                            rw_kafka_msg_partition(msg), NULL, 0);
    h = &svc->held[svc->n_held++];
    h->msg = msg;
    h->due_ms = rw_now_mono_ms() + delay;
    h->retries = wait ? retries : retries + 1;
    h->waiting = wait;
    h->wait_ms = wait ? (wait_since_ms ? wait_since_ms : rw_now_mono_ms()) : 0;
    svc->n_waiting += wait;
    rw_metrics_set(svc->m_held, (double)svc->n_held);
}

/* Release held entry i: its message is finished (or owned elsewhere). */
static void unhold(rw_service_t *svc, size_t i, bool resume)
{
    rw_kafka_msg_t *msg = svc->held[i].msg;

    if (resume) {
        /* anything fetched after it was dropped: read it again in order */
        rw_kafka_consumer_seek(svc->kc, rw_kafka_msg_topic(msg),
                               rw_kafka_msg_partition(msg),
                               rw_kafka_msg_offset(msg) + 1, 5000, NULL, 0);
        rw_kafka_consumer_resume(svc->kc, rw_kafka_msg_topic(msg),
                                 rw_kafka_msg_partition(msg), NULL, 0);
        rw_kafka_msg_destroy(msg);
    }
    svc->n_waiting -= svc->held[i].waiting;
    svc->held[i] = svc->held[--svc->n_held];
    rw_metrics_set(svc->m_held, (double)svc->n_held);
}

/*
 * A rebalance took topic/partition away (rw_kafka_consumer_on_revoke): its
 * held message is dropped unacknowledged, and whoever owns the partition
 * next (this consumer again, possibly) reads it from the committed offset.
 */
static void revoked(void *opaque, const char *topic, int32_t partition)
{
    rw_service_t *svc = opaque;

    for (size_t i = 0; i < svc->n_held;) {
        rw_kafka_msg_t *msg = svc->held[i].msg;

        if (rw_kafka_msg_partition(msg) != partition ||
            strcmp(rw_kafka_msg_topic(msg), topic) != 0) {
            i++;
            continue;
        }
        rw_info(svc->name,
                "event=held_dropped topic=%s partition=%d offset=%lld "
                "reason=revoked",
                topic, (int)partition, (long long)rw_kafka_msg_offset(msg));
        unhold(svc, i, false);
        rw_kafka_msg_destroy(msg);
    }
    if (svc->on_revoke && svc->consuming)
        svc->on_revoke(svc, topic, partition, svc->consume_ud);
}

/* Try the held messages that came due again; lower *timeout_ms to the
 * next due time. */
static void run_held(rw_service_t *svc, rw_service_handler handler, void *ud,
                     int *timeout_ms)
{
    long long now = rw_now_mono_ms();

    for (size_t i = 0; i < svc->n_held && !rw_daemon_draining();) {
        rw_held_t *h = &svc->held[i];
        rw_kafka_msg_t *msg = h->msg;
        char reason[512] = "";
        int retries = h->retries;
        long long wait_since = h->wait_ms;
        rw_msg_outcome_t outcome;

        if (h->due_ms > now) {
            long long wait = h->due_ms - now;
            if (wait < *timeout_ms)
                *timeout_ms = (int)wait;
            i++;
            continue;
        }
        if (!rw_kafka_consumer_owns(svc->kc, rw_kafka_msg_topic(msg),
                                    rw_kafka_msg_partition(msg))) {
            /* revoked while held: the new owner reads it again */
            rw_info(svc->name,
                    "event=held_dropped topic=%s partition=%d offset=%lld "
                    "reason=revoked",
                    rw_kafka_msg_topic(msg), (int)rw_kafka_msg_partition(msg),
                    (long long)rw_kafka_msg_offset(msg));
            unhold(svc, i, false);
            rw_kafka_msg_destroy(msg);
            i = 0;
            continue;
        }
        svc->retry_after_ms = 0;
        svc->msg_retries = retries;
        svc->msg_waited_ms = wait_since ? now - wait_since : 0;
        outcome = handler(svc, msg, ud, reason, sizeof(reason));
        switch (outcome) {
        case RW_MSG_ACK:
            rw_service_ack(svc, msg);
            unhold(svc, i, true);
            break;
        case RW_MSG_DEAD:
            if (rw_service_dead_letter(svc, msg, reason)) {
                /* no dead letter, no ack: try again later */
                svc->retry_after_ms = 1000;
                unhold(svc, i, false);
                hold(svc, msg, retries, reason, false, 0);
                break;
            }
            rw_service_ack(svc, msg);
            unhold(svc, i, true);
            break;
        case RW_MSG_RETRY:
            unhold(svc, i, false);
            hold(svc, msg, retries, reason, false, 0);
            break;
        case RW_MSG_WAIT:
            unhold(svc, i, false);
            hold(svc, msg, retries, reason, true, wait_since);
            break;
        case RW_MSG_KEEP:
            /* the handler owns the message and its paused partition */
            unhold(svc, i, false);
            break;
        }
        /* entries moved: start over; due ones were re-armed into the future */
        i = 0;
        now = rw_now_mono_ms();
    }
}

/* The consume loop's end: held messages were not handled, they come back
 * after a restart (never acknowledged). */
static void release_held(rw_service_t *svc)
{
    svc->consuming = false;
    for (size_t i = 0; i < svc->n_held; i++)
        rw_kafka_msg_destroy(svc->held[i].msg);
    free(svc->held);
    svc->held = NULL;
    svc->n_held = svc->cap_held = svc->n_waiting = 0;
}

rw_err_t rw_service_consume(rw_service_t *svc, rw_service_handler handler,
                            rw_service_tick tick, void *ud)
{
    char errstr[512];
    long long last_commit = rw_now_mono_ms();
    unsigned long long redis_rt = 0;

    svc->consume_ud = ud;
    svc->consuming = true;

    while (!rw_daemon_draining()) {
        rw_kafka_msg_t *msg = NULL;
        rw_msg_outcome_t outcome;
        char reason[512] = "";
        int timeout = 200;
        rw_err_t err;

        if (tick)
            tick(svc, ud, &timeout);
        run_held(svc, handler, ud, &timeout);
        if (svc->rc) {
            /* pipelined lock calls: one round trip per chunk, not per key */
            unsigned long long rt = rw_redis_round_trips(svc->rc);
            rw_metrics_add(svc->m_redis_rt, (double)(rt - redis_rt));
            redis_rt = rt;
        }
        err = rw_kafka_consumer_poll(svc->kc, timeout, &msg, errstr,
                                     sizeof(errstr));
        if (err) {
            rw_service_note(svc, err);
            rw_error(svc->name, "event=consume_failed err=%s detail=\"%s\"",
                     rw_err_name(err), errstr);
            if (!rw_err_is_retriable(err) && err != RW_ERR_KAFKA) {
                release_held(svc);
                return err;
            }
            rw_service_sleep(1000);
            continue;
        }
        if (rw_now_mono_ms() - last_commit > 1000) {
            rw_kafka_consumer_commit(svc->kc, 0, NULL, 0);
            last_commit = rw_now_mono_ms();
        }
        if (!msg)
            continue;
        rw_service_note_ok(svc, RW_SVC_CONSUMER);
        if (held_for(svc, msg) >= 0) {
            /* fetched before the pause took hold: pause it again; it is
             * read from the held message on after the resume */
            rw_kafka_consumer_pause(svc->kc, rw_kafka_msg_topic(msg),
                                    rw_kafka_msg_partition(msg), NULL, 0);
            rw_kafka_msg_destroy(msg);
            continue;
        }
        rw_metrics_add(svc->m_consumed, 1);
        svc->retry_after_ms = 0;
        svc->msg_retries = 0;
        svc->msg_waited_ms = 0;
        outcome = handler(svc, msg, ud, reason, sizeof(reason));
        switch (outcome) {
        case RW_MSG_ACK:
            rw_service_ack(svc, msg);
            break;
        case RW_MSG_DEAD:
            if (rw_service_dead_letter(svc, msg, reason)) {
                /* never acked without its dead letter: hold and retry; a
                 * drain meanwhile leaves it to the next consumer */
                svc->retry_after_ms = 1000;
                hold(svc, msg, 0, "dead letter not written", false, 0);
                msg = NULL;
                break;
            }
            rw_service_ack(svc, msg);
            break;
        case RW_MSG_RETRY:
            hold(svc, msg, 0, reason, false, 0);
            msg = NULL; /* held */
            break;
        case RW_MSG_WAIT:
            hold(svc, msg, 0, reason, true, 0);
            msg = NULL; /* held */
            break;
        case RW_MSG_KEEP:
            msg = NULL; /* the handler owns it now */
            break;
        }
        rw_kafka_msg_destroy(msg);
    }
    release_held(svc);
    rw_kafka_consumer_commit(svc->kc, 1, NULL, 0);
    rw_info(svc->name, "event=drained");
    return RW_OK;
}
