/*
 * test_http: the /metrics and /healthz server over real HTTP (libcurl on
 * loopback): valid Prometheus text with a counter this test moved, health
 * toggling between 200 and 503 with the component's detail, 404 and 405,
 * port 0 picking a free port, and a busy port refused.
 */
#include "rw_itest.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "rw_http.h"
#include "rw_prom_check.h"
#include "rw_metrics.h"

/* ---- the same exposition validator as tests/unit/test_metrics.c ------- */

static void assert_every_line_valid(const char *text)
{
    const char *p = text;
    int lineno = 0;

    assert_true(*text != '\0');
    assert_int_equal(text[strlen(text) - 1], '\n');
    while (*p) {
        const char *nl = strchr(p, '\n');
        char line[1024];
        size_t len = (size_t)(nl - p);

        lineno++;
        assert_true(len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        if (!rw_prom_valid_line(line))
            fail_msg("/metrics line %d is not valid exposition: %s", lineno,
                     line);
        p = nl + 1;
    }
}

/* ---- HTTP client ------------------------------------------------------ */

typedef struct resp {
    long status;
    char ctype[128];
    char *body;
    size_t len;
} resp_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    resp_t *r = ud;
    size_t n = size * nmemb;
    char *b = realloc(r->body, r->len + n + 1);

    if (!b)
        return 0;
    memcpy(b + r->len, data, n);
    r->len += n;
    b[r->len] = '\0';
    r->body = b;
    return n;
}

/* method NULL = GET. Fills r; the caller frees r->body. */
static void http(const char *method, int port, const char *path, resp_t *r)
{
    char url[256];
    char *ct = NULL;
    CURL *curl = curl_easy_init();
    CURLcode rc;

    memset(r, 0, sizeof(*r));
    r->body = calloc(1, 1);
    assert_non_null(curl);
    assert_non_null(r->body);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (method && !strcmp(method, "HEAD"))
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    else if (method)
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    rc = curl_easy_perform(curl);
    if (rc != CURLE_OK)
        fail_msg("%s %s: %s", method ? method : "GET", url,
                 curl_easy_strerror(rc));
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &ct);
    snprintf(r->ctype, sizeof(r->ctype), "%s", ct ? ct : "");
    curl_easy_cleanup(curl);
}

/* ---- tests ------------------------------------------------------------ */

static atomic_int healthy = 1;
static atomic_int health_calls;

static rw_err_t health(void *ud, char *detail, size_t len)
{
    /* Runs on the server thread: report, never assert, from here. */
    if (ud != &healthy) {
        snprintf(detail, len, "health called with the wrong ud");
        return RW_ERR_INVALID_ARG;
    }
    atomic_fetch_add(&health_calls, 1);
    if (atomic_load(&healthy))
        return RW_OK;
    snprintf(detail, len, "redis: connection refused");
    return RW_ERR_REDIS_CONN;
}

static void test_metrics_and_health(void **state)
{
    char errstr[256], line[256];
    rw_http_t *h = NULL;
    rw_metric_t *hits, *lat;
    const double buckets[] = {0.1, 1};
    resp_t r;
    int port;
    (void)state;

    assert_int_equal(rw_metrics_init("test_http", "0.0.0-test"), RW_OK);
    hits = rw_metrics_counter("rollwave_test_http_hits_total", "Test hits.",
                              "case=\"a \\\"b\\\"\"");
    lat = rw_metrics_histogram("rollwave_test_http_seconds", "Test latency.",
                               NULL, buckets, 2);
    assert_non_null(hits);
    assert_non_null(lat);
    rw_metrics_add(hits, 7);
    rw_metrics_observe(lat, 0.5);

    assert_int_equal(rw_http_start(&h, "127.0.0.1", 0, health, &healthy, errstr,
                                   sizeof(errstr)),
                     RW_OK);
    port = rw_http_port(h);
    assert_true(port > 0 && port <= 65535);

    http(NULL, port, "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.ctype, "text/plain"));
    assert_non_null(strstr(r.ctype, "version=0.0.4"));
    assert_every_line_valid(r.body);
    snprintf(line, sizeof(line),
             "\nrollwave_test_http_hits_total{case=\"a \\\\\\\"b\\\\\\\"\"} "
             "7\n");
    if (!strstr(r.body, line))
        fail_msg("counter line %s not in:\n%s", line, r.body);
    assert_non_null(strstr(r.body, "\nrollwave_test_http_seconds_bucket"
                                   "{le=\"1\"} 1\n"));
    assert_non_null(strstr(r.body, "rollwave_build_info{binary=\"test_http\","
                                   "version=\"0.0.0-test\"} 1\n"));
    free(r.body);

    /* A later scrape sees later updates. */
    rw_metrics_add(hits, 1);
    http(NULL, port, "/metrics", &r);
    snprintf(line, sizeof(line),
             "\nrollwave_test_http_hits_total{case=\"a \\\\\\\"b\\\\\\\"\"} "
             "8\n");
    assert_non_null(strstr(r.body, line));
    free(r.body);

    http(NULL, port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    free(r.body);

    atomic_store(&healthy, 0);
    http(NULL, port, "/healthz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "redis: connection refused\n");
    free(r.body);

    atomic_store(&healthy, 1);
    http(NULL, port, "/healthz", &r);
    assert_int_equal(r.status, 200);
    free(r.body);
    assert_int_equal(atomic_load(&health_calls), 3);

    http(NULL, port, "/", &r);
    assert_int_equal(r.status, 404);
    free(r.body);
    http(NULL, port, "/metrics/extra", &r);
    assert_int_equal(r.status, 404);
    free(r.body);
    http(NULL, port, "/healthz?x=1", &r); /* the query is not the path */
    assert_int_equal(r.status, 200);
    free(r.body);

    http("POST", port, "/metrics", &r);
    assert_int_equal(r.status, 405);
    free(r.body);
    http("HEAD", port, "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    free(r.body);

    rw_http_stop(h);
    rw_metrics_shutdown();
}

static void test_ports(void **state)
{
    char errstr[256];
    rw_http_t *a = NULL, *b = NULL, *c = (rw_http_t *)&c;
    resp_t r;
    (void)state;

    /* No health function: always healthy. */
    assert_int_equal(
        rw_http_start(&a, "127.0.0.1", 0, NULL, NULL, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(
        rw_http_start(&b, "127.0.0.1", 0, NULL, NULL, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_not_equal(rw_http_port(a), rw_http_port(b));
    http(NULL, rw_http_port(b), "/healthz", &r);
    assert_int_equal(r.status, 200);
    free(r.body);

    /* A port in use is refused with a reason, and *hp is left NULL. */
    assert_int_equal(rw_http_start(&c, "127.0.0.1", rw_http_port(a), NULL, NULL,
                                   errstr, sizeof(errstr)),
                     RW_ERR_IO);
    assert_null(c);
    assert_non_null(strstr(errstr, "cannot listen"));

    assert_int_equal(rw_http_start(&c, "127.0.0.1", 70000, NULL, NULL, errstr,
                                   sizeof(errstr)),
                     RW_ERR_CONFIG);
    assert_int_equal(rw_http_start(&c, "not an address", 0, NULL, NULL, errstr,
                                   sizeof(errstr)),
                     RW_ERR_CONFIG);

    rw_http_stop(a);
    rw_http_stop(b);
    rw_http_stop(NULL);
    assert_int_equal(rw_http_port(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_and_health),
        cmocka_unit_test(test_ports),
    };
    int rc;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
