/*
 * ctl_lag: "rollwavectl lag [--group G] [--topic T] [--interval S]
 * [--json]". For each consumer group and its topic: per partition the
 * committed offset, the watermarks and the lag, the group's total, and a
 * status in the spirit of Burrow, judged from two samples --interval
 * seconds apart (default 2):
 *
 *   OK       lag 0, or the committed offset moves and the lag does not grow
 *   LAGGING  the lag grows: the committed offset moves but falls behind, or
 *            a backlog appeared between the samples
 *   STALLED  the committed offset does not move while the lag is > 0 in
 *            both samples
 *   LAG      with --interval 0 (one sample): lag > 0, motion unknown
 *
 * The group's status is the worst of its partitions'. "No commit yet"
 * counts the lag from the low watermark, as does a committed offset that
 * retention has already deleted: that is where the group would resume.
 *
 * Offsets come from OffsetFetch and ListOffsets through rw_kafka on a
 * handle that never joins the group, so looking changes nothing. It does
 * not use the Admin API (missing on the development broker) and therefore
 * cannot list a group's members: a group with no members and a group whose
 * members do not commit look alike. The poller holds poll events until
 * they are due, so its committed offset stands still for up to
 * ROLLWAVE_POLL_INTERVAL_S even when healthy: judge it with an --interval
 * longer than that.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "ctl.h"
#include "rw_kafka.h"

#define CMD        "lag"
#define TIMEOUT_MS 10000
#define MAX_GROUPS 2

typedef enum lag_status {
    ST_OK,
    ST_LAG,
    ST_LAGGING,
    ST_STALLED,
    ST_UNKNOWN, /* the group's offsets could not be read */
} lag_status_t;

static const char *const status_names[] = {"OK", "LAG", "LAGGING", "STALLED",
                                           "UNKNOWN"};

/* One sample of one partition. */
typedef struct sample {
    int64_t committed; /* RW_KAFKA_OFFSET_NONE when the group has none */
    int64_t low, high;
    int64_t lag;
} sample_t;

/* One group on one topic; samples[0] is the first, samples[1] the last. */
typedef struct target {
    char group[256];
    char topic[256];
    rw_kafka_consumer_t *kc;
    int n; /* partitions */
    sample_t *samples[2];
    int taken; /* samples taken */
    lag_status_t status;
    int64_t total;
    char errstr[512];
} target_t;

/* Where the group resumes: its commit, or the log start when it has none
 * or the commit fell out of retention. */
static int64_t lag_of(int64_t committed, int64_t low, int64_t high)
{
    int64_t from =
        committed == RW_KAFKA_OFFSET_NONE || committed < low ? low : committed;

    return high > from ? high - from : 0;
}

static rw_err_t take_sample(target_t *t, sample_t *smp)
{
    int64_t *committed = NULL;
    rw_err_t err = RW_OK;

    committed = calloc((size_t)t->n, sizeof(*committed));
    if (!committed)
        return rw_err_set(t->errstr, sizeof(t->errstr), RW_ERR_NOMEM,
                          "lag sample");
    /* Watermarks first: a commit landing between the two reads then
     * understates the lag instead of making it negative. */
    for (int p = 0; p < t->n; p++) {
        err = rw_kafka_watermarks(t->kc, t->topic, p, &smp[p].low, &smp[p].high,
                                  TIMEOUT_MS, t->errstr, sizeof(t->errstr));
        if (err)
            goto out;
    }
    err = rw_kafka_committed(t->kc, t->topic, committed, t->n, TIMEOUT_MS,
                             t->errstr, sizeof(t->errstr));
    if (err)
        goto out;
    for (int p = 0; p < t->n; p++) {
        smp[p].committed = committed[p];
        smp[p].lag = lag_of(committed[p], smp[p].low, smp[p].high);
    }
out:
    free(committed);
    return err;
}

static lag_status_t partition_status(const target_t *t, int p)
{
    const sample_t *last = &t->samples[t->taken - 1][p];
    const sample_t *first = &t->samples[0][p];

    if (last->lag == 0)
        return ST_OK;
    if (t->taken < 2)
        return ST_LAG;
    if (last->committed != first->committed)
        return last->lag > first->lag ? ST_LAGGING : ST_OK;
    return first->lag > 0 ? ST_STALLED : ST_LAGGING;
}

