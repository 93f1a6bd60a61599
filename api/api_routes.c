/*
 * api_routes: the route table of /api/v1 and one handler per route. Reads
 * are one read-only statement each (the run page several in one snapshot);
 * writes go through the same functions as rollwavectl (rw_runs for manual
 * runs, rw_control for pause / resume / abort / retry, the same UPDATEs as
 * "rollwavectl schedule" and "group", rw_token for tokens), so the API
 * refuses what the CLI refuses. Every list is bounded: runs page by id (keyset,
 * indexed), a run's build logs by (chunk, instance, log) through
 * rw_buildlog_read as "rollwavectl run logs", an instance's history by
 * skip / take on its own index.
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "rw_buildlog.h"
#include "rw_control.h"
#include "rw_lag.h"
#include "rw_log.h"
#include "rw_runs.h"
#include "rw_state.h"
#include "rw_strategy.h"
#include "rw_time.h"
#include "rw_token.h"

#define RUNS_DEFAULT_LIMIT 50
#define RUNS_MAX_LIMIT     200
#define TAKE_DEFAULT       20
#define TAKE_MAX           100
#define SKIP_MAX           1000000
#define LIST_MAX           200 /* failed / skipped targets shown per run */
#define CHUNKS_MAX         1000
#define MAX_INSTANCE_IDS   10000
#define MAX_INTERVAL_DAYS  3650
/* a log is up to 256 KiB (ROLLWAVE_LOG_MAX_BYTES): pages stay small */
#define LOGS_DEFAULT_LIMIT 10
#define LOGS_MAX_LIMIT     50
/* a lag measurement holds its caller this long: kept short for a server */
/* runs looked at on each side of a created_before / created_after bound,
 * so that ids assigned out of creation order are still inside the walk */
#define TIME_BOUND_SLACK "100"

/* to_char format of the timestamps served: ISO 8601 in UTC. */
#define ISO "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"

#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

/* Answer a failed statement: 503 when the database is away, 500 else. */
static void fail_pg(rw_api_req_t *rq, rw_err_t err, const char *errstr)
{
    rw_warn("api", "event=statement_failed path=%.200s err=%s detail=\"%s\"",
            rq->path, rw_err_name(err), errstr);
    if (rw_err_is_retriable(err))
        rw_api_fail(rq, 503, NULL, "the database is not available; retry");
    else
        rw_api_fail(rq, 500, NULL, "the request failed (see the API's log)");
}

/* Path parameter i as an id, or 400 naming it. */
static bool param_id(rw_api_req_t *rq, int i, const char *what, long long *id)
{
    if (rw_api_parse_ll(rq->params[i], 1, INT64_MAX, id))
        return true;
    rw_api_fail(rq, 400, what, "%s must be a positive integer", what);
    return false;
}

/* Query parameter name as an integer in [min, max] (dflt when absent). */
static bool query_ll(rw_api_req_t *rq, const char *name, long long min,
                     long long max, long long dflt, long long *out)
{
    const char *v = rw_api_query(rq, name);

    if (!v) {
        *out = dflt;
        return true;
    }
    if (rw_api_parse_ll(v, min, max, out))
        return true;
    rw_api_fail(rq, 400, name, "%s must be an integer from %lld to %lld", name,
                min, max);
    return false;
}

/* Check the body against fields, answering 400 when it does not fit. */
static bool body_ok(rw_api_req_t *rq, const rw_api_field_t *fields, size_t n)
{
    const char *field = NULL;
    char errstr[256];

    if (rw_api_check_body(rq->body, fields, n, &field, errstr,
                          sizeof(errstr)) == RW_OK)
        return true;
    rw_api_fail(rq, 400, field, "%s", errstr);
    return false;
}

/* ---- GET /whoami ----------------------------------------------------- */

static void h_whoami(rw_api_req_t *rq)
{
    rw_api_reply(rq, 200,
                 json_pack("{s:s, s:s, s:{s:b, s:b, s:b}}", "name",
                           rq->token_name, "role", rw_role_name(rq->role),
                           "may", "read",
                           rw_role_allows(rq->role, RW_ROLE_VIEWER), "control",
                           rw_role_allows(rq->role, RW_ROLE_OPERATOR), "admin",
                           rw_role_allows(rq->role, RW_ROLE_ADMIN)));
}

/*
 * The first n rows of res as a JSON array: a page is read one row past
 * its limit to learn whether another follows.
 */
static json_t *page_json(const PGresult *res, int n)
{
    json_t *arr = json_array();

    for (int r = 0; arr && r < n && r < PQntuples(res); r++)
        json_array_append_new(arr, rw_api_row_json(res, r));
    return arr;
}

/* ---- GET /runs ------------------------------------------------------- */

/*
 * $1 status, $2 store app, $3 source, $4 created before, $5 created after,
 * $6 cursor (runs with a smaller id), $7 limit. Newest first by id: each
 * filter has an (x, id DESC) index, so a page reads about limit rows.
 * Runs in progress count their targets live; finished ones show the
 * recorded counts.
 */
