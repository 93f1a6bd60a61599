/*
 * rw_health: health-gate URLs and checks. Templates are expanded here and
 * nowhere else, so the rule the strategy parser checks is the rule the
 * poller applies. Checks run on one curl multi handle per batch.
 */
#include "rw_health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rw_curl.h"
#include "rw_daemon.h"
#include "rw_lagoon.h"

/* The placeholders a template may use. */
typedef enum part { PART_ROUTE, PART_PROJECT, PART_ENVIRONMENT } part_t;

static const struct {
    const char *name;
    part_t part;
} placeholders[] = {
    {"{route}", PART_ROUTE},
    {"{project}", PART_PROJECT},
    {"{environment}", PART_ENVIRONMENT},
};

typedef struct out {
    char *buf;
    size_t len, at;
    bool full;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->at + n >= o->len) {
        o->full = true;
        return;
    }
    memcpy(o->buf + o->at, s, n);
    o->at += n;
    o->buf[o->at] = '\0';
}

/* Percent-encoding of a path segment: unreserved characters stay. */
static void put_encoded(out_t *o, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
            c == '~') {
            put(o, s, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            put(o, e, 3);
        }
    }
}

static bool is_http(const char *s)
{
    return strncasecmp(s, "http://", 7) == 0 ||
           strncasecmp(s, "https://", 8) == 0;
}

/*
 * The one walk over a template: values NULL only checks it. Substitutes
 * into o when values are given.
 */
static rw_err_t expand(const char *tmpl, const char *const *values, out_t *o,
                       char *errstr, size_t errlen)
{
    const char *p = tmpl;

    if (!tmpl || !*tmpl)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "health.url: empty");
    if (!is_http(tmpl) && strncmp(tmpl, "{route}", 7) != 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "health.url: does not start with http://, "
                          "https:// or {route}");
    while (*p) {
        const char *close;
        size_t i, n;

        if (*p == '}')
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "health.url: '}' without '{'");
        if (*p != '{') {
            n = strcspn(p, "{}");
            if (o)
                put(o, p, n);
            p += n;
            continue;
        }
        close = strchr(p, '}');
        if (!close)
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "health.url: '{' without '}'");
        n = (size_t)(close - p) + 1;
        for (i = 0; i < sizeof(placeholders) / sizeof(placeholders[0]); i++)
            if (strlen(placeholders[i].name) == n &&
                strncmp(placeholders[i].name, p, n) == 0)
                break;
        if (i == sizeof(placeholders) / sizeof(placeholders[0]))
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "health.url: unknown placeholder %.*s (known: "
                              "{route}, {project}, {environment})",
                              (int)(n > 40 ? 40 : n), p);
        /* the route is inserted as is: anywhere but at the start, or
         * followed by more than a path or query, it could change the
         * host ("{route}@evil.example/") */
        if (placeholders[i].part == PART_ROUTE &&
            (p != tmpl || (p[n] != '\0' && p[n] != '/' && p[n] != '?')))
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "health.url: {route} only at the start, "
                              "followed by '/', '?' or nothing");
        if (values && o) {
            const char *v = values[placeholders[i].part];
            if (placeholders[i].part == PART_ROUTE) {
                if (!v || !*v)
                    return rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                                      "the environment has no route");
                put(o, v, strlen(v));
            } else {
                put_encoded(o, v ? v : "");
            }
        }
        p += n;
    }
    return RW_OK;
}

rw_err_t rw_health_url_check(const char *tmpl, char *errstr, size_t errlen)
{
    return expand(tmpl, NULL, NULL, errstr, errlen);
}

rw_err_t rw_health_url(const char *tmpl, const char *route, const char *project,
                       const char *environment, char *url, size_t len,
                       char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    const char *values[3] = {route, project, environment};
    out_t o = {url, len, 0, false};

    if (!url || len == 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "health.url: no buffer");
    url[0] = '\0';
    err = expand(tmpl, values, &o, errstr, errlen);
    if (err)
        goto out;
    if (o.full) {
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "health.url: longer than %zu characters", len - 1);
        goto out;
    }
    /* a route that is not a URL would make curl guess */
    if (!is_http(url))
        err = rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                         "health.url: not an http(s) URL");
