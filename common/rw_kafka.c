/*
 * rw_kafka: librdkafka behind a small opaque API: configuration from
 * rw_settings_t, an idempotent producer, a manual-commit group consumer with
 * a rebalance callback, dead letters and offset queries.
 *
 * It does not retry on its own beyond librdkafka's internal retries and a
 * short wait on a full local queue; what to do with a failure is the
 * caller's decision (rw_err_is_retriable). No Admin API anywhere, so the
 * same code runs against the mock cluster and a real Kafka.
 */
#include "rw_kafka.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_metrics.h"

#define COMP               "kafka"
#define QUEUE_FULL_WAIT_MS 100
#define QUEUE_FULL_TRIES   50
#define DESTROY_FLUSH_MS   10000
/* Serving the reports of purged messages needs no broker: short. */
#define DESTROY_PURGE_MS 2000
/* After the last rebalance event, how long a probe's assignment must stay
 * put before it is judged: cooperative rebalancing hands partitions over
 * in a second round right after the first. */
#define PROBE_SETTLE_MS 2000
#define PROBE_POLL_MS   100
/* After a join that did not complete: does the coordinator answer? */
#define PROBE_COORD_CHECK_MS 5000

struct rw_kafka_producer {
    rd_kafka_t *rk;
    rw_kafka_dr_cb dr_cb;
    void *dr_opaque;
    int message_timeout_ms; /* as configured, operator overrides included */
};

struct rw_kafka_consumer {
    rd_kafka_t *rk;
    int subscribed;
    int closed;
    int hold;                     /* group probe: assigned partitions paused */
    int rebalances;               /* assign and revoke events seen */
    rw_kafka_revoke_fn on_revoke; /* see rw_kafka_consumer_on_revoke */
    void *on_revoke_opaque;
    long long last_rebalance_ms; /* rw_now_mono_ms of the last one */
    char rebalance_err[256];     /* first rebalance failure, "" if none */
};

struct rw_kafka_msg {
    rd_kafka_message_t *rkm;
    rd_kafka_headers_t *hdrs; /* owned by rkm; NULL when there are none */
};

/* ---- errors ------------------------------------------------------------ */

/* The one place that sorts librdkafka's codes into rollwave's. */
static rw_err_t map_kerr(rd_kafka_resp_err_t kerr)
{
    switch (kerr) {
    case RD_KAFKA_RESP_ERR_NO_ERROR:
        return RW_OK;
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
        return RW_ERR_TIMEOUT;
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
        return RW_ERR_NOT_FOUND;
    case RD_KAFKA_RESP_ERR__STATE:
        return RW_ERR_CONFLICT;
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return RW_ERR_INVALID_ARG;
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR__QUEUE_FULL:
    case RD_KAFKA_RESP_ERR__MSG_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__RESOLVE:
    case RD_KAFKA_RESP_ERR__WAIT_COORD:
    case RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS:
    case RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND:
    case RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_COORDINATOR:
    case RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS:
    case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
        return RW_ERR_KAFKA_TRANSIENT;
    default:
        return RW_ERR_KAFKA;
    }
}

static rw_err_t kerr_set(char *errstr, size_t errlen, rd_kafka_resp_err_t kerr,
                         const char *what)
{
    return rw_err_set(errstr, errlen, map_kerr(kerr), "%s: %s (%s)", what,
                      rd_kafka_err2str(kerr), rd_kafka_err2name(kerr));
}

/* Consumes error. */
static rw_err_t kerror_set(char *errstr, size_t errlen, rd_kafka_error_t *error,
                           const char *what)
{
    rw_err_t err =
        rw_err_set(errstr, errlen, map_kerr(rd_kafka_error_code(error)),
                   "%s: %s", what, rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    return err;
}

/* ---- configuration ----------------------------------------------------- */

/* librdkafka library logs; it redacts sensitive properties itself. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    char qbuf[1024];
    rw_log_level_t lvl = level <= 3   ? RW_LOG_ERROR
                         : level == 4 ? RW_LOG_WARN
                         : level <= 6 ? RW_LOG_INFO
                                      : RW_LOG_DEBUG;

    RW_LOG(lvl, COMP, "event=librdkafka client=%s fac=%s msg=%s",
           rd_kafka_name(rk), fac, rw_log_quote(qbuf, sizeof(qbuf), buf));
}

static void error_cb(rd_kafka_t *rk, int kerr, const char *reason, void *opaque)
{
    char qbuf[1024];

    (void)opaque;
    rw_log_quote(qbuf, sizeof(qbuf), reason);
    if (kerr == RD_KAFKA_RESP_ERR__FATAL)
        rw_error(COMP, "event=fatal_error client=%s reason=%s",
                 rd_kafka_name(rk), qbuf);
    else
        rw_warn(COMP, "event=client_error client=%s error=%s reason=%s",
                rd_kafka_name(rk), rd_kafka_err2name((rd_kafka_resp_err_t)kerr),
                qbuf);
}

/* Values of keys like these must not appear in any message. */
static int key_is_secret(const char *key)
{
    return strstr(key, "password") || strstr(key, "secret") ||
           strstr(key, "jaas") || strstr(key, "token");
}

static rw_err_t conf_set(rd_kafka_conf_t *conf, const char *key,
                         const char *val, char *errstr, size_t errlen)
{
    char kerrstr[512];
    rd_kafka_conf_res_t res;

    res = rd_kafka_conf_set(conf, key, val, kerrstr, sizeof(kerrstr));
    if (res == RD_KAFKA_CONF_OK)
        return RW_OK;
    if (res == RD_KAFKA_CONF_UNKNOWN)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "unknown kafka property \"%s\"", key);
    if (key_is_secret(key))
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "invalid value for kafka property \"%s\"", key);
    return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                      "invalid value for kafka property \"%s\": %s", key,
                      kerrstr);
}

static char *trim(char *s)
{
    char *end;

    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

rw_err_t rw_kafka_conf_apply_properties(rd_kafka_conf_t *conf,
                                        const char *props, char *errstr,
                                        size_t errlen)
{
    rw_err_t err = RW_OK;
    char *copy = NULL;
    char *entry, *next;
    int n = 0;

    if (!props || !*props)
        return RW_OK;
    copy = strdup(props);
    if (!copy)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "kafka properties");
    /* Empty entries (a trailing comma) are tolerated; anything else must
     * be key=value. Errors name the entry's position or key only, since a
     * value may be a secret. */
    for (entry = copy; entry; entry = next) {
        char *eq, *key, *val;

        next = strchr(entry, ',');
        if (next)
            *next++ = '\0';
        n++;
        entry = trim(entry);
        if (!*entry)
            continue;
        eq = strchr(entry, '=');
        if (!eq) {
            err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                             "kafka properties: entry %d is not key=value", n);
            goto out;
        }
        *eq = '\0';
        key = trim(entry);
        val = trim(eq + 1);
        if (!*key) {
            err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                             "kafka properties: entry %d has an empty key", n);
            goto out;
        }
        err = conf_set(conf, key, val, errstr, errlen);
        if (err)
            goto out;
    }
out:
    free(copy);
    return err;
}

static int set_str(const char *s)
{
    return s && *s;
}

/*
 * Base configuration from settings, then kafka_properties, then forced
 * (NULL-terminated key, value pairs) that the module's semantics depend on.
 */
/*
 * defaults (name, value pairs; may be NULL) are set before the operator's
 * ROLLWAVE_KAFKA_PROPERTIES so they can be overridden; forced ones after,
 * so they cannot.
 */
