/* Base64 encode and strict decode for the bodies of proxy events and of the
 * functions' answers (isBase64Encoded). */
#include "base64.h"

#include <stdint.h>
#include <stdio.h>

static const char alphabet[64] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The value of each alphabet byte; meaningless for other bytes, which is_b64()
 * screens out first. */
static const unsigned char values[256] = {
    ['A'] = 0,  ['B'] = 1,  ['C'] = 2,  ['D'] = 3,  ['E'] = 4,  ['F'] = 5,  ['G'] = 6,  ['H'] = 7,
    ['I'] = 8,  ['J'] = 9,  ['K'] = 10, ['L'] = 11, ['M'] = 12, ['N'] = 13, ['O'] = 14, ['P'] = 15,
    ['Q'] = 16, ['R'] = 17, ['S'] = 18, ['T'] = 19, ['U'] = 20, ['V'] = 21, ['W'] = 22, ['X'] = 23,
    ['Y'] = 24, ['Z'] = 25, ['a'] = 26, ['b'] = 27, ['c'] = 28, ['d'] = 29, ['e'] = 30, ['f'] = 31,
    ['g'] = 32, ['h'] = 33, ['i'] = 34, ['j'] = 35, ['k'] = 36, ['l'] = 37, ['m'] = 38, ['n'] = 39,
    ['o'] = 40, ['p'] = 41, ['q'] = 42, ['r'] = 43, ['s'] = 44, ['t'] = 45, ['u'] = 46, ['v'] = 47,
    ['w'] = 48, ['x'] = 49, ['y'] = 50, ['z'] = 51, ['0'] = 52, ['1'] = 53, ['2'] = 54, ['3'] = 55,
    ['4'] = 56, ['5'] = 57, ['6'] = 58, ['7'] = 59, ['8'] = 60, ['9'] = 61, ['+'] = 62, ['/'] = 63,
};

static int is_b64(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

size_t rw__base64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

size_t rw__base64_encode(char *dst, const void *src, size_t n)
{
    const unsigned char *s = src;
    char *d = dst;
    size_t i = 0;

    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *d++ = alphabet[v >> 18];
        *d++ = alphabet[(v >> 12) & 63];
        *d++ = alphabet[(v >> 6) & 63];
        *d++ = alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        *d++ = alphabet[v >> 18];
        *d++ = alphabet[(v >> 12) & 63];
        *d++ = '=';
        *d++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        *d++ = alphabet[v >> 18];
        *d++ = alphabet[(v >> 12) & 63];
        *d++ = alphabet[(v >> 6) & 63];
        *d++ = '=';
    }
    return (size_t)(d - dst);
}

int rw__base64_decode(unsigned char *dst, size_t *out_len, const char *src, size_t len, char *why,
                      size_t whylen)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t data_len = len, i;
    unsigned char *d = dst;

    while (data_len > 0 && s[data_len - 1] == '=')
        data_len--;
    for (i = 0; i < data_len; i++) {
        if (s[i] == '=') {
            snprintf(why, whylen, "base64: misplaced padding at offset %zu", i);
            return -1;
        }
        if (!is_b64(s[i])) {
            snprintf(why, whylen, "base64: invalid character 0x%02x at offset %zu", s[i], i);
            return -1;
        }
    }
    /* Padding may only close the input: at most two '=', and only to fill
     * the last group of four. */
    if (len - data_len > 2 || (len != data_len && len % 4 != 0)) {
        snprintf(why, whylen, "base64: bad padding at offset %zu", data_len);
        return -1;
    }
    if (data_len % 4 == 1) {
        snprintf(why, whylen, "base64: truncated group at offset %zu", data_len - 1);
        return -1;
    }
    for (i = 0; i + 4 <= data_len; i += 4) {
        uint32_t v = (uint32_t)values[s[i]] << 18 | (uint32_t)values[s[i + 1]] << 12 |
                     (uint32_t)values[s[i + 2]] << 6 | values[s[i + 3]];
        *d++ = (unsigned char)(v >> 16);
        *d++ = (unsigned char)(v >> 8);
        *d++ = (unsigned char)v;
    }
    if (data_len - i == 2) {
        uint32_t v = (uint32_t)values[s[i]] << 18 | (uint32_t)values[s[i + 1]] << 12;
        if (v & 0xffff) {
            snprintf(why, whylen, "base64: non-zero trailing bits at offset %zu", i + 1);
            return -1;
        }
        *d++ = (unsigned char)(v >> 16);
    } else if (data_len - i == 3) {
        uint32_t v = (uint32_t)values[s[i]] << 18 | (uint32_t)values[s[i + 1]] << 12 |
                     (uint32_t)values[s[i + 2]] << 6;
        if (v & 0xff) {
            snprintf(why, whylen, "base64: non-zero trailing bits at offset %zu", i + 2);
            return -1;
        }
        *d++ = (unsigned char)(v >> 16);
        *d++ = (unsigned char)(v >> 8);
    }
    *out_len = (size_t)(d - dst);
    return 0;
}
