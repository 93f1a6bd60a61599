/*
 * trigger: the worker's handling of one batch message (DESIGN.md section 7,
 * "Trigger"): skip what is done or in flight, re-check eligibility, take
 * budget from the fleet throttle, the Redis locks, claim in Postgres, fire one
 * bulkDeployEnvironmentLatest for the chunk, record the outcome, queue the
 * first poll event.
 */
#ifndef RW_WORKER_TRIGGER_H
#define RW_WORKER_TRIGGER_H

#include "gate.h"
#include "rw_codec.h"
#include "rw_service.h"

/*
 * Handle one decoded batch; msg is the Kafka message it came in (its
 * partition and offset tell a replayed batch from a redelivered one).
 * RW_MSG_ACK once its effect is durable, RW_MSG_RETRY on a retriable failure of
 * Postgres, Redis or Kafka (nothing half-done is left that a retry cannot pick
 * up), RW_MSG_WAIT while the fleet throttle (gate) has no budget for the
 * chunk, RW_MSG_DEAD for a batch naming no known run or chunk.
 */
/*
 * Register the counters that alerts watch and that may stay at 0 for the
 * life of the process, so that their first increment is seen as one.
 */
void rw_worker_trigger_metrics(void);

rw_msg_outcome_t rw_worker_trigger(rw_service_t *svc, rw_gate_t *gate,
                                   const rw_batch_msg_t *m,
                                   const rw_kafka_msg_t *msg, char *reason,
                                   size_t len);

#endif
