/*
 * rw_strategy: how one run is rolled out (docs/DESIGN.md, "Strategies").
 *
 * A strategy is stored as JSON text in store_apps.strategy (per store app)
 * and copied into deployment_runs.strategy when a run is created, so that
 * an edit never changes a run under way. NULL or "" is the default: one
 * wave of everything, no bake, no per-run limit, no failure threshold, no
 * health gate (today's behaviour, within the fleet throttle).
 *
 *   {"waves": ["1", "10%", "100%"],   cumulative sizes, increasing
 *    "bake": "10m" | "manual" | "0",  after each wave but the last
 *    "max_in_flight": "20" | "5%",    per run, on top of the fleet budget
 *    "max_failures_wave": "5%",       per wave: more failures pause/abort
 *    "max_failures_run": "50",        per run
 *    "on_failure": "pause" | "abort",
 *    "health": {"url": "{route}/healthz", "attempts": 3, "interval_s": 10}}
 *
 * Waves are cumulative: "1" then "10%" means 1 target, then up to 10% of
 * the run. They must grow (a count may precede percentages, not follow
 * one). A list ending in a percentage must end at 100% ("the last wave
 * must be 100%"); a list ending in a count, such as "1,5", has the rest of
 * the run as an implied last wave (1, 5, then everything), which counts
 * towards RW_STRATEGY_MAX_WAVES. Counts are > 0, percentages in (0, 100%].
 * max_in_flight is > 0; the failure thresholds may be 0 (the first failure
 * trips them). A run whose chunk is larger than its max_in_flight is not
 * refused: the throttle grants such a chunk alone when nothing of the run
 * is in flight (0007_strategy.sql, rw_throttle_take).
 *
 * Deployment windows are not part of the JSON: they are columns of
 * store_apps and user_groups (the scheduler filters on them in SQL), set
 * from the same "Europe/Zurich Mon-Fri 02:00-05:00" text parsed here.
 *
 * Every parser names the offending field in its error, e.g.
 * "strategy.waves[2]: 50% is not above the previous wave (60%)". Nothing
 * here touches Postgres; time zones are checked by Postgres when a window
 * is stored.
 */
#ifndef RW_STRATEGY_H
#define RW_STRATEGY_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"

#define RW_STRATEGY_MAX_WAVES   16
#define RW_STRATEGY_URL_MAX     1024
#define RW_WINDOW_TZ_MAX        64
#define RW_STRATEGY_BAKE_MANUAL (-1LL)

/*
 * A count or a percentage. Percentages are kept in basis points
 * (1% = 100, 100% = 10000, "12.5%" = 1250) so that arithmetic is exact.
 * set false = not given (no limit).
 */
typedef struct rw_amount {
    bool set;
    bool percent;
    long long value; /* count, or basis points when percent */
} rw_amount_t;

typedef enum rw_on_failure {
    RW_ON_FAILURE_PAUSE = 0,
    RW_ON_FAILURE_ABORT,
} rw_on_failure_t;

typedef struct rw_health {
    bool set;
    char url[RW_STRATEGY_URL_MAX]; /* template: {route} {project} {environment}
                                    */
    int attempts;                  /* 1..100 */
    int interval_s;                /* 1..3600 between attempts */
} rw_health_t;

typedef struct rw_strategy {
    int n_waves; /* 0 = one wave of everything */
    rw_amount_t waves[RW_STRATEGY_MAX_WAVES];
    long long bake_s; /* 0 = none; RW_STRATEGY_BAKE_MANUAL = promote */
    rw_amount_t max_in_flight;
    rw_amount_t max_failures_wave;
    rw_amount_t max_failures_run;
    rw_on_failure_t on_failure;
    rw_health_t health;
} rw_strategy_t;

/* A deployment window: local weekdays and hours in an IANA time zone. */
typedef struct rw_window {
    char tz[RW_WINDOW_TZ_MAX];
    unsigned days; /* bit 0 = Monday ... bit 6 = Sunday; never 0 */
    int from_min;  /* minute of the local day the window opens, 0..1439 */
    int to_min;    /* closes; to < from crosses midnight; never equal */
} rw_window_t;

void rw_strategy_default(rw_strategy_t *st);
bool rw_strategy_is_default(const rw_strategy_t *st);

/* Whether a failure count can pause or fail the run (a wave or a run
 * threshold is set). */
bool rw_strategy_has_thresholds(const rw_strategy_t *st);

/* JSON text (NULL or "" = default) to a validated strategy. */
rw_err_t rw_strategy_parse_json(const char *text, rw_strategy_t *st,
                                char *errstr, size_t errlen);

/*
 * Set one field from its text form, by its JSON path: "waves", "bake",
 * "max_in_flight", "max_failures_wave", "max_failures_run", "on_failure",
 * "health.url", "health.attempts", "health.interval_s". "none" clears
 * waves, the amounts and health. Other fields are untouched, so the CLI
 * changes only what its flags name; call rw_strategy_validate afterwards.
 */
rw_err_t rw_strategy_set(rw_strategy_t *st, const char *name, const char *text,
                         char *errstr, size_t errlen);
/* The checks across fields that rw_strategy_parse_json applies. */
rw_err_t rw_strategy_validate(const rw_strategy_t *st, char *errstr,
                              size_t errlen);
/* Field i's help line and JSON path into *name; NULL past the last. */
const char *rw_strategy_field_help(size_t i, const char **name);

/* Canonical JSON of a strategy (malloc'd, caller frees); NULL on ENOMEM. */
char *rw_strategy_to_json(const rw_strategy_t *st);

/* Text forms shared by the CLI and the JSON parser. */
rw_err_t rw_strategy_parse_waves(const char *text, rw_strategy_t *st,
                                 char *errstr,
                                 size_t errlen); /* "1,10%,100%" */
rw_err_t rw_strategy_parse_bake(const char *text, long long *bake_s,
                                char *errstr,
                                size_t errlen); /* 0 30s 10m 2h manual */
rw_err_t rw_amount_parse(const char *text, const char *field, bool allow_zero,
                         rw_amount_t *out, char *errstr, size_t errlen);
rw_err_t
rw_window_parse(const char *text, rw_window_t *w, char *errstr,
                size_t errlen); /* "Europe/Zurich Mon-Fri 02:00-05:00" */

/* Text form of an amount ("20", "12.5%") into buf. */
void rw_amount_format(const rw_amount_t *a, char *buf, size_t len);
/* Text form of a bake ("0", "90s", "10m", "2h", "manual"). */
void rw_strategy_format_bake(long long bake_s, char *buf, size_t len);
/* Text form of a window, the form rw_window_parse reads. */
void rw_window_format(const rw_window_t *w, char *buf, size_t len);

/* An amount of total: a count as is (capped at total), a percentage as
 * ceil(p * total). Not set: total. */
long long rw_amount_of(const rw_amount_t *a, long long total);

/*
 * Cumulative wave sizes for a run of total targets into cum[0..max):
 * each wave's amount of total, at least one more than the previous wave,
 * waves that add nothing dropped, the last always total. Returns the number
 * of waves (1 for the default strategy or total <= 1; 0 for total 0).
 */
int rw_strategy_wave_sizes(const rw_strategy_t *st, long long total,
                           long long *cum, int max);

/* Whether a window is open at a local weekday (0 = Monday) and minute. */
bool rw_window_open_local(const rw_window_t *w, int weekday, int minute);

#endif
