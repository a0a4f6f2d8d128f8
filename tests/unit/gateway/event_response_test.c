/* Mapping a function's answer to an HTTP response: both payload formats, the
 * 2.0 inferred format, base64 bodies, and every malformed answer refused with
 * a reason (CR/LF injection included). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "reelway/error.h"

static rw_event_route_t route_of(int version, bool http_api)
{
    rw_event_route_t r = {0};
    r.payload_version = version;
    r.http_api = http_api;
    return r;
}

static int parse(const rw_event_route_t *r, const rw_event_request_t *rq, const char *json,
                 rw_event_response_t *out, char *why, size_t whylen)
{
    return rw_event_response_parse(r, rq, json, strlen(json), out, why, whylen);
}

static void expect_ok(int version, bool http_api, const char *json, rw_event_response_t *out)
{
    rw_event_route_t r = route_of(version, http_api);
    char why[256];
    int err = parse(&r, NULL, json, out, why, sizeof(why));
    if (err != 0)
        fail_msg("expected success for %s, got %s: %s", json, rw_err_name(err), why);
}

/* The n-th header called name (case-insensitive), or NULL. */
static const char *header(const rw_event_response_t *res, const char *name, int nth)
{
    for (size_t i = 0; i < res->n_headers; i++) {
        if (strlen(name) == res->headers[i].name_len &&
            strncasecmp(res->headers[i].name, name, res->headers[i].name_len) == 0 && nth-- == 0) {
            assert_int_equal(strlen(res->headers[i].value), res->headers[i].value_len);
            return res->headers[i].value;
        }
    }
    return NULL;
}

static void v1_full_answer(void **state)
{
    (void)state;
    rw_event_response_t res;
    expect_ok(1, false,
              "{\"statusCode\":201,\"headers\":{\"Content-Type\":\"application/json\","
              "\"X-Count\":5,\"X-Ratio\":1.5e2,\"X-Flag\":true,\"X-Multi\":\"dropped\"},"
              "\"multiValueHeaders\":{\"x-multi\":[\"one\",\"two\"],\"Set-Cookie\":[\"a=1\","
              "\"b=2\"]},\"body\":\"{\\\"id\\\":\\\"r1\\\"}\",\"isBase64Encoded\":false,"
              "\"extra\":{\"ignored\":[1,2]}}",
              &res);
    assert_int_equal(res.status, 201);
    assert_string_equal(header(&res, "Content-Type", 0), "application/json");
    assert_string_equal(header(&res, "X-Count", 0), "5");
    assert_string_equal(header(&res, "X-Ratio", 0), "1.5e2");
    assert_string_equal(header(&res, "X-Flag", 0), "true");
    /* A name in both maps keeps only its multiValueHeaders values. */
    assert_string_equal(header(&res, "X-Multi", 0), "one");
    assert_string_equal(header(&res, "X-Multi", 1), "two");
    assert_null(header(&res, "X-Multi", 2));
    assert_string_equal(header(&res, "Set-Cookie", 0), "a=1");
    assert_string_equal(header(&res, "Set-Cookie", 1), "b=2");
    assert_int_equal(res.n_headers, 8);
    assert_int_equal(res.body_len, 11);
    assert_string_equal(res.body, "{\"id\":\"r1\"}");
    rw_event_response_free(&res);
    rw_event_response_free(&res); /* idempotent */
    rw_event_response_free(NULL);
}

static void v1_minimal_and_nulls(void **state)
{
    (void)state;
    rw_event_response_t res;
    expect_ok(1, false,
              " {\"statusCode\":204,\"headers\":null,\"multiValueHeaders\":null,\"body\":null,"
              "\"isBase64Encoded\":null}\n",
              &res);
    assert_int_equal(res.status, 204);
    assert_int_equal(res.n_headers, 0);
    assert_int_equal(res.body_len, 0);
    assert_string_equal(res.body, "");
    rw_event_response_free(&res);
}

