/*
 * rw_runs: run creation. Every run is written by create_run(): one
 * statement inserts the run, its targets, its chunks and its first
 * transition; a second inserts one outbox row per chunk. Both run inside
 * the caller's transaction so a crash leaves either all or nothing.
 */
#include "rw_runs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_codec.h"
#include "rw_log.h"
#include "rw_state.h"

/* One instance on its way into a run. Strings point into a PGresult. */
typedef struct cand {
    long long instance_id;
    long long store_app_id;
    long long chunk_size; /* store app's, or the spec's default */
    size_t order;         /* position in selection order */
    const char *project;
    const char *environment;
    const char *skip_reason; /* NULL = will be triggered */
    int chunk;
} cand_t;

bool rw_runs_status_eligible(const char *status)
{
    return status && (strcmp(status, "running-healthy-unclaimed") == 0 ||
                      strcmp(status, "running-healthy-claimed") == 0);
}

static const char SQL_INSERT_RUN[] =
    "WITH run AS ("
    "  INSERT INTO deployment_runs (store_app_id, trigger_source,"
    "      triggered_by, variables_only, total_count, skipped_count,"
    "      chunk_count)"
    "  VALUES ($1::bigint, $2, $3, $4::boolean, $5::int, $6::int, $7::int)"
    "  RETURNING id, uuid),"
    " t AS ("
    "  INSERT INTO run_targets (run_id, instance_id, chunk, state,"
    "      lagoon_project, lagoon_environment, skip_reason, finished_at)"
    "  SELECT run.id, u.iid, u.chunk, u.state, u.project, u.env, u.reason,"
    "         CASE WHEN u.state = 'skipped' THEN now() END"
    "  FROM run, unnest($8::bigint[], $9::int[], $10::text[], $11::text[],"
    "                   $12::text[], $13::text[])"
    "       AS u(iid, chunk, state, project, env, reason)"
    "  RETURNING 1),"
    " c AS ("
    "  INSERT INTO run_chunks (run_id, chunk, target_count)"
    "  SELECT run.id, x.chunk, x.n"
    "  FROM run, unnest($14::int[], $15::int[]) AS x(chunk, n)"
    "  RETURNING 1),"
    " tr AS ("
    "  INSERT INTO run_transitions (run_id, from_status, to_status, reason)"
    "  SELECT run.id, NULL, 'pending', $16 FROM run"
    "  RETURNING 1)"
    " SELECT id, uuid FROM run";

static const char SQL_INSERT_OUTBOX[] =
    "INSERT INTO outbox (topic, msg_key, payload)"
    " SELECT 'batches', k, p FROM unnest($1::text[], $2::text[]) AS u(k, p)";

