/*
 * rw_strategy: a rollout strategy's JSON and text forms, its validation,
 * wave sizes and deployment windows (docs/DESIGN.md section 10,
 * "Strategies").
 *
 * The settings are one table of fields (fields[] below): name, help and
 * the text parser. The JSON parser, rw_strategy_set (the CLI's way in) and
 * the error messages all go through it, so adding a knob is adding a row.
 * No Postgres, no clock, no logging here: time zones are checked by
 * Postgres when a window is stored, and callers decide what "now" is.
 */
#include "rw_strategy.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "rw_health.h"

/* Bounds that keep arithmetic exact and typos visible. */
#define COUNT_MAX         1000000000LL
#define BAKE_MAX_S        (30LL * 86400)
#define HEALTH_ATTEMPTS   3
#define HEALTH_INTERVAL_S 10
#define ATTEMPTS_MAX      100
#define INTERVAL_MAX_S    3600

static const char *const day_names[7] = {"Mon", "Tue", "Wed", "Thu",
                                         "Fri", "Sat", "Sun"};

/* ---- amounts ----------------------------------------------------------- */

/* Decimal digits only, at least one. */
static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* "12", "12.5", "12.05" into basis points; false when not of that form. */
static bool parse_percent_number(const char *s, size_t n, long long *bp)
{
    const char *dot = memchr(s, '.', n);
    size_t whole_n = dot ? (size_t)(dot - s) : n;
    size_t frac_n = dot ? n - whole_n - 1 : 0;
    long long whole = 0;
    long long frac = 0;

    if (!all_digits(s, whole_n) || whole_n > 4)
        return false;
    if (dot && (frac_n < 1 || frac_n > 2 || !all_digits(dot + 1, frac_n)))
        return false;
    for (size_t i = 0; i < whole_n; i++)
        whole = whole * 10 + (s[i] - '0');
    for (size_t i = 0; i < frac_n; i++)
        frac = frac * 10 + (dot[1 + i] - '0');
    if (frac_n == 1)
        frac *= 10;
    *bp = whole * 100 + frac;
    return true;
}

rw_err_t rw_amount_parse(const char *text, const char *field, bool allow_zero,
                         rw_amount_t *out, char *errstr, size_t errlen)
{
    size_t n = text ? strlen(text) : 0;
    rw_amount_t a = {.set = true};
    const char *digits = text;

    if (n == 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "%s: empty (a count such as 20 or a percentage "
                          "such as 5%%)",
                          field);
    if (text[0] == '-')
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "%s: %s is negative", field, text);
    if (text[n - 1] == '%') {
        a.percent = true;
        if (!parse_percent_number(digits, n - 1, &a.value))
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "%s: '%s' is not a percentage (such as 5%% or "
                              "12.5%%)",
                              field, text);
        if (a.value > 10000)
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "%s: %s is over 100%%", field, text);
    } else {
        if (!all_digits(digits, n) || n > 10)
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "%s: '%s' is not a count or a percentage", field,
                              text);
        a.value = strtoll(digits, NULL, 10);
        if (a.value > COUNT_MAX)
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "%s: %s is over %lld", field, text, COUNT_MAX);
    }
    if (a.value == 0 && !allow_zero)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "%s: must be above 0", field);
    *out = a;
    return RW_OK;
}

void rw_amount_format(const rw_amount_t *a, char *buf, size_t len)
{
    if (!a->set)
        snprintf(buf, len, "none");
    else if (!a->percent)
        snprintf(buf, len, "%lld", a->value);
    else if (a->value % 100 == 0)
        snprintf(buf, len, "%lld%%", a->value / 100);
    else if (a->value % 10 == 0)
        snprintf(buf, len, "%lld.%lld%%", a->value / 100, a->value % 100 / 10);
    else
        snprintf(buf, len, "%lld.%02lld%%", a->value / 100, a->value % 100);
}

long long rw_amount_of(const rw_amount_t *a, long long total)
{
    if (total <= 0)
        return 0;
    if (!a->set)
        return total;
    if (a->percent)
        return (a->value * total + 9999) / 10000;
    return a->value < total ? a->value : total;
}

/* ---- waves ------------------------------------------------------------- */

