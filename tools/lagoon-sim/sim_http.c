/*
 * sim_http: request routing, bearer-token check and fault injection of the
 * Lagoon simulator on top of libmicrohttpd. Bodies are collected whole
 * (bounded) before a request is handled. A slow fault or an overload delay
 * holds only its own connection's thread, and is cut short when the server
 * stops. The token is never logged.
 */
#include "sim_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "rw_log.h"
#include "sim_buf.h"
#include "sim_graphql.h"

#define COMP     "lagoon-sim"
#define MAX_BODY (16u * 1024 * 1024)

struct rw_sim_http {
    struct MHD_Daemon *daemon;
    rw_sim_t *sim;
    char *token;
    int port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
};

typedef struct req {
    rw_sim_buf_t body;
    bool too_large;
    long long t_arrival_us; /* monotonic, when the headers were read */
} req_t;

static long long mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status,
                                 const char *type, char *text, size_t len)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    /* MHD frees text once sent (MUST_FREE); a NULL text means out of
     * memory while building it. */
    if (!text)
        return MHD_NO;
    resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                                "Bearer");
    ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Sends b (consumed) as JSON. */
static enum MHD_Result send_buf(struct MHD_Connection *c, unsigned status,
                                rw_sim_buf_t *b)
{
    size_t len;
    char *text = rw_sim_buf_steal(b, &len);

    return send_text(c, status, "application/json; charset=utf-8", text, len);
}

static enum MHD_Result send_errors(struct MHD_Connection *c, unsigned status,
                                   const char *msg)
{
    rw_sim_buf_t b;

    rw_sim_buf_init(&b);
    rw_sim_buf_puts(&b, "{\"errors\":[{\"message\":");
    rw_sim_buf_json_cstr(&b, msg);
    rw_sim_buf_puts(&b, "}]}");
    return send_buf(c, status, &b);
}

static enum MHD_Result send_admin_error(struct MHD_Connection *c,
                                        unsigned status, const char *msg)
{
    rw_sim_buf_t b;

    rw_sim_buf_init(&b);
    rw_sim_buf_puts(&b, "{\"error\":");
    rw_sim_buf_json_cstr(&b, msg);
    rw_sim_buf_puts(&b, "}");
    return send_buf(c, status, &b);
}

/* Equal tokens, compared in time independent of where they differ. */
static bool token_eq(const char *a, const char *b)
{
    size_t n = strlen(a);
    unsigned char d = 0;

    if (n != strlen(b))
        return false;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

/* NULL when authorised, else the 401 message. */
static const char *check_auth(const rw_sim_http_t *http,
                              struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);

    if (!h || !*h)
        return "Unauthorized - Bearer token required";
    if (strncasecmp(h, "Bearer ", 7) != 0)
        return "Unauthorized - Bearer token invalid";
    h += 7;
    while (*h == ' ')
        h++;
    if (!token_eq(h, http->token))
        return "Unauthorized - Bearer token invalid";
    return NULL;
}

/* Sleeps ms unless the server stops first. */
static void slow_wait(rw_sim_http_t *http, long long ms)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&http->mu);
    while (!http->stopping &&
           pthread_cond_timedwait(&http->cv, &http->mu, &until) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&http->mu);
}

static enum MHD_Result handle_graphql(rw_sim_http_t *http,
                                      struct MHD_Connection *c, req_t *r)
{
    static const char text500[] = "Internal Server Error\n";
    const char *denied = check_auth(http, c);
    const char *type = "application/json; charset=utf-8";
    rw_sim_gql_t *q;
    rw_sim_fault_t fault;
    long long slow_ms = 0, delay_ms;
    rw_sim_buf_t out;
    size_t len;
    char *text;
    int status = MHD_HTTP_OK;

