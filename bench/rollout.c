/*
 * rollwave-bench-rollout: the end-to-end rollout benchmark.
 *
 * On a running stack (Postgres with pg_stat_statements, Redis, a Kafka
 * broker, the Lagoon simulator; scripts/bench.sh brings one up) it creates
 * a fresh database, migrates it, seeds N redeploy-eligible instances,
 * resets the Postgres, Redis and simulator counters, starts K workers and
 * K pollers, runs one `rollwave-producer --once` tick that schedules the
 * whole fleet (fleets above --per-tick: a next tick whenever the last
 * one's batches are mostly claimed, so that Kafka never holds more than
 * about a tick), follows the rollout until every run is final and prints
 * throughput per stage, Postgres statements and Redis round trips per
 * instance, peak RSS per daemon and a correctness summary.
 *
 * It measures; it does not judge: no figure is compared with a threshold
 * and the exit status only says whether the benchmark could run to the
 * end. It does not start the stack, build anything, or change the
 * pipeline's settings beyond the ROLLWAVE_* variables listed in --help.
 *
 * Redis round trips are counted by a small forwarding proxy between the
 * daemons and Redis (one thread, loopback only): every burst of client
 * bytes that follows a server answer is one round trip. Redis's own
 * counters cannot tell a pipeline of n commands from n round trips.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "bench_common.h"
#include "rw_config.h"
#include "rw_err.h"
#include "rw_migrate.h"
#include "rw_pg.h"
#include "rw_redis.h"

#define MAX_DAEMONS    64
#define PROXY_MAX_CONN 512

typedef struct opts {
    long long instances;
    long long workers;
    long long store_apps;
    long long chunk_size;
    long long first_poll_delay_s;
    long long timeout_s;
    long long warmup_s;
    long long progress_ms;
    long long retention_rows;
    long long ceiling_rows;
    long long per_tick;
    const char *bin_dir;
    const char *log_dir;
    const char *child_log_level;
    int keep_db;
    int redis_proxy;
} opts_t;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: rollwave-bench-rollout [options]\n"
            "End-to-end rollout benchmark: seeds a fresh database, runs one\n"
            "scheduler tick over the whole fleet (one per --per-tick "
            "instances)\nwith K workers and K pollers and prints "
            "throughput, statements and\nround trips per instance, peak RSS, "
            "a correctness summary and the\nbulk-write ceiling of this "
            "Postgres.\n\n"
            "Options:\n"
            "  --instances N          instances to seed and roll out "
            "(default 100000)\n"
            "  --workers K            workers and pollers each (default 2)\n"
            "  --store-apps A         store apps the fleet is spread over "
            "(default 10;\n"
            "                         one run per store app)\n"
            "  --chunk-size C         ROLLWAVE_BULK_CHUNK_SIZE (default 50)\n"
            "  --first-poll-delay S   ROLLWAVE_FIRST_POLL_DELAY_S, 0 or 1 "
            "(default 0)\n"
            "  --timeout S            give up after S seconds of rollout "
            "(default 3600)\n"
            "  --warmup S             wait at most S s after the daemons "
            "are healthy\n"
            "                         for every consumer to own partitions "
            "(default 60;\n"
            "                         0: no wait; with more consumers than "
            "partitions\n"
            "                         it waits them all)\n"
            "  --progress-ms MS       progress line interval (default 1000,\n"
            "                         N/100 above 100000 instances: each "
            "line counts\n"
            "                         every target)\n"
            "  --retention-rows N     seed N targets of finished runs 200 "
            "days old\n"
            "                         (runs of 1000) and run `rollwavectl "
            "retention`\n"
            "                         during the rollout (default 0: none)\n"
            "  --per-tick M           instances one producer --once tick "
            "schedules\n"
            "                         (ROLLWAVE_MAX_PER_RUN; default N up "
            "to 200000);\n"
            "                         the next tick starts when a quarter of "
            "the last\n"
            "                         one is left unclaimed\n"
            "  --ceiling-rows N       rows of the bulk-write ceiling, "
            "measured after the\n"
            "                         report on a scratch copy of "
            "run_targets (default\n"
            "                         100000; 0: not measured)\n"
            "  --bin-dir DIR          daemon binaries (default: this "
            "program's directory)\n"
            "  --log-dir DIR          daemon logs (default: a new "
            "directory under $TMPDIR)\n"
            "  --child-log-level L    ROLLWAVE_LOG_LEVEL of the daemons "
            "(default warn)\n"
            "  --keep-db              keep the benchmark database\n"
            "  --no-redis-proxy       connect the daemons to Redis directly "
            "(no\n"
            "                         round-trip count)\n"
            "  --help                 this text\n\n"
            "The daemons inherit the environment; the benchmark sets their\n"
            "ROLLWAVE_PG_DSN (its database), ROLLWAVE_REDIS_URL (the proxy),\n"
            "ROLLWAVE_KAFKA_TOPIC_PREFIX and ROLLWAVE_KAFKA_GROUP (unique per "
            "run),\nROLLWAVE_MAX_PER_RUN=M, ROLLWAVE_BULK_CHUNK_SIZE, "
            "ROLLWAVE_FIRST_POLL_DELAY_S,\nROLLWAVE_POLL_INTERVAL_S=1, "
            "ROLLWAVE_METRICS_PORT and ROLLWAVE_LOG_LEVEL;\n"
            "ROLLWAVE_KAFKA_SESSION_TIMEOUT_MS defaults to 6000, and the "
            "fleet\nthrottle to no limit (ROLLWAVE_MAX_IN_FLIGHT=100000000,\n"
            "ROLLWAVE_TRIGGER_RATE_PER_MIN=1000000000), unless set.\n\n");
    rw_config_help(out, "rollwave-bench-rollout",
                   "Environment read by the benchmark itself:",
                   rw_bench_env_keys, rw_bench_n_env_keys);
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long *dst = NULL, min = 0, max = 0;

        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--keep-db") == 0) {
            o->keep_db = 1;
            continue;
        } else if (strcmp(a, "--no-redis-proxy") == 0) {
            o->redis_proxy = 0;
            continue;
        } else if (strcmp(a, "--bin-dir") == 0 && v) {
            o->bin_dir = v;
            i++;
            continue;
        } else if (strcmp(a, "--log-dir") == 0 && v) {
            o->log_dir = v;
            i++;
            continue;
        } else if (strcmp(a, "--child-log-level") == 0 && v) {
            o->child_log_level = v;
            i++;
            continue;
        } else if (strcmp(a, "--instances") == 0) {
            dst = &o->instances, min = 1, max = 100000000;
        } else if (strcmp(a, "--workers") == 0) {
            dst = &o->workers, min = 1, max = MAX_DAEMONS / 2;
        } else if (strcmp(a, "--store-apps") == 0) {
            dst = &o->store_apps, min = 1, max = 100000;
        } else if (strcmp(a, "--chunk-size") == 0) {
            dst = &o->chunk_size, min = 1, max = 1000;
        } else if (strcmp(a, "--first-poll-delay") == 0) {
            dst = &o->first_poll_delay_s, min = 0, max = 1;
        } else if (strcmp(a, "--timeout") == 0) {
            dst = &o->timeout_s, min = 1, max = 86400;
        } else if (strcmp(a, "--warmup") == 0) {
            dst = &o->warmup_s, min = 0, max = 600;
        } else if (strcmp(a, "--progress-ms") == 0) {
            dst = &o->progress_ms, min = 100, max = 600000;
        } else if (strcmp(a, "--retention-rows") == 0) {
            dst = &o->retention_rows, min = 0, max = 100000000;
        } else if (strcmp(a, "--per-tick") == 0) {
            dst = &o->per_tick, min = 1, max = 10000000;
        } else if (strcmp(a, "--ceiling-rows") == 0) {
            dst = &o->ceiling_rows, min = 0, max = 10000000;
        } else {
            fprintf(stderr,
                    "rollwave-bench-rollout: unknown argument '%s' "
                    "(see --help)\n",
                    a);
            return -1;
        }
        if (rw_bench_parse_ll("rollwave-bench-rollout", a, v, min, max, dst))
            return -1;
        i++;
    }
    return 0;
}

/* ---- Redis round-trip proxy ------------------------------------------- */

/*
 * One client connection of the proxy. A round trip starts with the first
 * client byte after a server answer (or the first ever); commands are
 * counted by following RESP multibulk framing ("*n", then n "$len" bulks).
 */
typedef struct pconn {
    int cfd, sfd;
    int waiting;         /* request sent, no answer byte seen yet */
    int st;              /* 0 header '*', 1 header '$', 2 bulk data */
    long long left_args; /* bulks left in the current command */
    long long left_data; /* bytes of bulk data left, CRLF included */
    char line[64];
    size_t ll;
} pconn_t;

typedef struct proxy {
    int lfd;
    int port;
    struct sockaddr_storage up; /* Redis address */
    socklen_t up_len;
    pthread_t th;
    atomic_int stop;
    atomic_ullong round_trips;
    atomic_ullong commands;
    atomic_ullong connections;
    pconn_t conn[PROXY_MAX_CONN];
    size_t n;
} proxy_t;

static void resp_feed(proxy_t *px, pconn_t *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (c->st == 2) {
            long long take = (long long)(n - i) < c->left_data
                                 ? (long long)(n - i)
                                 : c->left_data;
            c->left_data -= take;
            i += (size_t)take - 1;
            if (c->left_data == 0)
                c->st = c->left_args > 0 ? 1 : 0;
            continue;
        }
        if (c->ll < sizeof(c->line) - 1)
            c->line[c->ll++] = p[i];
        if (p[i] != '\n')
            continue;
        c->line[c->ll] = '\0';
        c->ll = 0;
        if (c->st == 0 && c->line[0] == '*') {
            c->left_args = atoll(c->line + 1);
            atomic_fetch_add(&px->commands, 1);
            c->st = c->left_args > 0 ? 1 : 0;
        } else if (c->st == 1 && c->line[0] == '$') {
            c->left_data = atoll(c->line + 1) + 2;
            c->left_args--;
            c->st = 2;
        } else if (c->st == 0) {
            /* inline command (not sent by hiredis): one command per line */
            atomic_fetch_add(&px->commands, 1);
        }
    }
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void proxy_drop(proxy_t *px, size_t i)
{
    close(px->conn[i].cfd);
    close(px->conn[i].sfd);
    px->conn[i] = px->conn[--px->n];
}

