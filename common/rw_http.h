/*
 * rw_http: every daemon's small HTTP server for /metrics (Prometheus text
 * from rw_metrics_render()) and /healthz (the daemon's own health check).
 *
 * It runs on libmicrohttpd's internal thread with a connection limit and
 * timeouts, serves GET and HEAD only, and answers 404 to any other path.
 * It does not serve TLS or authentication: bind it to an address that only
 * the scraper and the orchestrator can reach.
 */
#ifndef RW_HTTP_H
#define RW_HTTP_H

#include <stddef.h>

#include "rw_err.h"

typedef struct rw_http rw_http_t;

/*
 * Health check, called on the server's thread for every GET /healthz, so it
 * must be thread-safe with respect to the daemon (read flags or atomics the
 * main loop maintains; do not use the main loop's connections). Return
 * RW_OK when healthy; otherwise an error, with detail (len bytes, already
 * zeroed) naming the broken component, e.g. "redis: connection refused".
 * Never put secrets in detail: it is served to whoever asks.
 */
typedef rw_err_t (*rw_http_health_fn)(void *ud, char *detail, size_t len);

/*
 * Listen on bind_addr (an IPv4 or IPv6 address or host name; NULL or ""
 * = all IPv4 interfaces) and port (0 = any free port, see rw_http_port()).
 * health may be NULL (always healthy); ud is passed to it. On success *hp
 * is a running server for rw_http_stop(). Errors: RW_ERR_CONFIG (bad
 * address or port), RW_ERR_IO (cannot listen).
 */
rw_err_t rw_http_start(rw_http_t **hp, const char *bind_addr, int port,
                       rw_http_health_fn health, void *ud, char *errstr,
                       size_t errlen);

/* The port the server listens on (the chosen one when started with 0). */
int rw_http_port(const rw_http_t *h);

/* Stop serving, wait for the server thread and free h. Accepts NULL. */
void rw_http_stop(rw_http_t *h);

#endif
