/*
 * rw_settings: every ROLLWAVE_* setting any binary reads, as one struct, and
 * the key groups binaries assemble their own config tables from. The
 * meaning of each key lives in its help text; parsing lives in rw_config.
 */
#ifndef RW_SETTINGS_H
#define RW_SETTINGS_H

#include <stddef.h>

#include "rw_config.h"

typedef struct rw_settings {
    /* process */
    int log_level;
    long long metrics_port;
    /* postgres */
    char *pg_dsn;
    long long pg_prepare;
    /* redis */
    char *redis_url;
    long long redis_timeout_ms;
    /* kafka */
    char *kafka_brokers;
    char *kafka_topic_prefix;
    char *kafka_security_protocol;
    char *kafka_sasl_mechanism;
    char *kafka_sasl_username;
    char *kafka_sasl_password;
    char *kafka_ssl_ca_location;
    char *kafka_properties;
    long long kafka_session_timeout_ms;
    char *kafka_group;
    /* lagoon */
    char *lagoon_url;
    char *lagoon_token;
    char *lagoon_token_file;
    long long lagoon_timeout_ms;
    long long lagoon_connect_timeout_ms;
    char *lagoon_ca_file;
    /* scheduling (producer) */
    long long tick_interval_s;
    long long max_per_run;
    long long bulk_chunk_size;
    long long jitter_window_min;
    long long outbox_retention_s;
    /* retention of old runs (producer leader) */
    long long retention_days;
    long long retention_batch;
    long long retention_interval_s;
    long long retention_pass_batches;
    /* trigger (worker) */
    long long trigger_retries;
    long long trigger_backoff_base_ms;
    long long trigger_backoff_max_ms;
    long long failure_backoff_s;
    long long max_attempts;
    long long trigger_settle_s;
    long long fault_exit_after_trigger_pct;
    long long lock_ttl_s;
    /* fleet throttle (worker seeds and obeys; rollwavectl throttle) */
    long long max_in_flight;
    long long trigger_rate_per_min;
    long long throttle_lease_s;
    long long throttle_adjust_s;
    long long throttle_wait_ms;
    long long window_wait_ms;    /* a deferred chunk's window re-check */
    long long run_limit_wait_ms; /* a chunk deferred by its run's limit */
    /* poll (poller) */
    long long first_poll_delay_s;
    long long poll_interval_s;
    long long first_poll_delay_ms; /* 0 = first_poll_delay_s */
    long long poll_interval_ms;    /* 0 = poll_interval_s */
    long long poll_max_attempts;
    /* build logs (poller) */
    char *log_fetch;
    long long log_sample_percent;
    long long log_max_bytes;
    char *log_redact_patterns;
    long long log_retry_s;
    /* recovery sweep (producer leader) */
    long long sweep_interval_s;
    long long sweep_poll_stale_s;
    long long sweep_pending_stale_s;
    long long sweep_batch;
    /* webhooks (producer deliverer) */
    long long webhook_concurrency;
    long long webhook_timeout_ms;
    long long webhook_backoff_ms;
    long long webhook_max_attempts;
    long long webhook_poll_ms;
    /* rollwave-api */
    char *api_bind;
    long long api_port;
    long long api_threads;
    long long api_token_cache_s;
} rw_settings_t;

#define RW_KEY(env, type, field, def, min, max, req, help)                     \
    {                                                                          \
        env, type, def, min, max, offsetof(rw_settings_t, field), req, help    \
    }

#define RW_KEYS_PROCESS(default_port)                                          \
    RW_KEY("ROLLWAVE_LOG_LEVEL", RW_CFG_LEVEL, log_level, "info", 0, 0, 0,     \
           "log threshold: debug, info, warn, error or off"),                  \
        RW_KEY("ROLLWAVE_METRICS_PORT", RW_CFG_INT, metrics_port,              \
               default_port, 0, 65535, 0,                                      \
               "port of the /metrics and /healthz server (0 = off)")

#define RW_KEYS_PG                                                             \
    RW_KEY("ROLLWAVE_PG_DSN", RW_CFG_SECRET, pg_dsn, NULL, 0, 0, 1,            \
           "libpq connection string or URI (sslmode, sslrootcert, ... "        \
           "are passed through)")

/* The hot paths' statements prepared once per session (rw_pg_set_prepare). */
#define RW_KEYS_PG_PREPARE                                                     \
    RW_KEY("ROLLWAVE_PG_PREPARE", RW_CFG_INT, pg_prepare, "1", 0, 1, 0,        \
           "prepare each statement once per session (0: behind a pooler in "   \
           "transaction mode that does not keep prepared statements)")

