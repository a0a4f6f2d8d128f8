/* AWS Signature Version 4 request verification. Private to the gateway. */
#ifndef REELWAY_GATEWAY_SIGV4_H
#define REELWAY_GATEWAY_SIGV4_H

#include <stddef.h>

#include "reelway/http.h"

/**
 * Verifies req's AWS4-HMAC-SHA256 Authorization header (header-signed
 * requests, not presigned URLs) against access_key_id/secret, with the body
 * hashed unless the client said UNSIGNED-PAYLOAD, and X-Amz-Date within 15
 * minutes. Returns 0, or RW_EAUTH with the reason in why. Thread-safe.
 */
int rw_sigv4_verify(const rw_http_req_t *req, const char *body, size_t body_len,
                    const char *access_key_id, const char *secret, char *why, size_t whylen);

#endif
