/*
 * rw_webhook: run-event webhooks. The event of a run transition, the
 * signature of a body, the retry delay and the outcome of an attempt (pure
 * functions), one synchronous send (rollwavectl webhook test), and the
 * deliverer the producer runs: it claims due rows of webhook_deliveries,
 * sends them through one libcurl multi handle and records the outcomes.
 *
 * It does not write deliveries (rw_run_transition does, in the statement
 * of the event) and does not manage subscriptions (ctl/ctl_webhook.c).
 * Secrets and URL credentials are never logged: a URL is shown as
 * scheme://host:port only (rw_webhook_url_safe).
 */
#ifndef RW_WEBHOOK_H
#define RW_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"
#include "rw_pg.h"
#include "rw_state.h"

/* "sha256=" and 64 hex digits, and the terminating NUL */
#define RW_WEBHOOK_SIG_LEN (7 + 64 + 1)
/* a secret `webhook add` generates: 32 random bytes in hex */
#define RW_WEBHOOK_SECRET_LEN 64

/* Every event a subscription may name, NULL-terminated. */
extern const char *const rw_webhook_events[];

/*
 * The event of a run edge: run.started (pending -> running), run.resumed
 * (paused -> running), run.paused, run.finished (-> completed or
 * partial_failed), run.failed, run.cancelled; NULL for none (a retry
 * re-opening a final run).
 */
const char *rw_webhook_event_for(rw_run_state_t from, rw_run_state_t to);

/* Whether name is one of rw_webhook_events. */
bool rw_webhook_event_known(const char *name);

/*
 * "sha256=<hex HMAC-SHA256(secret, body)>" into sig (at least
 * RW_WEBHOOK_SIG_LEN bytes).
 */
rw_err_t rw_webhook_sign(const char *secret, const char *body, size_t len,
                         char *sig, size_t siglen, char *errstr, size_t errlen);

/* Whether header is the signature of body under secret (constant time). */
bool rw_webhook_verify(const char *secret, const char *body, size_t len,
                       const char *header);

/*
 * Delay before the attempt after attempt number `attempts` (1 = the first
 * failed): base_ms doubled per failed attempt, capped at 10 minutes, plus
 * a jitter of rnd % (delay / 10 + 1).
 */
long long rw_webhook_backoff_ms(long long base_ms, int attempts, unsigned rnd);

typedef enum rw_webhook_result {
    RW_WEBHOOK_DELIVERED, /* 2xx */
    RW_WEBHOOK_RETRY,     /* 5xx, 408, 429, timeout, connection error */
    RW_WEBHOOK_DEAD       /* any other answer: retrying would not help */
} rw_webhook_result_t;

/* The outcome of an attempt: HTTP status (0 = no answer at all). */
rw_webhook_result_t rw_webhook_classify(long status);

/* scheme://host:port of url into buf, "?" when url does not parse. */
void rw_webhook_url_safe(const char *url, char *buf, size_t len);

/*
 * Send one signed POST and wait for the answer (at most timeout_ms).
 * delivery_id goes into X-Rollwave-Delivery. *status is the HTTP status
 * (0 = none) and *latency_ms the time taken. An HTTP answer, whatever its
 * status, is RW_OK; no answer is RW_ERR_TIMEOUT or RW_ERR_IO with curl's
 * reason (never the URL) in errstr.
 */
rw_err_t rw_webhook_send(const char *url, const char *secret, const char *event,
                         const char *delivery_id, const char *body,
                         long timeout_ms, long *status, long long *latency_ms,
                         char *errstr, size_t errlen);

typedef struct rw_webhook_opts {
    int concurrency;      /* requests in flight at most */
    long timeout_ms;      /* per request, in total */
    long long backoff_ms; /* first retry delay */
    int max_attempts;     /* then dead */
    long long poll_ms;    /* look for due deliveries this often when idle */
} rw_webhook_opts_t;

typedef struct rw_webhook_deliverer rw_webhook_deliverer_t;

/*
 * A deliverer on its own connection to dsn (pg is opened here and owned).
 * Metrics rollwave_webhook_deliveries_total{result} and
 * rollwave_webhook_pending are registered here.
 */
rw_err_t rw_webhook_deliverer_new(rw_webhook_deliverer_t **dp, const char *dsn,
                                  const rw_webhook_opts_t *opts, char *errstr,
                                  size_t errlen);

/*
 * One step, at most about wait_ms long: claim due deliveries for the free
 * slots (a claim adds one attempt and pushes next_at past the request's
 * timeout, so a deliverer that dies mid-request only delays a redelivery),
 * move the transfers on, and record those that ended. No transaction is
 * held across a request. Errors are Postgres ones; the transfers in
 * flight carry on.
 */
rw_err_t rw_webhook_deliverer_step(rw_webhook_deliverer_t *d, int wait_ms,
                                   char *errstr, size_t errlen);

/*
 * Abandon the transfers in flight (they are made due again at once, the
 * attempt they took kept) and free everything. NULL ok.
 */
void rw_webhook_deliverer_destroy(rw_webhook_deliverer_t *d);

#endif
