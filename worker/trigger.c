/*
 * trigger: one batch message, start to finish. The order of steps is what
 * makes redelivery and replay safe:
 *
 *   1. load the chunk and its targets (Postgres is the truth, not the
 *      message); succeeded and in-flight targets are never touched again;
 *   2. re-check eligibility; take the Redis locks (one pipeline);
 *   3. claim in Postgres together with chunk -> triggering (one
 *      transaction; the in-flight unique index is the backstop);
 *   4. one bulkDeployEnvironmentLatest for the chunk, retried with backoff
 *      on retriable errors;
 *   5. record the outcome and queue the first poll event in one
 *      transaction, publish it, and only then let the offset be stored.
 *
 * A worker that dies between 3 and 5 leaves the chunk `triggering`; the
 * redelivered batch re-sends the same bulk name for the same targets.
 */
#include "trigger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rw_control.h"
#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_outbox.h"
#include "rw_progress.h"
#include "rw_runs.h"
#include "rw_schedule.h"
#include "rw_state.h"

#define COMP "worker"

enum action { ACT_NONE, ACT_CLAIM, ACT_SKIP, ACT_HELD };

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
    long long state_age_s; /* seconds since the chunk entered its state */
    bool variables_only;
    char bulk_id[RW_LAGOON_BULK_ID_MAX];
    PGresult *res; /* targets; the tgt_t strings point into it */
    tgt_t *t;
    size_t n;
} chunk_t;

static const char SQL_LOAD_CHUNK[] =
    "SELECT r.id AS run_id, r.status AS run_status, r.variables_only,"
    "       c.state AS chunk_state, c.attempt, c.bulk_id, c.poll_attempts,"
    "       EXTRACT(EPOCH FROM now() - c.updated_at)::bigint AS state_age_s"
    " FROM deployment_runs r JOIN run_chunks c ON c.run_id = r.id"
    " WHERE r.uuid = $1::uuid AND c.chunk = $2::int";

static const char SQL_LOAD_TARGETS[] =
    "SELECT t.id, t.instance_id, t.state, i.status, t.lagoon_project,"
    "       t.lagoon_environment, COALESCE(g.is_beta, false) AS is_beta,"
    "       a.redeploy_interval_days, a.beta_redeploy_interval_days"
    " FROM run_targets t"
    " JOIN app_instances i ON i.id = t.instance_id"
    " JOIN store_apps a ON a.id = i.store_app_id"
    " LEFT JOIN user_groups g ON g.id = i.user_group_id"
    " WHERE t.run_id = $1::bigint AND t.chunk = $2::int ORDER BY t.id";

static const char SQL_IN_FLIGHT_ELSEWHERE[] =
    "SELECT t.instance_id, r.uuid::text AS run_uuid"
    " FROM run_targets t JOIN deployment_runs r ON r.id = t.run_id"
    " WHERE t.instance_id = ANY($1::bigint[]) AND t.run_id <> $2::bigint"
    "   AND t.state IN ('claimed', 'triggered', 'deploying')";

static const char SQL_CHUNK_TRIGGERING[] =
    "UPDATE run_chunks SET state = 'triggering', attempt = $3::int,"
    "   bulk_name = $4, last_error = NULL"
    " WHERE run_id = $1::bigint AND chunk = $2::int AND state = 'pending'"
    "   AND attempt = $3::int - 1";

static const char SQL_CHUNK_EMPTY_DONE[] =
    "UPDATE run_chunks SET state = 'done', finished_at = now()"
    " WHERE run_id = $1::bigint AND chunk = $2::int AND state = 'pending'";

/* Restart the settle clock of a chunk left in doubt (see reconcile). */
static const char SQL_CHUNK_TOUCH[] =
    "UPDATE run_chunks SET updated_at = now()"
    " WHERE run_id = $1::bigint AND chunk = $2::int"
    "   AND state = 'triggering'";

static const char SQL_CHUNK_TRIGGERED[] =
    "UPDATE run_chunks SET state = 'triggered', bulk_id = $3,"
    "   triggered_at = now(), poll_attempts = 1"
    " WHERE run_id = $1::bigint AND chunk = $2::int"
    "   AND state = 'triggering'";

