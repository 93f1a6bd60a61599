/*
 * ctl_lag: "rollwavectl lag [--group G] [--topic T] [--interval S]
 * [--json]". For each consumer group and its topic: per partition the
 * committed offset, the watermarks and the lag, the group's total, and a
 * status (OK, LAG, LAGGING, STALLED), judged from two samples --interval
 * seconds apart (default 2). The measurement and the rules are rw_lag's
 * (common/rw_lag.h), shared with GET /api/v1/lag; this file parses the
 * arguments and prints.
 *
 * The poller holds poll events until they are due, so its committed offset
 * stands still for up to ROLLWAVE_POLL_INTERVAL_S even when healthy: judge
 * it with an --interval longer than that.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ctl.h"
#include "rw_kafka.h"
#include "rw_lag.h"

#define CMD "lag"

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

static void print_table(const rw_lag_group_t *ts, int nt)
{
    int gw = 5, tw = 5;

    for (int i = 0; i < nt; i++) {
        gw = max_int(gw, (int)strlen(ts[i].group));
        tw = max_int(tw, (int)strlen(ts[i].topic));
    }
    printf("%-*s  %-*s  %9s  %12s  %12s  %12s  %s\n", gw, "GROUP", tw, "TOPIC",
           "PARTITION", "COMMITTED", "HIGH", "LAG", "STATUS");
    for (int i = 0; i < nt; i++) {
        const rw_lag_group_t *t = &ts[i];
        const rw_lag_sample_t *last;

        if (t->status == RW_LAG_UNKNOWN) {
            printf("%-*s  %-*s  %9s  %12s  %12s  %12s  %s (%s)\n", gw, t->group,
                   tw, t->topic, "-", "-", "-", "-",
                   rw_lag_status_name(t->status), t->errstr);
            continue;
        }
        last = t->samples[t->taken - 1];
        for (int p = 0; p < t->n; p++) {
            char c[24];
            fmt_committed(c, sizeof(c), last[p].committed);
            printf("%-*s  %-*s  %9d  %12s  %12" PRId64 "  %12" PRId64 "  %s\n",
                   gw, t->group, tw, t->topic, p, c, last[p].high, last[p].lag,
                   rw_lag_status_name(rw_lag_partition_status(t, p)));
        }
        printf("%-*s  %-*s  %9s  %12s  %12s  %12" PRId64 "  %s\n", gw, t->group,
               tw, t->topic, "TOTAL", "", "", t->total,
               rw_lag_status_name(t->status));
    }
}

static int print_json(const rw_lag_group_t *ts, int nt, long long interval)
{
    json_t *root = rw_lag_json(ts, nt, interval);
    int rc = 0;

    if (root && json_dumpf(root, stdout, JSON_INDENT(2)) == 0)
        fputc('\n', stdout);
    else
        rc = -1;
    json_decref(root);
    return rc;
}

int rw_ctl_lag(int argc, char **argv, const rw_settings_t *s)
{
    rw_lag_group_t ts[RW_LAG_MAX_GROUPS];
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
        if (rw_lag_group_init(&ts[0], group, topic)) {
            rw_ctl_errorf(CMD, "group or topic name too long");
            return RW_CTL_EXIT_USAGE;
        }
        nt = 1;
    } else {
        rw_lag_default_groups(s, ts, &nt);
    }

    rw_lag_measure(s, ts, nt, interval * 1000);
    for (int i = 0; i < nt; i++) {
        if (ts[i].status == RW_LAG_UNKNOWN) {
            rw_ctl_errorf(CMD, "group %s on %s: %s", ts[i].group, ts[i].topic,
                          ts[i].errstr);
            failed = 1;
        }
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
    rw_lag_groups_free(ts, nt);
    return rc;
}
