/*
 * poll: one poll event, in steps:
 *
 *   1. load the chunk and drop duplicates: an event whose attempt is older
 *      than the chunk's recorded poll attempt, or whose bulk id is not the
 *      chunk's, or whose chunk is no longer triggered, is acknowledged and
 *      dropped (a done chunk of this bulk has its locks released again);
 *   2. ask Lagoon for the bulk's deployments;
 *   3. work out each polled target's new state (timed out once the poll
 *      attempts run out);
 *   4. record the poll in one transaction: the targets, the chunk (done,
 *      or one poll further) and the next poll event queued in the outbox,
 *      so a crash in between loses nothing;
 *   5. after the commit: release or renew the locks, publish the next
 *      event or, for a done chunk, finalize the run.
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

/* One poll event on its way through the steps. */
typedef struct poll {
    const rw_poll_msg_t *m;
    long long run_id;
    char run_s[24], chunk_s[16];
    bool stop; /* handled: nothing more to do, acknowledge */
    rw_lagoon_deployments_t *rows;
    PGresult *tg; /* the polled targets; u's strings point into it or rows */
    rw_target_update_t *u;
    size_t n, moved;
    bool all_terminal;
    char timeout_msg[96];
    char key[RW_CODEC_KEY_MAX];
    char *next_json; /* the next poll event, unless all_terminal */
    long long outbox_id;
} poll_t;

static void poll_free(poll_t *p)
{
    PQclear(p->tg);
    rw_lagoon_deployments_free(p->rows);
    free(p->u);
    free(p->next_json);
}

/* Step 1: the chunk, and whether this event is still its current one. */
static rw_err_t load_chunk(rw_service_t *svc, poll_t *p, char *errstr,
                           size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *chunk = NULL;
    const rw_poll_msg_t *m = p->m;
    const char *par[2] = {m->run, p->chunk_s};
    const char *state, *bulk_id;

    err = rw_pg_exec(svc->pg, SQL_LOAD_CHUNK, 2, par, &chunk, errstr, errlen);
    if (err)
        goto out;
    rw_service_note_ok(svc, RW_SVC_PG);
    if (PQntuples(chunk) != 1) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                         "no chunk %d of run %s", m->chunk, m->run);
        goto out;
    }
    p->run_id = rw_pg_ll(chunk, 0, "run_id", 0);
    snprintf(p->run_s, sizeof(p->run_s), "%lld", p->run_id);
    state = rw_pg_str(chunk, 0, "chunk_state");
    bulk_id = rw_pg_str(chunk, 0, "bulk_id");
    if (strcmp(state, "done") == 0 && bulk_id &&
        strcmp(bulk_id, m->bulk_id) == 0) {
        /*
         * The poller that finished this chunk may have died between its
         * commit and its lock release: this redelivered event is what is
         * left of it, so release the chunk's locks (by owner: a lock taken
         * since by another run is not touched).
         */
        chunk_locks(svc, m, p->run_id, true);
        p->stop = true;
        goto out;
    }
    if (strcmp(state, "triggered") != 0 || !bulk_id ||
        strcmp(bulk_id, m->bulk_id) != 0 ||
        m->attempt < rw_pg_ll(chunk, 0, "poll_attempts", 0)) {
        rw_debug(COMP, "event=poll_dropped run=%s chunk=%d attempt=%d", m->run,
                 m->chunk, m->attempt);
        p->stop = true;
    }
out:
    PQclear(chunk);
    return err;
}

/*
 * Step 2: the bulk's deployments. A retriable failure renews the chunk's
 * locks and is the error; an answer we cannot use counts as a poll without
 * news (p->rows stays NULL).
 */
