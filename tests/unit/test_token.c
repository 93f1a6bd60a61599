/*
 * test_token: rw_token without a database: SHA-256 against the FIPS 180-2
 * vectors, token generation (form, uniqueness), the well-formedness and
 * name rules, the constant-time comparison, and the role table (each role
 * may do what the lower ones may, nothing more; no token, nothing).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "rw_token.h"

static void test_hash_vectors(void **state)
{
    static const struct {
        const char *in, *want;
    } vectors[] = {
        {"",
         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc",
         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    char hex[RW_TOKEN_HASH_LEN + 1];

    (void)state;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        assert_int_equal(
            rw_token_hash(vectors[i].in, hex, sizeof(hex), NULL, 0), RW_OK);
        assert_string_equal(hex, vectors[i].want);
    }
    /* a buffer without room for the digest and its terminator is refused */
    assert_int_equal(rw_token_hash("abc", hex, RW_TOKEN_HASH_LEN, NULL, 0),
                     RW_ERR_INVALID_ARG);
}

static void test_generate(void **state)
{
    char a[RW_TOKEN_LEN + 1], b[RW_TOKEN_LEN + 1];
    char ha[RW_TOKEN_HASH_LEN + 1], hb[RW_TOKEN_HASH_LEN + 1];

    (void)state;
    assert_int_equal(rw_token_generate(a, sizeof(a), NULL, 0), RW_OK);
    assert_int_equal(rw_token_generate(b, sizeof(b), NULL, 0), RW_OK);
    assert_int_equal(strlen(a), RW_TOKEN_LEN);
    assert_true(rw_token_well_formed(a));
    assert_true(rw_token_well_formed(b));
    assert_string_not_equal(a, b);
    rw_token_hash(a, ha, sizeof(ha), NULL, 0);
    rw_token_hash(b, hb, sizeof(hb), NULL, 0);
    assert_string_not_equal(ha, hb);
    assert_int_equal(rw_token_generate(a, RW_TOKEN_LEN, NULL, 0),
                     RW_ERR_INVALID_ARG);
}

static void test_well_formed(void **state)
{
    char t[RW_TOKEN_LEN + 2];

    (void)state;
    memset(t, 'a', sizeof(t));
    memcpy(t, RW_TOKEN_PREFIX, 4);
    t[RW_TOKEN_LEN] = '\0';
    assert_true(rw_token_well_formed(t));
    t[10] = 'A'; /* upper-case hex is not what we issue */
    assert_false(rw_token_well_formed(t));
    t[10] = 'g';
    assert_false(rw_token_well_formed(t));
    t[10] = 'a';
    t[0] = 'x';
    assert_false(rw_token_well_formed(t));
    t[0] = 'r';
    t[RW_TOKEN_LEN - 1] = '\0'; /* one short */
    assert_false(rw_token_well_formed(t));
    t[RW_TOKEN_LEN - 1] = 'a';
    t[RW_TOKEN_LEN] = 'a'; /* one long */
    t[RW_TOKEN_LEN + 1] = '\0';
    assert_false(rw_token_well_formed(t));
    assert_false(rw_token_well_formed(NULL));
    assert_false(rw_token_well_formed(""));
}

static void test_names(void **state)
{
    char long_name[70];

    (void)state;
    assert_true(rw_token_name_ok("ci"));
    assert_true(rw_token_name_ok("alice@example.org"));
    assert_true(rw_token_name_ok("deploy-bot_2.prod"));
    assert_false(rw_token_name_ok(""));
    assert_false(rw_token_name_ok(NULL));
    assert_false(rw_token_name_ok("-leading"));
    assert_false(rw_token_name_ok("has space"));
    assert_false(rw_token_name_ok("quote\""));
    assert_false(rw_token_name_ok("new\nline"));
    memset(long_name, 'a', sizeof(long_name));
    long_name[64] = '\0';
    assert_true(rw_token_name_ok(long_name));
    long_name[64] = 'a';
    long_name[65] = '\0';
    assert_false(rw_token_name_ok(long_name));
}

static void test_equal(void **state)
{
    (void)state;
    assert_true(rw_token_equal("abcdef", "abcdef", 6));
    assert_false(rw_token_equal("abcdef", "abcdeF", 6));
    assert_false(rw_token_equal("Xbcdef", "abcdef", 6));
    /* only n bytes count */
    assert_true(rw_token_equal("abcX", "abcY", 3));
    assert_true(rw_token_equal("", "", 0));
}

static void test_roles(void **state)
{
    static const struct {
        rw_role_t have, need;
        bool allowed;
    } table[] = {
        {RW_ROLE_VIEWER, RW_ROLE_VIEWER, true},
        {RW_ROLE_VIEWER, RW_ROLE_OPERATOR, false},
        {RW_ROLE_VIEWER, RW_ROLE_ADMIN, false},
        {RW_ROLE_OPERATOR, RW_ROLE_VIEWER, true},
        {RW_ROLE_OPERATOR, RW_ROLE_OPERATOR, true},
        {RW_ROLE_OPERATOR, RW_ROLE_ADMIN, false},
        {RW_ROLE_ADMIN, RW_ROLE_VIEWER, true},
        {RW_ROLE_ADMIN, RW_ROLE_OPERATOR, true},
        {RW_ROLE_ADMIN, RW_ROLE_ADMIN, true},
        {RW_ROLE_NONE, RW_ROLE_VIEWER, false},
        {RW_ROLE_NONE, RW_ROLE_NONE, false},
        {RW_ROLE__COUNT, RW_ROLE_VIEWER, false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        assert_int_equal(rw_role_allows(table[i].have, table[i].need),
                         table[i].allowed);
    assert_int_equal(rw_role_parse("viewer"), RW_ROLE_VIEWER);
    assert_int_equal(rw_role_parse("operator"), RW_ROLE_OPERATOR);
    assert_int_equal(rw_role_parse("admin"), RW_ROLE_ADMIN);
    assert_int_equal(rw_role_parse("none"), -1);
    assert_int_equal(rw_role_parse("Admin"), -1);
    assert_int_equal(rw_role_parse(NULL), -1);
    for (int r = RW_ROLE_VIEWER; r < RW_ROLE__COUNT; r++)
        assert_int_equal(rw_role_parse(rw_role_name((rw_role_t)r)), r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_vectors), cmocka_unit_test(test_generate),
        cmocka_unit_test(test_well_formed),  cmocka_unit_test(test_names),
        cmocka_unit_test(test_equal),        cmocka_unit_test(test_roles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