/*
 * Cumulative sizes must grow. A count cannot follow a percentage: its size
 * relative to the percentage would depend on the run, so "increasing"
 * could not be checked here. A list ending in a percentage must end at
 * 100%; a list ending in a count has the rest of the run as an implied
 * last wave, which counts towards RW_STRATEGY_MAX_WAVES.
 */
static rw_err_t check_waves(const rw_strategy_t *st, char *errstr,
                            size_t errlen)
{
    char cur[32];
    char prev[32];
    int n = st->n_waves;

    if (n == 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.waves: at least one wave");
    for (int i = 1; i < n; i++) {
        const rw_amount_t *p = &st->waves[i - 1];
        const rw_amount_t *c = &st->waves[i];

        rw_amount_format(c, cur, sizeof(cur));
        rw_amount_format(p, prev, sizeof(prev));
        if (p->percent && !c->percent)
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "strategy.waves[%d]: a count (%s) cannot "
                              "follow a percentage (%s)",
                              i, cur, prev);
        if (p->percent == c->percent && c->value <= p->value)
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "strategy.waves[%d]: %s is not above the "
                              "previous wave (%s)",
                              i, cur, prev);
    }
    if (st->waves[n - 1].percent && st->waves[n - 1].value != 10000) {
        rw_amount_format(&st->waves[n - 1], cur, sizeof(cur));
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.waves[%d]: the last wave must be 100%% "
                          "(is %s)",
                          n - 1, cur);
    }
    if (!st->waves[n - 1].percent && n + 1 > RW_STRATEGY_MAX_WAVES)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.waves: more than %d waves (a list "
                          "ending in a count adds a last wave for the rest)",
                          RW_STRATEGY_MAX_WAVES);
    return RW_OK;
}

/* Append wave i from text; the list is checked as a whole afterwards. */
static rw_err_t add_wave(rw_strategy_t *st, const char *text, char *errstr,
                         size_t errlen)
{
    char field[32];

    if (st->n_waves >= RW_STRATEGY_MAX_WAVES)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.waves: more than %d waves",
                          RW_STRATEGY_MAX_WAVES);
    snprintf(field, sizeof(field), "strategy.waves[%d]", st->n_waves);
    rw_err_t err = rw_amount_parse(text, field, false, &st->waves[st->n_waves],
                                   errstr, errlen);
    if (err)
        return err;
    st->n_waves++;
    return RW_OK;
}

rw_err_t rw_strategy_parse_waves(const char *text, rw_strategy_t *st,
                                 char *errstr, size_t errlen)
{
    rw_strategy_t tmp = *st;
    rw_err_t err = RW_OK;
    char item[32];
    const char *p = text ? text : "";

    tmp.n_waves = 0;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);

        /* spaces around items are the CLI's, not part of the value */
        while (n > 0 && isspace((unsigned char)*p)) {
            p++;
            n--;
        }
        while (n > 0 && isspace((unsigned char)p[n - 1]))
            n--;
        if (n >= sizeof(item)) {
            err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                             "strategy.waves[%d]: '%.*s' is too long",
                             tmp.n_waves, (int)n, p);
            goto out;
        }
        memcpy(item, p, n);
        item[n] = '\0';
        err = add_wave(&tmp, item, errstr, errlen);
        if (err)
            goto out;
        if (!end)
            break;
        p = end + 1;
    }
    err = check_waves(&tmp, errstr, errlen);
    if (err)
        goto out;
    *st = tmp;
out:
    return err;
}

int rw_strategy_wave_sizes(const rw_strategy_t *st, long long total,
                           long long *cum, int max)
{
    int n = 0;
    long long prev = 0;

    if (total <= 0 || max <= 0)
        return 0;
    for (int i = 0; i < st->n_waves && n < max - 1; i++) {
        long long c = rw_amount_of(&st->waves[i], total);

        if (c <= prev)
            c = prev + 1;
        /* the run's end is written once, below */
        if (c >= total)
            break;
        cum[n++] = c;
        prev = c;
    }
    cum[n++] = total;
    return n;
}

/* ---- bake -------------------------------------------------------------- */

