/*
 * rw_outbox: outbox rows in and out of Postgres, and the delivery state
 * that links a produced message to its report. Every message produced here
 * carries a heap rw_delivery_t with two references (the waiter's and the
 * message's): whichever of the waiter and the report finishes last frees
 * it, so a report that arrives after its waiter gave up neither writes into
 * freed memory nor marks somebody else's row.
 */
#include "rw_outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_metrics.h"

#define POLL_STEP_MS 50

struct rw_delivery {
    int refs; /* waiter + message; the report drops the message's */
    int done;
    rw_err_t err;
    long long outbox_id;
};

/* Count n messages delivered to topic. */
static void count_produced(const char *topic, double n)
{
    char labels[300];

    snprintf(labels, sizeof(labels), "topic=\"%s\"", topic);
    rw_metrics_add(rw_metrics_counter("rollwave_messages_produced_total",
                                      "messages delivered to Kafka", labels),
                   n);
}

/* ---- delivery state ---------------------------------------------------- */

rw_delivery_t *rw_delivery_new(long long outbox_id)
{
    rw_delivery_t *d = calloc(1, sizeof(*d));

    if (!d)
        return NULL;
    d->refs = 1;
    d->err = RW_OK;
    d->outbox_id = outbox_id;
    return d;
}

void *rw_delivery_hold(rw_delivery_t *d)
{
    d->refs++;
    return d;
}

void rw_delivery_unhold(rw_delivery_t *d)
{
    /* the caller's reference remains, so this never frees */
    d->refs--;
}

void rw_delivery_release(rw_delivery_t *d)
{
    if (!d)
        return;
    if (--d->refs == 0)
        free(d);
}

bool rw_delivery_done(const rw_delivery_t *d, rw_err_t *result)
{
    if (result)
        *result = d->done ? d->err : RW_OK;
    return d->done != 0;
}

long long rw_delivery_outbox_id(const rw_delivery_t *d)
{
    return d->outbox_id;
}

static bool all_done(rw_delivery_t *const *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!d[i]->done)
            return false;
    return true;
}

rw_err_t rw_delivery_wait(rw_kafka_producer_t *kp, rw_delivery_t *const *d,
                          size_t n, int timeout_ms, char *errstr, size_t errlen)
{
    long long deadline;
    size_t missing = 0;

    if (timeout_ms < 0)
        timeout_ms = rw_kafka_producer_delivery_wait_ms(kp);
    deadline = rw_now_mono_ms() + timeout_ms;
    /* polling, not flushing: other messages' reports are not ours to await */
    while (!all_done(d, n)) {
        long long left = deadline - rw_now_mono_ms();
        if (left <= 0)
            break;
        rw_kafka_producer_poll(kp,
                               left < POLL_STEP_MS ? (int)left : POLL_STEP_MS);
    }
    for (size_t i = 0; i < n; i++)
        if (!d[i]->done)
            missing++;
    if (missing)
        return rw_err_set(errstr, errlen, RW_ERR_KAFKA_TRANSIENT,
                          "no delivery report for %zu of %zu messages within "
                          "%d ms",
                          missing, n, timeout_ms);
    return RW_OK;
}

void rw_delivery_cb(void *dr_opaque, void *msg_opaque, rw_err_t result,
                    int32_t partition, int64_t offset, const char *errmsg)
{
    rw_delivery_t *d = msg_opaque;

    (void)dr_opaque;
    (void)partition;
    (void)offset;
    if (result)
        rw_warn("kafka", "event=delivery_failed err=%s detail=\"%s\"",
                rw_err_name(result), errmsg ? errmsg : "");
    if (!d)
        return;
    if (d->refs == 1) {
        /*
         * The waiter gave up and dropped its reference: nobody will read
         * this outcome. An undelivered row stays for the relay; a
         * delivered one is relayed again, a duplicate the consumers drop.
         */
        rw_warn("kafka", "event=delivery_report_late outbox_id=%lld result=%s",
                d->outbox_id, rw_err_name(result));
        rw_metrics_add(
            rw_metrics_counter("rollwave_delivery_reports_late_total",
                               "delivery reports that arrived after their "
                               "waiter gave up",
                               NULL),
            1);
    }
    d->err = result;
    d->done = 1;
    rw_delivery_release(d);
}

/*
 * Produce one message tracked by a delivery state of its own and wait for
 * its report. RW_OK only when Kafka has it.
 */
