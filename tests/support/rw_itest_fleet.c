/*
 * rw_itest_fleet: per-scenario pipeline (database, topic prefix, simulator,
 * daemons as child processes, optionally a Kafka of its own) and the
 * invariant checker, plus the fault hooks the fault suite needs: kill -9
 * and restart of a child, daemons that are expected to die and come back,
 * restarts of the stack's Redis and Postgres, a private devbroker whose
 * broker 1 can be taken down. Test support only: nothing here is linked
 * into the daemons.
 *
 * Children get their environment as an explicit envp built before fork(),
 * so nothing but async-signal-safe calls run between fork() and execve()
 * even when the test process already has librdkafka threads.
 */
#include "rw_itest_fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>

#include "rw_itest_pg.h"
#include "rw_itest_redis_proxy.h"
#include "rw_kafka.h"
#include "rw_redis.h"
#include "rw_settings.h"
#include "rw_state.h"

#define MAX_ENV  64
#define MAX_KIDS 1024
/* how many of the latest children a failure prints the logs of */
#define DUMP_KIDS 12

extern char **environ;

typedef enum kid_mode {
    KID_DAEMON,  /* must run until told to stop */
    KID_RESPAWN, /* may die with the fault hook's status: started again */
    KID_ONESHOT, /* runs to completion on its own */
    KID_MORTAL,  /* may die with the fault hook's status: stays down */
} kid_mode_t;

/* The status the worker's fault hook exits with. */
#define FAULT_EXIT_STATUS 137

typedef struct kid {
    pid_t pid;     /* 0 once reaped */
    pid_t was_pid; /* the pid it had, to find it after reaping */
    int status;    /* wait status once reaped */
    kid_mode_t mode;
    char bin[48];
    char role[32]; /* "" = no consumer group */
    char xkey[64]; /* one variable for this child only ("" = none) */
    char xval[64];
    const char *args[8]; /* extra arguments (static strings) */
    char arg_buf[8][64];
    size_t n_args;
    char name[80];
    char log[400];
} kid_t;

struct rw_itest_fleet {
    char dir[256];
    char dsn[1024];
    char prefix[96];
    long long chunk_size;
    rw_pg_t *pg;
    bool snapshot;
    long long expect_dead;
    long long respawns;
    long long extra_triggers; /* re-triggers the scenario caused on purpose */
    long long fault_exits;    /* mortal children gone by the fault hook */
    rw_itest_redis_proxy_t *redis_proxy;
    bool pg_read_only; /* the stack's Postgres is read-only: undo it */
    /* simulator */
    pid_t sim_pid;
    char sim_log[320];
    char sim_port_file[320];
    char sim_token[64];
    char sim_admin[128];
    char sim_url[160];
    /* private devbroker (pid 0 = the stack's Kafka) */
    pid_t broker_pid;
    char broker_log[320];
    char broker_file[320];
    char brokers[512];
    /* ROLLWAVE_* overrides for children */
    char *env_key[MAX_ENV];
    char *env_val[MAX_ENV];
    size_t n_env;
    kid_t *kids;
    size_t n_kids;
    int n_runs; /* names the capture files of rw_itest_fleet_run */
};

static bool pg_read_only_set(rw_itest_fleet_t *f, bool on, char *why,
                             size_t whylen);
static kid_t *find_kid(rw_itest_fleet_t *f, pid_t pid);

static const char FINAL_SQL[] =
    "('completed', 'partial_failed', 'failed', 'cancelled')";

/* ---- processes ---- */

/* environ without the overridden keys, then the overrides, then extra
 * (key, value, key, value, ..., NULL; NULL = none), which wins over both.
 * Every string is malloc'd. */
static char **build_envp(const rw_itest_fleet_t *f, const char *const *extra)
{
    size_t n = 0, k = 0, n_extra = 0;
    char **envp;

    while (environ[n])
        n++;
    while (extra && extra[n_extra])
        n_extra += 2;
    envp = calloc(n + f->n_env + n_extra / 2 + 1, sizeof(*envp));
    assert_non_null(envp);
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool overridden = false;
        for (size_t j = 0; j < f->n_env && !overridden; j++)
            overridden = strlen(f->env_key[j]) == klen &&
                         strncmp(f->env_key[j], environ[i], klen) == 0;
        for (size_t j = 0; j < n_extra && !overridden; j += 2)
            overridden = strlen(extra[j]) == klen &&
                         strncmp(extra[j], environ[i], klen) == 0;
        if (!overridden)
            envp[k++] = strdup(environ[i]);
    }
    for (size_t j = 0; j < f->n_env; j++) {
        bool overridden = false;
        size_t len = strlen(f->env_key[j]) + strlen(f->env_val[j]) + 2;
        for (size_t x = 0; x < n_extra && !overridden; x += 2)
            overridden = strcmp(extra[x], f->env_key[j]) == 0;
        if (overridden)
            continue;
        envp[k] = malloc(len);
        assert_non_null(envp[k]);
        snprintf(envp[k], len, "%s=%s", f->env_key[j], f->env_val[j]);
        k++;
    }
    for (size_t x = 0; x < n_extra; x += 2) {
        size_t len = strlen(extra[x]) + strlen(extra[x + 1]) + 2;
        envp[k] = malloc(len);
        assert_non_null(envp[k]);
        snprintf(envp[k], len, "%s=%s", extra[x], extra[x + 1]);
        k++;
    }
    envp[k] = NULL;
    return envp;
}

static void free_envp(char **envp)
{
    for (size_t i = 0; envp[i]; i++)
        free(envp[i]);
    free(envp);
}

/* fork + execve with stdout to out_path and stderr to err_path. */
static pid_t spawn(const char *path, char *const *argv, char *const *envp,
                   const char *out_path, const char *err_path)
{
    pid_t pid = fork();

    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int err = strcmp(out_path, err_path) == 0
                      ? out
                      : open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (out >= 0)
            dup2(out, STDOUT_FILENO);
        if (err >= 0)
            dup2(err, STDERR_FILENO);
        execve(path, argv, envp);
        _exit(127);
    }
    return pid;
}

/* Wait for pid at most timeout_ms; its wait status, or -1 on timeout. */
static int wait_pid(pid_t pid, long long timeout_ms)
{
    long long deadline = rw_itest_now_ms() + timeout_ms;
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (rw_itest_now_ms() > deadline)
            return -1;
        rw_itest_sleep_ms(20);
    }
}

static void tail_file(const char *label, const char *path, size_t max)
{
    FILE *fp = fopen(path, "r");
    char *buf;
    long size;
    size_t n;

    if (!fp)
        return;
    fseek(fp, 0, SEEK_END);
    size = ftell(fp);
    if (size > (long)max)
        fseek(fp, size - (long)max, SEEK_SET);
    else
        fseek(fp, 0, SEEK_SET);
    buf = calloc(1, max + 1);
    if (buf) {
        n = fread(buf, 1, max, fp);
        buf[n] = '\0';
        /* not print_error: cmocka formats into a 1 KiB buffer and would
         * show the start of the tail instead of its end */
        fprintf(stderr, "--- %s (last %zu bytes) ---\n", label, n);
        fwrite(buf, 1, n, stderr);
        fputc('\n', stderr);
        free(buf);
    }
    fclose(fp);
}

size_t rw_itest_fleet_log_count(rw_itest_fleet_t *f, pid_t pid,
                                const char *needle)
{
    const kid_t *k = find_kid(f, pid);
    FILE *fp = fopen(k->log, "r");
    char *buf = NULL;
    long size;
    size_t n = 0, count = 0;

    if (!fp)
        return 0;
    /* a daemon's log of one scenario is a few MB at most: read it whole */
    if (fseek(fp, 0, SEEK_END) == 0 && (size = ftell(fp)) > 0 &&
        fseek(fp, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)size + 1);
        assert_non_null(buf);
        n = fread(buf, 1, (size_t)size, fp);
        buf[n] = '\0';
        for (const char *at = strstr(buf, needle); at && *needle;
             at = strstr(at + strlen(needle), needle))
            count++;
    }
    free(buf);
    fclose(fp);
    return count;
}

bool rw_itest_fleet_log_has(rw_itest_fleet_t *f, pid_t pid, const char *needle)
{
    return rw_itest_fleet_log_count(f, pid, needle) > 0;
}

void rw_itest_fleet_dump_logs(rw_itest_fleet_t *f)
{
    size_t first = f->n_kids > DUMP_KIDS ? f->n_kids - DUMP_KIDS : 0;

    for (size_t i = first; i < f->n_kids; i++)
        tail_file(f->kids[i].name, f->kids[i].log, 3000);
    if (f->broker_pid > 0)
        tail_file("devbroker", f->broker_log, 1500);
    tail_file("lagoon-sim", f->sim_log, 1500);
}