static const char SQL_RUNS[] =
    "SELECT r.id, r.uuid, r.status, r.trigger_source AS source,"
    "  r.triggered_by, r.store_app_id, a.name AS store_app, r.variables_only,"
    "  r.total_count::bigint AS total,"
    "  CASE WHEN live.n IS NOT NULL THEN live.succeeded"
    "       ELSE r.succeeded_count END::bigint AS succeeded,"
    "  CASE WHEN live.n IS NOT NULL THEN live.failed"
    "       ELSE r.failed_count END::bigint AS failed,"
    "  CASE WHEN live.n IS NOT NULL THEN live.skipped"
    "       ELSE r.skipped_count END::bigint AS skipped,"
    "  COALESCE(live.in_flight, 0)::bigint AS in_flight,"
    "  COALESCE(live.pending, 0)::bigint AS pending,"
    "  to_char(r.created_at AT TIME ZONE 'UTC', " ISO ") AS created_at,"
    "  to_char(r.completed_at AT TIME ZONE 'UTC', " ISO ") AS completed_at,"
    "  EXTRACT(EPOCH FROM COALESCE(r.completed_at, now()) - r.created_at)"
    "    ::bigint AS duration_s"
    " FROM deployment_runs r"
    " LEFT JOIN store_apps a ON a.id = r.store_app_id"
    " LEFT JOIN LATERAL ("
    "   SELECT count(*) AS n, " RW_TARGET_COUNTS_SQL ","
    "     count(*) FILTER (WHERE state IN ('claimed', 'triggered',"
    "       'deploying')) AS in_flight,"
    "     count(*) FILTER (WHERE state = 'pending') AS pending"
    "   FROM run_targets t WHERE t.run_id = r.id"
    "     AND r.status IN ('pending', 'running', 'paused')) live"
    "   ON r.status IN ('pending', 'running', 'paused')"
    " WHERE ($1::text IS NULL OR r.status = $1::text)"
    "   AND ($2::bigint IS NULL OR r.store_app_id = $2::bigint)"
    "   AND ($3::text IS NULL OR r.trigger_source = $3::text)"
    "   AND ($4::timestamptz IS NULL OR r.created_at < $4::timestamptz)"
    "   AND ($5::timestamptz IS NULL OR r.created_at >= $5::timestamptz)"
    "   AND ($6::bigint IS NULL OR r.id < $6::bigint)"
    /* the time range as id bounds, found through deployment_runs_created_idx:
     * the walk by id starts and stops where the range does */
    "   AND r.id <= CASE WHEN $4::timestamptz IS NULL"
    "     THEN 9223372036854775807 ELSE COALESCE((SELECT max(b.id) FROM ("
    "       SELECT id FROM deployment_runs WHERE created_at < $4::timestamptz"
    "       ORDER BY created_at DESC LIMIT " TIME_BOUND_SLACK ") b), 0) END"
    "   AND r.id >= CASE WHEN $5::timestamptz IS NULL"
    "     THEN 0 ELSE COALESCE((SELECT min(b.id) FROM ("
    "       SELECT id FROM deployment_runs WHERE created_at >= $5::timestamptz"
    "       ORDER BY created_at LIMIT " TIME_BOUND_SLACK ") b),"
    "       9223372036854775807) END"
    " ORDER BY r.id DESC LIMIT $7::bigint";

static bool query_time(rw_api_req_t *rq, const char *name, char *buf,
                       size_t len, const char **out)
{
    const char *v = rw_api_query(rq, name);
    long long ms;
    char errstr[128];

    *out = NULL;
    if (!v)
        return true;
    if (rw_time_parse(v, RW_TIME_PARTIAL, &ms, errstr, sizeof(errstr)) ||
        rw_time_format(buf, len, ms)) {
        rw_api_fail(rq, 400, name,
                    "%s must be an ISO 8601 time (2026-11-22T16:30:00Z)", name);
        return false;
    }
    *out = buf;
    return true;
}

static void h_runs_list(rw_api_req_t *rq)
{
    const char *status = rw_api_query(rq, "status");
    const char *source = rw_api_query(rq, "source");
    const char *before, *after;
    long long app = 0, cursor = 0, limit;
    char app_s[24], cursor_s[24], limit_s[24], before_s[RW_TIME_BUF],
        after_s[RW_TIME_BUF], errstr[512];
    PGresult *res = NULL;
    json_t *runs, *next = json_null();
    rw_err_t err;
    int n;

    if (status && rw_run_state_parse(status) < 0) {
        rw_api_fail(rq, 400, "status", "status is not a run status");
        goto out;
    }
    if (source && strcmp(source, "scheduled") != 0 &&
        strcmp(source, "manual") != 0 && strcmp(source, "retry") != 0) {
        rw_api_fail(rq, 400, "source",
                    "source must be scheduled, manual or retry");
        goto out;
    }
    if (!query_ll(rq, "store_app", 1, INT64_MAX, 0, &app) ||
        !query_ll(rq, "cursor", 1, INT64_MAX, 0, &cursor) ||
        !query_ll(rq, "limit", 1, RUNS_MAX_LIMIT, RUNS_DEFAULT_LIMIT, &limit) ||
        !query_time(rq, "created_before", before_s, sizeof(before_s),
                    &before) ||
        !query_time(rq, "created_after", after_s, sizeof(after_s), &after))
        goto out;
    snprintf(app_s, sizeof(app_s), "%lld", app);
    snprintf(cursor_s, sizeof(cursor_s), "%lld", cursor);
    /* one row more than the page tells whether another page follows */
    snprintf(limit_s, sizeof(limit_s), "%lld", limit + 1);
    {
        const char *p[7] = {status, app ? app_s : NULL,       source, before,
                            after,  cursor ? cursor_s : NULL, limit_s};
        err = rw_pg_exec(rq->pg, SQL_RUNS, 7, p, &res, errstr, sizeof(errstr));
    }
    if (err) {
        fail_pg(rq, err, errstr);
        goto out;
    }
    n = PQntuples(res);
    runs = page_json(res, (int)limit);
    /* more rows than the page: the cursor is the page's last id */
    if (n > limit) {
        json_decref(next);
        next = json_string(rw_pg_str(res, (int)limit - 1, "id"));
    }
    rw_api_reply(rq, 200,
                 json_pack("{s:o, s:o}", "runs", runs, "next_cursor", next));
    next = NULL;
out:
    json_decref(next);
    PQclear(res);
}

/* ---- GET /runs/{uuid} ------------------------------------------------ */

static const char SQL_SNAPSHOT[] =
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY";

