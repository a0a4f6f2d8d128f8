/* The user pool's pure parts (functions/auth/userpool): handle and email
 * rules, field errors as JSON, event bodies (JSON, base64, junk), the
 * configuration from the environment, and the master key in its three modes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "reelway/error.h"
#include "rw_http_client.h"
#include "rw_test.h"
#include "userpool.h"

/* The codes the rules gave, joined by spaces. */
static const char *codes(const up_field_errors_t *e)
{
    static char buf[512];
    buf[0] = '\0';
    for (size_t i = 0; i < e->count; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? " " : "",
                 e->items[i].code);
    return buf;
}

static const char *handle_codes(const char *handle)
{
    up_field_errors_t e = {0};
    up_check_handle(handle, &e);
    for (size_t i = 0; i < e.count; i++)
        assert_string_equal(e.items[i].field, "handle");
    return codes(&e);
}

static const char *email_codes(const char *email)
{
    up_field_errors_t e = {0};
    up_check_email(email, &e);
    for (size_t i = 0; i < e.count; i++)
        assert_string_equal(e.items[i].field, "email");
    return codes(&e);
}

static void handles(void **state)
{
    assert_string_equal(handle_codes("rosa"), "");
    assert_string_equal(handle_codes("Rosa_Lee.99"), "");
    assert_string_equal(handle_codes("_42"), "");
    assert_string_equal(handle_codes("abcdefghijklmnopqrstuvwxyz1234"), ""); /* 30 */
    assert_string_equal(handle_codes(NULL), "handle_required");
    assert_string_equal(handle_codes(""), "handle_required");
    assert_string_equal(handle_codes("ab"), "handle_too_short");
    assert_string_equal(handle_codes("abcdefghijklmnopqrstuvwxyz12345"), "handle_too_long");
    assert_string_equal(handle_codes("rosa lee"), "handle_invalid_chars");
    assert_string_equal(handle_codes("ros\xc3\xa1"), "handle_invalid_chars");
    assert_string_equal(handle_codes("rosa-lee"), "handle_invalid_chars");
    assert_string_equal(handle_codes(".rosa"), "handle_invalid_dots");
    assert_string_equal(handle_codes("rosa."), "handle_invalid_dots");
    assert_string_equal(handle_codes("ro..sa"), "handle_invalid_dots");
    assert_string_equal(handle_codes("2024"), "handle_no_letter");
    assert_string_equal(handle_codes("1.2"), "handle_no_letter");
    assert_string_equal(handle_codes("ADMIN"), "handle_reserved");
    assert_string_equal(handle_codes("me"), "handle_too_short handle_reserved");
    assert_string_equal(handle_codes("a!"), "handle_too_short handle_invalid_chars");
}

static void emails(void **state)
{
    assert_string_equal(email_codes("rosa@example.com"), "");
    assert_string_equal(email_codes("rosa.lee+reels@mail.example.co"), "");
    assert_string_equal(email_codes("o'neil@xn--bcher-kva.example"), "");
    assert_string_equal(email_codes(NULL), "email_required");
    assert_string_equal(email_codes(""), "email_required");
    const char *bad[] = {
        "rosa",
        "rosa@",
        "@example.com",
        "rosa@@example.com",
        "ro@sa@ex.com",
        ".rosa@ex.com",
        "rosa.@ex.com",
        "ro..sa@ex.com",
        "rosa@localhost",
        "rosa@ex.c",
        "rosa@ex.c0m",
        "rosa@-ex.com",
        "rosa@ex-.com",
        "rosa@ex..com",
        "rosa@ex.com.",
        "ro sa@ex.com",
        "rosa@ex_ample.com",
        "r\xc3\xb3sa@ex.com",
        "rosa@ex.com\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (strcmp(email_codes(bad[i]), "email_invalid") != 0)
            fail_msg("%s: got '%s'", bad[i], email_codes(bad[i]));
    }
    char local[80];
    memset(local, 'a', 65);
    strcpy(local + 65, "@x.io");
    assert_string_equal(email_codes(local), "email_invalid"); /* local part over 64 */
    char huge[300];
    memset(huge, 'a', 250);
    strcpy(huge + 250, "@example.com");
    assert_string_equal(email_codes(huge), "email_too_long");
}

