/* The user pool's routes, one blocking handler each (they run on the
 * runtime's threadpool and use synchronous mongoc): sign-up, login, refresh,
 * logout, the caller's profile, and the issuer's well-known documents. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "reelway/error.h"
#include "userpool.h"

/* The one answer to every wrong login, whether or not the account exists. */
static const char bad_credentials[] = "Incorrect handle, email or password.";

/* ---- shared -------------------------------------------------------------------------- */

/* Answers a failure that is ours, not the caller's, and logs why. */
static void respond_internal(rw_invocation_t *inv, up_db_t *db, const char *what, int rc)
{
    rw_runtime_log(inv, RW_RUNTIME_ERROR, "%s: %s%s%s", what, rw_strerror(rc),
                   db && db->error[0] ? ": " : "", db ? db->error : "");
    if (rc == RW_EDB)
        up_respond_message(inv, 503, "The user pool is unavailable; try again shortly.");
    else
        up_respond_message(inv, 500, "Internal server error");
}

/* Opens the database for an invocation and makes sure the indexes exist. */
static bool db_begin(rw_invocation_t *inv, up_db_t *db)
{
    up_db_open(db, inv->app);
    int rc = up_db_ensure_indexes(db);
    if (rc != 0) {
        respond_internal(inv, db, "creating the indexes", rc);
        up_db_close(db);
        return false;
    }
    return true;
}