static const char SQL_RUN[] =
    "SELECT r.id, r.uuid, r.status, r.trigger_source AS source,"
    "  r.triggered_by, r.store_app_id, a.name AS store_app, r.strategy,"
    "  r.variables_only, r.total_count::bigint AS total,"
    "  r.succeeded_count::bigint AS succeeded,"
    "  r.failed_count::bigint AS failed,"
    "  r.skipped_count::bigint AS skipped,"
    "  r.chunk_count::bigint AS chunk_count,"
    "  to_char(r.created_at AT TIME ZONE 'UTC', " ISO ") AS created_at,"
    "  to_char(r.started_at AT TIME ZONE 'UTC', " ISO ") AS started_at,"
    "  to_char(r.completed_at AT TIME ZONE 'UTC', " ISO ") AS completed_at,"
    "  EXTRACT(EPOCH FROM COALESCE(r.completed_at, now()) - r.created_at)"
    "    ::bigint AS duration_s,"
    "  r.last_error, r.current_wave::bigint AS current_wave,"
    "  r.respect_windows"
    " FROM deployment_runs r"
    " LEFT JOIN store_apps a ON a.id = r.store_app_id"
    " WHERE r.uuid = $1::uuid";

static const char SQL_BY_STATE[] =
    "SELECT state, count(*)::bigint AS n FROM run_targets"
    " WHERE run_id = $1::bigint GROUP BY state";

static const char SQL_CHUNKS[] =
    "SELECT chunk::bigint AS chunk, state, attempt::bigint AS attempt,"
    "  bulk_id, bulk_name, poll_attempts::bigint AS poll_attempts,"
    "  target_count::bigint AS target_count, last_error,"
    "  to_char(triggered_at AT TIME ZONE 'UTC', " ISO ") AS triggered_at,"
    "  to_char(finished_at AT TIME ZONE 'UTC', " ISO ") AS finished_at,"
    "  CASE WHEN state = 'pending' THEN"
    "    to_char(not_before AT TIME ZONE 'UTC', " ISO ") END AS deferred_until,"
    "  CASE WHEN state = 'pending' AND not_before IS NOT NULL"
    "    THEN deferred_reason END AS deferred_reason"
    " FROM run_chunks WHERE run_id = $1::bigint ORDER BY chunk"
    " LIMIT $2::bigint";

/* As "rollwavectl run show": a running wave's counts are live, an ended
 * wave's stored; a paused wave's reason is the run's last_error. */
static const char SQL_WAVES[] =
    "SELECT w.wave::bigint AS wave, w.state,"
    "  w.first_chunk::bigint AS first_chunk,"
    "  w.last_chunk::bigint AS last_chunk,"
    "  w.target_count::bigint AS target_count,"
    "  COALESCE(w.succeeded_count, x.ok)::bigint AS succeeded,"
    "  COALESCE(w.failed_count, x.failed)::bigint AS failed,"
    "  to_char(w.not_before AT TIME ZONE 'UTC', " ISO ") AS bake_until,"
    "  to_char(w.started_at AT TIME ZONE 'UTC', " ISO ") AS started_at,"
    "  to_char(w.finished_at AT TIME ZONE 'UTC', " ISO ") AS finished_at"
    " FROM run_waves w CROSS JOIN LATERAL ("
    "   SELECT count(*) FILTER (WHERE t.state = 'succeeded') AS ok,"
    "          count(*) FILTER (WHERE t.state IN ('failed', 'timed_out'))"
    "            AS failed"
    "   FROM run_targets t WHERE t.run_id = w.run_id"
    "     AND t.chunk BETWEEN w.first_chunk AND w.last_chunk) x"
    " WHERE w.run_id = $1::bigint ORDER BY w.wave";

static const char SQL_TRANSITIONS[] =
    "SELECT from_status, to_status, reason,"
    "  to_char(at AT TIME ZONE 'UTC', " ISO ") AS at"
    " FROM run_transitions WHERE run_id = $1::bigint ORDER BY id";

/* Targets of run $1 in the states $2, at most $3 of them. */
static const char SQL_TARGETS[] =
    "SELECT t.instance_id, i.name,"
    "  COALESCE(t.lagoon_project, i.lagoon_project) AS project,"
    "  COALESCE(t.lagoon_environment, i.lagoon_environment) AS environment,"
    "  t.state, t.chunk::bigint AS chunk, t.attempt::bigint AS attempt,"
    "  t.bulk_id, t.deployment_name, t.lagoon_status, t.error,"
    "  t.skip_reason, COALESCE(t.skip_reason, t.error) AS reason,"
    "  to_char(t.finished_at AT TIME ZONE 'UTC', " ISO ") AS finished_at"
    " FROM run_targets t JOIN app_instances i ON i.id = t.instance_id"
    " WHERE t.run_id = $1::bigint AND t.state = ANY ($2::text[])"
    " ORDER BY t.chunk, t.instance_id LIMIT $3::bigint";

