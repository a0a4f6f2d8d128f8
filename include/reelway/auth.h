/* reelway auth: the cryptographic core shared by the gateway's JWT authorizer
 * and the user-pool functions. Pure computation: no sockets, no loop, no database.
 *
 * Contents, in reading order:
 *   1. base64url (RFC 4648 §5, unpadded, strict)
 *   2. keys (rw_jwk_t) and key sets (rw_jwks_t): JWK/JWKS JSON, PEM, generation
 *   3. JWT signing and verification (RS256/384/512, PS256, ES256/384)
 *   4. keys at rest: AES-256-GCM envelopes under a master key
 *   5. passwords: Argon2id hashing and the password policy
 *   6. opaque tokens: refresh tokens, API keys, constant-time comparison
 *
 * Errors: functions returning `int` return 0 or a negative code from
 * reelway/error.h (RW_EPARSE, RW_ECRYPTO, RW_EAUTH, RW_ELIMIT, -ENOMEM, -EINVAL,
 * -EEXIST). JWT verification returns its own rw_jwt_status_t so the authorizer
 * can tell every reason apart.
 *
 * Threads: every function is reentrant. Keys and key sets are immutable once
 * built and may be shared by any number of threads for signing and verifying;
 * adding a key to a set is not synchronised (build a new set and swap it).
 *
 * Memory: returned strings and buffers are malloc()ed and freed by the caller
 * with free(), except where a *_free function is named. Secrets (private PEM,
 * unsealed plaintext) should be released with rw_secret_free(), which wipes them.
 */
#ifndef REELWAY_AUTH_H
#define REELWAY_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* 1. base64url                                                              */
/* ------------------------------------------------------------------------ */

/** Length of the unpadded base64url encoding of n bytes (no NUL). */
size_t rw_b64url_encoded_len(size_t n);

/** Upper bound of the bytes that an n-character base64url string decodes to. */
size_t rw_b64url_decoded_max(size_t n);

/**
 * Encodes src[0..n) as unpadded base64url into dst and NUL-terminates it.
 * dst_cap must be at least rw_b64url_encoded_len(n) + 1.
 * Returns the encoded length (without the NUL), or -EINVAL if dst is too small.
 * Caller owns both buffers; nothing is kept.
 */
long rw_b64url_encode(char *dst, size_t dst_cap, const uint8_t *src, size_t n);

/**
 * Strictly decodes src[0..n) (base64url alphabet only: no padding, no
 * whitespace, no '+' or '/', no length of the form 4k+1, and the unused low
 * bits of the last character must be zero so every byte string has exactly one
 * encoding). Writes the bytes to dst and their count to *out_len.
 * dst_cap must be at least rw_b64url_decoded_max(n).
 * Returns 0, RW_EPARSE for any invalid input, or -EINVAL if dst is too small.
 */
int rw_b64url_decode(uint8_t *dst, size_t dst_cap, size_t *out_len, const char *src, size_t n);

/** Encodes into a new NUL-terminated string (free()). Returns NULL on OOM. */
char *rw_b64url_encode_alloc(const uint8_t *src, size_t n);

/* ------------------------------------------------------------------------ */
/* 2. keys and key sets                                                      */
/* ------------------------------------------------------------------------ */

/** JWS algorithms reelway knows. Anything else ("none", HS*, ...) is refused. */
typedef enum rw_jwt_alg_e {
    RW_JWT_ALG_INVALID = 0,
    RW_JWT_RS256,
    RW_JWT_RS384,
    RW_JWT_RS512,
    RW_JWT_PS256,
    RW_JWT_ES256,
    RW_JWT_ES384,
} rw_jwt_alg_t;

/** The JOSE name of an algorithm ("RS256"), or "invalid". Static string. */
const char *rw_jwt_alg_name(rw_jwt_alg_t alg);

/** Parses a JOSE algorithm name (case-sensitive). Returns RW_JWT_ALG_INVALID
 * for "none", every HS*, and any name not in rw_jwt_alg_t. */
