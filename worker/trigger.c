/*
 * trigger: one batch message, start to finish. The order of steps is what
 * makes redelivery and replay safe:
 *
 *   1. load the chunk and its targets (Postgres is the truth, not the
 *      message); a finished chunk is handled work: a redelivered batch
 *      changes nothing, only a recorded replay re-opens it;
 *   2. defer a chunk of a run that respects deployment windows while its
 *      targets' windows are closed; take budget for the chunk from the
 *      fleet throttle (a chunk that does not fit is held, partition
 *      paused, and asks again later: everything waits for the fleet) and
 *      the run's own limit (a chunk past it is deferred); a deferred chunk
 *      gets not_before in Postgres and its batch is acknowledged, so the
 *      partition keeps flowing for other runs, and the recovery sweep
 *      queues it again once not_before has passed;
 *      re-check eligibility; take the Redis locks (one pipeline);
 *   3. claim in Postgres together with chunk -> triggering, stamped sent,
 *      and the throttle lease turned into claimed targets (one
 *      transaction; the in-flight unique index is the backstop);
 *   4. one bulkDeployEnvironmentLatest for the chunk;
 *   5. record the ending through rw_chunk: triggered (first poll event
 *      queued in the same transaction), failed for good, or not sent (the
 *      claims are given back and the batch is held for a retry with its
 *      partition paused, never slept on).
 *
 * An answer that may mean Lagoon ran the bulk (timeout, connection lost
 * after sending, 5xx, an unusable 200) leaves the chunk triggering with its
 * claims and locks: the recovery sweep looks the bulk up by name once the
 * settle window after the last send has passed, and adopts it or gives the
 * claims back. A worker that dies between 3 and 5 leaves the same state.
 */
#include "trigger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rw_chunk.h"
#include "rw_control.h"
#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_outbox.h"
#include "rw_progress.h"
#include "rw_replay.h"
#include "rw_runs.h"
#include "rw_schedule.h"
#include "rw_state.h"
#include "rw_strategy.h"
#include "rw_throttle.h"

#define COMP "worker"

/*
 * What the worker does with a target: nothing, claim it, skip it (with a
 * reason), or give back the lock it took for a claim that moved no row
 * (an abort or another handler moved the target first).
 */
enum action { ACT_NONE, ACT_CLAIM, ACT_SKIP, ACT_LOST };

typedef struct tgt {
    long long id;
    long long instance_id;
    rw_target_state_t state;
    const char *status;
    const char *project;
    const char *environment;
    bool is_beta;
    long long interval_days;
    long long beta_interval_days;
    const char *elsewhere; /* uuid of another run holding it in flight */
    enum action action;
    char reason[96];
    char key[96];
} tgt_t;

typedef struct chunk {
    long long run_id;
    char run_uuid[40];
    int chunk;
    rw_run_state_t run_status;
    rw_chunk_state_t state;
    int attempt;
    int poll_attempts;
    long long replay_id; /* the replay that last re-opened it, 0 = none */
    int send_failures;   /* sends that never reached Lagoon, this series */
    bool variables_only;
    bool respect_windows; /* hold the chunk while its windows are closed */
    bool windows_open;    /* every pending target's window is open now */
    char windows_not_before[64]; /* when closed: when to look again */
    long long run_limit; /* strategy.max_in_flight of the run, 0 = none */
    char bulk_id[RW_LAGOON_BULK_ID_MAX];
    PGresult *res; /* targets; the tgt_t strings point into it */
    tgt_t *t;
    size_t n;
} chunk_t;

/*
 * Step 1 in one statement: the chunk and its run (c), whether the chunk's
 * deployment windows are open (w, only for a run that respects them) and
 * one row per target, with the run that has the target's instance in
 * flight when that is another run. A chunk without targets still yields
 * its one row (target columns NULL).
 *
 * w: whether every pending target's effective window (its group's, else
 * its store app's) is open now, and if not, when to look again: when the
 * last of the closed windows opens, or after $3 ms
 * (ROLLWAVE_WINDOW_WAIT_MS) if that comes first, so that a window edited
 * meanwhile is seen. The window functions run once per distinct
 * effective window of the chunk (a handful), not once per target: each
 * call of those SQL functions costs about half a millisecond, which per
 * target was the largest Postgres cost of a rollout. Targets without any
 * window never reach them.
 *
 * The targets are read through (run, chunk) only: a lateral join names
 * both, so no plan can read every run's targets of that chunk number and
 * join them afterwards (a plan the planner chose mid-rollout once its
 * statistics came in: 18 ms per load instead of 1).
 *
 * The pending targets' instances in flight in another run are read in one
 * call of rw_in_flight_elsewhere (0022), whose lookup of the markers goes
 * through their primary key whatever the planner thinks of the table: as
 * a sub-select per target, a plan cached while target_in_flight was small
 * read the whole table (its pages full of dead markers) once per target,
 * 16-19 ms per load.
 *
 * The in-flight view is read before the claim, not under it: a claim that
 * meets a marker taken meanwhile fails on the markers' unique key and the
 * batch's next try skips the instance.
 */
