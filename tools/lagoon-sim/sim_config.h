/*
 * sim_config: the settings of rollwave-lagoon-sim as one declarative table
 * (flag, environment variable, type, default, bounds, run-time tunable,
 * help) that drives command-line and ROLLWAVE_SIM_* parsing, --help, the
 * validation of POST /sim/config and its JSON answer. It does not know what
 * a setting does to the simulation; sim_model reads the values.
 */
#ifndef RW_SIM_CONFIG_H
#define RW_SIM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include <jansson.h>

#include "rw_err.h"
#include "sim_buf.h"

/* A list of owned strings (the --reject and --health-fail patterns). */
typedef struct rw_sim_list {
    char **items;
    size_t n;
} rw_sim_list_t;

typedef struct rw_sim_config {
    /* start-up only */
    char *host;
    long long port;
    char *port_file;
    char *token;
    int log_level;
    long long seed;
    char *route_base; /* "" = http://127.0.0.1:<bound port> */
    /* tunable at run time through POST /sim/config */
    long long rows_delay_ms;
    long long build_min_ms;
    long long build_max_ms;
    long long phase_ms;
    double fail_rate;
    double cancel_rate;
    long long max_concurrent_builds;
    rw_sim_list_t reject;
    rw_sim_list_t fail; /* builds of matching environments end failed */
    double fault_http500;
    double fault_graphql_error;
    double fault_slow;
    long long slow_ms;
    double fault_drop;
    double fault_http500_executed;
    double fault_http500_mutation;
    double fault_garbled_executed;
    long long overload_knee;
    long long overload_ms_per_build;
    long long overload_max_ms;
    rw_sim_list_t health_fail;
    long long health_fail_percent;
    long long log_error_percent;
    long long log_bytes;
    char *log_secret;
} rw_sim_config_t;

/*
 * Defaults, then ROLLWAVE_SIM_* variables, then argv (flags win). *help is
 * set when --help was given (cfg is then only partly filled). On error,
 * errstr names the option and the problem. Call rw_sim_config_free()
 * either way.
 */
rw_err_t rw_sim_config_load(rw_sim_config_t *cfg, int argc, char **argv,
                            bool *help, char *errstr, size_t errlen);

/* Every option with its variable, type, default, bounds and help. */
void rw_sim_config_help(FILE *out, const char *prog);

/* Deep copy into a zeroed dst; free dst with rw_sim_config_free(). */
rw_err_t rw_sim_config_copy(rw_sim_config_t *dst, const rw_sim_config_t *src);

/* Frees the strings of cfg; accepts NULL. */
void rw_sim_config_free(rw_sim_config_t *cfg);

/*
 * Applies a POST /sim/config object (snake_case keys of the run-time
 * tunable settings) onto cfg. On error cfg may be partly changed: callers
 * apply onto a copy and keep the original when this fails.
 */
rw_err_t rw_sim_config_apply_json(rw_sim_config_t *cfg, const json_t *obj,
                                  char *errstr, size_t errlen);

/* The whole configuration as a JSON object, secrets left out. */
void rw_sim_config_json(const rw_sim_config_t *cfg, rw_sim_buf_t *b);

#endif