static rw_err_t conf_build(rd_kafka_conf_t **confp, const rw_settings_t *s,
                           const char *const *defaults,
                           const char *const *forced, char *errstr,
                           size_t errlen)
{
    rd_kafka_conf_t *conf = NULL;
    rw_err_t err = RW_OK;

    *confp = NULL;
    if (!set_str(s->kafka_brokers))
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "no kafka bootstrap servers configured");
    conf = rd_kafka_conf_new();
    if (!conf)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "kafka conf");
    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_error_cb(conf, error_cb);

    err = conf_set(conf, "bootstrap.servers", s->kafka_brokers, errstr, errlen);
    if (!err && set_str(s->kafka_security_protocol))
        err = conf_set(conf, "security.protocol", s->kafka_security_protocol,
                       errstr, errlen);
    if (!err && set_str(s->kafka_sasl_mechanism))
        err = conf_set(conf, "sasl.mechanisms", s->kafka_sasl_mechanism, errstr,
                       errlen);
    if (!err && set_str(s->kafka_sasl_username))
        err = conf_set(conf, "sasl.username", s->kafka_sasl_username, errstr,
                       errlen);
    if (!err && set_str(s->kafka_sasl_password))
        err = conf_set(conf, "sasl.password", s->kafka_sasl_password, errstr,
                       errlen);
    if (!err && set_str(s->kafka_ssl_ca_location))
        err = conf_set(conf, "ssl.ca.location", s->kafka_ssl_ca_location,
                       errstr, errlen);
    for (; !err && defaults && defaults[0]; defaults += 2)
        err = conf_set(conf, defaults[0], defaults[1], errstr, errlen);
    if (!err)
        err = rw_kafka_conf_apply_properties(conf, s->kafka_properties, errstr,
                                             errlen);
    for (; !err && forced && forced[0]; forced += 2)
        err = conf_set(conf, forced[0], forced[1], errstr, errlen);
    if (err)
        goto out;
    *confp = conf;
    conf = NULL;
out:
    if (conf)
        rd_kafka_conf_destroy(conf);
    return err;
}

rw_err_t rw_kafka_conf_new(rd_kafka_conf_t **confp, const rw_settings_t *s,
                           char *errstr, size_t errlen)
{
    return conf_build(confp, s, NULL, NULL, errstr, errlen);
}

void rw_kafka_topic(char *buf, size_t len, const rw_settings_t *s,
                    const char *name)
{
    const char *prefix =
        s && s->kafka_topic_prefix ? s->kafka_topic_prefix : "";
    snprintf(buf, len, "%s%s", prefix, name);
}

/* ---- producer ---------------------------------------------------------- */

/* Runs inside rd_kafka_poll/flush on the caller's thread; librdkafka frees
 * the message afterwards. */
static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                      void *opaque)
{
    rw_kafka_producer_t *kp = opaque;
    rw_err_t result = map_kerr(rkm->err);

    (void)rk;
    if (rkm->err)
        rw_warn(COMP, "event=delivery_failed topic=%s error=%s",
                rd_kafka_topic_name(rkm->rkt), rd_kafka_err2name(rkm->err));
    if (!kp->dr_cb)
        return;
    kp->dr_cb(kp->dr_opaque, rkm->_private, result,
              rkm->err ? -1 : rkm->partition, rkm->err ? -1 : rkm->offset,
              rkm->err ? rd_kafka_err2str(rkm->err) : "");
}

rw_err_t rw_kafka_producer_new(rw_kafka_producer_t **kpp,
                               const rw_settings_t *s, rw_kafka_dr_cb dr_cb,
                               void *dr_opaque, char *errstr, size_t errlen)
{
    /*
     * lz4: a batch message is JSON with fifty similar targets and shrinks
     * several-fold, which keeps a million-instance backlog inside a
     * topic's retention and costs the producer little CPU. Consumers
     * decompress whatever codec a message carries, so an operator may
     * change it (ROLLWAVE_KAFKA_PROPERTIES=compression.type=zstd).
     *
     * linger.ms 0 (librdkafka's default is 5): every publish here is
     * awaited as soon as it is queued (a chunk's poll event, a relay
     * round's rows), so lingering only delays the wait: 5 ms on every
     * chunk a worker triggers and every poll event a poller queues, with
     * the cores idle meanwhile. A relay round's rows are all queued
     * before its wait and still go out in batches, the later ones while
     * the first request is in flight.
     */
    static const char *const defaults[] = {
        "message.timeout.ms",
        RW_KAFKA_MESSAGE_TIMEOUT_MS_DEFAULT,
        "compression.type",
        "lz4",
        "linger.ms",
        "0",
        NULL,
        NULL,
    };
    static const char *const forced[] = {
        "enable.idempotence", "true", "acks", "all", NULL, NULL,
    };
    rw_kafka_producer_t *kp = NULL;
    rd_kafka_conf_t *conf = NULL;
    char kerrstr[512], val[32];
    size_t vlen = sizeof(val);
    rw_err_t err = RW_OK;

    *kpp = NULL;
    kp = calloc(1, sizeof(*kp));
    if (!kp)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "kafka producer");
    kp->dr_cb = dr_cb;
    kp->dr_opaque = dr_opaque;
    err = conf_build(&conf, s, defaults, forced, errstr, errlen);
    if (err)
        goto out;
    /*
     * Every wait on a delivery report derives from the timeout in force,
     * which ROLLWAVE_KAFKA_PROPERTIES may have changed: read it back.
     */
    if (rd_kafka_conf_get(conf, "message.timeout.ms", val, &vlen) !=
        RD_KAFKA_CONF_OK) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "kafka producer: no message.timeout.ms");
        goto out;
    }
    kp->message_timeout_ms = atoi(val);
    if (kp->message_timeout_ms <= 0 ||
        kp->message_timeout_ms > RW_KAFKA_MESSAGE_TIMEOUT_MS_MAX) {
        /* 0 (infinite) would leave a waiter nothing to derive from */
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "kafka producer: message.timeout.ms must be 1..%d",
                         RW_KAFKA_MESSAGE_TIMEOUT_MS_MAX);
        goto out;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
    rd_kafka_conf_set_opaque(conf, kp);
    kp->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerrstr, sizeof(kerrstr));
    if (!kp->rk) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG, "kafka producer: %s",
                         kerrstr);
        goto out;
    }
    conf = NULL; /* rd_kafka_new took it */
    rw_info(COMP, "event=producer_started client=%s", rd_kafka_name(kp->rk));
    *kpp = kp;
    kp = NULL;
out:
    if (conf)
        rd_kafka_conf_destroy(conf);
    free(kp);
    return err;
}

