/*
 * sim_model: bulks, deployments, build scheduling, faults and counters of
 * the Lagoon simulator, behind one mutex. Lookups go through open-addressing
 * hash maps (bulk id -> bulk, project/environment -> env, project ->
 * project); a bulk's deployments are contiguous in one array, so answering
 * deploymentsByBulkId costs what the bulk holds, and environments chain
 * their deployments newest first and projects their environments, so
 * projectByName costs what the project holds. It does not parse requests
 * or format GraphQL.
 */
#include "sim_model.h"

#include <fnmatch.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "rw_log.h"

#define COMP "lagoon-sim"

enum dep_state {
    DEP_WAITING = 0, /* before the end of pending: not yet asking to build */
    DEP_QUEUED,      /* wants to build, concurrency cap full (in the FIFO) */
    DEP_ENV_WAIT,    /* wants to build, an older build of its env runs */
    DEP_RUNNING,     /* building until t_end */
    DEP_DONE,        /* terminal: outcome */
};

enum dep_outcome { OUT_COMPLETE = 0, OUT_FAILED, OUT_CANCELLED };

typedef struct dep {
    int64_t t_appear;  /* the row shows up, status new */
    int64_t t_pending; /* new -> pending */
    int64_t t_ready;   /* pending -> running, or queued when capped */
    int64_t t_start;   /* running since (valid from DEP_RUNNING) */
    int64_t t_end;     /* terminal since (valid from DEP_RUNNING) */
    uint32_t env;      /* index into envs */
    uint32_t bulk;     /* index into bulks */
    uint32_t dur_ms;   /* time in running */
    uint32_t prev1;    /* older deployment of the same env + 1; 0 = none */
    uint8_t state;
    uint8_t outcome;
    uint8_t appeared; /* its appear event ran: it may be superseded */
    char name[7];     /* the random part of lagoon-build-xxxxxx */
} dep_t;

typedef struct env {
    char *key; /* "project/environment", NUL-terminated */
    uint32_t project_len;
    uint32_t key_len;
    uint32_t triggers;
    uint32_t health_checks; /* GETs of its route */
    uint32_t last_dep1;     /* newest deployment + 1; 0 = none */
    uint32_t next_env1;     /* next env of the same project + 1; 0 = last */
    /* Lagoon builds one deployment of an environment at a time: the one
     * running, and the one appeared but not yet running (new, pending or
     * queued; a newer one cancels it). Index + 1; 0 = none. */
    uint32_t running1;
    uint32_t active1;
} env_t;

/* A project: its name is the prefix of its first env's key. */
typedef struct proj {
    uint32_t first_env1, last_env1; /* env indexes + 1 */
} proj_t;

typedef struct bulk {
    char id[RW_SIM_UUID_LEN + 1];
    char *name;
    /* buildVariables of the mutation, for the build logs: names and
     * values in one allocation (vars[i] point into it) */
    rw_sim_var_t *vars;
    uint32_t n_vars;
    uint32_t first; /* first index into deps */
    uint32_t n;     /* deployments (rejected environments have none) */
} bulk_t;

/* Open addressing: slot = (hash, index + 1); index + 1 == 0 is empty. */
typedef struct slot {
    uint32_t hash;
    uint32_t idx1;
} slot_t;

typedef struct imap {
    slot_t *slots;
    size_t cap; /* power of two, or 0 */
    size_t n;
} imap_t;

typedef struct hent {
    int64_t key;
    uint32_t idx;
} hent_t;

typedef struct heap {
    hent_t *v;
    size_t n, cap;
} heap_t;

/* Seconds of trigger timeline kept after the first trigger (two hours). */
#define TIMELINE_S 7200

/*
 * Latency histogram over microseconds: values below 16 have a bucket
 * each, then every power of two is cut into 16 buckets, so a bucket's
 * width is at most 1/16 of its values and 592 buckets reach 2^40 us.
 */
#define LAT_SUB     16
#define LAT_BUCKETS (LAT_SUB + 36 * LAT_SUB)

struct rw_sim {
    pthread_mutex_t mu;
    rw_sim_config_t cfg;
    uint64_t rng;
    char route_base[512]; /* set once; rows point at it */

    dep_t *deps;
    size_t n_deps, cap_deps;
    long long id_base; /* deployment id of deps[0]; ids never repeat */
    env_t *envs;
    size_t n_envs, cap_envs;
    bulk_t *bulks;
    size_t n_bulks, cap_bulks;
    proj_t *projects;
    size_t n_projects, cap_projects;
    imap_t env_map, bulk_map, project_map;

    /* DEP_WAITING by t_appear until it appeared, then by t_ready; an
     * entry whose deployment was superseded meanwhile is skipped. */
    heap_t ready;
    heap_t running; /* DEP_RUNNING by t_end */
    /* DEP_QUEUED, FIFO from queue_head; superseded entries stay until
     * popped, so queue_live counts the ones still queued. */
    uint32_t *queue;
    size_t queue_head, queue_len, queue_cap;
    long long queue_live, env_waiting; /* DEP_QUEUED, DEP_ENV_WAIT */
    long long running_builds, peak_running, peak_in_progress;
    long long superseded;

    /* counters of /sim/stats */
    long long bulk_calls, deploy_requests, envs_triggered, max_envs;
    long long duplicate_triggers, graphql_requests, rows_requests;
    long long faults[RW_SIM_FAULT_KINDS]; /* by rw_sim_fault_t */
    long long *envs_per_call;
    size_t envs_per_call_len;
    long long overload_delayed;
    long long health_requests, health_failures;
    long long logs_served, log_errors;
    long long lat_count, lat_sum_us, lat_max_us;
    long long lat_buckets[LAT_BUCKETS];
    int64_t timeline_start;     /* wall ms of the first trigger; 0 = none */
    size_t timeline_len;        /* seconds up to the last one with a trigger */
    long long timeline_dropped; /* environments after TIMELINE_S */
    long long timeline[TIMELINE_S];
};

static uint32_t hash_bytes(const void *p, size_t n, uint64_t h)
{
    const unsigned char *s = p;

    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (uint32_t)h;
}

static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rng_next(rw_sim_t *sim)
{
    sim->rng += 0x9e3779b97f4a7c15ULL;
    return mix64(sim->rng);
}

static double rng_unit(rw_sim_t *sim)
{
    return (double)(rng_next(sim) >> 11) * (1.0 / 9007199254740992.0);
}

long long rw_sim_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- hash map ---------------------------------------------------------- */

typedef bool (*eq_fn)(const rw_sim_t *sim, uint32_t idx, const void *key);

