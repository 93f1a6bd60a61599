/*
 * rollwave-devbroker: a development and test Kafka on loopback, hosting
 * librdkafka's mock cluster. It creates the rollwave topics (and any extra
 * --topic) with fixed partition counts, writes the bootstrap string to a file
 * (temp file + rename, so a reader never sees half of it) and serves until
 * SIGTERM/SIGINT. SIGUSR1 takes broker 1 down and SIGUSR2 brings it back,
 * for fault tests.
 *
 * It does not persist anything (data dies with the process) and it is not a
 * Kafka: no Admin API, no DescribeConsumerGroups, no transactions, 3 s group
 * joins. Code under test must never rely on anything only this offers.
 *
 * Unknown topics: the mock cluster creates any topic named in a Metadata
 * request, with 4 partitions, whatever the client's allow.auto.create.topics
 * says (its Metadata version predates that flag; librdkafka logs an
 * AUTOCREATE warning). So producing to, subscribing to or looking up a
 * fresh name all "work", and a misspelt name never fails here as it would
 * on a real cluster with auto-creation off. Tests that want fresh topics
 * with a known partition count pass them as --topic NAME:PARTITIONS (or a
 * unique --topic-prefix); nothing may rely on auto-creation.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "rw_err.h"
#include "rw_log.h"

#define COMP             "devbroker"
#define MAX_EXTRA_TOPICS 64
#define FAULT_BROKER_ID  1

typedef struct extra_topic {
    char name[250];
    int partitions;
} extra_topic_t;

typedef struct options {
    int brokers;
    int partitions;
    char prefix[200];
    char bootstrap_file[PATH_MAX];
    extra_topic_t extra[MAX_EXTRA_TOPICS];
    size_t n_extra;
} options_t;

static volatile sig_atomic_t stop_requested;
static volatile sig_atomic_t down_requested;
static volatile sig_atomic_t up_requested;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        down_requested = 1;
    else if (sig == SIGUSR2)
        up_requested = 1;
    else
        stop_requested = 1;
}

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: rollwave-devbroker [options]\n"
        "\n"
        "Development Kafka on loopback (librdkafka mock cluster).\n"
        "Runs until SIGTERM/SIGINT; SIGUSR1 takes broker %d down,\n"
        "SIGUSR2 brings it back up.\n"
        "\n"
        "  --brokers N             brokers in the cluster (default 1;\n"
        "                          env ROLLWAVE_DEVBROKER_BROKERS)\n"
        "  --partitions N          partitions of <prefix>batches and\n"
        "                          <prefix>poll (default 6; dlq has 1;\n"
        "                          env ROLLWAVE_DEVBROKER_PARTITIONS)\n"
        "  --topic-prefix P        topic name prefix (default "
        "\"rollwave.\";\n"
        "                          env ROLLWAVE_DEVBROKER_TOPIC_PREFIX)\n"
        "  --topic NAME:N          also create topic NAME with N\n"
        "                          partitions (repeatable)\n"
        "  --bootstrap-file PATH   write the bootstrap string there (env\n"
        "                          ROLLWAVE_DEVBROKER_BOOTSTRAP_FILE)\n"
        "  --help                  this text\n"
        "\n"
        "ROLLWAVE_DEVBROKER_DEBUG=CONTEXTS (e.g. \"mock\") logs librdkafka's\n"
        "debug contexts at info: the group coordinator's rounds, for a\n"
        "post-mortem.\n",
        FAULT_BROKER_ID);
}

static rw_err_t parse_int(const char *what, const char *text, int min, int max,
                          int *out, char *errstr, size_t errlen)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "%s: expected an integer in [%d, %d], got \"%s\"",
                          what, min, max, text);
    *out = (int)v;
    return RW_OK;
}

static rw_err_t copy_str(const char *what, const char *text, char *buf,
                         size_t len, char *errstr, size_t errlen)
{
    if (strlen(text) >= len)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "%s: value too long", what);
    memcpy(buf, text, strlen(text) + 1);
    return RW_OK;
}

static rw_err_t add_topic(options_t *o, const char *spec, char *errstr,
                          size_t errlen)
{
    const char *colon = strrchr(spec, ':');
    extra_topic_t *t;
    size_t namelen;

    if (o->n_extra >= MAX_EXTRA_TOPICS)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "--topic: at most %d topics", MAX_EXTRA_TOPICS);
    if (!colon || colon == spec)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "--topic: expected NAME:PARTITIONS, got \"%s\"",
                          spec);
    t = &o->extra[o->n_extra];
    namelen = (size_t)(colon - spec);
    if (namelen >= sizeof(t->name))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "--topic: name too long");
    memcpy(t->name, spec, namelen);
    t->name[namelen] = '\0';
    if (parse_int("--topic partitions", colon + 1, 1, 10000, &t->partitions,
                  errstr, errlen))
        return RW_ERR_INVALID_ARG;
    o->n_extra++;
    return RW_OK;
}

/* Environment first, so that command-line options override it. */
static rw_err_t options_from_env(options_t *o, char *errstr, size_t errlen)
{
    const char *v;
    rw_err_t err = RW_OK;

    v = getenv("ROLLWAVE_DEVBROKER_BROKERS");
    if (v && *v) {
        err = parse_int("ROLLWAVE_DEVBROKER_BROKERS", v, 1, 32, &o->brokers,
                        errstr, errlen);
        if (err)
            return err;
    }
    v = getenv("ROLLWAVE_DEVBROKER_PARTITIONS");
    if (v && *v) {
        err = parse_int("ROLLWAVE_DEVBROKER_PARTITIONS", v, 1, 10000,
                        &o->partitions, errstr, errlen);
        if (err)
            return err;
    }
    v = getenv("ROLLWAVE_DEVBROKER_TOPIC_PREFIX");
    if (v) {
        err = copy_str("ROLLWAVE_DEVBROKER_TOPIC_PREFIX", v, o->prefix,
                       sizeof(o->prefix), errstr, errlen);
        if (err)
            return err;
    }
    v = getenv("ROLLWAVE_DEVBROKER_BOOTSTRAP_FILE");
    if (v && *v)
        err =
            copy_str("ROLLWAVE_DEVBROKER_BOOTSTRAP_FILE", v, o->bootstrap_file,
                     sizeof(o->bootstrap_file), errstr, errlen);
    return err;
}

