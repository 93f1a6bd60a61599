/*
 * rw_runs: run creation. Every run is written by create_run(): one
 * statement inserts the run, its chunks, its waves and its first
 * transition; then the targets go in pieces of at most RUN_PIECE rows and
 * one outbox row per chunk of the first wave in pieces of at most
 * OUTBOX_PIECE (later waves are released by rw_waves). All of it runs
 * inside the caller's transaction so a crash leaves either all or nothing;
 * the pieces keep what the producer holds at once bounded (the statements'
 * arrays and libpq's buffers), not the run's size.
 */
#include "rw_runs.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_codec.h"
#include "rw_log.h"
#include "rw_metrics.h"
#include "rw_state.h"
#include "rw_strategy.h"

/* Targets per INSERT and due rows per FETCH of one run's making. */
#define RUN_PIECE 5000
/* Batch messages per outbox INSERT (RUN_PIECE targets at chunk size 50). */
#define OUTBOX_PIECE 100
/* A skip reason's longest text (run_targets.skip_reason is cut to it). */
#define WHY_MAX 160

/*
 * One instance on its way into a run. It owns its strings: the rows it
 * was read from are released piece by piece, so a run of max_per_run
 * targets costs the producer this struct and two names per target.
 */
typedef struct cand {
    long long instance_id;
    long long store_app_id;
    long long chunk_size; /* store app's, or the spec's default */
    size_t order;         /* position in selection order */
    char *project;
    char *environment;
    const char *skip_reason; /* NULL = will be triggered; may be why */
    char *why;               /* a skip reason found here */
    bool target_ok;          /* the due selection's SQL name rule */
    bool bad_target;         /* skipped by check_targets */
    bool bad_strategy;       /* skipped: the run's strategy is invalid */
    bool beta;               /* of a beta user group: a canary */
    int chunk;
} cand_t;

static void cands_free(cand_t *c, size_t n)
{
    for (size_t i = 0; c && i < n; i++) {
        free(c[i].project);
        free(c[i].environment);
        free(c[i].why);
    }
    free(c);
}

/* The row's names into c (copies; NULL stays NULL). false: out of memory. */
static bool cand_names(cand_t *c, const PGresult *res, int row)
{
    const char *pr = rw_pg_str(res, row, "lagoon_project");
    const char *en = rw_pg_str(res, row, "lagoon_environment");

    c->project = pr ? strdup(pr) : NULL;
    c->environment = en ? strdup(en) : NULL;
    return (!pr || c->project) && (!en || c->environment);
}