static bool imap_grow(imap_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    slot_t *slots = calloc(cap, sizeof(*slots));

    if (!slots)
        return false;
    for (size_t i = 0; i < m->cap; i++) {
        slot_t s = m->slots[i];
        size_t j;
        if (!s.idx1)
            continue;
        for (j = s.hash & (cap - 1); slots[j].idx1; j = (j + 1) & (cap - 1))
            ;
        slots[j] = s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return true;
}

/* Index of the entry equal to key, or -1. */
static long imap_find(const rw_sim_t *sim, const imap_t *m, uint32_t hash,
                      eq_fn eq, const void *key)
{
    if (!m->cap)
        return -1;
    for (size_t j = hash & (m->cap - 1); m->slots[j].idx1;
         j = (j + 1) & (m->cap - 1)) {
        const slot_t *s = &m->slots[j];
        if (s->hash == hash && eq(sim, s->idx1 - 1, key))
            return (long)(s->idx1 - 1);
    }
    return -1;
}

/* Key known to be absent. */
static bool imap_insert(imap_t *m, uint32_t hash, uint32_t idx)
{
    size_t j;

    if ((m->n + 1) * 2 > m->cap && !imap_grow(m))
        return false;
    for (j = hash & (m->cap - 1); m->slots[j].idx1; j = (j + 1) & (m->cap - 1))
        ;
    m->slots[j].hash = hash;
    m->slots[j].idx1 = idx + 1;
    m->n++;
    return true;
}

static void imap_clear(imap_t *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

/* ---- heaps ------------------------------------------------------------- */

static bool hent_less(hent_t a, hent_t b)
{
    return a.key < b.key || (a.key == b.key && a.idx < b.idx);
}

static bool heap_push(heap_t *h, int64_t key, uint32_t idx)
{
    size_t i;

    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 1024;
        hent_t *v = realloc(h->v, cap * sizeof(*v));
        if (!v)
            return false;
        h->v = v;
        h->cap = cap;
    }
    i = h->n++;
    h->v[i] = (hent_t){key, idx};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        hent_t t;
        if (!hent_less(h->v[i], h->v[p]))
            break;
        t = h->v[i];
        h->v[i] = h->v[p];
        h->v[p] = t;
        i = p;
    }
    return true;
}

static hent_t heap_pop(heap_t *h)
{
    hent_t top = h->v[0];
    size_t i = 0;

    h->v[0] = h->v[--h->n];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        hent_t t;
        if (l < h->n && hent_less(h->v[l], h->v[m]))
            m = l;
        if (r < h->n && hent_less(h->v[r], h->v[m]))
            m = r;
        if (m == i)
            break;
        t = h->v[i];
        h->v[i] = h->v[m];
        h->v[m] = t;
        i = m;
    }
    return top;
}

static int64_t heap_top(const heap_t *h)
{
    return h->n ? h->v[0].key : INT64_MAX;
}

/* ---- build scheduling --------------------------------------------------- */

static bool cap_free(const rw_sim_t *sim)
{
    return sim->cfg.max_concurrent_builds == 0 ||
           sim->running_builds < sim->cfg.max_concurrent_builds;
}

static void note_peaks(rw_sim_t *sim)
{
    long long in_progress =
        sim->running_builds + sim->queue_live + sim->env_waiting;

    if (sim->running_builds > sim->peak_running)
        sim->peak_running = sim->running_builds;
    if (in_progress > sim->peak_in_progress)
        sim->peak_in_progress = in_progress;
}

static void start_build(rw_sim_t *sim, uint32_t idx, int64_t t)
{
    dep_t *d = &sim->deps[idx];
    env_t *e = &sim->envs[d->env];

    d->state = DEP_RUNNING;
    d->t_start = t;
    d->t_end = t + d->dur_ms;
    if (e->active1 == idx + 1)
        e->active1 = 0;
    /* The heap only grows as far as deps did; a failed push ends the build
     * at once rather than leaving it running forever. */
    if (!heap_push(&sim->running, d->t_end, idx)) {
        d->state = DEP_DONE;
        d->t_end = t;
        return;
    }
    e->running1 = idx + 1;
    sim->running_builds++;
    note_peaks(sim);
}

static void start_queued(rw_sim_t *sim, int64_t t)
{
    while (sim->queue_len && cap_free(sim)) {
        uint32_t idx = sim->queue[sim->queue_head++];
        sim->queue_len--;
        /* Superseded while queued: already cancelled and uncounted. */
        if (sim->deps[idx].state != DEP_QUEUED)
            continue;
        sim->queue_live--;
        start_build(sim, idx, t);
    }
    if (!sim->queue_len)
        sim->queue_head = 0;
}

static void enqueue(rw_sim_t *sim, uint32_t idx, int64_t t)
{
    if (sim->queue_head + sim->queue_len == sim->queue_cap) {
        if (sim->queue_head > sim->queue_cap / 2) {
            memmove(sim->queue, sim->queue + sim->queue_head,
                    sim->queue_len * sizeof(*sim->queue));
            sim->queue_head = 0;
        } else {
            size_t cap = sim->queue_cap ? sim->queue_cap * 2 : 1024;
            uint32_t *q = realloc(sim->queue, cap * sizeof(*q));
            if (!q) {
                /* Out of memory: build now instead of losing the row. */
                start_build(sim, idx, t);
                return;
            }
            sim->queue = q;
            sim->queue_cap = cap;
        }
    }
    sim->deps[idx].state = DEP_QUEUED;
    sim->queue[sim->queue_head + sim->queue_len++] = idx;
    sim->queue_live++;
    note_peaks(sim);
}

/* Deployment idx may build as far as its environment goes: it takes a
 * slot of the cluster cap, or waits in the FIFO behind those before it. */
static void want_slot(rw_sim_t *sim, uint32_t idx, int64_t t)
{
    if (cap_free(sim) && !sim->queue_live)
        start_build(sim, idx, t);
    else
        enqueue(sim, idx, t);
}

/* Deployment idx has spent its time in pending at t. */
static void ready(rw_sim_t *sim, uint32_t idx, int64_t t)
{
    dep_t *d = &sim->deps[idx];

    if (sim->envs[d->env].running1) {
        /* Queued behind its own environment, not the cluster: it takes
         * no slot until the older build ends. */
        d->state = DEP_ENV_WAIT;
        sim->env_waiting++;
        note_peaks(sim);
        return;
    }
    want_slot(sim, idx, t);
}

/* A newer deployment of its environment appeared at t while idx had not
 * started: Lagoon cancels the older one. */
static void supersede(rw_sim_t *sim, uint32_t idx, int64_t t)
{
    dep_t *d = &sim->deps[idx];

    if (d->state == DEP_QUEUED && --sim->queue_live == 0)
        sim->queue_head = sim->queue_len = 0; /* only stale entries left */
    else if (d->state == DEP_ENV_WAIT)
        sim->env_waiting--;
    d->state = DEP_DONE;
    d->outcome = OUT_CANCELLED;
    d->t_start = 0;
    /* Its row may appear later than the newer one's when rows-delay was
     * lowered in between; it never completes before it was created. */
    d->t_end = t > d->t_appear ? t : d->t_appear;
    sim->superseded++;
}

/* Deployment idx was created at t: it supersedes its environment's
 * deployment that has not started, or is superseded by a newer one that
 * appeared first. */