static const char SQL_INSTANCES_TRIGGERED[] =
    "UPDATE app_instances i SET deployment_run_id = $1::bigint,"
    "   last_deploy_triggered_at = now(),"
    "   next_redeploy_at = CASE WHEN u.next IS NULL THEN i.next_redeploy_at"
    "                           ELSE to_timestamp(u.next) END"
    " FROM unnest($2::bigint[], $3::bigint[]) AS u(id, next)"
    " WHERE i.id = u.id";

static const char SQL_CHUNK_FAILED[] =
    "UPDATE run_chunks SET state = 'failed', last_error = $3,"
    "   finished_at = now()"
    " WHERE run_id = $1::bigint AND chunk = $2::int"
    "   AND state = 'triggering'";

static const char SQL_INSTANCES_BACKOFF[] =
    "UPDATE app_instances SET"
    "   next_redeploy_at = now() + make_interval(secs => $2::int)"
    " WHERE id = ANY($1::bigint[])";

/* xorshift64: only for fault injection draws. */
static uint64_t next_rand(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ULL;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

static void chunk_free(chunk_t *c)
{
    PQclear(c->res);
    free(c->t);
}

/* RW_MSG_RETRY for retriable errors, RW_MSG_DEAD otherwise. */
static rw_msg_outcome_t fail(rw_service_t *svc, rw_err_t err,
                             const char *errstr, char *reason, size_t len)
{
    rw_service_note(svc, err);
    snprintf(reason, len, "%s: %s", rw_err_name(err), errstr);
    if (svc->pg && rw_pg_in_tx(svc->pg))
        rw_pg_rollback(svc->pg, NULL, 0);
    return rw_err_is_retriable(err) || err == RW_ERR_PG_UNIQUE ||
                   err == RW_ERR_CONFLICT
               ? RW_MSG_RETRY
               : RW_MSG_DEAD;
}

static rw_err_t load(rw_service_t *svc, const rw_batch_msg_t *m, chunk_t *c,
                     char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char chunk_s[16], run_s[24];
    const char *p[2] = {m->run, chunk_s};

    snprintf(chunk_s, sizeof(chunk_s), "%d", m->chunk);
    err = rw_pg_exec(svc->pg, SQL_LOAD_CHUNK, 2, p, &res, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(res) != 1) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                         "no chunk %d of run %s", m->chunk, m->run);
        goto out;
    }
    c->run_id = rw_pg_ll(res, 0, "run_id", 0);
    snprintf(c->run_uuid, sizeof(c->run_uuid), "%s", m->run);
    c->chunk = m->chunk;
    c->run_status = (rw_run_state_t)rw_run_state_parse(
        rw_pg_str(res, 0, "run_status"));
    c->state = (rw_chunk_state_t)rw_chunk_state_parse(
        rw_pg_str(res, 0, "chunk_state"));
    c->attempt = (int)rw_pg_ll(res, 0, "attempt", 0);
    c->poll_attempts = (int)rw_pg_ll(res, 0, "poll_attempts", 0);
    c->state_age_s = rw_pg_ll(res, 0, "state_age_s", 0);
    c->variables_only = rw_pg_bool(res, 0, "variables_only", 0);
    snprintf(c->bulk_id, sizeof(c->bulk_id), "%s",
             rw_pg_str(res, 0, "bulk_id") ? rw_pg_str(res, 0, "bulk_id")
                                          : "");
    PQclear(res);
    res = NULL;

    snprintf(run_s, sizeof(run_s), "%lld", c->run_id);
    {
        const char *p2[2] = {run_s, chunk_s};
        err = rw_pg_exec(svc->pg, SQL_LOAD_TARGETS, 2, p2, &c->res, errstr,
                         errlen);
        if (err)
            goto out;
    }
    c->n = (size_t)PQntuples(c->res);
    c->t = calloc(c->n + 1, sizeof(*c->t));
    if (!c->t) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < c->n; i++) {
        tgt_t *t = &c->t[i];
        int row = (int)i;
        t->id = rw_pg_ll(c->res, row, "id", 0);
        t->instance_id = rw_pg_ll(c->res, row, "instance_id", 0);
        t->state = (rw_target_state_t)rw_target_state_parse(
            rw_pg_str(c->res, row, "state"));
        t->status = rw_pg_str(c->res, row, "status");
        t->project = rw_pg_str(c->res, row, "lagoon_project");
        t->environment = rw_pg_str(c->res, row, "lagoon_environment");
        t->is_beta = rw_pg_bool(c->res, row, "is_beta", 0);
        t->interval_days = rw_pg_ll(c->res, row, "redeploy_interval_days", 0);
        t->beta_interval_days =
            rw_pg_ll(c->res, row, "beta_redeploy_interval_days", 0);
        snprintf(t->key, sizeof(t->key), "%slock:instance:%lld",
                 svc->s->kafka_topic_prefix, t->instance_id);
    }
