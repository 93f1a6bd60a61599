/*
 * rw_lagoon: Lagoon GraphQL client over libcurl + jansson.
 *
 * Builds the request bodies (values only in variables; query text either
 * constant or, for the find-bulk query, assembled from generated aliases),
 * posts them on one keep-alive curl handle per client, and
 * turns HTTP status, curl result and GraphQL errors into rw_err_t. It does
 * not retry (beyond one token re-read after HTTP 401), throttle or map
 * statuses to target states: callers own those decisions. The token is
 * never logged and is scrubbed from every error text this module writes.
 */
#include "rw_lagoon.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "rw_log.h"
#include "rw_time.h"

#define COMP "lagoon"

/* A deployments answer for one chunk is a few KiB; anything near this is
 * not Lagoon talking to us. */
#define MAX_RESPONSE_BYTES   (32u * 1024u * 1024u)
#define MAX_TOKEN_FILE_BYTES 65536
/* GraphQL error messages are quoted into errstr; long stack-trace-like
 * messages are cut here so they cannot crowd out the rest. */
#define MAX_GQL_MESSAGE            300
#define DEFAULT_TIMEOUT_MS         30000L
#define DEFAULT_CONNECT_TIMEOUT_MS 5000L

const char rw_lagoon_bulk_query[] =
    "mutation ($input: BulkDeploymentLatestInput!) "
    "{ bulkDeployEnvironmentLatest(input: $input) }";

const char rw_lagoon_deployments_query[] =
    "query ($bulkId: String!) { deploymentsByBulkId(bulkId: $bulkId) "
    "{ id name status created started completed "
    "environment { name route project { name } } } }";

struct rw_lagoon {
    /* What rw_lagoon_in_doubt() reported before rw_err_class() existed:
     * the request left and no answer came back, or a gateway 502/504. */
    bool in_doubt_compat;
    CURL *curl;
    char *url;
    char *token;
    char *token_file; /* NULL when the token was given directly */
    char *ca_file;
    char *user_agent;
    long timeout_ms;
    long connect_timeout_ms;
    char curl_err[CURL_ERROR_SIZE];
    char *resp;
    size_t resp_len, resp_cap;
    bool resp_too_big;
};

/* ---------------------------------------------------------------- init */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init_once(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

rw_err_t rw_lagoon_global_init(char *errstr, size_t errlen)
{
    pthread_once(&global_once, global_init_once);
    if (global_rc != CURLE_OK)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "curl_global_init failed: %s",
                          curl_easy_strerror(global_rc));
    return RW_OK;
}

/* ------------------------------------------------------------- helpers */

/* Overwrite every occurrence of secret in s with '*' (same length, so the
 * buffer never grows). */
static void scrub(char *s, const char *secret)
{
    size_t n;
    char *p;

    if (!s || !secret || !*secret)
        return;
    n = strlen(secret);
    while ((p = strstr(s, secret)) != NULL)
        memset(p, '*', n);
}

static char *dup_or_null(const char *s)
{
    return (s && *s) ? strdup(s) : NULL;
}

static void wipe_free(char *s)
{
    if (!s)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* Read and trim the token file; *out is malloc'd on success. */
static rw_err_t read_token_file(const char *path, char **out, char *errstr,
                                size_t errlen)
{
    rw_err_t err = RW_OK;
    char *buf = NULL;
    FILE *f = NULL;
    size_t n, start, end;

    *out = NULL;
    f = fopen(path, "r");
    if (!f) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "cannot open lagoon token file %s: %s", path,
                         strerror(errno));
        goto out;
    }
    buf = malloc(MAX_TOKEN_FILE_BYTES + 1);
    if (!buf) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    n = fread(buf, 1, MAX_TOKEN_FILE_BYTES, f);
    if (ferror(f)) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "cannot read lagoon token file %s", path);
        goto out;
    }
    buf[n] = '\0';
    start = 0;
    while (start < n && isspace((unsigned char)buf[start]))
        start++;
    end = n;
    while (end > start && isspace((unsigned char)buf[end - 1]))
        end--;
    if (end == start) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "lagoon token file %s is empty", path);
        goto out;
    }
    *out = strndup(buf + start, end - start);
    if (!*out)
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
out:
    if (buf) {
        explicit_bzero(buf, MAX_TOKEN_FILE_BYTES + 1);
        free(buf);
    }
    if (f)
        fclose(f);
    return err;
}

/* ------------------------------------------------------------ requests */

static char *dump_request(const char *query, json_t *variables)
{
    json_t *root = NULL;
    char *text = NULL;

    if (!variables)
        return NULL;
    root = json_object();
    if (!root)
        goto out;
    if (json_object_set_new(root, "query", json_string(query)) != 0)
        goto out;
    if (json_object_set(root, "variables", variables) != 0)
        goto out;
    text = json_dumps(root, JSON_COMPACT);
out:
    json_decref(root);
    return text;
}

char *rw_lagoon_bulk_request_json(const char *bulk_name,
                                  const rw_lagoon_env_t *envs, size_t n_envs,
                                  const rw_lagoon_var_t *vars, size_t n_vars)
{
    json_t *variables = NULL, *input, *bvars, *jenvs;
    char *text = NULL;

    if (!bulk_name || !envs || n_envs == 0 || (n_vars > 0 && !vars))
        return NULL;

    variables = json_object();
    input = json_object();
    bvars = json_array();
    jenvs = json_array();
    if (!variables || !input || !bvars || !jenvs) {
        json_decref(input);
        json_decref(bvars);
        json_decref(jenvs);
        goto out;
    }
    /* _new steals the reference even on failure, so each object below has
     * exactly one owner from here on. */
    if (json_object_set_new(variables, "input", input) != 0) {
        json_decref(bvars);
        json_decref(jenvs);
        goto out;
    }
    if (json_object_set_new(input, "name", json_string(bulk_name)) != 0) {
        json_decref(bvars);
        json_decref(jenvs);
        goto out;
    }
    if (json_object_set_new(input, "buildVariables", bvars) != 0) {
        json_decref(jenvs);
        goto out;
    }
    if (json_object_set_new(input, "environments", jenvs) != 0)
        goto out;

    for (size_t i = 0; i < n_vars; i++) {
        json_t *v;

        if (!vars[i].name || !vars[i].value)
            goto out;
        /* json_string() refuses invalid UTF-8: the pack fails, we return
         * NULL rather than send something Lagoon would misread. */
        v = json_pack("{s:s, s:s}", "name", vars[i].name, "value",
                      vars[i].value);
        if (json_array_append_new(bvars, v) != 0)
            goto out;
    }
    for (size_t i = 0; i < n_envs; i++) {
        json_t *e;

        if (!envs[i].project || !envs[i].environment)
            goto out;
        e = json_pack("{s:{s:s, s:{s:s}}}", "environment", "name",
                      envs[i].environment, "project", "name", envs[i].project);
        if (json_array_append_new(jenvs, e) != 0)
            goto out;
    }
    text = dump_request(rw_lagoon_bulk_query, variables);
out:
    json_decref(variables);
    return text;
}

