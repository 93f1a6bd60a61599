/*
 * rw_codec: v1 batch and poll messages <-> JSON (jansson).
 *
 * One validation path serves both directions: decode parses the payload and
 * walks the JSON tree with typed accessors that check every JSON type
 * before use; encode builds the JSON tree and walks it with the same code,
 * so both sides agree on what a valid message is. The rules mirror
 * schemas/messages/batch.schema.json and poll.schema.json.
 *
 * No Kafka, no Postgres, no logging here: errors go back to the caller,
 * which decides whether to dead-letter.
 */
#include "rw_codec.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "rw_time.h"

/* ---- error helpers ----------------------------------------------------- */

static rw_err_t field_err(char *errstr, size_t errlen, const char *path,
                          const char *what)
{
    return rw_err_set(errstr, errlen, RW_ERR_CODEC_FIELD, "%s: %s", path, what);
}

static void join_path(char *buf, size_t len, const char *prefix,
                      const char *key)
{
    if (prefix && *prefix)
        snprintf(buf, len, "%s.%s", prefix, key);
    else
        snprintf(buf, len, "%s", key);
}

/* ---- typed accessors --------------------------------------------------- */

/*
 * Integer member key of obj within [min, max]. A missing member is an error
 * unless nullable, in which case missing and null both give *out = dflt.
 */
static rw_err_t get_int(const json_t *obj, const char *prefix, const char *key,
                        long long min, long long max, bool nullable,
                        long long dflt, const char *expect, long long *out,
                        char *errstr, size_t errlen)
{
    char path[96];
    json_t *v = json_object_get(obj, key);

    join_path(path, sizeof(path), prefix, key);
    if (!v || json_is_null(v)) {
        if (nullable) {
            *out = dflt;
            return RW_OK;
        }
        if (!v)
            return field_err(errstr, errlen, path, "missing");
    }
    if (!json_is_integer(v))
        return field_err(errstr, errlen, path, expect);
    json_int_t n = json_integer_value(v);
    if (n < min || n > max)
        return field_err(errstr, errlen, path, expect);
    *out = (long long)n;
    return RW_OK;
}

/* True when s (n bytes of valid UTF-8) holds a C0 or C1 control char. */
static bool has_control(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;

    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f)
            return true;
        /* U+0080..U+009F are encoded as C2 80..C2 9F. */
        if (p[i] == 0xc2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f)
            return true;
    }
    return false;
}

/*
 * The Lagoon-name rule, in one place: see rw_codec_check_name in the
 * header. s holds n bytes of valid UTF-8 (jansson guarantees it for
 * decoded strings; rw_codec_check_name checks it for the rest). Writes
 * why not into what and returns false when s breaks the rule.
 */
static bool name_ok(const char *s, size_t n, char *what, size_t len)
{
    if (n == 0) {
        snprintf(what, len, "empty");
        return false;
    }
    if (n > RW_CODEC_MAX_NAME_BYTES) {
        snprintf(what, len, "expected 1..%d bytes, got %zu",
                 RW_CODEC_MAX_NAME_BYTES, n);
        return false;
    }
    if (has_control(s, n)) {
        snprintf(what, len, "contains control characters");
        return false;
    }
    return true;
}

/* True when s (n bytes) is well-formed UTF-8 (no overlongs, surrogates). */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        size_t k = c < 0x80                 ? 0
                   : c >= 0xc2 && c <= 0xdf ? 1
                   : c >= 0xe0 && c <= 0xef ? 2
                   : c >= 0xf0 && c <= 0xf4 ? 3
                                            : 9;
        unsigned char lo = 0x80, hi = 0xbf;

        if (k == 9 || (k > 0 && i + k >= n))
            return false;
        if (c == 0xe0)
            lo = 0xa0;
        else if (c == 0xed)
            hi = 0x9f;
        else if (c == 0xf0)
            lo = 0x90;
        else if (c == 0xf4)
            hi = 0x8f;
        for (size_t j = 1; j <= k; j++) {
            if (s[i + j] < (j == 1 ? lo : 0x80) ||
                s[i + j] > (j == 1 ? hi : 0xbf))
                return false;
        }
        i += k + 1;
    }
    return true;
}

