/* The user pool as a client sees it: `reelway serve` with a template that
 * wires the user-pool bootstrap (functions/auth/userpool) behind an HTTP API,
 * real FerretDB (or $MONGODB_URI). Tokens are checked independently of the
 * functions: the test parses the JWKS the gateway serves and verifies every
 * token with reelway_auth; sealed keys are read straight from the database. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cJSON.h>
#include <dirent.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "reelway/auth.h"
#include "reelway/error.h"
#include "reelway/http.h"
#include "rw_http_client.h"
#include "rw_test.h"

#define AUDIENCE "reels-test"
#define PASSWORD "Correct-Horse-9"

static struct {
    char dir[512];
    char log[600];
    char db[64], rot_db[64], elect_db[64], dev_db[64];
    char master_key[RW_TOKEN_LEN + 1];
    char dev_key_file[700];
    char issuer[64]; /* the gateway's own URL: its JWT authorizer discovers the keys there */
    rw_test_proc_t proc;
    int port;
} S;

/* A free loopback port, picked before reelway starts: the issuer (a template
 * parameter) must name it. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* ---- reelway ------------------------------------------------------------------------ */

static int setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    if (rw_test_tmpdir(S.dir, sizeof S.dir, "rw-userpool") != 0)
        return -1;
    snprintf(S.log, sizeof S.log, "%s/reelway.log", S.dir);
    snprintf(S.dev_key_file, sizeof S.dev_key_file, "%s/dev-master.key", S.dir);
    rw_test_db_name(S.db, sizeof S.db, "userpool");
    rw_test_db_name(S.rot_db, sizeof S.rot_db, "userpool_rot");
    rw_test_db_name(S.elect_db, sizeof S.elect_db, "userpool_elect");
    rw_test_db_name(S.dev_db, sizeof S.dev_db, "userpool_dev");
    if (rw_token_generate(S.master_key) != 0)
        return -1;
    int port = free_port();
    if (port <= 0)
        return -1;
    char port_file[600], tpl[1024], overrides[2048], uri_env[1024], port_arg[16];
    snprintf(port_arg, sizeof port_arg, "%d", port);
    snprintf(S.issuer, sizeof S.issuer, "http://127.0.0.1:%d", port);
    snprintf(port_file, sizeof port_file, "%s/port", S.dir);
    snprintf(tpl, sizeof tpl, "%s/tests/integration/userpool/template.yaml",
             getenv("RW_SOURCE_DIR"));
    snprintf(overrides, sizeof overrides,
             "Issuer=%s DatabaseName=%s RotDatabaseName=%s ElectDatabaseName=%s "
             "DevDatabaseName=%s MasterKey=%s DevKeyFile=%s",
             S.issuer, S.db, S.rot_db, S.elect_db, S.dev_db, S.master_key, S.dev_key_file);
    snprintf(uri_env, sizeof uri_env, "MONGODB_URI=%s", rw_test_mongo_uri());
    char *argv[] = {(char *)rw_test_reelway_bin(),
                    "serve",
                    "--port",
                    port_arg,
                    "--port-file",
                    port_file,
                    "--data-dir",
                    S.dir,
                    "--workers",
                    "2",
                    "--template",
                    tpl,
                    "--parameter-overrides",
                    overrides,
                    NULL};
    const char *set[] = {uri_env, NULL};
    if (rw_test_proc_start(&S.proc, argv, set, NULL, S.log) != 0)
        return -1;
    S.port = rw_test_wait_int_file(port_file, 60000);
    if (S.port <= 0) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "cat %s", S.log);
        (void)system(cmd);
        return -1;
    }
    return 0;
}

/* Whether a file holds a sanitizer report (the functions are instrumented in
 * sanitizer builds, and report leaks when they exit). */
static bool has_sanitizer_report(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    bool found = false;
    while (f && !found && fgets(line, sizeof line, f))
        found = strstr(line, "Sanitizer") != NULL || strstr(line, "runtime error:") != NULL;
    if (f)
        fclose(f);
    if (found)
        fprintf(stderr, "sanitizer report in %s\n", path);
    return found;
}

/* The last test: reelway stops cleanly, and no process reported a sanitizer
 * error or a leak (functions are instrumented in sanitizer builds and report
 * when they exit, into their logs). A test rather than the group teardown,
 * whose failures cmocka does not count in its exit status. */
static void shutdown_is_clean(void **state)
{
    int status = rw_test_proc_stop(&S.proc, SIGTERM, 60000);
    S.proc.pid = 0;
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    bool reports = has_sanitizer_report(S.log);
    char logs[700];
    snprintf(logs, sizeof logs, "%s/logs", S.dir);
    DIR *fns = opendir(logs);
    assert_non_null(fns);
    struct dirent *fn;
    while ((fn = readdir(fns))) {
        if (fn->d_name[0] == '.')
            continue;
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", logs, fn->d_name);
        DIR *d = opendir(dir);
        struct dirent *ent;
        while (d && (ent = readdir(d))) {
            char path[1400];
            snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
            if (ent->d_name[0] != '.')
                reports |= has_sanitizer_report(path);
        }
        if (d)
            closedir(d);
    }
    closedir(fns);
    char direct[700];
    snprintf(direct, sizeof direct, "%s/me-direct.log", S.dir);
    reports |= has_sanitizer_report(direct);
    if (reports)
        fprintf(stderr, "logs kept in %s\n", S.dir);
    else
        rw_test_rmtree(S.dir);
    assert_false(reports);
}

static int teardown(void **state)
{
    if (S.proc.pid > 0) /* a test failed before shutdown_is_clean */
        rw_test_proc_stop(&S.proc, SIGTERM, 60000);
    const char *uri = rw_test_mongo_uri();
    rw_test_drop_db(uri, S.db);
    rw_test_drop_db(uri, S.rot_db);
    rw_test_drop_db(uri, S.elect_db);
    rw_test_drop_db(uri, S.dev_db);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------- */

/* One request; the body parsed as JSON when there is one (NULL otherwise). */
static cJSON *call(const char *method, const char *path, const char *headers, const char *body,
                   rw_test_response_t *r)
{
    assert_int_equal(rw_test_http(S.port, method, path, headers, body, body ? strlen(body) : 0, r),
                     0);
    return r->body_len ? cJSON_Parse(r->body) : NULL;
}

/* A request that must answer `status`; returns its JSON body (cJSON_Delete). */
static cJSON *expect(const char *method, const char *path, const char *body, int status)
{
    rw_test_response_t r;
    cJSON *j = call(method, path, "Content-Type: application/json\r\n", body, &r);
    if (r.status != status)
        fprintf(stderr, "%s %s %s -> %d %s\n", method, path, body ? body : "", r.status, r.body);
    assert_int_equal(r.status, status);
    rw_test_response_free(&r);
    return j;
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Whether errors[field] holds an error with this code. */
static bool has_code(const cJSON *j, const char *field, const char *code)
{
    const cJSON *list =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "errors"), field);
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        if (str(e, "code") && strcmp(str(e, "code"), code) == 0 && str(e, "message"))
            return true;
    }
    return false;
}

