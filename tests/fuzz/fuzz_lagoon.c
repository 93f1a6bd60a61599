/*
 * fuzz_lagoon: libFuzzer target for the Lagoon response parsers
 * (rw_lagoon_parse_bulk_response, rw_lagoon_parse_deployments_response,
 * rw_lagoon_parse_find_bulk_response, rw_lagoon_parse_time) and
 * rw_log_quote, which quotes Lagoon's text into log lines.
 *
 * Input layout: three ASCII digits give the HTTP status ("200{...}" keeps
 * the seed corpus readable); otherwise the first byte picks one from a
 * table of interesting statuses. The rest is the response body. The whole
 * input is also parsed as a date, so plain date strings are seeds too.
 *
 * Results are checked against the documented contract and against an
 * independent reading of the same JSON with jansson: the error class
 * follows the HTTP status, a bulk id or deployment row is reported exactly
 * when the body holds one, a bulk is found by name exactly when one of the
 * chunk's environments carries it, and every date equals a separate
 * computation (and rw_codec_parse_time, where that stricter parser
 * accepts it).
 *
 * It does not open connections: rw_lagoon_t and libcurl transfers are
 * exercised by the integration tests against the simulator.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "rw_codec.h"
#include "rw_lagoon.h"
#include "rw_log.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            check_failed(__LINE__, #cond, NULL);                               \
    } while (0)

#define CHECK_MSG(cond, msg)                                                   \
    do {                                                                       \
        if (!(cond))                                                           \
            check_failed(__LINE__, #cond, (msg));                              \
    } while (0)

static void check_failed(int line, const char *cond, const char *msg)
{
    fprintf(stderr, "fuzz_lagoon.c:%d: property broken: %s%s%s\n", line, cond,
            msg ? ": " : "", msg ? msg : "");
    abort();
}

/*
 * Mostly 2xx so that mutations spend their time in the body parsers; the
 * rest covers every branch of rw_lagoon_classify and odd values.
 */
static const long statuses[] = {200, 200, 200, 200, 200, 200, 201, 204, 299,
                                400, 401, 403, 404, 408, 429, 500, 502, 503,
                                599, 302, 100, 199, 600, 0,   -1,  -200};

static void poison(char *errstr, size_t len)
{
    memset(errstr, 'x', len);
}

static void check_errstr(const char *errstr, size_t len)
{
    CHECK(memchr(errstr, '\0', len) != NULL);
    CHECK(errstr[0] != '\0');
}

/*
 * The error a response may give: the status class for non-2xx (400 with
 * a GraphQL errors array is a GraphQL error), otherwise success, a
 * GraphQL error or a protocol error.
 */
static void check_err_class(long status, rw_err_t err, const char *errstr)
{
    rw_err_t http = rw_lagoon_classify(CURLE_OK, status);

    if (http != RW_OK)
        CHECK_MSG(err == http ||
                      (status == 400 && err == RW_ERR_LAGOON_GRAPHQL),
                  errstr);
    else
        CHECK_MSG(err == RW_OK || err == RW_ERR_LAGOON_PROTOCOL ||
                      err == RW_ERR_LAGOON_GRAPHQL,
                  errstr);
}

/* data.<field> of body as jansson reads it, or NULL; *root to decref. */
static json_t *oracle_field(const char *body, const char *field, json_t **root)
{
    json_error_t jerr;
    json_t *data;

    *root = json_loads(body, 0, &jerr);
    if (!json_is_object(*root))
        return NULL;
    data = json_object_get(*root, "data");
    if (!json_is_object(data))
        return NULL;
    return json_object_get(data, field);
}

/* ---- dates -------------------------------------------------------------- */

