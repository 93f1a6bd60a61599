/*
 * rw_replay: the record of replayed offset ranges. "rollwavectl replay
 * --execute" writes, before it commits a consumer group's new offsets,
 * which offsets of which partitions it re-opened; a consumer asks whether
 * an offset it reads lies in such a range, to tell a replayed message from
 * one merely redelivered after a crash or a rebalance (DESIGN.md section
 * 7, "Replay and retry").
 *
 * It does not move offsets (ctl/ctl_replay.c) and does not decide what a
 * replayed message re-attempts (the worker).
 */
#ifndef RW_REPLAY_H
#define RW_REPLAY_H

#include <stddef.h>

#include "rw_err.h"
#include "rw_pg.h"

/* One partition's re-opened range: [from_offset, to_offset). */
typedef struct rw_replay_range {
    int partition;         /* >= 0 */
    long long from_offset; /* the new committed offset */
    long long to_offset;   /* exclusive: the committed offset before */
} rw_replay_range_t;

/*
 * Record n ranges of topic (the logical name, "batches" or "poll") for
 * consumer_group in one statement; requested_by may be NULL. Ranges that
 * re-open nothing (to_offset <= from_offset) are left out; *recorded (may
 * be NULL) gets how many rows were written. Runs in the caller's
 * transaction if there is one.
 */
rw_err_t rw_replay_record(rw_pg_t *pg, const char *consumer_group,
                          const char *topic, const rw_replay_range_t *ranges,
                          size_t n, const char *requested_by, size_t *recorded,
                          char *errstr, size_t errlen);

/*
 * The id of the newest replay of topic (logical name) whose range on
 * partition covers offset, in *replay_id; 0 when none does.
 */
rw_err_t rw_replay_find(rw_pg_t *pg, const char *topic, int partition,
                        long long offset, long long *replay_id, char *errstr,
                        size_t errlen);

#endif