static void appear(rw_sim_t *sim, uint32_t idx, int64_t t)
{
    dep_t *d = &sim->deps[idx];
    env_t *e = &sim->envs[d->env];

    d->appeared = 1;
    if (e->active1 && e->active1 - 1 > idx) {
        supersede(sim, idx, t);
        return;
    }
    if (e->active1)
        supersede(sim, e->active1 - 1, t);
    e->active1 = idx + 1;
    /* Cannot fail: the caller has just popped an entry of this heap. */
    (void)heap_push(&sim->ready, d->t_ready, idx);
}

/* A build of the environment of idx ended at t: its next one may go. */
static void build_ended(rw_sim_t *sim, uint32_t idx, int64_t t)
{
    env_t *e = &sim->envs[sim->deps[idx].env];

    sim->deps[idx].state = DEP_DONE;
    sim->running_builds--;
    e->running1 = 0;
    /* The freed slot goes to the FIFO first: builds waiting for the
     * cluster waited longer than the one waiting for its environment. */
    start_queued(sim, t);
    if (e->active1 && sim->deps[e->active1 - 1].state == DEP_ENV_WAIT) {
        sim->env_waiting--;
        want_slot(sim, e->active1 - 1, t);
    }
}

/* Processes every appearance, build start and end up to now, in time
 * order. */
static void advance(rw_sim_t *sim, int64_t now)
{
    for (;;) {
        int64_t t_end = heap_top(&sim->running);
        int64_t t_ready = heap_top(&sim->ready);

        /* At equal times a build ends before another starts: the slot it
         * frees is what lets the next one run. */
        if (t_end <= t_ready) {
            hent_t e;
            if (t_end > now)
                break;
            e = heap_pop(&sim->running);
            build_ended(sim, e.idx, e.key);
        } else {
            hent_t e;
            if (t_ready > now)
                break;
            e = heap_pop(&sim->ready);
            if (sim->deps[e.idx].state != DEP_WAITING)
                continue; /* superseded before its turn */
            if (!sim->deps[e.idx].appeared)
                appear(sim, e.idx, e.key);
            else
                ready(sim, e.idx, e.key);
        }
    }
}

/* ---- lifecycle ---------------------------------------------------------- */

static void seed_rng(rw_sim_t *sim)
{
    uint64_t s = 0;

    if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s))
        s = (uint64_t)rw_sim_now_ms() ^ (uint64_t)(uintptr_t)sim;
    sim->rng = s;
}

rw_err_t rw_sim_new(const rw_sim_config_t *cfg, rw_sim_t **out, char *errstr,
                    size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_sim_t *sim = calloc(1, sizeof(*sim));

    *out = NULL;
    if (!sim) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    pthread_mutex_init(&sim->mu, NULL);
    err = rw_sim_config_copy(&sim->cfg, cfg);
    if (err) {
        rw_err_set(errstr, errlen, err, "out of memory");
        goto out;
    }
    seed_rng(sim);
    sim->id_base = 1;
    *out = sim;
    sim = NULL;
out:
    rw_sim_destroy(sim);
    return err;
}

static void clear_data(rw_sim_t *sim)
{
    for (size_t i = 0; i < sim->n_envs; i++)
        free(sim->envs[i].key);
    for (size_t i = 0; i < sim->n_bulks; i++) {
        free(sim->bulks[i].name);
        free(sim->bulks[i].vars);
    }
    free(sim->deps);
    free(sim->envs);
    free(sim->bulks);
    free(sim->projects);
    free(sim->ready.v);
    free(sim->running.v);
    free(sim->queue);
    free(sim->envs_per_call);
    imap_clear(&sim->env_map);
    imap_clear(&sim->bulk_map);
    imap_clear(&sim->project_map);
    sim->id_base += (long long)sim->n_deps;
    sim->deps = NULL;
    sim->envs = NULL;
    sim->bulks = NULL;
    sim->projects = NULL;
    sim->n_projects = sim->cap_projects = 0;
    sim->envs_per_call = NULL;
    memset(&sim->ready, 0, sizeof(sim->ready));
    memset(&sim->running, 0, sizeof(sim->running));
    sim->queue = NULL;
    sim->n_deps = sim->cap_deps = 0;
    sim->n_envs = sim->cap_envs = 0;
    sim->n_bulks = sim->cap_bulks = 0;
    sim->queue_head = sim->queue_len = sim->queue_cap = 0;
    sim->queue_live = sim->env_waiting = 0;
    sim->envs_per_call_len = 0;
    sim->running_builds = sim->peak_running = sim->peak_in_progress = 0;
    sim->superseded = sim->overload_delayed = 0;
    sim->lat_count = sim->lat_sum_us = sim->lat_max_us = 0;
    memset(sim->lat_buckets, 0, sizeof(sim->lat_buckets));
    sim->timeline_start = 0;
    sim->timeline_len = 0;
    sim->timeline_dropped = 0;
    memset(sim->timeline, 0, sizeof(sim->timeline));
    sim->bulk_calls = sim->deploy_requests = sim->envs_triggered = 0;
    sim->max_envs = sim->duplicate_triggers = sim->graphql_requests = 0;
    sim->rows_requests = 0;
    sim->health_requests = sim->health_failures = 0;
    sim->logs_served = sim->log_errors = 0;
    memset(sim->faults, 0, sizeof(sim->faults));
}

void rw_sim_destroy(rw_sim_t *sim)
{
    if (!sim)
        return;
    clear_data(sim);
    rw_sim_config_free(&sim->cfg);
    pthread_mutex_destroy(&sim->mu);
    free(sim);
}

void rw_sim_reset(rw_sim_t *sim)
{
    pthread_mutex_lock(&sim->mu);
    clear_data(sim);
    pthread_mutex_unlock(&sim->mu);
    rw_info(COMP, "event=reset");
}

/* ---- bulks -------------------------------------------------------------- */

typedef struct env_key {
    const char *project, *environment;
    size_t project_len, environment_len;
} env_key_t;

static bool env_eq(const rw_sim_t *sim, uint32_t idx, const void *key)
{
    const env_t *e = &sim->envs[idx];
    const env_key_t *k = key;

    return e->project_len == k->project_len &&
           e->key_len == k->project_len + 1 + k->environment_len &&
           memcmp(e->key, k->project, k->project_len) == 0 &&
           memcmp(e->key + k->project_len + 1, k->environment,
                  k->environment_len) == 0;
}

static uint32_t env_hash(const env_key_t *k)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    uint32_t hp = hash_bytes(k->project, k->project_len, h);

    return hash_bytes(k->environment, k->environment_len,
                      h ^ ((uint64_t)hp << 1) ^ k->project_len);
}

static bool bulk_eq(const rw_sim_t *sim, uint32_t idx, const void *key)
{
    return strcmp(sim->bulks[idx].id, key) == 0;
}

static uint32_t bulk_hash(const char *id)
{
    return hash_bytes(id, strlen(id), 0xcbf29ce484222325ULL);
}

typedef struct proj_key {
    const char *name;
    size_t len;
} proj_key_t;