static rw_err_t produce_wait(rw_kafka_producer_t *kp, const char *topic,
                             const char *key, const char *payload,
                             long long outbox_id, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_delivery_t *d = rw_delivery_new(outbox_id);
    rw_err_t result = RW_OK;

    if (!d)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    err =
        rw_kafka_produce(kp, topic, key, strlen(key), payload, strlen(payload),
                         NULL, 0, rw_delivery_hold(d), errstr, errlen);
    if (err) {
        rw_delivery_unhold(d); /* never queued: no report will come */
        goto out;
    }
    err = rw_delivery_wait(kp, &d, 1, -1, errstr, errlen);
    if (err)
        goto out;
    rw_delivery_done(d, &result);
    if (result) {
        err = rw_err_set(errstr, errlen, result, "delivery to %s failed: %s",
                         topic, rw_err_str(result));
        goto out;
    }
    count_produced(topic, 1);
out:
    rw_delivery_release(d);
    return err;
}

rw_err_t rw_produce_sync(rw_kafka_producer_t *kp, const char *topic,
                         const char *key, const char *payload, char *errstr,
                         size_t errlen)
{
    return produce_wait(kp, topic, key, payload, 0, errstr, errlen);
}

/* ---- outbox ------------------------------------------------------------ */

static const char SQL_OUTBOX_ADD[] =
    "INSERT INTO outbox (topic, msg_key, payload) VALUES ($1, $2, $3)"
    " RETURNING id";

static const char SQL_OUTBOX_PICK[] =
    "SELECT id, topic, msg_key, payload FROM outbox"
    " WHERE published_at IS NULL"
    "   AND created_at <= now() - make_interval(secs => $2::int)"
    " ORDER BY id LIMIT $1::int"
    " FOR UPDATE SKIP LOCKED";

static const char SQL_OUTBOX_DONE[] =
    "UPDATE outbox SET published_at = now()"
    " WHERE id = ANY($1::bigint[]) AND published_at IS NULL";

static const char SQL_OUTBOX_DONE_ONE[] =
    "UPDATE outbox SET published_at = now()"
    " WHERE id = $1::bigint AND published_at IS NULL";

/* Served by outbox_published_idx (0005): a short range scan per batch. */
static const char SQL_OUTBOX_PRUNE[] =
    "DELETE FROM outbox WHERE id IN ("
    "  SELECT id FROM outbox"
    "   WHERE published_at IS NOT NULL"
    "     AND published_at < now() - make_interval(secs => $1::double "
    "precision)"
    "   ORDER BY published_at LIMIT $2::int)";

rw_err_t rw_outbox_add(rw_pg_t *pg, const char *topic, const char *key,
                       const char *payload, long long *id, char *errstr,
                       size_t errlen)
{
    const char *p[3] = {topic, key, payload};
    PGresult *res = NULL;
    rw_err_t err = RW_OK;

    err = rw_pg_exec(pg, SQL_OUTBOX_ADD, 3, p, &res, errstr, errlen);
    if (err)
        goto out;
    *id = rw_pg_ll(res, 0, "id", 0);
out:
    PQclear(res);
    return err;
}

rw_err_t rw_outbox_publish(rw_pg_t *pg, rw_kafka_producer_t *kp,
                           const rw_settings_t *s, long long id,
                           const char *topic, const char *key,
                           const char *payload, char *errstr, size_t errlen)
{
    char full[256], id_s[24];
    const char *p[1] = {id_s};
    rw_err_t err = RW_OK;

    rw_kafka_topic(full, sizeof(full), s, topic);
    err = produce_wait(kp, full, key, payload, id, errstr, errlen);
    if (err)
        return err;
    snprintf(id_s, sizeof(id_s), "%lld", id);
    return rw_pg_exec(pg, SQL_OUTBOX_DONE_ONE, 1, p, NULL, errstr, errlen);
}