static void assert_field_error(const char *body, const char *field, const char *code)
{
    cJSON *j = expect("POST", "/auth/signup", body, 400);
    if (!has_code(j, field, code)) {
        char *text = cJSON_Print(j);
        fprintf(stderr, "expected %s/%s for %s, got %s\n", field, code, body, text);
        free(text);
    }
    assert_true(has_code(j, field, code));
    assert_non_null(str(j, "message"));
    cJSON_Delete(j);
}

static char *signup_body(const char *handle, const char *email, const char *password)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "handle", handle);
    cJSON_AddStringToObject(o, "email", email);
    cJSON_AddStringToObject(o, "password", password);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

/* Signs a user up (prefix "" or "/rot"); returns its id (free()). */
static char *signup(const char *prefix, const char *handle, const char *email)
{
    char path[128], *body = signup_body(handle, email, PASSWORD);
    snprintf(path, sizeof path, "%s/auth/signup", prefix);
    cJSON *j = expect("POST", path, body, 201);
    free(body);
    assert_string_equal(str(j, "handle"), handle);
    assert_string_equal(str(j, "email"), email);
    assert_non_null(str(j, "created_at"));
    char *id = strdup(str(j, "id"));
    assert_int_equal(strlen(id), 24);
    cJSON_Delete(j);
    return id;
}

static char *login_body(const char *kind, const char *login, const char *password)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, kind, login);
    cJSON_AddStringToObject(o, "password", password);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

/* Logs in; returns the token response (cJSON_Delete). */
static cJSON *login(const char *prefix, const char *kind, const char *who)
{
    char path[128], *body = login_body(kind, who, PASSWORD);
    snprintf(path, sizeof path, "%s/auth/login", prefix);
    cJSON *j = expect("POST", path, body, 200);
    free(body);
    return j;
}

/* POST {"refresh_token": token} to path; returns the status, *out the body. */
static int post_refresh(const char *path, const char *token, cJSON **out)
{
    char body[256];
    snprintf(body, sizeof body, "{\"refresh_token\":\"%s\"}", token);
    rw_test_response_t r;
    cJSON *j = call("POST", path, "Content-Type: application/json\r\n", body, &r);
    int status = r.status;
    rw_test_response_free(&r);
    if (out)
        *out = j;
    else
        cJSON_Delete(j);
    return status;
}

/* The JWKS served at path, parsed with reelway_auth. */
static rw_jwks_t *fetch_jwks(const char *path)
{
    rw_test_response_t r;
    assert_int_equal(rw_test_http(S.port, "GET", path, NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    char v[128];
    assert_string_equal(rw_test_header(&r, "content-type", v, sizeof v), "application/json");
    rw_jwks_t *set = NULL;
    const char *msg = NULL;
    assert_int_equal(rw_jwks_parse(r.body, r.body_len, &set, &msg), 0);
    rw_test_response_free(&r);
    return set;
}

/* Verifies a token against a JWKS with the issuer and audience; returns it. */
static rw_jwt_t *verify(const rw_jwks_t *set, const char *token)
{
    const char *auds[] = {AUDIENCE};
    rw_jwt_verify_opts_t opts = {
        .issuer = S.issuer, .audiences = auds, .n_audiences = 1, .clock_skew_s = 5};
    rw_jwt_t *jwt = NULL;
    rw_jwt_error_t err;
    rw_jwt_status_t st = rw_jwt_verify(set, token, strlen(token), &opts, &jwt, &err);
    if (st != RW_JWT_OK)
        fprintf(stderr, "verify: %s (%s)\n", rw_jwt_status_name(st), err.message);
    assert_int_equal(st, RW_JWT_OK);
    return jwt;
}

static int64_t claim_num(const rw_jwt_t *jwt, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(rw_jwt_claims(jwt), name);
    assert_true(cJSON_IsNumber(v));
    return (int64_t)v->valuedouble;
}

/* ---- sign-up --------------------------------------------------------------------------- */

static void signup_field_errors(void **state)
{
    /* Not a JSON object. */
    cJSON *j = expect("POST", "/auth/signup", "[1,2]", 400);
    assert_non_null(str(j, "message"));
    cJSON_Delete(j);
    j = expect("POST", "/auth/signup", "{\"handle\":", 400);
    cJSON_Delete(j);
    /* Everything missing: one error per field. */
    j = expect("POST", "/auth/signup", "{}", 400);
    assert_string_equal(str(j, "message"), "Some fields are not valid.");
    assert_true(has_code(j, "handle", "handle_required"));
    assert_true(has_code(j, "email", "email_required"));
    assert_true(has_code(j, "password", "password_required"));
    cJSON_Delete(j);

    const char *ok_pw = "Tangerine-Kite-42";
    struct {
        const char *handle, *email, *password, *field, *code;
    } cases[] = {
        /* handle rules */
        {"ab", "h1@example.com", ok_pw, "handle", "handle_too_short"},
        {"abcdefghijklmnopqrstuvwxyz_12345", "h2@example.com", ok_pw, "handle", "handle_too_long"},
        {"bad handle!", "h3@example.com", ok_pw, "handle", "handle_invalid_chars"},
        {".dotty", "h4@example.com", ok_pw, "handle", "handle_invalid_dots"},
        {"dot..ty", "h4@example.com", ok_pw, "handle", "handle_invalid_dots"},
        {"12345", "h5@example.com", ok_pw, "handle", "handle_no_letter"},
        {"Admin", "h6@example.com", ok_pw, "handle", "handle_reserved"},
        /* email rules */
        {"emily", "not-an-email", ok_pw, "email", "email_invalid"},
        {"emily", "two@@example.com", ok_pw, "email", "email_invalid"},
        {"emily", "dots..@example.com", ok_pw, "email", "email_invalid"},
        {"emily", "emily@localhost", ok_pw, "email", "email_invalid"},
        {"emily", "emily@-bad.example", ok_pw, "email", "email_invalid"},
        /* password rules, each on its own */
        {"pat", "pat@example.com", "Tangerine\x01Kite-42", "password", "password_invalid_chars"},
        {"pat", "pat@example.com", "Ab1!xyz", "password", "password_too_short"},
        {"pat", "pat@example.com", "qwmnbvzxrtyp", "password", "password_one_class"},
        {"pat", "pat@example.com", "aaaaaAAAAA11", "password", "password_repetitive"},
        {"pat", "pat@example.com", "AbCdEfGhIjK", "password", "password_sequence"},
        {"pat", "pat@example.com", "Password123!", "password", "password_common"},
        {"zoe_river", "zr@example.com", "ZOE_RIVER-rocks-9", "password",
         "password_contains_identity"},
        {"zoe", "skylark@example.com", "my-Skylark-2024", "password", "password_contains_identity"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *body = signup_body(cases[i].handle, cases[i].email, cases[i].password);
        assert_field_error(body, cases[i].field, cases[i].code);
        free(body);
    }
    /* Too long: 257 bytes. */
    char long_pw[258];
    memset(long_pw, 'x', 256);
    long_pw[0] = 'A';
    long_pw[256] = 'y';
    long_pw[257] = '\0';
    char *body = signup_body("pat", "pat@example.com", long_pw);
    assert_field_error(body, "password", "password_too_long");
    free(body);
    char long_email[300];
    memset(long_email, 'a', 250);
    strcpy(long_email + 250, "@example.com");
    body = signup_body("pat", long_email, ok_pw);
    assert_field_error(body, "email", "email_too_long");
    free(body);
    /* A valid form after all that is accepted. */
    free(signup("", "valid.user_1", "valid.user+tag@mail.example.org"));
}

static void signup_duplicates_are_409(void **state)
{
    free(signup("", "Alice", "alice@example.com"));
    /* Same handle in another case, new email. */
    char *body = signup_body("ALICE", "alice2@example.com", PASSWORD);
    cJSON *j = expect("POST", "/auth/signup", body, 409);
    free(body);
    assert_true(has_code(j, "handle", "handle_taken"));
    assert_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(j, "errors"), "email"));
    cJSON_Delete(j);
    /* Same email in another case, new handle. */
    body = signup_body("alice_two", "Alice@Example.com", PASSWORD);
    j = expect("POST", "/auth/signup", body, 409);
    free(body);
    assert_true(has_code(j, "email", "email_taken"));
    assert_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(j, "errors"), "handle"));
    cJSON_Delete(j);
    /* Both taken: both said. */
    body = signup_body("alice", "alice@example.com", PASSWORD);
    j = expect("POST", "/auth/signup", body, 409);
    free(body);
    assert_true(has_code(j, "handle", "handle_taken"));
    assert_true(has_code(j, "email", "email_taken"));
    cJSON_Delete(j);
}

