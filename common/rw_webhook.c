/*
 * rw_webhook: run-event webhooks: event names, signatures, retry delays,
 * one synchronous send, and the producer's deliverer (claim, send through
 * a libcurl multi handle, record). See rw_webhook.h. It writes only
 * webhook_deliveries' delivery columns; the rows are written by
 * rw_run_transition.
 */
#include "rw_webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "rw_curl.h"
#include "rw_daemon.h"
#include "rw_lagoon.h"
#include "rw_log.h"
#include "rw_metrics.h"

#define COMP              "webhook"
#define BACKOFF_CAP_MS    600000LL
#define GAUGE_INTERVAL_MS 5000LL
/* a claim outlives the request by this much before another may take it */
#define LEASE_MARGIN_MS 30000LL

const char *const rw_webhook_events[] = {
    "run.started", "run.paused",    "run.resumed", "run.finished",
    "run.failed",  "run.cancelled", NULL};

const char *rw_webhook_event_for(rw_run_state_t from, rw_run_state_t to)
{
    switch (to) {
    case RW_RUN_RUNNING:
        if (from == RW_RUN_PENDING)
            return "run.started";
        if (from == RW_RUN_PAUSED)
            return "run.resumed";
        /* a retry re-opening a final run: its outcome is told again */
        return NULL;
    case RW_RUN_PAUSED:
        return "run.paused";
    case RW_RUN_COMPLETED:
    case RW_RUN_PARTIAL_FAILED:
        return "run.finished";
    case RW_RUN_FAILED:
        return "run.failed";
    case RW_RUN_CANCELLED:
        return "run.cancelled";
    default:
        return NULL;
    }
}

bool rw_webhook_event_known(const char *name)
{
    if (!name)
        return false;
    for (size_t i = 0; rw_webhook_events[i]; i++)
        if (strcmp(rw_webhook_events[i], name) == 0)
            return true;
    return false;
}

rw_err_t rw_webhook_sign(const char *secret, const char *body, size_t len,
                         char *sig, size_t siglen, char *errstr, size_t errlen)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (!secret || !body || !sig || siglen < RW_WEBHOOK_SIG_LEN)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "sign: bad arguments");
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret),
              (const unsigned char *)body, len, md, &mdlen) ||
        mdlen != 32)
        return rw_err_set(errstr, errlen, RW_ERR_IO, "HMAC-SHA256 failed");
    memcpy(sig, "sha256=", 7);
    for (unsigned i = 0; i < mdlen; i++) {
        sig[7 + 2 * i] = digits[md[i] >> 4];
        sig[7 + 2 * i + 1] = digits[md[i] & 15];
    }
    sig[7 + 2 * mdlen] = '\0';
    return RW_OK;
}

bool rw_webhook_verify(const char *secret, const char *body, size_t len,
                       const char *header)
{
    char sig[RW_WEBHOOK_SIG_LEN];

    if (!header || strlen(header) != RW_WEBHOOK_SIG_LEN - 1)
        return false;
    if (rw_webhook_sign(secret, body, len, sig, sizeof(sig), NULL, 0))
        return false;
    return CRYPTO_memcmp(sig, header, RW_WEBHOOK_SIG_LEN - 1) == 0;
}

long long rw_webhook_backoff_ms(long long base_ms, int attempts, unsigned rnd)
{
    long long d = base_ms > 0 ? base_ms : 1;

    for (int i = 1; i < attempts && d < BACKOFF_CAP_MS; i++)
        d *= 2;
    if (d > BACKOFF_CAP_MS)
        d = BACKOFF_CAP_MS;
    /* jitter spreads the retries of one receiver's many deliveries */
    return d + (long long)(rnd % (unsigned long long)(d / 10 + 1));
}

rw_webhook_result_t rw_webhook_classify(long status)
{
    if (status >= 200 && status < 300)
        return RW_WEBHOOK_DELIVERED;
    if (status == 0 || status >= 500 || status == 408 || status == 429)
        return RW_WEBHOOK_RETRY;
    return RW_WEBHOOK_DEAD;
}