static const char *json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void iso8601(int64_t ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The profile the API shows for a user document. */
static cJSON *profile_json(const bson_t *doc)
{
    up_user_t user;
    char id[25], created[32];
    if (!up_user_from_doc(doc, &user, id))
        return NULL;
    cJSON *out = cJSON_CreateObject();
    if (out == NULL)
        return NULL;
    iso8601(up_bson_date(doc, "created_at", 0), created);
    cJSON_AddStringToObject(out, "id", user.id);
    cJSON_AddStringToObject(out, "handle", user.handle);
    cJSON_AddStringToObject(out, "email", user.email);
    cJSON_AddBoolToObject(out, "email_verified", false);
    cJSON_AddStringToObject(out, "created_at", created);
    return out;
}

/* {id_token, access_token, refresh_token, expires_in, token_type}. */
static void respond_tokens(rw_invocation_t *inv, const up_token_set_t *t)
{
    cJSON *body = cJSON_CreateObject();
    if (body != NULL) {
        cJSON_AddStringToObject(body, "id_token", t->id_token);
        cJSON_AddStringToObject(body, "access_token", t->access_token);
        cJSON_AddStringToObject(body, "refresh_token", t->refresh_token);
        cJSON_AddNumberToObject(body, "expires_in", UP_TOKEN_TTL_S);
        cJSON_AddStringToObject(body, "token_type", "Bearer");
    }
    up_respond(inv, 200, body, 0);
}

static void respond_invalid_body(rw_invocation_t *inv)
{
    up_respond_message(inv, 400, "The request body must be a JSON object.");
}

/* ---- POST /auth/signup ----------------------------------------------------------------- */

/* After a duplicate-key refusal: which of handle and email is taken. */
static int taken_fields(up_db_t *db, const char *handle_lc, const char *email_lc,
                        up_field_errors_t *errs)
{
    const char *fields[2] = {"handle_lc", "email_lc"};
    const char *values[2] = {handle_lc, email_lc};
    for (int i = 0; i < 2; i++) {
        bson_t *filter = BCON_NEW(fields[i], BCON_UTF8(values[i]));
        bson_t *doc = NULL;
        int rc = up_db_find_one(db, UP_COLL_USERS, filter, NULL, &doc);
        bson_destroy(filter);
        if (rc != 0)
            return rc;
        if (doc == NULL)
            continue;
        bson_destroy(doc);
        if (i == 0)
            up_field_errors_add(errs, "handle", "handle_taken", "That handle is already taken.");
        else
            up_field_errors_add(errs, "email", "email_taken",
                                "An account with that email already exists.");
    }
    return 0;
}

void up_on_signup(rw_invocation_t *inv)
{
    up_app_t *app = inv->app;
    up_field_errors_t errs = {0};
    char handle_lc[UP_HANDLE_MAX + 1], email_lc[UP_EMAIL_MAX + 1];
    char hash[RW_PASSWORD_HASH_MAX];
    up_db_t db = {0};
    bson_t *doc = NULL;
    int rc;

    cJSON *body = up_event_json_body(inv->event);
    if (body == NULL) {
        respond_invalid_body(inv);
        return;
    }
    const char *handle = json_str(body, "handle");
    const char *email = json_str(body, "email");
    const char *password = json_str(body, "password");
    up_check_handle(handle, &errs);
    up_check_email(email, &errs);
    if (password == NULL || *password == '\0') {
        up_field_errors_add(&errs, "password", "password_required", "Password is required.");
    } else {
        rw_field_error_t perrs[RW_PASSWORD_RULES];
        size_t n =
            rw_password_check(password, strlen(password), handle, email, perrs, RW_PASSWORD_RULES);
        for (size_t i = 0; i < n && i < RW_PASSWORD_RULES; i++)
            up_field_errors_add(&errs, perrs[i].field, perrs[i].code, perrs[i].message);
    }
    if (errs.count > 0) {
        cJSON *out = cJSON_CreateObject();
        if (out != NULL) {
            cJSON_AddStringToObject(out, "message", "Some fields are not valid.");
            cJSON_AddItemToObject(out, "errors", up_field_errors_json(&errs));
        }
        up_respond(inv, 400, out, 0);
        goto out;
    }
    up_ascii_lower(handle, handle_lc, sizeof handle_lc);
    up_ascii_lower(email, email_lc, sizeof email_lc);

    /* Hashing takes tens of milliseconds and memlimit bytes: the threadpool
     * is where it belongs. */
    if ((rc = rw_password_hash(hash, password, strlen(password), &app->cfg.argon2)) != 0) {
        respond_internal(inv, NULL, "hashing a password", rc);
        goto out;
    }
    if (!db_begin(inv, &db))
        goto out;
    int64_t now = up_now_ms();
    bson_oid_t oid;
    bson_oid_init(&oid, NULL);
    doc = BCON_NEW("_id", BCON_OID(&oid), "handle", BCON_UTF8(handle), "handle_lc",
                   BCON_UTF8(handle_lc), "email", BCON_UTF8(email), "email_lc", BCON_UTF8(email_lc),
                   "email_verified", BCON_BOOL(false), "password_hash", BCON_UTF8(hash),
                   "created_at", BCON_DATE_TIME(now), "updated_at", BCON_DATE_TIME(now));
    bson_error_t error;
    mongoc_collection_t *c = up_db_coll(&db, UP_COLL_USERS);
    rc = mongoc_collection_insert_one(c, doc, NULL, NULL, &error) ? 0 : up_db_error(&db, &error);
    mongoc_collection_destroy(c);
    if (rc == -EEXIST) {
        /* The unique indexes decided; now find out which one refused. */
        up_field_errors_t taken = {0};
        if ((rc = taken_fields(&db, handle_lc, email_lc, &taken)) != 0) {
            respond_internal(inv, &db, "signup", rc);
            goto out;
        }
        if (taken.count == 0) /* the other account went away meanwhile: rare */
            up_field_errors_add(&taken, "handle", "handle_taken",
                                "That handle or email was just taken; try again.");
        cJSON *out = cJSON_CreateObject();
        if (out != NULL) {
            cJSON_AddStringToObject(out, "message", taken.items[0].message);
            cJSON_AddItemToObject(out, "errors", up_field_errors_json(&taken));
        }
        up_respond(inv, 409, out, 0);
        goto out;
    }
    if (rc != 0) {
        respond_internal(inv, &db, "signup", rc);
        goto out;
    }
    char id[25];
    bson_oid_to_string(&oid, id);
    rw_runtime_log(inv, RW_RUNTIME_INFO, "signup: user %s", id);
    up_respond(inv, 201, profile_json(doc), 0);
out:
    OPENSSL_cleanse(hash, sizeof hash);
    if (doc)
        bson_destroy(doc);
    up_db_close(&db);
    cJSON_Delete(body);
}

/* ---- POST /auth/login ------------------------------------------------------------------ */

/* Sets a better hash after a successful login when the parameters changed. */
static void maybe_rehash(rw_invocation_t *inv, up_db_t *db, const bson_t *user,
                         const char *password)
{
    const char *encoded = up_bson_str(user, "password_hash");
    char hash[RW_PASSWORD_HASH_MAX];
    bson_iter_t it;
    if (encoded == NULL || rw_password_needs_rehash(encoded, &db->app->cfg.argon2) != 1 ||
        !bson_iter_init_find(&it, user, "_id") ||
        rw_password_hash(hash, password, strlen(password), &db->app->cfg.argon2) != 0)
        return;
    bson_t *filter = BCON_NEW("_id", BCON_OID(bson_iter_oid(&it)));
    bson_t *update = BCON_NEW("$set", "{", "password_hash", BCON_UTF8(hash), "updated_at",
                              BCON_DATE_TIME(up_now_ms()), "}");
    mongoc_collection_t *c = up_db_coll(db, UP_COLL_USERS);
    if (mongoc_collection_update_one(c, filter, update, NULL, NULL, NULL))
        rw_runtime_log(inv, RW_RUNTIME_INFO, "login: password hash upgraded");
    mongoc_collection_destroy(c);
    bson_destroy(filter);
    bson_destroy(update);
    OPENSSL_cleanse(hash, sizeof hash);
}

void up_on_login(rw_invocation_t *inv)
{
    up_app_t *app = inv->app;
    up_db_t db = {0};
    bson_t *user = NULL;
    up_token_set_t tokens = {0};
    char lc[UP_EMAIL_MAX + 1], key[80];
    int rc;

    cJSON *body = up_event_json_body(inv->event);
    if (body == NULL) {
        respond_invalid_body(inv);
        return;
    }
    const char *email = json_str(body, "email");
    const char *handle = json_str(body, "handle");
    const char *password = json_str(body, "password");
    const char *login = email ? email : handle;
    if (login == NULL || *login == '\0' || password == NULL) {
        up_field_errors_t errs = {0};
        if (login == NULL || *login == '\0')
            up_field_errors_add(&errs, "handle", "login_required",
                                "Give your handle or your email.");
        if (password == NULL)
            up_field_errors_add(&errs, "password", "password_required", "Password is required.");
        cJSON *out = cJSON_CreateObject();
        if (out != NULL) {
            cJSON_AddStringToObject(out, "message", "Give a handle or an email, and a password.");
            cJSON_AddItemToObject(out, "errors", up_field_errors_json(&errs));
        }
        up_respond(inv, 400, out, 0);
        goto out;
    }
    if (!db_begin(inv, &db))
        goto out;

    /* Look the account up; an identifier too long to be one is simply unknown. */
    bool fits = up_ascii_lower(login, lc, sizeof lc);
    if (fits) {
        bson_t *filter = BCON_NEW(email ? "email_lc" : "handle_lc", BCON_UTF8(lc));
        rc = up_db_find_one(&db, UP_COLL_USERS, filter, NULL, &user);
        bson_destroy(filter);
        if (rc != 0) {
            respond_internal(inv, &db, "login", rc);
            goto out;
        }
    }
    up_user_t u = {0};
    char user_id[25];
    if (user != NULL && !up_user_from_doc(user, &u, user_id)) {
        respond_internal(inv, &db, "login: malformed user document", RW_EPARSE);
        goto out;
    }
    /* Unknown identifiers are throttled under a key of their own, so that
     * slowing down and locking look the same whether the account exists. */
    if (user != NULL) {
        snprintf(key, sizeof key, "u:%s", u.id);
    } else {
        char material[UP_EMAIL_MAX + 16], hash[RW_TOKEN_HASH_LEN + 1];
        int n = snprintf(material, sizeof material, "%s:%.*s", email ? "email" : "handle",
                         UP_EMAIL_MAX, fits ? lc : login);
        if ((rc = rw_token_hash(material, (size_t)n, hash)) != 0) {
            respond_internal(inv, &db, "login", rc);
            goto out;
        }
        snprintf(key, sizeof key, "i:%s", hash);
    }
    up_attempt_t attempt;
    if ((rc = up_throttle_claim(&db, key, &attempt)) != 0) {
        respond_internal(inv, &db, "login throttle", rc);
        goto out;
    }
    if (attempt.verdict != UP_ATTEMPT_GO) {
        char message[200];
        bool locked = attempt.verdict == UP_ATTEMPT_LOCKED;
        if (locked)
            snprintf(message, sizeof message,
                     "Too many failed logins: this account is locked. Try again in %lld "
                     "minute%s.",
                     (long long)((attempt.retry_after_s + 59) / 60),
                     attempt.retry_after_s > 60 ? "s" : "");
        else
            snprintf(message, sizeof message, "Too many failed logins. Try again in %lld second%s.",
                     (long long)attempt.retry_after_s, attempt.retry_after_s > 1 ? "s" : "");
        cJSON *out = cJSON_CreateObject();
        if (out != NULL) {
            cJSON_AddStringToObject(out, "message", message);
            cJSON_AddStringToObject(out, "error", locked ? "account_locked" : "too_many_attempts");
            cJSON_AddNumberToObject(out, "retry_after", (double)attempt.retry_after_s);
        }
        up_respond(inv, locked ? 423 : 429, out, attempt.retry_after_s);
        goto out;
    }

    /* Unknown accounts cost one Argon2 verification too (of a hash nobody
     * knows the password of), so timing does not tell them apart. */
    const char *encoded = user ? up_bson_str(user, "password_hash") : app->dummy_hash;
    rc = encoded ? rw_password_verify(encoded, password, strlen(password)) : RW_EPARSE;
    if (rc != 0 && rc != RW_EAUTH) {
        /* The attempt stays counted: an error must not reset the counter. */
        respond_internal(inv, &db, "login: verifying the password", rc);
        goto out;
    }
    if (user == NULL || rc != 0) {
        int64_t retry_after = 0;
        if ((rc = up_throttle_failure(&db, &attempt, &retry_after)) != 0) {
            respond_internal(inv, &db, "login throttle", rc);
            goto out;
        }
        /* Retry-After already says when the next attempt will be heard. */
        cJSON *out = cJSON_CreateObject();
        if (out != NULL)
            cJSON_AddStringToObject(out, "message", bad_credentials);
        up_respond(inv, 401, out, retry_after);
        goto out;
    }
    if ((rc = up_throttle_success(&db, &attempt)) != 0) {
        respond_internal(inv, &db, "login throttle", rc);
        goto out;
    }
    maybe_rehash(inv, &db, user, password);
    int64_t auth_time = up_now_ms() / 1000;
    if ((rc = up_refresh_start(&db, u.id, auth_time, &tokens)) != 0 ||
        (rc = up_tokens_sign(&db, &u, auth_time, &tokens)) != 0) {
        respond_internal(inv, &db, "login: issuing tokens", rc);
        goto out;
    }
    rw_runtime_log(inv, RW_RUNTIME_INFO, "login: user %s", u.id);
    respond_tokens(inv, &tokens);
out:
    up_token_set_free(&tokens);
    if (user)
        bson_destroy(user);
    up_db_close(&db);
    cJSON_Delete(body);
}

/* ---- POST /auth/refresh and /auth/logout ------------------------------------------------ */

/* The refresh_token member of the body, or NULL after answering 400. */
static const char *body_refresh_token(rw_invocation_t *inv, const cJSON *body)
{
    if (body == NULL) {
        respond_invalid_body(inv);
        return NULL;
    }
    const char *token = json_str(body, "refresh_token");
    if (token == NULL || *token == '\0') {
        up_field_errors_t errs = {0};
        up_field_errors_add(&errs, "refresh_token", "refresh_token_required",
                            "refresh_token is required.");
        cJSON *out = cJSON_CreateObject();
        if (out != NULL) {
            cJSON_AddStringToObject(out, "message", "refresh_token is required.");
            cJSON_AddItemToObject(out, "errors", up_field_errors_json(&errs));
        }
        up_respond(inv, 400, out, 0);
        return NULL;
    }
    return token;
}

void up_on_refresh(rw_invocation_t *inv)
{
    static const char *const messages[] = {
        [UP_REFRESH_INVALID] = "The refresh token is not valid.",
        [UP_REFRESH_EXPIRED] = "The refresh token has expired; log in again.",
        [UP_REFRESH_REVOKED] = "The refresh token has been revoked; log in again.",
        [UP_REFRESH_REUSED] = "The refresh token was already used: every session of that "
                              "login is now revoked. Log in again.",
        [UP_REFRESH_NO_USER] = "The refresh token is not valid.",
    };
    up_db_t db = {0};
    up_token_set_t tokens = {0};
    bson_t *user = NULL;
    int rc;

    cJSON *body = up_event_json_body(inv->event);
    const char *presented = body_refresh_token(inv, body);
    if (presented == NULL || !db_begin(inv, &db))
        goto out;
    up_refresh_status_t status;
    int64_t auth_time = 0;
    if ((rc = up_refresh_rotate(&db, presented, &tokens, &user, &auth_time, &status)) != 0) {
        respond_internal(inv, &db, "refresh", rc);
        goto out;
    }
    if (status != UP_REFRESH_OK) {
        cJSON *out = cJSON_CreateObject();
        if (out != NULL) {
            cJSON_AddStringToObject(out, "message", messages[status]);
            cJSON_AddStringToObject(out, "error", "invalid_grant");
        }
        up_respond(inv, 401, out, 0);
        goto out;
    }
    up_user_t u;
    char user_id[25];
    if (!up_user_from_doc(user, &u, user_id)) {
        respond_internal(inv, &db, "refresh: malformed user document", RW_EPARSE);
        goto out;
    }
    if ((rc = up_tokens_sign(&db, &u, auth_time, &tokens)) != 0) {
        respond_internal(inv, &db, "refresh: signing tokens", rc);
        goto out;
    }
    respond_tokens(inv, &tokens);
out:
    up_token_set_free(&tokens);
    if (user)
        bson_destroy(user);
    up_db_close(&db);
    cJSON_Delete(body);
}

void up_on_logout(rw_invocation_t *inv)
{
    up_db_t db = {0};
    int rc;

    cJSON *body = up_event_json_body(inv->event);
    const char *presented = body_refresh_token(inv, body);
    if (presented == NULL || !db_begin(inv, &db))
        goto out;
    /* An unknown token is not an error: logging out twice, or with a token
     * that already expired, leaves the caller logged out either way (RFC 7009 §2.2). */
    bool found = false;
    if ((rc = up_refresh_revoke(&db, presented, &found)) != 0) {
        respond_internal(inv, &db, "logout", rc);
        goto out;
    }
    if (found)
        rw_runtime_log(inv, RW_RUNTIME_INFO, "logout: a refresh-token family revoked");
    up_respond(inv, 204, NULL, 0);
out:
    up_db_close(&db);
    cJSON_Delete(body);
}

/* ---- GET /auth/me ------------------------------------------------------------------------ */

/* The kid of a compact JWS's header, into kid (cap bytes); false if none. */
static bool jwt_kid(const char *token, char *kid, size_t cap)
{
    const char *dot = strchr(token, '.');
    if (dot == NULL || dot == token || (size_t)(dot - token) > 2048)
        return false;
    uint8_t header[2048];
    size_t len;
    if (rw_b64url_decode(header, sizeof header, &len, token, (size_t)(dot - token)) != 0)
        return false;
    cJSON *h = cJSON_ParseWithLength((const char *)header, len);
    const char *k = json_str(h, "kid");
    bool ok = k != NULL && strlen(k) < cap;
    if (ok)
        snprintf(kid, cap, "%s", k);
    cJSON_Delete(h);
    return ok;
}

/* Until the gateway's JWT authorizer fills requestContext.authorizer, the
 * function checks the bearer token itself, against the published keys, with
 * the same rules the authorizer applies (signature, iss, aud, exp/nbf/iat). */
static rw_jwt_status_t verify_bearer(up_db_t *db, const char *authorization, char sub[128])
{
    const up_config_t *cfg = &db->app->cfg;
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
        return RW_JWT_EFORMAT;
    const char *token = authorization + 7;
    while (*token == ' ')
        token++;
    char kid[RW_JWK_KID_MAX + 1];
    if (!jwt_kid(token, kid, sizeof kid))
        return RW_JWT_EHEADER;
    rw_jwks_t *set = NULL;
    if (up_keys_verify_set(db, kid, &set) != 0)
        return RW_JWT_EINTERNAL;
    const char *audiences[] = {cfg->audience};
    rw_jwt_verify_opts_t opts = {
        .issuer = cfg->issuer,
        .audiences = audiences,
        .n_audiences = 1,
        .clock_skew_s = UP_CLOCK_SKEW_S,
    };
    rw_jwt_t *jwt = NULL;
    rw_jwt_error_t err;
    rw_jwt_status_t status = rw_jwt_verify(set, token, strlen(token), &opts, &jwt, &err);
    rw_jwks_free(set);
    if (status == RW_JWT_OK) {
        /* ID tokens say who logged in; only access tokens grant API calls. */
        const char *use = rw_jwt_claim_string(jwt, "token_use");
        const char *s = rw_jwt_claim_string(jwt, "sub");
        if (use == NULL || strcmp(use, "access") != 0 || s == NULL || strlen(s) >= 128)
            status = RW_JWT_ECLAIM;
        else
            snprintf(sub, 128, "%s", s);
    }
    rw_jwt_free(jwt);
    return status;
}

void up_on_me(rw_invocation_t *inv)
{
    up_db_t db = {0};
    bson_t *user = NULL;
    char sub[128] = "";
    int rc;

    if (!db_begin(inv, &db))
        return;
    /* The gateway's JWT authorizer verified the token and passed its claims
     * (as strings): trusted, as a function behind API Gateway trusts them.
     * It accepts ID tokens too (their aud matches); only access tokens are
     * for API calls, as in the bearer path below. */
    const cJSON *claims = up_event_jwt_claims(inv->event);
    const char *claimed = json_str(claims, "sub");
    const char *use = json_str(claims, "token_use");
    if (claimed != NULL) {
        if (use != NULL && strcmp(use, "access") != 0) {
            rw_runtime_log(inv, RW_RUNTIME_INFO, "me: authorizer claims refused (token_use %s)",
                           use);
            up_respond_message(inv, 401, "Unauthorized");
            goto out;
        }
        snprintf(sub, sizeof sub, "%s", claimed);
        rw_runtime_log(inv, RW_RUNTIME_INFO, "me: user %s from the authorizer's claims", sub);
    } else {
        rw_jwt_status_t status =
            verify_bearer(&db, up_event_header(inv->event, "authorization"), sub);
        if (status == RW_JWT_EINTERNAL) {
            respond_internal(inv, &db, "me: loading the keys", RW_EDB);
            goto out;
        }
        if (status != RW_JWT_OK) {
            rw_runtime_log(inv, RW_RUNTIME_INFO, "me: bearer token refused (%s)",
                           rw_jwt_status_name(status));
            up_respond_message(inv, 401, "Unauthorized");
            goto out;
        }
        rw_runtime_log(inv, RW_RUNTIME_INFO, "me: user %s from a bearer token verified here", sub);
    }
    if ((rc = up_user_find_by_id(&db, sub, &user)) != 0) {
        respond_internal(inv, &db, "me", rc);
        goto out;
    }
    if (user == NULL) {
        up_respond_message(inv, 404, "No such user.");
        goto out;
    }
    cJSON *profile = profile_json(user);
    if (profile == NULL) {
        respond_internal(inv, &db, "me: malformed user document", RW_EPARSE);
        goto out;
    }
    up_respond(inv, 200, profile, 0);
out:
    if (user)
        bson_destroy(user);
    up_db_close(&db);
}

/* ---- GET /.well-known/jwks.json and /.well-known/openid-configuration ------------------ */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static cJSON *string_array(const char *const *items, size_t n)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a != NULL && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(items[i]));
    return a;
}