#define RW_KEYS_REDIS                                                          \
    RW_KEY("ROLLWAVE_REDIS_URL", RW_CFG_SECRET, redis_url,                     \
           "redis://127.0.0.1:6379/0", 0, 0, 1,                                \
           "redis://[:password@]host:port[/db] or unix:///path/to.sock"),      \
        RW_KEY("ROLLWAVE_REDIS_TIMEOUT_MS", RW_CFG_INT, redis_timeout_ms,      \
               "2000", 10, 600000, 0, "redis connect and command timeout")

#define RW_KEYS_KAFKA                                                          \
    RW_KEY("ROLLWAVE_KAFKA_BROKERS", RW_CFG_STR, kafka_brokers,                \
           "127.0.0.1:9092", 0, 0, 1, "bootstrap servers, host:port,..."),     \
        RW_KEY("ROLLWAVE_KAFKA_TOPIC_PREFIX", RW_CFG_STR, kafka_topic_prefix,  \
               "rollwave.", 0, 0, 0,                                           \
               "prefix of every topic name (batches, poll, dlq)"),             \
        RW_KEY("ROLLWAVE_KAFKA_SECURITY_PROTOCOL", RW_CFG_STR,                 \
               kafka_security_protocol, "plaintext", 0, 0, 0,                  \
               "plaintext, ssl, sasl_plaintext or sasl_ssl"),                  \
        RW_KEY("ROLLWAVE_KAFKA_SASL_MECHANISM", RW_CFG_STR,                    \
               kafka_sasl_mechanism, NULL, 0, 0, 0,                            \
               "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (empty = none)"),          \
        RW_KEY("ROLLWAVE_KAFKA_SASL_USERNAME", RW_CFG_STR,                     \
               kafka_sasl_username, NULL, 0, 0, 0, "SASL user name"),          \
        RW_KEY("ROLLWAVE_KAFKA_SASL_PASSWORD", RW_CFG_SECRET,                  \
               kafka_sasl_password, NULL, 0, 0, 0, "SASL password"),           \
        RW_KEY("ROLLWAVE_KAFKA_SSL_CA_LOCATION", RW_CFG_STR,                   \
               kafka_ssl_ca_location, NULL, 0, 0, 0,                           \
               "CA bundle for ssl / sasl_ssl"),                                \
        RW_KEY("ROLLWAVE_KAFKA_PROPERTIES", RW_CFG_SECRET, kafka_properties,   \
               NULL, 0, 0, 0,                                                  \
               "extra librdkafka properties: key=value,key=value"),            \
        RW_KEY("ROLLWAVE_KAFKA_SESSION_TIMEOUT_MS", RW_CFG_INT,                \
               kafka_session_timeout_ms, "10000", 3000, 300000, 0,             \
               "consumer group session timeout")

#define RW_KEYS_KAFKA_GROUP(default_group)                                     \
    RW_KEY("ROLLWAVE_KAFKA_GROUP", RW_CFG_STR, kafka_group, default_group, 0,  \
           0, 1, "consumer group id")

#define RW_KEYS_LAGOON                                                         \
    RW_KEY("ROLLWAVE_LAGOON_URL", RW_CFG_STR, lagoon_url, NULL, 0, 0, 1,       \
           "Lagoon GraphQL endpoint, e.g. https://api.example.com/graphql"),   \
        RW_KEY("ROLLWAVE_LAGOON_TOKEN", RW_CFG_SECRET, lagoon_token, NULL, 0,  \
               0, 0, "bearer token (or use ROLLWAVE_LAGOON_TOKEN_FILE)"),      \
        RW_KEY("ROLLWAVE_LAGOON_TOKEN_FILE", RW_CFG_STR, lagoon_token_file,    \
               NULL, 0, 0, 0,                                                  \
               "file holding the bearer token; re-read after a 401"),          \
        RW_KEY("ROLLWAVE_LAGOON_TIMEOUT_MS", RW_CFG_INT, lagoon_timeout_ms,    \
               "30000", 100, 600000, 0, "whole-request timeout"),              \
        RW_KEY("ROLLWAVE_LAGOON_CONNECT_TIMEOUT_MS", RW_CFG_INT,               \
               lagoon_connect_timeout_ms, "5000", 100, 120000, 0,              \
               "connect timeout"),                                             \
        RW_KEY("ROLLWAVE_LAGOON_CA_FILE", RW_CFG_STR, lagoon_ca_file, NULL, 0, \
               0, 0, "CA bundle for the Lagoon API (empty = system CAs)")