static void v2_cookies_become_set_cookie(void **state)
{
    (void)state;
    rw_event_response_t res;
    expect_ok(2, true,
              "{\"statusCode\":302,\"cookies\":[\"sid=abc; HttpOnly; Secure\",\"theme=dark\"],"
              "\"headers\":{\"Location\":\"/feed\"},\"multiValueHeaders\":{\"X-No\":[\"x\"]}}",
              &res);
    assert_int_equal(res.status, 302);
    assert_string_equal(header(&res, "Location", 0), "/feed");
    assert_string_equal(header(&res, "Set-Cookie", 0), "sid=abc; HttpOnly; Secure");
    assert_string_equal(header(&res, "Set-Cookie", 1), "theme=dark");
    /* 2.0 has no multiValueHeaders: ignored. */
    assert_null(header(&res, "X-No", 0));
    rw_event_response_free(&res);
}

static void v2_inferred_format(void **state)
{
    (void)state;
    static const struct {
        const char *fn_output;
        const char *body;
    } cases[] = {
        /* The two examples of the documentation. */
        {"\"Hello from Lambda!\"", "Hello from Lambda!"},
        {"{ \"message\": \"Hello from Lambda!\" }", "{ \"message\": \"Hello from Lambda!\" }"},
        /* Any other JSON value: its text. */
        {"  [1, {\"a\": null}]  ", "[1, {\"a\": null}]"},
        {"42", "42"},
        {"null", "null"},
        {"true", "true"},
        {"{\"body\":\"x\",\"headers\":{\"a\":\"b\"}}",
         "{\"body\":\"x\",\"headers\":{\"a\":\"b\"}}"},
        {"\"caf\\u00e9\\n\"", "caf\xc3\xa9\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rw_event_response_t res;
        expect_ok(2, true, cases[i].fn_output, &res);
        assert_int_equal(res.status, 200);
        assert_int_equal(res.n_headers, 1);
        assert_string_equal(header(&res, "Content-Type", 0), "application/json");
        assert_string_equal(res.body, cases[i].body);
        assert_int_equal(res.body_len, strlen(cases[i].body));
        rw_event_response_free(&res);
    }
}

static void base64_bodies(void **state)
{
    (void)state;
    static const char *answer = "{\"statusCode\":200,\"headers\":{\"Content-Type\":\"image/png\"},"
                                "\"body\":\"iVBORw0KGgo=\",\"isBase64Encoded\":true}";
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    const char *binary[] = {"image/*"};
    rw_event_kv_t accept_png[] = {{"Accept", 6, "image/png,*/*", 13}};
    rw_event_kv_t accept_html[] = {{"accept", 6, "text/html,image/png", 19}};
    rw_event_request_t rq = {0};
    rw_event_response_t res;
    char why[256];

    /* HTTP APIs (both formats) always decode. */
    for (int v = 1; v <= 2; v++) {
        expect_ok(v, true, answer, &res);
        assert_int_equal(res.body_len, sizeof(png));
        assert_memory_equal(res.body, png, sizeof(png));
        rw_event_response_free(&res);
    }
    /* REST decodes only when the first accepted type is a binary media type. */
    rw_event_route_t r = route_of(1, false);
    r.binary_media_types = binary;
    r.n_binary_media_types = 1;
    rq.headers = accept_png;
    rq.n_headers = 1;
    assert_int_equal(parse(&r, &rq, answer, &res, why, sizeof(why)), 0);
    assert_int_equal(res.body_len, sizeof(png));
    assert_memory_equal(res.body, png, sizeof(png));
    rw_event_response_free(&res);

    rq.headers = accept_html;
    assert_int_equal(parse(&r, &rq, answer, &res, why, sizeof(why)), 0);
    assert_string_equal(res.body, "iVBORw0KGgo=");
    rw_event_response_free(&res);

    rq.n_headers = 0;
    assert_int_equal(parse(&r, &rq, answer, &res, why, sizeof(why)), 0);
    assert_string_equal(res.body, "iVBORw0KGgo=");
    rw_event_response_free(&res);

    /* Unpadded base64 (what some encoders emit) is accepted. */
    expect_ok(2, true, "{\"statusCode\":200,\"body\":\"aGk\",\"isBase64Encoded\":true}", &res);
    assert_string_equal(res.body, "hi");
    rw_event_response_free(&res);
}

static void json_strings_are_decoded_exactly(void **state)
{
    (void)state;
    rw_event_response_t res;
    /* An escaped NUL stays in the body (cJSON would cut the string there). */
    expect_ok(1, false, "{\"statusCode\":200,\"body\":\"a\\u0000b\"}", &res);
    assert_int_equal(res.body_len, 3);
    assert_memory_equal(res.body, "a\0b", 3);
    rw_event_response_free(&res);

    expect_ok(1, false,
              "{\"statusCode\":200,\"body\":\"\\ud83d\\ude00 \\ud800 \\\"\\\\\\/\\b\\f\\n\\r\\t "
              "\\u00E9\"}",
              &res);
    assert_string_equal(res.body, "\xf0\x9f\x98\x80 \xef\xbf\xbd \"\\/\b\f\n\r\t \xc3\xa9");
    rw_event_response_free(&res);

    /* Escaped keys are still keys; the last of repeated keys wins. */
    expect_ok(1, false, "{\"status\\u0043ode\":500,\"statusCode\":404}", &res);
    assert_int_equal(res.status, 404);
    rw_event_response_free(&res);
}

static void framing_headers_are_remapped(void **state)
{
    (void)state;
    rw_event_response_t res;
    expect_ok(1, false,
              "{\"statusCode\":200,\"headers\":{\"Content-Length\":\"999\",\"Connection\":"
              "\"close\",\"transfer-encoding\":\"chunked\",\"Date\":\"x\",\"X-Ok\":\"1\"},"
              "\"body\":\"hi\"}",
              &res);
    assert_null(header(&res, "Content-Length", 0));
    assert_null(header(&res, "Connection", 0));
    assert_null(header(&res, "Transfer-Encoding", 0));
    assert_string_equal(header(&res, "x-amzn-Remapped-Content-Length", 0), "999");
    assert_string_equal(header(&res, "x-amzn-Remapped-Connection", 0), "close");
    assert_string_equal(header(&res, "x-amzn-Remapped-transfer-encoding", 0), "chunked");
    assert_string_equal(header(&res, "x-amzn-Remapped-Date", 0), "x");
    assert_string_equal(header(&res, "X-Ok", 0), "1");
    rw_event_response_free(&res);
}

/* Every malformed answer is refused with RW_EPARSE, a reason naming what is
 * wrong, and an empty response. */
static void malformed_answers(void **state)
{
    (void)state;
    static const struct {
        int version;
        const char *json;
        const char *reason; /* a substring of the reason */
    } cases[] = {
        {1, "", "response is empty"},
        {2, "   \n", "response is empty"},
        {1, "Hello", "not valid JSON"},
        {2, "Hello", "not valid JSON"},
        {1, "{\"statusCode\":200", "not valid JSON"},
        {1, "{\"statusCode\":200,}", "expected a key"},
        {1, "{\"statusCode\":200} {}", "unexpected data after the value"},
        {1, "{\"statusCode\":0200}", "expected ',' or '}' at offset 15"},
        {1, "{\"statusCode\":2.}", "bad number"},
        {1, "{\"statusCode\":200,\"body\":\"a\nb\"}", "control character in a string"},
        {1, "{\"statusCode\":200,\"body\":\"\\x\"}", "bad escape"},
        {1, "{\"statusCode\":200,\"body\":\"\\u12G4\"}", "bad \\u escape"},
        {1, "{\"statusCode\":200,\"body\":\"abc", "unterminated string"},
        {1, "{\"statusCode\":tru}", "unexpected character"},
        {1, "\"just a string\"", "must be a JSON object, not a string"},
        {1, "[1,2]", "must be a JSON object, not an array"},
        {1, "{\"body\":\"x\"}", "statusCode is missing"},
        {1, "{\"statusCode\":\"200\"}", "statusCode must be an integer, not a string"},
        {2, "{\"statusCode\":\"200\"}", "statusCode must be an integer, not a string"},
        {2, "{\"statusCode\":null}", "statusCode must be an integer, not null"},
        {1, "{\"statusCode\":true}", "statusCode must be an integer, not true"},
        {1, "{\"statusCode\":200.5}", "statusCode must be an integer, not 200.5"},
        {1, "{\"statusCode\":99}", "statusCode 99 is out of range 100-599"},
        {2, "{\"statusCode\":600}", "statusCode 600 is out of range 100-599"},
        {1, "{\"statusCode\":-200}", "out of range"},
        {1, "{\"statusCode\":1e400}", "out of range"},
        {1, "{\"statusCode\":200,\"headers\":[]}", "headers must be an object, not an array"},
        {2, "{\"statusCode\":200,\"headers\":\"a: b\"}", "headers must be an object, not a string"},
        {1, "{\"statusCode\":200,\"headers\":{\"X-A\":{\"b\":1}}}",
         "headers.X-A: value must be a string, number or boolean, not an object"},
        {1, "{\"statusCode\":200,\"headers\":{\"X-A\":null}}",
         "headers.X-A: value must be a string, number or boolean, not null"},
        {1, "{\"statusCode\":200,\"headers\":{\"X-A\":[\"b\"]}}", "not an array"},
        {1, "{\"statusCode\":200,\"multiValueHeaders\":[]}", "multiValueHeaders must be an object"},
        {1, "{\"statusCode\":200,\"multiValueHeaders\":{\"X-A\":\"b\"}}",
         "multiValueHeaders.X-A: must be an array, not a string"},
        {1, "{\"statusCode\":200,\"multiValueHeaders\":{\"X-A\":[\"ok\",{}]}}",
         "multiValueHeaders.X-A: value must be a string, number or boolean, not an object"},
        {1, "{\"statusCode\":200,\"body\":5}", "body must be a string, not a number"},
        {2, "{\"statusCode\":200,\"body\":{\"a\":1}}", "body must be a string, not an object"},
        {1, "{\"statusCode\":200,\"isBase64Encoded\":\"true\"}",
         "isBase64Encoded must be a boolean, not a string"},
        {2, "{\"statusCode\":200,\"body\":\"a$b=\",\"isBase64Encoded\":true}",
         "body: base64: invalid character 0x24 at offset 1"},
        {2, "{\"statusCode\":200,\"body\":\"aGk=a\",\"isBase64Encoded\":true}",
         "body: base64: misplaced padding"},
        {2, "{\"statusCode\":200,\"body\":\"aGk==\",\"isBase64Encoded\":true}",
         "body: base64: bad padding"},
        {2, "{\"statusCode\":200,\"body\":\"aGVsbG8gd\",\"isBase64Encoded\":true}",
         "body: base64: truncated group"},
        {2, "{\"statusCode\":200,\"body\":\"aGVs bG8=\",\"isBase64Encoded\":true}",
         "body: base64: invalid character 0x20"},
        {2, "{\"statusCode\":200,\"body\":\"aGl=\",\"isBase64Encoded\":true}",
         "non-zero trailing bits"},
        /* Header injection and broken names. */
        {1, "{\"statusCode\":200,\"headers\":{\"X-A\":\"v\\r\\nSet-Cookie: admin=1\"}}",
         "headers.X-A: value contains CR or LF at offset 1"},
        {2, "{\"statusCode\":200,\"headers\":{\"X-A\":\"v\\nX: y\"}}",
         "headers.X-A: value contains CR or LF"},
        {1, "{\"statusCode\":200,\"multiValueHeaders\":{\"X-A\":[\"ok\",\"b\\rc\"]}}",
         "multiValueHeaders.X-A: value contains CR or LF"},
        {1, "{\"statusCode\":200,\"headers\":{\"X-A\":\"v\\u0000w\"}}",
         "headers.X-A: value contains NUL at offset 1"},
        {1, "{\"statusCode\":200,\"headers\":{\"X-A\":\"v\\u0007\"}}",
         "value contains control character 0x07"},
        {1, "{\"statusCode\":200,\"headers\":{\"X-A\":\"v\\u007f\"}}",
         "value contains control character 0x7f"},
        {1, "{\"statusCode\":200,\"headers\":{\"Bad Name\":\"v\"}}",
         "headers: invalid header name \"Bad?Name\" (byte 0x20 at 3)"},
        {1, "{\"statusCode\":200,\"headers\":{\"X-A\\r\\nX-B\":\"v\"}}", "invalid header name"},
        {1, "{\"statusCode\":200,\"headers\":{\"X:Y\":\"v\"}}", "invalid header name"},
        {1, "{\"statusCode\":200,\"headers\":{\"caf\\u00e9\":\"v\"}}", "invalid header name"},
        {1, "{\"statusCode\":200,\"headers\":{\"\":\"v\"}}", "headers: empty header name"},
        {2, "{\"statusCode\":200,\"cookies\":\"a=1\"}", "cookies must be an array of strings"},
        {2, "{\"statusCode\":200,\"cookies\":[\"a=1\",2]}", "cookies[1] must be a string"},
        {2, "{\"statusCode\":200,\"cookies\":[\"a=1\\r\\nX-Evil: 1\"]}",
         "cookies[0].Set-Cookie: value contains CR or LF"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rw_event_route_t r = route_of(cases[i].version, cases[i].version == 2);
        rw_event_response_t res;
        char why[256] = "unset";
        int err = parse(&r, NULL, cases[i].json, &res, why, sizeof(why));
        if (err != RW_EPARSE || strstr(why, cases[i].reason) == NULL)
            fail_msg("case %zu (%s): expected RW_EPARSE with \"%s\", got %s with \"%s\"", i,
                     cases[i].json, cases[i].reason, rw_err_name(err), why);
        assert_int_equal(res.n_headers, 0);
        assert_null(res.headers);
        assert_null(res.body);
        assert_int_equal(res.status, 0);
    }
}

static void deep_nesting_is_refused_not_recursed(void **state)
{
    (void)state;
    size_t depth = 100000;
    char *json = malloc(depth * 2 + 1);
    rw_event_route_t r = route_of(2, true);
    rw_event_response_t res;
    char why[256];

    assert_non_null(json);
    memset(json, '[', depth);
    memset(json + depth, ']', depth);
    json[depth * 2] = '\0';
    assert_int_equal(parse(&r, NULL, json, &res, why, sizeof(why)), RW_EPARSE);
    assert_non_null(strstr(why, "nested deeper than"));
    /* 200 levels are fine (inferred: the text is the body). */
    memmove(json, json + depth - 200, 200);
    memcpy(json + 200, json + depth, 200);
    json[400] = '\0';
    memset(json + 200, ']', 200);
    assert_int_equal(parse(&r, NULL, json, &res, why, sizeof(why)), 0);
    assert_int_equal(res.body_len, 400);
    rw_event_response_free(&res);
    free(json);
}

static void input_need_not_be_terminated(void **state)
{
    (void)state;
    const char text[] = "{\"statusCode\":200,\"body\":\"ok\"}garbage";
    rw_event_route_t r = route_of(1, false);
    rw_event_response_t res;
    char why[128];
    assert_int_equal(rw_event_response_parse(&r, NULL, text, 30, &res, why, sizeof(why)), 0);
    assert_string_equal(res.body, "ok");
    rw_event_response_free(&res);
    assert_int_equal(rw_event_response_parse(&r, NULL, text, 29, &res, why, sizeof(why)),
                     RW_EPARSE);
    assert_int_equal(
        rw_event_response_parse(&r, NULL, text, sizeof(text) - 1, &res, why, sizeof(why)),
        RW_EPARSE);
    /* A reason that does not fit is cut, never overflowed. */
    assert_int_equal(rw_event_response_parse(&r, NULL, text, 29, &res, why, 8), RW_EPARSE);
    assert_int_equal(strlen(why), 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v1_full_answer),
        cmocka_unit_test(v1_minimal_and_nulls),
        cmocka_unit_test(v2_cookies_become_set_cookie),
        cmocka_unit_test(v2_inferred_format),
        cmocka_unit_test(base64_bodies),
        cmocka_unit_test(json_strings_are_decoded_exactly),
        cmocka_unit_test(framing_headers_are_remapped),
        cmocka_unit_test(malformed_answers),
        cmocka_unit_test(deep_nesting_is_refused_not_recursed),
        cmocka_unit_test(input_need_not_be_terminated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
