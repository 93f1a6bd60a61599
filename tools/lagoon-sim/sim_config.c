/*
 * sim_config: one table of rollwave-lagoon-sim options and the code that
 * reads them from the environment, argv and POST /sim/config JSON. The
 * token is a secret: it is never printed, echoed in errors or returned by
 * the config endpoint.
 */
#include "sim_config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rw_log.h"

typedef enum opt_type {
    OPT_STR,
    OPT_SECRET,
    OPT_INT,
    OPT_RATE,  /* double in [0, 1] */
    OPT_LIST,  /* repeatable flag; comma-separated in the environment */
    OPT_LEVEL, /* log level name */
} opt_type_t;

typedef struct opt {
    const char *flag; /* without "--"; env and JSON names derive from it */
    opt_type_t type;
    const char *def;
    long long min, max;
    bool runtime; /* may be changed through POST /sim/config */
    size_t offset;
    const char *help;
} opt_t;

#define OPT(flag, type, field, def, min, max, rt, help)                        \
    {                                                                          \
        flag, type, def, min, max, rt, offsetof(rw_sim_config_t, field), help  \
    }

static const opt_t opts[] = {
    OPT("host", OPT_STR, host, "127.0.0.1", 0, 0, false,
        "address to listen on"),
    OPT("port", OPT_INT, port, "0", 0, 65535, false,
        "port to listen on (0 = pick a free port)"),
    OPT("port-file", OPT_STR, port_file, NULL, 0, 0, false,
        "write the bound port number to this file once listening"),
    OPT("token", OPT_SECRET, token, NULL, 0, 0, false,
        "bearer token every /graphql request must carry (required)"),
    OPT("log-level", OPT_LEVEL, log_level, "info", 0, 0, false,
        "log threshold: debug, info, warn, error or off"),
    OPT("seed", OPT_INT, seed, "0", 0, INT64_MAX, false,
        "salt of the hash that decides build outcomes and durations"),
    OPT("route-base", OPT_STR, route_base, "", 0, 0, false,
        "start of every environment's route, <route-base>/sim/env/<project>/"
        "<environment> (empty = http://127.0.0.1:<bound port>)"),
    OPT("rows-delay-ms", OPT_INT, rows_delay_ms, "2000", 0, 86400000, true,
        "a bulk's deployment rows appear this long after the mutation"),
    OPT("build-min-ms", OPT_INT, build_min_ms, "3000", 0, 86400000, true,
        "shortest time a build spends in running"),
    OPT("build-max-ms", OPT_INT, build_max_ms, "8000", 0, 86400000, true,
        "longest time a build spends in running (>= build-min-ms)"),
    OPT("phase-ms", OPT_INT, phase_ms, "500", 0, 86400000, true,
        "time a deployment spends in new and again in pending"),
    OPT("fail-rate", OPT_RATE, fail_rate, "0", 0, 0, true,
        "share of builds ending failed (hash of bulk id + environment)"),
    OPT("cancel-rate", OPT_RATE, cancel_rate, "0", 0, 0, true,
        "share of builds ending cancelled (hash of bulk id + environment)"),
    OPT("max-concurrent-builds", OPT_INT, max_concurrent_builds, "0", 0,
        100000000, true,
        "builds running at once; more wait in queued (0 = unlimited)"),
    OPT("reject", OPT_LIST, reject, NULL, 0, 0, true,
        "fnmatch pattern on project/environment whose deployments never "
        "appear (repeatable; comma-separated in the variable)"),
    OPT("fail", OPT_LIST, fail, NULL, 0, 0, true,
        "fnmatch pattern on project/environment whose builds end failed "
        "(repeatable; comma-separated in the variable)"),
    OPT("fault-http500", OPT_RATE, fault_http500, "0", 0, 0, true,
        "share of /graphql requests answered with HTTP 500"),
    OPT("fault-graphql-error", OPT_RATE, fault_graphql_error, "0", 0, 0, true,
        "share of /graphql requests answered with HTTP 200 and an error"),
    OPT("fault-slow", OPT_RATE, fault_slow, "0", 0, 0, true,
        "share of /graphql requests executed, then answered after slow-ms"),
    OPT("slow-ms", OPT_INT, slow_ms, "30000", 0, 3600000, true,
        "delay of a slow answer"),
    OPT("fault-drop", OPT_RATE, fault_drop, "0", 0, 0, true,
        "share of /graphql requests whose connection is closed unanswered "
        "(not executed)"),
    OPT("fault-http500-mutation", OPT_RATE, fault_http500_mutation, "0", 0, 0,
        true,
        "share of bulk deploy mutations answered with HTTP 500 without "
        "being executed (queries are answered)"),
    OPT("fault-http500-executed", OPT_RATE, fault_http500_executed, "0", 0, 0,
        true,
        "share of bulk deploy mutations executed (the bulk is created), "
        "then answered with HTTP 500"),
    OPT("fault-garbled-executed", OPT_RATE, fault_garbled_executed, "0", 0, 0,
        true,
        "share of bulk deploy mutations executed (the bulk is created), "
        "then answered with HTTP 200 and a body cut in half (not JSON)"),
    OPT("overload-knee", OPT_INT, overload_knee, "0", 0, 100000000, true,
        "builds in progress (running + queued) above which every /graphql "
        "answer is delayed (0 = no overload model)"),
    OPT("overload-ms-per-build", OPT_INT, overload_ms_per_build, "10", 0,
        3600000, true,
        "delay added to a /graphql answer per build in progress above "
        "overload-knee"),
    OPT("overload-max-ms", OPT_INT, overload_max_ms, "30000", 0, 3600000, true,
        "longest overload delay of a /graphql answer"),
    OPT("health-fail", OPT_LIST, health_fail, NULL, 0, 0, true,
        "fnmatch pattern on project/environment whose route answers health "
        "checks with HTTP 503 (repeatable; comma-separated in the variable)"),
    OPT("health-fail-percent", OPT_INT, health_fail_percent, "0", 0, 100, true,
        "share of environments, in percent, whose route answers 503 (a hash "
        "of seed and project/environment, so the same ones every time)"),
    OPT("log-error-percent", OPT_INT, log_error_percent, "0", 0, 100, true,
        "share of buildLog answers, in percent, that are Lagoon's \"There "
        "was an error loading the logs: ...\" string instead of the log"),
    OPT("log-bytes", OPT_INT, log_bytes, "0", 0, 67108864, true,
        "pad every finished build's log to at least this many bytes "
        "(0 = a few KiB, no padding)"),
    OPT("log-secret", OPT_STR, log_secret, "rwsim-bearer-7Qe2Lx9Vt4Nc8Kp1", 0,
        0, true,
        "bearer token the build logs print in an Authorization header (a "
        "planted secret for redaction tests)"),
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

static void env_name(const opt_t *o, char *buf, size_t len)
{
    const char *prefix = "ROLLWAVE_SIM_";
    size_t i = 0;

    for (; *prefix && i + 1 < len; prefix++)
        buf[i++] = *prefix;
    for (const char *c = o->flag; *c && i + 1 < len; c++)
        buf[i++] = *c == '-' ? '_' : (char)toupper((unsigned char)*c);
    buf[i] = '\0';
}

static void json_name(const opt_t *o, char *buf, size_t len)
{
    size_t i;

    for (i = 0; o->flag[i] && i + 1 < len; i++)
        buf[i] = o->flag[i] == '-' ? '_' : o->flag[i];
    buf[i] = '\0';
}

static void *field(rw_sim_config_t *cfg, const opt_t *o)
{
    return (char *)cfg + o->offset;
}

static const void *cfield(const rw_sim_config_t *cfg, const opt_t *o)
{
    return (const char *)cfg + o->offset;
}

static void list_clear(rw_sim_list_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static rw_err_t list_push(rw_sim_list_t *l, const char *s, size_t n)
{
    char **items = realloc(l->items, (l->n + 1) * sizeof(*items));

    if (!items)
        return RW_ERR_NOMEM;
    l->items = items;
    l->items[l->n] = strndup(s, n);
    if (!l->items[l->n])
        return RW_ERR_NOMEM;
    l->n++;
    return RW_OK;
}

/*
 * One value as text; `name` is how the caller spelled the option (flag or
 * variable) so the error says where the bad value came from.
 */
static rw_err_t set_text(rw_sim_config_t *cfg, const opt_t *o, const char *name,
                         const char *val, bool append, char *errstr,
                         size_t errlen)
{
    void *f = field(cfg, o);

    switch (o->type) {
    case OPT_STR:
    case OPT_SECRET: {
        char *s = strdup(val);
        if (!s)
            return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        free(*(char **)f);
        *(char **)f = s;
        return RW_OK;
    }
    case OPT_INT: {
        char *end = NULL;
        long long v;
        errno = 0;
        v = strtoll(val, &end, 10);
        if (errno || end == val || *end != '\0')
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: '%s' is not an integer", name, val);
        if (v < o->min || v > o->max)
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: %lld is out of range [%lld, %lld]", name, v,
                              o->min, o->max);
        *(long long *)f = v;
        return RW_OK;
    }
    case OPT_RATE: {
        char *end = NULL;
        double v;
        errno = 0;
        v = strtod(val, &end);
        if (errno || end == val || *end != '\0' || !isfinite(v))
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: '%s' is not a number", name, val);
        if (v < 0.0 || v > 1.0)
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: %g is out of range [0, 1]", name, v);
        *(double *)f = v;
        return RW_OK;
    }
    case OPT_LEVEL: {
        int lvl = rw_log_level_parse(val);
        if (lvl < 0)
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: '%s' is not a log level (debug, info, "
                              "warn, error, off)",
                              name, val);
        *(int *)f = lvl;
        return RW_OK;
    }
    case OPT_LIST: {
        rw_sim_list_t *l = f;
        const char *p = val;
        if (!append)
            list_clear(l);
        /* The environment form is comma-separated; a flag is one item. */
        while (*p) {
            const char *comma = append ? NULL : strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            if (n > 0 && list_push(l, p, n) != RW_OK)
                return rw_err_set(errstr, errlen, RW_ERR_NOMEM,
                                  "out of memory");
            p += n;
            if (*p == ',')
                p++;
        }
        return RW_OK;
    }
    }
    return rw_err_set(errstr, errlen, RW_ERR_CONFIG, "%s: unknown type", name);
}

static rw_err_t check(const rw_sim_config_t *cfg, char *errstr, size_t errlen)
{
    if (cfg->build_min_ms > cfg->build_max_ms)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "build-min-ms (%lld) is greater than build-max-ms "
                          "(%lld)",
                          cfg->build_min_ms, cfg->build_max_ms);
    return RW_OK;
}