/* c skipped for a reason found here (formatted, cut to WHY_MAX - 1). */
static rw_err_t cand_skip(cand_t *c, char *errstr, size_t errlen,
                          const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static rw_err_t cand_skip(cand_t *c, char *errstr, size_t errlen,
                          const char *fmt, ...)
{
    char buf[WHY_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    /* half a UTF-8 character would make Postgres refuse the run's targets
     * on every tick */
    if (n >= (int)sizeof(buf))
        rw_utf8_trim_partial(buf);
    free(c->why);
    c->why = strdup(buf);
    if (!c->why)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    c->skip_reason = c->why;
    return RW_OK;
}

bool rw_runs_status_eligible(const char *status)
{
    return status && (strcmp(status, "running-healthy-unclaimed") == 0 ||
                      strcmp(status, "running-healthy-claimed") == 0);
}

static const char SQL_INSERT_RUN[] =
    "WITH run AS ("
    "  INSERT INTO deployment_runs (store_app_id, trigger_source,"
    "      triggered_by, variables_only, total_count, skipped_count,"
    "      chunk_count, strategy, current_wave)"
    "  VALUES ($1::bigint, $2, $3, $4::boolean, $5::int, $6::int, $7::int,"
    "          $11, $12::int)"
    "  RETURNING id, uuid),"
    " w AS ("
    "  INSERT INTO run_waves (run_id, wave, first_chunk, last_chunk,"
    "      target_count, state, started_at)"
    "  SELECT run.id, x.wave, x.f, x.l, x.n,"
    "         CASE WHEN x.wave = 1 THEN 'running' ELSE 'pending' END,"
    "         CASE WHEN x.wave = 1 THEN now() END"
    "  FROM run, unnest($13::int[], $14::int[], $15::int[], $16::int[])"
    "       AS x(wave, f, l, n)"
    "  RETURNING 1),"
    " c AS ("
    "  INSERT INTO run_chunks (run_id, chunk, target_count)"
    "  SELECT run.id, x.chunk, x.n"
    "  FROM run, unnest($8::int[], $9::int[]) AS x(chunk, n)"
    "  RETURNING 1),"
    " tr AS ("
    "  INSERT INTO run_transitions (run_id, from_status, to_status, reason)"
    "  SELECT run.id, NULL, 'pending', $10 FROM run"
    "  RETURNING 1)"
    " SELECT id, uuid FROM run";

/* One piece of a run's targets (after its chunks: they reference them). */
static const char SQL_INSERT_TARGETS[] =
    "INSERT INTO run_targets (run_id, instance_id, chunk, state,"
    "    lagoon_project, lagoon_environment, skip_reason, finished_at)"
    " SELECT $1::bigint, u.iid, u.chunk, u.state, u.project, u.env, u.reason,"
    "        CASE WHEN u.state = 'skipped' THEN now() END"
    " FROM unnest($2::bigint[], $3::int[], $4::text[], $5::text[],"
    "             $6::text[], $7::text[])"
    "      AS u(iid, chunk, state, project, env, reason)";

static const char SQL_INSERT_OUTBOX[] =
    "INSERT INTO outbox (topic, msg_key, payload)"
    " SELECT 'batches', k, p FROM unnest($1::text[], $2::text[]) AS u(k, p)";

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : (x > y);
}

/*
 * Encode the batch message of one chunk, whose candidates are c[idx[0..k)]
 * (put in selection order here: the message lists them as selected).
 */
static rw_err_t encode_chunk(const char *uuid, long long store_app_id,
                             const rw_run_spec_t *spec, const cand_t *c,
                             size_t *idx, size_t k, int chunk, char **json,
                             char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_batch_msg_t m;
    rw_codec_build_var_t var = {(char *)"LAGOON_VARIABLES_ONLY",
                                (char *)"true"};

    memset(&m, 0, sizeof(m));
    m.targets = calloc(k + 1, sizeof(*m.targets));
    if (!m.targets)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    qsort(idx, k, sizeof(*idx), cmp_size);
    for (size_t j = 0; j < k; j++) {
        const cand_t *t = &c[idx[j]];
        m.targets[j].instance_id = t->instance_id;
        m.targets[j].project = t->project;
        m.targets[j].environment = t->environment;
    }
    m.n_targets = k;
    m.run = (char *)uuid;
    m.chunk = chunk;
    m.attempt = 1;
    m.store_app_id = store_app_id;
    m.variables_only = spec->variables_only;
    if (spec->variables_only) {
        m.build_vars = &var;
        m.n_build_vars = 1;
    }
    err = rw_codec_batch_encode(&m, json, errstr, errlen);
    free(m.targets);
    return err;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : (x > y);
}

/* Order of pointers to cands by Lagoon target, then selection order. */
static int cmp_target(const void *a, const void *b)
{
    const cand_t *x = *(const cand_t *const *)a;
    const cand_t *y = *(const cand_t *const *)b;
    int r = strcmp(x->project, y->project);

    if (r == 0)
        r = strcmp(x->environment, y->environment);
    if (r == 0)
        r = x->order < y->order ? -1 : (x->order > y->order);
    return r;
}

/*
 * Skip, with a reason, every candidate the codec would refuse in a batch
 * message: a Lagoon name it does not accept (each candidate is encoded
 * alone, so whatever the codec checks is caught, not only what the SQL
 * mirror knows), or a project and environment an earlier candidate of the
 * same run already has (the codec refuses duplicates within a chunk, and
 * one environment twice in a run is one redeploy too many). One bad row
 * must not fail the run, let alone the whole tick.
 */
static rw_err_t check_targets(cand_t *c, size_t n, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    cand_t **idx = NULL;
    size_t m = 0;

    for (size_t i = 0; i < n; i++) {
        rw_codec_target_t t = {c[i].instance_id, c[i].project,
                               c[i].environment};
        rw_batch_msg_t msg;
        char *json = NULL, why[128] = "";
        const char *what = why;

        if (c[i].skip_reason)
            continue;
        memset(&msg, 0, sizeof(msg));
        msg.run = (char *)"00000000-0000-0000-0000-000000000000";
        msg.attempt = 1;
        msg.targets = &t;
        msg.n_targets = 1;
        err = rw_codec_batch_encode(&msg, &json, why, sizeof(why));
        free(json);
        if (err == RW_ERR_NOMEM)
            return rw_err_set(errstr, errlen, err, "%s", why);
        if (!err && !c[i].target_ok) {
            /* the SQL mirror and the codec disagree: trust neither */
            snprintf(why, sizeof(why), "refused by rw_lagoon_name_ok");
            err = RW_ERR_CODEC_FIELD;
        }
        if (!err)
            continue;
        if (strncmp(what, "targets[0].", 11) == 0)
            what += 11;
        err =
            cand_skip(&c[i], errstr, errlen, "invalid lagoon target: %s", what);
        if (err)
            return err;
        c[i].bad_target = true;
    }

    idx = calloc(n + 1, sizeof(*idx));
    if (!idx)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        if (!c[i].skip_reason)
            idx[m++] = &c[i];
    qsort(idx, m, sizeof(*idx), cmp_target);
    for (size_t k = 1, first = 0; k < m; k++) {
        cand_t *f = idx[first], *d = idx[k];

        if (strcmp(f->project, d->project) != 0 ||
            strcmp(f->environment, d->environment) != 0) {
            first = k;
            continue;
        }
        /* the earliest selected of a group stays: sorted by order */
        err = cand_skip(d, errstr, errlen,
                        "duplicate lagoon target: same as instance %lld",
                        f->instance_id);
        if (err)
            break;
        d->bad_target = true;
    }
    free(idx);
    return err;
}

static const char SQL_BACKOFF[] =
    "UPDATE app_instances"
    "   SET next_redeploy_at = now() + make_interval(secs => $2::int),"
    "       updated_at = now()"
    " WHERE id = ANY($1::bigint[])";

/*
 * Tell about the candidates check_targets skipped and, when the spec asks
 * for it (the scheduler), push their next_redeploy_at back by the failure
 * backoff: the skipped target says why, and the instance does not take a
 * place in every tick until someone fixes its Lagoon names.
 */
static rw_err_t report_bad_targets(rw_pg_t *pg, const rw_run_spec_t *spec,
                                   const char *uuid, const cand_t *c, size_t n,
                                   char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_pg_array_t a_ids;
    char backoff_s[24];
    size_t nbad = 0;

    rw_pg_array_init(&a_ids);
    for (size_t i = 0; i < n; i++) {
        char q[200];
        if (c[i].bad_strategy) {
            /* the run logs the strategy once; each instance backs off */
            nbad++;
            rw_pg_array_add_ll(&a_ids, c[i].instance_id);
            rw_metrics_add(
                rw_metrics_counter("rollwave_instances_skipped_total",
                                   "instances skipped because their Lagoon "
                                   "target cannot be redeployed as it is",
                                   "reason=\"invalid_strategy\""),
                1);
            continue;
        }
        if (!c[i].bad_target)
            continue;
        nbad++;
        rw_pg_array_add_ll(&a_ids, c[i].instance_id);
        rw_warn("runs", "event=instance_skipped instance=%lld run=%s reason=%s",
                c[i].instance_id, uuid,
                rw_log_quote(q, sizeof(q), c[i].skip_reason));
        rw_metrics_add(
            rw_metrics_counter("rollwave_instances_skipped_total",
                               "instances skipped because their Lagoon target "
                               "cannot be redeployed as it is",
                               strncmp(c[i].skip_reason, "duplicate", 9) == 0
                                   ? "reason=\"duplicate_target\""
                                   : "reason=\"invalid_target\""),
            1);
    }
    if (nbad == 0 || spec->failure_backoff_s <= 0)
        goto out;
    snprintf(backoff_s, sizeof(backoff_s), "%lld", spec->failure_backoff_s);
    {
        const char *params[2] = {rw_pg_array_finish(&a_ids), backoff_s};
        if (!params[0]) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
        err = rw_pg_exec(pg, SQL_BACKOFF, 2, params, NULL, errstr, errlen);
    }
out:
    rw_pg_array_free(&a_ids);
    return err;
}

static const char SQL_APP_STRATEGY[] =
    "SELECT strategy FROM store_apps WHERE id = $1::bigint";

/*
 * The run's strategy: the spec's override, else its store app's (none for
 * a run mixing store apps: the default). *why is set, and st left at the
 * default, when the text does not validate; errors are Postgres'.
 */
static rw_err_t load_strategy(rw_pg_t *pg, long long store_app_id,
                              const rw_run_spec_t *spec, rw_strategy_t *st,
                              char *why, size_t whylen, char *errstr,
                              size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char app_s[24], perr[160];
    const char *p[1] = {app_s};
    const char *text = spec->strategy;

    why[0] = '\0';
    rw_strategy_default(st);
    if (!text && store_app_id > 0) {
        snprintf(app_s, sizeof(app_s), "%lld", store_app_id);
        err = rw_pg_exec(pg, SQL_APP_STRATEGY, 1, p, &res, errstr, errlen);
        if (err)
            goto out;
        if (PQntuples(res) == 1)
            text = rw_pg_str(res, 0, "strategy");
    }
    if (rw_strategy_parse_json(text, st, perr, sizeof(perr))) {
        snprintf(why, whylen, "strategy: %s", perr);
        rw_strategy_default(st);
    }
out:
    PQclear(res);
    return err;
}

static const char SQL_BETA[] = "SELECT i.id FROM app_instances i"
                               " JOIN user_groups g ON g.id = i.user_group_id"
                               " WHERE i.id = ANY($1::bigint[]) AND g.is_beta";

/* Mark the candidates of beta user groups (one statement). */
static rw_err_t mark_beta(rw_pg_t *pg, cand_t *c, size_t n, char *errstr,
                          size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    rw_pg_array_t a;
    const char *p[1];

    rw_pg_array_init(&a);
    for (size_t i = 0; i < n; i++)
        if (!c[i].skip_reason)
            rw_pg_array_add_ll(&a, c[i].instance_id);
    p[0] = rw_pg_array_finish(&a);
    if (!p[0]) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    err = rw_pg_exec(pg, SQL_BETA, 1, p, &res, errstr, errlen);
    if (err)
        goto out;
    /* a run is at most max_per_run or one store app: n x rows is small,
     * but a sorted lookup keeps it linear-logarithmic all the same */
    {
        size_t nb = (size_t)PQntuples(res);
        long long *ids = calloc(nb + 1, sizeof(*ids));
        if (!ids) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < nb; i++)
            ids[i] = rw_pg_ll(res, (int)i, "id", 0);
        qsort(ids, nb, sizeof(*ids), cmp_ll);
        for (size_t i = 0; i < n; i++)
            c[i].beta =
                !c[i].skip_reason && bsearch(&c[i].instance_id, ids, nb,
                                             sizeof(*ids), cmp_ll) != NULL;
        free(ids);
    }
out:
    PQclear(res);
    rw_pg_array_free(&a);
    return err;
}