static bool proj_eq(const rw_sim_t *sim, uint32_t idx, const void *key)
{
    const env_t *e = &sim->envs[sim->projects[idx].first_env1 - 1];
    const proj_key_t *k = key;

    return e->project_len == k->len && memcmp(e->key, k->name, k->len) == 0;
}

static uint32_t proj_hash(const char *name, size_t len)
{
    return hash_bytes(name, len, 0x84222325cbf29ce4ULL);
}

static long proj_find(const rw_sim_t *sim, const char *name, size_t len)
{
    proj_key_t k = {name, len};

    return imap_find(sim, &sim->project_map, proj_hash(name, len), proj_eq, &k);
}

/* Appends env eidx (its key in place) to its project, made on first sight. */
static bool project_link(rw_sim_t *sim, uint32_t eidx)
{
    env_t *e = &sim->envs[eidx];
    long pidx = proj_find(sim, e->key, e->project_len);
    proj_t *p;

    if (pidx < 0) {
        if (sim->n_projects == sim->cap_projects) {
            size_t cap = sim->cap_projects ? sim->cap_projects * 2 : 256;
            proj_t *projects = realloc(sim->projects, cap * sizeof(*projects));
            if (!projects)
                return false;
            sim->projects = projects;
            sim->cap_projects = cap;
        }
        p = &sim->projects[sim->n_projects];
        p->first_env1 = eidx + 1;
        p->last_env1 = eidx + 1;
        if (!imap_insert(&sim->project_map, proj_hash(e->key, e->project_len),
                         (uint32_t)sim->n_projects))
            return false;
        sim->n_projects++;
        return true;
    }
    p = &sim->projects[pidx];
    sim->envs[p->last_env1 - 1].next_env1 = eidx + 1;
    p->last_env1 = eidx + 1;
    return true;
}

/* Index of the env, interned on first sight; -1 when out of memory. */
static long env_intern(rw_sim_t *sim, const rw_sim_target_t *t)
{
    env_key_t k = {t->project, t->environment, strlen(t->project),
                   strlen(t->environment)};
    uint32_t h = env_hash(&k);
    long idx = imap_find(sim, &sim->env_map, h, env_eq, &k);
    env_t *e;

    if (idx >= 0)
        return idx;
    if (sim->n_envs == sim->cap_envs) {
        size_t cap = sim->cap_envs ? sim->cap_envs * 2 : 256;
        env_t *envs = realloc(sim->envs, cap * sizeof(*envs));
        if (!envs)
            return -1;
        sim->envs = envs;
        sim->cap_envs = cap;
    }
    e = &sim->envs[sim->n_envs];
    e->key = malloc(k.project_len + k.environment_len + 2);
    if (!e->key)
        return -1;
    memcpy(e->key, k.project, k.project_len);
    e->key[k.project_len] = '/';
    memcpy(e->key + k.project_len + 1, k.environment, k.environment_len + 1);
    e->project_len = (uint32_t)k.project_len;
    e->key_len = (uint32_t)(k.project_len + 1 + k.environment_len);
    e->triggers = 0;
    e->health_checks = 0;
    e->last_dep1 = 0;
    e->next_env1 = 0;
    e->running1 = 0;
    e->active1 = 0;
    if (!imap_insert(&sim->env_map, h, (uint32_t)sim->n_envs)) {
        free(e->key);
        return -1;
    }
    /* The env is usable for bulks from here on; only projectByName would
     * miss it if linking fails for want of memory. */
    if (!project_link(sim, (uint32_t)sim->n_envs))
        rw_warn(COMP, "event=project_index_failed reason=out_of_memory");
    return (long)sim->n_envs++;
}