static const char SQL_LOAD[] =
    "WITH c AS ("
    " SELECT r.id AS run_id, r.status AS run_status, r.variables_only,"
    "        r.respect_windows, r.strategy, r.total_count,"
    "        c.state AS chunk_state, c.attempt, c.bulk_id AS chunk_bulk_id,"
    "        c.poll_attempts, COALESCE(c.replay_id, 0) AS replay_id,"
    "        c.send_failures"
    " FROM deployment_runs r JOIN run_chunks c ON c.run_id = r.id"
    " WHERE r.uuid = $1::uuid AND c.chunk = $2::int),"
    " w AS ("
    " SELECT COALESCE(bool_and(e.open), true) AS windows_open,"
    "        LEAST(max(CASE WHEN NOT e.open"
    "                  THEN rw_window_next_open(e.tz, e.days, e.wfrom, e.wto,"
    "                                           now()) END),"
    "              now() + make_interval(secs => $3::bigint / 1000.0))::text"
    "          AS windows_not_before"
    " FROM (SELECT d.tz, d.days, d.wfrom, d.wto,"
    "              rw_window_open(d.tz, d.days, d.wfrom, d.wto, now())"
    "                AS open"
    "       FROM (SELECT DISTINCT"
    "               CASE WHEN g.window_tz IS NOT NULL THEN g.window_tz"
    "                    ELSE a.window_tz END AS tz,"
    "               CASE WHEN g.window_tz IS NOT NULL THEN g.window_days"
    "                    ELSE a.window_days END AS days,"
    "               CASE WHEN g.window_tz IS NOT NULL THEN g.window_from_min"
    "                    ELSE a.window_from_min END AS wfrom,"
    "               CASE WHEN g.window_tz IS NOT NULL THEN g.window_to_min"
    "                    ELSE a.window_to_min END AS wto"
    "             FROM c"
    "             JOIN run_targets t ON t.run_id = c.run_id"
    "               AND t.chunk = $2::int"
    "             JOIN app_instances i ON i.id = t.instance_id"
    "             JOIN store_apps a ON a.id = i.store_app_id"
    "             LEFT JOIN user_groups g ON g.id = i.user_group_id"
    "             WHERE c.respect_windows AND t.state = 'pending'"
    "               AND (g.window_tz IS NOT NULL"
    "                    OR a.window_tz IS NOT NULL)) d) e)"
    " SELECT c.*, w.windows_open, w.windows_not_before,"
    "        x.id, x.instance_id, x.state, x.status, x.lagoon_project,"
    "        x.lagoon_environment, x.is_beta, x.redeploy_interval_days,"
    "        x.beta_redeploy_interval_days,"
    "        CASE WHEN x.state = 'pending' THEN e.run_uuid END AS elsewhere"
    " FROM c CROSS JOIN w"
    " LEFT JOIN LATERAL"
    "  (SELECT t.id, t.instance_id, t.state, i.status,"
    "          t.lagoon_project, t.lagoon_environment,"
    "          COALESCE(g.is_beta, false) AS is_beta,"
    "          a.redeploy_interval_days, a.beta_redeploy_interval_days"
    "   FROM run_targets t"
    "   JOIN app_instances i ON i.id = t.instance_id"
    "   JOIN store_apps a ON a.id = i.store_app_id"
    "   LEFT JOIN user_groups g ON g.id = i.user_group_id"
    "   WHERE t.run_id = c.run_id AND t.chunk = $2::int) x ON true"
    " LEFT JOIN rw_in_flight_elsewhere("
    "   ARRAY(SELECT t.instance_id FROM c, run_targets t"
    "         WHERE t.run_id = c.run_id AND t.chunk = $2::int"
    "           AND t.state = 'pending'),"
    "   (SELECT run_id FROM c)) e ON e.instance_id = x.instance_id"
    " ORDER BY x.id";

static void chunk_free(chunk_t *c)
{
    PQclear(c->res);
    free(c->t);
}

/*
 * RW_MSG_RETRY for retriable errors (rw_err_is_retriable), RW_MSG_DEAD
 * otherwise. A unique violation is a claim that lost a race with another
 * run's claim of the same instance: the next try skips that instance.
 */
static rw_msg_outcome_t fail(rw_service_t *svc, rw_err_t err,
                             const char *errstr, char *reason, size_t len)
{
    rw_service_note(svc, err);
    snprintf(reason, len, "%s: %s", rw_err_name(err), errstr);
    if (svc->pg && rw_pg_in_tx(svc->pg))
        rw_pg_rollback(svc->pg, NULL, 0);
    return rw_err_is_retriable(err) || err == RW_ERR_PG_UNIQUE ? RW_MSG_RETRY
                                                               : RW_MSG_DEAD;
}

/*
 * The run's own in-flight limit from its strategy snapshot: a count, or a
 * percentage of the run's targets. One that does not parse is no limit
 * (the run's creation refuses such a strategy; this is the safety net).
 */
static long long run_limit(const char *run_uuid, const char *json,
                           long long total)
{
    rw_strategy_t st;
    char errstr[256];

    if (!json || !*json)
        return 0;
    if (rw_strategy_parse_json(json, &st, errstr, sizeof(errstr)) != RW_OK) {
        rw_warn(COMP, "event=strategy_unreadable run=%s detail=\"%s\"",
                run_uuid, errstr);
        return 0;
    }
    if (!st.max_in_flight.set)
        return 0;
    return rw_amount_of(&st.max_in_flight, total > 0 ? total : 1);
}

static rw_err_t load(rw_service_t *svc, const rw_batch_msg_t *m, chunk_t *c,
                     char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char chunk_s[16], wait_s[24];
    const char *p[3] = {m->run, chunk_s, wait_s};
    const char *nb;
    int rows;

    snprintf(chunk_s, sizeof(chunk_s), "%d", m->chunk);
    snprintf(wait_s, sizeof(wait_s), "%lld", svc->s->window_wait_ms);
    err = rw_pg_exec(svc->pg, SQL_LOAD, 3, p, &c->res, errstr, errlen);
    if (err)
        goto out;
    res = c->res;
    rows = PQntuples(res);
    if (rows < 1) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                         "no chunk %d of run %s", m->chunk, m->run);
        goto out;
    }
    c->run_id = rw_pg_ll(res, 0, "run_id", 0);
    snprintf(c->run_uuid, sizeof(c->run_uuid), "%s", m->run);
    c->chunk = m->chunk;
    c->run_status =
        (rw_run_state_t)rw_run_state_parse(rw_pg_str(res, 0, "run_status"));
    c->state = (rw_chunk_state_t)rw_chunk_state_parse(
        rw_pg_str(res, 0, "chunk_state"));
    c->attempt = (int)rw_pg_ll(res, 0, "attempt", 0);
    c->poll_attempts = (int)rw_pg_ll(res, 0, "poll_attempts", 0);
    c->replay_id = rw_pg_ll(res, 0, "replay_id", 0);
    c->send_failures = (int)rw_pg_ll(res, 0, "send_failures", 0);
    c->variables_only = rw_pg_bool(res, 0, "variables_only", 0);
    c->respect_windows = rw_pg_bool(res, 0, "respect_windows", 0);
    c->windows_open = rw_pg_bool(res, 0, "windows_open", 1);
    nb = rw_pg_str(res, 0, "windows_not_before");
    snprintf(c->windows_not_before, sizeof(c->windows_not_before), "%s",
             nb ? nb : "");
    c->run_limit = run_limit(c->run_uuid, rw_pg_str(res, 0, "strategy"),
                             rw_pg_ll(res, 0, "total_count", 0));
    nb = rw_pg_str(res, 0, "chunk_bulk_id");
    snprintf(c->bulk_id, sizeof(c->bulk_id), "%s", nb ? nb : "");

    c->t = calloc((size_t)rows + 1, sizeof(*c->t));
    if (!c->t) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    c->n = 0;
    for (int row = 0; row < rows; row++) {
        tgt_t *t;
        if (!rw_pg_str(res, row, "id"))
            continue; /* the chunk's row when it has no targets */
        t = &c->t[c->n++];
        t->id = rw_pg_ll(res, row, "id", 0);
        t->instance_id = rw_pg_ll(res, row, "instance_id", 0);
        t->state = (rw_target_state_t)rw_target_state_parse(
            rw_pg_str(res, row, "state"));
        t->status = rw_pg_str(res, row, "status");
        t->project = rw_pg_str(res, row, "lagoon_project");
        t->environment = rw_pg_str(res, row, "lagoon_environment");
        t->is_beta = rw_pg_bool(res, row, "is_beta", 0);
        t->interval_days = rw_pg_ll(res, row, "redeploy_interval_days", 0);
        t->beta_interval_days =
            rw_pg_ll(res, row, "beta_redeploy_interval_days", 0);
        t->elsewhere = rw_pg_str(res, row, "elsewhere");
        rw_redis_lock_key(t->key, sizeof(t->key), svc->s->kafka_topic_prefix,
                          t->instance_id);
    }