rw_err_t rw_sim_config_load(rw_sim_config_t *cfg, int argc, char **argv,
                            bool *help, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    bool list_from_flags[N_OPTS] = {false};
    char name[96];

    *help = false;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *help = true;
            goto out;
        }
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];
        const char *val;

        env_name(o, name, sizeof(name));
        val = getenv(name);
        if (val && *val) {
            err = set_text(cfg, o, name, val, false, errstr, errlen);
        } else if (o->def) {
            snprintf(name, sizeof(name), "default of --%s", o->flag);
            err = set_text(cfg, o, name, o->def, false, errstr, errlen);
        }
        if (err)
            goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *eq, *val;
        const opt_t *o = NULL;
        size_t idx = 0, flen;

        if (strncmp(arg, "--", 2) != 0) {
            err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                             "unexpected argument '%s' (see --help)", arg);
            goto out;
        }
        eq = strchr(arg + 2, '=');
        flen = eq ? (size_t)(eq - arg - 2) : strlen(arg + 2);
        for (idx = 0; idx < N_OPTS; idx++)
            if (strlen(opts[idx].flag) == flen &&
                strncmp(opts[idx].flag, arg + 2, flen) == 0) {
                o = &opts[idx];
                break;
            }
        if (!o) {
            err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                             "unknown option '%.*s' (see --help)",
                             (int)flen + 2, arg);
            goto out;
        }
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                             "option --%s needs a value", o->flag);
            goto out;
        }
        snprintf(name, sizeof(name), "--%s", o->flag);
        /* Repeated list flags add up, but replace the variable's list. */
        if (o->type == OPT_LIST && !list_from_flags[idx]) {
            list_clear(field(cfg, o));
            list_from_flags[idx] = true;
        }
        err = set_text(cfg, o, name, val, true, errstr, errlen);
        if (err)
            goto out;
    }
    if (!cfg->token || !cfg->token[0]) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "--token (or ROLLWAVE_SIM_TOKEN) is required");
        goto out;
    }
    err = check(cfg, errstr, errlen);