static void judge(target_t *t)
{
    const sample_t *last;

    if (t->taken == 0) {
        t->status = ST_UNKNOWN;
        return;
    }
    last = t->samples[t->taken - 1];
    t->status = ST_OK;
    t->total = 0;
    for (int p = 0; p < t->n; p++) {
        lag_status_t ps = partition_status(t, p);
        t->total += last[p].lag;
        if (ps > t->status)
            t->status = ps;
    }
}

static rw_err_t target_open(target_t *t, const rw_settings_t *s)
{
    rw_err_t err = RW_OK;

    err = rw_kafka_consumer_new(&t->kc, s, t->group, NULL, 0, t->errstr,
                                sizeof(t->errstr));
    if (err)
        return err;
    err = rw_kafka_partition_count(t->kc, t->topic, &t->n, TIMEOUT_MS,
                                   t->errstr, sizeof(t->errstr));
    if (err)
        return err;
    if (t->n <= 0)
        return rw_err_set(t->errstr, sizeof(t->errstr), RW_ERR_NOT_FOUND,
                          "topic %s has no partitions", t->topic);
    for (int i = 0; i < 2; i++) {
        t->samples[i] = calloc((size_t)t->n, sizeof(sample_t));
        if (!t->samples[i])
            return rw_err_set(t->errstr, sizeof(t->errstr), RW_ERR_NOMEM,
                              "lag samples");
    }
    return RW_OK;
}

static void target_close(target_t *t)
{
    rw_kafka_consumer_destroy(t->kc);
    t->kc = NULL;
    free(t->samples[0]);
    free(t->samples[1]);
}

static void fmt_committed(char *buf, size_t len, int64_t committed)
{
    if (committed == RW_KAFKA_OFFSET_NONE)
        snprintf(buf, len, "none");
    else
        snprintf(buf, len, "%" PRId64, committed);
}

static int max_int(int a, int b)
{
    return a > b ? a : b;
}

static void print_table(const target_t *ts, int nt)
{
    int gw = 5, tw = 5;

    for (int i = 0; i < nt; i++) {
        gw = max_int(gw, (int)strlen(ts[i].group));
        tw = max_int(tw, (int)strlen(ts[i].topic));
    }
    printf("%-*s  %-*s  %9s  %12s  %12s  %12s  %s\n", gw, "GROUP", tw, "TOPIC",
           "PARTITION", "COMMITTED", "HIGH", "LAG", "STATUS");
    for (int i = 0; i < nt; i++) {
        const target_t *t = &ts[i];
        const sample_t *last;

        if (t->status == ST_UNKNOWN) {
            printf("%-*s  %-*s  %9s  %12s  %12s  %12s  %s (%s)\n", gw, t->group,
                   tw, t->topic, "-", "-", "-", "-", status_names[t->status],
                   t->errstr);
            continue;
        }
        last = t->samples[t->taken - 1];
        for (int p = 0; p < t->n; p++) {
            char c[24];
            fmt_committed(c, sizeof(c), last[p].committed);
            printf("%-*s  %-*s  %9d  %12s  %12" PRId64 "  %12" PRId64 "  %s\n",
                   gw, t->group, tw, t->topic, p, c, last[p].high, last[p].lag,
                   status_names[partition_status(t, p)]);
        }
        printf("%-*s  %-*s  %9s  %12s  %12s  %12" PRId64 "  %s\n", gw, t->group,
               tw, t->topic, "TOTAL", "", "", t->total,
               status_names[t->status]);
    }
}

static json_t *committed_json(int64_t committed)
{
    return committed == RW_KAFKA_OFFSET_NONE ? json_null()
                                             : json_integer(committed);
}