char *rw_lagoon_deployments_request_json(const char *bulk_id)
{
    json_t *variables;
    char *text;

    if (!bulk_id || !*bulk_id)
        return NULL;
    variables = json_pack("{s:s}", "bulkId", bulk_id);
    text = dump_request(rw_lagoon_deployments_query, variables);
    json_decref(variables);
    return text;
}

/*
 * The find-bulk query: one aliased projectByName per distinct project.
 *
 * Why this shape: the real API offers no "deployments by bulk name" and
 * no lookup of an environment by project *name* (environmentByName wants
 * the numeric project id, which we do not keep), so projectByName ->
 * environments -> deployments(limit) is the one path that needs only
 * what a batch message carries, and aliases put a whole chunk into one
 * round trip. Its cost: Lagoon returns every (non-deleted) environment of
 * each project and runs one deployments query per environment, so a
 * project with many environments costs that many small queries; limit
 * keeps each of them to the newest few rows. rollwave instances are one
 * environment of a mostly single-environment project, so this stays near
 * one row set per target.
 *
 * Only aliases and variable names we generate (p<i>) go into the text;
 * project names travel in variables, so no name can change the query.
 */
static const char find_bulk_selection[] =
    "{ name environments { name deployments(limit: $limit) "
    "{ id name status created bulkId bulkName } } }";

char *rw_lagoon_find_bulk_request_json(const char *const *projects,
                                       size_t n_projects, int limit)
{
    json_t *variables = NULL;
    char *query = NULL, *text = NULL;
    size_t qlen = 0;
    FILE *q = NULL;

    if (!projects || n_projects == 0 ||
        n_projects > RW_LAGOON_FIND_BULK_MAX_PROJECTS || limit < 1)
        return NULL;
    variables = json_object();
    if (!variables)
        goto out;
    if (json_object_set_new(variables, "limit", json_integer(limit)) != 0)
        goto out;
    q = open_memstream(&query, &qlen);
    if (!q)
        goto out;
    fputs("query ($limit: Int!", q);
    for (size_t i = 0; i < n_projects; i++) {
        char var[24]; /* "p" and any size_t */

        if (!projects[i] || !*projects[i])
            goto out;
        snprintf(var, sizeof(var), "p%zu", i);
        /* json_string() refuses invalid UTF-8: NULL rather than a name
         * Lagoon would read differently. */
        if (json_object_set_new(variables, var, json_string(projects[i])) != 0)
            goto out;
        fprintf(q, ", $%s: String!", var);
    }
    fputs(") {", q);
    for (size_t i = 0; i < n_projects; i++)
        fprintf(q, " p%zu: projectByName(name: $p%zu) %s", i, i,
                find_bulk_selection);
    fputs(" }", q);
    if (fclose(q) != 0) {
        q = NULL;
        goto out;
    }
    q = NULL;
    text = dump_request(query, variables);
out:
    if (q)
        fclose(q);
    free(query);
    json_decref(variables);
    return text;
}

/*
 * Build logs: deploymentByName per deployment, aliased d<i> and reading
 * input variable $d<i>. Targets keep project, environment and deployment
 * name (not Lagoon's numeric id or remoteId), and this is the root field
 * that takes exactly those; aliases put a chunk's logs into one round
 * trip.
 */
char *rw_lagoon_build_logs_request_json(const rw_lagoon_log_req_t *reqs,
                                        size_t n)
{
    json_t *variables = NULL;
    char *query = NULL, *text = NULL;
    size_t qlen = 0;
    FILE *q = NULL;

    if (!reqs || n == 0 || n > RW_LAGOON_BUILD_LOGS_MAX)
        return NULL;
    variables = json_object();
    if (!variables)
        goto out;
    q = open_memstream(&query, &qlen);
    if (!q)
        goto out;
    fputs("query (", q);
    for (size_t i = 0; i < n; i++) {
        char var[24]; /* "d" and any size_t */

        if (!reqs[i].project || !reqs[i].environment || !reqs[i].name)
            goto out;
        snprintf(var, sizeof(var), "d%zu", i);
        /* json_pack fails on invalid UTF-8: NULL rather than a name Lagoon
         * would read differently. */
        if (json_object_set_new(variables, var,
                                json_pack("{s:s, s:s, s:s}", "project",
                                          reqs[i].project, "environment",
                                          reqs[i].environment, "name",
                                          reqs[i].name)) != 0)
            goto out;
        fprintf(q, "%s$%s: DeploymentByNameInput!", i ? ", " : "", var);
    }
    fputs(") {", q);
    for (size_t i = 0; i < n; i++)
        fprintf(q, " d%zu: deploymentByName(input: $d%zu) { name buildLog }", i,
                i);
    fputs(" }", q);
    if (fclose(q) != 0) {
        q = NULL;
        goto out;
    }
    q = NULL;
    text = dump_request(query, variables);
out:
    if (q)
        fclose(q);
    free(query);
    json_decref(variables);
    return text;
}

/* ------------------------------------------------------ classification */

/*
 * curl failures that happen before the request can leave us: name
 * resolution, TCP connect and the TLS handshake (including certificate
 * checks). Lagoon cannot have seen a request that failed this way.
 */
