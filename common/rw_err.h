/*
 * rw_err: the one error enum of rollwave.
 *
 * Every function that can fail returns rw_err_t (0 = RW_OK). Detail travels
 * in a caller-supplied errstr buffer or in the object's context, never in a
 * second return channel. RW_ERR_MAP is the single place that decides
 * "retry later", "in doubt: reconcile first" or "give up / dead-letter";
 * rw_err_class() and rw_err_is_retriable() read it.
 */
#ifndef RW_ERR_H
#define RW_ERR_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Whether an error is worth another try, and whether the failed call may
 * have taken effect anyway. The class depends on the kind of call:
 *
 *   RW_ERR_CLASS_PERMANENT  trying again gives the same answer: fail the
 *                           work (or dead-letter the message).
 *   RW_ERR_CLASS_RETRY      the call had no effect and may succeed later:
 *                           try again with backoff.
 *   RW_ERR_CLASS_IN_DOUBT   the call may have taken effect although it
 *                           failed: do not repeat it blindly, reconcile
 *                           first (for the Lagoon bulk deploy: look the
 *                           bulk up by name after a settle window).
 */
typedef enum rw_err_class {
    RW_ERR_CLASS_PERMANENT = 0,
    RW_ERR_CLASS_RETRY,
    RW_ERR_CLASS_IN_DOUBT
} rw_err_class_t;

/*
 * READ: a read or an idempotent write, safe to repeat whatever happened.
 * SEND: a non-idempotent remote call (the Lagoon deploy mutation) that may
 * have been applied although it failed.
 */
typedef enum rw_err_op { RW_OP_READ = 0, RW_OP_SEND } rw_err_op_t;

/*
 * X(name, class on READ, class on SEND, message): the one table that
 * decides retriability (DESIGN.md section 11, docs/DECISIONS.md "Errors").
 * A server that is restarting, failing over, read-only or overloaded is
 * RETRY; a failure that may come after the request reached the server is
 * IN_DOUBT on SEND.
 */
#define RW_ERR_MAP(X)                                                          \
    X(OK, PERMANENT, PERMANENT, "success")                                     \
    X(NOMEM, PERMANENT, PERMANENT, "out of memory")                            \
    X(INVALID_ARG, PERMANENT, PERMANENT, "invalid argument")                   \
    X(CONFIG, PERMANENT, PERMANENT, "invalid configuration")                   \
    X(IO, RETRY, RETRY, "input/output error")                                  \
    X(NOT_FOUND, PERMANENT, PERMANENT, "not found")                            \
    X(CONFLICT, PERMANENT, PERMANENT, "conflicting state")                     \
    X(TIMEOUT, RETRY, IN_DOUBT, "timed out")                                   \
    X(SHUTDOWN, PERMANENT, PERMANENT, "shutting down")                         \
    X(PG_CONN, RETRY, IN_DOUBT, "postgres connection failed")                  \
    X(PG_QUERY, PERMANENT, PERMANENT, "postgres query failed")                 \
    X(PG_RETRY, RETRY, RETRY, "postgres transaction must be retried")          \
    X(PG_UNIQUE, PERMANENT, PERMANENT, "postgres unique constraint violated")  \
    X(PG_UNAVAILABLE, RETRY, RETRY,                                            \
      "postgres temporarily unavailable (read-only, resources, cancelled)")    \
    X(REDIS_CONN, RETRY, IN_DOUBT, "redis connection failed")                  \
    X(REDIS_REPLY, PERMANENT, PERMANENT, "unexpected redis reply")             \
    X(REDIS_UNAVAILABLE, RETRY, RETRY,                                         \
      "redis temporarily unavailable (loading, read-only, busy, oom)")         \
    X(LOCK_HELD, PERMANENT, PERMANENT, "lock held by another owner")           \
    X(KAFKA, PERMANENT, PERMANENT, "kafka error")                              \
    X(KAFKA_TRANSIENT, RETRY, RETRY, "transient kafka error")                  \
    X(LAGOON_CONNECT, RETRY, RETRY, "lagoon unreachable (request not sent)")   \
    X(LAGOON_NETWORK, RETRY, IN_DOUBT,                                         \
      "lagoon connection lost after the request was sent")                     \
    X(LAGOON_TIMEOUT, RETRY, IN_DOUBT, "lagoon request timed out")             \
    X(LAGOON_SERVER, RETRY, IN_DOUBT, "lagoon server error (5xx)")             \
    X(LAGOON_RATE_LIMITED, RETRY, RETRY, "lagoon rate limited (429)")          \
    X(LAGOON_AUTH, RETRY, RETRY, "lagoon authentication failed")               \
    X(LAGOON_GRAPHQL, PERMANENT, PERMANENT, "lagoon graphql error")            \
    X(LAGOON_PROTOCOL, PERMANENT, IN_DOUBT, "unexpected lagoon response")      \
    X(LAGOON_REJECTED, PERMANENT, PERMANENT,                                   \
      "lagoon refused the request (HTTP 3xx/4xx)")                             \
    X(CODEC_JSON, PERMANENT, PERMANENT, "invalid json")                        \
    X(CODEC_VERSION, PERMANENT, PERMANENT, "unsupported message version")      \
    X(CODEC_FIELD, PERMANENT, PERMANENT, "invalid message field")              \
    X(CODEC_TOO_LARGE, PERMANENT, PERMANENT, "message too large")              \
    X(STATE, PERMANENT, PERMANENT, "invalid state transition")

typedef enum rw_err {
#define RW_ERR_ENUM(name, on_read, on_send, msg) RW_ERR_##name,
    RW_ERR_MAP(RW_ERR_ENUM)
#undef RW_ERR_ENUM
        RW_ERR__COUNT
} rw_err_t;

#define RW_OK RW_ERR_OK

/* "RW_ERR_PG_CONN"-style name without the prefix, e.g. "PG_CONN". */
const char *rw_err_name(rw_err_t err);
/* Human message, e.g. "postgres connection failed". */
const char *rw_err_str(rw_err_t err);
/*
 * The class of err after a call of kind op (RW_OK and unknown codes are
 * PERMANENT: there is nothing to retry).
 */
rw_err_class_t rw_err_class(rw_err_t err, rw_err_op_t op);
/* "permanent", "retry", "in_doubt"; "unknown" outside the enum. */
const char *rw_err_class_name(rw_err_class_t c);
/*
 * rw_err_class(err, RW_OP_READ) == RW_ERR_CLASS_RETRY: the same read or
 * idempotent write may succeed if tried again later.
 */
bool rw_err_is_retriable(rw_err_t err);

/*
 * snprintf into errstr (may be NULL or errlen 0) and return err, so that
 * "return rw_err_set(errstr, errlen, RW_ERR_X, "...", ...)" reads as one line.
 * A message cut by errlen ends before a UTF-8 character it would split.
 */
rw_err_t rw_err_set(char *errstr, size_t errlen, rw_err_t err, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

/*
 * Drop an incomplete UTF-8 sequence at the end of s (what a byte-counted
 * cut leaves of a character): a message quoting someone's text must stay
 * valid UTF-8, or Postgres refuses the row that records it.
 */
void rw_utf8_trim_partial(char *s);

#endif