/* OpenID Connect Discovery 1.0 §3: what a relying party or JWT authorizer
 * needs to verify reelway's tokens. reelway has no authorization endpoint (its
 * login is a JSON API), so none is advertised. */
static cJSON *discovery(const up_config_t *cfg, const rw_jwks_t *published)
{
    cJSON *d = cJSON_CreateObject();
    if (d == NULL)
        return NULL;
    char url[2048];
    cJSON_AddStringToObject(d, "issuer", cfg->issuer);
    cJSON_AddStringToObject(d, "jwks_uri", cfg->jwks_uri);
    snprintf(url, sizeof url, "%s/auth/me", cfg->base_url);
    cJSON_AddStringToObject(d, "userinfo_endpoint", url);
    static const char *const response_types[] = {"token", "id_token"};
    static const char *const subject_types[] = {"public"};
    static const char *const grant_types[] = {"password", "refresh_token"};
    static const char *const auth_methods[] = {"none"};
    static const char *const claims[] = {
        "iss",       "sub",           "aud",   "exp", "iat",      "auth_time",
        "token_use", "client_id",     "scope", "jti", "username", "preferred_username",
        "email",     "email_verified"};
    cJSON_AddItemToObject(d, "response_types_supported", string_array(response_types, 2));
    cJSON_AddItemToObject(d, "subject_types_supported", string_array(subject_types, 1));
    /* The algorithm keys are made with now, and any other still published. */
    cJSON *algs = cJSON_AddArrayToObject(d, "id_token_signing_alg_values_supported");
    const char *current = cfg->key_kind == RW_JWK_EC_P256 ? "ES256" : "RS256";
    cJSON_AddItemToArray(algs, cJSON_CreateString(current));
    for (size_t i = 0; published != NULL && i < rw_jwks_count(published); i++) {
        const char *alg = rw_jwt_alg_name(rw_jwk_alg(rw_jwks_get(published, i)));
        bool seen = false;
        const cJSON *a;
        cJSON_ArrayForEach(a, algs)
        {
            seen |= strcmp(a->valuestring, alg) == 0;
        }
        if (!seen)
            cJSON_AddItemToArray(algs, cJSON_CreateString(alg));
    }
    /* The scopes, split from TOKEN_SCOPES. */
    cJSON *scopes = cJSON_AddArrayToObject(d, "scopes_supported");
    char *copy = strdup(cfg->scopes);
    char *save = NULL;
    for (char *s = copy ? strtok_r(copy, " ", &save) : NULL; s; s = strtok_r(NULL, " ", &save))
        cJSON_AddItemToArray(scopes, cJSON_CreateString(s));
    free(copy);
    cJSON_AddItemToObject(d, "claims_supported",
                          string_array(claims, sizeof claims / sizeof claims[0]));
    cJSON_AddItemToObject(d, "grant_types_supported", string_array(grant_types, 2));
    cJSON_AddItemToObject(d, "token_endpoint_auth_methods_supported",
                          string_array(auth_methods, 1));
    return d;
}

