/*
 * rw_retention: old runs go, in small batches (schemas/sql/0011_retention.sql).
 *
 * A final run whose end (completed_at, else created_at) is older than the
 * retention is deleted with every row that references it: targets,
 * chunks, transitions, and whatever table later references runs with ON
 * DELETE CASCADE. The instances keep their last_deployment_* fields; only
 * their deployment_run_id, which would point at nothing, is cleared. Open
 * runs are never touched, whatever their age.
 *
 * Every batch is one short transaction deleting at most `batch` rows of
 * one table, so the hot path never waits behind a long lock.
 */
#ifndef RW_RETENTION_H
#define RW_RETENTION_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"
#include "rw_pg.h"

typedef struct rw_retention_row {
    char table[64];
    long long rows;
} rw_retention_row_t;

/*
 * What a pass with this retention would delete, per table (*rows malloc'd,
 * caller frees). days >= 1.
 */
rw_err_t rw_retention_plan(rw_pg_t *pg, long long days,
                           rw_retention_row_t **rows, size_t *n, char *errstr,
                           size_t errlen);

/*
 * Up to max_batches batches of at most `batch` rows each. *deleted (may be
 * NULL) gets the rows deleted, *done whether nothing older than the
 * retention is left. Counted in rollwave_retention_deleted_total{table}.
 */
rw_err_t rw_retention_run(rw_pg_t *pg, long long days, long long batch,
                          long long max_batches, long long *deleted, bool *done,
                          char *errstr, size_t errlen);

#endif