out:
    return err;
}

static int cmp_id(const void *a, const void *b)
{
    long long x = *(const long long *)a;
    long long y = *(const long long *)b;
    return (x > y) - (x < y);
}

static size_t count_of(const chunk_t *c, enum action act)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++)
        n += c->t[i].action == act;
    return n;
}

/* Release the locks of targets with action act (best effort). */
static void release_locks(rw_service_t *svc, chunk_t *c, enum action act)
{
    const char **keys = calloc(c->n + 1, sizeof(*keys));
    int *released = calloc(c->n + 1, sizeof(*released));
    size_t k = 0;
    char errstr[256];

    if (!keys || !released)
        goto out;
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i].action == act)
            keys[k++] = c->t[i].key;
    if (k > 0 && rw_redis_lock_release(svc->rc, keys, k, c->run_uuid, released,
                                       errstr, sizeof(errstr))) {
        /* they expire with their TTL; Postgres stays the truth */
        rw_warn(COMP, "event=lock_release_failed run=%s chunk=%d detail=\"%s\"",
                c->run_uuid, c->chunk, errstr);
    } else if (k > 0) {
        rw_metrics_add(rw_metrics_counter("rollwave_locks_released_total",
                                          "instance locks released", NULL),
                       (double)k);
    }
out:
    free(keys);
    free(released);
}

/*
 * Decide per target: claim, skip (with reason) or leave alone. Then take
 * the Redis locks for the ones to claim; a lock held by another run makes
 * the target skipped.
 */
static rw_err_t plan(rw_service_t *svc, chunk_t *c, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    const char **keys = NULL;
    int *got = NULL;
    size_t *idx = NULL, k = 0;

    for (size_t i = 0; i < c->n; i++) {
        tgt_t *t = &c->t[i];
        if (t->state != RW_TARGET_PENDING) {
            t->action = ACT_NONE;
            continue;
        }
        if (!rw_runs_status_eligible(t->status)) {
            t->action = ACT_SKIP;
            snprintf(t->reason, sizeof(t->reason), "not eligible: status %s",
                     t->status ? t->status : "?");
        } else if (!t->project || !t->environment) {
            t->action = ACT_SKIP;
            snprintf(t->reason, sizeof(t->reason), "no lagoon target");
        } else if (t->elsewhere) {
            /* Postgres's view: another run has the instance in flight */
            t->action = ACT_SKIP;
            snprintf(t->reason, sizeof(t->reason), "in flight in run %s",
                     t->elsewhere);
        } else {
            t->action = ACT_CLAIM;
        }
    }
    keys = calloc(c->n + 1, sizeof(*keys));
    got = calloc(c->n + 1, sizeof(*got));
    idx = calloc(c->n + 1, sizeof(*idx));
    if (!keys || !got || !idx) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i].action == ACT_CLAIM) {
            keys[k] = c->t[i].key;
            idx[k++] = i;
        }
    if (k == 0)
        goto out;
    err = rw_redis_lock_acquire(svc->rc, keys, k, c->run_uuid,
                                svc->s->lock_ttl_s * 1000, got, errstr, errlen);
    if (err)
        goto out;
    rw_service_note_ok(svc, RW_SVC_REDIS);
    for (size_t j = 0; j < k; j++) {
        tgt_t *t = &c->t[idx[j]];
        if (got[j]) {
            rw_metrics_add(rw_metrics_counter("rollwave_locks_acquired_total",
                                              "instance locks taken", NULL),
                           1);
            continue;
        }
        rw_metrics_add(rw_metrics_counter("rollwave_locks_contended_total",
                                          "instance locks held by another "
                                          "run",
                                          NULL),
                       1);
        t->action = ACT_SKIP;
        snprintf(t->reason, sizeof(t->reason),
                 "in flight elsewhere (instance lock held)");
    }
out:
    free(keys);
    free(got);
    free(idx);
    return err;
}

