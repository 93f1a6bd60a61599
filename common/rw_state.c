/*
 * rw_state: run, target and chunk state machines (DESIGN.md section 6).
 *
 * Each machine is one enum, one name table and one edge table indexed
 * [from][to]; rw_*_edge_ok reads nothing else. Each machine also has its
 * single Postgres writer here: a conditional UPDATE that only
 * moves rows still in the expected state, so two workers racing on the
 * same row cannot both win, and an audit row for runs and chunks.
 *
 * Not here: when to transition, counters, locks, transactions.
 */
#include "rw_state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rw_lagoon.h"
#include "rw_log.h"
#include "rw_webhook.h"

#define COMP "state"

/* Edge table cells: no edge, an ordinary edge, an edge only for retries. */
enum { NO_EDGE = 0, EDGE, RETRY_ONLY };

/* ---- run ---------------------------------------------------------------- */

/* clang-format off */
static const char *const run_names[RW_RUN__COUNT] = {
    [RW_RUN_PENDING] = "pending",
    [RW_RUN_RUNNING] = "running",
    [RW_RUN_PAUSED] = "paused",
    [RW_RUN_COMPLETED] = "completed",
    [RW_RUN_PARTIAL_FAILED] = "partial_failed",
    [RW_RUN_FAILED] = "failed",
    [RW_RUN_CANCELLED] = "cancelled",
};
/* clang-format on */

/*
 * Beyond the brief's edges (docs/DESIGN.md section 6 marks them), two kinds
 * are allowed because without them a
 * run could be stranded:
 * - pending -> an outcome: a run whose targets all ended without any
 *   successful trigger (all skipped, every trigger failed) never entered
 *   running but must still be finalized;
 * - paused -> cancelled / an outcome: an operator aborts a paused run
 *   without resuming it first, and a pause that lands after the last chunk
 *   was triggered must not block finalization when that chunk ends.
 */
static const unsigned char run_edges[RW_RUN__COUNT][RW_RUN__COUNT] = {
    [RW_RUN_PENDING] =
        {
            [RW_RUN_RUNNING] = EDGE,
            [RW_RUN_COMPLETED] = EDGE,
            [RW_RUN_PARTIAL_FAILED] = EDGE,
            [RW_RUN_FAILED] = EDGE,
            [RW_RUN_CANCELLED] = EDGE,
        },
    [RW_RUN_RUNNING] =
        {
            [RW_RUN_PAUSED] = EDGE,
            [RW_RUN_COMPLETED] = EDGE,
            [RW_RUN_PARTIAL_FAILED] = EDGE,
            [RW_RUN_FAILED] = EDGE,
            [RW_RUN_CANCELLED] = EDGE,
        },
    [RW_RUN_PAUSED] =
        {
            [RW_RUN_RUNNING] = EDGE,
            [RW_RUN_COMPLETED] = EDGE,
            [RW_RUN_PARTIAL_FAILED] = EDGE,
            [RW_RUN_FAILED] = EDGE,
            [RW_RUN_CANCELLED] = EDGE,
        },
    [RW_RUN_COMPLETED] = {[RW_RUN_RUNNING] = RETRY_ONLY},
    [RW_RUN_PARTIAL_FAILED] = {[RW_RUN_RUNNING] = RETRY_ONLY},
    [RW_RUN_FAILED] = {[RW_RUN_RUNNING] = RETRY_ONLY},
    /* cancelled is final: a retry of a cancelled run is a new run. */
};

/* ---- target ------------------------------------------------------------- */

/* clang-format off */
static const char *const target_names[RW_TARGET__COUNT] = {
    [RW_TARGET_PENDING] = "pending",
    [RW_TARGET_CLAIMED] = "claimed",
    [RW_TARGET_TRIGGERED] = "triggered",
    [RW_TARGET_DEPLOYING] = "deploying",
    [RW_TARGET_SUCCEEDED] = "succeeded",
    [RW_TARGET_FAILED] = "failed",
    [RW_TARGET_SKIPPED] = "skipped",
    [RW_TARGET_TIMED_OUT] = "timed_out",
    [RW_TARGET_CANCELLED] = "cancelled",
};
/* clang-format on */

/*
 * triggered -> succeeded | failed is allowed besides the brief's path via
 * deploying: a fast build can be complete by the first poll, so the
 * poller never sees it running. claimed -> pending gives a claim back when
 * its chunk's mutation is known not to have reached Lagoon; the attempt
 * it had started is taken back with it.
 */
static const unsigned char target_edges[RW_TARGET__COUNT][RW_TARGET__COUNT] = {
    [RW_TARGET_PENDING] =
        {
            [RW_TARGET_CLAIMED] = EDGE,
            [RW_TARGET_SKIPPED] = EDGE,
            [RW_TARGET_CANCELLED] = EDGE,
        },
    [RW_TARGET_CLAIMED] =
        {
            [RW_TARGET_PENDING] = EDGE,
            [RW_TARGET_TRIGGERED] = EDGE,
            [RW_TARGET_FAILED] = EDGE,
        },
    [RW_TARGET_TRIGGERED] =
        {
            [RW_TARGET_DEPLOYING] = EDGE,
            [RW_TARGET_SUCCEEDED] = EDGE,
            [RW_TARGET_FAILED] = EDGE,
            [RW_TARGET_TIMED_OUT] = EDGE,
        },
    [RW_TARGET_DEPLOYING] =
        {
            [RW_TARGET_SUCCEEDED] = EDGE,
            [RW_TARGET_FAILED] = EDGE,
            [RW_TARGET_TIMED_OUT] = EDGE,
        },
    [RW_TARGET_FAILED] = {[RW_TARGET_PENDING] = RETRY_ONLY},
    [RW_TARGET_TIMED_OUT] = {[RW_TARGET_PENDING] = RETRY_ONLY},
};

/* ---- chunk -------------------------------------------------------------- */

/* clang-format off */
static const char *const chunk_names[RW_CHUNK__COUNT] = {
    [RW_CHUNK_PENDING] = "pending",
    [RW_CHUNK_TRIGGERING] = "triggering",
    [RW_CHUNK_TRIGGERED] = "triggered",
    [RW_CHUNK_DONE] = "done",
    [RW_CHUNK_FAILED] = "failed",
};
/* clang-format on */

/*
 * pending -> done: every target of the chunk was skipped, nothing is sent.
 * triggering -> pending: the mutation is known not to have reached Lagoon
 * (refused before sending, or looked up by name after the settle window
 * and not found); the claims are given back and the next trigger is a new
 * attempt with a new bulk name, never a silent repeat of the old one.
 * triggered -> done also covers chunks whose targets timed out: failed is
 * reserved for "no bulk id", which keeps the bulk_id CHECK simple.
 */
static const unsigned char chunk_edges[RW_CHUNK__COUNT][RW_CHUNK__COUNT] = {
    [RW_CHUNK_PENDING] =
        {
            [RW_CHUNK_TRIGGERING] = EDGE,
            [RW_CHUNK_DONE] = EDGE,
        },
    [RW_CHUNK_TRIGGERING] =
        {
            [RW_CHUNK_PENDING] = EDGE,
            [RW_CHUNK_TRIGGERED] = EDGE,
            [RW_CHUNK_FAILED] = EDGE,
        },
    [RW_CHUNK_TRIGGERED] = {[RW_CHUNK_DONE] = EDGE},
    [RW_CHUNK_DONE] = {[RW_CHUNK_PENDING] = RETRY_ONLY},
    [RW_CHUNK_FAILED] = {[RW_CHUNK_PENDING] = RETRY_ONLY},
};

/* ---- wave --------------------------------------------------------------- */

