/*
 * rw_token: token generation, hashing and the api_tokens statements, and
 * the role table. It does not parse HTTP headers or cache verified tokens
 * (api/ does both).
 */
#include "rw_token.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/evp.h>

/* One row per role, in rank order: a role may do what any lower one may. */
static const struct role_row {
    rw_role_t role;
    const char *name;
} roles[RW_ROLE__COUNT] = {
    {RW_ROLE_NONE, "none"},
    {RW_ROLE_VIEWER, "viewer"},
    {RW_ROLE_OPERATOR, "operator"},
    {RW_ROLE_ADMIN, "admin"},
};

const char *rw_role_name(rw_role_t role)
{
    if ((int)role < 0 || role >= RW_ROLE__COUNT)
        return "none";
    return roles[role].name;
}

int rw_role_parse(const char *name)
{
    if (!name)
        return -1;
    /* "none" names the absence of a role; no token carries it */
    for (int i = RW_ROLE_VIEWER; i < RW_ROLE__COUNT; i++)
        if (strcmp(roles[i].name, name) == 0)
            return i;
    return -1;
}

bool rw_role_allows(rw_role_t have, rw_role_t need)
{
    if (have <= RW_ROLE_NONE || have >= RW_ROLE__COUNT)
        return false;
    return have >= need;
}

static bool is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

bool rw_token_well_formed(const char *token)
{
    size_t plen = strlen(RW_TOKEN_PREFIX);

    if (!token || strlen(token) != RW_TOKEN_LEN ||
        strncmp(token, RW_TOKEN_PREFIX, plen) != 0)
        return false;
    for (size_t i = plen; i < RW_TOKEN_LEN; i++)
        if (!is_lower_hex(token[i]))
            return false;
    return true;
}

bool rw_token_name_ok(const char *name)
{
    size_t n;

    if (!name)
        return false;
    n = strlen(name);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || !strchr("._@-", c)))
            return false;
    }
    return true;
}

static void to_hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

rw_err_t rw_token_generate(char *buf, size_t len, char *errstr, size_t errlen)
{
    unsigned char raw[32];
    size_t got = 0;

    if (!buf || len < RW_TOKEN_LEN + 1)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "token buffer too small");
    while (got < sizeof(raw)) {
        ssize_t n = getrandom(raw + got, sizeof(raw) - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return rw_err_set(errstr, errlen, RW_ERR_IO, "getrandom: %s",
                              strerror(errno));
        }
        got += (size_t)n;
    }
    memcpy(buf, RW_TOKEN_PREFIX, strlen(RW_TOKEN_PREFIX));
    to_hex(raw, sizeof(raw), buf + strlen(RW_TOKEN_PREFIX));
    /* the random bytes must not linger on the stack */
    explicit_bzero(raw, sizeof(raw));
    return RW_OK;
}

rw_err_t rw_token_hash(const char *s, char *hex, size_t len, char *errstr,
                       size_t errlen)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (!s || !hex || len < RW_TOKEN_HASH_LEN + 1)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "token hash: bad arguments");
    if (EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen != 32)
        return rw_err_set(errstr, errlen, RW_ERR_IO, "sha-256 failed");
    to_hex(md, 32, hex);
    return RW_OK;
}

bool rw_token_equal(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char diff = 0;

    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(x[i] ^ y[i]);
    return diff == 0;
}

static const char SQL_CREATE[] =
    "INSERT INTO api_tokens (name, role, token_hash, created_by)"
    " VALUES ($1, $2, $3, $4) RETURNING id";

static const char SQL_REVOKE[] =
    "UPDATE api_tokens SET revoked_at = now()"
    " WHERE name = $1 AND revoked_at IS NULL RETURNING id";