out:
    if (err)
        url[0] = '\0';
    return err;
}

void rw_health_url_display(const char *url, char *buf, size_t len)
{
    const char *scheme = strstr(url ? url : "", "://");
    const char *auth = scheme ? scheme + 3 : url;
    size_t host_end, at;
    out_t o = {buf, len, 0, false};

    if (!buf || len == 0)
        return;
    buf[0] = '\0';
    if (!url)
        return;
    put(&o, url, (size_t)(auth - url));
    host_end = strcspn(auth, "/?#");
    at = strcspn(auth, "@");
    if (at < host_end)
        auth += at + 1;
    put(&o, auth, strcspn(auth, "?#"));
    if (o.full)
        snprintf(buf + (len > 4 ? len - 4 : 0), len > 4 ? 4 : len, "...");
}

rw_health_result_t rw_health_classify(CURLcode cc, long http_status, char *what,
                                      size_t len)
{
    rw_health_result_t r = RW_HEALTH_OK;
    char buf[64];

    if (cc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(buf, sizeof(buf), "timeout");
        r = RW_HEALTH_ERROR;
    } else if (cc == CURLE_COULDNT_CONNECT ||
               cc == CURLE_COULDNT_RESOLVE_HOST ||
               cc == CURLE_COULDNT_RESOLVE_PROXY) {
        snprintf(buf, sizeof(buf), "connect error");
        r = RW_HEALTH_ERROR;
    } else if (cc != CURLE_OK) {
        snprintf(buf, sizeof(buf), "%s", curl_easy_strerror(cc));
        r = RW_HEALTH_ERROR;
    } else {
        snprintf(buf, sizeof(buf), "HTTP %ld", http_status);
        if (http_status < 200 || http_status > 299)
            r = RW_HEALTH_FAILED;
    }
    if (what && len)
        snprintf(what, len, "%s", buf);
    return r;
}

/* ---- batches ------------------------------------------------------------ */

typedef struct xfer {
    CURL *easy;
    rw_health_check_t *check;
    long long deadline_ms; /* monotonic: the check ends "timeout" then */
    int redirects;
} xfer_t;

/* A URL's scheme, host and port (the scheme's default when none). */
typedef struct origin {
    char *scheme, *host, *port; /* curl_free */
} origin_t;

static bool origin_of(const char *url, origin_t *o)
{
    CURLU *u = curl_url();
    bool ok = false;

    memset(o, 0, sizeof(*o));
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &o->scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &o->host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &o->port, CURLU_DEFAULT_PORT) ==
            CURLUE_OK)
        ok = true;
    curl_url_cleanup(u);
    return ok;
}

static void origin_free(origin_t *o)
{
    curl_free(o->scheme);
    curl_free(o->host);
    curl_free(o->port);
}

bool rw_health_same_origin(const char *from, const char *to)
{
    origin_t a = {NULL, NULL, NULL}, b = {NULL, NULL, NULL};
    bool same = false;

    if (from && to && origin_of(from, &a) && origin_of(to, &b))
        same = strcasecmp(a.scheme, b.scheme) == 0 &&
               strcasecmp(a.host, b.host) == 0 && strcmp(a.port, b.port) == 0;
    origin_free(&a);
    origin_free(&b);
    return same;
}

static void setup(xfer_t *x, const char *url, long timeout_ms)
{
    CURL *c = x->easy;

    rw_curl_plain(c, url, timeout_ms, "rollwave-health/0.1");
    curl_easy_setopt(c, CURLOPT_PRIVATE, x);
}

/*
 * A finished transfer: done (result filled), or redirected to the same
 * origin and set up again with what is left of the check's time (false).
 */
