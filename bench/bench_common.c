/*
 * bench_common: what the benchmark programs share: the environment they
 * read, option parsing, clocks, HTTP to the simulator and the daemons'
 * /metrics, daemons started as children with an environment of their own,
 * and the benchmark database (created, seeded, dropped).
 *
 * It measures nothing itself and prints only the errors it reports; what
 * a benchmark does with a fleet is in its own file.
 */
#include "bench_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

extern char **environ;

/* ---- configuration ---------------------------------------------------- */

#define BKEY(env, type, field, req, help)                                      \
    {                                                                          \
        env, type, NULL, 0, 0, offsetof(rw_bench_env_t, field), req, help      \
    }

const rw_cfg_key_t rw_bench_env_keys[] = {
    BKEY("ROLLWAVE_PG_DSN", RW_CFG_SECRET, pg_dsn, 1,
         "Postgres server; the benchmark creates its own database there"),
    BKEY("ROLLWAVE_REDIS_URL", RW_CFG_SECRET, redis_url, 1,
         "Redis of the stack (CONFIG RESETSTAT and INFO are used)"),
    BKEY("ROLLWAVE_KAFKA_BROKERS", RW_CFG_STR, kafka_brokers, 1,
         "Kafka bootstrap servers, passed to the daemons"),
    BKEY("ROLLWAVE_LAGOON_URL", RW_CFG_STR, lagoon_url, 1,
         "Lagoon GraphQL endpoint (the simulator), passed to the daemons"),
    BKEY("ROLLWAVE_LAGOON_TOKEN", RW_CFG_SECRET, lagoon_token, 1,
         "bearer token of the simulator, passed to the daemons"),
    BKEY("ROLLWAVE_SIM_ADMIN_URL", RW_CFG_STR, sim_admin_url, 1,
         "simulator base URL for /sim/reset, /sim/config and /sim/stats"),
};
const size_t rw_bench_n_env_keys =
    sizeof(rw_bench_env_keys) / sizeof(rw_bench_env_keys[0]);

int rw_bench_parse_ll(const char *prog, const char *opt, const char *val,
                      long long min, long long max, long long *out)
{
    char *end = NULL;
    long long v;

    if (!val) {
        fprintf(stderr, "%s: %s needs a value\n", prog, opt);
        return -1;
    }
    errno = 0;
    v = strtoll(val, &end, 10);
    if (errno || !end || *end || end == val || v < min || v > max) {
        fprintf(stderr, "%s: %s must be an integer in [%lld, %lld]\n", prog,
                opt, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- small helpers ---------------------------------------------------- */

volatile sig_atomic_t rw_bench_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    rw_bench_interrupted = 1;
}

void rw_bench_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

long long rw_bench_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rw_bench_sleep_ms(long long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !rw_bench_interrupted)
        ;
}

double rw_bench_per(double x, double n)
{
    return n > 0 ? x / n : 0.0;
}

/* A free loopback TCP port (closed again: a small race we accept). */
int rw_bench_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* ---- HTTP (libcurl) ----------------------------------------------------- */

typedef struct body {
    char *p;
    size_t n;
} body_t;

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    body_t *b = ud;
    size_t add = size * nmemb;
    char *np = realloc(b->p, b->n + add + 1);

    if (!np)
        return 0;
    memcpy(np + b->n, ptr, add);
    b->n += add;
    np[b->n] = '\0';
    b->p = np;
    return add;
}

/*
 * GET (post_json NULL) or POST url. *out (may be NULL) receives the body,
 * which the caller frees. Returns the HTTP status, or -1 when no answer.
 */
long rw_bench_http(const char *url, const char *post_json, char **out)
{
    CURL *h = curl_easy_init();
    struct curl_slist *hdr = NULL;
    body_t b = {NULL, 0};
    long code = -1;

    if (out)
        *out = NULL;
    if (!h)
        return -1;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    if (post_json) {
        hdr = curl_slist_append(hdr, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, post_json);
    }
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hdr);
    curl_easy_cleanup(h);
    if (out)
        *out = b.p;
    else
        free(b.p);
    return code;
}

/* Sum of every sample of metric `name` (any labels) whose label text
 * contains `label_has` (NULL = any), from Prometheus text. */
