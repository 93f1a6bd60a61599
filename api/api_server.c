/*
 * api_server: rollwave-api's HTTP side on libmicrohttpd: bounded bodies,
 * bearer-token authentication against the hashes in Postgres (with a cache
 * of verified tokens for at most ROLLWAVE_API_TOKEN_CACHE_S seconds), role
 * checks from the route table, query parameter names checked against the
 * route's list, JSON error documents, a pool of Postgres connections (one
 * per request thread), the audit of writes, and the dashboard's embedded
 * files. It holds no SQL of its own besides the audit row: the handlers in
 * api_routes.c do the work.
 *
 * Stateless between requests: any number of replicas can serve behind a
 * load balancer. Tokens and Authorization headers are never logged.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netdb.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "api.h"
#include "rw_daemon.h"
#include "rw_kafka.h"
#include "rw_lag.h"
#include "rw_log.h"
#include "rw_metrics.h"
#include "rw_outbox.h"

#define MAX_POOL       64
#define CACHE_MAX      256
#define CONN_LIMIT     256
#define CONN_TIMEOUT_S 30
#define CT_JSON        "application/json; charset=utf-8"
#define MAX_URL        2048
/* A request path as logged, quoted (longer ones are cut). */
#define QPATH_LEN 256
/* A lag measurement this young is served again instead of a new one. */
#define LAG_FRESH_MS 3000
/* Each Kafka call of a lag measurement waits at most this long. */
#define LAG_TIMEOUT_MS 2000
/*
 * On stop, requests in progress get this long to finish: the longest a
 * request can take, a lag measurement that runs into its deadline
 * (rw_lag_deadline: the longest interval plus RW_LAG_BUDGET_CALLS Kafka
 * calls), plus a second for closing its consumers and answering. No
 * request that has started is closed unanswered, and the drain fits the
 * manifests' grace period after their preStop with the producer flush.
 */
#define DRAIN_MS                                                               \
    (RW_LAG_MAX_INTERVAL_S * 1000 + RW_LAG_BUDGET_CALLS * LAG_TIMEOUT_MS + 1000)

/*
 * The dashboard loads nothing from elsewhere and runs no inline script:
 * the policy says so, so that an injection could not run either.
 */
#define CSP                                                                    \
    "default-src 'none'; script-src 'self'; style-src 'self'; "                \
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "              \
    "form-action 'none'; frame-ancestors 'none'"

typedef struct cache_entry {
    char hash[RW_TOKEN_HASH_LEN + 1];
    char name[72];
    rw_role_t role;
    long long expires_ms; /* monotonic; 0 = free slot */
} cache_entry_t;

struct rw_api {
    const rw_settings_t *s;
    struct MHD_Daemon *d;
    int port;
    /* Postgres pool: rw_pg is one connection per thread at a time */
    pthread_mutex_t pool_mu;
    pthread_cond_t pool_cv;
    rw_pg_t *idle[MAX_POOL];
    int n_idle, n_open, max_open;
    /* verified tokens, keyed by hash */
    pthread_mutex_t cache_mu;
    cache_entry_t cache[CACHE_MAX];
    /* the outbox relay: one thread, woken by writes, so that a slow or
     * unreachable Kafka never holds a request thread */
    pthread_mutex_t relay_mu;
    pthread_cond_t relay_cv;
    pthread_t relay_thread;
    bool relay_started, relay_wanted, relay_stop;
    /* lag: one measurement at a time, shared by the requests waiting for
     * it, served again while younger than LAG_FRESH_MS */
    pthread_mutex_t lag_mu;
    pthread_cond_t lag_cv;
    bool lag_running;
    json_t *lag_doc;
    long long lag_at_ms; /* monotonic end of the last measurement */
    /* requests between their first byte and their answer's end */
    atomic_int in_flight;
    rw_metric_t *m_auth_missing, *m_auth_invalid;
    rw_metric_t *m_req[5]; /* 1xx..5xx */
    rw_metric_t *m_seconds;
    rw_metric_t *m_in_progress, *m_lag;
};

