/*
 * rw_progress: chunk ends and run finalization; every statement covers a
 * chunk or a run, never one row per instance.
 */
#include "rw_progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_log.h"
#include "rw_strategy.h"
#include "rw_waves.h"

static const char SQL_LOCK_RUN[] =
    "SELECT status,"
    "  (SELECT count(*) FROM run_chunks c"
    "    WHERE c.run_id = r.id AND c.state NOT IN ('done', 'failed'))"
    "   AS open_chunks"
    " FROM deployment_runs r WHERE r.id = $1::bigint FOR NO KEY UPDATE OF r";

/* The counts follow the run-count rule (RW_TARGET_COUNTS_SQL). */
static const char SQL_COUNT[] =
    "SELECT count(*) AS total, " RW_TARGET_COUNTS_SQL ","
    "  count(*) FILTER (WHERE state = 'pending'"
    "                      OR state IN " RW_TARGET_IN_FLIGHT_SQL ") AS open"
    " FROM run_targets WHERE run_id = $1::bigint";

static const char SQL_STORE_COUNTS[] =
    "UPDATE deployment_runs SET total_count = $2::int,"
    "  succeeded_count = $3::int, failed_count = $4::int,"
    "  skipped_count = $5::int"
    " WHERE id = $1::bigint";

static rw_err_t store_counts(rw_pg_t *pg, const char *run_s, long long total,
                             long long ok, long long failed, long long skipped,
                             char *errstr, size_t errlen)
{
    char s_total[24], s_ok[24], s_failed[24], s_skipped[24];
    const char *p[5] = {run_s, s_total, s_ok, s_failed, s_skipped};

    snprintf(s_total, sizeof(s_total), "%lld", total);
    snprintf(s_ok, sizeof(s_ok), "%lld", ok);
    snprintf(s_failed, sizeof(s_failed), "%lld", failed);
    snprintf(s_skipped, sizeof(s_skipped), "%lld", skipped);
    return rw_pg_exec(pg, SQL_STORE_COUNTS, 5, p, NULL, errstr, errlen);
}

rw_err_t rw_progress_finalize(rw_pg_t *pg, long long run_id, bool *finalized,
                              rw_run_state_t *outcome, char *errstr,
                              size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL, *cnt = NULL;
    char run_s[24];
    const char *p1[1] = {run_s};
    int status;
    long long total = 0, ok = 0, failed = 0, skipped = 0, open = 0;
    rw_run_state_t to = RW_RUN_COMPLETED;

    *finalized = false;
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    err = rw_pg_begin(pg, errstr, errlen);
    if (err)
        goto out;
    err = rw_pg_exec(pg, SQL_LOCK_RUN, 1, p1, &res, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(res) != 1) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND, "run %lld not found",
                         run_id);
        goto out;
    }
    status = rw_run_state_parse(rw_pg_str(res, 0, "status"));
    if (status == RW_RUN_PENDING || status == RW_RUN_RUNNING ||
        status == RW_RUN_PAUSED) {
        /* thresholds and the end of a wave, under this same lock */
        rw_run_state_t st = (rw_run_state_t)status;
        bool hold = false;
        err = rw_waves_check(pg, run_id, &st, &hold, errstr, errlen);
        if (err)
            goto out;
        status = (int)st;
        if (hold)
            goto commit;
    }
    if (rw_pg_ll(res, 0, "open_chunks", 1) > 0)
        goto commit;
    if (status == RW_RUN_CANCELLED) {
        /* builds running at abort time have ended: refresh the counts */
        err = rw_pg_exec(pg, SQL_COUNT, 1, p1, &cnt, errstr, errlen);
        if (err)
            goto out;
        total = rw_pg_ll(cnt, 0, "total", 0);
        ok = rw_pg_ll(cnt, 0, "succeeded", 0);
        failed = rw_pg_ll(cnt, 0, "failed", 0);
        skipped = rw_pg_ll(cnt, 0, "skipped", 0);
        err =
            store_counts(pg, run_s, total, ok, failed, skipped, errstr, errlen);
        if (err)
            goto out;
        goto commit;
    }
    if (status != RW_RUN_PENDING && status != RW_RUN_RUNNING &&
        status != RW_RUN_PAUSED)
        goto commit;
    err = rw_pg_exec(pg, SQL_COUNT, 1, p1, &cnt, errstr, errlen);
    if (err)
        goto out;
    total = rw_pg_ll(cnt, 0, "total", 0);
    ok = rw_pg_ll(cnt, 0, "succeeded", 0);
    failed = rw_pg_ll(cnt, 0, "failed", 0);
    skipped = rw_pg_ll(cnt, 0, "skipped", 0);
    open = rw_pg_ll(cnt, 0, "open", 0);
    if (open > 0) {
        /* every chunk is over but a target is not: a bug, never hide it */
        rw_error("progress",
                 "event=finalize_refused run_id=%lld open_targets=%lld", run_id,
                 open);
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                         "run %lld: chunks closed but %lld targets open",
                         run_id, open);
        goto out;
    }
    err = store_counts(pg, run_s, total, ok, failed, skipped, errstr, errlen);
    if (err)
        goto out;
    to = rw_run_outcome(ok, failed);
    {
        char reason[96];
        snprintf(reason, sizeof(reason),
                 "finalized: %lld succeeded, %lld failed, %lld skipped", ok,
                 failed, skipped);
        err = rw_run_transition(pg, run_id, (rw_run_state_t)status, to, false,
                                reason, errstr, errlen);
        if (err)
            goto out;
    }
    *finalized = true;
    if (outcome)
        *outcome = to;
