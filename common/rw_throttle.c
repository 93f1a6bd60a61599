/*
 * rw_throttle: the fleet throttle's statements. The decisions themselves
 * live in SQL (schemas/sql/0006_throttle.sql), where they run under the
 * fleet row's lock; this file passes parameters and reads answers.
 */
#include "rw_throttle.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_waves.h"

static const char *const verdicts[] = {
    [RW_THROTTLE_GRANTED] = "granted",
    [RW_THROTTLE_BUDGET] = "budget",
    [RW_THROTTLE_BRAKE] = "brake",
    [RW_THROTTLE_RATE] = "rate",
    [RW_THROTTLE_UNCONFIGURED] = "unconfigured",
    [RW_THROTTLE_RUN_LIMIT] = "run_limit",
};

static const char SQL_SEED[] =
    "INSERT INTO fleet_throttle (id, max_in_flight, trigger_rate_per_min,"
    " burst, effective_limit, tokens, updated_by)"
    " VALUES (1, $1::int, $2::float8, $3::int, $1::int, $3::int, $4::text)"
    " ON CONFLICT (id) DO NOTHING";

static const char SQL_SET[] =
    "UPDATE fleet_throttle SET"
    " max_in_flight = COALESCE($1::int, max_in_flight),"
    " trigger_rate_per_min = COALESCE($2::float8, trigger_rate_per_min),"
    " effective_limit = COALESCE($1::int, effective_limit),"
    " queued_seen_at = CASE WHEN $1::int IS NULL THEN queued_seen_at END,"
    " adjusted_at = CASE WHEN $1::int IS NULL THEN adjusted_at"
    "   ELSE now() END,"
    " updated_at = now(), updated_by = $3::text"
    " WHERE id = 1 RETURNING id";

#define SQL_READ_COLS                                                          \
    "SELECT t.max_in_flight, a.o_effective AS effective,"                      \
    " t.trigger_rate_per_min, t.burst,"                                        \
    " rw_throttle_in_flight() AS in_flight,"                                   \
    " LEAST(t.burst::float8, t.tokens + EXTRACT(epoch FROM"                    \
    "   clock_timestamp() - t.tokens_at) * t.trigger_rate_per_min / 60.0)"     \
    "   AS tokens,"                                                            \
    " to_char(t.updated_at AT TIME ZONE 'UTC',"                                \
    "   'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS updated_at, t.updated_by"

static const char SQL_READ[] =
    SQL_READ_COLS " FROM rw_throttle_adjust($1::int) a, fleet_throttle t"
                  " WHERE t.id = 1";

static const char SQL_READ_DETAIL[] = SQL_READ_COLS
    ","
    " (SELECT COALESCE(sum(n), 0) FROM throttle_leases"
    "   WHERE expires_at > clock_timestamp()) AS leased,"
    " (SELECT count(*) FROM target_in_flight f"
    "   WHERE (SELECT t.state = 'deploying' AND t.lagoon_status = 'queued'"
    "          FROM run_targets t WHERE t.id = f.target_id)) AS queued,"
    " (SELECT count(*) FROM run_chunks c JOIN deployment_runs r"
    "   ON r.id = c.run_id WHERE c.state = 'pending'"
    "     AND r.status IN ('pending', 'running')"
    "     AND " RW_WAVE_RELEASED_SQL(
        "c") ") AS chunks_waiting,"
             " (SELECT count(DISTINCT c.run_id) FROM run_chunks c"
             "   JOIN deployment_runs r ON r.id = c.run_id WHERE c.state = "
             "'pending'"
             "     AND r.status IN ('pending', 'running')"
             "     AND " RW_WAVE_RELEASED_SQL(
                 "c") ") AS runs_waiting"
                      " FROM rw_throttle_adjust($1::int) a, fleet_throttle t "
                      "WHERE t.id = 1";

static const char SQL_TAKE[] =
    "SELECT o_lease_id AS lease_id, o_reason AS reason,"
    " o_in_flight AS in_flight, o_limit AS lim, o_tokens AS tokens,"
    " o_wait_ms AS wait_ms, o_run_in_flight AS run_in_flight"
    " FROM rw_throttle_take($1::int, $2::text, $3::int, $4::bigint,"
    "   $5::int)";

static const char SQL_NOTE_WAITING[] =
    "UPDATE fleet_throttle SET waiting_seen_at = now()"
    " WHERE id = 1 AND (waiting_seen_at IS NULL"
    "   OR waiting_seen_at < now() - interval '5 seconds')";

/* an expired lease may already be counted as free by a take: not ours */
static const char SQL_SETTLE[] =
    "DELETE FROM throttle_leases WHERE id = $1::bigint"
    " AND expires_at > clock_timestamp() RETURNING id";