#define RW_KEYS_SCHEDULE                                                       \
    RW_KEY("ROLLWAVE_TICK_INTERVAL_S", RW_CFG_INT, tick_interval_s, "600", 1,  \
           86400, 0, "seconds between scheduler ticks"),                       \
        RW_KEY("ROLLWAVE_MAX_PER_RUN", RW_CFG_INT, max_per_run, "50", 1,       \
               10000000, 0, "most instances one tick schedules"),              \
        RW_KEY("ROLLWAVE_BULK_CHUNK_SIZE", RW_CFG_INT, bulk_chunk_size, "50",  \
               1, 1000, 0, "most environments in one bulk deploy"),            \
        RW_KEY("ROLLWAVE_JITTER_WINDOW_MIN", RW_CFG_INT, jitter_window_min,    \
               "180", 0, 100000, 0,                                            \
               "deterministic jitter window added to the cadence, minutes")

#define RW_KEYS_TRIGGER                                                        \
    RW_KEY("ROLLWAVE_TRIGGER_RETRIES", RW_CFG_INT, trigger_retries, "5", 0,    \
           100, 0, "retries of a retriable bulk deploy failure"),              \
        RW_KEY("ROLLWAVE_TRIGGER_BACKOFF_BASE_MS", RW_CFG_INT,                 \
               trigger_backoff_base_ms, "500", 1, 600000, 0,                   \
               "first retry delay; doubles per retry, with jitter"),           \
        RW_KEY("ROLLWAVE_TRIGGER_BACKOFF_MAX_MS", RW_CFG_INT,                  \
               trigger_backoff_max_ms, "30000", 1, 3600000, 0,                 \
               "longest retry delay"),                                         \
        RW_KEY("ROLLWAVE_FAILURE_BACKOFF_S", RW_CFG_INT, failure_backoff_s,    \
               "3600", 0, 2592000, 0,                                          \
               "next_redeploy_at push-back after a failed trigger"),           \
        RW_KEY("ROLLWAVE_MAX_ATTEMPTS", RW_CFG_INT, max_attempts, "3", 1, 100, \
               0, "attempts per target across retries and replays"),           \
        RW_KEY("ROLLWAVE_TRIGGER_SETTLE_S", RW_CFG_INT, trigger_settle_s,      \
               "60", 0, 86400, 0,                                              \
               "trigger in doubt: wait this long after the interrupted "       \
               "trigger before trusting that Lagoon shows no such bulk")

#define RW_KEYS_OUTBOX                                                         \
    RW_KEY("ROLLWAVE_OUTBOX_RETENTION_S", RW_CFG_INT, outbox_retention_s,      \
           "86400", 60, 315360000, 0,                                          \
           "published outbox rows older than this are deleted")

#define RW_KEYS_RETENTION                                                      \
    RW_KEY("ROLLWAVE_RETENTION_DAYS", RW_CFG_INT, retention_days, "90", 0,     \
           36500, 0,                                                           \
           "final runs that ended longer ago than this are deleted with "      \
           "their targets, chunks and transitions (0 = keep everything)"),     \
        RW_KEY("ROLLWAVE_RETENTION_BATCH", RW_CFG_INT, retention_batch, "500", \
               1, 100000, 0, "rows one retention statement deletes at most"),  \
        RW_KEY("ROLLWAVE_RETENTION_INTERVAL_S", RW_CFG_INT,                    \
               retention_interval_s, "60", 1, 86400, 0,                        \
               "seconds between retention passes (leader only)"),              \
        RW_KEY("ROLLWAVE_RETENTION_PASS_BATCHES", RW_CFG_INT,                  \
               retention_pass_batches, "100", 1, 1000000, 0,                   \
               "batches one retention pass runs at most")

