/*
 * rw_buildlog: a build log's way from Lagoon's answer into target_logs:
 * redaction, the cut, and the SQL of that table (one place for it).
 */
#include "rw_buildlog.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUT_MARK_FMT "[... %zu bytes cut ...]\n"

rw_err_t rw_buildlog_mode_parse(const char *s, rw_buildlog_mode_t *out,
                                char *errstr, size_t errlen)
{
    if (!s || !*s || strcmp(s, "failed") == 0)
        *out = RW_BUILDLOG_FAILED;
    else if (strcmp(s, "all") == 0)
        *out = RW_BUILDLOG_ALL;
    else if (strcmp(s, "none") == 0)
        *out = RW_BUILDLOG_NONE;
    else
        return rw_err_set(errstr, errlen, RW_ERR_CONFIG,
                          "ROLLWAVE_LOG_FETCH: '%s' is not failed, all or "
                          "none",
                          s);
    return RW_OK;
}

static rw_err_t add(rw_redactor_t *r, const char *v, size_t len)
{
    bool added;

    return v && len ? rw_redactor_add_secret(r, v, len, &added) : RW_OK;
}

/* The password of scheme://user:password@host... (percent-decoded forms
 * are found by the redactor's own URL-encoded variants). */
static rw_err_t add_url_password(rw_redactor_t *r, const char *url)
{
    const char *p = url ? strstr(url, "://") : NULL;
    const char *at, *colon;

    if (!p)
        return RW_OK;
    p += 3;
    at = strchr(p, '@');
    if (!at)
        return RW_OK;
    colon = memchr(p, ':', (size_t)(at - p));
    return colon ? add(r, colon + 1, (size_t)(at - colon - 1)) : RW_OK;
}

/* password=... of a libpq key/value string (quotes allowed). */
static rw_err_t add_dsn_password(rw_redactor_t *r, const char *dsn)
{
    const char *p = dsn ? strstr(dsn, "password") : NULL;
    rw_err_t err = RW_OK;

    if (dsn && strstr(dsn, "://"))
        err = add_url_password(r, dsn);
    for (; !err && p; p = strstr(p + 1, "password")) {
        const char *v = p + 8;
        size_t n;

        while (*v == ' ')
            v++;
        if (*v != '=')
            continue;
        v++;
        while (*v == ' ')
            v++;
        if (*v == '\'') {
            v++;
            n = strcspn(v, "'");
        } else {
            n = strcspn(v, " \t&");
        }
        err = add(r, v, n);
    }
    return err;
}

static rw_err_t add_token_file(rw_redactor_t *r, const char *path)
{
    rw_err_t err = RW_OK;
    char buf[4096];
    size_t n;
    FILE *f;

    if (!path || !*path)
        return RW_OK;
    f = fopen(path, "r");
    if (!f)
        return RW_OK; /* the Lagoon client says so when it matters */
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' ||
                     buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    err = add(r, buf, n);
    explicit_bzero(buf, sizeof(buf));
    return err;
}

rw_err_t rw_buildlog_redactor_new(const rw_settings_t *s, rw_redactor_t **out,
                                  char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_redactor_t *r = rw_redactor_new();

    *out = NULL;
    if (!r)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    err =
        add(r, s->lagoon_token, s->lagoon_token ? strlen(s->lagoon_token) : 0);
    if (!err)
        err = add_token_file(r, s->lagoon_token_file);
    if (!err)
        err = add_dsn_password(r, s->pg_dsn);
    if (!err)
        err = add_url_password(r, s->redis_url);
    if (!err)
        err = add(r, s->kafka_sasl_password,
                  s->kafka_sasl_password ? strlen(s->kafka_sasl_password) : 0);
    if (err) {
        rw_err_set(errstr, errlen, err, "redactor: out of memory");
        goto out;
    }
    if (s->log_redact_patterns && *s->log_redact_patterns) {
        err =
            rw_redactor_add_patterns(r, s->log_redact_patterns, errstr, errlen);
        if (err)
            goto out;
    }
    *out = r;
    r = NULL;
out:
    rw_redactor_free(r);
    return err;
}

