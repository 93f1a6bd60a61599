/*
 * rw_settings: releases the strings of a settings struct. The key tables
 * themselves live with each binary (producer/, worker/, poller/, ctl/).
 */
#include "rw_settings.h"

#include <stdlib.h>

void rw_settings_free(rw_settings_t *s)
{
    if (!s)
        return;
    char **strs[] = {
        &s->pg_dsn,
        &s->redis_url,
        &s->kafka_brokers,
        &s->kafka_topic_prefix,
        &s->kafka_security_protocol,
        &s->kafka_sasl_mechanism,
        &s->kafka_sasl_username,
        &s->kafka_sasl_password,
        &s->kafka_ssl_ca_location,
        &s->kafka_properties,
        &s->kafka_group,
        &s->lagoon_url,
        &s->lagoon_token,
        &s->lagoon_token_file,
        &s->lagoon_ca_file,
        &s->api_bind,
        &s->log_fetch,
        &s->log_redact_patterns,
    };
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        free(*strs[i]);
        *strs[i] = NULL;
    }
}

long long rw_settings_first_poll_delay_ms(const rw_settings_t *s)
{
    return s->first_poll_delay_ms > 0 ? s->first_poll_delay_ms
                                      : s->first_poll_delay_s * 1000;
}

long long rw_settings_poll_interval_ms(const rw_settings_t *s)
{
    return s->poll_interval_ms > 0 ? s->poll_interval_ms
                                   : s->poll_interval_s * 1000;
}

rw_err_t rw_settings_check_poll_locks(const rw_settings_t *s, char *errstr,
                                      size_t errlen)
{
    long long interval_ms = rw_settings_poll_interval_ms(s);

    if (2 * interval_ms > s->lock_ttl_s * 1000)
        return rw_err_set(
            errstr, errlen, RW_ERR_CONFIG,
            "the poll interval (%lld ms, ROLLWAVE_POLL_INTERVAL_S "
            "or _MS) is more than half of ROLLWAVE_LOCK_TTL_S "
            "(%lld s): instance locks would lapse between polls",
            interval_ms, s->lock_ttl_s);
    return RW_OK;
}
