/*
 * ctl_run_logs: "rollwavectl run logs UUID [--instance ID] [--failed]
 * [--json]" prints the build logs the poller stored for a run's targets
 * (target_logs, docs/DESIGN.md "Build logs"): per target its instance,
 * deployment, state and size, then the text; a log Lagoon could not read
 * as "log unavailable" with Lagoon's reason and the attempts so far; a
 * failed target without any row as "no log".
 *
 * The texts were redacted before they were stored; this command does not
 * redact again, it only blanks control characters other than line breaks
 * and tabs so that a log cannot drive the operator's terminal. Two
 * queries: the run by its uuid, then its targets with their logs through
 * rw_buildlog_read (the API's GET /runs/{uuid}/logs reads the same). It
 * changes nothing.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "rw_buildlog.h"
#include "rw_lagoon.h"

#define CMD "run logs"

static const char SQL_RUN[] =
    "SELECT id, uuid, status FROM deployment_runs WHERE uuid = $1::uuid";

/* s with control characters but \n and \t shown as spaces. */
static void put_text(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        putchar(c < 0x20 && c != '\n' && c != '\t' ? ' ' : c == 0x7f ? ' ' : c);
    }
}

/* Lagoon's reason without its fixed "There was an error..." prefix. */
static const char *reason_of(const char *error)
{
    size_t plen = sizeof(RW_LAGOON_LOG_ERROR_PREFIX) - 1;

    if (!error)
        return "no reason given";
    if (strncmp(error, RW_LAGOON_LOG_ERROR_PREFIX, plen) == 0) {
        error += plen;
        while (*error == ' ')
            error++;
    }
    return error;
}

static void print_text(const PGresult *run, const PGresult *res)
{
    int n = PQntuples(res);

    printf("run %s (%s): %d log(s)\n", rw_pg_str(run, 0, "uuid"),
           rw_pg_str(run, 0, "status"), n);
    for (int r = 0; r < n; r++) {
        const char *dep = rw_pg_str(res, r, "deployment_name");
        const char *st = rw_pg_str(res, r, "log_state");

        printf("\n== instance %s %s (%s) %s, target %s:",
               rw_pg_str(res, r, "instance_id"), rw_pg_str(res, r, "name"),
               rw_pg_str(res, r, "target"), dep ? dep : "-",
               rw_pg_str(res, r, "state"));
        if (strcmp(st, "stored") == 0) {
            printf(" %s bytes stored of %s sent, fetched %s\n",
                   rw_pg_str(res, r, "bytes"),
                   rw_pg_str(res, r, "bytes_original"),
                   rw_pg_str(res, r, "fetched_at"));
            put_text(rw_pg_str(res, r, "log"));
            if (rw_pg_ll(res, r, "bytes", 0) > 0)
                printf("\n");
        } else if (strcmp(st, "unavailable") == 0) {
            printf(" log unavailable (Lagoon: ");
            put_text(reason_of(rw_pg_str(res, r, "error")));
            printf("), %s attempts\n", rw_pg_str(res, r, "log_attempts"));
        } else {
            printf(" no log\n");
        }
    }
}

static int print_json(const PGresult *run, const PGresult *res)
{
    json_t *doc = json_object(), *arr = json_array();
    int rc = RW_CTL_EXIT_OK, bad = 0;

    for (int r = 0; arr && r < PQntuples(res); r++)
        if (json_array_append_new(arr, rw_ctl_row_json(res, r))) {
            json_decref(arr);
            arr = NULL;
        }
    bad |= json_object_set_new(doc, "run", rw_ctl_row_json(run, 0));
    bad |= json_object_set_new(doc, "logs", arr);
    if (!doc || bad || json_dumpf(doc, stdout, JSON_INDENT(2)) != 0) {
        rw_ctl_errorf(CMD, "cannot write JSON (out of memory?)");
        rc = RW_CTL_EXIT_FAILED;
    } else {
        printf("\n");
    }
    json_decref(doc);
    return rc;
}

int rw_ctl_run_logs(int argc, char **argv, const rw_settings_t *s)
{
    const char *uuid = NULL;
    long long instance = 0;
    bool json = false, failed = false;
    char errstr[512];
    const char *p_run[1];
    rw_pg_t *pg = NULL;
    PGresult *run = NULL, *res = NULL;
    int rc = RW_CTL_EXIT_OK;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "--failed") == 0) {
            failed = true;
        } else if (strcmp(argv[i], "--instance") == 0) {
            if (rw_ctl_parse_ll(CMD, "--instance",
                                i + 1 < argc ? argv[i + 1] : NULL, 1, INT64_MAX,
                                &instance))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (argv[i][0] != '-' && !uuid) {
            uuid = argv[i];
        } else {
            rw_ctl_errorf(CMD,
                          "unexpected argument '%s' (usage: rollwavectl run "
                          "logs UUID [--instance ID] [--failed] [--json])",
                          argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (!uuid) {
        rw_ctl_errorf(CMD, "a run UUID is required");
        return RW_CTL_EXIT_USAGE;
    }
    if (!rw_ctl_is_uuid(uuid)) {
        rw_ctl_errorf(CMD,
                      "'%s' is not a run UUID "
                      "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                      uuid);
        return RW_CTL_EXIT_USAGE;
    }
    p_run[0] = uuid;
    if (rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr)) ||
        rw_pg_exec(pg, SQL_RUN, 1, p_run, &run, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (PQntuples(run) != 1) {
        rw_ctl_errorf(CMD, "no run %s", uuid);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (rw_buildlog_read(pg, rw_pg_ll(run, 0, "id", 0), instance, failed, NULL,
                         0, &res, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (json)
        rc = print_json(run, res);
    else
        print_text(run, res);
out:
    PQclear(res);
    PQclear(run);
    rw_pg_destroy(pg);
    return rc;
}
