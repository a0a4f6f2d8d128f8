/* CORS from an HttpApi CorsConfiguration: configuration checks, which requests
 * are preflights, allowed and refused origins, and the exact headers of
 * preflight and normal answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "cors.h"
#include "reelway/error.h"

static const char *const app_origins[] = {"https://app.example.com", "http://localhost:3000"};
static const char *const methods[] = {"GET", "POST", "DELETE"};
static const char *const headers[] = {"authorization", "content-type"};
static const char *const exposed[] = {"x-request-id", "etag"};
static const char *const star[] = {"*"};
static const char *const https_any[] = {"https://*"};

static rw_cors_config_t app_config(void)
{
    rw_cors_config_t c = {0};
    c.allow_origins = app_origins;
    c.n_allow_origins = 2;
    c.allow_methods = methods;
    c.n_allow_methods = 3;
    c.allow_headers = headers;
    c.n_allow_headers = 2;
    c.expose_headers = exposed;
    c.n_expose_headers = 2;
    c.max_age = 600;
    c.allow_credentials = true;
    return c;
}

static rw_cors_request_t preflight(const char *origin, const char *method, const char *hdrs)
{
    rw_cors_request_t rq = {0};
    rq.method = "OPTIONS";
    rq.origin = origin;
    rq.origin_len = origin ? strlen(origin) : 0;
    rq.request_method = method;
    rq.request_method_len = method ? strlen(method) : 0;
    rq.request_headers = hdrs;
    rq.request_headers_len = hdrs ? strlen(hdrs) : 0;
    return rq;
}

static const char *get(const rw_cors_headers_t *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++) {
        if (strcmp(h->h[i].name, name) == 0) {
            assert_int_equal(strlen(h->h[i].value), h->h[i].value_len);
            return h->h[i].value;
        }
    }
    return NULL;
}

static void configuration_check(void **state)
{
    (void)state;
    char why[160];
    rw_cors_config_t c = app_config();
    const char *bad_origin[] = {"https://app.example.com/path"};
    const char *no_scheme[] = {"app.example.com"};
    const char *bad_method[] = {"GET POST"};

    assert_int_equal(rw_cors_config_check(&c, why, sizeof(why)), 0);
    c.allow_origins = star;
    c.n_allow_origins = 1;
    assert_int_equal(rw_cors_config_check(&c, why, sizeof(why)), RW_ECONFIG);
    assert_string_equal(why, "AllowCredentials is not supported with AllowOrigins \"*\"");
    c.allow_credentials = false;
    assert_int_equal(rw_cors_config_check(&c, why, sizeof(why)), 0);
    c.allow_origins = https_any;
    assert_int_equal(rw_cors_config_check(&c, why, sizeof(why)), 0);
    c.allow_origins = bad_origin;
    assert_int_equal(rw_cors_config_check(&c, why, sizeof(why)), RW_ECONFIG);
    assert_non_null(strstr(why, "AllowOrigins[0] \"https://app.example.com/path\""));
    c.allow_origins = no_scheme;
    assert_int_equal(rw_cors_config_check(&c, why, sizeof(why)), RW_ECONFIG);
    c = app_config();
    c.allow_methods = bad_method;
    c.n_allow_methods = 1;
    assert_int_equal(rw_cors_config_check(&c, why, sizeof(why)), RW_ECONFIG);
    assert_non_null(strstr(why, "AllowMethods[0]"));
    c = app_config();
    c.max_age = 86401;
    assert_int_equal(rw_cors_config_check(&c, why, sizeof(why)), RW_ECONFIG);
}

static void what_is_a_preflight(void **state)
{
    (void)state;
    rw_cors_request_t rq = preflight("https://app.example.com", "POST", NULL);
    assert_true(rw_cors_is_preflight(&rq));
    rq.request_method = NULL;
    assert_false(rw_cors_is_preflight(&rq));
    rq = preflight(NULL, "POST", NULL);
    assert_false(rw_cors_is_preflight(&rq));
    rq = preflight("https://app.example.com", "POST", NULL);
    rq.method = "GET";
    assert_false(rw_cors_is_preflight(&rq));
    assert_false(rw_cors_is_preflight(NULL));
}

static void preflight_from_an_allowed_origin(void **state)
{
    (void)state;
    rw_cors_config_t c = app_config();
    rw_cors_request_t rq = preflight("https://app.example.com", "DELETE", "authorization");
    rw_cors_headers_t h;

    assert_int_equal(rw_cors_preflight(&c, &rq, &h), 0);
    assert_true(h.allowed);
    assert_int_equal(h.n, 6);
    assert_string_equal(get(&h, "access-control-allow-origin"), "https://app.example.com");
    assert_string_equal(get(&h, "access-control-allow-credentials"), "true");
    assert_string_equal(get(&h, "access-control-allow-methods"), "GET, POST, DELETE");
    assert_string_equal(get(&h, "access-control-allow-headers"), "authorization, content-type");
    assert_string_equal(get(&h, "access-control-max-age"), "600");
    assert_string_equal(get(&h, "vary"), "origin");
    assert_null(get(&h, "access-control-expose-headers"));
    rw_cors_headers_free(&h);
    rw_cors_headers_free(&h);

    /* Origins compare without regard to case; the one sent is echoed. */
    rq = preflight("HTTP://LOCALHOST:3000", "GET", NULL);
    assert_int_equal(rw_cors_preflight(&c, &rq, &h), 0);
    assert_string_equal(get(&h, "access-control-allow-origin"), "HTTP://LOCALHOST:3000");
    rw_cors_headers_free(&h);
}

