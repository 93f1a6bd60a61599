/*
 * rw_retention: the C side of the retention functions in
 * schemas/sql/0011_retention.sql: the dry run's plan, and passes of
 * batches, each its own autocommitted statement.
 */
#include "rw_retention.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_log.h"
#include "rw_metrics.h"

static const char SQL_PLAN[] =
    "SELECT o_table, o_rows"
    " FROM rw_retention_plan(now() - make_interval(days => $1::int))";

static const char SQL_BATCH[] =
    "SELECT o_table, o_rows"
    " FROM rw_retention_batch(now() - make_interval(days => $1::int),"
    "                         $2::int)";

static rw_err_t check_days(long long days, char *errstr, size_t errlen)
{
    if (days < 1 || days > 36500)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "retention: %lld days is not in 1..36500", days);
    return RW_OK;
}

rw_err_t rw_retention_plan(rw_pg_t *pg, long long days,
                           rw_retention_row_t **rows, size_t *n, char *errstr,
                           size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char days_s[24];
    const char *p[1] = {days_s};
    rw_retention_row_t *v = NULL;

    *rows = NULL;
    *n = 0;
    if ((err = check_days(days, errstr, errlen)))
        return err;
    snprintf(days_s, sizeof(days_s), "%lld", days);
    err = rw_pg_exec(pg, SQL_PLAN, 1, p, &res, errstr, errlen);
    if (err)
        goto out;
    v = calloc((size_t)PQntuples(res) + 1, sizeof(*v));
    if (!v) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "retention plan");
        goto out;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        snprintf(v[i].table, sizeof(v[i].table), "%s",
                 rw_pg_str(res, i, "o_table"));
        v[i].rows = rw_pg_ll(res, i, "o_rows", 0);
    }
    *n = (size_t)PQntuples(res);
    *rows = v;
    v = NULL;
out:
    free(v);
    PQclear(res);
    return err;
}

rw_err_t rw_retention_run(rw_pg_t *pg, long long days, long long batch,
                          long long max_batches, long long *deleted, bool *done,
                          char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char days_s[24], batch_s[24];
    const char *p[2] = {days_s, batch_s};
    long long total = 0;

    if (deleted)
        *deleted = 0;
    *done = false;
    if ((err = check_days(days, errstr, errlen)))
        return err;
    if (batch < 1 || batch > 100000 || max_batches < 1)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "retention: batch %lld (1..100000), %lld batches",
                          batch, max_batches);
    snprintf(days_s, sizeof(days_s), "%lld", days);
    snprintf(batch_s, sizeof(batch_s), "%lld", batch);
    for (long long i = 0; i < max_batches && !*done; i++) {
        const char *table;
        long long n;
        char labels[96];
        PQclear(res);
        res = NULL;
        err = rw_pg_exec(pg, SQL_BATCH, 2, p, &res, errstr, errlen);
        if (err)
            break;
        if (PQgetisnull(res, 0, 0)) {
            *done = true;
            break;
        }
        table = rw_pg_str(res, 0, "o_table");
        n = rw_pg_ll(res, 0, "o_rows", 0);
        total += n;
        snprintf(labels, sizeof(labels), "table=\"%s\"", table);
        rw_metrics_add(rw_metrics_counter("rollwave_retention_deleted_total",
                                          "rows deleted by the retention "
                                          "of old runs",
                                          labels),
                       (double)n);
    }
    PQclear(res);
    if (total > 0)
        rw_info("retention", "event=deleted rows=%lld days=%lld done=%s", total,
                days, *done ? "true" : "false");
    if (deleted)
        *deleted = total;
    return err;
}
