/*
 * ctl_throttle: "throttle [--max-in-flight N] [--rate N/min] [--by NAME]
 * [--json]" shows the fleet throttle (limits, builds in flight, tokens,
 * Lagoon's queued builds, chunks waiting) and, given a limit, changes it
 * first. Every worker sees a change at its next read (within a second).
 *
 * --max-in-flight 0 is the emergency brake: nothing new is triggered, the
 * builds in flight are polled to their end. A limit smaller than the
 * largest chunk is refused (that chunk could never be triggered). The
 * row is created from the ROLLWAVE_* defaults if no worker has yet.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "rw_throttle.h"

#define CMD "throttle"

/* The largest chunk any run may have: the default or a store app's. */
static const char SQL_MAX_CHUNK[] =
    "SELECT GREATEST($1::int, COALESCE(max(bulk_chunk_size), 0)) AS n"
    " FROM store_apps";

static void print_text(const rw_throttle_state_t *st)
{
    long long lim = rw_throttle_limit(st);

    printf("fleet throttle (changed %s by %s)\n", st->updated_at,
           st->updated_by[0] ? st->updated_by : "-");
    if (st->max_in_flight == 0)
        printf("  builds in flight  %lld / 0  BRAKE: nothing new is "
               "triggered\n",
               st->in_flight);
    else
        printf("  builds in flight  %lld / %lld  (configured %lld, "
               "effective %lld)\n",
               st->in_flight, lim, st->max_in_flight, st->effective);
    printf("  trigger rate      %.6g/min  (tokens %.0f of %lld)\n",
           st->rate_per_min, st->tokens, st->burst);
    printf("  Lagoon queued     %lld of our builds\n", st->queued);
    printf("  leases            %lld targets (budget taken, claim not yet "
           "committed)\n",
           st->leased);
    printf("  waiting           %lld chunks in %lld runs\n", st->chunks_waiting,
           st->runs_waiting);
}

static void print_json(const rw_throttle_state_t *st)
{
    json_t *o = json_pack(
        "{s:I, s:I, s:I, s:I, s:f, s:f, s:I, s:I, s:I, s:I, s:I, s:s, s:s}",
        "max_in_flight", (json_int_t)st->max_in_flight, "effective_limit",
        (json_int_t)st->effective, "limit", (json_int_t)rw_throttle_limit(st),
        "in_flight", (json_int_t)st->in_flight, "trigger_rate_per_min",
        st->rate_per_min, "tokens", st->tokens, "burst", (json_int_t)st->burst,
        "leased", (json_int_t)st->leased, "queued", (json_int_t)st->queued,
        "chunks_waiting", (json_int_t)st->chunks_waiting, "runs_waiting",
        (json_int_t)st->runs_waiting, "updated_at", st->updated_at,
        "updated_by", st->updated_by);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;

    if (text)
        printf("%s\n", text);
    free(text);
    json_decref(o);
}

static rw_err_t max_chunk(rw_pg_t *pg, long long dflt, long long *n,
                          char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char d[24];
    const char *p[1] = {d};

    snprintf(d, sizeof(d), "%lld", dflt);
    err = rw_pg_exec(pg, SQL_MAX_CHUNK, 1, p, &res, errstr, errlen);
    if (!err)
        *n = rw_pg_ll(res, 0, "n", dflt);
    PQclear(res);
    return err;
}

int rw_ctl_throttle(int argc, char **argv, const rw_settings_t *s)
{
    long long max = -1, chunk = 0;
    double rate = 0;
    bool json = false;
    const char *by = "rollwavectl";
    rw_pg_t *pg = NULL;
    rw_throttle_state_t st;
    char errstr[512], who[128];
    rw_err_t err = RW_OK;
    int rc = RW_CTL_EXIT_OK;

    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--max-in-flight") == 0) {
            if (rw_ctl_parse_ll(CMD, "--max-in-flight", val, 0, 100000000,
                                &max))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(argv[i], "--rate") == 0) {
            if (!val) {
                rw_ctl_errorf(CMD, "--rate needs a value such as 600/min");
                return RW_CTL_EXIT_USAGE;
            }
            if (rw_throttle_parse_rate(val, &rate, errstr, sizeof(errstr))) {
                rw_ctl_errorf(CMD, "--rate: %s", errstr);
                return RW_CTL_EXIT_USAGE;
            }
            if (rw_throttle_validate(0, "--max-in-flight", rate, "--rate", 0,
                                     errstr, sizeof(errstr))) {
                rw_ctl_errorf(CMD, "%s", errstr);
                return RW_CTL_EXIT_USAGE;
            }
            i++;
        } else if (strcmp(argv[i], "--by") == 0 && val) {
            by = val;
            i++;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else {
            rw_ctl_errorf(CMD,
                          "unknown argument '%s' (see rollwavectl "
                          "throttle --help)",
                          argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    /* the environment seeds the row when there is none: check it too */
    if (rw_throttle_validate(s->max_in_flight, "ROLLWAVE_MAX_IN_FLIGHT",
                             (double)s->trigger_rate_per_min,
                             "ROLLWAVE_TRIGGER_RATE_PER_MIN",
                             s->bulk_chunk_size, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "config error: %s", errstr);
        return RW_CTL_EXIT_USAGE;
    }
    err = rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr));
    if (!err)
        err = rw_throttle_seed(
            pg, s->max_in_flight, (double)s->trigger_rate_per_min,
            s->bulk_chunk_size, "ROLLWAVE_* defaults", errstr, sizeof(errstr));
    if (!err && max > 0)
        err = max_chunk(pg, s->bulk_chunk_size, &chunk, errstr, sizeof(errstr));
    if (err) {
        rw_ctl_errorf(CMD, "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (max >= 0 && rw_throttle_validate(max, "--max-in-flight", 1, "--rate",
                                         chunk, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        rc = RW_CTL_EXIT_USAGE;
        goto out;
    }
    if (max >= 0 || rate > 0) {
        snprintf(who, sizeof(who), "%s", by);
        err = rw_throttle_set(pg, max, rate, who, errstr, sizeof(errstr));
    }
    if (!err)
        err = rw_throttle_read(pg, 0, true, &st, errstr, sizeof(errstr));
    if (err) {
        rw_ctl_errorf(CMD, "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (json)
        print_json(&st);
    else
        print_text(&st);
out:
    rw_pg_destroy(pg);
    return rc;
}
