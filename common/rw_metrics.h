/*
 * rw_metrics: the process-wide Prometheus registry (counters, gauges,
 * histograms) and its text exposition (format 0.0.4).
 *
 * Registration is rare and takes a mutex; updates are frequent and
 * lock-free (atomics), so any thread may update any metric. It does not
 * serve HTTP (rw_http does) and does not push anywhere.
 *
 * Labels are given once, at registration, as one preformatted string
 * 'key="value",key2="value2"' (NULL or "" = none). Values are written raw,
 * not escaped: the renderer escapes \, " and newline. A value ends at the
 * '"' that is followed by ',' or by the end of the string, so a value may
 * contain '"' but not the two characters '",'. The same name may be
 * registered with several label sets: they render as one family under the
 * first HELP text. Registering the same name and labels again returns the
 * same metric.
 */
#ifndef RW_METRICS_H
#define RW_METRICS_H

#include <stddef.h>

#include "rw_err.h"

typedef struct rw_metric rw_metric_t;

/*
 * Register (or look up) a metric. NULL when the name or labels are invalid,
 * the name is already registered with another type (or, for histograms,
 * other buckets), or memory runs out; the reason is logged. The update
 * functions accept NULL and do nothing, so a failed registration costs a
 * log line, not a crash. Returned pointers stay valid until
 * rw_metrics_shutdown().
 */
rw_metric_t *rw_metrics_counter(const char *name, const char *help,
                                const char *labels);
rw_metric_t *rw_metrics_gauge(const char *name, const char *help,
                              const char *labels);
/*
 * buckets: nbuckets finite upper bounds in strictly increasing order
 * (copied); the +Inf bucket is implicit.
 */
rw_metric_t *rw_metrics_histogram(const char *name, const char *help,
                                  const char *labels, const double *buckets,
                                  size_t nbuckets);

/* Counter: add v >= 0 (negative or NaN is ignored). Gauge: add any v. */
void rw_metrics_add(rw_metric_t *m, double v);
/* Gauge only. */
void rw_metrics_set(rw_metric_t *m, double v);
/* Histogram only. */
void rw_metrics_observe(rw_metric_t *m, double v);
/* Current value of a counter or gauge (tests and self-checks). */
double rw_metrics_value(const rw_metric_t *m);

/*
 * The whole registry in Prometheus text format 0.0.4, families in
 * registration order. Caller frees the result with free(). NULL only when
 * memory runs out.
 */
char *rw_metrics_render(void);

/*
 * Register the built-ins: rollwave_build_info{binary=,version=} 1 and
 * rollwave_start_time_seconds (now, Unix time). Safe to call more than once.
 */
rw_err_t rw_metrics_init(const char *binary, const char *version);

/*
 * Free every metric. Only at exit (or between tests), when no thread uses
 * a metric pointer any more.
 */
void rw_metrics_shutdown(void);

#endif