static void field_errors_json(void **state)
{
    up_field_errors_t e = {0};
    up_field_errors_add(&e, "password", "password_too_short", "short");
    up_field_errors_add(&e, "email", "email_invalid", "bad");
    up_field_errors_add(&e, "password", "password_common", "common");
    cJSON *j = up_field_errors_json(&e);
    char *text = cJSON_PrintUnformatted(j);
    assert_string_equal(text, "{\"password\":[{\"code\":\"password_too_short\",\"message\":"
                              "\"short\"},{\"code\":\"password_common\",\"message\":\"common\"}],"
                              "\"email\":[{\"code\":\"email_invalid\",\"message\":\"bad\"}]}");
    free(text);
    cJSON_Delete(j);
    /* The list is bounded: extra errors are dropped, not overflowed. */
    for (int i = 0; i < 100; i++)
        up_field_errors_add(&e, "x", "c", "m");
    assert_int_equal(e.count, sizeof e.items / sizeof e.items[0]);
    char lower[8];
    assert_true(up_ascii_lower("AbC.9_Z", lower, sizeof lower));
    assert_string_equal(lower, "abc.9_z");
    assert_false(up_ascii_lower("ABCDEFGH", lower, sizeof lower));
}

/* An event with a body, as API Gateway sends it. */
static cJSON *event(const char *body, bool base64)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "version", "2.0");
    cJSON_AddStringToObject(e, "rawPath", "/auth/signup");
    if (body)
        cJSON_AddStringToObject(e, "body", body);
    cJSON_AddBoolToObject(e, "isBase64Encoded", base64);
    return e;
}

static bool body_parses(const char *body, bool base64)
{
    cJSON *e = event(body, base64);
    cJSON *j = up_event_json_body(e);
    bool ok = j != NULL;
    cJSON_Delete(j);
    cJSON_Delete(e);
    return ok;
}

static void event_bodies(void **state)
{
    cJSON *e = event("{\"handle\":\"rosa\"}", false);
    cJSON *j = up_event_json_body(e);
    assert_string_equal(cJSON_GetObjectItem(j, "handle")->valuestring, "rosa");
    cJSON_Delete(j);
    cJSON_Delete(e);
    assert_true(body_parses("  {}\r\n", false));
    /* {"a":1} in base64, as a body sent without a textual Content-Type comes. */
    assert_true(body_parses("eyJhIjoxfQ==", true));
    assert_true(body_parses("eyJhIjoxfSA=", true));
    assert_false(body_parses("eyJhIjoxfQ", true)); /* unpadded */
    assert_false(body_parses("!!!!", true));
    assert_false(body_parses(NULL, false));
    assert_false(body_parses("", false));
    assert_false(body_parses("[1]", false));
    assert_false(body_parses("\"s\"", false));
    assert_false(body_parses("{} {}", false));
    assert_false(body_parses("{}x", false));
    assert_false(body_parses("{\"a\":", false));
    /* A NUL inside a string would cut it short: refused. */
    assert_false(body_parses("{\"password\":\"Secret\\u0000-tail-1\"}", false));
    assert_true(body_parses("{\"password\":\"Secret\\u0001-tail-1\"}", false));
    char *big = malloc(UP_BODY_MAX + 16);
    memset(big, ' ', UP_BODY_MAX + 8);
    big[0] = '{';
    strcpy(big + UP_BODY_MAX + 8, "}");
    assert_false(body_parses(big, false));
    free(big);

    /* Headers, path and the authorizer's claims. */
    e = cJSON_Parse("{\"rawPath\":\"/auth/me\",\"headers\":{\"authorization\":\"Bearer x\"},"
                    "\"requestContext\":{\"authorizer\":{\"jwt\":{\"claims\":{\"sub\":\"42\"},"
                    "\"scopes\":null}}}}");
    assert_string_equal(up_event_header(e, "authorization"), "Bearer x");
    assert_null(up_event_header(e, "cookie"));
    assert_string_equal(up_event_path(e), "/auth/me");
    assert_string_equal(cJSON_GetObjectItem(up_event_jwt_claims(e), "sub")->valuestring, "42");
    cJSON_Delete(e);
    e = cJSON_Parse("{\"requestContext\":{}}");
    assert_null(up_event_jwt_claims(e));
    assert_string_equal(up_event_path(e), "");
    cJSON_Delete(e);
}

