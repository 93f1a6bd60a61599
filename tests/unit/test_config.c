/* test_config: table-driven parsing, bounds, defaults and error messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_config.h"
#include "rw_log.h"
#include "rw_settings.h"

static const rw_cfg_key_t keys[] = {
    RW_KEYS_PROCESS("9100"),           RW_KEYS_PG,       RW_KEYS_KAFKA,
    RW_KEYS_KAFKA_GROUP("test-group"), RW_KEYS_SCHEDULE,
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

/* env is a NULL-terminated list of "NAME=value" strings */
static const char *fake_lookup(const char *name, void *ud)
{
    const char *const *env = ud;
    size_t n = strlen(name);
    for (; *env; env++)
        if (strncmp(*env, name, n) == 0 && (*env)[n] == '=')
            return *env + n + 1;
    return NULL;
}

static rw_err_t load(const char *const *env, rw_settings_t *s, char *errstr,
                     size_t errlen)
{
    memset(s, 0, sizeof(*s));
    return rw_config_load(keys, NKEYS, s, fake_lookup, (void *)env, errstr,
                          errlen);
}

static void test_defaults(void **state)
{
    const char *env[] = {"ROLLWAVE_PG_DSN=dbname=x", NULL};
    rw_settings_t s;
    char errstr[256] = "";
    (void)state;
    assert_int_equal(load(env, &s, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(s.metrics_port, 9100);
    assert_int_equal(s.log_level, RW_LOG_INFO);
    assert_int_equal(s.max_per_run, 50);
    assert_int_equal(s.bulk_chunk_size, 50);
    assert_int_equal(s.tick_interval_s, 600);
    assert_int_equal(s.jitter_window_min, 180);
    assert_string_equal(s.kafka_topic_prefix, "rollwave.");
    assert_string_equal(s.kafka_group, "test-group");
    assert_string_equal(s.pg_dsn, "dbname=x");
    assert_string_equal(s.kafka_sasl_mechanism, "");
    rw_settings_free(&s);
}

static void test_overrides(void **state)
{
    const char *env[] = {"ROLLWAVE_PG_DSN=dbname=x",
                         "ROLLWAVE_BULK_CHUNK_SIZE=7",
                         "ROLLWAVE_LOG_LEVEL=debug",
                         "ROLLWAVE_KAFKA_TOPIC_PREFIX=fleet1.", NULL};
    rw_settings_t s;
    char errstr[256] = "";
    (void)state;
    assert_int_equal(load(env, &s, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(s.bulk_chunk_size, 7);
    assert_int_equal(s.log_level, RW_LOG_DEBUG);
    assert_string_equal(s.kafka_topic_prefix, "fleet1.");
    rw_settings_free(&s);
}

static void expect_error(const char *bad, const char *needle)
{
    const char *env[] = {"ROLLWAVE_PG_DSN=dbname=x", bad, NULL};
    rw_settings_t s;
    char errstr[256] = "";
    assert_int_equal(load(env, &s, errstr, sizeof(errstr)), RW_ERR_CONFIG);
    if (!strstr(errstr, needle))
        fail_msg("error '%s' does not mention '%s'", errstr, needle);
    rw_settings_free(&s);
}

static void test_each_bad_value_rejected(void **state)
{
    (void)state;
    expect_error("ROLLWAVE_BULK_CHUNK_SIZE=0", "ROLLWAVE_BULK_CHUNK_SIZE");
    expect_error("ROLLWAVE_BULK_CHUNK_SIZE=0", "out of range");
    expect_error("ROLLWAVE_BULK_CHUNK_SIZE=100000", "out of range");
    expect_error("ROLLWAVE_MAX_PER_RUN=ten", "not an integer");
    expect_error("ROLLWAVE_MAX_PER_RUN=10x", "ROLLWAVE_MAX_PER_RUN");
    expect_error("ROLLWAVE_METRICS_PORT=70000", "ROLLWAVE_METRICS_PORT");
    expect_error("ROLLWAVE_TICK_INTERVAL_S=-5", "out of range");
    expect_error("ROLLWAVE_LOG_LEVEL=loud", "ROLLWAVE_LOG_LEVEL");
    expect_error("ROLLWAVE_KAFKA_SESSION_TIMEOUT_MS=100", "out of range");
}

static void test_required_missing(void **state)
{
    const char *env[] = {NULL};
    rw_settings_t s;
    char errstr[256] = "";
    (void)state;
    assert_int_equal(load(env, &s, errstr, sizeof(errstr)), RW_ERR_CONFIG);
    assert_non_null(strstr(errstr, "ROLLWAVE_PG_DSN"));
    assert_non_null(strstr(errstr, "required"));
    rw_settings_free(&s);
}

static void test_required_secret_missing(void **state)
{
    static const rw_cfg_key_t secret_keys[] = {
        RW_KEY("ROLLWAVE_SECRET_INT", RW_CFG_SECRET, lagoon_token, NULL, 0, 0,
               1, "a secret"),
    };
    const char *env[] = {"ROLLWAVE_SECRET_INT=", NULL};
    rw_settings_t s;
    char errstr[256] = "";
    (void)state;
    memset(&s, 0, sizeof(s));
    assert_int_equal(rw_config_load(secret_keys, 1, &s, fake_lookup,
                                    (void *)env, errstr, sizeof(errstr)),
                     RW_ERR_CONFIG);
    rw_settings_free(&s);
}

static void test_help_lists_every_key_and_hides_nothing_secret(void **state)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    (void)state;
    rw_config_help(f, "prog", "about", keys, NKEYS);
    fclose(f);
    for (size_t i = 0; i < NKEYS; i++)
        assert_non_null(strstr(buf, keys[i].env));
    assert_non_null(strstr(buf, "default: 50"));
    free(buf);
}

/* The poller refuses polls further apart than half the lock TTL. */
static void test_poll_interval_against_lock_ttl(void **state)
{
    /* TTL s, interval s, interval ms (overrides the _S key), verdict */
    static const struct {
        long long ttl_s, interval_s, interval_ms;
        rw_err_t want;
    } cases[] = {
        {60, 30, 0, RW_OK},     {60, 31, 0, RW_ERR_CONFIG},
        {60, 31, 30000, RW_OK}, {60, 1, 30001, RW_ERR_CONFIG},
        {50400, 30, 0, RW_OK}, /* the defaults */
    };
    rw_settings_t s;
    char errstr[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&s, 0, sizeof(s));
        s.lock_ttl_s = cases[i].ttl_s;
        s.poll_interval_s = cases[i].interval_s;
        s.poll_interval_ms = cases[i].interval_ms;
        errstr[0] = '\0';
        assert_int_equal(
            rw_settings_check_poll_locks(&s, errstr, sizeof(errstr)),
            cases[i].want);
        if (cases[i].want != RW_OK) {
            assert_non_null(strstr(errstr, "ROLLWAVE_LOCK_TTL_S"));
            assert_non_null(strstr(errstr, "ROLLWAVE_POLL_INTERVAL_S"));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_each_bad_value_rejected),
        cmocka_unit_test(test_required_missing),
        cmocka_unit_test(test_required_secret_missing),
        cmocka_unit_test(test_help_lists_every_key_and_hides_nothing_secret),
        cmocka_unit_test(test_poll_interval_against_lock_ttl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
