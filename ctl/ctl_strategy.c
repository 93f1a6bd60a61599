/*
 * ctl_strategy: "strategy" sets or shows a store app's rollout strategy
 * and deployment window, or a user group's window.
 *
 *   strategy --store-app ID [--waves L] [--bake D] [--max-in-flight A]
 *            [--max-failures-wave A] [--max-failures-run A]
 *            [--on-failure pause|abort] [--health-url U]
 *            [--health-attempts N] [--health-interval S]
 *            [--window TEXT | --no-window] [--clear] [--by NAME]
 *   strategy --store-app ID --show [--json]
 *   strategy --user-group ID (--window TEXT | --no-window | --show) [--json]
 *
 * Flags change only what they name: the stored strategy is read (locked),
 * merged with them through rw_strategy_set and written back as canonical
 * JSON (NULL when it comes out as the default); --clear starts from the
 * default instead. Every value is checked before anything is written: a
 * bad one exits 2 naming the field and the option. A stored strategy that
 * no longer validates is shown raw with the reason (exit 1) and is only
 * replaced with --clear. Time zones are checked by Postgres, which the
 * table trigger of migration 0007 enforces for any writer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "rw_strategy.h"

#define CMD      "strategy"
#define MAX_SETS 16

/* One row per strategy flag: the option and the field it sets. */
static const struct opt {
    const char *option;
    const char *field; /* rw_strategy_set name */
} opts[] = {
    {"--waves", "waves"},
    {"--bake", "bake"},
    {"--max-in-flight", "max_in_flight"},
    {"--max-failures-wave", "max_failures_wave"},
    {"--max-failures-run", "max_failures_run"},
    {"--on-failure", "on_failure"},
    {"--health-url", "health.url"},
    {"--health-attempts", "health.attempts"},
    {"--health-interval", "health.interval_s"},
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

typedef struct args {
    long long app;
    long long group;
    bool show, json, clear, no_window;
    const char *window_text;
    rw_window_t window;
    const char *by;
    const struct opt *set[MAX_SETS];
    const char *val[MAX_SETS];
    int n_set;
} args_t;

static const char SQL_TZ_KNOWN[] = "SELECT now() AT TIME ZONE $1::text";

static const char SQL_APP_LOCK[] =
    "SELECT strategy FROM store_apps WHERE id = $1::bigint FOR UPDATE";

/* $3: "set" writes the window from $4..$7, "clear" removes it, else kept */
static const char SQL_APP_UPDATE[] =
    "UPDATE store_apps SET strategy = $2::text,"
    "  window_tz = CASE $3::text WHEN 'set' THEN $4::text"
    "    WHEN 'clear' THEN NULL ELSE window_tz END,"
    "  window_days = CASE $3::text WHEN 'set' THEN $5::smallint"
    "    WHEN 'clear' THEN NULL ELSE window_days END,"
    "  window_from_min = CASE $3::text WHEN 'set' THEN $6::smallint"
    "    WHEN 'clear' THEN NULL ELSE window_from_min END,"
    "  window_to_min = CASE $3::text WHEN 'set' THEN $7::smallint"
    "    WHEN 'clear' THEN NULL ELSE window_to_min END,"
    "  strategy_updated_at = now(), strategy_updated_by = $8::text"
    " WHERE id = $1::bigint";

static const char SQL_GROUP_UPDATE[] =
    "UPDATE user_groups SET"
    "  window_tz = CASE $2::text WHEN 'set' THEN $3::text END,"
    "  window_days = CASE $2::text WHEN 'set' THEN $4::smallint END,"
    "  window_from_min = CASE $2::text WHEN 'set' THEN $5::smallint END,"
    "  window_to_min = CASE $2::text WHEN 'set' THEN $6::smallint END"
    " WHERE id = $1::bigint";

#define SQL_WINDOW_COLS                                                        \
    " window_tz, window_days, window_from_min, window_to_min,"                 \
    " rw_window_open(window_tz, window_days, window_from_min,"                 \
    "   window_to_min, now()) AS window_open"

static const char SQL_APP_SHOW[] =
    "SELECT id, name, strategy," SQL_WINDOW_COLS ","
    " to_char(strategy_updated_at AT TIME ZONE 'UTC',"
    "   'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS updated_at,"
    " strategy_updated_by AS updated_by"
    " FROM store_apps WHERE id = $1::bigint";

static const char SQL_GROUP_SHOW[] =
    "SELECT id, name," SQL_WINDOW_COLS " FROM user_groups"
    " WHERE id = $1::bigint";

static const struct opt *find_opt(const char *option)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(opts[i].option, option) == 0)
            return &opts[i];
    return NULL;
}

