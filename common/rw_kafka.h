/*
 * rw_kafka: the one Kafka module every rollwave binary uses: an idempotent
 * producer with delivery reports, a group consumer that commits only offsets
 * the caller stored (at-least-once), dead-lettering, and the offset queries
 * the CLI needs (watermarks, committed offsets, partition counts, offsets
 * by time, a reader outside any group, a group-membership probe, requeueing
 * dead letters), so that nothing else touches librdkafka.
 *
 * It does not decode messages (rw_codec), decide what to retry (rw_err), or
 * use the Admin API, transactions or DescribeConsumerGroups: everything here
 * works the same against the development mock cluster and a real Kafka.
 *
 * Handles are single-threaded: call a handle's functions from one thread.
 * librdkafka's logs and errors go to rw_log with component "kafka".
 */
#ifndef RW_KAFKA_H
#define RW_KAFKA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "rw_err.h"
#include "rw_settings.h"

typedef struct rw_kafka_producer rw_kafka_producer_t;
typedef struct rw_kafka_consumer rw_kafka_consumer_t;
typedef struct rw_kafka_msg rw_kafka_msg_t;

/* One message header; value is binary (len bytes), not NUL-terminated. */
typedef struct rw_kafka_header {
    const char *name;
    const void *value;
    size_t len;
} rw_kafka_header_t;

/*
 * Dead-letter headers. Every header whose name starts with
 * RW_KAFKA_HDR_PREFIX describes a dead-lettering, never the message: no
 * rollwave producer puts one on an ordinary message. The rule, one function
 * (rw_kafka_is_dead_letter_header) used by both directions:
 *   - rw_kafka_dead_letter keeps the original's other headers verbatim,
 *     drops its rw-* ones (left by an earlier dead-lettering of a requeued
 *     message) and adds fresh ones below;
 *   - rw_kafka_requeue sends the dead letter back with every header except
 *     the rw-* ones, i.e. with the headers it had when first produced.
 */
#define RW_KAFKA_HDR_PREFIX           "rw-"
#define RW_KAFKA_HDR_REASON           "rw-reason"
#define RW_KAFKA_HDR_SOURCE_TOPIC     "rw-source-topic"
#define RW_KAFKA_HDR_SOURCE_PARTITION "rw-source-partition"
#define RW_KAFKA_HDR_SOURCE_OFFSET    "rw-source-offset"
/* Set when the payload was cut to RW_KAFKA_DLQ_MAX_PAYLOAD: original size. */
#define RW_KAFKA_HDR_TRUNCATED   "rw-truncated-from"
#define RW_KAFKA_DLQ_MAX_PAYLOAD (256 * 1024)

/* "No offset" in committed-offset answers. */
#define RW_KAFKA_OFFSET_NONE (-1)

/*
 * Delivery report, called from rw_kafka_producer_poll / _flush / _destroy
 * on the calling thread, once per produced message: result RW_OK with the
 * partition and offset it landed at, or an error (partition/offset -1).
 * errmsg is librdkafka's text for the error, "" on success.
 */
typedef void (*rw_kafka_dr_cb)(void *dr_opaque, void *msg_opaque,
                               rw_err_t result, int32_t partition,
                               int64_t offset, const char *errmsg);

/* prefix + name: ("rollwave.", "batches") -> "rollwave.batches". */
void rw_kafka_topic(char *buf, size_t len, const rw_settings_t *s,
                    const char *name);

/*
 * The client configuration every handle starts from: bootstrap servers,
 * security protocol, SASL, CA location, log and error callbacks, then the
 * "key=value,key=value" pass-through of s->kafka_properties (values cannot
 * contain ','). A bad entry or unknown property gives RW_ERR_CONFIG naming
 * the entry or key, never its value. On success *confp belongs to the
 * caller (rd_kafka_conf_destroy, or pass it to rd_kafka_new).
 */
rw_err_t rw_kafka_conf_new(rd_kafka_conf_t **confp, const rw_settings_t *s,
                           char *errstr, size_t errlen);

/* Apply "key=value,key=value" to conf; the parsing half of _conf_new. */
rw_err_t rw_kafka_conf_apply_properties(rd_kafka_conf_t *conf,
                                        const char *props, char *errstr,
                                        size_t errlen);