/* ---- login ------------------------------------------------------------------------------- */

static void login_tokens_verify_with_served_jwks(void **state)
{
    char *id = signup("", "bruno", "bruno@example.com");
    rw_jwks_t *set = fetch_jwks("/.well-known/jwks.json");
    assert_true(rw_jwks_count(set) >= 1);
    const char *kinds[] = {"handle", "email"};
    const char *who[] = {"BRUNO", "Bruno@Example.com"};
    for (int k = 0; k < 2; k++) {
        cJSON *t = login("", kinds[k], who[k]);
        assert_string_equal(str(t, "token_type"), "Bearer");
        assert_int_equal(cJSON_GetObjectItem(t, "expires_in")->valueint, 3600);
        assert_int_equal(strlen(str(t, "refresh_token")), RW_TOKEN_LEN);
        int64_t now = (int64_t)time(NULL);

        rw_jwt_t *idt = verify(set, str(t, "id_token"));
        assert_string_equal(rw_jwt_claim_string(idt, "sub"), id);
        assert_string_equal(rw_jwt_claim_string(idt, "iss"), S.issuer);
        assert_string_equal(rw_jwt_claim_string(idt, "aud"), AUDIENCE);
        assert_string_equal(rw_jwt_claim_string(idt, "token_use"), "id");
        assert_string_equal(rw_jwt_claim_string(idt, "preferred_username"), "bruno");
        assert_string_equal(rw_jwt_claim_string(idt, "email"), "bruno@example.com");
        assert_int_equal(claim_num(idt, "exp") - claim_num(idt, "iat"), 3600);
        assert_true(llabs((long long)(claim_num(idt, "exp") - (now + 3600))) <= 120);
        assert_int_equal(rw_jwt_alg(idt), RW_JWT_RS256);
        assert_non_null(rw_jwks_find(set, rw_jwt_kid(idt)));

        rw_jwt_t *at = verify(set, str(t, "access_token"));
        assert_string_equal(rw_jwt_claim_string(at, "sub"), id);
        assert_string_equal(rw_jwt_claim_string(at, "token_use"), "access");
        assert_string_equal(rw_jwt_claim_string(at, "client_id"), AUDIENCE);
        assert_string_equal(rw_jwt_kid(at), rw_jwt_kid(idt));
        assert_string_equal(str(rw_jwt_header(at), "typ"), "at+jwt");
        assert_int_equal(claim_num(at, "exp") - claim_num(at, "iat"), 3600);
        bool upload = false, openid = false;
        for (size_t i = 0; i < rw_jwt_scope_count(at); i++) {
            upload |= strcmp(rw_jwt_scope(at, i), "reels/upload") == 0;
            openid |= strcmp(rw_jwt_scope(at, i), "openid") == 0;
        }
        assert_true(upload && openid);
        /* Another audience is not accepted. */
        const char *other[] = {"someone-else"};
        rw_jwt_verify_opts_t opts = {.issuer = S.issuer, .audiences = other, .n_audiences = 1};
        assert_int_equal(rw_jwt_verify(set, str(t, "access_token"), strlen(str(t, "access_token")),
                                       &opts, NULL, NULL),
                         RW_JWT_EAUDIENCE);
        rw_jwt_free(idt);
        rw_jwt_free(at);
        cJSON_Delete(t);
    }
    rw_jwks_free(set);
    free(id);
}

static void wrong_password_is_one_generic_401(void **state)
{
    free(signup("", "carla", "carla@example.com"));
    const char *bodies[] = {
        "{\"handle\":\"carla\",\"password\":\"Wrong-Password-1\"}",
        "{\"email\":\"carla@example.com\",\"password\":\"Wrong-Password-1\"}",
        "{\"handle\":\"nobody_here\",\"password\":\"Wrong-Password-1\"}",
        "{\"email\":\"nobody@example.com\",\"password\":\"" PASSWORD "\"}",
    };
    char first[512] = "";
    for (size_t i = 0; i < 4; i++) {
        rw_test_response_t r;
        cJSON *j = call("POST", "/auth/login", "Content-Type: application/json\r\n", bodies[i], &r);
        assert_int_equal(r.status, 401);
        assert_string_equal(str(j, "message"), "Incorrect handle, email or password.");
        /* Same body, whether the account exists or not. */
        if (i == 0)
            snprintf(first, sizeof first, "%s", r.body);
        assert_string_equal(r.body, first);
        char v[64];
        assert_null(rw_test_header(&r, "retry-after", v, sizeof v));
        cJSON_Delete(j);
        rw_test_response_free(&r);
    }
    /* Malformed requests are 400, not 401. */
    cJSON_Delete(expect("POST", "/auth/login", "{\"handle\":\"carla\"}", 400));
    cJSON_Delete(expect("POST", "/auth/login", "nope", 400));
}