static void make_uuid(rw_sim_t *sim, char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    size_t o = 0;

    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        uint64_t r1 = rng_next(sim), r2 = rng_next(sim);
        memcpy(b, &r1, 8);
        memcpy(b + 8, &r2, 8);
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

static bool rejected(const rw_sim_t *sim, const char *key)
{
    for (size_t i = 0; i < sim->cfg.reject.n; i++)
        if (fnmatch(sim->cfg.reject.items[i], key, 0) == 0)
            return true;
    return false;
}

/* Outcome and duration: a pure function of seed, bulk id and environment. */
/* Whether key (project/environment) matches a pattern of list. */
static bool matches(const rw_sim_list_t *list, const char *key)
{
    for (size_t i = 0; i < list->n; i++)
        if (fnmatch(list->items[i], key, 0) == 0)
            return true;
    return false;
}

static void plan_build(const rw_sim_t *sim, const char *bulk_id, const env_t *e,
                       dep_t *d)
{
    uint64_t seed = (uint64_t)sim->cfg.seed;
    uint64_t h = hash_bytes(bulk_id, strlen(bulk_id), mix64(seed));
    double u;
    uint64_t span;

    h = mix64(h ^ ((uint64_t)hash_bytes(e->key, e->key_len, seed) << 32));
    u = (double)(h >> 11) * (1.0 / 9007199254740992.0);
    if (matches(&sim->cfg.fail, e->key) || u < sim->cfg.fail_rate)
        d->outcome = OUT_FAILED;
    else if (u < sim->cfg.fail_rate + sim->cfg.cancel_rate)
        d->outcome = OUT_CANCELLED;
    else
        d->outcome = OUT_COMPLETE;
    span = (uint64_t)(sim->cfg.build_max_ms - sim->cfg.build_min_ms) + 1;
    d->dur_ms =
        (uint32_t)(sim->cfg.build_min_ms + (long long)(mix64(h) % span));
}

/* The timeline counter of the second of now, or NULL past TIMELINE_S. */
static long long *timeline_second(rw_sim_t *sim, int64_t now)
{
    int64_t sec;

    if (!sim->timeline_start)
        sim->timeline_start = now;
    /* A wall clock stepped back counts in the first second. */
    sec = now > sim->timeline_start ? (now - sim->timeline_start) / 1000 : 0;
    if (sec >= TIMELINE_S)
        return NULL;
    if ((size_t)sec + 1 > sim->timeline_len)
        sim->timeline_len = (size_t)sec + 1;
    return &sim->timeline[sec];
}

static bool count_envs_per_call(rw_sim_t *sim, size_t n)
{
    if (n >= sim->envs_per_call_len) {
        size_t len = n + 1 > sim->envs_per_call_len * 2
                         ? n + 1
                         : sim->envs_per_call_len * 2;
        long long *a = realloc(sim->envs_per_call, len * sizeof(*a));
        if (!a)
            return false;
        memset(a + sim->envs_per_call_len, 0,
               (len - sim->envs_per_call_len) * sizeof(*a));
        sim->envs_per_call = a;
        sim->envs_per_call_len = len;
    }
    sim->envs_per_call[n]++;
    return true;
}

static char *pool_copy(char **pool, const char *s, size_t n);

/* One block: the array, then each name and value NUL-terminated. */
static rw_sim_var_t *copy_vars(const rw_sim_var_t *vars, size_t n)
{
    size_t bytes = n * sizeof(*vars);
    rw_sim_var_t *out;
    char *pool;

    for (size_t i = 0; i < n; i++)
        bytes += strlen(vars[i].name ? vars[i].name : "") + 1 +
                 strlen(vars[i].value ? vars[i].value : "") + 1;
    out = malloc(bytes);
    if (!out)
        return NULL;
    pool = (char *)(out + n);
    for (size_t i = 0; i < n; i++) {
        const char *nm = vars[i].name ? vars[i].name : "";
        const char *v = vars[i].value ? vars[i].value : "";

        out[i].name = pool_copy(&pool, nm, strlen(nm));
        out[i].value = pool_copy(&pool, v, strlen(v));
    }
    return out;
}

rw_err_t rw_sim_bulk_deploy(rw_sim_t *sim, const char *name,
                            const rw_sim_target_t *targets, size_t n,
                            const rw_sim_var_t *vars, size_t n_vars,
                            char *bulk_id, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    int64_t now = rw_sim_now_ms();
    bulk_t *b;
    size_t n_rejected = 0;
    uint32_t bidx;
    long long *second;
    char qname[160];

    if (n == 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "no environments given");
    pthread_mutex_lock(&sim->mu);
    advance(sim, now);
    if (sim->n_deps + n > UINT32_MAX / 2 || sim->n_bulks >= UINT32_MAX / 2) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM,
                         "simulator is full; POST /sim/reset");
        goto out;
    }
    if (sim->n_bulks == sim->cap_bulks) {
        size_t cap = sim->cap_bulks ? sim->cap_bulks * 2 : 256;
        bulk_t *bulks = realloc(sim->bulks, cap * sizeof(*bulks));
        if (!bulks)
            goto nomem;
        sim->bulks = bulks;
        sim->cap_bulks = cap;
    }
    if (sim->n_deps + n > sim->cap_deps) {
        size_t cap = sim->cap_deps ? sim->cap_deps : 1024;
        dep_t *deps;
        while (cap < sim->n_deps + n)
            cap *= 2;
        deps = realloc(sim->deps, cap * sizeof(*deps));
        if (!deps)
            goto nomem;
        sim->deps = deps;
        sim->cap_deps = cap;
    }
    bidx = (uint32_t)sim->n_bulks;
    b = &sim->bulks[bidx];
    memset(b, 0, sizeof(*b));
    do
        make_uuid(sim, b->id);
    while (imap_find(sim, &sim->bulk_map, bulk_hash(b->id), bulk_eq, b->id) >=
           0);
    if (name) {
        b->name = strdup(name);
        if (!b->name)
            goto nomem;
    }
    if (n_vars) {
        b->vars = copy_vars(vars, n_vars);
        if (!b->vars) {
            free(b->name);
            goto nomem;
        }
        b->n_vars = (uint32_t)n_vars;
    }
    if (!imap_insert(&sim->bulk_map, bulk_hash(b->id), bidx)) {
        free(b->name);
        free(b->vars);
        goto nomem;
    }
    sim->n_bulks++;
    b->first = (uint32_t)sim->n_deps;
    second = timeline_second(sim, now);

    for (size_t i = 0; i < n; i++) {
        long eidx = env_intern(sim, &targets[i]);
        env_t *e;
        dep_t *d;

        if (eidx < 0)
            goto nomem;
        e = &sim->envs[eidx];
        if (++e->triggers == 2)
            sim->duplicate_triggers++;
        sim->envs_triggered++;
        if (second)
            (*second)++;
        else
            sim->timeline_dropped++;
        if (rejected(sim, e->key)) {
            n_rejected++;
            continue;
        }
        d = &sim->deps[sim->n_deps];
        memset(d, 0, sizeof(*d));
        d->env = (uint32_t)eidx;
        d->bulk = bidx;
        d->t_appear = now + sim->cfg.rows_delay_ms;
        d->t_pending = d->t_appear + sim->cfg.phase_ms;
        d->t_ready = d->t_pending + sim->cfg.phase_ms;
        plan_build(sim, b->id, e, d);
        d->prev1 = e->last_dep1;
        e->last_dep1 = (uint32_t)sim->n_deps + 1;
        for (int c = 0; c < 6; c++)
            d->name[c] =
                "abcdefghijklmnopqrstuvwxyz0123456789"[rng_next(sim) % 36];
        if (!heap_push(&sim->ready, d->t_appear, (uint32_t)sim->n_deps))
            goto nomem;
        sim->n_deps++;
        b->n++;
    }
    sim->bulk_calls++;
    if ((long long)n > sim->max_envs)
        sim->max_envs = (long long)n;
    if (!count_envs_per_call(sim, n))
        goto nomem;
    memcpy(bulk_id, b->id, RW_SIM_UUID_LEN + 1);
    rw_debug(COMP, "event=bulk_deploy bulk=%s name=%s envs=%zu rejected=%zu",
             b->id, rw_log_quote(qname, sizeof(qname), name ? name : ""), n,
             n_rejected);
    goto out;
nomem:
    err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
out:
    pthread_mutex_unlock(&sim->mu);
    return err;
}

static const char *status_of(const dep_t *d, int64_t now)
{
    static const char *const outcome[] = {"complete", "failed", "cancelled"};

    /* Superseded deployments end while still new. */
    if (d->state == DEP_DONE)
        return outcome[d->outcome];
    if (now < d->t_pending)
        return "new";
    switch (d->state) {
    case DEP_WAITING:
        return "pending";
    case DEP_QUEUED:
    case DEP_ENV_WAIT:
        return "queued";
    default:
        return "running";
    }
}

/* Fills row for deployment di as seen at now; name holds 20 bytes. */
static void fill_row(const rw_sim_t *sim, uint32_t di, int64_t now,
                     rw_sim_row_t *row, char *name)
{
    const dep_t *d = &sim->deps[di];
    const env_t *e = &sim->envs[d->env];
    const bulk_t *b = &sim->bulks[d->bulk];

    memcpy(name, "lagoon-build-", 13);
    memcpy(name + 13, d->name, 6);
    name[19] = '\0';
    row->id = sim->id_base + (long long)di;
    row->name = name;
    row->status = status_of(d, now);
    row->created_ms = d->t_appear;
    row->started_ms =
        d->state == DEP_RUNNING || d->state == DEP_DONE ? d->t_start : 0;
    row->completed_ms = d->state == DEP_DONE ? d->t_end : 0;
    row->project = e->key;
    row->project_len = e->project_len;
    row->environment = e->key + e->project_len + 1;
    row->environment_len = e->key_len - e->project_len - 1;
    row->bulk_id = b->id;
    row->bulk_name = b->name;
    row->route_base = sim->route_base;
}

