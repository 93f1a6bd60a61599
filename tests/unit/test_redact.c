/*
 * test_redact: every redaction rule of rw_redact.h, one test per rule:
 * literal secrets in their plain, base64 and URL-encoded forms and split
 * by line breaks, the minimum length, header and bearer credentials,
 * key/value pairs, PEM private keys (whole and cut), AWS key ids,
 * well-known token prefixes and JWTs, extra patterns, overlapping ranges,
 * and what must be left alone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rw_redact.h"

/* Redacts text with r (NULL = built-in rules only) and returns the copy. */
static char *red(const rw_redactor_t *r, const char *text, size_t *n)
{
    size_t out_len = 0;
    char *out = rw_redact(r, text, strlen(text), &out_len, n);

    assert_non_null(out);
    assert_int_equal(out_len, strlen(out));
    return out;
}

static void expect(const rw_redactor_t *r, const char *in, const char *want)
{
    char *out = red(r, in, NULL);

    if (strcmp(out, want) != 0)
        fail_msg("redact(\"%s\")\n  got  \"%s\"\n  want \"%s\"", in, out, want);
    free(out);
}

static rw_redactor_t *with_secret(const char *s)
{
    rw_redactor_t *r = rw_redactor_new();
    bool added = false;

    assert_non_null(r);
    assert_int_equal(rw_redactor_add_secret(r, s, strlen(s), &added), RW_OK);
    assert_true(added);
    return r;
}

static void test_plain_secret(void **state)
{
    rw_redactor_t *r = with_secret("s3cr3t-Value-42");
    size_t n = 0;
    char *out;

    (void)state;
    expect(r, "using s3cr3t-Value-42 now", "using [REDACTED] now");
    expect(r, "s3cr3t-Value-42", "[REDACTED]");
    expect(r, "a s3cr3t-Value-42 b s3cr3t-Value-42 c",
           "a [REDACTED] b [REDACTED] c");
    out = red(r, "x s3cr3t-Value-42 y s3cr3t-Value-42", &n);
    assert_int_equal(n, 2);
    free(out);
    /* a prefix of the secret is not the secret */
    expect(r, "s3cr3t-Value-4 only", "s3cr3t-Value-4 only");
    rw_redactor_free(r);
}

static void test_base64_forms(void **state)
{
    /* base64, padded and not */
    rw_redactor_t *r = with_secret("correct horse battery?>");

    (void)state;
    expect(r, "b64 Y29ycmVjdCBob3JzZSBiYXR0ZXJ5Pz4= end", "b64 [REDACTED] end");
    expect(r, "url Y29ycmVjdCBob3JzZSBiYXR0ZXJ5Pz4 end", "url [REDACTED] end");
    rw_redactor_free(r);
    r = with_secret("\xfb\xff\xbe-binary-ish");
    /* std: +/ ; url-safe: -_ */
    expect(r, "std +/++LWJpbmFyeS1pc2g= x", "std [REDACTED] x");
    expect(r, "url -_--LWJpbmFyeS1pc2g x", "url [REDACTED] x");
    rw_redactor_free(r);
}

static void test_base64_at_any_offset(void **state)
{
    /* Basic/Docker auth: base64("bob:" + secret) and base64("alice:" +
     * secret); the secret starts 1 and 0 bytes after a 3-byte boundary */
    rw_redactor_t *r = with_secret("Tr0ub4dor&3-horse");
    char *out;

    (void)state;
    out = red(r, "auth Ym9iOlRyMHViNGRvciYzLWhvcnNl done", NULL);
    assert_null(strstr(out, "yMHViNGRvciYzLWhvcnNl"));
    assert_non_null(strstr(out, "[REDACTED]"));
    free(out);
    out = red(r, "auth YWxpY2U6VHIwdWI0ZG9yJjMtaG9yc2U= done", NULL);
    assert_null(strstr(out, "VHIwdWI0ZG9yJjMtaG9yc2"));
    free(out);
    out = red(r, "auth eDpUcjB1YjRkb3ImMy1ob3JzZXl6 done", NULL);
    assert_null(strstr(out, "UcjB1YjRkb3ImMy1ob3Jz"));
    assert_non_null(strstr(out, "[REDACTED]"));
    free(out);
    rw_redactor_free(r);
}

static void test_form_and_json_forms(void **state)
{
    rw_redactor_t *r = with_secret("my pass/word\"x");

    (void)state;
    expect(r, "body=my+pass%2Fword%22x&a=1", "body=[REDACTED]&a=1");
    expect(r, "q=my%20pass/word%22x", "q=[REDACTED]");
    expect(r, "{\"pw\":\"my pass/word\\\"x\"}", "{\"pw\":\"[REDACTED]\"}");
    rw_redactor_free(r);
}

