/*
 * rw_waves: moves a run's waves on (see rw_waves.h). Every function but
 * rw_waves_release_due runs inside a transaction its caller holds with the
 * run row locked, so a wave end, a threshold, a release, a promote, a
 * resume and an abort of one run never interleave.
 */
#include "rw_waves.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_control.h"
#include "rw_log.h"
#include "rw_metrics.h"
#include "rw_strategy.h"

#define COMP "waves"

/*
 * The run's current wave and its open chunks (through the open-chunk
 * index): what every chunk ending reads, so it stays cheap.
 */
static const char SQL_CURRENT[] =
    "SELECT r.strategy, r.failures_accepted AS run_accepted,"
    "       w.wave, w.state, w.target_count, w.failures_accepted"
    "         AS wave_accepted, w.first_chunk, w.last_chunk,"
    "       (SELECT max(x.wave) FROM run_waves x WHERE x.run_id = r.id)"
    "         AS n_waves,"
    "       (SELECT sum(x.target_count) FROM run_waves x"
    "         WHERE x.run_id = r.id) AS planned,"
    "       (SELECT count(*) FROM run_chunks c WHERE c.run_id = r.id"
    "         AND c.state NOT IN ('done', 'failed')"
    "         AND c.chunk BETWEEN w.first_chunk AND w.last_chunk)"
    "         AS wave_open"
    " FROM deployment_runs r"
    " JOIN run_waves w ON w.run_id = r.id AND w.wave = r.current_wave"
    " WHERE r.id = $1::bigint";

/*
 * The targets of the current wave by outcome, and the run's failures as
 * the ended waves stored them plus the current wave's: one scan of the
 * wave's chunk range, only when a threshold is set or the wave ends.
 * Skipped targets carry chunk 0 but are never failures nor successes.
 */
static const char SQL_WAVE_COUNTS[] =
    "SELECT count(*) FILTER (WHERE t.state = 'succeeded') AS wave_ok,"
    "       count(*) FILTER (WHERE t.state IN ('failed', 'timed_out'))"
    "         AS wave_failed,"
    "       (SELECT COALESCE(sum(x.failed_count), 0) FROM run_waves x"
    "         WHERE x.run_id = $1::bigint AND x.wave <> $2::int"
    "           AND x.state = 'done') AS earlier_failed"
    " FROM run_targets t WHERE t.run_id = $1::bigint"
    "   AND t.chunk BETWEEN $3::int AND $4::int";

/* The pause reason also lands in last_error so `run show` needs no join. */
static const char SQL_NOTE_ERROR[] =
    "UPDATE deployment_runs SET last_error = $2 WHERE id = $1::bigint";

static void count_action(const char *action)
{
    char label[64];

    snprintf(label, sizeof(label), "action=\"%s\"", action);
    rw_metrics_add(rw_metrics_counter("rollwave_wave_actions_total",
                                      "wave engine actions: released, "
                                      "baking, paused, aborted",
                                      label),
                   1);
}

/* What a threshold and a wave end look at. */
typedef struct wave_view {
    long long wave, n_waves, n_wave, planned, open;
    long long ok, failed, run_failed;
    long long wave_accepted, run_accepted;
} wave_view_t;

/*
 * Which threshold, if any, the failures cross; the reason names it, e.g.
 * "wave 2 failures 7/120 > 5%". The accepted failures (a resume) are not
 * counted again.
 */
static bool over_threshold(const rw_strategy_t *st, const wave_view_t *v,
                           char *why, size_t len)
{
    char amount[32];

    if (st->max_failures_wave.set &&
        v->failed - v->wave_accepted >
            rw_amount_of(&st->max_failures_wave, v->n_wave)) {
        rw_amount_format(&st->max_failures_wave, amount, sizeof(amount));
        snprintf(why, len, "wave %lld failures %lld/%lld > %s", v->wave,
                 v->failed, v->n_wave, amount);
        return true;
    }
    if (st->max_failures_run.set &&
        v->run_failed - v->run_accepted >
            rw_amount_of(&st->max_failures_run, v->planned)) {
        rw_amount_format(&st->max_failures_run, amount, sizeof(amount));
        snprintf(why, len, "run failures %lld/%lld > %s", v->run_failed,
                 v->planned, amount);
        return true;
    }
    return false;
}