static const char SQL_RELEASE[] =
    "DELETE FROM throttle_leases WHERE id = $1::bigint";

const char *rw_throttle_verdict_name(rw_throttle_verdict_t v)
{
    if ((unsigned)v < sizeof(verdicts) / sizeof(verdicts[0]))
        return verdicts[v];
    return "?";
}

long long rw_throttle_limit(const rw_throttle_state_t *st)
{
    return st->effective < st->max_in_flight ? st->effective
                                             : st->max_in_flight;
}

static double pg_double(const PGresult *res, int row, const char *col)
{
    const char *v = rw_pg_str(res, row, col);

    return v ? strtod(v, NULL) : 0.0;
}

rw_err_t rw_throttle_validate(long long max_in_flight, const char *key_max,
                              double rate_per_min, const char *key_rate,
                              long long chunk_size, char *errstr, size_t errlen)
{
    if (max_in_flight < 0 || max_in_flight > 100000000)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "%s: %lld is out of range (0 to 100000000; 0 "
                          "stops new triggers)",
                          key_max, max_in_flight);
    if (max_in_flight > 0 && max_in_flight < chunk_size)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "%s: %lld is smaller than one chunk (%lld "
                          "targets): such a chunk could never be "
                          "triggered; use 0 to stop triggering",
                          key_max, max_in_flight, chunk_size);
    if (!(rate_per_min >= 1.0 / 60) || !isfinite(rate_per_min) ||
        rate_per_min > 1e9)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "%s: the rate must be at least 1/h and at most "
                          "1000000000/min (use --max-in-flight 0 to stop "
                          "triggering)",
                          key_rate);
    return RW_OK;
}

rw_err_t rw_throttle_parse_rate(const char *text, double *per_min, char *errstr,
                                size_t errlen)
{
    static const struct {
        const char *unit;
        double per_min;
    } units[] = {{"", 1}, {"/min", 1}, {"/m", 1}, {"/s", 60}, {"/h", 1.0 / 60}};
    char *end = NULL;
    double v;

    if (!text || !*text)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "empty rate (expected N/min, N/s or N/h)");
    errno = 0;
    v = strtod(text, &end);
    /* decimal only: strtod would also read hex, "inf" and "nan" */
    if (errno || end == text || !isfinite(v) || strpbrk(text, "xX"))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "'%s' is not a rate (expected N/min, N/s or N/h)",
                          text);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (strcmp(end, units[i].unit) == 0) {
            *per_min = v * units[i].per_min;
            return RW_OK;
        }
    return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                      "'%s': unknown unit '%s' (expected /min, /s or /h)", text,
                      end);
}

rw_err_t rw_throttle_seed(rw_pg_t *pg, long long max_in_flight,
                          double rate_per_min, long long burst, const char *by,
                          char *errstr, size_t errlen)
{
    char max_s[24], rate_s[40], burst_s[24];
    const char *p[4] = {max_s, rate_s, burst_s, by ? by : ""};

    snprintf(max_s, sizeof(max_s), "%lld", max_in_flight);
    snprintf(rate_s, sizeof(rate_s), "%.17g", rate_per_min);
    snprintf(burst_s, sizeof(burst_s), "%lld", burst > 0 ? burst : 1);
    return rw_pg_exec(pg, SQL_SEED, 4, p, NULL, errstr, errlen);
}

rw_err_t rw_throttle_set(rw_pg_t *pg, long long max_in_flight,
                         double rate_per_min, const char *by, char *errstr,
                         size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char max_s[24], rate_s[40];
    const char *p[3] = {NULL, NULL, by ? by : ""};

    if (max_in_flight >= 0) {
        snprintf(max_s, sizeof(max_s), "%lld", max_in_flight);
        p[0] = max_s;
    }
    if (rate_per_min > 0) {
        snprintf(rate_s, sizeof(rate_s), "%.17g", rate_per_min);
        p[1] = rate_s;
    }
    err = rw_pg_exec(pg, SQL_SET, 3, p, &res, errstr, errlen);
    if (!err && PQntuples(res) != 1)
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                         "no fleet throttle row: start a worker or run "
                         "rollwavectl throttle once");
    PQclear(res);
    return err;
}