rw_err_t rw_kafka_produce(rw_kafka_producer_t *kp, const char *topic,
                          const char *key, size_t keylen, const void *payload,
                          size_t len, const rw_kafka_header_t *headers,
                          size_t n_headers, void *msg_opaque, char *errstr,
                          size_t errlen)
{
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_error_t *error = NULL;
    rd_kafka_vu_t vus[7];
    size_t nv = 0;
    rw_err_t err = RW_OK;

    if (!kp || !topic || !*topic)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "produce: no producer or topic");
    vus[nv].vtype = RD_KAFKA_VTYPE_TOPIC;
    vus[nv++].u.cstr = topic;
    if (key) {
        vus[nv].vtype = RD_KAFKA_VTYPE_KEY;
        vus[nv].u.mem.ptr = (void *)key;
        vus[nv++].u.mem.size = keylen;
    }
    if (payload) {
        vus[nv].vtype = RD_KAFKA_VTYPE_VALUE;
        vus[nv].u.mem.ptr = (void *)payload;
        vus[nv++].u.mem.size = len;
    }
    vus[nv].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vus[nv++].u.i = RD_KAFKA_MSG_F_COPY;
    vus[nv].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vus[nv++].u.ptr = msg_opaque;
    if (n_headers) {
        hdrs = rd_kafka_headers_new(n_headers);
        for (size_t i = 0; i < n_headers; i++)
            rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value,
                                (ssize_t)headers[i].len);
        vus[nv].vtype = RD_KAFKA_VTYPE_HEADERS;
        vus[nv++].u.headers = hdrs;
    }

    /* A full local queue drains as delivery reports are served. */
    for (int tries = 0;; tries++) {
        error = rd_kafka_produceva(kp->rk, vus, nv);
        if (!error) {
            hdrs = NULL; /* the message owns them now */
            goto out;
        }
        if (rd_kafka_error_code(error) != RD_KAFKA_RESP_ERR__QUEUE_FULL ||
            tries >= QUEUE_FULL_TRIES)
            break;
        rd_kafka_error_destroy(error);
        error = NULL;
        rd_kafka_poll(kp->rk, QUEUE_FULL_WAIT_MS);
    }
    if (rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[512];
        rd_kafka_fatal_error(kp->rk, fatal, sizeof(fatal));
        err =
            rw_err_set(errstr, errlen, RW_ERR_KAFKA,
                       "produce to %s: fatal producer error: %s", topic, fatal);
        rd_kafka_error_destroy(error);
    } else {
        char what[300];
        snprintf(what, sizeof(what), "produce to %s", topic);
        err = kerror_set(errstr, errlen, error, what);
    }
out:
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    return err;
}

int rw_kafka_producer_poll(rw_kafka_producer_t *kp, int timeout_ms)
{
    return rd_kafka_poll(kp->rk, timeout_ms);
}

rw_err_t rw_kafka_producer_flush(rw_kafka_producer_t *kp, int timeout_ms,
                                 char *errstr, size_t errlen)
{
    rd_kafka_resp_err_t kerr = rd_kafka_flush(kp->rk, timeout_ms);

    if (kerr == RD_KAFKA_RESP_ERR__TIMED_OUT)
        return rw_err_set(errstr, errlen, RW_ERR_TIMEOUT,
                          "flush: %d messages still outstanding after %d ms",
                          rd_kafka_outq_len(kp->rk), timeout_ms);
    if (kerr)
        return kerr_set(errstr, errlen, kerr, "flush");
    return RW_OK;
}

int rw_kafka_producer_outstanding(const rw_kafka_producer_t *kp)
{
    return rd_kafka_outq_len(kp->rk);
}

int rw_kafka_producer_message_timeout_ms(const rw_kafka_producer_t *kp)
{
    return kp->message_timeout_ms;
}

int rw_kafka_producer_delivery_wait_ms(const rw_kafka_producer_t *kp)
{
    return kp->message_timeout_ms + RW_KAFKA_DELIVERY_MARGIN_MS;
}

void rw_kafka_producer_destroy(rw_kafka_producer_t *kp)
{
    if (!kp)
        return;
    if (rd_kafka_flush(kp->rk, DESTROY_FLUSH_MS)) {
        rw_warn(COMP,
                "event=producer_flush_incomplete client=%s "
                "outstanding=%d",
                rd_kafka_name(kp->rk), rd_kafka_outq_len(kp->rk));
        /*
         * rd_kafka_destroy drops undelivered messages without a report,
         * and a report is what frees a message's delivery state: purge
         * them so each gets its (failed) report here, before the handle
         * goes away.
         */
        rd_kafka_purge(kp->rk,
                       RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        if (rd_kafka_flush(kp->rk, DESTROY_PURGE_MS))
            rw_warn(COMP,
                    "event=producer_purge_incomplete client=%s "
                    "outstanding=%d",
                    rd_kafka_name(kp->rk), rd_kafka_outq_len(kp->rk));
    }
    rd_kafka_destroy(kp->rk);
    free(kp);
}

bool rw_kafka_is_dead_letter_header(const char *name)
{
    return name &&
           strncmp(name, RW_KAFKA_HDR_PREFIX, strlen(RW_KAFKA_HDR_PREFIX)) == 0;
}

/*
 * msg's headers without the dead-letter ones into a calloc'ed array with
 * room for extra more (caller frees); the entries point into msg.
 */
static rw_err_t kept_headers(const rw_kafka_msg_t *msg, size_t extra,
                             rw_kafka_header_t **hdrsp, size_t *np,
                             char *errstr, size_t errlen)
{
    size_t n_orig = rw_kafka_msg_header_count(msg);
    rw_kafka_header_t *hdrs = NULL;
    size_t nh = 0;

    *hdrsp = NULL;
    *np = 0;
    hdrs = calloc(n_orig + extra + 1, sizeof(*hdrs));
    if (!hdrs)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "message headers");
    for (size_t i = 0; i < n_orig; i++) {
        rw_kafka_header_t h;
        if (rw_kafka_msg_header_at(msg, i, &h) &&
            !rw_kafka_is_dead_letter_header(h.name))
            hdrs[nh++] = h;
    }
    *hdrsp = hdrs;
    *np = nh;
    return RW_OK;
}

rw_err_t rw_kafka_dead_letter(rw_kafka_producer_t *kp, const char *dlq_topic,
                              const rw_kafka_msg_t *orig, const char *reason,
                              void *msg_opaque, char *errstr, size_t errlen)
{
    rw_kafka_header_t *hdrs = NULL;
    size_t nh = 0;
    char part[16], off[24], truncated[24];
    const void *key, *payload;
    size_t keylen, len;
    const char *src = rw_kafka_msg_topic(orig);
    rw_err_t err = RW_OK;

    if (!reason)
        reason = "";
    err = kept_headers(orig, 5, &hdrs, &nh, errstr, errlen);
    if (err)
        return err;
    snprintf(part, sizeof(part), "%" PRId32, rw_kafka_msg_partition(orig));
    snprintf(off, sizeof(off), "%" PRId64, rw_kafka_msg_offset(orig));
    hdrs[nh++] =
        (rw_kafka_header_t){RW_KAFKA_HDR_REASON, reason, strlen(reason)};
    hdrs[nh++] =
        (rw_kafka_header_t){RW_KAFKA_HDR_SOURCE_TOPIC, src, strlen(src)};
    hdrs[nh++] =
        (rw_kafka_header_t){RW_KAFKA_HDR_SOURCE_PARTITION, part, strlen(part)};
    hdrs[nh++] =
        (rw_kafka_header_t){RW_KAFKA_HDR_SOURCE_OFFSET, off, strlen(off)};
    key = rw_kafka_msg_key(orig, &keylen);
    payload = rw_kafka_msg_payload(orig, &len);
    if (len > RW_KAFKA_DLQ_MAX_PAYLOAD) {
        /*
         * A payload too large for the producer (the usual reason to be
         * here) could never be dead-lettered whole, and retrying would
         * stall the partition forever: keep its head and say how large it
         * was.
         */
        snprintf(truncated, sizeof(truncated), "%zu", len);
        hdrs[nh++] = (rw_kafka_header_t){RW_KAFKA_HDR_TRUNCATED, truncated,
                                         strlen(truncated)};
        len = RW_KAFKA_DLQ_MAX_PAYLOAD;
    }
    err = rw_kafka_produce(kp, dlq_topic, key, keylen, payload, len, hdrs, nh,
                           msg_opaque, errstr, errlen);
    if (!err) {
        char qbuf[512];
        rw_warn(COMP,
                "event=dead_letter topic=%s partition=%s offset=%s "
                "dlq=%s reason=%s",
                src, part, off, dlq_topic,
                rw_log_quote(qbuf, sizeof(qbuf), reason));
    }
    free(hdrs);
    return err;
}

