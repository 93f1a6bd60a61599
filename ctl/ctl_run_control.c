/*
 * ctl_run_control: "rollwavectl run pause|resume|abort|retry|promote
 * UUID". The
 * state changes are rw_control's; this file parses, publishes the batches
 * a resume, retry or promote queued, and reports. A refused request exits 1
 * with the reason (e.g. "cannot resume a completed run").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "rw_control.h"
#include "rw_kafka.h"
#include "rw_outbox.h"

int rw_ctl_run_control(int argc, char **argv, const rw_settings_t *s)
{
    const char *verb = argv[0], *uuid = NULL, *by = getenv("USER");
    rw_control_verb_t v;
    rw_control_result_t r;
    rw_pg_t *pg = NULL;
    rw_kafka_producer_t *kp = NULL;
    long long published = 0;
    char errstr[512];
    int rc = RW_CTL_EXIT_OK;
    rw_err_t err;

    if (strcmp(verb, "pause") == 0)
        v = RW_CONTROL_PAUSE;
    else if (strcmp(verb, "resume") == 0)
        v = RW_CONTROL_RESUME;
    else if (strcmp(verb, "abort") == 0)
        v = RW_CONTROL_ABORT;
    else if (strcmp(verb, "promote") == 0)
        v = RW_CONTROL_PROMOTE;
    else
        v = RW_CONTROL_RETRY;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--by") == 0 && i + 1 < argc) {
            by = argv[++i];
        } else if (!uuid && argv[i][0] != '-') {
            uuid = argv[i];
        } else {
            rw_ctl_errorf("run", "%s: unexpected argument '%s'", verb, argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (!uuid) {
        rw_ctl_errorf("run", "%s needs a run UUID", verb);
        return RW_CTL_EXIT_USAGE;
    }
    err = rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr));
    if (!err)
        err = rw_control_run(pg, uuid, v, s->max_attempts, by, &r, errstr,
                             sizeof(errstr));
    if (err) {
        rw_ctl_errorf("run", "%s %s: %s", verb, uuid, errstr);
        rc = err == RW_ERR_INVALID_ARG ? RW_CTL_EXIT_USAGE : RW_CTL_EXIT_FAILED;
        goto out;
    }
    printf("run %s: %s -> %s", uuid, r.status_before, r.status_after);
    if (v == RW_CONTROL_ABORT)
        printf(", %lld pending target(s) cancelled", r.targets);
    if (v == RW_CONTROL_RETRY)
        printf(", %lld target(s) re-queued", r.targets);
    if (v == RW_CONTROL_PROMOTE)
        printf(", wave %d released", r.wave);
    if (v == RW_CONTROL_RESUME || v == RW_CONTROL_RETRY ||
        v == RW_CONTROL_PROMOTE)
        printf(", %lld chunk(s) queued", r.chunks);
    printf("\n");
    fflush(stdout);
    if (v == RW_CONTROL_RESUME || v == RW_CONTROL_RETRY ||
        v == RW_CONTROL_PROMOTE) {
        err = rw_kafka_producer_new(&kp, s, rw_delivery_cb, NULL, errstr,
                                    sizeof(errstr));
        if (!err)
            err = rw_outbox_relay(pg, kp, s, RW_OUTBOX_RELAY_BATCH, 0,
                                  &published, errstr, sizeof(errstr));
        if (err) {
            rw_ctl_errorf("run",
                          "%s recorded, but its batches are not "
                          "published yet (the producer will relay "
                          "them): %s",
                          verb, errstr);
            rc = RW_CTL_EXIT_FAILED;
            goto out;
        }
        printf("published %lld batch message(s)\n", published);
    }
out:
    rw_kafka_producer_destroy(kp);
    rw_pg_destroy(pg);
    return rc;
}