static void h_run_show(rw_api_req_t *rq)
{
    const char *uuid = rq->params[0];
    PGresult *run = NULL, *by = NULL, *chunks = NULL, *trans = NULL,
             *failed = NULL, *skipped = NULL, *waves = NULL;
    char chunks_max[16], list_max[16], errstr[512], ignored[128];
    json_t *states = NULL, *doc;
    long long total = 0;
    rw_err_t err;

    if (!rw_api_is_uuid(uuid)) {
        rw_api_fail(rq, 400, "uuid", "not a run uuid");
        return;
    }
    snprintf(chunks_max, sizeof(chunks_max), "%d", CHUNKS_MAX);
    snprintf(list_max, sizeof(list_max), "%d", LIST_MAX);
    err = rw_pg_begin(rq->pg, errstr, sizeof(errstr));
    if (!err)
        err = rw_pg_exec(rq->pg, SQL_SNAPSHOT, 0, NULL, NULL, errstr,
                         sizeof(errstr));
    if (!err) {
        const char *p[1] = {uuid};
        err = rw_pg_exec(rq->pg, SQL_RUN, 1, p, &run, errstr, sizeof(errstr));
    }
    if (err)
        goto out;
    if (PQntuples(run) != 1) {
        rw_api_fail(rq, 404, "uuid", "no run %s", uuid);
        goto out;
    }
    {
        const char *id = rw_pg_str(run, 0, "id");
        const char *p1[1] = {id};
        const char *pc[2] = {id, chunks_max};
        const char *pf[3] = {id, "{failed,timed_out}", list_max};
        const char *ps[3] = {id, "{skipped}", list_max};
        err = rw_pg_exec(rq->pg, SQL_BY_STATE, 1, p1, &by, errstr,
                         sizeof(errstr));
        if (!err)
            err = rw_pg_exec(rq->pg, SQL_CHUNKS, 2, pc, &chunks, errstr,
                             sizeof(errstr));
        if (!err)
            err = rw_pg_exec(rq->pg, SQL_WAVES, 1, p1, &waves, errstr,
                             sizeof(errstr));
        if (!err)
            err = rw_pg_exec(rq->pg, SQL_TRANSITIONS, 1, p1, &trans, errstr,
                             sizeof(errstr));
        if (!err)
            err = rw_pg_exec(rq->pg, SQL_TARGETS, 3, pf, &failed, errstr,
                             sizeof(errstr));
        if (!err)
            err = rw_pg_exec(rq->pg, SQL_TARGETS, 3, ps, &skipped, errstr,
                             sizeof(errstr));
    }
    if (err)
        goto out;
    states = json_object();
    for (int i = 0; i < RW_TARGET__COUNT; i++) {
        const char *st = rw_target_state_name((rw_target_state_t)i);
        long long n = 0;
        for (int r = 0; r < PQntuples(by); r++)
            if (strcmp(rw_pg_str(by, r, "state"), st) == 0)
                n = rw_pg_ll(by, r, "n", 0);
        total += n;
        json_object_set_new(states, st, json_integer(n));
    }
    doc = json_pack("{s:o, s:o, s:I, s:o, s:o, s:o, s:o, s:o}", "run",
                    rw_api_row_json(run, 0), "targets_by_state", states,
                    "targets_total", (json_int_t)total, "waves",
                    rw_api_rows_json(waves), "chunks", rw_api_rows_json(chunks),
                    "transitions", rw_api_rows_json(trans), "failed_targets",
                    rw_api_rows_json(failed), "skipped_targets",
                    rw_api_rows_json(skipped));
    states = NULL;
    rw_api_reply(rq, 200, doc);
out:
    /* read-only: ending it either way loses nothing */
    rw_pg_rollback(rq->pg, ignored, sizeof(ignored));
    if (err)
        fail_pg(rq, err, errstr);
    json_decref(states);
    PQclear(run);
    PQclear(by);
    PQclear(chunks);
    PQclear(trans);
    PQclear(failed);
    PQclear(skipped);
    PQclear(waves);
}

/* ---- GET /runs/{uuid}/logs ------------------------------------------- */

static const char SQL_RUN_OF_LOGS[] =
    "SELECT id, uuid, status FROM deployment_runs WHERE uuid = $1::uuid";

static void h_run_logs(rw_api_req_t *rq)
{
    const char *uuid = rq->params[0];
    const char *failed = rw_api_query(rq, "failed");
    const char *cursor = rw_api_query(rq, "cursor");
    const char *p[1] = {uuid};
    long long instance, limit, k[3] = {0, 0, 0};
    rw_buildlog_key_t key;
    PGresult *run = NULL, *res = NULL;
    json_t *next = json_null();
    char next_s[72], errstr[512];
    rw_err_t err;
    int n;

    if (!rw_api_is_uuid(uuid)) {
        rw_api_fail(rq, 400, "uuid", "not a run uuid");
        goto out;
    }
    if (failed && strcmp(failed, "true") != 0 && strcmp(failed, "false") != 0) {
        rw_api_fail(rq, 400, "failed", "failed must be true or false");
        goto out;
    }
    if (!query_ll(rq, "instance", 1, INT64_MAX, 0, &instance) ||
        !query_ll(rq, "limit", 1, LOGS_MAX_LIMIT, LOGS_DEFAULT_LIMIT, &limit))
        goto out;
    /* chunk numbers are ints (the key's SQL compares them as such) */
    if (cursor && (!rw_api_parse_key(cursor, k, 3) || k[0] > INT_MAX)) {
        rw_api_fail(rq, 400, "cursor",
                    "cursor must be the next_cursor of a previous page");
        goto out;
    }
    key.chunk = k[0];
    key.instance_id = k[1];
    key.log_id = k[2];
    err =
        rw_pg_exec(rq->pg, SQL_RUN_OF_LOGS, 1, p, &run, errstr, sizeof(errstr));
    if (err) {
        fail_pg(rq, err, errstr);
        goto out;
    }
    if (PQntuples(run) != 1) {
        rw_api_fail(rq, 404, "uuid", "no run %s", uuid);
        goto out;
    }
    err = rw_buildlog_read(rq->pg, rw_pg_ll(run, 0, "id", 0), instance,
                           failed && strcmp(failed, "true") == 0,
                           cursor ? &key : NULL, limit + 1, &res, errstr,
                           sizeof(errstr));
    if (err) {
        fail_pg(rq, err, errstr);
        goto out;
    }
    n = PQntuples(res);
    /* more rows than the page: resume after the page's last row */
    if (n > limit) {
        int last = (int)limit - 1;
        snprintf(next_s, sizeof(next_s), "%lld.%lld.%lld",
                 rw_pg_ll(res, last, "chunk", 0),
                 rw_pg_ll(res, last, "instance_id", 0),
                 rw_pg_ll(res, last, "log_id", 0));
        json_decref(next);
        next = json_string(next_s);
    }
    rw_api_reply(rq, 200,
                 json_pack("{s:{s:s, s:s}, s:o, s:o}", "run", "uuid",
                           rw_pg_str(run, 0, "uuid"), "status",
                           rw_pg_str(run, 0, "status"), "logs",
                           page_json(res, (int)limit), "next_cursor", next));
    next = NULL;
out:
    json_decref(next);
    PQclear(run);
    PQclear(res);
}

/* ---- POST /runs ------------------------------------------------------ */

