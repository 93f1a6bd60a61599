/*
 * rw_itest_pg: throwaway Postgres databases for integration tests. Each
 * test gets its own uniquely named database on the server of
 * ROLLWAVE_PG_DSN (which needs CREATEDB), so tests never see each other's
 * rows. Every helper fails the running test on error; none returns one.
 */
#ifndef RW_ITEST_PG_H
#define RW_ITEST_PG_H

#include <stddef.h>

#include "rw_itest.h"
#include "rw_pg.h"

/*
 * Create an empty database and write a key=value DSN for it into dsn_out
 * (the server options of ROLLWAVE_PG_DSN, whether that is a URI or a
 * key=value string, with dbname replaced).
 */
void rw_itest_pg_empty_db(char *dsn_out, size_t len);

/* rw_itest_pg_empty_db plus every embedded migration applied. */
void rw_itest_pg_fresh_db(char *dsn_out, size_t len);

/* A connection to dsn; the caller rw_pg_destroy()s it. */
rw_pg_t *rw_itest_pg_connect(const char *dsn);

/* Drop the database dsn names, closing any connection still open to it. */
void rw_itest_pg_drop_db(const char *dsn);

/* Key=value DSN for database dbname on ROLLWAVE_PG_DSN's server. */
void rw_itest_pg_dsn(char *out, size_t len, const char *dbname);

#endif
