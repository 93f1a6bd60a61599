/*
 * rw_chunk: how a chunk's trigger ends, shared by the worker that fired it
 * and the recovery sweep that resolves it when the worker could not:
 *
 *   triggered  Lagoon took the bulk: targets triggered, instances stamped
 *              (next cadence), run running, the first poll event queued;
 *   failed     Lagoon refused it for good: targets failed, instances backed
 *              off, locks released, run finalized if that was its last;
 *   unsent     the mutation is known not to have reached Lagoon: claims
 *              given back (targets pending again, chunk pending, locks
 *              released) so a later batch triggers it as a new attempt.
 *
 * Each is one Postgres transaction through rw_state's transition
 * functions, so a worker and the sweep racing on one chunk change it once:
 * the loser gets RW_ERR_CONFLICT and nothing is written.
 *
 * Not here: deciding which ending applies, talking to Lagoon.
 */
#ifndef RW_CHUNK_H
#define RW_CHUNK_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"
#include "rw_kafka.h"
#include "rw_pg.h"
#include "rw_redis.h"
#include "rw_settings.h"
#include "rw_state.h"

/* A chunk of a run. Strings are borrowed. */
typedef struct rw_chunk_ref {
    long long run_id;
    const char *run_uuid;
    int chunk;
    int attempt; /* the chunk attempt being ended: a chunk that moved on to
                    another attempt meanwhile is not touched (CONFLICT) */
    rw_run_state_t run_status; /* as loaded: pending moves to running */
} rw_chunk_ref_t;

/* One claimed target of the chunk. Strings are borrowed. */
typedef struct rw_chunk_claim {
    long long target_id;
    long long instance_id;
    const char *project;
    const char *environment;
    bool is_beta;
    long long interval_days; /* 0 = no cadence: next_redeploy_at kept */
    long long beta_interval_days;
} rw_chunk_claim_t;

/*
 * The claimed targets of one chunk, for the sweep (the worker has them
 * loaded already). *claims is malloc'd and points into *res: free both
 * (free, PQclear) when done.
 */
rw_err_t rw_chunk_load_claims(rw_pg_t *pg, long long run_id, int chunk,
                              rw_chunk_claim_t **claims, size_t *n,
                              PGresult **res, char *errstr, size_t errlen);

/* Release the locks of these instances held by run_uuid (one pipeline).
 * A failure is logged and returned; the recovery sweep releases the locks
 * of recently finished chunks again, so callers may go on. */
rw_err_t rw_chunk_release_locks(rw_redis_t *rc, const rw_settings_t *s,
                                const char *run_uuid,
                                const long long *instance_ids, size_t n);

/* The same for the instances of several runs' chunks: instance_ids[i]
 * released if run_uuids[i] holds it, all in one pipeline. */
rw_err_t rw_chunk_release_locks_each(rw_redis_t *rc, const rw_settings_t *s,
                                     const char *const *run_uuids,
                                     const long long *instance_ids, size_t n);

/* Renew them for another ROLLWAVE_LOCK_TTL_S (one pipeline); a failure is
 * logged and returned. */
rw_err_t rw_chunk_renew_locks(rw_redis_t *rc, const rw_settings_t *s,
                              const char *run_uuid,
                              const long long *instance_ids, size_t n);

/*
 * Triggered with bulk_id (Lagoon's). Then the first poll event is
 * published (if that fails the outbox sweep publishes it). kp may be NULL
 * to leave the publishing to the outbox relay.
 */
rw_err_t rw_chunk_record_triggered(rw_pg_t *pg, rw_kafka_producer_t *kp,
                                   const rw_settings_t *s,
                                   const rw_chunk_ref_t *c,
                                   const rw_chunk_claim_t *t, size_t n,
                                   const char *bulk_id, const char *reason,
                                   char *errstr, size_t errlen);

/* Failed for good with why; then the locks and the run's finalization. */
rw_err_t rw_chunk_record_failed(rw_pg_t *pg, rw_redis_t *rc,
                                const rw_settings_t *s, const rw_chunk_ref_t *c,
                                const rw_chunk_claim_t *t, size_t n,
                                const char *why, char *errstr, size_t errlen);

/* Not sent (why says how we know); then the locks. The run's status is
 * read again under a share lock in the same transaction: when an abort got
 * there first, the claims are cancelled and the chunk closed instead of
 * left pending for a run nobody will trigger again. */
rw_err_t rw_chunk_record_unsent(rw_pg_t *pg, rw_redis_t *rc,
                                const rw_settings_t *s, const rw_chunk_ref_t *c,
                                const rw_chunk_claim_t *t, size_t n,
                                const char *why, char *errstr, size_t errlen);

#endif
