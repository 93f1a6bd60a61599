/*
 * ctl_webhook: run-event webhook subscriptions. "webhook add --url URL
 * --events LIST [--store-app ID] [--secret S | --secret-file PATH] [--by
 * NAME]" subscribes (a generated secret is printed once); "webhook list
 * [--json]" shows the subscriptions with their delivery counts and last error,
 * never the secret nor URL credentials; "webhook remove ID"; "webhook test ID"
 * sends a signed webhook.test event now and prints the answer; "webhook
 * deliveries ID [--state S] [--limit N] [--json]" lists deliveries. Signing
 * and sending live in common/rw_webhook.
 */
#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <curl/curl.h>

#include "ctl.h"
#include "rw_webhook.h"

#define CMD "webhook"

/* what list and deliveries show of a URL: no credentials, query, fragment */
#define URL_SHOWN_SQL                                                          \
    "regexp_replace(w.url, '^(https?://)([^/@]*@)?([^/?#]*)([^?#]*).*$',"      \
    " '\\1\\3\\4')"

/* A URL rollwave may POST to: http(s), a host, no blanks or controls. */
static bool url_ok(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    bool ok = false;

    if (!u)
        return false;
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            goto out;
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        goto out;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
        goto out;
    ok = host[0] != '\0';
out:
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return ok;
}

/*
 * Check a comma-separated event list and write it as a Postgres array
 * literal into *lit (malloc'd, the caller frees). Prints the problem and
 * returns false when an event is unknown or given twice, or the list is
 * empty: a duplicate is refused rather than dropped, as it is more likely
 * a typo for another event than meant.
 */
static bool parse_events(const char *list, char **lit)
{
    char *buf = strdup(list);
    char *save = NULL;
    const char *seen[16];
    size_t n = 0;
    rw_pg_array_t a;
    bool ok = false;

    *lit = NULL;
    rw_pg_array_init(&a);
    if (!buf) {
        rw_ctl_errorf(CMD, "--events: out of memory");
        goto out;
    }
    for (char *e = strtok_r(buf, ",", &save); e;
         e = strtok_r(NULL, ",", &save)) {
        while (*e == ' ')
            e++;
        if (!rw_webhook_event_known(e)) {
            rw_ctl_errorf(CMD,
                          "--events: unknown event '%s' (known: run.started, "
                          "run.paused, run.resumed, run.finished, run.failed, "
                          "run.cancelled)",
                          e);
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            if (strcmp(seen[i], e) == 0) {
                rw_ctl_errorf(CMD, "--events: '%s' given twice", e);
                goto out;
            }
        /* known and distinct: never more than the known events */
        if (n == sizeof(seen) / sizeof(seen[0])) {
            rw_ctl_errorf(CMD, "--events: too many events");
            goto out;
        }
        seen[n++] = e;
        rw_pg_array_add_str(&a, e);
    }
    if (n == 0) {
        rw_ctl_errorf(CMD, "--events: give at least one event");
        goto out;
    }
    if (!rw_pg_array_finish(&a) || !(*lit = strdup(a.buf))) {
        rw_ctl_errorf(CMD, "--events: out of memory");
        goto out;
    }
    ok = true;
out:
    rw_pg_array_free(&a);
    free(buf);
    return ok;
}

/*
 * Characters of a UTF-8 string, as Postgres' length() counts them in the
 * secret's CHECK (a byte count would let a short multibyte secret past
 * here only for the insert to fail).
 */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

/*
 * The secret in file path into buf (a trailing newline, or CRLF, dropped).
 * Prints the problem and returns false when it cannot be read, is longer
 * than buf or holds a NUL byte.
 */
static bool read_secret_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t got;
    bool ok = false;

    if (!f) {
        rw_ctl_errorf(CMD, "--secret-file: cannot open %s: %s", path,
                      strerror(errno));
        return false;
    }
    got = fread(buf, 1, len - 1, f);
    if (ferror(f)) {
        rw_ctl_errorf(CMD, "--secret-file: cannot read %s", path);
        goto out;
    }
    if (got == len - 1 && fgetc(f) != EOF) {
        rw_ctl_errorf(CMD, "--secret-file: longer than %zu bytes", len - 2);
        goto out;
    }
    buf[got] = '\0';
    if (strlen(buf) != got) {
        rw_ctl_errorf(CMD, "--secret-file: holds a NUL byte");
        goto out;
    }
    if (got > 0 && buf[got - 1] == '\n')
        buf[--got] = '\0';
    if (got > 0 && buf[got - 1] == '\r')
        buf[--got] = '\0';
    ok = true;
out:
    fclose(f);
    return ok;
}

