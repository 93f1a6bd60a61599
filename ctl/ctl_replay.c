/*
 * ctl_replay: "rollwavectl replay --group G --topic T (--to-datetime
 * ISO8601 | --to-offset N | --shift-by N | --to-earliest) [--execute]
 * [--json]". Moves a consumer group's committed offsets so that its
 * consumers read the topic again from there. Without --execute it only
 * prints, per partition, the current and the new offset and changes
 * nothing (it does not even join the group).
 *
 * New offsets: --to-earliest is the low watermark; --to-offset N is N on
 * every partition; --shift-by N moves the current committed offset by N
 * (negative = back; a partition without a commit shifts from the low
 * watermark, where the group would start); --to-datetime is the first
 * message at or after that moment (rw_kafka_offsets_for_time; the high
 * watermark when nothing is that recent; where the broker cannot look up
 * by time, a binary search over message timestamps read by a
 * rw_kafka_reader). ISO 8601 without a
 * zone means UTC. Every result is clamped into [low watermark, high
 * watermark].
 *
 * Live members. Kafka refuses to reset the offsets of a group that has
 * members, and so must we: a member would go on from its own position and
 * overwrite ours with its next commit. Without DescribeConsumerGroups
 * (missing on the development broker, where it can hang the client) the
 * check is done by joining (rw_kafka_group_probe): --execute subscribes
 * to T as a member of G, waits for the assignment to settle and compares
 * it with T's partition count. A lone member gets every partition; any other
 * live member of the group subscribed to T takes some, and the replay is
 * refused (exit 1). Live members can also keep our join from completing at
 * all (a busy member slow to rejoin, or on the development broker every
 * round our SyncGroup loses to the leader's); a join still pending after
 * twice the session timeout plus 15 s, while the coordinator answers, is
 * refused the same way, since a group without live members lets a new
 * member in sooner. The new offsets are then committed while we hold the
 * assignment, so the commit carries our group generation: a member that joins
 * in between forces a rebalance and the commit is rejected instead of silently
 * racing it. Then we leave the group (close) without committing anything
 * else. Limits of the method: joining makes live members rebalance once
 * (twice, counting our leaving); a member that has crashed but whose
 * session has not expired is waited for up to the session timeout and
 * then evicted by the coordinator, so it does not block the replay;
 * members of G that consume only other topics get none of T's partitions
 * and are therefore not seen (they cannot overwrite T's offsets either);
 * a member with an incompatible assignment strategy makes our join fail,
 * which also refuses the replay.
 *
 * How the workers take it (DESIGN.md section 7): once the workers are
 * started again they re-read the batches from the new offsets. A
 * re-delivered batch re-attempts only the failed and timed-out targets of
 * its chunk, up to the per-target attempt limit; targets that succeeded or
 * are still in flight are skipped, so a replay never triggers a succeeded
 * environment again. Runs with re-attempted targets go back to running and
 * are finalized again. Replaying the poll topic is harmless too: poll
 * events older than a chunk's recorded attempt are dropped as duplicates.
 *
 * Recorded intent. Before it commits the new offsets, --execute writes to
 * Postgres (rw_replay_record, table replays) the range it re-opens on each
 * partition: [new offset, committed offset before). Workers look a batch's
 * offset up there (rw_replay_find) to tell a replayed batch, which may
 * re-attempt failed targets, from one merely redelivered after a crash,
 * which changes nothing. So --execute needs ROLLWAVE_PG_DSN; a dry run
 * does not. If the offset commit fails after the record was written, the
 * error says so: a record of a replay that never happened only allows
 * re-attempts in its range, which the attempt limit still bounds.
 *
 * It does not stop or start the daemons.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ctl.h"
#include "rw_daemon.h"
#include "rw_kafka.h"
#include "rw_pg.h"
#include "rw_replay.h"
#include "rw_time.h"

#define CMD        "replay"
#define TIMEOUT_MS 10000

typedef enum mode {
    MODE_NONE,
    MODE_DATETIME,
    MODE_OFFSET,
    MODE_SHIFT,
    MODE_EARLIEST,
} replay_mode_t;

static const char *const mode_names[] = {"none", "to-datetime", "to-offset",
                                         "shift-by", "to-earliest"};

typedef struct plan {
    int n;
    int64_t *low, *high, *current, *target;
} plan_t;

static int64_t clamp(int64_t v, int64_t low, int64_t high)
{
    return v < low ? low : v > high ? high : v;
}

static void plan_free(plan_t *pl)
{
    free(pl->low);
    free(pl->high);
    free(pl->current);
    free(pl->target);
}

static rw_err_t plan_alloc(plan_t *pl, int n, char *errstr, size_t errlen)
{
    pl->n = n;
    pl->low = calloc((size_t)n, sizeof(int64_t));
    pl->high = calloc((size_t)n, sizeof(int64_t));
    pl->current = calloc((size_t)n, sizeof(int64_t));
    pl->target = calloc((size_t)n, sizeof(int64_t));
    if (!pl->low || !pl->high || !pl->current || !pl->target)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "replay plan");
    return RW_OK;
}

/* ---- offsets by time ----------------------------------------------------
 * A reader (never a group member, never commits) reads single messages'
 * timestamps where the broker's answer needs checking. */

