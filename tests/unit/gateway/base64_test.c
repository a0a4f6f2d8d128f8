/* Base64 against OpenSSL's codec, and the strict decoder's refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"

static void encode_matches_openssl_and_round_trips(void **state)
{
    (void)state;
    unsigned char src[300], back[300];
    char ours[404], theirs[404];
    char why[128];

    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (unsigned char)(i * 151 + 7);
    for (size_t n = 0; n <= sizeof(src); n++) {
        size_t len = rw__base64_encode(ours, src, n), out_len = 12345;
        int want = EVP_EncodeBlock((unsigned char *)theirs, src, (int)n);
        assert_int_equal(len, (size_t)want);
        assert_int_equal(len, rw__base64_encoded_len(n));
        assert_memory_equal(ours, theirs, len);
        assert_int_equal(rw__base64_decode(back, &out_len, ours, len, why, sizeof(why)), 0);
        assert_int_equal(out_len, n);
        assert_memory_equal(back, src, n);
        /* And without its padding. */
        while (len > 0 && ours[len - 1] == '=')
            len--;
        assert_int_equal(rw__base64_decode(back, &out_len, ours, len, why, sizeof(why)), 0);
        assert_int_equal(out_len, n);
        assert_memory_equal(back, src, n);
    }
}

static void known_vectors(void **state)
{
    (void)state;
    /* RFC 4648, section 10. */
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    char out[16];
    unsigned char back[16];
    size_t n;
    char why[64];
    for (int i = 0; i < 7; i++) {
        size_t len = rw__base64_encode(out, plain[i], strlen(plain[i]));
        assert_int_equal(len, strlen(coded[i]));
        assert_memory_equal(out, coded[i], len);
        assert_int_equal(rw__base64_decode(back, &n, coded[i], strlen(coded[i]), why, sizeof(why)),
                         0);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(back, plain[i], n);
    }
}

static void malformed_input_is_refused(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *why;
    } cases[] = {
        {"Zg=", "bad padding at offset 2"},
        {"Zg===", "bad padding"},
        {"====", "bad padding"},
        {"=", "bad padding"},
        {"Z", "truncated group at offset 0"},
        {"Zm9vY", "truncated group at offset 4"},
        {"Zm9vY===", "bad padding"},
        {"Zg==Zg==", "misplaced padding at offset 2"},
        {"Zm=v", "misplaced padding at offset 2"},
        {"Zm9v\n", "invalid character 0x0a at offset 4"},
        {"Zm 9v", "invalid character 0x20 at offset 2"},
        {"Zm9-", "invalid character 0x2d at offset 3"},
        {"Zm9_", "invalid character 0x5f at offset 3"},
        {"Zh==", "non-zero trailing bits at offset 1"},
        {"Zm9=", "non-zero trailing bits at offset 2"},
        {"Zm\xc3\xa9", "invalid character 0xc3 at offset 2"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char out[16];
        size_t n = 777;
        char why[128] = "";
        int err = rw__base64_decode(out, &n, cases[i].in, strlen(cases[i].in), why, sizeof(why));
        if (err != -1 || strstr(why, cases[i].why) == NULL)
            fail_msg("\"%s\": expected -1 with \"%s\", got %d with \"%s\"", cases[i].in,
                     cases[i].why, err, why);
        assert_int_equal(n, 777);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encode_matches_openssl_and_round_trips),
        cmocka_unit_test(known_vectors),
        cmocka_unit_test(malformed_input_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
