/*
 * rw_migrate: applies the embedded schemas/sql migrations in order and
 * reports which are applied. It does not parse or rewrite SQL: each file
 * runs as it is, inside one transaction with its bookkeeping row.
 */
#ifndef RW_MIGRATE_H
#define RW_MIGRATE_H

#include <stddef.h>

#include "rw_err.h"
#include "rw_pg.h"

typedef struct rw_migration {
    const char *name; /* file name without .sql, e.g. "0001_core" */
    const char *sql;
} rw_migration_t;

/* Generated into the library from the schemas/sql files, sorted by name. */
extern const rw_migration_t rw_migrations[];
extern const size_t rw_migrations_count;

/*
 * Session advisory lock key that serializes concurrent appliers: the bytes
 * of "rollwave" as a big-endian 64-bit integer. Other code must not use it.
 */
#define RW_MIGRATE_LOCK_KEY 0x726f6c6c77617665LL

/* Called after each migration is committed. */
typedef void (*rw_migrate_cb)(const char *name, void *ud);

/*
 * Apply every embedded migration not yet recorded in schema_migrations, in
 * name order, each in its own transaction together with its
 * schema_migrations row. Waits for RW_MIGRATE_LOCK_KEY first, so concurrent
 * callers apply each migration exactly once. pg must not be inside a
 * transaction. *n_applied (may be NULL) counts the migrations committed,
 * also when a later one fails. cb may be NULL.
 */
rw_err_t rw_migrate_apply(rw_pg_t *pg, rw_migrate_cb cb, void *ud,
                          int *n_applied, char *errstr, size_t errlen);

/*
 * Called once per migration by rw_migrate_status, embedded ones in name
 * order first: applied_at is the UTC time it was applied
 * ("2026-11-22T16:30:54Z") or NULL when pending; embedded is 0 for a
 * migration recorded in the database but unknown to this binary (applied by
 * a newer version).
 */
typedef void (*rw_migrate_status_cb)(const char *name, const char *applied_at,
                                     int embedded, void *ud);

/*
 * Report applied and pending migrations. Reads only; a database without
 * schema_migrations has every migration pending.
 */
rw_err_t rw_migrate_status(rw_pg_t *pg, rw_migrate_status_cb cb, void *ud,
                           char *errstr, size_t errlen);

#endif
