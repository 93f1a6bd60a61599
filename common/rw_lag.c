/*
 * rw_lag: samples consumer group offsets and judges each group's lag (see
 * rw_lag.h). Each group gets its own rw_kafka consumer handle that never
 * subscribes, opened and closed inside one measurement.
 */
#include "rw_lag.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rw_daemon.h"
#include "rw_kafka.h"

/* Each Kafka call waits this long unless the caller bounds it. */
#define TIMEOUT_MS 10000

/*
 * A call's bound: its own timeout, cut to what is left of the
 * measurement's budget. 0 when nothing is left (the call is not made).
 */
static int bound_ms(long long deadline, int timeout_ms)
{
    long long left = deadline - rw_now_mono_ms();

    if (left <= 0)
        return 0;
    return left < timeout_ms ? (int)left : timeout_ms;
}

static rw_err_t out_of_time(rw_lag_group_t *g)
{
    return rw_err_set(g->errstr, sizeof(g->errstr), RW_ERR_TIMEOUT,
                      "lag measurement out of time");
}

static const char *const status_names[] = {"OK", "LAG", "LAGGING", "STALLED",
                                           "UNKNOWN"};

const char *rw_lag_status_name(rw_lag_status_t st)
{
    if ((int)st < 0 || st > RW_LAG_UNKNOWN)
        return "UNKNOWN";
    return status_names[st];
}

/* Where the group resumes: its commit, or the log start when it has none
 * or the commit fell out of retention. */
static int64_t lag_of(int64_t committed, int64_t low, int64_t high)
{
    int64_t from =
        committed == RW_KAFKA_OFFSET_NONE || committed < low ? low : committed;

    return high > from ? high - from : 0;
}

static rw_err_t take_sample(rw_lag_group_t *g, rw_kafka_consumer_t *kc,
                            rw_lag_sample_t *smp, long long deadline,
                            int timeout_ms)
{
    int64_t *committed = NULL;
    rw_err_t err = RW_OK;
    int t;

    committed = calloc((size_t)g->n, sizeof(*committed));
    if (!committed)
        return rw_err_set(g->errstr, sizeof(g->errstr), RW_ERR_NOMEM,
                          "lag sample");
    /* Watermarks first: a commit landing between the two reads then
     * understates the lag instead of making it negative. */
    for (int p = 0; p < g->n; p++) {
        if ((t = bound_ms(deadline, timeout_ms)) == 0) {
            err = out_of_time(g);
            goto out;
        }
        err = rw_kafka_watermarks(kc, g->topic, p, &smp[p].low, &smp[p].high, t,
                                  g->errstr, sizeof(g->errstr));
        if (err)
            goto out;
    }
    if ((t = bound_ms(deadline, timeout_ms)) == 0) {
        err = out_of_time(g);
        goto out;
    }
    err = rw_kafka_committed(kc, g->topic, committed, g->n, t, g->errstr,
                             sizeof(g->errstr));
    if (err)
        goto out;
    for (int p = 0; p < g->n; p++) {
        smp[p].committed = committed[p];
        smp[p].lag = lag_of(committed[p], smp[p].low, smp[p].high);
    }
out:
    free(committed);
    return err;
}

rw_lag_status_t rw_lag_partition_status(const rw_lag_group_t *g, int p)
{
    const rw_lag_sample_t *last = &g->samples[g->taken - 1][p];
    const rw_lag_sample_t *first = &g->samples[0][p];

    if (last->lag == 0)
        return RW_LAG_OK;
    if (g->taken < 2)
        return RW_LAG_LAG;
    if (last->committed != first->committed)
        return last->lag > first->lag ? RW_LAG_LAGGING : RW_LAG_OK;
    return first->lag > 0 ? RW_LAG_STALLED : RW_LAG_LAGGING;
}

static void judge(rw_lag_group_t *g)
{
    const rw_lag_sample_t *last;

    if (g->taken == 0) {
        g->status = RW_LAG_UNKNOWN;
        return;
    }
    last = g->samples[g->taken - 1];
    g->status = RW_LAG_OK;
    g->total = 0;
    for (int p = 0; p < g->n; p++) {
        rw_lag_status_t ps = rw_lag_partition_status(g, p);
        g->total += last[p].lag;
        if (ps > g->status)
            g->status = ps;
    }
}

static rw_err_t group_open(rw_lag_group_t *g, const rw_settings_t *s,
                           rw_kafka_consumer_t **kc, long long deadline,
                           int timeout_ms)
{
    rw_err_t err = RW_OK;
    int t;

    err = rw_kafka_consumer_new(kc, s, g->group, NULL, 0, g->errstr,
                                sizeof(g->errstr));
    if (err)
        return err;
    if ((t = bound_ms(deadline, timeout_ms)) == 0)
        return out_of_time(g);
    err = rw_kafka_partition_count(*kc, g->topic, &g->n, t, g->errstr,
                                   sizeof(g->errstr));
    if (err)
        return err;
    if (g->n <= 0)
        return rw_err_set(g->errstr, sizeof(g->errstr), RW_ERR_NOT_FOUND,
                          "topic %s has no partitions", g->topic);
    for (int i = 0; i < 2; i++) {
        g->samples[i] = calloc((size_t)g->n, sizeof(rw_lag_sample_t));
        if (!g->samples[i])
            return rw_err_set(g->errstr, sizeof(g->errstr), RW_ERR_NOMEM,
                              "lag samples");
    }
    return RW_OK;
}