/* One login attempt; returns the status and the Retry-After value (0 if none). */
static int attempt(const char *kind, const char *who, const char *password, long *retry_after,
                   cJSON **body)
{
    char *b = login_body(kind, who, password);
    rw_test_response_t r;
    cJSON *j = call("POST", "/auth/login", "Content-Type: application/json\r\n", b, &r);
    free(b);
    char v[32];
    *retry_after = rw_test_header(&r, "retry-after", v, sizeof v) ? atol(v) : 0;
    int status = r.status;
    rw_test_response_free(&r);
    if (body)
        *body = j;
    else
        cJSON_Delete(j);
    return status;
}

/* Fails logins until `failures` wrong passwords were heard (waiting out each
 * 429 the delays impose); returns how many 429s were seen. */
static int fail_logins(const char *who, int failures)
{
    int slowed = 0, heard = 0;
    for (int tries = 0; heard < failures && tries < 400; tries++) {
        long ra = 0;
        int status = attempt("handle", who, "Wrong-Password-1", &ra, NULL);
        if (status == 429) {
            assert_true(ra >= 1);
            slowed++;
            rw_test_sleep_ms(50);
            continue;
        }
        assert_int_equal(status, 401);
        heard++;
    }
    assert_int_equal(heard, failures);
    return slowed;
}

static void brute_force_is_slowed_then_locked(void **state)
{
    free(signup("", "dora", "dora@example.com"));
    long ra = 0;
    /* Two failures, then a success: the counter starts over. */
    assert_int_equal(attempt("handle", "dora", "Wrong-Password-1", &ra, NULL), 401);
    assert_int_equal(attempt("handle", "dora", "Wrong-Password-1", &ra, NULL), 401);
    assert_int_equal(ra, 0);
    assert_int_equal(attempt("handle", "dora", PASSWORD, &ra, NULL), 200);
    /* Had it not, the next two failures would be the 3rd and 4th, both slowed. */
    assert_int_equal(attempt("handle", "dora", "Wrong-Password-1", &ra, NULL), 401);
    assert_int_equal(ra, 0);
    assert_int_equal(attempt("handle", "dora", "Wrong-Password-1", &ra, NULL), 401);
    assert_int_equal(ra, 0);
    /* The third failure in a row: the next attempt must wait, even with the
     * right password. */
    assert_int_equal(attempt("handle", "dora", "Wrong-Password-1", &ra, NULL), 401);
    assert_true(ra >= 1);
    cJSON *j = NULL;
    assert_int_equal(attempt("handle", "dora", PASSWORD, &ra, &j), 429);
    assert_true(ra >= 1);
    assert_string_equal(str(j, "error"), "too_many_attempts");
    assert_non_null(strstr(str(j, "message"), "Try again in"));
    cJSON_Delete(j);
    /* Three more failures (six in a row) lock the account. */
    assert_true(fail_logins("dora", 3) >= 1);
    assert_int_equal(attempt("email", "dora@example.com", PASSWORD, &ra, &j), 423);
    assert_true(ra > 800 && ra <= 900);
    assert_string_equal(str(j, "error"), "account_locked");
    assert_non_null(strstr(str(j, "message"), "locked"));
    cJSON_Delete(j);
    assert_int_equal(attempt("handle", "DORA", "Wrong-Password-1", &ra, NULL), 423);

    /* An account that does not exist behaves the same: no enumeration. */
    assert_true(fail_logins("ghost_account", 6) >= 1);
    assert_int_equal(attempt("handle", "ghost_account", PASSWORD, &ra, &j), 423);
    assert_true(ra > 800 && ra <= 900);
    assert_string_equal(str(j, "error"), "account_locked");
    cJSON_Delete(j);

    /* Another account is not affected. */
    free(signup("", "dora_two", "dora2@example.com"));
    cJSON_Delete(login("", "handle", "dora_two"));
}

/* ---- refresh, logout ------------------------------------------------------------------- */

static void refresh_rotates(void **state)
{
    char *id = signup("", "emil", "emil@example.com");
    cJSON *t = login("", "handle", "emil");
    rw_jwks_t *set = fetch_jwks("/.well-known/jwks.json");
    char current[RW_TOKEN_LEN + 1];
    snprintf(current, sizeof current, "%s", str(t, "refresh_token"));
    int64_t auth_time = 0;
    {
        rw_jwt_t *jwt = verify(set, str(t, "id_token"));
        auth_time = claim_num(jwt, "auth_time");
        rw_jwt_free(jwt);
    }
    cJSON_Delete(t);
    for (int i = 0; i < 3; i++) {
        cJSON *n = NULL;
        assert_int_equal(post_refresh("/auth/refresh", current, &n), 200);
        const char *next = str(n, "refresh_token");
        assert_non_null(next);
        assert_int_equal(strlen(next), RW_TOKEN_LEN);
        assert_string_not_equal(next, current);
        assert_string_equal(str(n, "token_type"), "Bearer");
        rw_jwt_t *at = verify(set, str(n, "access_token"));
        rw_jwt_t *idt = verify(set, str(n, "id_token"));
        assert_string_equal(rw_jwt_claim_string(at, "sub"), id);
        assert_string_equal(rw_jwt_claim_string(idt, "email"), "emil@example.com");
        /* A refresh keeps the time of the login it descends from. */
        assert_int_equal(claim_num(idt, "auth_time"), auth_time);
        rw_jwt_free(at);
        rw_jwt_free(idt);
        snprintf(current, sizeof current, "%s", next);
        cJSON_Delete(n);
    }
    /* Malformed and unknown tokens. */
    cJSON *j = NULL;
    assert_int_equal(post_refresh("/auth/refresh", "not-a-token", &j), 401);
    assert_string_equal(str(j, "error"), "invalid_grant");
    cJSON_Delete(j);
    assert_int_equal(
        post_refresh("/auth/refresh", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL), 401);
    cJSON_Delete(expect("POST", "/auth/refresh", "{}", 400));
    rw_jwks_free(set);
    free(id);
}

static void refresh_reuse_revokes_the_family(void **state)
{
    free(signup("", "fabi", "fabi@example.com"));
    cJSON *a = login("", "handle", "fabi");
    cJSON *other = login("", "handle", "fabi"); /* another session: another family */
    char r1[64], r2[64], r3[64], o1[64];
    snprintf(r1, sizeof r1, "%s", str(a, "refresh_token"));
    snprintf(o1, sizeof o1, "%s", str(other, "refresh_token"));
    cJSON_Delete(a);
    cJSON_Delete(other);
    cJSON *n = NULL;
    assert_int_equal(post_refresh("/auth/refresh", r1, &n), 200);
    snprintf(r2, sizeof r2, "%s", str(n, "refresh_token"));
    cJSON_Delete(n);
    assert_int_equal(post_refresh("/auth/refresh", r2, &n), 200);
    snprintf(r3, sizeof r3, "%s", str(n, "refresh_token"));
    cJSON_Delete(n);
    /* r1 again: a replay. The whole family goes, the newest token included. */
    assert_int_equal(post_refresh("/auth/refresh", r1, &n), 401);
    assert_non_null(strstr(str(n, "message"), "already used"));
    cJSON_Delete(n);
    assert_int_equal(post_refresh("/auth/refresh", r3, &n), 401);
    assert_non_null(strstr(str(n, "message"), "revoked"));
    cJSON_Delete(n);
    assert_int_equal(post_refresh("/auth/refresh", r2, NULL), 401);
    /* The other login's family is untouched. */
    assert_int_equal(post_refresh("/auth/refresh", o1, NULL), 200);
}

