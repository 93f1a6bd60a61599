/*
 * rw_chunk: the three endings of a chunk's trigger (see rw_chunk.h). Every
 * state change goes through rw_state; the statements here only write the
 * instances' deployment bookkeeping and queue the poll event.
 */
#include "rw_chunk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_codec.h"
#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_outbox.h"
#include "rw_metrics.h"
#include "rw_progress.h"
#include "rw_runs.h"
#include "rw_schedule.h"

#define COMP "chunk"

static const char SQL_LOAD_CLAIMS[] =
    "SELECT t.id, t.instance_id, t.lagoon_project, t.lagoon_environment,"
    "       COALESCE(g.is_beta, false) AS is_beta,"
    "       a.redeploy_interval_days, a.beta_redeploy_interval_days"
    " FROM run_targets t"
    " JOIN app_instances i ON i.id = t.instance_id"
    " JOIN store_apps a ON a.id = i.store_app_id"
    " LEFT JOIN user_groups g ON g.id = i.user_group_id"
    " WHERE t.run_id = $1::bigint AND t.chunk = $2::int"
    "   AND t.state = 'claimed'"
    " ORDER BY t.id";

static const char SQL_RUN_STATUS[] =
    "SELECT status FROM deployment_runs WHERE id = $1::bigint FOR SHARE";

/* Instances of a failed trigger: not due again before the backoff. */
static const char SQL_INSTANCES_BACKOFF[] =
    "UPDATE app_instances SET"
    "   next_redeploy_at = now() + make_interval(secs => $2::int),"
    "   updated_at = now()"
    " WHERE id = ANY($1::bigint[])";

rw_err_t rw_chunk_load_claims(rw_pg_t *pg, long long run_id, int chunk,
                              rw_chunk_claim_t **claims, size_t *n,
                              PGresult **res, char *errstr, size_t errlen)
{
    rw_err_t err;
    char run_s[24], chunk_s[16];
    const char *p[2] = {run_s, chunk_s};
    rw_chunk_claim_t *t;
    size_t rows;

    *claims = NULL;
    *n = 0;
    *res = NULL;
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", chunk);
    err = rw_pg_exec(pg, SQL_LOAD_CLAIMS, 2, p, res, errstr, errlen);
    if (err)
        return err;
    rows = (size_t)PQntuples(*res);
    t = calloc(rows + 1, sizeof(*t));
    if (!t) {
        PQclear(*res);
        *res = NULL;
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < rows; i++) {
        int r = (int)i;
        t[i].target_id = rw_pg_ll(*res, r, "id", 0);
        t[i].instance_id = rw_pg_ll(*res, r, "instance_id", 0);
        t[i].project = rw_pg_str(*res, r, "lagoon_project");
        t[i].environment = rw_pg_str(*res, r, "lagoon_environment");
        t[i].is_beta = rw_pg_bool(*res, r, "is_beta", 0);
        t[i].interval_days = rw_pg_ll(*res, r, "redeploy_interval_days", 0);
        t[i].beta_interval_days =
            rw_pg_ll(*res, r, "beta_redeploy_interval_days", 0);
    }
    *claims = t;
    *n = rows;
    return RW_OK;
}

/* Release (renew false) or renew the locks of instance_ids held by run_uuid
 * (or, releasing, by run_uuids[i] each) in one pipeline. */
static rw_err_t locks(rw_redis_t *rc, const rw_settings_t *s,
                      const char *run_uuid, const char *const *run_uuids,
                      const long long *instance_ids, size_t n, bool renew)
{
    char(*keys)[96] = NULL;
    const char **kp = NULL;
    int *done = NULL;
    char errstr[256];
    rw_err_t err = RW_OK;

    if (!rc || n == 0)
        return RW_OK;
    keys = calloc(n, sizeof(*keys));
    kp = calloc(n, sizeof(*kp));
    done = calloc(n, sizeof(*done));
    if (!keys || !kp || !done) {
        err = RW_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        rw_redis_lock_key(keys[i], sizeof(keys[i]), s->kafka_topic_prefix,
                          instance_ids[i]);
        kp[i] = keys[i];
    }
    if (renew)
        err = rw_redis_lock_renew(rc, kp, n, run_uuid, s->lock_ttl_s * 1000,
                                  done, errstr, sizeof(errstr));
    else if (run_uuids)
        err = rw_redis_lock_release_each(rc, kp, run_uuids, n, done, errstr,
                                         sizeof(errstr));
    else
        err = rw_redis_lock_release(rc, kp, n, run_uuid, done, errstr,
                                    sizeof(errstr));
    if (err)
        rw_warn(COMP, "event=lock_%s_failed run=%s detail=\"%s\"",
                renew ? "renew" : "release", run_uuids ? "(several)" : run_uuid,
                errstr);
    else if (!renew)
        rw_metrics_add(rw_metrics_counter("rollwave_locks_released_total",
                                          "instance locks released", NULL),
                       (double)n);
out:
    free(keys);
    free(kp);
    free(done);
    return err;
}

