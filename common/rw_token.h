/*
 * rw_token: the bearer tokens of rollwave-api and the roles they carry.
 *
 * A token is "rwt_" and 64 hex digits (32 random bytes from getrandom).
 * Postgres keeps only its SHA-256 (api_tokens.token_hash, schemas/sql/
 * 0010_api.sql): with 256 bits of entropy a fast unsalted hash is enough,
 * and it is what lets a request find its token by an indexed look-up. The
 * token text is shown once, by rw_token_create's caller, and never logged.
 *
 * Roles are ordered: viewer reads; operator also starts and controls runs;
 * admin also changes schedules, groups and tokens. rw_role_allows() is the
 * one place that says so. This module does not cache anything: the API's
 * short-lived cache of verified tokens lives with the server.
 */
#ifndef RW_TOKEN_H
#define RW_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

#include "rw_err.h"
#include "rw_pg.h"

typedef enum rw_role {
    RW_ROLE_NONE = 0, /* no valid token: nothing is allowed */
    RW_ROLE_VIEWER,   /* reads */
    RW_ROLE_OPERATOR, /* reads, starts and controls runs */
    RW_ROLE_ADMIN,    /* everything, schedules, groups and tokens too */
    RW_ROLE__COUNT
} rw_role_t;

/* "viewer", "operator", "admin" ("none" for RW_ROLE_NONE). */
const char *rw_role_name(rw_role_t role);
/* The role named (viewer, operator or admin), or -1. */
int rw_role_parse(const char *name);
/* True when a token of role have may do what needs role need. */
bool rw_role_allows(rw_role_t have, rw_role_t need);

#define RW_TOKEN_PREFIX   "rwt_"
#define RW_TOKEN_LEN      68 /* prefix and 64 hex digits */
#define RW_TOKEN_HASH_LEN 64 /* hex SHA-256 */

/* Prefix, 64 lower-case hex digits, nothing else. */
bool rw_token_well_formed(const char *token);

/* A token name: 1-64 of [A-Za-z0-9._@-], starting with a letter or digit. */
bool rw_token_name_ok(const char *name);

/*
 * A new random token into buf (at least RW_TOKEN_LEN + 1 bytes).
 * RW_ERR_IO when the kernel gives no randomness.
 */
rw_err_t rw_token_generate(char *buf, size_t len, char *errstr, size_t errlen);

/* Lower-case hex SHA-256 of s into hex (RW_TOKEN_HASH_LEN + 1 bytes). */
rw_err_t rw_token_hash(const char *s, char *hex, size_t len, char *errstr,
                       size_t errlen);

/*
 * Compare n bytes in time that depends on n only, not on where a and b
 * differ.
 */
bool rw_token_equal(const void *a, const void *b, size_t n);

/*
 * Create a token named name with role, recorded as made by `by` (may be
 * NULL). The token text goes to token (RW_TOKEN_LEN + 1 bytes); only its
 * hash is stored. A live token of that name already: RW_ERR_CONFLICT; a bad
 * name or role: RW_ERR_INVALID_ARG.
 */
rw_err_t rw_token_create(rw_pg_t *pg, const char *name, rw_role_t role,
                         const char *by, char *token, size_t len, char *errstr,
                         size_t errlen);

/* Revoke the live token named name; none: RW_ERR_NOT_FOUND. */
rw_err_t rw_token_revoke(rw_pg_t *pg, const char *name, char *errstr,
                         size_t errlen);

/*
 * Every token, newest first (name, role, created_by, created_at,
 * revoked_at, last_used_at; never the hash). The caller PQclear()s *res.
 */
rw_err_t rw_token_list(rw_pg_t *pg, PGresult **res, char *errstr,
                       size_t errlen);

/*
 * Find the live token whose hash is hash (from rw_token_hash), stamp its
 * last use and give its name (name, len bytes) and role. Unknown or
 * revoked: RW_ERR_NOT_FOUND.
 */
rw_err_t rw_token_lookup(rw_pg_t *pg, const char *hash, char *name, size_t len,
                         rw_role_t *role, char *errstr, size_t errlen);

#endif
