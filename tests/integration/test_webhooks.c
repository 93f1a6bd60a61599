/*
 * test_webhooks: run-event webhooks end to end (DESIGN.md section 12,
 * "Webhooks"): subscriptions made with rollwavectl, deliveries written by
 * the run's transitions and sent by the producer's deliverer to receivers
 * in this process.
 *
 * One fleet, two store apps, one rollout each, and these receivers:
 *   /good    answers 200: run.started and run.finished of app A come once
 *            each, signed (the right secret verifies, a wrong one does
 *            not), counts equal to the run's, no secret in any payload;
 *   /flaky   answers 500 twice per delivery, then 200: the same delivery
 *            id three times, gaps at least the backoff and its double,
 *            delivered on the third attempt (the attempt limit);
 *   /dead    always 500, fleet-wide: dead after the limit with the reason;
 *   a socket that accepts and never answers: app A's run ends while its
 *            first attempt is held (a timeout longer than any rollout);
 *            40 older deliveries queued by hand for it and another
 *            silent subscription do not delay one to /healthy (one
 *            request per subscription in flight); a producer started
 *            with a short timeout then records the timeout;
 *   /paused  app B's threshold pause arrives with its reason;
 *   /failed  app C's scheduled run, failed at creation by its stored
 *            strategy, sends run.failed (and never run.started).
 * Then rollwavectl's refusals (a repeated event, a secret short in
 * characters), --secret-file, list (no secret), deliveries and test, and
 * the daemons' logs hold no secret. Waits are conditions with deadlines.
 */
#include "rw_itest.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "rw_itest_fleet.h"
#include "rw_webhook.h"

#define SECRET_GOOD    "good-secret-4f1c9a7e2b"
#define SECRET_FLAKY   "flaky-secret-8d2e6b0c1a"
#define SECRET_DEAD    "dead-secret-3b7a9f4e6d"
#define SECRET_HOLE    "hole-secret-0e5c8a2f7b"
#define SECRET_PAUSED  "paused-secret-6a1d3c9e5f"
#define SECRET_FAILED  "failed-secret-9c4b2e7a1d"
#define SECRET_SILENT  "silent-secret-2d8f4a6c0e"
#define SECRET_HEALTHY "healthy-secret-7e3b1f9d5a"
/* silent receivers hold an attempt this long: longer than any rollout */
#define LONG_TIMEOUT "120000"
/* deliveries queued by hand for a silent receiver ahead of a healthy one */
#define N_QUEUED   40
#define BACKOFF_MS 300
#define MAX_REQ    64

/* One request a receiver saw. */
typedef struct req {
    char path[16];
    char event[32];
    char delivery[32];
    char sig[RW_WEBHOOK_SIG_LEN + 8];
    char *body;
    long long at_ms;
} req_t;

/* A body being received. */
typedef struct upload {
    char *buf;
    size_t len;
} upload_t;

static struct {
    pthread_mutex_t mu;
    req_t reqs[MAX_REQ];
    int n;
    struct MHD_Daemon *d;
    int hole; /* listening socket: accepts, never reads nor answers */
    pthread_t hole_thread;
    bool hole_running;
    int conns[MAX_REQ]; /* connections it accepted, held open */
    int n_conns;
} rx = {.mu = PTHREAD_MUTEX_INITIALIZER, .hole = -1};

static long long deadline_ms(long long ms)
{
    const char *v = getenv("RW_SANITIZED");
    bool sanitized = RW_ITEST_ASAN || (v && *v && strcmp(v, "0") != 0);

    return sanitized ? 2 * ms : ms;
}

/* Requests of path so far for delivery id (NULL = any). */
static int count_reqs(const char *path, const char *delivery)
{
    int n = 0;

    pthread_mutex_lock(&rx.mu);
    for (int i = 0; i < rx.n; i++)
        if (strcmp(rx.reqs[i].path, path) == 0 &&
            (!delivery || strcmp(rx.reqs[i].delivery, delivery) == 0))
            n++;
    pthread_mutex_unlock(&rx.mu);
    return n;
}

/* Connections the silent receiver has accepted so far. */
static int hole_conns(void)
{
    int n;

    pthread_mutex_lock(&rx.mu);
    n = rx.n_conns;
    pthread_mutex_unlock(&rx.mu);
    return n;
}

/* Accept every connection and hold it: a receiver that never answers. */
static void *hole_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(rx.hole, NULL, NULL);
        if (fd < 0)
            return NULL; /* shut down by receivers_stop */
        pthread_mutex_lock(&rx.mu);
        if (rx.n_conns < MAX_REQ)
            rx.conns[rx.n_conns++] = fd;
        else
            close(fd);
        pthread_mutex_unlock(&rx.mu);
    }
}