/* One connection's request, across MHD's calls. */
typedef struct conn_ctx {
    char *body;
    size_t len, cap;
    bool too_large;
    bool counted; /* in rw_api's in_flight */
    long long start_ms;
} conn_ctx_t;

/* ---- Postgres pool --------------------------------------------------- */

static rw_err_t pool_get(rw_api_t *a, rw_pg_t **pgp, char *errstr,
                         size_t errlen)
{
    rw_err_t err = RW_OK;

    *pgp = NULL;
    pthread_mutex_lock(&a->pool_mu);
    while (a->n_idle == 0 && a->n_open >= a->max_open)
        pthread_cond_wait(&a->pool_cv, &a->pool_mu);
    if (a->n_idle > 0) {
        *pgp = a->idle[--a->n_idle];
        pthread_mutex_unlock(&a->pool_mu);
        return RW_OK;
    }
    a->n_open++;
    pthread_mutex_unlock(&a->pool_mu);
    /* connect outside the lock: a slow server must not stall the others */
    err = rw_pg_new(pgp, a->s->pg_dsn, errstr, errlen);
    if (err) {
        pthread_mutex_lock(&a->pool_mu);
        a->n_open--;
        pthread_cond_signal(&a->pool_cv);
        pthread_mutex_unlock(&a->pool_mu);
    }
    return err;
}

static void pool_put(rw_api_t *a, rw_pg_t *pg)
{
    char ignored[128];

    if (!pg)
        return;
    /* a handler that failed inside a transaction must not leak it */
    if (rw_pg_in_tx(pg))
        rw_pg_rollback(pg, ignored, sizeof(ignored));
    pthread_mutex_lock(&a->pool_mu);
    a->idle[a->n_idle++] = pg;
    pthread_cond_signal(&a->pool_cv);
    pthread_mutex_unlock(&a->pool_mu);
}

/* ---- token cache ----------------------------------------------------- */

static bool cache_find(rw_api_t *a, const char *hash, char *name, size_t len,
                       rw_role_t *role)
{
    long long now = rw_now_mono_ms();
    bool found = false;

    pthread_mutex_lock(&a->cache_mu);
    for (int i = 0; i < CACHE_MAX && !found; i++) {
        cache_entry_t *e = &a->cache[i];
        if (e->expires_ms <= now)
            continue;
        if (rw_token_equal(e->hash, hash, RW_TOKEN_HASH_LEN)) {
            snprintf(name, len, "%s", e->name);
            *role = e->role;
            found = true;
        }
    }
    pthread_mutex_unlock(&a->cache_mu);
    return found;
}

static void cache_put(rw_api_t *a, const char *hash, const char *name,
                      rw_role_t role)
{
    long long now = rw_now_mono_ms();
    int slot = 0;

    if (a->s->api_token_cache_s <= 0)
        return;
    pthread_mutex_lock(&a->cache_mu);
    /* an expired slot, else the one expiring first */
    for (int i = 0; i < CACHE_MAX; i++) {
        if (a->cache[i].expires_ms <= now) {
            slot = i;
            break;
        }
        if (a->cache[i].expires_ms < a->cache[slot].expires_ms)
            slot = i;
    }
    snprintf(a->cache[slot].hash, sizeof(a->cache[slot].hash), "%s", hash);
    snprintf(a->cache[slot].name, sizeof(a->cache[slot].name), "%s", name);
    a->cache[slot].role = role;
    a->cache[slot].expires_ms = now + a->s->api_token_cache_s * 1000;
    pthread_mutex_unlock(&a->cache_mu);
}

/* ---- answers ---------------------------------------------------------- */

static const char *code_of(unsigned status)
{
    switch (status) {
    case 400:
        return "bad_request";
    case 401:
        return "unauthorized";
    case 403:
        return "forbidden";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 409:
        return "conflict";
    case 413:
        return "payload_too_large";
    case 503:
        return "unavailable";
    default:
        return status >= 500 ? "internal" : "error";
    }
}