rw_err_t rw_codec_check_name(const char *s, char *errstr, size_t errlen)
{
    char what[64];

    if (!s)
        return rw_err_set(errstr, errlen, RW_ERR_CODEC_FIELD, "missing");
    if (!utf8_ok((const unsigned char *)s, strlen(s)))
        return rw_err_set(errstr, errlen, RW_ERR_CODEC_FIELD,
                          "not valid UTF-8");
    if (!name_ok(s, strlen(s), what, sizeof(what)))
        return rw_err_set(errstr, errlen, RW_ERR_CODEC_FIELD, "%s", what);
    return RW_OK;
}

/*
 * String member key of obj that follows the Lagoon-name rule; *out gets a
 * malloc'd copy the caller owns.
 */
static rw_err_t get_name(const json_t *obj, const char *prefix, const char *key,
                         char **out, char *errstr, size_t errlen)
{
    char path[96];
    char what[64];
    json_t *v = json_object_get(obj, key);

    join_path(path, sizeof(path), prefix, key);
    if (!v)
        return field_err(errstr, errlen, path, "missing");
    if (!json_is_string(v))
        return field_err(errstr, errlen, path, "expected string");
    /* An embedded NUL is a control character: has_control sees it. */
    if (!name_ok(json_string_value(v), json_string_length(v), what,
                 sizeof(what)))
        return field_err(errstr, errlen, path, what);
    *out = strndup(json_string_value(v), json_string_length(v));
    if (!*out)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "%s: out of memory",
                          path);
    return RW_OK;
}

/*
 * String member key of obj, minlen..maxlen bytes, optionally free of
 * control characters; *out gets a malloc'd copy the caller owns.
 */
static rw_err_t get_str(const json_t *obj, const char *prefix, const char *key,
                        size_t minlen, size_t maxlen, bool no_control,
                        char **out, char *errstr, size_t errlen)
{
    char path[96];
    char what[64];
    json_t *v = json_object_get(obj, key);

    join_path(path, sizeof(path), prefix, key);
    if (!v)
        return field_err(errstr, errlen, path, "missing");
    if (!json_is_string(v))
        return field_err(errstr, errlen, path, "expected string");
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n < minlen && minlen == 1)
        return field_err(errstr, errlen, path, "empty");
    if (n < minlen || n > maxlen) {
        snprintf(what, sizeof(what), "expected %zu..%zu bytes, got %zu", minlen,
                 maxlen, n);
        return field_err(errstr, errlen, path, what);
    }
    /* Strings with NUL never get here: jansson rejects \u0000 by default. */
    if (memchr(s, '\0', n) || (no_control && has_control(s, n)))
        return field_err(errstr, errlen, path, "contains control characters");
    *out = strndup(s, n);
    if (!*out)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "%s: out of memory",
                          path);
    return RW_OK;
}

/* ---- shared header ----------------------------------------------------- */

bool rw_codec_is_uuid(const char *s)
{
    static const int dash[] = {8, 13, 18, 23};
    size_t d = 0;

    if (!s)
        return false;
    for (int i = 0; i < 36; i++) {
        if (d < 4 && i == dash[d]) {
            if (s[i] != '-')
                return false;
            d++;
            continue;
        }
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return s[36] == '\0';
}

static rw_err_t parse_root(const void *buf, size_t len, json_t **root,
                           char *errstr, size_t errlen)
{
    json_error_t jerr;

    *root = NULL;
    if (!buf && len > 0)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "payload: NULL buffer");
    if (len > RW_CODEC_MAX_BYTES)
        return rw_err_set(errstr, errlen, RW_ERR_CODEC_TOO_LARGE,
                          "payload: %zu bytes exceeds the %d byte limit", len,
                          RW_CODEC_MAX_BYTES);
    /* Duplicate keys would make "which value wins" a parser detail. */
    *root = json_loadb(buf ? buf : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*root)
        return rw_err_set(errstr, errlen, RW_ERR_CODEC_JSON,
                          "invalid json at line %d col %d: %s", jerr.line,
                          jerr.column, jerr.text);
    if (!json_is_object(*root)) {
        json_decref(*root);
        *root = NULL;
        return rw_err_set(errstr, errlen, RW_ERR_CODEC_JSON,
                          "invalid json: top level is not an object");
    }
    return RW_OK;
}

