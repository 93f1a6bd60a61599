/*
 * rw_metrics: process-wide Prometheus registry and text renderer.
 *
 * Families and series live in append-only lists guarded by one mutex that
 * registration and rendering take; values are 64-bit atomics (doubles
 * stored as their bit pattern, updated by compare-and-swap), so updates
 * never take the mutex. It does not expire series, compute rates or know
 * any metric by name apart from the two built-ins.
 */
#include "rw_metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rw_log.h"

typedef enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } kind_t;

static const char *const kind_name[] = {"counter", "gauge", "histogram"};

struct family;

struct rw_metric {
    struct family *fam;
    char *raw_labels; /* as registered ("" = none): the lookup key */
    char *labels;     /* escaped for exposition ("" = none) */
    /* counter/gauge value, or histogram sum: a double's bit pattern */
    _Atomic uint64_t bits;
    /* histogram only: nbuckets + 1 counts, the last one for +Inf */
    _Atomic uint64_t *counts;
    struct rw_metric *next;
};

struct family {
    char *name;
    char *help;
    kind_t kind;
    double *buckets;
    size_t nbuckets;
    struct rw_metric *first, **tail;
    struct family *next;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct family *families;
static struct family **fam_tail = &families;

/* ---- atomics ---------------------------------------------------------- */

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    uint64_t upd;

    do {
        upd = dbits(bitsd(old) + v);
    } while (!atomic_compare_exchange_weak_explicit(
        p, &old, upd, memory_order_relaxed, memory_order_relaxed));
}

/* ---- growable string -------------------------------------------------- */

typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf_t;

static void sb_reserve(sbuf_t *sb, size_t more)
{
    size_t want;
    char *n;

    if (sb->oom || sb->len + more + 1 <= sb->cap)
        return;
    want = sb->cap ? sb->cap : 1024;
    while (want < sb->len + more + 1)
        want *= 2;
    n = realloc(sb->s, want);
    if (!n) {
        sb->oom = 1;
        return;
    }
    sb->s = n;
    sb->cap = want;
}

static void sb_putc(sbuf_t *sb, char ch)
{
    sb_reserve(sb, 1);
    if (sb->oom)
        return;
    sb->s[sb->len++] = ch;
    sb->s[sb->len] = '\0';
}

static void sb_puts(sbuf_t *sb, const char *s)
{
    size_t n = strlen(s);

    sb_reserve(sb, n);
    if (sb->oom)
        return;
    memcpy(sb->s + sb->len, s, n + 1);
    sb->len += n;
}

__attribute__((format(printf, 2, 3))) static void
sb_printf(sbuf_t *sb, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        sb->oom = 1;
        return;
    }
    sb_reserve(sb, (size_t)n);
    if (sb->oom)
        return;
    va_start(ap, fmt);
    vsnprintf(sb->s + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

/*
 * Exposition escaping: label values escape \, " and newline; HELP text
 * escapes only \ and newline.
 */
static void sb_escaped(sbuf_t *sb, const char *s, size_t n, int quote)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\')
            sb_puts(sb, "\\\\");
        else if (s[i] == '\n')
            sb_puts(sb, "\\n");
        else if (s[i] == '"' && quote)
            sb_puts(sb, "\\\"");
        else
            sb_putc(sb, s[i]);
    }
}

