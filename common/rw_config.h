/*
 * rw_config: declarative configuration from ROLLWAVE_* environment variables.
 *
 * A binary describes its settings as one table of rw_cfg_key_t (name, type,
 * default, bounds, one-line help, offset into rw_settings_t); this module
 * parses, validates and prints --help from that table. It does not know
 * what any key means. Secrets are stored like strings but never printed.
 */
#ifndef RW_CONFIG_H
#define RW_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "rw_err.h"

typedef enum rw_cfg_type {
    RW_CFG_INT,    /* long long, within [min, max] */
    RW_CFG_BOOL,   /* int 0/1 from true/false/1/0/yes/no/on/off */
    RW_CFG_STR,    /* char *, owned by the settings struct */
    RW_CFG_SECRET, /* char *, like STR but never printed */
    RW_CFG_LEVEL,  /* int log level, from debug/info/warn/error/off */
} rw_cfg_type_t;

typedef struct rw_cfg_key {
    const char *env;
    rw_cfg_type_t type;
    const char *def; /* default as text; NULL = empty / unset */
    long long min, max;
    size_t offset; /* where the value lives in the caller's struct */
    int required;  /* a non-empty value must be given */
    const char *help;
} rw_cfg_key_t;

/* Looks a variable up; getenv-like. The default reads the process env. */
typedef const char *(*rw_cfg_lookup_fn)(const char *name, void *ud);

/*
 * Fill base (a zeroed struct) from lookup (NULL = getenv). On error, errstr
 * names the key and the problem and base may hold partial values: call
 * rw_config_free() either way.
 */
rw_err_t rw_config_load(const rw_cfg_key_t *keys, size_t n, void *base,
                        rw_cfg_lookup_fn lookup, void *ud, char *errstr,
                        size_t errlen);

/* Free the strings a load stored in base. Accepts a NULL base. */
void rw_config_free(const rw_cfg_key_t *keys, size_t n, void *base);

/* Print every key with type, default, bounds and help. */
void rw_config_help(FILE *out, const char *prog, const char *about,
                    const rw_cfg_key_t *keys, size_t n);

/*
 * The usual daemon start: "--help" prints help and exits 0; any other
 * argument not in allowed_flags (NULL-terminated, may be NULL) exits 2;
 * a bad value prints "prog: config error: ..." and exits 2. Sets the log
 * level from a RW_CFG_LEVEL key if the table has one. Returns only on
 * success.
 */
void rw_config_init(int argc, char **argv, const char *prog, const char *about,
                    const char *const *allowed_flags, const rw_cfg_key_t *keys,
                    size_t n, void *base);

#endif