/* ---- producer ---------------------------------------------------------- */

/*
 * message.timeout.ms of every producer unless ROLLWAVE_KAFKA_PROPERTIES
 * sets another (1 .. _MAX; 0, librdkafka's "forever", is refused). It bounds
 * how long librdkafka keeps a message before its delivery report says it
 * failed, so every wait on a report derives from it (see
 * rw_kafka_producer_delivery_wait_ms) instead of guessing.
 */
#define RW_KAFKA_MESSAGE_TIMEOUT_MS_DEFAULT "25000"
#define RW_KAFKA_MESSAGE_TIMEOUT_MS_MAX     600000
/* librdkafka scans for timed-out messages about once a second. */
#define RW_KAFKA_DELIVERY_MARGIN_MS 5000

/*
 * Idempotent producer (enable.idempotence=true, acks=all; those two cannot
 * be overridden by kafka_properties). dr_cb may be NULL.
 */
rw_err_t rw_kafka_producer_new(rw_kafka_producer_t **kpp,
                               const rw_settings_t *s, rw_kafka_dr_cb dr_cb,
                               void *dr_opaque, char *errstr, size_t errlen);

/*
 * Queue one message (key, payload and headers are copied; key may be NULL).
 * msg_opaque comes back in the delivery report. When the local queue is
 * full this serves delivery reports and retries for a few seconds before
 * returning RW_ERR_KAFKA_TRANSIENT. A fatal producer error (idempotence
 * broken) returns RW_ERR_KAFKA: the producer must be recreated.
 */
rw_err_t rw_kafka_produce(rw_kafka_producer_t *kp, const char *topic,
                          const char *key, size_t keylen, const void *payload,
                          size_t len, const rw_kafka_header_t *headers,
                          size_t n_headers, void *msg_opaque, char *errstr,
                          size_t errlen);

/* Serve delivery reports for up to timeout_ms; returns events served. */
int rw_kafka_producer_poll(rw_kafka_producer_t *kp, int timeout_ms);

/* Wait until every queued message has its delivery report; RW_ERR_TIMEOUT
 * if some are still outstanding after timeout_ms. */
rw_err_t rw_kafka_producer_flush(rw_kafka_producer_t *kp, int timeout_ms,
                                 char *errstr, size_t errlen);

/* Messages queued or in flight without a delivery report yet. */
int rw_kafka_producer_outstanding(const rw_kafka_producer_t *kp);

/* message.timeout.ms in force for kp. */
int rw_kafka_producer_message_timeout_ms(const rw_kafka_producer_t *kp);

/*
 * How long to wait for a report of a message produced now: its message
 * timeout plus RW_KAFKA_DELIVERY_MARGIN_MS, so the report (success or
 * timeout) has arrived when such a wait ends.
 */
int rw_kafka_producer_delivery_wait_ms(const rw_kafka_producer_t *kp);

/*
 * Flush for at most 10 s (logging what is left); messages still without a
 * report are then purged and their (failed) reports served, so every
 * produced message gets exactly one report before the handle is freed.
 * NULL ok.
 */
void rw_kafka_producer_destroy(rw_kafka_producer_t *kp);

/*
 * Dead-letter orig into dlq_topic: original key, payload and headers
 * verbatim, plus rw-reason, rw-source-topic, rw-source-partition and
 * rw-source-offset (replacing any earlier ones). Asynchronous like
 * rw_kafka_produce: the delivery report with msg_opaque says when it is
 * safe to commit orig's offset.
 */
rw_err_t rw_kafka_dead_letter(rw_kafka_producer_t *kp, const char *dlq_topic,
                              const rw_kafka_msg_t *orig, const char *reason,
                              void *msg_opaque, char *errstr, size_t errlen);

/* True when name is a dead-letter header (starts with RW_KAFKA_HDR_PREFIX). */
bool rw_kafka_is_dead_letter_header(const char *name);