/* The failed run of an invalid strategy says why, in last_error too. */
static const char SQL_RUN_ERROR[] =
    "UPDATE deployment_runs SET last_error = $2 WHERE id = $1::bigint";

/* The run's targets, RUN_PIECE rows per statement, in candidate order. */
static rw_err_t insert_targets(rw_pg_t *pg, long long run_id, const cand_t *c,
                               size_t n, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    char run_s[24];

    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    for (size_t from = 0; !err && from < n; from += RUN_PIECE) {
        size_t to = n - from > RUN_PIECE ? from + RUN_PIECE : n;
        rw_pg_array_t a[6];
        const char *p[7];

        for (int k = 0; k < 6; k++)
            rw_pg_array_init(&a[k]);
        for (size_t i = from; i < to; i++) {
            rw_pg_array_add_ll(&a[0], c[i].instance_id);
            rw_pg_array_add_ll(&a[1], c[i].chunk);
            rw_pg_array_add_str(&a[2],
                                c[i].skip_reason ? "skipped" : "pending");
            rw_pg_array_add_str(&a[3], c[i].project);
            rw_pg_array_add_str(&a[4], c[i].environment);
            rw_pg_array_add_str(&a[5], c[i].skip_reason);
        }
        p[0] = run_s;
        for (int k = 0; k < 6; k++)
            p[k + 1] = rw_pg_array_finish(&a[k]);
        for (int k = 1; k < 7 && !err; k++)
            if (!p[k])
                err = rw_err_set(errstr, errlen, RW_ERR_NOMEM,
                                 "out of memory building target arrays");
        if (!err)
            err =
                rw_pg_exec(pg, SQL_INSERT_TARGETS, 7, p, NULL, errstr, errlen);
        for (int k = 0; k < 6; k++)
            rw_pg_array_free(&a[k]);
    }
    return err;
}

/*
 * The batch messages of chunks 0..last into the outbox, OUTBOX_PIECE per
 * statement. plan lists the live candidates in chunk order and
 * chunk_counts says how many each chunk has: chunk k is the next
 * chunk_counts[k] entries of plan.
 */