static const rw_api_field_t run_fields[] = {
    {"instance_ids", RW_API_F_INT_ARRAY, false, 1, MAX_INSTANCE_IDS},
    {"store_app_id", RW_API_F_INT, false, 1, INT64_MAX},
    {"variables_only", RW_API_F_BOOL, false, 0, 0},
    {"respect_windows", RW_API_F_BOOL, false, 0, 0},
    {"strategy", RW_API_F_OBJECT, false, 0, 0},
};

/*
 * The body's strategy override, validated and in canonical form into *out
 * (malloc'd; NULL when none given), or the 400 answered naming "strategy".
 */
static bool body_strategy(rw_api_req_t *rq, char **out)
{
    json_t *j = json_object_get(rq->body, "strategy");
    rw_strategy_t st;
    char errstr[256], *text = NULL;
    bool ok = false;

    *out = NULL;
    if (!j)
        return true;
    text = json_dumps(j, JSON_COMPACT);
    if (!text) {
        rw_api_fail(rq, 500, NULL, "out of memory");
        goto out;
    }
    if (rw_strategy_parse_json(text, &st, errstr, sizeof(errstr))) {
        rw_api_fail(rq, 400, "strategy", "strategy: %s", errstr);
        goto out;
    }
    *out = rw_strategy_to_json(&st);
    if (!*out) {
        rw_api_fail(rq, 500, NULL, "out of memory");
        goto out;
    }
    ok = true;
out:
    free(text);
    return ok;
}

static void h_runs_create(rw_api_req_t *rq)
{
    json_t *ids_j, *app_j, *skips_j = NULL, *v;
    long long *ids = NULL, app = 0;
    size_t n_ids = 0, n_skips = 0, i;
    rw_run_summary_t run;
    rw_run_skip_t *skips = NULL;
    char errstr[512], *strategy = NULL;
    rw_err_t err;

    if (!body_ok(rq, run_fields, NFIELDS(run_fields)) ||
        !body_strategy(rq, &strategy))
        goto out;
    ids_j = json_object_get(rq->body, "instance_ids");
    app_j = json_object_get(rq->body, "store_app_id");
    if (!ids_j == !app_j) {
        rw_api_fail(rq, 400, ids_j ? "store_app_id" : "instance_ids",
                    "give exactly one of instance_ids and store_app_id");
        goto out;
    }
    if (ids_j) {
        n_ids = json_array_size(ids_j);
        ids = calloc(n_ids, sizeof(*ids));
        if (!ids) {
            rw_api_fail(rq, 500, NULL, "out of memory");
            goto out;
        }
        json_array_foreach(ids_j, i, v) ids[i] = json_integer_value(v);
    } else {
        app = json_integer_value(app_j);
    }
    {
        /* an operator's run leaves the cadence alone: backoff 0 */
        rw_run_spec_t spec = {
            "manual",
            rq->token_name,
            json_is_true(json_object_get(rq->body, "variables_only")),
            rq->s->bulk_chunk_size,
            0,
            json_is_true(json_object_get(rq->body, "respect_windows")),
            strategy};
        err = rw_runs_create_manual(rq->pg, ids, n_ids, app, &spec, &run,
                                    &skips, &n_skips, errstr, sizeof(errstr));
    }
    if (err == RW_ERR_NOT_FOUND) {
        rw_api_fail(rq, 404, ids ? "instance_ids" : "store_app_id", "%s",
                    errstr);
        goto out;
    }
    if (err == RW_ERR_INVALID_ARG) {
        rw_api_fail(rq, 400, "strategy", "%s", errstr);
        goto out;
    }
    if (err) {
        fail_pg(rq, err, errstr);
        goto out;
    }
    /* a run that failed at creation (its store app's strategy does not
     * validate) has nothing to publish */
    if (!run.error[0])
        rw_api_relay(rq);
    skips_j = json_array();
    for (i = 0; i < n_skips; i++)
        json_array_append_new(skips_j,
                              json_pack("{s:I, s:s}", "instance_id",
                                        (json_int_t)skips[i].instance_id,
                                        "reason", skips[i].reason));
    snprintf(rq->location, sizeof(rq->location), "/api/v1/runs/%s", run.uuid);
    snprintf(rq->audit, sizeof(rq->audit), "run %s: %lld target(s)%s%.150s",
             run.uuid, run.targets, run.error[0] ? ", failed: " : "",
             run.error);
    /* 201 either way: the run exists; a failed one says so and why */
    rw_api_reply(rq, 201,
                 json_pack("{s:s, s:s, s:o, s:I, s:I, s:i, s:i, s:o}", "uuid",
                           run.uuid, "status",
                           run.error[0] ? "failed" : "pending", "error",
                           run.error[0] ? json_string(run.error) : json_null(),
                           "targets", (json_int_t)run.targets, "skipped",
                           (json_int_t)run.skipped, "chunks", run.chunks,
                           "waves", run.waves, "skips", skips_j));
out:
    free(ids);
    free(skips);
    free(strategy);
}

/* ---- POST /runs/{uuid}/pause|resume|abort|retry ---------------------- */

static void control(rw_api_req_t *rq, rw_control_verb_t verb, const char *name)
{
    const char *uuid = rq->params[0];
    rw_control_result_t r;
    char errstr[512];
    rw_err_t err;

    /* a control verb takes no settings: {} or nothing */
    if (!body_ok(rq, NULL, 0))
        return;
    if (!rw_api_is_uuid(uuid)) {
        rw_api_fail(rq, 400, "uuid", "not a run uuid");
        return;
    }
    memset(&r, 0, sizeof(r));
    err = rw_control_run(rq->pg, uuid, verb, rq->s->max_attempts,
                         rq->token_name, &r, errstr, sizeof(errstr));
    switch (err) {
    case RW_OK:
        break;
    case RW_ERR_NOT_FOUND:
        rw_api_fail(rq, 404, "uuid", "%s", errstr);
        return;
    case RW_ERR_STATE:
    case RW_ERR_CONFLICT:
        rw_api_fail(rq, 409, NULL, "%s", errstr);
        return;
    case RW_ERR_INVALID_ARG:
        rw_api_fail(rq, 400, "uuid", "%s", errstr);
        return;
    default:
        fail_pg(rq, err, errstr);
        return;
    }
    if (verb == RW_CONTROL_RESUME || verb == RW_CONTROL_RETRY ||
        verb == RW_CONTROL_PROMOTE)
        rw_api_relay(rq);
    snprintf(rq->audit, sizeof(rq->audit), "%s %s: %s -> %s", name, uuid,
             r.status_before, r.status_after);
    rw_api_reply(rq, 200,
                 json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "uuid", uuid,
                           "action", name, "status_before", r.status_before,
                           "status_after", r.status_after, "targets",
                           (json_int_t)r.targets, "chunks",
                           (json_int_t)r.chunks));
    if (verb == RW_CONTROL_PROMOTE)
        json_object_set_new(rq->out, "wave", json_integer(r.wave));
}

