/*
 * rw_lagoon: the Lagoon GraphQL client (DESIGN.md section 8).
 *
 * Speaks three operations over HTTP(S) with libcurl + jansson:
 * bulkDeployEnvironmentLatest (trigger a chunk), deploymentsByBulkId (read
 * its deployment rows) and projectByName with aliases (find a bulk by its
 * name after a crash left it in doubt). Every value travels in GraphQL
 * variables; query texts are constants or, for the find, built only from
 * aliases and variable names this module generates (p0, p1, ...).
 * Failures are classified into rw_err_t so that rw_err_class() alone
 * decides whether the caller tries again, and whether a failed bulk
 * deploy may have run anyway (RW_OP_SEND: in doubt).
 *
 * It does not retry on its own (backoff belongs to the caller), except one
 * token re-read and retry after HTTP 401. It does not map statuses onto
 * target states (rw_state does); it only says which Lagoon statuses are
 * terminal and which of those mean success.
 *
 * An rw_lagoon_t keeps one curl easy handle for keep-alive and is NOT
 * thread-safe: use one per thread. The pure request builders and response
 * parsers below are exposed for unit tests and are thread-safe.
 */
#ifndef RW_LAGOON_H
#define RW_LAGOON_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <curl/curl.h>

#include "rw_err.h"

/* Longest bulk id accepted from Lagoon (a uuid needs 36 + NUL). */
#define RW_LAGOON_BULK_ID_MAX 128

/* Most projects (one alias each) asked for in one find-bulk request. */
#define RW_LAGOON_FIND_BULK_MAX_PROJECTS 50
/* Deployments read per environment by rw_lagoon_find_bulk (newest first). */
#define RW_LAGOON_FIND_BULK_DEPLOYMENTS 10

typedef struct rw_lagoon rw_lagoon_t;

typedef struct rw_lagoon_opts {
    const char *url;         /* GraphQL endpoint, required */
    const char *token;       /* bearer token; wins over token_file */
    const char *token_file;  /* read (trimmed) when token is NULL or "" */
    long timeout_ms;         /* whole request; 0 = 30000 */
    long connect_timeout_ms; /* 0 = 5000 */
    const char *ca_file;     /* TLS CA bundle; NULL or "" = system CAs */
    const char *user_agent;  /* NULL or "" = "rollwave/<version>" */
} rw_lagoon_opts_t;

typedef struct rw_lagoon_env {
    const char *project;
    const char *environment;
} rw_lagoon_env_t;

typedef struct rw_lagoon_var {
    const char *name;
    const char *value;
} rw_lagoon_var_t;

typedef struct rw_lagoon_deployment {
    long long id;
    char *name;        /* never NULL; "" when Lagoon sent null */
    char *status;      /* raw Lagoon status, never NULL; "" when null */
    char *project;     /* never NULL: rows without an environment are dropped */
    char *environment; /* never NULL */
    char *route;       /* environment's route URL; "" when null */
    time_t created, started, completed; /* 0 = null */
} rw_lagoon_deployment_t;

typedef struct rw_lagoon_deployments {
    rw_lagoon_deployment_t *rows;
    size_t n;
} rw_lagoon_deployments_t;

typedef enum rw_lagoon_status {
    RW_LAGOON_STATUS_UNKNOWN = 0, /* anything we do not recognise */
    RW_LAGOON_STATUS_NEW,
    RW_LAGOON_STATUS_PENDING,
    RW_LAGOON_STATUS_QUEUED,
    RW_LAGOON_STATUS_RUNNING,
    RW_LAGOON_STATUS_COMPLETE,
    RW_LAGOON_STATUS_FAILED,
    RW_LAGOON_STATUS_ERROR,
    RW_LAGOON_STATUS_CANCELLED,
} rw_lagoon_status_t;

/* The exact query texts sent to Lagoon. */
extern const char rw_lagoon_bulk_query[];
extern const char rw_lagoon_deployments_query[];

/*
 * curl_global_init, exactly once per process (safe to call from several
 * threads). rw_lagoon_new calls it; a program may call it earlier, before
 * it starts threads, as libcurl recommends.
 */
rw_err_t rw_lagoon_global_init(char *errstr, size_t errlen);

