/*
 * ctl_runs: "rollwavectl runs": lists runs newest first, optionally
 * filtered by status and store app, as an aligned table or as JSON.
 *
 * One query, served by deployment_runs_created_idx (no filter),
 * deployment_runs_store_app_idx (--store-app) or deployment_runs_status_idx
 * (--status). Finished runs show their recorded counts; runs still in
 * progress have not been finalized yet, so their succeeded / failed /
 * skipped counts are counted live from run_targets (by its run index, and
 * only for those runs). It changes nothing; per-run detail is
 * "rollwavectl run show".
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "rw_state.h"

#define DEFAULT_LIMIT 20
#define MAX_LIMIT     10000

/* to_char format of the timestamps shown: ISO 8601 in UTC. */
#define ISO "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"

/*
 * $1 status or NULL, $2 store app id or NULL, $3 limit. The NULL tests are
 * folded away when the statement is planned with its values, so each
 * filter combination gets its own index.
 */
static const char SQL_RUNS[] =
    "SELECT r.uuid, r.status, r.trigger_source AS source, r.triggered_by,"
    "  r.store_app_id, a.name AS store_app, r.variables_only,"
    "  r.total_count::bigint AS total,"
    "  CASE WHEN r.status IN ('pending', 'running', 'paused')"
    "       THEN live.succeeded ELSE r.succeeded_count END AS succeeded,"
    "  CASE WHEN r.status IN ('pending', 'running', 'paused')"
    "       THEN live.failed ELSE r.failed_count END AS failed,"
    "  CASE WHEN r.status IN ('pending', 'running', 'paused')"
    "       THEN live.skipped ELSE r.skipped_count END AS skipped,"
    "  to_char(r.created_at AT TIME ZONE 'UTC', " ISO ") AS created_at,"
    "  to_char(r.completed_at AT TIME ZONE 'UTC', " ISO ") AS completed_at,"
    "  EXTRACT(EPOCH FROM COALESCE(r.completed_at, now()) - r.created_at)"
    "    ::bigint AS duration_s"
    " FROM deployment_runs r"
    " LEFT JOIN store_apps a ON a.id = r.store_app_id"
    " LEFT JOIN LATERAL ("
    "   SELECT " RW_TARGET_COUNTS_SQL "   FROM run_targets t"
    "   WHERE t.run_id = r.id"
    "     AND r.status IN ('pending', 'running', 'paused')) live ON true"
    " WHERE ($1::text IS NULL OR r.status = $1::text)"
    "   AND ($2::bigint IS NULL OR r.store_app_id = $2::bigint)"
    " ORDER BY r.created_at DESC, r.id DESC"
    " LIMIT $3::bigint";

static int print_json(const PGresult *res)
{
    json_t *arr = json_array();
    int rc = RW_CTL_EXIT_OK;

    for (int r = 0; arr && r < PQntuples(res); r++)
        if (json_array_append_new(arr, rw_ctl_row_json(res, r))) {
            json_decref(arr);
            arr = NULL;
        }
    if (!arr || json_dumpf(arr, stdout, JSON_INDENT(2)) != 0) {
        rw_ctl_errorf("runs", "cannot write JSON (out of memory?)");
        rc = RW_CTL_EXIT_FAILED;
    } else {
        printf("\n");
    }
    json_decref(arr);
    return rc;
}

/* "pending, running, ..." for the --status error message. */
static void run_state_list(char *buf, size_t len)
{
    size_t off = 0;

    buf[0] = '\0';
    for (int i = 0; i < RW_RUN__COUNT && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "",
                                rw_run_state_name((rw_run_state_t)i));
}

int rw_ctl_runs(int argc, char **argv, const rw_settings_t *s)
{
    static const rw_ctl_col_t cols[] = {
        {"uuid", "RUN", false},           {"status", "STATUS", false},
        {"source", "SOURCE", false},      {"store_app", "STORE APP", false},
        {"total", "TOTAL", false},        {"succeeded", "OK", false},
        {"failed", "FAILED", false},      {"skipped", "SKIPPED", false},
        {"created_at", "CREATED", false}, {"duration_s", "DURATION", true},
    };
    const char *status = NULL;
    long long store_app = 0, limit = DEFAULT_LIMIT;
    bool json = false;
    char app_s[24], limit_s[24], errstr[512];
    rw_pg_t *pg = NULL;
    PGresult *res = NULL;
    int rc = RW_CTL_EXIT_OK;

    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--status") == 0) {
            if (!val || rw_run_state_parse(val) < 0) {
                char list[256];
                run_state_list(list, sizeof(list));
                rw_ctl_errorf("runs",
                              "--status: '%s' is not a run status "
                              "(%s)",
                              val ? val : "", list);
                return RW_CTL_EXIT_USAGE;
            }
            status = val;
            i++;
        } else if (strcmp(argv[i], "--store-app") == 0) {
            if (rw_ctl_parse_ll("runs", "--store-app", val, 1, INT64_MAX,
                                &store_app))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(argv[i], "--limit") == 0) {
            if (rw_ctl_parse_ll("runs", "--limit", val, 1, MAX_LIMIT, &limit))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else {
            rw_ctl_errorf("runs",
                          "unknown argument '%s' (see rollwavectl "
                          "runs --help)",
                          argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    snprintf(app_s, sizeof(app_s), "%lld", store_app);
    snprintf(limit_s, sizeof(limit_s), "%lld", limit);
    {
        const char *p[3] = {status, store_app ? app_s : NULL, limit_s};
        if (rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr)) ||
            rw_pg_exec(pg, SQL_RUNS, 3, p, &res, errstr, sizeof(errstr))) {
            rw_ctl_errorf("runs", "%s", errstr);
            rc = RW_CTL_EXIT_FAILED;
            goto out;
        }
    }
    if (json)
        rc = print_json(res);
    else if (PQntuples(res) == 0)
        printf("no runs\n");
    else
        rw_ctl_print_table(res, cols, sizeof(cols) / sizeof(cols[0]));
out:
    PQclear(res);
    rw_pg_destroy(pg);
    return rc;
}