static json_t *error_doc(unsigned status, const char *field, const char *msg)
{
    json_t *e = json_object();

    json_object_set_new(e, "code", json_string(code_of(status)));
    json_object_set_new(e, "message", json_string(msg));
    if (field)
        json_object_set_new(e, "field", json_string(field));
    return json_pack("{s:o}", "error", e);
}

void rw_api_reply(rw_api_req_t *rq, unsigned status, json_t *doc)
{
    json_decref(rq->out);
    rq->status = status;
    rq->out = doc;
}

void rw_api_fail(rw_api_req_t *rq, unsigned status, const char *field,
                 const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    rw_api_reply(rq, status, error_doc(status, field, msg));
}

const char *rw_api_query(rw_api_req_t *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

void rw_api_relay(rw_api_req_t *rq)
{
    rw_api_t *a = rq->api;

    pthread_mutex_lock(&a->relay_mu);
    a->relay_wanted = true;
    pthread_cond_signal(&a->relay_cv);
    pthread_mutex_unlock(&a->relay_mu);
}

/*
 * The relay thread: publishes the outbox after each wake-up, on its own
 * connection and producer. Writes that land while it publishes wake it
 * again, so rows committed after its read are not left to the daemons.
 * Rows it cannot publish (Kafka away) stay in the outbox for the daemons'
 * relays, which publish rows older than 15 s; on stop, a pending wake-up
 * is left to them too rather than delay the exit.
 */
static void *relay_main(void *arg)
{
    rw_api_t *a = arg;
    rw_kafka_producer_t *kp = NULL;
    rw_pg_t *pg = NULL;
    long long published;
    char errstr[512];
    rw_err_t err;

    pthread_mutex_lock(&a->relay_mu);
    for (;;) {
        while (!a->relay_wanted && !a->relay_stop)
            pthread_cond_wait(&a->relay_cv, &a->relay_mu);
        if (a->relay_stop)
            break;
        a->relay_wanted = false;
        pthread_mutex_unlock(&a->relay_mu);
        err = RW_OK;
        published = 0;
        /* rw_pg reconnects a lost connection by itself */
        if (!pg)
            err = rw_pg_new(&pg, a->s->pg_dsn, errstr, sizeof(errstr));
        if (!err && !kp)
            err = rw_kafka_producer_new(&kp, a->s, rw_delivery_cb, NULL, errstr,
                                        sizeof(errstr));
        if (!err)
            err = rw_outbox_relay(pg, kp, a->s, RW_OUTBOX_RELAY_BATCH, 0,
                                  &published, errstr, sizeof(errstr));
        if (err)
            rw_warn("api",
                    "event=relay_failed err=%s detail=\"%s\" (the daemons' "
                    "relays publish the rows later)",
                    rw_err_name(err), errstr);
        pthread_mutex_lock(&a->relay_mu);
    }
    pthread_mutex_unlock(&a->relay_mu);
    rw_kafka_producer_destroy(kp);
    rw_pg_destroy(pg);
    return NULL;
}

json_t *rw_api_lag(rw_api_t *a, long long interval_s)
{
    rw_lag_group_t gs[RW_LAG_MAX_GROUPS];
    json_t *doc = NULL;
    int n = 0;

    pthread_mutex_lock(&a->lag_mu);
    if (a->lag_running) {
        /* share the measurement in progress */
        while (a->lag_running)
            pthread_cond_wait(&a->lag_cv, &a->lag_mu);
        doc = json_deep_copy(a->lag_doc);
    } else if (a->lag_doc && rw_now_mono_ms() - a->lag_at_ms < LAG_FRESH_MS) {
        doc = json_deep_copy(a->lag_doc);
    }
    if (doc) {
        pthread_mutex_unlock(&a->lag_mu);
        return doc;
    }
    a->lag_running = true;
    pthread_mutex_unlock(&a->lag_mu);
    rw_metrics_add(a->m_lag, 1);

    memset(gs, 0, sizeof(gs));
    rw_lag_default_groups(a->s, gs, &n);
    /* a group that cannot be read is reported UNKNOWN with its error, as
     * rollwavectl lag does */
    rw_lag_measure_within(a->s, gs, n, interval_s * 1000, LAG_TIMEOUT_MS);
    doc = rw_lag_json(gs, n, interval_s);
    rw_lag_groups_free(gs, n);

    pthread_mutex_lock(&a->lag_mu);
    /* each answer gets its own copy: requests serialize theirs at once */
    json_decref(a->lag_doc);
    a->lag_doc = json_deep_copy(doc);
    a->lag_at_ms = rw_now_mono_ms();
    a->lag_running = false;
    pthread_cond_broadcast(&a->lag_cv);
    pthread_mutex_unlock(&a->lag_mu);
    return doc;
}

json_t *rw_api_row_json(const PGresult *res, int row)
{
    json_t *o = json_object();

    for (int c = 0; o && c < PQnfields(res); c++) {
        const char *name = PQfname(res, c);
        const char *v;
        json_t *j;

        if (PQgetisnull(res, row, c)) {
            json_object_set_new(o, name, json_null());
            continue;
        }
        v = PQgetvalue(res, row, c);
        switch (PQftype(res, c)) {
        case 20: /* int8 */
        case 21: /* int2 */
        case 23: /* int4 */
            j = json_integer(strtoll(v, NULL, 10));
            break;
        case 16: /* bool */
            j = json_boolean(v[0] == 't');
            break;
        case 700:  /* float4 */
        case 701:  /* float8 */
        case 1700: /* numeric */
            j = json_real(strtod(v, NULL));
            break;
        default:
            j = json_string(v);
            break;
        }
        json_object_set_new(o, name, j);
    }
    return o;
}

json_t *rw_api_rows_json(const PGresult *res)
{
    json_t *arr = json_array();

    for (int r = 0; arr && r < PQntuples(res); r++)
        json_array_append_new(arr, rw_api_row_json(res, r));
    return arr;
}

/* ---- MHD plumbing ------------------------------------------------------ */

static void add_common_headers(struct MHD_Response *resp, const char *ctype)
{
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Content-Security-Policy", CSP);
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
}

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned status,
                                 json_t *doc, const char *allow,
                                 const char *location)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;
    char *text = json_dumps(doc, JSON_COMPACT);

    if (!text)
        return MHD_NO;
    resp = MHD_create_response_from_buffer(strlen(text), text,
                                           MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    add_common_headers(resp, CT_JSON);
    if (status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer realm=\"rollwave\"");
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (location && location[0])
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, location);
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *conn, unsigned status,
                                  const char *field, const char *msg,
                                  const char *allow)
{
    json_t *doc = error_doc(status, field, msg);
    enum MHD_Result ret = send_json(conn, status, doc, allow, NULL);

    json_decref(doc);
    return ret;
}