static bool finish(xfer_t *x, CURLcode cc)
{
    rw_health_check_t *ck = x->check;
    long status = 0, left_ms;
    char *location = NULL;

    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
    ck->http_status = cc == CURLE_OK ? status : 0;
    if (cc == CURLE_OK && status >= 300 && status <= 399 &&
        x->redirects < RW_HEALTH_MAX_REDIRECTS &&
        curl_easy_getinfo(x->easy, CURLINFO_REDIRECT_URL, &location) ==
            CURLE_OK &&
        location && rw_health_same_origin(ck->url, location)) {
        char next[RW_HEALTH_URL_MAX];

        left_ms = (long)(x->deadline_ms - rw_now_mono_ms());
        if (left_ms <= 0) {
            /* the redirect came, its target cannot in the time left */
            ck->http_status = 0;
            ck->result = rw_health_classify(CURLE_OPERATION_TIMEDOUT, 0,
                                            ck->what, sizeof(ck->what));
            return true;
        }
        snprintf(next, sizeof(next), "%s", location);
        x->redirects++;
        setup(x, next, left_ms);
        return false;
    }
    ck->result = rw_health_classify(cc, status, ck->what, sizeof(ck->what));
    return true;
}

rw_err_t rw_health_check_many(rw_health_check_t *checks, size_t n,
                              long timeout_ms, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    CURLM *multi = NULL;
    xfer_t *xs = NULL;
    size_t next = 0, active = 0, done = 0;

    if (n == 0)
        return RW_OK;
    err = rw_lagoon_global_init(errstr, errlen);
    if (err)
        return err;
    multi = curl_multi_init();
    xs = calloc(n, sizeof(*xs));
    if (!multi || !xs) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "curl multi handle");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        xs[i].check = &checks[i];
        checks[i].result = RW_HEALTH_ERROR;
        checks[i].http_status = 0;
        snprintf(checks[i].what, sizeof(checks[i].what), "not run");
        xs[i].easy = curl_easy_init();
        if (!xs[i].easy) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "curl easy handle");
            goto out;
        }
    }
    while (done < n) {
        CURLMsg *msg;
        int running = 0, left = 0;
        bool moved;

        while (next < n && active < RW_HEALTH_PARALLEL) {
            /* the check's time runs from its first request, across
             * its redirects */
            xs[next].deadline_ms = rw_now_mono_ms() + timeout_ms;
            setup(&xs[next], checks[next].url, timeout_ms);
            if (curl_multi_add_handle(multi, xs[next].easy) != CURLM_OK) {
                err = rw_err_set(errstr, errlen, RW_ERR_IO,
                                 "curl_multi_add_handle failed");
                goto out;
            }
            next++;
            active++;
        }
        if (curl_multi_perform(multi, &running) != CURLM_OK) {
            err = rw_err_set(errstr, errlen, RW_ERR_IO, "curl multi failed");
            goto out;
        }
        moved = false;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            char *priv = NULL;
            xfer_t *x;
            CURL *e = msg->easy_handle;
            CURLcode cc = msg->data.result;

            if (msg->msg != CURLMSG_DONE)
                continue;
            moved = true;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
            x = (xfer_t *)priv;
            curl_multi_remove_handle(multi, e);
            if (finish(x, cc)) {
                active--;
                done++;
            } else if (curl_multi_add_handle(multi, e) != CURLM_OK) {
                x->check->result = RW_HEALTH_ERROR;
                snprintf(x->check->what, sizeof(x->check->what),
                         "redirect failed");
                active--;
                done++;
            }
        }
        /*
         * Wait only when nothing ended: curl_multi_poll waits its whole
         * timeout when no transfer is left to wait for, which would add
         * a second to every batch whose last answer came in perform.
         */
        if (!moved && done < n &&
            curl_multi_poll(multi, NULL, 0, 1000, NULL) != CURLM_OK) {
            err = rw_err_set(errstr, errlen, RW_ERR_IO, "curl multi failed");
            goto out;
        }
    }
out:
    for (size_t i = 0; xs && i < n; i++) {
        if (xs[i].easy) {
            curl_multi_remove_handle(multi, xs[i].easy);
            curl_easy_cleanup(xs[i].easy);
        }
    }
    free(xs);
    if (multi)
        curl_multi_cleanup(multi);
    return err;
}
