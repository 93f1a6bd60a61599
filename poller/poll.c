/*
 * poll: one poll event, in steps:
 *
 *   1. load the chunk and drop duplicates: an event whose attempt is older
 *      than the chunk's recorded poll attempt, or whose bulk id is not the
 *      chunk's, or whose chunk is no longer triggered, is acknowledged and
 *      dropped (a done chunk of this bulk has its locks released again);
 *   2. load the chunk's targets in flight and ask Lagoon for the bulk's
 *      deployments, unless every target's build is known complete and
 *      only waits for its health check, or Lagoon was asked less than a
 *      poll interval ago (health checks make a gated chunk's events more
 *      frequent: Lagoon still hears from it once per interval);
 *   3. work out each polled target's new state (timed out once the poll
 *      attempts run out); with a health gate in the run's strategy, a
 *      completed build stays deploying and its environment is checked
 *      over HTTP, now and then every interval, until a 2xx (succeeded) or
 *      its attempts run out (failed);
 *   4. record the poll in one transaction: the targets, the chunk (done,
 *      or one poll further) and the next poll event queued in the outbox,
 *      so a crash in between loses nothing;
 *   5. after the commit: release or renew the locks, publish the next
 *      event or, for a done chunk, finalize the run; then, best effort,
 *      fetch and store the build logs of targets that ended (logs.c).
 */
#include "poll.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_chunk.h"
#include "rw_daemon.h"
#include "rw_health.h"
#include "rw_log.h"
#include "rw_outbox.h"
#include "rw_progress.h"
#include "rw_redis.h"
#include "rw_state.h"
#include "rw_strategy.h"

#define COMP "poller"

/* A health check's own timeout, at most this and never above its
 * interval, so a check never runs into the next one. */
#define HEALTH_TIMEOUT_MAX_MS 10000
/* The soonest a poll event is queued again for a health check. */
#define HEALTH_MIN_WAIT_MS 200

/*
 * Steps 1 and 2 in one statement: the chunk and its run, and one row per
 * target still in flight with the chunk's columns repeated; a chunk with
 * none yields its one row with the target columns NULL.
 */
static const char SQL_LOAD[] =
    "SELECT c.run_id, r.strategy, c.state AS chunk_state,"
    "       c.bulk_id AS chunk_bulk_id, c.poll_attempts,"
    "       (extract(epoch FROM now() - c.triggered_at) * 1000)::bigint"
    "         AS polled_ms,"
    "       COALESCE((extract(epoch FROM now() - c.sent_at) * 1000)::bigint,"
    "                -1) AS claimed_ms,"
    "       CASE WHEN c.lagoon_read_at >= c.triggered_at"
    "         THEN (extract(epoch FROM now() - c.lagoon_read_at)"
    "               * 1000)::bigint END AS lagoon_read_ms,"
    "       t.id, t.instance_id, t.state, t.lagoon_project,"
    "       t.lagoon_environment, t.lagoon_status, t.deployment_name,"
    "       t.route, t.health_attempts,"
    "       t.health_next_at IS NOT NULL AS awaiting_health,"
    "       GREATEST(0, ceil(extract(epoch FROM t.health_next_at - now())"
    "                        * 1000))::bigint AS health_wait_ms"
    " FROM deployment_runs r JOIN run_chunks c ON c.run_id = r.id"
    " LEFT JOIN run_targets t ON t.run_id = c.run_id AND t.chunk = c.chunk"
    "   AND t.state IN ('triggered', 'deploying')"
    " WHERE r.uuid = $1::uuid AND c.chunk = $2::int"
    " ORDER BY t.id";

static rw_msg_outcome_t fail(rw_service_t *svc, rw_err_t err,
                             const char *errstr, char *reason, size_t len)
{
    rw_service_note(svc, err);
    snprintf(reason, len, "%s: %s", rw_err_name(err), errstr);
    if (rw_pg_in_tx(svc->pg))
        rw_pg_rollback(svc->pg, NULL, 0);
    return rw_err_is_retriable(err) ? RW_MSG_RETRY : RW_MSG_DEAD;
}

