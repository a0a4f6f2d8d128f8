/* Passwords: Argon2id hashes through libsodium (parameters travel inside the
 * encoded string, so they can be raised later), and the sign-up policy. */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "reelway/auth.h"
#include "reelway/error.h"

static const char prefix_id[] = "$argon2id$";
static const char prefix_i[] = "$argon2i$";

/* Fills in defaults and checks libsodium's bounds. */
static int resolve_params(const rw_password_params_t *params, unsigned long long *ops, size_t *mem)
{
    *ops = params != NULL && params->opslimit != 0 ? params->opslimit
                                                   : crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE;
    *mem = params != NULL && params->memlimit != 0 ? params->memlimit
                                                   : crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE;
    if (*ops < crypto_pwhash_argon2id_OPSLIMIT_MIN || *ops > crypto_pwhash_argon2id_OPSLIMIT_MAX ||
        *mem < crypto_pwhash_argon2id_MEMLIMIT_MIN || *mem > crypto_pwhash_argon2id_MEMLIMIT_MAX)
        return -EINVAL;
    return 0;
}

/* Which Argon2 variant an encoded string claims to be: 'd' (id), 'i', or 0
 * when it is not an Argon2 string that fits libsodium's buffer. */
static char variant_of(const char *encoded)
{
    if (encoded == NULL || memchr(encoded, '\0', RW_PASSWORD_HASH_MAX) == NULL)
        return 0;
    if (strncmp(encoded, prefix_id, sizeof prefix_id - 1) == 0)
        return 'd';
    if (strncmp(encoded, prefix_i, sizeof prefix_i - 1) == 0)
        return 'i';
    return 0;
}

int rw_password_hash(char out[RW_PASSWORD_HASH_MAX], const char *password, size_t len,
                     const rw_password_params_t *params)
{
    unsigned long long ops;
    size_t mem;
    int rc;

    out[0] = '\0';
    if (len > RW_PASSWORD_MAX_BYTES)
        return RW_ELIMIT;
    if ((rc = resolve_params(params, &ops, &mem)) != 0)
        return rc;
    /* sodium_init is idempotent and thread-safe; it picks the fastest
     * implementation for this CPU the first time. */
    if (sodium_init() < 0)
        return RW_ECRYPTO;
    if (crypto_pwhash_str_alg(out, password, len, ops, mem, crypto_pwhash_ALG_ARGON2ID13) != 0)
        return -ENOMEM; /* the only way it fails with valid parameters */
    return 0;
}

int rw_password_verify(const char *encoded, const char *password, size_t len)
{
    char variant = variant_of(encoded);
    int valid;

    if (variant == 0)
        return RW_EPARSE;
    if (sodium_init() < 0)
        return RW_ECRYPTO;
    /* libsodium answers -1 for both "wrong password" and "malformed string";
     * decoding the parameters first tells the two apart. */
    valid = variant == 'd' ? crypto_pwhash_argon2id_str_needs_rehash(encoded, 1, 8192)
                           : crypto_pwhash_argon2i_str_needs_rehash(encoded, 1, 8192);
    if (valid < 0)
        return RW_EPARSE;
    if (len > RW_PASSWORD_MAX_BYTES)
        return RW_EAUTH;
    errno = 0;
    if (crypto_pwhash_str_verify(encoded, password, len) == 0)
        return 0;
    return errno == ENOMEM ? -ENOMEM : RW_EAUTH;
}

int rw_password_needs_rehash(const char *encoded, const rw_password_params_t *params)
{
    char variant = variant_of(encoded);
    unsigned long long ops;
    size_t mem;
    int rc;

    if (variant == 0)
        return RW_EPARSE;
    if ((rc = resolve_params(params, &ops, &mem)) != 0)
        return rc;
    if (sodium_init() < 0)
        return RW_ECRYPTO;
    if (variant == 'i') {
        /* Valid but the older variant: always upgrade. */
        return crypto_pwhash_argon2i_str_needs_rehash(encoded, ops, mem) < 0 ? RW_EPARSE : 1;
    }
    rc = crypto_pwhash_argon2id_str_needs_rehash(encoded, ops, mem);
    return rc < 0 ? RW_EPARSE : rc;
}