/* Move the skip-planned targets to skipped, one statement per reason. */
static rw_err_t write_skips(rw_service_t *svc, chunk_t *c, char *errstr,
                            size_t errlen)
{
    rw_err_t err = RW_OK;

    for (size_t i = 0; i < c->n; i++) {
        const char *reason = c->t[i].reason;
        long long *ids;
        size_t n = 0;
        if (c->t[i].action != ACT_SKIP || c->t[i].reason[0] == '\0')
            continue;
        ids = calloc(c->n, sizeof(*ids));
        if (!ids)
            return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        for (size_t j = i; j < c->n; j++)
            if (c->t[j].action == ACT_SKIP &&
                strcmp(c->t[j].reason, reason) == 0) {
                ids[n++] = c->t[j].id;
                if (j != i)
                    c->t[j].reason[0] = '\0'; /* written with this group */
            }
        err = rw_target_transition(svc->pg, c->run_id, ids, n,
                                   RW_TARGET_PENDING, RW_TARGET_SKIPPED, false,
                                   reason, NULL, NULL, errstr, errlen);
        free(ids);
        if (err)
            return err;
    }
    return err;
}

/*
 * Claim (step 3). Returns the number of targets to trigger in *n. The
 * throttle lease (0 = none) is settled in the same transaction: from the
 * commit on, the claimed targets count themselves as in flight.
 */
/*
 * The common claim, nothing to skip and something to claim, in one
 * statement (rw_chunk_claim). *done false: every target was moved by
 * another handler meanwhile; the transaction below records that.
 */
static rw_err_t claim_at_once(rw_service_t *svc, chunk_t *c, long long lease,
                              bool *lease_lost, char *bulk_name,
                              size_t bulk_name_len, size_t *n, bool *done,
                              char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_chunk_claim_result_t r;
    long long *ids = calloc(c->n + 1, sizeof(*ids));
    size_t k = 0;

    *done = true;
    memset(&r, 0, sizeof(r));
    if (!ids)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i].action == ACT_CLAIM)
            ids[k++] = c->t[i].id;
    snprintf(bulk_name, bulk_name_len, "rollwave %s c%d a%d", c->run_uuid,
             c->chunk, c->attempt + 1);
    err =
        rw_chunk_claim(svc->pg, c->run_id, c->chunk, c->attempt + 1, bulk_name,
                       "claimed", ids, k, lease, &r, errstr, errlen);
    if (err)
        goto out;
    if (!r.chunk_ok) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                         "chunk %d of run %lld is no longer pending", c->chunk,
                         c->run_id);
        goto out;
    }
    if (!r.lease_ok) {
        *lease_lost = true;
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                         "throttle lease %lld expired before the claim", lease);
        goto out;
    }
    if (!r.moved) {
        *done = false;
        goto out;
    }
    /* a target another handler moved meanwhile is not ours to trigger */
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i].action == ACT_CLAIM &&
            !bsearch(&c->t[i].id, r.claimed, r.n_claimed, sizeof(long long),
                     cmp_id))
            c->t[i].action = ACT_LOST;
    *n = count_of(c, ACT_CLAIM);
    c->attempt++;
out:
    free(ids);
    free(r.claimed);
    return err;
}

static rw_err_t claim(rw_service_t *svc, chunk_t *c, long long lease,
                      bool *lease_lost, char *bulk_name, size_t bulk_name_len,
                      size_t *n, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    long long *ids = NULL, *moved = NULL;
    size_t nclaim = 0, nmoved = 0;
    bool done = false;

    *n = 0;
    *lease_lost = false;
    if (count_of(c, ACT_SKIP) == 0 && count_of(c, ACT_CLAIM) > 0) {
        err = claim_at_once(svc, c, lease, lease_lost, bulk_name, bulk_name_len,
                            n, &done, errstr, errlen);
        if (err || done)
            return err;
    }
    err = rw_pg_begin(svc->pg, errstr, errlen);
    if (err)
        goto out;
    err = write_skips(svc, c, errstr, errlen);
    if (err)
        goto out;
    ids = calloc(c->n + 1, sizeof(*ids));
    if (!ids) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i].action == ACT_CLAIM)
            ids[nclaim++] = c->t[i].id;
    if (nclaim > 0) {
        err = rw_target_transition(svc->pg, c->run_id, ids, nclaim,
                                   RW_TARGET_PENDING, RW_TARGET_CLAIMED, false,
                                   NULL, &moved, &nmoved, errstr, errlen);
        if (err)
            goto out;
        /* a target another handler moved meanwhile is not ours to trigger */
        for (size_t i = 0; i < c->n; i++) {
            bool hit = false;
            if (c->t[i].action != ACT_CLAIM)
                continue;
            for (size_t j = 0; j < nmoved && !hit; j++)
                hit = moved[j] == c->t[i].id;
            if (!hit)
                c->t[i].action = ACT_LOST;
        }
    }
    *n = count_of(c, ACT_CLAIM);
    if (*n == 0) {
        err = rw_chunk_transition_one(
            svc->pg, c->run_id, c->chunk, RW_CHUNK_PENDING, RW_CHUNK_DONE,
            false, NULL, "nothing to trigger", errstr, errlen);
        if (err)
            goto out;
    } else {
        rw_chunk_change_t ch = RW_CHUNK_CHANGE_INIT;
        snprintf(bulk_name, bulk_name_len, "rollwave %s c%d a%d", c->run_uuid,
                 c->chunk, c->attempt + 1);
        ch.attempt = c->attempt + 1;
        ch.bulk_name = bulk_name;
        /* stamped sent before the call: a crash after it is in doubt */
        err = rw_chunk_transition_one(svc->pg, c->run_id, c->chunk,
                                      RW_CHUNK_PENDING, RW_CHUNK_TRIGGERING,
                                      false, &ch, "claimed", errstr, errlen);
        if (err)
            goto out;
        c->attempt++;
    }
    if (lease > 0) {
        err = rw_throttle_settle(svc->pg, lease, errstr, errlen);
        /* expired meanwhile: its budget may be another worker's now */
        *lease_lost = err == RW_ERR_CONFLICT;
        if (err)
            goto out;
    }
    err = rw_pg_commit(svc->pg, errstr, errlen);
out:
    if (err && rw_pg_in_tx(svc->pg))
        rw_pg_rollback(svc->pg, NULL, 0);
    free(ids);
    free(moved);
    return err;
}

