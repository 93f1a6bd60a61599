/*
 * rollwave-lagoon-sim: a stand-in for the Lagoon GraphQL API for the demo,
 * the integration tests and the benchmarks (DESIGN.md section 8). This file
 * only wires configuration, the model and the HTTP server together and
 * handles signals; see sim_model.c for the behaviour.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rw_log.h"
#include "sim_config.h"
#include "sim_graphql.h"
#include "sim_http.h"
#include "sim_model.h"

#define PROG "rollwave-lagoon-sim"
#define COMP "lagoon-sim"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    /* First signal drains; a second one means "now". */
    if (stop_requested)
        _exit(1);
    stop_requested = 1;
}

/* Written to a temporary name and renamed, so readers never see half. */
static rw_err_t write_port_file(const char *path, int port, char *errstr,
                                size_t errlen)
{
    rw_err_t err = RW_OK;
    char tmp[4096];
    FILE *f = NULL;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >=
        (int)sizeof(tmp))
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "port file path too long");
    f = fopen(tmp, "w");
    if (!f) {
        err = rw_err_set(errstr, errlen, RW_ERR_IO, "cannot write %s: %s", tmp,
                         strerror(errno));
        goto out;
    }
    fprintf(f, "%d\n", port);
    if (fclose(f) != 0) {
        f = NULL;
        err = rw_err_set(errstr, errlen, RW_ERR_IO, "cannot write %s: %s", tmp,
                         strerror(errno));
        goto out;
    }
    f = NULL;
    if (rename(tmp, path) != 0)
        err = rw_err_set(errstr, errlen, RW_ERR_IO, "cannot rename to %s: %s",
                         path, strerror(errno));
out:
    if (f)
        fclose(f);
    if (err)
        unlink(tmp);
    return err;
}

int main(int argc, char **argv)
{
    rw_sim_config_t cfg;
    rw_sim_t *sim = NULL;
    rw_sim_http_t *http = NULL;
    char errstr[512], qbuf[600];
    bool help = false;
    struct sigaction sa;
    int rc = 0;

    memset(&cfg, 0, sizeof(cfg));
    if (rw_sim_config_load(&cfg, argc, argv, &help, errstr, sizeof(errstr))) {
        fprintf(stderr, "%s: %s\n", PROG, errstr);
        rw_sim_config_free(&cfg);
        return 2;
    }
    if (help) {
        rw_sim_config_help(stdout, PROG);
        rw_sim_config_free(&cfg);
        return 0;
    }
    rw_log_set_level((rw_log_level_t)cfg.log_level);
    rw_sim_gql_init();

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (rw_sim_new(&cfg, &sim, errstr, sizeof(errstr)) ||
        rw_sim_http_start(sim, cfg.host, (int)cfg.port, cfg.token, &http,
                          errstr, sizeof(errstr))) {
        rw_error(COMP, "event=start_failed error=%s",
                 rw_log_quote(qbuf, sizeof(qbuf), errstr));
        rc = 1;
        goto out;
    }
    rw_sim_set_route_base(sim, rw_sim_http_port(http));
    if (cfg.port_file && cfg.port_file[0] &&
        write_port_file(cfg.port_file, rw_sim_http_port(http), errstr,
                        sizeof(errstr))) {
        rw_error(COMP, "event=start_failed error=%s",
                 rw_log_quote(qbuf, sizeof(qbuf), errstr));
        rc = 1;
        goto out;
    }
    rw_info(COMP,
            "event=listening host=%s port=%d rows_delay_ms=%lld "
            "build_ms=%lld..%lld phase_ms=%lld max_concurrent=%lld",
            rw_log_quote(qbuf, sizeof(qbuf), cfg.host), rw_sim_http_port(http),
            cfg.rows_delay_ms, cfg.build_min_ms, cfg.build_max_ms, cfg.phase_ms,
            cfg.max_concurrent_builds);

    while (!stop_requested) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    rw_info(COMP, "event=stopping");
out:
    rw_sim_http_stop(http);
    rw_sim_destroy(sim);
    rw_sim_config_free(&cfg);
    return rc;
}