/* Timestamp of the first message at or after offset in partition, and the
 * offset it was found at. */
static rw_err_t read_ts(rw_kafka_consumer_t *rd, const char *topic,
                        int32_t partition, int64_t offset, int64_t *ts,
                        int64_t *at, char *errstr, size_t errlen)
{
    long long deadline = rw_now_mono_ms() + TIMEOUT_MS;
    rw_err_t err = RW_OK;

    err = rw_kafka_reader_assign(rd, topic, partition, offset, errstr, errlen);
    if (err)
        return err;
    for (;;) {
        rw_kafka_msg_t *msg = NULL;
        bool eof = false;

        err = rw_kafka_reader_poll(rd, 100, &msg, &eof, errstr, errlen);
        if (err)
            break;
        if (msg && rw_kafka_msg_partition(msg) == partition &&
            rw_kafka_msg_offset(msg) >= offset) {
            *ts = rw_kafka_msg_timestamp(msg);
            *at = rw_kafka_msg_offset(msg);
            rw_kafka_msg_destroy(msg);
            break;
        }
        rw_kafka_msg_destroy(msg);
        if (rw_now_mono_ms() >= deadline) {
            err = rw_err_set(errstr, errlen, RW_ERR_TIMEOUT,
                             "no message at %s[%" PRId32 "] offset %" PRId64
                             " within %d ms",
                             topic, partition, offset, TIMEOUT_MS);
            break;
        }
    }
    rw_kafka_reader_unassign(rd);
    return err;
}

/*
 * First offset in [low, high) whose message timestamp is >= ts_ms, by
 * binary search over message timestamps (assumed non-decreasing, as the
 * broker's own time index assumes); high when there is none.
 */
static rw_err_t search_time(rw_kafka_consumer_t *rd, const char *topic,
                            int32_t p, int64_t low, int64_t high, int64_t ts_ms,
                            int64_t *offset, char *errstr, size_t errlen)
{
    int64_t lo = low, hi = high, ts, at;
    rw_err_t err = RW_OK;

    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;

        err = read_ts(rd, topic, p, mid, &ts, &at, errstr, errlen);
        if (err)
            return err;
        if (ts >= ts_ms)
            hi = mid;
        else
            lo = at + 1;
    }
    *offset = lo;
    return RW_OK;
}

/*
 * The new offsets for --to-datetime. A broker that cannot look offsets up
 * by time (the development mock cluster) answers "end of partition" for
 * every timestamp; an answer at the end is therefore checked against the
 * partition's last message and, if that message is newer than ts_ms,
 * replaced by a search over message timestamps.
 */
