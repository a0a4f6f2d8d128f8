/* The user pool's bootstrap: one binary, a handler per route picked by
 * $_HANDLER (signup, login, refresh, logout, me, well-known), and the state
 * its warm invocations share (configuration, MongoDB client pool, master key,
 * key caches). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "reelway/error.h"
#include "userpool.h"

static void app_free(void *p)
{
    up_app_t *app = p;
    if (app == NULL)
        return;
    if (app->pool != NULL) {
        mongoc_client_pool_destroy(app->pool);
        mongoc_cleanup();
    }
    rw_jwk_free(app->signer);
    rw_jwks_free(app->verify_set);
    rw_masterkey_wipe(&app->master_key);
    pthread_mutex_destroy(&app->lock);
    up_config_free(&app->cfg);
    free(app);
}

static int on_init(rw_runtime_t *rt, void *arg)
{
    char why[512] = "";
    bool dev_file = false;
    int rc;

    up_app_t *app = calloc(1, sizeof *app);
    if (app == NULL)
        return rw_runtime_init_fail(rt, "Runtime.OutOfMemory", "no memory for the app state");
    pthread_mutex_init(&app->lock, NULL);
    /* Only the handlers that sign (or create the first key) hold the master
     * key: sign-up, logout and /auth/me never see it. */
    const char *handler = getenv("_HANDLER");
    bool signs =
        handler != NULL && (strcmp(handler, "login") == 0 || strcmp(handler, "refresh") == 0 ||
                            strcmp(handler, "well-known") == 0);
    if ((rc = up_config_load(&app->cfg, why, sizeof why)) != 0 ||
        (signs && (rc = up_master_key_load(&app->cfg, &app->master_key, app->master_key_id,
                                           &dev_file, why, sizeof why)) != 0)) {
        app_free(app);
        return rw_runtime_init_fail(rt, "UserPool.Config", "%s", why);
    }
    if (dev_file)
        rw_runtime_log(
            NULL, RW_RUNTIME_WARN,
            "USERPOOL_MASTER_KEY is not set: development mode, signing keys are "
            "sealed under the key in %s. Never use this in production: set "
            "USERPOOL_MASTER_KEY (`openssl rand -base64 32`) and USERPOOL_MODE=production",
            app->cfg.dev_key_file);

    mongoc_init();
    bson_error_t error;
    mongoc_uri_t *uri = mongoc_uri_new_with_error(app->cfg.mongodb_uri, &error);
    if (uri == NULL) {
        mongoc_cleanup();
        app_free(app);
        return rw_runtime_init_fail(rt, "UserPool.Config", "MONGODB_URI: %s", error.message);
    }
    app->pool = mongoc_client_pool_new(uri);
    mongoc_uri_destroy(uri);
    mongoc_client_pool_set_error_api(app->pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_set_appname(app->pool, "reelway-userpool");

    /* Login verifies a password for unknown accounts too: against this hash of
     * a random secret nobody knows, made with the same parameters. */
    if (handler != NULL && strcmp(handler, "login") == 0) {
        char secret[RW_TOKEN_LEN + 1];
        if ((rc = rw_token_generate(secret)) == 0)
            rc = rw_password_hash(app->dummy_hash, secret, RW_TOKEN_LEN, &app->cfg.argon2);
        OPENSSL_cleanse(secret, sizeof secret);
        if (rc != 0) {
            app_free(app);
            return rw_runtime_init_fail(rt, "UserPool.Init", "cannot hash: %s", rw_strerror(rc));
        }
    }
    rw_runtime_set_app(rt, app, app_free);
    return 0;
}

int main(void)
{
    rw_runtime_t *rt = rw_runtime_new();
    rw_runtime_on_init(rt, on_init, NULL);
    rw_runtime_register_blocking(rt, "signup", up_on_signup);
    rw_runtime_register_blocking(rt, "login", up_on_login);
    rw_runtime_register_blocking(rt, "refresh", up_on_refresh);
    rw_runtime_register_blocking(rt, "logout", up_on_logout);
    rw_runtime_register_blocking(rt, "me", up_on_me);
    rw_runtime_register_blocking(rt, "well-known", up_on_well_known);
    int status = rw_runtime_run(rt);
    rw_runtime_free(rt);
    return status;
}