static rw_err_t insert_batches(rw_pg_t *pg, const char *uuid,
                               long long store_app_id,
                               const rw_run_spec_t *spec, const cand_t *c,
                               size_t *plan, const int *chunk_counts, int last,
                               char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    size_t at = 0;

    for (int from = 0; !err && from <= last; from += OUTBOX_PIECE) {
        int to = last - from >= OUTBOX_PIECE ? from + OUTBOX_PIECE - 1 : last;
        rw_pg_array_t a_key, a_payload;
        const char *p[2];

        rw_pg_array_init(&a_key);
        rw_pg_array_init(&a_payload);
        for (int k = from; !err && k <= to; k++) {
            char key[RW_CODEC_KEY_MAX];
            char *json = NULL;
            size_t cnt = (size_t)chunk_counts[k];

            err = encode_chunk(uuid, store_app_id, spec, c, plan + at, cnt, k,
                               &json, errstr, errlen);
            at += cnt;
            if (err)
                break;
            rw_codec_key(key, sizeof(key), uuid, k);
            rw_pg_array_add_str(&a_key, key);
            rw_pg_array_add_str(&a_payload, json);
            free(json);
        }
        if (!err) {
            p[0] = rw_pg_array_finish(&a_key);
            p[1] = rw_pg_array_finish(&a_payload);
            if (!p[0] || !p[1])
                err = rw_err_set(errstr, errlen, RW_ERR_NOMEM,
                                 "out of memory building outbox arrays");
            else
                err = rw_pg_exec(pg, SQL_INSERT_OUTBOX, 2, p, NULL, errstr,
                                 errlen);
        }
        rw_pg_array_free(&a_key);
        rw_pg_array_free(&a_payload);
    }
    return err;
}

/*
 * Write one run over cands (n > 0), all in the caller's transaction:
 * assigns chunks to the non-skipped candidates, inserts everything, queues
 * the batch messages, and finalizes at once a run with nothing to trigger.
 */
static rw_err_t create_run(rw_pg_t *pg, long long store_app_id,
                           long long chunk_size, const rw_run_spec_t *spec,
                           cand_t *c, size_t n, rw_run_summary_t *out,
                           char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_pg_array_t a_cnum, a_ccount;
    rw_pg_array_t a_wave, a_wfirst, a_wlast, a_wcount;
    PGresult *res = NULL;
    int *chunk_counts = NULL;
    size_t *plan = NULL;
    int nchunks = 0, nwaves = 0, wave1_last = -1;
    long long skipped = 0, live = 0;
    long long size = chunk_size > 0 ? chunk_size : 50;
    long long cum[RW_STRATEGY_MAX_WAVES];
    rw_strategy_t st;
    char *canon = NULL;
    char bad[200];
    char buf[5][32];

    rw_pg_array_init(&a_cnum);
    rw_pg_array_init(&a_ccount);
    rw_pg_array_init(&a_wave);
    rw_pg_array_init(&a_wfirst);
    rw_pg_array_init(&a_wlast);
    rw_pg_array_init(&a_wcount);
    memset(out, 0, sizeof(*out));

    err = check_targets(c, n, errstr, errlen);
    if (!err)
        err = load_strategy(pg, store_app_id, spec, &st, bad, sizeof(bad),
                            errstr, errlen);
    if (err)
        goto out;
    if (bad[0]) {
        /* nothing of a run whose strategy does not validate is triggered:
         * guessing its waves or thresholds could roll out everything */
        for (size_t i = 0; i < n; i++) {
            if (c[i].skip_reason)
                continue;
            /* cut to the column: the run's last_error keeps all of it */
            err = cand_skip(&c[i], errstr, errlen, "%s", bad);
            if (err)
                goto out;
            c[i].bad_strategy = true;
        }
    } else {
        canon = rw_strategy_to_json(&st);
        if (!canon) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    plan = calloc(n + 1, sizeof(*plan));
    if (!plan) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (c[i].skip_reason) {
            c[i].chunk = 0;
            skipped++;
        } else {
            live++;
        }
    }
    nwaves = rw_strategy_wave_sizes(&st, live, cum, RW_STRATEGY_MAX_WAVES);
    if (nwaves > 1) {
        err = mark_beta(pg, c, n, errstr, errlen);
        if (err)
            goto out;
    }
    /* canaries first, then the selection order (most outdated first) */
    {
        size_t k = 0;
        for (int pass = 0; pass < 2; pass++)
            for (size_t i = 0; i < n; i++)
                if (!c[i].skip_reason && c[i].beta == (pass == 0))
                    plan[k++] = i;
    }
    /* each wave is its own chunks: a chunk never spans two waves; along
     * plan the chunk numbers only grow, so a chunk is a range of it */
    for (int w = 0; w < nwaves; w++) {
        long long from = w == 0 ? 0 : cum[w - 1], to = cum[w];
        int first = nchunks;
        for (long long k = from; k < to; k++)
            c[plan[k]].chunk = first + (int)((k - from) / size);
        nchunks = first + (int)((to - from + size - 1) / size);
        if (w == 0)
            wave1_last = nchunks - 1;
        rw_pg_array_add_ll(&a_wave, w + 1);
        rw_pg_array_add_ll(&a_wfirst, first);
        rw_pg_array_add_ll(&a_wlast, nchunks - 1);
        rw_pg_array_add_ll(&a_wcount, to - from);
    }
    chunk_counts = calloc((size_t)nchunks + 1, sizeof(int));
    if (!chunk_counts) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (!c[i].skip_reason)
            chunk_counts[c[i].chunk]++;
    for (int k = 0; k < nchunks; k++) {
        rw_pg_array_add_ll(&a_cnum, k);
        rw_pg_array_add_ll(&a_ccount, chunk_counts[k]);
    }

    snprintf(buf[0], sizeof(buf[0]), "%lld", store_app_id);
    snprintf(buf[1], sizeof(buf[1]), "%zu", n);
    snprintf(buf[2], sizeof(buf[2]), "%lld", skipped);
    snprintf(buf[3], sizeof(buf[3]), "%d", nchunks);
    snprintf(buf[4], sizeof(buf[4]), "%d", 1);
    {
        const char *params[16] = {
            store_app_id > 0 ? buf[0] : NULL,
            spec->trigger_source,
            spec->triggered_by,
            spec->variables_only ? "true" : "false",
            buf[1],
            buf[2],
            buf[3],
            rw_pg_array_finish(&a_cnum),
            rw_pg_array_finish(&a_ccount),
            spec->trigger_source,
            canon,
            nwaves > 0 ? buf[4] : NULL,
            rw_pg_array_finish(&a_wave),
            rw_pg_array_finish(&a_wfirst),
            rw_pg_array_finish(&a_wlast),
            rw_pg_array_finish(&a_wcount),
        };
        for (int i = 7; i < 16; i++)
            if (!params[i] && i != 9 && i != 10 && i != 11) {
                err = rw_err_set(errstr, errlen, RW_ERR_NOMEM,
                                 "out of memory building run arrays");
                goto out;
            }
        err = rw_pg_exec(pg, SQL_INSERT_RUN, 16, params, &res, errstr, errlen);
        if (err)
            goto out;
    }
    out->id = rw_pg_ll(res, 0, "id", 0);
    snprintf(out->uuid, sizeof(out->uuid), "%s", rw_pg_str(res, 0, "uuid"));
    out->store_app_id = store_app_id;
    out->targets = (long long)n;
    out->skipped = skipped;
    out->chunks = nchunks;
    out->waves = nwaves;

    err = insert_targets(pg, out->id, c, n, errstr, errlen);
    if (err)
        goto out;
    /* only the first wave's batches: rw_waves releases the others */
    if (nchunks > 0) {
        err = insert_batches(pg, out->uuid, store_app_id, spec, c, plan,
                             chunk_counts, wave1_last, errstr, errlen);
        if (err)
            goto out;
    } else if (bad[0]) {
        char id_s[24];
        const char *params[2] = {id_s, bad};
        snprintf(id_s, sizeof(id_s), "%lld", out->id);
        snprintf(out->error, sizeof(out->error), "%s", bad);
        err = rw_run_transition(pg, out->id, RW_RUN_PENDING, RW_RUN_FAILED,
                                false, bad, errstr, errlen);
        if (!err)
            err =
                rw_pg_exec(pg, SQL_RUN_ERROR, 2, params, NULL, errstr, errlen);
        if (err)
            goto out;
        rw_error("runs",
                 "event=strategy_invalid run=%s store_app=%lld detail=\"%s\"",
                 out->uuid, store_app_id, bad);
    } else {
        /* nothing to trigger: the run is over as soon as it exists */
        err = rw_run_transition(pg, out->id, RW_RUN_PENDING, RW_RUN_RUNNING,
                                false, "no target to trigger", errstr, errlen);
        if (!err)
            err = rw_run_transition(pg, out->id, RW_RUN_RUNNING,
                                    RW_RUN_COMPLETED, false,
                                    "every target skipped", errstr, errlen);
        if (err)
            goto out;
    }
    err = report_bad_targets(pg, spec, out->uuid, c, n, errstr, errlen);
    if (err)
        goto out;
    rw_info("runs",
            "event=run_created run=%s source=%s store_app=%lld targets=%zu "
            "skipped=%lld chunks=%d waves=%d",
            out->uuid, spec->trigger_source, store_app_id, n, skipped, nchunks,
            nwaves);
out:
    PQclear(res);
    free(chunk_counts);
    free(plan);
    free(canon);
    rw_pg_array_free(&a_cnum);
    rw_pg_array_free(&a_ccount);
    rw_pg_array_free(&a_wave);
    rw_pg_array_free(&a_wfirst);
    rw_pg_array_free(&a_wlast);
    rw_pg_array_free(&a_wcount);
    return err;
}