size_t rw_sim_bulk_rows(rw_sim_t *sim, const char *bulk_id, rw_sim_row_fn fn,
                        void *ud)
{
    int64_t now = rw_sim_now_ms();
    size_t shown = 0;
    long bidx;
    char name[24];

    pthread_mutex_lock(&sim->mu);
    advance(sim, now);
    sim->rows_requests++;
    bidx = imap_find(sim, &sim->bulk_map, bulk_hash(bulk_id), bulk_eq, bulk_id);
    if (bidx < 0)
        goto out;
    for (uint32_t i = 0; i < sim->bulks[bidx].n; i++) {
        uint32_t di = sim->bulks[bidx].first + i;
        rw_sim_row_t row;

        if (now < sim->deps[di].t_appear)
            continue;
        fill_row(sim, di, now, &row, name);
        fn(&row, ud);
        shown++;
    }
out:
    pthread_mutex_unlock(&sim->mu);
    return shown;
}

/* ---- build logs --------------------------------------------------------- */

bool rw_sim_deployment_by_name(rw_sim_t *sim, const char *project,
                               size_t project_len, const char *environment,
                               size_t environment_len, const char *name,
                               rw_sim_log_fn fn, void *ud)
{
    int64_t now = rw_sim_now_ms();
    env_key_t k = {project, environment, project_len, environment_len};
    bool found = false;
    long eidx;
    char build[24];

    pthread_mutex_lock(&sim->mu);
    advance(sim, now);
    eidx = imap_find(sim, &sim->env_map, env_hash(&k), env_eq, &k);
    if (eidx < 0 || strncmp(name, "lagoon-build-", 13) != 0 ||
        strlen(name) != 19)
        goto out;
    for (uint32_t d1 = sim->envs[eidx].last_dep1; d1;
         d1 = sim->deps[d1 - 1].prev1) {
        const dep_t *d = &sim->deps[d1 - 1];
        const bulk_t *b = &sim->bulks[d->bulk];
        rw_sim_row_t row;
        rw_sim_buf_t log;
        rw_sim_log_in_t in;

        if (now < d->t_appear || memcmp(d->name, name + 13, 6) != 0)
            continue;
        found = true;
        fill_row(sim, d1 - 1, now, &row, build);
        if (d->state != DEP_RUNNING && d->state != DEP_DONE) {
            fn(&row, NULL, 0, ud);
            break;
        }
        rw_sim_buf_init(&log);
        if (sim->cfg.log_error_percent > 0 &&
            (long long)(rng_next(sim) % 100) < sim->cfg.log_error_percent) {
            /* What Lagoon answers when its object storage fails. */
            rw_sim_buf_puts(&log, RW_SIM_LOG_ERROR_PREFIX
                            "NoSuchKey: The specified key does not exist.");
            sim->log_errors++;
        } else {
            in.project = row.project;
            in.project_len = row.project_len;
            in.environment = row.environment;
            in.environment_len = row.environment_len;
            in.build_name = row.name;
            in.status = row.status;
            in.vars = b->vars;
            in.n_vars = b->n_vars;
            in.bearer = sim->cfg.log_secret;
            in.pad_bytes = sim->cfg.log_bytes;
            rw_sim_build_log(&log, &in);
        }
        sim->logs_served++;
        if (rw_sim_buf_failed(&log))
            fn(&row, NULL, 0, ud);
        else
            fn(&row, log.data, log.len, ud);
        rw_sim_buf_free(&log);
        break;
    }
out:
    pthread_mutex_unlock(&sim->mu);
    return found;
}

/* ---- projects ----------------------------------------------------------- */

/* Bytes for the strings of one snapshot row: build name, bulk id, name. */
static size_t row_bytes(const rw_sim_t *sim, const dep_t *d)
{
    const bulk_t *b = &sim->bulks[d->bulk];

    return 20 + RW_SIM_UUID_LEN + 1 + (b->name ? strlen(b->name) + 1 : 0);
}

static char *pool_copy(char **pool, const char *s, size_t n)
{
    char *p = *pool;

    memcpy(p, s, n);
    p[n] = '\0';
    *pool += n + 1;
    return p;
}

/* Lagoon's order: created desc, then id desc. The chain is already id
 * desc and almost always created desc too (only a rows-delay change
 * between bulks can swap two), so insertion sort is linear in practice. */
static void sort_rows(rw_sim_row_t *rows, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        rw_sim_row_t r = rows[i];
        size_t j = i;

        while (j > 0 && (rows[j - 1].created_ms < r.created_ms ||
                         (rows[j - 1].created_ms == r.created_ms &&
                          rows[j - 1].id < r.id))) {
            rows[j] = rows[j - 1];
            j--;
        }
        rows[j] = r;
    }
}

rw_err_t rw_sim_project_snapshot(rw_sim_t *sim, const char *name, size_t len,
                                 rw_sim_project_snap_t **out)
{
    rw_err_t err = RW_OK;
    int64_t now = rw_sim_now_ms();
    size_t n_envs = 0, n_rows = 0, bytes = 0, ri = 0, ei = 0;
    rw_sim_project_snap_t *snap = NULL;
    rw_sim_env_snap_t *envs;
    rw_sim_row_t *rows;
    const proj_t *p;
    char *pool;
    long pidx;

    *out = NULL;
    pthread_mutex_lock(&sim->mu);
    advance(sim, now);
    pidx = proj_find(sim, name, len);
    if (pidx < 0)
        goto out;
    p = &sim->projects[pidx];
    bytes = len + 1;
    for (uint32_t e1 = p->first_env1; e1; e1 = sim->envs[e1 - 1].next_env1) {
        const env_t *e = &sim->envs[e1 - 1];

        n_envs++;
        bytes += e->key_len - e->project_len;
        for (uint32_t d1 = e->last_dep1; d1; d1 = sim->deps[d1 - 1].prev1) {
            if (now < sim->deps[d1 - 1].t_appear)
                continue;
            n_rows++;
            bytes += row_bytes(sim, &sim->deps[d1 - 1]);
        }
    }
    /* One block: snapshot, envs, rows (all pointer-aligned), then text. */
    snap = malloc(sizeof(*snap) + n_envs * sizeof(*envs) +
                  n_rows * sizeof(*rows) + bytes);
    if (!snap) {
        err = RW_ERR_NOMEM;
        goto out;
    }
    envs = (rw_sim_env_snap_t *)(snap + 1);
    rows = (rw_sim_row_t *)(envs + n_envs);
    pool = (char *)(rows + n_rows);
    snap->name = pool_copy(&pool, name, len);
    snap->name_len = len;
    snap->envs = envs;
    snap->n_envs = n_envs;
    snap->route_base = sim->route_base;
    for (uint32_t e1 = p->first_env1; e1; e1 = sim->envs[e1 - 1].next_env1) {
        const env_t *e = &sim->envs[e1 - 1];
        rw_sim_env_snap_t *es = &envs[ei++];
        size_t first = ri;

        es->name_len = e->key_len - e->project_len - 1;
        es->name = pool_copy(&pool, e->key + e->project_len + 1, es->name_len);
        for (uint32_t d1 = e->last_dep1; d1; d1 = sim->deps[d1 - 1].prev1) {
            const dep_t *d = &sim->deps[d1 - 1];
            rw_sim_row_t *r = &rows[ri];
            char build[24];

            if (now < d->t_appear)
                continue;
            fill_row(sim, d1 - 1, now, r, build);
            /* Strings the lock protects are copied; status is static. */
            r->name = pool_copy(&pool, build, 19);
            r->bulk_id = pool_copy(&pool, r->bulk_id, RW_SIM_UUID_LEN);
            if (r->bulk_name)
                r->bulk_name =
                    pool_copy(&pool, r->bulk_name, strlen(r->bulk_name));
            r->project = snap->name;
            r->environment = es->name;
            ri++;
        }
        es->rows = &rows[first];
        es->n_rows = ri - first;
        sort_rows(&rows[first], ri - first);
    }
    *out = snap;
out:
    pthread_mutex_unlock(&sim->mu);
    return err;
}

