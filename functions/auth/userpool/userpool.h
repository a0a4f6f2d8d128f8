/* Private to the user-pool function (functions/auth/userpool): its
 * configuration, the state kept across warm invocations, and the pieces the
 * handlers are built from. Nothing here is a public reelway API.
 *
 * Reading order: config.c (environment, master key), http.c (API Gateway
 * v2.0 events in, proxy responses out), validate.c (handle and email rules),
 * db.c (mongoc adapter, indexes), keys.c (signing keys: sealed, elected,
 * rotated, published), tokens.c (ID/access JWTs, refresh-token families),
 * throttle.c (failed logins), handlers.c (the routes), main.c.
 *
 * Concurrency model: the database may be MongoDB or FerretDB, and every
 * decision that several gateways can race on (unique handle/email, which key
 * is current, a refresh token used once, the failed-login counter) is made by
 * an insert that a unique index either accepts or refuses. Read-modify-write
 * update operators ($inc, findAndModify with a filter) are not used for those
 * decisions: FerretDB 1.x runs them without isolation between connections.
 */
#ifndef REELWAY_USERPOOL_H
#define REELWAY_USERPOOL_H

#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cJSON.h>

#include "reelway/auth.h"
#include "reelway/runtime.h"

/* Access and ID tokens live one hour, as Cognito's do. */
#define UP_TOKEN_TTL_S 3600
/* Leeway for exp/nbf/iat when the function verifies a bearer token itself. */
#define UP_CLOCK_SKEW_S 60
/* A retired key stays in the JWKS this long past the expiry of the last token
 * it can have signed (clock skew between gateways, consumers' JWKS caches). */
#define UP_PUBLISH_MARGIN_S 300
/* At most this many keys are published (newest first). */
#define UP_JWKS_PUBLISHED_MAX 16
/* Request bodies larger than this are refused before parsing. */
#define UP_BODY_MAX (16 * 1024)

/* Collections, in $DATABASE_NAME. */
#define UP_COLL_USERS "users"
#define UP_COLL_FAMILIES "refresh_families"
#define UP_COLL_REFRESH "refresh_tokens"
#define UP_COLL_KEYS "signing_keys"
#define UP_COLL_THROTTLE "login_throttle"

/* ---- configuration (config.c) --------------------------------------------------- */

typedef struct up_config_s {
    char *mongodb_uri;           /* MONGODB_URI */
    char *database;              /* DATABASE_NAME */
    char *issuer;                /* TOKEN_ISSUER: iss of every token */
    char *audience;              /* TOKEN_AUDIENCE: aud and client_id */
    char *scopes;                /* TOKEN_SCOPES: scope of access tokens, space-separated */
    char *base_url;              /* PUBLIC_URL, else the issuer: where the endpoints live */
    char *jwks_uri;              /* USERPOOL_JWKS_URI, else base_url + /.well-known/jwks.json */
    rw_jwk_kind_t key_kind;      /* USERPOOL_SIGNING_ALG: RS256 (RSA 2048) or ES256 (P-256) */
    int64_t key_rotation_s;      /* USERPOOL_KEY_ROTATION_S: a key signs this long */
    int64_t refresh_ttl_s;       /* REFRESH_TOKEN_TTL_S: a login's refresh tokens last this long */
    int login_slow_after;        /* LOGIN_SLOW_AFTER: failures before delays start */
    int login_lock_after;        /* LOGIN_LOCK_AFTER: failures that lock the account */
    int64_t login_delay_base_ms; /* LOGIN_DELAY_BASE_MS: first delay, doubled per failure */
    int64_t login_delay_max_ms;  /* LOGIN_DELAY_MAX_MS */
    int64_t login_lock_s;        /* LOGIN_LOCK_S: how long a lock lasts */
    rw_password_params_t argon2; /* USERPOOL_ARGON2_OPSLIMIT / _MEMLIMIT_MIB (0: defaults) */
    bool production;             /* USERPOOL_MODE=production (the default) */
    char *dev_key_file;          /* USERPOOL_DEV_KEY_FILE (development mode only) */
} up_config_t;

/**
 * Reads the configuration from the environment into cfg (strings malloc'd,
 * freed by up_config_free). On a missing or invalid variable returns
 * RW_ECONFIG with a sentence in why. Any thread; reads getenv only.
 */
