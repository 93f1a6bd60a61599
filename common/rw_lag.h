/*
 * rw_lag: consumer group lag, the figures behind "rollwavectl lag" and
 * GET /api/v1/lag. For each group on its topic: per partition the
 * committed offset, the watermarks and the lag, the group's total, and a
 * status in the spirit of Burrow, judged from two samples interval_ms
 * apart:
 *
 *   OK       lag 0, or the committed offset moves and the lag does not grow
 *   LAGGING  the lag grows: the committed offset moves but falls behind, or
 *            a backlog appeared between the samples
 *   STALLED  the committed offset does not move while the lag is > 0 in
 *            both samples
 *   LAG      with one sample (interval 0): lag > 0, motion unknown
 *
 * The group's status is the worst of its partitions'. "No commit yet"
 * counts the lag from the low watermark, as does a committed offset that
 * retention has already deleted: that is where the group would resume.
 *
 * Offsets come from OffsetFetch and ListOffsets through rw_kafka on a
 * handle that never joins the group, so looking changes nothing. It cannot
 * list a group's members (the development broker has no Admin API). It
 * prints nothing: callers render the groups (rw_lag_json or their own).
 */
#ifndef RW_LAG_H
#define RW_LAG_H

#include <stdint.h>

#include <jansson.h>

#include "rw_err.h"
#include "rw_settings.h"

typedef enum rw_lag_status {
    RW_LAG_OK,
    RW_LAG_LAG,
    RW_LAG_LAGGING,
    RW_LAG_STALLED,
    RW_LAG_UNKNOWN, /* the group's offsets could not be read */
} rw_lag_status_t;

/* One sample of one partition. */
typedef struct rw_lag_sample {
    int64_t committed; /* RW_KAFKA_OFFSET_NONE when the group has none */
    int64_t low, high;
    int64_t lag;
} rw_lag_sample_t;

/* One group on one topic; samples[0] is the first, samples[1] the last. */
typedef struct rw_lag_group {
    char group[256];
    char topic[256];
    int n; /* partitions */
    rw_lag_sample_t *samples[2];
    int taken; /* samples taken */
    rw_lag_status_t status;
    int64_t total;
    char errstr[512];
} rw_lag_group_t;

#define RW_LAG_MAX_GROUPS 2
/* The longest interval the API measures lag over, in seconds. */
#define RW_LAG_MAX_INTERVAL_S 2

/* "OK", "LAG", "LAGGING", "STALLED", "UNKNOWN". */
const char *rw_lag_status_name(rw_lag_status_t st);

/*
 * Fill g with group on topic; RW_ERR_INVALID_ARG when a name does not fit.
 */
rw_err_t rw_lag_group_init(rw_lag_group_t *g, const char *group,
                           const char *topic);

/*
 * The daemons' own groups (rollwave-worker on batches, rollwave-poller on
 * poll) into gs (RW_LAG_MAX_GROUPS entries); *n gets the count.
 */
void rw_lag_default_groups(const rw_settings_t *s, rw_lag_group_t *gs, int *n);

/*
 * Sample every group, wait interval_ms (0 = one sample), sample again and
 * judge. A group whose offsets cannot be read ends RW_LAG_UNKNOWN with its
 * errstr set; the others are still measured. Returns RW_OK, or the error
 * of the first group that failed.
 */
rw_err_t rw_lag_measure(const rw_settings_t *s, rw_lag_group_t *gs, int n,
                        long long interval_ms);

/*
 * rw_lag_measure with each Kafka call bounded by timeout_ms (rw_lag_measure
 * allows 10 s): a server thread measures with a short bound so that an
 * unreachable broker costs it seconds, not minutes. The whole measurement
 * ends by rw_lag_deadline (interval_ms plus RW_LAG_BUDGET_CALLS x
 * timeout_ms): a call that would pass it is not made and its group ends
 * RW_LAG_UNKNOWN ("lag measurement out of time"), so a caller knows the
 * longest it can take whatever the partition count or the broker does.
 */
#define RW_LAG_BUDGET_CALLS 3
long long rw_lag_deadline(long long start_ms, long long interval_ms,
                          int timeout_ms);
rw_err_t rw_lag_measure_within(const rw_settings_t *s, rw_lag_group_t *gs,
                               int n, long long interval_ms, int timeout_ms);

/* Status of partition p of a measured group. */
rw_lag_status_t rw_lag_partition_status(const rw_lag_group_t *g, int p);

/* The groups as the JSON document of "rollwavectl lag --json". */
json_t *rw_lag_json(const rw_lag_group_t *gs, int n, long long interval_s);

/* Free the samples of n groups (the groups themselves are the caller's). */
void rw_lag_groups_free(rw_lag_group_t *gs, int n);

#endif