rw_err_t rw_kafka_requeue(rw_kafka_producer_t *kp, const rw_kafka_msg_t *dead,
                          void *msg_opaque, char *errstr, size_t errlen)
{
    rw_kafka_header_t *hdrs = NULL;
    size_t nh = 0, keylen, len;
    const void *key, *payload;
    char src[256];
    rw_err_t err = RW_OK;

    if (!rw_kafka_msg_header_str(dead, RW_KAFKA_HDR_SOURCE_TOPIC, src,
                                 sizeof(src)) ||
        !src[0]) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "%" PRId32 ":%" PRId64 " has no %s header: "
                         "nowhere to send it back to",
                         rw_kafka_msg_partition(dead),
                         rw_kafka_msg_offset(dead), RW_KAFKA_HDR_SOURCE_TOPIC);
        goto out;
    }
    err = kept_headers(dead, 0, &hdrs, &nh, errstr, errlen);
    if (err)
        goto out;
    key = rw_kafka_msg_key(dead, &keylen);
    payload = rw_kafka_msg_payload(dead, &len);
    err = rw_kafka_produce(kp, src, key, keylen, payload, len, hdrs, nh,
                           msg_opaque, errstr, errlen);
out:
    free(hdrs);
    return err;
}

/* ---- consumer ---------------------------------------------------------- */

static void log_partitions(const char *event, rd_kafka_t *rk,
                           const rd_kafka_topic_partition_list_t *parts)
{
    char buf[1024];
    size_t o = 0;

    buf[0] = '\0';
    for (int i = 0; i < parts->cnt && o < sizeof(buf) - 1; i++) {
        int n = snprintf(buf + o, sizeof(buf) - o, "%s%s[%" PRId32 "]",
                         i ? "," : "", parts->elems[i].topic,
                         parts->elems[i].partition);
        if (n < 0)
            break;
        o += (size_t)n;
    }
    rw_info(COMP, "event=%s client=%s protocol=%s count=%d partitions=\"%s\"",
            event, rd_kafka_name(rk), rd_kafka_rebalance_protocol(rk),
            parts->cnt, buf);
}

static void commit_before_revoke(rd_kafka_t *rk)
{
    rd_kafka_resp_err_t kerr;

    /* Lost partitions belong to someone else already: committing for them
     * would fail or, worse, move the new owner's position. */
    if (rd_kafka_assignment_lost(rk)) {
        rw_warn(COMP, "event=assignment_lost client=%s", rd_kafka_name(rk));
        return;
    }
    kerr = rd_kafka_commit(rk, NULL, 0);
    if (kerr && kerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        rw_warn(COMP, "event=revoke_commit_failed client=%s error=%s",
                rd_kafka_name(rk), rd_kafka_err2name(kerr));
}

/*
 * Partitions leaving this consumer: their holders let go (on_revoke), and
 * any paused one is resumed, so it starts unpaused if it comes back. This
 * is the only safe moment: librdkafka starts an assigned partition's fetch
 * from its thread when the committed offset arrives, and a pause, resume
 * or seek issued meanwhile from ours can make that start outdated, leaving
 * the partition assigned and never read (its operations are versioned and
 * the older one is dropped). Here, before the unassign, a start dropped
 * that way does not matter: the unassign stops the partition and the next
 * assignment starts it afresh.
 */
static void release(rw_kafka_consumer_t *kc, rd_kafka_t *rk,
                    rd_kafka_topic_partition_list_t *parts)
{
    if (!parts || parts->cnt == 0)
        return;
    if (kc->on_revoke)
        for (int i = 0; i < parts->cnt; i++)
            kc->on_revoke(kc->on_revoke_opaque, parts->elems[i].topic,
                          parts->elems[i].partition);
    rd_kafka_resume_partitions(rk, parts);
}

/*
 * rollwave_consumer_assigned_partitions: what this consumer owns after a
 * rebalance. A member of a group that is not formed yet (or that another
 * member's join keeps re-forming) owns nothing; the benchmark and the
 * dashboards read it. It has no labels: a daemon is one group member (the
 * worker's or the poller's consumer; rollwavectl's and the API's readers
 * never join a group), and with several in one process, as in a test, the
 * last rebalance wins. Not for a probe, which never reads what it holds.
 */
static void publish_assignment(rw_kafka_consumer_t *kc, rd_kafka_t *rk)
{
    rd_kafka_topic_partition_list_t *mine = NULL;

    if (kc->hold)
        return;
    if (rd_kafka_assignment(rk, &mine) == RD_KAFKA_RESP_ERR_NO_ERROR && mine)
        rw_metrics_set(rw_metrics_gauge("rollwave_consumer_assigned_partitions",
                                        "partitions this consumer owns in "
                                        "its group",
                                        NULL),
                       (double)mine->cnt);
    if (mine)
        rd_kafka_topic_partition_list_destroy(mine);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t kerr,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    const char *proto = rd_kafka_rebalance_protocol(rk);
    int cooperative = proto && strcmp(proto, "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    rw_kafka_consumer_t *kc = opaque;

    kc->rebalances++;
    kc->last_rebalance_ms = rw_now_mono_ms();
    if (kerr == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_partitions("partitions_assigned", rk, parts);
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, parts);
        /*
         * Nothing else touches a partition as it is assigned (see
         * release): revoked ones were resumed on their way out. A probe
         * only holds its partitions and never reads them, so a fetch
         * start its pause makes outdated does no harm.
         */
        if (!error && !aerr && kc->hold)
            rd_kafka_pause_partitions(rk, parts);
    } else if (kerr == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        log_partitions("partitions_revoked", rk, parts);
        release(kc, rk, parts);
        commit_before_revoke(rk);
        if (cooperative)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, NULL);
    } else {
        rw_error(COMP, "event=rebalance_error client=%s error=%s",
                 rd_kafka_name(rk), rd_kafka_err2name(kerr));
        if (!kc->rebalance_err[0])
            snprintf(kc->rebalance_err, sizeof(kc->rebalance_err),
                     "rebalance failed: %s", rd_kafka_err2str(kerr));
        {
            rd_kafka_topic_partition_list_t *mine = NULL;
            if (!rd_kafka_assignment(rk, &mine) && mine)
                release(kc, rk, mine);
            if (mine)
                rd_kafka_topic_partition_list_destroy(mine);
        }
        aerr = rd_kafka_assign(rk, NULL);
    }
    publish_assignment(kc, rk);
    if (error) {
        rw_error(COMP, "event=assign_failed client=%s error=%s",
                 rd_kafka_name(rk), rd_kafka_error_name(error));
        if (!kc->rebalance_err[0])
            snprintf(kc->rebalance_err, sizeof(kc->rebalance_err),
                     "assign failed: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (aerr) {
        rw_error(COMP, "event=assign_failed client=%s error=%s",
                 rd_kafka_name(rk), rd_kafka_err2name(aerr));
        if (!kc->rebalance_err[0])
            snprintf(kc->rebalance_err, sizeof(kc->rebalance_err),
                     "assign failed: %s", rd_kafka_err2str(aerr));
    }
}

static void offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t kerr,
                             rd_kafka_topic_partition_list_t *offsets,
                             void *opaque)
{
    (void)opaque;
    if (kerr == RD_KAFKA_RESP_ERR_NO_ERROR ||
        kerr == RD_KAFKA_RESP_ERR__NO_OFFSET) {
        for (int i = 0; offsets && i < offsets->cnt; i++)
            if (offsets->elems[i].err)
                rw_warn(COMP,
                        "event=commit_failed client=%s topic=%s "
                        "partition=%" PRId32 " error=%s",
                        rd_kafka_name(rk), offsets->elems[i].topic,
                        offsets->elems[i].partition,
                        rd_kafka_err2name(offsets->elems[i].err));
        return;
    }
    rw_warn(COMP, "event=commit_failed client=%s error=%s", rd_kafka_name(rk),
            rd_kafka_err2name(kerr));
}