static void h_pause(rw_api_req_t *rq)
{
    control(rq, RW_CONTROL_PAUSE, "pause");
}

static void h_resume(rw_api_req_t *rq)
{
    control(rq, RW_CONTROL_RESUME, "resume");
}

static void h_abort(rw_api_req_t *rq)
{
    control(rq, RW_CONTROL_ABORT, "abort");
}

static void h_retry(rw_api_req_t *rq)
{
    control(rq, RW_CONTROL_RETRY, "retry");
}

static void h_promote(rw_api_req_t *rq)
{
    control(rq, RW_CONTROL_PROMOTE, "promote");
}

/* ---- GET /instances/{id} and its deployments -------------------------- */

static const char SQL_INSTANCE[] =
    "SELECT i.id, i.uuid, i.name, i.status, i.is_trial, i.store_app_id,"
    "  a.name AS store_app, i.user_group_id,"
    "  i.lagoon_project AS project, i.lagoon_environment AS environment,"
    "  i.last_deployment_name, i.last_deployment_status,"
    "  to_char(i.last_deployed_at AT TIME ZONE 'UTC', " ISO ")"
    "    AS last_deployed_at,"
    "  to_char(i.last_deploy_triggered_at AT TIME ZONE 'UTC', " ISO ")"
    "    AS last_deploy_triggered_at,"
    "  to_char(i.next_redeploy_at AT TIME ZONE 'UTC', " ISO ")"
    "    AS next_redeploy_at,"
    "  (SELECT count(*) FROM run_targets t WHERE t.instance_id = i.id)"
    "    AS runs"
    " FROM app_instances i JOIN store_apps a ON a.id = i.store_app_id"
    " WHERE i.id = $1::bigint";

/* $1 instance, $2 skip, $3 take: run_targets_instance_idx, newest first. */
static const char SQL_HISTORY[] =
    "SELECT r.uuid AS run, r.status AS run_status,"
    "  r.trigger_source AS source, r.triggered_by, t.state,"
    "  t.attempt::bigint AS attempt, t.chunk::bigint AS chunk, t.bulk_id,"
    "  t.deployment_name, t.lagoon_status, t.error, t.skip_reason,"
    "  to_char(t.created_at AT TIME ZONE 'UTC', " ISO ") AS created_at,"
    "  to_char(t.finished_at AT TIME ZONE 'UTC', " ISO ") AS finished_at"
    " FROM run_targets t JOIN deployment_runs r ON r.id = t.run_id"
    " WHERE t.instance_id = $1::bigint"
    " ORDER BY t.created_at DESC, t.id DESC"
    " OFFSET $2::bigint LIMIT $3::bigint";

/* The instance row of id into *res, or the 404 / 5xx answered. */
static bool load_instance(rw_api_req_t *rq, const char *id_s, PGresult **res)
{
    const char *p[1] = {id_s};
    char errstr[512];
    rw_err_t err;

    err = rw_pg_exec(rq->pg, SQL_INSTANCE, 1, p, res, errstr, sizeof(errstr));
    if (err) {
        fail_pg(rq, err, errstr);
        return false;
    }
    if (PQntuples(*res) != 1) {
        rw_api_fail(rq, 404, "id", "no instance %s", id_s);
        return false;
    }
    return true;
}

static void h_instance(rw_api_req_t *rq)
{
    PGresult *res = NULL;
    long long id;

    if (param_id(rq, 0, "id", &id) && load_instance(rq, rq->params[0], &res))
        rw_api_reply(rq, 200, rw_api_row_json(res, 0));
    PQclear(res);
}

static void h_deployments(rw_api_req_t *rq)
{
    PGresult *inst = NULL, *hist = NULL;
    long long id, skip, take;
    char skip_s[24], take_s[24], errstr[512];
    rw_err_t err;

    if (!param_id(rq, 0, "id", &id) ||
        !query_ll(rq, "skip", 0, SKIP_MAX, 0, &skip) ||
        !query_ll(rq, "take", 1, TAKE_MAX, TAKE_DEFAULT, &take) ||
        !load_instance(rq, rq->params[0], &inst))
        goto out;
    snprintf(skip_s, sizeof(skip_s), "%lld", skip);
    snprintf(take_s, sizeof(take_s), "%lld", take);
    {
        const char *p[3] = {rq->params[0], skip_s, take_s};
        err = rw_pg_exec(rq->pg, SQL_HISTORY, 3, p, &hist, errstr,
                         sizeof(errstr));
    }
    if (err) {
        fail_pg(rq, err, errstr);
        goto out;
    }
    rw_api_reply(rq, 200,
                 json_pack("{s:I, s:I, s:I, s:I, s:o}", "instance_id",
                           (json_int_t)id, "total",
                           (json_int_t)rw_pg_ll(inst, 0, "runs", 0), "skip",
                           (json_int_t)skip, "take", (json_int_t)take,
                           "deployments", rw_api_rows_json(hist)));
out:
    PQclear(inst);
    PQclear(hist);
}

/* ---- schedules and groups -------------------------------------------- */

