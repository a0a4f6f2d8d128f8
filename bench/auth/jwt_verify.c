/* How many JWT verifications one core does: RS256 (RSA-2048) and ES256 (P-256)
 * through rw_jwt_verify with a cached key set, and the bare OpenSSL signature
 * check for comparison. Feeds the bench/auth budget; not a test.
 *   rw_bench_jwt [seconds per measurement, default 2] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "reelway/auth.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs verify() in batches until `seconds` have passed; returns calls per second. */
static double rate(int (*verify)(void *), void *arg, double seconds)
{
    double start = now_s(), elapsed;
    long n = 0;

    do {
        for (int i = 0; i < 256; i++) {
            if (verify(arg) != 0) {
                fprintf(stderr, "verification failed\n");
                exit(1);
            }
        }
        n += 256;
        elapsed = now_s() - start;
    } while (elapsed < seconds);
    return (double)n / elapsed;
}

struct job {
    const rw_jwks_t *set;
    const char *token;
    rw_jwt_verify_opts_t opts;
    EVP_PKEY *pkey; /* for the bare check */
    uint8_t sig[512];
    size_t sig_len;
};

static int full_verify(void *arg)
{
    struct job *j = arg;
    rw_jwt_t *jwt = NULL;
    rw_jwt_status_t st = rw_jwt_verify(j->set, j->token, strlen(j->token), &j->opts, &jwt, NULL);
    rw_jwt_free(jwt);
    return st == RW_JWT_OK ? 0 : -1;
}

static int bare_verify(void *arg)
{
    struct job *j = arg;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const char *dot2 = strrchr(j->token, '.');
    int ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, j->pkey) == 1 &&
             EVP_DigestVerify(ctx, j->sig, j->sig_len, (const uint8_t *)j->token,
                              (size_t)(dot2 - j->token)) == 1;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -1;
}

/* The public EVP_PKEY and a DER signature, for the bare OpenSSL check. */
static void prepare_bare(struct job *j, const rw_jwk_t *key)
{
    char *pem = NULL;
    size_t len = 0;
    BIO *bio;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY *priv;
    const char *dot2 = strrchr(j->token, '.');

    rw_jwk_private_pem(key, &pem, &len);
    bio = BIO_new_mem_buf(pem, (int)len);
    priv = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    j->sig_len = sizeof j->sig;
    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, priv);
    EVP_DigestSign(ctx, j->sig, &j->sig_len, (const uint8_t *)j->token, (size_t)(dot2 - j->token));
    j->pkey = priv;
    EVP_MD_CTX_free(ctx);
    BIO_free(bio);
    rw_secret_free(pem, len);
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    static const char *const aud[] = {"app"};
    rw_jwk_kind_t kinds[] = {RW_JWK_RSA2048, RW_JWK_EC_P256};
    const char *names[] = {"RS256", "ES256"};
    double full[2], bare[2];

    for (int k = 0; k < 2; k++) {
        rw_jwk_t *key = NULL;
        rw_jwks_t *set = rw_jwks_new();
        char *token = NULL, *json = NULL;
        rw_jwks_t *public_set = NULL;
        cJSON *claims = cJSON_Parse("{\"iss\":\"https://issuer.example\",\"aud\":\"app\","
                                    "\"sub\":\"user-1\",\"exp\":4102444800,"
                                    "\"scope\":\"reels/read reels/write\"}");
        struct job j = {0};

        if (rw_jwk_generate(kinds[k], &key) != 0 || rw_jwks_add(set, key) != 0 ||
            rw_jwks_to_json(set, &json) != 0 ||
            rw_jwks_parse(json, strlen(json), &public_set, NULL) != 0 ||
            rw_jwt_sign(key, RW_JWT_ALG_INVALID, NULL, claims, &token) != 0) {
            fprintf(stderr, "setup failed\n");
            return 1;
        }
        j.set = public_set;
        j.token = token;
        j.opts.issuer = "https://issuer.example";
        j.opts.audiences = aud;
        j.opts.n_audiences = 1;
        j.opts.clock_skew_s = 60;
        prepare_bare(&j, key);
        full[k] = rate(full_verify, &j, seconds);
        bare[k] = rate(bare_verify, &j, seconds);
        printf("%s: rw_jwt_verify %.0f/s, bare OpenSSL verify %.0f/s (token %zu bytes)\n", names[k],
               full[k], bare[k], strlen(token));
        EVP_PKEY_free(j.pkey);
        cJSON_Delete(claims);
        free(token);
        free(json);
        rw_jwks_free(public_set);
        rw_jwks_free(set);
        rw_jwk_free(key);
    }
    printf("jwt_verify: rs256=%.0f es256=%.0f per second on one core\n", full[0], full[1]);
    return 0;
}
