/*
 * rw_migrate: applies the embedded schemas/sql migrations in order.
 */
#ifndef RW_MIGRATE_H
#define RW_MIGRATE_H

#include <stddef.h>

typedef struct rw_migration {
    const char *name; /* file name without .sql, e.g. "0001_core" */
    const char *sql;
} rw_migration_t;

extern const rw_migration_t rw_migrations[];
extern const size_t rw_migrations_count;

#endif