out:
    return err;
}

static const char *type_name(opt_type_t t)
{
    switch (t) {
    case OPT_STR:
        return "string";
    case OPT_SECRET:
        return "secret";
    case OPT_INT:
        return "int";
    case OPT_RATE:
        return "0..1";
    case OPT_LIST:
        return "list";
    case OPT_LEVEL:
        return "level";
    }
    return "?";
}

void rw_sim_config_help(FILE *out, const char *prog)
{
    char env[96], flag[64];

    fprintf(out,
            "usage: %s --token TOKEN [options]\n"
            "Lagoon GraphQL API stand-in: bulkDeployEnvironmentLatest and "
            "deploymentsByBulkId on POST /graphql,\n"
            "plus GET /sim/stats, GET|POST /sim/config and POST /sim/reset "
            "(no auth),\n"
            "and each environment's route GET /sim/env/<project>/<environment>"
            "[/...] (health).\n\n"
            "Options (each also settable by its environment variable; "
            "flags win;\n"
            "'runtime' ones can be changed with POST /sim/config; timings,\n"
            "outcome rates and rejects apply to bulks created after that):\n",
            prog);
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];

        env_name(o, env, sizeof(env));
        snprintf(flag, sizeof(flag), "--%s", o->flag);
        fprintf(out, "  %-24s %-34s %-6s default: %s", flag, env,
                type_name(o->type),
                o->def ? o->def
                       : (o->type == OPT_SECRET ? "(required)" : "(none)"));
        if (o->type == OPT_INT)
            fprintf(out, " [%lld..%lld]", o->min, o->max);
        if (o->runtime)
            fprintf(out, " runtime");
        fprintf(out, "\n      %s\n", o->help);
    }
    fprintf(out, "  %-24s\n      %s\n", "--help", "print this help and exit");
}