commit:
    err = rw_pg_commit(pg, errstr, errlen);
    if (err) {
        *finalized = false;
        goto out;
    }
    if (*finalized)
        rw_info("progress",
                "event=run_finalized run_id=%lld outcome=%s total=%lld "
                "succeeded=%lld failed=%lld skipped=%lld",
                run_id, rw_run_state_name(to), total, ok, failed, skipped);
out:
    if (err && rw_pg_in_tx(pg))
        rw_pg_rollback(pg, NULL, 0);
    PQclear(res);
    PQclear(cnt);
    return err;
}

/*
 * What a chunk's end may change in its run, read without a lock: the
 * run's status and strategy, whether any chunk is still open and whether
 * the current wave (when one is running) still has an open chunk.
 */
static const char SQL_CHUNK_ENDED[] =
    "SELECT r.status, r.strategy,"
    "  EXISTS (SELECT 1 FROM run_chunks c WHERE c.run_id = r.id"
    "          AND c.state NOT IN ('done', 'failed')) AS run_open,"
    "  COALESCE((SELECT w.state <> 'running'"
    "              OR EXISTS (SELECT 1 FROM run_chunks c"
    "                         WHERE c.run_id = r.id"
    "                           AND c.chunk BETWEEN w.first_chunk"
    "                                           AND w.last_chunk"
    "                           AND c.state NOT IN ('done', 'failed'))"
    "            FROM run_waves w"
    "            WHERE w.run_id = r.id AND w.wave = r.current_wave),"
    "           true) AS wave_goes_on"
    " FROM deployment_runs r WHERE r.id = $1::bigint";

bool rw_progress_has_thresholds(const char *strategy_json)
{
    rw_strategy_t st;
    char serr[160];

    if (!strategy_json || !*strategy_json)
        return false;
    /* one that does not parse is stopped by rw_waves_check: offer it */
    if (rw_strategy_parse_json(strategy_json, &st, serr, sizeof(serr)))
        return true;
    return rw_strategy_has_thresholds(&st);
}

rw_err_t rw_progress_chunk_ended(rw_pg_t *pg, long long run_id, bool *finalized,
                                 char *errstr, size_t errlen)
{
    rw_err_t err;
    PGresult *res = NULL;
    char run_s[24];
    const char *p[1] = {run_s};
    int status;
    bool quiet;

    *finalized = false;
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    err = rw_pg_exec(pg, SQL_CHUNK_ENDED, 1, p, &res, errstr, errlen);
    if (err)
        return err;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                          "run %lld not found", run_id);
    }
    status = rw_run_state_parse(rw_pg_str(res, 0, "status"));
    quiet = (status == RW_RUN_PENDING || status == RW_RUN_RUNNING) &&
            rw_pg_bool(res, 0, "run_open", 0) &&
            rw_pg_bool(res, 0, "wave_goes_on", 0) &&
            !rw_progress_has_thresholds(rw_pg_str(res, 0, "strategy"));
    PQclear(res);
    if (quiet)
        return RW_OK;
    return rw_progress_finalize(pg, run_id, finalized, NULL, errstr, errlen);
}

/*
 * Open runs whose chunks are all closed, open runs whose running wave has
 * no open chunk (its end was not recorded: the process that closed the
 * last chunk died before finalizing), and cancelled runs whose counts
 * were taken while builds still ran (their last finalize was lost).
 */
static const char SQL_STRANDED[] =
    "SELECT r.id FROM deployment_runs r"
    " WHERE (r.status IN ('pending', 'running', 'paused')"
    "        OR (r.status = 'cancelled' AND r.succeeded_count"
    "            + r.failed_count + r.skipped_count < r.total_count))"
    "   AND r.created_at < now() - interval '5 seconds'"
    "   AND (NOT EXISTS (SELECT 1 FROM run_chunks c WHERE c.run_id = r.id"
    "                     AND c.state NOT IN ('done', 'failed'))"
    "        OR (r.status IN ('pending', 'running', 'paused')"
    "            AND EXISTS (SELECT 1 FROM run_waves w"
    "              WHERE w.run_id = r.id AND w.wave = r.current_wave"
    "                AND w.state = 'running'"
    "                AND NOT EXISTS (SELECT 1 FROM run_chunks c"
    "                  WHERE c.run_id = r.id"
    "                    AND c.chunk BETWEEN w.first_chunk AND w.last_chunk"
    "                    AND c.state NOT IN ('done', 'failed')))))"
    " LIMIT 100";

rw_err_t rw_progress_sweep(rw_pg_t *pg, long long *n_finalized, char *errstr,
                           size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;

    *n_finalized = 0;
    err = rw_pg_exec(pg, SQL_STRANDED, 0, NULL, &res, errstr, errlen);
    if (err)
        goto out;
    for (int i = 0; i < PQntuples(res); i++) {
        bool fin = false;
        err = rw_progress_finalize(pg, rw_pg_ll(res, i, "id", 0), &fin, NULL,
                                   errstr, errlen);
        if (err)
            goto out;
        *n_finalized += fin;
    }
out:
    PQclear(res);
    return err;
}
