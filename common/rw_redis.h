/*
 * rw_redis: one blocking Redis connection (hiredis) and the instance locks
 * built on it.
 *
 * It connects (TCP or unix socket), authenticates, selects the database,
 * applies connect and command timeouts and reconnects once, transparently,
 * when the connection was lost. It takes, renews and releases instance locks
 * for n keys in one pipelined round trip. It does not decide what a lock
 * means or when to take one (that is the worker's and poller's job), and it
 * holds no durable state: losing Redis loses only in-flight markers.
 *
 * TLS: hiredis 0.14 has no TLS support, so "rediss://" URLs are rejected
 * with RW_ERR_CONFIG. To reach a TLS-only Redis, run a TLS-terminating proxy
 * (stunnel, envoy, a sidecar) next to the daemon and point the URL at it.
 *
 * A handle is not thread-safe: use one per thread.
 */
#ifndef RW_REDIS_H
#define RW_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include "rw_err.h"

typedef struct rw_redis rw_redis_t;

/* A parsed Redis URL. Holds the password: never log it. */
typedef struct rw_redis_url {
    int is_unix;        /* 1: unix socket at path; 0: TCP host:port */
    char host[256];     /* TCP host name or address, no IPv6 brackets */
    int port;           /* TCP port, 1..65535 (6379 when omitted) */
    char path[256];     /* unix socket path */
    char username[128]; /* ACL user name, "" for the default user */
    char password[256]; /* "" = no AUTH */
    int db;             /* SELECT db; 0 when omitted */
} rw_redis_url_t;

/*
 * Parse "redis://[[user]:password@]host[:port][/db]" (host may be an
 * [IPv6] literal; user and password are percent-decoded) or
 * "unix:///path/to/socket[?db=N]" into u. A pure function: no I/O.
 * "rediss://" is refused with RW_ERR_CONFIG (see TLS above). errstr never
 * contains the password.
 */
rw_err_t rw_redis_url_parse(rw_redis_url_t *u, const char *url, char *errstr,
                            size_t errlen);

/*
 * Connect to url with timeout_ms as both the connect and the per-command
 * timeout (<= 0 means 2000 ms), then AUTH and SELECT as the URL says. On
 * success *rcp is a new handle for rw_redis_destroy(). Errors:
 * RW_ERR_CONFIG (bad URL, AUTH or SELECT refused), RW_ERR_REDIS_CONN,
 * RW_ERR_REDIS_UNAVAILABLE (AUTH or SELECT answered with a server state,
 * see rw_redis_classify_reply).
 *
 * A command that times out returns RW_ERR_TIMEOUT and drops the connection
 * (its reply may still arrive); the next call connects again. Because
 * hiredis writes with write(2), a server closing the connection would
 * raise SIGPIPE: this sets SIGPIPE to ignored if it is still at its
 * default disposition.
 */
rw_err_t rw_redis_new(rw_redis_t **rcp, const char *url, long timeout_ms,
                      char *errstr, size_t errlen);

/* Close the connection and free rc. Accepts NULL. */
void rw_redis_destroy(rw_redis_t *rc);

/*
 * PING; reconnects once if the connection was lost. A server still loading
 * its data set answers RW_ERR_REDIS_UNAVAILABLE.
 */
rw_err_t rw_redis_ping(rw_redis_t *rc, char *errstr, size_t errlen);

/*
 * Redis CLIENT ID of the current connection (it changes on reconnect).
 * For diagnostics and tests.
 */
rw_err_t rw_redis_client_id(rw_redis_t *rc, long long *id, char *errstr,
                            size_t errlen);

/*
 * Round trips made so far on this handle: one per pipeline flush or single
 * command, including AUTH/SELECT/SCRIPT LOAD and retries. For benchmarks.
 */
unsigned long long rw_redis_round_trips(const rw_redis_t *rc);

/*
 * The code for an error reply of the server, given its text without the
 * leading '-' (hiredis' reply->str): RW_ERR_REDIS_UNAVAILABLE when the
 * error code (first word) says the server cannot serve the command for now
 * and will later: LOADING, READONLY, BUSY, OOM, MISCONF, TRYAGAIN,
 * CLUSTERDOWN, MASTERDOWN, NOREPLICAS, also when Redis 6 wraps one of them
 * in "ERR Error running script ...". RW_ERR_REDIS_REPLY for anything else
 * (WRONGTYPE, ERR, NOSCRIPT, NULL): the command itself is wrong. Pure.
 */
rw_err_t rw_redis_classify_reply(const char *errstr_from_server);

/* "<prefix>lock:instance:<id>", e.g. "rollwave:lock:instance:42". */
void rw_redis_lock_key(char *buf, size_t len, const char *prefix,
                       long long instance_id);

/*
 * Instance locks. Each call sends one Lua script call per key, all n in one
 * pipeline, so a call costs one round trip (plus one SCRIPT LOAD round trip
 * the first time a connection needs the scripts, or after the server lost
 * them: NOSCRIPT). The result arrays have n entries, set to 1 or 0 per key.
 *
 * Acquire uses a Lua script rather than SET NX followed by GET: it is atomic
 * and one round trip even when keys are contended. It sets key = owner with
 * a TTL of ttl_ms when the key is free (acquired 1); when the key already
 * holds owner it refreshes the TTL and also reports 1, so a redelivered
 * message re-takes its own locks; otherwise it leaves the key alone (0).
 *
 * Release deletes a key only when it holds owner; renew sets a new TTL of
 * ttl_ms only when it holds owner. Neither touches someone else's lock.
 *
 * After a lost connection the whole pipeline is sent again once on a new
 * connection; this is safe because all three scripts are idempotent (a
 * release that had already been applied then reports 0 for that key).
 *
 * Errors: RW_ERR_INVALID_ARG, RW_ERR_REDIS_CONN, RW_ERR_TIMEOUT,
 * RW_ERR_REDIS_UNAVAILABLE or RW_ERR_REDIS_REPLY (an error reply for a key,
 * classified by rw_redis_classify_reply; the first one decides, and the
 * other keys' results are still filled in).
 */
rw_err_t rw_redis_lock_acquire(rw_redis_t *rc, const char *const *keys,
                               size_t n, const char *owner, long long ttl_ms,
                               int *acquired, char *errstr, size_t errlen);

rw_err_t rw_redis_lock_release(rw_redis_t *rc, const char *const *keys,
                               size_t n, const char *owner, int *released,
                               char *errstr, size_t errlen);

/* Release with an owner per key (owners[i] for keys[i]), in one pipeline:
 * the locks of several runs' chunks at once. */
rw_err_t rw_redis_lock_release_each(rw_redis_t *rc, const char *const *keys,
                                    const char *const *owners, size_t n,
                                    int *released, char *errstr, size_t errlen);

rw_err_t rw_redis_lock_renew(rw_redis_t *rc, const char *const *keys, size_t n,
                             const char *owner, long long ttl_ms, int *renewed,
                             char *errstr, size_t errlen);

/*
 * Whether locks taken with ttl_ms, age_ms ago (< 0: unknown), are due a
 * renewal: from half their TTL on (or when their age is unknown). Before
 * that a renewal buys nothing and costs a round trip.
 */
bool rw_redis_lock_renew_due(long long ttl_ms, long long age_ms);

#endif
