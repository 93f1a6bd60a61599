/*
 * fuzz_codec: libFuzzer target for the v1 message codec (rw_codec.h).
 *
 * Every input goes through rw_codec_peek, rw_codec_batch_decode and
 * rw_codec_poll_decode, and through rw_codec_parse_time as a plain string.
 * Whatever decodes must satisfy the documented field limits, re-encode,
 * decode again to an equal message and re-encode to the very same bytes;
 * peek must agree with every decode. A refused input must name its reason
 * in errstr with one of the documented error codes. A broken property
 * aborts, which libFuzzer reports as a crash and saves the input.
 *
 * It does not feed the encoders arbitrary structs (only what the decoders
 * produced) and does not touch Kafka: it maps bytes to structs and back.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_codec.h"
#include "rw_log.h"

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond))                                                           \
            check_failed(__LINE__, #cond, NULL);                               \
    } while (0)

/* Same, quoting the codec's own error text, which says what it refused. */
#define CHECK_MSG(cond, msg)                                                   \
    do {                                                                       \
        if (!(cond))                                                           \
            check_failed(__LINE__, #cond, (msg));                              \
    } while (0)

static void check_failed(int line, const char *cond, const char *msg)
{
    fprintf(stderr, "fuzz_codec.c:%d: property broken: %s%s%s\n", line, cond,
            msg ? ": " : "", msg ? msg : "");
    abort();
}

/* Bytes that no error path writes: a refusal must overwrite them. */
static void poison(char *errstr, size_t len)
{
    memset(errstr, 'x', len);
}

/* A refusal names its reason: non-empty and NUL-terminated in the buffer. */
static void check_errstr(const char *errstr, size_t len)
{
    CHECK(memchr(errstr, '\0', len) != NULL);
    CHECK(errstr[0] != '\0');
}

static bool decode_err_documented(rw_err_t err)
{
    return err == RW_ERR_CODEC_TOO_LARGE || err == RW_ERR_CODEC_JSON ||
           err == RW_ERR_CODEC_VERSION || err == RW_ERR_CODEC_FIELD ||
           err == RW_ERR_NOMEM;
}

static bool str_in(const char *s, size_t minlen, size_t maxlen)
{
    size_t n;

    if (!s)
        return false;
    n = strlen(s);
    return n >= minlen && n <= maxlen;
}

static bool same(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* ---- batch -------------------------------------------------------------- */

static void check_batch_valid(const rw_batch_msg_t *m)
{
    char key[RW_CODEC_KEY_MAX];

    CHECK(rw_codec_is_uuid(m->run));
    CHECK(m->chunk >= 0);
    CHECK(m->attempt >= 1);
    CHECK(m->store_app_id >= 0);
    CHECK(m->n_build_vars <= RW_CODEC_MAX_BUILD_VARS);
    CHECK(m->n_build_vars == 0 || m->build_vars != NULL);
    for (size_t i = 0; i < m->n_build_vars; i++) {
        CHECK(str_in(m->build_vars[i].name, 1, RW_CODEC_MAX_NAME_BYTES));
        CHECK(m->build_vars[i].value != NULL);
        for (size_t j = 0; j < i; j++)
            CHECK(!same(m->build_vars[i].name, m->build_vars[j].name));
    }
    CHECK(m->n_targets >= 1 && m->n_targets <= RW_CODEC_MAX_TARGETS);
    CHECK(m->targets != NULL);
    for (size_t i = 0; i < m->n_targets; i++) {
        const rw_codec_target_t *t = &m->targets[i];

        CHECK(t->instance_id > 0);
        CHECK(str_in(t->project, 1, RW_CODEC_MAX_NAME_BYTES));
        CHECK(str_in(t->environment, 1, RW_CODEC_MAX_NAME_BYTES));
        for (size_t j = 0; j < i; j++)
            CHECK(m->targets[j].instance_id != t->instance_id);
    }
    /* Every decoded message must be addressable by its Kafka key. */
    CHECK(rw_codec_key(key, sizeof(key), m->run, m->chunk) == RW_OK);
}

static void check_batch_equal(const rw_batch_msg_t *a, const rw_batch_msg_t *b)
{
    CHECK(same(a->run, b->run));
    CHECK(a->chunk == b->chunk);
    CHECK(a->attempt == b->attempt);
    CHECK(a->store_app_id == b->store_app_id);
    CHECK(a->variables_only == b->variables_only);
    CHECK(a->n_build_vars == b->n_build_vars);
    for (size_t i = 0; i < a->n_build_vars; i++) {
        CHECK(same(a->build_vars[i].name, b->build_vars[i].name));
        CHECK(same(a->build_vars[i].value, b->build_vars[i].value));
    }
    CHECK(a->n_targets == b->n_targets);
    for (size_t i = 0; i < a->n_targets; i++) {
        CHECK(a->targets[i].instance_id == b->targets[i].instance_id);
        CHECK(same(a->targets[i].project, b->targets[i].project));
        CHECK(same(a->targets[i].environment, b->targets[i].environment));
    }
}

/* Peek of an encoding must find v1 of the given type. */
static void check_peek_says(const char *json, const char *type)
{
    char errstr[256];
    char got[16];
    int v = 0;
    rw_err_t err;

    err = rw_codec_peek(json, strlen(json), &v, got, sizeof(got), errstr,
                        sizeof(errstr));
    CHECK_MSG(err == RW_OK, errstr);
    CHECK(v == RW_CODEC_VERSION);
    CHECK(strcmp(got, type) == 0);
}

static void batch_round_trip(const rw_batch_msg_t *m)
{
    rw_batch_msg_t again;
    char errstr[256];
    char *json1 = NULL, *json2 = NULL;
    rw_err_t err;

    memset(&again, 0, sizeof(again));
    err = rw_codec_batch_encode(m, &json1, errstr, sizeof(errstr));
    CHECK_MSG(err == RW_OK, errstr);
    CHECK(json1 != NULL);
    check_peek_says(json1, RW_CODEC_TYPE_BATCH);
    err = rw_codec_batch_decode(json1, strlen(json1), &again, errstr,
                                sizeof(errstr));
    CHECK_MSG(err == RW_OK, errstr);
    check_batch_equal(m, &again);
    /* The encoding is canonical: encode(decode(encode(m))) == encode(m). */
    err = rw_codec_batch_encode(&again, &json2, errstr, sizeof(errstr));
    CHECK_MSG(err == RW_OK, errstr);
    CHECK(strcmp(json1, json2) == 0);
    rw_codec_batch_free(&again);
    free(json1);
    free(json2);
}

/* ---- poll --------------------------------------------------------------- */

static void check_poll_valid(const rw_poll_msg_t *m)
{
    char key[RW_CODEC_KEY_MAX];

    CHECK(rw_codec_is_uuid(m->run));
    CHECK(m->chunk >= 0);
    CHECK(m->attempt >= 1);
    CHECK(str_in(m->bulk_id, 1, RW_CODEC_MAX_BULK_ID_BYTES));
    CHECK(rw_codec_key(key, sizeof(key), m->run, m->chunk) == RW_OK);
}

static void poll_round_trip(const rw_poll_msg_t *m)
{
    rw_poll_msg_t again;
    char errstr[256];
    char *json1 = NULL, *json2 = NULL;
    rw_err_t err;

    memset(&again, 0, sizeof(again));
    err = rw_codec_poll_encode(m, &json1, errstr, sizeof(errstr));
    CHECK_MSG(err == RW_OK, errstr);
    CHECK(json1 != NULL);
    check_peek_says(json1, RW_CODEC_TYPE_POLL);
    err = rw_codec_poll_decode(json1, strlen(json1), &again, errstr,
                               sizeof(errstr));
    CHECK_MSG(err == RW_OK, errstr);
    CHECK(same(m->run, again.run));
    CHECK(m->chunk == again.chunk);
    CHECK(same(m->bulk_id, again.bulk_id));
    CHECK(m->attempt == again.attempt);
    CHECK(m->due_at_ms == again.due_at_ms);
    err = rw_codec_poll_encode(&again, &json2, errstr, sizeof(errstr));
    CHECK_MSG(err == RW_OK, errstr);
    CHECK(strcmp(json1, json2) == 0);
    rw_codec_poll_free(&again);
    free(json1);
    free(json2);
}

/* ---- time --------------------------------------------------------------- */

/*
 * The input as a C string: whatever parse_time accepts must format and
 * parse back to the same millisecond when the year can be spelled.
 */
static void time_round_trip(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    char buf[32];
    long long ms = 0, again = 0;

    CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    if (rw_codec_parse_time(s, &ms) &&
        rw_codec_format_time(buf, sizeof(buf), ms) == RW_OK) {
        CHECK(rw_codec_parse_time(buf, &again));
        CHECK(again == ms);
    }
    free(s);
}

/* ---- entry points ------------------------------------------------------- */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* The codec does not log; keep anything linked in quiet as well. */
    rw_log_set_level(RW_LOG_OFF);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rw_batch_msg_t batch;
    rw_poll_msg_t poll;
    char errstr[256];
    char type[64];
    char short_type[4];
    int v = -1, v2 = -1;
    rw_err_t peek_err, batch_err, poll_err, quiet_err;

    poison(errstr, sizeof(errstr));
    peek_err = rw_codec_peek(data, size, &v, type, sizeof(type), errstr,
                             sizeof(errstr));
    if (peek_err) {
        check_errstr(errstr, sizeof(errstr));
        CHECK(peek_err == RW_ERR_CODEC_TOO_LARGE ||
              peek_err == RW_ERR_CODEC_JSON || peek_err == RW_ERR_CODEC_FIELD);
    } else {
        /* A short type buffer truncates, it never overflows. */
        CHECK(rw_codec_peek(data, size, &v2, short_type, sizeof(short_type),
                            NULL, 0) == RW_OK);
        CHECK(v2 == v);
        CHECK(strlen(short_type) < sizeof(short_type));
        CHECK(strncmp(short_type, type, strlen(short_type)) == 0);
    }

    poison(errstr, sizeof(errstr));
    batch_err =
        rw_codec_batch_decode(data, size, &batch, errstr, sizeof(errstr));
    /* No errstr at all must give the same verdict. */
    {
        rw_batch_msg_t quiet;
        quiet_err = rw_codec_batch_decode(data, size, &quiet, NULL, 0);
        CHECK(quiet_err == batch_err);
        rw_codec_batch_free(&quiet);
    }
    if (batch_err) {
        check_errstr(errstr, sizeof(errstr));
        CHECK_MSG(decode_err_documented(batch_err), errstr);
        /* Refused messages leave nothing behind to free. */
        CHECK(batch.run == NULL && batch.targets == NULL &&
              batch.build_vars == NULL);
        /* peek and decode share the parser: a payload peek cannot read
         * cannot decode, for the same reason. */
        if (peek_err == RW_ERR_CODEC_TOO_LARGE || peek_err == RW_ERR_CODEC_JSON)
            CHECK(batch_err == peek_err);
    } else {
        CHECK(peek_err == RW_OK);
        CHECK(v == RW_CODEC_VERSION);
        CHECK(strcmp(type, RW_CODEC_TYPE_BATCH) == 0);
        check_batch_valid(&batch);
        batch_round_trip(&batch);
    }
    rw_codec_batch_free(&batch);

    poison(errstr, sizeof(errstr));
    poll_err = rw_codec_poll_decode(data, size, &poll, errstr, sizeof(errstr));
    if (poll_err) {
        check_errstr(errstr, sizeof(errstr));
        CHECK_MSG(decode_err_documented(poll_err), errstr);
        CHECK(poll.run == NULL && poll.bulk_id == NULL);
        if (peek_err == RW_ERR_CODEC_TOO_LARGE || peek_err == RW_ERR_CODEC_JSON)
            CHECK(poll_err == peek_err);
    } else {
        CHECK(peek_err == RW_OK);
        CHECK(v == RW_CODEC_VERSION);
        CHECK(strcmp(type, RW_CODEC_TYPE_POLL) == 0);
        check_poll_valid(&poll);
        poll_round_trip(&poll);
    }
    rw_codec_poll_free(&poll);

    /* One payload is never both kinds of message. */
    CHECK(batch_err != RW_OK || poll_err != RW_OK);

    time_round_trip(data, size);
    return 0;
}
