/*
 * rw_err: the one error enum of rollwave.
 *
 * Every function that can fail returns rw_err_t (0 = RW_OK). Detail travels
 * in a caller-supplied errstr buffer or in the object's context, never in a
 * second return channel. rw_err_is_retriable() is the single place that
 * decides "retry later" versus "give up / dead-letter".
 */
#ifndef RW_ERR_H
#define RW_ERR_H

#include <stdbool.h>
#include <stddef.h>

/* X(name, retriable, message) */
#define RW_ERR_MAP(X)                                                          \
    X(OK, 0, "success")                                                        \
    X(NOMEM, 0, "out of memory")                                               \
    X(INVALID_ARG, 0, "invalid argument")                                      \
    X(CONFIG, 0, "invalid configuration")                                      \
    X(IO, 1, "input/output error")                                             \
    X(NOT_FOUND, 0, "not found")                                               \
    X(CONFLICT, 0, "conflicting state")                                        \
    X(TIMEOUT, 1, "timed out")                                                 \
    X(SHUTDOWN, 0, "shutting down")                                            \
    X(PG_CONN, 1, "postgres connection failed")                                \
    X(PG_QUERY, 0, "postgres query failed")                                    \
    X(PG_RETRY, 1, "postgres transaction must be retried")                     \
    X(PG_UNIQUE, 0, "postgres unique constraint violated")                     \
    X(REDIS_CONN, 1, "redis connection failed")                                \
    X(REDIS_REPLY, 0, "unexpected redis reply")                                \
    X(LOCK_HELD, 0, "lock held by another owner")                              \
    X(KAFKA, 0, "kafka error")                                                 \
    X(KAFKA_TRANSIENT, 1, "transient kafka error")                             \
    X(LAGOON_NETWORK, 1, "lagoon network error")                               \
    X(LAGOON_TIMEOUT, 1, "lagoon request timed out")                           \
    X(LAGOON_SERVER, 1, "lagoon server error (5xx)")                           \
    X(LAGOON_RATE_LIMITED, 1, "lagoon rate limited (429)")                     \
    X(LAGOON_AUTH, 0, "lagoon authentication failed")                          \
    X(LAGOON_GRAPHQL, 0, "lagoon graphql error")                               \
    X(LAGOON_PROTOCOL, 0, "unexpected lagoon response")                        \
    X(CODEC_JSON, 0, "invalid json")                                           \
    X(CODEC_VERSION, 0, "unsupported message version")                         \
    X(CODEC_FIELD, 0, "invalid message field")                                 \
    X(CODEC_TOO_LARGE, 0, "message too large")                                 \
    X(STATE, 0, "invalid state transition")

typedef enum rw_err {
#define RW_ERR_ENUM(name, retriable, msg) RW_ERR_##name,
    RW_ERR_MAP(RW_ERR_ENUM)
#undef RW_ERR_ENUM
        RW_ERR__COUNT
} rw_err_t;

#define RW_OK RW_ERR_OK

/* "RW_ERR_PG_CONN"-style name without the prefix, e.g. "PG_CONN". */
const char *rw_err_name(rw_err_t err);
/* Human message, e.g. "postgres connection failed". */
const char *rw_err_str(rw_err_t err);
/* True when the same operation may succeed if tried again later. */
bool rw_err_is_retriable(rw_err_t err);

/*
 * snprintf into errstr (may be NULL or errlen 0) and return err, so that
 * "return rw_err_set(errstr, errlen, RW_ERR_X, "...", ...)" reads as one line.
 */
rw_err_t rw_err_set(char *errstr, size_t errlen, rw_err_t err, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

#endif