static const char *hdr(struct MHD_Connection *c, const char *name)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
    return v ? v : "";
}

static enum MHD_Result on_req(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *data,
                              size_t *size, void **con_cls)
{
    upload_t *up = *con_cls;
    unsigned status = 200;
    struct MHD_Response *r;
    enum MHD_Result ret;

    (void)cls;
    (void)method;
    (void)version;
    if (!up) {
        up = calloc(1, sizeof(*up));
        *con_cls = up;
        return up ? MHD_YES : MHD_NO;
    }
    if (*size) {
        char *nb = realloc(up->buf, up->len + *size + 1);
        if (!nb)
            return MHD_NO;
        memcpy(nb + up->len, data, *size);
        up->buf = nb;
        up->len += *size;
        up->buf[up->len] = '\0';
        *size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&rx.mu);
    if (rx.n < MAX_REQ) {
        req_t *q = &rx.reqs[rx.n++];
        int seen = 0;
        snprintf(q->path, sizeof(q->path), "%s", url);
        snprintf(q->event, sizeof(q->event), "%s", hdr(c, "X-Rollwave-Event"));
        snprintf(q->delivery, sizeof(q->delivery), "%s",
                 hdr(c, "X-Rollwave-Delivery"));
        snprintf(q->sig, sizeof(q->sig), "%s", hdr(c, "X-Rollwave-Signature"));
        q->body = up->buf ? strdup(up->buf) : strdup("");
        q->at_ms = rw_itest_now_ms();
        for (int i = 0; i < rx.n; i++)
            if (strcmp(rx.reqs[i].path, url) == 0 &&
                strcmp(rx.reqs[i].delivery, q->delivery) == 0)
                seen++;
        if (strcmp(url, "/dead") == 0 ||
            (strcmp(url, "/flaky") == 0 && seen < 3))
            status = 500;
    }
    pthread_mutex_unlock(&rx.mu);
    r = MHD_create_response_from_buffer(2, (void *)"ok",
                                        MHD_RESPMEM_PERSISTENT);
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    upload_t *up = *con_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (up) {
        free(up->buf);
        free(up);
    }
    *con_cls = NULL;
}

/* Start the receivers; their ports into *port and *hole_port. */
static void receivers_start(int *port, int *hole_port)
{
    const union MHD_DaemonInfo *info;
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);

    rx.d = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL,
        NULL, on_req, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
        MHD_OPTION_END);
    assert_non_null(rx.d);
    info = MHD_get_daemon_info(rx.d, MHD_DAEMON_INFO_BIND_PORT);
    assert_non_null(info);
    *port = info->port;
    /* accepted and counted, never read, never answered */
    rx.hole = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(rx.hole >= 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(rx.hole, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(rx.hole, 16), 0);
    assert_int_equal(getsockname(rx.hole, (struct sockaddr *)&a, &alen), 0);
    *hole_port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&rx.hole_thread, NULL, hole_main, NULL), 0);
    rx.hole_running = true;
}

static void receivers_stop(void)
{
    if (rx.d)
        MHD_stop_daemon(rx.d);
    rx.d = NULL;
    if (rx.hole >= 0)
        shutdown(rx.hole, SHUT_RDWR); /* wakes the accept */
    if (rx.hole_running)
        pthread_join(rx.hole_thread, NULL);
    rx.hole_running = false;
    if (rx.hole >= 0)
        close(rx.hole);
    rx.hole = -1;
    for (int i = 0; i < rx.n_conns; i++)
        close(rx.conns[i]);
    rx.n_conns = 0;
    for (int i = 0; i < rx.n; i++)
        free(rx.reqs[i].body);
    rx.n = 0;
}

/* ---- fleet ---- */

static long long add_app(rw_itest_fleet_t *f)
{
    long long app = rw_itest_fleet_add_app(f, 0);
    char app_s[24];
    const char *p[1] = {app_s};

    snprintf(app_s, sizeof(app_s), "%lld", app);
    PQclear(rw_itest_fleet_q(f,
                             "UPDATE store_apps SET redeploy_enabled = false"
                             " WHERE id = $1::bigint",
                             1, p));
    return app;
}

