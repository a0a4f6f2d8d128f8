/* base64url: RFC 4648 vectors, agreement with OpenSSL's base64 on every length,
 * and strict rejection of padding, foreign characters and impossible lengths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "auth_test_util.h"
#include "reelway/auth.h"
#include "reelway/error.h"

static void rfc4648_vectors(void **state)
{
    static const struct {
        const char *plain, *encoded;
    } v[] = {
        {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
        {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
    };
    char enc[32];
    uint8_t dec[32];
    size_t len;

    (void)state;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        size_t n = strlen(v[i].plain);
        assert_int_equal(rw_b64url_encode(enc, sizeof enc, (const uint8_t *)v[i].plain, n),
                         strlen(v[i].encoded));
        assert_string_equal(enc, v[i].encoded);
        assert_int_equal(rw_b64url_encoded_len(n), strlen(v[i].encoded));
        assert_int_equal(
            rw_b64url_decode(dec, sizeof dec, &len, v[i].encoded, strlen(v[i].encoded)), 0);
        assert_int_equal(len, n);
        assert_memory_equal(dec, v[i].plain, n);
    }
}

/* The url-safe alphabet: bytes that give '+' and '/' in standard base64. */
static void url_safe_alphabet(void **state)
{
    static const uint8_t bytes[] = {0xfb, 0xff, 0xfe};
    char enc[8];
    uint8_t dec[8];
    size_t len;

    (void)state;
    rw_b64url_encode(enc, sizeof enc, bytes, sizeof bytes);
    assert_string_equal(enc, "-__-");
    assert_int_equal(rw_b64url_decode(dec, sizeof dec, &len, "-__-", 4), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(dec, bytes, 3);
}

/* Every length 0..200 of random bytes: same text as OpenSSL's base64 after
 * translation, and decoding gives the bytes back. */
static void agrees_with_openssl(void **state)
{
    uint8_t src[200], dec[200];
    char enc[300];
    size_t len;

    (void)state;
    for (size_t n = 0; n <= sizeof src; n++) {
        assert_int_equal(RAND_bytes(src, (int)sizeof src), 1);
        char *ref = tu_b64(src, n);
        assert_int_equal(rw_b64url_encode(enc, sizeof enc, src, n), strlen(ref));
        assert_string_equal(enc, ref);
        assert_true(rw_b64url_decoded_max(strlen(enc)) >= n);
        assert_int_equal(rw_b64url_decode(dec, sizeof dec, &len, enc, strlen(enc)), 0);
        assert_int_equal(len, n);
        assert_memory_equal(dec, src, n);
        free(ref);
    }
}

static void rejects_invalid(void **state)
{
    static const char *const bad[] = {
        "Zg==",           /* padding */
        "Zm8=",           /* padding */
        "Zm9v====",       /* padding */
        "Zm9v+A",         /* standard alphabet */
        "Zm9v/A",         /* standard alphabet */
        " Zg",            /* whitespace */
        "Zg\n",           /* newline */
        "Zm9vY",          /* 4k+1 characters: impossible */
        "Z",              /* 4k+1 characters: impossible */
        "Zh",             /* non-zero trailing bits: "Zg" is the only spelling of "f" */
        "Zm9",            /* non-zero trailing bits: "Zm8" */
        "Zm9v*mFy",       /* foreign character */
        "Zm9vYm\xc3\xa9", /* non-ASCII */
    };
    uint8_t dec[32];
    size_t len = 99;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(rw_b64url_decode(dec, sizeof dec, &len, bad[i], strlen(bad[i])),
                         RW_EPARSE);
        assert_int_equal(len, 0);
    }
    /* An embedded NUL is a foreign character, not the end of the input. */
    assert_int_equal(rw_b64url_decode(dec, sizeof dec, &len, "Zm\0v", 4), RW_EPARSE);
}

static void refuses_small_buffers(void **state)
{
    char enc[4];
    uint8_t dec[2];
    size_t len;

    (void)state;
    /* "foo" needs 4 characters and a NUL. */
    assert_int_equal(rw_b64url_encode(enc, sizeof enc, (const uint8_t *)"foo", 3), -EINVAL);
    assert_int_equal(rw_b64url_decode(dec, sizeof dec, &len, "Zm9v", 4), -EINVAL);
    char *s = rw_b64url_encode_alloc((const uint8_t *)"foobar", 6);
    assert_string_equal(s, "Zm9vYmFy");
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc4648_vectors),       cmocka_unit_test(url_safe_alphabet),
        cmocka_unit_test(agrees_with_openssl),   cmocka_unit_test(rejects_invalid),
        cmocka_unit_test(refuses_small_buffers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