/* running (or pending, which has no edge to paused) -> paused. */
static rw_err_t pause_run(rw_pg_t *pg, long long run_id, rw_run_state_t *status,
                          const char *reason, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    char run_s[24];
    const char *p[2] = {run_s, reason};

    if (*status == RW_RUN_PENDING) {
        err = rw_run_transition(pg, run_id, RW_RUN_PENDING, RW_RUN_RUNNING,
                                false, "first wave under way", errstr, errlen);
        if (err)
            return err;
        *status = RW_RUN_RUNNING;
    }
    err = rw_run_transition(pg, run_id, *status, RW_RUN_PAUSED, false, reason,
                            errstr, errlen);
    if (err)
        return err;
    *status = RW_RUN_PAUSED;
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    count_action("paused");
    return rw_pg_exec(pg, SQL_NOTE_ERROR, 2, p, NULL, errstr, errlen);
}

rw_err_t rw_waves_check(rw_pg_t *pg, long long run_id, rw_run_state_t *status,
                        bool *hold, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL, *cnt = NULL;
    rw_strategy_t st;
    wave_view_t v;
    char run_s[24], why[200], reason[320], serr[160];
    const char *p[1] = {run_s};
    bool over = false, last;
    int wave;

    *hold = false;
    memset(&v, 0, sizeof(v));
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    err = rw_pg_exec(pg, SQL_CURRENT, 1, p, &res, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(res) != 1 ||
        rw_wave_state_parse(rw_pg_str(res, 0, "state")) != RW_WAVE_RUNNING)
        goto out; /* no waves, or between waves: chunk counts decide */
    v.wave = rw_pg_ll(res, 0, "wave", 1);
    v.n_waves = rw_pg_ll(res, 0, "n_waves", 1);
    v.n_wave = rw_pg_ll(res, 0, "target_count", 0);
    v.planned = rw_pg_ll(res, 0, "planned", 0);
    v.open = rw_pg_ll(res, 0, "wave_open", 0);
    v.wave_accepted = rw_pg_ll(res, 0, "wave_accepted", 0);
    v.run_accepted = rw_pg_ll(res, 0, "run_accepted", 0);
    wave = (int)v.wave;
    last = v.wave >= v.n_waves;
    if (rw_strategy_parse_json(rw_pg_str(res, 0, "strategy"), &st, serr,
                               sizeof(serr))) {
        /* stored canonical at creation: only a hand edit gets here, and
         * guessing its thresholds or bake would be worse than stopping */
        snprintf(why, sizeof(why), "strategy: %s", serr);
        rw_strategy_default(&st);
        over = true;
    }
    if (v.open == 0 || rw_strategy_has_thresholds(&st)) {
        const char *q[4] = {run_s, rw_pg_str(res, 0, "wave"),
                            rw_pg_str(res, 0, "first_chunk"),
                            rw_pg_str(res, 0, "last_chunk")};
        err = rw_pg_exec(pg, SQL_WAVE_COUNTS, 4, q, &cnt, errstr, errlen);
        if (err)
            goto out;
        v.ok = rw_pg_ll(cnt, 0, "wave_ok", 0);
        v.failed = rw_pg_ll(cnt, 0, "wave_failed", 0);
        v.run_failed = v.failed + rw_pg_ll(cnt, 0, "earlier_failed", 0);
    }
    if (!over)
        over = over_threshold(&st, &v, why, sizeof(why));
    /* the last wave's end finalizes the run: nothing left to hold back */
    if (last && v.open == 0)
        over = false;
    if (over && st.on_failure == RW_ON_FAILURE_ABORT) {
        long long n = 0;
        const char *q[2] = {run_s, reason};
        snprintf(reason, sizeof(reason), "aborted: %s", why);
        err = rw_control_abort(pg, run_id, *status, reason, &n, errstr, errlen);
        if (!err)
            err = rw_pg_exec(pg, SQL_NOTE_ERROR, 2, q, NULL, errstr, errlen);
        if (err)
            goto out;
        *status = RW_RUN_CANCELLED;
        *hold = true;
        count_action("aborted");
        rw_warn(COMP, "event=run_aborted run_id=%lld wave=%d reason=\"%s\"",
                run_id, wave, why);
        goto out;
    }
    if (over && *status != RW_RUN_PAUSED) {
        snprintf(reason, sizeof(reason), "paused: %s", why);
        err = pause_run(pg, run_id, status, reason, errstr, errlen);
        if (err)
            goto out;
        rw_warn(COMP, "event=run_paused run_id=%lld wave=%d reason=\"%s\"",
                run_id, wave, why);
    }
    if (v.open > 0) {
        *hold = true;
        goto out;
    }
    snprintf(reason, sizeof(reason),
             "wave %d over: %lld succeeded, %lld failed", wave, v.ok, v.failed);
    err = rw_wave_transition(pg, run_id, wave, RW_WAVE_RUNNING, RW_WAVE_DONE, 0,
                             v.ok, v.failed, reason, errstr, errlen);
    if (err || last)
        goto out;
    *hold = true;
    if (over) /* the next wave waits for the operator's resume */
        goto out;
    if (st.bake_s == RW_STRATEGY_BAKE_MANUAL) {
        snprintf(reason, sizeof(reason), "wave %d done: awaiting promotion",
                 wave);
        err = rw_wave_transition(pg, run_id, wave + 1, RW_WAVE_PENDING,
                                 RW_WAVE_AWAITING_PROMOTION, 0, 0, 0, reason,
                                 errstr, errlen);
    } else {
        /* a bake of 0 too goes through the sweep's release, the one path
         * that writes a wave's batches and publishes them at once */
        snprintf(reason, sizeof(reason), "wave %d done: baking %llds", wave,
                 st.bake_s);
        err = rw_wave_transition(pg, run_id, wave + 1, RW_WAVE_PENDING,
                                 RW_WAVE_BAKING, st.bake_s, 0, 0, reason,
                                 errstr, errlen);
    }
    if (!err)
        count_action("baking");
out:
    PQclear(res);
    PQclear(cnt);
    return err;
}