/*
 * Whether the in-flight locks of a chunk claimed claimed_ms ago are renewed
 * now. The worker took them for ROLLWAVE_LOCK_TTL_S just before its claim;
 * while more than half of that is left (by default 7 of 14 hours) a
 * renewal buys nothing and costs a Redis round trip per poll. From half
 * the TTL on, every poll renews them, so a lock now outlives a gap in the
 * polls of up to half the TTL (it was the whole TTL). A lock that expires
 * loses nothing but the fast marker: the in-flight markers in Postgres
 * still keep every other run from the instance.
 */
static bool renew_due(const rw_service_t *svc, long long claimed_ms)
{
    return rw_redis_lock_renew_due(svc->s->lock_ttl_s * 1000, claimed_ms);
}

/* Release the locks of terminal targets, renew the others when due.
 * Best effort: locks expire on their own and Postgres is the truth. */
static void locks_after_poll(rw_service_t *svc, const char *run_uuid,
                             const rw_target_update_t *u, size_t n, bool renew)
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
        else if (renew)
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
 * answered: a Lagoon outage that outlasts half the TTL must not drop them;
 * a poller outage can, see renew_due).
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
    rw_strategy_t st;         /* the run's; st.health.set = a health gate */
    bool need_lagoon;         /* some target's build is not known complete */
    bool asked;               /* Lagoon was asked in this poll */
    bool exhausted;           /* the poll attempts (and time) have run out */
    long long asked_mono_ms;  /* when */
    long long lagoon_read_ms; /* since the chunk's last read, -1 = none */
    long long wait_ms;        /* the next event is due in this long */
    long long polled_ms;      /* since the chunk was triggered */
    long long claimed_ms;     /* since its claim (-1: unknown) */
    char (*health_msg)[512];  /* per target: its error */
    char (*health_what)[64];  /* per target: what its last check saw */
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
    free(p->health_msg);
    free(p->health_what);
    free(p->next_json);
}

/*
 * Steps 1 and 2: the chunk, whether this event is still its current one,
 * and its targets in flight (p->tg, rows 0 .. n-1).
 */
static rw_err_t load_chunk(rw_service_t *svc, poll_t *p, char *errstr,
                           size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *chunk = NULL;
    const rw_poll_msg_t *m = p->m;
    const char *par[2] = {m->run, p->chunk_s};
    const char *state, *bulk_id;

    err = rw_pg_exec(svc->pg, SQL_LOAD, 2, par, &p->tg, errstr, errlen);
    if (err)
        goto out;
    chunk = p->tg;
    rw_service_note_ok(svc, RW_SVC_PG);
    if (PQntuples(chunk) < 1) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                         "no chunk %d of run %s", m->chunk, m->run);
        goto out;
    }
    p->run_id = rw_pg_ll(chunk, 0, "run_id", 0);
    p->polled_ms = rw_pg_ll(chunk, 0, "polled_ms", 0);
    p->claimed_ms = rw_pg_ll(chunk, 0, "claimed_ms", -1);
    p->lagoon_read_ms = rw_pg_ll(chunk, 0, "lagoon_read_ms", -1);
    snprintf(p->run_s, sizeof(p->run_s), "%lld", p->run_id);
    if (rw_strategy_parse_json(rw_pg_str(chunk, 0, "strategy"), &p->st, errstr,
                               errlen)) {
        /* runs are refused such a strategy at creation: one that got
         * here anyway is rolled out without its gate, and said so */
        rw_warn(COMP, "event=strategy_unreadable run=%s detail=\"%s\"", m->run,
                errstr);
        rw_strategy_default(&p->st);
        errstr[0] = '\0';
    }
    state = rw_pg_str(chunk, 0, "chunk_state");
    bulk_id = rw_pg_str(chunk, 0, "chunk_bulk_id");
    if (strcmp(state, "done") == 0 && bulk_id &&
        strcmp(bulk_id, m->bulk_id) == 0) {
        /*
         * The poller that finished this chunk may have died between its
         * commit and its lock release: this redelivered event is what is
         * left of it, so release the chunk's locks (by owner: a lock taken
         * since by another run is not touched).
         */
        chunk_locks(svc, m, p->run_id, true);
        /* ... and between its commit and offering the run its end */
        {
            bool finalized = false;
            char ferr[256];
            if (rw_progress_chunk_ended(svc->pg, p->run_id, &finalized, ferr,
                                        sizeof(ferr)))
                rw_warn(COMP, "event=finalize_deferred run=%s detail=\"%s\"",
                        m->run, ferr);
        }
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

    p->asked = true;
    p->asked_mono_ms = t0;
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
        if (renew_due(svc, p->claimed_ms))
            chunk_locks(svc, p->m, p->run_id, false);
        return lerr;
    }
    if (lerr)
        rw_warn(COMP,
                "event=poll_unusable run=%s chunk=%d err=%s detail=\"%s\"",
                p->m->run, p->m->chunk, rw_err_name(lerr), errstr);
    return RW_OK;
}