static int connect_upstream(const proxy_t *px)
{
    int fd = socket(px->up.ss_family, SOCK_STREAM, 0);

    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)&px->up, px->up_len) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *proxy_main(void *ud)
{
    proxy_t *px = ud;
    struct pollfd *pf = calloc(2 * PROXY_MAX_CONN + 1, sizeof(*pf));
    char buf[65536];

    if (!pf)
        return NULL;
    while (!atomic_load(&px->stop)) {
        size_t np = 0;
        pf[np].fd = px->lfd;
        pf[np++].events = POLLIN;
        for (size_t i = 0; i < px->n; i++) {
            pf[np].fd = px->conn[i].cfd;
            pf[np++].events = POLLIN;
            pf[np].fd = px->conn[i].sfd;
            pf[np++].events = POLLIN;
        }
        if (poll(pf, np, 100) <= 0)
            continue;
        if (pf[0].revents & POLLIN) {
            int cfd = accept(px->lfd, NULL, NULL);
            if (cfd >= 0) {
                int sfd = px->n < PROXY_MAX_CONN ? connect_upstream(px) : -1;
                if (sfd < 0) {
                    close(cfd);
                } else {
                    int one = 1;
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one,
                               sizeof(one));
                    setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one,
                               sizeof(one));
                    memset(&px->conn[px->n], 0, sizeof(px->conn[0]));
                    px->conn[px->n].cfd = cfd;
                    px->conn[px->n].sfd = sfd;
                    px->n++;
                    atomic_fetch_add(&px->connections, 1);
                }
            }
        }
        /* walk backwards so that dropping a connection keeps the index
         * of the pollfds still to visit valid */
        for (size_t i = (np - 1) / 2; i-- > 0;) {
            pconn_t *c = &px->conn[i];
            short cre = pf[1 + 2 * i].revents, sre = pf[2 + 2 * i].revents;
            int bad = 0;
            if (cre & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t r = read(c->cfd, buf, sizeof(buf));
                if (r <= 0) {
                    bad = 1;
                } else {
                    if (!c->waiting) {
                        atomic_fetch_add(&px->round_trips, 1);
                        c->waiting = 1;
                    }
                    resp_feed(px, c, buf, (size_t)r);
                    bad = write_all(c->sfd, buf, (size_t)r) != 0;
                }
            }
            if (!bad && (sre & (POLLIN | POLLHUP | POLLERR))) {
                ssize_t r = read(c->sfd, buf, sizeof(buf));
                if (r <= 0) {
                    bad = 1;
                } else {
                    c->waiting = 0;
                    bad = write_all(c->cfd, buf, (size_t)r) != 0;
                }
            }
            if (bad)
                proxy_drop(px, i);
        }
    }
    for (size_t i = px->n; i-- > 0;)
        proxy_drop(px, i);
    free(pf);
    return NULL;
}