/* Two uses of one token at the same moment: exactly one gets a successor. */
typedef struct racer_s {
    const char *token;
    int status;
    char next[64]; /* the successor, for the one that got it */
} racer_t;

static void *race_refresh(void *arg)
{
    racer_t *r = arg;
    char body[256];
    snprintf(body, sizeof body, "{\"refresh_token\":\"%s\"}", r->token);
    rw_test_response_t resp;
    if (rw_test_http(S.port, "POST", "/auth/refresh", "Content-Type: application/json\r\n", body,
                     strlen(body), &resp) == 0) {
        r->status = resp.status;
        cJSON *j = cJSON_Parse(resp.body);
        if (str(j, "refresh_token"))
            snprintf(r->next, sizeof r->next, "%s", str(j, "refresh_token"));
        cJSON_Delete(j);
        rw_test_response_free(&resp);
    }
    return NULL;
}

static void refresh_race_has_one_winner(void **state)
{
    free(signup("", "gus", "gus@example.com"));
    for (int round = 0; round < 3; round++) {
        cJSON *t = login("", "handle", "gus");
        racer_t racers[4];
        pthread_t th[4];
        for (int i = 0; i < 4; i++) {
            racers[i] = (racer_t){.token = str(t, "refresh_token")};
            pthread_create(&th[i], NULL, race_refresh, &racers[i]);
        }
        int ok = 0, winner = -1;
        for (int i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            assert_true(racers[i].status == 200 || racers[i].status == 401);
            if (racers[i].status == 200) {
                ok++;
                winner = i;
            }
        }
        /* Never two successors; the other uses count as a replay, so even
         * the one successor handed out belongs to a revoked family. */
        assert_true(ok <= 1);
        if (winner >= 0)
            assert_int_equal(post_refresh("/auth/refresh", racers[winner].next, NULL), 401);
        cJSON_Delete(t);
    }
}

static void logout_revokes(void **state)
{
    free(signup("", "hana", "hana@example.com"));
    cJSON *t = login("", "handle", "hana");
    char r1[64], r2[64];
    snprintf(r1, sizeof r1, "%s", str(t, "refresh_token"));
    cJSON_Delete(t);
    cJSON *n = NULL;
    assert_int_equal(post_refresh("/auth/refresh", r1, &n), 200);
    snprintf(r2, sizeof r2, "%s", str(n, "refresh_token"));
    cJSON_Delete(n);
    /* Logging out with the newest token ends the session. */
    rw_test_response_t r;
    char body[128];
    snprintf(body, sizeof body, "{\"refresh_token\":\"%s\"}", r2);
    assert_null(call("POST", "/auth/logout", "Content-Type: application/json\r\n", body, &r));
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body_len, 0);
    rw_test_response_free(&r);
    assert_int_equal(post_refresh("/auth/refresh", r2, &n), 401);
    assert_non_null(strstr(str(n, "message"), "revoked"));
    cJSON_Delete(n);
    /* Twice, or with a token nobody knows: still 204. */
    assert_int_equal(post_refresh("/auth/logout", r2, NULL), 204);
    assert_int_equal(post_refresh("/auth/logout", "garbage", NULL), 204);
    cJSON_Delete(expect("POST", "/auth/logout", "{}", 400));
}

/* ---- /auth/me, discovery ---------------------------------------------------------------- */

/* Whether the Me function's log holds a line with this text. */
static bool me_logged(const char *text)
{
    static char logs[262144];
    for (int tries = 0; tries < 100; tries++) {
        rw_test_function_logs(S.dir, "Me", logs, sizeof logs);
        if (strstr(logs, text))
            return true;
        rw_test_sleep_ms(20);
    }
    return false;
}

/* GET path with these headers must answer 401 {"message":"Unauthorized"}. */
static void assert_unauthorized(const char *path, const char *headers)
{
    rw_test_response_t r;
    cJSON *j = call("GET", path, headers, NULL, &r);
    if (r.status != 401)
        fprintf(stderr, "GET %s [%s] -> %d %s\n", path, headers, r.status, r.body);
    assert_int_equal(r.status, 401);
    assert_string_equal(str(j, "message"), "Unauthorized");
    cJSON_Delete(j);
    rw_test_response_free(&r);
}