rw_err_t rw_strategy_parse_bake(const char *text, long long *bake_s,
                                char *errstr, size_t errlen)
{
    size_t n = text ? strlen(text) : 0;
    long long mult = 1;
    long long v;

    if (n > 0 && strcmp(text, "manual") == 0) {
        *bake_s = RW_STRATEGY_BAKE_MANUAL;
        return RW_OK;
    }
    if (n > 0 && text[0] == '-')
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.bake: %s is negative", text);
    if (n > 0 && strchr("smhd", text[n - 1])) {
        static const long long mults[] = {1, 60, 3600, 86400};
        mult = mults[strchr("smhd", text[n - 1]) - "smhd"];
        n--;
    }
    if (!all_digits(text ? text : "", n) || n > 9)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.bake: '%s' is not a duration (0, 30s, "
                          "10m, 2h, 1d or manual)",
                          text ? text : "");
    v = strtoll(text, NULL, 10) * mult;
    if (v > BAKE_MAX_S)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.bake: %s is over 30d", text);
    *bake_s = v;
    return RW_OK;
}

void rw_strategy_format_bake(long long s, char *buf, size_t len)
{
    if (s == RW_STRATEGY_BAKE_MANUAL)
        snprintf(buf, len, "manual");
    else if (s == 0)
        snprintf(buf, len, "0");
    else if (s % 86400 == 0)
        snprintf(buf, len, "%lldd", s / 86400);
    else if (s % 3600 == 0)
        snprintf(buf, len, "%lldh", s / 3600);
    else if (s % 60 == 0)
        snprintf(buf, len, "%lldm", s / 60);
    else
        snprintf(buf, len, "%llds", s);
}

/* ---- the field table --------------------------------------------------- */

static rw_err_t int_in(const char *text, const char *field, int min, int max,
                       int *out, char *errstr, size_t errlen)
{
    size_t n = text ? strlen(text) : 0;

    if (!all_digits(text ? text : "", n) || n > 6)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "%s: '%s' is not a whole number from %d to %d", field,
                          text ? text : "", min, max);
    long long v = strtoll(text, NULL, 10);
    if (v < min || v > max)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "%s: %lld is not from %d to %d", field, v, min, max);
    *out = (int)v;
    return RW_OK;
}

static rw_err_t set_waves(rw_strategy_t *st, const char *text, char *errstr,
                          size_t errlen)
{
    if (strcmp(text, "none") == 0) {
        st->n_waves = 0;
        return RW_OK;
    }
    return rw_strategy_parse_waves(text, st, errstr, errlen);
}

static rw_err_t set_bake(rw_strategy_t *st, const char *text, char *errstr,
                         size_t errlen)
{
    return rw_strategy_parse_bake(text, &st->bake_s, errstr, errlen);
}

/* "none" clears an optional amount: a flag can take back what it set. */
static rw_err_t set_amount(rw_amount_t *a, const char *field, bool allow_zero,
                           const char *text, char *errstr, size_t errlen)
{
    if (strcmp(text, "none") == 0) {
        *a = (rw_amount_t){0};
        return RW_OK;
    }
    return rw_amount_parse(text, field, allow_zero, a, errstr, errlen);
}

/* 0 in flight would hold a run forever: refused, unlike 0 failures. */
static rw_err_t set_max_in_flight(rw_strategy_t *st, const char *text,
                                  char *errstr, size_t errlen)
{
    return set_amount(&st->max_in_flight, "strategy.max_in_flight", false, text,
                      errstr, errlen);
}

static rw_err_t set_max_failures_wave(rw_strategy_t *st, const char *text,
                                      char *errstr, size_t errlen)
{
    return set_amount(&st->max_failures_wave, "strategy.max_failures_wave",
                      true, text, errstr, errlen);
}

static rw_err_t set_max_failures_run(rw_strategy_t *st, const char *text,
                                     char *errstr, size_t errlen)
{
    return set_amount(&st->max_failures_run, "strategy.max_failures_run", true,
                      text, errstr, errlen);
}

static rw_err_t set_on_failure(rw_strategy_t *st, const char *text,
                               char *errstr, size_t errlen)
{
    if (strcmp(text, "pause") == 0)
        st->on_failure = RW_ON_FAILURE_PAUSE;
    else if (strcmp(text, "abort") == 0)
        st->on_failure = RW_ON_FAILURE_ABORT;
    else
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.on_failure: '%s' is not pause or abort",
                          text);
    return RW_OK;
}

/*
 * The URL is a template; "{route}" expands to the environment's route,
 * which carries its own scheme, so it may stand in for http(s)://.
 */