/* Step 2: the targets in flight (loaded), and whether Lagoon is needed. */
static rw_err_t load_targets(poll_t *p, char *errstr, size_t errlen)
{
    /* the chunk's own row when none is in flight */
    p->n = rw_pg_str(p->tg, 0, "id") ? (size_t)PQntuples(p->tg) : 0;
    p->u = calloc(p->n + 1, sizeof(*p->u));
    p->health_msg = calloc(p->n + 1, sizeof(*p->health_msg));
    p->health_what = calloc(p->n + 1, sizeof(*p->health_what));
    if (!p->u || !p->health_msg || !p->health_what)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    /* with nothing left but health checks, Lagoon is not asked */
    p->need_lagoon = false;
    for (int row = 0; row < (int)p->n; row++)
        if (!rw_pg_bool(p->tg, row, "awaiting_health", 0))
            p->need_lagoon = true;
    return RW_OK;
}

/* A health check is due in ms: the next event comes then, if sooner. */
static void health_due_in(poll_t *p, long long ms)
{
    if (ms < HEALTH_MIN_WAIT_MS)
        ms = HEALTH_MIN_WAIT_MS;
    if (ms < p->wait_ms)
        p->wait_ms = ms;
}

/* Step 3, one target: its new state from its Lagoon row d (may be NULL).
 * Returns true when its environment is to be checked now. */
static bool new_state(poll_t *p, int row, const rw_lagoon_deployment_t *d,
                      bool exhausted)
{
    rw_target_update_t *u = &p->u[row];

    if (rw_pg_bool(p->tg, row, "awaiting_health", 0)) {
        /* the build is complete: only its check decides, when due */
        long long wait = rw_pg_ll(p->tg, row, "health_wait_ms", 0);
        u->to = u->from;
        p->all_terminal = false;
        if (wait > 0) {
            health_due_in(p, wait);
            return false;
        }
        u->route = rw_pg_str(p->tg, row, "route");
        u->health_attempts = (int)rw_pg_ll(p->tg, row, "health_attempts", 0);
        return true;
    }
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
    if (d && u->to == RW_TARGET_SUCCEEDED && p->st.health.set) {
        /* built, not yet known healthy: in flight until its gate ends,
         * first checked right away */
        u->to = RW_TARGET_DEPLOYING;
        u->route = d->route;
        u->health_attempts = 0;
        p->all_terminal = false;
        return true;
    }
    if (exhausted && !rw_target_terminal(u->to)) {
        u->to = RW_TARGET_TIMED_OUT;
        u->error = p->timeout_msg;
    }
    if (!rw_target_terminal(u->to))
        p->all_terminal = false;
    return false;
}

static void count_check(const char *result)
{
    char labels[48];

    snprintf(labels, sizeof(labels), "result=\"%s\"", result);
    rw_metrics_add(rw_metrics_counter("rollwave_health_checks_total",
                                      "health-gate checks by result", labels),
                   1);
}

/*
 * One target's gate after a check (what = NULL: passed). Fails it once
 * its attempts are used up; else the next check is an interval away.
 */
