/* Opaque tokens: refresh tokens and API keys are random, well-formed and
 * stored as SHA-256; comparisons are constant-time and exact. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "auth_test_util.h"
#include "reelway/auth.h"
#include "reelway/error.h"

static void refresh_tokens(void **state)
{
    char a[RW_TOKEN_LEN + 1], b[RW_TOKEN_LEN + 1];
    uint8_t raw[40];
    size_t len = 0;
    (void)state;

    assert_int_equal(rw_token_generate(a), 0);
    assert_int_equal(rw_token_generate(b), 0);
    assert_int_equal(strlen(a), RW_TOKEN_LEN);
    assert_string_not_equal(a, b);
    assert_int_equal(rw_b64url_decode(raw, sizeof raw, &len, a, strlen(a)), 0);
    assert_int_equal(len, 32);
}

static void token_hash(void **state)
{
    char h[RW_TOKEN_HASH_LEN + 1], h2[RW_TOKEN_HASH_LEN + 1];
    char t[RW_TOKEN_LEN + 1];
    (void)state;

    /* FIPS 180-2 test vector. */
    assert_int_equal(rw_token_hash("abc", 3, h), 0);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(rw_token_generate(t), 0);
    assert_int_equal(rw_token_hash(t, strlen(t), h), 0);
    assert_int_equal(rw_token_hash(t, strlen(t), h2), 0);
    assert_string_equal(h, h2);
    assert_null(strstr(h, t));
}

static void api_keys(void **state)
{
    char key[RW_APIKEY_MAX + 1], other[RW_APIKEY_MAX + 1];
    (void)state;

    assert_int_equal(rw_apikey_generate("rwk", key, sizeof key), 0);
    assert_int_equal(strlen(key), 3 + 1 + RW_TOKEN_LEN);
    assert_int_equal(strncmp(key, "rwk_", 4), 0);
    assert_int_equal(rw_apikey_check_format(key, strlen(key)), 0);
    assert_int_equal(rw_apikey_generate("rwk", other, sizeof other), 0);
    assert_string_not_equal(key, other);
    assert_int_equal(rw_apikey_generate("0123456789abcdef", other, sizeof other), 0);
    assert_int_equal(rw_apikey_check_format(other, strlen(other)), 0);

    assert_int_equal(rw_apikey_generate("RW", other, sizeof other), -EINVAL);
    assert_int_equal(rw_apikey_generate("", other, sizeof other), -EINVAL);
    assert_int_equal(rw_apikey_generate("a_b", other, sizeof other), -EINVAL);
    assert_int_equal(rw_apikey_generate("0123456789abcdefg", other, sizeof other), -EINVAL);
    assert_int_equal(rw_apikey_generate(NULL, other, sizeof other), -EINVAL);
    assert_int_equal(rw_apikey_generate("rwk", other, 3 + 1 + RW_TOKEN_LEN), -EINVAL);

    /* Shape checks before any lookup. */
    char *bad;
    bad = strdup(key);
    bad[0] = 'R';
    assert_int_equal(rw_apikey_check_format(bad, strlen(bad)), RW_EPARSE);
    free(bad);
    bad = strdup(key);
    bad[3] = '-';
    assert_int_equal(rw_apikey_check_format(bad, strlen(bad)), RW_EPARSE);
    free(bad);
    bad = strdup(key);
    bad[10] = '*';
    assert_int_equal(rw_apikey_check_format(bad, strlen(bad)), RW_EPARSE);
    free(bad);
    bad = tu_printf("%sA", key);
    assert_int_equal(rw_apikey_check_format(bad, strlen(bad)), RW_EPARSE);
    free(bad);
    assert_int_equal(rw_apikey_check_format(key, strlen(key) - 1), RW_EPARSE);
    /* 43 characters carry 258 bits: the last one's low 2 bits must be zero. */
    bad = strdup(key);
    bad[strlen(bad) - 1] = 'B';
    assert_int_equal(rw_apikey_check_format(bad, strlen(bad)), RW_EPARSE);
    free(bad);
    assert_int_equal(rw_apikey_check_format("", 0), RW_EPARSE);
    assert_int_equal(rw_apikey_check_format(NULL, 0), RW_EPARSE);
}

static void constant_time_compare(void **state)
{
    (void)state;
    assert_int_equal(rw_ct_equal("abcdef", "abcdef", 6), 1);
    assert_int_equal(rw_ct_equal("abcdef", "abcdeg", 6), 0);
    assert_int_equal(rw_ct_equal("xbcdef", "abcdef", 6), 0);
    assert_int_equal(rw_ct_equal("a", "b", 0), 1);
    assert_int_equal(rw_ct_streq("token", "token"), 1);
    assert_int_equal(rw_ct_streq("token", "tokens"), 0);
    assert_int_equal(rw_ct_streq("tokens", "token"), 0);
    assert_int_equal(rw_ct_streq("", ""), 1);
    assert_int_equal(rw_ct_streq("Token", "token"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refresh_tokens),
        cmocka_unit_test(token_hash),
        cmocka_unit_test(api_keys),
        cmocka_unit_test(constant_time_compare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
