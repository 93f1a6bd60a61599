/*
 * rw_control: pause, resume, abort, retry and chunk reopening. Each verb is
 * one transaction holding the run row lock, so it cannot interleave with a
 * finalization of the same run. The lock is FOR NO KEY UPDATE: it excludes
 * other run writers but not the key-share locks that workers' foreign keys
 * to the run take, so it never waits on a trigger in progress.
 */
#include "rw_control.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_codec.h"
#include "rw_log.h"
#include "rw_state.h"
#include "rw_waves.h"

static const char SQL_LOCK_RUN[] =
    "SELECT id, status, purging_at IS NOT NULL AS purging"
    " FROM deployment_runs WHERE uuid = $1::uuid FOR NO KEY UPDATE";

static const char SQL_LOCK_RUN_ID[] =
    "SELECT id, status, purging_at IS NOT NULL AS purging"
    " FROM deployment_runs WHERE id = $1::bigint FOR NO KEY UPDATE";

static const char SQL_PENDING_FOR_QUEUE[] =
    "SELECT r.uuid::text AS run_uuid, r.store_app_id, r.variables_only,"
    "       t.chunk, c.attempt, t.instance_id, t.lagoon_project,"
    "       t.lagoon_environment"
    " FROM run_targets t"
    " JOIN run_chunks c ON c.run_id = t.run_id AND c.chunk = t.chunk"
    " JOIN deployment_runs r ON r.id = t.run_id"
    " WHERE t.run_id = $1::bigint AND c.state = 'pending'"
    "   AND ($2::int < 0 OR t.chunk = $2::int)"
    "   AND t.state = 'pending'"
    "   AND t.lagoon_project IS NOT NULL AND t.lagoon_environment IS NOT NULL"
    "   AND " RW_WAVE_RELEASED_SQL("c") " ORDER BY t.chunk, t.id";

/* A queued chunk counts as fresh for the sweep's lost-batch rule, which
 * measures from updated_at: a wave released after a long bake must not be
 * taken for lost at once. */
static const char SQL_TOUCH_QUEUED[] =
    "UPDATE run_chunks SET updated_at = now()"
    " WHERE run_id = $1::bigint AND chunk = ANY ($2::int[])"
    "   AND state = 'pending'";

static const char SQL_INSERT_OUTBOX[] =
    "INSERT INTO outbox (topic, msg_key, payload)"
    " SELECT 'batches', k, p FROM unnest($1::text[], $2::text[]) AS u(k, p)";

static const char SQL_REOPEN_CANDIDATES[] =
    "SELECT t.id, t.chunk, t.state FROM run_targets t"
    " JOIN run_chunks c ON c.run_id = t.run_id AND c.chunk = t.chunk"
    " WHERE t.run_id = $1::bigint AND ($2::int < 0 OR t.chunk = $2::int)"
    "   AND t.state IN ('failed', 'timed_out') AND t.attempt < $3::int"
    "   AND c.state IN ('done', 'failed')"
    " ORDER BY t.chunk, t.id";

static const char SQL_ABORT_TARGETS[] =
    "SELECT id FROM run_targets WHERE run_id = $1::bigint"
    "   AND state = 'pending'";

static const char SQL_COUNTS[] =
    "UPDATE deployment_runs r SET total_count = x.total,"
    "   succeeded_count = x.succeeded, failed_count = x.failed,"
    "   skipped_count = x.skipped"
    " FROM (SELECT count(*) AS total, " RW_TARGET_COUNTS_SQL
    "       FROM run_targets WHERE run_id = $1::bigint) x"
    " WHERE r.id = $1::bigint";