/*
 * Due selection, in two steps. The quota query walks the enabled store
 * apps with an interval and reads, per app, that app's due instances
 * through the partial index app_instances_due_app_idx (store_app_id, due
 * time), most outdated first and at most max_per_run of them; the union is
 * ordered and cut to max_per_run and counted per app. The global first
 * max_per_run are among the per-app first max_per_run, so the quotas share
 * out what one fleet-wide ORDER BY ... LIMIT would pick, while instances of
 * disabled apps are never read and the cost follows the due set of enabled
 * apps, not the fleet. Then each app, in a transaction of its own, selects
 * and locks its quota (SKIP LOCKED inside the scan, before its LIMIT, so a
 * row another transaction holds is replaced by the next one of its app)
 * and makes its run with the run's outbox rows. A crash between two apps
 * leaves whole runs and due instances, never half a tick's run; the
 * producer holds one app's rows at a time.
 *
 * Instances with a pending target are excluded too: their run exists and
 * will reach them, and picking them again would only produce skipped
 * targets. Instances without a Lagoon target can never be redeployed and
 * are left out rather than skipped on every tick. Instances whose Lagoon
 * names break the codec's rule (rw_lagoon_name_ok, the SQL mirror of
 * rw_codec_check_name) are selected with lagoon_target_ok false, so that
 * they become skipped targets that say why (check_targets).
 *
 * With windows respected ($3), an instance whose effective window (its
 * group's, else its app's) is closed is filtered out after the index scan
 * and before the LIMIT, so it neither takes a place in the run nor has its
 * next_redeploy_at moved: it is due again on the first tick inside its
 * window. The app's window is evaluated once per app (aw), a group's only
 * for instances whose group has a window of its own: a window function per
 * instance cost more than everything else of the selection together.
 */
/*
 * The due rows of every enabled app ($4 NULL) or of one ($4), at most $1 per
 * app, with the lock clause given (the quota query reads without locks).
 */