/* Listen on a free loopback port and forward to host:port. */
static rw_err_t proxy_start(proxy_t *px, const char *host, int port,
                            char *errstr, size_t errlen)
{
    struct addrinfo hints, *ai = NULL;
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    char port_s[16];
    int one = 1;

    memset(px, 0, sizeof(*px));
    px->lfd = -1;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port_s, sizeof(port_s), "%d", port);
    if (getaddrinfo(host, port_s, &hints, &ai) != 0 || !ai)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "redis proxy: cannot resolve %s", host);
    memcpy(&px->up, ai->ai_addr, ai->ai_addrlen);
    px->up_len = ai->ai_addrlen;
    freeaddrinfo(ai);

    px->lfd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (px->lfd < 0 ||
        setsockopt(px->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        bind(px->lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
        listen(px->lfd, 128) ||
        getsockname(px->lfd, (struct sockaddr *)&sa, &len)) {
        if (px->lfd >= 0)
            close(px->lfd);
        px->lfd = -1;
        return rw_err_set(errstr, errlen, RW_ERR_IO, "redis proxy: %s",
                          strerror(errno));
    }
    px->port = ntohs(sa.sin_port);
    if (pthread_create(&px->th, NULL, proxy_main, px) != 0) {
        close(px->lfd);
        px->lfd = -1;
        return rw_err_set(errstr, errlen, RW_ERR_IO, "redis proxy: no thread");
    }
    return RW_OK;
}

static void proxy_stop(proxy_t *px)
{
    if (px->lfd < 0)
        return;
    atomic_store(&px->stop, 1);
    pthread_join(px->th, NULL);
    close(px->lfd);
    px->lfd = -1;
}

static const char SQL_STATUS_COUNTS[] = RW_BENCH_MARK
    "SELECT count(*) FILTER (WHERE status = 'running-healthy-claimed')"
    "   AS claimed,"
    " count(*) FILTER (WHERE status = 'running-healthy-unclaimed')"
    "   AS unclaimed"
    " FROM app_instances";

/*
 * The runs of this rollout: above the newest synthetic history run that
 * is left (--retention-rows seeds history first, so it has lower ids).
 */
#define AFTER_HISTORY                                                          \
    "(SELECT COALESCE(max(id), 0) FROM deployment_runs"                        \
    "  WHERE triggered_by = 'bench-history')"

static const char SQL_PROGRESS[] = RW_BENCH_MARK
    "SELECT (SELECT count(*) FROM deployment_runs WHERE id > " AFTER_HISTORY
    ") AS runs,"
    " (SELECT count(*) FROM deployment_runs WHERE status IN"
    "   ('completed', 'partial_failed', 'failed', 'cancelled')"
    "   AND id > " AFTER_HISTORY ") AS runs_final,"
    " count(*) AS targets,"
    " count(*) FILTER (WHERE state = 'pending') AS pending,"
    " count(*) FILTER (WHERE state = 'claimed') AS claimed,"
    " count(*) FILTER (WHERE state = 'triggered') AS triggered,"
    " count(*) FILTER (WHERE state = 'deploying') AS deploying,"
    " count(*) FILTER (WHERE state = 'succeeded') AS succeeded,"
    " count(*) FILTER (WHERE state IN ('failed', 'timed_out')) AS failed,"
    " count(*) FILTER (WHERE state IN ('skipped', 'cancelled')) AS skipped"
    " FROM run_targets WHERE run_id > " AFTER_HISTORY;

static const char SQL_STAGES[] = RW_BENCH_MARK
    "SELECT count(*) AS targets,"
    " extract(epoch FROM min(claimed_at)) AS first_claimed,"
    " extract(epoch FROM max(triggered_at)) AS last_triggered,"
    " extract(epoch FROM min(triggered_at)) AS first_triggered,"
    " extract(epoch FROM max(finished_at)) AS last_finished,"
    " count(*) FILTER (WHERE state NOT IN ('succeeded', 'failed', 'skipped',"
    "                  'timed_out', 'cancelled')) AS not_terminal,"
    " count(*) FILTER (WHERE state = 'succeeded') AS succeeded,"
    " count(*) FILTER (WHERE state = 'failed') AS failed,"
    " count(*) FILTER (WHERE state = 'timed_out') AS timed_out,"
    " count(*) FILTER (WHERE state IN ('skipped', 'cancelled')) AS skipped,"
    " count(*) FILTER (WHERE attempt > 1) AS retried,"
    " count(DISTINCT instance_id) AS distinct_instances"
    " FROM run_targets WHERE run_id > " AFTER_HISTORY;

static const char SQL_RUNS[] = RW_BENCH_MARK
    "SELECT count(*) AS runs,"
    " count(*) FILTER (WHERE status IN ('completed', 'partial_failed',"
    "                  'failed', 'cancelled')) AS final,"
    " count(*) FILTER (WHERE status = 'completed') AS completed,"
    " extract(epoch FROM min(created_at)) AS first_created,"
    " extract(epoch FROM max(completed_at)) AS last_completed,"
    " (SELECT count(*) FROM run_chunks WHERE run_id > " AFTER_HISTORY
    ") AS chunks,"
    " count(*) FILTER (WHERE total_count <> (SELECT count(*) FROM run_targets t"
    "                   WHERE t.run_id = r.id)"
    "   OR succeeded_count + failed_count + skipped_count <> total_count)"
    "   AS bad_counts,"
    " count(*) FILTER (WHERE (SELECT count(*) FROM run_transitions x"
    "                   WHERE x.run_id = r.id AND x.to_status IN"
    "                   ('completed', 'partial_failed', 'failed')) <> 1)"
    "   AS not_finalized_once,"
    " (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS unpublished,"
    " (SELECT count(*) FROM outbox) AS outbox_rows"
    " FROM deployment_runs r WHERE r.id > " AFTER_HISTORY;

/*
 * --retention-rows: finished runs ended 200 days ago, 1000 targets each
 * over the seeded instances, with their chunks (50 targets each) and one
 * transition, for the retention to delete during the rollout.
 */
static const char SQL_HISTORY[] = RW_BENCH_MARK
    "WITH runs AS ("
    "  INSERT INTO deployment_runs (trigger_source, triggered_by, status,"
    "      total_count, succeeded_count, created_at, started_at,"
    "      completed_at)"
    "  SELECT 'manual', 'bench-history', 'completed', 1000, 1000,"
    "         now() - interval '200 days', now() - interval '200 days',"
    "         now() - interval '200 days'"
    "    FROM generate_series(1, $1::int)"
    "  RETURNING id),"
    " tr AS ("
    "  INSERT INTO run_transitions (run_id, from_status, to_status, reason)"
    "  SELECT id, 'running', 'completed', 'bench history' FROM runs),"
    " ch AS ("
    "  INSERT INTO run_chunks (run_id, chunk, state, target_count)"
    "  SELECT r.id, c, 'done', 50 FROM runs r, generate_series(0, 19) c)"
    " INSERT INTO run_targets (run_id, chunk, instance_id, state, attempt,"
    "     lagoon_project, lagoon_environment)"
    " SELECT r.id, g / 50, i.id, 'succeeded', 1, i.lagoon_project,"
    "        i.lagoon_environment"
    "   FROM runs r, generate_series(0, 999) g"
    "   JOIN app_instances i ON i.id = (SELECT min(id) FROM app_instances) + g";

static const char SQL_PGSS_TOTAL[] = RW_BENCH_MARK
    "SELECT COALESCE(sum(calls), 0)::bigint AS calls,"
    " COALESCE(sum(calls) FILTER"
    "   (WHERE query ~* '^\\s*(BEGIN|COMMIT|ROLLBACK)'), 0)::bigint"
    "   AS tx_calls,"
    " COALESCE(sum(total_exec_time), 0)::float8 AS exec_ms,"
    " COALESCE(sum(rows), 0)::bigint AS rows,"
    " COALESCE(sum(wal_records), 0)::bigint AS wal_records,"
    " COALESCE(sum(wal_bytes), 0)::float8 AS wal_bytes,"
    " count(*) AS statements"
    " FROM pg_stat_statements s"
    " WHERE s.dbid = (SELECT oid FROM pg_database"
    "                 WHERE datname = current_database())"
    "   AND s.query NOT LIKE '%rollwave-bench%'";

static const char SQL_PGSS_TOP[] =
    RW_BENCH_MARK "SELECT calls, total_exec_time::float8 AS exec_ms,"
                  " mean_exec_time::float8 AS mean_ms, rows,"
                  " left(regexp_replace(query, '\\s+', ' ', 'g'), $1::int) AS q"
                  " FROM pg_stat_statements s"
                  " WHERE s.dbid = (SELECT oid FROM pg_database"
                  "                 WHERE datname = current_database())"
                  "   AND s.query NOT LIKE '%rollwave-bench%'"
                  " ORDER BY calls DESC, total_exec_time DESC LIMIT $2::int";

static const char SQL_PGSS_SLOW[] =
    RW_BENCH_MARK "SELECT calls, total_exec_time::float8 AS exec_ms,"
                  " mean_exec_time::float8 AS mean_ms, rows,"
                  " left(regexp_replace(query, '\\s+', ' ', 'g'), $1::int) AS q"
                  " FROM pg_stat_statements s"
                  " WHERE s.dbid = (SELECT oid FROM pg_database"
                  "                 WHERE datname = current_database())"
                  "   AND s.query NOT LIKE '%rollwave-bench%'"
                  " ORDER BY total_exec_time DESC LIMIT $2::int";

/* ---- Redis (the benchmark's own connection) ----------------------------- */

static redisContext *redis_open(const rw_redis_url_t *u, char *errstr,
                                size_t errlen)
{
    struct timeval tv = {5, 0};
    redisContext *c = u->is_unix
                          ? redisConnectUnixWithTimeout(u->path, tv)
                          : redisConnectWithTimeout(u->host, u->port, tv);
    redisReply *r = NULL;

    if (!c || c->err) {
        rw_err_set(errstr, errlen, RW_ERR_REDIS_CONN, "redis: %s",
                   c ? c->errstr : "cannot allocate context");
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (u->password[0]) {
        r = u->username[0]
                ? redisCommand(c, "AUTH %s %s", u->username, u->password)
                : redisCommand(c, "AUTH %s", u->password);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            rw_err_set(errstr, errlen, RW_ERR_CONFIG, "redis: AUTH refused");
            freeReplyObject(r);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    if (u->db) {
        r = redisCommand(c, "SELECT %d", u->db);
        freeReplyObject(r);
    }
    return c;
}

/* INFO <section> as a malloc'd string, or NULL. */
static char *redis_info(redisContext *c, const char *section)
{
    redisReply *r = redisCommand(c, "INFO %s", section);
    char *s = NULL;

    if (r && r->type == REDIS_REPLY_STRING)
        s = strdup(r->str);
    freeReplyObject(r);
    return s;
}

/* Lock keys of this run still present (SCAN, so Redis never blocks). */
static long long redis_count_keys(redisContext *c, const char *pattern)
{
    char cursor[32] = "0";
    long long n = 0;

    do {
        redisReply *r =
            redisCommand(c, "SCAN %s MATCH %s COUNT 10000", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        n += (long long)r->element[1]->elements;
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

/* ---- the run ---------------------------------------------------------- */

typedef struct bench {
    opts_t o;
    rw_bench_env_t env;
    char db[64];
    char dsn[2048];
    char prefix[64];
    char log_dir[PATH_MAX];
    char bin_dir[PATH_MAX];
    rw_pg_t *admin;
    rw_pg_t *pg;
    redisContext *rc;
    rw_redis_url_t rurl;
    proxy_t px;
    int px_on;
    int pgss;
    rw_bench_daemon_t d[MAX_DAEMONS + 1];
    size_t nd;
    rw_bench_daemon_t producer;
    rw_bench_daemon_t retention; /* rollwavectl retention, when asked */
    long long history_rows;      /* targets seeded as old history */
    double retention_s;          /* its wall time, 0 = still running */
    long long claimed0, unclaimed0;
    double t_start;    /* database clock when the producer started */
    double producer_s; /* producer --once wall time, every tick's */
    int ticks;         /* producer --once runs so far */
    long long tick_t0; /* monotonic ms when the current one started */
    double e2e_s;      /* producer start -> last run final */
    double cpu0[2];    /* machine CPU seconds (busy, all) at the start */
    double cpu[2];     /* ... used during the rollout, -1: unknown */
    long pg_pm;        /* the Postgres server's postmaster, -1: not here */
    double pg_cpu0;    /* its processes' CPU seconds at the start */
    double pg_cpu;     /* ... used during the rollout, -1: unknown */
    long pg_self;      /* this program's own backend, -1: not known */
    unsigned pg_self_reconnects; /* its connection's reconnects then */
    double self_cpu0;            /* its CPU seconds at the start */
    double self_cpu; /* ... used during the rollout (not in pg_cpu) */
    double seed_s;
    double row_writes; /* rows written per instance, every table's; 0:
                        * not known */
    char sim_config[512];
} bench_t;

static const char *bin_path(const bench_t *b, const char *name, char *buf,
                            size_t len)
{
    snprintf(buf, len, "%s/%s", b->bin_dir, name);
    return buf;
}

/* The daemon environment: inherited, plus the benchmark's settings. */
static int daemon_env(const bench_t *b, rw_bench_envset_t *e, const char *group,
                      int metrics_port)
{
    char v[64], url[300];
    int rc = 0;

    if (rw_bench_env_copy(e))
        return -1;
    rc |= rw_bench_env_put(e, "ROLLWAVE_PG_DSN", b->dsn);
    if (b->px_on) {
        snprintf(url, sizeof(url), "redis://127.0.0.1:%d/%d", b->px.port,
                 b->rurl.db);
        rc |= rw_bench_env_put(e, "ROLLWAVE_REDIS_URL", url);
    }
    rc |= rw_bench_env_put(e, "ROLLWAVE_KAFKA_TOPIC_PREFIX", b->prefix);
    if (group) {
        snprintf(v, sizeof(v), "%s%s", b->prefix, group);
        rc |= rw_bench_env_put(e, "ROLLWAVE_KAFKA_GROUP", v);
    }
    snprintf(v, sizeof(v), "%lld", b->o.per_tick);
    rc |= rw_bench_env_put(e, "ROLLWAVE_MAX_PER_RUN", v);
    snprintf(v, sizeof(v), "%lld", b->o.chunk_size);
    rc |= rw_bench_env_put(e, "ROLLWAVE_BULK_CHUNK_SIZE", v);
    snprintf(v, sizeof(v), "%lld", b->o.first_poll_delay_s);
    rc |= rw_bench_env_put(e, "ROLLWAVE_FIRST_POLL_DELAY_S", v);
    rc |= rw_bench_env_put(e, "ROLLWAVE_POLL_INTERVAL_S", "1");
    if (!getenv("ROLLWAVE_KAFKA_SESSION_TIMEOUT_MS"))
        rc |= rw_bench_env_put(e, "ROLLWAVE_KAFKA_SESSION_TIMEOUT_MS", "6000");
    /* rollwave's own cost is measured, not the fleet throttle's limits
     * (scripts/bench.sh --throttle measures those) */
    if (!getenv("ROLLWAVE_MAX_IN_FLIGHT"))
        rc |= rw_bench_env_put(e, "ROLLWAVE_MAX_IN_FLIGHT", "100000000");
    if (!getenv("ROLLWAVE_TRIGGER_RATE_PER_MIN"))
        rc |=
            rw_bench_env_put(e, "ROLLWAVE_TRIGGER_RATE_PER_MIN", "1000000000");
    snprintf(v, sizeof(v), "%d", metrics_port);
    rc |= rw_bench_env_put(e, "ROLLWAVE_METRICS_PORT", v);
    rc |= rw_bench_env_put(e, "ROLLWAVE_LOG_LEVEL", b->o.child_log_level);
    return rc ? -1 : 0;
}

static rw_err_t start_daemon(bench_t *b, rw_bench_daemon_t *d,
                             const char *bin_name, const char *group,
                             char *const extra_arg, char *errstr, size_t errlen)
{
    rw_bench_envset_t e;
    char bin[PATH_MAX + 64], log[PATH_MAX + 64];
    char *argv[3] = {(char *)bin_name, extra_arg, NULL};

    d->metrics_port = rw_bench_free_port();
    if (d->metrics_port <= 0 || daemon_env(b, &e, group, d->metrics_port)) {
        rw_bench_env_free(&e);
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "cannot prepare %s",
                          d->name);
    }
    snprintf(log, sizeof(log), "%s/%s.log", b->log_dir, d->name);
    d->pid =
        rw_bench_spawn(bin_path(b, bin_name, bin, sizeof(bin)), argv, e.v, log);
    rw_bench_env_free(&e);
    if (d->pid < 0)
        return rw_err_set(errstr, errlen, RW_ERR_IO, "cannot start %s: %s",
                          d->name, strerror(errno));
    return RW_OK;
}

/* Wait until every daemon answers /healthz with 200. */
static rw_err_t wait_healthy(bench_t *b, char *errstr, size_t errlen)
{
    long long deadline = rw_bench_mono_ms() + 60000;

    for (size_t i = 0; i < b->nd; i++) {
        char url[128];
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthz",
                 b->d[i].metrics_port);
        while (rw_bench_http(url, NULL, NULL) != 200) {
            if (rw_bench_reap(&b->d[i])) {
                char how[48];
                return rw_err_set(
                    errstr, errlen, RW_ERR_IO, "%s %s at start (see %s/%s.log)",
                    b->d[i].name,
                    rw_bench_exit_text(b->d[i].status, how, sizeof(how)),
                    b->log_dir, b->d[i].name);
            }
            if (rw_bench_mono_ms() > deadline || rw_bench_interrupted)
                return rw_err_set(errstr, errlen, RW_ERR_TIMEOUT,
                                  "%s not healthy within 60 s", b->d[i].name);
            rw_bench_sleep_ms(100);
        }
    }
    return RW_OK;
}

static rw_err_t setup_db(bench_t *b, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char n_s[24], a_s[24];
    const char *p[2] = {a_s, n_s};
    long long t0;

    err = rw_pg_new(&b->admin, b->env.pg_dsn, errstr, errlen);
    if (err)
        return err;
    snprintf(b->db, sizeof(b->db), "rwbench_%d_%lld", (int)getpid(),
             (long long)time(NULL));
    err = rw_bench_admin_db(b->admin, "CREATE DATABASE", b->db, "", errstr,
                            errlen);
    if (err)
        return err;
    err = rw_bench_dsn_with_db(b->env.pg_dsn, b->db, b->dsn, sizeof(b->dsn),
                               errstr, errlen);
    if (!err)
        err = rw_pg_new(&b->pg, b->dsn, errstr, errlen);
    if (!err)
        err = rw_migrate_apply(b->pg, NULL, NULL, NULL, errstr, errlen);
    if (err)
        return err;

    b->pgss = 0;
    err = rw_pg_exec(b->pg,
                     RW_BENCH_MARK "SELECT current_setting("
                                   "'shared_preload_libraries') AS l",
                     0, NULL, &res, errstr, errlen);
    if (err)
        return err;
    if (strstr(rw_pg_str(res, 0, "l") ? rw_pg_str(res, 0, "l") : "",
               "pg_stat_statements")) {
        err = rw_pg_exec(b->pg,
                         RW_BENCH_MARK "CREATE EXTENSION IF NOT EXISTS "
                                       "pg_stat_statements",
                         0, NULL, NULL, errstr, errlen);
        if (err)
            goto out;
        b->pgss = 1;
        /* the benchmark's own statements stay out of the figures */
        if (rw_pg_exec(b->pg,
                       RW_BENCH_MARK "SET pg_stat_statements.track = 'none'", 0,
                       NULL, NULL, errstr, errlen))
            fprintf(stderr,
                    "bench: cannot untrack own statements (%s); they are "
                    "excluded by their mark instead\n",
                    errstr);
    } else {
        fprintf(stderr, "bench: pg_stat_statements is not in "
                        "shared_preload_libraries: no statement figures\n");
    }

    snprintf(n_s, sizeof(n_s), "%lld", b->o.instances);
    snprintf(a_s, sizeof(a_s), "%lld", b->o.store_apps);
    fprintf(stderr,
            "bench: seeding %lld instances over %lld store apps in "
            "database %s\n",
            b->o.instances, b->o.store_apps, b->db);
    t0 = rw_bench_mono_ms();
    err = rw_pg_exec(b->pg, rw_bench_sql_seed, 2, p, NULL, errstr, errlen);
    if (!err)
        err = rw_pg_exec(b->pg, RW_BENCH_MARK "ANALYZE", 0, NULL, NULL, errstr,
                         errlen);
    if (err)
        goto out;
    if (b->o.retention_rows > 0) {
        char runs_s[24];
        const char *hp[1] = {runs_s};
        snprintf(runs_s, sizeof(runs_s), "%lld",
                 (b->o.retention_rows + 999) / 1000);
        fprintf(stderr,
                "bench: seeding %s old runs of 1000 targets for the "
                "retention\n",
                runs_s);
        err = rw_pg_exec(b->pg, SQL_HISTORY, 1, hp, NULL, errstr, errlen);
        if (!err)
            err = rw_pg_exec(b->pg, RW_BENCH_MARK "ANALYZE", 0, NULL, NULL,
                             errstr, errlen);
        if (!err)
            err = rw_pg_exec(b->pg,
                             RW_BENCH_MARK "SELECT count(*) AS n FROM"
                                           " run_targets",
                             0, NULL, &res, errstr, errlen);
        if (err)
            goto out;
        b->history_rows = rw_pg_ll(res, 0, "n", 0);
    }
    b->seed_s = (double)(rw_bench_mono_ms() - t0) / 1000.0;
    PQclear(res);
    res = NULL;
    err = rw_pg_exec(b->pg, SQL_STATUS_COUNTS, 0, NULL, &res, errstr, errlen);
    if (err)
        goto out;
    b->claimed0 = rw_pg_ll(res, 0, "claimed", 0);
    b->unclaimed0 = rw_pg_ll(res, 0, "unclaimed", 0);
out:
    PQclear(res);
    return err;
}

/* Zero every counter the report reads. */
static rw_err_t reset_counters(bench_t *b, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    redisReply *r;
    char url[600], *body = NULL;

    /* the seed's row counts may still be pending in this connection's
     * backend: sent before the reset, they are not counted as the
     * rollout's. Postgres 15 and later flush at most once a second, and
     * flush when told to; before 15 a backend sends its counts when it
     * goes idle at least 500 ms after it last did */
    if (PQserverVersion(rw_pg_conn(b->pg)) >= 150000)
        err =
            rw_pg_exec(b->pg, RW_BENCH_MARK "SELECT pg_stat_force_next_flush()",
                       0, NULL, NULL, errstr, errlen);
    else
        err = rw_pg_exec(b->pg, RW_BENCH_MARK "SELECT pg_sleep(0.6)", 0, NULL,
                         NULL, errstr, errlen);
    if (err)
        return err;
    if (b->pgss) {
        err =
            rw_pg_exec(b->pg, RW_BENCH_MARK "SELECT pg_stat_statements_reset()",
                       0, NULL, NULL, errstr, errlen);
        if (err)
            return err;
    }
    err = rw_pg_exec(b->pg, RW_BENCH_MARK "SELECT pg_stat_reset()", 0, NULL,
                     NULL, errstr, errlen);
    if (err)
        return err;
    r = redisCommand(b->rc, "CONFIG RESETSTAT");
    if (!r || r->type == REDIS_REPLY_ERROR)
        err = rw_err_set(errstr, errlen, RW_ERR_REDIS_REPLY,
                         "redis CONFIG RESETSTAT: %s",
                         r ? r->str : b->rc->errstr);
    freeReplyObject(r);
    if (err)
        return err;
    snprintf(url, sizeof(url), "%s/sim/reset", b->env.sim_admin_url);
    if (rw_bench_http(url, "{}", NULL) != 200)
        return rw_err_set(errstr, errlen, RW_ERR_IO, "POST /sim/reset failed");
    snprintf(url, sizeof(url), "%s/sim/config", b->env.sim_admin_url);
    if (rw_bench_http(url, NULL, &body) == 200 && body) {
        json_t *j = json_loads(body, 0, NULL);
        if (j) {
            snprintf(
                b->sim_config, sizeof(b->sim_config),
                "rows_delay_ms=%lld phase_ms=%lld build_min_ms=%lld "
                "build_max_ms=%lld max_concurrent_builds=%lld "
                "fail_rate=%g",
                (long long)json_integer_value(
                    json_object_get(j, "rows_delay_ms")),
                (long long)json_integer_value(json_object_get(j, "phase_ms")),
                (long long)json_integer_value(
                    json_object_get(j, "build_min_ms")),
                (long long)json_integer_value(
                    json_object_get(j, "build_max_ms")),
                (long long)json_integer_value(
                    json_object_get(j, "max_concurrent_builds")),
                json_number_value(json_object_get(j, "fail_rate")));
            json_decref(j);
        }
    }
    free(body);
    return RW_OK;
}

/* One progress line; the counts are -1 when the query failed. */
typedef struct prog {
    long long runs, final, targets, pending;
} prog_t;

static void progress(bench_t *b, long long t0, int tty, prog_t *pr)
{
    PGresult *res = NULL;
    char errstr[256];

    pr->runs = pr->final = pr->targets = pr->pending = -1;
    if (rw_pg_exec(b->pg, SQL_PROGRESS, 0, NULL, &res, errstr,
                   sizeof(errstr))) {
        fprintf(stderr, "bench: progress query failed: %s\n", errstr);
        return;
    }
    pr->runs = rw_pg_ll(res, 0, "runs", 0);
    pr->final = rw_pg_ll(res, 0, "runs_final", 0);
    pr->targets = rw_pg_ll(res, 0, "targets", 0);
    pr->pending = rw_pg_ll(res, 0, "pending", 0);
    fprintf(stderr,
            "%s%6.1fs runs %lld/%lld final | targets %lld: pending %lld "
            "claimed %lld triggered %lld deploying %lld succeeded %lld "
            "failed %lld skipped %lld%s",
            tty ? "\r" : "", (double)(rw_bench_mono_ms() - t0) / 1000.0,
            pr->final, pr->runs, pr->targets, pr->pending,
            rw_pg_ll(res, 0, "claimed", 0), rw_pg_ll(res, 0, "triggered", 0),
            rw_pg_ll(res, 0, "deploying", 0), rw_pg_ll(res, 0, "succeeded", 0),
            rw_pg_ll(res, 0, "failed", 0), rw_pg_ll(res, 0, "skipped", 0),
            tty ? "\033[K" : "\n");
    PQclear(res);
}

/* One `rollwave-producer --once`: a scheduler tick of up to --per-tick. */
static rw_err_t start_tick(bench_t *b, char *errstr, size_t errlen)
{
    b->producer.exited = 0;
    b->ticks++;
    b->tick_t0 = rw_bench_mono_ms();
    return start_daemon(b, &b->producer, "rollwave-producer", NULL, "--once",
                        errstr, errlen);
}

/*
 * After a tick ended: *done 1 when the rollout is over; else a next tick
 * starts once the fleet is not all scheduled and the last tick's targets
 * are mostly claimed. An error when a tick added no target.
 */
static rw_err_t after_tick(bench_t *b, const prog_t *pr, long long *before,
                           int *done, char *errstr, size_t errlen)
{
    *done = 0;
    if (pr->runs < 0)
        return RW_OK;
    if (pr->targets <= *before)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "producer --once tick %d scheduled nothing (%lld "
                          "of %lld targets; see %s/%s.log)",
                          b->ticks, pr->targets, b->o.instances, b->log_dir,
                          b->producer.name);
    if (pr->targets < b->o.instances) {
        /* a quarter of a tick still unclaimed keeps the workers busy while
         * the next tick runs, and bounds what waits in Kafka (the
         * devbroker keeps a few MB per partition and drops the rest) */
        if (pr->pending > b->o.per_tick / 4)
            return RW_OK;
        *before = pr->targets;
        return start_tick(b, errstr, errlen);
    }
    *done = pr->final == pr->runs;
    return RW_OK;
}

/*
 * The postmaster of the benchmark's Postgres, when it runs on this machine
 * (the parent of this connection's backend, named postgres), else -1.
 */
static long postmaster_pid(bench_t *b)
{
    PGresult *res = NULL;
    char errstr[256], path[64], comm[64] = "";
    long pm = -1;
    FILE *f;

    b->pg_self = -1;
    if (rw_pg_exec(b->pg, RW_BENCH_MARK "SELECT pg_backend_pid() AS pid", 0,
                   NULL, &res, errstr, sizeof(errstr)))
        return -1;
    b->pg_self = (long)rw_pg_ll(res, 0, "pid", 0);
    pm = rw_bench_parent_pid((pid_t)b->pg_self);
    PQclear(res);
    if (pm <= 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/%ld/comm", pm);
    f = fopen(path, "r");
    if (!f)
        return -1;
    if (!fgets(comm, sizeof(comm), f))
        comm[0] = '\0';
    fclose(f);
    return strncmp(comm, "postgres", 8) == 0 ? pm : -1;
}

/* Run the producer ticks and follow the rollout to its end. */
static rw_err_t run_rollout(bench_t *b, char *errstr, size_t errlen)
{
    rw_err_t err;
    struct rusage ru;
    long long t0, deadline, next_progress = 0, before = 0;
    int tty = isatty(STDERR_FILENO), done = 0, st;
    prog_t pr;

    snprintf(b->producer.name, sizeof(b->producer.name), "producer");
    b->t_start = rw_bench_db_now(b->pg);
    t0 = rw_bench_mono_ms();
    b->cpu[0] = b->cpu[1] = -1;
    if (rw_bench_machine_cpu_s(&b->cpu0[0], &b->cpu0[1]))
        b->cpu0[0] = -1;
    for (size_t i = 0; i < b->nd; i++)
        b->d[i].cpu0_s = rw_bench_proc_cpu_s(b->d[i].pid);
    b->pg_cpu = -1;
    b->pg_pm = postmaster_pid(b);
    b->pg_cpu0 = b->pg_pm > 0 ? rw_bench_tree_cpu_s((pid_t)b->pg_pm) : -1;
    b->self_cpu = -1;
    b->pg_self_reconnects = rw_pg_reconnects(b->pg);
    b->self_cpu0 =
        b->pg_cpu0 >= 0 ? rw_bench_proc_cpu_s((pid_t)b->pg_self) : -1;
    err = start_tick(b, errstr, errlen);
    if (err)
        return err;
    if (b->o.retention_rows > 0) {
        /* the leader's retention, as fast as one client deletes */
        snprintf(b->retention.name, sizeof(b->retention.name), "retention");
        err = start_daemon(b, &b->retention, "rollwavectl", NULL, "retention",
                           errstr, errlen);
        if (err)
            return err;
    }
    deadline = t0 + b->o.timeout_s * 1000;
    while (!rw_bench_interrupted) {
        if (b->retention.pid > 0 && !b->retention.exited &&
            rw_bench_reap(&b->retention))
            b->retention_s = (double)(rw_bench_mono_ms() - t0) / 1000.0;
        if (!b->producer.exited &&
            wait4(b->producer.pid, &st, WNOHANG, &ru) == b->producer.pid) {
            b->producer.exited = 1;
            b->producer.status = st;
            if (ru.ru_maxrss > b->producer.hwm_kb)
                b->producer.hwm_kb = ru.ru_maxrss;
            b->producer.cpu_s +=
                (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
            b->producer_s += (double)(rw_bench_mono_ms() - b->tick_t0) / 1000.0;
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                char how[48];
                return rw_err_set(errstr, errlen, RW_ERR_IO,
                                  "producer --once %s (see %s/%s.log)",
                                  rw_bench_exit_text(st, how, sizeof(how)),
                                  b->log_dir, b->producer.name);
            }
            next_progress = 0; /* decide on the next tick at once */
        }
        for (size_t i = 0; i < b->nd; i++)
            if (rw_bench_reap(&b->d[i])) {
                char how[48];
                return rw_err_set(
                    errstr, errlen, RW_ERR_IO,
                    "%s %s during the rollout (see %s/%s.log)", b->d[i].name,
                    rw_bench_exit_text(b->d[i].status, how, sizeof(how)),
                    b->log_dir, b->d[i].name);
            }
        if (rw_bench_mono_ms() >= next_progress) {
            next_progress = rw_bench_mono_ms() + b->o.progress_ms;
            progress(b, t0, tty, &pr);
            if (b->producer.exited) {
                err = after_tick(b, &pr, &before, &done, errstr, errlen);
                if (err)
                    return err;
                if (done) {
                    double busy, all;
                    if (b->cpu0[0] >= 0 &&
                        !rw_bench_machine_cpu_s(&busy, &all)) {
                        b->cpu[0] = busy - b->cpu0[0];
                        b->cpu[1] = all - b->cpu0[1];
                    }
                    if (b->pg_cpu0 >= 0) {
                        double now = rw_bench_tree_cpu_s((pid_t)b->pg_pm);
                        double self = rw_bench_proc_cpu_s((pid_t)b->pg_self);
                        b->pg_cpu = now >= 0 ? now - b->pg_cpu0 : -1;
                        /* this program's progress queries are not
                         * rollwave's: counted with the rest (unless its
                         * connection was made again: another backend) */
                        if (b->pg_cpu >= 0 && b->self_cpu0 >= 0 &&
                            self >= b->self_cpu0 &&
                            rw_pg_reconnects(b->pg) == b->pg_self_reconnects) {
                            b->self_cpu = self - b->self_cpu0;
                            b->pg_cpu -= b->self_cpu;
                        }
                    }
                    break;
                }
            }
        }
        if (rw_bench_mono_ms() > deadline)
            return rw_err_set(errstr, errlen, RW_ERR_TIMEOUT,
                              "rollout not finished after %lld s",
                              b->o.timeout_s);
        rw_bench_sleep_ms(50);
    }
    if (tty)
        fputc('\n', stderr);
    if (rw_bench_interrupted)
        return rw_err_set(errstr, errlen, RW_ERR_SHUTDOWN, "interrupted");
    return RW_OK;
}

/* Scrape /metrics and VmHWM of every daemon, then SIGTERM them. */
static void stop_daemons(bench_t *b)
{
    for (size_t i = 0; i < b->nd; i++) {
        rw_bench_daemon_t *d = &b->d[i];
        char url[128];
        if (d->pid <= 0 || rw_bench_reap(d))
            continue;
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics",
                 d->metrics_port);
        if (rw_bench_http(url, NULL, &d->metrics) != 200) {
            free(d->metrics);
            d->metrics = NULL;
        }
        d->hwm_kb = rw_bench_vm_hwm_kb(d->pid);
        d->cpu_s = rw_bench_proc_cpu_s(d->pid);
        if (d->cpu_s >= 0 && d->cpu0_s >= 0)
            d->cpu_s -= d->cpu0_s;
        else
            d->cpu_s = -1;
    }
    for (size_t i = 0; i < b->nd; i++)
        if (b->d[i].pid > 0 && !rw_bench_reap(&b->d[i]))
            kill(b->d[i].pid, SIGTERM);
    for (size_t i = 0; i < b->nd; i++)
        if (b->d[i].pid > 0)
            rw_bench_stop_daemon(&b->d[i]);
    if (b->producer.pid > 0 && !b->producer.exited)
        rw_bench_stop_daemon(&b->producer);
    if (b->retention.pid > 0 && !rw_bench_reap(&b->retention)) {
        kill(b->retention.pid, SIGTERM);
        rw_bench_stop_daemon(&b->retention);
    }
}

/* What the retention deleted while the rollout ran. */
static void report_retention(bench_t *b, double rollout_s)
{
    PGresult *res = NULL;
    char errstr[512];
    long long left;

    if (b->o.retention_rows <= 0)
        return;
    if (rw_pg_exec(b->pg,
                   RW_BENCH_MARK "SELECT count(*) AS n FROM run_targets t"
                                 " JOIN deployment_runs r ON r.id = t.run_id"
                                 " WHERE r.triggered_by = 'bench-history'",
                   0, NULL, &res, errstr, sizeof(errstr))) {
        printf("  retention          query failed: %s\n", errstr);
        return;
    }
    left = rw_pg_ll(res, 0, "n", 0);
    PQclear(res);
    if (b->retention_s > 0)
        printf("  retention          deleted %lld old targets (and their "
               "runs, chunks, transitions) in %.1f s: %.0f targets/s, "
               "alongside the rollout\n",
               b->history_rows - left, b->retention_s,
               (double)(b->history_rows - left) / b->retention_s);
    else
        printf("  retention          deleted %lld of %lld old targets during "
               "the %.1f s rollout (%.0f targets/s; still running at its "
               "end)\n",
               b->history_rows - left, b->history_rows, rollout_s,
               rollout_s > 0 ? (double)(b->history_rows - left) / rollout_s
                             : 0.0);
}

/* ---- the report ------------------------------------------------------- */

static void print_rate(const char *what, const char *span, double secs,
                       double n)
{
    printf("  %-18s %-34s %9.2f s  %10.0f instances/s\n", what, span, secs,
           secs > 0 ? n / secs : 0.0);
}

static void report_pg_rows(const PGresult *res, double n)
{
    printf("    %10s %9s %9s %10s  %s\n", "calls", "per inst", "mean ms",
           "total s", "statement");
    for (int i = 0; i < PQntuples(res); i++)
        printf("    %10lld %9.3f %9.3f %10.2f  %s\n",
               rw_pg_ll(res, i, "calls", 0),
               rw_bench_per((double)rw_pg_ll(res, i, "calls", 0), n),
               strtod(rw_pg_str(res, i, "mean_ms"), NULL),
               strtod(rw_pg_str(res, i, "exec_ms"), NULL) / 1000.0,
               rw_pg_str(res, i, "q"));
}

static void report_table_writes(bench_t *b, double n);

static void report_postgres(bench_t *b, double n)
{
    PGresult *res = NULL;
    char errstr[512], w[16] = "120", lim[16] = "10";
    const char *p[2] = {w, lim};

    printf("\npostgres (pg_stat_statements, database %s)\n", b->db);
    if (!b->pgss) {
        printf("  not available: pg_stat_statements is not preloaded\n");
        return;
    }
    if (rw_pg_exec(b->pg, SQL_PGSS_TOTAL, 0, NULL, &res, errstr,
                   sizeof(errstr))) {
        printf("  query failed: %s\n", errstr);
        return;
    }
    printf("  statements         %lld calls  %.2f per instance "
           "(%.2f per instance without BEGIN/COMMIT/ROLLBACK)\n",
           rw_pg_ll(res, 0, "calls", 0),
           rw_bench_per((double)rw_pg_ll(res, 0, "calls", 0), n),
           rw_bench_per((double)(rw_pg_ll(res, 0, "calls", 0) -
                                 rw_pg_ll(res, 0, "tx_calls", 0)),
                        n));
    printf("  execution time     %.2f s total  %.1f us per instance  "
           "(%lld distinct statements, %lld rows)\n",
           rw_bench_num(res, "exec_ms") / 1000.0,
           rw_bench_per(rw_bench_num(res, "exec_ms") * 1000.0, n),
           rw_pg_ll(res, 0, "statements", 0), rw_pg_ll(res, 0, "rows", 0));
    /* execution time counts a statement's waits for a core too; the
     * server's CPU time does not: it is the cost, the other the latency */
    if (b->pg_cpu >= 0) {
        char self[64] = "this program's own backend included";
        if (b->self_cpu >= 0)
            snprintf(self, sizeof(self),
                     "less this program's own backend, "
                     "%.2f s",
                     b->self_cpu);
        printf("  server CPU         %.2f s total  %.1f us per instance  "
               "(every process of the server during the rollout: "
               "backends, autovacuum, checkpointer, WAL writer; %s)\n",
               b->pg_cpu, rw_bench_per(b->pg_cpu * 1e6, n), self);
    }
    /* what the statements wrote to the WAL: a HOT update is one record,
     * an update whose new version cannot stay on its page also writes
     * one per index */
    printf("  WAL                %lld records  %.1f per instance, "
           "%.0f bytes per instance\n",
           rw_pg_ll(res, 0, "wal_records", 0),
           rw_bench_per((double)rw_pg_ll(res, 0, "wal_records", 0), n),
           rw_bench_per(rw_bench_num(res, "wal_bytes"), n));
    PQclear(res);
    res = NULL;
    if (!rw_pg_exec(b->pg, SQL_PGSS_TOP, 2, p, &res, errstr, sizeof(errstr))) {
        printf("  top 10 statements by calls\n");
        report_pg_rows(res, n);
    }
    PQclear(res);
    res = NULL;
    snprintf(lim, sizeof(lim), "12");
    if (!rw_pg_exec(b->pg, SQL_PGSS_SLOW, 2, p, &res, errstr, sizeof(errstr))) {
        printf("  top 12 statements by total execution time\n");
        report_pg_rows(res, n);
    }
    PQclear(res);
    report_table_writes(b, n);
}

/*
 * Row writes per table since the counters were reset (the rollout's, and
 * the statistics collector's view of them: flushed by each backend at
 * most once a second, so the last second may be missing). An update that
 * is not HOT writes an entry into every index of its table.
 */
static const char SQL_TABLE_WRITES[] =
    RW_BENCH_MARK "SELECT relname, n_tup_ins AS ins, n_tup_upd AS upd,"
                  " n_tup_hot_upd AS hot, n_tup_del AS del,"
                  " (SELECT count(*) FROM pg_index x WHERE x.indrelid = relid)"
                  "   AS indexes,"
                  " sum(n_tup_ins + n_tup_upd + n_tup_del) OVER () AS total"
                  " FROM pg_stat_user_tables"
                  " WHERE n_tup_ins + n_tup_upd + n_tup_del > 0"
                  " ORDER BY n_tup_ins + n_tup_upd + n_tup_del DESC LIMIT 12";

static void report_table_writes(bench_t *b, double n)
{
    PGresult *res = NULL;
    char errstr[512];

    if (rw_pg_exec(b->pg, "SELECT pg_stat_clear_snapshot()", 0, NULL, NULL,
                   errstr, sizeof(errstr)) ||
        rw_pg_exec(b->pg, SQL_TABLE_WRITES, 0, NULL, &res, errstr,
                   sizeof(errstr))) {
        printf("  table writes query failed: %s\n", errstr);
        PQclear(res);
        return;
    }
    printf("  row writes per instance (pg_stat_user_tables)\n");
    printf("    %-26s %8s %8s %8s %8s %8s\n", "table", "inserts", "updates",
           "HOT %", "deletes", "indexes");
    for (int i = 0; i < PQntuples(res); i++) {
        long long upd = rw_pg_ll(res, i, "upd", 0);
        printf("    %-26s %8.2f %8.2f %8.1f %8.2f %8lld\n",
               rw_pg_str(res, i, "relname"),
               rw_bench_per((double)rw_pg_ll(res, i, "ins", 0), n),
               rw_bench_per((double)upd, n),
               upd > 0
                   ? 100.0 * (double)rw_pg_ll(res, i, "hot", 0) / (double)upd
                   : 0.0,
               rw_bench_per((double)rw_pg_ll(res, i, "del", 0), n),
               rw_pg_ll(res, i, "indexes", 0));
    }
    if (PQntuples(res) > 0) {
        b->row_writes = rw_bench_per(rw_bench_num(res, "total"), n);
        printf("    %-26s %8.2f row writes per instance (inserts, updates "
               "and deletes)\n",
               "every table", b->row_writes);
    }
    PQclear(res);
}

/* The benchmark's own commands (INFO, CONFIG, SCAN) are left out. */
static int own_command(const char *name)
{
    return strcmp(name, "info") == 0 || strcmp(name, "config") == 0 ||
           strcmp(name, "config|resetstat") == 0 || strcmp(name, "scan") == 0;
}

static void report_redis(bench_t *b, double n, long long chunks)
{
    char *info = redis_info(b->rc, "commandstats");
    char *stats = redis_info(b->rc, "stats");
    long long total = 0, failed = 0;

    printf("\nredis (INFO commandstats; commands run inside Lua scripts "
           "count too)\n");
    for (char *l = info ? strtok(info, "\r\n") : NULL; l;
         l = strtok(NULL, "\r\n")) {
        char name[64];
        long long calls = 0;
        const char *c, *f;
        if (strncmp(l, "cmdstat_", 8) != 0)
            continue;
        c = strstr(l, "calls=");
        f = strstr(l, "failed_calls=");
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(l + 8, ":"), l + 8);
        if (own_command(name) || !c)
            continue;
        calls = atoll(c + 6);
        total += calls;
        if (f)
            failed += atoll(f + 13);
        printf("  %-18s %10lld calls  %.3f per instance\n", name, calls,
               rw_bench_per((double)calls, n));
    }
    printf("  %-18s %10lld calls  %.3f per instance  (%lld failed)\n",
           "all commands", total, rw_bench_per((double)total, n), failed);
    if (stats) {
        const char *t = strstr(stats, "total_commands_processed:");
        if (t)
            printf("  %-18s %10lld (server-wide, the benchmark's own "
                   "included)\n",
                   "commands processed", atoll(t + 25));
    }
    if (b->px_on) {
        unsigned long long rt = atomic_load(&b->px.round_trips);
        unsigned long long cmds = atomic_load(&b->px.commands);
        printf("  round trips        %10llu  %.3f per instance  %.2f per "
               "chunk  (proxy count, pipeline-aware)\n",
               rt, rw_bench_per((double)rt, n),
               rw_bench_per((double)rt, (double)chunks));
        printf("  commands sent      %10llu  %.3f per instance  %.2f per "
               "round trip  (%llu connections)\n",
               cmds, rw_bench_per((double)cmds, n),
               rw_bench_per((double)cmds, (double)rt),
               atomic_load(&b->px.connections));
    } else {
        printf("  round trips        not measured (--no-redis-proxy)\n");
    }
    free(info);
    free(stats);
}

/*
 * Where the two cores went during the rollout: each daemon's CPU seconds,
 * Postgres's and the machine's; the rest is Redis, the broker, the
 * simulator and this program. The window runs from the producer's start
 * to the progress check that saw the last run final, so it has a tail
 * of up to one progress interval (--progress-ms) that end to end does
 * not; the daemons' seconds run on to their SIGTERM, a moment later.
 * Statements that wait for a core count as execution time in
 * pg_stat_statements, so a busy machine inflates that figure; the
 * server's CPU seconds do not wait.
 */
static void report_cpu(const bench_t *b)
{
    double daemons = b->producer.cpu_s;

    printf("\nCPU seconds during the rollout (user + system; producer: "
           "getrusage)\n");
    printf("  %-18s %8.1f s\n", b->producer.name, b->producer.cpu_s);
    for (size_t i = 0; i < b->nd; i++) {
        const rw_bench_daemon_t *d = &b->d[i];
        if (d->cpu_s < 0) {
            printf("  %-18s %8s\n", d->name, "gone");
            continue;
        }
        printf("  %-18s %8.1f s\n", d->name, d->cpu_s);
        daemons += d->cpu_s;
    }
    if (b->cpu[0] < 0 || b->cpu[1] <= 0)
        return;
    printf("  machine, rollout   %8.1f s busy of %.1f (%.0f%%): rollwave's "
           "daemons %.1f, Postgres %.1f, the rest (Redis, broker, simulator, "
           "this program and its Postgres backend) %.1f\n",
           b->cpu[0], b->cpu[1], 100.0 * b->cpu[0] / b->cpu[1], daemons,
           b->pg_cpu >= 0 ? b->pg_cpu : 0.0,
           b->cpu[0] - daemons - (b->pg_cpu >= 0 ? b->pg_cpu : 0.0));
}

static void report_daemons(bench_t *b)
{
    double handled[2] = {0, 0}, dead[2] = {0, 0}, retried[2] = {0, 0},
           calls_ok[2] = {0, 0}, calls_err[2] = {0, 0};

    printf("\npeak RSS (VmHWM before SIGTERM; producer: getrusage)\n");
    printf("  %-18s %8.1f MiB\n", b->producer.name,
           (double)b->producer.hwm_kb / 1024.0);
    for (size_t i = 0; i < b->nd; i++) {
        rw_bench_daemon_t *d = &b->d[i];
        int k = strncmp(d->name, "worker", 6) == 0 ? 0 : 1;
        if (d->hwm_kb >= 0)
            printf("  %-18s %8.1f MiB\n", d->name, (double)d->hwm_kb / 1024.0);
        else
            printf("  %-18s %8s\n", d->name, "gone");
        if (!d->metrics)
            continue;
        handled[k] += rw_bench_metric_sum(
            d->metrics, "rollwave_messages_handled_total", NULL);
        dead[k] += rw_bench_metric_sum(
            d->metrics, "rollwave_messages_dead_lettered_total", NULL);
        retried[k] += rw_bench_metric_sum(
            d->metrics, "rollwave_messages_retried_total", NULL);
        calls_ok[k] += rw_bench_metric_sum(
            d->metrics, "rollwave_lagoon_calls_total", "outcome=\"ok\"");
        calls_err[k] += rw_bench_metric_sum(
            d->metrics, "rollwave_lagoon_calls_total", NULL);
    }
    report_cpu(b);
    printf("\ndaemon counters (/metrics before SIGTERM)\n");
    for (int k = 0; k < 2; k++)
        printf("  %-8s messages handled %.0f, dead-lettered %.0f, retried "
               "%.0f; Lagoon calls ok %.0f, failed %.0f\n",
               k ? "pollers" : "workers", handled[k], dead[k], retried[k],
               calls_ok[k], calls_err[k] - calls_ok[k]);
}

static void report_sim(bench_t *b, long long *dups)
{
    char url[600], *body = NULL;
    json_t *j = NULL;

    *dups = -1;
    printf("\nlagoon-sim (%s)\n", b->sim_config);
    snprintf(url, sizeof(url), "%s/sim/stats?triggers=false",
             b->env.sim_admin_url);
    if (rw_bench_http(url, NULL, &body) != 200 || !body ||
        !(j = json_loads(body, 0, NULL))) {
        printf("  /sim/stats not available\n");
        free(body);
        return;
    }
#define SIMI(k) ((long long)json_integer_value(json_object_get(j, k)))
    *dups = SIMI("duplicate_triggers");
    printf("  bulk calls %lld, environments triggered %lld (distinct %lld), "
           "max envs per call %lld\n",
           SIMI("bulk_calls"), SIMI("environments_triggered"),
           SIMI("distinct_environments"), SIMI("max_envs_per_call"));
    printf("  graphql requests %lld, peak concurrent builds %lld, duplicate "
           "triggers %lld\n",
           SIMI("graphql_requests"), SIMI("peak_concurrent_builds"), *dups);
#undef SIMI
    json_decref(j);
    free(body);
}

static void report(bench_t *b)
{
    PGresult *st = NULL, *runs = NULL, *sc = NULL;
    char errstr[512], pattern[128], span[64];
    double n, t_trig, t_poll, t_e2e;
    long long dups = -1, locks = -1, dead = 0;

    if (rw_pg_exec(b->pg, SQL_STAGES, 0, NULL, &st, errstr, sizeof(errstr)) ||
        rw_pg_exec(b->pg, SQL_RUNS, 0, NULL, &runs, errstr, sizeof(errstr)) ||
        rw_pg_exec(b->pg, SQL_STATUS_COUNTS, 0, NULL, &sc, errstr,
                   sizeof(errstr))) {
        printf("report queries failed: %s\n", errstr);
        goto out;
    }
    n = (double)rw_pg_ll(st, 0, "targets", 0);
    t_e2e = rw_bench_num(runs, "last_completed") - b->t_start;
    b->e2e_s = t_e2e;
    t_trig =
        rw_bench_num(st, "last_triggered") - rw_bench_num(st, "first_claimed");
    t_poll =
        rw_bench_num(st, "last_finished") - rw_bench_num(st, "first_triggered");

    printf("\nrollwave rollout benchmark\n");
    printf("  fleet              %lld instances, %lld store apps, chunk size "
           "%lld, seeded in %.1f s\n",
           b->o.instances, b->o.store_apps, b->o.chunk_size, b->seed_s);
    printf("  daemons            %lld workers, %lld pollers, first poll "
           "delay %lld s, poll interval 1 s\n",
           b->o.workers, b->o.workers, b->o.first_poll_delay_s);
    printf("  scheduled          %lld runs, %lld chunks, %.0f targets\n",
           rw_pg_ll(runs, 0, "runs", 0), rw_pg_ll(runs, 0, "chunks", 0), n);
    report_retention(b, t_e2e);

    printf("\nthroughput\n");
    print_rate("end to end", "producer start -> last run final", t_e2e, n);
    snprintf(span, sizeof(span), "producer --once x%d (tick + relay)",
             b->ticks);
    print_rate("schedule", span, b->producer_s, n);
    print_rate("trigger", "first claimed -> last triggered", t_trig, n);
    print_rate("poll to terminal", "first triggered -> last finished", t_poll,
               n);

    if (b->pgss)
        report_postgres(b, n);
    else
        printf("\npostgres: pg_stat_statements not available\n");
    report_redis(b, n, rw_pg_ll(runs, 0, "chunks", 0));
    report_daemons(b);
    report_sim(b, &dups);

    snprintf(pattern, sizeof(pattern), "%slock:instance:*", b->prefix);
    locks = redis_count_keys(b->rc, pattern);
    for (size_t i = 0; i < b->nd; i++)
        if (b->d[i].metrics)
            dead += (long long)rw_bench_metric_sum(
                b->d[i].metrics, "rollwave_messages_dead_lettered_total", NULL);

    printf("\ncorrectness\n");
    printf("  targets            %.0f of %lld instances (%lld distinct)\n", n,
           b->o.instances, rw_pg_ll(st, 0, "distinct_instances", 0));
    printf("  not terminal       %lld\n", rw_pg_ll(st, 0, "not_terminal", 0));
    printf("  outcomes           succeeded %lld, failed %lld, timed out "
           "%lld, skipped %lld, re-attempted %lld\n",
           rw_pg_ll(st, 0, "succeeded", 0), rw_pg_ll(st, 0, "failed", 0),
           rw_pg_ll(st, 0, "timed_out", 0), rw_pg_ll(st, 0, "skipped", 0),
           rw_pg_ll(st, 0, "retried", 0));
    printf("  runs               %lld final of %lld (%lld completed); "
           "counts differing from targets: %lld; not finalized exactly "
           "once: %lld\n",
           rw_pg_ll(runs, 0, "final", 0), rw_pg_ll(runs, 0, "runs", 0),
           rw_pg_ll(runs, 0, "completed", 0),
           rw_pg_ll(runs, 0, "bad_counts", 0),
           rw_pg_ll(runs, 0, "not_finalized_once", 0));
    printf("  duplicate triggers %lld (lagoon-sim)\n", dups);
    printf("  outbox unpublished %lld of %lld rows\n",
           rw_pg_ll(runs, 0, "unpublished", 0),
           rw_pg_ll(runs, 0, "outbox_rows", 0));
    printf("  lock keys left     %lld\n", locks);
    printf("  status changed     %lld instances\n",
           llabs(rw_pg_ll(sc, 0, "claimed", 0) - b->claimed0) +
               llabs(rw_pg_ll(sc, 0, "unclaimed", 0) - b->unclaimed0));
    printf("  dead-lettered      %lld messages\n", dead);
out:
    PQclear(st);
    PQclear(runs);
    PQclear(sc);
}

/* ---- the bulk-write ceiling ------------------------------------------- */

/*
 * What one client gets out of this Postgres when it writes targets the way
 * rollwave does (one UPDATE ... FROM unnest over arrays), on a scratch copy
 * of run_targets: same columns, types, defaults, checks and indexes (LIKE
 * ... INCLUDING ALL copies neither foreign keys nor triggers). Explicit ids
 * leave run_targets' sequence alone.
 */
#define SCRATCH "rwbench_scratch_targets"

static const char SQL_SCRATCH_DROP[] =
    RW_BENCH_MARK "DROP TABLE IF EXISTS " SCRATCH;

static const char SQL_SCRATCH_CREATE[] =
    RW_BENCH_MARK "CREATE TABLE " SCRATCH " (LIKE run_targets INCLUDING ALL)";

static const char SQL_SCRATCH_FILL[] = RW_BENCH_MARK
    "INSERT INTO " SCRATCH " (id, run_id, instance_id, chunk, state,"
    "     attempt, lagoon_project, lagoon_environment)"
    " SELECT g, 1 + g / 1000, g, (g % 1000) / 50, 'pending', 0,"
    "        'bench-p' || g, 'main'"
    "   FROM generate_series(1, $1::bigint) g";

static const char SQL_SCRATCH_VACUUM[] =
    RW_BENCH_MARK "VACUUM (ANALYZE) " SCRATCH;

/* The columns a state change of rollwave's moves along with the state. */
static const char SQL_SCRATCH_UPDATE[] = RW_BENCH_MARK
    "UPDATE " SCRATCH " t SET state = u.state, updated_at = now(),"
    " attempt = CASE WHEN u.state = 'claimed' THEN t.attempt + 1"
    "           ELSE t.attempt END,"
    " claimed_at = CASE WHEN u.state = 'claimed' THEN now()"
    "              ELSE t.claimed_at END,"
    " triggered_at = CASE WHEN u.state = 'triggered' THEN now()"
    "                ELSE t.triggered_at END,"
    " finished_at = CASE WHEN u.state IN ('succeeded', 'failed',"
    "                                    'timed_out') THEN now()"
    "               ELSE t.finished_at END"
    " FROM unnest($1::bigint[], $2::text[]) AS u(id, state)"
    " WHERE t.id = u.id";

/* Rollwave's statements that write run_targets (rw_state.c: an UPDATE
 * run_targets at the top or in a CTE) and the rows written to the table:
 * its own counter, since pg_stat_statements counts the one result row of a
 * statement whose CTEs do the writing. The benchmark's database is fresh:
 * every update of run_targets in it is rollwave's. */
static const char SQL_PGSS_TARGET_WRITES[] = RW_BENCH_MARK
    "SELECT (SELECT n_tup_upd FROM pg_stat_user_tables"
    "        WHERE relname = 'run_targets')::bigint AS rows,"
    " COALESCE(sum(calls), 0)::bigint AS calls,"
    " count(*) AS statements,"
    " COALESCE(sum(total_exec_time), 0)::float8 AS exec_ms"
    " FROM pg_stat_statements s"
    " WHERE s.dbid = (SELECT oid FROM pg_database"
    "                 WHERE datname = current_database())"
    "   AND s.query NOT LIKE '%rollwave-bench%'"
    "   AND s.query ~* '^\\s*(WITH\\M.*\\m)?UPDATE\\s+run_targets\\M'";

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, c = *(const double *)y;
    return (a > c) - (a < c);
}

/* Median wall time in ms of 3 updates of rows rows, each to a new state. */
static rw_err_t ceiling_measure(bench_t *b, long long rows, double *median_ms,
                                char *errstr, size_t errlen)
{
    static const char *const states[3] = {"claimed", "triggered", "succeeded"};
    rw_err_t err = RW_OK;
    rw_pg_array_t ids, st;
    PGresult *res = NULL;
    double ms[3];
    char n_s[24];
    const char *p[2];

    rw_pg_array_init(&ids);
    rw_pg_array_init(&st);
    snprintf(n_s, sizeof(n_s), "%lld", rows);
    p[0] = n_s;
    err = rw_pg_exec(b->pg, SQL_SCRATCH_DROP, 0, NULL, NULL, errstr, errlen);
    if (!err)
        err = rw_pg_exec(b->pg, SQL_SCRATCH_CREATE, 0, NULL, NULL, errstr,
                         errlen);
    if (!err)
        err = rw_pg_exec(b->pg, SQL_SCRATCH_FILL, 1, p, NULL, errstr, errlen);
    if (!err)
        err = rw_pg_exec(b->pg, SQL_SCRATCH_VACUUM, 0, NULL, NULL, errstr,
                         errlen);
    if (err)
        goto out;
    for (long long i = 1; i <= rows; i++)
        rw_pg_array_add_ll(&ids, i);
    p[0] = rw_pg_array_finish(&ids);
    if (!p[0]) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int k = 0; k < 3; k++) {
        long long t0;
        rw_pg_array_free(&st);
        rw_pg_array_init(&st);
        for (long long i = 0; i < rows; i++)
            rw_pg_array_add_str(&st, states[k]);
        p[1] = rw_pg_array_finish(&st);
        if (!p[1]) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
        t0 = rw_bench_mono_ms();
        err = rw_pg_exec(b->pg, SQL_SCRATCH_UPDATE, 2, p, &res, errstr, errlen);
        ms[k] = (double)(rw_bench_mono_ms() - t0);
        if (err)
            goto out;
        /* a statement that moved fewer rows would flatter the ceiling */
        if (atoll(PQcmdTuples(res)) != rows) {
            err = rw_err_set(errstr, errlen, RW_ERR_PG_QUERY,
                             "scratch update moved %s rows of %lld",
                             PQcmdTuples(res), rows);
            goto out;
        }
        PQclear(res);
        res = NULL;
    }
    qsort(ms, 3, sizeof(ms[0]), cmp_double);
    *median_ms = ms[1];
out:
    PQclear(res);
    rw_pg_array_free(&ids);
    rw_pg_array_free(&st);
    return err;
}