void rw_webhook_url_safe(const char *url, char *buf, size_t len)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;

    snprintf(buf, len, "?");
    if (!u || !url)
        goto out;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        goto out;
    snprintf(buf, len, "%s://%s:%s", scheme, host, port);
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
}

/*
 * Set up easy for one signed POST; *hdrs receives the header list, which
 * the caller frees after the transfer (curl does not copy it).
 */
static rw_err_t setup(CURL *easy, struct curl_slist **hdrs, const char *url,
                      const char *secret, const char *event,
                      const char *delivery_id, const char *body,
                      long timeout_ms, char *errstr, size_t errlen)
{
    char sig[RW_WEBHOOK_SIG_LEN];
    char line[160];
    struct curl_slist *h = NULL, *t;
    rw_err_t err = RW_OK;

    *hdrs = NULL;
    err = rw_webhook_sign(secret, body, strlen(body), sig, sizeof(sig), errstr,
                          errlen);
    if (err)
        return err;
    t = curl_slist_append(h, "Content-Type: application/json");
    h = t ? t : h;
    /* no 100-continue round trip: the body is small */
    t = t ? curl_slist_append(h, "Expect:") : NULL;
    snprintf(line, sizeof(line), "X-Rollwave-Event: %s", event);
    t = t ? curl_slist_append(h, line) : NULL;
    snprintf(line, sizeof(line), "X-Rollwave-Delivery: %s", delivery_id);
    t = t ? curl_slist_append(h, line) : NULL;
    snprintf(line, sizeof(line), "X-Rollwave-Signature: %s", sig);
    t = t ? curl_slist_append(h, line) : NULL;
    if (!t) {
        curl_slist_free_all(h);
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    }
    *hdrs = h;
    rw_curl_plain(easy, url, timeout_ms, "rollwave-webhook/1");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    return RW_OK;
}

/* The reason of a transfer without an answer; never holds the URL. */
static void transport_reason(CURLcode cc, long timeout_ms, char *buf,
                             size_t len)
{
    if (cc == CURLE_OPERATION_TIMEDOUT)
        snprintf(buf, len, "timeout after %ld ms", timeout_ms);
    else
        snprintf(buf, len, "%s", curl_easy_strerror(cc));
}

rw_err_t rw_webhook_send(const char *url, const char *secret, const char *event,
                         const char *delivery_id, const char *body,
                         long timeout_ms, long *status, long long *latency_ms,
                         char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    struct curl_slist *hdrs = NULL;
    CURL *easy = NULL;
    long long t0 = rw_now_mono_ms();
    CURLcode cc;

    *status = 0;
    *latency_ms = 0;
    err = rw_lagoon_global_init(errstr, errlen);
    if (err)
        goto out;
    easy = curl_easy_init();
    if (!easy) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "curl_easy_init");
        goto out;
    }
    err = setup(easy, &hdrs, url, secret, event, delivery_id, body, timeout_ms,
                errstr, errlen);
    if (err)
        goto out;
    cc = curl_easy_perform(easy);
    *latency_ms = rw_now_mono_ms() - t0;
    if (cc != CURLE_OK) {
        char reason[160];
        transport_reason(cc, timeout_ms, reason, sizeof(reason));
        err = rw_err_set(errstr, errlen,
                         cc == CURLE_OPERATION_TIMEDOUT ? RW_ERR_TIMEOUT
                                                        : RW_ERR_IO,
                         "%s", reason);
        goto out;
    }
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, status);
out:
    curl_easy_cleanup(easy);
    curl_slist_free_all(hdrs);
    return err;
}

/* ---- the deliverer ------------------------------------------------------ */

typedef struct xfer {
    CURL *easy;
    struct curl_slist *hdrs;
    bool busy;
    long long id;
    long long webhook_id;
    int attempts;
    char *payload; /* owned: curl reads it during the transfer */
    char url_safe[160];
    char event[32];
} xfer_t;

