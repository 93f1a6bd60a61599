/*
 * test_codec: v1 batch and poll messages round-trip, every validation rule
 * rejects with the right code and names the field, and no input (prefixes,
 * mutations, oversize payloads) crashes the decoder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "rw_codec.h"

#define RUN "0b6f3c4e-8a1d-4f2b-9c3e-5d7a8b9c0d1e"

static const char batch_example[] =
    "{\"v\":1,\"type\":\"batch\",\"run\":\"" RUN "\",\"chunk\":0,"
    "\"attempt\":1,\"store_app_id\":12,\"variables_only\":false,"
    "\"build_variables\":[{\"name\":\"X\",\"value\":\"y\"}],"
    "\"targets\":[{\"instance_id\":123,\"project\":\"p\","
    "\"environment\":\"main\"},"
    "{\"instance_id\":124,\"project\":\"q\",\"environment\":\"main\"},"
    "{\"instance_id\":125,\"project\":\"r\",\"environment\":\"dev\"},"
    "{\"instance_id\":126,\"project\":\"s\",\"environment\":\"main\"}]}";

static const char poll_example[] =
    "{\"v\":1,\"type\":\"poll\",\"run\":\"" RUN "\",\"chunk\":4,"
    "\"bulk_id\":\"5c1e2f7a-bulk\",\"attempt\":3,"
    "\"due_at\":\"2026-11-22T16:30:54.123Z\"}";

/* Independent reference for epoch milliseconds: glibc's timegm. */
static long long ref_ms(int y, int mo, int d, int h, int mi, int s, int ms)
{
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (long long)timegm(&tm) * 1000 + ms;
}

/* ---- round trips ------------------------------------------------------- */

static void test_batch_example_decodes(void **state)
{
    rw_batch_msg_t m;
    char errstr[256] = "";
    (void)state;

    assert_int_equal(rw_codec_batch_decode(batch_example, strlen(batch_example),
                                           &m, errstr, sizeof(errstr)),
                     RW_OK);
    assert_string_equal(m.run, RUN);
    assert_int_equal(m.chunk, 0);
    assert_int_equal(m.attempt, 1);
    assert_int_equal(m.store_app_id, 12);
    assert_false(m.variables_only);
    assert_int_equal(m.n_build_vars, 1);
    assert_string_equal(m.build_vars[0].name, "X");
    assert_string_equal(m.build_vars[0].value, "y");
    assert_int_equal(m.n_targets, 4);
    assert_int_equal(m.targets[0].instance_id, 123);
    assert_string_equal(m.targets[0].project, "p");
    assert_string_equal(m.targets[0].environment, "main");
    assert_int_equal(m.targets[3].instance_id, 126);
    assert_string_equal(m.targets[2].environment, "dev");
    rw_codec_batch_free(&m);
    assert_null(m.targets);
    rw_codec_batch_free(&m); /* twice is harmless: free zeroes */
    rw_codec_batch_free(NULL);
}

static void test_batch_round_trip_unicode(void **state)
{
    rw_codec_build_var_t vars[] = {
        {"LAGOON_VARIABLES_ONLY", "true"},
        {"GREETING", "h\xc3\xa9llo \xf0\x9f\x9a\x80 \"quoted\"\nline2"},
        {"EMPTY", ""},
    };
    rw_codec_target_t targets[] = {
        {9007199254740993LL, "caf\xc3\xa9-\xc3\xb1", "main"},
        {2, "p2", "feature/\xe6\x97\xa5\xe6\x9c\xac"},
    };
    rw_batch_msg_t in = {
        .run = RUN,
        .chunk = 7,
        .attempt = 2,
        .store_app_id = 42,
        .variables_only = true,
        .build_vars = vars,
        .n_build_vars = 3,
        .targets = targets,
        .n_targets = 2,
    };
    rw_batch_msg_t out;
    char *json = NULL;
    char errstr[256] = "";
    (void)state;

    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_OK);
    assert_non_null(strstr(json, "\"v\":1"));
    assert_non_null(strstr(json, "\"type\":\"batch\""));
    assert_non_null(strstr(json, "\"store_app_id\":42"));
    /* UTF-8 is written as UTF-8, not as \u escapes. */
    assert_non_null(strstr(json, "caf\xc3\xa9-\xc3\xb1"));
    assert_int_equal(
        rw_codec_batch_decode(json, strlen(json), &out, errstr, sizeof(errstr)),
        RW_OK);
    assert_string_equal(out.run, RUN);
    assert_int_equal(out.chunk, 7);
    assert_int_equal(out.attempt, 2);
    assert_int_equal(out.store_app_id, 42);
    assert_true(out.variables_only);
    assert_int_equal(out.n_build_vars, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(out.build_vars[i].name, vars[i].name);
        assert_string_equal(out.build_vars[i].value, vars[i].value);
    }
    assert_int_equal(out.n_targets, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_true(out.targets[i].instance_id == targets[i].instance_id);
        assert_string_equal(out.targets[i].project, targets[i].project);
        assert_string_equal(out.targets[i].environment, targets[i].environment);
    }
    rw_codec_batch_free(&out);
    free(json);
}