rw_err_t rw_control_queue(rw_pg_t *pg, long long run_id, int only_chunk,
                          long long *n_chunks, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char run_s[24], chunk_s[16];
    const char *p[2] = {run_s, chunk_s};
    rw_pg_array_t a_key, a_payload, a_chunk;
    int rows, start = 0;

    rw_pg_array_init(&a_key);
    rw_pg_array_init(&a_payload);
    rw_pg_array_init(&a_chunk);
    *n_chunks = 0;
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", only_chunk);
    /* planned at each call: the sweep re-queues from its first minutes on
     * a fresh database to a full run_targets (rw_pg_exec_replan) */
    err = rw_pg_exec_replan(pg, SQL_PENDING_FOR_QUEUE, 2, p, &res, errstr,
                            errlen);
    if (err)
        goto out;
    rows = PQntuples(res);
    while (start < rows) {
        int chunk = (int)rw_pg_ll(res, start, "chunk", 0), end = start;
        rw_batch_msg_t m;
        rw_codec_build_var_t var = {(char *)"LAGOON_VARIABLES_ONLY",
                                    (char *)"true"};
        char key[RW_CODEC_KEY_MAX];
        char *json = NULL;

        while (end < rows && rw_pg_ll(res, end, "chunk", 0) == chunk)
            end++;
        memset(&m, 0, sizeof(m));
        m.targets = calloc((size_t)(end - start), sizeof(*m.targets));
        if (!m.targets) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (int i = start; i < end; i++) {
            rw_codec_target_t *t = &m.targets[m.n_targets++];
            t->instance_id = rw_pg_ll(res, i, "instance_id", 0);
            t->project = (char *)rw_pg_str(res, i, "lagoon_project");
            t->environment = (char *)rw_pg_str(res, i, "lagoon_environment");
        }
        m.run = (char *)rw_pg_str(res, start, "run_uuid");
        m.chunk = chunk;
        m.attempt = (int)rw_pg_ll(res, start, "attempt", 0) + 1;
        m.store_app_id = rw_pg_ll(res, start, "store_app_id", 0);
        m.variables_only = rw_pg_bool(res, start, "variables_only", 0);
        if (m.variables_only) {
            m.build_vars = &var;
            m.n_build_vars = 1;
        }
        err = rw_codec_batch_encode(&m, &json, errstr, errlen);
        free(m.targets);
        if (err)
            goto out;
        rw_codec_key(key, sizeof(key), m.run, chunk);
        rw_pg_array_add_str(&a_key, key);
        rw_pg_array_add_str(&a_payload, json);
        rw_pg_array_add_ll(&a_chunk, chunk);
        free(json);
        (*n_chunks)++;
        start = end;
    }
    if (*n_chunks > 0) {
        const char *q[2] = {rw_pg_array_finish(&a_key),
                            rw_pg_array_finish(&a_payload)};
        if (!q[0] || !q[1]) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
        err = rw_pg_exec(pg, SQL_INSERT_OUTBOX, 2, q, NULL, errstr, errlen);
        if (!err) {
            const char *t[2] = {run_s, rw_pg_array_finish(&a_chunk)};
            if (!t[1]) {
                err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
                goto out;
            }
            err = rw_pg_exec(pg, SQL_TOUCH_QUEUED, 2, t, NULL, errstr, errlen);
        }
    }
out:
    PQclear(res);
    rw_pg_array_free(&a_key);
    rw_pg_array_free(&a_payload);
    rw_pg_array_free(&a_chunk);
    return err;
}

rw_err_t rw_control_reopen(rw_pg_t *pg, long long run_id, int chunk,
                           long long max_attempts, const char *reason,
                           long long replay_id, bool queue,
                           long long *n_targets, long long *n_chunks,
                           char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *cand = NULL, *run = NULL;
    char run_s[24], chunk_s[16], max_s[24];
    long long *failed = NULL, *timed_out = NULL;
    int *chunks = NULL;
    size_t nf = 0, nt = 0, nc = 0;
    int rows, last_chunk = -1;
    rw_run_state_t status;
    rw_chunk_change_t ch = RW_CHUNK_CHANGE_INIT;

    *n_targets = 0;
    *n_chunks = 0;
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", chunk);
    snprintf(max_s, sizeof(max_s), "%lld", max_attempts);
    {
        const char *p[1] = {run_s};
        err = rw_pg_exec(pg, SQL_LOCK_RUN_ID, 1, p, &run, errstr, errlen);
        if (err)
            goto out;
        if (PQntuples(run) != 1) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                             "run %lld not found", run_id);
            goto out;
        }
    }
    status = (rw_run_state_t)rw_run_state_parse(rw_pg_str(run, 0, "status"));
    if (status == RW_RUN_CANCELLED)
        goto out; /* a cancelled run is never reopened */
    if (rw_pg_bool(run, 0, "purging", 0))
        goto out; /* nor one the retention is deleting */
    {
        const char *p[3] = {run_s, chunk_s, max_s};
        err =
            rw_pg_exec(pg, SQL_REOPEN_CANDIDATES, 3, p, &cand, errstr, errlen);
        if (err)
            goto out;
    }
    rows = PQntuples(cand);
    if (rows == 0)
        goto out;
    failed = calloc((size_t)rows, sizeof(*failed));
    timed_out = calloc((size_t)rows, sizeof(*timed_out));
    chunks = calloc((size_t)rows, sizeof(*chunks));
    if (!failed || !timed_out || !chunks) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < rows; i++) {
        int c = (int)rw_pg_ll(cand, i, "chunk", 0);
        if (strcmp(rw_pg_str(cand, i, "state"), "failed") == 0)
            failed[nf++] = rw_pg_ll(cand, i, "id", 0);
        else
            timed_out[nt++] = rw_pg_ll(cand, i, "id", 0);
        if (c != last_chunk) {
            chunks[nc++] = c;
            last_chunk = c;
            (*n_chunks)++;
        }
    }
    err = rw_target_transition(pg, run_id, failed, nf, RW_TARGET_FAILED,
                               RW_TARGET_PENDING, true, NULL, NULL, NULL,
                               errstr, errlen);
    if (!err)
        err = rw_target_transition(pg, run_id, timed_out, nt,
                                   RW_TARGET_TIMED_OUT, RW_TARGET_PENDING, true,
                                   NULL, NULL, NULL, errstr, errlen);
    if (err)
        goto out;
    ch.replay_id = replay_id;
    err = rw_chunk_transition(pg, run_id, chunks, nc, RW_CHUNK_DONE,
                              RW_CHUNK_PENDING, true, &ch, reason, NULL, errstr,
                              errlen);
    if (!err)
        err = rw_chunk_transition(pg, run_id, chunks, nc, RW_CHUNK_FAILED,
                                  RW_CHUNK_PENDING, true, &ch, reason, NULL,
                                  errstr, errlen);
    if (err)
        goto out;
    if (rw_run_terminal(status)) {
        err = rw_run_transition(pg, run_id, status, RW_RUN_RUNNING, true,
                                reason, errstr, errlen);
        if (err)
            goto out;
    }
    *n_targets = (long long)(nf + nt);
    if (queue) {
        long long queued = 0;
        err = rw_control_queue(pg, run_id, chunk, &queued, errstr, errlen);
        if (err)
            goto out;
    }
    rw_info("control",
            "event=chunks_reopened run_id=%lld chunk=%d targets=%lld "
            "chunks=%lld reason=\"%s\"",
            run_id, chunk, *n_targets, *n_chunks, reason ? reason : "");
