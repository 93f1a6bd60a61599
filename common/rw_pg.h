/*
 * rw_pg: the only libpq wrapper of rollwave.
 *
 * It owns one connection, runs parameterized statements (PQexecParams, text
 * parameters only), maps SQLSTATEs onto rw_err_t, tracks whether a
 * transaction is open, reconnects after a lost connection when that is safe,
 * reads columns by name, builds Postgres array literals for batched
 * statements and wraps session advisory locks. It holds no SQL of any other
 * module and never logs the DSN (it may carry a password).
 *
 * Not thread-safe: one rw_pg_t per thread.
 */
#ifndef RW_PG_H
#define RW_PG_H

#include <stddef.h>

#include <libpq-fe.h>

#include "rw_err.h"

typedef struct rw_pg rw_pg_t;

/*
 * Connect to dsn (key=value string or postgresql:// URI; sslmode and the
 * other libpq options pass through). On failure *pgp is NULL and errstr
 * holds the server or libpq reason, never the DSN itself.
 */
rw_err_t rw_pg_new(rw_pg_t **pgp, const char *dsn, char *errstr, size_t errlen);

/* Close and free. Accepts NULL. */
void rw_pg_destroy(rw_pg_t *pg);

/* The libpq connection, for what this wrapper does not cover. */
PGconn *rw_pg_conn(rw_pg_t *pg);

/*
 * How many times the connection was re-established. Session state (advisory
 * locks, SET values) does not survive a reconnect: a caller that relies on
 * it compares this counter before and after.
 */
unsigned rw_pg_reconnects(const rw_pg_t *pg);

/*
 * Prepare each distinct statement with parameters once per session and
 * run it by name from then on (off by default). It saves the parse and
 * plan of every repetition on a hot path; Postgres may then run a
 * statement with a generic plan, so it is meant for statements whose
 * parameters are keys (ids, a run and chunk), not for searches whose best
 * plan depends on the values. Behind a connection pooler in transaction
 * mode that does not track prepared statements, leave it off; a
 * statement the server has lost is prepared again.
 */
void rw_pg_set_prepare(rw_pg_t *pg, int on);

/* True between a successful rw_pg_begin and rw_pg_commit/rollback. */
int rw_pg_in_tx(const rw_pg_t *pg);

/*
 * Run sql with nparams text parameters (params[i] NULL = SQL NULL). On
 * success *res (when res is not NULL) holds the result, which the caller
 * PQclear()s; on failure *res is NULL. Errors:
 *   RW_ERR_PG_CONN    connection lost / SQLSTATE class 08 or 57P01..57P03
 *   RW_ERR_PG_RETRY   40001 serialization failure, 40P01 deadlock
 *   RW_ERR_PG_UNIQUE  23505 unique violation
 *   RW_ERR_PG_UNAVAILABLE  25006 read-only transaction (failover), class
 *                     53 insufficient resources, 57014 query cancelled
 *                     (statement_timeout), 55P03 lock not available
 *   RW_ERR_PG_QUERY   anything else
 * errstr carries the server's primary message, SQLSTATE and detail.
 *
 * Outside a transaction a lost connection is re-established and the
 * statement sent once more. If the connection died after the server ran
 * the statement it therefore runs twice: autocommit statements must be
 * idempotent (conditional updates), anything else belongs in a transaction.
 * Inside a transaction a lost connection returns RW_ERR_PG_CONN at once:
 * the caller rolls back and retries the whole transaction.
 */
rw_err_t rw_pg_exec(rw_pg_t *pg, const char *sql, int nparams,
                    const char *const *params, PGresult **res, char *errstr,
                    size_t errlen);

/*
 * rw_pg_exec, planned at this call whatever rw_pg_set_prepare says: for
 * statements run every few seconds (sweeps, background scans) over tables
 * whose size changes by orders of magnitude. A prepared statement keeps
 * the generic plan Postgres makes at its sixth run, until the tables are
 * analyzed again; one made on a fresh database whose empty run_targets had
 * been analyzed read the whole table once per row of its outer side after
 * the table had filled (seconds per call at 200,000 targets). Planning at
 * each call costs less than a millisecond here.
 */
