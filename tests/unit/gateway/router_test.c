/* Route matching: specificity, ANY, greedy, $default, 404 vs 405 with Allow,
 * decoding of parameters, and malformed templates refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <uv.h>

#include "reelway/error.h"
#include "router.h"

static int T[16]; /* distinct targets */

static rw_router_t *sample(void)
{
    rw_router_t *r = rw_router_new();
    char why[128];
    assert_int_equal(rw_router_add(r, "GET", "/reels", &T[0], why, sizeof why), 0);
    assert_int_equal(rw_router_add(r, "POST", "/reels", &T[1], why, sizeof why), 0);
    assert_int_equal(rw_router_add(r, "GET", "/reels/{id}", &T[2], why, sizeof why), 0);
    assert_int_equal(rw_router_add(r, "GET", "/reels/feed", &T[3], why, sizeof why), 0);
    assert_int_equal(rw_router_add(r, "ANY", "/reels/{id}/likes", &T[4], why, sizeof why), 0);
    assert_int_equal(rw_router_add(r, "PUT", "/reels/{id}/likes", &T[5], why, sizeof why), 0);
    assert_int_equal(rw_router_add(r, "GET", "/media/{key+}", &T[6], why, sizeof why), 0);
    assert_int_equal(rw_router_add(r, "GET", "/users/{uid}/reels/{rid}", &T[7], why, sizeof why),
                     0);
    assert_int_equal(rw_router_add(r, "GET", "/", &T[8], why, sizeof why), 0);
    return r;
}

static void expect(rw_router_t *r, const char *method, const char *path, int *target,
                   const char *route_key)
{
    rw_route_match_t m;
    char allow[128];
    int rc = rw_router_match(r, method, path, strlen(path), &m, allow, sizeof allow);
    assert_int_equal(rc, 0);
    assert_ptr_equal(m.target, target);
    assert_string_equal(m.route_key, route_key);
    rw_route_match_free(&m);
}

static void literal_beats_param_and_exact_method_beats_any(void **state)
{
    rw_router_t *r = sample();
    expect(r, "GET", "/reels", &T[0], "GET /reels");
    expect(r, "POST", "/reels", &T[1], "POST /reels");
    expect(r, "GET", "/reels/feed", &T[3], "GET /reels/feed");
    expect(r, "GET", "/reels/abc", &T[2], "GET /reels/{id}");
    expect(r, "PUT", "/reels/abc/likes", &T[5], "PUT /reels/{id}/likes");
    expect(r, "DELETE", "/reels/abc/likes", &T[4], "ANY /reels/{id}/likes");
    expect(r, "GET", "/", &T[8], "GET /");
    /* HEAD falls back to GET. */
    expect(r, "HEAD", "/reels/abc", &T[2], "GET /reels/{id}");
    rw_router_free(r);
}

static void params_are_decoded_and_named(void **state)
{
    rw_router_t *r = sample();
    rw_route_match_t m;
    char allow[64];
    const char *p = "/users/u%201/reels/r%2F2";
    assert_int_equal(rw_router_match(r, "GET", p, strlen(p), &m, allow, sizeof allow), 0);
    assert_int_equal(m.n_params, 2);
    assert_string_equal(m.names[0], "uid");
    assert_string_equal(m.values[0], "u 1");
    assert_string_equal(m.names[1], "rid");
    assert_string_equal(m.values[1], "r/2");
    assert_string_equal(m.resource, "/users/{uid}/reels/{rid}");
    rw_route_match_free(&m);

    p = "/media/a/b%20c/d.webp";
    assert_int_equal(rw_router_match(r, "GET", p, strlen(p), &m, allow, sizeof allow), 0);
    assert_ptr_equal(m.target, &T[6]);
    assert_string_equal(m.names[0], "key");
    assert_string_equal(m.values[0], "a/b c/d.webp");
    rw_route_match_free(&m);
    rw_router_free(r);
}