/* "v" and "type" must say v1 of the expected type. */
static rw_err_t check_header(const json_t *root, const char *type, char *errstr,
                             size_t errlen)
{
    json_t *v = json_object_get(root, "v");
    json_t *t = json_object_get(root, "type");
    char what[48];

    if (!v)
        return field_err(errstr, errlen, "v", "missing");
    if (!json_is_integer(v))
        return field_err(errstr, errlen, "v", "expected integer");
    if (json_integer_value(v) != RW_CODEC_VERSION)
        return rw_err_set(errstr, errlen, RW_ERR_CODEC_VERSION,
                          "v: unsupported version %" JSON_INTEGER_FORMAT,
                          json_integer_value(v));
    if (!t)
        return field_err(errstr, errlen, "type", "missing");
    /* The wrong value is not echoed: it is untrusted and may be huge. */
    snprintf(what, sizeof(what), "expected \"%s\"", type);
    if (!json_is_string(t) || strcmp(json_string_value(t), type) != 0 ||
        json_string_length(t) != strlen(type))
        return field_err(errstr, errlen, "type", what);
    return RW_OK;
}

static rw_err_t get_run(const json_t *root, char **out, char *errstr,
                        size_t errlen)
{
    rw_err_t err =
        get_str(root, NULL, "run", 36, 36, true, out, errstr, errlen);

    if (err == RW_ERR_CODEC_FIELD &&
        json_is_string(json_object_get(root, "run")))
        return field_err(errstr, errlen, "run", "not a uuid");
    if (err)
        return err;
    if (!rw_codec_is_uuid(*out)) {
        free(*out);
        *out = NULL;
        return field_err(errstr, errlen, "run", "not a uuid");
    }
    return RW_OK;
}

/* ---- batch ------------------------------------------------------------- */

void rw_codec_batch_free(rw_batch_msg_t *m)
{
    if (!m)
        return;
    free(m->run);
    for (size_t i = 0; m->build_vars && i < m->n_build_vars; i++) {
        free(m->build_vars[i].name);
        free(m->build_vars[i].value);
    }
    free(m->build_vars);
    for (size_t i = 0; m->targets && i < m->n_targets; i++) {
        free(m->targets[i].project);
        free(m->targets[i].environment);
    }
    free(m->targets);
    memset(m, 0, sizeof(*m));
}

static rw_err_t batch_vars_from_json(const json_t *root, rw_batch_msg_t *out,
                                     char *errstr, size_t errlen)
{
    json_t *arr = json_object_get(root, "build_variables");
    char prefix[48];
    rw_err_t err = RW_OK;

    if (!arr)
        return RW_OK; /* optional: no build variables */
    if (!json_is_array(arr))
        return field_err(errstr, errlen, "build_variables", "expected array");
    size_t n = json_array_size(arr);
    if (n > RW_CODEC_MAX_BUILD_VARS) {
        char what[48];
        snprintf(what, sizeof(what), "more than %d entries",
                 RW_CODEC_MAX_BUILD_VARS);
        return field_err(errstr, errlen, "build_variables", what);
    }
    if (n == 0)
        return RW_OK;
    out->build_vars = calloc(n, sizeof(*out->build_vars));
    if (!out->build_vars)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        rw_codec_build_var_t *bv = &out->build_vars[i];

        snprintf(prefix, sizeof(prefix), "build_variables[%zu]", i);
        /* Counted before filling so that free releases partial entries. */
        out->n_build_vars = i + 1;
        if (!json_is_object(e))
            return field_err(errstr, errlen, prefix, "expected object");
        err = get_name(e, prefix, "name", &bv->name, errstr, errlen);
        if (err)
            return err;
        err = get_str(e, prefix, "value", 0, RW_CODEC_MAX_BYTES, false,
                      &bv->value, errstr, errlen);
        if (err)
            return err;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(out->build_vars[j].name, bv->name) == 0) {
                char path[64];
                snprintf(path, sizeof(path), "%s.name", prefix);
                return field_err(errstr, errlen, path, "duplicate name");
            }
        }
    }
    return RW_OK;
}