static rw_err_t offsets_for_time(rw_kafka_consumer_t *kc,
                                 const rw_settings_t *s, const char *topic,
                                 int64_t ts_ms, plan_t *pl, char *errstr,
                                 size_t errlen)
{
    rw_kafka_consumer_t *rd = NULL;
    rw_err_t err = RW_OK;

    err = rw_kafka_offsets_for_time(kc, topic, ts_ms, pl->target, pl->n,
                                    TIMEOUT_MS, errstr, errlen);
    if (err)
        goto out;
    for (int p = 0; p < pl->n; p++) {
        int64_t last_ts, at;

        /* none: no message that recent, so start after all there is. */
        if (pl->target[p] == RW_KAFKA_OFFSET_NONE)
            pl->target[p] = pl->high[p];
        if (pl->target[p] < pl->high[p] || pl->high[p] <= pl->low[p])
            continue;
        if (!rd) {
            err = rw_kafka_reader_new(&rd, s, errstr, errlen);
            if (err)
                goto out;
        }
        err = read_ts(rd, topic, p, pl->high[p] - 1, &last_ts, &at, errstr,
                      errlen);
        if (err)
            goto out;
        if (last_ts < ts_ms)
            continue;
        err = search_time(rd, topic, p, pl->low[p], pl->high[p], ts_ms,
                          &pl->target[p], errstr, errlen);
        if (err)
            goto out;
    }
out:
    rw_kafka_consumer_destroy(rd);
    return err;
}

/*
 * Record the ranges the plan re-opens (partitions whose new offset is
 * below their committed one) as one replay, in one transaction. topic is
 * stored by its logical name (without the prefix), the way consumers know
 * it. *recorded gets the number of partitions written.
 */
static rw_err_t record_plan(rw_pg_t *pg, const rw_settings_t *s,
                            const char *group, const char *topic,
                            const plan_t *pl, const char *by, size_t *recorded,
                            char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_replay_range_t *r = NULL;
    const char *prefix = s->kafka_topic_prefix ? s->kafka_topic_prefix : "";
    const char *logical = topic;
    size_t n = 0;

    *recorded = 0;
    if (*prefix && strncmp(topic, prefix, strlen(prefix)) == 0)
        logical = topic + strlen(prefix);
    r = calloc((size_t)pl->n + 1, sizeof(*r));
    if (!r)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "replay ranges");
    for (int p = 0; p < pl->n; p++) {
        /* without a commit the group has read nothing: nothing re-opened */
        if (pl->current[p] == RW_KAFKA_OFFSET_NONE ||
            pl->target[p] >= pl->current[p])
            continue;
        r[n].partition = p;
        r[n].from_offset = pl->target[p];
        r[n].to_offset = pl->current[p];
        n++;
    }
    err = rw_pg_begin(pg, errstr, errlen);
    if (err)
        goto out;
    err = rw_replay_record(pg, group, logical, r, n, by, recorded, errstr,
                           errlen);
    if (err)
        goto out;
    err = rw_pg_commit(pg, errstr, errlen);
out:
    if (err && rw_pg_in_tx(pg))
        rw_pg_rollback(pg, NULL, 0);
    free(r);
    return err;
}

/* ---- output ------------------------------------------------------------- */

static void print_table(const char *group, const char *topic, const plan_t *pl,
                        int executed, size_t recorded)
{
    printf("group %s, topic %s: %s\n", group, topic,
           executed ? "committed"
                    : "dry run, nothing changed (add --execute to commit)");
    if (executed)
        printf("replayed ranges recorded for %zu partition(s)\n", recorded);
    printf("%9s  %12s  %12s  %12s  %12s  %12s\n", "PARTITION", "CURRENT", "NEW",
           "LOW", "HIGH", "CHANGE");
    for (int p = 0; p < pl->n; p++) {
        char cur[24], change[24];

        if (pl->current[p] == RW_KAFKA_OFFSET_NONE) {
            snprintf(cur, sizeof(cur), "none");
            snprintf(change, sizeof(change), "-");
        } else {
            snprintf(cur, sizeof(cur), "%" PRId64, pl->current[p]);
            snprintf(change, sizeof(change), "%+" PRId64,
                     pl->target[p] - pl->current[p]);
        }
        printf("%9d  %12s  %12" PRId64 "  %12" PRId64 "  %12" PRId64 "  %12s\n",
               p, cur, pl->target[p], pl->low[p], pl->high[p], change);
    }
}

