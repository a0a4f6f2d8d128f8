/* Tokens: the ID and access JWTs a login or refresh answers with, and the
 * opaque refresh tokens, stored as SHA-256 hashes in families (one per
 * login) so that a reused token revokes everything descended from its login.
 *
 * refresh_families: {_id: family id, user_id, auth_time, created_at,
 *                    expires_at, revoked_at?, revoked_reason?}
 * refresh_tokens:   {_id: SHA-256 of the token, family, user_id, parent,
 *                    created_at, expires_at, used_at?}
 * parent is the hash of the token this one replaced ("family:<id>" for the
 * first token of a login); its unique index lets each token be rotated once.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "reelway/error.h"
#include "userpool.h"

void up_token_set_free(up_token_set_t *t)
{
    free(t->id_token);
    free(t->access_token);
    t->id_token = t->access_token = NULL;
    OPENSSL_cleanse(t->refresh_token, sizeof t->refresh_token);
}

/* ---- JWTs --------------------------------------------------------------------------- */

/* The claims both tokens carry (RFC 7519, OpenID Connect Core §2). */
static cJSON *base_claims(const up_config_t *cfg, const up_user_t *user, int64_t now,
                          int64_t auth_time, const char *token_use)
{
    char jti[RW_TOKEN_LEN + 1];
    cJSON *c = cJSON_CreateObject();
    if (c == NULL || rw_token_generate(jti) != 0) {
        cJSON_Delete(c);
        return NULL;
    }
    cJSON_AddStringToObject(c, "iss", cfg->issuer);
    cJSON_AddStringToObject(c, "sub", user->id);
    cJSON_AddStringToObject(c, "aud", cfg->audience);
    cJSON_AddNumberToObject(c, "iat", (double)now);
    cJSON_AddNumberToObject(c, "exp", (double)(now + UP_TOKEN_TTL_S));
    cJSON_AddNumberToObject(c, "auth_time", (double)auth_time);
    cJSON_AddStringToObject(c, "token_use", token_use);
    cJSON_AddStringToObject(c, "jti", jti);
    return c;
}

int up_tokens_sign(up_db_t *db, const up_user_t *user, int64_t auth_time, up_token_set_t *t)
{
    const up_config_t *cfg = &db->app->cfg;
    rw_jwk_t *key = NULL;
    cJSON *id = NULL, *access = NULL;
    int rc;

    if ((rc = up_keys_signer(db, &key)) != 0)
        return rc;
    int64_t now = up_now_ms() / 1000;
    id = base_claims(cfg, user, now, auth_time, "id");
    access = base_claims(cfg, user, now, auth_time, "access");
    rc = -ENOMEM;
    if (id == NULL || access == NULL)
        goto out;
    cJSON_AddStringToObject(id, "preferred_username", user->handle);
    cJSON_AddStringToObject(id, "email", user->email);
    cJSON_AddBoolToObject(id, "email_verified", false);
    /* Access tokens follow RFC 9068 (typ at+jwt, client_id, scope) and keep
     * Cognito's names too (token_use, username), so API Gateway's JWT
     * authorizer and OAuth resource servers both read them. */
    cJSON_AddStringToObject(access, "client_id", cfg->audience);
    cJSON_AddStringToObject(access, "scope", cfg->scopes);
    cJSON_AddStringToObject(access, "username", user->handle);
    if ((rc = rw_jwt_sign(key, RW_JWT_ALG_INVALID, "JWT", id, &t->id_token)) != 0 ||
        (rc = rw_jwt_sign(key, RW_JWT_ALG_INVALID, "at+jwt", access, &t->access_token)) != 0)
        goto out;
    rc = 0;
out:
    cJSON_Delete(id);
    cJSON_Delete(access);
    rw_jwk_free(key);
    return rc;
}

/* ---- users ----------------------------------------------------------------------------- */

int up_user_find_by_id(up_db_t *db, const char *id, bson_t **user)
{
    bson_oid_t oid;
    *user = NULL;
    if (id == NULL || !bson_oid_is_valid(id, strlen(id)) || strlen(id) != 24)
        return 0;
    bson_oid_init_from_string(&oid, id);
    bson_t *filter = BCON_NEW("_id", BCON_OID(&oid));
    int rc = up_db_find_one(db, UP_COLL_USERS, filter, NULL, user);
    bson_destroy(filter);
    return rc;
}

