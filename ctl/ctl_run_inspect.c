/*
 * ctl_run_inspect: "rollwavectl run show UUID" prints one run in full: its
 * header, targets counted by state, waves, chunks, state transitions, the
 * failed
 * and timed-out targets with their errors and the skipped targets with
 * their reasons, as text or JSON. "rollwavectl run wait UUID" follows the
 * run live (rw_ctl_watch_run) until it is final.
 *
 * Each section is one query served by an index of its table (the run by
 * its uuid, targets and chunks by run id), all read in one read-only
 * repeatable-read transaction so the sections agree with each other. It
 * changes nothing: pausing, aborting and retrying are ctl_run_control.
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "rw_state.h"

/* to_char format of the timestamps shown: ISO 8601 in UTC. */
#define ISO "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"

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
    "  (SELECT x.reason FROM run_transitions x WHERE x.run_id = r.id"
    "     AND x.to_status = 'paused' ORDER BY x.id DESC LIMIT 1)"
    "    AS pause_reason"
    " FROM deployment_runs r"
    " LEFT JOIN store_apps a ON a.id = r.store_app_id"
    " WHERE r.uuid = $1::uuid";

static const char SQL_BY_STATE[] =
    "SELECT state, count(*) AS n FROM run_targets"
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
    " FROM run_chunks WHERE run_id = $1::bigint ORDER BY chunk";

/* Counts of a wave still running are live; an ended wave's are stored. */
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

/*
 * Targets of run $1 in the states $2: the Lagoon target recorded on the
 * run (the instance's own when the run has none), the error, and for
 * skipped ones the reason ("reason" falls back on the error text).
 */
static const char SQL_TARGETS[] =
    "SELECT t.instance_id, i.name,"
    "  COALESCE(t.lagoon_project, i.lagoon_project) AS project,"
    "  COALESCE(t.lagoon_environment, i.lagoon_environment) AS environment,"
    "  COALESCE(t.lagoon_project, i.lagoon_project) || '/' ||"
    "    COALESCE(t.lagoon_environment, i.lagoon_environment) AS target,"
    "  t.state, t.chunk::bigint AS chunk, t.attempt::bigint AS attempt,"
    "  t.bulk_id, t.deployment_name, t.lagoon_status, t.error,"
    "  t.skip_reason, COALESCE(t.skip_reason, t.error) AS reason,"
    "  to_char(t.finished_at AT TIME ZONE 'UTC', " ISO ") AS finished_at"
    " FROM run_targets t JOIN app_instances i ON i.id = t.instance_id"
    " WHERE t.run_id = $1::bigint AND t.state = ANY ($2::text[])"
    " ORDER BY t.chunk, t.instance_id";

/* Everything "run show" prints, one result per section. */
typedef struct run_view {
    PGresult *run, *by_state, *waves, *chunks, *transitions, *failed, *skipped;
} run_view_t;

static void run_view_clear(run_view_t *v)
{
    PQclear(v->run);
    PQclear(v->by_state);
    PQclear(v->waves);
    PQclear(v->chunks);
    PQclear(v->transitions);
    PQclear(v->failed);
    PQclear(v->skipped);
    memset(v, 0, sizeof(*v));
}

/*
 * Load run uuid into v: only its header when header_only, every section
 * otherwise. RW_ERR_NOT_FOUND (errstr set) when there is no such run. The
 * caller clears v whatever the outcome.
 */
static rw_err_t load_run(rw_pg_t *pg, const char *uuid, bool header_only,
                         run_view_t *v, char *errstr, size_t errlen)
{
    const char *p_uuid[1] = {uuid};
    const char *p_failed[2] = {NULL, "{failed,timed_out}"};
    const char *p_skipped[2] = {NULL, "{skipped}"};
    const char *p_id[1];
    rw_err_t err = RW_OK;

    err = rw_pg_begin(pg, errstr, errlen);
    if (err)
        return err;
    err = rw_pg_exec(pg, SQL_SNAPSHOT, 0, NULL, NULL, errstr, errlen);
    if (!err)
        err = rw_pg_exec(pg, SQL_RUN, 1, p_uuid, &v->run, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(v->run) != 1) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND, "no run %s", uuid);
        goto out;
    }
    if (header_only)
        goto out;
    p_id[0] = p_failed[0] = p_skipped[0] = rw_pg_str(v->run, 0, "id");
    err = rw_pg_exec(pg, SQL_BY_STATE, 1, p_id, &v->by_state, errstr, errlen);
    if (!err)
        err = rw_pg_exec(pg, SQL_WAVES, 1, p_id, &v->waves, errstr, errlen);
    if (!err)
        err = rw_pg_exec(pg, SQL_CHUNKS, 1, p_id, &v->chunks, errstr, errlen);
    if (!err)
        err = rw_pg_exec(pg, SQL_TRANSITIONS, 1, p_id, &v->transitions, errstr,
                         errlen);
    if (!err)
        err = rw_pg_exec(pg, SQL_TARGETS, 2, p_failed, &v->failed, errstr,
                         errlen);
    if (!err)
        err = rw_pg_exec(pg, SQL_TARGETS, 2, p_skipped, &v->skipped, errstr,
                         errlen);