/* Step 4: the Lagoon call, once: a retry is the held batch's next try. */
static rw_err_t fire(rw_service_t *svc, chunk_t *c, const char *bulk_name,
                     char *bulk_id, size_t bulk_id_len, char *errstr,
                     size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_lagoon_env_t *envs = calloc(c->n + 1, sizeof(*envs));
    rw_lagoon_var_t var = {"LAGOON_VARIABLES_ONLY", "true"};
    size_t k = 0;
    long long t0 = rw_now_mono_ms();
    char labels[96];
    static const double buckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

    if (!envs)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i].action == ACT_CLAIM) {
            envs[k].project = c->t[i].project;
            envs[k].environment = c->t[i].environment;
            k++;
        }
    err = rw_lagoon_bulk_deploy(svc->lc, bulk_name, envs, k, &var,
                                c->variables_only ? 1 : 0, bulk_id, bulk_id_len,
                                errstr, errlen);
    rw_metrics_observe(
        rw_metrics_histogram("rollwave_lagoon_call_seconds",
                             "Lagoon API call latency",
                             "operation=\"bulk_deploy\"", buckets,
                             sizeof(buckets) / sizeof(buckets[0])),
        (double)(rw_now_mono_ms() - t0) / 1000.0);
    snprintf(labels, sizeof(labels), "operation=\"bulk_deploy\",outcome=\"%s\"",
             err ? rw_err_name(err) : "ok");
    rw_metrics_add(rw_metrics_counter("rollwave_lagoon_calls_total",
                                      "Lagoon API calls", labels),
                   1);
    free(envs);
    return err;
}

/* The claimed targets in rw_chunk's terms; points into c. */
static rw_chunk_claim_t *claims_of(const chunk_t *c, size_t *n)
{
    rw_chunk_claim_t *t = calloc(c->n + 1, sizeof(*t));

    *n = 0;
    for (size_t i = 0; t && i < c->n; i++) {
        const tgt_t *g = &c->t[i];
        if (g->action != ACT_CLAIM)
            continue;
        t[*n].target_id = g->id;
        t[*n].instance_id = g->instance_id;
        t[*n].project = g->project;
        t[*n].environment = g->environment;
        t[*n].is_beta = g->is_beta;
        t[*n].interval_days = g->interval_days;
        t[*n].beta_interval_days = g->beta_interval_days;
        (*n)++;
    }
    return t;
}

/* A chunk already triggered: emit its current poll event again. */
static rw_err_t reemit_poll(rw_service_t *svc, const chunk_t *c, char *errstr,
                            size_t errlen)
{
    rw_err_t err;
    rw_poll_msg_t pm;
    char key[RW_CODEC_KEY_MAX];
    char *json = NULL;

    memset(&pm, 0, sizeof(pm));
    pm.run = (char *)c->run_uuid;
    pm.chunk = c->chunk;
    pm.bulk_id = (char *)c->bulk_id;
    pm.attempt = c->poll_attempts > 0 ? c->poll_attempts : 1;
    pm.due_at_ms = rw_now_wall_ms();
    err = rw_codec_poll_encode(&pm, &json, errstr, errlen);
    if (err)
        return err;
    rw_codec_key(key, sizeof(key), c->run_uuid, c->chunk);
    err = rw_produce_sync(svc->kp, svc->topic_poll, key, json, errstr, errlen);
    free(json);
    return err;
}

/* The newest recorded replay covering this batch's offset, 0 = none. */
static rw_err_t find_replay(rw_service_t *svc, const rw_kafka_msg_t *msg,
                            long long *replay_id, char *errstr, size_t errlen)
{
    return rw_replay_find(svc->pg, "batches", (int)rw_kafka_msg_partition(msg),
                          (long long)rw_kafka_msg_offset(msg), replay_id,
                          errstr, errlen);
}

/* How a failed send ends: in doubt, held for a retry, or failed. */
static rw_msg_outcome_t after_send_error(rw_service_t *svc, chunk_t *c,
                                         rw_err_t send_err,
                                         const char *send_errstr, char *reason,
                                         size_t len)
{
    rw_err_t err;
    rw_chunk_ref_t ref = {c->run_id, c->run_uuid, c->chunk, c->attempt,
                          c->run_status};
    rw_chunk_claim_t *t;
    size_t n = 0;
    char why[640], errstr[512] = "";
    rw_msg_outcome_t outcome = RW_MSG_ACK;
    rw_err_class_t cls = rw_err_class(send_err, RW_OP_SEND);

    if (cls == RW_ERR_CLASS_IN_DOUBT) {
        /*
         * Lagoon may have run it: sending it again could deploy the chunk
         * twice. The claims and locks stay; the recovery sweep looks the
         * bulk up by name once Lagoon had time to record it.
         */
        rw_warn(COMP,
                "event=trigger_in_doubt run=%s chunk=%d attempt=%d err=%s "
                "detail=\"%s\"",
                c->run_uuid, c->chunk, c->attempt, rw_err_name(send_err),
                send_errstr);
        snprintf(why, sizeof(why), "in doubt after %s: %s",
                 rw_err_name(send_err), send_errstr);
        /* best effort: only what the sweep says when it resolves it */
        rw_chunk_note_error(svc->pg, c->run_id, c->chunk, c->attempt, why, NULL,
                            0);
        rw_metrics_add(rw_metrics_counter("rollwave_triggers_in_doubt_total",
                                          "bulk mutations whose outcome is "
                                          "unknown, left to the recovery "
                                          "sweep",
                                          NULL),
                       1);
        return RW_MSG_ACK;
    }
    t = claims_of(c, &n);
    if (!t) {
        snprintf(reason, len, "out of memory");
        return RW_MSG_RETRY;
    }
    snprintf(why, sizeof(why), "trigger failed: %s: %s", rw_err_name(send_err),
             send_errstr);
    if (cls == RW_ERR_CLASS_RETRY &&
        c->send_failures < svc->s->trigger_retries) {
        /* it never reached Lagoon: give the claims back, try again later */
        err = rw_chunk_record_unsent(svc->pg, svc->rc, svc->s, &ref, t, n, why,
                                     errstr, sizeof(errstr));
        if (!err) {
            svc->retry_after_ms =
                rw_backoff_ms(svc->msg_retries, svc->s->trigger_backoff_base_ms,
                              svc->s->trigger_backoff_max_ms, &svc->rng);
            snprintf(reason, len, "%s", why);
            outcome = RW_MSG_RETRY;
        }
    } else {
        err = rw_chunk_record_failed(svc->pg, svc->rc, svc->s, &ref, t, n, why,
                                     errstr, sizeof(errstr));
    }
    if (err == RW_ERR_CONFLICT)
        /* the sweep resolved the chunk meanwhile */
        outcome = RW_MSG_ACK;
    else if (err)
        outcome = fail(svc, err, errstr, reason, len);
    free(t);
    return outcome;
}