#define SQL_DUE_ROWS(lock)                                                     \
    "SELECT d.id, d.store_app_id, d.lagoon_project, d.lagoon_environment,"     \
    "       d.chunk_size, d.lagoon_target_ok, d.last_deployed_at"              \
    " FROM store_apps a"                                                       \
    " CROSS JOIN LATERAL (SELECT rw_window_open(a.window_tz, a.window_days,"   \
    "                       a.window_from_min, a.window_to_min, now())"        \
    "                       AS open"                                           \
    "                     OFFSET 0) aw" /* not flattened: once per app */      \
    " CROSS JOIN LATERAL ("                                                    \
    "   SELECT i.id, i.store_app_id, i.lagoon_project, i.lagoon_environment,"  \
    "          i.last_deployed_at,"                                            \
    "          COALESCE(a.bulk_chunk_size, $2::int) AS chunk_size,"            \
    "          COALESCE(rw_lagoon_name_ok(i.lagoon_project)"                   \
    "                   AND rw_lagoon_name_ok(i.lagoon_environment), false)"   \
    "            AS lagoon_target_ok"                                          \
    "   FROM app_instances i"                                                  \
    "   WHERE i.store_app_id = a.id"                                           \
    "     AND COALESCE(i.next_redeploy_at, '-infinity'::timestamptz) <= now()" \
    "     AND NOT i.is_trial"                                                  \
    "     AND i.status IN " RW_ELIGIBLE_STATUSES_SQL                           \
    "     AND i.lagoon_project IS NOT NULL"                                    \
    "     AND i.lagoon_environment IS NOT NULL"                                \
    "     AND NOT EXISTS (SELECT 1 FROM run_targets t"                         \
    "                      WHERE t.instance_id = i.id"                         \
    "                        AND t.state IN ('pending', 'claimed',"            \
    "                                        'triggered', 'deploying'))"       \
    "     AND (NOT $3::boolean"                                                \
    "          OR CASE WHEN i.user_group_id IS NULL THEN aw.open"              \
    "             ELSE COALESCE((SELECT rw_window_open(g.window_tz,"           \
    "                                     g.window_days, g.window_from_min,"   \
    "                                     g.window_to_min, now())"             \
    "                            FROM user_groups g"                           \
    "                            WHERE g.id = i.user_group_id"                 \
    "                              AND g.window_tz IS NOT NULL), aw.open)"     \
    "             END)"                                                        \
    "   ORDER BY i.last_deployed_at ASC NULLS FIRST, i.id"                     \
    "   LIMIT $1::bigint" lock ") d"                                           \
    " WHERE a.redeploy_enabled AND a.redeploy_interval_days IS NOT NULL"       \
    "   AND ($4::bigint IS NULL OR a.id = $4::bigint)"

/*
 * How many of the fleet's max_instances most outdated due instances each
 * app has: the per-app quotas of one tick, computed in Postgres so the
 * producer holds one row per app, not one per instance.
 */
static const char SQL_DUE_QUOTAS[] =
    "SELECT q.store_app_id, count(*) AS n FROM (" SQL_DUE_ROWS(
        "") " ORDER BY d.last_deployed_at ASC NULLS FIRST, d.id"
            " LIMIT $1::bigint) q"
            " GROUP BY q.store_app_id ORDER BY q.store_app_id";

/* One app's share, locked: the rows its run is made of. */
/* One app's share, locked: the rows its run is made of, read through a
 * cursor RUN_PIECE rows at a time (the producer copies what it keeps). */
static const char SQL_DUE_DECLARE[] =
    "DECLARE rw_due NO SCROLL CURSOR FOR " SQL_DUE_ROWS(
        " FOR UPDATE OF i SKIP LOCKED") " ORDER BY d.last_deployed_at "
                                        "ASC NULLS FIRST, d.id";

#define RW_STR2(x) #x
#define RW_STR(x)  RW_STR2(x)
static const char SQL_DUE_FETCH[] =
    "FETCH FORWARD " RW_STR(RUN_PIECE) " FROM rw_due";

/*
 * The due selection's statements run without JIT, in their transaction
 * only. The planner's estimate of the due set can be far above it (on the
 * due-selection benchmark's million instances, 16,667 due per store app
 * against 100), which puts the quotas past jit_above_cost: 20-25 ms of
 * compiling for a query that ran in 4 ms. No parameters: never prepared.
 */
static const char SQL_NO_JIT[] = "SET LOCAL jit = off";

static const char SQL_RESPECT_WINDOWS[] =
    "UPDATE deployment_runs SET respect_windows = true"
    " WHERE id = ANY($1::bigint[])";

/* Inside the creating transaction, before any batch can be published. */
static rw_err_t mark_respect_windows(rw_pg_t *pg, const rw_run_summary_t *runs,
                                     size_t n, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_pg_array_t a;
    const char *p[1];

    if (n == 0)
        return RW_OK;
    rw_pg_array_init(&a);
    for (size_t i = 0; i < n; i++)
        rw_pg_array_add_ll(&a, runs[i].id);
    p[0] = rw_pg_array_finish(&a);
    if (!p[0])
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    else
        err = rw_pg_exec(pg, SQL_RESPECT_WINDOWS, 1, p, NULL, errstr, errlen);
    rw_pg_array_free(&a);
    return err;
}

/*
 * One app's run of a tick, in its own transaction: select and lock up to
 * quota due instances of the app, make the run. *made is false when none
 * was left to take (another transaction holds them, or they stopped being
 * due since the quota query).
 */