static rw_err_t set_health_url(rw_strategy_t *st, const char *text,
                               char *errstr, size_t errlen)
{
    size_t n = strlen(text);
    char why[160];

    if (strcmp(text, "none") == 0) {
        st->health = (rw_health_t){0};
        return RW_OK;
    }
    if (strncmp(text, "http://", 7) != 0 && strncmp(text, "https://", 8) != 0 &&
        strncmp(text, "{route}", 7) != 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.health.url: '%s' does not start with "
                          "http://, https:// or {route}",
                          text);
    if (n >= RW_STRATEGY_URL_MAX)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.health.url: longer than %d characters",
                          RW_STRATEGY_URL_MAX - 1);
    /* the poller expands the template by the same rule (rw_health) */
    if (rw_health_url_check(text, why, sizeof(why)))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG, "strategy.%s",
                          why);
    for (size_t i = 0; i < n; i++)
        if (isspace((unsigned char)text[i]) || iscntrl((unsigned char)text[i]))
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "strategy.health.url: contains white space "
                              "or a control character");
    /* defaults for what no flag or key gave yet */
    if (st->health.attempts == 0)
        st->health.attempts = HEALTH_ATTEMPTS;
    if (st->health.interval_s == 0)
        st->health.interval_s = HEALTH_INTERVAL_S;
    st->health.set = true;
    memcpy(st->health.url, text, n + 1);
    return RW_OK;
}

static rw_err_t set_health_attempts(rw_strategy_t *st, const char *text,
                                    char *errstr, size_t errlen)
{
    return int_in(text, "strategy.health.attempts", 1, ATTEMPTS_MAX,
                  &st->health.attempts, errstr, errlen);
}

static rw_err_t set_health_interval(rw_strategy_t *st, const char *text,
                                    char *errstr, size_t errlen)
{
    return int_in(text, "strategy.health.interval_s", 1, INTERVAL_MAX_S,
                  &st->health.interval_s, errstr, errlen);
}

typedef rw_err_t (*set_fn)(rw_strategy_t *st, const char *text, char *errstr,
                           size_t errlen);

static const struct field {
    const char *name; /* JSON path under "strategy." */
    const char *help;
    set_fn set;
} fields[] = {
    {"waves", "cumulative wave sizes: 1,10%,100% (none = one wave)", set_waves},
    {"bake", "wait after each wave but the last: 0, 30s, 10m, 2h, manual",
     set_bake},
    {"max_in_flight", "targets of the run in flight at once: 20 or 5%",
     set_max_in_flight},
    {"max_failures_wave", "failures in one wave before on_failure: 5 or 5%",
     set_max_failures_wave},
    {"max_failures_run", "failures in the run before on_failure: 50 or 2%",
     set_max_failures_run},
    {"on_failure", "what a threshold does: pause or abort", set_on_failure},
    {"health.url", "health check after each deploy: {route}/healthz",
     set_health_url},
    {"health.attempts", "health check attempts, 1..100 (3)",
     set_health_attempts},
    {"health.interval_s", "seconds between attempts, 1..3600 (10)",
     set_health_interval},
};

#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

static const struct field *find_field(const char *name)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    return NULL;
}

rw_err_t rw_strategy_set(rw_strategy_t *st, const char *name, const char *text,
                         char *errstr, size_t errlen)
{
    const struct field *f = find_field(name ? name : "");

    if (!f)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy: unknown key '%s'", name ? name : "");
    if (!text)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.%s: no value", name);
    return f->set(st, text, errstr, errlen);
}

const char *rw_strategy_field_help(size_t i, const char **name)
{
    if (i >= N_FIELDS)
        return NULL;
    *name = fields[i].name;
    return fields[i].help;
}

rw_err_t rw_strategy_validate(const rw_strategy_t *st, char *errstr,
                              size_t errlen)
{
    rw_err_t err = RW_OK;

    if (st->n_waves > 0) {
        err = check_waves(st, errstr, errlen);
        if (err)
            return err;
    }
    if (st->health.set && st->health.url[0] == '\0')
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.health.url: missing");
    if (!st->health.set && st->health.url[0] == '\0' &&
        (st->health.attempts != 0 || st->health.interval_s != 0))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.health.url: missing (attempts and "
                          "interval need a URL)");
    return RW_OK;
}

/* ---- JSON -------------------------------------------------------------- */

