/*
 * test_outbox: rw_outbox against the stack's Postgres (a database of its
 * own) and a private rollwave-devbroker this test starts, takes down
 * (SIGUSR1) and brings back (SIGUSR2). Covers a delivery report that
 * arrives after its waiter gave up (nothing marked by it, nothing freed
 * under it: run it in the sanitizer tree too), the relay marking exactly
 * the rows Kafka has, rows left queued while the broker is away, and
 * pruning of published rows in batches.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rw_itest.h"
#include "rw_itest_pg.h"
#include "rw_kafka.h"
#include "rw_log.h"
#include "rw_metrics.h"
#include "rw_outbox.h"
#include "rw_settings.h"

/* Fast reconnects: the broker comes back within the test's patience. */
#define BASE_PROPS "reconnect.backoff.ms=50,reconnect.backoff.max.ms=300,"

typedef struct fixture {
    pid_t broker;
    char dir[256];
    char bootstrap_file[300];
    char log_file[300];
    char bootstrap[256];
    char prefix[64];
    char dsn[512];
    rw_pg_t *pg;
    rw_settings_t s;
} fixture_t;

static fixture_t fx;

static int read_bootstrap(void)
{
    FILE *f = fopen(fx.bootstrap_file, "r");
    size_t n;

    if (!f)
        return 0;
    n = fread(fx.bootstrap, 1, sizeof(fx.bootstrap) - 1, f);
    fclose(f);
    fx.bootstrap[n] = '\0';
    while (n && (fx.bootstrap[n - 1] == '\n' || fx.bootstrap[n - 1] == ' '))
        fx.bootstrap[--n] = '\0';
    return n > 0;
}