/* Days since 1970-01-01 (H. Hinnant); linear in d, like timegm. */
static long long days_from_civil(long long y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int num(const char *s, int n)
{
    int v = 0;

    for (int i = 0; i < n; i++)
        v = v * 10 + (s[i] - '0');
    return v;
}

static long long floor_div(long long a, long long b)
{
    long long q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/*
 * An accepted date is the wall-clock time of its digits minus a whole
 * number of minutes under a day, and exactly that time without an offset.
 */
static void check_time(const char *s)
{
    time_t t = 0;
    long long ms = 0, naive, diff;
    rw_err_t err = rw_lagoon_parse_time(s, &t);
    bool offset;

    CHECK(err == RW_OK || err == RW_ERR_INVALID_ARG);
    if (rw_codec_parse_time(s, &ms)) {
        /* The codec's RFC 3339 subset is a subset of what Lagoon sends. */
        CHECK(err == RW_OK);
        CHECK((long long)t == floor_div(ms, 1000));
    }
    if (err)
        return;
    CHECK(strlen(s) >= 19);
    naive = days_from_civil(num(s, 4), num(s + 5, 2), num(s + 8, 2)) * 86400 +
            num(s + 11, 2) * 3600LL + num(s + 14, 2) * 60LL + num(s + 17, 2);
    diff = naive - (long long)t;
    offset = strpbrk(s + 19, "+-") != NULL;
    if (offset) {
        CHECK(diff % 60 == 0);
        CHECK(diff >= -(23 * 3600 + 59 * 60) && diff <= 23 * 3600 + 59 * 60);
    } else {
        CHECK(diff == 0);
    }
}

/* ---- bulk --------------------------------------------------------------- */

static void fuzz_bulk(long status, const char *body)
{
    char bulk_id[RW_LAGOON_BULK_ID_MAX];
    char small[8];
    char errstr[512];
    json_t *root = NULL, *want;
    rw_err_t err, small_err;

    poison(errstr, sizeof(errstr));
    memset(bulk_id, 'x', sizeof(bulk_id));
    err = rw_lagoon_parse_bulk_response(status, body, bulk_id, sizeof(bulk_id),
                                        errstr, sizeof(errstr));
    check_err_class(status, err, errstr);
    want = oracle_field(body, "bulkDeployEnvironmentLatest", &root);
    if (err) {
        check_errstr(errstr, sizeof(errstr));
        CHECK(bulk_id[0] == '\0');
        /* A usable id in a 2xx answer must not be refused. */
        if (rw_lagoon_classify(CURLE_OK, status) == RW_OK &&
            json_is_string(want) && json_string_length(want) > 0 &&
            json_string_length(want) < sizeof(bulk_id) &&
            !memchr(json_string_value(want), '\0', json_string_length(want)))
            CHECK_MSG(false, errstr);
    } else {
        CHECK(memchr(bulk_id, '\0', sizeof(bulk_id)) != NULL);
        CHECK(bulk_id[0] != '\0');
        CHECK(json_is_string(want));
        CHECK(strcmp(bulk_id, json_string_value(want)) == 0);
    }

    /* A buffer too small for the id is an error, never a truncated id. */
    memset(small, 'x', sizeof(small));
    small_err = rw_lagoon_parse_bulk_response(status, body, small,
                                              sizeof(small), NULL, 0);
    if (err) {
        CHECK(small_err == err);
    } else if (strlen(bulk_id) < sizeof(small)) {
        CHECK(small_err == RW_OK);
        CHECK(strcmp(small, bulk_id) == 0);
    } else {
        CHECK(small_err == RW_ERR_LAGOON_PROTOCOL);
        CHECK(small[0] == '\0');
    }
    /* No buffer at all: an error, whatever the body says. */
    CHECK(rw_lagoon_parse_bulk_response(status, body, NULL, 0, NULL, 0) !=
          RW_OK);
    json_decref(root);
}

/* ---- deployments -------------------------------------------------------- */

static const char *env_str(json_t *row, const char *which)
{
    json_t *env = json_object_get(row, "environment");
    json_t *v;

    if (!json_is_object(env))
        return NULL;
    if (strcmp(which, "project") == 0) {
        json_t *project = json_object_get(env, "project");
        v = json_is_object(project) ? json_object_get(project, "name") : NULL;
    } else {
        v = json_object_get(env, "name");
    }
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static const char *str_or_empty(json_t *row, const char *key)
{
    json_t *v = json_object_get(row, key);

    return json_is_string(v) ? json_string_value(v) : "";
}

/* A date field as the parser should report it: 0 when null or unreadable. */
static time_t want_time(json_t *row, const char *key)
{
    json_t *v = json_object_get(row, key);
    time_t t = 0;

    if (!json_is_string(v))
        return 0;
    check_time(json_string_value(v));
    if (rw_lagoon_parse_time(json_string_value(v), &t) != RW_OK)
        return 0;
    return t;
}

static void check_row(const rw_lagoon_deployments_t *d,
                      const rw_lagoon_deployment_t *r, json_t *row)
{
    const rw_lagoon_deployment_t *best;
    json_t *id = json_object_get(row, "id");
    rw_lagoon_status_t st;

    CHECK(r->name && r->status && r->project && r->environment);
    CHECK(strcmp(r->project, env_str(row, "project")) == 0);
    CHECK(strcmp(r->environment, env_str(row, "name")) == 0);
    CHECK(strcmp(r->name, str_or_empty(row, "name")) == 0);
    CHECK(strcmp(r->status, str_or_empty(row, "status")) == 0);
    if (json_is_integer(id))
        CHECK(r->id == json_integer_value(id));
    else
        CHECK(json_is_string(id));
    CHECK(r->created == want_time(row, "created"));
    CHECK(r->started == want_time(row, "started"));
    CHECK(r->completed == want_time(row, "completed"));

    best = rw_lagoon_deployments_find(d, r->project, r->environment);
    CHECK(best != NULL);
    CHECK(strcmp(best->project, r->project) == 0);
    CHECK(strcmp(best->environment, r->environment) == 0);
    CHECK(best->id >= r->id);

    st = rw_lagoon_status_parse(r->status);
    CHECK(rw_lagoon_status_name(st) != NULL);
    CHECK(rw_lagoon_status_parse(rw_lagoon_status_name(st)) == st);
    if (rw_lagoon_status_is_success(st))
        CHECK(rw_lagoon_status_is_terminal(st));
}

static void fuzz_deployments(long status, const char *body)
{
    rw_lagoon_deployments_t *d = NULL;
    char errstr[512];
    json_t *root = NULL, *rows;
    size_t k = 0;
    rw_err_t err;

    poison(errstr, sizeof(errstr));
    err = rw_lagoon_parse_deployments_response(status, body, &d, errstr,
                                               sizeof(errstr));
    check_err_class(status, err, errstr);
    if (err) {
        check_errstr(errstr, sizeof(errstr));
        CHECK(d == NULL);
        return;
    }
    CHECK(d != NULL);
    rows = oracle_field(body, "deploymentsByBulkId", &root);
    CHECK(json_is_array(rows));
    CHECK(d->n <= json_array_size(rows));
    CHECK(d->n == 0 || d->rows != NULL);
    /* Rows keep their order; those without an environment are dropped. */
    for (size_t i = 0; i < json_array_size(rows); i++) {
        json_t *row = json_array_get(rows, i);

        CHECK(json_is_object(row));
        if (!env_str(row, "project") || !env_str(row, "name"))
            continue;
        CHECK(k < d->n);
        check_row(d, &d->rows[k], row);
        k++;
    }
    CHECK(k == d->n);
    CHECK(rw_lagoon_deployments_find(d, NULL, "main") == NULL);
    rw_lagoon_deployments_free(d);
    json_decref(root);
}

/* ---- find bulk ---------------------------------------------------------- */

/* The chunk the find-bulk answers are read for: two projects, aliases p0
 * and p1, and three of their environments. */
static const char *const find_projects[] = {"shop-a", "shop-b"};
static const rw_lagoon_env_t find_envs[] = {
    {"shop-a", "main"}, {"shop-b", "develop"}, {"shop-b", "main"}};
#define FIND_BULK_NAME "rollwave 7c9e6679-7425-40de-944b-e07fc1f90ae7 c0 a1"

static bool find_env_wanted(const char *project, const char *environment)
{
    for (size_t i = 0; i < sizeof(find_envs) / sizeof(find_envs[0]); i++)
        if (strcmp(find_envs[i].project, project) == 0 &&
            strcmp(find_envs[i].environment, environment) == 0)
            return true;
    return false;
}

/*
 * Bulk ids of the deployments named FIND_BULK_NAME on the chunk's
 * environments, read independently: *n matches, *first the first id (or
 * NULL when a match has none), *distinct whether two ids differ.
 */
static void oracle_find(const char *body, size_t *n, const char **first,
                        bool *distinct, json_t **root)
{
    json_error_t jerr;
    json_t *data;

    *n = 0;
    *first = NULL;
    *distinct = false;
    *root = json_loads(body, 0, &jerr);
    data = json_is_object(*root) ? json_object_get(*root, "data") : NULL;
    if (!json_is_object(data))
        return;
    for (size_t p = 0; p < 2; p++) {
        json_t *proj = json_object_get(data, p == 0 ? "p0" : "p1");
        json_t *jenvs = json_object_get(proj, "environments");
        size_t i, j;
        json_t *jenv, *dep;

        if (!json_is_array(jenvs))
            continue;
        json_array_foreach(jenvs, i, jenv)
        {
            const char *name = json_string_value(json_object_get(jenv, "name"));
            json_t *deps = json_object_get(jenv, "deployments");

            if (!name || !find_env_wanted(find_projects[p], name) ||
                !json_is_array(deps))
                continue;
            json_array_foreach(deps, j, dep)
            {
                const char *bn =
                    json_string_value(json_object_get(dep, "bulkName"));
                const char *id =
                    json_string_value(json_object_get(dep, "bulkId"));

                if (!bn || strcmp(bn, FIND_BULK_NAME) != 0)
                    continue;
                if (*n == 0)
                    *first = id;
                else if (!*first || !id || strcmp(*first, id) != 0)
                    *distinct = true;
                (*n)++;
            }
        }
    }
}

static void fuzz_find_bulk(long status, const char *body)
{
    char bulk_id[RW_LAGOON_BULK_ID_MAX];
    char errstr[512];
    bool found = true;
    json_t *root = NULL;
    const char *first;
    size_t n;
    bool distinct;
    rw_err_t err, http = rw_lagoon_classify(CURLE_OK, status);

    poison(errstr, sizeof(errstr));
    memset(bulk_id, 'x', sizeof(bulk_id));
    err = rw_lagoon_parse_find_bulk_response(
        status, body, find_projects, 2, find_envs,
        sizeof(find_envs) / sizeof(find_envs[0]), FIND_BULK_NAME, bulk_id,
        sizeof(bulk_id), &found, errstr, sizeof(errstr));
    if (http != RW_OK)
        CHECK_MSG(err == http ||
                      (status == 400 && err == RW_ERR_LAGOON_GRAPHQL),
                  errstr);
    else
        CHECK_MSG(err == RW_OK || err == RW_ERR_LAGOON_PROTOCOL ||
                      err == RW_ERR_LAGOON_GRAPHQL || err == RW_ERR_CONFLICT,
                  errstr);
    if (err) {
        check_errstr(errstr, sizeof(errstr));
        CHECK(!found);
        CHECK(bulk_id[0] == '\0');
        return;
    }
    oracle_find(body, &n, &first, &distinct, &root);
    /* Found exactly when a wanted environment carries the name, and then
     * with the one id all those deployments agree on. */
    CHECK(found == (n > 0));
    CHECK(!distinct);
    if (found) {
        CHECK(first != NULL);
        CHECK(strcmp(bulk_id, first) == 0);
    } else {
        CHECK(bulk_id[0] == '\0');
    }
    json_decref(root);
}

/* ---- log quoting -------------------------------------------------------- */

static void fuzz_quote(const char *s)
{
    static const size_t lens[] = {0, 1, 2, 3, 4, 16, 96};
    char buf[96];

    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        size_t len = lens[i];
        size_t n;

        memset(buf, 'x', sizeof(buf));
        CHECK(rw_log_quote(buf, len, s) == buf);
        if (len == 0)
            continue;
        CHECK(memchr(buf, '\0', len) != NULL);
        n = strlen(buf);
        if (len < 3) {
            CHECK(n == 0);
            continue;
        }
        /* Quoted, with nothing below 0x20 left to break a log line. */
        CHECK(n >= 2 && buf[0] == '"' && buf[n - 1] == '"');
        for (size_t j = 0; j < n; j++)
            CHECK((unsigned char)buf[j] >= 0x20);
    }
}

/* ---- entry points ------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /*
     * Unreadable dates are logged as warnings: at fuzzing speed that is
     * megabytes of stderr and no extra coverage (rw_log_quote, the only
     * part that sees the input, is fuzzed directly).
     */
    rw_log_set_level(RW_LOG_OFF);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    long status = 200;
    size_t skip = 0;
    char *whole, *body;

    if (size >= 3 && data[0] >= '0' && data[0] <= '9' && data[1] >= '0' &&
        data[1] <= '9' && data[2] >= '0' && data[2] <= '9') {
        status = (data[0] - '0') * 100 + (data[1] - '0') * 10 + (data[2] - '0');
        skip = 3;
    } else if (size >= 1) {
        status = statuses[data[0] % (sizeof(statuses) / sizeof(statuses[0]))];
        skip = 1;
    }

    /* The parsers take C strings: an embedded NUL ends the body there. */
    whole = malloc(size + 1);
    CHECK(whole != NULL);
    memcpy(whole, data, size);
    whole[size] = '\0';
    body = whole + skip;

    fuzz_bulk(status, body);
    fuzz_deployments(status, body);
    fuzz_find_bulk(status, body);
    check_time(whole);
    check_time(body);
    CHECK(rw_lagoon_status_name(rw_lagoon_status_parse(body)) != NULL);
    fuzz_quote(body);

    free(whole);
    return 0;
}
