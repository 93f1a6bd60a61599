/*
 * ctl_retention: "retention [--dry-run] [--days N] [--batch N] [--json]"
 * deletes final runs that ended more than ROLLWAVE_RETENTION_DAYS (or
 * --days) ago, with their targets, chunks and transitions, in batches of
 * at most --batch rows (rw_retention.h), and published outbox rows older
 * than ROLLWAVE_OUTBOX_RETENTION_S. --dry-run only counts, per table,
 * what would go. The producer's leader does the same continuously; this
 * is for a first clean-up, or to see what the setting means.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "rw_outbox.h"
#include "rw_retention.h"

#define CMD "retention"

static const char SQL_OUTBOX_OLD[] =
    "SELECT count(*) AS n FROM outbox"
    " WHERE published_at IS NOT NULL"
    "   AND published_at < now() - make_interval(secs => $1::double "
    "precision)";

static int outbox_old(rw_pg_t *pg, long long retention_s, long long *n)
{
    char ret_s[24], errstr[512];
    const char *p[1] = {ret_s};
    PGresult *res = NULL;

    snprintf(ret_s, sizeof(ret_s), "%lld", retention_s);
    if (rw_pg_exec(pg, SQL_OUTBOX_OLD, 1, p, &res, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        return -1;
    }
    *n = rw_pg_ll(res, 0, "n", 0);
    PQclear(res);
    return 0;
}

static int dry_run(rw_pg_t *pg, const rw_settings_t *s, long long days,
                   bool json)
{
    rw_retention_row_t *rows = NULL;
    size_t n = 0;
    long long outbox = 0;
    char errstr[512];
    json_t *o, *tables;

    if (rw_retention_plan(pg, days, &rows, &n, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    if (outbox_old(pg, s->outbox_retention_s, &outbox) < 0) {
        free(rows);
        return RW_CTL_EXIT_FAILED;
    }
    if (json) {
        o = json_object();
        tables = json_object();
        for (size_t i = 0; i < n; i++)
            json_object_set_new(tables, rows[i].table,
                                json_integer(rows[i].rows));
        json_object_set_new(o, "days", json_integer(days));
        json_object_set_new(o, "tables", tables);
        json_object_set_new(o, "outbox", json_integer(outbox));
        json_object_set_new(o, "outbox_retention_s",
                            json_integer(s->outbox_retention_s));
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        putchar('\n');
        json_decref(o);
    } else {
        printf("dry run: final runs that ended more than %lld days ago, "
               "and what references them\n",
               days);
        for (size_t i = 0; i < n; i++)
            printf("  %-44s %lld\n", rows[i].table, rows[i].rows);
        printf("  %-44s %lld\n", "outbox (published, past its retention)",
               outbox);
        printf("nothing was deleted (run without --dry-run to delete)\n");
    }
    free(rows);
    return RW_CTL_EXIT_OK;
}

static int execute(rw_pg_t *pg, const rw_settings_t *s, long long days,
                   long long batch, bool json)
{
    long long total = 0, pruned = 0;
    bool done = false;
    char errstr[512];

    while (!done) {
        long long n = 0;
        if (rw_retention_run(pg, days, batch, 100, &n, &done, errstr,
                             sizeof(errstr))) {
            rw_ctl_errorf(CMD, "%s (%lld rows deleted before)", errstr, total);
            return RW_CTL_EXIT_FAILED;
        }
        total += n;
        if (!json && !done)
            fprintf(stderr, "\rdeleted %lld rows...", total);
    }
    if (!json && total > 0)
        fputc('\n', stderr);
    if (rw_outbox_prune(pg, s->outbox_retention_s, (int)batch, &pruned, errstr,
                        sizeof(errstr))) {
        rw_ctl_errorf(CMD, "outbox: %s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    if (json)
        printf("{\"days\": %lld, \"deleted_rows\": %lld, \"outbox_pruned\": "
               "%lld}\n",
               days, total, pruned);
    else
        printf("deleted %lld rows of runs that ended more than %lld days "
               "ago; pruned %lld outbox rows\n",
               total, days, pruned);
    return RW_CTL_EXIT_OK;
}

int rw_ctl_retention(int argc, char **argv, const rw_settings_t *s)
{
    long long days = s->retention_days, batch = s->retention_batch;
    bool dry = false, json = false;
    char errstr[512];
    rw_pg_t *pg = NULL;
    int rc;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--dry-run") == 0) {
            dry = true;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--days") == 0 && i + 1 < argc) {
            if (rw_ctl_parse_ll(CMD, a, argv[++i], 1, 36500, &days) < 0)
                return RW_CTL_EXIT_USAGE;
        } else if (strcmp(a, "--batch") == 0 && i + 1 < argc) {
            if (rw_ctl_parse_ll(CMD, a, argv[++i], 1, 100000, &batch) < 0)
                return RW_CTL_EXIT_USAGE;
        } else {
            rw_ctl_errorf(CMD, "unknown or incomplete option '%s'", a);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (days == 0) {
        rw_ctl_errorf(CMD, "ROLLWAVE_RETENTION_DAYS is 0 (keep everything); "
                           "give --days N to delete anyway");
        return RW_CTL_EXIT_USAGE;
    }
    if (rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    rc = dry ? dry_run(pg, s, days, json) : execute(pg, s, days, batch, json);
    rw_pg_destroy(pg);
    return rc;
}