/*
 * Send dead letter dead back to the topic named by its rw-source-topic
 * header: same key and payload (a payload cut by dead-lettering stays cut),
 * its headers except the dead-letter ones. RW_ERR_INVALID_ARG when it has
 * no rw-source-topic header. Asynchronous like rw_kafka_produce.
 */
rw_err_t rw_kafka_requeue(rw_kafka_producer_t *kp, const rw_kafka_msg_t *dead,
                          void *msg_opaque, char *errstr, size_t errlen);

/* ---- consumer ---------------------------------------------------------- */

/*
 * Group consumer: group NULL = s->kafka_group; subscribes to topics (none
 * = a handle for offset queries and commits that never joins the group).
 * enable.auto.commit and enable.auto.offset.store are off, offsets start
 * at the earliest message when the group has none. Rebalances are logged;
 * on revoke the stored offsets are committed synchronously first. Eager
 * and cooperative assignment strategies both work here, but the daemons
 * refuse cooperative ones (see rw_kafka_consumer_on_revoke).
 */
rw_err_t rw_kafka_consumer_new(rw_kafka_consumer_t **kcp,
                               const rw_settings_t *s, const char *group,
                               const char *const *topics, size_t n_topics,
                               char *errstr, size_t errlen);

/*
 * Next message within timeout_ms. RW_OK with *msg NULL when none arrived
 * (timeout, partition EOF, or a transient error, which is logged). A fatal
 * consumer error returns RW_ERR_KAFKA. The caller frees *msg with
 * rw_kafka_msg_destroy.
 */
rw_err_t rw_kafka_consumer_poll(rw_kafka_consumer_t *kc, int timeout_ms,
                                rw_kafka_msg_t **msg, char *errstr,
                                size_t errlen);

/* Mark msg processed: its offset + 1 is committed by the next commit.
 * RW_ERR_CONFLICT when its partition is no longer assigned to us. */
rw_err_t rw_kafka_consumer_store(rw_kafka_consumer_t *kc,
                                 const rw_kafka_msg_t *msg, char *errstr,
                                 size_t errlen);

/* Commit stored offsets; nothing stored is RW_OK. */
rw_err_t rw_kafka_consumer_commit(rw_kafka_consumer_t *kc, int sync,
                                  char *errstr, size_t errlen);

/* True while topic/partition is assigned to this consumer: a message held
 * across a rebalance that took its partition away belongs to the new
 * owner, who reads it again from the committed offset. */
bool rw_kafka_consumer_owns(rw_kafka_consumer_t *kc, const char *topic,
                            int32_t partition);

/*
 * Called, inside rw_kafka_consumer_poll (or the close), for each partition
 * taken away by a rebalance, before it is unassigned: whoever holds one of
 * its messages drops it there, unacknowledged, and the partition's next
 * owner (this consumer again, possibly) reads it from the committed
 * offset. No partition is paused or resumed as it is assigned (but a
 * group probe's, which are never read): pausing, resuming or seeking one
 * whose fetch is starting (librdkafka starts it when the committed offset
 * arrives) can leave it unread, so the revoke resumes what was paused and
 * holders are told to let go then. With the cooperative protocol a
 * partition that stays assigned is not revoked, and librdkafka 2.0.2
 * pauses it from its own thread when an incremental rebalance begins: a
 * resume or seek of ours in that moment can be dropped, leaving it paused
 * or skipping what was fetched behind a held message; the eager protocol
 * has no such window, and the daemons refuse cooperative assignors
 * (rw_kafka_consumer_cooperative).
 */
typedef void (*rw_kafka_revoke_fn)(void *opaque, const char *topic,
                                   int32_t partition);
void rw_kafka_consumer_on_revoke(rw_kafka_consumer_t *kc, rw_kafka_revoke_fn fn,
                                 void *opaque);

/* True when the consumer's partition.assignment.strategy (librdkafka's
 * default, or ROLLWAVE_KAFKA_PROPERTIES) names a cooperative assignor. */
bool rw_kafka_consumer_cooperative(rw_kafka_consumer_t *kc);

/* Stop / restart fetching one assigned partition. */
rw_err_t rw_kafka_consumer_pause(rw_kafka_consumer_t *kc, const char *topic,
                                 int32_t partition, char *errstr,
                                 size_t errlen);