#define RW_KEYS_WEBHOOK                                                        \
    RW_KEY("ROLLWAVE_WEBHOOK_CONCURRENCY", RW_CFG_INT, webhook_concurrency,    \
           "8", 0, 256, 0,                                                     \
           "webhook requests in flight at once per producer (0 = no "          \
           "deliverer in this replica)"),                                      \
        RW_KEY("ROLLWAVE_WEBHOOK_TIMEOUT_MS", RW_CFG_INT, webhook_timeout_ms,  \
               "5000", 100, 120000, 0, "whole-request timeout of a delivery"), \
        RW_KEY("ROLLWAVE_WEBHOOK_BACKOFF_MS", RW_CFG_INT, webhook_backoff_ms,  \
               "1000", 10, 600000, 0,                                          \
               "first retry delay; doubles per attempt up to 10 minutes"),     \
        RW_KEY("ROLLWAVE_WEBHOOK_MAX_ATTEMPTS", RW_CFG_INT,                    \
               webhook_max_attempts, "8", 1, 100, 0,                           \
               "attempts of a delivery before it is dead"),                    \
        RW_KEY("ROLLWAVE_WEBHOOK_POLL_MS", RW_CFG_INT, webhook_poll_ms,        \
               "1000", 10, 60000, 0,                                           \
               "how often due deliveries are looked for")

/* Fault injection for the fault suite; 0 in production. */
#define RW_KEYS_FAULTS                                                         \
    RW_KEY("ROLLWAVE_FAULT_EXIT_AFTER_TRIGGER_PCT", RW_CFG_INT,                \
           fault_exit_after_trigger_pct, "0", 0, 100, 0,                       \
           "test hook: share of successful triggers after which the worker "   \
           "exits at once, before recording them (trigger in doubt)")

#define RW_KEYS_LOCK                                                           \
    RW_KEY("ROLLWAVE_LOCK_TTL_S", RW_CFG_INT, lock_ttl_s, "50400", 60,         \
           2592000, 0, "instance lock TTL; longer than the polling horizon")

#define RW_KEYS_THROTTLE                                                       \
    RW_KEY("ROLLWAVE_MAX_IN_FLIGHT", RW_CFG_INT, max_in_flight, "100", 0,      \
           100000000, 0,                                                       \
           "builds in flight fleet-wide (seeds the fleet row; 0 = brake)"),    \
        RW_KEY("ROLLWAVE_TRIGGER_RATE_PER_MIN", RW_CFG_INT,                    \
               trigger_rate_per_min, "600", 1, 1000000000, 0,                  \
               "environments triggered per minute fleet-wide (seeds the "      \
               "fleet row)"),                                                  \
        RW_KEY("ROLLWAVE_THROTTLE_LEASE_S", RW_CFG_INT, throttle_lease_s,      \
               "30", 5, 3600, 0,                                               \
               "budget taken for a chunk is held this long at most before "    \
               "its claim commits (a dead worker's lease expires)"),           \
        RW_KEY("ROLLWAVE_THROTTLE_ADJUST_S", RW_CFG_INT, throttle_adjust_s,    \
               "10", 1, 3600, 0,                                               \
               "round of the adaptive in-flight limit, fleet-wide"),           \
        RW_KEY("ROLLWAVE_THROTTLE_WAIT_MS", RW_CFG_INT, throttle_wait_ms,      \
               "250", 20, 60000, 0,                                            \
               "a batch waiting for budget is tried again after this"),        \
        RW_KEY("ROLLWAVE_WINDOW_WAIT_MS", RW_CFG_INT, window_wait_ms,          \
               "300000", 20, 86400000, 0,                                      \
               "a chunk deferred for its deployment window is looked at "      \
               "again at the opening or after this, whichever first"),         \
        RW_KEY("ROLLWAVE_RUN_LIMIT_WAIT_MS", RW_CFG_INT, run_limit_wait_ms,    \
               "2000", 20, 3600000, 0,                                         \
               "a chunk deferred by its run's max_in_flight is queued "        \
               "again after this (at the next recovery sweep)")

#define RW_KEYS_POLL                                                           \
    RW_KEY("ROLLWAVE_FIRST_POLL_DELAY_S", RW_CFG_INT, first_poll_delay_s,      \
           "10", 0, 86400, 0, "delay of the first poll after a trigger"),      \
        RW_KEY("ROLLWAVE_POLL_INTERVAL_S", RW_CFG_INT, poll_interval_s, "30",  \
               0, 86400, 0, "delay between polls of one chunk"),               \
        RW_KEY("ROLLWAVE_FIRST_POLL_DELAY_MS", RW_CFG_INT,                     \
               first_poll_delay_ms, "0", 0, 86400000, 0,                       \
               "the first poll's delay in ms; overrides the _S key when set "  \
               "(builds of a few seconds)"),                                   \
        RW_KEY("ROLLWAVE_POLL_INTERVAL_MS", RW_CFG_INT, poll_interval_ms, "0", \
               0, 86400000, 0,                                                 \
               "delay between polls in ms; overrides the _S key when set"),    \
        RW_KEY("ROLLWAVE_POLL_MAX_ATTEMPTS", RW_CFG_INT, poll_max_attempts,    \
               "1440", 1, 1000000, 0,                                          \
               "polls before a chunk's remaining targets time out")

