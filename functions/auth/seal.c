/* Keys at rest: AES-256-GCM envelopes under a master key, so signing keys can
 * sit in MongoDB without the database alone being enough to forge tokens. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include "internal.h"
#include "reelway/error.h"

/* The version is part of the text and of the authenticated data: a future
 * "rwseal2." can change the algorithm without ambiguity. */
#define SEAL_PREFIX "rwseal1."
#define SEAL_PREFIX_LEN (sizeof SEAL_PREFIX - 1)
#define NONCE_LEN 12
#define TAG_LEN 16
#define SEAL_MAX_PLAINTEXT (1 << 20)

static const char hkdf_salt[] = "reelway/master-key";
static const char hkdf_info[] = "reelway key-at-rest v1";

void rw_masterkey_from_raw(rw_masterkey_t *mk, const uint8_t raw[32])
{
    memcpy(mk->bytes, raw, sizeof mk->bytes);
}

int rw_masterkey_derive(rw_masterkey_t *mk, const void *secret, size_t len)
{
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *ctx = NULL;
    OSSL_PARAM params[5];
    int rc = RW_ECRYPTO;

    if (secret == NULL || len < 16)
        return -EINVAL;
    if ((kdf = EVP_KDF_fetch(NULL, "HKDF", NULL)) == NULL || (ctx = EVP_KDF_CTX_new(kdf)) == NULL)
        goto out;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, len);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)hkdf_salt,
                                                  sizeof hkdf_salt - 1);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)hkdf_info,
                                                  sizeof hkdf_info - 1);
    params[4] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(ctx, mk->bytes, sizeof mk->bytes, params) == 1)
        rc = 0;
out:
    ERR_clear_error();
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return rc;
}

void rw_masterkey_wipe(rw_masterkey_t *mk)
{
    OPENSSL_cleanse(mk->bytes, sizeof mk->bytes);
}

void rw_secret_free(void *p, size_t len)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, len);
    free(p);
}

/* Feeds the associated data: the version prefix, then the caller's context.
 * The prefix has a fixed length, so the concatenation is unambiguous. */
static int add_aad(EVP_CIPHER_CTX *ctx, const char *context, int encrypt)
{
    int outl;
    int (*update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int) =
        encrypt ? EVP_EncryptUpdate : EVP_DecryptUpdate;

    if (update(ctx, NULL, &outl, (const unsigned char *)SEAL_PREFIX, (int)SEAL_PREFIX_LEN) != 1)
        return 0;
    if (context != NULL && context[0] != '\0' &&
        update(ctx, NULL, &outl, (const unsigned char *)context, (int)strlen(context)) != 1)
        return 0;
    return 1;
}