rw_err_t rw_pg_exec_replan(rw_pg_t *pg, const char *sql, int nparams,
                           const char *const *params, PGresult **res,
                           char *errstr, size_t errlen);

/*
 * Check a result obtained directly from libpq (e.g. PQexec of a migration
 * file): RW_OK for COMMAND_OK / TUPLES_OK, otherwise the mapped error with
 * errstr filled as rw_pg_exec does. Does not clear res (NULL allowed).
 */
rw_err_t rw_pg_result_err(rw_pg_t *pg, const PGresult *res, char *errstr,
                          size_t errlen);

/*
 * Pure SQLSTATE mapping used by rw_pg_exec, as listed there: one table
 * keyed by full SQLSTATE or by 2-character class, the full code winning.
 * NULL, malformed or unlisted = RW_ERR_PG_QUERY.
 */
rw_err_t rw_pg_classify_sqlstate(const char *sqlstate);

/*
 * Transactions. begin fails with RW_ERR_INVALID_ARG when one is already
 * open. commit reports an earlier failed statement (Postgres then answers
 * COMMIT with ROLLBACK) as RW_ERR_PG_QUERY; either way the transaction is
 * over. rollback is safe when nothing is open and after a lost connection.
 */
rw_err_t rw_pg_begin(rw_pg_t *pg, char *errstr, size_t errlen);
rw_err_t rw_pg_commit(rw_pg_t *pg, char *errstr, size_t errlen);
rw_err_t rw_pg_rollback(rw_pg_t *pg, char *errstr, size_t errlen);

/*
 * Column access by name (PQfnumber). rw_pg_col logs an error and returns -1
 * when the result has no such column: that is a programming error, and the
 * value readers then return NULL / dflt.
 */
int rw_pg_col(const PGresult *res, const char *name);
/* The text value, or NULL for SQL NULL, a missing column or row. */
const char *rw_pg_str(const PGresult *res, int row, const char *col);
/* Integer value; dflt for NULL, missing or non-integer text. */
long long rw_pg_ll(const PGresult *res, int row, const char *col,
                   long long dflt);
/* Boolean value ('t' / 'f'); dflt for NULL, missing or other text. */
int rw_pg_bool(const PGresult *res, int row, const char *col, int dflt);

/*
 * Array literal builder for batched statements, e.g.
 *   UPDATE t SET ... FROM unnest($1::bigint[], $2::text[]) AS u(id, s) ...
 * Every text element is double-quoted with '"' and '\' escaped, SQL NULL is
 * written NULL, the empty array is {}. Lives on the caller's stack:
 *
 *   rw_pg_array_t a;
 *   rw_pg_array_init(&a);
 *   rw_pg_array_add_ll(&a, 42);
 *   lit = rw_pg_array_finish(&a);   // valid until the next add or free
 *   rw_pg_array_free(&a);
 *
 * An add that runs out of memory returns RW_ERR_NOMEM and the builder stays
 * failed: finish then returns NULL.
 */
typedef struct rw_pg_array {
    char *buf;
    size_t len; /* bytes used, without the closing brace */
    size_t cap;
    size_t n; /* elements added */
    int failed;
} rw_pg_array_t;

void rw_pg_array_init(rw_pg_array_t *a);
rw_err_t rw_pg_array_add_ll(rw_pg_array_t *a, long long v);
/* s NULL = SQL NULL. */
rw_err_t rw_pg_array_add_str(rw_pg_array_t *a, const char *s);
const char *rw_pg_array_finish(rw_pg_array_t *a);
void rw_pg_array_free(rw_pg_array_t *a);

/*
 * Session-level advisory locks (they outlive transactions and die with the
 * connection; see rw_pg_reconnects). try_lock sets *got to 1 when taken,
 * 0 when another session holds it. lock waits until it is free. unlock
 * returns RW_ERR_NOT_FOUND when this session did not hold the key.
 */
rw_err_t rw_pg_try_advisory_lock(rw_pg_t *pg, long long key, int *got,
                                 char *errstr, size_t errlen);
rw_err_t rw_pg_advisory_lock(rw_pg_t *pg, long long key, char *errstr,
                             size_t errlen);
rw_err_t rw_pg_advisory_unlock(rw_pg_t *pg, long long key, char *errstr,
                               size_t errlen);

#endif