static void me_returns_the_profile(void **state)
{
    char *id = signup("", "ines", "ines@example.com");
    cJSON *t = login("", "handle", "ines");
    char auth[4096], line[128];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", str(t, "access_token"));
    /* /auth/me is behind the gateway's JWT authorizer, which discovers the
     * keys from this issuer's openid-configuration and hands the function the
     * claims; /direct/auth/me is not, and the function verifies the token. */
    const char *paths[] = {"/auth/me", "/direct/auth/me"};
    const char *how[] = {"from the authorizer's claims", "from a bearer token verified here"};
    for (int k = 0; k < 2; k++) {
        rw_test_response_t r;
        cJSON *me = call("GET", paths[k], auth, NULL, &r);
        /* The authorizer fetched the keys when the gateway started, when the
         * pool had none yet; its first fetch may also have timed out on a
         * loaded machine (the WellKnown function was cold), and refetches are
         * at least 30 s apart. Until it has the key, it answers 500. */
        for (int tries = 0; k == 0 && r.status == 500 && tries < 300; tries++) {
            cJSON_Delete(me);
            rw_test_response_free(&r);
            rw_test_sleep_ms(200);
            me = call("GET", paths[k], auth, NULL, &r);
        }
        if (r.status != 200)
            fprintf(stderr, "GET %s -> %d %s\n", paths[k], r.status, r.body);
        assert_int_equal(r.status, 200);
        rw_test_response_free(&r);
        assert_string_equal(str(me, "id"), id);
        assert_string_equal(str(me, "handle"), "ines");
        assert_string_equal(str(me, "email"), "ines@example.com");
        assert_non_null(str(me, "created_at"));
        cJSON_Delete(me);
        snprintf(line, sizeof line, "me: user %s %s", id, how[k]);
        assert_true(me_logged(line));
    }

    /* No token, an ID token, a tampered token, another scheme: 401 on both
     * routes (the ID token passes the authorizer; the function refuses it). */
    char tampered[4096];
    snprintf(tampered, sizeof tampered, "%s", str(t, "access_token"));
    char *last = strrchr(tampered, '.') + 5;
    *last = *last == 'A' ? 'B' : 'A';
    char headers[4][4200];
    snprintf(headers[0], sizeof headers[0], "X-Nothing: 1\r\n");
    snprintf(headers[1], sizeof headers[1], "Authorization: Bearer %s\r\n", str(t, "id_token"));
    snprintf(headers[2], sizeof headers[2], "Authorization: Bearer %s\r\n", tampered);
    snprintf(headers[3], sizeof headers[3], "Authorization: Basic %s\r\n", str(t, "access_token"));
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 4; i++)
            assert_unauthorized(paths[k], headers[i]);
    assert_true(me_logged("me: authorizer claims refused (token_use id)"));
    rw_test_response_t r;
    cJSON_Delete(call("GET", "/direct/auth/me", headers[0], NULL, &r));
    char v[64];
    assert_string_equal(rw_test_header(&r, "www-authenticate", v, sizeof v), "Bearer");
    rw_test_response_free(&r);

    /* A valid token of an account deleted since: 404 on both routes. */
    mongoc_client_t *client = mongoc_client_new(rw_test_mongo_uri());
    mongoc_collection_t *users = mongoc_client_get_collection(client, S.db, "users");
    bson_oid_t oid;
    bson_oid_init_from_string(&oid, id);
    bson_t *filter = BCON_NEW("_id", BCON_OID(&oid));
    assert_true(mongoc_collection_delete_one(users, filter, NULL, NULL, NULL));
    bson_destroy(filter);
    mongoc_collection_destroy(users);
    mongoc_client_destroy(client);
    for (int k = 0; k < 2; k++) {
        cJSON *j = call("GET", paths[k], auth, NULL, &r);
        assert_int_equal(r.status, 404);
        assert_string_equal(str(j, "message"), "No such user.");
        cJSON_Delete(j);
        rw_test_response_free(&r);
    }
    /* ...and the refresh tokens of its logins stop working. */
    assert_int_equal(post_refresh("/auth/refresh", str(t, "refresh_token"), NULL), 401);
    cJSON_Delete(t);
    free(id);
}

/* The claims path of /auth/me on its own: the bootstrap run against a small
 * Runtime API here, with events shaped as the gateway's JWT authorizer makes
 * them (every claim a string), so the function's side is pinned down
 * whatever the gateway does: claims trusted without any token, an unknown
 * sub is 404, an ID token's claims are refused, no claims and no token 401. */
static struct {
    pthread_mutex_t mu;
    const char *events[8];
    size_t n_events, next;
    char *answers[8];
    size_t n_answers;
    rw_http_server_t *server;
    int port;
} RT = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void on_answer_body(rw_http_req_t *req, int status, const char *body, size_t len)
{
    pthread_mutex_lock(&RT.mu);
    if (status == 0 && RT.n_answers < 8)
        RT.answers[RT.n_answers++] = strndup(body, len);
    pthread_mutex_unlock(&RT.mu);
    rw_http_respond(req, 202, NULL, 0, "{}", 2);
}

static void on_runtime_api(rw_http_req_t *req, void *arg)
{
    if (strcmp(req->method, "GET") == 0 && strstr(req->path, "/runtime/invocation/next")) {
        pthread_mutex_lock(&RT.mu);
        size_t i = RT.next++;
        pthread_mutex_unlock(&RT.mu);
        if (i >= RT.n_events) { /* no more events: the runtime exits */
            rw_http_respond(req, 500, NULL, 0, "{}", 2);
            return;
        }
        char id[32], deadline[32];
        snprintf(id, sizeof id, "req-%zu", i);
        snprintf(deadline, sizeof deadline, "%lld", (long long)time(NULL) * 1000 + 30000);
        rw_http_header_t h[] = {
            {"Lambda-Runtime-Aws-Request-Id", 29, id, strlen(id)},
            {"Lambda-Runtime-Deadline-Ms", 26, deadline, strlen(deadline)},
            {"Lambda-Runtime-Invoked-Function-Arn", 35, "arn:aws:lambda:local:0:function:Me", 34},
            {"Content-Type", 12, "application/json", 16},
        };
        rw_http_respond(req, 200, h, 4, RT.events[i], strlen(RT.events[i]));
    } else if (strcmp(req->method, "POST") == 0 && strstr(req->path, "/runtime/invocation/")) {
        rw_http_req_read_body(req, 1 << 20, on_answer_body);
    } else {
        rw_http_respond(req, 404, NULL, 0, "{}", 2);
    }
}

static void start_runtime_api(uv_loop_t *loop, void *arg)
{
    RT.server = rw_http_server_new(loop, NULL, on_runtime_api, NULL);
    assert_int_equal(rw_http_server_listen(RT.server, "127.0.0.1", 0, false), 0);
    RT.port = rw_http_server_port(RT.server);
}

static void stop_runtime_api(uv_loop_t *loop, void *arg)
{
    rw_http_server_shutdown(RT.server, NULL, NULL);
}