static const CURLcode connect_codes[] = {
    CURLE_COULDNT_RESOLVE_PROXY,
    CURLE_COULDNT_RESOLVE_HOST,
    CURLE_COULDNT_CONNECT,
    CURLE_SSL_CONNECT_ERROR,
    CURLE_PEER_FAILED_VERIFICATION,
    CURLE_SSL_CERTPROBLEM,
    CURLE_SSL_CIPHER,
    CURLE_SSL_CACERT_BADFILE,
    CURLE_SSL_ISSUER_ERROR,
    CURLE_SSL_PINNEDPUBKEYNOTMATCH,
    CURLE_SSL_INVALIDCERTSTATUS,
};

rw_err_t rw_lagoon_classify(CURLcode cc, long http_status)
{
    switch (cc) {
    case CURLE_OK:
        break;
    case CURLE_OPERATION_TIMEDOUT:
        return RW_ERR_LAGOON_TIMEOUT;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        /* Retrying a bad URL can never help: it is configuration. */
        return RW_ERR_CONFIG;
    default:
        for (size_t i = 0; i < sizeof(connect_codes) / sizeof(*connect_codes);
             i++)
            if (cc == connect_codes[i])
                return RW_ERR_LAGOON_CONNECT;
        /* Receive/send errors, GOT_NOTHING, PARTIAL_FILE, ...: the
         * request may have reached Lagoon. */
        return RW_ERR_LAGOON_NETWORK;
    }
    if (http_status >= 200 && http_status <= 299)
        return RW_OK;
    if (http_status == 401 || http_status == 403)
        return RW_ERR_LAGOON_AUTH;
    if (http_status == 408)
        return RW_ERR_LAGOON_TIMEOUT;
    if (http_status == 429)
        return RW_ERR_LAGOON_RATE_LIMITED;
    if (http_status >= 500 && http_status <= 599)
        return RW_ERR_LAGOON_SERVER;
    /* A redirect we do not follow, or a request the HTTP layer refused:
     * it never reached the GraphQL resolver. */
    if (http_status >= 300 && http_status <= 499)
        return RW_ERR_LAGOON_REJECTED;
    return RW_ERR_LAGOON_PROTOCOL;
}

rw_err_t rw_lagoon_classify_transport(CURLcode cc, long bytes_sent)
{
    rw_err_t err = rw_lagoon_classify(cc, 0);

    if (cc == CURLE_OK)
        return RW_OK;
    /* Whatever curl reports, a request of which no byte left us cannot
     * have run: a connect timeout is CONNECT, not an in-doubt TIMEOUT. */
    if (bytes_sent <= 0 &&
        (err == RW_ERR_LAGOON_NETWORK || err == RW_ERR_LAGOON_TIMEOUT))
        err = RW_ERR_LAGOON_CONNECT;
    return err;
}

/* ------------------------------------------------------------- parsing */

bool rw_lagoon_log_is_error(const char *text, size_t len)
{
    size_t plen = sizeof(RW_LAGOON_LOG_ERROR_PREFIX) - 1;

    if (!text)
        return false;
    /* Lagoon returns exactly this prefix and the storage's reason; a real
     * log starts with the build's banner, never with it. */
    while (len > 0 &&
           (*text == ' ' || *text == '\n' || *text == '\r' || *text == '\t')) {
        text++;
        len--;
    }
    return len >= plen && memcmp(text, RW_LAGOON_LOG_ERROR_PREFIX, plen) == 0;
}

void rw_lagoon_build_logs_clear(rw_lagoon_build_log_t *logs, size_t n)
{
    for (size_t i = 0; logs && i < n; i++) {
        free(logs[i].text);
        memset(&logs[i], 0, sizeof(logs[i]));
    }
}

/* First GraphQL error message of root, truncated, or NULL. */
static const char *first_gql_error(json_t *root, char *buf, size_t len)
{
    json_t *errors, *first, *msg;
    const char *text;

    if (!json_is_object(root))
        return NULL;
    errors = json_object_get(root, "errors");
    if (!json_is_array(errors) || json_array_size(errors) == 0)
        return NULL;
    first = json_array_get(errors, 0);
    msg = json_is_object(first) ? json_object_get(first, "message") : NULL;
    text = json_is_string(msg) ? json_string_value(msg)
                               : "(error without message)";
    snprintf(buf, len, "%.*s", MAX_GQL_MESSAGE, text);
    /* Lagoon's text goes into Postgres: never half a character */
    if (strlen(text) > strlen(buf))
        rw_utf8_trim_partial(buf);
    return buf;
}

/*
 * Shared answer handling: HTTP status, JSON, top-level object. On RW_OK,
 * *rootp holds the parsed document (caller decrefs); gql (MAX_GQL_MESSAGE
 * + 1 bytes) holds the first GraphQL error message or "".
 */
static rw_err_t load_answer(long http_status, const char *body,
                            const char *field, json_t **rootp, char *gql,
                            char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *root = NULL;
    json_error_t jerr;
    const char *msg;

    *rootp = NULL;
    gql[0] = '\0';
    if (body && *body)
        root = json_loads(body, 0, &jerr);
    msg = first_gql_error(root, gql, MAX_GQL_MESSAGE + 1);

    err = rw_lagoon_classify(CURLE_OK, http_status);
    if (err) {
        /* Some GraphQL servers answer query validation failures with 400
         * and an errors array: that is a GraphQL error, not noise. */
        if (http_status == 400 && msg)
            err = RW_ERR_LAGOON_GRAPHQL;
        if (msg)
            rw_err_set(errstr, errlen, err, "%s: HTTP %ld: %s", field,
                       http_status, msg);
        else
            rw_err_set(errstr, errlen, err, "%s: HTTP %ld", field, http_status);
        goto out;
    }
    if (!body || !*body) {
        err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                         "%s: empty response body", field);
        goto out;
    }
    if (!root) {
        err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                         "%s: invalid JSON (line %d: %s)", field, jerr.line,
                         jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                         "%s: response is not a JSON object", field);
        goto out;
    }
out:
    if (err)
        json_decref(root);
    else
        *rootp = root;
    return err;
}

/*
 * Shared envelope handling: on RW_OK, *rootp holds the parsed document
 * (caller decrefs) and *valuep the borrowed, non-null data.<field>.
 */