out : {
    char ignored[256];
    /* read-only: ending it either way loses nothing */
    rw_pg_rollback(pg, ignored, sizeof(ignored));
}
    return err;
}

/* Count of state in the by-state result (0 when absent). */
static long long state_count(const PGresult *res, const char *state)
{
    for (int r = 0; r < PQntuples(res); r++)
        if (strcmp(rw_pg_str(res, r, "state"), state) == 0)
            return rw_pg_ll(res, r, "n", 0);
    return 0;
}

static json_t *rows_json(const PGresult *res)
{
    json_t *arr = json_array();

    for (int r = 0; arr && r < PQntuples(res); r++)
        if (json_array_append_new(arr, rw_ctl_row_json(res, r))) {
            json_decref(arr);
            arr = NULL;
        }
    return arr;
}

static int show_json(const run_view_t *v)
{
    json_t *doc = json_object(), *by = json_object();
    long long total = 0;
    int rc = RW_CTL_EXIT_OK, bad = 0;

    for (int i = 0; by && i < RW_TARGET__COUNT; i++) {
        const char *st = rw_target_state_name((rw_target_state_t)i);
        long long n = state_count(v->by_state, st);
        total += n;
        bad |= json_object_set_new(by, st, json_integer(n));
    }
    bad |= json_object_set_new(doc, "run", rw_ctl_row_json(v->run, 0));
    bad |= json_object_set_new(doc, "targets_by_state", by);
    bad |= json_object_set_new(doc, "targets_total", json_integer(total));
    bad |= json_object_set_new(doc, "waves", rows_json(v->waves));
    bad |= json_object_set_new(doc, "chunks", rows_json(v->chunks));
    bad |= json_object_set_new(doc, "transitions", rows_json(v->transitions));
    bad |= json_object_set_new(doc, "failed_targets", rows_json(v->failed));
    bad |= json_object_set_new(doc, "skipped_targets", rows_json(v->skipped));
    if (!doc || bad || json_dumpf(doc, stdout, JSON_INDENT(2)) != 0) {
        rw_ctl_errorf("run show", "cannot write JSON (out of memory?)");
        rc = RW_CTL_EXIT_FAILED;
    } else {
        printf("\n");
    }
    json_decref(doc);
    return rc;
}

/* "label  value" with "-" for NULL. */
static void kv(const char *label, const char *value)
{
    printf("%-15s %s\n", label, value ? value : "-");
}

