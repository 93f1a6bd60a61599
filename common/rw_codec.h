/*
 * rw_codec: the v1 wire messages of rollwave (batch and poll, described by
 * the JSON Schemas in schemas/messages/) encoded to and decoded from JSON.
 *
 * Decoding validates every field and names the offending one in errstr with
 * a JSON-path-like name ("targets[3].instance_id: expected positive
 * integer"), so the consumer can dead-letter the message with that reason.
 * Decoding never trusts the input: any byte string gives either a valid
 * message or an error. Encoding runs the same validation, so nothing is
 * produced that a consumer would reject.
 *
 * This module does not talk to Kafka, does not dead-letter anything and
 * knows nothing about Postgres state; it only maps bytes to structs.
 */
#ifndef RW_CODEC_H
#define RW_CODEC_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"

#define RW_CODEC_VERSION 1
/* Payloads above this are refused before parsing. */
#define RW_CODEC_MAX_BYTES         (1024 * 1024)
#define RW_CODEC_MAX_TARGETS       1000
#define RW_CODEC_MAX_NAME_BYTES    255 /* project, environment, var name */
#define RW_CODEC_MAX_BUILD_VARS    100
#define RW_CODEC_MAX_BULK_ID_BYTES 200
/* "<36-char uuid>:<int>" plus NUL. */
#define RW_CODEC_KEY_MAX 48

#define RW_CODEC_TYPE_BATCH "batch"
#define RW_CODEC_TYPE_POLL  "poll"

typedef struct rw_codec_target {
    long long instance_id; /* > 0 */
    char *project;         /* 1..255 bytes, no control characters */
    char *environment;     /* 1..255 bytes, no control characters */
} rw_codec_target_t;

typedef struct rw_codec_build_var {
    char *name;  /* 1..255 bytes, no control characters */
    char *value; /* any string, may be empty */
} rw_codec_build_var_t;

/*
 * One chunk of one run (topic rollwave.batches).
 *
 * After rw_codec_batch_decode every string is owned by the struct and
 * released by rw_codec_batch_free. For encoding the caller fills the struct
 * with pointers it keeps owning; encode never frees them.
 */
typedef struct rw_batch_msg {
    char *run;              /* canonical lower-case uuid */
    int chunk;              /* >= 0 */
    int attempt;            /* >= 1 */
    long long store_app_id; /* > 0, or 0 for a mixed run (JSON null) */
    bool variables_only;
    rw_codec_build_var_t *build_vars;
    size_t n_build_vars; /* 0..RW_CODEC_MAX_BUILD_VARS */
    rw_codec_target_t *targets;
    size_t n_targets; /* 1..RW_CODEC_MAX_TARGETS */
} rw_batch_msg_t;

/*
 * A poll-due event (topic rollwave.poll). Same ownership rules as
 * rw_batch_msg_t.
 */
typedef struct rw_poll_msg {
    char *run;           /* canonical lower-case uuid */
    int chunk;           /* >= 0 */
    char *bulk_id;       /* 1..200 bytes, no control characters */
    int attempt;         /* poll attempt, >= 1 */
    long long due_at_ms; /* epoch milliseconds; JSON: RFC 3339 UTC */
} rw_poll_msg_t;

/*
 * Encode m as compact JSON. On success *json_out is a NUL-terminated string
 * the caller frees with free(). Invalid fields give RW_ERR_CODEC_FIELD,
 * an encoding above RW_CODEC_MAX_BYTES gives RW_ERR_CODEC_TOO_LARGE.
 */
rw_err_t rw_codec_batch_encode(const rw_batch_msg_t *m, char **json_out,
                               char *errstr, size_t errlen);
rw_err_t rw_codec_poll_encode(const rw_poll_msg_t *m, char **json_out,
                              char *errstr, size_t errlen);

/*
 * Decode and validate buf (len bytes, need not be NUL-terminated) into *out.
 * *out is always initialised, so rw_codec_*_free(out) is safe after an
 * error too. Errors: RW_ERR_CODEC_TOO_LARGE, RW_ERR_CODEC_JSON,
 * RW_ERR_CODEC_VERSION, RW_ERR_CODEC_FIELD, RW_ERR_NOMEM.
 */
rw_err_t rw_codec_batch_decode(const void *buf, size_t len, rw_batch_msg_t *out,
                               char *errstr, size_t errlen);
rw_err_t rw_codec_poll_decode(const void *buf, size_t len, rw_poll_msg_t *out,
                              char *errstr, size_t errlen);

/* Free the strings and arrays of a decoded message and zero it; NULL ok. */
void rw_codec_batch_free(rw_batch_msg_t *m);
void rw_codec_poll_free(rw_poll_msg_t *m);

/*
 * Read only "v" and "type" of a payload, e.g. to route it or to dead-letter
 * it with a precise reason. *version is whatever integer "v" holds (not
 * checked against RW_CODEC_VERSION); type gets "type" truncated to typelen.
 * Errors: RW_ERR_CODEC_TOO_LARGE, RW_ERR_CODEC_JSON, RW_ERR_CODEC_FIELD
 * (v or type missing or of the wrong JSON type).
 */
rw_err_t rw_codec_peek(const void *buf, size_t len, int *version, char *type,
                       size_t typelen, char *errstr, size_t errlen);

/*
 * Kafka key of a batch or poll message: "<run uuid>:<chunk>". buf should
 * hold RW_CODEC_KEY_MAX bytes. RW_ERR_INVALID_ARG when run_uuid is NULL,
 * chunk is negative or buf is too small (buf then holds "" if len > 0).
 */
rw_err_t rw_codec_key(char *buf, size_t len, const char *run_uuid, int chunk);

/*
 * The Lagoon-name rule, applied to project, environment and build variable
 * names by decode and encode: 1..RW_CODEC_MAX_NAME_BYTES bytes of valid
 * UTF-8 without C0 or C1 control characters (U+0000..U+001F, U+007F,
 * U+0080..U+009F). The due selection mirrors it in SQL as
 * rw_lagoon_name_ok(text) (schemas/sql/0003_scheduling.sql): change both
 * together. RW_OK when s follows it, else RW_ERR_CODEC_FIELD with why not
 * in errstr ("empty", "expected 1..255 bytes, got 300", "contains control
 * characters", "not valid UTF-8", "missing" for NULL).
 */
rw_err_t rw_codec_check_name(const char *s, char *errstr, size_t errlen);

/* True when s is a canonical lower-case uuid (8-4-4-4-12 hex digits). */
bool rw_codec_is_uuid(const char *s);

/*
 * RFC 3339 timestamps <-> epoch milliseconds. Format writes
 * "2026-11-22T16:30:54.123Z" into buf (>= 25 bytes; RW_ERR_INVALID_ARG if
 * smaller or the year is outside 0000..9999). Parse accepts
 * "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)" ('T' and 'Z' in either
 * case, fraction of 1..9 digits, truncated to milliseconds) and returns
 * false on anything else.
 */
rw_err_t rw_codec_format_time(char *buf, size_t len, long long epoch_ms);
bool rw_codec_parse_time(const char *s, long long *epoch_ms);

#endif