rw_err_t rw_chunk_release_locks(rw_redis_t *rc, const rw_settings_t *s,
                                const char *run_uuid,
                                const long long *instance_ids, size_t n)
{
    return locks(rc, s, run_uuid, NULL, instance_ids, n, false);
}

rw_err_t rw_chunk_release_locks_each(rw_redis_t *rc, const rw_settings_t *s,
                                     const char *const *run_uuids,
                                     const long long *instance_ids, size_t n)
{
    return locks(rc, s, NULL, run_uuids, instance_ids, n, false);
}

rw_err_t rw_chunk_renew_locks(rw_redis_t *rc, const rw_settings_t *s,
                              const char *run_uuid,
                              const long long *instance_ids, size_t n)
{
    return locks(rc, s, run_uuid, NULL, instance_ids, n, true);
}

static long long *target_ids(const rw_chunk_claim_t *t, size_t n)
{
    long long *ids = calloc(n + 1, sizeof(*ids));
    for (size_t i = 0; ids && i < n; i++)
        ids[i] = t[i].target_id;
    return ids;
}

static long long *instance_ids(const rw_chunk_claim_t *t, size_t n)
{
    long long *ids = calloc(n + 1, sizeof(*ids));
    for (size_t i = 0; ids && i < n; i++)
        ids[i] = t[i].instance_id;
    return ids;
}

rw_err_t rw_chunk_record_triggered(rw_pg_t *pg, rw_kafka_producer_t *kp,
                                   const rw_settings_t *s,
                                   const rw_chunk_ref_t *c,
                                   const rw_chunk_claim_t *t, size_t n,
                                   const char *bulk_id, const char *reason,
                                   char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    long long *ids = target_ids(t, n);
    long long *iids = NULL, *next = NULL;
    rw_poll_msg_t pm;
    char key[RW_CODEC_KEY_MAX];
    char *json = NULL;
    long long outbox_id = 0;
    long long now_s = rw_now_wall_ms() / 1000;

    if (!ids) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    iids = instance_ids(t, n);
    next = calloc(n + 1, sizeof(*next));
    if (!iids || !next) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* 0: no cadence to keep */
    for (size_t i = 0; i < n; i++)
        next[i] =
            t[i].interval_days > 0
                ? rw_schedule_next_s(now_s, t[i].is_beta, t[i].interval_days,
                                     t[i].beta_interval_days, t[i].instance_id,
                                     s->jitter_window_min * 60)
                : 0;
    memset(&pm, 0, sizeof(pm));
    pm.run = (char *)c->run_uuid;
    pm.chunk = c->chunk;
    pm.bulk_id = (char *)bulk_id;
    pm.attempt = 1;
    pm.due_at_ms = rw_now_wall_ms() + rw_settings_first_poll_delay_ms(s);
    err = rw_codec_poll_encode(&pm, &json, errstr, errlen);
    if (err)
        goto out;
    rw_codec_key(key, sizeof(key), c->run_uuid, c->chunk);

    /*
     * One statement records the accepted bulk; a run still pending also
     * moves to running with it, in the same transaction (its first chunk).
     */
    if (c->run_status == RW_RUN_PENDING) {
        err = rw_pg_begin(pg, errstr, errlen);
        if (err)
            goto out;
    }
    err = rw_chunk_mark_triggered(pg, c->run_id, c->chunk, c->attempt, bulk_id,
                                  reason, ids, iids, next, n, key, json,
                                  &outbox_id, errstr, errlen);
    if (err)
        goto out;
    if (c->run_status == RW_RUN_PENDING) {
        err = rw_run_transition(pg, c->run_id, RW_RUN_PENDING, RW_RUN_RUNNING,
                                false, "first chunk triggered", errstr, errlen);
        if (err == RW_ERR_CONFLICT)
            err = RW_OK; /* another chunk got there first */
        if (err)
            goto out;
        err = rw_pg_commit(pg, errstr, errlen);
        if (err)
            goto out;
    }
    rw_info(COMP, "event=chunk_triggered run=%s chunk=%d bulk=%s targets=%zu",
            c->run_uuid, c->chunk, bulk_id, n);
    if (kp) {
        /* if this fails the outbox sweep publishes it: the commit stands */
        rw_err_t perr = rw_outbox_publish(pg, kp, s, outbox_id, "poll", key,
                                          json, errstr, errlen);
        if (perr)
            rw_warn(COMP, "event=poll_publish_deferred run=%s chunk=%d err=%s",
                    c->run_uuid, c->chunk, rw_err_name(perr));
    }
out:
    if (err && rw_pg_in_tx(pg))
        rw_pg_rollback(pg, NULL, 0);
    free(iids);
    free(next);
    free(ids);
    free(json);
    return err;
}