/*
 * Defer the chunk (step 2): not_before (an instant, or now + delay_ms when
 * NULL) and the reason in Postgres, then the batch is acknowledged; the
 * recovery sweep queues it again once not_before has passed. A chunk that
 * moved on meanwhile (aborted, triggered by a duplicate) needs nothing.
 */
static void defer(rw_service_t *svc, const chunk_t *c, const char *not_before,
                  long long delay_ms, const char *why,
                  rw_msg_outcome_t *outcome, char *reason, size_t len)
{
    rw_err_t err = RW_OK;
    char errstr[512] = "";

    err = rw_chunk_defer(svc->pg, c->run_id, c->chunk, c->attempt, not_before,
                         delay_ms, why, errstr, sizeof(errstr));
    if (err == RW_ERR_CONFLICT) {
        snprintf(reason, len, "chunk changed while deferred: handled");
        *outcome = RW_MSG_ACK;
        return;
    }
    if (err) {
        *outcome = fail(svc, err, errstr, reason, len);
        return;
    }
    rw_info(COMP,
            "event=chunk_deferred run=%s chunk=%d not_before=\"%s\" "
            "reason=\"%s\"",
            c->run_uuid, c->chunk, not_before ? not_before : "soon", why);
    rw_metrics_add(rw_metrics_counter("rollwave_chunks_deferred_total",
                                      "chunks deferred in Postgres (window "
                                      "closed, run limit) with their batch "
                                      "acknowledged",
                                      NULL),
                   1);
    snprintf(reason, len, "deferred: %s", why);
    *outcome = RW_MSG_ACK;
}

/*
 * Budget for the chunk's pending targets (step 2). false: the batch is to
 * wait for the fleet (*outcome RW_MSG_WAIT, retry_after_ms set), was
 * deferred for its run's own limit (*outcome RW_MSG_ACK), or Postgres
 * failed.
 */
static bool take_budget(rw_service_t *svc, rw_gate_t *gate, const chunk_t *c,
                        long long *lease, rw_msg_outcome_t *outcome,
                        char *reason, size_t len)
{
    long long want = 0, wait_ms = 0;
    rw_throttle_verdict_t v = RW_THROTTLE_GRANTED;
    rw_err_t err = RW_OK;
    char errstr[512] = "";

    for (size_t i = 0; i < c->n; i++)
        want += c->t[i].state == RW_TARGET_PENDING;
    if (!gate || want == 0)
        return true;
    if (rw_gate_take(gate, svc, want, c->run_id, c->run_limit, lease, &wait_ms,
                     &v, reason, len, &err, errstr, sizeof(errstr)))
        return true;
    if (err) {
        /* the batch is fine: whatever failed, it is tried again */
        (void)fail(svc, err, errstr, reason, len);
        *outcome = RW_MSG_RETRY;
        return false;
    }
    if (v == RW_THROTTLE_RUN_LIMIT) {
        /* the run's own limit: holding the partition would make every run
         * behind this one wait for it */
        char why[256];
        snprintf(why, sizeof(why), "%s", reason);
        defer(svc, c, NULL, svc->s->run_limit_wait_ms, why, outcome, reason,
              len);
        return false;
    }
    if (svc->msg_waited_ms == 0)
        rw_info(COMP,
                "event=batch_waiting run=%s chunk=%d targets=%lld "
                "reason=\"%s\"",
                c->run_uuid, c->chunk, want, reason);
    svc->retry_after_ms = wait_ms;
    *outcome = RW_MSG_WAIT;
    return false;
}

/*
 * Step 2, first: a run that respects deployment windows defers a chunk
 * whose targets' windows are not all open until the last of them opens
 * (or ROLLWAVE_WINDOW_WAIT_MS, whichever first). A re-queued chunk comes
 * through here again: one still outside a window is deferred again.
 * false: the chunk was deferred or Postgres failed (*outcome set).
 */
static bool window_open(rw_service_t *svc, const chunk_t *c,
                        rw_msg_outcome_t *outcome, char *reason, size_t len)
{
    if (!c->respect_windows || c->windows_open)
        return true;
    defer(svc, c, c->windows_not_before[0] ? c->windows_not_before : NULL, 0,
          "deployment window closed", outcome, reason, len);
    return false;
}

/*
 * A finished chunk (step 1) is handled work: a batch redelivered after a
 * crash or a rebalance changes nothing. Only a recorded replay of this
 * offset re-attempts its failed and timed-out targets, once per replay;
 * then the chunk is loaded again. false: nothing more to do (*outcome set).
 */
static bool reopen_if_replayed(rw_service_t *svc, const rw_batch_msg_t *m,
                               const rw_kafka_msg_t *msg, chunk_t *c,
                               rw_msg_outcome_t *outcome, char *reason,
                               size_t len)
{
    rw_err_t err = RW_OK;
    char errstr[512] = "";
    long long replay_id = 0, reopened = 0, chunks = 0;

    if (msg && c->run_status != RW_RUN_CANCELLED) {
        err = find_replay(svc, msg, &replay_id, errstr, sizeof(errstr));
        if (err)
            goto out;
    }
    if (replay_id <= c->replay_id) {
        rw_info(COMP,
                "event=batch_ignored run=%s chunk=%d reason=chunk_finished",
                c->run_uuid, c->chunk);
        return false;
    }
    err = rw_pg_begin(svc->pg, errstr, sizeof(errstr));
    if (!err)
        err = rw_control_reopen(svc->pg, c->run_id, c->chunk,
                                svc->s->max_attempts, "batch replayed",
                                replay_id, false, &reopened, &chunks, errstr,
                                sizeof(errstr));
    if (!err)
        err = rw_pg_commit(svc->pg, errstr, sizeof(errstr));
    if (err)
        goto out;
    if (reopened == 0) {
        rw_info(COMP,
                "event=batch_ignored run=%s chunk=%d reason=nothing_to_retry",
                c->run_uuid, c->chunk);
        return false;
    }
    rw_info(COMP,
            "event=chunk_reopened run=%s chunk=%d targets=%lld replay=%lld",
            c->run_uuid, c->chunk, reopened, replay_id);
    chunk_free(c);
    memset(c, 0, sizeof(*c));
    err = load(svc, m, c, errstr, sizeof(errstr));
out:
    if (err)
        *outcome = fail(svc, err, errstr, reason, len);
    return !err;
}