/* One finished attempt, waiting for the record statement. */
typedef struct outcome {
    rw_pg_array_t id, attempts, state, status, error, delay;
    size_t n;
} outcome_t;

struct rw_webhook_deliverer {
    rw_pg_t *pg;
    CURLM *multi;
    rw_webhook_opts_t o;
    xfer_t *x;
    int busy;
    long long next_claim_ms;
    long long next_gauge_ms;
    unsigned seed;
    outcome_t out;
    rw_metric_t *m_delivered, *m_retry, *m_dead, *m_pending;
};

static void outcome_init(outcome_t *o)
{
    rw_pg_array_init(&o->id);
    rw_pg_array_init(&o->attempts);
    rw_pg_array_init(&o->state);
    rw_pg_array_init(&o->status);
    rw_pg_array_init(&o->error);
    rw_pg_array_init(&o->delay);
    o->n = 0;
}

static void outcome_free(outcome_t *o)
{
    rw_pg_array_free(&o->id);
    rw_pg_array_free(&o->attempts);
    rw_pg_array_free(&o->state);
    rw_pg_array_free(&o->status);
    rw_pg_array_free(&o->error);
    rw_pg_array_free(&o->delay);
}

rw_err_t rw_webhook_deliverer_new(rw_webhook_deliverer_t **dp, const char *dsn,
                                  const rw_webhook_opts_t *opts, char *errstr,
                                  size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_webhook_deliverer_t *d = NULL;

    *dp = NULL;
    err = rw_lagoon_global_init(errstr, errlen);
    if (err)
        goto out;
    d = calloc(1, sizeof(*d));
    if (d)
        d->x = calloc((size_t)opts->concurrency, sizeof(*d->x));
    if (!d || !d->x) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    d->o = *opts;
    outcome_init(&d->out);
    d->seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    d->multi = curl_multi_init();
    if (!d->multi) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "curl_multi_init");
        goto out;
    }
    for (int i = 0; i < opts->concurrency; i++) {
        d->x[i].easy = curl_easy_init();
        if (!d->x[i].easy) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "curl_easy_init");
            goto out;
        }
    }
    err = rw_pg_new(&d->pg, dsn, errstr, errlen);
    if (err)
        goto out;
    d->m_delivered = rw_metrics_counter("rollwave_webhook_deliveries_total",
                                        "webhook delivery attempts by outcome",
                                        "result=\"delivered\"");
    d->m_retry = rw_metrics_counter("rollwave_webhook_deliveries_total",
                                    "webhook delivery attempts by outcome",
                                    "result=\"retry\"");
    d->m_dead = rw_metrics_counter("rollwave_webhook_deliveries_total",
                                   "webhook delivery attempts by outcome",
                                   "result=\"dead\"");
    d->m_pending = rw_metrics_gauge("rollwave_webhook_pending",
                                    "webhook deliveries not yet delivered "
                                    "nor dead",
                                    NULL);
    *dp = d;
    d = NULL;
out:
    rw_webhook_deliverer_destroy(d);
    return err;
}

static void xfer_release(rw_webhook_deliverer_t *d, xfer_t *x)
{
    curl_multi_remove_handle(d->multi, x->easy);
    curl_slist_free_all(x->hdrs);
    x->hdrs = NULL;
    free(x->payload);
    x->payload = NULL;
    x->busy = false;
    d->busy--;
}

static void note(rw_webhook_deliverer_t *d, const xfer_t *x, const char *state,
                 long status, const char *error, long long delay_ms)
{
    char st[16];
    outcome_t *o = &d->out;

    snprintf(st, sizeof(st), "%ld", status);
    rw_pg_array_add_ll(&o->id, x->id);
    rw_pg_array_add_ll(&o->attempts, x->attempts);
    rw_pg_array_add_str(&o->state, state);
    rw_pg_array_add_str(&o->status, status > 0 ? st : NULL);
    rw_pg_array_add_str(&o->error, error);
    rw_pg_array_add_ll(&o->delay, delay_ms);
    o->n++;
}