/*
 * After the report, so that the rollout's figures are not disturbed: the
 * ceiling, and rollwave's target writes as a share of it.
 */
static void report_ceiling(bench_t *b)
{
    PGresult *res = NULL;
    char errstr[512];
    double median_ms = 0, ceiling, exec_s, rows;
    rw_err_t err;

    if (b->o.ceiling_rows <= 0)
        return;
    printf("\nbulk-write ceiling (one UPDATE ... FROM unnest of %lld rows "
           "on a scratch copy\nof run_targets, no triggers or foreign keys; "
           "median wall time of 3)\n",
           b->o.ceiling_rows);
    fflush(stdout);
    err = ceiling_measure(b, b->o.ceiling_rows, &median_ms, errstr,
                          sizeof(errstr));
    if (rw_pg_exec(b->pg, SQL_SCRATCH_DROP, 0, NULL, NULL, errstr + 256,
                   sizeof(errstr) - 256))
        fprintf(stderr, "bench: drop %s: %s\n", SCRATCH, errstr + 256);
    if (err) {
        printf("  not measured: %s\n", errstr);
        return;
    }
    ceiling = rw_bench_per((double)b->o.ceiling_rows, median_ms / 1000.0);
    printf("  bulk-write ceiling  %.0f rows/s  (%.1f ms per %lld rows)\n",
           ceiling, median_ms, b->o.ceiling_rows);
    /* what the rollout's row writes would cost if each were as cheap as
     * one row of the ceiling's: below this, only fewer writes go */
    if (b->row_writes > 0 && ceiling > 0)
        printf("  floor               %.0f us per instance: %.2f row writes "
               "per instance at the ceiling's %.1f us per row\n",
               b->row_writes * 1e6 / ceiling, b->row_writes, 1e6 / ceiling);
    if (!b->pgss) {
        printf("  rollwave writes     not measured (no pg_stat_statements)\n");
        return;
    }
    if (rw_pg_exec(b->pg, SQL_PGSS_TARGET_WRITES, 0, NULL, &res, errstr,
                   sizeof(errstr))) {
        printf("  rollwave writes     query failed: %s\n", errstr);
        return;
    }
    rows = (double)rw_pg_ll(res, 0, "rows", 0);
    exec_s = rw_bench_num(res, "exec_ms") / 1000.0;
    printf("  rollwave writes     %.0f rows/s (%.1f%% of the ceiling)  "
           "per second of their execution: %.0f rows in %lld calls of "
           "%lld statements, %.2f s\n",
           rw_bench_per(rows, exec_s),
           100.0 * rw_bench_per(rw_bench_per(rows, exec_s), ceiling), rows,
           rw_pg_ll(res, 0, "calls", 0), rw_pg_ll(res, 0, "statements", 0),
           exec_s);
    printf("  rollwave writes     %.0f rows/s (%.1f%% of the ceiling)  "
           "per second of the %.1f s rollout\n",
           rw_bench_per(rows, b->e2e_s),
           100.0 * rw_bench_per(rw_bench_per(rows, b->e2e_s), ceiling),
           b->e2e_s);
    PQclear(res);
}