int up_config_load(up_config_t *cfg, char *why, size_t whylen);

/** Frees what up_config_load allocated. Accepts a zeroed cfg. */
void up_config_free(up_config_t *cfg);

/**
 * The master key that seals signing keys at rest: from USERPOOL_MASTER_KEY
 * (at least 32 characters, e.g. `openssl rand -base64 32`, stretched with
 * HKDF); without it, production mode refuses (RW_ECONFIG) and development
 * mode reads, or creates once (mode 0600, atomically against concurrent cold
 * starts), the file cfg->dev_key_file. *dev_file_used tells which happened.
 * id (17 bytes) receives a short fingerprint of the key, stored with each
 * sealed key so that a key sealed under another master key is recognised.
 */
int up_master_key_load(const up_config_t *cfg, rw_masterkey_t *mk, char id[17], bool *dev_file_used,
                       char *why, size_t whylen);

/* ---- the state kept across warm invocations (main.c) ----------------------------- */

typedef struct up_app_s {
    up_config_t cfg;
    mongoc_client_pool_t *pool;
    rw_masterkey_t master_key; /* login, refresh and well-known only */
    char master_key_id[17];
    bool indexes_ready;                    /* created once per process, retried until they are */
    char dummy_hash[RW_PASSWORD_HASH_MAX]; /* verified for unknown accounts (login only) */

    pthread_mutex_t lock;    /* guards the caches below */
    rw_jwk_t *signer;        /* the current signing key, with its private part */
    int64_t signer_until_ms; /* it signs until then */
    rw_jwks_t *verify_set;   /* published keys, for bearer tokens (/auth/me) */
    int64_t verify_fetched_ms;
} up_app_t;

/* ---- time ------------------------------------------------------------------------- */

/** Wall-clock time in Unix epoch milliseconds. Any thread. */
int64_t up_now_ms(void);

/* ---- API Gateway v2.0 events and proxy responses (http.c) ------------------------ */

/**
 * Parses the event's body as a JSON object (decoding base64 when
 * isBase64Encoded). Returns a new object (cJSON_Delete), or NULL when the body
 * is missing, over UP_BODY_MAX, or not a JSON object.
 */
cJSON *up_event_json_body(const cJSON *event);

/** A request header by lower-case name (v2.0 events' header names are
 * lower-case), or NULL. Borrowed from the event. */
const char *up_event_header(const cJSON *event, const char *name);

/** The event's raw path ("" when absent). Borrowed from the event. */
const char *up_event_path(const cJSON *event);

/** requestContext.authorizer.jwt.claims, as the gateway's JWT authorizer puts
 * them, or NULL. Borrowed from the event. */
const cJSON *up_event_jwt_claims(const cJSON *event);

/**
 * Completes inv with an API Gateway proxy response: statusCode, headers
 * content-type application/json and cache-control no-store (plus
 * retry-after when retry_after_s > 0), and body as the JSON text of body
 * (taken, deleted here; NULL: an empty body). Returns rw_runtime_respond_json's result.
 */
int up_respond(rw_invocation_t *inv, int status, cJSON *body, int64_t retry_after_s);

/** up_respond with {"message": message}. */
int up_respond_message(rw_invocation_t *inv, int status, const char *message);

/** up_respond with a custom headers object (taken) instead of the default ones. */
int up_respond_with_headers(rw_invocation_t *inv, int status, cJSON *headers, cJSON *body);

/* ---- handle and email rules (validate.c) ----------------------------------------- */

#define UP_HANDLE_MIN 3
#define UP_HANDLE_MAX 30
#define UP_EMAIL_MAX 254

/** Field errors of a sign-up form: up to 8 per field. */
typedef struct up_field_errors_s {
    rw_field_error_t items[24];
    size_t count;
} up_field_errors_t;

/** Appends one error (static strings) unless the list is full. */
void up_field_errors_add(up_field_errors_t *errs, const char *field, const char *code,
                         const char *message);

/**
 * Checks a handle: UP_HANDLE_MIN..UP_HANDLE_MAX characters of letters, digits,
 * '_' and '.', not starting or ending with '.', no "..", at least one letter,
 * not reserved. Appends what fails to errs. NULL handle: "handle_required".
 */
void up_check_handle(const char *handle, up_field_errors_t *errs);