static rw_err_t parse_envelope(long http_status, const char *body,
                               const char *field, json_t **rootp,
                               json_t **valuep, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *root = NULL, *data, *value;
    char gql[MAX_GQL_MESSAGE + 1];

    *rootp = NULL;
    *valuep = NULL;
    err = load_answer(http_status, body, field, &root, gql, errstr, errlen);
    if (err)
        goto out;
    data = json_object_get(root, "data");
    value = json_is_object(data) ? json_object_get(data, field) : NULL;
    if (value && !json_is_null(value)) {
        *valuep = value;
        goto out;
    }
    if (gql[0]) {
        err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_GRAPHQL, "%s: %s", field,
                         gql);
        goto out;
    }
    err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                     "%s: response has no data.%s", field, field);
out:
    if (err)
        json_decref(root);
    else
        *rootp = root;
    return err;
}

rw_err_t rw_lagoon_parse_bulk_response(long http_status, const char *body,
                                       char *bulk_id, size_t len, char *errstr,
                                       size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *root = NULL, *value = NULL;
    const char *id;

    if (bulk_id && len)
        bulk_id[0] = '\0';
    err = parse_envelope(http_status, body, "bulkDeployEnvironmentLatest",
                         &root, &value, errstr, errlen);
    if (err)
        goto out;
    id = json_string_value(value);
    if (!id || !*id) {
        err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                         "bulkDeployEnvironmentLatest: bulk id is not a "
                         "non-empty string");
        goto out;
    }
    if (!bulk_id || strlen(id) >= len) {
        err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                         "bulkDeployEnvironmentLatest: bulk id of %zu bytes "
                         "does not fit",
                         strlen(id));
        goto out;
    }
    memcpy(bulk_id, id, strlen(id) + 1);
out:
    json_decref(root);
    return err;
}

rw_err_t rw_lagoon_parse_build_logs_response(long http_status, const char *body,
                                             size_t n,
                                             rw_lagoon_build_log_t *out,
                                             char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *root = NULL, *data;
    char gql[MAX_GQL_MESSAGE + 1];
    size_t usable = 0;

    err = load_answer(http_status, body, "deploymentByName", &root, gql, errstr,
                      errlen);
    if (err)
        goto out;
    data = json_object_get(root, "data");
    for (size_t i = 0; json_is_object(data) && i < n; i++) {
        char alias[24];
        json_t *dep, *log;

        snprintf(alias, sizeof(alias), "d%zu", i);
        dep = json_object_get(data, alias);
        if (!json_is_object(dep))
            continue; /* null: no such deployment, or its part failed */
        usable++;
        log = json_object_get(dep, "buildLog");
        if (!json_is_string(log))
            continue;
        out[i].len = json_string_length(log);
        out[i].text = malloc(out[i].len + 1);
        if (!out[i].text) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
        memcpy(out[i].text, json_string_value(log), out[i].len + 1);
        out[i].state = rw_lagoon_log_is_error(out[i].text, out[i].len)
                           ? RW_LAGOON_LOG_UNAVAILABLE
                           : RW_LAGOON_LOG_OK;
    }
    if (usable == 0 && gql[0]) {
        err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_GRAPHQL,
                         "deploymentByName: %s", gql);
        goto out;
    }
    if (!json_is_object(data))
        err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                         "deploymentByName: response has no data");
out:
    json_decref(root);
    return err;
}

rw_err_t rw_lagoon_parse_time(const char *s, time_t *out)
{
    long long ms = 0;

    if (!s || !out)
        return RW_ERR_INVALID_ARG;
    /* Lagoon writes "YYYY-MM-DD HH:MM:SS" (UTC) or ISO 8601: rw_time's
     * default form covers both */
    if (rw_time_parse(s, 0, &ms, NULL, 0) != RW_OK)
        return RW_ERR_INVALID_ARG;
    *out = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
    return RW_OK;
}

/* A date field: null or missing is 0; an unreadable one is also 0 (with a
 * warning) so one odd date cannot stall a chunk's terminal status. */
static time_t row_time(json_t *row, const char *key, long long id)
{
    json_t *v = json_object_get(row, key);
    char q[96];
    time_t t = 0;

    if (!json_is_string(v))
        return 0;
    if (rw_lagoon_parse_time(json_string_value(v), &t) != RW_OK) {
        rw_warn(COMP, "event=bad_date deployment=%lld field=%s value=%s", id,
                key, rw_log_quote(q, sizeof(q), json_string_value(v)));
        return 0;
    }
    return t;
}

static char *row_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);

    return strdup(json_is_string(v) ? json_string_value(v) : "");
}

static void free_row(rw_lagoon_deployment_t *r)
{
    free(r->name);
    free(r->status);
    free(r->project);
    free(r->environment);
    free(r->route);
}

void rw_lagoon_deployments_free(rw_lagoon_deployments_t *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        free_row(&d->rows[i]);
    free(d->rows);
    free(d);
}

/* Fill r from one row object. RW_ERR_NOT_FOUND = skip the row. */
static rw_err_t parse_row(json_t *row, rw_lagoon_deployment_t *r, char *errstr,
                          size_t errlen)
{
    json_t *id, *env, *envname, *project, *projname;
    const char *idstr;
    char *end;

    memset(r, 0, sizeof(*r));
    if (!json_is_object(row))
        return rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                          "deploymentsByBulkId: row is not an object");
    id = json_object_get(row, "id");
    if (json_is_integer(id)) {
        r->id = json_integer_value(id);
    } else if (json_is_string(id)) {
        /* GraphQL ID scalars may come as strings. */
        idstr = json_string_value(id);
        errno = 0;
        r->id = strtoll(idstr, &end, 10);
        if (errno || end == idstr || *end)
            return rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                              "deploymentsByBulkId: row id is not a number");
    } else {
        return rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                          "deploymentsByBulkId: row without an id");
    }

    env = json_object_get(row, "environment");
    envname = json_is_object(env) ? json_object_get(env, "name") : NULL;
    project = json_is_object(env) ? json_object_get(env, "project") : NULL;
    projname =
        json_is_object(project) ? json_object_get(project, "name") : NULL;
    /* A deployment whose environment was deleted (or is hidden from this
     * token) cannot be mapped back to a target: skip it. */
    if (!json_is_string(envname) || !json_is_string(projname))
        return RW_ERR_NOT_FOUND;

    r->project = strdup(json_string_value(projname));
    r->environment = strdup(json_string_value(envname));
    /* Lagoon's route is null until the environment has one */
    r->route = row_str(env, "route");
    r->name = row_str(row, "name");
    r->status = row_str(row, "status");
    if (!r->project || !r->environment || !r->route || !r->name || !r->status) {
        free_row(r);
        memset(r, 0, sizeof(*r));
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    }
    r->created = row_time(row, "created", r->id);
    r->started = row_time(row, "started", r->id);
    r->completed = row_time(row, "completed", r->id);
    return RW_OK;
}

