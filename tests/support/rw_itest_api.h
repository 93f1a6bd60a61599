/*
 * rw_itest_api: rollwave-api in an integration fleet, for the API and
 * dashboard tests: a fleet with the API running on a free port (and its
 * /metrics on another), optionally a worker and a poller, one token per
 * role, and a small HTTP client (libcurl) that parses JSON answers. Every
 * helper fails the running test on error.
 */
#ifndef RW_ITEST_API_H
#define RW_ITEST_API_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "rw_itest_fleet.h"

/* Seconds the API trusts a verified token (ROLLWAVE_API_TOKEN_CACHE_S). */
#define RW_ITEST_API_TOKEN_CACHE_S 1

typedef struct rw_itest_api {
    rw_itest_fleet_t *f;
    int port, metrics_port;
    char viewer[80], operator[80], admin[80]; /* viewer-1, operator-1, ... */
} rw_itest_api_t;

/*
 * Fill a: a new fleet (sim_config as for rw_itest_fleet_new; polls every
 * 200 ms), rollwave-api started and answering, a worker and a poller when
 * daemons, and the three tokens. Tear down with rw_itest_fleet_destroy(a->f).
 */
void rw_itest_api_start(rw_itest_api_t *a, const char *sim_config,
                        bool daemons);

/* A TCP port on 127.0.0.1 free right now. */
int rw_itest_api_free_port(void);

/* Create a token with rollwavectl; its text into out. */
void rw_itest_api_token(rw_itest_api_t *a, const char *name, const char *role,
                        char *out, size_t len);

/*
 * method path on 127.0.0.1:port with token (NULL = none) and body (NULL =
 * none; len bytes of it when len > 0, else strlen). Returns the HTTP
 * status (-1 when no answer); *doc (may be NULL) gets the parsed JSON
 * answer or NULL, *text (may be NULL) the raw answer (caller frees).
 */
long rw_itest_api_call(int port, const char *method, const char *path,
                       const char *token, const char *body, size_t len,
                       json_t **doc, char **text);

/* method path on the API must answer want: the JSON answer (decref it). */
json_t *rw_itest_api_expect(rw_itest_api_t *a, const char *method,
                            const char *path, const char *token,
                            const char *body, long want);

/*
 * method path must answer want with {"error": {"code": code, "message":
 * ..., "field": field}} (field NULL: not checked).
 */
void rw_itest_api_expect_error(rw_itest_api_t *a, const char *method,
                               const char *path, const char *token,
                               const char *body, long want, const char *code,
                               const char *field);

#endif
