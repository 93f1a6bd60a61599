/*
 * rw_pg: one libpq connection with parameterized execution, SQLSTATE
 * mapping, transaction tracking, reconnect, column access by name, array
 * literals and advisory locks. It holds no application SQL and never prints
 * or logs the DSN.
 */
#include "rw_pg.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_log.h"

/*
 * Statements prepared on this session (rw_pg_set_prepare): the text, its
 * parameter count and the server-side name. Bounded: a connection that
 * runs more distinct statements than this runs the rest unprepared.
 */
#define RW_PG_PREPARED_MAX 128

typedef struct prepared {
    uint64_t hash;
    int nparams;
    unsigned name; /* "rw_<name>" on the server */
    char *sql;
} prepared_t;

struct rw_pg {
    PGconn *conn;
    int in_tx;
    unsigned reconnects;
    int prepare;
    /* names the cache forgot that the server may still hold */
    unsigned stale[RW_PG_PREPARED_MAX];
    size_t nstale;
    prepared_t stmts[RW_PG_PREPARED_MAX];
    size_t nstmts;
    unsigned next_name;
};

/*
 * Copy a libpq message into errstr as one line: libpq's multi-line
 * messages ("...\n\tIs the server running...") would break log lines.
 */
static void set_msg(char *errstr, size_t errlen, const char *prefix,
                    const char *msg)
{
    size_t n;

    if (!errstr || errlen == 0)
        return;
    snprintf(errstr, errlen, "%s%s", prefix, msg ? msg : "");
    n = strlen(errstr);
    while (n > 0 && (errstr[n - 1] == '\n' || errstr[n - 1] == ' '))
        errstr[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (errstr[i] == '\n' || errstr[i] == '\t')
            errstr[i] = ' ';
}

/* Server notices (e.g. "relation already exists, skipping") are debug noise. */
static void notice_processor(void *arg, const char *message)
{
    char quoted[512];
    char line[480];
    size_t n;

    (void)arg;
    snprintf(line, sizeof(line), "%s", message ? message : "");
    n = strlen(line);
    while (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    rw_debug("pg", "event=pg_notice msg=%s",
             rw_log_quote(quoted, sizeof(quoted), line));
}

rw_err_t rw_pg_new(rw_pg_t **pgp, const char *dsn, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_pg_t *pg = NULL;
    PQconninfoOption *opts = NULL;
    char *perr = NULL;

    if (!pgp || !dsn) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "rw_pg_new: pgp and dsn are required");
        goto out;
    }
    *pgp = NULL;
    /*
     * Parse first: libpq's parse errors quote pieces of the string, which
     * may be a password, so they are replaced by a generic message.
     */
    opts = PQconninfoParse(dsn, &perr);
    if (!opts) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "invalid postgres connection string (details "
                         "withheld: the string may hold a password)");
        goto out;
    }
    pg = calloc(1, sizeof(*pg));
    if (!pg) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    pg->conn = PQconnectdb(dsn);
    if (!pg->conn) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        set_msg(errstr, errlen,
                "postgres connect failed: ", PQerrorMessage(pg->conn));
        err = RW_ERR_PG_CONN;
        goto out;
    }
    PQsetNoticeProcessor(pg->conn, notice_processor, NULL);
    *pgp = pg;
    pg = NULL;
out:
    PQfreemem(perr);
    PQconninfoFree(opts);
    rw_pg_destroy(pg);
    return err;
}

/* The session's prepared statements are gone (new session) or suspect. */
static void forget_prepared(rw_pg_t *pg)
{
    for (size_t i = 0; i < pg->nstmts; i++)
        free(pg->stmts[i].sql);
    pg->nstmts = 0;
}

void rw_pg_destroy(rw_pg_t *pg)
{
    if (!pg)
        return;
    forget_prepared(pg);
    PQfinish(pg->conn);
    free(pg);
}

void rw_pg_set_prepare(rw_pg_t *pg, int on)
{
    if (pg)
        pg->prepare = on != 0;
}