rw_err_t rw_lagoon_parse_deployments_response(long http_status,
                                              const char *body,
                                              rw_lagoon_deployments_t **out,
                                              char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *root = NULL, *value = NULL;
    rw_lagoon_deployments_t *d = NULL;
    size_t n, skipped = 0;

    *out = NULL;
    err = parse_envelope(http_status, body, "deploymentsByBulkId", &root,
                         &value, errstr, errlen);
    if (err)
        goto out;
    if (!json_is_array(value)) {
        err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                         "deploymentsByBulkId: not a list");
        goto out;
    }
    d = calloc(1, sizeof(*d));
    n = json_array_size(value);
    if (d && n > 0)
        d->rows = calloc(n, sizeof(*d->rows));
    if (!d || (n > 0 && !d->rows)) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        rw_err_t rerr =
            parse_row(json_array_get(value, i), &d->rows[d->n], errstr, errlen);
        if (rerr == RW_ERR_NOT_FOUND) {
            skipped++;
            continue;
        }
        if (rerr) {
            err = rerr;
            goto out;
        }
        d->n++;
    }
    if (skipped)
        rw_debug(COMP, "event=rows_skipped reason=no_environment count=%zu",
                 skipped);
out:
    json_decref(root);
    if (err)
        rw_lagoon_deployments_free(d);
    else
        *out = d;
    return err;
}

/* ------------------------------------------------------------ find bulk */

/* Take id as the bulk found, unless an earlier match named another one. */
static rw_err_t adopt_bulk_id(const char *id, char *bulk_id, size_t len,
                              bool *found, char *errstr, size_t errlen)
{
    if (*found) {
        if (strcmp(bulk_id, id) == 0)
            return RW_OK;
        return rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                          "bulk name belongs to two bulks: %s and %s", bulk_id,
                          id);
    }
    if (strlen(id) >= len)
        return rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                          "projectByName: bulk id of %zu bytes does not fit",
                          strlen(id));
    memcpy(bulk_id, id, strlen(id) + 1);
    *found = true;
    return RW_OK;
}

static bool env_wanted(const rw_lagoon_env_t *envs, size_t n_envs,
                       const char *project, const char *environment)
{
    for (size_t i = 0; i < n_envs; i++)
        if (envs[i].project && envs[i].environment &&
            strcmp(envs[i].project, project) == 0 &&
            strcmp(envs[i].environment, environment) == 0)
            return true;
    return false;
}

/* Search one aliased project object (non-null) for bulk_name. */
static rw_err_t search_project(json_t *proj, const char *project,
                               const rw_lagoon_env_t *envs, size_t n_envs,
                               const char *bulk_name, char *bulk_id, size_t len,
                               bool *found, char *errstr, size_t errlen)
{
    json_t *jenvs, *jenv, *deps, *dep;
    size_t i, j;

    if (!json_is_object(proj))
        return rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                          "projectByName: project is not an object");
    jenvs = json_object_get(proj, "environments");
    if (!jenvs || json_is_null(jenvs))
        return RW_OK;
    if (!json_is_array(jenvs))
        return rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                          "projectByName: environments is not a list");
    json_array_foreach(jenvs, i, jenv)
    {
        const char *name = json_string_value(json_object_get(jenv, "name"));

        /* Environments of the project outside the chunk are not ours to
         * judge, even when they carry the name. */
        if (!name || !env_wanted(envs, n_envs, project, name))
            continue;
        deps = json_object_get(jenv, "deployments");
        if (!deps || json_is_null(deps))
            continue;
        if (!json_is_array(deps))
            return rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                              "projectByName: deployments is not a list");
        json_array_foreach(deps, j, dep)
        {
            const char *bn =
                json_string_value(json_object_get(dep, "bulkName"));
            const char *id = json_string_value(json_object_get(dep, "bulkId"));
            rw_err_t err;

            if (!bn || strcmp(bn, bulk_name) != 0)
                continue;
            /* A row with our name but no id proves the bulk exists yet
             * cannot be adopted: triggering again would double it. */
            if (!id || !*id)
                return rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                                  "projectByName: deployment with the bulk "
                                  "name has no bulk id");
            err = adopt_bulk_id(id, bulk_id, len, found, errstr, errlen);
            if (err)
                return err;
        }
    }
    return RW_OK;
}

rw_err_t rw_lagoon_parse_find_bulk_response(
    long http_status, const char *body, const char *const *projects,
    size_t n_projects, const rw_lagoon_env_t *envs, size_t n_envs,
    const char *bulk_name, char *bulk_id, size_t bulk_id_len, bool *found,
    char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *root = NULL, *data;
    char gql[MAX_GQL_MESSAGE + 1];

    if (found)
        *found = false;
    if (bulk_id && bulk_id_len)
        bulk_id[0] = '\0';
    if (!projects || n_projects == 0 || (!envs && n_envs) || !bulk_name ||
        !bulk_id || bulk_id_len == 0 || !found) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "find bulk parse needs projects, a bulk name, a "
                         "bulk id buffer and a found flag");
        goto out;
    }
    err = load_answer(http_status, body, "projectByName", &root, gql, errstr,
                      errlen);
    if (err)
        goto out;
    data = json_object_get(root, "data");
    if (!json_is_object(data)) {
        if (gql[0])
            err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_GRAPHQL,
                             "projectByName: %s", gql);
        else
            err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                             "projectByName: response has no data");
        goto out;
    }
    for (size_t i = 0; i < n_projects; i++) {
        char alias[24];
        json_t *proj;

        snprintf(alias, sizeof(alias), "p%zu", i);
        proj = json_object_get(data, alias);
        if (!proj && !gql[0]) {
            err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                             "projectByName: answer lacks alias %s", alias);
            goto out;
        }
        /* null: Lagoon does not know the project (or, with errors, could
         * not read it; decided below). */
        if (!proj || json_is_null(proj))
            continue;
        err = search_project(proj, projects[i], envs, n_envs, bulk_name,
                             bulk_id, bulk_id_len, found, errstr, errlen);
        if (err)
            goto out;
    }
    if (!*found && gql[0]) {
        err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_GRAPHQL,
                         "projectByName: %s", gql);
        goto out;
    }
    if (*found && gql[0])
        rw_warn(COMP, "event=find_bulk_partial_errors outcome=found "
                      "reason=match_is_proof");