rw_err_t rw_buildlog_vars_redactor(const rw_lagoon_var_t *vars, size_t n_vars,
                                   rw_redactor_t **out, char *errstr,
                                   size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_redactor_t *r = rw_redactor_new();

    *out = NULL;
    if (!r)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !err && i < n_vars; i++)
        err = add(r, vars[i].value, vars[i].value ? strlen(vars[i].value) : 0);
    if (err) {
        rw_redactor_free(r);
        return rw_err_set(errstr, errlen, err, "redactor: out of memory");
    }
    *out = r;
    return RW_OK;
}

/* The start of the last max bytes of s: a line start when one is in them,
 * never inside a UTF-8 sequence. */
static size_t tail_start(const char *s, size_t len, size_t max)
{
    size_t from = len - max;
    const char *nl = memchr(s + from, '\n', max);

    if (from == 0)
        return 0;
    if (s[from - 1] == '\n')
        return from;
    if (nl && (size_t)(nl - s) + 1 < len)
        return (size_t)(nl - s) + 1;
    while (from < len && ((unsigned char)s[from] & 0xC0) == 0x80)
        from++;
    return from;
}

char *rw_buildlog_shape(const rw_redactor_t *const *rs, size_t n_rs,
                        const char *log, size_t len, size_t max_bytes,
                        size_t *out_len)
{
    char *cur = NULL, *out = NULL;
    size_t cur_len, from, dropped = 0;
    int mlen;

    /* first cut: redaction of several MiB only to throw most away would
     * cost the poller for nothing */
    if (len > max_bytes + RW_BUILDLOG_SLACK) {
        dropped = len - (max_bytes + RW_BUILDLOG_SLACK);
        log += dropped;
        len -= dropped;
    }
    cur = malloc(len + 1);
    if (!cur)
        return NULL;
    memcpy(cur, log, len);
    cur[len] = '\0';
    cur_len = len;
    for (size_t i = 0; i < n_rs; i++) {
        char *next;

        if (!rs[i])
            continue;
        next = rw_redact(rs[i], cur, cur_len, &cur_len, NULL);
        free(cur);
        cur = next;
        if (!cur)
            return NULL;
    }
    for (size_t i = 0; i < cur_len; i++)
        if (cur[i] == '\0')
            cur[i] = ' ';
    if (cur_len <= max_bytes) {
        if (out_len)
            *out_len = cur_len;
        return cur;
    }
    from = tail_start(cur, cur_len, max_bytes);
    /* the marker tells the reader how much of the build is missing: the
     * first cut counts too */
    mlen = snprintf(NULL, 0, CUT_MARK_FMT, dropped + from);
    out = malloc((size_t)mlen + cur_len - from + 1);
    if (out) {
        snprintf(out, (size_t)mlen + 1, CUT_MARK_FMT, dropped + from);
        memcpy(out + mlen, cur + from, cur_len - from + 1);
        if (out_len)
            *out_len = (size_t)mlen + cur_len - from;
    }
    free(cur);
    return out;
}

/*
 * A log already stored stays; an unavailable one takes the new fetch and
 * counts it. The state column here is the log's, not a target's.
 */
static const char SQL_STORE[] =
    "INSERT INTO target_logs AS l (target_id, run_id, deployment_name, state,"
    "                              bytes_original, log, error)"
    " SELECT t, $1::bigint, d, CASE WHEN s THEN 'stored' ELSE 'unavailable'"
    "        END, b, x, e"
    " FROM unnest($2::bigint[], $3::text[], $4::boolean[], $5::bigint[],"
    "             $6::text[], $7::text[]) AS u(t, d, s, b, x, e)"
    " ON CONFLICT (target_id, deployment_name) DO UPDATE"
    " SET state = EXCLUDED.state, attempts = l.attempts + 1,"
    "     bytes_original = EXCLUDED.bytes_original, log = EXCLUDED.log,"
    "     error = EXCLUDED.error, fetched_at = now()"
    " WHERE l.state = 'unavailable'";