/* Decide what an ended transfer means and queue its record. */
static void finish(rw_webhook_deliverer_t *d, xfer_t *x, CURLcode cc)
{
    long status = 0;
    char reason[200];
    rw_webhook_result_t r;
    long long delay = 0;
    const char *state;

    if (cc == CURLE_OK)
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    r = rw_webhook_classify(cc == CURLE_OK ? status : 0);
    if (cc != CURLE_OK)
        transport_reason(cc, d->o.timeout_ms, reason, sizeof(reason));
    else
        snprintf(reason, sizeof(reason), "HTTP %ld", status);
    if (r == RW_WEBHOOK_RETRY && x->attempts >= d->o.max_attempts) {
        size_t l = strlen(reason);
        snprintf(reason + l, sizeof(reason) - l, " after %d attempts",
                 x->attempts);
        r = RW_WEBHOOK_DEAD;
    } else if (r == RW_WEBHOOK_DEAD) {
        size_t l = strlen(reason);
        snprintf(reason + l, sizeof(reason) - l, " (not retried)");
    }
    switch (r) {
    case RW_WEBHOOK_DELIVERED:
        state = "delivered";
        rw_metrics_add(d->m_delivered, 1);
        break;
    case RW_WEBHOOK_RETRY:
        state = "pending";
        delay = rw_webhook_backoff_ms(d->o.backoff_ms, x->attempts,
                                      (unsigned)rand_r(&d->seed));
        rw_metrics_add(d->m_retry, 1);
        break;
    default:
        state = "dead";
        rw_metrics_add(d->m_dead, 1);
        break;
    }
    note(d, x, state, status, r == RW_WEBHOOK_DELIVERED ? NULL : reason, delay);
    if (r == RW_WEBHOOK_DELIVERED)
        rw_info(COMP,
                "event=webhook_delivered delivery=%lld webhook=%lld "
                "event_name=%s url=%s attempt=%d status=%ld",
                x->id, x->webhook_id, x->event, x->url_safe, x->attempts,
                status);
    else
        rw_warn(COMP,
                "event=webhook_failed delivery=%lld webhook=%lld "
                "event_name=%s url=%s attempt=%d outcome=%s delay_ms=%lld "
                "reason=\"%s\"",
                x->id, x->webhook_id, x->event, x->url_safe, x->attempts, state,
                delay, reason);
    xfer_release(d, x);
}

static const char record_sql[] =
    "UPDATE webhook_deliveries d"
    " SET state = u.state, last_status = u.status, last_error = u.error,"
    " next_at = CASE WHEN u.state = 'pending'"
    " THEN now() + u.delay * interval '1 millisecond' ELSE d.next_at END,"
    " delivered_at = CASE WHEN u.state = 'delivered' THEN now()"
    " ELSE d.delivered_at END"
    " FROM unnest($1::bigint[], $2::int[], $3::text[], $4::int[], $5::text[],"
    " $6::bigint[]) AS u(id, attempts, state, status, error, delay)"
    /* a claim whose lease ran out belongs to whoever claimed it next */
    " WHERE d.id = u.id AND d.state = 'pending' AND d.attempts = u.attempts";

/* Write the queued outcomes in one statement. */
static rw_err_t record(rw_webhook_deliverer_t *d, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    outcome_t *o = &d->out;
    const char *params[6];

    if (o->n == 0)
        return RW_OK;
    params[0] = rw_pg_array_finish(&o->id);
    params[1] = rw_pg_array_finish(&o->attempts);
    params[2] = rw_pg_array_finish(&o->state);
    params[3] = rw_pg_array_finish(&o->status);
    params[4] = rw_pg_array_finish(&o->error);
    params[5] = rw_pg_array_finish(&o->delay);
    for (int i = 0; i < 6; i++)
        if (!params[i]) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
    err = rw_pg_exec(d->pg, record_sql, 6, params, NULL, errstr, errlen);
    if (err)
        return err; /* kept: the next step writes them again */
out:
    outcome_free(o);
    outcome_init(o);
    return err;
}