/* ---- the simulator ---- */

typedef struct resp {
    char *buf;
    size_t len;
} resp_t;

static size_t collect(char *ptr, size_t size, size_t nmemb, void *ud)
{
    resp_t *r = ud;
    size_t n = size * nmemb;
    char *nb = realloc(r->buf, r->len + n + 1);

    if (!nb)
        return 0;
    r->buf = nb;
    memcpy(r->buf + r->len, ptr, n);
    r->len += n;
    r->buf[r->len] = '\0';
    return n;
}

json_t *rw_itest_fleet_sim(rw_itest_fleet_t *f, const char *path,
                           const char *body)
{
    char url[256];
    resp_t r = {NULL, 0};
    struct curl_slist *headers = NULL;
    json_error_t jerr;
    json_t *root;
    long code = 0;
    CURLcode cc;
    CURL *c = curl_easy_init();

    assert_non_null(c);
    snprintf(url, sizeof(url), "%s%s", f->sim_admin, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    if (body) {
        headers = curl_slist_append(NULL, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(headers);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK || code != 200)
        fail_msg("sim %s %s: curl %s, HTTP %ld, body %s", body ? "POST" : "GET",
                 path, curl_easy_strerror(cc), code, r.buf ? r.buf : "");
    root = json_loads(r.buf ? r.buf : "", 0, &jerr);
    if (!root)
        fail_msg("sim %s: not JSON: %s", path, r.buf ? r.buf : "");
    free(r.buf);
    return root;
}

void rw_itest_fleet_sim_config(rw_itest_fleet_t *f, const char *json)
{
    json_decref(rw_itest_fleet_sim(f, "/sim/config", json));
}

long long rw_itest_fleet_sim_stat(rw_itest_fleet_t *f, const char *key)
{
    json_t *stats = rw_itest_fleet_sim(f, "/sim/stats?triggers=false", NULL);
    json_t *v;
    long long n;

    if (strncmp(key, "faults.", 7) == 0)
        v = json_object_get(json_object_get(stats, "faults_injected"), key + 7);
    else
        v = json_object_get(stats, key);
    if (!json_is_integer(v))
        fail_msg("/sim/stats has no integer %s", key);
    n = json_integer_value(v);
    json_decref(stats);
    return n;
}

static void start_sim(rw_itest_fleet_t *f, const char *config)
{
    char bin[512], **envp;
    long long deadline;
    int port = 0;
    const char *argv[] = {bin,
                          "--port",
                          "0",
                          "--port-file",
                          f->sim_port_file,
                          "--token",
                          f->sim_token,
                          "--rows-delay-ms",
                          "200",
                          "--phase-ms",
                          "100",
                          "--build-min-ms",
                          "200",
                          "--build-max-ms",
                          "600",
                          NULL};

    rw_itest_bin(bin, sizeof(bin), "rollwave-lagoon-sim");
    if (access(bin, X_OK) != 0)
        fail_msg("%s is not an executable: build rollwave-lagoon-sim", bin);
    envp = build_envp(f, NULL);
    f->sim_pid = spawn(bin, (char *const *)argv, envp, f->sim_log, f->sim_log);
    free_envp(envp);

    deadline = rw_itest_now_ms() + 10000;
    while (rw_itest_now_ms() < deadline) {
        FILE *fp = fopen(f->sim_port_file, "r");
        int status;

        if (fp) {
            if (fscanf(fp, "%d", &port) != 1)
                port = 0;
            fclose(fp);
            if (port > 0)
                break;
        }
        if (waitpid(f->sim_pid, &status, WNOHANG) == f->sim_pid) {
            f->sim_pid = 0;
            tail_file("lagoon-sim", f->sim_log, 2000);
            fail_msg("lagoon-sim exited before listening (status %d)", status);
        }
        rw_itest_sleep_ms(20);
    }
    if (port <= 0)
        fail_msg("lagoon-sim wrote no port to %s within 10 s",
                 f->sim_port_file);
    snprintf(f->sim_admin, sizeof(f->sim_admin), "http://127.0.0.1:%d", port);
    snprintf(f->sim_url, sizeof(f->sim_url), "%s/graphql", f->sim_admin);
    if (config)
        rw_itest_fleet_sim_config(f, config);
}

/* ---- fleet ---- */

void rw_itest_fleet_set(rw_itest_fleet_t *f, const char *key, const char *value)
{
    for (size_t i = 0; i < f->n_env; i++)
        if (strcmp(f->env_key[i], key) == 0) {
            free(f->env_val[i]);
            f->env_val[i] = strdup(value);
            assert_non_null(f->env_val[i]);
            return;
        }
    assert_true(f->n_env < MAX_ENV);
    f->env_key[f->n_env] = strdup(key);
    f->env_val[f->n_env] = strdup(value);
    assert_non_null(f->env_key[f->n_env]);
    assert_non_null(f->env_val[f->n_env]);
    f->n_env++;
}

rw_itest_fleet_t *rw_itest_fleet_new(const char *sim_config,
                                     long long bulk_chunk_size)
{
    rw_itest_fleet_t *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");
    char unique[64], num[24];

    assert_non_null(f);
    f->kids = calloc(MAX_KIDS, sizeof(*f->kids));
    assert_non_null(f->kids);
    /* the stack must be there before anything is created */
    rw_itest_env("ROLLWAVE_PG_DSN");
    rw_itest_env("ROLLWAVE_REDIS_URL");
    rw_itest_env("ROLLWAVE_KAFKA_BROKERS");
    snprintf(f->dir, sizeof(f->dir), "%s/rw_fleet_XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir))
        fail_msg("mkdtemp: %s", strerror(errno));
    snprintf(f->sim_log, sizeof(f->sim_log), "%s/lagoon-sim.log", f->dir);
    snprintf(f->sim_port_file, sizeof(f->sim_port_file), "%s/sim.port", f->dir);
    snprintf(f->sim_token, sizeof(f->sim_token), "fleet-%ld-%lld",
             (long)getpid(), rw_itest_now_ms());
    /* time part: topics outlive this process in a long-lived broker */
    rw_itest_unique(unique, sizeof(unique), "rwit");
    snprintf(f->prefix, sizeof(f->prefix), "%s_%lx.", unique,
             (unsigned long)time(NULL));
    f->chunk_size = bulk_chunk_size > 0 ? bulk_chunk_size : 50;

    rw_itest_pg_fresh_db(f->dsn, sizeof(f->dsn));
    f->pg = rw_itest_pg_connect(f->dsn);
    start_sim(f, sim_config);

    snprintf(num, sizeof(num), "%lld", f->chunk_size);
    rw_itest_fleet_set(f, "ROLLWAVE_PG_DSN", f->dsn);
    rw_itest_fleet_set(f, "ROLLWAVE_KAFKA_TOPIC_PREFIX", f->prefix);
    rw_itest_fleet_set(f, "ROLLWAVE_LAGOON_URL", f->sim_url);
    rw_itest_fleet_set(f, "ROLLWAVE_LAGOON_TOKEN", f->sim_token);
    rw_itest_fleet_set(f, "ROLLWAVE_METRICS_PORT", "0");
    rw_itest_fleet_set(f, "ROLLWAVE_KAFKA_SESSION_TIMEOUT_MS", "3000");
    rw_itest_fleet_set(f, "ROLLWAVE_BULK_CHUNK_SIZE", num);
    rw_itest_fleet_set(f, "ROLLWAVE_MAX_PER_RUN", "1000");
    rw_itest_fleet_set(f, "ROLLWAVE_FIRST_POLL_DELAY_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_POLL_INTERVAL_S", "1");
    rw_itest_fleet_set(f, "ROLLWAVE_LOG_LEVEL", "info");
    /* unthrottled unless a test sets limits: the fleet row is seeded by
     * the first worker from these */
    rw_itest_fleet_set(f, "ROLLWAVE_MAX_IN_FLIGHT", "100000000");
    rw_itest_fleet_set(f, "ROLLWAVE_TRIGGER_RATE_PER_MIN", "1000000000");
    /* sanitized daemons: a leak at exit turns a clean stop into status 23
     * (abort_on_error would make it a signal and hide which it was) */
    rw_itest_fleet_set(f, "ASAN_OPTIONS",
                       "detect_leaks=1:exitcode=23:abort_on_error=0");
    return f;
}

const char *rw_itest_fleet_prefix(const rw_itest_fleet_t *f)
{
    return f->prefix;
}

const char *rw_itest_fleet_dsn(const rw_itest_fleet_t *f)
{
    return f->dsn;
}

long long rw_itest_fleet_chunk_size(const rw_itest_fleet_t *f)
{
    return f->chunk_size;
}

rw_pg_t *rw_itest_fleet_pg(rw_itest_fleet_t *f)
{
    return f->pg;
}

/* Start kid k (bin, role, xkey, args filled in) in slot n_kids. */
static pid_t launch(rw_itest_fleet_t *f, const kid_t *tmpl)
{
    char path[512], group[160], **envp;
    const char *extra[5];
    char *argv[10];
    size_t ne = 0;
    kid_t *k;

    if (f->n_kids >= MAX_KIDS)
        fail_msg("more than %d children in one fleet", MAX_KIDS);
    k = &f->kids[f->n_kids];
    *k = *tmpl;
    for (size_t i = 0; i < k->n_args; i++)
        k->args[i] = k->arg_buf[i];
    rw_itest_bin(path, sizeof(path), k->bin);
    if (access(path, X_OK) != 0)
        fail_msg("%s is not an executable: build target %s", path, k->bin);
    snprintf(k->name, sizeof(k->name), "%s#%zu", k->bin, f->n_kids);
    snprintf(k->log, sizeof(k->log), "%s/%s-%zu.log", f->dir, k->bin,
             f->n_kids);
    if (k->role[0]) {
        snprintf(group, sizeof(group), "%s%s", f->prefix, k->role);
        extra[ne++] = "ROLLWAVE_KAFKA_GROUP";
        extra[ne++] = group;
    }
    if (k->xkey[0]) {
        extra[ne++] = k->xkey;
        extra[ne++] = k->xval;
    }
    extra[ne] = NULL;
    envp = build_envp(f, extra);
    argv[0] = path;
    for (size_t i = 0; i < k->n_args; i++)
        argv[i + 1] = (char *)k->args[i];
    argv[k->n_args + 1] = NULL;
    k->pid = spawn(path, argv, envp, k->log, k->log);
    k->was_pid = k->pid;
    free_envp(envp);
    f->n_kids++;
    return k->pid;
}

static kid_t *find_kid(rw_itest_fleet_t *f, pid_t pid)
{
    for (size_t i = f->n_kids; i > 0; i--)
        if (f->kids[i - 1].was_pid == pid)
            return &f->kids[i - 1];
    fail_msg("pid %ld is not a child of this fleet", (long)pid);
    return NULL;
}

static void kid_template(kid_t *t, const char *bin, const char *role,
                         const char *key, const char *value, kid_mode_t mode)
{
    memset(t, 0, sizeof(*t));
    t->mode = mode;
    snprintf(t->bin, sizeof(t->bin), "%s", bin);
    snprintf(t->role, sizeof(t->role), "%s", role ? role : "");
    if (key) {
        snprintf(t->xkey, sizeof(t->xkey), "%s", key);
        snprintf(t->xval, sizeof(t->xval), "%s", value);
    }
}

pid_t rw_itest_fleet_start(rw_itest_fleet_t *f, const char *bin,
                           const char *role)
{
    kid_t t;

    kid_template(&t, bin, role, NULL, NULL, KID_DAEMON);
    return launch(f, &t);
}

pid_t rw_itest_fleet_start_with(rw_itest_fleet_t *f, const char *bin,
                                const char *role, const char *key,
                                const char *value, bool respawn)
{
    kid_t t;

    kid_template(&t, bin, role, key, value, respawn ? KID_RESPAWN : KID_DAEMON);
    return launch(f, &t);
}

pid_t rw_itest_fleet_spawn(rw_itest_fleet_t *f, const char *const *argv)
{
    kid_t t;

    kid_template(&t, argv[0], NULL, NULL, NULL, KID_ONESHOT);
    for (size_t i = 1; argv[i]; i++) {
        if (t.n_args >= sizeof(t.arg_buf) / sizeof(t.arg_buf[0]))
            fail_msg("too many arguments for %s", argv[0]);
        snprintf(t.arg_buf[t.n_args], sizeof(t.arg_buf[0]), "%s", argv[i]);
        t.n_args++;
    }
    return launch(f, &t);
}

int rw_itest_fleet_wait(rw_itest_fleet_t *f, pid_t pid, long long timeout_ms)
{
    kid_t *k = find_kid(f, pid);
    int status;

    if (k->pid <= 0)
        return k->status;
    status = wait_pid(k->pid, timeout_ms);
    if (status == -1)
        return -1;
    k->pid = 0;
    k->status = status;
    return status;
}

bool rw_itest_fleet_alive(rw_itest_fleet_t *f, pid_t pid)
{
    kid_t *k = find_kid(f, pid);
    int status;

    if (k->pid > 0 && waitpid(k->pid, &status, WNOHANG) == k->pid) {
        k->pid = 0;
        k->status = status;
    }
    return k->pid > 0;
}

pid_t rw_itest_fleet_kill9(rw_itest_fleet_t *f, pid_t pid, bool restart)
{
    kid_t *k = find_kid(f, pid);
    kid_t t;

    if (k->pid > 0) {
        kill(k->pid, SIGKILL);
        waitpid(k->pid, &k->status, 0);
        k->pid = 0;
    }
    if (!restart)
        return 0;
    t = *k;
    return launch(f, &t);
}

pid_t rw_itest_fleet_running(rw_itest_fleet_t *f, const char *bin, size_t i)
{
    for (size_t j = 0; j < f->n_kids; j++) {
        kid_t *k = &f->kids[j];
        if (k->pid > 0 && k->mode != KID_ONESHOT && strcmp(k->bin, bin) == 0 &&
            i-- == 0)
            return k->pid;
    }
    return 0;
}

pid_t rw_itest_fleet_start_mortal(rw_itest_fleet_t *f, const char *bin,
                                  const char *role, const char *key,
                                  const char *value)
{
    kid_t t;

    kid_template(&t, bin, role, key, value, KID_MORTAL);
    return launch(f, &t);
}

long long rw_itest_fleet_fault_exits(rw_itest_fleet_t *f)
{
    rw_itest_fleet_poll_kids(f);
    return f->fault_exits;
}

long long rw_itest_fleet_respawns(const rw_itest_fleet_t *f)
{
    return f->respawns;
}

/* Whether a wait status is a clean stop for kid k. */
static bool stopped_cleanly(const kid_t *k, int status)
{
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return true;
    /* the fault hook may fire on the message it finishes while draining */
    return (k->mode == KID_RESPAWN || k->mode == KID_MORTAL) &&
           WIFEXITED(status) && WEXITSTATUS(status) == FAULT_EXIT_STATUS;
}

/* SIGTERM the running daemons among kids[from..], wait, report failures. */
static void stop_kids(rw_itest_fleet_t *f, pid_t only)
{
    char failed[1024] = "";
    size_t off = 0;

    for (size_t i = 0; i < f->n_kids; i++)
        if (f->kids[i].pid > 0 && (!only || f->kids[i].pid == only))
            kill(f->kids[i].pid, SIGTERM);
    for (size_t i = 0; i < f->n_kids; i++) {
        kid_t *k = &f->kids[i];
        int status;

        if (k->pid <= 0 || (only && k->pid != only))
            continue;
        status = wait_pid(k->pid, 30000);
        if (status == -1) {
            kill(k->pid, SIGKILL);
            waitpid(k->pid, &status, 0);
            off += (size_t)snprintf(failed + off, sizeof(failed) - off,
                                    " %s: no exit within 30 s of SIGTERM;",
                                    k->name);
        } else if (!stopped_cleanly(k, status)) {
            off += (size_t)snprintf(
                failed + off, sizeof(failed) - off, " %s: %s %d;", k->name,
                WIFEXITED(status) ? "exit status" : "killed by signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        }
        k->pid = 0;
        k->status = status;
        if (off >= sizeof(failed))
            off = sizeof(failed) - 1;
    }
    if (failed[0]) {
        rw_itest_fleet_dump_logs(f);
        fail_msg("daemons did not stop cleanly:%s", failed);
    }
}

void rw_itest_fleet_stop_all(rw_itest_fleet_t *f)
{
    stop_kids(f, 0);
}

pid_t rw_itest_fleet_stop_one(rw_itest_fleet_t *f, pid_t pid, bool restart)
{
    kid_t *k = find_kid(f, pid);
    kid_t t;

    if (k->pid > 0)
        stop_kids(f, k->pid);
    if (!restart)
        return 0;
    t = *k;
    return launch(f, &t);
}

int rw_itest_fleet_run(rw_itest_fleet_t *f, const char *const *argv, char *out,
                       size_t outlen)
{
    return rw_itest_fleet_run_err(f, argv, out, outlen, NULL, 0);
}

/* Whole file (at most len - 1 bytes) into buf; "" when unreadable. */
static void slurp(const char *path, char *buf, size_t len)
{
    FILE *fp = fopen(path, "r");
    size_t got = 0;

    if (fp) {
        got = fread(buf, 1, len - 1, fp);
        fclose(fp);
    }
    buf[got] = '\0';
}

int rw_itest_fleet_run_err(rw_itest_fleet_t *f, const char *const *argv,
                           char *out, size_t outlen, char *err, size_t errlen)
{
    char path[512], out_path[320], err_path[320], **envp;
    const char *args[32];
    size_t n = 0;
    pid_t pid;
    int status;

    rw_itest_bin(path, sizeof(path), argv[0]);
    if (access(path, X_OK) != 0)
        fail_msg("%s is not an executable: build target %s", path, argv[0]);
    args[n++] = path;
    for (size_t i = 1; argv[i]; i++) {
        assert_true(n < 31);
        args[n++] = argv[i];
    }
    args[n] = NULL;
    f->n_runs++;
    snprintf(out_path, sizeof(out_path), "%s/run-%d.out", f->dir, f->n_runs);
    snprintf(err_path, sizeof(err_path), "%s/run-%d.err", f->dir, f->n_runs);
    envp = build_envp(f, NULL);
    pid = spawn(path, (char *const *)args, envp, out_path, err_path);
    free_envp(envp);
    status = wait_pid(pid, 120000);
    if (status == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        tail_file(argv[0], err_path, 3000);
        fail_msg("%s did not finish within 120 s", argv[0]);
    }
    if (out && outlen)
        slurp(out_path, out, outlen);
    if (err && errlen)
        slurp(err_path, err, errlen);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        tail_file(argv[0], err_path, 3000);
    unlink(out_path);
    unlink(err_path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void rw_itest_fleet_tick(rw_itest_fleet_t *f)
{
    const char *argv[] = {"rollwave-producer", "--once", NULL};
    int rc = rw_itest_fleet_run(f, argv, NULL, 0);

    if (rc != 0)
        fail_msg("rollwave-producer --once exited with %d", rc);
}

/* ---- Redis ---- */

static redisContext *redis_connect(void)
{
    rw_redis_url_t u;
    char errstr[256];
    struct timeval tv = {5, 0};
    redisContext *c;
    redisReply *r;

    if (rw_redis_url_parse(&u, rw_itest_env("ROLLWAVE_REDIS_URL"), errstr,
                           sizeof(errstr)))
        fail_msg("ROLLWAVE_REDIS_URL: %s", errstr);
    c = u.is_unix ? redisConnectUnixWithTimeout(u.path, tv)
                  : redisConnectWithTimeout(u.host, u.port, tv);
    if (!c || c->err)
        fail_msg("redis connect: %s", c ? c->errstr : "out of memory");
    if (u.password[0]) {
        r = u.username[0]
                ? redisCommand(c, "AUTH %s %s", u.username, u.password)
                : redisCommand(c, "AUTH %s", u.password);
        if (!r || r->type == REDIS_REPLY_ERROR)
            fail_msg("redis AUTH refused");
        freeReplyObject(r);
    }
    r = redisCommand(c, "SELECT %d", u.db);
    if (!r || r->type == REDIS_REPLY_ERROR)
        fail_msg("redis SELECT %d refused", u.db);
    freeReplyObject(r);
    return c;
}

/* Count (and with del, delete) the keys matching "<prefix>lock:*". */
static long long lock_keys(rw_itest_fleet_t *f, bool del, char *first,
                           size_t first_len)
{
    redisContext *c = redis_connect();
    char cursor[32] = "0", pattern[160];
    long long n = 0;

    if (first && first_len)
        first[0] = '\0';
    snprintf(pattern, sizeof(pattern), "%slock:*", f->prefix);
    do {
        redisReply *r =
            redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
            fail_msg("redis SCAN failed");
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const char *key = r->element[1]->element[i]->str;
            if (n == 0 && first && first_len)
                snprintf(first, first_len, "%s", key);
            n++;
            if (del)
                freeReplyObject(redisCommand(c, "DEL %s", key));
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0);
    redisFree(c);
    return n;
}

long long rw_itest_fleet_lock_keys(rw_itest_fleet_t *f)
{
    return lock_keys(f, false, NULL, 0);
}

long long rw_itest_fleet_lock_pttl(rw_itest_fleet_t *f, long long instance_id)
{
    redisContext *c = redis_connect();
    char key[160];
    redisReply *r;
    long long v;

    rw_redis_lock_key(key, sizeof(key), f->prefix, instance_id);
    r = redisCommand(c, "PTTL %s", key);
    if (!r || r->type != REDIS_REPLY_INTEGER)
        fail_msg("redis PTTL %s failed", key);
    v = r->integer;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

void rw_itest_fleet_redis_cmd(rw_itest_fleet_t *f, const char *const *argv)
{
    redisContext *c = redis_connect();
    redisReply *r;
    int argc = 0;

    (void)f;
    while (argv[argc])
        argc++;
    assert_true(argc > 0);
    r = redisCommandArgv(c, argc, (const char **)argv, NULL);
    if (!r || r->type == REDIS_REPLY_ERROR)
        fail_msg("redis %s: %s", argv[0],
                 r ? r->str : (c->errstr[0] ? c->errstr : "no reply"));
    freeReplyObject(r);
    redisFree(c);
}

/* ---- teardown ---- */

void rw_itest_fleet_destroy(rw_itest_fleet_t *f)
{
    char path[400];

    if (!f)
        return;
    for (size_t i = 0; i < f->n_kids; i++)
        if (f->kids[i].pid > 0) {
            kill(f->kids[i].pid, SIGKILL);
            waitpid(f->kids[i].pid, NULL, 0);
        }
    if (f->sim_pid > 0) {
        kill(f->sim_pid, SIGTERM);
        if (wait_pid(f->sim_pid, 5000) == -1) {
            kill(f->sim_pid, SIGKILL);
            waitpid(f->sim_pid, NULL, 0);
        }
    }
    if (f->broker_pid > 0) {
        kill(f->broker_pid, SIGTERM);
        if (wait_pid(f->broker_pid, 5000) == -1) {
            kill(f->broker_pid, SIGKILL);
            waitpid(f->broker_pid, NULL, 0);
        }
    }
    rw_itest_redis_proxy_destroy(f->redis_proxy);
    f->redis_proxy = NULL;
    /* never leave the shared server read-only for the tests that follow */
    if (f->pg_read_only) {
        char why[512];
        if (!pg_read_only_set(f, false, why, sizeof(why)))
            fprintf(stderr, "could not make Postgres writable again: %s\n",
                    why);
    }
    if (getenv("ROLLWAVE_REDIS_URL"))
        lock_keys(f, true, NULL, 0);
    rw_pg_destroy(f->pg);
    if (f->dsn[0])
        rw_itest_pg_drop_db(f->dsn);
    /* RW_ITEST_KEEP_LOGS=1 leaves the children's logs for a post-mortem */
    if (getenv("RW_ITEST_KEEP_LOGS") && *getenv("RW_ITEST_KEEP_LOGS")) {
        fprintf(stderr, "fleet logs kept in %s\n", f->dir);
        goto free_all;
    }
    for (size_t i = 0; i < f->n_kids; i++)
        unlink(f->kids[i].log);
    unlink(f->sim_log);
    unlink(f->sim_port_file);
    unlink(f->broker_log);
    unlink(f->broker_file);
    for (int i = 1; i <= f->n_runs; i++) {
        snprintf(path, sizeof(path), "%s/run-%d.out", f->dir, i);
        unlink(path);
        snprintf(path, sizeof(path), "%s/run-%d.err", f->dir, i);
        unlink(path);
    }
    rmdir(f->dir);
free_all:
    for (size_t i = 0; i < f->n_env; i++) {
        free(f->env_key[i]);
        free(f->env_val[i]);
    }
    free(f->kids);
    free(f);
}

/* ---- SQL ---- */

PGresult *rw_itest_fleet_q(rw_itest_fleet_t *f, const char *sql, int n,
                           const char *const *params)
{
    PGresult *res = NULL;
    char errstr[512];

    if (rw_pg_exec(f->pg, sql, n, params, &res, errstr, sizeof(errstr)))
        fail_msg("SQL failed: %s\n  in: %s", errstr, sql);
    return res;
}

long long rw_itest_fleet_ll(rw_itest_fleet_t *f, const char *sql, int n,
                            const char *const *params)
{
    PGresult *res = rw_itest_fleet_q(f, sql, n, params);
    long long v = -1;

    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        v = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

void rw_itest_fleet_snapshot(rw_itest_fleet_t *f)
{
    PQclear(rw_itest_fleet_q(f, "DROP TABLE IF EXISTS itest_status_snapshot", 0,
                             NULL));
    PQclear(rw_itest_fleet_q(f,
                             "CREATE TABLE itest_status_snapshot AS"
                             " SELECT id, status FROM app_instances",
                             0, NULL));
    f->snapshot = true;
}

/* One line per run: uuid, status and its targets' states with counts. */
static void describe_runs(rw_itest_fleet_t *f, char *buf, size_t len)
{
    PGresult *res = rw_itest_fleet_q(
        f,
        "SELECT string_agg(line, E'\\n' ORDER BY id) FROM ("
        "  SELECT r.id, 'run ' || r.uuid || ' ' || r.trigger_source || ' '"
        "         || r.status || ': ' || COALESCE((SELECT string_agg("
        "             s.state || '=' || s.n, ' ' ORDER BY s.state) FROM ("
        "               SELECT state, count(*) AS n FROM run_targets t"
        "                WHERE t.run_id = r.id GROUP BY state) s), 'no "
        "targets')"
        "         || ' | chunks ' || COALESCE((SELECT string_agg("
        "             c.chunk || ':' || c.state || '/p' || c.poll_attempts,"
        "             ' ' ORDER BY c.chunk) FROM run_chunks c"
        "              WHERE c.run_id = r.id), '-') AS line"
        "  FROM deployment_runs r) x",
        0, NULL);

    snprintf(buf, len, "%s",
             PQgetisnull(res, 0, 0) ? "(no runs)" : PQgetvalue(res, 0, 0));
    PQclear(res);
}

/*
 * A daemon that exits on its own while a scenario waits for it can only
 * make the wait time out: say so at once, with its log.
 */
static void check_kids_alive(rw_itest_fleet_t *f)
{
    size_t n = f->n_kids; /* respawned children are looked at next time */

    for (size_t i = 0; i < n; i++) {
        kid_t *k = &f->kids[i];
        int status;

        if (k->pid <= 0 || waitpid(k->pid, &status, WNOHANG) != k->pid)
            continue;
        k->pid = 0;
        k->status = status;
        if (k->mode == KID_ONESHOT)
            continue;
        if (k->mode == KID_RESPAWN && WIFEXITED(status) &&
            WEXITSTATUS(status) == FAULT_EXIT_STATUS) {
            kid_t t = *k;
            f->respawns++;
            launch(f, &t);
            continue;
        }
        if (k->mode == KID_MORTAL && WIFEXITED(status) &&
            WEXITSTATUS(status) == FAULT_EXIT_STATUS) {
            f->fault_exits++;
            continue;
        }
        rw_itest_fleet_dump_logs(f);
        if (WIFEXITED(status))
            fail_msg("%s exited on its own with status %d (a SIGTERM from "
                     "outside the test ends it with 0 too)",
                     k->name, WEXITSTATUS(status));
        fail_msg("%s was killed by signal %d", k->name, WTERMSIG(status));
    }
}

void rw_itest_fleet_poll_kids(rw_itest_fleet_t *f)
{
    check_kids_alive(f);
}

bool rw_itest_fleet_all_final(rw_itest_fleet_t *f, long long min_runs)
{
    char sql[256];
    long long v, total, final;

    check_kids_alive(f);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) * 1000000 + count(*) FILTER (WHERE status IN %s)"
             " FROM deployment_runs",
             FINAL_SQL);
    v = rw_itest_fleet_ll(f, sql, 0, NULL);
    total = v / 1000000;
    final = v % 1000000;
    return total >= min_runs && final == total;
}

void rw_itest_fleet_wait_final(rw_itest_fleet_t *f, long long min_runs,
                               long long timeout_ms)
{
    char sql[256], desc[8192];
    long long deadline = rw_itest_now_ms() + timeout_ms;

    snprintf(sql, sizeof(sql),
             "SELECT count(*) * 1000000 + count(*) FILTER (WHERE status IN %s)"
             " FROM deployment_runs",
             FINAL_SQL);
    for (;;) {
        long long v = rw_itest_fleet_ll(f, sql, 0, NULL);
        long long total = v / 1000000, final = v % 1000000;
        if (total >= min_runs && final == total)
            return;
        check_kids_alive(f);
        if (rw_itest_now_ms() > deadline) {
            describe_runs(f, desc, sizeof(desc));
            rw_itest_fleet_dump_logs(f);
            fail_msg("runs not final after %lld ms (%lld of %lld final, "
                     "want at least %lld runs):\n%s",
                     timeout_ms, final, total, min_runs, desc);
        }
        rw_itest_sleep_ms(200);
    }
}

void rw_itest_fleet_wait_count(rw_itest_fleet_t *f, const char *sql,
                               long long want, long long timeout_ms,
                               const char *what)
{
    char desc[8192];
    long long deadline = rw_itest_now_ms() + timeout_ms, got;

    for (;;) {
        got = rw_itest_fleet_ll(f, sql, 0, NULL);
        if (got >= want)
            return;
        check_kids_alive(f);
        if (rw_itest_now_ms() > deadline)
            break;
        rw_itest_sleep_ms(100);
    }
    describe_runs(f, desc, sizeof(desc));
    rw_itest_fleet_dump_logs(f);
    fail_msg("%s: %lld after %lld ms, want %lld\n%s", what, got, timeout_ms,
             want, desc);
}

/* ---- invariants ---- */

static void check_runs(rw_itest_fleet_t *f)
{
    char sql[2048], desc[8192];
    PGresult *res;

    snprintf(sql, sizeof(sql),
             "SELECT r.uuid::text AS uuid, r.status,"
             "  r.total_count, r.succeeded_count, r.failed_count,"
             "  r.skipped_count,"
             "  COALESCE(r.last_error LIKE 'strategy: %%', false)"
             "    AS bad_strategy,"
             "  (SELECT count(*) FROM run_transitions x WHERE x.run_id = r.id"
             "     AND x.to_status IN %s) AS finals,"
             "  (SELECT count(*) FROM run_transitions x WHERE x.run_id = r.id"
             "     AND x.from_status IN %s AND x.to_status = 'running')"
             "    AS reopened,"
             "  count(t.id) AS t_total,"
             "  count(t.id) FILTER (WHERE t.state = 'succeeded') AS t_ok,"
             "  count(t.id) FILTER (WHERE t.state IN ('failed', 'timed_out'))"
             "    AS t_failed,"
             "  count(t.id) FILTER (WHERE t.state IN ('skipped', 'cancelled'))"
             "    AS t_skipped"
             " FROM deployment_runs r LEFT JOIN run_targets t"
             "   ON t.run_id = r.id GROUP BY r.id ORDER BY r.id",
             FINAL_SQL, FINAL_SQL);
    res = rw_itest_fleet_q(f, sql, 0, NULL);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *uuid = rw_pg_str(res, i, "uuid");
        const char *status = rw_pg_str(res, i, "status");
        int st = rw_run_state_parse(status);
        long long total = rw_pg_ll(res, i, "total_count", -1);
        long long ok = rw_pg_ll(res, i, "succeeded_count", -1);
        long long failed = rw_pg_ll(res, i, "failed_count", -1);
        long long skipped = rw_pg_ll(res, i, "skipped_count", -1);
        long long finals = rw_pg_ll(res, i, "finals", -1);

        if (st < 0 || !rw_run_terminal((rw_run_state_t)st)) {
            describe_runs(f, desc, sizeof(desc));
            fail_msg("run %s is %s, not final\n%s", uuid, status, desc);
        }
        long long reopened = rw_pg_ll(res, i, "reopened", -1);

        /* a retry reopens a final run; each opening ends exactly once */
        if (finals != 1 + reopened)
            fail_msg("run %s was finalized %lld times (run_transitions into "
                     "a final state) and reopened %lld times by a retry, "
                     "want exactly one finalization per opening",
                     uuid, finals, reopened);
        if (total != rw_pg_ll(res, i, "t_total", -2) ||
            ok != rw_pg_ll(res, i, "t_ok", -2) ||
            failed != rw_pg_ll(res, i, "t_failed", -2) ||
            skipped != rw_pg_ll(res, i, "t_skipped", -2))
            fail_msg("run %s counts total=%lld succeeded=%lld failed=%lld "
                     "skipped=%lld, its targets say %s/%s/%s/%s",
                     uuid, total, ok, failed, skipped,
                     rw_pg_str(res, i, "t_total"), rw_pg_str(res, i, "t_ok"),
                     rw_pg_str(res, i, "t_failed"),
                     rw_pg_str(res, i, "t_skipped"));
        if (total != ok + failed + skipped)
            fail_msg("run %s: total %lld != %lld + %lld + %lld", uuid, total,
                     ok, failed, skipped);
        /* a run whose strategy does not validate fails at creation with
         * every target skipped */
        if (rw_pg_bool(res, i, "bad_strategy", 0) &&
            (st != RW_RUN_FAILED || skipped != total))
            fail_msg("run %s has an invalid strategy but is %s with %lld of "
                     "%lld targets skipped",
                     uuid, status, skipped, total);
        if (st != RW_RUN_CANCELLED && !rw_pg_bool(res, i, "bad_strategy", 0) &&
            (rw_run_state_t)st != rw_run_outcome(ok, failed))
            fail_msg("run %s is %s but %lld succeeded / %lld failed make "
                     "it %s",
                     uuid, status, ok, failed,
                     rw_run_state_name(rw_run_outcome(ok, failed)));
    }
    PQclear(res);
}

static void check_targets(rw_itest_fleet_t *f)
{
    long long n;

    n = rw_itest_fleet_ll(f,
                          "SELECT count(*) FROM run_targets WHERE state IN"
                          " ('pending', 'claimed', 'triggered', 'deploying')",
                          0, NULL);
    if (n != 0)
        fail_msg("%lld targets are not terminal after every run ended", n);
    n = rw_itest_fleet_ll(f,
                          "SELECT count(*) FROM run_chunks"
                          " WHERE state NOT IN ('done', 'failed')",
                          0, NULL);
    if (n != 0)
        fail_msg("%lld chunks are still open after every run ended", n);
    /* invariant 2 over the whole history, not only at this moment */
    n = rw_itest_fleet_ll(
        f,
        "SELECT count(*) FROM run_targets a JOIN run_targets b"
        "  ON a.instance_id = b.instance_id AND a.run_id < b.run_id"
        " WHERE a.claimed_at IS NOT NULL AND b.claimed_at IS NOT NULL"
        "   AND tstzrange(a.claimed_at, a.finished_at)"
        "       && tstzrange(b.claimed_at, b.finished_at)",
        0, NULL);
    if (n != 0)
        fail_msg("%lld pairs of targets had one instance in flight in two "
                 "runs at once",
                 n);
}

static void check_status(rw_itest_fleet_t *f)
{
    long long n;

    if (!f->snapshot)
        fail_msg("no status snapshot: call rw_itest_fleet_snapshot after "
                 "seeding");
    n = rw_itest_fleet_ll(f,
                          "SELECT count(*) FROM app_instances i"
                          " FULL JOIN itest_status_snapshot s ON s.id = i.id"
                          " WHERE i.status IS DISTINCT FROM s.status",
                          0, NULL);
    if (n != 0)
        fail_msg("%lld instances changed their lifecycle status", n);
}

static void check_outbox_and_locks(rw_itest_fleet_t *f)
{
    long long deadline = rw_itest_now_ms() + 5000, unpublished, locks;
    char first[200];

    for (;;) {
        unpublished = rw_itest_fleet_ll(f,
                                        "SELECT count(*) FROM outbox"
                                        " WHERE published_at IS NULL",
                                        0, NULL);
        locks = lock_keys(f, false, first, sizeof(first));
        if (unpublished == 0 && locks == 0)
            return;
        if (rw_itest_now_ms() > deadline)
            break;
        rw_itest_sleep_ms(100);
    }
    if (unpublished)
        fail_msg("%lld outbox rows stay unpublished", unpublished);
    fail_msg("%lld Redis locks left (e.g. %s)", locks, first);
}

static void check_dlq(rw_itest_fleet_t *f)
{
    rw_settings_t s;
    rw_kafka_consumer_t *kc = NULL;
    char errstr[512], topic[200];
    int parts = 0;
    long long dead = 0;
    rw_err_t err;

    memset(&s, 0, sizeof(s));
    s.kafka_brokers = (char *)rw_itest_fleet_brokers(f);
    s.kafka_topic_prefix = f->prefix;
    s.kafka_security_protocol = "plaintext";
    s.kafka_properties = "";
    s.kafka_session_timeout_ms = 6000;
    s.kafka_group = f->prefix;
    rw_kafka_topic(topic, sizeof(topic), &s, "dlq");
    if (rw_kafka_consumer_new(&kc, &s, NULL, NULL, 0, errstr, sizeof(errstr)))
        fail_msg("kafka consumer: %s", errstr);
    err = rw_kafka_partition_count(kc, topic, &parts, 10000, errstr,
                                   sizeof(errstr));
    if (err && err != RW_ERR_NOT_FOUND)
        fail_msg("partitions of %s: %s", topic, errstr);
    for (int p = 0; !err && p < parts; p++) {
        int64_t lo = 0, hi = 0;
        if (rw_kafka_watermarks(kc, topic, p, &lo, &hi, 10000, errstr,
                                sizeof(errstr)))
            fail_msg("watermarks of %s/%d: %s", topic, p, errstr);
        dead += hi - lo;
    }
    rw_kafka_consumer_destroy(kc);
    /* a poison may be dead-lettered more than once (at least once) */
    if (f->expect_dead == 0 ? dead != 0 : dead < f->expect_dead) {
        rw_itest_fleet_dump_logs(f);
        fail_msg("%lld messages were dead-lettered to %s, want %s%lld", dead,
                 topic, f->expect_dead ? "at least " : "", f->expect_dead);
    }
}

/*
 * Compare the simulator's per-environment trigger counts with the targets
 * that carry a bulk id: excess = triggers beyond them (duplicate calls),
 * missing = targets with a bulk id Lagoon never saw. The first environment
 * that differs is described in bad.
 */
static void sim_vs_targets(rw_itest_fleet_t *f, long long *excess,
                           long long *missing, char *bad, size_t badlen)
{
    json_t *stats = rw_itest_fleet_sim(f, "/sim/stats", NULL);
    json_t *triggers = json_object_get(stats, "triggers");
    const char *key;
    json_t *val;
    PGresult *res;

    *excess = *missing = 0;
    bad[0] = '\0';
    if (!json_is_object(triggers))
        fail_msg("/sim/stats lacks triggers");
    res = rw_itest_fleet_q(f,
                           "SELECT lagoon_project || '/' || lagoon_environment"
                           "   AS env, count(*) AS n"
                           " FROM run_targets WHERE bulk_id IS NOT NULL"
                           " GROUP BY 1",
                           0, NULL);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *env = rw_pg_str(res, i, "env");
        long long want = rw_pg_ll(res, i, "n", -1);
        json_t *got = json_object_get(triggers, env);
        long long have = json_is_integer(got) ? json_integer_value(got) : 0;

        if (have > want)
            *excess += have - want;
        else
            *missing += want - have;
        if (have != want && !bad[0])
            snprintf(bad, badlen,
                     "environment %s: Lagoon triggered %lld times, targets "
                     "with a bulk id: %lld",
                     env, have, want);
        /* seen: what is left in triggers has no target with a bulk id */
        json_object_del(triggers, env);
    }
    PQclear(res);
    json_object_foreach(triggers, key, val)
    {
        long long have = json_is_integer(val) ? json_integer_value(val) : 0;
        *excess += have;
        if (!bad[0])
            snprintf(bad, badlen,
                     "environment %s: Lagoon triggered %lld times, no "
                     "target carries a bulk id for it",
                     key, have);
    }
    json_decref(stats);
}

/*
 * The simulator saw each environment exactly as often as targets carry a
 * bulk id for it: a bulk id is written only for the call that succeeded,
 * so more sim triggers mean a duplicate call, fewer a lost record.
 */
static void check_sim(rw_itest_fleet_t *f)
{
    long long maxv = rw_itest_fleet_sim_stat(f, "max_envs_per_call");
    long long excess, missing;
    char bad[400];

    if (maxv > f->chunk_size)
        fail_msg("a Lagoon call carried %lld environments, chunk size %lld",
                 maxv, f->chunk_size);
    sim_vs_targets(f, &excess, &missing, bad, sizeof(bad));
    if (excess != f->extra_triggers || missing)
        fail_msg("%lld triggers beyond the targets with a bulk id (want "
                 "%lld), %lld such targets Lagoon never saw; e.g. %s",
                 excess, f->extra_triggers, missing, bad);
}

long long rw_itest_fleet_duplicates(rw_itest_fleet_t *f)
{
    long long excess, missing;
    char bad[400];

    sim_vs_targets(f, &excess, &missing, bad, sizeof(bad));
    return excess;
}

void rw_itest_fleet_check(rw_itest_fleet_t *f)
{
    check_runs(f);
    check_targets(f);
    check_status(f);
    check_outbox_and_locks(f);
    check_dlq(f);
    check_sim(f);
}

void rw_itest_fleet_expect_extra_triggers(rw_itest_fleet_t *f, long long n)
{
    f->extra_triggers = n;
}

void rw_itest_fleet_expect_dead_letters(rw_itest_fleet_t *f, long long n)
{
    f->expect_dead = n;
}

/* ---- a Kafka of the fleet's own ---- */

const char *rw_itest_fleet_brokers(rw_itest_fleet_t *f)
{
    return f->broker_pid > 0 ? f->brokers
                             : rw_itest_env("ROLLWAVE_KAFKA_BROKERS");
}

void rw_itest_fleet_private_broker(rw_itest_fleet_t *f, int brokers)
{
    char bin[512], n[16], **envp;
    long long deadline;
    const char *argv[] = {bin,
                          "--bootstrap-file",
                          f->broker_file,
                          "--topic-prefix",
                          f->prefix,
                          "--brokers",
                          n,
                          "--partitions",
                          "6",
                          NULL};

    if (f->broker_pid > 0)
        fail_msg("the fleet already has its own devbroker");
    snprintf(n, sizeof(n), "%d", brokers);
    snprintf(f->broker_log, sizeof(f->broker_log), "%s/devbroker.log", f->dir);
    snprintf(f->broker_file, sizeof(f->broker_file), "%s/kafka.bootstrap",
             f->dir);
    rw_itest_bin(bin, sizeof(bin), "rollwave-devbroker");
    if (access(bin, X_OK) != 0)
        fail_msg("%s is not an executable: build rollwave-devbroker", bin);
    envp = build_envp(f, NULL);
    f->broker_pid =
        spawn(bin, (char *const *)argv, envp, f->broker_log, f->broker_log);
    free_envp(envp);
    deadline = rw_itest_now_ms() + 15000;
    for (;;) {
        FILE *fp = fopen(f->broker_file, "r");
        int status;

        if (fp) {
            if (!fgets(f->brokers, sizeof(f->brokers), fp))
                f->brokers[0] = '\0';
            fclose(fp);
            f->brokers[strcspn(f->brokers, "\r\n")] = '\0';
            if (f->brokers[0])
                break;
        }
        if (waitpid(f->broker_pid, &status, WNOHANG) == f->broker_pid) {
            f->broker_pid = 0;
            tail_file("devbroker", f->broker_log, 2000);
            fail_msg("devbroker exited before writing its bootstrap file");
        }
        if (rw_itest_now_ms() > deadline)
            fail_msg("devbroker wrote no bootstrap file within 15 s");
        rw_itest_sleep_ms(20);
    }
    rw_itest_fleet_set(f, "ROLLWAVE_KAFKA_BROKERS", f->brokers);
}

static void broker_signal(rw_itest_fleet_t *f, int sig)
{
    if (f->broker_pid <= 0)
        fail_msg("the fleet has no devbroker of its own: call "
                 "rw_itest_fleet_private_broker first");
    if (kill(f->broker_pid, sig) != 0)
        fail_msg("signal to devbroker: %s", strerror(errno));
}

void rw_itest_fleet_broker_down(rw_itest_fleet_t *f)
{
    broker_signal(f, SIGUSR1);
}

void rw_itest_fleet_broker_up(rw_itest_fleet_t *f)
{
    broker_signal(f, SIGUSR2);
}

/* ---- the stack's Redis and Postgres ---- */

/* First line of <stack dir>/name into buf. */
static void stack_file(char *buf, size_t len, const char *name)
{
    char path[600];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", rw_itest_env("ROLLWAVE_STACK_DIR"),
             name);
    fp = fopen(path, "r");
    if (!fp)
        fail_msg("%s: %s (is the stack up?)", path, strerror(errno));
    if (!fgets(buf, (int)len, fp))
        buf[0] = '\0';
    fclose(fp);
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!buf[0])
        fail_msg("%s is empty", path);
}

static void shell(const char *cmd, const char *what)
{
    int rc = system(cmd);

    if (rc != 0)
        fail_msg("%s failed (status %d): %s", what, rc, cmd);
}

static bool redis_pings(int port)
{
    struct timeval tv = {0, 300000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    redisReply *r = NULL;
    bool ok = false;

    if (c && !c->err) {
        r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS;
    }
    if (r)
        freeReplyObject(r);
    if (c)
        redisFree(c);
    return ok;
}

void rw_itest_fleet_stop_redis(rw_itest_fleet_t *f)
{
    char port_s[32], cmd[256];
    int port;
    long long deadline;

    (void)f;
    stack_file(port_s, sizeof(port_s), "redis.port");
    port = atoi(port_s);
    /* nosave: the stack's Redis keeps nothing, locks included, by design */
    snprintf(cmd, sizeof(cmd),
             "redis-cli -h 127.0.0.1 -p %d shutdown nosave >/dev/null 2>&1",
             port);
    if (system(cmd) == -1)
        fail_msg("could not run redis-cli");
    deadline = rw_itest_now_ms() + 10000;
    while (redis_pings(port)) {
        if (rw_itest_now_ms() > deadline)
            fail_msg("redis on port %d did not shut down", port);
        rw_itest_sleep_ms(50);
    }
}

void rw_itest_fleet_start_redis(rw_itest_fleet_t *f)
{
    const char *dir = rw_itest_env("ROLLWAVE_STACK_DIR");
    char port_s[32], cmd[2048];
    int port;
    long long deadline;

    (void)f;
    stack_file(port_s, sizeof(port_s), "redis.port");
    port = atoi(port_s);
    /* the command line of scripts/stack.sh, so `down` finds it again */
    snprintf(cmd, sizeof(cmd),
             "redis-server --port %d --bind 127.0.0.1 --save '' "
             "--appendonly no --daemonize yes --pidfile '%s/redis.pid' "
             "--logfile '%s/redis.log' --dir '%s/redis' >/dev/null",
             port, dir, dir, dir);
    shell(cmd, "redis restart");
    deadline = rw_itest_now_ms() + 10000;
    while (!redis_pings(port)) {
        if (rw_itest_now_ms() > deadline)
            fail_msg("redis did not come back on port %d", port);
        rw_itest_sleep_ms(50);
    }
}

void rw_itest_fleet_restart_redis(rw_itest_fleet_t *f, long long down_ms)
{
    rw_itest_fleet_stop_redis(f);
    rw_itest_sleep_ms(down_ms);
    rw_itest_fleet_start_redis(f);
}

/* Path of pg_ctl: the newest installed server's. */
static void pg_ctl_path(char *buf, size_t len)
{
    glob_t g;

    memset(&g, 0, sizeof(g));
    if (glob("/usr/lib/postgresql/*/bin/pg_ctl", 0, NULL, &g) == 0 &&
        g.gl_pathc > 0)
        snprintf(buf, len, "%s", g.gl_pathv[g.gl_pathc - 1]);
    else
        snprintf(buf, len, "pg_ctl");
    globfree(&g);
}

void rw_itest_fleet_restart_pg(rw_itest_fleet_t *f, long long down_ms)
{
    char base[400], port_s[32], pg_ctl[300], as[64], cmd[2048];
    long long deadline;

    (void)f;
    stack_file(base, sizeof(base), "pg.base");
    stack_file(port_s, sizeof(port_s), "pg.port");
    pg_ctl_path(pg_ctl, sizeof(pg_ctl));
    /* as root, the stack's server runs as the postgres user */
    snprintf(as, sizeof(as), "%s",
             geteuid() == 0 ? "runuser -u postgres --" : "");
    snprintf(cmd, sizeof(cmd),
             "cd / && %s '%s' -D '%s/data' -m fast -w -t 30 stop "
             ">/dev/null 2>&1",
             as, pg_ctl, base);
    shell(cmd, "postgres stop");
    rw_itest_sleep_ms(down_ms);
    snprintf(cmd, sizeof(cmd),
             "cd / && %s '%s' -D '%s/data' -l '%s/pg.log' -w -t 30 "
             "-o '-p %d' start >/dev/null 2>&1",
             as, pg_ctl, base, base, atoi(port_s));
    shell(cmd, "postgres start");
    deadline = rw_itest_now_ms() + 30000;
    for (;;) {
        char dsn[256];
        snprintf(dsn, sizeof(dsn),
                 "host=127.0.0.1 port=%d dbname=postgres user=rollwave "
                 "connect_timeout=2",
                 atoi(port_s));
        if (PQping(dsn) == PQPING_OK)
            break;
        if (rw_itest_now_ms() > deadline)
            fail_msg("postgres did not accept connections on port %s", port_s);
        rw_itest_sleep_ms(100);
    }
}

/* ---- a Redis that answers with errors ---- */

/* s percent-encoded into out (userinfo of a redis:// URL). */
static void url_encode(char *out, size_t len, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (; *s && o + 4 < len; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            (ch >= '0' && ch <= '9') || strchr("-._~", ch)) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

void rw_itest_fleet_redis_proxy(rw_itest_fleet_t *f)
{
    rw_redis_url_t u;
    char errstr[256], user[400], pass[800], url[1400];

    if (f->redis_proxy)
        fail_msg("the fleet already has a Redis proxy");
    if (rw_redis_url_parse(&u, rw_itest_env("ROLLWAVE_REDIS_URL"), errstr,
                           sizeof(errstr)))
        fail_msg("ROLLWAVE_REDIS_URL: %s", errstr);
    if (u.is_unix)
        fail_msg("the Redis proxy speaks TCP: ROLLWAVE_REDIS_URL is a unix "
                 "socket");
    f->redis_proxy = rw_itest_redis_proxy_new(u.host, u.port);
    url_encode(user, sizeof(user), u.username);
    url_encode(pass, sizeof(pass), u.password);
    snprintf(url, sizeof(url), "redis://%s%s%s%s127.0.0.1:%d/%d", user,
             u.password[0] ? ":" : "", pass,
             u.username[0] || u.password[0] ? "@" : "",
             rw_itest_redis_proxy_port(f->redis_proxy), u.db);
    rw_itest_fleet_set(f, "ROLLWAVE_REDIS_URL", url);
}

void rw_itest_fleet_redis_fault(rw_itest_fleet_t *f, const char *error)
{
    if (!f->redis_proxy)
        fail_msg("the fleet has no Redis proxy: call "
                 "rw_itest_fleet_redis_proxy first");
    rw_itest_redis_proxy_fail(f->redis_proxy, error);
}

long long rw_itest_fleet_redis_faulted(rw_itest_fleet_t *f)
{
    if (!f->redis_proxy)
        fail_msg("the fleet has no Redis proxy");
    return rw_itest_redis_proxy_faulted(f->redis_proxy);
}

/* ---- a read-only Postgres ---- */

/* One statement on conn; false with why filled in when it fails. */
static bool admin_exec(PGconn *conn, const char *sql, int n,
                       const char *const *params, char *value, size_t vlen,
                       char *why, size_t whylen)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

    if (!ok)
        snprintf(why, whylen, "%s: %s", sql, PQresultErrorMessage(res));
    else if (value && vlen)
        snprintf(value, vlen, "%s",
                 PQntuples(res) > 0 ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return ok;
}

/* Whether a new session on the fleet's database defaults to read-only. */
static int new_session_read_only(rw_itest_fleet_t *f, char *why, size_t len)
{
    PGconn *conn = PQconnectdb(f->dsn);
    char v[16] = "";
    int ro = -1;

    if (PQstatus(conn) != CONNECTION_OK)
        snprintf(why, len, "connect: %s", PQerrorMessage(conn));
    else if (admin_exec(conn, "SHOW default_transaction_read_only", 0, NULL, v,
                        sizeof(v), why, len))
        ro = strcmp(v, "on") == 0;
    PQfinish(conn);
    return ro;
}

/*
 * The work of rw_itest_fleet_pg_read_only, reporting instead of failing
 * (the fleet's teardown calls it). *terminated (may be NULL) gets the
 * number of sessions cut.
 */
static bool pg_read_only_apply(rw_itest_fleet_t *f, bool on,
                               long long *terminated, char *why, size_t whylen)
{
    PGconn *conn = PQconnectdb(f->dsn);
    char own[24], count[24] = "0";
    const char *p[1] = {own};
    long long deadline;
    bool ok = PQstatus(conn) == CONNECTION_OK;

    if (!ok)
        snprintf(why, whylen, "connect: %s", PQerrorMessage(conn));
    /* this session must write even while the server defaults to not */
    ok = ok && admin_exec(conn, "SET default_transaction_read_only = off", 0,
                          NULL, NULL, 0, why, whylen);
    ok = ok && admin_exec(conn,
                          on ? "ALTER SYSTEM SET default_transaction_read_only"
                               " = on"
                             : "ALTER SYSTEM RESET "
                               "default_transaction_read_only",
                          0, NULL, NULL, 0, why, whylen);
    ok = ok && admin_exec(conn, "SELECT pg_reload_conf()", 0, NULL, NULL, 0,
                          why, whylen);
    if (f->pg_read_only != on && ok)
        f->pg_read_only = on;
    /* the reload is asynchronous: wait until new sessions see it */
    deadline = rw_itest_now_ms() + 10000;
    while (ok) {
        int ro = new_session_read_only(f, why, whylen);
        if (ro < 0)
            ok = false;
        else if (ro == (on ? 1 : 0))
            break;
        else if (rw_itest_now_ms() > deadline) {
            snprintf(why, whylen,
                     "new sessions still default to read_only=%s 10 s after "
                     "pg_reload_conf()",
                     on ? "off" : "on");
            ok = false;
        } else {
            rw_itest_sleep_ms(50);
        }
    }
    /* sessions that are open keep their transaction until the next one:
     * cut them so every daemon reconnects into the new default */
    snprintf(own, sizeof(own), "%d",
             f->pg ? PQbackendPID(rw_pg_conn(f->pg)) : 0);
    ok = ok && (!on || admin_exec(conn,
                                  "SELECT count(pg_terminate_backend(pid))"
                                  " FROM pg_stat_activity"
                                  " WHERE datname = current_database()"
                                  "   AND backend_type = 'client backend'"
                                  "   AND pid <> pg_backend_pid()"
                                  "   AND pid <> $1::int",
                                  1, p, count, sizeof(count), why, whylen));
    if (terminated)
        *terminated = atoll(count);
    PQfinish(conn);
    return ok;
}

static bool pg_read_only_set(rw_itest_fleet_t *f, bool on, char *why,
                             size_t whylen)
{
    return pg_read_only_apply(f, on, NULL, why, whylen);
}

long long rw_itest_fleet_pg_read_only(rw_itest_fleet_t *f, bool on)
{
    char why[512];
    long long terminated = 0;

    if (!pg_read_only_apply(f, on, &terminated, why, sizeof(why)))
        fail_msg("Postgres read-only %s: %s", on ? "on" : "off", why);
    return terminated;
}

/* ---- sanitizers ---- */

void rw_itest_fleet_scan_logs(rw_itest_fleet_t *f)
{
    static const char *const bad[] = {
        "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
        "runtime error:", "ERROR: ThreadSanitizer"};
    char line[4096];

    for (size_t i = 0; i < f->n_kids; i++) {
        FILE *fp = fopen(f->kids[i].log, "r");

        if (!fp)
            continue;
        while (fgets(line, sizeof(line), fp))
            for (size_t j = 0; j < sizeof(bad) / sizeof(bad[0]); j++)
                if (strstr(line, bad[j])) {
                    fclose(fp);
                    tail_file(f->kids[i].name, f->kids[i].log, 6000);
                    fail_msg("%s reported \"%s\"", f->kids[i].name, bad[j]);
                }
        fclose(fp);
    }
}

long long rw_itest_fleet_add_app(rw_itest_fleet_t *f, long long chunk_size)
{
    char chunk_s[24];
    const char *p[1] = {chunk_size > 0 ? chunk_s : NULL};

    snprintf(chunk_s, sizeof(chunk_s), "%lld", chunk_size);
    return rw_itest_fleet_ll(f,
                             "INSERT INTO store_apps (name, redeploy_enabled,"
                             "   redeploy_interval_days, bulk_chunk_size)"
                             " VALUES ('app', true, 7, $1::int) RETURNING id",
                             1, p);
}

void rw_itest_fleet_add_instances(rw_itest_fleet_t *f, long long app,
                                  const char *prefix, int n)
{
    char app_s[24], n_s[16];
    const char *p[3] = {app_s, prefix, n_s};

    snprintf(app_s, sizeof(app_s), "%lld", app);
    snprintf(n_s, sizeof(n_s), "%d", n);
    PQclear(rw_itest_fleet_q(
        f,
        "INSERT INTO app_instances (name, store_app_id, status,"
        "   lagoon_project, lagoon_environment)"
        " SELECT $2 || g, $1::bigint,"
        "   CASE WHEN g % 2 = 0 THEN 'running-healthy-claimed'"
        "        ELSE 'running-healthy-unclaimed' END, $2 || g, 'main'"
        " FROM generate_series(1, $3::int) g",
        3, p));
}