void up_on_well_known(rw_invocation_t *inv)
{
    up_app_t *app = inv->app;
    up_db_t db = {0};
    rw_jwks_t *published = NULL;
    rw_jwk_t *signer = NULL;
    int rc;

    const char *path = up_event_path(inv->event);
    bool jwks = ends_with(path, "/.well-known/jwks.json");
    if (!jwks && !ends_with(path, "/.well-known/openid-configuration")) {
        up_respond_message(inv, 404, "Not Found");
        return;
    }
    if (!db_begin(inv, &db))
        return;
    /* A fresh deployment gets its first key here, so a JWT authorizer that
     * fetches the keys before anyone logged in finds one. The key set is
     * served even if that fails (a missing master key is logged). */
    if ((rc = up_keys_signer(&db, &signer)) != 0)
        rw_runtime_log(inv, RW_RUNTIME_WARN, "no current signing key: %s%s%s", rw_strerror(rc),
                       db.error[0] ? ": " : "", db.error);
    rw_jwk_free(signer);
    if ((rc = up_keys_published(&db, &published)) != 0) {
        respond_internal(inv, &db, "loading the published keys", rc);
        goto out;
    }
    cJSON *headers = cJSON_CreateObject();
    cJSON *body = NULL;
    if (jwks) {
        char *text = NULL;
        if ((rc = rw_jwks_to_json(published, &text)) == 0)
            body = cJSON_Parse(text);
        free(text);
    } else {
        body = discovery(&app->cfg, published);
    }
    if (headers == NULL || body == NULL) {
        cJSON_Delete(headers);
        cJSON_Delete(body);
        respond_internal(inv, &db, "well-known", -ENOMEM);
        goto out;
    }
    cJSON_AddStringToObject(headers, "content-type", "application/json");
    /* Consumers may cache the keys for five minutes: a token with a kid they
     * have not seen makes them fetch again, and a retired key stays published
     * UP_PUBLISH_MARGIN_S past the last token it signed. */
    cJSON_AddStringToObject(headers, "cache-control", "public, max-age=300");
    up_respond_with_headers(inv, 200, headers, body);
out:
    rw_jwks_free(published);
    up_db_close(&db);
}
