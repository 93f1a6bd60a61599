/*
 * sweep: the recovery sweep; see sweep.h for what it repairs and why each
 * repair is safe next to a live worker or poller.
 */
#include "sweep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_chunk.h"
#include "rw_codec.h"
#include "rw_control.h"
#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_outbox.h"
#include "rw_progress.h"
#include "rw_runs.h"
#include "rw_state.h"
#include "rw_waves.h"

#define COMP "sweep"

/*
 * Triggering chunks whose last send is older than the settle window. The
 * window counts two Lagoon timeouts (a 401 answered with a re-read token
 * file sends once more) plus ROLLWAVE_TRIGGER_SETTLE_S.
 */
static const char SQL_IN_DOUBT[] =
    "SELECT c.run_id, c.chunk, c.attempt, c.bulk_name, c.send_failures,"
    "       c.last_error,"
    "       r.uuid::text AS run_uuid, r.status AS run_status"
    " FROM run_chunks c JOIN deployment_runs r ON r.id = c.run_id"
    " WHERE c.state = 'triggering'"
    "   AND COALESCE(c.sent_at, c.updated_at)"
    "       < now() - make_interval(secs => $1::int)"
    " ORDER BY c.updated_at LIMIT $2::int";

/* Triggered chunks whose polls stopped (updated_at moves with each poll). */
static const char SQL_POLL_STALE[] =
    "SELECT c.run_id, c.chunk, c.bulk_id, c.poll_attempts,"
    "       r.uuid::text AS run_uuid"
    " FROM run_chunks c JOIN deployment_runs r ON r.id = c.run_id"
    " WHERE c.state = 'triggered'"
    "   AND c.updated_at < now() - make_interval(secs => $1::int)"
    " ORDER BY c.updated_at LIMIT $2::int";

/*
 * Pending chunks of runs still going whose batches seem lost. While the
 * fleet throttle holds batches back (a worker said so within the window)
 * a pending chunk is most likely waiting in Kafka: it counts as lost only
 * after six windows, so a backlog of hours gets one duplicate per chunk
 * every six windows instead of one every window, and a batch really lost
 * during an endless backlog is still re-queued. Deferred chunks are not
 * lost: their batch was acknowledged on purpose (SQL_DEFERRED_DUE).
 */
static const char SQL_PENDING_STALE[] =
    "SELECT c.run_id, c.chunk, r.uuid::text AS run_uuid"
    " FROM run_chunks c JOIN deployment_runs r ON r.id = c.run_id"
    " WHERE c.state = 'pending' AND c.not_before IS NULL"
    "   AND c.updated_at < now() - make_interval(secs => $1::int)"
    "   AND r.status IN ('pending', 'running')"
    "   AND " RW_WAVE_RELEASED_SQL(
        "c") "   AND (c.updated_at < now() - make_interval(secs => 6 * $1::int)"
             "     OR NOT EXISTS (SELECT 1 FROM fleet_throttle f"
             "       WHERE f.waiting_seen_at > now() - make_interval(secs => "
             "$1::int)))"
             " ORDER BY c.updated_at LIMIT $2::int";

/*
 * Deferred chunks whose not_before has passed, of released waves of runs
 * still going, oldest first. A paused run's deferred chunks wait for the
 * resume, which queues every pending chunk. Of the chunks a run's own
 * limit deferred, two per run and round: a run at its limit would
 * otherwise have all its waiting chunks re-queued, and deferred again,
 * every round for as long as it runs.
 */