static const char SQL_LIST[] =
    "SELECT name, role, created_by,"
    "  to_char(created_at AT TIME ZONE 'UTC',"
    "          'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at,"
    "  to_char(revoked_at AT TIME ZONE 'UTC',"
    "          'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS revoked_at,"
    "  to_char(last_used_at AT TIME ZONE 'UTC',"
    "          'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS last_used_at"
    " FROM api_tokens ORDER BY id DESC";

/* One statement: find by hash (unique index) and stamp the use. */
static const char SQL_LOOKUP[] = "UPDATE api_tokens SET last_used_at = now()"
                                 " WHERE token_hash = $1 AND revoked_at IS NULL"
                                 " RETURNING name, role, token_hash";

rw_err_t rw_token_create(rw_pg_t *pg, const char *name, rw_role_t role,
                         const char *by, char *token, size_t len, char *errstr,
                         size_t errlen)
{
    char hash[RW_TOKEN_HASH_LEN + 1];
    const char *params[4];
    rw_err_t err = RW_OK;

    if (!rw_token_name_ok(name))
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "token name must be 1-64 of A-Z a-z 0-9 . _ @ -, "
                          "starting with a letter or digit");
    if (role <= RW_ROLE_NONE || role >= RW_ROLE__COUNT)
        return rw_err_set(errstr, errlen, RW_ERR_INVALID_ARG,
                          "role must be viewer, operator or admin");
    err = rw_token_generate(token, len, errstr, errlen);
    if (err)
        goto out;
    err = rw_token_hash(token, hash, sizeof(hash), errstr, errlen);
    if (err)
        goto out;
    params[0] = name;
    params[1] = rw_role_name(role);
    params[2] = hash;
    params[3] = by;
    err = rw_pg_exec(pg, SQL_CREATE, 4, params, NULL, errstr, errlen);
    if (err == RW_ERR_PG_UNIQUE)
        err =
            rw_err_set(errstr, errlen, RW_ERR_CONFLICT,
                       "a live token named %s exists (revoke it first)", name);
out:
    if (err && token && len)
        explicit_bzero(token, len);
    return err;
}

rw_err_t rw_token_revoke(rw_pg_t *pg, const char *name, char *errstr,
                         size_t errlen)
{
    const char *params[1] = {name};
    PGresult *res = NULL;
    rw_err_t err = RW_OK;

    err = rw_pg_exec(pg, SQL_REVOKE, 1, params, &res, errstr, errlen);
    if (err)
        goto out;
    if (PQntuples(res) == 0)
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND,
                         "no live token named %s", name);
out:
    PQclear(res);
    return err;
}

rw_err_t rw_token_list(rw_pg_t *pg, PGresult **res, char *errstr, size_t errlen)
{
    return rw_pg_exec(pg, SQL_LIST, 0, NULL, res, errstr, errlen);
}

rw_err_t rw_token_lookup(rw_pg_t *pg, const char *hash, char *name, size_t len,
                         rw_role_t *role, char *errstr, size_t errlen)
{
    const char *params[1] = {hash};
    PGresult *res = NULL;
    const char *stored;
    rw_err_t err = RW_OK;
    int r;

    err = rw_pg_exec(pg, SQL_LOOKUP, 1, params, &res, errstr, errlen);
    if (err)
        goto out;
    stored = PQntuples(res) == 1 ? rw_pg_str(res, 0, "token_hash") : NULL;
    /* the index found it by equality; the constant-time check keeps the
     * answer from depending on where a near miss differs */
    if (!stored || strlen(stored) != RW_TOKEN_HASH_LEN ||
        !rw_token_equal(stored, hash, RW_TOKEN_HASH_LEN)) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND, "unknown token");
        goto out;
    }
    r = rw_role_parse(rw_pg_str(res, 0, "role"));
    if (r < 0) {
        err = rw_err_set(errstr, errlen, RW_ERR_NOT_FOUND, "unknown role");
        goto out;
    }
    *role = (rw_role_t)r;
    snprintf(name, len, "%s", rw_pg_str(res, 0, "name"));
out:
    PQclear(res);
    return err;
}