static void me_trusts_the_authorizer_claims(void **state)
{
    char *id = signup("", "jon", "jon@example.com");
    char with_claims[1024], stranger[1024], id_token[1024];
    const char *shape =
        "{\"version\":\"2.0\",\"routeKey\":\"GET /auth/me\",\"rawPath\":\"/auth/me\","
        "\"headers\":{},\"requestContext\":{\"authorizer\":{\"jwt\":{\"claims\":{\"sub\":\"%s\","
        "\"iss\":\"%s\",\"token_use\":\"%s\"},\"scopes\":null}}},\"isBase64Encoded\":false}";
    snprintf(with_claims, sizeof with_claims, shape, id, S.issuer, "access");
    snprintf(stranger, sizeof stranger, shape, "0123456789abcdef01234567", S.issuer, "access");
    snprintf(id_token, sizeof id_token, shape, id, S.issuer, "id");
    RT.events[0] = with_claims;
    RT.events[1] = stranger;
    RT.events[2] = "{\"version\":\"2.0\",\"rawPath\":\"/auth/me\",\"headers\":{},"
                   "\"requestContext\":{}}";
    RT.events[3] = id_token;
    RT.n_events = 4;
    rw_test_loop_t *loop = rw_test_loop_start(start_runtime_api, NULL);

    char api[64], bin[1024], uri[1024], db[128], log[700], iss[128];
    snprintf(iss, sizeof iss, "TOKEN_ISSUER=%s", S.issuer);
    snprintf(api, sizeof api, "AWS_LAMBDA_RUNTIME_API=127.0.0.1:%d", RT.port);
    snprintf(bin, sizeof bin, "%s/functions/auth/userpool/bootstrap", getenv("RW_BINARY_DIR"));
    snprintf(uri, sizeof uri, "MONGODB_URI=%s", rw_test_mongo_uri());
    snprintf(db, sizeof db, "DATABASE_NAME=%s", S.db);
    snprintf(log, sizeof log, "%s/me-direct.log", S.dir);
    const char *set[] = {api, "_HANDLER=me", uri, db, iss, "TOKEN_AUDIENCE=" AUDIENCE, NULL};
    const char *unset[] = {"USERPOOL_MASTER_KEY", NULL};
    char *argv[] = {bin, NULL};
    rw_test_proc_t fn;
    assert_int_equal(rw_test_proc_start(&fn, argv, set, unset, log), 0);
    /* It answers the three events, then exits on the Runtime API's 500. */
    int status = rw_test_proc_wait(&fn, 30000);
    if (status == -1)
        status = rw_test_proc_stop(&fn, SIGKILL, 5000);
    assert_int_equal(rw_test_loop_stop(loop, stop_runtime_api, NULL), 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(RT.n_answers, 4);

    int codes[4] = {200, 404, 401, 401};
    for (size_t i = 0; i < 4; i++) {
        cJSON *a = cJSON_Parse(RT.answers[i]);
        assert_non_null(a);
        assert_int_equal(cJSON_GetObjectItem(a, "statusCode")->valueint, codes[i]);
        cJSON *body = cJSON_Parse(str(a, "body"));
        if (i == 0) {
            assert_string_equal(str(body, "id"), id);
            assert_string_equal(str(body, "handle"), "jon");
            assert_string_equal(str(body, "email"), "jon@example.com");
        }
        cJSON_Delete(body);
        cJSON_Delete(a);
        free(RT.answers[i]);
    }
    free(id);
}

static void openid_configuration(void **state)
{
    rw_test_response_t r;
    cJSON *d = call("GET", "/.well-known/openid-configuration", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    rw_test_response_free(&r);
    char url[128];
    assert_string_equal(str(d, "issuer"), S.issuer);
    snprintf(url, sizeof url, "%s/.well-known/jwks.json", S.issuer);
    assert_string_equal(str(d, "jwks_uri"), url);
    snprintf(url, sizeof url, "%s/auth/me", S.issuer);
    assert_string_equal(str(d, "userinfo_endpoint"), url);
    const char *arrays[] = {"response_types_supported", "subject_types_supported",
                            "id_token_signing_alg_values_supported", "scopes_supported",
                            "claims_supported"};
    for (size_t i = 0; i < 5; i++)
        assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(d, arrays[i])) >= 1);
    assert_string_equal(
        cJSON_GetArrayItem(cJSON_GetObjectItem(d, "id_token_signing_alg_values_supported"), 0)
            ->valuestring,
        "RS256");
    assert_string_equal(
        cJSON_GetArrayItem(cJSON_GetObjectItem(d, "subject_types_supported"), 0)->valuestring,
        "public");
    bool openid = false;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(d, "scopes_supported"))
    {
        openid |= strcmp(s->valuestring, "openid") == 0;
    }
    assert_true(openid);
    cJSON_Delete(d);
}

/* ---- keys ------------------------------------------------------------------------------- */

/* Every signing_keys document of a database, in generation order. */
static size_t read_keys(const char *db, bson_t **docs, size_t cap)
{
    mongoc_client_t *client = mongoc_client_new(rw_test_mongo_uri());
    assert_non_null(client);
    mongoc_collection_t *c = mongoc_client_get_collection(client, db, "signing_keys");
    bson_t filter = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("sort", "{", "generation", BCON_INT32(1), "}");
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, &filter, opts, NULL);
    const bson_t *doc;
    size_t n = 0;
    while (n < cap && mongoc_cursor_next(cur, &doc))
        docs[n++] = bson_copy(doc);
    bson_error_t error;
    assert_false(mongoc_cursor_error(cur, &error));
    mongoc_cursor_destroy(cur);
    bson_destroy(opts);
    mongoc_collection_destroy(c);
    mongoc_client_destroy(client);
    return n;
}

static const char *doc_str(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    return bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it)
               ? bson_iter_utf8(&it, NULL)
               : NULL;
}

/* Checks that every stored key is sealed, opens under secret, and is the
 * private half of the key the JWKS publishes under its kid. */
static void assert_keys_sealed(const char *db, const char *secret, const char *jwks_path)
{
    rw_masterkey_t mk;
    assert_int_equal(rw_masterkey_derive(&mk, secret, strlen(secret)), 0);
    rw_jwks_t *set = fetch_jwks(jwks_path);
    bson_t *docs[32];
    size_t n = read_keys(db, docs, 32);
    assert_true(n >= 1);
    for (size_t i = 0; i < n; i++) {
        const char *kid = doc_str(docs[i], "_id");
        const char *sealed = doc_str(docs[i], "sealed_private");
        assert_non_null(kid);
        assert_non_null(sealed);
        assert_int_equal(strncmp(sealed, "rwseal1.", 8), 0);
        assert_null(strstr(sealed, "PRIVATE KEY"));
        assert_null(strstr(sealed, "BEGIN"));
        char *json = bson_as_relaxed_extended_json(docs[i], NULL);
        assert_null(strstr(json, "PRIVATE"));
        bson_free(json);
        rw_jwk_t *priv = NULL;
        assert_int_equal(rw_jwk_unseal(&mk, sealed, strlen(sealed), kid, RW_JWT_ALG_INVALID, &priv),
                         0);
        assert_true(rw_jwk_is_private(priv));
        const rw_jwk_t *pub = rw_jwks_find(set, kid);
        assert_non_null(pub);
        char t1[44], t2[44];
        assert_int_equal(rw_jwk_thumbprint(priv, t1), 0);
        assert_int_equal(rw_jwk_thumbprint(pub, t2), 0);
        assert_string_equal(t1, t2);
        /* Under another master key it does not open. */
        rw_masterkey_t wrong;
        assert_int_equal(rw_masterkey_derive(&wrong, "another master key, 32+ characters", 34), 0);
        rw_jwk_t *none = NULL;
        assert_int_equal(
            rw_jwk_unseal(&wrong, sealed, strlen(sealed), kid, RW_JWT_ALG_INVALID, &none),
            RW_EAUTH);
        rw_jwk_free(priv);
        bson_destroy(docs[i]);
    }
    rw_jwks_free(set);
    rw_masterkey_wipe(&mk);
}

static void keys_are_sealed_in_the_database(void **state)
{
    cJSON_Delete(login("", "handle", "bruno")); /* a key exists */
    assert_keys_sealed(S.db, S.master_key, "/.well-known/jwks.json");
}

