/*
 * rw_redis: a blocking hiredis connection with reconnect, and pipelined
 * instance locks (Lua scripts called with EVALSHA).
 *
 * It does not pool connections, does not run in the background and does
 * not know what a lock protects. Nothing here logs the URL or the password:
 * logs and errstr name the server as host:port or the socket path only.
 */
#include "rw_redis.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "rw_log.h"

#define DEFAULT_TIMEOUT_MS 2000

enum { SCRIPT_ACQUIRE, SCRIPT_RELEASE, SCRIPT_RENEW, SCRIPT__COUNT };

/*
 * KEYS[1] = lock key, ARGV[1] = owner, ARGV[2] = ttl in ms. Each returns 1
 * when the caller holds (acquire), dropped (release) or extended (renew)
 * the lock, else 0. GET on a key of another type fails with WRONGTYPE,
 * which the caller sees as an error reply rather than a silent 0.
 */
static const char *const script_src[SCRIPT__COUNT] = {
    [SCRIPT_ACQUIRE] =
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then "
        "return 1 end "
        "if redis.call('GET', KEYS[1]) == ARGV[1] then "
        "redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end "
        "return 0",
    [SCRIPT_RELEASE] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                       "return redis.call('DEL', KEYS[1]) end "
                       "return 0",
    [SCRIPT_RENEW] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                     "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
                     "return 0",
};

struct rw_redis {
    redisContext *c; /* NULL after a failure: the next call reconnects */
    rw_redis_url_t url;
    struct timeval tv;
    char where[300]; /* host:port or socket path, for logs and errstr */
    int scripts_loaded;
    char sha[SCRIPT__COUNT][41];
    unsigned long long round_trips;
};

/* ---- URL parsing ------------------------------------------------------ */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* Percent-decode [s, s+n) into out; -1 on bad escape or overflow. */
static int pct_decode(char *out, size_t outlen, const char *s, size_t n)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -1;
            hi = hexval((unsigned char)s[i + 1]);
            lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            ch = hi * 16 + lo;
            i += 2;
        }
        if (ch == 0 || o + 1 >= outlen)
            return -1;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return 0;
}

/* Parse all of [s, s+n) as a decimal in [min, max]; -1 when it is not. */
static int parse_dec(const char *s, size_t n, long min, long max, long *out)
{
    long v = 0;

    if (n == 0 || n > 10)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static rw_err_t parse_unix(rw_redis_url_t *u, const char *rest, char *errstr,
                           size_t errlen)
{
    const char *q = strchr(rest, '?');
    size_t plen = q ? (size_t)(q - rest) : strlen(rest);
    long db;

    if (plen < 2 || rest[0] != '/')
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "redis unix URL needs an absolute socket path: "
                          "unix:///path/to/redis.sock");
    if (plen >= sizeof(u->path))
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "redis unix socket path is too long");
    memcpy(u->path, rest, plen);
    u->path[plen] = '\0';
    u->is_unix = 1;
    if (q) {
        if (strncmp(q + 1, "db=", 3) != 0 ||
            parse_dec(q + 4, strlen(q + 4), 0, INT_MAX, &db) != 0)
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "redis unix URL accepts only ?db=N "
                              "(N a non-negative integer)");
        u->db = (int)db;
    }
    return RW_OK;
}

static rw_err_t parse_userinfo(rw_redis_url_t *u, const char *s, size_t n,
                               char *errstr, size_t errlen)
{
    const char *colon = memchr(s, ':', n);

    if (!colon)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "redis URL credentials need a colon before the "
                          "password: redis://[user]:password@host:port");
    if (pct_decode(u->username, sizeof(u->username), s, (size_t)(colon - s)) !=
        0)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "redis URL user name is too long or badly "
                          "percent-encoded");
    if (pct_decode(u->password, sizeof(u->password), colon + 1,
                   n - (size_t)(colon - s) - 1) != 0)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "redis URL password is too long or badly "
                          "percent-encoded");
    return RW_OK;
}