/* A JSON scalar as the text the field's parser reads. */
static rw_err_t scalar_text(const json_t *v, const char *path, char *buf,
                            size_t len, char *errstr, size_t errlen)
{
    if (json_is_string(v)) {
        if (json_string_length(v) >= len)
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "%s: too long", path);
        snprintf(buf, len, "%s", json_string_value(v));
        return RW_OK;
    }
    if (json_is_integer(v)) {
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return RW_OK;
    }
    return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                      "%s: expected a string or a whole number", path);
}

static rw_err_t parse_json_waves(const json_t *arr, rw_strategy_t *st,
                                 char *errstr, size_t errlen)
{
    char path[48];
    char text[32];
    rw_err_t err = RW_OK;

    if (!json_is_array(arr))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.waves: expected an array such as "
                          "[\"1\", \"10%%\", \"100%%\"]");
    st->n_waves = 0;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        snprintf(path, sizeof(path), "strategy.waves[%zu]", i);
        err = scalar_text(json_array_get(arr, i), path, text, sizeof(text),
                          errstr, errlen);
        if (err)
            return err;
        err = add_wave(st, text, errstr, errlen);
        if (err)
            return err;
    }
    return check_waves(st, errstr, errlen);
}

static rw_err_t parse_json_health(const json_t *obj, rw_strategy_t *st,
                                  char *errstr, size_t errlen)
{
    static const char *const keys[] = {"url", "attempts", "interval_s"};
    char path[64];
    char *text = NULL;
    rw_err_t err = RW_OK;
    const char *key;
    json_t *v;

    if (!json_is_object(obj))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.health: expected an object with url, "
                          "attempts, interval_s");
    json_object_foreach((json_t *)obj, key, v)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            known = known || strcmp(key, keys[i]) == 0;
        if (!known)
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "strategy.health: unknown key '%s'", key);
    }
    if (!json_object_get(obj, "url"))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "strategy.health.url: missing");
    text = malloc(RW_STRATEGY_URL_MAX + 1);
    if (!text)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    /* url first: it sets the defaults the other two may override */
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        v = json_object_get(obj, keys[i]);
        if (!v)
            continue;
        snprintf(path, sizeof(path), "strategy.health.%s", keys[i]);
        if (i > 0 && !json_is_integer(v)) {
            err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                             "%s: expected a whole number", path);
            goto out;
        }
        err =
            scalar_text(v, path, text, RW_STRATEGY_URL_MAX + 1, errstr, errlen);
        if (err)
            goto out;
        err = rw_strategy_set(st, path + strlen("strategy."), text, errstr,
                              errlen);
        if (err)
            goto out;
    }
out:
    free(text);
    return err;
}

rw_err_t rw_strategy_parse_json(const char *text, rw_strategy_t *st,
                                char *errstr, size_t errlen)
{
    rw_strategy_t tmp;
    rw_err_t err = RW_OK;
    json_error_t jerr;
    json_t *root = NULL;
    char path[64];
    char val[64];
    const char *key;
    json_t *v;

    rw_strategy_default(&tmp);
    if (!text || !*text)
        goto done;
    root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "strategy: not JSON (%s at line %d)", jerr.text,
                         jerr.line);
        goto out;
    }
    if (!json_is_object(root)) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "strategy: expected a JSON object");
        goto out;
    }
    json_object_foreach(root, key, v)
    {
        snprintf(path, sizeof(path), "strategy.%s", key);
        if (strcmp(key, "waves") == 0) {
            err = parse_json_waves(v, &tmp, errstr, errlen);
        } else if (strcmp(key, "health") == 0) {
            err = parse_json_health(v, &tmp, errstr, errlen);
        } else if (!strchr(key, '.') && find_field(key)) {
            err = scalar_text(v, path, val, sizeof(val), errstr, errlen);
            if (!err)
                err = rw_strategy_set(&tmp, key, val, errstr, errlen);
        } else {
            err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                             "strategy: unknown key '%s'", key);
        }
        if (err)
            goto out;
    }
    err = rw_strategy_validate(&tmp, errstr, errlen);
    if (err)
        goto out;
done:
    *st = tmp;
out:
    json_decref(root);
    return err;
}

static int add_amount(json_t *obj, const char *key, const rw_amount_t *a)
{
    char buf[32];

    if (!a->set)
        return 0;
    rw_amount_format(a, buf, sizeof(buf));
    return json_object_set_new(obj, key, json_string(buf));
}