out:
    if (err && found) {
        *found = false;
        if (bulk_id && bulk_id_len)
            bulk_id[0] = '\0';
    }
    json_decref(root);
    return err;
}

const rw_lagoon_deployment_t *
rw_lagoon_deployments_find(const rw_lagoon_deployments_t *d,
                           const char *project, const char *environment)
{
    const rw_lagoon_deployment_t *best = NULL;

    if (!d || !project || !environment)
        return NULL;
    for (size_t i = 0; i < d->n; i++) {
        const rw_lagoon_deployment_t *r = &d->rows[i];

        if (strcmp(r->project, project) != 0 ||
            strcmp(r->environment, environment) != 0)
            continue;
        if (!best || r->id > best->id)
            best = r;
    }
    return best;
}

/* ------------------------------------------------------------ statuses */

/*
 * The one table of Lagoon deployment statuses: each name with whether it
 * is final and whether it is a success. rw_target_from_lagoon classifies
 * poll results through it. Anything not listed is UNKNOWN, which is not
 * final: see rw_target_from_lagoon for why.
 */
static const struct {
    const char *name;
    bool terminal;
    bool success;
} statuses[] = {
    [RW_LAGOON_STATUS_UNKNOWN] = {"unknown", false, false},
    [RW_LAGOON_STATUS_NEW] = {"new", false, false},
    [RW_LAGOON_STATUS_PENDING] = {"pending", false, false},
    [RW_LAGOON_STATUS_QUEUED] = {"queued", false, false},
    [RW_LAGOON_STATUS_RUNNING] = {"running", false, false},
    [RW_LAGOON_STATUS_COMPLETE] = {"complete", true, true},
    [RW_LAGOON_STATUS_FAILED] = {"failed", true, false},
    [RW_LAGOON_STATUS_ERROR] = {"error", true, false},
    [RW_LAGOON_STATUS_CANCELLED] = {"cancelled", true, false},
};

#define N_STATUSES (sizeof(statuses) / sizeof(statuses[0]))

rw_lagoon_status_t rw_lagoon_status_parse(const char *status)
{
    if (!status)
        return RW_LAGOON_STATUS_UNKNOWN;
    /* from 1: the name "unknown" is ours, not Lagoon's */
    for (size_t i = 1; i < N_STATUSES; i++)
        if (strcasecmp(status, statuses[i].name) == 0)
            return (rw_lagoon_status_t)i;
    return RW_LAGOON_STATUS_UNKNOWN;
}

const char *rw_lagoon_status_name(rw_lagoon_status_t st)
{
    if ((int)st < 0 || (size_t)st >= N_STATUSES)
        return "unknown";
    return statuses[st].name;
}

bool rw_lagoon_status_is_terminal(rw_lagoon_status_t st)
{
    return (int)st >= 0 && (size_t)st < N_STATUSES && statuses[st].terminal;
}

bool rw_lagoon_status_is_success(rw_lagoon_status_t st)
{
    return (int)st >= 0 && (size_t)st < N_STATUSES && statuses[st].success;
}

/* ------------------------------------------------------------ the handle */

rw_err_t rw_lagoon_new(rw_lagoon_t **lcp, const rw_lagoon_opts_t *opts,
                       char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_lagoon_t *lc = NULL;

    *lcp = NULL;
    if (!opts || !opts->url || !*opts->url) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "lagoon client needs a url");
        goto out;
    }
    err = rw_lagoon_global_init(errstr, errlen);
    if (err)
        goto out;
    lc = calloc(1, sizeof(*lc));
    if (!lc) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    lc->url = strdup(opts->url);
    lc->ca_file = dup_or_null(opts->ca_file);
    lc->user_agent = (opts->user_agent && *opts->user_agent)
                         ? strdup(opts->user_agent)
                         : strdup("rollwave/0.1");
    lc->timeout_ms =
        opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    lc->connect_timeout_ms = opts->connect_timeout_ms > 0
                                 ? opts->connect_timeout_ms
                                 : DEFAULT_CONNECT_TIMEOUT_MS;
    if (!lc->url || !lc->user_agent ||
        (opts->ca_file && *opts->ca_file && !lc->ca_file)) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (opts->token && *opts->token) {
        lc->token = strdup(opts->token);
        if (!lc->token) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
    } else if (opts->token_file && *opts->token_file) {
        lc->token_file = strdup(opts->token_file);
        if (!lc->token_file) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
        err = read_token_file(lc->token_file, &lc->token, errstr, errlen);
        if (err)
            goto out;
    } else {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "lagoon client needs a token or a token file");
        goto out;
    }

    lc->curl = curl_easy_init();
    if (!lc->curl) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "curl_easy_init failed");
        goto out;
    }
    rw_debug(COMP,
             "event=client_new token_source=%s timeout_ms=%ld "
             "connect_timeout_ms=%ld",
             lc->token_file ? "file" : "value", lc->timeout_ms,
             lc->connect_timeout_ms);
out:
    if (err)
        rw_lagoon_destroy(lc);
    else
        *lcp = lc;
    return err;
}

void rw_lagoon_destroy(rw_lagoon_t *lc)
{
    if (!lc)
        return;
    if (lc->curl)
        curl_easy_cleanup(lc->curl);
    free(lc->url);
    wipe_free(lc->token);
    free(lc->token_file);
    free(lc->ca_file);
    free(lc->user_agent);
    free(lc->resp);
    free(lc);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    rw_lagoon_t *lc = ud;
    size_t n = size * nmemb;
    size_t cap;
    char *p;

    if (lc->resp_len + n + 1 > MAX_RESPONSE_BYTES) {
        lc->resp_too_big = true;
        return 0;
    }
    if (lc->resp_len + n + 1 > lc->resp_cap) {
        cap = lc->resp_cap ? lc->resp_cap : 4096;
        while (cap < lc->resp_len + n + 1)
            cap *= 2;
        p = realloc(lc->resp, cap);
        if (!p)
            return 0;
        lc->resp = p;
        lc->resp_cap = cap;
    }
    memcpy(lc->resp + lc->resp_len, ptr, n);
    lc->resp_len += n;
    lc->resp[lc->resp_len] = '\0';
    return n;
}