static const char SQL_DEFERRED_DUE[] =
    "SELECT run_id, chunk, run_uuid FROM ("
    "  SELECT c.run_id, c.chunk, r.uuid::text AS run_uuid, c.not_before,"
    "         c.deferred_reason,"
    "         row_number() OVER (PARTITION BY c.run_id,"
    "             c.deferred_reason LIKE 'run limit%'"
    "             ORDER BY c.not_before, c.chunk) AS k"
    "  FROM run_chunks c JOIN deployment_runs r ON r.id = c.run_id"
    "  WHERE c.state = 'pending' AND c.not_before IS NOT NULL"
    "    AND c.not_before <= now()"
    "    AND r.status IN ('pending', 'running')"
    "    AND " RW_WAVE_RELEASED_SQL(
        "c") ") d"
             " WHERE d.k <= 2 OR d.deferred_reason IS NULL"
             "    OR d.deferred_reason NOT LIKE 'run limit%'"
             " ORDER BY d.not_before LIMIT $1::int";

/*
 * Chunks finished since the cursor (and a few seconds ago at least, so
 * their writer had its chance), with the instances of their terminal
 * targets: locks whose release failed or never happened (a process died
 * between its commit and its release) are released again, by owner. The
 * chunks are picked first, through run_chunks_finished_idx and at most $2
 * of them, and only their targets are read: joined before the LIMIT, the
 * targets of every chunk finished in the last hour were read and grouped
 * at each sweep (2.5 s a sweep on a million-instance rollout).
 */
static const char SQL_FINISHED[] =
    "SELECT c.id, c.finished_at::text AS finished_at,"
    "       r.uuid::text AS run_uuid,"
    "       (SELECT array_agg(t.instance_id) FROM run_targets t"
    "         WHERE t.run_id = c.run_id AND t.chunk = c.chunk"
    "           AND t.state IN " RW_TARGET_TERMINAL_SQL ")::text AS ids"
    " FROM (SELECT c.id, c.run_id, c.chunk, c.finished_at FROM run_chunks c"
    "        WHERE c.finished_at >= COALESCE($1::timestamptz,"
    "                                         now() - interval '1 hour')"
    "          AND (c.finished_at, c.id) > (COALESCE($1::timestamptz,"
    "                                                '-infinity'), $3::bigint)"
    "          AND c.finished_at <= now() - interval '10 seconds'"
    "        ORDER BY c.finished_at, c.id LIMIT $2::int) c"
    " JOIN deployment_runs r ON r.id = c.run_id"
    " ORDER BY c.finished_at, c.id";

static void count(const char *action, long long n)
{
    char labels[64];

    if (n <= 0)
        return;
    snprintf(labels, sizeof(labels), "action=\"%s\"", action);
    rw_metrics_add(rw_metrics_counter("rollwave_sweep_actions_total",
                                      "repairs made by the recovery sweep",
                                      labels),
                   (double)n);
}

static rw_err_t select_chunks(rw_service_t *svc, const char *sql,
                              long long age_s, PGresult **res, char *errstr,
                              size_t errlen)
{
    char age[24], lim[24];
    const char *p[2] = {age, lim};

    snprintf(age, sizeof(age), "%lld", age_s);
    snprintf(lim, sizeof(lim), "%lld", svc->s->sweep_batch);
    return rw_pg_exec_replan(svc->pg, sql, 2, p, res, errstr, errlen);
}

/*
 * One chunk in doubt: adopt, give back, or leave. Returns the action
 * taken ("adopted", "unsent", "inconclusive") or NULL after an error that
 * is logged.
 */