rw_err_t rw_chunk_record_failed(rw_pg_t *pg, rw_redis_t *rc,
                                const rw_settings_t *s, const rw_chunk_ref_t *c,
                                const rw_chunk_claim_t *t, size_t n,
                                const char *why, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    long long *ids = target_ids(t, n), *iids = instance_ids(t, n);
    rw_pg_array_t a;
    rw_chunk_change_t ch = RW_CHUNK_CHANGE_INIT;
    char backoff_s[24];
    bool finalized = false;

    rw_pg_array_init(&a);
    if (!ids || !iids) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    snprintf(backoff_s, sizeof(backoff_s), "%lld", s->failure_backoff_s);
    for (size_t i = 0; i < n; i++)
        rw_pg_array_add_ll(&a, iids[i]);
    err = rw_pg_begin(pg, errstr, errlen);
    if (err)
        goto out;
    ch.error = why;
    ch.attempt = c->attempt;
    err = rw_chunk_transition_one(pg, c->run_id, c->chunk, RW_CHUNK_TRIGGERING,
                                  RW_CHUNK_FAILED, false, &ch, why, errstr,
                                  errlen);
    if (err)
        goto out;
    err = rw_target_transition(pg, c->run_id, ids, n, RW_TARGET_CLAIMED,
                               RW_TARGET_FAILED, false, why, NULL, NULL, errstr,
                               errlen);
    if (err)
        goto out;
    if (n > 0) {
        const char *p[2] = {rw_pg_array_finish(&a), backoff_s};
        if (!p[0]) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
        err = rw_pg_exec(pg, SQL_INSTANCES_BACKOFF, 2, p, NULL, errstr, errlen);
        if (err)
            goto out;
    }
    err = rw_pg_commit(pg, errstr, errlen);
    if (err)
        goto out;
    rw_warn(COMP,
            "event=chunk_failed run=%s chunk=%d targets=%zu reason=\"%s\"",
            c->run_uuid, c->chunk, n, why);
    rw_chunk_release_locks(rc, s, c->run_uuid, iids, n);
    err = rw_progress_finalize(pg, c->run_id, &finalized, NULL, errstr, errlen);
out:
    if (err && rw_pg_in_tx(pg))
        rw_pg_rollback(pg, NULL, 0);
    free(ids);
    free(iids);
    rw_pg_array_free(&a);
    return err;
}

rw_err_t rw_chunk_record_unsent(rw_pg_t *pg, rw_redis_t *rc,
                                const rw_settings_t *s, const rw_chunk_ref_t *c,
                                const rw_chunk_claim_t *t, size_t n,
                                const char *why, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    long long *ids = target_ids(t, n), *iids = instance_ids(t, n);
    rw_chunk_change_t ch = RW_CHUNK_CHANGE_INIT;
    bool cancelled = false, finalized = false;
    PGresult *run = NULL;
    char run_s[24];
    const char *p[1] = {run_s};

    if (!ids || !iids) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    snprintf(run_s, sizeof(run_s), "%lld", c->run_id);
    err = rw_pg_begin(pg, errstr, errlen);
    if (err)
        goto out;
    /* FOR SHARE waits for an abort in progress (FOR NO KEY UPDATE) */
    err = rw_pg_exec(pg, SQL_RUN_STATUS, 1, p, &run, errstr, errlen);
    if (err)
        goto out;
    cancelled =
        PQntuples(run) == 1 &&
        rw_run_state_parse(rw_pg_str(run, 0, "status")) == RW_RUN_CANCELLED;
    PQclear(run);
    ch.error = why;
    ch.attempt = c->attempt;
    err = rw_chunk_transition_one(pg, c->run_id, c->chunk, RW_CHUNK_TRIGGERING,
                                  RW_CHUNK_PENDING, false, &ch, why, errstr,
                                  errlen);
    if (err)
        goto out;
    err = rw_target_transition(pg, c->run_id, ids, n, RW_TARGET_CLAIMED,
                               RW_TARGET_PENDING, false, NULL, NULL, NULL,
                               errstr, errlen);
    if (err)
        goto out;
    if (cancelled) {
        /* the run was aborted meanwhile: what never left is cancelled */
        err = rw_target_transition(pg, c->run_id, ids, n, RW_TARGET_PENDING,
                                   RW_TARGET_CANCELLED, false,
                                   "run cancelled before the trigger", NULL,
                                   NULL, errstr, errlen);
        if (!err)
            err = rw_chunk_transition_one(
                pg, c->run_id, c->chunk, RW_CHUNK_PENDING, RW_CHUNK_DONE, false,
                NULL, "run cancelled before the trigger", errstr, errlen);
        if (err)
            goto out;
    }
    err = rw_pg_commit(pg, errstr, errlen);
    if (err)
        goto out;
    rw_info(COMP,
            "event=chunk_unsent run=%s chunk=%d targets=%zu reason=\"%s\"",
            c->run_uuid, c->chunk, n, why);
    rw_chunk_release_locks(rc, s, c->run_uuid, iids, n);
    if (cancelled)
        err = rw_progress_finalize(pg, c->run_id, &finalized, NULL, errstr,
                                   errlen);
out:
    if (err && rw_pg_in_tx(pg))
        rw_pg_rollback(pg, NULL, 0);
    free(ids);
    free(iids);
    return err;
}