static rw_err_t ask_lagoon(rw_service_t *svc, poll_t *p, char *errstr,
                           size_t errlen)
{
    static const double buckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    rw_err_t lerr;
    long long t0 = rw_now_mono_ms();
    char labels[96];

    lerr = rw_lagoon_deployments_by_bulk_id(svc->lc, p->m->bulk_id, &p->rows,
                                            errstr, errlen);
    rw_metrics_observe(
        rw_metrics_histogram("rollwave_lagoon_call_seconds",
                             "Lagoon API call latency",
                             "operation=\"deployments_by_bulk_id\"", buckets,
                             sizeof(buckets) / sizeof(buckets[0])),
        (double)(rw_now_mono_ms() - t0) / 1000.0);
    snprintf(labels, sizeof(labels),
             "operation=\"deployments_by_bulk_id\",outcome=\"%s\"",
             lerr ? rw_err_name(lerr) : "ok");
    rw_metrics_add(rw_metrics_counter("rollwave_lagoon_calls_total",
                                      "Lagoon API calls", labels),
                   1);
    if (lerr && rw_err_is_retriable(lerr)) {
        chunk_locks(svc, p->m, p->run_id, false);
        return lerr;
    }
    if (lerr)
        rw_warn(COMP,
                "event=poll_unusable run=%s chunk=%d err=%s detail=\"%s\"",
                p->m->run, p->m->chunk, rw_err_name(lerr), errstr);
    return RW_OK;
}

/* Step 3, one target: its new state from its Lagoon row d (may be NULL). */
static void new_state(poll_t *p, rw_target_update_t *u,
                      const rw_lagoon_deployment_t *d, bool exhausted)
{
    u->to = d ? rw_target_from_lagoon(d->status, true) : u->from;
    if (d) {
        u->lagoon_status = d->status;
        u->deployment_name = d->name;
        u->completed = d->completed;
        if (u->to == RW_TARGET_FAILED)
            u->error = "lagoon build failed";
    }
    if (u->to == RW_TARGET_TRIGGERED && u->from == RW_TARGET_DEPLOYING)
        u->to = RW_TARGET_DEPLOYING; /* a row never disappears */
    if (exhausted && !rw_target_terminal(u->to)) {
        u->to = RW_TARGET_TIMED_OUT;
        u->error = p->timeout_msg;
    }
    if (!rw_target_terminal(u->to))
        p->all_terminal = false;
}

/* Step 3: the polled targets and their updates; the next event if any. */
static rw_err_t new_states(rw_service_t *svc, poll_t *p, char *errstr,
                           size_t errlen)
{
    rw_err_t err = RW_OK;
    const rw_poll_msg_t *m = p->m;
    const char *par[2] = {p->run_s, p->chunk_s};
    bool exhausted = m->attempt >= svc->s->poll_max_attempts;

    err = rw_pg_exec(svc->pg, SQL_LOAD_TARGETS, 2, par, &p->tg, errstr, errlen);
    if (err)
        return err;
    p->n = (size_t)PQntuples(p->tg);
    p->u = calloc(p->n + 1, sizeof(*p->u));
    if (!p->u)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    snprintf(p->timeout_msg, sizeof(p->timeout_msg),
             "no terminal deployment after %d polls", m->attempt);
    p->all_terminal = true;
    for (size_t i = 0; i < p->n; i++) {
        int row = (int)i;
        const rw_lagoon_deployment_t *d =
            p->rows ? rw_lagoon_deployments_find(
                          p->rows, rw_pg_str(p->tg, row, "lagoon_project"),
                          rw_pg_str(p->tg, row, "lagoon_environment"))
                    : NULL;
        p->u[i].target_id = rw_pg_ll(p->tg, row, "id", 0);
        p->u[i].instance_id = rw_pg_ll(p->tg, row, "instance_id", 0);
        p->u[i].from = (rw_target_state_t)rw_target_state_parse(
            rw_pg_str(p->tg, row, "state"));
        new_state(p, &p->u[i], d, exhausted);
    }
    if (!p->all_terminal) {
        rw_poll_msg_t next = *m;
        next.attempt = m->attempt + 1;
        next.due_at_ms =
            rw_now_wall_ms() + rw_settings_poll_interval_ms(svc->s);
        err = rw_codec_poll_encode(&next, &p->next_json, errstr, errlen);
        if (err)
            return err;
        rw_codec_key(p->key, sizeof(p->key), m->run, m->chunk);
    }
    return RW_OK;
}