/* FNV-1a: the cache's key, compared in full on a match. */
static uint64_t sql_hash(const char *sql)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

/*
 * The prepared statement for sql, prepared now if it is new and there is
 * room; NULL: run it unprepared. A failed Parse is the statement's own
 * error (syntax, missing relation), returned as such.
 */
static rw_err_t prepared_for(rw_pg_t *pg, const char *sql, int nparams,
                             const prepared_t **out, char *errstr,
                             size_t errlen)
{
    uint64_t h = sql_hash(sql);
    prepared_t *st;
    PGresult *r;
    char name[24];
    rw_err_t err;

    *out = NULL;
    for (size_t i = 0; i < pg->nstmts; i++)
        if (pg->stmts[i].hash == h && pg->stmts[i].nparams == nparams &&
            strcmp(pg->stmts[i].sql, sql) == 0) {
            *out = &pg->stmts[i];
            return RW_OK;
        }
    if (pg->nstmts == RW_PG_PREPARED_MAX)
        return RW_OK;
    st = &pg->stmts[pg->nstmts];
    st->sql = strdup(sql);
    if (!st->sql)
        return RW_OK; /* unprepared is still correct */
    st->hash = h;
    st->nparams = nparams;
    st->name = pg->next_name++;
    snprintf(name, sizeof(name), "rw_%u", st->name);
    r = PQprepare(pg->conn, name, sql, nparams, NULL);
    err = rw_pg_result_err(pg, r, errstr, errlen);
    PQclear(r);
    if (err) {
        free(st->sql);
        st->sql = NULL;
        return err;
    }
    pg->nstmts++;
    *out = st;
    return RW_OK;
}

/*
 * A prepared statement the server no longer has (a pooler or DISCARD ALL
 * dropped it: 26000) or whose cached plan a schema change invalidated in
 * a way Postgres will not re-plan silently (0A000, "cached plan must not
 * change result type"): everything is prepared again from scratch.
 */
static int prepared_stale(const PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    /* the plan cache's own check, whatever the server's language */
    const char *fn = r ? PQresultErrorField(r, PG_DIAG_SOURCE_FUNCTION) : NULL;

    if (!state)
        return 0;
    return strcmp(state, "26000") == 0 ||
           (strcmp(state, "0A000") == 0 && fn &&
            strcmp(fn, "RevalidateCachedQuery") == 0);
}

/*
 * After a stale statement the cache starts afresh under new names; the
 * old names are dropped on the server, by name (never DEALLOCATE ALL,
 * which behind a pooler that keeps statements for its clients would drop
 * other clients' too), at the next statement outside a transaction:
 * DEALLOCATE is refused inside an aborted one. Best effort: a failure
 * leaves unused statements behind, nothing else.
 */
static void forget_stale(rw_pg_t *pg)
{
    for (size_t i = 0; i < pg->nstmts; i++)
        if (pg->nstale < RW_PG_PREPARED_MAX)
            pg->stale[pg->nstale++] = pg->stmts[i].name;
    forget_prepared(pg);
}

static void deallocate_stale(rw_pg_t *pg)
{
    char sql[RW_PG_PREPARED_MAX * 32];
    size_t off = 0;

    if (pg->nstale == 0 || pg->in_tx ||
        PQtransactionStatus(pg->conn) != PQTRANS_IDLE)
        return;
    for (size_t i = 0; i < pg->nstale && off + 32 < sizeof(sql); i++)
        off += (size_t)snprintf(sql + off, sizeof(sql) - off,
                                "DEALLOCATE rw_%u;", pg->stale[i]);
    PQclear(PQexec(pg->conn, sql));
    pg->nstale = 0;
}

PGconn *rw_pg_conn(rw_pg_t *pg)
{
    return pg ? pg->conn : NULL;
}

unsigned rw_pg_reconnects(const rw_pg_t *pg)
{
    return pg ? pg->reconnects : 0;
}

