/*
 * ctl_instance: "rollwavectl instance history ID": every run an instance
 * took part in, newest first and paged with --skip / --take: the run, its
 * status and source, the instance's target state, attempt, bulk id,
 * deployment, Lagoon status, whether a build log is stored for that
 * deployment (yes, unavailable, or none: "-"; `run logs` prints it) and
 * error or skip reason, as text or JSON.
 *
 * Two queries: the instance (with its number of runs) by primary key, and
 * the page of its targets by run_targets_instance_idx. It changes nothing.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

#define DEFAULT_TAKE 20
#define MAX_TAKE     10000

/* to_char format of the timestamps shown: ISO 8601 in UTC. */
#define ISO "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"

static const char SQL_INSTANCE[] =
    "SELECT i.id, i.uuid, i.name, i.status, i.is_trial, i.store_app_id,"
    "  a.name AS store_app, i.user_group_id,"
    "  i.lagoon_project AS project, i.lagoon_environment AS environment,"
    "  i.last_deployment_name, i.last_deployment_status,"
    "  to_char(i.last_deployed_at AT TIME ZONE 'UTC', " ISO ")"
    "    AS last_deployed_at,"
    "  to_char(i.next_redeploy_at AT TIME ZONE 'UTC', " ISO ")"
    "    AS next_redeploy_at,"
    "  (SELECT count(*) FROM run_targets t WHERE t.instance_id = i.id)"
    "    AS runs"
    " FROM app_instances i JOIN store_apps a ON a.id = i.store_app_id"
    " WHERE i.id = $1::bigint";

/* $1 instance id, $2 rows to skip, $3 rows to take. */
static const char SQL_HISTORY[] =
    "SELECT r.uuid AS run, r.status AS run_status,"
    "  r.trigger_source AS source, t.state, t.attempt::bigint AS attempt,"
    "  t.chunk::bigint AS chunk, t.bulk_id, t.deployment_name,"
    "  t.lagoon_status, t.error, t.skip_reason,"
    "  COALESCE(t.error, t.skip_reason) AS note,"
    "  (SELECT CASE l.state WHEN 'stored' THEN 'yes' ELSE l.state END"
    "     FROM target_logs l WHERE l.target_id = t.id"
    "       AND l.deployment_name = t.deployment_name) AS log,"
    "  to_char(t.created_at AT TIME ZONE 'UTC', " ISO ") AS created_at,"
    "  to_char(t.finished_at AT TIME ZONE 'UTC', " ISO ") AS finished_at"
    " FROM run_targets t JOIN deployment_runs r ON r.id = t.run_id"
    " WHERE t.instance_id = $1::bigint"
    " ORDER BY t.created_at DESC, t.id DESC"
    " OFFSET $2::bigint LIMIT $3::bigint";

static int print_json(const PGresult *inst, const PGresult *hist,
                      long long skip, long long take)
{
    json_t *doc = json_object(), *arr = json_array();
    int rc = RW_CTL_EXIT_OK, bad = 0;

    for (int r = 0; arr && r < PQntuples(hist); r++)
        if (json_array_append_new(arr, rw_ctl_row_json(hist, r))) {
            json_decref(arr);
            arr = NULL;
        }
    bad |= json_object_set_new(doc, "instance", rw_ctl_row_json(inst, 0));
    bad |= json_object_set_new(doc, "skip", json_integer(skip));
    bad |= json_object_set_new(doc, "take", json_integer(take));
    bad |= json_object_set_new(doc, "history", arr);
    if (!doc || bad || json_dumpf(doc, stdout, JSON_INDENT(2)) != 0) {
        rw_ctl_errorf("instance", "cannot write JSON (out of memory?)");
        rc = RW_CTL_EXIT_FAILED;
    } else {
        printf("\n");
    }
    json_decref(doc);
    return rc;
}