out:
    PQclear(res);
    return err;
}

/* Append ids of targets with the given action to an array literal. */
static const char *ids_of(rw_pg_array_t *a, const chunk_t *c, enum action act,
                          bool instance)
{
    rw_pg_array_init(a);
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i].action == act)
            rw_pg_array_add_ll(a, instance ? c->t[i].instance_id
                                           : c->t[i].id);
    return rw_pg_array_finish(a);
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
    if (k > 0 && rw_redis_lock_release(svc->rc, keys, k, c->run_uuid,
                                       released, errstr, sizeof(errstr))) {
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
static rw_err_t plan(rw_service_t *svc, chunk_t *c, char *errstr,
                     size_t errlen)
{
    rw_err_t err = RW_OK;
    const char **keys = NULL;
    int *got = NULL;
    size_t *idx = NULL, k = 0;

    for (size_t i = 0; i < c->n; i++) {
        tgt_t *t = &c->t[i];
        if (c->state == RW_CHUNK_TRIGGERING && t->state == RW_TARGET_CLAIMED) {
            /* claimed by a worker that died mid-trigger: ours to finish */
            t->action = ACT_HELD;
            continue;
        }
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
        if (c->t[i].action == ACT_CLAIM || c->t[i].action == ACT_HELD) {
            keys[k] = c->t[i].key;
            idx[k++] = i;
        }
    if (k == 0)
        goto out;
    err = rw_redis_lock_acquire(svc->rc, keys, k, c->run_uuid,
                                svc->s->lock_ttl_s * 1000, got, errstr, errlen);
    if (err)
        goto out;
    svc->redis_broken = 0;
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
        if (t->action == ACT_HELD) {
            /* our claim stands in Postgres; the lock is only a marker */
            continue;
        }
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

/* Skip the targets that another run has in flight (Postgres view). */
static rw_err_t skip_in_flight_elsewhere(rw_service_t *svc, chunk_t *c,
                                         char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_pg_array_t a;
    PGresult *res = NULL;
    char run_s[24];
    const char *p[2];

    p[0] = ids_of(&a, c, ACT_CLAIM, true);
    snprintf(run_s, sizeof(run_s), "%lld", c->run_id);
    p[1] = run_s;
    if (!p[0]) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    err = rw_pg_exec(svc->pg, SQL_IN_FLIGHT_ELSEWHERE, 2, p, &res, errstr,
                     errlen);
    if (err)
        goto out;
    for (int r = 0; r < PQntuples(res); r++) {
        long long iid = rw_pg_ll(res, r, "instance_id", 0);
        for (size_t i = 0; i < c->n; i++)
            if (c->t[i].instance_id == iid && c->t[i].action == ACT_CLAIM) {
                c->t[i].action = ACT_SKIP;
                snprintf(c->t[i].reason, sizeof(c->t[i].reason),
                         "in flight in run %s", rw_pg_str(res, r, "run_uuid"));
            }
    }
out:
    PQclear(res);
    rw_pg_array_free(&a);
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

/* Claim (step 3). Returns the number of targets to trigger in *n. */
static rw_err_t claim(rw_service_t *svc, chunk_t *c, char *bulk_name,
                      size_t bulk_name_len, size_t *n, char *errstr,
                      size_t errlen)
{
    rw_err_t err = RW_OK;
    long long *ids = NULL, *moved = NULL;
    size_t nclaim = 0, nmoved = 0;
    char run_s[24], chunk_s[16], att_s[16];

    *n = 0;
    snprintf(run_s, sizeof(run_s), "%lld", c->run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", c->chunk);
    err = rw_pg_begin(svc->pg, errstr, errlen);
    if (err)
        goto out;
    err = skip_in_flight_elsewhere(svc, c, errstr, errlen);
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
                c->t[i].action = ACT_NONE;
        }
    }
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i].action == ACT_HELD)
            c->t[i].action = ACT_CLAIM;
    *n = count_of(c, ACT_CLAIM);
    if (c->state == RW_CHUNK_TRIGGERING) {
        /* resuming a trigger in doubt: same attempt, same bulk name */
        snprintf(bulk_name, bulk_name_len, "rollwave %s c%d a%d", c->run_uuid,
                 c->chunk, c->attempt);
    } else if (*n == 0) {
        const char *p[2] = {run_s, chunk_s};
        err = rw_pg_exec(svc->pg, SQL_CHUNK_EMPTY_DONE, 2, p, NULL, errstr,
                         errlen);
        if (err)
            goto out;
    } else {
        snprintf(bulk_name, bulk_name_len, "rollwave %s c%d a%d", c->run_uuid,
                 c->chunk, c->attempt + 1);
        snprintf(att_s, sizeof(att_s), "%d", c->attempt + 1);
        const char *p[4] = {run_s, chunk_s, att_s, bulk_name};
        PGresult *res = NULL;
        err = rw_pg_exec(svc->pg, SQL_CHUNK_TRIGGERING, 4, p, &res, errstr,
                         errlen);
        if (!err && atoll(PQcmdTuples(res)) != 1)
            err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                             "chunk %d of run %s changed under us", c->chunk,
                             c->run_uuid);
        PQclear(res);
        if (err)
            goto out;
        c->attempt++;
    }
    err = rw_pg_commit(svc->pg, errstr, errlen);
out:
    if (err && rw_pg_in_tx(svc->pg))
        rw_pg_rollback(svc->pg, NULL, 0);
    free(ids);
    free(moved);
    return err;
}