void rw_sim_project_snap_free(rw_sim_project_snap_t *snap)
{
    free(snap);
}

/* ---- routes and health -------------------------------------------------- */

void rw_sim_set_route_base(rw_sim_t *sim, int port)
{
    pthread_mutex_lock(&sim->mu);
    if (sim->cfg.route_base && sim->cfg.route_base[0])
        snprintf(sim->route_base, sizeof(sim->route_base), "%s",
                 sim->cfg.route_base);
    else
        snprintf(sim->route_base, sizeof(sim->route_base),
                 "http://127.0.0.1:%d", port);
    pthread_mutex_unlock(&sim->mu);
}

/* Whether the environment (its "project/environment" key) fails health
 * checks: a pattern, or the seeded hash under the percentage. */
static bool health_fails(const rw_sim_t *sim, const char *key, size_t len)
{
    uint64_t salt = mix64((uint64_t)sim->cfg.seed ^ 0x6865616c7468ULL);

    for (size_t i = 0; i < sim->cfg.health_fail.n; i++)
        if (fnmatch(sim->cfg.health_fail.items[i], key, 0) == 0)
            return true;
    return sim->cfg.health_fail_percent > 0 &&
           hash_bytes(key, len, salt) % 100 <
               (uint32_t)sim->cfg.health_fail_percent;
}

int rw_sim_health(rw_sim_t *sim, const char *project, size_t project_len,
                  const char *environment, size_t environment_len)
{
    env_key_t k = {project, environment, project_len, environment_len};
    char *key = malloc(project_len + environment_len + 2);
    long idx;
    int status = 200;

    if (!key)
        return 500;
    memcpy(key, project, project_len);
    key[project_len] = '/';
    memcpy(key + project_len + 1, environment, environment_len);
    key[project_len + 1 + environment_len] = '\0';
    pthread_mutex_lock(&sim->mu);
    idx = imap_find(sim, &sim->env_map, env_hash(&k), env_eq, &k);
    if (idx < 0)
        status = 404;
    else if (health_fails(sim, key, project_len + 1 + environment_len))
        status = 503;
    if (idx >= 0)
        sim->envs[idx].health_checks++;
    sim->health_requests++;
    if (status != 200)
        sim->health_failures++;
    pthread_mutex_unlock(&sim->mu);
    if (RW_LOG_DEBUG >= rw_log_threshold) {
        char q[600];
        rw_debug(COMP, "event=health env=%s status=%d",
                 rw_log_quote(q, sizeof(q), key), status);
    }
    free(key);
    return status;
}

/* ---- faults, stats, config ---------------------------------------------- */

rw_sim_fault_t rw_sim_graphql_request(rw_sim_t *sim, int deploy_fields,
                                      long long *slow_ms)
{
    rw_sim_fault_t f = RW_SIM_FAULT_NONE;

    pthread_mutex_lock(&sim->mu);
    sim->graphql_requests++;
    sim->deploy_requests += deploy_fields;
    /* One draw per kind keeps each rate what it says when several are set;
     * the order decides which wins. */
    if (rng_unit(sim) < sim->cfg.fault_drop)
        f = RW_SIM_FAULT_DROP;
    else if (rng_unit(sim) < sim->cfg.fault_http500)
        f = RW_SIM_FAULT_HTTP500;
    else if (rng_unit(sim) < sim->cfg.fault_graphql_error)
        f = RW_SIM_FAULT_GRAPHQL;
    else if (rng_unit(sim) < sim->cfg.fault_slow)
        f = RW_SIM_FAULT_SLOW;
    /* Answers that may hide a created bulk concern mutations only: a lost
     * answer to a query changes nothing in Lagoon. */
    else if (deploy_fields > 0 &&
             rng_unit(sim) < sim->cfg.fault_http500_mutation)
        f = RW_SIM_FAULT_HTTP500;
    else if (deploy_fields > 0 &&
             rng_unit(sim) < sim->cfg.fault_http500_executed)
        f = RW_SIM_FAULT_HTTP500_EXECUTED;
    else if (deploy_fields > 0 &&
             rng_unit(sim) < sim->cfg.fault_garbled_executed)
        f = RW_SIM_FAULT_GARBLED_EXECUTED;
    sim->faults[f]++;
    *slow_ms = sim->cfg.slow_ms;
    pthread_mutex_unlock(&sim->mu);
    return f;
}

long long rw_sim_overload_ms(rw_sim_t *sim)
{
    long long ms = 0, over;

    pthread_mutex_lock(&sim->mu);
    advance(sim, rw_sim_now_ms());
    over = sim->running_builds + sim->queue_live + sim->env_waiting -
           sim->cfg.overload_knee;
    if (sim->cfg.overload_knee > 0 && over > 0) {
        ms = over * sim->cfg.overload_ms_per_build;
        if (ms > sim->cfg.overload_max_ms)
            ms = sim->cfg.overload_max_ms;
    }
    if (ms > 0)
        sim->overload_delayed++;
    pthread_mutex_unlock(&sim->mu);
    return ms;
}

static size_t lat_bucket(long long us)
{
    int e;

    if (us < LAT_SUB)
        return us < 0 ? 0 : (size_t)us;
    e = 63 - __builtin_clzll((unsigned long long)us);
    if (e >= 40)
        return LAT_BUCKETS - 1;
    return LAT_SUB + (size_t)(e - 4) * LAT_SUB +
           (size_t)((us >> (e - 4)) & (LAT_SUB - 1));
}

/* The largest value bucket i holds. */
static long long lat_bucket_max(size_t i)
{
    size_t e, sub;

    if (i < LAT_SUB)
        return (long long)i;
    e = (i - LAT_SUB) / LAT_SUB + 4;
    sub = (i - LAT_SUB) % LAT_SUB;
    return (long long)(((LAT_SUB + sub + 1) << (e - 4)) - 1);
}

void rw_sim_api_latency(rw_sim_t *sim, long long us)
{
    pthread_mutex_lock(&sim->mu);
    sim->lat_count++;
    sim->lat_sum_us += us;
    if (us > sim->lat_max_us)
        sim->lat_max_us = us;
    sim->lat_buckets[lat_bucket(us)]++;
    pthread_mutex_unlock(&sim->mu);
}