static void print_text(const PGresult *inst, const PGresult *hist,
                       long long skip)
{
    static const rw_ctl_col_t cols[] = {
        {"run", "RUN", false},
        {"run_status", "RUN STATUS", false},
        {"source", "SOURCE", false},
        {"state", "STATE", false},
        {"attempt", "ATTEMPT", false},
        {"bulk_id", "BULK ID", false},
        {"deployment_name", "DEPLOYMENT", false},
        {"lagoon_status", "LAGOON", false},
        {"log", "LOG", false},
        {"created_at", "CREATED", false},
        {"finished_at", "FINISHED", false},
        {"note", "ERROR / SKIP REASON", false},
    };
    const char *project = rw_pg_str(inst, 0, "project");
    const char *env = rw_pg_str(inst, 0, "environment");
    long long runs = rw_pg_ll(inst, 0, "runs", 0);
    int n = PQntuples(hist);

    printf("instance %s %s (%s/%s), store app %s (id %s), status %s\n",
           rw_pg_str(inst, 0, "id"), rw_pg_str(inst, 0, "name"),
           project ? project : "-", env ? env : "-",
           rw_pg_str(inst, 0, "store_app"), rw_pg_str(inst, 0, "store_app_id"),
           rw_pg_str(inst, 0, "status"));
    if (n == 0) {
        printf("%lld run(s); none after skipping %lld\n", runs, skip);
        return;
    }
    printf("%lld run(s); showing %lld-%lld, newest first\n", runs, skip + 1,
           skip + n);
    rw_ctl_print_table(hist, cols, sizeof(cols) / sizeof(cols[0]));
}

int rw_ctl_instance(int argc, char **argv, const rw_settings_t *s)
{
    long long id = 0, skip = 0, take = DEFAULT_TAKE;
    bool json = false;
    char id_s[24], skip_s[24], take_s[24], errstr[512];
    const char *p_inst[1] = {id_s};
    const char *p_hist[3] = {id_s, skip_s, take_s};
    rw_pg_t *pg = NULL;
    PGresult *inst = NULL, *hist = NULL;
    int rc = RW_CTL_EXIT_OK;

    if (argc < 2 || strcmp(argv[1], "history") != 0) {
        rw_ctl_errorf("instance", "usage: rollwavectl instance history ID "
                                  "[--skip N] [--take N] [--json]");
        return RW_CTL_EXIT_USAGE;
    }
    for (int i = 2; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--skip") == 0) {
            if (rw_ctl_parse_ll("instance", "--skip", val, 0, INT64_MAX, &skip))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(argv[i], "--take") == 0) {
            if (rw_ctl_parse_ll("instance", "--take", val, 1, MAX_TAKE, &take))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (argv[i][0] != '-' && id == 0) {
            if (rw_ctl_parse_ll("instance", "ID", argv[i], 1, INT64_MAX, &id))
                return RW_CTL_EXIT_USAGE;
        } else {
            rw_ctl_errorf("instance",
                          "unexpected argument '%s' (see "
                          "rollwavectl instance --help)",
                          argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (id == 0) {
        rw_ctl_errorf("instance", "history needs an instance ID");
        return RW_CTL_EXIT_USAGE;
    }
    snprintf(id_s, sizeof(id_s), "%lld", id);
    snprintf(skip_s, sizeof(skip_s), "%lld", skip);
    snprintf(take_s, sizeof(take_s), "%lld", take);
    if (rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr)) ||
        rw_pg_exec(pg, SQL_INSTANCE, 1, p_inst, &inst, errstr,
                   sizeof(errstr))) {
        rw_ctl_errorf("instance", "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (PQntuples(inst) != 1) {
        rw_ctl_errorf("instance", "no instance with id %lld", id);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (rw_pg_exec(pg, SQL_HISTORY, 3, p_hist, &hist, errstr, sizeof(errstr))) {
        rw_ctl_errorf("instance", "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (json)
        rc = print_json(inst, hist, skip, take);
    else
        print_text(inst, hist, skip);
out:
    PQclear(hist);
    PQclear(inst);
    rw_pg_destroy(pg);
    return rc;
}
