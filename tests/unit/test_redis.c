/*
 * test_redis: URL parsing (passwords, users, db, IPv6, unix sockets, TLS
 * refusal, bad ports), lock key naming, argument checks and the error
 * reply classifier, without a Redis server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "rw_redis.h"

static rw_redis_url_t u;
static char errstr[256];

static rw_err_t parse(const char *url)
{
    errstr[0] = '\0';
    return rw_redis_url_parse(&u, url, errstr, sizeof(errstr));
}

static void test_plain_host_port(void **state)
{
    (void)state;
    assert_int_equal(parse("redis://localhost:6380"), RW_OK);
    assert_false(u.is_unix);
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.password, "");
    assert_string_equal(u.username, "");

    assert_int_equal(parse("redis://10.1.2.3"), RW_OK);
    assert_string_equal(u.host, "10.1.2.3");
    assert_int_equal(u.port, 6379);

    assert_int_equal(parse("redis://h:1/"), RW_OK);
    assert_int_equal(u.port, 1);
    assert_int_equal(u.db, 0);
}

static void test_password_and_db(void **state)
{
    (void)state;
    assert_int_equal(parse("redis://:s3cr%40t%2Fx@10.0.0.1:6379/2"), RW_OK);
    assert_string_equal(u.password, "s3cr@t/x");
    assert_string_equal(u.username, "");
    assert_string_equal(u.host, "10.0.0.1");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 2);

    /* Unencoded '@', '/' and ':' in the password: the last '@' wins. */
    assert_int_equal(parse("redis://:p@ss/w:rd@h:7000/15"), RW_OK);
    assert_string_equal(u.password, "p@ss/w:rd");
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 15);

    assert_int_equal(parse("redis://alice:pw@cache.internal/3"), RW_OK);
    assert_string_equal(u.username, "alice");
    assert_string_equal(u.password, "pw");
    assert_string_equal(u.host, "cache.internal");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 3);
}

static void test_ipv6(void **state)
{
    (void)state;
    assert_int_equal(parse("redis://[::1]:7001/1"), RW_OK);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7001);
    assert_int_equal(u.db, 1);
    assert_int_equal(parse("redis://[fe80::2]"), RW_OK);
    assert_string_equal(u.host, "fe80::2");
    assert_int_equal(u.port, 6379);
    assert_int_equal(parse("redis://[::1"), RW_ERR_CONFIG);
    assert_int_equal(parse("redis://[::1]x"), RW_ERR_CONFIG);
}

static void test_unix_socket(void **state)
{
    (void)state;
    assert_int_equal(parse("unix:///var/run/redis/redis.sock"), RW_OK);
    assert_true(u.is_unix);
    assert_string_equal(u.path, "/var/run/redis/redis.sock");
    assert_int_equal(u.db, 0);
    assert_int_equal(parse("unix:///run/redis/r.sock?db=4"), RW_OK);
    assert_string_equal(u.path, "/run/redis/r.sock");
    assert_int_equal(u.db, 4);

    assert_int_equal(parse("unix://relative.sock"), RW_ERR_CONFIG);
    assert_int_equal(parse("unix://"), RW_ERR_CONFIG);
    assert_int_equal(parse("unix:///run/redis/r.sock?db=x"), RW_ERR_CONFIG);
    assert_int_equal(parse("unix:///run/redis/r.sock?timeout=1"),
                     RW_ERR_CONFIG);
}

static void test_rediss_is_refused(void **state)
{
    (void)state;
    assert_int_equal(parse("rediss://:pw@h:6380"), RW_ERR_CONFIG);
    assert_non_null(strstr(errstr, "TLS"));
    assert_non_null(strstr(errstr, "proxy"));
    assert_null(strstr(errstr, "pw"));
}