static void preflight_from_a_refused_origin(void **state)
{
    (void)state;
    rw_cors_config_t c = app_config();
    static const char *const refused[] = {"https://evil.example.com",
                                          "https://app.example.com.evil",
                                          "http://app.example.com",
                                          "https://app.example.co",
                                          "null",
                                          ""};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        rw_cors_request_t rq = preflight(refused[i], "GET", NULL);
        rw_cors_headers_t h;
        assert_int_equal(rw_cors_preflight(&c, &rq, &h), 0);
        if (h.allowed || h.n != 0)
            fail_msg("origin \"%s\" was allowed (%zu headers)", refused[i], h.n);
        assert_null(h.storage_);
        rw_cors_headers_free(&h);
    }
}

static void wildcards(void **state)
{
    (void)state;
    rw_cors_config_t c = {0};
    rw_cors_request_t rq = preflight("https://anything.example", "PATCH", "x-a, x-b");
    rw_cors_headers_t h;

    /* Any origin, any method, any header: "*" for the origin (no credentials),
     * the requested method and headers echoed. */
    c.allow_origins = star;
    c.n_allow_origins = 1;
    c.allow_methods = star;
    c.n_allow_methods = 1;
    c.allow_headers = star;
    c.n_allow_headers = 1;
    c.max_age = -1;
    assert_int_equal(rw_cors_preflight(&c, &rq, &h), 0);
    assert_int_equal(h.n, 3);
    assert_string_equal(get(&h, "access-control-allow-origin"), "*");
    assert_string_equal(get(&h, "access-control-allow-methods"), "PATCH");
    assert_string_equal(get(&h, "access-control-allow-headers"), "x-a, x-b");
    assert_null(get(&h, "vary"));
    assert_null(get(&h, "access-control-max-age"));
    assert_null(get(&h, "access-control-allow-credentials"));
    rw_cors_headers_free(&h);

    /* Nothing asked, nothing granted. */
    rq = preflight("https://anything.example", "GET", NULL);
    assert_int_equal(rw_cors_preflight(&c, &rq, &h), 0);
    assert_null(get(&h, "access-control-allow-headers"));
    rw_cors_headers_free(&h);

    /* A scheme wildcard. */
    c.allow_origins = https_any;
    assert_true(rw_cors_origin_allowed(&c, "https://a.example", 17));
    assert_false(rw_cors_origin_allowed(&c, "http://a.example", 16));
    assert_false(rw_cors_origin_allowed(&c, "https://", 8));
    rq = preflight("https://a.example", "GET", NULL);
    assert_int_equal(rw_cors_preflight(&c, &rq, &h), 0);
    assert_string_equal(get(&h, "access-control-allow-origin"), "https://a.example");
    assert_string_equal(get(&h, "vary"), "origin");
    rw_cors_headers_free(&h);
}

static void normal_answers(void **state)
{
    (void)state;
    rw_cors_config_t c = app_config();
    rw_cors_request_t rq = {.method = "GET", .origin = "http://localhost:3000", .origin_len = 21};
    rw_cors_headers_t h;

    assert_int_equal(rw_cors_response(&c, &rq, &h), 0);
    assert_true(h.allowed);
    assert_int_equal(h.n, 4);
    assert_string_equal(get(&h, "access-control-allow-origin"), "http://localhost:3000");
    assert_string_equal(get(&h, "access-control-allow-credentials"), "true");
    assert_string_equal(get(&h, "access-control-expose-headers"), "x-request-id, etag");
    assert_string_equal(get(&h, "vary"), "origin");
    assert_null(get(&h, "access-control-allow-methods"));
    rw_cors_headers_free(&h);

    rq.origin = "http://localhost:3001";
    rq.origin_len = 21;
    assert_int_equal(rw_cors_response(&c, &rq, &h), 0);
    assert_false(h.allowed);
    assert_int_equal(h.n, 0);
    rw_cors_headers_free(&h);

    rq.origin = NULL;
    assert_int_equal(rw_cors_response(&c, &rq, &h), 0);
    assert_int_equal(h.n, 0);
    rw_cors_headers_free(&h);
}

static void integration_cors_headers_are_recognised(void **state)
{
    (void)state;
    assert_true(rw_cors_is_cors_header("Access-Control-Allow-Origin", 27));
    assert_true(rw_cors_is_cors_header("access-control-max-age", 22));
    assert_false(rw_cors_is_cors_header("access-control", 14));
    assert_false(rw_cors_is_cors_header("Vary", 4));
    assert_false(rw_cors_is_cors_header(NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(configuration_check),
        cmocka_unit_test(what_is_a_preflight),
        cmocka_unit_test(preflight_from_an_allowed_origin),
        cmocka_unit_test(preflight_from_a_refused_origin),
        cmocka_unit_test(wildcards),
        cmocka_unit_test(normal_answers),
        cmocka_unit_test(integration_cors_headers_are_recognised),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