/* clang-format off */
static const char *const wave_names[RW_WAVE__COUNT] = {
    [RW_WAVE_PENDING] = "pending",
    [RW_WAVE_BAKING] = "baking",
    [RW_WAVE_AWAITING_PROMOTION] = "awaiting_promotion",
    [RW_WAVE_RUNNING] = "running",
    [RW_WAVE_DONE] = "done",
    [RW_WAVE_CANCELLED] = "cancelled",
};
/* clang-format on */

/*
 * pending -> running directly: a run paused by a failure threshold at the
 * end of a wave leaves the next wave pending, and its resume releases it.
 * Every state but done can be cancelled: an abort ends the waves not yet
 * over. done is final: a retry re-opens chunks, not waves.
 */
static const unsigned char wave_edges[RW_WAVE__COUNT][RW_WAVE__COUNT] = {
    [RW_WAVE_PENDING] =
        {
            [RW_WAVE_BAKING] = EDGE,
            [RW_WAVE_AWAITING_PROMOTION] = EDGE,
            [RW_WAVE_RUNNING] = EDGE,
            [RW_WAVE_CANCELLED] = EDGE,
        },
    [RW_WAVE_BAKING] =
        {
            [RW_WAVE_RUNNING] = EDGE,
            [RW_WAVE_CANCELLED] = EDGE,
        },
    [RW_WAVE_AWAITING_PROMOTION] =
        {
            [RW_WAVE_RUNNING] = EDGE,
            [RW_WAVE_CANCELLED] = EDGE,
        },
    [RW_WAVE_RUNNING] =
        {
            [RW_WAVE_DONE] = EDGE,
            [RW_WAVE_CANCELLED] = EDGE,
        },
};

/* ---- shared lookups ----------------------------------------------------- */

static const char *name_of(const char *const *names, int count, int s)
{
    if (s < 0 || s >= count)
        return "unknown";
    return names[s];
}

static int parse_name(const char *const *names, int count, const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < count; i++) {
        if (strcmp(names[i], name) == 0)
            return i;
    }
    return -1;
}

static bool edge_ok(const unsigned char *table, int count, int from, int to,
                    bool retry)
{
    if (from < 0 || from >= count || to < 0 || to >= count)
        return false;
    unsigned char cell = table[from * count + to];
    return cell == EDGE || (cell == RETRY_ONLY && retry);
}

const char *rw_run_state_name(rw_run_state_t s)
{
    return name_of(run_names, RW_RUN__COUNT, (int)s);
}

int rw_run_state_parse(const char *name)
{
    return parse_name(run_names, RW_RUN__COUNT, name);
}

const char *rw_target_state_name(rw_target_state_t s)
{
    return name_of(target_names, RW_TARGET__COUNT, (int)s);
}

int rw_target_state_parse(const char *name)
{
    return parse_name(target_names, RW_TARGET__COUNT, name);
}

const char *rw_chunk_state_name(rw_chunk_state_t s)
{
    return name_of(chunk_names, RW_CHUNK__COUNT, (int)s);
}

int rw_chunk_state_parse(const char *name)
{
    return parse_name(chunk_names, RW_CHUNK__COUNT, name);
}

const char *rw_wave_state_name(rw_wave_state_t s)
{
    return name_of(wave_names, RW_WAVE__COUNT, (int)s);
}

int rw_wave_state_parse(const char *name)
{
    return parse_name(wave_names, RW_WAVE__COUNT, name);
}

bool rw_wave_edge_ok(rw_wave_state_t from, rw_wave_state_t to, bool retry)
{
    return edge_ok(&wave_edges[0][0], RW_WAVE__COUNT, (int)from, (int)to,
                   retry);
}

bool rw_run_edge_ok(rw_run_state_t from, rw_run_state_t to, bool retry)
{
    return edge_ok(&run_edges[0][0], RW_RUN__COUNT, (int)from, (int)to, retry);
}

bool rw_target_edge_ok(rw_target_state_t from, rw_target_state_t to, bool retry)
{
    return edge_ok(&target_edges[0][0], RW_TARGET__COUNT, (int)from, (int)to,
                   retry);
}

bool rw_chunk_edge_ok(rw_chunk_state_t from, rw_chunk_state_t to, bool retry)
{
    return edge_ok(&chunk_edges[0][0], RW_CHUNK__COUNT, (int)from, (int)to,
                   retry);
}

bool rw_run_terminal(rw_run_state_t s)
{
    return s == RW_RUN_COMPLETED || s == RW_RUN_PARTIAL_FAILED ||
           s == RW_RUN_FAILED || s == RW_RUN_CANCELLED;
}

bool rw_target_in_flight(rw_target_state_t s)
{
    return s == RW_TARGET_CLAIMED || s == RW_TARGET_TRIGGERED ||
           s == RW_TARGET_DEPLOYING;
}

bool rw_target_terminal(rw_target_state_t s)
{
    return s == RW_TARGET_SUCCEEDED || s == RW_TARGET_FAILED ||
           s == RW_TARGET_SKIPPED || s == RW_TARGET_TIMED_OUT ||
           s == RW_TARGET_CANCELLED;
}

bool rw_chunk_terminal(rw_chunk_state_t s)
{
    return s == RW_CHUNK_DONE || s == RW_CHUNK_FAILED;
}

rw_run_state_t rw_run_outcome(long long succeeded, long long failed)
{
    if (failed <= 0)
        return RW_RUN_COMPLETED;
    if (succeeded <= 0)
        return RW_RUN_FAILED;
    return RW_RUN_PARTIAL_FAILED;
}

rw_target_state_t rw_target_from_lagoon(const char *lagoon_status, bool has_row)
{
    rw_lagoon_status_t st = rw_lagoon_status_parse(lagoon_status);

    if (!has_row)
        return RW_TARGET_TRIGGERED;
    if (rw_lagoon_status_is_success(st))
        return RW_TARGET_SUCCEEDED;
    /* failed, error and cancelled: a build that will not complete */
    if (rw_lagoon_status_is_terminal(st))
        return RW_TARGET_FAILED;
    /*
     * new, pending, queued and running are in progress. So is any status
     * this code does not know (Lagoon has added some over time): calling it
     * a success or failure would be a guess, whereas "still deploying"
     * keeps the target polled until a known final status arrives or the
     * poll attempts run out and it times out visibly.
     */
    return RW_TARGET_DEPLOYING;
}

/* ---- Postgres writers --------------------------------------------------- */

/*
 * The update, the audit row and the webhook deliveries are one statement,
 * so the audit row and each delivery exist exactly when the status moved.
 * started_at keeps the first start across pauses and retries; completed_at
 * is cleared when a retry reopens a run. $6 is the webhook event of the
 * edge (NULL: none); h finds the subscriptions that want it, and the
 * run's targets are counted only when there is one (the EXISTS is a
 * one-time filter), so a fleet without webhooks pays one look at an empty
 * table. The payload is built here, once, and is the exact body signed.
 */
