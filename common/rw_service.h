/*
 * rw_service: what the three daemons share around their own logic: opening
 * Postgres, Redis, Lagoon and Kafka from the settings, the /metrics and
 * /healthz server, the consume loop (decode errors and unprocessable
 * messages dead-lettered, retriable failures retried with backoff without
 * losing the message, offsets stored only after the handler's effect is
 * durable), the outbox sweep, and the drain on SIGTERM.
 *
 * It knows nothing of batches or polls: each daemon passes a handler.
 */
#ifndef RW_SERVICE_H
#define RW_SERVICE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rw_err.h"
#include "rw_kafka.h"
#include "rw_lagoon.h"
#include "rw_metrics.h"
#include "rw_pg.h"
#include "rw_redis.h"
#include "rw_settings.h"

enum {
    RW_SVC_PG = 1,
    RW_SVC_REDIS = 2,
    RW_SVC_LAGOON = 4,
    RW_SVC_PRODUCER = 8,
    RW_SVC_CONSUMER = 16,
};

typedef struct rw_http rw_http_t;

typedef struct rw_service {
    const char *name; /* "worker", ... : log component and metrics label */
    const rw_settings_t *s;
    rw_pg_t *pg;
    rw_redis_t *rc;
    rw_lagoon_t *lc;
    rw_kafka_producer_t *kp;
    rw_kafka_consumer_t *kc;
    rw_http_t *http;
    char topic_batches[256];
    char topic_poll[256];
    char topic_dlq[256];
    char consume_topic[256];
    uint64_t rng;
    /*
     * Health, written by the main thread (rw_service_note and
     * rw_service_note_ok) and read, and for Redis cleared, by the HTTP
     * thread: atomics, since volatile does not order or tear-proof
     * anything between threads. Relaxed is enough: each flag stands alone.
     */
    atomic_int pg_broken, redis_broken, kafka_broken;
    rw_metric_t *m_consumed, *m_dead, *m_retried, *m_handled, *m_redis_rt;
    rw_metric_t *m_held;
    /*
     * Retries: a handler returning RW_MSG_RETRY may set retry_after_ms (how
     * long to hold the message; 0 = exponential backoff). msg_retries is
     * how many times the message in hand was retried already (0 = first
     * try), so a handler can give up after a limit. Both are reset before
     * every handler call.
     */
    long long retry_after_ms;
    int msg_retries;
    /* ms the message in hand has been waiting (RW_MSG_WAIT), 0 = not */
    long long msg_waited_ms;
    struct rw_held *held; /* messages held for a retry, partition paused */
    size_t n_held, cap_held;
    size_t n_waiting; /* of them, held by RW_MSG_WAIT */
    /*
     * A daemon that keeps messages of its own (RW_MSG_KEEP) sets this: while
     * rw_service_consume runs it is called, with that call's ud, for each
     * partition a rebalance takes away, and drops what it keeps of it
     * unacknowledged (see rw_kafka_consumer_on_revoke). The service's own
     * held messages are dropped the same way.
     */
    void (*on_revoke)(struct rw_service *svc, const char *topic,
                      int32_t partition, void *ud);
    void *consume_ud;
    bool consuming;
} rw_service_t;

/* What a handler did with a message. */
typedef enum rw_msg_outcome {
    RW_MSG_ACK,   /* effect durable: store the offset */
    RW_MSG_RETRY, /* retriable failure: the same message again, later;
                     it is held with its partition paused meanwhile, so
                     the other partitions keep flowing */
    RW_MSG_DEAD,  /* unprocessable: dead-letter with the reason, then ack */
    RW_MSG_KEEP,  /* handler kept the message; it calls rw_service_ack */
    RW_MSG_WAIT,  /* not yet (e.g. no budget): held like RETRY for
                     retry_after_ms, but not a failure: not counted as a
                     retry, no retry limit, msg_waited_ms keeps growing */
} rw_msg_outcome_t;

/* reason (for DEAD and RETRY) is filled by the handler. */
typedef rw_msg_outcome_t (*rw_service_handler)(rw_service_t *svc,
                                               rw_kafka_msg_t *msg, void *ud,
                                               char *reason, size_t len);

/*
 * Called every loop turn (at least every 200 ms): periodic work such as
 * messages held until due. May lower *timeout_ms for the next poll.
 */
typedef void (*rw_service_tick)(rw_service_t *svc, void *ud, int *timeout_ms);

/*
 * Open what `needs` names, start the metrics server (port from settings,
 * 0 = none) and subscribe the consumer to consume_topic (a logical name,
 * "batches" or "poll") when RW_SVC_CONSUMER is set.
 */
rw_err_t rw_service_open(rw_service_t *svc, const char *name,
                         const rw_settings_t *s, unsigned needs,
                         const char *consume_topic, char *errstr,
                         size_t errlen);

/* Drain and release everything (commit offsets, flush the producer). */
void rw_service_close(rw_service_t *svc);

/*
 * The consume loop, until a drain is requested (SIGTERM) and the message
 * in hand is finished. Returns RW_OK after a clean drain.
 */
rw_err_t rw_service_consume(rw_service_t *svc, rw_service_handler handler,
                            rw_service_tick tick, void *ud);

/* Store the message's offset (commit follows asynchronously). */
void rw_service_ack(rw_service_t *svc, const rw_kafka_msg_t *msg);

/*
 * Dead-letter msg with reason: one attempt, waiting for the delivery report
 * (rw_kafka_producer_delivery_wait_ms). RW_OK once the dead letter is in
 * Kafka; it does not store msg's offset.
 */
rw_err_t rw_service_dead_letter(rw_service_t *svc, const rw_kafka_msg_t *msg,
                                const char *reason);

/*
 * Dead-letter msg, retrying every second until it is in Kafka, then store
 * its offset. A drain ends the retries: the error is returned and the
 * offset is not stored, so the message is read again after the restart
 * rather than dropped without a dead letter.
 */
rw_err_t rw_service_dead_letter_ack(rw_service_t *svc,
                                    const rw_kafka_msg_t *msg,
                                    const char *reason);

/* Record a dependency failure for /healthz from an error code. */
void rw_service_note(rw_service_t *svc, rw_err_t err);

/*
 * Record that the dependencies in `what` (RW_SVC_PG, RW_SVC_REDIS, and
 * RW_SVC_CONSUMER or RW_SVC_PRODUCER for Kafka) just worked again, so
 * /healthz stops reporting them.
 */
void rw_service_note_ok(rw_service_t *svc, unsigned what);

/* Sleep up to ms, waking early on a drain request. */
void rw_service_sleep(int ms);

#endif
