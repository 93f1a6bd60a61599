/*
 * ctl_redeploy: "rollwavectl redeploy": a manual run over listed instances
 * or a whole store app, built by the same code as the scheduler's runs
 * (rw_runs), then its batches published (the outbox relay) so workers pick
 * it up at once. --wait follows the run until it is final.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "rw_kafka.h"
#include "rw_outbox.h"
#include "rw_runs.h"

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
    snprintf(by_buf, sizeof(by_buf), "%s", by && by[0] ? by : "operator");
    {
        /* an operator's run leaves the cadence alone: backoff 0 */
        rw_run_spec_t spec = {"manual",           by_buf, variables_only,
                              s->bulk_chunk_size, 0,      respect_windows};
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
    printf("run %s: %lld target(s), %lld skipped, %d chunk(s)\n", run.uuid,
           run.targets, run.skipped, run.chunks);
    for (size_t i = 0; i < n_skips; i++)
        printf("  skipped instance %lld: %s\n", skips[i].instance_id,
               skips[i].reason);
    fflush(stdout);
    err = rw_kafka_producer_new(&kp, s, rw_delivery_cb, NULL, errstr,
                                sizeof(errstr));
    if (!err)
        err = rw_outbox_relay(pg, kp, s, 1000, 0, &published, errstr,
                              sizeof(errstr));
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
    return rc;
}
