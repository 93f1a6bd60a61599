/*
 * sim_http: the HTTP face of rollwave-lagoon-sim (libmicrohttpd, one thread
 * per connection, keep-alive): POST /graphql behind the bearer token and
 * with fault injection, the unauthenticated admin endpoints GET
 * /sim/stats, GET|POST /sim/config, POST /sim/reset and GET /healthz, and
 * the environments' routes (GET /sim/env/..., their health checks). It
 * holds no simulation state of its own.
 */
#ifndef RW_SIM_HTTP_H
#define RW_SIM_HTTP_H

#include <stddef.h>

#include "rw_err.h"
#include "sim_model.h"

typedef struct rw_sim_http rw_sim_http_t;

/*
 * Listens on host:port (port 0 = any free port) and serves sim, which must
 * outlive the server. token is copied.
 */
rw_err_t rw_sim_http_start(rw_sim_t *sim, const char *host, int port,
                           const char *token, rw_sim_http_t **out, char *errstr,
                           size_t errlen);

/* The port actually bound. */
int rw_sim_http_port(const rw_sim_http_t *http);

/* Wakes slow answers, closes every connection, frees. Accepts NULL. */
void rw_sim_http_stop(rw_sim_http_t *http);

#endif