rw_err_t rw_kafka_consumer_resume(rw_kafka_consumer_t *kc, const char *topic,
                                  int32_t partition, char *errstr,
                                  size_t errlen);

/*
 * Move the fetch position of an assigned partition, e.g. back to a message
 * that is not due yet so it is read again after resume. timeout_ms 0 =
 * asynchronous.
 */
rw_err_t rw_kafka_consumer_seek(rw_kafka_consumer_t *kc, const char *topic,
                                int32_t partition, int64_t offset,
                                int timeout_ms, char *errstr, size_t errlen);

/*
 * Commit an explicit offset per partition (offsets[i] for partition i,
 * RW_KAFKA_OFFSET_NONE = leave that partition alone) for kc's group,
 * synchronously. On a handle made with no topics this commits without
 * joining the group (a real Kafka refuses it while the group has members);
 * on a handle from rw_kafka_group_probe the commit carries the probe's
 * group generation, so a member that joined since makes it fail instead
 * of racing it.
 */
rw_err_t rw_kafka_consumer_commit_offsets(rw_kafka_consumer_t *kc,
                                          const char *topic,
                                          const int64_t *offsets, int n,
                                          char *errstr, size_t errlen);

/* Commit stored offsets and leave the group. Idempotent. */
void rw_kafka_consumer_close(rw_kafka_consumer_t *kc);

/* Close if needed and free. NULL ok. */
void rw_kafka_consumer_destroy(rw_kafka_consumer_t *kc);

/*
 * Group-membership probe: may topic's offsets in group be moved, i.e. does
 * group have no other live member consuming topic (n_partitions
 * partitions)? It joins group as a member subscribed to topic that never
 * reads (assigned partitions stay paused), the one way to tell that works
 * on both a real Kafka and the development mock (which has no
 * DescribeGroups), and waits until it holds all n_partitions or its
 * assignment has not changed for 2 s (cooperative rebalancing hands
 * partitions over in a second round).
 *
 *   RW_OK            no other live member: *kcp is a member holding every
 *                    partition of topic (commit with
 *                    rw_kafka_consumer_commit_offsets, leave with
 *                    rw_kafka_consumer_close or _destroy; it stores no
 *                    offsets, so leaving commits nothing).
 *   RW_ERR_CONFLICT  live members, errstr says how it knows: they hold some
 *                    of topic's partitions, or they keep the group
 *                    rebalancing so that our join did not complete within
 *                    twice the session timeout plus 15 s while the group's
 *                    coordinator answered. A group without live members
 *                    lets a new member in within that bound: members that
 *                    went silent are evicted when their session expires
 *                    (given they use our session timeout or a shorter one,
 *                    and the broker's group.initial.rebalance.delay.ms is
 *                    under 15 s), and a sole member completes its round on
 *                    its own. Live members can hold a join up far longer: a
 *                    real Kafka waits up to their max.poll.interval.ms for
 *                    them to rejoin, and the mock starts another round of
 *                    session timeout less 1 s whenever our SyncGroup
 *                    arrives after the leader's, however often that is.
 *   other errors     could not tell (coordinator unreachable, join refused
 *                    with an error, ...).
 *
 * Except on RW_OK, *kcp is NULL and we have left the group. *assigned is
 * the number of topic's partitions the last completed join gave us, -1
 * when none completed. Members of group consuming only other topics are
 * not seen. Joining makes the group's members rebalance (twice, counting
 * the leave).
 */
rw_err_t rw_kafka_group_probe(rw_kafka_consumer_t **kcp, const rw_settings_t *s,
                              const char *group, const char *topic,
                              int n_partitions, int *assigned, char *errstr,
                              size_t errlen);

/* ---- reader ------------------------------------------------------------ */

/*
 * Reader: a consumer that never joins a group and never commits, so
 * reading leaves no trace and any number can read at once. It reads the
 * one partition given to rw_kafka_reader_assign; the offset and metadata
 * queries below work on it too. Free with rw_kafka_consumer_destroy.
 */
rw_err_t rw_kafka_reader_new(rw_kafka_consumer_t **kcp, const rw_settings_t *s,
                             char *errstr, size_t errlen);