/* Returns 0 to run, 1 after --help, -1 on a bad option (errstr says why). */
static int parse_args(int argc, char **argv, options_t *o, char *errstr,
                      size_t errlen)
{
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"partitions", required_argument, NULL, 'p'},
        {"topic-prefix", required_argument, NULL, 'x'},
        {"topic", required_argument, NULL, 't'},
        {"bootstrap-file", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    opterr = 0;
    while (1) {
        rw_err_t err = RW_OK;

        c = getopt_long(argc, argv, "", longopts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'b':
            err = parse_int("--brokers", optarg, 1, 32, &o->brokers, errstr,
                            errlen);
            break;
        case 'p':
            err = parse_int("--partitions", optarg, 1, 10000, &o->partitions,
                            errstr, errlen);
            break;
        case 'x':
            err = copy_str("--topic-prefix", optarg, o->prefix,
                           sizeof(o->prefix), errstr, errlen);
            break;
        case 't':
            err = add_topic(o, optarg, errstr, errlen);
            break;
        case 'f':
            err = copy_str("--bootstrap-file", optarg, o->bootstrap_file,
                           sizeof(o->bootstrap_file), errstr, errlen);
            break;
        case 'h':
            return 1;
        default:
            rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                       "unknown or incomplete option \"%s\"", argv[optind - 1]);
            return -1;
        }
        if (err)
            return -1;
    }
    if (optind < argc) {
        rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                   "unexpected argument \"%s\"", argv[optind]);
        return -1;
    }
    return 0;
}