int rw_seal(const rw_masterkey_t *mk, const uint8_t *plaintext, size_t len, const char *context,
            char **out)
{
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t *buf = NULL; /* nonce || ciphertext || tag */
    char *text = NULL;
    size_t total = NONCE_LEN + len + TAG_LEN;
    int outl = 0, finl = 0, rc = RW_ECRYPTO;

    *out = NULL;
    if (len > SEAL_MAX_PLAINTEXT || (context != NULL && strlen(context) > 4096))
        return RW_ELIMIT;
    if ((buf = malloc(total)) == NULL ||
        (text = malloc(SEAL_PREFIX_LEN + rw_b64url_encoded_len(total) + 1)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    /* A random 96-bit nonce per envelope: fine for the handful of keys a
     * master key ever protects (far below GCM's 2^32 random-nonce bound). */
    if (RAND_bytes(buf, NONCE_LEN) != 1 || (ctx = EVP_CIPHER_CTX_new()) == NULL ||
        EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_EncryptInit_ex(ctx, NULL, NULL, mk->bytes, buf) != 1 || !add_aad(ctx, context, 1) ||
        EVP_EncryptUpdate(ctx, buf + NONCE_LEN, &outl, plaintext, (int)len) != 1 ||
        EVP_EncryptFinal_ex(ctx, buf + NONCE_LEN + outl, &finl) != 1 ||
        (size_t)(outl + finl) != len ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, buf + NONCE_LEN + len) != 1)
        goto out;
    memcpy(text, SEAL_PREFIX, SEAL_PREFIX_LEN);
    rw_b64url_encode(text + SEAL_PREFIX_LEN, rw_b64url_encoded_len(total) + 1, buf, total);
    *out = text;
    text = NULL;
    rc = 0;
out:
    ERR_clear_error();
    EVP_CIPHER_CTX_free(ctx);
    free(buf);
    free(text);
    return rc;
}

int rw_unseal(const rw_masterkey_t *mk, const char *envelope, size_t len, const char *context,
              uint8_t **out, size_t *out_len)
{
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t *buf = NULL, *plain = NULL;
    size_t buf_len = 0, body_len, pt_len = 0;
    int outl = 0, finl = 0, rc = RW_ECRYPTO;

    *out = NULL;
    *out_len = 0;
    if (len < SEAL_PREFIX_LEN || memcmp(envelope, SEAL_PREFIX, SEAL_PREFIX_LEN) != 0)
        return RW_EPARSE;
    body_len = len - SEAL_PREFIX_LEN;
    if (body_len > rw_b64url_encoded_len(NONCE_LEN + SEAL_MAX_PLAINTEXT + TAG_LEN))
        return RW_EPARSE;
    if (context != NULL && strlen(context) > 4096)
        return RW_ELIMIT;
    if ((buf = malloc(rw_b64url_decoded_max(body_len) + 1)) == NULL)
        return -ENOMEM;
    if (rw_b64url_decode(buf, rw_b64url_decoded_max(body_len) + 1, &buf_len,
                         envelope + SEAL_PREFIX_LEN, body_len) != 0 ||
        buf_len < NONCE_LEN + TAG_LEN) {
        rc = RW_EPARSE;
        goto out;
    }
    pt_len = buf_len - NONCE_LEN - TAG_LEN;
    if ((plain = malloc(pt_len + 1)) == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((ctx = EVP_CIPHER_CTX_new()) == NULL ||
        EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, mk->bytes, buf) != 1 || !add_aad(ctx, context, 0) ||
        EVP_DecryptUpdate(ctx, plain, &outl, buf + NONCE_LEN, (int)pt_len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, buf + NONCE_LEN + pt_len) != 1)
        goto out;
    /* Final checks the tag: until it passes, the plaintext is untrusted and
     * is wiped rather than returned. */
    if (EVP_DecryptFinal_ex(ctx, plain + outl, &finl) != 1) {
        rc = RW_EAUTH;
        goto out;
    }
    plain[pt_len] = '\0';
    *out = plain;
    *out_len = pt_len;
    plain = NULL;
    rc = 0;
out:
    ERR_clear_error();
    EVP_CIPHER_CTX_free(ctx);
    rw_secret_free(plain, pt_len + 1);
    free(buf);
    return rc;
}

int rw_jwk_seal(const rw_jwk_t *key, const rw_masterkey_t *mk, char **out)
{
    char *pem = NULL;
    size_t pem_len = 0;
    int rc;

    *out = NULL;
    if ((rc = rw_jwk_private_pem(key, &pem, &pem_len)) != 0)
        return rc;
    rc = rw_seal(mk, (const uint8_t *)pem, pem_len, key->kid, out);
    rw_secret_free(pem, pem_len);
    return rc;
}

int rw_jwk_unseal(const rw_masterkey_t *mk, const char *envelope, size_t len, const char *kid,
                  rw_jwt_alg_t alg, rw_jwk_t **out)
{
    uint8_t *pem = NULL;
    size_t pem_len = 0;
    int rc;

    *out = NULL;
    if (kid == NULL)
        return -EINVAL;
    if ((rc = rw_unseal(mk, envelope, len, kid, &pem, &pem_len)) != 0)
        return rc;
    rc = rw_jwk_from_pem((const char *)pem, pem_len, kid, alg, out);
    rw_secret_free(pem, pem_len);
    return rc;
}