static void test_batch_null_store_app_and_defaults(void **state)
{
    rw_codec_target_t t = {5, "p", "main"};
    rw_batch_msg_t in = {.run = RUN,
                         .chunk = 0,
                         .attempt = 1,
                         .store_app_id = 0,
                         .targets = &t,
                         .n_targets = 1};
    rw_batch_msg_t out;
    char *json = NULL;
    char errstr[256] = "";
    /* Optional members absent: defaults apply. */
    const char minimal[] = "{\"v\":1,\"type\":\"batch\",\"run\":\"" RUN
                           "\",\"chunk\":3,\"attempt\":1,\"targets\":"
                           "[{\"instance_id\":1,\"project\":\"p\","
                           "\"environment\":\"e\"}]}";
    (void)state;

    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_OK);
    assert_non_null(strstr(json, "\"store_app_id\":null"));
    assert_non_null(strstr(json, "\"build_variables\":[]"));
    assert_non_null(strstr(json, "\"variables_only\":false"));
    assert_int_equal(
        rw_codec_batch_decode(json, strlen(json), &out, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(out.store_app_id, 0);
    assert_int_equal(out.n_build_vars, 0);
    assert_null(out.build_vars);
    assert_false(out.variables_only);
    rw_codec_batch_free(&out);
    free(json);

    assert_int_equal(rw_codec_batch_decode(minimal, strlen(minimal), &out,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(out.chunk, 3);
    assert_int_equal(out.store_app_id, 0);
    assert_false(out.variables_only);
    assert_int_equal(out.n_build_vars, 0);
    rw_codec_batch_free(&out);
}

static void test_unknown_fields_ignored(void **state)
{
    json_t *root = json_loads(batch_example, 0, NULL);
    rw_batch_msg_t out;
    char errstr[256] = "";
    char *json = NULL;
    (void)state;

    assert_non_null(root);
    json_object_set_new(root, "future_field",
                        json_pack("{s:[i,i]}", "x", 1, 2));
    json_object_set_new(json_array_get(json_object_get(root, "targets"), 0),
                        "extra", json_string("ignored"));
    json = json_dumps(root, JSON_COMPACT);
    assert_int_equal(
        rw_codec_batch_decode(json, strlen(json), &out, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(out.n_targets, 4);
    rw_codec_batch_free(&out);
    free(json);
    json_decref(root);
}

static void test_poll_example_and_round_trip(void **state)
{
    rw_poll_msg_t m;
    rw_poll_msg_t back;
    char *json = NULL;
    char errstr[256] = "";
    (void)state;

    assert_int_equal(rw_codec_poll_decode(poll_example, strlen(poll_example),
                                          &m, errstr, sizeof(errstr)),
                     RW_OK);
    assert_string_equal(m.run, RUN);
    assert_int_equal(m.chunk, 4);
    assert_string_equal(m.bulk_id, "5c1e2f7a-bulk");
    assert_int_equal(m.attempt, 3);
    assert_true(m.due_at_ms == ref_ms(2026, 11, 22, 16, 30, 54, 123));

    assert_int_equal(rw_codec_poll_encode(&m, &json, errstr, sizeof(errstr)),
                     RW_OK);
    assert_non_null(strstr(json, "\"due_at\":\"2026-11-22T16:30:54.123Z\""));
    assert_non_null(strstr(json, "\"type\":\"poll\""));
    assert_int_equal(
        rw_codec_poll_decode(json, strlen(json), &back, errstr, sizeof(errstr)),
        RW_OK);
    assert_string_equal(back.run, m.run);
    assert_string_equal(back.bulk_id, m.bulk_id);
    assert_int_equal(back.chunk, m.chunk);
    assert_int_equal(back.attempt, m.attempt);
    assert_true(back.due_at_ms == m.due_at_ms);
    rw_codec_poll_free(&back);
    rw_codec_poll_free(&m);
    rw_codec_poll_free(NULL);
    free(json);
}

/* ---- invalid fields ---------------------------------------------------- */

typedef struct bad_case {
    const char *path; /* "/"-separated: object keys or array indexes */
    const char *raw;  /* JSON text of the new value; NULL deletes */
    rw_err_t code;
    const char *prefix; /* errstr must start with this */
} bad_case_t;

/* Set (or delete) the value at path inside root. */
static void set_path(json_t *root, const char *path, const char *raw)
{
    char buf[128];
    char *save = NULL;
    json_t *node = root;
    char *tok = NULL;
    char *next = NULL;

    snprintf(buf, sizeof(buf), "%s", path);
    tok = strtok_r(buf, "/", &save);
    while (tok) {
        next = strtok_r(NULL, "/", &save);
        if (!next)
            break;
        node = json_is_array(node)
                   ? json_array_get(node, strtoul(tok, NULL, 10))
                   : json_object_get(node, tok);
        assert_non_null(node);
        tok = next;
    }
    if (!raw) {
        assert_int_equal(json_object_del(node, tok), 0);
        return;
    }
    json_t *v = json_loads(raw, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    assert_non_null(v);
    if (json_is_array(node))
        assert_int_equal(json_array_set_new(node, strtoul(tok, NULL, 10), v),
                         0);
    else
        assert_int_equal(json_object_set_new(node, tok, v), 0);
}

static void check_batch_case(const bad_case_t *c)
{
    json_t *root = json_loads(batch_example, 0, NULL);
    char errstr[256] = "";
    rw_batch_msg_t out;
    char *json = NULL;

    assert_non_null(root);
    set_path(root, c->path, c->raw);
    json = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(json);
    rw_err_t err =
        rw_codec_batch_decode(json, strlen(json), &out, errstr, sizeof(errstr));
    if (err != c->code || strncmp(errstr, c->prefix, strlen(c->prefix)) != 0)
        fail_msg("%s=%s: got %s \"%s\", want %s \"%s...\"", c->path,
                 c->raw ? c->raw : "(deleted)", rw_err_name(err), errstr,
                 rw_err_name(c->code), c->prefix);
    /* A failed decode leaves nothing allocated. */
    assert_null(out.run);
    assert_null(out.targets);
    assert_null(out.build_vars);
    free(json);
    json_decref(root);
}

static void test_batch_invalid_fields(void **state)
{
    static const bad_case_t cases[] = {
        {"v", NULL, RW_ERR_CODEC_FIELD, "v: missing"},
        {"v", "2", RW_ERR_CODEC_VERSION, "v: unsupported version 2"},
        {"v", "0", RW_ERR_CODEC_VERSION, "v: unsupported version 0"},
        {"v", "\"1\"", RW_ERR_CODEC_FIELD, "v: expected integer"},
        {"v", "1.0", RW_ERR_CODEC_FIELD, "v: expected integer"},
        {"type", NULL, RW_ERR_CODEC_FIELD, "type: missing"},
        {"type", "\"poll\"", RW_ERR_CODEC_FIELD, "type: expected \"batch\""},
        {"type", "\"Batch\"", RW_ERR_CODEC_FIELD, "type:"},
        {"type", "7", RW_ERR_CODEC_FIELD, "type:"},
        {"run", NULL, RW_ERR_CODEC_FIELD, "run: missing"},
        {"run", "\"0B6F3C4E-8A1D-4F2B-9C3E-5D7A8B9C0D1E\"", RW_ERR_CODEC_FIELD,
         "run: not a uuid"},
        {"run", "\"0b6f3c4e8a1d4f2b9c3e5d7a8b9c0d1e\"", RW_ERR_CODEC_FIELD,
         "run: not a uuid"},
        {"run", "\"{0b6f3c4e-8a1d-4f2b-9c3e-5d7a8b9c0d1e}\"",
         RW_ERR_CODEC_FIELD, "run: not a uuid"},
        {"run", "\"0b6f3c4e-8a1d-4f2b-9c3e-5d7a8b9c0d1g\"", RW_ERR_CODEC_FIELD,
         "run: not a uuid"},
        {"run", "\"\"", RW_ERR_CODEC_FIELD, "run: not a uuid"},
        {"run", "42", RW_ERR_CODEC_FIELD, "run: expected string"},
        {"chunk", NULL, RW_ERR_CODEC_FIELD, "chunk: missing"},
        {"chunk", "-1", RW_ERR_CODEC_FIELD, "chunk: expected non-negative"},
        {"chunk", "1.5", RW_ERR_CODEC_FIELD, "chunk: expected non-negative"},
        {"chunk", "\"0\"", RW_ERR_CODEC_FIELD, "chunk:"},
        {"chunk", "null", RW_ERR_CODEC_FIELD, "chunk:"},
        {"chunk", "4294967296", RW_ERR_CODEC_FIELD, "chunk:"},
        {"attempt", "0", RW_ERR_CODEC_FIELD, "attempt: expected positive"},
        {"attempt", NULL, RW_ERR_CODEC_FIELD, "attempt: missing"},
        {"store_app_id", "0", RW_ERR_CODEC_FIELD, "store_app_id:"},
        {"store_app_id", "-3", RW_ERR_CODEC_FIELD, "store_app_id:"},
        {"store_app_id", "\"12\"", RW_ERR_CODEC_FIELD, "store_app_id:"},
        {"variables_only", "\"false\"", RW_ERR_CODEC_FIELD,
         "variables_only: expected boolean"},
        {"variables_only", "0", RW_ERR_CODEC_FIELD, "variables_only:"},
        {"targets", NULL, RW_ERR_CODEC_FIELD, "targets: missing"},
        {"targets", "[]", RW_ERR_CODEC_FIELD, "targets: empty"},
        {"targets", "{}", RW_ERR_CODEC_FIELD, "targets: expected array"},
        {"targets", "null", RW_ERR_CODEC_FIELD, "targets: expected array"},
        {"targets/1", "17", RW_ERR_CODEC_FIELD, "targets[1]: expected object"},
        {"targets/3/instance_id", "0", RW_ERR_CODEC_FIELD,
         "targets[3].instance_id: expected positive integer"},
        {"targets/3/instance_id", "-5", RW_ERR_CODEC_FIELD,
         "targets[3].instance_id: expected positive integer"},
        {"targets/3/instance_id", "\"126\"", RW_ERR_CODEC_FIELD,
         "targets[3].instance_id: expected positive integer"},
        {"targets/3/instance_id", "126.0", RW_ERR_CODEC_FIELD,
         "targets[3].instance_id: expected positive integer"},
        {"targets/3/instance_id", NULL, RW_ERR_CODEC_FIELD,
         "targets[3].instance_id: missing"},
        {"targets/2/instance_id", "123", RW_ERR_CODEC_FIELD,
         "targets[2].instance_id: duplicate"},
        {"targets/1/project", "\"p\"", RW_ERR_CODEC_FIELD,
         "targets[1].environment: duplicate"},
        {"targets/0/project", "\"\"", RW_ERR_CODEC_FIELD,
         "targets[0].project: empty"},
        {"targets/0/project", NULL, RW_ERR_CODEC_FIELD,
         "targets[0].project: missing"},
        {"targets/0/project", "[\"p\"]", RW_ERR_CODEC_FIELD,
         "targets[0].project: expected string"},
        {"targets/0/project", "\"a\\nb\"", RW_ERR_CODEC_FIELD,
         "targets[0].project: contains control characters"},
        {"targets/0/project", "\"a\\u007fb\"", RW_ERR_CODEC_FIELD,
         "targets[0].project: contains control characters"},
        {"targets/2/environment", "\"\\u0085main\"", RW_ERR_CODEC_FIELD,
         "targets[2].environment: contains control characters"},
        {"targets/2/environment", "\"ma\\u0000in\"", RW_ERR_CODEC_JSON,
         "invalid json"},
        {"targets/2/environment", "\"\"", RW_ERR_CODEC_FIELD,
         "targets[2].environment: empty"},
        {"targets/2/environment", NULL, RW_ERR_CODEC_FIELD,
         "targets[2].environment: missing"},
        {"build_variables", "{}", RW_ERR_CODEC_FIELD,
         "build_variables: expected array"},
        {"build_variables/0", "\"X=y\"", RW_ERR_CODEC_FIELD,
         "build_variables[0]: expected object"},
        {"build_variables/0/name", "\"\"", RW_ERR_CODEC_FIELD,
         "build_variables[0].name: empty"},
        {"build_variables/0/name", NULL, RW_ERR_CODEC_FIELD,
         "build_variables[0].name: missing"},
        {"build_variables/0/value", NULL, RW_ERR_CODEC_FIELD,
         "build_variables[0].value: missing"},
        {"build_variables/0/value", "1", RW_ERR_CODEC_FIELD,
         "build_variables[0].value: expected string"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_batch_case(&cases[i]);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);

    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_batch_length_limits(void **state)
{
    char *s255 = repeat('a', 255);
    char *s256 = repeat('a', 256);
    char raw[300];
    bad_case_t c = {"targets/0/project", raw, RW_ERR_CODEC_FIELD,
                    "targets[0].project: expected 1..255 bytes, got 256"};
    json_t *root = json_loads(batch_example, 0, NULL);
    rw_batch_msg_t out;
    char errstr[256] = "";
    char *json = NULL;
    (void)state;

    snprintf(raw, sizeof(raw), "\"%s\"", s256);
    check_batch_case(&c);
    c.path = "targets/1/environment";
    c.prefix = "targets[1].environment: expected 1..255 bytes";
    check_batch_case(&c);
    c.path = "build_variables/0/name";
    c.prefix = "build_variables[0].name: expected 1..255 bytes";
    check_batch_case(&c);

    /* 255 bytes is still fine. */
    json_object_set_new(json_array_get(json_object_get(root, "targets"), 0),
                        "project", json_string(s255));
    json = json_dumps(root, JSON_COMPACT);
    assert_int_equal(
        rw_codec_batch_decode(json, strlen(json), &out, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(strlen(out.targets[0].project), 255);
    rw_codec_batch_free(&out);
    free(json);
    json_decref(root);
    free(s255);
    free(s256);
}

static void test_batch_target_count_limits(void **state)
{
    json_t *root = json_loads(batch_example, 0, NULL);
    json_t *targets = json_array();
    rw_batch_msg_t out;
    char errstr[256] = "";
    char *json = NULL;
    char env[32];
    (void)state;

    for (int i = 1; i <= RW_CODEC_MAX_TARGETS; i++) {
        snprintf(env, sizeof(env), "env-%d", i);
        json_array_append_new(targets,
                              json_pack("{s:i,s:s,s:s}", "instance_id", i,
                                        "project", "p", "environment", env));
    }
    json_object_set(root, "targets", targets);
    json = json_dumps(root, JSON_COMPACT);
    assert_int_equal(
        rw_codec_batch_decode(json, strlen(json), &out, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(out.n_targets, RW_CODEC_MAX_TARGETS);
    rw_codec_batch_free(&out);
    free(json);

    json_array_append_new(targets,
                          json_pack("{s:i,s:s,s:s}", "instance_id", 5000,
                                    "project", "p", "environment", "x"));
    json = json_dumps(root, JSON_COMPACT);
    assert_int_equal(
        rw_codec_batch_decode(json, strlen(json), &out, errstr, sizeof(errstr)),
        RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr, "targets: more than 1000 entries");
    free(json);
    json_decref(targets);
    json_decref(root);
}

static void check_poll_case(const bad_case_t *c)
{
    json_t *root = json_loads(poll_example, 0, NULL);
    char errstr[256] = "";
    rw_poll_msg_t out;
    char *json = NULL;

    assert_non_null(root);
    set_path(root, c->path, c->raw);
    json = json_dumps(root, JSON_COMPACT);
    rw_err_t err =
        rw_codec_poll_decode(json, strlen(json), &out, errstr, sizeof(errstr));
    if (err != c->code || strncmp(errstr, c->prefix, strlen(c->prefix)) != 0)
        fail_msg("%s=%s: got %s \"%s\", want %s \"%s...\"", c->path,
                 c->raw ? c->raw : "(deleted)", rw_err_name(err), errstr,
                 rw_err_name(c->code), c->prefix);
    assert_null(out.run);
    assert_null(out.bulk_id);
    free(json);
    json_decref(root);
}

static void test_poll_invalid_fields(void **state)
{
    static const bad_case_t cases[] = {
        {"v", NULL, RW_ERR_CODEC_FIELD, "v: missing"},
        {"v", "2", RW_ERR_CODEC_VERSION, "v: unsupported version 2"},
        {"type", "\"batch\"", RW_ERR_CODEC_FIELD, "type: expected \"poll\""},
        {"run", "\"not-a-uuid\"", RW_ERR_CODEC_FIELD, "run: not a uuid"},
        {"chunk", "-2", RW_ERR_CODEC_FIELD, "chunk:"},
        {"chunk", "true", RW_ERR_CODEC_FIELD, "chunk:"},
        {"bulk_id", NULL, RW_ERR_CODEC_FIELD, "bulk_id: missing"},
        {"bulk_id", "\"\"", RW_ERR_CODEC_FIELD, "bulk_id: empty"},
        {"bulk_id", "12", RW_ERR_CODEC_FIELD, "bulk_id: expected string"},
        {"bulk_id", "\"a\\tb\"", RW_ERR_CODEC_FIELD,
         "bulk_id: contains control characters"},
        {"attempt", "0", RW_ERR_CODEC_FIELD, "attempt: expected positive"},
        {"attempt", "-1", RW_ERR_CODEC_FIELD, "attempt:"},
        {"attempt", NULL, RW_ERR_CODEC_FIELD, "attempt: missing"},
        {"due_at", NULL, RW_ERR_CODEC_FIELD, "due_at: missing"},
        {"due_at", "1763829054123", RW_ERR_CODEC_FIELD, "due_at:"},
        {"due_at", "\"tomorrow\"", RW_ERR_CODEC_FIELD, "due_at:"},
        {"due_at", "\"2026-11-22 16:30:54Z\"", RW_ERR_CODEC_FIELD, "due_at:"},
        {"due_at", "\"2026-11-22T16:30:54\"", RW_ERR_CODEC_FIELD, "due_at:"},
        {"due_at", "\"2026-13-01T00:00:00Z\"", RW_ERR_CODEC_FIELD, "due_at:"},
        {"due_at", "\"2026-02-29T00:00:00Z\"", RW_ERR_CODEC_FIELD, "due_at:"},
        {"due_at", "\"2026-11-22T24:00:00Z\"", RW_ERR_CODEC_FIELD, "due_at:"},
        {"due_at", "\"2026-11-22T16:30:54.Z\"", RW_ERR_CODEC_FIELD, "due_at:"},
        {"due_at", "\"2026-11-22T16:30:54.123Zjunk\"", RW_ERR_CODEC_FIELD,
         "due_at:"},
        {"due_at", "\"\"", RW_ERR_CODEC_FIELD, "due_at:"},
    };
    char raw[300];
    char *s201 = repeat('b', 201);
    char *s200 = repeat('b', 200);
    bad_case_t c = {"bulk_id", raw, RW_ERR_CODEC_FIELD,
                    "bulk_id: expected 1..200 bytes, got 201"};
    rw_poll_msg_t m;
    char errstr[256];
    char *json = NULL;
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_poll_case(&cases[i]);
    snprintf(raw, sizeof(raw), "\"%s\"", s201);
    check_poll_case(&c);

    /* Exactly 200 bytes encodes and decodes. */
    m = (rw_poll_msg_t){
        .run = RUN, .chunk = 0, .bulk_id = s200, .attempt = 1, .due_at_ms = 0};
    assert_int_equal(rw_codec_poll_encode(&m, &json, errstr, sizeof(errstr)),
                     RW_OK);
    assert_non_null(strstr(json, "\"due_at\":\"1970-01-01T00:00:00.000Z\""));
    free(json);
    free(s200);
    free(s201);
}

/* ---- malformed payloads ------------------------------------------------ */

static void expect_json_err(const char *buf, size_t len)
{
    rw_batch_msg_t b;
    rw_poll_msg_t p;
    char errstr[256] = "";

    assert_int_equal(
        rw_codec_batch_decode(buf, len, &b, errstr, sizeof(errstr)),
        RW_ERR_CODEC_JSON);
    assert_true(strncmp(errstr, "invalid json", 12) == 0);
    assert_int_equal(rw_codec_poll_decode(buf, len, &p, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_JSON);
}

static void test_invalid_json(void **state)
{
    static const char *const bad[] = {
        "",
        "not json",
        "[1,2,3]",
        "\"a string\"",
        "{\"v\":1,}",
        "{\"v\":1",
        "{\"v\":1,\"v\":1}",                   /* duplicate key */
        "{\"v\":1,\"type\":\"b\xff\xfe\"}",    /* invalid UTF-8 */
        "{\"v\":1,\"type\":\"\xc3\x28\"}",     /* bad continuation */
        "{\"v\":1,\"type\":\"\xed\xa0\x80\"}", /* UTF-16 surrogate */
        "{\"v\":1,\"type\":\"\\ud800\"}",      /* lone surrogate escape */
        "{\"v\":99999999999999999999999}",     /* integer overflow */
        "{\"v\":1} trailing",
    };
    char errstr[256] = "";
    rw_batch_msg_t b;
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_json_err(bad[i], strlen(bad[i]));
    /* A NUL byte inside the buffer is not JSON either. */
    expect_json_err("{\"v\":1}\0", 8);
    assert_int_equal(rw_codec_batch_decode("{\"v\":1,\n  x}", 12, &b, errstr,
                                           sizeof(errstr)),
                     RW_ERR_CODEC_JSON);
    assert_non_null(strstr(errstr, "invalid json at line 2 col"));
    assert_int_equal(rw_codec_batch_decode(NULL, 0, &b, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_JSON);
    assert_int_equal(rw_codec_batch_decode(NULL, 5, &b, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    /* A NULL errstr is allowed. */
    assert_int_equal(rw_codec_batch_decode("x", 1, &b, NULL, 0),
                     RW_ERR_CODEC_JSON);
}

/* A JSON object of exactly `size` bytes, padded by an unknown field. */
static char *padded_batch(size_t size)
{
    const char *head = "{\"pad\":\"";
    const char *tail = "\",";
    size_t fixed = strlen(head) + strlen(tail) + strlen(batch_example) - 1;
    char *buf = malloc(size);

    assert_true(size > fixed);
    assert_non_null(buf);
    memcpy(buf, head, strlen(head));
    memset(buf + strlen(head), 'x', size - fixed);
    memcpy(buf + strlen(head) + size - fixed, tail, strlen(tail));
    memcpy(buf + strlen(head) + size - fixed + strlen(tail), batch_example + 1,
           strlen(batch_example) - 1);
    return buf;
}

static void test_size_limit(void **state)
{
    char *at_limit = padded_batch(RW_CODEC_MAX_BYTES);
    char *over = padded_batch(RW_CODEC_MAX_BYTES + 1);
    rw_batch_msg_t b;
    rw_poll_msg_t p;
    char errstr[256] = "";
    int version = 0;
    char type[16];
    (void)state;

    /* Exactly 1 MiB is accepted (and the pad field ignored). */
    assert_int_equal(rw_codec_batch_decode(at_limit, RW_CODEC_MAX_BYTES, &b,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(b.n_targets, 4);
    rw_codec_batch_free(&b);

    assert_int_equal(rw_codec_batch_decode(over, RW_CODEC_MAX_BYTES + 1, &b,
                                           errstr, sizeof(errstr)),
                     RW_ERR_CODEC_TOO_LARGE);
    assert_non_null(strstr(errstr, "payload: 1048577 bytes"));
    assert_int_equal(rw_codec_poll_decode(over, RW_CODEC_MAX_BYTES + 1, &p,
                                          errstr, sizeof(errstr)),
                     RW_ERR_CODEC_TOO_LARGE);
    assert_int_equal(rw_codec_peek(over, RW_CODEC_MAX_BYTES + 1, &version, type,
                                   sizeof(type), errstr, sizeof(errstr)),
                     RW_ERR_CODEC_TOO_LARGE);
    /* Checked before parsing: garbage of that size is "too large" too. */
    memset(over, 0xff, RW_CODEC_MAX_BYTES + 1);
    assert_int_equal(rw_codec_batch_decode(over, RW_CODEC_MAX_BYTES + 1, &b,
                                           errstr, sizeof(errstr)),
                     RW_ERR_CODEC_TOO_LARGE);
    free(at_limit);
    free(over);
}

static void test_encode_too_large(void **state)
{
    rw_codec_build_var_t var = {"BIG", NULL};
    rw_codec_target_t t = {1, "p", "e"};
    rw_batch_msg_t in = {.run = RUN,
                         .attempt = 1,
                         .build_vars = &var,
                         .n_build_vars = 1,
                         .targets = &t,
                         .n_targets = 1};
    char *json = NULL;
    char errstr[256] = "";
    (void)state;

    var.value = repeat('v', RW_CODEC_MAX_BYTES);
    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_TOO_LARGE);
    assert_null(json);
    free(var.value);
}

/* Every strict prefix of a valid message is an error, never a crash. */
static void check_prefixes(const char *msg, bool batch)
{
    size_t n = strlen(msg);
    char errstr[256];

    for (size_t len = 0; len < n; len++) {
        /* Exact-size heap copy: an over-read is an ASan error. */
        char *copy = malloc(len ? len : 1);
        rw_err_t err;

        assert_non_null(copy);
        memcpy(copy, msg, len);
        if (batch) {
            rw_batch_msg_t b;
            err = rw_codec_batch_decode(copy, len, &b, errstr, sizeof(errstr));
            assert_null(b.targets);
        } else {
            rw_poll_msg_t p;
            err = rw_codec_poll_decode(copy, len, &p, errstr, sizeof(errstr));
            assert_null(p.run);
        }
        if (err != RW_ERR_CODEC_JSON)
            fail_msg("prefix of %zu bytes: got %s", len, rw_err_name(err));
        free(copy);
    }
}

static void test_every_prefix_fails(void **state)
{
    (void)state;
    check_prefixes(batch_example, true);
    check_prefixes(poll_example, false);
}

/*
 * Deterministic byte mutations of valid messages: the decoder must return
 * (OK or an error, never a crash or leak under the sanitizer build), and a
 * message it accepts must survive a re-encode.
 */
static void test_mutations_never_crash(void **state)
{
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    const char *msgs[] = {batch_example, poll_example};
    char errstr[256];
    size_t accepted = 0;
    (void)state;

    for (int i = 0; i < 20000; i++) {
        const char *msg = msgs[i % 2];
        size_t n = strlen(msg);
        char *copy = malloc(n);
        int edits = 1 + (int)(rng % 4);

        assert_non_null(copy);
        memcpy(copy, msg, n);
        for (int e = 0; e < edits; e++) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            copy[rng % n] = (char)(rng >> 56);
        }
        if (i % 2 == 0) {
            rw_batch_msg_t b;
            if (rw_codec_batch_decode(copy, n, &b, errstr, sizeof(errstr)) ==
                RW_OK) {
                char *json = NULL;
                accepted++;
                assert_int_equal(
                    rw_codec_batch_encode(&b, &json, errstr, sizeof(errstr)),
                    RW_OK);
                free(json);
            }
            rw_codec_batch_free(&b);
        } else {
            rw_poll_msg_t p;
            if (rw_codec_poll_decode(copy, n, &p, errstr, sizeof(errstr)) ==
                RW_OK) {
                char *json = NULL;
                accepted++;
                assert_int_equal(
                    rw_codec_poll_encode(&p, &json, errstr, sizeof(errstr)),
                    RW_OK);
                free(json);
            }
            rw_codec_poll_free(&p);
        }
        free(copy);
    }
    /* Some mutations only touch string contents and must still decode. */
    assert_true(accepted > 0);
}

/* ---- encode refuses what decode would refuse --------------------------- */

static void test_encode_validates(void **state)
{
    rw_codec_target_t t[2] = {{1, "p", "main"}, {2, "q", "main"}};
    rw_codec_build_var_t var = {"", "x"};
    rw_batch_msg_t in = {
        .run = RUN, .attempt = 1, .targets = t, .n_targets = 2};
    rw_poll_msg_t p = {.run = RUN, .chunk = 0, .bulk_id = "b", .attempt = 1};
    char *json = NULL;
    char errstr[256] = "";
    (void)state;

    in.run = "NOT-A-UUID";
    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr, "run: not a uuid");
    in.run = NULL;
    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr, "run: missing");
    in.run = RUN;

    in.n_targets = 0;
    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr, "targets: empty");
    in.n_targets = 2;

    t[1].project = NULL;
    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr, "targets[1].project: missing");
    t[1].project = "bad\xff";
    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr, "targets[1].project: not valid UTF-8");
    t[1].project = "q";

    t[1].instance_id = 0;
    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr,
                        "targets[1].instance_id: expected positive integer");
    t[1].instance_id = 2;

    in.chunk = -1;
    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_true(strncmp(errstr, "chunk:", 6) == 0);
    in.chunk = 0;
    in.store_app_id = -4;
    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_true(strncmp(errstr, "store_app_id:", 13) == 0);
    in.store_app_id = 0;

    in.build_vars = &var;
    in.n_build_vars = 1;
    assert_int_equal(rw_codec_batch_encode(&in, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr, "build_variables[0].name: empty");
    assert_null(json);

    p.attempt = 0;
    assert_int_equal(rw_codec_poll_encode(&p, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_true(strncmp(errstr, "attempt:", 8) == 0);
    p.attempt = 1;
    p.due_at_ms = 400000000000000LL; /* year ~14645 */
    assert_int_equal(rw_codec_poll_encode(&p, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr, "due_at: out of range");
    p.due_at_ms = 0;
    p.bulk_id = "";
    assert_int_equal(rw_codec_poll_encode(&p, &json, errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr, "bulk_id: empty");
    assert_null(json);
}

/* ---- peek, key, time --------------------------------------------------- */

static void test_peek(void **state)
{
    const char v2[] = "{\"v\":2,\"type\":\"batch\",\"whatever\":[]}";
    const char nov[] = "{\"type\":\"poll\"}";
    const char notype[] = "{\"v\":1,\"type\":null}";
    int version = -1;
    char type[4];
    char errstr[128] = "";
    (void)state;

    assert_int_equal(rw_codec_peek(poll_example, strlen(poll_example), &version,
                                   type, sizeof(type), errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(version, 1);
    assert_string_equal(type, "pol"); /* truncated to the buffer */
    assert_int_equal(rw_codec_peek(v2, strlen(v2), &version, NULL, 0, errstr,
                                   sizeof(errstr)),
                     RW_OK);
    assert_int_equal(version, 2);
    assert_int_equal(rw_codec_peek(nov, strlen(nov), &version, type,
                                   sizeof(type), errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr, "v: missing");
    assert_int_equal(rw_codec_peek(notype, strlen(notype), &version, type,
                                   sizeof(type), errstr, sizeof(errstr)),
                     RW_ERR_CODEC_FIELD);
    assert_string_equal(errstr, "type: expected string");
    assert_int_equal(rw_codec_peek("{", 1, &version, type, sizeof(type), errstr,
                                   sizeof(errstr)),
                     RW_ERR_CODEC_JSON);
}

static void test_key(void **state)
{
    char key[RW_CODEC_KEY_MAX];
    char small[10];
    (void)state;

    assert_int_equal(rw_codec_key(key, sizeof(key), RUN, 0), RW_OK);
    assert_string_equal(key, RUN ":0");
    assert_int_equal(rw_codec_key(key, sizeof(key), RUN, INT_MAX), RW_OK);
    assert_string_equal(key, RUN ":2147483647");
    assert_int_equal(rw_codec_key(small, sizeof(small), RUN, 1),
                     RW_ERR_INVALID_ARG);
    assert_string_equal(small, "");
    assert_int_equal(rw_codec_key(key, sizeof(key), RUN, -1),
                     RW_ERR_INVALID_ARG);
    assert_int_equal(rw_codec_key(key, sizeof(key), NULL, 1),
                     RW_ERR_INVALID_ARG);
}

static void test_uuid(void **state)
{
    (void)state;
    assert_true(rw_codec_is_uuid(RUN));
    assert_true(rw_codec_is_uuid("00000000-0000-0000-0000-000000000000"));
    assert_false(rw_codec_is_uuid("0b6f3c4e-8a1d-4f2b-9c3e-5d7a8b9c0d1"));
    assert_false(rw_codec_is_uuid(RUN "0"));
    assert_false(rw_codec_is_uuid("0b6f3c4e-8a1d-4f2b-9c3e-5d7a8b9c0D1e"));
    assert_false(rw_codec_is_uuid("0b6f3c4e_8a1d-4f2b-9c3e-5d7a8b9c0d1e"));
    assert_false(rw_codec_is_uuid(""));
    assert_false(rw_codec_is_uuid(NULL));
}

static void test_time(void **state)
{
    char buf[32];
    long long ms = 0;
    (void)state;

    assert_true(rw_codec_parse_time("1970-01-01T00:00:00Z", &ms));
    assert_true(ms == 0);
    assert_true(rw_codec_parse_time("2024-02-29T23:59:59.999Z", &ms));
    assert_true(ms == ref_ms(2024, 2, 29, 23, 59, 59, 999));
    assert_true(rw_codec_parse_time("2026-11-22t16:30:54.5z", &ms));
    assert_true(ms == ref_ms(2026, 11, 22, 16, 30, 54, 500));
    assert_true(
        rw_codec_parse_time("2026-11-22T18:30:54.123456789+02:00", &ms));
    assert_true(ms == ref_ms(2026, 11, 22, 16, 30, 54, 123));
    assert_true(rw_codec_parse_time("2026-11-22T11:00:00-05:30", &ms));
    assert_true(ms == ref_ms(2026, 11, 22, 16, 30, 0, 0));
    assert_true(rw_codec_parse_time("1969-12-31T23:59:59.999Z", &ms));
    assert_true(ms == -1);
    assert_true(rw_codec_parse_time("2000-02-29T00:00:00Z", &ms));
    assert_false(rw_codec_parse_time("1900-02-29T00:00:00Z", &ms));
    assert_false(rw_codec_parse_time("2026-11-22T16:30:54.1234567890Z", &ms));
    assert_false(rw_codec_parse_time("2026-11-22T16:30:54+2:00", &ms));
    assert_false(rw_codec_parse_time("2026-11-22T16:60:00Z", &ms));
    assert_false(rw_codec_parse_time("2026-11-00T16:00:00Z", &ms));
    assert_false(rw_codec_parse_time("2026-1", &ms));
    assert_false(rw_codec_parse_time(NULL, &ms));

    assert_int_equal(rw_codec_format_time(buf, sizeof(buf), -1), RW_OK);
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
    assert_int_equal(
        rw_codec_format_time(buf, sizeof(buf), ref_ms(2024, 2, 29, 1, 2, 3, 4)),
        RW_OK);
    assert_string_equal(buf, "2024-02-29T01:02:03.004Z");
    assert_int_equal(rw_codec_format_time(buf, 10, 0), RW_ERR_INVALID_ARG);
    /* Round trip over 300 years in irregular steps. */
    for (long long t = ref_ms(1900, 1, 1, 0, 0, 0, 0);
         t < ref_ms(2200, 1, 1, 0, 0, 0, 0); t += 7777777777LL) {
        assert_int_equal(rw_codec_format_time(buf, sizeof(buf), t), RW_OK);
        assert_true(rw_codec_parse_time(buf, &ms));
        assert_true(ms == t);
    }
}

/* Times an offset or leap second carries outside 0000-9999 UTC are refused
 * on decode, so that decode never accepts what encode cannot write. */
static void test_time_outside_spellable_years(void **state)
{
    static const char *const bad[] = {
        "0000-01-01T00:00:00+00:01",
        "9999-12-31T23:59:59-00:01",
        "9999-12-31T23:59:60.9z",
    };
    long long ms;
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(rw_codec_parse_time(bad[i], &ms));
    assert_true(rw_codec_parse_time("9999-12-31T23:59:59Z", &ms));
    assert_true(rw_codec_parse_time("0000-01-01T00:01:00+00:01", &ms));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_outside_spellable_years),
        cmocka_unit_test(test_batch_example_decodes),
        cmocka_unit_test(test_batch_round_trip_unicode),
        cmocka_unit_test(test_batch_null_store_app_and_defaults),
        cmocka_unit_test(test_unknown_fields_ignored),
        cmocka_unit_test(test_poll_example_and_round_trip),
        cmocka_unit_test(test_batch_invalid_fields),
        cmocka_unit_test(test_batch_length_limits),
        cmocka_unit_test(test_batch_target_count_limits),
        cmocka_unit_test(test_poll_invalid_fields),
        cmocka_unit_test(test_invalid_json),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_encode_too_large),
        cmocka_unit_test(test_every_prefix_fails),
        cmocka_unit_test(test_mutations_never_crash),
        cmocka_unit_test(test_encode_validates),
        cmocka_unit_test(test_peek),
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