/**
 * Checks an email address (ASCII, one '@', a dot-atom local part of at most 64
 * characters, a domain of at least two labels and an alphabetic top-level
 * label, at most UP_EMAIL_MAX bytes). NULL: "email_required".
 */
void up_check_email(const char *email, up_field_errors_t *errs);

/** Lower-cases ASCII letters of s into out (cap bytes, NUL-terminated).
 * Returns false if s does not fit. */
bool up_ascii_lower(const char *s, char *out, size_t cap);

/** {"handle": [{"code","message"}...], ...} for the errors, in field order. */
cJSON *up_field_errors_json(const up_field_errors_t *errs);

/* ---- database (db.c) --------------------------------------------------------------- */

/** One invocation's view of the database: a client popped from the pool. */
typedef struct up_db_s {
    up_app_t *app;
    mongoc_client_t *client;
    char error[256]; /* the last failure, for logs */
} up_db_t;

/** Pops a client (blocks until one is free). */
void up_db_open(up_db_t *db, up_app_t *app);

/** Returns the client to the pool. */
void up_db_close(up_db_t *db);

/** A collection handle of $DATABASE_NAME (mongoc_collection_destroy it). */
mongoc_collection_t *up_db_coll(up_db_t *db, const char *name);

/**
 * Converts a failed mongoc call: -EEXIST for a duplicate key (11000), else
 * RW_EDB; copies the message into db->error.
 */
int up_db_error(up_db_t *db, const bson_error_t *error);

/**
 * Creates the user pool's indexes if this process has not yet: unique
 * users.handle_lc and users.email_lc, unique refresh_tokens.parent, unique
 * signing_keys.generation, refresh_tokens.family, login_throttle (key, seq).
 * One index per command (FerretDB 1.24 fails a multi-index createIndexes
 * whose indexes exist). Returns 0 or RW_EDB.
 */
int up_db_ensure_indexes(up_db_t *db);

/** Finds one document; *out is a copy (bson_destroy) or NULL. opts may be NULL. */
int up_db_find_one(up_db_t *db, const char *coll, const bson_t *filter, const bson_t *opts,
                   bson_t **out);

/** Reads a string/int64/date field of a document (NULL / fallback when absent). */
const char *up_bson_str(const bson_t *doc, const char *key);
int64_t up_bson_int(const bson_t *doc, const char *key, int64_t fallback);
int64_t up_bson_date(const bson_t *doc, const char *key, int64_t fallback);

/* ---- signing keys (keys.c) ------------------------------------------------------- */

/**
 * The key to sign with now: the newest generation while it is within its
 * signing period and sealed under this master key. Otherwise a new key is
 * generated and inserted as the next generation; a unique index on the
 * generation elects one key when several environments rotate at once (the
 * losers use the winner's). *key gets a new reference (rw_jwk_free).
 * Blocking (database, RSA key generation). Returns 0, RW_EDB, RW_EAUTH (the
 * current key was sealed under another master key, in production), RW_ECONFIG
 * (this process holds no master key) or RW_ECRYPTO.
 */
int up_keys_signer(up_db_t *db, rw_jwk_t **key);

/**
 * The published keys: every key whose publish_until is in the future, newest
 * first, at most UP_JWKS_PUBLISHED_MAX. *set is new (rw_jwks_free).
 */
int up_keys_published(up_db_t *db, rw_jwks_t **set);

/**
 * The cached published set for verifying bearer tokens, refetched when older
 * than a minute or when kid is not in it (at most once every few seconds).
 * *set gets a new set holding references to the same keys (rw_jwks_free).
 */
int up_keys_verify_set(up_db_t *db, const char *kid, rw_jwks_t **set);

/* ---- tokens (tokens.c) ------------------------------------------------------------- */

/** The user fields tokens carry. Borrowed strings. */
typedef struct up_user_s {
    const char *id; /* 24 hex digits (the ObjectId) */
    const char *handle;
    const char *email;
} up_user_t;

/** What a successful login or refresh answers. */
typedef struct up_token_set_s {
    char *id_token;
    char *access_token;
    char refresh_token[RW_TOKEN_LEN + 1];
} up_token_set_t;

/** Frees the JWTs (the refresh token is wiped). */
void up_token_set_free(up_token_set_t *t);

/**
 * Signs an ID and an access token for user (auth_time: when the user logged
 * in, epoch seconds). Fills t->id_token / t->access_token.
 */