rw_err_t rw_lag_group_init(rw_lag_group_t *g, const char *group,
                           const char *topic)
{
    memset(g, 0, sizeof(*g));
    if ((size_t)snprintf(g->group, sizeof(g->group), "%s", group) >=
            sizeof(g->group) ||
        (size_t)snprintf(g->topic, sizeof(g->topic), "%s", topic) >=
            sizeof(g->topic))
        return RW_ERR_INVALID_ARG;
    return RW_OK;
}

void rw_lag_default_groups(const rw_settings_t *s, rw_lag_group_t *gs, int *n)
{
    char batches[256], poll[256];

    /* The daemons' default groups on their topics; the names fit. */
    rw_kafka_topic(batches, sizeof(batches), s, "batches");
    rw_kafka_topic(poll, sizeof(poll), s, "poll");
    rw_lag_group_init(&gs[0], "rollwave-worker", batches);
    rw_lag_group_init(&gs[1], "rollwave-poller", poll);
    *n = 2;
}

static void sleep_ms(long long ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0)
        ;
}

rw_err_t rw_lag_measure(const rw_settings_t *s, rw_lag_group_t *gs, int n,
                        long long interval_ms)
{
    return rw_lag_measure_within(s, gs, n, interval_ms, TIMEOUT_MS);
}

long long rw_lag_deadline(long long start_ms, long long interval_ms,
                          int timeout_ms)
{
    return start_ms + interval_ms + (long long)RW_LAG_BUDGET_CALLS * timeout_ms;
}

rw_err_t rw_lag_measure_within(const rw_settings_t *s, rw_lag_group_t *gs,
                               int n, long long interval_ms, int timeout_ms)
{
    rw_kafka_consumer_t *kcs[RW_LAG_MAX_GROUPS] = {0};
    rw_err_t err = RW_OK, first = RW_OK;
    long long deadline =
        rw_lag_deadline(rw_now_mono_ms(), interval_ms, timeout_ms);

    if (n > RW_LAG_MAX_GROUPS)
        return RW_ERR_INVALID_ARG;
    for (int i = 0; i < n; i++) {
        err = group_open(&gs[i], s, &kcs[i], deadline, timeout_ms);
        if (!err)
            err = take_sample(&gs[i], kcs[i], gs[i].samples[0], deadline,
                              timeout_ms);
        if (err) {
            gs[i].status = RW_LAG_UNKNOWN;
            if (!first)
                first = err;
        } else {
            gs[i].taken = 1;
        }
    }
    if (interval_ms > 0) {
        sleep_ms(interval_ms);
        for (int i = 0; i < n; i++) {
            if (gs[i].status == RW_LAG_UNKNOWN)
                continue;
            err = take_sample(&gs[i], kcs[i], gs[i].samples[1], deadline,
                              timeout_ms);
            if (err) {
                gs[i].status = RW_LAG_UNKNOWN;
                if (!first)
                    first = err;
            } else {
                gs[i].taken = 2;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        if (gs[i].status != RW_LAG_UNKNOWN)
            judge(&gs[i]);
        rw_kafka_consumer_destroy(kcs[i]);
    }
    return first;
}

static json_t *committed_json(int64_t committed)
{
    return committed == RW_KAFKA_OFFSET_NONE ? json_null()
                                             : json_integer(committed);
}

json_t *rw_lag_json(const rw_lag_group_t *gs, int n, long long interval_s)
{
    json_t *root = json_object();
    json_t *groups = json_array();

    json_object_set_new(root, "interval_s", json_integer(interval_s));
    json_object_set_new(root, "groups", groups);
    for (int i = 0; i < n; i++) {
        const rw_lag_group_t *g = &gs[i];
        json_t *o = json_object();
        json_t *parts;

        json_array_append_new(groups, o);
        json_object_set_new(o, "group", json_string(g->group));
        json_object_set_new(o, "topic", json_string(g->topic));
        json_object_set_new(o, "status",
                            json_string(rw_lag_status_name(g->status)));
        if (g->status == RW_LAG_UNKNOWN) {
            json_object_set_new(o, "error", json_string(g->errstr));
            continue;
        }
        parts = json_array();
        json_object_set_new(o, "lag", json_integer(g->total));
        json_object_set_new(o, "partitions", parts);
        for (int p = 0; p < g->n; p++) {
            const rw_lag_sample_t *last = &g->samples[g->taken - 1][p];
            json_t *po = json_object();

            json_object_set_new(po, "partition", json_integer(p));
            json_object_set_new(po, "committed",
                                committed_json(last->committed));
            json_object_set_new(po, "low", json_integer(last->low));
            json_object_set_new(po, "high", json_integer(last->high));
            json_object_set_new(po, "lag", json_integer(last->lag));
            json_object_set_new(
                po, "status",
                json_string(rw_lag_status_name(rw_lag_partition_status(g, p))));
            if (g->taken > 1) {
                const rw_lag_sample_t *first = &g->samples[0][p];
                json_object_set_new(po, "first_committed",
                                    committed_json(first->committed));
                json_object_set_new(po, "first_lag", json_integer(first->lag));
            }
            json_array_append_new(parts, po);
        }
    }
    return root;
}

void rw_lag_groups_free(rw_lag_group_t *gs, int n)
{
    for (int i = 0; i < n; i++) {
        free(gs[i].samples[0]);
        free(gs[i].samples[1]);
        gs[i].samples[0] = gs[i].samples[1] = NULL;
    }
}
