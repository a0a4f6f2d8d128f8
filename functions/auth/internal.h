/* Private to reelway_auth: the key structure and helpers shared by its files. */
#ifndef REELWAY_AUTH_INTERNAL_H
#define REELWAY_AUTH_INTERNAL_H

#include <openssl/evp.h>

#include "reelway/auth.h"

/* The key types reelway signs and verifies with. */
typedef enum rw__key_type_e {
    RW__KEY_RSA = 1,
    RW__KEY_EC_P256,
    RW__KEY_EC_P384,
} rw__key_type_t;

struct rw_jwk_s {
    int refs; /* atomic (__atomic builtins): keys are shared across threads */
    EVP_PKEY *pkey;
    rw__key_type_t type;
    rw_jwt_alg_t pinned_alg; /* RW_JWT_ALG_INVALID when the JWK had no "alg" */
    int is_private;
    char kid[RW_JWK_KID_MAX + 1];
};

/* The digest an algorithm hashes with. */
const EVP_MD *rw__jwt_alg_md(rw_jwt_alg_t alg);

/* Size in bytes of one coordinate/scalar for the EC key types (32 or 48), 0 otherwise. */
size_t rw__key_ec_field_len(rw__key_type_t type);

/* Classifies an EVP_PKEY (RSA with a size in bounds, EC on P-256 or P-384).
 * Returns 0 and the type, or RW_ECONFIG. */
int rw__key_classify(const EVP_PKEY *pkey, rw__key_type_t *type);

/* Wraps pkey (ownership taken on success only) into a new key. kid NULL means
 * the RFC 7638 thumbprint. */
int rw__jwk_wrap(EVP_PKEY *pkey, const char *kid, rw_jwt_alg_t alg, int is_private, rw_jwk_t **out);

/* Parses exactly len bytes as one JSON value, rejecting embedded NULs and
 * trailing garbage (whitespace allowed). NULL on any error. */
cJSON *rw__json_parse_exact(const char *buf, size_t len);

/* 1 if a JSON object has two members with the same (case-sensitive) name, or
 * if that cannot be checked for lack of memory. */
int rw__json_has_duplicate(const cJSON *object);

#endif