static rw_err_t batch_targets_from_json(const json_t *root, rw_batch_msg_t *out,
                                        char *errstr, size_t errlen)
{
    json_t *arr = json_object_get(root, "targets");
    char prefix[48];
    char path[64];
    rw_err_t err = RW_OK;

    if (!arr)
        return field_err(errstr, errlen, "targets", "missing");
    if (!json_is_array(arr))
        return field_err(errstr, errlen, "targets", "expected array");
    size_t n = json_array_size(arr);
    if (n == 0)
        return field_err(errstr, errlen, "targets", "empty");
    if (n > RW_CODEC_MAX_TARGETS) {
        char what[48];
        snprintf(what, sizeof(what), "more than %d entries",
                 RW_CODEC_MAX_TARGETS);
        return field_err(errstr, errlen, "targets", what);
    }
    out->targets = calloc(n, sizeof(*out->targets));
    if (!out->targets)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        rw_codec_target_t *t = &out->targets[i];

        snprintf(prefix, sizeof(prefix), "targets[%zu]", i);
        out->n_targets = i + 1;
        if (!json_is_object(e))
            return field_err(errstr, errlen, prefix, "expected object");
        err = get_int(e, prefix, "instance_id", 1, LLONG_MAX, false, 0,
                      "expected positive integer", &t->instance_id, errstr,
                      errlen);
        if (err)
            return err;
        err = get_name(e, prefix, "project", &t->project, errstr, errlen);
        if (err)
            return err;
        err =
            get_name(e, prefix, "environment", &t->environment, errstr, errlen);
        if (err)
            return err;
        /*
         * A chunk naming one instance or one Lagoon environment twice would
         * trigger it twice in one mutation and make the poller's mapping of
         * deployments back to targets ambiguous.
         */
        for (size_t j = 0; j < i; j++) {
            const rw_codec_target_t *o = &out->targets[j];
            if (o->instance_id == t->instance_id) {
                snprintf(path, sizeof(path), "%s.instance_id", prefix);
                return field_err(errstr, errlen, path, "duplicate instance");
            }
            if (strcmp(o->project, t->project) == 0 &&
                strcmp(o->environment, t->environment) == 0) {
                snprintf(path, sizeof(path), "%s.environment", prefix);
                return field_err(errstr, errlen, path,
                                 "duplicate project environment");
            }
        }
    }
    return RW_OK;
}

static rw_err_t batch_from_json(const json_t *root, rw_batch_msg_t *out,
                                char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    long long n = 0;
    json_t *vo = NULL;

    memset(out, 0, sizeof(*out));
    err = check_header(root, RW_CODEC_TYPE_BATCH, errstr, errlen);
    if (err)
        goto out;
    err = get_run(root, &out->run, errstr, errlen);
    if (err)
        goto out;
    err = get_int(root, NULL, "chunk", 0, INT_MAX, false, 0,
                  "expected non-negative integer", &n, errstr, errlen);
    if (err)
        goto out;
    out->chunk = (int)n;
    err = get_int(root, NULL, "attempt", 1, INT_MAX, false, 0,
                  "expected positive integer", &n, errstr, errlen);
    if (err)
        goto out;
    out->attempt = (int)n;
    err = get_int(root, NULL, "store_app_id", 1, LLONG_MAX, true, 0,
                  "expected positive integer or null", &out->store_app_id,
                  errstr, errlen);
    if (err)
        goto out;
    vo = json_object_get(root, "variables_only");
    if (vo && !json_is_boolean(vo)) {
        err = field_err(errstr, errlen, "variables_only", "expected boolean");
        goto out;
    }
    out->variables_only = vo && json_is_true(vo);
    err = batch_vars_from_json(root, out, errstr, errlen);
    if (err)
        goto out;
    err = batch_targets_from_json(root, out, errstr, errlen);
out:
    if (err)
        rw_codec_batch_free(out);
    return err;
}

