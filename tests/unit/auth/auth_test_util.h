/* Helpers for the auth tests that do not go through reelway_auth: an
 * independent base64url (OpenSSL's EVP_EncodeBlock, translated) and a token
 * forger that signs arbitrary header/payload text with OpenSSL directly, so
 * the tests can build every malformed or hostile token an attacker could. */
#ifndef REELWAY_AUTH_TEST_UTIL_H
#define REELWAY_AUTH_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "reelway/auth.h"

/* A fixed "now" for every claim test: 2023-11-14T22:13:20Z. */
#define TU_NOW 1700000000LL

/** base64url without padding of data (new string, free()). */
char *tu_b64(const void *data, size_t len);

/** Decodes base64url (padding restored, then EVP_DecodeBlock); *len gets the
 * byte count. New buffer (free()); aborts the test on bad input. */
uint8_t *tu_unb64(const char *s, size_t n, size_t *len);

/** The private EVP_PKEY behind a generated key, re-read from its PEM (caller
 * frees with EVP_PKEY_free). */
EVP_PKEY *tu_pkey(const rw_jwk_t *key);

/** How tu_token signs. */
typedef enum tu_sig_e {
    TU_SIG_NONE,  /* empty signature segment */
    TU_SIG_RS256, /* RSASSA-PKCS1-v1_5 SHA-256 with pkey */
    TU_SIG_PS256, /* RSASSA-PSS SHA-256, salt = 32 with pkey */
    TU_SIG_ES256, /* ECDSA P-256 SHA-256 with pkey, DER converted to R||S */
    TU_SIG_ES384, /* ECDSA P-384 SHA-384 with pkey, DER converted to R||S */
    TU_SIG_HS256, /* HMAC-SHA-256 with secret */
} tu_sig_t;

/** Builds "b64(header).b64(payload).b64(signature)" from raw JSON text (or
 * any text). New string (free()). */
char *tu_token(const char *header, const char *payload, tu_sig_t sig, EVP_PKEY *pkey,
               const void *secret, size_t secret_len);

/** Converts a DER ECDSA signature to R||S of 2*field bytes; returns a new
 * buffer (free()). */
uint8_t *tu_der_to_raw(const uint8_t *der, size_t der_len, size_t field);

/** Converts R||S to DER; *der_len gets its length; free with OPENSSL_free. */
uint8_t *tu_raw_to_der(const uint8_t *raw, size_t field, size_t *der_len);

/** printf into a new string (free()). */
char *tu_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