/* Step 4: the Lagoon call, retried on retriable errors. */
static rw_err_t fire(rw_service_t *svc, chunk_t *c, const char *bulk_name,
                     char *bulk_id, size_t bulk_id_len, bool *in_doubt,
                     char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_lagoon_env_t *envs = calloc(c->n + 1, sizeof(*envs));
    rw_lagoon_var_t var = {"LAGOON_VARIABLES_ONLY", "true"};
    size_t k = 0;
    static const double buckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

    if (!envs)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i].action == ACT_CLAIM) {
            envs[k].project = c->t[i].project;
            envs[k].environment = c->t[i].environment;
            k++;
        }
    for (int retry = 0;; retry++) {
        long long t0 = rw_now_mono_ms();
        err = rw_lagoon_bulk_deploy(svc->lc, bulk_name, envs, k, &var,
                                    c->variables_only ? 1 : 0, bulk_id,
                                    bulk_id_len, errstr, errlen);
        rw_metrics_observe(
            rw_metrics_histogram("rollwave_lagoon_call_seconds",
                                 "Lagoon API call latency",
                                 "operation=\"bulk_deploy\"", buckets,
                                 sizeof(buckets) / sizeof(buckets[0])),
            (double)(rw_now_mono_ms() - t0) / 1000.0);
        {
            char labels[96];
            snprintf(labels, sizeof(labels),
                     "operation=\"bulk_deploy\",outcome=\"%s\"",
                     err ? rw_err_name(err) : "ok");
            rw_metrics_add(rw_metrics_counter("rollwave_lagoon_calls_total",
                                              "Lagoon API calls", labels),
                           1);
        }
        *in_doubt = err && rw_lagoon_in_doubt(svc->lc);
        if (!err || !rw_err_is_retriable(err) || *in_doubt ||
            retry >= svc->s->trigger_retries)
            break;
        long long delay = rw_backoff_ms(retry, svc->s->trigger_backoff_base_ms,
                                        svc->s->trigger_backoff_max_ms,
                                        &svc->rng);
        rw_warn(COMP,
                "event=trigger_retry run=%s chunk=%d retry=%d delay_ms=%lld "
                "err=%s",
                c->run_uuid, c->chunk, retry + 1, delay, rw_err_name(err));
        /* the message in hand is finished even during a drain */
        struct timespec ts = {delay / 1000, (delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    free(envs);
    return err;
}

/* Step 5, success: one transaction, then the first poll event. */
static rw_err_t record_success(rw_service_t *svc, chunk_t *c,
                               const char *bulk_id, char *errstr,
                               size_t errlen)
{
    rw_err_t err = RW_OK;
    long long *ids = NULL;
    size_t n = 0;
    char run_s[24], chunk_s[16], key[RW_CODEC_KEY_MAX];
    rw_pg_array_t a_iid, a_next;
    rw_poll_msg_t pm;
    char *json = NULL;
    long long outbox_id = 0;
    long long now_s = rw_now_wall_ms() / 1000;

    rw_pg_array_init(&a_iid);
    rw_pg_array_init(&a_next);
    snprintf(run_s, sizeof(run_s), "%lld", c->run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", c->chunk);
    ids = calloc(c->n + 1, sizeof(*ids));
    if (!ids) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < c->n; i++) {
        tgt_t *t = &c->t[i];
        if (t->action != ACT_CLAIM)
            continue;
        ids[n++] = t->id;
        rw_pg_array_add_ll(&a_iid, t->instance_id);
        if (t->interval_days > 0)
            rw_pg_array_add_ll(
                &a_next, rw_schedule_next_s(now_s, t->is_beta, t->interval_days,
                                            t->beta_interval_days,
                                            t->instance_id,
                                            svc->s->jitter_window_min * 60));
        else
            rw_pg_array_add_str(&a_next, NULL); /* no cadence to keep */
    }

    memset(&pm, 0, sizeof(pm));
    pm.run = c->run_uuid;
    pm.chunk = c->chunk;
    pm.bulk_id = (char *)bulk_id;
    pm.attempt = 1;
    pm.due_at_ms = rw_now_wall_ms() + svc->s->first_poll_delay_s * 1000;
    err = rw_codec_poll_encode(&pm, &json, errstr, errlen);
    if (err)
        goto out;
    rw_codec_key(key, sizeof(key), c->run_uuid, c->chunk);

    err = rw_pg_begin(svc->pg, errstr, errlen);
    if (err)
        goto out;
    {
        const char *p[3] = {run_s, chunk_s, bulk_id};
        PGresult *res = NULL;
        err = rw_pg_exec(svc->pg, SQL_CHUNK_TRIGGERED, 3, p, &res, errstr,
                         errlen);
        if (!err && atoll(PQcmdTuples(res)) != 1)
            err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                             "chunk %d of run %s left triggering meanwhile",
                             c->chunk, c->run_uuid);
        PQclear(res);
        if (err)
            goto out;
    }
    err = rw_target_transition_bulk(svc->pg, c->run_id, ids, n,
                                    RW_TARGET_CLAIMED, RW_TARGET_TRIGGERED,
                                    false, NULL, bulk_id, NULL, NULL, errstr,
                                    errlen);
    if (err)
        goto out;
    {
        const char *p[3] = {run_s, rw_pg_array_finish(&a_iid),
                            rw_pg_array_finish(&a_next)};
        err = rw_pg_exec(svc->pg, SQL_INSTANCES_TRIGGERED, 3, p, NULL, errstr,
                         errlen);
        if (err)
            goto out;
    }
    if (c->run_status == RW_RUN_PENDING) {
        err = rw_run_transition(svc->pg, c->run_id, RW_RUN_PENDING,
                                RW_RUN_RUNNING, false, "first chunk triggered",
                                errstr, errlen);
        if (err == RW_ERR_CONFLICT)
            err = RW_OK; /* another chunk got there first */
        if (err)
            goto out;
    }
    err = rw_outbox_add(svc->pg, "poll", key, json, &outbox_id, errstr,
                        errlen);
    if (err)
        goto out;
    err = rw_pg_commit(svc->pg, errstr, errlen);
    if (err)
        goto out;
    rw_info(COMP, "event=chunk_triggered run=%s chunk=%d bulk=%s targets=%zu",
            c->run_uuid, c->chunk, bulk_id, n);
    /* if this fails the outbox sweep publishes it: the commit stands */
    err = rw_outbox_publish(svc->pg, svc->kp, svc->s, outbox_id, "poll", key,
                            json, errstr, errlen);
    if (err) {
        rw_warn(COMP, "event=poll_publish_deferred run=%s chunk=%d err=%s",
                c->run_uuid, c->chunk, rw_err_name(err));
        err = RW_OK;
    }
out:
    if (err && rw_pg_in_tx(svc->pg))
        rw_pg_rollback(svc->pg, NULL, 0);
    free(ids);
    free(json);
    rw_pg_array_free(&a_iid);
    rw_pg_array_free(&a_next);
    return err;
}

/* Step 5, failure: targets failed, instances backed off, locks released. */
static rw_err_t record_failure(rw_service_t *svc, chunk_t *c,
                               const char *why, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    long long *ids = calloc(c->n + 1, sizeof(*ids));
    size_t n = 0;
    char run_s[24], chunk_s[16], backoff_s[24];
    rw_pg_array_t a;
    bool finalized = false;

    rw_pg_array_init(&a);
    if (!ids)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i].action == ACT_CLAIM)
            ids[n++] = c->t[i].id;
    snprintf(run_s, sizeof(run_s), "%lld", c->run_id);
    snprintf(chunk_s, sizeof(chunk_s), "%d", c->chunk);
    snprintf(backoff_s, sizeof(backoff_s), "%lld", svc->s->failure_backoff_s);

    err = rw_pg_begin(svc->pg, errstr, errlen);
    if (err)
        goto out;
    err = rw_target_transition(svc->pg, c->run_id, ids, n, RW_TARGET_CLAIMED,
                               RW_TARGET_FAILED, false, why, NULL, NULL,
                               errstr, errlen);
    if (err)
        goto out;
    {
        const char *p[3] = {run_s, chunk_s, why};
        err = rw_pg_exec(svc->pg, SQL_CHUNK_FAILED, 3, p, NULL, errstr,
                         errlen);
        if (err)
            goto out;
    }
    {
        const char *p[2] = {ids_of(&a, c, ACT_CLAIM, true), backoff_s};
        err = rw_pg_exec(svc->pg, SQL_INSTANCES_BACKOFF, 2, p, NULL, errstr,
                         errlen);
        if (err)
            goto out;
    }
    err = rw_pg_commit(svc->pg, errstr, errlen);
    if (err)
        goto out;
    rw_warn(COMP, "event=chunk_failed run=%s chunk=%d targets=%zu reason=\"%s\"",
            c->run_uuid, c->chunk, n, why);
    release_locks(svc, c, ACT_CLAIM);
    err = rw_progress_finalize(svc->pg, c->run_id, &finalized, NULL, errstr,
                               errlen);