char *rw_strategy_to_json(const rw_strategy_t *st)
{
    json_t *root = json_object();
    json_t *waves = NULL;
    json_t *health = NULL;
    char buf[32];
    char *out = NULL;
    int rc = 0;

    if (!root)
        goto out;
    if (st->n_waves > 0) {
        waves = json_array();
        for (int i = 0; waves && i < st->n_waves; i++) {
            rw_amount_format(&st->waves[i], buf, sizeof(buf));
            rc |= json_array_append_new(waves, json_string(buf));
        }
        /* set_new takes waves, even when it fails */
        rc |= json_object_set_new(root, "waves", waves);
    }
    if (st->bake_s != 0) {
        rw_strategy_format_bake(st->bake_s, buf, sizeof(buf));
        rc |= json_object_set_new(root, "bake", json_string(buf));
    }
    rc |= add_amount(root, "max_in_flight", &st->max_in_flight);
    rc |= add_amount(root, "max_failures_wave", &st->max_failures_wave);
    rc |= add_amount(root, "max_failures_run", &st->max_failures_run);
    if (st->on_failure == RW_ON_FAILURE_ABORT)
        rc |= json_object_set_new(root, "on_failure", json_string("abort"));
    if (st->health.set) {
        health =
            json_pack("{s:s, s:i, s:i}", "url", st->health.url, "attempts",
                      st->health.attempts, "interval_s", st->health.interval_s);
        rc |= json_object_set_new(root, "health", health);
    }
    if (rc == 0)
        out = json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT);
out:
    json_decref(root);
    return out;
}

void rw_strategy_default(rw_strategy_t *st)
{
    memset(st, 0, sizeof(*st));
    st->on_failure = RW_ON_FAILURE_PAUSE;
}

bool rw_strategy_is_default(const rw_strategy_t *st)
{
    return st->n_waves == 0 && st->bake_s == 0 && !st->max_in_flight.set &&
           !rw_strategy_has_thresholds(st) &&
           st->on_failure == RW_ON_FAILURE_PAUSE && !st->health.set;
}

bool rw_strategy_has_thresholds(const rw_strategy_t *st)
{
    return st->max_failures_wave.set || st->max_failures_run.set;
}

/* ---- windows ----------------------------------------------------------- */

static int day_index(const char *s, size_t n)
{
    if (n != 3)
        return -1;
    for (int d = 0; d < 7; d++)
        if (strncasecmp(s, day_names[d], 3) == 0)
            return d;
    return -1;
}

/* "Mon-Fri,Sun": ranges may wrap the week ("Fri-Mon"). */
static rw_err_t parse_days(const char *s, size_t n, unsigned *days,
                           char *errstr, size_t errlen)
{
    const char *p = s;
    const char *end = s + n;

    *days = 0;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        const char *dash = memchr(p, '-', (size_t)(item_end - p));
        int a = day_index(p, (size_t)((dash ? dash : item_end) - p));
        int b = dash ? day_index(dash + 1, (size_t)(item_end - dash - 1)) : a;

        if (a < 0 || b < 0)
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "window: '%.*s' is not a day or a range of "
                              "days (Mon, Sat-Sun, Mon-Fri,Sun)",
                              (int)(item_end - p), p);
        for (int d = a;; d = (d + 1) % 7) {
            *days |= 1u << d;
            if (d == b)
                break;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    return RW_OK;
}

/* "HH:MM", 00:00 to 23:59; -1 when not of that form. */
static int parse_hhmm(const char *s, size_t n)
{
    if (n != 5 || s[2] != ':' || !all_digits(s, 2) || !all_digits(s + 3, 2))
        return -1;
    int h = (s[0] - '0') * 10 + (s[1] - '0');
    int m = (s[3] - '0') * 10 + (s[4] - '0');
    if (h > 23 || m > 59)
        return -1;
    return h * 60 + m;
}

/*
 * Zone names as in the IANA database ("Europe/Zurich", "UTC",
 * "Etc/GMT+1"): only their syntax is checked here; whether Postgres knows
 * the zone is checked by the trigger of migration 0007 when it is stored.
 */