    if (denied) {
        rw_debug(COMP, "event=unauthorized");
        return send_errors(c, MHD_HTTP_UNAUTHORIZED, denied);
    }
    q = rw_sim_gql_parse(r->body.data ? r->body.data : "", r->body.len);
    if (!q)
        return send_errors(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                           "Internal server error: out of memory");
    fault = rw_sim_graphql_request(http->sim, rw_sim_gql_deploy_fields(q),
                                   &slow_ms);
    if (fault == RW_SIM_FAULT_DROP) {
        rw_debug(COMP, "event=fault kind=drop");
        rw_sim_gql_free(q);
        /* MHD_NO makes libmicrohttpd close the socket unanswered. */
        return MHD_NO;
    }
    rw_sim_buf_init(&out);
    switch (fault) {
    case RW_SIM_FAULT_HTTP500:
        rw_debug(COMP, "event=fault kind=http500");
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        type = "text/plain; charset=utf-8";
        rw_sim_buf_puts(&out, text500);
        break;
    case RW_SIM_FAULT_GRAPHQL:
        rw_debug(COMP, "event=fault kind=graphql_error");
        rw_sim_buf_puts(&out, "{\"data\":null,\"errors\":[{\"message\":"
                              "\"Internal server error (injected by "
                              "lagoon-sim)\",\"extensions\":{\"code\":"
                              "\"INTERNAL_SERVER_ERROR\"}}]}");
        break;
    default:
        status = rw_sim_gql_execute(q, http->sim, &out);
        break;
    }
    rw_sim_gql_free(q);
    /* An overloaded API is slow for every answer, errors included; the
     * work is done, only the answer waits, and no lock is held. */
    delay_ms = rw_sim_overload_ms(http->sim);
    if (delay_ms > 0)
        rw_debug(COMP, "event=overload_delay ms=%lld", delay_ms);
    if (fault == RW_SIM_FAULT_SLOW) {
        /* Executed first, answered late: the client may give up on a
         * request whose effect has already happened, as with Lagoon. */
        rw_debug(COMP, "event=fault kind=slow ms=%lld", slow_ms);
        delay_ms += slow_ms;
    }
    if (delay_ms > 0)
        slow_wait(http, delay_ms);
    if (fault == RW_SIM_FAULT_HTTP500_EXECUTED) {
        /* The bulk exists now; a proxy or a crash between Lagoon's commit
         * and its answer turns the answer into a 500. */
        rw_debug(COMP, "event=fault kind=http500_executed");
        rw_sim_buf_free(&out);
        rw_sim_buf_init(&out);
        rw_sim_buf_puts(&out, text500);
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        type = "text/plain; charset=utf-8";
    }
    if (fault == RW_SIM_FAULT_GARBLED_EXECUTED) {
        /* Executed, and the answer is cut short: status 200, JSON content
         * type, half a JSON document. */
        rw_debug(COMP, "event=fault kind=garbled_executed");
        out.len /= 2;
        if (out.data)
            out.data[out.len] = '\0';
    }
    rw_sim_api_latency(http->sim, mono_us() - r->t_arrival_us);
    text = rw_sim_buf_steal(&out, &len);
    return send_text(c, (unsigned)status, type, text, len);
}

static enum MHD_Result handle_config(rw_sim_http_t *http,
                                     struct MHD_Connection *c, req_t *r)
{
    json_error_t jerr;
    json_t *obj;
    rw_sim_buf_t out;
    char errstr[256];
    rw_err_t err;

    obj = json_loadb(r->body.data ? r->body.data : "", r->body.len, 0, &jerr);
    if (!obj) {
        snprintf(errstr, sizeof(errstr), "invalid JSON: %s", jerr.text);
        return send_admin_error(c, MHD_HTTP_BAD_REQUEST, errstr);
    }
    rw_sim_buf_init(&out);
    err = rw_sim_configure(http->sim, obj, &out, errstr, sizeof(errstr));
    json_decref(obj);
    if (err) {
        rw_sim_buf_free(&out);
        return send_admin_error(c, MHD_HTTP_BAD_REQUEST, errstr);
    }
    return send_buf(c, MHD_HTTP_OK, &out);
}

/*
 * GET of an environment's route, /sim/env/<project>/<environment>[/...]
 * (libmicrohttpd has decoded the path): its health answer, so a check of
 * "{route}/healthz" or of the route itself works.
 */
static enum MHD_Result handle_env(rw_sim_http_t *http, struct MHD_Connection *c,
                                  const char *path)
{
    const char *slash = strchr(path, '/');
    size_t plen = slash ? (size_t)(slash - path) : 0;
    const char *env = slash ? slash + 1 : "";
    size_t elen = strcspn(env, "/");
    rw_sim_buf_t out;
    int status;

    if (plen == 0 || elen == 0)
        return send_admin_error(c, MHD_HTTP_NOT_FOUND, "not found");
    status = rw_sim_health(http->sim, path, plen, env, elen);
    rw_sim_buf_init(&out);
    rw_sim_buf_puts(&out, status == 200 ? "{\"ok\":true}" : "{\"ok\":false}");
    return send_buf(c, (unsigned)status, &out);
}

static bool is_false(const char *v)
{
    return v && (strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0 ||
                 strcasecmp(v, "no") == 0);
}