static void health_outcome(poll_t *p, size_t i, const char *what,
                           const char *url)
{
    rw_target_update_t *u = &p->u[i];
    const rw_health_t *h = &p->st.health;
    char shown[256];

    u->health = true;
    u->health_attempts++;
    u->health_next_ms = 0;
    u->health_error = NULL;
    if (!what) {
        u->to = RW_TARGET_SUCCEEDED;
        return;
    }
    rw_health_url_display(url, shown, sizeof(shown));
    u->health_error = what;
    if (u->health_attempts < h->attempts) {
        u->to = RW_TARGET_DEPLOYING;
        u->health_next_ms = (long long)h->interval_s * 1000;
        health_due_in(p, u->health_next_ms);
        p->all_terminal = false;
        return;
    }
    u->to = RW_TARGET_FAILED;
    snprintf(p->health_msg[i], sizeof(p->health_msg[i]),
             "health check: %s after %d attempt%s (%s)", what,
             u->health_attempts, u->health_attempts == 1 ? "" : "s", shown);
    u->error = p->health_msg[i];
    rw_info(COMP,
            "event=health_failed run=%s chunk=%d target=%lld instance=%lld "
            "detail=\"%s\"",
            p->m->run, p->m->chunk, u->target_id, u->instance_id, u->error);
}

/*
 * Step 3, the health gate: one GET per target in due[], all at once. A
 * URL that cannot be built (no route) fails its target at once: asking
 * again cannot give it a route.
 */
static rw_err_t check_health(poll_t *p, const size_t *due, size_t n_due,
                             char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_health_check_t *ck = calloc(n_due + 1, sizeof(*ck));
    char(*urls)[RW_HEALTH_URL_MAX] = calloc(n_due + 1, sizeof(*urls));
    size_t *at = calloc(n_due + 1, sizeof(*at));
    size_t n_ck = 0;
    long timeout_ms = (long)p->st.health.interval_s * 1000;
    char why[256];

    if (!ck || !urls || !at) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (timeout_ms > HEALTH_TIMEOUT_MAX_MS)
        timeout_ms = HEALTH_TIMEOUT_MAX_MS;
    for (size_t k = 0; k < n_due; k++) {
        size_t i = due[k];
        int row = (int)i;
        rw_target_update_t *u = &p->u[i];

        if (rw_health_url(p->st.health.url, u->route,
                          rw_pg_str(p->tg, row, "lagoon_project"),
                          rw_pg_str(p->tg, row, "lagoon_environment"), urls[k],
                          sizeof(urls[k]), why, sizeof(why))) {
            u->health = true;
            u->health_attempts++;
            u->health_next_ms = 0;
            u->to = RW_TARGET_FAILED;
            snprintf(p->health_msg[i], sizeof(p->health_msg[i]),
                     "health check: %s", why);
            u->error = p->health_msg[i];
            u->health_error = u->error;
            count_check("error");
            continue;
        }
        ck[n_ck].url = urls[k];
        at[n_ck++] = i;
    }
    err = rw_health_check_many(ck, n_ck, timeout_ms, errstr, errlen);
    if (err)
        goto out;
    for (size_t k = 0; k < n_ck; k++) {
        bool ok = ck[k].result == RW_HEALTH_OK;
        /* kept in the target's own buffer until the commit */
        char *what = p->health_what[at[k]];

        snprintf(what, sizeof(p->health_what[0]), "%s", ck[k].what);
        count_check(ok                                 ? "ok"
                    : ck[k].result == RW_HEALTH_FAILED ? "failed"
                                                       : "error");
        health_outcome(p, at[k], ok ? NULL : what, ck[k].url);
    }
out:
    free(ck);
    free(urls);
    free(at);
    return err;
}

/*
 * Step 2: whether Lagoon is asked. Only for builds not known complete,
 * and at most once per poll interval: a gated chunk's events come as
 * often as its checks are due. The last poll before the horizon asks
 * whatever the interval says, so no build times out unread.
 */
static bool lagoon_due(rw_service_t *svc, poll_t *p)
{
    long long interval = rw_settings_poll_interval_ms(svc->s);
    const rw_poll_msg_t *m = p->m;

    /* health checks make polls more frequent: a gated run's builds get
     * the polling horizon in time too, not only in polls */
    p->exhausted =
        m->attempt >= svc->s->poll_max_attempts &&
        (!p->st.health.set ||
         p->polled_ms >= (long long)svc->s->poll_max_attempts * interval);
    if (!p->need_lagoon)
        return false;
    /* an ungated chunk's events come an interval after its last read,
     * give or take a millisecond of rounding: they must not miss it */
    return p->exhausted || p->lagoon_read_ms < 0 ||
           p->lagoon_read_ms >= interval - interval / 20;
}

