/*
 * ctl_seed: "rollwavectl seed": creates a fleet for the demo and the
 * benchmarks in one statement: store apps with a cadence, a regular and a
 * beta user group, and instances with a chosen share of beta users,
 * trials, ineligible statuses and instances without a Lagoon target. The
 * shares are spread deterministically over the instance numbers, so the
 * same arguments always produce the same fleet shape.
 */
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "rw_pg.h"

static const char SQL_SEED[] =
    "WITH apps AS ("
    "  INSERT INTO store_apps (name, redeploy_enabled, redeploy_interval_days,"
    "                          beta_redeploy_interval_days)"
    "  SELECT $1 || '-app-' || g, true, $3::int, $4::int"
    "  FROM generate_series(1, $2::int) g"
    "  RETURNING id),"
    " app_arr AS (SELECT array_agg(id ORDER BY id) AS ids FROM apps),"
    " grp AS ("
    "  INSERT INTO user_groups (name, is_beta)"
    "  VALUES ($1 || '-regular', false), ($1 || '-beta', true)"
    "  RETURNING id, is_beta),"
    " gids AS (SELECT max(id) FILTER (WHERE is_beta) AS beta_id,"
    "                 max(id) FILTER (WHERE NOT is_beta) AS reg_id FROM grp),"
    " ins AS ("
    "  INSERT INTO app_instances (name, store_app_id, user_group_id, status,"
    "      is_trial, lagoon_project, lagoon_environment)"
    "  SELECT $1 || '-i' || g,"
    "         a.ids[1 + (g % array_length(a.ids, 1))],"
    "         CASE WHEN (g * 7919) % 100 < $6::int THEN gi.beta_id"
    "              ELSE gi.reg_id END,"
    "         CASE WHEN (g * 104729) % 100 < $8::int THEN 'provisioning'"
    "              WHEN g % 2 = 0 THEN 'running-healthy-claimed'"
    "              ELSE 'running-healthy-unclaimed' END,"
    "         (g * 15485863) % 100 < $7::int,"
    "         CASE WHEN (g * 2654435761) % 100 < $9::int THEN NULL"
    "              ELSE $1 || '-p' || g END,"
    "         CASE WHEN (g * 2654435761) % 100 < $9::int THEN NULL"
    "              ELSE 'main' END"
    "  FROM generate_series(1, $5::bigint) g, app_arr a, gids gi"
    "  RETURNING user_group_id, status, is_trial, lagoon_project)"
    " SELECT count(*) AS instances,"
    "   count(*) FILTER (WHERE user_group_id = (SELECT beta_id FROM gids))"
    "     AS beta,"
    "   count(*) FILTER (WHERE is_trial) AS trials,"
    "   count(*) FILTER (WHERE status = 'provisioning') AS ineligible,"
    "   count(*) FILTER (WHERE lagoon_project IS NULL) AS no_target,"
    "   (SELECT count(*) FROM apps) AS store_apps"
    " FROM ins";

int rw_ctl_seed(int argc, char **argv, const rw_settings_t *s)
{
    long long instances = -1, apps = 5, beta = 10, trial = 5, ineligible = 5,
              no_target = 2, interval = 7, beta_interval = 2;
    const char *prefix = "demo";
    rw_pg_t *pg = NULL;
    PGresult *res = NULL;
    char errstr[512];
    char v[8][24];
    int rc = RW_CTL_EXIT_OK;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        long long *dst = NULL, min = 0, max = 100;
        if (strcmp(opt, "--instances") == 0) {
            dst = &instances;
            min = 1;
            max = 100000000;
        } else if (strcmp(opt, "--store-apps") == 0) {
            dst = &apps;
            min = 1;
            max = 100000;
        } else if (strcmp(opt, "--beta-pct") == 0) {
            dst = &beta;
        } else if (strcmp(opt, "--trial-pct") == 0) {
            dst = &trial;
        } else if (strcmp(opt, "--ineligible-pct") == 0) {
            dst = &ineligible;
        } else if (strcmp(opt, "--no-target-pct") == 0) {
            dst = &no_target;
        } else if (strcmp(opt, "--interval-days") == 0) {
            dst = &interval;
            min = 1;
            max = 3650;
        } else if (strcmp(opt, "--beta-interval-days") == 0) {
            dst = &beta_interval;
            min = 1;
            max = 3650;
        } else if (strcmp(opt, "--prefix") == 0 && val && val[0]) {
            prefix = val;
            i++;
            continue;
        } else {
            rw_ctl_errorf("seed",
                          "unknown argument '%s' (see rollwavectl "
                          "seed --help)",
                          opt);
            return RW_CTL_EXIT_USAGE;
        }
        if (rw_ctl_parse_ll("seed", opt, val, min, max, dst))
            return RW_CTL_EXIT_USAGE;
        i++;
    }
    if (instances < 0) {
        rw_ctl_errorf("seed", "--instances N is required");
        return RW_CTL_EXIT_USAGE;
    }
    snprintf(v[0], sizeof(v[0]), "%lld", apps);
    snprintf(v[1], sizeof(v[1]), "%lld", interval);
    snprintf(v[2], sizeof(v[2]), "%lld", beta_interval);
    snprintf(v[3], sizeof(v[3]), "%lld", instances);
    snprintf(v[4], sizeof(v[4]), "%lld", beta);
    snprintf(v[5], sizeof(v[5]), "%lld", trial);
    snprintf(v[6], sizeof(v[6]), "%lld", ineligible);
    snprintf(v[7], sizeof(v[7]), "%lld", no_target);
    {
        const char *p[9] = {prefix, v[0], v[1], v[2], v[3],
                            v[4],   v[5], v[6], v[7]};
        if (rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr)) ||
            rw_pg_exec(pg, SQL_SEED, 9, p, &res, errstr, sizeof(errstr))) {
            rw_ctl_errorf("seed", "%s", errstr);
            rc = RW_CTL_EXIT_FAILED;
            goto out;
        }
    }
    printf("seeded %s instances across %s store apps (prefix %s): "
           "%s beta, %s trial, %s ineligible, %s without a Lagoon target\n",
           rw_pg_str(res, 0, "instances"), rw_pg_str(res, 0, "store_apps"),
           prefix, rw_pg_str(res, 0, "beta"), rw_pg_str(res, 0, "trials"),
           rw_pg_str(res, 0, "ineligible"), rw_pg_str(res, 0, "no_target"));
out:
    PQclear(res);
    rw_pg_destroy(pg);
    return rc;
}