int rw_pg_in_tx(const rw_pg_t *pg)
{
    return pg ? pg->in_tx : 0;
}

/*
 * SQLSTATE (5 characters) or class (its first 2) -> error. A full code
 * wins over its class. Everything here but PG_UNIQUE is worth a retry: the
 * server is going away, failing over, short of resources or gave up on
 * the statement, and the same statement succeeds once that has passed.
 */
static const struct {
    const char *code;
    rw_err_t err;
} sqlstates[] = {
    /* the session is gone or never came up: rw_pg_exec reconnects */
    {"08", RW_ERR_PG_CONN},      /* connection exception */
    {"57P01", RW_ERR_PG_CONN},   /* admin_shutdown */
    {"57P02", RW_ERR_PG_CONN},   /* crash_shutdown */
    {"57P03", RW_ERR_PG_CONN},   /* cannot_connect_now (starting up) */
    {"40001", RW_ERR_PG_RETRY},  /* serialization_failure */
    {"40P01", RW_ERR_PG_RETRY},  /* deadlock_detected */
    {"23505", RW_ERR_PG_UNIQUE}, /* unique_violation */
    /* a primary demoted by a failover serves read-only transactions */
    {"25006", RW_ERR_PG_UNAVAILABLE}, /* read_only_sql_transaction */
    {"53", RW_ERR_PG_UNAVAILABLE},    /* insufficient resources (disk full,
                                         out of memory, too many clients) */
    {"57014", RW_ERR_PG_UNAVAILABLE}, /* query_canceled (statement_timeout,
                                         pg_cancel_backend) */
    {"55P03", RW_ERR_PG_UNAVAILABLE}, /* lock_not_available (lock_timeout,
                                         NOWAIT) */
};

rw_err_t rw_pg_classify_sqlstate(const char *sqlstate)
{
    size_t n = sizeof(sqlstates) / sizeof(*sqlstates);

    if (!sqlstate || strlen(sqlstate) != 5)
        return RW_ERR_PG_QUERY;
    for (size_t i = 0; i < n; i++)
        if (strcmp(sqlstates[i].code, sqlstate) == 0)
            return sqlstates[i].err;
    for (size_t i = 0; i < n; i++)
        if (strlen(sqlstates[i].code) == 2 &&
            strncmp(sqlstates[i].code, sqlstate, 2) == 0)
            return sqlstates[i].err;
    return RW_ERR_PG_QUERY;
}

static int conn_bad(const rw_pg_t *pg)
{
    return PQstatus(pg->conn) == CONNECTION_BAD;
}

rw_err_t rw_pg_result_err(rw_pg_t *pg, const PGresult *res, char *errstr,
                          size_t errlen)
{
    ExecStatusType st;
    const char *state, *primary, *detail;
    rw_err_t err;

    if (!res) {
        /* libpq could not even produce a result: out of memory or no link */
        set_msg(errstr, errlen,
                "postgres: ", pg ? PQerrorMessage(pg->conn) : "no result");
        return pg && conn_bad(pg) ? RW_ERR_PG_CONN : RW_ERR_PG_QUERY;
    }
    st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return RW_OK;
    if (st != PGRES_FATAL_ERROR && st != PGRES_NONFATAL_ERROR) {
        return rw_err_set(errstr, errlen, RW_ERR_PG_QUERY,
                          "postgres: unexpected result status %s",
                          PQresStatus(st));
    }
    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    err = rw_pg_classify_sqlstate(state);
    /* libpq's own "server closed the connection" errors carry no SQLSTATE */
    if (pg && conn_bad(pg))
        err = RW_ERR_PG_CONN;
    if (!primary) {
        set_msg(errstr, errlen, "postgres: ", PQresultErrorMessage(res));
        return err;
    }
    if (detail)
        rw_err_set(errstr, errlen, err, "%s [SQLSTATE %s] detail: %s", primary,
                   state ? state : "?????", detail);
    else
        rw_err_set(errstr, errlen, err, "%s [SQLSTATE %s]", primary,
                   state ? state : "?????");
    return err;
}