/*
 * The oldest due delivery of each subscription that has none in flight
 * here ($3), oldest first: a silent receiver then holds one slot for its
 * timeout, never all of them, and other subscriptions always find one.
 * DISTINCT ON cannot lock, so the picked rows are locked in a second step,
 * which re-checks them against a replica that claimed one meanwhile.
 */
static const char claim_sql[] =
    "WITH firsts AS ("
    " SELECT DISTINCT ON (webhook_id) id, next_at FROM webhook_deliveries"
    " WHERE state = 'pending' AND next_at <= now()"
    " AND webhook_id <> ALL ($3::bigint[])"
    " ORDER BY webhook_id, next_at, id),"
    " due AS ("
    " SELECT d.id FROM webhook_deliveries d"
    " JOIN (SELECT id FROM firsts ORDER BY next_at, id LIMIT $1::int) f"
    " ON f.id = d.id"
    " WHERE d.state = 'pending' AND d.next_at <= now()"
    " FOR UPDATE OF d SKIP LOCKED)"
    " UPDATE webhook_deliveries d"
    " SET attempts = d.attempts + 1,"
    " next_at = now() + $2::bigint * interval '1 millisecond'"
    " FROM due, webhooks w"
    " WHERE d.id = due.id AND w.id = d.webhook_id"
    " RETURNING d.id, d.webhook_id, d.event, d.payload, d.attempts, w.url,"
    " w.secret";

/* Claim up to the free slots and start their transfers. */
static rw_err_t claim(rw_webhook_deliverer_t *d, int *claimed, char *errstr,
                      size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char lim[16], lease[24];
    rw_pg_array_t busy;
    const char *params[3] = {lim, lease, NULL};
    int free_slots = d->o.concurrency - d->busy;

    *claimed = 0;
    rw_pg_array_init(&busy);
    for (int i = 0; i < d->o.concurrency; i++)
        if (d->x[i].busy)
            rw_pg_array_add_ll(&busy, d->x[i].webhook_id);
    params[2] = rw_pg_array_finish(&busy);
    if (!params[2]) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    snprintf(lim, sizeof(lim), "%d", free_slots);
    snprintf(lease, sizeof(lease), "%lld",
             (long long)d->o.timeout_ms + LEASE_MARGIN_MS);
    err = rw_pg_exec(d->pg, claim_sql, 3, params, &res, errstr, errlen);
    if (err)
        goto out;
    for (int row = 0, i = 0; row < PQntuples(res); row++) {
        xfer_t *x;
        char id_s[24];
        rw_err_t e;

        while (i < d->o.concurrency && d->x[i].busy)
            i++;
        if (i == d->o.concurrency)
            break; /* cannot happen: the limit was the free slots */
        x = &d->x[i];
        x->id = rw_pg_ll(res, row, "id", 0);
        x->webhook_id = rw_pg_ll(res, row, "webhook_id", 0);
        x->attempts = (int)rw_pg_ll(res, row, "attempts", 0);
        snprintf(x->event, sizeof(x->event), "%s",
                 rw_pg_str(res, row, "event"));
        rw_webhook_url_safe(rw_pg_str(res, row, "url"), x->url_safe,
                            sizeof(x->url_safe));
        x->payload = strdup(rw_pg_str(res, row, "payload"));
        snprintf(id_s, sizeof(id_s), "%lld", x->id);
        x->busy = true;
        d->busy++;
        e = x->payload ? setup(x->easy, &x->hdrs, rw_pg_str(res, row, "url"),
                               rw_pg_str(res, row, "secret"), x->event, id_s,
                               x->payload, d->o.timeout_ms, errstr, errlen)
                       : RW_ERR_NOMEM;
        if (!e && curl_multi_add_handle(d->multi, x->easy) != CURLM_OK)
            e = RW_ERR_NOMEM;
        if (e) {
            /* due again at once, the attempt kept: a local failure */
            note(d, x, "pending", 0, "could not start the request", 0);
            curl_slist_free_all(x->hdrs);
            x->hdrs = NULL;
            free(x->payload);
            x->payload = NULL;
            x->busy = false;
            d->busy--;
            continue;
        }
        (*claimed)++;
    }
out:
    rw_pg_array_free(&busy);
    PQclear(res);
    return err;
}