bool up_user_from_doc(const bson_t *doc, up_user_t *user, char id_buf[25])
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_OID(&it))
        return false;
    bson_oid_to_string(bson_iter_oid(&it), id_buf);
    user->id = id_buf;
    user->handle = up_bson_str(doc, "handle");
    user->email = up_bson_str(doc, "email");
    return user->handle != NULL && user->email != NULL;
}

/* ---- refresh tokens -------------------------------------------------------------------- */

/* A new refresh token and its hash. */
static int new_token(char token[RW_TOKEN_LEN + 1], char hash[RW_TOKEN_HASH_LEN + 1])
{
    int rc = rw_token_generate(token);
    return rc ? rc : rw_token_hash(token, RW_TOKEN_LEN, hash);
}

/* Hashes a presented token after checking its shape (43 base64url
 * characters); false for anything else, which cannot be one of ours. */
static bool presented_hash(const char *presented, char hash[RW_TOKEN_HASH_LEN + 1])
{
    if (presented == NULL || strlen(presented) != RW_TOKEN_LEN)
        return false;
    for (const char *p = presented; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return rw_token_hash(presented, RW_TOKEN_LEN, hash) == 0;
}

static int insert_token(up_db_t *db, const char *hash, const char *family, const char *user_id,
                        const char *parent, int64_t now, int64_t expires_at)
{
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(hash), "family", BCON_UTF8(family), "user_id",
                           BCON_UTF8(user_id), "parent", BCON_UTF8(parent), "created_at",
                           BCON_DATE_TIME(now), "expires_at", BCON_DATE_TIME(expires_at));
    bson_error_t error;
    mongoc_collection_t *c = up_db_coll(db, UP_COLL_REFRESH);
    int rc = mongoc_collection_insert_one(c, doc, NULL, NULL, &error) ? 0 : up_db_error(db, &error);
    mongoc_collection_destroy(c);
    bson_destroy(doc);
    return rc;
}

int up_refresh_start(up_db_t *db, const char *user_id, int64_t auth_time, up_token_set_t *t)
{
    char family[RW_TOKEN_LEN + 1], parent[sizeof "family:" + RW_TOKEN_LEN];
    char hash[RW_TOKEN_HASH_LEN + 1];
    bson_error_t error;
    int rc;

    if ((rc = rw_token_generate(family)) != 0 || (rc = new_token(t->refresh_token, hash)) != 0)
        return rc;
    int64_t now = up_now_ms();
    int64_t expires_at = now + db->app->cfg.refresh_ttl_s * 1000;
    bson_t *doc = BCON_NEW("_id", BCON_UTF8(family), "user_id", BCON_UTF8(user_id), "auth_time",
                           BCON_INT64(auth_time), "created_at", BCON_DATE_TIME(now), "expires_at",
                           BCON_DATE_TIME(expires_at));
    mongoc_collection_t *c = up_db_coll(db, UP_COLL_FAMILIES);
    rc = mongoc_collection_insert_one(c, doc, NULL, NULL, &error) ? 0 : up_db_error(db, &error);
    mongoc_collection_destroy(c);
    bson_destroy(doc);
    if (rc != 0)
        return rc == -EEXIST ? RW_EDB : rc;
    snprintf(parent, sizeof parent, "family:%s", family);
    rc = insert_token(db, hash, family, user_id, parent, now, expires_at);
    return rc == -EEXIST ? RW_EDB : rc;
}

/* Marks a family revoked (idempotent: a revoked family keeps its first reason). */
static int revoke_family(up_db_t *db, const char *family, const char *reason)
{
    bson_t *filter =
        BCON_NEW("_id", BCON_UTF8(family), "revoked_at", "{", "$exists", BCON_BOOL(false), "}");
    bson_t *update = BCON_NEW("$set", "{", "revoked_at", BCON_DATE_TIME(up_now_ms()),
                              "revoked_reason", BCON_UTF8(reason), "}");
    bson_error_t error;
    mongoc_collection_t *c = up_db_coll(db, UP_COLL_FAMILIES);
    int rc = mongoc_collection_update_one(c, filter, update, NULL, NULL, &error)
                 ? 0
                 : up_db_error(db, &error);
    mongoc_collection_destroy(c);
    bson_destroy(filter);
    bson_destroy(update);
    return rc;
}

static int find_by_id(up_db_t *db, const char *coll, const char *id, bson_t **out)
{
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
    int rc = up_db_find_one(db, coll, filter, NULL, out);
    bson_destroy(filter);
    return rc;
}

