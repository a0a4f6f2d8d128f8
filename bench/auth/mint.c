/* rw_bench_mint: an issuer for bench/auth/run. Makes an EC P-256 key, writes
 * its public key set to JWKS_OUT (for the template's JwksFile) and prints
 * COUNT (1) tokens signed with it, one a line: iss ISSUER, aud AUDIENCE, sub
 * bench-user-N (each token distinct), valid for an hour.
 * Usage: rw_bench_mint JWKS_OUT ISSUER AUDIENCE [COUNT] */
#include "reelway/auth.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
    long count = argc == 5 ? atol(argv[4]) : 1;
    if (argc < 4 || argc > 5 || count < 1) {
        fprintf(stderr, "usage: %s JWKS_OUT ISSUER AUDIENCE [COUNT]\n", argv[0]);
        return 2;
    }
    int status = 1;
    rw_jwk_t *key = NULL;
    rw_jwks_t *keys = NULL;
    char *jwks = NULL, *token = NULL;
    cJSON *claims = NULL;
    FILE *f = NULL;
    if (rw_jwk_generate(RW_JWK_EC_P256, &key) != 0)
        goto out;
    keys = rw_jwks_new();
    if (keys == NULL || rw_jwks_add(keys, rw_jwk_ref(key)) != 0 || rw_jwks_to_json(keys, &jwks) != 0)
        goto out;
    f = fopen(argv[1], "w");
    if (f == NULL || fputs(jwks, f) < 0)
        goto out;
    long now = (long)time(NULL);
    for (long i = 0; i < count; i++) {
        char sub[64];
        snprintf(sub, sizeof sub, "bench-user-%ld", i);
        cJSON_Delete(claims);
        claims = cJSON_CreateObject();
        cJSON_AddStringToObject(claims, "iss", argv[2]);
        cJSON_AddStringToObject(claims, "aud", argv[3]);
        cJSON_AddStringToObject(claims, "sub", sub);
        cJSON_AddStringToObject(claims, "scope", "bench.read");
        cJSON_AddNumberToObject(claims, "iat", now);
        cJSON_AddNumberToObject(claims, "exp", now + 3600);
        free(token);
        token = NULL;
        if (rw_jwt_sign(key, RW_JWT_ALG_INVALID, NULL, claims, &token) != 0)
            goto out;
        printf("%s\n", token);
    }
    status = 0;
out:
    if (status != 0)
        fprintf(stderr, "rw_bench_mint: cannot make the key set or the token\n");
    if (f != NULL && fclose(f) != 0)
        status = 1;
    cJSON_Delete(claims);
    free(token);
    free(jwks);
    rw_jwks_free(keys);
    rw_jwk_free(key);
    return status;
}
