/* Signing keys: generated here, sealed under the master key in MongoDB, one
 * current key elected per generation, rotated by age, and published (current
 * and previous ones) for as long as a token they signed can still be valid.
 *
 * A key document in signing_keys:
 *   _id            the kid
 *   generation     1, 2, ... (unique index: one key per generation)
 *   alg            "RS256" / "ES256"
 *   created_at     when it was made
 *   sign_until     it signs until then (created_at + USERPOOL_KEY_ROTATION_S)
 *   publish_until  sign_until + token lifetime + margin: in the JWKS until then
 *   public_jwk     the public JWK, as served
 *   sealed_private rw_jwk_seal envelope of the private key (AES-256-GCM, kid as AAD)
 *   master_key_id  fingerprint of the master key it is sealed under
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reelway/error.h"
#include "userpool.h"

/* A verification set older than this is refetched; an unknown kid refetches
 * it sooner, but at most once per UNKNOWN_KID_REFETCH_MS. */
#define VERIFY_SET_MAX_AGE_MS (60 * 1000)
#define UNKNOWN_KID_REFETCH_MS (5 * 1000)
/* Rotation attempts before giving up (each loss means another environment
 * just inserted a key, which the next attempt uses). */
#define ELECTION_ATTEMPTS 5

/* Keeps key as the process's signer until sign_until_ms (the cache takes its
 * own reference). */
static void cache_signer(up_app_t *app, rw_jwk_t *key, int64_t sign_until_ms)
{
    pthread_mutex_lock(&app->lock);
    rw_jwk_free(app->signer);
    app->signer = rw_jwk_ref(key);
    app->signer_until_ms = sign_until_ms;
    pthread_mutex_unlock(&app->lock);
}

/* Makes a key for generation gen and tries to insert it. 0: it is the current
 * key (*out); -EEXIST: another environment won this generation. */
static int create_key(up_db_t *db, int64_t gen, int64_t now_ms, rw_jwk_t **out,
                      int64_t *sign_until_ms)
{
    up_app_t *app = db->app;
    rw_jwk_t *key = NULL;
    char *sealed = NULL, *jwk_text = NULL;
    cJSON *jwk = NULL;
    bson_t *public_jwk = NULL;
    bson_t doc = BSON_INITIALIZER;
    bson_error_t error;
    int rc;

    if ((rc = rw_jwk_generate(app->cfg.key_kind, &key)) != 0 ||
        (rc = rw_jwk_seal(key, &app->master_key, &sealed)) != 0)
        goto out;
    rc = -ENOMEM;
    if ((jwk = rw_jwk_to_json(key)) == NULL || (jwk_text = cJSON_PrintUnformatted(jwk)) == NULL)
        goto out;
    if ((public_jwk = bson_new_from_json((const uint8_t *)jwk_text, -1, &error)) == NULL) {
        snprintf(db->error, sizeof db->error, "public JWK: %s", error.message);
        rc = RW_EPARSE;
        goto out;
    }
    int64_t sign_until = now_ms + app->cfg.key_rotation_s * 1000;
    int64_t publish_until = sign_until + (int64_t)(UP_TOKEN_TTL_S + UP_PUBLISH_MARGIN_S) * 1000;
    BSON_APPEND_UTF8(&doc, "_id", rw_jwk_kid(key));
    BSON_APPEND_INT64(&doc, "generation", gen);
    BSON_APPEND_UTF8(&doc, "alg", rw_jwt_alg_name(rw_jwk_alg(key)));
    BSON_APPEND_DATE_TIME(&doc, "created_at", now_ms);
    BSON_APPEND_DATE_TIME(&doc, "sign_until", sign_until);
    BSON_APPEND_DATE_TIME(&doc, "publish_until", publish_until);
    BSON_APPEND_DOCUMENT(&doc, "public_jwk", public_jwk);
    BSON_APPEND_UTF8(&doc, "sealed_private", sealed);
    BSON_APPEND_UTF8(&doc, "master_key_id", app->master_key_id);
    mongoc_collection_t *c = up_db_coll(db, UP_COLL_KEYS);
    bool ok = mongoc_collection_insert_one(c, &doc, NULL, NULL, &error);
    mongoc_collection_destroy(c);
    if (!ok) {
        rc = up_db_error(db, &error);
        goto out;
    }
    rw_runtime_log(NULL, RW_RUNTIME_INFO, "signing key %s (%s, generation %lld) created",
                   rw_jwk_kid(key), rw_jwt_alg_name(rw_jwk_alg(key)), (long long)gen);
    *out = key;
    *sign_until_ms = sign_until;
    key = NULL;
    rc = 0;
out:
    rw_jwk_free(key);
    free(sealed);
    cJSON_Delete(jwk);
    cJSON_free(jwk_text);
    if (public_jwk)
        bson_destroy(public_jwk);
    bson_destroy(&doc);
    return rc;
}

