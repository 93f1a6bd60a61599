/*
 * gate: the worker's side of the fleet throttle. See gate.h.
 */
#include "gate.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_schedule.h"

#define COMP             "worker"
#define READ_EVERY_MS    1000
#define RATE_WAIT_MAX_MS 2000

static void export_state(rw_gate_t *g, rw_service_t *svc)
{
    rw_metrics_set(g->m_in_flight, (double)g->st.in_flight);
    rw_metrics_set(g->m_limit, (double)g->st.max_in_flight);
    rw_metrics_set(g->m_effective, (double)rw_throttle_limit(&g->st));
    rw_metrics_set(g->m_tokens, g->st.tokens);
    rw_metrics_set(g->m_rate, g->st.rate_per_min);
    rw_metrics_set(g->m_waiting, (double)svc->n_waiting);
}

static rw_err_t seed(rw_service_t *svc, char *errstr, size_t errlen)
{
    return rw_throttle_seed(
        svc->pg, svc->s->max_in_flight, (double)svc->s->trigger_rate_per_min,
        svc->s->bulk_chunk_size, "ROLLWAVE_* defaults", errstr, errlen);
}

static void refresh(rw_gate_t *g, rw_service_t *svc)
{
    rw_throttle_state_t st;
    char errstr[256];
    rw_err_t err;

    err = rw_throttle_read(svc->pg, svc->s->throttle_adjust_s, false, &st,
                           errstr, sizeof(errstr));
    if (err == RW_ERR_NOT_FOUND) {
        /* deleted by hand: seed it again; meanwhile nothing is granted */
        err = seed(svc, errstr, sizeof(errstr));
        if (!err)
            err = rw_throttle_read(svc->pg, 0, false, &st, errstr,
                                   sizeof(errstr));
    }
    /* stamped even on failure: a dead database is not asked every turn */
    g->st_ms = rw_now_mono_ms();
    if (err) {
        rw_warn(COMP, "event=throttle_read_failed err=%s detail=\"%s\"",
                rw_err_name(err), errstr);
        return;
    }
    if (st.effective != g->st.effective && g->st.max_in_flight > 0)
        rw_info(COMP,
                "event=throttle_limit max_in_flight=%lld effective=%lld "
                "in_flight=%lld",
                st.max_in_flight, st.effective, st.in_flight);
    g->st = st;
    export_state(g, svc);
}

void rw_gate_init(rw_gate_t *g, rw_service_t *svc)
{
    static const double buckets[] = {0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300};
    char host[64] = "";
    char errstr[256];
    rw_err_t err;

    memset(g, 0, sizeof(*g));
    gethostname(host, sizeof(host) - 1);
    snprintf(g->holder, sizeof(g->holder), "%s:%d", host, (int)getpid());
    g->m_in_flight = rw_metrics_gauge(
        "rollwave_throttle_in_flight",
        "builds in flight fleet-wide (targets plus leases)", NULL);
    g->m_limit = rw_metrics_gauge(
        "rollwave_throttle_limit",
        "configured builds-in-flight limit (0 = brake)", "kind=\"configured\"");
    g->m_effective = rw_metrics_gauge(
        "rollwave_throttle_limit",
        "configured builds-in-flight limit (0 = brake)", "kind=\"effective\"");
    g->m_tokens = rw_metrics_gauge("rollwave_throttle_tokens",
                                   "trigger-rate tokens available", NULL);
    g->m_rate = rw_metrics_gauge("rollwave_throttle_rate_per_minute",
                                 "configured trigger rate", NULL);
    g->m_waiting = rw_metrics_gauge(
        "rollwave_throttle_held_batches",
        "batches this worker holds waiting for budget or rate", NULL);
    g->m_wait_s = rw_metrics_histogram(
        "rollwave_throttle_wait_seconds",
        "how long a batch waited for budget before it was granted", NULL,
        buckets, sizeof(buckets) / sizeof(buckets[0]));
    for (int v = 0; v < RW_THROTTLE_VERDICTS; v++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "verdict=\"%s\"",
                 rw_throttle_verdict_name((rw_throttle_verdict_t)v));
        g->m_verdict[v] = rw_metrics_counter(
            "rollwave_throttle_decisions_total",
            "budget requests by verdict (a cached \"full\" counts too)",
            labels);
    }
    err = seed(svc, errstr, sizeof(errstr));
    if (err)
        rw_warn(COMP, "event=throttle_seed_failed err=%s detail=\"%s\"",
                rw_err_name(err), errstr);
    refresh(g, svc);
}

