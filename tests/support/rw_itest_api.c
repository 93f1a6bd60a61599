/*
 * rw_itest_api: see rw_itest_api.h. It only starts processes through the
 * fleet and talks HTTP; assertions about the API's answers stay with the
 * tests.
 */
#include "rw_itest_api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "rw_itest.h"

int rw_itest_api_free_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

typedef struct buf {
    char *p;
    size_t n;
} buf_t;

static size_t on_data(char *d, size_t sz, size_t nm, void *ud)
{
    buf_t *b = ud;
    char *p = realloc(b->p, b->n + sz * nm + 1);

    if (!p)
        return 0;
    memcpy(p + b->n, d, sz * nm);
    b->n += sz * nm;
    p[b->n] = '\0';
    b->p = p;
    return sz * nm;
}

long rw_itest_api_call(int port, const char *method, const char *path,
                       const char *token, const char *body, size_t len,
                       json_t **doc, char **text)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char url[2048], auth[160];
    buf_t b = {NULL, 0};
    long status = 0;
    CURLcode rc;

    assert_non_null(c);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (body) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE,
                         (long)(len ? len : strlen(body)));
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (doc)
        *doc = b.p ? json_loads(b.p, 0, NULL) : NULL;
    if (text)
        *text = b.p;
    else
        free(b.p);
    return rc == CURLE_OK ? status : -1;
}

json_t *rw_itest_api_expect(rw_itest_api_t *a, const char *method,
                            const char *path, const char *token,
                            const char *body, long want)
{
    json_t *doc = NULL;
    long got =
        rw_itest_api_call(a->port, method, path, token, body, 0, &doc, NULL);

    if (got != want) {
        char *dump = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        fail_msg("%s %s answered %ld, want %ld: %s", method, path, got, want,
                 dump ? dump : "(not JSON)");
    }
    if (!doc)
        fail_msg("%s %s: the answer is not JSON", method, path);
    return doc;
}

void rw_itest_api_expect_error(rw_itest_api_t *a, const char *method,
                               const char *path, const char *token,
                               const char *body, long want, const char *code,
                               const char *field)
{
    json_t *doc = rw_itest_api_expect(a, method, path, token, body, want);
    json_t *e = json_object_get(doc, "error");
    const char *got_code = json_string_value(json_object_get(e, "code"));
    const char *got_field = json_string_value(json_object_get(e, "field"));

    if (!got_code || strcmp(got_code, code) != 0 ||
        !json_is_string(json_object_get(e, "message")))
        fail_msg("%s %s: want error code %s, got %s", method, path, code,
                 got_code ? got_code : "(none)");
    if (field && (!got_field || strcmp(got_field, field) != 0))
        fail_msg("%s %s: want field %s, got %s", method, path, field,
                 got_field ? got_field : "(none)");
    json_decref(doc);
}

void rw_itest_api_token(rw_itest_api_t *a, const char *name, const char *role,
                        char *out, size_t len)
{
    const char *argv[] = {"rollwavectl", "token",  "create", "--name",
                          name,          "--role", role,     NULL};
    int rc = rw_itest_fleet_run(a->f, argv, out, len);

    if (rc != 0)
        fail_msg("rollwavectl token create %s exited %d", name, rc);
    out[strcspn(out, "\n")] = '\0';
    assert_int_equal(strlen(out), 68);
}

void rw_itest_api_start(rw_itest_api_t *a, const char *sim_config, bool daemons)
{
    char port[16], mport[16], cache[16];
    long long until;

    memset(a, 0, sizeof(*a));
    curl_global_init(CURL_GLOBAL_ALL);
    a->f = rw_itest_fleet_new(sim_config, 0);
    a->port = rw_itest_api_free_port();
    a->metrics_port = rw_itest_api_free_port();
    snprintf(port, sizeof(port), "%d", a->port);
    snprintf(mport, sizeof(mport), "%d", a->metrics_port);
    snprintf(cache, sizeof(cache), "%d", RW_ITEST_API_TOKEN_CACHE_S);
    rw_itest_fleet_set(a->f, "ROLLWAVE_FIRST_POLL_DELAY_MS", "200");
    rw_itest_fleet_set(a->f, "ROLLWAVE_POLL_INTERVAL_MS", "200");
    rw_itest_fleet_set(a->f, "ROLLWAVE_API_BIND", "127.0.0.1");
    rw_itest_fleet_set(a->f, "ROLLWAVE_API_PORT", port);
    rw_itest_fleet_set(a->f, "ROLLWAVE_API_THREADS", "2");
    rw_itest_fleet_set(a->f, "ROLLWAVE_API_TOKEN_CACHE_S", cache);
    rw_itest_fleet_start_with(a->f, "rollwave-api", "api",
                              "ROLLWAVE_METRICS_PORT", mport, false);
    if (daemons) {
        rw_itest_fleet_start(a->f, "rollwave-worker", "worker");
        rw_itest_fleet_start(a->f, "rollwave-poller", "poller");
    }
    rw_itest_api_token(a, "viewer-1", "viewer", a->viewer, sizeof(a->viewer));
    rw_itest_api_token(a, "operator-1", "operator", a->operator,
                       sizeof(a->operator));
    rw_itest_api_token(a, "admin-1", "admin", a->admin, sizeof(a->admin));
    /* the server is up once it answers */
    until = rw_itest_now_ms() + 30000;
    while (rw_itest_api_call(a->port, "GET", "/api/v1/whoami", a->viewer, NULL,
                             0, NULL, NULL) != 200) {
        if (rw_itest_now_ms() > until)
            fail_msg("rollwave-api did not answer on port %d", a->port);
        rw_itest_sleep_ms(50);
    }
}