static const char SQL_SCHEDULE_GET[] =
    "SELECT id AS store_app_id, name, redeploy_enabled AS enabled,"
    "  redeploy_interval_days AS interval_days,"
    "  beta_redeploy_interval_days AS beta_interval_days"
    " FROM store_apps WHERE id = $1::bigint";

/* The same statements as "rollwavectl schedule". */
static const char SQL_ENABLE[] =
    "UPDATE store_apps SET redeploy_enabled = true,"
    "  redeploy_interval_days = $2::int,"
    "  beta_redeploy_interval_days = $3::int"
    " WHERE id = $1::bigint"
    " RETURNING id AS store_app_id, name, redeploy_enabled AS enabled,"
    "   redeploy_interval_days AS interval_days,"
    "   beta_redeploy_interval_days AS beta_interval_days";

static const char SQL_DISABLE[] =
    "UPDATE store_apps SET redeploy_enabled = false"
    " WHERE id = $1::bigint"
    " RETURNING id AS store_app_id, name, redeploy_enabled AS enabled,"
    "   redeploy_interval_days AS interval_days,"
    "   beta_redeploy_interval_days AS beta_interval_days";

static const char SQL_GROUP[] =
    "UPDATE user_groups SET is_beta = $2::boolean"
    " WHERE id = $1::bigint RETURNING id, name, is_beta";

/* Run a one-row statement, answering 200 with the row or 404. */
static bool one_row(rw_api_req_t *rq, const char *sql, int n,
                    const char *const *p, const char *what)
{
    PGresult *res = NULL;
    char errstr[512];
    rw_err_t err;
    bool ok = false;

    err = rw_pg_exec(rq->pg, sql, n, p, &res, errstr, sizeof(errstr));
    if (err)
        fail_pg(rq, err, errstr);
    else if (PQntuples(res) != 1)
        rw_api_fail(rq, 404, "id", "no %s %s", what, p[0]);
    else {
        rw_api_reply(rq, 200, rw_api_row_json(res, 0));
        ok = true;
    }
    PQclear(res);
    return ok;
}

static void h_schedule_get(rw_api_req_t *rq)
{
    const char *p[1] = {rq->params[0]};
    long long id;

    if (param_id(rq, 0, "id", &id))
        one_row(rq, SQL_SCHEDULE_GET, 1, p, "store app");
}

static const rw_api_field_t schedule_fields[] = {
    {"enabled", RW_API_F_BOOL, true, 0, 0},
    {"interval_days", RW_API_F_INT, false, 1, MAX_INTERVAL_DAYS},
    {"beta_interval_days", RW_API_F_INT_NULL, false, 1, MAX_INTERVAL_DAYS},
};

static void h_schedule_put(rw_api_req_t *rq)
{
    json_t *interval, *beta;
    char interval_s[24], beta_s[24];
    long long id;
    bool enable;

    if (!param_id(rq, 0, "id", &id) ||
        !body_ok(rq, schedule_fields, NFIELDS(schedule_fields)))
        return;
    enable = json_is_true(json_object_get(rq->body, "enabled"));
    interval = json_object_get(rq->body, "interval_days");
    beta = json_object_get(rq->body, "beta_interval_days");
    if (enable && !interval) {
        rw_api_fail(rq, 400, "interval_days",
                    "enabling a schedule needs interval_days");
        return;
    }
    if (!enable && (interval || beta)) {
        rw_api_fail(rq, 400, interval ? "interval_days" : "beta_interval_days",
                    "disabling takes no interval (the current ones are "
                    "kept)");
        return;
    }
    snprintf(interval_s, sizeof(interval_s), "%lld",
             (long long)json_integer_value(interval));
    snprintf(beta_s, sizeof(beta_s), "%lld",
             (long long)json_integer_value(beta));
    {
        const char *p[3] = {rq->params[0], interval_s,
                            json_is_integer(beta) ? beta_s : NULL};
        if (!one_row(rq, enable ? SQL_ENABLE : SQL_DISABLE, enable ? 3 : 1, p,
                     "store app"))
            return;
    }
    if (enable)
        snprintf(rq->audit, sizeof(rq->audit),
                 "store app %lld: enabled, every %s day(s), beta %s", id,
                 interval_s, json_is_integer(beta) ? beta_s : "same");
    else
        snprintf(rq->audit, sizeof(rq->audit), "store app %lld: disabled", id);
}

static const rw_api_field_t group_fields[] = {
    {"is_beta", RW_API_F_BOOL, true, 0, 0},
};

static void h_group_put(rw_api_req_t *rq)
{
    long long id;
    const char *beta;

    if (!param_id(rq, 0, "id", &id) ||
        !body_ok(rq, group_fields, NFIELDS(group_fields)))
        return;
    beta =
        json_is_true(json_object_get(rq->body, "is_beta")) ? "true" : "false";
    {
        const char *p[2] = {rq->params[0], beta};
        if (!one_row(rq, SQL_GROUP, 2, p, "user group"))
            return;
    }
    snprintf(rq->audit, sizeof(rq->audit), "user group %lld: beta %s", id,
             beta);
}

/* ---- GET /lag -------------------------------------------------------- */

static void h_lag(rw_api_req_t *rq)
{
    long long interval;

    if (!query_ll(rq, "interval_s", 0, RW_LAG_MAX_INTERVAL_S, 2, &interval))
        return;
    /* shared: a burst of callers costs one measurement, not one each */
    rw_api_reply(rq, 200, rw_api_lag(rq->api, interval));
}

/* ---- tokens (admin) --------------------------------------------------- */

static void h_tokens_list(rw_api_req_t *rq)
{
    PGresult *res = NULL;
    char errstr[512];
    rw_err_t err;

    err = rw_token_list(rq->pg, &res, errstr, sizeof(errstr));
    if (err)
        fail_pg(rq, err, errstr);
    else
        rw_api_reply(rq, 200,
                     json_pack("{s:o}", "tokens", rw_api_rows_json(res)));
    PQclear(res);
}

static const rw_api_field_t token_fields[] = {
    {"name", RW_API_F_STRING, true, 1, 64},
    {"role", RW_API_F_STRING, true, 1, 16},
};