static const char run_sql[] =
    "WITH u AS ("
    " UPDATE deployment_runs"
    " SET status = $3::text,"
    " started_at = CASE WHEN $3::text = 'running'"
    " THEN COALESCE(started_at, now()) ELSE started_at END,"
    " completed_at = CASE WHEN $5::boolean THEN now()"
    " WHEN $3::text = 'running' THEN NULL ELSE completed_at END"
    " WHERE id = $1::bigint AND status = $2::text"
    " RETURNING id, uuid, store_app_id, trigger_source, triggered_by,"
    " current_wave),"
    " h AS ("
    " SELECT w.id FROM webhooks w, u"
    " WHERE $6::text = ANY (w.events)"
    " AND (w.store_app_id IS NULL OR w.store_app_id = u.store_app_id)),"
    " c AS ("
    " SELECT count(*) AS total, " RW_TARGET_COUNTS_SQL " FROM run_targets"
    " WHERE run_id = $1::bigint AND EXISTS (SELECT 1 FROM h)),"
    " d AS ("
    " INSERT INTO webhook_deliveries (webhook_id, run_id, event, payload)"
    " SELECT h.id, u.id, $6::text, json_build_object("
    " 'event', $6::text, 'run', u.uuid, 'store_app_id', u.store_app_id,"
    " 'trigger_source', u.trigger_source, 'triggered_by', u.triggered_by,"
    " 'from', $2::text, 'status', $3::text, 'reason', $4::text,"
    " 'wave', u.current_wave,"
    " 'counts', json_build_object('total', c.total,"
    " 'succeeded', c.succeeded, 'failed', c.failed, 'skipped', c.skipped,"
    " 'in_progress', c.total - c.succeeded - c.failed - c.skipped),"
    " 'occurred_at', now())::text"
    " FROM h, u, c"
    " RETURNING 1)"
    " INSERT INTO run_transitions (run_id, from_status, to_status, reason, at)"
    " SELECT id, $2::text, $3::text, $4::text, now() FROM u"
    " RETURNING run_id";

rw_err_t rw_run_transition(rw_pg_t *pg, long long run_id, rw_run_state_t from,
                           rw_run_state_t to, bool retry, const char *reason,
                           char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char id_s[24];
    char quoted[256];
    const char *params[6];

    if (!pg)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG, "pg: NULL");
    if (!rw_run_edge_ok(from, to, retry)) {
        rw_warn(COMP,
                "event=illegal_transition machine=run run=%lld from=%s to=%s "
                "retry=%d",
                run_id, rw_run_state_name(from), rw_run_state_name(to),
                (int)retry);
        return rw_err_set(errstr, errlen, RW_ERR_STATE,
                          "run %lld: %s -> %s is not a legal transition%s",
                          run_id, rw_run_state_name(from),
                          rw_run_state_name(to),
                          retry ? "" : " (without retry)");
    }
    snprintf(id_s, sizeof(id_s), "%lld", run_id);
    params[0] = id_s;
    params[1] = rw_run_state_name(from);
    params[2] = rw_run_state_name(to);
    params[3] = reason;
    params[4] = rw_run_terminal(to) ? "true" : "false";
    params[5] = rw_webhook_event_for(from, to);
    err = rw_pg_exec(pg, run_sql, 6, params, &res, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(res) == 0) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                         "run %lld is no longer %s", run_id,
                         rw_run_state_name(from));
        rw_info(COMP,
                "event=transition_conflict machine=run run=%lld from=%s "
                "to=%s",
                run_id, rw_run_state_name(from), rw_run_state_name(to));
        goto out;
    }
    rw_info(COMP,
            "event=run_transition run=%lld from=%s to=%s retry=%d "
            "reason=%s",
            run_id, rw_run_state_name(from), rw_run_state_name(to), (int)retry,
            rw_log_quote(quoted, sizeof(quoted), reason ? reason : ""));
out:
    PQclear(res);
    return err;
}

/*
 * lk locks the rows in id order first, the order the worker's one-statement
 * claim takes them in too, so two writers of overlapping targets (a claim
 * and an abort) wait for each other instead of deadlocking; a repeated id
 * locks and moves its row once; state = $3 is what makes the batch safe to
 * repeat. claimed_at and triggered_at record the latest
 * entry into their state, so a retried target shows its last attempt.
 */
/*
 * Entering claimed starts a new attempt (attempt + 1, bulk id cleared);
 * entering triggered records the bulk id when one is given ($7). Doing it in
 * the transition statement keeps one row version per change: a second
 * UPDATE of the same rows in one transaction costs a foreign-key re-check
 * per row and another entry in every index.
 */
static const char target_sql[] =
    "WITH lk AS ("
    " SELECT t.id FROM run_targets t"
    " WHERE t.id = ANY ($2::bigint[]) AND t.run_id = $1::bigint"
    "   AND t.state = $3::text"
    " ORDER BY t.id FOR UPDATE)"
    " UPDATE run_targets AS t"
    " SET state = $4::text, error = $5::text, updated_at = now(),"
    " attempt = CASE WHEN $4::text = 'claimed' THEN t.attempt + 1"
    " WHEN $3::text = 'claimed' AND $4::text = 'pending'"
    " THEN t.attempt - 1 ELSE t.attempt END,"
    " bulk_id = CASE WHEN $4::text = 'claimed' THEN NULL"
    " WHEN $7::text IS NOT NULL THEN $7::text ELSE t.bulk_id END,"
    " claimed_at = CASE WHEN $4::text = 'claimed' THEN now()"
    " WHEN $4::text = 'pending' THEN NULL ELSE t.claimed_at END,"
    " triggered_at = CASE WHEN $4::text = 'triggered' THEN now()"
    " ELSE t.triggered_at END,"
    " health_attempts = CASE WHEN $4::text = 'claimed' THEN 0"
    " ELSE t.health_attempts END,"
    " health_next_at = CASE WHEN $4::text = 'claimed' THEN NULL"
    " ELSE t.health_next_at END,"
    " health_error = CASE WHEN $4::text = 'claimed' THEN NULL"
    " ELSE t.health_error END,"
    " route = CASE WHEN $4::text = 'claimed' THEN NULL ELSE t.route END,"
    " finished_at = CASE WHEN $6::boolean THEN now() ELSE NULL END"
    " FROM lk"
    " WHERE t.id = lk.id AND t.run_id = $1::bigint AND t.state = $3::text"
    " RETURNING t.id";

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a;
    long long y = *(const long long *)b;
    return (x > y) - (x < y);
}

rw_err_t rw_target_transition(rw_pg_t *pg, long long run_id,
                              const long long *target_ids, size_t n,
                              rw_target_state_t from, rw_target_state_t to,
                              bool retry, const char *error,
                              long long **changed_ids, size_t *n_changed,
                              char *errstr, size_t errlen)
{
    return rw_target_transition_bulk(pg, run_id, target_ids, n, from, to, retry,
                                     error, NULL, changed_ids, n_changed,
                                     errstr, errlen);
}