/* PQreset keeps the PGconn (and its notice processor) and reconnects. */
static rw_err_t reconnect(rw_pg_t *pg, char *errstr, size_t errlen)
{
    forget_prepared(pg); /* they do not survive the session */
    pg->nstale = 0;
    PQreset(pg->conn);
    if (PQstatus(pg->conn) != CONNECTION_OK) {
        set_msg(errstr, errlen,
                "postgres reconnect failed: ", PQerrorMessage(pg->conn));
        return RW_ERR_PG_CONN;
    }
    pg->reconnects++;
    rw_warn("pg", "event=pg_reconnected reconnects=%u", pg->reconnects);
    return RW_OK;
}

rw_err_t rw_pg_exec_replan(rw_pg_t *pg, const char *sql, int nparams,
                           const char *const *params, PGresult **res,
                           char *errstr, size_t errlen)
{
    int prepare = pg ? pg->prepare : 0;
    rw_err_t err;

    if (pg)
        pg->prepare = 0;
    err = rw_pg_exec(pg, sql, nparams, params, res, errstr, errlen);
    if (pg)
        pg->prepare = prepare;
    return err;
}

rw_err_t rw_pg_exec(rw_pg_t *pg, const char *sql, int nparams,
                    const char *const *params, PGresult **res, char *errstr,
                    size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *r = NULL;

    if (res)
        *res = NULL;
    if (!pg || !sql || nparams < 0 || (nparams > 0 && !params)) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "rw_pg_exec: bad arguments");
        goto out;
    }
    for (int attempt = 0;; attempt++) {
        int by_name = 0;
        if (conn_bad(pg)) {
            if (pg->in_tx) {
                err = rw_err_set(errstr, errlen, RW_ERR_PG_CONN,
                                 "postgres connection lost inside a "
                                 "transaction");
                goto out;
            }
            err = reconnect(pg, errstr, errlen);
            if (err)
                goto out;
        }
        if (pg->prepare && nparams > 0) {
            const prepared_t *st = NULL;
            deallocate_stale(pg);
            err = prepared_for(pg, sql, nparams, &st, errstr, errlen);
            if (err)
                goto retry;
            if (st) {
                char name[24];
                snprintf(name, sizeof(name), "rw_%u", st->name);
                by_name = 1;
                r = PQexecPrepared(pg->conn, name, nparams, params, NULL, NULL,
                                   0);
            } else {
                r = PQexecParams(pg->conn, sql, nparams, NULL, params, NULL,
                                 NULL, 0);
            }
        } else {
            r = PQexecParams(pg->conn, sql, nparams, NULL, params, NULL, NULL,
                             0);
        }
        err = rw_pg_result_err(pg, r, errstr, errlen);
        if (err == RW_OK)
            break;
        if (by_name && prepared_stale(r)) {
            forget_stale(pg);
            PQclear(r);
            r = NULL;
            /* the statement did not run: outside a transaction it runs
             * again at once; inside, the transaction is aborted and the
             * caller's retry of all of it will work */
            if (pg->in_tx || attempt > 0) {
                err = RW_ERR_PG_RETRY;
                goto out;
            }
            continue;
        }
        PQclear(r);
        r = NULL;
    retry:
        /*
         * Only a lost link outside a transaction is retried, and only once:
         * a transaction's earlier statements died with the old session.
         */
        if (err != RW_ERR_PG_CONN || !conn_bad(pg) || pg->in_tx || attempt > 0)
            goto out;
        rw_warn("pg", "event=pg_connection_lost action=reconnect_and_retry");
    }
out:
    if (err == RW_OK && res)
        *res = r;
    else
        PQclear(r);
    return err;
}