/*
 * librdkafka statistics (every statistics.interval.ms, from consumer_poll):
 * publish consumer_lag of every assigned partition as
 * rollwave_consumer_lag{topic, partition}. Returns 0: librdkafka frees json.
 */
static int stats_cb(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
    json_t *root = json_loadb(json, json_len, 0, NULL);
    json_t *topics = root ? json_object_get(root, "topics") : NULL;
    const char *tname;
    json_t *topic;

    (void)rk;
    (void)opaque;
    json_object_foreach(topics, tname, topic)
    {
        const char *pname;
        json_t *part;
        json_object_foreach(json_object_get(topic, "partitions"), pname, part)
        {
            json_t *lag = json_object_get(part, "consumer_lag");
            char labels[320];
            if (strcmp(pname, "-1") == 0 || !json_is_integer(lag) ||
                json_integer_value(lag) < 0)
                continue;
            snprintf(labels, sizeof(labels), "topic=\"%s\",partition=\"%s\"",
                     tname, pname);
            rw_metrics_set(rw_metrics_gauge("rollwave_consumer_lag",
                                            "messages behind the high "
                                            "watermark, per partition",
                                            labels),
                           (double)json_integer_value(lag));
        }
    }
    json_decref(root);
    return 0;
}

/*
 * A consumer handle of group (NULL = s->kafka_group) that has not
 * subscribed to anything yet. A reader also reports partition ends; a
 * probe keeps its assigned partitions paused.
 */
static rw_err_t consumer_open(rw_kafka_consumer_t **kcp, const rw_settings_t *s,
                              const char *group, int reader, int hold,
                              char *errstr, size_t errlen)
{
    rw_kafka_consumer_t *kc = NULL;
    rd_kafka_conf_t *conf = NULL;
    char session[24], heartbeat[24], kerrstr[512];
    long long sess =
        s->kafka_session_timeout_ms > 0 ? s->kafka_session_timeout_ms : 10000;
    rw_err_t err = RW_OK;

    *kcp = NULL;
    if (!group)
        group = s->kafka_group;
    if (!group || !*group)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "kafka consumer: no group id");
    snprintf(session, sizeof(session), "%lld", sess);
    /* Three heartbeats per session, as the Kafka clients recommend. */
    snprintf(heartbeat, sizeof(heartbeat), "%lld", sess / 3);
    {
        const char *const forced[] = {
            "group.id",
            group,
            "enable.auto.commit",
            "false",
            "enable.auto.offset.store",
            "false",
            "auto.offset.reset",
            "earliest",
            "session.timeout.ms",
            session,
            "heartbeat.interval.ms",
            heartbeat,
            "enable.partition.eof",
            reader ? "true" : "false",
            NULL,
            NULL,
        };
        /*
         * Defaults the operator may override: statistics for the consumer
         * lag gauges, and a small prefetch, since a handler spends
         * milliseconds to seconds per message and librdkafka's 64 MiB
         * default is memory held for nothing: 1 MiB is a few hundred
         * batches, seconds of a worker's work, and keeps a worker's
         * memory the same whether the topic holds a thousand batches or a
         * million-instance backlog. The assignment strategy stays
         * librdkafka's eager default: with librdkafka 2.0.2,
         * cooperative-sticky aborts in rd_kafka_destroy
         * (rd_kafka_sticky_assignor_state_destroy: assertion) when a
         * consumer shuts down during a rebalance.
         */
        static const char *const defaults[] = {
            "statistics.interval.ms",
            "15000",
            "queued.max.messages.kbytes",
            "1024",
            NULL,
            NULL,
        };
        err = conf_build(&conf, s, defaults, forced, errstr, errlen);
    }
    if (err)
        goto out;
    kc = calloc(1, sizeof(*kc));
    if (!kc) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "kafka consumer");
        goto out;
    }
    kc->hold = hold;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
    rd_kafka_conf_set_offset_commit_cb(conf, offset_commit_cb);
    rd_kafka_conf_set_opaque(conf, kc);
    kc->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerrstr, sizeof(kerrstr));
    if (!kc->rk) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG, "kafka consumer: %s",
                         kerrstr);
        goto out;
    }
    conf = NULL; /* rd_kafka_new took it */
    /* Serve rebalance, commit and error callbacks from consumer_poll. */
    rd_kafka_poll_set_consumer(kc->rk);
    *kcp = kc;
    kc = NULL;
out:
    if (conf)
        rd_kafka_conf_destroy(conf);
    free(kc);
    return err;
}

static rw_err_t subscribe(rw_kafka_consumer_t *kc, const char *const *topics,
                          size_t n_topics, char *errstr, size_t errlen)
{
    rd_kafka_topic_partition_list_t *subs = NULL;
    rd_kafka_resp_err_t kerr;
    rw_err_t err = RW_OK;

    subs = rd_kafka_topic_partition_list_new((int)n_topics);
    for (size_t i = 0; i < n_topics; i++)
        rd_kafka_topic_partition_list_add(subs, topics[i],
                                          RD_KAFKA_PARTITION_UA);
    kerr = rd_kafka_subscribe(kc->rk, subs);
    if (kerr)
        err = kerr_set(errstr, errlen, kerr, "subscribe");
    else
        kc->subscribed = 1;
    rd_kafka_topic_partition_list_destroy(subs);
    return err;
}

rw_err_t rw_kafka_consumer_new(rw_kafka_consumer_t **kcp,
                               const rw_settings_t *s, const char *group,
                               const char *const *topics, size_t n_topics,
                               char *errstr, size_t errlen)
{
    rw_kafka_consumer_t *kc = NULL;
    rw_err_t err = RW_OK;

    *kcp = NULL;
    err = consumer_open(&kc, s, group, 0, 0, errstr, errlen);
    if (err)
        goto out;
    if (n_topics) {
        err = subscribe(kc, topics, n_topics, errstr, errlen);
        if (err)
            goto out;
    }
    rw_info(COMP, "event=consumer_started client=%s group=%s topics=%zu",
            rd_kafka_name(kc->rk), group ? group : s->kafka_group, n_topics);
    *kcp = kc;
    kc = NULL;
out:
    if (kc) {
        rd_kafka_destroy(kc->rk);
        free(kc);
    }
    return err;
}

/*
 * The probe's join did not complete in time: tell "other members keep the
 * group rebalancing" (RW_ERR_CONFLICT) from "we could not take part". A
 * join held up by the other members leaves the coordinator answering; a
 * join error we were told about, or a coordinator that does not answer,
 * says nothing about the members.
 */
static rw_err_t probe_unsettled(rw_kafka_consumer_t *kc, const char *group,
                                const char *topic, int n_partitions,
                                long long join_ms, const char *join_error,
                                char *errstr, size_t errlen)
{
    int64_t *offsets = NULL;
    char detail[512] = "";
    rw_err_t err = RW_OK;

    if (join_error[0])
        return rw_err_set(errstr, errlen, RW_ERR_KAFKA,
                          "could not join group %s within %lld s: %s", group,
                          join_ms / 1000, join_error);
    offsets = calloc((size_t)n_partitions, sizeof(*offsets));
    if (!offsets)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "group probe");
    /* OffsetFetch goes to the group's coordinator, as our JoinGroup did. */
    err = rw_kafka_committed(kc, topic, offsets, n_partitions,
                             PROBE_COORD_CHECK_MS, detail, sizeof(detail));
    if (err)
        err = rw_err_set(errstr, errlen, err,
                         "could not join group %s within %lld s, and its "
                         "coordinator does not answer: %s",
                         group, join_ms / 1000, detail);
    else
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                         "group %s has live members on %s (a new member "
                         "could not join within %lld s: the group's other "
                         "members keep it rebalancing)",
                         group, topic, join_ms / 1000);
    free(offsets);
    return err;
}

