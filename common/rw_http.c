/*
 * rw_http: /metrics and /healthz on libmicrohttpd.
 *
 * One internal polling thread answers every request from memory, so a slow
 * or stuck scraper cannot hold up the daemon's main loop. It does not parse
 * request bodies, does not keep state between requests and does not decide
 * what "healthy" means: the daemon's health callback does.
 */
#include "rw_http.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "rw_log.h"
#include "rw_metrics.h"

/*
 * A scrape and a probe or two at a time is the normal load; the limit
 * only keeps a misbehaving client from exhausting file descriptors.
 */
#define CONNECTION_LIMIT 32
/* Seconds of inactivity before an idle or stalled connection is closed. */
#define CONNECTION_TIMEOUT_S 10
#define DETAIL_MAX           512

#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CT_TEXT    "text/plain; charset=utf-8"

struct rw_http {
    struct MHD_Daemon *d;
    rw_http_health_fn health;
    void *ud;
    int port;
};

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], q[600];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    rw_warn("http", "event=server_error msg=%s",
            rw_log_quote(q, sizeof(q), msg));
}

/*
 * Queue a response. body is either copied (own = 0) or handed over to MHD,
 * which frees it with free() (own = 1).
 */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned int status,
                             const char *ctype, char *body, int own)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(strlen(body), body,
                                           own ? MHD_RESPMEM_MUST_FREE
                                               : MHD_RESPMEM_MUST_COPY);
    if (!resp) {
        if (own)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result serve_metrics(struct MHD_Connection *conn)
{
    char *body = rw_metrics_render();

    if (!body)
        return reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, CT_TEXT,
                     (char *)"out of memory\n", 0);
    return reply(conn, MHD_HTTP_OK, CT_METRICS, body, 1);
}

static enum MHD_Result serve_health(rw_http_t *h, struct MHD_Connection *conn)
{
    char detail[DETAIL_MAX] = {0};
    char body[DETAIL_MAX + 2];
    rw_err_t err = RW_OK;

    if (h->health)
        err = h->health(h->ud, detail, sizeof(detail));
    if (err == RW_OK)
        return reply(conn, MHD_HTTP_OK, CT_TEXT, (char *)"ok\n", 0);
    detail[sizeof(detail) - 1] = '\0';
    snprintf(body, sizeof(body), "%s\n", detail[0] ? detail : rw_err_str(err));
    return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, CT_TEXT, body, 0);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn,
                              const char *url, const char *method,
                              const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    rw_http_t *h = cls;
    int known = strcmp(url, "/metrics") == 0 || strcmp(url, "/healthz") == 0;

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    if (!known)
        return reply(conn, MHD_HTTP_NOT_FOUND, CT_TEXT, (char *)"not found\n",
                     0);
    /* MHD drops the body of a HEAD answer itself. */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, CT_TEXT,
                     (char *)"method not allowed\n", 0);
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(conn);
    return serve_health(h, conn);
}

rw_err_t rw_http_start(rw_http_t **hp, const char *bind_addr, int port,
                       rw_http_health_fn health, void *ud, char *errstr,
                       size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_http_t *h = NULL;
    struct addrinfo hints, *ai = NULL;
    const union MHD_DaemonInfo *info;
    unsigned int flags;
    char portstr[16];
    int rc;

    if (!hp)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "rw_http_start: hp is NULL");
    *hp = NULL;
    if (port < 0 || port > 65535)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "http: port %d is out of range 0-65535", port);
    if (!bind_addr || !bind_addr[0])
        bind_addr = "0.0.0.0";

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    snprintf(portstr, sizeof(portstr), "%d", port);
    rc = getaddrinfo(bind_addr, portstr, &hints, &ai);
    if (rc != 0) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "http: cannot resolve bind address %s: %s", bind_addr,
                         gai_strerror(rc));
        goto out;
    }

    h = calloc(1, sizeof(*h));
    if (!h) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    h->health = health;
    h->ud = ud;

    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    errno = 0;
    h->d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, handle, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
        ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)CONNECTION_TIMEOUT_S, MHD_OPTION_END);
    if (!h->d) {
        err = rw_err_set(errstr, errlen, RW_ERR_IO,
                         "http: cannot listen on %s port %d: %s", bind_addr,
                         port, errno ? strerror(errno) : "unknown error");
        goto out;
    }
    info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || info->port == 0) {
        err = rw_err_set(errstr, errlen, RW_ERR_IO,
                         "http: cannot tell which port the server uses");
        goto out;
    }
    h->port = info->port;
    rw_info("http", "event=listening addr=%s port=%d", bind_addr, h->port);
out:
    if (ai)
        freeaddrinfo(ai);
    if (err) {
        rw_http_stop(h);
        return err;
    }
    *hp = h;
    return RW_OK;
}

int rw_http_port(const rw_http_t *h)
{
    return h ? h->port : 0;
}

void rw_http_stop(rw_http_t *h)
{
    if (!h)
        return;
    if (h->d)
        MHD_stop_daemon(h->d);
    free(h);
}