out:
    PQclear(cand);
    PQclear(run);
    free(failed);
    free(timed_out);
    free(chunks);
    return err;
}

static const char *verb_name(rw_control_verb_t verb)
{
    switch (verb) {
    case RW_CONTROL_PAUSE:
        return "pause";
    case RW_CONTROL_RESUME:
        return "resume";
    case RW_CONTROL_ABORT:
        return "abort";
    case RW_CONTROL_RETRY:
        return "retry";
    case RW_CONTROL_PROMOTE:
        return "promote";
    }
    return "?";
}

rw_err_t rw_control_abort(rw_pg_t *pg, long long run_id, rw_run_state_t status,
                          const char *reason, long long *n_targets,
                          char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char run_s[24];
    const char *p[1] = {run_s};
    long long *ids = NULL;
    size_t n = 0, moved = 0;

    *n_targets = 0;
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    err = rw_pg_exec(pg, SQL_ABORT_TARGETS, 1, p, &res, errstr, errlen);
    if (err)
        goto out;
    n = (size_t)PQntuples(res);
    ids = calloc(n + 1, sizeof(*ids));
    if (!ids) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = rw_pg_ll(res, (int)i, "id", 0);
    err = rw_target_transition(pg, run_id, ids, n, RW_TARGET_PENDING,
                               RW_TARGET_CANCELLED, false, reason, NULL, &moved,
                               errstr, errlen);
    if (!err)
        err = rw_chunk_transition(pg, run_id, NULL, 0, RW_CHUNK_PENDING,
                                  RW_CHUNK_DONE, false, NULL, reason, NULL,
                                  errstr, errlen);
    if (!err)
        err = rw_waves_cancel(pg, run_id, reason, errstr, errlen);
    if (!err)
        err = rw_run_transition(pg, run_id, status, RW_RUN_CANCELLED, false,
                                reason, errstr, errlen);
    if (!err)
        err = rw_pg_exec(pg, SQL_COUNTS, 1, p, NULL, errstr, errlen);
    *n_targets = (long long)moved;
out:
    PQclear(res);
    free(ids);
    return err;
}