static rw_err_t parse_hostport(rw_redis_url_t *u, const char *s, size_t n,
                               char *errstr, size_t errlen)
{
    const char *host = s, *port = NULL;
    size_t hlen;
    long pv;

    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close)
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "redis URL has an unterminated [IPv6] host");
        host = s + 1;
        hlen = (size_t)(close - host);
        if ((size_t)(close + 1 - s) < n) {
            if (close[1] != ':')
                return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                                  "redis URL: expected ':port' after "
                                  "the [IPv6] host");
            port = close + 2;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        hlen = colon ? (size_t)(colon - s) : n;
        if (colon)
            port = colon + 1;
    }
    if (hlen == 0)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "redis URL has no host");
    if (hlen >= sizeof(u->host))
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "redis URL host is too long");
    memcpy(u->host, host, hlen);
    u->host[hlen] = '\0';
    if (port) {
        if (parse_dec(port, n - (size_t)(port - s), 1, 65535, &pv) != 0)
            return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                              "redis URL has a bad port (expected 1-65535)");
        u->port = (int)pv;
    }
    return RW_OK;
}

rw_err_t rw_redis_url_parse(rw_redis_url_t *u, const char *url, char *errstr,
                            size_t errlen)
{
    rw_err_t err = RW_OK;
    const char *rest, *at, *slash, *hp;
    size_t hplen;
    long db;

    if (!u || !url)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "redis URL is missing");
    memset(u, 0, sizeof(*u));
    u->port = 6379;

    if (strncmp(url, "rediss://", 9) == 0)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "rediss:// (TLS) is not supported: this hiredis "
                          "(0.14) has no TLS; use redis:// to a "
                          "TLS-terminating proxy (e.g. stunnel) instead");
    if (strncmp(url, "unix://", 7) == 0)
        return parse_unix(u, url + 7, errstr, errlen);
    if (strncmp(url, "redis://", 8) != 0)
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "redis URL must start with redis:// or unix://");
    rest = url + 8;

    /*
     * The last '@' ends the credentials, so a password may contain '@' or
     * '/' unencoded; host, port and db never contain '@'.
     */
    at = strrchr(rest, '@');
    if (at) {
        err = parse_userinfo(u, rest, (size_t)(at - rest), errstr, errlen);
        if (err)
            goto out;
        hp = at + 1;
    } else {
        hp = rest;
    }
    if (strchr(hp, '?') || strchr(hp, '#')) {
        err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                         "redis URL options (?...) are not supported");
        goto out;
    }
    slash = strchr(hp, '/');
    hplen = slash ? (size_t)(slash - hp) : strlen(hp);
    err = parse_hostport(u, hp, hplen, errstr, errlen);
    if (err)
        goto out;
    if (slash && slash[1] != '\0') {
        if (parse_dec(slash + 1, strlen(slash + 1), 0, INT_MAX, &db) != 0) {
            err = rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                             "redis URL has a bad database number "
                             "(expected /N, N >= 0)");
            goto out;
        }
        u->db = (int)db;
    }
out:
    if (err)
        memset(u->password, 0, sizeof(u->password));
    return err;
}

/* ---- error replies ---------------------------------------------------- */

/*
 * Error replies that describe the server's state rather than the command:
 * the same command succeeds once the server has loaded its data set, a
 * failover has promoted a primary, a slow script has ended or memory has
 * been freed. Matched on the error code, the first word of the reply.
 */
static const char *const unavailable_codes[] = {
    "LOADING",     /* loading the data set after a restart */
    "READONLY",    /* we reached a replica, e.g. just after a failover */
    "BUSY",        /* a script or function runs past its time limit */
    "OOM",         /* maxmemory reached, writes refused */
    "MISCONF",     /* RDB snapshot failing, writes refused */
    "TRYAGAIN",    /* cluster resharding in progress */
    "CLUSTERDOWN", /* cluster slots not covered */
    "MASTERDOWN",  /* replica lost its primary (replica-serve-stale-data) */
    "NOREPLICAS",  /* min-replicas-to-write not met */
};

/* Redis 6 wraps an error raised by redis.call() inside a script. */
#define SCRIPT_WRAP "ERR Error running script"

static int code_is(const char *s, const char *code)
{
    size_t n = strlen(code);

    return strncmp(s, code, n) == 0 && (s[n] == ' ' || s[n] == '\0');
}

