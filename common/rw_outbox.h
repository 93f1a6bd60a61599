/*
 * rw_outbox: the transactional outbox (queue a message with the state it
 * announces, publish it after the commit, relay what a crash left behind,
 * prune what was published long ago) and the synchronous producer those
 * need, with the per-message delivery state behind both.
 *
 * It does not create runs (rw_runs) or consume anything (rw_service), and
 * it never decides what a failed delivery means beyond "the row stays
 * unpublished and is relayed again": duplicates are the consumers' concern
 * (every handler is idempotent).
 *
 * Delivery state belongs to the message, not to a waiter's stack: librdkafka
 * reports each produced message exactly once (rw_kafka_producer_destroy
 * purges and reports what is left), possibly after the waiter gave up, so
 * the state is reference counted and the report drops the message's
 * reference. Single-threaded like the producer handle it is used with.
 */
#ifndef RW_OUTBOX_H
#define RW_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rw_err.h"
#include "rw_kafka.h"
#include "rw_pg.h"
#include "rw_settings.h"

/* ---- delivery state ---------------------------------------------------- */

typedef struct rw_delivery rw_delivery_t;

/*
 * Delivery state of one message about to be produced; outbox_id is the
 * outbox row it publishes (0 = none). Holds one reference, the caller's
 * (rw_delivery_release). NULL when out of memory.
 */
rw_delivery_t *rw_delivery_new(long long outbox_id);

/*
 * Take the message's reference and return d, to pass as msg_opaque to
 * rw_kafka_produce or rw_kafka_dead_letter on a producer created with
 * rw_delivery_cb. Its delivery report drops it; if the produce call fails
 * (no report will come), take it back with rw_delivery_unhold.
 */
void *rw_delivery_hold(rw_delivery_t *d);
void rw_delivery_unhold(rw_delivery_t *d);

/* Drop one reference; the last one frees d. NULL ok. */
void rw_delivery_release(rw_delivery_t *d);

/* True once the report arrived; *result (may be NULL) is its outcome. */
bool rw_delivery_done(const rw_delivery_t *d, rw_err_t *result);

/* The outbox row id d was created with. */
long long rw_delivery_outbox_id(const rw_delivery_t *d);

/*
 * Serve kp's delivery reports until each of d[0..n-1] has its own, for at
 * most timeout_ms (negative: rw_kafka_producer_delivery_wait_ms(kp), by
 * which every report has arrived). RW_ERR_KAFKA_TRANSIENT when some report
 * is still missing; the states stay valid either way (the caller still
 * releases its references) and a late report finds its own state.
 */
rw_err_t rw_delivery_wait(rw_kafka_producer_t *kp, rw_delivery_t *const *d,
                          size_t n, int timeout_ms, char *errstr,
                          size_t errlen);

/*
 * The report callback of producers used with rw_delivery_t (and by every
 * daemon): records the outcome in msg_opaque's state and drops the
 * message's reference. A report whose waiter has gone is logged and
 * counted (rollwave_delivery_reports_late_total), never written anywhere
 * else. msg_opaque NULL: logged only.
 */
void rw_delivery_cb(void *dr_opaque, void *msg_opaque, rw_err_t result,
                    int32_t partition, int64_t offset, const char *errmsg);

/*
 * Produce one message and wait for its delivery report, for as long as the
 * producer's message timeout allows (rw_kafka_producer_delivery_wait_ms).
 * Used where the next step must not happen before the message is durable
 * in Kafka (e.g. committing a consumer offset).
 */
rw_err_t rw_produce_sync(rw_kafka_producer_t *kp, const char *topic,
                         const char *key, const char *payload, char *errstr,
                         size_t errlen);

/* ---- outbox ------------------------------------------------------------ */

/*
 * Queue one message in the outbox inside the caller's transaction (topic is
 * the logical name: "batches" or "poll"); *id identifies the row for
 * rw_outbox_publish. The row is relayed by rw_outbox_relay if the caller
 * dies before publishing it.
 */
rw_err_t rw_outbox_add(rw_pg_t *pg, const char *topic, const char *key,
                       const char *payload, long long *id, char *errstr,
                       size_t errlen);

/*
 * After the caller's commit: produce the row's message, wait for its
 * delivery report and mark the row published. A message not reported
 * delivered leaves the row to the relay.
 */
rw_err_t rw_outbox_publish(rw_pg_t *pg, rw_kafka_producer_t *kp,
                           const rw_settings_t *s, long long id,
                           const char *topic, const char *key,
                           const char *payload, char *errstr, size_t errlen);

/*
 * Rows per relay round, the limit every relay passes. A round holds its
 * rows, their Kafka copies and delivery reports until it ends (about 8 KiB
 * per batch message): this keeps a relay's memory the same whatever the
 * backlog, while a round trip to the broker per 250 messages costs little.
 */
#define RW_OUTBOX_RELAY_BATCH 250

/*
 * Publish unpublished outbox rows (oldest first, up to limit per round, as
 * many rounds as needed) and mark the delivered ones published: a row is
 * marked only on its own message's successful report, read from that
 * message's delivery state. Rows are locked while in flight so concurrent
 * relays never publish one row twice; a crash mid-way only means a row is
 * published again (at-least-once). Only rows older than min_age_s are
 * taken, so a daemon's sweep leaves rows alone that their writer is about
 * to publish itself. The producer must have been created with
 * rw_delivery_cb.
 */
rw_err_t rw_outbox_relay(rw_pg_t *pg, rw_kafka_producer_t *kp,
                         const rw_settings_t *s, int limit, int min_age_s,
                         long long *published, char *errstr, size_t errlen);

/*
 * Delete rows published more than retention_s seconds ago (by the
 * database's clock, which stamped published_at), at most batch rows per
 * statement, each statement its own transaction, until none is left.
 * Unpublished rows are never deleted. *n_deleted counts the rows removed,
 * also when a later statement fails; they are logged and counted in
 * rollwave_outbox_pruned_total. pg must not be inside a transaction.
 */
#define RW_OUTBOX_PRUNE_BATCH 1000
rw_err_t rw_outbox_prune(rw_pg_t *pg, long long retention_s, int batch,
                         long long *n_deleted, char *errstr, size_t errlen);

#endif
