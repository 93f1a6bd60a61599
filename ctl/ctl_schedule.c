/*
 * ctl_schedule: two settings commands of rollwavectl.
 *
 * "schedule --store-app ID (--enable --interval-days N
 * [--beta-interval-days N] | --disable)" sets a store app's redeploy
 * cadence. --enable states the whole cadence: without
 * --beta-interval-days, beta groups follow the normal interval. --disable
 * stops scheduled runs and keeps the intervals for the record.
 *
 * "schedule --show [--json]" lists every store app's cadence with its
 * instances due now and, of them, those waiting for their deployment
 * window (due, but the window of their group or app is closed: the
 * scheduler leaves them until it opens).
 *
 * "group --id ID --beta true|false" marks a user group as beta or not.
 *
 * Each is one conditional UPDATE ... RETURNING on the row's primary key;
 * both print the resulting settings. Neither touches the instances: their
 * next_redeploy_at already set stays, and the new cadence applies from
 * their next redeploy on. Unknown ids are refused, nothing is created.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "rw_runs.h"
#include "rw_strategy.h"

#define MAX_INTERVAL_DAYS 3650

static const char SQL_ENABLE[] =
    "UPDATE store_apps SET redeploy_enabled = true,"
    "  redeploy_interval_days = $2::int,"
    "  beta_redeploy_interval_days = $3::int"
    " WHERE id = $1::bigint"
    " RETURNING id, name, redeploy_enabled, redeploy_interval_days,"
    "   beta_redeploy_interval_days";

static const char SQL_DISABLE[] =
    "UPDATE store_apps SET redeploy_enabled = false"
    " WHERE id = $1::bigint"
    " RETURNING id, name, redeploy_enabled, redeploy_interval_days,"
    "   beta_redeploy_interval_days";

static const char SQL_GROUP[] =
    "UPDATE user_groups SET is_beta = $2::boolean"
    " WHERE id = $1::bigint RETURNING id, name, is_beta";

/*
 * Due as the scheduler sees it (rw_runs.c, SQL_DUE: not already in a run),
 * per app through the due index; "waiting" are the due ones whose window
 * is closed now.
 */
static const char SQL_SHOW[] =
    "SELECT a.id, a.name, a.redeploy_enabled AS enabled,"
    "  a.redeploy_interval_days AS interval_days,"
    "  a.beta_redeploy_interval_days AS beta_interval_days,"
    "  a.window_tz, a.window_days, a.window_from_min, a.window_to_min,"
    "  d.due, d.waiting_for_window"
    " FROM store_apps a CROSS JOIN LATERAL ("
    "   SELECT count(*) AS due,"
    "     count(*) FILTER (WHERE NOT rw_instance_window_open("
    "       i.user_group_id, a.window_tz, a.window_days,"
    "       a.window_from_min, a.window_to_min, now()))"
    "       AS waiting_for_window"
    "   FROM app_instances i"
    "   WHERE i.store_app_id = a.id"
    "     AND COALESCE(i.next_redeploy_at, '-infinity'::timestamptz) <= now()"
    "     AND NOT i.is_trial"
    "     AND i.status IN " RW_ELIGIBLE_STATUSES_SQL
    "     AND i.lagoon_project IS NOT NULL"
    "     AND i.lagoon_environment IS NOT NULL"
    "     AND NOT EXISTS (SELECT 1 FROM run_targets t"
    "                      WHERE t.instance_id = i.id"
    "                        AND t.state IN ('pending', 'claimed',"
    "                                        'triggered', 'deploying'))) d"
    " ORDER BY a.id";

/* The window columns of row as the text rw_window_parse reads, or "-". */
static void window_text(const PGresult *res, int row, char *buf, size_t len)
{
    rw_window_t w = {0};

    if (!rw_pg_str(res, row, "window_tz")) {
        snprintf(buf, len, "-");
        return;
    }
    snprintf(w.tz, sizeof(w.tz), "%s", rw_pg_str(res, row, "window_tz"));
    w.days = (unsigned)rw_pg_ll(res, row, "window_days", 0);
    w.from_min = (int)rw_pg_ll(res, row, "window_from_min", 0);
    w.to_min = (int)rw_pg_ll(res, row, "window_to_min", 0);
    rw_window_format(&w, buf, len);
}