/*
 * New client. Copies everything it needs from opts. Fails with
 * RW_ERR_CONFIG when there is no url or no token (neither given nor
 * readable from token_file).
 */
rw_err_t rw_lagoon_new(rw_lagoon_t **lcp, const rw_lagoon_opts_t *opts,
                       char *errstr, size_t errlen);
/* Accepts NULL. */
void rw_lagoon_destroy(rw_lagoon_t *lc);

/*
 * One bulkDeployEnvironmentLatest call for n_envs (>= 1) environments.
 * On success bulk_id holds the id Lagoon generated. Build variables
 * (vars, may be NULL when n_vars is 0) are passed through as given, e.g.
 * {"LAGOON_VARIABLES_ONLY", "true"} for a variables-only redeploy.
 */
rw_err_t rw_lagoon_bulk_deploy(rw_lagoon_t *lc, const char *bulk_name,
                               const rw_lagoon_env_t *envs, size_t n_envs,
                               const rw_lagoon_var_t *vars, size_t n_vars,
                               char *bulk_id, size_t bulk_id_len, char *errstr,
                               size_t errlen);

/*
 * The deployment rows of a bulk (possibly none yet). On success *out is
 * set and owned by the caller: free it with rw_lagoon_deployments_free().
 * On failure *out is NULL.
 */
rw_err_t rw_lagoon_deployments_by_bulk_id(rw_lagoon_t *lc, const char *bulk_id,
                                          rw_lagoon_deployments_t **out,
                                          char *errstr, size_t errlen);

/*
 * To be removed once callers use rw_err_class(err, RW_OP_SEND), which is
 * the rule. Until then this keeps the meaning its caller was written for:
 * true when the last request left us and no answer came back (lost
 * connection, timeout) or a gateway answered 502/504. The rule is wider:
 * it also treats every 5xx, an HTTP 408 and an unreadable 200 as in doubt.
 * A caller switching to it must bound its in-doubt attempts, or a Lagoon
 * answering 500 to every call keeps a chunk in doubt for ever.
 */
bool rw_lagoon_in_doubt(const rw_lagoon_t *lc);

/* Accepts NULL. */
void rw_lagoon_deployments_free(rw_lagoon_deployments_t *d);

/*
 * Does a bulk named bulk_name exist among the recent deployments of envs?
 * For a chunk left in "triggering" by a crash between Lagoon accepting the
 * bulk and our commit: adopt the bulk when found, trigger again otherwise.
 *
 * One request per RW_LAGOON_FIND_BULK_MAX_PROJECTS distinct projects of
 * envs (usually one): projectByName per project, its environments and
 * their newest RW_LAGOON_FIND_BULK_DEPLOYMENTS deployments. *found is true,
 * with bulk_id set, when a deployment of one of envs (project and
 * environment both match) has bulkName == bulk_name; false (bulk_id "")
 * otherwise. A project Lagoon does not know (projectByName null) simply
 * has no match; it is not an error.
 *
 * Errors as for the other operations. Besides: RW_ERR_CONFLICT when
 * deployments carrying bulk_name name different bulk ids (the bulk was
 * triggered twice already: the caller must not pick one blindly), and
 * RW_ERR_LAGOON_GRAPHQL when Lagoon answered part of the request with
 * errors and nothing matched (a project we could not read may hold the
 * bulk, so "not found" would be a guess). A match wins over errors in
 * other parts of the answer: bulk names are unique per run, chunk and
 * attempt, so a matching row is proof enough.
 *
 * found=false means "no deployment row visible yet", not "never
 * triggered": Lagoon creates the rows asynchronously after it accepted
 * the mutation (the simulator after its rows-delay-ms; real Lagoon
 * through its task queue, usually within seconds, longer when the queue
 * is backed up), and an environment Lagoon refused never gets one. The
 * caller must trust a "not found" only once the bulk call that may have
 * succeeded is older than that settle time plus the request timeout,
 * and otherwise ask again later. More than
 * RW_LAGOON_FIND_BULK_DEPLOYMENTS newer deployments on every environment
 * of the chunk would also hide the bulk.
 */