rw_err_t rw_target_transition_bulk(rw_pg_t *pg, long long run_id,
                                   const long long *target_ids, size_t n,
                                   rw_target_state_t from, rw_target_state_t to,
                                   bool retry, const char *error,
                                   const char *bulk_id, long long **changed_ids,
                                   size_t *n_changed, char *errstr,
                                   size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    rw_pg_array_t ids;
    long long *moved = NULL;
    char id_s[24];
    const char *params[7];
    size_t rows = 0;

    rw_pg_array_init(&ids);
    if (changed_ids)
        *changed_ids = NULL;
    if (n_changed)
        *n_changed = 0;
    if (!pg || (n > 0 && !target_ids)) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "pg or target_ids NULL");
        goto out;
    }
    if (!rw_target_edge_ok(from, to, retry)) {
        rw_warn(COMP,
                "event=illegal_transition machine=target run=%lld from=%s "
                "to=%s retry=%d targets=%zu",
                run_id, rw_target_state_name(from), rw_target_state_name(to),
                (int)retry, n);
        err = rw_err_set(errstr, errlen, RW_ERR_STATE,
                         "targets of run %lld: %s -> %s is not a legal "
                         "transition%s",
                         run_id, rw_target_state_name(from),
                         rw_target_state_name(to),
                         retry ? "" : " (without retry)");
        goto out;
    }
    if (n == 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        err = rw_pg_array_add_ll(&ids, target_ids[i]);
        if (err) {
            err = rw_err_set(errstr, errlen, err, "target id array");
            goto out;
        }
    }
    snprintf(id_s, sizeof(id_s), "%lld", run_id);
    params[0] = id_s;
    params[1] = rw_pg_array_finish(&ids);
    params[2] = rw_target_state_name(from);
    params[3] = rw_target_state_name(to);
    params[4] = error;
    params[5] = rw_target_terminal(to) ? "true" : "false";
    params[6] = bulk_id;
    if (!params[1]) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "target id array");
        goto out;
    }
    err = rw_pg_exec(pg, target_sql, 7, params, &res, errstr, errlen);
    if (err)
        goto out;
    rows = (size_t)PQntuples(res);
    if (rows > 0 && changed_ids) {
        moved = malloc(rows * sizeof(*moved));
        if (!moved) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "changed ids");
            goto out;
        }
        for (size_t i = 0; i < rows; i++)
            moved[i] = rw_pg_ll(res, (int)i, "id", 0);
        qsort(moved, rows, sizeof(*moved), cmp_ll);
        *changed_ids = moved;
        moved = NULL;
    }
    if (n_changed)
        *n_changed = rows;
    rw_debug(COMP,
             "event=target_transition run=%lld from=%s to=%s retry=%d "
             "asked=%zu moved=%zu",
             run_id, rw_target_state_name(from), rw_target_state_name(to),
             (int)retry, n, rows);
out:
    free(moved);
    PQclear(res);
    rw_pg_array_free(&ids);
    return err;
}

/*
 * Lagoon results for a whole chunk in one statement: the targets (tg) and
 * the instances' copy of the latest deployment (ins). A target moves only
 * if it is still in its own from state, and a row whose state and Lagoon
 * columns are unchanged is not written at all (no dead row version). Rows
 * with u.health also write the health gate's columns: the route, the
 * checks made, when the next one is due (NULL: none) and the last
 * failure; the due time is the database's clock, as the poller reads it.
 * An instance is written only from a target with a Lagoon row ($5 not
 * NULL) that changes its deployment name or status; last_deployed_at only
 * on a completed build; its lifecycle status never. Each part reads its
 * own unnest: a CTE read twice would be planned as a scan of unknown size,
 * which could make the join to app_instances a hash join over the fleet.
 */
static const char target_apply_sql[] =
    "WITH tg AS ("
    " UPDATE run_targets t SET state = u.to_state, updated_at = now(),"
    "   lagoon_status = COALESCE(u.lstatus, t.lagoon_status),"
    "   deployment_name = COALESCE(u.dname, t.deployment_name),"
    "   error = CASE WHEN u.to_state IN ('failed', 'timed_out')"
    "                THEN u.err ELSE t.error END,"
    "   finished_at = CASE WHEN u.to_state IN ('succeeded', 'failed',"
    "                                         'timed_out')"
    "                      THEN now() ELSE NULL END,"
    "   route = CASE WHEN u.health THEN COALESCE(u.route, t.route)"
    "           ELSE t.route END,"
    "   health_attempts = CASE WHEN u.health THEN u.h_attempts"
    "                     ELSE t.health_attempts END,"
    "   health_next_at = CASE WHEN NOT u.health THEN t.health_next_at"
    "                    WHEN u.h_next_ms > 0"
    "                    THEN now() + u.h_next_ms * interval '1 millisecond'"
    "                    ELSE NULL END,"
    "   health_error = CASE WHEN u.health THEN u.h_error"
    "                  ELSE t.health_error END"
    " FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[],"
    "             $6::text[], $7::text[], $8::boolean[], $9::text[],"
    "             $10::int[], $11::bigint[], $12::text[])"
    "      AS u(id, from_state, to_state, lstatus, dname, err, health, route,"
    "           h_attempts, h_next_ms, h_error)"
    " WHERE t.id = u.id AND t.run_id = $1::bigint"
    "   AND t.state = u.from_state"
    "   AND (u.from_state <> u.to_state OR u.health"
    "        OR (u.lstatus IS NOT NULL"
    "            AND t.lagoon_status IS DISTINCT FROM u.lstatus)"
    "        OR (u.dname IS NOT NULL"
    "            AND t.deployment_name IS DISTINCT FROM u.dname))"
    " RETURNING 1),"
    " ins AS ("
    " UPDATE app_instances i SET last_deployment_name = v.dname,"
    "   last_deployment_status = v.lstatus, updated_at = now(),"
    "   last_deployed_at = CASE WHEN v.lstatus = 'complete'"
    "                           THEN COALESCE(v.completed, now())"
    "                           ELSE i.last_deployed_at END"
    " FROM unnest($13::bigint[], $6::text[], $5::text[], $14::timestamptz[])"
    "      AS v(id, dname, lstatus, completed)"
    " WHERE i.id = v.id AND v.lstatus IS NOT NULL"
    "   AND (i.last_deployment_name IS DISTINCT FROM v.dname"
    "        OR i.last_deployment_status IS DISTINCT FROM v.lstatus)"
    " RETURNING 1)"
    " SELECT (SELECT count(*) FROM tg) AS moved,"
    "        (SELECT count(*) FROM ins) AS instances";

