/* Base64 (RFC 4648 section 4, the standard alphabet) for proxy event bodies.
 * Internal to the gateway. */
#ifndef REELWAY_GATEWAY_BASE64_H
#define REELWAY_GATEWAY_BASE64_H

#include <stddef.h>

/** Length of the padded encoding of n bytes (no NUL). */
size_t rw__base64_encoded_len(size_t n);

/**
 * Encodes n bytes of src into dst, which has room for
 * rw__base64_encoded_len(n) bytes; always pads with '='. Writes no NUL.
 * Returns the number of bytes written. Any thread.
 */
size_t rw__base64_encode(char *dst, const void *src, size_t n);

/**
 * Decodes src (len bytes) into dst, which has room for 3 * (len / 4) + 2 bytes
 * (never more than len). Accepts padded and unpadded input; rejects any byte
 * outside the alphabet (whitespace included), misplaced or excess padding, a
 * final group of one character, and non-zero bits after the last byte. On
 * success stores the decoded length in *out_len and returns 0; on error returns
 * -1 and writes the reason to why (with the offending offset). Any thread.
 */
int rw__base64_decode(unsigned char *dst, size_t *out_len, const char *src, size_t len, char *why,
                      size_t whylen);

#endif