rw_err_t rw_redis_classify_reply(const char *errstr_from_server)
{
    const char *s = errstr_from_server, *inner;

    if (!s)
        return RW_ERR_REDIS_REPLY;
    /*
     * "... @user_script: 1: -READONLY You can't write ...": the server
     * state is the inner code. Redis 7 passes the code through unwrapped.
     */
    if (strncmp(s, SCRIPT_WRAP, strlen(SCRIPT_WRAP)) == 0) {
        inner = strstr(s, ": -");
        while (inner && strstr(inner + 3, ": -"))
            inner = strstr(inner + 3, ": -");
        if (inner)
            s = inner + 3;
    }
    for (size_t i = 0;
         i < sizeof(unavailable_codes) / sizeof(*unavailable_codes); i++)
        if (code_is(s, unavailable_codes[i]))
            return RW_ERR_REDIS_UNAVAILABLE;
    return RW_ERR_REDIS_REPLY;
}

/* The code for a reply that is not what the command expects. */
static rw_err_t reply_err(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR ? rw_redis_classify_reply(r->str)
                                        : RW_ERR_REDIS_REPLY;
}

/* ---- connection ------------------------------------------------------- */

/*
 * Record why the connection failed, drop it (a hiredis context is unusable
 * after an I/O error) and classify: a receive timeout is RW_ERR_TIMEOUT,
 * everything else means the connection is gone.
 */
static rw_err_t io_fail(rw_redis_t *rc, const char *what, char *errstr,
                        size_t errlen)
{
    int saved = errno;
    int timed_out =
        rc->c->err == REDIS_ERR_IO && (saved == EAGAIN || saved == EWOULDBLOCK);
    rw_err_t err = timed_out ? RW_ERR_TIMEOUT : RW_ERR_REDIS_CONN;

    if (rc->c->err == REDIS_ERR_OOM)
        err = RW_ERR_NOMEM;
    rw_err_set(errstr, errlen, err, "redis %s on %s: %s", what, rc->where,
               timed_out ? "timed out" : rc->c->errstr);
    redisFree(rc->c);
    rc->c = NULL;
    rc->scripts_loaded = 0;
    return err;
}

/* One command on the current connection, no retry. Caller frees *rp. */
static rw_err_t raw_command(rw_redis_t *rc, redisReply **rp, const char *what,
                            char *errstr, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    redisReply *r;

    va_start(ap, fmt);
    r = redisvCommand(rc->c, fmt, ap);
    va_end(ap);
    rc->round_trips++;
    if (!r)
        return io_fail(rc, what, errstr, errlen);
    *rp = r;
    return RW_OK;
}

/*
 * AUTH or SELECT refused: wrong credentials or database are configuration,
 * but a server that is still loading or out of memory will accept them.
 */
static rw_err_t config_or_unavailable(const redisReply *r)
{
    rw_err_t err = rw_redis_classify_reply(r->str);

    return err == RW_ERR_REDIS_UNAVAILABLE ? err : RW_ERR_CONFIG;
}

static rw_err_t do_connect(rw_redis_t *rc, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    redisReply *r = NULL;
    redisContext *c;

    if (rc->url.is_unix)
        c = redisConnectUnixWithTimeout(rc->url.path, rc->tv);
    else
        c = redisConnectWithTimeout(rc->url.host, rc->url.port, rc->tv);
    if (!c)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM,
                          "redis connect to %s: out of memory", rc->where);
    if (c->err) {
        err = rw_err_set(errstr, errlen, RW_ERR_REDIS_CONN,
                         "redis connect to %s: %s", rc->where, c->errstr);
        redisFree(c);
        return err;
    }
    if (redisSetTimeout(c, rc->tv) != REDIS_OK) {
        err = rw_err_set(errstr, errlen, RW_ERR_REDIS_CONN,
                         "redis set timeout on %s: %s", rc->where, c->errstr);
        redisFree(c);
        return err;
    }
    if (!rc->url.is_unix)
        redisEnableKeepAlive(c);
    rc->c = c;
    rc->scripts_loaded = 0;

    if (rc->url.password[0]) {
        if (rc->url.username[0])
            err = raw_command(rc, &r, "AUTH", errstr, errlen, "AUTH %s %s",
                              rc->url.username, rc->url.password);
        else
            err = raw_command(rc, &r, "AUTH", errstr, errlen, "AUTH %s",
                              rc->url.password);
        if (err)
            goto out;
        /* Redis's AUTH error text never repeats the password. */
        if (r->type == REDIS_REPLY_ERROR) {
            err = config_or_unavailable(r);
            rw_err_set(errstr, errlen, err, "redis AUTH on %s refused: %s",
                       rc->where, r->str);
            goto out;
        }
        freeReplyObject(r);
        r = NULL;
    }
    if (rc->url.db != 0) {
        err = raw_command(rc, &r, "SELECT", errstr, errlen, "SELECT %d",
                          rc->url.db);
        if (err)
            goto out;
        if (r->type == REDIS_REPLY_ERROR) {
            err = config_or_unavailable(r);
            rw_err_set(errstr, errlen, err, "redis SELECT %d on %s refused: %s",
                       rc->url.db, rc->where, r->str);
            goto out;
        }
    }
    rw_debug("redis", "event=connected addr=%s db=%d", rc->where, rc->url.db);