rw_err_t rw_target_apply(rw_pg_t *pg, long long run_id,
                         const rw_target_update_t *u, size_t n, size_t *n_moved,
                         char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_pg_array_t a[13];
    PGresult *res = NULL;
    char run_s[24];
    const char *p[14];

    for (int i = 0; i < 13; i++)
        rw_pg_array_init(&a[i]);
    *n_moved = 0;
    if (n == 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        if (u[i].from != u[i].to &&
            !rw_target_edge_ok(u[i].from, u[i].to, false)) {
            rw_error(COMP,
                     "event=illegal_transition machine=target run=%lld "
                     "target=%lld from=%s to=%s",
                     run_id, u[i].target_id, rw_target_state_name(u[i].from),
                     rw_target_state_name(u[i].to));
            err = rw_err_set(errstr, errlen, RW_ERR_STATE,
                             "target %lld: %s -> %s is not a legal transition",
                             u[i].target_id, rw_target_state_name(u[i].from),
                             rw_target_state_name(u[i].to));
            goto out;
        }
        rw_pg_array_add_ll(&a[0], u[i].target_id);
        rw_pg_array_add_str(&a[1], rw_target_state_name(u[i].from));
        rw_pg_array_add_str(&a[2], rw_target_state_name(u[i].to));
        rw_pg_array_add_str(&a[3], u[i].lagoon_status);
        rw_pg_array_add_str(&a[4], u[i].deployment_name);
        rw_pg_array_add_str(&a[5], u[i].error);
        rw_pg_array_add_str(&a[6], u[i].health ? "true" : "false");
        rw_pg_array_add_str(&a[7], u[i].route);
        rw_pg_array_add_ll(&a[8], u[i].health_attempts);
        rw_pg_array_add_ll(&a[9], u[i].health_next_ms);
        rw_pg_array_add_str(&a[10], u[i].health_error);
        rw_pg_array_add_ll(&a[11], u[i].instance_id);
        if (u[i].lagoon_status && u[i].completed > 0) {
            char ts[32];
            struct tm tm;
            gmtime_r(&u[i].completed, &tm);
            strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S+00", &tm);
            rw_pg_array_add_str(&a[12], ts);
        } else {
            rw_pg_array_add_str(&a[12], NULL);
        }
    }
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    p[0] = run_s;
    for (int i = 0; i < 13; i++) {
        p[i + 1] = rw_pg_array_finish(&a[i]);
        if (!p[i + 1]) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    err = rw_pg_exec(pg, target_apply_sql, 14, p, &res, errstr, errlen);
    if (err)
        goto out;
    *n_moved = (size_t)rw_pg_ll(res, 0, "moved", 0);
out:
    PQclear(res);
    for (int i = 0; i < 13; i++)
        rw_pg_array_free(&a[i]);
    return err;
}

/*
 * One statement moves the chunks and writes their audit rows, so an audit
 * row exists exactly when a chunk moved. The columns each edge owns:
 * triggering takes the new attempt (guarded: the row must be one below),
 * the bulk name and sent_at; triggered takes the bulk id and starts
 * polling; pending drops the bulk of the previous attempt but keeps the
 * attempt number, so the next trigger is a new attempt with a new name;
 * triggering -> pending counts a send that never reached Lagoon, and a
 * re-opening (done or failed -> pending) starts that count again.
 *
 * Two texts: the chunks named (found through (run, chunk), the unique key)
 * or every chunk of the run. The state is tested as "(...) IS TRUE", which
 * no index serves and no partial index predicate follows from: with a
 * plain "c.state = 'triggered'" the planner read every triggered chunk of
 * every run through run_chunks_open_age_idx (state, updated_at), and with
 * the chunk list optional it read every chunk of the run (200 rows per
 * call on the benchmark, a whole run's chunks for every chunk a poller
 * finished).
 */
#define CHUNK_SQL(which_chunks)                                                \
    "WITH u AS ("                                                              \
    " UPDATE run_chunks c SET state = $4::text, updated_at = now(),"           \
    "  attempt = CASE WHEN $4::text = 'triggering' THEN $6::int"               \
    "            ELSE c.attempt END,"                                          \
    "  bulk_name = CASE WHEN $4::text = 'triggering' THEN $7::text"            \
    "              WHEN $4::text = 'pending' THEN NULL ELSE c.bulk_name END,"  \
    "  sent_at = CASE WHEN $4::text = 'triggering' THEN clock_timestamp()"     \
    "            WHEN $4::text = 'pending' THEN NULL ELSE c.sent_at END,"      \
    "  bulk_id = CASE WHEN $4::text = 'triggered' THEN $8::text"               \
    "            WHEN $4::text = 'pending' THEN NULL ELSE c.bulk_id END,"      \
    "  triggered_at = CASE WHEN $4::text = 'triggered' THEN now()"             \
    "                 ELSE c.triggered_at END,"                                \
    "  poll_attempts = CASE WHEN $4::text = 'triggered' THEN 1"                \
    "                  WHEN $4::text = 'pending' THEN 0"                       \
    "                  ELSE c.poll_attempts END,"                              \
    "  last_error = CASE WHEN $4::text IN ('failed', 'pending', 'triggering')" \
    "               THEN $10::text ELSE c.last_error END,"                     \
    "  finished_at = CASE WHEN $4::text IN ('done', 'failed') THEN now()"      \
    "                ELSE NULL END,"                                           \
    "  replay_id = COALESCE($11::bigint, c.replay_id),"                        \
    "  send_failures = CASE WHEN $3::text = 'triggering'"                      \
    "                       AND $4::text = 'pending' THEN c.send_failures + 1" \
    "                  WHEN $4::text = 'pending' THEN 0"                       \
    "                  ELSE c.send_failures END,"                              \
    "  not_before = NULL"                                                      \
    " WHERE c.run_id = $1::bigint AND " which_chunks                           \
    "   AND (c.state = $3::text) IS TRUE"                                      \
    "   AND ($6::int IS NULL"                                                  \
    "        OR c.attempt = CASE WHEN $4::text = 'triggering'"                 \
    "                            THEN $6::int - 1 ELSE $6::int END)"           \
    "   AND ($9::int IS NULL OR c.poll_attempts = $9::int)"                    \
    " RETURNING c.run_id, c.chunk)"                                            \
    " INSERT INTO chunk_transitions (run_id, chunk, from_state, to_state,"     \
    "                                reason)"                                  \
    " SELECT run_id, chunk, $3::text, $4::text, $5::text FROM u"               \
    " RETURNING chunk"

static const char chunk_sql_some[] = CHUNK_SQL("c.chunk = ANY ($2::int[])");
static const char chunk_sql_all[] = CHUNK_SQL("$2::int[] IS NULL");

rw_err_t rw_chunk_transition(rw_pg_t *pg, long long run_id, const int *chunks,
                             size_t n, rw_chunk_state_t from,
                             rw_chunk_state_t to, bool retry,
                             const rw_chunk_change_t *ch, const char *reason,
                             size_t *n_moved, char *errstr, size_t errlen)
{
    static const rw_chunk_change_t none = RW_CHUNK_CHANGE_INIT;
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    rw_pg_array_t a;
    char run_s[24], att_s[16], poll_s[16], replay_s[24];
    const char *p[11];

    rw_pg_array_init(&a);
    if (n_moved)
        *n_moved = 0;
    if (!ch)
        ch = &none;
    if (!pg || (chunks && n == 0))
        goto out;
    if (!rw_chunk_edge_ok(from, to, retry)) {
        rw_warn(COMP,
                "event=illegal_transition machine=chunk run=%lld from=%s "
                "to=%s retry=%d",
                run_id, rw_chunk_state_name(from), rw_chunk_state_name(to),
                (int)retry);
        err = rw_err_set(errstr, errlen, RW_ERR_STATE,
                         "chunks of run %lld: %s -> %s is not a legal "
                         "transition%s",
                         run_id, rw_chunk_state_name(from),
                         rw_chunk_state_name(to),
                         retry ? "" : " (without retry)");
        goto out;
    }
    if (to == RW_CHUNK_TRIGGERING && (ch->attempt < 1 || !ch->bulk_name)) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "entering triggering needs an attempt and a name");
        goto out;
    }
    if (to == RW_CHUNK_TRIGGERED && !ch->bulk_id) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "entering triggered needs a bulk id");
        goto out;
    }
    for (size_t i = 0; chunks && i < n; i++)
        rw_pg_array_add_ll(&a, chunks[i]);
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    snprintf(att_s, sizeof(att_s), "%d", ch->attempt);
    snprintf(poll_s, sizeof(poll_s), "%d", ch->poll_attempts);
    snprintf(replay_s, sizeof(replay_s), "%lld", ch->replay_id);
    p[0] = run_s;
    p[1] = chunks ? rw_pg_array_finish(&a) : NULL;
    p[2] = rw_chunk_state_name(from);
    p[3] = rw_chunk_state_name(to);
    p[4] = reason;
    p[5] = ch->attempt >= 0 ? att_s : NULL;
    p[6] = ch->bulk_name;
    p[7] = ch->bulk_id;
    p[8] = ch->poll_attempts >= 0 ? poll_s : NULL;
    p[9] = ch->error;
    p[10] = ch->replay_id > 0 ? replay_s : NULL;
    if (chunks && !p[1]) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "chunk array");
        goto out;
    }
    err = rw_pg_exec(pg, chunks ? chunk_sql_some : chunk_sql_all, 11, p, &res,
                     errstr, errlen);
    if (err)
        goto out;
    if (n_moved)
        *n_moved = (size_t)PQntuples(res);
    rw_debug(COMP,
             "event=chunk_transition run=%lld from=%s to=%s retry=%d "
             "moved=%d",
             run_id, rw_chunk_state_name(from), rw_chunk_state_name(to),
             (int)retry, PQntuples(res));
out:
    PQclear(res);
    rw_pg_array_free(&a);
    return err;
}