static void test_url_encoded_forms(void **state)
{
    rw_redactor_t *r = with_secret("p@ss w/rd:&=long");

    (void)state;
    expect(r, "dsn=postgres://u:p%40ss%20w%2Frd%3A%26%3Dlong@h/db",
           "dsn=postgres://u:[REDACTED]@h/db");
    expect(r, "q=p%40ss%20w%2frd%3a%26%3dlong&x=1", "q=[REDACTED]&x=1");
    rw_redactor_free(r);
}

static void test_split_across_lines(void **state)
{
    rw_redactor_t *r = with_secret("ABCDEFGHIJKLMNOP");

    (void)state;
    expect(r, "tok ABCDEFGH\nIJKLMNOP tail", "tok [REDACTED]\n tail");
    expect(r, "tok ABCDEFGHIJ\r\nKLMNOP tail", "tok [REDACTED]\n tail");
    /* a break before the first byte is not part of the secret */
    expect(r, "x\nABCDEFGHIJKLMNOP", "x\n[REDACTED]");
    rw_redactor_free(r);
}

static void test_short_values_left_alone(void **state)
{
    rw_redactor_t *r = rw_redactor_new();
    bool added = true;

    (void)state;
    assert_int_equal(rw_redactor_add_secret(r, "main", 4, &added), RW_OK);
    assert_false(added);
    assert_int_equal(rw_redactor_add_secret(r, "1234567", 7, &added), RW_OK);
    assert_false(added);
    expect(r, "branch main on port 1234567", "branch main on port 1234567");
    rw_redactor_free(r);
}

static void test_overlapping_secrets(void **state)
{
    rw_redactor_t *r = with_secret("alpha-beta-gamma");
    bool added = false;
    size_t n = 0;
    char *out;

    (void)state;
    assert_int_equal(rw_redactor_add_secret(r, "beta-gamma-delta", 16, &added),
                     RW_OK);
    out = red(r, "[alpha-beta-gamma-delta]", &n);
    assert_string_equal(out, "[[REDACTED]]");
    assert_int_equal(n, 1);
    free(out);
    /* adjacent ranges merge into one mark */
    expect(r, "alpha-beta-gammabeta-gamma-delta!", "[REDACTED]!");
    rw_redactor_free(r);
}

static void test_authorization_header(void **state)
{
    (void)state;
    expect(NULL, "Authorization: Bearer abc.def-ghi_123456",
           "Authorization: Bearer [REDACTED]");
    expect(NULL, "-H 'authorization: Basic dXNlcjpwYXNzd29yZA==' -X",
           "-H 'authorization: Basic [REDACTED]' -X");
    expect(NULL, "\"Authorization\":\"Token 0123456789abcdef\"",
           "\"Authorization\":\"Token [REDACTED]\"");
    expect(NULL, "curl -H \"bearer 0123456789abcdef0\"",
           "curl -H \"bearer [REDACTED]\"");
    /* the word alone, or a short value, is prose */
    expect(NULL, "the bearer of bad news", "the bearer of bad news");
}

static void test_key_value_pairs(void **state)
{
    (void)state;
    expect(NULL, "password=hunter2 user=bob", "password=[REDACTED] user=bob");
    expect(NULL, "DB_PASSWORD: 'x y z'", "DB_PASSWORD: '[REDACTED]'");
    expect(NULL, "{\"client_secret\": \"abc\", \"id\": 1}",
           "{\"client_secret\": \"[REDACTED]\", \"id\": 1}");
    expect(NULL, "GITHUB_TOKEN=ghx123&next=1",
           "GITHUB_TOKEN=[REDACTED]&next=1");
    expect(NULL, "api-key: k1;", "api-key: [REDACTED];");
    expect(NULL, "SECRET=s ", "SECRET=[REDACTED] ");
    /* harmless values and names that merely contain a keyword */
    expect(NULL, "password: null token=*** secret=true",
           "password: null token=*** secret=true");
    expect(NULL, "tokens=5 password_file=/run/pw secretary=ann",
           "tokens=5 password_file=/run/pw secretary=ann");
    /* what build tools print when no secret follows */
    expect(NULL, "token: 3 remaining; Checking secret: found",
           "token: 3 remaining; Checking secret: found");
    expect(NULL, "generating passphrase: skipped",
           "generating passphrase: skipped");
}

