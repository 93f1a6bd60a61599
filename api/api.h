/*
 * api: rollwave-api's internal interface between its files: the request
 * handed to a handler, the route table, and the validation helpers the
 * handlers and the unit tests share.
 *
 *   api_server.c    libmicrohttpd, bodies, authentication, the Postgres
 *                   pool, the token cache, errors, the dashboard's files
 *   api_routes.c    the route table and one handler per route
 *   api_validate.c  paths, ids, query values and JSON bodies, pure
 *   main.c          configuration and process start
 */
#ifndef RW_API_H
#define RW_API_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "rw_err.h"
#include "rw_pg.h"
#include "rw_settings.h"
#include "rw_token.h"

/* Request bodies larger than this are refused with 413. */
#define RW_API_MAX_BODY (64 * 1024)
/* Path parameters per route, and the longest one accepted. */
#define RW_API_MAX_PARAMS 2
#define RW_API_PARAM_LEN  64

typedef struct rw_api rw_api_t;

/* One request, as a handler sees it. */
typedef struct rw_api_req {
    rw_api_t *api;
    const rw_settings_t *s;
    rw_pg_t *pg; /* borrowed from the pool for this request */
    void *conn;  /* struct MHD_Connection, for query values */
    const char *method;
    const char *path;
    char params[RW_API_MAX_PARAMS][RW_API_PARAM_LEN + 1];
    int n_params;
    json_t *body; /* parsed request body, NULL when none was sent */
    char token_name[72];
    rw_role_t role;
    /* the answer: status and JSON document (owned, freed by the server) */
    unsigned status;
    json_t *out;
    char location[160]; /* Location header of a 201, "" = none */
    char audit[256];    /* detail recorded in api_audit for a write */
} rw_api_req_t;

typedef void (*rw_api_handler_fn)(rw_api_req_t *rq);

/*
 * One route: the table in api_routes.c drives dispatch, authorization and
 * the check against schemas/openapi.yaml (rollwave-api --routes).
 */
typedef struct rw_api_route {
    const char *method;
    const char *pattern; /* "/api/v1/runs/{uuid}": {x} is one segment */
    rw_role_t min_role;
    rw_api_handler_fn fn;
    const char *const *query; /* accepted query parameters, NULL-ended */
    const char *summary;
} rw_api_route_t;

extern const rw_api_route_t rw_api_routes[];
extern const size_t rw_api_routes_count;

/* ---- validation (api_validate.c) ------------------------------------- */

/*
 * Match path against pattern; on a match the {x} segments are copied into
 * params (at most RW_API_MAX_PARAMS, each at most RW_API_PARAM_LEN bytes:
 * longer is no match) and *n set.
 */
bool rw_api_path_match(const char *pattern, const char *path,
                       char params[][RW_API_PARAM_LEN + 1], int *n);

/* Decimal digits only (no sign, space or leading +), within [min, max]. */
bool rw_api_parse_ll(const char *s, long long min, long long max,
                     long long *out);

/*
 * A keyset cursor of n (at most RW_API_MAX_KEY) non-negative integers
 * joined by dots ("3.1042.17") into out; anything else is false.
 */
#define RW_API_MAX_KEY 4
bool rw_api_parse_key(const char *s, long long *out, int n);

/* 8-4-4-4-12 hexadecimal digits. */
bool rw_api_is_uuid(const char *s);

/* True when name is in the NULL-terminated list allowed (NULL = none). */
bool rw_api_query_allowed(const char *const *allowed, const char *name);

typedef enum rw_api_ftype {
    RW_API_F_INT,       /* integer in [min, max] */
    RW_API_F_INT_NULL,  /* integer in [min, max] or null */
    RW_API_F_BOOL,      /* true or false */
    RW_API_F_INT_ARRAY, /* 1..max integers, each in [min, INT64_MAX] */
    RW_API_F_STRING,    /* a string of min..max bytes */
    RW_API_F_OBJECT,    /* a JSON object (its members checked elsewhere) */
} rw_api_ftype_t;

/* One field of a request body; a body is one table of these. */
typedef struct rw_api_field {
    const char *name;
    rw_api_ftype_t type;
    bool required;
    long long min, max;
} rw_api_field_t;

/*
 * Check body (NULL = no body, treated as {}) against fields: an object,
 * no unknown member, every required member present, every member of its
 * type and within its bounds. On failure *field names the offending member
 * (NULL when the body itself is wrong), errstr says why, and
 * RW_ERR_INVALID_ARG is returned.
 */
rw_err_t rw_api_check_body(const json_t *body, const rw_api_field_t *fields,
                           size_t n, const char **field, char *errstr,
                           size_t errlen);

/* ---- answers (api_server.c) ----------------------------------------- */

/*
 * Answer with the error document {"error": {"code", "message", "field"}}.
 * code is derived from status (bad_request, unauthorized, forbidden,
 * not_found, conflict, ...); field may be NULL.
 */
void rw_api_fail(rw_api_req_t *rq, unsigned status, const char *field,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Answer status with doc (takes ownership). */
void rw_api_reply(rw_api_req_t *rq, unsigned status, json_t *doc);

/* A query parameter's value, NULL when absent. */
const char *rw_api_query(rw_api_req_t *rq, const char *name);

/*
 * Have the outbox rows a write just committed (runs created, resumed,
 * retried or promoted) published: wakes the server's relay thread and
 * returns at once. A failure there only delays them to the daemons'
 * relays, so it is logged, not answered.
 */
void rw_api_relay(rw_api_req_t *rq);

/*
 * The lag document of GET /api/v1/lag (rw_lag_json of the daemons'
 * groups; a new reference): one measurement per process at a time, each
 * Kafka call bounded to 2 s. A caller arriving while one runs waits for
 * it and gets its result; one arriving within 3 s of the last gets that.
 * The document's interval_s says which interval was measured.
 */
json_t *rw_api_lag(rw_api_t *a, long long interval_s);

/* Row row of res as a JSON object, one member per column, typed by oid. */
json_t *rw_api_row_json(const PGresult *res, int row);
/* Every row of res as an array of such objects. */
json_t *rw_api_rows_json(const PGresult *res);

/* ---- the dashboard's files (generated by api/embed_web.cmake) -------- */

typedef struct rw_api_asset {
    const char *path;  /* "/", "/app.js", ... */
    const char *ctype; /* Content-Type */
    const unsigned char *data;
    size_t len;
} rw_api_asset_t;

extern const rw_api_asset_t rw_api_assets[];
extern const size_t rw_api_assets_count;

/* ---- the server (api_server.c) --------------------------------------- */

/*
 * Start serving on s->api_bind:s->api_port with s->api_threads threads.
 * RW_ERR_CONFIG / RW_ERR_IO as rw_http_start.
 */
rw_err_t rw_api_start(rw_api_t **ap, const rw_settings_t *s, char *errstr,
                      size_t errlen);
/* The port served (the chosen one when started with port 0). */
int rw_api_port(const rw_api_t *a);
/* Stop accepting, finish the requests in hand, free. Accepts NULL. */
void rw_api_stop(rw_api_t *a);

#endif