rw_err_t rw_chunk_transition_one(rw_pg_t *pg, long long run_id, int chunk,
                                 rw_chunk_state_t from, rw_chunk_state_t to,
                                 bool retry, const rw_chunk_change_t *ch,
                                 const char *reason, char *errstr,
                                 size_t errlen)
{
    size_t moved = 0;
    rw_err_t err = rw_chunk_transition(pg, run_id, &chunk, 1, from, to, retry,
                                       ch, reason, &moved, errstr, errlen);
    if (!err && moved != 1)
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                         "chunk %d of run %lld is no longer %s", chunk, run_id,
                         rw_chunk_state_name(from));
    return err;
}

/* The two edges a combined statement takes, by the same tables. */
static rw_err_t edges_ok(rw_target_state_t tf, rw_target_state_t tt,
                         rw_chunk_state_t cf, rw_chunk_state_t ct,
                         const char *what, char *errstr, size_t errlen)
{
    if (rw_target_edge_ok(tf, tt, false) && rw_chunk_edge_ok(cf, ct, false))
        return RW_OK;
    return rw_err_set(errstr, errlen, RW_ERR_STATE,
                      "%s: not a legal transition", what);
}

/* "1,2,3" (string_agg) -> ascending ids; NULL or "" -> none. */
static rw_err_t parse_ids(const char *list, long long **ids, size_t *n,
                          char *errstr, size_t errlen)
{
    size_t cap = 1;
    long long *v;
    const char *p;

    *ids = NULL;
    *n = 0;
    if (!list || !*list)
        return RW_OK;
    for (p = list; *p; p++)
        cap += *p == ',';
    v = malloc(cap * sizeof(*v));
    if (!v)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "id list");
    for (p = list; *p;) {
        char *end = NULL;
        v[(*n)++] = strtoll(p, &end, 10);
        p = *end == ',' ? end + 1 : end;
        if (end == p && *p) /* not a number: stop rather than loop */
            break;
    }
    qsort(v, *n, sizeof(*v), cmp_ll);
    *ids = v;
    return RW_OK;
}

/*
 * The worker's claim as one statement. t0 locks the chunk's targets still
 * pending, then c0 the chunk row (targets before the chunk, the order
 * rw_control_abort takes them in: no deadlock between them; the sub-select
 * of t0 in c0's condition is what runs t0 first), and cp keeps it if it is
 * still pending at the attempt before this one (checked on the locked row,
 * which is the newest version); l locks the throttle lease if it is still
 * valid. Only with the chunk and the lease do the targets move pending ->
 * claimed, and only if at least one did does the chunk move pending ->
 * triggering (it is locked: the guard cannot fail in between, so ch finds
 * it by its key alone) with its audit row, and the lease is settled. The
 * columns are the ones target_sql and chunk_sql write for these two edges.
 *
 * Every lookup names a key that only one index serves: (run, chunk) for
 * the chunk, the chunk's own targets through (run, chunk). A state in the
 * chunk's lookup would let the planner read every pending chunk through
 * run_chunks_open_age_idx (state, updated_at) instead, which it does on
 * tables without statistics (a first rollout): 750 rows read per claim.
 */
static const char claim_sql[] =
    "WITH t0 AS ("
    " SELECT t.id FROM run_targets t"
    " WHERE t.id = ANY ($6::bigint[]) AND t.run_id = $1::bigint"
    "   AND t.chunk = $2::int AND t.state = 'pending'"
    " ORDER BY t.id FOR UPDATE),"
    " c0 AS ("
    " SELECT c.id, c.state, c.attempt FROM run_chunks c"
    " WHERE c.run_id = $1::bigint AND c.chunk = $2::int"
    "   AND (SELECT count(*) FROM t0) >= 0"
    " FOR UPDATE),"
    " cp AS ("
    " SELECT id FROM c0"
    " WHERE state = 'pending' AND attempt = $3::int - 1),"
    " l AS ("
    " SELECT id FROM throttle_leases"
    " WHERE id = $7::bigint AND expires_at > clock_timestamp()"
    " FOR UPDATE),"
    " go AS ("
    " SELECT 1 FROM cp WHERE $7::bigint IS NULL OR EXISTS (SELECT 1 FROM l)),"
    " tg AS ("
    " UPDATE run_targets AS t SET state = 'claimed', error = NULL,"
    "   updated_at = now(), attempt = t.attempt + 1, bulk_id = NULL,"
    "   claimed_at = now(), health_attempts = 0, health_next_at = NULL,"
    "   health_error = NULL, route = NULL, finished_at = NULL"
    " FROM t0"
    " WHERE t.id = t0.id AND t.state = 'pending'"
    "   AND EXISTS (SELECT 1 FROM go)"
    " RETURNING t.id),"
    " ch AS ("
    " UPDATE run_chunks c SET state = 'triggering', attempt = $3::int,"
    "   updated_at = now(),"
    "   bulk_name = $4::text, sent_at = clock_timestamp(), last_error = NULL,"
    "   finished_at = NULL, not_before = NULL"
    " FROM cp"
    " WHERE c.id = cp.id AND EXISTS (SELECT 1 FROM tg)"
    " RETURNING c.run_id, c.chunk),"
    " ct AS ("
    " INSERT INTO chunk_transitions (run_id, chunk, from_state, to_state,"
    "                                reason)"
    " SELECT run_id, chunk, 'pending', 'triggering', $5::text FROM ch"
    " RETURNING 1),"
    " ld AS ("
    " DELETE FROM throttle_leases"
    " WHERE id IN (SELECT id FROM l) AND EXISTS (SELECT 1 FROM ch)"
    " RETURNING 1)"
    " SELECT (SELECT count(*) FROM cp) AS chunk_ok,"
    "        $7::bigint IS NULL OR (SELECT count(*) FROM l) > 0 AS lease_ok,"
    "        (SELECT count(*) FROM ch) AS moved,"
    "        (SELECT count(*) FROM ld) AS settled,"
    "        (SELECT string_agg(id::text, ',') FROM tg) AS claimed";

rw_err_t rw_chunk_claim(rw_pg_t *pg, long long run_id, int chunk, int attempt,
                        const char *bulk_name, const char *reason,
                        const long long *target_ids, size_t n,
                        long long lease_id, rw_chunk_claim_result_t *out,
                        char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    rw_pg_array_t ids;
    char run_s[24], chunk_s[16], att_s[16], lease_s[24];
    const char *p[7];

    memset(out, 0, sizeof(*out));
    rw_pg_array_init(&ids);
    if (!pg || !target_ids || n == 0 || attempt < 1 || !bulk_name) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "claim: targets, an attempt and a name are needed");
        goto out;
    }
    err = edges_ok(RW_TARGET_PENDING, RW_TARGET_CLAIMED, RW_CHUNK_PENDING,
                   RW_CHUNK_TRIGGERING, "claim", errstr, errlen);
    if (err)
        goto out;
    for (size_t i = 0; i < n; i++)
        rw_pg_array_add_ll(&ids, target_ids[i]);
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", chunk);
    snprintf(att_s, sizeof(att_s), "%d", attempt);
    snprintf(lease_s, sizeof(lease_s), "%lld", lease_id);
    p[0] = run_s;
    p[1] = chunk_s;
    p[2] = att_s;
    p[3] = bulk_name;
    p[4] = reason;
    p[5] = rw_pg_array_finish(&ids);
    p[6] = lease_id > 0 ? lease_s : NULL;
    if (!p[5]) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "target id array");
        goto out;
    }
    err = rw_pg_exec(pg, claim_sql, 7, p, &res, errstr, errlen);
    if (err)
        goto out;
    out->chunk_ok = rw_pg_ll(res, 0, "chunk_ok", 0) > 0;
    out->lease_ok = rw_pg_bool(res, 0, "lease_ok", 0);
    out->moved = rw_pg_ll(res, 0, "moved", 0) > 0;
    err = parse_ids(rw_pg_str(res, 0, "claimed"), &out->claimed,
                    &out->n_claimed, errstr, errlen);
    if (err)
        goto out;
    if (out->moved && lease_id > 0 && rw_pg_ll(res, 0, "settled", 0) != 1)
        /* locked by l in this very statement: cannot happen */
        rw_error(COMP, "event=claim_lease_unsettled run=%lld chunk=%d", run_id,
                 chunk);
    rw_debug(COMP,
             "event=chunk_claim run=%lld chunk=%d attempt=%d asked=%zu "
             "claimed=%zu moved=%d chunk_ok=%d lease_ok=%d",
             run_id, chunk, attempt, n, out->n_claimed, (int)out->moved,
             (int)out->chunk_ok, (int)out->lease_ok);