/* rollwavectl webhook add ...: the new id; the output into out. */
static long long hook_add(rw_itest_fleet_t *f, const char *url,
                          const char *events, long long app, const char *secret,
                          char *out, size_t len)
{
    char app_s[24];
    const char *argv[12] = {"rollwavectl", "webhook",  "add", "--url",
                            url,           "--events", events};
    int n = 7, rc;
    long long id = -1;

    snprintf(app_s, sizeof(app_s), "%lld", app);
    if (app > 0) {
        argv[n++] = "--store-app";
        argv[n++] = app_s;
    }
    if (secret) {
        argv[n++] = "--secret";
        argv[n++] = secret;
    }
    argv[n] = NULL;
    rc = rw_itest_fleet_run(f, argv, out, len);
    if (rc != 0 || sscanf(out, "webhook %lld added", &id) != 1)
        fail_msg("webhook add exited %d: %s", rc, out);
    return id;
}

static void redeploy(rw_itest_fleet_t *f, long long app, char *uuid, size_t len)
{
    char app_s[24], out[4096];
    const char *argv[] = {"rollwavectl", "redeploy", "--store-app", app_s,
                          "--by",        "itest",    NULL};
    const char *p[1] = {app_s};
    PGresult *res;
    int rc;

    snprintf(app_s, sizeof(app_s), "%lld", app);
    rc = rw_itest_fleet_run(f, argv, out, sizeof(out));
    if (rc != 0)
        fail_msg("redeploy --store-app %s exited %d: %s", app_s, rc, out);
    res = rw_itest_fleet_q(f,
                           "SELECT uuid::text FROM deployment_runs"
                           " WHERE store_app_id = $1::bigint",
                           1, p);
    assert_int_equal(PQntuples(res), 1);
    snprintf(uuid, len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

/* Wait until sql (first column, $1 = p1) is at least want. */
static void wait_ll(rw_itest_fleet_t *f, const char *sql, const char *p1,
                    long long want, long long timeout_ms, const char *what)
{
    const char *p[1] = {p1};
    long long deadline = rw_itest_now_ms() + deadline_ms(timeout_ms);
    long long v;

    for (;;) {
        v = rw_itest_fleet_ll(f, sql, p1 ? 1 : 0, p);
        if (v >= want)
            return;
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("%s: %lld, want %lld", what, v, want);
        }
        rw_itest_sleep_ms(50);
    }
}

static void wait_reqs(rw_itest_fleet_t *f, const char *path, int want,
                      long long timeout_ms)
{
    long long deadline = rw_itest_now_ms() + deadline_ms(timeout_ms);

    while (count_reqs(path, NULL) < want) {
        rw_itest_fleet_poll_kids(f);
        if (rw_itest_now_ms() > deadline) {
            rw_itest_fleet_dump_logs(f);
            fail_msg("%s got %d requests, want %d", path,
                     count_reqs(path, NULL), want);
        }
        rw_itest_sleep_ms(50);
    }
}

/* A copy of the i-th request of path (NULL when there is none). */
static bool nth_req(const char *path, int nth, req_t *out)
{
    bool found = false;

    pthread_mutex_lock(&rx.mu);
    for (int i = 0, k = 0; i < rx.n && !found; i++)
        if (strcmp(rx.reqs[i].path, path) == 0 && k++ == nth) {
            *out = rx.reqs[i];
            found = true;
        }
    pthread_mutex_unlock(&rx.mu);
    return found;
}

static bool has_secret(const char *s)
{
    static const char *const secrets[] = {
        SECRET_GOOD,   SECRET_FLAKY,  SECRET_DEAD,   SECRET_HOLE,
        SECRET_PAUSED, SECRET_FAILED, SECRET_SILENT, SECRET_HEALTHY};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        if (strstr(s, secrets[i]))
            return true;
    return false;
}

/* The good receiver's request for event: verified, counted, checked. */
static json_t *good_req(const char *path, const char *event, const char *secret,
                        char *delivery, size_t dlen)
{
    json_t *body = NULL;
    req_t q;
    int found = 0;

    for (int i = 0; nth_req(path, i, &q); i++) {
        if (strcmp(q.event, event) != 0)
            continue;
        found++;
        assert_true(rw_webhook_verify(secret, q.body, strlen(q.body), q.sig));
        assert_false(
            rw_webhook_verify(SECRET_FLAKY, q.body, strlen(q.body), q.sig));
        assert_false(has_secret(q.body));
        snprintf(delivery, dlen, "%s", q.delivery);
        body = json_loads(q.body, 0, NULL);
        assert_non_null(body);
        assert_string_equal(json_string_value(json_object_get(body, "event")),
                            event);
    }
    if (found != 1)
        fail_msg("%s got %s %d times, want once", path, event, found);
    return body;
}

static void test_webhooks(void **state)
{
    rw_itest_fleet_t *f = rw_itest_fleet_new(
        "{\"rows_delay_ms\":100,\"phase_ms\":50,\"build_min_ms\":100,"
        "\"build_max_ms\":300,\"fail\":[\"wb[1-3]/main\"]}",
        2);
    long long a, b, c, h_failed, h_good, h_flaky, h_dead, h_hole, h_paused;
    long long h_silent, h_healthy;
    char url[128], out[16384], err[4096], ua[40], ub[40], d1[32], d2[32],
        hole_s[24];
    int port = 0, hole_port = 0;
    pid_t pids[4];
    json_t *j;

    *state = f;
    receivers_start(&port, &hole_port);
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_MS", "300");
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_INTERVAL_MS", "300");
    rw_itest_fleet_set(f, "ROLLWAVE_SWEEP_INTERVAL_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_TICK_INTERVAL_S", "86400");
    rw_itest_fleet_set(f, "ROLLWAVE_WEBHOOK_POLL_MS", "50");
    rw_itest_fleet_set(f, "ROLLWAVE_WEBHOOK_BACKOFF_MS", "300");
    rw_itest_fleet_set(f, "ROLLWAVE_WEBHOOK_MAX_ATTEMPTS", "3");
    rw_itest_fleet_set(f, "ROLLWAVE_WEBHOOK_TIMEOUT_MS", LONG_TIMEOUT);
    a = add_app(f);
    b = add_app(f);
    rw_itest_fleet_add_instances(f, a, "wa", 4);
    rw_itest_fleet_add_instances(f, b, "wb", 8);
    /* enabled and due: the producer's first tick creates its run, which
     * its strategy (edited by hand into invalid JSON) fails at once */
    c = rw_itest_fleet_add_app(f, 0);
    rw_itest_fleet_add_instances(f, c, "wc", 2);
    {
        char c_s[24];
        const char *p[2] = {c_s, "{\"waves\": [\"1\", "};
        snprintf(c_s, sizeof(c_s), "%lld", c);
        PQclear(rw_itest_fleet_q(f,
                                 "UPDATE store_apps SET strategy = $2"
                                 " WHERE id = $1::bigint",
                                 2, p));
    }
    {
        char b_s[24];
        const char *p[2] = {b_s, "{\"waves\":[\"4\",\"100%\"],\"bake\":\"0\","
                                 "\"max_failures_wave\":\"1\"}"};
        snprintf(b_s, sizeof(b_s), "%lld", b);
        PQclear(rw_itest_fleet_q(f,
                                 "UPDATE store_apps SET strategy = $2"
                                 " WHERE id = $1::bigint",
                                 2, p));
    }

    /* refusals: unknown event, not http(s), unknown store app */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/good", port);
    {
        const char *bad_event[] = {"rollwavectl",
                                   "webhook",
                                   "add",
                                   "--url",
                                   url,
                                   "--events",
                                   "run.started,run.exploded",
                                   NULL};
        const char *bad_url[] = {"rollwavectl",
                                 "webhook",
                                 "add",
                                 "--url",
                                 "ftp://user:pw@example.com/x",
                                 "--events",
                                 "run.started",
                                 NULL};
        const char *bad_app[] = {
            "rollwavectl", "webhook",     "add",         "--url",  url,
            "--events",    "run.started", "--store-app", "999999", NULL};
        assert_int_equal(rw_itest_fleet_run_err(f, bad_event, out, sizeof(out),
                                                err, sizeof(err)),
                         2);
        assert_non_null(strstr(err, "run.exploded"));
        assert_int_equal(rw_itest_fleet_run_err(f, bad_url, out, sizeof(out),
                                                err, sizeof(err)),
                         2);
        assert_non_null(strstr(err, "--url"));
        assert_null(strstr(err, "pw@"));
        assert_int_equal(rw_itest_fleet_run_err(f, bad_app, out, sizeof(out),
                                                err, sizeof(err)),
                         1);
        assert_non_null(strstr(err, "999999"));
    }
    /*
     * a long list that repeats an event (it once overflowed the array
     * literal), a secret of 16 bytes but 8 characters as the table
     * counts them, both secret options
     */
    {
        char many[45 * 11 + 1] = "";
        const char *dup[] = {"rollwavectl", "webhook",  "add", "--url",
                             url,           "--events", many,  NULL};
        const char *mb[] = {
            "rollwavectl",
            "webhook",
            "add",
            "--url",
            url,
            "--events",
            "run.failed",
            "--secret",
            "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3"
            "\xa9\xc3\xa9",
            NULL};
        const char *both[] = {"rollwavectl",   "webhook",   "add",
                              "--url",         url,         "--events",
                              "run.failed",    "--secret",  SECRET_GOOD,
                              "--secret-file", "/dev/null", NULL};
        for (int i = 0; i < 45; i++)
            strcat(many, i ? ",run.failed" : "run.failed");
        assert_int_equal(
            rw_itest_fleet_run_err(f, dup, out, sizeof(out), err, sizeof(err)),
            2);
        assert_non_null(strstr(err, "'run.failed' given twice"));
        assert_int_equal(
            rw_itest_fleet_run_err(f, mb, out, sizeof(out), err, sizeof(err)),
            2);
        assert_non_null(strstr(err, "at least 16 characters"));
        assert_int_equal(
            rw_itest_fleet_run_err(f, both, out, sizeof(out), err, sizeof(err)),
            2);
        assert_int_equal(
            rw_itest_fleet_ll(f, "SELECT count(*) FROM webhooks", 0, NULL), 0);
    }

    h_good = hook_add(f, url, "run.started,run.finished", a, SECRET_GOOD, out,
                      sizeof(out));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/flaky", port);
    h_flaky =
        hook_add(f, url, "run.finished", a, SECRET_FLAKY, out, sizeof(out));
    /* fleet-wide, with a secret of rollwave's: printed once, 64 hex */
    snprintf(url, sizeof(url), "http://itest:%s@127.0.0.1:%d/dead?k=v",
             "url-password-5e2a", port);
    h_dead = hook_add(f, url, "run.started", 0, NULL, out, sizeof(out));
    {
        char gen[80] = "";
        assert_int_equal(sscanf(strstr(out, "secret ") + 7, "%79s", gen), 1);
        assert_int_equal(strlen(gen), RW_WEBHOOK_SECRET_LEN);
        assert_int_equal(strspn(gen, "0123456789abcdef"), strlen(gen));
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/hole", hole_port);
    h_hole = hook_add(f, url, "run.started", a, SECRET_HOLE, out, sizeof(out));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/paused", port);
    h_paused =
        hook_add(f, url, "run.paused", b, SECRET_PAUSED, out, sizeof(out));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/failed", port);
    h_failed = hook_add(f, url, "run.started,run.failed", c, SECRET_FAILED, out,
                        sizeof(out));
    /* for deliveries queued by hand (A is never cancelled) */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/silent", hole_port);
    h_silent =
        hook_add(f, url, "run.cancelled", a, SECRET_SILENT, out, sizeof(out));
    /* --secret-file: the file's text without its newline */
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/healthy", port);
    {
        char path[] = "/tmp/rw-itest-secret-XXXXXX", id_s[24];
        const char *add[] = {"rollwavectl",   "webhook",     "add",
                             "--url",         url,           "--events",
                             "run.cancelled", "--store-app", id_s,
                             "--secret-file", path,          NULL};
        const char *p[2] = {id_s, SECRET_HEALTHY};
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(
            write(fd, SECRET_HEALTHY "\n", strlen(SECRET_HEALTHY) + 1),
            (ssize_t)strlen(SECRET_HEALTHY) + 1);
        close(fd);
        snprintf(id_s, sizeof(id_s), "%lld", a);
        assert_int_equal(rw_itest_fleet_run(f, add, out, sizeof(out)), 0);
        unlink(path);
        assert_int_equal(sscanf(out, "webhook %lld added", &h_healthy), 1);
        assert_null(strstr(out, "secret "));
        snprintf(id_s, sizeof(id_s), "%lld", h_healthy);
        assert_int_equal(rw_itest_fleet_ll(f,
                                           "SELECT count(*) FROM webhooks"
                                           " WHERE id = $1::bigint"
                                           " AND secret = $2::text",
                                           2, p),
                         1);
    }
    assert_true(h_failed > 0 && h_good > 0 && h_flaky > 0 && h_dead > 0 &&
                h_hole > 0 && h_paused > 0 && h_silent > 0 && h_healthy > 0);
    snprintf(hole_s, sizeof(hole_s), "%lld", h_hole);

    rw_itest_fleet_snapshot(f);
    pids[0] = rw_itest_fleet_start(f, "rollwave-producer", "producer");
    pids[1] = rw_itest_fleet_start(f, "rollwave-worker", "worker");
    pids[2] = rw_itest_fleet_start(f, "rollwave-poller", "poller");
    redeploy(f, a, ua, sizeof(ua));
    redeploy(f, b, ub, sizeof(ub));

    /*
     * (c) A ends while the silent receiver holds its first attempt: the
     * receiver accepted it, the deliverer waits LONG_TIMEOUT for it, and
     * it has neither ended nor failed, so the run did not wait for it.
     */
    wait_ll(f,
            "SELECT count(*) FROM deployment_runs WHERE uuid = $1::uuid"
            " AND status = 'completed'",
            ua, 1, 30000, "run A completed");
    wait_ll(f,
            "SELECT count(*) FROM webhook_deliveries"
            " WHERE webhook_id = $1::bigint AND attempts = 1",
            hole_s, 1, 20000, "silent receiver's attempt claimed");
    {
        long long deadline = rw_itest_now_ms() + deadline_ms(20000);
        while (hole_conns() < 1) {
            if (rw_itest_now_ms() > deadline)
                fail_msg("the silent receiver saw no connection");
            rw_itest_sleep_ms(20);
        }
    }
    {
        const char *p[1] = {hole_s};
        assert_int_equal(
            rw_itest_fleet_ll(f,
                              "SELECT count(*) FROM webhook_deliveries"
                              " WHERE webhook_id = $1::bigint"
                              " AND event = 'run.started' AND state = "
                              "'pending' AND attempts = 1"
                              " AND last_error IS NULL",
                              1, p),
            1);
    }

    /*
     * (e) no head-of-line blocking: N_QUEUED due deliveries for the
     * silent subscriptions (half for the one in flight), older than one
     * for a healthy receiver. The healthy one is delivered while each
     * silent subscription holds one attempt, not one per slot.
     */
    {
        char ids[3][24], nq[16];
        const char *p[5] = {ids[0], ids[1], ids[2], ua, nq};
        snprintf(ids[0], sizeof(ids[0]), "%lld", h_silent);
        snprintf(ids[1], sizeof(ids[1]), "%lld", h_hole);
        snprintf(ids[2], sizeof(ids[2]), "%lld", h_healthy);
        snprintf(nq, sizeof(nq), "%d", N_QUEUED);
        PQclear(rw_itest_fleet_q(
            f,
            "INSERT INTO webhook_deliveries (webhook_id, run_id, event,"
            " payload, next_at)"
            " SELECT CASE WHEN g % 2 = 0 THEN $1::bigint ELSE $2::bigint END,"
            " r.id, CASE WHEN g % 2 = 0 THEN 'run.cancelled'"
            " ELSE 'run.started' END, '{\"queued\":' || g || '}',"
            " now() - interval '1 minute' + g * interval '1 millisecond'"
            " FROM deployment_runs r, generate_series(1, $5::int) g"
            " WHERE r.uuid = $4::uuid"
            " UNION ALL SELECT $3::bigint, r.id, 'run.cancelled',"
            " '{\"queued\":0}', now()"
            " FROM deployment_runs r WHERE r.uuid = $4::uuid",
            5, p));
        wait_reqs(f, "/healthy", 1, 20000);
        {
            req_t q;
            assert_true(nth_req("/healthy", 0, &q));
            assert_true(rw_webhook_verify(SECRET_HEALTHY, q.body,
                                          strlen(q.body), q.sig));
        }
        assert_int_equal(
            rw_itest_fleet_ll(f,
                              "SELECT sum(attempts) FROM webhook_deliveries"
                              " WHERE webhook_id IN ($1::bigint, $2::bigint)",
                              2, p),
            2);
        assert_int_equal(
            rw_itest_fleet_ll(f,
                              "SELECT count(*) FROM webhook_deliveries"
                              " WHERE webhook_id IN ($1::bigint, $2::bigint)"
                              " AND (attempts > 1 OR last_error IS NOT NULL)",
                              2, p),
            0);
        /* the queued ones go: the silent subscription is removed */
        {
            const char *rm[] = {"rollwavectl", "webhook", "remove", ids[0],
                                NULL};
            assert_int_equal(rw_itest_fleet_run(f, rm, out, sizeof(out)), 0);
        }
        PQclear(rw_itest_fleet_q(f,
                                 "DELETE FROM webhook_deliveries"
                                 " WHERE payload LIKE '{\"queued\":%'"
                                 " AND webhook_id = $1::bigint",
                                 1, p + 1));
    }

    /* (a) once each, signed, the run's counts, nothing secret */
    wait_reqs(f, "/good", 2, 20000);
    j = good_req("/good", "run.started", SECRET_GOOD, d1, sizeof(d1));
    assert_string_equal(json_string_value(json_object_get(j, "run")), ua);
    assert_string_equal(json_string_value(json_object_get(j, "status")),
                        "running");
    json_decref(j);
    j = good_req("/good", "run.finished", SECRET_GOOD, d2, sizeof(d2));
    assert_string_not_equal(d1, d2);
    {
        json_t *cnt = json_object_get(j, "counts");
        const char *p[1] = {ua};
        PGresult *res = rw_itest_fleet_q(
            f,
            "SELECT total_count, succeeded_count, failed_count,"
            " skipped_count FROM deployment_runs WHERE uuid = $1::uuid",
            1, p);
        assert_string_equal(json_string_value(json_object_get(j, "status")),
                            "completed");
        assert_int_equal(json_integer_value(json_object_get(cnt, "total")),
                         atoll(PQgetvalue(res, 0, 0)));
        assert_int_equal(json_integer_value(json_object_get(cnt, "succeeded")),
                         atoll(PQgetvalue(res, 0, 1)));
        assert_int_equal(json_integer_value(json_object_get(cnt, "failed")),
                         atoll(PQgetvalue(res, 0, 2)));
        assert_int_equal(json_integer_value(json_object_get(cnt, "skipped")),
                         atoll(PQgetvalue(res, 0, 3)));
        assert_int_equal(json_integer_value(json_object_get(cnt, "total")), 4);
        PQclear(res);
    }
    json_decref(j);

    /* (b) 500, 500, 200: one delivery id, growing gaps, delivered */
    wait_reqs(f, "/flaky", 3, 20000);
    {
        req_t q[3];
        for (int i = 0; i < 3; i++) {
            assert_true(nth_req("/flaky", i, &q[i]));
            assert_string_equal(q[i].delivery, q[0].delivery);
            assert_string_equal(q[i].event, "run.finished");
            assert_string_equal(q[i].body, q[0].body);
            assert_true(rw_webhook_verify(SECRET_FLAKY, q[i].body,
                                          strlen(q[i].body), q[i].sig));
        }
        assert_true(q[1].at_ms - q[0].at_ms >= BACKOFF_MS);
        assert_true(q[2].at_ms - q[1].at_ms >= 2 * BACKOFF_MS);
    }
    {
        char id_s[24];
        snprintf(id_s, sizeof(id_s), "%lld", h_flaky);
        wait_ll(f,
                "SELECT count(*) FROM webhook_deliveries"
                " WHERE webhook_id = $1::bigint AND state = 'delivered'"
                " AND attempts = 3 AND last_status = 200",
                id_s, 1, 10000, "flaky delivery delivered");
        /* fleet-wide: A's and B's run.started, each dead after 3 tries */
        snprintf(id_s, sizeof(id_s), "%lld", h_dead);
        wait_ll(f,
                "SELECT count(*) FROM webhook_deliveries"
                " WHERE webhook_id = $1::bigint AND state = 'dead'"
                " AND attempts = 3 AND last_status = 500"
                " AND last_error = 'HTTP 500 after 3 attempts'",
                id_s, 2, 20000, "fleet-wide deliveries dead");
        assert_int_equal(count_reqs("/dead", NULL), 6);
    }

    /* (d) the threshold pause, with its reason */
    wait_reqs(f, "/paused", 1, 30000);
    j = good_req("/paused", "run.paused", SECRET_PAUSED, d1, sizeof(d1));
    assert_string_equal(json_string_value(json_object_get(j, "run")), ub);
    assert_non_null(strstr(json_string_value(json_object_get(j, "reason")),
                           "paused: wave 1 failures"));
    json_decref(j);
    {
        const char *abort_b[] = {"rollwavectl", "run",   "abort", ub,
                                 "--by",        "itest", NULL};
        assert_int_equal(rw_itest_fleet_run(f, abort_b, out, sizeof(out)), 0);
    }
    rw_itest_fleet_wait_final(f, 3, deadline_ms(30000));

    /*
     * A timeout is recorded: a producer with a short one takes over the
     * silent receiver's delivery (the stopped one gave it back).
     */
    rw_itest_fleet_stop_one(f, pids[0], false);
    pids[3] =
        rw_itest_fleet_start_with(f, "rollwave-producer", "producer",
                                  "ROLLWAVE_WEBHOOK_TIMEOUT_MS", "1000", false);
    wait_ll(f,
            "SELECT count(*) FROM webhook_deliveries"
            " WHERE webhook_id = $1::bigint AND attempts >= 2"
            " AND last_error LIKE 'timeout after 1000 ms%'",
            hole_s, 1, 20000, "silent receiver timed out");

    /* a run failed at its creation tells its subscribers too */
    wait_reqs(f, "/failed", 1, 20000);
    j = good_req("/failed", "run.failed", SECRET_FAILED, d1, sizeof(d1));
    assert_string_equal(json_string_value(json_object_get(j, "from")),
                        "pending");
    assert_int_equal(strncmp(json_string_value(json_object_get(j, "reason")),
                             "strategy: ", 10),
                     0);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(j, "counts"), "skipped")),
                     2);
    json_decref(j);
    assert_int_equal(count_reqs("/failed", NULL), 1);

    /* every written delivery matches a subscription and an event */
    assert_int_equal(
        rw_itest_fleet_ll(f,
                          "SELECT count(*) FROM webhook_deliveries d"
                          " JOIN webhooks w ON w.id = d.webhook_id"
                          " WHERE NOT d.event = ANY (w.events)",
                          0, NULL),
        0);
    assert_int_equal(rw_itest_fleet_ll(f,
                                       "SELECT count(*) FROM webhook_deliveries"
                                       " WHERE payload LIKE '%secret%'",
                                       0, NULL),
                     0);

    /* list: counts and errors, no secret and no URL credentials */
    {
        const char *list[] = {"rollwavectl", "webhook", "list", "--json", NULL};
        char id_s[24];
        const char *dl[] = {"rollwavectl", "webhook", "deliveries", id_s,
                            "--state",     "dead",    NULL};
        snprintf(id_s, sizeof(id_s), "%lld", h_dead);
        assert_int_equal(rw_itest_fleet_run(f, list, out, sizeof(out)), 0);
        assert_false(has_secret(out));
        assert_null(strstr(out, "url-password-5e2a"));
        assert_null(strstr(out, "k=v"));
        assert_non_null(strstr(out, "HTTP 500 after 3 attempts"));
        assert_int_equal(rw_itest_fleet_run(f, dl, out, sizeof(out)), 0);
        assert_non_null(strstr(out, "run.started"));
    }
    /* test: signed webhook.test now; a 500 is a failure */
    {
        char id_s[24], id2_s[24];
        const char *t_good[] = {"rollwavectl", "webhook", "test", id_s, NULL};
        const char *t_dead[] = {"rollwavectl", "webhook", "test", id2_s, NULL};
        req_t q;
        int before = count_reqs("/good", NULL);
        snprintf(id_s, sizeof(id_s), "%lld", h_good);
        snprintf(id2_s, sizeof(id2_s), "%lld", h_dead);
        assert_int_equal(rw_itest_fleet_run(f, t_good, out, sizeof(out)), 0);
        assert_non_null(strstr(out, "HTTP 200"));
        assert_int_equal(count_reqs("/good", NULL), before + 1);
        assert_true(nth_req("/good", before, &q));
        assert_string_equal(q.event, "webhook.test");
        assert_true(
            rw_webhook_verify(SECRET_GOOD, q.body, strlen(q.body), q.sig));
        assert_int_equal(rw_itest_fleet_run(f, t_dead, out, sizeof(out)), 1);
        assert_non_null(strstr(out, "HTTP 500"));
        assert_null(strstr(out, "url-password-5e2a"));
    }
    /* no daemon logged a secret or the URL's password */
    for (int i = 0; i < 4; i++) {
        assert_false(rw_itest_fleet_log_has(f, pids[i], SECRET_SILENT));
        assert_false(rw_itest_fleet_log_has(f, pids[i], SECRET_GOOD));
        assert_false(rw_itest_fleet_log_has(f, pids[i], SECRET_FLAKY));
        assert_false(rw_itest_fleet_log_has(f, pids[i], SECRET_HOLE));
        assert_false(rw_itest_fleet_log_has(f, pids[i], "url-password-5e2a"));
    }
    assert_true(rw_itest_fleet_log_has(f, pids[0], "event=webhook_delivered"));
    rw_itest_fleet_check(f);
    rw_itest_fleet_stop_all(f);
}

static int teardown(void **state)
{
    rw_itest_fleet_destroy(*state);
    *state = NULL;
    receivers_stop();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_webhooks, teardown),
    };

    if (getenv("RW_ITEST_FILTER") && *getenv("RW_ITEST_FILTER"))
        cmocka_set_test_filter(getenv("RW_ITEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