/*
 * Step 1: the chunk as Postgres has it, a finished one re-opened if a
 * replay asks for it. false: nothing more to do (*outcome set).
 */
static bool load_current(rw_service_t *svc, const rw_batch_msg_t *m,
                         const rw_kafka_msg_t *msg, chunk_t *c,
                         rw_msg_outcome_t *outcome, char *reason, size_t len)
{
    rw_err_t err = RW_OK;
    char errstr[512] = "";

    err = load(svc, m, c, errstr, sizeof(errstr));
    if (err) {
        *outcome = fail(svc, err, errstr, reason, len);
        return false;
    }
    rw_service_note_ok(svc, RW_SVC_PG);
    if (rw_chunk_terminal(c->state))
        return reopen_if_replayed(svc, m, msg, c, outcome, reason, len);
    return true;
}

/*
 * Step 1, continued: true only for a pending chunk of a run that may
 * trigger. A triggered chunk gets its poll event again; everything else
 * is acknowledged as it is.
 */
static bool is_to_trigger(rw_service_t *svc, const chunk_t *c,
                          rw_msg_outcome_t *outcome, char *reason, size_t len)
{
    rw_err_t err = RW_OK;
    char errstr[512] = "";

    if (c->state == RW_CHUNK_TRIGGERED) {
        /* the worker that triggered it may have died before its poll event
         * left: emit it again (the poller drops duplicates) */
        err = reemit_poll(svc, c, errstr, sizeof(errstr));
        if (err)
            *outcome = fail(svc, err, errstr, reason, len);
        else
            rw_info(COMP, "event=poll_reemitted run=%s chunk=%d attempt=%d",
                    c->run_uuid, c->chunk, c->poll_attempts);
        return false;
    }
    if (c->state == RW_CHUNK_TRIGGERING) {
        /* a trigger in doubt, or one in progress elsewhere: the recovery
         * sweep resolves it by name after the settle window */
        rw_info(COMP,
                "event=batch_ignored run=%s chunk=%d reason=trigger_in_doubt",
                c->run_uuid, c->chunk);
        return false;
    }
    if (c->state != RW_CHUNK_PENDING)
        return false;
    if (c->run_status == RW_RUN_CANCELLED) {
        rw_info(COMP, "event=batch_ignored run=%s chunk=%d reason=cancelled",
                c->run_uuid, c->chunk);
        return false;
    }
    if (c->run_status == RW_RUN_PAUSED) {
        /* resume queues the pending chunks again: nothing is lost */
        rw_info(COMP, "event=batch_parked run=%s chunk=%d reason=run_paused",
                c->run_uuid, c->chunk);
        return false;
    }
    /* a finished run's leftover: nothing of it is pending */
    return !rw_run_terminal(c->run_status);
}

/* Step 2, after the budget: eligibility and the Redis locks (plan). */
static bool check_and_lock(rw_service_t *svc, chunk_t *c,
                           rw_msg_outcome_t *outcome, char *reason, size_t len)
{
    rw_err_t err = RW_OK;
    char errstr[512] = "";

    err = plan(svc, c, errstr, sizeof(errstr));
    if (err)
        *outcome = fail(svc, err, errstr, reason, len);
    return !err;
}

/*
 * Step 3: the claim, and the locks it did not use given back. *lease is
 * 0 once the lease is settled or gone. A chunk with nothing left to
 * trigger may finish its run here. false: nothing to send (*outcome set).
 */
static bool claim_chunk(rw_service_t *svc, chunk_t *c, long long *lease,
                        char *bulk_name, size_t bulk_name_len,
                        rw_msg_outcome_t *outcome, char *reason, size_t len)
{
    rw_err_t err = RW_OK;
    char errstr[512] = "";
    size_t n = 0;
    bool lease_lost = false, finalized = false;

    err = claim(svc, c, *lease, &lease_lost, bulk_name, bulk_name_len, &n,
                errstr, sizeof(errstr));
    if (lease_lost) {
        release_locks(svc, c, ACT_CLAIM);
        *lease = 0;
        snprintf(reason, len, "throttle lease expired before the claim");
        svc->retry_after_ms = svc->s->throttle_wait_ms;
        *outcome = RW_MSG_WAIT;
        return false;
    }
    if (!err)
        *lease = 0; /* settled: the claimed targets count themselves */
    if (err == RW_ERR_CONFLICT) {
        /* another worker claimed the chunk first: its locks are ours too
         * (same owner), so they stay */
        rw_info(COMP, "event=batch_ignored run=%s chunk=%d reason=claimed",
                c->run_uuid, c->chunk);
        return false;
    }
    if (err) {
        release_locks(svc, c, ACT_CLAIM);
        *outcome = fail(svc, err, errstr, reason, len);
        return false;
    }
    if (n > 0)
        return true; /* the send comes first: it was stamped in the claim */
    release_locks(svc, c, ACT_SKIP);
    release_locks(svc, c, ACT_LOST);
    err = rw_progress_finalize(svc->pg, c->run_id, &finalized, NULL, errstr,
                               sizeof(errstr));
    if (err)
        *outcome = fail(svc, err, errstr, reason, len);
    return false;
}

/*
 * Step 4: the bulk mutation. The claim's commit stamped sent_at and
 * nothing but building the request lies between them, so the sweep's
 * settle window counts from (at most a moment before) the send. The
 * locks the claim did not use are given back after it. false: not
 * accepted, the ending already recorded (*outcome set).
 */