rw_jwt_alg_t rw_jwt_alg_parse(const char *name);

/** Kinds of key rw_jwk_generate can make. */
typedef enum rw_jwk_kind_e {
    RW_JWK_RSA2048 = 1, /**< RSA 2048 bits, e = 65537, signs RS256 */
    RW_JWK_EC_P256,     /**< ECDSA P-256, signs ES256 */
    RW_JWK_EC_P384,     /**< ECDSA P-384, signs ES384 */
} rw_jwk_kind_t;

/** Limits on the keys reelway accepts (smaller RSA keys are refused). */
#define RW_JWK_RSA_MIN_BITS 2048
#define RW_JWK_RSA_MAX_BITS 8192
#define RW_JWK_KID_MAX 256

/**
 * A key: public (verification) or private (signing), with its `kid`, its key
 * type (RSA, EC P-256, EC P-384) and an optional pinned algorithm (the JWK's
 * "alg"). Opaque; immutable after creation; shareable between threads.
 */
typedef struct rw_jwk_s rw_jwk_t;

/**
 * Generates a new private signing key with a random kid (22 base64url
 * characters, 128 bits). The pinned algorithm is the kind's (RS256, ES256,
 * ES384). Blocks for a few milliseconds (RSA: up to a second); call it off the
 * loop thread. Returns 0, -EINVAL for an unknown kind, or RW_ECRYPTO.
 */
int rw_jwk_generate(rw_jwk_kind_t kind, rw_jwk_t **out);

/**
 * Loads a key from PEM: a private key (PKCS#8 "PRIVATE KEY", or traditional
 * "RSA/EC PRIVATE KEY") or a public key ("PUBLIC KEY"). Encrypted PEM is
 * refused (use rw_seal for keys at rest). kid may be NULL: the key then gets
 * its RFC 7638 thumbprint as kid. alg pins the algorithm (RW_JWT_ALG_INVALID
 * for the key type's default: RS256 for RSA, ES256/ES384 by curve).
 * pem is read only during the call. Returns 0, RW_EPARSE (not a PEM key),
 * RW_ECONFIG (unsupported key type or size, or alg not valid for the key),
 * -EINVAL (kid too long or empty) or RW_ECRYPTO.
 */
int rw_jwk_from_pem(const char *pem, size_t len, const char *kid, rw_jwt_alg_t alg, rw_jwk_t **out);

/**
 * Writes the private key as unencrypted PKCS#8 PEM into a new NUL-terminated
 * string (*out, free with rw_secret_free(*out, *out_len)). Returns 0,
 * RW_ENOTFOUND if the key has no private part, or RW_ECRYPTO.
 */
int rw_jwk_private_pem(const rw_jwk_t *key, char **out, size_t *out_len);

/** Writes the public key as "PUBLIC KEY" PEM (SubjectPublicKeyInfo) into a new
 * string (*out, free()). Returns 0 or RW_ECRYPTO. */
int rw_jwk_public_pem(const rw_jwk_t *key, char **out, size_t *out_len);

/**
 * Builds a public key from one JWK JSON object (RFC 7517/7518): kty "RSA"
 * with n and e, or kty "EC" with crv "P-256"/"P-384", x and y (each exactly
 * the field size). Private members ("d", ...) are ignored: the result is
 * always public. "alg", if present, pins the algorithm; "x5c"/"x5t" and other
 * members are ignored. A missing or empty "kid" is an error.
 * Returns 0; RW_ENOTFOUND when the JWK is well formed but not a signature key
 * reelway uses (kty "oct"/"OKP"/other, or "use": "enc", or an "alg" reelway
 * does not implement): callers skip it; RW_EPARSE or RW_ECONFIG when the key
 * is malformed or too weak (*msg, if non-NULL, gets a static reason).
 */
int rw_jwk_from_json(const cJSON *jwk, rw_jwk_t **out, const char **msg);