double rw_bench_metric_sum(const char *text, const char *name,
                           const char *label_has)
{
    double sum = 0;
    size_t nl = strlen(name);

    for (const char *l = text; l && *l;) {
        const char *eol = strchr(l, '\n');
        size_t len = eol ? (size_t)(eol - l) : strlen(l);
        if (len > nl && strncmp(l, name, nl) == 0 &&
            (l[nl] == '{' || l[nl] == ' ')) {
            const char *sp = memchr(l, ' ', len);
            const char *lbl_end = memchr(l, '}', len);
            int match = 1;
            if (label_has) {
                char lbl[512];
                size_t ll = lbl_end ? (size_t)(lbl_end - l) : 0;
                if (ll >= sizeof(lbl))
                    ll = sizeof(lbl) - 1;
                memcpy(lbl, l, ll);
                lbl[ll] = '\0';
                match = strstr(lbl, label_has) != NULL;
            }
            if (lbl_end)
                sp = memchr(lbl_end, ' ', len - (size_t)(lbl_end - l));
            if (sp && match)
                sum += strtod(sp + 1, NULL);
        }
        l = eol ? eol + 1 : NULL;
    }
    return sum;
}

/* ---- daemons ---------------------------------------------------------- */

int rw_bench_env_put(rw_bench_envset_t *e, const char *key, const char *val)
{
    size_t kl = strlen(key);
    char *kv;

    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->v[i], key, kl) == 0 && e->v[i][kl] == '=') {
            free(e->v[i]);
            e->v[i] = e->v[--e->n];
            break;
        }
    if (e->n + 2 > e->cap) {
        size_t nc = e->cap ? e->cap * 2 : 64;
        char **nv = realloc(e->v, nc * sizeof(*nv));
        if (!nv)
            return -1;
        e->v = nv;
        e->cap = nc;
    }
    kv = malloc(kl + strlen(val) + 2);
    if (!kv)
        return -1;
    sprintf(kv, "%s=%s", key, val);
    e->v[e->n++] = kv;
    e->v[e->n] = NULL;
    return 0;
}

void rw_bench_env_free(rw_bench_envset_t *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i]);
    free(e->v);
    memset(e, 0, sizeof(*e));
}

/* A copy of this process's environment, to be amended per daemon. */
int rw_bench_env_copy(rw_bench_envset_t *e)
{
    memset(e, 0, sizeof(*e));
    for (char **p = environ; *p; p++) {
        const char *eq = strchr(*p, '=');
        char key[256];
        if (!eq || (size_t)(eq - *p) >= sizeof(key))
            continue;
        memcpy(key, *p, (size_t)(eq - *p));
        key[eq - *p] = '\0';
        if (rw_bench_env_put(e, key, eq + 1))
            return -1;
    }
    return 0;
}

/*
 * fork + execve bin with envp; stdout and stderr go to log_path. Only
 * async-signal-safe calls happen between fork and exec (the proxy thread
 * runs in the parent).
 */
pid_t rw_bench_spawn(const char *bin, char *const argv[], char *const envp[],
                     const char *log_path)
{
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    pid_t pid;

    if (fd < 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        execve(bin, argv, envp);
        _exit(127);
    }
    close(fd);
    return pid;
}

long long rw_bench_vm_hwm_kb(pid_t pid)
{
    char path[64], line[256];
    long long kb = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = atoll(line + 6);
    fclose(f);
    return kb;
}

/* ppid and CPU ticks (utime, stime, cutime, cstime) of pid; 0 on success */
static int proc_stat(pid_t pid, long *ppid, unsigned long long t[4])
{
    char path[64], buf[1024];
    const char *p;
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the command name may hold anything: fields follow its last ')' */
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 2,
                     "%*c %ld %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
                     "%llu %llu",
                     ppid, &t[0], &t[1], &t[2], &t[3]) != 5)
        return -1;
    return 0;
}

double rw_bench_proc_cpu_s(pid_t pid)
{
    unsigned long long t[4];
    long ppid;

    if (proc_stat(pid, &ppid, t))
        return -1;
    return (double)(t[0] + t[1]) / (double)sysconf(_SC_CLK_TCK);
}

long rw_bench_parent_pid(pid_t pid)
{
    unsigned long long t[4];
    long ppid;

    return proc_stat(pid, &ppid, t) ? -1 : ppid;
}

double rw_bench_tree_cpu_s(pid_t root)
{
    unsigned long long t[4], sum;
    long ppid;
    DIR *d;
    struct dirent *e;

    if (proc_stat(root, &ppid, t))
        return -1;
    sum = t[0] + t[1] + t[2] + t[3];
    d = opendir("/proc");
    if (!d)
        return -1;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || pid == root)
            continue;
        if (!proc_stat((pid_t)pid, &ppid, t) && ppid == root)
            sum += t[0] + t[1];
    }
    closedir(d);
    return (double)sum / (double)sysconf(_SC_CLK_TCK);
}