/* Step 3: the polled targets' updates; the next event if any. */
static rw_err_t new_states(rw_service_t *svc, poll_t *p, char *errstr,
                           size_t errlen)
{
    rw_err_t err = RW_OK;
    const rw_poll_msg_t *m = p->m;
    long long interval = rw_settings_poll_interval_ms(svc->s);
    size_t *due = calloc(p->n + 1, sizeof(*due));
    size_t n_due = 0;

    if (!due)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    snprintf(p->timeout_msg, sizeof(p->timeout_msg),
             "no terminal deployment after %d polls", m->attempt);
    p->all_terminal = true;
    p->wait_ms = interval;
    /* builds still unread wait for the next Lagoon read, no longer */
    if (p->need_lagoon && !p->asked && p->lagoon_read_ms >= 0 &&
        p->lagoon_read_ms < interval)
        p->wait_ms = interval - p->lagoon_read_ms;
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
        if (new_state(p, row, d, p->exhausted))
            due[n_due++] = i;
    }
    if (n_due > 0)
        err = check_health(p, due, n_due, errstr, errlen);
    free(due);
    if (err)
        return err;
    if (!p->all_terminal) {
        rw_poll_msg_t next = *m;
        next.attempt = m->attempt + 1;
        next.due_at_ms = rw_now_wall_ms() + p->wait_ms;
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
    err = rw_target_apply(svc->pg, p->run_id, p->u, p->n, &p->moved, errstr,
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
                                 p->asked ? rw_now_mono_ms() - p->asked_mono_ms
                                          : -1,
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
/* Whether this poll moved a target to failed or timed out. */
static bool failed_now(const poll_t *p)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->u[i].from != p->u[i].to && (p->u[i].to == RW_TARGET_FAILED ||
                                           p->u[i].to == RW_TARGET_TIMED_OUT))
            return true;
    return false;
}

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
    locks_after_poll(svc, m->run, p->u, p->n, renew_due(svc, p->claimed_ms));
    if (!p->all_terminal) {
        if (rw_outbox_publish(svc->pg, svc->kp, svc->s, p->outbox_id, "poll",
                              p->key, p->next_json, errstr, sizeof(errstr)))
            rw_warn(COMP, "event=poll_publish_deferred run=%s chunk=%d", m->run,
                    m->chunk);
        errstr[0] = '\0';
    } else {
        rw_info(COMP, "event=chunk_done run=%s chunk=%d polls=%d", m->run,
                m->chunk, m->attempt);
    }
    /*
     * In a run with failure thresholds a failure recorded now is offered
     * to them at once, chunk done or not (and again at every chunk end:
     * rw_progress_chunk_ended); otherwise only a chunk's end may end a
     * wave or the run.
     */
    if (failed_now(p) && rw_strategy_has_thresholds(&p->st))
        err = rw_progress_finalize(svc->pg, p->run_id, &finalized, NULL, errstr,
                                   sizeof(errstr));
    else if (p->all_terminal)
        err = rw_progress_chunk_ended(svc->pg, p->run_id, &finalized, errstr,
                                      sizeof(errstr));
    else
        return;
    if (err)
        /* the poll is recorded; the next chunk end (every one, in a run
         * with thresholds) or the sweep offers the run again, so this
         * message is still handled */
        rw_warn(COMP, "event=finalize_deferred run=%s err=%s detail=\"%s\"",
                m->run, rw_err_name(err), errstr);
}

/* The steps of the file's head comment, in order. */
rw_msg_outcome_t rw_poller_poll(rw_service_t *svc, rw_poller_logs_t *logs,
                                const rw_poll_msg_t *m, char *reason,
                                size_t len)
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
    err = load_targets(&p, errstr, sizeof(errstr));
    if (err)
        goto out;
    if (lagoon_due(svc, &p)) {
        err = ask_lagoon(svc, &p, errstr, sizeof(errstr));
        if (err)
            goto out;
    }
    err = new_states(svc, &p, errstr, sizeof(errstr));
    if (err)
        goto out;
    err = record(svc, &p, errstr, sizeof(errstr));
    if (err || p.stop)
        goto out;
    after_commit(svc, &p);
    rw_poller_logs_after_poll(logs, svc, p.run_id, m->run, p.u, p.n, p.tg);
out:
    if (err)
        outcome = fail(svc, err, errstr, reason, len);
    poll_free(&p);
    return outcome;
}