/* Shortest text that reads back as the same double. */
static void fmt_value(char *buf, size_t len, double v)
{
    if (isnan(v)) {
        snprintf(buf, len, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(buf, len, "%.15g", v);
        if (strtod(buf, NULL) != v)
            snprintf(buf, len, "%.17g", v);
    }
}

/* ---- validation ------------------------------------------------------- */

static int valid_name(const char *s)
{
    if (!s || !*s)
        return 0;
    for (const char *p = s; *p; p++) {
        int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    *p == '_' || *p == ':';
        if (!alpha && !(p > s && *p >= '0' && *p <= '9'))
            return 0;
    }
    return 1;
}

/*
 * Parse raw 'k="v",k2="v2"' into its escaped form. Returns a malloc'd
 * string ("" for none) or NULL with *why set.
 */
static char *parse_labels(const char *raw, int histogram, const char **why)
{
    sbuf_t sb = {0};
    const char *p = raw ? raw : "";

    sb_reserve(&sb, strlen(p) + 8);
    if (sb.oom) {
        *why = "out of memory";
        return NULL;
    }
    sb.s[0] = '\0';
    while (*p) {
        const char *name = p, *val, *end;
        size_t nlen;

        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              *p == '_')) {
            *why = "label name must match [a-zA-Z_][a-zA-Z0-9_]*";
            goto fail;
        }
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
               (*p >= '0' && *p <= '9') || *p == '_')
            p++;
        nlen = (size_t)(p - name);
        if (nlen >= 2 && name[0] == '_' && name[1] == '_') {
            *why = "label names starting with __ are reserved";
            goto fail;
        }
        if (histogram && nlen == 2 && strncmp(name, "le", 2) == 0) {
            *why = "label le is reserved for histogram buckets";
            goto fail;
        }
        if (p[0] != '=' || p[1] != '"') {
            *why = "expected =\"value\" after a label name";
            goto fail;
        }
        val = p + 2;
        for (end = val; *end; end++)
            if (end[0] == '"' && (end[1] == ',' || end[1] == '\0'))
                break;
        if (!*end) {
            *why = "unterminated label value";
            goto fail;
        }
        if (sb.len)
            sb_putc(&sb, ',');
        sb_printf(&sb, "%.*s=\"", (int)nlen, name);
        sb_escaped(&sb, val, (size_t)(end - val), 1);
        sb_putc(&sb, '"');
        p = end + 1;
        if (*p == ',') {
            p++;
            if (!*p) {
                *why = "trailing comma in labels";
                goto fail;
            }
        }
    }
    if (sb.oom) {
        *why = "out of memory";
        goto fail;
    }
    return sb.s;
fail:
    free(sb.s);
    return NULL;
}

/* ---- registration ----------------------------------------------------- */

static void free_metric(struct rw_metric *m)
{
    free(m->raw_labels);
    free(m->labels);
    free((void *)m->counts);
    free(m);
}

static void free_family(struct family *f)
{
    struct rw_metric *m = f->first, *next;

    while (m) {
        next = m->next;
        free_metric(m);
        m = next;
    }
    free(f->name);
    free(f->help);
    free(f->buckets);
    free(f);
}