/* Step 4: one transaction. A duplicate that got here first: p->stop. */
static rw_err_t record(rw_service_t *svc, poll_t *p, char *errstr,
                       size_t errlen)
{
    rw_err_t err = RW_OK;
    const rw_poll_msg_t *m = p->m;

    err = rw_pg_begin(svc->pg, errstr, errlen);
    if (err)
        return err;
    err = rw_progress_apply(svc->pg, p->run_id, p->u, p->n, &p->moved, errstr,
                            errlen);
    if (err)
        return err;
    if (p->all_terminal) {
        rw_chunk_change_t ch = RW_CHUNK_CHANGE_INIT;
        ch.poll_attempts = m->attempt;
        err = rw_chunk_transition_one(
            svc->pg, p->run_id, m->chunk, RW_CHUNK_TRIGGERED, RW_CHUNK_DONE,
            false, &ch, "every target terminal", errstr, errlen);
    } else {
        err = rw_chunk_poll_step(svc->pg, p->run_id, m->chunk, m->attempt,
                                 errstr, errlen);
    }
    if (err == RW_ERR_CONFLICT) {
        /* a duplicate of this event got here first */
        rw_pg_rollback(svc->pg, NULL, 0);
        p->stop = true;
        return RW_OK;
    }
    if (err)
        return err;
    if (!p->all_terminal) {
        err = rw_outbox_add(svc->pg, "poll", p->key, p->next_json,
                            &p->outbox_id, errstr, errlen);
        if (err)
            return err;
    }
    return rw_pg_commit(svc->pg, errstr, errlen);
}

/* Step 5, best effort: what is recorded stands whatever happens here. */
static void after_commit(rw_service_t *svc, const poll_t *p)
{
    const rw_poll_msg_t *m = p->m;
    char errstr[512] = "";
    bool finalized = false;
    rw_err_t err;

    for (size_t i = 0; i < p->n; i++)
        if (p->u[i].from != p->u[i].to && rw_target_terminal(p->u[i].to)) {
            char labels[64];
            snprintf(labels, sizeof(labels), "state=\"%s\"",
                     rw_target_state_name(p->u[i].to));
            rw_metrics_add(rw_metrics_counter("rollwave_targets_finished_total",
                                              "targets that reached a "
                                              "terminal state",
                                              labels),
                           1);
        }
    rw_debug(COMP,
             "event=polled run=%s chunk=%d attempt=%d rows=%zu moved=%zu "
             "done=%d",
             m->run, m->chunk, m->attempt, p->rows ? p->rows->n : 0, p->moved,
             p->all_terminal);
    locks_after_poll(svc, m->run, p->u, p->n);
    if (!p->all_terminal) {
        if (rw_outbox_publish(svc->pg, svc->kp, svc->s, p->outbox_id, "poll",
                              p->key, p->next_json, errstr, sizeof(errstr)))
            rw_warn(COMP, "event=poll_publish_deferred run=%s chunk=%d", m->run,
                    m->chunk);
        return;
    }
    rw_info(COMP, "event=chunk_done run=%s chunk=%d polls=%d", m->run, m->chunk,
            m->attempt);
    err = rw_progress_finalize(svc->pg, p->run_id, &finalized, NULL, errstr,
                               sizeof(errstr));
    if (err)
        /* the chunk is done; a later poll of another chunk or the sweep
         * finalizes the run, so this message is still handled */
        rw_warn(COMP, "event=finalize_deferred run=%s err=%s detail=\"%s\"",
                m->run, rw_err_name(err), errstr);
}

/* The steps of the file's head comment, in order. */
rw_msg_outcome_t rw_poller_poll(rw_service_t *svc, const rw_poll_msg_t *m,
                                char *reason, size_t len)
{
    rw_err_t err = RW_OK;
    poll_t p;
    char errstr[512] = "";
    rw_msg_outcome_t outcome = RW_MSG_ACK;

    memset(&p, 0, sizeof(p));
    p.m = m;
    snprintf(p.chunk_s, sizeof(p.chunk_s), "%d", m->chunk);
    err = load_chunk(svc, &p, errstr, sizeof(errstr));
    if (err || p.stop)
        goto out;
    err = ask_lagoon(svc, &p, errstr, sizeof(errstr));
    if (err)
        goto out;
    err = new_states(svc, &p, errstr, sizeof(errstr));
    if (err)
        goto out;
    err = record(svc, &p, errstr, sizeof(errstr));
    if (err || p.stop)
        goto out;
    after_commit(svc, &p);
out:
    if (err)
        outcome = fail(svc, err, errstr, reason, len);
    poll_free(&p);
    return outcome;
}
