/*
 * rw_migrate: applies the embedded migrations under a session advisory lock
 * and records them in schema_migrations. It never rolls a migration back
 * once committed and never edits the migration text.
 */
#include "rw_migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_log.h"

static const char create_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " name text PRIMARY KEY,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

static int cmp_migration(const void *a, const void *b)
{
    const rw_migration_t *ma = *(const rw_migration_t *const *)a;
    const rw_migration_t *mb = *(const rw_migration_t *const *)b;
    return strcmp(ma->name, mb->name);
}

/*
 * The embedded table is generated sorted, but the order is what makes
 * migrations correct, so it is not left to the build. Caller frees.
 */
static const rw_migration_t **sorted_migrations(void)
{
    const rw_migration_t **v;

    v = calloc(rw_migrations_count + 1, sizeof(*v));
    if (!v)
        return NULL;
    for (size_t i = 0; i < rw_migrations_count; i++)
        v[i] = &rw_migrations[i];
    qsort(v, rw_migrations_count, sizeof(*v), cmp_migration);
    return v;
}

static rw_err_t is_applied(rw_pg_t *pg, const char *name, int *applied,
                           char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *r = NULL;
    const char *params[1] = {name};

    err = rw_pg_exec(pg, "SELECT 1 FROM schema_migrations WHERE name = $1", 1,
                     params, &r, errstr, errlen);
    if (err)
        goto out;
    *applied = PQntuples(r) > 0;
out:
    PQclear(r);
    return err;
}

/*
 * One migration and its bookkeeping row in one transaction. gen is the
 * reconnect count at the time the lock was taken: a reconnect since then
 * means the lock is gone and another applier may be running.
 */
static rw_err_t apply_one(rw_pg_t *pg, const rw_migration_t *m, unsigned gen,
                          char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *r = NULL;
    const char *params[1] = {m->name};

    err = rw_pg_begin(pg, errstr, errlen);
    if (err)
        goto out;
    if (rw_pg_reconnects(pg) != gen) {
        err = rw_err_set(errstr, errlen, RW_ERR_PG_CONN,
                         "connection lost while holding the migration lock");
        goto out;
    }
    /*
     * The one PQexec of rollwave: a migration file holds several statements,
     * which PQexecParams refuses. Its text is compiled into the binary and
     * never built from input.
     */
    r = PQexec(rw_pg_conn(pg), m->sql);
    err = rw_pg_result_err(pg, r, errstr, errlen);
    if (err)
        goto out;
    err = rw_pg_exec(pg, "INSERT INTO schema_migrations (name) VALUES ($1)", 1,
                     params, NULL, errstr, errlen);
    if (err)
        goto out;
    err = rw_pg_commit(pg, errstr, errlen);
out:
    PQclear(r);
    if (err)
        rw_pg_rollback(pg, NULL, 0);
    return err;
}

/* Prepend the migration name to errstr. */
static void name_error(char *errstr, size_t errlen, const char *name)
{
    char tmp[512];

    if (!errstr || errlen == 0)
        return;
    snprintf(tmp, sizeof(tmp), "%s", errstr);
    snprintf(errstr, errlen, "migration %s: %s", name, tmp);
}

rw_err_t rw_migrate_apply(rw_pg_t *pg, rw_migrate_cb cb, void *ud,
                          int *n_applied, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    const rw_migration_t **order = NULL;
    int locked = 0, n = 0;
    unsigned gen = 0;

    if (n_applied)
        *n_applied = 0;
    if (!pg || rw_pg_in_tx(pg)) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "rw_migrate_apply needs a connection outside a "
                         "transaction");
        goto out;
    }
    order = sorted_migrations();
    if (!order) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* waits for any other applier; released below or with the session */
    err = rw_pg_advisory_lock(pg, RW_MIGRATE_LOCK_KEY, errstr, errlen);
    if (err)
        goto out;
    locked = 1;
    gen = rw_pg_reconnects(pg);
    err = rw_pg_exec(pg, create_sql, 0, NULL, NULL, errstr, errlen);
    if (err)
        goto out;
    for (size_t i = 0; i < rw_migrations_count; i++) {
        const rw_migration_t *m = order[i];
        int applied = 0;

        err = is_applied(pg, m->name, &applied, errstr, errlen);
        if (err)
            goto out;
        if (applied)
            continue;
        err = apply_one(pg, m, gen, errstr, errlen);
        if (err) {
            name_error(errstr, errlen, m->name);
            goto out;
        }
        n++;
        rw_info("migrate", "event=migration_applied name=%s", m->name);
        if (cb)
            cb(m->name, ud);
    }
out:
    /* a lock lost with its connection needs (and allows) no unlock */
    if (locked && rw_pg_reconnects(pg) == gen &&
        PQstatus(rw_pg_conn(pg)) == CONNECTION_OK) {
        char uerr[256];
        if (rw_pg_advisory_unlock(pg, RW_MIGRATE_LOCK_KEY, uerr, sizeof(uerr)))
            rw_warn("migrate", "event=migrate_unlock_failed");
    }
    free(order);
    if (n_applied)
        *n_applied = n;
    return err;
}

rw_err_t rw_migrate_status(rw_pg_t *pg, rw_migrate_status_cb cb, void *ud,
                           char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *r = NULL;
    const rw_migration_t **order = NULL;
    int rows = 0;

    if (!pg || !cb) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "rw_migrate_status: pg and cb are required");
        goto out;
    }
    order = sorted_migrations();
    if (!order) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    err = rw_pg_exec(pg,
                     "SELECT to_regclass('schema_migrations') IS NOT NULL "
                     "AS present",
                     0, NULL, &r, errstr, errlen);
    if (err)
        goto out;
    if (rw_pg_bool(r, 0, "present", 0)) {
        PQclear(r);
        r = NULL;
        err = rw_pg_exec(pg,
                         "SELECT name, to_char(applied_at AT TIME ZONE 'UTC',"
                         " 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS applied_at"
                         " FROM schema_migrations ORDER BY name",
                         0, NULL, &r, errstr, errlen);
        if (err)
            goto out;
        rows = PQntuples(r);
    }
    for (size_t i = 0; i < rw_migrations_count; i++) {
        const char *at = NULL;
        for (int row = 0; row < rows; row++) {
            const char *name = rw_pg_str(r, row, "name");
            if (name && strcmp(name, order[i]->name) == 0)
                at = rw_pg_str(r, row, "applied_at");
        }
        cb(order[i]->name, at, 1, ud);
    }
    for (int row = 0; row < rows; row++) {
        const char *name = rw_pg_str(r, row, "name");
        int known = 0;
        for (size_t i = 0; name && i < rw_migrations_count; i++)
            if (strcmp(name, order[i]->name) == 0)
                known = 1;
        if (name && !known)
            cb(name, rw_pg_str(r, row, "applied_at"), 0, ud);
    }
out:
    PQclear(r);
    free(order);
    return err;
}
