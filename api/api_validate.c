/*
 * api_validate: the checks every request goes through before a handler
 * trusts it: path patterns, ids, uuids, query parameter names and JSON
 * bodies against a field table. Pure functions: no I/O, no allocation
 * beyond jansson's iterators, so the unit tests drive them directly.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "api.h"

bool rw_api_path_match(const char *pattern, const char *path,
                       char params[][RW_API_PARAM_LEN + 1], int *n)
{
    const char *p = pattern, *s = path;

    *n = 0;
    while (*p && *s) {
        if (*p == '{') {
            const char *pe = strchr(p, '}');
            size_t len = strcspn(s, "/");
            if (!pe || len == 0 || len > RW_API_PARAM_LEN ||
                *n >= RW_API_MAX_PARAMS)
                return false;
            memcpy(params[*n], s, len);
            params[*n][len] = '\0';
            (*n)++;
            p = pe + 1;
            s += len;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    return *p == '\0' && *s == '\0';
}

bool rw_api_parse_ll(const char *s, long long min, long long max,
                     long long *out)
{
    long long v = 0;

    if (!s || !*s || strlen(s) > 19)
        return false;
    for (const char *c = s; *c; c++) {
        int d;
        if (*c < '0' || *c > '9')
            return false;
        d = *c - '0';
        if (v > (INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool rw_api_parse_key(const char *s, long long *out, int n)
{
    char part[20];
    long long v[RW_API_MAX_KEY];

    if (!s || n < 1 || n > RW_API_MAX_KEY)
        return false;
    for (int i = 0; i < n; i++) {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);

        /* the last part ends the string, every other one at a dot */
        if ((i < n - 1) != (dot != NULL) || len >= sizeof(part))
            return false;
        memcpy(part, s, len);
        part[len] = '\0';
        if (!rw_api_parse_ll(part, 0, INT64_MAX, &v[i]))
            return false;
        s += len + (dot ? 1 : 0);
    }
    memcpy(out, v, sizeof(v[0]) * (size_t)n);
    return true;
}

bool rw_api_is_uuid(const char *s)
{
    if (!s || strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

bool rw_api_query_allowed(const char *const *allowed, const char *name)
{
    for (; allowed && *allowed; allowed++)
        if (strcmp(*allowed, name) == 0)
            return true;
    return false;
}

static const rw_api_field_t *field_of(const rw_api_field_t *fields, size_t n,
                                      const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    return NULL;
}

static bool int_in(const json_t *v, long long min, long long max)
{
    return json_is_integer(v) && json_integer_value(v) >= min &&
           json_integer_value(v) <= max;
}

static rw_err_t check_value(const rw_api_field_t *f, const json_t *v,
                            char *errstr, size_t errlen)
{
    size_t i;
    const json_t *e;

    switch (f->type) {
    case RW_API_F_INT_NULL:
        if (json_is_null(v))
            return RW_OK;
        /* fall through */
    case RW_API_F_INT:
        if (!int_in(v, f->min, f->max))
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "%s must be an integer from %lld to %lld%s",
                              f->name, f->min, f->max,
                              f->type == RW_API_F_INT_NULL ? " or null" : "");
        return RW_OK;
    case RW_API_F_BOOL:
        if (!json_is_boolean(v))
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "%s must be true or false", f->name);
        return RW_OK;
    case RW_API_F_STRING:
        if (!json_is_string(v) || (long long)json_string_length(v) < f->min ||
            (long long)json_string_length(v) > f->max)
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "%s must be a string of %lld to %lld bytes",
                              f->name, f->min, f->max);
        return RW_OK;
    case RW_API_F_OBJECT:
        if (!json_is_object(v))
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "%s must be an object", f->name);
        return RW_OK;
    case RW_API_F_INT_ARRAY:
        if (!json_is_array(v) || json_array_size(v) == 0 ||
            (long long)json_array_size(v) > f->max)
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "%s must be an array of 1 to %lld integers",
                              f->name, f->max);
        json_array_foreach(v, i, e)
        {
            if (!int_in(e, f->min, INT64_MAX))
                return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                                  "%s[%zu] must be an integer >= %lld", f->name,
                                  i, f->min);
        }
        return RW_OK;
    }
    return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG, "%s: unknown type",
                      f->name);
}

rw_err_t rw_api_check_body(const json_t *body, const rw_api_field_t *fields,
                           size_t n, const char **field, char *errstr,
                           size_t errlen)
{
    const char *key;
    const json_t *v;
    rw_err_t err = RW_OK;

    *field = NULL;
    if (!body) {
        for (size_t i = 0; i < n; i++)
            if (fields[i].required) {
                *field = fields[i].name;
                return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                                  "%s is required", fields[i].name);
            }
        return RW_OK;
    }
    if (!json_is_object(body))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "the body must be a JSON object");
    json_object_foreach((json_t *)body, key, v)
    {
        const rw_api_field_t *f = field_of(fields, n, key);
        if (!f) {
            *field = key;
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "unknown field %s", key);
        }
        err = check_value(f, v, errstr, errlen);
        if (err) {
            *field = f->name;
            return err;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (fields[i].required && !json_object_get(body, fields[i].name)) {
            *field = fields[i].name;
            return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                              "%s is required", fields[i].name);
        }
    return RW_OK;
}