static const char *resolve(rw_service_t *svc, PGresult *res, int row)
{
    rw_err_t err;
    rw_chunk_ref_t ref;
    rw_chunk_claim_t *t = NULL;
    rw_lagoon_env_t *envs = NULL;
    PGresult *claims = NULL;
    size_t n = 0;
    char errstr[512] = "", bulk_id[RW_LAGOON_BULK_ID_MAX] = "";
    const char *bulk_name = rw_pg_str(res, row, "bulk_name");
    const char *action = NULL;
    bool found = false;

    ref.run_id = rw_pg_ll(res, row, "run_id", 0);
    ref.run_uuid = rw_pg_str(res, row, "run_uuid");
    ref.chunk = (int)rw_pg_ll(res, row, "chunk", 0);
    ref.attempt = (int)rw_pg_ll(res, row, "attempt", 0);
    ref.run_status =
        (rw_run_state_t)rw_run_state_parse(rw_pg_str(res, row, "run_status"));
    err = rw_chunk_load_claims(svc->pg, ref.run_id, ref.chunk, &t, &n, &claims,
                               errstr, sizeof(errstr));
    if (err)
        goto out;
    envs = calloc(n + 1, sizeof(*envs));
    if (!envs) {
        err = rw_err_set(errstr, sizeof(errstr), RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        envs[i].project = t[i].project;
        envs[i].environment = t[i].environment;
    }
    if (n > 0 && bulk_name) {
        err = rw_lagoon_find_bulk(svc->lc, bulk_name, envs, n, bulk_id,
                                  sizeof(bulk_id), &found, errstr,
                                  sizeof(errstr));
        if (err) {
            /*
             * Unreadable, ambiguous (two bulks with our name) or simply
             * unreachable: nothing here proves Lagoon did not run it, so
             * nothing is sent again. Touched so the others get their turn.
             */
            rw_warn(COMP,
                    "event=in_doubt_inconclusive run=%s chunk=%d err=%s "
                    "detail=\"%s\"",
                    ref.run_uuid, ref.chunk, rw_err_name(err), errstr);
            rw_chunk_touch(svc->pg, ref.run_id, ref.chunk, NULL, 0);
            action = "inconclusive";
            err = RW_OK;
            goto out;
        }
    }
    if (found) {
        err = rw_chunk_record_triggered(svc->pg, svc->kp, svc->s, &ref, t, n,
                                        bulk_id,
                                        "bulk found by name: adopted by the "
                                        "recovery sweep",
                                        errstr, sizeof(errstr));
        if (!err) {
            rw_warn(COMP, "event=in_doubt_adopted run=%s chunk=%d bulk=%s",
                    ref.run_uuid, ref.chunk, bulk_id);
            action = "adopted";
        }
        goto out;
    }
    if (rw_pg_ll(res, row, "send_failures", 0) >= svc->s->trigger_retries &&
        ref.run_status != RW_RUN_CANCELLED) {
        /* Lagoon never took it, send after send: stop cycling */
        char why[640];
        snprintf(why, sizeof(why),
                 "trigger failed: bulk not found in Lagoon after %lld sends"
                 " (last: %s)",
                 rw_pg_ll(res, row, "send_failures", 0) + 1,
                 rw_pg_str(res, row, "last_error")
                     ? rw_pg_str(res, row, "last_error")
                     : "no answer");
        err = rw_chunk_record_failed(svc->pg, svc->rc, svc->s, &ref, t, n, why,
                                     errstr, sizeof(errstr));
        if (!err) {
            rw_warn(COMP, "event=in_doubt_failed_for_good run=%s chunk=%d",
                    ref.run_uuid, ref.chunk);
            action = "failed";
        }
        goto out;
    }
    err = rw_chunk_record_unsent(svc->pg, svc->rc, svc->s, &ref, t, n,
                                 "bulk not found in Lagoon after the settle "
                                 "window",
                                 errstr, sizeof(errstr));
    if (err)
        goto out;
    rw_warn(COMP, "event=in_doubt_not_found run=%s chunk=%d targets=%zu",
            ref.run_uuid, ref.chunk, n);
    action = "unsent";
    if (ref.run_status == RW_RUN_PENDING || ref.run_status == RW_RUN_RUNNING) {
        long long queued = 0;
        err = rw_control_queue(svc->pg, ref.run_id, ref.chunk, &queued, errstr,
                               sizeof(errstr));
    }
out:
    if (err == RW_ERR_CONFLICT) {
        /* a worker recorded it meanwhile: nothing left to repair */
        action = "raced";
        err = RW_OK;
    }
    if (err)
        rw_warn(COMP,
                "event=in_doubt_failed run=%s chunk=%d err=%s "
                "detail=\"%s\"",
                ref.run_uuid, ref.chunk, rw_err_name(err), errstr);
    free(envs);
    free(t);
    PQclear(claims);
    return err ? NULL : action;
}

/* Queue the current poll event of a triggered chunk again, touched. */
static rw_err_t reemit_poll(rw_service_t *svc, PGresult *res, int row,
                            char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_poll_msg_t pm;
    char key[RW_CODEC_KEY_MAX];
    char *json = NULL;
    long long run_id = rw_pg_ll(res, row, "run_id", 0), id = 0;
    int attempts = (int)rw_pg_ll(res, row, "poll_attempts", 1);

    memset(&pm, 0, sizeof(pm));
    pm.run = (char *)rw_pg_str(res, row, "run_uuid");
    pm.chunk = (int)rw_pg_ll(res, row, "chunk", 0);
    pm.bulk_id = (char *)rw_pg_str(res, row, "bulk_id");
    pm.attempt = attempts > 0 ? attempts : 1;
    pm.due_at_ms = rw_now_wall_ms();
    err = rw_codec_poll_encode(&pm, &json, errstr, errlen);
    if (err)
        goto out;
    rw_codec_key(key, sizeof(key), pm.run, pm.chunk);
    err = rw_pg_begin(svc->pg, errstr, errlen);
    if (!err)
        err = rw_chunk_touch(svc->pg, run_id, pm.chunk, errstr, errlen);
    if (!err)
        err = rw_outbox_add(svc->pg, "poll", key, json, &id, errstr, errlen);
    if (!err)
        err = rw_pg_commit(svc->pg, errstr, errlen);
    if (!err)
        rw_warn(COMP, "event=poll_reemitted run=%s chunk=%d attempt=%d", pm.run,
                pm.chunk, pm.attempt);
out:
    if (err && rw_pg_in_tx(svc->pg))
        rw_pg_rollback(svc->pg, NULL, 0);
    free(json);
    return err;
}

/*
 * Queue the batch of a pending chunk again: a lost one touched, a deferred
 * one due (deferred) with not_before cleared in the same transaction, so
 * it is written once however many sweeps race for it.
 */
static rw_err_t requeue_batch(rw_service_t *svc, PGresult *res, int row,
                              bool deferred, char *errstr, size_t errlen)
{
    rw_err_t err;
    long long run_id = rw_pg_ll(res, row, "run_id", 0), queued = 0;
    int chunk = (int)rw_pg_ll(res, row, "chunk", 0);

    err = rw_pg_begin(svc->pg, errstr, errlen);
    if (!err)
        err = deferred
                  ? rw_chunk_undefer(svc->pg, run_id, chunk, errstr, errlen)
                  : rw_chunk_touch(svc->pg, run_id, chunk, errstr, errlen);
    if (!err)
        err = rw_control_queue(svc->pg, run_id, chunk, &queued, errstr, errlen);
    if (!err)
        err = rw_pg_commit(svc->pg, errstr, errlen);
    if (err && rw_pg_in_tx(svc->pg))
        rw_pg_rollback(svc->pg, NULL, 0);
    if (!err && deferred)
        rw_info(COMP, "event=deferred_requeued run=%s chunk=%d",
                rw_pg_str(res, row, "run_uuid"), chunk);
    else if (!err)
        rw_warn(COMP, "event=batch_requeued run=%s chunk=%d",
                rw_pg_str(res, row, "run_uuid"), chunk);
    return err;
}

/* Parse a Postgres int8 array literal "{1,2,3}" into ids (malloc'd). */
static size_t parse_ids(const char *lit, long long **ids)
{
    size_t n = 0, cap = 0;
    const char *p = lit ? strchr(lit, '{') : NULL;

    *ids = NULL;
    if (!p)
        return 0;
    for (p++; *p && *p != '}';) {
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p)
            break;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            long long *grown = realloc(*ids, ncap * sizeof(*grown));
            if (!grown)
                break;
            *ids = grown;
            cap = ncap;
        }
        (*ids)[n++] = v;
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

/*
 * At most this many locks in one of the sweep's release pipelines (a
 * chunk's are never split): a round of ROLLWAVE_SWEEP_BATCH chunks is
 * one round trip with the defaults (200 x 50) and stays bounded in memory
 * with the largest settings.
 */
#define RELEASE_PIPELINE_MAX 5000

/*
 * Release the locks of chunks finished since svc's cursor, in pipelines of
 * whole chunks (RELEASE_PIPELINE_MAX locks at most); the cursor moves past
 * a pipeline's chunks only if it went through, and a failure stops the
 * round (Redis away: the next sweep resumes there).
 */
static rw_err_t release_finished(rw_service_t *svc, char *cursor,
                                 size_t cursor_len, long long *cursor_id,
                                 long long *released, char *errstr,
                                 size_t errlen)
{
    rw_err_t err;
    PGresult *res = NULL;
    long long *all = NULL;
    const char **owners = NULL;
    size_t n = 0, cap = 0;
    int rows, last = -1; /* the last row of the pipeline being filled */
    char lim[24], id_s[24];
    const char *p[3] = {cursor[0] ? cursor : NULL, lim, id_s};

    *released = 0;
    snprintf(lim, sizeof(lim), "%lld", svc->s->sweep_batch);
    snprintf(id_s, sizeof(id_s), "%lld", *cursor_id);
    err = rw_pg_exec_replan(svc->pg, SQL_FINISHED, 3, p, &res, errstr, errlen);
    if (err)
        goto out;
    rows = PQntuples(res);
    for (int i = 0; i <= rows; i++) {
        long long *ids = NULL;
        size_t k = i < rows ? parse_ids(rw_pg_str(res, i, "ids"), &ids) : 0;
        if (last >= 0 && (i == rows || n + k > RELEASE_PIPELINE_MAX)) {
            if (rw_chunk_release_locks_each(svc->rc, svc->s, owners, all, n)) {
                free(ids);
                goto out;
            }
            *released += (long long)n;
            snprintf(cursor, cursor_len, "%s",
                     rw_pg_str(res, last, "finished_at"));
            *cursor_id = rw_pg_ll(res, last, "id", 0);
            n = 0;
            last = -1;
        }
        if (i == rows)
            break;
        if (n + k > cap) {
            size_t ncap = (n + k) * 2;
            long long *ga = realloc(all, ncap * sizeof(*ga));
            const char **go = ga ? realloc(owners, ncap * sizeof(*go)) : NULL;
            if (ga)
                all = ga;
            if (go)
                owners = go;
            if (!ga || !go) {
                free(ids);
                err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
                goto out;
            }
            cap = ncap;
        }
        for (size_t j = 0; j < k; j++) {
            all[n] = ids[j];
            owners[n++] = rw_pg_str(res, i, "run_uuid");
        }
        free(ids);
        last = i;
    }
out:
    free(all);
    free(owners);
    PQclear(res);
    return err;
}

rw_err_t rw_sweep_run(rw_service_t *svc, rw_sweep_stats_t *st, char *errstr,
                      size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    const rw_settings_t *s = svc->s;
    long long published = 0;
    char why[512];

    {
        /* the cursor is the only thing kept from one sweep to the next */
        char cursor[sizeof(st->locks_cursor)];
        long long cursor_id = st->locks_cursor_id;
        memcpy(cursor, st->locks_cursor, sizeof(cursor));
        memset(st, 0, sizeof(*st));
        memcpy(st->locks_cursor, cursor, sizeof(cursor));
        st->locks_cursor_id = cursor_id;
    }
    if (svc->lc) {
        err = select_chunks(svc, SQL_IN_DOUBT,
                            2 * (s->lagoon_timeout_ms / 1000 + 1) +
                                s->trigger_settle_s,
                            &res, errstr, errlen);
        if (err)
            goto out;
        for (int i = 0; i < PQntuples(res) && !rw_daemon_draining(); i++) {
            const char *action = resolve(svc, res, i);
            if (!action)
                continue;
            st->adopted += strcmp(action, "adopted") == 0;
            st->unsent += strcmp(action, "unsent") == 0;
            st->inconclusive += strcmp(action, "inconclusive") == 0;
            st->failed += strcmp(action, "failed") == 0;
        }
        PQclear(res);
        res = NULL;
    }
    err = select_chunks(svc, SQL_POLL_STALE, s->sweep_poll_stale_s, &res,
                        errstr, errlen);
    if (err)
        goto out;
    for (int i = 0; i < PQntuples(res) && !rw_daemon_draining(); i++) {
        if (reemit_poll(svc, res, i, why, sizeof(why)))
            rw_warn(COMP, "event=poll_reemit_failed detail=\"%s\"", why);
        else
            st->polls++;
    }
    PQclear(res);
    res = NULL;
    err = select_chunks(svc, SQL_PENDING_STALE, s->sweep_pending_stale_s, &res,
                        errstr, errlen);
    if (err)
        goto out;
    for (int i = 0; i < PQntuples(res) && !rw_daemon_draining(); i++) {
        if (requeue_batch(svc, res, i, false, why, sizeof(why)))
            rw_warn(COMP, "event=batch_requeue_failed detail=\"%s\"", why);
        else
            st->batches++;
    }
    PQclear(res);
    res = NULL;
    {
        char lim[24];
        const char *p[1] = {lim};
        snprintf(lim, sizeof(lim), "%lld", s->sweep_batch);
        err = rw_pg_exec_replan(svc->pg, SQL_DEFERRED_DUE, 1, p, &res, errstr,
                                errlen);
    }
    if (err)
        goto out;
    for (int i = 0; i < PQntuples(res) && !rw_daemon_draining(); i++) {
        rw_err_t derr = requeue_batch(svc, res, i, true, why, sizeof(why));
        if (derr == RW_OK)
            st->deferred++;
        else if (derr != RW_ERR_CONFLICT)
            rw_warn(COMP, "event=deferred_requeue_failed detail=\"%s\"", why);
    }
    PQclear(res);
    res = NULL;
    /* waves whose bake is over; a release's batches go out right below */
    err = rw_waves_release_due(svc->pg, s->sweep_batch, &st->released, errstr,
                               errlen);
    if (err)
        goto out;
    if (st->polls + st->batches + st->deferred + st->unsent + st->released >
            0 &&
        svc->kp &&
        rw_outbox_relay(svc->pg, svc->kp, s, RW_OUTBOX_RELAY_BATCH, 0,
                        &published, why, sizeof(why)))
        rw_warn(COMP, "event=relay_failed detail=\"%s\"", why);
    if (svc->rc &&
        release_finished(svc, st->locks_cursor, sizeof(st->locks_cursor),
                         &st->locks_cursor_id, &st->locks, why, sizeof(why)))
        rw_warn(COMP, "event=lock_sweep_failed detail=\"%s\"", why);
    err = rw_progress_sweep(svc->pg, &st->finalized, errstr, errlen);
out:
    PQclear(res);
    count("adopted", st->adopted);
    count("unsent", st->unsent);
    count("inconclusive", st->inconclusive);
    count("failed", st->failed);
    count("poll_reemitted", st->polls);
    count("batch_requeued", st->batches);
    count("deferred_requeued", st->deferred);
    count("finalized", st->finalized);
    count("waves_released", st->released);
    count("locks_released", st->locks);
    if (st->adopted + st->unsent + st->inconclusive + st->failed + st->polls +
            st->batches + st->deferred + st->finalized + st->released >
        0)
        rw_info(COMP,
                "event=swept adopted=%lld unsent=%lld inconclusive=%lld "
                "failed=%lld polls=%lld batches=%lld deferred=%lld "
                "finalized=%lld waves=%lld",
                st->adopted, st->unsent, st->inconclusive, st->failed,
                st->polls, st->batches, st->deferred, st->finalized,
                st->released);
    return err;
}