out:
    if (err && rw_pg_in_tx(svc->pg))
        rw_pg_rollback(svc->pg, NULL, 0);
    free(ids);
    rw_pg_array_free(&a);
    return err;
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
    err = rw_produce_sync(svc->kp, svc->topic_poll, key, json, errstr,
                          errlen);
    free(json);
    return err;
}

/*
 * Does the bulk of the interrupted attempt exist in Lagoon? One aliased
 * query over the chunk's environments, matched on the deterministic bulk
 * name. Found: adopt its id (*adopted). Two bulks with the name: the chunk
 * was already triggered twice; RW_ERR_CONFLICT fails it loudly rather than
 * following one of them.
 */
static rw_err_t reconcile(rw_service_t *svc, chunk_t *c, const char *bulk_name,
                          char *bulk_id, size_t bulk_id_len, bool *adopted,
                          char *errstr, size_t errlen)
{
    rw_err_t err;
    rw_lagoon_env_t *envs = calloc(c->n + 1, sizeof(*envs));
    size_t k = 0;
    bool found = false;

    *adopted = false;
    if (!envs)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < c->n; i++)
        if (c->t[i].action == ACT_CLAIM) {
            envs[k].project = c->t[i].project;
            envs[k].environment = c->t[i].environment;
            k++;
        }
    err = rw_lagoon_find_bulk(svc->lc, bulk_name, envs, k, bulk_id,
                              bulk_id_len, &found, errstr, errlen);
    free(envs);
    if (!err && found) {
        *adopted = true;
        rw_warn(COMP, "event=trigger_adopted run=%s chunk=%d bulk=%s",
                c->run_uuid, c->chunk, bulk_id);
    } else if (!err) {
        rw_warn(COMP, "event=trigger_not_found run=%s chunk=%d action=trigger",
                c->run_uuid, c->chunk);
    }
    return err;
}