out:
    if (r)
        freeReplyObject(r);
    if (err && rc->c) {
        redisFree(rc->c);
        rc->c = NULL;
    }
    return err;
}

rw_err_t rw_redis_new(rw_redis_t **rcp, const char *url, long timeout_ms,
                      char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_redis_t *rc = NULL;
    struct sigaction sa;

    if (!rcp)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "rw_redis_new: rcp is NULL");
    *rcp = NULL;
    rc = calloc(1, sizeof(*rc));
    if (!rc)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    err = rw_redis_url_parse(&rc->url, url, errstr, errlen);
    if (err)
        goto out;
    if (timeout_ms <= 0)
        timeout_ms = DEFAULT_TIMEOUT_MS;
    rc->tv.tv_sec = timeout_ms / 1000;
    rc->tv.tv_usec = (timeout_ms % 1000) * 1000;
    if (rc->url.is_unix)
        snprintf(rc->where, sizeof(rc->where), "%s", rc->url.path);
    else if (strchr(rc->url.host, ':'))
        snprintf(rc->where, sizeof(rc->where), "[%s]:%d", rc->url.host,
                 rc->url.port);
    else
        snprintf(rc->where, sizeof(rc->where), "%s:%d", rc->url.host,
                 rc->url.port);

    /*
     * hiredis writes with write(2): a server that closed the connection
     * would raise SIGPIPE and kill the daemon instead of letting us
     * reconnect. Ignore it unless the program already chose a handler.
     */
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);

    err = do_connect(rc, errstr, errlen);
out:
    if (err) {
        rw_redis_destroy(rc);
        return err;
    }
    *rcp = rc;
    return RW_OK;
}

void rw_redis_destroy(rw_redis_t *rc)
{
    if (!rc)
        return;
    if (rc->c)
        redisFree(rc->c);
    /* The password should not outlive the handle in freed memory. */
    memset(rc->url.password, 0, sizeof(rc->url.password));
    free(rc);
}

unsigned long long rw_redis_round_trips(const rw_redis_t *rc)
{
    return rc ? rc->round_trips : 0;
}

/* Log why we reconnect: the reason io_fail() just wrote into errstr. */
static void log_reconnect(rw_redis_t *rc, const char *errstr, size_t errlen)
{
    char q[256];

    rw_warn("redis", "event=reconnect addr=%s reason=%s", rc->where,
            rw_log_quote(q, sizeof(q),
                         errstr && errlen ? errstr : "connection lost"));
}

/*
 * One command with the reconnect policy: connect first if a previous
 * failure dropped the connection; if the connection turns out lost, connect
 * again and retry once. Caller frees *rp.
 */
static rw_err_t command(rw_redis_t *rc, redisReply **rp, const char *what,
                        char *errstr, size_t errlen, const char *fmt, ...)
{
    rw_err_t err = RW_OK;
    va_list ap;

    *rp = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (!rc->c) {
            err = do_connect(rc, errstr, errlen);
            if (err)
                return err;
        }
        va_start(ap, fmt);
        *rp = redisvCommand(rc->c, fmt, ap);
        va_end(ap);
        rc->round_trips++;
        if (*rp)
            return RW_OK;
        err = io_fail(rc, what, errstr, errlen);
        if (err != RW_ERR_REDIS_CONN)
            return err;
        if (attempt == 0)
            log_reconnect(rc, errstr, errlen);
    }
    return err;
}

