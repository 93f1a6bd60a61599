/*
 * test_outbox: the delivery state of rw_outbox without a broker (nothing
 * listens on the bootstrap port, so messages time out locally): the wait
 * derived from message.timeout.ms, a report that arrives after its waiter
 * gave up, and reports served by the producer's destroy. Run in the
 * sanitizer tree, a report writing into freed memory or a state never
 * freed fails the test. The outbox tables are covered by
 * tests/integration/test_outbox.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "rw_daemon.h"
#include "rw_kafka.h"
#include "rw_log.h"
#include "rw_metrics.h"
#include "rw_outbox.h"
#include "rw_settings.h"

static rw_settings_t settings(const char *props)
{
    rw_settings_t s;

    memset(&s, 0, sizeof(s));
    s.kafka_brokers = "127.0.0.1:1";
    s.kafka_topic_prefix = "rollwave.";
    s.kafka_security_protocol = "plaintext";
    s.kafka_properties = (char *)props;
    return s;
}

static rw_kafka_producer_t *producer(const char *props)
{
    rw_settings_t s = settings(props);
    rw_kafka_producer_t *kp = NULL;
    char errstr[256] = "";

    if (rw_kafka_producer_new(&kp, &s, rw_delivery_cb, NULL, errstr,
                              sizeof(errstr)))
        fail_msg("producer: %s", errstr);
    return kp;
}

static double late_reports(void)
{
    return rw_metrics_value(rw_metrics_counter(
        "rollwave_delivery_reports_late_total",
        "delivery reports that arrived after their waiter gave up", NULL));
}

static void test_wait_derives_from_message_timeout(void **state)
{
    rw_settings_t s = settings("message.timeout.ms=0");
    rw_kafka_producer_t *kp = producer("log_level=0");
    char errstr[256] = "";

    (void)state;
    /* the explicit default, not librdkafka's 300 s */
    assert_int_equal(rw_kafka_producer_message_timeout_ms(kp),
                     atoi(RW_KAFKA_MESSAGE_TIMEOUT_MS_DEFAULT));
    assert_int_equal(rw_kafka_producer_delivery_wait_ms(kp),
                     atoi(RW_KAFKA_MESSAGE_TIMEOUT_MS_DEFAULT) +
                         RW_KAFKA_DELIVERY_MARGIN_MS);
    rw_kafka_producer_destroy(kp);

    /* an operator's override is what the waits follow */
    kp = producer("message.timeout.ms=1500,log_level=0");
    assert_int_equal(rw_kafka_producer_message_timeout_ms(kp), 1500);
    assert_int_equal(rw_kafka_producer_delivery_wait_ms(kp),
                     1500 + RW_KAFKA_DELIVERY_MARGIN_MS);
    rw_kafka_producer_destroy(kp);

    /* "forever" would leave a waiter nothing to derive from */
    kp = NULL;
    assert_int_equal(rw_kafka_producer_new(&kp, &s, rw_delivery_cb, NULL,
                                           errstr, sizeof(errstr)),
                     RW_ERR_CONFIG);
    assert_null(kp);
    assert_non_null(strstr(errstr, "message.timeout.ms"));
}

static void test_produce_sync_waits_for_the_timeout_report(void **state)
{
    rw_kafka_producer_t *kp =
        producer("message.timeout.ms=1000,socket.timeout.ms=100,log_level=0");
    char errstr[256] = "";
    long long t0 = rw_now_mono_ms(), took;
    double late = late_reports();

    (void)state;
    assert_int_equal(
        rw_produce_sync(kp, "rollwave.poll", "k", "{}", errstr, sizeof(errstr)),
        RW_ERR_KAFKA_TRANSIENT);
    took = rw_now_mono_ms() - t0;
    /* the failure is the message's own timeout report, not a give-up */
    assert_non_null(strstr(errstr, "delivery to rollwave.poll failed"));
    assert_true(took >= 900);
    assert_true(took < rw_kafka_producer_delivery_wait_ms(kp));
    assert_true(late_reports() == late);
    rw_kafka_producer_destroy(kp);
}