rw_err_t rw_pg_begin(rw_pg_t *pg, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;

    if (!pg)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG, "no connection");
    if (pg->in_tx)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "a transaction is already open");
    err = rw_pg_exec(pg, "BEGIN", 0, NULL, NULL, errstr, errlen);
    if (err == RW_OK)
        pg->in_tx = 1;
    return err;
}

rw_err_t rw_pg_commit(rw_pg_t *pg, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *r = NULL;

    if (!pg)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG, "no connection");
    if (!pg->in_tx)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "no transaction open");
    err = rw_pg_exec(pg, "COMMIT", 0, NULL, &r, errstr, errlen);
    /* a COMMIT ends the transaction whatever its outcome */
    pg->in_tx = 0;
    if (err)
        goto out;
    /* Postgres answers COMMIT of an aborted transaction with ROLLBACK */
    if (strcmp(PQcmdStatus(r), "ROLLBACK") == 0)
        err = rw_err_set(errstr, errlen, RW_ERR_PG_QUERY,
                         "transaction was aborted by an earlier error and "
                         "has been rolled back");
out:
    PQclear(r);
    return err;
}

rw_err_t rw_pg_rollback(rw_pg_t *pg, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;

    if (!pg)
        return RW_OK;
    if (conn_bad(pg)) {
        /* the server dropped the transaction together with the session */
        pg->in_tx = 0;
        return RW_OK;
    }
    if (!pg->in_tx && PQtransactionStatus(pg->conn) == PQTRANS_IDLE)
        return RW_OK;
    /* in_tx stays set meanwhile so a lost link is not "retried" */
    pg->in_tx = 1;
    err = rw_pg_exec(pg, "ROLLBACK", 0, NULL, NULL, errstr, errlen);
    pg->in_tx = 0;
    if (err == RW_ERR_PG_CONN)
        err = RW_OK;
    return err;
}

int rw_pg_col(const PGresult *res, const char *name)
{
    char quoted[128];
    int c;

    if (!res || !name)
        return -1;
    c = PQfnumber(res, name);
    if (c < 0)
        rw_error("pg", "event=pg_missing_column column=%s",
                 rw_log_quote(quoted, sizeof(quoted), name));
    return c;
}

const char *rw_pg_str(const PGresult *res, int row, const char *col)
{
    int c = rw_pg_col(res, col);

    if (c < 0 || row < 0 || row >= PQntuples(res))
        return NULL;
    if (PQgetisnull(res, row, c))
        return NULL;
    return PQgetvalue(res, row, c);
}

long long rw_pg_ll(const PGresult *res, int row, const char *col,
                   long long dflt)
{
    const char *s = rw_pg_str(res, row, col);
    char *end = NULL;
    long long v;

    if (!s || !*s)
        return dflt;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end != '\0')
        return dflt;
    return v;
}

int rw_pg_bool(const PGresult *res, int row, const char *col, int dflt)
{
    const char *s = rw_pg_str(res, row, col);

    if (!s)
        return dflt;
    if (strcmp(s, "t") == 0)
        return 1;
    if (strcmp(s, "f") == 0)
        return 0;
    return dflt;
}

void rw_pg_array_init(rw_pg_array_t *a)
{
    memset(a, 0, sizeof(*a));
}

/* Room for extra more bytes plus the closing "}" and NUL of finish. */
static rw_err_t array_reserve(rw_pg_array_t *a, size_t extra)
{
    size_t need, cap;
    char *nb;

    if (a->failed)
        return RW_ERR_NOMEM;
    need = a->len + extra + 2;
    if (need <= a->cap)
        return RW_OK;
    cap = a->cap ? a->cap : 64;
    while (cap < need)
        cap *= 2;
    nb = realloc(a->buf, cap);
    if (!nb) {
        a->failed = 1;
        return RW_ERR_NOMEM;
    }
    a->buf = nb;
    a->cap = cap;
    return RW_OK;
}

