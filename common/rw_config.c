/*
 * rw_config: table-driven parsing and validation of ROLLWAVE_* settings.
 * Values never appear in error messages for secret keys.
 */
#include "rw_config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rw_log.h"

static const char *env_lookup(const char *name, void *ud)
{
    (void)ud;
    return getenv(name);
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static rw_err_t load_one(const rw_cfg_key_t *k, void *base, const char *val,
                         char *errstr, size_t errlen)
{
    char *field = (char *)base + k->offset;
    const char *shown = k->type == RW_CFG_SECRET ? "(secret)" : val;

    switch (k->type) {
    case RW_CFG_INT: {
        char *end = NULL;
        long long v;
        errno = 0;
        v = strtoll(val, &end, 10);
        if (errno || end == val || *end != '\0')
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: '%s' is not an integer", k->env, shown);
        if (v < k->min || v > k->max)
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: %lld is out of range [%lld, %lld]", k->env,
                              v, k->min, k->max);
        *(long long *)field = v;
        return RW_OK;
    }
    case RW_CFG_BOOL: {
        int b;
        if (parse_bool(val, &b) != 0)
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: '%s' is not a boolean (true/false)", k->env,
                              shown);
        *(int *)field = b;
        return RW_OK;
    }
    case RW_CFG_LEVEL: {
        int lvl = rw_log_level_parse(val);
        if (lvl < 0)
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: '%s' is not a log level "
                              "(debug, info, warn, error, off)",
                              k->env, shown);
        *(int *)field = lvl;
        return RW_OK;
    }
    case RW_CFG_STR:
    case RW_CFG_SECRET: {
        char **sp = (char **)field;
        if (k->required && val[0] == '\0')
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "%s: a value is required", k->env);
        free(*sp);
        *sp = strdup(val);
        if (!*sp)
            return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "%s: out of memory",
                              k->env);
        return RW_OK;
    }
    }
    return rw_err_set(errstr, errlen, RW_ERR_CONFIG, "%s: unknown key type",
                      k->env);
}

rw_err_t rw_config_load(const rw_cfg_key_t *keys, size_t n, void *base,
                        rw_cfg_lookup_fn lookup, void *ud, char *errstr,
                        size_t errlen)
{
    rw_err_t err = RW_OK;

    if (!lookup)
        lookup = env_lookup;
    for (size_t i = 0; i < n; i++) {
        const rw_cfg_key_t *k = &keys[i];
        const char *val = lookup(k->env, ud);
        if (!val || val[0] == '\0')
            val = k->def ? k->def : "";
        if (val[0] == '\0' && k->type != RW_CFG_STR &&
            k->type != RW_CFG_SECRET) {
            err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                             "%s: a value is required", k->env);
            goto out;
        }
        err = load_one(k, base, val, errstr, errlen);
        if (err)
            goto out;
    }
out:
    return err;
}

void rw_config_free(const rw_cfg_key_t *keys, size_t n, void *base)
{
    if (!base)
        return;
    for (size_t i = 0; i < n; i++) {
        if (keys[i].type == RW_CFG_STR || keys[i].type == RW_CFG_SECRET) {
            char **sp = (char **)((char *)base + keys[i].offset);
            free(*sp);
            *sp = NULL;
        }
    }
}

static const char *type_name(rw_cfg_type_t t)
{
    switch (t) {
    case RW_CFG_INT:
        return "int";
    case RW_CFG_BOOL:
        return "bool";
    case RW_CFG_STR:
        return "string";
    case RW_CFG_SECRET:
        return "secret";
    case RW_CFG_LEVEL:
        return "level";
    }
    return "?";
}

void rw_config_help(FILE *out, const char *prog, const char *about,
                    const rw_cfg_key_t *keys, size_t n)
{
    fprintf(out, "usage: %s [--help]\n%s\n\n", prog, about);
    fprintf(out, "Configuration (environment variables):\n");
    for (size_t i = 0; i < n; i++) {
        const rw_cfg_key_t *k = &keys[i];
        fprintf(out, "  %-36s %-6s default: %s", k->env, type_name(k->type),
                k->def && k->def[0] ? k->def
                                    : (k->required ? "(required)" : "(none)"));
        if (k->type == RW_CFG_INT)
            fprintf(out, " [%lld..%lld]", k->min, k->max);
        fprintf(out, "\n      %s\n", k->help);
    }
}

void rw_config_init(int argc, char **argv, const char *prog, const char *about,
                    const char *const *allowed_flags, const rw_cfg_key_t *keys,
                    size_t n, void *base)
{
    char errstr[512];

    for (int i = 1; i < argc; i++) {
        int ok = 0;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            rw_config_help(stdout, prog, about, keys, n);
            exit(0);
        }
        for (size_t j = 0; allowed_flags && allowed_flags[j]; j++)
            if (strcmp(argv[i], allowed_flags[j]) == 0)
                ok = 1;
        if (!ok) {
            fprintf(stderr, "%s: unknown argument '%s' (see --help)\n", prog,
                    argv[i]);
            exit(2);
        }
    }
    if (rw_config_load(keys, n, base, NULL, NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: config error: %s\n", prog, errstr);
        rw_config_free(keys, n, base);
        exit(2);
    }
    for (size_t i = 0; i < n; i++)
        if (keys[i].type == RW_CFG_LEVEL)
            rw_log_set_level((rw_log_level_t) *
                             (int *)((char *)base + keys[i].offset));
}