rw_err_t rw_kafka_group_probe(rw_kafka_consumer_t **kcp, const rw_settings_t *s,
                              const char *group, const char *topic,
                              int n_partitions, int *assigned, char *errstr,
                              size_t errlen)
{
    rw_kafka_consumer_t *kc = NULL;
    rd_kafka_topic_partition_list_t *a = NULL;
    rd_kafka_resp_err_t kerr;
    long long sess =
        s->kafka_session_timeout_ms > 0 ? s->kafka_session_timeout_ms : 10000;
    /*
     * How long a group without other live members can keep a new member
     * waiting: the coordinator evicts a member that went silent once its
     * session expires, which may end the round after we joined, and the
     * next round then completes with us alone (the sole member leads and
     * its own SyncGroup completes the round). Past this bound only
     * members that answer, i.e. live ones, can be holding the join up.
     */
    long long join_ms = 2 * sess + 15000;
    long long deadline = rw_now_mono_ms() + join_ms;
    char join_error[256] = "";
    rw_err_t err = RW_OK;

    *kcp = NULL;
    *assigned = -1;
    if (n_partitions <= 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "group probe: no partitions");
    err = consumer_open(&kc, s, group, 0, 1, errstr, errlen);
    if (err)
        goto out;
    err = subscribe(kc, &topic, 1, errstr, errlen);
    if (err)
        goto out;
    for (;;) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(kc->rk, PROBE_POLL_MS);
        long long now = rw_now_mono_ms();

        if (rkm && rkm->err)
            /* e.g. "JoinGroup failed: ...": kept for the verdict */
            snprintf(join_error, sizeof(join_error), "%s (%s)",
                     rd_kafka_message_errstr(rkm), rd_kafka_err2name(rkm->err));
        if (rkm)
            rd_kafka_message_destroy(rkm);
        if (kc->rebalance_err[0]) {
            err = rw_err_set(errstr, errlen, RW_ERR_KAFKA, "%s",
                             kc->rebalance_err);
            goto out;
        }
        if (kc->rebalances > 0) {
            if (a)
                rd_kafka_topic_partition_list_destroy(a);
            a = NULL;
            kerr = rd_kafka_assignment(kc->rk, &a);
            if (kerr) {
                err = kerr_set(errstr, errlen, kerr, "assignment");
                goto out;
            }
            *assigned = 0;
            for (int i = 0; i < a->cnt; i++)
                if (strcmp(a->elems[i].topic, topic) == 0)
                    (*assigned)++;
            /* Everything is ours: nobody else can hold any of it. */
            if (*assigned >= n_partitions ||
                now - kc->last_rebalance_ms >= PROBE_SETTLE_MS)
                break;
        }
        if (now >= deadline) {
            err = probe_unsettled(kc, group, topic, n_partitions, join_ms,
                                  join_error, errstr, errlen);
            goto out;
        }
    }
    rw_info(COMP,
            "event=group_probed client=%s group=%s topic=%s assigned=%d "
            "partitions=%d",
            rd_kafka_name(kc->rk), group, topic, *assigned, n_partitions);
    if (*assigned < n_partitions) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                         "group %s has live members on %s (a new member "
                         "was assigned %d of %d partitions)",
                         group, topic, *assigned, n_partitions);
        goto out;
    }
    *kcp = kc;
    kc = NULL;
out:
    if (a)
        rd_kafka_topic_partition_list_destroy(a);
    rw_kafka_consumer_destroy(kc);
    return err;
}

rw_err_t rw_kafka_reader_new(rw_kafka_consumer_t **kcp, const rw_settings_t *s,
                             char *errstr, size_t errlen)
{
    char group[64];

    /* librdkafka wants a group id; a reader never joins or commits, and a
     * unique one makes sure nothing is ever shared. */
    snprintf(group, sizeof(group), "rollwave-reader-%ld-%lld", (long)getpid(),
             rw_now_mono_ms());
    return consumer_open(kcp, s, group, 1, 0, errstr, errlen);
}

/* Next message or NULL; *eof when the NULL is a partition end. */
static rw_err_t poll_one(rw_kafka_consumer_t *kc, int timeout_ms,
                         rw_kafka_msg_t **msg, bool *eof, char *errstr,
                         size_t errlen)
{
    rd_kafka_message_t *rkm;
    rw_kafka_msg_t *m;

    *msg = NULL;
    *eof = false;
    rkm = rd_kafka_consumer_poll(kc->rk, timeout_ms);
    if (!rkm)
        return RW_OK;
    if (rkm->err) {
        rd_kafka_resp_err_t kerr = rkm->err;
        char qbuf[512];

        if (kerr == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(rkm);
            *eof = true;
            return RW_OK;
        }
        if (kerr == RD_KAFKA_RESP_ERR__FATAL) {
            char fatal[512];
            rd_kafka_message_destroy(rkm);
            rd_kafka_fatal_error(kc->rk, fatal, sizeof(fatal));
            return rw_err_set(errstr, errlen, RW_ERR_KAFKA,
                              "fatal consumer error: %s", fatal);
        }
        rw_warn(COMP,
                "event=consume_error client=%s topic=%s error=%s "
                "reason=%s",
                rd_kafka_name(kc->rk),
                rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "-",
                rd_kafka_err2name(kerr),
                rw_log_quote(qbuf, sizeof(qbuf), rd_kafka_message_errstr(rkm)));
        rd_kafka_message_destroy(rkm);
        return RW_OK;
    }
    m = calloc(1, sizeof(*m));
    if (!m) {
        rd_kafka_message_destroy(rkm);
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "kafka message");
    }
    m->rkm = rkm;
    if (rd_kafka_message_headers(rkm, &m->hdrs))
        m->hdrs = NULL;
    *msg = m;
    return RW_OK;
}

rw_err_t rw_kafka_consumer_poll(rw_kafka_consumer_t *kc, int timeout_ms,
                                rw_kafka_msg_t **msg, char *errstr,
                                size_t errlen)
{
    bool eof;

    return poll_one(kc, timeout_ms, msg, &eof, errstr, errlen);
}

rw_err_t rw_kafka_reader_poll(rw_kafka_consumer_t *kc, int timeout_ms,
                              rw_kafka_msg_t **msg, bool *eof, char *errstr,
                              size_t errlen)
{
    return poll_one(kc, timeout_ms, msg, eof, errstr, errlen);
}

/* One-entry partition list; the caller destroys it. */
static rd_kafka_topic_partition_list_t *
one_partition(const char *topic, int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_list_t *list;

    list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset = offset;
    return list;
}

rw_err_t rw_kafka_reader_assign(rw_kafka_consumer_t *kc, const char *topic,
                                int32_t partition, int64_t offset, char *errstr,
                                size_t errlen)
{
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_resp_err_t kerr;
    rw_err_t err = RW_OK;

    list = one_partition(topic, partition, offset);
    kerr = rd_kafka_assign(kc->rk, list);
    if (kerr)
        err = rw_err_set(errstr, errlen, map_kerr(kerr),
                         "assign %s[%" PRId32 "]: %s", topic, partition,
                         rd_kafka_err2str(kerr));
    rd_kafka_topic_partition_list_destroy(list);
    return err;
}