rw_err_t rw_waves_release(rw_pg_t *pg, long long run_id, int wave,
                          rw_wave_state_t from, const char *reason,
                          long long *n_chunks, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;

    *n_chunks = 0;
    err = rw_wave_transition(pg, run_id, wave, from, RW_WAVE_RUNNING, 0, 0, 0,
                             reason, errstr, errlen);
    if (err)
        return err;
    /* every earlier wave's chunks are closed (a wave ends only so), so the
     * pending chunks of released waves are this wave's */
    err = rw_control_queue(pg, run_id, -1, n_chunks, errstr, errlen);
    if (err)
        return err;
    count_action("released");
    rw_info(COMP, "event=wave_released run_id=%lld wave=%d chunks=%lld", run_id,
            wave, *n_chunks);
    return RW_OK;
}

static const char SQL_DUE[] =
    "SELECT w.run_id, w.wave FROM run_waves w"
    " JOIN deployment_runs r ON r.id = w.run_id"
    " WHERE w.state = 'baking' AND w.not_before <= now()"
    "   AND r.status IN ('pending', 'running')"
    " ORDER BY w.not_before LIMIT $1::bigint";

static const char SQL_LOCK_RUN[] =
    "SELECT status FROM deployment_runs WHERE id = $1::bigint"
    " FOR NO KEY UPDATE";