rw_err_t rw_throttle_read(rw_pg_t *pg, long long adjust_every_s, bool detail,
                          rw_throttle_state_t *st, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char every_s[24];
    const char *p[1] = {every_s};

    memset(st, 0, sizeof(*st));
    /* a huge interval means "not due": reading never adjusts */
    snprintf(every_s, sizeof(every_s), "%lld",
             adjust_every_s > 0 ? adjust_every_s : 1000000000LL);
    err = rw_pg_exec(pg, detail ? SQL_READ_DETAIL : SQL_READ, 1, p, &res,
                     errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(res) != 1) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                         "no fleet throttle row");
        goto out;
    }
    st->max_in_flight = rw_pg_ll(res, 0, "max_in_flight", 0);
    st->effective = rw_pg_ll(res, 0, "effective", 0);
    st->rate_per_min = pg_double(res, 0, "trigger_rate_per_min");
    st->burst = rw_pg_ll(res, 0, "burst", 1);
    st->in_flight = rw_pg_ll(res, 0, "in_flight", 0);
    st->tokens = pg_double(res, 0, "tokens");
    snprintf(st->updated_at, sizeof(st->updated_at), "%s",
             rw_pg_str(res, 0, "updated_at") ? rw_pg_str(res, 0, "updated_at")
                                             : "");
    snprintf(st->updated_by, sizeof(st->updated_by), "%s",
             rw_pg_str(res, 0, "updated_by") ? rw_pg_str(res, 0, "updated_by")
                                             : "");
    if (detail) {
        st->leased = rw_pg_ll(res, 0, "leased", 0);
        st->queued = rw_pg_ll(res, 0, "queued", 0);
        st->chunks_waiting = rw_pg_ll(res, 0, "chunks_waiting", 0);
        st->runs_waiting = rw_pg_ll(res, 0, "runs_waiting", 0);
    }
out:
    PQclear(res);
    return err;
}

rw_err_t rw_throttle_take(rw_pg_t *pg, long long n, const char *holder,
                          long long lease_s, long long run_id,
                          long long run_limit, rw_throttle_grant_t *g,
                          char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char n_s[24], lease_s_s[24], run_s[24], lim_s[24];
    const char *p[5] = {n_s, holder ? holder : "", lease_s_s,
                        run_id > 0 ? run_s : NULL,
                        run_limit > 0 ? lim_s : NULL};
    const char *reason;

    memset(g, 0, sizeof(*g));
    g->verdict = RW_THROTTLE_UNCONFIGURED;
    snprintf(n_s, sizeof(n_s), "%lld", n > 0 ? n : 1);
    snprintf(lease_s_s, sizeof(lease_s_s), "%lld", lease_s);
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    /* the SQL side takes an int: a larger limit is no limit in practice */
    snprintf(lim_s, sizeof(lim_s), "%lld",
             run_limit < 2000000000LL ? run_limit : 2000000000LL);
    err = rw_pg_exec(pg, SQL_TAKE, 5, p, &res, errstr, errlen);
    if (err)
        goto out;
    reason = PQntuples(res) == 1 ? rw_pg_str(res, 0, "reason") : NULL;
    for (size_t i = 0; reason && i < sizeof(verdicts) / sizeof(verdicts[0]);
         i++)
        if (strcmp(reason, verdicts[i]) == 0)
            g->verdict = (rw_throttle_verdict_t)i;
    g->lease_id = rw_pg_ll(res, 0, "lease_id", 0);
    g->in_flight = rw_pg_ll(res, 0, "in_flight", 0);
    g->limit = rw_pg_ll(res, 0, "lim", 0);
    g->tokens = pg_double(res, 0, "tokens");
    g->wait_ms = rw_pg_ll(res, 0, "wait_ms", 0);
    g->run_in_flight = rw_pg_ll(res, 0, "run_in_flight", 0);
    if (g->verdict == RW_THROTTLE_GRANTED && g->lease_id <= 0)
        g->verdict = RW_THROTTLE_UNCONFIGURED;
out:
    PQclear(res);
    return err;
}

rw_err_t rw_throttle_settle(rw_pg_t *pg, long long lease_id, char *errstr,
                            size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char id_s[24];
    const char *p[1] = {id_s};

    snprintf(id_s, sizeof(id_s), "%lld", lease_id);
    err = rw_pg_exec(pg, SQL_SETTLE, 1, p, &res, errstr, errlen);
    if (!err && PQntuples(res) != 1)
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                         "throttle lease %lld expired before the claim",
                         lease_id);
    PQclear(res);
    return err;
}

void rw_throttle_release(rw_pg_t *pg, long long lease_id)
{
    char id_s[24], errstr[256];
    const char *p[1] = {id_s};

    if (lease_id <= 0 || rw_pg_in_tx(pg))
        return;
    snprintf(id_s, sizeof(id_s), "%lld", lease_id);
    (void)rw_pg_exec(pg, SQL_RELEASE, 1, p, NULL, errstr, sizeof(errstr));
}

void rw_throttle_note_waiting(rw_pg_t *pg)
{
    char errstr[256];

    if (!rw_pg_in_tx(pg))
        (void)rw_pg_exec(pg, SQL_NOTE_WAITING, 0, NULL, NULL, errstr,
                         sizeof(errstr));
}