int rw_bench_machine_cpu_s(double *busy, double *all)
{
    unsigned long long v[8] = {0}, sum = 0;
    FILE *f = fopen("/proc/stat", "r");
    int got;

    if (!f)
        return -1;
    got = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
                 &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (got < 4)
        return -1;
    for (int i = 0; i < 8; i++)
        sum += v[i];
    *all = (double)sum / (double)sysconf(_SC_CLK_TCK);
    *busy = (double)(sum - v[3] - v[4]) / (double)sysconf(_SC_CLK_TCK);
    return 0;
}

/* "exited with status 1" / "killed by signal 11" for a wait status. */
const char *rw_bench_exit_text(int status, char *buf, size_t len)
{
    if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(status));
    else
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    return buf;
}

/* Reap d if it exited; returns 1 when it is gone. */
int rw_bench_reap(rw_bench_daemon_t *d)
{
    int st;

    if (d->exited || d->pid <= 0)
        return 1;
    if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
        d->exited = 1;
        d->status = st;
        return 1;
    }
    return 0;
}

/* SIGTERM (drain), then SIGKILL after 15 s. */
void rw_bench_stop_daemon(rw_bench_daemon_t *d)
{
    if (rw_bench_reap(d))
        return;
    kill(d->pid, SIGTERM);
    for (int i = 0; i < 150; i++) {
        if (rw_bench_reap(d))
            return;
        rw_bench_sleep_ms(100);
    }
    fprintf(stderr, "bench: %s did not drain within 15 s, killing it\n",
            d->name);
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &d->status, 0);
    d->exited = 1;
}

/* ---- Postgres --------------------------------------------------------- */

/* dsn with its dbname replaced by dbname, as a key=value string. */
rw_err_t rw_bench_dsn_with_db(const char *dsn, const char *dbname, char *out,
                              size_t len, char *errstr, size_t errlen)
{
    PQconninfoOption *opts;
    char *perr = NULL;
    size_t n = 0;

    opts = PQconninfoParse(dsn, &perr);
    if (!opts) {
        PQfreemem(perr);
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "ROLLWAVE_PG_DSN is not a valid connection string");
    }
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = strcmp(o->keyword, "dbname") == 0 ? NULL : o->val;
        if (!v)
            continue;
        n += (size_t)snprintf(out + n, n < len ? len - n : 0, "%s='",
                              o->keyword);
        for (const char *s = v; *s && n + 3 < len; s++) {
            if (*s == '\'' || *s == '\\')
                out[n++] = '\\';
            out[n++] = *s;
        }
        if (n + 2 < len) {
            out[n++] = '\'';
            out[n++] = ' ';
            out[n] = '\0';
        }
    }
    PQconninfoFree(opts);
    n +=
        (size_t)snprintf(out + n, n < len ? len - n : 0, "dbname='%s'", dbname);
    if (n >= len)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "connection string too long");
    return RW_OK;
}

/* CREATE or DROP DATABASE: identifiers cannot be parameters, so the
 * generated name is quoted with PQescapeIdentifier. */
rw_err_t rw_bench_admin_db(rw_pg_t *admin, const char *verb, const char *db,
                           const char *suffix, char *errstr, size_t errlen)
{
    char sql[512];
    char *ident = PQescapeIdentifier(rw_pg_conn(admin), db, strlen(db));
    rw_err_t err;

    if (!ident)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "cannot quote %s", db);
    snprintf(sql, sizeof(sql), RW_BENCH_MARK "%s %s%s", verb, ident, suffix);
    PQfreemem(ident);
    err = rw_pg_exec(admin, sql, 0, NULL, NULL, errstr, errlen);
    return err;
}

/*
 * The fleet: store_apps enabled with a 7-day cadence (2 days for beta),
 * every instance redeploy-eligible with a Lagoon target, none due-dated,
 * 10% in the beta group, half of them claimed. One statement.
 */
const char rw_bench_sql_seed[] = RW_BENCH_MARK
    "WITH apps AS ("
    "  INSERT INTO store_apps (name, redeploy_enabled, redeploy_interval_days,"
    "                          beta_redeploy_interval_days)"
    "  SELECT 'bench-app-' || g, true, 7, 2 FROM generate_series(1, $1::int) g"
    "  RETURNING id),"
    " app_arr AS (SELECT array_agg(id ORDER BY id) AS ids FROM apps),"
    " grp AS ("
    "  INSERT INTO user_groups (name, is_beta)"
    "  VALUES ('bench-regular', false), ('bench-beta', true)"
    "  RETURNING id, is_beta),"
    " gids AS (SELECT max(id) FILTER (WHERE is_beta) AS beta_id,"
    "                 max(id) FILTER (WHERE NOT is_beta) AS reg_id FROM grp)"
    " INSERT INTO app_instances (name, store_app_id, user_group_id, status,"
    "     is_trial, lagoon_project, lagoon_environment)"
    " SELECT 'bench-i' || g, a.ids[1 + (g % array_length(a.ids, 1))],"
    "        CASE WHEN g % 10 = 0 THEN gi.beta_id ELSE gi.reg_id END,"
    "        CASE WHEN g % 2 = 0 THEN 'running-healthy-claimed'"
    "             ELSE 'running-healthy-unclaimed' END,"
    "        false, 'bench-p' || g, 'main'"
    " FROM generate_series(1, $2::bigint) g, app_arr a, gids gi";

