/*
 * rw_itest_pg: creates, connects to and drops per-test databases. Test
 * support only: nothing here is linked into the daemons.
 */
#include "rw_itest_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "rw_migrate.h"

/* Append s to out (size len) as a single-quoted conninfo value. */
static void append_value(char *out, size_t len, const char *s)
{
    size_t n = strlen(out);

    if (n + 1 < len)
        out[n++] = '\'';
    for (; *s && n + 2 < len; s++) {
        if (*s == '\'' || *s == '\\')
            out[n++] = '\\';
        out[n++] = *s;
    }
    if (n + 1 < len)
        out[n++] = '\'';
    out[n] = '\0';
    if (*s || n + 1 >= len)
        fail_msg("rw_itest_pg: DSN does not fit in %zu bytes", len);
}

static void append(char *out, size_t len, const char *s)
{
    size_t n = strlen(out);

    if (n + strlen(s) + 1 > len)
        fail_msg("rw_itest_pg: DSN does not fit in %zu bytes", len);
    memcpy(out + n, s, strlen(s) + 1);
}

void rw_itest_pg_dsn(char *out, size_t len, const char *dbname)
{
    const char *base = rw_itest_env("ROLLWAVE_PG_DSN");
    PQconninfoOption *opts;
    char *perr = NULL;

    /* parsing handles both URIs and key=value strings alike */
    opts = PQconninfoParse(base, &perr);
    if (!opts) {
        PQfreemem(perr);
        fail_msg("ROLLWAVE_PG_DSN is not a valid libpq connection string");
    }
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || strcmp(o->keyword, "dbname") == 0)
            continue;
        append(out, len, o->keyword);
        append(out, len, "=");
        append_value(out, len, o->val);
        append(out, len, " ");
    }
    PQconninfoFree(opts);
    append(out, len, "dbname=");
    append_value(out, len, dbname);
}

/* The dbname keyword of dsn, copied into out. */
static void dbname_of(const char *dsn, char *out, size_t len)
{
    PQconninfoOption *opts;
    char *perr = NULL;

    out[0] = '\0';
    opts = PQconninfoParse(dsn, &perr);
    if (!opts) {
        PQfreemem(perr);
        fail_msg("rw_itest_pg: not a valid connection string");
    }
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val)
            snprintf(out, len, "%s", o->val);
    PQconninfoFree(opts);
    if (!out[0])
        fail_msg("rw_itest_pg: the DSN names no database");
}

rw_pg_t *rw_itest_pg_connect(const char *dsn)
{
    rw_pg_t *pg = NULL;
    char errstr[512];

    if (rw_pg_new(&pg, dsn, errstr, sizeof(errstr)))
        fail_msg("rw_itest_pg: connect failed: %s", errstr);
    return pg;
}

/* CREATE / DROP DATABASE through the server's maintenance connection. */
static void admin_exec(const char *verb, const char *dbname, const char *suffix)
{
    rw_pg_t *pg = rw_itest_pg_connect(rw_itest_env("ROLLWAVE_PG_DSN"));
    char sql[512], errstr[512];
    char *ident;
    rw_err_t err;

    /* identifiers cannot be parameters: quote the generated name */
    ident = PQescapeIdentifier(rw_pg_conn(pg), dbname, strlen(dbname));
    if (!ident) {
        rw_pg_destroy(pg);
        fail_msg("rw_itest_pg: cannot quote database name");
    }
    snprintf(sql, sizeof(sql), "%s %s%s", verb, ident, suffix);
    PQfreemem(ident);
    err = rw_pg_exec(pg, sql, 0, NULL, NULL, errstr, sizeof(errstr));
    rw_pg_destroy(pg);
    if (err)
        fail_msg("rw_itest_pg: %s %s failed: %s", verb, dbname, errstr);
}

void rw_itest_pg_empty_db(char *dsn_out, size_t len)
{
    char prefix[32], dbname[64];

    /* the time part keeps names unique across runs that reuse a pid */
    snprintf(prefix, sizeof(prefix), "rwt_%lx", (unsigned long)time(NULL));
    rw_itest_unique(dbname, sizeof(dbname), prefix);
    admin_exec("CREATE DATABASE", dbname, "");
    rw_itest_pg_dsn(dsn_out, len, dbname);
}

void rw_itest_pg_fresh_db(char *dsn_out, size_t len)
{
    rw_pg_t *pg;
    char errstr[512];
    int n = -1;
    rw_err_t err;

    rw_itest_pg_empty_db(dsn_out, len);
    pg = rw_itest_pg_connect(dsn_out);
    err = rw_migrate_apply(pg, NULL, NULL, &n, errstr, sizeof(errstr));
    rw_pg_destroy(pg);
    if (err)
        fail_msg("rw_itest_pg: migrations failed: %s", errstr);
    if (n != (int)rw_migrations_count)
        fail_msg("rw_itest_pg: %d of %zu migrations applied to a new "
                 "database",
                 n, rw_migrations_count);
}

void rw_itest_pg_drop_db(const char *dsn)
{
    char dbname[128];

    dbname_of(dsn, dbname, sizeof(dbname));
    admin_exec("DROP DATABASE IF EXISTS", dbname, " WITH (FORCE)");
}