/* Every value checked on its own, before Postgres is asked anything. */
static int parse_args(int argc, char **argv, args_t *a)
{
    char errstr[512];
    rw_strategy_t scratch;

    memset(a, 0, sizeof(*a));
    a->by = "rollwavectl";
    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        const struct opt *o = find_opt(argv[i]);

        if (o) {
            if (!val) {
                rw_ctl_errorf(CMD, "%s needs a value", o->option);
                return RW_CTL_EXIT_USAGE;
            }
            rw_strategy_default(&scratch);
            if (rw_strategy_set(&scratch, o->field, val, errstr,
                                sizeof(errstr))) {
                rw_ctl_errorf(CMD, "%s (%s)", errstr, o->option);
                return RW_CTL_EXIT_USAGE;
            }
            if (a->n_set == MAX_SETS) {
                rw_ctl_errorf(CMD, "too many options");
                return RW_CTL_EXIT_USAGE;
            }
            a->set[a->n_set] = o;
            a->val[a->n_set++] = val;
            i++;
        } else if (strcmp(argv[i], "--store-app") == 0) {
            if (rw_ctl_parse_ll(CMD, "--store-app", val, 1, INT64_MAX, &a->app))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(argv[i], "--user-group") == 0) {
            if (rw_ctl_parse_ll(CMD, "--user-group", val, 1, INT64_MAX,
                                &a->group))
                return RW_CTL_EXIT_USAGE;
            i++;
        } else if (strcmp(argv[i], "--window") == 0) {
            if (rw_window_parse(val, &a->window, errstr, sizeof(errstr))) {
                rw_ctl_errorf(CMD, "%s (--window)", errstr);
                return RW_CTL_EXIT_USAGE;
            }
            a->window_text = val;
            i++;
        } else if (strcmp(argv[i], "--by") == 0 && val) {
            a->by = val;
            i++;
        } else if (strcmp(argv[i], "--no-window") == 0) {
            a->no_window = true;
        } else if (strcmp(argv[i], "--clear") == 0) {
            a->clear = true;
        } else if (strcmp(argv[i], "--show") == 0) {
            a->show = true;
        } else if (strcmp(argv[i], "--json") == 0) {
            a->json = true;
        } else {
            rw_ctl_errorf(CMD,
                          "unknown or incomplete argument '%s' (see "
                          "rollwavectl strategy --help)",
                          argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if ((a->app != 0) == (a->group != 0)) {
        rw_ctl_errorf(CMD, "give exactly one of --store-app and --user-group");
        return RW_CTL_EXIT_USAGE;
    }
    if (a->window_text && a->no_window) {
        rw_ctl_errorf(CMD, "give at most one of --window and --no-window");
        return RW_CTL_EXIT_USAGE;
    }
    if (a->group && (a->n_set > 0 || a->clear)) {
        rw_ctl_errorf(CMD, "a user group has a window only (--window, "
                           "--no-window, --show)");
        return RW_CTL_EXIT_USAGE;
    }
    if (a->show &&
        (a->n_set > 0 || a->clear || a->window_text || a->no_window)) {
        rw_ctl_errorf(CMD, "--show changes nothing: give it alone");
        return RW_CTL_EXIT_USAGE;
    }
    if (a->group && !a->show && !a->window_text && !a->no_window) {
        rw_ctl_errorf(CMD, "--user-group needs --window, --no-window or "
                           "--show");
        return RW_CTL_EXIT_USAGE;
    }
    return RW_CTL_EXIT_OK;
}

/* Whether Postgres knows the zone; asked before any write. */
static int check_zone(rw_pg_t *pg, const args_t *a)
{
    const char *p[1] = {a->window.tz};
    char errstr[512];

    if (!a->window_text)
        return RW_CTL_EXIT_OK;
    if (rw_pg_exec(pg, SQL_TZ_KNOWN, 1, p, NULL, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "window: time zone '%s' is not known (--window)",
                      a->window.tz);
        return RW_CTL_EXIT_USAGE;
    }
    return RW_CTL_EXIT_OK;
}

static void window_of(const PGresult *res, char *buf, size_t len)
{
    rw_window_t w = {0};

    if (!rw_pg_str(res, 0, "window_tz")) {
        snprintf(buf, len, "none");
        return;
    }
    snprintf(w.tz, sizeof(w.tz), "%s", rw_pg_str(res, 0, "window_tz"));
    w.days = (unsigned)rw_pg_ll(res, 0, "window_days", 0);
    w.from_min = (int)rw_pg_ll(res, 0, "window_from_min", 0);
    w.to_min = (int)rw_pg_ll(res, 0, "window_to_min", 0);
    rw_window_format(&w, buf, len);
}

static void print_strategy(const rw_strategy_t *st)
{
    char buf[64];

    if (st->n_waves == 0) {
        printf("  waves              one wave of everything\n");
    } else {
        printf("  waves              ");
        for (int i = 0; i < st->n_waves; i++) {
            rw_amount_format(&st->waves[i], buf, sizeof(buf));
            printf("%s%s", i ? ", " : "", buf);
        }
        printf("%s\n",
               st->waves[st->n_waves - 1].percent ? "" : ", then the rest");
    }
    rw_strategy_format_bake(st->bake_s, buf, sizeof(buf));
    printf("  bake               %s%s\n", buf,
           st->bake_s == RW_STRATEGY_BAKE_MANUAL ? " (promote each wave)"
           : st->bake_s == 0                     ? " (none)"
                                                 : "");
    rw_amount_format(&st->max_in_flight, buf, sizeof(buf));
    printf("  max in flight      %s\n", buf);
    rw_amount_format(&st->max_failures_wave, buf, sizeof(buf));
    printf("  max failures/wave  %s\n", buf);
    rw_amount_format(&st->max_failures_run, buf, sizeof(buf));
    printf("  max failures/run   %s\n", buf);
    printf("  on failure         %s\n",
           st->on_failure == RW_ON_FAILURE_ABORT ? "abort" : "pause");
    if (st->health.set)
        printf("  health             %s (%d attempts, %ds apart)\n",
               st->health.url, st->health.attempts, st->health.interval_s);
    else
        printf("  health             none\n");
}

/* One store app or group as stored. Exit 1 when its strategy is unusable. */
static int show(rw_pg_t *pg, const args_t *a)
{
    PGresult *res = NULL;
    char id_s[24], errstr[512], why[512] = "", win[128];
    const char *p[1] = {id_s};
    const char *raw = NULL;
    rw_strategy_t st;
    bool ok = true;
    int rc = RW_CTL_EXIT_OK;

    snprintf(id_s, sizeof(id_s), "%lld", a->app ? a->app : a->group);
    if (rw_pg_exec(pg, a->app ? SQL_APP_SHOW : SQL_GROUP_SHOW, 1, p, &res,
                   errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (PQntuples(res) != 1) {
        rw_ctl_errorf(CMD, "no %s with id %s",
                      a->app ? "store app" : "user group", id_s);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    window_of(res, win, sizeof(win));
    if (a->app) {
        raw = rw_pg_str(res, 0, "strategy");
        ok = rw_strategy_parse_json(raw, &st, why, sizeof(why)) == RW_OK;
    }
    if (a->json) {
        json_t *o =
            json_pack("{s:s, s:I, s:s, s:s?, s:b}", "kind",
                      a->app ? "store_app" : "user_group", "id",
                      (json_int_t)rw_pg_ll(res, 0, "id", 0), "name",
                      rw_pg_str(res, 0, "name"), "window",
                      rw_pg_str(res, 0, "window_tz") ? win : NULL,
                      "window_open_now", rw_pg_bool(res, 0, "window_open", 1));
        if (o && a->app) {
            json_t *sj = NULL;
            char *canon = ok ? rw_strategy_to_json(&st) : NULL;
            if (canon)
                sj = json_loads(canon, 0, NULL);
            free(canon);
            json_object_set_new(o, "strategy", sj ? sj : json_null());
            json_object_set_new(o, "strategy_raw",
                                raw ? json_string(raw) : json_null());
            if (!ok)
                json_object_set_new(o, "strategy_error", json_string(why));
            json_object_set_new(
                o, "updated_by",
                rw_pg_str(res, 0, "updated_by")
                    ? json_string(rw_pg_str(res, 0, "updated_by"))
                    : json_null());
        }
        char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (text)
            printf("%s\n", text);
        free(text);
        json_decref(o);
    } else {
        printf("%s %s (%s)\n", a->app ? "store app" : "user group", id_s,
               rw_pg_str(res, 0, "name"));
        if (a->app && ok)
            print_strategy(&st);
        else if (a->app)
            printf("  strategy (raw)     %s\n", raw);
        printf("  window             %s%s\n", win,
               !rw_pg_str(res, 0, "window_tz")        ? ""
               : rw_pg_bool(res, 0, "window_open", 1) ? " (open now)"
                                                      : " (closed now)");
        if (a->app && rw_pg_str(res, 0, "updated_by"))
            printf("  changed            %s by %s\n",
                   rw_pg_str(res, 0, "updated_at"),
                   rw_pg_str(res, 0, "updated_by"));
    }
    if (!ok) {
        rw_ctl_errorf(CMD,
                      "the stored strategy does not validate: %s (replace "
                      "it with --clear)",
                      why);
        rc = RW_CTL_EXIT_FAILED;
    }
out:
    PQclear(res);
    return rc;
}

/* The window parameters: mode, tz, days, from, to into p[0..4]. */
static void window_params(const args_t *a, char bufs[4][24], const char **p)
{
    p[0] = a->window_text ? "set" : a->no_window ? "clear" : "keep";
    p[1] = a->window_text ? a->window.tz : NULL;
    snprintf(bufs[1], 24, "%u", a->window.days);
    snprintf(bufs[2], 24, "%d", a->window.from_min);
    snprintf(bufs[3], 24, "%d", a->window.to_min);
    p[2] = a->window_text ? bufs[1] : NULL;
    p[3] = a->window_text ? bufs[2] : NULL;
    p[4] = a->window_text ? bufs[3] : NULL;
}

/* Stored strategy merged with the flags; *json NULL = the default. */
static int merge(rw_pg_t *pg, const args_t *a, const char *id_s, char **json)
{
    PGresult *res = NULL;
    const char *p[1] = {id_s};
    char errstr[512];
    rw_strategy_t st;
    int rc = RW_CTL_EXIT_OK;

    *json = NULL;
    if (rw_pg_exec(pg, SQL_APP_LOCK, 1, p, &res, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (PQntuples(res) != 1) {
        rw_ctl_errorf(CMD, "no store app with id %s", id_s);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    if (a->clear)
        rw_strategy_default(&st);
    else if (rw_strategy_parse_json(rw_pg_str(res, 0, "strategy"), &st, errstr,
                                    sizeof(errstr))) {
        rw_ctl_errorf(CMD,
                      "the stored strategy does not validate: %s (start "
                      "over with --clear)",
                      errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    for (int i = 0; i < a->n_set; i++)
        if (rw_strategy_set(&st, a->set[i]->field, a->val[i], errstr,
                            sizeof(errstr))) {
            rw_ctl_errorf(CMD, "%s (%s)", errstr, a->set[i]->option);
            rc = RW_CTL_EXIT_USAGE;
            goto out;
        }
    if (rw_strategy_validate(&st, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        rc = RW_CTL_EXIT_USAGE;
        goto out;
    }
    if (!rw_strategy_is_default(&st)) {
        *json = rw_strategy_to_json(&st);
        if (!*json) {
            rw_ctl_errorf(CMD, "out of memory");
            rc = RW_CTL_EXIT_FAILED;
        }
    }
out:
    PQclear(res);
    return rc;
}

static int write_app(rw_pg_t *pg, const args_t *a)
{
    char id_s[24], bufs[4][24], errstr[512];
    char *json = NULL;
    const char *wp[5];
    int rc;

    snprintf(id_s, sizeof(id_s), "%lld", a->app);
    window_params(a, bufs, wp);
    if (rw_pg_begin(pg, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    rc = merge(pg, a, id_s, &json);
    if (rc)
        goto out;
    {
        const char *p[8] = {id_s,  json,  wp[0], wp[1],
                            wp[2], wp[3], wp[4], a->by};
        if (rw_pg_exec(pg, SQL_APP_UPDATE, 8, p, NULL, errstr,
                       sizeof(errstr)) ||
            rw_pg_commit(pg, errstr, sizeof(errstr))) {
            rw_ctl_errorf(CMD, "%s", errstr);
            rc = RW_CTL_EXIT_FAILED;
        }
    }
out:
    if (rw_pg_in_tx(pg))
        rw_pg_rollback(pg, NULL, 0);
    free(json);
    return rc;
}

static int write_group(rw_pg_t *pg, const args_t *a)
{
    char id_s[24], bufs[4][24], errstr[512];
    PGresult *res = NULL;
    const char *wp[5];
    int rc = RW_CTL_EXIT_OK;

    snprintf(id_s, sizeof(id_s), "%lld", a->group);
    window_params(a, bufs, wp);
    {
        const char *p[6] = {id_s, wp[0], wp[1], wp[2], wp[3], wp[4]};
        if (rw_pg_exec(pg, SQL_GROUP_UPDATE, 6, p, &res, errstr,
                       sizeof(errstr))) {
            rw_ctl_errorf(CMD, "%s", errstr);
            rc = RW_CTL_EXIT_FAILED;
        } else if (atoll(PQcmdTuples(res)) != 1) {
            rw_ctl_errorf(CMD, "no user group with id %s", id_s);
            rc = RW_CTL_EXIT_FAILED;
        }
    }
    PQclear(res);
    return rc;
}

int rw_ctl_strategy(int argc, char **argv, const rw_settings_t *s)
{
    args_t a;
    rw_pg_t *pg = NULL;
    char errstr[512];
    int rc;

    rc = parse_args(argc, argv, &a);
    if (rc)
        return rc;
    if (rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    /* nothing to change is a question */
    if (a.app && a.n_set == 0 && !a.clear && !a.window_text && !a.no_window)
        a.show = true;
    if (!a.show) {
        rc = check_zone(pg, &a);
        if (!rc)
            rc = a.app ? write_app(pg, &a) : write_group(pg, &a);
        if (rc)
            goto out;
    }
    rc = show(pg, &a);
out:
    rw_pg_destroy(pg);
    return rc;
}