static bool zone_syntax_ok(const char *s, size_t n)
{
    if (n == 0 || n >= RW_WINDOW_TZ_MAX || s[0] == '/' || s[n - 1] == '/')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && !strchr("/_+-", c))
            return false;
        if (c == '/' && s[i + 1] == '/')
            return false;
    }
    return true;
}

rw_err_t rw_window_parse(const char *text, rw_window_t *w, char *errstr,
                         size_t errlen)
{
    const char *tok[4];
    size_t len[4];
    int n = 0;
    const char *p = text ? text : "";
    rw_window_t tmp = {0};
    rw_err_t err = RW_OK;
    const char *dash;

    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        if (n == 4)
            break;
        tok[n] = p;
        while (*p && *p != ' ')
            p++;
        len[n] = (size_t)(p - tok[n]);
        n++;
    }
    if (n != 3) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "window: '%s' is not \"Zone Days HH:MM-HH:MM\" "
                         "(e.g. \"Europe/Zurich Mon-Fri 02:00-05:00\")",
                         text ? text : "");
        goto out;
    }
    for (size_t i = 0; i + 1 < len[0]; i++)
        if ((tok[0][i] == '+' || tok[0][i] == '-') &&
            isdigit((unsigned char)tok[0][i + 1])) {
            /* "UTC+2" is read as POSIX, where +2 means two hours WEST of
             * Greenwich (and Etc/GMT+2 likewise): refused, not inverted */
            err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                             "window: '%.*s' is an offset, which POSIX counts "
                             "west of Greenwich; use a region name such as "
                             "Europe/Zurich, or UTC",
                             (int)len[0], tok[0]);
            goto out;
        }
    if (!zone_syntax_ok(tok[0], len[0])) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "window: '%.*s' is not a time zone name (such as "
                         "Europe/Zurich or UTC)",
                         (int)len[0], tok[0]);
        goto out;
    }
    memcpy(tmp.tz, tok[0], len[0]);
    tmp.tz[len[0]] = '\0';
    err = parse_days(tok[1], len[1], &tmp.days, errstr, errlen);
    if (err)
        goto out;
    dash = memchr(tok[2], '-', len[2]);
    tmp.from_min = dash ? parse_hhmm(tok[2], (size_t)(dash - tok[2])) : -1;
    tmp.to_min =
        dash ? parse_hhmm(dash + 1, len[2] - (size_t)(dash - tok[2]) - 1) : -1;
    if (tmp.from_min < 0 || tmp.to_min < 0) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "window: '%.*s' is not HH:MM-HH:MM with times "
                         "from 00:00 to 23:59",
                         (int)len[2], tok[2]);
        goto out;
    }
    if (tmp.from_min == tmp.to_min) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "window: opens and closes at the same time "
                         "(%.*s); a window spans less than a day",
                         (int)len[2], tok[2]);
        goto out;
    }
    *w = tmp;
out:
    return err;
}

void rw_window_format(const rw_window_t *w, char *buf, size_t len)
{
    char days[64] = "";
    size_t used = 0;

    /* runs of consecutive days, Monday first: "Mon-Fri,Sun" */
    for (int d = 0; d < 7; d++) {
        int e = d;

        if (!(w->days & (1u << d)))
            continue;
        while (e + 1 < 7 && (w->days & (1u << (e + 1))))
            e++;
        used += (size_t)snprintf(days + used, sizeof(days) - used, "%s%s",
                                 used ? "," : "", day_names[d]);
        if (e > d)
            used += (size_t)snprintf(days + used, sizeof(days) - used, "-%s",
                                     day_names[e]);
        d = e;
    }
    snprintf(buf, len, "%s %s %02d:%02d-%02d:%02d", w->tz, days,
             w->from_min / 60, w->from_min % 60, w->to_min / 60,
             w->to_min % 60);
}

/*
 * A window crossing midnight belongs to the day it opens: Mon 22:00-02:00
 * is open Monday from 22:00 and Tuesday until 02:00.
 */
bool rw_window_open_local(const rw_window_t *w, int weekday, int minute)
{
    int prev = (weekday + 6) % 7;

    if (weekday < 0 || weekday > 6)
        return false;
    if (w->from_min < w->to_min)
        return (w->days & (1u << weekday)) && minute >= w->from_min &&
               minute < w->to_min;
    return ((w->days & (1u << weekday)) && minute >= w->from_min) ||
           ((w->days & (1u << prev)) && minute < w->to_min);
}