/* ---- main ------------------------------------------------------------- */

static void cleanup(bench_t *b)
{
    char errstr[512];

    stop_daemons(b);
    proxy_stop(&b->px);
    rw_pg_destroy(b->pg);
    b->pg = NULL;
    if (b->admin && b->db[0]) {
        if (b->o.keep_db)
            fprintf(stderr, "bench: kept database %s\n", b->db);
        else if (rw_bench_admin_db(b->admin, "DROP DATABASE IF EXISTS", b->db,
                                   " WITH (FORCE)", errstr, sizeof(errstr)))
            fprintf(stderr, "bench: drop database %s: %s\n", b->db, errstr);
    }
    rw_pg_destroy(b->admin);
    b->admin = NULL;
    redisFree(b->rc);
    b->rc = NULL;
    for (size_t i = 0; i < b->nd; i++)
        free(b->d[i].metrics);
}

static rw_err_t prepare(bench_t *b, char *errstr, size_t errlen)
{
    rw_err_t err;

    err = rw_bench_dirs(b->o.bin_dir, b->o.log_dir, "rollwave-bench",
                        b->bin_dir, b->log_dir, errstr, errlen);
    if (err)
        return err;
    snprintf(b->prefix, sizeof(b->prefix), "rwbench-%d-%lld.", (int)getpid(),
             (long long)time(NULL));

    err = rw_redis_url_parse(&b->rurl, b->env.redis_url, errstr, errlen);
    if (err)
        return err;
    b->rc = redis_open(&b->rurl, errstr, errlen);
    if (!b->rc)
        return RW_ERR_REDIS_CONN;
    b->px.lfd = -1;
    if (b->o.redis_proxy && !b->rurl.is_unix && !b->rurl.password[0]) {
        err = proxy_start(&b->px, b->rurl.host, b->rurl.port, errstr, errlen);
        if (err)
            return err;
        b->px_on = 1;
    } else if (b->o.redis_proxy) {
        fprintf(stderr, "bench: Redis round trips not counted (the proxy "
                        "handles TCP without a password only)\n");
    }
    return setup_db(b, errstr, errlen);
}