rw_err_t rw_codec_batch_decode(const void *buf, size_t len, rw_batch_msg_t *out,
                               char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *root = NULL;

    if (!out)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG, "out: NULL");
    memset(out, 0, sizeof(*out));
    err = parse_root(buf, len, &root, errstr, errlen);
    if (err)
        goto out;
    err = batch_from_json(root, out, errstr, errlen);
out:
    json_decref(root);
    return err;
}

/* ---- encoding helpers -------------------------------------------------- */

/* Set obj[key] to a new JSON value; NULL value means allocation failed. */
static rw_err_t put(json_t *obj, const char *key, json_t *value, char *errstr,
                    size_t errlen)
{
    if (!value || json_object_set_new(obj, key, value) != 0)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "%s: out of memory",
                          key);
    return RW_OK;
}

/* obj[key] = s; names the field when s is NULL or not valid UTF-8. */
static rw_err_t put_str(json_t *obj, const char *prefix, const char *key,
                        const char *s, char *errstr, size_t errlen)
{
    char path[96];
    json_t *v = NULL;

    join_path(path, sizeof(path), prefix, key);
    if (!s)
        return field_err(errstr, errlen, path, "missing");
    v = json_string(s);
    if (!v)
        return field_err(errstr, errlen, path, "not valid UTF-8");
    if (json_object_set_new(obj, key, v) != 0)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "%s: out of memory",
                          path);
    return RW_OK;
}

static rw_err_t dump(const json_t *root, char **json_out, char *errstr,
                     size_t errlen)
{
    char *s = json_dumps(root, JSON_COMPACT);

    if (!s)
        return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "json_dumps failed");
    if (strlen(s) > RW_CODEC_MAX_BYTES) {
        size_t n = strlen(s);
        free(s);
        return rw_err_set(errstr, errlen, RW_ERR_CODEC_TOO_LARGE,
                          "payload: %zu bytes exceeds the %d byte limit", n,
                          RW_CODEC_MAX_BYTES);
    }
    *json_out = s;
    return RW_OK;
}

static rw_err_t header_to_json(json_t *root, const char *type, const char *run,
                               int chunk, int attempt, char *errstr,
                               size_t errlen)
{
    rw_err_t err = RW_OK;

    err = put(root, "v", json_integer(RW_CODEC_VERSION), errstr, errlen);
    if (!err)
        err = put(root, "type", json_string(type), errstr, errlen);
    if (!err)
        err = put_str(root, NULL, "run", run, errstr, errlen);
    if (!err)
        err = put(root, "chunk", json_integer(chunk), errstr, errlen);
    if (!err)
        err = put(root, "attempt", json_integer(attempt), errstr, errlen);
    return err;
}

