/*
 * ctl_redeploy: "rollwavectl redeploy": a manual run over listed instances
 * or a whole store app, built by the same code as the scheduler's runs
 * (rw_runs), then its batches published (the outbox relay) so workers pick
 * it up at once. --wait follows the run until it is final.
 *
 * --strategy JSON and the strategy flags (--waves, --bake,
 * --max-failures-wave, --max-failures-run, --on-failure) replace the
 * store app's strategy for this run only: the flags apply on top of
 * --strategy, or of the default strategy, and are parsed by rw_strategy's
 * text parsers, so a bad value names its field before anything is written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "rw_kafka.h"
#include "rw_outbox.h"
#include "rw_runs.h"
#include "rw_strategy.h"

/* "1,2,3" -> ids; -1 (with a message) on anything else. */
static int parse_ids(const char *list, long long **ids, size_t *n)
{
    size_t cap = 1;
    const char *p = list;
    char *copy = NULL, *save = NULL, *tok;

    for (; *p; p++)
        cap += *p == ',';
    *ids = calloc(cap, sizeof(**ids));
    copy = strdup(list);
    *n = 0;
    if (!*ids || !copy) {
        free(copy);
        rw_ctl_errorf("redeploy", "out of memory");
        return -1;
    }
    for (tok = strtok_r(copy, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (rw_ctl_parse_ll("redeploy", "--instances", tok, 1, INT64_MAX,
                            &(*ids)[*n])) {
            free(copy);
            return -1;
        }
        (*n)++;
    }
    free(copy);
    if (*n == 0) {
        rw_ctl_errorf("redeploy", "--instances needs at least one id");
        return -1;
    }
    return 0;
}

/* Strategy flags: the option and the rw_strategy field it sets. */
static const struct {
    const char *flag;
    const char *field;
} strategy_flags[] = {
    {"--waves", "waves"},
    {"--bake", "bake"},
    {"--max-failures-wave", "max_failures_wave"},
    {"--max-failures-run", "max_failures_run"},
    {"--on-failure", "on_failure"},
};

/* The run's override as canonical JSON (*json malloc'd), or NULL. */
static int strategy_override(const char *json_text, char **flags, size_t n,
                             char **json)
{
    rw_strategy_t st;
    char errstr[256];

    *json = NULL;
    if (!json_text && n == 0)
        return 0;
    if (rw_strategy_parse_json(json_text, &st, errstr, sizeof(errstr))) {
        rw_ctl_errorf("redeploy", "--strategy: %s", errstr);
        return -1;
    }
    for (size_t i = 0; i < n; i += 2)
        if (rw_strategy_set(&st, flags[i], flags[i + 1], errstr,
                            sizeof(errstr))) {
            rw_ctl_errorf("redeploy", "%s", errstr);
            return -1;
        }
    if (rw_strategy_validate(&st, errstr, sizeof(errstr))) {
        rw_ctl_errorf("redeploy", "%s", errstr);
        return -1;
    }
    *json = rw_strategy_to_json(&st);
    if (!*json) {
        rw_ctl_errorf("redeploy", "out of memory");
        return -1;
    }
    return 0;
}

int rw_ctl_redeploy(int argc, char **argv, const rw_settings_t *s)
{
    long long *ids = NULL, store_app = 0, published = 0;
    size_t n_ids = 0, n_skips = 0;
    bool variables_only = false, wait = false, respect_windows = false;
    const char *by = getenv("USER");
    rw_pg_t *pg = NULL;
    rw_kafka_producer_t *kp = NULL;
    rw_run_summary_t run;
    rw_run_skip_t *skips = NULL;
    char errstr[512], by_buf[96];
    const char *strategy_json = NULL;
    char *strategy = NULL;
    /* field, value pairs of the strategy flags, in order */
    char *flags[2 * sizeof(strategy_flags) / sizeof(strategy_flags[0])];
    size_t n_flags = 0;
    int rc = RW_CTL_EXIT_OK;
    rw_err_t err;

    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--instances") == 0 && val && !ids) {
            if (parse_ids(val, &ids, &n_ids)) {
                rc = RW_CTL_EXIT_USAGE;
                goto out;
            }
            i++;
        } else if (strcmp(argv[i], "--store-app") == 0) {
            if (rw_ctl_parse_ll("redeploy", "--store-app", val, 1, INT64_MAX,
                                &store_app)) {
                rc = RW_CTL_EXIT_USAGE;
                goto out;
            }
            i++;
        } else if (strcmp(argv[i], "--variables-only") == 0) {
            variables_only = true;
        } else if (strcmp(argv[i], "--wait") == 0) {
            wait = true;
        } else if (strcmp(argv[i], "--respect-windows") == 0) {
            respect_windows = true;
        } else if (strcmp(argv[i], "--by") == 0 && val) {
            by = val;
            i++;
        } else if (strcmp(argv[i], "--strategy") == 0 && val) {
            strategy_json = val;
            i++;
        } else if (argv[i][0] == '-' && val &&
                   n_flags < sizeof(flags) / sizeof(flags[0])) {
            size_t k = 0, nk = sizeof(strategy_flags) / sizeof(*strategy_flags);
            while (k < nk && strcmp(argv[i], strategy_flags[k].flag) != 0)
                k++;
            if (k == nk) {
                rw_ctl_errorf("redeploy",
                              "unknown or incomplete argument '%s' "
                              "(see rollwavectl redeploy --help)",
                              argv[i]);
                rc = RW_CTL_EXIT_USAGE;
                goto out;
            }
            flags[n_flags++] = (char *)strategy_flags[k].field;
            flags[n_flags++] = (char *)val;
            i++;
        } else {
            rw_ctl_errorf("redeploy",
                          "unknown or incomplete argument '%s' "
                          "(see rollwavectl redeploy --help)",
                          argv[i]);
            rc = RW_CTL_EXIT_USAGE;
            goto out;
        }
    }
    if ((ids != NULL) == (store_app != 0)) {
        rw_ctl_errorf("redeploy", "give exactly one of --instances and "
                                  "--store-app");
        rc = RW_CTL_EXIT_USAGE;
        goto out;
    }
    if (strategy_override(strategy_json, flags, n_flags, &strategy)) {
        rc = RW_CTL_EXIT_USAGE;
        goto out;
    }
    snprintf(by_buf, sizeof(by_buf), "%s", by && by[0] ? by : "operator");
    {
        /* an operator's run leaves the cadence alone: backoff 0 */
        rw_run_spec_t spec = {
            "manual", by_buf,          variables_only, s->bulk_chunk_size,
            0,        respect_windows, strategy};
        err = rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr));
        if (!err)
            err =
                rw_runs_create_manual(pg, ids, n_ids, store_app, &spec, &run,
                                      &skips, &n_skips, errstr, sizeof(errstr));
        if (err) {
            rw_ctl_errorf("redeploy", "%s", errstr);
            rc = RW_CTL_EXIT_FAILED;
            goto out;
        }
    }
    printf("run %s: %lld target(s), %lld skipped, %d chunk(s), %d wave(s)\n",
           run.uuid, run.targets, run.skipped, run.chunks, run.waves);
    if (run.error[0])
        printf("run %s failed: %s\n", run.uuid, run.error);
    for (size_t i = 0; i < n_skips; i++)
        printf("  skipped instance %lld: %s\n", skips[i].instance_id,
               skips[i].reason);
    fflush(stdout);
    err = rw_kafka_producer_new(&kp, s, rw_delivery_cb, NULL, errstr,
                                sizeof(errstr));
    if (!err)
        err = rw_outbox_relay(pg, kp, s, RW_OUTBOX_RELAY_BATCH, 0, &published,
                              errstr, sizeof(errstr));
    if (err) {
        /* the run is committed: the producer's relay publishes it later */
        rw_ctl_errorf("redeploy",
                      "run created but its batches are not published yet "
                      "(the producer will relay them): %s",
                      errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    printf("published %lld batch message(s)\n", published);
    fflush(stdout);
    if (wait) {
        char status[32] = "";
        if (rw_ctl_watch_run(pg, run.uuid, status, sizeof(status)))
            rc = RW_CTL_EXIT_FAILED;
        else if (strcmp(status, "completed") != 0)
            rc = RW_CTL_EXIT_FAILED;
    }
out:
    rw_kafka_producer_destroy(kp);
    rw_pg_destroy(pg);
    free(ids);
    free(skips);
    free(strategy);
    return rc;
}