/* Encode the batch message of one chunk. */
static rw_err_t encode_chunk(const char *uuid, long long store_app_id,
                             const rw_run_spec_t *spec, const cand_t *c,
                             size_t n, int chunk, char **json, char *errstr,
                             size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_batch_msg_t m;
    rw_codec_build_var_t var = {(char *)"LAGOON_VARIABLES_ONLY",
                                (char *)"true"};
    size_t k = 0;

    memset(&m, 0, sizeof(m));
    m.targets = calloc(n, sizeof(*m.targets));
    if (!m.targets)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (c[i].skip_reason || c[i].chunk != chunk)
            continue;
        m.targets[k].instance_id = c[i].instance_id;
        m.targets[k].project = (char *)c[i].project;
        m.targets[k].environment = (char *)c[i].environment;
        k++;
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

/*
 * Write one run over cands (n > 0), all in the caller's transaction:
 * assigns chunks to the non-skipped candidates, inserts everything, queues
 * the batch messages, and finalizes at once a run with nothing to trigger.
 */
static rw_err_t create_run(rw_pg_t *pg, long long store_app_id,
                           long long chunk_size, const rw_run_spec_t *spec,
                           cand_t *c, size_t n,
                           rw_run_summary_t *out, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_pg_array_t a_iid, a_chunk, a_state, a_proj, a_env, a_reason;
    rw_pg_array_t a_cnum, a_ccount, a_key, a_payload;
    PGresult *res = NULL;
    int *chunk_counts = NULL;
    int nchunks = 0;
    long long skipped = 0, live = 0;
    char buf[4][32];

    rw_pg_array_init(&a_iid);
    rw_pg_array_init(&a_chunk);
    rw_pg_array_init(&a_state);
    rw_pg_array_init(&a_proj);
    rw_pg_array_init(&a_env);
    rw_pg_array_init(&a_reason);
    rw_pg_array_init(&a_cnum);
    rw_pg_array_init(&a_ccount);
    rw_pg_array_init(&a_key);
    rw_pg_array_init(&a_payload);
    memset(out, 0, sizeof(*out));

    for (size_t i = 0; i < n; i++) {
        long long size = chunk_size > 0 ? chunk_size : 50;
        if (c[i].skip_reason) {
            c[i].chunk = 0;
            skipped++;
        } else {
            c[i].chunk = (int)(live / size);
            live++;
            if (c[i].chunk + 1 > nchunks)
                nchunks = c[i].chunk + 1;
        }
    }
    chunk_counts = calloc((size_t)nchunks + 1, sizeof(int));
    if (!chunk_counts) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (!c[i].skip_reason)
            chunk_counts[c[i].chunk]++;
        rw_pg_array_add_ll(&a_iid, c[i].instance_id);
        rw_pg_array_add_ll(&a_chunk, c[i].chunk);
        rw_pg_array_add_str(&a_state, c[i].skip_reason ? "skipped" : "pending");
        rw_pg_array_add_str(&a_proj, c[i].project);
        rw_pg_array_add_str(&a_env, c[i].environment);
        rw_pg_array_add_str(&a_reason, c[i].skip_reason);
    }
    for (int k = 0; k < nchunks; k++) {
        rw_pg_array_add_ll(&a_cnum, k);
        rw_pg_array_add_ll(&a_ccount, chunk_counts[k]);
    }

    snprintf(buf[0], sizeof(buf[0]), "%lld", store_app_id);
    snprintf(buf[1], sizeof(buf[1]), "%zu", n);
    snprintf(buf[2], sizeof(buf[2]), "%lld", skipped);
    snprintf(buf[3], sizeof(buf[3]), "%d", nchunks);
    {
        const char *params[16] = {
            store_app_id > 0 ? buf[0] : NULL,
            spec->trigger_source,
            spec->triggered_by,
            spec->variables_only ? "true" : "false",
            buf[1],
            buf[2],
            buf[3],
            rw_pg_array_finish(&a_iid),
            rw_pg_array_finish(&a_chunk),
            rw_pg_array_finish(&a_state),
            rw_pg_array_finish(&a_proj),
            rw_pg_array_finish(&a_env),
            rw_pg_array_finish(&a_reason),
            rw_pg_array_finish(&a_cnum),
            rw_pg_array_finish(&a_ccount),
            spec->trigger_source,
        };
        for (int i = 7; i < 15; i++)
            if (!params[i]) {
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

    for (int k = 0; k < nchunks; k++) {
        char key[RW_CODEC_KEY_MAX];
        char *json = NULL;
        err = encode_chunk(out->uuid, store_app_id, spec, c, n, k, &json,
                           errstr, errlen);
        if (err)
            goto out;
        rw_codec_key(key, sizeof(key), out->uuid, k);
        rw_pg_array_add_str(&a_key, key);
        rw_pg_array_add_str(&a_payload, json);
        free(json);
    }
    if (nchunks > 0) {
        const char *params[2] = {rw_pg_array_finish(&a_key),
                                 rw_pg_array_finish(&a_payload)};
        if (!params[0] || !params[1]) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM,
                             "out of memory building outbox arrays");
            goto out;
        }
        err = rw_pg_exec(pg, SQL_INSERT_OUTBOX, 2, params, NULL, errstr,
                         errlen);
        if (err)
            goto out;
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
    rw_info("runs",
            "event=run_created run=%s source=%s store_app=%lld targets=%zu "
            "skipped=%lld chunks=%d",
            out->uuid, spec->trigger_source, store_app_id, n, skipped,
            nchunks);
out:
    PQclear(res);
    free(chunk_counts);
    rw_pg_array_free(&a_iid);
    rw_pg_array_free(&a_chunk);
    rw_pg_array_free(&a_state);
    rw_pg_array_free(&a_proj);
    rw_pg_array_free(&a_env);
    rw_pg_array_free(&a_reason);
    rw_pg_array_free(&a_cnum);
    rw_pg_array_free(&a_ccount);
    rw_pg_array_free(&a_key);
    rw_pg_array_free(&a_payload);
    return err;
}

/*
 * Due selection. The partial expression index app_instances_due_idx serves
 * the first three predicates, so the cost follows the due set, not the
 * fleet. Instances with a pending target are excluded too: their run
 * exists and will reach them, and picking them again would only produce
 * skipped targets. Instances without a Lagoon target can never be
 * redeployed and are left out rather than skipped on every tick.
 */
static const char SQL_DUE[] =
    "SELECT i.id, i.store_app_id, i.lagoon_project, i.lagoon_environment,"
    "       COALESCE(a.bulk_chunk_size, $2::int) AS chunk_size"
    " FROM app_instances i JOIN store_apps a ON a.id = i.store_app_id"
    " WHERE COALESCE(i.next_redeploy_at, '-infinity'::timestamptz) <= now()"
    "   AND NOT i.is_trial"
    "   AND i.status IN " RW_ELIGIBLE_STATUSES_SQL
    "   AND a.redeploy_enabled AND a.redeploy_interval_days IS NOT NULL"
    "   AND i.lagoon_project IS NOT NULL AND i.lagoon_environment IS NOT NULL"
    "   AND NOT EXISTS (SELECT 1 FROM run_targets t"
    "                    WHERE t.instance_id = i.id"
    "                      AND t.state IN ('pending', 'claimed', 'triggered',"
    "                                      'deploying'))"
    " ORDER BY i.last_deployed_at ASC NULLS FIRST, i.id"
    " LIMIT $1::bigint"
    " FOR UPDATE OF i SKIP LOCKED";

static int cmp_store_app(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->store_app_id != y->store_app_id)
        return x->store_app_id < y->store_app_id ? -1 : 1;
    /* qsort is not stable: keep the selection order within a store app */
    return x->order < y->order ? -1 : (x->order > y->order);
}