rw_err_t rw_control_run(rw_pg_t *pg, const char *run_uuid,
                        rw_control_verb_t verb, long long max_attempts,
                        const char *by, rw_control_result_t *out, char *errstr,
                        size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    const char *p[1] = {run_uuid};
    rw_run_state_t status, to;
    long long run_id;
    char reason[160];

    memset(out, 0, sizeof(*out));
    if (!rw_codec_is_uuid(run_uuid))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "'%s' is not a run uuid", run_uuid);
    snprintf(reason, sizeof(reason), "%s by %s",
             verb == RW_CONTROL_PROMOTE ? "promoted" : verb_name(verb),
             by && by[0] ? by : "operator");
    err = rw_pg_begin(pg, errstr, errlen);
    if (err)
        goto out;
    err = rw_pg_exec(pg, SQL_LOCK_RUN, 1, p, &res, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(res) != 1) {
        err =
            rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND, "no run %s", run_uuid);
        goto out;
    }
    run_id = rw_pg_ll(res, 0, "id", 0);
    status = (rw_run_state_t)rw_run_state_parse(rw_pg_str(res, 0, "status"));
    snprintf(out->status_before, sizeof(out->status_before), "%s",
             rw_run_state_name(status));
    switch (verb) {
    case RW_CONTROL_PAUSE:
        to = RW_RUN_PAUSED;
        break;
    case RW_CONTROL_RESUME:
        to = status == RW_RUN_PAUSED ? RW_RUN_RUNNING : RW_RUN__COUNT;
        break;
    case RW_CONTROL_ABORT:
        to = RW_RUN_CANCELLED;
        break;
    case RW_CONTROL_PROMOTE:
        /* a promotion moves a wave, not the run: the run must run */
        to = status == RW_RUN_RUNNING || status == RW_RUN_PENDING
                 ? status
                 : RW_RUN__COUNT;
        break;
    case RW_CONTROL_RETRY:
    default:
        to = RW_RUN_RUNNING;
        break;
    }
    if (verb == RW_CONTROL_RETRY && rw_pg_bool(res, 0, "purging", 0)) {
        err = rw_err_set(errstr, errlen, RW_ERR_STATE,
                         "cannot retry run %s: the retention of old runs is "
                         "deleting it; start a new run",
                         run_uuid);
        goto out;
    }
    if (verb == RW_CONTROL_RETRY &&
        (!rw_run_terminal(status) || status == RW_RUN_CANCELLED)) {
        /* paused -> running is an edge, but a retry would not resume the
         * run: say what to do instead of reporting a change */
        err = rw_err_set(errstr, errlen, RW_ERR_STATE,
                         "cannot retry a %s run: %s", rw_run_state_name(status),
                         status == RW_RUN_PAUSED ? "resume it instead"
                         : status == RW_RUN_CANCELLED
                             ? "a cancelled run is final; start a new one"
                             : "it has not finished yet");
        goto out;
    }
    if (verb == RW_CONTROL_PROMOTE && to == RW_RUN__COUNT) {
        err = rw_err_set(errstr, errlen, RW_ERR_STATE,
                         "cannot promote a %s run%s", rw_run_state_name(status),
                         status == RW_RUN_PAUSED ? ": resume it first" : "");
        goto out;
    }
    if (verb != RW_CONTROL_PROMOTE &&
        (to == RW_RUN__COUNT ||
         !rw_run_edge_ok(status, to, verb == RW_CONTROL_RETRY))) {
        err = rw_err_set(errstr, errlen, RW_ERR_STATE, "cannot %s a %s run",
                         verb_name(verb), rw_run_state_name(status));
        goto out;
    }
    switch (verb) {
    case RW_CONTROL_PAUSE:
        err = rw_run_transition(pg, run_id, status, to, false, reason, errstr,
                                errlen);
        break;
    case RW_CONTROL_RESUME:
        err = rw_run_transition(pg, run_id, status, to, false, reason, errstr,
                                errlen);
        if (!err)
            err = rw_waves_resume(pg, run_id, reason, &out->chunks, errstr,
                                  errlen);
        break;
    case RW_CONTROL_ABORT:
        err = rw_control_abort(pg, run_id, status, reason, &out->targets,
                               errstr, errlen);
        break;
    case RW_CONTROL_PROMOTE:
        err = rw_waves_promote(pg, run_id, reason, &out->wave, &out->chunks,
                               errstr, errlen);
        break;
    case RW_CONTROL_RETRY:
        err = rw_control_reopen(pg, run_id, -1, max_attempts, reason, 0, true,
                                &out->targets, &out->chunks, errstr, errlen);
        if (!err && out->targets == 0)
            err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                             "nothing to retry: no failed or timed-out "
                             "target below the attempt limit (%lld)",
                             max_attempts);
        break;
    }
    if (err)
        goto out;
    err = rw_pg_commit(pg, errstr, errlen);
    if (err)
        goto out;
    snprintf(out->status_after, sizeof(out->status_after), "%s",
             rw_run_state_name(to));
    rw_info("control",
            "event=run_%s run=%s from=%s to=%s targets=%lld "
            "chunks=%lld",
            verb_name(verb), run_uuid, out->status_before, out->status_after,
            out->targets, out->chunks);
out:
    if (err && rw_pg_in_tx(pg))
        rw_pg_rollback(pg, NULL, 0);
    PQclear(res);
    return err;
}
