/* Opaque secrets: refresh tokens and API keys (random, stored only as their
 * SHA-256), and constant-time comparison. */
#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "reelway/auth.h"
#include "reelway/error.h"

#define TOKEN_BYTES 32

int rw_token_generate(char out[RW_TOKEN_LEN + 1])
{
    uint8_t raw[TOKEN_BYTES];

    out[0] = '\0';
    if (RAND_bytes(raw, sizeof raw) != 1) {
        ERR_clear_error();
        return RW_ECRYPTO;
    }
    rw_b64url_encode(out, RW_TOKEN_LEN + 1, raw, sizeof raw);
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

int rw_token_hash(const char *token, size_t len, char out[RW_TOKEN_HASH_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t digest[32];

    out[0] = '\0';
    if (!EVP_Digest(token, len, digest, NULL, EVP_sha256(), NULL)) {
        ERR_clear_error();
        return RW_ECRYPTO;
    }
    for (size_t i = 0; i < sizeof digest; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[RW_TOKEN_HASH_LEN] = '\0';
    return 0;
}

static int prefix_valid(const char *prefix, size_t len)
{
    if (len == 0 || len > RW_APIKEY_PREFIX_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((prefix[i] >= 'a' && prefix[i] <= 'z') || (prefix[i] >= '0' && prefix[i] <= '9')))
            return 0;
    return 1;
}

int rw_apikey_generate(const char *prefix, char *out, size_t cap)
{
    size_t plen = prefix != NULL ? strlen(prefix) : 0;
    int rc;

    if (cap > 0)
        out[0] = '\0';
    if (!prefix_valid(prefix, plen) || cap < plen + 1 + RW_TOKEN_LEN + 1)
        return -EINVAL;
    memcpy(out, prefix, plen);
    out[plen] = '_';
    if ((rc = rw_token_generate(out + plen + 1)) != 0)
        out[0] = '\0';
    return rc;
}

int rw_apikey_check_format(const char *key, size_t len)
{
    uint8_t raw[TOKEN_BYTES + 1];
    size_t raw_len, plen;

    /* The random part is fixed-length, so the prefix is whatever precedes it
     * (the random part itself may contain '_'). */
    if (key == NULL || len < 1 + 1 + RW_TOKEN_LEN || len > RW_APIKEY_MAX)
        return RW_EPARSE;
    plen = len - 1 - RW_TOKEN_LEN;
    if (!prefix_valid(key, plen) || key[plen] != '_')
        return RW_EPARSE;
    if (rw_b64url_decode(raw, sizeof raw, &raw_len, key + plen + 1, RW_TOKEN_LEN) != 0 ||
        raw_len != TOKEN_BYTES)
        return RW_EPARSE;
    return 0;
}

int rw_ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

int rw_ct_streq(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);

    if (la != lb)
        return 0;
    return CRYPTO_memcmp(a, b, la) == 0;
}