rw_err_t rw_runs_schedule(rw_pg_t *pg, long long max_instances,
                          const rw_run_spec_t *spec, rw_run_summary_t **runs,
                          size_t *n_runs, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    cand_t *c = NULL;
    rw_run_summary_t *out = NULL;
    size_t n = 0, nout = 0;
    char max_s[24], chunk_s[24];
    const char *params[2] = {max_s, chunk_s};

    *runs = NULL;
    *n_runs = 0;
    snprintf(max_s, sizeof(max_s), "%lld", max_instances);
    snprintf(chunk_s, sizeof(chunk_s), "%lld", spec->chunk_size);

    err = rw_pg_begin(pg, errstr, errlen);
    if (err)
        goto out;
    err = rw_pg_exec(pg, SQL_DUE, 2, params, &res, errstr, errlen);
    if (err)
        goto out;
    n = (size_t)PQntuples(res);
    if (n == 0)
        goto commit;
    c = calloc(n, sizeof(*c));
    out = calloc(n, sizeof(*out));
    if (!c || !out) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        c[i].instance_id = rw_pg_ll(res, (int)i, "id", 0);
        c[i].store_app_id = rw_pg_ll(res, (int)i, "store_app_id", 0);
        c[i].chunk_size = rw_pg_ll(res, (int)i, "chunk_size", 50);
        c[i].project = rw_pg_str(res, (int)i, "lagoon_project");
        c[i].environment = rw_pg_str(res, (int)i, "lagoon_environment");
        c[i].order = i;
    }
    /* stable within a store app: most outdated first stays first */
    qsort(c, n, sizeof(*c), cmp_store_app);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && c[j].store_app_id == c[i].store_app_id)
            j++;
        err = create_run(pg, c[i].store_app_id, c[i].chunk_size, spec, c + i,
                         j - i,
                         &out[nout], errstr, errlen);
        if (err)
            goto out;
        nout++;
        i = j;
    }