rw_err_t rw_sim_config_copy(rw_sim_config_t *dst, const rw_sim_config_t *src)
{
    rw_err_t err = RW_OK;

    *dst = *src;
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];
        void *f = field(dst, o);

        if (o->type == OPT_STR || o->type == OPT_SECRET) {
            *(char **)f = NULL;
        } else if (o->type == OPT_LIST) {
            ((rw_sim_list_t *)f)->items = NULL;
            ((rw_sim_list_t *)f)->n = 0;
        }
    }
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];
        const void *s = cfield(src, o);
        void *f = field(dst, o);

        if ((o->type == OPT_STR || o->type == OPT_SECRET) &&
            *(char *const *)s) {
            *(char **)f = strdup(*(char *const *)s);
            if (!*(char **)f)
                err = RW_ERR_NOMEM;
        } else if (o->type == OPT_LIST) {
            const rw_sim_list_t *l = s;
            for (size_t j = 0; j < l->n && !err; j++)
                err = list_push(f, l->items[j], strlen(l->items[j]));
        }
        if (err)
            goto out;
    }
out:
    return err;
}

void rw_sim_config_free(rw_sim_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];
        void *f = field(cfg, o);

        if (o->type == OPT_STR || o->type == OPT_SECRET) {
            free(*(char **)f);
            *(char **)f = NULL;
        } else if (o->type == OPT_LIST) {
            list_clear(f);
        }
    }
}