out:
    PQclear(res);
    rw_pg_array_free(&ids);
    return err;
}

/*
 * An accepted bulk as one statement: the chunk triggering -> triggered
 * (guarded by state and attempt) with its audit row, and only if it moved:
 * its claimed targets -> triggered with the bulk id, the instances'
 * trigger bookkeeping and the first poll event in the outbox. The columns
 * are the ones target_sql and chunk_sql write for these two edges.
 */
static const char triggered_sql[] =
    "WITH ch AS ("
    " UPDATE run_chunks c SET state = 'triggered', bulk_id = $4::text,"
    "   updated_at = now(),"
    "   triggered_at = now(), poll_attempts = 1, finished_at = NULL,"
    "   not_before = NULL"
    " WHERE c.run_id = $1::bigint AND c.chunk = $2::int"
    "   AND c.state = 'triggering' AND c.attempt = $3::int"
    " RETURNING c.run_id, c.chunk),"
    " ct AS ("
    " INSERT INTO chunk_transitions (run_id, chunk, from_state, to_state,"
    "                                reason)"
    " SELECT run_id, chunk, 'triggering', 'triggered', $5::text FROM ch"
    " RETURNING 1),"
    " tg AS ("
    " UPDATE run_targets AS t SET state = 'triggered', error = NULL,"
    "   updated_at = now(), bulk_id = $4::text, triggered_at = now(),"
    "   finished_at = NULL"
    " FROM (SELECT DISTINCT unnest($6::bigint[]) AS id) AS ids"
    " WHERE t.id = ids.id AND t.run_id = $1::bigint AND t.state = 'claimed'"
    "   AND EXISTS (SELECT 1 FROM ch)"
    " RETURNING t.id),"
    " ins AS ("
    " UPDATE app_instances i SET deployment_run_id = $1::bigint,"
    "   last_deploy_triggered_at = now(), updated_at = now(),"
    "   next_redeploy_at = CASE WHEN u.next IS NULL THEN i.next_redeploy_at"
    "                           ELSE to_timestamp(u.next) END"
    " FROM unnest($7::bigint[], $8::bigint[]) AS u(id, next)"
    " WHERE i.id = u.id AND EXISTS (SELECT 1 FROM ch)"
    " RETURNING 1),"
    " ob AS ("
    " INSERT INTO outbox (topic, msg_key, payload)"
    " SELECT 'poll', $9::text, $10::text FROM ch"
    " RETURNING id)"
    " SELECT (SELECT count(*) FROM ch) AS moved,"
    "        (SELECT count(*) FROM tg) AS targets,"
    "        (SELECT id FROM ob) AS outbox_id";

rw_err_t
rw_chunk_mark_triggered(rw_pg_t *pg, long long run_id, int chunk, int attempt,
                        const char *bulk_id, const char *reason,
                        const long long *target_ids,
                        const long long *instance_ids, const long long *next_s,
                        size_t n, const char *poll_key, const char *poll_json,
                        long long *outbox_id, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    rw_pg_array_t a_t, a_i, a_n;
    char run_s[24], chunk_s[16], att_s[16];
    const char *p[10];
    long long moved, targets;

    *outbox_id = 0;
    rw_pg_array_init(&a_t);
    rw_pg_array_init(&a_i);
    rw_pg_array_init(&a_n);
    if (!pg || !bulk_id || !poll_key || !poll_json ||
        (n > 0 && (!target_ids || !instance_ids || !next_s))) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "triggered: a bulk id and the poll event are needed");
        goto out;
    }
    err = edges_ok(RW_TARGET_CLAIMED, RW_TARGET_TRIGGERED, RW_CHUNK_TRIGGERING,
                   RW_CHUNK_TRIGGERED, "triggered", errstr, errlen);
    if (err)
        goto out;
    for (size_t i = 0; i < n; i++) {
        rw_pg_array_add_ll(&a_t, target_ids[i]);
        rw_pg_array_add_ll(&a_i, instance_ids[i]);
        if (next_s[i] > 0)
            rw_pg_array_add_ll(&a_n, next_s[i]);
        else
            rw_pg_array_add_str(&a_n, NULL); /* no cadence to keep */
    }
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", chunk);
    snprintf(att_s, sizeof(att_s), "%d", attempt);
    p[0] = run_s;
    p[1] = chunk_s;
    p[2] = att_s;
    p[3] = bulk_id;
    p[4] = reason;
    p[5] = rw_pg_array_finish(&a_t);
    p[6] = rw_pg_array_finish(&a_i);
    p[7] = rw_pg_array_finish(&a_n);
    p[8] = poll_key;
    p[9] = poll_json;
    if (!p[5] || !p[6] || !p[7]) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "id arrays");
        goto out;
    }
    err = rw_pg_exec(pg, triggered_sql, 10, p, &res, errstr, errlen);
    if (err)
        goto out;
    moved = rw_pg_ll(res, 0, "moved", 0);
    targets = rw_pg_ll(res, 0, "targets", 0);
    if (moved != 1) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                         "chunk %d of run %lld is no longer triggering at "
                         "attempt %d",
                         chunk, run_id, attempt);
        rw_info(COMP,
                "event=transition_conflict machine=chunk run=%lld chunk=%d "
                "from=triggering to=triggered",
                run_id, chunk);
        goto out;
    }
    *outbox_id = rw_pg_ll(res, 0, "outbox_id", 0);
    rw_debug(COMP,
             "event=chunk_triggered_recorded run=%lld chunk=%d targets=%lld "
             "asked=%zu",
             run_id, chunk, targets, n);
out:
    PQclear(res);
    rw_pg_array_free(&a_t);
    rw_pg_array_free(&a_i);
    rw_pg_array_free(&a_n);
    return err;
}

/*
 * One chunk's bookkeeping as a one-row conditional UPDATE whose parameters
 * are run ($1), chunk ($2), attempt ($3, when >= 0) and text ($4, when
 * ntext); no row is RW_ERR_CONFLICT.
 */
static rw_err_t chunk_one(rw_pg_t *pg, const char *sql, long long run_id,
                          int chunk, int attempt, int ntext, const char *text,
                          const char *what, char *errstr, size_t errlen)
{
    char run_s[24], chunk_s[16], att_s[16];
    const char *p[4] = {run_s, chunk_s, att_s, text};
    PGresult *res = NULL;
    rw_err_t err;

    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", chunk);
    snprintf(att_s, sizeof(att_s), "%d", attempt);
    err = rw_pg_exec(pg, sql, attempt >= 0 ? 3 + ntext : 2, p, &res, errstr,
                     errlen);
    if (!err && atoll(PQcmdTuples(res)) != 1)
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT, "%s: chunk changed",
                         what);
    PQclear(res);
    return err;
}