static int print_json(const char *group, const char *topic, replay_mode_t mode,
                      const plan_t *pl, int executed, size_t recorded)
{
    json_t *root = json_object();
    json_t *parts = json_array();
    int rc = 0;

    json_object_set_new(root, "group", json_string(group));
    json_object_set_new(root, "topic", json_string(topic));
    json_object_set_new(root, "mode", json_string(mode_names[mode]));
    json_object_set_new(root, "executed", json_boolean(executed));
    json_object_set_new(root, "recorded_partitions",
                        json_integer((json_int_t)recorded));
    json_object_set_new(root, "partitions", parts);
    for (int p = 0; p < pl->n; p++) {
        json_t *o = json_object();

        json_object_set_new(o, "partition", json_integer(p));
        json_object_set_new(o, "current",
                            pl->current[p] == RW_KAFKA_OFFSET_NONE
                                ? json_null()
                                : json_integer(pl->current[p]));
        json_object_set_new(o, "new", json_integer(pl->target[p]));
        json_object_set_new(o, "low", json_integer(pl->low[p]));
        json_object_set_new(o, "high", json_integer(pl->high[p]));
        json_array_append_new(parts, o);
    }
    if (json_dumpf(root, stdout, JSON_INDENT(2)) == 0)
        fputc('\n', stdout);
    else
        rc = -1;
    json_decref(root);
    return rc;
}

/* ---- the command ----------------------------------------------------------
 */

static int set_mode(replay_mode_t *mode, replay_mode_t m)
{
    if (*mode != MODE_NONE) {
        rw_ctl_errorf(CMD, "give exactly one of --to-datetime, --to-offset, "
                           "--shift-by, --to-earliest");
        return -1;
    }
    *mode = m;
    return 0;
}