double rw_bench_num(const PGresult *res, const char *col)
{
    const char *v = rw_pg_str(res, 0, col);
    return v ? strtod(v, NULL) : 0.0;
}

double rw_bench_db_now(rw_pg_t *pg)
{
    PGresult *res = NULL;
    double t = 0;

    if (!rw_pg_exec(pg,
                    RW_BENCH_MARK
                    "SELECT extract(epoch FROM clock_timestamp()) AS t",
                    0, NULL, &res, NULL, 0))
        t = rw_bench_num(res, "t");
    PQclear(res);
    return t;
}

rw_err_t rw_bench_dirs(const char *bin_opt, const char *log_opt,
                       const char *name, char *bin_dir, char *log_dir,
                       char *errstr, size_t errlen)
{
    if (bin_opt) {
        snprintf(bin_dir, PATH_MAX, "%s", bin_opt);
    } else {
        ssize_t r = readlink("/proc/self/exe", bin_dir, PATH_MAX - 1);
        char *slash;
        if (r <= 0)
            return rw_err_set(errstr, errlen, RW_ERR_IO,
                              "cannot find my own directory: use --bin-dir");
        bin_dir[r] = '\0';
        slash = strrchr(bin_dir, '/');
        if (slash)
            *slash = '\0';
    }
    if (log_opt) {
        snprintf(log_dir, PATH_MAX, "%s", log_opt);
        if (mkdir(log_dir, 0755) != 0 && errno != EEXIST)
            return rw_err_set(errstr, errlen, RW_ERR_IO, "mkdir %s: %s",
                              log_dir, strerror(errno));
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(log_dir, PATH_MAX, "%s/%s-XXXXXX", tmp && *tmp ? tmp : "/tmp",
                 name);
        if (!mkdtemp(log_dir))
            return rw_err_set(errstr, errlen, RW_ERR_IO, "mkdtemp: %s",
                              strerror(errno));
    }
    return RW_OK;
}

/* Partitions daemon d owns in its consumer group, from its /metrics; -1:
 * not read. */
static double assigned_partitions(const rw_bench_daemon_t *d)
{
    char url[128], *text = NULL;
    double n = -1;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", d->metrics_port);
    if (rw_bench_http(url, NULL, &text) == 200 && text)
        n = rw_bench_metric_sum(text, "rollwave_consumer_assigned_partitions",
                                NULL);
    free(text);
    return n;
}

/*
 * Until every consumer has owned partitions for a second on end, or
 * max_s has passed: a rollout that starts while a group is still
 * forming measures the group's rebalances (librdkafka's mock cluster can
 * take several rounds when two members join at once), not rollwave. More
 * consumers than partitions never all own one: then the wait runs out
 * and the rollout starts anyway. A daemon that exits meanwhile is an
 * error.
 */
rw_err_t rw_bench_wait_groups(rw_bench_daemon_t *d, size_t nd, long long max_s,
                              char *errstr, size_t errlen)
{
    long long t0 = rw_bench_mono_ms(), since = -1;

    while (!rw_bench_interrupted) {
        long long now = rw_bench_mono_ms();
        size_t owning = 0;
        for (size_t i = 0; i < nd; i++) {
            if (rw_bench_reap(&d[i])) {
                char how[48];
                return rw_err_set(
                    errstr, errlen, RW_ERR_IO,
                    "%s %s while the consumer groups formed", d[i].name,
                    rw_bench_exit_text(d[i].status, how, sizeof(how)));
            }
            if (assigned_partitions(&d[i]) >= 1)
                owning++;
        }
        if (owning < nd)
            since = -1;
        else if (since < 0)
            since = now;
        if (since >= 0 && now - since >= 1000) {
            fprintf(stderr,
                    "bench: every consumer owns partitions, %.1f s after "
                    "the daemons were healthy\n",
                    (double)(now - t0) / 1000.0);
            return RW_OK;
        }
        if (now - t0 >= max_s * 1000) {
            fprintf(stderr,
                    "bench: %zu of %zu consumers own partitions after %lld "
                    "s; starting anyway\n",
                    owning, nd, max_s);
            return RW_OK;
        }
        rw_bench_sleep_ms(250);
    }
    return rw_err_set(errstr, errlen, RW_ERR_IO, "interrupted");
}