rw_err_t rw_buildlog_store(rw_pg_t *pg, long long run_id,
                           const rw_buildlog_row_t *rows, size_t n,
                           char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    rw_pg_array_t a[6];
    const char *par[7];
    char run_s[24];
    PGresult *res = NULL;

    if (n == 0)
        return RW_OK;
    for (int i = 0; i < 6; i++)
        rw_pg_array_init(&a[i]);
    for (size_t i = 0; !err && i < n; i++) {
        err = rw_pg_array_add_ll(&a[0], rows[i].target_id);
        if (!err)
            err = rw_pg_array_add_str(&a[1], rows[i].deployment_name);
        if (!err)
            err = rw_pg_array_add_str(&a[2], rows[i].stored ? "t" : "f");
        if (!err)
            err = rw_pg_array_add_ll(&a[3], rows[i].bytes);
        if (!err)
            err = rw_pg_array_add_str(&a[4],
                                      rows[i].stored ? rows[i].text : NULL);
        if (!err)
            err = rw_pg_array_add_str(&a[5],
                                      rows[i].stored ? NULL : rows[i].error);
    }
    if (err) {
        err = rw_err_set(errstr, errlen, err, "out of memory");
        goto out;
    }
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    par[0] = run_s;
    for (int i = 0; i < 6; i++)
        par[i + 1] = rw_pg_array_finish(&a[i]);
    err = rw_pg_exec(pg, SQL_STORE, 7, par, &res, errstr, errlen);
out:
    PQclear(res);
    for (int i = 0; i < 6; i++)
        rw_pg_array_free(&a[i]);
    return err;
}

static const char SQL_DUE[] =
    "SELECT l.run_id, l.target_id, l.deployment_name, t.lagoon_project,"
    "       t.lagoon_environment"
    " FROM target_logs l JOIN run_targets t ON t.id = l.target_id"
    " WHERE l.state = 'unavailable' AND l.attempts < $1::int"
    "   AND l.fetched_at < now() - make_interval(secs => $2::bigint)"
    " ORDER BY l.run_id, l.fetched_at LIMIT $3::int";