static void not_found_and_method_not_allowed(void **state)
{
    rw_router_t *r = sample();
    rw_route_match_t m;
    char allow[64];
    assert_int_equal(rw_router_match(r, "GET", "/nope", 5, &m, allow, sizeof allow), RW_ENOTFOUND);
    /* A greedy parameter needs at least one segment. */
    assert_int_equal(rw_router_match(r, "GET", "/media", 6, &m, allow, sizeof allow), RW_ENOTFOUND);
    assert_int_equal(rw_router_match(r, "GET", "/media/", 7, &m, allow, sizeof allow),
                     RW_ENOTFOUND);
    /* A param does not match an empty segment. */
    assert_int_equal(rw_router_match(r, "GET", "/reels//likes", 13, &m, allow, sizeof allow),
                     RW_ENOTFOUND);
    assert_int_equal(rw_router_match(r, "DELETE", "/reels", 6, &m, allow, sizeof allow),
                     UV_ENOTSUP);
    assert_string_equal(allow, "GET, POST");
    assert_int_equal(rw_router_match(r, "PATCH", "/reels/x", 8, &m, allow, sizeof allow),
                     UV_ENOTSUP);
    assert_string_equal(allow, "GET");
    /* Bad encodings match nothing: the caller answers 400. */
    assert_int_equal(rw_router_match(r, "GET", "/reels/%zz", 10, &m, allow, sizeof allow),
                     RW_EPARSE);
    assert_int_equal(rw_router_match(r, "GET", "/reels/%00", 10, &m, allow, sizeof allow),
                     RW_EPARSE);
    assert_int_equal(rw_router_match(r, "GET", "/reels/%4", 9, &m, allow, sizeof allow),
                     RW_EPARSE);
    rw_router_free(r);
}

static void default_route_takes_the_rest(void **state)
{
    rw_router_t *r = sample();
    char why[64];
    assert_int_equal(rw_router_add(r, "ANY", "$default", &T[9], why, sizeof why), 0);
    expect(r, "GET", "/anything/else", &T[9], "$default");
    expect(r, "GET", "/reels", &T[0], "GET /reels");
    /* $default also takes a method the matching path lacks, as HTTP APIs do. */
    rw_route_match_t m;
    char allow[64];
    assert_int_equal(rw_router_match(r, "DELETE", "/reels", 6, &m, allow, sizeof allow), 0);
    assert_ptr_equal(m.target, &T[9]);
    assert_string_equal(m.values[0], "reels");
    rw_route_match_free(&m);
    assert_int_equal(rw_router_add(r, "ANY", "$default", &T[9], why, sizeof why), UV_EEXIST);
    rw_router_free(r);
}

static void malformed_templates_are_refused(void **state)
{
    rw_router_t *r = rw_router_new();
    char why[128];
    struct {
        const char *method, *path, *reason;
    } bad[] = {
        {"GET", "reels", "must start with '/'"},
        {"GET", "/a/{proxy+}/b", "greedy parameter must be the last segment"},
        {"GET", "/a/{}", "malformed path parameter"},
        {"GET", "/a/{id", "malformed path parameter"},
        {"GET", "/a/x{id}", "braces are only allowed around a whole segment"},
        {"GET", "/a/{id}/{id}", "repeated"},
        {"GET", "/a//b", "empty path segment"},
        {"FETCH", "/a", "unsupported method"},
        {"GET", "/a/%zz", "bad percent-encoding"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        why[0] = '\0';
        assert_int_equal(rw_router_add(r, bad[i].method, bad[i].path, &T[0], why, sizeof why),
                         RW_EPARSE);
        assert_non_null(strstr(why, bad[i].reason));
    }
    assert_int_equal(rw_router_add(r, "GET", "/a", &T[0], why, sizeof why), 0);
    assert_int_equal(rw_router_add(r, "GET", "/a", &T[1], why, sizeof why), UV_EEXIST);
    rw_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(literal_beats_param_and_exact_method_beats_any),
        cmocka_unit_test(params_are_decoded_and_named),
        cmocka_unit_test(not_found_and_method_not_allowed),
        cmocka_unit_test(default_route_takes_the_rest),
        cmocka_unit_test(malformed_templates_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
