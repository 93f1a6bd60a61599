/*
 * test_kafka: the parts of rw_kafka that need no broker: topic naming, the
 * kafka_properties pass-through and its errors, the librdkafka conf built
 * from settings, handle creation, and delivery reports for messages that
 * cannot be delivered (nothing listens on the port).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "rw_kafka.h"
#include "rw_log.h"
#include "rw_settings.h"

static rw_settings_t base_settings(void)
{
    rw_settings_t s;

    memset(&s, 0, sizeof(s));
    s.kafka_brokers = "127.0.0.1:1";
    s.kafka_topic_prefix = "rollwave.";
    s.kafka_security_protocol = "plaintext";
    s.kafka_sasl_mechanism = "";
    s.kafka_sasl_username = "";
    s.kafka_sasl_password = "";
    s.kafka_ssl_ca_location = "";
    s.kafka_properties = "";
    s.kafka_session_timeout_ms = 6000;
    s.kafka_group = "test-group";
    return s;
}

static void expect_conf(rd_kafka_conf_t *conf, const char *key,
                        const char *want)
{
    char buf[512];
    size_t size = sizeof(buf);

    assert_int_equal(rd_kafka_conf_get(conf, key, buf, &size),
                     RD_KAFKA_CONF_OK);
    assert_string_equal(buf, want);
}

static void test_topic_names(void **state)
{
    rw_settings_t s = base_settings();
    char buf[64];

    (void)state;
    rw_kafka_topic(buf, sizeof(buf), &s, "batches");
    assert_string_equal(buf, "rollwave.batches");
    s.kafka_topic_prefix = "fleet1-";
    rw_kafka_topic(buf, sizeof(buf), &s, "dlq");
    assert_string_equal(buf, "fleet1-dlq");
    s.kafka_topic_prefix = NULL;
    rw_kafka_topic(buf, sizeof(buf), &s, "poll");
    assert_string_equal(buf, "poll");
    s.kafka_topic_prefix = "a.very.long.prefix.";
    rw_kafka_topic(buf, 8, &s, "poll");
    assert_string_equal(buf, "a.very.");
}

static void test_properties_applied(void **state)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[256] = "";

    (void)state;
    assert_int_equal(
        rw_kafka_conf_apply_properties(conf, " linger.ms = 7 ,client.id=abc,,",
                                       errstr, sizeof(errstr)),
        RW_OK);
    expect_conf(conf, "linger.ms", "7");
    expect_conf(conf, "client.id", "abc");
    /* a value may itself contain '=' */
    assert_int_equal(
        rw_kafka_conf_apply_properties(conf, "sasl.oauthbearer.config=a=b c=d",
                                       errstr, sizeof(errstr)),
        RW_OK);
    expect_conf(conf, "sasl.oauthbearer.config", "a=b c=d");
    assert_int_equal(
        rw_kafka_conf_apply_properties(conf, NULL, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(
        rw_kafka_conf_apply_properties(conf, "", errstr, sizeof(errstr)),
        RW_OK);
    rd_kafka_conf_destroy(conf);
}

static void expect_prop_error(const char *props, const char *needle,
                              const char *secret)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[256] = "";

    assert_int_equal(
        rw_kafka_conf_apply_properties(conf, props, errstr, sizeof(errstr)),
        RW_ERR_CONFIG);
    if (!strstr(errstr, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", errstr, needle);
    if (secret && strstr(errstr, secret))
        fail_msg("error \"%s\" reveals \"%s\"", errstr, secret);
    rd_kafka_conf_destroy(conf);
}

static void test_properties_malformed(void **state)
{
    (void)state;
    expect_prop_error("linger.ms", "entry 1 is not key=value", NULL);
    expect_prop_error("linger.ms=5,hunter2", "entry 2 is not key=value",
                      "hunter2");
    expect_prop_error("linger.ms=5, =3", "entry 2 has an empty key", NULL);
    expect_prop_error("no.such.property=1",
                      "unknown kafka property "
                      "\"no.such.property\"",
                      NULL);
    expect_prop_error("linger.ms=soon",
                      "invalid value for kafka property "
                      "\"linger.ms\"",
                      NULL);
    /* an unknown key after a secret: the secret stays out of the message */
    expect_prop_error("sasl.password=hunter2,bogus.key=1", "\"bogus.key\"",
                      "hunter2");
    expect_prop_error("ssl.key.password=,acks=lots", "\"acks\"", NULL);
}

static void test_conf_from_settings(void **state)
{
    rw_settings_t s = base_settings();
    rd_kafka_conf_t *conf = NULL;
    char errstr[256] = "";

    (void)state;
    s.kafka_brokers = "k1:9093,k2:9093";
    s.kafka_security_protocol = "sasl_ssl";
    s.kafka_sasl_mechanism = "SCRAM-SHA-512";
    s.kafka_sasl_username = "fleet";
    s.kafka_sasl_password = "s3cret";
    s.kafka_ssl_ca_location = "certs/kafka-ca.pem";
    s.kafka_properties = "client.id=rollwave-test,socket.timeout.ms=12345";
    assert_int_equal(rw_kafka_conf_new(&conf, &s, errstr, sizeof(errstr)),
                     RW_OK);
    assert_non_null(conf);
    expect_conf(conf, "bootstrap.servers", "k1:9093,k2:9093");
    expect_conf(conf, "security.protocol", "sasl_ssl");
    expect_conf(conf, "sasl.mechanisms", "SCRAM-SHA-512");
    expect_conf(conf, "sasl.username", "fleet");
    expect_conf(conf, "sasl.password", "s3cret");
    expect_conf(conf, "ssl.ca.location", "certs/kafka-ca.pem");
    expect_conf(conf, "client.id", "rollwave-test");
    expect_conf(conf, "socket.timeout.ms", "12345");
    rd_kafka_conf_destroy(conf);
}

static void test_conf_unset_settings_left_default(void **state)
{
    rw_settings_t s = base_settings();
    rd_kafka_conf_t *conf = NULL;
    char errstr[256] = "";
    char buf[64];
    size_t size = sizeof(buf);

    (void)state;
    s.kafka_security_protocol = NULL;
    assert_int_equal(rw_kafka_conf_new(&conf, &s, errstr, sizeof(errstr)),
                     RW_OK);
    expect_conf(conf, "security.protocol", "plaintext");
    /* no mechanism configured: librdkafka's default stays */
    assert_int_equal(rd_kafka_conf_get(conf, "sasl.mechanisms", buf, &size),
                     RD_KAFKA_CONF_OK);
    assert_string_equal(buf, "GSSAPI");
    rd_kafka_conf_destroy(conf);
}

static void test_conf_errors(void **state)
{
    rw_settings_t s = base_settings();
    rd_kafka_conf_t *conf = NULL;
    char errstr[256] = "";

    (void)state;
    s.kafka_brokers = "";
    assert_int_equal(rw_kafka_conf_new(&conf, &s, errstr, sizeof(errstr)),
                     RW_ERR_CONFIG);
    assert_null(conf);
    assert_non_null(strstr(errstr, "bootstrap"));

    s = base_settings();
    s.kafka_security_protocol = "carrier_pigeon";
    assert_int_equal(rw_kafka_conf_new(&conf, &s, errstr, sizeof(errstr)),
                     RW_ERR_CONFIG);
    assert_null(conf);
    assert_non_null(strstr(errstr, "\"security.protocol\""));

    s = base_settings();
    s.kafka_properties = "fetch.wait.max.ms=10,not.a.property=1";
    assert_int_equal(rw_kafka_conf_new(&conf, &s, errstr, sizeof(errstr)),
                     RW_ERR_CONFIG);
    assert_null(conf);
    assert_non_null(strstr(errstr, "\"not.a.property\""));
}

static void test_handles_reject_bad_config(void **state)
{
    rw_settings_t s = base_settings();
    /* non-NULL so that the tests see _new reset them on failure */
    rw_kafka_producer_t *kp = (rw_kafka_producer_t *)&s;
    rw_kafka_consumer_t *kc = (rw_kafka_consumer_t *)&s;
    const char *topics[] = {"t"};
    char errstr[256] = "";

    (void)state;
    s.kafka_properties = "bogus.key=1";
    assert_int_equal(
        rw_kafka_producer_new(&kp, &s, NULL, NULL, errstr, sizeof(errstr)),
        RW_ERR_CONFIG);
    assert_null(kp);
    assert_non_null(strstr(errstr, "\"bogus.key\""));
    assert_int_equal(
        rw_kafka_consumer_new(&kc, &s, NULL, topics, 1, errstr, sizeof(errstr)),
        RW_ERR_CONFIG);
    assert_null(kc);

    s = base_settings();
    s.kafka_group = "";
    assert_int_equal(
        rw_kafka_consumer_new(&kc, &s, NULL, topics, 1, errstr, sizeof(errstr)),
        RW_ERR_CONFIG);
    assert_null(kc);
    assert_non_null(strstr(errstr, "group"));

    /* Idempotence refuses acks=1, so this only starts if the forced
     * acks=all is applied after the pass-through properties. */
    s = base_settings();
    s.kafka_properties = "acks=1";
    assert_int_equal(
        rw_kafka_producer_new(&kp, &s, NULL, NULL, errstr, sizeof(errstr)),
        RW_OK);
    rw_kafka_producer_destroy(kp);

    rw_kafka_producer_destroy(NULL);
    rw_kafka_consumer_destroy(NULL);
    rw_kafka_msg_destroy(NULL);
}

typedef struct dr_record {
    int calls;
    rw_err_t result;
    int32_t partition;
    int64_t offset;
    void *msg_opaque;
} dr_record_t;

static void record_dr(void *dr_opaque, void *msg_opaque, rw_err_t result,
                      int32_t partition, int64_t offset, const char *errmsg)
{
    dr_record_t *r = dr_opaque;

    (void)errmsg;
    r->calls++;
    r->result = result;
    r->partition = partition;
    r->offset = offset;
    r->msg_opaque = msg_opaque;
}

static void test_undeliverable_message_reports_error(void **state)
{
    rw_settings_t s = base_settings();
    rw_kafka_producer_t *kp = NULL;
    dr_record_t r = {0, RW_OK, 0, 0, NULL};
    rw_kafka_header_t h = {"h", "v", 1};
    int token = 42;
    char errstr[256] = "";

    (void)state;
    /* Nothing listens on port 1: the message times out locally. */
    s.kafka_properties = "message.timeout.ms=300,socket.timeout.ms=100,"
                         "log_level=0";
    assert_int_equal(
        rw_kafka_producer_new(&kp, &s, record_dr, &r, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(rw_kafka_produce(kp, NULL, "k", 1, "p", 1, NULL, 0, NULL,
                                      errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_int_equal(rw_kafka_produce(kp, "t", "k", 1, "p", 1, &h, 1, &token,
                                      errstr, sizeof(errstr)),
                     RW_OK);
    assert_true(rw_kafka_producer_outstanding(kp) >= 1);
    assert_int_equal(rw_kafka_producer_flush(kp, 10000, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(r.calls, 1);
    assert_ptr_equal(r.msg_opaque, &token);
    assert_int_equal(r.result, RW_ERR_KAFKA_TRANSIENT);
    assert_true(rw_err_is_retriable(r.result));
    assert_int_equal(r.partition, -1);
    assert_int_equal(r.offset, -1);
    assert_int_equal(rw_kafka_producer_outstanding(kp), 0);
    rw_kafka_producer_destroy(kp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_names),
        cmocka_unit_test(test_properties_applied),
        cmocka_unit_test(test_properties_malformed),
        cmocka_unit_test(test_conf_from_settings),
        cmocka_unit_test(test_conf_unset_settings_left_default),
        cmocka_unit_test(test_conf_errors),
        cmocka_unit_test(test_handles_reject_bad_config),
        cmocka_unit_test(test_undeliverable_message_reports_error),
    };

    rw_log_set_level(RW_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
