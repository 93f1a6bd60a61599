/*
 * logs: fetch, redact, cut and store build logs after a poll's commit,
 * and fetch again those Lagoon could not read. The log text never reaches
 * the process log: only counts and error classes do.
 */
#include "logs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_buildlog.h"
#include "rw_daemon.h"
#include "rw_lagoon.h"
#include "rw_log.h"
#include "rw_metrics.h"
#include "rw_pg.h"

#define COMP "poller"

struct rw_poller_logs {
    rw_buildlog_mode_t mode;
    long long sample_percent;
    size_t max_bytes;
    long long retry_s;
    rw_redactor_t *redactor; /* the process's configured secrets */
    uint64_t rng;
    long long last_retry_ms;
};

rw_err_t rw_poller_logs_new(const rw_settings_t *s, rw_poller_logs_t **out,
                            char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_poller_logs_t *lg = calloc(1, sizeof(*lg));

    *out = NULL;
    if (!lg)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    err = rw_buildlog_mode_parse(s->log_fetch, &lg->mode, errstr, errlen);
    if (err)
        goto out;
    lg->sample_percent = s->log_sample_percent;
    lg->max_bytes = (size_t)s->log_max_bytes;
    lg->retry_s = s->log_retry_s;
    lg->rng = (uint64_t)rw_now_mono_ms() * 0x9E3779B97F4A7C15ULL + 1;
    err = rw_buildlog_redactor_new(s, &lg->redactor, errstr, errlen);
    if (err)
        goto out;
    *out = lg;
    lg = NULL;
out:
    rw_poller_logs_destroy(lg);
    return err;
}

void rw_poller_logs_destroy(rw_poller_logs_t *lg)
{
    if (!lg)
        return;
    rw_redactor_free(lg->redactor);
    free(lg);
}

static bool sampled(rw_poller_logs_t *lg)
{
    lg->rng ^= lg->rng << 13;
    lg->rng ^= lg->rng >> 7;
    lg->rng ^= lg->rng << 17;
    return (long long)(lg->rng % 100) < lg->sample_percent;
}

static bool wanted(rw_poller_logs_t *lg, const rw_target_update_t *u)
{
    if (u->from == u->to || !rw_target_terminal(u->to))
        return false;
    if (u->to == RW_TARGET_FAILED)
        return lg->mode != RW_BUILDLOG_NONE;
    /* cancelled, timed out and skipped targets may have no build at all;
     * a succeeded one is sampled */
    return lg->mode == RW_BUILDLOG_ALL && u->to == RW_TARGET_SUCCEEDED &&
           sampled(lg);
}

static void count(const char *outcome, size_t n)
{
    char labels[64];

    if (n == 0)
        return;
    snprintf(labels, sizeof(labels), "outcome=\"%s\"", outcome);
    rw_metrics_add(rw_metrics_counter("rollwave_build_logs_total",
                                      "build logs fetched, by outcome", labels),
                   (long long)n);
}

/*
 * Fetch the logs of reqs (n <= RW_LAGOON_BUILD_LOGS_MAX) for target_ids,
 * all of run_id, and store what came back. Logs Lagoon does not have
 * (yet) are not stored: nothing to retry from.
 */
static void fetch_store(rw_poller_logs_t *lg, rw_service_t *svc,
                        long long run_id, const char *run_label,
                        const rw_lagoon_log_req_t *reqs,
                        const long long *target_ids, size_t n)
{
    rw_lagoon_build_log_t *logs = calloc(n, sizeof(*logs));
    rw_buildlog_row_t *rows = calloc(n, sizeof(*rows));
    char **texts = calloc(n, sizeof(*texts));
    size_t k = 0, n_stored = 0, n_unavail = 0;
    char errstr[512] = "";
    rw_err_t err;

    if (!logs || !rows || !texts) {
        rw_warn(COMP, "event=build_logs_failed run=%s err=NOMEM", run_label);
        goto out;
    }
    err = rw_lagoon_build_logs(svc->lc, reqs, n, logs, errstr, sizeof(errstr));
    if (err) {
        count("error", n);
        rw_warn(COMP, "event=build_logs_failed run=%s logs=%zu err=%s",
                run_label, n, rw_err_name(err));
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const rw_redactor_t *rs[1] = {lg->redactor};
        size_t len = 0;

        if (logs[i].state == RW_LAGOON_LOG_NONE)
            continue;
        /* even Lagoon's reason passes the redactor: storage errors quote
         * paths and keys */
        texts[i] = rw_buildlog_shape(
            rs, 1, logs[i].text, logs[i].len,
            logs[i].state == RW_LAGOON_LOG_OK ? lg->max_bytes : 1024, &len);
        if (!texts[i])
            continue;
        rows[k].target_id = target_ids[i];
        rows[k].deployment_name = reqs[i].name;
        rows[k].stored = logs[i].state == RW_LAGOON_LOG_OK;
        rows[k].bytes = (long long)logs[i].len;
        rows[k].text = texts[i];
        rows[k].error = texts[i];
        if (rows[k].stored)
            n_stored++;
        else
            n_unavail++;
        k++;
    }
    err = rw_buildlog_store(svc->pg, run_id, rows, k, errstr, sizeof(errstr));
    if (err) {
        count("error", k);
        rw_warn(COMP, "event=build_logs_not_stored run=%s logs=%zu err=%s",
                run_label, k, rw_err_name(err));
        goto out;
    }
    count("stored", n_stored);
    count("unavailable", n_unavail);
    count("missing", n - k);
    rw_debug(COMP,
             "event=build_logs run=%s asked=%zu stored=%zu unavailable=%zu",
             run_label, n, n_stored, n_unavail);
out:
    for (size_t i = 0; texts && i < n; i++)
        free(texts[i]);
    rw_lagoon_build_logs_clear(logs, n);
    free(logs);
    free(rows);
    free(texts);
}

