/*
 * poll: one poll event. Duplicates are harmless: an event whose attempt is
 * older than the chunk's recorded poll attempt, or whose bulk id is not the
 * chunk's, or whose chunk is no longer triggered, is acknowledged and
 * dropped. The next poll event is queued in the outbox in the same
 * transaction that records this poll, so a crash in between loses nothing.
 */
#include "poll.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_chunk.h"
#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_outbox.h"
#include "rw_progress.h"
#include "rw_state.h"

#define COMP "poller"

static const char SQL_LOAD_CHUNK[] =
    "SELECT r.id AS run_id, c.state AS chunk_state, c.bulk_id,"
    "       c.poll_attempts"
    " FROM deployment_runs r JOIN run_chunks c ON c.run_id = r.id"
    " WHERE r.uuid = $1::uuid AND c.chunk = $2::int";

static const char SQL_LOAD_TARGETS[] =
    "SELECT id, instance_id, state, lagoon_project, lagoon_environment,"
    "       lagoon_status, deployment_name"
    " FROM run_targets"
    " WHERE run_id = $1::bigint AND chunk = $2::int"
    "   AND state IN ('triggered', 'deploying')"
    " ORDER BY id";

static rw_msg_outcome_t fail(rw_service_t *svc, rw_err_t err,
                             const char *errstr, char *reason, size_t len)
{
    rw_service_note(svc, err);
    snprintf(reason, len, "%s: %s", rw_err_name(err), errstr);
    if (rw_pg_in_tx(svc->pg))
        rw_pg_rollback(svc->pg, NULL, 0);
    return rw_err_is_retriable(err) ? RW_MSG_RETRY : RW_MSG_DEAD;
}

/* Release the locks of terminal targets, renew the others. Best effort:
 * locks expire on their own and Postgres is the truth. */
static void locks_after_poll(rw_service_t *svc, const char *run_uuid,
                             const rw_target_update_t *u, size_t n)
{
    const char **done = calloc(n + 1, sizeof(*done));
    const char **open = calloc(n + 1, sizeof(*open));
    char(*keys)[96] = calloc(n + 1, sizeof(*keys));
    int *res = calloc(n + 1, sizeof(*res));
    size_t nd = 0, no = 0;
    char errstr[256];

    if (!done || !open || !keys || !res)
        goto out;
    for (size_t i = 0; i < n; i++) {
        rw_redis_lock_key(keys[i], sizeof(keys[i]), svc->s->kafka_topic_prefix,
                          u[i].instance_id);
        if (rw_target_terminal(u[i].to))
            done[nd++] = keys[i];
        else
            open[no++] = keys[i];
    }
    if (nd > 0) {
        if (rw_redis_lock_release(svc->rc, done, nd, run_uuid, res, errstr,
                                  sizeof(errstr)))
            rw_warn(COMP, "event=lock_release_failed run=%s detail=\"%s\"",
                    run_uuid, errstr);
        else
            rw_metrics_add(rw_metrics_counter("rollwave_locks_released_total",
                                              "instance locks released", NULL),
                           (double)nd);
    }
    if (no > 0 && rw_redis_lock_renew(svc->rc, open, no, run_uuid,
                                      svc->s->lock_ttl_s * 1000, res, errstr,
                                      sizeof(errstr)))
        rw_warn(COMP, "event=lock_renew_failed run=%s detail=\"%s\"", run_uuid,
                errstr);
out:
    free(done);
    free(open);
    free(keys);
    free(res);
}

static const char SQL_CHUNK_INSTANCES[] =
    "SELECT instance_id FROM run_targets"
    " WHERE run_id = $1::bigint AND chunk = $2::int"
    "   AND ($3::boolean OR state IN " RW_TARGET_IN_FLIGHT_SQL ")";

/*
 * The locks of a chunk's targets, best effort: released (every target of
 * a finished chunk) or renewed (its targets in flight, whatever Lagoon
 * answered: an outage longer than the TTL must not drop them).
 */
static void chunk_locks(rw_service_t *svc, const rw_poll_msg_t *m,
                        long long run_id, bool release)
{
    PGresult *res = NULL;
    char run_s[24], chunk_s[16], errstr[256];
    const char *p[3] = {run_s, chunk_s, release ? "true" : "false"};
    long long *iids = NULL;
    size_t rows;

    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", m->chunk);
    if (rw_pg_exec(svc->pg, SQL_CHUNK_INSTANCES, 3, p, &res, errstr,
                   sizeof(errstr)))
        return;
    rows = (size_t)PQntuples(res);
    iids = calloc(rows + 1, sizeof(*iids));
    for (size_t i = 0; iids && i < rows; i++)
        iids[i] = rw_pg_ll(res, (int)i, "instance_id", 0);
    if (iids && release)
        rw_chunk_release_locks(svc->rc, svc->s, m->run, iids, rows);
    else if (iids)
        rw_chunk_renew_locks(svc->rc, svc->s, m->run, iids, rows);
    free(iids);
    PQclear(res);
}