static int show(const char *dsn, bool as_json)
{
    rw_pg_t *pg = NULL;
    PGresult *res = NULL;
    char errstr[512], win[128];
    json_t *arr = NULL;
    int rc = RW_CTL_EXIT_OK;

    if (rw_pg_new(&pg, dsn, errstr, sizeof(errstr)) ||
        rw_pg_exec(pg, SQL_SHOW, 0, NULL, &res, errstr, sizeof(errstr))) {
        rw_ctl_errorf("schedule", "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (as_json)
        arr = json_array();
    else
        printf("%-6s %-8s %-8s %-6s %-8s %-38s %s\n", "APP", "ENABLED",
               "INTERVAL", "BETA", "DUE", "WINDOW", "WAITING FOR WINDOW");
    for (int r = 0; r < PQntuples(res); r++) {
        const char *iv = rw_pg_str(res, r, "interval_days");
        const char *bv = rw_pg_str(res, r, "beta_interval_days");

        window_text(res, r, win, sizeof(win));
        if (as_json) {
            json_t *o = json_pack(
                "{s:I, s:s, s:b, s:o, s:o, s:s?, s:I, s:I}", "store_app_id",
                (json_int_t)rw_pg_ll(res, r, "id", 0), "name",
                rw_pg_str(res, r, "name"), "enabled",
                rw_pg_bool(res, r, "enabled", 0), "interval_days",
                iv ? json_integer(atoll(iv)) : json_null(),
                "beta_interval_days",
                bv ? json_integer(atoll(bv)) : json_null(), "window",
                strcmp(win, "-") ? win : NULL, "due",
                (json_int_t)rw_pg_ll(res, r, "due", 0), "waiting_for_window",
                (json_int_t)rw_pg_ll(res, r, "waiting_for_window", 0));
            json_array_append_new(arr, o);
            continue;
        }
        printf("%-6s %-8s %-8s %-6s %-8s %-38s %s\n", rw_pg_str(res, r, "id"),
               rw_pg_bool(res, r, "enabled", 0) ? "yes" : "no", iv ? iv : "-",
               bv ? bv : "-", rw_pg_str(res, r, "due"), win,
               rw_pg_str(res, r, "waiting_for_window"));
    }
    if (arr) {
        char *text = json_dumps(arr, JSON_COMPACT);
        if (text)
            printf("%s\n", text);
        free(text);
    }
out:
    json_decref(arr);
    PQclear(res);
    rw_pg_destroy(pg);
    return rc;
}

/*
 * Run sql (one UPDATE ... RETURNING) against dsn; *res gets the result.
 * Prints the error and returns RW_CTL_EXIT_FAILED on failure.
 */
static int update(const char *cmd, const char *dsn, const char *sql, int n,
                  const char *const *params, PGresult **res)
{
    rw_pg_t *pg = NULL;
    char errstr[512];
    int rc = RW_CTL_EXIT_OK;

    if (rw_pg_new(&pg, dsn, errstr, sizeof(errstr)) ||
        rw_pg_exec(pg, sql, n, params, res, errstr, sizeof(errstr))) {
        rw_ctl_errorf(cmd, "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
    }
    rw_pg_destroy(pg);
    return rc;
}

int rw_ctl_schedule(int argc, char **argv, const rw_settings_t *s)
{
    long long app = 0, interval = 0, beta = 0;
    bool enable = false, disable = false, show_all = false, as_json = false;
    char app_s[24], interval_s[24], beta_s[24];
    PGresult *res = NULL;
    const char *v;
    int rc;

    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--store-app") == 0) {
            if (rw_ctl_parse_ll("schedule", "--store-app", val, 1, INT64_MAX,
                                &app))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(argv[i], "--interval-days") == 0) {
            if (rw_ctl_parse_ll("schedule", "--interval-days", val, 1,
                                MAX_INTERVAL_DAYS, &interval))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(argv[i], "--beta-interval-days") == 0) {
            if (rw_ctl_parse_ll("schedule", "--beta-interval-days", val, 1,
                                MAX_INTERVAL_DAYS, &beta))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(argv[i], "--enable") == 0) {
            enable = true;
        } else if (strcmp(argv[i], "--disable") == 0) {
            disable = true;
        } else if (strcmp(argv[i], "--show") == 0) {
            show_all = true;
        } else if (strcmp(argv[i], "--json") == 0) {
            as_json = true;
        } else {
            rw_ctl_errorf("schedule",
                          "unknown argument '%s' (see "
                          "rollwavectl schedule --help)",
                          argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (show_all) {
        if (app || enable || disable || interval || beta) {
            rw_ctl_errorf("schedule", "--show takes only --json");
            return RW_CTL_EXIT_USAGE;
        }
        return show(s->pg_dsn, as_json);
    }
    if (as_json) {
        rw_ctl_errorf("schedule", "--json goes with --show");
        return RW_CTL_EXIT_USAGE;
    }
    if (app == 0) {
        rw_ctl_errorf("schedule", "--store-app ID is required");
        return RW_CTL_EXIT_USAGE;
    }
    if (enable == disable) {
        rw_ctl_errorf("schedule", "give exactly one of --enable and "
                                  "--disable");
        return RW_CTL_EXIT_USAGE;
    }
    if (enable && interval == 0) {
        rw_ctl_errorf("schedule", "--enable needs --interval-days N");
        return RW_CTL_EXIT_USAGE;
    }
    if (disable && (interval || beta)) {
        rw_ctl_errorf("schedule", "--disable takes no interval (the current "
                                  "ones are kept)");
        return RW_CTL_EXIT_USAGE;
    }
    snprintf(app_s, sizeof(app_s), "%lld", app);
    snprintf(interval_s, sizeof(interval_s), "%lld", interval);
    snprintf(beta_s, sizeof(beta_s), "%lld", beta);
    {
        const char *p[3] = {app_s, interval_s, beta ? beta_s : NULL};
        rc = enable ? update("schedule", s->pg_dsn, SQL_ENABLE, 3, p, &res)
                    : update("schedule", s->pg_dsn, SQL_DISABLE, 1, p, &res);
    }
    if (rc)
        goto out;
    if (PQntuples(res) != 1) {
        rw_ctl_errorf("schedule", "no store app with id %lld", app);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    printf("store app %s (%s)\n", rw_pg_str(res, 0, "id"),
           rw_pg_str(res, 0, "name"));
    printf("  scheduled redeploys  %s\n",
           rw_pg_bool(res, 0, "redeploy_enabled", 0) ? "enabled" : "disabled");
    v = rw_pg_str(res, 0, "redeploy_interval_days");
    printf("  interval days        %s\n", v ? v : "- (none)");
    v = rw_pg_str(res, 0, "beta_redeploy_interval_days");
    printf("  beta interval days   %s\n", v ? v : "- (same as interval)");
out:
    PQclear(res);
    return rc;
}

int rw_ctl_group(int argc, char **argv, const rw_settings_t *s)
{
    long long id = 0;
    const char *beta = NULL;
    char id_s[24];
    PGresult *res = NULL;
    int rc;

    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--id") == 0) {
            if (rw_ctl_parse_ll("group", "--id", val, 1, INT64_MAX, &id))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(argv[i], "--beta") == 0) {
            if (!val ||
                (strcmp(val, "true") != 0 && strcmp(val, "false") != 0)) {
                rw_ctl_errorf("group",
                              "--beta takes true or false, not "
                              "'%s'",
                              val ? val : "");
                return RW_CTL_EXIT_USAGE;
            }
            beta = val;
            i++;
        } else {
            rw_ctl_errorf("group",
                          "unknown argument '%s' (see rollwavectl "
                          "group --help)",
                          argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (id == 0 || !beta) {
        rw_ctl_errorf("group", "--id ID and --beta true|false are required");
        return RW_CTL_EXIT_USAGE;
    }
    snprintf(id_s, sizeof(id_s), "%lld", id);
    {
        const char *p[2] = {id_s, beta};
        rc = update("group", s->pg_dsn, SQL_GROUP, 2, p, &res);
    }
    if (rc)
        goto out;
    if (PQntuples(res) != 1) {
        rw_ctl_errorf("group", "no user group with id %lld", id);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    printf("user group %s (%s): beta %s\n", rw_pg_str(res, 0, "id"),
           rw_pg_str(res, 0, "name"),
           rw_pg_bool(res, 0, "is_beta", 0) ? "yes" : "no");
out:
    PQclear(res);
    return rc;
}