/* One due wave in its own transaction; *released false when it moved on. */
static rw_err_t release_one(rw_pg_t *pg, long long run_id, int wave,
                            bool *released, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char run_s[24];
    const char *p[1] = {run_s};
    long long n = 0;

    *released = false;
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    err = rw_pg_begin(pg, errstr, errlen);
    if (err)
        goto out;
    err = rw_pg_exec(pg, SQL_LOCK_RUN, 1, p, &res, errstr, errlen);
    if (err)
        goto out;
    /* paused or aborted since the selection: not now. A run still
     * pending (no trigger of its first wave reached Lagoon) goes on too */
    if (PQntuples(res) == 1 &&
        (rw_run_state_parse(rw_pg_str(res, 0, "status")) == RW_RUN_RUNNING ||
         rw_run_state_parse(rw_pg_str(res, 0, "status")) == RW_RUN_PENDING)) {
        err = rw_waves_release(pg, run_id, wave, RW_WAVE_BAKING, "bake over",
                               &n, errstr, errlen);
        if (err == RW_ERR_CONFLICT) /* released or cancelled meanwhile */
            err = RW_OK;
        else if (!err)
            *released = true;
        if (err)
            goto out;
    }
    err = rw_pg_commit(pg, errstr, errlen);
out:
    if (err && rw_pg_in_tx(pg))
        rw_pg_rollback(pg, NULL, 0);
    if (err)
        *released = false;
    PQclear(res);
    return err;
}

rw_err_t rw_waves_release_due(rw_pg_t *pg, long long limit,
                              long long *n_released, char *errstr,
                              size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char limit_s[24];
    const char *p[1] = {limit_s};

    *n_released = 0;
    snprintf(limit_s, sizeof(limit_s), "%lld", limit);
    err = rw_pg_exec(pg, SQL_DUE, 1, p, &res, errstr, errlen);
    if (err)
        goto out;
    for (int i = 0; i < PQntuples(res); i++) {
        bool released = false;
        err = release_one(pg, rw_pg_ll(res, i, "run_id", 0),
                          (int)rw_pg_ll(res, i, "wave", 0), &released, errstr,
                          errlen);
        if (err)
            goto out;
        *n_released += released;
    }
out:
    PQclear(res);
    return err;
}

/* The first wave of the run not released yet, with its state. */
static const char SQL_NEXT[] =
    "SELECT wave, state FROM run_waves WHERE run_id = $1::bigint"
    "   AND state IN ('pending', 'baking', 'awaiting_promotion')"
    " ORDER BY wave LIMIT 1";

static const char SQL_OPEN_WAVE[] =
    "SELECT wave FROM run_waves WHERE run_id = $1::bigint"
    "   AND state = 'running' LIMIT 1";

rw_err_t rw_waves_promote(rw_pg_t *pg, long long run_id, const char *reason,
                          int *wave, long long *n_chunks, char *errstr,
                          size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL, *open = NULL;
    char run_s[24];
    const char *p[1] = {run_s};
    int from;

    *wave = 0;
    *n_chunks = 0;
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    err = rw_pg_exec(pg, SQL_NEXT, 1, p, &res, errstr, errlen);
    if (!err)
        err = rw_pg_exec(pg, SQL_OPEN_WAVE, 1, p, &open, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(res) != 1) {
        err =
            rw_err_set(errstr, errlen, RW_ERR_STATE, "no wave left to promote");
        goto out;
    }
    from = rw_wave_state_parse(rw_pg_str(res, 0, "state"));
    if (from == RW_WAVE_PENDING) {
        /* a wave still running, or one a threshold holds back */
        if (PQntuples(open) == 1)
            err = rw_err_set(errstr, errlen, RW_ERR_STATE,
                             "wave %lld is still running",
                             rw_pg_ll(open, 0, "wave", 0));
        else
            err = rw_err_set(errstr, errlen, RW_ERR_STATE,
                             "wave %lld is held by a failure threshold: "
                             "resume the run instead",
                             rw_pg_ll(res, 0, "wave", 0));
        goto out;
    }
    *wave = (int)rw_pg_ll(res, 0, "wave", 0);
    err = rw_waves_release(pg, run_id, *wave, (rw_wave_state_t)from, reason,
                           n_chunks, errstr, errlen);
out:
    PQclear(res);
    PQclear(open);
    return err;
}