static enum MHD_Result send_asset(struct MHD_Connection *conn,
                                  const rw_api_asset_t *as)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(as->len, (void *)as->data,
                                           MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    add_common_headers(resp, as->ctype);
    ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void count_status(rw_api_t *a, unsigned status, long long start_ms)
{
    unsigned cls = status / 100;

    if (cls >= 1 && cls <= 5)
        rw_metrics_add(a->m_req[cls - 1], 1);
    rw_metrics_observe(a->m_seconds,
                       (double)(rw_now_mono_ms() - start_ms) / 1000.0);
}

/* The token of "Authorization: Bearer <token>", or NULL. */
static const char *bearer(struct MHD_Connection *conn)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);

    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

/*
 * The token's hash, or the 401 answered (RW_ERR_NOT_FOUND): a missing or
 * malformed token never costs a database round trip.
 */
static rw_err_t token_hash(rw_api_t *a, rw_api_req_t *rq,
                           struct MHD_Connection *conn, char *hash, size_t len)
{
    const char *token = bearer(conn);
    char errstr[128];

    if (!token) {
        rw_metrics_add(a->m_auth_missing, 1);
        rw_api_fail(rq, 401, NULL,
                    "a bearer token is required (Authorization: Bearer ...)");
        return RW_ERR_NOT_FOUND;
    }
    if (!rw_token_well_formed(token) ||
        rw_token_hash(token, hash, len, errstr, sizeof(errstr))) {
        rw_metrics_add(a->m_auth_invalid, 1);
        rw_api_fail(rq, 401, NULL, "invalid or revoked token");
        return RW_ERR_NOT_FOUND;
    }
    return RW_OK;
}