/* Opens the key of a signing_keys document. RW_EAUTH when it was sealed under
 * another master key (or its envelope does not open). */
static int open_key(up_db_t *db, const bson_t *doc, rw_jwk_t **out)
{
    const char *kid = up_bson_str(doc, "_id");
    const char *sealed = up_bson_str(doc, "sealed_private");
    const char *mk_id = up_bson_str(doc, "master_key_id");
    const char *alg = up_bson_str(doc, "alg");
    if (kid == NULL || sealed == NULL) {
        snprintf(db->error, sizeof db->error, "signing key document without _id or key");
        return RW_EPARSE;
    }
    if (mk_id == NULL || strcmp(mk_id, db->app->master_key_id) != 0) {
        snprintf(db->error, sizeof db->error,
                 "signing key %s is sealed under another master key (%s, this one is %s)", kid,
                 mk_id ? mk_id : "unknown", db->app->master_key_id);
        return RW_EAUTH;
    }
    int rc = rw_jwk_unseal(&db->app->master_key, sealed, strlen(sealed), kid,
                           alg ? rw_jwt_alg_parse(alg) : RW_JWT_ALG_INVALID, out);
    if (rc != 0)
        snprintf(db->error, sizeof db->error, "signing key %s does not open: %s", kid,
                 rw_strerror(rc));
    return rc;
}

int up_keys_signer(up_db_t *db, rw_jwk_t **key)
{
    up_app_t *app = db->app;
    int64_t now = up_now_ms();
    int rc;

    if (app->master_key_id[0] == '\0') { /* a handler that holds no master key */
        snprintf(db->error, sizeof db->error, "this handler holds no master key");
        return RW_ECONFIG;
    }
    pthread_mutex_lock(&app->lock);
    if (app->signer != NULL && now < app->signer_until_ms) {
        *key = rw_jwk_ref(app->signer);
        pthread_mutex_unlock(&app->lock);
        return 0;
    }
    pthread_mutex_unlock(&app->lock);

    bson_t *opts = BCON_NEW("sort", "{", "generation", BCON_INT32(-1), "}");
    bson_t filter = BSON_INITIALIZER;
    for (int attempt = 0; attempt < ELECTION_ATTEMPTS; attempt++) {
        bson_t *cur = NULL;
        if ((rc = up_db_find_one(db, UP_COLL_KEYS, &filter, opts, &cur)) != 0)
            break;
        int64_t gen = 1;
        if (cur != NULL) {
            gen = up_bson_int(cur, "generation", 0) + 1;
            int64_t sign_until = up_bson_date(cur, "sign_until", 0);
            if (now < sign_until) {
                rw_jwk_t *k = NULL;
                rc = open_key(db, cur, &k);
                bson_destroy(cur);
                if (rc == 0) {
                    cache_signer(app, k, sign_until);
                    *key = k;
                    break;
                }
                /* In production a key this process cannot open means a wrong
                 * master key here, not a reason to replace everyone's key. */
                if (app->cfg.production) {
                    rw_runtime_log(NULL, RW_RUNTIME_ERROR, "%s", db->error);
                    rc = rc == RW_EPARSE ? rc : RW_EAUTH;
                    break;
                }
                rw_runtime_log(NULL, RW_RUNTIME_WARN, "%s; development mode: rotating to a new key",
                               db->error);
            } else {
                bson_destroy(cur);
            }
        }
        int64_t sign_until = 0;
        rw_jwk_t *k = NULL;
        rc = create_key(db, gen, now, &k, &sign_until);
        if (rc == 0) {
            cache_signer(app, k, sign_until);
            *key = k;
            break;
        }
        if (rc != -EEXIST)
            break;
        rc = RW_EDB; /* lost this generation: the next round reads the winner */
        snprintf(db->error, sizeof db->error, "no signing key after %d elections",
                 ELECTION_ATTEMPTS);
    }
    bson_destroy(opts);
    bson_destroy(&filter);
    return rc;
}