void rw_kafka_reader_unassign(rw_kafka_consumer_t *kc)
{
    rd_kafka_assign(kc->rk, NULL);
}

rw_err_t rw_kafka_consumer_store(rw_kafka_consumer_t *kc,
                                 const rw_kafka_msg_t *msg, char *errstr,
                                 size_t errlen)
{
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_resp_err_t kerr;
    rw_err_t err = RW_OK;

    list = one_partition(rw_kafka_msg_topic(msg), msg->rkm->partition,
                         msg->rkm->offset + 1);
    kerr = rd_kafka_offsets_store(kc->rk, list);
    if (!kerr)
        kerr = list->elems[0].err;
    if (kerr == RD_KAFKA_RESP_ERR__STATE)
        err = rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                         "store offset %s[%" PRId32 "]: partition no "
                         "longer assigned",
                         rw_kafka_msg_topic(msg), msg->rkm->partition);
    else if (kerr)
        err = kerr_set(errstr, errlen, kerr, "store offset");
    rd_kafka_topic_partition_list_destroy(list);
    return err;
}

bool rw_kafka_consumer_owns(rw_kafka_consumer_t *kc, const char *topic,
                            int32_t partition)
{
    rd_kafka_topic_partition_list_t *list = NULL;
    bool owns = false;

    if (rd_kafka_assignment(kc->rk, &list) || !list)
        return true; /* cannot tell: keep it, the store will say */
    owns = rd_kafka_topic_partition_list_find(list, topic, partition) != NULL;
    rd_kafka_topic_partition_list_destroy(list);
    return owns;
}

rw_err_t rw_kafka_consumer_commit(rw_kafka_consumer_t *kc, int sync,
                                  char *errstr, size_t errlen)
{
    rd_kafka_resp_err_t kerr = rd_kafka_commit(kc->rk, NULL, !sync);

    if (kerr && kerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
        return kerr_set(errstr, errlen, kerr, "commit");
    return RW_OK;
}

static rw_err_t pause_resume(rw_kafka_consumer_t *kc, const char *topic,
                             int32_t partition, int pause, char *errstr,
                             size_t errlen)
{
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_resp_err_t kerr;
    rw_err_t err = RW_OK;

    list = one_partition(topic, partition, RD_KAFKA_OFFSET_INVALID);
    kerr = pause ? rd_kafka_pause_partitions(kc->rk, list)
                 : rd_kafka_resume_partitions(kc->rk, list);
    if (!kerr)
        kerr = list->elems[0].err;
    if (kerr)
        err = rw_err_set(errstr, errlen, map_kerr(kerr),
                         "%s %s[%" PRId32 "]: %s", pause ? "pause" : "resume",
                         topic, partition, rd_kafka_err2str(kerr));
    else
        rw_debug(COMP, "event=%s topic=%s partition=%" PRId32,
                 pause ? "paused" : "resumed", topic, partition);
    rd_kafka_topic_partition_list_destroy(list);
    return err;
}

rw_err_t rw_kafka_consumer_pause(rw_kafka_consumer_t *kc, const char *topic,
                                 int32_t partition, char *errstr, size_t errlen)
{
    return pause_resume(kc, topic, partition, 1, errstr, errlen);
}

rw_err_t rw_kafka_consumer_resume(rw_kafka_consumer_t *kc, const char *topic,
                                  int32_t partition, char *errstr,
                                  size_t errlen)
{
    return pause_resume(kc, topic, partition, 0, errstr, errlen);
}

rw_err_t rw_kafka_consumer_seek(rw_kafka_consumer_t *kc, const char *topic,
                                int32_t partition, int64_t offset,
                                int timeout_ms, char *errstr, size_t errlen)
{
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_error_t *error;
    rw_err_t err = RW_OK;

    list = one_partition(topic, partition, offset);
    error = rd_kafka_seek_partitions(kc->rk, list, timeout_ms);
    if (error)
        err = kerror_set(errstr, errlen, error, "seek");
    else if (list->elems[0].err)
        err =
            rw_err_set(errstr, errlen, map_kerr(list->elems[0].err),
                       "seek %s[%" PRId32 "] to %" PRId64 ": %s", topic,
                       partition, offset, rd_kafka_err2str(list->elems[0].err));
    rd_kafka_topic_partition_list_destroy(list);
    return err;
}

rw_err_t rw_kafka_consumer_commit_offsets(rw_kafka_consumer_t *kc,
                                          const char *topic,
                                          const int64_t *offsets, int n,
                                          char *errstr, size_t errlen)
{
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_resp_err_t kerr;
    rw_err_t err = RW_OK;

    list = rd_kafka_topic_partition_list_new(n > 0 ? n : 1);
    for (int i = 0; i < n; i++)
        if (offsets[i] != RW_KAFKA_OFFSET_NONE)
            rd_kafka_topic_partition_list_add(list, topic, i)->offset =
                offsets[i];
    if (list->cnt == 0)
        goto out;
    kerr = rd_kafka_commit(kc->rk, list, 0);
    for (int i = 0; !kerr && i < list->cnt; i++)
        kerr = list->elems[i].err;
    if (kerr)
        err = kerr_set(errstr, errlen, kerr, "commit offsets");
out:
    rd_kafka_topic_partition_list_destroy(list);
    return err;
}

void rw_kafka_consumer_on_revoke(rw_kafka_consumer_t *kc, rw_kafka_revoke_fn fn,
                                 void *opaque)
{
    kc->on_revoke = fn;
    kc->on_revoke_opaque = opaque;
}

bool rw_kafka_consumer_cooperative(rw_kafka_consumer_t *kc)
{
    char val[256] = "";
    size_t len = sizeof(val);

    if (rd_kafka_conf_get(rd_kafka_conf(kc->rk),
                          "partition.assignment.strategy", val,
                          &len) != RD_KAFKA_CONF_OK)
        return false;
    return strstr(val, "cooperative") != NULL;
}

void rw_kafka_consumer_close(rw_kafka_consumer_t *kc)
{
    rd_kafka_resp_err_t kerr;

    if (!kc || kc->closed)
        return;
    kc->closed = 1;
    if (kc->subscribed) {
        kerr = rd_kafka_commit(kc->rk, NULL, 0);
        if (kerr && kerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
            rw_warn(COMP, "event=close_commit_failed client=%s error=%s",
                    rd_kafka_name(kc->rk), rd_kafka_err2name(kerr));
    }
    if (kc->subscribed) {
        /*
         * Leave the group before closing, serving the revoke from here:
         * librdkafka 2.0 can abort in rd_kafka_consumer_close when a
         * rebalance is still in progress. Messages fetched meanwhile are
         * dropped unprocessed (their offsets were never stored), so they
         * are delivered again to whoever takes the partitions.
         */
        rd_kafka_unsubscribe(kc->rk);
        for (int i = 0; i < 50; i++) {
            rd_kafka_topic_partition_list_t *a = NULL;
            rd_kafka_message_t *rkm;
            int left = 1;
            if (!rd_kafka_assignment(kc->rk, &a) && a) {
                left = a->cnt;
                rd_kafka_topic_partition_list_destroy(a);
            }
            if (left == 0)
                break;
            rkm = rd_kafka_consumer_poll(kc->rk, 100);
            if (rkm)
                rd_kafka_message_destroy(rkm);
        }
    }
    kerr = rd_kafka_consumer_close(kc->rk);
    if (kerr)
        rw_warn(COMP, "event=close_failed client=%s error=%s",
                rd_kafka_name(kc->rk), rd_kafka_err2name(kerr));
    else
        rw_info(COMP, "event=consumer_closed client=%s", rd_kafka_name(kc->rk));
}

void rw_kafka_consumer_destroy(rw_kafka_consumer_t *kc)
{
    if (!kc)
        return;
    rw_kafka_consumer_close(kc);
    rd_kafka_destroy(kc->rk);
    free(kc);
}

/* ---- offsets and metadata ---------------------------------------------- */

rw_err_t rw_kafka_partition_count(rw_kafka_consumer_t *kc, const char *topic,
                                  int *count, int timeout_ms, char *errstr,
                                  size_t errlen)
{
    rd_kafka_topic_t *rkt = NULL;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr;
    rw_err_t err = RW_OK;

    *count = 0;
    rkt = rd_kafka_topic_new(kc->rk, topic, NULL);
    if (!rkt)
        return kerr_set(errstr, errlen, rd_kafka_last_error(), "topic");
    kerr = rd_kafka_metadata(kc->rk, 0, rkt, &md, timeout_ms);
    if (kerr) {
        err = kerr_set(errstr, errlen, kerr, "metadata");
        goto out;
    }
    if (md->topic_cnt != 1 || md->topics[0].err) {
        kerr = md->topic_cnt == 1 ? md->topics[0].err
                                  : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
        err = rw_err_set(errstr, errlen, map_kerr(kerr), "topic %s: %s", topic,
                         rd_kafka_err2str(kerr));
        goto out;
    }
    *count = md->topics[0].partition_cnt;
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return err;
}

rw_err_t rw_kafka_watermarks(rw_kafka_consumer_t *kc, const char *topic,
                             int32_t partition, int64_t *low, int64_t *high,
                             int timeout_ms, char *errstr, size_t errlen)
{
    rd_kafka_resp_err_t kerr;

    *low = *high = -1;
    kerr = rd_kafka_query_watermark_offsets(kc->rk, topic, partition, low, high,
                                            timeout_ms);
    if (kerr)
        return rw_err_set(errstr, errlen, map_kerr(kerr),
                          "watermarks %s[%" PRId32 "]: %s", topic, partition,
                          rd_kafka_err2str(kerr));
    return RW_OK;
}

rw_err_t rw_kafka_committed(rw_kafka_consumer_t *kc, const char *topic,
                            int64_t *offsets, int n, int timeout_ms,
                            char *errstr, size_t errlen)
{
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_resp_err_t kerr;
    rw_err_t err = RW_OK;

    if (n <= 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "committed: no partitions");
    list = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++)
        rd_kafka_topic_partition_list_add(list, topic, i);
    kerr = rd_kafka_committed(kc->rk, list, timeout_ms);
    if (kerr) {
        err = kerr_set(errstr, errlen, kerr, "committed offsets");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const rd_kafka_topic_partition_t *p = &list->elems[i];
        if (p->err) {
            err = rw_err_set(errstr, errlen, map_kerr(p->err),
                             "committed offset %s[%" PRId32 "]: %s", topic,
                             p->partition, rd_kafka_err2str(p->err));
            goto out;
        }
        offsets[p->partition] =
            p->offset >= 0 ? p->offset : RW_KAFKA_OFFSET_NONE;
    }
out:
    rd_kafka_topic_partition_list_destroy(list);
    return err;
}

rw_err_t rw_kafka_offsets_for_time(rw_kafka_consumer_t *kc, const char *topic,
                                   int64_t ts_ms, int64_t *offsets, int n,
                                   int timeout_ms, char *errstr, size_t errlen)
{
    rd_kafka_topic_partition_list_t *list;
    rd_kafka_resp_err_t kerr;
    rw_err_t err = RW_OK;

    if (n <= 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "offsets for time: no partitions");
    list = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) {
        offsets[i] = RW_KAFKA_OFFSET_NONE;
        rd_kafka_topic_partition_list_add(list, topic, i)->offset = ts_ms;
    }
    kerr = rd_kafka_offsets_for_times(kc->rk, list, timeout_ms);
    if (kerr) {
        err = rw_err_set(errstr, errlen, map_kerr(kerr), "offsets for time: %s",
                         rd_kafka_err2str(kerr));
        goto out;
    }
    for (int i = 0; i < list->cnt; i++) {
        const rd_kafka_topic_partition_t *tp = &list->elems[i];

        if (tp->err) {
            err = rw_err_set(errstr, errlen, map_kerr(tp->err),
                             "offset for time %s[%" PRId32 "]: %s", topic,
                             tp->partition, rd_kafka_err2str(tp->err));
            goto out;
        }
        if (tp->partition >= 0 && tp->partition < n)
            offsets[tp->partition] =
                tp->offset >= 0 ? tp->offset : RW_KAFKA_OFFSET_NONE;
    }
out:
    rd_kafka_topic_partition_list_destroy(list);
    return err;
}

