/*
 * test_webhook: the pure parts of rw_webhook: the signature against the
 * RFC 4231 HMAC-SHA256 vectors, verification (a wrong secret, a changed
 * body or a cut header fail), the retry delay (doubling, cap, jitter
 * bound), the outcome of an HTTP status, the event of every run edge and
 * the URL shown in logs (no credentials, path or query).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "rw_webhook.h"

static void test_sign_vectors(void **state)
{
    char key1[21];
    char sig[RW_WEBHOOK_SIG_LEN];

    (void)state;
    /* RFC 4231 test case 1: twenty 0x0b bytes, "Hi There" */
    memset(key1, 0x0b, 20);
    key1[20] = '\0';
    assert_int_equal(
        rw_webhook_sign(key1, "Hi There", 8, sig, sizeof(sig), NULL, 0), RW_OK);
    assert_string_equal(sig, "sha256=b0344c61d8db38535ca8afceaf0bf12b881dc2"
                             "00c9833da726e9376c2e32cff7");
    /* RFC 4231 test case 2 */
    assert_int_equal(rw_webhook_sign("Jefe", "what do ya want for nothing?", 28,
                                     sig, sizeof(sig), NULL, 0),
                     RW_OK);
    assert_string_equal(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f"
                             "089d2739839dec58b964ec3843");
    /* too small a buffer is refused, not cut */
    assert_int_equal(rw_webhook_sign("Jefe", "x", 1, sig, 10, NULL, 0),
                     RW_ERR_INVALID_ARG);
}

static void test_verify(void **state)
{
    static const char body[] = "{\"event\":\"run.finished\"}";
    char sig[RW_WEBHOOK_SIG_LEN];

    (void)state;
    assert_int_equal(rw_webhook_sign("right-secret-0123", body, strlen(body),
                                     sig, sizeof(sig), NULL, 0),
                     RW_OK);
    assert_true(
        rw_webhook_verify("right-secret-0123", body, strlen(body), sig));
    assert_false(
        rw_webhook_verify("wrong-secret-0123", body, strlen(body), sig));
    assert_false(
        rw_webhook_verify("right-secret-0123", body, strlen(body) - 1, sig));
    sig[RW_WEBHOOK_SIG_LEN - 2] = '\0';
    assert_false(
        rw_webhook_verify("right-secret-0123", body, strlen(body), sig));
    assert_false(
        rw_webhook_verify("right-secret-0123", body, strlen(body), NULL));
}

static void test_backoff(void **state)
{
    (void)state;
    /* no jitter: base, doubled per failed attempt */
    assert_int_equal(rw_webhook_backoff_ms(1000, 1, 0), 1000);
    assert_int_equal(rw_webhook_backoff_ms(1000, 2, 0), 2000);
    assert_int_equal(rw_webhook_backoff_ms(1000, 3, 0), 4000);
    assert_int_equal(rw_webhook_backoff_ms(1000, 8, 0), 128000);
    /* capped at 10 minutes, however many attempts */
    assert_int_equal(rw_webhook_backoff_ms(1000, 11, 0), 600000);
    assert_int_equal(rw_webhook_backoff_ms(1000, 1000, 0), 600000);
    assert_int_equal(rw_webhook_backoff_ms(900000, 1, 0), 600000);
    /* jitter: at most a tenth of the delay */
    for (unsigned r = 0; r < 5000; r += 7) {
        long long d = rw_webhook_backoff_ms(1000, 2, r);
        assert_true(d >= 2000 && d <= 2200);
    }
    assert_int_equal(rw_webhook_backoff_ms(1000, 2, 200), 2200);
    assert_int_equal(rw_webhook_backoff_ms(1000, 2, 201), 2000);
}

static void test_classify(void **state)
{
    (void)state;
    assert_int_equal(rw_webhook_classify(200), RW_WEBHOOK_DELIVERED);
    assert_int_equal(rw_webhook_classify(204), RW_WEBHOOK_DELIVERED);
    assert_int_equal(rw_webhook_classify(0), RW_WEBHOOK_RETRY);
    assert_int_equal(rw_webhook_classify(500), RW_WEBHOOK_RETRY);
    assert_int_equal(rw_webhook_classify(503), RW_WEBHOOK_RETRY);
    assert_int_equal(rw_webhook_classify(408), RW_WEBHOOK_RETRY);
    assert_int_equal(rw_webhook_classify(429), RW_WEBHOOK_RETRY);
    assert_int_equal(rw_webhook_classify(400), RW_WEBHOOK_DEAD);
    assert_int_equal(rw_webhook_classify(404), RW_WEBHOOK_DEAD);
    assert_int_equal(rw_webhook_classify(410), RW_WEBHOOK_DEAD);
    /* a redirect is not followed, and not success either */
    assert_int_equal(rw_webhook_classify(301), RW_WEBHOOK_DEAD);
}

static void test_events(void **state)
{
    static const struct {
        rw_run_state_t from, to;
        const char *event;
    } edges[] = {
        {RW_RUN_PENDING, RW_RUN_RUNNING, "run.started"},
        {RW_RUN_PAUSED, RW_RUN_RUNNING, "run.resumed"},
        {RW_RUN_RUNNING, RW_RUN_PAUSED, "run.paused"},
        {RW_RUN_RUNNING, RW_RUN_COMPLETED, "run.finished"},
        {RW_RUN_PAUSED, RW_RUN_PARTIAL_FAILED, "run.finished"},
        {RW_RUN_PENDING, RW_RUN_COMPLETED, "run.finished"},
        {RW_RUN_RUNNING, RW_RUN_FAILED, "run.failed"},
        {RW_RUN_PENDING, RW_RUN_FAILED, "run.failed"},
        {RW_RUN_PAUSED, RW_RUN_CANCELLED, "run.cancelled"},
        {RW_RUN_PENDING, RW_RUN_CANCELLED, "run.cancelled"},
        {RW_RUN_FAILED, RW_RUN_RUNNING, NULL},
        {RW_RUN_COMPLETED, RW_RUN_RUNNING, NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        const char *e = rw_webhook_event_for(edges[i].from, edges[i].to);
        if (!edges[i].event) {
            assert_null(e);
            continue;
        }
        assert_non_null(e);
        assert_string_equal(e, edges[i].event);
        assert_true(rw_webhook_event_known(e));
    }
    assert_false(rw_webhook_event_known("run.exploded"));
    assert_false(rw_webhook_event_known("webhook.test"));
    assert_false(rw_webhook_event_known(""));
    assert_false(rw_webhook_event_known(NULL));
}

static void test_url_safe(void **state)
{
    char buf[128];

    (void)state;
    rw_webhook_url_safe("https://user:pa55word@hooks.example.com/x?token=abc",
                        buf, sizeof(buf));
    assert_string_equal(buf, "https://hooks.example.com:443");
    rw_webhook_url_safe("http://127.0.0.1:8123/hook", buf, sizeof(buf));
    assert_string_equal(buf, "http://127.0.0.1:8123");
    rw_webhook_url_safe("not a url", buf, sizeof(buf));
    assert_string_equal(buf, "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_vectors), cmocka_unit_test(test_verify),
        cmocka_unit_test(test_backoff),      cmocka_unit_test(test_classify),
        cmocka_unit_test(test_events),       cmocka_unit_test(test_url_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