/* ---- policy -------------------------------------------------------------- */

enum rule {
    RULE_INVALID_CHARS,
    RULE_TOO_SHORT,
    RULE_TOO_LONG,
    RULE_ONE_CLASS,
    RULE_REPETITIVE,
    RULE_SEQUENCE,
    RULE_COMMON,
    RULE_IDENTITY,
};

static const rw_field_error_t rules[RW_PASSWORD_RULES] = {
    [RULE_INVALID_CHARS] = {"password", "password_invalid_chars",
                            "Password must be valid UTF-8 text without control characters."},
    [RULE_TOO_SHORT] = {"password", "password_too_short",
                        "Password must be at least 10 characters long."},
    [RULE_TOO_LONG] = {"password", "password_too_long", "Password must be at most 256 bytes long."},
    [RULE_ONE_CLASS] = {"password", "password_one_class",
                        "Password must mix at least two of: lower case, upper case, digits, "
                        "other characters."},
    [RULE_REPETITIVE] = {"password", "password_repetitive",
                         "Password must contain at least 5 different characters."},
    [RULE_SEQUENCE] = {"password", "password_sequence",
                       "Password must not be a simple sequence such as abcdef or 987654."},
    [RULE_COMMON] = {"password", "password_common",
                     "Password is too common; choose something less guessable."},
    [RULE_IDENTITY] = {"password", "password_contains_identity",
                       "Password must not contain your handle or email address."},
};

/* A minimal denylist of the passwords attackers try first, compared after
 * normalisation (see rw_password_check). It is no substitute for a breached-
 * password corpus, which a deployment can add in front of this check. */
static const char *const common[] = {
    "password",  "passw0rd",   "qwerty",        "qwertyuiop", "qwertz",     "azerty",
    "asdf",      "asdfgh",     "zxcvbn",        "qazwsx",     "letmein",    "welcome",
    "iloveyou",  "admin",      "administrator", "monkey",     "dragon",     "football",
    "baseball",  "sunshine",   "princess",      "abc",        "abcdef",     "changeme",
    "secret",    "master",     "login",         "trustno",    "starwars",   "whatever",
    "superman",  "batman",     "shadow",        "freedom",    "hello",      "reelway",
    "123456",    "1234567",    "12345678",      "123456789",  "1234567890", "0123456789",
    "987654321", "9876543210", "0987654321",    "111111",     "000000",     "123123",
    "654321",    "112233",     "121212",        "123321",     "666666",     "888888",
};

/* Decodes one UTF-8 code point at s[*i] (strict: no overlongs, surrogates or
 * values past U+10FFFF). Returns it, or -1. */