static bool send_chunk(rw_service_t *svc, chunk_t *c, const char *bulk_name,
                       char *bulk_id, size_t bulk_id_len,
                       rw_msg_outcome_t *outcome, char *reason, size_t len)
{
    rw_err_t err = RW_OK;
    char errstr[512] = "";

    err = fire(svc, c, bulk_name, bulk_id, bulk_id_len, errstr, sizeof(errstr));
    release_locks(svc, c, ACT_SKIP);
    release_locks(svc, c, ACT_LOST);
    if (err) {
        *outcome = after_send_error(svc, c, err, errstr, reason, len);
        return false;
    }
    if (svc->s->fault_exit_after_trigger_pct > 0 &&
        (long long)(rw_rand_next(&svc->rng) % 100) <
            svc->s->fault_exit_after_trigger_pct) {
        /* fault injection: die inside the trigger-in-doubt window */
        rw_warn(COMP, "event=fault_exit_after_trigger run=%s chunk=%d",
                c->run_uuid, c->chunk);
        _exit(137);
    }
    return true;
}

static rw_metric_t *stray_counter(void)
{
    return rw_metrics_counter("rollwave_stray_bulks_total",
                              "bulks Lagoon accepted for a chunk attempt that "
                              "had been given back",
                              NULL);
}

void rw_worker_trigger_metrics(void)
{
    (void)stray_counter();
}

static const char SQL_CHUNK_NOW[] =
    "SELECT attempt, bulk_id FROM run_chunks"
    " WHERE run_id = $1::bigint AND chunk = $2::int";

/*
 * An accepted bulk the chunk no longer records as its own: either the
 * sweep adopted this very bulk (nothing to do) or the chunk went on to
 * another attempt, and Lagoon ran this bulk besides: said loudly, counted
 * (an alert's matter), never silently taken for the same bulk.
 */
static void stray_check(rw_service_t *svc, const chunk_t *c,
                        const char *bulk_id)
{
    PGresult *res = NULL;
    char run_s[24], chunk_s[16], errstr[256];
    const char *p[2] = {run_s, chunk_s};
    const char *now_bulk;
    int now_attempt;

    snprintf(run_s, sizeof(run_s), "%lld", c->run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", c->chunk);
    if (rw_pg_exec(svc->pg, SQL_CHUNK_NOW, 2, p, &res, errstr,
                   sizeof(errstr)) ||
        PQntuples(res) != 1) {
        rw_warn(COMP,
                "event=trigger_recorded_elsewhere run=%s chunk=%d bulk=%s "
                "detail=\"chunk not readable\"",
                c->run_uuid, c->chunk, bulk_id);
        PQclear(res);
        return;
    }
    now_attempt = (int)rw_pg_ll(res, 0, "attempt", 0);
    now_bulk = rw_pg_str(res, 0, "bulk_id");
    if (now_attempt == c->attempt && now_bulk && strcmp(now_bulk, bulk_id) == 0)
        rw_info(COMP, "event=trigger_recorded_elsewhere run=%s chunk=%d",
                c->run_uuid, c->chunk);
    else {
        rw_error(COMP,
                 "event=stray_bulk run=%s chunk=%d attempt=%d bulk=%s "
                 "chunk_attempt=%d detail=\"accepted after the chunk was "
                 "given back: its builds ran outside the run\"",
                 c->run_uuid, c->chunk, c->attempt, bulk_id, now_attempt);
        rw_metrics_add(stray_counter(), 1);
    }
    PQclear(res);
}

/* Step 5: an accepted bulk recorded; the first poll event goes with it. */
static rw_msg_outcome_t record_accepted(rw_service_t *svc, const chunk_t *c,
                                        const char *bulk_id, char *reason,
                                        size_t len)
{
    rw_err_t err = RW_OK;
    char errstr[512] = "";
    rw_chunk_ref_t ref = {c->run_id, c->run_uuid, c->chunk, c->attempt,
                          c->run_status};
    size_t n = 0;
    rw_chunk_claim_t *t = claims_of(c, &n);

    if (!t)
        err = rw_err_set(errstr, sizeof(errstr), RW_ERR_NOMEM, "out of memory");
    else
        err = rw_chunk_record_triggered(svc->pg, svc->kp, svc->s, &ref, t, n,
                                        bulk_id, "bulk accepted", errstr,
                                        sizeof(errstr));
    free(t);
    if (err == RW_ERR_CONFLICT) {
        /* the sweep adopted the bulk first (same attempt, same bulk), or
         * gave the chunk back while this worker stalled between its claim
         * and its send: then this bulk ran beside the next attempt's */
        stray_check(svc, c, bulk_id);
        err = RW_OK;
    }
    if (err)
        /* the bulk ran but is not recorded: the sweep adopts it by name */
        return fail(svc, err, errstr, reason, len);
    return RW_MSG_ACK;
}

/* The steps of the file's head comment, in order. */
rw_msg_outcome_t rw_worker_trigger(rw_service_t *svc, rw_gate_t *gate,
                                   const rw_batch_msg_t *m,
                                   const rw_kafka_msg_t *msg, char *reason,
                                   size_t len)
{
    chunk_t c;
    char bulk_name[128] = "";
    char bulk_id[RW_LAGOON_BULK_ID_MAX] = "";
    long long lease = 0;
    rw_msg_outcome_t outcome = RW_MSG_ACK;

    memset(&c, 0, sizeof(c));
    if (!load_current(svc, m, msg, &c, &outcome, reason, len) ||
        !is_to_trigger(svc, &c, &outcome, reason, len))
        goto out;
    if (!window_open(svc, &c, &outcome, reason, len) ||
        !take_budget(svc, gate, &c, &lease, &outcome, reason, len) ||
        !check_and_lock(svc, &c, &outcome, reason, len))
        goto out;
    if (!claim_chunk(svc, &c, &lease, bulk_name, sizeof(bulk_name), &outcome,
                     reason, len))
        goto out;
    if (!send_chunk(svc, &c, bulk_name, bulk_id, sizeof(bulk_id), &outcome,
                    reason, len))
        goto out;
    outcome = record_accepted(svc, &c, bulk_id, reason, len);
out:
    if (lease > 0)
        rw_throttle_release(svc->pg, lease); /* unused: give it back */
    chunk_free(&c);
    return outcome;
}