#define RW_KEYS_BUILD_LOGS                                                     \
    RW_KEY("ROLLWAVE_LOG_FETCH", RW_CFG_STR, log_fetch, "failed", 0, 0, 0,     \
           "build logs fetched after a poll: failed (targets that ended "      \
           "failed), all (every terminal target) or none"),                    \
        RW_KEY("ROLLWAVE_LOG_SAMPLE_PERCENT", RW_CFG_INT, log_sample_percent,  \
               "100", 0, 100, 0,                                               \
               "with ROLLWAVE_LOG_FETCH=all, the share of successful "         \
               "targets whose log is fetched (failed ones always are)"),       \
        RW_KEY("ROLLWAVE_LOG_MAX_BYTES", RW_CFG_INT, log_max_bytes, "262144",  \
               1024, 67108864, 0,                                              \
               "a stored log keeps its last this many bytes, behind a "        \
               "marker line"),                                                 \
        RW_KEY("ROLLWAVE_LOG_REDACT_PATTERNS", RW_CFG_SECRET,                  \
               log_redact_patterns, NULL, 0, 0, 0,                             \
               "extra POSIX extended regular expressions, one per line, "      \
               "whose matches are redacted from build logs"),                  \
        RW_KEY("ROLLWAVE_LOG_RETRY_S", RW_CFG_INT, log_retry_s, "60", 1,       \
               86400, 0,                                                       \
               "a log Lagoon could not read is fetched again after this "      \
               "long (3 attempts in all)")

#define RW_KEYS_SWEEP                                                          \
    RW_KEY("ROLLWAVE_SWEEP_INTERVAL_S", RW_CFG_INT, sweep_interval_s, "10", 1, \
           3600, 0, "seconds between recovery sweeps (leader only)"),          \
        RW_KEY("ROLLWAVE_SWEEP_POLL_STALE_S", RW_CFG_INT, sweep_poll_stale_s,  \
               "300", 10, 86400, 0,                                            \
               "re-emit the poll event of a triggered chunk not polled for "   \
               "this long"),                                                   \
        RW_KEY("ROLLWAVE_SWEEP_PENDING_STALE_S", RW_CFG_INT,                   \
               sweep_pending_stale_s, "900", 10, 604800, 0,                    \
               "re-queue the batch of a pending chunk of a running run "       \
               "untouched for this long"),                                     \
        RW_KEY("ROLLWAVE_SWEEP_BATCH", RW_CFG_INT, sweep_batch, "200", 1,      \
               100000, 0, "most chunks one sweep acts on per kind")

#define RW_KEYS_API                                                            \
    RW_KEY("ROLLWAVE_API_BIND", RW_CFG_STR, api_bind, "0.0.0.0", 0, 0, 0,      \
           "address the API and dashboard listen on"),                         \
        RW_KEY("ROLLWAVE_API_PORT", RW_CFG_INT, api_port, "8080", 0, 65535, 0, \
               "port of the API and dashboard (0 = any free port)"),           \
        RW_KEY("ROLLWAVE_API_THREADS", RW_CFG_INT, api_threads, "4", 1, 64, 0, \
               "request threads, each with its own Postgres connection"),      \
        RW_KEY("ROLLWAVE_API_TOKEN_CACHE_S", RW_CFG_INT, api_token_cache_s,    \
               "5", 0, 60, 0,                                                  \
               "a verified token is trusted this long without asking "         \
               "Postgres: a revoke takes effect within it (0 = ask every "     \
               "time)")

/* Free every string of s (all keys of every group). Accepts NULL. */
void rw_settings_free(rw_settings_t *s);

/* The poll delays in ms: the _MS key when set, else the _S key. */
long long rw_settings_first_poll_delay_ms(const rw_settings_t *s);
long long rw_settings_poll_interval_ms(const rw_settings_t *s);

/*
 * The poller's own check of two keys together: polls at most half of
 * ROLLWAVE_LOCK_TTL_S apart, since a chunk's locks are renewed at its
 * polls from half their TTL on (a longer interval lets them lapse between
 * two polls). RW_ERR_CONFIG naming both keys otherwise.
 */
rw_err_t rw_settings_check_poll_locks(const rw_settings_t *s, char *errstr,
                                      size_t errlen);

#endif