static void pending_gauge(rw_webhook_deliverer_t *d)
{
    static const char sql[] =
        "SELECT count(*) AS n FROM webhook_deliveries WHERE state = 'pending'";
    PGresult *res = NULL;
    char errstr[256];

    if (rw_pg_exec(d->pg, sql, 0, NULL, &res, errstr, sizeof(errstr))) {
        rw_warn(COMP, "event=pending_gauge_failed detail=\"%s\"", errstr);
        return;
    }
    rw_metrics_set(d->m_pending, (double)rw_pg_ll(res, 0, "n", 0));
    PQclear(res);
}

rw_err_t rw_webhook_deliverer_step(rw_webhook_deliverer_t *d, int wait_ms,
                                   char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    long long now = rw_now_mono_ms();
    int running = 0, left = 0;
    CURLMsg *msg;

    if (now >= d->next_gauge_ms) {
        pending_gauge(d);
        d->next_gauge_ms = now + GAUGE_INTERVAL_MS;
    }
    if (d->busy < d->o.concurrency && now >= d->next_claim_ms) {
        int want = d->o.concurrency - d->busy, claimed = 0;
        err = claim(d, &claimed, errstr, errlen);
        /*
         * a full claim may have left more due: look again next step. A
         * short one leaves due only deliveries of subscriptions in
         * flight, which a finished transfer claims (below).
         */
        d->next_claim_ms = (err || claimed < want) ? now + d->o.poll_ms : now;
        if (err)
            goto out;
    }
    curl_multi_perform(d->multi, &running);
    while ((msg = curl_multi_info_read(d->multi, &left))) {
        xfer_t *x = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        for (int i = 0; !x && i < d->o.concurrency; i++)
            if (d->x[i].busy && d->x[i].easy == msg->easy_handle)
                x = &d->x[i];
        if (x) {
            finish(d, x, msg->data.result);
            /* its subscription's next due delivery may go now */
            d->next_claim_ms = rw_now_mono_ms();
        }
    }
    err = record(d, errstr, errlen);
    if (err)
        goto out;
    {
        long long until = d->busy < d->o.concurrency ? d->next_claim_ms : -1;
        int t = wait_ms;
        if (until >= 0 && until - rw_now_mono_ms() < t)
            t = (int)(until - rw_now_mono_ms());
        if (t > 0)
            curl_multi_poll(d->multi, NULL, 0, t, NULL);
    }
out:
    return err;
}

void rw_webhook_deliverer_destroy(rw_webhook_deliverer_t *d)
{
    char errstr[256];

    if (!d)
        return;
    for (int i = 0; d->x && i < d->o.concurrency; i++) {
        if (d->x[i].busy) {
            note(d, &d->x[i], "pending", 0, "interrupted by shutdown", 0);
            xfer_release(d, &d->x[i]);
        }
    }
    if (d->pg && record(d, errstr, sizeof(errstr)))
        rw_warn(COMP, "event=record_failed detail=\"%s\"", errstr);
    outcome_free(&d->out);
    for (int i = 0; d->x && i < d->o.concurrency; i++)
        curl_easy_cleanup(d->x[i].easy);
    if (d->multi)
        curl_multi_cleanup(d->multi);
    rw_pg_destroy(d->pg);
    free(d->x);
    free(d);
}