int rw_ctl_replay(int argc, char **argv, const rw_settings_t *s)
{
    const char *group = NULL, *topic = NULL, *by = NULL;
    replay_mode_t mode = MODE_NONE;
    long long arg = 0, ts_ms = 0;
    size_t recorded = 0;
    rw_pg_t *pg = NULL;
    char by_buf[96];
    int execute = 0, json = 0, n = 0, assigned = 0;
    rw_kafka_consumer_t *kc = NULL, *member = NULL;
    plan_t pl;
    char errstr[512] = "";
    rw_err_t err = RW_OK;
    int rc = RW_CTL_EXIT_OK;

    memset(&pl, 0, sizeof(pl));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--execute") == 0) {
            execute = 1;
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--to-earliest") == 0) {
            if (set_mode(&mode, MODE_EARLIEST))
                return RW_CTL_EXIT_USAGE;
        } else if (strcmp(a, "--group") == 0 && val && *val) {
            group = argv[++i];
        } else if (strcmp(a, "--topic") == 0 && val && *val) {
            topic = argv[++i];
        } else if (strcmp(a, "--by") == 0 && val && *val) {
            by = argv[++i];
        } else if (strcmp(a, "--to-offset") == 0) {
            if (set_mode(&mode, MODE_OFFSET) ||
                rw_ctl_parse_ll(CMD, a, val, 0, INT64_MAX, &arg))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--shift-by") == 0) {
            if (set_mode(&mode, MODE_SHIFT) ||
                rw_ctl_parse_ll(CMD, a, val, -(1LL << 53), 1LL << 53, &arg))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(a, "--to-datetime") == 0) {
            if (set_mode(&mode, MODE_DATETIME))
                return RW_CTL_EXIT_USAGE;
            if (!val || rw_time_parse(val, RW_TIME_PARTIAL, &ts_ms, errstr,
                                      sizeof(errstr))) {
                rw_ctl_errorf(CMD,
                              "--to-datetime: '%s' is not an ISO 8601 "
                              "time (e.g. 2024-05-01T12:00:00Z): %s",
                              val ? val : "", val ? errstr : "missing");
                return RW_CTL_EXIT_USAGE;
            }
            i++;
        } else {
            rw_ctl_errorf(CMD,
                          "unknown argument or missing value '%s' (see "
                          "rollwavectl replay --help)",
                          a);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (!group || !topic || mode == MODE_NONE) {
        rw_ctl_errorf(CMD, "needs --group, --topic and one of --to-datetime, "
                           "--to-offset, --shift-by, --to-earliest");
        return RW_CTL_EXIT_USAGE;
    }
    if (execute && (!s->pg_dsn || !*s->pg_dsn)) {
        rw_ctl_errorf(CMD, "--execute needs ROLLWAVE_PG_DSN: the re-opened "
                           "offsets are recorded in Postgres, so that "
                           "workers tell a replayed batch from a redelivered "
                           "one (a dry run works without it)");
        return RW_CTL_EXIT_USAGE;
    }
    if (!by || !*by)
        by = getenv("USER");
    snprintf(by_buf, sizeof(by_buf), "%s", by && *by ? by : "operator");

    /* Postgres first: an unreachable database changes nothing anywhere. */
    if (execute) {
        err = rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr));
        if (err)
            goto out;
    }
    /* Where the group is and what the topic holds, without joining. */
    err = rw_kafka_consumer_new(&kc, s, group, NULL, 0, errstr, sizeof(errstr));
    if (!err)
        err = rw_kafka_partition_count(kc, topic, &n, TIMEOUT_MS, errstr,
                                       sizeof(errstr));
    if (!err)
        err = plan_alloc(&pl, n, errstr, sizeof(errstr));
    for (int p = 0; !err && p < n; p++)
        err = rw_kafka_watermarks(kc, topic, p, &pl.low[p], &pl.high[p],
                                  TIMEOUT_MS, errstr, sizeof(errstr));
    if (!err)
        err = rw_kafka_committed(kc, topic, pl.current, n, TIMEOUT_MS, errstr,
                                 sizeof(errstr));
    if (!err && mode == MODE_DATETIME)
        err = offsets_for_time(kc, s, topic, (int64_t)ts_ms, &pl, errstr,
                               sizeof(errstr));
    if (err)
        goto out;
    for (int p = 0; p < n; p++) {
        int64_t from =
            pl.current[p] == RW_KAFKA_OFFSET_NONE ? pl.low[p] : pl.current[p];
        int64_t t = mode == MODE_EARLIEST ? pl.low[p]
                    : mode == MODE_OFFSET ? (int64_t)arg
                    : mode == MODE_SHIFT  ? from + (int64_t)arg
                                          : pl.target[p];
        pl.target[p] = clamp(t, pl.low[p], pl.high[p]);
    }

    if (execute) {
        err = rw_kafka_group_probe(&member, s, group, topic, n, &assigned,
                                   errstr, sizeof(errstr));
        if (err == RW_ERR_CONFLICT) {
            char detail[512];
            snprintf(detail, sizeof(detail), "%s", errstr);
            rw_err_set(errstr, sizeof(errstr), err,
                       "refused: %s; stop its consumers and run again", detail);
        }
        if (err)
            goto out;
        err = record_plan(pg, s, group, topic, &pl, by_buf, &recorded, errstr,
                          sizeof(errstr));
        if (err)
            goto out;
        /* Committed while we hold the assignment: the commit carries our
         * group generation, so a member that joined since makes it fail. */
        err = rw_kafka_consumer_commit_offsets(member, topic, pl.target, n,
                                               errstr, sizeof(errstr));
        if (err) {
            char detail[512];
            snprintf(detail, sizeof(detail), "%s", errstr);
            rw_err_set(errstr, sizeof(errstr), err,
                       "%s (a member may have joined meanwhile); the replay "
                       "of %zu partition(s) was recorded in Postgres but the "
                       "offsets did not move (the record only allows "
                       "re-attempts in its range)",
                       detail, recorded);
            goto out;
        }
        /* Leave now, so the group is free before we report success. */
        rw_kafka_consumer_close(member);
    }
    if (json) {
        if (print_json(group, topic, mode, &pl, execute, recorded))
            err = rw_err_set(errstr, sizeof(errstr), RW_ERR_IO,
                             "cannot write the JSON output");
    } else {
        print_table(group, topic, &pl, execute, recorded);
    }
out:
    if (err) {
        rw_ctl_errorf(CMD, "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
    }
    rw_kafka_consumer_destroy(member);
    rw_kafka_consumer_destroy(kc);
    rw_pg_destroy(pg);
    plan_free(&pl);
    return rc;
}