static enum MHD_Result route(rw_sim_http_t *http, struct MHD_Connection *c,
                             const char *url, const char *method, req_t *r)
{
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    rw_sim_buf_t out;

    if (r->too_large)
        return send_errors(c, MHD_HTTP_CONTENT_TOO_LARGE,
                           "Request entity too large");
    rw_sim_buf_init(&out);
    if (strcmp(url, "/graphql") == 0) {
        if (post)
            return handle_graphql(http, c, r);
        return send_errors(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                           "GraphQL only supports POST requests here.");
    }
    if (strcmp(url, "/sim/stats") == 0 && get) {
        const char *t =
            MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "triggers");
        const char *tl =
            MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "timeline");
        rw_sim_stats_json(http->sim, !is_false(t), tl && !is_false(tl), &out);
        return send_buf(c, MHD_HTTP_OK, &out);
    }
    if (strcmp(url, "/sim/config") == 0 && get) {
        rw_sim_config_get(http->sim, &out);
        return send_buf(c, MHD_HTTP_OK, &out);
    }
    if (strcmp(url, "/sim/config") == 0 && post)
        return handle_config(http, c, r);
    if (strcmp(url, "/sim/reset") == 0 && post) {
        rw_sim_reset(http->sim);
        rw_sim_buf_puts(&out, "{\"ok\":true}");
        return send_buf(c, MHD_HTTP_OK, &out);
    }
    if (strncmp(url, "/sim/env/", 9) == 0 && get)
        return handle_env(http, c, url + 9);
    if (strcmp(url, "/healthz") == 0 && get) {
        rw_sim_buf_puts(&out, "{\"ok\":true}");
        return send_buf(c, MHD_HTTP_OK, &out);
    }
    return send_admin_error(c, MHD_HTTP_NOT_FOUND, "not found");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    rw_sim_http_t *http = cls;
    req_t *r = *con_cls;

    (void)version;
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        rw_sim_buf_init(&r->body);
        r->t_arrival_us = mono_us();
        *con_cls = r;
        return MHD_YES;
    }
    if (*upload_size) {
        if (r->body.len + *upload_size > MAX_BODY)
            r->too_large = true;
        else
            rw_sim_buf_add(&r->body, upload, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }
    if (rw_sim_buf_failed(&r->body))
        return send_errors(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                           "Internal server error: out of memory");
    return route(http, c, url, method, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    req_t *r = *con_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (!r)
        return;
    rw_sim_buf_free(&r->body);
    free(r);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], q[600];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    /* Injected drops make libmicrohttpd complain too: keep it quiet. */
    rw_debug(COMP, "event=http_error detail=%s",
             rw_log_quote(q, sizeof(q), msg));
}

static rw_err_t resolve(const char *host, int port, struct sockaddr_storage *ss,
                        char *errstr, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "cannot resolve host '%s': %s", host,
                          gai_strerror(rc));
    memset(ss, 0, sizeof(*ss));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return RW_OK;
}

rw_err_t rw_sim_http_start(rw_sim_t *sim, const char *host, int port,
                           const char *token, rw_sim_http_t **out, char *errstr,
                           size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_sim_http_t *http = calloc(1, sizeof(*http));
    struct sockaddr_storage ss;
    const union MHD_DaemonInfo *info;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD |
                     MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;

    *out = NULL;
    if (!http)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    pthread_mutex_init(&http->mu, NULL);
    pthread_cond_init(&http->cv, NULL);
    http->sim = sim;
    http->token = strdup(token);
    if (!http->token) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    err = resolve(host, port, &ss, errstr, errlen);
    if (err)
        goto out;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    http->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, http,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, http,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)300,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, http, MHD_OPTION_END);
    if (!http->daemon) {
        err = rw_err_set(errstr, errlen, RW_ERR_IO, "cannot listen on %s:%d",
                         host, port);
        goto out;
    }
    info = MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    http->port = info ? info->port : port;
    *out = http;
    http = NULL;
out:
    rw_sim_http_stop(http);
    return err;
}

int rw_sim_http_port(const rw_sim_http_t *http)
{
    return http->port;
}

void rw_sim_http_stop(rw_sim_http_t *http)
{
    if (!http)
        return;
    pthread_mutex_lock(&http->mu);
    http->stopping = true;
    pthread_cond_broadcast(&http->cv);
    pthread_mutex_unlock(&http->mu);
    if (http->daemon)
        MHD_stop_daemon(http->daemon);
    pthread_cond_destroy(&http->cv);
    pthread_mutex_destroy(&http->mu);
    free(http->token);
    free(http);
}