static bool gen_secret(char *buf, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char raw[RW_WEBHOOK_SECRET_LEN / 2];
    size_t got = 0;

    if (len < RW_WEBHOOK_SECRET_LEN + 1)
        return false;
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0)
            return false;
        got += (size_t)n;
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        buf[2 * i] = digits[raw[i] >> 4];
        buf[2 * i + 1] = digits[raw[i] & 15];
    }
    buf[2 * sizeof(raw)] = '\0';
    explicit_bzero(raw, sizeof(raw));
    return true;
}

static int add(int argc, char **argv, rw_pg_t *pg)
{
    static const char sql[] =
        "INSERT INTO webhooks (store_app_id, url, events, secret, created_by)"
        " SELECT $1::bigint, $2::text, $3::text[], $4::text, $5::text"
        " WHERE $1::bigint IS NULL"
        " OR EXISTS (SELECT 1 FROM store_apps WHERE id = $1::bigint)"
        " RETURNING id";
    const char *url = NULL, *events = NULL, *app = NULL, *secret = NULL;
    const char *secret_file = NULL, *by = getenv("USER");
    char *lit = NULL;
    char gen[RW_WEBHOOK_SECRET_LEN + 1], from_file[1024], errstr[512];
    long long app_id = 0;
    PGresult *res = NULL;
    int rc = RW_CTL_EXIT_OK;

    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--url") == 0 && val)
            url = argv[++i];
        else if (strcmp(argv[i], "--events") == 0 && val)
            events = argv[++i];
        else if (strcmp(argv[i], "--store-app") == 0 && val)
            app = argv[++i];
        else if (strcmp(argv[i], "--secret") == 0 && val)
            secret = argv[++i];
        else if (strcmp(argv[i], "--secret-file") == 0 && val)
            secret_file = argv[++i];
        else if (strcmp(argv[i], "--by") == 0 && val)
            by = argv[++i];
        else {
            rw_ctl_errorf(CMD, "add: unexpected argument '%s'", argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (!url || !events) {
        rw_ctl_errorf(CMD, "add needs --url URL and --events LIST");
        return RW_CTL_EXIT_USAGE;
    }
    if (!url_ok(url)) {
        /* the URL may hold credentials: it is not echoed */
        rw_ctl_errorf(CMD, "--url: not an http:// or https:// URL with a "
                           "host");
        return RW_CTL_EXIT_USAGE;
    }
    if (secret && secret_file) {
        rw_ctl_errorf(CMD, "give --secret or --secret-file, not both");
        return RW_CTL_EXIT_USAGE;
    }
    gen[0] = from_file[0] = '\0';
    if (!parse_events(events, &lit)) {
        rc = RW_CTL_EXIT_USAGE;
        goto out;
    }
    if (app && rw_ctl_parse_ll(CMD, "--store-app", app, 1,
                               9223372036854775807LL, &app_id) < 0) {
        rc = RW_CTL_EXIT_USAGE;
        goto out;
    }
    if (secret_file) {
        if (!read_secret_file(secret_file, from_file, sizeof(from_file))) {
            rc = RW_CTL_EXIT_USAGE;
            goto out;
        }
        secret = from_file;
    }
    /* characters, as the table's CHECK counts them */
    if (secret && utf8_chars(secret) < 16) {
        rw_ctl_errorf(CMD, "%s: at least 16 characters",
                      secret_file ? "--secret-file" : "--secret");
        rc = RW_CTL_EXIT_USAGE;
        goto out;
    }
    if (!secret) {
        if (!gen_secret(gen, sizeof(gen))) {
            rw_ctl_errorf(CMD, "add: no random bytes for a secret");
            rc = RW_CTL_EXIT_FAILED;
            goto out;
        }
        secret = gen;
    }
    {
        const char *params[5] = {app, url, lit, secret, by};
        if (rw_pg_exec(pg, sql, 5, params, &res, errstr, sizeof(errstr))) {
            /* a failing row's detail would print the secret and the URL */
            char *detail = strstr(errstr, " detail: ");
            if (detail)
                *detail = '\0';
            rw_ctl_errorf(CMD, "add: %s", errstr);
            rc = RW_CTL_EXIT_FAILED;
            goto out;
        }
    }
    if (PQntuples(res) == 0) {
        rw_ctl_errorf(CMD, "--store-app: no store app %lld", app_id);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    printf("webhook %s added\n", rw_pg_str(res, 0, "id"));
    if (secret == gen)
        /* the only time the secret is shown */
        printf("secret %s\n", gen);
    fprintf(stderr, "deliveries are signed with the secret "
                    "(X-Rollwave-Signature: sha256=HMAC-SHA256 of the "
                    "body); it is not shown again\n");
out:
    explicit_bzero(gen, sizeof(gen));
    explicit_bzero(from_file, sizeof(from_file));
    free(lit);
    PQclear(res);
    return rc;
}

static int list(int argc, char **argv, rw_pg_t *pg)
{
    static const char sql[] =
        "SELECT w.id, w.store_app_id, " URL_SHOWN_SQL " AS url,"
        " array_to_string(w.events, ',') AS events, w.created_by,"
        " w.created_at,"
        " count(d.id) FILTER (WHERE d.state = 'pending') AS pending,"
        " count(d.id) FILTER (WHERE d.state = 'delivered') AS delivered,"
        " count(d.id) FILTER (WHERE d.state = 'dead') AS dead,"
        " (SELECT x.last_error FROM webhook_deliveries x"
        "   WHERE x.webhook_id = w.id AND x.last_error IS NOT NULL"
        "   ORDER BY x.id DESC LIMIT 1) AS last_error"
        " FROM webhooks w LEFT JOIN webhook_deliveries d ON d.webhook_id = w.id"
        " GROUP BY w.id ORDER BY w.id";
    static const rw_ctl_col_t cols[] = {
        {"id", "ID", false},           {"store_app_id", "STORE APP", false},
        {"url", "URL", false},         {"events", "EVENTS", false},
        {"pending", "PENDING", false}, {"delivered", "DELIVERED", false},
        {"dead", "DEAD", false},       {"last_error", "LAST ERROR", false},
    };
    bool json = argc == 2 && strcmp(argv[1], "--json") == 0;
    PGresult *res = NULL;
    char errstr[512];
    int rc = RW_CTL_EXIT_OK;

    if (argc > 2 || (argc == 2 && !json)) {
        rw_ctl_errorf(CMD, "usage: rollwavectl webhook list [--json]");
        return RW_CTL_EXIT_USAGE;
    }
    if (rw_pg_exec(pg, sql, 0, NULL, &res, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "list: %s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    rc = rw_ctl_print_rows(res, cols, sizeof(cols) / sizeof(cols[0]), json,
                           "no webhooks");
    PQclear(res);
    return rc;
}

static int parse_id(int argc, char **argv, const char *usage, long long *id)
{
    if (argc != 2 || argv[1][0] == '-') {
        rw_ctl_errorf(CMD, "usage: rollwavectl webhook %s", usage);
        return RW_CTL_EXIT_USAGE;
    }
    if (rw_ctl_parse_ll(CMD, "ID", argv[1], 1, 9223372036854775807LL, id) < 0)
        return RW_CTL_EXIT_USAGE;
    return RW_CTL_EXIT_OK;
}

static int remove_cmd(int argc, char **argv, rw_pg_t *pg)
{
    static const char sql[] = "DELETE FROM webhooks WHERE id = $1::bigint"
                              " RETURNING id";
    long long id = 0;
    PGresult *res = NULL;
    char errstr[512];
    int rc = parse_id(argc, argv, "remove ID", &id);

    if (rc)
        return rc;
    if (rw_pg_exec(pg, sql, 1, (const char *const *)&argv[1], &res, errstr,
                   sizeof(errstr))) {
        rw_ctl_errorf(CMD, "remove: %s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    if (PQntuples(res) == 0) {
        rw_ctl_errorf(CMD, "remove: no webhook %lld", id);
        rc = RW_CTL_EXIT_FAILED;
    } else {
        printf("webhook %lld removed with its deliveries\n", id);
    }
    PQclear(res);
    return rc;
}

static int test(int argc, char **argv, rw_pg_t *pg, const rw_settings_t *s)
{
    static const char sql[] =
        "SELECT w.url, w.secret, " URL_SHOWN_SQL " AS shown,"
        " json_build_object('event', 'webhook.test', 'webhook_id', w.id,"
        " 'store_app_id', w.store_app_id, 'occurred_at', now())::text"
        " AS body, 'test-' || (extract(epoch FROM now()) * 1000)::bigint"
        " AS delivery"
        " FROM webhooks w WHERE w.id = $1::bigint";
    long long id = 0, latency = 0;
    long status = 0;
    PGresult *res = NULL;
    char errstr[512];
    int rc = parse_id(argc, argv, "test ID", &id);
    rw_err_t err;

    if (rc)
        return rc;
    if (rw_pg_exec(pg, sql, 1, (const char *const *)&argv[1], &res, errstr,
                   sizeof(errstr))) {
        rw_ctl_errorf(CMD, "test: %s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    if (PQntuples(res) == 0) {
        rw_ctl_errorf(CMD, "test: no webhook %lld", id);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    err = rw_webhook_send(
        rw_pg_str(res, 0, "url"), rw_pg_str(res, 0, "secret"), "webhook.test",
        rw_pg_str(res, 0, "delivery"), rw_pg_str(res, 0, "body"),
        (long)s->webhook_timeout_ms, &status, &latency, errstr, sizeof(errstr));
    if (err) {
        printf("webhook %lld (%s): no answer after %lld ms: %s\n", id,
               rw_pg_str(res, 0, "shown"), latency, errstr);
        rc = RW_CTL_EXIT_FAILED;
        goto out;
    }
    printf("webhook %lld (%s): HTTP %ld in %lld ms\n", id,
           rw_pg_str(res, 0, "shown"), status, latency);
    if (rw_webhook_classify(status) != RW_WEBHOOK_DELIVERED)
        rc = RW_CTL_EXIT_FAILED;
out:
    PQclear(res);
    return rc;
}

static int deliveries(int argc, char **argv, rw_pg_t *pg)
{
    static const char sql[] =
        "SELECT d.id, r.uuid AS run, d.event, d.state, d.attempts,"
        " d.last_status, d.last_error, d.created_at, d.next_at,"
        " d.delivered_at"
        " FROM webhook_deliveries d JOIN deployment_runs r ON r.id = d.run_id"
        " WHERE d.webhook_id = $1::bigint"
        " AND ($2::text IS NULL OR d.state = $2::text)"
        " ORDER BY d.id DESC LIMIT $3::int";
    static const rw_ctl_col_t cols[] = {
        {"id", "ID", false},
        {"run", "RUN", false},
        {"event", "EVENT", false},
        {"state", "STATE", false},
        {"attempts", "ATTEMPTS", false},
        {"last_status", "STATUS", false},
        {"created_at", "CREATED", false},
        {"last_error", "LAST ERROR", false},
    };
    const char *id = NULL, *state = NULL, *limit = "50";
    bool json = false;
    long long v = 0;
    PGresult *res = NULL;
    char errstr[512];
    int rc = RW_CTL_EXIT_OK;

    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--state") == 0 && val)
            state = argv[++i];
        else if (strcmp(argv[i], "--limit") == 0 && val)
            limit = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (!id && argv[i][0] != '-')
            id = argv[i];
        else {
            rw_ctl_errorf(CMD, "deliveries: unexpected argument '%s'", argv[i]);
            return RW_CTL_EXIT_USAGE;
        }
    }
    if (!id ||
        rw_ctl_parse_ll(CMD, "ID", id, 1, 9223372036854775807LL, &v) < 0 ||
        rw_ctl_parse_ll(CMD, "--limit", limit, 1, 1000, &v) < 0) {
        rw_ctl_errorf(CMD, "usage: rollwavectl webhook deliveries ID "
                           "[--state pending|delivered|dead] [--limit N] "
                           "[--json]");
        return RW_CTL_EXIT_USAGE;
    }
    if (state && strcmp(state, "pending") != 0 &&
        strcmp(state, "delivered") != 0 && strcmp(state, "dead") != 0) {
        rw_ctl_errorf(CMD, "--state: pending, delivered or dead");
        return RW_CTL_EXIT_USAGE;
    }
    {
        const char *params[3] = {id, state, limit};
        if (rw_pg_exec(pg, sql, 3, params, &res, errstr, sizeof(errstr))) {
            rw_ctl_errorf(CMD, "deliveries: %s", errstr);
            return RW_CTL_EXIT_FAILED;
        }
    }
    rc = rw_ctl_print_rows(res, cols, sizeof(cols) / sizeof(cols[0]), json,
                           "no deliveries");
    PQclear(res);
    return rc;
}

int rw_ctl_webhook(int argc, char **argv, const rw_settings_t *s)
{
    static const char *const verbs[] = {"add",  "list",       "remove",
                                        "test", "deliveries", NULL};
    rw_pg_t *pg = NULL;
    char errstr[512];
    bool known = false;
    int rc;

    for (size_t i = 0; argc >= 2 && verbs[i]; i++)
        if (strcmp(argv[1], verbs[i]) == 0)
            known = true;
    if (!known) {
        rw_ctl_errorf(CMD, "usage: rollwavectl webhook "
                           "add|list|remove|test|deliveries ...");
        return RW_CTL_EXIT_USAGE;
    }
    if (rw_pg_new(&pg, s->pg_dsn, errstr, sizeof(errstr))) {
        rw_ctl_errorf(CMD, "%s", errstr);
        return RW_CTL_EXIT_FAILED;
    }
    if (strcmp(argv[1], "add") == 0)
        rc = add(argc - 1, argv + 1, pg);
    else if (strcmp(argv[1], "list") == 0)
        rc = list(argc - 1, argv + 1, pg);
    else if (strcmp(argv[1], "remove") == 0)
        rc = remove_cmd(argc - 1, argv + 1, pg);
    else if (strcmp(argv[1], "test") == 0)
        rc = test(argc - 1, argv + 1, pg, s);
    else
        rc = deliveries(argc - 1, argv + 1, pg);
    rw_pg_destroy(pg);
    return rc;
}