rw_err_t rw_redis_ping(rw_redis_t *rc, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    redisReply *r = NULL;

    if (!rc)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "rw_redis_ping: rc is NULL");
    err = command(rc, &r, "PING", errstr, errlen, "PING");
    if (err)
        goto out;
    if (r->type != REDIS_REPLY_STATUS || strcmp(r->str, "PONG") != 0)
        err = rw_err_set(errstr, errlen, reply_err(r),
                         "redis PING on %s: unexpected reply%s%s", rc->where,
                         r->type == REDIS_REPLY_ERROR ? ": " : "",
                         r->type == REDIS_REPLY_ERROR ? r->str : "");
out:
    if (r)
        freeReplyObject(r);
    return err;
}

rw_err_t rw_redis_client_id(rw_redis_t *rc, long long *id, char *errstr,
                            size_t errlen)
{
    rw_err_t err = RW_OK;
    redisReply *r = NULL;

    if (!rc || !id)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "rw_redis_client_id: NULL argument");
    err = command(rc, &r, "CLIENT ID", errstr, errlen, "CLIENT ID");
    if (err)
        goto out;
    if (r->type != REDIS_REPLY_INTEGER) {
        err = rw_err_set(errstr, errlen, reply_err(r),
                         "redis CLIENT ID on %s: %s", rc->where,
                         r->type == REDIS_REPLY_ERROR ? r->str
                                                      : "unexpected reply");
        goto out;
    }
    *id = r->integer;
out:
    if (r)
        freeReplyObject(r);
    return err;
}

/* ---- locks ------------------------------------------------------------ */

void rw_redis_lock_key(char *buf, size_t len, const char *prefix,
                       long long instance_id)
{
    snprintf(buf, len, "%slock:instance:%lld", prefix ? prefix : "",
             instance_id);
}

bool rw_redis_lock_renew_due(long long ttl_ms, long long age_ms)
{
    return age_ms < 0 || age_ms >= ttl_ms / 2;
}

/* SCRIPT LOAD all scripts in one pipeline on the current connection. */
static rw_err_t load_scripts(rw_redis_t *rc, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    redisReply *r = NULL;

    for (int i = 0; i < SCRIPT__COUNT; i++)
        if (redisAppendCommand(rc->c, "SCRIPT LOAD %s", script_src[i]) !=
            REDIS_OK)
            return io_fail(rc, "SCRIPT LOAD", errstr, errlen);
    rc->round_trips++;
    for (int i = 0; i < SCRIPT__COUNT; i++) {
        if (redisGetReply(rc->c, (void **)&r) != REDIS_OK)
            return io_fail(rc, "SCRIPT LOAD", errstr, errlen);
        if (err == RW_OK && (r->type != REDIS_REPLY_STRING || r->len != 40))
            err = rw_err_set(errstr, errlen, reply_err(r),
                             "redis SCRIPT LOAD on %s: %s", rc->where,
                             r->type == REDIS_REPLY_ERROR ? r->str
                                                          : "unexpected reply");
        else if (err == RW_OK)
            memcpy(rc->sha[i], r->str, 41);
        freeReplyObject(r);
    }
    if (err == RW_OK)
        rc->scripts_loaded = 1;
    return err;
}

/*
 * One pipeline: EVALSHA script for every key, then read n replies (all of
 * them, even after an error reply, so the connection stays in step).
 * *noscript is set when the server did not know the script. The owner of
 * keys[i] is owners[i], or owner for all of them when owners is NULL.
 */