/* Occurrences of needle in the devbroker's log. */
static int log_count(const char *needle)
{
    FILE *f = fopen(fx.log_file, "r");
    char line[2048];
    int n = 0;

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

/* Signal the devbroker and wait until its log says it acted. */
static void broker_signal(int sig, const char *event)
{
    int before = log_count(event);
    long long deadline = rw_itest_now_ms() + 10000;

    if (kill(fx.broker, sig) != 0)
        fail_msg("signal to devbroker: %s", strerror(errno));
    while (log_count(event) == before) {
        if (rw_itest_now_ms() > deadline)
            fail_msg("devbroker did not log %s within 10 s", event);
        rw_itest_sleep_ms(20);
    }
}

static int setup(void **state)
{
    char bin[512];
    long long deadline;
    pid_t parent;

    (void)state;
    memset(&fx, 0, sizeof(fx));
    rw_itest_bin(bin, sizeof(bin), "rollwave-devbroker");
    snprintf(fx.dir, sizeof(fx.dir), "%s/rw_outbox_itest_XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(fx.dir)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    snprintf(fx.bootstrap_file, sizeof(fx.bootstrap_file), "%s/bootstrap",
             fx.dir);
    snprintf(fx.log_file, sizeof(fx.log_file), "%s/devbroker.log", fx.dir);
    rw_itest_unique(fx.prefix, sizeof(fx.prefix) - 1, "outbox");
    strcat(fx.prefix, ".");

    parent = getpid();
    fx.broker = fork();
    if (fx.broker < 0)
        return -1;
    if (fx.broker == 0) {
        int fd;
        /* A test that crashes must not leave its broker behind. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        fd = open(fx.log_file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        setenv("ROLLWAVE_LOG_LEVEL", "info", 1);
        char *argv[] = {bin,
                        "--topic-prefix",
                        fx.prefix,
                        "--bootstrap-file",
                        fx.bootstrap_file,
                        "--partitions",
                        "1",
                        NULL};
        execv(bin, argv);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    deadline = rw_itest_now_ms() + 15000;
    while (!read_bootstrap()) {
        int status;
        if (waitpid(fx.broker, &status, WNOHANG) == fx.broker) {
            fprintf(stderr, "rollwave-devbroker exited early (status %d)\n",
                    status);
            fx.broker = 0;
            return -1;
        }
        if (rw_itest_now_ms() > deadline) {
            fprintf(stderr, "no bootstrap file from rollwave-devbroker\n");
            return -1;
        }
        rw_itest_sleep_ms(50);
    }
    fx.s.kafka_brokers = fx.bootstrap;
    fx.s.kafka_topic_prefix = fx.prefix;
    fx.s.kafka_security_protocol = "plaintext";
    fx.s.kafka_properties = "";
    fx.s.kafka_session_timeout_ms = 6000;
    fx.s.kafka_group = "unused-default";

    rw_itest_pg_fresh_db(fx.dsn, sizeof(fx.dsn));
    fx.pg = rw_itest_pg_connect(fx.dsn);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rw_pg_destroy(fx.pg);
    if (fx.dsn[0])
        rw_itest_pg_drop_db(fx.dsn);
    if (fx.broker > 0) {
        kill(fx.broker, SIGTERM);
        waitpid(fx.broker, NULL, 0);
    }
    unlink(fx.bootstrap_file);
    unlink(fx.log_file);
    rmdir(fx.dir);
    rw_metrics_shutdown();
    return 0;
}

/* ---- helpers --------------------------------------------------------- */

static void sql(const char *stmt, int n, const char *const *params,
                PGresult **res)
{
    char errstr[512] = "";

    if (rw_pg_exec(fx.pg, stmt, n, params, res, errstr, sizeof(errstr)))
        fail_msg("%s: %s", stmt, errstr);
}

/* Clean outbox before each test. */
static int clean(void **state)
{
    (void)state;
    sql("TRUNCATE outbox", 0, NULL, NULL);
    return 0;
}

static long long add_row(const char *topic, const char *key,
                         const char *payload)
{
    long long id = 0;
    char errstr[512] = "";

    if (rw_outbox_add(fx.pg, topic, key, payload, &id, errstr, sizeof(errstr)))
        fail_msg("outbox add: %s", errstr);
    return id;
}

/* Ids of the published rows, "1,2,3" in id order ("" for none). */
static void published_ids(char *buf, size_t len)
{
    PGresult *res = NULL;
    const char *ids;

    sql("SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') AS ids"
        " FROM outbox WHERE published_at IS NOT NULL",
        0, NULL, &res);
    ids = rw_pg_str(res, 0, "ids");
    snprintf(buf, len, "%s", ids ? ids : "");
    PQclear(res);
}

static long long count_rows(const char *where)
{
    PGresult *res = NULL;
    char stmt[512];
    long long n;

    snprintf(stmt, sizeof(stmt), "SELECT count(*) AS n FROM outbox WHERE %s",
             where);
    sql(stmt, 0, NULL, &res);
    n = rw_pg_ll(res, 0, "n", -1);
    PQclear(res);
    return n;
}

static rw_kafka_producer_t *producer(const char *props)
{
    rw_settings_t s = fx.s;
    rw_kafka_producer_t *kp = NULL;
    char errstr[512] = "";

    s.kafka_properties = (char *)props;
    if (rw_kafka_producer_new(&kp, &s, rw_delivery_cb, NULL, errstr,
                              sizeof(errstr)))
        fail_msg("producer: %s", errstr);
    return kp;
}

/* Messages in the one partition of a logical topic. */
static long long topic_messages(const char *name)
{
    rw_kafka_consumer_t *kc = NULL;
    char topic[256], errstr[512] = "";
    int64_t low = 0, high = 0;

    rw_kafka_topic(topic, sizeof(topic), &fx.s, name);
    if (rw_kafka_consumer_new(&kc, &fx.s, "outbox-itest", NULL, 0, errstr,
                              sizeof(errstr)) ||
        rw_kafka_watermarks(kc, topic, 0, &low, &high, 10000, errstr,
                            sizeof(errstr)))
        fail_msg("watermarks of %s: %s", topic, errstr);
    rw_kafka_consumer_destroy(kc);
    return (long long)(high - low);
}

static double late_reports(void)
{
    return rw_metrics_value(rw_metrics_counter(
        "rollwave_delivery_reports_late_total",
        "delivery reports that arrived after their waiter gave up", NULL));
}

/* Publish one message so the producer knows the cluster before a fault. */
static void warm_up(rw_kafka_producer_t *kp)
{
    char topic[256], errstr[512] = "";

    rw_kafka_topic(topic, sizeof(topic), &fx.s, "dlq");
    if (rw_produce_sync(kp, topic, "warm-up", "{}", errstr, sizeof(errstr)))
        fail_msg("warm-up: %s", errstr);
}

/* ---- tests ----------------------------------------------------------- */

/*
 * The defect this module fixes: a waiter gives up on row A while the
 * broker is away, row B is published after it comes back, and A's late
 * success report arrives in B's wait. It must land in A's own state (not
 * freed memory, not B's) and mark nothing: A stays for the relay.
 */
static void test_late_report_marks_nothing(void **state)
{
    rw_kafka_producer_t *kp =
        producer(BASE_PROPS "message.timeout.ms=20000,log_level=0");
    rw_delivery_t *d = NULL;
    char topic[256], errstr[512] = "", ids[256];
    char want[64];
    long long a, b, published = 0;
    double late = late_reports();

    (void)state;
    warm_up(kp);
    a = add_row("batches", "run-a:0", "{\"row\":\"a\"}");
    b = add_row("batches", "run-b:0", "{\"row\":\"b\"}");

    broker_signal(SIGUSR1, "event=broker_down");
    d = rw_delivery_new(a);
    assert_non_null(d);
    rw_kafka_topic(topic, sizeof(topic), &fx.s, "batches");
    assert_int_equal(
        rw_kafka_produce(kp, topic, "run-a:0", 7, "{\"row\":\"a\"}", 11, NULL,
                         0, rw_delivery_hold(d), errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(rw_delivery_wait(kp, &d, 1, 300, errstr, sizeof(errstr)),
                     RW_ERR_KAFKA_TRANSIENT);
    rw_delivery_release(d); /* the waiter gives up; A's message lives on */
    d = NULL;

    broker_signal(SIGUSR2, "event=broker_up");
    assert_int_equal(rw_outbox_publish(fx.pg, kp, &fx.s, b, "batches",
                                       "run-b:0", "{\"row\":\"b\"}", errstr,
                                       sizeof(errstr)),
                     RW_OK);
    /* A was queued first, so its report came in B's wait, late */
    assert_true(late_reports() == late + 1);
    assert_int_equal(topic_messages("batches"), 2);
    published_ids(ids, sizeof(ids));
    snprintf(want, sizeof(want), "%lld", b);
    assert_string_equal(ids, want);

    /* A is relayed again: a duplicate in Kafka, never a lost row */
    assert_int_equal(rw_outbox_relay(fx.pg, kp, &fx.s, 100, 0, &published,
                                     errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(published, 1);
    assert_int_equal(count_rows("published_at IS NULL"), 0);
    rw_kafka_producer_destroy(kp);
}

/* Broker away for longer than the message timeout: nothing is marked. */
static void test_relay_while_broker_away(void **state)
{
    rw_kafka_producer_t *kp =
        producer(BASE_PROPS "message.timeout.ms=1500,log_level=0");
    char errstr[512] = "";
    long long published = -1, start;

    (void)state;
    warm_up(kp);
    for (int i = 0; i < 5; i++) {
        char key[32];
        snprintf(key, sizeof(key), "run-away:%d", i);
        add_row("poll", key, "{}");
    }
    broker_signal(SIGUSR1, "event=broker_down");
    start = rw_itest_now_ms();
    assert_int_equal(rw_outbox_relay(fx.pg, kp, &fx.s, 100, 0, &published,
                                     errstr, sizeof(errstr)),
                     RW_ERR_KAFKA_TRANSIENT);
    /* the relay waited for the timeout reports, not for a guess */
    assert_true(rw_itest_now_ms() - start <
                rw_kafka_producer_delivery_wait_ms(kp));
    assert_int_equal(published, 0);
    assert_int_equal(count_rows("published_at IS NULL"), 5);

    broker_signal(SIGUSR2, "event=broker_up");
    if (rw_outbox_relay(fx.pg, kp, &fx.s, 2, 0, &published, errstr,
                        sizeof(errstr)))
        fail_msg("relay after the broker came back: %s", errstr);
    assert_int_equal(published, 5);
    assert_int_equal(count_rows("published_at IS NULL"), 0);
    rw_kafka_producer_destroy(kp);
}

/*
 * A row Kafka refuses (larger than message.max.bytes) stops the round:
 * the rows delivered before it are marked, it and the rows after it stay,
 * and Kafka holds exactly the marked ones.
 */
static void test_relay_marks_exactly_delivered(void **state)
{
    rw_kafka_producer_t *kp =
        producer(BASE_PROPS "message.max.bytes=2000,log_level=0");
    char errstr[512] = "", ids[256], want[128];
    char *big = malloc(5001);
    long long id[4], published = -1, before;

    (void)state;
    assert_non_null(big);
    memset(big, 'x', 5000);
    big[5000] = '\0';
    before = topic_messages("poll");
    id[0] = add_row("poll", "run-x:0", "{\"n\":0}");
    id[1] = add_row("poll", "run-x:1", "{\"n\":1}");
    id[2] = add_row("poll", "run-x:2", big);
    id[3] = add_row("poll", "run-x:3", "{\"n\":3}");
    /* published long ago: the relay must leave it alone */
    sql("UPDATE outbox SET published_at = now() - interval '1 hour'"
        " WHERE msg_key = 'run-x:3'",
        0, NULL, NULL);

    assert_int_not_equal(rw_outbox_relay(fx.pg, kp, &fx.s, 100, 0, &published,
                                         errstr, sizeof(errstr)),
                         RW_OK);
    assert_int_equal(published, 2);
    published_ids(ids, sizeof(ids));
    snprintf(want, sizeof(want), "%lld,%lld,%lld", id[0], id[1], id[3]);
    assert_string_equal(ids, want);
    assert_int_equal(topic_messages("poll") - before, 2);
    assert_int_equal(count_rows("published_at < now() - interval '30 min'"), 1);
    free(big);
    rw_kafka_producer_destroy(kp);
}

static void test_prune_published_past_retention(void **state)
{
    char errstr[512] = "";
    const char *p[1];
    long long n = -1;
    double before = rw_metrics_value(rw_metrics_counter(
        "rollwave_outbox_pruned_total",
        "published outbox rows deleted after the retention", NULL));

    (void)state;
    /* 2500 old published rows: three statements of at most 1000 */
    p[0] = "2500";
    sql("INSERT INTO outbox (topic, msg_key, payload, created_at,"
        "    published_at)"
        " SELECT 'poll', 'old:' || g, '{}', now() - interval '10 days',"
        "        now() - interval '10 days' + g * interval '1 second'"
        " FROM generate_series(1, $1::int) g",
        1, p, NULL);
    /* recent published rows and old unpublished ones stay */
    sql("INSERT INTO outbox (topic, msg_key, payload, created_at,"
        "    published_at)"
        " SELECT 'poll', 'recent:' || g, '{}', now() - interval '1 day',"
        "        now() - interval '1 day'"
        " FROM generate_series(1, 5) g",
        0, NULL, NULL);
    sql("INSERT INTO outbox (topic, msg_key, payload, created_at)"
        " SELECT 'batches', 'stuck:' || g, '{}', now() - interval '30 days'"
        " FROM generate_series(1, 3) g",
        0, NULL, NULL);

    assert_int_equal(rw_outbox_prune(fx.pg, 7 * 86400, RW_OUTBOX_PRUNE_BATCH,
                                     &n, errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(n, 2500);
    assert_int_equal(count_rows("msg_key LIKE 'old:%'"), 0);
    assert_int_equal(count_rows("msg_key LIKE 'recent:%'"), 5);
    assert_int_equal(count_rows("msg_key LIKE 'stuck:%'"), 3);
    assert_true(rw_metrics_value(rw_metrics_counter(
                    "rollwave_outbox_pruned_total",
                    "published outbox rows deleted after the retention",
                    NULL)) == before + 2500);

    /* a batch smaller than the backlog still empties it */
    assert_int_equal(
        rw_outbox_prune(fx.pg, 3600, 2, &n, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(n, 5);
    assert_int_equal(count_rows("true"), 3);
    assert_int_equal(
        rw_outbox_prune(fx.pg, 3600, 2, &n, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(n, 0);
    assert_int_equal(
        rw_outbox_prune(fx.pg, 3600, 0, &n, errstr, sizeof(errstr)),
        RW_ERR_INVALID_ARG);
}

/* The batch statement is served by the partial index, not a table scan. */
static void test_prune_uses_index(void **state)
{
    PGresult *res = NULL;
    bool found = false;

    (void)state;
    sql("SET enable_seqscan = off", 0, NULL, NULL);
    sql("EXPLAIN SELECT id FROM outbox WHERE published_at IS NOT NULL"
        " AND published_at < now() - make_interval(secs => 60::double "
        "precision) ORDER BY published_at LIMIT 1000",
        0, NULL, &res);
    /* EXPLAIN answers one row per plan line */
    for (int i = 0; i < PQntuples(res) && !found; i++)
        found = strstr(PQgetvalue(res, i, 0), "outbox_published_idx") != NULL;
    assert_true(found);
    PQclear(res);
    sql("RESET enable_seqscan", 0, NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_late_report_marks_nothing, clean),
        cmocka_unit_test_setup(test_relay_while_broker_away, clean),
        cmocka_unit_test_setup(test_relay_marks_exactly_delivered, clean),
        cmocka_unit_test_setup(test_prune_published_past_retention, clean),
        cmocka_unit_test_setup(test_prune_uses_index, clean),
    };

    rw_log_set_level(RW_LOG_OFF);
    return cmocka_run_group_tests(tests, setup, teardown);
}