void rw_gate_tick(rw_gate_t *g, rw_service_t *svc)
{
    long long every =
        svc->n_waiting > 0 ? svc->s->throttle_wait_ms : READ_EVERY_MS;

    if (rw_now_mono_ms() - g->st_ms >= every) {
        refresh(g, svc);
        if (svc->n_waiting > 0 && rw_now_mono_ms() - g->noted_ms >= 5000) {
            rw_throttle_note_waiting(svc->pg);
            g->noted_ms = rw_now_mono_ms();
        }
    } else
        rw_metrics_set(g->m_waiting, (double)svc->n_waiting);
}

/* What the last answer says for n targets, without asking Postgres. */
static rw_throttle_verdict_t cached(const rw_gate_t *g, long long n,
                                    long long *wait_ms)
{
    long long lim = rw_throttle_limit(&g->st);
    double age_min = (double)(rw_now_mono_ms() - g->st_ms) / 60000.0;
    double cap = (double)(g->st.burst > n ? g->st.burst : n);
    double tokens = g->st.tokens + age_min * g->st.rate_per_min;

    *wait_ms = 0;
    if (g->st.max_in_flight == 0)
        return RW_THROTTLE_BRAKE;
    if (g->st.in_flight + n > lim && !(n > lim && g->st.in_flight == 0))
        return RW_THROTTLE_BUDGET;
    if ((tokens < cap ? tokens : cap) < (double)n) {
        double ms = ((double)n - tokens) * 60000.0 / g->st.rate_per_min;
        *wait_ms = ms < RATE_WAIT_MAX_MS ? (long long)ms + 1 : RATE_WAIT_MAX_MS;
        return RW_THROTTLE_RATE;
    }
    return RW_THROTTLE_GRANTED;
}

static long long budget_wait_ms(rw_service_t *svc)
{
    long long base = svc->s->throttle_wait_ms;

    /* a little jitter so a fleet's waiting batches do not ask in step */
    return base +
           (long long)(rw_rand_next(&svc->rng) % (uint64_t)(base / 4 + 1));
}

bool rw_gate_take(rw_gate_t *g, rw_service_t *svc, long long n,
                  long long run_id, long long run_limit, long long *lease,
                  long long *wait_ms, rw_throttle_verdict_t *verdict, char *why,
                  size_t why_len, rw_err_t *err, char *errstr, size_t errlen)
{
    rw_throttle_grant_t gr = {0};
    rw_throttle_verdict_t v;
    long long hint = 0;
    bool fresh =
        g->st_ms > 0 && rw_now_mono_ms() - g->st_ms < svc->s->throttle_wait_ms;

    *lease = 0;
    *wait_ms = 0;
    *err = RW_OK;
    *verdict = RW_THROTTLE_GRANTED;
    v = fresh ? cached(g, n, &hint) : RW_THROTTLE_GRANTED;
    if (v == RW_THROTTLE_GRANTED) {
        *err = rw_throttle_take(svc->pg, n, g->holder, svc->s->throttle_lease_s,
                                run_id, run_limit, &gr, errstr, errlen);
        if (*err)
            return false;
        v = gr.verdict;
        hint = gr.wait_ms;
        /* the take's answer is the freshest view there is */
        g->st.in_flight = gr.in_flight;
        g->st.tokens = gr.tokens;
        if (v != RW_THROTTLE_UNCONFIGURED && gr.limit < g->st.max_in_flight)
            g->st.effective = gr.limit;
        g->st_ms = rw_now_mono_ms();
        if (v == RW_THROTTLE_UNCONFIGURED) {
            char e2[256];
            if (seed(svc, e2, sizeof(e2)) == RW_OK)
                refresh(g, svc);
        }
    }
    rw_metrics_add(g->m_verdict[v], 1);
    *verdict = v;
    if (v == RW_THROTTLE_GRANTED) {
        *lease = gr.lease_id;
        rw_metrics_observe(g->m_wait_s, (double)svc->msg_waited_ms / 1000.0);
        export_state(g, svc);
        return true;
    }
    if (v == RW_THROTTLE_RATE)
        /* capped: a rate raised meanwhile must not find batches parked
         * for hours (asking again costs no statement while the gate's
         * answer is fresh) */
        *wait_ms = hint < 20                 ? 20
                   : hint > RATE_WAIT_MAX_MS ? RATE_WAIT_MAX_MS
                                             : hint;
    else
        *wait_ms = budget_wait_ms(svc);
    if (v == RW_THROTTLE_RUN_LIMIT) {
        snprintf(why, why_len,
                 "run limit: %lld of the run in flight, limit %lld, %lld "
                 "more asked",
                 gr.run_in_flight, run_limit, n);
        return false;
    }
    snprintf(why, why_len,
             "throttle: %s (in flight %lld of %lld, %lld more asked, "
             "%.0f tokens)",
             rw_throttle_verdict_name(v), g->st.in_flight,
             rw_throttle_limit(&g->st), n, g->st.tokens);
    return false;
}
