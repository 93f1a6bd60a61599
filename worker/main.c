/*
 * rollwave-worker: Worker: consumes batches, claims instances and fires bulk
 * redeploys at Lagoon. This file holds the configuration table and process
 * start.
 */
#include <stdio.h>
#include <string.h>

#include "rw_codec.h"
#include "rw_config.h"
#include "rw_daemon.h"
#include "rw_log.h"
#include "rw_outbox.h"
#include "rw_service.h"
#include "rw_settings.h"
#include "rw_throttle.h"
#include "trigger.h"

/* Outbox rows older than this are published by the sweep, not their writer. */
#define SWEEP_MIN_AGE_S 15
#define SWEEP_EVERY_MS  10000

static const rw_cfg_key_t keys[] = {
    RW_KEYS_PROCESS("9102"),
    RW_KEYS_PG,
    RW_KEYS_PG_PREPARE,
    RW_KEYS_REDIS,
    RW_KEYS_KAFKA,
    RW_KEYS_KAFKA_GROUP("rollwave-worker"),
    RW_KEYS_LAGOON,
    RW_KEYS_TRIGGER,
    RW_KEYS_FAULTS,
    RW_KEYS_LOCK,
    RW_KEYS_POLL,
    RW_KEYS_SCHEDULE,
    RW_KEYS_THROTTLE,
};

typedef struct worker {
    long long last_sweep;
    rw_gate_t gate;
} worker_t;

static rw_msg_outcome_t handle(rw_service_t *svc, rw_kafka_msg_t *msg, void *ud,
                               char *reason, size_t len)
{
    rw_batch_msg_t m;
    size_t plen = 0;
    const void *payload = rw_kafka_msg_payload(msg, &plen);
    char errstr[512];
    rw_err_t err;
    rw_msg_outcome_t outcome;

    memset(&m, 0, sizeof(m));
    err = rw_codec_batch_decode(payload, plen, &m, errstr, sizeof(errstr));
    if (err) {
        snprintf(reason, len, "%s: %s", rw_err_name(err), errstr);
        rw_codec_batch_free(&m);
        return RW_MSG_DEAD;
    }
    outcome =
        rw_worker_trigger(svc, &((worker_t *)ud)->gate, &m, msg, reason, len);
    rw_codec_batch_free(&m);
    return outcome;
}

/* Publish outbox rows whose writer died before publishing them. */
static void tick(rw_service_t *svc, void *ud, int *timeout_ms)
{
    worker_t *w = ud;
    long long *last = &w->last_sweep;
    long long published = 0;
    char errstr[256];

    (void)timeout_ms;
    rw_gate_tick(&w->gate, svc);
    if (rw_now_mono_ms() - *last < SWEEP_EVERY_MS)
        return;
    *last = rw_now_mono_ms();
    if (rw_outbox_relay(svc->pg, svc->kp, svc->s, RW_OUTBOX_RELAY_BATCH,
                        SWEEP_MIN_AGE_S, &published, errstr, sizeof(errstr)))
        rw_warn("worker", "event=outbox_sweep_failed detail=\"%s\"", errstr);
}

int main(int argc, char **argv)
{
    rw_settings_t s;
    rw_service_t svc;
    char errstr[512];
    worker_t w;
    rw_err_t err;

    memset(&s, 0, sizeof(s));
    rw_config_init(argc, argv, "rollwave-worker",
                   "Worker: consumes batches, claims instances and fires bulk "
                   "redeploys at Lagoon.",
                   NULL, keys, sizeof(keys) / sizeof(keys[0]), &s);
    err = rw_throttle_validate(s.max_in_flight, "ROLLWAVE_MAX_IN_FLIGHT",
                               (double)s.trigger_rate_per_min,
                               "ROLLWAVE_TRIGGER_RATE_PER_MIN",
                               s.bulk_chunk_size, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "rollwave-worker: config error: %s\n", errstr);
        rw_settings_free(&s);
        return 2;
    }
    memset(&w, 0, sizeof(w));
    rw_daemon_signals_install("worker");
    err = rw_service_open(&svc, "worker", &s,
                          RW_SVC_PG | RW_SVC_REDIS | RW_SVC_LAGOON |
                              RW_SVC_PRODUCER | RW_SVC_CONSUMER,
                          "batches", errstr, sizeof(errstr));
    if (err) {
        rw_error("worker", "event=start_failed err=%s detail=\"%s\"",
                 rw_err_name(err), errstr);
        rw_settings_free(&s);
        return 1;
    }
    rw_gate_init(&w.gate, &svc);
    rw_worker_trigger_metrics();
    err = rw_service_consume(&svc, handle, tick, &w);
    rw_service_close(&svc);
    rw_settings_free(&s);
    return err ? 1 : 0;
}