static rw_err_t schedule_app(rw_pg_t *pg, long long store_app_id,
                             long long quota, const rw_run_spec_t *spec,
                             rw_run_summary_t *run, bool *made, char *errstr,
                             size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    cand_t *c = NULL;
    size_t n = 0, cap = quota > 0 ? (size_t)quota : 0;
    int got = RUN_PIECE;
    char max_s[24], chunk_s[24], app_s[24];
    const char *params[4] = {max_s, chunk_s,
                             spec->respect_windows ? "true" : "false", app_s};

    *made = false;
    snprintf(max_s, sizeof(max_s), "%lld", quota);
    snprintf(chunk_s, sizeof(chunk_s), "%lld", spec->chunk_size);
    snprintf(app_s, sizeof(app_s), "%lld", store_app_id);
    c = calloc(cap + 1, sizeof(*c));
    if (!c) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    err = rw_pg_begin(pg, errstr, errlen);
    if (!err)
        /* without JIT, as the quotas (rw_runs_schedule) */
        err = rw_pg_exec(pg, SQL_NO_JIT, 0, NULL, NULL, errstr, errlen);
    if (!err)
        /* a DECLARE is planned at each execution, prepared or not, with
         * the parameters' values: no generic plan to go stale */
        err = rw_pg_exec(pg, SQL_DUE_DECLARE, 4, params, NULL, errstr, errlen);
    /* a short piece is the last; the selection's LIMIT is the quota */
    while (!err && got == RUN_PIECE && n < cap) {
        err = rw_pg_exec(pg, SQL_DUE_FETCH, 0, NULL, &res, errstr, errlen);
        if (err)
            break;
        got = PQntuples(res);
        for (int r = 0; r < got && n < cap; r++, n++) {
            c[n].instance_id = rw_pg_ll(res, r, "id", 0);
            c[n].store_app_id = rw_pg_ll(res, r, "store_app_id", 0);
            c[n].chunk_size = rw_pg_ll(res, r, "chunk_size", 50);
            c[n].target_ok = rw_pg_bool(res, r, "lagoon_target_ok", 0);
            c[n].order = n;
            if (!cand_names(&c[n], res, r)) {
                n++; /* its copies are freed with the rest */
                err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
                break;
            }
        }
        PQclear(res);
        res = NULL;
    }
    if (!err && n > 0) {
        err = create_run(pg, store_app_id, c[0].chunk_size, spec, c, n, run,
                         errstr, errlen);
        if (!err && spec->respect_windows)
            err = mark_respect_windows(pg, run, 1, errstr, errlen);
    }
    if (!err)
        err = rw_pg_commit(pg, errstr, errlen);
    if (!err)
        *made = n > 0;
out:
    if (err)
        rw_pg_rollback(pg, NULL, 0);
    PQclear(res);
    cands_free(c, n);
    return err;
}

rw_err_t rw_runs_schedule(rw_pg_t *pg, long long max_instances,
                          const rw_run_spec_t *spec, rw_runs_made_cb made_cb,
                          void *ud, rw_run_summary_t **runs, size_t *n_runs,
                          char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *quotas = NULL;
    rw_run_summary_t *out = NULL;
    size_t napps = 0, nout = 0;
    char max_s[24], chunk_s[24];
    const char *params[4] = {max_s, chunk_s,
                             spec->respect_windows ? "true" : "false", NULL};

    *runs = NULL;
    *n_runs = 0;
    snprintf(max_s, sizeof(max_s), "%lld", max_instances);
    snprintf(chunk_s, sizeof(chunk_s), "%lld", spec->chunk_size);

    /*
     * Planned at each tick (rw_pg_exec_replan): the due set's size swings
     * from nothing to the whole fleet between ticks, and a generic plan
     * kept from ticks on a small or empty table would scan a large one.
     * Planning is a fraction of a millisecond against the selection.
     * Without JIT (SQL_NO_JIT; the due-selection benchmark's tick was 115
     * ms at 10,000 instances and 249 at a million with it), in a
     * transaction of its own so that the setting ends with it. A
     * connection lost inside it fails this tick (no reconnect inside a
     * transaction); the next tick starts afresh.
     */
    err = rw_pg_begin(pg, errstr, errlen);
    if (!err)
        err = rw_pg_exec(pg, SQL_NO_JIT, 0, NULL, NULL, errstr, errlen);
    if (!err)
        err = rw_pg_exec_replan(pg, SQL_DUE_QUOTAS, 4, params, &quotas, errstr,
                                errlen);
    if (!err)
        err = rw_pg_commit(pg, errstr, errlen);
    if (err) {
        if (rw_pg_in_tx(pg))
            rw_pg_rollback(pg, NULL, 0);
        goto out;
    }
    napps = (size_t)PQntuples(quotas);
    if (napps == 0)
        goto out;
    out = calloc(napps, sizeof(*out));
    if (!out) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < napps; i++) {
        bool made = false;

        err = schedule_app(pg, rw_pg_ll(quotas, (int)i, "store_app_id", 0),
                           rw_pg_ll(quotas, (int)i, "n", 0), spec, &out[nout],
                           &made, errstr, errlen);
        if (err)
            break;
        if (made && made_cb)
            made_cb(&out[nout], ud);
        nout += made;
    }
out:
    PQclear(quotas);
    /* the runs committed before a failure are real: the caller counts them */
    if (nout > 0) {
        *runs = out;
        *n_runs = nout;
    } else {
        free(out);
    }
    return err;
}

#define SQL_MANUAL_SELECT                                                      \
    "SELECT i.id, i.store_app_id, i.status, i.lagoon_project,"                 \
    "       i.lagoon_environment, a.bulk_chunk_size,"                          \
    "       (SELECT r.uuid::text FROM target_in_flight f"                      \
    "          JOIN deployment_runs r ON r.id = f.run_id"                      \
    "         WHERE f.instance_id = i.id) AS in_flight_run,"                   \
    "       COALESCE(rw_lagoon_name_ok(i.lagoon_project)"                      \
    "                AND rw_lagoon_name_ok(i.lagoon_environment), false)"      \
    "         AS lagoon_target_ok"                                             \
    " FROM app_instances i JOIN store_apps a ON a.id = i.store_app_id"

static const char SQL_MANUAL_IDS[] =
    SQL_MANUAL_SELECT " WHERE i.id = ANY($1::bigint[])"
                      " ORDER BY i.last_deployed_at ASC NULLS FIRST, i.id"
                      " FOR UPDATE OF i";

static const char SQL_MANUAL_APP[] =
    SQL_MANUAL_SELECT " WHERE i.store_app_id = $1::bigint"
                      " ORDER BY i.last_deployed_at ASC NULLS FIRST, i.id"
                      " FOR UPDATE OF i";