/**
 * Returns a new cJSON object with the public JWK: kty, kid, use "sig", alg,
 * and n/e or crv/x/y. Caller frees with cJSON_Delete. NULL on OOM.
 */
cJSON *rw_jwk_to_json(const rw_jwk_t *key);

/**
 * Computes the RFC 7638 JWK thumbprint (SHA-256, base64url, 43 characters)
 * into out (at least 44 bytes). Returns 0 or RW_ECRYPTO.
 */
int rw_jwk_thumbprint(const rw_jwk_t *key, char out[44]);

/** The key's kid. Valid as long as the key. */
const char *rw_jwk_kid(const rw_jwk_t *key);

/** The algorithm the key signs with by default (pinned or the type's). */
rw_jwt_alg_t rw_jwk_alg(const rw_jwk_t *key);

/** 1 if the key has a private part (can sign), else 0. */
int rw_jwk_is_private(const rw_jwk_t *key);

/**
 * 1 if a token with this alg may be verified with this key: the algorithm
 * family matches the key type (RS*, PS256 for RSA; ES256 for P-256, ES384 for
 * P-384) and, if the key pins an alg, it is that one. Else 0.
 */
int rw_jwk_allows(const rw_jwk_t *key, rw_jwt_alg_t alg);

/** Takes one more reference to a key (keys are reference-counted; atomic). */
rw_jwk_t *rw_jwk_ref(rw_jwk_t *key);

/** Drops a reference; frees the key (wiping private material) at zero. NULL ok. */
void rw_jwk_free(rw_jwk_t *key);

/** A set of keys looked up by kid (a JWKS). Opaque. */
typedef struct rw_jwks_s rw_jwks_t;

/** Maximum number of keys in one set (bigger JWKS documents are refused). */
#define RW_JWKS_MAX_KEYS 64

/** A new empty set, or NULL on OOM. Free with rw_jwks_free. */
rw_jwks_t *rw_jwks_new(void);

/** Frees a set and drops its references to its keys. NULL ok. */
void rw_jwks_free(rw_jwks_t *set);

/**
 * Adds a key; the set takes a new reference (the caller keeps its own).
 * Returns 0, -EEXIST if a key with the same kid is present, RW_ELIMIT past
 * RW_JWKS_MAX_KEYS, or -ENOMEM. Not thread-safe against concurrent readers.
 */
int rw_jwks_add(rw_jwks_t *set, rw_jwk_t *key);

/** The key with this kid, or NULL. The pointer is borrowed from the set. */
const rw_jwk_t *rw_jwks_find(const rw_jwks_t *set, const char *kid);

/** Number of keys in the set. */
size_t rw_jwks_count(const rw_jwks_t *set);

/** The i-th key (insertion order), borrowed; NULL if i is out of range. */
const rw_jwk_t *rw_jwks_get(const rw_jwks_t *set, size_t i);

/**
 * Parses a JWKS document ({"keys": [...]}, at most 1 MiB). Keys that are not
 * for reelway's signatures (see rw_jwk_from_json) are skipped silently; any
 * malformed key, a duplicate kid, or a document that is not a JSON object with
 * a "keys" array fails the whole parse, with a static reason in *msg (may be
 * NULL). A document with no usable key gives an empty set, not an error.
 * json is read only during the call. Returns 0, RW_EPARSE, RW_ECONFIG,
 * RW_ELIMIT or -ENOMEM.
 */
int rw_jwks_parse(const char *json, size_t len, rw_jwks_t **out, const char **msg);

/**
 * Serialises the set's public keys as a JWKS document (for
 * /.well-known/jwks.json) into a new compact JSON string (free()).
 * Returns 0 or -ENOMEM.
 */
int rw_jwks_to_json(const rw_jwks_t *set, char **out);

/* ------------------------------------------------------------------------ */
/* 3. JWT                                                                    */
/* ------------------------------------------------------------------------ */