void rw_poller_logs_after_poll(rw_poller_logs_t *lg, rw_service_t *svc,
                               long long run_id, const char *run_uuid,
                               const rw_target_update_t *u, size_t n,
                               const PGresult *tg)
{
    rw_lagoon_log_req_t *reqs;
    long long *ids;
    size_t k = 0;

    if (!lg || lg->mode == RW_BUILDLOG_NONE || n == 0)
        return;
    reqs = calloc(n, sizeof(*reqs));
    ids = calloc(n, sizeof(*ids));
    if (!reqs || !ids)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const char *name = u[i].deployment_name;

        if (!wanted(lg, &u[i]))
            continue;
        if (!name) /* a health-gate failure: its build's row was earlier */
            name = rw_pg_str((PGresult *)tg, (int)i, "deployment_name");
        if (!name || !*name)
            continue;
        reqs[k].project = rw_pg_str((PGresult *)tg, (int)i, "lagoon_project");
        reqs[k].environment =
            rw_pg_str((PGresult *)tg, (int)i, "lagoon_environment");
        reqs[k].name = name;
        ids[k] = u[i].target_id;
        if (!reqs[k].project || !reqs[k].environment)
            continue;
        k++;
    }
    for (size_t start = 0; start < k; start += RW_LAGOON_BUILD_LOGS_MAX) {
        size_t m = k - start;

        if (m > RW_LAGOON_BUILD_LOGS_MAX)
            m = RW_LAGOON_BUILD_LOGS_MAX;
        fetch_store(lg, svc, run_id, run_uuid, reqs + start, ids + start, m);
    }
out:
    free(reqs);
    free(ids);
}

void rw_poller_logs_retry(rw_poller_logs_t *lg, rw_service_t *svc)
{
    rw_buildlog_due_t *due = NULL;
    rw_lagoon_log_req_t *reqs = NULL;
    long long *ids = NULL;
    size_t n = 0;
    char errstr[512] = "", label[32];
    long long now = rw_now_mono_ms();

    if (!lg || lg->mode == RW_BUILDLOG_NONE)
        return;
    /* a round every tenth of the retry wait: a due log waits little more */
    if (lg->last_retry_ms && now - lg->last_retry_ms < lg->retry_s * 100)
        return;
    lg->last_retry_ms = now;
    if (rw_buildlog_due(svc->pg, lg->retry_s, RW_BUILDLOG_RETRY_BATCH, &due, &n,
                        errstr, sizeof(errstr))) {
        rw_warn(COMP, "event=build_logs_retry_failed detail=\"%s\"", errstr);
        return;
    }
    if (n == 0)
        goto out;
    reqs = calloc(n, sizeof(*reqs));
    ids = calloc(n, sizeof(*ids));
    if (!reqs || !ids)
        goto out;
    /* one request per run, so each store is one run's statement */
    for (size_t i = 0; i < n;) {
        size_t j = i;

        for (; j < n && due[j].run_id == due[i].run_id; j++) {
            reqs[j].project = due[j].project;
            reqs[j].environment = due[j].environment;
            reqs[j].name = due[j].deployment_name;
            ids[j] = due[j].target_id;
        }
        snprintf(label, sizeof(label), "%lld", due[i].run_id);
        fetch_store(lg, svc, due[i].run_id, label, reqs + i, ids + i, j - i);
        i = j;
    }
out:
    free(reqs);
    free(ids);
    rw_buildlog_due_free(due, n);
}