int up_refresh_rotate(up_db_t *db, const char *presented, up_token_set_t *t, bson_t **user,
                      int64_t *auth_time, up_refresh_status_t *status)
{
    char hash[RW_TOKEN_HASH_LEN + 1], next_hash[RW_TOKEN_HASH_LEN + 1];
    bson_t *tok = NULL, *fam = NULL, *fam_after = NULL;
    int rc = 0;

    *user = NULL;
    *status = UP_REFRESH_INVALID;
    if (!presented_hash(presented, hash))
        return 0;
    if ((rc = find_by_id(db, UP_COLL_REFRESH, hash, &tok)) != 0 || tok == NULL)
        goto out;
    const char *family = up_bson_str(tok, "family");
    const char *user_id = up_bson_str(tok, "user_id");
    if (family == NULL || user_id == NULL)
        goto out;
    if ((rc = find_by_id(db, UP_COLL_FAMILIES, family, &fam)) != 0)
        goto out;
    int64_t now = up_now_ms();
    if (fam == NULL || up_bson_date(fam, "revoked_at", -1) >= 0) {
        *status = UP_REFRESH_REVOKED;
        goto out;
    }
    int64_t expires_at = up_bson_date(tok, "expires_at", 0);
    if (now >= expires_at) {
        *status = UP_REFRESH_EXPIRED;
        goto out;
    }
    if ((rc = up_user_find_by_id(db, user_id, user)) != 0)
        goto out;
    if (*user == NULL) {
        *status = UP_REFRESH_NO_USER;
        rc = revoke_family(db, family, "account deleted");
        goto out;
    }
    /* The decisive step: only one successor per token can be inserted. */
    if ((rc = new_token(t->refresh_token, next_hash)) != 0)
        goto out;
    rc = insert_token(db, next_hash, family, user_id, hash, now, expires_at);
    if (rc == -EEXIST) {
        *status = UP_REFRESH_REUSED;
        rw_runtime_log(NULL, RW_RUNTIME_WARN,
                       "refresh token reused: family %.8s... of user %s revoked", family, user_id);
        rc = revoke_family(db, family, "reuse");
        goto out;
    }
    if (rc != 0)
        goto out;
    /* A reuse detected by another environment between our checks and our
     * insert revoked the family: the successor is born dead, say so now. */
    if ((rc = find_by_id(db, UP_COLL_FAMILIES, family, &fam_after)) != 0)
        goto out;
    if (fam_after == NULL || up_bson_date(fam_after, "revoked_at", -1) >= 0) {
        *status = UP_REFRESH_REVOKED;
        goto out;
    }
    /* For audits and the janitor; the unique parent is what enforces single use. */
    bson_t *filter = BCON_NEW("_id", BCON_UTF8(hash));
    bson_t *update = BCON_NEW("$set", "{", "used_at", BCON_DATE_TIME(now), "}");
    mongoc_collection_t *c = up_db_coll(db, UP_COLL_REFRESH);
    mongoc_collection_update_one(c, filter, update, NULL, NULL, NULL);
    mongoc_collection_destroy(c);
    bson_destroy(filter);
    bson_destroy(update);
    *auth_time = up_bson_int(fam, "auth_time", now / 1000);
    *status = UP_REFRESH_OK;
out:
    if (*status != UP_REFRESH_OK || rc != 0) {
        OPENSSL_cleanse(t->refresh_token, sizeof t->refresh_token);
        if (*user != NULL)
            bson_destroy(*user);
        *user = NULL;
    }
    if (tok)
        bson_destroy(tok);
    if (fam)
        bson_destroy(fam);
    if (fam_after)
        bson_destroy(fam_after);
    return rc;
}

int up_refresh_revoke(up_db_t *db, const char *presented, bool *found)
{
    char hash[RW_TOKEN_HASH_LEN + 1];
    bson_t *tok = NULL;
    int rc;

    *found = false;
    if (!presented_hash(presented, hash))
        return 0;
    if ((rc = find_by_id(db, UP_COLL_REFRESH, hash, &tok)) != 0 || tok == NULL)
        return rc;
    const char *family = up_bson_str(tok, "family");
    if (family != NULL) {
        *found = true;
        rc = revoke_family(db, family, "logout");
    }
    bson_destroy(tok);
    return rc;
}