static void key_rotation(void **state)
{
    free(signup("/rot", "rosa", "rosa@example.com"));
    cJSON *first = login("/rot", "handle", "rosa");
    rw_jwks_t *set = fetch_jwks("/rot/.well-known/jwks.json");
    rw_jwt_t *a = verify(set, str(first, "access_token"));
    assert_int_equal(rw_jwt_alg(a), RW_JWT_ES256);
    char kid1[64];
    snprintf(kid1, sizeof kid1, "%s", rw_jwt_kid(a));
    rw_jwt_free(a);
    rw_jwks_free(set);
    /* Keys sign for two seconds here: logins soon carry a new kid. */
    cJSON *later = NULL;
    char kid2[64] = "";
    for (int i = 0; i < 60 && !kid2[0]; i++) {
        rw_test_sleep_ms(250);
        later = login("/rot", "handle", "rosa");
        set = fetch_jwks("/rot/.well-known/jwks.json");
        rw_jwt_t *b = verify(set, str(later, "access_token"));
        if (strcmp(rw_jwt_kid(b), kid1) != 0)
            snprintf(kid2, sizeof kid2, "%s", rw_jwt_kid(b));
        rw_jwt_free(b);
        rw_jwks_free(set);
        if (!kid2[0])
            cJSON_Delete(later);
    }
    assert_true(kid2[0] != '\0');
    /* Both keys are published; the old token still verifies, the new one too. */
    set = fetch_jwks("/rot/.well-known/jwks.json");
    assert_non_null(rw_jwks_find(set, kid1));
    assert_non_null(rw_jwks_find(set, kid2));
    rw_jwt_t *old = verify(set, str(first, "id_token"));
    assert_string_equal(rw_jwt_kid(old), kid1);
    rw_jwt_t *fresh = verify(set, str(later, "id_token"));
    assert_string_equal(rw_jwt_kid(fresh), kid2);
    rw_jwt_free(old);
    rw_jwt_free(fresh);
    rw_jwks_free(set);
    /* One key per generation, each sealed. */
    bson_t *docs[64];
    size_t n = read_keys(S.rot_db, docs, 64);
    assert_true(n >= 2);
    for (size_t i = 0; i < n; i++) {
        bson_iter_t it;
        assert_true(bson_iter_init_find(&it, docs[i], "generation"));
        assert_int_equal(bson_iter_as_int64(&it), (int64_t)i + 1);
        bson_destroy(docs[i]);
    }
    assert_keys_sealed(S.rot_db, S.master_key, "/rot/.well-known/jwks.json");
    cJSON_Delete(first);
    cJSON_Delete(later);
}

/* Many environments cold-start at once on an empty database: one key wins. */
typedef struct jwks_racer_s {
    int status;
    char kid[64];
} jwks_racer_t;

static void *race_jwks(void *arg)
{
    jwks_racer_t *r = arg;
    rw_test_response_t resp;
    int rc = rw_test_http(S.port, "GET", "/elect/.well-known/jwks.json", NULL, NULL, 0, &resp);
    if (rc != 0)
        fprintf(stderr, "race_jwks: request failed\n");
    if (rc == 0) {
        if (resp.status != 200)
            fprintf(stderr, "race_jwks: %d %s\n", resp.status, resp.body);
        r->status = resp.status;
        cJSON *j = cJSON_Parse(resp.body);
        const cJSON *keys = cJSON_GetObjectItem(j, "keys");
        if (cJSON_GetArraySize(keys) == 1)
            snprintf(r->kid, sizeof r->kid, "%s", str(cJSON_GetArrayItem(keys, 0), "kid"));
        cJSON_Delete(j);
        rw_test_response_free(&resp);
    }
    return NULL;
}

static void concurrent_cold_starts_elect_one_key(void **state)
{
    jwks_racer_t racers[8] = {0};
    pthread_t th[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, race_jwks, &racers[i]);
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(racers[i].status, 200);
        assert_string_equal(racers[i].kid, racers[0].kid);
    }
    bson_t *docs[8];
    size_t n = read_keys(S.elect_db, docs, 8);
    assert_int_equal(n, 1);
    assert_string_equal(doc_str(docs[0], "_id"), racers[0].kid);
    bson_destroy(docs[0]);
    /* Several environments did cold-start (else nothing raced): each writes
     * a log file of its own. */
    char dir[700];
    snprintf(dir, sizeof dir, "%s/logs/Elect", S.dir);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int envs = 0;
    struct dirent *ent;
    while ((ent = readdir(d)))
        envs += ent->d_name[0] != '.';
    closedir(d);
    assert_true(envs >= 2);
}

static void master_key_modes(void **state)
{
    /* Production without USERPOOL_MASTER_KEY: the function refuses to start. */
    rw_test_response_t r;
    cJSON *j = call("GET", "/nokey/.well-known/jwks.json", NULL, NULL, &r);
    assert_int_equal(r.status, 502);
    cJSON_Delete(j);
    rw_test_response_free(&r);
    static char logs[65536];
    bool seen = false;
    for (int tries = 0; tries < 100 && !seen; tries++) {
        rw_test_function_logs(S.dir, "NoKey", logs, sizeof logs);
        seen = strstr(logs, "USERPOOL_MASTER_KEY is not set") != NULL;
        if (!seen)
            rw_test_sleep_ms(20);
    }
    assert_true(seen);

    /* Development: a key file is made once (0600), and keys are sealed under it. */
    rw_jwks_t *set = fetch_jwks("/dev/.well-known/jwks.json");
    assert_int_equal(rw_jwks_count(set), 1);
    rw_jwks_free(set);
    struct stat st;
    assert_int_equal(stat(S.dev_key_file, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char secret[128] = "";
    FILE *f = fopen(S.dev_key_file, "r");
    assert_non_null(f);
    assert_non_null(fgets(secret, sizeof secret, f));
    fclose(f);
    secret[strcspn(secret, "\n")] = '\0';
    assert_true(strlen(secret) >= 32);
    assert_keys_sealed(S.dev_db, secret, "/dev/.well-known/jwks.json");
    rw_test_function_logs(S.dir, "Dev", logs, sizeof logs);
    assert_non_null(strstr(logs, "development mode"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(signup_field_errors),
        cmocka_unit_test(signup_duplicates_are_409),
        cmocka_unit_test(login_tokens_verify_with_served_jwks),
        cmocka_unit_test(wrong_password_is_one_generic_401),
        cmocka_unit_test(brute_force_is_slowed_then_locked),
        cmocka_unit_test(refresh_rotates),
        cmocka_unit_test(refresh_reuse_revokes_the_family),
        cmocka_unit_test(refresh_race_has_one_winner),
        cmocka_unit_test(logout_revokes),
        cmocka_unit_test(me_returns_the_profile),
        cmocka_unit_test(me_trusts_the_authorizer_claims),
        cmocka_unit_test(openid_configuration),
        cmocka_unit_test(keys_are_sealed_in_the_database),
        cmocka_unit_test(key_rotation),
        cmocka_unit_test(concurrent_cold_starts_elect_one_key),
        cmocka_unit_test(master_key_modes),
        cmocka_unit_test(shutdown_is_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