/*
 * Who holds the token of hash: RW_OK with rq->token_name and rq->role
 * set, or the answer given (401 unknown or revoked, 503 no database).
 */
static rw_err_t authenticate(rw_api_t *a, rw_api_req_t *rq, const char *hash)
{
    char errstr[256];
    rw_err_t err = RW_OK;

    if (cache_find(a, hash, rq->token_name, sizeof(rq->token_name), &rq->role))
        return RW_OK;
    err = rw_token_lookup(rq->pg, hash, rq->token_name, sizeof(rq->token_name),
                          &rq->role, errstr, sizeof(errstr));
    if (err == RW_ERR_NOT_FOUND) {
        rw_metrics_add(a->m_auth_invalid, 1);
        rw_api_fail(rq, 401, NULL, "invalid or revoked token");
        return err;
    }
    if (err) {
        rw_warn("api", "event=token_lookup_failed err=%s detail=\"%s\"",
                rw_err_name(err), errstr);
        rw_api_fail(rq, 503, NULL, "cannot verify the token now");
        return err;
    }
    cache_put(a, hash, rq->token_name, rq->role);
    return RW_OK;
}

static const char SQL_AUDIT[] =
    "INSERT INTO api_audit (token_name, method, path, status, detail)"
    " VALUES ($1, $2, $3, $4::int, NULLIF($5, ''))";

static void audit(rw_api_req_t *rq)
{
    char status[16], errstr[256];
    const char *p[5] = {rq->token_name, rq->method, rq->path, status,
                        rq->audit};

    snprintf(status, sizeof(status), "%u", rq->status);
    if (rw_pg_exec(rq->pg, SQL_AUDIT, 5, p, NULL, errstr, sizeof(errstr)))
        rw_warn("api", "event=audit_failed detail=\"%s\"", errstr);
}

/* "GET, PUT" for the routes of path, "" when none. */
static void allowed_methods(const char *path, char *buf, size_t len)
{
    char params[RW_API_MAX_PARAMS][RW_API_PARAM_LEN + 1];
    size_t off = 0;
    int n;

    buf[0] = '\0';
    for (size_t i = 0; i < rw_api_routes_count && off < len; i++)
        if (rw_api_path_match(rw_api_routes[i].pattern, path, params, &n) &&
            !strstr(buf, rw_api_routes[i].method))
            off += (size_t)snprintf(buf + off, len - off, "%s%s",
                                    off ? ", " : "", rw_api_routes[i].method);
}

typedef struct query_check {
    const char *const *allowed;
    const char *bad;
} query_check_t;

static enum MHD_Result query_name(void *cls, enum MHD_ValueKind kind,
                                  const char *key, const char *value)
{
    query_check_t *qc = cls;

    (void)kind;
    (void)value;
    if (!rw_api_query_allowed(qc->allowed, key)) {
        qc->bad = key;
        return MHD_NO;
    }
    return MHD_YES;
}

static bool is_write(const char *method)
{
    return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
}

static enum MHD_Result serve_api(rw_api_t *a, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 conn_ctx_t *ctx)
{
    const rw_api_route_t *route = NULL;
    rw_api_req_t rq;
    query_check_t qc = {NULL, NULL};
    char allow[64], errstr[256], hash[RW_TOKEN_HASH_LEN + 1];
    char qmethod[40], qpath[QPATH_LEN];
    enum MHD_Result ret;
    json_error_t jerr;