/** Largest token rw_jwt_verify looks at (bytes); longer ones are malformed. */
#define RW_JWT_MAX_LEN 16384

/**
 * Signs claims (a JSON object; read only) with key, producing a compact JWS:
 * header {"alg":..., "typ": typ or "JWT", "kid": key's kid}. alg may be
 * RW_JWT_ALG_INVALID for the key's default; it must be allowed for the key.
 * ES* signatures are in the JOSE form R||S (RFC 7518 §3.4).
 * *out is a new NUL-terminated string (free()).
 * Returns 0, -EINVAL (not an object, or alg not allowed), RW_ENOTFOUND (no
 * private part), RW_ECRYPTO or -ENOMEM.
 */
int rw_jwt_sign(const rw_jwk_t *key, rw_jwt_alg_t alg, const char *typ, const cJSON *claims,
                char **out);

/**
 * Why verification failed. Every reason is distinct, for logs and for the
 * www-authenticate header; rw_jwt_status_http maps them to 401 or 403.
 */
typedef enum rw_jwt_status_e {
    RW_JWT_OK = 0,
    RW_JWT_EFORMAT,    /**< empty, too long, not exactly three segments */
    RW_JWT_EBASE64,    /**< a segment is not strict base64url */
    RW_JWT_EJSON,      /**< header or payload not a JSON object, or duplicate member */
    RW_JWT_EHEADER,    /**< header member of the wrong type, kid missing, crit present */
    RW_JWT_EALG,       /**< alg missing, "none", HS*, or not implemented */
    RW_JWT_EKID,       /**< no key with the token's kid in the set */
    RW_JWT_EKEY_ALG,   /**< alg not allowed for that key (e.g. RS256 on an EC key) */
    RW_JWT_ESIGNATURE, /**< signature wrong, truncated or of the wrong length */
    RW_JWT_ECLAIM,     /**< a registered claim has the wrong type (exp not a number, ...) */
    RW_JWT_EEXPIRED,   /**< exp is past (beyond the skew), or missing */
    RW_JWT_ENOTBEFORE, /**< nbf is in the future (beyond the skew) */
    RW_JWT_EIAT,       /**< iat is in the future (beyond the skew) */
    RW_JWT_EISSUER,    /**< iss missing or not the configured issuer */
    RW_JWT_EAUDIENCE,  /**< aud (or client_id when aud is absent) matches no audience */
    RW_JWT_ESCOPE,     /**< none of the route's scopes is in the token (403) */
    RW_JWT_EINTERNAL,  /**< out of memory or an OpenSSL failure (not the token's fault) */
    RW_JWT_STATUS_COUNT
} rw_jwt_status_t;

/** A short static name for a status ("expired", "bad_signature", ...). */
const char *rw_jwt_status_name(rw_jwt_status_t status);

/** The HTTP status API Gateway answers with: 200 for OK, 403 for
 * RW_JWT_ESCOPE, 500 for RW_JWT_EINTERNAL, 401 for everything else. */
int rw_jwt_status_http(rw_jwt_status_t status);

/** Verification settings. Zero-initialise, then fill what applies. */
typedef struct rw_jwt_verify_opts_s {
    /** Required exact value of iss. NULL skips the check (only for tests and
     * for keys that belong to one issuer only). */
    const char *issuer;
    /** Accepted audiences: aud (string, or array with any element) must
     * match one; when the token has no aud, client_id must (Cognito access
     * tokens). Empty list: audience not checked. */
    const char *const *audiences;
    size_t n_audiences;
    /** The route's scopes: the token's scope (space-separated string) or scp
     * (array of strings, or string) must hold at least one of them, as API
     * Gateway does. Empty list: no scope check. */
    const char *const *scopes;
    size_t n_scopes;
    /** If set, the token must hold all of `scopes`, not just one. */
    int require_all_scopes;
    /** Current time in seconds since the epoch; 0 means time(NULL). */
    int64_t now;
    /** Leeway for exp, nbf and iat, in seconds (API Gateway-like: 60 or less). */
    int64_t clock_skew_s;
    /** If set, a token without exp is accepted (never for access tokens). */
    int allow_missing_exp;
} rw_jwt_verify_opts_t;