/* The public key of one document, or NULL (logged) when it is unusable. */
static rw_jwk_t *public_key_of(const bson_t *doc)
{
    bson_iter_t it;
    const uint8_t *data;
    uint32_t len;
    bson_t sub;
    rw_jwk_t *key = NULL;
    const char *msg = NULL;

    if (!bson_iter_init_find(&it, doc, "public_jwk") || !BSON_ITER_HOLDS_DOCUMENT(&it))
        return NULL;
    bson_iter_document(&it, &len, &data);
    if (!bson_init_static(&sub, data, len))
        return NULL;
    char *text = bson_as_relaxed_extended_json(&sub, NULL);
    cJSON *json = text ? cJSON_Parse(text) : NULL;
    bson_free(text);
    if (json == NULL || rw_jwk_from_json(json, &key, &msg) != 0) {
        rw_runtime_log(NULL, RW_RUNTIME_WARN, "signing key %s: unusable public JWK (%s)",
                       up_bson_str(doc, "_id") ? up_bson_str(doc, "_id") : "?",
                       msg ? msg : "not JSON");
        key = NULL;
    }
    cJSON_Delete(json);
    return key;
}

int up_keys_published(up_db_t *db, rw_jwks_t **out)
{
    bson_t *filter = BCON_NEW("publish_until", "{", "$gt", BCON_DATE_TIME(up_now_ms()), "}");
    bson_t *opts = BCON_NEW("sort", "{", "generation", BCON_INT32(-1), "}", "limit",
                            BCON_INT64(UP_JWKS_PUBLISHED_MAX));
    bson_error_t error;
    const bson_t *doc;
    int rc = 0;

    rw_jwks_t *set = rw_jwks_new();
    if (set == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    mongoc_collection_t *c = up_db_coll(db, UP_COLL_KEYS);
    mongoc_cursor_t *cursor = mongoc_collection_find_with_opts(c, filter, opts, NULL);
    while (mongoc_cursor_next(cursor, &doc)) {
        rw_jwk_t *key = public_key_of(doc);
        if (key == NULL)
            continue;
        int add = rw_jwks_add(set, key);
        rw_jwk_free(key);
        if (add != 0 && add != -EEXIST) {
            rc = add;
            break;
        }
    }
    if (rc == 0 && mongoc_cursor_error(cursor, &error))
        rc = up_db_error(db, &error);
    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(c);
out:
    bson_destroy(filter);
    bson_destroy(opts);
    if (rc != 0) {
        rw_jwks_free(set);
        set = NULL;
    }
    *out = set;
    return rc;
}

/* A new set holding references to the same keys. */
static rw_jwks_t *jwks_copy(const rw_jwks_t *from)
{
    rw_jwks_t *set = rw_jwks_new();
    for (size_t i = 0; set != NULL && i < rw_jwks_count(from); i++) {
        if (rw_jwks_add(set, (rw_jwk_t *)rw_jwks_get(from, i)) != 0) {
            rw_jwks_free(set);
            set = NULL;
        }
    }
    return set;
}

int up_keys_verify_set(up_db_t *db, const char *kid, rw_jwks_t **out)
{
    up_app_t *app = db->app;
    int64_t now = up_now_ms();
    int rc = 0;

    pthread_mutex_lock(&app->lock);
    int64_t age = now - app->verify_fetched_ms;
    bool fresh = app->verify_set != NULL && age < VERIFY_SET_MAX_AGE_MS;
    bool known = fresh && (kid == NULL || rw_jwks_find(app->verify_set, kid) != NULL);
    if (!known && !(fresh && age < UNKNOWN_KID_REFETCH_MS)) {
        rw_jwks_t *set = NULL;
        if ((rc = up_keys_published(db, &set)) == 0) {
            rw_jwks_free(app->verify_set);
            app->verify_set = set;
            app->verify_fetched_ms = now;
        }
    }
    *out = rc == 0 && app->verify_set ? jwks_copy(app->verify_set) : NULL;
    if (rc == 0 && *out == NULL)
        rc = -ENOMEM;
    pthread_mutex_unlock(&app->lock);
    return rc;
}