rw_err_t rw_lagoon_find_bulk(rw_lagoon_t *lc, const char *bulk_name,
                             const rw_lagoon_env_t *envs, size_t n_envs,
                             char *bulk_id, size_t bulk_id_len, bool *found,
                             char *errstr, size_t errlen);

/*
 * The row with the highest id for project + environment (Lagoon keeps
 * older deployments of the same environment), or NULL. Borrowed from d.
 */
const rw_lagoon_deployment_t *
rw_lagoon_deployments_find(const rw_lagoon_deployments_t *d,
                           const char *project, const char *environment);

/* Most deployments (one alias each) asked for in one build-log request. */
#define RW_LAGOON_BUILD_LOGS_MAX 50

/* Lagoon's buildLog when its log storage failed: a string, not an error. */
#define RW_LAGOON_LOG_ERROR_PREFIX "There was an error loading the logs:"

/* One deployment whose build log is wanted (strings are the caller's). */
typedef struct rw_lagoon_log_req {
    const char *project;
    const char *environment;
    const char *name; /* lagoon-build-xxxxxx */
} rw_lagoon_log_req_t;

typedef enum rw_lagoon_log_state {
    RW_LAGOON_LOG_NONE = 0,    /* no such deployment, or no log yet */
    RW_LAGOON_LOG_OK,          /* text is the log */
    RW_LAGOON_LOG_UNAVAILABLE, /* Lagoon could not read it: text says why */
} rw_lagoon_log_state_t;

typedef struct rw_lagoon_build_log {
    rw_lagoon_log_state_t state;
    char *text; /* malloc'd, NUL-terminated; NULL for NONE */
    size_t len;
} rw_lagoon_build_log_t;

/*
 * The buildLog of n (1 .. RW_LAGOON_BUILD_LOGS_MAX) deployments in one
 * request: deploymentByName(input: {project, environment, name}) aliased
 * d0, d1, ... with every value in variables. out[i] (n entries, zeroed by
 * the caller) answers reqs[i]; free the texts with
 * rw_lagoon_build_logs_clear() whatever the outcome. Errors as for the
 * other operations; a part of the answer that is null with a GraphQL
 * error leaves that entry NONE, and only an answer with no usable part at
 * all is RW_ERR_LAGOON_GRAPHQL. Logs may be large: the whole answer is
 * bounded by the client's response limit (32 MiB).
 */
rw_err_t rw_lagoon_build_logs(rw_lagoon_t *lc, const rw_lagoon_log_req_t *reqs,
                              size_t n, rw_lagoon_build_log_t *out,
                              char *errstr, size_t errlen);
/* Frees the texts of n entries and zeroes them; accepts NULL. */
void rw_lagoon_build_logs_clear(rw_lagoon_build_log_t *logs, size_t n);

/* Is this buildLog Lagoon's "error loading the logs" string? */
bool rw_lagoon_log_is_error(const char *text, size_t len);

/*
 * Lagoon statuses, from one table: the basis of rw_target_from_lagoon
 * (rw_state), which is what turns a poll result into a target state.
 * Case-insensitive; NULL or unrecognised gives RW_LAGOON_STATUS_UNKNOWN.
 */
rw_lagoon_status_t rw_lagoon_status_parse(const char *status);
/* Lower-case Lagoon name, "unknown" for UNKNOWN. */
const char *rw_lagoon_status_name(rw_lagoon_status_t st);
/* complete, failed, error, cancelled. UNKNOWN is not terminal. */
bool rw_lagoon_status_is_terminal(rw_lagoon_status_t st);
/* complete only. */
bool rw_lagoon_status_is_success(rw_lagoon_status_t st);

/*
 * Pure helpers, exposed for unit tests.
 *
 * Request bodies ({"query": ..., "variables": ...}) as malloc'd JSON
 * text, freed by the caller; NULL on invalid arguments (NULL strings,
 * n_envs 0) or out of memory.
 */
char *rw_lagoon_bulk_request_json(const char *bulk_name,
                                  const rw_lagoon_env_t *envs, size_t n_envs,
                                  const rw_lagoon_var_t *vars, size_t n_vars);