/* ---- configuration --------------------------------------------------------------- */

static void set_base_env(void)
{
    setenv("MONGODB_URI", "mongodb://127.0.0.1:1/", 1);
    setenv("DATABASE_NAME", "db", 1);
    setenv("TOKEN_ISSUER", "https://id.example/", 1);
    setenv("TOKEN_AUDIENCE", "app", 1);
    const char *unset[] = {"TOKEN_SCOPES",
                           "PUBLIC_URL",
                           "USERPOOL_JWKS_URI",
                           "USERPOOL_SIGNING_ALG",
                           "USERPOOL_MODE",
                           "USERPOOL_DEV_KEY_FILE",
                           "USERPOOL_KEY_ROTATION_S",
                           "REFRESH_TOKEN_TTL_S",
                           "LOGIN_SLOW_AFTER",
                           "LOGIN_LOCK_AFTER",
                           "LOGIN_DELAY_BASE_MS",
                           "LOGIN_DELAY_MAX_MS",
                           "LOGIN_LOCK_S",
                           "USERPOOL_ARGON2_OPSLIMIT",
                           "USERPOOL_ARGON2_MEMLIMIT_MIB",
                           "USERPOOL_MASTER_KEY",
                           NULL};
    for (const char *const *n = unset; *n; n++)
        unsetenv(*n);
}