/* Why an instance cannot join a manual run, or NULL if it can. */
static const char *manual_skip_reason(const PGresult *res, int row, char *buf,
                                      size_t len)
{
    const char *status = rw_pg_str(res, row, "status");
    const char *in_flight = rw_pg_str(res, row, "in_flight_run");

    if (!rw_runs_status_eligible(status)) {
        snprintf(buf, len, "not eligible: status %s", status ? status : "?");
        return buf;
    }
    if (!rw_pg_str(res, row, "lagoon_project") ||
        !rw_pg_str(res, row, "lagoon_environment"))
        return "no lagoon target";
    if (in_flight) {
        snprintf(buf, len, "in flight in run %s", in_flight);
        return buf;
    }
    return NULL;
}

/* Fill errstr with the requested ids the selection did not find. */
static rw_err_t report_unknown(const long long *ids, size_t n_ids,
                               const PGresult *res, char *errstr, size_t errlen)
{
    size_t nfound = (size_t)PQntuples(res), off = 0, missing = 0;
    long long *found = calloc(nfound + 1, sizeof(*found));

    if (!found)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < nfound; i++)
        found[i] = rw_pg_ll(res, (int)i, "id", 0);
    qsort(found, nfound, sizeof(*found), cmp_ll);
    if (errstr && errlen)
        off = (size_t)snprintf(errstr, errlen, "unknown instance id(s):");
    for (size_t i = 0; i < n_ids; i++) {
        if (bsearch(&ids[i], found, nfound, sizeof(*found), cmp_ll))
            continue;
        missing++;
        if (errstr && off + 24 < errlen)
            off +=
                (size_t)snprintf(errstr + off, errlen - off, " %lld", ids[i]);
    }
    free(found);
    return missing ? RW_ERR_NOT_FOUND : RW_OK;
}

rw_err_t rw_runs_create_manual(rw_pg_t *pg, const long long *ids, size_t n_ids,
                               long long store_app_id,
                               const rw_run_spec_t *spec, rw_run_summary_t *run,
                               rw_run_skip_t **skips, size_t *n_skips,
                               char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    rw_pg_array_t a_ids;
    cand_t *c = NULL;
    rw_run_skip_t *sk = NULL;
    char reasons_buf[96];
    char **reasons = NULL;
    char param[32];
    const char *params[1];
    size_t n = 0, nsk = 0;
    long long run_app = 0, chunk_size = spec->chunk_size;

    rw_pg_array_init(&a_ids);
    if (skips)
        *skips = NULL;
    if (n_skips)
        *n_skips = 0;
    if (spec->strategy) {
        /* an operator's override is refused, not turned into a failed run */
        rw_strategy_t st;
        char why[160];
        if (rw_strategy_parse_json(spec->strategy, &st, why, sizeof(why)))
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "strategy: %s", why);
    }
    if (ids) {
        for (size_t i = 0; i < n_ids; i++)
            rw_pg_array_add_ll(&a_ids, ids[i]);
        params[0] = rw_pg_array_finish(&a_ids);
        if (!params[0]) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
    } else {
        snprintf(param, sizeof(param), "%lld", store_app_id);
        params[0] = param;
    }

    err = rw_pg_begin(pg, errstr, errlen);
    if (err)
        goto out;
    err = rw_pg_exec(pg, ids ? SQL_MANUAL_IDS : SQL_MANUAL_APP, 1, params, &res,
                     errstr, errlen);
    if (err)
        goto out;
    if (ids) {
        err = report_unknown(ids, n_ids, res, errstr, errlen);
        if (err)
            goto out;
    }
    n = (size_t)PQntuples(res);
    if (n == 0) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                         "store app %lld has no instances", store_app_id);
        goto out;
    }
    c = calloc(n, sizeof(*c));
    sk = calloc(n, sizeof(*sk));
    reasons = calloc(n, sizeof(*reasons));
    if (!c || !sk || !reasons) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    run_app = rw_pg_ll(res, 0, "store_app_id", 0);
    for (size_t i = 0; i < n; i++) {
        const char *why;
        c[i].instance_id = rw_pg_ll(res, (int)i, "id", 0);
        c[i].store_app_id = rw_pg_ll(res, (int)i, "store_app_id", 0);
        c[i].target_ok = rw_pg_bool(res, (int)i, "lagoon_target_ok", 0);
        c[i].order = i;
        if (!cand_names(&c[i], res, (int)i)) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
        if (c[i].store_app_id != run_app)
            run_app = -1;
        why = manual_skip_reason(res, (int)i, reasons_buf, sizeof(reasons_buf));
        if (why) {
            reasons[i] = strdup(why);
            if (!reasons[i]) {
                err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
                goto out;
            }
            c[i].skip_reason = reasons[i];
        }
    }
    if (run_app > 0 && rw_pg_ll(res, 0, "bulk_chunk_size", 0) > 0)
        chunk_size = rw_pg_ll(res, 0, "bulk_chunk_size", 0);
    err = create_run(pg, run_app > 0 ? run_app : 0, chunk_size, spec, c, n, run,
                     errstr, errlen);
    if (err)
        goto out;
    if (spec->respect_windows) {
        err = mark_respect_windows(pg, run, 1, errstr, errlen);
        if (err)
            goto out;
    }
    /* after create_run, which skips bad Lagoon targets too */
    for (size_t i = 0; i < n; i++) {
        if (!c[i].skip_reason)
            continue;
        sk[nsk].instance_id = c[i].instance_id;
        snprintf(sk[nsk].reason, sizeof(sk[nsk].reason), "%s",
                 c[i].skip_reason);
        nsk++;
    }
    err = rw_pg_commit(pg, errstr, errlen);
    if (err)
        goto out;
    if (skips) {
        *skips = sk;
        sk = NULL;
    }
    if (n_skips)
        *n_skips = nsk;
out:
    if (err)
        rw_pg_rollback(pg, NULL, 0);
    for (size_t i = 0; reasons && i < n; i++)
        free(reasons[i]);
    free(reasons);
    cands_free(c, n);
    free(sk);
    PQclear(res);
    rw_pg_array_free(&a_ids);
    return err;
}