rw_err_t rw_chunk_poll_step(rw_pg_t *pg, long long run_id, int chunk,
                            int attempt, long long lagoon_read_ago_ms,
                            char *errstr, size_t errlen)
{
    /* the read's own time, not the commit's: checks run in between */
    static const char sql[] =
        "UPDATE run_chunks SET poll_attempts = $3::int + 1, updated_at = now(),"
        "       lagoon_read_at = CASE WHEN $4::bigint >= 0"
        "         THEN now() - $4::bigint * interval '1 millisecond'"
        "         ELSE lagoon_read_at END"
        " WHERE run_id = $1::bigint AND chunk = $2::int"
        "   AND state = 'triggered' AND poll_attempts = $3::int";
    char ago_s[24];

    snprintf(ago_s, sizeof(ago_s), "%lld",
             lagoon_read_ago_ms < 0 ? -1 : lagoon_read_ago_ms);
    return chunk_one(pg, sql, run_id, chunk, attempt, 1, ago_s, "poll step",
                     errstr, errlen);
}

rw_err_t rw_chunk_touch(rw_pg_t *pg, long long run_id, int chunk, char *errstr,
                        size_t errlen)
{
    static const char sql[] = "UPDATE run_chunks SET updated_at = now()"
                              " WHERE run_id = $1::bigint AND chunk = $2::int";
    return chunk_one(pg, sql, run_id, chunk, -1, 0, NULL, "touch", errstr,
                     errlen);
}

rw_err_t rw_chunk_note_error(rw_pg_t *pg, long long run_id, int chunk,
                             int attempt, const char *error, char *errstr,
                             size_t errlen)
{
    static const char sql[] =
        "UPDATE run_chunks SET last_error = $4::text"
        " WHERE run_id = $1::bigint AND chunk = $2::int"
        "   AND state = 'triggering' AND attempt = $3::int";
    return chunk_one(pg, sql, run_id, chunk, attempt, 1, error, "note error",
                     errstr, errlen);
}

rw_err_t rw_chunk_defer(rw_pg_t *pg, long long run_id, int chunk, int attempt,
                        const char *not_before, long long delay_ms,
                        const char *reason, char *errstr, size_t errlen)
{
    /* never in the past: the sweep would re-queue it at once, in a loop */
    static const char sql[] =
        "UPDATE run_chunks SET deferred_reason = $6::text,"
        "  not_before = GREATEST(COALESCE($4::timestamptz,"
        "      now() + make_interval(secs => $5::bigint / 1000.0)), now())"
        " WHERE run_id = $1::bigint AND chunk = $2::int"
        "   AND state = 'pending' AND attempt = $3::int";
    char run_s[24], chunk_s[16], att_s[16], delay_s[24];
    const char *p[6] = {run_s, chunk_s, att_s, not_before, delay_s, reason};
    PGresult *res = NULL;
    rw_err_t err = RW_OK;

    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", chunk);
    snprintf(att_s, sizeof(att_s), "%d", attempt);
    snprintf(delay_s, sizeof(delay_s), "%lld", delay_ms > 0 ? delay_ms : 0);
    err = rw_pg_exec(pg, sql, 6, p, &res, errstr, errlen);
    if (!err && atoll(PQcmdTuples(res)) != 1)
        err =
            rw_err_set(errstr, errlen, RW_ERR_CONFLICT, "defer: chunk changed");
    PQclear(res);
    return err;
}

rw_err_t rw_chunk_undefer(rw_pg_t *pg, long long run_id, int chunk,
                          char *errstr, size_t errlen)
{
    static const char sql[] =
        "UPDATE run_chunks SET not_before = NULL"
        " WHERE run_id = $1::bigint AND chunk = $2::int"
        "   AND state = 'pending' AND not_before <= now()";
    return chunk_one(pg, sql, run_id, chunk, -1, 0, NULL, "undefer", errstr,
                     errlen);
}

/*
 * The wave, the run's current_wave (entering running) and the audit row in
 * one statement: the audit row and the pointer move exactly when the wave
 * did. A data-modifying CTE runs whether or not the outer query reads it.
 */
static const char wave_sql[] =
    "WITH u AS ("
    " UPDATE run_waves w SET state = $4::text, updated_at = now(),"
    "  not_before = CASE WHEN $4::text = 'baking'"
    "               THEN now() + make_interval(secs => $5::bigint)"
    "               ELSE w.not_before END,"
    "  started_at = CASE WHEN $4::text = 'running'"
    "               THEN COALESCE(w.started_at, now()) ELSE w.started_at END,"
    "  finished_at = CASE WHEN $4::text IN ('done', 'cancelled') THEN now()"
    "                ELSE w.finished_at END,"
    "  succeeded_count = CASE WHEN $4::text = 'done' THEN $6::int"
    "                    ELSE w.succeeded_count END,"
    "  failed_count = CASE WHEN $4::text = 'done' THEN $7::int"
    "                 ELSE w.failed_count END"
    " WHERE w.run_id = $1::bigint AND w.wave = $2::int AND w.state = $3::text"
    " RETURNING w.run_id, w.wave),"
    " cur AS ("
    " UPDATE deployment_runs r SET current_wave = u.wave FROM u"
    " WHERE $4::text = 'running' AND r.id = u.run_id RETURNING r.id)"
    " INSERT INTO wave_transitions (run_id, wave, from_state, to_state,"
    "                               reason)"
    " SELECT run_id, wave, $3::text, $4::text, $8::text FROM u"
    " RETURNING wave";

rw_err_t rw_wave_transition(rw_pg_t *pg, long long run_id, int wave,
                            rw_wave_state_t from, rw_wave_state_t to,
                            long long bake_s, long long succeeded,
                            long long failed, const char *reason, char *errstr,
                            size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char run_s[24], wave_s[16], bake_s_s[24], ok_s[24], failed_s[24];
    char quoted[256];
    const char *p[8] = {run_s,
                        wave_s,
                        rw_wave_state_name(from),
                        rw_wave_state_name(to),
                        bake_s_s,
                        ok_s,
                        failed_s,
                        reason};

    if (!pg)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG, "pg: NULL");
    if (!rw_wave_edge_ok(from, to, false)) {
        rw_warn(COMP,
                "event=illegal_transition machine=wave run=%lld wave=%d "
                "from=%s to=%s",
                run_id, wave, rw_wave_state_name(from), rw_wave_state_name(to));
        return rw_err_set(errstr, errlen, RW_ERR_STATE,
                          "wave %d of run %lld: %s -> %s is not a legal "
                          "transition",
                          wave, run_id, rw_wave_state_name(from),
                          rw_wave_state_name(to));
    }
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    snprintf(wave_s, sizeof(wave_s), "%d", wave);
    snprintf(bake_s_s, sizeof(bake_s_s), "%lld", bake_s > 0 ? bake_s : 0);
    snprintf(ok_s, sizeof(ok_s), "%lld", succeeded > 0 ? succeeded : 0);
    snprintf(failed_s, sizeof(failed_s), "%lld", failed > 0 ? failed : 0);
    err = rw_pg_exec(pg, wave_sql, 8, p, &res, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(res) == 0) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                         "wave %d of run %lld is no longer %s", wave, run_id,
                         rw_wave_state_name(from));
        goto out;
    }
    rw_info(COMP,
            "event=wave_transition run=%lld wave=%d from=%s to=%s reason=%s",
            run_id, wave, rw_wave_state_name(from), rw_wave_state_name(to),
            rw_log_quote(quoted, sizeof(quoted), reason ? reason : ""));
out:
    PQclear(res);
    return err;
}