static void test_report_after_waiter_gave_up(void **state)
{
    rw_kafka_producer_t *kp =
        producer("message.timeout.ms=1000,socket.timeout.ms=100,log_level=0");
    rw_delivery_t *d = rw_delivery_new(42);
    rw_delivery_t *other = rw_delivery_new(43);
    rw_err_t result = RW_OK;
    char errstr[256] = "";
    double late = late_reports();

    (void)state;
    assert_non_null(d);
    assert_non_null(other);
    assert_int_equal(rw_kafka_produce(kp, "rollwave.batches", "k", 1, "p", 1,
                                      NULL, 0, rw_delivery_hold(d), errstr,
                                      sizeof(errstr)),
                     RW_OK);
    /* a waiter shorter than the message timeout gives up first */
    assert_int_equal(rw_delivery_wait(kp, &d, 1, 100, errstr, sizeof(errstr)),
                     RW_ERR_KAFKA_TRANSIENT);
    assert_false(rw_delivery_done(d, NULL));
    rw_delivery_release(d);

    /* the next message's state must not see the first one's report */
    assert_int_equal(rw_kafka_produce(kp, "rollwave.batches", "k2", 2, "p", 1,
                                      NULL, 0, rw_delivery_hold(other), errstr,
                                      sizeof(errstr)),
                     RW_OK);
    assert_int_equal(
        rw_delivery_wait(kp, &other, 1, -1, errstr, sizeof(errstr)), RW_OK);
    assert_true(rw_delivery_done(other, &result));
    assert_int_equal(result, RW_ERR_KAFKA_TRANSIENT);
    assert_int_equal(rw_delivery_outbox_id(other), 43);
    rw_delivery_release(other);
    /* the first report came too, into its own state, and freed it */
    assert_true(late_reports() == late + 1);
    rw_kafka_producer_destroy(kp);
}

static void test_destroy_reports_what_is_left(void **state)
{
    /* longer than destroy's flush: the message is still queued then */
    rw_kafka_producer_t *kp = producer("message.timeout.ms=60000,log_level=0");
    rw_delivery_t *d = rw_delivery_new(7);
    char errstr[256] = "";
    double late = late_reports();

    (void)state;
    assert_int_equal(rw_kafka_produce(kp, "rollwave.poll", "k", 1, "p", 1, NULL,
                                      0, rw_delivery_hold(d), errstr,
                                      sizeof(errstr)),
                     RW_OK);
    rw_delivery_release(d);
    /* the purge's report frees the state: a leak fails the ASan run */
    rw_kafka_producer_destroy(kp);
    assert_true(late_reports() == late + 1);
}

static void test_unhold_after_failed_produce(void **state)
{
    rw_kafka_producer_t *kp = producer("log_level=0");
    rw_delivery_t *d = rw_delivery_new(1);
    char errstr[256] = "";

    (void)state;
    /* no topic: refused before queueing, so no report will come */
    assert_int_equal(rw_kafka_produce(kp, "", "k", 1, "p", 1, NULL, 0,
                                      rw_delivery_hold(d), errstr,
                                      sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    rw_delivery_unhold(d);
    assert_false(rw_delivery_done(d, NULL));
    rw_delivery_release(d);
    rw_delivery_release(NULL);
    rw_kafka_producer_destroy(kp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wait_derives_from_message_timeout),
        cmocka_unit_test(test_produce_sync_waits_for_the_timeout_report),
        cmocka_unit_test(test_report_after_waiter_gave_up),
        cmocka_unit_test(test_destroy_reports_what_is_left),
        cmocka_unit_test(test_unhold_after_failed_produce),
    };
    int rc;

    rw_log_set_level(RW_LOG_OFF);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    rw_metrics_shutdown();
    return rc;
}