int up_tokens_sign(up_db_t *db, const up_user_t *user, int64_t auth_time, up_token_set_t *t);

/**
 * Starts a refresh-token family for a new login and writes its first token to
 * t->refresh_token. Returns 0 or RW_EDB / RW_ECRYPTO.
 */
int up_refresh_start(up_db_t *db, const char *user_id, int64_t auth_time, up_token_set_t *t);

/** Why a refresh token was refused. */
typedef enum up_refresh_status_e {
    UP_REFRESH_OK = 0,
    UP_REFRESH_INVALID, /* unknown or malformed */
    UP_REFRESH_EXPIRED,
    UP_REFRESH_REVOKED, /* its family was revoked (logout, or an earlier reuse) */
    UP_REFRESH_REUSED,  /* already rotated: the family is revoked now */
    UP_REFRESH_NO_USER, /* the account is gone: the family is revoked now */
} up_refresh_status_t;

/**
 * Rotates a refresh token: the presented token must be known, unexpired, and
 * its family unrevoked, and its account must still exist. Its successor is
 * inserted with parent = the presented token's hash under a unique index, so
 * of two uses of one token exactly one wins; the other finds the token used
 * and revokes the whole family (every token descended from that login, the
 * newest included). On success t->refresh_token is the new token, *user the
 * account's document (bson_destroy), *auth_time the login's time (epoch s).
 * Returns 0 with *status, or RW_EDB / RW_ECRYPTO.
 */
int up_refresh_rotate(up_db_t *db, const char *presented, up_token_set_t *t, bson_t **user,
                      int64_t *auth_time, up_refresh_status_t *status);

/** Finds a user by its id (24 hex digits); *user NULL when there is none. */
int up_user_find_by_id(up_db_t *db, const char *id, bson_t **user);

/** The token fields of a user document; false when a field is missing.
 * Strings are borrowed from doc; id is written to id_buf (25 bytes). */
bool up_user_from_doc(const bson_t *doc, up_user_t *user, char id_buf[25]);

/**
 * Revokes the family of a presented refresh token (logout). *found tells
 * whether the token was known. Returns 0 or RW_EDB.
 */
int up_refresh_revoke(up_db_t *db, const char *presented, bool *found);

/* ---- failed logins (throttle.c) -------------------------------------------------- */

/** What the throttle decided before a password check. */
typedef struct up_attempt_s {
    enum { UP_ATTEMPT_GO, UP_ATTEMPT_SLOWED, UP_ATTEMPT_LOCKED } verdict;
    int64_t retry_after_s; /* SLOWED / LOCKED: seconds to wait */
    /* GO: the claimed attempt, resolved by up_throttle_success/failure. */
    char key[80];
    int64_t seq;
    int failures; /* counting this attempt as failed until it succeeds */
} up_attempt_t;

/**
 * Claims a login attempt for key ("u:<user id>" or "i:<hash of an unknown
 * identifier>", so unknown accounts behave exactly like known ones): refused
 * while locked or inside a delay, else recorded as a failure in advance by
 * inserting the next state of the key's log under its unique _id. Parallel
 * attempts thus take turns. Returns 0 with *a filled, or RW_EDB.
 */
int up_throttle_claim(up_db_t *db, const char *key, up_attempt_t *a);

/** The claimed attempt succeeded: the counter starts over. */
int up_throttle_success(up_db_t *db, const up_attempt_t *a);

/**
 * The claimed attempt failed: past cfg.login_lock_after failures the key is
 * locked for cfg.login_lock_s; past cfg.login_slow_after its delay restarts
 * from now, so a slow password check does not shorten it. *retry_after_s (0
 * when no wait applies) says how long the next attempt must wait. Returns 0
 * or RW_EDB.
 */
int up_throttle_failure(up_db_t *db, const up_attempt_t *a, int64_t *retry_after_s);

/* ---- the handlers (handlers.c) ----------------------------------------------------- */

void up_on_signup(rw_invocation_t *inv);
void up_on_login(rw_invocation_t *inv);
void up_on_refresh(rw_invocation_t *inv);
void up_on_logout(rw_invocation_t *inv);
void up_on_me(rw_invocation_t *inv);
void up_on_well_known(rw_invocation_t *inv);

#endif
