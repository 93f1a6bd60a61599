/*
 * test_redis: instance locks against the real Redis of the stack
 * (ROLLWAVE_REDIS_URL): pipelined acquire/renew/release with ownership
 * checks, TTL expiry, one round trip per batch, reconnect after the server
 * kills our connection, script reload after SCRIPT FLUSH, AUTH and SELECT,
 * command timeouts, READONLY from a demoted primary.
 * A second, plain hiredis connection inspects and disturbs the server.
 */
#include "rw_itest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "rw_redis.h"

#define NKEYS 100

static const char *url;
static rw_redis_url_t parsed;
static redisContext *admin;
static char errstr[512];

static redisReply *admin_cmd(const char *fmt, ...)
{
    va_list ap;
    redisReply *r;

    va_start(ap, fmt);
    r = redisvCommand(admin, fmt, ap);
    va_end(ap);
    if (!r)
        fail_msg("admin redis command failed: %s", admin->errstr);
    return r;
}

static long long admin_int(const char *fmt, const char *key)
{
    redisReply *r = admin_cmd(fmt, key);
    long long v;

    if (r->type != REDIS_REPLY_INTEGER)
        fail_msg("admin '%s %s': not an integer reply", fmt, key);
    v = r->integer;
    freeReplyObject(r);
    return v;
}

static void admin_get(const char *key, char *buf, size_t len)
{
    redisReply *r = admin_cmd("GET %s", key);

    if (r->type == REDIS_REPLY_NIL)
        snprintf(buf, len, "(nil)");
    else
        snprintf(buf, len, "%s", r->str);
    freeReplyObject(r);
}

static int setup(void **state)
{
    redisReply *r = NULL;
    (void)state;

    url = rw_itest_env("ROLLWAVE_REDIS_URL");
    if (rw_redis_url_parse(&parsed, url, errstr, sizeof(errstr)) != RW_OK)
        fail_msg("ROLLWAVE_REDIS_URL: %s", errstr);
    if (parsed.is_unix)
        admin = redisConnectUnix(parsed.path);
    else
        admin = redisConnect(parsed.host, parsed.port);
    if (!admin || admin->err)
        fail_msg("admin connect: %s", admin ? admin->errstr : "no memory");
    if (parsed.password[0]) {
        r = parsed.username[0]
                ? admin_cmd("AUTH %s %s", parsed.username, parsed.password)
                : admin_cmd("AUTH %s", parsed.password);
        freeReplyObject(r);
    }
    r = admin_cmd("SELECT %d", parsed.db);
    freeReplyObject(r);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    redisFree(admin);
    admin = NULL;
    return 0;
}

/* NKEYS distinct lock keys under a prefix unique to this run. */
static void make_keys(char store[][96], const char **keys, size_t n)
{
    char prefix[64];

    rw_itest_unique(prefix, sizeof(prefix), "rwtest");
    strcat(prefix, ":");
    for (size_t i = 0; i < n; i++) {
        rw_redis_lock_key(store[i], sizeof(store[i]), prefix,
                          (long long)(1000 + i));
        keys[i] = store[i];
    }
}

static size_t count_set(const int *v, size_t n)
{
    size_t c = 0;

    for (size_t i = 0; i < n; i++)
        c += v[i] == 1;
    return c;
}

static rw_redis_t *connect_or_fail(const char *u)
{
    rw_redis_t *rc = NULL;

    if (rw_redis_new(&rc, u, 2000, errstr, sizeof(errstr)) != RW_OK)
        fail_msg("rw_redis_new: %s", errstr);
    return rc;
}