static void test_pem_private_key(void **state)
{
    static const char whole[] = "before\n"
                                "-----BEGIN RSA PRIVATE KEY-----\n"
                                "MIIEowIBAAKCAQEA\n"
                                "abcdefghijklmnop\n"
                                "-----END RSA PRIVATE KEY-----\n"
                                "after";
    static const char cut[] = "x\n-----BEGIN PRIVATE KEY-----\nMIIE\nabc";

    (void)state;
    expect(NULL, whole, "before\n[REDACTED]\n\n\n\nafter");
    expect(NULL, cut, "x\n[REDACTED]\n\n");
    /* a certificate is public */
    expect(NULL, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
           "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----");
}

static void test_aws_access_key(void **state)
{
    (void)state;
    expect(NULL, "key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED] used");
    expect(NULL, "ASIAABCDEFGHIJKLMNOP", "[REDACTED]");
    /* too short, lower case, or inside a longer word */
    expect(NULL,
           "AKIAIOSFODNN7EXAMPL AKIAiosfodnn7example XAKIAIOSFODNN7EXAMPLE",
           "AKIAIOSFODNN7EXAMPL AKIAiosfodnn7example XAKIAIOSFODNN7EXAMPLE");
}

static void test_token_prefixes(void **state)
{
    (void)state;
    expect(NULL, "ghp_0123456789abcdefghij0123 ok", "[REDACTED] ok");
    expect(NULL, "glpat-abcdefghij0123456789", "[REDACTED]");
    expect(NULL, "xoxb-1234567890-abc", "[REDACTED]");
    expect(NULL, "sk_live_0123456789abcdef", "[REDACTED]");
    expect(NULL, "AIzaSyA1234567890abcdefghijklmnopqrstuv", "[REDACTED]");
    expect(NULL, "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abcdefghijkl x",
           "jwt [REDACTED] x");
    /* prefixes alone are words */
    expect(NULL, "ghp_ short xoxb- eyJ", "ghp_ short xoxb- eyJ");
}

static void test_extra_patterns(void **state)
{
    rw_redactor_t *r = rw_redactor_new();
    char errstr[256] = "";

    (void)state;
    assert_int_equal(rw_redactor_add_patterns(r, "sess-[0-9]{6}\n\nAPP[A-Z]+\n",
                                              errstr, sizeof(errstr)),
                     RW_OK);
    expect(r, "id sess-123456 and APPKEY", "id [REDACTED] and [REDACTED]");
    assert_int_equal(
        rw_redactor_add_pattern(r, "([a-z", errstr, sizeof(errstr)),
        RW_ERR_INVALID_ARG);
    assert_non_null(strstr(errstr, "([a-z"));
    rw_redactor_free(r);
}

static void test_nothing_to_do(void **state)
{
    static const char log[] = "Step 3/9 : RUN composer install\n"
                              " ---> Running in 5d2b3a\nDone in 12.3s\n";
    size_t n = 7;
    char *out;

    (void)state;
    out = red(NULL, log, &n);
    assert_string_equal(out, log);
    assert_int_equal(n, 0);
    free(out);
    out = rw_redact(NULL, "", 0, NULL, NULL);
    assert_non_null(out);
    assert_string_equal(out, "");
    free(out);
}

static void test_nul_bytes_kept(void **state)
{
    rw_redactor_t *r = with_secret("0123456789");
    static const char in[] = "a\0b 0123456789 c";
    size_t out_len = 0;
    char *out;

    (void)state;
    out = rw_redact(r, in, sizeof(in) - 1, &out_len, NULL);
    assert_non_null(out);
    assert_int_equal(out_len, 3 + 1 + strlen(RW_REDACT_MARK) + 2);
    assert_memory_equal(out, "a\0b [REDACTED] c", out_len);
    free(out);
    rw_redactor_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_secret),
        cmocka_unit_test(test_base64_forms),
        cmocka_unit_test(test_base64_at_any_offset),
        cmocka_unit_test(test_form_and_json_forms),
        cmocka_unit_test(test_url_encoded_forms),
        cmocka_unit_test(test_split_across_lines),
        cmocka_unit_test(test_short_values_left_alone),
        cmocka_unit_test(test_overlapping_secrets),
        cmocka_unit_test(test_authorization_header),
        cmocka_unit_test(test_key_value_pairs),
        cmocka_unit_test(test_pem_private_key),
        cmocka_unit_test(test_aws_access_key),
        cmocka_unit_test(test_token_prefixes),
        cmocka_unit_test(test_extra_patterns),
        cmocka_unit_test(test_nothing_to_do),
        cmocka_unit_test(test_nul_bytes_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