static struct family *find_family(const char *name)
{
    for (struct family *f = families; f; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    return NULL;
}

static int same_buckets(const struct family *f, const double *b, size_t n)
{
    if (f->nbuckets != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (f->buckets[i] != b[i])
            return 0;
    return 1;
}

static struct family *new_family(const char *name, const char *help,
                                 kind_t kind, const double *buckets,
                                 size_t nbuckets)
{
    struct family *f = calloc(1, sizeof(*f));

    if (!f)
        return NULL;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->kind = kind;
    f->nbuckets = nbuckets;
    if (nbuckets) {
        f->buckets = malloc(nbuckets * sizeof(double));
        if (f->buckets)
            memcpy(f->buckets, buckets, nbuckets * sizeof(double));
    }
    f->tail = &f->first;
    if (!f->name || !f->help || (nbuckets && !f->buckets)) {
        free_family(f);
        return NULL;
    }
    return f;
}

static struct rw_metric *new_metric(struct family *f, const char *raw,
                                    char *escaped)
{
    struct rw_metric *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    m->fam = f;
    m->labels = escaped;
    m->raw_labels = strdup(raw);
    atomic_init(&m->bits, dbits(0.0));
    if (f->kind == KIND_HISTOGRAM) {
        m->counts = calloc(f->nbuckets + 1, sizeof(*m->counts));
        if (m->counts)
            for (size_t i = 0; i <= f->nbuckets; i++)
                atomic_init(&m->counts[i], 0);
    }
    if (!m->raw_labels || (f->kind == KIND_HISTOGRAM && !m->counts)) {
        m->labels = NULL; /* the caller still owns escaped on failure */
        free_metric(m);
        return NULL;
    }
    return m;
}

static rw_metric_t *reg(const char *name, const char *help, const char *labels,
                        kind_t kind, const double *buckets, size_t nbuckets)
{
    const char *why = NULL;
    const char *raw = labels ? labels : "";
    char *escaped = NULL;
    struct family *f, *created = NULL;
    struct rw_metric *m = NULL;
    char q[160];

    if (!valid_name(name)) {
        why = "name must match [a-zA-Z_:][a-zA-Z0-9_:]*";
        goto out;
    }
    if (kind == KIND_HISTOGRAM) {
        for (size_t i = 0; i < nbuckets; i++)
            if (!buckets || !isfinite(buckets[i]) ||
                (i > 0 && buckets[i] <= buckets[i - 1])) {
                why = "buckets must be finite and strictly increasing";
                goto out;
            }
    }

    pthread_mutex_lock(&reg_lock);
    f = find_family(name);
    if (f && f->kind != kind) {
        why = "name already registered with another type";
    } else if (f && kind == KIND_HISTOGRAM &&
               !same_buckets(f, buckets, nbuckets)) {
        why = "histogram already registered with other buckets";
    } else {
        for (m = f ? f->first : NULL; m; m = m->next)
            if (strcmp(m->raw_labels, raw) == 0)
                break;
        if (!m) {
            escaped = parse_labels(raw, kind == KIND_HISTOGRAM, &why);
            if (escaped && !f)
                f = created = new_family(name, help, kind, buckets, nbuckets);
            if (escaped && f)
                m = new_metric(f, raw, escaped);
            if (m) {
                escaped = NULL;
                *f->tail = m;
                f->tail = &m->next;
                if (created) {
                    *fam_tail = created;
                    fam_tail = &created->next;
                    created = NULL;
                }
            } else if (!why) {
                why = "out of memory";
            }
        }
    }
    pthread_mutex_unlock(&reg_lock);
out:
    free(escaped);
    if (created)
        free_family(created);
    if (why) {
        rw_error("metrics", "event=register_failed name=%s reason=%s",
                 rw_log_quote(q, sizeof(q), name ? name : "(null)"), why);
        return NULL;
    }
    return m;
}

rw_metric_t *rw_metrics_counter(const char *name, const char *help,
                                const char *labels)
{
    return reg(name, help, labels, KIND_COUNTER, NULL, 0);
}

rw_metric_t *rw_metrics_gauge(const char *name, const char *help,
                              const char *labels)
{
    return reg(name, help, labels, KIND_GAUGE, NULL, 0);
}

rw_metric_t *rw_metrics_histogram(const char *name, const char *help,
                                  const char *labels, const double *buckets,
                                  size_t nbuckets)
{
    return reg(name, help, labels, KIND_HISTOGRAM, buckets, nbuckets);
}

/* ---- updates ---------------------------------------------------------- */

void rw_metrics_add(rw_metric_t *m, double v)
{
    if (!m || m->fam->kind == KIND_HISTOGRAM)
        return;
    /* A counter only goes up: a negative or NaN step would corrupt it. */
    if (m->fam->kind == KIND_COUNTER && !(v >= 0))
        return;
    atomic_add_double(&m->bits, v);
}

void rw_metrics_set(rw_metric_t *m, double v)
{
    if (!m || m->fam->kind != KIND_GAUGE)
        return;
    atomic_store_explicit(&m->bits, dbits(v), memory_order_relaxed);
}

void rw_metrics_observe(rw_metric_t *m, double v)
{
    const struct family *f;
    size_t i = 0;

    if (!m || m->fam->kind != KIND_HISTOGRAM || isnan(v))
        return;
    f = m->fam;
    while (i < f->nbuckets && v > f->buckets[i])
        i++;
    atomic_fetch_add_explicit(&m->counts[i], 1, memory_order_relaxed);
    atomic_add_double(&m->bits, v);
}

double rw_metrics_value(const rw_metric_t *m)
{
    uint64_t n = 0;

    if (!m)
        return 0;
    if (m->fam->kind != KIND_HISTOGRAM)
        return bitsd(atomic_load_explicit(&m->bits, memory_order_relaxed));
    for (size_t i = 0; i <= m->fam->nbuckets; i++)
        n += atomic_load_explicit(&m->counts[i], memory_order_relaxed);
    return (double)n;
}

/* ---- rendering -------------------------------------------------------- */

/* name{labels[,extra]} */
static void sb_series(sbuf_t *sb, const char *name, const char *suffix,
                      const char *labels, const char *extra)
{
    sb_puts(sb, name);
    sb_puts(sb, suffix);
    if (labels[0] || extra) {
        sb_putc(sb, '{');
        sb_puts(sb, labels);
        if (labels[0] && extra)
            sb_putc(sb, ',');
        if (extra)
            sb_puts(sb, extra);
        sb_putc(sb, '}');
    }
}

static void render_histogram(sbuf_t *sb, const struct family *f,
                             struct rw_metric *m)
{
    char num[64], le[80];
    uint64_t cum = 0;

    for (size_t i = 0; i <= f->nbuckets; i++) {
        cum += atomic_load_explicit(&m->counts[i], memory_order_relaxed);
        if (i < f->nbuckets) {
            fmt_value(num, sizeof(num), f->buckets[i]);
            snprintf(le, sizeof(le), "le=\"%s\"", num);
        } else {
            snprintf(le, sizeof(le), "le=\"+Inf\"");
        }
        sb_series(sb, f->name, "_bucket", m->labels, le);
        sb_printf(sb, " %llu\n", (unsigned long long)cum);
    }
    /* _count is the +Inf bucket by construction, so the two agree. */
    fmt_value(num, sizeof(num),
              bitsd(atomic_load_explicit(&m->bits, memory_order_relaxed)));
    sb_series(sb, f->name, "_sum", m->labels, NULL);
    sb_printf(sb, " %s\n", num);
    sb_series(sb, f->name, "_count", m->labels, NULL);
    sb_printf(sb, " %llu\n", (unsigned long long)cum);
}

char *rw_metrics_render(void)
{
    sbuf_t sb = {0};
    char num[64];

    sb_reserve(&sb, 4096);
    if (sb.oom)
        return NULL;
    sb.s[0] = '\0';
    pthread_mutex_lock(&reg_lock);
    for (struct family *f = families; f; f = f->next) {
        sb_printf(&sb, "# HELP %s ", f->name);
        sb_escaped(&sb, f->help, strlen(f->help), 0);
        sb_printf(&sb, "\n# TYPE %s %s\n", f->name, kind_name[f->kind]);
        for (struct rw_metric *m = f->first; m; m = m->next) {
            if (f->kind == KIND_HISTOGRAM) {
                render_histogram(&sb, f, m);
                continue;
            }
            fmt_value(
                num, sizeof(num),
                bitsd(atomic_load_explicit(&m->bits, memory_order_relaxed)));
            sb_series(&sb, f->name, "", m->labels, NULL);
            sb_printf(&sb, " %s\n", num);
        }
    }
    pthread_mutex_unlock(&reg_lock);
    if (sb.oom) {
        free(sb.s);
        return NULL;
    }
    return sb.s;
}

/* ---- built-ins and teardown ------------------------------------------- */

rw_err_t rw_metrics_init(const char *binary, const char *version)
{
    char labels[512];
    rw_metric_t *info, *start;
    struct timespec ts;

    snprintf(labels, sizeof(labels), "binary=\"%s\",version=\"%s\"",
             binary ? binary : "", version ? version : "");
    info = rw_metrics_gauge("rollwave_build_info",
                            "Build of this binary; the value is always 1.",
                            labels);
    start = rw_metrics_gauge("rollwave_start_time_seconds",
                             "Start time of the process since the Unix "
                             "epoch, in seconds.",
                             NULL);
    if (!info || !start)
        return RW_ERR_INVALID_ARG;
    rw_metrics_set(info, 1);
    /* A second init must not move the start time. */
    if (rw_metrics_value(start) == 0) {
        clock_gettime(CLOCK_REALTIME, &ts);
        rw_metrics_set(start, (double)ts.tv_sec + ts.tv_nsec / 1e9);
    }
    return RW_OK;
}

void rw_metrics_shutdown(void)
{
    struct family *f, *next;

    pthread_mutex_lock(&reg_lock);
    f = families;
    families = NULL;
    fam_tail = &families;
    pthread_mutex_unlock(&reg_lock);
    while (f) {
        next = f->next;
        free_family(f);
        f = next;
    }
}
