/*
 * rollwave-api: the authenticated HTTP API (/api/v1) and the live
 * dashboard (/). This file holds the configuration table and the process
 * around the server: /metrics and /healthz on their own port like every
 * daemon, and the drain on SIGTERM (stop accepting, finish the requests in
 * hand). "--routes" prints the route table, one "METHOD PATH" per line,
 * for the check against schemas/openapi.yaml.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "api.h"
#include "rw_config.h"
#include "rw_daemon.h"
#include "rw_http.h"
#include "rw_log.h"
#include "rw_metrics.h"
#include "rw_settings.h"

static const rw_cfg_key_t keys[] = {
    RW_KEYS_PROCESS("9104"),
    RW_KEYS_PG,
    RW_KEYS_KAFKA,
    RW_KEYS_API,
    /* manual runs are built like rollwavectl's: chunk size, attempts */
    RW_KEYS_SCHEDULE,
    RW_KEYS_TRIGGER,
};

/* Postgres answers a fresh connection attempt: the server is useful. */
static rw_err_t health(void *ud, char *detail, size_t len)
{
    const rw_settings_t *s = ud;

    if (PQping(s->pg_dsn) != PQPING_OK)
        return rw_err_set(detail, len, RW_ERR_PG_CONN,
                          "postgres: not reachable");
    return RW_OK;
}

static void print_routes(void)
{
    for (size_t i = 0; i < rw_api_routes_count; i++)
        printf("%s %s %s\n", rw_api_routes[i].method, rw_api_routes[i].pattern,
               rw_role_name(rw_api_routes[i].min_role));
}

int main(int argc, char **argv)
{
    static const char *const flags[] = {"--routes", NULL};
    rw_settings_t s;
    rw_api_t *api = NULL;
    rw_http_t *http = NULL;
    char errstr[512];
    int rc = 0;

    if (argc == 2 && strcmp(argv[1], "--routes") == 0) {
        print_routes();
        return 0;
    }
    memset(&s, 0, sizeof(s));
    rw_config_init(argc, argv, "rollwave-api",
                   "HTTP API (/api/v1, bearer tokens with roles) and live "
                   "dashboard (/) of rollwave.",
                   flags, keys, sizeof(keys) / sizeof(keys[0]), &s);
    rw_daemon_signals_install("api");
    rw_metrics_init("rollwave-api", "0.1.0");
    if (s.metrics_port > 0 &&
        rw_http_start(&http, "0.0.0.0", (int)s.metrics_port, health, &s, errstr,
                      sizeof(errstr))) {
        rw_error("api", "event=start_failed detail=\"%s\"", errstr);
        rc = 1;
        goto out;
    }
    if (rw_api_start(&api, &s, errstr, sizeof(errstr))) {
        rw_error("api", "event=start_failed detail=\"%s\"", errstr);
        rc = 1;
        goto out;
    }
    while (!rw_daemon_draining()) {
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    rw_info("api", "event=draining");
out:
    rw_api_stop(api);
    rw_http_stop(http);
    rw_info("api", "event=stopped");
    rw_metrics_shutdown();
    rw_settings_free(&s);
    return rc;
}