/* librdkafka debug contexts asked for (ROLLWAVE_DEVBROKER_DEBUG): their
 * messages are logged at info, so a post-mortem needs no other setting */
static int debug_asked;

static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    char qbuf[1024];
    rw_log_level_t lvl = level <= 3    ? RW_LOG_ERROR
                         : level == 4  ? RW_LOG_WARN
                         : level <= 6  ? RW_LOG_INFO
                         : debug_asked ? RW_LOG_INFO
                                       : RW_LOG_DEBUG;

    (void)rk;
    RW_LOG(lvl, "kafka", "event=librdkafka fac=%s msg=%s", fac,
           rw_log_quote(qbuf, sizeof(qbuf), buf));
}

static rw_err_t write_bootstrap(const char *path, const char *bootstraps,
                                char *errstr, size_t errlen)
{
    char tmp[PATH_MAX + 32];
    FILE *f = NULL;
    rw_err_t err = RW_OK;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >=
        (int)sizeof(tmp))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "bootstrap file path too long");
    f = fopen(tmp, "w");
    if (!f) {
        err = rw_err_set(errstr, errlen, RW_ERR_IO, "open %s: %s", tmp,
                         strerror(errno));
        goto out;
    }
    if (fprintf(f, "%s\n", bootstraps) < 0 || fflush(f) != 0 ||
        fsync(fileno(f)) != 0) {
        err = rw_err_set(errstr, errlen, RW_ERR_IO, "write %s: %s", tmp,
                         strerror(errno));
        goto out;
    }
    if (fclose(f) != 0) {
        f = NULL;
        err = rw_err_set(errstr, errlen, RW_ERR_IO, "close %s: %s", tmp,
                         strerror(errno));
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0)
        err = rw_err_set(errstr, errlen, RW_ERR_IO, "rename to %s: %s", path,
                         strerror(errno));
out:
    if (f)
        fclose(f);
    if (err)
        unlink(tmp);
    return err;
}

static rw_err_t create_topic(rd_kafka_mock_cluster_t *mc, const char *name,
                             int partitions, int replicas, char *errstr,
                             size_t errlen)
{
    rd_kafka_resp_err_t kerr;

    kerr = rd_kafka_mock_topic_create(mc, name, partitions, replicas);
    if (kerr)
        return rw_err_set(errstr, errlen, RW_ERR_KAFKA, "create topic %s: %s",
                          name, rd_kafka_err2str(kerr));
    rw_info(COMP, "event=topic_created topic=%s partitions=%d", name,
            partitions);
    return RW_OK;
}

static rw_err_t create_topics(rd_kafka_mock_cluster_t *mc, const options_t *o,
                              char *errstr, size_t errlen)
{
    static const char *const names[] = {"batches", "poll", "dlq"};
    int replicas = o->brokers < 3 ? o->brokers : 3;
    rw_err_t err = RW_OK;

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char topic[512];
        int parts = strcmp(names[i], "dlq") == 0 ? 1 : o->partitions;

        snprintf(topic, sizeof(topic), "%s%s", o->prefix, names[i]);
        err = create_topic(mc, topic, parts, replicas, errstr, errlen);
        if (err)
            return err;
    }
    for (size_t i = 0; i < o->n_extra; i++) {
        err = create_topic(mc, o->extra[i].name, o->extra[i].partitions,
                           replicas, errstr, errlen);
        if (err)
            return err;
    }
    return RW_OK;
}