static void h_tokens_create(rw_api_req_t *rq)
{
    const char *name, *role_s;
    char token[RW_TOKEN_LEN + 1], errstr[512];
    rw_err_t err;
    int role;

    if (!body_ok(rq, token_fields, NFIELDS(token_fields)))
        return;
    name = json_string_value(json_object_get(rq->body, "name"));
    role_s = json_string_value(json_object_get(rq->body, "role"));
    role = rw_role_parse(role_s);
    if (!rw_token_name_ok(name)) {
        rw_api_fail(rq, 400, "name",
                    "name must be 1-64 of A-Z a-z 0-9 . _ @ -, starting "
                    "with a letter or digit");
        return;
    }
    if (role < 0) {
        rw_api_fail(rq, 400, "role", "role must be viewer, operator or admin");
        return;
    }
    err = rw_token_create(rq->pg, name, (rw_role_t)role, rq->token_name, token,
                          sizeof(token), errstr, sizeof(errstr));
    if (err == RW_ERR_CONFLICT) {
        rw_api_fail(rq, 409, "name", "%s", errstr);
        return;
    }
    if (err) {
        fail_pg(rq, err, errstr);
        return;
    }
    snprintf(rq->audit, sizeof(rq->audit), "token %s (%s) created", name,
             role_s);
    /* the only time the token is shown; it is not logged or audited */
    rw_api_reply(rq, 201,
                 json_pack("{s:s, s:s, s:s}", "name", name, "role", role_s,
                           "token", token));
    explicit_bzero(token, sizeof(token));
}

static void h_tokens_revoke(rw_api_req_t *rq)
{
    const char *name = rq->params[0];
    char errstr[512];
    rw_err_t err;

    if (!rw_token_name_ok(name)) {
        rw_api_fail(rq, 400, "name", "not a token name");
        return;
    }
    err = rw_token_revoke(rq->pg, name, errstr, sizeof(errstr));
    if (err == RW_ERR_NOT_FOUND) {
        rw_api_fail(rq, 404, "name", "%s", errstr);
        return;
    }
    if (err) {
        fail_pg(rq, err, errstr);
        return;
    }
    snprintf(rq->audit, sizeof(rq->audit), "token %s revoked", name);
    rw_api_reply(rq, 200, json_pack("{s:s, s:b}", "name", name, "revoked", 1));
}

/* ---- the table ------------------------------------------------------- */

static const char *const q_runs[] = {
    "status",        "store_app", "source", "created_before",
    "created_after", "cursor",    "limit",  NULL};
static const char *const q_deployments[] = {"skip", "take", NULL};
static const char *const q_logs[] = {"instance", "failed", "cursor", "limit",
                                     NULL};
static const char *const q_lag[] = {"interval_s", NULL};

const rw_api_route_t rw_api_routes[] = {
    {"GET", "/api/v1/whoami", RW_ROLE_VIEWER, h_whoami, NULL,
     "the calling token's name and role"},
    {"GET", "/api/v1/runs", RW_ROLE_VIEWER, h_runs_list, q_runs,
     "runs, newest first, filtered, paged by cursor"},
    {"POST", "/api/v1/runs", RW_ROLE_OPERATOR, h_runs_create, NULL,
     "start a manual redeploy run"},
    {"GET", "/api/v1/runs/{uuid}", RW_ROLE_VIEWER, h_run_show, NULL,
     "one run: counts, waves, chunks, transitions, failed and skipped "
     "targets"},
    {"GET", "/api/v1/runs/{uuid}/logs", RW_ROLE_VIEWER, h_run_logs, q_logs,
     "a run's stored build logs (redacted), paged by cursor"},
    {"POST", "/api/v1/runs/{uuid}/pause", RW_ROLE_OPERATOR, h_pause, NULL,
     "pause a running run"},
    {"POST", "/api/v1/runs/{uuid}/resume", RW_ROLE_OPERATOR, h_resume, NULL,
     "resume a paused run"},
    {"POST", "/api/v1/runs/{uuid}/abort", RW_ROLE_OPERATOR, h_abort, NULL,
     "abort a pending, running or paused run"},
    {"POST", "/api/v1/runs/{uuid}/retry", RW_ROLE_OPERATOR, h_retry, NULL,
     "retry a finished run's failed and timed-out targets"},
    {"POST", "/api/v1/runs/{uuid}/promote", RW_ROLE_OPERATOR, h_promote, NULL,
     "release the next wave of a run baking or awaiting promotion"},
    {"GET", "/api/v1/instances/{id}", RW_ROLE_VIEWER, h_instance, NULL,
     "one instance: last and next deploy, last status"},
    {"GET", "/api/v1/instances/{id}/deployments", RW_ROLE_VIEWER, h_deployments,
     q_deployments, "an instance's history, newest first"},
    {"GET", "/api/v1/store-apps/{id}/schedule", RW_ROLE_VIEWER, h_schedule_get,
     NULL, "a store app's redeploy cadence"},
    {"PUT", "/api/v1/store-apps/{id}/schedule", RW_ROLE_ADMIN, h_schedule_put,
     NULL, "set a store app's redeploy cadence"},
    {"PUT", "/api/v1/user-groups/{id}", RW_ROLE_ADMIN, h_group_put, NULL,
     "mark a user group as beta or not"},
    {"GET", "/api/v1/lag", RW_ROLE_VIEWER, h_lag, q_lag,
     "consumer group lag, as rollwavectl lag"},
    {"GET", "/api/v1/tokens", RW_ROLE_ADMIN, h_tokens_list, NULL,
     "API tokens, without anything secret"},
    {"POST", "/api/v1/tokens", RW_ROLE_ADMIN, h_tokens_create, NULL,
     "create a token (shown once)"},
    {"DELETE", "/api/v1/tokens/{name}", RW_ROLE_ADMIN, h_tokens_revoke, NULL,
     "revoke a token"},
};

const size_t rw_api_routes_count =
    sizeof(rw_api_routes) / sizeof(rw_api_routes[0]);