/* Read topic/partition from offset on, replacing the earlier assignment. */
rw_err_t rw_kafka_reader_assign(rw_kafka_consumer_t *kc, const char *topic,
                                int32_t partition, int64_t offset, char *errstr,
                                size_t errlen);

/* Stop reading (drop the assignment). */
void rw_kafka_reader_unassign(rw_kafka_consumer_t *kc);

/*
 * Like rw_kafka_consumer_poll, and *eof is true (with *msg NULL) when the
 * reader has read up to the end of its partition.
 */
rw_err_t rw_kafka_reader_poll(rw_kafka_consumer_t *kc, int timeout_ms,
                              rw_kafka_msg_t **msg, bool *eof, char *errstr,
                              size_t errlen);

/* ---- offsets and metadata (CLI: lag, replay) --------------------------- */

/* Number of partitions of topic; RW_ERR_NOT_FOUND if it does not exist. */
rw_err_t rw_kafka_partition_count(rw_kafka_consumer_t *kc, const char *topic,
                                  int *count, int timeout_ms, char *errstr,
                                  size_t errlen);

/* Low and high watermark (next offset to be written) of one partition. */
rw_err_t rw_kafka_watermarks(rw_kafka_consumer_t *kc, const char *topic,
                             int32_t partition, int64_t *low, int64_t *high,
                             int timeout_ms, char *errstr, size_t errlen);

/*
 * Committed offsets of kc's group for partitions 0..n-1 of topic into
 * offsets[] (RW_KAFKA_OFFSET_NONE where the group has none). Uses
 * OffsetFetch, not the Admin API.
 */
rw_err_t rw_kafka_committed(rw_kafka_consumer_t *kc, const char *topic,
                            int64_t *offsets, int n, int timeout_ms,
                            char *errstr, size_t errlen);

/*
 * For partitions 0..n-1 of topic, the offset of the first message whose
 * timestamp is at or after ts_ms (milliseconds since the epoch) into
 * offsets[], RW_KAFKA_OFFSET_NONE where there is no message that recent.
 * The development mock cluster cannot look up by time and answers as if
 * no message were that recent (NONE, or the high watermark): check
 * against message timestamps where it matters.
 */
rw_err_t rw_kafka_offsets_for_time(rw_kafka_consumer_t *kc, const char *topic,
                                   int64_t ts_ms, int64_t *offsets, int n,
                                   int timeout_ms, char *errstr, size_t errlen);

/* ---- messages ---------------------------------------------------------- */

const char *rw_kafka_msg_topic(const rw_kafka_msg_t *msg);
int32_t rw_kafka_msg_partition(const rw_kafka_msg_t *msg);
int64_t rw_kafka_msg_offset(const rw_kafka_msg_t *msg);
/* Key / payload bytes (not NUL-terminated; NULL with *len 0 when absent). */
const void *rw_kafka_msg_key(const rw_kafka_msg_t *msg, size_t *len);
const void *rw_kafka_msg_payload(const rw_kafka_msg_t *msg, size_t *len);
/* Milliseconds since the epoch, -1 when the broker gave none. */
int64_t rw_kafka_msg_timestamp(const rw_kafka_msg_t *msg);
/* Number of headers, and the i-th one (0 <= i < count) into *hdr. */
size_t rw_kafka_msg_header_count(const rw_kafka_msg_t *msg);
int rw_kafka_msg_header_at(const rw_kafka_msg_t *msg, size_t i,
                           rw_kafka_header_t *hdr);
/* Last header called name into *hdr; returns 1 if found, 0 if not. */
int rw_kafka_msg_header(const rw_kafka_msg_t *msg, const char *name,
                        rw_kafka_header_t *hdr);
/*
 * Last header called name as a NUL-terminated string in buf (cut to len - 1
 * bytes); returns 1 if found, 0 if not (buf is then "").
 */
int rw_kafka_msg_header_str(const rw_kafka_msg_t *msg, const char *name,
                            char *buf, size_t len);
/* NULL ok. */
void rw_kafka_msg_destroy(rw_kafka_msg_t *msg);

#endif