/** A verified token: its header, claims and scopes. Opaque. */
typedef struct rw_jwt_s rw_jwt_t;

/** Detail of a failed verification. */
typedef struct rw_jwt_error_s {
    rw_jwt_status_t status;
    char message[160]; /**< human-readable, for logs; never contains the token */
} rw_jwt_error_t;

/**
 * Verifies a compact JWS token (token[0..len), read only during the call)
 * against the key set, in this order: shape (three non-empty-header segments,
 * at most RW_JWT_MAX_LEN bytes), base64url, JSON objects without duplicate
 * members, header (alg a string and one of rw_jwt_alg_t, never none/HS*; kid
 * a string; typ, if present, a string; no crit), the key by kid, the alg
 * allowed for that key, the signature, then the claims: exp, nbf, iat with
 * the skew, iss, aud/client_id, scopes.
 * On success *out (if out is non-NULL) receives the verified token (free with
 * rw_jwt_free). err may be NULL. Runs on any thread; does not block.
 */
rw_jwt_status_t rw_jwt_verify(const rw_jwks_t *keys, const char *token, size_t len,
                              const rw_jwt_verify_opts_t *opts, rw_jwt_t **out,
                              rw_jwt_error_t *err);

/** The verified header (borrowed; lives as long as the token). */
const cJSON *rw_jwt_header(const rw_jwt_t *jwt);

/** The verified claims object (borrowed; lives as long as the token). */
const cJSON *rw_jwt_claims(const rw_jwt_t *jwt);

/** A string claim ("sub", "email", ...) or NULL if absent or not a string. */
const char *rw_jwt_claim_string(const rw_jwt_t *jwt, const char *name);

/** The token's algorithm and kid (borrowed). */
rw_jwt_alg_t rw_jwt_alg(const rw_jwt_t *jwt);
const char *rw_jwt_kid(const rw_jwt_t *jwt);

/** The token's scopes, from scope or scp, in order (borrowed). */
size_t rw_jwt_scope_count(const rw_jwt_t *jwt);
const char *rw_jwt_scope(const rw_jwt_t *jwt, size_t i);

/** Frees a verified token. NULL ok. */
void rw_jwt_free(rw_jwt_t *jwt);

/* ------------------------------------------------------------------------ */
/* 4. keys at rest                                                           */
/* ------------------------------------------------------------------------ */

/** A 256-bit master key. Wipe it with rw_masterkey_wipe when done. */
typedef struct rw_masterkey_s {
    uint8_t bytes[32];
} rw_masterkey_t;

/** Uses 32 raw bytes as the master key. */
void rw_masterkey_from_raw(rw_masterkey_t *mk, const uint8_t raw[32]);

/**
 * Derives the master key from a secret with HKDF-SHA256 (fixed salt
 * "reelway/master-key", info "reelway key-at-rest v1"). HKDF does not
 * stretch: the secret must already be high-entropy (e.g. 32 random bytes,
 * base64-encoded in an environment variable), not a human passphrase.
 * Secrets shorter than 16 bytes are refused with -EINVAL. Returns 0 or RW_ECRYPTO.
 */
int rw_masterkey_derive(rw_masterkey_t *mk, const void *secret, size_t len);

/** Zeroes a master key. */
void rw_masterkey_wipe(rw_masterkey_t *mk);

/**
 * Encrypts plaintext with AES-256-GCM under mk and a random 96-bit nonce.
 * The envelope is text: "rwseal1." followed by base64url(nonce || ciphertext
 * || 128-bit tag). The version prefix and context (may be NULL; e.g. the
 * key's kid) are authenticated as associated data, so an envelope opens only
 * under the same context. *out is a new string (free()). Plaintext is at most
 * 1 MiB. Returns 0, RW_ELIMIT, RW_ECRYPTO or -ENOMEM.
 */