/* One relay round: returns the number of rows picked in *picked. */
static rw_err_t relay_round(rw_pg_t *pg, rw_kafka_producer_t *kp,
                            const rw_settings_t *s, int limit, int min_age_s,
                            int *picked, long long *published, char *errstr,
                            size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    rw_delivery_t **d = NULL;
    rw_pg_array_t a_done;
    char limit_s[16], age_s[16];
    const char *params[2] = {limit_s, age_s};
    int n = 0, produced = 0;
    long long ok = 0;

    rw_pg_array_init(&a_done);
    *picked = 0;
    snprintf(limit_s, sizeof(limit_s), "%d", limit);
    snprintf(age_s, sizeof(age_s), "%d", min_age_s);
    err = rw_pg_begin(pg, errstr, errlen);
    if (err)
        goto out;
    err = rw_pg_exec(pg, SQL_OUTBOX_PICK, 2, params, &res, errstr, errlen);
    if (err)
        goto out;
    n = PQntuples(res);
    *picked = n;
    if (n == 0)
        goto commit;
    d = calloc((size_t)n, sizeof(*d));
    if (!d) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        char topic[256];
        const char *key = rw_pg_str(res, i, "msg_key");
        const char *payload = rw_pg_str(res, i, "payload");

        d[i] = rw_delivery_new(rw_pg_ll(res, i, "id", 0));
        if (!d[i]) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            break;
        }
        rw_kafka_topic(topic, sizeof(topic), s, rw_pg_str(res, i, "topic"));
        err = rw_kafka_produce(kp, topic, key, strlen(key), payload,
                               strlen(payload), NULL, 0, rw_delivery_hold(d[i]),
                               errstr, errlen);
        if (err) {
            rw_delivery_unhold(d[i]); /* never queued: no report */
            break;
        }
        produced++;
    }
    /*
     * Reports still missing after the wait mean their rows stay unpublished;
     * their states outlive this round until the reports come.
     */
    rw_delivery_wait(kp, d, (size_t)produced, -1, NULL, 0);
    for (int i = 0; i < produced; i++) {
        rw_err_t result = RW_OK;
        char topic[256];

        if (!rw_delivery_done(d[i], &result) || result)
            continue;
        rw_kafka_topic(topic, sizeof(topic), s, rw_pg_str(res, i, "topic"));
        count_produced(topic, 1);
        rw_pg_array_add_ll(&a_done, rw_delivery_outbox_id(d[i]));
        ok++;
    }
    if (ok > 0) {
        const char *p[1] = {rw_pg_array_finish(&a_done)};
        rw_err_t uerr = RW_OK;

        if (!p[0]) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
        uerr = rw_pg_exec(pg, SQL_OUTBOX_DONE, 1, p, NULL, errstr, errlen);
        if (uerr) {
            err = uerr;
            goto out;
        }
    }
    if (ok < produced && !err)
        err = rw_err_set(errstr, errlen, RW_ERR_KAFKA_TRANSIENT,
                         "%lld of %d outbox messages not delivered; they stay "
                         "queued",
                         produced - ok, produced);
commit : {
    /* record what was delivered even when a later message failed */
    rw_err_t cerr = rw_pg_commit(pg, err ? NULL : errstr, errlen);
    if (!cerr)
        *published += ok;
    if (!err)
        err = cerr;
}
out:
    if (rw_pg_in_tx(pg))
        rw_pg_rollback(pg, NULL, 0);
    for (int i = 0; d && i < n; i++)
        rw_delivery_release(d[i]);
    free(d);
    PQclear(res);
    rw_pg_array_free(&a_done);
    return err;
}

rw_err_t rw_outbox_relay(rw_pg_t *pg, rw_kafka_producer_t *kp,
                         const rw_settings_t *s, int limit, int min_age_s,
                         long long *published, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    int picked = 0;

    *published = 0;
    do {
        err = relay_round(pg, kp, s, limit, min_age_s, &picked, published,
                          errstr, errlen);
    } while (!err && picked == limit);
    if (*published > 0)
        rw_info("outbox", "event=relayed messages=%lld", *published);
    return err;
}

rw_err_t rw_outbox_prune(rw_pg_t *pg, long long retention_s, int batch,
                         long long *n_deleted, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char ret_s[24], batch_s[16];
    const char *p[2] = {ret_s, batch_s};
    long long n = 0;

    *n_deleted = 0;
    if (retention_s < 0 || batch <= 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "outbox prune: retention %lld s, batch %d",
                          retention_s, batch);
    snprintf(ret_s, sizeof(ret_s), "%lld", retention_s);
    snprintf(batch_s, sizeof(batch_s), "%d", batch);
    /* small statements: each holds its row locks only briefly */
    do {
        PQclear(res);
        res = NULL;
        err = rw_pg_exec(pg, SQL_OUTBOX_PRUNE, 2, p, &res, errstr, errlen);
        if (err)
            break;
        n = atoll(PQcmdTuples(res));
        *n_deleted += n;
    } while (n == batch);
    PQclear(res);
    if (*n_deleted > 0) {
        rw_info("outbox", "event=pruned rows=%lld retention_s=%lld", *n_deleted,
                retention_s);
        rw_metrics_add(rw_metrics_counter("rollwave_outbox_pruned_total",
                                          "published outbox rows deleted "
                                          "after the retention",
                                          NULL),
                       (double)*n_deleted);
    }
    return err;
}
