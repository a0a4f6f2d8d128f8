/* Passwords: Argon2id hash/verify/rehash through libsodium, and the policy's
 * field errors. Hashing uses small costs except in one default-cost case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "reelway/auth.h"
#include "reelway/error.h"

static const rw_password_params_t cheap = {.opslimit = 1, .memlimit = 8 * 1024 * 1024};
static const rw_password_params_t dearer = {.opslimit = 2, .memlimit = 8 * 1024 * 1024};

static void hash_and_verify(void **state)
{
    static const char pw[] = "correct horse battery staple";
    char h1[RW_PASSWORD_HASH_MAX], h2[RW_PASSWORD_HASH_MAX];
    (void)state;

    assert_int_equal(rw_password_hash(h1, pw, strlen(pw), &cheap), 0);
    /* The parameters travel with the hash. */
    assert_int_equal(strncmp(h1, "$argon2id$v=19$m=8192,t=1,p=1$", 30), 0);
    assert_int_equal(rw_password_hash(h2, pw, strlen(pw), &cheap), 0);
    assert_string_not_equal(h1, h2); /* a fresh salt every time */
    assert_int_equal(rw_password_verify(h1, pw, strlen(pw)), 0);
    assert_int_equal(rw_password_verify(h2, pw, strlen(pw)), 0);
}

static void wrong_password(void **state)
{
    static const char pw[] = "correct horse battery staple";
    char h[RW_PASSWORD_HASH_MAX];
    char longer[RW_PASSWORD_MAX_BYTES + 2];
    (void)state;

    assert_int_equal(rw_password_hash(h, pw, strlen(pw), &cheap), 0);
    assert_int_equal(rw_password_verify(h, "correct horse battery stapler", 29), RW_EAUTH);
    assert_int_equal(rw_password_verify(h, "Correct horse battery staple", 28), RW_EAUTH);
    assert_int_equal(rw_password_verify(h, pw, strlen(pw) - 1), RW_EAUTH);
    assert_int_equal(rw_password_verify(h, "", 0), RW_EAUTH);
    memset(longer, 'a', sizeof longer);
    assert_int_equal(rw_password_verify(h, longer, sizeof longer), RW_EAUTH);
    assert_int_equal(rw_password_hash(h, longer, sizeof longer, &cheap), RW_ELIMIT);
    /* Bytes after the given length are not part of the password. */
    char h2[RW_PASSWORD_HASH_MAX];
    assert_int_equal(rw_password_hash(h2, "secret\0tail", 11, &cheap), 0);
    assert_int_equal(rw_password_verify(h2, "secret\0tail", 11), 0);
    assert_int_equal(rw_password_verify(h2, "secret", 6), RW_EAUTH);
}

static void malformed_hashes(void **state)
{
    static const char *const bad[] = {
        "",
        "plaintext",
        "$2b$10$abcdefghijklmnopqrstuuJ3v1y7jN5h9h0PZKh7PZ3o1W8i2K6u", /* bcrypt */
        "$argon2id$",
        "$argon2id$v=19$m=8192,t=1,p=1$",
        "$argon2id$v=19$m=x,t=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA",
    };
    (void)state;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(rw_password_verify(bad[i], "pw", 2), RW_EPARSE);
        assert_int_equal(rw_password_needs_rehash(bad[i], NULL), RW_EPARSE);
    }
    assert_int_equal(rw_password_verify(NULL, "pw", 2), RW_EPARSE);
    /* Out-of-range cost parameters are refused before any work. */
    char h[RW_PASSWORD_HASH_MAX];
    rw_password_params_t tiny = {.opslimit = 1, .memlimit = 1024};
    assert_int_equal(rw_password_hash(h, "pw", 2, &tiny), -EINVAL);
}

static void needs_rehash(void **state)
{
    char h[RW_PASSWORD_HASH_MAX], legacy[crypto_pwhash_STRBYTES];
    (void)state;

    assert_int_equal(rw_password_hash(h, "pw-one-two", 10, &cheap), 0);
    assert_int_equal(rw_password_needs_rehash(h, &cheap), 0);
    assert_int_equal(rw_password_needs_rehash(h, &dearer), 1);
    assert_int_equal(rw_password_needs_rehash(h, NULL), 1); /* the defaults are dearer */
    /* An Argon2i hash still verifies, and is always upgraded. */
    assert_int_equal(sodium_init() >= 0, 1);
    assert_int_equal(crypto_pwhash_str_alg(legacy, "pw-one-two", 10, 3, 8 * 1024 * 1024,
                                           crypto_pwhash_ALG_ARGON2I13),
                     0);
    assert_int_equal(strncmp(legacy, "$argon2i$", 9), 0);
    assert_int_equal(rw_password_verify(legacy, "pw-one-two", 10), 0);
    assert_int_equal(rw_password_verify(legacy, "pw-one-tw0", 10), RW_EAUTH);
    assert_int_equal(rw_password_needs_rehash(legacy, &cheap), 1);
}