static rw_err_t start_consumers(bench_t *b, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;

    for (long long i = 0; i < b->o.workers && !err; i++) {
        rw_bench_daemon_t *w = &b->d[b->nd++];
        snprintf(w->name, sizeof(w->name), "worker-%lld", i + 1);
        err = start_daemon(b, w, "rollwave-worker", "worker", NULL, errstr,
                           errlen);
    }
    for (long long i = 0; i < b->o.workers && !err; i++) {
        rw_bench_daemon_t *p = &b->d[b->nd++];
        snprintf(p->name, sizeof(p->name), "poller-%lld", i + 1);
        err = start_daemon(b, p, "rollwave-poller", "poller", NULL, errstr,
                           errlen);
    }
    if (!err)
        err = wait_healthy(b, errstr, errlen);
    if (!err && b->o.warmup_s > 0) {
        fprintf(stderr,
                "bench: %zu daemons healthy; waiting up to %lld s for the "
                "consumer groups to form\n",
                b->nd, b->o.warmup_s);
        err = rw_bench_wait_groups(b->d, b->nd, b->o.warmup_s, errstr, errlen);
    }
    return err;
}

int main(int argc, char **argv)
{
    bench_t *b = calloc(1, sizeof(*b));
    char errstr[1024] = "";
    rw_err_t err = RW_OK;
    int rc = 0;

    if (!b)
        return 1;
    b->o.instances = 100000;
    b->o.workers = 2;
    b->o.store_apps = 10;
    b->o.chunk_size = 50;
    b->o.first_poll_delay_s = 0;
    b->o.timeout_s = 3600;
    b->o.warmup_s = 60;
    b->o.progress_ms = 0;
    b->o.ceiling_rows = 100000;
    b->o.child_log_level = "warn";
    b->o.redis_proxy = 1;
    b->px.lfd = -1;
    rc = parse_args(argc, argv, &b->o);
    if (rc) {
        free(b);
        return rc > 0 ? 0 : 2;
    }
    /* the progress query scans every target: at a million a line a
     * second would take a visible share of Postgres from the rollout */
    if (b->o.per_tick == 0)
        b->o.per_tick = b->o.instances < 200000 ? b->o.instances : 200000;
    if (b->o.progress_ms == 0)
        b->o.progress_ms =
            b->o.instances > 100000 ? b->o.instances / 100 : 1000;
    err = rw_config_load(rw_bench_env_keys, rw_bench_n_env_keys, &b->env, NULL,
                         NULL, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "rollwave-bench-rollout: config error: %s\n", errstr);
        rw_config_free(rw_bench_env_keys, rw_bench_n_env_keys, &b->env);
        free(b);
        return 2;
    }
    rw_bench_signals();
    curl_global_init(CURL_GLOBAL_DEFAULT);

    err = prepare(b, errstr, sizeof(errstr));
    if (!err)
        err = reset_counters(b, errstr, sizeof(errstr));
    if (!err)
        err = start_consumers(b, errstr, sizeof(errstr));
    if (!err) {
        fprintf(stderr,
                "bench: producer --once over %lld instances (topic "
                "prefix %s, logs in %s)\n",
                b->o.instances, b->prefix, b->log_dir);
        err = run_rollout(b, errstr, sizeof(errstr));
    }
    if (!err) {
        stop_daemons(b);
        report(b);
        report_ceiling(b);
    } else {
        fprintf(stderr, "rollwave-bench-rollout: %s: %s\n", rw_err_name(err),
                errstr);
        rc = 1;
    }
    cleanup(b);
    curl_global_cleanup();
    rw_config_free(rw_bench_env_keys, rw_bench_n_env_keys, &b->env);
    free(b);
    return rc;
}