/*
 * One POST of body. RW_OK means an HTTP response arrived (any status, in
 * *http_status, body in lc->resp); otherwise the transport error.
 */
static rw_err_t post_once(rw_lagoon_t *lc, const char *body, long *http_status,
                          char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    struct curl_slist *headers = NULL, *h;
    char *auth = NULL;
    CURLcode cc;
    CURL *c = lc->curl;
    long sent = 0;

    *http_status = 0;
    lc->in_doubt_compat = false;
    lc->resp_len = 0;
    lc->resp_too_big = false;
    if (lc->resp)
        lc->resp[0] = '\0';
    lc->curl_err[0] = '\0';

    if (asprintf(&auth, "Authorization: Bearer %s", lc->token) < 0) {
        auth = NULL;
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    h = curl_slist_append(headers, "Content-Type: application/json");
    if (h)
        headers = h;
    h = h ? curl_slist_append(headers, "Accept: application/json") : NULL;
    if (h)
        headers = h;
    h = h ? curl_slist_append(headers, auth) : NULL;
    if (!h) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    headers = h;

    /* Options are set on every call: cheap, and a handle left in any
     * state by an earlier failure is fully reset to what we want. */
    curl_easy_setopt(c, CURLOPT_URL, lc->url);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, CURLPROTO_HTTP | CURLPROTO_HTTPS);
#endif
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, lc->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, lc->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_USERAGENT, lc->user_agent);
    if (lc->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, lc->ca_file);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, lc->curl_err);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, lc);
    /* A redirect would resend the token to wherever it points. */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);

    cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, http_status);
    /* Header bytes of the request(s) sent: 0 when it never left us. */
    curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &sent);
    lc->in_doubt_compat = (cc != CURLE_OK && sent > 0) || *http_status == 502 ||
                          *http_status == 504;
    if (cc == CURLE_WRITE_ERROR && lc->resp_too_big) {
        err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                         "response larger than %u bytes", MAX_RESPONSE_BYTES);
        goto out;
    }
    if (cc != CURLE_OK) {
        err = rw_err_set(errstr, errlen, rw_lagoon_classify_transport(cc, sent),
                         "%s%s%s", curl_easy_strerror(cc),
                         lc->curl_err[0] ? ": " : "", lc->curl_err);
        goto out;
    }
out:
    /* The list and the handle keep pointers to auth/headers only until the
     * next perform; drop them now so nothing dangles. */
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    wipe_free(auth);
    return err;
}

/*
 * POST body; after a 401 with a token file, re-read the file and, if the
 * token changed (rotation), try exactly once more.
 */
static rw_err_t post(rw_lagoon_t *lc, const char *op, const char *body,
                     long *http_status, int *attempts, char *errstr,
                     size_t errlen)
{
    rw_err_t err;
    char *fresh = NULL;
    char ferr[256];

    *attempts = 1;
    err = post_once(lc, body, http_status, errstr, errlen);
    if (err || *http_status != 401 || !lc->token_file)
        return err;
    if (read_token_file(lc->token_file, &fresh, ferr, sizeof(ferr)) != RW_OK) {
        rw_warn(COMP, "event=token_reread_failed op=%s error=%s", op, ferr);
        return RW_OK;
    }
    if (strcmp(fresh, lc->token) == 0) {
        wipe_free(fresh);
        return RW_OK;
    }
    wipe_free(lc->token);
    lc->token = fresh;
    rw_info(COMP, "event=token_reloaded op=%s", op);
    *attempts = 2;
    return post_once(lc, body, http_status, errstr, errlen);
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void log_call(const char *op, long http_status, long long started,
                     int attempts, rw_err_t err, const char *errstr)
{
    char q[320];

    if (err)
        rw_debug(COMP,
                 "event=call op=%s http_status=%ld duration_ms=%lld "
                 "attempts=%d outcome=%s error=%s",
                 op, http_status, now_ms() - started, attempts,
                 rw_err_name(err), rw_log_quote(q, sizeof(q), errstr));
    else
        rw_debug(COMP,
                 "event=call op=%s http_status=%ld duration_ms=%lld "
                 "attempts=%d outcome=OK",
                 op, http_status, now_ms() - started, attempts);
}

rw_err_t rw_lagoon_bulk_deploy(rw_lagoon_t *lc, const char *bulk_name,
                               const rw_lagoon_env_t *envs, size_t n_envs,
                               const rw_lagoon_var_t *vars, size_t n_vars,
                               char *bulk_id, size_t bulk_id_len, char *errstr,
                               size_t errlen)
{
    rw_err_t err = RW_OK;
    char *body = NULL;
    long http_status = 0;
    int attempts = 0;
    long long started = now_ms();

    if (errstr && errlen)
        errstr[0] = '\0';
    if (bulk_id && bulk_id_len)
        bulk_id[0] = '\0';
    if (!lc || !bulk_name || !*bulk_name || !envs || n_envs == 0 || !bulk_id ||
        bulk_id_len == 0 || (n_vars > 0 && !vars)) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "bulk deploy needs a client, a name, at least one "
                         "environment and a bulk id buffer");
        goto out;
    }
    for (size_t i = 0; i < n_envs; i++) {
        if (!envs[i].project || !*envs[i].project || !envs[i].environment ||
            !*envs[i].environment) {
            err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                             "environment %zu has no project or name", i);
            goto out;
        }
    }
    body = rw_lagoon_bulk_request_json(bulk_name, envs, n_envs, vars, n_vars);
    if (!body) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "cannot encode bulk request (NULL or non-UTF-8 "
                         "value, or out of memory)");
        goto out;
    }
    err =
        post(lc, "bulk_deploy", body, &http_status, &attempts, errstr, errlen);
    if (err)
        goto out;
    err = rw_lagoon_parse_bulk_response(http_status, lc->resp, bulk_id,
                                        bulk_id_len, errstr, errlen);