rw_err_t rw_buildlog_due(rw_pg_t *pg, long long retry_after_s, size_t max,
                         rw_buildlog_due_t **out, size_t *n, char *errstr,
                         size_t errlen)
{
    rw_err_t err = RW_OK;
    PGresult *res = NULL;
    char att[16], after[24], lim[24];
    const char *par[3] = {att, after, lim};
    rw_buildlog_due_t *d = NULL;
    int rows;

    *out = NULL;
    *n = 0;
    snprintf(att, sizeof(att), "%d", RW_BUILDLOG_MAX_ATTEMPTS);
    snprintf(after, sizeof(after), "%lld", retry_after_s);
    snprintf(lim, sizeof(lim), "%zu", max);
    err = rw_pg_exec_replan(pg, SQL_DUE, 3, par, &res, errstr, errlen);
    if (err)
        goto out;
    rows = PQntuples(res);
    if (rows == 0)
        goto out;
    d = calloc((size_t)rows, sizeof(*d));
    if (!d) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < rows; i++) {
        const char *p = rw_pg_str(res, i, "lagoon_project");
        const char *e = rw_pg_str(res, i, "lagoon_environment");

        d[i].run_id = rw_pg_ll(res, i, "run_id", 0);
        d[i].target_id = rw_pg_ll(res, i, "target_id", 0);
        d[i].project = strdup(p ? p : "");
        d[i].environment = strdup(e ? e : "");
        d[i].deployment_name = strdup(rw_pg_str(res, i, "deployment_name"));
        *n = (size_t)i + 1;
        if (!d[i].project || !d[i].environment || !d[i].deployment_name) {
            err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    *out = d;
    d = NULL;
out:
    if (d) {
        rw_buildlog_due_free(d, *n);
        *n = 0;
    }
    PQclear(res);
    return err;
}

void rw_buildlog_due_free(rw_buildlog_due_t *d, size_t n)
{
    for (size_t i = 0; d && i < n; i++) {
        free(d[i].project);
        free(d[i].environment);
        free(d[i].deployment_name);
    }
    free(d);
}

/*
 * $1 run, $2 one instance or NULL, $3 failed targets only, $4..$6 the key
 * to start after or NULL, $7 limit or NULL (all). The chunk bound lets
 * a later page start its index walk at the key's chunk.
 */
static const char SQL_READ[] =
    "SELECT t.instance_id, i.name,"
    "  COALESCE(t.lagoon_project, i.lagoon_project) || '/' ||"
    "    COALESCE(t.lagoon_environment, i.lagoon_environment) AS target,"
    "  t.state, t.chunk::bigint AS chunk, t.attempt::bigint AS attempt,"
    "  COALESCE(l.deployment_name, t.deployment_name) AS deployment_name,"
    "  l.id AS log_id, COALESCE(l.state, 'none') AS log_state,"
    "  l.attempts::bigint AS log_attempts,"
    "  l.bytes_original, octet_length(l.log)::bigint AS bytes,"
    /*
     * The count of a marker the cut wrote; the text is the build's own,
     * so any first line may look like one: only a bounded count is read
     * (the read never fails on a log), and only of a stored log whose
     * text after that line is shorter than what Lagoon sent and whose
     * count is no more than that, which every cut log is.
     */
    "  CASE WHEN l.state = 'stored' AND m.n IS NOT NULL"
    "    AND m.n::bigint <= l.bytes_original"
    "    AND octet_length(l.log) - 21 - length(m.n) < l.bytes_original"
    "  THEN m.n::bigint END AS cut_bytes,"
    "  to_char(l.fetched_at AT TIME ZONE 'UTC',"
    "          'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS fetched_at,"
    "  l.error, l.log"
    " FROM run_targets t JOIN app_instances i ON i.id = t.instance_id"
    " LEFT JOIN target_logs l ON l.target_id = t.id"
    /* "[... " and " bytes cut ...]\n" are the 21 bytes around the count */
    " LEFT JOIN LATERAL (SELECT (regexp_match(l.log,"
    "   '^\\[\\.\\.\\. ([0-9]{1,18}) bytes cut \\.\\.\\.\\]\n'))[1] AS n) m"
    "   ON true"
    " WHERE t.run_id = $1::bigint"
    "   AND (l.id IS NOT NULL OR t.state = 'failed')"
    "   AND ($2::bigint IS NULL OR t.instance_id = $2::bigint)"
    "   AND (NOT $3::boolean OR t.state = 'failed')"
    "   AND ($4::int IS NULL OR (t.chunk >= $4::int AND"
    "     (t.chunk, t.instance_id, COALESCE(l.id, 0))"
    "       > ($4::int, $5::bigint, $6::bigint)))"
    " ORDER BY t.chunk, t.instance_id, COALESCE(l.id, 0)"
    " LIMIT $7::bigint";

rw_err_t rw_buildlog_read(rw_pg_t *pg, long long run_id, long long instance_id,
                          bool failed_only, const rw_buildlog_key_t *after,
                          long long limit, PGresult **res, char *errstr,
                          size_t errlen)
{
    char run_s[24], inst_s[24], chunk_s[24], key_s[24], log_s[24], lim_s[24];
    const char *par[7] = {
        run_s, NULL, failed_only ? "true" : "false", NULL, NULL, NULL, NULL};

    *res = NULL;
    snprintf(run_s, sizeof(run_s), "%lld", run_id);
    if (instance_id > 0) {
        snprintf(inst_s, sizeof(inst_s), "%lld", instance_id);
        par[1] = inst_s;
    }
    if (after && (after->chunk < 0 || after->chunk > INT_MAX))
        /* chunk numbers are ints: no key past one is a key of a row */
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "read: chunk %lld out of range", after->chunk);
    if (after) {
        snprintf(chunk_s, sizeof(chunk_s), "%lld", after->chunk);
        snprintf(key_s, sizeof(key_s), "%lld", after->instance_id);
        snprintf(log_s, sizeof(log_s), "%lld", after->log_id);
        par[3] = chunk_s;
        par[4] = key_s;
        par[5] = log_s;
    }
    if (limit > 0) {
        snprintf(lim_s, sizeof(lim_s), "%lld", limit);
        par[6] = lim_s;
    }
    return rw_pg_exec(pg, SQL_READ, 7, par, res, errstr, errlen);
}