static long next_code_point(const unsigned char *s, size_t len, size_t *i)
{
    unsigned char c = s[*i];
    long cp, min;
    size_t n;

    if (c < 0x80) {
        (*i)++;
        return c;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        n = 1;
        cp = c & 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2;
        cp = c & 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        return -1;
    }
    if (*i + n >= len)
        return -1;
    for (size_t k = 1; k <= n; k++) {
        if ((s[*i + k] & 0xc0) != 0x80)
            return -1;
        cp = cp << 6 | (s[*i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    *i += n + 1;
    return cp;
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Case-insensitive (ASCII) search for needle[0..n) in hay[0..len). */
static int contains_ci(const char *hay, size_t len, const char *needle, size_t n)
{
    for (size_t i = 0; n <= len && i <= len - n; i++) {
        size_t k = 0;
        while (k < n && lower(hay[i + k]) == lower(needle[k]))
            k++;
        if (k == n)
            return 1;
    }
    return 0;
}

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Lower-cases, drops trailing ASCII symbols, then trailing digits if any
 * letter remains ("Password123!" -> "password"), and looks it up. */
static int is_common(const char *pw, size_t len)
{
    char norm[RW_PASSWORD_MAX_BYTES + 1];
    size_t n = len;
    int has_alpha = 0;

    for (size_t i = 0; i < len; i++) {
        norm[i] = lower(pw[i]);
        has_alpha |= is_alpha(pw[i]);
    }
    while (n > 0 && (unsigned char)norm[n - 1] < 0x80 && !is_alpha(norm[n - 1]) &&
           !is_digit(norm[n - 1]))
        n--;
    while (has_alpha && n > 0 && is_digit(norm[n - 1]))
        n--;
    norm[n] = '\0';
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
        if (strcmp(norm, common[i]) == 0)
            return 1;
    return 0;
}

size_t rw_password_check(const char *password, size_t len, const char *handle, const char *email,
                         rw_field_error_t *errs, size_t cap)
{
    long cps[RW_PASSWORD_MAX_BYTES];
    size_t n_cp = 0, distinct = 0, failed = 0;
    int lower_c = 0, upper_c = 0, digit_c = 0, other_c = 0, bad_chars = 0;
    int ascending = 1, descending = 1;
    int bits = 0;

    if (password == NULL)
        len = 0;
    if (len > RW_PASSWORD_MAX_BYTES) {
        /* Past the limit nothing else is examined: the user must shorten it first. */
        bits |= 1 << RULE_TOO_LONG;
        goto report;
    }
    for (size_t i = 0; i < len;) {
        long cp = next_code_point((const unsigned char *)password, len, &i);
        if (cp < 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f)) {
            bad_chars = 1;
            if (cp < 0)
                i++; /* skip the stray byte and judge the rest */
            continue;
        }
        cps[n_cp++] = cp;
        if (cp >= 'a' && cp <= 'z')
            lower_c = 1;
        else if (cp >= 'A' && cp <= 'Z')
            upper_c = 1;
        else if (cp >= '0' && cp <= '9')
            digit_c = 1;
        else
            other_c = 1;
    }
    if (bad_chars)
        bits |= 1 << RULE_INVALID_CHARS;
    if (n_cp < RW_PASSWORD_MIN_CHARS)
        bits |= 1 << RULE_TOO_SHORT;
    if (lower_c + upper_c + digit_c + other_c < 2)
        bits |= 1 << RULE_ONE_CLASS;
    for (size_t i = 0; i < n_cp; i++) {
        size_t k = 0;
        while (k < i && cps[k] != cps[i])
            k++;
        distinct += k == i;
    }
    if (distinct < 5)
        bits |= 1 << RULE_REPETITIVE;
    /* A run where each character is the previous one plus (or minus) one,
     * ignoring case: "abcdefghij", "AbCdEfGhIj", "9876543210". */
    for (size_t i = 1; i < n_cp; i++) {
        long a = cps[i - 1] < 0x80 ? lower((char)cps[i - 1]) : cps[i - 1];
        long b = cps[i] < 0x80 ? lower((char)cps[i]) : cps[i];
        ascending &= b == a + 1;
        descending &= b == a - 1;
    }
    if (n_cp > 1 && (ascending || descending))
        bits |= 1 << RULE_SEQUENCE;
    if (is_common(password, len))
        bits |= 1 << RULE_COMMON;
    if (handle != NULL && strlen(handle) >= 3 && contains_ci(password, len, handle, strlen(handle)))
        bits |= 1 << RULE_IDENTITY;
    if (email != NULL) {
        const char *at = strchr(email, '@');
        size_t local = at != NULL ? (size_t)(at - email) : strlen(email);
        if (local >= 3 && contains_ci(password, len, email, local))
            bits |= 1 << RULE_IDENTITY;
    }
report:
    for (int r = 0; r < RW_PASSWORD_RULES; r++) {
        if (!(bits & 1 << r))
            continue;
        if (failed < cap && errs != NULL)
            errs[failed] = rules[r];
        failed++;
    }
    return failed;
}