/* The 95th percentile: the top of its bucket, never above the maximum. */
static long long lat_p95_us(const rw_sim_t *sim)
{
    long long rank = (sim->lat_count * 95 + 99) / 100, seen = 0;

    for (size_t i = 0; i < LAT_BUCKETS && rank > 0; i++) {
        seen += sim->lat_buckets[i];
        if (seen >= rank) {
            long long top = lat_bucket_max(i);
            return top < sim->lat_max_us ? top : sim->lat_max_us;
        }
    }
    return 0;
}

static void timeline_json(const rw_sim_t *sim, rw_sim_buf_t *b)
{
    rw_sim_buf_puts(b, ",\"trigger_timeline\":{\"start_ms\":");
    if (sim->timeline_start)
        rw_sim_buf_printf(b, "%lld", (long long)sim->timeline_start);
    else
        rw_sim_buf_puts(b, "null");
    rw_sim_buf_puts(b, ",\"per_second\":[");
    for (size_t i = 0; i < sim->timeline_len; i++)
        rw_sim_buf_printf(b, "%s%lld", i ? "," : "", sim->timeline[i]);
    rw_sim_buf_printf(b,
                      "],\"max_seconds\":%d,\"truncated\":%s,"
                      "\"dropped_environments\":%lld}",
                      TIMELINE_S, sim->timeline_dropped ? "true" : "false",
                      sim->timeline_dropped);
}

void rw_sim_stats_json(rw_sim_t *sim, bool with_triggers, bool with_timeline,
                       rw_sim_buf_t *b)
{
    bool first = true;
    long long queued;

    pthread_mutex_lock(&sim->mu);
    advance(sim, rw_sim_now_ms());
    rw_sim_buf_printf(b,
                      "{\"bulk_calls\":%lld,\"deploy_requests\":%lld,"
                      "\"environments_triggered\":%lld,"
                      "\"max_envs_per_call\":%lld,\"envs_per_call\":{",
                      sim->bulk_calls, sim->deploy_requests,
                      sim->envs_triggered, sim->max_envs);
    for (size_t i = 0; i < sim->envs_per_call_len; i++) {
        if (!sim->envs_per_call[i])
            continue;
        rw_sim_buf_printf(b, "%s\"%zu\":%lld", first ? "" : ",", i,
                          sim->envs_per_call[i]);
        first = false;
    }
    rw_sim_buf_puts(b, "}");
    if (with_triggers) {
        rw_sim_buf_puts(b, ",\"triggers\":{");
        for (size_t i = 0; i < sim->n_envs; i++) {
            if (i)
                rw_sim_buf_puts(b, ",");
            rw_sim_buf_json_str(b, sim->envs[i].key, sim->envs[i].key_len);
            rw_sim_buf_printf(b, ":%u", sim->envs[i].triggers);
        }
        rw_sim_buf_puts(b, "},\"health_checks\":{");
        first = true;
        for (size_t i = 0; i < sim->n_envs; i++) {
            if (!sim->envs[i].health_checks)
                continue;
            rw_sim_buf_puts(b, first ? "" : ",");
            first = false;
            rw_sim_buf_json_str(b, sim->envs[i].key, sim->envs[i].key_len);
            rw_sim_buf_printf(b, ":%u", sim->envs[i].health_checks);
        }
        rw_sim_buf_puts(b, "}");
    }
    if (with_timeline)
        timeline_json(sim, b);
    queued = sim->queue_live + sim->env_waiting;
    rw_sim_buf_printf(
        b,
        ",\"distinct_environments\":%zu,\"duplicate_triggers\":%lld,"
        "\"deployments\":%zu,\"peak_concurrent_builds\":%lld,"
        "\"running_builds\":%lld,\"queued_builds\":%lld,"
        "\"in_progress_builds\":%lld,\"peak_in_progress_builds\":%lld,"
        "\"superseded_cancelled\":%lld,"
        "\"faults_injected\":{\"http500\":%lld,\"graphql_error\":%lld,"
        "\"slow\":%lld,\"drop\":%lld,\"http500_executed\":%lld,"
        "\"garbled_executed\":%lld},\"graphql_requests\":%lld,"
        "\"rows_requests\":%lld,"
        "\"overload_delayed\":%lld,\"health_requests\":%lld,"
        "\"health_failures\":%lld,\"logs_served\":%lld,\"log_errors\":%lld,",
        sim->n_envs, sim->duplicate_triggers, sim->n_deps, sim->peak_running,
        sim->running_builds, queued, sim->running_builds + queued,
        sim->peak_in_progress, sim->superseded,
        sim->faults[RW_SIM_FAULT_HTTP500], sim->faults[RW_SIM_FAULT_GRAPHQL],
        sim->faults[RW_SIM_FAULT_SLOW], sim->faults[RW_SIM_FAULT_DROP],
        sim->faults[RW_SIM_FAULT_HTTP500_EXECUTED],
        sim->faults[RW_SIM_FAULT_GARBLED_EXECUTED], sim->graphql_requests,
        sim->rows_requests, sim->overload_delayed, sim->health_requests,
        sim->health_failures, sim->logs_served, sim->log_errors);
    rw_sim_buf_printf(
        b,
        "\"api_latency_ms\":{\"count\":%lld,\"mean\":%.3f,\"max\":%.3f,"
        "\"p95\":%.3f}}",
        sim->lat_count,
        sim->lat_count ? (double)sim->lat_sum_us / (double)sim->lat_count / 1e3
                       : 0.0,
        (double)sim->lat_max_us / 1e3, (double)lat_p95_us(sim) / 1e3);
    pthread_mutex_unlock(&sim->mu);
}

rw_err_t rw_sim_configure(rw_sim_t *sim, const json_t *obj,
                          rw_sim_buf_t *answer, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_sim_config_t next;
    int64_t now = rw_sim_now_ms();

    memset(&next, 0, sizeof(next));
    pthread_mutex_lock(&sim->mu);
    err = rw_sim_config_copy(&next, &sim->cfg);
    if (err) {
        rw_err_set(errstr, errlen, err, "out of memory");
        goto out;
    }
    err = rw_sim_config_apply_json(&next, obj, errstr, errlen);
    if (err)
        goto out;
    /* Builds started so far did so under the old cap; a larger cap lets
     * queued builds start now, a smaller one lets running builds finish
     * and starts none until fewer than it run (cap_free). */
    advance(sim, now);
    rw_sim_config_free(&sim->cfg);
    sim->cfg = next;
    memset(&next, 0, sizeof(next));
    start_queued(sim, now);
    rw_sim_config_json(&sim->cfg, answer);
out:
    pthread_mutex_unlock(&sim->mu);
    rw_sim_config_free(&next);
    if (!err)
        rw_info(COMP, "event=config_changed");
    return err;
}

void rw_sim_config_get(rw_sim_t *sim, rw_sim_buf_t *b)
{
    pthread_mutex_lock(&sim->mu);
    rw_sim_config_json(&sim->cfg, b);
    pthread_mutex_unlock(&sim->mu);
}