static void config_from_environment(void **state)
{
    up_config_t cfg;
    char why[512];
    set_base_env();
    assert_int_equal(up_config_load(&cfg, why, sizeof why), 0);
    assert_string_equal(cfg.issuer, "https://id.example/");
    assert_string_equal(cfg.base_url, "https://id.example");
    assert_string_equal(cfg.jwks_uri, "https://id.example/.well-known/jwks.json");
    assert_string_equal(cfg.scopes, "openid profile email");
    assert_int_equal(cfg.key_kind, RW_JWK_RSA2048);
    assert_true(cfg.production);
    assert_int_equal(cfg.key_rotation_s, 30 * 86400);
    assert_int_equal(cfg.login_slow_after, 3);
    assert_int_equal(cfg.login_lock_after, 10);
    assert_int_equal(cfg.login_lock_s, 900);
    up_config_free(&cfg);

    setenv("PUBLIC_URL", "http://gw.example:3000", 1);
    setenv("USERPOOL_SIGNING_ALG", "ES256", 1);
    setenv("USERPOOL_MODE", "development", 1);
    setenv("LOGIN_LOCK_AFTER", "5", 1);
    assert_int_equal(up_config_load(&cfg, why, sizeof why), 0);
    assert_string_equal(cfg.jwks_uri, "http://gw.example:3000/.well-known/jwks.json");
    assert_int_equal(cfg.key_kind, RW_JWK_EC_P256);
    assert_false(cfg.production);
    up_config_free(&cfg);

    struct {
        const char *name, *value, *why;
    } bad[] = {
        {"TOKEN_AUDIENCE", "", "TOKEN_AUDIENCE is not set"},
        {"USERPOOL_SIGNING_ALG", "HS256", "expected RS256 or ES256"},
        {"USERPOOL_MODE", "prod", "expected production or development"},
        {"LOGIN_LOCK_S", "10x", "expected an integer"},
        {"USERPOOL_KEY_ROTATION_S", "0", "expected an integer from 1"},
        {"LOGIN_SLOW_AFTER", "50", "must not be below LOGIN_SLOW_AFTER"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set_base_env();
        setenv(bad[i].name, bad[i].value, 1);
        why[0] = '\0';
        assert_int_equal(up_config_load(&cfg, why, sizeof why), RW_ECONFIG);
        if (strstr(why, bad[i].why) == NULL)
            fail_msg("%s=%s: '%s'", bad[i].name, bad[i].value, why);
        up_config_free(&cfg);
    }
}

static void master_key_modes(void **state)
{
    up_config_t cfg;
    rw_masterkey_t mk1, mk2;
    char id1[17], id2[17], why[512], dir[512], file[600];
    bool dev;
    assert_int_equal(rw_test_tmpdir(dir, sizeof dir, "rw-userpool-unit"), 0);
    snprintf(file, sizeof file, "%s/dev.key", dir);

    /* Production: a key from the environment, or a refusal. */
    set_base_env();
    assert_int_equal(up_config_load(&cfg, why, sizeof why), 0);
    assert_int_equal(up_master_key_load(&cfg, &mk1, id1, &dev, why, sizeof why), RW_ECONFIG);
    assert_non_null(strstr(why, "USERPOOL_MASTER_KEY is not set"));
    setenv("USERPOOL_MASTER_KEY", "too short", 1);
    assert_int_equal(up_master_key_load(&cfg, &mk1, id1, &dev, why, sizeof why), RW_ECONFIG);
    setenv("USERPOOL_MASTER_KEY", "0123456789abcdef0123456789abcdef", 1);
    assert_int_equal(up_master_key_load(&cfg, &mk1, id1, &dev, why, sizeof why), 0);
    assert_false(dev);
    assert_int_equal(strlen(id1), 16);
    assert_int_equal(up_master_key_load(&cfg, &mk2, id2, &dev, why, sizeof why), 0);
    assert_memory_equal(mk1.bytes, mk2.bytes, 32);
    assert_string_equal(id1, id2);
    setenv("USERPOOL_MASTER_KEY", "0123456789abcdef0123456789abcdeF", 1);
    assert_int_equal(up_master_key_load(&cfg, &mk2, id2, &dev, why, sizeof why), 0);
    assert_memory_not_equal(mk1.bytes, mk2.bytes, 32);
    assert_string_not_equal(id1, id2);
    up_config_free(&cfg);

    /* Development: made once in a 0600 file, then the same key every time. */
    set_base_env();
    setenv("USERPOOL_MODE", "development", 1);
    setenv("USERPOOL_DEV_KEY_FILE", file, 1);
    assert_int_equal(up_config_load(&cfg, why, sizeof why), 0);
    assert_int_equal(up_master_key_load(&cfg, &mk1, id1, &dev, why, sizeof why), 0);
    assert_true(dev);
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(up_master_key_load(&cfg, &mk2, id2, &dev, why, sizeof why), 0);
    assert_memory_equal(mk1.bytes, mk2.bytes, 32);
    /* The environment still wins over the file. */
    setenv("USERPOOL_MASTER_KEY", "0123456789abcdef0123456789abcdef", 1);
    assert_int_equal(up_master_key_load(&cfg, &mk2, id2, &dev, why, sizeof why), 0);
    assert_false(dev);
    assert_memory_not_equal(mk1.bytes, mk2.bytes, 32);
    unsetenv("USERPOOL_MASTER_KEY");
    /* A file that holds no key is an error, not silently replaced. */
    FILE *f = fopen(file, "w");
    fputs("short\n", f);
    fclose(f);
    assert_int_equal(up_master_key_load(&cfg, &mk2, id2, &dev, why, sizeof why), RW_ECONFIG);
    up_config_free(&cfg);
    rw_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(handles),
        cmocka_unit_test(emails),
        cmocka_unit_test(field_errors_json),
        cmocka_unit_test(event_bodies),
        cmocka_unit_test(config_from_environment),
        cmocka_unit_test(master_key_modes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
