/*
 * rw_health: the HTTP checks of a strategy's health gate (docs/DESIGN.md,
 * "Health gate"): the URL template ({route}, {project}, {environment}),
 * what an answer means, and a batch of checks run in parallel.
 *
 * A check is one GET with no credentials: no token, no cookie, no header
 * of ours beyond the user agent. It follows a redirect only to the same
 * scheme, host and port (at most RW_HEALTH_MAX_REDIRECTS), so a route
 * cannot send the check elsewhere, not even to another port of its host. It
 * does not decide what a failed check does to a target (the poller does) and
 * keeps nothing between batches.
 */
#ifndef RW_HEALTH_H
#define RW_HEALTH_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>

#include "rw_err.h"

/* Checks in flight at once in one batch; the rest wait their turn. */
#define RW_HEALTH_PARALLEL      32
#define RW_HEALTH_MAX_REDIRECTS 3
/* Longest expanded URL. */
#define RW_HEALTH_URL_MAX 2048

typedef enum rw_health_result {
    RW_HEALTH_OK = 0, /* answered 2xx */
    RW_HEALTH_FAILED, /* answered, anything but 2xx */
    RW_HEALTH_ERROR,  /* no answer: timeout, connect error, ... */
} rw_health_result_t;

/*
 * A template's placeholders and shape, without values: only {route},
 * {project} and {environment}, no stray brace, and the URL starts with
 * http://, https:// or {route} (which carries its own scheme); {route}
 * only there, followed by '/', '?' or nothing, so what follows cannot
 * change the route's host ("{route}@evil.example/"). The
 * strategy parser calls it, so a run never carries a template the poller
 * cannot expand. errstr names the problem ("unknown placeholder {host}").
 */
rw_err_t rw_health_url_check(const char *tmpl, char *errstr, size_t errlen);

/*
 * Expand tmpl into url (len bytes): {route} as Lagoon gave it (a URL),
 * {project} and {environment} percent-encoded. RW_ERR_NOT_FOUND when the
 * template uses {route} and route is NULL or "" (the environment has no
 * route); RW_ERR_INVALID_ARG for a template rw_health_url_check refuses,
 * a result that is not an http(s) URL, or one longer than len - 1.
 */
rw_err_t rw_health_url(const char *tmpl, const char *route, const char *project,
                       const char *environment, char *url, size_t len,
                       char *errstr, size_t errlen);

/*
 * A URL as errors and logs show it: without query string, fragment or
 * user:password@, so nothing secret a template may hold is repeated.
 */
void rw_health_url_display(const char *url, char *buf, size_t len);

/*
 * What one finished transfer means: CURLE_OK with a 2xx status is OK,
 * with any other status FAILED ("HTTP 503"); a transfer that failed is
 * ERROR ("timeout", "connect error", or curl's text). what (may be NULL)
 * gets the short form used in a target's error.
 */
rw_health_result_t rw_health_classify(CURLcode cc, long http_status, char *what,
                                      size_t len);

/*
 * Whether a redirect from one URL to another stays on the same origin:
 * scheme, host (case-insensitive) and port (the scheme's default when
 * none is written). https to http is another origin. False when either
 * is NULL or not a URL.
 */
bool rw_health_same_origin(const char *from, const char *to);

/* One check of a batch. */
typedef struct rw_health_check {
    const char *url;           /* in: the expanded URL */
    rw_health_result_t result; /* out */
    long http_status;          /* out: last answer's status, 0 = none */
    char what[64];             /* out: as rw_health_classify */
} rw_health_check_t;

/*
 * Run the n checks, at most RW_HEALTH_PARALLEL at once, each given
 * timeout_ms in all from its first request (connect and redirects
 * included: each hop gets what is left; none left is "timeout"). Fills every
 * check's result; fails as a whole only when curl cannot be set up
 * (RW_ERR_NOMEM, RW_ERR_IO), in which case no check ran.
 */
rw_err_t rw_health_check_many(rw_health_check_t *checks, size_t n,
                              long timeout_ms, char *errstr, size_t errlen);

#endif