rw_msg_outcome_t rw_poller_poll(rw_service_t *svc, const rw_poll_msg_t *m,
                                char *reason, size_t len)
{
    rw_err_t err = RW_OK, lerr;
    PGresult *chunk = NULL, *tg = NULL;
    rw_lagoon_deployments_t *rows = NULL;
    rw_target_update_t *u = NULL;
    char errstr[512] = "", chunk_s[16], run_s[24];
    char key[RW_CODEC_KEY_MAX];
    char *next_json = NULL;
    long long run_id, outbox_id = 0;
    size_t n = 0, moved = 0;
    bool all_terminal = true, exhausted, finalized = false;
    rw_msg_outcome_t outcome = RW_MSG_ACK;
    char timeout_msg[96];

    snprintf(chunk_s, sizeof(chunk_s), "%d", m->chunk);
    {
        const char *p[2] = {m->run, chunk_s};
        err = rw_pg_exec(svc->pg, SQL_LOAD_CHUNK, 2, p, &chunk, errstr,
                         sizeof(errstr));
        if (err)
            goto fail;
    }
    svc->pg_broken = 0;
    if (PQntuples(chunk) != 1) {
        err = rw_err_set(errstr, sizeof(errstr), RW_ERR_NOT_FOUND,
                         "no chunk %d of run %s", m->chunk, m->run);
        goto fail;
    }
    run_id = rw_pg_ll(chunk, 0, "run_id", 0);
    if (strcmp(rw_pg_str(chunk, 0, "chunk_state"), "done") == 0 &&
        rw_pg_str(chunk, 0, "bulk_id") &&
        strcmp(rw_pg_str(chunk, 0, "bulk_id"), m->bulk_id) == 0) {
        /*
         * The poller that finished this chunk may have died between its
         * commit and its lock release: this redelivered event is what is
         * left of it, so release the chunk's locks (by owner: a lock taken
         * since by another run is not touched).
         */
        chunk_locks(svc, m, run_id, true);
        goto out;
    }
    if (strcmp(rw_pg_str(chunk, 0, "chunk_state"), "triggered") != 0 ||
        !rw_pg_str(chunk, 0, "bulk_id") ||
        strcmp(rw_pg_str(chunk, 0, "bulk_id"), m->bulk_id) != 0 ||
        m->attempt < rw_pg_ll(chunk, 0, "poll_attempts", 0)) {
        rw_debug(COMP, "event=poll_dropped run=%s chunk=%d attempt=%d", m->run,
                 m->chunk, m->attempt);
        goto out;
    }

    {
        long long t0 = rw_now_mono_ms();
        static const double buckets[] = {0.05, 0.1, 0.25, 0.5, 1,
                                         2.5,  5,   10,   30};
        char labels[96];
        lerr = rw_lagoon_deployments_by_bulk_id(svc->lc, m->bulk_id, &rows,
                                                errstr, sizeof(errstr));
        rw_metrics_observe(
            rw_metrics_histogram("rollwave_lagoon_call_seconds",
                                 "Lagoon API call latency",
                                 "operation=\"deployments_by_bulk_id\"",
                                 buckets, sizeof(buckets) / sizeof(buckets[0])),
            (double)(rw_now_mono_ms() - t0) / 1000.0);
        snprintf(labels, sizeof(labels),
                 "operation=\"deployments_by_bulk_id\",outcome=\"%s\"",
                 lerr ? rw_err_name(lerr) : "ok");
        rw_metrics_add(rw_metrics_counter("rollwave_lagoon_calls_total",
                                          "Lagoon API calls", labels),
                       1);
    }
    if (lerr && rw_err_is_retriable(lerr)) {
        chunk_locks(svc, m, run_id, false);
        err = lerr;
        goto fail;
    }
    if (lerr)
        /* an answer we cannot use counts as a poll without news */
        rw_warn(COMP,
                "event=poll_unusable run=%s chunk=%d err=%s detail=\"%s\"",
                m->run, m->chunk, rw_err_name(lerr), errstr);

    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    {
        const char *p[2] = {run_s, chunk_s};
        err = rw_pg_exec(svc->pg, SQL_LOAD_TARGETS, 2, p, &tg, errstr,
                         sizeof(errstr));
        if (err)
            goto fail;
    }
    n = (size_t)PQntuples(tg);
    u = calloc(n + 1, sizeof(*u));
    if (!u) {
        err = rw_err_set(errstr, sizeof(errstr), RW_ERR_NOMEM, "out of memory");
        goto fail;
    }
    exhausted = m->attempt >= svc->s->poll_max_attempts;
    snprintf(timeout_msg, sizeof(timeout_msg),
             "no terminal deployment after %d polls", m->attempt);
    for (size_t i = 0; i < n; i++) {
        int row = (int)i;
        const rw_lagoon_deployment_t *d =
            rows ? rw_lagoon_deployments_find(
                       rows, rw_pg_str(tg, row, "lagoon_project"),
                       rw_pg_str(tg, row, "lagoon_environment"))
                 : NULL;
        u[i].target_id = rw_pg_ll(tg, row, "id", 0);
        u[i].instance_id = rw_pg_ll(tg, row, "instance_id", 0);
        u[i].from = (rw_target_state_t)rw_target_state_parse(
            rw_pg_str(tg, row, "state"));
        u[i].to = d ? rw_target_from_lagoon(d->status, true) : u[i].from;
        if (d) {
            u[i].lagoon_status = d->status;
            u[i].deployment_name = d->name;
            u[i].completed = d->completed;
            if (u[i].to == RW_TARGET_FAILED)
                u[i].error = "lagoon build failed";
        }
        if (u[i].to == RW_TARGET_TRIGGERED && u[i].from == RW_TARGET_DEPLOYING)
            u[i].to = RW_TARGET_DEPLOYING; /* a row never disappears */
        if (exhausted && !rw_target_terminal(u[i].to)) {
            u[i].to = RW_TARGET_TIMED_OUT;
            u[i].error = timeout_msg;
        }
        if (!rw_target_terminal(u[i].to))
            all_terminal = false;
    }

    if (!all_terminal) {
        rw_poll_msg_t next = *m;
        next.attempt = m->attempt + 1;
        next.due_at_ms =
            rw_now_wall_ms() + rw_settings_poll_interval_ms(svc->s);
        err = rw_codec_poll_encode(&next, &next_json, errstr, sizeof(errstr));
        if (err)
            goto fail;
        rw_codec_key(key, sizeof(key), m->run, m->chunk);
    }
    err = rw_pg_begin(svc->pg, errstr, sizeof(errstr));
    if (err)
        goto fail;
    err = rw_progress_apply(svc->pg, run_id, u, n, &moved, errstr,
                            sizeof(errstr));
    if (err)
        goto fail;
    if (all_terminal) {
        rw_chunk_change_t ch = RW_CHUNK_CHANGE_INIT;
        ch.poll_attempts = m->attempt;
        err = rw_chunk_transition_one(
            svc->pg, run_id, m->chunk, RW_CHUNK_TRIGGERED, RW_CHUNK_DONE, false,
            &ch, "every target terminal", errstr, sizeof(errstr));
    } else {
        err = rw_chunk_poll_step(svc->pg, run_id, m->chunk, m->attempt, errstr,
                                 sizeof(errstr));
    }
    if (err == RW_ERR_CONFLICT) {
        /* a duplicate of this event got here first */
        rw_pg_rollback(svc->pg, NULL, 0);
        goto out;
    }
    if (err)
        goto fail;
    if (!all_terminal) {
        err = rw_outbox_add(svc->pg, "poll", key, next_json, &outbox_id, errstr,
                            sizeof(errstr));
        if (err)
            goto fail;
    }
    err = rw_pg_commit(svc->pg, errstr, sizeof(errstr));
    if (err)
        goto fail;
    for (size_t i = 0; i < n; i++)
        if (u[i].from != u[i].to && rw_target_terminal(u[i].to)) {
            char labels[64];
            snprintf(labels, sizeof(labels), "state=\"%s\"",
                     rw_target_state_name(u[i].to));
            rw_metrics_add(rw_metrics_counter("rollwave_targets_finished_total",
                                              "targets that reached a "
                                              "terminal state",
                                              labels),
                           1);
        }
    rw_debug(COMP,
             "event=polled run=%s chunk=%d attempt=%d rows=%zu moved=%zu "
             "done=%d",
             m->run, m->chunk, m->attempt, rows ? rows->n : 0, moved,
             all_terminal);
    locks_after_poll(svc, m->run, u, n);
    if (!all_terminal) {
        if (rw_outbox_publish(svc->pg, svc->kp, svc->s, outbox_id, "poll", key,
                              next_json, errstr, sizeof(errstr)))
            rw_warn(COMP, "event=poll_publish_deferred run=%s chunk=%d", m->run,
                    m->chunk);
        goto out;
    }
    rw_info(COMP, "event=chunk_done run=%s chunk=%d polls=%d", m->run, m->chunk,
            m->attempt);
    err = rw_progress_finalize(svc->pg, run_id, &finalized, NULL, errstr,
                               sizeof(errstr));
    if (err)
        /* the chunk is done; a later poll of another chunk or the sweep
         * finalizes the run, so this message is still handled */
        rw_warn(COMP, "event=finalize_deferred run=%s err=%s detail=\"%s\"",
                m->run, rw_err_name(err), errstr);
    goto out;
fail:
    outcome = fail(svc, err, errstr, reason, len);
out:
    PQclear(chunk);
    PQclear(tg);
    rw_lagoon_deployments_free(rows);
    free(u);
    free(next_json);
    return outcome;
}