/* One hash at the default (interactive) cost: 64 MiB, 2 passes. */
static void default_cost(void **state)
{
    char h[RW_PASSWORD_HASH_MAX];
    (void)state;

    assert_int_equal(rw_password_hash(h, "Tr0ub4dor&3x", 12, NULL), 0);
    assert_int_equal(strncmp(h, "$argon2id$v=19$m=65536,t=2,p=1$", 31), 0);
    assert_int_equal(rw_password_verify(h, "Tr0ub4dor&3x", 12), 0);
    assert_int_equal(rw_password_needs_rehash(h, NULL), 0);
}

/* Runs the policy and compares the failed codes, in order, with want (a
 * space-separated list; "" for an acceptable password). */
static void check(const char *pw, size_t len, const char *handle, const char *email,
                  const char *want)
{
    rw_field_error_t errs[RW_PASSWORD_RULES];
    char got[512] = "";
    size_t n = rw_password_check(pw, len, handle, email, errs, RW_PASSWORD_RULES);

    for (size_t i = 0; i < n; i++) {
        assert_string_equal(errs[i].field, "password");
        assert_true(strlen(errs[i].message) > 10);
        if (i > 0)
            strcat(got, " ");
        strcat(got, errs[i].code);
    }
    assert_string_equal(got, want);
}

static void policy(void **state)
{
    char too_long[RW_PASSWORD_MAX_BYTES + 1];
    char max_ok[RW_PASSWORD_MAX_BYTES];
    (void)state;

    check("Reels4ever!", 11, "ana", "ana@example.com", "");
    check("correct horse battery staple", 28, NULL, NULL, "");
    check("\xc3\xa9t\xc3\xa9 \xc3\xa0 la plage", 17, NULL, NULL, ""); /* UTF-8, 14 chars */
    check("Short1!", 7, NULL, NULL, "password_too_short");
    /* Ten characters in 20 bytes is long enough: characters are counted, not bytes. */
    check("\xd0\xbf\xd0\xb0\xd1\x80\xd0\xbe\xd0\xbb\xd1\x8c\xd0\xbc\xd0\xbe\xd0\xb9\x31\x32", 20,
          NULL, NULL, "");
    check("abcdefghijkmnop", 15, NULL, NULL, "password_one_class");
    check("aaaaaaaaaaaa", 12, NULL, NULL, "password_one_class password_repetitive");
    check("abababab12", 10, NULL, NULL, "password_repetitive");
    check("AbCdEfGhIj", 10, NULL, NULL, "password_sequence");
    check("9876543210", 10, NULL, NULL, "password_one_class password_sequence password_common");
    check("Password123!", 12, NULL, NULL, "password_common");
    check("QWERTY2024", 10, NULL, NULL, "password_common");
    check("1234567890!", 11, NULL, NULL, "password_common");
    check("xXmarcusXx99", 12, "Marcus", NULL, "password_contains_identity");
    check("my-jdoe-pass-77", 15, NULL, "JDoe@example.com", "password_contains_identity");
    check("ok-ab-pass-77", 13, "ab", "ab@x.io", ""); /* identities under 3 bytes ignored */
    check("tab\there-is-bad1", 16, NULL, NULL, "password_invalid_chars");
    check("bad\xff utf8 here 1", 16, NULL, NULL, "password_invalid_chars");
    check("overlong \xc0\xaf here1", 16, NULL, NULL, "password_invalid_chars");
    check("nul\0inside-pass1", 16, NULL, NULL, "password_invalid_chars");
    check("", 0, NULL, NULL, "password_too_short password_one_class password_repetitive");
    memset(too_long, 'a', sizeof too_long);
    check(too_long, sizeof too_long, NULL, NULL, "password_too_long");
    for (size_t i = 0; i < sizeof max_ok; i++)
        max_ok[i] = "aB3$xY7!"[i % 8];
    check(max_ok, sizeof max_ok, NULL, NULL, "");

    /* A small errs array gets the first failures; the count is still complete. */
    rw_field_error_t one;
    assert_int_equal(rw_password_check("aaaaaaaaaaaa", 12, NULL, NULL, &one, 1), 2);
    assert_string_equal(one.code, "password_one_class");
    assert_int_equal(rw_password_check("aaaaaaaaaaaa", 12, NULL, NULL, NULL, 0), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hash_and_verify),  cmocka_unit_test(wrong_password),
        cmocka_unit_test(malformed_hashes), cmocka_unit_test(needs_rehash),
        cmocka_unit_test(default_cost),     cmocka_unit_test(policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