static rw_err_t set_json(rw_sim_config_t *cfg, const opt_t *o, const char *key,
                         const json_t *v, char *errstr, size_t errlen)
{
    char text[64];

    switch (o->type) {
    case OPT_INT:
        if (!json_is_integer(v))
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: expected an integer", key);
        snprintf(text, sizeof(text), "%lld", (long long)json_integer_value(v));
        return set_text(cfg, o, key, text, false, errstr, errlen);
    case OPT_RATE:
        if (!json_is_number(v))
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: expected a number in [0, 1]", key);
        snprintf(text, sizeof(text), "%.17g", json_number_value(v));
        return set_text(cfg, o, key, text, false, errstr, errlen);
    case OPT_LIST: {
        rw_sim_list_t *l = field(cfg, o);
        size_t i;
        json_t *item;
        if (!json_is_array(v))
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: expected an array of strings", key);
        list_clear(l);
        json_array_foreach(v, i, item)
        {
            if (!json_is_string(item))
                return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                                  "%s[%zu]: expected a string", key, i);
            if (list_push(l, json_string_value(item),
                          json_string_length(item)) != RW_OK)
                return rw_err_set(errstr, errlen, RW_ERR_NOMEM,
                                  "out of memory");
        }
        return RW_OK;
    }
    case OPT_STR:
        /* the whole config is swapped under the model's lock, so a string
         * read by a request in flight is never freed under it */
        if (!json_is_string(v))
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: expected a string", key);
        return set_text(cfg, o, key, json_string_value(v), false, errstr,
                        errlen);
    default:
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "%s cannot be changed at run time", key);
    }
}

rw_err_t rw_sim_config_apply_json(rw_sim_config_t *cfg, const json_t *obj,
                                  char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    const char *key;
    json_t *v;
    char name[64];

    if (!json_is_object(obj))
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "expected a JSON object");
    json_object_foreach((json_t *)obj, key, v)
    {
        const opt_t *o = NULL;

        for (size_t i = 0; i < N_OPTS; i++) {
            json_name(&opts[i], name, sizeof(name));
            if (strcmp(name, key) == 0) {
                o = &opts[i];
                break;
            }
        }
        if (!o) {
            err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                             "unknown setting '%.60s'", key);
            goto out;
        }
        if (!o->runtime) {
            err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                             "%s cannot be changed at run time", key);
            goto out;
        }
        err = set_json(cfg, o, key, v, errstr, errlen);
        if (err)
            goto out;
    }
    err = check(cfg, errstr, errlen);
out:
    return err;
}

void rw_sim_config_json(const rw_sim_config_t *cfg, rw_sim_buf_t *b)
{
    char name[64];
    bool first = true;

    rw_sim_buf_puts(b, "{");
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];
        const void *f = cfield(cfg, o);

        if (o->type == OPT_SECRET)
            continue;
        json_name(o, name, sizeof(name));
        rw_sim_buf_printf(b, "%s\"%s\":", first ? "" : ",", name);
        first = false;
        switch (o->type) {
        case OPT_STR:
            rw_sim_buf_json_cstr(b, *(char *const *)f);
            break;
        case OPT_INT:
            rw_sim_buf_printf(b, "%lld", *(const long long *)f);
            break;
        case OPT_RATE:
            rw_sim_buf_printf(b, "%.15g", *(const double *)f);
            break;
        case OPT_LEVEL: {
            static const char *const lv[] = {"debug", "info", "warn", "error",
                                             "off"};
            int l = *(const int *)f;
            rw_sim_buf_json_cstr(b, l >= 0 && l <= 4 ? lv[l] : "info");
            break;
        }
        case OPT_LIST: {
            const rw_sim_list_t *l = f;
            rw_sim_buf_puts(b, "[");
            for (size_t j = 0; j < l->n; j++) {
                if (j)
                    rw_sim_buf_puts(b, ",");
                rw_sim_buf_json_cstr(b, l->items[j]);
            }
            rw_sim_buf_puts(b, "]");
            break;
        }
        case OPT_SECRET:
            break;
        }
    }
    rw_sim_buf_puts(b, "}");
}