static void test_lock_lifecycle(void **state)
{
    static char store[NKEYS][96];
    const char *keys[NKEYS];
    int res[NKEYS];
    char val[128];
    unsigned long long before;
    rw_redis_t *rc = connect_or_fail(url);
    (void)state;

    make_keys(store, keys, NKEYS);
    assert_int_equal(rw_redis_ping(rc, errstr, sizeof(errstr)), RW_OK);

    /* Warm up: the first lock call on a connection loads the scripts. */
    assert_int_equal(rw_redis_lock_release(rc, keys, 1, "nobody", res, errstr,
                                           sizeof(errstr)),
                     RW_OK);
    assert_int_equal(res[0], 0);

    before = rw_redis_round_trips(rc);
    assert_int_equal(rw_redis_lock_acquire(rc, keys, NKEYS, "run-a", 10000, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_redis_round_trips(rc) - before, 1);
    assert_int_equal(count_set(res, NKEYS), NKEYS);
    for (size_t i = 0; i < NKEYS; i++) {
        long long pttl = admin_int("PTTL %s", keys[i]);
        admin_get(keys[i], val, sizeof(val));
        assert_string_equal(val, "run-a");
        assert_true(pttl > 0 && pttl <= 10000);
    }

    /* Another owner gets none of them. */
    assert_int_equal(rw_redis_lock_acquire(rc, keys, NKEYS, "run-b", 10000, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(count_set(res, NKEYS), 0);
    admin_get(keys[NKEYS - 1], val, sizeof(val));
    assert_string_equal(val, "run-a");

    /* The holder re-acquiring (a redelivered message) still holds them. */
    assert_int_equal(rw_redis_lock_acquire(rc, keys, NKEYS, "run-a", 10000, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(count_set(res, NKEYS), NKEYS);

    /* Release by the wrong owner: nothing released, keys still there. */
    assert_int_equal(rw_redis_lock_release(rc, keys, NKEYS, "run-b", res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(count_set(res, NKEYS), 0);
    for (size_t i = 0; i < NKEYS; i++)
        assert_int_equal(admin_int("EXISTS %s", keys[i]), 1);

    /* Renew by the wrong owner: nothing renewed, TTL not extended. */
    assert_int_equal(rw_redis_lock_renew(rc, keys, NKEYS, "run-b", 600000, res,
                                         errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(count_set(res, NKEYS), 0);
    for (size_t i = 0; i < NKEYS; i++)
        assert_true(admin_int("PTTL %s", keys[i]) <= 10000);

    /* Renew by the owner extends every TTL, in one round trip. */
    before = rw_redis_round_trips(rc);
    assert_int_equal(rw_redis_lock_renew(rc, keys, NKEYS, "run-a", 600000, res,
                                         errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_redis_round_trips(rc) - before, 1);
    assert_int_equal(count_set(res, NKEYS), NKEYS);
    for (size_t i = 0; i < NKEYS; i++)
        assert_true(admin_int("PTTL %s", keys[i]) > 500000);

    /* Release by the owner: all gone, in one round trip. */
    before = rw_redis_round_trips(rc);
    assert_int_equal(rw_redis_lock_release(rc, keys, NKEYS, "run-a", res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_redis_round_trips(rc) - before, 1);
    assert_int_equal(count_set(res, NKEYS), NKEYS);
    for (size_t i = 0; i < NKEYS; i++)
        assert_int_equal(admin_int("EXISTS %s", keys[i]), 0);

    /* Renewing a lock that is gone does not resurrect it. */
    assert_int_equal(rw_redis_lock_renew(rc, keys, NKEYS, "run-a", 600000, res,
                                         errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(count_set(res, NKEYS), 0);
    assert_int_equal(admin_int("EXISTS %s", keys[0]), 0);

    /* n = 0 is a no-op without a round trip. */
    before = rw_redis_round_trips(rc);
    assert_int_equal(rw_redis_lock_acquire(rc, keys, 0, "run-a", 1000, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_redis_round_trips(rc), before);
    rw_redis_destroy(rc);
}

/*
 * Release with an owner per key: each key goes only if its own owner
 * holds it, whichever owner the key next to it has, in one round trip.
 */
static void test_release_each_owner(void **state)
{
    static char store[NKEYS][96];
    const char *keys[NKEYS];
    const char *owners[NKEYS];
    int res[NKEYS];
    char val[128];
    unsigned long long before;
    rw_redis_t *rc = connect_or_fail(url);
    (void)state;

    make_keys(store, keys, NKEYS);
    /* even keys held by run-a, odd ones by run-b */
    for (size_t i = 0; i < NKEYS; i++) {
        assert_int_equal(rw_redis_lock_acquire(rc, &keys[i], 1,
                                               i % 2 ? "run-b" : "run-a", 10000,
                                               res, errstr, sizeof(errstr)),
                         RW_OK);
        assert_int_equal(res[0], 1);
    }
    /* asked as: key 0 by its owner, key 1 by the other run, and so on in
     * turn by threes, so every pairing occurs */
    for (size_t i = 0; i < NKEYS; i++) {
        bool right = i % 3 != 1;
        const char *holder = i % 2 ? "run-b" : "run-a";
        const char *other = i % 2 ? "run-a" : "run-b";
        owners[i] = right ? holder : other;
    }
    before = rw_redis_round_trips(rc);
    assert_int_equal(rw_redis_lock_release_each(rc, keys, owners, NKEYS, res,
                                                errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(rw_redis_round_trips(rc) - before, 1);
    for (size_t i = 0; i < NKEYS; i++) {
        bool right = i % 3 != 1;
        assert_int_equal(res[i], right ? 1 : 0);
        assert_int_equal(admin_int("EXISTS %s", keys[i]), right ? 0 : 1);
        if (!right) {
            admin_get(keys[i], val, sizeof(val));
            assert_string_equal(val, i % 2 ? "run-b" : "run-a");
        }
    }
    /* an empty owner is refused before anything is sent */
    owners[0] = "";
    before = rw_redis_round_trips(rc);
    assert_int_equal(rw_redis_lock_release_each(rc, keys, owners, NKEYS, res,
                                                errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_int_equal(rw_redis_round_trips(rc), before);
    assert_int_equal(rw_redis_lock_release_each(rc, keys, NULL, NKEYS, res,
                                                errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    for (size_t i = 0; i < NKEYS; i++)
        admin_int("DEL %s", keys[i]);
    rw_redis_destroy(rc);
}

static void test_partial_and_error_replies(void **state)
{
    static char store[4][96];
    const char *keys[4];
    int res[4];
    redisReply *r;
    rw_redis_t *rc = connect_or_fail(url);
    (void)state;

    make_keys(store, keys, 4);
    r = admin_cmd("SET %s other PX 10000", keys[1]);
    freeReplyObject(r);
    assert_int_equal(rw_redis_lock_acquire(rc, keys, 4, "mine", 10000, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(res[0], 1);
    assert_int_equal(res[1], 0);
    assert_int_equal(res[2], 1);
    assert_int_equal(res[3], 1);

    /* A key of the wrong type is an error; the others are still reported. */
    r = admin_cmd("DEL %s", keys[3]);
    freeReplyObject(r);
    r = admin_cmd("RPUSH %s x", keys[3]);
    freeReplyObject(r);
    assert_int_equal(
        rw_redis_lock_release(rc, keys, 4, "mine", res, errstr, sizeof(errstr)),
        RW_ERR_REDIS_REPLY);
    assert_non_null(strstr(errstr, keys[3]));
    assert_int_equal(res[0], 1);
    assert_int_equal(res[1], 0);
    assert_int_equal(res[2], 1);
    assert_int_equal(res[3], 0);
    assert_int_equal(admin_int("EXISTS %s", keys[0]), 0);
    assert_int_equal(admin_int("EXISTS %s", keys[1]), 1);

    /* The connection is still in step after the error reply. */
    assert_int_equal(rw_redis_ping(rc, errstr, sizeof(errstr)), RW_OK);
    for (int i = 0; i < 4; i++) {
        r = admin_cmd("DEL %s", keys[i]);
        freeReplyObject(r);
    }
    rw_redis_destroy(rc);
}

static void test_ttl_expiry_frees_lock(void **state)
{
    static char store[3][96];
    const char *keys[3];
    int res[3];
    struct timespec ts = {0, 400 * 1000 * 1000};
    rw_redis_t *rc = connect_or_fail(url);
    (void)state;

    make_keys(store, keys, 3);
    assert_int_equal(rw_redis_lock_acquire(rc, keys, 3, "short", 150, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(count_set(res, 3), 3);
    assert_int_equal(rw_redis_lock_acquire(rc, keys, 3, "late", 150, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(count_set(res, 3), 0);
    nanosleep(&ts, NULL);
    assert_int_equal(rw_redis_lock_acquire(rc, keys, 3, "late", 10000, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(count_set(res, 3), 3);
    assert_int_equal(
        rw_redis_lock_release(rc, keys, 3, "late", res, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(count_set(res, 3), 3);
    rw_redis_destroy(rc);
}

static void kill_client(long long id)
{
    redisReply *r = admin_cmd("CLIENT KILL ID %lld", id);

    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    assert_int_equal(r->integer, 1);
    freeReplyObject(r);
}

static void test_reconnect_after_client_kill(void **state)
{
    static char store[NKEYS][96];
    const char *keys[NKEYS];
    int res[NKEYS];
    long long id1, id2, id3;
    rw_redis_t *rc = connect_or_fail(url);
    (void)state;

    make_keys(store, keys, NKEYS);
    assert_int_equal(rw_redis_client_id(rc, &id1, errstr, sizeof(errstr)),
                     RW_OK);
    kill_client(id1);
    assert_int_equal(rw_redis_ping(rc, errstr, sizeof(errstr)), RW_OK);
    assert_int_equal(rw_redis_client_id(rc, &id2, errstr, sizeof(errstr)),
                     RW_OK);
    assert_true(id2 != id1);

    /* A pipelined batch is resent whole on the new connection. */
    assert_int_equal(rw_redis_lock_acquire(rc, keys, NKEYS, "rk", 10000, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    kill_client(id2);
    assert_int_equal(rw_redis_lock_renew(rc, keys, NKEYS, "rk", 20000, res,
                                         errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(count_set(res, NKEYS), NKEYS);
    assert_true(admin_int("PTTL %s", keys[0]) > 10000);
    assert_int_equal(rw_redis_client_id(rc, &id3, errstr, sizeof(errstr)),
                     RW_OK);
    assert_true(id3 != id2);
    assert_int_equal(rw_redis_lock_release(rc, keys, NKEYS, "rk", res, errstr,
                                           sizeof(errstr)),
                     RW_OK);
    assert_int_equal(count_set(res, NKEYS), NKEYS);
    rw_redis_destroy(rc);
}

static void test_script_reload_after_flush(void **state)
{
    static char store[5][96];
    const char *keys[5];
    int res[5];
    redisReply *r;
    unsigned long long before;
    rw_redis_t *rc = connect_or_fail(url);
    (void)state;

    make_keys(store, keys, 5);
    assert_int_equal(rw_redis_lock_acquire(rc, keys, 5, "fl", 10000, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    r = admin_cmd("SCRIPT FLUSH");
    freeReplyObject(r);
    /* NOSCRIPT, SCRIPT LOAD, resend: three round trips. */
    before = rw_redis_round_trips(rc);
    assert_int_equal(
        rw_redis_lock_release(rc, keys, 5, "fl", res, errstr, sizeof(errstr)),
        RW_OK);
    assert_int_equal(rw_redis_round_trips(rc) - before, 3);
    assert_int_equal(count_set(res, 5), 5);
    assert_int_equal(admin_int("EXISTS %s", keys[4]), 0);
    rw_redis_destroy(rc);
}

/* Percent-encode s for a URL's user or password part. */
static void pct(char *out, size_t len, const char *s)
{
    size_t o = 0;

    for (; *s && o + 4 < len; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
            (*s >= '0' && *s <= '9') || *s == '-' || *s == '_')
            out[o++] = *s;
        else
            o +=
                (size_t)snprintf(out + o, len - o, "%%%02X", (unsigned char)*s);
    }
    out[o] = '\0';
}

static void test_auth_and_select(void **state)
{
    char user[64], u_url[512], bad_url[512], key[96], host[300];
    const char *password = "p@ss:w/rd%1";
    const char *keys[1] = {key};
    char enc[64];
    int res[1];
    redisReply *r;
    rw_redis_t *rc = NULL;
    (void)state;

    if (parsed.is_unix)
        fail_msg("test_auth_and_select needs a TCP ROLLWAVE_REDIS_URL");
    snprintf(host, sizeof(host), strchr(parsed.host, ':') ? "[%s]" : "%s",
             parsed.host);
    rw_itest_unique(user, sizeof(user), "rwuser");
    r = admin_cmd("ACL SETUSER %s on >%s ~* &* +@all", user, password);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);

    /* The password goes in percent-encoded, the user name as is. */
    pct(enc, sizeof(enc), password);
    snprintf(u_url, sizeof(u_url), "redis://%s:%s@%s:%d/1", user, enc, host,
             parsed.port);
    rc = connect_or_fail(u_url);
    rw_itest_unique(key, sizeof(key), "rwtest_db1");
    assert_int_equal(rw_redis_lock_acquire(rc, keys, 1, "db1", 10000, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    assert_int_equal(res[0], 1);
    /* SELECT 1 took effect: the key is in db 1, not in the admin's db. */
    if (parsed.db != 1)
        assert_int_equal(admin_int("EXISTS %s", key), 0);
    r = admin_cmd("SELECT 1");
    freeReplyObject(r);
    assert_int_equal(admin_int("EXISTS %s", key), 1);
    r = admin_cmd("DEL %s", key);
    freeReplyObject(r);
    r = admin_cmd("SELECT %d", parsed.db);
    freeReplyObject(r);
    rw_redis_destroy(rc);

    /* A wrong password is a configuration error that does not echo it. */
    snprintf(bad_url, sizeof(bad_url), "redis://%s:WrongPass42@%s:%d", user,
             host, parsed.port);
    rc = NULL;
    assert_int_equal(rw_redis_new(&rc, bad_url, 2000, errstr, sizeof(errstr)),
                     RW_ERR_CONFIG);
    assert_null(rc);
    assert_non_null(strstr(errstr, "AUTH"));
    assert_null(strstr(errstr, "WrongPass42"));

    r = admin_cmd("ACL DELUSER %s", user);
    freeReplyObject(r);
}

static void test_command_timeout(void **state)
{
    redisReply *r;
    rw_redis_t *rc = NULL;
    long long t0;
    struct timespec ts = {0, 500 * 1000 * 1000};
    (void)state;

    if (rw_redis_new(&rc, url, 150, errstr, sizeof(errstr)) != RW_OK)
        fail_msg("rw_redis_new: %s", errstr);
    /* Kept short: CLIENT PAUSE stalls every client of the server. */
    r = admin_cmd("CLIENT PAUSE 400");
    freeReplyObject(r);
    t0 = rw_itest_now_ms();
    assert_int_equal(rw_redis_ping(rc, errstr, sizeof(errstr)), RW_ERR_TIMEOUT);
    assert_true(rw_itest_now_ms() - t0 < 380);
    assert_non_null(strstr(errstr, "timed out"));
    nanosleep(&ts, NULL);
    /* The timed-out connection was dropped; the next call reconnects. */
    assert_int_equal(rw_redis_ping(rc, errstr, sizeof(errstr)), RW_OK);
    rw_redis_destroy(rc);
}

static void test_connect_failures(void **state)
{
    rw_redis_t *rc = NULL;
    (void)state;

    assert_int_equal(rw_redis_new(&rc, "redis://:pw@127.0.0.1:1", 500, errstr,
                                  sizeof(errstr)),
                     RW_ERR_REDIS_CONN);
    assert_null(rc);
    assert_non_null(strstr(errstr, "127.0.0.1:1"));
    assert_null(strstr(errstr, "pw@"));
    assert_int_equal(rw_redis_new(&rc, "unix:///nonexistent/redis.sock", 500,
                                  errstr, sizeof(errstr)),
                     RW_ERR_REDIS_CONN);
    assert_null(rc);
}

/*
 * After a failover a client may still reach the old primary, now a
 * replica: writes answer READONLY until it reconnects to the new one.
 * Turning the stack's server into a replica of a port nobody listens on
 * gives that state without a second server (it never syncs, so the data
 * stays); the teardown makes it a primary again whatever the test did.
 */
static int promote_teardown(void **state)
{
    redisReply *r = admin_cmd("REPLICAOF NO ONE");

    (void)state;
    freeReplyObject(r);
    return 0;
}

static void test_readonly_replica_is_unavailable(void **state)
{
    static char store[3][96];
    const char *keys[3];
    int res[3];
    redisReply *r;
    rw_redis_t *rc = connect_or_fail(url);
    rw_err_t e;
    (void)state;

    make_keys(store, keys, 3);
    r = admin_cmd("REPLICAOF 127.0.0.1 1");
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);

    e = rw_redis_lock_acquire(rc, keys, 3, "mine", 10000, res, errstr,
                              sizeof(errstr));
    assert_int_equal(e, RW_ERR_REDIS_UNAVAILABLE);
    assert_true(rw_err_is_retriable(e));
    assert_non_null(strstr(errstr, "READONLY"));
    for (int i = 0; i < 3; i++)
        assert_int_equal(res[i], 0);
    /* reads still work: the server is up, only writes are refused */
    assert_int_equal(rw_redis_ping(rc, errstr, sizeof(errstr)), RW_OK);

    r = admin_cmd("REPLICAOF NO ONE");
    freeReplyObject(r);
    /* the same call, retried once the server takes writes again */
    assert_int_equal(rw_redis_lock_acquire(rc, keys, 3, "mine", 10000, res,
                                           errstr, sizeof(errstr)),
                     RW_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(res[i], 1);
    assert_int_equal(
        rw_redis_lock_release(rc, keys, 3, "mine", res, errstr, sizeof(errstr)),
        RW_OK);
    rw_redis_destroy(rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_lifecycle),
        cmocka_unit_test(test_release_each_owner),
        cmocka_unit_test(test_partial_and_error_replies),
        cmocka_unit_test_teardown(test_readonly_replica_is_unavailable,
                                  promote_teardown),
        cmocka_unit_test(test_ttl_expiry_frees_lock),
        cmocka_unit_test(test_reconnect_after_client_kill),
        cmocka_unit_test(test_script_reload_after_flush),
        cmocka_unit_test(test_auth_and_select),
        cmocka_unit_test(test_command_timeout),
        cmocka_unit_test(test_connect_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