char *rw_lagoon_deployments_request_json(const char *bulk_id);
/*
 * The find-bulk request for n_projects (1 ..
 * RW_LAGOON_FIND_BULK_MAX_PROJECTS) distinct project names: alias p<i>
 * reads projects[i] through variable $p<i>; $limit caps the deployments
 * per environment (>= 1).
 */
char *rw_lagoon_find_bulk_request_json(const char *const *projects,
                                       size_t n_projects, int limit);

/* The build-log request for n (1 .. RW_LAGOON_BUILD_LOGS_MAX) deployments. */
char *rw_lagoon_build_logs_request_json(const rw_lagoon_log_req_t *reqs,
                                        size_t n);

/*
 * Classify the transport outcome. curl: resolve, connect or TLS handshake
 * failures -> LAGOON_CONNECT (the request never left), timeout ->
 * LAGOON_TIMEOUT, a malformed URL -> CONFIG, any other failure ->
 * LAGOON_NETWORK (lost after the request may have gone out). HTTP: 2xx ->
 * RW_OK, 401/403 -> LAGOON_AUTH, 408 -> LAGOON_TIMEOUT, 429 ->
 * LAGOON_RATE_LIMITED, 5xx -> LAGOON_SERVER, other 3xx/4xx ->
 * LAGOON_REJECTED, anything else -> LAGOON_PROTOCOL.
 */
rw_err_t rw_lagoon_classify(CURLcode cc, long http_status);

/*
 * A failed curl transfer (cc != CURLE_OK) given the request bytes curl
 * sent (CURLINFO_REQUEST_SIZE): as rw_lagoon_classify, except that a
 * NETWORK or TIMEOUT failure with nothing sent is LAGOON_CONNECT, since
 * Lagoon cannot have run a request it never received. RW_OK for CURLE_OK.
 */
rw_err_t rw_lagoon_classify_transport(CURLcode cc, long bytes_sent);

/*
 * Parse a response body given its HTTP status. A non-2xx status gives its
 * rw_lagoon_classify() error (errstr quotes the first GraphQL error message
 * when the body has one; a 400 with one is LAGOON_GRAPHQL); HTTP 200 with
 * "errors" and no usable data gives LAGOON_GRAPHQL with the first message
 * (Lagoon refused it); anything unparseable or of the wrong shape, such as
 * data without a bulk id, gives LAGOON_PROTOCOL (for a bulk deploy: in
 * doubt, Lagoon may have run it).
 */
rw_err_t rw_lagoon_parse_bulk_response(long http_status, const char *body,
                                       char *bulk_id, size_t len, char *errstr,
                                       size_t errlen);
rw_err_t rw_lagoon_parse_deployments_response(long http_status,
                                              const char *body,
                                              rw_lagoon_deployments_t **out,
                                              char *errstr, size_t errlen);
/*
 * The answer to rw_lagoon_find_bulk_request_json(projects, n_projects, ..)
 * searched for bulk_name among the deployments of envs whose project is
 * one of projects; *found and bulk_id as for rw_lagoon_find_bulk, with the
 * same RW_ERR_CONFLICT and partial-error rules.
 */
rw_err_t rw_lagoon_parse_find_bulk_response(
    long http_status, const char *body, const char *const *projects,
    size_t n_projects, const rw_lagoon_env_t *envs, size_t n_envs,
    const char *bulk_name, char *bulk_id, size_t bulk_id_len, bool *found,
    char *errstr, size_t errlen);

/* The answer to rw_lagoon_build_logs_request_json(.., n) into out[n]. */
rw_err_t rw_lagoon_parse_build_logs_response(long http_status, const char *body,
                                             size_t n,
                                             rw_lagoon_build_log_t *out,
                                             char *errstr, size_t errlen);

/*
 * "YYYY-MM-DD HH:MM:SS" (UTC) or ISO 8601 "YYYY-MM-DDTHH:MM:SS[.frac]"
 * followed by "Z", "+HH:MM", "-HH:MM", "+HHMM", "+HH" or nothing (UTC).
 * Fractions are dropped. RW_ERR_INVALID_ARG on anything else. The rules
 * are rw_time_parse's default ones (month lengths checked, second 60
 * accepted).
 */
rw_err_t rw_lagoon_parse_time(const char *s, time_t *out);

#endif