static int print_json(const target_t *ts, int nt, long long interval)
{
    json_t *root = json_object();
    json_t *groups = json_array();
    int rc = 0;

    json_object_set_new(root, "interval_s", json_integer(interval));
    json_object_set_new(root, "groups", groups);
    for (int i = 0; i < nt; i++) {
        const target_t *t = &ts[i];
        json_t *g = json_object();
        json_t *parts = json_array();

        json_array_append_new(groups, g);
        json_object_set_new(g, "group", json_string(t->group));
        json_object_set_new(g, "topic", json_string(t->topic));
        json_object_set_new(g, "status", json_string(status_names[t->status]));
        if (t->status == ST_UNKNOWN) {
            json_object_set_new(g, "error", json_string(t->errstr));
            json_decref(parts);
            continue;
        }
        json_object_set_new(g, "lag", json_integer(t->total));
        json_object_set_new(g, "partitions", parts);
        for (int p = 0; p < t->n; p++) {
            const sample_t *last = &t->samples[t->taken - 1][p];
            json_t *o = json_object();

            json_object_set_new(o, "partition", json_integer(p));
            json_object_set_new(o, "committed",
                                committed_json(last->committed));
            json_object_set_new(o, "low", json_integer(last->low));
            json_object_set_new(o, "high", json_integer(last->high));
            json_object_set_new(o, "lag", json_integer(last->lag));
            json_object_set_new(
                o, "status", json_string(status_names[partition_status(t, p)]));
            if (t->taken > 1) {
                const sample_t *first = &t->samples[0][p];
                json_object_set_new(o, "first_committed",
                                    committed_json(first->committed));
                json_object_set_new(o, "first_lag", json_integer(first->lag));
            }
            json_array_append_new(parts, o);
        }
    }
    if (json_dumpf(root, stdout, JSON_INDENT(2)) == 0)
        fputc('\n', stdout);
    else
        rc = -1;
    json_decref(root);
    return rc;
}

static void sleep_s(long long seconds)
{
    struct timespec ts = {(time_t)seconds, 0};

    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int add_target(target_t *ts, int *nt, const char *group,
                      const char *topic)
{
    target_t *t = &ts[*nt];

    if ((size_t)snprintf(t->group, sizeof(t->group), "%s", group) >=
            sizeof(t->group) ||
        (size_t)snprintf(t->topic, sizeof(t->topic), "%s", topic) >=
            sizeof(t->topic)) {
        rw_ctl_errorf(CMD, "group or topic name too long");
        return -1;
    }
    (*nt)++;
    return 0;
}

int rw_ctl_lag(int argc, char **argv, const rw_settings_t *s)
{
    target_t ts[MAX_GROUPS];
    const char *group = NULL, *topic = NULL;
    long long interval = 2;
    int json = 0, nt = 0, failed = 0;
    int rc = RW_CTL_EXIT_OK;

    memset(ts, 0, sizeof(ts));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--group") == 0 && val && *val) {
            group = val;
            i++;
        } else if (strcmp(a, "--topic") == 0 && val && *val) {
            topic = val;
            i++;
        } else if (strcmp(a, "--interval") == 0) {
            if (rw_ctl_parse_ll(CMD, a, val, 0, 3600, &interval))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else {
            rw_ctl_errorf(CMD,
                          "unknown argument or missing value '%s' (see "
                          "rollwavectl lag --help)",
                          a);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (!group != !topic) {
        rw_ctl_errorf(CMD, "--group and --topic go together");
        return RW_CTL_EXIT_USAGE;
    }
    if (group) {
        if (add_target(ts, &nt, group, topic))
            return RW_CTL_EXIT_USAGE;
    } else {
        char batches[256], poll[256];

        /* The daemons' default groups on their topics. */
        rw_kafka_topic(batches, sizeof(batches), s, "batches");
        rw_kafka_topic(poll, sizeof(poll), s, "poll");
        if (add_target(ts, &nt, "rollwave-worker", batches) ||
            add_target(ts, &nt, "rollwave-poller", poll))
            return RW_CTL_EXIT_USAGE;
    }

    for (int i = 0; i < nt; i++)
        if (target_open(&ts[i], s) || take_sample(&ts[i], ts[i].samples[0]))
            ts[i].status = ST_UNKNOWN;
        else
            ts[i].taken = 1;
    if (interval > 0) {
        sleep_s(interval);
        for (int i = 0; i < nt; i++) {
            if (ts[i].status == ST_UNKNOWN)
                continue;
            if (take_sample(&ts[i], ts[i].samples[1]))
                ts[i].status = ST_UNKNOWN;
            else
                ts[i].taken = 2;
        }
    }
    for (int i = 0; i < nt; i++) {
        if (ts[i].status == ST_UNKNOWN) {
            rw_ctl_errorf(CMD, "group %s on %s: %s", ts[i].group, ts[i].topic,
                          ts[i].errstr);
            failed = 1;
            continue;
        }
        judge(&ts[i]);
    }
    if (json) {
        if (print_json(ts, nt, interval)) {
            rw_ctl_errorf(CMD, "cannot write the JSON output");
            failed = 1;
        }
    } else {
        print_table(ts, nt);
    }
    if (failed)
        rc = RW_CTL_EXIT_FAILED;
    for (int i = 0; i < nt; i++)
        target_close(&ts[i]);
    return rc;
}