int rw_seal(const rw_masterkey_t *mk, const uint8_t *plaintext, size_t len, const char *context,
            char **out);

/**
 * Opens an envelope made by rw_seal. *out (NUL-terminated for convenience,
 * *out_len bytes without the NUL) is new; free with rw_secret_free.
 * Returns 0; RW_EPARSE if it is not a well-formed envelope of a known version;
 * RW_EAUTH if the tag does not verify (tampered, wrong master key or wrong
 * context); RW_ECRYPTO or -ENOMEM.
 */
int rw_unseal(const rw_masterkey_t *mk, const char *envelope, size_t len, const char *context,
              uint8_t **out, size_t *out_len);

/** Seals a private key's PKCS#8 PEM, with its kid as context. Returns as rw_seal. */
int rw_jwk_seal(const rw_jwk_t *key, const rw_masterkey_t *mk, char **out);

/** Opens rw_jwk_seal's envelope and loads the key under kid (see rw_jwk_from_pem).
 * Returns as rw_unseal, or as rw_jwk_from_pem. */
int rw_jwk_unseal(const rw_masterkey_t *mk, const char *envelope, size_t len, const char *kid,
                  rw_jwt_alg_t alg, rw_jwk_t **out);

/** Wipes len bytes at p, then frees p. NULL ok. */
void rw_secret_free(void *p, size_t len);

/* ------------------------------------------------------------------------ */
/* 5. passwords                                                              */
/* ------------------------------------------------------------------------ */

/** Encoded hashes fit in this many bytes, NUL included. */
#define RW_PASSWORD_HASH_MAX 128
/** Policy bounds (see rw_password_check). */
#define RW_PASSWORD_MIN_CHARS 10
#define RW_PASSWORD_MAX_BYTES 256

/** Argon2id cost. Zero fields take the defaults. */
typedef struct rw_password_params_s {
    unsigned long long opslimit; /**< passes; default 2 (libsodium "interactive") */
    size_t memlimit;             /**< bytes; default 64 MiB (libsodium "interactive") */
} rw_password_params_t;

/**
 * Hashes a password with Argon2id (random salt). The encoded result
 * ("$argon2id$v=19$m=...,t=...,p=1$salt$hash") carries its parameters and is
 * written to out (NUL-terminated). params may be NULL for the defaults.
 * Takes tens of milliseconds and memlimit bytes: never on the loop thread.
 * Returns 0, RW_ELIMIT if len > RW_PASSWORD_MAX_BYTES, -EINVAL for params
 * out of libsodium's range, or -ENOMEM.
 */
int rw_password_hash(char out[RW_PASSWORD_HASH_MAX], const char *password, size_t len,
                     const rw_password_params_t *params);

/**
 * Verifies a password against an encoded hash, in constant time with respect
 * to the password. Returns 0 on a match, RW_EAUTH on a mismatch (also for a
 * password longer than RW_PASSWORD_MAX_BYTES), RW_EPARSE if the hash is not
 * an Argon2 (id or i) encoded string, -ENOMEM if its memlimit cannot be met.
 * For an unknown account, callers should still hash the attempt (rw_password_hash)
 * so response times do not reveal which accounts exist.
 */
int rw_password_verify(const char *encoded, const char *password, size_t len);

/**
 * 1 if the hash should be recomputed at the next successful login (not
 * Argon2id, or made with other parameters than params, NULL = defaults),
 * 0 if not, RW_EPARSE if the string is not an Argon2 hash.
 */
int rw_password_needs_rehash(const char *encoded, const rw_password_params_t *params);

/** One failed rule, for a sign-up form's field errors. Static strings. */
typedef struct rw_field_error_s {
    const char *field;   /**< "password" */
    const char *code;    /**< stable machine code: "password_too_short", ... */
    const char *message; /**< English sentence for the user */
} rw_field_error_t;