static void show_text(const run_view_t *v)
{
    static const rw_ctl_col_t chunk_cols[] = {
        {"chunk", "CHUNK", false},
        {"state", "STATE", false},
        {"attempt", "ATTEMPT", false},
        {"poll_attempts", "POLLS", false},
        {"target_count", "TARGETS", false},
        {"bulk_id", "BULK ID", false},
        {"bulk_name", "BULK NAME", false},
        {"deferred_until", "DEFERRED UNTIL", false},
        {"deferred_reason", "DEFERRED BECAUSE", false},
    };
    static const rw_ctl_col_t wave_cols[] = {
        {"wave", "WAVE", false},
        {"state", "STATE", false},
        {"target_count", "TARGETS", false},
        {"succeeded", "SUCCEEDED", false},
        {"failed", "FAILED", false},
        {"first_chunk", "FIRST CHUNK", false},
        {"last_chunk", "LAST CHUNK", false},
        {"bake_until", "BAKE UNTIL", false},
        {"finished_at", "FINISHED", false},
    };
    static const rw_ctl_col_t transition_cols[] = {
        {"from_status", "FROM", false},
        {"to_status", "TO", false},
        {"at", "AT", false},
        {"reason", "REASON", false},
    };
    static const rw_ctl_col_t failed_cols[] = {
        {"instance_id", "INSTANCE", false},
        {"name", "NAME", false},
        {"target", "PROJECT/ENVIRONMENT", false},
        {"state", "STATE", false},
        {"chunk", "CHUNK", false},
        {"error", "ERROR", false},
    };
    static const rw_ctl_col_t skipped_cols[] = {
        {"instance_id", "INSTANCE", false},
        {"name", "NAME", false},
        {"target", "PROJECT/ENVIRONMENT", false},
        {"reason", "REASON", false},
    };
    const PGresult *run = v->run;
    char buf[256];
    long long total = 0;

    kv("run", rw_pg_str(run, 0, "uuid"));
    kv("status", rw_pg_str(run, 0, "status"));
    kv("source", rw_pg_str(run, 0, "source"));
    kv("triggered by", rw_pg_str(run, 0, "triggered_by"));
    if (rw_pg_str(run, 0, "store_app_id")) {
        snprintf(buf, sizeof(buf), "%s (id %s)", rw_pg_str(run, 0, "store_app"),
                 rw_pg_str(run, 0, "store_app_id"));
        kv("store app", buf);
    } else {
        kv("store app", "(several)");
    }
    kv("strategy", rw_pg_str(run, 0, "strategy"));
    kv("variables only",
       rw_pg_bool(run, 0, "variables_only", 0) ? "yes" : "no");
    kv("created", rw_pg_str(run, 0, "created_at"));
    kv("started", rw_pg_str(run, 0, "started_at"));
    kv("completed", rw_pg_str(run, 0, "completed_at"));
    rw_ctl_fmt_duration(rw_pg_ll(run, 0, "duration_s", 0), buf, sizeof(buf));
    kv("duration", buf);
    kv("last error", rw_pg_str(run, 0, "last_error"));
    if (strcmp(rw_pg_str(run, 0, "status"), "paused") == 0)
        kv("paused because", rw_pg_str(run, 0, "pause_reason"));
    snprintf(buf, sizeof(buf),
             "total %s, succeeded %s, failed %s, "
             "skipped %s",
             rw_pg_str(run, 0, "total"), rw_pg_str(run, 0, "succeeded"),
             rw_pg_str(run, 0, "failed"), rw_pg_str(run, 0, "skipped"));
    kv("recorded counts", buf);

    printf("\ntargets by state\n");
    for (int i = 0; i < RW_TARGET__COUNT; i++) {
        const char *st = rw_target_state_name((rw_target_state_t)i);
        long long n = state_count(v->by_state, st);
        total += n;
        if (n)
            printf("  %-10s %lld\n", st, n);
    }
    printf("  %-10s %lld\n", "total", total);

    if (PQntuples(v->waves) > 0) {
        printf("\nwaves (%d, current %s)\n", PQntuples(v->waves),
               rw_pg_str(run, 0, "current_wave"));
        rw_ctl_print_table(v->waves, wave_cols,
                           sizeof(wave_cols) / sizeof(wave_cols[0]));
    }
    printf("\nchunks (%d)\n", PQntuples(v->chunks));
    rw_ctl_print_table(v->chunks, chunk_cols,
                       sizeof(chunk_cols) / sizeof(chunk_cols[0]));
    printf("\ntransitions (%d)\n", PQntuples(v->transitions));
    rw_ctl_print_table(v->transitions, transition_cols,
                       sizeof(transition_cols) / sizeof(transition_cols[0]));
    printf("\nfailed and timed-out targets (%d)\n", PQntuples(v->failed));
    if (PQntuples(v->failed))
        rw_ctl_print_table(v->failed, failed_cols,
                           sizeof(failed_cols) / sizeof(failed_cols[0]));
    printf("\nskipped targets (%d)\n", PQntuples(v->skipped));
    if (PQntuples(v->skipped))
        rw_ctl_print_table(v->skipped, skipped_cols,
                           sizeof(skipped_cols) / sizeof(skipped_cols[0]));
}

int rw_ctl_run_inspect(int argc, char **argv, const rw_settings_t *s)
{
    bool wait = strcmp(argv[0], "wait") == 0, json = false;
    const char *cmd = wait ? "run wait" : "run show";
    const char *uuid = NULL;
    run_view_t v;
    rw_pg_t *pg = NULL;
    char errstr[512];
    int rc = RW_CTL_EXIT_OK;
    rw_err_t err;

    memset(&v, 0, sizeof(v));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0 && !wait) {
            json = true;
        } else if (argv[i][0] != '-' && !uuid) {
            uuid = argv[i];
        } else {
            rw_ctl_errorf(cmd,
                          "unexpected argument '%s' (usage: rollwavectl "
                          "run show UUID [--json] | run wait UUID)",
                          argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (!uuid) {
        rw_ctl_errorf(cmd, "a run UUID is required");
        return RW_CTL_EXIT_USAGE;
    }
    if (!rw_ctl_is_uuid(uuid)) {
        rw_ctl_errorf(cmd,
                      "'%s' is not a run UUID "
                      "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
                      uuid);
        return RW_CTL_EXIT_USAGE;
    }
    err = rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr));
    if (!err)
        err = load_run(pg, uuid, wait, &v, errstr, sizeof(errstr));
    if (err) {
        rw_ctl_errorf(cmd, "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (wait) {
        char status[32] = "";
        /* the run exists: a failure here is a lost database */
        if (rw_ctl_watch_run(pg, uuid, status, sizeof(status)) ||
            strcmp(status, "completed") != 0)
            rc = RW_CTL_EXIT_FAILED;
        if (status[0] && strcmp(status, "completed") != 0)
            rw_ctl_errorf(cmd, "run %s ended %s", uuid, status);
    } else if (json) {
        rc = show_json(&v);
    } else {
        show_text(&v);
    }
out:
    run_view_clear(&v);
    rw_pg_destroy(pg);
    return rc;
}