/*
 * The thresholds count from here: the run's failures, and the current
 * wave's, as they stand are accepted by the operator who resumes.
 */
static const char SQL_ACCEPT[] =
    "WITH f AS ("
    "  SELECT count(*) FILTER (WHERE t.state IN ('failed', 'timed_out'))"
    "           AS run_failed,"
    "         count(*) FILTER (WHERE t.state IN ('failed', 'timed_out')"
    "           AND t.chunk BETWEEN w.first_chunk AND w.last_chunk)"
    "           AS wave_failed"
    "  FROM deployment_runs r"
    "  JOIN run_waves w ON w.run_id = r.id AND w.wave = r.current_wave"
    "  JOIN run_targets t ON t.run_id = r.id"
    "  WHERE r.id = $1::bigint),"
    " w AS ("
    "  UPDATE run_waves w SET failures_accepted = f.wave_failed"
    "  FROM f, deployment_runs r"
    "  WHERE r.id = $1::bigint AND w.run_id = r.id AND w.wave = r.current_wave"
    "  RETURNING 1)"
    " UPDATE deployment_runs r SET failures_accepted = f.run_failed,"
    "   last_error = CASE WHEN r.last_error LIKE 'paused: %' THEN NULL"
    "                ELSE r.last_error END"
    " FROM f WHERE r.id = $1::bigint";

rw_err_t rw_waves_resume(rw_pg_t *pg, long long run_id, const char *reason,
                         long long *n_chunks, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL, *open = NULL;
    char run_s[24];
    const char *p[1] = {run_s};

    *n_chunks = 0;
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    err = rw_pg_exec(pg, SQL_ACCEPT, 1, p, NULL, errstr, errlen);
    if (!err)
        err = rw_pg_exec(pg, SQL_NEXT, 1, p, &res, errstr, errlen);
    if (!err)
        err = rw_pg_exec(pg, SQL_OPEN_WAVE, 1, p, &open, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(open) == 0 && PQntuples(res) == 1 &&
        rw_wave_state_parse(rw_pg_str(res, 0, "state")) == RW_WAVE_PENDING) {
        /* paused by a threshold at the end of a wave: go on with the next */
        err =
            rw_waves_release(pg, run_id, (int)rw_pg_ll(res, 0, "wave", 0),
                             RW_WAVE_PENDING, reason, n_chunks, errstr, errlen);
        goto out;
    }
    err = rw_control_queue(pg, run_id, -1, n_chunks, errstr, errlen);
out:
    PQclear(res);
    PQclear(open);
    return err;
}

static const char SQL_UNFINISHED[] =
    "SELECT wave, state FROM run_waves WHERE run_id = $1::bigint"
    "   AND state NOT IN ('done', 'cancelled') ORDER BY wave";

rw_err_t rw_waves_cancel(rw_pg_t *pg, long long run_id, const char *reason,
                         char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char run_s[24];
    const char *p[1] = {run_s};

    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    err = rw_pg_exec(pg, SQL_UNFINISHED, 1, p, &res, errstr, errlen);
    if (err)
        goto out;
    /* at most RW_STRATEGY_MAX_WAVES rows: one statement each is cheap */
    for (int i = 0; i < PQntuples(res); i++) {
        err = rw_wave_transition(
            pg, run_id, (int)rw_pg_ll(res, i, "wave", 0),
            (rw_wave_state_t)rw_wave_state_parse(rw_pg_str(res, i, "state")),
            RW_WAVE_CANCELLED, 0, 0, 0, reason, errstr, errlen);
        if (err)
            goto out;
    }
out:
    PQclear(res);
    return err;
}