    memset(&rq, 0, sizeof(rq));
    rq.api = a;
    rq.s = a->s;
    rq.conn = conn;
    rq.method = method;
    rq.path = url;
    for (size_t i = 0; i < rw_api_routes_count; i++)
        if (strcmp(rw_api_routes[i].method, method) == 0 &&
            rw_api_path_match(rw_api_routes[i].pattern, url, rq.params,
                              &rq.n_params)) {
            route = &rw_api_routes[i];
            break;
        }
    if (!route) {
        allowed_methods(url, allow, sizeof(allow));
        if (allow[0])
            rw_api_fail(&rq, 405, NULL, "%s is not served on this path",
                        method);
        else
            rw_api_fail(&rq, 404, NULL, "no such resource");
        goto answer;
    }
    if (ctx->too_large) {
        rw_api_fail(&rq, 413, NULL, "the request body exceeds %d bytes",
                    RW_API_MAX_BODY);
        goto answer;
    }
    if (token_hash(a, &rq, conn, hash, sizeof(hash)))
        goto answer;
    if (pool_get(a, &rq.pg, errstr, sizeof(errstr))) {
        rw_warn("api", "event=pg_unavailable detail=\"%s\"", errstr);
        rw_api_fail(&rq, 503, NULL, "the database is not reachable");
        goto answer;
    }
    if (authenticate(a, &rq, hash))
        goto answer;
    if (!rw_role_allows(rq.role, route->min_role)) {
        rw_api_fail(&rq, 403, NULL, "this needs the %s role; token %s is %s",
                    rw_role_name(route->min_role), rq.token_name,
                    rw_role_name(rq.role));
        goto answer;
    }
    qc.allowed = route->query;
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, query_name, &qc);
    if (qc.bad) {
        rw_api_fail(&rq, 400, qc.bad, "unknown query parameter %.64s", qc.bad);
        goto answer;
    }
    if (ctx->len > 0) {
        if (!is_write(method)) {
            rw_api_fail(&rq, 400, NULL, "%s takes no body", method);
            goto answer;
        }
        rq.body =
            json_loadb(ctx->body, ctx->len, JSON_REJECT_DUPLICATES, &jerr);
        if (!rq.body) {
            rw_api_fail(&rq, 400, NULL, "invalid JSON: %s (at %d:%d)",
                        jerr.text, jerr.line, jerr.column);
            goto answer;
        }
    }
    route->fn(&rq);
    if (!rq.out)
        rw_api_fail(&rq, 500, NULL, "no answer");
    if (is_write(method) && rq.status >= 200 && rq.status < 300)
        audit(&rq);