/** Number of rules; an errs array of this size always suffices. */
#define RW_PASSWORD_RULES 8

/**
 * Checks a password against reelway's policy (NIST SP 800-63B in spirit):
 *  - valid UTF-8 with no control characters ("password_invalid_chars");
 *  - at least RW_PASSWORD_MIN_CHARS characters, counted as code points
 *    ("password_too_short"), at most RW_PASSWORD_MAX_BYTES bytes ("password_too_long");
 *  - characters from at least two classes of lower case, upper case, digits,
 *    other (symbols, spaces, non-ASCII) ("password_one_class");
 *  - at least 5 distinct characters ("password_repetitive");
 *  - not an ascending/descending run like "abcdefghij" or "9876543210"
 *    ("password_sequence");
 *  - not one of the most common passwords, ignoring case and trailing digits
 *    and symbols, e.g. "Password123!" ("password_common");
 *  - not containing the handle or the email's local part, ignoring case,
 *    when they are at least 3 bytes long ("password_contains_identity").
 * handle and email may be NULL. Fills errs (capacity cap) with the failed
 * rules in the order above and returns how many failed (0: acceptable).
 */
size_t rw_password_check(const char *password, size_t len, const char *handle, const char *email,
                         rw_field_error_t *errs, size_t cap);

/* ------------------------------------------------------------------------ */
/* 6. opaque tokens                                                          */
/* ------------------------------------------------------------------------ */

/** A refresh token: 32 random bytes in base64url (43 characters). */
#define RW_TOKEN_LEN 43
/** A stored token hash: SHA-256 in lower-case hex (64 characters). */
#define RW_TOKEN_HASH_LEN 64
/** Longest API-key prefix. */
#define RW_APIKEY_PREFIX_MAX 16
/** Longest API key: prefix + "_" + 43 characters. */
#define RW_APIKEY_MAX (RW_APIKEY_PREFIX_MAX + 1 + RW_TOKEN_LEN)

/**
 * Writes a new random refresh token (RW_TOKEN_LEN characters + NUL) to out,
 * from OpenSSL's CSPRNG. Returns 0 or RW_ECRYPTO.
 */
int rw_token_generate(char out[RW_TOKEN_LEN + 1]);

/**
 * SHA-256 of token[0..len) in lower-case hex, NUL-terminated, into out: what
 * is stored and looked up (the token itself is never stored). The tokens are
 * 256-bit random, so a plain hash cannot be brute-forced. Returns 0 or RW_ECRYPTO.
 */
int rw_token_hash(const char *token, size_t len, char out[RW_TOKEN_HASH_LEN + 1]);

/**
 * Writes a new API key "<prefix>_<43 base64url characters>" to out (at least
 * RW_APIKEY_MAX + 1 bytes). prefix is 1..RW_APIKEY_PREFIX_MAX characters of
 * [a-z0-9] (it names the key's kind in logs and secret scanners).
 * Store rw_token_hash of the whole key. Returns 0, -EINVAL or RW_ECRYPTO.
 */
int rw_apikey_generate(const char *prefix, char *out, size_t cap);

/**
 * Checks the shape of a presented API key ("<prefix>_<43 chars>", prefix as
 * above) before any lookup. Returns 0 or RW_EPARSE.
 */
int rw_apikey_check_format(const char *key, size_t len);

/** Compares a[0..n) and b[0..n) in time independent of their contents.
 * Returns 1 if equal, else 0. */
int rw_ct_equal(const void *a, const void *b, size_t n);

/** Compares two NUL-terminated strings in time that depends only on their
 * lengths (the lengths are not secret). Returns 1 if equal, else 0. */
int rw_ct_streq(const char *a, const char *b);

#ifdef __cplusplus
}
#endif
#endif /* REELWAY_AUTH_H */