static rw_err_t batch_to_json(const rw_batch_msg_t *m, json_t *root,
                              char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *arr = NULL;
    char prefix[48];

    err = header_to_json(root, RW_CODEC_TYPE_BATCH, m->run, m->chunk,
                         m->attempt, errstr, errlen);
    if (err)
        return err;
    /* 0 is "no store app" (a mixed run); negative ids stay invalid. */
    err =
        put(root, "store_app_id",
            m->store_app_id == 0 ? json_null() : json_integer(m->store_app_id),
            errstr, errlen);
    if (!err)
        err = put(root, "variables_only", json_boolean(m->variables_only),
                  errstr, errlen);
    if (err)
        return err;

    arr = json_array();
    err = put(root, "build_variables", arr, errstr, errlen);
    if (err)
        return err;
    if (m->n_build_vars > 0 && !m->build_vars)
        return field_err(errstr, errlen, "build_variables", "NULL array");
    for (size_t i = 0; i < m->n_build_vars; i++) {
        json_t *e = json_object();
        snprintf(prefix, sizeof(prefix), "build_variables[%zu]", i);
        if (!e || json_array_append_new(arr, e) != 0)
            return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        err = put_str(e, prefix, "name", m->build_vars[i].name, errstr, errlen);
        if (!err)
            err = put_str(e, prefix, "value", m->build_vars[i].value, errstr,
                          errlen);
        if (err)
            return err;
    }

    arr = json_array();
    err = put(root, "targets", arr, errstr, errlen);
    if (err)
        return err;
    if (m->n_targets > 0 && !m->targets)
        return field_err(errstr, errlen, "targets", "NULL array");
    for (size_t i = 0; i < m->n_targets; i++) {
        json_t *e = json_object();
        snprintf(prefix, sizeof(prefix), "targets[%zu]", i);
        if (!e || json_array_append_new(arr, e) != 0)
            return rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        err = put(e, "instance_id", json_integer(m->targets[i].instance_id),
                  errstr, errlen);
        if (!err)
            err = put_str(e, prefix, "project", m->targets[i].project, errstr,
                          errlen);
        if (!err)
            err = put_str(e, prefix, "environment", m->targets[i].environment,
                          errstr, errlen);
        if (err)
            return err;
    }
    return RW_OK;
}

rw_err_t rw_codec_batch_encode(const rw_batch_msg_t *m, char **json_out,
                               char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *root = NULL;
    rw_batch_msg_t check;

    memset(&check, 0, sizeof(check));
    if (!m || !json_out)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "message or output NULL");
    *json_out = NULL;
    root = json_object();
    if (!root) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    err = batch_to_json(m, root, errstr, errlen);
    if (err)
        goto out;
    /* Same rules as the consumer applies: never produce a poison message. */
    err = batch_from_json(root, &check, errstr, errlen);
    if (err)
        goto out;
    err = dump(root, json_out, errstr, errlen);
out:
    rw_codec_batch_free(&check);
    json_decref(root);
    return err;
}

/* ---- time -------------------------------------------------------------- */

/* One parser for the whole project (rw_time); RFC 3339 as written here. */
rw_err_t rw_codec_format_time(char *buf, size_t len, long long epoch_ms)
{
    return rw_time_format(buf, len, epoch_ms);
}

bool rw_codec_parse_time(const char *s, long long *epoch_ms)
{
    return rw_time_parse(s, RW_TIME_RFC3339, epoch_ms, NULL, 0) == RW_OK;
}

/* ---- poll -------------------------------------------------------------- */

void rw_codec_poll_free(rw_poll_msg_t *m)
{
    if (!m)
        return;
    free(m->run);
    free(m->bulk_id);
    memset(m, 0, sizeof(*m));
}

static rw_err_t poll_from_json(const json_t *root, rw_poll_msg_t *out,
                               char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    long long n = 0;
    json_t *due = NULL;

    memset(out, 0, sizeof(*out));
    err = check_header(root, RW_CODEC_TYPE_POLL, errstr, errlen);
    if (err)
        goto out;
    err = get_run(root, &out->run, errstr, errlen);
    if (err)
        goto out;
    err = get_int(root, NULL, "chunk", 0, INT_MAX, false, 0,
                  "expected non-negative integer", &n, errstr, errlen);
    if (err)
        goto out;
    out->chunk = (int)n;
    err = get_str(root, NULL, "bulk_id", 1, RW_CODEC_MAX_BULK_ID_BYTES, true,
                  &out->bulk_id, errstr, errlen);
    if (err)
        goto out;
    err = get_int(root, NULL, "attempt", 1, INT_MAX, false, 0,
                  "expected positive integer", &n, errstr, errlen);
    if (err)
        goto out;
    out->attempt = (int)n;
    due = json_object_get(root, "due_at");
    if (!due) {
        err = field_err(errstr, errlen, "due_at", "missing");
        goto out;
    }
    if (!json_is_string(due) ||
        !rw_codec_parse_time(json_string_value(due), &out->due_at_ms)) {
        err =
            field_err(errstr, errlen, "due_at", "expected RFC 3339 timestamp");
        goto out;
    }
out:
    if (err)
        rw_codec_poll_free(out);
    return err;
}