rw_msg_outcome_t rw_worker_trigger(rw_service_t *svc, const rw_batch_msg_t *m,
                                   char *reason, size_t len)
{
    rw_err_t err = RW_OK;
    chunk_t c;
    char errstr[512] = "";
    char bulk_name[128] = "";
    char bulk_id[RW_LAGOON_BULK_ID_MAX] = "";
    size_t n = 0;
    bool in_doubt = false, adopted = false;
    rw_msg_outcome_t outcome = RW_MSG_ACK;

    memset(&c, 0, sizeof(c));
    err = load(svc, m, &c, errstr, sizeof(errstr));
    if (err) {
        outcome = fail(svc, err, errstr, reason, len);
        goto out;
    }
    svc->pg_broken = 0;
    if (c.run_status == RW_RUN_CANCELLED) {
        rw_info(COMP, "event=batch_ignored run=%s chunk=%d reason=cancelled",
                c.run_uuid, c.chunk);
        goto out;
    }
    if (c.state == RW_CHUNK_DONE || c.state == RW_CHUNK_FAILED) {
        /*
         * A redelivered or replayed batch of a finished chunk re-attempts
         * its failed and timed-out targets below the attempt limit, and
         * nothing else: succeeded targets are never triggered again.
         */
        long long reopened = 0, chunks = 0;
        err = rw_pg_begin(svc->pg, errstr, sizeof(errstr));
        if (!err)
            err = rw_control_reopen(svc->pg, c.run_id, c.chunk,
                                    svc->s->max_attempts, "batch replayed",
                                    false, &reopened, &chunks, errstr,
                                    sizeof(errstr));
        if (!err)
            err = rw_pg_commit(svc->pg, errstr, sizeof(errstr));
        if (err) {
            outcome = fail(svc, err, errstr, reason, len);
            goto out;
        }
        if (reopened == 0) {
            rw_info(COMP,
                    "event=batch_ignored run=%s chunk=%d reason=chunk_finished",
                    c.run_uuid, c.chunk);
            goto out;
        }
        rw_info(COMP, "event=chunk_reopened run=%s chunk=%d targets=%lld",
                c.run_uuid, c.chunk, reopened);
        chunk_free(&c);
        memset(&c, 0, sizeof(c));
        err = load(svc, m, &c, errstr, sizeof(errstr));
        if (err) {
            outcome = fail(svc, err, errstr, reason, len);
            goto out;
        }
    }
    if (c.run_status == RW_RUN_PAUSED && c.state == RW_CHUNK_PENDING) {
        /* resume queues the pending chunks again: nothing is lost */
        rw_info(COMP, "event=batch_parked run=%s chunk=%d reason=run_paused",
                c.run_uuid, c.chunk);
        goto out;
    }
    if (c.state == RW_CHUNK_TRIGGERED) {
        err = reemit_poll(svc, &c, errstr, sizeof(errstr));
        if (err)
            outcome = fail(svc, err, errstr, reason, len);
        else
            rw_info(COMP, "event=poll_reemitted run=%s chunk=%d attempt=%d",
                    c.run_uuid, c.chunk, c.poll_attempts);
        goto out;
    }
    if (c.state == RW_CHUNK_TRIGGERING) {
        /*
         * Trigger in doubt: a worker died between the Lagoon call and its
         * commit. Lagoon creates deployment rows asynchronously, so "no
         * such bulk" is only believable once the interrupted call is older
         * than its timeout plus the settle window.
         */
        long long wait_s = svc->s->trigger_settle_s +
                           svc->s->lagoon_timeout_ms / 1000 - c.state_age_s;
        if (wait_s > 0) {
            snprintf(reason, len,
                     "trigger in doubt: waiting %llds for Lagoon to settle",
                     wait_s);
            outcome = RW_MSG_RETRY;
            goto out;
        }
        in_doubt = true;
        rw_warn(COMP, "event=trigger_in_doubt run=%s chunk=%d attempt=%d",
                c.run_uuid, c.chunk, c.attempt);
    }

    err = plan(svc, &c, errstr, sizeof(errstr));
    if (err) {
        outcome = fail(svc, err, errstr, reason, len);
        goto out;
    }
    err = claim(svc, &c, bulk_name, sizeof(bulk_name), &n, errstr,
                sizeof(errstr));
    if (err) {
        release_locks(svc, &c, ACT_CLAIM);
        outcome = fail(svc, err, errstr, reason, len);
        goto out;
    }
    release_locks(svc, &c, ACT_SKIP);
    if (n == 0) {
        bool finalized = false;
        err = rw_progress_finalize(svc->pg, c.run_id, &finalized, NULL, errstr,
                                   sizeof(errstr));
        if (err)
            outcome = fail(svc, err, errstr, reason, len);
        goto out;
    }

    if (in_doubt) {
        err = reconcile(svc, &c, bulk_name, bulk_id, sizeof(bulk_id),
                        &adopted, errstr, sizeof(errstr));
        if (err && rw_err_is_retriable(err)) {
            outcome = fail(svc, err, errstr, reason, len);
            goto out;
        }
    }
    if (!adopted && !err) {
        bool doubt = false;
        err = fire(svc, &c, bulk_name, bulk_id, sizeof(bulk_id), &doubt,
                   errstr, sizeof(errstr));
        if (err && doubt) {
            /*
             * Lagoon may have run it (timeout, connection lost after
             * sending): sending the same bulk again could deploy the chunk
             * twice. Leave the chunk triggering with its claims and locks;
             * the batch comes back and is reconciled by name once Lagoon
             * had time to record the bulk.
             */
            char run_s[24], chunk_s[16];
            const char *p[2] = {run_s, chunk_s};
            snprintf(run_s, sizeof(run_s), "%lld", c.run_id);
            snprintf(chunk_s, sizeof(chunk_s), "%d", c.chunk);
            rw_warn(COMP, "event=trigger_in_doubt run=%s chunk=%d err=%s",
                    c.run_uuid, c.chunk, rw_err_name(err));
            /* best effort: the settle wait counts from the last call */
            rw_pg_exec(svc->pg, SQL_CHUNK_TOUCH, 2, p, NULL, NULL, 0);
            snprintf(reason, len, "trigger in doubt after %s: %s",
                     rw_err_name(err), errstr);
            outcome = RW_MSG_RETRY;
            goto out;
        }
    }
    if (!err && !adopted && svc->s->fault_exit_after_trigger_pct > 0 &&
        (long long)(next_rand(&svc->rng) % 100) <
            svc->s->fault_exit_after_trigger_pct) {
        /* fault injection: die inside the trigger-in-doubt window */
        rw_warn(COMP, "event=fault_exit_after_trigger run=%s chunk=%d",
                c.run_uuid, c.chunk);
        _exit(137);
    }
    if (err) {
        char why[600];
        snprintf(why, sizeof(why), "trigger failed: %s: %s",
                 rw_err_name(err), errstr);
        err = record_failure(svc, &c, why, errstr, sizeof(errstr));
    } else {
        err = record_success(svc, &c, bulk_id, errstr, sizeof(errstr));
    }
    if (err)
        outcome = fail(svc, err, errstr, reason, len);
out:
    chunk_free(&c);
    return outcome;
}