commit:
    err = rw_pg_commit(pg, errstr, errlen);
    if (err)
        goto out;
    *runs = out;
    *n_runs = nout;
    out = NULL;
out:
    if (err)
        rw_pg_rollback(pg, NULL, 0);
    PQclear(res);
    free(c);
    free(out);
    return err;
}

#define SQL_MANUAL_SELECT                                                      \
    "SELECT i.id, i.store_app_id, i.status, i.lagoon_project,"                 \
    "       i.lagoon_environment, a.bulk_chunk_size,"                          \
    "       (SELECT r.uuid::text FROM run_targets t"                           \
    "          JOIN deployment_runs r ON r.id = t.run_id"                      \
    "         WHERE t.instance_id = i.id"                                      \
    "           AND t.state IN ('claimed', 'triggered', 'deploying')"          \
    "         LIMIT 1) AS in_flight_run"                                       \
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

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : (x > y);
}

/* Fill errstr with the requested ids the selection did not find. */
static rw_err_t report_unknown(const long long *ids, size_t n_ids,
                               const PGresult *res, char *errstr,
                               size_t errlen)
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
            off += (size_t)snprintf(errstr + off, errlen - off, " %lld",
                                    ids[i]);
    }
    free(found);
    return missing ? RW_ERR_NOT_FOUND : RW_OK;
}

rw_err_t rw_runs_create_manual(rw_pg_t *pg, const long long *ids, size_t n_ids,
                               long long store_app_id,
                               const rw_run_spec_t *spec,
                               rw_run_summary_t *run, rw_run_skip_t **skips,
                               size_t *n_skips, char *errstr, size_t errlen)
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
    err = rw_pg_exec(pg, ids ? SQL_MANUAL_IDS : SQL_MANUAL_APP, 1, params,
                     &res, errstr, errlen);
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
        c[i].project = rw_pg_str(res, (int)i, "lagoon_project");
        c[i].environment = rw_pg_str(res, (int)i, "lagoon_environment");
        c[i].order = i;
        if (c[i].store_app_id != run_app)
            run_app = -1;
        why = manual_skip_reason(res, (int)i, reasons_buf,
                                 sizeof(reasons_buf));
        if (why) {
            reasons[i] = strdup(why);
            if (!reasons[i]) {
                err = rw_err_set(errstr, errlen, RW_ERR_NOMEM,
                                 "out of memory");
                goto out;
            }
            c[i].skip_reason = reasons[i];
            sk[nsk].instance_id = c[i].instance_id;
            snprintf(sk[nsk].reason, sizeof(sk[nsk].reason), "%s", why);
            nsk++;
        }
    }
    if (run_app > 0 && rw_pg_ll(res, 0, "bulk_chunk_size", 0) > 0)
        chunk_size = rw_pg_ll(res, 0, "bulk_chunk_size", 0);
    err = create_run(pg, run_app > 0 ? run_app : 0, chunk_size, spec, c, n,
                     run, errstr, errlen);
    if (err)
        goto out;
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
    free(c);
    free(sk);
    PQclear(res);
    rw_pg_array_free(&a_ids);
    return err;
}