/* Opening brace on first use, comma before every element but the first. */
static rw_err_t array_sep(rw_pg_array_t *a, size_t elem_len)
{
    rw_err_t err = array_reserve(a, elem_len + 1);

    if (err)
        return err;
    if (a->len == 0)
        a->buf[a->len++] = '{';
    else if (a->n > 0)
        a->buf[a->len++] = ',';
    return RW_OK;
}

rw_err_t rw_pg_array_add_ll(rw_pg_array_t *a, long long v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof(tmp), "%lld", v);
    rw_err_t err = array_sep(a, (size_t)n);

    if (err)
        return err;
    memcpy(a->buf + a->len, tmp, (size_t)n);
    a->len += (size_t)n;
    a->n++;
    return RW_OK;
}

rw_err_t rw_pg_array_add_str(rw_pg_array_t *a, const char *s)
{
    size_t need = 2;
    rw_err_t err;

    if (!s) {
        err = array_sep(a, 4);
        if (err)
            return err;
        memcpy(a->buf + a->len, "NULL", 4);
        a->len += 4;
        a->n++;
        return RW_OK;
    }
    for (const char *p = s; *p; p++)
        need += (*p == '"' || *p == '\\') ? 2 : 1;
    err = array_sep(a, need);
    if (err)
        return err;
    /*
     * Always quoted: unquoted elements would be whitespace-trimmed and
     * "NULL" would turn into SQL NULL.
     */
    a->buf[a->len++] = '"';
    for (const char *p = s; *p; p++) {
        if (*p == '"' || *p == '\\')
            a->buf[a->len++] = '\\';
        a->buf[a->len++] = *p;
    }
    a->buf[a->len++] = '"';
    a->n++;
    return RW_OK;
}

const char *rw_pg_array_finish(rw_pg_array_t *a)
{
    if (array_reserve(a, 1))
        return NULL;
    if (a->len == 0)
        a->buf[a->len++] = '{';
    /* closing brace written past len so that more adds may follow */
    a->buf[a->len] = '}';
    a->buf[a->len + 1] = '\0';
    return a->buf;
}

void rw_pg_array_free(rw_pg_array_t *a)
{
    if (!a)
        return;
    free(a->buf);
    memset(a, 0, sizeof(*a));
}

static rw_err_t advisory(rw_pg_t *pg, const char *sql, long long key,
                         int *result, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *r = NULL;
    char keybuf[32];
    const char *params[1] = {keybuf};

    snprintf(keybuf, sizeof(keybuf), "%lld", key);
    err = rw_pg_exec(pg, sql, 1, params, &r, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(r) != 1) {
        err = rw_err_set(errstr, errlen, RW_ERR_PG_QUERY,
                         "advisory lock call returned %d rows", PQntuples(r));
        goto out;
    }
    *result = rw_pg_bool(r, 0, "ok", 1);
out:
    PQclear(r);
    return err;
}

rw_err_t rw_pg_try_advisory_lock(rw_pg_t *pg, long long key, int *got,
                                 char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    int ok = 0;

    err = advisory(pg, "SELECT pg_try_advisory_lock($1::bigint) AS ok", key,
                   &ok, errstr, errlen);
    if (got)
        *got = err == RW_OK ? ok : 0;
    return err;
}

rw_err_t rw_pg_advisory_lock(rw_pg_t *pg, long long key, char *errstr,
                             size_t errlen)
{
    int ok = 0;

    /* pg_advisory_lock returns void; the constant gives the row a column */
    return advisory(pg, "SELECT pg_advisory_lock($1::bigint), true AS ok", key,
                    &ok, errstr, errlen);
}

rw_err_t rw_pg_advisory_unlock(rw_pg_t *pg, long long key, char *errstr,
                               size_t errlen)
{
    rw_err_t err = RW_OK;
    int ok = 0;

    err = advisory(pg, "SELECT pg_advisory_unlock($1::bigint) AS ok", key, &ok,
                   errstr, errlen);
    if (err == RW_OK && !ok)
        err =
            rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                       "advisory lock %lld was not held by this session", key);
    return err;
}
