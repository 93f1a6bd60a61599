/*
 * test_kafka_client: rw_kafka against a real Kafka protocol endpoint: a
 * rollwave-devbroker this test starts itself (own topics, own lifetime), so
 * it needs no shared stack beyond RW_BIN_DIR. Covers delivery reports,
 * group consumption, resuming exactly after committed offsets, dead letters
 * with their headers, pause/seek/resume, watermarks, committed offsets,
 * partition counts, and what rollwavectl uses: a reader outside any group,
 * requeueing dead letters, offsets by time and the group probe (alone, and
 * against a live member). It does not test broker failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "rw_itest.h"
#include "rw_kafka.h"
#include "rw_log.h"
#include "rw_metrics.h"
#include "rw_settings.h"

#define N_MSGS          40
#define MAIN_PARTITIONS 3
#define WAIT_MS         30000

typedef struct fixture {
    pid_t broker;
    char dir[256];
    char bootstrap_file[300];
    char bootstrap[256];
    char prefix[64];
    char main_topic[128];  /* MAIN_PARTITIONS partitions */
    char pause_topic[128]; /* 1 partition */
    char dlq_topic[128];
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

static int start_broker(void **state)
{
    char bin[512], main_spec[160], pause_spec[160];
    long long deadline;
    pid_t parent;

    (void)state;
    memset(&fx, 0, sizeof(fx));
    rw_itest_bin(bin, sizeof(bin), "rollwave-devbroker");
    snprintf(fx.dir, sizeof(fx.dir), "%s/rw_kafka_itest_XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(fx.dir)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    snprintf(fx.bootstrap_file, sizeof(fx.bootstrap_file), "%s/bootstrap",
             fx.dir);
    rw_itest_unique(fx.prefix, sizeof(fx.prefix) - 1, "itest");
    strcat(fx.prefix, ".");
    snprintf(fx.main_topic, sizeof(fx.main_topic), "%smain", fx.prefix);
    snprintf(fx.pause_topic, sizeof(fx.pause_topic), "%spause", fx.prefix);
    snprintf(fx.dlq_topic, sizeof(fx.dlq_topic), "%sdlq", fx.prefix);
    snprintf(main_spec, sizeof(main_spec), "%s:%d", fx.main_topic,
             MAIN_PARTITIONS);
    snprintf(pause_spec, sizeof(pause_spec), "%s:1", fx.pause_topic);

    parent = getpid();
    fx.broker = fork();
    if (fx.broker < 0)
        return -1;
    if (fx.broker == 0) {
        /* A test that crashes must not leave its broker behind. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        char *argv[] = {bin,
                        "--topic-prefix",
                        fx.prefix,
                        "--bootstrap-file",
                        fx.bootstrap_file,
                        "--topic",
                        main_spec,
                        "--topic",
                        pause_spec,
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
    return 0;
}

static int stop_broker(void **state)
{
    (void)state;
    if (fx.broker > 0) {
        kill(fx.broker, SIGTERM);
        waitpid(fx.broker, NULL, 0);
    }
    unlink(fx.bootstrap_file);
    rmdir(fx.dir);
    return 0;
}

/* ---- delivery reports ---------------------------------------------------- */

typedef struct delivery {
    int reported;
    rw_err_t result;
    int32_t partition;
    int64_t offset;
} delivery_t;

typedef struct dr_state {
    int calls;
    int failures;
} dr_state_t;

static void on_delivery(void *dr_opaque, void *msg_opaque, rw_err_t result,
                        int32_t partition, int64_t offset, const char *errmsg)
{
    dr_state_t *st = dr_opaque;
    delivery_t *d = msg_opaque;

    st->calls++;
    if (result) {
        st->failures++;
        fprintf(stderr, "delivery failed: %s\n", errmsg);
    }
    if (d) {
        d->reported++;
        d->result = result;
        d->partition = partition;
        d->offset = offset;
    }
}

static rw_kafka_producer_t *new_producer(dr_state_t *st)
{
    rw_kafka_producer_t *kp = NULL;
    char errstr[512] = "";

    if (rw_kafka_producer_new(&kp, &fx.s, on_delivery, st, errstr,
                              sizeof(errstr)))
        fail_msg("producer: %s", errstr);
    return kp;
}

static rw_kafka_consumer_t *
new_consumer_props(const char *group, const char *topic, const char *props)
{
    rw_kafka_consumer_t *kc = NULL;
    const char *topics[] = {topic};
    rw_settings_t s = fx.s;
    char errstr[512] = "";

    s.kafka_properties = (char *)props;
    if (rw_kafka_consumer_new(&kc, &s, group, topics, topic ? 1 : 0, errstr,
                              sizeof(errstr)))
        fail_msg("consumer: %s", errstr);
    return kc;
}

static rw_kafka_consumer_t *new_consumer(const char *group, const char *topic)
{
    return new_consumer_props(group, topic, "");
}

/* Next message within ms, or NULL. */
static rw_kafka_msg_t *poll_one(rw_kafka_consumer_t *kc, int ms)
{
    long long deadline = rw_itest_now_ms() + ms;
    rw_kafka_msg_t *msg = NULL;
    char errstr[512] = "";

    do {
        if (rw_kafka_consumer_poll(kc, 200, &msg, errstr, sizeof(errstr)))
            fail_msg("consumer poll: %s", errstr);
        if (msg)
            return msg;
    } while (rw_itest_now_ms() < deadline);
    return NULL;
}

static int msg_index(const rw_kafka_msg_t *msg)
{
    size_t len;
    const char *key = rw_kafka_msg_key(msg, &len);
    char buf[32];

    assert_non_null(key);
    assert_true(len > 1 && len < sizeof(buf));
    memcpy(buf, key, len);
    buf[len] = '\0';
    assert_int_equal(buf[0], 'k');
    return atoi(buf + 1);
}

static void check_body(const rw_kafka_msg_t *msg, int i)
{
    char want[32];
    size_t len;
    const void *payload = rw_kafka_msg_payload(msg, &len);
    rw_kafka_header_t h;

    snprintf(want, sizeof(want), "payload-%d", i);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(payload, want, len);
    assert_true(rw_kafka_msg_header(msg, "seq", &h));
    snprintf(want, sizeof(want), "%d", i);
    assert_int_equal(h.len, strlen(want));
    assert_memory_equal(h.value, want, h.len);
    assert_true(rw_kafka_msg_timestamp(msg) > 1600000000000LL);
}

/*
 * Produce keyed messages, consume them in a group, commit the first half of
 * every partition, and check a second consumer in the same group starts
 * exactly there; offsets and watermarks agree along the way.
 */
static void test_produce_consume_commit_resume(void **state)
{
    static delivery_t dl[N_MSGS];
    dr_state_t st = {0, 0};
    rw_kafka_producer_t *kp;
    rw_kafka_consumer_t *kc, *q;
    int per_part[MAIN_PARTITIONS] = {0};
    int half[MAIN_PARTITIONS];
    int seen[N_MSGS] = {0};
    int64_t committed[MAIN_PARTITIONS];
    int got = 0, expect_rest = 0, count = 0;
    char group[64], errstr[512] = "";

    (void)state;
    rw_itest_unique(group, sizeof(group), "group");
    memset(dl, 0, sizeof(dl));
    kp = new_producer(&st);
    for (int i = 0; i < N_MSGS; i++) {
        char key[16], payload[32], seq[16];
        rw_kafka_header_t h = {"seq", seq, 0};

        snprintf(key, sizeof(key), "k%d", i);
        snprintf(payload, sizeof(payload), "payload-%d", i);
        snprintf(seq, sizeof(seq), "%d", i);
        h.len = strlen(seq);
        if (rw_kafka_produce(kp, fx.main_topic, key, strlen(key), payload,
                             strlen(payload), &h, 1, &dl[i], errstr,
                             sizeof(errstr)))
            fail_msg("produce: %s", errstr);
    }
    if (rw_kafka_producer_flush(kp, WAIT_MS, errstr, sizeof(errstr)))
        fail_msg("flush: %s", errstr);
    assert_int_equal(st.calls, N_MSGS);
    assert_int_equal(st.failures, 0);
    for (int i = 0; i < N_MSGS; i++) {
        assert_int_equal(dl[i].reported, 1);
        assert_int_equal(dl[i].result, RW_OK);
        assert_in_range(dl[i].partition, 0, MAIN_PARTITIONS - 1);
        /* fresh topic: offsets count up from 0 in produce order */
        assert_int_equal(dl[i].offset, per_part[dl[i].partition]);
        per_part[dl[i].partition]++;
    }
    rw_kafka_producer_destroy(kp);

    for (int p = 0; p < MAIN_PARTITIONS; p++) {
        half[p] = per_part[p] / 2;
        expect_rest += per_part[p] - half[p];
    }

    kc = new_consumer(group, fx.main_topic);
    while (got < N_MSGS) {
        rw_kafka_msg_t *msg = poll_one(kc, WAIT_MS);
        int i, p;

        if (!msg)
            fail_msg("only %d of %d messages consumed", got, N_MSGS);
        assert_string_equal(rw_kafka_msg_topic(msg), fx.main_topic);
        i = msg_index(msg);
        assert_in_range(i, 0, N_MSGS - 1);
        assert_int_equal(seen[i], 0);
        seen[i] = 1;
        p = rw_kafka_msg_partition(msg);
        assert_int_equal(p, dl[i].partition);
        assert_int_equal(rw_kafka_msg_offset(msg), dl[i].offset);
        check_body(msg, i);
        if (rw_kafka_msg_offset(msg) < half[p] &&
            rw_kafka_consumer_store(kc, msg, errstr, sizeof(errstr)))
            fail_msg("store: %s", errstr);
        rw_kafka_msg_destroy(msg);
        got++;
    }
    if (rw_kafka_consumer_commit(kc, 1, errstr, sizeof(errstr)))
        fail_msg("commit: %s", errstr);
    if (rw_kafka_committed(kc, fx.main_topic, committed, MAIN_PARTITIONS, 10000,
                           errstr, sizeof(errstr)))
        fail_msg("committed: %s", errstr);
    for (int p = 0; p < MAIN_PARTITIONS; p++)
        assert_int_equal(committed[p],
                         half[p] ? half[p] : RW_KAFKA_OFFSET_NONE);
    rw_kafka_consumer_close(kc);
    rw_kafka_consumer_destroy(kc);

    /* a handle that never joins the group reads the same numbers */
    q = new_consumer(group, NULL);
    if (rw_kafka_partition_count(q, fx.main_topic, &count, 10000, errstr,
                                 sizeof(errstr)))
        fail_msg("partition count: %s", errstr);
    assert_int_equal(count, MAIN_PARTITIONS);
    for (int p = 0; p < MAIN_PARTITIONS; p++) {
        int64_t low, high;
        if (rw_kafka_watermarks(q, fx.main_topic, p, &low, &high, 10000, errstr,
                                sizeof(errstr)))
            fail_msg("watermarks: %s", errstr);
        assert_int_equal(low, 0);
        assert_int_equal(high, per_part[p]);
    }
    memset(committed, 0, sizeof(committed));
    if (rw_kafka_committed(q, fx.main_topic, committed, MAIN_PARTITIONS, 10000,
                           errstr, sizeof(errstr)))
        fail_msg("committed: %s", errstr);
    for (int p = 0; p < MAIN_PARTITIONS; p++)
        assert_int_equal(committed[p],
                         half[p] ? half[p] : RW_KAFKA_OFFSET_NONE);
    rw_kafka_consumer_destroy(q);

    /* the group resumes exactly after what was committed */
    kc = new_consumer(group, fx.main_topic);
    {
        int64_t next[MAIN_PARTITIONS];
        for (int p = 0; p < MAIN_PARTITIONS; p++)
            next[p] = half[p];
        for (got = 0; got < expect_rest; got++) {
            rw_kafka_msg_t *msg = poll_one(kc, WAIT_MS);
            int p;
            if (!msg)
                fail_msg("resumed consumer got %d of %d messages", got,
                         expect_rest);
            p = rw_kafka_msg_partition(msg);
            assert_int_equal(rw_kafka_msg_offset(msg), next[p]);
            next[p]++;
            check_body(msg, msg_index(msg));
            rw_kafka_msg_destroy(msg);
        }
        /* and nothing more than the uncommitted rest */
        assert_null(poll_one(kc, 2000));
        for (int p = 0; p < MAIN_PARTITIONS; p++)
            assert_int_equal(next[p], per_part[p]);
    }
    rw_kafka_consumer_destroy(kc);
}

/*
 * The devbroker's own topics have the partition counts it was asked for.
 * (A lookup of an unknown name cannot be tested here: the mock cluster
 * creates every topic a Metadata request names.)
 */
static void test_partition_counts(void **state)
{
    static const struct {
        const char *name;
        int partitions;
    } want[] = {{"batches", 6}, {"poll", 6}, {"dlq", 1}};
    rw_kafka_consumer_t *q;
    char topic[128], group[64], errstr[512] = "";

    (void)state;
    rw_itest_unique(group, sizeof(group), "group");
    q = new_consumer(group, NULL);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        int count = -1;
        rw_kafka_topic(topic, sizeof(topic), &fx.s, want[i].name);
        if (rw_kafka_partition_count(q, topic, &count, 10000, errstr,
                                     sizeof(errstr)))
            fail_msg("partition count of %s: %s", topic, errstr);
        assert_int_equal(count, want[i].partitions);
    }
    rw_kafka_consumer_destroy(q);
}

/* Offsets read again after the second member joined, per partition. */
typedef struct reread {
    unsigned char seen[MAIN_PARTITIONS][N_MSGS];
    int count;
} reread_t;

static void drain_into(rw_kafka_consumer_t *kc, reread_t *rr)
{
    rw_kafka_msg_t *msg = poll_one(kc, 100);

    if (!msg)
        return;
    assert_in_range(rw_kafka_msg_offset(msg), 0, N_MSGS - 1);
    rr->seen[rw_kafka_msg_partition(msg)][rw_kafka_msg_offset(msg)] = 1;
    rr->count++;
    rw_kafka_msg_destroy(msg);
}

/* Every partition is committed to its end or read again from its
 * committed offset (or the start) to its end: nothing is lost. */
static int nothing_lost(const int64_t *committed, const int64_t *high,
                        const reread_t *rr)
{
    for (int p = 0; p < MAIN_PARTITIONS; p++) {
        int64_t from = committed[p] < 0 ? 0 : committed[p];
        for (int64_t o = from; o < high[p]; o++)
            if (!rr->seen[p][o])
                return 0;
    }
    return 1;
}

/*
 * A consumer that stored offsets but never committed them hands partitions
 * over when a second member joins. The revoke callback commits what it
 * stored. With the cooperative protocol that commit succeeds and the group
 * re-reads nothing. With the eager protocol the mock cluster refuses
 * commits while the group prepares a rebalance (REBALANCE_IN_PROGRESS; a
 * real Kafka accepts them), so there only "nothing is lost" is checked:
 * what was not committed is read again.
 */
static void rebalance_with_stored_offsets(const char *strategy, int strict)
{
    static reread_t rr;
    char props[128], group[64], errstr[512] = "";
    rw_kafka_consumer_t *a, *b;
    int64_t high[MAIN_PARTITIONS], committed[MAIN_PARTITIONS];
    int total = 0, got = 0, settled = 0;
    long long deadline;

    memset(&rr, 0, sizeof(rr));
    snprintf(props, sizeof(props), "partition.assignment.strategy=%s",
             strategy);
    rw_itest_unique(group, sizeof(group), "group");
    a = new_consumer_props(group, fx.main_topic, props);
    for (int p = 0; p < MAIN_PARTITIONS; p++) {
        int64_t low;
        if (rw_kafka_watermarks(a, fx.main_topic, p, &low, &high[p], 10000,
                                errstr, sizeof(errstr)))
            fail_msg("watermarks: %s", errstr);
        assert_int_equal(low, 0);
        assert_true(high[p] <= N_MSGS);
        total += (int)high[p];
    }
    assert_true(total > 0);
    while (got < total) {
        rw_kafka_msg_t *msg = poll_one(a, WAIT_MS);
        if (!msg)
            fail_msg("first member got %d of %d messages", got, total);
        if (rw_kafka_consumer_store(a, msg, errstr, sizeof(errstr)))
            fail_msg("store: %s", errstr);
        rw_kafka_msg_destroy(msg);
        got++;
    }

    b = new_consumer_props(group, fx.main_topic, props);
    deadline = rw_itest_now_ms() + 60000;
    while (settled < 10 && rw_itest_now_ms() < deadline) {
        int before = rr.count;
        drain_into(a, &rr);
        drain_into(b, &rr);
        if (rw_kafka_committed(a, fx.main_topic, committed, MAIN_PARTITIONS,
                               5000, errstr, sizeof(errstr)))
            continue; /* the group may be mid-rebalance */
        /* settled: nothing lost and nothing new for ten rounds */
        if (nothing_lost(committed, high, &rr) && rr.count == before &&
            (!strict || rr.count == 0))
            settled++;
        else
            settled = 0;
        if (strict && rr.count)
            break;
    }
    if (strict) {
        assert_int_equal(rr.count, 0);
        for (int p = 0; p < MAIN_PARTITIONS; p++)
            assert_int_equal(committed[p], high[p]);
    }
    if (settled < 10)
        fail_msg("%s: messages neither committed nor read again", strategy);
    rw_kafka_consumer_destroy(b);
    rw_kafka_consumer_destroy(a);
}

static void test_rebalance_eager_loses_nothing(void **state)
{
    (void)state;
    rebalance_with_stored_offsets("range", 0);
}

static void test_rebalance_cooperative_commits_stored(void **state)
{
    (void)state;
    rebalance_with_stored_offsets("cooperative-sticky", 1);
}

/* Partitions of the main topic a consumer was told it lost. */
typedef struct revokes {
    int seen[MAIN_PARTITIONS];
    int other;
} revokes_t;

static void note_revoke(void *opaque, const char *topic, int32_t partition)
{
    revokes_t *r = opaque;

    if (strcmp(topic, fx.main_topic) == 0 && partition >= 0 &&
        partition < MAIN_PARTITIONS)
        r->seen[partition]++;
    else
        r->other++;
}

/* What the last rebalance in this process left its consumer owning. */
static int assigned_gauge(void)
{
    return (int)rw_metrics_value(
        rw_metrics_gauge("rollwave_consumer_assigned_partitions",
                         "partitions this consumer owns in its group", NULL));
}

/*
 * A partition paused for a held message, taken away by a rebalance and
 * given back, is read again: the revoke tells the holder (on_revoke) and
 * resumes it on its way out, since nothing pauses or resumes a partition
 * as it is assigned (librdkafka can drop the fetch start of a partition
 * paused or resumed meanwhile). Nothing was committed, so the held message
 * comes again.
 */
static void test_revoke_resumes_paused(void **state)
{
    static revokes_t r;
    char group[64], errstr[512] = "";
    rw_kafka_consumer_t *a, *b;
    rw_kafka_msg_t *msg;
    int32_t p;
    int64_t off;
    long long deadline;
    int again = 0;

    (void)state;
    memset(&r, 0, sizeof(r));
    {
        /* something to read, whatever ran before */
        dr_state_t st;
        rw_kafka_producer_t *kp;
        memset(&st, 0, sizeof(st));
        kp = new_producer(&st);
        for (int i = 0; i < 6; i++) {
            char key[16];
            snprintf(key, sizeof(key), "r%d", i);
            if (rw_kafka_produce(kp, fx.main_topic, key, strlen(key), "x", 1,
                                 NULL, 0, NULL, errstr, sizeof(errstr)))
                fail_msg("produce: %s", errstr);
        }
        if (rw_kafka_producer_flush(kp, WAIT_MS, errstr, sizeof(errstr)))
            fail_msg("flush: %s", errstr);
        assert_int_equal(st.failures, 0);
        rw_kafka_producer_destroy(kp);
    }
    rw_itest_unique(group, sizeof(group), "group");
    a = new_consumer(group, fx.main_topic);
    rw_kafka_consumer_on_revoke(a, note_revoke, &r);
    msg = poll_one(a, WAIT_MS);
    assert_non_null(msg);
    p = rw_kafka_msg_partition(msg);
    off = rw_kafka_msg_offset(msg);
    rw_kafka_msg_destroy(msg);
    /* the sole member owns every partition, and says so */
    assert_int_equal(assigned_gauge(), MAIN_PARTITIONS);
    if (rw_kafka_consumer_pause(a, fx.main_topic, p, errstr, sizeof(errstr)))
        fail_msg("pause: %s", errstr);

    /* a second member: the eager rebalance takes every partition away */
    b = new_consumer(group, fx.main_topic);
    deadline = rw_itest_now_ms() + 60000;
    while (r.seen[p] == 0) {
        if (rw_itest_now_ms() > deadline)
            fail_msg("the first member was never told it lost [%d]", (int)p);
        rw_kafka_msg_destroy(poll_one(a, 100));
        rw_kafka_msg_destroy(poll_one(b, 100));
    }
    assert_int_equal(r.other, 0);
    /* and when it leaves, they all come back: the paused one is read */
    rw_kafka_consumer_destroy(b);
    deadline = rw_itest_now_ms() + 60000;
    while (!again) {
        if (rw_itest_now_ms() > deadline)
            fail_msg("[%d] offset %lld, paused before the rebalance, was "
                     "not read again after it came back",
                     (int)p, (long long)off);
        msg = poll_one(a, 100);
        again = msg && rw_kafka_msg_partition(msg) == p &&
                rw_kafka_msg_offset(msg) == off;
        rw_kafka_msg_destroy(msg);
    }
    /* a comes to own every partition again (the devbroker keeps b, which
     * closed before it was given any, until its session runs out, and may
     * give a only some of them meanwhile), and its gauge says so */
    deadline = rw_itest_now_ms() + 60000;
    while (assigned_gauge() != MAIN_PARTITIONS) {
        if (rw_itest_now_ms() > deadline)
            fail_msg("the gauge says %d partitions, the sole member owns %d",
                     assigned_gauge(), MAIN_PARTITIONS);
        rw_kafka_msg_destroy(poll_one(a, 100));
    }
    rw_kafka_consumer_destroy(a);
    /* and a's own close gives them all up */
    assert_int_equal(assigned_gauge(), 0);
}

/* A dead letter keeps key, payload and headers, and says where it was. */
static void test_dead_letter(void **state)
{
    static const char payload[] = {'{', 'b', 'a', 'd', 0, '\xff', '}'};
    dr_state_t st = {0, 0};
    delivery_t orig_d = {0, RW_OK, 0, 0}, dl_d = {0, RW_OK, 0, 0};
    rw_kafka_header_t h = {"trace", "abc", 3};
    rw_kafka_producer_t *kp;
    rw_kafka_consumer_t *kc;
    rw_kafka_msg_t *orig, *dead;
    const void *v;
    size_t len;
    char group[64], want[32], errstr[512] = "";
    rw_kafka_header_t got;

    (void)state;
    kp = new_producer(&st);
    if (rw_kafka_produce(kp, fx.pause_topic, "run-1:3", 7, payload,
                         sizeof(payload), &h, 1, &orig_d, errstr,
                         sizeof(errstr)) ||
        rw_kafka_producer_flush(kp, WAIT_MS, errstr, sizeof(errstr)))
        fail_msg("produce: %s", errstr);
    assert_int_equal(orig_d.result, RW_OK);

    rw_itest_unique(group, sizeof(group), "group");
    kc = new_consumer(group, fx.pause_topic);
    orig = poll_one(kc, WAIT_MS);
    assert_non_null(orig);
    while (rw_kafka_msg_offset(orig) != orig_d.offset) {
        rw_kafka_msg_destroy(orig);
        orig = poll_one(kc, WAIT_MS);
        assert_non_null(orig);
    }
    if (rw_kafka_dead_letter(kp, fx.dlq_topic, orig, "invalid json: \"x\"",
                             &dl_d, errstr, sizeof(errstr)) ||
        rw_kafka_producer_flush(kp, WAIT_MS, errstr, sizeof(errstr)))
        fail_msg("dead letter: %s", errstr);
    assert_int_equal(dl_d.reported, 1);
    assert_int_equal(dl_d.result, RW_OK);
    rw_kafka_msg_destroy(orig);
    rw_kafka_consumer_destroy(kc);
    rw_kafka_producer_destroy(kp);

    rw_itest_unique(group, sizeof(group), "group");
    kc = new_consumer(group, fx.dlq_topic);
    dead = poll_one(kc, WAIT_MS);
    assert_non_null(dead);
    assert_string_equal(rw_kafka_msg_topic(dead), fx.dlq_topic);
    assert_int_equal(rw_kafka_msg_offset(dead), dl_d.offset);
    v = rw_kafka_msg_key(dead, &len);
    assert_int_equal(len, 7);
    assert_memory_equal(v, "run-1:3", 7);
    v = rw_kafka_msg_payload(dead, &len);
    assert_int_equal(len, sizeof(payload));
    assert_memory_equal(v, payload, len);

    assert_true(rw_kafka_msg_header(dead, "trace", &got));
    assert_int_equal(got.len, 3);
    assert_memory_equal(got.value, "abc", 3);
    assert_true(rw_kafka_msg_header(dead, RW_KAFKA_HDR_REASON, &got));
    assert_int_equal(got.len, strlen("invalid json: \"x\""));
    assert_memory_equal(got.value, "invalid json: \"x\"", got.len);
    assert_true(rw_kafka_msg_header(dead, RW_KAFKA_HDR_SOURCE_TOPIC, &got));
    assert_int_equal(got.len, strlen(fx.pause_topic));
    assert_memory_equal(got.value, fx.pause_topic, got.len);
    assert_true(rw_kafka_msg_header(dead, RW_KAFKA_HDR_SOURCE_PARTITION, &got));
    assert_int_equal(got.len, 1);
    assert_memory_equal(got.value, "0", 1);
    assert_true(rw_kafka_msg_header(dead, RW_KAFKA_HDR_SOURCE_OFFSET, &got));
    snprintf(want, sizeof(want), "%lld", (long long)orig_d.offset);
    assert_int_equal(got.len, strlen(want));
    assert_memory_equal(got.value, want, got.len);
    assert_int_equal(rw_kafka_msg_header_count(dead), 5);
    rw_kafka_msg_destroy(dead);
    rw_kafka_consumer_destroy(kc);
}

/*
 * The poller's pattern: a message that is not due yet is put back with
 * seek, its partition paused (nothing arrives), then resumed (it arrives
 * again, followed by the rest).
 */
static void test_pause_seek_resume(void **state)
{
    dr_state_t st = {0, 0};
    delivery_t d[3];
    rw_kafka_producer_t *kp;
    rw_kafka_consumer_t *kc;
    rw_kafka_msg_t *msg;
    char group[64], errstr[512] = "";
    int64_t first;

    (void)state;
    memset(d, 0, sizeof(d));
    kp = new_producer(&st);
    for (int i = 0; i < 3; i++) {
        char key[16], payload[32], seq[16];
        rw_kafka_header_t h = {"seq", seq, 0};
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(payload, sizeof(payload), "payload-%d", i);
        snprintf(seq, sizeof(seq), "%d", i);
        h.len = strlen(seq);
        if (rw_kafka_produce(kp, fx.pause_topic, key, strlen(key), payload,
                             strlen(payload), &h, 1, &d[i], errstr,
                             sizeof(errstr)))
            fail_msg("produce: %s", errstr);
    }
    if (rw_kafka_producer_flush(kp, WAIT_MS, errstr, sizeof(errstr)))
        fail_msg("flush: %s", errstr);
    rw_kafka_producer_destroy(kp);
    first = d[0].offset;
    assert_int_equal(d[1].offset, first + 1);
    assert_int_equal(d[2].offset, first + 2);

    rw_itest_unique(group, sizeof(group), "group");
    /* Start the group past what earlier tests left in this topic, the way
     * a replay positions a group before its consumers start. */
    {
        int64_t offsets[1] = {first}, check[1] = {-2};
        rw_kafka_consumer_t *q = new_consumer(group, NULL);
        if (rw_kafka_consumer_commit_offsets(q, fx.pause_topic, offsets, 1,
                                             errstr, sizeof(errstr)) ||
            rw_kafka_committed(q, fx.pause_topic, check, 1, 10000, errstr,
                               sizeof(errstr)))
            fail_msg("commit offsets: %s", errstr);
        assert_int_equal(check[0], first);
        rw_kafka_consumer_destroy(q);
    }
    kc = new_consumer(group, fx.pause_topic);
    msg = poll_one(kc, WAIT_MS);
    assert_non_null(msg);
    assert_int_equal(rw_kafka_msg_offset(msg), first);
    check_body(msg, 0);
    rw_kafka_msg_destroy(msg);

    if (rw_kafka_consumer_pause(kc, fx.pause_topic, 0, errstr,
                                sizeof(errstr)) ||
        rw_kafka_consumer_seek(kc, fx.pause_topic, 0, first, 5000, errstr,
                               sizeof(errstr)))
        fail_msg("pause/seek: %s", errstr);
    assert_null(poll_one(kc, 3000));

    if (rw_kafka_consumer_resume(kc, fx.pause_topic, 0, errstr, sizeof(errstr)))
        fail_msg("resume: %s", errstr);
    for (int i = 0; i < 3; i++) {
        msg = poll_one(kc, WAIT_MS);
        assert_non_null(msg);
        assert_int_equal(rw_kafka_msg_offset(msg), first + i);
        check_body(msg, i);
        rw_kafka_msg_destroy(msg);
    }
    assert_null(poll_one(kc, 1000));

    /* pausing a partition we do not own is an error, not a crash */
    assert_int_not_equal(
        rw_kafka_consumer_pause(kc, fx.main_topic, 99, errstr, sizeof(errstr)),
        RW_OK);
    rw_kafka_consumer_destroy(kc);
}

/* ---- the CLI's part: reader, requeue, offsets by time, probe ------------ */

/* A reader's next message of topic[partition] from offset, or NULL. */
static rw_kafka_msg_t *read_at(rw_kafka_consumer_t *rd, const char *topic,
                               int32_t partition, int64_t offset)
{
    long long deadline = rw_itest_now_ms() + WAIT_MS;
    rw_kafka_msg_t *msg = NULL;
    char errstr[512] = "";
    bool eof = false;

    if (rw_kafka_reader_assign(rd, topic, partition, offset, errstr,
                               sizeof(errstr)))
        fail_msg("reader assign: %s", errstr);
    while (!msg && rw_itest_now_ms() < deadline)
        if (rw_kafka_reader_poll(rd, 200, &msg, &eof, errstr, sizeof(errstr)))
            fail_msg("reader poll: %s", errstr);
    return msg;
}

/*
 * The dead-letter header rule in both directions: a dead letter keeps the
 * original's own headers, drops a stale rw-* one and gets fresh ones; the
 * requeued message is the original again (key, payload, own headers, no
 * rw-* header). A reader reads both without joining a group and reports
 * the partition's end.
 */
static void test_requeue_keeps_own_headers(void **state)
{
    static const char payload[] = "{\"run\": 7}";
    rw_kafka_header_t hdrs[2] = {{"x-trace", "t1", 2},
                                 {RW_KAFKA_HDR_REASON, "stale", 5}};
    dr_state_t st = {0, 0};
    delivery_t orig_d, dl_d, rq_d;
    rw_kafka_producer_t *kp;
    rw_kafka_consumer_t *rd = NULL;
    rw_kafka_msg_t *orig, *dead, *back, *extra = NULL;
    rw_kafka_header_t h;
    long long deadline;
    const void *v;
    size_t len;
    char buf[64], errstr[512] = "";
    bool eof = false;

    (void)state;
    memset(&orig_d, 0, sizeof(orig_d));
    memset(&dl_d, 0, sizeof(dl_d));
    memset(&rq_d, 0, sizeof(rq_d));
    assert_true(rw_kafka_is_dead_letter_header(RW_KAFKA_HDR_TRUNCATED));
    assert_true(rw_kafka_is_dead_letter_header("rw-anything"));
    assert_false(rw_kafka_is_dead_letter_header("x-trace"));
    assert_false(rw_kafka_is_dead_letter_header("rw"));

    kp = new_producer(&st);
    if (rw_kafka_produce(kp, fx.pause_topic, "run:7", 5, payload,
                         strlen(payload), hdrs, 2, &orig_d, errstr,
                         sizeof(errstr)) ||
        rw_kafka_producer_flush(kp, WAIT_MS, errstr, sizeof(errstr)))
        fail_msg("produce: %s", errstr);
    assert_int_equal(orig_d.result, RW_OK);
    if (rw_kafka_reader_new(&rd, &fx.s, errstr, sizeof(errstr)))
        fail_msg("reader: %s", errstr);
    orig = read_at(rd, fx.pause_topic, 0, orig_d.offset);
    assert_non_null(orig);
    assert_int_equal(rw_kafka_msg_offset(orig), orig_d.offset);
    if (rw_kafka_dead_letter(kp, fx.dlq_topic, orig, "bad run", &dl_d, errstr,
                             sizeof(errstr)) ||
        rw_kafka_producer_flush(kp, WAIT_MS, errstr, sizeof(errstr)))
        fail_msg("dead letter: %s", errstr);
    assert_int_equal(dl_d.result, RW_OK);
    rw_kafka_msg_destroy(orig);

    dead = read_at(rd, fx.dlq_topic, dl_d.partition, dl_d.offset);
    assert_non_null(dead);
    assert_int_equal(rw_kafka_msg_offset(dead), dl_d.offset);
    /* x-trace and four fresh rw-* headers; the stale reason is gone */
    assert_int_equal(rw_kafka_msg_header_count(dead), 5);
    assert_int_equal(
        rw_kafka_msg_header_str(dead, RW_KAFKA_HDR_REASON, buf, sizeof(buf)),
        1);
    assert_string_equal(buf, "bad run");
    assert_int_equal(rw_kafka_msg_header_str(dead, RW_KAFKA_HDR_REASON, buf, 4),
                     1);
    assert_string_equal(buf, "bad");
    assert_int_equal(rw_kafka_msg_header_str(dead, "missing", buf, sizeof(buf)),
                     0);
    assert_string_equal(buf, "");
    /* the dead letter is the last message of the dead-letter topic */
    deadline = rw_itest_now_ms() + WAIT_MS;
    while (!eof && !extra && rw_itest_now_ms() < deadline)
        if (rw_kafka_reader_poll(rd, 200, &extra, &eof, errstr, sizeof(errstr)))
            fail_msg("reader poll: %s", errstr);
    assert_null(extra);
    assert_true(eof);

    if (rw_kafka_requeue(kp, dead, &rq_d, errstr, sizeof(errstr)) ||
        rw_kafka_producer_flush(kp, WAIT_MS, errstr, sizeof(errstr)))
        fail_msg("requeue: %s", errstr);
    assert_int_equal(rq_d.result, RW_OK);
    back = read_at(rd, fx.pause_topic, rq_d.partition, rq_d.offset);
    assert_non_null(back);
    assert_int_equal(rw_kafka_msg_offset(back), rq_d.offset);
    v = rw_kafka_msg_key(back, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(v, "run:7", 5);
    v = rw_kafka_msg_payload(back, &len);
    assert_int_equal(len, strlen(payload));
    assert_memory_equal(v, payload, len);
    assert_int_equal(rw_kafka_msg_header_count(back), 1);
    assert_true(rw_kafka_msg_header_at(back, 0, &h));
    assert_string_equal(h.name, "x-trace");
    assert_int_equal(h.len, 2);
    assert_memory_equal(h.value, "t1", 2);

    /* a message that is not a dead letter has nowhere to go back to */
    assert_int_equal(rw_kafka_requeue(kp, back, NULL, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, RW_KAFKA_HDR_SOURCE_TOPIC));
    rw_kafka_msg_destroy(back);
    rw_kafka_msg_destroy(dead);
    rw_kafka_reader_unassign(rd);
    rw_kafka_consumer_destroy(rd);
    rw_kafka_producer_destroy(kp);
}

/*
 * Offsets by time: nothing in the topic is from the future, so every
 * partition answers "none" or its end, never an offset inside it; and the
 * probe of a group without members gets every partition, and its commit
 * lands.
 */
static void test_offsets_for_time_and_probe(void **state)
{
    int64_t offs[MAIN_PARTITIONS], want[MAIN_PARTITIONS];
    int64_t got[MAIN_PARTITIONS];
    rw_kafka_consumer_t *kc, *member = NULL;
    long long future = (long long)time(NULL) * 1000 + 3600 * 1000;
    char group[64], errstr[512] = "";
    int assigned = -1;

    (void)state;
    rw_itest_unique(group, sizeof(group), "group");
    kc = new_consumer(group, NULL);
    if (rw_kafka_offsets_for_time(kc, fx.main_topic, future, offs,
                                  MAIN_PARTITIONS, 10000, errstr,
                                  sizeof(errstr)))
        fail_msg("offsets for time: %s", errstr);
    for (int p = 0; p < MAIN_PARTITIONS; p++) {
        int64_t low, high;
        if (rw_kafka_watermarks(kc, fx.main_topic, p, &low, &high, 10000,
                                errstr, sizeof(errstr)))
            fail_msg("watermarks: %s", errstr);
        if (offs[p] != RW_KAFKA_OFFSET_NONE)
            assert_int_equal(offs[p], high);
        want[p] = low;
    }

    if (rw_kafka_group_probe(&member, &fx.s, group, fx.main_topic,
                             MAIN_PARTITIONS, &assigned, errstr,
                             sizeof(errstr)))
        fail_msg("probe: %s", errstr);
    assert_non_null(member);
    assert_int_equal(assigned, MAIN_PARTITIONS);
    if (rw_kafka_consumer_commit_offsets(member, fx.main_topic, want,
                                         MAIN_PARTITIONS, errstr,
                                         sizeof(errstr)))
        fail_msg("commit on the probe: %s", errstr);
    rw_kafka_consumer_destroy(member);
    if (rw_kafka_committed(kc, fx.main_topic, got, MAIN_PARTITIONS, 10000,
                           errstr, sizeof(errstr)))
        fail_msg("committed: %s", errstr);
    /* leaving the group committed nothing over ours */
    for (int p = 0; p < MAIN_PARTITIONS; p++)
        assert_int_equal(got[p], want[p]);
    rw_kafka_consumer_destroy(kc);
}

/* A live member of a group, polled from its own thread like a worker's
 * loop, so that it rejoins while the test thread is inside the probe. */
typedef struct live {
    rw_kafka_consumer_t *kc;
    atomic_int stop;
    pthread_t th;
} live_t;

static void *live_loop(void *arg)
{
    live_t *l = arg;

    while (!atomic_load(&l->stop)) {
        rw_kafka_msg_t *msg = NULL;
        char errstr[512];

        /* no cmocka assertions off the test thread: errors only slow it */
        if (rw_kafka_consumer_poll(l->kc, 100, &msg, errstr, sizeof(errstr)))
            rw_itest_sleep_ms(100);
        rw_kafka_msg_destroy(msg);
    }
    return NULL;
}

/*
 * The probe of a group with a live member on the topic answers
 * RW_ERR_CONFLICT naming live members, whichever way it finds out (a share
 * of the partitions, or a join the member's group kept from completing),
 * leaves no member behind and commits nothing.
 */
static void test_probe_refuses_live_member(void **state)
{
    live_t l;
    rw_kafka_consumer_t *member = NULL;
    int64_t got[MAIN_PARTITIONS];
    char group[64], errstr[512] = "";
    int assigned = -2, owned = 0;
    long long deadline, until;
    rw_err_t err;

    (void)state;
    rw_itest_unique(group, sizeof(group), "group");
    memset(&l, 0, sizeof(l));
    l.kc = new_consumer(group, fx.main_topic);
    deadline = rw_itest_now_ms() + WAIT_MS;
    while (owned < MAIN_PARTITIONS && rw_itest_now_ms() < deadline) {
        rw_kafka_msg_destroy(poll_one(l.kc, 100));
        owned = 0;
        for (int p = 0; p < MAIN_PARTITIONS; p++)
            owned += rw_kafka_consumer_owns(l.kc, fx.main_topic, p);
    }
    assert_int_equal(owned, MAIN_PARTITIONS);
    atomic_init(&l.stop, 0);
    assert_int_equal(pthread_create(&l.th, NULL, live_loop, &l), 0);

    err = rw_kafka_group_probe(&member, &fx.s, group, fx.main_topic,
                               MAIN_PARTITIONS, &assigned, errstr,
                               sizeof(errstr));
    if (err != RW_ERR_CONFLICT || !strstr(errstr, "live members"))
        fail_msg("probe with a live member: %s: %s", rw_err_name(err), errstr);
    assert_null(member);
    assert_true(assigned >= -1 && assigned < MAIN_PARTITIONS);

    /* Our leaving rebalances the group: let it settle before the member
     * closes (closing mid-rebalance trips an assertion in librdkafka
     * 2.0), then check that nothing was committed. */
    until = rw_itest_now_ms() + fx.s.kafka_session_timeout_ms + 3000;
    while (rw_itest_now_ms() < until)
        rw_itest_sleep_ms(100);
    atomic_store(&l.stop, 1);
    pthread_join(l.th, NULL);
    if (rw_kafka_committed(l.kc, fx.main_topic, got, MAIN_PARTITIONS, 10000,
                           errstr, sizeof(errstr)))
        fail_msg("committed: %s", errstr);
    for (int p = 0; p < MAIN_PARTITIONS; p++)
        assert_int_equal(got[p], RW_KAFKA_OFFSET_NONE);
    rw_kafka_consumer_destroy(l.kc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_produce_consume_commit_resume),
        cmocka_unit_test(test_partition_counts),
        cmocka_unit_test(test_rebalance_eager_loses_nothing),
        cmocka_unit_test(test_rebalance_cooperative_commits_stored),
        cmocka_unit_test(test_dead_letter),
        cmocka_unit_test(test_revoke_resumes_paused),
        cmocka_unit_test(test_pause_seek_resume),
        cmocka_unit_test(test_requeue_keeps_own_headers),
        cmocka_unit_test(test_offsets_for_time_and_probe),
        cmocka_unit_test(test_probe_refuses_live_member),
    };
    const char *lvl = getenv("ROLLWAVE_LOG_LEVEL");

    rw_log_set_level(lvl && rw_log_level_parse(lvl) >= 0
                         ? (rw_log_level_t)rw_log_level_parse(lvl)
                         : RW_LOG_WARN);
    /* a developer chasing one scenario may name it (cmocka pattern) */
    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, start_broker, stop_broker);
}