static rw_err_t pipeline(rw_redis_t *rc, int script, const char *const *keys,
                         size_t n, const char *owner, const char *const *owners,
                         long long ttl_ms, int *out, int *noscript,
                         char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    redisReply *r = NULL;
    const char *what = script == SCRIPT_ACQUIRE   ? "lock acquire"
                       : script == SCRIPT_RELEASE ? "lock release"
                                                  : "lock renew";

    *noscript = 0;
    for (size_t i = 0; i < n; i++)
        if (redisAppendCommand(rc->c, "EVALSHA %s 1 %s %s %lld",
                               rc->sha[script], keys[i],
                               owners ? owners[i] : owner, ttl_ms) != REDIS_OK)
            return io_fail(rc, what, errstr, errlen);
    rc->round_trips++;
    for (size_t i = 0; i < n; i++) {
        if (redisGetReply(rc->c, (void **)&r) != REDIS_OK)
            return io_fail(rc, what, errstr, errlen);
        if (r->type == REDIS_REPLY_INTEGER) {
            out[i] = r->integer > 0;
        } else if (r->type == REDIS_REPLY_ERROR &&
                   strncmp(r->str, "NOSCRIPT", 8) == 0) {
            *noscript = 1;
        } else if (err == RW_OK) {
            err = rw_err_set(
                errstr, errlen, reply_err(r), "redis %s of %s on %s: %s", what,
                keys[i], rc->where,
                r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        }
        freeReplyObject(r);
    }
    return err;
}

static rw_err_t run_locks(rw_redis_t *rc, int script, const char *const *keys,
                          size_t n, const char *owner,
                          const char *const *owners, long long ttl_ms, int *out,
                          char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    int lost = 0, reloaded = 0, noscript = 0;

    if (!rc || (n > 0 && (!keys || !out)) ||
        (owners ? n > 0 && !owners[0] : !owner || !owner[0]))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "redis lock: missing handle, keys, owner or "
                          "result array");
    if (script != SCRIPT_RELEASE && ttl_ms <= 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "redis lock: ttl_ms must be positive");
    for (size_t i = 0; i < n; i++) {
        if (!keys[i] || !keys[i][0])
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "redis lock: key %zu is empty", i);
        if (owners && (!owners[i] || !owners[i][0]))
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "redis lock: owner %zu is empty", i);
        out[i] = 0;
    }
    if (n == 0)
        return RW_OK;

    for (;;) {
        err = RW_OK;
        if (!rc->c) {
            err = do_connect(rc, errstr, errlen);
            if (err)
                return err;
        }
        if (!rc->scripts_loaded)
            err = load_scripts(rc, errstr, errlen);
        if (err == RW_OK)
            err = pipeline(rc, script, keys, n, owner, owners, ttl_ms, out,
                           &noscript, errstr, errlen);
        if (err == RW_ERR_REDIS_CONN && !lost) {
            /* Scripts are idempotent: sending the batch again is safe. */
            lost = 1;
            log_reconnect(rc, errstr, errlen);
            continue;
        }
        if (err == RW_OK && noscript && !reloaded) {
            /* SCRIPT FLUSH or a restarted server: load and resend once. */
            reloaded = 1;
            rc->scripts_loaded = 0;
            continue;
        }
        if (err == RW_OK && noscript)
            err = rw_err_set(errstr, errlen, RW_ERR_REDIS_REPLY,
                             "redis on %s keeps answering NOSCRIPT", rc->where);
        return err;
    }
}

rw_err_t rw_redis_lock_acquire(rw_redis_t *rc, const char *const *keys,
                               size_t n, const char *owner, long long ttl_ms,
                               int *acquired, char *errstr, size_t errlen)
{
    return run_locks(rc, SCRIPT_ACQUIRE, keys, n, owner, NULL, ttl_ms, acquired,
                     errstr, errlen);
}

rw_err_t rw_redis_lock_release(rw_redis_t *rc, const char *const *keys,
                               size_t n, const char *owner, int *released,
                               char *errstr, size_t errlen)
{
    /* The release script ignores ARGV[2]; 0 keeps one command format. */
    return run_locks(rc, SCRIPT_RELEASE, keys, n, owner, NULL, 0, released,
                     errstr, errlen);
}

rw_err_t rw_redis_lock_release_each(rw_redis_t *rc, const char *const *keys,
                                    const char *const *owners, size_t n,
                                    int *released, char *errstr, size_t errlen)
{
    if (n == 0)
        return RW_OK;
    if (!owners)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "redis lock: missing owners");
    return run_locks(rc, SCRIPT_RELEASE, keys, n, NULL, owners, 0, released,
                     errstr, errlen);
}

rw_err_t rw_redis_lock_renew(rw_redis_t *rc, const char *const *keys, size_t n,
                             const char *owner, long long ttl_ms, int *renewed,
                             char *errstr, size_t errlen)
{
    return run_locks(rc, SCRIPT_RENEW, keys, n, owner, NULL, ttl_ms, renewed,
                     errstr, errlen);
}