answer:
    pool_put(a, rq.pg);
    /* quoted: a decoded %0A must not start a line of its own */
    rw_info("api", "event=request method=%s path=%s status=%u token=%s ms=%lld",
            rw_log_quote(qmethod, sizeof(qmethod), method),
            rw_log_quote(qpath, sizeof(qpath), url), rq.status,
            rq.token_name[0] ? rq.token_name : "-",
            rw_now_mono_ms() - ctx->start_ms);
    count_status(a, rq.status, ctx->start_ms);
    if (rq.status == 405)
        allowed_methods(url, allow, sizeof(allow));
    ret = send_json(conn, rq.status, rq.out, rq.status == 405 ? allow : NULL,
                    rq.location);
    json_decref(rq.out);
    json_decref(rq.body);
    return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn,
                              const char *url, const char *method,
                              const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    rw_api_t *a = cls;
    conn_ctx_t *ctx = *con_cls;

    (void)version;
    if (!ctx) {
        const char *cl = MHD_lookup_connection_value(
            conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
            return MHD_NO;
        ctx->start_ms = rw_now_mono_ms();
        *con_cls = ctx;
        /* the gauge moves by steps, as the count does: setting it to a
         * value read here could land after a later change's */
        atomic_fetch_add(&a->in_flight, 1);
        rw_metrics_add(a->m_in_progress, 1);
        ctx->counted = true;
        /* refused before a byte of it is read */
        if (cl && strtoull(cl, NULL, 10) > RW_API_MAX_BODY) {
            char qmethod[40], qpath[QPATH_LEN];
            ctx->too_large = true;
            rw_info("api",
                    "event=request method=%s path=%s status=413 token=- "
                    "ms=0",
                    rw_log_quote(qmethod, sizeof(qmethod), method),
                    rw_log_quote(qpath, sizeof(qpath), url));
            count_status(a, 413, ctx->start_ms);
            return send_error(conn, 413, NULL,
                              "the request body exceeds 65536 bytes", NULL);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (ctx->too_large)
            return MHD_YES;
        if (ctx->len + n > RW_API_MAX_BODY) {
            /* no Content-Length (chunked): keep reading, answer 413 */
            ctx->too_large = true;
            free(ctx->body);
            ctx->body = NULL;
            ctx->len = ctx->cap = 0;
            return MHD_YES;
        }
        if (ctx->len + n > ctx->cap) {
            size_t cap = ctx->len + n;
            char *b = realloc(ctx->body, cap);
            if (!b)
                return MHD_NO;
            ctx->body = b;
            ctx->cap = cap;
        }
        memcpy(ctx->body + ctx->len, upload_data, n);
        ctx->len += n;
        return MHD_YES;
    }
    if (strncmp(url, "/api/", 5) == 0)
        return serve_api(a, conn, url, method, ctx);
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
        for (size_t i = 0; i < rw_api_assets_count; i++)
            if (strcmp(rw_api_assets[i].path, url) == 0) {
                count_status(a, 200, ctx->start_ms);
                return send_asset(conn, &rw_api_assets[i]);
            }
    count_status(a, 404, ctx->start_ms);
    return send_error(conn, 404, NULL, "no such resource", NULL);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                      enum MHD_RequestTerminationCode toe)
{
    rw_api_t *a = cls;
    conn_ctx_t *ctx = *con_cls;

    (void)conn;
    (void)toe;
    if (ctx) {
        if (ctx->counted) {
            atomic_fetch_sub(&a->in_flight, 1);
            rw_metrics_add(a->m_in_progress, -1);
        }
        free(ctx->body);
        free(ctx);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], q[600];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    rw_warn("api", "event=server_error msg=%s",
            rw_log_quote(q, sizeof(q), msg));
}

static void register_metrics(rw_api_t *a)
{
    static const double buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25,  0.5,  1,     2.5,  5};
    static const char *const classes[] = {"class=\"1xx\"", "class=\"2xx\"",
                                          "class=\"3xx\"", "class=\"4xx\"",
                                          "class=\"5xx\""};

    a->m_auth_missing = rw_metrics_counter(
        "rollwave_api_auth_failures_total",
        "API requests refused with 401, by reason", "reason=\"missing\"");
    a->m_auth_invalid = rw_metrics_counter(
        "rollwave_api_auth_failures_total",
        "API requests refused with 401, by reason", "reason=\"invalid\"");
    for (int i = 0; i < 5; i++)
        a->m_req[i] = rw_metrics_counter("rollwave_api_requests_total",
                                         "API and dashboard requests answered, "
                                         "by status class",
                                         classes[i]);
    a->m_in_progress = rw_metrics_gauge(
        "rollwave_api_requests_in_progress",
        "API and dashboard requests received and not yet answered", NULL);
    a->m_lag = rw_metrics_counter(
        "rollwave_api_lag_measurements_total",
        "lag measurements made for GET /api/v1/lag (shared by the requests "
        "arriving while one runs or shortly after)",
        NULL);
    a->m_seconds = rw_metrics_histogram(
        "rollwave_api_request_seconds", "time to answer a request", NULL,
        buckets, sizeof(buckets) / sizeof(buckets[0]));
}