/* ---- messages ---------------------------------------------------------- */

const char *rw_kafka_msg_topic(const rw_kafka_msg_t *msg)
{
    return rd_kafka_topic_name(msg->rkm->rkt);
}

int32_t rw_kafka_msg_partition(const rw_kafka_msg_t *msg)
{
    return msg->rkm->partition;
}

int64_t rw_kafka_msg_offset(const rw_kafka_msg_t *msg)
{
    return msg->rkm->offset;
}

const void *rw_kafka_msg_key(const rw_kafka_msg_t *msg, size_t *len)
{
    *len = msg->rkm->key ? msg->rkm->key_len : 0;
    return msg->rkm->key;
}

const void *rw_kafka_msg_payload(const rw_kafka_msg_t *msg, size_t *len)
{
    *len = msg->rkm->payload ? msg->rkm->len : 0;
    return msg->rkm->payload;
}

int64_t rw_kafka_msg_timestamp(const rw_kafka_msg_t *msg)
{
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(msg->rkm, &tstype);

    return tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts;
}

size_t rw_kafka_msg_header_count(const rw_kafka_msg_t *msg)
{
    return msg->hdrs ? rd_kafka_header_cnt(msg->hdrs) : 0;
}

int rw_kafka_msg_header_at(const rw_kafka_msg_t *msg, size_t i,
                           rw_kafka_header_t *hdr)
{
    const char *name;
    const void *value;
    size_t size;

    if (!msg->hdrs ||
        rd_kafka_header_get_all(msg->hdrs, i, &name, &value, &size))
        return 0;
    hdr->name = name;
    hdr->value = value;
    hdr->len = value ? size : 0;
    return 1;
}

int rw_kafka_msg_header(const rw_kafka_msg_t *msg, const char *name,
                        rw_kafka_header_t *hdr)
{
    const void *value;
    size_t size;

    if (!msg->hdrs || rd_kafka_header_get_last(msg->hdrs, name, &value, &size))
        return 0;
    hdr->name = name;
    hdr->value = value;
    hdr->len = value ? size : 0;
    return 1;
}

int rw_kafka_msg_header_str(const rw_kafka_msg_t *msg, const char *name,
                            char *buf, size_t len)
{
    rw_kafka_header_t h;
    size_t n;

    buf[0] = '\0';
    if (!rw_kafka_msg_header(msg, name, &h))
        return 0;
    n = h.len < len ? h.len : len - 1;
    if (n)
        memcpy(buf, h.value, n);
    buf[n] = '\0';
    return 1;
}

void rw_kafka_msg_destroy(rw_kafka_msg_t *msg)
{
    if (!msg)
        return;
    rd_kafka_message_destroy(msg->rkm);
    free(msg);
}
