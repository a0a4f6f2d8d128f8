/* base64url (RFC 4648 §5) without padding, decoded strictly: JWTs, JWKs and
 * our opaque tokens must each have exactly one spelling. */
#include <errno.h>
#include <stdlib.h>

#include "reelway/auth.h"
#include "reelway/error.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Maps a character to its 6-bit value, or -1 when it is not in the alphabet. */
static int value_of(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

size_t rw_b64url_encoded_len(size_t n)
{
    return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

size_t rw_b64url_decoded_max(size_t n)
{
    return n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1 + (n % 4 == 1));
}

long rw_b64url_encode(char *dst, size_t dst_cap, const uint8_t *src, size_t n)
{
    size_t need = rw_b64url_encoded_len(n);
    size_t o = 0, i = 0;

    if (dst_cap < need + 1)
        return -EINVAL;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        dst[o++] = alphabet[v >> 18 & 63];
        dst[o++] = alphabet[v >> 12 & 63];
        dst[o++] = alphabet[v >> 6 & 63];
        dst[o++] = alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)src[i] << 16;
        dst[o++] = alphabet[v >> 18 & 63];
        dst[o++] = alphabet[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
        dst[o++] = alphabet[v >> 18 & 63];
        dst[o++] = alphabet[v >> 12 & 63];
        dst[o++] = alphabet[v >> 6 & 63];
    }
    dst[o] = '\0';
    return (long)o;
}

char *rw_b64url_encode_alloc(const uint8_t *src, size_t n)
{
    size_t cap = rw_b64url_encoded_len(n) + 1;
    char *s = malloc(cap);

    if (s != NULL)
        rw_b64url_encode(s, cap, src, n);
    return s;
}

int rw_b64url_decode(uint8_t *dst, size_t dst_cap, size_t *out_len, const char *src, size_t n)
{
    size_t o = 0, i = 0;
    size_t rem = n % 4;
    int v[4];

    *out_len = 0;
    /* One leftover character carries only 6 bits: no byte string encodes to it. */
    if (rem == 1)
        return RW_EPARSE;
    if (dst_cap < rw_b64url_decoded_max(n))
        return -EINVAL;
    for (; i + 4 <= n; i += 4) {
        for (int k = 0; k < 4; k++)
            if ((v[k] = value_of((unsigned char)src[i + k])) < 0)
                return RW_EPARSE;
        dst[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
        dst[o++] = (uint8_t)((v[1] & 15) << 4 | v[2] >> 2);
        dst[o++] = (uint8_t)((v[2] & 3) << 6 | v[3]);
    }
    if (rem != 0) {
        for (size_t k = 0; k < rem; k++)
            if ((v[k] = value_of((unsigned char)src[i + k])) < 0)
                return RW_EPARSE;
        /* The bits past the last whole byte must be zero, otherwise several
         * strings would decode to the same bytes (a malleable signature). */
        if (rem == 2) {
            if (v[1] & 15)
                return RW_EPARSE;
            dst[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
        } else {
            if (v[2] & 3)
                return RW_EPARSE;
            dst[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
            dst[o++] = (uint8_t)((v[1] & 15) << 4 | v[2] >> 2);
        }
    }
    *out_len = o;
    return 0;
}