static void install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static void serve(rd_kafka_mock_cluster_t *mc)
{
    const struct timespec tick = {0, 100 * 1000 * 1000};

    while (!stop_requested) {
        rd_kafka_resp_err_t kerr;

        nanosleep(&tick, NULL);
        if (down_requested) {
            down_requested = 0;
            kerr = rd_kafka_mock_broker_set_down(mc, FAULT_BROKER_ID);
            rw_info(COMP, "event=broker_down broker=%d result=%s",
                    FAULT_BROKER_ID, rd_kafka_err2name(kerr));
        }
        if (up_requested) {
            up_requested = 0;
            kerr = rd_kafka_mock_broker_set_up(mc, FAULT_BROKER_ID);
            rw_info(COMP, "event=broker_up broker=%d result=%s",
                    FAULT_BROKER_ID, rd_kafka_err2name(kerr));
        }
    }
}

int main(int argc, char **argv)
{
    options_t o;
    char errstr[512] = "";
    char qbuf[600];
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    const char *bootstraps;
    const char *lvl = getenv("ROLLWAVE_LOG_LEVEL");
    int rc = 1;
    int pr;

    memset(&o, 0, sizeof(o));
    o.brokers = 1;
    o.partitions = 6;
    snprintf(o.prefix, sizeof(o.prefix), "%s", "rollwave.");
    if (lvl && rw_log_level_parse(lvl) >= 0)
        rw_log_set_level((rw_log_level_t)rw_log_level_parse(lvl));

    if (options_from_env(&o, errstr, sizeof(errstr))) {
        fprintf(stderr, "rollwave-devbroker: %s\n", errstr);
        return 2;
    }
    pr = parse_args(argc, argv, &o, errstr, sizeof(errstr));
    if (pr == 1) {
        usage(stdout);
        return 0;
    }
    if (pr < 0) {
        fprintf(stderr, "rollwave-devbroker: %s (see --help)\n", errstr);
        return 2;
    }

    install_signals();

    /* The mock cluster lives inside a client handle; this one never
     * produces anything, it only owns the cluster's threads and logs. */
    conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    {
        /* e.g. "mock": the group coordinator's rounds, for a post-mortem */
        const char *dbg = getenv("ROLLWAVE_DEVBROKER_DEBUG");
        if (dbg && *dbg) {
            if (rd_kafka_conf_set(conf, "debug", dbg, errstr, sizeof(errstr)) !=
                RD_KAFKA_CONF_OK) {
                rd_kafka_conf_destroy(conf);
                fprintf(stderr,
                        "rollwave-devbroker: ROLLWAVE_DEVBROKER_DEBUG: %s\n",
                        errstr);
                return 2;
            }
            debug_asked = 1;
        }
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        rw_error(COMP, "event=start_failed reason=%s",
                 rw_log_quote(qbuf, sizeof(qbuf), errstr));
        goto out;
    }
    mc = rd_kafka_mock_cluster_new(rk, o.brokers);
    if (!mc) {
        rw_error(COMP, "event=start_failed reason=\"mock cluster creation "
                       "failed\"");
        goto out;
    }
    if (create_topics(mc, &o, errstr, sizeof(errstr))) {
        rw_error(COMP, "event=start_failed reason=%s",
                 rw_log_quote(qbuf, sizeof(qbuf), errstr));
        goto out;
    }
    bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (o.bootstrap_file[0] &&
        write_bootstrap(o.bootstrap_file, bootstraps, errstr, sizeof(errstr))) {
        rw_error(COMP, "event=start_failed reason=%s",
                 rw_log_quote(qbuf, sizeof(qbuf), errstr));
        goto out;
    }
    rw_info(COMP,
            "event=ready bootstrap=%s brokers=%d prefix=%s "
            "partitions=%d",
            bootstraps, o.brokers, o.prefix, o.partitions);

    serve(mc);
    rw_info(COMP, "event=stopping");
    rc = 0;
out:
    /* A stale bootstrap string would point readers at a dead port. */
    if (o.bootstrap_file[0] && mc)
        unlink(o.bootstrap_file);
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    if (rk)
        rd_kafka_destroy(rk);
    return rc;
}