static void test_bad_ports(void **state)
{
    const char *bad[] = {
        "redis://h:0",          "redis://h:65536", "redis://h:abc",
        "redis://h:",           "redis://h:12x",   "redis://h:-1",
        "redis://h:99999999999"};
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse(bad[i]), RW_ERR_CONFIG);
        assert_non_null(strstr(errstr, "port"));
    }
    assert_int_equal(parse("redis://h:65535"), RW_OK);
    assert_int_equal(u.port, 65535);
}

static void test_other_bad_urls(void **state)
{
    (void)state;
    assert_int_equal(parse("http://h:6379"), RW_ERR_CONFIG);
    assert_int_equal(parse("h:6379"), RW_ERR_CONFIG);
    assert_int_equal(parse("redis://"), RW_ERR_CONFIG);
    assert_int_equal(parse("redis://:pw@"), RW_ERR_CONFIG);
    assert_int_equal(parse("redis://h/x"), RW_ERR_CONFIG);
    assert_int_equal(parse("redis://h/-1"), RW_ERR_CONFIG);
    assert_int_equal(parse("redis://h?db=1"), RW_ERR_CONFIG);
    assert_int_equal(parse("redis://:bad%zzescape@h"), RW_ERR_CONFIG);
    /* Credentials without a colon are ambiguous: refused, not guessed. */
    assert_int_equal(parse("redis://onlyword@h"), RW_ERR_CONFIG);
    assert_int_equal(rw_redis_url_parse(&u, NULL, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
}

static void test_errors_never_show_the_password(void **state)
{
    (void)state;
    assert_int_equal(parse("redis://:topsecret@h:99999"), RW_ERR_CONFIG);
    assert_null(strstr(errstr, "topsecret"));
    assert_int_equal(parse("redis://:topsecret@h/notadb"), RW_ERR_CONFIG);
    assert_null(strstr(errstr, "topsecret"));
    /* A failed parse does not leave the password behind either. */
    assert_string_equal(u.password, "");
}

static void test_lock_key(void **state)
{
    char buf[64], small[12];
    (void)state;

    rw_redis_lock_key(buf, sizeof(buf), "rollwave:", 42);
    assert_string_equal(buf, "rollwave:lock:instance:42");
    rw_redis_lock_key(buf, sizeof(buf), "", 7);
    assert_string_equal(buf, "lock:instance:7");
    rw_redis_lock_key(buf, sizeof(buf), "fleet-b:", 9007199254740993LL);
    assert_string_equal(buf, "fleet-b:lock:instance:9007199254740993");
    rw_redis_lock_key(small, sizeof(small), "rollwave:", 1);
    assert_int_equal(strlen(small), sizeof(small) - 1);
}

/* The poller renews from half the TTL on, and when the age is unknown. */
static void test_lock_renew_due(void **state)
{
    (void)state;
    assert_false(rw_redis_lock_renew_due(600000, 0));
    assert_false(rw_redis_lock_renew_due(600000, 299999));
    assert_true(rw_redis_lock_renew_due(600000, 300000));
    assert_true(rw_redis_lock_renew_due(600000, 900000));
    assert_true(rw_redis_lock_renew_due(600000, -1));
    /* the default 14 h: builds of up to 7 h are never renewed */
    assert_false(rw_redis_lock_renew_due(50400000LL, 7LL * 3600 * 1000 - 1));
    assert_true(rw_redis_lock_renew_due(50400000LL, 7LL * 3600 * 1000));
}

static void test_new_refuses_without_connecting(void **state)
{
    rw_redis_t *rc = (rw_redis_t *)&u; /* must be reset to NULL */
    (void)state;

    assert_int_equal(
        rw_redis_new(&rc, "rediss://h:6379", 100, errstr, sizeof(errstr)),
        RW_ERR_CONFIG);
    assert_null(rc);
    assert_non_null(strstr(errstr, "TLS"));
    rw_redis_destroy(NULL);
    assert_int_equal(rw_redis_round_trips(NULL), 0);
}

static void test_lock_argument_checks(void **state)
{
    const char *keys[] = {"k1", ""};
    int out[2];
    (void)state;

    assert_int_equal(rw_redis_lock_acquire(NULL, keys, 1, "o", 1000, out,
                                           errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_int_equal(
        rw_redis_lock_release(NULL, keys, 1, "o", out, errstr, sizeof(errstr)),
        RW_ERR_INVALID_ARG);
    assert_int_equal(rw_redis_lock_renew(NULL, keys, 1, "o", 1000, out, errstr,
                                         sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
    assert_int_equal(rw_redis_ping(NULL, errstr, sizeof(errstr)),
                     RW_ERR_INVALID_ARG);
}

/* Replies as real servers send them (hiredis strips the leading '-'). */
static void test_classify_reply_unavailable(void **state)
{
    static const char *const unavailable[] = {
        "LOADING Redis is loading the dataset in memory",
        "READONLY You can't write against a read only replica.",
        "BUSY Redis is busy running a script. You can only call "
        "SCRIPT KILL or SHUTDOWN NOSAVE.",
        "OOM command not allowed when used memory > 'maxmemory'.",
        "MISCONF Redis is configured to save RDB snapshots, but it's "
        "currently unable to persist to disk.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data "
        "is set to 'no'.",
        "NOREPLICAS Not enough good replicas to write.",
        /* Redis 7 passes an error of redis.call() through a script */
        "READONLY You can't write against a read only replica. script: "
        "1b9c..., on @user_script:1.",
        /* Redis 6 wraps it */
        "ERR Error running script (call to f_1b9c...): @user_script:1: "
        "@user_script: 1: -READONLY You can't write against a read only "
        "replica. ",
        "ERR Error running script (call to f_1b9c...): @user_script:1: "
        "@user_script: 1: -OOM command not allowed when used memory > "
        "'maxmemory'. ",
        /* the code alone */
        "LOADING",
    };
    static const char *const permanent[] = {
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "ERR unknown command 'FOO'",
        "NOSCRIPT No matching script. Please use EVAL.",
        "NOAUTH Authentication required.",
        "WRONGPASS invalid username-password pair",
        "ERR Error running script (call to f_1b9c...): @user_script:1: "
        "@user_script: 1: -WRONGTYPE Operation against a key",
        /* a code is a whole word */
        "LOADINGX not a state",
        "OOMPH",
        "readonly lower case is not a Redis code",
        " READONLY leading space",
        "",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(unavailable) / sizeof(*unavailable); i++) {
        rw_err_t e = rw_redis_classify_reply(unavailable[i]);

        if (e != RW_ERR_REDIS_UNAVAILABLE)
            fail_msg("\"%s\" -> %s", unavailable[i], rw_err_name(e));
        assert_true(rw_err_is_retriable(e));
    }
    for (size_t i = 0; i < sizeof(permanent) / sizeof(*permanent); i++) {
        rw_err_t e = rw_redis_classify_reply(permanent[i]);

        if (e != RW_ERR_REDIS_REPLY)
            fail_msg("\"%s\" -> %s", permanent[i], rw_err_name(e));
        assert_false(rw_err_is_retriable(e));
    }
    assert_int_equal(rw_redis_classify_reply(NULL), RW_ERR_REDIS_REPLY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_host_port),
        cmocka_unit_test(test_password_and_db),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_unix_socket),
        cmocka_unit_test(test_rediss_is_refused),
        cmocka_unit_test(test_bad_ports),
        cmocka_unit_test(test_other_bad_urls),
        cmocka_unit_test(test_errors_never_show_the_password),
        cmocka_unit_test(test_lock_key),
        cmocka_unit_test(test_lock_renew_due),
        cmocka_unit_test(test_new_refuses_without_connecting),
        cmocka_unit_test(test_lock_argument_checks),
        cmocka_unit_test(test_classify_reply_unavailable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