out:
    if (err && lc)
        scrub(errstr, lc->token);
    log_call("bulk_deploy", http_status, started, attempts, err, errstr);
    free(body);
    return err;
}

rw_err_t rw_lagoon_deployments_by_bulk_id(rw_lagoon_t *lc, const char *bulk_id,
                                          rw_lagoon_deployments_t **out,
                                          char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    char *body = NULL;
    long http_status = 0;
    int attempts = 0;
    long long started = now_ms();

    if (errstr && errlen)
        errstr[0] = '\0';
    if (out)
        *out = NULL;
    if (!lc || !bulk_id || !*bulk_id || !out) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "deployments query needs a client, a bulk id and "
                         "an output");
        goto out;
    }
    body = rw_lagoon_deployments_request_json(bulk_id);
    if (!body) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "cannot encode deployments request");
        goto out;
    }
    err = post(lc, "deployments_by_bulk_id", body, &http_status, &attempts,
               errstr, errlen);
    if (err)
        goto out;
    err = rw_lagoon_parse_deployments_response(http_status, lc->resp, out,
                                               errstr, errlen);
out:
    if (err && lc)
        scrub(errstr, lc->token);
    log_call("deployments_by_bulk_id", http_status, started, attempts, err,
             errstr);
    free(body);
    return err;
}

rw_err_t rw_lagoon_find_bulk(rw_lagoon_t *lc, const char *bulk_name,
                             const rw_lagoon_env_t *envs, size_t n_envs,
                             char *bulk_id, size_t bulk_id_len, bool *found,
                             char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    const char **projects = NULL;
    size_t n_projects = 0;
    char *body = NULL;
    char batch_id[RW_LAGOON_BULK_ID_MAX];
    bool batch_found = false;

    if (errstr && errlen)
        errstr[0] = '\0';
    if (bulk_id && bulk_id_len)
        bulk_id[0] = '\0';
    if (found)
        *found = false;
    if (!lc || !bulk_name || !*bulk_name || !envs || n_envs == 0 || !bulk_id ||
        bulk_id_len == 0 || !found) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "find bulk needs a client, a name, at least one "
                         "environment, a bulk id buffer and a found flag");
        goto out;
    }
    projects = calloc(n_envs, sizeof(*projects));
    if (!projects) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* Distinct projects, first-seen order; a chunk is small (bulk chunk
     * size), so the quadratic scan costs less than a hash set. */
    for (size_t i = 0; i < n_envs; i++) {
        size_t k;

        if (!envs[i].project || !*envs[i].project || !envs[i].environment ||
            !*envs[i].environment) {
            err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                             "environment %zu has no project or name", i);
            goto out;
        }
        for (k = 0; k < n_projects; k++)
            if (strcmp(projects[k], envs[i].project) == 0)
                break;
        if (k == n_projects)
            projects[n_projects++] = envs[i].project;
    }

    for (size_t start = 0; start < n_projects;
         start += RW_LAGOON_FIND_BULK_MAX_PROJECTS) {
        size_t n = n_projects - start;
        long http_status = 0;
        int attempts = 0;
        long long started = now_ms();

        if (n > RW_LAGOON_FIND_BULK_MAX_PROJECTS)
            n = RW_LAGOON_FIND_BULK_MAX_PROJECTS;
        body = rw_lagoon_find_bulk_request_json(
            projects + start, n, RW_LAGOON_FIND_BULK_DEPLOYMENTS);
        if (!body) {
            err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                             "cannot encode find bulk request (non-UTF-8 "
                             "project name, or out of memory)");
            goto out;
        }
        err = post(lc, "find_bulk", body, &http_status, &attempts, errstr,
                   errlen);
        if (!err)
            err = rw_lagoon_parse_find_bulk_response(
                http_status, lc->resp, projects + start, n, envs, n_envs,
                bulk_name, batch_id, sizeof(batch_id), &batch_found, errstr,
                errlen);
        if (err)
            scrub(errstr, lc->token);
        log_call("find_bulk", http_status, started, attempts, err, errstr);
        free(body);
        body = NULL;
        if (err)
            goto out;
        if (!batch_found)
            continue;
        /* Requests of one search must agree, as rows within one must. */
        if (strlen(batch_id) >= bulk_id_len) {
            err = rw_err_set(errstr, errlen, RW_ERR_LAGOON_PROTOCOL,
                             "projectByName: bulk id of %zu bytes does not "
                             "fit",
                             strlen(batch_id));
            goto out;
        }
        err = adopt_bulk_id(batch_id, bulk_id, bulk_id_len, found, errstr,
                            errlen);
        if (err)
            goto out;
    }
    rw_debug(COMP, "event=find_bulk projects=%zu envs=%zu found=%s", n_projects,
             n_envs, *found ? "true" : "false");
out:
    if (err && found) {
        *found = false;
        if (bulk_id && bulk_id_len)
            bulk_id[0] = '\0';
    }
    free(body);
    free(projects);
    return err;
}

rw_err_t rw_lagoon_build_logs(rw_lagoon_t *lc, const rw_lagoon_log_req_t *reqs,
                              size_t n, rw_lagoon_build_log_t *out,
                              char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    char *body = NULL;
    long http_status = 0;
    int attempts = 0;
    long long started = now_ms();

    if (errstr && errlen)
        errstr[0] = '\0';
    if (!lc || !out) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "build logs need a client and an answer array");
        goto out;
    }
    body = rw_lagoon_build_logs_request_json(reqs, n);
    if (!body) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "cannot encode build log request (%zu deployments, "
                         "at most %d; names must be UTF-8)",
                         n, RW_LAGOON_BUILD_LOGS_MAX);
        goto out;
    }
    err = post(lc, "build_logs", body, &http_status, &attempts, errstr, errlen);
    if (!err)
        err = rw_lagoon_parse_build_logs_response(http_status, lc->resp, n, out,
                                                  errstr, errlen);
    if (err)
        scrub(errstr, lc->token);
    log_call("build_logs", http_status, started, attempts, err, errstr);
out:
    free(body);
    return err;
}

bool rw_lagoon_in_doubt(const rw_lagoon_t *lc)
{
    return lc && lc->in_doubt_compat;
}