rw_err_t rw_codec_poll_decode(const void *buf, size_t len, rw_poll_msg_t *out,
                              char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *root = NULL;

    if (!out)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG, "out: NULL");
    memset(out, 0, sizeof(*out));
    err = parse_root(buf, len, &root, errstr, errlen);
    if (err)
        goto out;
    err = poll_from_json(root, out, errstr, errlen);
out:
    json_decref(root);
    return err;
}

rw_err_t rw_codec_poll_encode(const rw_poll_msg_t *m, char **json_out,
                              char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *root = NULL;
    rw_poll_msg_t check;
    char ts[32];

    memset(&check, 0, sizeof(check));
    if (!m || !json_out)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "message or output NULL");
    *json_out = NULL;
    root = json_object();
    if (!root) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOMEM, "out of memory");
        goto out;
    }
    err = header_to_json(root, RW_CODEC_TYPE_POLL, m->run, m->chunk, m->attempt,
                         errstr, errlen);
    if (err)
        goto out;
    err = put_str(root, NULL, "bulk_id", m->bulk_id, errstr, errlen);
    if (err)
        goto out;
    if (rw_codec_format_time(ts, sizeof(ts), m->due_at_ms) != RW_OK) {
        err = field_err(errstr, errlen, "due_at", "out of range");
        goto out;
    }
    err = put(root, "due_at", json_string(ts), errstr, errlen);
    if (err)
        goto out;
    err = poll_from_json(root, &check, errstr, errlen);
    if (err)
        goto out;
    err = dump(root, json_out, errstr, errlen);
out:
    rw_codec_poll_free(&check);
    json_decref(root);
    return err;
}

/* ---- peek and key ------------------------------------------------------ */

rw_err_t rw_codec_peek(const void *buf, size_t len, int *version, char *type,
                       size_t typelen, char *errstr, size_t errlen)
{
    rw_err_t err = RW_OK;
    json_t *root = NULL;
    json_t *v = NULL;
    json_t *t = NULL;

    if (version)
        *version = 0;
    if (type && typelen > 0)
        type[0] = '\0';
    err = parse_root(buf, len, &root, errstr, errlen);
    if (err)
        goto out;
    v = json_object_get(root, "v");
    t = json_object_get(root, "type");
    if (!v) {
        err = field_err(errstr, errlen, "v", "missing");
        goto out;
    }
    if (!json_is_integer(v) || json_integer_value(v) < INT_MIN ||
        json_integer_value(v) > INT_MAX) {
        err = field_err(errstr, errlen, "v", "expected integer");
        goto out;
    }
    if (version)
        *version = (int)json_integer_value(v);
    if (!t) {
        err = field_err(errstr, errlen, "type", "missing");
        goto out;
    }
    if (!json_is_string(t)) {
        err = field_err(errstr, errlen, "type", "expected string");
        goto out;
    }
    if (type && typelen > 0)
        snprintf(type, typelen, "%s", json_string_value(t));
out:
    json_decref(root);
    return err;
}

rw_err_t rw_codec_key(char *buf, size_t len, const char *run_uuid, int chunk)
{
    int n = 0;

    if (!buf || len == 0)
        return RW_ERR_INVALID_ARG;
    buf[0] = '\0';
    if (!run_uuid || chunk < 0)
        return RW_ERR_INVALID_ARG;
    n = snprintf(buf, len, "%s:%d", run_uuid, chunk);
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return RW_ERR_INVALID_ARG;
    }
    return RW_OK;
}