rw_err_t rw_api_start(rw_api_t **ap, const rw_settings_t *s, char *errstr,
                      size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_api_t *a = NULL;
    struct addrinfo hints, *ai = NULL;
    const union MHD_DaemonInfo *info;
    const char *bind_addr =
        s->api_bind && s->api_bind[0] ? s->api_bind : "0.0.0.0";
    unsigned int flags;
    char portstr[16];
    int rc;

    *ap = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(portstr, sizeof(portstr), "%lld", s->api_port);
    rc = getaddrinfo(bind_addr, portstr, &hints, &ai);
    if (rc != 0) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "api: cannot resolve bind address %s: %s", bind_addr,
                         gai_strerror(rc));
        goto out;
    }
    a = calloc(1, sizeof(*a));
    if (!a) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    a->s = s;
    a->max_open = (int)s->api_threads;
    pthread_mutex_init(&a->pool_mu, NULL);
    pthread_cond_init(&a->pool_cv, NULL);
    pthread_mutex_init(&a->cache_mu, NULL);
    pthread_mutex_init(&a->relay_mu, NULL);
    pthread_cond_init(&a->relay_cv, NULL);
    pthread_mutex_init(&a->lag_mu, NULL);
    pthread_cond_init(&a->lag_cv, NULL);
    atomic_init(&a->in_flight, 0);
    register_metrics(a);
    if (pthread_create(&a->relay_thread, NULL, relay_main, a) != 0) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM,
                         "api: cannot start the relay thread");
        goto out;
    }
    a->relay_started = true;

    /* ITC: quiescing a thread pool on stop needs it */
    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
            MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    a->d = MHD_start_daemon(
        flags, (uint16_t)s->api_port, NULL, NULL, handle, a,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
        ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)s->api_threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)CONN_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)CONN_TIMEOUT_S,
        MHD_OPTION_NOTIFY_COMPLETED, completed, a, MHD_OPTION_END);
    if (!a->d) {
        err = rw_err_set(errstr, errlen, RW_ERR_IO,
                         "api: cannot listen on %s port %lld", bind_addr,
                         s->api_port);
        goto out;
    }
    info = MHD_get_daemon_info(a->d, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || info->port == 0) {
        err = rw_err_set(errstr, errlen, RW_ERR_IO,
                         "api: cannot tell which port the server uses");
        goto out;
    }
    a->port = info->port;
    rw_info("api", "event=listening addr=%s port=%d threads=%lld", bind_addr,
            a->port, s->api_threads);
out:
    if (ai)
        freeaddrinfo(ai);
    if (err) {
        rw_api_stop(a);
        return err;
    }
    *ap = a;
    return RW_OK;
}

int rw_api_port(const rw_api_t *a)
{
    return a ? a->port : 0;
}

/*
 * The drain: stop accepting (the listening socket closes, so a load
 * balancer moves on at once), give the requests in progress up to
 * DRAIN_MS to be answered, then stop the server, which closes the idle
 * keep-alive connections.
 */
static void drain(rw_api_t *a)
{
    long long until = rw_now_mono_ms() + DRAIN_MS;
    MHD_socket ls = MHD_quiesce_daemon(a->d);
    int left;

    if (ls != MHD_INVALID_SOCKET)
        close(ls);
    while ((left = atomic_load(&a->in_flight)) > 0 &&
           rw_now_mono_ms() < until) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (left > 0)
        rw_warn("api", "event=drain_timeout requests=%d (closed unanswered)",
                left);
}

void rw_api_stop(rw_api_t *a)
{
    if (!a)
        return;
    if (a->d) {
        drain(a);
        MHD_stop_daemon(a->d);
    }
    if (a->relay_started) {
        pthread_mutex_lock(&a->relay_mu);
        a->relay_stop = true;
        pthread_cond_signal(&a->relay_cv);
        pthread_mutex_unlock(&a->relay_mu);
        pthread_join(a->relay_thread, NULL);
    }
    for (int i = 0; i < a->n_idle; i++)
        rw_pg_destroy(a->idle[i]);
    json_decref(a->lag_doc);
    pthread_mutex_destroy(&a->pool_mu);
    pthread_cond_destroy(&a->pool_cv);
    pthread_mutex_destroy(&a->cache_mu);
    pthread_mutex_destroy(&a->relay_mu);
    pthread_cond_destroy(&a->relay_cv);
    pthread_mutex_destroy(&a->lag_mu);
    pthread_cond_destroy(&a->lag_cv);
    free(a);
}
